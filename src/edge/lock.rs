//! `v3lockpb.Lock`: Lock waits until the caller's key is the oldest under
//! `<name>/`; Unlock deletes the key (see `concurrency`).

use super::concurrency::{as_unknown, range, session_lease, try_acquire, wait_deletes, Release};
use super::{fill_header, propose, SharedRef};
use crate::command::{Applied, Command};
use ferrocd_proto::etcdserverpb::{DeleteRangeRequest, RangeRequest};

use ferrocd_proto::tonic::{self, Request, Response, Status};
use ferrocd_proto::v3lockpb::lock_server::Lock;
use ferrocd_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

/// The Lock service.
#[derive(Clone)]
pub struct LockService {
    shared: SharedRef,
}

impl LockService {
    /// Over the shared state.
    #[must_use]
    pub fn new(shared: SharedRef) -> LockService {
        LockService { shared }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let req = request.into_inner();
        let mut prefix = req.name;
        prefix.push(b'/');
        let lease = session_lease(&self.shared, req.lease)
            .await
            .map_err(as_unknown)?;
        let me = try_acquire(&self.shared, &prefix, lease, b"")
            .await
            .map_err(as_unknown)?;
        let mut release = Release {
            shared: self.shared.clone(),
            key: Some(me.key.clone()),
        };
        let mut header = me.header;
        if !me.owns {
            header = wait_deletes(&self.shared, &prefix, me.rev - 1)
                .await
                .map_err(as_unknown)?;
            // The session (lease) may have expired meanwhile.
            let still = range(
                &self.shared,
                &RangeRequest {
                    key: me.key.clone(),
                    ..Default::default()
                },
            )?;
            if still.kvs.is_empty() {
                release.key = None;
                return Err(Status::unknown("mutex: session is expired"));
            }
        }
        release.key = None;
        fill_header(&self.shared, &mut header);
        Ok(Response::new(LockResponse {
            header,
            key: me.key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let req = request.into_inner();
        if req.key.is_empty() {
            return Err(Status::unknown("etcdserver: key is not provided"));
        }
        match propose(
            &self.shared,
            Command::DeleteRange(DeleteRangeRequest {
                key: req.key,
                ..Default::default()
            }),
        )
        .await
        .map_err(as_unknown)?
        {
            Applied::DeleteRange(mut resp) => {
                fill_header(&self.shared, &mut resp.header);
                Ok(Response::new(UnlockResponse {
                    header: resp.header,
                }))
            }
            _ => Err(Status::internal(
                "applied answer does not match the command",
            )),
        }
    }
}
