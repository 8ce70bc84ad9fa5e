//! Differential test: one seeded random sequence of KV operations goes to
//! ferrocd and to a real etcd (both started here), in lockstep, and every
//! answer must match: the whole response (kvs, count, more, prev_kv(s),
//! deleted, succeeded, nested responses, header revision) or, for errors,
//! the gRPC code and the message byte for byte. Header `cluster_id`,
//! `member_id` and `raft_term` are ignored.
//!
//! Knobs: `FERROCD_DIFF_SEED` (default [`DEFAULT_SEED`]),
//! `FERROCD_DIFF_OPS` (default [`DEFAULT_OPS`]), `FERROCD_DIFF_VERBOSE=1`
//! prints every op. A mismatch panics with the seed and the op index, so
//! `FERROCD_DIFF_SEED=<seed> FERROCD_DIFF_OPS=<index + 1>` replays it.
//!
//! The generator follows the store through etcd's answers (current and
//! compacted revision) so it can aim reads and compactions at past,
//! compacted and future revisions. The key space is small (30 keys under a
//! few prefixes, including 0x00/0xff edge bytes) so keys collide, values
//! repeat (ties in VALUE compares and sorts), txns nest two levels deep,
//! some txns delete from-key and then write and read the same keys, and
//! about one op in twenty is a deliberately bad request (empty keys, too
//! many ops, duplicate keys, unknown leases, ignore_* on missing keys,
//! future/compacted revisions, requests over `--max-request-bytes`).
//!
//! The reference is Debian's etcd 3.4. For the KV apply path it is the
//! same code as 3.5 up to tracing (`etcdserver/apply.go` `Put`,
//! `DeleteRange`, `Range`, `Txn`, `applyTxn` in v3.4.23 vs
//! `server/etcdserver/apply.go` in v3.5.21; `api/v3rpc/key.go` differs only
//! in imports), so no 3.4-vs-3.5 exclusion is needed. One etcd *bug* is
//! kept out of generation: see [`TxnKeys::from_key_delete`].
//!
//! One thing is compared up to etcd's freedom: sorting by a non-KEY target
//! uses Go's unstable `sort.Sort` (`etcdserver/apply.go` `Range`), so kvs
//! that tie on the sort target are compared as a set, and a tie group cut
//! by `limit` only by its size and sort value.

mod common;

use ferrocd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse,
};
use ferrocd_proto::mvccpb::KeyValue;
use ferrocd_proto::tonic::{transport::Channel, Code};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Seed when `FERROCD_DIFF_SEED` is unset.
const DEFAULT_SEED: u64 = 0x5eed_e7cd_0001;
/// Operations per run when `FERROCD_DIFF_OPS` is unset.
const DEFAULT_OPS: u64 = 3000;
/// How long one op may take on either server before the test gives up.
const OP_TIMEOUT: Duration = Duration::from_secs(20);
/// Whether to send requests over the gRPC receive limit (2 MiB). etcd
/// answers ResourceExhausted `grpc: received message larger than max (N vs.
/// M)`; ferrocd today answers tonic's OutOfRange `Error, decoded message
/// length too large: found N bytes, the limit is: M bytes` (a bug in the
/// server edge, `src/`). Turn on once the edge maps it.
const GRPC_LIMIT_CASE: bool = true;
/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

/// The key space: 30 keys under a few prefixes, with 0x00 and 0xff edges
/// (prefix ends that carry, a key that is a prefix of others, the smallest
/// possible key).
const KEYS: [&[u8]; 30] = [
    b"\x00",
    b"\x01",
    b"a",
    b"a/1",
    b"a/2",
    b"a/3",
    b"a/4",
    b"a/5",
    b"a/b/1",
    b"a/b/2",
    b"a/b/3",
    b"a\xff",
    b"a\xff\xff",
    b"b",
    b"b/1",
    b"b/2",
    b"b/3",
    b"b/4",
    b"b/5",
    b"b/6",
    b"c/1",
    b"c/2",
    b"c/3",
    b"c/4",
    b"d",
    b"d/x",
    b"e\x00",
    b"e\x00\x01",
    b"\xff",
    b"\xff\xff",
];

/// Prefixes used for prefix ranges (etcd's `WithPrefix`).
const PREFIXES: [&[u8]; 11] = [
    b"a",
    b"a/",
    b"a/b/",
    b"a\xff",
    b"b/",
    b"c/",
    b"d",
    b"e\x00",
    b"\xff",
    b"\xff\xff",
    b"\x00",
];

/// Values repeat on purpose so VALUE compares and sorts see ties.
const VALUES: [&[u8]; 8] = [b"v0", b"v1", b"v2", b"v3", b"v4", b"w", b"\x00", b"\xff"];

// ---- the test -----------------------------------------------------------------

