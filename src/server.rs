//! Boot and shutdown of a node: data dir, Raft thread, one glommio
//! executor per core serving gRPC, signals.

use crate::config::Config;
use crate::doorbell::Doorbell;
use crate::edge::http2::{accept_loop, GrpcRouter};
use crate::raft_node::{NodeConfig, RaftNode};
use crate::recovery;
use crate::shared::{Identity, RaftStatus, Shared, PROPOSALS_QUEUE_MAX};
use crossbeam_queue::ArrayQueue;
use ferrocd_core::validate::GRPC_OVERHEAD_BYTES;
use glommio::{LocalExecutorBuilder, Placement};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The cluster version this member announces (etcd's capability level).
pub const CLUSTER_VERSION: &str = "3.5";
/// How long startup waits for the one-member group to elect itself and
/// apply its first entry.
const STARTUP_TIMEOUT_MS: u64 = 60_000;
/// io_uring buffer memory per executor (glommio registers it as locked
/// memory; the network path does not use it, so keep it under typical
/// `ulimit -l` values).
const EXECUTOR_IO_MEMORY_BYTES: usize = 512 * 1024;

/// Why the server did not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Configuration that only shows at startup.
    #[error("{0}")]
    Config(String),
    /// The data dir does not load.
    #[error(transparent)]
    Boot(#[from] recovery::BootError),
    /// A listener or thread could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// raft rejected its configuration or state.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// Member and cluster ids: derived as etcd derives them when the member is
/// created, then read back from `member/ids` so they stay stable across
/// restarts whatever the flags say later (as etcd keeps them in its WAL).
fn load_ids(cfg: &Config, member_dir: &Path) -> Result<(u64, u64), ServerError> {
    let path = member_dir.join("ids");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut it = text.split_whitespace();
        let parse = |s: Option<&str>| s.and_then(|s| u64::from_str_radix(s, 16).ok());
        return match (parse(it.next()), parse(it.next())) {
            (Some(m), Some(c)) => Ok((m, c)),
            _ => Err(ServerError::Config(format!(
                "{} is damaged: {text:?}",
                path.display()
            ))),
        };
    }
    let boot = cfg
        .bootstrap_cluster()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    std::fs::create_dir_all(member_dir)
        .map_err(io_err(format!("create {}", member_dir.display())))?;
    let tmp = member_dir.join("ids.tmp");
    let text = format!("{:016x} {:016x}\n", boot.local_member_id, boot.cluster_id);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io_err("create member/ids"))?;
        f.write_all(text.as_bytes())
            .map_err(io_err("write member/ids"))?;
        f.sync_all().map_err(io_err("fsync member/ids"))?;
    }
    std::fs::rename(&tmp, &path).map_err(io_err("rename member/ids"))?;
    std::fs::File::open(member_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync member dir"))?;
    Ok((boot.local_member_id, boot.cluster_id))
}

/// Blocks SIGINT and SIGTERM in the calling thread (call before any thread
/// is spawned, so every thread inherits the mask and only
/// [`wait_for_signal`] sees them).
pub fn block_signals() {
    // SAFETY: plain libc signal-mask calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
    }
}

fn wait_for_signal() -> i32 {
    // SAFETY: as above; sigwait fills `sig`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        let mut sig = 0;
        libc::sigwait(&raw const set, &raw mut sig);
        sig
    }
}

/// The socket address of each URL of a listen flag.
fn socket_addrs(
    flag: &str,
    urls: &[crate::config::Url],
) -> Result<Vec<(String, std::net::SocketAddr)>, ServerError> {
    urls.iter()
        .map(|u| {
            u.socket_addr().map(|a| (u.to_string(), a)).ok_or_else(|| {
                ServerError::Config(format!("{flag}: {u} must name an IP address or localhost"))
            })
        })
        .collect()
}

