//! `watch`: put-to-event latency and per-watcher memory of the server.
//!
//! `--watchers` watchers are created over `--streams` bidi Watch streams
//! (watcher i on stream i mod streams) over `--conns` HTTP/2 connections
//! (stream s on connection s mod conns). Watcher i watches key i mod
//! `--keys` (`<key-prefix><index, zero-padded>`): as a single key, or, with
//! `--watch-prefix` (all) or `--mixed` (every odd watcher), as a prefix
//! watch whose prefix is that key (the keys have equal width, so a key is
//! the prefix of no other key).
//!
//! Once every watcher is created, a writer on its own connection puts at
//! `--rate` puts/s (open loop: put n is sent at n/rate s, at most
//! [`PUTS_IN_FLIGHT_MAX`] in flight) for `--duration` s, put n to key n mod
//! keys, its value the put's number and send time (this process's
//! monotonic clock). Each watcher must then see exactly one PUT event per
//! acknowledged put to its key, in increasing revision order; the tool
//! counts, by kind, missing events, duplicates, out-of-order events, events
//! for keys or values it never wrote, watch cancellations and stream
//! errors. Receive time minus the put's send time of every first delivery
//! goes into an HDR histogram. The tool stops by itself: a put gets
//! `--stall-secs` to answer, creating the watchers ends after
//! `--setup-secs` (or `--stall-secs` without progress), and the wait for
//! the last events ends after `--stall-secs` without one.
//!
//! With `--server-pid` the server's RSS (VmRSS) is read before the streams
//! are opened and `--settle-ms` after the last watcher is created: the
//! difference over the watcher count is the memory per watcher (stream
//! overhead included). `--memory-only` stops there: no puts; the streams
//! are closed and the RSS read once more after `--settle-ms`.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use ferrocd_proto::mvccpb::event::EventType;
use ferrocd_proto::mvccpb::Event;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::args::Flags;
use crate::load::{
    connect_channel, endpoint_uri, in_range, json_str, machine_cpu, per_req_us, proc_cpu, self_cpu,
    status_kind, LATENCY_MAX_US, LATENCY_SIGFIG,
};

pub const USAGE: &str = "\
usage: ferrocd-perf watch [flags]
  --endpoints LIST      comma list of host:port or http://host:port (default 127.0.0.1:2379)
  --watchers N          watchers (default 1)
  --streams N           watch streams they are spread over (default 1)
  --conns N             HTTP/2 connections the streams are spread over (default 1)
  --keys N              distinct watched keys, watcher i on key i mod N (default: --watchers)
  --watch-prefix        prefix watchers (prefix = the watcher's key) instead of single-key ones
  --mixed               every odd watcher a prefix watcher, the others single-key
  --rate R              puts per second, round-robin over the keys (default 1000)
  --duration SECS       seconds of puts (default 10)
  --memory-only         only create the watchers, read the server's RSS, close (no puts)
  --server-pid PID      server CPU per put and RSS (/proc/PID/status VmRSS)
  --settle-ms MS        wait before reading RSS after creating or closing (default 1000)
  --setup-secs S        give up creating the watchers after S seconds (default 120)
  --key-prefix P        keys are P + zero-padded index (default /ferrocd-perf/watch/)
  --threads N           tokio worker threads; 0 = current-thread runtime (default 0)
  --stall-secs S        put timeout; also ends setup or the event drain after S s without progress (default 10)
  --json                print one JSON object";

const VALUED: &[&str] = &[
    "--endpoints",
    "--watchers",
    "--streams",
    "--conns",
    "--keys",
    "--rate",
    "--duration",
    "--server-pid",
    "--settle-ms",
    "--setup-secs",
    "--key-prefix",
    "--threads",
    "--stall-secs",
];
const SWITCHES: &[&str] = &["--watch-prefix", "--mixed", "--memory-only", "--json"];

const WATCHERS_MAX: usize = 1_000_000;
const STREAMS_MAX: usize = 100_000;
const CONNS_MAX: usize = 1_024;
const RATE_MAX: f64 = 1_000_000.0;
const DURATION_MAX_SECS: f64 = 3_600.0;
/// Puts allowed in flight before the writer waits (and falls behind its
/// schedule, which shows as a put rate below `--rate`).
pub const PUTS_IN_FLIGHT_MAX: usize = 1_024;
/// Create requests queued per stream ahead of the connection.
const CREATES_QUEUED_MAX: usize = 64;
const THREADS_MAX: usize = 64;
const STALL_SECS_DEFAULT: u64 = 10;
const SETUP_SECS_DEFAULT: u64 = 120;
const SETTLE_MS_DEFAULT: u64 = 1_000;
/// After the last expected event arrived, how long to keep listening for
/// duplicates before closing.
const DRAIN_GRACE_MS: u64 = 500;
/// How often progress is looked at while waiting.
const TICK_MS: u64 = 50;
/// Put value: 16 hex digits of put number, 16 of send time (ns).
const VALUE_BYTES: usize = 32;

const PUT_PENDING: u8 = 0;
const PUT_OK: u8 = 1;
const PUT_FAILED: u8 = 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Key,
    Prefix,
    Mixed,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Prefix => "prefix",
            Kind::Mixed => "mixed",
        }
    }

    fn is_prefix(self, watcher: usize) -> bool {
        match self {
            Kind::Key => false,
            Kind::Prefix => true,
            Kind::Mixed => watcher % 2 == 1,
        }
    }
}