#[test]
fn ferrocd_answers_every_kv_op_like_etcd() {
    let seed = env_u64("FERROCD_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let ops = env_u64("FERROCD_DIFF_OPS").unwrap_or(DEFAULT_OPS);
    let verbose = std::env::var_os("FERROCD_DIFF_VERBOSE").is_some_and(|v| v != "0");
    eprintln!("differential: seed {seed} (FERROCD_DIFF_SEED), {ops} ops (FERROCD_DIFF_OPS)");

    let dir = tempfile::tempdir().expect("temp dir");
    let ferrocd = common::Server::ferrocd(dir.path(), &[]);
    let etcd = common::Server::etcd(dir.path(), &[]);
    let rt = common::runtime();
    let started = Instant::now();
    let stats = rt.block_on(async {
        let mut ours = connect(&ferrocd.url()).await;
        let mut theirs = connect(&etcd.url()).await;
        let mut gen = Gen::new(seed);
        let mut stats = Stats::default();
        for i in 0..ops {
            let op = gen.op();
            if verbose {
                eprintln!("op {i}: {}", show_op(&op));
            }
            let (a, b) = tokio::join!(send(&mut ours, &op), send(&mut theirs, &op));
            let logs = || {
                format!(
                    "ferrocd log tail:\n{}\netcd log tail:\n{}",
                    tail(&ferrocd.log(), 10),
                    tail(&etcd.log(), 10)
                )
            };
            let (Ok(a), Ok(b)) = (a, b) else {
                panic!(
                    "seed {seed} op {i}: no answer within {OP_TIMEOUT:?}\nop: {}\n{}",
                    show_op(&op),
                    logs()
                );
            };
            let (a, b) = (normalize(&op, a), normalize(&op, b));
            if a != b {
                // A dead or failing server answers Unavailable/Unknown/
                // Internal: its log says why.
                let broken = [&a, &b].iter().any(|r| {
                    matches!(r, Err((c, _)) if matches!(c, Code::Unavailable | Code::Unknown | Code::Internal))
                });
                panic!(
                    "seed {seed} op {i}: ferrocd and etcd disagree \
                     (replay: FERROCD_DIFF_SEED={seed} FERROCD_DIFF_OPS={})\n\
                     op:      {}\nferrocd: {}\netcd:    {}\n{}",
                    i + 1,
                    show_op(&op),
                    show_reply(&a),
                    show_reply(&b),
                    if broken { logs() } else { String::new() }
                );
            }
            gen.observe(&op, &b);
            stats.record(&op, &b);
        }
        stats
    });
    eprintln!(
        "differential: {ops} ops matched in {:.1?} (final revision {})\n{}",
        started.elapsed(),
        stats.last_revision,
        stats.summary()
    );
    if ops >= 1000 {
        stats.assert_coverage();
    }
    drop(ferrocd);
    drop(etcd);
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn connect(url: &str) -> KvClient<Channel> {
    let channel = Channel::from_shared(url.to_string())
        .expect("endpoint url")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    // Txns of 128 ranges over the whole key space answer a few hundred KiB.
    KvClient::new(channel).max_decoding_message_size(64 << 20)
}

// ---- ops and replies --------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

#[derive(Clone, Debug, PartialEq)]
enum Answer {
    Range(RangeResponse),
    Put(PutResponse),
    Delete(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
}

/// An answer or an error as (gRPC code, message).
type Reply = Result<Answer, (Code, String)>;

/// Sends one op; `Err` only when it timed out.
async fn send(c: &mut KvClient<Channel>, op: &Op) -> Result<Reply, tokio::time::error::Elapsed> {
    let call = async {
        let r = match op {
            Op::Range(q) => c
                .range(q.clone())
                .await
                .map(|r| Answer::Range(r.into_inner())),
            Op::Put(q) => c.put(q.clone()).await.map(|r| Answer::Put(r.into_inner())),
            Op::Delete(q) => c
                .delete_range(q.clone())
                .await
                .map(|r| Answer::Delete(r.into_inner())),
            Op::Txn(q) => c.txn(q.clone()).await.map(|r| Answer::Txn(r.into_inner())),
            Op::Compact(q) => c.compact(*q).await.map(|r| Answer::Compact(r.into_inner())),
        };
        r.map_err(|s| (s.code(), s.message().to_string()))
    };
    tokio::time::timeout(OP_TIMEOUT, call).await
}

fn top_header(a: &Answer) -> Option<&ResponseHeader> {
    match a {
        Answer::Range(r) => r.header.as_ref(),
        Answer::Put(r) => r.header.as_ref(),
        Answer::Delete(r) => r.header.as_ref(),
        Answer::Txn(r) => r.header.as_ref(),
        Answer::Compact(r) => r.header.as_ref(),
    }
}

// ---- normalization ------------------------------------------------------------------

/// Clears what may differ: the identity fields of the top-level header and
/// the order of kvs that tie under a non-KEY sort. Nested headers are left
/// alone: etcd sends them with revision only (or empty), and so must we.
fn normalize(op: &Op, reply: Reply) -> Reply {
    let mut answer = reply?;
    let header = match &mut answer {
        Answer::Range(r) => &mut r.header,
        Answer::Put(r) => &mut r.header,
        Answer::Delete(r) => &mut r.header,
        Answer::Txn(r) => &mut r.header,
        Answer::Compact(r) => &mut r.header,
    };
    if let Some(h) = header {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
    match (op, &mut answer) {
        (Op::Range(q), Answer::Range(r)) => canon_range(q, r),
        (Op::Txn(q), Answer::Txn(r)) => canon_txn(q, r),
        _ => {}
    }
    Ok(answer)
}

fn canon_txn(q: &TxnRequest, r: &mut TxnResponse) {
    let ops = if r.succeeded { &q.success } else { &q.failure };
    for (op, resp) in ops.iter().zip(r.responses.iter_mut()) {
        match (&op.request, &mut resp.response) {
            (Some(Request::RequestRange(q)), Some(Response::ResponseRange(r))) => canon_range(q, r),
            (Some(Request::RequestTxn(q)), Some(Response::ResponseTxn(r))) => canon_txn(q, r),
            _ => {}
        }
    }
}

/// The value a kv is sorted by under `target` (KEY excluded).
fn sort_value(target: i32, kv: &KeyValue) -> (i64, &[u8]) {
    match SortTarget::try_from(target) {
        Ok(SortTarget::Version) => (kv.version, &[]),
        Ok(SortTarget::Create) => (kv.create_revision, &[]),
        Ok(SortTarget::Mod) => (kv.mod_revision, &[]),
        Ok(SortTarget::Value) => (0, &kv.value),
        _ => (0, &kv.key),
    }
}

/// Only the sort value of a kv (a member of a tie group cut by `limit`).
fn sort_value_only(target: i32, kv: &KeyValue) -> KeyValue {
    let mut out = KeyValue::default();
    match SortTarget::try_from(target) {
        Ok(SortTarget::Version) => out.version = kv.version,
        Ok(SortTarget::Create) => out.create_revision = kv.create_revision,
        Ok(SortTarget::Mod) => out.mod_revision = kv.mod_revision,
        Ok(SortTarget::Value) => out.value = kv.value.clone(),
        _ => out.key = kv.key.clone(),
    }
    out
}

/// Puts kvs that tie on a non-KEY sort target into key order (etcd's
/// `sort.Sort` is unstable, so their order is unspecified); a tie group cut
/// by `limit` keeps only its size and sort value.
fn canon_range(q: &RangeRequest, r: &mut RangeResponse) {
    let sorts = q.sort_target != SortTarget::Key as i32
        && SortOrder::try_from(q.sort_order).is_ok()
        && SortTarget::try_from(q.sort_target).is_ok();
    if !sorts || r.kvs.is_empty() {
        return;
    }
    if q.keys_only && q.sort_target == SortTarget::Value as i32 {
        // Sorted by value, then the values were dropped: the tie groups
        // are invisible. Compare the set of keys, or only the size when
        // `limit` cut it.
        if r.more {
            r.kvs.iter_mut().for_each(|kv| *kv = KeyValue::default());
        } else {
            r.kvs.sort_by(|a, b| a.key.cmp(&b.key));
        }
        return;
    }
    let n = r.kvs.len();
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n
            && sort_value(q.sort_target, &r.kvs[end]) == sort_value(q.sort_target, &r.kvs[start])
        {
            end += 1;
        }
        if end == n && r.more {
            for kv in &mut r.kvs[start..] {
                *kv = sort_value_only(q.sort_target, kv);
            }
        } else {
            r.kvs[start..end].sort_by(|a, b| a.key.cmp(&b.key));
        }
        start = end;
    }
}

// ---- the generator --------------------------------------------------------------------

/// SplitMix64: tiny, seedable, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`; `lo` when the interval is empty.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next() % ((hi - lo) as u64 + 1)) as i64
    }
    /// True with probability `pct`%.
    fn pct(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// The random op source. It follows the store through etcd's answers.
struct Gen {
    rng: Rng,
    /// Current store revision (from the last answer's header).
    rev: i64,
    /// The last successful compaction, `0` before any.
    compacted: i64,
}

/// What the txn being built has written so far.
#[derive(Default)]
struct TxnKeys {
    /// Keys put or deleted: picking fresh ones most of the time keeps
    /// `duplicate key` a deliberate case, not the norm.
    used: Vec<Vec<u8>>,
    /// A from-key delete (`range_end = "\0"`) came earlier in execution
    /// order. etcd's duplicate check compares delete intervals literally
    /// (etcd v3.4.23 `etcdserver/api/v3rpc/key.go:196`
    /// `adt.NewStringAffineInterval(key, "\0")` is an inverted interval
    /// that intersects nothing), so an `ignore_value`/`ignore_lease` put of
    /// a key that delete removed passes every check, fails with
    /// `ErrKeyNotFound` in `Put` (`etcdserver/apply.go:210`) and etcd
    /// *panics* (`applyTxn`, `apply.go:544` "unexpected error during txn";
    /// same in v3.5.21 `server/etcdserver/apply.go:285,486`). ferrocd
    /// answers `key not found` instead (`shards/src/keyspace.rs`
    /// `ignore_put_after_delete`). Such a txn would kill the reference
    /// server, so after a from-key delete the generator makes no
    /// `ignore_*` puts in the same txn.
    from_key_delete: bool,
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().unwrap() += 1;
            return end;
        }
        end.pop();
    }
    // All 0xff: etcd's GetPrefixRangeEnd answers "\0" (every key >= prefix).
    vec![0]
}

fn op_of(request: Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen {
            rng: Rng(seed),
            rev: 1,
            compacted: 0,
        }
    }

    /// Follows the store: the revision of every answer, and compactions.
    fn observe(&mut self, op: &Op, reply: &Reply) {
        let Ok(answer) = reply else { return };
        if let Some(h) = top_header(answer) {
            self.rev = self.rev.max(h.revision);
        }
        if let Op::Compact(c) = op {
            self.compacted = self.compacted.max(c.revision);
        }
    }

    fn op(&mut self) -> Op {
        match self.rng.below(100) {
            0..=29 => Op::Put(self.put_random()),
            30..=53 => Op::Range(self.range()),
            54..=65 => Op::Delete(self.delete()),
            66..=90 => Op::Txn(self.txn(0, &mut TxnKeys::default())),
            91..=93 => Op::Txn(self.delete_then_write_txn()),
            94 => Op::Compact(self.compact()),
            _ => self.bad(),
        }
    }

    fn key(&mut self) -> Vec<u8> {
        self.rng.pick(&KEYS).to_vec()
    }

    fn value(&mut self) -> Vec<u8> {
        match self.rng.below(10) {
            0 => Vec::new(),
            1..=6 => self.rng.pick(&VALUES).to_vec(),
            _ => {
                let n = self.rng.below(16) + 1;
                (0..n)
                    .map(|_| *self.rng.pick(&[0u8, b'a', b'b', b'v', b'0', 0x7f, 0xff]))
                    .collect()
            }
        }
    }

    /// A key and range end, etcd's encodings: single key, prefix, from-key
    /// ("\0"), everything ("\0".."\0"), an arbitrary (possibly inverted or
    /// empty) interval, `[k, k\0)`.
    fn span(&mut self) -> (Vec<u8>, Vec<u8>) {
        match self.rng.below(20) {
            0..=6 => (self.key(), Vec::new()),
            7..=10 => {
                let p = self.rng.pick(&PREFIXES).to_vec();
                let end = prefix_end(&p);
                (p, end)
            }
            11..=12 => (self.key(), vec![0]),
            13 => (vec![0], vec![0]),
            14..=17 => (self.key(), self.key()),
            18 => {
                let k = self.key();
                let mut end = k.clone();
                end.push(0);
                (k, end)
            }
            _ => {
                // A key that is not in the key space, as a point or a start.
                let mut k = self.key();
                k.push(b'~');
                let end = if self.rng.pct(50) {
                    Vec::new()
                } else {
                    prefix_end(&k)
                };
                (k, end)
            }
        }
    }

    /// A revision to read at: mostly current, else past, exactly the
    /// compaction point, below it, negative, or in the future.
    fn read_revision(&mut self) -> i64 {
        let floor = self.compacted.max(1);
        match self.rng.below(40) {
            0..=25 => 0,
            26..=31 => self.rng.between(floor, self.rev),
            32 if self.rng.pct(20) => i64::MIN,
            32 => -self.rng.between(1, 3),
            33 => self.compacted,
            34 if self.compacted > 1 => self.rng.between(1, self.compacted - 1),
            35 => self.rev,
            36..=37 => self.rev + 1,
            38 if self.rng.pct(20) => i64::MAX,
            38 => self.rev + self.rng.between(2, 1000),
            _ => self.rng.between(0, self.rev + 2),
        }
    }

    fn range(&mut self) -> RangeRequest {
        let (key, range_end) = self.span();
        self.range_of(key, range_end)
    }

    /// A range inside a txn: a bad revision fails the whole txn, so it is
    /// rarer here than alone.
    fn txn_range(&mut self) -> RangeRequest {
        let mut r = self.range();
        if self.rng.pct(70) {
            r.revision = if self.rng.pct(50) {
                0
            } else {
                self.rng.between(self.compacted.max(1), self.rev)
            };
        }
        r
    }

    fn range_of(&mut self, key: Vec<u8>, range_end: Vec<u8>) -> RangeRequest {
        let limit = match self.rng.below(20) {
            0..=9 => 0,
            10..=16 => self.rng.between(1, 5),
            17 => -self.rng.between(1, 2),
            18 if self.rng.pct(25) => i64::MAX, // etcd's `limit + 1` wraps
            _ => self.rng.between(6, 40),
        };
        let sort_order = match self.rng.below(20) {
            0 => 3, // not a SortOrder: etcd reads everything, sorts nothing
            n => (n % 3) as i32,
        };
        let filter = |g: &mut Gen| match g.rng.below(100) {
            0..=5 => g.rng.between(1, g.rev + 1),
            6..=10 => g.rev - g.rng.between(0, 30),
            11 => -g.rng.between(1, 3),
            _ => 0,
        };
        RangeRequest {
            key,
            range_end,
            limit,
            revision: self.read_revision(),
            sort_order,
            sort_target: self.rng.below(5) as i32,
            serializable: self.rng.pct(30),
            keys_only: self.rng.pct(20),
            count_only: self.rng.pct(10),
            min_mod_revision: filter(self),
            max_mod_revision: filter(self),
            min_create_revision: filter(self),
            max_create_revision: filter(self),
        }
    }

    fn put_random(&mut self) -> PutRequest {
        let key = self.key();
        self.put(key)
    }

    fn put(&mut self, key: Vec<u8>) -> PutRequest {
        let mut p = PutRequest {
            key,
            value: self.value(),
            lease: 0,
            prev_kv: self.rng.pct(40),
            ignore_value: false,
            ignore_lease: false,
        };
        if self.rng.pct(8) {
            p.ignore_value = true;
            if self.rng.pct(85) {
                p.value.clear();
            }
        }
        if self.rng.pct(8) {
            p.ignore_lease = true;
        }
        if self.rng.pct(4) {
            // No lease exists on either server: `requested lease not found`
            // (or `lease is provided` with ignore_lease).
            p.lease = self.rng.between(1, 1 << 40);
        }
        p
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        let (key, range_end) = self.span();
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.rng.pct(50),
        }
    }

    fn compact(&mut self) -> CompactionRequest {
        let revision = match self.rng.below(10) {
            // Valid: keep a window of history behind the head.
            0..=4 if self.rev - 5 > self.compacted => {
                self.rng.between(self.compacted + 1, self.rev - 5)
            }
            0..=5 => self.rng.between(self.compacted + 1, self.rev),
            6 => self.compacted,
            7 => self.rng.between(self.compacted - 3, self.compacted),
            8 => self.rev + 1,
            9 if self.rng.pct(20) => i64::MAX,
            _ => self.rev + self.rng.between(2, 100),
        };
        CompactionRequest {
            revision,
            physical: self.rng.pct(50),
        }
    }

    fn compare(&mut self) -> Compare {
        let (key, range_end) = if self.rng.pct(75) {
            (self.key(), Vec::new())
        } else {
            self.span()
        };
        let target = match self.rng.below(51) {
            50 => 9, // not a CompareTarget: etcd's compareKV compares nothing (equal)
            n => (n % 5) as i32,
        };
        let result = match self.rng.below(41) {
            40 => 7, // not a CompareResult: etcd answers true
            n => (n % 4) as i32,
        };
        let union_target = if self.rng.pct(5) {
            self.rng.below(6) as i32 // often mismatched; 5 = no union at all
        } else {
            target
        };
        // Recent writes have revisions near the head: aim there often.
        let revision = |g: &mut Gen| match g.rng.below(8) {
            0 => 0,
            1..=3 => g.rng.between(1, g.rev + 1),
            4 if g.rng.pct(10) => -1,
            _ => g.rev - g.rng.between(0, 15),
        };
        let target_union = match CompareTarget::try_from(union_target) {
            Ok(CompareTarget::Version) => Some(TargetUnion::Version(self.rng.between(0, 8))),
            Ok(CompareTarget::Create) => Some(TargetUnion::CreateRevision(revision(self))),
            Ok(CompareTarget::Mod) => Some(TargetUnion::ModRevision(revision(self))),
            Ok(CompareTarget::Value) => Some(TargetUnion::Value(self.value())),
            Ok(CompareTarget::Lease) => Some(TargetUnion::Lease(if self.rng.pct(80) {
                0
            } else {
                self.rng.between(-1, 3)
            })),
            Err(_) => None,
        };
        Compare {
            result,
            target,
            key,
            range_end,
            target_union,
        }
    }

    /// A write key for a txn: fresh (not yet written by this txn) unless
    /// the dice ask for a duplicate.
    fn txn_key(&mut self, keys: &mut TxnKeys) -> Vec<u8> {
        if !keys.used.is_empty() && self.rng.pct(4) {
            return self.rng.pick(&keys.used).clone();
        }
        for _ in 0..8 {
            let k = self.key();
            if !keys.used.contains(&k) {
                keys.used.push(k.clone());
                return k;
            }
        }
        self.key()
    }

    fn txn(&mut self, depth: usize, keys: &mut TxnKeys) -> TxnRequest {
        let compares = self.rng.below(4);
        let compare = (0..compares).map(|_| self.compare()).collect();
        let n_success = self.rng.below(5);
        let success = (0..n_success).map(|_| self.txn_op(depth, keys)).collect();
        let n_failure = self.rng.below(5);
        let failure = (0..n_failure).map(|_| self.txn_op(depth, keys)).collect();
        TxnRequest {
            compare,
            success,
            failure,
        }
    }

    fn txn_op(&mut self, depth: usize, keys: &mut TxnKeys) -> RequestOp {
        match self.rng.below(100) {
            0..=37 => op_of(Request::RequestRange(self.txn_range())),
            38..=69 => {
                let k = self.txn_key(keys);
                let mut p = self.put(k);
                // Fewer ignore_* puts than alone: a missing key fails the
                // whole txn, and we want most txns to execute.
                if keys.from_key_delete || self.rng.pct(60) {
                    p.ignore_value = false;
                    p.ignore_lease = false;
                }
                op_of(Request::RequestPut(p))
            }
            70..=84 => {
                let (key, range_end) = if self.rng.pct(75) {
                    (self.txn_key(keys), Vec::new())
                } else {
                    self.span()
                };
                keys.from_key_delete |= range_end == [0];
                op_of(Request::RequestDeleteRange(DeleteRangeRequest {
                    key,
                    range_end,
                    prev_kv: self.rng.pct(50),
                }))
            }
            85..=98 if depth < 2 => op_of(Request::RequestTxn(self.txn(depth + 1, keys))),
            99 => RequestOp { request: None },
            _ => op_of(Request::RequestRange(self.txn_range())),
        }
    }

    /// A txn that mixes from-key deletes with puts, ranges and more
    /// deletes of the same keys. etcd's duplicate check lets these through
    /// (see [`TxnKeys::from_key_delete`]), so one txn can put a key, delete
    /// it and read it back at one revision: the txn's reads must see its
    /// own earlier writes, sub-revision by sub-revision.
    fn delete_then_write_txn(&mut self) -> TxnRequest {
        let from_key = |g: &mut Gen| {
            let (key, range_end) = match g.rng.below(4) {
                0 => (vec![0], vec![0]),
                1 => (b"\xff".to_vec(), prefix_end(b"\xff")),
                _ => (g.key(), vec![0]),
            };
            op_of(Request::RequestDeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: g.rng.pct(70),
            }))
        };
        let mut put_keys: Vec<Vec<u8>> = Vec::new();
        let mut ops = Vec::new();
        let n = self.rng.between(3, 8);
        for _ in 0..n {
            let op = match self.rng.below(10) {
                0..=2 => from_key(self),
                3..=5 => {
                    // A key put once per txn: a second put is a duplicate.
                    let k = self.key();
                    if put_keys.contains(&k) {
                        op_of(Request::RequestRange(self.range_of(k, Vec::new())))
                    } else {
                        put_keys.push(k.clone());
                        let mut p = self.put(k);
                        p.ignore_value = false;
                        p.ignore_lease = false;
                        p.lease = 0;
                        p.prev_kv = self.rng.pct(70);
                        op_of(Request::RequestPut(p))
                    }
                }
                6..=8 => {
                    let (key, range_end) = self.span();
                    let mut r = self.range_of(key, range_end);
                    r.revision = 0;
                    op_of(Request::RequestRange(r))
                }
                _ => {
                    // A nested txn of from-key deletes and ranges.
                    let range = self.range_of(vec![0], vec![0]);
                    let del = from_key(self);
                    op_of(Request::RequestTxn(TxnRequest {
                        compare: vec![self.compare()],
                        success: vec![del, op_of(Request::RequestRange(range))],
                        failure: vec![],
                    }))
                }
            };
            ops.push(op);
        }
        TxnRequest {
            compare: if self.rng.pct(30) {
                vec![self.compare()]
            } else {
                vec![]
            },
            success: ops,
            failure: vec![],
        }
    }

    /// Requests etcd rejects (or treats specially) before or while
    /// applying them.
    fn bad(&mut self) -> Op {
        let point_get = |k: &[u8]| {
            op_of(Request::RequestRange(RangeRequest {
                key: k.to_vec(),
                ..Default::default()
            }))
        };
        match self.rng.below(15) {
            0 => Op::Range(RangeRequest {
                key: Vec::new(),
                range_end: if self.rng.pct(50) {
                    vec![0]
                } else {
                    Vec::new()
                },
                ..Default::default()
            }),
            1 => Op::Put(PutRequest {
                key: Vec::new(),
                value: self.value(),
                ..Default::default()
            }),
            2 => Op::Delete(DeleteRangeRequest {
                key: Vec::new(),
                range_end: b"z".to_vec(),
                ..Default::default()
            }),
            3 => {
                // An empty key in a compare or deep inside a nested txn.
                let mut t = self.txn(0, &mut TxnKeys::default());
                if self.rng.pct(50) {
                    let mut c = self.compare();
                    c.key.clear();
                    t.compare.push(c);
                } else {
                    let inner = TxnRequest {
                        compare: vec![],
                        success: vec![op_of(Request::RequestPut(PutRequest::default()))],
                        failure: vec![],
                    };
                    t.failure.push(op_of(Request::RequestTxn(inner)));
                }
                Op::Txn(t)
            }
            4 => {
                // Too many ops: compares, success or failure over the limit.
                let n = MAX_TXN_OPS + self.rng.below(2);
                let mut t = TxnRequest::default();
                match self.rng.below(3) {
                    0 => {
                        t.compare = (0..n)
                            .map(|_| {
                                let mut c = self.compare();
                                c.range_end.clear();
                                c
                            })
                            .collect()
                    }
                    1 => t.success = (0..n).map(|_| point_get(&self.key())).collect(),
                    _ => t.failure = (0..n).map(|_| point_get(&self.key())).collect(),
                }
                Op::Txn(t)
            }
            5 => {
                // A nested txn gets what its parent leaves of the budget.
                let outer = self.rng.below(4) + 1;
                let inner = MAX_TXN_OPS - outer + self.rng.below(2);
                let nested = TxnRequest {
                    compare: vec![],
                    success: (0..inner).map(|_| point_get(&self.key())).collect(),
                    failure: vec![],
                };
                let mut success: Vec<RequestOp> =
                    (1..outer).map(|_| point_get(&self.key())).collect();
                success.push(op_of(Request::RequestTxn(nested)));
                Op::Txn(TxnRequest {
                    compare: vec![],
                    success,
                    failure: vec![],
                })
            }
            6 => {
                // Two puts of one key.
                let k = self.key();
                let mut t = self.txn(1, &mut TxnKeys::default());
                t.success
                    .push(op_of(Request::RequestPut(self.put(k.clone()))));
                t.success.push(op_of(Request::RequestPut(self.put(k))));
                Op::Txn(t)
            }
            7 => {
                // A put inside a range deleted in the same branch (or in a
                // nested txn), in either order.
                let p = self.rng.pick(&PREFIXES).to_vec();
                let mut k = p.clone();
                k.extend_from_slice(b"x");
                let del = op_of(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: p.clone(),
                    range_end: prefix_end(&p),
                    prev_kv: false,
                }));
                let mut put = self.put(k);
                // The delete may be from-key ("\xff" has no prefix end): see
                // `TxnKeys::from_key_delete`.
                put.ignore_value = false;
                put.ignore_lease = false;
                let mut ops = vec![del, op_of(Request::RequestPut(put))];
                if self.rng.pct(50) {
                    ops.reverse();
                }
                if self.rng.pct(30) {
                    let inner = TxnRequest {
                        compare: vec![],
                        success: vec![ops.pop().unwrap()],
                        failure: vec![],
                    };
                    ops.push(op_of(Request::RequestTxn(inner)));
                }
                Op::Txn(TxnRequest {
                    compare: vec![],
                    success: ops,
                    failure: vec![],
                })
            }
            8 => {
                // then/else of one nested txn may write the same key; two
                // nested txns may not.
                let k = self.key();
                let inner = TxnRequest {
                    compare: vec![self.compare()],
                    success: vec![op_of(Request::RequestPut(self.put(k.clone())))],
                    failure: vec![op_of(Request::RequestPut(self.put(k.clone())))],
                };
                let mut success = vec![op_of(Request::RequestTxn(inner.clone()))];
                if self.rng.pct(50) {
                    success.push(op_of(Request::RequestTxn(inner)));
                }
                Op::Txn(TxnRequest {
                    compare: vec![],
                    success,
                    failure: vec![],
                })
            }
            9 => {
                // An unknown lease, alone or in a txn.
                let mut p = self.put_random();
                p.lease = self.rng.between(1, 1 << 62);
                p.ignore_lease = false;
                if self.rng.pct(50) {
                    Op::Put(p)
                } else {
                    let mut t = self.txn(
                        1,
                        &mut TxnKeys {
                            used: vec![p.key.clone()],
                            from_key_delete: false,
                        },
                    );
                    t.compare.clear();
                    t.success.push(op_of(Request::RequestPut(p)));
                    Op::Txn(t)
                }
            }
            10 => {
                // ignore_value / ignore_lease, possibly on a missing key,
                // possibly with a value or lease given.
                let mut p = self.put_random();
                p.ignore_value = self.rng.pct(60);
                p.ignore_lease = !p.ignore_value || self.rng.pct(30);
                if self.rng.pct(70) {
                    p.value.clear();
                }
                if self.rng.pct(20) {
                    p.lease = 7;
                }
                if self.rng.pct(50) {
                    Op::Put(p)
                } else {
                    Op::Txn(TxnRequest {
                        compare: vec![],
                        success: vec![op_of(Request::RequestPut(p))],
                        failure: vec![],
                    })
                }
            }
            11 => {
                // A range at a future or compacted revision, alone or in a txn.
                let revision = match self.rng.below(3) {
                    0 => self.rev + 1,
                    1 if self.compacted > 1 => self.compacted - 1,
                    _ => -self.rng.between(1, 5),
                };
                let mut r = self.range();
                r.revision = revision;
                if self.rng.pct(50) {
                    Op::Range(r)
                } else {
                    let mut t = self.txn(1, &mut TxnKeys::default());
                    t.compare.clear();
                    t.success.push(op_of(Request::RequestRange(r)));
                    Op::Txn(t)
                }
            }
            12 => {
                // An empty request op.
                let mut t = self.txn(1, &mut TxnKeys::default());
                t.compare.clear();
                t.success.insert(0, RequestOp { request: None });
                Op::Txn(t)
            }
            13 => {
                // Over --max-request-bytes (1.5 MiB): etcd's `request is too
                // large`; over the gRPC receive limit (+512 KiB): gRPC's own
                // ResourceExhausted.
                let size = if GRPC_LIMIT_CASE && self.rng.pct(50) {
                    2100 << 10
                } else {
                    1600 << 10
                };
                let p = PutRequest {
                    key: self.key(),
                    value: vec![b'x'; size],
                    ..Default::default()
                };
                if self.rng.pct(50) {
                    Op::Put(p)
                } else {
                    Op::Txn(TxnRequest {
                        compare: vec![],
                        success: vec![op_of(Request::RequestPut(p))],
                        failure: vec![],
                    })
                }
            }
            _ => Op::Compact(CompactionRequest {
                revision: match self.rng.below(3) {
                    0 => self.compacted,
                    1 => self.rev + 1,
                    _ => -1,
                },
                physical: false,
            }),
        }
    }
}

