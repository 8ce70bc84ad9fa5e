//! hyper 1.x on glommio: an executor, an IO adapter, the per-core accept
//! loop, and the router that dispatches gRPC paths to tonic's generated
//! services (unknown services answer `Unimplemented`, as grpc-go does).

use super::authority_fix::{
    AuthorityFix, FRAME_PAYLOAD_BYTES_MAX as AUTHORITY_FIX_FRAME_BYTES_MAX,
};
use super::txn_nesting::{scan, Nesting, TXN_NESTING_MAX};
use super::{cluster, election, health, kv, kv_status, lease, lock, maintenance, watch, SharedRef};
use bytes::BytesMut;
use ferrocd_core::KvError;
use ferrocd_proto::etcdserverpb::cluster_server::ClusterServer;
use ferrocd_proto::etcdserverpb::kv_server::KvServer;
use ferrocd_proto::etcdserverpb::lease_server::LeaseServer;
use ferrocd_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use ferrocd_proto::etcdserverpb::watch_server::WatchServer;
use ferrocd_proto::grpc::health::v1::health_server::HealthServer;
use ferrocd_proto::tonic::body::Body as TonicBody;
use ferrocd_proto::tonic::codegen::Service as _;
use ferrocd_proto::tonic::Status;
use ferrocd_proto::v3electionpb::election_server::ElectionServer;
use ferrocd_proto::v3lockpb::lock_server::LockServer;
use futures_lite::{AsyncRead, AsyncWrite};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Largest slice handed to one `recv` (zeroed first; hyper may offer more).
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Spawns hyper's connection tasks on the current glommio executor.
#[derive(Clone, Copy, Debug)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        glommio::spawn_local(fut).detach();
    }
}

/// A glommio TCP stream seen through hyper's IO traits. What the client
/// sends goes through an [`AuthorityFix`] until it steps aside (after the
/// first header block for every client but etcdctl's `--cluster` dials).
pub struct HyperIo {
    stream: glommio::net::TcpStream,
    fix: Option<Box<AuthorityFix>>,
    /// Filtered bytes not yet handed to hyper, from `ready_at` on.
    ready: Vec<u8>,
    ready_at: usize,
    scratch: Vec<u8>,
}

impl HyperIo {
    /// Wraps an accepted gRPC (HTTP/2) connection.
    #[must_use]
    pub fn new(stream: glommio::net::TcpStream) -> HyperIo {
        HyperIo {
            stream,
            fix: Some(Box::default()),
            ready: Vec::new(),
            ready_at: 0,
            scratch: Vec::new(),
        }
    }

