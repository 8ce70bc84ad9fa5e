//! Worked examples of the reference model in `tests/model` (hand-computed
//! from etcd v3.5's documented behaviour), so that the model itself is
//! trustworthy before it is used to judge `Keyspace`.

mod model;

use ferrocd_core::KvError;
use ferrocd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, TxnRequest,
};
use ferrocd_proto::mvccpb::KeyValue;
use model::Model;

fn put(k: &str, v: &str) -> PutRequest {
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

fn get_at(k: &str, rev: i64) -> RangeRequest {
    RangeRequest {
        key: k.into(),
        revision: rev,
        ..Default::default()
    }
}

fn all() -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    }
}

fn del(k: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn kv(k: &str, v: &str, create: i64, modr: i64, version: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v.into(),
        create_revision: create,
        mod_revision: modr,
        version,
        lease: 0,
    }
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put(k, v))),
    }
}
fn op_get(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(get(k))),
    }
}
fn op_del(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(del(k, end))),
    }
}
fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(t)),
    }
}

fn version_is(k: &str, v: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Version as i32,
        key: k.into(),
        target_union: Some(TargetUnion::Version(v)),
        range_end: vec![],
    }
}

fn rev_of(h: &Option<ResponseHeader>) -> i64 {
    h.as_ref().unwrap().revision
}

#[test]
fn empty_store() {
    let m = Model::new();
    assert_eq!(m.revision(), 1);
    assert_eq!(m.compact_revision(), -1);
    let r = m.range(&all()).unwrap();
    assert_eq!(
        (rev_of(&r.header), r.count, r.kvs.len(), r.more),
        (1, 0, 0, false)
    );
}

