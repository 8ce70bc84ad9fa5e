//! Bad input gets etcd's exact gRPC code and message, changes nothing, and
//! never takes the server down. The request checks run against ferrocd and
//! against a real etcd started with the same flags; the outcomes must be
//! identical and equal to the expected table. Garbage on the TCP port and
//! cancelled streams are ferrocd-only checks.

mod common;

use bytes::Bytes;
use common::{Flavor, Server};
use etcd_client::{
    Client, CompactionResponse, Compare, CompareOp, DeleteOptions, DeleteResponse, Error,
    GetOptions, GetResponse, PutOptions, PutResponse, ResponseHeader, Txn, TxnOp, TxnResponse,
};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// Bound on every client call and raw socket wait, so a hang fails the
/// test instead of stalling it.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

async fn connect(endpoint: &str) -> Client {
    tokio::time::timeout(CALL_TIMEOUT, Client::connect([endpoint], None))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// What a successful answer says, without the ids that differ between
/// two clusters.
trait Summary {
    fn summary(&self) -> String;
}

impl Summary for GetResponse {
    fn summary(&self) -> String {
        let keys: Vec<String> = self
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect();
        format!(
            " (rev {}, keys {keys:?}, more {}, count {})",
            self.header().map_or(-1, ResponseHeader::revision),
            self.more(),
            self.count()
        )
    }
}

impl Summary for DeleteResponse {
    fn summary(&self) -> String {
        format!(
            " (rev {}, deleted {})",
            self.header().map_or(-1, ResponseHeader::revision),
            self.deleted()
        )
    }
}

impl Summary for TxnResponse {
    fn summary(&self) -> String {
        format!(
            " (rev {}, succeeded {}, {} responses)",
            self.header().map_or(-1, ResponseHeader::revision),
            self.succeeded(),
            self.op_responses().len()
        )
    }
}

impl Summary for PutResponse {
    fn summary(&self) -> String {
        format!(
            " (rev {})",
            self.header().map_or(-1, ResponseHeader::revision)
        )
    }
}

impl Summary for CompactionResponse {
    fn summary(&self) -> String {
        format!(
            " (rev {})",
            self.header().map_or(-1, ResponseHeader::revision)
        )
    }
}

/// `label: OK (summary)` or `label: <code>: <message>`.
fn outcome<T: Summary>(label: &str, r: Result<T, Error>) -> String {
    match r {
        Ok(resp) => format!("{label}: OK{}", resp.summary()),
        Err(Error::GRpcStatus(s)) => format!("{label}: {:?}: {}", s.code(), s.message()),
        Err(e) => format!("{label}: client error: {e}"),
    }
}

/// The whole keyspace and the store revision.
type Snapshot = (i64, Vec<(Vec<u8>, Vec<u8>, i64, i64, i64, i64)>);

async fn snapshot(c: &mut Client) -> Snapshot {
    let resp = tokio::time::timeout(
        CALL_TIMEOUT,
        c.get("\0", Some(GetOptions::new().with_from_key())),
    )
    .await
    .expect("range timed out")
    .expect("range of the whole keyspace");
    let rev = resp.header().expect("header").revision();
    let kvs = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease(),
            )
        })
        .collect();
    (rev, kvs)
}

