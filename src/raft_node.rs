//! The Raft thread: drives a `raft::RawNode` (a one-member group on a
//! single node) with our own IO.
//!
//! One loop round, in order:
//! 1. Drain up to [`PROPOSALS_PER_ROUND_MAX`] proposals (and at most
//!    [`ROUND_BYTES_MAX`] of entry data) into `propose`. Proposals stay
//!    queued while [`UNWRITTEN_ENTRIES_MAX`] entries are proposed but not
//!    yet handed to the WAL (backpressure).
//! 2. Tick Raft when the heartbeat interval has passed.
//! 3. Reap finished WAL batches and tell Raft (`on_persist_ready`): this is
//!    what lets the leader count its own vote and commit.
//! 4. Unless [`WAL_BATCHES_IN_FLIGHT_MAX`] batches are in flight, take the
//!    `Ready`: its new entries and (when it must be synced) its hard state
//!    become ONE WAL batch (one write + one fdatasync). The batch is
//!    submitted and the loop goes on without waiting: proposals arriving
//!    during the flush are appended to Raft's log and become the next
//!    batch, written as soon as this flush completes (pipelining,
//!    `advance_append_async`).
//! 5. Apply committed entries in log order, but never one above the
//!    durable index; answer each entry's client only then. Every
//!    `--snapshot-count` applied entries, hand a copy of the keyspace to
//!    the snapshot thread (`snapshotter.rs`); once it reports the file
//!    durable, compact the in-memory log and release the WAL segments it
//!    covers.
//! 6. Nothing to do: park on the doorbell and the WAL's eventfd until the
//!    next tick.
//!
//! A failed WAL write or fdatasync stops the process at once: nothing past
//! it is acknowledged (fail-stop).

use crate::auto_compactor::{AutoCompaction, AutoCompactor};
use crate::command::Command;
use crate::recovery::{Recovered, RECORD_ENTRY, RECORD_HARD_STATE};
use crate::shared::{Proposal, ProposeError, ProposeResult, Shared};
use crate::snapshotter::Snapshotter;
use ferrocd_core::KvError;
use ferrocd_wal::io::{UringIo, WalIo};
use ferrocd_wal::snapshot::SnapshotMeta;
use ferrocd_wal::{BatchTicket, Record, Wal, WalError};
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, HardState};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole, Storage};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most proposals turned into entries in one round (one Raft append).
pub const PROPOSALS_PER_ROUND_MAX: usize = 4_096;
/// Most entry bytes proposed in one round (keeps a WAL batch far below
/// `ferrocd_wal::BATCH_BYTES_MAX` even with requests at the size limit).
pub const ROUND_BYTES_MAX: usize = 16 * 1024 * 1024;
/// WAL batches (write + fdatasync) in flight at once. One: every flush
/// costs about the same whatever it carries, and on this class of disk
/// concurrent flushes queue behind each other, so proposals that arrive
/// during a flush are better appended to Raft and written together when it
/// completes (measured: 16 clients, 3.4k puts/s with 32 in flight).
pub const WAL_BATCHES_IN_FLIGHT_MAX: usize = 1;
/// Entries proposed but not yet handed to the WAL, at most (bounds one
/// batch well inside `ferrocd_wal::BATCH_RECORDS_MAX`).
pub const UNWRITTEN_ENTRIES_MAX: u64 = 32_768;

