//! The gRPC edge: tonic's generated services served by hyper's HTTP/2
//! server directly on each core's glommio executor (no tokio runtime).
//!
//! The RPC layer only validates, calls, maps the error and fills the
//! header (as etcd's `api/v3rpc`). Reads go straight to the keyspace under
//! a read lock; writes become proposals for the Raft thread and answer once
//! their entry is durable and applied.

pub mod authority_fix;
pub mod cluster;
pub mod concurrency;
pub mod election;
pub mod health;
pub mod http2;
pub mod kv;
pub mod lease;
pub mod lock;
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

/// An applied answer of another kind than the command (a bug).
#[must_use]
pub fn mismatch() -> Status {
    Status::internal("applied answer does not match the command")
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
    let revision = shared.read_keyspace().revision();
    let mut h = Some(ResponseHeader {
        revision,
        ..Default::default()
    });
    fill_header(shared, &mut h);
    h
}

/// The shared state handed to every service.
pub type SharedRef = Arc<Shared>;

/// Sends a write through the log and waits until it is durable and
/// applied.
///
/// # Errors
/// `request is too large`, a full proposal queue, shutdown, or the
/// command's own error.
pub async fn propose(
    shared: &Shared,
    command: crate::command::Command,
) -> Result<crate::command::Applied, Status> {
    if command.raft_request_bytes(shared.identity.member_id) > shared.max_request_bytes {
        return Err(kv_status(KvError::RequestTooLarge));
    }
    let data = command.encode();
    let (reply, rx) = tokio::sync::oneshot::channel();
    shared
        .submit(crate::shared::Proposal {
            command,
            data,
            reply,
        })
        .map_err(propose_status)?;
    match rx.await {
        Ok(Ok(applied)) => Ok(applied),
        Ok(Err(e)) => Err(propose_status(e)),
        Err(_) => Err(propose_status(ProposeError::Stopped)),
    }
}

/// The response half of a streaming RPC, fed by a bounded channel.
pub struct ChannelStream<T>(pub tokio::sync::mpsc::Receiver<Result<T, Status>>);

impl<T> futures_lite::Stream for ChannelStream<T> {
    type Item = Result<T, Status>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