/// Runs one bad request, records its outcome, and checks the keyspace and
/// revision are exactly as before.
async fn check<T, F>(c: &mut Client, out: &mut Vec<String>, label: &str, fut: F)
where
    T: Summary,
    F: std::future::Future<Output = Result<T, Error>>,
{
    let before = snapshot(c).await;
    let r = tokio::time::timeout(CALL_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{label}: timed out"));
    out.push(outcome(label, r));
    let after = snapshot(c).await;
    assert_eq!(before, after, "{label} changed the store");
}

fn puts(n: usize) -> Vec<TxnOp> {
    (0..n)
        .map(|i| TxnOp::put(format!("t/{i}"), "v", None))
        .collect()
}

/// `depth` txns each nested in the success branch of the one above; the
/// innermost reads `k1`.
fn nested_txn(depth: usize) -> Txn {
    let mut t = Txn::new().and_then(vec![TxnOp::get("k1", None)]);
    for _ in 1..depth {
        t = Txn::new().and_then(vec![TxnOp::txn(t)]);
    }
    t
}

fn gets(n: usize) -> Vec<TxnOp> {
    (0..n).map(|i| TxnOp::get(format!("t/{i}"), None)).collect()
}

/// Request checks with default limits. Setup: k1..k3 written at revisions
/// 2..=6, compacted at 4.
async fn default_limit_checks(endpoint: &str) -> Vec<String> {
    let mut c = connect(endpoint).await;
    c.put("k1", "a", None).await.unwrap(); // 2
    c.put("k2", "b", None).await.unwrap(); // 3
    c.put("k1", "c", None).await.unwrap(); // 4
    c.put("k3", "d", None).await.unwrap(); // 5
    c.put("k2", "e", None).await.unwrap(); // 6
    c.compact(4, None).await.unwrap();
    let mut kv = c.kv_client();
    let mut out = Vec::new();
    let o = &mut out;

    check(&mut c, o, "put empty key", kv.put("", "v", None)).await;
    check(&mut c, o, "range empty key", kv.get("", None)).await;
    check(
        &mut c,
        o,
        "range empty key with range_end",
        kv.get("", Some(GetOptions::new().with_range("z"))),
    )
    .await;
    check(&mut c, o, "delete empty key", kv.delete("", None)).await;
    check(
        &mut c,
        o,
        "txn put empty key",
        kv.txn(Txn::new().and_then(vec![TxnOp::put("", "v", None)])),
    )
    .await;
    check(
        &mut c,
        o,
        "txn range empty key (else)",
        kv.txn(Txn::new().or_else(vec![TxnOp::get("", None)])),
    )
    .await;
    check(
        &mut c,
        o,
        "txn delete empty key",
        kv.txn(Txn::new().and_then(vec![TxnOp::delete("", None)])),
    )
    .await;
    check(
        &mut c,
        o,
        "txn compare empty key",
        kv.txn(Txn::new().when(vec![Compare::version("", CompareOp::Equal, 0)])),
    )
    .await;
    check(
        &mut c,
        o,
        "range inverted range",
        kv.get("k3", Some(GetOptions::new().with_range("k1"))),
    )
    .await;
    check(
        &mut c,
        o,
        "delete inverted range",
        kv.delete("k3", Some(DeleteOptions::new().with_range("k1"))),
    )
    .await;
    check(&mut c, o, "delete missing key", kv.delete("k0", None)).await;
    check(
        &mut c,
        o,
        "range negative limit",
        kv.get("k", Some(GetOptions::new().with_prefix().with_limit(-1))),
    )
    .await;
    check(
        &mut c,
        o,
        "txn failing compare, read-only else",
        kv.txn(
            Txn::new()
                .when(vec![Compare::value("k1", CompareOp::Equal, "nope")])
                .and_then(vec![TxnOp::put("k1", "x", None)])
                .or_else(vec![TxnOp::get("k1", None)]),
        ),
    )
    .await;
    check(
        &mut c,
        o,
        "txn 129 puts",
        kv.txn(Txn::new().and_then(puts(129))),
    )
    .await;
    check(
        &mut c,
        o,
        "txn 129 else gets",
        kv.txn(Txn::new().or_else(gets(129))),
    )
    .await;
    let compares: Vec<Compare> = (0..129)
        .map(|i| Compare::version(format!("t/{i}"), CompareOp::Equal, 0))
        .collect();
    check(
        &mut c,
        o,
        "txn 129 compares",
        kv.txn(Txn::new().when(compares)),
    )
    .await;
    // The boundary is allowed (read-only, so nothing changes).
    check(
        &mut c,
        o,
        "txn 128 gets",
        kv.txn(Txn::new().and_then(gets(128))),
    )
    .await;
    check(
        &mut c,
        o,
        "txn duplicate put",
        kv.txn(Txn::new().and_then(vec![
            TxnOp::put("k1", "x", None),
            TxnOp::put("k1", "y", None),
        ])),
    )
    .await;
    check(
        &mut c,
        o,
        "txn put inside deleted range",
        kv.txn(Txn::new().or_else(vec![
            TxnOp::delete("k", Some(DeleteOptions::new().with_prefix())),
            TxnOp::put("k2", "y", None),
        ])),
    )
    .await;
    check(
        &mut c,
        o,
        "txn duplicate put in nested txn",
        kv.txn(Txn::new().and_then(vec![
            TxnOp::put("k3", "x", None),
            TxnOp::txn(Txn::new().and_then(vec![TxnOp::put("k3", "y", None)])),
        ])),
    )
    .await;
    // (Deeper nesting: `deeply_nested_txns_match_etcd`, over raw gRPC,
    // since the client cannot decode the answer past 49 levels.)
    check(&mut c, o, "txn nested 10 deep", kv.txn(nested_txn(10))).await;
    check(
        &mut c,
        o,
        "range negative revision",
        kv.get("k1", Some(GetOptions::new().with_revision(-5))),
    )
    .await;
    check(
        &mut c,
        o,
        "range future revision",
        kv.get("k1", Some(GetOptions::new().with_revision(7))),
    )
    .await;
    check(
        &mut c,
        o,
        "range compacted revision",
        kv.get("k1", Some(GetOptions::new().with_revision(3))),
    )
    .await;
    check(
        &mut c,
        o,
        "range at compaction revision",
        kv.get("k1", Some(GetOptions::new().with_revision(4))),
    )
    .await;
    check(
        &mut c,
        o,
        "txn range future revision",
        kv.txn(Txn::new().and_then(vec![TxnOp::get(
            "k1",
            Some(GetOptions::new().with_revision(100)),
        )])),
    )
    .await;
    check(
        &mut c,
        o,
        "txn range compacted revision",
        kv.txn(Txn::new().and_then(vec![TxnOp::get(
            "k1",
            Some(GetOptions::new().with_revision(2)),
        )])),
    )
    .await;
    check(&mut c, o, "compact future revision", kv.compact(7, None)).await;
    check(&mut c, o, "compact compacted revision", kv.compact(3, None)).await;
    check(
        &mut c,
        o,
        "compact at compaction revision",
        kv.compact(4, None),
    )
    .await;
    check(
        &mut c,
        o,
        "put unknown lease",
        kv.put("k1", "v", Some(PutOptions::new().with_lease(0x1234))),
    )
    .await;
    check(
        &mut c,
        o,
        "put new key unknown lease",
        kv.put("new", "v", Some(PutOptions::new().with_lease(0x1234))),
    )
    .await;
    check(
        &mut c,
        o,
        "txn put unknown lease",
        kv.txn(Txn::new().and_then(vec![
            TxnOp::put("k9", "v", None),
            TxnOp::put("k1", "v", Some(PutOptions::new().with_lease(77))),
        ])),
    )
    .await;
    check(
        &mut c,
        o,
        "put ignore_value on missing key",
        kv.put("missing", "", Some(PutOptions::new().with_ignore_value())),
    )
    .await;
    check(
        &mut c,
        o,
        "put ignore_value with a value",
        kv.put("k1", "v", Some(PutOptions::new().with_ignore_value())),
    )
    .await;
    check(
        &mut c,
        o,
        "put ignore_lease with a lease",
        kv.put(
            "k1",
            "v",
            Some(PutOptions::new().with_ignore_lease().with_lease(5)),
        ),
    )
    .await;
    out
}

/// `--max-request-bytes 10000 --max-txn-ops 4`.
async fn small_limit_checks(endpoint: &str) -> Vec<String> {
    let mut c = connect(endpoint).await;
    c.put("seed", "x", None).await.unwrap(); // 2
    let mut kv = c.kv_client();
    let mut out = Vec::new();
    let o = &mut out;
    // Under the limit: accepted (a write; checked outside `check`).
    out_push(
        o,
        "put 9000 B value",
        kv.put("ok", vec![b'v'; 9_000], None).await,
    );
    check(
        &mut c,
        o,
        "put 20 KB value",
        kv.put("big", vec![b'v'; 20_000], None),
    )
    .await;
    check(
        &mut c,
        o,
        "txn put 20 KB value",
        kv.txn(Txn::new().and_then(vec![TxnOp::put("big", vec![b'v'; 20_000], None)])),
    )
    .await;
    check(
        &mut c,
        o,
        "put 600000 B value",
        kv.put("big", vec![b'v'; 600_000], None),
    )
    .await;
    check(
        &mut c,
        o,
        "compact -1, never compacted",
        kv.compact(-1, None),
    )
    .await;
    check(&mut c, o, "compact 0, never compacted", kv.compact(0, None)).await;
    check(&mut c, o, "compact 0 again", kv.compact(0, None)).await;
    check(
        &mut c,
        o,
        "delete 20 KB key",
        kv.delete(vec![b'k'; 20_000], None),
    )
    .await;
    check(
        &mut c,
        o,
        "range 20 KB key",
        kv.get(vec![b'k'; 20_000], None),
    )
    .await;
    check(
        &mut c,
        o,
        "txn 5 gets",
        kv.txn(Txn::new().and_then(gets(5))),
    )
    .await;
    check(
        &mut c,
        o,
        "txn 5 compares",
        kv.txn(
            Txn::new().when(
                (0..5)
                    .map(|i| Compare::value(format!("t/{i}"), CompareOp::Equal, "x"))
                    .collect::<Vec<_>>(),
            ),
        ),
    )
    .await;
    check(
        &mut c,
        o,
        "txn 4 gets",
        kv.txn(Txn::new().and_then(gets(4))),
    )
    .await;
    // The nested budget: 2 + (nested 3) ops exceeds 4.
    check(
        &mut c,
        o,
        "txn nested over budget",
        kv.txn(Txn::new().and_then(vec![
            TxnOp::get("a", None),
            TxnOp::txn(Txn::new().and_then(gets(4))),
        ])),
    )
    .await;
    // A range answer larger than the request limit is fine.
    out_push(o, "range 9000 B value", kv.get("ok", None).await);
    out
}

fn out_push<T: Summary>(out: &mut Vec<String>, label: &str, r: Result<T, Error>) {
    out.push(outcome(label, r));
}

const KEY_NOT_PROVIDED: &str = "InvalidArgument: etcdserver: key is not provided";
const TOO_MANY_OPS: &str = "InvalidArgument: etcdserver: too many operations in txn request";
const DUPLICATE_KEY: &str = "InvalidArgument: etcdserver: duplicate key given in txn request";
const FUTURE_REV: &str = "OutOfRange: etcdserver: mvcc: required revision is a future revision";
const COMPACTED: &str = "OutOfRange: etcdserver: mvcc: required revision has been compacted";
const LEASE_NOT_FOUND: &str = "NotFound: etcdserver: requested lease not found";
const TOO_LARGE: &str = "InvalidArgument: etcdserver: request is too large";

fn expected_default() -> Vec<String> {
    [
        ("put empty key", KEY_NOT_PROVIDED),
        ("range empty key", KEY_NOT_PROVIDED),
        ("range empty key with range_end", KEY_NOT_PROVIDED),
        ("delete empty key", KEY_NOT_PROVIDED),
        ("txn put empty key", KEY_NOT_PROVIDED),
        ("txn range empty key (else)", KEY_NOT_PROVIDED),
        ("txn delete empty key", KEY_NOT_PROVIDED),
        ("txn compare empty key", KEY_NOT_PROVIDED),
        (
            "range inverted range",
            "OK (rev 6, keys [], more false, count 0)",
        ),
        ("delete inverted range", "OK (rev 6, deleted 0)"),
        ("delete missing key", "OK (rev 6, deleted 0)"),
        (
            "range negative limit",
            "OK (rev 6, keys [\"k1\", \"k2\", \"k3\"], more false, count 3)",
        ),
        (
            "txn failing compare, read-only else",
            "OK (rev 6, succeeded false, 1 responses)",
        ),
        ("txn 129 puts", TOO_MANY_OPS),
        ("txn 129 else gets", TOO_MANY_OPS),
        ("txn 129 compares", TOO_MANY_OPS),
        ("txn 128 gets", "OK (rev 6, succeeded true, 128 responses)"),
        ("txn duplicate put", DUPLICATE_KEY),
        ("txn put inside deleted range", DUPLICATE_KEY),
        ("txn duplicate put in nested txn", DUPLICATE_KEY),
        (
            "txn nested 10 deep",
            "OK (rev 6, succeeded true, 1 responses)",
        ),
        (
            "range negative revision",
            "OK (rev 6, keys [\"k1\"], more false, count 1)",
        ),
        ("range future revision", FUTURE_REV),
        ("range compacted revision", COMPACTED),
        (
            "range at compaction revision",
            "OK (rev 6, keys [\"k1\"], more false, count 1)",
        ),
        ("txn range future revision", FUTURE_REV),
        ("txn range compacted revision", COMPACTED),
        ("compact future revision", FUTURE_REV),
        ("compact compacted revision", COMPACTED),
        ("compact at compaction revision", COMPACTED),
        ("put unknown lease", LEASE_NOT_FOUND),
        ("put new key unknown lease", LEASE_NOT_FOUND),
        ("txn put unknown lease", LEASE_NOT_FOUND),
        (
            "put ignore_value on missing key",
            "InvalidArgument: etcdserver: key not found",
        ),
        (
            "put ignore_value with a value",
            "InvalidArgument: etcdserver: value is provided",
        ),
        (
            "put ignore_lease with a lease",
            "InvalidArgument: etcdserver: lease is provided",
        ),
    ]
    .iter()
    .map(|(l, e)| format!("{l}: {e}"))
    .collect()
}

fn expected_small() -> Vec<String> {
    // The encoded PutRequest: key field (2 + 3 bytes) + value field
    // (1 tag + 3 length + 600000 bytes); the limit is 10000 + 512 KiB.
    let grpc_limit = format!(
        "ResourceExhausted: grpc: received message larger than max ({} vs. {})",
        2 + 3 + 1 + 3 + 600_000,
        10_000 + 512 * 1024
    );
    [
        ("put 9000 B value", "OK (rev 3)"),
        ("put 20 KB value", TOO_LARGE),
        ("txn put 20 KB value", TOO_LARGE),
        ("put 600000 B value", grpc_limit.as_str()),
        ("compact -1, never compacted", COMPACTED),
        ("compact 0, never compacted", "OK (rev 3)"),
        ("compact 0 again", COMPACTED),
        ("delete 20 KB key", TOO_LARGE),
        (
            "range 20 KB key",
            "OK (rev 3, keys [], more false, count 0)",
        ),
        ("txn 5 gets", TOO_MANY_OPS),
        ("txn 5 compares", TOO_MANY_OPS),
        ("txn 4 gets", "OK (rev 3, succeeded true, 4 responses)"),
        ("txn nested over budget", TOO_MANY_OPS),
        (
            "range 9000 B value",
            "OK (rev 3, keys [\"ok\"], more false, count 1)",
        ),
    ]
    .iter()
    .map(|(l, e)| format!("{l}: {e}"))
    .collect()
}

/// Compares ferrocd's and etcd's outcome lists with the expected table,
/// reporting every differing line.
fn assert_outcomes(expected: &[String], ferrocd: &[String], etcd: &[String]) {
    let n = expected.len().max(ferrocd.len()).max(etcd.len());
    let mut diffs = Vec::new();
    for i in 0..n {
        let e = expected.get(i).map_or("<none>", String::as_str);
        let f = ferrocd.get(i).map_or("<none>", String::as_str);
        let r = etcd.get(i).map_or("<none>", String::as_str);
        if e != f || e != r {
            diffs.push(format!("  expected: {e}\n  ferrocd:  {f}\n  etcd:     {r}"));
        }
    }
    assert!(diffs.is_empty(), "outcomes differ:\n{}", diffs.join("\n"));
}

fn assert_no_panic(s: &Server) {
    let log = s.log();
    assert!(!log.contains("panicked"), "server panicked; log:\n{log}");
}

#[test]
fn request_checks_default_limits_match_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let ferrocd = Server::ferrocd(dir.path(), &[]);
    let etcd = Server::etcd(dir.path(), &[]);
    let rt = common::runtime();
    let f = rt.block_on(default_limit_checks(&ferrocd.endpoint()));
    let e = rt.block_on(default_limit_checks(&etcd.endpoint()));
    assert_outcomes(&expected_default(), &f, &e);
    assert_no_panic(&ferrocd);
}

