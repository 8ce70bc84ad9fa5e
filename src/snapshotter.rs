//! Saves keyspace snapshots on a thread of its own, so the Raft loop pays
//! neither for copying the keyspace nor for encoding, writing and fsyncing
//! the image.
//!
//! Protocol: at most [`SNAPSHOTS_IN_FLIGHT_MAX`] job at a time. The Raft
//! thread starts an [`ImageBuilder`] right after applying index `index`
//! (it records the revision, compaction point and leases: no key is
//! copied). This thread copies the keys at or below that revision
//! [`SNAPSHOT_CHUNK_KEYS_MAX`] at a time, each chunk under the keyspace's
//! read lock, so the Raft thread waits at most one chunk to apply instead
//! of copying every key itself. Each chunk is archived and appended to
//! `{index}.snap.tmp` before the next is copied, so the image never exists
//! whole in memory (at a million keys it did, twice: peak RSS 1.6 GB for a
//! 535 MB store). It then
//! makes `{index}.snap` durable, removes older snapshots and reports
//! back; only then does the Raft thread compact its log and release WAL
//! segments up to `index`. A compaction applied during the copy abandons
//! the job (reported as no snapshot); the Raft thread starts another one
//! at its next applied entry.
//!
//! The thread also removes the WAL segments a saved snapshot made
//! obsolete, when the Raft thread hands their names over: an unlink of a
//! preallocated segment blocked the Raft thread for about 70 ms.

use crate::shared::Shared;
use ferrocd_shards::ImageBuilder;
use ferrocd_wal::snapshot::{SnapshotDir, SnapshotMeta};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

/// Snapshots being saved at once.
pub const SNAPSHOTS_IN_FLIGHT_MAX: usize = 1;
/// Tasks queued for the thread: a snapshot, plus the segment removal that
/// follows the previous one (sent only after its "saved" report), so a
/// send never blocks the Raft thread.
const TASKS_QUEUED_MAX: usize = SNAPSHOTS_IN_FLIGHT_MAX + 1;
/// Bytes freed per step when a WAL segment is removed.
const SEGMENT_TRIM_STEP_BYTES: u64 = 16 * 1024 * 1024;
/// Suffix of a released segment between its rename and its removal.
const RELEASED_SUFFIX: &str = ".released";
/// Keys copied per hold of the keyspace's read lock (about a millisecond
/// with 256-byte values on this machine).
pub const SNAPSHOT_CHUNK_KEYS_MAX: usize = 4096;

/// A saved snapshot.
#[derive(Debug)]
pub struct Saved {
    /// Applied index it covers.
    pub index: u64,
    /// Size of the file.
    pub file_bytes: u64,
}

enum Task {
    Save {
        meta: SnapshotMeta,
        image: ImageBuilder,
    },
    /// WAL segment files the log no longer holds.
    RemoveSegments(Vec<String>),
}

/// Handle of the snapshot thread.
pub struct Snapshotter {
    jobs: Option<SyncSender<Task>>,
    done: Receiver<Result<Option<Saved>, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    in_flight: usize,
}

