//! Wire-compatible etcd v3 protocol definitions for ferrocd.
//!
//! This crate contains the prost message types and tonic client/server stubs
//! generated from `.proto` files that mirror the etcd v3.5/v3.6 gRPC API
//! (package, service, method, message and field names and numbers are
//! identical to etcd's, so real etcd clients such as `etcdctl` and
//! `go.etcd.io/etcd/client/v3` interoperate with ferrocd).
//!
//! Module layout follows the protobuf packages:
//!
//! | module                | proto package    | contents                                   |
//! |-----------------------|------------------|--------------------------------------------|
//! | [`mvccpb`]            | `mvccpb`         | `KeyValue`, `Event`                        |
//! | [`authpb`]            | `authpb`         | `User`, `Role`, `Permission`               |
//! | [`etcdserverpb`]      | `etcdserverpb`   | KV, Watch, Lease, Cluster, Maintenance, Auth |
//! | [`v3lockpb`]          | `v3lockpb`       | Lock service                               |
//! | [`v3electionpb`]      | `v3electionpb`   | Election service                           |
//! | [`grpc::health::v1`]  | `grpc.health.v1` | standard gRPC health checking              |
//!
//! The `.proto` sources are compiled at build time with `protox` (pure Rust),
//! so no system `protoc` is required. Transport-agnostic tonic code is
//! generated (no `tonic::transport` dependency); bring your own HTTP/2 server
//! or channel. The stubs are behind the `grpc` feature: the sans-IO crates
//! use only the messages and stay free of tonic and tokio. `prost` (and
//! `tonic`, with `grpc`) are re-exported so dependents use the exact
//! versions the generated code was built against.

pub use prost;
#[cfg(feature = "grpc")]
pub use tonic;

/// Multi-version key-value data model (`mvccpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// Authentication records (`authpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// Core etcd v3 API (`etcdserverpb`): KV, Watch, Lease, Cluster,
/// Maintenance and Auth services.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// Distributed lock service (`v3lockpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}

/// Leader election service (`v3electionpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}

/// Standard gRPC services (`grpc.*`).
pub mod grpc {
    /// gRPC health checking (`grpc.health`).
    pub mod health {
        /// gRPC health checking protocol, version 1 (`grpc.health.v1`).
        #[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
        }
    }
}

/// Decodes a `grpc-message` trailer: gRPC percent-encodes it (`%XX`);
/// invalid escapes are kept as they are, as grpc-go does. The server
/// rewrites some tonic errors by it and the load generator reads errors
/// with it.
#[must_use]
pub fn grpc_message_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::grpc_message_decode;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(grpc_message_decode("a%20b%21"), "a b!");
        assert_eq!(grpc_message_decode("100%"), "100%");
        assert_eq!(grpc_message_decode("%zz%2"), "%zz%2");
    }
}
