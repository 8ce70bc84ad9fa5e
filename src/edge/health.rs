//! `grpc.health.v1.Health`: SERVING while the node has a leader.

use super::SharedRef;
use ferrocd_proto::grpc::health::v1::health_check_response::ServingStatus;
use ferrocd_proto::grpc::health::v1::health_server::Health;
use ferrocd_proto::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use ferrocd_proto::tonic::{self, codegen::BoxStream, Request, Response, Status};
use std::sync::atomic::Ordering;

/// The health service.
#[derive(Clone)]
pub struct HealthService {
    shared: SharedRef,
}

impl HealthService {
    /// Over the shared state.
    #[must_use]
    pub fn new(shared: SharedRef) -> HealthService {
        HealthService { shared }
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        // "" is the server as a whole; etcd registers no named services.
        if !service.is_empty() {
            return Err(Status::not_found("unknown service"));
        }
        let serving = self.shared.raft.leader.load(Ordering::Acquire) != 0
            && !self.shared.stopping.load(Ordering::Acquire);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = BoxStream<HealthCheckResponse>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented(
            "ferrocd: Health.Watch is not implemented yet",
        ))
    }
}