#[test]
fn request_size_and_txn_ops_limits_match_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--max-request-bytes", "10000", "--max-txn-ops", "4"];
    let ferrocd = Server::ferrocd(dir.path(), &flags);
    let etcd = Server::etcd(dir.path(), &flags);
    let rt = common::runtime();
    let f = rt.block_on(small_limit_checks(&ferrocd.endpoint()));
    let e = rt.block_on(small_limit_checks(&etcd.endpoint()));
    assert_outcomes(&expected_small(), &f, &e);
    assert_no_panic(&ferrocd);
}

/// Value sizes around the `--max-request-bytes 10000` boundary.
const BOUNDARY_SIZES: std::ops::RangeInclusive<usize> = 9_960..=9_990;

/// The server's (member id, cluster id), then which puts of `BOUNDARY_SIZES`-byte values
/// are accepted.
async fn probe_boundary(endpoint: &str) -> ((u64, u64), Vec<String>) {
    let mut c = connect(endpoint).await;
    let status = c.status().await.expect("status");
    let header = status.header().expect("header");
    let ids = (header.member_id(), header.cluster_id());
    let mut out = Vec::new();
    for n in BOUNDARY_SIZES {
        let r = c.put("k", vec![b'v'; n], None).await;
        out.push(match r {
            Ok(_) => format!("{n}: OK"),
            Err(e) => outcome::<PutResponse>(&format!("{n}"), Err(e)),
        });
    }
    (ids, out)
}