/// Runs a node until SIGINT/SIGTERM, then shuts down cleanly.
///
/// # Errors
/// Startup failures (bad data dir, port in use, ...).
pub fn run(cfg: &Config) -> Result<(), ServerError> {
    let member_dir = cfg.data_dir.join("member");
    let (member_id, cluster_id) = load_ids(cfg, &member_dir)?;
    let addrs = socket_addrs("listen-client-urls", &cfg.listen_client_urls)?;
    let metrics_addrs = socket_addrs("listen-metrics-urls", &cfg.listen_metrics_urls)?;
    let cores = cfg.cores.max(1);
    let shard_count = u16::try_from(cores.min(usize::from(ferrocd_core::route::SHARDS_MAX)))
        .expect("bounded by SHARDS_MAX");
    tracing::info!(
        name = %cfg.name,
        data_dir = %cfg.data_dir.display(),
        member_id = %format!("{member_id:x}"),
        cluster_id = %format!("{cluster_id:x}"),
        cores,
        ferrocd_version = env!("CARGO_PKG_VERSION"),
        "starting ferrocd"
    );
    let mut rec = recovery::recover(
        &member_dir,
        member_id,
        shard_count,
        ferrocd_wal::WalOptions::default(),
    )?;
    let keyspace = std::mem::replace(&mut rec.keyspace, ferrocd_shards::Keyspace::new(1));

    // Bind before serving so "address in use" fails the start.
    let listeners: Vec<(String, std::net::TcpListener)> = addrs
        .iter()
        .map(|(url, a)| {
            let l = std::net::TcpListener::bind(a).map_err(io_err(format!("listen on {url}")))?;
            l.set_nonblocking(true).map_err(io_err("set_nonblocking"))?;
            Ok((url.clone(), l))
        })
        .collect::<Result<_, ServerError>>()?;
    let metrics_listeners =
        crate::metrics_http::bind(&metrics_addrs).map_err(ServerError::Config)?;

    let watch = crate::watch_hub::WatchHub::new(keyspace.revision());
    let lessor = crate::lessor::Lessor::default();
    let now = std::time::Instant::now();
    for (id, lease) in keyspace.leases() {
        lessor.on_granted(id, lease.ttl_s, now);
    }
    // etcd: minTTL = (3 * electionTicks / 2) heartbeats, rounded up to s.
    let lease_ttl_min_ms = (3 * cfg.election_ticks() / 2) * cfg.heartbeat_interval_ms;
    let shared = Arc::new(Shared {
        watch,
        lessor,
        lease_ttl_min_s: i64::try_from(lease_ttl_min_ms.div_ceil(1000)).unwrap_or(i64::MAX),
        lease_id_seq: std::sync::atomic::AtomicU64::new(0),
        watch_progress_notify_interval: Duration::from_millis(
            cfg.watch_progress_notify_interval_ms,
        ),
        keyspace: RwLock::new(keyspace),
        proposals: ArrayQueue::new(PROPOSALS_QUEUE_MAX),
        defrags: ArrayQueue::new(crate::shared::DEFRAGS_QUEUE_MAX),
        health_pings: ArrayQueue::new(crate::shared::HEALTH_PINGS_QUEUE_MAX),
        doorbell: Doorbell::new().map_err(io_err("eventfd"))?,
        identity: Identity {
            cluster_id,
            member_id,
            name: cfg.name.clone(),
            peer_urls: cfg
                .initial_advertise_peer_urls
                .iter()
                .map(ToString::to_string)
                .collect(),
            client_urls: cfg
                .advertise_client_urls
                .iter()
                .map(ToString::to_string)
                .collect(),
        },
        raft: RaftStatus::default(),
        stopping: AtomicBool::new(false),
        max_request_bytes: usize::try_from(cfg.max_request_bytes).unwrap_or(usize::MAX),
        max_txn_ops: usize::try_from(cfg.max_txn_ops).unwrap_or(usize::MAX),
    });

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let node_cfg = NodeConfig {
        heartbeat_interval_ms: cfg.heartbeat_interval_ms,
        election_ticks: usize::try_from(cfg.election_ticks()).unwrap_or(10),
        snapshot_count: cfg.effective_snapshot_count(),
        auto_compaction: cfg.auto_compaction,
    };
    let node = RaftNode::new(rec, member_id, node_cfg, shared.clone(), ready_tx)?;
    let raft_thread = std::thread::Builder::new()
        .name("ferrocd-raft".into())
        .spawn(move || {
            if let Err(fatal) = node.run() {
                tracing::error!(error = %fatal, "stopping: fail-stop, nothing past this point is acknowledged");
                std::process::exit(1);
            }
        })
        .map_err(io_err("spawn the raft thread"))?;

    if ready_rx
        .recv_timeout(Duration::from_millis(STARTUP_TIMEOUT_MS))
        .is_err()
    {
        return Err(ServerError::Config(
            "the member did not become ready (no leader elected)".into(),
        ));
    }
    tracing::info!(
        local_member_id = %format!("{member_id:x}"),
        cluster_id = %format!("{cluster_id:x}"),
        "published local member to cluster through raft"
    );
    tracing::info!(
        cluster_version = CLUSTER_VERSION,
        "enabled capabilities for version"
    );

    crate::metrics_http::serve_all(metrics_listeners, &shared).map_err(ServerError::Config)?;
    let decode_bytes_max = shared.max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES);
    let router = GrpcRouter::new(&shared, decode_bytes_max);
    let online = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for core in 0..cores {
        let fds: Vec<i32> = listeners
            .iter()
            .map(|(url, l)| {
                l.try_clone()
                    .map(IntoRawFd::into_raw_fd)
                    .map_err(io_err(format!("dup listener {url}")))
            })
            .collect::<Result<_, _>>()?;
        let placement = if core < online {
            Placement::Fixed(core)
        } else {
            Placement::Unbound
        };
        let router = router.clone();
        LocalExecutorBuilder::new(placement)
            .name(&format!("ferrocd-core-{core}"))
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || async move {
                for fd in fds {
                    // SAFETY: `fd` is a dup of a bound, listening socket
                    // that this executor now owns.
                    let l = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
                    glommio::spawn_local(accept_loop(l, router.clone())).detach();
                }
                futures_lite::future::pending::<()>().await;
            })
            .map_err(|e| ServerError::Io {
                what: format!("start executor for core {core}"),
                source: std::io::Error::other(e.to_string()),
            })?;
    }
    for (url, _) in &listeners {
        tracing::info!(address = %url, "ready to serve client requests");
        tracing::warn!(address = %url, "serving insecure client requests on {url}, this is strongly discouraged!");
    }

    let sig = wait_for_signal();
    tracing::info!(signal = sig, "received signal; shutting down");
    shared.stopping.store(true, Ordering::Release);
    shared.doorbell.ring_always();
    let _ = raft_thread.join();
    tracing::info!("stopped");
    Ok(())
}