// ---- statistics ---------------------------------------------------------------------------

/// What the run exercised, so a degenerate generator fails loudly.
#[derive(Default)]
struct Stats {
    /// (op kind, outcome) -> count; outcome is "ok" or the error message.
    outcomes: BTreeMap<(&'static str, String), u64>,
    txn_succeeded: u64,
    txn_failed: u64,
    nested_txns: u64,
    more: u64,
    last_revision: i64,
}

impl Stats {
    fn record(&mut self, op: &Op, reply: &Reply) {
        let kind = match op {
            Op::Range(_) => "range",
            Op::Put(_) => "put",
            Op::Delete(_) => "delete",
            Op::Txn(_) => "txn",
            Op::Compact(_) => "compact",
        };
        let outcome = match reply {
            Ok(a) => {
                if let Some(h) = top_header(a) {
                    self.last_revision = h.revision;
                }
                match a {
                    Answer::Txn(t) => {
                        if t.succeeded {
                            self.txn_succeeded += 1;
                        } else {
                            self.txn_failed += 1;
                        }
                        self.nested_txns += t
                            .responses
                            .iter()
                            .filter(|r| matches!(r.response, Some(Response::ResponseTxn(_))))
                            .count() as u64;
                    }
                    Answer::Range(r) if r.more => self.more += 1,
                    _ => {}
                }
                "ok".to_string()
            }
            Err((_, msg)) => msg.clone(),
        };
        *self.outcomes.entry((kind, outcome)).or_default() += 1;
    }