/// etcd compares the marshalled raft request with `--max-request-bytes`;
/// that request carries an id whose top 16 bits are the low 16 bits of the
/// member id, so its varint is 9 or 10 bytes depending on the member id's
/// bit 15. With the same flags and peer URL, ferrocd must derive the same
/// member id and accept exactly the same value sizes, for member ids of
/// both kinds.
#[test]
fn request_too_large_boundary_matches_etcd() {
    let flags = ["--max-request-bytes", "10000"];
    let rt = common::runtime();
    let mut seen = [false; 2];
    let mut tries = 0;
    while seen != [true, true] {
        tries += 1;
        assert!(
            tries <= 40,
            "no member id with bit 15 {seen:?} after {tries} tries"
        );
        let dir = tempfile::tempdir().unwrap();
        let ports = (common::free_port(), common::free_port());
        let mut f = Server::start(
            Flavor::Ferrocd,
            &dir.path().join("f.etcd"),
            &flags,
            Some(ports),
        );
        let member = rt.block_on(async {
            let mut c = connect(&f.endpoint()).await;
            c.status()
                .await
                .expect("status")
                .header()
                .unwrap()
                .member_id()
        });
        let wide = usize::from(member & 0x8000 != 0);
        if seen[wide] {
            continue;
        }
        seen[wide] = true;
        let (fm, fo) = rt.block_on(probe_boundary(&f.endpoint()));
        assert_no_panic(&f);
        f.kill9();
        // The member id depends on the peer URL only; a fresh client port
        // avoids racing for the one just released.
        let e = Server::start(
            Flavor::Etcd,
            &dir.path().join("e.etcd"),
            &flags,
            Some((common::free_port(), ports.1)),
        );
        let (em, eo) = rt.block_on(probe_boundary(&e.endpoint()));
        assert_eq!(
            fm, em,
            "(member id, cluster id) for the same peer URL: ferrocd {fm:x?}, etcd {em:x?}"
        );
        let diff: Vec<String> = fo
            .iter()
            .zip(&eo)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("  ferrocd {a}\n  etcd    {b}"))
            .collect();
        assert!(
            diff.is_empty(),
            "member id {:x}: accepted value sizes differ:\n{}",
            fm.0,
            diff.join("\n")
        );
    }
}

