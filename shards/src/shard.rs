//! One shard: the MVCC state of the keys the router assigns to it.
//!
//! A shard knows nothing about other shards, the revision counter or
//! requests; it stores versions at the revisions it is told and answers
//! reads at a revision. The [`crate::Keyspace`] composes shards into etcd's
//! semantics. Everything is synchronous and deterministic.

use crate::key_index::{KeyIndex, Rev, Version};
use bytes::Bytes;
use ferrocd_core::KeyRange;
use ferrocd_proto::mvccpb::KeyValue;
use std::collections::BTreeMap;

/// The MVCC state of one shard.
#[derive(Clone, Debug, Default)]
pub struct Shard {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
}

/// What a shard returns for one range read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardRange {
    /// Matching kvs in key order, at most the requested limit.
    pub kvs: Vec<KeyValue>,
    /// Number of live keys in the range (ignores the limit).
    pub count: i64,
}

/// How much of each kv a read materializes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadShape {
    /// Keep at most this many kvs (0 = all). The count is always complete.
    pub limit: usize,
    /// Return no kvs, only the count.
    pub count_only: bool,
    /// Leave values empty.
    pub keys_only: bool,
}

/// Builds the wire form of a live version.
#[must_use]
pub fn key_value(key: &[u8], v: &Version, with_value: bool) -> KeyValue {
    debug_assert!(!v.is_tombstone());
    KeyValue {
        key: key.to_vec(),
        create_revision: v.create_revision,
        mod_revision: v.rev.main,
        version: v.version,
        value: if with_value {
            v.value.to_vec()
        } else {
            Vec::new()
        },
        lease: v.lease,
    }
}

impl Shard {
    /// An empty shard.
    #[must_use]
    pub fn new() -> Shard {
        Shard::default()
    }

    /// Number of keys with at least one retained version (live or not).
    #[must_use]
    pub fn indexed_keys(&self) -> usize {
        self.keys.len()
    }

    /// Calls `f` for each key live at `at` in `range`, in key order, until
    /// `f` returns false.
    pub fn visit(&self, range: &KeyRange<'_>, at: i64, mut f: impl FnMut(&[u8], &Version) -> bool) {
        if range.is_empty() {
            return;
        }
        for (key, index) in self.keys.range::<[u8], _>(range.bounds()) {
            if let Some(v) = index.get(at) {
                if !f(key, v) {
                    return;
                }
            }
        }
    }

    /// Calls `f` for every retained version (tombstones included) of every
    /// key in `range` whose revision lies in `from..=to`, key by key.
    pub fn visit_versions(
        &self,
        range: &KeyRange<'_>,
        from: i64,
        to: i64,
        mut f: impl FnMut(&[u8], &Version),
    ) {
        if range.is_empty() || from > to {
            return;
        }
        for (key, index) in self.keys.range::<[u8], _>(range.bounds()) {
            let versions = index.versions();
            let start = versions.partition_point(|v| v.rev.main < from);
            for v in &versions[start..] {
                if v.rev.main > to {
                    break;
                }
                f(key, v);
            }
        }
    }

    /// Reads `range` at revision `at`.
    #[must_use]
    pub fn range(&self, range: &KeyRange<'_>, at: i64, shape: ReadShape) -> ShardRange {
        let mut out = ShardRange::default();
        self.visit(range, at, |key, v| {
            out.count += 1;
            let room = shape.limit == 0 || out.kvs.len() < shape.limit;
            if !shape.count_only && room {
                out.kvs.push(key_value(key, v, !shape.keys_only));
            }
            true
        });
        out
    }

    /// The newest live version of `key`.
    #[must_use]
    pub fn latest(&self, key: &[u8]) -> Option<&Version> {
        self.keys.get(key)?.latest()
    }

    /// The version of `key` live at `at`.
    #[must_use]
    pub fn get(&self, key: &[u8], at: i64) -> Option<&Version> {
        self.keys.get(key)?.get(at)
    }

    /// Writes `key = value` at `rev`.
    pub fn put(&mut self, key: &[u8], rev: Rev, value: Bytes, lease: i64) -> &Version {
        // Look up before inserting so the common update path does not copy the key.
        if !self.keys.contains_key(key) {
            self.keys.insert(key.to_vec(), KeyIndex::default());
        }
        self.keys
            .get_mut(key)
            .expect("present")
            .put(rev, value, lease)
    }

    /// Deletes `key` at `rev`; false if it was not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Rev) -> bool {
        self.keys.get_mut(key).is_some_and(|k| k.tombstone(rev))
    }

    /// Drops every version no read at `at` or later can see.
    pub fn compact(&mut self, at: i64) {
        self.keys.retain(|_, index| !index.compact(at));
    }

    /// Every indexed key with its retained versions, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &KeyIndex)> {
        self.keys.iter().map(|(k, v)| (k.as_slice(), v))
    }

    /// Keys after `after` (all keys for `None`) in key order, with their
    /// versions: the resumable walk of a chunked snapshot.
    pub fn iter_after<'a>(
        &'a self,
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], &'a KeyIndex)> + 'a {
        use std::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.keys
            .range::<[u8], _>((lower, Bound::Unbounded))
            .map(|(k, v)| (k.as_slice(), v))
    }

    /// Restores one key's versions (snapshot load); gives the key back if
    /// it is already there.
    pub fn restore_key(&mut self, key: Vec<u8>, index: KeyIndex) -> Result<(), Vec<u8>> {
        use std::collections::btree_map::Entry;
        match self.keys.entry(key) {
            Entry::Occupied(e) => Err(e.key().clone()),
            Entry::Vacant(e) => {
                e.insert(index);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Rev {
        Rev { main, sub: 0 }
    }

    #[test]
    fn range_limits_kvs_but_counts_all() {
        let mut s = Shard::new();
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            s.put(k.as_bytes(), rev(i as i64 + 2), Bytes::from_static(b"v"), 0);
        }
        s.tombstone(b"c", rev(6));
        let r = KeyRange::new(b"a", b"\0");
        let got = s.range(
            &r,
            6,
            ReadShape {
                limit: 2,
                ..Default::default()
            },
        );
        assert_eq!(got.count, 3);
        assert_eq!(
            got.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
            [b"a", b"b"]
        );
        let at5 = s.range(&r, 5, ReadShape::default());
        assert_eq!(at5.count, 4);
        let only = s.range(
            &r,
            5,
            ReadShape {
                count_only: true,
                ..Default::default()
            },
        );
        assert!(only.kvs.is_empty() && only.count == 4);
        let keys = s.range(
            &r,
            5,
            ReadShape {
                keys_only: true,
                ..Default::default()
            },
        );
        assert!(keys.kvs.iter().all(|kv| kv.value.is_empty()));
    }

    #[test]
    fn compaction_removes_dead_keys() {
        let mut s = Shard::new();
        s.put(b"a", rev(2), Bytes::from_static(b"1"), 0);
        s.put(b"b", rev(3), Bytes::from_static(b"2"), 0);
        s.tombstone(b"a", rev(4));
        s.compact(4);
        assert_eq!(
            s.indexed_keys(),
            2,
            "a tombstone at the compaction point stays"
        );
        s.compact(5);
        assert_eq!(s.indexed_keys(), 1);
        assert!(s.get(b"b", 4).is_some());
    }
}
