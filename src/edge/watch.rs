//! `etcdserverpb.Watch`: one task per bidi stream, on the core that
//! accepted the connection.
//!
//! The task owns the stream's watch ids and options, reads requests
//! (create, cancel, progress) in order, and turns the hub's messages into
//! responses. Every create is answered by exactly one `created` response,
//! in request order, before any event of that watch. A historical start is
//! replayed from MVCC in two steps (most of it without the hub lock, the
//! remainder under it, see `watch_hub`). The response channel is bounded:
//! a client that reads slowly makes the task wait, which fills the hub
//! channel, which turns its watchers into victims that catch up from
//! history later; apply never waits.

use super::{fill_header, SharedRef};
use crate::watch_hub::{Registered, StreamId, StreamMsg, WatchRange, WatchSpec};
use ferrocd_proto::etcdserverpb::watch_create_request::FilterType;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::watch_server::Watch;
use ferrocd_proto::etcdserverpb::{
    RangeRequest, ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse,
};
use ferrocd_proto::mvccpb::{event::EventType, Event};
use ferrocd_proto::tonic::{self, Request, Response, Status, Streaming};
use futures_lite::future::or;
use prost::Message;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::mpsc;

/// Responses queued towards one client stream.
pub const WATCH_RESPONSES_MAX: usize = 16;
/// Most distinct revisions per history response (etcd's `watchBatchMaxRevs`).
pub const HISTORY_REVISIONS_PER_RESPONSE_MAX: usize = 1000;

/// The error a create with a watch id already in use gets.
const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// The error a create whose range end is not after its key gets.
const EMPTY_WATCH_RANGE: &str = "mvcc: watcher range is empty";

/// The Watch service.
#[derive(Clone)]
pub struct WatchService {
    shared: SharedRef,
}

impl WatchService {
    /// Over the shared state.
    #[must_use]
    pub fn new(shared: SharedRef) -> WatchService {
        WatchService { shared }
    }
}

/// The response side of a watch stream.
pub struct ResponseStream(mpsc::Receiver<Result<WatchResponse, Status>>);

impl futures_lite::Stream for ResponseStream {
    type Item = Result<WatchResponse, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let requests = request.into_inner();
        let (out, rx) = mpsc::channel(WATCH_RESPONSES_MAX);
        let shared = self.shared.clone();
        glommio::spawn_local(async move {
            let (sid, msgs, victims) = shared.watch.add_stream();
            let mut task = StreamTask {
                shared: shared.clone(),
                sid,
                out,
                watches: HashMap::new(),
                next_auto_id: 0,
                progress_pending: false,
            };
            task.run(requests, msgs, victims).await;
            shared.watch.remove_stream(sid);
        })
        .detach();
        Ok(Response::new(ResponseStream(rx)))
    }
}

struct WatchOpts {
    /// Canceled by the server (compaction): gets nothing more, but keeps
    /// its id until the client cancels it, as etcd does.
    dead: bool,
    spec: WatchSpec,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// Sent something since the last progress tick.
    sent_since_tick: bool,
}

struct StreamTask {
    shared: SharedRef,
    sid: StreamId,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    watches: HashMap<i64, WatchOpts>,
    next_auto_id: i64,
    progress_pending: bool,
}

/// The client went away: stop the task.
struct Gone;

enum Input {
    Request(Result<Option<WatchRequest>, Status>),
    Msg(Option<StreamMsg>),
    Tick,
}

