//! State shared between the Raft thread and the gRPC edge on every core.

use crate::command::{Applied, Command};
use crate::doorbell::Doorbell;
use crossbeam_queue::ArrayQueue;
use ferrocd_core::KvError;
use ferrocd_shards::Keyspace;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use tokio::sync::oneshot;

/// Proposals waiting for the Raft thread. A full queue answers
/// `etcdserver: too many requests` (explicit backpressure).
pub const PROPOSALS_QUEUE_MAX: usize = 16_384;

/// Defragment calls waiting for the Raft thread to notice them; a full
/// queue answers `etcdserver: too many requests`.
pub const DEFRAGS_QUEUE_MAX: usize = 64;

/// `/health` checks waiting for the Raft thread's answer; a full queue
/// reports unhealthy.
pub const HEALTH_PINGS_QUEUE_MAX: usize = 16;

/// What the Raft thread calls to answer a `/health` check (a thread waits
/// on a std channel, a core's task on a oneshot).
pub type HealthPing = Box<dyn FnOnce() + Send>;

/// Why a proposal got no applied answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// etcd's error for the request.
    #[error("{0}")]
    Kv(KvError),
    /// The node is not (or no longer) the leader.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The entry's slot in the log was taken by another leader's entry.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The server is shutting down; the write may or may not be applied.
    #[error("etcdserver: server stopped")]
    Stopped,
}

/// What the edge waits for.
pub type ProposeResult = Result<Applied, ProposeError>;

/// A write on its way to the log.
#[derive(Debug)]
pub struct Proposal {
    /// The decoded command (applied directly, no re-decode, on this node).
    pub command: Command,
    /// Its entry bytes.
    pub data: Vec<u8>,
    /// Where the answer goes once the entry is durable and applied.
    pub reply: oneshot::Sender<ProposeResult>,
}

/// Static facts about this member and its cluster.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Cluster id (as etcd derives it).
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// `--name`.
    pub name: String,
    /// Advertised peer URLs.
    pub peer_urls: Vec<String>,
    /// Advertised client URLs.
    pub client_urls: Vec<String>,
}

/// Raft progress, published by the Raft thread for Status and headers.
#[derive(Debug, Default)]
pub struct RaftStatus {
    /// Current term.
    pub term: AtomicU64,
    /// Current leader id (0: none).
    pub leader: AtomicU64,
    /// Last index in the log.
    pub last_index: AtomicU64,
    /// Commit index.
    pub commit_index: AtomicU64,
    /// Applied index.
    pub applied_index: AtomicU64,
    /// Bytes of the newest snapshot file plus the entry bytes applied since
    /// it: the store's growth, reported where etcd reports its bbolt file
    /// size (which, like this, only shrinks on compaction + defrag/snapshot).
    pub db_bytes: AtomicU64,
}

/// Everything the cores share.
#[derive(Debug)]
pub struct Shared {
    /// The MVCC store: the Raft thread writes (in log order), the edge reads.
    pub keyspace: RwLock<Keyspace>,
    /// Proposals for the Raft thread.
    pub proposals: ArrayQueue<Proposal>,
    /// Defragment calls: answered once a snapshot covers everything
    /// applied when they arrived.
    pub defrags: ArrayQueue<oneshot::Sender<()>>,
    /// `/health` checks: the Raft thread answers each from its loop, which
    /// shows it is running (not stuck in an fsync, not dead).
    pub health_pings: ArrayQueue<HealthPing>,
    /// Wakes the Raft thread.
    pub doorbell: Doorbell,
    /// Every watcher; the Raft thread publishes applied events to it.
    pub watch: crate::watch_hub::WatchHub,
    /// Lease deadlines (keep-alives renew, the Raft thread expires).
    pub lessor: crate::lessor::Lessor,
    /// etcd's minimum lease TTL: ceil(1.5 x election timeout), seconds.
    pub lease_ttl_min_s: i64,
    /// `--experimental-watch-progress-notify-interval`.
    pub watch_progress_notify_interval: std::time::Duration,
    /// Counter for server-chosen lease ids.
    pub lease_id_seq: std::sync::atomic::AtomicU64,
    /// Member and cluster ids, URLs.
    pub identity: Identity,
    /// Raft progress.
    pub raft: RaftStatus,
    /// Set once on shutdown.
    pub stopping: AtomicBool,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
}

impl Shared {
    /// The keyspace for reading (a poisoned lock still holds a consistent
    /// keyspace: apply never panics halfway through a write).
    pub fn read_keyspace(&self) -> std::sync::RwLockReadGuard<'_, Keyspace> {
        self.keyspace
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.raft.term.load(Ordering::Acquire)
    }

    /// Asks the Raft thread for a snapshot of everything applied now (see
    /// `RaftNode::serve_defrags`); the receiver fires once it is saved and
    /// the WAL segments it covers are released.
    ///
    /// # Errors
    /// `TooManyRequests` when the queue is full, `Stopped` on shutdown.
    pub fn request_defrag(&self) -> Result<oneshot::Receiver<()>, ProposeError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(ProposeError::Stopped);
        }
        let (tx, rx) = oneshot::channel();
        self.defrags
            .push(tx)
            .map_err(|_| ProposeError::Kv(KvError::TooManyRequests))?;
        self.doorbell.ring();
        Ok(rx)
    }

    /// Hands a proposal to the Raft thread.
    ///
    /// # Errors
    /// `TooManyRequests` when the queue is full, `Stopped` on shutdown.
    pub fn submit(&self, p: Proposal) -> Result<(), ProposeError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(ProposeError::Stopped);
        }
        self.proposals
            .push(p)
            .map_err(|_| ProposeError::Kv(KvError::TooManyRequests))?;
        self.doorbell.ring();
        Ok(())
    }
}
