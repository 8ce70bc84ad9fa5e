//! Snapshot files: an rkyv-archived state body behind a CRC-protected header.
//!
//! Written atomically (`{index:016x}.snap.tmp`, fsync, rename to
//! `{index:016x}.snap`, fsync the directory), so a crash leaves either the old
//! set of snapshots or the new one, never a half-written `.snap`. Loading
//! validates the header CRC, the body CRC and the archive itself (bytecheck,
//! via `rkyv::access`), because a snapshot replaces the WAL prefix it covers:
//! trusting a damaged one would silently lose state.
//!
//! Header (48 bytes, little-endian; see `FORMAT.md`): magic `FRCDSNAP`,
//! format version u32, reserved u32, index u64, term u64, body length u64,
//! body CRC32C u32, header CRC32C u32 (over bytes 0..44). The body follows at
//! offset 48 and is copied into an [`AlignedVec`] before validation, since
//! rkyv needs its root aligned.

use crate::error::SnapshotError;
use crate::io::{FileSystem, StdFs};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::BoxedError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use std::marker::PhantomData;
use std::path::Path;

/// Bytes of the snapshot header.
pub const SNAPSHOT_HEADER_BYTES: usize = 48;
/// Magic at offset 0 of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"FRCDSNAP";
/// Snapshot file format version.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// Largest accepted body; a sanity bound against garbage length fields
/// (the whole body is read into memory).
pub const SNAPSHOT_BODY_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// Body bytes written between two write-backs while saving (see
/// [`SnapshotDir::save_bytes`]).
pub const SNAPSHOT_WRITE_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Bytes freed per step when an old snapshot is removed (see
/// [`crate::io::remove_gradually`]).
pub const SNAPSHOT_TRIM_STEP_BYTES: u64 = 16 * 1024 * 1024;

/// Raft position a snapshot covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotMeta {
    /// Last log index included in the snapshot.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
}

/// File name of the snapshot at `index`.
pub fn snapshot_name(index: u64) -> String {
    format!("{index:016x}.snap")
}

/// Parses `{index:016x}.snap`.
pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".snap")?;
    if stem.len() != 16 || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

/// Encodes the 48-byte header for a body.
pub fn encode_snapshot_header(meta: SnapshotMeta, body: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut h = [0u8; SNAPSHOT_HEADER_BYTES];
    h[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    h[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&meta.index.to_le_bytes());
    h[24..32].copy_from_slice(&meta.term.to_le_bytes());
    h[32..40].copy_from_slice(&(body.len() as u64).to_le_bytes());
    h[40..44].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..44]);
    h[44..48].copy_from_slice(&hcrc.to_le_bytes());
    h
}

