//! `lease-expire`: put latency while many leases expire at once.
//!
//! Setup: `--leases` N leases with a short `--ttl` are granted, each with
//! one key put with it (`<prefix>leased/<i>`), all kept alive meanwhile
//! (see `lease.rs`); a count-only range checks that the N keys exist, and
//! a watch on `<prefix>leased/` is opened. Then every lease is renewed
//! once more over the keep-alive streams ("arming", from A0 to A1) and
//! the streams are closed: lease i expires at its renewal + TTL, so all
//! of them between E0 = A0 + TTL and A1 + TTL. Nothing can legitimately be
//! deleted before E0.
//!
//! From E0 - `--before-secs` on, `--clients` closed-loop clients over
//! `--conns` connections put random keys of `<prefix>load/` (no lease) as
//! in `put`, until `--after-secs` after the last leased key was deleted
//! (seen as a DELETE event on the watch; at most `--max-wait-secs` after
//! A1 + TTL). Each put is filed by its send time into "before" (before
//! E0), "during" (E0 to the last delete: the expiry window) and "after";
//! every window gets its put rate, latency percentiles and the server's
//! CPU (cores, from /proc/PID/stat sampled at the window edges).
//!
//! Checked: every leased key deleted exactly once, none before E0, no
//! other event on them, no leased key left at the end (count-only range),
//! no lease still listed (LeaseLeases), every put answered with a
//! revision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{
    PutRequest, RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use ferrocd_proto::mvccpb::event::EventType;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::args::Flags;
use crate::lease::{
    add_error, connect_all, grant_all, header_ok, kinds_json, lat_json, lat_text, leases_listed,
    lock, new_hist, opt_json, parse_endpoints, parse_ttl, runtime, sorted, ChannelRequests,
    KaStreams, CONNS_MAX, LEASES_MAX, STALL_SECS_DEFAULT, THREADS_MAX, TICK_MS,
};
use crate::load::{
    in_range, json_str, machine_cpu, per_req_us, proc_cpu, self_cpu, status_kind, xorshift,
};

