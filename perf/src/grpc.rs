//! A lean unary gRPC client straight on `h2`: one HTTP/2 connection per
//! `Conn`, cloned by every client that shares it, no tower buffer task, no
//! per-request channel hop. The load generator shares two CPUs with the
//! server it measures, so its own cost per request is part of every
//! figure; tonic's `Channel` (a tower `Buffer` in front of hyper) costs
//! about twice as much per unary call here. `--transport tonic` keeps the
//! tonic path for comparison.
//!
//! Wire format (gRPC over HTTP/2): POST `/<service>/<method>` with
//! `content-type: application/grpc` and `te: trailers`; the body is one
//! length-prefixed message (1 byte compressed flag = 0, 4 bytes big-endian
//! length, the protobuf bytes). The answer is HEADERS (:status 200), DATA
//! with one length-prefixed message, then trailers with `grpc-status` (0 =
//! OK) and `grpc-message` (percent-encoded); an error may come as
//! trailers-only (`grpc-status` in the HEADERS, no DATA).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferrocd_proto::prost::Message;
use h2::client::SendRequest;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, TE};
use http::{Method, Request, Uri};
use tonic::{Code, Status};

/// Bytes before each message: compressed flag + 32-bit length.
const PREFIX_BYTES: usize = 5;
/// Largest answer accepted (etcd's default send limit is math.MaxInt32;
/// a load generator never asks for more than this).
pub const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// HTTP/2 windows: large enough that flow control never paces a run.
const STREAM_WINDOW_BYTES: u32 = 4 << 20;
const CONN_WINDOW_BYTES: u32 = 64 << 20;

/// One HTTP/2 connection; `Clone` shares it.
#[derive(Clone)]
pub struct Conn {
    send: SendRequest<Bytes>,
    authority: String,
}

/// A method's full request URI, built once.
#[derive(Clone)]
pub struct Path {
    uri: Uri,
}

impl Conn {
    /// Connects to `uri` (`http://host:port`), TCP_NODELAY, and drives the
    /// connection on a spawned task.
    pub async fn connect(uri: &str) -> Result<Conn, String> {
        let authority = uri
            .strip_prefix("http://")
            .ok_or(format!("{uri}: want http://host:port"))?
            .to_string();
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("connect {uri}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONN_WINDOW_BYTES)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {uri}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { send, authority })
    }

    /// The URI of `path` (`/etcdserverpb.KV/Put`) on this connection.
    pub fn path(&self, path: &str) -> Result<Path, String> {
        let uri = format!("http://{}{path}", self.authority)
            .parse()
            .map_err(|e| format!("{path}: {e}"))?;
        Ok(Path { uri })
    }

    /// One unary call.
    pub async fn unary<Q: Message, R: Message + Default>(
        &mut self,
        path: &Path,
        req: &Q,
    ) -> Result<R, Status> {
        std::future::poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(h2_status)?;
        let mut head = Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = path.uri.clone();
        let h = head.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        let (answer, mut body_tx) = self.send.send_request(head, false).map_err(h2_status)?;
        let len = req.encoded_len();
        let mut buf = BytesMut::with_capacity(PREFIX_BYTES + len);
        buf.put_u8(0);
        buf.put_u32(len as u32);
        req.encode(&mut buf)
            .map_err(|e| Status::internal(format!("encode: {e}")))?;
        body_tx.send_data(buf.freeze(), true).map_err(h2_status)?;

        let (parts, mut body) = answer.await.map_err(h2_status)?.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Status::unknown(format!("HTTP status {}", parts.status)));
        }
        if let Some(status) = grpc_status(&parts.headers) {
            // Trailers-only answer.
            return Err(status.unwrap_err_or(Status::internal("OK without a message")));
        }
        let mut data: Option<Bytes> = None;
        let mut more = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(h2_status)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            match data.take() {
                None if more.is_empty() => data = Some(chunk),
                first => {
                    if let Some(first) = first {
                        more.extend_from_slice(&first);
                    }
                    more.extend_from_slice(&chunk);
                }
            }
            if data.as_ref().map_or(0, Bytes::len) + more.len() > RESPONSE_BYTES_MAX + PREFIX_BYTES
            {
                return Err(Status::resource_exhausted("answer too large"));
            }
        }
        let trailers = body.trailers().await.map_err(h2_status)?;
        match trailers.as_ref().and_then(grpc_status) {
            Some(Err(status)) => return Err(status),
            Some(Ok(())) => {}
            None => return Err(Status::internal("answer without grpc-status")),
        }
        let mut msg = data.unwrap_or_else(|| more.freeze());
        if msg.len() < PREFIX_BYTES || msg[0] != 0 {
            return Err(Status::internal("bad message prefix"));
        }
        msg.advance(1);
        let len = msg.get_u32() as usize;
        if msg.len() != len {
            return Err(Status::internal(format!(
                "message length {len}, {} bytes came",
                msg.len()
            )));
        }
        R::decode(msg).map_err(|e| Status::internal(format!("decode: {e}")))
    }
}

trait OkOr {
    fn unwrap_err_or(self, ok: Status) -> Status;
}

impl OkOr for Result<(), Status> {
    fn unwrap_err_or(self, ok: Status) -> Status {
        self.err().unwrap_or(ok)
    }
}

/// `grpc-status` (and `grpc-message`) of a header block, if present.
fn grpc_status(h: &HeaderMap) -> Option<Result<(), Status>> {
    let code = h.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    if code == 0 {
        return Some(Ok(()));
    }
    let msg = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(ferrocd_proto::grpc_message_decode)
        .unwrap_or_default();
    Some(Err(Status::new(Code::from_i32(code), msg)))
}

fn h2_status(e: h2::Error) -> Status {
    Status::unavailable(format!("h2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_status_reads_code_and_decodes_message() {
        let mut h = HeaderMap::new();
        assert!(grpc_status(&h).is_none());
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(matches!(grpc_status(&h), Some(Ok(()))));
        h.insert("grpc-status", HeaderValue::from_static("3"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("etcdserver: key is not provided%21"),
        );
        let s = grpc_status(&h).unwrap().unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "etcdserver: key is not provided!");
        assert_eq!(ferrocd_proto::grpc_message_decode("a%2"), "a%2");
    }
}
