//! `v3electionpb.Election`: Campaign (wait to become the oldest key under
//! `<name>/`), Proclaim (update the leader's value), Leader, Observe (a
//! stream of leader values), Resign. Errors are etcd's plain messages with
//! code Unknown (`election: not leader`, `election: no leader`, and the KV
//! errors its in-process client passes on).

use super::concurrency::{
    as_unknown, by_create, created_at, delete_op, put_op, range, session_lease, try_acquire, txn,
    wait_deletes, HubWatch, Release,
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
        .await
        .map_err(as_unknown)?;
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

/// The `leader` field, checked as etcd's server does.
fn leader_key(leader: Option<LeaderKey>) -> Result<LeaderKey, Status> {
    let l = leader.ok_or_else(|| Status::unknown("\"leader\" field must be provided"))?;
    if l.key.is_empty() {
        return Err(Status::unknown("etcdserver: key is not provided"));
    }
    Ok(l)
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let req = request.into_inner();
        let prefix = prefix_of(&req.name);
        let lease = session_lease(&self.shared, req.lease)
            .await
            .map_err(as_unknown)?;
        let me = try_acquire(&self.shared, &prefix, lease, &req.value)
            .await
            .map_err(as_unknown)?;
        // A campaign that goes away while waiting resigns (deletes its key).
        let mut release = Release {
            shared: self.shared.clone(),
            key: Some(me.key.clone()),
        };
        let leader = LeaderKey {
            name: req.name,
            key: me.key.clone(),
            rev: me.rev,
            lease,
        };
        if me.existing_value.as_ref().is_some_and(|v| *v != req.value) {
            self.proclaim_as(&leader, &req.value).await?;
        }
        if !me.owns {
            wait_deletes(&self.shared, &prefix, me.rev - 1)
                .await
                .map_err(as_unknown)?;
        }
        release.key = None;
        // etcd answers with the header of the campaign's first txn.
        let mut header = me.header;
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
        let mut leader = leader_key(req.leader)?;
        leader.lease = session_lease(&self.shared, leader.lease)
            .await
            .map_err(as_unknown)?;
        let mut header = self.proclaim_as(&leader, &req.value).await?;
        fill_header(&self.shared, &mut header);
        Ok(Response::new(ProclaimResponse { header }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let req = request.into_inner();
        let mut r =
            range(&self.shared, &by_create(&prefix_of(&req.name), false, 0)).map_err(as_unknown)?;
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
            if let Err(status) = observe(&shared, &prefix, &out).await {
                let _ = out.send(Err(as_unknown(status))).await;
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
        let leader = leader_key(req.leader)?;
        let resp = txn(
            &self.shared,
            TxnRequest {
                compare: vec![created_at(&leader.key, leader.rev)],
                success: vec![delete_op(&leader.key)],
                failure: Vec::new(),
            },
        )
        .await
        .map_err(as_unknown)?;
        let mut header = resp.header;
        fill_header(&self.shared, &mut header);
        Ok(Response::new(ResignResponse { header }))
    }
}

/// etcd's `observe`: the current leader's kv (header: the read's
/// revision), then every new value of it (header: its revision), then the
/// next leader once it is deleted; ends when the client leaves.
async fn observe(
    shared: &SharedRef,
    prefix: &[u8],
    out: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), Status> {
    let send = |header_rev: i64, kv| {
        let mut header = Some(ResponseHeader {
            revision: header_rev,
            ..Default::default()
        });
        fill_header(shared, &mut header);
        out.send(Ok(LeaderResponse {
            header,
            kv: Some(kv),
        }))
    };
    loop {
        let r = range(shared, &by_create(prefix, false, 0))?;
        let rev = r.header.as_ref().map_or(0, |h| h.revision);
        let kv = match r.kvs.into_iter().next() {
            Some(kv) => {
                if send(rev, kv.clone()).await.is_err() {
                    return Ok(());
                }
                kv
            }
            None => {
                // No leader yet: the first put under the prefix is one.
                let mut w = HubWatch::open(shared, prefix, prefix_end(prefix), rev + 1)?;
                let kv = 'wait: loop {
                    for e in w.next_events().await? {
                        if e.r#type == EventType::Put as i32 {
                            if let Some(kv) = e.kv {
                                break 'wait kv;
                            }
                        }
                    }
                };
                if send(kv.mod_revision, kv.clone()).await.is_err() {
                    return Ok(());
                }
                kv
            }
        };
        // Every later value of this leader, until its key is deleted.
        let mut w = HubWatch::open(shared, &kv.key, Vec::new(), kv.mod_revision + 1)?;
        'leader: loop {
            for e in w.next_events().await? {
                if e.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                if let Some(kv) = e.kv {
                    if send(kv.mod_revision, kv).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}