    /// Wraps a connection read as is (HTTP/1.1).
    #[must_use]
    pub fn plain(stream: glommio::net::TcpStream) -> HyperIo {
        HyperIo {
            fix: None,
            ..HyperIo::new(stream)
        }
    }
}

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready_at < this.ready.len() {
                let n = (this.ready.len() - this.ready_at).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                    if this.fix.as_ref().is_some_and(|f| f.is_passthrough()) {
                        this.fix = None;
                        this.scratch = Vec::new();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            let Some(fix) = this.fix.as_mut() else {
                break;
            };
            this.scratch.resize(READ_CHUNK_BYTES, 0);
            match Pin::new(&mut this.stream).poll_read(cx, &mut this.scratch) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(n)) => {
                    if let Err(e) = fix.on_input(&this.scratch[..n], &mut this.ready) {
                        return Poll::Ready(Err(io::Error::other(e)));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // SAFETY: we only write initialized bytes into the cursor's spare
        // capacity and advance by exactly what the read filled.
        let spare = unsafe { buf.as_mut() };
        let len = spare.len().min(READ_CHUNK_BYTES);
        let spare = &mut spare[..len];
        for b in spare.iter_mut() {
            b.write(0);
        }
        // SAFETY: every byte of `spare` was initialized just above.
        let bytes = unsafe { &mut *(std::ptr::from_mut::<[MaybeUninit<u8>]>(spare) as *mut [u8]) };
        match Pin::new(&mut this.stream).poll_read(cx, bytes) {
            Poll::Ready(Ok(n)) => {
                // SAFETY: the read initialized (wrote) the first `n` bytes.
                unsafe { buf.advance(n) };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// Dispatches a request to the service named by its path.
#[derive(Clone)]
pub struct GrpcRouter {
    kv: KvServer<kv::KvService>,
    maintenance: MaintenanceServer<maintenance::MaintenanceService>,
    cluster: ClusterServer<cluster::ClusterService>,
    health: HealthServer<health::HealthService>,
    watch: WatchServer<watch::WatchService>,
    lease: LeaseServer<lease::LeaseService>,
    lock: LockServer<lock::LockService>,
    election: ElectionServer<election::ElectionService>,
    decode_bytes_max: usize,
    txn_nesting_cap: usize,
    shared: SharedRef,
}

impl GrpcRouter {
    /// Services over the shared state; requests above `decode_bytes_max`
    /// are refused with `ResourceExhausted` (etcd's gRPC limit:
    /// `--max-request-bytes` + 512 KiB).
    #[must_use]
    pub fn new(shared: &SharedRef, decode_bytes_max: usize) -> GrpcRouter {
        GrpcRouter {
            kv: KvServer::new(kv::KvService::new(shared.clone()))
                .max_decoding_message_size(decode_bytes_max),
            maintenance: MaintenanceServer::new(maintenance::MaintenanceService::new(
                shared.clone(),
            ))
            .max_decoding_message_size(decode_bytes_max),
            cluster: ClusterServer::new(cluster::ClusterService::new(shared.clone()))
                .max_decoding_message_size(decode_bytes_max),
            health: HealthServer::new(health::HealthService::new(shared.clone())),
            watch: WatchServer::new(watch::WatchService::new(shared.clone()))
                .max_decoding_message_size(decode_bytes_max),
            lease: LeaseServer::new(lease::LeaseService::new(shared.clone()))
                .max_decoding_message_size(decode_bytes_max),
            lock: LockServer::new(lock::LockService::new(shared.clone()))
                .max_decoding_message_size(decode_bytes_max),
            election: ElectionServer::new(election::ElectionService::new(shared.clone()))
                .max_decoding_message_size(decode_bytes_max),
            decode_bytes_max,
            txn_nesting_cap: shared.max_txn_ops.saturating_add(1).min(TXN_NESTING_MAX),
            shared: shared.clone(),
        }
    }

    /// Picks the service by path and boxes only its call: cloning the
    /// whole router into one future per request (the union of every
    /// service's state) showed up as memcpy and drops in the put profile.
    fn route(&self, req: http::Request<Incoming>) -> RouteFuture {
        let path = req.uri().path();
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match service {
            "etcdserverpb.KV" if path == "/etcdserverpb.KV/Txn" => {
                let (kv, max, cap) = (self.kv.clone(), self.decode_bytes_max, self.txn_nesting_cap);
                Box::pin(async move {
                    let resp = txn(kv, max, cap, req).await;
                    Ok(grpc_go_errors(resp, "/etcdserverpb.KV/Txn"))
                })
            }
            "etcdserverpb.KV" => serve(self.kv.clone(), req),
            "etcdserverpb.Maintenance" => serve(self.maintenance.clone(), req),
            "etcdserverpb.Cluster" => serve(self.cluster.clone(), req),
            "v3lockpb.Lock" => serve(self.lock.clone(), req),
            "v3electionpb.Election" => serve(self.election.clone(), req),
            "etcdserverpb.Lease" => serve(self.lease.clone(), req),
            "etcdserverpb.Watch" => serve(self.watch.clone(), req),
            "grpc.health.v1.Health" => serve(self.health.clone(), req),
            other => {
                let resp = Status::unimplemented(format!("unknown service {other}")).into_http();
                Box::pin(std::future::ready(Ok(resp)))
            }
        }
    }
}

/// Calls one tonic service and applies grpc-go's error wording.
fn serve<S>(mut service: S, req: http::Request<Incoming>) -> RouteFuture
where
    S: ferrocd_proto::tonic::codegen::Service<
        http::Request<Incoming>,
        Response = http::Response<TonicBody>,
        Error = Infallible,
    >,
    S::Future: Send + 'static,
{
    let path = req.uri().path_and_query().cloned();
    let fut = service.call(req);
    Box::pin(async move {
        let resp = fut.await.unwrap_or_else(|never| match never {});
        Ok(grpc_go_errors(resp, path.as_ref().map_or("", |p| p.path())))
    })
}

/// Txn: reads the (single) request message first to bound its nesting
/// before prost decodes it (see `txn_nesting`).
async fn txn(
    mut kv: KvServer<kv::KvService>,
    decode_bytes_max: usize,
    txn_nesting_cap: usize,
    req: http::Request<Incoming>,
) -> http::Response<TonicBody> {
    let (parts, mut body) = req.into_parts();
    let mut buf = BytesMut::new();
    let mut want = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Status::cancelled("request body ended abnormally").into_http();
        };
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        if want.is_none() && buf.len() >= GRPC_HEADER_BYTES {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > decode_bytes_max {
                return too_large(len, decode_bytes_max).into_http();
            }
            want = Some(GRPC_HEADER_BYTES + len);
        }
        if want.is_some_and(|w| buf.len() >= w) {
            break;
        }
    }
    if let Some(w) = want {
        if buf[0] == 0 && buf.len() >= w {
            let msg = &buf[GRPC_HEADER_BYTES..w];
            if scan(msg, txn_nesting_cap) == Nesting::Deeper {
                return kv_status(KvError::TooManyOps).into_http();
            }
        }
    }
    let req = http::Request::from_parts(parts, Full::new(buf.freeze()));
    kv.call(req).await.unwrap_or_else(|never| match never {})
}

/// Bytes before each gRPC message: compressed flag + 32-bit length.
const GRPC_HEADER_BYTES: usize = 5;

/// grpc-go's answer (what etcd sends) to a message above the size limit.
fn too_large(len: usize, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "grpc: received message larger than max ({len} vs. {max})"
    ))
}

/// Rewrites the few transport-level errors where tonic's wording or code
/// differs from grpc-go's, which etcd clients see from etcd: an oversized
/// message (tonic: OutOfRange "decoded message length too large") and an
/// unknown method of a known service (tonic: no message).
fn grpc_go_errors(resp: http::Response<TonicBody>, path: &str) -> http::Response<TonicBody> {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    match header("grpc-status") {
        "11" => {
            let msg = ferrocd_proto::grpc_message_decode(header("grpc-message"));
            if !msg.contains("decoded message length too large") {
                return resp;
            }
            let numbers: Vec<usize> = msg
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|t| t.parse().ok())
                .collect();
            match numbers[..] {
                [found, limit] => too_large(found, limit).into_http(),
                _ => resp,
            }
        }
        "12" if header("grpc-message").is_empty() => {
            let mut parts = path.trim_start_matches('/').splitn(2, '/');
            let service = parts.next().unwrap_or("");
            let method = parts.next().unwrap_or("");
            Status::unimplemented(format!("unknown method {method} for service {service}"))
                .into_http()
        }
        _ => resp,
    }
}

type RouteFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<TonicBody>, Infallible>> + Send>>;

impl hyper::service::Service<http::Request<Incoming>> for GrpcRouter {
    type Response = http::Response<TonicBody>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        self.route(req)
    }
}

/// Tries to tell an HTTP/2 client (its preface starts `PRI `) from an
/// HTTP/1.1 one by the first bytes, before reading them.
const SNIFF_TRIES_MAX: usize = 50;

/// Whether the connection speaks HTTP/2 (anything that is not clearly
/// HTTP/1.1 goes to the HTTP/2 server, which refuses garbage).
async fn is_http2(stream: &glommio::net::TcpStream) -> bool {
    const PRI: &[u8] = b"PRI ";
    let mut buf = [0u8; 4];
    for _ in 0..SNIFF_TRIES_MAX {
        match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(n) if !PRI.starts_with(&buf[..n]) => return false,
            Ok(n) if n == PRI.len() => return true,
            Ok(_) => glommio::timer::sleep(std::time::Duration::from_millis(1)).await,
        }
    }
    true
}

/// The client port's HTTP/1.1 answers (`/health`, `/version`,
/// `/metrics`), as etcd's client port gives them.
#[derive(Clone)]
struct PlainHttp {
    shared: SharedRef,
}

impl hyper::service::Service<http::Request<Incoming>> for PlainHttp {
    type Response = http::Response<Full<bytes::Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>>>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        use crate::metrics_http::{answer, Endpoint};
        let shared = self.shared.clone();
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .to_string();
        let endpoint = Endpoint::of(req.method().as_str(), &target, true);
        Box::pin(async move {
            let health = match endpoint {
                Endpoint::Health { serializable } => Some(health(&shared, serializable).await),
                _ => None,
            };
            let (status, content_type, body) = answer(&endpoint, health, &shared);
            let mut resp = http::Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, content_type);
            if status == 405 {
                resp = resp.header(http::header::ALLOW, "GET");
            }
            Ok(resp
                .body(Full::new(bytes::Bytes::from(body)))
                .expect("static status and headers"))
        })
    }
}

