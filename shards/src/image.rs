//! The keyspace as plain data, for snapshot files.
//!
//! An image is an [`ImageHead`] (revision, compaction point, leases) and
//! chunks of [`KeyImage`]s (every indexed key once, with all its retained
//! versions; no order across chunks). A snapshot file stores the head and
//! each chunk as separate rkyv archives, so a keyspace of a million keys is
//! written as it is copied and loaded a chunk at a time
//! ([`KeyspaceLoader`]), never held as a second whole copy. It does not
//! record shard placement, so an image taken with N shards restores into
//! any shard count. Loading validates each archive (bytecheck) and then
//! re-checks the invariants the in-memory structures rely on.

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

/// Everything in an image but the keys: frame 0 of a snapshot file.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ImageHead {
    /// Current revision.
    pub revision: i64,
    /// Compaction point (-1 if never compacted).
    pub compact_revision: i64,
    /// Leases: (id, granted TTL in seconds), by id. Attached keys follow
    /// from the keys' latest versions.
    pub leases: Vec<(i64, i64)>,
}

/// A chunk of keys: each later frame of a snapshot file.
pub type KeyChunk = Vec<KeyImage>;

/// A whole keyspace in memory, keys in key order (tests and small tools;
/// snapshots stream [`ImageHead`] and [`KeyChunk`]s instead).
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
    /// A key listed twice.
    #[error("snapshot image: key {0:?} listed twice")]
    DuplicateKey(Vec<u8>),
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

/// Why a chunked image was abandoned.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a compaction to {now} ran while the image at compaction point {started} was copied")]
pub struct ImageCompacted {
    /// Compaction point when the image started.
    pub started: i64,
    /// Compaction point now.
    pub now: i64,
}

/// Where a shard's walk stands.
#[derive(Clone, Debug)]
enum Cursor {
    Start,
    After(Vec<u8>),
    Done,
}

/// An image of the keyspace at one revision, copied a chunk of keys at a
/// time while writes go on, so that the writer waits for one chunk, not
/// for a copy of every key.
///
/// Why the pieces add up to one consistent image: writes after the
/// image's revision `R` only add versions above `R` (a put or a delete
/// appends; a new key has nothing at or below `R`), so each key's
/// versions at or below `R` stay exactly what they were at `R`. Only a
/// compaction removes versions; the builder notices it (the compaction
/// point moved) and the caller starts over. Leases are copied when the
/// builder starts (they are small and change outside MVCC).
///
/// Worked example, chunks of one key: at R = 3 the store holds a@2 and
/// b@3. Chunk 1 copies a@2. A client then puts b@4 and c@5. Chunk 2
/// copies b's versions at or below 3 (b@3, not b@4); chunk 3 finds c with
/// nothing at or below 3 and skips it. The image is {a@2, b@3} at
/// revision 3, the same as a copy of everything at R.
///
/// Copied keys accumulate until [`ImageBuilder::take_keys`] drains them (a
/// snapshot writes each chunk out as it goes) or [`ImageBuilder::finish`]
/// gathers the whole image.
#[derive(Debug)]
pub struct ImageBuilder {
    revision: i64,
    compact_revision: i64,
    leases: Vec<(i64, i64)>,
    cursors: Vec<Cursor>,
    keys: Vec<KeyImage>,
}

fn version_image(v: &Version) -> VersionImage {
    VersionImage {
        main: v.rev.main,
        sub: v.rev.sub,
        create_revision: v.create_revision,
        version: v.version,
        lease: v.lease,
        value: v.value.to_vec(),
    }
}

impl ImageBuilder {
    /// The revision the image captures.
    #[must_use]
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Everything but the keys, as captured at the start.
    #[must_use]
    pub fn head(&self) -> ImageHead {
        ImageHead {
            revision: self.revision,
            compact_revision: self.compact_revision,
            leases: self.leases.clone(),
        }
    }

