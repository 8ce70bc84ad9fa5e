//! `v3electionpb.Election`: Campaign (wait to become the oldest key under
//! `<name>/`), Proclaim (update the leader's value), Leader, Observe (a
//! stream of leader values), Resign. Errors are etcd's plain messages with
//! code Unknown (`election: not leader`, `election: no leader`).

use super::concurrency::{
    by_create, created_at, delete_op, put_op, range, try_acquire, txn, wait_deletes, HubWatch,
};
use super::{fill_header, ChannelStream, SharedRef};
use ferrocd_core::prefix_end;
use ferrocd_proto::etcdserverpb::{ResponseHeader, TxnRequest};
use ferrocd_proto::mvccpb::event::EventType;
use ferrocd_proto::tonic::{self, Request, Response, Status};
use ferrocd_proto::v3electionpb::election_server::Election;
use ferrocd_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;

/// Leader values queued towards one Observe stream.
pub const OBSERVE_RESPONSES_MAX: usize = 16;

/// The Election service.
#[derive(Clone)]
pub struct ElectionService {
    shared: SharedRef,
}

impl ElectionService {
    /// Over the shared state.
    #[must_use]
    pub fn new(shared: SharedRef) -> ElectionService {
        ElectionService { shared }
    }

    async fn proclaim_as(
        &self,
        leader: &LeaderKey,
        value: &[u8],
    ) -> Result<Option<ResponseHeader>, Status> {
        let resp = txn(
            &self.shared,
            TxnRequest {
                compare: vec![created_at(&leader.key, leader.rev)],
                success: vec![put_op(&leader.key, value, leader.lease)],
                failure: Vec::new(),
            },
        )
        .await?;
        if !resp.succeeded {
            return Err(Status::unknown("election: not leader"));
        }
        Ok(resp.header)
    }
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let req = request.into_inner();
        let prefix = prefix_of(&req.name);
        let me = try_acquire(&self.shared, &prefix, req.lease, &req.value).await?;
        let leader = LeaderKey {
            name: req.name,
            key: me.key.clone(),
            rev: me.rev,
            lease: req.lease,
        };
        let mut header = me.header;
        if me.existing_value.as_ref().is_some_and(|v| *v != req.value) {
            header = self.proclaim_as(&leader, &req.value).await?;
        }
        if !me.owns {
            header = wait_deletes(&self.shared, &prefix, me.rev - 1).await?;
        }
        fill_header(&self.shared, &mut header);
        Ok(Response::new(CampaignResponse {
            header,
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let req = request.into_inner();
        let leader = req
            .leader
            .ok_or_else(|| Status::unknown("election: not leader"))?;
        let mut header = self.proclaim_as(&leader, &req.value).await?;
        fill_header(&self.shared, &mut header);
        Ok(Response::new(ProclaimResponse { header }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let req = request.into_inner();
        let mut r = range(&self.shared, &by_create(&prefix_of(&req.name), false, 0))?;
        let kv = r
            .kvs
            .pop()
            .ok_or_else(|| Status::unknown("election: no leader"))?;
        fill_header(&self.shared, &mut r.header);
        Ok(Response::new(LeaderResponse {
            header: r.header,
            kv: Some(kv),
        }))
    }

    type ObserveStream = ChannelStream<LeaderResponse>;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let req = request.into_inner();
        let (out, rx) = mpsc::channel(OBSERVE_RESPONSES_MAX);
        let shared = self.shared.clone();
        glommio::spawn_local(async move {
            let prefix = prefix_of(&req.name);
            let r = observe(&shared, &prefix, &out).await;
            if let Err(status) = r {
                let _ = out.send(Err(status)).await;
            }
        })
        .detach();
        Ok(Response::new(ChannelStream(rx)))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let req = request.into_inner();
        let leader = req.leader.unwrap_or_default();
        let resp = txn(
            &self.shared,
            TxnRequest {
                compare: vec![created_at(&leader.key, leader.rev)],
                success: vec![delete_op(&leader.key)],
                failure: Vec::new(),
            },
        )
        .await?;
        let mut header = resp.header;
        fill_header(&self.shared, &mut header);
        Ok(Response::new(ResignResponse { header }))
    }
}

/// etcd's `observe`: the current leader's kv, then each new value of it,
/// then the next leader's once it is deleted; ends when the client leaves.
async fn observe(
    shared: &SharedRef,
    prefix: &[u8],
    out: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), Status> {
    loop {
        let r = range(shared, &by_create(prefix, false, 0))?;
        let rev = r.header.as_ref().map_or(0, |h| h.revision);
        let Some(mut kv) = r.kvs.into_iter().next() else {
            // No leader yet: wait for a put under the prefix.
            let mut w = HubWatch::open(shared, prefix, prefix_end(prefix), rev + 1)?;
            'wait: loop {
                for e in w.next_events().await? {
                    if e.r#type == EventType::Put as i32 {
                        break 'wait;
                    }
                }
            }
            continue;
        };
        let mut w = HubWatch::open(shared, &kv.key, Vec::new(), kv.mod_revision + 1)?;
        loop {
            let mut header = Some(ResponseHeader {
                revision: kv.mod_revision,
                ..Default::default()
            });
            fill_header(shared, &mut header);
            let resp = LeaderResponse {
                header,
                kv: Some(kv.clone()),
            };
            if out.send(Ok(resp)).await.is_err() {
                return Ok(());
            }
            let mut next = None;
            let mut deleted = false;
            while next.is_none() && !deleted {
                for e in w.next_events().await? {
                    if e.r#type == EventType::Delete as i32 {
                        deleted = true;
                        break;
                    }
                    next = e.kv;
                }
            }
            match next {
                Some(k) if !deleted => kv = k,
                _ => break,
            }
        }
    }
}
