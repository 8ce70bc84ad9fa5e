//! The [`Wal`]: batch submission, completion reaping, rotation and release.

use crate::error::WalError;
use crate::frame::{self, encode_record, frame_len};
use crate::io::{FileId, IoFailure, UringIo, WalIo};
use crate::segment::{encode_segment_header, segment_name, tmp_segment_name, SEGMENT_HEADER_BYTES};
use crate::{
    Record, RecoveryError, BATCHES_IN_FLIGHT_MAX, BATCH_BYTES_MAX, BATCH_RECORDS_MAX,
    RECORD_BYTES_MAX, RING_ENTRIES_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MIN,
};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

/// Chunk used when zero-filling a segment.
const ZERO_FILL_CHUNK_BYTES: usize = 1024 * 1024;

/// How a new segment's space is reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prealloc {
    /// fallocate only: cheap to prepare; the first write to each block still
    /// converts an unwritten extent (a small metadata update in the flush).
    Fallocate,
    /// fallocate and write zeros over the whole segment before use: later
    /// flushes are pure data overwrites (about 85–150 µs instead of
    /// 150–250 µs per flush on the reference disk, see dependencies.md §3.1),
    /// but preparing a segment writes all of it, synchronously, inside the
    /// `submit` that rotates (hundreds of ms for 64 MiB).
    ZeroFill,
}

/// Options of a [`Wal`].
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Preallocated size of each segment (default [`SEGMENT_BYTES_DEFAULT`]).
    /// A batch larger than this gets a larger segment of its own.
    pub segment_bytes: u64,
    /// How segment space is reserved.
    pub prealloc: Prealloc,
    /// io_uring submission queue entries (only for [`Wal::open`]).
    pub ring_entries: u32,
    /// Batches allowed in flight before `submit` returns [`WalError::QueueFull`].
    pub batches_in_flight_max: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            prealloc: Prealloc::Fallocate,
            ring_entries: RING_ENTRIES_DEFAULT,
            batches_in_flight_max: BATCHES_IN_FLIGHT_MAX,
        }
    }
}

impl WalOptions {
    pub(crate) fn validate(&self) -> Result<(), RecoveryError> {
        if self.segment_bytes < SEGMENT_BYTES_MIN {
            return Err(RecoveryError::Options(format!(
                "segment_bytes {} is below SEGMENT_BYTES_MIN ({SEGMENT_BYTES_MIN})",
                self.segment_bytes
            )));
        }
        if self.batches_in_flight_max == 0 || self.batches_in_flight_max > BATCHES_IN_FLIGHT_MAX {
            return Err(RecoveryError::Options(format!(
                "batches_in_flight_max must be in 1..={BATCHES_IN_FLIGHT_MAX}"
            )));
        }
        if (self.ring_entries as usize) < 2 * self.batches_in_flight_max {
            return Err(RecoveryError::Options(
                "ring_entries must be at least 2 × batches_in_flight_max".into(),
            ));
        }
        Ok(())
    }
}

/// Identifies a submitted batch. Tickets grow by one per batch and batches
/// become durable in ticket order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchTicket(pub u64);

/// A live segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Sequence number (contiguous across kept segments).
    pub seq: u64,
    /// Index of the first record of the batch that opened the segment.
    pub first_index: u64,
    /// File name.
    pub name: String,
}

/// A torn tail cut off during recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Segment file name.
    pub file: String,
    /// Byte offset where the log now ends.
    pub offset: u64,
    /// Bytes that were zeroed (garbage of the unacknowledged final batch).
    pub bytes_discarded: u64,
    /// What was found there.
    pub reason: String,
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Every complete record, in write order (the layer above resolves Raft
    /// index overwrites).
    pub records: Vec<Record>,
    /// The torn tail that was cut, if any.
    pub torn: Option<TornTail>,
}

