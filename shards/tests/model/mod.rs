//! An independent, deliberately naive reference model of etcd v3.5's KV
//! semantics, used to cross-check `ferrocd_shards::Keyspace`.
//!
//! Design: the store is a list of *full snapshots*, one per revision
//! (`history[i] = (revision, every live key at that revision)`); every write
//! revision clones the whole map. Reads at revision `r` simply pick the
//! snapshot for `r` and filter it linearly. Nothing is indexed, nothing is
//! incremental, and compaction only moves a watermark (old snapshots are kept
//! so that "reads at >= C return exactly what they returned before" holds
//! trivially). Speed is irrelevant: keyspaces in the tests are tiny.
//!
//! The model has two halves:
//! * request validation as etcd's gRPC layer does it (`check_*`), and
//! * apply-time semantics (`Model::{range, put, delete_range, txn, compact}`),
//!   which assume validation passed.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use ferrocd_core::KvError;
use ferrocd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use ferrocd_proto::mvccpb::KeyValue;

/// All live keys at one revision.
pub type Snapshot = BTreeMap<Vec<u8>, KeyValue>;

/// A situation the spec leaves undefined (etcd itself panics there), e.g. a
/// txn `Put{ignore_value}` whose key existed before the txn (so the pre-txn
/// check passed) but was removed by a from-key delete earlier in the same txn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undefined(pub String);

/// A top-level response header: only the revision is set.
pub fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------
// Key ranges
// ---------------------------------------------------------------------------

/// Is `k` inside the etcd range given by (`key`, `range_end`)?
/// * `range_end` empty: exactly `key`;
/// * `range_end == "\0"`: every key `>= key`;
/// * otherwise the half-open interval `[key, range_end)` (bytewise).
pub fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        k == key
    } else if range_end == [0u8] {
        k >= key
    } else {
        key <= k && k < range_end
    }
}

