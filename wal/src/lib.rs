//! ferrocd-wal: the write-ahead log and snapshot files of ferrocd.
//!
//! The WAL is an append-only sequence of preallocated segment files holding
//! length-prefixed, CRC32C-protected records (layout in `FORMAT.md`). Records
//! are opaque: the Raft layer above stores entries and hard state in them.
//!
//! Why it looks the way it does:
//! - **Group commit.** A whole batch of records is encoded into one buffer and
//!   made durable with ONE write and ONE fdatasync (linked io_uring SQEs), since
//!   a flush costs about 100 µs on the target disk whatever its size.
//! - **Non-blocking.** [`Wal::submit`] only queues the batch; a thread-per-core
//!   reactor reaps completions with [`Wal::poll_completed`] when the ring's
//!   eventfd ([`Wal::event_fd`]) becomes readable.
//! - **Fail-stop.** A failed write or fdatasync poisons the [`Wal`] (see
//!   "fsyncgate"): the page cache may already have dropped the dirty pages, so
//!   retrying could report data durable that is not. Restart and recover.
//! - **Recovery refuses to guess.** A torn tail (the last, unacknowledged batch)
//!   is truncated; damage followed by data of a later batch is corruption, and
//!   opening fails with an error naming the file and byte offset.
//! - **Testable.** All file operations go through the [`io::FileSystem`] and
//!   [`io::WalIo`] traits: [`io::UringIo`] for real disks, [`io::MemFs`] for
//!   crash and fault injection.
//!
//! This crate deliberately depends on no async runtime.

#![deny(missing_docs)]

pub mod error;
pub mod frame;
pub mod io;
mod recovery;
pub mod segment;
pub mod snapshot;
mod wal;

pub use error::{RecoveryError, SnapshotError, WalError};
pub use wal::{BatchTicket, Prealloc, Recovered, SegmentInfo, TornTail, Wal, WalOptions};

/// Default size of a WAL segment file (preallocated up front, as etcd does).
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest accepted segment size; below this rotation would dominate.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest payload of one record. Bounds the damage a garbled length word can
/// do during recovery and keeps a single batch buffer reasonable.
pub const RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most records accepted in one batch (one write + one fdatasync).
pub const BATCH_RECORDS_MAX: usize = 65_536;
/// Most encoded bytes in one batch; also keeps the in-frame batch offset in a u32.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most batches submitted but not yet reaped; bounds ring and buffer usage.
pub const BATCHES_IN_FLIGHT_MAX: usize = 32;
/// Default io_uring submission queue size (each batch uses 2 entries).
pub const RING_ENTRIES_DEFAULT: u32 = 64;

/// One WAL record. The WAL never interprets `kind`, `index` or `payload`,
/// except that `index` names segments (for [`Wal::release_to`]) and kind 0 is
/// reserved so that zeroed preallocated space can never look like a record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// Record type chosen by the layer above; must be non-zero.
    pub kind: u8,
    /// Log index (e.g. the Raft entry index); names the segment a batch starts.
    pub index: u64,
    /// Opaque bytes, at most [`RECORD_BYTES_MAX`].
    pub payload: Vec<u8>,
}

impl Record {
    /// Builds a record.
    pub fn new(kind: u8, index: u64, payload: impl Into<Vec<u8>>) -> Self {
        Record {
            kind,
            index,
            payload: payload.into(),
        }
    }
}
