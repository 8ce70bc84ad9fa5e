//! Snapshot files: a body of rkyv-archived frames behind a CRC-protected
//! header.
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
//! offset 48: frames, each a u64 length and that many bytes of one rkyv
//! archive. Frame 0 is the *head* (validated when the file is loaded); the
//! frames after it are *chunks* the caller validates one at a time. A
//! state hundreds of MiB large is thus written as it is copied
//! ([`SnapshotWriter`]) and read back a chunk at a time, never archived or
//! deserialized whole. Each frame is copied into an [`AlignedVec`] before
//! validation, since rkyv needs its root aligned.

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
/// Snapshot file format version (2: framed body; 1 was a single archive).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
/// Bytes of a frame's length prefix.
pub const SNAPSHOT_FRAME_LEN_BYTES: usize = 8;
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
    header(meta, body.len() as u64, crc32c::crc32c(body))
}

fn header(meta: SnapshotMeta, body_len: u64, body_crc: u32) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut h = [0u8; SNAPSHOT_HEADER_BYTES];
    h[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    h[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&meta.index.to_le_bytes());
    h[24..32].copy_from_slice(&meta.term.to_le_bytes());
    h[32..40].copy_from_slice(&body_len.to_le_bytes());
    h[40..44].copy_from_slice(&body_crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..44]);
    h[44..48].copy_from_slice(&hcrc.to_le_bytes());
    h
}

/// The format version of a file whose magic and header CRC are intact.
fn header_version(file: &[u8]) -> Option<u32> {
    let h = file.get(..SNAPSHOT_HEADER_BYTES)?;
    let crc = u32::from_le_bytes(h[44..48].try_into().expect("4 bytes"));
    (h[0..8] == SNAPSHOT_MAGIC && crc32c::crc32c(&h[0..44]) == crc)
        .then(|| u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")))
}

/// Splits a body into its frames: byte ranges of the body. Never panics.
///
/// # Errors
/// A length that runs past the end, or no frame at all.
pub fn decode_frames(body: &[u8]) -> Result<Vec<std::ops::Range<usize>>, String> {
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        let len_bytes = body
            .get(at..at + SNAPSHOT_FRAME_LEN_BYTES)
            .ok_or_else(|| format!("frame {} at body offset {at}: cut length", frames.len()))?;
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let start = at + SNAPSHOT_FRAME_LEN_BYTES;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= body.len())
            .ok_or_else(|| {
                format!(
                    "frame {} at body offset {at}: length {len} runs past the body",
                    frames.len()
                )
            })?;
        frames.push(start..end);
        at = end;
    }
    if frames.is_empty() {
        return Err("no head frame".into());
    }
    Ok(frames)
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