/// The kvs of `snap` inside the range, in ascending key order.
pub fn select(snap: &Snapshot, key: &[u8], range_end: &[u8]) -> Vec<KeyValue> {
    snap.values()
        .filter(|kv| in_range(&kv.key, key, range_end))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// Range evaluation over one snapshot
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    Unsorted,
    Up,
    Down,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum By {
    Key,
    Version,
    Create,
    Mod,
    Value,
}

fn sort_by_of(target: i32) -> By {
    if target == SortTarget::Version as i32 {
        By::Version
    } else if target == SortTarget::Create as i32 {
        By::Create
    } else if target == SortTarget::Mod as i32 {
        By::Mod
    } else if target == SortTarget::Value as i32 {
        By::Value
    } else {
        // KEY, and any unknown value, sort by key.
        By::Key
    }
}

fn dir_of(order: i32) -> Dir {
    if order == SortOrder::Ascend as i32 {
        Dir::Up
    } else if order == SortOrder::Descend as i32 {
        Dir::Down
    } else {
        // NONE, and any unknown value.
        Dir::Unsorted
    }
}

fn cmp_by(by: By, a: &KeyValue, b: &KeyValue) -> Ordering {
    match by {
        By::Key => a.key.cmp(&b.key),
        By::Version => a.version.cmp(&b.version),
        By::Create => a.create_revision.cmp(&b.create_revision),
        By::Mod => a.mod_revision.cmp(&b.mod_revision),
        By::Value => a.value.cmp(&b.value),
    }
}

/// Evaluates a RangeRequest against `snap` (already the right revision),
/// answering with header revision `header_rev`.
pub fn eval_range(
    snap: &Snapshot,
    r: &RangeRequest,
    header_rev: i64,
    flavor: Flavor,
) -> RangeResponse {
    let mut in_range_kvs = select(snap, &r.key, &r.range_end);
    let count = in_range_kvs.len() as i64;
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    if flavor.implicit_sort_sees_limit_plus_one
        && r.sort_order == SortOrder::None as i32
        && !filtered
        && r.limit > 0
    {
        in_range_kvs.truncate(r.limit as usize + 1);
    }

    let keep = |kv: &KeyValue| {
        let too_old_mod = r.min_mod_revision != 0 && kv.mod_revision < r.min_mod_revision;
        let too_new_mod = r.max_mod_revision != 0 && kv.mod_revision > r.max_mod_revision;
        let too_old_create =
            r.min_create_revision != 0 && kv.create_revision < r.min_create_revision;
        let too_new_create =
            r.max_create_revision != 0 && kv.create_revision > r.max_create_revision;
        !(too_old_mod || too_new_mod || too_old_create || too_new_create)
    };
    let mut kvs: Vec<KeyValue> = in_range_kvs.into_iter().filter(|kv| keep(kv)).collect();

    let by = sort_by_of(r.sort_target);
    let mut dir = dir_of(r.sort_order);
    let known_order = (0..=2).contains(&r.sort_order);
    let promote = known_order || !flavor.unknown_sort_order_unsorted;
    if by != By::Key && dir == Dir::Unsorted && promote {
        dir = Dir::Up;
    }
    // `kvs` is in ascending key order; `sort_by` is stable.
    match dir {
        Dir::Unsorted => {}
        Dir::Up => kvs.sort_by(|a, b| cmp_by(by, a, b)),
        Dir::Down => kvs.sort_by(|a, b| cmp_by(by, b, a)),
    }

    let mut more = false;
    if r.limit > 0 && kvs.len() as i64 > r.limit {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    if r.count_only {
        kvs.clear();
        more = false;
    }
    RangeResponse {
        header: header(header_rev),
        kvs,
        more,
        count,
    }
}

/// Writes a put into `snap` at revision `rev`. Returns the previous kv.
/// Err(()) when ignore_value/ignore_lease find no existing key.
fn write_put(snap: &mut Snapshot, p: &PutRequest, rev: i64) -> Result<Option<KeyValue>, ()> {
    let prev = snap.get(&p.key).cloned();
    if (p.ignore_value || p.ignore_lease) && prev.is_none() {
        return Err(());
    }
    let value = if p.ignore_value {
        prev.as_ref().unwrap().value.clone()
    } else {
        p.value.clone()
    };
    let lease = if p.ignore_lease {
        prev.as_ref().unwrap().lease
    } else {
        p.lease
    };
    let (create_revision, version) = match &prev {
        Some(old) => (old.create_revision, old.version + 1),
        None => (rev, 1),
    };
    snap.insert(
        p.key.clone(),
        KeyValue {
            key: p.key.clone(),
            create_revision,
            mod_revision: rev,
            version,
            value,
            lease,
        },
    );
    Ok(prev)
}

/// Removes the range from `snap`; returns the removed kvs in key order.
fn write_delete(snap: &mut Snapshot, key: &[u8], range_end: &[u8]) -> Vec<KeyValue> {
    let removed = select(snap, key, range_end);
    for kv in &removed {
        snap.remove(&kv.key);
    }
    removed
}

// ---------------------------------------------------------------------------
// Compares
// ---------------------------------------------------------------------------

fn union_int(c: &Compare, target: CompareTarget) -> i64 {
    match (&c.target_union, target) {
        (Some(TargetUnion::Version(v)), CompareTarget::Version) => *v,
        (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create) => *v,
        (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod) => *v,
        (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => *v,
        _ => 0,
    }
}

fn kv_satisfies(kv: &KeyValue, c: &Compare) -> bool {
    let t = c.target;
    let ord = if t == CompareTarget::Value as i32 {
        let want: &[u8] = match &c.target_union {
            Some(TargetUnion::Value(v)) => v,
            _ => &[],
        };
        kv.value.as_slice().cmp(want)
    } else if t == CompareTarget::Create as i32 {
        kv.create_revision.cmp(&union_int(c, CompareTarget::Create))
    } else if t == CompareTarget::Mod as i32 {
        kv.mod_revision.cmp(&union_int(c, CompareTarget::Mod))
    } else if t == CompareTarget::Version as i32 {
        kv.version.cmp(&union_int(c, CompareTarget::Version))
    } else if t == CompareTarget::Lease as i32 {
        kv.lease.cmp(&union_int(c, CompareTarget::Lease))
    } else {
        // Unknown target: etcd leaves its comparison result at 0.
        Ordering::Equal
    };
    let res = c.result;
    if res == CompareResult::Equal as i32 {
        ord == Ordering::Equal
    } else if res == CompareResult::NotEqual as i32 {
        ord != Ordering::Equal
    } else if res == CompareResult::Greater as i32 {
        ord == Ordering::Greater
    } else if res == CompareResult::Less as i32 {
        ord == Ordering::Less
    } else {
        true
    }
}

/// Evaluates one compare against `snap`.
pub fn compare_holds(snap: &Snapshot, c: &Compare) -> bool {
    let kvs = select(snap, &c.key, &c.range_end);
    if kvs.is_empty() {
        if c.target == CompareTarget::Value as i32 {
            return false;
        }
        return kv_satisfies(&KeyValue::default(), c);
    }
    kvs.iter().all(|kv| kv_satisfies(kv, c))
}

/// The outcome of every compare in a txn tree, decided before the txn runs:
/// whether this txn succeeded, and the decisions of the nested txns of the
/// chosen branch, in order.
#[derive(Debug, Clone)]
struct Plan {
    succeeded: bool,
    nested: Vec<Plan>,
}

fn plan(pre: &Snapshot, t: &TxnRequest) -> Plan {
    let succeeded = t.compare.iter().all(|c| compare_holds(pre, c));
    let branch = if succeeded { &t.success } else { &t.failure };
    let nested = branch
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestTxn(n)) => Some(plan(pre, n)),
            _ => None,
        })
        .collect();
    Plan { succeeded, nested }
}

