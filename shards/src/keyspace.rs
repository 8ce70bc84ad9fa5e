//! The keyspace: N shards, one router and one sequencer, applying etcd's KV
//! commands with etcd v3.5's semantics (`server/etcdserver/apply.go`).
//!
//! The methods here are *apply-time* semantics: the request checks etcd's
//! gRPC layer runs first live in `ferrocd_core::validate`. Every method is
//! deterministic; applying the same commands in the same order to a
//! keyspace of any shard count gives byte-identical responses.
//!
//! Response headers carry only `revision`; the edge fills `cluster_id`,
//! `member_id` and `raft_term`.
//!
//! A Txn runs in three steps, as in etcd:
//! 1. every compare in the executed tree is evaluated against the state
//!    *before* the txn (nested txns do not see the outer txn's writes);
//! 2. the executed path is checked against that state (puts first: a
//!    missing key for `ignore_value`/`ignore_lease`, then an unknown lease;
//!    then ranges: future or compacted revisions); the first error wins and
//!    nothing changes. One deliberate difference: an `ignore_value` put of a
//!    key deleted earlier in the same txn is `key not found` here, where
//!    etcd passes its checks and then panics mid-txn;
//! 3. the path executes; its writes share revision `current + 1` with
//!    increasing sub-revisions, and later ops see earlier writes.

use crate::key_index::Rev;
use crate::range_merge::{merge_by_key, RangeAnswer};
use crate::shard::{key_value, ReadShape, Shard, ShardRange};
use bytes::Bytes;
use ferrocd_core::{KeyRange, KvError, Revision, Router, Sequencer, ShardId, ShardSet};
use ferrocd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use ferrocd_proto::mvccpb::KeyValue;
use std::cmp::Ordering;
use std::collections::HashMap;

/// The sharded MVCC store of one node.
#[derive(Clone, Debug)]
pub struct Keyspace {
    router: Router,
    shards: Vec<Shard>,
    sequencer: Sequencer,
    /// Leases that exist. Lease commands arrive with the Lease service; until
    /// then the set stays empty and a put naming a lease gets etcd's
    /// `requested lease not found`.
    pub(crate) leases: HashMap<i64, crate::lease::LeaseEntry>,
    /// Watch events of writes applied since the last `take_events`.
    pub(crate) journal: Vec<ferrocd_proto::mvccpb::Event>,
}

/// The compare results of a txn tree, decided before it writes: whether
/// the txn succeeded, and the plans of the nested txns in its executed
/// branch, in order.
#[derive(Debug)]
struct TxnPlan {
    succeeded: bool,
    nested: Vec<TxnPlan>,
}

/// Running state of one txn's execution.
pub(crate) struct TxnExec {
    /// The revision the txn's writes take.
    rev: i64,
    /// Sub-revision of the next write.
    sub: i64,
}

impl TxnExec {
    fn changed(&self) -> bool {
        self.sub > 0
    }
    fn next_rev(&mut self) -> Rev {
        let rev = Rev {
            main: self.rev,
            sub: self.sub,
        };
        self.sub += 1;
        rev
    }
    /// The revision reads see: the txn's own writes once it has any.
    fn read_rev(&self) -> i64 {
        if self.changed() {
            self.rev
        } else {
            self.rev - 1
        }
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl Keyspace {
    /// An empty keyspace (revision 1) split into `shard_count` shards.
    #[must_use]
    pub fn new(shard_count: u16) -> Keyspace {
        let router = Router::new(shard_count);
        Keyspace {
            shards: (0..shard_count).map(|_| Shard::new()).collect(),
            router,
            sequencer: Sequencer::new(),
            leases: HashMap::new(),
            journal: Vec::new(),
        }
    }

    /// The current store revision.
    #[must_use]
    pub fn revision(&self) -> i64 {
        self.sequencer.current().0
    }

    /// The compaction point, `-1` before the first compaction.
    #[must_use]
    pub fn compact_revision(&self) -> i64 {
        self.sequencer.compacted().0
    }

    /// The router placing keys on shards.
    #[must_use]
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// One shard, for inspection.
    #[must_use]
    pub fn shard(&self, id: ShardId) -> &Shard {
        &self.shards[usize::from(id.0)]
    }

    /// Every shard, in id order.
    #[must_use]
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Known lease ids, in no particular order.
    pub fn lease_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.leases.keys().copied()
    }

    /// An empty keyspace resumed at a recovered revision (snapshot load;
    /// keys follow through [`Keyspace::restore_key`]).
    pub(crate) fn resume(
        shard_count: u16,
        revision: i64,
        compact_revision: i64,
        leases: Vec<(i64, i64)>,
    ) -> Keyspace {
        let mut ks = Keyspace::new(shard_count);
        ks.sequencer = Sequencer::resume(Revision(revision), Revision(compact_revision));
        ks.leases = leases
            .into_iter()
            .map(|(id, ttl_s)| {
                (
                    id,
                    crate::lease::LeaseEntry {
                        ttl_s,
                        keys: Default::default(),
                    },
                )
            })
            .collect();
        ks
    }

    /// Adds a key from an image; gives the key back if it is already there.
    pub(crate) fn restore_key(
        &mut self,
        key: Vec<u8>,
        index: crate::KeyIndex,
    ) -> Result<(), Vec<u8>> {
        let lease = index
            .latest()
            .filter(|v| !v.is_tombstone() && v.lease != 0)
            .map(|v| v.lease);
        let id = self.router.shard_of(&key);
        let attached = lease.map(|lease| (lease, key.clone()));
        self.shards[usize::from(id.0)].restore_key(key, index)?;
        if let Some((lease, key)) = attached {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.insert(key);
            }
        }
        Ok(())
    }

