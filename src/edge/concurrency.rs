//! The building blocks etcd's Lock and Election services take from its
//! client `concurrency` package, served inside the server: txns through
//! the log, reads of the local keyspace, and waiting for events through
//! the watch hub.
//!
//! Ownership is by create revision: every contender puts
//! `<name>/<lease id in hex>` (attached to its lease) if absent; the key
//! with the lowest create revision under `<name>/` owns the lock (or is the
//! leader); the others wait for the deletion of the key created just
//! before theirs, then check again.

use super::{kv_status, propose, SharedRef};
use crate::command::{Applied, Command};
use crate::watch_hub::{Registered, StreamId, StreamMsg, WatchRange, WatchSpec};
use ferrocd_core::prefix_end;
use ferrocd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::response_op::Response as OpResponse;
use ferrocd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse,
};
use ferrocd_proto::mvccpb::{event::EventType, Event, KeyValue};
use ferrocd_proto::tonic::Status;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// etcd's Lock and Election call the KV API through an in-process client,
/// so every error they pass on reaches the caller as code Unknown with the
/// same message.
pub fn as_unknown(s: Status) -> Status {
    Status::unknown(s.message().to_string())
}

/// TTL of the session lease etcd's Lock/Election grant when the request
/// names lease 0 (`concurrency.NewSession`'s default).
pub const SESSION_TTL_S: i64 = 60;

/// The lease a Lock/Campaign/Proclaim runs under: the given one, or a
/// fresh session lease for 0 (etcd's `NewSession`; orphaned, so it simply
/// expires after [`SESSION_TTL_S`]).
pub async fn session_lease(shared: &SharedRef, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let grant = ferrocd_proto::etcdserverpb::LeaseGrantRequest {
        ttl: SESSION_TTL_S,
        id: super::lease::new_lease_id(shared),
    };
    match propose(shared, Command::LeaseGrant(grant)).await? {
        Applied::LeaseGrant(g) => Ok(g.id),
        _ => Err(Status::internal(
            "applied answer does not match the command",
        )),
    }
}

/// Deletes a contender's key if the waiting request goes away (etcd's
/// Lock releases the key and Campaign resigns when the wait fails).
pub struct Release {
    /// The shared state.
    pub shared: SharedRef,
    /// The key to delete; `None` once the request succeeded.
    pub key: Option<Vec<u8>>,
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let shared = self.shared.clone();
            glommio::spawn_local(async move {
                let _ = propose(
                    &shared,
                    Command::DeleteRange(DeleteRangeRequest {
                        key,
                        ..Default::default()
                    }),
                )
                .await;
            })
            .detach();
        }
    }
}

/// Runs a txn through the log.
pub async fn txn(shared: &SharedRef, req: TxnRequest) -> Result<TxnResponse, Status> {
    match propose(shared, Command::Txn(req)).await? {
        Applied::Txn(resp) => Ok(resp),
        _ => Err(Status::internal(
            "applied answer does not match the command",
        )),
    }
}

/// Reads the local keyspace.
pub fn range(shared: &SharedRef, req: &RangeRequest) -> Result<RangeResponse, Status> {
    shared.read_keyspace().range(req).map_err(kv_status)
}

/// `create_revision(key) == rev`.
pub fn created_at(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

/// A put op.
pub fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

/// A delete op for one key.
pub fn delete_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// The oldest (first created) key under `prefix`, limited to create
/// revisions at or below `max_create_rev` (0: no limit) and sorted the
/// other way when `newest`.
pub fn by_create(prefix: &[u8], newest: bool, max_create_rev: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: if newest {
            SortOrder::Descend
        } else {
            SortOrder::Ascend
        } as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision: max_create_rev,
        ..Default::default()
    }
}

fn range_op(req: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(req)),
    }
}

