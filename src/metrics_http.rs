//! `--listen-metrics-urls`: `/health` and `/metrics` over plain HTTP/1.1,
//! as etcd serves them there (Kubernetes' kubeadm probes etcd's
//! `/health?exclude=NOSPACE&serializable=true` on such a URL). The client
//! port answers the same paths, plus `/version`, through the gRPC edge
//! ([`Endpoint`] and [`answer`] are shared; `edge/http2.rs`).
//!
//! Low traffic by nature (probes and scrapers), so it runs on threads of its
//! own, away from the cores: one accepting thread per URL, one short-lived
//! thread per connection (at most [`METRICS_CONNECTIONS_MAX`] at once), one
//! request per connection (`Connection: close`), every read and write
//! bounded by [`METRICS_IO_TIMEOUT`] and [`REQUEST_HEAD_BYTES_MAX`].
//!
//! `/health` answers as etcd 3.5 does: 200 `{"health":"true","reason":""}`
//! when there is a leader and, unless `serializable=true`, the Raft loop
//! answers within [`HEALTH_TIMEOUT`] (etcd runs a linearizable read there);
//! otherwise 503 with the reason. ferrocd raises no alarms, so
//! `exclude=`/`alarm` parameters change nothing. `/metrics` is Prometheus'
//! text format with the values ferrocd tracks, under etcd's metric names.

use crate::shared::Shared;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; more are closed unanswered.
pub const METRICS_CONNECTIONS_MAX: usize = 16;
/// Timeout of each read and write on a connection.
pub const METRICS_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers) read.
pub const REQUEST_HEAD_BYTES_MAX: usize = 16 * 1024;
/// How long `/health` waits for the Raft loop (etcd's health read timeout).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds every address (at startup, so a port in use fails the start).
///
/// # Errors
/// A bind failure, with the URL.
pub fn bind(addrs: &[(String, SocketAddr)]) -> Result<Vec<(String, TcpListener)>, String> {
    addrs
        .iter()
        .map(|(url, a)| {
            TcpListener::bind(a)
                .map(|l| (url.clone(), l))
                .map_err(|e| format!("listen on {url}: {e}"))
        })
        .collect()
}

