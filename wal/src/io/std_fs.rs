//! Blocking file operations on a real directory.

use super::{FileId, FileSystem};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// [`FileSystem`] over a real directory with std and libc calls.
#[derive(Debug)]
pub struct StdFs {
    dir: PathBuf,
    files: HashMap<u64, File>,
    next_id: u64,
}

impl StdFs {
    /// Uses `dir`, creating it (and its parents) if missing.
    pub fn open_dir(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        Ok(StdFs {
            dir,
            files: HashMap::new(),
            next_id: 1,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid file name {name:?}"),
            ));
        }
        Ok(self.dir.join(name))
    }

    fn file(&self, id: FileId) -> io::Result<&File> {
        self.files
            .get(&id.0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Raw descriptor of an open handle (for io_uring).
    pub fn raw_fd(&self, id: FileId) -> io::Result<RawFd> {
        Ok(self.file(id)?.as_raw_fd())
    }

    fn insert(&mut self, f: File) -> FileId {
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(id, f);
        FileId(id)
    }
}

impl FileSystem for StdFs {
    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                if let Ok(n) = e.file_name().into_string() {
                    out.push(n);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(name)?)
    }

    fn create(&mut self, name: &str) -> io::Result<FileId> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path(name)?)?;
        Ok(self.insert(f))
    }

    fn open(&mut self, name: &str) -> io::Result<FileId> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(name)?)?;
        Ok(self.insert(f))
    }

    fn close(&mut self, file: FileId) {
        self.files.remove(&file.0);
    }

    fn len(&mut self, file: FileId) -> io::Result<u64> {
        Ok(self.file(file)?.metadata()?.len())
    }

    fn allocate(&mut self, file: FileId, len: u64) -> io::Result<()> {
        let f = self.file(file)?;
        let len =
            libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: plain syscall on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // Filesystems without fallocate (e.g. some tmpfs setups): extend the size.
            if f.metadata()?.len() < len as u64 {
                f.set_len(len as u64)?;
            }
            return Ok(());
        }
        Err(err)
    }

    fn write_at(&mut self, file: FileId, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file(file)?.write_all_at(data, offset)
    }

    fn sync(&mut self, file: FileId) -> io::Result<()> {
        self.file(file)?.sync_all()
    }

    fn trim(&mut self, file: FileId, len: u64) -> io::Result<()> {
        let f = self.file(file)?;
        if f.metadata()?.len() > len {
            f.set_len(len)?;
        }
        Ok(())
    }

    fn write_back(&mut self, file: FileId, offset: u64, len: u64) -> io::Result<()> {
        use std::os::unix::io::AsRawFd;
        let fd = self.file(file)?.as_raw_fd();
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: fd is open for the lifetime of the call; no memory is passed.
        if unsafe { libc::sync_file_range(fd, offset, len, flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path(from)?, self.path(to)?)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(name)?)
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}