#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) seq: u64,
    pub(crate) file: FileId,
    pub(crate) name: String,
    pub(crate) write_off: u64,
    pub(crate) capacity: u64,
    pub(crate) last_ticket: u64,
}

#[derive(Debug)]
struct Prepared {
    seq: u64,
    file: FileId,
    name: String,
    capacity: u64,
}

#[derive(Debug)]
struct InFlight {
    ticket: u64,
    done: bool,
    file: String,
    offset: u64,
    len: u64,
}

/// The write-ahead log. Single-threaded by design (one per shard/core); all
/// calls are non-blocking except [`Wal::wait`], [`Wal::wait_for`],
/// [`Wal::append_sync`] and the occasional segment rotation.
#[derive(Debug)]
pub struct Wal<I: WalIo = UringIo> {
    io: I,
    opts: WalOptions,
    segments: Vec<SegmentInfo>,
    active: Option<Active>,
    prepared: Option<Prepared>,
    next_seq: u64,
    preamble: Vec<Record>,
    next_ticket: u64,
    durable: u64,
    in_flight: VecDeque<InFlight>,
    retired: Vec<(FileId, u64)>,
    poisoned: Option<String>,
}

impl Wal<UringIo> {
    /// Opens (or creates) the WAL in `dir` on io_uring, recovers it and
    /// returns every complete record. Fails on corruption, naming file and offset.
    pub fn open(
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<(Self, Recovered), RecoveryError> {
        opts.validate()?;
        let dir = dir.as_ref();
        let io = UringIo::open_dir(dir, opts.ring_entries).map_err(|source| RecoveryError::Io {
            op: "io_uring setup",
            file: dir.display().to_string(),
            source,
        })?;
        Self::open_with(io, opts)
    }
}

impl<I: WalIo> Wal<I> {
    /// Opens the WAL over any [`WalIo`] (e.g. [`crate::io::MemFs`]), recovers it
    /// and prepares the next segment.
    pub fn open_with(mut io: I, opts: WalOptions) -> Result<(Self, Recovered), RecoveryError> {
        opts.validate()?;
        let r = crate::recovery::recover(&mut io)?;
        let mut wal = Wal {
            io,
            opts,
            segments: r.segments,
            active: r.active,
            prepared: None,
            next_seq: r.next_seq,
            preamble: Vec::new(),
            next_ticket: 1,
            durable: 0,
            in_flight: VecDeque::new(),
            retired: Vec::new(),
            poisoned: None,
        };
        let seq = wal.next_seq;
        let prepared = wal.prepare(seq).map_err(|e| match e {
            WalError::Io { op, file, source } => RecoveryError::Io { op, file, source },
            other => RecoveryError::Io {
                op: "prepare segment",
                file: tmp_segment_name(seq),
                source: io::Error::other(other.to_string()),
            },
        })?;
        wal.prepared = Some(prepared);
        Ok((wal, r.recovered))
    }

    /// Records written at the start of every new segment, before the batch
    /// that opens it (e.g. the latest Raft hard state), so that releasing old
    /// segments never drops the only copy of such state.
    pub fn set_segment_preamble(&mut self, records: Vec<Record>) {
        assert!(records
            .iter()
            .all(|r| r.kind != 0 && r.payload.len() <= RECORD_BYTES_MAX));
        self.preamble = records;
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(why) => Err(WalError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: WalError) -> WalError {
        if self.poisoned.is_none() {
            self.poisoned = Some(e.to_string());
        }
        e
    }

    /// Whether an earlier I/O failure made this WAL refuse all work.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    fn validate_batch(&self, records: &[Record]) -> Result<usize, WalError> {
        if records.is_empty() {
            return Err(WalError::EmptyBatch);
        }
        let mut bytes = 0usize;
        for r in records {
            if r.kind == 0 {
                return Err(WalError::InvalidKind { index: r.index });
            }
            if r.payload.len() > RECORD_BYTES_MAX {
                return Err(WalError::RecordTooLarge {
                    len: r.payload.len(),
                    max: RECORD_BYTES_MAX,
                });
            }
            bytes += frame_len(r.payload.len());
        }
        let pre: usize = self
            .preamble
            .iter()
            .map(|r| frame_len(r.payload.len()))
            .sum();
        if records.len() + self.preamble.len() > BATCH_RECORDS_MAX || bytes + pre > BATCH_BYTES_MAX
        {
            return Err(WalError::BatchTooLarge {
                records: records.len(),
                bytes,
                records_max: BATCH_RECORDS_MAX,
                bytes_max: BATCH_BYTES_MAX,
            });
        }
        Ok(bytes)
    }