/// Serves each bound listener on a thread of its own for the life of the
/// process.
///
/// # Errors
/// A thread-spawn failure, with the URL.
pub fn serve_all(
    listeners: Vec<(String, TcpListener)>,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let active = Arc::new(AtomicUsize::new(0));
    for (url, listener) in listeners {
        let shared = shared.clone();
        let active = active.clone();
        std::thread::Builder::new()
            .name("ferrocd-metrics".into())
            .spawn(move || accept_loop(&listener, &shared, &active))
            .map_err(|e| format!("metrics thread for {url}: {e}"))?;
        tracing::info!(address = %url, "serving metrics and health");
    }
    Ok(())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, active: &Arc<AtomicUsize>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if active.fetch_add(1, Ordering::AcqRel) >= METRICS_CONNECTIONS_MAX {
            active.fetch_sub(1, Ordering::AcqRel);
            continue; // dropped: closed unanswered
        }
        let shared = shared.clone();
        let active_conn = active.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrocd-metrics-conn".into())
            .spawn(move || {
                serve(conn, &shared);
                active_conn.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn serve(mut conn: TcpStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(METRICS_IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(METRICS_IO_TIMEOUT));
    let Some(head) = read_head(&mut conn) else {
        return;
    };
    let mut request_line = head.lines().next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("");
    let target = request_line.next().unwrap_or("");
    let endpoint = Endpoint::of(method, target, false);
    let health = match endpoint {
        Endpoint::Health { serializable } => Some(health(shared, serializable)),
        _ => None,
    };
    let (status, content_type, body) = answer(&endpoint, health, shared);
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    let reply = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{allow}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(reply.as_bytes());
    if method != "HEAD" {
        let _ = conn.write_all(body.as_bytes());
    }
}

/// The request head, up to the blank line; `None` on timeout, close or
/// oversize.
fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() >= REQUEST_HEAD_BYTES_MAX {
            return None;
        }
        let n = conn.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

const TEXT: &str = "text/plain; charset=utf-8";

/// What an HTTP/1.1 request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/health`; `serializable=true` skips the Raft loop check.
    Health {
        /// `serializable=true` was given.
        serializable: bool,
    },
    /// `/metrics`.
    Metrics,
    /// `/version` (client port only, as etcd).
    Version,
    /// Any other path.
    NotFound,
    /// A method other than GET or HEAD.
    BadMethod,
}

impl Endpoint {
    /// Routes a request line's method and target.
    #[must_use]
    pub fn of(method: &str, target: &str, client_port: bool) -> Endpoint {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if method != "GET" && method != "HEAD" {
            return Endpoint::BadMethod;
        }
        match path {
            "/health" => Endpoint::Health {
                serializable: query.split('&').any(|kv| kv == "serializable=true"),
            },
            "/metrics" => Endpoint::Metrics,
            "/version" if client_port => Endpoint::Version,
            _ => Endpoint::NotFound,
        }
    }
}

/// (status code, content type, body) for an endpoint; `health` is the
/// check's outcome for [`Endpoint::Health`].
#[must_use]
pub fn answer(
    endpoint: &Endpoint,
    health: Option<Result<(), &'static str>>,
    shared: &Shared,
) -> (u16, &'static str, String) {
    match endpoint {
        Endpoint::Health { .. } => match health {
            Some(Ok(())) => (200, TEXT, r#"{"health":"true","reason":""}"#.into()),
            Some(Err(reason)) => (
                503,
                TEXT,
                format!(r#"{{"health":"false","reason":"{reason}"}}"#),
            ),
            None => (503, TEXT, r#"{"health":"false","reason":""}"#.into()),
        },
        Endpoint::Metrics => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(shared),
        ),
        Endpoint::Version => {
            let v = crate::edge::maintenance::ETCD_API_VERSION;
            let minor = v.rsplit_once('.').map_or(v, |(m, _)| m);
            (
                200,
                "application/json",
                format!(r#"{{"etcdserver":"{v}","etcdcluster":"{minor}.0"}}"#),
            )
        }
        Endpoint::NotFound => (404, TEXT, "404 page not found\n".into()),
        Endpoint::BadMethod => (405, TEXT, "Method Not Allowed\n".into()),
    }
}

/// The part of etcd's health check that needs no Raft round trip: a
/// leader (ferrocd raises no alarm). `Ok(true)`: the Raft loop must still
/// be pinged.
///
/// # Errors
/// The unhealthy reason.
pub fn health_precheck(shared: &Shared, serializable: bool) -> Result<bool, &'static str> {
    if shared.raft.leader.load(Ordering::Acquire) == 0 {
        return Err("RAFT NO LEADER");
    }
    Ok(!serializable)
}

/// Reason given when the Raft loop does not answer a ping in time.
pub const HEALTH_TIMEOUT_REASON: &str = "QGET ERROR: context deadline exceeded";
/// Reason given when too many health checks wait already.
pub const HEALTH_BUSY_REASON: &str = "QGET ERROR: too many health checks";

/// etcd's health check from a plain thread: a leader, and unless
/// serializable, the Raft loop answering in time.
fn health(shared: &Shared, serializable: bool) -> Result<(), &'static str> {
    if !health_precheck(shared, serializable)? {
        return Ok(());
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let ping: crate::shared::HealthPing = Box::new(move || {
        let _ = tx.try_send(());
    });
    if shared.health_pings.push(ping).is_err() {
        return Err(HEALTH_BUSY_REASON);
    }
    shared.doorbell.ring();
    rx.recv_timeout(HEALTH_TIMEOUT)
        .map_err(|_| HEALTH_TIMEOUT_REASON)
}

/// Prometheus text: each value ferrocd tracks, under etcd's name.
fn metrics(shared: &Shared) -> String {
    let r = &shared.raft;
    let leader = r.leader.load(Ordering::Acquire);
    let db = r.db_bytes.load(Ordering::Acquire);
    let (revision, compacted) = {
        let ks = shared.read_keyspace();
        (ks.revision(), ks.compact_revision())
    };
    let (streams, watchers) = shared.watch.counts();
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, labels: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{labels} {value}"
        );
    };
    let version = crate::edge::maintenance::ETCD_API_VERSION;
    let minor = version.rsplit_once('.').map_or(version, |(m, _)| m);
    metric(
        "etcd_cluster_version",
        "gauge",
        "Which version is running. 1 for 'cluster_version' label with current cluster version",
        &format!("{{cluster_version=\"{minor}\"}}"),
        1.0,
    );
    metric(
        "etcd_server_version",
        "gauge",
        "Which version is running. 1 for 'server_version' label with current version.",
        &format!("{{server_version=\"{version}\"}}"),
        1.0,
    );
    metric(
        "etcd_server_id",
        "gauge",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        &format!("{{server_id=\"{:x}\"}}", shared.identity.member_id),
        1.0,
    );
    metric(
        "etcd_server_has_leader",
        "gauge",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        "",
        f64::from(u8::from(leader != 0)),
    );
    metric(
        "etcd_server_is_leader",
        "gauge",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        "",
        f64::from(u8::from(leader == shared.identity.member_id)),
    );
    metric(
        "etcd_server_proposals_committed_total",
        "gauge",
        "The total number of consensus proposals committed.",
        "",
        r.commit_index.load(Ordering::Acquire) as f64,
    );
    metric(
        "etcd_server_proposals_applied_total",
        "gauge",
        "The total number of consensus proposals applied.",
        "",
        r.applied_index.load(Ordering::Acquire) as f64,
    );
    metric(
        "etcd_server_proposals_pending",
        "gauge",
        "The current number of pending proposals to commit.",
        "",
        shared.proposals.len() as f64,
    );
    metric(
        "etcd_mvcc_db_total_size_in_bytes",
        "gauge",
        "Total size of the underlying database physically allocated in bytes.",
        "",
        db as f64,
    );
    metric(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "gauge",
        "Total size of the underlying database logically in use in bytes.",
        "",
        db as f64,
    );
    metric(
        "etcd_debugging_mvcc_current_revision",
        "gauge",
        "The current revision of store.",
        "",
        revision as f64,
    );
    metric(
        "etcd_debugging_mvcc_compact_revision",
        "gauge",
        "The revision of the last compaction in store.",
        "",
        compacted.max(0) as f64,
    );
    metric(
        "etcd_debugging_mvcc_watch_stream_total",
        "gauge",
        "Total number of watch streams.",
        "",
        streams as f64,
    );
    metric(
        "etcd_debugging_mvcc_watcher_total",
        "gauge",
        "Total number of watchers.",
        "",
        watchers as f64,
    );
    for (name, kind, help, value) in process_metrics() {
        metric(name, kind, help, "", value);
    }
    out
}

/// Prometheus' standard process metrics, from /proc/self.
fn process_metrics() -> Vec<(&'static str, &'static str, &'static str, f64)> {
    let mut v = Vec::new();
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name (which may hold spaces).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        // rest[0] is field 3 (state): utime 14, stime 15, starttime 22,
        // vsize 23, rss 24.
        if f.len() > 22 && ticks > 0.0 {
            v.push((
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (f[11] + f[12]) / ticks,
            ));
            v.push((
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                f[20],
            ));
            v.push((
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                f[21] * page,
            ));
            if let Some(boot) = boot_time_s() {
                v.push((
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since unix epoch in seconds.",
                    boot + f[19] / ticks,
                ));
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        v.push((
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        ));
    }
    v
}

fn boot_time_s() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}
