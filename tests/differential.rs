//! Differential test: one seeded random sequence of KV operations goes to
//! ferrocd and to a real etcd (both started here), in lockstep, and every
//! answer must match: the whole response (kvs, count, more, prev_kv(s),
//! deleted, succeeded, nested responses, header revision) or, for errors,
//! the gRPC code and the message byte for byte. Header `cluster_id`,
//! `member_id` and `raft_term` are ignored.
//!
//! Over the same run, watch streams ([`Watches`]) get the same seeded
//! watch requests on both servers and every response must match too; see
//! below.
//!
//! Knobs: `FERROCD_DIFF_SEED` (default [`DEFAULT_SEED`]),
//! `FERROCD_DIFF_OPS` (default [`DEFAULT_OPS`]), `FERROCD_DIFF_VERBOSE=1`
//! prints every op and watch request, `FERROCD_DIFF_WATCH=0` leaves the
//! watch streams out. A mismatch panics with the seed and the op index, so
//! `FERROCD_DIFF_SEED=<seed> FERROCD_DIFF_OPS=<index + 1>` replays it (the
//! watch layer has its own random source, so the ops are the same with or
//! without it).
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
//!
//! **Watch streams.** Both servers get the same streams (up to
//! [`MAX_STREAMS`], opened at random points) and on them the same
//! `WatchCreateRequest`s: single keys, prefixes, ranges (inverted and empty
//! ones are refused), from-key and every key, the empty key; start revision
//! 0, a past one, the compaction point, a compacted one, a future one;
//! `prev_kv` on or off; NOPUT, NODELETE, both, and an unknown filter value;
//! automatic or client-chosen ids (negative and huge ones too), including
//! an id in use on the stream (refused); cancels of live, compaction-canceled,
//! already canceled and unknown ids; WatchProgressRequests.
//! `progress_notify` and `fragment` stay off (timing and size dependent).
//! Every 10 to 40 ops a checkpoint makes one to four such requests.
//!
//! Nothing waits on time. Stream 0 of each server holds one watch on every
//! key with `prev_kv` from the first op on: its events are the history,
//! compared between the servers, and etcd's tells the model
//! ([`WatchModel`]) how many events every watch must have got by now. At
//! each checkpoint, after each watch request, before each compaction and
//! at the end, the layer waits (up to [`WATCH_TIMEOUT`]) until both servers
//! delivered that, plus the control responses asked for, then compares per
//! stream: the control responses (created, refused, canceled, progress;
//! header revision, watch id, cancel reason byte for byte) in order, and per
//! watch id its events flattened (type, every kv field, prev_kv) and its
//! compaction cancel (compact_revision, header revision). Responses of
//! different watches interleave freely (etcd walks a Go map). With
//! [`EXACT_RESPONSES`] a watch's responses must also match one for one
//! (batching and header revision). Both servers must also keep the
//! protocol's rules as responses arrive: no events before `created` or
//! after a cancel, no revision split across responses or out of order, no
//! header revision below its events'. At the end a progress request on every
//! stream and a short quiet period catch late extras.
//!
//! The waits make etcd deterministic. It sends events from a channel
//! apart from control responses, so control requests go out only when
//! every watch is caught up; it reads prev_kv when it sends (at
//! `ModRevision - 1`, `api/v3rpc/watch.go` `sendLoop`), so compactions wait
//! until everything is sent; a watch starting in the past is unsynced until
//! etcd's 100 ms sync loop runs, so it starts on an event it wants (once
//! that arrived the watcher is synced) and ops wait for its catch-up. A
//! compacted start (below etcd's `compactMainRev`) is canceled by that sync
//! loop with no write in between. A catch-up reads etcd's backend, where
//! compaction left, at the compaction point, only each key's last change
//! there if it is a put ([`Watches::after_compaction`]); a watch starts at
//! the compaction point only after a physical compaction, whose deletions
//! etcd commits before it answers. Two etcd corners are not generated: a
//! start of -1 before any compaction (not compacted, yet etcd's sync reads
//! from the revision bytes of -1, i.e. nothing, and moves the watcher to
//! synced at an unknown moment) and a negative start while the compaction
//! point is 0 (after `compact 0`: etcd answers compact_revision 0 and not
//! canceled). [`NEGATIVE_START_CASE`] covers a ferrocd bug this test found
//! (fixed); [`COMPACTION_POINT_TOMBSTONE_CASE`] stays off because etcd
//! 3.4.23 has a bug there that later etcd and ferrocd do not (the run's
//! summary says which cases are off). The watch-side behaviour used here is the same
//! in etcd 3.5 (`server/mvcc/watchable_store.go`, `watcher_group.go`)
//! except that 3.5 answers a progress request only once all watchers are
//! synced, which they are whenever one is sent here.

mod common;

