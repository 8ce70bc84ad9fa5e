//! The versions of one key.
//!
//! A key's life is a sequence of *generations*: a generation starts with the
//! put that creates the key and ends with the tombstone that deletes it. We
//! keep every version in one vector ordered by revision, tombstones
//! included, and store each put's `create_revision` and `version` with it,
//! so a read at any revision is one binary search.
//!
//! Worked example (revisions on the left):
//!
//! ```text
//! rev 2  put k=a     -> {create 2, mod 2, version 1}
//! rev 4  put k=b     -> {create 2, mod 4, version 2}
//! rev 5  delete k    -> tombstone (generation 1 ends)
//! rev 7  put k=c     -> {create 7, mod 7, version 1}   (generation 2)
//!
//! read @1 -> absent   read @3 -> a   read @4..4 -> b   read @5..6 -> absent
//! read @7.. -> c
//! ```
//!
//! Compaction at C keeps, for reads at C and later, exactly what they saw:
//! the newest version at or below C (dropped too if it is a tombstone) and
//! everything above C.
//!
//! ```text
//! compact 4 -> [b@4, tomb@5, c@7]     compact 5 -> [tomb@5, c@7]
//! compact 6 -> [c@7]                  compact 7 -> [c@7]
//!
//! (A tombstone exactly at the compaction point is kept: reads cannot tell,
//! and a watch that starts at the compaction point must still see that
//! delete.)
//! ```
//!
//! A key whose versions all compact away is removed from its shard.

use bytes::Bytes;

/// A revision with its sub-revision: writes of one txn share `main` and are
/// ordered by `sub` (the order watchers see them in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rev {
    /// The store revision.
    pub main: i64,
    /// Position of the write within its revision.
    pub sub: i64,
}

/// One version of a key: a put, or a tombstone (`version == 0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// When this version was written.
    pub rev: Rev,
    /// Revision that created this generation; 0 for a tombstone.
    pub create_revision: i64,
    /// Puts since the generation began (1 = the creating put); 0 for a
    /// tombstone.
    pub version: i64,
    /// Attached lease, 0 for none.
    pub lease: i64,
    /// The value (empty for a tombstone).
    pub value: Bytes,
}

impl Version {
    /// True for the tombstone that ends a generation.
    #[must_use]
    pub fn is_tombstone(&self) -> bool {
        self.version == 0
    }
}

/// All retained versions of one key, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyIndex {
    versions: Vec<Version>,
}

impl KeyIndex {
    /// The live version visible at revision `at`, if any.
    #[must_use]
    pub fn get(&self, at: i64) -> Option<&Version> {
        let n = self.versions.partition_point(|v| v.rev.main <= at);
        let v = self.versions[..n].last()?;
        (!v.is_tombstone()).then_some(v)
    }