    /// Queues a batch: encodes it into one buffer and submits one write linked
    /// to one fdatasync. Returns immediately; the batch is durable once
    /// [`Wal::poll_completed`] (or a wait) reports its ticket.
    pub fn submit(&mut self, records: &[Record]) -> Result<BatchTicket, WalError> {
        self.check_poisoned()?;
        let bytes = self.validate_batch(records)?;
        if self.in_flight.len() >= self.opts.batches_in_flight_max {
            return Err(WalError::QueueFull {
                in_flight: self.in_flight.len(),
                max: self.opts.batches_in_flight_max,
            });
        }
        let rotate = match &self.active {
            None => true,
            Some(a) => a.write_off + bytes as u64 > a.capacity,
        };
        let mut buf = Vec::with_capacity(bytes);
        if rotate {
            for r in &self.preamble {
                encode_record(&mut buf, 0, r);
            }
        }
        for r in records {
            encode_record(&mut buf, 0, r);
        }
        if cfg!(debug_assertions) {
            let scan = frame::scan_segment(&buf, 0);
            debug_assert_eq!(scan.tail, frame::Tail::Clean);
            debug_assert_eq!(scan.end, buf.len());
            debug_assert!(scan
                .records
                .iter()
                .rev()
                .zip(records.iter().rev())
                .all(|(s, r)| &s.record == r));
        }
        if rotate {
            if let Err(e) = self.rotate(records[0].index, buf.len() as u64) {
                return Err(self.poison(e));
            }
        }
        let ticket = self.next_ticket;
        let active = self.active.as_mut().expect("rotation provides a segment");
        let offset = active.write_off;
        let len = buf.len() as u64;
        debug_assert!(offset + len <= active.capacity);
        debug_assert_eq!(offset % frame::RECORD_ALIGN_BYTES as u64, 0);
        let (file, name) = (active.file, active.name.clone());
        if let Err(source) = self.io.submit_write_sync(file, offset, buf, ticket) {
            let e = WalError::WriteFailed {
                file: name,
                offset,
                len,
                source,
            };
            return Err(self.poison(e));
        }
        let active = self.active.as_mut().expect("still there");
        active.write_off += len;
        active.last_ticket = ticket;
        self.next_ticket += 1;
        self.in_flight.push_back(InFlight {
            ticket,
            done: false,
            file: name,
            offset,
            len,
        });
        Ok(BatchTicket(ticket))
    }

    fn io_err<'a>(op: &'static str, file: &'a str) -> impl FnOnce(io::Error) -> WalError + 'a {
        move |source| WalError::Io {
            op,
            file: file.to_string(),
            source,
        }
    }

    /// Creates `{seq}.wal.tmp`, reserves its space, writes and fsyncs the header.
    fn prepare(&mut self, seq: u64) -> Result<Prepared, WalError> {
        let name = tmp_segment_name(seq);
        let cap = self.opts.segment_bytes;
        let file = self
            .io
            .create(&name)
            .map_err(Self::io_err("create", &name))?;
        let r = (|| {
            self.io.allocate(file, cap)?;
            if self.opts.prealloc == Prealloc::ZeroFill {
                let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES];
                let mut off = 0u64;
                while off < cap {
                    let n = (cap - off).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
                    self.io.write_at(file, off, &zeros[..n])?;
                    off += n as u64;
                }
            }
            self.io.write_at(file, 0, &encode_segment_header(seq))?;
            self.io.sync(file)
        })();
        if let Err(e) = r {
            self.io.close(file);
            return Err(WalError::Io {
                op: "prepare segment",
                file: name,
                source: e,
            });
        }
        self.next_seq = self.next_seq.max(seq + 1);
        Ok(Prepared {
            seq,
            file,
            name,
            capacity: cap,
        })
    }

