//! Property test: `ferrocd_shards::Keyspace` (with 1, 2 and 8 shards) and
//! `ferrocd_core::validate` against the independent snapshot-per-revision
//! reference model in `tests/model`.
//!
//! Each case is a random sequence of Put / DeleteRange / Txn / Compact /
//! Range requests over a tiny key alphabet (so that ops collide). For every
//! op: validation results must agree; if valid, the op is applied to the
//! model and to every keyspace and the results (responses or errors) must
//! be identical, and so must `revision()` / `compact_revision()`. At the end
//! of a case the whole keyspace is read at every revision.
//!
//! `PROPTEST_CASES` sets the number of cases (default 1000);
//! `PROPTEST_RNG_SEED` makes a run reproducible. By default the model
//! follows etcd's code (`FERROCD_MODEL_FLAVOR=etcd`), which is what ferrocd
//! implements; `spec` and `keyspace` select the variants described in
//! `model::Flavor` (the points where a first written spec and etcd's code
//! differed), kept so those differences stay demonstrable.

mod model;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use ferrocd_core::{validate, KvError};
use ferrocd_proto::etcdserverpb::{
    compare::TargetUnion, request_op::Request, response_op::Response, CompactionRequest, Compare,
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use ferrocd_shards::Keyspace;
use model::{Flavor, Model};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRunner};

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// Keys of 1-3 bytes over {0x00, 'a', 'b', 0xff}, biased to short keys.
fn key() -> BoxedStrategy<Vec<u8>> {
    let byte = prop_oneof![Just(0u8), Just(b'a'), Just(b'b'), Just(0xffu8)];
    prop_oneof![
        3 => vec(byte.clone(), 1..=1),
        3 => vec(byte.clone(), 2..=2),
        1 => vec(byte, 3..=3),
    ]
    .boxed()
}

/// A key that is occasionally empty (invalid). Txns nest many keys, so
/// inside them empty keys are rarer still.
fn maybe_empty_key() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![40 => key(), 1 => Just(Vec::new())].boxed()
}

fn rarely_empty_key() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![400 => key(), 1 => Just(Vec::new())].boxed()
}

fn prefix_end(k: &[u8]) -> Vec<u8> {
    let mut e = k.to_vec();
    while let Some(last) = e.pop() {
        if last != 0xff {
            e.push(last + 1);
            return e;
        }
    }
    vec![0]
}

/// (key, range_end) of every kind: single key, from-key "\0", prefix, whole
/// keyspace, arbitrary (often empty or inverted).
fn span(single_weight: u32, in_txn: bool) -> BoxedStrategy<(Vec<u8>, Vec<u8>)> {
    let maybe_empty_key = if in_txn {
        rarely_empty_key
    } else {
        maybe_empty_key
    };
    prop_oneof![
        single_weight => maybe_empty_key().prop_map(|k| (k, Vec::new())),
        1 => maybe_empty_key().prop_map(|k| (k, vec![0])),
        2 => key().prop_map(|k| { let e = prefix_end(&k); (k, e) }),
        1 => Just((vec![0], vec![0])),
        2 => (maybe_empty_key(), key()),
    ]
    .boxed()
}

fn value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        Just(b"".to_vec()),
        Just(b"x".to_vec()),
        Just(b"y".to_vec()),
        Just(b"xy".to_vec()),
        Just(vec![0xff]),
    ]
    .boxed()
}

/// Revisions are generated *encoded* and resolved against the store state
/// when the op runs (see `resolve_rev`), so that historical / current /
/// future / compacted revisions are all hit regardless of the sequence.
fn range_rev() -> BoxedStrategy<i64> {
    prop_oneof![
        8 => Just(0i64),
        1 => -3i64..=-1,
        2 => 1i64..=12,
        4 => 100i64..=106,
        1 => 201i64..=202,
        1 => Just(300i64),
        1 => Just(301i64),
        1 => Just(302i64),
    ]
    .boxed()
}