/// Validates a whole snapshot file's framing (not the archive); returns the
/// metadata and the body slice. Never panics, whatever the bytes.
pub fn decode_snapshot_file(file: &[u8]) -> Result<(SnapshotMeta, &[u8]), String> {
    let h = file
        .get(..SNAPSHOT_HEADER_BYTES)
        .ok_or_else(|| format!("file is {} bytes, shorter than the header", file.len()))?;
    if h[0..8] != SNAPSHOT_MAGIC {
        return Err("bad magic".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    if crc32c::crc32c(&h[0..44]) != u32_at(44) {
        return Err("header CRC32C mismatch".into());
    }
    let version = u32_at(8);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let body_len = u64_at(32);
    let actual = (file.len() - SNAPSHOT_HEADER_BYTES) as u64;
    if body_len > SNAPSHOT_BODY_BYTES_MAX || body_len != actual {
        return Err(format!(
            "body length {body_len} but {actual} bytes follow the header"
        ));
    }
    let body = &file[SNAPSHOT_HEADER_BYTES..];
    if crc32c::crc32c(body) != u32_at(40) {
        return Err("body CRC32C mismatch".into());
    }
    Ok((
        SnapshotMeta {
            index: u64_at(16),
            term: u64_at(24),
        },
        body,
    ))
}

/// A loaded, fully validated snapshot of a `T`.
pub struct Snapshot<T> {
    /// Position it covers.
    pub meta: SnapshotMeta,
    /// File name.
    pub file: String,
    body: AlignedVec,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("meta", &self.meta)
            .field("file", &self.file)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl<T> Snapshot<T>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>,
{
    /// Zero-copy view of the archived state (re-validated: cheap next to the
    /// CRC, and it keeps this crate free of `unsafe` access).
    pub fn archived(&self) -> &T::Archived {
        rkyv::access::<T::Archived, BoxedError>(&self.body)
            .expect("validated when the snapshot was loaded; the bytes are immutable")
    }

    /// The archived bytes (aligned).
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

impl<T> Snapshot<T>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>
        + Deserialize<T, HighDeserializer<BoxedError>>,
{
    /// Deserializes into an owned `T`.
    pub fn deserialize(&self) -> Result<T, SnapshotError> {
        rkyv::deserialize::<T, BoxedError>(self.archived()).map_err(|e| {
            SnapshotError::Deserialize {
                file: self.file.clone(),
                reason: e.to_string(),
            }
        })
    }
}

/// A directory of snapshot files.
#[derive(Debug)]
pub struct SnapshotDir<F: FileSystem = StdFs> {
    fs: F,
}

fn io_err<'a>(
    op: &'static str,
    file: &'a str,
) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        file: file.to_string(),
        source,
    }
}

impl SnapshotDir<StdFs> {
    /// Opens (creating if needed) a snapshot directory on disk.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        let d = dir.as_ref();
        let fs = StdFs::open_dir(d).map_err(io_err("open dir", &d.display().to_string()))?;
        Self::with_fs(fs)
    }
}

impl<F: FileSystem> SnapshotDir<F> {
    /// Uses any [`FileSystem`]; removes leftover `.snap.tmp` files of
    /// interrupted saves.
    pub fn with_fs(mut fs: F) -> Result<Self, SnapshotError> {
        let names = fs.list().map_err(io_err("list", "snapshot directory"))?;
        let mut removed = false;
        for n in names.iter().filter(|n| n.ends_with(".snap.tmp")) {
            fs.remove(n).map_err(io_err("remove", n))?;
            removed = true;
        }
        if removed {
            fs.sync_dir()
                .map_err(io_err("fsync", "snapshot directory"))?;
        }
        Ok(SnapshotDir { fs })
    }

    /// The file system (tests use it to inject faults).
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// Archives `value` with rkyv and saves it atomically. Returns the file name.
    pub fn save<T>(&mut self, meta: SnapshotMeta, value: &T) -> Result<String, SnapshotError>
    where
        T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, BoxedError>>,
    {
        let body = rkyv::to_bytes::<BoxedError>(value)
            .map_err(|e| SnapshotError::Serialize(e.to_string()))?;
        self.save_bytes(meta, &body)
    }

    /// Saves an already archived body atomically: tmp file, fsync, rename,
    /// fsync directory. Returns the file name.
    pub fn save_bytes(&mut self, meta: SnapshotMeta, body: &[u8]) -> Result<String, SnapshotError> {
        let name = snapshot_name(meta.index);
        let tmp = format!("{name}.tmp");
        let header = encode_snapshot_header(meta, body);
        let file = self.fs.create(&tmp).map_err(io_err("create", &tmp))?;
        let r = (|| {
            self.fs.write_at(file, 0, &header)?;
            // A few MiB at a time, each written back before the next: an
            // image is hundreds of MiB at a million keys, and as one dirty
            // lump it held every WAL fdatasync behind it for 200-300 ms.
            let mut offset = SNAPSHOT_HEADER_BYTES as u64;
            for chunk in body.chunks(SNAPSHOT_WRITE_CHUNK_BYTES) {
                self.fs.write_at(file, offset, chunk)?;
                self.fs.write_back(file, offset, chunk.len() as u64)?;
                offset += chunk.len() as u64;
            }
            self.fs.sync(file)
        })();
        self.fs.close(file);
        if let Err(e) = r {
            let _ = self.fs.remove(&tmp);
            return Err(SnapshotError::Io {
                op: "write+fsync",
                file: tmp,
                source: e,
            });
        }
        self.fs
            .rename(&tmp, &name)
            .map_err(io_err("rename", &tmp))?;
        self.fs
            .sync_dir()
            .map_err(io_err("fsync", "snapshot directory"))?;
        Ok(name)
    }

