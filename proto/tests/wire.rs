//! Wire-format tests: round trips for representative messages, and pinned
//! field numbers (checked against etcd v3.6's `rpc.proto`, `kv.proto`) for
//! the fields whose numbers matter most for compatibility.

use ferrocd_proto::authpb;
use ferrocd_proto::etcdserverpb::{
    compare, range_request, request_op, response_op, watch_create_request, watch_request, Compare,
    DowngradeInfo, LeaseKeepAliveRequest, LeaseKeepAliveResponse, Member, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, StatusResponse, TxnRequest,
    TxnResponse, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use ferrocd_proto::mvccpb::{event::EventType, Event, KeyValue};
use ferrocd_proto::prost::Message;

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

const VARINT: u64 = 0;
const LEN: u64 = 2;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Expected encoding of a single varint field.
fn varint_field(field: u64, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, (field << 3) | VARINT);
    put_varint(&mut out, value);
    out
}

/// Expected encoding of a single length-delimited field.
fn len_field(field: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, (field << 3) | LEN);
    put_varint(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M) {
    let bytes = msg.encode_to_vec();
    assert_eq!(bytes.len(), msg.encoded_len());
    let back = M::decode(bytes.as_slice()).expect("decode");
    assert_eq!(&back, msg);
}

fn header() -> ResponseHeader {
    ResponseHeader {
        cluster_id: 0x1234_5678_9abc_def0,
        member_id: 42,
        revision: 1_000_000,
        raft_term: 7,
    }
}

fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        create_revision: rev - 1,
        mod_revision: rev,
        version: 2,
        value: value.as_bytes().to_vec(),
        lease: 0x7777,
    }
}

// ---------------------------------------------------------------------------
// round trips
// ---------------------------------------------------------------------------

#[test]
fn roundtrip_range_request_all_fields() {
    roundtrip(&RangeRequest {
        key: b"foo".to_vec(),
        range_end: b"fop".to_vec(),
        limit: 10,
        revision: 99,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Value as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
    });
}

#[test]
fn roundtrip_range_response() {
    roundtrip(&RangeResponse {
        header: Some(header()),
        kvs: vec![kv("a", "1", 5), kv("b", "2", 6)],
        more: true,
        count: 17,
    });
}

#[test]
fn roundtrip_nested_txn() {
    let inner = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::NotEqual as i32,
            target: compare::CompareTarget::Lease as i32,
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::Lease(5)),
            range_end: b"z".to_vec(),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                prev_kv: true,
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let outer = TxnRequest {
        compare: vec![
            Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Value as i32,
                key: b"x".to_vec(),
                target_union: Some(compare::TargetUnion::Value(b"y".to_vec())),
                range_end: vec![],
            },
            Compare {
                result: compare::CompareResult::Greater as i32,
                target: compare::CompareTarget::Mod as i32,
                key: b"x".to_vec(),
                target_union: Some(compare::TargetUnion::ModRevision(3)),
                range_end: vec![0],
            },
        ],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestTxn(inner)),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: b"x".to_vec(),
                ..Default::default()
            })),
        }],
    };
    roundtrip(&outer);

    let bytes = outer.encode_to_vec();
    let back = TxnRequest::decode(bytes.as_slice()).unwrap();
    match &back.success[0].request {
        Some(request_op::Request::RequestTxn(t)) => {
            assert_eq!(t.compare[0].range_end, b"z");
            assert!(matches!(
                t.success[0].request,
                Some(request_op::Request::RequestPut(_))
            ));
        }
        other => panic!("unexpected {other:?}"),
    }

    roundtrip(&TxnResponse {
        header: Some(header()),
        succeeded: true,
        responses: vec![ResponseOp {
            response: Some(response_op::Response::ResponseTxn(TxnResponse {
                header: Some(header()),
                succeeded: false,
                responses: vec![ResponseOp {
                    response: Some(response_op::Response::ResponsePut(PutResponse {
                        header: Some(header()),
                        prev_kv: Some(kv("k", "old", 3)),
                    })),
                }],
            })),
        }],
    });
}