// ---------------------------------------------------------------------
// Raw HTTP/2 (h2) and raw TCP.

/// A gRPC call's result seen on the wire.
#[derive(Debug)]
struct RawReply {
    http_status: u16,
    grpc_status: Option<String>,
    grpc_message: Option<String>,
    body_bytes: usize,
}

/// Sends one gRPC request with `body` (framed by the caller, or not) to
/// `path` over a fresh HTTP/2 connection and ends the stream. Returns the
/// status, from the headers (trailers-only answer) or the trailers.
async fn raw_grpc(endpoint: &str, path: &str, body: &[u8]) -> RawReply {
    let tcp = tokio::net::TcpStream::connect(endpoint)
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.expect("h2 ready");
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{endpoint}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).expect("send request");
    send.send_data(Bytes::copy_from_slice(body), true)
        .expect("send body");
    let resp = resp.await.expect("response headers");
    let http_status = resp.status().as_u16();
    let (parts, mut recv) = resp.into_parts();
    let header = |h: &http::HeaderMap, k: &str| {
        h.get(k)
            .map(|v| v.to_str().unwrap_or("<non-ascii>").to_string())
    };
    let mut grpc_status = header(&parts.headers, "grpc-status");
    let mut grpc_message = header(&parts.headers, "grpc-message");
    let mut body_bytes = 0;
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("response body");
        body_bytes += chunk.len();
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    if let Some(trailers) = recv.trailers().await.expect("trailers") {
        grpc_status = grpc_status.or_else(|| header(&trailers, "grpc-status"));
        grpc_message = grpc_message.or_else(|| header(&trailers, "grpc-message"));
    }
    RawReply {
        http_status,
        grpc_status,
        grpc_message,
        body_bytes,
    }
}