fn branch<'a>(t: &'a TxnRequest, p: &Plan) -> &'a [RequestOp] {
    if p.succeeded {
        &t.success
    } else {
        &t.failure
    }
}

/// Puts and ranges of the executed path, depth first, in order.
fn path_ops<'a>(
    t: &'a TxnRequest,
    p: &Plan,
    puts: &mut Vec<&'a PutRequest>,
    ranges: &mut Vec<&'a RangeRequest>,
) {
    let mut nested = p.nested.iter();
    for op in branch(t, p) {
        match &op.request {
            Some(Request::RequestPut(x)) => puts.push(x),
            Some(Request::RequestRange(x)) => ranges.push(x),
            Some(Request::RequestTxn(n)) => path_ops(n, nested.next().unwrap(), puts, ranges),
            _ => {}
        }
    }
}

/// ferrocd's answer where etcd panics: walking the executed path in order,
/// is there an ignore_value/ignore_lease put of a key that an earlier
/// DeleteRange on the path removed? (The pre-txn check already covers keys
/// missing before the txn.)
fn ignore_put_after_delete(t: &TxnRequest, p: &Plan, dels: &mut Vec<(Vec<u8>, Vec<u8>)>) -> bool {
    let mut nested = p.nested.iter();
    branch(t, p).iter().any(|op| match &op.request {
        Some(Request::RequestDeleteRange(d)) => {
            dels.push((d.key.clone(), d.range_end.clone()));
            false
        }
        Some(Request::RequestPut(x)) => {
            (x.ignore_value || x.ignore_lease) && dels.iter().any(|(k, e)| in_range(&x.key, k, e))
        }
        Some(Request::RequestTxn(n)) => ignore_put_after_delete(n, nested.next().unwrap(), dels),
        _ => false,
    })
}

/// Does any branch anywhere in the tree contain a Put or a DeleteRange?
fn tree_writes(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => true,
            Some(Request::RequestTxn(n)) => tree_writes(n),
            _ => false,
        })
}

// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

/// The points where the brief's spec and etcd's code disagree (both only
/// about txn pre-checks). `Flavor::SPEC` follows the spec literally;
/// `Flavor::ETCD` follows etcd (server/etcdserver/apply.go `checkRequestPut`
/// / `checkRequestRange`, and v3.6 txn/txn.go `checkPut` / `checkRange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    /// etcd: a txn Range with a *negative* revision fails the pre-check with
    /// `Compacted` when `revision < compact_revision` (etcd compares any
    /// nonzero revision with `FirstRev()`); spec: only `revision > 0` is checked.
    pub negative_txn_range_rev_checked: bool,
    /// etcd: within one txn Put, `ignore_value/ignore_lease` on a missing key
    /// (`KeyNotFound`) is checked before the lease (`LeaseNotFound`); spec:
    /// lease first.
    pub txn_put_ignore_before_lease: bool,
    /// etcd (apply-time; its gRPC layer actually rejects unknown sort enums
    /// with "invalid sort option" first): an unknown `sort_order` is not NONE,
    /// so it is never promoted to ASCEND and matches neither ASCEND nor
    /// DESCEND: no sort at all. Spec: an unknown order is NONE (so a non-KEY
    /// target sorts ascending).
    pub unknown_sort_order_unsorted: bool,
    /// etcd (`executeRange`): it reads everything only if the *requested*
    /// `sort_order != NONE` or a min/max filter is set; otherwise, with
    /// `limit > 0`, it reads just the first `limit + 1` keys in key order.
    /// A non-KEY target with order NONE is then sorted ascending, but only
    /// among those `limit + 1` keys. Spec: sort every kv, then truncate.
    pub implicit_sort_sees_limit_plus_one: bool,
    /// etcd (`api/v3rpc/key.go` checkTxnRequest, v3.5.0 .. main): a nested
    /// txn is checked with `maxTxnOps - opc` (opc = the parent's widest
    /// list), not with the same max. Spec (and ferrocd_core::validate): the
    /// same max.
    pub nested_txn_max_ops_reduced: bool,
}

