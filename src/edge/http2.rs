//! hyper 1.x on glommio: an executor, an IO adapter, the per-core accept
//! loop, and the router that dispatches gRPC paths to tonic's generated
//! services (unknown services answer `Unimplemented`, as grpc-go does).

use super::{cluster, health, kv, maintenance, SharedRef};
use ferrocd_proto::etcdserverpb::cluster_server::ClusterServer;
use ferrocd_proto::etcdserverpb::kv_server::KvServer;
use ferrocd_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use ferrocd_proto::grpc::health::v1::health_server::HealthServer;
use ferrocd_proto::tonic::body::Body as TonicBody;
use ferrocd_proto::tonic::codegen::Service as _;
use ferrocd_proto::tonic::Status;
use futures_lite::{AsyncRead, AsyncWrite};
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

/// A glommio TCP stream seen through hyper's IO traits.
pub struct HyperIo(pub glommio::net::TcpStream);

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
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
        match Pin::new(&mut self.0).poll_read(cx, bytes) {
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
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// Dispatches a request to the service named by its path.
#[derive(Clone)]
pub struct GrpcRouter {
    kv: KvServer<kv::KvService>,
    maintenance: MaintenanceServer<maintenance::MaintenanceService>,
    cluster: ClusterServer<cluster::ClusterService>,
    health: HealthServer<health::HealthService>,
}

impl GrpcRouter {
    /// Services over the shared state; requests above `decode_bytes_max`
    /// are refused by the codec with `ResourceExhausted` (etcd's gRPC limit:
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
        }
    }
}

type RouteFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<TonicBody>, Infallible>> + Send>>;

impl hyper::service::Service<http::Request<Incoming>> for GrpcRouter {
    type Response = http::Response<TonicBody>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let path = req.uri().path();
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split('/').next())
            .unwrap_or("");
        match service {
            "etcdserverpb.KV" => {
                let mut s = self.kv.clone();
                Box::pin(async move { s.call(req).await })
            }
            "etcdserverpb.Maintenance" => {
                let mut s = self.maintenance.clone();
                Box::pin(async move { s.call(req).await })
            }
            "etcdserverpb.Cluster" => {
                let mut s = self.cluster.clone();
                Box::pin(async move { s.call(req).await })
            }
            "grpc.health.v1.Health" => {
                let mut s = self.health.clone();
                Box::pin(async move { s.call(req).await })
            }
            other => {
                let status = Status::unimplemented(format!("unknown service {other}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Serves one accepted connection until it closes. Errors (garbage on the
/// port, resets) end the connection, never the server.
pub async fn serve_connection(stream: glommio::net::TcpStream, router: GrpcRouter) {
    let _ = stream.set_nodelay(true);
    let conn = hyper::server::conn::http2::Builder::new(LocalExec)
        .max_concurrent_streams(u32::MAX)
        .max_frame_size(16 * 1024)
        .initial_stream_window_size(1024 * 1024)
        .initial_connection_window_size(4 * 1024 * 1024)
        .max_send_buf_size(1024 * 1024)
        .serve_connection(HyperIo(stream), router);
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
