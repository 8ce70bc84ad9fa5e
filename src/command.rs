//! Commands that go through the Raft log, and what applying them returns.
//!
//! An entry's data is one tag byte followed by the prost encoding of the
//! etcd request: the log stores client requests, never shard placement, so
//! a node can replay its log with any shard count.

use ferrocd_core::KvError;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, TxnRequest, TxnResponse,
};
use ferrocd_shards::Keyspace;
use prost::Message;

const TAG_PUT: u8 = 1;
const TAG_DELETE_RANGE: u8 = 2;
const TAG_TXN: u8 = 3;
const TAG_COMPACT: u8 = 4;
const TAG_LEASE_GRANT: u8 = 5;
const TAG_LEASE_REVOKE: u8 = 6;

/// A write request, as proposed.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// etcd `Put`.
    Put(PutRequest),
    /// etcd `DeleteRange`.
    DeleteRange(DeleteRangeRequest),
    /// etcd `Txn`.
    Txn(TxnRequest),
    /// etcd `Compact`.
    Compact(CompactionRequest),
    /// etcd `LeaseGrant`, with the id chosen and the TTL raised to the
    /// minimum by the proposer.
    LeaseGrant(LeaseGrantRequest),
    /// etcd `LeaseRevoke` (also proposed by the leader on expiry).
    LeaseRevoke(LeaseRevokeRequest),
}

/// The answer of an applied command.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// Answer to [`Command::Put`].
    Put(PutResponse),
    /// Answer to [`Command::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Answer to [`Command::Txn`].
    Txn(TxnResponse),
    /// Answer to [`Command::Compact`].
    Compact(CompactionResponse),
    /// Answer to [`Command::LeaseGrant`].
    LeaseGrant(LeaseGrantResponse),
    /// Answer to [`Command::LeaseRevoke`].
    LeaseRevoke(LeaseRevokeResponse),
}

/// A log entry that does not decode: the log is corrupt (we wrote it).
#[derive(Debug, thiserror::Error)]
#[error("raft entry data does not decode as a command: {0}")]
pub struct BadEntry(pub String);

impl Command {
    /// Entry data: tag byte + prost bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let (tag, len) = match self {
            Command::Put(r) => (TAG_PUT, r.encoded_len()),
            Command::DeleteRange(r) => (TAG_DELETE_RANGE, r.encoded_len()),
            Command::Txn(r) => (TAG_TXN, r.encoded_len()),
            Command::Compact(r) => (TAG_COMPACT, r.encoded_len()),
            Command::LeaseGrant(r) => (TAG_LEASE_GRANT, r.encoded_len()),
            Command::LeaseRevoke(r) => (TAG_LEASE_REVOKE, r.encoded_len()),
        };
        let mut out = Vec::with_capacity(1 + len);
        out.push(tag);
        match self {
            Command::Put(r) => r.encode_raw(&mut out),
            Command::DeleteRange(r) => r.encode_raw(&mut out),
            Command::Txn(r) => r.encode_raw(&mut out),
            Command::Compact(r) => r.encode_raw(&mut out),
            Command::LeaseGrant(r) => r.encode_raw(&mut out),
            Command::LeaseRevoke(r) => r.encode_raw(&mut out),
        }
        out
    }

    /// Inverse of [`Command::encode`].
    ///
    /// # Errors
    /// Unknown tag or undecodable body.
    pub fn decode(data: &[u8]) -> Result<Command, BadEntry> {
        let (&tag, body) = data.split_first().ok_or_else(|| BadEntry("empty".into()))?;
        let bad = |e: prost::DecodeError| BadEntry(e.to_string());
        Ok(match tag {
            TAG_PUT => Command::Put(PutRequest::decode(body).map_err(bad)?),
            TAG_DELETE_RANGE => {
                Command::DeleteRange(DeleteRangeRequest::decode(body).map_err(bad)?)
            }
            TAG_TXN => Command::Txn(TxnRequest::decode(body).map_err(bad)?),
            TAG_COMPACT => Command::Compact(CompactionRequest::decode(body).map_err(bad)?),
            TAG_LEASE_GRANT => Command::LeaseGrant(LeaseGrantRequest::decode(body).map_err(bad)?),
            TAG_LEASE_REVOKE => {
                Command::LeaseRevoke(LeaseRevokeRequest::decode(body).map_err(bad)?)
            }
            t => return Err(BadEntry(format!("unknown tag {t}"))),
        })
    }

    /// Size etcd compares with `--max-request-bytes`: the marshalled
    /// `InternalRaftRequest` holding the request (field tag, length, body)
    /// and a `RequestHeader` whose id etcd's generator makes from the low 16
    /// bits of the member id, a millisecond timestamp and a counter
    /// (`pkg/idutil`: `member16 << 48 | ms40 << 8 | cnt8`).
    #[must_use]
    pub fn raft_request_bytes(&self, member_id: u64) -> usize {
        let body = match self {
            Command::Put(r) => r.encoded_len(),
            Command::DeleteRange(r) => r.encoded_len(),
            Command::Txn(r) => r.encoded_len(),
            Command::Compact(r) => r.encoded_len(),
            Command::LeaseGrant(r) => r.encoded_len(),
            Command::LeaseRevoke(r) => r.encoded_len(),
        };
        1 + prost::encoding::encoded_len_varint(body as u64) + body + header_bytes(member_id)
    }
    /// Applies the command to the keyspace (in log order).
    ///
    /// # Errors
    /// The etcd errors a write can meet at apply time (compacted or future
    /// revisions in a txn's ranges, an unknown lease, ...). An error changes
    /// nothing.
    pub fn apply(&self, ks: &mut Keyspace) -> Result<Applied, KvError> {
        Ok(match self {
            Command::Put(r) => Applied::Put(ks.put(r)?),
            Command::DeleteRange(r) => Applied::DeleteRange(ks.delete_range(r)?),
            Command::Txn(r) => Applied::Txn(ks.txn(r)?),
            Command::Compact(r) => Applied::Compact(ks.compact(r)?),
            Command::LeaseGrant(r) => Applied::LeaseGrant(ks.lease_grant(r.id, r.ttl)?),
            Command::LeaseRevoke(r) => Applied::LeaseRevoke(ks.lease_revoke(r.id)?),
        })
    }
}