#[test]
fn put_put_delete_put_versions_and_create_revisions() {
    let mut m = Model::new();
    let r = m.put(&put("a", "1")).unwrap();
    assert_eq!(rev_of(&r.header), 2);
    assert_eq!(r.prev_kv, None);
    // Same value again still bumps the revision and the version.
    let r = m
        .put(&PutRequest {
            prev_kv: true,
            ..put("a", "1")
        })
        .unwrap();
    assert_eq!(rev_of(&r.header), 3);
    assert_eq!(r.prev_kv, Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(m.range(&get("a")).unwrap().kvs, vec![kv("a", "1", 2, 3, 2)]);

    // Deleting a missing key does not bump the revision.
    let r = m.delete_range(&del("zz", "")).unwrap();
    assert_eq!((rev_of(&r.header), r.deleted), (3, 0));
    assert_eq!(m.revision(), 3);

    let r = m
        .delete_range(&DeleteRangeRequest {
            prev_kv: true,
            ..del("a", "")
        })
        .unwrap();
    assert_eq!((rev_of(&r.header), r.deleted), (4, 1));
    assert_eq!(r.prev_kvs, vec![kv("a", "1", 2, 3, 2)]);
    assert!(m.range(&get("a")).unwrap().kvs.is_empty());

    // Re-creation: new create_revision, version restarts at 1.
    m.put(&put("a", "2")).unwrap();
    assert_eq!(m.range(&get("a")).unwrap().kvs, vec![kv("a", "2", 5, 5, 1)]);
    // History is intact.
    assert_eq!(
        m.range(&get_at("a", 3)).unwrap().kvs,
        vec![kv("a", "1", 2, 3, 2)]
    );
    assert!(m.range(&get_at("a", 4)).unwrap().kvs.is_empty());
    assert_eq!(rev_of(&m.range(&get_at("a", 3)).unwrap().header), 5);
    assert_eq!(m.range(&get_at("a", 6)), Err(KvError::FutureRev));
}

#[test]
fn ignore_value_and_lease() {
    let mut m = Model::new();
    let iv = PutRequest {
        ignore_value: true,
        ..put("a", "")
    };
    assert_eq!(m.put(&iv), Err(KvError::KeyNotFound));
    assert_eq!(m.revision(), 1);
    assert_eq!(
        m.put(&PutRequest {
            lease: 5,
            ..iv.clone()
        }),
        Err(KvError::LeaseNotFound),
        "the lease is checked first"
    );
    m.put(&put("a", "v")).unwrap();
    m.put(&iv).unwrap();
    assert_eq!(m.range(&get("a")).unwrap().kvs, vec![kv("a", "v", 2, 3, 2)]);
    assert_eq!(
        model::check_put(&PutRequest {
            ignore_value: true,
            ..put("a", "x")
        }),
        Err(KvError::ValueProvided)
    );
    assert_eq!(model::check_put(&put("", "x")), Err(KvError::EmptyKey));
}

#[test]
fn range_kinds_sort_limit_filters() {
    let mut m = Model::new();
    for (k, v) in [("b", "3"), ("a", "2"), ("c", "1"), ("ab", "2")] {
        m.put(&put(k, v)).unwrap();
    }
    m.put(&put("a", "2")).unwrap(); // rev 6; a: create 3, mod 6, version 2, same value
    let keys = |r: RangeRequest| -> Vec<String> {
        m.range(&r)
            .unwrap()
            .kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect()
    };
    let span = |k: &str, e: &[u8]| RangeRequest {
        key: k.into(),
        range_end: e.to_vec(),
        ..Default::default()
    };
    assert_eq!(keys(span("a", b"b")), ["a", "ab"]);
    assert_eq!(keys(span("ab", b"\0")), ["ab", "b", "c"]);
    assert_eq!(keys(span("b", b"a")), Vec::<String>::new());
    assert_eq!(keys(all()), ["a", "ab", "b", "c"]);

    // VALUE ascending by default when the target is not KEY; ties ("2") keep key order.
    let by_value = RangeRequest {
        sort_target: SortTarget::Value as i32,
        ..all()
    };
    assert_eq!(keys(by_value.clone()), ["c", "a", "ab", "b"]);
    let by_value_desc = RangeRequest {
        sort_order: SortOrder::Descend as i32,
        ..by_value
    };
    assert_eq!(keys(by_value_desc), ["b", "a", "ab", "c"]);
    let key_desc = RangeRequest {
        sort_order: SortOrder::Descend as i32,
        ..all()
    };
    assert_eq!(keys(key_desc), ["c", "b", "ab", "a"]);

    // limit: count ignores it, more is set.
    let r = m.range(&RangeRequest { limit: 3, ..all() }).unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (3, 4, true));
    let r = m.range(&RangeRequest { limit: 4, ..all() }).unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (4, 4, false));

    // filters do not change count
    let r = m
        .range(&RangeRequest {
            min_mod_revision: 4,
            max_create_revision: 4,
            ..all()
        })
        .unwrap();
    assert_eq!(r.count, 4);
    let ks: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(ks, vec![b"a".to_vec(), b"c".to_vec()]);

    let r = m
        .range(&RangeRequest {
            count_only: true,
            limit: 1,
            ..all()
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 4, false));
    let r = m
        .range(&RangeRequest {
            keys_only: true,
            ..get("a")
        })
        .unwrap();
    assert_eq!(r.kvs, vec![kv("a", "", 3, 6, 2)]);
}

#[test]
fn compact_then_read() {
    let mut m = Model::new();
    assert_eq!(
        m.compact(&CompactionRequest {
            revision: 0,
            physical: false
        })
        .map(|r| rev_of(&r.header)),
        Ok(1)
    );
    assert_eq!(m.compact_revision(), 0);
    assert_eq!(
        m.compact(&CompactionRequest {
            revision: 0,
            physical: false
        }),
        Err(KvError::Compacted)
    );
    for i in 0..4 {
        m.put(&put("k", &i.to_string())).unwrap(); // revs 2..=5
    }
    let before = m.range(&get_at("k", 3)).unwrap();
    assert_eq!(
        m.compact(&CompactionRequest {
            revision: 6,
            physical: false
        }),
        Err(KvError::FutureRev)
    );
    let r = m
        .compact(&CompactionRequest {
            revision: 3,
            physical: true,
        })
        .unwrap();
    assert_eq!(rev_of(&r.header), 5);
    assert_eq!(m.compact_revision(), 3);
    assert_eq!(m.range(&get_at("k", 2)), Err(KvError::Compacted));
    assert_eq!(m.range(&get_at("k", 3)), Ok(before));
    assert_eq!(m.range(&get_at("k", 6)), Err(KvError::FutureRev));
    assert_eq!(
        m.range(&get_at("k", -1)).unwrap().kvs,
        vec![kv("k", "3", 2, 5, 4)]
    );
    assert_eq!(
        m.compact(&CompactionRequest {
            revision: 3,
            physical: false
        }),
        Err(KvError::Compacted)
    );
    assert_eq!(
        m.compact(&CompactionRequest {
            revision: 2,
            physical: false
        }),
        Err(KvError::Compacted)
    );
}