fn compact_rev() -> BoxedStrategy<i64> {
    prop_oneof![
        5 => 100i64..=105,
        1 => Just(300i64),
        1 => Just(301i64),
        1 => 201i64..=202,
        1 => 0i64..=3,
        1 => Just(302i64),
    ]
    .boxed()
}

/// 100+k: current-k; 200+k: current+k; 300: compact revision; 301: compact
/// revision - 1; 302: current; anything else: literal.
fn resolve_rev(enc: i64, cur: i64, compacted: i64) -> i64 {
    match enc {
        100..=199 => cur - (enc - 100),
        200..=299 => cur + (enc - 200),
        300 => compacted,
        301 => compacted - 1,
        302 => cur,
        _ => enc,
    }
}

fn filter_rev() -> BoxedStrategy<i64> {
    prop_oneof![6 => Just(0i64), 1 => 1i64..=10].boxed()
}

fn range_req(in_txn: bool) -> BoxedStrategy<RangeRequest> {
    let opts = (
        prop_oneof![5 => Just(0i64), 3 => 1i64..=3, 1 => Just(-1i64)],
        range_rev(),
        prop_oneof![4 => Just(0i32), 2 => Just(1i32), 2 => Just(2i32), 1 => Just(5i32)],
        prop_oneof![4 => Just(0i32), 4 => 1i32..=4, 1 => Just(9i32)],
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
    );
    let filters = (filter_rev(), filter_rev(), filter_rev(), filter_rev());
    (span(4, in_txn), opts, filters)
        .prop_map(
            |(
                (key, range_end),
                (limit, revision, sort_order, sort_target, serializable, keys_only, count_only),
                (min_mod_revision, max_mod_revision, min_create_revision, max_create_revision),
            )| RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order,
                sort_target,
                serializable,
                keys_only,
                count_only,
                min_mod_revision,
                max_mod_revision,
                min_create_revision,
                max_create_revision,
            },
        )
        .boxed()
}

fn put_req(in_txn: bool) -> BoxedStrategy<PutRequest> {
    (
        if in_txn {
            rarely_empty_key()
        } else {
            maybe_empty_key()
        },
        value(),
        prop_oneof![14 => Just(0i64), 1 => Just(7i64)],
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.85),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease, tidy)| PutRequest {
                value: if ignore_value && tidy {
                    Vec::new()
                } else {
                    value
                },
                lease: if ignore_lease && tidy { 0 } else { lease },
                key,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
        .boxed()
}

fn delete_req(in_txn: bool) -> BoxedStrategy<DeleteRangeRequest> {
    (span(3, in_txn), any::<bool>())
        .prop_map(|((key, range_end), prev_kv)| DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        })
        .boxed()
}

fn compare() -> BoxedStrategy<Compare> {
    (
        span(8, true),
        0i32..=4,
        prop_oneof![12 => 0i32..=3, 1 => Just(9i32)],
        0i64..=8,
        value(),
        0u8..8,
    )
        .prop_map(|((key, range_end), target, result, n, v, how)| {
            let matching = match target {
                0 => TargetUnion::Version(n),
                1 => TargetUnion::CreateRevision(n),
                2 => TargetUnion::ModRevision(n),
                3 => TargetUnion::Value(v),
                _ => TargetUnion::Lease(n % 2),
            };
            let target_union = match how {
                0..=5 => Some(matching),
                6 if target == 3 => Some(TargetUnion::Version(n)),
                6 => Some(TargetUnion::Value(b"x".to_vec())),
                _ => None,
            };
            Compare {
                result,
                target,
                key,
                target_union,
                range_end,
            }
        })
        .boxed()
}

