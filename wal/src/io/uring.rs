//! io_uring implementation of [`WalIo`]: a batch is a WRITE SQE linked
//! (IO_LINK) to an FSYNC(DATASYNC) SQE, so one submission makes it durable.
//! The WRITE also carries IO_DRAIN so it starts only after every earlier
//! request finished: batches reach the disk strictly one after another, which
//! recovery relies on (damage followed by a later batch = corruption).

use super::{FileId, FileSystem, IoCompletion, IoFailure, StdFs, WalIo};
use io_uring::{opcode, squeue, types, IoUring};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

const OP_WRITE: u64 = 0;
const OP_SYNC: u64 = 1;

#[derive(Debug)]
struct Pending {
    /// Owned until both CQEs arrive: the kernel reads from it.
    buf: Vec<u8>,
    write: Option<i32>,
    sync: Option<i32>,
}

/// [`StdFs`] plus an io_uring ring for batch write+fdatasync.
pub struct UringIo {
    fs: StdFs,
    ring: IoUring,
    eventfd: OwnedFd,
    pending: HashMap<u64, Pending>,
}

impl std::fmt::Debug for UringIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringIo")
            .field("dir", &self.fs.dir())
            .field("in_flight", &self.pending.len())
            .finish()
    }
}

impl UringIo {
    /// Opens (creating if needed) `dir` and sets up a ring with `entries`
    /// submission entries and a registered eventfd.
    pub fn open_dir(dir: impl AsRef<Path>, entries: u32) -> io::Result<Self> {
        let fs = StdFs::open_dir(dir)?;
        let ring = IoUring::new(entries.max(2))?;
        // SAFETY: plain syscall; the returned descriptor is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        Ok(UringIo {
            fs,
            ring,
            eventfd,
            pending: HashMap::new(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.fs.dir()
    }

    fn drain_eventfd(&self) {
        let mut v = [0u8; 8];
        // SAFETY: reads 8 bytes into a local buffer from our own non-blocking eventfd.
        // EAGAIN (nothing to drain) is expected and ignored.
        let _ = unsafe { libc::read(self.eventfd.as_raw_fd(), v.as_mut_ptr().cast(), 8) };
    }

    fn collect(&mut self, out: &mut Vec<IoCompletion>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let tag = cqe.user_data() >> 1;
            let op = cqe.user_data() & 1;
            let Some(p) = self.pending.get_mut(&tag) else {
                debug_assert!(false, "completion for unknown tag {tag}");
                continue;
            };
            if op == OP_WRITE {
                p.write = Some(cqe.result());
            } else {
                p.sync = Some(cqe.result());
            }
            if let (Some(w), Some(s)) = (p.write, p.sync) {
                let p = self.pending.remove(&tag).expect("present");
                let result = if w < 0 {
                    Err(IoFailure::Write(io::Error::from_raw_os_error(-w)))
                } else if w as usize != p.buf.len() {
                    Err(IoFailure::Write(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {w} of {} bytes", p.buf.len()),
                    )))
                } else if s < 0 {
                    Err(IoFailure::Sync(io::Error::from_raw_os_error(-s)))
                } else {
                    Ok(())
                };
                out.push(IoCompletion { tag, result });
            }
        }
    }

    fn submit_retrying(&self, wait: usize) -> io::Result<()> {
        loop {
            let r = if wait == 0 {
                self.ring.submit()
            } else {
                self.ring.submit_and_wait(wait)
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        // The kernel may still read from pending buffers: wait for them.
        let mut sink = Vec::new();
        while !self.pending.is_empty() {
            if self.submit_retrying(1).is_err() {
                // Cannot wait: leak the buffers rather than free memory the kernel uses.
                for (_, p) in self.pending.drain() {
                    std::mem::forget(p.buf);
                }
                return;
            }
            self.collect(&mut sink);
        }
    }
}

impl FileSystem for UringIo {
    fn list(&mut self) -> io::Result<Vec<String>> {
        self.fs.list()
    }
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        self.fs.read(name)
    }
    fn create(&mut self, name: &str) -> io::Result<FileId> {
        self.fs.create(name)
    }
    fn open(&mut self, name: &str) -> io::Result<FileId> {
        self.fs.open(name)
    }
    fn close(&mut self, file: FileId) {
        self.fs.close(file)
    }
    fn len(&mut self, file: FileId) -> io::Result<u64> {
        self.fs.len(file)
    }
    fn allocate(&mut self, file: FileId, len: u64) -> io::Result<()> {
        self.fs.allocate(file, len)
    }
    fn write_at(&mut self, file: FileId, offset: u64, data: &[u8]) -> io::Result<()> {
        self.fs.write_at(file, offset, data)
    }
    fn sync(&mut self, file: FileId) -> io::Result<()> {
        self.fs.sync(file)
    }
    fn trim(&mut self, file: FileId, len: u64) -> io::Result<()> {
        self.fs.trim(file, len)
    }
    fn write_back(&mut self, file: FileId, offset: u64, len: u64) -> io::Result<()> {
        self.fs.write_back(file, offset, len)
    }
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.fs.rename(from, to)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.fs.remove(name)
    }
    fn sync_dir(&mut self) -> io::Result<()> {
        self.fs.sync_dir()
    }
}

