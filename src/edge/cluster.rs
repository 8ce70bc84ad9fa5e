//! `etcdserverpb.Cluster`: MemberList (membership changes come with
//! multi-member clusters and answer `Unimplemented` until then).

use super::{fill_header, SharedRef};
use ferrocd_proto::etcdserverpb::cluster_server::Cluster;
use ferrocd_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use ferrocd_proto::tonic::{self, Request, Response, Status};

/// The Cluster service.
#[derive(Clone)]
pub struct ClusterService {
    shared: SharedRef,
}

impl ClusterService {
    /// Over the shared state.
    #[must_use]
    pub fn new(shared: SharedRef) -> ClusterService {
        ClusterService { shared }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(Status::unimplemented(
            "ferrocd: MemberAdd is not implemented yet",
        ))
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(Status::unimplemented(
            "ferrocd: MemberRemove is not implemented yet",
        ))
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "ferrocd: MemberUpdate is not implemented yet",
        ))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let id = &self.shared.identity;
        // etcd's cluster server header has no revision.
        let mut header = None;
        fill_header(&self.shared, &mut header);
        Ok(Response::new(MemberListResponse {
            header,
            members: vec![Member {
                id: id.member_id,
                name: id.name.clone(),
                peer_ur_ls: id.peer_urls.clone(),
                client_ur_ls: id.client_urls.clone(),
                is_learner: false,
            }],
        }))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(Status::unimplemented(
            "ferrocd: MemberPromote is not implemented yet",
        ))
    }
}