/// Encoded size of `header: RequestHeader { ID }` (field 100) inside etcd's
/// `InternalRaftRequest`: 2-byte tag, 1-byte length, 1-byte id tag, id.
fn header_bytes(member_id: u64) -> usize {
    let member16 = member_id & 0xffff;
    // Highest possible id bit: the member bits, else the 40-bit timestamp.
    let id_bits = if member16 == 0 {
        48
    } else {
        48 + (64 - member16.leading_zeros() as usize)
    };
    2 + 1 + 1 + id_bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let cmds = [
            Command::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            }),
            Command::DeleteRange(DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: b"z".to_vec(),
                prev_kv: true,
            }),
            Command::Txn(TxnRequest::default()),
            Command::Compact(CompactionRequest {
                revision: 7,
                physical: true,
            }),
            Command::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 9 }),
            Command::LeaseRevoke(LeaseRevokeRequest { id: 9 }),
        ];
        for c in cmds {
            assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&[9, 1, 2]).is_err());
        assert!(Command::decode(&[TAG_PUT, 0xff, 0xff]).is_err());
    }

    #[test]
    fn request_size_grows_with_the_value() {
        let small = Command::Put(PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        });
        let big = Command::Put(PutRequest {
            key: b"k".to_vec(),
            value: vec![0; 1000],
            ..Default::default()
        });
        assert!(big.raft_request_bytes(1) >= small.raft_request_bytes(1) + 1000);
    }

    #[test]
    fn request_id_width_follows_the_member_id_as_etcd_generates_it() {
        // etcd's id: member16 << 48 | ms40 << 8 | cnt8, as a varint.
        assert_eq!(header_bytes(0x0000_0000_0000_e94d), 4 + 10); // bit 15 set: 64 bits
        assert_eq!(header_bytes(0x8e9e_05c5_2164_694d), 4 + 9); // etcd's default member: 63 bits
        assert_eq!(header_bytes(0xbdae_9bbc_11dd_390d), 4 + 9); // 0x390d: 62 bits
        assert_eq!(header_bytes(0x0000_0000_0000_00ff), 4 + 8); // 56 bits
        assert_eq!(header_bytes(0x1234_0000_0000_0000), 4 + 7); // timestamp only
    }
}
