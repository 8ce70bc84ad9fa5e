//! Startup: rebuild the keyspace and the Raft log from the data dir.
//!
//! Layout (as etcd's): `<data-dir>/member/snap/` holds keyspace snapshots
//! (`{index:016x}.snap`, rkyv `KeyspaceImage`), `<data-dir>/member/wal/`
//! the WAL, whose records are Raft entries and hard states (kinds below).
//! Recovery loads the newest valid snapshot, then every WAL entry after it
//! (a later entry with an index already seen truncates the log there, as
//! Raft overwrites do), and the last hard state. Committed entries after
//! the snapshot are re-applied by the Raft loop, in order.

use ferrocd_shards::{ImageHead, KeyChunk, Keyspace, KeyspaceLoader};
use ferrocd_wal::io::{UringIo, WalIo};
use ferrocd_wal::snapshot::SnapshotDir;
use ferrocd_wal::{Wal, WalOptions};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use std::path::Path;

/// WAL record kind: one Raft entry (`eraftpb.Entry`, protobuf), record index = entry index.
pub const RECORD_ENTRY: u8 = 1;
/// WAL record kind: a Raft hard state (`eraftpb.HardState`), record index = its commit.
pub const RECORD_HARD_STATE: u8 = 2;

/// Why the node cannot start from its data dir.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Directory creation or listing failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The WAL does not recover.
    #[error(transparent)]
    Wal(#[from] ferrocd_wal::RecoveryError),
    /// The snapshot directory does not load.
    #[error(transparent)]
    Snapshot(#[from] ferrocd_wal::SnapshotError),
    /// The snapshot's image breaks an invariant.
    #[error(transparent)]
    Image(#[from] ferrocd_shards::ImageError),
    /// WAL contents that do not make a Raft log.
    #[error("wal: {0}")]
    Log(String),
}

/// A node's durable state, loaded.
pub struct Recovered<I: WalIo = UringIo> {
    /// The keyspace at `applied`.
    pub keyspace: Keyspace,
    /// Raft storage: snapshot metadata, entries after it, hard state.
    pub storage: MemStorage,
    /// Index the keyspace reflects (the snapshot's).
    pub applied: u64,
    /// The open WAL, ready for appends.
    pub wal: Wal<I>,
    /// The snapshot directory.
    pub snaps: SnapshotDir,
    /// Its path.
    pub snap_dir: std::path::PathBuf,
    /// The WAL directory (the snapshot thread removes released segments).
    pub wal_dir: std::path::PathBuf,
    /// Size of the loaded snapshot file (0 without one).
    pub snapshot_bytes: u64,
}

fn create_dir(p: &Path) -> Result<(), BootError> {
    std::fs::create_dir_all(p).map_err(|source| BootError::Io {
        op: "create",
        path: p.display().to_string(),
        source,
    })
}

/// Conf state of the one-member group.
pub fn single_voter(member_id: u64) -> ConfState {
    ConfState::from((vec![member_id], vec![]))
}

/// Loads (or creates) the data dir.
///
/// # Errors
/// Any IO failure, WAL corruption, or a log that does not continue the
/// snapshot.
pub fn recover(
    member_dir: &Path,
    member_id: u64,
    shard_count: u16,
    wal_opts: WalOptions,
) -> Result<Recovered, BootError> {
    let snap_dir = member_dir.join("snap");
    let wal_dir = member_dir.join("wal");
    let fresh = !wal_dir.exists();
    create_dir(&snap_dir)?;
    create_dir(&wal_dir)?;

    let mut snaps = SnapshotDir::open(&snap_dir)?;
    let (snapshot, skipped) = snaps.load_newest_valid::<ImageHead>()?;
    for e in skipped {
        tracing::warn!(error = %e, "skipping a corrupt snapshot");
    }
    let storage = MemStorage::new_with_conf_state(single_voter(member_id));
    let snapshot_bytes = snapshot.as_ref().map_or(0, |s| {
        std::fs::metadata(snap_dir.join(&s.file)).map_or(0, |m| m.len())
    });
    let (keyspace, snap_index, snap_term) = match &snapshot {
        Some(s) => {
            // A chunk at a time: the file's bytes and the keyspace being
            // built are the only copies in memory.
            let mut loader = KeyspaceLoader::new(s.deserialize()?, shard_count)?;
            let mut scratch = rkyv::util::AlignedVec::new();
            for i in 0..s.chunk_count() {
                loader.add_archived(s.chunk::<KeyChunk>(i, &mut scratch)?)?;
            }
            let ks = loader.finish();
            let mut raft_snap = Snapshot::default();
            let meta = raft_snap.mut_metadata();
            meta.index = s.meta.index;
            meta.term = s.meta.term;
            meta.set_conf_state(single_voter(member_id));
            storage
                .wl()
                .apply_snapshot(raft_snap)
                .map_err(|e| BootError::Log(e.to_string()))?;
            tracing::info!(index = s.meta.index, term = s.meta.term, file = %s.file, "loaded snapshot");
            (ks, s.meta.index, s.meta.term)
        }
        None => (Keyspace::new(shard_count), 0, 0),
    };

    let (wal, found) = Wal::open(&wal_dir, wal_opts)?;
    if let Some(t) = &found.torn {
        tracing::warn!(file = %t.file, offset = t.offset, bytes = t.bytes_discarded, reason = %t.reason, "cut a torn WAL tail");
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut hs = HardState::default();
    for r in &found.records {
        match r.kind {
            RECORD_ENTRY => {
                let e = Entry::parse_from_bytes(&r.payload)
                    .map_err(|e| BootError::Log(format!("entry {}: {e}", r.index)))?;
                if e.index <= snap_index {
                    continue;
                }
                if let Some(pos) = entries.iter().position(|x| x.index >= e.index) {
                    entries.truncate(pos);
                }
                if let Some(last) = entries.last() {
                    if last.index + 1 != e.index {
                        return Err(BootError::Log(format!(
                            "gap: entry {} follows {}",
                            e.index, last.index
                        )));
                    }
                } else if e.index != snap_index + 1 {
                    return Err(BootError::Log(format!(
                        "first entry after snapshot {snap_index} is {}",
                        e.index
                    )));
                }
                entries.push(e);
            }
            RECORD_HARD_STATE => {
                hs = HardState::parse_from_bytes(&r.payload)
                    .map_err(|e| BootError::Log(format!("hard state: {e}")))?;
            }
            k => return Err(BootError::Log(format!("unknown record kind {k}"))),
        }
    }
    let last_index = entries.last().map_or(snap_index, |e| e.index);
    hs.commit = hs.commit.clamp(snap_index, last_index);
    hs.term = hs.term.max(snap_term);
    {
        let mut core = storage.wl();
        core.append(&entries)
            .map_err(|e| BootError::Log(e.to_string()))?;
        core.set_hardstate(hs.clone());
    }
    if !fresh {
        tracing::info!(
            snapshot_index = snap_index,
            last_index,
            commit = hs.commit,
            term = hs.term,
            revision = keyspace.revision(),
            "recovered from the data dir"
        );
    }
    Ok(Recovered {
        keyspace,
        storage,
        applied: snap_index,
        wal,
        snaps,
        snap_dir,
        wal_dir,
        snapshot_bytes,
    })
}