    fn summary(&self) -> String {
        let mut s = String::new();
        for ((kind, outcome), n) in &self.outcomes {
            let _ = writeln!(s, "  {kind:8} {n:5}  {outcome}");
        }
        let _ = write!(
            s,
            "  txn succeeded {} / failed {}, nested txns executed {}, truncated ranges {}",
            self.txn_succeeded, self.txn_failed, self.nested_txns, self.more
        );
        s
    }

    /// Answers of `kind` that were `ok` (exactly) or an error containing
    /// `outcome`.
    fn count(&self, kind: &str, outcome: &str) -> u64 {
        self.outcomes
            .iter()
            .filter(|((k, o), _)| *k == kind && (o == outcome || o != "ok" && o.contains(outcome)))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every op kind succeeded and every error class showed up.
    fn assert_coverage(&self) {
        for kind in ["range", "put", "delete", "txn", "compact"] {
            assert!(
                self.count(kind, "ok") > 0,
                "no successful {kind}\n{}",
                self.summary()
            );
        }
        for msg in [
            "key is not provided",
            "key not found",
            "value is provided",
            "lease is provided",
            "too many operations in txn request",
            "duplicate key given in txn request",
            "required revision has been compacted",
            "required revision is a future revision",
            "requested lease not found",
            "request is too large",
        ] {
            let n: u64 = ["range", "put", "delete", "txn", "compact"]
                .iter()
                .map(|k| self.count(k, msg))
                .sum();
            assert!(n > 0, "no op failed with {msg:?}\n{}", self.summary());
        }
        assert!(
            self.txn_succeeded > 0 && self.txn_failed > 0,
            "{}",
            self.summary()
        );
        assert!(self.nested_txns > 0 && self.more > 0, "{}", self.summary());
    }
}

// ---- readable dumps ------------------------------------------------------------------------

fn b(bytes: &[u8]) -> String {
    const SHOWN_BYTES: usize = 48;
    if bytes.len() > SHOWN_BYTES {
        format!(
            "\"{}\"...({} bytes)",
            bytes[..SHOWN_BYTES].escape_ascii(),
            bytes.len()
        )
    } else {
        format!("\"{}\"", bytes.escape_ascii())
    }
}

fn show_kv(kv: &KeyValue) -> String {
    format!(
        "{{{} create {} mod {} ver {} val {} lease {}}}",
        b(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        b(&kv.value),
        kv.lease
    )
}

fn show_kvs(kvs: &[KeyValue]) -> String {
    let parts: Vec<String> = kvs.iter().map(show_kv).collect();
    format!("[{}]", parts.join(", "))
}

fn show_header(h: &Option<ResponseHeader>) -> String {
    match h {
        None => "hdr none".to_string(),
        Some(h) if h.cluster_id == 0 && h.member_id == 0 && h.raft_term == 0 => {
            format!("rev {}", h.revision)
        }
        Some(h) => format!(
            "hdr {{rev {} cluster {} member {} term {}}}",
            h.revision, h.cluster_id, h.member_id, h.raft_term
        ),
    }
}

fn show_span(key: &[u8], end: &[u8]) -> String {
    if end.is_empty() {
        b(key)
    } else {
        format!("[{}, {})", b(key), b(end))
    }
}

fn show_range(r: &RangeRequest) -> String {
    let mut s = format!("range {}", show_span(&r.key, &r.range_end));
    let mut opt = |name: &str, v: i64| {
        if v != 0 {
            let _ = write!(s, " {name}={v}");
        }
    };
    opt("limit", r.limit);
    opt("rev", r.revision);
    opt("order", i64::from(r.sort_order));
    opt("target", i64::from(r.sort_target));
    opt("min_mod", r.min_mod_revision);
    opt("max_mod", r.max_mod_revision);
    opt("min_create", r.min_create_revision);
    opt("max_create", r.max_create_revision);
    for (name, on) in [
        ("serializable", r.serializable),
        ("keys_only", r.keys_only),
        ("count_only", r.count_only),
    ] {
        if on {
            let _ = write!(s, " {name}");
        }
    }
    s
}

fn show_put(p: &PutRequest) -> String {
    let mut s = format!("put {}={}", b(&p.key), b(&p.value));
    if p.lease != 0 {
        let _ = write!(s, " lease={}", p.lease);
    }
    for (name, on) in [
        ("prev_kv", p.prev_kv),
        ("ignore_value", p.ignore_value),
        ("ignore_lease", p.ignore_lease),
    ] {
        if on {
            let _ = write!(s, " {name}");
        }
    }
    s
}

fn show_delete(d: &DeleteRangeRequest) -> String {
    format!(
        "delete {}{}",
        show_span(&d.key, &d.range_end),
        if d.prev_kv { " prev_kv" } else { "" }
    )
}

fn show_compare(c: &Compare) -> String {
    let target = CompareTarget::try_from(c.target)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| format!("target#{}", c.target));
    let result = CompareResult::try_from(c.result)
        .map(|r| r.as_str_name().to_string())
        .unwrap_or_else(|_| format!("result#{}", c.result));
    let want = match &c.target_union {
        None => "none".to_string(),
        Some(TargetUnion::Version(v)) => format!("version {v}"),
        Some(TargetUnion::CreateRevision(v)) => format!("create {v}"),
        Some(TargetUnion::ModRevision(v)) => format!("mod {v}"),
        Some(TargetUnion::Value(v)) => format!("value {}", b(v)),
        Some(TargetUnion::Lease(v)) => format!("lease {v}"),
    };
    format!(
        "{}({}) {result} {want}",
        target,
        show_span(&c.key, &c.range_end)
    )
}

fn show_request_op(op: &RequestOp) -> String {
    match &op.request {
        None => "(empty op)".to_string(),
        Some(Request::RequestRange(r)) => show_range(r),
        Some(Request::RequestPut(p)) => show_put(p),
        Some(Request::RequestDeleteRange(d)) => show_delete(d),
        Some(Request::RequestTxn(t)) => show_txn(t),
    }
}

fn show_txn(t: &TxnRequest) -> String {
    let list = |ops: &[RequestOp]| {
        let parts: Vec<String> = ops.iter().map(show_request_op).collect();
        parts.join("; ")
    };
    let compares: Vec<String> = t.compare.iter().map(show_compare).collect();
    format!(
        "txn {{if [{}] then [{}] else [{}]}}",
        compares.join(" && "),
        list(&t.success),
        list(&t.failure)
    )
}

fn show_op(op: &Op) -> String {
    match op {
        Op::Range(r) => show_range(r),
        Op::Put(p) => show_put(p),
        Op::Delete(d) => show_delete(d),
        Op::Txn(t) => show_txn(t),
        Op::Compact(c) => format!(
            "compact {}{}",
            c.revision,
            if c.physical { " physical" } else { "" }
        ),
    }
}

fn show_range_resp(r: &RangeResponse) -> String {
    format!(
        "{} count {} more {} kvs {}",
        show_header(&r.header),
        r.count,
        r.more,
        show_kvs(&r.kvs)
    )
}

fn show_txn_resp(t: &TxnResponse) -> String {
    let parts: Vec<String> = t
        .responses
        .iter()
        .map(|r| match &r.response {
            None => "(empty)".to_string(),
            Some(Response::ResponseRange(r)) => format!("range {{{}}}", show_range_resp(r)),
            Some(Response::ResponsePut(p)) => format!("put {{{}}}", show_put_resp(p)),
            Some(Response::ResponseDeleteRange(d)) => format!("delete {{{}}}", show_delete_resp(d)),
            Some(Response::ResponseTxn(t)) => show_txn_resp(t),
        })
        .collect();
    format!(
        "txn {{{} succeeded {} [{}]}}",
        show_header(&t.header),
        t.succeeded,
        parts.join("; ")
    )
}

fn show_put_resp(p: &PutResponse) -> String {
    format!(
        "{} prev_kv {}",
        show_header(&p.header),
        p.prev_kv.as_ref().map_or("none".to_string(), show_kv)
    )
}

fn show_delete_resp(d: &DeleteRangeResponse) -> String {
    format!(
        "{} deleted {} prev_kvs {}",
        show_header(&d.header),
        d.deleted,
        show_kvs(&d.prev_kvs)
    )
}

fn show_reply(r: &Reply) -> String {
    match r {
        Err((code, msg)) => format!("error {code:?}: {msg}"),
        Ok(Answer::Range(r)) => show_range_resp(r),
        Ok(Answer::Put(p)) => show_put_resp(p),
        Ok(Answer::Delete(d)) => show_delete_resp(d),
        Ok(Answer::Txn(t)) => show_txn_resp(t),
        Ok(Answer::Compact(c)) => format!("compacted, {}", show_header(&c.header)),
    }
}
