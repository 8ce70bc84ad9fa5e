//! Request checks that etcd's gRPC layer runs before proposing
//! (`api/v3rpc/key.go`). They look at the request only, never at the store,
//! so the edge runs them and a rejected request never reaches the Raft log.

use crate::KvError;
use ferrocd_proto::etcdserverpb::{
    request_op::Request, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use std::collections::HashSet;

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS_DEFAULT: usize = 128;

/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const MAX_REQUEST_BYTES_DEFAULT: usize = 1536 * 1024;

/// Extra room gRPC's receive limit gets above `--max-request-bytes`
/// (`grpcOverheadBytes`): messages between the two get etcd's
/// `request is too large`, bigger ones gRPC's own ResourceExhausted.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Checks a Range request.
///
/// # Errors
/// `EmptyKey`.
pub fn check_range(r: &RangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// Checks a Put request.
///
/// # Errors
/// `EmptyKey`, `ValueProvided` (`ignore_value` with a value), `LeaseProvided`
/// (`ignore_lease` with a lease), in that order.
pub fn check_put(r: &PutRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// Checks a DeleteRange request.
///
/// # Errors
/// `EmptyKey`.
pub fn check_delete_range(r: &DeleteRangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// Checks a Txn request: sizes and every op recursively, then duplicate
/// writes in the success and the failure branch.
///
/// # Errors
/// `TooManyOps`, `EmptyKey`, `ValueProvided`, `LeaseProvided`, `KeyNotFound`
/// (an op with no request), `DuplicateKey`.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), KvError> {
    check_txn_shape(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_shape(r: &TxnRequest, max_txn_ops: usize) -> Result<(), KvError> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_txn_ops {
        return Err(KvError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    // etcd hands nested txns what is left of the budget (`maxTxnOps - opc`).
    for op in r.success.iter().chain(&r.failure) {
        check_op(op, max_txn_ops - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), KvError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete_range(r),
        Some(Request::RequestTxn(r)) => check_txn_shape(r, max_txn_ops),
        None => Err(KvError::KeyNotFound),
    }
}

/// A delete interval compared the way etcd's `adt` string intervals compare:
/// literally, so a from-key delete (`range_end = "\0"`) is an interval that
/// ends below its start and intersects nothing. Reproducing that quirk keeps
/// our accept/reject decisions identical to etcd's.
struct DeleteInterval {
    start: Vec<u8>,
    /// `None` for a point.
    end: Option<Vec<u8>>,
}

impl DeleteInterval {
    fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.start.as_slice(),
            Some(end) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }
}

type Writes = (HashSet<Vec<u8>>, Vec<DeleteInterval>);

/// etcd's `checkIntervals`: within one branch (and the branches nested in
/// it) a key may be put once and may not be put inside a deleted range; the
/// then/else branches of one nested txn are exclusive, so they may overlap.
fn check_intervals(reqs: &[RequestOp]) -> Result<Writes, KvError> {
    let mut dels: Vec<DeleteInterval> = reqs
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(DeleteInterval {
                start: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    let deleted = |dels: &[DeleteInterval], key: &[u8]| dels.iter().any(|d| d.contains(key));

    for op in reqs {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(KvError::DuplicateKey);
            }
        }
        puts.extend(puts_then.iter().cloned());
        for k in puts_else {
            if (puts.contains(&k) && !puts_then.contains(&k)) || deleted(&dels, &k) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }

    for op in reqs {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(KvError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::etcdserverpb::Compare;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }
    fn nested(t: TxnRequest) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(t)),
        }
    }

    #[test]
    fn put_checks_in_etcd_order() {
        let mut p = PutRequest::default();
        assert_eq!(check_put(&p), Err(KvError::EmptyKey));
        p.key = b"k".to_vec();
        p.ignore_value = true;
        p.value = b"v".to_vec();
        p.ignore_lease = true;
        p.lease = 7;
        assert_eq!(check_put(&p), Err(KvError::ValueProvided));
        p.value.clear();
        assert_eq!(check_put(&p), Err(KvError::LeaseProvided));
        p.lease = 0;
        assert_eq!(check_put(&p), Ok(()));
    }

    #[test]
    fn too_many_ops_counts_the_longest_list() {
        let t = txn(vec![put("a"), put("b"), put("c")], vec![]);
        assert_eq!(check_txn(&t, 2), Err(KvError::TooManyOps));
        assert_eq!(check_txn(&t, 3), Ok(()));
        let mut t = txn(vec![], vec![]);
        t.compare = vec![Compare::default(); 3];
        assert_eq!(check_txn(&t, 2), Err(KvError::TooManyOps));
        assert_eq!(check_txn(&t, 3), Err(KvError::EmptyKey));
    }

    #[test]
    fn nested_txns_get_the_remaining_budget() {
        let get = |k: &str| RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: k.into(),
                ..Default::default()
            })),
        };
        let inner = txn(vec![get("a"), get("b"), get("c"), get("d")], vec![]);
        let outer = txn(vec![nested(inner)], vec![]);
        // The outer txn uses 1 of 4, leaving 3 for the nested one's 4 ops.
        assert_eq!(check_txn(&outer, 4), Err(KvError::TooManyOps));
        assert_eq!(check_txn(&outer, 5), Ok(()));
    }

    #[test]
    fn empty_op_is_key_not_found() {
        let t = txn(vec![RequestOp { request: None }], vec![]);
        assert_eq!(check_txn(&t, 128), Err(KvError::KeyNotFound));
    }

    #[test]
    fn duplicates() {
        let dup = |t: TxnRequest| check_txn(&t, 128);
        assert_eq!(
            dup(txn(vec![put("a"), put("a")], vec![])),
            Err(KvError::DuplicateKey)
        );
        // The two branches of one txn are independent.
        assert_eq!(dup(txn(vec![put("a")], vec![put("a")])), Ok(()));
        // A put inside a deleted range, either order.
        assert_eq!(
            dup(txn(vec![put("b"), del("a", "c")], vec![])),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(
            dup(txn(vec![del("b", ""), put("b")], vec![])),
            Err(KvError::DuplicateKey)
        );
        // Overlapping deletes are fine.
        assert_eq!(dup(txn(vec![del("a", "c"), del("b", "d")], vec![])), Ok(()));
        // A from-key delete compares literally and conflicts with nothing.
        assert_eq!(dup(txn(vec![del("a", "\0"), put("b")], vec![])), Ok(()));
        // Nested then/else may both write a key; the parent may not.
        let inner = txn(vec![put("x")], vec![put("x")]);
        assert_eq!(dup(txn(vec![nested(inner.clone())], vec![])), Ok(()));
        assert_eq!(
            dup(txn(vec![nested(inner.clone()), put("x")], vec![])),
            Err(KvError::DuplicateKey)
        );
        // A nested delete covers a parent put.
        let inner_del = txn(vec![del("x", "")], vec![]);
        assert_eq!(
            dup(txn(vec![put("x"), nested(inner_del)], vec![])),
            Err(KvError::DuplicateKey)
        );
        // Two sibling nested txns writing one key.
        assert_eq!(
            dup(txn(vec![nested(inner.clone()), nested(inner)], vec![])),
            Err(KvError::DuplicateKey)
        );
    }
}
