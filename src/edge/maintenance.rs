//! `etcdserverpb.Maintenance`: Status, Alarm (list) and Defragment. The
//! other RPCs answer `Unimplemented` until they exist.

use super::{current_header, propose_status, SharedRef};
use crate::shared::ProposeError;
use ferrocd_proto::etcdserverpb::maintenance_server::Maintenance;
use ferrocd_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use ferrocd_proto::tonic::{self, codegen::BoxStream, Request, Response, Status};
use std::sync::atomic::Ordering;

/// The etcd version whose API ferrocd implements, as `Status.version`
/// reports it. Clients gate features on it (Kubernetes turns on watch
/// progress requests for 3.5.13 and later); ferrocd's own version is in
/// `--version` and the logs.
pub const ETCD_API_VERSION: &str = "3.5.17";

/// The Maintenance service.
#[derive(Clone)]
pub struct MaintenanceService {
    shared: SharedRef,
}

impl MaintenanceService {
    /// Over the shared state.
    #[must_use]
    pub fn new(shared: SharedRef) -> MaintenanceService {
        MaintenanceService { shared }
    }
}

fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!("ferrocd: Maintenance.{rpc} is not implemented yet"))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        // No alarm can be raised yet (no space quota enforcement, no
        // corruption checker), so the truthful list is empty.
        if request.into_inner().action() != AlarmAction::Get {
            return Err(unimplemented("Alarm (activate/deactivate)"));
        }
        Ok(Response::new(AlarmResponse {
            header: current_header(&self.shared),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let r = &self.shared.raft;
        let db = i64::try_from(r.db_bytes.load(Ordering::Acquire)).unwrap_or(i64::MAX);
        Ok(Response::new(StatusResponse {
            header: current_header(&self.shared),
            version: ETCD_API_VERSION.to_string(),
            db_size: db,
            leader: r.leader.load(Ordering::Acquire),
            raft_index: r.commit_index.load(Ordering::Acquire),
            raft_term: r.term.load(Ordering::Acquire),
            raft_applied_index: r.applied_index.load(Ordering::Acquire),
            errors: Vec::new(),
            db_size_in_use: db,
            is_learner: false,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let saved = self.shared.request_defrag().map_err(propose_status)?;
        saved
            .await
            .map_err(|_| propose_status(ProposeError::Stopped))?;
        // etcd answers a defragment with no header at all.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(unimplemented("Hash"))
    }

    async fn hash_kv(&self, _: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        Err(unimplemented("HashKV"))
    }

    type SnapshotStream = BoxStream<SnapshotResponse>;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Snapshot"))
    }

    async fn move_leader(
        &self,
        _: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(unimplemented("MoveLeader"))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}