/// A gRPC length-prefixed message (uncompressed unless `flag` says so).
fn frame(flag: u8, msg: &[u8]) -> Vec<u8> {
    let mut v = vec![flag];
    v.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    v.extend_from_slice(msg);
    v
}

/// A hand-encoded PutRequest{key, value} (both shorter than 128 bytes).
fn put_request(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = vec![0x0a, u8::try_from(key.len()).unwrap()];
    v.extend_from_slice(key);
    v.push(0x12);
    v.push(u8::try_from(value.len()).unwrap());
    v.extend_from_slice(value);
    v
}

/// gRPC code numbers.
const OK: &str = "0";
const INTERNAL: &str = "13";
const UNIMPLEMENTED: &str = "12";
const UNKNOWN: &str = "2";

/// The raw gRPC cases, as `label: grpc-status`; asserted separately per
/// server because only codes are comparable (grpc-go and tonic word their
/// transport errors differently).
async fn raw_cases(endpoint: &str) -> Vec<(String, RawReply)> {
    let mut out = Vec::new();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "valid put (control)",
            "/etcdserverpb.KV/Put",
            frame(0, &put_request(b"raw", b"1")),
        ),
        // Field 1 with wire type 7 (does not exist).
        (
            "garbage protobuf",
            "/etcdserverpb.KV/Put",
            frame(0, &[0x0f, 0xff, 0xff, 0xff, 0x01, 0x02]),
        ),
        // A length-delimited key field claiming 100 bytes, 2 present.
        (
            "truncated protobuf field",
            "/etcdserverpb.KV/Put",
            frame(0, &[0x0a, 100, b'a', b'b']),
        ),
        // `limit` (field 3, varint) whose varint never ends.
        (
            "endless varint",
            "/etcdserverpb.KV/Range",
            frame(
                0,
                &[
                    0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
            ),
        ),
        // The 5-byte prefix announces 100 bytes; the stream ends after 3.
        ("truncated grpc frame", "/etcdserverpb.KV/Put", {
            let mut v = vec![0, 0, 0, 0, 100];
            v.extend_from_slice(b"abc");
            v
        }),
        (
            "compressed flag without grpc-encoding",
            "/etcdserverpb.KV/Put",
            frame(1, &put_request(b"raw", b"2")),
        ),
        ("unknown service", "/etcdserverpb.Nope/Put", frame(0, &[])),
        ("unknown method", "/etcdserverpb.KV/Nope", frame(0, &[])),
        ("unknown package", "/foo.Bar/Baz", frame(0, &[])),
    ];
    for (label, path, body) in cases {
        let r = tokio::time::timeout(CALL_TIMEOUT, raw_grpc(endpoint, path, &body))
            .await
            .unwrap_or_else(|_| panic!("{label}: timed out"));
        out.push((label.to_string(), r));
    }
    out
}

/// `grpc-message` is percent-encoded on the wire (grpc-go leaves spaces
/// as they are, tonic encodes them): compare decoded text.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_raw_cases(who: &str, cases: &[(String, RawReply)]) -> Vec<String> {
    // (label, accepted grpc-status codes, exact message if checked). A
    // frame cut short by the end of the stream: etcd (grpc-go) answers
    // Unknown `unexpected EOF`, tonic Internal; both are accepted.
    let expect: [(&str, &[&str], Option<&str>); 9] = [
        ("valid put (control)", &[OK], None),
        ("garbage protobuf", &[INTERNAL], None),
        ("truncated protobuf field", &[INTERNAL], None),
        ("endless varint", &[INTERNAL], None),
        ("truncated grpc frame", &[INTERNAL, UNKNOWN], None),
        ("compressed flag without grpc-encoding", &[INTERNAL], None),
        (
            "unknown service",
            &[UNIMPLEMENTED],
            Some("unknown service etcdserverpb.Nope"),
        ),
        ("unknown method", &[UNIMPLEMENTED], None),
        (
            "unknown package",
            &[UNIMPLEMENTED],
            Some("unknown service foo.Bar"),
        ),
    ];
    let mut errs = Vec::new();
    assert_eq!(cases.len(), expect.len());
    for ((label, r), (l, codes, message)) in cases.iter().zip(expect) {
        assert_eq!(label, l);
        let code = r.grpc_status.as_deref().unwrap_or("<none>");
        if r.http_status != 200 || !codes.contains(&code) {
            errs.push(format!(
                "{who} {label}: want grpc-status in {codes:?}, got {r:?}"
            ));
        }
        if let Some(m) = message {
            let got = r.grpc_message.as_deref().map(percent_decode);
            if got.as_deref() != Some(m) {
                errs.push(format!(
                    "{who} {label}: want grpc-message {m:?}, got {got:?}"
                ));
            }
        }
        if code != OK && r.body_bytes != 0 {
            errs.push(format!("{who} {label}: an error carries no message: {r:?}"));
        }
    }
    errs
}