    /// Drains the keys copied since the last call (in no particular order
    /// across calls).
    pub fn take_keys(&mut self) -> KeyChunk {
        std::mem::take(&mut self.keys)
    }

    /// Copies up to `keys_max` more keys of `ks` (the keyspace the builder
    /// started from, possibly written to since). Returns true once every
    /// key is copied.
    ///
    /// # Errors
    /// [`ImageCompacted`] when a compaction ran since the start: the image
    /// can no longer be completed; start a new one.
    ///
    /// # Panics
    /// If `ks` has a different shard count (not the keyspace it started
    /// from) or its revision went backwards.
    pub fn add_chunk(&mut self, ks: &Keyspace, keys_max: usize) -> Result<bool, ImageCompacted> {
        assert_eq!(ks.shards().len(), self.cursors.len(), "another keyspace");
        assert!(ks.revision() >= self.revision, "revision went backwards");
        if ks.compact_revision() != self.compact_revision {
            return Err(ImageCompacted {
                started: self.compact_revision,
                now: ks.compact_revision(),
            });
        }
        let mut budget = keys_max;
        for (shard, cursor) in ks.shards().iter().zip(self.cursors.iter_mut()) {
            if budget == 0 {
                break;
            }
            let after = match cursor {
                Cursor::Done => continue,
                Cursor::Start => None,
                Cursor::After(k) => Some(k.as_slice()),
            };
            let mut last = None;
            let mut walk = shard.iter_after(after);
            for (key, index) in walk.by_ref().take(budget) {
                budget -= 1;
                last = Some(key);
                let versions: Vec<VersionImage> = index
                    .versions()
                    .iter()
                    .take_while(|v| v.rev.main <= self.revision)
                    .map(version_image)
                    .collect();
                if !versions.is_empty() {
                    self.keys.push(KeyImage {
                        key: key.to_vec(),
                        versions,
                    });
                }
            }
            *cursor = match (last, walk.next()) {
                (_, None) => Cursor::Done,
                (Some(k), Some(_)) => Cursor::After(k.to_vec()),
                (None, Some(_)) => cursor.clone(),
            };
        }
        Ok(self.cursors.iter().all(|c| matches!(c, Cursor::Done)))
    }

    /// The image, once [`ImageBuilder::add_chunk`] returned true.
    ///
    /// # Panics
    /// If keys remain to be copied.
    #[must_use]
    pub fn finish(self) -> KeyspaceImage {
        assert!(
            self.cursors.iter().all(|c| matches!(c, Cursor::Done)),
            "image finished before every key was copied"
        );
        let mut keys = self.keys;
        keys.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        KeyspaceImage {
            revision: self.revision,
            compact_revision: self.compact_revision,
            keys,
            leases: self.leases,
        }
    }
}

impl Keyspace {
    /// Starts an image of the keyspace as it is now (see [`ImageBuilder`]).
    #[must_use]
    pub fn image_builder(&self) -> ImageBuilder {
        let mut leases: Vec<(i64, i64)> = self.leases().map(|(id, l)| (id, l.ttl_s)).collect();
        leases.sort_unstable();
        ImageBuilder {
            revision: self.revision(),
            compact_revision: self.compact_revision(),
            leases,
            cursors: vec![Cursor::Start; self.shards().len()],
            keys: Vec::new(),
        }
    }

    /// Captures the keyspace as an image, all at once.
    #[must_use]
    pub fn to_image(&self) -> KeyspaceImage {
        let mut b = self.image_builder();
        let done = b
            .add_chunk(self, usize::MAX)
            .expect("nothing ran in between");
        assert!(done, "one unbounded chunk copies every key");
        b.finish()
    }

    /// Rebuilds a keyspace of `shard_count` shards from a whole image.
    ///
    /// # Errors
    /// When the image breaks an invariant (see [`KeyspaceLoader`]).
    pub fn from_image(image: KeyspaceImage, shard_count: u16) -> Result<Keyspace, ImageError> {
        let KeyspaceImage {
            revision,
            compact_revision,
            keys,
            leases,
        } = image;
        let mut loader = KeyspaceLoader::new(
            ImageHead {
                revision,
                compact_revision,
                leases,
            },
            shard_count,
        )?;
        for KeyImage { key, versions } in keys {
            let versions = versions
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
            loader.add_key(key, versions)?;
        }
        Ok(loader.finish())
    }
}

