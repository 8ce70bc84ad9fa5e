//! `etcdserverpb.Lease`: grant and revoke go through the log; keep-alive,
//! time-to-live and the lease list are answered from the local state (a
//! one-member group is always the leader, which is who renews in etcd).

use super::{current_header, fill_header, mismatch, propose, ChannelStream, SharedRef};
use crate::command::{Applied, Command};
use ferrocd_proto::etcdserverpb::lease_server::Lease;
use ferrocd_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use ferrocd_proto::tonic::{self, Request, Response, Status, Streaming};
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::mpsc;

/// Keep-alive answers queued towards one client stream.
pub const KEEPALIVE_RESPONSES_MAX: usize = 16;

/// The Lease service.
#[derive(Clone)]
pub struct LeaseService {
    shared: SharedRef,
}

impl LeaseService {
    /// Over the shared state.
    #[must_use]
    pub fn new(shared: SharedRef) -> LeaseService {
        LeaseService { shared }
    }
}

/// A fresh lease id the way etcd's id generator makes them (member bits,
/// milliseconds, a counter; positive), not in use.
pub fn new_lease_id(shared: &SharedRef) -> i64 {
    let member16 = shared.identity.member_id & 0xffff;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let base = (member16 << 48) | ((ms & 0xff_ffff_ffff) << 8);
    let ks = shared.read_keyspace();
    loop {
        let n = shared.lease_id_seq.fetch_add(1, Ordering::Relaxed);
        let id = (base.wrapping_add(n) & (i64::MAX as u64)) as i64;
        if id != 0 && ks.lease(id).is_none() {
            return id;
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut req = request.into_inner();
        if req.id == 0 {
            req.id = new_lease_id(&self.shared);
        }
        // etcd raises a short TTL to the minimum its election timeout allows.
        req.ttl = req.ttl.max(self.shared.lease_ttl_min_s);
        match propose(&self.shared, Command::LeaseGrant(req)).await? {
            Applied::LeaseGrant(mut resp) => {
                fill_header(&self.shared, &mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(mismatch()),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let req = request.into_inner();
        match propose(&self.shared, Command::LeaseRevoke(req)).await? {
            Applied::LeaseRevoke(mut resp) => {
                fill_header(&self.shared, &mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(mismatch()),
        }
    }

    type LeaseKeepAliveStream = ChannelStream<LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (out, rx) = mpsc::channel(KEEPALIVE_RESPONSES_MAX);
        let shared = self.shared.clone();
        glommio::spawn_local(async move {
            // Ends when the client closes its side or goes away.
            while let Ok(Some(req)) = requests.message().await {
                let header = current_header(&shared);
                let granted = shared.read_keyspace().lease(req.id).map(|l| l.ttl_s);
                // Unknown or expired: TTL 0, not an error (as etcd).
                let ttl = match granted {
                    Some(ttl) if shared.lessor.renew(req.id, Instant::now()) => ttl,
                    _ => 0,
                };
                let resp = LeaseKeepAliveResponse {
                    header,
                    id: req.id,
                    ttl,
                };
                if out.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        })
        .detach();
        Ok(Response::new(ChannelStream(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let header = current_header(&self.shared);
        let ks = self.shared.read_keyspace();
        let Some(lease) = ks.lease(req.id) else {
            // Unknown: TTL -1, no error (as etcd).
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        let remaining = self
            .shared
            .lessor
            .remaining(req.id, Instant::now())
            .map_or(lease.ttl_s, |d| {
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
            });
        Ok(Response::new(LeaseTimeToLiveResponse {
            header,
            id: req.id,
            ttl: remaining,
            granted_ttl: lease.ttl_s,
            keys: if req.keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        }))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let header = current_header(&self.shared);
        let mut leases: Vec<LeaseStatus> = self
            .shared
            .read_keyspace()
            .lease_ids()
            .map(|id| LeaseStatus { id })
            .collect();
        // etcd lists leases by expiry, earliest first.
        let lessor = &self.shared.lessor;
        leases.sort_by_key(|l| {
            (
                lessor.expiry_of(l.id).is_none(),
                lessor.expiry_of(l.id),
                l.id,
            )
        });
        Ok(Response::new(LeaseLeasesResponse { header, leases }))
    }
}