#[test]
fn malformed_grpc_requests_get_a_status_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ferrocd = Server::ferrocd(dir.path(), &[]);
    let etcd = Server::etcd(dir.path(), &[]);
    let rt = common::runtime();
    let mut errs = Vec::new();
    for (who, ep) in [("ferrocd", ferrocd.endpoint()), ("etcd", etcd.endpoint())] {
        let cases = rt.block_on(raw_cases(&ep));
        errs.extend(check_raw_cases(who, &cases));
        // Only the control put was applied: one key, revision 2.
        let (rev, kvs) = rt.block_on(async {
            let mut c = connect(&ep).await;
            snapshot(&mut c).await
        });
        assert_eq!(rev, 2, "{who}: revision after the raw cases");
        assert_eq!(kvs.len(), 1, "{who}: {kvs:?}");
        assert_eq!(
            (kvs[0].0.as_slice(), kvs[0].1.as_slice()),
            (&b"raw"[..], &b"1"[..])
        );
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    assert_no_panic(&ferrocd);
}

/// Writes `bytes` (then half-closes when `fin`) and reads until the server
/// closes. Returns what it sent back, or panics if it keeps the
/// connection open.
fn send_garbage(endpoint: &str, bytes: &[u8], fin: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(endpoint).expect("connect");
    s.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
    // The server may close before all is written: ignore write errors.
    let _ = s.write_all(bytes);
    if fin {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "connection not closed after {} garbage bytes ({e}); got {} bytes back",
                bytes.len(),
                got.len()
            ),
        }
    }
}

/// A deterministic pseudo-random byte string (xorshift).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn garbage_on_the_client_port_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::ferrocd(dir.path(), &[]);
    let ep = s.endpoint();
    let rt = common::runtime();
    let mut c = rt.block_on(connect(&ep));
    rt.block_on(c.put("before", "1", None)).expect("put before");

    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("random bytes", noise(1000, 0x9e37_79b9_7f4a_7c15), false),
        ("random bytes, 64 KiB", noise(64 * 1024, 42), false),
        (
            "http/1.1 request",
            b"GET /v3/kv/range HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            false,
        ),
        (
            "http/1.1 post",
            b"POST /etcdserverpb.KV/Put HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                .to_vec(),
            false,
        ),
        ("truncated preface", preface[..10].to_vec(), true),
        ("empty connection", Vec::new(), true),
        (
            "preface, then garbage frames",
            {
                let mut v = preface.to_vec();
                v.extend_from_slice(&noise(300, 7));
                v
            },
            false,
        ),
        // A valid preface and a SETTINGS frame with a length that is not a
        // multiple of 6 (FRAME_SIZE_ERROR).
        (
            "bad settings frame",
            {
                let mut v = preface.to_vec();
                v.extend_from_slice(&[0, 0, 5, 0x4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5]);
                v
            },
            false,
        ),
        // HEADERS on stream 1 with a garbage HPACK block.
        (
            "garbage hpack",
            {
                let mut v = preface.to_vec();
                v.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
                v.extend_from_slice(&[0, 0, 4, 0x1, 0x5, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
                v
            },
            false,
        ),
    ];
    for (label, bytes, fin) in cases.drain(..) {
        let got = send_garbage(&ep, &bytes, fin);
        // Whatever came back (a GOAWAY or nothing), the server must still
        // serve a new client.
        let r = rt.block_on(async {
            let mut c2 = connect(&ep).await;
            tokio::time::timeout(CALL_TIMEOUT, c2.put(label, "ok", None)).await
        });
        let r = r.unwrap_or_else(|_| panic!("{label}: put after garbage timed out"));
        assert!(
            r.is_ok(),
            "{label}: put after garbage failed: {r:?} (server sent {} bytes)",
            got.len()
        );
    }
    // The connection opened before the garbage is unaffected.
    let resp = rt.block_on(c.get("before", None)).expect("old connection");
    assert_eq!(resp.kvs()[0].value(), b"1");
    let resp = rt
        .block_on(c.get(
            "\0",
            Some(GetOptions::new().with_from_key().with_count_only()),
        ))
        .unwrap();
    assert_eq!(resp.count(), 10, "one key per case plus `before`");
    assert_no_panic(&s);
}

