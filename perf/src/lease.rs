//! Leases: the keep-alive machinery shared by `lease-keepalive` and
//! `lease-expire`, and the `lease-keepalive` subcommand.
//!
//! Leases are granted in chunks of [`GRANT_CHUNK`] ([`GRANT_CONCURRENCY`]
//! grants in flight, spread over the connections; `lease-expire` also puts
//! one key with each lease right after its grant). After every chunk all
//! leases granted so far are renewed once over the keep-alive streams, so
//! that none expires while the rest is still being granted, however short
//! the TTL.
//!
//! Lease i is kept alive on keep-alive stream i mod streams (stream s on
//! connection s mod conns). Each stream allows a window of keep-alives in
//! flight; answers are matched to requests in order (both etcd and ferrocd
//! answer a stream's keep-alives in the order they came) and every answer
//! is checked: the lease id asked for, a header with a revision, TTL equal
//! to the granted TTL. TTL 0 means the server considers the lease expired
//! or unknown: error kind "expired", or, when the answer arrived less than
//! one TTL after the send time of this lease's previous confirmed renewal
//! (so the server's deadline for it cannot have passed yet), the kind
//! "expired within TTL of a confirmed renewal", which is a server bug
//! whatever the load.
//!
//! `lease-keepalive`: after granting, for `--duration` s every stream sends
//! keep-alives for its leases round-robin, either as fast as answers come
//! back (`--in-flight` per stream, default 1) or at an aggregate `--rate`
//! (each lease then renewed every leases/rate s). Reported: keep-alives/s
//! (correct answers), latency (send to answer, HDR), errors by kind, leases
//! that expired, the longest gap between two renewals of one lease, CPU per
//! keep-alive of the generator and of `--server-pid`, and at the end
//! whether every lease is still listed by LeaseLeases. The leases are left
//! to expire by themselves.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    PutRequest, ResponseHeader,
};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::args::Flags;
use crate::load::{
    connect_channel, endpoint_uri, in_range, json_str, machine_cpu, per_req_us, proc_cpu, self_cpu,
    status_kind, LATENCY_MAX_US, LATENCY_SIGFIG,
};

pub const USAGE: &str = "\
usage: ferrocd-perf lease-keepalive [flags]
  --endpoints LIST      comma list of host:port or http://host:port (default 127.0.0.1:2379)
  --leases N            leases to grant and keep alive (default 10000)
  --ttl S               lease TTL in seconds, >= 2 (the servers' minimum) (default 30)
  --duration SECS       seconds of keep-alives (default 10)
  --streams N           LeaseKeepAlive streams, lease i on stream i mod N (default 100)
  --conns N             HTTP/2 connections the streams are spread over (default 4)
  --in-flight N         keep-alives in flight per stream (default 1; with --rate: no limit)
  --rate R              keep-alives per second in all (open loop) instead of as fast as answered
  --server-pid PID      also report the server's CPU per keep-alive
  --threads N           tokio worker threads; 0 = current-thread runtime (default 0)
  --stall-secs S        give up on a request or stream unanswered for S s (default 10)
  --json                print one JSON object";

const VALUED: &[&str] = &[
    "--endpoints",
    "--leases",
    "--ttl",
    "--duration",
    "--streams",
    "--conns",
    "--in-flight",
    "--rate",
    "--server-pid",
    "--threads",
    "--stall-secs",
];
const SWITCHES: &[&str] = &["--json"];

pub(crate) const LEASES_MAX: usize = 1_000_000;
/// etcd's minimum TTL with its default election timeout (ceil(1.5 x 1 s)),
/// ferrocd's too; a shorter TTL would be raised by the server.
pub(crate) const TTL_MIN_S: i64 = 2;
pub(crate) const TTL_MAX_S: i64 = 3_600;
const STREAMS_MAX: usize = 100_000;
pub(crate) const CONNS_MAX: usize = 1_024;
const IN_FLIGHT_MAX: usize = 100_000;
const RATE_MAX: f64 = 10_000_000.0;
pub(crate) const DURATION_MAX_SECS: f64 = 3_600.0;
pub(crate) const THREADS_MAX: usize = 64;
pub(crate) const STALL_SECS_DEFAULT: u64 = 10;
/// Leases granted between two renewal sweeps during setup.
pub(crate) const GRANT_CHUNK: usize = 1_000;
/// Grants (each with its put, for `lease-expire`) in flight during setup.
pub(crate) const GRANT_CONCURRENCY: usize = 256;
/// Keep-alive requests queued per stream ahead of the connection.
const REQUESTS_QUEUED_MAX: usize = 64;
/// How often waiting loops look at progress.
pub(crate) const TICK_MS: u64 = 20;

pub(crate) fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIG).expect("valid histogram bounds")
}

pub(crate) fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("tokio runtime: {e}"))
}

