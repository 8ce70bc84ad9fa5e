//! Drives generated tonic servers in memory (no network, no runtime) to check
//! that gRPC method paths match etcd's, e.g. `/etcdserverpb.KV/Range`.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use ferrocd_proto::etcdserverpb::kv_server::{Kv, KvServer};
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use ferrocd_proto::prost::Message;
use ferrocd_proto::tonic::codegen::{http, Bytes, Service};
use ferrocd_proto::tonic::{self, Request, Response, Status};
use http_body_util::{BodyExt, Full};

/// Polls a future that never actually waits (everything is in memory).
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future did not complete");
}

struct EchoKv;

#[tonic::async_trait]
impl Kv for EchoKv {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(RangeResponse {
            count: req.into_inner().key.len() as i64,
            ..Default::default()
        }))
    }
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Err(Status::unimplemented("put"))
    }
    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("delete_range"))
    }
    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("txn"))
    }
    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("compact"))
    }
}

/// gRPC length-prefixed message framing (uncompressed).
fn grpc_frame(msg: &impl Message) -> Bytes {
    let payload = msg.encode_to_vec();
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out.into()
}

fn call(path: &str, body: Bytes) -> (http::HeaderMap, Bytes, Option<http::HeaderMap>) {
    let mut svc = KvServer::new(EchoKv);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body))
        .unwrap();
    let resp = block_on(svc.call(req)).unwrap();
    let (parts, body) = resp.into_parts();
    let collected = block_on(body.collect()).unwrap();
    let trailers = collected.trailers().cloned();
    (parts.headers, collected.to_bytes(), trailers)
}

fn grpc_status(headers: &http::HeaderMap, trailers: &Option<http::HeaderMap>) -> String {
    trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn kv_range_route() {
    let (headers, body, trailers) = call(
        "/etcdserverpb.KV/Range",
        grpc_frame(&RangeRequest {
            key: b"hello".to_vec(),
            ..Default::default()
        }),
    );
    assert_eq!(grpc_status(&headers, &trailers), "0");
    assert_eq!(body[0], 0, "uncompressed frame");
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let resp = RangeResponse::decode(&body[5..5 + len]).unwrap();
    assert_eq!(resp.count, 5);
}

#[test]
fn unknown_route_is_unimplemented() {
    let (headers, _, trailers) = call("/etcdserverpb.KV/NoSuchMethod", Bytes::new());
    assert_eq!(grpc_status(&headers, &trailers), "12");
    let (headers, _, trailers) = call("/etcdserverpb.Kv/Range", Bytes::new());
    assert_eq!(grpc_status(&headers, &trailers), "12");
}