/// A loaded snapshot whose head frame is an archived `T`: the file's
/// framing, CRCs and head are validated; each chunk is validated when read
/// ([`Snapshot::chunk`]).
pub struct Snapshot<T> {
    /// Position it covers.
    pub meta: SnapshotMeta,
    /// File name.
    pub file: String,
    head: AlignedVec,
    /// The whole file.
    bytes: Vec<u8>,
    /// Chunk frames (after the head), as ranges of `bytes`.
    chunks: Vec<std::ops::Range<usize>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("meta", &self.meta)
            .field("file", &self.file)
            .field("head_bytes", &self.head.len())
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl<T> Snapshot<T>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>,
{
    /// Zero-copy view of the archived head (re-validated: cheap next to the
    /// CRC, and it keeps this crate free of `unsafe` access).
    pub fn archived(&self) -> &T::Archived {
        rkyv::access::<T::Archived, BoxedError>(&self.head)
            .expect("validated when the snapshot was loaded; the bytes are immutable")
    }

    /// The archived head's bytes (aligned).
    pub fn body(&self) -> &[u8] {
        &self.head
    }

    /// Chunk frames after the head.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Chunk `i` as an archived `U`, copied into `scratch` (reused across
    /// chunks) and validated.
    ///
    /// # Errors
    /// [`SnapshotError::Corrupt`] when the chunk is not a valid `U`.
    ///
    /// # Panics
    /// If `i >= chunk_count()`.
    pub fn chunk<'s, U>(
        &self,
        i: usize,
        scratch: &'s mut AlignedVec,
    ) -> Result<&'s U::Archived, SnapshotError>
    where
        U: Archive,
        U::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>,
    {
        scratch.clear();
        scratch.extend_from_slice(&self.bytes[self.chunks[i].clone()]);
        rkyv::access::<U::Archived, BoxedError>(scratch).map_err(|e| SnapshotError::Corrupt {
            file: self.file.clone(),
            reason: format!("chunk {i}: archive validation failed: {e}"),
        })
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

    /// Archives `value` with rkyv and saves it atomically as a snapshot with
    /// a head and no chunks. Returns the file name.
    pub fn save<T>(&mut self, meta: SnapshotMeta, value: &T) -> Result<String, SnapshotError>
    where
        T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, BoxedError>>,
    {
        let mut w = self.writer(meta)?;
        w.append(value)?;
        w.finish()
    }

    /// Saves `frame` (an archive, or anything) as the only frame. Returns the
    /// file name.
    pub fn save_bytes(
        &mut self,
        meta: SnapshotMeta,
        frame: &[u8],
    ) -> Result<String, SnapshotError> {
        let mut w = self.writer(meta)?;
        w.append_bytes(frame)?;
        w.finish()
    }

    /// Starts writing the snapshot at `meta`: append the head, then the
    /// chunks, then [`SnapshotWriter::finish`]. Dropping the writer
    /// unfinished removes the partial file.
    pub fn writer(&mut self, meta: SnapshotMeta) -> Result<SnapshotWriter<'_, F>, SnapshotError> {
        let tmp = format!("{}.tmp", snapshot_name(meta.index));
        let file = self.fs.create(&tmp).map_err(io_err("create", &tmp))?;
        Ok(SnapshotWriter {
            dir: self,
            meta,
            tmp,
            file: Some(file),
            offset: SNAPSHOT_HEADER_BYTES as u64,
            crc: 0,
            pending: Vec::new(),
        })
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
        if let Some(version) = header_version(&bytes) {
            if version != SNAPSHOT_FORMAT_VERSION {
                return Err(SnapshotError::Unsupported {
                    file: name.to_string(),
                    version,
                    supported: SNAPSHOT_FORMAT_VERSION,
                });
            }
        }
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
        let mut frames = decode_frames(body).map_err(corrupt)?.into_iter();
        let head = frames.next().expect("decode_frames yields a head");
        let mut aligned = AlignedVec::with_capacity(head.len());
        aligned.extend_from_slice(&body[head]);
        rkyv::access::<T::Archived, BoxedError>(&aligned)
            .map_err(|e| corrupt(format!("archive validation failed: {e}")))?;
        let chunks = frames
            .map(|r| r.start + SNAPSHOT_HEADER_BYTES..r.end + SNAPSHOT_HEADER_BYTES)
            .collect();
        Ok(Snapshot {
            meta,
            file: name.to_string(),
            head: aligned,
            bytes,
            chunks,
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

/// A snapshot being written: frames go to the `.tmp` file a few MiB at a
/// time, each piece written back (`sync_file_range`) before the next, so
/// neither the state's archive nor a dirty lump of it ever exists whole
/// (as one lump, a 200+ MB image held every WAL fdatasync behind it for
/// 200-300 ms). The header goes in last, then fsync, rename and a
/// directory fsync: a crash before the rename leaves only a `.tmp`.
pub struct SnapshotWriter<'d, F: FileSystem> {
    dir: &'d mut SnapshotDir<F>,
    meta: SnapshotMeta,
    tmp: String,
    /// `None` once finished (or failed and removed).
    file: Option<crate::io::FileId>,
    /// File offset the pending bytes go to.
    offset: u64,
    /// CRC32C of the body so far, pending bytes included.
    crc: u32,
    pending: Vec<u8>,
}

impl<F: FileSystem> SnapshotWriter<'_, F> {
    /// Archives `value` with rkyv and appends it as the next frame.
    ///
    /// # Errors
    /// Serialization or IO; the partial file is removed.
    pub fn append<T>(&mut self, value: &T) -> Result<(), SnapshotError>
    where
        T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, BoxedError>>,
    {
        let bytes = rkyv::to_bytes::<BoxedError>(value)
            .map_err(|e| SnapshotError::Serialize(e.to_string()))?;
        self.append_bytes(&bytes)
    }

    /// Appends `frame` as the next frame.
    ///
    /// # Errors
    /// IO; the partial file is removed.
    pub fn append_bytes(&mut self, frame: &[u8]) -> Result<(), SnapshotError> {
        let len = (frame.len() as u64).to_le_bytes();
        self.crc = crc32c::crc32c_append(self.crc, &len);
        self.crc = crc32c::crc32c_append(self.crc, frame);
        self.pending.extend_from_slice(&len);
        self.pending.extend_from_slice(frame);
        if self.pending.len() >= SNAPSHOT_WRITE_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SnapshotError> {
        let file = self.file.expect("writer in use");
        let r = self
            .dir
            .fs
            .write_at(file, self.offset, &self.pending)
            .and_then(|()| {
                self.dir
                    .fs
                    .write_back(file, self.offset, self.pending.len() as u64)
            });
        self.offset += self.pending.len() as u64;
        self.pending.clear();
        r.map_err(|e| self.fail("write", e))
    }

    fn fail(&mut self, op: &'static str, source: std::io::Error) -> SnapshotError {
        self.abandon();
        SnapshotError::Io {
            op,
            file: self.tmp.clone(),
            source,
        }
    }

    fn abandon(&mut self) {
        if let Some(file) = self.file.take() {
            self.dir.fs.close(file);
            let _ = self.dir.fs.remove(&self.tmp);
        }
    }

    /// Writes the header, makes the file durable and gives it its name.
    /// Returns the file name.
    ///
    /// # Errors
    /// IO (the partial file is removed), or no frame appended.
    pub fn finish(mut self) -> Result<String, SnapshotError> {
        if self.offset == SNAPSHOT_HEADER_BYTES as u64 && self.pending.is_empty() {
            self.abandon();
            return Err(SnapshotError::Serialize(
                "a snapshot needs a head frame".into(),
            ));
        }
        if !self.pending.is_empty() {
            self.flush()?;
        }
        let file = self.file.expect("writer in use");
        let body_len = self.offset - SNAPSHOT_HEADER_BYTES as u64;
        let h = header(self.meta, body_len, self.crc);
        if let Err(e) = self
            .dir
            .fs
            .write_at(file, 0, &h)
            .and_then(|()| self.dir.fs.sync(file))
        {
            return Err(self.fail("write+fsync", e));
        }
        self.dir.fs.close(file);
        self.file = None;
        let name = snapshot_name(self.meta.index);
        self.dir
            .fs
            .rename(&self.tmp, &name)
            .map_err(io_err("rename", &self.tmp))?;
        self.dir
            .fs
            .sync_dir()
            .map_err(io_err("fsync", "snapshot directory"))?;
        Ok(name)
    }
}

impl<F: FileSystem> Drop for SnapshotWriter<'_, F> {
    fn drop(&mut self) {
        self.abandon();
    }
}