    /// The newest live version.
    #[must_use]
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last().filter(|v| !v.is_tombstone())
    }

    /// Every retained version, oldest first.
    #[must_use]
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// Appends a put at `rev`, continuing the live generation or starting a
    /// new one.
    ///
    /// # Panics
    /// If `rev` is not above the newest version: writes arrive in order.
    pub fn put(&mut self, rev: Rev, value: Bytes, lease: i64) -> &Version {
        self.assert_after(rev);
        let (create_revision, version) = match self.latest() {
            Some(live) => (live.create_revision, live.version + 1),
            None => (rev.main, 1),
        };
        self.reserve_one();
        self.versions.push(Version {
            rev,
            create_revision,
            version,
            lease,
            value,
        });
        self.versions.last().expect("just pushed")
    }

    /// Ends the live generation at `rev`. Returns false (and changes
    /// nothing) when the key is not live.
    pub fn tombstone(&mut self, rev: Rev) -> bool {
        if self.latest().is_none() {
            return false;
        }
        self.assert_after(rev);
        self.reserve_one();
        self.versions.push(Version {
            rev,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Bytes::new(),
        });
        true
    }

    /// Drops what no read at `at` or later can see. Returns true when
    /// nothing is left and the key should be removed.
    pub fn compact(&mut self, at: i64) -> bool {
        let n = self.versions.partition_point(|v| v.rev.main <= at);
        if n > 0 {
            // Keep the newest version <= at unless it is a tombstone below
            // `at`: a tombstone exactly at `at` stays, so a watch starting
            // at the compaction point still sees that delete (etcd #18089).
            let newest = &self.versions[n - 1];
            let keep_from = if newest.is_tombstone() && newest.rev.main < at {
                n
            } else {
                n - 1
            };
            self.versions.drain(..keep_from);
            // Most keys keep one version after a compaction; give back
            // what their history used.
            if self.versions.capacity() >= 4 * self.versions.len().max(1) {
                self.versions.shrink_to_fit();
            }
        }
        self.versions.is_empty()
    }

    /// Room for one more version. Most keys hold one version: Vec's first
    /// growth would reserve four (288 bytes instead of 72 per key), and
    /// growth after that doubles from the length actually used.
    fn reserve_one(&mut self) {
        if self.versions.len() == self.versions.capacity() {
            let extra = self.versions.len().max(1);
            self.versions.reserve_exact(extra);
        }
    }

    fn assert_after(&self, rev: Rev) {
        if let Some(last) = self.versions.last() {
            assert!(rev > last.rev, "write at {rev:?} not after {:?}", last.rev);
        }
    }

    /// Rebuilds an index from versions (snapshot restore).
    ///
    /// # Panics
    /// If the versions are not in strictly increasing revision order.
    #[must_use]
    pub fn from_versions(versions: Vec<Version>) -> KeyIndex {
        assert!(
            versions.windows(2).all(|w| w[0].rev < w[1].rev),
            "versions out of order"
        );
        KeyIndex { versions }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Rev {
        Rev { main, sub: 0 }
    }

    fn worked_example() -> KeyIndex {
        let mut k = KeyIndex::default();
        k.put(r(2), Bytes::from_static(b"a"), 0);
        k.put(r(4), Bytes::from_static(b"b"), 0);
        assert!(k.tombstone(r(5)));
        k.put(r(7), Bytes::from_static(b"c"), 0);
        k
    }

    #[test]
    fn a_key_with_one_version_holds_room_for_one() {
        let mut k = KeyIndex::default();
        k.put(r(2), Bytes::from_static(b"a"), 0);
        assert_eq!(k.versions.capacity(), 1);
        for main in 3..=9 {
            k.put(r(main), Bytes::from_static(b"b"), 0);
        }
        assert_eq!(k.versions.len(), 8);
        assert!(k.versions.capacity() <= 16);
        assert!(!k.compact(9));
        assert_eq!(k.versions.len(), 1);
        assert!(k.versions.capacity() < 4, "compaction gives history back");
    }

    fn value_at(k: &KeyIndex, at: i64) -> Option<&'static str> {
        k.get(at).map(|v| match &v.value[..] {
            b"a" => "a",
            b"b" => "b",
            b"c" => "c",
            _ => unreachable!(),
        })
    }

    #[test]
    fn reads_at_every_revision() {
        let k = worked_example();
        let seen: Vec<_> = (1..=8).map(|at| value_at(&k, at)).collect();
        assert_eq!(
            seen,
            [
                None,
                Some("a"),
                Some("a"),
                Some("b"),
                None,
                None,
                Some("c"),
                Some("c")
            ]
        );
        let b = k.get(4).unwrap();
        assert_eq!((b.create_revision, b.rev.main, b.version), (2, 4, 2));
        let c = k.get(7).unwrap();
        assert_eq!((c.create_revision, c.rev.main, c.version), (7, 7, 1));
    }

    #[test]
    fn compaction_keeps_what_later_reads_see() {
        for at in 1..=8 {
            let before = worked_example();
            let mut after = before.clone();
            let gone = after.compact(at);
            assert!(!gone);
            for read in at..=8 {
                assert_eq!(
                    before.get(read),
                    after.get(read),
                    "compact {at}, read {read}"
                );
            }
        }
        let mut k = worked_example();
        k.compact(4);
        assert_eq!(k.versions().len(), 3);
        k.compact(5);
        assert_eq!(k.versions().len(), 2, "tomb@5 stays at compaction point 5");
        k.compact(6);
        assert_eq!(k.versions().len(), 1);
    }

    #[test]
    fn fully_deleted_key_compacts_away() {
        let mut k = KeyIndex::default();
        k.put(r(2), Bytes::from_static(b"a"), 0);
        assert!(k.tombstone(r(3)));
        assert!(!k.tombstone(r(4)), "a dead key cannot be deleted again");
        assert!(!k.compact(2));
        assert!(!k.compact(3), "the tombstone at the compaction point stays");
        assert_eq!(k.versions().len(), 1);
        assert!(k.get(3).is_none());
        assert!(k.compact(4));
    }
}