/// Rebuilds a keyspace from an image's head and then its chunks, one at a
/// time, checking every invariant the in-memory structures rely on: a
/// corrupt but checksum-valid snapshot must not become a corrupt store.
#[derive(Debug)]
pub struct KeyspaceLoader {
    ks: Keyspace,
}

impl KeyspaceLoader {
    /// Starts from the head.
    ///
    /// # Errors
    /// [`ImageError::BadRevision`] when revision and compaction point are
    /// inconsistent.
    pub fn new(head: ImageHead, shard_count: u16) -> Result<KeyspaceLoader, ImageError> {
        let ImageHead {
            revision,
            compact_revision,
            leases,
        } = head;
        if revision < 1 || compact_revision < -1 || compact_revision > revision {
            return Err(ImageError::BadRevision {
                revision,
                compact_revision,
            });
        }
        Ok(KeyspaceLoader {
            ks: Keyspace::resume(shard_count, revision, compact_revision, leases),
        })
    }

    /// Adds one key with its versions.
    ///
    /// # Errors
    /// A key listed twice; versions empty, out of order or above the
    /// image's revision.
    pub fn add_key(&mut self, key: Vec<u8>, versions: Vec<Version>) -> Result<(), ImageError> {
        let revision = self.ks.revision();
        let ordered = versions.windows(2).all(|w| w[0].rev < w[1].rev);
        let in_range = versions
            .iter()
            .all(|v| v.rev.main >= 1 && v.rev.main <= revision);
        if versions.is_empty() || !ordered || !in_range {
            return Err(ImageError::BadVersions(key));
        }
        self.ks
            .restore_key(key, KeyIndex::from_versions(versions))
            .map_err(ImageError::DuplicateKey)
    }

    /// Adds every key of an archived chunk, copying each value once.
    ///
    /// # Errors
    /// As [`KeyspaceLoader::add_key`].
    pub fn add_archived(
        &mut self,
        chunk: &rkyv::vec::ArchivedVec<ArchivedKeyImage>,
    ) -> Result<(), ImageError> {
        for k in chunk.iter() {
            let versions = k
                .versions
                .iter()
                .map(|v| Version {
                    rev: Rev {
                        main: v.main.to_native(),
                        sub: v.sub.to_native(),
                    },
                    create_revision: v.create_revision.to_native(),
                    version: v.version.to_native(),
                    lease: v.lease.to_native(),
                    value: Bytes::copy_from_slice(v.value.as_slice()),
                })
                .collect();
            self.add_key(k.key.as_slice().to_vec(), versions)?;
        }
        Ok(())
    }

