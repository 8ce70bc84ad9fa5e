//! The keyspace as plain data, for snapshot files.
//!
//! An image lists every indexed key with all its retained versions, in key
//! order, plus the revision and compaction point. It does not record shard
//! placement, so an image taken with N shards restores into any shard
//! count. rkyv archives it; loading validates the archive (bytecheck) and
//! then re-checks the invariants the in-memory structures rely on.

use crate::key_index::{KeyIndex, Rev, Version};
use crate::Keyspace;
use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

/// One version of a key, as stored in a snapshot.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VersionImage {
    /// Revision.
    pub main: i64,
    /// Sub-revision.
    pub sub: i64,
    /// Create revision of the generation (0 for a tombstone).
    pub create_revision: i64,
    /// Version within the generation (0 for a tombstone).
    pub version: i64,
    /// Lease id, 0 for none.
    pub lease: i64,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// One key and its versions.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KeyImage {
    /// The key.
    pub key: Vec<u8>,
    /// Retained versions, oldest first.
    pub versions: Vec<VersionImage>,
}

/// A whole keyspace.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceImage {
    /// Current revision.
    pub revision: i64,
    /// Compaction point (-1 if never compacted).
    pub compact_revision: i64,
    /// Every indexed key, in key order.
    pub keys: Vec<KeyImage>,
    /// Leases: (id, granted TTL in seconds), by id. Attached keys follow
    /// from the keys' latest versions.
    pub leases: Vec<(i64, i64)>,
}

/// Why an image cannot be restored.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Keys out of order or repeated.
    #[error("snapshot image: keys out of order at {0:?}")]
    KeysOutOfOrder(Vec<u8>),
    /// A key's versions break an invariant.
    #[error("snapshot image: bad versions for key {0:?}")]
    BadVersions(Vec<u8>),
    /// Revision and compaction point are inconsistent.
    #[error("snapshot image: revision {revision} / compacted {compact_revision} inconsistent")]
    BadRevision {
        /// Current revision.
        revision: i64,
        /// Compaction point.
        compact_revision: i64,
    },
}

impl Keyspace {
    /// Captures the keyspace as an image.
    #[must_use]
    pub fn to_image(&self) -> KeyspaceImage {
        let mut keys: Vec<KeyImage> = self
            .shards()
            .iter()
            .flat_map(|s| s.iter())
            .map(|(key, index)| KeyImage {
                key: key.to_vec(),
                versions: index
                    .versions()
                    .iter()
                    .map(|v| VersionImage {
                        main: v.rev.main,
                        sub: v.rev.sub,
                        create_revision: v.create_revision,
                        version: v.version,
                        lease: v.lease,
                        value: v.value.to_vec(),
                    })
                    .collect(),
            })
            .collect();
        keys.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let mut leases: Vec<(i64, i64)> = self.leases().map(|(id, l)| (id, l.ttl_s)).collect();
        leases.sort_unstable();
        KeyspaceImage {
            revision: self.revision(),
            compact_revision: self.compact_revision(),
            keys,
            leases,
        }
    }

    /// Rebuilds a keyspace of `shard_count` shards from an image.
    ///
    /// # Errors
    /// When the image breaks an invariant (a corrupt but checksum-valid
    /// snapshot must not become a corrupt store).
    pub fn from_image(image: KeyspaceImage, shard_count: u16) -> Result<Keyspace, ImageError> {
        let KeyspaceImage {
            revision,
            compact_revision,
            keys,
            leases,
        } = image;
        if revision < 1 || compact_revision < -1 || compact_revision > revision {
            return Err(ImageError::BadRevision {
                revision,
                compact_revision,
            });
        }
        let mut ks = Keyspace::resume(shard_count, revision, compact_revision, leases);
        let mut prev: Option<Vec<u8>> = None;
        for KeyImage { key, versions } in keys {
            if prev.as_ref().is_some_and(|p| *p >= key) {
                return Err(ImageError::KeysOutOfOrder(key));
            }
            let versions: Vec<Version> = versions
                .into_iter()
                .map(|v| Version {
                    rev: Rev {
                        main: v.main,
                        sub: v.sub,
                    },
                    create_revision: v.create_revision,
                    version: v.version,
                    lease: v.lease,
                    value: Bytes::from(v.value),
                })
                .collect();
            let ordered = versions.windows(2).all(|w| w[0].rev < w[1].rev);
            let in_range = versions
                .iter()
                .all(|v| v.rev.main >= 1 && v.rev.main <= revision);
            if versions.is_empty() || !ordered || !in_range {
                return Err(ImageError::BadVersions(key));
            }
            ks.restore_key(key.clone(), KeyIndex::from_versions(versions));
            prev = Some(key);
        }
        Ok(ks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::etcdserverpb::{
        CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest,
    };

    #[test]
    fn image_round_trips_through_rkyv_into_any_shard_count() {
        let mut ks = Keyspace::new(8);
        for i in 0..50u8 {
            let key = vec![b'k', i % 7];
            ks.put(&PutRequest {
                key,
                value: vec![i],
                ..Default::default()
            })
            .unwrap();
        }
        ks.delete_range(&DeleteRangeRequest {
            key: vec![b'k', 3],
            ..Default::default()
        })
        .unwrap();
        ks.compact(&CompactionRequest {
            revision: 20,
            physical: false,
        })
        .unwrap();
        let image = ks.to_image();
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&image).unwrap();
        let archived = rkyv::access::<ArchivedKeyspaceImage, rkyv::rancor::Error>(&bytes).unwrap();
        let back: KeyspaceImage = rkyv::deserialize::<_, rkyv::rancor::Error>(archived).unwrap();
        assert_eq!(back, image);
        for shards in [1, 3] {
            let restored = Keyspace::from_image(back.clone(), shards).unwrap();
            assert_eq!(restored.to_image(), image);
            for rev in 20..=ks.revision() {
                let req = RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    revision: rev,
                    ..Default::default()
                };
                assert_eq!(restored.range(&req), ks.range(&req));
            }
        }
    }

    #[test]
    fn invariant_breaks_are_errors() {
        let mut ks = Keyspace::new(2);
        ks.put(&PutRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .unwrap();
        let mut image = ks.to_image();
        image.keys.push(image.keys[0].clone());
        assert!(matches!(
            Keyspace::from_image(image.clone(), 2),
            Err(ImageError::KeysOutOfOrder(_))
        ));
        image.keys.pop();
        image.keys[0].versions[0].main = 99;
        assert!(matches!(
            Keyspace::from_image(image.clone(), 2),
            Err(ImageError::BadVersions(_))
        ));
        image.compact_revision = 5;
        assert!(matches!(
            Keyspace::from_image(image, 2),
            Err(ImageError::BadRevision { .. })
        ));
    }
}