    pub(crate) fn shards_for_range<'a>(&'a self, range: &KeyRange<'_>) -> &'a [Shard] {
        self.shards_for(range)
    }

    /// Starts a write at the pending revision (see [`Keyspace::end_write`]).
    pub(crate) fn begin_write(&self) -> TxnExec {
        TxnExec {
            rev: self.sequencer.pending().0,
            sub: 0,
        }
    }

    /// Ends a write: the revision advances iff it changed something.
    pub(crate) fn end_write(&mut self, exec: &TxnExec) {
        self.sequencer.on_applied(exec.changed());
    }

    fn shards_for<'a>(&'a self, range: &KeyRange<'_>) -> &'a [Shard] {
        match self.router.shards_for(range) {
            ShardSet::One(id) => std::slice::from_ref(&self.shards[usize::from(id.0)]),
            ShardSet::All => &self.shards,
        }
    }

    fn owner_mut(&mut self, key: &[u8]) -> &mut Shard {
        let id = self.router.shard_of(key);
        &mut self.shards[usize::from(id.0)]
    }

    fn owner(&self, key: &[u8]) -> &Shard {
        &self.shards[usize::from(self.router.shard_of(key).0)]
    }

    // ---- Range ------------------------------------------------------------

    /// Range (etcd `Range`): reads at `revision` (current if `<= 0`).
    ///
    /// # Errors
    /// `FutureRev`, `Compacted`.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        let at = self.sequencer.resolve_read(req.revision)?;
        Ok(self.range_at(req, at.0, self.revision()))
    }

    /// Executes a range at a resolved revision; `header_rev` is the
    /// revision the response reports.
    fn range_at(&self, req: &RangeRequest, at: i64, header_rev: i64) -> RangeResponse {
        let order = SortOrder::try_from(req.sort_order).ok();
        let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // etcd reads everything when it must sort or filter, and one extra kv
        // for `more` otherwise.
        let fetch_limit = if req.sort_order != SortOrder::None as i32 || filtered || req.limit <= 0
        {
            0
        } else {
            usize::try_from(req.limit).unwrap_or(usize::MAX - 1) + 1
        };
        let shape = ReadShape {
            limit: fetch_limit,
            count_only: req.count_only,
            // Values are needed to sort by value; they are dropped below.
            keys_only: req.keys_only && target != SortTarget::Value,
        };
        let range = KeyRange::new(&req.key, &req.range_end);
        let parts: Vec<ShardRange> = self
            .shards_for(&range)
            .iter()
            .map(|s| s.range(&range, at, shape))
            .collect();
        let RangeAnswer { mut kvs, count } = merge_by_key(parts, fetch_limit);

        if filtered {
            kvs.retain(|kv| {
                !(req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision
                    || req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision
                    || req.max_create_revision != 0 && kv.create_revision > req.max_create_revision
                    || req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
            });
        }
        sort_kvs(&mut kvs, order, target);
        let mut more = false;
        if let Ok(limit) = usize::try_from(req.limit) {
            if limit > 0 && kvs.len() > limit {
                kvs.truncate(limit);
                more = true;
            }
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        RangeResponse {
            header: header(header_rev),
            kvs,
            more,
            count,
        }
    }

    // ---- Put ----------------------------------------------------------------

    /// Put (etcd `Put`).
    ///
    /// # Errors
    /// `LeaseNotFound` for an unknown lease, then `KeyNotFound` for
    /// `ignore_value`/`ignore_lease` on a missing key.
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, KvError> {
        if req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(KvError::LeaseNotFound);
        }
        if (req.ignore_value || req.ignore_lease) && self.owner(&req.key).latest(&req.key).is_none()
        {
            return Err(KvError::KeyNotFound);
        }
        let mut exec = TxnExec {
            rev: self.sequencer.pending().0,
            sub: 0,
        };
        let resp = self.exec_put(req, &mut exec);
        let now = self.sequencer.on_applied(exec.changed());
        debug_assert_eq!(now.0, exec.rev);
        Ok(resp)
    }

    fn exec_put(&mut self, req: &PutRequest, exec: &mut TxnExec) -> PutResponse {
        let rev = exec.next_rev();
        let shard = self.owner_mut(&req.key);
        let prev = shard.latest(&req.key).cloned();
        debug_assert!(
            prev.is_some() || !(req.ignore_value || req.ignore_lease),
            "ignore_* on a missing key passed the checks"
        );
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => Bytes::copy_from_slice(&req.value),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let v = shard.put(&req.key, rev, value, lease);
        let event = crate::events::event_of(&req.key, v);
        self.journal.push(event);
        self.reattach(&req.key, prev.as_ref().map_or(0, |p| p.lease), lease);
        PutResponse {
            header: header(rev.main),
            prev_kv: prev
                .filter(|_| req.prev_kv)
                .map(|p| key_value(&req.key, &p, true)),
        }
    }

    // ---- DeleteRange ----------------------------------------------------------

    /// DeleteRange (etcd `DeleteRange`).
    ///
    /// # Errors
    /// None today; the signature leaves room for quota and auth errors.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, KvError> {
        let mut exec = TxnExec {
            rev: self.sequencer.pending().0,
            sub: 0,
        };
        let resp = self.exec_delete(req, &mut exec);
        self.sequencer.on_applied(exec.changed());
        Ok(resp)
    }

    pub(crate) fn exec_delete(
        &mut self,
        req: &DeleteRangeRequest,
        exec: &mut TxnExec,
    ) -> DeleteRangeResponse {
        let range = KeyRange::new(&req.key, &req.range_end);
        // The live keys, merged across shards in key order: deletes take
        // sub-revisions in key order, as etcd's do.
        let parts: Vec<ShardRange> = self
            .shards_for(&range)
            .iter()
            .map(|s| s.range(&range, i64::MAX, ReadShape::default()))
            .collect();
        let doomed = merge_by_key(parts, 0).kvs;
        for kv in &doomed {
            let rev = exec.next_rev();
            let deleted = self.owner_mut(&kv.key).tombstone(&kv.key, rev);
            debug_assert!(deleted);
            self.reattach(&kv.key, kv.lease, 0);
            self.journal.push(ferrocd_proto::mvccpb::Event {
                r#type: ferrocd_proto::mvccpb::event::EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: kv.key.clone(),
                    mod_revision: rev.main,
                    ..Default::default()
                }),
                prev_kv: None,
            });
        }
        DeleteRangeResponse {
            header: header(exec.read_rev()),
            deleted: i64::try_from(doomed.len()).expect("fits"),
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        }
    }

    // ---- Txn ------------------------------------------------------------------

    /// Txn (etcd `Txn`).
    ///
    /// # Errors
    /// `KeyNotFound`, `LeaseNotFound` (puts on the executed path), then
    /// `FutureRev`, `Compacted` (ranges on the executed path).
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, KvError> {
        let before = self.revision();
        let plan = self.plan(req, before);
        if txn_writes(req) {
            self.check_puts(req, &plan)?;
            if Self::ignore_put_after_delete(req, &plan, &mut Vec::new()) {
                return Err(KvError::KeyNotFound);
            }
        }
        self.check_ranges(req, &plan)?;
        let mut exec = TxnExec {
            rev: self.sequencer.pending().0,
            sub: 0,
        };
        let mut resp = self.exec_txn(req, &plan, &mut exec);
        let now = self.sequencer.on_applied(exec.changed());
        resp.header = header(now.0);
        Ok(resp)
    }

    fn plan(&self, req: &TxnRequest, at: i64) -> TxnPlan {
        let succeeded = req.compare.iter().all(|c| self.compare(c, at));
        let branch = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let nested = branch
            .iter()
            .filter_map(|op| match &op.request {
                Some(Request::RequestTxn(t)) => Some(self.plan(t, at)),
                _ => None,
            })
            .collect();
        TxnPlan { succeeded, nested }
    }

    /// etcd's `applyCompare`: every key in the range must satisfy the
    /// compare; an empty range compares a zero kv, except that a VALUE
    /// compare on nothing is false.
    fn compare(&self, c: &Compare, at: i64) -> bool {
        let range = KeyRange::new(&c.key, &c.range_end);
        let mut any = false;
        let mut all = true;
        for shard in self.shards_for(&range) {
            shard.visit(&range, at, |key, v| {
                any = true;
                all = compare_kv(c, &key_value(key, v, true));
                all
            });
            if !all {
                return false;
            }
        }
        if !any {
            return c.target != CompareTarget::Value as i32 && compare_kv(c, &KeyValue::default());
        }
        true
    }

    /// Checks the puts of the executed path against the pre-txn state:
    /// `ignore_value`/`ignore_lease` on a missing key, then an unknown lease.
    fn check_puts(&self, req: &TxnRequest, plan: &TxnPlan) -> Result<(), KvError> {
        let mut nested = plan.nested.iter();
        for op in branch(req, plan) {
            match &op.request {
                Some(Request::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease)
                        && self.owner(&p.key).latest(&p.key).is_none()
                    {
                        return Err(KvError::KeyNotFound);
                    }
                    if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                        return Err(KvError::LeaseNotFound);
                    }
                }
                Some(Request::RequestTxn(t)) => {
                    self.check_puts(t, nested.next().expect("plan matches txn"))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A from-key delete followed by an `ignore_value` put of a key it
    /// removed passes etcd's duplicate check and its pre-txn check, and then
    /// makes etcd panic mid-txn. We find it on the executed path (walking it
    /// in order, collecting deleted ranges) and answer `key not found`
    /// before writing anything.
    fn ignore_put_after_delete<'r>(
        req: &'r TxnRequest,
        plan: &TxnPlan,
        deleted: &mut Vec<KeyRange<'r>>,
    ) -> bool {
        let mut nested = plan.nested.iter();
        branch(req, plan).iter().any(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => {
                deleted.push(KeyRange::new(&d.key, &d.range_end));
                false
            }
            Some(Request::RequestPut(p)) => {
                (p.ignore_value || p.ignore_lease) && deleted.iter().any(|d| d.contains(&p.key))
            }
            Some(Request::RequestTxn(t)) => {
                Self::ignore_put_after_delete(t, nested.next().expect("plan matches txn"), deleted)
            }
            _ => false,
        })
    }

    fn check_ranges(&self, req: &TxnRequest, plan: &TxnPlan) -> Result<(), KvError> {
        let mut nested = plan.nested.iter();
        for op in branch(req, plan) {
            match &op.request {
                // etcd's checkRequestRange compares literally: a negative
                // revision is "compacted" here although a plain Range treats
                // it as "current".
                Some(Request::RequestRange(r)) if r.revision != 0 => {
                    if r.revision > self.revision() {
                        return Err(KvError::FutureRev);
                    }
                    if r.revision < self.compact_revision() {
                        return Err(KvError::Compacted);
                    }
                }
                Some(Request::RequestTxn(t)) => {
                    self.check_ranges(t, nested.next().expect("plan matches txn"))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn exec_txn(&mut self, req: &TxnRequest, plan: &TxnPlan, exec: &mut TxnExec) -> TxnResponse {
        let mut nested = plan.nested.iter();
        let mut responses = Vec::with_capacity(branch(req, plan).len());
        for op in branch(req, plan) {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    let read = exec.read_rev();
                    let at = if r.revision > 0 { r.revision } else { read };
                    Some(Response::ResponseRange(self.range_at(r, at, read)))
                }
                Some(Request::RequestPut(p)) => Some(Response::ResponsePut(self.exec_put(p, exec))),
                Some(Request::RequestDeleteRange(d)) => {
                    Some(Response::ResponseDeleteRange(self.exec_delete(d, exec)))
                }
                Some(Request::RequestTxn(t)) => {
                    let plan = nested.next().expect("plan matches txn");
                    let mut inner = self.exec_txn(t, plan, exec);
                    inner.header = Some(ResponseHeader::default());
                    Some(Response::ResponseTxn(inner))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        TxnResponse {
            header: None,
            succeeded: plan.succeeded,
            responses,
        }
    }

    // ---- Compact ----------------------------------------------------------------

    /// Compact (etcd `Compact`): forgets versions no read at `revision` or
    /// later can see.
    ///
    /// # Errors
    /// `Compacted` at or below the compaction point, `FutureRev` above the
    /// current revision.
    pub fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, KvError> {
        let at = self.sequencer.on_compact(req.revision)?;
        for shard in &mut self.shards {
            shard.compact(at.0);
        }
        Ok(CompactionResponse {
            header: header(self.revision()),
        })
    }

    /// Whether no branch of the txn (at any depth) writes: etcd serves such
    /// a txn as a read, without going through the log.
    #[must_use]
    pub fn txn_is_read_only(req: &TxnRequest) -> bool {
        !txn_writes(req)
    }

    /// A read-only txn (see [`Keyspace::txn_is_read_only`]) evaluated
    /// without `&mut`: same answer as [`Keyspace::txn`] would give.
    ///
    /// # Errors
    /// `FutureRev`, `Compacted` (ranges on the executed path).
    ///
    /// # Panics
    /// If the txn writes (a caller bug).
    pub fn txn_read_only(&self, req: &TxnRequest) -> Result<TxnResponse, KvError> {
        assert!(!txn_writes(req), "txn_read_only on a writing txn");
        let at = self.revision();
        let plan = self.plan(req, at);
        self.check_ranges(req, &plan)?;
        let mut resp = self.read_txn(req, &plan, at);
        resp.header = header(at);
        Ok(resp)
    }

    fn read_txn(&self, req: &TxnRequest, plan: &TxnPlan, read: i64) -> TxnResponse {
        let mut nested = plan.nested.iter();
        let responses = branch(req, plan)
            .iter()
            .map(|op| ResponseOp {
                response: match &op.request {
                    Some(Request::RequestRange(r)) => {
                        let at = if r.revision > 0 { r.revision } else { read };
                        Some(Response::ResponseRange(self.range_at(r, at, read)))
                    }
                    Some(Request::RequestTxn(t)) => {
                        let plan = nested.next().expect("plan matches txn");
                        let mut inner = self.read_txn(t, plan, read);
                        inner.header = Some(ResponseHeader::default());
                        Some(Response::ResponseTxn(inner))
                    }
                    Some(Request::RequestPut(_) | Request::RequestDeleteRange(_)) => {
                        unreachable!("read-only txn")
                    }
                    None => None,
                },
            })
            .collect();
        TxnResponse {
            header: None,
            succeeded: plan.succeeded,
            responses,
        }
    }

    /// The revision a write applied now would get.
    #[must_use]
    pub fn pending_revision(&self) -> Revision {
        self.sequencer.pending()
    }
}

fn branch<'a>(req: &'a TxnRequest, plan: &TxnPlan) -> &'a [ferrocd_proto::etcdserverpb::RequestOp] {
    if plan.succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// etcd's `isTxnReadonly`, negated: any put or delete in any branch.
fn txn_writes(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_) | Request::RequestDeleteRange(_)) => true,
            Some(Request::RequestTxn(t)) => txn_writes(t),
            _ => false,
        })
}