use ferrocd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    watch_client::WatchClient,
    watch_create_request::FilterType,
    watch_request::RequestUnion,
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use ferrocd_proto::mvccpb::{event::EventType, Event, KeyValue};
use ferrocd_proto::tonic::{transport::Channel, Code};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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
/// Whether the responses of one watch must match one for one (header
/// revision and batching included), not only its events in order. etcd has
/// no freedom left here, because the watch layer writes only while every
/// watcher is synced: a synced watcher gets one response per revision with
/// that revision in the header (`mvcc/watchable_store.go` `notify`), a
/// past start gets its catch-up as one response headed by the current
/// revision (`syncWatchers`, fewer than `watchBatchMaxRevs` revisions; no
/// write in between), and nothing fills the 128-response channel that
/// would make a watcher a victim. Turn off to compare events only.
const EXACT_RESPONSES: bool = true;
/// Whether watches may start at a negative revision. etcd 3.4 (and 3.5)
/// keeps a negative start as the watcher's `minRev` and its sync loop
/// cancels the watch for compaction when that is below `compactMainRev`
/// (-1 before any compaction): `created`, then `canceled
/// compact_revision=<compactMainRev>` with header revision 0
/// (`mvcc/watcher_group.go` `chooseAll`). This test found ferrocd clamping
/// a negative start to 0; fixed in `src/edge/watch.rs`.
const NEGATIVE_START_CASE: bool = true;
/// Whether a watch may start at the compaction point when it wants a key
/// whose last change there is a delete. Debian's etcd 3.4.23 compaction
/// drops that tombstone (see [`Watches::after_compaction`]), so a watch
/// from the compaction point gets no event for the key: etcd bug #18089
/// ("Watch dropping an event when compacting on delete", labelled for 3.4
/// and 3.5), fixed by etcd PR #18274 ("keep tombstone if revision ==
/// compactAtRev", in 3.5.15 and the 3.4 branch after 3.4.23). ferrocd
/// implements the fixed behaviour (it keeps the tombstone at the
/// compaction revision and sends the DELETE), so this case stays off
/// against 3.4.23. Repro with etcdctl: `put a 1; put b 1; del a; put b 2;
/// compact 4 --physical; watch --rev=4 --prefix ''`: etcd 3.4.23 sends
/// `PUT b 2`, ferrocd (and fixed etcd) `DELETE a` first.
const COMPACTION_POINT_TOMBSTONE_CASE: bool = false;
/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;
/// How long the watch layer waits for both servers to deliver what the
/// model expects (generous: a loaded 2-core machine runs both servers).
const WATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The last look for responses nobody expects, at the end of the run.
const QUIET: Duration = Duration::from_millis(300);
/// Watch streams besides the history stream.
const MAX_STREAMS: usize = 4;
/// Watches per stream.
const MAX_WATCHES: usize = 6;
/// How far back a watch may start (well below etcd's 1000 revisions per
/// catch-up batch, `watchBatchMaxRevs`).
const PAST_WINDOW: i64 = 400;

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
    let watch = std::env::var_os("FERROCD_DIFF_WATCH").is_none_or(|v| v != "0");
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
        let mut watches = match watch {
            true => Some(Watches::start(seed, verbose, &ferrocd.url(), &etcd.url()).await),
            false => None,
        };
        for i in 0..ops {
            let op = gen.op();
            if verbose {
                eprintln!("op {i}: {}", show_op(&op));
            }
            if let (Some(w), Op::Compact(_)) = (watches.as_mut(), &op) {
                w.before_compaction(i, gen.rev).await;
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
            if let Some(w) = watches.as_mut() {
                w.observe(&op, &b);
                w.after_op(i + 1, gen.rev).await;
            }
        }
        if let Some(w) = watches.as_mut() {
            w.finish(ops, gen.rev).await;
        }
        (stats, watches.map(|w| w.stats))
    });
    let (stats, watch_stats) = stats;
    eprintln!(
        "differential: {ops} ops matched in {:.1?} (final revision {})\n{}",
        started.elapsed(),
        stats.last_revision,
        stats.summary()
    );
    if let Some(w) = &watch_stats {
        eprintln!("differential: watch streams matched\n{}", w.summary());
        for (on, case) in [
            (NEGATIVE_START_CASE, "NEGATIVE_START_CASE"),
            (
                COMPACTION_POINT_TOMBSTONE_CASE,
                "COMPACTION_POINT_TOMBSTONE_CASE",
            ),
        ] {
            if !on {
                eprintln!("differential: {case} is off (a ferrocd bug, see its comment)");
            }
        }
    }
    if ops >= 1000 {
        stats.assert_coverage();
        if let Some(w) = &watch_stats {
            w.assert_coverage();
        }
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

/// A key and range end, etcd's encodings: single key, prefix, from-key
/// ("\0"), everything ("\0".."\0"), an arbitrary (possibly inverted or
/// empty) interval, `[k, k\0)`.
fn span_from(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    match rng.below(20) {
        0..=6 => (rng.pick(&KEYS).to_vec(), Vec::new()),
        7..=10 => {
            let p = rng.pick(&PREFIXES).to_vec();
            let end = prefix_end(&p);
            (p, end)
        }
        11..=12 => (rng.pick(&KEYS).to_vec(), vec![0]),
        13 => (vec![0], vec![0]),
        14..=17 => (rng.pick(&KEYS).to_vec(), rng.pick(&KEYS).to_vec()),
        18 => {
            let k = rng.pick(&KEYS).to_vec();
            let mut end = k.clone();
            end.push(0);
            (k, end)
        }
        _ => {
            // A key that is not in the key space, as a point or a start.
            let mut k = rng.pick(&KEYS).to_vec();
            k.push(b'~');
            let end = if rng.pct(50) {
                Vec::new()
            } else {
                prefix_end(&k)
            };
            (k, end)
        }
    }
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

    /// A key and range end: see [`span_from`].
    fn span(&mut self) -> (Vec<u8>, Vec<u8>) {
        span_from(&mut self.rng)
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

// ---- the watch layer ------------------------------------------------------------------------

/// What a watch stream's reader task hands over: the stream's index and a
/// response, or why the stream ended.
type Item = (usize, Result<WatchResponse, String>);

/// The request side of a watch stream.
struct Requests(mpsc::UnboundedReceiver<WatchRequest>);

impl futures_lite::Stream for Requests {
    type Item = WatchRequest;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchRequest>> {
        self.0.poll_recv(cx)
    }
}

/// How a response counts: [`Kind::Created`], [`Kind::Canceled`] (by a
/// cancel request), [`Kind::Progress`] and [`Kind::Other`] are control
/// responses, compared in order per stream; [`Kind::Events`] and
/// [`Kind::Compacted`] belong to one watch and are compared per watch id.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    Canceled,
    Progress,
    Compacted,
    Events,
    Other,
}

fn kind(r: &WatchResponse) -> Kind {
    if r.created {
        Kind::Created
    } else if r.compact_revision != 0 {
        Kind::Compacted
    } else if !r.events.is_empty() {
        Kind::Events
    } else if r.canceled {
        Kind::Canceled
    } else if r.watch_id == -1 {
        Kind::Progress
    } else {
        Kind::Other
    }
}

/// What one stream of one server delivered.
#[derive(Default)]
struct Seen {
    /// Responses since the last comparison, in arrival order, header
    /// identity fields cleared.
    window: Vec<WatchResponse>,
    /// Control responses in `window`.
    ctrl: usize,
    /// Ids announced (`created`) and not canceled by request.
    live: BTreeSet<i64>,
    /// Events delivered to the current incarnation of each live id.
    events: BTreeMap<i64, u64>,
    /// The highest event revision delivered to each live id.
    last_rev: BTreeMap<i64, i64>,
    /// Live ids canceled for compaction.
    compacted: BTreeSet<i64>,
    /// Broken protocol rules.
    violations: Vec<String>,
}

impl Seen {
    fn absorb(&mut self, mut r: WatchResponse) {
        if let Some(h) = &mut r.header {
            h.cluster_id = 0;
            h.member_id = 0;
            h.raft_term = 0;
        }
        let id = r.watch_id;
        let mut violation = |what: String| {
            self.violations
                .push(format!("{what} (in {})", show_watch_resp(&r)))
        };
        if r.fragment {
            violation("a fragment, never asked for".to_string());
        }
        match kind(&r) {
            Kind::Created => {
                if !r.canceled {
                    if self.live.contains(&id) {
                        violation(format!("watch {id} created while live"));
                    }
                    self.live.insert(id);
                    self.events.insert(id, 0);
                    self.last_rev.remove(&id);
                    self.compacted.remove(&id);
                }
                self.ctrl += 1;
            }
            Kind::Canceled => {
                if !self.live.remove(&id) {
                    violation(format!("cancel answered for watch {id}, not live"));
                }
                self.events.remove(&id);
                self.last_rev.remove(&id);
                self.compacted.remove(&id);
                self.ctrl += 1;
            }
            Kind::Progress | Kind::Other => self.ctrl += 1,
            Kind::Compacted => {
                if !self.live.contains(&id) {
                    violation(format!("compaction cancel of watch {id}, not live"));
                }
                if !self.compacted.insert(id) {
                    violation(format!("second compaction cancel of watch {id}"));
                }
            }
            Kind::Events => {
                if !self.live.contains(&id) {
                    violation(format!("events for watch {id}, not live"));
                }
                if self.compacted.contains(&id) {
                    violation(format!("events for watch {id} after its compaction"));
                }
                let revs: Vec<i64> = r
                    .events
                    .iter()
                    .map(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision))
                    .collect();
                let last = self.last_rev.get(&id).copied().unwrap_or(i64::MIN);
                if revs[0] <= last {
                    violation(format!(
                        "watch {id}: revision {} after revision {last} was delivered \
                         (a revision split across responses, or out of order)",
                        revs[0]
                    ));
                }
                if revs.windows(2).any(|w| w[0] > w[1]) {
                    violation(format!("watch {id}: events out of revision order"));
                }
                let top = *revs.iter().max().unwrap();
                let header = r.header.as_ref().map_or(0, |h| h.revision);
                if header < top {
                    violation(format!(
                        "watch {id}: header revision {header} below event revision {top}"
                    ));
                }
                *self.events.entry(id).or_default() += revs.len() as u64;
                self.last_rev.insert(id, top);
            }
        }
        self.window.push(r);
    }
}

/// One server's watch streams. Stream 0 is the history stream: a single
/// watch on every key with `prev_kv`, created before the first op.
struct Side {
    name: &'static str,
    client: WatchClient<Channel>,
    requests: Vec<mpsc::UnboundedSender<WatchRequest>>,
    items_tx: mpsc::UnboundedSender<Item>,
    items: mpsc::UnboundedReceiver<Item>,
    streams: Vec<Seen>,
    /// Every event of the history stream, in order.
    history: Vec<Event>,
}

impl Side {
    async fn connect(name: &'static str, url: &str) -> Side {
        let channel = Channel::from_shared(url.to_string())
            .expect("endpoint url")
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let (items_tx, items) = mpsc::unbounded_channel();
        Side {
            name,
            client: WatchClient::new(channel).max_decoding_message_size(64 << 20),
            requests: Vec::new(),
            items_tx,
            items,
            streams: Vec::new(),
            history: Vec::new(),
        }
    }

    /// Opens a stream; a task pumps its responses into `items` (the call
    /// itself completes only once the server answered something).
    fn open(&mut self) {
        let index = self.requests.len();
        let (tx, requests) = mpsc::unbounded_channel();
        let items = self.items_tx.clone();
        let mut client = self.client.clone();
        tokio::spawn(async move {
            let mut stream = match client.watch(Requests(requests)).await {
                Ok(s) => s.into_inner(),
                Err(s) => {
                    let why = format!("watch call failed: {:?} {}", s.code(), s.message());
                    let _ = items.send((index, Err(why)));
                    return;
                }
            };
            loop {
                let item = match stream.message().await {
                    Ok(Some(r)) => Ok(r),
                    Ok(None) => Err("the stream ended".to_string()),
                    Err(s) => Err(format!("stream error: {:?} {}", s.code(), s.message())),
                };
                let last = item.is_err();
                if items.send((index, item)).is_err() || last {
                    return;
                }
            }
        });
        self.requests.push(tx);
        self.streams.push(Seen::default());
    }

    fn send(&self, stream: usize, request: RequestUnion) {
        self.requests[stream]
            .send(WatchRequest {
                request_union: Some(request),
            })
            .expect("the request side stays open");
    }

    fn absorb(&mut self, stream: usize, r: WatchResponse) {
        if stream == 0 {
            self.history.extend(r.events.iter().cloned());
        }
        self.streams[stream].absorb(r);
    }

    /// Reads responses until `done` holds; `Err` on timeout or a stream end.
    async fn pump_until(
        &mut self,
        deadline: Instant,
        done: impl Fn(&Side) -> bool,
    ) -> Result<(), String> {
        loop {
            if done(self) {
                return Ok(());
            }
            let deadline = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(deadline, self.items.recv()).await {
                Err(_) => return Err(format!("{}: timed out", self.name)),
                Ok(None) => unreachable!("the side holds a sender"),
                Ok(Some((i, Ok(r)))) => self.absorb(i, r),
                Ok(Some((i, Err(e)))) => return Err(format!("{} stream s{i}: {e}", self.name)),
            }
        }
    }

    /// Takes whatever has arrived, without waiting.
    fn pump_ready(&mut self) -> Result<(), String> {
        while let Ok((i, item)) = self.items.try_recv() {
            match item {
                Ok(r) => self.absorb(i, r),
                Err(e) => return Err(format!("{} stream s{i}: {e}", self.name)),
            }
        }
        Ok(())
    }

    /// The revision of the last history event.
    fn history_rev(&self) -> i64 {
        self.history
            .last()
            .and_then(|e| e.kv.as_ref())
            .map_or(1, |kv| kv.mod_revision)
    }

    /// Every stream delivered what the model expects.
    fn satisfies(&self, model: &[StreamModel]) -> bool {
        model.iter().zip(&self.streams).all(|(m, s)| {
            s.ctrl >= m.ctrl
                && m.watches.values().all(|w| match w.compact {
                    Some(_) => s.compacted.contains(&w.id),
                    None => s.events.get(&w.id).copied().unwrap_or(0) >= w.expected,
                })
        })
    }
}

/// A watch as etcd created it (the model needs only what decides which
/// events it gets).
struct WatchModel {
    id: i64,
    req: WatchCreateRequest,
    /// The key, `\0` for an empty one (etcd's `recvLoop`).
    key: Vec<u8>,
    /// `None`: the key alone; `Some(empty)`: every key from `key` on.
    end: Option<Vec<u8>>,
    /// The first revision whose events it gets.
    min_rev: i64,
    /// Canceled for compaction, at this compact revision.
    compact: Option<i64>,
    /// Events it must have got by now.
    expected: u64,
}

impl WatchModel {
    /// The watch `req` becomes when created at `rev` with the store
    /// compacted at `compact_main` (etcd's `compactMainRev`, -1 before any
    /// compaction). etcd 3.4 `mvcc/watchable_store.go` `watch`: a start of 0
    /// or after `rev` is synced (from `rev + 1` or the start); any other
    /// start is unsynced, and the sync loop cancels it for compaction when
    /// it is below `compact_main` (`watcher_group.go` `chooseAll`).
    fn new(id: i64, req: &WatchCreateRequest, rev: i64, compact_main: i64) -> WatchModel {
        let start = req.start_revision;
        let (min_rev, compact) = if start == 0 {
            (rev + 1, None)
        } else if start > rev || start >= compact_main {
            (start, None)
        } else {
            (start, Some(compact_main))
        };
        WatchModel {
            id,
            req: req.clone(),
            key: if req.key.is_empty() {
                vec![0]
            } else {
                req.key.clone()
            },
            end: match req.range_end.as_slice() {
                [] => None,
                [0] => Some(Vec::new()),
                end => Some(end.to_vec()),
            },
            min_rev,
            compact,
            expected: 0,
        }
    }

    fn covers(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.key,
            Some(end) => key >= &self.key[..] && (end.is_empty() || key < &end[..]),
        }
    }

    fn wants(&self, e: &Event) -> bool {
        let Some(kv) = &e.kv else { return false };
        let filtered = |f: FilterType| self.req.filters.contains(&(f as i32));
        let dropped = if e.r#type == EventType::Delete as i32 {
            filtered(FilterType::Nodelete)
        } else {
            filtered(FilterType::Noput)
        };
        self.compact.is_none()
            && kv.mod_revision >= self.min_rev
            && !dropped
            && self.covers(&kv.key)
    }
}