struct Config {
    endpoints: Vec<String>,
    watchers: usize,
    streams: usize,
    conns: usize,
    keys: usize,
    kind: Kind,
    rate: f64,
    duration: Duration,
    memory_only: bool,
    server_pid: Option<i32>,
    settle: Duration,
    setup: Duration,
    key_prefix: String,
    threads: usize,
    stall: Duration,
    json: bool,
}

impl Config {
    fn parse(args: &[String]) -> Result<Config, String> {
        let f = Flags::parse(args, VALUED, SWITCHES)?;
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
        let kind = match (f.switch("--watch-prefix"), f.switch("--mixed")) {
            (true, true) => return Err("give --watch-prefix or --mixed, not both".into()),
            (true, false) => Kind::Prefix,
            (false, true) => Kind::Mixed,
            (false, false) => Kind::Key,
        };
        let memory_only = f.switch("--memory-only");
        if memory_only && (f.raw("--rate").is_some() || f.raw("--duration").is_some()) {
            return Err("--memory-only puts nothing: no --rate or --duration".into());
        }
        let watchers = f.get("--watchers", 1)?;
        let cfg = Config {
            endpoints,
            watchers,
            streams: f.get("--streams", 1)?,
            conns: f.get("--conns", 1)?,
            keys: f.get("--keys", watchers)?,
            kind,
            rate: f.get("--rate", 1000.0)?,
            duration: {
                let s: f64 = f.get("--duration", 10.0)?;
                if !(s > 0.0 && s <= DURATION_MAX_SECS) {
                    return Err(format!("--duration must be in (0, {DURATION_MAX_SECS}]"));
                }
                Duration::from_secs_f64(s)
            },
            memory_only,
            server_pid: f.opt("--server-pid")?,
            settle: Duration::from_millis(f.get("--settle-ms", SETTLE_MS_DEFAULT)?),
            setup: Duration::from_secs(f.get("--setup-secs", SETUP_SECS_DEFAULT)?.max(1)),
            key_prefix: f
                .raw("--key-prefix")
                .unwrap_or("/ferrocd-perf/watch/")
                .to_string(),
            threads: f.get("--threads", 0)?,
            stall: Duration::from_secs(f.get("--stall-secs", STALL_SECS_DEFAULT)?.max(1)),
            json: f.switch("--json"),
        };
        in_range("--watchers", cfg.watchers, 1, WATCHERS_MAX)?;
        in_range("--streams", cfg.streams, 1, cfg.watchers.min(STREAMS_MAX))?;
        in_range("--conns", cfg.conns, 1, cfg.streams.min(CONNS_MAX))?;
        in_range("--keys", cfg.keys, 1, cfg.watchers)?;
        in_range("--threads", cfg.threads, 0, THREADS_MAX)?;
        if !(cfg.rate > 0.0 && cfg.rate <= RATE_MAX) {
            return Err(format!("--rate must be in (0, {RATE_MAX}]"));
        }
        Ok(cfg)
    }

    /// Puts the writer schedules.
    fn puts_scheduled(&self) -> usize {
        (self.rate * self.duration.as_secs_f64()).ceil().max(1.0) as usize
    }

    fn key(&self, k: usize) -> Vec<u8> {
        let width = (self.keys - 1).to_string().len();
        format!("{}{k:0width$}", self.key_prefix).into_bytes()
    }

    fn create_request(&self, watcher: usize, key: &[u8]) -> WatchRequest {
        let range_end = if self.kind.is_prefix(watcher) {
            prefix_end(key)
        } else {
            Vec::new()
        };
        WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.to_vec(),
                range_end,
                ..Default::default()
            })),
        }
    }
}

/// etcd's range end for "every key starting with `p`".
fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Nanoseconds on this process's monotonic clock.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn encode_value(seq: u64, sent_ns: u64) -> Vec<u8> {
    format!("{seq:016x}{sent_ns:016x}").into_bytes()
}

fn decode_value(v: &[u8]) -> Option<(u64, u64)> {
    if v.len() != VALUE_BYTES {
        return None;
    }
    let s = std::str::from_utf8(v).ok()?;
    let seq = u64::from_str_radix(&s[..16], 16).ok()?;
    let sent = u64::from_str_radix(&s[16..], 16).ok()?;
    Some((seq, sent))
}

/// VmRSS of `pid` in bytes.
pub(crate) fn rss_bytes(pid: i32) -> Result<u64, String> {
    status_bytes(pid, "VmRSS:")
}

/// VmHWM of `pid` in bytes: its peak RSS since it started.
pub(crate) fn peak_rss_bytes(pid: i32) -> Result<u64, String> {
    status_bytes(pid, "VmHWM:")
}

fn status_bytes(pid: i32, field: &str) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or(format!("{path}: no {field}"))
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIG).expect("valid histogram bounds")
}

/// The request half of a watch stream.
struct Requests(mpsc::Receiver<WatchRequest>);

