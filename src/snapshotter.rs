//! Saves keyspace snapshots on a thread of its own, so the Raft loop only
//! pays for a copy of the keyspace (values are shared, refcounted bytes),
//! not for encoding, writing and fsyncing the image.
//!
//! Protocol: at most [`SNAPSHOTS_IN_FLIGHT_MAX`] job at a time. The Raft
//! thread sends the keyspace as of applied index `index`; this thread
//! writes `{index}.snap` durably, removes older snapshots and reports back;
//! only then does the Raft thread compact its log and release WAL segments
//! up to `index`.

use crate::shared::Shared;
use ferrocd_shards::Keyspace;
use ferrocd_wal::snapshot::{SnapshotDir, SnapshotMeta};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

/// Snapshots being saved at once.
pub const SNAPSHOTS_IN_FLIGHT_MAX: usize = 1;

/// A saved snapshot.
#[derive(Debug)]
pub struct Saved {
    /// Applied index it covers.
    pub index: u64,
    /// Size of the file.
    pub file_bytes: u64,
}

struct Job {
    meta: SnapshotMeta,
    keyspace: Keyspace,
}

/// Handle of the snapshot thread.
pub struct Snapshotter {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Result<Saved, String>>,
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
        shared: Arc<Shared>,
    ) -> std::io::Result<Snapshotter> {
        let (jobs, rx) = mpsc::sync_channel::<Job>(SNAPSHOTS_IN_FLIGHT_MAX);
        let (tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ferrocd-snap".into())
            .spawn(move || {
                for job in rx {
                    let started = Instant::now();
                    let image = job.keyspace.to_image();
                    drop(job.keyspace);
                    let keys = image.keys.len();
                    let r = snaps
                        .save(job.meta, &image)
                        .map_err(|e| e.to_string())
                        .map(|file| {
                            if let Err(e) = snaps.remove_older_than(job.meta.index) {
                                tracing::warn!(error = %e, "removing old snapshots failed");
                            }
                            let file_bytes =
                                std::fs::metadata(dir.join(&file)).map_or(0, |m| m.len());
                            tracing::info!(
                                index = job.meta.index,
                                term = job.meta.term,
                                %file,
                                keys,
                                file_bytes,
                                took_ms = started.elapsed().as_millis() as u64,
                                "saved snapshot"
                            );
                            Saved {
                                index: job.meta.index,
                                file_bytes,
                            }
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

    /// Hands over a copy of the keyspace as of `meta.index`.
    ///
    /// # Panics
    /// When not [`Snapshotter::idle`] (a caller bug).
    pub fn start_job(&mut self, meta: SnapshotMeta, keyspace: Keyspace) {
        assert!(self.idle(), "snapshot job while one is in flight");
        self.in_flight += 1;
        // The thread only stops after reporting a failure, which the Raft
        // loop turns into a fatal stop before starting another job.
        let _ = self
            .jobs
            .as_ref()
            .expect("running")
            .send(Job { meta, keyspace });
    }

    /// A finished job, if any.
    ///
    /// # Errors
    /// A failed save (the caller stops the process).
    pub fn take_saved(&mut self) -> Result<Option<Saved>, String> {
        match self.done.try_recv() {
            Ok(r) => {
                self.in_flight -= 1;
                r.map(Some)
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) if self.in_flight > 0 => {
                Err("snapshot thread died".into())
            }
            Err(TryRecvError::Disconnected) => Ok(None),
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