#[test]
fn roundtrip_watch_requests() {
    roundtrip(&WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                start_revision: 12,
                progress_notify: true,
                filters: vec![
                    watch_create_request::FilterType::Noput as i32,
                    watch_create_request::FilterType::Nodelete as i32,
                ],
                prev_kv: true,
                watch_id: 9,
                fragment: true,
            },
        )),
    });
    roundtrip(&WatchRequest {
        request_union: Some(watch_request::RequestUnion::CancelRequest(
            WatchCancelRequest { watch_id: 9 },
        )),
    });
    roundtrip(&WatchRequest {
        request_union: Some(watch_request::RequestUnion::ProgressRequest(
            WatchProgressRequest {},
        )),
    });
}

#[test]
fn roundtrip_watch_response_with_events() {
    roundtrip(&WatchResponse {
        header: Some(header()),
        watch_id: 3,
        created: false,
        canceled: true,
        compact_revision: 50,
        cancel_reason: "compacted".into(),
        fragment: true,
        events: vec![
            Event {
                r#type: EventType::Put as i32,
                kv: Some(kv("a", "1", 60)),
                prev_kv: Some(kv("a", "0", 55)),
            },
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: b"b".to_vec(),
                    mod_revision: 61,
                    ..Default::default()
                }),
                prev_kv: None,
            },
        ],
    });
}

#[test]
fn roundtrip_put_response_with_prev_kv() {
    roundtrip(&PutResponse {
        header: Some(header()),
        prev_kv: Some(kv("k", "v", 2)),
    });
}

