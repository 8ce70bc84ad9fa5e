//! The load generator (`put`, `range`, `txn-put`, `mixed`), modelled on
//! etcd's `benchmark` tool: `--clients` concurrent requests spread
//! round-robin over `--conns` HTTP/2 connections (tonic `Channel`s), each
//! client issuing its next request as soon as the previous one is answered
//! (or, with `--rate`, at its scheduled time), until `--total` requests were
//! issued or `--duration` seconds passed.
//!
//! Workloads: `put` (random keys, or key i for request i with
//! `--sequential`); `range` (single-key get of pre-put keys, linearizable or
//! serializable); `txn-put`, the Kubernetes optimistic update (Txn: if
//! mod_revision(key) == the revision last seen for it, put, else get it), the
//! last seen revisions shared by all clients like a watch cache; `mixed`
//! (`--read-percent` gets, the rest puts, over pre-put keys).
//!
//! Every answer is checked (a put must carry a header with revision > 0; a
//! range must return exactly the key asked for, with its value and count 1;
//! a txn-put that succeeded must report a revision above the one compared,
//! one that failed must return the key with a different mod_revision); a
//! wrong answer counts as the error kind `wrong-answer`. Failed compares
//! are correct answers and are counted as conflicts. Latency of the
//! correct answers goes into an HDR histogram (1 µs .. 60 s, 3 significant
//! digits). The generator's own CPU (getrusage user+sys) and, given
//! `--server-pid`, the server's CPU (/proc/PID/stat utime+stime) are measured
//! over the timed phase only and divided by the requests completed in it.
//!
//! A watchdog ends the run if no request completes for `--stall-secs`: the
//! clients still waiting are aborted and reported as stalled, so the tool
//! always stops by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    response_op::Response,
    Compare, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    TxnRequest, TxnResponse,
};
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

use crate::args::Flags;
use crate::grpc;

pub const USAGE: &str = "\
usage: ferrocd-perf put|range|txn-put|mixed [flags]
  --endpoints LIST      comma list of host:port or http://host:port (default 127.0.0.1:2379)
  --conns N             HTTP/2 connections (default 1)
  --clients N           concurrent requests in flight, spread over conns (default 1)
  --total N             requests to issue (default 10000)
  --duration SECS       run for SECS seconds instead of --total
  --key-size B          key bytes (default 8)
  --val-size B          value bytes (default 8)
  --key-space N         distinct keys (default 100000 for put and txn-put; range and
                        mixed put N keys first, default 1000)
  --consistency s|l     range and mixed reads: serializable or linearizable (default l)
  --read-percent P      mixed only: percent of requests that are gets (default 50)
  --rate R              issue R requests/s in all (each at its scheduled time) instead
                        of as fast as answers come back
  --sequential          put only: request i writes key i (fills the key space once
                        with --total = --key-space)
  --server-pid PID      also report the server's CPU per request
  --threads N           tokio worker threads; 0 = current-thread runtime (default 0)
  --transport h2|tonic  h2: the lean client in grpc.rs (default); tonic: tonic's Channel
  --stall-secs S        abort if no request completes for S seconds (default 10)
  --json                print one JSON object";

const VALUED: &[&str] = &[
    "--endpoints",
    "--conns",
    "--clients",
    "--total",
    "--duration",
    "--key-size",
    "--val-size",
    "--key-space",
    "--consistency",
    "--read-percent",
    "--rate",
    "--server-pid",
    "--threads",
    "--stall-secs",
    "--transport",
];
const SWITCHES: &[&str] = &["--json", "--sequential"];

const TOTAL_DEFAULT: u64 = 10_000;
const KEY_SPACE_PUT_DEFAULT: usize = 100_000;
const KEY_SPACE_RANGE_DEFAULT: usize = 1_000;
const CONNS_MAX: usize = 1_024;
const CLIENTS_MAX: usize = 100_000;
const KEY_SPACE_MAX: usize = 100_000_000;
const VAL_SIZE_MAX_BYTES: usize = 1 << 20;
const THREADS_MAX: usize = 64;
const READ_PERCENT_DEFAULT: u8 = 50;
const RATE_MAX: f64 = 10_000_000.0;
const STALL_SECS_DEFAULT: u64 = 10;
pub(crate) const LATENCY_MAX_US: u64 = 60_000_000;
pub(crate) const LATENCY_SIGFIG: u8 = 3;
/// How often the watchdog looks at progress when no client has finished.
const WATCHDOG_TICK_MS: u64 = 200;
const CONNECT_TIMEOUT_SECS: u64 = 5;
/// Error messages longer than this are cut before becoming an error kind.
const ERROR_KIND_MAX_CHARS: usize = 200;