pub const USAGE: &str = "\
usage: ferrocd-perf lease-expire [flags]
  --endpoints LIST      comma list of host:port or http://host:port (default 127.0.0.1:2379)
  --leases N            leases, one key attached to each, expiring together (default 10000)
  --ttl S               their TTL in seconds, >= 2 (the servers' minimum) (default 5)
  --clients N           concurrent puts in flight on other keys (default 16)
  --conns N             HTTP/2 connections (default 2)
  --before-secs S       start the puts S s before the leases expire (default 1)
  --after-secs S        stop the puts S s after the last leased key is gone (default 1)
  --max-wait-secs S     give up waiting for the deletes S s after the last lease's TTL (default 60)
  --key-prefix P        leased keys P + leased/<i>, put keys P + load/<i> (default /ferrocd-perf/lease/)
  --key-space N         distinct put keys (default 100000)
  --val-size B          put value bytes (default 8)
  --server-pid PID      also report the server's CPU per window
  --threads N           tokio worker threads; 0 = current-thread runtime (default 0)
  --stall-secs S        request timeout (default 10)
  --json                print one JSON object";

const VALUED: &[&str] = &[
    "--endpoints",
    "--leases",
    "--ttl",
    "--clients",
    "--conns",
    "--before-secs",
    "--after-secs",
    "--max-wait-secs",
    "--key-prefix",
    "--key-space",
    "--val-size",
    "--server-pid",
    "--threads",
    "--stall-secs",
];
const SWITCHES: &[&str] = &["--json"];

const CLIENTS_MAX: usize = 100_000;
const KEY_SPACE_MAX: usize = 100_000_000;
const VAL_SIZE_MAX_BYTES: usize = 1 << 20;
const WAIT_SECS_MAX: f64 = 3_600.0;
/// Keep-alive streams (and the window of each) that keep the leases alive
/// during setup and renew them all at once when arming.
const KA_STREAMS: usize = 8;
const KA_WINDOW: usize = 64;
/// How often the leased keys are counted when the watch is gone.
const COUNT_POLL_MS: u64 = 250;

struct Config {
    endpoints: Vec<String>,
    leases: usize,
    ttl: i64,
    clients: usize,
    conns: usize,
    before: Duration,
    after: Duration,
    max_wait: Duration,
    key_prefix: String,
    key_space: usize,
    val_size: usize,
    server_pid: Option<i32>,
    threads: usize,
    stall: Duration,
    json: bool,
}

fn secs_flag(f: &Flags, name: &str, default: f64) -> Result<Duration, String> {
    let s: f64 = f.get(name, default)?;
    if !(0.0..=WAIT_SECS_MAX).contains(&s) {
        return Err(format!("{name} must be in [0, {WAIT_SECS_MAX}]"));
    }
    Ok(Duration::from_secs_f64(s))
}

impl Config {
    fn parse(args: &[String]) -> Result<Config, String> {
        let f = Flags::parse(args, VALUED, SWITCHES)?;
        let cfg = Config {
            endpoints: parse_endpoints(&f)?,
            leases: f.get("--leases", 10_000)?,
            ttl: parse_ttl(&f, 5)?,
            clients: f.get("--clients", 16)?,
            conns: f.get("--conns", 2)?,
            before: secs_flag(&f, "--before-secs", 1.0)?,
            after: secs_flag(&f, "--after-secs", 1.0)?,
            max_wait: secs_flag(&f, "--max-wait-secs", 60.0)?,
            key_prefix: f
                .raw("--key-prefix")
                .unwrap_or("/ferrocd-perf/lease/")
                .to_string(),
            key_space: f.get("--key-space", 100_000)?,
            val_size: f.get("--val-size", 8)?,
            server_pid: f.opt("--server-pid")?,
            threads: f.get("--threads", 0)?,
            stall: Duration::from_secs(f.get("--stall-secs", STALL_SECS_DEFAULT)?.max(1)),
            json: f.switch("--json"),
        };
        in_range("--leases", cfg.leases, 1, LEASES_MAX)?;
        in_range("--clients", cfg.clients, 1, CLIENTS_MAX)?;
        in_range("--conns", cfg.conns, 1, CONNS_MAX)?;
        in_range("--key-space", cfg.key_space, 1, KEY_SPACE_MAX)?;
        in_range("--val-size", cfg.val_size, 0, VAL_SIZE_MAX_BYTES)?;
        in_range("--threads", cfg.threads, 0, THREADS_MAX)?;
        if cfg.before >= Duration::from_secs(cfg.ttl as u64) {
            return Err("--before-secs must be below --ttl".into());
        }
        Ok(cfg)
    }

    fn leased_prefix(&self) -> Vec<u8> {
        format!("{}leased/", self.key_prefix).into_bytes()
    }

    fn leased_key(&self, i: usize) -> Vec<u8> {
        let width = (self.leases - 1).to_string().len();
        format!("{}leased/{i:0width$}", self.key_prefix).into_bytes()
    }

    fn load_key(&self, i: usize) -> Vec<u8> {
        let width = (self.key_space - 1).to_string().len();
        format!("{}load/{i:0width$}", self.key_prefix).into_bytes()
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

// --- the watch on the leased keys -----------------------------------------------

/// What the watch on the leased keys saw.
struct Deletes {
    prefix: Vec<u8>,
    /// Receive time of the first DELETE of each leased key.
    at: Vec<Option<Instant>>,
    count: usize,
    last: Option<Instant>,
    duplicates: u64,
    errors: HashMap<String, u64>,
    created: bool,
    ended: bool,
}

impl Deletes {
    fn new(prefix: Vec<u8>, n: usize) -> Deletes {
        Deletes {
            prefix,
            at: vec![None; n],
            count: 0,
            last: None,
            duplicates: 0,
            errors: HashMap::new(),
            created: false,
            ended: false,
        }
    }

    fn key_index(&self, key: &[u8]) -> Option<usize> {
        let rest = key.strip_prefix(self.prefix.as_slice())?;
        let i: usize = std::str::from_utf8(rest).ok()?.parse().ok()?;
        (i < self.at.len()).then_some(i)
    }

    fn on_response(&mut self, r: WatchResponse, now: Instant) {
        if r.created {
            if r.canceled {
                add_error(
                    &mut self.errors,
                    format!("watch refused: {}", r.cancel_reason),
                    1,
                );
            } else {
                self.created = true;
            }
            return;
        }
        if r.canceled {
            add_error(
                &mut self.errors,
                format!("watch canceled by the server: {:?}", r.cancel_reason),
                1,
            );
            return;
        }
        for e in r.events {
            let Some(kv) = e.kv else {
                add_error(&mut self.errors, "event without a key-value", 1);
                continue;
            };
            if e.r#type != EventType::Delete as i32 {
                add_error(&mut self.errors, "PUT event on a leased key", 1);
                continue;
            }
            let Some(i) = self.key_index(&kv.key) else {
                add_error(&mut self.errors, "DELETE event for a key never leased", 1);
                continue;
            };
            if self.at[i].is_some() {
                self.duplicates += 1;
                continue;
            }
            self.at[i] = Some(now);
            self.count += 1;
            self.last = Some(self.last.map_or(now, |l| l.max(now)));
        }
    }
}

async fn watch_reader(channel: Channel, rx: mpsc::Receiver<WatchRequest>, st: Arc<Mutex<Deletes>>) {
    let why = match WatchClient::new(channel).watch(ChannelRequests(rx)).await {
        Err(s) => format!("watch stream refused: {}", status_kind(&s)),
        Ok(r) => {
            let mut responses = r.into_inner();
            loop {
                match responses.message().await {
                    Ok(Some(r)) => {
                        let now = Instant::now();
                        lock(&st).on_response(r, now);
                    }
                    Ok(None) => break "watch stream ended by the server".to_string(),
                    Err(s) => break format!("watch stream failed: {}", status_kind(&s)),
                }
            }
        }
    };
    let mut st = lock(&st);
    add_error(&mut st.errors, why, 1);
    st.ended = true;
}

// --- the put load -------------------------------------------------------------------

/// What one put client did: (send time since the load started, latency)
/// of each correct answer, (send time, kind) of each error.
#[derive(Default)]
struct PutLog {
    ok: Vec<(u64, u64)>,
    errors: Vec<(u64, String)>,
}

struct Load {
    keys: Arc<Vec<Vec<u8>>>,
    value: Arc<Vec<u8>>,
    t0: Instant,
    stop: AtomicBool,
    hard_end: Instant,
    stall: Duration,
}

async fn put_client(mut kv: KvClient<Channel>, load: Arc<Load>, seed: u64) -> PutLog {
    let mut log = PutLog::default();
    let mut rng = seed;
    let n = load.keys.len() as u64;
    while !load.stop.load(Ordering::Relaxed) && Instant::now() < load.hard_end {
        let req = PutRequest {
            key: load.keys[(xorshift(&mut rng) % n) as usize].clone(),
            value: load.value.to_vec(),
            ..Default::default()
        };
        let t = Instant::now();
        let r = tokio::time::timeout(load.stall, kv.put(req)).await;
        let us = t.elapsed().as_micros() as u64;
        let at = t.duration_since(load.t0).as_micros() as u64;
        match r {
            Ok(Ok(resp)) if header_ok(&resp.get_ref().header) => log.ok.push((at, us.max(1))),
            Ok(Ok(_)) => log
                .errors
                .push((at, "put: wrong answer (no revision)".into())),
            Ok(Err(s)) => log.errors.push((at, format!("put: {}", status_kind(&s)))),
            Err(_) => log
                .errors
                .push((at, format!("put: no answer in {} s", load.stall.as_secs()))),
        }
    }
    log
}

/// CPU counters at one moment.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    server: Option<Duration>,
    client: Duration,
    busy: Duration,
    steal: Duration,
}

fn sample(pid: Option<i32>) -> Sample {
    let m = machine_cpu().ok();
    Sample {
        at: Instant::now(),
        server: pid.and_then(|p| proc_cpu(p).ok()),
        client: self_cpu(),
        busy: m.as_ref().map_or(Duration::ZERO, |m| m.busy),
        steal: m.map_or(Duration::ZERO, |m| m.steal),
    }
}

/// One window of the put phase.
struct Window {
    name: &'static str,
    secs: f64,
    hist: Histogram<u64>,
    errors: u64,
    /// Average CPUs the server used in it.
    server_cores: Option<f64>,
    server_cpu: Option<Duration>,
    /// Average CPUs used by everything but the generator and the server.
    other_cores: f64,
}

impl Window {
    fn new(name: &'static str, a: &Sample, b: &Sample) -> Window {
        let secs = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-9);
        let server_cpu = match (a.server, b.server) {
            (Some(x), Some(y)) => Some(y.saturating_sub(x)),
            _ => None,
        };
        let ours = b.client.saturating_sub(a.client) + server_cpu.unwrap_or_default();
        let other = b.busy.saturating_sub(a.busy).as_secs_f64()
            - b.steal.saturating_sub(a.steal).as_secs_f64()
            - ours.as_secs_f64();
        Window {
            name,
            secs,
            hist: new_hist(),
            errors: 0,
            server_cores: server_cpu.map(|c| c.as_secs_f64() / secs),
            server_cpu,
            other_cores: other.max(0.0) / secs,
        }
    }

    fn puts(&self) -> u64 {
        self.hist.len()
    }

    fn rate(&self) -> f64 {
        self.puts() as f64 / self.secs
    }

    fn server_us_per_put(&self) -> Option<f64> {
        self.server_cpu
            .map(|c| per_req_us(c, self.puts() + self.errors))
    }

    fn json(&self) -> String {
        format!(
            "{}:{{\"secs\":{:.3},\"puts\":{},\"errors\":{},\"puts_per_s\":{:.1},\"latency_us\":{{{}}},\
\"server_cores\":{},\"server_cpu_us_per_put\":{},\"other_cpu_cores\":{:.2}}}",
            json_str(self.name),
            self.secs,
            self.puts(),
            self.errors,
            self.rate(),
            lat_json(&self.hist),
            opt_json(self.server_cores.map(|c| format!("{c:.2}"))),
            opt_json(self.server_us_per_put().map(|c| format!("{c:.2}"))),
            self.other_cores,
        )
    }
}