impl futures_core::Stream for Requests {
    type Item = WatchRequest;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchRequest>> {
        self.0.poll_recv(cx)
    }
}

/// Counters every stream bumps, read by the waiting loops.
#[derive(Default)]
struct Progress {
    /// Create requests answered (created or refused).
    answered: AtomicU64,
    /// First deliveries of a put's event to a watcher.
    delivered: AtomicU64,
}

/// One watcher, as its stream's reader sees it.
struct WatcherState {
    key: usize,
    created: bool,
    last_rev: i64,
    /// Put numbers delivered.
    seen: HashSet<u64>,
}

/// What one stream's reader learned; behind a mutex so that the main task
/// can read it after aborting the reader (never contended otherwise).
struct StreamState {
    /// By position in the stream (watcher i is at i / streams).
    watchers: Vec<WatcherState>,
    /// Watch id -> position.
    ids: HashMap<i64, usize>,
    answered: usize,
    hist: Histogram<u64>,
    errors: HashMap<String, u64>,
    duplicates: u64,
    out_of_order: u64,
    /// The first out-of-order delivery: watch id, revision, after revision.
    out_of_order_first: Option<(i64, i64, i64)>,
}

impl StreamState {
    fn error(&mut self, kind: impl Into<String>, n: u64) {
        *self.errors.entry(kind.into()).or_default() += n;
    }

    fn on_response(&mut self, r: WatchResponse, now: u64, keys: &[Vec<u8>], prog: &Progress) {
        if r.created {
            let pos = self.answered;
            self.answered += 1;
            prog.answered.fetch_add(1, Ordering::Relaxed);
            if pos >= self.watchers.len() {
                self.error("created response nobody asked for", 1);
            } else if r.canceled || r.watch_id < 0 {
                self.error(format!("create refused: {}", r.cancel_reason), 1);
            } else if self.ids.insert(r.watch_id, pos).is_some() {
                self.error("watch id given twice on a stream", 1);
            } else {
                self.watchers[pos].created = true;
            }
            return;
        }
        if r.canceled {
            let kind = format!(
                "watch canceled by the server: {:?} (compact revision {})",
                r.cancel_reason, r.compact_revision
            );
            self.error(kind, 1);
            return;
        }
        if r.events.is_empty() {
            return; // progress notification
        }
        let Some(&pos) = self.ids.get(&r.watch_id) else {
            self.error("events for an unknown watch id", r.events.len() as u64);
            return;
        };
        for e in r.events {
            self.on_event(r.watch_id, pos, e, now, keys, prog);
        }
    }

    fn on_event(
        &mut self,
        id: i64,
        pos: usize,
        e: Event,
        now: u64,
        keys: &[Vec<u8>],
        prog: &Progress,
    ) {
        let w = &mut self.watchers[pos];
        let Some(kv) = e.kv else {
            self.error("event without a key-value", 1);
            return;
        };
        if e.r#type != EventType::Put as i32 {
            self.error("event of a type never written (delete)", 1);
            return;
        }
        if kv.key != keys[w.key] {
            self.error("event for a key the watcher does not watch", 1);
            return;
        }
        let Some((seq, sent)) = decode_value(&kv.value) else {
            self.error("event with a value the writer never wrote", 1);
            return;
        };
        if !w.seen.insert(seq) {
            self.duplicates += 1;
            return;
        }
        let after = w.last_rev;
        w.last_rev = w.last_rev.max(kv.mod_revision);
        prog.delivered.fetch_add(1, Ordering::Relaxed);
        if kv.mod_revision <= after {
            self.out_of_order += 1;
            self.out_of_order_first
                .get_or_insert((id, kv.mod_revision, after));
        }
        self.hist
            .saturating_record((now.saturating_sub(sent) / 1000).max(1));
    }
}

fn lock(st: &Mutex<StreamState>) -> MutexGuard<'_, StreamState> {
    st.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn reader(
    channel: Channel,
    rx: mpsc::Receiver<WatchRequest>,
    st: Arc<Mutex<StreamState>>,
    keys: Arc<Vec<Vec<u8>>>,
    prog: Arc<Progress>,
) {
    let mut responses = match WatchClient::new(channel).watch(Requests(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            lock(&st).error(format!("watch stream refused: {}", status_kind(&s)), 1);
            return;
        }
    };
    loop {
        let m = responses.message().await;
        let now = now_ns();
        let mut st = lock(&st);
        match m {
            Ok(Some(r)) => st.on_response(r, now, &keys, &prog),
            Ok(None) => {
                st.error("watch stream ended by the server", 1);
                return;
            }
            Err(s) => {
                st.error(format!("watch stream failed: {}", status_kind(&s)), 1);
                return;
            }
        }
    }
}

/// The open streams; dropping the senders and aborting the readers closes
/// them.
struct Streams {
    senders: Vec<mpsc::Sender<WatchRequest>>,
    readers: Vec<JoinHandle<()>>,
    states: Vec<Arc<Mutex<StreamState>>>,
}

impl Streams {
    fn close(&mut self) {
        self.senders.clear();
        for r in &self.readers {
            r.abort();
        }
    }