#[test]
fn roundtrip_lease_keepalive() {
    roundtrip(&LeaseKeepAliveRequest { id: 0x1122_3344 });
    roundtrip(&LeaseKeepAliveResponse {
        header: Some(header()),
        id: 0x1122_3344,
        ttl: 60,
    });
    // Negative IDs/TTLs are int64 (10-byte varints), not zigzag.
    let bytes = LeaseKeepAliveResponse {
        ttl: -1,
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(bytes.len(), 11);
    assert_eq!(bytes[0], 3 << 3);
}

#[test]
fn roundtrip_status_response() {
    roundtrip(&StatusResponse {
        header: Some(header()),
        version: "3.6.0".into(),
        db_size: 1 << 30,
        leader: 42,
        raft_index: 100,
        raft_term: 7,
        raft_applied_index: 99,
        errors: vec!["NOSPACE".into()],
        db_size_in_use: 1 << 20,
        is_learner: true,
        storage_version: "3.6.0".into(),
        db_size_quota: 8 << 30,
        downgrade_info: Some(DowngradeInfo {
            enabled: true,
            target_version: "3.5.0".into(),
        }),
    });
}

#[test]
fn roundtrip_member() {
    roundtrip(&Member {
        id: u64::MAX,
        name: "infra1".into(),
        peer_ur_ls: vec!["http://10.0.0.1:2380".into()],
        client_ur_ls: vec![
            "http://10.0.0.1:2379".into(),
            "http://127.0.0.1:2379".into(),
        ],
        is_learner: true,
    });
}

#[test]
fn roundtrip_auth_records() {
    roundtrip(&authpb::Role {
        name: b"root".to_vec(),
        key_permission: vec![authpb::Permission {
            perm_type: authpb::permission::Type::Readwrite as i32,
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        }],
    });
    roundtrip(&authpb::User {
        name: b"alice".to_vec(),
        password: b"hash".to_vec(),
        roles: vec!["root".into()],
        options: Some(authpb::UserAddOptions { no_password: true }),
    });
}

// ---------------------------------------------------------------------------
// pinned field numbers
// ---------------------------------------------------------------------------

#[test]
fn helpers_are_sane() {
    // Hand-computed literals to make sure the helpers themselves are right.
    assert_eq!(varint_field(1, 1), [0x08, 0x01]);
    assert_eq!(varint_field(13, 300), [0x68, 0xac, 0x02]);
    assert_eq!(len_field(64, b"z"), [0x82, 0x04, 0x01, b'z']);
}

#[test]
fn pin_range_request() {
    let d = RangeRequest::default;
    let cases: Vec<(RangeRequest, Vec<u8>)> = vec![
        (
            RangeRequest {
                key: b"k".to_vec(),
                ..d()
            },
            len_field(1, b"k"),
        ),
        (
            RangeRequest {
                range_end: b"e".to_vec(),
                ..d()
            },
            len_field(2, b"e"),
        ),
        (RangeRequest { limit: 7, ..d() }, varint_field(3, 7)),
        (RangeRequest { revision: 8, ..d() }, varint_field(4, 8)),
        (
            RangeRequest {
                sort_order: range_request::SortOrder::Descend as i32,
                ..d()
            },
            varint_field(5, 2),
        ),
        (
            RangeRequest {
                sort_target: range_request::SortTarget::Value as i32,
                ..d()
            },
            varint_field(6, 4),
        ),
        (
            RangeRequest {
                serializable: true,
                ..d()
            },
            varint_field(7, 1),
        ),
        (
            RangeRequest {
                keys_only: true,
                ..d()
            },
            varint_field(8, 1),
        ),
        (
            RangeRequest {
                count_only: true,
                ..d()
            },
            varint_field(9, 1),
        ),
        (
            RangeRequest {
                min_mod_revision: 5,
                ..d()
            },
            varint_field(10, 5),
        ),
        (
            RangeRequest {
                max_mod_revision: 5,
                ..d()
            },
            varint_field(11, 5),
        ),
        (
            RangeRequest {
                min_create_revision: 5,
                ..d()
            },
            varint_field(12, 5),
        ),
        (
            RangeRequest {
                max_create_revision: 5,
                ..d()
            },
            varint_field(13, 5),
        ),
    ];
    for (msg, want) in cases {
        assert_eq!(msg.encode_to_vec(), want, "{msg:?}");
    }
    // Literal spot checks.
    assert_eq!(
        RangeRequest {
            sort_order: 1,
            ..d()
        }
        .encode_to_vec(),
        [0x28, 0x01]
    );
    assert_eq!(
        RangeRequest {
            max_create_revision: 1,
            ..d()
        }
        .encode_to_vec(),
        [0x68, 0x01]
    );
}

#[test]
fn pin_range_enums() {
    use range_request::{SortOrder, SortTarget};
    assert_eq!(
        [
            SortOrder::None as i32,
            SortOrder::Ascend as i32,
            SortOrder::Descend as i32
        ],
        [0, 1, 2]
    );
    assert_eq!(
        [
            SortTarget::Key as i32,
            SortTarget::Version as i32,
            SortTarget::Create as i32,
            SortTarget::Mod as i32,
            SortTarget::Value as i32
        ],
        [0, 1, 2, 3, 4]
    );
}

#[test]
fn pin_put_request() {
    let d = PutRequest::default;
    assert_eq!(
        PutRequest {
            key: b"k".to_vec(),
            ..d()
        }
        .encode_to_vec(),
        len_field(1, b"k")
    );
    assert_eq!(
        PutRequest {
            value: b"v".to_vec(),
            ..d()
        }
        .encode_to_vec(),
        len_field(2, b"v")
    );
    assert_eq!(
        PutRequest { lease: 9, ..d() }.encode_to_vec(),
        varint_field(3, 9)
    );
    assert_eq!(
        PutRequest {
            prev_kv: true,
            ..d()
        }
        .encode_to_vec(),
        varint_field(4, 1)
    );
    assert_eq!(
        PutRequest {
            ignore_value: true,
            ..d()
        }
        .encode_to_vec(),
        varint_field(5, 1)
    );
    assert_eq!(
        PutRequest {
            ignore_lease: true,
            ..d()
        }
        .encode_to_vec(),
        varint_field(6, 1)
    );
    // PutResponse.prev_kv = 2 (message).
    let prev = kv("k", "v", 2);
    assert_eq!(
        PutResponse {
            header: None,
            prev_kv: Some(prev.clone())
        }
        .encode_to_vec(),
        len_field(2, &prev.encode_to_vec())
    );
}

#[test]
fn pin_compare() {
    let d = Compare::default;
    assert_eq!(
        Compare {
            result: compare::CompareResult::NotEqual as i32,
            ..d()
        }
        .encode_to_vec(),
        varint_field(1, 3)
    );
    assert_eq!(
        Compare {
            target: compare::CompareTarget::Lease as i32,
            ..d()
        }
        .encode_to_vec(),
        varint_field(2, 4)
    );
    assert_eq!(
        Compare {
            key: b"k".to_vec(),
            ..d()
        }
        .encode_to_vec(),
        len_field(3, b"k")
    );
    // range_end jumps to 64 (two-byte tag 0x82 0x04).
    assert_eq!(
        Compare {
            range_end: b"z".to_vec(),
            ..d()
        }
        .encode_to_vec(),
        [0x82, 0x04, 0x01, b'z']
    );
    let tu = |t| Compare {
        target_union: Some(t),
        ..d()
    };
    // Oneof members are encoded even when they hold the default value.
    assert_eq!(
        tu(compare::TargetUnion::Version(0)).encode_to_vec(),
        varint_field(4, 0)
    );
    assert_eq!(
        tu(compare::TargetUnion::CreateRevision(2)).encode_to_vec(),
        varint_field(5, 2)
    );
    assert_eq!(
        tu(compare::TargetUnion::ModRevision(2)).encode_to_vec(),
        varint_field(6, 2)
    );
    assert_eq!(
        tu(compare::TargetUnion::Value(b"v".to_vec())).encode_to_vec(),
        len_field(7, b"v")
    );
    assert_eq!(
        tu(compare::TargetUnion::Lease(2)).encode_to_vec(),
        varint_field(8, 2)
    );
}

#[test]
fn pin_compare_enums() {
    use compare::{CompareResult as R, CompareTarget as T};
    assert_eq!(
        [
            R::Equal as i32,
            R::Greater as i32,
            R::Less as i32,
            R::NotEqual as i32
        ],
        [0, 1, 2, 3]
    );
    assert_eq!(
        [
            T::Version as i32,
            T::Create as i32,
            T::Mod as i32,
            T::Value as i32,
            T::Lease as i32
        ],
        [0, 1, 2, 3, 4]
    );
}

#[test]
fn pin_txn_request() {
    let d = TxnRequest::default;
    let cmp = Compare {
        key: b"k".to_vec(),
        ..Default::default()
    };
    let op = RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest::default())),
    };
    assert_eq!(
        TxnRequest {
            compare: vec![cmp.clone()],
            ..d()
        }
        .encode_to_vec(),
        len_field(1, &cmp.encode_to_vec())
    );
    assert_eq!(
        TxnRequest {
            success: vec![op.clone()],
            ..d()
        }
        .encode_to_vec(),
        len_field(2, &op.encode_to_vec())
    );
    assert_eq!(
        TxnRequest {
            failure: vec![op.clone()],
            ..d()
        }
        .encode_to_vec(),
        len_field(3, &op.encode_to_vec())
    );
    // RequestOp oneof: range=1 put=2 delete_range=3 txn=4 (all empty payloads).
    let enc = |r| RequestOp { request: Some(r) }.encode_to_vec();
    assert_eq!(
        enc(request_op::Request::RequestRange(Default::default())),
        len_field(1, &[])
    );
    assert_eq!(
        enc(request_op::Request::RequestPut(Default::default())),
        len_field(2, &[])
    );
    assert_eq!(
        enc(request_op::Request::RequestDeleteRange(Default::default())),
        len_field(3, &[])
    );
    assert_eq!(
        enc(request_op::Request::RequestTxn(Default::default())),
        len_field(4, &[])
    );
}

