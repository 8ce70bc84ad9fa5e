//! In-memory, fault-injecting [`FileSystem`] + [`WalIo`] for tests.
//!
//! Model (after redb's crash-simulating backend): each file has its current
//! bytes plus an undo log of the operations since its last sync, so
//! "durable bytes" = current bytes with the undo log rolled back. Directory
//! entries are durable only after [`FileSystem::sync_dir`]. A [`Crash`] keeps
//! the durable state, optionally plus a prefix of each file's unsynced bytes
//! (a torn write). Clones share state, so a test keeps a handle while the
//! [`crate::Wal`] owns another.

use super::{FileId, FileSystem, IoCompletion, IoFailure, WalIo};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

/// What survives a simulated crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// Only synced bytes and synced directory entries survive.
    DropUnsynced,
    /// Synced state plus the first `n` unsynced bytes of every file, in the
    /// order they were written (a torn write).
    KeepUnsyncedPrefix(usize),
}

#[derive(Clone, Debug)]
enum Undo {
    Write {
        offset: usize,
        new: Vec<u8>,
        old: Vec<u8>,
        old_len: usize,
    },
    SetLen {
        new_len: usize,
        old_len: usize,
        old_tail: Vec<u8>,
    },
}

#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    undo: Vec<Undo>,
}

impl Inode {
    fn write(&mut self, offset: usize, bytes: &[u8]) {
        let old_len = self.data.len();
        let end = offset + bytes.len();
        let old = if offset < old_len {
            self.data[offset..end.min(old_len)].to_vec()
        } else {
            Vec::new()
        };
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(bytes);
        self.undo.push(Undo::Write {
            offset,
            new: bytes.to_vec(),
            old,
            old_len,
        });
    }

    fn set_len(&mut self, new_len: usize) {
        let old_len = self.data.len();
        let old_tail = if new_len < old_len {
            self.data[new_len..].to_vec()
        } else {
            Vec::new()
        };
        self.data.resize(new_len, 0);
        self.undo.push(Undo::SetLen {
            new_len,
            old_len,
            old_tail,
        });
    }

    fn unsynced_bytes(&self) -> usize {
        self.undo
            .iter()
            .map(|u| match u {
                Undo::Write { new, .. } => new.len(),
                Undo::SetLen { .. } => 0,
            })
            .sum()
    }