    fn errors(&self) -> Vec<(String, u64)> {
        let mut all: HashMap<String, u64> = HashMap::new();
        for st in &self.states {
            for (k, n) in &lock(st).errors {
                *all.entry(k.clone()).or_default() += n;
            }
        }
        sorted(all)
    }
}

fn sorted(m: HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

fn open_streams(
    cfg: &Config,
    channels: &[Channel],
    keys: &Arc<Vec<Vec<u8>>>,
    prog: &Arc<Progress>,
) -> Streams {
    let mut streams = Streams {
        senders: Vec::with_capacity(cfg.streams),
        readers: Vec::with_capacity(cfg.streams),
        states: Vec::with_capacity(cfg.streams),
    };
    for s in 0..cfg.streams {
        let mine: Vec<usize> = (s..cfg.watchers).step_by(cfg.streams).collect();
        let st = Arc::new(Mutex::new(StreamState {
            watchers: mine
                .iter()
                .map(|&i| WatcherState {
                    key: i % cfg.keys,
                    created: false,
                    last_rev: 0,
                    seen: HashSet::new(),
                })
                .collect(),
            ids: HashMap::new(),
            answered: 0,
            hist: new_hist(),
            errors: HashMap::new(),
            duplicates: 0,
            out_of_order: 0,
            out_of_order_first: None,
        }));
        let (tx, rx) = mpsc::channel(CREATES_QUEUED_MAX);
        let creates: Vec<WatchRequest> = mine
            .iter()
            .map(|&i| cfg.create_request(i, &keys[i % cfg.keys]))
            .collect();
        let feeder = tx.clone();
        tokio::spawn(async move {
            for c in creates {
                if feeder.send(c).await.is_err() {
                    return;
                }
            }
        });
        streams.readers.push(tokio::spawn(reader(
            channels[s % channels.len()].clone(),
            rx,
            st.clone(),
            keys.clone(),
            prog.clone(),
        )));
        streams.senders.push(tx);
        streams.states.push(st);
    }
    streams
}

/// Waits until every create is answered; an error says how far it got.
async fn wait_created(cfg: &Config, streams: &Streams, prog: &Progress) -> Result<(), String> {
    let start = Instant::now();
    let mut last = 0;
    let mut last_progress = Instant::now();
    loop {
        let answered = prog.answered.load(Ordering::Relaxed);
        if answered >= cfg.watchers as u64 {
            return Ok(());
        }
        if answered != last {
            last = answered;
            last_progress = Instant::now();
        }
        let why = if start.elapsed() >= cfg.setup {
            Some(format!("--setup-secs {}", cfg.setup.as_secs()))
        } else if last_progress.elapsed() >= cfg.stall {
            Some(format!("no progress for {} s", cfg.stall.as_secs()))
        } else {
            None
        };
        if let Some(why) = why {
            let errs: Vec<String> = streams
                .errors()
                .iter()
                .map(|(k, n)| format!("{n} x {k}"))
                .collect();
            return Err(format!(
                "only {answered} of {} watch creates answered after {:.1} s ({why}); errors: {}",
                cfg.watchers,
                start.elapsed().as_secs_f64(),
                if errs.is_empty() {
                    "none".to_string()
                } else {
                    errs.join("; ")
                }
            ));
        }
        tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
    }
}

/// What the writer did.
struct Puts {
    /// Per put number: PUT_PENDING (never sent, or no answer in time),
    /// PUT_OK, PUT_FAILED.
    state: Arc<Vec<AtomicU8>>,
    issued: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
    errors: HashMap<String, u64>,
}

async fn write(cfg: &Config, kv: KvClient<Channel>, keys: &Arc<Vec<Vec<u8>>>) -> Puts {
    let n = cfg.puts_scheduled();
    let state: Arc<Vec<AtomicU8>> = Arc::new((0..n).map(|_| AtomicU8::new(PUT_PENDING)).collect());
    let stats = Arc::new(Mutex::new((new_hist(), HashMap::<String, u64>::new())));
    let permits = Arc::new(Semaphore::new(PUTS_IN_FLIGHT_MAX));
    let start = Instant::now();
    let end = start + cfg.duration;
    let mut issued = 0u64;
    for seq in 0..n {
        let at = start + Duration::from_secs_f64(seq as f64 / cfg.rate);
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        if Instant::now() >= end && seq > 0 {
            break; // behind schedule: the rate shows it
        }
        issued += 1;
        let mut kv = kv.clone();
        let key = keys[seq % keys.len()].clone();
        let (state, stats, stall) = (state.clone(), stats.clone(), cfg.stall);
        tokio::spawn(async move {
            let sent = now_ns();
            let req = PutRequest {
                key,
                value: encode_value(seq as u64, sent),
                ..Default::default()
            };
            let t = Instant::now();
            let r = tokio::time::timeout(stall, kv.put(req)).await;
            let us = t.elapsed().as_micros() as u64;
            let (outcome, kind) = match r {
                Ok(Ok(resp))
                    if resp
                        .get_ref()
                        .header
                        .as_ref()
                        .is_some_and(|h| h.revision > 0) =>
                {
                    (PUT_OK, None)
                }
                Ok(Ok(_)) => (
                    PUT_FAILED,
                    Some("put: wrong answer (no revision)".to_string()),
                ),
                Ok(Err(s)) => (PUT_FAILED, Some(format!("put: {}", status_kind(&s)))),
                Err(_) => (
                    PUT_PENDING,
                    Some(format!("put: no answer in {} s", stall.as_secs())),
                ),
            };
            state[seq].store(outcome, Ordering::Release);
            let mut st = stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match kind {
                None => st.0.saturating_record(us.max(1)),
                Some(k) => *st.1.entry(k).or_default() += 1,
            }
            drop(permit);
        });
    }
    // Every put ends within --stall-secs, answered or not.
    let _all = permits
        .acquire_many(PUTS_IN_FLIGHT_MAX as u32)
        .await
        .expect("semaphore never closed");
    let elapsed = start.elapsed();
    let (hist, errors) = std::mem::replace(
        &mut *stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        (new_hist(), HashMap::new()),
    );
    Puts {
        state,
        issued,
        elapsed,
        hist,
        errors,
    }
}

/// Waits until `expected` first deliveries arrived (then listens
/// [`DRAIN_GRACE_MS`] longer for duplicates) or none arrived for
/// `--stall-secs`. Returns when the last delivery was seen (to within a
/// tick).
async fn drain(cfg: &Config, prog: &Progress, expected: u64) -> Instant {
    let mut last = u64::MAX;
    let mut last_progress = Instant::now();
    loop {
        let got = prog.delivered.load(Ordering::Relaxed);
        if got >= expected {
            let done = Instant::now();
            tokio::time::sleep(Duration::from_millis(DRAIN_GRACE_MS)).await;
            return done;
        }
        if got != last {
            last = got;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= cfg.stall {
            return last_progress;
        }
        tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
    }
}

/// Server RSS readings (bytes).
#[derive(Default)]
struct Rss {
    before: Option<u64>,
    created: Option<u64>,
    /// After the puts (latency mode) or after closing (memory mode).
    end: Option<u64>,
}

impl Rss {
    fn per_watcher(&self, watchers: usize) -> Option<f64> {
        Some((self.created? as f64 - self.before? as f64) / watchers as f64)
    }
}

/// The event side of a latency run.
struct Events {
    puts: Puts,
    expected: u64,
    delivered: u64,
    missing: u64,
    duplicates: u64,
    out_of_order: u64,
    /// The first out-of-order delivery seen, described.
    out_of_order_example: Option<String>,
    /// Deliveries of puts that failed or got no answer (not errors: such a
    /// put may have been applied).
    unacknowledged: u64,
    hist: Histogram<u64>,
    /// Writer start to the last delivery.
    delivering: Duration,
    /// Writer start to the end of the drain (the CPU figures' window).
    elapsed: Duration,
    client_cpu: Duration,
    server_cpu: Option<Duration>,
    machine_busy: Duration,
    steal: Duration,
}

struct Report {
    setup: Duration,
    created: u64,
    rss: Rss,
    events: Option<Events>,
    errors: Vec<(String, u64)>,
}

/// Entry point for `watch`.
pub fn main(args: &[String]) -> Result<(), String> {
    let cfg = Config::parse(args)?;
    let rt = if cfg.threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("tokio runtime: {e}"))?;
    let report = rt.block_on(run(&cfg))?;
    // The readers were aborted; dropping the runtime drops the connections.
    drop(rt);
    if cfg.json {
        println!("{}", report.json(&cfg));
    } else {
        print!("{}", report.text(&cfg));
    }
    Ok(())
}

async fn run(cfg: &Config) -> Result<Report, String> {
    now_ns();
    let keys: Arc<Vec<Vec<u8>>> = Arc::new((0..cfg.keys).map(|k| cfg.key(k)).collect());
    let mut channels = Vec::with_capacity(cfg.conns);
    for c in 0..cfg.conns {
        channels.push(connect_channel(&cfg.endpoints[c % cfg.endpoints.len()]).await?);
    }
    let writer = if cfg.memory_only {
        None
    } else {
        Some(KvClient::new(connect_channel(&cfg.endpoints[0]).await?))
    };
    let rss = |pid: Option<i32>| pid.map(rss_bytes).transpose();
    let mut rss_now = Rss {
        before: rss(cfg.server_pid)?,
        ..Rss::default()
    };
    let prog = Arc::new(Progress::default());
    let start = Instant::now();
    let mut streams = open_streams(cfg, &channels, &keys, &prog);
    if let Err(e) = wait_created(cfg, &streams, &prog).await {
        streams.close();
        return Err(e);
    }
    let setup = start.elapsed();
    tokio::time::sleep(cfg.settle).await;
    rss_now.created = rss(cfg.server_pid)?;
    let created: u64 = streams
        .states
        .iter()
        .map(|st| lock(st).watchers.iter().filter(|w| w.created).count() as u64)
        .sum();

    let events = match writer {
        None => {
            streams.close();
            drop(channels);
            tokio::time::sleep(cfg.settle).await;
            rss_now.end = rss(cfg.server_pid)?;
            None
        }
        Some(kv) => {
            let server_before = cfg.server_pid.map(proc_cpu).transpose()?;
            let machine_before = machine_cpu()?;
            let cpu_before = self_cpu();
            let t = Instant::now();
            let puts = write(cfg, kv, &keys).await;
            // Acknowledged puts per key, then the events they owe.
            let mut ok_on_key = vec![0u64; cfg.keys];
            for (seq, s) in puts.state.iter().enumerate() {
                if s.load(Ordering::Acquire) == PUT_OK {
                    ok_on_key[seq % cfg.keys] += 1;
                }
            }
            let expected: u64 = streams
                .states
                .iter()
                .flat_map(|st| {
                    lock(st)
                        .watchers
                        .iter()
                        .filter(|w| w.created)
                        .map(|w| ok_on_key[w.key])
                        .collect::<Vec<_>>()
                })
                .sum();
            let done = drain(cfg, &prog, expected).await;
            let delivering = done.duration_since(t);
            let elapsed = t.elapsed();
            let client_cpu = self_cpu().saturating_sub(cpu_before);
            let machine_after = machine_cpu()?;
            let server_cpu = match (cfg.server_pid, server_before) {
                (Some(pid), Some(b)) => proc_cpu(pid).ok().map(|c| c.saturating_sub(b)),
                _ => None,
            };
            rss_now.end = cfg.server_pid.and_then(|p| rss_bytes(p).ok());
            streams.close();
            let mut ev = Events {
                expected,
                delivered: 0,
                missing: 0,
                duplicates: 0,
                out_of_order: 0,
                out_of_order_example: None,
                unacknowledged: 0,
                hist: new_hist(),
                delivering,
                elapsed,
                client_cpu,
                server_cpu,
                machine_busy: machine_after.busy.saturating_sub(machine_before.busy),
                steal: machine_after.steal.saturating_sub(machine_before.steal),
                puts,
            };
            for (s, st) in streams.states.iter().enumerate() {
                let st = lock(st);
                if let (None, Some((id, rev, after))) =
                    (&ev.out_of_order_example, st.out_of_order_first)
                {
                    ev.out_of_order_example = Some(format!(
                        "stream {s}, watch id {id}: revision {rev} after revision {after}"
                    ));
                }
                ev.hist
                    .add(&st.hist)
                    .map_err(|e| format!("histogram: {e:?}"))?;
                ev.duplicates += st.duplicates;
                ev.out_of_order += st.out_of_order;
                for w in st.watchers.iter().filter(|w| w.created) {
                    for &seq in &w.seen {
                        let ok = ev
                            .puts
                            .state
                            .get(seq as usize)
                            .map(|s| s.load(Ordering::Acquire));
                        if ok == Some(PUT_OK) {
                            ev.delivered += 1;
                        } else {
                            ev.unacknowledged += 1;
                        }
                    }
                }
            }
            ev.missing = ev.expected - ev.delivered;
            Some(ev)
        }
    };
    let mut errors: HashMap<String, u64> = streams.errors().into_iter().collect();
    if let Some(ev) = &events {
        for (k, n) in &ev.puts.errors {
            *errors.entry(k.clone()).or_default() += n;
        }
        for (k, n) in [
            ("missing event", ev.missing),
            ("duplicate event", ev.duplicates),
            ("event out of revision order", ev.out_of_order),
        ] {
            if n > 0 {
                *errors.entry(k.to_string()).or_default() += n;
            }
        }
    }
    Ok(Report {
        setup,
        created,
        rss: rss_now,
        events,
        errors: sorted(errors),
    })
}

fn opt_json<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("null".to_string(), |v| v.to_string())
}