#[derive(Clone, Copy)]
enum Op {
    Put,
    Range {
        serializable: bool,
    },
    TxnPut,
    Mixed {
        read_percent: u8,
        serializable: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Transport {
    H2,
    Tonic,
}

#[derive(Clone, Copy)]
enum Stop {
    Total(u64),
    Duration(Duration),
}

struct Config {
    op: Op,
    endpoints: Vec<String>,
    conns: usize,
    clients: usize,
    stop: Stop,
    key_size: usize,
    val_size: usize,
    key_space: usize,
    rate: Option<f64>,
    sequential: bool,
    server_pid: Option<i32>,
    threads: usize,
    transport: Transport,
    stall: Duration,
    json: bool,
}

impl Config {
    fn parse(cmd: &str, args: &[String]) -> Result<Config, String> {
        let f = Flags::parse(args, VALUED, SWITCHES)?;
        let serializable = match f.raw("--consistency") {
            None | Some("l") => false,
            Some("s") => true,
            Some(c) => return Err(format!("--consistency must be s or l, not {c:?}")),
        };
        let op = match cmd {
            "put" => Op::Put,
            "range" => Op::Range { serializable },
            "txn-put" => Op::TxnPut,
            "mixed" => Op::Mixed {
                read_percent: f.get("--read-percent", READ_PERCENT_DEFAULT)?,
                serializable,
            },
            _ => return Err(format!("unknown command {cmd:?}")),
        };
        if f.raw("--consistency").is_some() && !matches!(op, Op::Range { .. } | Op::Mixed { .. }) {
            return Err("--consistency is for range and mixed".into());
        }
        if f.raw("--read-percent").is_some() && !matches!(op, Op::Mixed { .. }) {
            return Err("--read-percent is for mixed".into());
        }
        if let Op::Mixed { read_percent, .. } = op {
            in_range("--read-percent", read_percent.into(), 0, 100)?;
        }
        let sequential = f.switch("--sequential");
        if sequential && !matches!(op, Op::Put) {
            return Err("--sequential is for put".into());
        }
        let rate = f.opt::<f64>("--rate")?;
        if let Some(r) = rate {
            if !(r > 0.0 && r <= RATE_MAX) {
                return Err(format!("--rate must be > 0 and <= {RATE_MAX}"));
            }
        }
        let endpoints = crate::lease::parse_endpoints(&f)?;
        let stop = match (f.opt::<u64>("--total")?, f.opt::<f64>("--duration")?) {
            (Some(_), Some(_)) => return Err("give --total or --duration, not both".into()),
            (Some(0), _) => return Err("--total must be > 0".into()),
            (Some(n), None) => Stop::Total(n),
            (None, Some(s)) if s > 0.0 && s.is_finite() => {
                Stop::Duration(Duration::from_secs_f64(s))
            }
            (None, Some(_)) => return Err("--duration must be > 0".into()),
            (None, None) => Stop::Total(TOTAL_DEFAULT),
        };
        let key_space_default = match op {
            Op::Put | Op::TxnPut => KEY_SPACE_PUT_DEFAULT,
            Op::Range { .. } | Op::Mixed { .. } => KEY_SPACE_RANGE_DEFAULT,
        };
        let cfg = Config {
            op,
            endpoints,
            conns: f.get("--conns", 1)?,
            clients: f.get("--clients", 1)?,
            stop,
            key_size: f.get("--key-size", 8)?,
            val_size: f.get("--val-size", 8)?,
            key_space: f.get("--key-space", key_space_default)?,
            rate,
            sequential,
            server_pid: f.opt("--server-pid")?,
            threads: f.get("--threads", 0)?,
            transport: match f.raw("--transport").unwrap_or("h2") {
                "h2" => Transport::H2,
                "tonic" => Transport::Tonic,
                t => return Err(format!("--transport must be h2 or tonic, not {t:?}")),
            },
            stall: Duration::from_secs(f.get("--stall-secs", STALL_SECS_DEFAULT)?.max(1)),
            json: f.switch("--json"),
        };
        in_range("--conns", cfg.conns, 1, CONNS_MAX)?;
        in_range("--clients", cfg.clients, 1, CLIENTS_MAX)?;
        in_range("--key-space", cfg.key_space, 1, KEY_SPACE_MAX)?;
        in_range("--val-size", cfg.val_size, 0, VAL_SIZE_MAX_BYTES)?;
        in_range("--threads", cfg.threads, 0, THREADS_MAX)?;
        let digits = (cfg.key_space - 1).to_string().len();
        if cfg.key_size < digits {
            return Err(format!(
                "--key-size {} cannot hold {} distinct keys (needs {digits})",
                cfg.key_size, cfg.key_space
            ));
        }
        Ok(cfg)
    }
}

pub(crate) fn in_range(name: &str, v: usize, lo: usize, hi: usize) -> Result<(), String> {
    if v < lo || v > hi {
        return Err(format!("{name} must be {lo}..={hi}"));
    }
    Ok(())
}

pub(crate) fn endpoint_uri(e: &str) -> Result<String, String> {
    if e.starts_with("https://") {
        return Err(format!("{e}: TLS is not supported"));
    }
    let host_port = e.strip_prefix("http://").unwrap_or(e);
    if host_port.is_empty() || host_port.contains('/') {
        return Err(format!("bad endpoint {e:?}"));
    }
    Ok(format!("http://{host_port}"))
}

/// Entry point for `put`, `range`, `txn-put` and `mixed`.
pub fn main(cmd: &str, args: &[String]) -> Result<(), String> {
    let cfg = Config::parse(cmd, args)?;
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
    if cfg.json {
        println!("{}", report.json(&cfg));
    } else {
        print!("{}", report.text(&cfg));
    }
    Ok(())
}

/// What one request came back with.
enum Outcome {
    Correct,
    /// A correct answer to a txn-put whose compare failed.
    Conflict,
    Wrong,
    Failed(tonic::Status),
}

/// Per-client results; behind a mutex only so that the watchdog can still
/// read them after aborting a stuck client (never contended otherwise).
struct Stats {
    hist: Histogram<u64>,
    ok: u64,
    conflicts: u64,
    errors: HashMap<String, u64>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            hist: Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIG)
                .expect("valid histogram bounds"),
            ok: 0,
            conflicts: 0,
            errors: HashMap::new(),
        }
    }

    fn record(&mut self, outcome: Outcome, us: u64) {
        match outcome {
            Outcome::Correct => {
                self.ok += 1;
                self.hist.saturating_record(us.max(1));
            }
            Outcome::Conflict => {
                self.ok += 1;
                self.conflicts += 1;
                self.hist.saturating_record(us.max(1));
            }
            Outcome::Wrong => *self.errors.entry("wrong-answer".into()).or_default() += 1,
            Outcome::Failed(s) => *self.errors.entry(status_kind(&s)).or_default() += 1,
        }
    }
}