fn request_op(depth: u32) -> BoxedStrategy<RequestOp> {
    let leaf = prop_oneof![
        30 => range_req(true).prop_map(Request::RequestRange),
        40 => put_req(true).prop_map(Request::RequestPut),
        20 => delete_req(true).prop_map(Request::RequestDeleteRange),
    ];
    let req = if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![9 => leaf, 2 => txn_req(depth - 1).prop_map(Request::RequestTxn)].boxed()
    };
    prop_oneof![
        300 => req.prop_map(|r| RequestOp { request: Some(r) }),
        1 => Just(RequestOp { request: None }),
    ]
    .boxed()
}

/// A txn whose branches may nest txns `depth` more levels.
fn txn_req(depth: u32) -> BoxedStrategy<TxnRequest> {
    (
        vec(compare(), 0..=3),
        vec(request_op(depth), 0..=4),
        vec(request_op(depth), 0..=4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
        .boxed()
}

#[derive(Clone, Debug)]
enum Op {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeRequest),
    /// The request and `max_txn_ops`.
    Txn(TxnRequest, usize),
    Compact(i64, bool),
}

fn op() -> BoxedStrategy<Op> {
    prop_oneof![
        5 => put_req(false).prop_map(Op::Put),
        2 => delete_req(false).prop_map(Op::Delete),
        3 => range_req(false).prop_map(Op::Range),
        4 => (txn_req(2), prop_oneof![6 => Just(4usize), 1 => Just(3usize), 2 => Just(128usize)])
            .prop_map(|(t, max)| Op::Txn(t, max)),
        1 => (compact_rev(), any::<bool>()).prop_map(|(r, p)| Op::Compact(r, p)),
    ]
    .boxed()
}

fn resolve_txn(t: &mut TxnRequest, cur: i64, compacted: i64) {
    for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
        match &mut op.request {
            Some(Request::RequestRange(r)) => r.revision = resolve_rev(r.revision, cur, compacted),
            Some(Request::RequestTxn(n)) => resolve_txn(n, cur, compacted),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Statistics (what the generated cases actually exercised)
// ---------------------------------------------------------------------------

static STATS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn bump(what: impl Into<String>) {
    *STATS.lock().unwrap().entry(what.into()).or_default() += 1;
}

fn outcome<T>(r: &Result<T, KvError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

// ---------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------

const SHARDS: [u16; 3] = [1, 2, 8];

fn flavor_name() -> String {
    std::env::var("FERROCD_MODEL_FLAVOR").unwrap_or_else(|_| "etcd".into())
}

fn flavor() -> Flavor {
    match flavor_name().as_str() {
        "etcd" => Flavor::ETCD,
        "keyspace" => Flavor::KEYSPACE,
        "spec" => Flavor::SPEC,
        other => {
            panic!("FERROCD_MODEL_FLAVOR must be 'spec', 'keyspace' or 'etcd', not {other:?}")
        }
    }
}

struct Harness {
    model: Model,
    stores: Vec<(u16, Keyspace)>,
    trace: Vec<String>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            model: Model::with_flavor(flavor()),
            stores: SHARDS.iter().map(|&n| (n, Keyspace::new(n))).collect(),
            trace: Vec::new(),
        }
    }

    fn fail(&self, idx: usize, msg: String) -> TestCaseError {
        TestCaseError::fail(format!(
            "\n=== mismatch at op #{idx} ===\n{msg}\n--- op sequence (resolved) ---\n{}\n--- model state at failure (rev {}, compacted {}) ---\n{:?}\n",
            self.trace.join("\n"),
            self.model.revision(),
            self.model.compact_revision(),
            self.model
                .current()
                .values()
                .map(|kv| format!(
                    "{}={} c{} m{} v{} l{}",
                    model::show_bytes(&kv.key),
                    model::show_bytes(&kv.value),
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                    kv.lease
                ))
                .collect::<Vec<_>>()
        ))
    }

    fn same_validation(
        &self,
        idx: usize,
        want: Result<(), KvError>,
        got: Result<(), KvError>,
    ) -> Result<bool, TestCaseError> {
        if want != got {
            return Err(self.fail(
                idx,
                format!(
                    "validation differs: model ({} flavor) {want:?}, ferrocd_core::validate {got:?}",
                    flavor_name()
                ),
            ));
        }
        Ok(want.is_ok())
    }

    fn same_result<T: PartialEq + std::fmt::Debug>(
        &self,
        idx: usize,
        want: &Result<T, KvError>,
        shards: u16,
        got: &Result<T, KvError>,
    ) -> Result<(), TestCaseError> {
        if want != got {
            return Err(self.fail(
                idx,
                format!(
                    "result differs (Keyspace::new({shards})):\n  model ({} flavor): {want:?}\n  keyspace: {got:?}",
                    flavor_name()
                ),
            ));
        }
        Ok(())
    }

    fn same_revisions(&self, idx: usize) -> Result<(), TestCaseError> {
        for (n, ks) in &self.stores {
            let want = (self.model.revision(), self.model.compact_revision());
            let got = (ks.revision(), ks.compact_revision());
            if want != got {
                return Err(self.fail(
                    idx,
                    format!(
                        "(revision, compact_revision) differ (Keyspace::new({n})): model {want:?}, keyspace {got:?}"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn step(&mut self, idx: usize, op: &Op) -> Result<(), TestCaseError> {
        let cur = self.model.revision();
        let compacted = self.model.compact_revision();
        match op {
            Op::Range(r) => {
                let mut r = r.clone();
                r.revision = resolve_rev(r.revision, cur, compacted);
                self.trace.push(format!("#{idx} {}", model::show_range(&r)));
                if self.same_validation(idx, model::check_range(&r), validate::check_range(&r))? {
                    let want = self.model.range(&r);
                    bump(format!("range {}", outcome(&want)));
                    for (n, ks) in &self.stores {
                        self.same_result(idx, &want, *n, &ks.range(&r))?;
                    }
                } else {
                    bump("range invalid");
                }
            }
            Op::Put(p) => {
                self.trace.push(format!("#{idx} {}", model::show_put(p)));
                if self.same_validation(idx, model::check_put(p), validate::check_put(p))? {
                    let want = self.model.put(p);
                    bump(format!("put {}", outcome(&want)));
                    let got: Vec<_> = self
                        .stores
                        .iter_mut()
                        .map(|(n, ks)| (*n, ks.put(p)))
                        .collect();
                    for (n, g) in &got {
                        self.same_result(idx, &want, *n, g)?;
                    }
                } else {
                    bump("put invalid");
                }
            }
            Op::Delete(d) => {
                self.trace.push(format!("#{idx} {}", model::show_delete(d)));
                if self.same_validation(
                    idx,
                    model::check_delete_range(d),
                    validate::check_delete_range(d),
                )? {
                    let want = self.model.delete_range(d);
                    bump(match &want {
                        Ok(r) if r.deleted > 0 => "delete ok (deleted >= 1)".to_string(),
                        other => format!("delete {}", outcome(other)),
                    });
                    let got: Vec<_> = self
                        .stores
                        .iter_mut()
                        .map(|(n, ks)| (*n, ks.delete_range(d)))
                        .collect();
                    for (n, g) in &got {
                        self.same_result(idx, &want, *n, g)?;
                    }
                } else {
                    bump("delete invalid");
                }
            }
            Op::Compact(enc, physical) => {
                let c = CompactionRequest {
                    revision: resolve_rev(*enc, cur, compacted),
                    physical: *physical,
                };
                self.trace.push(format!("#{idx} Compact({})", c.revision));
                let want = self.model.compact(&c);
                bump(format!("compact {}", outcome(&want)));
                let got: Vec<_> = self
                    .stores
                    .iter_mut()
                    .map(|(n, ks)| (*n, ks.compact(&c)))
                    .collect();
                for (n, g) in &got {
                    self.same_result(idx, &want, *n, g)?;
                }
            }
            Op::Txn(t, max) => {
                let mut t = t.clone();
                resolve_txn(&mut t, cur, compacted);
                self.trace.push(format!(
                    "#{idx} {} [max_txn_ops={max}]",
                    model::show_txn(&t)
                ));
                let want = model::check_txn_flavored(&t, *max, self.model.flavor());
                let valid = self.same_validation(idx, want, validate::check_txn(&t, *max))?;
                if !valid {
                    bump(format!("txn invalid {:?}", want.unwrap_err()));
                } else {
                    match self.model.try_txn(&t) {
                        Err(model::Undefined(why)) => {
                            // The spec (and etcd, which panics) has no answer;
                            // skip the op everywhere.
                            bump("txn undefined (skipped)");
                            self.trace.push(format!("   ^ skipped: {why}"));
                        }
                        Ok(want) => {
                            bump(match &want {
                                Ok(r) if r.header.as_ref().unwrap().revision > cur => {
                                    format!("txn ok wrote succeeded={}", r.succeeded)
                                }
                                Ok(r) => format!("txn ok read-only succeeded={}", r.succeeded),
                                Err(e) => format!("txn {e:?}"),
                            });
                            if let Ok(r) = &want {
                                if r.responses
                                    .iter()
                                    .any(|o| matches!(o.response, Some(Response::ResponseTxn(_))))
                                {
                                    bump("txn ok, executed a nested txn");
                                }
                            }
                            // The read path the server takes for read-only
                            // txns must give the same answer.
                            if Keyspace::txn_is_read_only(&t) {
                                bump("txn read-only path checked");
                                for (n, ks) in &self.stores {
                                    let g = ks.txn_read_only(&t);
                                    self.same_result(idx, &want, *n, &g)?;
                                }
                            }
                            let got: Vec<_> = self
                                .stores
                                .iter_mut()
                                .map(|(n, ks)| (*n, ks.txn(&t)))
                                .collect();
                            for (n, g) in &got {
                                self.same_result(idx, &want, *n, g)?;
                            }
                        }
                    }
                }
            }
        }
        self.same_revisions(idx)
    }

    /// Reads the whole keyspace at every revision (and a few outside).
    fn final_sweep(&self, idx: usize) -> Result<(), TestCaseError> {
        for rev in -1..=self.model.revision() + 1 {
            let r = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: rev,
                ..Default::default()
            };
            let want = self.model.range(&r);
            for (n, ks) in &self.stores {
                let got = ks.range(&r);
                if want != got {
                    return Err(self.fail(
                        idx,
                        format!(
                            "final sweep: whole keyspace at revision {rev} differs (Keyspace::new({n})):\n  model ({} flavor): {want:?}\n  keyspace: {got:?}",
                            flavor_name()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn run_case(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    for (idx, op) in ops.iter().enumerate() {
        h.step(idx, op)?;
    }
    h.final_sweep(ops.len())
}

#[test]
fn keyspace_matches_model() {
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1000);
    let defaults = Config::default();
    let config = Config {
        cases,
        // Generation dominates the run time in debug builds; ChaCha is ~10x
        // slower there than XorShift. PROPTEST_RNG_ALGORITHM still wins.
        rng_algorithm: if std::env::var_os("PROPTEST_RNG_ALGORITHM").is_some() {
            defaults.rng_algorithm
        } else {
            RngAlgorithm::XorShift
        },
        // Keep the repository clean: no proptest-regressions files.
        failure_persistence: None,
        ..defaults
    };
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let result = runner.run(&vec(op(), 1..40), |ops| run_case(&ops));
    let elapsed = started.elapsed();

    let stats = STATS.lock().unwrap();
    eprintln!(
        "prop_model: {cases} cases, model flavor {:?} = {:?}, in {elapsed:.2?}; op outcomes (incl. shrinking):",
        flavor_name(),
        flavor()
    );
    for (what, n) in stats.iter() {
        eprintln!("  {n:>8}  {what}");
    }
    drop(stats);

    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, _minimal)) => panic!("{reason}"),
        Err(e) => panic!("{e}"),
    }
}
