//! Leases as replicated state: which leases exist, their granted TTL, and
//! which keys are attached (a key is attached to the lease of its latest
//! version). Grant and revoke are applied in log order like any write;
//! *when* a lease expires is not state: the leader's runtime decides and
//! proposes the revoke, so every member deletes the same keys at the same
//! revision.

use crate::Keyspace;
use ferrocd_core::KvError;
use ferrocd_proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantResponse, LeaseRevokeResponse, ResponseHeader,
};
use std::collections::BTreeSet;

/// etcd's `MaxLeaseTTL` (seconds).
pub const LEASE_TTL_MAX_S: i64 = 9_000_000_000;

/// One lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseEntry {
    /// Granted TTL in seconds (after raising to the minimum).
    pub ttl_s: i64,
    /// Attached keys.
    pub keys: BTreeSet<Vec<u8>>,
}

impl Keyspace {
    /// LeaseGrant: `ttl_s` is already raised to the cluster's minimum by
    /// the proposer (it depends on `--election-timeout`).
    ///
    /// # Errors
    /// `LeaseTtlTooLarge`, `LeaseExists`.
    pub fn lease_grant(&mut self, id: i64, ttl_s: i64) -> Result<LeaseGrantResponse, KvError> {
        if ttl_s > LEASE_TTL_MAX_S {
            return Err(KvError::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(KvError::LeaseExists);
        }
        self.leases.insert(
            id,
            LeaseEntry {
                ttl_s,
                keys: BTreeSet::new(),
            },
        );
        Ok(LeaseGrantResponse {
            header: Some(ResponseHeader {
                revision: self.revision(),
                ..Default::default()
            }),
            id,
            ttl: ttl_s,
            error: String::new(),
        })
    }

    /// LeaseRevoke: deletes every attached key in one revision (delete
    /// events in key order), then forgets the lease.
    ///
    /// # Errors
    /// `LeaseNotFound`.
    pub fn lease_revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse, KvError> {
        let Some(lease) = self.leases.get(&id) else {
            return Err(KvError::LeaseNotFound);
        };
        let keys: Vec<Vec<u8>> = lease.keys.iter().cloned().collect();
        if !keys.is_empty() {
            let mut exec = self.begin_write();
            for key in &keys {
                self.exec_delete(
                    &DeleteRangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    },
                    &mut exec,
                );
            }
            self.end_write(&exec);
        }
        self.leases.remove(&id);
        Ok(LeaseRevokeResponse {
            header: Some(ResponseHeader {
                revision: self.revision(),
                ..Default::default()
            }),
        })
    }

    /// A lease, if it exists.
    #[must_use]
    pub fn lease(&self, id: i64) -> Option<&LeaseEntry> {
        self.leases.get(&id)
    }

    /// Every lease with its granted TTL, in no particular order.
    pub fn leases(&self) -> impl Iterator<Item = (i64, &LeaseEntry)> + '_ {
        self.leases.iter().map(|(id, l)| (*id, l))
    }

    /// Moves `key` from lease `from` to lease `to` (0 = none).
    pub(crate) fn reattach(&mut self, key: &[u8], from: i64, to: i64) {
        if from == to {
            return;
        }
        if from != 0 {
            if let Some(l) = self.leases.get_mut(&from) {
                l.keys.remove(key);
            }
        }
        if to != 0 {
            if let Some(l) = self.leases.get_mut(&to) {
                l.keys.insert(key.to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::etcdserverpb::{PutRequest, RangeRequest};

    fn put(ks: &mut Keyspace, k: &str, lease: i64) -> Result<i64, KvError> {
        ks.put(&PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        })
        .map(|r| r.header.unwrap().revision)
    }

    #[test]
    fn grant_attach_move_revoke() {
        for shards in [1, 3] {
            let mut ks = Keyspace::new(shards);
            assert_eq!(put(&mut ks, "a", 7), Err(KvError::LeaseNotFound));
            assert_eq!(ks.lease_grant(7, 10).unwrap().ttl, 10);
            assert_eq!(ks.lease_grant(7, 10), Err(KvError::LeaseExists));
            assert_eq!(
                ks.lease_grant(8, LEASE_TTL_MAX_S + 1),
                Err(KvError::LeaseTtlTooLarge)
            );
            ks.lease_grant(8, 5).unwrap();
            put(&mut ks, "a", 7).unwrap(); // 2
            put(&mut ks, "b", 7).unwrap(); // 3
            put(&mut ks, "c", 7).unwrap(); // 4
            put(&mut ks, "c", 8).unwrap(); // 5: moves c to lease 8
            ks.delete_range(&DeleteRangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            })
            .unwrap(); // 6: b detached
            put(&mut ks, "d", 7).unwrap(); // 7
            let keys: Vec<&[u8]> = ks
                .lease(7)
                .unwrap()
                .keys
                .iter()
                .map(Vec::as_slice)
                .collect();
            assert_eq!(keys, [&b"a"[..], b"d"]);
            ks.take_events();
            let r = ks.lease_revoke(7).unwrap();
            assert_eq!(r.header.unwrap().revision, 8, "one revision for all keys");
            let evs = ks.take_events();
            assert_eq!(evs.len(), 2);
            assert!(ks.lease(7).is_none());
            let all = ks
                .range(&RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..Default::default()
                })
                .unwrap();
            let left: Vec<&[u8]> = all.kvs.iter().map(|kv| kv.key.as_slice()).collect();
            assert_eq!(left, [&b"c"[..]]);
            assert_eq!(ks.lease_revoke(7), Err(KvError::LeaseNotFound));
            // Revoking lease 8 deletes c, its only key.
            assert_eq!(ks.lease_revoke(8).unwrap().header.unwrap().revision, 9);
            let img = ks.to_image();
            let back = Keyspace::from_image(img, shards).unwrap();
            assert!(back.lease(8).is_none());
        }
    }

    #[test]
    fn image_keeps_ttls_and_attachments() {
        let mut ks = Keyspace::new(2);
        ks.lease_grant(1, 30).unwrap();
        ks.lease_grant(2, 60).unwrap();
        put(&mut ks, "x", 1).unwrap();
        put(&mut ks, "y", 2).unwrap();
        put(&mut ks, "y", 0).unwrap();
        let back = Keyspace::from_image(ks.to_image(), 5).unwrap();
        assert_eq!(back.lease(1), ks.lease(1));
        assert_eq!(back.lease(2), ks.lease(2));
        assert_eq!(back.lease(2).unwrap().keys.len(), 0);
    }
}