/// State shared by the clients of one phase.
struct Shared {
    op: Op,
    keys: Arc<Vec<Vec<u8>>>,
    value: Arc<Vec<u8>>,
    /// txn-put: the mod_revision last seen for each key (0: none yet),
    /// shared by all clients like a Kubernetes watch cache.
    seen_mod_revs: Arc<Vec<AtomicI64>>,
    /// Key `i` for ticket `i` (populating) instead of a random key.
    sequential: bool,
    total: u64,
    deadline: Option<Instant>,
    /// With `--rate`: ticket `t` is sent at `start + t / rate`.
    rate: Option<f64>,
    start: Instant,
    issued: AtomicU64,
    done: AtomicU64,
    running: AtomicUsize,
    finished: tokio::sync::Notify,
}

impl Shared {
    /// The next request's ticket number, or `None` when the phase is over.
    fn ticket(&self) -> Option<u64> {
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                return None;
            }
        }
        let t = self.issued.fetch_add(1, Ordering::Relaxed);
        (t < self.total).then_some(t)
    }
}

pub(crate) fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn header_ok(h: &Option<ResponseHeader>) -> bool {
    h.as_ref().is_some_and(|h| h.revision > 0)
}

/// A put answer is right if it carries a header with a revision.
fn put_ok(r: &PutResponse) -> bool {
    header_ok(&r.header)
}

/// A single-key get is right if it returns exactly that key and its value.
fn range_ok(r: &RangeResponse, key: &[u8], value: &[u8]) -> bool {
    header_ok(&r.header)
        && r.count == 1
        && r.kvs.len() == 1
        && r.kvs[0].key == key
        && r.kvs[0].value == value
}

/// The Kubernetes optimistic update of `key`: put if its mod_revision is
/// still `seen`, else get it.
fn txn_put_request(key: &[u8], value: &[u8], seen: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.to_vec(),
            target_union: Some(TargetUnion::ModRevision(seen)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })),
        }],
    }
}

/// Checks a txn-put answer; returns the key's mod_revision it shows (the
/// txn's revision when the put happened) and whether the compare failed.
/// `None`: a wrong answer.
fn txn_put_check(r: &TxnResponse, key: &[u8], value: &[u8], seen: i64) -> Option<(i64, bool)> {
    let rev = r.header.as_ref().map(|h| h.revision)?;
    let op = r.responses.first().and_then(|o| o.response.as_ref());
    if r.responses.len() != 1 {
        return None;
    }
    match op? {
        Response::ResponsePut(p) if r.succeeded && header_ok(&p.header) && rev > seen => {
            Some((rev, false))
        }
        Response::ResponseRange(g)
            if !r.succeeded
                && g.count == 1
                && g.kvs.len() == 1
                && g.kvs[0].key == key
                && g.kvs[0].value == value
                && g.kvs[0].mod_revision != seen
                && g.kvs[0].mod_revision <= rev =>
        {
            Some((g.kvs[0].mod_revision, true))
        }
        _ => None,
    }
}

/// One client's handle on its connection, over either transport.
#[derive(Clone)]
enum Kv {
    Tonic(KvClient<Channel>),
    H2 {
        conn: grpc::Conn,
        put: grpc::Path,
        range: grpc::Path,
        txn: grpc::Path,
    },
}

impl Kv {
    async fn put(&mut self, req: PutRequest) -> Result<PutResponse, tonic::Status> {
        match self {
            Kv::Tonic(c) => c.put(req).await.map(tonic::Response::into_inner),
            Kv::H2 { conn, put, .. } => conn.unary(put, &req).await,
        }
    }

    async fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, tonic::Status> {
        match self {
            Kv::Tonic(c) => c.range(req).await.map(tonic::Response::into_inner),
            Kv::H2 { conn, range, .. } => conn.unary(range, &req).await,
        }
    }

