//! Error types, one enum per operation family: appending ([`WalError`]),
//! opening/recovering ([`RecoveryError`]) and snapshot files ([`SnapshotError`]).

use std::io;

/// Errors of the append path ([`crate::Wal::submit`], reaping, rotation, release).
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An earlier write or fdatasync failed; the WAL refuses all further work
    /// because the kernel may have dropped the unsynced pages (fsyncgate).
    #[error("WAL is poisoned by an earlier I/O failure ({0}); restart to recover")]
    Poisoned(String),
    /// fdatasync of a batch failed. Fail-stop: the WAL is now poisoned.
    #[error("fdatasync of {file} failed after writing {len} bytes at offset {offset}: {source}")]
    SyncFailed {
        /// Segment file name.
        file: String,
        /// Byte offset of the batch in the file.
        offset: u64,
        /// Batch length in bytes.
        len: u64,
        /// The OS error.
        source: io::Error,
    },
    /// Writing a batch failed (includes short writes). Fail-stop: the WAL is now poisoned.
    #[error("write of {len} bytes to {file} at offset {offset} failed: {source}")]
    WriteFailed {
        /// Segment file name.
        file: String,
        /// Byte offset of the batch in the file.
        offset: u64,
        /// Batch length in bytes.
        len: u64,
        /// The OS error.
        source: io::Error,
    },
    /// Any other file operation of the append path failed (segment preparation,
    /// rename, directory sync, ring submission). Poisons the WAL when it happens
    /// while writing.
    #[error("{op} on {file} failed: {source}")]
    Io {
        /// The operation, e.g. "rename".
        op: &'static str,
        /// File (or directory) name.
        file: String,
        /// The OS error.
        source: io::Error,
    },
    /// `submit` was called with no records.
    #[error("empty batch")]
    EmptyBatch,
    /// A record used the reserved kind 0.
    #[error("record kind 0 is reserved (record index {index})")]
    InvalidKind {
        /// Index of the offending record.
        index: u64,
    },
    /// A record payload exceeds [`crate::RECORD_BYTES_MAX`].
    #[error("record payload of {len} bytes exceeds RECORD_BYTES_MAX ({max})")]
    RecordTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A batch exceeds [`crate::BATCH_RECORDS_MAX`] or [`crate::BATCH_BYTES_MAX`].
    #[error("batch of {records} records / {bytes} bytes exceeds the limits ({records_max} records, {bytes_max} bytes)")]
    BatchTooLarge {
        /// Records in the batch.
        records: usize,
        /// Encoded bytes of the batch.
        bytes: usize,
        /// [`crate::BATCH_RECORDS_MAX`].
        records_max: usize,
        /// [`crate::BATCH_BYTES_MAX`].
        bytes_max: usize,
    },
    /// Too many batches in flight; reap completions first (back-pressure, not fatal).
    #[error("{in_flight} batches in flight (max {max}); reap completions first")]
    QueueFull {
        /// Batches currently in flight.
        in_flight: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// Errors while opening a WAL directory and replaying it. Every variant that is
/// about on-disk data names the file, and byte offset where it applies, so an
/// operator can inspect it; the WAL never starts on top of corruption.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A damaged record that is followed by data of a later batch (or a later
    /// segment): not a torn write, so acknowledged data would be lost.
    #[error("corrupt WAL record in {file} at byte offset {offset}: {reason}; refusing to start")]
    Corrupt {
        /// Segment file name.
        file: String,
        /// Byte offset of the damaged record in the file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A segment's 32-byte header is missing or invalid (offset 0).
    #[error("bad segment header in {file} at byte offset 0: {reason}; refusing to start")]
    BadSegmentHeader {
        /// Segment file name.
        file: String,
        /// What was wrong.
        reason: String,
    },
    /// A `.wal` file whose name does not parse as `{seq:016x}-{index:016x}.wal`.
    #[error("unexpected WAL file name {file}")]
    BadFileName {
        /// The file name.
        file: String,
    },
    /// Segment sequence numbers are not contiguous: a segment is missing.
    #[error(
        "WAL segment with sequence {expected_seq:016x} is missing (found {found} after {previous})"
    )]
    MissingSegment {
        /// The sequence number that should follow `previous`.
        expected_seq: u64,
        /// The segment before the gap.
        previous: String,
        /// The segment after the gap.
        found: String,
    },
    /// Invalid [`crate::WalOptions`].
    #[error("invalid WAL options: {0}")]
    Options(String),
    /// A file operation failed during recovery or repair.
    #[error("{op} on {file} failed during WAL recovery: {source}")]
    Io {
        /// The operation, e.g. "read".
        op: &'static str,
        /// File (or directory) name.
        file: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Errors of the snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot file is damaged or not a snapshot (bad magic, version,
    /// length, CRC, or rkyv validation failure).
    #[error("snapshot {file} is corrupt: {reason}")]
    Corrupt {
        /// Snapshot file name.
        file: String,
        /// What was wrong.
        reason: String,
    },
    /// The snapshot was written in a format this build does not read. Not
    /// skipped as corruption: falling back past it could lose state.
    #[error(
        "snapshot {file} has format version {version}; this ferrocd reads version {supported}"
    )]
    Unsupported {
        /// Snapshot file name.
        file: String,
        /// Its format version.
        version: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// rkyv failed to serialize the value.
    #[error("serializing snapshot body failed: {0}")]
    Serialize(String),
    /// rkyv failed to deserialize an already validated body.
    #[error("deserializing snapshot {file} failed: {reason}")]
    Deserialize {
        /// Snapshot file name.
        file: String,
        /// rkyv's message.
        reason: String,
    },
    /// A file operation failed.
    #[error("{op} on {file} failed: {source}")]
    Io {
        /// The operation, e.g. "rename".
        op: &'static str,
        /// File (or directory) name.
        file: String,
        /// The OS error.
        source: io::Error,
    },
}