/// Deletes per second after `e0` (deletes before it in the first bucket).
fn timeline(at: &[Option<Instant>], e0: Instant) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for t in at.iter().flatten() {
        let s = t.saturating_duration_since(e0).as_secs() as usize;
        if out.len() <= s {
            out.resize(s + 1, 0);
        }
        out[s] += 1;
    }
    out
}

/// Which window a put sent `at` (µs since the load started) falls in:
/// 0 before `e0`, 1 from `e0` to `gone`, 2 after.
fn window_of(at: u64, e0: u64, gone: Option<u64>) -> usize {
    if at < e0 {
        0
    } else if gone.is_none_or(|g| at < g) {
        1
    } else {
        2
    }
}

// --- the run ------------------------------------------------------------------------

struct Report {
    setup: Duration,
    /// A1 - A0: the spread of the leases' deadlines.
    arm: Duration,
    /// First delete and last delete relative to E0 (seconds; negative: early).
    first_delete_s: Option<f64>,
    all_gone_s: Option<f64>,
    deleted: usize,
    deleted_early: usize,
    /// Deletes seen in each second after E0 (the last bucket may be partial).
    timeline: Vec<u64>,
    remaining_keys: Option<i64>,
    leases_listed: Option<usize>,
    windows: Vec<Window>,
    errors: Vec<(String, u64)>,
    client_cpu: Duration,
    puts_total: u64,
}