    /// Rolls back to the durable state, then replays up to `keep` unsynced bytes.
    fn crash(&mut self, keep: usize) {
        let ops = std::mem::take(&mut self.undo);
        for op in ops.iter().rev() {
            match op {
                Undo::Write {
                    offset,
                    old,
                    old_len,
                    ..
                } => {
                    self.data[*offset..*offset + old.len()].copy_from_slice(old);
                    self.data.truncate(*old_len);
                }
                Undo::SetLen {
                    old_len, old_tail, ..
                } => {
                    self.data.truncate(*old_len.min(&self.data.len()));
                    self.data.extend_from_slice(old_tail);
                    self.data.resize(*old_len, 0);
                }
            }
        }
        let mut budget = keep;
        for op in &ops {
            if budget == 0 {
                break;
            }
            match op {
                Undo::Write { offset, new, .. } => {
                    let n = budget.min(new.len());
                    let end = offset + n;
                    if self.data.len() < end {
                        self.data.resize(end, 0);
                    }
                    self.data[*offset..end].copy_from_slice(&new[..n]);
                    budget -= n;
                }
                Undo::SetLen { new_len, .. } => self.data.resize(*new_len, 0),
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    handles: HashMap<u64, u64>,
    next_inode: u64,
    next_handle: u64,
    completions: VecDeque<IoCompletion>,
    fail_next_write: Option<i32>,
    fail_next_sync: Option<i32>,
    stall_syncs: bool,
    stalled: usize,
    syncs: u64,
    writes: u64,
}

impl State {
    fn inode_of(&mut self, file: FileId) -> io::Result<&mut Inode> {
        let ino = *self
            .handles
            .get(&file.0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    fn handle_for(&mut self, ino: u64) -> FileId {
        self.next_handle += 1;
        self.handles.insert(self.next_handle, ino);
        FileId(self.next_handle)
    }

    fn gc(&mut self) {
        let live: std::collections::HashSet<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .chain(self.handles.values())
            .copied()
            .collect();
        self.inodes.retain(|k, _| live.contains(k));
    }

    fn take_write_fault(&mut self) -> io::Result<()> {
        match self.fail_next_write.take() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    fn take_sync_fault(&mut self) -> io::Result<()> {
        match self.fail_next_sync.take() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no such file {name}"))
}

/// In-memory, crash-simulating, fault-injecting file system. Clones share state.
#[derive(Clone, Debug, Default)]
pub struct MemFs {
    state: Arc<Mutex<State>>,
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An independent deep copy of the files and directory (durable and
    /// current state); open handles, completions and armed faults are not
    /// copied. Lets a test crash the same image many times.
    pub fn fork(&self) -> MemFs {
        let st = self.st();
        let mut copy = State {
            inodes: st.inodes.clone(),
            names: st.names.clone(),
            durable_names: st.durable_names.clone(),
            next_inode: st.next_inode,
            ..State::default()
        };
        copy.gc();
        MemFs {
            state: Arc::new(Mutex::new(copy)),
        }
    }

    /// Simulates power loss: unsynced directory changes and (some) unsynced
    /// bytes vanish, handles become invalid, pending completions are lost.
    pub fn crash(&self, mode: Crash) {
        let mut st = self.st();
        st.names = st.durable_names.clone();
        st.handles.clear();
        st.completions.clear();
        st.stalled = 0;
        st.stall_syncs = false;
        st.gc();
        let keep = match mode {
            Crash::DropUnsynced => 0,
            Crash::KeepUnsyncedPrefix(n) => n,
        };
        for ino in st.inodes.values_mut() {
            ino.crash(keep);
        }
    }

    /// Makes the next write (blocking or batch) fail with `errno`; nothing is written.
    pub fn fail_next_write(&self, errno: i32) {
        self.st().fail_next_write = Some(errno);
    }

    /// Makes the next sync (fsync, fdatasync of a batch) fail with `errno`; the
    /// written bytes stay unsynced (and are lost on a crash), as after a real
    /// fsync error.
    pub fn fail_next_sync(&self, errno: i32) {
        self.st().fail_next_sync = Some(errno);
    }

    /// While set, batch writes are applied but their fdatasync never happens
    /// and no completion is delivered: a crash then tears the batch.
    pub fn stall_syncs(&self, stall: bool) {
        self.st().stall_syncs = stall;
    }

    /// Flips bit `bit` of byte `offset` of `name` (current content; if an
    /// unsynced write covers the byte, a crash rolls the flip back with it).
    pub fn flip_bit(&self, name: &str, offset: usize, bit: u8) -> io::Result<()> {
        let mut st = self.st();
        let ino = *st.names.get(name).ok_or_else(|| not_found(name))?;
        let inode = st.inodes.get_mut(&ino).expect("named inode exists");
        let b = inode.data.get_mut(offset).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "offset past end of file")
        })?;
        *b ^= 1 << (bit % 8);
        Ok(())
    }

    /// Current content of `name`, if it exists.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.st();
        let ino = st.names.get(name)?;
        Some(st.inodes[ino].data.clone())
    }

    /// Replaces the content of `name` (creating it), durably.
    pub fn set_file(&self, name: &str, data: Vec<u8>) {
        let mut st = self.st();
        let ino = match st.names.get(name) {
            Some(&i) => i,
            None => {
                st.next_inode += 1;
                let i = st.next_inode;
                st.names.insert(name.to_string(), i);
                i
            }
        };
        st.durable_names.insert(name.to_string(), ino);
        st.inodes.insert(
            ino,
            Inode {
                data,
                undo: Vec::new(),
            },
        );
    }

    /// Current file names.
    pub fn names(&self) -> Vec<String> {
        self.st().names.keys().cloned().collect()
    }

    /// Unsynced bytes written to `name` since its last sync.
    pub fn unsynced_bytes(&self, name: &str) -> usize {
        let st = self.st();
        st.names
            .get(name)
            .map_or(0, |i| st.inodes[i].unsynced_bytes())
    }

    /// Number of successful syncs (fsync and batch fdatasync) so far.
    pub fn sync_count(&self) -> u64 {
        self.st().syncs
    }

    /// Number of successful writes (blocking and batch) so far.
    pub fn write_count(&self) -> u64 {
        self.st().writes
    }
}

impl FileSystem for MemFs {
    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        self.file(name).ok_or_else(|| not_found(name))
    }

    fn create(&mut self, name: &str) -> io::Result<FileId> {
        let mut st = self.st();
        st.next_inode += 1;
        let ino = st.next_inode;
        st.inodes.insert(ino, Inode::default());
        st.names.insert(name.to_string(), ino);
        let h = st.handle_for(ino);
        st.gc();
        Ok(h)
    }

    fn open(&mut self, name: &str) -> io::Result<FileId> {
        let mut st = self.st();
        let ino = *st.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(st.handle_for(ino))
    }

    fn close(&mut self, file: FileId) {
        let mut st = self.st();
        st.handles.remove(&file.0);
        st.gc();
    }

    fn len(&mut self, file: FileId) -> io::Result<u64> {
        Ok(self.st().inode_of(file)?.data.len() as u64)
    }

    fn allocate(&mut self, file: FileId, len: u64) -> io::Result<()> {
        let mut st = self.st();
        let ino = st.inode_of(file)?;
        if (ino.data.len() as u64) < len {
            ino.set_len(len as usize);
        }
        Ok(())
    }

    fn trim(&mut self, file: FileId, len: u64) -> io::Result<()> {
        let mut st = self.st();
        let ino = st.inode_of(file)?;
        if (ino.data.len() as u64) > len {
            ino.set_len(len as usize);
        }
        Ok(())
    }

    fn write_at(&mut self, file: FileId, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.st();
        st.inode_of(file)?;
        st.take_write_fault()?;
        st.inode_of(file)?.write(offset as usize, data);
        st.writes += 1;
        Ok(())
    }

    fn sync(&mut self, file: FileId) -> io::Result<()> {
        let mut st = self.st();
        st.inode_of(file)?;
        st.take_sync_fault()?;
        st.inode_of(file)?.undo.clear();
        st.syncs += 1;
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.st();
        let ino = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_string(), ino);
        st.gc();
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let mut st = self.st();
        st.names.remove(name).ok_or_else(|| not_found(name))?;
        st.gc();
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        let mut st = self.st();
        st.take_sync_fault()?;
        st.durable_names = st.names.clone();
        st.gc();
        st.syncs += 1;
        Ok(())
    }
}

impl WalIo for MemFs {
    fn submit_write_sync(
        &mut self,
        file: FileId,
        offset: u64,
        buf: Vec<u8>,
        tag: u64,
    ) -> io::Result<()> {
        let mut st = self.st();
        st.inode_of(file)?;
        if let Err(e) = st.take_write_fault() {
            st.completions.push_back(IoCompletion {
                tag,
                result: Err(IoFailure::Write(e)),
            });
            return Ok(());
        }
        st.inode_of(file)?.write(offset as usize, &buf);
        st.writes += 1;
        if st.stall_syncs {
            st.stalled += 1;
            return Ok(());
        }
        let result = match st.take_sync_fault() {
            Err(e) => Err(IoFailure::Sync(e)),
            Ok(()) => {
                st.inode_of(file)?.undo.clear();
                st.syncs += 1;
                Ok(())
            }
        };
        st.completions.push_back(IoCompletion { tag, result });
        Ok(())
    }

    fn reap(&mut self, wait: bool, out: &mut Vec<IoCompletion>) -> io::Result<()> {
        let mut st = self.st();
        if wait && st.completions.is_empty() && st.stalled > 0 {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "MemFs: syncs are stalled, nothing can complete",
            ));
        }
        out.extend(st.completions.drain(..));
        Ok(())
    }