impl Flavor {
    pub const SPEC: Flavor = Flavor {
        negative_txn_range_rev_checked: false,
        txn_put_ignore_before_lease: false,
        unknown_sort_order_unsorted: false,
        implicit_sort_sees_limit_plus_one: false,
        nested_txn_max_ops_reduced: false,
    };
    pub const ETCD: Flavor = Flavor {
        negative_txn_range_rev_checked: true,
        txn_put_ignore_before_lease: true,
        unknown_sort_order_unsorted: true,
        implicit_sort_sees_limit_plus_one: true,
        nested_txn_max_ops_reduced: true,
    };
    /// What `Keyspace` + `ferrocd_core::validate` currently implement: etcd
    /// at apply time, the spec in validation.
    pub const KEYSPACE: Flavor = Flavor {
        nested_txn_max_ops_reduced: false,
        ..Flavor::ETCD
    };
}

/// Snapshot-per-revision store.
#[derive(Debug, Clone)]
pub struct Model {
    /// `(revision, snapshot)`, one entry per revision, oldest first.
    history: Vec<(i64, Snapshot)>,
    compacted: i64,
    flavor: Flavor,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

/// State of one txn while it executes.
struct TxnRun<'m> {
    model: &'m Model,
    /// Revision before the txn.
    base: i64,
    /// The txn's working copy of the latest state.
    work: Snapshot,
    /// Has anything been written so far?
    wrote: bool,
}

impl TxnRun<'_> {
    fn run(&mut self, t: &TxnRequest, p: &Plan) -> Result<Vec<ResponseOp>, Undefined> {
        let mut out = Vec::new();
        let mut nested = p.nested.iter();
        for op in branch(t, p) {
            let resp = match &op.request {
                Some(Request::RequestRange(r)) => {
                    let read_rev = if self.wrote { self.base + 1 } else { self.base };
                    let snap = if r.revision <= 0 {
                        &self.work
                    } else {
                        self.model.at(r.revision)
                    };
                    Response::ResponseRange(eval_range(snap, r, read_rev, self.model.flavor))
                }
                Some(Request::RequestPut(x)) => {
                    let prev = write_put(&mut self.work, x, self.base + 1).map_err(|()| {
                        Undefined(format!(
                            "txn put with ignore_value/ignore_lease on key {:?} deleted earlier in the same txn",
                            x.key.escape_ascii().to_string()
                        ))
                    })?;
                    self.wrote = true;
                    Response::ResponsePut(PutResponse {
                        header: header(self.base + 1),
                        prev_kv: if x.prev_kv { prev } else { None },
                    })
                }
                Some(Request::RequestDeleteRange(d)) => {
                    let removed = write_delete(&mut self.work, &d.key, &d.range_end);
                    if !removed.is_empty() {
                        self.wrote = true;
                    }
                    Response::ResponseDeleteRange(DeleteRangeResponse {
                        header: header(if self.wrote { self.base + 1 } else { self.base }),
                        deleted: removed.len() as i64,
                        prev_kvs: if d.prev_kv { removed } else { Vec::new() },
                    })
                }
                Some(Request::RequestTxn(n)) => {
                    let np = nested.next().unwrap();
                    let responses = self.run(n, np)?;
                    Response::ResponseTxn(TxnResponse {
                        header: Some(ResponseHeader::default()),
                        succeeded: np.succeeded,
                        responses,
                    })
                }
                None => return Err(Undefined("RequestOp without a request".into())),
            };
            out.push(ResponseOp {
                response: Some(resp),
            });
        }
        Ok(out)
    }
}

