//! ferrocd's IO-free core.
//!
//! What lives here is shared by every layer and does no IO: the id newtypes
//! that cross crates, etcd key ranges, the routing function that splits the
//! keyspace into shards, the [`Sequencer`] that owns the store revision,
//! the request checks etcd runs before proposing, and the client-visible
//! error table. The per-shard MVCC state machines live in `ferrocd-shards`;
//! the runtime (glommio executors, the gRPC edge, the Raft driver loop) in
//! the `ferrocd` binary. This crate never imports glommio, tonic or tokio.
#![deny(missing_docs)]

mod error;
mod ids;
mod key_range;
pub mod route;
mod sequencer;
pub mod validate;

pub use error::{GrpcCode, KvError};
pub use ids::{ClusterId, LeaseId, MemberId, RaftIndex, Revision, ShardId, Term};
pub use key_range::{prefix_end, KeyRange};
pub use route::{Router, ShardSet};
pub use sequencer::Sequencer;