/// Settings of the Raft thread.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `--heartbeat-interval` (one Raft tick).
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` in ticks.
    pub election_ticks: usize,
    /// Applied entries between snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// `--auto-compaction-*` (`None`: off).
    pub auto_compaction: Option<AutoCompaction>,
}

struct Waiter {
    term: u64,
    command: Command,
    reply: oneshot::Sender<ProposeResult>,
}

/// The Raft driver. Owns the `RawNode`, the WAL and the snapshot dir.
pub struct RaftNode<I: WalIo = UringIo> {
    node: RawNode<MemStorage>,
    wal: Wal<I>,
    snapshotter: Snapshotter,
    /// Entry bytes applied since the last snapshot job (for db size).
    bytes_since_snapshot: u64,
    shared: Arc<Shared>,
    cfg: NodeConfig,
    /// Proposals waiting for their entry to apply, by log index.
    waiters: HashMap<u64, Waiter>,
    /// Committed entries waiting for their own WAL batch to be durable.
    committed: VecDeque<Entry>,
    /// WAL batches in flight: ticket and the last Ready number it covers.
    in_flight: VecDeque<(BatchTicket, u64)>,
    durable_index: u64,
    /// Highest entry index handed to the WAL (durable or in flight).
    wal_index: u64,
    applied_index: u64,
    snapshot_index: u64,
    /// `--auto-compaction-*`, and the compaction it proposed and waits for.
    compactor: Option<AutoCompactor>,
    compaction: Option<(i64, oneshot::Receiver<ProposeResult>)>,
    /// Defragment calls and the applied index a snapshot must reach for
    /// them.
    defrags: Vec<(u64, tokio::sync::oneshot::Sender<()>)>,
    next_tick: Instant,
    /// Term whose first entry, once applied, means "published" (startup).
    announced: bool,
    on_ready: Option<std::sync::mpsc::Sender<()>>,
}

impl<I: WalIo> RaftNode<I> {
    /// Builds the node from recovered state and campaigns (a one-member
    /// group elects itself at once).
    ///
    /// # Errors
    /// When raft rejects the recovered state.
    pub fn new(
        rec: Recovered<I>,
        member_id: u64,
        cfg: NodeConfig,
        shared: Arc<Shared>,
        on_ready: std::sync::mpsc::Sender<()>,
    ) -> Result<RaftNode<I>, raft::Error> {
        let Recovered {
            storage,
            applied,
            wal,
            snaps,
            snap_dir,
            wal_dir,
            snapshot_bytes,
            ..
        } = rec;
        shared
            .raft
            .db_bytes
            .store(snapshot_bytes, Ordering::Release);
        let raft_cfg = raft::Config {
            id: member_id,
            election_tick: cfg.election_ticks.max(2),
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let durable_index = storage.last_index()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = RawNode::new(&raft_cfg, storage, &logger)?;
        let snapshotter = Snapshotter::start(snaps, snap_dir, wal_dir, shared.clone())
            .map_err(raft::Error::Io)?;
        node.campaign()?;
        let mut me = RaftNode {
            node,
            wal,
            snapshotter,
            bytes_since_snapshot: 0,
            shared,
            next_tick: Instant::now() + Duration::from_millis(cfg.heartbeat_interval_ms),
            cfg,
            waiters: HashMap::new(),
            committed: VecDeque::new(),
            in_flight: VecDeque::new(),
            durable_index,
            wal_index: durable_index,
            applied_index: applied,
            snapshot_index: applied,
            defrags: Vec::new(),
            compactor: None,
            compaction: None,
            announced: false,
            on_ready: Some(on_ready),
        };
        if let Some(mode) = me.cfg.auto_compaction {
            let revision = me.shared.read_keyspace().revision();
            me.compactor = Some(AutoCompactor::new(mode, Instant::now(), revision));
        }
        me.publish_status();
        me.set_preamble();
        Ok(me)
    }

    /// Runs until shutdown, then waits for in-flight WAL batches.
    ///
    /// # Errors
    /// [`Fatal`]: the caller must stop the process without answering
    /// anything else (dropping the node drops every waiting reply).
    pub fn run(mut self) -> Result<(), Fatal> {
        loop {
            if self.shared.stopping.load(Ordering::Acquire) {
                return self.shutdown();
            }
            let mut progressed = self.drain_proposals();
            progressed |= self.tick_if_due();
            progressed |= self.reap_wal()?;
            progressed |= self.handle_ready()?;
            progressed |= self.apply_durable()?;
            progressed |= self.reap_snapshot()?;
            progressed |= self.maybe_snapshot();
            progressed |= self.serve_defrags();
            while let Some(ping) = self.shared.health_pings.pop() {
                ping();
            }
            if !progressed {
                self.park();
            }
        }
    }

    fn park(&mut self) {
        let bell = &self.shared.doorbell;
        bell.prepare_park();
        let can_propose = self.can_propose();
        if (can_propose && !self.shared.proposals.is_empty())
            || !self.shared.defrags.is_empty()
            || !self.shared.health_pings.is_empty()
            || self.shared.stopping.load(Ordering::Acquire)
        {
            bell.cancel_park();
            return;
        }
        let wait = self.next_tick.saturating_duration_since(Instant::now());
        let timeout_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
        let wal_fd = if self.in_flight.is_empty() {
            None
        } else {
            self.wal.event_fd()
        };
        bell.park(wal_fd, timeout_ms);
    }

    /// Backpressure: proposals wait in the queue while too much is
    /// proposed but not yet written.
    fn can_propose(&self) -> bool {
        let written = self.wal_index;
        self.node.raft.raft_log.last_index() - written < UNWRITTEN_ENTRIES_MAX
    }

    fn drain_proposals(&mut self) -> bool {
        if !self.can_propose() {
            return false;
        }
        let mut n = 0;
        let mut bytes = 0;
        while n < PROPOSALS_PER_ROUND_MAX && bytes < ROUND_BYTES_MAX && self.can_propose() {
            let Some(p) = self.shared.proposals.pop() else {
                break;
            };
            n += 1;
            bytes += p.data.len();
            self.propose(p);
        }
        n > 0
    }

    fn propose(&mut self, p: Proposal) {
        let Proposal {
            command,
            data,
            reply,
        } = p;
        if self.node.raft.state != StateRole::Leader {
            let _ = reply.send(Err(ProposeError::NoLeader));
            return;
        }
        match self.node.propose(Vec::new(), data) {
            Ok(()) => {
                let index = self.node.raft.raft_log.last_index();
                let term = self.node.raft.term;
                self.waiters.insert(
                    index,
                    Waiter {
                        term,
                        command,
                        reply,
                    },
                );
            }
            Err(_) => {
                let _ = reply.send(Err(ProposeError::NoLeader));
            }
        }
    }

    fn tick_if_due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next_tick {
            return false;
        }
        self.next_tick = now + Duration::from_millis(self.cfg.heartbeat_interval_ms);
        self.node.tick();
        self.expire_leases(now);
        self.auto_compact(now);
        true
    }

    /// Runs the automatic compactor on the leader (etcd pauses it on
    /// followers): reports the last compaction's outcome, then proposes the
    /// next one when it is due, as an ordinary `Compact` entry.
    fn auto_compact(&mut self, now: Instant) {
        if self.node.raft.state != StateRole::Leader {
            return;
        }
        // A compaction abandons a snapshot being copied (its versions at or
        // below the image's revision change): with a short retention and a
        // large store, proposing regardless would abandon every snapshot and
        // never release the WAL. The compactor just checks again next tick.
        if !self.snapshotter.idle() && self.compaction.is_none() {
            return;
        }
        let Some(compactor) = self.compactor.as_mut() else {
            return;
        };
        let (kind, retention) = compactor.describe();
        if let Some((revision, rx)) = self.compaction.as_mut() {
            let revision = *revision;
            let outcome = match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return,
                Ok(r) => r,
                Err(oneshot::error::TryRecvError::Closed) => Err(ProposeError::Stopped),
            };
            self.compaction = None;
            // An earlier compaction to or past it counts as done, as in etcd.
            let ok = matches!(outcome, Ok(_) | Err(ProposeError::Kv(KvError::Compacted)));
            if ok {
                tracing::info!(
                    revision,
                    kind,
                    retention,
                    "completed auto {kind} compaction"
                );
            } else if let Err(e) = &outcome {
                tracing::warn!(revision, kind, retention, error = %e, "failed auto {kind} compaction");
            }
            compactor.on_compacted(now, revision, ok);
        }
        let store_revision = self.shared.read_keyspace().revision();
        let Some(revision) = compactor.on_tick(now, store_revision) else {
            return;
        };
        tracing::info!(revision, kind, retention, "starting auto {kind} compaction");
        let rx = self.propose_own(Command::Compact(
            ferrocd_proto::etcdserverpb::CompactionRequest {
                revision,
                physical: false,
            },
        ));
        self.compaction = Some((revision, rx));
    }

    /// Proposes a command of the node's own (lease expiry, automatic
    /// compaction); the receiver gets its applied result.
    fn propose_own(&mut self, command: Command) -> oneshot::Receiver<ProposeResult> {
        let data = command.encode();
        let (reply, rx) = oneshot::channel();
        self.propose(Proposal {
            command,
            data,
            reply,
        });
        rx
    }

    /// The leader proposes the revocation of expired leases (rate-limited);
    /// followers never expire leases from their own clocks.
    fn expire_leases(&mut self, now: Instant) {
        if self.node.raft.state != StateRole::Leader {
            return;
        }
        for id in self
            .shared
            .lessor
            .take_expired(now, crate::lessor::LEASE_REVOKES_PER_TICK_MAX)
        {
            // Nobody waits for the answer.
            drop(self.propose_own(Command::LeaseRevoke(
                ferrocd_proto::etcdserverpb::LeaseRevokeRequest { id },
            )));
        }
    }

    /// Keeps lease deadlines in step with applied grants and revokes.
    fn note_leases(
        &self,
        command: &Command,
        result: &Result<crate::command::Applied, ferrocd_core::KvError>,
    ) {
        match (command, result) {
            (Command::LeaseGrant(g), Ok(_)) => {
                self.shared.lessor.on_granted(g.id, g.ttl, Instant::now());
            }
            (Command::LeaseRevoke(r), Ok(_) | Err(ferrocd_core::KvError::LeaseNotFound)) => {
                self.shared.lessor.on_revoked(r.id);
            }
            _ => {}
        }
    }

    fn reap_wal(&mut self) -> Result<bool, Fatal> {
        if self.in_flight.is_empty() {
            return Ok(false);
        }
        let durable = match self.wal.poll_completed() {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(false),
            Err(e) => return Err(Fatal::new("WAL write or fdatasync failed", &e)),
        };
        let mut last_ready = None;
        while let Some(&(t, ready)) = self.in_flight.front() {
            if t > durable {
                break;
            }
            self.in_flight.pop_front();
            last_ready = Some(ready);
        }
        if let Some(ready) = last_ready {
            self.node.on_persist_ready(ready);
            self.durable_index = self.node.raft.raft_log.persisted;
        }
        Ok(true)
    }

    fn handle_ready(&mut self) -> Result<bool, Fatal> {
        if !self.node.has_ready() {
            return Ok(false);
        }
        if self.in_flight.len() >= WAL_BATCHES_IN_FLIGHT_MAX {
            return Ok(false);
        }
        let mut rd = self.node.ready();
        // A one-member group sends no messages; a future multi-member
        // transport sends `take_messages` here and `take_persisted_messages`
        // after the batch is durable.
        debug_assert!(rd.messages().is_empty());
        assert!(
            rd.snapshot().is_empty(),
            "a one-member group never receives a snapshot"
        );
        let number = rd.number();
        let mut records = Vec::new();
        let entries = rd.take_entries();
        if !entries.is_empty() {
            self.node
                .mut_store()
                .wl()
                .append(&entries)
                .expect("entries continue the log");
            for e in &entries {
                let payload = e
                    .write_to_bytes()
                    .expect("protobuf encoding of an entry cannot fail");
                records.push(Record::new(RECORD_ENTRY, e.index, payload));
            }
            self.wal_index = entries.last().map_or(self.wal_index, |e| e.index);
        }
        let must_sync = rd.must_sync();
        if let Some(hs) = rd.hs() {
            self.node.mut_store().wl().set_hardstate(hs.clone());
            if must_sync {
                records.push(hard_state_record(hs));
            }
        }
        if rd.hs().is_some() && must_sync {
            self.set_preamble();
        }
        let committed = rd.take_committed_entries();
        self.committed.extend(committed);
        self.node.advance_append_async(rd);
        if records.is_empty() {
            // Nothing to write: persisted once every earlier batch is.
            match self.in_flight.back_mut() {
                Some((_, covers)) => *covers = number,
                None => self.node.on_persist_ready(number),
            }
        } else {
            match self.wal.submit(&records) {
                Ok(t) => self.in_flight.push_back((t, number)),
                Err(WalError::QueueFull { .. }) => unreachable!("checked in-flight count"),
                Err(e) => return Err(Fatal::new("WAL submit failed", &e)),
            }
        }
        self.publish_status();
        Ok(true)
    }

    fn set_preamble(&mut self) {
        let hs = self.node.raft.hard_state();
        self.wal.set_segment_preamble(vec![hard_state_record(&hs)]);
    }

    fn apply_durable(&mut self) -> Result<bool, Fatal> {
        let mut batch = Vec::new();
        while self
            .committed
            .front()
            .is_some_and(|e| e.index <= self.durable_index)
        {
            batch.push(self.committed.pop_front().expect("front exists"));
        }
        if batch.is_empty() {
            return Ok(false);
        }
        let mut replies = Vec::with_capacity(batch.len());
        let events;
        let revision;
        let entry_bytes: usize = batch.iter().map(|e| e.data.len()).sum();
        self.bytes_since_snapshot += entry_bytes as u64;
        self.shared
            .raft
            .db_bytes
            .fetch_add(entry_bytes as u64, Ordering::AcqRel);
        {
            let mut ks = self
                .shared
                .keyspace
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for e in &batch {
                let waiter = self.waiters.remove(&e.index);
                if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                    // Leader no-op (or a conf change of a future multi-member
                    // group): no revision, no answer.
                    if let Some(w) = waiter {
                        replies.push((w.reply, Err(ProposeError::LeaderChanged)));
                    }
                    continue;
                }
                match waiter {
                    Some(w) if w.term == e.term => {
                        let r = w.command.apply(&mut ks);
                        self.note_leases(&w.command, &r);
                        replies.push((w.reply, r.map_err(ProposeError::Kv)));
                    }
                    other => {
                        if let Some(w) = other {
                            replies.push((w.reply, Err(ProposeError::LeaderChanged)));
                        }
                        match Command::decode(&e.data) {
                            Ok(c) => {
                                let r = c.apply(&mut ks);
                                self.note_leases(&c, &r);
                            }
                            Err(err) => return Err(Fatal::new("corrupt committed entry", &err)),
                        }
                    }
                }
            }
            events = ks.take_events();
            revision = ks.revision();
        }
        // Watchers hear about the batch before its writers get answers.
        self.shared.watch.publish(&events, revision);
        let last = batch.last().expect("non-empty");
        self.applied_index = last.index;
        self.node.advance_apply_to(last.index);
        self.shared
            .raft
            .applied_index
            .store(self.applied_index, Ordering::Release);
        for (tx, r) in replies {
            let _ = tx.send(r);
        }
        if !self.announced && last.term == self.node.raft.term {
            self.announced = true;
            // Leader now: etcd's Promote gives every lease its full TTL plus
            // the election timeout, counted from here (after replay).
            let leases: Vec<(i64, i64)> = self
                .shared
                .read_keyspace()
                .leases()
                .map(|(id, l)| (id, l.ttl_s))
                .collect();
            self.shared.lessor.promote(
                leases,
                Duration::from_millis(
                    self.cfg.heartbeat_interval_ms * self.cfg.election_ticks as u64,
                ),
                Instant::now(),
            );
            if let Some(tx) = self.on_ready.take() {
                let _ = tx.send(());
            }
        }
        Ok(true)
    }

    /// Starts a snapshot once `--snapshot-count` entries were applied since
    /// the last one and none is being saved. Checked every loop round, not
    /// only when entries apply: a burst of writes that ends while a
    /// snapshot is being saved still gets its snapshot (and its WAL
    /// segments released) when that one finishes.
    fn maybe_snapshot(&mut self) -> bool {
        if self.applied_index - self.snapshot_index < self.cfg.snapshot_count
            || !self.snapshotter.idle()
        {
            return false;
        }
        self.snapshot()
    }

    /// Starts an image of the keyspace as of the applied index, which the
    /// snapshot thread copies and saves; the log is compacted when it
    /// reports back. False when one is already being saved.
    fn snapshot(&mut self) -> bool {
        if !self.snapshotter.idle() {
            return false;
        }
        let term = match self.node.raft.raft_log.term(self.applied_index) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, index = self.applied_index, "no term for a snapshot");
                return false;
            }
        };
        let image = self.shared.read_keyspace().image_builder();
        let meta = SnapshotMeta {
            index: self.applied_index,
            term,
        };
        self.snapshotter.start_job(meta, image);
        self.bytes_since_snapshot = 0;
        true
    }

    /// Defragment: etcd rewrites its bbolt file so that space freed by
    /// compaction goes back to the file system. Here the space is held by
    /// the WAL entries and the snapshot written before the compaction, so
    /// a defragment takes a snapshot of everything applied when it arrived
    /// (unless one already covers it) and answers once that snapshot is
    /// saved and the WAL segments it covers are released. Reads and writes
    /// go on meanwhile (etcd blocks them during a defrag).
    fn serve_defrags(&mut self) -> bool {
        let mut progressed = false;
        while let Some(tx) = self.shared.defrags.pop() {
            self.defrags.push((self.applied_index, tx));
            progressed = true;
        }
        if self.defrags.is_empty() {
            return progressed;
        }
        let covered = self.snapshot_index;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.defrags)
            .into_iter()
            .partition(|(target, _)| *target <= covered);
        progressed |= !done.is_empty();
        for (_, tx) in done {
            let _ = tx.send(());
        }
        self.defrags = waiting;
        if !self.defrags.is_empty() {
            progressed |= self.snapshot();
        }
        progressed
    }

    /// A saved snapshot lets the log and the WAL forget what it covers.
    fn reap_snapshot(&mut self) -> Result<bool, Fatal> {
        let saved = match self.snapshotter.take_saved() {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(false),
            Err(e) => return Err(Fatal::new("saving a snapshot failed", &e)),
        };
        let index = saved.index;
        if let Err(e) = self.node.mut_store().wl().compact(index) {
            return Err(Fatal::new("compacting the raft log failed", &e));
        }
        let released = match self.wal.forget_to(index) {
            Ok(r) => r,
            Err(e) => return Err(Fatal::new("releasing WAL segments failed", &e)),
        };
        let released_segments = released.len();
        self.snapshotter.remove_segments(released);
        self.snapshot_index = index;
        // The entries applied since the snapshot was taken still count.
        self.shared.raft.db_bytes.store(
            saved.file_bytes + self.bytes_since_snapshot,
            Ordering::Release,
        );
        tracing::debug!(
            index,
            released_segments,
            "released the log up to the snapshot"
        );
        Ok(true)
    }

    fn publish_status(&self) {
        let r = &self.node.raft;
        let s = &self.shared.raft;
        s.term.store(r.term, Ordering::Release);
        s.leader.store(r.leader_id, Ordering::Release);
        s.last_index
            .store(r.raft_log.last_index(), Ordering::Release);
        s.commit_index
            .store(r.raft_log.committed, Ordering::Release);
    }

    fn shutdown(&mut self) -> Result<(), Fatal> {
        self.snapshotter.stop();
        while let Some(p) = self.shared.proposals.pop() {
            let _ = p.reply.send(Err(ProposeError::Stopped));
        }
        // Dropped senders answer waiting defragments "server stopped".
        while self.shared.defrags.pop().is_some() {}
        self.defrags.clear();
        if let Err(e) = self.wal.wait() {
            return Err(Fatal::new("WAL fdatasync failed during shutdown", &e));
        }
        for (_, w) in self.waiters.drain() {
            let _ = w.reply.send(Err(ProposeError::Stopped));
        }
        tracing::info!(
            applied_index = self.applied_index,
            "raft loop stopped; WAL flushed"
        );
        Ok(())
    }
}

fn hard_state_record(hs: &HardState) -> Record {
    Record::new(
        RECORD_HARD_STATE,
        hs.commit,
        hs.write_to_bytes()
            .expect("protobuf encoding of a hard state cannot fail"),
    )
}

/// A failure after which the process must stop: after a failed write or
/// fdatasync the page cache may have dropped dirty pages, so nothing past
/// this point may be acknowledged (fail-stop, as etcd does).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct Fatal {
    /// What failed.
    pub what: &'static str,
    /// Why.
    pub reason: String,
}

impl Fatal {
    fn new(what: &'static str, e: &dyn std::fmt::Display) -> Fatal {
        Fatal {
            what,
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Applied;
    use crate::doorbell::Doorbell;
    use crate::recovery::single_voter;
    use crate::shared::{Identity, RaftStatus, PROPOSALS_QUEUE_MAX};
    use crossbeam_queue::ArrayQueue;
    use ferrocd_proto::etcdserverpb::PutRequest;
    use ferrocd_shards::Keyspace;
    use ferrocd_wal::io::MemFs;
    use ferrocd_wal::snapshot::SnapshotDir;
    use ferrocd_wal::WalOptions;
    use std::sync::atomic::AtomicBool;
    use std::sync::RwLock;

    const MEMBER: u64 = 1;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            watch: crate::watch_hub::WatchHub::new(1),
            lessor: crate::lessor::Lessor::default(),
            lease_ttl_min_s: 2,
            lease_id_seq: std::sync::atomic::AtomicU64::new(0),
            watch_progress_notify_interval: Duration::from_secs(600),
            keyspace: RwLock::new(Keyspace::new(2)),
            proposals: ArrayQueue::new(PROPOSALS_QUEUE_MAX),
            defrags: ArrayQueue::new(crate::shared::DEFRAGS_QUEUE_MAX),
            health_pings: ArrayQueue::new(crate::shared::HEALTH_PINGS_QUEUE_MAX),
            doorbell: Doorbell::new().unwrap(),
            identity: Identity {
                cluster_id: 2,
                member_id: MEMBER,
                name: "t".into(),
                peer_urls: Vec::new(),
                client_urls: Vec::new(),
            },
            raft: RaftStatus::default(),
            stopping: AtomicBool::new(false),
            max_request_bytes: 1 << 20,
            max_txn_ops: 128,
        })
    }

    /// A node on an in-memory, fault-injecting WAL, running on a thread.
    fn start(
        fs: &MemFs,
        snap_dir: &std::path::Path,
    ) -> (Arc<Shared>, std::thread::JoinHandle<Result<(), Fatal>>) {
        let opts = WalOptions {
            segment_bytes: 1 << 20,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open_with(fs.clone(), opts).unwrap();
        let rec = Recovered {
            keyspace: Keyspace::new(2),
            storage: MemStorage::new_with_conf_state(single_voter(MEMBER)),
            applied: 0,
            wal,
            snaps: SnapshotDir::open(snap_dir).unwrap(),
            snap_dir: snap_dir.to_path_buf(),
            // Never used: these nodes do not reach a snapshot.
            wal_dir: snap_dir.join("wal"),
            snapshot_bytes: 0,
        };
        let shared = shared();
        let (tx, rx) = std::sync::mpsc::channel();
        let cfg = NodeConfig {
            heartbeat_interval_ms: 10,
            election_ticks: 10,
            snapshot_count: 1_000_000,
            auto_compaction: None,
        };
        let node = RaftNode::new(rec, MEMBER, cfg, shared.clone(), tx).unwrap();
        let t = std::thread::spawn(move || node.run());
        rx.recv_timeout(Duration::from_secs(10))
            .expect("node ready");
        (shared, t)
    }

    fn put(shared: &Shared, key: &str) -> oneshot::Receiver<ProposeResult> {
        let command = Command::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        });
        let (reply, rx) = oneshot::channel();
        let data = command.encode();
        shared
            .submit(Proposal {
                command,
                data,
                reply,
            })
            .unwrap();
        rx
    }

    #[test]
    fn a_put_is_answered_after_its_fsync_with_the_next_revision() {
        let fs = MemFs::new();
        let dir = tempfile::tempdir().unwrap();
        let (shared, t) = start(&fs, dir.path());
        let syncs_before = fs.sync_count();
        let r = put(&shared, "a").blocking_recv().unwrap().unwrap();
        let Applied::Put(p) = r else { panic!("{r:?}") };
        assert_eq!(p.header.unwrap().revision, 2);
        assert!(
            fs.sync_count() > syncs_before,
            "acknowledged before any fsync"
        );
        shared.stopping.store(true, Ordering::Release);
        shared.doorbell.ring_always();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn a_failed_fsync_stops_the_node_and_nothing_past_it_is_acknowledged() {
        let fs = MemFs::new();
        let dir = tempfile::tempdir().unwrap();
        let (shared, t) = start(&fs, dir.path());
        assert!(put(&shared, "before").blocking_recv().unwrap().is_ok());
        fs.fail_next_sync(libc::EIO);
        let rx = put(&shared, "after");
        let fatal = t.join().unwrap().expect_err("the loop must stop");
        assert!(fatal.to_string().contains("fdatasync"), "{fatal}");
        // The node is gone and its reply was dropped unanswered.
        assert!(rx.blocking_recv().is_err());
        // Later proposals are never taken.
        assert!(shared.proposals.is_empty());
    }
}