    /// Switches to the prepared segment (renamed to carry `first_index`) and
    /// prepares the one after it.
    fn rotate(&mut self, first_index: u64, batch_len: u64) -> Result<(), WalError> {
        let p = match self.prepared.take() {
            Some(p) => p,
            None => {
                let seq = self.next_seq;
                self.prepare(seq)?
            }
        };
        let need = SEGMENT_HEADER_BYTES as u64 + batch_len;
        let mut capacity = p.capacity;
        if capacity < need {
            self.io
                .allocate(p.file, need)
                .map_err(Self::io_err("allocate", &p.name))?;
            self.io
                .sync(p.file)
                .map_err(Self::io_err("fsync", &p.name))?;
            capacity = need;
        }
        let name = segment_name(p.seq, first_index);
        self.io
            .rename(&p.name, &name)
            .map_err(Self::io_err("rename", &p.name))?;
        // The segment must be findable after a crash before data goes into it.
        self.io
            .sync_dir()
            .map_err(Self::io_err("fsync dir", &name))?;
        if let Some(old) = self.active.take() {
            self.retired.push((old.file, old.last_ticket));
        }
        self.segments.push(SegmentInfo {
            seq: p.seq,
            first_index,
            name: name.clone(),
        });
        self.active = Some(Active {
            seq: p.seq,
            file: p.file,
            name,
            write_off: SEGMENT_HEADER_BYTES as u64,
            capacity,
            last_ticket: 0,
        });
        self.close_retired();
        let next = p.seq + 1;
        self.prepared = Some(self.prepare(next)?);
        Ok(())
    }

    fn close_retired(&mut self) {
        let durable = self.durable;
        let io = &mut self.io;
        self.retired.retain(|&(file, last)| {
            if last <= durable {
                io.close(file);
                false
            } else {
                true
            }
        });
    }

    fn reap(&mut self, wait: bool) -> Result<Option<BatchTicket>, WalError> {
        let mut done = Vec::new();
        if let Err(source) = self.io.reap(wait, &mut done) {
            let e = WalError::Io {
                op: "reap completions",
                file: self
                    .active
                    .as_ref()
                    .map_or_else(String::new, |a| a.name.clone()),
                source,
            };
            return Err(self.poison(e));
        }
        for c in done {
            let Some(pos) = self.in_flight.iter().position(|f| f.ticket == c.tag) else {
                debug_assert!(false, "completion for unknown ticket {}", c.tag);
                continue;
            };
            let f = &mut self.in_flight[pos];
            match c.result {
                Ok(()) => f.done = true,
                Err(failure) => {
                    let (file, offset, len) = (f.file.clone(), f.offset, f.len);
                    let e = match failure {
                        IoFailure::Write(source) => WalError::WriteFailed {
                            file,
                            offset,
                            len,
                            source,
                        },
                        IoFailure::Sync(source) => WalError::SyncFailed {
                            file,
                            offset,
                            len,
                            source,
                        },
                    };
                    return Err(self.poison(e));
                }
            }
        }
        let before = self.durable;
        while self.in_flight.front().is_some_and(|f| f.done) {
            let f = self.in_flight.pop_front().expect("front exists");
            debug_assert_eq!(f.ticket, self.durable + 1, "batches complete in order");
            self.durable = f.ticket;
        }
        self.close_retired();
        Ok((self.durable > before).then_some(BatchTicket(self.durable)))
    }