/// The kvs of the `i`-th response of a txn, if it was a range.
pub fn txn_kvs(resp: &TxnResponse, i: usize) -> &[KeyValue] {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(OpResponse::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

/// A contender's key and its create revision, after `tryAcquire`.
pub struct Contender {
    /// `<prefix><lease hex>`.
    pub key: Vec<u8>,
    /// Its create revision.
    pub rev: i64,
    /// Whether it already owns (no older key under the prefix).
    pub owns: bool,
    /// The stored value when the key existed already.
    pub existing_value: Option<Vec<u8>>,
    /// Header of the txn.
    pub header: Option<ResponseHeader>,
}

/// etcd's `tryAcquire`: creates `<prefix><lease hex>` with `value` unless
/// it exists, and finds the current owner.
pub async fn try_acquire(
    shared: &SharedRef,
    prefix: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<Contender, Status> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    let owner = by_create(prefix, false, 0);
    let resp = txn(
        shared,
        TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(&key, value, lease), range_op(owner.clone())],
            failure: vec![
                range_op(RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                }),
                range_op(owner),
            ],
        },
    )
    .await?;
    let (rev, existing_value) = if resp.succeeded {
        (resp.header.as_ref().map_or(0, |h| h.revision), None)
    } else {
        let kv = txn_kvs(&resp, 0)
            .first()
            .ok_or_else(|| Status::unknown("session expired"))?;
        (kv.create_revision, Some(kv.value.clone()))
    };
    let owns = txn_kvs(&resp, 1)
        .first()
        .is_none_or(|o| o.create_revision == rev);
    Ok(Contender {
        key,
        rev,
        owns,
        existing_value,
        header: resp.header,
    })
}

/// etcd's `waitDeletes`: waits until no key under `prefix` has a create
/// revision at or below `max_create_rev`; returns the last read's header.
pub async fn wait_deletes(
    shared: &SharedRef,
    prefix: &[u8],
    max_create_rev: i64,
) -> Result<Option<ResponseHeader>, Status> {
    loop {
        let r = range(shared, &by_create(prefix, true, max_create_rev))?;
        let Some(kv) = r.kvs.first() else {
            return Ok(r.header);
        };
        let rev = r.header.as_ref().map_or(0, |h| h.revision);
        let mut w = HubWatch::open(shared, &kv.key, Vec::new(), rev + 1)?;
        'wait: loop {
            for e in w.next_events().await? {
                if e.r#type == EventType::Delete as i32 {
                    break 'wait;
                }
            }
        }
    }
}

/// A watch on the hub, used from inside the server.
pub struct HubWatch {
    shared: SharedRef,
    sid: StreamId,
    rx: mpsc::Receiver<StreamMsg>,
    victims: Arc<AtomicBool>,
    /// History events found at registration, handed out first.
    pending: Vec<Event>,
}

impl HubWatch {
    /// Watches `[key, range_end)` from revision `from`.
    ///
    /// # Errors
    /// `from` below the compaction point.
    pub fn open(
        shared: &SharedRef,
        key: &[u8],
        range_end: Vec<u8>,
        from: i64,
    ) -> Result<HubWatch, Status> {
        let (sid, rx, victims) = shared.watch.add_stream();
        let mut w = HubWatch {
            shared: shared.clone(),
            sid,
            rx,
            victims,
            pending: Vec::new(),
        };
        let spec = WatchSpec {
            range: WatchRange {
                key: key.to_vec(),
                range_end,
            },
            no_put: false,
            no_delete: false,
        };
        match shared.watch.register(sid, 0, spec, from, &shared.keyspace) {
            Registered::Synced { gap, .. } => w.pending = gap,
            Registered::Compacted(_) => {
                return Err(kv_status(ferrocd_core::KvError::Compacted));
            }
        }
        Ok(w)
    }

    /// The next events, in order (waits for them).
    ///
    /// # Errors
    /// When the watch fell behind the compaction point, or the hub went away.
    pub async fn next_events(&mut self) -> Result<Vec<Event>, Status> {
        loop {
            if !self.pending.is_empty() {
                return Ok(std::mem::take(&mut self.pending));
            }
            if self.victims.swap(false, Ordering::AcqRel) {
                // List the victim first, then take what is queued (all of
                // it predates the fall), then replay: order is kept.
                let victims = self.shared.watch.victims(self.sid);
                for _ in 0..self.rx.len() {
                    if let Ok(StreamMsg::Events { events, .. }) = self.rx.try_recv() {
                        self.pending.extend(events);
                    }
                }
                for v in victims {
                    match self
                        .shared
                        .watch
                        .resync(self.sid, 0, v.next_rev, &self.shared.keyspace)
                    {
                        Some(Registered::Synced { gap, .. }) => self.pending.extend(gap),
                        Some(Registered::Compacted(_)) | None => {
                            return Err(kv_status(ferrocd_core::KvError::Compacted));
                        }
                    }
                }
                continue;
            }
            match self.rx.recv().await {
                Some(StreamMsg::Events { events, .. }) => return Ok(events),
                Some(StreamMsg::Progress { .. }) => {}
                None => return Err(Status::unavailable("etcdserver: server stopped")),
            }
        }
    }
}

impl Drop for HubWatch {
    fn drop(&mut self) {
        self.shared.watch.remove_stream(self.sid);
    }
}