/// The watches of one stream as etcd has them.
#[derive(Default)]
struct StreamModel {
    watches: BTreeMap<i64, WatchModel>,
    /// Ids canceled on this stream (to cancel again).
    canceled: Vec<i64>,
    /// Control responses expected in the current window.
    ctrl: usize,
}

/// What the watch layer exercised (etcd's side), so a degenerate
/// generator fails loudly.
#[derive(Default)]
struct WatchStats {
    streams: usize,
    created: u64,
    refused: BTreeMap<String, u64>,
    from_the_past: u64,
    at_compaction_point: u64,
    from_the_future: u64,
    compacted: u64,
    canceled: u64,
    unknown_cancels: u64,
    progress: u64,
    responses: u64,
    events: u64,
    prev_kvs: u64,
    history_events: u64,
}

impl WatchStats {
    fn record(&mut self, stream: usize, r: &WatchResponse) {
        match kind(r) {
            Kind::Created if r.canceled => {
                *self.refused.entry(r.cancel_reason.clone()).or_default() += 1
            }
            Kind::Created => self.created += 1,
            Kind::Canceled => self.canceled += 1,
            Kind::Progress => self.progress += 1,
            Kind::Compacted => self.compacted += 1,
            Kind::Events if stream == 0 => self.history_events += r.events.len() as u64,
            Kind::Events => {
                self.responses += 1;
                self.events += r.events.len() as u64;
                self.prev_kvs += r.events.iter().filter(|e| e.prev_kv.is_some()).count() as u64;
            }
            Kind::Other => {}
        }
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "  {} streams, {} watches created ({} from a past revision, {} of them at the \
             compaction point, {} from a future one), \
             {} canceled for compaction, {} canceled by request (+{} cancels of unknown ids), \
             {} progress requests\n  \
             {} events in {} responses ({} with prev_kv), {} history events",
            self.streams,
            self.created,
            self.from_the_past,
            self.at_compaction_point,
            self.from_the_future,
            self.compacted,
            self.canceled,
            self.unknown_cancels,
            self.progress,
            self.events,
            self.responses,
            self.prev_kvs,
            self.history_events
        );
        for (reason, n) in &self.refused {
            let _ = write!(s, "\n  refused {n:4}  {reason}");
        }
        s
    }

    fn assert_coverage(&self) {
        let refused = |what: &str| self.refused.keys().any(|r| r.contains(what));
        assert!(
            self.streams > 1
                && self.created > 0
                && self.from_the_past > 0
                && self.from_the_future > 0
                && self.compacted > 0
                && self.canceled > 0
                && self.unknown_cancels > 0
                && self.progress > 0
                && self.prev_kvs > 0
                && self.responses > 0
                && refused("duplicate watch ID")
                && refused("watcher range is empty"),
            "the watch layer missed a case:\n{}",
            self.summary()
        );
    }
}