    /// Non-blocking: reaps finished batches. Returns `Some(t)` when the durable
    /// watermark advanced: every batch up to and including `t` is on disk.
    /// Errors are fail-stop ([`WalError::SyncFailed`], [`WalError::WriteFailed`]).
    pub fn poll_completed(&mut self) -> Result<Option<BatchTicket>, WalError> {
        self.check_poisoned()?;
        self.reap(false)
    }

    /// Blocks until every submitted batch is durable; returns the watermark.
    pub fn wait(&mut self) -> Result<Option<BatchTicket>, WalError> {
        self.check_poisoned()?;
        while !self.in_flight.is_empty() {
            self.reap(true)?;
        }
        Ok(self.durable_ticket())
    }

    /// Blocks until batch `t` (and so every earlier one) is durable.
    pub fn wait_for(&mut self, t: BatchTicket) -> Result<(), WalError> {
        self.check_poisoned()?;
        assert!(t.0 < self.next_ticket, "ticket {} was never issued", t.0);
        while self.durable < t.0 {
            self.reap(true)?;
        }
        Ok(())
    }

    /// Convenience: submits one batch and blocks until it is durable.
    pub fn append_sync(&mut self, records: &[Record]) -> Result<(), WalError> {
        self.check_poisoned()?;
        while self.in_flight.len() >= self.opts.batches_in_flight_max {
            self.reap(true)?;
        }
        let t = self.submit(records)?;
        self.wait_for(t)
    }

    /// Highest ticket such that it and every earlier batch are durable.
    pub fn durable_ticket(&self) -> Option<BatchTicket> {
        (self.durable > 0).then_some(BatchTicket(self.durable))
    }

    /// Batches submitted but not yet reported durable.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Readable when completions are ready (io_uring's registered eventfd);
    /// `None` for backends that complete synchronously. The reactor waits on
    /// it and then calls [`Wal::poll_completed`], which drains it.
    pub fn event_fd(&self) -> Option<RawFd> {
        self.io.event_fd()
    }

    /// Live segments, oldest first.
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// The IO backend (tests use it to inspect or inject faults).
    pub fn io(&self) -> &I {
        &self.io
    }

    /// Drops the segments that only hold entries up to `index` from the
    /// log without deleting their files, and returns their names: the
    /// caller removes them off the hot path (an unlink of a preallocated
    /// segment took about 70 ms on the Raft thread). Files left behind by
    /// a crash are what [`Wal::release_to`] would also leave between a
    /// snapshot and its release; recovery skips entries the snapshot
    /// covers.
    ///
    /// # Errors
    /// A poisoned log.
    pub fn forget_to(&mut self, index: u64) -> Result<Vec<String>, WalError> {
        self.check_poisoned()?;
        let Some(keep) = self.segments.iter().rposition(|s| s.first_index <= index) else {
            return Ok(Vec::new());
        };
        Ok(self.segments.drain(..keep).map(|s| s.name).collect())
    }

    /// Removes segments whose records are all superseded once a snapshot at
    /// `index` exists: every segment before the last one whose first index is
    /// `<= index`. (When that segment was opened, the log was cut at its first
    /// index, so anything before it above `index` was overwritten.) The
    /// active segment is never removed. Returns the removed file names.
    pub fn release_to(&mut self, index: u64) -> Result<Vec<String>, WalError> {
        let removed = self.forget_to(index)?;
        for name in &removed {
            self.io.remove(name).map_err(Self::io_err("remove", name))?;
        }
        if !removed.is_empty() {
            self.io
                .sync_dir()
                .map_err(Self::io_err("fsync dir", "wal directory"))?;
        }
        debug_assert!(self
            .active
            .as_ref()
            .is_none_or(|a| self.segments.iter().any(|s| s.seq == a.seq)));
        Ok(removed)
    }
}