#[test]
fn txn_sees_its_own_writes() {
    let mut m = Model::new();
    m.put(&put("a", "old")).unwrap(); // rev 2
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            op_get("a"),
            op_del("zz", ""),
            op_put("a", "new"),
            op_get("a"),
            op_del("zz", ""),
        ],
        failure: vec![],
    };
    let r = m.txn(&t).unwrap();
    assert!(r.succeeded);
    assert_eq!(rev_of(&r.header), 3);
    let resp: Vec<_> = r
        .responses
        .iter()
        .map(|o| o.response.clone().unwrap())
        .collect();
    match &resp[0] {
        Response::ResponseRange(g) => {
            assert_eq!(rev_of(&g.header), 2);
            assert_eq!(g.kvs, vec![kv("a", "old", 2, 2, 1)]);
        }
        other => panic!("{other:?}"),
    }
    match &resp[1] {
        Response::ResponseDeleteRange(d) => assert_eq!((rev_of(&d.header), d.deleted), (2, 0)),
        other => panic!("{other:?}"),
    }
    match &resp[2] {
        Response::ResponsePut(p) => assert_eq!(rev_of(&p.header), 3),
        other => panic!("{other:?}"),
    }
    match &resp[3] {
        Response::ResponseRange(g) => {
            assert_eq!(rev_of(&g.header), 3);
            assert_eq!(g.kvs, vec![kv("a", "new", 2, 3, 2)]);
        }
        other => panic!("{other:?}"),
    }
    match &resp[4] {
        // nothing deleted, but the txn already wrote: current + 1
        Response::ResponseDeleteRange(d) => assert_eq!((rev_of(&d.header), d.deleted), (3, 0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.revision(), 3);

    // A read-only txn does not bump the revision.
    let r = m
        .txn(&TxnRequest {
            compare: vec![],
            success: vec![op_get("a"), op_del("nope", "")],
            failure: vec![],
        })
        .unwrap();
    assert_eq!(rev_of(&r.header), 3);
    assert_eq!(m.revision(), 3);

    // A put with prev_kv after a from-key delete inside the same txn sees no previous kv,
    // and re-creates the key at the txn's revision.
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            op_del("a", "\0"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    prev_kv: true,
                    ..put("a", "again")
                })),
            },
        ],
        failure: vec![],
    };
    assert_eq!(
        model::check_txn(&t, 128),
        Ok(()),
        "from-key deletes never collide"
    );
    let r = m.txn(&t).unwrap();
    match &r.responses[1].response {
        Some(Response::ResponsePut(p)) => assert_eq!(p.prev_kv, None),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.range(&get("a")).unwrap().kvs,
        vec![kv("a", "again", 4, 4, 1)]
    );
}

