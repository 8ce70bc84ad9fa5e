//! Merging the per-shard answers of one range read.
//!
//! Under hash sharding every shard holds an arbitrary subset of a range.
//! Each shard answers with its kvs in key order (at most `limit` of them)
//! and its full count; the merge interleaves them in key order, keeps the
//! first `limit`, and sums the counts. Keys are unique across shards, so
//! the merge is a total order.

use crate::shard::ShardRange;
use ferrocd_proto::mvccpb::KeyValue;

/// The merged answer of one range read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeAnswer {
    /// Kvs in key order, at most the limit.
    pub kvs: Vec<KeyValue>,
    /// Sum of the shards' counts.
    pub count: i64,
}

/// Merges per-shard answers in key order, keeping at most `limit` kvs
/// (0 = all).
#[must_use]
pub fn merge_by_key(parts: Vec<ShardRange>, limit: usize) -> RangeAnswer {
    let count = parts.iter().map(|p| p.count).sum();
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return RangeAnswer::default();
    };
    let mut kvs = first.kvs;
    let rest: Vec<ShardRange> = parts.filter(|p| !p.kvs.is_empty()).collect();
    if !rest.is_empty() {
        kvs.extend(rest.into_iter().flat_map(|p| p.kvs));
        // Each part is sorted; a stable merge sort detects the runs.
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
    }
    if limit > 0 {
        kvs.truncate(limit);
    }
    debug_assert!(
        kvs.windows(2).all(|w| w[0].key < w[1].key),
        "duplicate or unordered keys"
    );
    RangeAnswer { kvs, count }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(keys: &[&str], count: i64) -> ShardRange {
        ShardRange {
            kvs: keys
                .iter()
                .map(|k| KeyValue {
                    key: k.as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
            count,
        }
    }

    #[test]
    fn interleaves_and_limits() {
        let merged = merge_by_key(
            vec![part(&["a", "d"], 5), part(&["b", "c"], 2), part(&[], 0)],
            3,
        );
        let keys: Vec<_> = merged.kvs.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!(keys, [b"a", b"b", b"c"]);
        assert_eq!(merged.count, 7);
        assert_eq!(merge_by_key(vec![], 0), RangeAnswer::default());
    }
}