impl WalIo for UringIo {
    fn submit_write_sync(
        &mut self,
        file: FileId,
        offset: u64,
        buf: Vec<u8>,
        tag: u64,
    ) -> io::Result<()> {
        assert!(tag < u64::MAX >> 1, "tag must leave room for the op bit");
        assert!(
            !self.pending.contains_key(&tag),
            "tag {tag} already in flight"
        );
        let fd = types::Fd(self.fs.raw_fd(file)?);
        let len = u32::try_from(buf.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "batch over 4 GiB"))?;
        // The Vec's heap block does not move when the Vec is moved into the map.
        let ptr = buf.as_ptr();
        // Drain only when something is in flight: with nothing to wait for,
        // the flag would only add a deferral in the kernel.
        let flags = if self.pending.is_empty() {
            squeue::Flags::IO_LINK
        } else {
            squeue::Flags::IO_LINK | squeue::Flags::IO_DRAIN
        };
        let write = opcode::Write::new(fd, ptr, len)
            .offset(offset)
            .build()
            .flags(flags)
            .user_data(tag << 1 | OP_WRITE);
        let sync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(tag << 1 | OP_SYNC);
        // Both SQEs must enter the kernel in the same submission for the link.
        let free = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if free < 2 {
            self.submit_retrying(0)?;
        }
        self.pending.insert(
            tag,
            Pending {
                buf,
                write: None,
                sync: None,
            },
        );
        {
            let mut sq = self.ring.submission();
            // SAFETY: the buffer behind `ptr` is owned by `self.pending[tag]` until
            // both CQEs of this tag are reaped (and Drop waits for them); the fd
            // stays open because the WAL closes a segment only after its last
            // batch completed.
            let pushed = unsafe { sq.push(&write).and_then(|()| sq.push(&sync)) };
            if pushed.is_err() {
                // Only possible if the queue filled in between; nothing was pushed
                // for this tag unless the first push succeeded, which `free >= 2` rules out.
                self.pending.remove(&tag);
                return Err(io::Error::other("io_uring submission queue full"));
            }
        }
        self.submit_retrying(0)
    }

    fn reap(&mut self, wait: bool, out: &mut Vec<IoCompletion>) -> io::Result<()> {
        let before = out.len();
        self.drain_eventfd();
        self.collect(out);
        while wait && out.len() == before && !self.pending.is_empty() {
            self.submit_retrying(1)?;
            self.drain_eventfd();
            self.collect(out);
        }
        Ok(())
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.eventfd.as_raw_fd())
    }
}