#[test]
fn nested_compares_see_pre_txn_state() {
    let mut m = Model::new();
    // Outer txn puts "a" (version becomes 1); the nested compare "version(a) == 0"
    // is evaluated against the pre-txn state, so it still succeeds.
    let nested = TxnRequest {
        compare: vec![version_is("a", 0)],
        success: vec![op_put("yes", "1")],
        failure: vec![op_put("no", "1")],
    };
    let t = TxnRequest {
        compare: vec![version_is("a", 0)],
        success: vec![op_put("a", "x"), op_txn(nested)],
        failure: vec![],
    };
    assert_eq!(model::check_txn(&t, 128), Ok(()));
    let r = m.txn(&t).unwrap();
    assert!(r.succeeded);
    assert_eq!(rev_of(&r.header), 2);
    match &r.responses[1].response {
        Some(Response::ResponseTxn(n)) => {
            assert!(n.succeeded);
            assert_eq!(n.header, Some(ResponseHeader::default()));
            match &n.responses[0].response {
                Some(Response::ResponsePut(p)) => assert_eq!(rev_of(&p.header), 2),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    let r = m.range(&all()).unwrap();
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"yes".to_vec()]);
    // both puts share revision 2
    assert!(r
        .kvs
        .iter()
        .all(|kv| kv.mod_revision == 2 && kv.create_revision == 2));
}

#[test]
fn compares_on_missing_keys_and_ranges() {
    let mut m = Model::new();
    let value_eq = |k: &str, v: &str| Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Value as i32,
        key: k.into(),
        target_union: Some(TargetUnion::Value(v.into())),
        range_end: vec![],
    };
    let succeeded = |m: &mut Model, c: Compare| {
        m.txn(&TxnRequest {
            compare: vec![c],
            success: vec![],
            failure: vec![],
        })
        .unwrap()
        .succeeded
    };
    // VALUE on a missing key is always false, even against "".
    assert!(!succeeded(&mut m, value_eq("a", "")));
    // other targets compare against a zero kv
    assert!(succeeded(&mut m, version_is("a", 0)));
    m.put(&put("a", "1")).unwrap();
    m.put(&put("b", "1")).unwrap();
    m.put(&put("b", "1")).unwrap();
    assert!(succeeded(&mut m, value_eq("a", "1")));
    // a range compare must hold for every kv
    let ranged = Compare {
        range_end: b"c".to_vec(),
        ..value_eq("a", "1")
    };
    assert!(succeeded(&mut m, ranged.clone()));
    let ver1 = Compare {
        range_end: b"c".to_vec(),
        ..version_is("a", 1)
    };
    assert!(!succeeded(&mut m, ver1), "b has version 2");
    // a mismatched union compares against 0
    let mismatched = Compare {
        result: CompareResult::Greater as i32,
        target: CompareTarget::Mod as i32,
        key: b"a".to_vec(),
        target_union: Some(TargetUnion::Version(100)),
        range_end: vec![],
    };
    assert!(succeeded(&mut m, mismatched));
}

#[test]
fn txn_checks_run_before_anything_is_written() {
    let mut m = Model::new();
    m.put(&put("a", "1")).unwrap(); // rev 2
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("b", "1"),
            RequestOp {
                request: Some(Request::RequestRange(get_at("a", 3))),
            },
        ],
        failure: vec![],
    };
    assert_eq!(m.txn(&t), Err(KvError::FutureRev));
    assert_eq!(m.revision(), 2);
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("b", "1"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    ignore_value: true,
                    ..put("c", "")
                })),
            },
        ],
        failure: vec![],
    };
    assert_eq!(m.txn(&t), Err(KvError::KeyNotFound));
    assert!(m.range(&get("b")).unwrap().kvs.is_empty());
}

#[test]
fn txn_validation() {
    let t = |success: Vec<RequestOp>| TxnRequest {
        compare: vec![],
        success,
        failure: vec![],
    };
    assert_eq!(
        model::check_txn(&t(vec![op_put("a", ""), op_put("a", "")]), 128),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        model::check_txn(&t(vec![op_del("a", "c"), op_put("b", "")]), 128),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        model::check_txn(&t(vec![op_put("b", ""), op_del("a", "c")]), 128),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        model::check_txn(&t(vec![op_put("c", ""), op_del("a", "c")]), 128),
        Ok(())
    );
    assert_eq!(
        model::check_txn(&t(vec![op_del("a", "\0"), op_put("b", "")]), 128),
        Ok(())
    );
    // then/else of one nested txn may write the same key
    let n = TxnRequest {
        compare: vec![],
        success: vec![op_put("k", "")],
        failure: vec![op_put("k", "")],
    };
    assert_eq!(model::check_txn(&t(vec![op_txn(n.clone())]), 128), Ok(()));
    // but not together with the outer level
    assert_eq!(
        model::check_txn(&t(vec![op_txn(n.clone()), op_put("k", "")]), 128),
        Err(KvError::DuplicateKey)
    );
    // nor across two nested txns
    assert_eq!(
        model::check_txn(&t(vec![op_txn(n.clone()), op_txn(n)]), 128),
        Err(KvError::DuplicateKey)
    );
    // sizes
    let three = t(vec![op_get("a"), op_get("b"), op_get("c")]);
    assert_eq!(model::check_txn(&three, 2), Err(KvError::TooManyOps));
    assert_eq!(model::check_txn(&three, 3), Ok(()));
    assert_eq!(
        model::check_txn(&t(vec![RequestOp { request: None }]), 3),
        Err(KvError::KeyNotFound)
    );
    assert_eq!(
        model::check_txn(&t(vec![op_get("")]), 3),
        Err(KvError::EmptyKey)
    );
    // structure errors win over duplicate keys
    assert_eq!(
        model::check_txn(&t(vec![op_put("a", ""), op_put("a", ""), op_get("")]), 3),
        Err(KvError::EmptyKey)
    );
}

