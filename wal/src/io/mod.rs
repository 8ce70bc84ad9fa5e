//! The IO seam: every file operation of the WAL and the snapshot files goes
//! through [`FileSystem`] (blocking, directory-scoped) and [`WalIo`] (the
//! asynchronous write+fdatasync of a batch).
//!
//! Implementations:
//! - [`StdFs`]: blocking std/libc calls on a real directory (snapshots).
//! - [`UringIo`]: [`StdFs`] plus an io_uring ring for batches.
//! - [`MemFs`]: in memory, tracks durable versus written-but-unsynced bytes,
//!   simulates crashes (optionally keeping a torn prefix of unsynced bytes),
//!   fails the next write or sync on demand and flips bits.

mod mem;
mod std_fs;
mod uring;

pub use mem::{Crash, MemFs};
pub use std_fs::StdFs;
pub use uring::UringIo;

use std::io;
use std::os::fd::RawFd;

/// Handle of an open file, valid for the [`FileSystem`] that returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(pub u64);

/// Blocking file operations on one directory. Names are plain file names
/// (no path separators).
pub trait FileSystem {
    /// Names of the regular files in the directory.
    fn list(&mut self) -> io::Result<Vec<String>>;
    /// Whole content of a file (recovery reads segments at once).
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>>;
    /// Creates (or truncates) a file and opens it for writing.
    fn create(&mut self, name: &str) -> io::Result<FileId>;
    /// Opens an existing file for writing.
    fn open(&mut self, name: &str) -> io::Result<FileId>;
    /// Closes a handle. The caller guarantees no operation on it is in flight.
    fn close(&mut self, file: FileId);
    /// Current length of an open file.
    fn len(&mut self, file: FileId) -> io::Result<u64>;
    /// Extends the file to at least `len` bytes of allocated, zero-reading space
    /// (fallocate), so later writes do not change the file size.
    fn allocate(&mut self, file: FileId, len: u64) -> io::Result<()>;
    /// Writes all of `data` at `offset`.
    fn write_at(&mut self, file: FileId, offset: u64, data: &[u8]) -> io::Result<()>;
    /// fsync: data and metadata (size) of the file become durable.
    fn sync(&mut self, file: FileId) -> io::Result<()>;
    /// Shrinks an open file to `len` bytes (no-op when it is shorter),
    /// freeing the blocks past it.
    fn trim(&mut self, file: FileId, len: u64) -> io::Result<()>;
    /// Writes `len` bytes at `offset` back to the device and waits for
    /// them, without a journal commit or metadata (Linux
    /// `sync_file_range`). A bulk writer calls it every few MiB so that its
    /// dirty pages never pile up behind another file's fdatasync. Not a
    /// durability point (`sync` is); backends without page caches do
    /// nothing.
    fn write_back(&mut self, file: FileId, offset: u64, len: u64) -> io::Result<()> {
        let _ = (file, offset, len);
        Ok(())
    }
    /// Renames within the directory (atomic replace). Durable after [`FileSystem::sync_dir`].
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file. Durable after [`FileSystem::sync_dir`].
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// fsync of the directory: creations, renames and removals become durable.
    fn sync_dir(&mut self) -> io::Result<()>;
}

/// Which half of a batch failed.
#[derive(Debug)]
pub enum IoFailure {
    /// The write failed or was short.
    Write(io::Error),
    /// The write succeeded but fdatasync failed (or was cancelled).
    Sync(io::Error),
}

/// Completion of one batch submitted with [`WalIo::submit_write_sync`].
#[derive(Debug)]
pub struct IoCompletion {
    /// The tag given at submission.
    pub tag: u64,
    /// `Ok` once the bytes are written and fdatasync returned success.
    pub result: Result<(), IoFailure>,
}

/// Removes a file after freeing its blocks `step_bytes` at a time from the
/// end: an unlink frees every extent of a large file in one ext4 journal
/// transaction, and an fdatasync of another file (the WAL) waits for that
/// transaction. The trimming is best effort; the removal's result is
/// returned.
pub fn remove_gradually<F: FileSystem + ?Sized>(
    fs: &mut F,
    name: &str,
    step_bytes: u64,
) -> io::Result<()> {
    assert!(step_bytes > 0, "step_bytes must be positive");
    if let Ok(file) = fs.open(name) {
        if let Ok(mut len) = fs.len(file) {
            while len > 0 {
                len = len.saturating_sub(step_bytes);
                if fs.trim(file, len).is_err() {
                    break;
                }
            }
        }
        fs.close(file);
    }
    fs.remove(name)
}

/// Asynchronous batch I/O: one write followed by one fdatasync, ordered after
/// every earlier batch (a batch starts only when the previous one is durable,
/// which is what makes "damage followed by a later batch" mean corruption).
pub trait WalIo: FileSystem {
    /// Queues `buf` to be written at `offset` and then fdatasync'ed. Returns
    /// once the request is handed to the kernel (or completed, in memory).
    fn submit_write_sync(
        &mut self,
        file: FileId,
        offset: u64,
        buf: Vec<u8>,
        tag: u64,
    ) -> io::Result<()>;
    /// Collects finished batches into `out`. With `wait`, blocks until at
    /// least one completes if any is in flight.
    fn reap(&mut self, wait: bool, out: &mut Vec<IoCompletion>) -> io::Result<()>;
    /// A file descriptor that becomes readable when completions are ready
    /// (the ring's registered eventfd), for an external reactor.
    fn event_fd(&self) -> Option<RawFd>;
}
