//! The one routing function that splits the keyspace into shards.
//!
//! Hash sharding (see ARCHITECTURE.md for the argument): a key's shard is a
//! function of the key bytes only, so point operations and single-key
//! transactions (the bulk of etcd traffic) touch exactly one shard, and load
//! spreads evenly however skewed the key prefixes are (Kubernetes puts every
//! key under `/registry/`). Ranges over more than one key fan out to every
//! shard and are merged in key order.
//!
//! The hash is seeded with fixed constants, so placement is deterministic
//! for a given binary. Nothing on disk depends on placement: snapshots and
//! the WAL are shard-count independent, so a node may restart with another
//! shard count.

use crate::{KeyRange, ShardId};

/// Upper bound on shards per node; a `u16` id with room to spare.
pub const SHARDS_MAX: u16 = 1024;

/// Maps keys and key ranges to shards.
#[derive(Clone, Debug)]
pub struct Router {
    shard_count: u16,
    hasher: ahash::RandomState,
}

/// The shards a key range touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardSet {
    /// Exactly one shard (a single-key range).
    One(ShardId),
    /// Every shard.
    All,
}

impl Router {
    /// A router over `shard_count` shards.
    ///
    /// # Panics
    /// If `shard_count` is 0 or above [`SHARDS_MAX`]: a configuration bug.
    #[must_use]
    pub fn new(shard_count: u16) -> Router {
        assert!(
            (1..=SHARDS_MAX).contains(&shard_count),
            "shard count {shard_count} outside 1..={SHARDS_MAX}"
        );
        Router {
            shard_count,
            hasher: ahash::RandomState::with_seeds(
                0x6665_7272_6f63_6400,
                0x7368_6172_645f_6b65,
                0x795f_726f_7574_6531,
                0x9e37_79b9_7f4a_7c15,
            ),
        }
    }

    /// Number of shards.
    #[must_use]
    pub fn shard_count(&self) -> u16 {
        self.shard_count
    }

    /// The shard that owns `key`.
    #[must_use]
    pub fn shard_of(&self, key: &[u8]) -> ShardId {
        if self.shard_count == 1 {
            return ShardId(0);
        }
        let h = std::hash::BuildHasher::hash_one(&self.hasher, key);
        // Multiply-shift instead of modulo: uniform and branch-free.
        let idx = ((u128::from(h) * u128::from(self.shard_count)) >> 64) as u16;
        debug_assert!(idx < self.shard_count);
        ShardId(idx)
    }

    /// The shards that may hold keys of `range`.
    #[must_use]
    pub fn shards_for(&self, range: &KeyRange<'_>) -> ShardSet {
        match *range {
            KeyRange::Single(key) => ShardSet::One(self.shard_of(key)),
            _ if self.shard_count == 1 => ShardSet::One(ShardId(0)),
            _ => ShardSet::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_bounds() {
        let a = Router::new(8);
        let b = Router::new(8);
        let mut seen = [0u32; 8];
        for i in 0..10_000u32 {
            let key = format!("/registry/pods/ns/{i}");
            let s = a.shard_of(key.as_bytes());
            assert_eq!(s, b.shard_of(key.as_bytes()));
            seen[s.0 as usize] += 1;
        }
        // Every shard gets a fair share of a prefix-skewed keyspace.
        assert!(seen.iter().all(|&n| n > 1_000), "{seen:?}");
    }

    #[test]
    fn single_shard_routes_everything_to_zero() {
        let r = Router::new(1);
        assert_eq!(
            r.shards_for(&KeyRange::new(b"a", b"\0")),
            ShardSet::One(ShardId(0))
        );
        assert_eq!(
            Router::new(4).shards_for(&KeyRange::new(b"a", b"b")),
            ShardSet::All
        );
    }
}
