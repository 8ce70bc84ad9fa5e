//! The gRPC edge: tonic's generated services served by hyper's HTTP/2
//! server directly on each core's glommio executor (no tokio runtime).
//!
//! The RPC layer only validates, calls, maps the error and fills the
//! header (as etcd's `api/v3rpc`). Reads go straight to the keyspace under
//! a read lock; writes become proposals for the Raft thread and answer once
//! their entry is durable and applied.

pub mod cluster;
pub mod health;
pub mod http2;
pub mod kv;
pub mod maintenance;
pub mod txn_nesting;
pub mod watch;

use crate::shared::{ProposeError, Shared};
use ferrocd_core::KvError;
use ferrocd_proto::etcdserverpb::ResponseHeader;
use ferrocd_proto::tonic::{Code, Status};
use std::sync::Arc;

/// The gRPC status etcd sends for a KV error (one table: `KvError::code`).
#[must_use]
pub fn kv_status(e: KvError) -> Status {
    Status::new(Code::from(e.code() as i32), e.message())
}

/// The gRPC status for a failed proposal.
#[must_use]
pub fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::Kv(k) => kv_status(k),
        other => Status::new(Code::Unavailable, other.to_string()),
    }
}

/// Fills the header fields the edge owns (etcd's `header.fill`): cluster
/// id, member id, raft term. The revision comes from the keyspace.
pub fn fill_header(shared: &Shared, header: &mut Option<ResponseHeader>) {
    let h = header.get_or_insert_with(ResponseHeader::default);
    h.cluster_id = shared.identity.cluster_id;
    h.member_id = shared.identity.member_id;
    h.raft_term = shared.term();
}

/// A header at the current revision.
#[must_use]
pub fn current_header(shared: &Shared) -> Option<ResponseHeader> {
    let revision = shared
        .keyspace
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .revision();
    let mut h = Some(ResponseHeader {
        revision,
        ..Default::default()
    });
    fill_header(shared, &mut h);
    h
}

/// The shared state handed to every service.
pub type SharedRef = Arc<Shared>;