#[test]
fn pin_response_header() {
    let d = ResponseHeader::default;
    assert_eq!(
        ResponseHeader {
            cluster_id: 1,
            ..d()
        }
        .encode_to_vec(),
        varint_field(1, 1)
    );
    assert_eq!(
        ResponseHeader {
            member_id: 1,
            ..d()
        }
        .encode_to_vec(),
        varint_field(2, 1)
    );
    assert_eq!(
        ResponseHeader { revision: 1, ..d() }.encode_to_vec(),
        varint_field(3, 1)
    );
    assert_eq!(
        ResponseHeader {
            raft_term: 1,
            ..d()
        }
        .encode_to_vec(),
        varint_field(4, 1)
    );
}

#[test]
fn pin_watch_create_request() {
    let d = WatchCreateRequest::default;
    assert_eq!(
        WatchCreateRequest {
            key: b"k".to_vec(),
            ..d()
        }
        .encode_to_vec(),
        len_field(1, b"k")
    );
    assert_eq!(
        WatchCreateRequest {
            range_end: b"e".to_vec(),
            ..d()
        }
        .encode_to_vec(),
        len_field(2, b"e")
    );
    assert_eq!(
        WatchCreateRequest {
            start_revision: 3,
            ..d()
        }
        .encode_to_vec(),
        varint_field(3, 3)
    );
    assert_eq!(
        WatchCreateRequest {
            progress_notify: true,
            ..d()
        }
        .encode_to_vec(),
        varint_field(4, 1)
    );
    // repeated enum: packed in proto3.
    assert_eq!(
        WatchCreateRequest {
            filters: vec![
                watch_create_request::FilterType::Noput as i32,
                watch_create_request::FilterType::Nodelete as i32,
            ],
            ..d()
        }
        .encode_to_vec(),
        len_field(5, &[0, 1])
    );
    assert_eq!(
        WatchCreateRequest {
            prev_kv: true,
            ..d()
        }
        .encode_to_vec(),
        varint_field(6, 1)
    );
    assert_eq!(
        WatchCreateRequest { watch_id: 7, ..d() }.encode_to_vec(),
        varint_field(7, 7)
    );
    assert_eq!(
        WatchCreateRequest {
            fragment: true,
            ..d()
        }
        .encode_to_vec(),
        varint_field(8, 1)
    );
}