/// etcd's health check from a core: a leader, and unless serializable, the
/// Raft loop answering a ping in time.
async fn health(shared: &SharedRef, serializable: bool) -> Result<(), &'static str> {
    use crate::metrics_http::{
        health_precheck, HEALTH_BUSY_REASON, HEALTH_TIMEOUT, HEALTH_TIMEOUT_REASON,
    };
    if !health_precheck(shared, serializable)? {
        return Ok(());
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ping: crate::shared::HealthPing = Box::new(move || {
        let _ = tx.send(());
    });
    if shared.health_pings.push(ping).is_err() {
        return Err(HEALTH_BUSY_REASON);
    }
    shared.doorbell.ring();
    let answered = async { rx.await.is_ok() };
    let timed_out = async {
        glommio::timer::sleep(HEALTH_TIMEOUT).await;
        false
    };
    if futures_lite::future::or(answered, timed_out).await {
        Ok(())
    } else {
        Err(HEALTH_TIMEOUT_REASON)
    }
}

/// Serves one accepted connection until it closes. Errors (garbage on the
/// port, resets) end the connection, never the server. HTTP/1.1 clients
/// get `/health`, `/version` and `/metrics`; everything else is gRPC.
pub async fn serve_connection(stream: glommio::net::TcpStream, router: GrpcRouter) {
    let _ = stream.set_nodelay(true);
    if !is_http2(&stream).await {
        let service = PlainHttp {
            shared: router.shared.clone(),
        };
        // Go writes header names in canonical case; some scripts grep them.
        // One request per connection: probes and scrapers reconnect, and a
        // stray client cannot hold a core's task open.
        let conn = hyper::server::conn::http1::Builder::new()
            .title_case_headers(true)
            .keep_alive(false)
            .serve_connection(HyperIo::plain(stream), service);
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP/1.1 client connection ended with an error");
        }
        return;
    }
    let conn = hyper::server::conn::http2::Builder::new(LocalExec)
        .max_concurrent_streams(u32::MAX)
        .max_frame_size(AUTHORITY_FIX_FRAME_BYTES_MAX as u32)
        .initial_stream_window_size(1024 * 1024)
        .initial_connection_window_size(4 * 1024 * 1024)
        .max_send_buf_size(1024 * 1024)
        .serve_connection(HyperIo::new(stream), router);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// Accepts connections on a listening socket shared by every core.
pub async fn accept_loop(listener: glommio::net::TcpListener, router: GrpcRouter) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve_connection(stream, router.clone())).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