pub(crate) fn parse_endpoints(f: &Flags) -> Result<Vec<String>, String> {
    let endpoints = f
        .raw("--endpoints")
        .unwrap_or("127.0.0.1:2379")
        .split(',')
        .filter(|e| !e.is_empty())
        .map(endpoint_uri)
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err("--endpoints is empty".into());
    }
    Ok(endpoints)
}

pub(crate) fn parse_ttl(f: &Flags, default: i64) -> Result<i64, String> {
    let ttl: i64 = f.get("--ttl", default)?;
    if !(TTL_MIN_S..=TTL_MAX_S).contains(&ttl) {
        return Err(format!(
            "--ttl must be {TTL_MIN_S}..={TTL_MAX_S} (servers raise a TTL below {TTL_MIN_S} s)"
        ));
    }
    Ok(ttl)
}

pub(crate) async fn connect_all(
    endpoints: &[String],
    conns: usize,
) -> Result<Vec<Channel>, String> {
    let mut channels = Vec::with_capacity(conns);
    for c in 0..conns {
        channels.push(connect_channel(&endpoints[c % endpoints.len()]).await?);
    }
    Ok(channels)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn header_ok(h: &Option<ResponseHeader>) -> bool {
    h.as_ref().is_some_and(|h| h.revision > 0)
}

pub(crate) fn add_error(errors: &mut HashMap<String, u64>, kind: impl Into<String>, n: u64) {
    *errors.entry(kind.into()).or_default() += n;
}

pub(crate) fn sorted(m: HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// The request half of a bidi stream, fed from a channel.
pub(crate) struct ChannelRequests<T>(pub(crate) mpsc::Receiver<T>);

impl<T> futures_core::Stream for ChannelRequests<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

// --- keep-alive streams ----------------------------------------------------------

pub(crate) const KIND_EXPIRED: &str = "expired (keep-alive answered TTL 0)";
pub(crate) const KIND_EXPIRED_EARLY: &str =
    "expired within TTL of a confirmed renewal (keep-alive answered TTL 0)";

/// One lease, as the stream keeping it alive sees it.
struct Slot {
    id: i64,
    /// Send time of the last keep-alive answered with the full TTL (or of
    /// the grant): the server's deadline is at least this + TTL.
    last_renewed: Instant,
    expired: bool,
}

/// What one keep-alive stream learned; behind a mutex shared by its sender
/// and reader (never contended on the current-thread runtime).
pub(crate) struct KaState {
    slots: Vec<Slot>,
    /// Position of the lease and send time of each unanswered keep-alive,
    /// oldest first.
    in_flight: VecDeque<(usize, Instant)>,
    ttl: i64,
    /// Answers of any kind (progress).
    answers: u64,
    ok: u64,
    hist: Histogram<u64>,
    errors: HashMap<String, u64>,
    /// Leases that got a TTL 0 answer (each counted once).
    expired_leases: u64,
    /// Longest send-to-send time between two confirmed renewals of one
    /// lease (grant to first renewal included).
    max_gap: Duration,
    ended: bool,
}

impl KaState {
    fn new(ttl: i64) -> KaState {
        KaState {
            slots: Vec::new(),
            in_flight: VecDeque::new(),
            ttl,
            answers: 0,
            ok: 0,
            hist: new_hist(),
            errors: HashMap::new(),
            expired_leases: 0,
            max_gap: Duration::ZERO,
            ended: false,
        }
    }

    fn error(&mut self, kind: impl Into<String>) {
        add_error(&mut self.errors, kind, 1);
    }

    /// Checks one answer; true if it answered a request in flight.
    fn on_answer(&mut self, r: &LeaseKeepAliveResponse, now: Instant) -> bool {
        self.answers += 1;
        let at = match self.in_flight.front() {
            None => {
                self.error("keep-alive answer nobody asked for");
                return false;
            }
            Some(&(pos, _)) if self.slots[pos].id == r.id => 0,
            Some(_) => match self
                .in_flight
                .iter()
                .position(|&(p, _)| self.slots[p].id == r.id)
            {
                Some(i) => {
                    self.error("keep-alive answered out of order");
                    i
                }
                None => {
                    self.error("keep-alive answer for a lease not in flight");
                    return false;
                }
            },
        };
        let (pos, sent) = self.in_flight.remove(at).expect("index found above");
        let ttl = self.ttl;
        let slot = &mut self.slots[pos];
        if r.ttl == 0 {
            let early = now < slot.last_renewed + Duration::from_secs(ttl as u64);
            if !slot.expired {
                slot.expired = true;
                self.expired_leases += 1;
            }
            self.error(if early {
                KIND_EXPIRED_EARLY
            } else {
                KIND_EXPIRED
            });
        } else if r.ttl != ttl {
            self.error(format!("keep-alive answered TTL {} (granted {ttl})", r.ttl));
        } else if !header_ok(&r.header) {
            self.error("keep-alive answer without a header revision");
        } else {
            self.max_gap = self
                .max_gap
                .max(sent.saturating_duration_since(slot.last_renewed));
            slot.last_renewed = sent;
            self.ok += 1;
            let us = now.saturating_duration_since(sent).as_micros() as u64;
            self.hist.saturating_record(us.max(1));
        }
        true
    }

    fn reset_stats(&mut self) {
        self.ok = 0;
        self.hist = new_hist();
        self.errors.clear();
        self.max_gap = Duration::ZERO;
    }
}

struct KaStream {
    tx: Mutex<Option<mpsc::Sender<LeaseKeepAliveRequest>>>,
    /// Window of keep-alives in flight.
    permits: Arc<Semaphore>,
    st: Arc<Mutex<KaState>>,
    /// Signalled when nothing is in flight any more or the stream ended.
    idle: Arc<Notify>,
    reader: JoinHandle<()>,
}

impl KaStream {
    fn sender(&self) -> Option<mpsc::Sender<LeaseKeepAliveRequest>> {
        lock(&self.tx).clone()
    }

    /// Sends a keep-alive for the lease at `pos` once the window allows.
    async fn send(
        &self,
        tx: &mpsc::Sender<LeaseKeepAliveRequest>,
        pos: usize,
        stall: Duration,
    ) -> Result<(), ()> {
        match tokio::time::timeout(stall, self.permits.acquire()).await {
            Ok(Ok(p)) => p.forget(),
            // Closed: the reader ended and said why.
            Ok(Err(_)) => return Err(()),
            Err(_) => {
                lock(&self.st).error(format!(
                    "stream stalled: no keep-alive answer for {} s",
                    stall.as_secs()
                ));
                return Err(());
            }
        }
        let id = {
            let mut st = lock(&self.st);
            let id = st.slots[pos].id;
            st.in_flight.push_back((pos, Instant::now()));
            id
        };
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            lock(&self.st).error("keep-alive request stream closed");
            return Err(());
        }
        Ok(())
    }

    /// Waits until every keep-alive in flight is answered; false (and an
    /// error recorded) if answers stopped coming for `stall`.
    async fn drain(&self, stall: Duration) -> bool {
        let mut last = u64::MAX;
        let mut since = Instant::now();
        loop {
            let answers = {
                let st = lock(&self.st);
                if st.in_flight.is_empty() || st.ended {
                    return true;
                }
                st.answers
            };
            if answers != last {
                last = answers;
                since = Instant::now();
            } else if since.elapsed() >= stall {
                lock(&self.st).error(format!(
                    "stream stalled: keep-alives unanswered for {} s",
                    stall.as_secs()
                ));
                return false;
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(TICK_MS), self.idle.notified()).await;
        }
    }
}

async fn ka_reader(
    channel: Channel,
    rx: mpsc::Receiver<LeaseKeepAliveRequest>,
    st: Arc<Mutex<KaState>>,
    permits: Arc<Semaphore>,
    idle: Arc<Notify>,
) {
    let why = match LeaseClient::new(channel)
        .lease_keep_alive(ChannelRequests(rx))
        .await
    {
        Err(s) => format!("keep-alive stream refused: {}", status_kind(&s)),
        Ok(r) => {
            let mut responses = r.into_inner();
            loop {
                match responses.message().await {
                    Ok(Some(r)) => {
                        let now = Instant::now();
                        let mut st = lock(&st);
                        if st.on_answer(&r, now) {
                            permits.add_permits(1);
                        }
                        if st.in_flight.is_empty() {
                            idle.notify_one();
                        }
                    }
                    Ok(None) => break "keep-alive stream ended by the server".to_string(),
                    Err(s) => break format!("keep-alive stream failed: {}", status_kind(&s)),
                }
            }
        }
    };
    let mut st = lock(&st);
    st.error(why);
    st.ended = true;
    permits.close();
    idle.notify_one();
}

/// Keep-alive streams; lease i on stream i mod streams, at position i /
/// streams.
pub(crate) struct KaStreams {
    streams: Vec<Arc<KaStream>>,
    /// Leases added so far (added in index order).
    leases: AtomicUsize,
}

/// Totals over all streams.
pub(crate) struct KaTotals {
    pub(crate) ok: u64,
    pub(crate) hist: Histogram<u64>,
    pub(crate) errors: Vec<(String, u64)>,
    pub(crate) expired_leases: u64,
    pub(crate) max_gap: Duration,
    pub(crate) ended_streams: usize,
}

impl KaTotals {
    pub(crate) fn error_total(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }
}

impl KaStreams {
    /// Opens `count` streams over `channels`, `window` keep-alives in flight
    /// each.
    pub(crate) fn open(channels: &[Channel], count: usize, window: usize, ttl: i64) -> KaStreams {
        let streams = (0..count)
            .map(|s| {
                let (tx, rx) = mpsc::channel(REQUESTS_QUEUED_MAX);
                let st = Arc::new(Mutex::new(KaState::new(ttl)));
                let permits = Arc::new(Semaphore::new(window));
                let idle = Arc::new(Notify::new());
                let reader = tokio::spawn(ka_reader(
                    channels[s % channels.len()].clone(),
                    rx,
                    st.clone(),
                    permits.clone(),
                    idle.clone(),
                ));
                Arc::new(KaStream {
                    tx: Mutex::new(Some(tx)),
                    permits,
                    st,
                    idle,
                    reader,
                })
            })
            .collect();
        KaStreams {
            streams,
            leases: AtomicUsize::new(0),
        }
    }

    /// Adds lease number `i` (the next one: leases are added in order),
    /// granted by a request sent at `granted`.
    pub(crate) fn add(&self, i: usize, id: i64, granted: Instant) {
        let n = self.leases.fetch_add(1, Ordering::Relaxed);
        assert_eq!(n, i, "leases are added in index order");
        let s = &self.streams[i % self.streams.len()];
        lock(&s.st).slots.push(Slot {
            id,
            last_renewed: granted,
            expired: false,
        });
    }

    /// Renews every lease added so far once; an error if any renewal was
    /// not answered with the full TTL.
    pub(crate) async fn sweep(&self, stall: Duration) -> Result<(), String> {
        let tasks: Vec<_> = self
            .streams
            .iter()
            .map(|s| {
                let s = s.clone();
                tokio::spawn(async move {
                    let Some(tx) = s.sender() else { return };
                    let len = lock(&s.st).slots.len();
                    for pos in 0..len {
                        if s.send(&tx, pos, stall).await.is_err() {
                            return;
                        }
                    }
                    s.drain(stall).await;
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        let t = self.totals()?;
        if let Some((kind, n)) = t.errors.first() {
            return Err(format!("{n} x {kind}"));
        }
        Ok(())
    }

    /// Keeps every lease alive until `end`: round-robin per stream, as
    /// fast as the window allows or, with `rate`, keep-alive k of stream s
    /// sent at start + (k x streams + s) / rate. Returns when the last
    /// answer came (or the streams stalled).
    pub(crate) async fn run(&self, rate: Option<f64>, end: Instant, stall: Duration) {
        let start = Instant::now();
        let n = self.streams.len();
        let tasks: Vec<_> = self
            .streams
            .iter()
            .enumerate()
            .map(|(s, st)| {
                let st = st.clone();
                tokio::spawn(async move {
                    let Some(tx) = st.sender() else { return };
                    let len = lock(&st.st).slots.len();
                    if len == 0 {
                        return;
                    }
                    for k in 0u64.. {
                        if let Some(r) = rate {
                            let at = start
                                + Duration::from_secs_f64((k * n as u64 + s as u64) as f64 / r);
                            if at >= end {
                                break;
                            }
                            tokio::time::sleep_until(at.into()).await;
                        }
                        if Instant::now() >= end {
                            break;
                        }
                        if st
                            .send(&tx, (k % len as u64) as usize, stall)
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    st.drain(stall).await;
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    pub(crate) fn reset_stats(&self) {
        for s in &self.streams {
            lock(&s.st).reset_stats();
        }
    }

    pub(crate) fn totals(&self) -> Result<KaTotals, String> {
        let mut t = KaTotals {
            ok: 0,
            hist: new_hist(),
            errors: Vec::new(),
            expired_leases: 0,
            max_gap: Duration::ZERO,
            ended_streams: 0,
        };
        let mut errors = HashMap::new();
        for s in &self.streams {
            let st = lock(&s.st);
            t.ok += st.ok;
            t.hist
                .add(&st.hist)
                .map_err(|e| format!("histogram: {e:?}"))?;
            for (k, n) in &st.errors {
                add_error(&mut errors, k.clone(), *n);
            }
            t.expired_leases += st.expired_leases;
            t.max_gap = t.max_gap.max(st.max_gap);
            t.ended_streams += usize::from(st.ended);
        }
        t.errors = sorted(errors);
        Ok(t)
    }

    /// Closes every stream (the server sees them cancelled).
    pub(crate) fn close(&self) {
        for s in &self.streams {
            lock(&s.tx).take();
            s.reader.abort();
        }
    }
}

impl Drop for KaStreams {
    fn drop(&mut self) {
        self.close();
    }
}

/// A lease id and the send time of its grant.
type Granted = (i64, Instant);

/// Grants leases `first..first + count` with `ttl` (and puts `keys[i]`
/// with lease i right after its grant, if given); returns each one's id
/// and grant send time. Any failure is an error.
pub(crate) async fn grant_chunk(
    channels: &[Channel],
    first: usize,
    count: usize,
    ttl: i64,
    keys: Option<Arc<Vec<Vec<u8>>>>,
    stall: Duration,
) -> Result<Vec<Granted>, String> {
    let out: Arc<Mutex<Vec<Option<Granted>>>> = Arc::new(Mutex::new(vec![None; count]));
    let next = Arc::new(AtomicUsize::new(0));
    let failed: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..GRANT_CONCURRENCY.min(count))
        .map(|t| {
            let ch = channels[t % channels.len()].clone();
            let (out, next, failed, stop, keys) = (
                out.clone(),
                next.clone(),
                failed.clone(),
                stop.clone(),
                keys.clone(),
            );
            tokio::spawn(async move {
                let mut lc = LeaseClient::new(ch.clone());
                let mut kv = KvClient::new(ch);
                while !stop.load(Ordering::Relaxed) {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= count {
                        return;
                    }
                    let i = first + j;
                    match grant_one(&mut lc, &mut kv, ttl, keys.as_ref().map(|k| &k[i]), stall)
                        .await
                    {
                        Ok(v) => lock(&out)[j] = Some(v),
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            lock(&failed).get_or_insert(format!("lease {i}: {e}"));
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    if let Some(e) = lock(&failed).take() {
        return Err(e);
    }
    let out = std::mem::take(&mut *lock(&out));
    out.into_iter()
        .map(|v| v.ok_or_else(|| "a grant was never made".to_string()))
        .collect()
}

async fn grant_one(
    lc: &mut LeaseClient<Channel>,
    kv: &mut KvClient<Channel>,
    ttl: i64,
    key: Option<&Vec<u8>>,
    stall: Duration,
) -> Result<Granted, String> {
    let sent = Instant::now();
    let r = tokio::time::timeout(stall, lc.lease_grant(LeaseGrantRequest { ttl, id: 0 }))
        .await
        .map_err(|_| format!("grant: no answer in {} s", stall.as_secs()))?
        .map_err(|s| format!("grant: {}", status_kind(&s)))?
        .into_inner();
    if !r.error.is_empty() {
        return Err(format!("grant: {}", r.error));
    }
    if r.id == 0 || r.ttl != ttl || !header_ok(&r.header) {
        return Err(format!(
            "grant: wrong answer (id {}, TTL {} for TTL {ttl} asked)",
            r.id, r.ttl
        ));
    }
    if let Some(key) = key {
        let req = PutRequest {
            key: key.clone(),
            value: b"leased".to_vec(),
            lease: r.id,
            ..Default::default()
        };
        let p = tokio::time::timeout(stall, kv.put(req))
            .await
            .map_err(|_| format!("put with lease: no answer in {} s", stall.as_secs()))?
            .map_err(|s| format!("put with lease: {}", status_kind(&s)))?;
        if !header_ok(&p.get_ref().header) {
            return Err("put with lease: wrong answer (no revision)".into());
        }
    }
    Ok((r.id, sent))
}

/// Grants `n` leases in chunks of [`GRANT_CHUNK`], adding each to `ka`,
/// and renews all granted so far after each chunk.
pub(crate) async fn grant_all(
    channels: &[Channel],
    ka: &KaStreams,
    n: usize,
    ttl: i64,
    keys: Option<Arc<Vec<Vec<u8>>>>,
    stall: Duration,
) -> Result<Vec<i64>, String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let first = ids.len();
        let count = GRANT_CHUNK.min(n - first);
        let chunk = grant_chunk(channels, first, count, ttl, keys.clone(), stall).await?;
        for (j, (id, at)) in chunk.into_iter().enumerate() {
            ka.add(first + j, id, at);
            ids.push(id);
        }
        ka.sweep(stall).await.map_err(|e| {
            format!(
                "renewing the {} leases granted so far: {e} (is --ttl {ttl} too short for this machine?)",
                ids.len()
            )
        })?;
    }
    Ok(ids)
}

/// How many of `ids` the server lists (LeaseLeases).
pub(crate) async fn leases_listed(
    channel: &Channel,
    ids: &[i64],
    stall: Duration,
) -> Result<usize, String> {
    let r = tokio::time::timeout(
        stall,
        LeaseClient::new(channel.clone()).lease_leases(LeaseLeasesRequest {}),
    )
    .await
    .map_err(|_| format!("LeaseLeases: no answer in {} s", stall.as_secs()))?
    .map_err(|s| format!("LeaseLeases: {}", status_kind(&s)))?;
    let listed: HashSet<i64> = r.get_ref().leases.iter().map(|l| l.id).collect();
    Ok(ids.iter().filter(|id| listed.contains(id)).count())
}

pub(crate) fn lat(h: &Histogram<u64>) -> [(&'static str, u64); 5] {
    [
        ("p50", h.value_at_quantile(0.5)),
        ("p90", h.value_at_quantile(0.9)),
        ("p99", h.value_at_quantile(0.99)),
        ("p99.9", h.value_at_quantile(0.999)),
        ("max", h.max()),
    ]
}

pub(crate) fn lat_json(h: &Histogram<u64>) -> String {
    lat(h)
        .iter()
        .map(|(k, v)| format!("{}:{v}", json_str(k)))
        .chain(std::iter::once(format!("\"mean\":{:.1}", h.mean())))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn lat_text(h: &Histogram<u64>) -> String {
    let mut s: Vec<String> = lat(h).iter().map(|(k, v)| format!("{k} {v}")).collect();
    s.push(format!("mean {:.1}", h.mean()));
    s.join(", ")
}

pub(crate) fn kinds_json(errors: &[(String, u64)]) -> String {
    errors
        .iter()
        .map(|(k, n)| format!("{}:{n}", json_str(k)))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn opt_json<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("null".to_string(), |v| v.to_string())
}

// --- lease-keepalive ---------------------------------------------------------------

struct Config {
    endpoints: Vec<String>,
    leases: usize,
    ttl: i64,
    duration: Duration,
    streams: usize,
    conns: usize,
    in_flight: usize,
    rate: Option<f64>,
    server_pid: Option<i32>,
    threads: usize,
    stall: Duration,
    json: bool,
}

impl Config {
    fn parse(args: &[String]) -> Result<Config, String> {
        let f = Flags::parse(args, VALUED, SWITCHES)?;
        let leases: usize = f.get("--leases", 10_000)?;
        in_range("--leases", leases, 1, LEASES_MAX)?;
        let streams: usize = f.get("--streams", 100.min(leases))?;
        in_range("--streams", streams, 1, leases.min(STREAMS_MAX))?;
        let rate: Option<f64> = f.opt("--rate")?;
        if let Some(r) = rate {
            if !(r > 0.0 && r <= RATE_MAX) {
                return Err(format!("--rate must be in (0, {RATE_MAX}]"));
            }
        }
        // With a rate the window only bounds memory: at most every lease of
        // a stream in flight at once.
        let per_stream = leases.div_ceil(streams);
        let in_flight = f.get("--in-flight", if rate.is_some() { per_stream } else { 1 })?;
        in_range("--in-flight", in_flight, 1, IN_FLIGHT_MAX)?;
        let cfg = Config {
            endpoints: parse_endpoints(&f)?,
            leases,
            ttl: parse_ttl(&f, 30)?,
            duration: {
                let s: f64 = f.get("--duration", 10.0)?;
                if !(s > 0.0 && s <= DURATION_MAX_SECS) {
                    return Err(format!("--duration must be in (0, {DURATION_MAX_SECS}]"));
                }
                Duration::from_secs_f64(s)
            },
            streams,
            conns: f.get("--conns", 4.min(streams))?,
            in_flight,
            rate,
            server_pid: f.opt("--server-pid")?,
            threads: f.get("--threads", 0)?,
            stall: Duration::from_secs(f.get("--stall-secs", STALL_SECS_DEFAULT)?.max(1)),
            json: f.switch("--json"),
        };
        in_range("--conns", cfg.conns, 1, cfg.streams.min(CONNS_MAX))?;
        in_range("--threads", cfg.threads, 0, THREADS_MAX)?;
        if let Some(r) = cfg.rate {
            // Each lease is renewed every leases / rate s.
            if cfg.leases as f64 / r >= cfg.ttl as f64 {
                return Err(format!(
                    "--rate {r} renews each lease every {:.1} s, not within its TTL of {} s",
                    cfg.leases as f64 / r,
                    cfg.ttl
                ));
            }
        }
        Ok(cfg)
    }
}

struct Report {
    grant: Duration,
    elapsed: Duration,
    ka: KaTotals,
    listed_at_end: Option<usize>,
    client_cpu: Duration,
    server_cpu: Option<Duration>,
    machine_busy: Duration,
    steal: Duration,
}

/// Entry point for `lease-keepalive`.
pub fn main(args: &[String]) -> Result<(), String> {
    let cfg = Config::parse(args)?;
    let rt = runtime(cfg.threads)?;
    let report = rt.block_on(run(&cfg))?;
    drop(rt);
    if cfg.json {
        println!("{}", report.json(&cfg));
    } else {
        print!("{}", report.text(&cfg));
    }
    Ok(())
}

async fn run(cfg: &Config) -> Result<Report, String> {
    let channels = connect_all(&cfg.endpoints, cfg.conns).await?;
    let ka = KaStreams::open(&channels, cfg.streams, cfg.in_flight, cfg.ttl);
    let t = Instant::now();
    let ids = grant_all(&channels, &ka, cfg.leases, cfg.ttl, None, cfg.stall).await?;
    let grant = t.elapsed();
    ka.reset_stats();

    let server_before = cfg.server_pid.map(proc_cpu).transpose()?;
    let machine_before = machine_cpu()?;
    let cpu_before = self_cpu();
    let start = Instant::now();
    ka.run(cfg.rate, start + cfg.duration, cfg.stall).await;
    let elapsed = start.elapsed();
    let client_cpu = self_cpu().saturating_sub(cpu_before);
    let machine_after = machine_cpu()?;
    let server_cpu = match (cfg.server_pid, server_before) {
        (Some(pid), Some(b)) => proc_cpu(pid).ok().map(|c| c.saturating_sub(b)),
        _ => None,
    };
    let mut totals = ka.totals()?;
    ka.close();
    let listed_at_end = match leases_listed(&channels[0], &ids, cfg.stall).await {
        Ok(n) => Some(n),
        Err(e) => {
            totals.errors.push((e, 1));
            None
        }
    };
    if let Some(n) = listed_at_end {
        if n < ids.len() {
            totals.errors.push((
                "lease no longer listed at the end although kept alive".into(),
                (ids.len() - n) as u64,
            ));
        }
    }
    Ok(Report {
        grant,
        elapsed,
        ka: totals,
        listed_at_end,
        client_cpu,
        server_cpu,
        machine_busy: machine_after.busy.saturating_sub(machine_before.busy),
        steal: machine_after.steal.saturating_sub(machine_before.steal),
    })
}

impl Report {
    fn completed(&self) -> u64 {
        self.ka.ok + self.ka.error_total()
    }

    fn kps(&self) -> f64 {
        self.ka.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPUs used by everything but the generator and the server, and CPUs
    /// stolen, averaged over the timed phase (as in `load`).
    fn other_and_steal_cores(&self) -> (f64, f64) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ours = self.client_cpu + self.server_cpu.unwrap_or_default();
        let other = self.machine_busy.as_secs_f64() - self.steal.as_secs_f64() - ours.as_secs_f64();
        (other.max(0.0) / secs, self.steal.as_secs_f64() / secs)
    }

    fn json(&self, cfg: &Config) -> String {
        let endpoints: Vec<String> = cfg.endpoints.iter().map(|e| json_str(e)).collect();
        let (other, steal) = self.other_and_steal_cores();
        let done = self.completed();
        format!(
            "{{\"workload\":\"lease-keepalive\",\"endpoints\":[{}],\"leases\":{},\"ttl\":{},\"streams\":{},\
\"conns\":{},\"in_flight\":{},\"rate\":{},\"threads\":{},\"grant_s\":{:.3},\"grants_per_s\":{:.1},\
\"duration_s\":{:.3},\"elapsed_s\":{:.3},\"keepalives\":{done},\"ok\":{},\"kps\":{:.1},\"latency_us\":{{{}}},\
\"errors\":{},\"error_kinds\":{{{}}},\"leases_expired\":{},\"max_renew_gap_ms\":{:.1},\
\"leases_listed_at_end\":{},\"streams_ended\":{},\"client_cpu_us_per_ka\":{:.2},\"server_pid\":{},\
\"server_cpu_us_per_ka\":{},\"other_cpu_cores\":{other:.2},\"steal_cores\":{steal:.2}}}",
            endpoints.join(","),
            cfg.leases,
            cfg.ttl,
            cfg.streams,
            cfg.conns,
            cfg.in_flight,
            opt_json(cfg.rate),
            cfg.threads,
            self.grant.as_secs_f64(),
            cfg.leases as f64 / self.grant.as_secs_f64().max(1e-9),
            cfg.duration.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.ka.ok,
            self.kps(),
            lat_json(&self.ka.hist),
            self.ka.error_total(),
            kinds_json(&self.ka.errors),
            self.ka.expired_leases,
            self.ka.max_gap.as_secs_f64() * 1e3,
            opt_json(self.listed_at_end),
            self.ka.ended_streams,
            per_req_us(self.client_cpu, done),
            opt_json(cfg.server_pid),
            opt_json(self.server_cpu.map(|c| format!("{:.2}", per_req_us(c, done)))),
        )
    }

    fn text(&self, cfg: &Config) -> String {
        let done = self.completed();
        let mode = match cfg.rate {
            Some(r) => format!(
                "paced at {r}/s (each lease every {:.2} s)",
                cfg.leases as f64 / r
            ),
            None => format!(
                "{} in flight per stream, as fast as answered",
                cfg.in_flight
            ),
        };
        let mut out = format!(
            "{} leases (TTL {} s) granted in {:.2} s ({:.0}/s); kept alive over {} streams on {} conns, {mode}\n",
            cfg.leases,
            cfg.ttl,
            self.grant.as_secs_f64(),
            cfg.leases as f64 / self.grant.as_secs_f64().max(1e-9),
            cfg.streams,
            cfg.conns,
        );
        out += &format!(
            "keep-alives: {done} answered in {:.2} s, {:.1}/s correct\n",
            self.elapsed.as_secs_f64(),
            self.kps()
        );
        out += &format!("latency us: {}\n", lat_text(&self.ka.hist));
        out += &format!(
            "longest gap between two renewals of one lease: {:.1} ms; leases expired: {}; listed at the end: {} of {}\n",
            self.ka.max_gap.as_secs_f64() * 1e3,
            self.ka.expired_leases,
            opt_json(self.listed_at_end),
            cfg.leases
        );
        if self.ka.errors.is_empty() {
            out += "errors: none\n";
        } else {
            out += &format!("errors: {}\n", self.ka.error_total());
            for (k, n) in &self.ka.errors {
                out += &format!("  {n:>8}  {k}\n");
            }
        }
        out += &format!(
            "generator CPU: {:.2} us/keep-alive (user+sys)\n",
            per_req_us(self.client_cpu, done)
        );
        if let (Some(pid), Some(c)) = (cfg.server_pid, self.server_cpu) {
            out += &format!(
                "server CPU (pid {pid}): {:.2} us/keep-alive (utime+stime)\n",
                per_req_us(c, done)
            );
        }
        let (other, steal) = self.other_and_steal_cores();
        out += &format!("machine: other CPU {other:.2} cores, steal {steal:.2} cores\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::args::test_args as args;

    #[test]
    fn config_defaults_and_checks() {
        let c = Config::parse(&[]).unwrap();
        assert_eq!((c.leases, c.ttl, c.streams, c.conns), (10_000, 30, 100, 4));
        assert_eq!((c.in_flight, c.rate), (1, None));
        let c = Config::parse(&args(&["--leases", "1000", "--rate", "500", "--ttl", "3"])).unwrap();
        assert_eq!(c.in_flight, 10, "paced: the whole stream may be in flight");
        assert!(Config::parse(&args(&["--ttl", "1"])).is_err());
        assert!(Config::parse(&args(&["--leases", "10", "--streams", "11"])).is_err());
        assert!(Config::parse(&args(&["--streams", "2", "--conns", "3"])).is_err());
        // 10,000 leases at 1,000/s: each renewed every 10 s, TTL 5.
        assert!(Config::parse(&args(&["--rate", "1000", "--ttl", "5"])).is_err());
        assert!(Config::parse(&args(&["--rate", "0"])).is_err());
    }

    #[test]
    fn answers_are_checked() {
        let t0 = Instant::now();
        let mut st = KaState::new(5);
        for id in [10, 11, 12] {
            st.slots.push(Slot {
                id,
                last_renewed: t0,
                expired: false,
            });
        }
        let header = Some(ResponseHeader {
            revision: 3,
            ..Default::default()
        });
        let ans = |id, ttl| LeaseKeepAliveResponse { header, id, ttl };
        let ms = |n| t0 + Duration::from_millis(n);
        st.in_flight
            .extend([(0, ms(100)), (1, ms(100)), (2, ms(100))]);
        assert!(st.on_answer(&ans(10, 5), ms(101)));
        assert_eq!((st.ok, st.hist.max()), (1, 1000));
        assert_eq!(st.max_gap, Duration::from_millis(100));
        // Out of order, then a wrong TTL, then nobody asked.
        assert!(st.on_answer(&ans(12, 5), ms(102)));
        assert!(st.on_answer(&ans(11, 7), ms(102)));
        assert!(!st.on_answer(&ans(11, 5), ms(102)));
        assert_eq!(st.ok, 2);
        assert_eq!(st.errors.len(), 3, "{:?}", st.errors);
        // Lease 10 was confirmed renewed at 100 ms: TTL 0 at 1 s is early,
        // at 6 s it is an ordinary expiry.
        st.in_flight.push_back((0, ms(900)));
        assert!(st.on_answer(&ans(10, 0), ms(1000)));
        assert_eq!(st.errors[KIND_EXPIRED_EARLY], 1);
        st.in_flight.push_back((0, ms(6000)));
        assert!(st.on_answer(&ans(10, 0), ms(6000)));
        assert_eq!(st.errors[KIND_EXPIRED], 1);
        assert_eq!(st.expired_leases, 1);
        // A lease id not in flight.
        st.in_flight.push_back((1, ms(7000)));
        assert!(!st.on_answer(&ans(99, 5), ms(7001)));
        assert_eq!(st.in_flight.len(), 1);
        // No header.
        assert!(st.on_answer(
            &LeaseKeepAliveResponse {
                header: None,
                id: 11,
                ttl: 5
            },
            ms(7002)
        ));
        assert_eq!(st.ok, 2);
    }
}