    async fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, tonic::Status> {
        match self {
            Kv::Tonic(c) => c.txn(req).await.map(tonic::Response::into_inner),
            Kv::H2 { conn, txn, .. } => conn.unary(txn, &req).await,
        }
    }
}

async fn put(kv: &mut Kv, key: &[u8], value: &[u8]) -> Outcome {
    let req = PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    };
    match kv.put(req).await {
        Ok(r) if put_ok(&r) => Outcome::Correct,
        Ok(_) => Outcome::Wrong,
        Err(s) => Outcome::Failed(s),
    }
}

async fn get(kv: &mut Kv, key: &[u8], value: &[u8], serializable: bool) -> Outcome {
    let req = RangeRequest {
        key: key.to_vec(),
        serializable,
        ..Default::default()
    };
    match kv.range(req).await {
        Ok(r) if range_ok(&r, key, value) => Outcome::Correct,
        Ok(_) => Outcome::Wrong,
        Err(s) => Outcome::Failed(s),
    }
}

async fn call(kv: &mut Kv, sh: &Shared, idx: usize, rng: &mut u64) -> Outcome {
    let (key, value) = (&sh.keys[idx], &sh.value[..]);
    match sh.op {
        Op::Put => put(kv, key, value).await,
        Op::Range { serializable } => get(kv, key, value, serializable).await,
        Op::Mixed {
            read_percent,
            serializable,
        } => {
            if xorshift(rng) % 100 < u64::from(read_percent) {
                get(kv, key, value, serializable).await
            } else {
                put(kv, key, value).await
            }
        }
        Op::TxnPut => {
            let seen = sh.seen_mod_revs[idx].load(Ordering::Relaxed);
            match kv.txn(txn_put_request(key, value, seen)).await {
                Ok(r) => match txn_put_check(&r, key, value, seen) {
                    Some((mod_rev, conflict)) => {
                        sh.seen_mod_revs[idx].fetch_max(mod_rev, Ordering::Relaxed);
                        if conflict {
                            Outcome::Conflict
                        } else {
                            Outcome::Correct
                        }
                    }
                    None => Outcome::Wrong,
                },
                Err(s) => Outcome::Failed(s),
            }
        }
    }
}

async fn client(mut kv: Kv, sh: Arc<Shared>, stats: Arc<Mutex<Stats>>, seed: u64) {
    let mut rng = seed;
    let n = sh.keys.len() as u64;
    while let Some(ticket) = sh.ticket() {
        let idx = if sh.sequential {
            ticket % n
        } else {
            xorshift(&mut rng) % n
        };
        if let Some(rate) = sh.rate {
            let at = sh.start + Duration::from_secs_f64(ticket as f64 / rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let start = Instant::now();
        let outcome = call(&mut kv, &sh, idx as usize, &mut rng).await;
        let us = start.elapsed().as_micros() as u64;
        sh.done.fetch_add(1, Ordering::Relaxed);
        stats.lock().expect("stats lock").record(outcome, us);
    }
    if sh.running.fetch_sub(1, Ordering::AcqRel) == 1 {
        sh.finished.notify_one();
    }
}

/// The merged outcome of one phase.
struct Phase {
    elapsed: Duration,
    hist: Histogram<u64>,
    ok: u64,
    /// Correct txn-put answers whose compare failed.
    conflicts: u64,
    errors: Vec<(String, u64)>,
    /// Clients aborted by the watchdog, each with one request unanswered.
    stalled: usize,
    client_cpu: Duration,
    server_cpu: Option<Duration>,
    /// The server's VmRSS when the phase ended.
    server_rss_bytes: Option<u64>,
    /// The server's peak RSS (VmHWM) when the phase ended.
    server_peak_rss_bytes: Option<u64>,
    /// CPU time the whole machine spent busy (all processes, irq, steal).
    machine_busy: Duration,
    /// CPU time the hypervisor took from this VM.
    steal: Duration,
}

impl Phase {
    fn completed(&self) -> u64 {
        self.ok + self.errors.iter().map(|(_, n)| n).sum::<u64>()
    }
}

async fn run_phase(
    kvs: &[Kv],
    clients: usize,
    sh: Arc<Shared>,
    stall: Duration,
    server_pid: Option<i32>,
) -> Result<Phase, String> {
    sh.running.store(clients, Ordering::Release);
    let stats: Vec<_> = (0..clients)
        .map(|_| Arc::new(Mutex::new(Stats::new())))
        .collect();
    let server_before = server_pid.map(proc_cpu).transpose()?;
    let machine_before = machine_cpu()?;
    let cpu_before = self_cpu();
    let start = Instant::now();
    let handles: Vec<_> = stats
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1) | 1;
            tokio::spawn(client(
                kvs[i % kvs.len()].clone(),
                sh.clone(),
                st.clone(),
                seed,
            ))
        })
        .collect();
    let mut last_done = 0;
    let mut last_progress = Instant::now();
    let mut stalled = 0;
    while sh.running.load(Ordering::Acquire) > 0 {
        let tick = Duration::from_millis(WATCHDOG_TICK_MS);
        let _ = tokio::time::timeout(tick, sh.finished.notified()).await;
        let done = sh.done.load(Ordering::Relaxed);
        if done != last_done {
            last_done = done;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= stall {
            stalled = sh.running.load(Ordering::Acquire);
            for h in &handles {
                h.abort();
            }
            break;
        }
    }
    for h in handles {
        let _ = h.await;
    }
    let elapsed = start.elapsed();
    let client_cpu = self_cpu().saturating_sub(cpu_before);
    let machine_after = machine_cpu()?;
    let machine_busy = machine_after.busy.saturating_sub(machine_before.busy);
    let steal = machine_after.steal.saturating_sub(machine_before.steal);
    // A server that exited during the run has no CPU figure; its clients'
    // errors tell what happened.
    let server_cpu = match (server_pid, server_before) {
        (Some(pid), Some(before)) => proc_cpu(pid).ok().map(|c| c.saturating_sub(before)),
        _ => None,
    };
    let server_rss_bytes = server_pid.and_then(|pid| crate::watch::rss_bytes(pid).ok());
    let server_peak_rss_bytes = server_pid.and_then(|pid| crate::watch::peak_rss_bytes(pid).ok());
    let mut hist = Stats::new().hist;
    let mut ok = 0;
    let mut conflicts = 0;
    let mut errors: HashMap<String, u64> = HashMap::new();
    for st in stats {
        let st = st.lock().expect("stats lock");
        hist.add(&st.hist)
            .map_err(|e| format!("histogram: {e:?}"))?;
        ok += st.ok;
        conflicts += st.conflicts;
        for (k, n) in &st.errors {
            *errors.entry(k.clone()).or_default() += n;
        }
    }
    let mut errors: Vec<_> = errors.into_iter().collect();
    errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Phase {
        elapsed,
        hist,
        ok,
        conflicts,
        errors,
        stalled,
        client_cpu,
        server_cpu,
        server_rss_bytes,
        server_peak_rss_bytes,
        machine_busy,
        steal,
    })
}