impl Snapshotter {
    /// Starts the thread; it rings the Raft thread's doorbell whenever a job
    /// finishes.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(
        mut snaps: SnapshotDir,
        dir: PathBuf,
        wal_dir: PathBuf,
        shared: Arc<Shared>,
    ) -> std::io::Result<Snapshotter> {
        let (jobs, rx) = mpsc::sync_channel::<Task>(TASKS_QUEUED_MAX);
        let (tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ferrocd-snap".into())
            .spawn(move || {
                for task in rx {
                    let (meta, mut image) = match task {
                        Task::Save { meta, image } => (meta, image),
                        Task::RemoveSegments(names) => {
                            remove_segments(&wal_dir, &names);
                            continue;
                        }
                    };
                    let started = Instant::now();
                    let r = match save(&mut snaps, meta, &mut image, &shared) {
                        Ok(Some(r)) => Ok(r),
                        Ok(None) => {
                            if tx.send(Ok(None)).is_err() {
                                return;
                            }
                            shared.doorbell.ring();
                            continue;
                        }
                        Err(e) => Err(e),
                    };
                    let r = r.map(|(file, keys)| {
                        if let Err(e) = snaps.remove_older_than(meta.index) {
                            tracing::warn!(error = %e, "removing old snapshots failed");
                        }
                        let file_bytes = std::fs::metadata(dir.join(&file)).map_or(0, |m| m.len());
                        tracing::info!(
                            index = meta.index,
                            term = meta.term,
                            %file,
                            keys,
                            file_bytes,
                            took_ms = started.elapsed().as_millis() as u64,
                            "saved snapshot"
                        );
                        Some(Saved {
                            index: meta.index,
                            file_bytes,
                        })
                    });
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        shared.doorbell.ring_always();
                        return;
                    }
                    shared.doorbell.ring();
                }
            })?;
        Ok(Snapshotter {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            in_flight: 0,
        })
    }

    /// Whether a new job can be taken.
    pub fn idle(&self) -> bool {
        self.in_flight < SNAPSHOTS_IN_FLIGHT_MAX
    }

    /// Starts saving the image begun right after applying `meta.index`.
    ///
    /// # Panics
    /// When not [`Snapshotter::idle`] (a caller bug).
    pub fn start_job(&mut self, meta: SnapshotMeta, image: ImageBuilder) {
        assert!(self.idle(), "snapshot job while one is in flight");
        self.in_flight += 1;
        // The thread only stops after reporting a failure, which the Raft
        // loop turns into a fatal stop before starting another job.
        let _ = self
            .jobs
            .as_ref()
            .expect("running")
            .send(Task::Save { meta, image });
    }

    /// A finished job, if any (`None` also for an abandoned one).
    ///
    /// # Errors
    /// A failed save (the caller stops the process).
    pub fn take_saved(&mut self) -> Result<Option<Saved>, String> {
        match self.done.try_recv() {
            Ok(r) => {
                self.in_flight -= 1;
                r
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) if self.in_flight > 0 => {
                Err("snapshot thread died".into())
            }
            Err(TryRecvError::Disconnected) => Ok(None),
        }
    }

    /// Hands over WAL segment files to remove (the log already forgot
    /// them). Best effort: a file left behind holds only entries the
    /// snapshot covers.
    pub fn remove_segments(&mut self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        if let Some(jobs) = &self.jobs {
            if let Err(e) = jobs.try_send(Task::RemoveSegments(names)) {
                tracing::warn!(error = %e, "WAL segment removal not queued; files left behind");
            }
        }
    }

    /// Finishes the job in flight (if any) and stops the thread.
    pub fn stop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Streams the image into `{index}.snap`: the head, then each chunk as it
/// is copied. Returns the file name and key count, or `None` when a
/// compaction abandoned the image (the partial file is removed).
fn save(
    snaps: &mut SnapshotDir,
    meta: SnapshotMeta,
    image: &mut ImageBuilder,
    shared: &Shared,
) -> Result<Option<(String, usize)>, String> {
    let mut w = snaps.writer(meta).map_err(|e| e.to_string())?;
    w.append(&image.head()).map_err(|e| e.to_string())?;
    let mut keys = 0;
    loop {
        let done = {
            let ks = shared.read_keyspace();
            image.add_chunk(&ks, SNAPSHOT_CHUNK_KEYS_MAX)
        };
        let done = match done {
            Ok(done) => done,
            Err(e) => {
                tracing::info!(index = meta.index, reason = %e, "snapshot abandoned");
                return Ok(None);
            }
        };
        let chunk = image.take_keys();
        if !chunk.is_empty() {
            keys += chunk.len();
            w.append(&chunk).map_err(|e| e.to_string())?;
        }
        if done {
            break;
        }
    }
    w.finish()
        .map(|file| Some((file, keys)))
        .map_err(|e| e.to_string())
}

/// Removes WAL segments a little at a time (see
/// [`ferrocd_wal::io::remove_gradually`]), then makes the removal durable.
fn remove_segments(wal_dir: &std::path::Path, names: &[String]) {
    use ferrocd_wal::io::FileSystem;
    let mut fs = match ferrocd_wal::io::StdFs::open_dir(wal_dir) {
        Ok(fs) => fs,
        Err(e) => {
            tracing::warn!(error = %e, dir = %wal_dir.display(), "opening the WAL directory to remove segments");
            return;
        }
    };
    // Renamed out of the log's name space first (recovery reads only
    // `*.wal`), so a crash while a segment is being trimmed never leaves a
    // shortened segment among the live ones; leftovers of such a crash are
    // removed here the next time.
    let leftovers = fs
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(RELEASED_SUFFIX));
    let mut doomed: Vec<String> = leftovers.collect();
    for name in names {
        let released = format!("{name}{RELEASED_SUFFIX}");
        match fs.rename(name, &released) {
            Ok(()) => doomed.push(released),
            Err(e) => {
                tracing::warn!(error = %e, segment = %name, "renaming a released WAL segment")
            }
        }
    }
    for name in &doomed {
        if let Err(e) = ferrocd_wal::io::remove_gradually(&mut fs, name, SEGMENT_TRIM_STEP_BYTES) {
            tracing::warn!(error = %e, segment = %name, "removing a WAL segment");
        }
    }
    if let Err(e) = fs.sync_dir() {
        tracing::warn!(error = %e, "fsync of the WAL directory after removing segments");
    }
    tracing::debug!(segments = names.len(), "removed WAL segments");
}