    /// Snapshot files present, newest (highest index) first.
    pub fn list(&mut self) -> Result<Vec<(u64, String)>, SnapshotError> {
        let mut v: Vec<(u64, String)> = self
            .fs
            .list()
            .map_err(io_err("list", "snapshot directory"))?
            .into_iter()
            .filter_map(|n| parse_snapshot_name(&n).map(|i| (i, n)))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(v)
    }

    /// Reads and fully validates one snapshot file.
    pub fn load_file<T>(&mut self, name: &str) -> Result<Snapshot<T>, SnapshotError>
    where
        T: Archive,
        T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>,
    {
        let bytes = self.fs.read(name).map_err(io_err("read", name))?;
        let corrupt = |reason: String| SnapshotError::Corrupt {
            file: name.to_string(),
            reason,
        };
        let (meta, body) = decode_snapshot_file(&bytes).map_err(corrupt)?;
        if parse_snapshot_name(name) != Some(meta.index) {
            return Err(corrupt(format!(
                "header index {} does not match the file name",
                meta.index
            )));
        }
        let mut aligned = AlignedVec::with_capacity(body.len());
        aligned.extend_from_slice(body);
        rkyv::access::<T::Archived, BoxedError>(&aligned)
            .map_err(|e| corrupt(format!("archive validation failed: {e}")))?;
        Ok(Snapshot {
            meta,
            file: name.to_string(),
            body: aligned,
            _t: PhantomData,
        })
    }

    /// Loads the newest snapshot. A corrupt newest snapshot is an error naming
    /// the file (falling back silently could lose state whose WAL segments
    /// were already released); see [`SnapshotDir::load_newest_valid`].
    pub fn load<T>(&mut self) -> Result<Option<Snapshot<T>>, SnapshotError>
    where
        T: Archive,
        T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>,
    {
        match self.list()?.first() {
            None => Ok(None),
            Some((_, name)) => self.load_file(&name.clone()).map(Some),
        }
    }

    /// Loads the newest snapshot that validates, also returning the errors of
    /// newer, corrupt ones (for an operator-approved fallback).
    pub fn load_newest_valid<T>(
        &mut self,
    ) -> Result<(Option<Snapshot<T>>, Vec<SnapshotError>), SnapshotError>
    where
        T: Archive,
        T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>,
    {
        let mut skipped = Vec::new();
        for (_, name) in self.list()? {
            match self.load_file(&name) {
                Ok(s) => return Ok((Some(s), skipped)),
                Err(e @ SnapshotError::Corrupt { .. }) => skipped.push(e),
                Err(e) => return Err(e),
            }
        }
        Ok((None, skipped))
    }

    /// Deletes snapshots with an index below `index`. Returns the removed names.
    pub fn remove_older_than(&mut self, index: u64) -> Result<Vec<String>, SnapshotError> {
        let mut removed = Vec::new();
        for (i, name) in self.list()? {
            if i < index {
                crate::io::remove_gradually(&mut self.fs, &name, SNAPSHOT_TRIM_STEP_BYTES)
                    .map_err(io_err("remove", &name))?;
                removed.push(name);
            }
        }
        if !removed.is_empty() {
            self.fs
                .sync_dir()
                .map_err(io_err("fsync", "snapshot directory"))?;
        }
        Ok(removed)
    }
}