/// A gRPC status as an error kind: code and message, cut to
/// [`ERROR_KIND_MAX_CHARS`].
pub(crate) fn status_kind(s: &tonic::Status) -> String {
    let mut kind = format!("{:?}: {}", s.code(), s.message());
    if let Some((i, _)) = kind.char_indices().nth(ERROR_KIND_MAX_CHARS) {
        kind.truncate(i);
    }
    kind
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

async fn connect(cfg: &Config) -> Result<Vec<Kv>, String> {
    let mut kvs = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        let uri = &cfg.endpoints[i % cfg.endpoints.len()];
        kvs.push(match cfg.transport {
            Transport::Tonic => Kv::Tonic(KvClient::new(connect_channel(uri).await?)),
            Transport::H2 => {
                let conn = grpc::Conn::connect(uri).await?;
                Kv::H2 {
                    put: conn.path("/etcdserverpb.KV/Put")?,
                    range: conn.path("/etcdserverpb.KV/Range")?,
                    txn: conn.path("/etcdserverpb.KV/Txn")?,
                    conn,
                }
            }
        });
    }
    Ok(kvs)
}

/// One HTTP/2 connection (no TLS, TCP_NODELAY).
pub(crate) async fn connect_channel(uri: &str) -> Result<Channel, String> {
    Endpoint::from_shared(uri.to_string())
        .map_err(|e| format!("{uri}: {}", error_chain(&e)))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS))
        .connect()
        .await
        .map_err(|e| format!("connect {uri}: {}", error_chain(&e)))
}

fn make_keys(cfg: &Config) -> Vec<Vec<u8>> {
    let width = cfg.key_size;
    (0..cfg.key_space)
        .map(|i| format!("{i:0width$}").into_bytes())
        .collect()
}

/// What `run` measured, for printing.
struct Report {
    populate: Option<(u64, Duration)>,
    phase: Phase,
}

async fn run(cfg: &Config) -> Result<Report, String> {
    let kvs = connect(cfg).await?;
    let keys = Arc::new(make_keys(cfg));
    let value: Arc<Vec<u8>> = Arc::new((0..cfg.val_size).map(|i| b'a' + (i % 26) as u8).collect());
    let seen_mod_revs: Arc<Vec<AtomicI64>> = Arc::new(match cfg.op {
        Op::TxnPut => (0..cfg.key_space).map(|_| AtomicI64::new(0)).collect(),
        _ => Vec::new(),
    });
    let shared = |op, sequential, total, deadline, rate| {
        Arc::new(Shared {
            op,
            keys: keys.clone(),
            value: value.clone(),
            seen_mod_revs: seen_mod_revs.clone(),
            sequential,
            total,
            deadline,
            rate,
            start: Instant::now(),
            issued: AtomicU64::new(0),
            done: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            finished: tokio::sync::Notify::new(),
        })
    };
    let mut populate = None;
    if let Op::Range { .. } | Op::Mixed { .. } = cfg.op {
        let sh = shared(Op::Put, true, cfg.key_space as u64, None, None);
        let p = run_phase(&kvs, cfg.clients, sh, cfg.stall, None).await?;
        if let Some((kind, n)) = p.errors.first() {
            return Err(format!(
                "populating {} keys failed: {n} x {kind}",
                cfg.key_space
            ));
        }
        populate = Some((p.ok, p.elapsed));
    }
    let sh = match cfg.stop {
        Stop::Total(n) => shared(cfg.op, cfg.sequential, n, None, cfg.rate),
        Stop::Duration(d) => shared(
            cfg.op,
            cfg.sequential,
            u64::MAX,
            Some(Instant::now() + d),
            cfg.rate,
        ),
    };
    let phase = run_phase(&kvs, cfg.clients, sh, cfg.stall, cfg.server_pid).await?;
    Ok(Report { populate, phase })
}

