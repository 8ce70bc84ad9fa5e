//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.

use super::{fill_header, kv_status, mismatch, propose, SharedRef};
use crate::command::{Applied, Command};
use ferrocd_core::validate;
use ferrocd_proto::etcdserverpb::kv_server::Kv;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use ferrocd_proto::tonic::{self, Request, Response, Status};
use ferrocd_shards::Keyspace;

/// The KV service of one core (cheap to clone: shares everything).
#[derive(Clone)]
pub struct KvService {
    shared: SharedRef,
}

impl KvService {
    /// Over the shared state.
    #[must_use]
    pub fn new(shared: SharedRef) -> KvService {
        KvService { shared }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        validate::check_range(&req).map_err(kv_status)?;
        // Serializable and linearizable reads read the same state: a write
        // is acknowledged only after it is applied, and a one-member group
        // is always its own leader, so the applied state already holds
        // every write acknowledged before this read began.
        let mut resp = self.shared.read_keyspace().range(&req).map_err(kv_status)?;
        fill_header(&self.shared, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        validate::check_put(&req).map_err(kv_status)?;
        match propose(&self.shared, Command::Put(req)).await? {
            Applied::Put(mut resp) => {
                fill_header(&self.shared, &mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(mismatch()),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        validate::check_delete_range(&req).map_err(kv_status)?;
        match propose(&self.shared, Command::DeleteRange(req)).await? {
            Applied::DeleteRange(mut resp) => {
                fill_header(&self.shared, &mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(mismatch()),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        validate::check_txn(&req, self.shared.max_txn_ops).map_err(kv_status)?;
        if Keyspace::txn_is_read_only(&req) {
            // As etcd: a txn that cannot write is served as a read (see
            // `range` for why that is linearizable here).
            let mut resp = self
                .shared
                .read_keyspace()
                .txn_read_only(&req)
                .map_err(kv_status)?;
            fill_header(&self.shared, &mut resp.header);
            return Ok(Response::new(resp));
        }
        match propose(&self.shared, Command::Txn(req)).await? {
            Applied::Txn(mut resp) => {
                fill_header(&self.shared, &mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(mismatch()),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = request.into_inner();
        match propose(&self.shared, Command::Compact(req)).await? {
            Applied::Compact(mut resp) => {
                fill_header(&self.shared, &mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(mismatch()),
        }
    }
}