fn mib(v: Option<u64>) -> String {
    v.map_or("n/a".to_string(), |b| {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    })
}

impl Report {
    fn error_total(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }

    fn lat(h: &Histogram<u64>) -> [(&'static str, u64); 5] {
        [
            ("p50", h.value_at_quantile(0.5)),
            ("p90", h.value_at_quantile(0.9)),
            ("p99", h.value_at_quantile(0.99)),
            ("p99.9", h.value_at_quantile(0.999)),
            ("max", h.max()),
        ]
    }

    fn json(&self, cfg: &Config) -> String {
        let endpoints: Vec<String> = cfg.endpoints.iter().map(|e| json_str(e)).collect();
        let kinds: Vec<String> = self
            .errors
            .iter()
            .map(|(k, n)| format!("{}:{n}", json_str(k)))
            .collect();
        let per_watcher = self
            .rss
            .per_watcher(cfg.watchers)
            .map(|v| format!("{v:.1}"));
        let mut out =
            format!(
            "{{\"workload\":\"{}\",\"endpoints\":[{}],\"conns\":{},\"streams\":{},\"watchers\":{},\
\"keys\":{},\"kind\":\"{}\",\"threads\":{},\"created\":{},\"setup_s\":{:.3},\
\"rss_bytes\":{{\"before\":{},\"created\":{},\"end\":{}}},\"rss_bytes_per_watcher\":{},\
\"errors\":{},\"error_kinds\":{{{}}},\"server_pid\":{}",
            if cfg.memory_only { "watch-memory" } else { "watch" },
            endpoints.join(","),
            cfg.conns,
            cfg.streams,
            cfg.watchers,
            cfg.keys,
            cfg.kind.name(),
            cfg.threads,
            self.created,
            self.setup.as_secs_f64(),
            opt_json(self.rss.before),
            opt_json(self.rss.created),
            opt_json(self.rss.end),
            opt_json(per_watcher),
            self.error_total(),
            kinds.join(","),
            opt_json(cfg.server_pid),
        );
        if let Some(ev) = &self.events {
            let p = &ev.puts;
            let lat: Vec<String> = Self::lat(&ev.hist)
                .iter()
                .map(|(k, v)| format!("{}:{v}", json_str(k)))
                .chain(std::iter::once(format!("\"mean\":{:.1}", ev.hist.mean())))
                .collect();
            let put_lat: Vec<String> = Self::lat(&p.hist)
                .iter()
                .map(|(k, v)| format!("{}:{v}", json_str(k)))
                .collect();
            let ok = p.hist.len();
            let (other, steal) = ev.other_and_steal_cores();
            out += &format!(
                ",\"rate\":{},\"duration_s\":{:.3},\"puts\":{{\"scheduled\":{},\"issued\":{},\"ok\":{ok},\
\"elapsed_s\":{:.3},\"rate\":{:.1},\"latency_us\":{{{}}}}},\"events\":{{\"expected\":{},\
\"delivered\":{},\"missing\":{},\"duplicate\":{},\"out_of_order\":{},\"out_of_order_example\":{},\
\"unacknowledged_puts\":{}}},\
\"events_per_s\":{:.1},\"latency_us\":{{{}}},\"elapsed_s\":{:.3},\"client_cpu_us_per_put\":{:.2},\
\"server_cpu_us_per_put\":{},\"other_cpu_cores\":{other:.2},\"steal_cores\":{steal:.2}",
                cfg.rate,
                cfg.duration.as_secs_f64(),
                cfg.puts_scheduled(),
                p.issued,
                p.elapsed.as_secs_f64(),
                p.issued as f64 / p.elapsed.as_secs_f64().max(1e-9),
                put_lat.join(","),
                ev.expected,
                ev.delivered,
                ev.missing,
                ev.duplicates,
                ev.out_of_order,
                opt_json(ev.out_of_order_example.as_deref().map(json_str)),
                ev.unacknowledged,
                (ev.delivered + ev.unacknowledged) as f64 / ev.delivering.as_secs_f64().max(1e-9),
                lat.join(","),
                ev.elapsed.as_secs_f64(),
                per_req_us(ev.client_cpu, p.issued),
                opt_json(ev.server_cpu.map(|c| format!("{:.2}", per_req_us(c, p.issued)))),
            );
        }
        out.push('}');
        out
    }

    fn text(&self, cfg: &Config) -> String {
        let mut out = format!(
            "{} {} watchers ({} keys) over {} streams on {} conns: created {} in {:.2} s\n",
            cfg.watchers,
            cfg.kind.name(),
            cfg.keys,
            cfg.streams,
            cfg.conns,
            self.created,
            self.setup.as_secs_f64()
        );
        if let Some(pid) = cfg.server_pid {
            out += &format!(
                "server RSS (pid {pid}): before {}, all created {}, {} {}",
                mib(self.rss.before),
                mib(self.rss.created),
                if cfg.memory_only { "closed" } else { "end" },
                mib(self.rss.end),
            );
            if let Some(b) = self.rss.per_watcher(cfg.watchers) {
                out += &format!("; {b:.0} bytes per watcher");
            }
            out += "\n";
        }
        if let Some(ev) = &self.events {
            let p = &ev.puts;
            out += &format!(
                "puts: {} of {} scheduled in {:.2} s ({:.1}/s, asked {}/s), {} acknowledged; put latency us: {}\n",
                p.issued,
                cfg.puts_scheduled(),
                p.elapsed.as_secs_f64(),
                p.issued as f64 / p.elapsed.as_secs_f64().max(1e-9),
                cfg.rate,
                p.hist.len(),
                Self::lat(&p.hist)
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            out += &format!(
                "events: {} expected, {} delivered, {} missing, {} duplicate, {} out of order; {} for unacknowledged puts; {:.1} events/s\n",
                ev.expected,
                ev.delivered,
                ev.missing,
                ev.duplicates,
                ev.out_of_order,
                ev.unacknowledged,
                (ev.delivered + ev.unacknowledged) as f64 / ev.delivering.as_secs_f64().max(1e-9)
            );
            if let Some(x) = &ev.out_of_order_example {
                out += &format!("first out-of-order event: {x}\n");
            }
            out += &format!(
                "put-to-event latency us: {}, mean {:.1}\n",
                Self::lat(&ev.hist)
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                ev.hist.mean()
            );
            out += &format!(
                "generator CPU: {:.2} us/put\n",
                per_req_us(ev.client_cpu, p.issued)
            );
            if let (Some(pid), Some(c)) = (cfg.server_pid, ev.server_cpu) {
                out += &format!(
                    "server CPU (pid {pid}): {:.2} us/put (utime+stime, puts and their events)\n",
                    per_req_us(c, p.issued)
                );
            }
            let (other, steal) = ev.other_and_steal_cores();
            out += &format!("machine: other CPU {other:.2} cores, steal {steal:.2} cores\n");
        }
        if self.errors.is_empty() {
            out += "errors: none\n";
        } else {
            out += &format!("errors: {}\n", self.error_total());
            for (k, n) in &self.errors {
                out += &format!("  {n:>8}  {k}\n");
            }
        }
        out
    }
}

impl Events {
    /// As in `load`: CPUs used by everything but the generator and the
    /// server, and CPUs stolen, averaged over the timed phase.
    fn other_and_steal_cores(&self) -> (f64, f64) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ours = self.client_cpu + self.server_cpu.unwrap_or_default();
        let other = self.machine_busy.as_secs_f64() - self.steal.as_secs_f64() - ours.as_secs_f64();
        (other.max(0.0) / secs, self.steal.as_secs_f64() / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::args::test_args as args;

    #[test]
    fn config_defaults_and_checks() {
        let c = Config::parse(&[]).unwrap();
        assert_eq!((c.watchers, c.streams, c.conns, c.keys), (1, 1, 1, 1));
        assert_eq!(c.kind, Kind::Key);
        assert_eq!(c.puts_scheduled(), 10_000);
        let c = Config::parse(&args(&["--watchers", "10", "--streams", "3", "--mixed"])).unwrap();
        assert_eq!(c.keys, 10);
        assert!(c.kind.is_prefix(1) && !c.kind.is_prefix(2));
        assert!(Config::parse(&args(&["--watchers", "2", "--streams", "3"])).is_err());
        assert!(Config::parse(&args(&["--streams", "1", "--conns", "2"])).is_err());
        assert!(Config::parse(&args(&["--watchers", "2", "--keys", "3"])).is_err());
        assert!(Config::parse(&args(&["--watch-prefix", "--mixed"])).is_err());
        assert!(Config::parse(&args(&["--memory-only", "--rate", "5"])).is_err());
        assert!(Config::parse(&args(&["--rate", "0"])).is_err());
    }

    #[test]
    fn keys_have_equal_width_and_prefix_watchers_a_range_end() {
        let c = Config::parse(&args(&["--watchers", "25", "--keys", "11"])).unwrap();
        assert_eq!(c.key(3), b"/ferrocd-perf/watch/03");
        assert_eq!(c.key(10), b"/ferrocd-perf/watch/10");
        let req = c.create_request(0, &c.key(0));
        let Some(RequestUnion::CreateRequest(cr)) = req.request_union else {
            panic!()
        };
        assert!(cr.range_end.is_empty());
        let c = Config::parse(&args(&["--watch-prefix"])).unwrap();
        let Some(RequestUnion::CreateRequest(cr)) = c.create_request(0, b"k/7").request_union
        else {
            panic!()
        };
        assert_eq!(cr.range_end, b"k/8");
    }

    #[test]
    fn values_round_trip_and_prefix_ends() {
        let v = encode_value(12345, 987_654_321_000);
        assert_eq!(v.len(), VALUE_BYTES);
        assert_eq!(decode_value(&v), Some((12345, 987_654_321_000)));
        assert_eq!(decode_value(b"short"), None);
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), [0]);
    }

    #[test]
    fn deliveries_are_checked() {
        use ferrocd_proto::mvccpb::KeyValue;
        let keys = vec![b"k0".to_vec(), b"k1".to_vec()];
        let prog = Progress::default();
        let mut st = StreamState {
            watchers: vec![WatcherState {
                key: 1,
                created: false,
                last_rev: 0,
                seen: HashSet::new(),
            }],
            ids: HashMap::new(),
            answered: 0,
            hist: new_hist(),
            errors: HashMap::new(),
            duplicates: 0,
            out_of_order: 0,
            out_of_order_first: None,
        };
        st.on_response(
            WatchResponse {
                created: true,
                watch_id: 5,
                ..Default::default()
            },
            0,
            &keys,
            &prog,
        );
        assert!(st.watchers[0].created);
        let ev = |key: &[u8], seq: u64, rev: i64| Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.to_vec(),
                value: encode_value(seq, 1_000),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        };
        let resp = |events| WatchResponse {
            watch_id: 5,
            events,
            ..Default::default()
        };
        st.on_response(resp(vec![ev(b"k1", 1, 10)]), 2_000_000, &keys, &prog);
        st.on_response(resp(vec![ev(b"k1", 1, 10)]), 2_000_000, &keys, &prog);
        st.on_response(resp(vec![ev(b"k1", 3, 9)]), 2_000_000, &keys, &prog);
        st.on_response(resp(vec![ev(b"k0", 0, 11)]), 2_000_000, &keys, &prog);
        st.on_response(
            WatchResponse {
                watch_id: 6,
                events: vec![ev(b"k1", 5, 12)],
                ..Default::default()
            },
            0,
            &keys,
            &prog,
        );
        assert_eq!(prog.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(st.duplicates, 1);
        assert_eq!(st.out_of_order, 1);
        assert_eq!(st.out_of_order_first, Some((5, 9, 10)));
        assert_eq!(st.errors.len(), 2, "{:?}", st.errors);
        assert_eq!(st.hist.len(), 2);
        assert!(
            st.hist.max() >= 1_995 && st.hist.max() <= 2_000,
            "{}",
            st.hist.max()
        );
    }
}