/// The watch layer: streams on both servers, the same requests on each,
/// and after every step the responses compared.
struct Watches {
    seed: u64,
    verbose: bool,
    rng: Rng,
    ours: Side,
    theirs: Side,
    /// Index-aligned with the sides' streams; 0 is the history stream.
    streams: Vec<StreamModel>,
    /// etcd's `compactMainRev`: -1 until a compaction succeeds.
    compact_main: i64,
    /// Whether that compaction was physical (done when it answered).
    compact_physical: bool,
    /// Ops done so far (for messages).
    ops_done: u64,
    /// How much of etcd's history the expectations have seen.
    history_used: usize,
    next_checkpoint: u64,
    stats: WatchStats,
}

impl Watches {
    async fn start(seed: u64, verbose: bool, ours: &str, theirs: &str) -> Watches {
        let mut w = Watches {
            seed,
            verbose,
            rng: Rng(seed ^ 0x3a7c_5eed_3a7c_5eed),
            ours: Side::connect("ferrocd", ours).await,
            theirs: Side::connect("etcd", theirs).await,
            streams: Vec::new(),
            compact_main: -1,
            compact_physical: false,
            ops_done: 0,
            history_used: 0,
            next_checkpoint: 0,
            stats: WatchStats::default(),
        };
        w.open_stream();
        let history = WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            prev_kv: true,
            ..Default::default()
        };
        w.create(0, history, 1).await;
        w.open_stream();
        w.next_checkpoint = w.rng.between(5, 40) as u64;
        w
    }

    fn open_stream(&mut self) {
        self.ours.open();
        self.theirs.open();
        self.streams.push(StreamModel::default());
        self.stats.streams = self.streams.len() - 1;
    }

    fn note(&self, what: &str) {
        if self.verbose {
            eprintln!("watch after op {}: {what}", self.ops_done);
        }
    }

    /// Follows successful compactions (etcd's `compactMainRev`; etcd
    /// refuses any at or below it).
    fn observe(&mut self, op: &Op, reply: &Reply) {
        if let (Op::Compact(c), Ok(_)) = (op, reply) {
            self.compact_main = c.revision;
            self.compact_physical = c.physical;
        }
    }

    /// etcd's history as its backend holds it once the last compaction is
    /// done: nothing below the compaction point, and at it only each key's
    /// last change, and only if that is a put. The compaction keeps each
    /// key's latest revision up to the point unless it is a tombstone
    /// (`mvcc/key_index.go` `compact`) and deletes every other revision up
    /// to the point from the backend (`kvstore_compaction.go`), where a
    /// catch-up reads its events (`syncWatchers`).
    fn after_compaction(&self) -> Vec<&Event> {
        let c = self.compact_main;
        let last = last_changes_at(&self.theirs.history, c);
        self.theirs
            .history
            .iter()
            .enumerate()
            .filter(|&(i, e)| {
                let r = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                r > c || r == c && last.contains(&i) && e.r#type == EventType::Put as i32
            })
            .map(|(_, e)| e)
            .collect()
    }

    /// After op number `done` (1-based), at store revision `rev`.
    async fn after_op(&mut self, done: u64, rev: i64) {
        self.ops_done = done;
        if done < self.next_checkpoint {
            return;
        }
        self.settle(rev).await;
        for _ in 0..=self.rng.below(4) {
            self.action(rev).await;
        }
        self.next_checkpoint = done + self.rng.between(10, 40) as u64;
    }

    /// Before a compaction: everything sent and compared (etcd reads a
    /// prev_kv at send time, `sendLoop`'s `Range` at `ModRevision - 1`; a
    /// compaction racing it would drop it).
    async fn before_compaction(&mut self, done: u64, rev: i64) {
        self.ops_done = done;
        self.settle(rev).await;
    }

    /// The end: everything delivered, a progress request on every stream,
    /// and then a moment of quiet in which nobody may say more.
    async fn finish(&mut self, done: u64, rev: i64) {
        self.ops_done = done;
        self.settle(rev).await;
        for s in 1..self.streams.len() {
            self.ours.send(s, progress());
            self.theirs.send(s, progress());
            self.streams[s].ctrl += 1;
        }
        self.note("progress on every stream");
        self.settle(rev).await;
        tokio::time::sleep(QUIET).await;
        let pumped = [self.ours.pump_ready(), self.theirs.pump_ready()];
        if let Some(Err(e)) = pumped.into_iter().find(Result::is_err) {
            self.fail(&e);
        }
        self.compare();
    }

    /// One random request on a random stream, then everything delivered
    /// and compared.
    async fn action(&mut self, rev: i64) {
        let stream = 1 + self.rng.below(self.streams.len() - 1);
        let n = self.streams[stream].watches.len();
        match self.rng.below(100) {
            0..=5 if self.streams.len() <= MAX_STREAMS => {
                self.open_stream();
                self.note(&format!("open stream s{}", self.streams.len() - 1));
            }
            0..=49 if n < MAX_WATCHES => {
                let req = self.create_request(rev);
                self.create(stream, req, rev).await;
            }
            50..=57 if n > 0 => {
                // A client-chosen id already in use: refused.
                let mut req = self.create_request(rev);
                let ids: Vec<i64> = self.streams[stream].watches.keys().copied().collect();
                req.watch_id = *self.rng.pick(&ids);
                self.create(stream, req, rev).await;
            }
            0..=84 => self.cancel(stream, rev).await,
            _ => {
                self.note(&format!("s{stream}: progress"));
                self.ours.send(stream, progress());
                self.theirs.send(stream, progress());
                self.streams[stream].ctrl += 1;
                self.settle(rev).await;
            }
        }
    }

    fn create_request(&mut self, rev: i64) -> WatchCreateRequest {
        let rng = &mut self.rng;
        let (key, range_end) = match rng.below(25) {
            0 => (Vec::new(), vec![0]),    // every key
            1 => (Vec::new(), Vec::new()), // the key "\0"
            _ => span_from(rng),
        };
        let filters = match rng.below(20) {
            0..=11 => vec![],
            12..=14 => vec![FilterType::Noput as i32],
            15..=17 => vec![FilterType::Nodelete as i32],
            18 => vec![FilterType::Nodelete as i32, FilterType::Noput as i32],
            // Not a filter: etcd ignores it (`FiltersFromRequest`).
            _ => vec![7, FilterType::Nodelete as i32, FilterType::Nodelete as i32],
        };
        let watch_id = if rng.pct(25) {
            // 0 asks for an automatic id; a negative one is an id too.
            *rng.pick(&[1, 2, 3, 5, 8, 100, -3, 1 << 40])
        } else {
            0
        };
        let mut req = WatchCreateRequest {
            key,
            range_end,
            start_revision: 0,
            progress_notify: false,
            filters,
            prev_kv: rng.pct(40),
            watch_id,
            fragment: false,
        };
        req.start_revision = self.start_revision(&req, rev);
        req
    }

    /// Where a new watch starts: now, in the future, in the past (on an
    /// event it wants), before the compaction point, or negative.
    fn start_revision(&mut self, req: &WatchCreateRequest, rev: i64) -> i64 {
        let compacted = self.compact_main;
        match self.rng.below(20) {
            0..=6 => 0,
            7..=9 => rev + self.rng.between(1, 25),
            10..=16 => {
                // A past start with at least one event to catch up on.
                // Without one, etcd's sync loop moves the watcher to the
                // synced group at an unknown moment, and writes before that
                // come in one catch-up response instead of one per
                // revision. The window stays far below etcd's 1000
                // revisions per catch-up batch (`watchBatchMaxRevs`).
                //
                // The compaction point itself only after a physical
                // compaction: etcd answers that once the backend deletions
                // are committed (etcdserver `Compact` waits on `physc`,
                // then `ForceCommit`); a non-physical one deletes in the
                // background, and the catch-up read sees the deletions
                // after the next backend commit, at an unknown moment.
                let at_point = compacted + i64::from(!self.compact_physical);
                let mut floor = at_point.max(1).max(rev - PAST_WINDOW);
                let mut probe = WatchModel::new(0, req, rev, -1);
                probe.min_rev = floor;
                if floor == compacted && !COMPACTION_POINT_TOMBSTONE_CASE {
                    let history = &self.theirs.history;
                    let tombstone = last_changes_at(history, compacted).into_iter().any(|i| {
                        history[i].r#type == EventType::Delete as i32 && probe.wants(&history[i])
                    });
                    if tombstone {
                        floor += 1;
                        probe.min_rev = floor;
                    }
                }
                let wanted: Vec<i64> = self
                    .after_compaction()
                    .into_iter()
                    .filter(|e| probe.wants(e))
                    .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
                    .filter(|&r| r <= rev)
                    .collect();
                if wanted.is_empty() {
                    return 0;
                }
                if floor == compacted && self.rng.pct(40) {
                    return floor; // what compaction left there, or nothing
                }
                let at = *self.rng.pick(&wanted);
                self.rng.between((at - 3).max(floor), at)
            }
            // Compacted: canceled with the compact revision. A negative
            // start while etcd's compactMainRev is -1 must be below -1: -1
            // itself is not compacted, and etcd's sync then reads from
            // revision bytes of -1 (nothing) and syncs the watcher at an
            // unknown moment (see above). While compactMainRev is 0 (a
            // successful `compact 0`), etcd answers a compacted watch with
            // compact_revision 0 and *not* canceled (`sendLoop`:
            // `canceled := wresp.CompactRevision != 0`), a response no
            // client can tell from a progress report; not generated.
            _ if compacted > 1 && self.rng.pct(60) => self.rng.between(1, compacted - 1),
            _ if !NEGATIVE_START_CASE => 0,
            _ if compacted == -1 => -self.rng.between(2, 4),
            _ if compacted > 0 => -self.rng.between(1, 3),
            _ => 0,
        }
    }

    /// Sends a create to both, registers etcd's answer in the model, and
    /// settles (catch-up included).
    async fn create(&mut self, stream: usize, req: WatchCreateRequest, rev: i64) {
        self.note(&format!("s{stream}: create {}", show_create(&req)));
        self.ours
            .send(stream, RequestUnion::CreateRequest(req.clone()));
        self.theirs
            .send(stream, RequestUnion::CreateRequest(req.clone()));
        self.streams[stream].ctrl += 1;
        self.wait(rev, false).await;
        let answer = self.theirs.streams[stream]
            .window
            .iter()
            .rev()
            .find(|r| kind(r) == Kind::Created)
            .cloned()
            .expect("etcd answered the create");
        if !answer.canceled {
            let mut w = WatchModel::new(answer.watch_id, &req, rev, self.compact_main);
            let view = self.after_compaction();
            w.expected = view.into_iter().filter(|e| w.wants(e)).count() as u64;
            if w.compact.is_none() && req.start_revision > 0 && req.start_revision <= rev {
                self.stats.from_the_past += 1;
            }
            if req.start_revision == self.compact_main && w.compact.is_none() {
                self.stats.at_compaction_point += 1;
            }
            if req.start_revision > rev + 1 {
                self.stats.from_the_future += 1;
            }
            self.streams[stream].watches.insert(w.id, w);
        }
        self.settle(rev).await;
    }

    async fn cancel(&mut self, stream: usize, rev: i64) {
        let m = &self.streams[stream];
        let live: Vec<i64> = m.watches.keys().copied().collect();
        let id = match self.rng.below(20) {
            0..=13 if !live.is_empty() => *self.rng.pick(&live),
            14..=16 if !m.canceled.is_empty() => *self.rng.pick(&m.canceled),
            _ => *self.rng.pick(&[4242, -1, 77, 1 << 40]),
        };
        self.note(&format!("s{stream}: cancel {id}"));
        let cancel = RequestUnion::CancelRequest(WatchCancelRequest { watch_id: id });
        self.ours.send(stream, cancel.clone());
        self.theirs.send(stream, cancel);
        let m = &mut self.streams[stream];
        if m.watches.remove(&id).is_some() {
            m.canceled.push(id);
            m.ctrl += 1;
        } else {
            // etcd does not answer; a progress request right behind it
            // shows whether the server did (`ctrlStream` is in order).
            self.stats.unknown_cancels += 1;
            self.ours.send(stream, progress());
            self.theirs.send(stream, progress());
            m.ctrl += 1;
        }
        self.settle(rev).await;
    }

    /// Waits until both servers delivered everything up to `rev`, then
    /// compares what they sent.
    async fn settle(&mut self, rev: i64) {
        self.wait(rev, true).await;
        self.compare();
    }

    /// Waits until both history streams reached `rev`, takes the new
    /// history into the expectations, then (with `all`) waits until every
    /// stream delivered what the model expects; else only the control
    /// responses.
    async fn wait(&mut self, rev: i64, all: bool) {
        let deadline = Instant::now() + WATCH_TIMEOUT;
        let (a, b) = tokio::join!(
            self.ours.pump_until(deadline, |s| s.history_rev() >= rev),
            self.theirs.pump_until(deadline, |s| s.history_rev() >= rev)
        );
        if let Err(e) = a.and(b) {
            self.fail(&format!("history did not reach revision {rev}: {e}"));
        }
        for e in &self.theirs.history[self.history_used..] {
            for m in &mut self.streams {
                for w in m.watches.values_mut() {
                    if w.wants(e) {
                        w.expected += 1;
                    }
                }
            }
        }
        self.history_used = self.theirs.history.len();
        let model = &self.streams;
        let done = |s: &Side| {
            if all {
                s.satisfies(model)
            } else {
                model.iter().zip(&s.streams).all(|(m, s)| s.ctrl >= m.ctrl)
            }
        };
        let (a, b) = tokio::join!(
            self.ours.pump_until(deadline, done),
            self.theirs.pump_until(deadline, done)
        );
        if let Err(e) = a.and(b) {
            self.fail(&format!("not everything delivered at revision {rev}: {e}"));
        }
    }

    /// Compares the windows of every stream, then starts new ones.
    fn compare(&mut self) {
        for s in 0..self.streams.len() {
            for side in [&self.ours, &self.theirs] {
                if let Some(v) = side.streams[s].violations.first() {
                    self.fail(&format!("{} stream s{s} broke a rule: {v}", side.name));
                }
            }
            let (ours, theirs) = (&self.ours.streams[s].window, &self.theirs.streams[s].window);
            let (a, b) = (split(ours), split(theirs));
            let mut diffs = Vec::new();
            if a.0 != b.0 {
                diffs.push("control responses differ".to_string());
            }
            let ids: BTreeSet<&i64> = a.1.keys().chain(b.1.keys()).collect();
            for id in ids {
                let (x, y) = (a.1.get(id), b.1.get(id));
                if deliveries(x) != deliveries(y) {
                    diffs.push(format!("watch {id}: events differ"));
                } else if EXACT_RESPONSES && x != y {
                    diffs.push(format!(
                        "watch {id}: same events, other responses (batching or header revisions)"
                    ));
                }
            }
            if !diffs.is_empty() {
                let what = format!(
                    "stream s{s}: ferrocd and etcd disagree ({})",
                    diffs.join("; ")
                );
                self.fail_showing(&what, s..s + 1);
            }
            for r in theirs {
                self.stats.record(s, r);
            }
        }
        for side in [&mut self.ours, &mut self.theirs] {
            for s in &mut side.streams {
                s.window.clear();
                s.ctrl = 0;
            }
        }
        for m in &mut self.streams {
            m.ctrl = 0;
        }
    }

    /// Both windows of stream `s` and the model's watches on it.
    fn dump(&self, s: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "model of s{s}:");
        for w in self.streams[s].watches.values() {
            let _ = writeln!(
                out,
                "  id {} {} min_rev {} compact {:?} expects {} events",
                w.id,
                show_create(&w.req),
                w.min_rev,
                w.compact,
                w.expected
            );
        }
        for side in [&self.ours, &self.theirs] {
            let seen = &side.streams[s];
            let _ = writeln!(
                out,
                "{} s{s} (ctrl {}, events {:?}, compacted {:?}):",
                side.name, seen.ctrl, seen.events, seen.compacted
            );
            for r in &seen.window {
                let _ = writeln!(out, "  {}", show_watch_resp(r));
            }
        }
        out
    }

    /// Panics with the seed, a replay line and every stream's dump.
    fn fail(&self, what: &str) -> ! {
        self.fail_showing(what, 0..self.streams.len())
    }

    fn fail_showing(&self, what: &str, streams: std::ops::Range<usize>) -> ! {
        let ops = self.ops_done;
        let dumps: String = streams.map(|s| self.dump(s)).collect();
        panic!(
            "seed {} watch layer after {ops} ops: {what} \
             (replay: FERROCD_DIFF_SEED={} FERROCD_DIFF_OPS={ops} FERROCD_DIFF_VERBOSE=1)\n{dumps}",
            self.seed, self.seed
        );
    }
}