    fn event_fd(&self) -> Option<RawFd> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_durable_and_torn_prefix() {
        let mut fs = MemFs::new();
        let f = fs.create("a").unwrap();
        fs.write_at(f, 0, b"hello").unwrap();
        fs.sync(f).unwrap();
        fs.sync_dir().unwrap();
        fs.write_at(f, 5, b" world").unwrap();
        fs.write_at(f, 0, b"J").unwrap();
        assert_eq!(fs.unsynced_bytes("a"), 7);
        let g = fs.fork();
        g.crash(Crash::DropUnsynced);
        assert_eq!(g.file("a").unwrap(), b"hello");
        let g = fs.fork();
        g.crash(Crash::KeepUnsyncedPrefix(3));
        assert_eq!(g.file("a").unwrap(), b"hello wo");
        let g = fs.fork();
        g.crash(Crash::KeepUnsyncedPrefix(100));
        assert_eq!(g.file("a").unwrap(), b"Jello world");
    }

    #[test]
    fn directory_entries_need_sync_dir() {
        let mut fs = MemFs::new();
        let f = fs.create("a").unwrap();
        fs.write_at(f, 0, b"x").unwrap();
        fs.sync(f).unwrap();
        let g = fs.fork();
        g.crash(Crash::DropUnsynced);
        assert!(g.names().is_empty());
        fs.sync_dir().unwrap();
        fs.rename("a", "b").unwrap();
        let g = fs.fork();
        g.crash(Crash::DropUnsynced);
        assert_eq!(g.names(), vec!["a".to_string()]);
        fs.sync_dir().unwrap();
        fs.crash(Crash::DropUnsynced);
        assert_eq!(fs.file("b").unwrap(), b"x");
    }

    #[test]
    fn set_len_rolls_back() {
        let mut fs = MemFs::new();
        let f = fs.create("a").unwrap();
        fs.write_at(f, 0, b"abc").unwrap();
        fs.sync(f).unwrap();
        fs.sync_dir().unwrap();
        fs.allocate(f, 10).unwrap();
        assert_eq!(fs.len(f).unwrap(), 10);
        fs.crash(Crash::DropUnsynced);
        assert_eq!(fs.file("a").unwrap(), b"abc");
    }

    #[test]
    fn faults_fire_once() {
        let mut fs = MemFs::new();
        let f = fs.create("a").unwrap();
        fs.fail_next_sync(libc::EIO);
        assert_eq!(fs.sync(f).unwrap_err().raw_os_error(), Some(libc::EIO));
        fs.sync(f).unwrap();
        fs.fail_next_write(libc::ENOSPC);
        assert!(fs.write_at(f, 0, b"x").is_err());
        fs.write_at(f, 0, b"x").unwrap();
    }
}