/// The points where the spec and etcd's code disagree (`model::Flavor`),
/// each with its smallest example: spec answer vs etcd answer.
#[test]
fn spec_vs_etcd_flavor_points() {
    use model::Flavor;
    let both = |f: &dyn Fn(&mut Model) -> String| {
        (
            f(&mut Model::with_flavor(Flavor::SPEC)),
            f(&mut Model::with_flavor(Flavor::ETCD)),
        )
    };

    // 1. txn Range with a negative revision: spec reads current; etcd
    //    compares it with FirstRev() = compact revision (-1 on a fresh store).
    let t = TxnRequest {
        compare: vec![],
        success: vec![RequestOp {
            request: Some(Request::RequestRange(get_at("a", -2))),
        }],
        failure: vec![],
    };
    let (spec, etcd) = both(&|m| format!("{:?}", m.txn(&t).map(|r| r.succeeded)));
    assert_eq!(
        (spec.as_str(), etcd.as_str()),
        ("Ok(true)", "Err(Compacted)")
    );

    // 2. txn Put{ignore_value, lease: 7} on a missing key: spec checks the
    //    lease first, etcd the missing key first.
    let t = TxnRequest {
        compare: vec![],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                ignore_value: true,
                lease: 7,
                ..put("a", "")
            })),
        }],
        failure: vec![],
    };
    let (spec, etcd) = both(&|m| format!("{:?}", m.txn(&t).map(|r| r.succeeded)));
    assert_eq!(
        (spec.as_str(), etcd.as_str()),
        ("Err(LeaseNotFound)", "Err(KeyNotFound)")
    );

    // 3. unknown sort_order with a non-KEY target: spec sorts ascending,
    //    etcd (v3.5 apply) does not sort.
    let keys = |m: &mut Model, r: &RangeRequest| -> String {
        let kvs = m.range(r).unwrap().kvs;
        kvs.iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect()
    };
    let r = RangeRequest {
        sort_order: 5,
        sort_target: SortTarget::Version as i32,
        ..all()
    };
    let (spec, etcd) = both(&|m| {
        for k in ["a", "a", "b"] {
            m.put(&put(k, "")).unwrap();
        }
        keys(m, &r)
    });
    assert_eq!((spec.as_str(), etcd.as_str()), ("ba", "ab"));

    // 4. non-KEY target, order NONE, limit 1: spec sorts everything then
    //    truncates; etcd fetches only limit+1 keys in key order, sorts those.
    let r = RangeRequest {
        limit: 1,
        sort_target: SortTarget::Create as i32,
        ..all()
    };
    let (spec, etcd) = both(&|m| {
        for k in ["c", "b", "a"] {
            m.put(&put(k, "")).unwrap();
        }
        keys(m, &r)
    });
    assert_eq!((spec.as_str(), etcd.as_str()), ("c", "b"));

    // 5. validation: etcd checks a nested txn against maxTxnOps - opc.
    let t = TxnRequest {
        compare: vec![],
        success: vec![op_txn(TxnRequest {
            compare: vec![],
            success: vec![op_get("a"), op_get("b"), op_get("c"), op_get("d")],
            failure: vec![],
        })],
        failure: vec![],
    };
    assert_eq!(model::check_txn_flavored(&t, 4, Flavor::SPEC), Ok(()));
    assert_eq!(
        model::check_txn_flavored(&t, 4, Flavor::ETCD),
        Err(KvError::TooManyOps)
    );
}

/// A txn etcd panics applying: the pre-txn check passes because "a"
/// exists, but a from-key delete (which never counts as a duplicate)
/// removes it before the ignore_value put runs. ferrocd answers
/// `key not found` during the put checks, before anything is written.
#[test]
fn ignore_value_after_from_key_delete_is_key_not_found() {
    let mut m = Model::new();
    m.put(&put("a", "v")).unwrap();
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            op_del("a", "\0"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    ignore_value: true,
                    ..put("a", "")
                })),
            },
        ],
        failure: vec![],
    };
    assert_eq!(model::check_txn(&t, 128), Ok(()));
    assert_eq!(m.try_txn(&t).unwrap(), Err(KvError::KeyNotFound));
    assert_eq!(m.revision(), 2, "nothing applied");
}
