//! ferrocd's per-shard MVCC state machines and the sharded keyspace.
//!
//! - [`KeyIndex`]: every retained version of one key (generations,
//!   tombstones, compaction), with worked examples.
//! - [`Shard`]: the MVCC state of the keys one shard owns; stores and reads
//!   versions at the revisions it is given, knows nothing else.
//! - [`Keyspace`]: N shards behind one [`ferrocd_core::Router`] and one
//!   [`ferrocd_core::Sequencer`], implementing etcd's Range, Put,
//!   DeleteRange, Txn and Compact. N = 1 and N = 8 give identical answers.
//!
//! IO-free and deterministic: no clocks, no randomness, no threads.
#![deny(missing_docs)]

mod image;
mod key_index;
mod keyspace;
mod range_merge;
mod shard;

pub mod events;
pub mod lease;
pub use events::event_of;
pub use image::{
    ArchivedImageHead, ArchivedKeyImage, ArchivedKeyspaceImage, ImageBuilder, ImageCompacted,
    ImageError, ImageHead, KeyChunk, KeyImage, KeyspaceImage, KeyspaceLoader, VersionImage,
};
pub use key_index::{KeyIndex, Rev, Version};
pub use keyspace::Keyspace;
pub use range_merge::{merge_by_key, RangeAnswer};
pub use shard::{key_value, ReadShape, Shard, ShardRange};