    /// The keyspace.
    #[must_use]
    pub fn finish(self) -> Keyspace {
        self.ks
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

    fn put(ks: &mut Keyspace, key: &[u8], value: &[u8], lease: i64) {
        ks.put(&PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn a_chunked_image_equals_a_copy_taken_at_its_revision() {
        for chunk in [1, 3, 7, 1000] {
            let mut ks = Keyspace::new(3);
            ks.lease_grant(7, 60).unwrap();
            for i in 0..40u8 {
                put(
                    &mut ks,
                    &[b'k', i % 23],
                    &[i],
                    if i % 5 == 0 { 7 } else { 0 },
                );
            }
            ks.delete_range(&DeleteRangeRequest {
                key: vec![b'k', 4],
                ..Default::default()
            })
            .unwrap();
            ks.compact(&CompactionRequest {
                revision: 10,
                physical: false,
            })
            .unwrap();
            let at_start = ks.clone().to_image();
            let mut b = ks.image_builder();
            let mut round = 0u8;
            while !b.add_chunk(&ks, chunk).unwrap() {
                // Writes between chunks: overwrites, new keys (before and
                // after the cursors), deletes, lease changes.
                round = round.wrapping_add(1);
                put(&mut ks, &[b'k', round % 30], b"later", 0);
                put(&mut ks, &[b'a', round], b"new", 0);
                put(&mut ks, &[b'z', round], b"new", 0);
                ks.delete_range(&DeleteRangeRequest {
                    key: vec![b'k', round.wrapping_mul(7) % 23],
                    ..Default::default()
                })
                .unwrap();
                if round == 2 {
                    ks.lease_revoke(7).unwrap();
                    ks.lease_grant(8, 30).unwrap();
                }
            }
            assert!(round > 0 || chunk == 1000);
            assert_eq!(b.finish(), at_start, "chunk {chunk}");
        }
    }

    #[test]
    fn a_streamed_image_loads_chunk_by_chunk_through_rkyv() {
        let mut ks = Keyspace::new(3);
        ks.lease_grant(9, 60).unwrap();
        for i in 0..200u32 {
            let key = format!("k{:03}", i % 70);
            put(
                &mut ks,
                key.as_bytes(),
                &i.to_le_bytes(),
                if i % 9 == 0 { 9 } else { 0 },
            );
        }
        ks.compact(&CompactionRequest {
            revision: 50,
            physical: false,
        })
        .unwrap();
        let mut b = ks.image_builder();
        let head = rkyv::to_bytes::<rkyv::rancor::Error>(&b.head()).unwrap();
        let mut chunks = Vec::new();
        loop {
            let done = b.add_chunk(&ks, 16).unwrap();
            let keys = b.take_keys();
            assert!(keys.len() <= 16);
            chunks.push(rkyv::to_bytes::<rkyv::rancor::Error>(&keys).unwrap());
            if done {
                break;
            }
        }
        assert!(chunks.len() >= 5);
        let head = rkyv::access::<ArchivedImageHead, rkyv::rancor::Error>(&head).unwrap();
        let head: ImageHead = rkyv::deserialize::<_, rkyv::rancor::Error>(head).unwrap();
        for shards in [1, 4] {
            let mut loader = KeyspaceLoader::new(head.clone(), shards).unwrap();
            for c in &chunks {
                let c = rkyv::access::<rkyv::Archived<KeyChunk>, rkyv::rancor::Error>(c).unwrap();
                loader.add_archived(c).unwrap();
            }
            let restored = loader.finish();
            assert_eq!(restored.to_image(), ks.to_image());
            let attached = |k: &Keyspace| {
                let mut v: Vec<Vec<u8>> = k
                    .leases()
                    .flat_map(|(_, l)| l.keys.iter().cloned())
                    .collect();
                v.sort();
                v
            };
            assert_eq!(attached(&restored), attached(&ks));
            assert!(!attached(&ks).is_empty());
            // The same chunk twice lists its keys twice.
            let mut loader = KeyspaceLoader::new(head.clone(), shards).unwrap();
            let c =
                rkyv::access::<rkyv::Archived<KeyChunk>, rkyv::rancor::Error>(&chunks[0]).unwrap();
            loader.add_archived(c).unwrap();
            assert!(matches!(
                loader.add_archived(c),
                Err(ImageError::DuplicateKey(_))
            ));
        }
    }

    #[test]
    fn a_compaction_mid_image_abandons_it() {
        let mut ks = Keyspace::new(2);
        for i in 0..10u8 {
            put(&mut ks, &[i], b"v", 0);
        }
        let mut b = ks.image_builder();
        assert!(!b.add_chunk(&ks, 2).unwrap());
        ks.compact(&CompactionRequest {
            revision: 5,
            physical: false,
        })
        .unwrap();
        assert_eq!(
            b.add_chunk(&ks, 2),
            Err(ImageCompacted {
                started: -1,
                now: 5
            })
        );
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
            Err(ImageError::DuplicateKey(_))
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