/// Entry point for `lease-expire`.
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

async fn count_leased(cfg: &Config, kv: &mut KvClient<Channel>) -> Result<i64, String> {
    let prefix = cfg.leased_prefix();
    let req = RangeRequest {
        range_end: prefix_end(&prefix),
        key: prefix,
        count_only: true,
        ..Default::default()
    };
    let r = tokio::time::timeout(cfg.stall, kv.range(req))
        .await
        .map_err(|_| {
            format!(
                "count of leased keys: no answer in {} s",
                cfg.stall.as_secs()
            )
        })?
        .map_err(|s| format!("count of leased keys: {}", status_kind(&s)))?;
    Ok(r.get_ref().count)
}

/// Opens the watch on the leased keys and waits until it is created.
async fn open_watch(
    cfg: &Config,
    channel: Channel,
) -> Result<
    (
        Arc<Mutex<Deletes>>,
        mpsc::Sender<WatchRequest>,
        JoinHandle<()>,
    ),
    String,
> {
    let prefix = cfg.leased_prefix();
    let st = Arc::new(Mutex::new(Deletes::new(prefix.clone(), cfg.leases)));
    let (tx, rx) = mpsc::channel(4);
    let reader = tokio::spawn(watch_reader(channel, rx, st.clone()));
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            range_end: prefix_end(&prefix),
            key: prefix,
            ..Default::default()
        })),
    };
    tx.send(create)
        .await
        .map_err(|_| "watch request stream closed".to_string())?;
    let start = Instant::now();
    loop {
        {
            let d = lock(&st);
            if d.created {
                break;
            }
            if d.ended || start.elapsed() >= cfg.stall {
                let errs: Vec<String> = sorted(d.errors.clone())
                    .iter()
                    .map(|(k, n)| format!("{n} x {k}"))
                    .collect();
                reader.abort();
                return Err(format!(
                    "watch on the leased keys not created: {}",
                    if errs.is_empty() {
                        format!("no answer in {} s", cfg.stall.as_secs())
                    } else {
                        errs.join("; ")
                    }
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
    }
    Ok((st, tx, reader))
}

async fn run(cfg: &Config) -> Result<Report, String> {
    let channels = connect_all(&cfg.endpoints, cfg.conns).await?;
    let mut kv = KvClient::new(channels[0].clone());
    let ttl = Duration::from_secs(cfg.ttl as u64);

    // Setup: leases with their keys, kept alive meanwhile.
    let t = Instant::now();
    let ka = KaStreams::open(&channels, KA_STREAMS.min(cfg.leases), KA_WINDOW, cfg.ttl);
    let leased: Arc<Vec<Vec<u8>>> = Arc::new((0..cfg.leases).map(|i| cfg.leased_key(i)).collect());
    let ids = grant_all(&channels, &ka, cfg.leases, cfg.ttl, Some(leased), cfg.stall).await?;
    let n = count_leased(cfg, &mut kv).await?;
    if n != cfg.leases as i64 {
        return Err(format!(
            "{n} leased keys after setup instead of {}",
            cfg.leases
        ));
    }
    let (deletes, watch_tx, watch_reader) = open_watch(cfg, channels[0].clone()).await?;
    let setup = t.elapsed();

    // Arm: renew all at once, then let them go.
    let a0 = Instant::now();
    ka.sweep(cfg.stall)
        .await
        .map_err(|e| format!("arming (renewing every lease once more): {e}"))?;
    let a1 = Instant::now();
    ka.close();
    let e0 = a0 + ttl;
    let e1 = a1 + ttl;
    if a1 + cfg.before >= e0 {
        return Err(format!(
            "renewing {} leases took {:.2} s, not --before-secs {:.1} below the TTL of {} s: raise --ttl",
            cfg.leases,
            (a1 - a0).as_secs_f64(),
            cfg.before.as_secs_f64(),
            cfg.ttl
        ));
    }

    // The put load around the expiry.
    let p0 = e0 - cfg.before;
    tokio::time::sleep_until(p0.into()).await;
    let load = Arc::new(Load {
        keys: Arc::new((0..cfg.key_space).map(|i| cfg.load_key(i)).collect()),
        value: Arc::new((0..cfg.val_size).map(|i| b'a' + (i % 26) as u8).collect()),
        t0: Instant::now(),
        stop: AtomicBool::new(false),
        hard_end: e1 + cfg.max_wait + cfg.after,
        stall: cfg.stall,
    });
    let s_start = sample(cfg.server_pid);
    let clients: Vec<_> = (0..cfg.clients)
        .map(|i| {
            let seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1) | 1;
            tokio::spawn(put_client(
                KvClient::new(channels[i % channels.len()].clone()),
                load.clone(),
                seed,
            ))
        })
        .collect();
    let mut s_e0 = None;
    let mut gone: Option<(Instant, Sample)> = None;
    let mut stop_at = e1 + cfg.max_wait;
    let mut errors: HashMap<String, u64> = HashMap::new();
    let mut polled = Instant::now();
    // Without the watch: the moment a count-only range first saw no key.
    let mut counted_empty: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if s_e0.is_none() && now >= e0 {
            s_e0 = Some(sample(cfg.server_pid));
        }
        if gone.is_none() {
            let (count, last, ended) = {
                let d = lock(&deletes);
                (d.count, d.last, d.ended)
            };
            if count == cfg.leases {
                gone = Some((last.unwrap_or(now), sample(cfg.server_pid)));
            } else if ended && now >= e0 && now >= polled + Duration::from_millis(COUNT_POLL_MS) {
                polled = now;
                if count_leased(cfg, &mut kv).await? == 0 {
                    counted_empty = Some(now);
                    gone = Some((now, sample(cfg.server_pid)));
                }
            }
            if gone.is_some() {
                stop_at = Instant::now() + cfg.after;
            }
        }
        if now >= stop_at {
            break;
        }
        tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
    }
    load.stop.store(true, Ordering::Relaxed);
    let s_end = sample(cfg.server_pid);
    let s_e0 = s_e0.unwrap_or(s_end);
    let mut logs = Vec::with_capacity(clients.len());
    for c in clients {
        logs.push(c.await.map_err(|e| format!("put client: {e}"))?);
    }

    // What is left.
    let remaining_keys = match count_leased(cfg, &mut kv).await {
        Ok(n) => Some(n),
        Err(e) => {
            add_error(&mut errors, e, 1);
            None
        }
    };
    let leases_listed = match leases_listed(&channels[0], &ids, cfg.stall).await {
        Ok(n) => Some(n),
        Err(e) => {
            add_error(&mut errors, e, 1);
            None
        }
    };
    drop(watch_tx);
    watch_reader.abort();

    // Windows.
    let mut windows = vec![Window::new("before", &s_start, &s_e0)];
    match &gone {
        Some((_, s_gone)) => {
            windows.push(Window::new("during", &s_e0, s_gone));
            windows.push(Window::new("after", s_gone, &s_end));
        }
        None => windows.push(Window::new("during", &s_e0, &s_end)),
    }
    let us_since_t0 = |t: Instant| t.saturating_duration_since(load.t0).as_micros() as u64;
    let e0_us = us_since_t0(e0);
    let gone_us = gone.as_ref().map(|(g, _)| us_since_t0(*g));
    let mut puts_total = 0;
    for log in &logs {
        for &(at, us) in &log.ok {
            let w = window_of(at, e0_us, gone_us).min(windows.len() - 1);
            windows[w].hist.saturating_record(us);
            puts_total += 1;
        }
        for (at, kind) in &log.errors {
            let w = window_of(*at, e0_us, gone_us).min(windows.len() - 1);
            windows[w].errors += 1;
            add_error(&mut errors, kind.clone(), 1);
            puts_total += 1;
        }
    }

    // The deletes.
    let d = lock(&deletes);
    let rel = |t: Instant| {
        if t >= e0 {
            (t - e0).as_secs_f64()
        } else {
            -(e0 - t).as_secs_f64()
        }
    };
    let first = d.at.iter().flatten().min().copied();
    let timeline = timeline(&d.at, e0);
    let deleted_early = d.at.iter().flatten().filter(|&&t| t < e0).count();
    for (k, n) in &d.errors {
        // The stream ends because we closed it; only say so if it ended
        // before every delete was seen.
        if k.starts_with("watch stream") && d.count == cfg.leases {
            continue;
        }
        add_error(&mut errors, k.clone(), *n);
    }
    if d.duplicates > 0 {
        add_error(&mut errors, "leased key deleted twice", d.duplicates);
    }
    if deleted_early > 0 {
        add_error(
            &mut errors,
            "leased key deleted before its lease's TTL ran out",
            deleted_early as u64,
        );
    }
    if let Some(n) = remaining_keys.filter(|&n| n > 0) {
        add_error(
            &mut errors,
            format!(
                "leased keys still there at the end ({:.1} s after the last TTL)",
                (s_end.at.saturating_duration_since(e1)).as_secs_f64()
            ),
            n as u64,
        );
    }
    if let Some(n) = leases_listed.filter(|&n| n > 0) {
        add_error(
            &mut errors,
            "expired lease still listed at the end",
            n as u64,
        );
    }
    if d.count < cfg.leases && remaining_keys == Some(0) {
        add_error(
            &mut errors,
            "leased key deleted without a DELETE event on the watch",
            (cfg.leases - d.count) as u64,
        );
    }
    if counted_empty.is_some() {
        add_error(
            &mut errors,
            "watch gone: end of the expiry window from count-only ranges",
            1,
        );
    }
    Ok(Report {
        setup,
        arm: a1 - a0,
        first_delete_s: first.map(rel),
        all_gone_s: gone.as_ref().map(|(g, _)| rel(*g)),
        deleted: d.count,
        deleted_early,
        timeline,
        remaining_keys,
        leases_listed,
        windows,
        errors: sorted(errors),
        client_cpu: s_end.client.saturating_sub(s_start.client),
        puts_total,
    })
}

impl Report {
    fn error_total(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }

    fn json(&self, cfg: &Config) -> String {
        let endpoints: Vec<String> = cfg.endpoints.iter().map(|e| json_str(e)).collect();
        let windows: Vec<String> = self.windows.iter().map(Window::json).collect();
        let f3 = |v: Option<f64>| opt_json(v.map(|v| format!("{v:.3}")));
        format!(
            "{{\"workload\":\"lease-expire\",\"endpoints\":[{}],\"leases\":{},\"ttl\":{},\"clients\":{},\
\"conns\":{},\"threads\":{},\"setup_s\":{:.3},\"arm_s\":{:.3},\"first_delete_s\":{},\"all_gone_s\":{},\
\"deleted\":{},\"deleted_early\":{},\"deletes_per_s\":[{}],\"remaining_keys\":{},\"leases_listed_at_end\":{},\
\"windows\":{{{}}},\"puts\":{},\"errors\":{},\"error_kinds\":{{{}}},\"client_cpu_us_per_put\":{:.2},\
\"server_pid\":{}}}",
            endpoints.join(","),
            cfg.leases,
            cfg.ttl,
            cfg.clients,
            cfg.conns,
            cfg.threads,
            self.setup.as_secs_f64(),
            self.arm.as_secs_f64(),
            f3(self.first_delete_s),
            f3(self.all_gone_s),
            self.deleted,
            self.deleted_early,
            self.timeline
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
            opt_json(self.remaining_keys),
            opt_json(self.leases_listed),
            windows.join(","),
            self.puts_total,
            self.error_total(),
            kinds_json(&self.errors),
            per_req_us(self.client_cpu, self.puts_total),
            opt_json(cfg.server_pid),
        )
    }

    fn text(&self, cfg: &Config) -> String {
        let s = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:+.2} s"));
        let mut out = format!(
            "{} leases (TTL {} s), one key each, granted and put in {:.2} s; renewed all at once in {:.2} s, then let go\n",
            cfg.leases,
            cfg.ttl,
            self.setup.as_secs_f64(),
            self.arm.as_secs_f64()
        );
        out += &format!(
            "deletes (relative to the first deadline): first {}, last (all gone) {}; {} of {} seen, {} early; leased keys left: {}; leases listed: {}\n",
            s(self.first_delete_s),
            s(self.all_gone_s),
            self.deleted,
            cfg.leases,
            self.deleted_early,
            opt_json(self.remaining_keys),
            opt_json(self.leases_listed),
        );
        out += &format!(
            "deletes per second after the first deadline: {}\n",
            self.timeline
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        out += &format!(
            "puts: {} conns x {} clients on {} other keys\n",
            cfg.conns, cfg.clients, cfg.key_space
        );
        for w in &self.windows {
            out += &format!(
                "  {:<6} {:6.2} s: {:8.1} puts/s, {} errors; latency us: {}",
                w.name,
                w.secs,
                w.rate(),
                w.errors,
                lat_text(&w.hist)
            );
            if let (Some(c), Some(u)) = (w.server_cores, w.server_us_per_put()) {
                out += &format!("; server {c:.2} cores, {u:.1} us/put");
            }
            out += &format!("; other CPU {:.2} cores\n", w.other_cores);
        }
        if self.errors.is_empty() {
            out += "errors: none\n";
        } else {
            out += &format!("errors: {}\n", self.error_total());
            for (k, n) in &self.errors {
                out += &format!("  {n:>8}  {k}\n");
            }
        }
        out += &format!(
            "generator CPU: {:.2} us/put (user+sys)\n",
            per_req_us(self.client_cpu, self.puts_total)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::mvccpb::{Event, KeyValue};

    use crate::args::test_args as args;

    #[test]
    fn config_defaults_and_checks() {
        let c = Config::parse(&[]).unwrap();
        assert_eq!((c.leases, c.ttl, c.clients, c.conns), (10_000, 5, 16, 2));
        assert_eq!(c.leased_key(7), b"/ferrocd-perf/lease/leased/0007");
        assert_eq!(c.load_key(7), b"/ferrocd-perf/lease/load/00007");
        assert!(Config::parse(&args(&["--ttl", "1"])).is_err());
        assert!(Config::parse(&args(&["--ttl", "2", "--before-secs", "2"])).is_err());
        assert!(Config::parse(&args(&["--clients", "0"])).is_err());
        assert!(Config::parse(&args(&["--after-secs", "-1"])).is_err());
    }

    #[test]
    fn windows_split_at_expiry_and_gone() {
        assert_eq!(window_of(5, 10, Some(20)), 0);
        assert_eq!(window_of(10, 10, Some(20)), 1);
        assert_eq!(window_of(20, 10, Some(20)), 2);
        assert_eq!(window_of(1_000, 10, None), 1);
        let e0 = Instant::now();
        let at = |ms| Some(e0 + Duration::from_millis(ms));
        assert_eq!(
            timeline(
                &[
                    at(10),
                    None,
                    at(999),
                    at(2500),
                    Some(e0 - Duration::from_millis(5))
                ],
                e0
            ),
            vec![3, 0, 1]
        );
    }

    #[test]
    fn deletes_are_checked() {
        let mut d = Deletes::new(b"p/leased/".to_vec(), 3);
        d.on_response(
            WatchResponse {
                created: true,
                ..Default::default()
            },
            Instant::now(),
        );
        assert!(d.created);
        let ev = |t: EventType, key: &[u8]| Event {
            r#type: t as i32,
            kv: Some(KeyValue {
                key: key.to_vec(),
                ..Default::default()
            }),
            prev_kv: None,
        };
        let now = Instant::now();
        d.on_response(
            WatchResponse {
                events: vec![
                    ev(EventType::Delete, b"p/leased/1"),
                    ev(EventType::Delete, b"p/leased/1"),
                    ev(EventType::Delete, b"p/leased/3"),
                    ev(EventType::Put, b"p/leased/0"),
                    ev(EventType::Delete, b"p/leased/2"),
                ],
                ..Default::default()
            },
            now,
        );
        assert_eq!((d.count, d.duplicates), (2, 1));
        assert_eq!(d.errors.len(), 2, "{:?}", d.errors);
        assert_eq!(d.last, Some(now));
        assert_eq!(prefix_end(b"p/leased/"), b"p/leased0");
    }
}