impl StreamTask {
    async fn run(
        &mut self,
        mut requests: Streaming<WatchRequest>,
        mut msgs: mpsc::Receiver<StreamMsg>,
        victims: Arc<AtomicBool>,
    ) {
        let mut requests_open = true;
        // etcd's progress ticker (`--experimental-watch-progress-notify-interval`).
        let interval = self.shared.watch_progress_notify_interval;
        let mut next_tick = Instant::now() + interval;
        loop {
            let notify = !interval.is_zero() && self.watches.values().any(|w| w.progress_notify);
            let tick = async {
                if notify {
                    glommio::timer::sleep(next_tick.saturating_duration_since(Instant::now()))
                        .await;
                    Input::Tick
                } else {
                    std::future::pending().await
                }
            };
            let msg = async { Input::Msg(msgs.recv().await) };
            let input = if requests_open {
                let req = async { Input::Request(requests.message().await) };
                or(req, or(msg, tick)).await
            } else {
                or(msg, tick).await
            };
            let step = match input {
                Input::Request(Ok(Some(r))) => {
                    // What was queued before this request goes out first
                    // (a progress answer must not trail a later create's
                    // replay).
                    let step = if matches!(r.request_union, Some(RequestUnion::CreateRequest(_))) {
                        self.send_queued(&mut msgs).await
                    } else {
                        Ok(())
                    };
                    match step {
                        Ok(()) => self.on_request(r).await,
                        Err(g) => Err(g),
                    }
                }
                Input::Request(Ok(None)) => {
                    // Half-closed by the client: keep sending, as etcd does.
                    requests_open = false;
                    Ok(())
                }
                Input::Request(Err(_)) | Input::Msg(None) => return,
                Input::Msg(Some(m)) => {
                    let mut r = self.on_msg(m).await;
                    while r.is_ok() {
                        match msgs.try_recv() {
                            Ok(m) => r = self.on_msg(m).await,
                            Err(_) => break,
                        }
                    }
                    r
                }
                Input::Tick => {
                    next_tick = Instant::now() + interval;
                    self.progress_notify().await
                }
            };
            if step.is_err() {
                return;
            }
            if victims.swap(false, Ordering::AcqRel)
                && self.catch_up_victims(&mut msgs).await.is_err()
            {
                return;
            }
            if self.progress_pending && self.shared.watch.queue_progress(self.sid) {
                self.progress_pending = false;
            }
        }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        let mut h = Some(ResponseHeader {
            revision,
            ..Default::default()
        });
        fill_header(&self.shared, &mut h);
        h
    }