#[test]
fn pin_watch_request_oneof() {
    let enc = |u| {
        WatchRequest {
            request_union: Some(u),
        }
        .encode_to_vec()
    };
    assert_eq!(
        enc(watch_request::RequestUnion::CreateRequest(
            Default::default()
        )),
        len_field(1, &[])
    );
    assert_eq!(
        enc(watch_request::RequestUnion::CancelRequest(
            WatchCancelRequest { watch_id: 5 }
        )),
        len_field(2, &varint_field(1, 5))
    );
    assert_eq!(
        enc(watch_request::RequestUnion::ProgressRequest(
            WatchProgressRequest {}
        )),
        len_field(3, &[])
    );
}

#[test]
fn pin_watch_response() {
    let d = WatchResponse::default;
    assert_eq!(
        WatchResponse { watch_id: 1, ..d() }.encode_to_vec(),
        varint_field(2, 1)
    );
    assert_eq!(
        WatchResponse {
            created: true,
            ..d()
        }
        .encode_to_vec(),
        varint_field(3, 1)
    );
    assert_eq!(
        WatchResponse {
            canceled: true,
            ..d()
        }
        .encode_to_vec(),
        varint_field(4, 1)
    );
    assert_eq!(
        WatchResponse {
            compact_revision: 9,
            ..d()
        }
        .encode_to_vec(),
        varint_field(5, 9)
    );
    assert_eq!(
        WatchResponse {
            cancel_reason: "x".into(),
            ..d()
        }
        .encode_to_vec(),
        len_field(6, b"x")
    );
    assert_eq!(
        WatchResponse {
            fragment: true,
            ..d()
        }
        .encode_to_vec(),
        varint_field(7, 1)
    );
    assert_eq!(
        WatchResponse {
            events: vec![Event::default()],
            ..d()
        }
        .encode_to_vec(),
        [0x5a, 0x00] // field 11, wire type 2, length 0
    );
    assert_eq!(
        WatchResponse {
            header: Some(ResponseHeader::default()),
            ..d()
        }
        .encode_to_vec(),
        len_field(1, &[])
    );
}

#[test]
fn pin_key_value_and_event() {
    let d = KeyValue::default;
    assert_eq!(
        KeyValue {
            key: b"k".to_vec(),
            ..d()
        }
        .encode_to_vec(),
        len_field(1, b"k")
    );
    assert_eq!(
        KeyValue {
            create_revision: 1,
            ..d()
        }
        .encode_to_vec(),
        varint_field(2, 1)
    );
    assert_eq!(
        KeyValue {
            mod_revision: 1,
            ..d()
        }
        .encode_to_vec(),
        varint_field(3, 1)
    );
    assert_eq!(
        KeyValue { version: 1, ..d() }.encode_to_vec(),
        varint_field(4, 1)
    );
    assert_eq!(
        KeyValue {
            value: b"v".to_vec(),
            ..d()
        }
        .encode_to_vec(),
        len_field(5, b"v")
    );
    assert_eq!(
        KeyValue { lease: 1, ..d() }.encode_to_vec(),
        varint_field(6, 1)
    );

    assert_eq!(EventType::Put as i32, 0);
    assert_eq!(EventType::Delete as i32, 1);
    let e = Event::default;
    assert_eq!(
        Event {
            r#type: EventType::Delete as i32,
            ..e()
        }
        .encode_to_vec(),
        varint_field(1, 1)
    );
    assert_eq!(
        Event {
            kv: Some(d()),
            ..e()
        }
        .encode_to_vec(),
        len_field(2, &[])
    );
    assert_eq!(
        Event {
            prev_kv: Some(d()),
            ..e()
        }
        .encode_to_vec(),
        len_field(3, &[])
    );
}