pub(crate) fn self_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// utime + stime of process `pid` (all its threads) from /proc/PID/stat.
pub(crate) fn proc_cpu(pid: i32) -> Result<Duration, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // Fields after the command name (which may hold spaces and parens):
    // state is field 3, utime field 14, stime field 15.
    let rest = stat
        .rsplit_once(')')
        .ok_or(format!("{path}: unexpected format"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{path}: no field {n}"))
    };
    ticks(field(14)? + field(15)?)
}

/// Busy and steal time of all CPUs together, from /proc/stat.
pub(crate) struct MachineCpu {
    pub(crate) busy: Duration,
    pub(crate) steal: Duration,
}

pub(crate) fn machine_cpu() -> Result<MachineCpu, String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    // cpu  user nice system idle iowait irq softirq steal guest guest_nice
    let line = stat.lines().next().unwrap_or("");
    let t: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    if !line.starts_with("cpu ") || t.len() < 8 {
        return Err("/proc/stat: unexpected format".into());
    }
    let busy = t[0] + t[1] + t[2] + t[5] + t[6] + t[7];
    Ok(MachineCpu {
        busy: ticks(busy)?,
        steal: ticks(t[7])?,
    })
}

pub(crate) fn ticks(n: u64) -> Result<Duration, String> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return Err("sysconf(_SC_CLK_TCK) failed".into());
    }
    Ok(Duration::from_secs_f64(n as f64 / hz as f64))
}

pub(crate) fn per_req_us(cpu: Duration, reqs: u64) -> f64 {
    if reqs == 0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / reqs as f64
    }
}

pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Report {
    fn workload(cfg: &Config) -> (&'static str, Option<&'static str>) {
        match cfg.op {
            Op::Put => ("put", None),
            Op::Range { serializable: true } => ("range", Some("s")),
            Op::Range {
                serializable: false,
            } => ("range", Some("l")),
            Op::TxnPut => ("txn-put", None),
            Op::Mixed {
                serializable: true, ..
            } => ("mixed", Some("s")),
            Op::Mixed {
                serializable: false,
                ..
            } => ("mixed", Some("l")),
        }
    }

    fn rps(&self) -> f64 {
        self.phase.ok as f64 / self.phase.elapsed.as_secs_f64().max(1e-9)
    }

    /// Average CPUs used by everything but this generator and the server
    /// (other processes, plus interrupt time the kernel charges to no
    /// process), and average CPUs stolen by the hypervisor, over the timed
    /// phase. Both should be near 0 for a clean measurement.
    fn other_and_steal_cores(&self) -> (f64, f64) {
        let p = &self.phase;
        let secs = p.elapsed.as_secs_f64().max(1e-9);
        let ours = p.client_cpu + p.server_cpu.unwrap_or_default();
        let other = p.machine_busy.as_secs_f64() - p.steal.as_secs_f64() - ours.as_secs_f64();
        (other.max(0.0) / secs, p.steal.as_secs_f64() / secs)
    }

    fn lat(&self) -> [(&'static str, u64); 5] {
        let h = &self.phase.hist;
        [
            ("p50", h.value_at_quantile(0.5)),
            ("p90", h.value_at_quantile(0.9)),
            ("p99", h.value_at_quantile(0.99)),
            ("p99.9", h.value_at_quantile(0.999)),
            ("max", h.max()),
        ]
    }

    fn json(&self, cfg: &Config) -> String {
        let p = &self.phase;
        let (workload, consistency) = Self::workload(cfg);
        let endpoints: Vec<String> = cfg.endpoints.iter().map(|e| json_str(e)).collect();
        let lat: Vec<String> = self
            .lat()
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_str(k)))
            .chain(std::iter::once(format!("\"mean\":{:.1}", p.hist.mean())))
            .collect();
        let kinds: Vec<String> = p
            .errors
            .iter()
            .map(|(k, n)| format!("{}:{n}", json_str(k)))
            .collect();
        let completed = p.completed();
        let (other, steal) = self.other_and_steal_cores();
        let server = match p.server_cpu {
            Some(c) => format!("{:.2}", per_req_us(c, completed)),
            None => "null".into(),
        };
        let opt_num = |v: Option<i32>| v.map_or("null".to_string(), |v| v.to_string());
        let populate = match self.populate {
            Some((n, d)) => format!("{{\"keys\":{n},\"elapsed_s\":{:.3}}}", d.as_secs_f64()),
            None => "null".into(),
        };
        format!(
            "{{\"workload\":\"{workload}\",\"consistency\":{},\"endpoints\":[{}],\"conns\":{},\"clients\":{},\
\"threads\":{},\"key_size\":{},\"val_size\":{},\"key_space\":{},\"populate\":{populate},\
\"requests\":{completed},\"ok\":{},\"errors\":{},\"error_kinds\":{{{}}},\"stalled\":{},\
\"elapsed_s\":{:.3},\"rps\":{:.1},\"latency_us\":{{{}}},\"client_cpu_us_per_req\":{:.2},\
\"server_pid\":{},\"server_cpu_us_per_req\":{server},\"server_rss_bytes\":{},\"server_peak_rss_bytes\":{},\"conflicts\":{},\"rate\":{},\"read_percent\":{},\"other_cpu_cores\":{other:.2},\"steal_cores\":{steal:.2}}}",
            consistency.map_or("null".to_string(), |c| format!("\"{c}\"")),
            endpoints.join(","),
            cfg.conns,
            cfg.clients,
            cfg.threads,
            cfg.key_size,
            cfg.val_size,
            cfg.key_space,
            p.ok,
            completed - p.ok,
            kinds.join(","),
            p.stalled,
            p.elapsed.as_secs_f64(),
            self.rps(),
            lat.join(","),
            per_req_us(p.client_cpu, completed),
            opt_num(cfg.server_pid),
            p.server_rss_bytes.map_or("null".to_string(), |v| v.to_string()),
            p.server_peak_rss_bytes
                .map_or("null".to_string(), |v| v.to_string()),
            p.conflicts,
            cfg.rate.map_or("null".to_string(), |r| r.to_string()),
            match cfg.op {
                Op::Mixed { read_percent, .. } => read_percent.to_string(),
                _ => "null".into(),
            },
        )
    }

    fn text(&self, cfg: &Config) -> String {
        let p = &self.phase;
        let (workload, consistency) = Self::workload(cfg);
        let label = match consistency {
            Some(c) => format!("{workload} (consistency {c})"),
            None => workload.to_string(),
        };
        let completed = p.completed();
        let mut out = String::new();
        if let Some((n, d)) = self.populate {
            out += &format!("populated {n} keys in {:.2} s\n", d.as_secs_f64());
        }
        out += &format!(
            "{label}: {completed} requests in {:.2} s, {} conns x {} clients, key {} B, value {} B, {} keys\n",
            p.elapsed.as_secs_f64(),
            cfg.conns,
            cfg.clients,
            cfg.key_size,
            cfg.val_size,
            cfg.key_space
        );
        if let Some(r) = cfg.rate {
            out += &format!("offered rate: {r} req/s\n");
        }
        if let Op::Mixed { read_percent, .. } = cfg.op {
            out += &format!("reads: {read_percent}%\n");
        }
        out += &format!("throughput: {:.1} req/s (correct answers)\n", self.rps());
        if let Op::TxnPut = cfg.op {
            out += &format!(
                "conflicts: {} (compare failed, key read instead)\n",
                p.conflicts
            );
        }
        let lat: Vec<String> = self.lat().iter().map(|(k, v)| format!("{k} {v}")).collect();
        out += &format!(
            "latency us: {}, mean {:.1}\n",
            lat.join(", "),
            p.hist.mean()
        );
        if p.errors.is_empty() {
            out += "errors: none\n";
        } else {
            out += &format!("errors: {}\n", completed - p.ok);
            for (k, n) in &p.errors {
                out += &format!("  {n:>8}  {k}\n");
            }
        }
        if p.stalled > 0 {
            out += &format!(
                "STALLED: {} clients aborted, each with a request unanswered for {} s\n",
                p.stalled,
                cfg.stall.as_secs()
            );
        }
        out += &format!(
            "generator CPU: {:.2} us/req (user+sys)\n",
            per_req_us(p.client_cpu, completed)
        );
        if let (Some(pid), Some(c)) = (cfg.server_pid, p.server_cpu) {
            out += &format!(
                "server CPU (pid {pid}): {:.2} us/req (utime+stime)\n",
                per_req_us(c, completed)
            );
        }
        if let Some(rss) = p.server_rss_bytes {
            out += &format!("server RSS at the end: {:.1} MiB\n", rss as f64 / 1048576.0);
        }
        if let Some(peak) = p.server_peak_rss_bytes {
            out += &format!(
                "server peak RSS (VmHWM): {:.1} MiB\n",
                peak as f64 / 1048576.0
            );
        }
        let (other, steal) = self.other_and_steal_cores();
        let whose = if cfg.server_pid.is_some() {
            "all but generator and server"
        } else {
            "all but the generator"
        };
        out += &format!("machine: other CPU {other:.2} cores ({whose}), steal {steal:.2} cores\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::args::test_args as args;

    #[test]
    fn endpoints_accept_host_port_and_http() {
        assert_eq!(
            endpoint_uri("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(endpoint_uri("http://[::1]:1").unwrap(), "http://[::1]:1");
        assert!(endpoint_uri("https://x:1").is_err());
    }

    #[test]
    fn config_defaults_and_checks() {
        let c = Config::parse("put", &[]).unwrap();
        assert_eq!(c.key_space, KEY_SPACE_PUT_DEFAULT);
        assert!(matches!(c.stop, Stop::Total(TOTAL_DEFAULT)));
        let c = Config::parse("range", &args(&["--consistency", "s"])).unwrap();
        assert_eq!(c.key_space, KEY_SPACE_RANGE_DEFAULT);
        assert!(matches!(c.op, Op::Range { serializable: true }));
        assert!(Config::parse("put", &args(&["--consistency", "s"])).is_err());
        assert!(Config::parse("put", &args(&["--total", "1", "--duration", "1"])).is_err());
        assert!(Config::parse("put", &args(&["--key-size", "2", "--key-space", "1000"])).is_err());
        assert!(Config::parse("put", &args(&["--key-size", "3", "--key-space", "1000"])).is_ok());
    }

    #[test]
    fn proc_cpu_reads_own_process() {
        let pid = std::process::id() as i32;
        assert!(proc_cpu(pid).is_ok());
    }

    #[test]
    fn answers_are_checked() {
        use ferrocd_proto::mvccpb::KeyValue;
        let header = Some(ResponseHeader {
            revision: 7,
            ..Default::default()
        });
        assert!(put_ok(&PutResponse {
            header,
            ..Default::default()
        }));
        assert!(!put_ok(&PutResponse::default()));
        let kv = |k: &[u8], v: &[u8]| KeyValue {
            key: k.to_vec(),
            value: v.to_vec(),
            ..Default::default()
        };
        let resp = |kvs: Vec<KeyValue>, count| RangeResponse {
            header,
            count,
            kvs,
            ..Default::default()
        };
        assert!(range_ok(&resp(vec![kv(b"k", b"v")], 1), b"k", b"v"));
        assert!(!range_ok(&resp(vec![kv(b"k", b"x")], 1), b"k", b"v"));
        assert!(!range_ok(&resp(vec![kv(b"j", b"v")], 1), b"k", b"v"));
        assert!(!range_ok(&resp(vec![], 0), b"k", b"v"));
        assert!(!range_ok(&resp(vec![kv(b"k", b"v")], 2), b"k", b"v"));
    }

    #[test]
    fn new_workloads_parse_and_refuse_misplaced_flags() {
        let c = Config::parse("txn-put", &[]).unwrap();
        assert!(matches!(c.op, Op::TxnPut));
        assert_eq!(c.key_space, KEY_SPACE_PUT_DEFAULT);
        let c = Config::parse(
            "mixed",
            &args(&[
                "--read-percent",
                "90",
                "--consistency",
                "s",
                "--rate",
                "500",
            ]),
        )
        .unwrap();
        assert!(matches!(
            c.op,
            Op::Mixed {
                read_percent: 90,
                serializable: true
            }
        ));
        assert_eq!(c.rate, Some(500.0));
        assert!(Config::parse("mixed", &args(&["--read-percent", "101"])).is_err());
        assert!(Config::parse("put", &args(&["--read-percent", "5"])).is_err());
        assert!(Config::parse("txn-put", &args(&["--consistency", "s"])).is_err());
        assert!(Config::parse("range", &args(&["--sequential"])).is_err());
        assert!(
            Config::parse("put", &args(&["--sequential"]))
                .unwrap()
                .sequential
        );
        assert!(Config::parse("put", &args(&["--rate", "0"])).is_err());
        assert!(Config::parse("put", &args(&["--rate", "nan"])).is_err());
    }

    #[test]
    fn txn_put_answers_are_checked() {
        use ferrocd_proto::etcdserverpb::ResponseOp;
        use ferrocd_proto::mvccpb::KeyValue;
        let header = |revision| {
            Some(ResponseHeader {
                revision,
                ..Default::default()
            })
        };
        let put_ok = TxnResponse {
            header: header(9),
            succeeded: true,
            responses: vec![ResponseOp {
                response: Some(Response::ResponsePut(PutResponse {
                    header: header(9),
                    ..Default::default()
                })),
            }],
        };
        assert_eq!(txn_put_check(&put_ok, b"k", b"v", 4), Some((9, false)));
        // A put that claims a revision not above the compared one is wrong.
        assert_eq!(txn_put_check(&put_ok, b"k", b"v", 9), None);
        let got = |mod_revision, key: &[u8]| TxnResponse {
            header: header(12),
            succeeded: false,
            responses: vec![ResponseOp {
                response: Some(Response::ResponseRange(RangeResponse {
                    header: header(12),
                    count: 1,
                    kvs: vec![KeyValue {
                        key: key.to_vec(),
                        value: b"v".to_vec(),
                        mod_revision,
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
            }],
        };
        assert_eq!(
            txn_put_check(&got(11, b"k"), b"k", b"v", 4),
            Some((11, true))
        );
        // A failed compare must show a different mod_revision, of that key.
        assert_eq!(txn_put_check(&got(4, b"k"), b"k", b"v", 4), None);
        assert_eq!(txn_put_check(&got(11, b"j"), b"k", b"v", 4), None);
        assert_eq!(txn_put_check(&TxnResponse::default(), b"k", b"v", 4), None);
        let req = txn_put_request(b"k", b"v", 4);
        assert_eq!(
            req.compare[0].target_union,
            Some(TargetUnion::ModRevision(4))
        );
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