    fn current_revision(&self) -> i64 {
        self.shared.read_keyspace().revision()
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(resp)).await.map_err(|_| Gone)
    }

    async fn on_request(&mut self, req: WatchRequest) -> Result<(), Gone> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if self.watches.remove(&c.watch_id).is_some() {
                    self.shared.watch.cancel(self.sid, c.watch_id);
                    let header = self.header(self.current_revision());
                    self.send(WatchResponse {
                        header,
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                if !self.shared.watch.queue_progress(self.sid) {
                    self.progress_pending = true;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A create refused before it gets an id (`watch_id` -1).
    async fn refuse(&self, reason: &str) -> Result<(), Gone> {
        let header = self.header(self.current_revision());
        self.send(WatchResponse {
            header,
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.into(),
            ..Default::default()
        })
        .await
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Result<(), Gone> {
        let key = if c.key.is_empty() { vec![0] } else { c.key };
        // etcd: a range end not after the key is an empty range ("\0", the
        // from-key marker, is not a range end here).
        if !c.range_end.is_empty() && c.range_end != [0] && key >= c.range_end {
            return self.refuse(EMPTY_WATCH_RANGE).await;
        }
        let id = if c.watch_id != 0 {
            if self.watches.contains_key(&c.watch_id) {
                return self.refuse(DUPLICATE_WATCH_ID).await;
            }
            c.watch_id
        } else {
            while self.watches.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id += 1;
            self.next_auto_id - 1
        };
        let spec = WatchSpec {
            range: WatchRange {
                key,
                range_end: c.range_end,
            },
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let (current, compacted) = {
            let ks = self.shared.read_keyspace();
            (ks.revision(), ks.compact_revision())
        };
        let header = self.header(current);
        self.send(WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await?;
        self.watches.insert(
            id,
            WatchOpts {
                dead: false,
                spec: spec.clone(),
                prev_kv: c.prev_kv,
                fragment: c.fragment,
                progress_notify: c.progress_notify,
                sent_since_tick: false,
            },
        );
        // etcd keeps any non-zero start as the watcher's minimum revision:
        // below the compaction point (-1 before the first compaction, so
        // every negative start but -1 then) it is canceled for compaction.
        // -1 with nothing compacted reads no history in etcd (the key of
        // revision -1 sorts after every revision) and goes live: from now.
        let start = c.start_revision;
        if start != 0 && start < compacted {
            self.kill(id);
            return self.send_compacted(id, compacted).await;
        }
        let from = if start <= 0 { current + 1 } else { start };
        self.replay_then_register(id, spec, from, false).await
    }

    /// Sends history from `from` without the hub lock, then registers (or
    /// resyncs) the watcher, sending the remaining gap.
    async fn replay_then_register(
        &mut self,
        id: i64,
        spec: WatchSpec,
        from: i64,
        resync: bool,
    ) -> Result<(), Gone> {
        let (events, upto, compacted) = {
            let ks = self.shared.read_keyspace();
            // Never past the published revision (see `WatchHub::read_gap`).
            let r = ks.revision().min(self.shared.watch.published());
            let range = ferrocd_core::KeyRange::new(&spec.range.key, &spec.range.range_end);
            let evs = if from <= r && from >= ks.compact_revision() {
                ks.history(&range, from, r)
            } else {
                Vec::new()
            };
            (evs, r, ks.compact_revision())
        };
        if from < compacted {
            self.kill(id);
            return self.send_compacted(id, compacted).await;
        }
        let next = if from <= upto {
            self.send_history(id, events, upto).await?;
            upto + 1
        } else {
            from
        };
        let hub = &self.shared.watch;
        let outcome = if resync {
            hub.resync(self.sid, id, next, &self.shared.keyspace)
        } else {
            Some(hub.register(self.sid, id, spec, next, &self.shared.keyspace))
        };
        match outcome {
            Some(Registered::Synced { gap, revision }) => {
                self.send_history(id, gap, revision).await
            }
            Some(Registered::Compacted(c)) => {
                self.kill(id);
                self.send_compacted(id, c).await
            }
            None => Ok(()),
        }
    }

    fn kill(&mut self, id: i64) {
        self.shared.watch.cancel(self.sid, id);
        if let Some(w) = self.watches.get_mut(&id) {
            w.dead = true;
        }
    }

    async fn send_compacted(&self, id: i64, compacted: i64) -> Result<(), Gone> {
        let header = self.header(0);
        self.send(WatchResponse {
            header,
            watch_id: id,
            canceled: true,
            compact_revision: compacted,
            ..Default::default()
        })
        .await
    }

    /// History events in responses of at most
    /// [`HISTORY_REVISIONS_PER_RESPONSE_MAX`] revisions, each with header
    /// revision `revision` (the store revision they were read at, as etcd).
    async fn send_history(
        &mut self,
        id: i64,
        events: Vec<Event>,
        revision: i64,
    ) -> Result<(), Gone> {
        let Some(opts) = self.watches.get(&id) else {
            return Ok(());
        };
        let mut events: Vec<Event> = events.into_iter().filter(|e| opts.spec.wants(e)).collect();
        while !events.is_empty() {
            let mut revs = 0;
            let mut last = 0;
            let cut = events
                .iter()
                .position(|e| {
                    let r = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                    if r != last {
                        revs += 1;
                        last = r;
                    }
                    revs > HISTORY_REVISIONS_PER_RESPONSE_MAX
                })
                .unwrap_or(events.len());
            let rest = events.split_off(cut);
            self.send_events(id, events, revision).await?;
            events = rest;
        }
        Ok(())
    }

    async fn on_msg(&mut self, m: StreamMsg) -> Result<(), Gone> {
        match m {
            StreamMsg::Events {
                watch_id,
                revision,
                events,
            } => self.send_events(watch_id, events, revision).await,
            StreamMsg::Progress { revision } => {
                let header = self.header(revision);
                self.send(WatchResponse {
                    header,
                    watch_id: -1,
                    ..Default::default()
                })
                .await
            }
        }
    }

    /// Sends events of one watch (prev_kv filled if asked), fragmenting a
    /// response above `--max-request-bytes` when the watch asked for it.
    async fn send_events(
        &mut self,
        id: i64,
        mut events: Vec<Event>,
        revision: i64,
    ) -> Result<(), Gone> {
        let Some(opts) = self.watches.get_mut(&id).filter(|w| !w.dead) else {
            return Ok(()); // canceled meanwhile
        };
        if events.is_empty() {
            return Ok(());
        }
        opts.sent_since_tick = true;
        let (prev_kv, fragment) = (opts.prev_kv, opts.fragment);
        if prev_kv {
            fill_prev_kvs(&self.shared, &mut events);
        }
        let header = self.header(revision);
        let resp = WatchResponse {
            header,
            watch_id: id,
            events,
            ..Default::default()
        };
        // etcd's sendFragments: the limit is the gRPC one
        // (--max-request-bytes + 512 KiB); a response at or above it with at
        // least two events is split, each fragment filled while it stays
        // below the limit (a single oversized event goes alone).
        let max = self
            .shared
            .max_request_bytes
            .saturating_add(ferrocd_core::validate::GRPC_OVERHEAD_BYTES);
        if !fragment || resp.events.len() < 2 || resp.encoded_len() < max {
            return self.send(resp).await;
        }
        let WatchResponse { header, events, .. } = resp;
        let base = WatchResponse {
            header,
            watch_id: id,
            fragment: true,
            ..Default::default()
        }
        .encoded_len();
        let event_bytes = |e: &Event| {
            let n = e.encoded_len();
            1 + prost::encoding::encoded_len_varint(n as u64) + n
        };
        let mut rest = events.into_iter().peekable();
        while rest.peek().is_some() {
            let mut chunk: Vec<Event> = Vec::new();
            let mut size = base;
            while let Some(e) = rest.peek() {
                let add = event_bytes(e);
                if !chunk.is_empty() && size + add >= max {
                    break;
                }
                size += add;
                chunk.push(rest.next().expect("peeked"));
            }
            let last = rest.peek().is_none();
            self.send(WatchResponse {
                header,
                watch_id: id,
                events: chunk,
                fragment: !last,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// Sends what is queued right now (not what arrives meanwhile).
    async fn send_queued(&mut self, msgs: &mut mpsc::Receiver<StreamMsg>) -> Result<(), Gone> {
        for _ in 0..msgs.len() {
            match msgs.try_recv() {
                Ok(m) => self.on_msg(m).await?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Replays fallen-behind watchers from history. The victims are listed
    /// first, then everything already queued is sent: a victim's queued
    /// messages all predate its fall (the hub queues nothing for it after),
    /// so they go out before its replay and order is kept.
    async fn catch_up_victims(&mut self, msgs: &mut mpsc::Receiver<StreamMsg>) -> Result<(), Gone> {
        let victims = self.shared.watch.victims(self.sid);
        self.send_queued(msgs).await?;
        for v in victims {
            if self.watches.contains_key(&v.watch_id) {
                self.replay_then_register(v.watch_id, v.spec, v.next_rev, true)
                    .await?;
            }
        }
        Ok(())
    }

    /// etcd's progress notification: on each tick, an empty response to
    /// each `progress_notify` watch that sent nothing since the last tick.
    async fn progress_notify(&mut self) -> Result<(), Gone> {
        if !self.shared.watch.all_synced(self.sid) {
            return Ok(());
        }
        let revision = self.shared.watch.published();
        let mut due = Vec::new();
        for (id, w) in &mut self.watches {
            if !w.dead && w.progress_notify && !w.sent_since_tick {
                due.push(*id);
            }
            w.sent_since_tick = false;
        }
        for id in due {
            let header = self.header(revision);
            self.send(WatchResponse {
                header,
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}

/// etcd reads `prev_kv` at `mod_revision - 1` when sending (none for a
/// create event, or when that revision is compacted away).
fn fill_prev_kvs(shared: &SharedRef, events: &mut [Event]) {
    let ks = shared.read_keyspace();
    for e in events {
        let Some(kv) = &e.kv else { continue };
        let is_create = e.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
        if is_create {
            continue;
        }
        let r = ks.range(&RangeRequest {
            key: kv.key.clone(),
            revision: kv.mod_revision - 1,
            ..Default::default()
        });
        if let Ok(mut r) = r {
            e.prev_kv = r.kvs.pop();
        }
    }
}