#[test]
fn pin_status_response() {
    let d = StatusResponse::default;
    let cases: Vec<(StatusResponse, Vec<u8>)> = vec![
        (
            StatusResponse {
                header: Some(ResponseHeader::default()),
                ..d()
            },
            len_field(1, &[]),
        ),
        (
            StatusResponse {
                version: "v".into(),
                ..d()
            },
            len_field(2, b"v"),
        ),
        (StatusResponse { db_size: 1, ..d() }, varint_field(3, 1)),
        (StatusResponse { leader: 1, ..d() }, varint_field(4, 1)),
        (
            StatusResponse {
                raft_index: 1,
                ..d()
            },
            varint_field(5, 1),
        ),
        (
            StatusResponse {
                raft_term: 1,
                ..d()
            },
            varint_field(6, 1),
        ),
        (
            StatusResponse {
                raft_applied_index: 1,
                ..d()
            },
            varint_field(7, 1),
        ),
        (
            StatusResponse {
                errors: vec!["e".into()],
                ..d()
            },
            len_field(8, b"e"),
        ),
        (
            StatusResponse {
                db_size_in_use: 1,
                ..d()
            },
            varint_field(9, 1),
        ),
        (
            StatusResponse {
                is_learner: true,
                ..d()
            },
            varint_field(10, 1),
        ),
        (
            StatusResponse {
                storage_version: "s".into(),
                ..d()
            },
            len_field(11, b"s"),
        ),
        (
            StatusResponse {
                db_size_quota: 1,
                ..d()
            },
            varint_field(12, 1),
        ),
        (
            StatusResponse {
                downgrade_info: Some(DowngradeInfo {
                    enabled: true,
                    target_version: "t".into(),
                }),
                ..d()
            },
            len_field(
                13,
                &[&varint_field(1, 1)[..], &len_field(2, b"t")[..]].concat(),
            ),
        ),
    ];
    for (msg, want) in cases {
        assert_eq!(msg.encode_to_vec(), want, "{msg:?}");
    }
}

#[test]
fn pin_member() {
    let d = Member::default;
    assert_eq!(Member { id: 1, ..d() }.encode_to_vec(), varint_field(1, 1));
    assert_eq!(
        Member {
            name: "n".into(),
            ..d()
        }
        .encode_to_vec(),
        len_field(2, b"n")
    );
    assert_eq!(
        Member {
            peer_ur_ls: vec!["p".into()],
            ..d()
        }
        .encode_to_vec(),
        len_field(3, b"p")
    );
    assert_eq!(
        Member {
            client_ur_ls: vec!["c".into()],
            ..d()
        }
        .encode_to_vec(),
        len_field(4, b"c")
    );
    assert_eq!(
        Member {
            is_learner: true,
            ..d()
        }
        .encode_to_vec(),
        varint_field(5, 1)
    );
}

#[test]
fn pin_alarm_type() {
    use ferrocd_proto::etcdserverpb::AlarmType;
    assert_eq!(AlarmType::None as i32, 0);
    assert_eq!(AlarmType::Nospace as i32, 1);
    assert_eq!(AlarmType::Corrupt as i32, 2);
    assert_eq!(AlarmType::Nospace.as_str_name(), "NOSPACE");
}

// ---------------------------------------------------------------------------
// service names / routes
// ---------------------------------------------------------------------------

#[test]
fn service_names() {
    use ferrocd_proto::{etcdserverpb as e, grpc::health::v1 as h, v3electionpb, v3lockpb};
    assert_eq!(e::kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(e::watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(e::lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(e::cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(
        e::maintenance_server::SERVICE_NAME,
        "etcdserverpb.Maintenance"
    );
    assert_eq!(e::auth_server::SERVICE_NAME, "etcdserverpb.Auth");
    assert_eq!(v3lockpb::lock_server::SERVICE_NAME, "v3lockpb.Lock");
    assert_eq!(
        v3electionpb::election_server::SERVICE_NAME,
        "v3electionpb.Election"
    );
    assert_eq!(h::health_server::SERVICE_NAME, "grpc.health.v1.Health");
}