/// A client that opens a Put stream and resets it mid-body, or drops the
/// whole connection mid-request, leaves the server serving.
#[test]
fn cancelled_requests_do_not_hurt_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::ferrocd(dir.path(), &[]);
    let ep = s.endpoint();
    let rt = common::runtime();
    rt.block_on(async {
        for round in 0..3 {
            let tcp = tokio::net::TcpStream::connect(&ep).await.unwrap();
            let (client, conn) = h2::client::handshake(tcp).await.unwrap();
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut client = client.ready().await.unwrap();
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("http://{ep}/etcdserverpb.KV/Put"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (_resp, mut send) = client.send_request(req, false).unwrap();
            // Half a frame: the prefix announces 50 bytes, 10 are sent.
            let mut partial = vec![0, 0, 0, 0, 50];
            partial.extend_from_slice(&[0x0a; 10]);
            send.send_data(Bytes::from(partial), false).unwrap();
            if round == 0 {
                send.send_reset(h2::Reason::CANCEL);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(send);
            drop(client);
            conn.abort();
        }
        let mut c = connect(&ep).await;
        tokio::time::timeout(CALL_TIMEOUT, c.put("after", "ok", None))
            .await
            .expect("put timed out")
            .expect("put after cancelled requests");
        let (rev, kvs) = snapshot(&mut c).await;
        assert_eq!(rev, 2, "only the last put was applied");
        assert_eq!(kvs.len(), 1);
    });
    assert_no_panic(&s);
}

fn push_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push(u8::try_from(v & 0x7f).unwrap() | 0x80);
        v >>= 7;
    }
    out.push(u8::try_from(v).unwrap());
}

fn varint_len(v: usize) -> usize {
    let mut n = 1;
    let mut v = v >> 7;
    while v > 0 {
        n += 1;
        v >>= 7;
    }
    n
}

/// A hand-encoded TxnRequest: `depth` txns, each the only success op of
/// the one above; the innermost ranges over `k1`. Built outside-in in
/// linear time.
fn nested_txn_bytes(depth: usize) -> Vec<u8> {
    // TxnRequest{success: [RequestOp{request_range: RangeRequest{key: "k1"}}]}
    let inner = [0x12, 0x06, 0x0a, 0x04, 0x0a, 0x02, b'k', b'1'];
    // Length of the TxnRequest at each level, innermost first.
    let mut txn_len = vec![inner.len()];
    for i in 1..depth {
        let op_len = 1 + varint_len(txn_len[i - 1]) + txn_len[i - 1];
        txn_len.push(1 + varint_len(op_len) + op_len);
    }
    let mut out = Vec::with_capacity(txn_len[depth - 1]);
    for i in (1..depth).rev() {
        let below = txn_len[i - 1];
        // success (field 2) = RequestOp{request_txn (field 4) = below}
        out.push(0x12);
        push_varint(&mut out, 1 + varint_len(below) + below);
        out.push(0x22);
        push_varint(&mut out, below);
    }
    out.extend_from_slice(&inner);
    assert_eq!(out.len(), txn_len[depth - 1]);
    out
}

/// etcd bounds nesting only by `--max-txn-ops` (each level spends one op
/// of the budget), after decoding. ferrocd must accept what etcd accepts,
/// refuse the rest with etcd's error, and never overflow its stack on
/// deep input.
#[test]
fn deeply_nested_txns_match_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let ferrocd = Server::ferrocd(dir.path(), &[]);
    let etcd = Server::etcd(dir.path(), &[]);
    let rt = common::runtime();
    let depths = [2, 40, 60, 128, 129, 100_000];
    let mut lines = [Vec::new(), Vec::new()];
    for (i, ep) in [ferrocd.endpoint(), etcd.endpoint()].iter().enumerate() {
        rt.block_on(async {
            let mut c = connect(ep).await;
            c.put("k1", "v", None).await.unwrap();
            for depth in depths {
                let body = frame(0, &nested_txn_bytes(depth));
                let r =
                    tokio::time::timeout(CALL_TIMEOUT, raw_grpc(ep, "/etcdserverpb.KV/Txn", &body))
                        .await
                        .unwrap_or_else(|_| panic!("depth {depth}: timed out"));
                let msg = r.grpc_message.as_deref().map(percent_decode);
                lines[i].push(format!(
                    "depth {depth}: grpc-status {:?} {:?}",
                    r.grpc_status,
                    msg.filter(|m| !m.is_empty())
                ));
            }
            let (rev, _) = snapshot(&mut c).await;
            assert_eq!(rev, 2, "read-only txns wrote something");
        });
    }
    let too_many = Some("etcdserver: too many operations in txn request");
    let expected: Vec<String> = depths
        .iter()
        .map(|&d| {
            if d <= 128 {
                format!("depth {d}: grpc-status Some(\"0\") None")
            } else {
                format!("depth {d}: grpc-status Some(\"3\") {too_many:?}")
            }
        })
        .collect();
    assert_outcomes(&expected, &lines[0], &lines[1]);
    assert_no_panic(&ferrocd);
}