/// Responses by watch id, in order.
type ByWatch<'a> = BTreeMap<i64, Vec<&'a WatchResponse>>;

/// The indexes of each key's last event at revision `rev` in `history`.
fn last_changes_at(history: &[Event], rev: i64) -> BTreeSet<usize> {
    let mut last: BTreeMap<&[u8], usize> = BTreeMap::new();
    for (i, e) in history.iter().enumerate() {
        if let Some(kv) = e.kv.as_ref().filter(|kv| kv.mod_revision == rev) {
            last.insert(&kv.key, i);
        }
    }
    last.into_values().collect()
}

/// A window's control responses in order, and the other responses by
/// watch id in order.
fn split(window: &[WatchResponse]) -> (Vec<&WatchResponse>, ByWatch<'_>) {
    let mut ctrl = Vec::new();
    let mut by_id = ByWatch::new();
    for r in window {
        match kind(r) {
            Kind::Events | Kind::Compacted => by_id.entry(r.watch_id).or_default().push(r),
            _ => ctrl.push(r),
        }
    }
    (ctrl, by_id)
}

/// What one watch got, batching aside: its events one by one, and the
/// compaction cancel.
#[derive(PartialEq)]
enum Delivery<'a> {
    Event(&'a Event),
    Compacted(&'a WatchResponse),
}

fn deliveries<'a>(responses: Option<&Vec<&'a WatchResponse>>) -> Vec<Delivery<'a>> {
    let mut out = Vec::new();
    for r in responses.into_iter().flatten() {
        match kind(r) {
            Kind::Compacted => out.push(Delivery::Compacted(r)),
            _ => out.extend(r.events.iter().map(Delivery::Event)),
        }
    }
    out
}