impl Model {
    /// An empty store at revision 1, following the spec literally.
    pub fn new() -> Model {
        Model::with_flavor(Flavor::SPEC)
    }

    /// An empty store at revision 1 with the given txn pre-check flavor.
    pub fn with_flavor(flavor: Flavor) -> Model {
        Model {
            history: vec![(1, Snapshot::new())],
            compacted: -1,
            flavor,
        }
    }

    /// Current revision.
    pub fn revision(&self) -> i64 {
        self.history.last().unwrap().0
    }

    /// Compaction watermark; -1 before the first compaction.
    pub fn compact_revision(&self) -> i64 {
        self.compacted
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The latest snapshot.
    pub fn current(&self) -> &Snapshot {
        &self.history.last().unwrap().1
    }

    /// The snapshot visible at `rev` (1 <= rev <= current), ignoring compaction.
    pub fn at(&self, rev: i64) -> &Snapshot {
        &self
            .history
            .iter()
            .rev()
            .find(|(r, _)| *r <= rev)
            .unwrap_or_else(|| panic!("no snapshot at revision {rev}"))
            .1
    }

    fn push(&mut self, snap: Snapshot) -> i64 {
        let rev = self.revision() + 1;
        self.history.push((rev, snap));
        rev
    }

    pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, KvError> {
        let cur = self.revision();
        let at = if r.revision <= 0 { cur } else { r.revision };
        if at > cur {
            return Err(KvError::FutureRev);
        }
        if at < self.compacted {
            return Err(KvError::Compacted);
        }
        Ok(eval_range(self.at(at), r, cur, self.flavor))
    }

    pub fn put(&mut self, p: &PutRequest) -> Result<PutResponse, KvError> {
        if p.lease != 0 {
            // No lease ever exists in this model.
            return Err(KvError::LeaseNotFound);
        }
        let mut snap = self.current().clone();
        let rev = self.revision() + 1;
        let prev = write_put(&mut snap, p, rev).map_err(|()| KvError::KeyNotFound)?;
        self.push(snap);
        Ok(PutResponse {
            header: header(rev),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    pub fn delete_range(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse, KvError> {
        let mut snap = self.current().clone();
        let removed = write_delete(&mut snap, &d.key, &d.range_end);
        let rev = if removed.is_empty() {
            self.revision()
        } else {
            self.push(snap)
        };
        Ok(DeleteRangeResponse {
            header: header(rev),
            deleted: removed.len() as i64,
            prev_kvs: if d.prev_kv { removed } else { Vec::new() },
        })
    }

    pub fn compact(&mut self, c: &CompactionRequest) -> Result<CompactionResponse, KvError> {
        if c.revision <= self.compacted {
            return Err(KvError::Compacted);
        }
        if c.revision > self.revision() {
            return Err(KvError::FutureRev);
        }
        self.compacted = c.revision;
        Ok(CompactionResponse {
            header: header(self.revision()),
        })
    }

    /// Txn; panics in the situations the spec leaves undefined.
    pub fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, KvError> {
        self.try_txn(t)
            .unwrap_or_else(|u| panic!("undefined txn: {}", u.0))
    }

    /// Txn; `Err(Undefined)` (and no state change) where the spec has no answer.
    pub fn try_txn(&mut self, t: &TxnRequest) -> Result<Result<TxnResponse, KvError>, Undefined> {
        let base = self.revision();
        let pre = self.current();

        // (1) every compare of the tree, against the pre-txn state
        let p = plan(pre, t);

        // (2) checks over the executed path, against the pre-txn state
        let mut puts = Vec::new();
        let mut ranges = Vec::new();
        path_ops(t, &p, &mut puts, &mut ranges);
        if tree_writes(t) {
            for x in &puts {
                let no_lease = x.lease != 0; // no lease ever exists
                let no_key = (x.ignore_value || x.ignore_lease) && !pre.contains_key(&x.key);
                let first = if self.flavor.txn_put_ignore_before_lease {
                    [
                        (no_key, KvError::KeyNotFound),
                        (no_lease, KvError::LeaseNotFound),
                    ]
                } else {
                    [
                        (no_lease, KvError::LeaseNotFound),
                        (no_key, KvError::KeyNotFound),
                    ]
                };
                if let Some((_, e)) = first.into_iter().find(|(bad, _)| *bad) {
                    return Ok(Err(e));
                }
            }
            if ignore_put_after_delete(t, &p, &mut Vec::new()) {
                return Ok(Err(KvError::KeyNotFound));
            }
        }
        for r in &ranges {
            if r.revision > base {
                return Ok(Err(KvError::FutureRev));
            }
            let checked =
                r.revision > 0 || (r.revision < 0 && self.flavor.negative_txn_range_rev_checked);
            if checked && r.revision < self.compacted {
                return Ok(Err(KvError::Compacted));
            }
        }

        // (3) execute
        let mut run = TxnRun {
            model: self,
            base,
            work: pre.clone(),
            wrote: false,
        };
        let responses = run.run(t, &p)?;
        let (wrote, work) = (run.wrote, run.work);
        let rev = if wrote { self.push(work) } else { base };
        Ok(Ok(TxnResponse {
            header: header(rev),
            succeeded: p.succeeded,
            responses,
        }))
    }
}

// ---------------------------------------------------------------------------
// Validation (etcd's gRPC layer, api/v3rpc/key.go)
// ---------------------------------------------------------------------------

pub fn check_range(r: &RangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        Err(KvError::EmptyKey)
    } else {
        Ok(())
    }
}

pub fn check_put(p: &PutRequest) -> Result<(), KvError> {
    if p.key.is_empty() {
        Err(KvError::EmptyKey)
    } else if p.ignore_value && !p.value.is_empty() {
        Err(KvError::ValueProvided)
    } else if p.ignore_lease && p.lease != 0 {
        Err(KvError::LeaseProvided)
    } else {
        Ok(())
    }
}

pub fn check_delete_range(d: &DeleteRangeRequest) -> Result<(), KvError> {
    if d.key.is_empty() {
        Err(KvError::EmptyKey)
    } else {
        Ok(())
    }
}

/// etcd's checkTxnRequest followed by checkIntervals on both top-level
/// branches, as the spec describes it.
pub fn check_txn(t: &TxnRequest, max_ops: usize) -> Result<(), KvError> {
    check_txn_flavored(t, max_ops, Flavor::SPEC)
}

pub fn check_txn_flavored(t: &TxnRequest, max_ops: usize, flavor: Flavor) -> Result<(), KvError> {
    check_txn_ops(t, max_ops, flavor)?;
    writes_of(&t.success)?;
    writes_of(&t.failure)?;
    Ok(())
}

/// checkTxnRequest: sizes, compares' keys, each op (recursively).
fn check_txn_ops(t: &TxnRequest, max_ops: usize, flavor: Flavor) -> Result<(), KvError> {
    let widest = [t.compare.len(), t.success.len(), t.failure.len()]
        .into_iter()
        .max()
        .unwrap();
    if widest > max_ops {
        return Err(KvError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    let nested_max = if flavor.nested_txn_max_ops_reduced {
        max_ops - widest
    } else {
        max_ops
    };
    for op in t.success.iter().chain(t.failure.iter()) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_range(r)?,
            Some(Request::RequestPut(p)) => check_put(p)?,
            Some(Request::RequestDeleteRange(d)) => check_delete_range(d)?,
            Some(Request::RequestTxn(n)) => check_txn_ops(n, nested_max, flavor)?,
            None => return Err(KvError::KeyNotFound),
        }
    }
    Ok(())
}

/// Keys put and ranges deleted by one branch (and what is nested in it).
/// Deleted ranges are literal `[start, end)` byte-string intervals (a point
/// when `end` is empty), as etcd's `adt` compares them.
struct BranchWrites {
    puts: BTreeSet<Vec<u8>>,
    dels: Vec<(Vec<u8>, Vec<u8>)>,
}

fn literally_deleted(dels: &[(Vec<u8>, Vec<u8>)], k: &[u8]) -> bool {
    dels.iter().any(|(start, end)| {
        if end.is_empty() {
            k == start.as_slice()
        } else {
            start.as_slice() <= k && k < end.as_slice()
        }
    })
}

/// etcd's checkIntervals.
fn writes_of(ops: &[RequestOp]) -> Result<BranchWrites, KvError> {
    let mut dels: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            dels.push((d.key.clone(), d.range_end.clone()));
        }
    }
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in ops {
        let Some(Request::RequestTxn(n)) = &op.request else {
            continue;
        };
        let then = writes_of(&n.success)?;
        let other = writes_of(&n.failure)?;
        for k in &then.puts {
            if puts.contains(k) || literally_deleted(&dels, k) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &other.puts {
            let clash = puts.contains(k) && !then.puts.contains(k);
            if clash || literally_deleted(&dels, k) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(then.dels);
        dels.extend(other.dels);
    }
    for op in ops {
        if let Some(Request::RequestPut(p)) = &op.request {
            if puts.contains(&p.key) || literally_deleted(&dels, &p.key) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(p.key.clone());
        }
    }
    Ok(BranchWrites { puts, dels })
}

// ---------------------------------------------------------------------------
// Compact human-readable rendering of requests (for failure reports)
// ---------------------------------------------------------------------------

pub fn show_bytes(b: &[u8]) -> String {
    format!("\"{}\"", b.escape_ascii())
}

fn show_span(key: &[u8], end: &[u8]) -> String {
    if end.is_empty() {
        show_bytes(key)
    } else {
        format!("{}..{}", show_bytes(key), show_bytes(end))
    }
}

pub fn show_range(r: &RangeRequest) -> String {
    let mut s = format!("Range({}", show_span(&r.key, &r.range_end));
    let ints = [
        ("limit", r.limit),
        ("rev", r.revision),
        ("sort_order", r.sort_order as i64),
        ("sort_target", r.sort_target as i64),
        ("min_mod", r.min_mod_revision),
        ("max_mod", r.max_mod_revision),
        ("min_create", r.min_create_revision),
        ("max_create", r.max_create_revision),
    ];
    for (n, v) in ints {
        if v != 0 {
            s += &format!(" {n}={v}");
        }
    }
    for (n, v) in [
        ("serializable", r.serializable),
        ("keys_only", r.keys_only),
        ("count_only", r.count_only),
    ] {
        if v {
            s += &format!(" {n}");
        }
    }
    s + ")"
}

pub fn show_put(p: &PutRequest) -> String {
    let mut s = format!("Put({}={}", show_bytes(&p.key), show_bytes(&p.value));
    if p.lease != 0 {
        s += &format!(" lease={}", p.lease);
    }
    for (n, v) in [
        ("prev_kv", p.prev_kv),
        ("ignore_value", p.ignore_value),
        ("ignore_lease", p.ignore_lease),
    ] {
        if v {
            s += &format!(" {n}");
        }
    }
    s + ")"
}

pub fn show_delete(d: &DeleteRangeRequest) -> String {
    format!(
        "Delete({}{})",
        show_span(&d.key, &d.range_end),
        if d.prev_kv { " prev_kv" } else { "" }
    )
}

pub fn show_compare(c: &Compare) -> String {
    let target = ["VERSION", "CREATE", "MOD", "VALUE", "LEASE"]
        .get(c.target as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("target{}", c.target));
    let result = ["==", ">", "<", "!="]
        .get(c.result as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("result{}", c.result));
    let rhs = match &c.target_union {
        None => "none".to_string(),
        Some(TargetUnion::Version(v)) => format!("version:{v}"),
        Some(TargetUnion::CreateRevision(v)) => format!("create:{v}"),
        Some(TargetUnion::ModRevision(v)) => format!("mod:{v}"),
        Some(TargetUnion::Lease(v)) => format!("lease:{v}"),
        Some(TargetUnion::Value(v)) => format!("value:{}", show_bytes(v)),
    };
    format!(
        "{target}({}) {result} {rhs}",
        show_span(&c.key, &c.range_end)
    )
}

pub fn show_op(op: &RequestOp) -> String {
    match &op.request {
        Some(Request::RequestRange(r)) => show_range(r),
        Some(Request::RequestPut(p)) => show_put(p),
        Some(Request::RequestDeleteRange(d)) => show_delete(d),
        Some(Request::RequestTxn(t)) => show_txn(t),
        None => "<empty op>".into(),
    }
}

pub fn show_txn(t: &TxnRequest) -> String {
    let list = |ops: &[RequestOp]| ops.iter().map(show_op).collect::<Vec<_>>().join(", ");
    format!(
        "Txn(if [{}] then [{}] else [{}])",
        t.compare
            .iter()
            .map(show_compare)
            .collect::<Vec<_>>()
            .join(", "),
        list(&t.success),
        list(&t.failure)
    )
}
