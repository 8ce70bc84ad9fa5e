//! The sequencer: the single owner of the store revision.
//!
//! Commands are applied in Raft log order. A command that changes at least
//! one key takes revision `current + 1`; a command that changes nothing
//! (a delete of missing keys, a read-only txn, a compaction) leaves the
//! revision alone. Revisions are therefore dense: there is no gap a client
//! could observe.
//!
//! Worked example (empty store):
//!
//! | command                | wrote | revision after | compacted |
//! |------------------------|-------|----------------|-----------|
//! | (start)                |       | 1              | -1        |
//! | put a                  | yes   | 2              | -1        |
//! | delete b (missing)     | no    | 2              | -1        |
//! | txn { put a; put b }   | yes   | 3              | -1        |
//! | compact 2              | no    | 3              | 2         |
//! | range a @1             | error `has been compacted`         |
//! | range a @4             | error `is a future revision`       |

use crate::{KvError, Revision};

/// Owns the current and compacted revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequencer {
    current: Revision,
    compacted: Revision,
}

impl Default for Sequencer {
    fn default() -> Self {
        Sequencer::new()
    }
}

impl Sequencer {
    /// The compaction revision before any compaction: etcd's `-1`, so that
    /// `compact 0` on a fresh store is (uselessly) accepted once, as in etcd.
    pub const NEVER_COMPACTED: Revision = Revision(-1);

    /// A sequencer for an empty store.
    #[must_use]
    pub fn new() -> Sequencer {
        Sequencer {
            current: Revision::EMPTY_STORE,
            compacted: Self::NEVER_COMPACTED,
        }
    }

    /// A sequencer resumed from recovered state.
    ///
    /// # Panics
    /// If the compaction point lies above the current revision.
    #[must_use]
    pub fn resume(current: Revision, compacted: Revision) -> Sequencer {
        assert!(
            current >= Revision::EMPTY_STORE,
            "revision {current} below 1"
        );
        assert!(
            compacted <= current,
            "compacted {compacted} above current {current}"
        );
        Sequencer { current, compacted }
    }

    /// The revision of the last applied write.
    #[must_use]
    pub fn current(&self) -> Revision {
        self.current
    }

    /// The revision a write being applied now will get.
    #[must_use]
    pub fn pending(&self) -> Revision {
        self.current.next()
    }

    /// The compaction point (`-1` if never compacted).
    #[must_use]
    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    /// Records the outcome of one applied command and returns the revision
    /// the store is at afterwards.
    pub fn on_applied(&mut self, wrote: bool) -> Revision {
        if wrote {
            self.current = self.current.next();
        }
        self.current
    }

    /// Resolves the revision a read asks for: `<= 0` means current.
    ///
    /// # Errors
    /// `FutureRev` above the current revision, `Compacted` below the
    /// compaction point (the compaction point itself is readable).
    pub fn resolve_read(&self, requested: i64) -> Result<Revision, KvError> {
        if requested > self.current.0 {
            return Err(KvError::FutureRev);
        }
        if requested <= 0 {
            return Ok(self.current);
        }
        if requested < self.compacted.0 {
            return Err(KvError::Compacted);
        }
        Ok(Revision(requested))
    }

    /// Checks and records a compaction at `rev`.
    ///
    /// # Errors
    /// `Compacted` if `rev` is not above the compaction point, `FutureRev`
    /// if it lies above the current revision.
    pub fn on_compact(&mut self, rev: i64) -> Result<Revision, KvError> {
        if rev <= self.compacted.0 {
            return Err(KvError::Compacted);
        }
        if rev > self.current.0 {
            return Err(KvError::FutureRev);
        }
        self.compacted = Revision(rev);
        Ok(self.compacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example() {
        let mut s = Sequencer::new();
        assert_eq!(s.current(), Revision(1));
        assert_eq!(s.on_applied(true), Revision(2));
        assert_eq!(s.on_applied(false), Revision(2));
        assert_eq!(s.on_applied(true), Revision(3));
        assert_eq!(s.on_compact(2), Ok(Revision(2)));
        assert_eq!(s.resolve_read(1), Err(KvError::Compacted));
        assert_eq!(s.resolve_read(2), Ok(Revision(2)));
        assert_eq!(s.resolve_read(0), Ok(Revision(3)));
        assert_eq!(s.resolve_read(4), Err(KvError::FutureRev));
        assert_eq!(s.on_compact(2), Err(KvError::Compacted));
        assert_eq!(s.on_compact(4), Err(KvError::FutureRev));
    }

    #[test]
    fn compact_zero_on_fresh_store_is_accepted_once() {
        let mut s = Sequencer::new();
        assert_eq!(s.on_compact(0), Ok(Revision(0)));
        assert_eq!(s.on_compact(0), Err(KvError::Compacted));
        assert_eq!(s.on_compact(-3), Err(KvError::Compacted));
    }
}