/// etcd's `compareKV`. A target union that does not match the target
/// compares against zero (or the empty value); an unknown result is true.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let int = |want: Option<i64>, have: i64| have.cmp(&want.unwrap_or(0));
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        Ok(CompareTarget::Create) => int(
            match c.target_union {
                Some(TargetUnion::CreateRevision(r)) => Some(r),
                _ => None,
            },
            kv.create_revision,
        ),
        Ok(CompareTarget::Mod) => int(
            match c.target_union {
                Some(TargetUnion::ModRevision(r)) => Some(r),
                _ => None,
            },
            kv.mod_revision,
        ),
        Ok(CompareTarget::Version) => int(
            match c.target_union {
                Some(TargetUnion::Version(r)) => Some(r),
                _ => None,
            },
            kv.version,
        ),
        Ok(CompareTarget::Lease) => int(
            match c.target_union {
                Some(TargetUnion::Lease(r)) => Some(r),
                _ => None,
            },
            kv.lease,
        ),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}

/// etcd's sort rules: a non-KEY target with no order sorts ascending; KEY
/// ascending is the natural order. The sort is stable over key order, so
/// ties stay in ascending key order in both directions (etcd's Go sort is
/// unstable and leaves ties in an unspecified order).
fn sort_kvs(kvs: &mut [KeyValue], order: Option<SortOrder>, target: SortTarget) {
    let order = match (order, target) {
        (Some(SortOrder::None), t) if t != SortTarget::Key => SortOrder::Ascend,
        (Some(SortOrder::Ascend), SortTarget::Key) => SortOrder::None,
        (Some(o), _) => o,
        // An unknown order reads everything but sorts nothing, as in etcd.
        (None, _) => SortOrder::None,
    };
    let by = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by),
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
    }
}
