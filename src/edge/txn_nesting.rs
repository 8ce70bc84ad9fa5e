//! Measures how deeply a wire-encoded `TxnRequest` nests, without
//! recursion and before prost decodes it.
//!
//! etcd (grpc-go) decodes a txn nested 100,000 levels deep and then answers
//! `too many operations in txn request`; prost refuses anything nested
//! about 50 txns deep (its recursion limit), and without that limit deep
//! input could overflow the stack. So the edge scans first: up to
//! `--max-txn-ops` + 1 levels (bounded by [`TXN_NESTING_MAX`]) decode with
//! prost's recursion limit off; deeper input cannot pass etcd's op budget
//! (each level spends at least one op of its parent's budget) and is
//! answered `too many operations` without decoding.

/// Deepest txn nesting ever decoded, whatever `--max-txn-ops` says: keeps
/// recursive decode, validation and apply far inside a thread's stack.
pub const TXN_NESTING_MAX: usize = 256;

/// What the scan found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nesting {
    /// Nesting depth (1 for a txn without nested txns).
    Depth(usize),
    /// Deeper than the cap given to [`scan`].
    Deeper,
    /// Not valid protobuf (prost will say why).
    Malformed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Txn,
    Op,
    Other,
}

fn varint(buf: &[u8], pos: &mut usize, end: usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if *pos >= end {
            return None;
        }
        let b = buf[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Scans `msg` (a `TxnRequest`) and reports its nesting depth, stopping as
/// soon as it exceeds `cap`. Memory is bounded by `cap`.
#[must_use]
pub fn scan(msg: &[u8], cap: usize) -> Nesting {
    // (end offset, kind) of the messages we are inside.
    let mut stack: Vec<(usize, Kind)> = vec![(msg.len(), Kind::Txn)];
    let mut depth = 1usize;
    let mut max = 1usize;
    let mut pos = 0usize;
    while let Some(&(end, kind)) = stack.last() {
        if pos == end {
            stack.pop();
            if kind == Kind::Txn {
                depth -= 1;
            }
            continue;
        }
        let Some(key) = varint(msg, &mut pos, end) else {
            return Nesting::Malformed;
        };
        let field = key >> 3;
        match key & 7 {
            0 => {
                if varint(msg, &mut pos, end).is_none() {
                    return Nesting::Malformed;
                }
            }
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                if end - pos < n {
                    return Nesting::Malformed;
                }
                pos += n;
            }
            2 => {
                let Some(len) = varint(msg, &mut pos, end) else {
                    return Nesting::Malformed;
                };
                let Ok(len) = usize::try_from(len) else {
                    return Nesting::Malformed;
                };
                if len > end - pos {
                    return Nesting::Malformed;
                }
                let sub_end = pos + len;
                // TxnRequest: 2 success, 3 failure (RequestOp);
                // RequestOp: 4 request_txn (TxnRequest).
                let child = match (kind, field) {
                    (Kind::Txn, 2 | 3) => Kind::Op,
                    (Kind::Op, 4) => Kind::Txn,
                    _ => Kind::Other,
                };
                if child == Kind::Other {
                    pos = sub_end;
                } else {
                    if child == Kind::Txn {
                        depth += 1;
                        if depth > cap {
                            return Nesting::Deeper;
                        }
                        max = max.max(depth);
                    }
                    stack.push((sub_end, child));
                }
            }
            _ => return Nesting::Malformed,
        }
    }
    Nesting::Depth(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::etcdserverpb::{
        request_op::Request, Compare, PutRequest, RequestOp, TxnRequest,
    };
    use prost::Message;

    fn nested(levels: usize) -> TxnRequest {
        let mut t = TxnRequest {
            compare: vec![Compare {
                key: b"k".to_vec(),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b"p".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        for i in 1..levels {
            let op = RequestOp {
                request: Some(Request::RequestTxn(t)),
            };
            t = TxnRequest {
                compare: Vec::new(),
                success: if i % 2 == 0 {
                    vec![op.clone()]
                } else {
                    Vec::new()
                },
                failure: if i % 2 == 1 { vec![op] } else { Vec::new() },
            };
        }
        t
    }

    #[test]
    fn measures_depth_in_both_branches() {
        for levels in [1, 2, 3, 50, 129] {
            let bytes = nested(levels).encode_to_vec();
            assert_eq!(scan(&bytes, 1000), Nesting::Depth(levels));
        }
        assert_eq!(scan(&[], 10), Nesting::Depth(1));
    }

    #[test]
    fn stops_past_the_cap() {
        let bytes = nested(300).encode_to_vec();
        assert_eq!(scan(&bytes, 129), Nesting::Deeper);
        assert_eq!(scan(&bytes, 300), Nesting::Depth(300));
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let bytes = nested(5).encode_to_vec();
        for cut in 1..bytes.len() {
            let r = scan(&bytes[..cut], 100);
            assert!(matches!(r, Nesting::Malformed | Nesting::Depth(_)), "{r:?}");
        }
        assert_eq!(scan(&[0xff; 11], 10), Nesting::Malformed);
        assert_eq!(scan(&[0x13], 10), Nesting::Malformed); // group wire type
                                                           // A length running past the end.
        assert_eq!(scan(&[0x12, 0x05, 0x00], 10), Nesting::Malformed);
    }
}
