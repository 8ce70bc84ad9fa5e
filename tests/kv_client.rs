//! The `etcd-client` crate against the real ferrocd binary: every KV
//! option, revisions, headers and errors, plus Status, MemberList, a clean
//! SIGTERM exit and recovery across restarts with snapshots.

mod common;

use common::Server;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions,
    LeaseTimeToLiveOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};

fn grpc_err(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

async fn connect(s: &Server) -> Client {
    Client::connect([s.url()], None).await.expect("connect")
}

fn keys(r: &etcd_client::GetResponse) -> Vec<String> {
    r.kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_kv_option_headers_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::ferrocd(dir.path(), &[]);
    common::runtime().block_on(async {
        let mut c = connect(&server).await;

        // Headers: the ids etcd would derive, the term, the revision.
        let status = c.status().await.unwrap();
        let members = c.member_list().await.unwrap();
        assert_eq!(members.members().len(), 1);
        let me = &members.members()[0];
        assert_eq!(me.name(), "default");
        assert_eq!(me.client_urls(), [server.url()]);
        assert_eq!(status.leader(), me.id());
        assert!(status.version().starts_with("3.5."), "{}", status.version());
        assert!(status.raft_term() >= 1);
        let hdr = status.header().unwrap();
        assert_eq!(hdr.member_id(), me.id());
        let cluster_id = hdr.cluster_id();
        assert_ne!(cluster_id, 0);

        // Put: revisions start at 2 on a fresh store, prev_kv.
        let r = c.put("a", "1", None).await.unwrap();
        let h = r.header().unwrap();
        assert_eq!(h.revision(), 2);
        assert_eq!(h.cluster_id(), cluster_id);
        assert_eq!(h.member_id(), me.id());
        assert_eq!(h.raft_term(), status.raft_term());
        assert!(r.prev_key().is_none());
        let r = c
            .put("a", "2", Some(PutOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert_eq!(r.header().unwrap().revision(), 3);
        let prev = r.prev_key().unwrap();
        assert_eq!(
            (prev.value(), prev.mod_revision(), prev.version()),
            (&b"1"[..], 2, 1)
        );
        // ignore_value keeps the value, bumps the version.
        let r = c
            .put("a", "", Some(PutOptions::new().with_ignore_value()))
            .await
            .unwrap();
        assert_eq!(r.header().unwrap().revision(), 4);
        let g = c.get("a", None).await.unwrap();
        let kv = &g.kvs()[0];
        assert_eq!(
            (
                kv.value(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version()
            ),
            (&b"2"[..], 2, 4, 3)
        );
        for opts in [
            PutOptions::new().with_ignore_value(),
            PutOptions::new().with_ignore_lease(),
        ] {
            let e = c.put("missing", "", Some(opts)).await.unwrap_err();
            assert_eq!(
                grpc_err(e),
                (
                    tonic::Code::InvalidArgument,
                    "etcdserver: key not found".into()
                )
            );
        }
        let e = c
            .put("a", "x", Some(PutOptions::new().with_ignore_value()))
            .await
            .unwrap_err();
        assert_eq!(
            grpc_err(e),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: value is provided".into()
            )
        );
        let e = c
            .put("a", "x", Some(PutOptions::new().with_lease(7)))
            .await
            .unwrap_err();
        assert_eq!(
            grpc_err(e),
            (
                tonic::Code::NotFound,
                "etcdserver: requested lease not found".into()
            )
        );
        let e = c.put("", "x", None).await.unwrap_err();
        assert_eq!(
            grpc_err(e),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: key is not provided".into()
            )
        );
        // Errors changed nothing.
        assert_eq!(
            c.get("a", None).await.unwrap().header().unwrap().revision(),
            4
        );

        // A keyspace to range over: b1..b5 at revisions 5..9.
        for (i, v) in ["e", "d", "c", "b", "a"].iter().enumerate() {
            let r = c.put(format!("b{}", i + 1), *v, None).await.unwrap();
            assert_eq!(r.header().unwrap().revision(), 5 + i as i64);
        }
        c.put("c", "z", None).await.unwrap(); // rev 10

        let g = c
            .get("b", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["b1", "b2", "b3", "b4", "b5"]);
        assert_eq!((g.count(), g.more()), (5, false));
        assert_eq!(g.header().unwrap().revision(), 10);

        let g = c
            .get("b", Some(GetOptions::new().with_prefix().with_limit(2)))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["b1", "b2"]);
        assert_eq!((g.count(), g.more()), (5, true));

        let g = c
            .get("b3", Some(GetOptions::new().with_from_key()))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["b3", "b4", "b5", "c"]);
        let g = c
            .get("b2", Some(GetOptions::new().with_range("b4")))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["b2", "b3"]);
        let g = c
            .get("", Some(GetOptions::new().with_all_keys()))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["a", "b1", "b2", "b3", "b4", "b5", "c"]);

        let sorted = |t, o| GetOptions::new().with_prefix().with_sort(t, o);
        let g = c
            .get("b", Some(sorted(SortTarget::Value, SortOrder::Ascend)))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["b5", "b4", "b3", "b2", "b1"]);
        let g = c
            .get("b", Some(sorted(SortTarget::Key, SortOrder::Descend)))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["b5", "b4", "b3", "b2", "b1"]);
        let g = c
            .get("b", Some(sorted(SortTarget::Create, SortOrder::Descend)))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["b5", "b4", "b3", "b2", "b1"]);
        let g = c
            .get(
                "b",
                Some(sorted(SortTarget::Mod, SortOrder::Descend).with_limit(2)),
            )
            .await
            .unwrap();
        assert_eq!(keys(&g), ["b5", "b4"]);
        assert_eq!((g.count(), g.more()), (5, true));
        let g = c
            .get("b", Some(sorted(SortTarget::Version, SortOrder::Ascend)))
            .await
            .unwrap();
        assert_eq!(keys(&g), ["b1", "b2", "b3", "b4", "b5"]);

        let g = c
            .get("b", Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .unwrap();
        assert!(g.kvs().iter().all(|kv| kv.value().is_empty()));
        assert_eq!(g.kvs().len(), 5);
        let g = c
            .get("b", Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .unwrap();
        assert!(g.kvs().is_empty());
        assert_eq!(g.count(), 5);
        let g = c
            .get(
                "b",
                Some(GetOptions::new().with_prefix().with_serializable()),
            )
            .await
            .unwrap();
        assert_eq!(g.count(), 5);
        let g = c
            .get(
                "b",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_min_mod_revision(6)
                        .with_max_mod_revision(8),
                ),
            )
            .await
            .unwrap();
        assert_eq!(keys(&g), ["b2", "b3", "b4"]);
        let g = c
            .get(
                "b",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_min_create_revision(8)
                        .with_max_create_revision(0),
                ),
            )
            .await
            .unwrap();
        assert_eq!(keys(&g), ["b4", "b5"]);

        // Historical reads and their limits.
        let g = c
            .get("a", Some(GetOptions::new().with_revision(2)))
            .await
            .unwrap();
        assert_eq!(g.kvs()[0].value(), b"1");
        assert_eq!(g.header().unwrap().revision(), 10);
        let e = c
            .get("a", Some(GetOptions::new().with_revision(11)))
            .await
            .unwrap_err();
        assert_eq!(
            grpc_err(e),
            (
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision".into()
            )
        );

        // Delete: single, range with prev_kv, prefix.
        let d = c.delete("nothing", None).await.unwrap();
        assert_eq!((d.deleted(), d.header().unwrap().revision()), (0, 10));
        let d = c
            .delete(
                "b1",
                Some(DeleteOptions::new().with_range("b3").with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!(d.deleted(), 2);
        assert_eq!(d.header().unwrap().revision(), 11);
        let prev: Vec<&[u8]> = d.prev_kvs().iter().map(|kv| kv.key()).collect();
        assert_eq!(prev, [&b"b1"[..], b"b2"]);
        let d = c
            .delete("b", Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!((d.deleted(), d.header().unwrap().revision()), (3, 12));

        // Txn: compares of every target, both branches, a nested txn.
        let t = Txn::new()
            .when([
                Compare::value("a", CompareOp::Equal, "2"),
                Compare::version("a", CompareOp::Greater, 2),
                Compare::create_revision("a", CompareOp::Equal, 2),
                Compare::mod_revision("a", CompareOp::Less, 5),
                Compare::lease("a", CompareOp::Equal, 0),
                // A missing key has version 0 (a value compare on it would always fail).
                Compare::version("zz", CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put("t1", "x", None),
                TxnOp::get("a", None),
                TxnOp::txn(
                    Txn::new()
                        // Compares of the whole tree run before any write
                        // (etcd): t1 does not exist yet here.
                        .when([Compare::version("t1", CompareOp::Equal, 0)])
                        .and_then([TxnOp::put("t2", "y", None), TxnOp::delete("c", None)]),
                ),
            ])
            .or_else([TxnOp::put("never", "x", None)]);
        let r = c.txn(t).await.unwrap();
        assert!(r.succeeded());
        assert_eq!(r.header().unwrap().revision(), 13);
        let ops = r.op_responses();
        assert_eq!(ops.len(), 3);
        match &ops[1] {
            TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"2"),
            other => panic!("{other:?}"),
        }
        match &ops[2] {
            TxnOpResponse::Txn(t) => {
                assert!(t.succeeded());
                match &t.op_responses()[1] {
                    TxnOpResponse::Delete(d) => assert_eq!(d.deleted(), 1),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
        // All writes of one txn share its revision.
        for k in ["t1", "t2"] {
            let g = c.get(k, None).await.unwrap();
            assert_eq!(g.kvs()[0].mod_revision(), 13);
        }
        let r = c
            .txn(
                Txn::new()
                    .when([Compare::value("a", CompareOp::Equal, "nope")])
                    .and_then([TxnOp::put("never", "x", None)])
                    .or_else([TxnOp::get("t", Some(GetOptions::new().with_prefix()))]),
            )
            .await
            .unwrap();
        assert!(!r.succeeded());
        assert_eq!(r.header().unwrap().revision(), 13);
        match &r.op_responses()[0] {
            TxnOpResponse::Get(g) => assert_eq!(g.count(), 2),
            other => panic!("{other:?}"),
        }
        let e = c
            .txn(Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
            .await
            .unwrap_err();
        assert_eq!(
            grpc_err(e),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request".into()
            )
        );
        let many: Vec<TxnOp> = (0..129)
            .map(|i| TxnOp::put(format!("m{i}"), "", None))
            .collect();
        let e = c.txn(Txn::new().and_then(many)).await.unwrap_err();
        assert_eq!(
            grpc_err(e),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: too many operations in txn request".into()
            )
        );

        // Compaction: reads below it fail, compacting again fails.
        let r = c
            .compact(12, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap();
        assert_eq!(r.header().unwrap().revision(), 13);
        let e = c
            .get("a", Some(GetOptions::new().with_revision(11)))
            .await
            .unwrap_err();
        assert_eq!(
            grpc_err(e),
            (
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted".into()
            )
        );
        let g = c
            .get("a", Some(GetOptions::new().with_revision(12)))
            .await
            .unwrap();
        assert_eq!(g.kvs()[0].value(), b"2");
        let e = c.compact(12, None).await.unwrap_err();
        assert_eq!(
            grpc_err(e),
            (
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted".into()
            )
        );
        let e = c.compact(100, None).await.unwrap_err();
        assert_eq!(
            grpc_err(e),
            (
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision".into()
            )
        );
    });
}

#[test]
fn sigterm_exits_zero_and_restart_recovers_keys_revision_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    // A small snapshot count: restarts load a snapshot and replay the WAL tail.
    let mut server = Server::ferrocd(dir.path(), &["--snapshot-count", "25"]);
    let rt = common::runtime();
    let last = rt.block_on(async {
        let mut c = connect(&server).await;
        let mut last = 0;
        for i in 0..120 {
            last = c
                .put(format!("k{:03}", i % 40), format!("v{i}"), None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision();
        }
        c.compact(50, None).await.unwrap();
        last
    });
    assert_eq!(last, 121);
    let status = server.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    let snaps: Vec<_> = std::fs::read_dir(server.data_dir.join("member/snap"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(snaps.len(), 1, "old snapshots are removed: {snaps:?}");

    for round in 0..2 {
        server.restart();
        rt.block_on(async {
            let mut c = connect(&server).await;
            let g = c
                .get("k", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            assert_eq!(g.count(), 40);
            assert_eq!(
                g.header().unwrap().revision(),
                if round == 0 { 121 } else { 123 }
            );
            let kv = &g.kvs()[39];
            assert_eq!(
                (kv.key(), kv.value(), kv.mod_revision(), kv.version()),
                (&b"k039"[..], &b"v119"[..], 121, 3)
            );
            let e = c
                .get("k000", Some(GetOptions::new().with_revision(49)))
                .await
                .unwrap_err();
            assert_eq!(
                grpc_err(e).1,
                "etcdserver: mvcc: required revision has been compacted"
            );
            if round == 0 {
                // The next write continues the revision sequence.
                let r = c.put("after", "restart", None).await.unwrap();
                assert_eq!(r.header().unwrap().revision(), 122);
                c.delete("after", None).await.unwrap();
            }
        });
        assert_eq!(server.signal_and_wait(libc::SIGINT).code(), Some(0));
    }
}

#[test]
fn snapshots_release_old_wal_segments_and_restart_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::ferrocd(dir.path(), &["--snapshot-count", "10"]);
    let wal_segments = |s: &Server| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(s.data_dir.join("member/wal"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wal"))
            .collect();
        v.sort();
        v
    };
    let rt = common::runtime();
    // 80 values of 1 MiB fill more than one 64 MiB segment.
    let value = vec![b'x'; 1024 * 1024];
    rt.block_on(async {
        let mut c = connect(&server).await;
        for i in 0..80 {
            let mut v = value.clone();
            v[0] = b'a' + (i % 26) as u8;
            c.put(format!("big{i:02}"), v, None).await.unwrap();
        }
    });
    // Snapshots are saved in the background; the release follows shortly.
    let mut segs = wal_segments(&server);
    for _ in 0..200 {
        if segs.len() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        segs = wal_segments(&server);
    }
    assert_eq!(
        segs.len(),
        1,
        "segments fully covered by a snapshot are removed: {segs:?}"
    );
    assert_eq!(server.signal_and_wait(libc::SIGTERM).code(), Some(0));
    server.restart();
    rt.block_on(async {
        let mut c = connect(&server).await;
        let g = c
            .get(
                "big",
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        assert_eq!(g.count(), 80);
        assert_eq!(g.header().unwrap().revision(), 81);
        let g = c.get("big79", None).await.unwrap();
        assert_eq!(g.kvs()[0].value()[0], b'a' + 79 % 26);
        assert_eq!(g.kvs()[0].value().len(), 1024 * 1024);
    });
}

/// A snapshot of more keys than one chunk of the snapshot thread (4,096)
/// is streamed chunk by chunk and loaded back chunk by chunk after a
/// SIGKILL, with values, versions, leases and the revision intact.
#[test]
fn a_snapshot_of_many_chunks_survives_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::ferrocd(
        dir.path(),
        &["--snapshot-count", "5", "--max-txn-ops", "1000"],
    );
    let rt = common::runtime();
    const TXNS: usize = 11;
    const PER_TXN: usize = 1000;
    let (lease, revision) = rt.block_on(async {
        let mut c = connect(&server).await;
        let lease = c.lease_grant(600, None).await.unwrap().id();
        let mut revision = 0;
        for t in 0..TXNS {
            let ops: Vec<TxnOp> = (0..PER_TXN)
                .map(|i| {
                    let n = t * PER_TXN + i;
                    let opts = n
                        .is_multiple_of(100)
                        .then(|| PutOptions::new().with_lease(lease));
                    TxnOp::put(format!("many/{n:05}"), format!("v{n}"), opts)
                })
                .collect();
            let r = c.txn(Txn::new().and_then(ops)).await.unwrap();
            revision = r.header().unwrap().revision();
        }
        // Overwrite some keys so versions differ.
        for n in 0..50 {
            c.put(format!("many/{n:05}"), "again", None).await.unwrap();
        }
        (lease, revision + 50)
    });
    // Wait for a snapshot that covers every txn (index 1 is the leader's
    // no-op, 2 the lease grant), then kill -9: the puts after them replay
    // from the WAL.
    let snap_dir = server.data_dir.join("member/snap");
    let covered = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                u64::from_str_radix(n.strip_suffix(".snap")?, 16).ok()
            })
            .max()
            .unwrap_or(0)
    };
    let mut waited = 0;
    let txns_covered = (2 + TXNS) as u64;
    while covered(&snap_dir) < txns_covered && waited < 400 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    assert!(
        covered(&snap_dir) >= txns_covered,
        "no snapshot covers the txns"
    );
    server.kill9();
    server.restart();
    assert!(
        server.log().contains("loaded snapshot"),
        "restart loads the snapshot: {}",
        server.log()
    );
    rt.block_on(async {
        let mut c = connect(&server).await;
        let all = c
            .get("many/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(all.header().unwrap().revision(), revision);
        assert_eq!(all.count(), (TXNS * PER_TXN) as i64);
        for (n, kv) in all.kvs().iter().enumerate() {
            assert_eq!(kv.key_str().unwrap(), format!("many/{n:05}"));
            if n < 50 {
                assert_eq!(kv.value_str().unwrap(), "again");
                assert_eq!(kv.version(), 2);
            } else {
                assert_eq!(kv.value_str().unwrap(), format!("v{n}"));
                assert_eq!(kv.version(), 1);
            }
            let want_lease = if n.is_multiple_of(100) && n >= 50 {
                lease
            } else {
                0
            };
            assert_eq!(kv.lease(), want_lease, "key {n}");
        }
        let ttl = c
            .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert_eq!(ttl.keys().len(), (TXNS * PER_TXN) / 100 - 1);
    });
}

/// Defragment: etcd gives the space compaction freed back to the file
/// system; ferrocd's space is in the WAL and the last snapshot, so a
/// defragment snapshots everything applied and answers once the WAL
/// segments that snapshot covers are released. Status's db size drops,
/// etcdctl prints what it prints for etcd, and the store survives kill -9.
#[test]
fn defragment_snapshots_releases_the_wal_and_shrinks_db_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::ferrocd(dir.path(), &[]);
    let etcd = Server::etcd(dir.path(), &[]);
    let wal_segments = |s: &Server| -> usize {
        std::fs::read_dir(s.data_dir.join("member/wal"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
            .count()
    };
    let rt = common::runtime();
    let revision = rt.block_on(async {
        let mut c = connect(&server).await;
        // 80 versions of one 1 MiB key fill more than one 64 MiB segment;
        // compacted, one version is left.
        let mut revision = 0;
        for i in 0..80u8 {
            let r = c.put("big", vec![i; 1024 * 1024], None).await.unwrap();
            revision = r.header().unwrap().revision();
        }
        c.put("small", "v", None).await.unwrap();
        c.compact(revision, None).await.unwrap();
        let before = c.status().await.unwrap().db_size();
        assert!(before > 80 * 1024 * 1024, "db size before: {before}");
        assert!(wal_segments(&server) >= 2);
        let d = c.defragment().await.unwrap();
        let mut e = connect(&etcd).await;
        let de = e.defragment().await.unwrap();
        assert_eq!(
            d.header().is_some(),
            de.header().is_some(),
            "header as etcd: {:?} vs {:?}",
            d.header(),
            de.header()
        );
        let after = c.status().await.unwrap().db_size();
        assert!(after < 4 * 1024 * 1024, "db size after defrag: {after}");
        revision + 1
    });
    // The released segments are removed in the background.
    let mut segs = wal_segments(&server);
    for _ in 0..200 {
        if segs == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        segs = wal_segments(&server);
    }
    assert_eq!(
        segs, 1,
        "segments covered by the defragment snapshot are removed"
    );
    for s in [&server, &etcd] {
        let out = common::etcdctl_ok(&s.endpoint(), &["defrag"], None);
        assert_eq!(
            out,
            format!("Finished defragmenting etcd member[{}]\n", s.endpoint())
        );
    }
    server.kill9();
    server.restart();
    rt.block_on(async {
        let mut c = connect(&server).await;
        let g = c.get("big", None).await.unwrap();
        assert_eq!(g.header().unwrap().revision(), revision);
        assert_eq!(g.kvs()[0].value(), vec![79u8; 1024 * 1024].as_slice());
        assert_eq!(g.kvs()[0].version(), 80);
        let err = c
            .get("big", Some(GetOptions::new().with_revision(revision - 2)))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("required revision has been compacted"),
            "{err}"
        );
    });
}
