//! Worked examples of the keyspace's etcd semantics, each run on 1 and 8
//! shards.

use ferrocd_core::KvError;
use ferrocd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use ferrocd_shards::Keyspace;

fn each(f: impl Fn(&mut Keyspace)) {
    for shards in [1, 8] {
        f(&mut Keyspace::new(shards));
    }
}

fn put(ks: &mut Keyspace, k: &str, v: &str) -> i64 {
    ks.put(&put_req(k, v)).unwrap().header.unwrap().revision
}

fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

fn get(k: &str) -> RangeRequest {
    RangeRequest {
        key: k.into(),
        ..Default::default()
    }
}

fn range(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn keys(resp: &ferrocd_proto::etcdserverpb::RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn op(r: Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

fn cmp_version(k: &str, result: CompareResult, version: i64) -> Compare {
    Compare {
        key: k.into(),
        target: CompareTarget::Version as i32,
        result: result as i32,
        target_union: Some(TargetUnion::Version(version)),
        range_end: vec![],
    }
}

#[test]
fn revisions_versions_and_generations() {
    each(|ks| {
        assert_eq!(ks.revision(), 1, "an empty store is at revision 1");
        assert_eq!(put(ks, "k", "a"), 2);
        assert_eq!(put(ks, "k", "a"), 3, "an unchanged value still bumps");
        let d = ks
            .delete_range(&DeleteRangeRequest {
                key: "k".into(),
                prev_kv: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!((d.deleted, d.header.unwrap().revision), (1, 4));
        assert_eq!(d.prev_kvs[0].version, 2);
        let miss = ks
            .delete_range(&DeleteRangeRequest {
                key: "k".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (miss.deleted, miss.header.unwrap().revision),
            (0, 4),
            "no-op delete"
        );
        assert_eq!(put(ks, "k", "b"), 5);
        let kv = &ks.range(&get("k")).unwrap().kvs[0];
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
        // History: the first generation is readable at its revisions.
        let old = ks
            .range(&RangeRequest {
                revision: 3,
                ..get("k")
            })
            .unwrap();
        assert_eq!((old.kvs[0].create_revision, old.kvs[0].version), (2, 2));
        assert_eq!(
            old.header.unwrap().revision,
            5,
            "header shows the current revision"
        );
        assert!(ks
            .range(&RangeRequest {
                revision: 4,
                ..get("k")
            })
            .unwrap()
            .kvs
            .is_empty());
    });
}

#[test]
fn range_options() {
    each(|ks| {
        for (k, v) in [
            ("a", "3"),
            ("ab", "1"),
            ("abc", "2"),
            ("b", "0"),
            ("c\u{0}", "9"),
        ] {
            put(ks, k, v);
        }
        put(ks, "ab", "1"); // ab: version 2, mod 7
        let prefix = range("a", "b");
        assert_eq!(keys(&ks.range(&prefix).unwrap()), ["a", "ab", "abc"]);
        assert_eq!(
            keys(&ks.range(&range("ab", "\0")).unwrap()),
            ["ab", "abc", "b", "c\0"]
        );
        assert_eq!(ks.range(&range("\0", "\0")).unwrap().count, 5);
        assert!(ks.range(&range("b", "a")).unwrap().kvs.is_empty());

        let limited = ks
            .range(&RangeRequest {
                limit: 2,
                ..prefix.clone()
            })
            .unwrap();
        assert_eq!(
            (keys(&limited), limited.more, limited.count),
            (vec!["a".into(), "ab".into()], true, 3)
        );
        let exact = ks
            .range(&RangeRequest {
                limit: 3,
                ..prefix.clone()
            })
            .unwrap();
        assert!(!exact.more);

        let only = ks
            .range(&RangeRequest {
                count_only: true,
                ..prefix.clone()
            })
            .unwrap();
        assert!(only.kvs.is_empty() && only.count == 3 && !only.more);
        let ko = ks
            .range(&RangeRequest {
                keys_only: true,
                ..prefix.clone()
            })
            .unwrap();
        assert!(ko.kvs.iter().all(|kv| kv.value.is_empty()) && ko.kvs.len() == 3);

        let by_value = RangeRequest {
            sort_target: SortTarget::Value as i32,
            sort_order: SortOrder::Descend as i32,
            ..prefix.clone()
        };
        assert_eq!(keys(&ks.range(&by_value).unwrap()), ["a", "abc", "ab"]);
        // A non-key target without an order sorts ascending.
        let by_mod = RangeRequest {
            sort_target: SortTarget::Mod as i32,
            ..range("\0", "\0")
        };
        assert_eq!(
            keys(&ks.range(&by_mod).unwrap()),
            ["a", "abc", "b", "c\0", "ab"]
        );
        // ...but only among the limit+1 kvs read in key order (etcd's quirk).
        let quirk = RangeRequest {
            limit: 2,
            ..by_mod.clone()
        };
        let q = ks.range(&quirk).unwrap();
        assert_eq!((keys(&q), q.more), (vec!["a".into(), "abc".into()], true));
        let desc_key = RangeRequest {
            sort_order: SortOrder::Descend as i32,
            limit: 2,
            ..prefix.clone()
        };
        assert_eq!(keys(&ks.range(&desc_key).unwrap()), ["abc", "ab"]);

        let filtered = RangeRequest {
            min_mod_revision: 3,
            max_create_revision: 4,
            ..range("\0", "\0")
        };
        let f = ks.range(&filtered).unwrap();
        assert_eq!(
            (keys(&f), f.count),
            (vec!["ab".into(), "abc".into()], 5),
            "count ignores filters"
        );
    });
}

#[test]
fn put_options_and_errors() {
    each(|ks| {
        let lease = PutRequest {
            lease: 42,
            ..put_req("k", "v")
        };
        assert_eq!(ks.put(&lease), Err(KvError::LeaseNotFound));
        let ignore = PutRequest {
            ignore_value: true,
            ..put_req("k", "")
        };
        assert_eq!(ks.put(&ignore), Err(KvError::KeyNotFound));
        assert_eq!(ks.revision(), 1, "errors change nothing");
        put(ks, "k", "v1");
        let resp = ks
            .put(&PutRequest {
                prev_kv: true,
                ..ignore.clone()
            })
            .unwrap();
        assert_eq!(resp.prev_kv.unwrap().value, b"v1");
        let kv = &ks.range(&get("k")).unwrap().kvs[0];
        assert_eq!((kv.value.as_slice(), kv.version), (&b"v1"[..], 2));
    });
}

#[test]
fn txn_semantics() {
    each(|ks| {
        put(ks, "a", "1");
        // Compare succeeds; the writes share one revision; a read sees them.
        let t = TxnRequest {
            compare: vec![cmp_version("a", CompareResult::Equal, 1)],
            success: vec![
                op(Request::RequestPut(put_req("a", "2"))),
                op(Request::RequestPut(put_req("b", "x"))),
                op(Request::RequestRange(range("a", "c"))),
                // Nested compares see the state before the txn: "b" is absent there.
                op(Request::RequestTxn(TxnRequest {
                    compare: vec![cmp_version("b", CompareResult::Equal, 0)],
                    success: vec![op(Request::RequestDeleteRange(DeleteRangeRequest {
                        key: "zz".into(),
                        ..Default::default()
                    }))],
                    failure: vec![],
                })),
            ],
            failure: vec![],
        };
        let resp = ks.txn(&t).unwrap();
        assert!(resp.succeeded);
        assert_eq!(resp.header.unwrap().revision, 3);
        let Some(Response::ResponseRange(r)) = &resp.responses[2].response else {
            panic!()
        };
        assert_eq!(
            r.header.as_ref().unwrap().revision,
            3,
            "a read after writes reads at rev+1"
        );
        assert_eq!(
            r.kvs.iter().map(|kv| kv.mod_revision).collect::<Vec<_>>(),
            [3, 3]
        );
        let Some(Response::ResponseTxn(inner)) = &resp.responses[3].response else {
            panic!()
        };
        assert!(inner.succeeded, "nested compare saw the pre-txn state");
        assert_eq!(inner.header.as_ref().unwrap().revision, 0);

        // Failure branch, read only: no revision bump.
        let t2 = TxnRequest {
            compare: vec![cmp_version("a", CompareResult::Greater, 5)],
            success: vec![op(Request::RequestPut(put_req("a", "3")))],
            failure: vec![op(Request::RequestRange(get("a")))],
        };
        let resp = ks.txn(&t2).unwrap();
        assert!(!resp.succeeded);
        assert_eq!(resp.header.unwrap().revision, 3);

        // VALUE compare on a missing key is false; others compare zero.
        let missing_value = Compare {
            key: "nope".into(),
            target: CompareTarget::Value as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::Value(vec![])),
            range_end: vec![],
        };
        let t3 = TxnRequest {
            compare: vec![missing_value],
            ..Default::default()
        };
        assert!(!ks.txn(&t3).unwrap().succeeded);
        let t4 = TxnRequest {
            compare: vec![cmp_version("nope", CompareResult::Equal, 0)],
            ..Default::default()
        };
        assert!(ks.txn(&t4).unwrap().succeeded);

        // A compare over a range needs every key to match.
        let over = Compare {
            range_end: "c".into(),
            ..cmp_version("a", CompareResult::Equal, 1)
        };
        let t5 = TxnRequest {
            compare: vec![over],
            ..Default::default()
        };
        assert!(!ks.txn(&t5).unwrap().succeeded, "a has version 2");

        // Errors on the executed path change nothing.
        let bad = TxnRequest {
            success: vec![
                op(Request::RequestPut(put_req("c", "1"))),
                op(Request::RequestRange(RangeRequest {
                    revision: 99,
                    ..get("a")
                })),
            ],
            ..Default::default()
        };
        assert_eq!(ks.txn(&bad), Err(KvError::FutureRev));
        assert_eq!(ks.revision(), 3);
        assert!(ks.range(&get("c")).unwrap().kvs.is_empty());
    });
}

#[test]
fn compaction() {
    each(|ks| {
        put(ks, "a", "1"); // 2
        put(ks, "a", "2"); // 3
        put(ks, "b", "1"); // 4
        ks.delete_range(&DeleteRangeRequest {
            key: "b".into(),
            ..Default::default()
        })
        .unwrap(); // 5
        let at = |ks: &Keyspace, rev| {
            ks.range(&RangeRequest {
                revision: rev,
                ..range("\0", "\0")
            })
        };
        let before: Vec<_> = (3..=5).map(|r| at(ks, r).unwrap()).collect();
        assert_eq!(
            ks.compact(&CompactionRequest {
                revision: 3,
                physical: false
            })
            .unwrap()
            .header
            .unwrap()
            .revision,
            5
        );
        assert_eq!(at(ks, 2), Err(KvError::Compacted));
        for (i, r) in (3..=5).enumerate() {
            assert_eq!(at(ks, r).unwrap(), before[i], "reads at {r} unchanged");
        }
        assert_eq!(at(ks, 6), Err(KvError::FutureRev));
        assert_eq!(
            ks.compact(&CompactionRequest {
                revision: 3,
                physical: false
            }),
            Err(KvError::Compacted)
        );
        assert_eq!(
            ks.compact(&CompactionRequest {
                revision: 6,
                physical: false
            }),
            Err(KvError::FutureRev)
        );
        assert_eq!(ks.compact_revision(), 3);
    });
}

#[test]
fn ignore_value_after_a_from_key_delete_in_one_txn_is_key_not_found() {
    // etcd accepts this txn (a from-key delete never counts as a duplicate)
    // and then panics mid-apply; ferrocd refuses it before writing.
    each(|ks| {
        put(ks, "a", "1");
        let t = TxnRequest {
            success: vec![
                op(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: "a".into(),
                    range_end: "\0".into(),
                    ..Default::default()
                })),
                op(Request::RequestPut(PutRequest {
                    key: "a".into(),
                    ignore_value: true,
                    ..Default::default()
                })),
            ],
            ..Default::default()
        };
        assert_eq!(ferrocd_core::validate::check_txn(&t, 128), Ok(()));
        assert_eq!(ks.txn(&t), Err(KvError::KeyNotFound));
        assert_eq!(ks.revision(), 2);
        assert_eq!(ks.range(&get("a")).unwrap().kvs[0].value, b"1");
    });
}