fn progress() -> RequestUnion {
    RequestUnion::ProgressRequest(WatchProgressRequest {})
}

fn show_create(c: &WatchCreateRequest) -> String {
    let mut s = format!("watch {}", show_span(&c.key, &c.range_end));
    if c.start_revision != 0 {
        let _ = write!(s, " start={}", c.start_revision);
    }
    if c.watch_id != 0 {
        let _ = write!(s, " id={}", c.watch_id);
    }
    if c.prev_kv {
        s.push_str(" prev_kv");
    }
    for f in &c.filters {
        match FilterType::try_from(*f) {
            Ok(f) => {
                let _ = write!(s, " {}", f.as_str_name());
            }
            Err(_) => {
                let _ = write!(s, " filter#{f}");
            }
        }
    }
    s
}

fn show_event(e: &Event) -> String {
    let ty = EventType::try_from(e.r#type)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| format!("type#{}", e.r#type));
    let mut s = format!(
        "{ty} {}",
        e.kv.as_ref().map_or("(no kv)".to_string(), show_kv)
    );
    if let Some(p) = &e.prev_kv {
        let _ = write!(s, " prev {}", show_kv(p));
    }
    s
}

fn show_watch_resp(r: &WatchResponse) -> String {
    let mut s = format!("id={}", r.watch_id);
    for (name, on) in [
        ("created", r.created),
        ("canceled", r.canceled),
        ("fragment", r.fragment),
    ] {
        if on {
            let _ = write!(s, " {name}");
        }
    }
    if r.compact_revision != 0 {
        let _ = write!(s, " compact_revision={}", r.compact_revision);
    }
    if !r.cancel_reason.is_empty() {
        let _ = write!(s, " reason={:?}", r.cancel_reason);
    }
    let _ = write!(s, " {}", show_header(&r.header));
    if !r.events.is_empty() {
        let evs: Vec<String> = r.events.iter().map(show_event).collect();
        let _ = write!(s, " [{}]", evs.join(", "));
    }
    s
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
