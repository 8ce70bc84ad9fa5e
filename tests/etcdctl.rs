//! etcdctl (API v3) against ferrocd, with exact expected output, and the
//! same commands against a real etcd started by the test: both transcripts
//! must be identical once the ids and the raft term are masked.

mod common;

use base64::Engine as _;
use common::{etcdctl, etcdctl_ok, Server};
use serde_json::Value;

/// Replaces the decimal number after each `pattern` with `<n>`.
fn mask_after(s: &str, pattern: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(pattern) {
        let end = i + pattern.len();
        out.push_str(&rest[..end]);
        rest = &rest[end..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push_str("<n>");
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

/// Masks what legitimately differs between two clusters: cluster and
/// member ids and the raft term (json and fields output).
fn normalize(s: &str) -> String {
    let mut s = s.to_string();
    for p in [
        "\"cluster_id\":",
        "\"member_id\":",
        "\"raft_term\":",
        "\"ClusterID\" : ",
        "\"MemberID\" : ",
        "\"RaftTerm\" : ",
    ] {
        s = mask_after(&s, p);
    }
    s
}

/// One etcdctl run rendered for comparison: masked stdout, the exit code,
/// and the `Error:` lines of stderr (the rest of stderr carries
/// timestamps and random client ids).
fn transcript(endpoint: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = etcdctl(endpoint, args, stdin);
    let mut t = normalize(&String::from_utf8_lossy(&out.stdout));
    t.push_str(&format!("[exit {}]\n", out.status.code().unwrap_or(-1)));
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if line.starts_with("Error:") {
            t.push_str(line);
            t.push('\n');
        }
    }
    t
}

/// A step: etcdctl args, optional stdin, and the exact transcript both
/// servers must produce.
struct Step {
    args: &'static [&'static str],
    stdin: Option<&'static str>,
    expect: &'static str,
}

const fn step(args: &'static [&'static str], expect: &'static str) -> Step {
    Step {
        args,
        stdin: None,
        expect,
    }
}

const TXN_SUCCESS_IN: &str = "value(\"k/b\") = \"vb\"\nmod(\"k/c\") > \"0\"\n\nput k/b vb2\nget k/c\ndel k/zz\n\nput k/f 1\n\n";
const TXN_FAILURE_IN: &str =
    "value(\"k/b\") = \"nope\"\n\nput k/b vb3\n\nget k/b\nput k/g 7\ndel k/c\n\n";
const TXN_JSON_IN: &str = "version(\"k/g\") = \"1\"\n\nget k/g\nput k/g 8\n\nput k/h 1\n\n";

/// The script. A fresh store is at revision 1, so every revision below is
/// the same on both servers.
fn script() -> Vec<Step> {
    vec![
        step(&["put", "k/a", "va"], "OK\n[exit 0]\n"), // rev 2
        step(&["put", "k/c", "vc"], "OK\n[exit 0]\n"), // rev 3
        step(&["put", "k/b", "vb"], "OK\n[exit 0]\n"), // rev 4
        step(&["put", "k/d", "0"], "OK\n[exit 0]\n"),  // rev 5
        step(&["put", "k/a", "va2"], "OK\n[exit 0]\n"), // rev 6
        step(&["put", "k/a", "va3"], "OK\n[exit 0]\n"), // rev 7
        step(&["put", "other", "x"], "OK\n[exit 0]\n"), // rev 8
        step(&["get", "k/a"], "k/a\nva3\n[exit 0]\n"),
        step(
            &["get", "k/", "--prefix"],
            "k/a\nva3\nk/b\nvb\nk/c\nvc\nk/d\n0\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--keys-only"],
            "k/a\n\nk/b\n\nk/c\n\nk/d\n\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--limit", "2"],
            "k/a\nva3\nk/b\nvb\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--limit", "2", "-w", "json"],
            "{\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":8,\"raft_term\":<n>},\
             \"kvs\":[{\"key\":\"ay9h\",\"create_revision\":2,\"mod_revision\":7,\"version\":3,\"value\":\"dmEz\"},\
             {\"key\":\"ay9i\",\"create_revision\":4,\"mod_revision\":4,\"version\":1,\"value\":\"dmI=\"}],\
             \"more\":true,\"count\":4}\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--sort-by", "KEY", "--order", "DESCEND"],
            "k/d\n0\nk/c\nvc\nk/b\nvb\nk/a\nva3\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--sort-by", "KEY", "--order", "ASCEND"],
            "k/a\nva3\nk/b\nvb\nk/c\nvc\nk/d\n0\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--sort-by", "CREATE"],
            "k/a\nva3\nk/c\nvc\nk/b\nvb\nk/d\n0\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--sort-by", "CREATE", "--order", "DESCEND"],
            "k/d\n0\nk/b\nvb\nk/c\nvc\nk/a\nva3\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--sort-by", "MODIFY", "--order", "ASCEND"],
            "k/c\nvc\nk/b\nvb\nk/d\n0\nk/a\nva3\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND"],
            "k/a\nva3\nk/d\n0\nk/b\nvb\nk/c\nvc\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--sort-by", "VALUE"],
            "k/d\n0\nk/a\nva3\nk/b\nvb\nk/c\nvc\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--sort-by", "VALUE", "--order", "DESCEND"],
            "k/c\nvc\nk/b\nvb\nk/a\nva3\nk/d\n0\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--sort-by", "VERSION", "--order", "DESCEND", "--keys-only", "--limit", "1"],
            "k/a\n\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--sort-by", "VERSION", "--order", "DESCEND", "--limit", "1", "-w", "json"],
            "{\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":8,\"raft_term\":<n>},\
             \"kvs\":[{\"key\":\"ay9h\",\"create_revision\":2,\"mod_revision\":7,\"version\":3,\"value\":\"dmEz\"}],\
             \"more\":true,\"count\":4}\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND", "--limit", "2", "--print-value-only"],
            "va3\n0\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--print-value-only"],
            "va3\nvb\nvc\n0\n[exit 0]\n",
        ),
        step(
            &["get", "k/b", "--from-key"],
            "k/b\nvb\nk/c\nvc\nk/d\n0\nother\nx\n[exit 0]\n",
        ),
        step(
            &["get", "k/c", "--from-key", "--keys-only", "--limit", "1"],
            "k/c\n\n[exit 0]\n",
        ),
        step(
            &["get", "k/c", "--from-key", "--sort-by", "KEY", "--order", "DESCEND", "--print-value-only"],
            "x\n0\nvc\n[exit 0]\n",
        ),
        step(&["get", "k/a", "--rev", "1"], "[exit 0]\n"),
        step(&["get", "k/a", "--rev", "2"], "k/a\nva\n[exit 0]\n"),
        step(&["get", "k/a", "--rev", "6"], "k/a\nva2\n[exit 0]\n"),
        step(
            &["get", "k/", "--prefix", "--rev", "3", "-w", "json"],
            "{\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":8,\"raft_term\":<n>},\
             \"kvs\":[{\"key\":\"ay9h\",\"create_revision\":2,\"mod_revision\":2,\"version\":1,\"value\":\"dmE=\"},\
             {\"key\":\"ay9j\",\"create_revision\":3,\"mod_revision\":3,\"version\":1,\"value\":\"dmM=\"}],\
             \"count\":2}\n[exit 0]\n",
        ),
        step(&["get", "k/a", "k/c"], "k/a\nva3\nk/b\nvb\n[exit 0]\n"),
        step(
            &["get", "k/a", "-w", "fields"],
            "\"ClusterID\" : <n>\n\"MemberID\" : <n>\n\"Revision\" : 8\n\"RaftTerm\" : <n>\n\
             \"Key\" : \"k/a\"\n\"CreateRevision\" : 2\n\"ModRevision\" : 7\n\"Version\" : 3\n\
             \"Value\" : \"va3\"\n\"Lease\" : 0\n\"More\" : false\n\"Count\" : 1\n[exit 0]\n",
        ),
        step(&["get", "nothing"], "[exit 0]\n"),
        step(
            &["get", "nothing", "-w", "json"],
            "{\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":8,\"raft_term\":<n>}}\n[exit 0]\n",
        ),
        step(
            &["get", "k/", "--prefix", "--consistency", "s", "--print-value-only"],
            "va3\nvb\nvc\n0\n[exit 0]\n",
        ),
        step(
            &["get", ""],
            "[exit 1]\nError: etcdserver: key is not provided\n",
        ),
        step(
            &["put", "k/x", "v", "--lease", "1234abcd"],
            "[exit 1]\nError: etcdserver: requested lease not found\n",
        ),
        step(&["del", "k/zz"], "0\n[exit 0]\n"),
        step(
            &["del", "k/zz", "-w", "json"],
            "{\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":8,\"raft_term\":<n>}}\n[exit 0]\n",
        ),
        step(&["del", "k/d", "--prev-kv"], "1\nk/d\n0\n[exit 0]\n"), // rev 9
        step(
            &["del", "k/c", "--prev-kv", "-w", "json"], // rev 10
            "{\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":10,\"raft_term\":<n>},\
             \"deleted\":1,\"prev_kvs\":[{\"key\":\"ay9j\",\"create_revision\":3,\"mod_revision\":3,\"version\":1,\"value\":\"dmM=\"}]}\n[exit 0]\n",
        ),
        step(&["put", "k/c", "vc2", "--prev-kv"], "OK\n[exit 0]\n"), // rev 11
        step(
            &["put", "k/c", "vc3", "--prev-kv", "-w", "json"], // rev 12
            "{\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":12,\"raft_term\":<n>},\
             \"prev_kv\":{\"key\":\"ay9j\",\"create_revision\":11,\"mod_revision\":11,\"version\":1,\"value\":\"dmMy\"}}\n[exit 0]\n",
        ),
        step(&["put", "k/c", "vc4", "--prev-kv"], "OK\nk/c\nvc3\n[exit 0]\n"), // rev 13
        // Succeeding txn: b == vb and c exists.
        Step {
            // rev 14
            args: &["txn", "-i"],
            stdin: Some(TXN_SUCCESS_IN),
            expect: "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n\
                     SUCCESS\n\nOK\n\nk/c\nvc4\n\n0\n[exit 0]\n",
        },
        // Failing txn: the else branch reads b, writes g and deletes c.
        Step {
            // rev 15
            args: &["txn", "-i"],
            stdin: Some(TXN_FAILURE_IN),
            expect: "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n\
                     FAILURE\n\nk/b\nvb2\n\nOK\n\n1\n[exit 0]\n",
        },
        Step {
            // rev 16
            args: &["txn", "-i", "-w", "json"],
            stdin: Some(TXN_JSON_IN),
            expect: "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n\
                     {\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":16,\"raft_term\":<n>},\
                     \"succeeded\":true,\"responses\":[\
                     {\"Response\":{\"ResponseRange\":{\"header\":{\"revision\":15},\
                     \"kvs\":[{\"key\":\"ay9n\",\"create_revision\":15,\"mod_revision\":15,\"version\":1,\"value\":\"Nw==\"}],\"count\":1}}},\
                     {\"Response\":{\"ResponsePut\":{\"header\":{\"revision\":16}}}}]}\n[exit 0]\n",
        },
        // Nothing written by a failing txn with a read-only else branch.
        Step {
            args: &["txn", "-i", "-w", "json"],
            stdin: Some("create(\"k/b\") = \"0\"\n\n\nget k/zz\n\n"),
            expect: "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n\
                     {\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":16,\"raft_term\":<n>},\
                     \"responses\":[{\"Response\":{\"ResponseRange\":{\"header\":{\"revision\":16}}}}]}\n[exit 0]\n",
        },
        step(
            &["get", "k/", "--prefix"],
            "k/a\nva3\nk/b\nvb2\nk/g\n8\n[exit 0]\n",
        ),
        step(
            &["del", "k/", "--prefix", "--prev-kv"], // rev 17
            "3\nk/a\nva3\nk/b\nvb2\nk/g\n8\n[exit 0]\n",
        ),
        step(&["del", "k/", "--prefix"], "0\n[exit 0]\n"),
        step(
            &["get", "", "--from-key", "-w", "json"],
            "{\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":17,\"raft_term\":<n>},\
             \"kvs\":[{\"key\":\"b3RoZXI=\",\"create_revision\":8,\"mod_revision\":8,\"version\":1,\"value\":\"eA==\"}],\
             \"count\":1}\n[exit 0]\n",
        ),
        step(&["put", "c", "1"], "OK\n[exit 0]\n"), // rev 18
        step(&["put", "c", "2"], "OK\n[exit 0]\n"), // rev 19
        step(&["compaction", "18"], "compacted revision 18\n[exit 0]\n"),
        step(
            &["get", "c", "--rev", "17"],
            "[exit 1]\nError: etcdserver: mvcc: required revision has been compacted\n",
        ),
        step(
            &["get", "other", "--rev", "2"],
            "[exit 1]\nError: etcdserver: mvcc: required revision has been compacted\n",
        ),
        step(&["get", "c", "--rev", "18"], "c\n1\n[exit 0]\n"),
        step(&["get", "c", "--rev", "19"], "c\n2\n[exit 0]\n"),
        step(
            &["get", "c", "--rev", "20"],
            "[exit 1]\nError: etcdserver: mvcc: required revision is a future revision\n",
        ),
        step(
            &["compaction", "18"],
            "[exit 1]\nError: etcdserver: mvcc: required revision has been compacted\n",
        ),
        step(
            &["compaction", "5"],
            "[exit 1]\nError: etcdserver: mvcc: required revision has been compacted\n",
        ),
        step(
            &["compaction", "99"],
            "[exit 1]\nError: etcdserver: mvcc: required revision is a future revision\n",
        ),
        step(
            &["compaction", "--physical", "19"],
            "compacted revision 19\n[exit 0]\n",
        ),
        step(
            &["get", "", "--from-key", "--sort-by", "MODIFY", "-w", "json"],
            "{\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":19,\"raft_term\":<n>},\
             \"kvs\":[{\"key\":\"b3RoZXI=\",\"create_revision\":8,\"mod_revision\":8,\"version\":1,\"value\":\"eA==\"},\
             {\"key\":\"Yw==\",\"create_revision\":18,\"mod_revision\":19,\"version\":2,\"value\":\"Mg==\"}],\
             \"count\":2}\n[exit 0]\n",
        ),
        // The value of `put` read from stdin.
        Step {
            // rev 20
            args: &["put", "s/1"],
            stdin: Some("from-stdin"),
            expect: "OK\n[exit 0]\n",
        },
        step(&["get", "s/1", "--hex"], "\\x73\\x2f\\x31\n\\x66\\x72\\x6f\\x6d\\x2d\\x73\\x74\\x64\\x69\\x6e\n[exit 0]\n"),
        // Non-interactive txn: no prompts.
        Step {
            // rev 21
            args: &["txn"],
            stdin: Some("create(\"s/1\") > \"0\"\n\nput s/2 two\n\nput s/3 three\n\n"),
            expect: "SUCCESS\n\nOK\n[exit 0]\n",
        },
        step(
            &["del", "s/1", "s/3", "--prev-kv"], // rev 22
            "2\ns/1\nfrom-stdin\ns/2\ntwo\n[exit 0]\n",
        ),
        step(
            &["get", "s/", "--prefix", "--rev", "21", "--keys-only", "-w", "json"],
            "{\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":22,\"raft_term\":<n>},\
             \"kvs\":[{\"key\":\"cy8x\",\"create_revision\":20,\"mod_revision\":20,\"version\":1},\
             {\"key\":\"cy8y\",\"create_revision\":21,\"mod_revision\":21,\"version\":1}],\
             \"count\":2}\n[exit 0]\n",
        ),
        step(&["get", "s/", "--prefix"], "[exit 0]\n"),
        step(&["put", "c", "--ignore-value"], "OK\n[exit 0]\n"), // rev 23
        step(
            &["get", "c", "-w", "json"],
            "{\"header\":{\"cluster_id\":<n>,\"member_id\":<n>,\"revision\":23,\"raft_term\":<n>},\
             \"kvs\":[{\"key\":\"Yw==\",\"create_revision\":18,\"mod_revision\":23,\"version\":3,\"value\":\"Mg==\"}],\
             \"count\":1}\n[exit 0]\n",
        ),
        step(
            &["put", "nokey", "--ignore-value"],
            "[exit 1]\nError: etcdserver: key not found\n",
        ),
        step(
            &["del", "", "--from-key", "--prev-kv"], // rev 24
            "2\nc\n2\nother\nx\n[exit 0]\n",
        ),
        step(&["get", "", "--from-key"], "[exit 0]\n"),
        step(&["alarm", "list"], "[exit 0]\n"),
    ]
}

/// Runs the script on ferrocd and on a real etcd: each step's transcript
/// must equal the expected one on both.
#[test]
fn etcdctl_kv_script_matches_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let ferrocd = Server::ferrocd(dir.path(), &[]);
    let etcd = Server::etcd(dir.path(), &[]);
    let (f, e) = (ferrocd.endpoint(), etcd.endpoint());
    let mut failures = Vec::new();
    for (i, s) in script().iter().enumerate() {
        let got_f = transcript(&f, s.args, s.stdin);
        let got_e = transcript(&e, s.args, s.stdin);
        if got_f != got_e || got_f != s.expect {
            failures.push(format!(
                "step {i} etcdctl {:?}\n  expected: {:?}\n  ferrocd:  {:?}\n  etcd:     {:?}",
                s.args, s.expect, got_f, got_e
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} step(s) differ:\n{}\nferrocd log:\n{}",
        failures.len(),
        failures.join("\n"),
        ferrocd.log()
    );
}

fn json(endpoint: &str, args: &[&str]) -> Value {
    let out = etcdctl_ok(endpoint, args, None);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl {args:?}: bad json {e}: {out}"))
}

fn b64(v: &Value) -> String {
    let s = v.as_str().expect("base64 string");
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64"),
    )
    .unwrap()
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// `-w json` output parsed and checked field by field on ferrocd.
#[test]
fn etcdctl_json_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::ferrocd(dir.path(), &[]);
    let ep = s.endpoint();
    for i in 0..5 {
        assert_eq!(
            etcdctl_ok(
                &ep,
                &["put", &format!("j/{i}"), &format!("value-{i}")],
                None
            ),
            "OK\n"
        );
    }
    // revisions 2..=6
    let v = json(
        &ep,
        &["get", "j/", "--prefix", "--limit", "3", "-w", "json"],
    );
    assert_eq!(v["header"]["revision"], 6);
    assert_eq!(v["count"], 5);
    assert_eq!(v["more"], true);
    let kvs = v["kvs"].as_array().unwrap();
    assert_eq!(kvs.len(), 3);
    for (i, kv) in kvs.iter().enumerate() {
        assert_eq!(b64(&kv["key"]), format!("j/{i}"));
        assert_eq!(b64(&kv["value"]), format!("value-{i}"));
        assert_eq!(kv["create_revision"], 2 + i as i64);
        assert_eq!(kv["mod_revision"], 2 + i as i64);
        assert_eq!(kv["version"], 1);
        assert!(kv.get("lease").is_none(), "lease 0 is omitted: {kv}");
    }
    let header = &v["header"];
    let member_id = u64_of(&header["member_id"]);
    assert_ne!(u64_of(&header["cluster_id"]), 0);
    assert_ne!(member_id, 0);
    assert!(u64_of(&header["raft_term"]) > 0);

    // Whole range without limit: no `more` field (false is omitted).
    let v = json(&ep, &["get", "j/", "--prefix", "-w", "json"]);
    assert!(v.get("more").is_none(), "{v}");
    assert_eq!(v["kvs"].as_array().unwrap().len(), 5);
    assert_eq!(v["count"], 5);

    // keys-only: values are omitted.
    let v = json(&ep, &["get", "j/", "--prefix", "--keys-only", "-w", "json"]);
    for kv in v["kvs"].as_array().unwrap() {
        assert!(kv.get("value").is_none(), "{kv}");
    }

    // Historical read: the header carries the current revision.
    etcdctl_ok(&ep, &["put", "j/0", "again"], None); // rev 7
    let v = json(&ep, &["get", "j/0", "--rev", "3", "-w", "json"]);
    assert_eq!(v["header"]["revision"], 7);
    assert_eq!(b64(&v["kvs"][0]["value"]), "value-0");
    let v = json(&ep, &["get", "j/0", "-w", "json"]);
    assert_eq!(b64(&v["kvs"][0]["value"]), "again");
    assert_eq!(v["kvs"][0]["version"], 2);
    assert_eq!(v["kvs"][0]["create_revision"], 2);
    assert_eq!(v["kvs"][0]["mod_revision"], 7);

    // delete with prev-kv.
    let v = json(&ep, &["del", "j/", "--prefix", "--prev-kv", "-w", "json"]);
    assert_eq!(v["header"]["revision"], 8);
    assert_eq!(v["deleted"], 5);
    let prev: Vec<String> = v["prev_kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| b64(&kv["key"]))
        .collect();
    assert_eq!(prev, ["j/0", "j/1", "j/2", "j/3", "j/4"]);
    let v = json(&ep, &["get", "j/", "--prefix", "-w", "json"]);
    assert!(v.get("kvs").is_none() && v.get("count").is_none(), "{v}");
    assert_eq!(v["header"]["revision"], 8);
}

/// `endpoint status`, `endpoint health` and `member list` on ferrocd, with
/// the shape compared against a real etcd.
#[test]
fn etcdctl_endpoint_and_member_commands() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::ferrocd(dir.path(), &[]);
    let ep = s.endpoint();
    etcdctl_ok(&ep, &["put", "a", "1"], None);
    etcdctl_ok(&ep, &["put", "b", "2"], None);

    let v = json(&ep, &["endpoint", "status", "-w", "json"]);
    let arr = v.as_array().expect("array of endpoints");
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["Endpoint"], ep.as_str());
    let st = &arr[0]["Status"];
    assert!(st["version"].as_str().unwrap().starts_with("3.5."), "{st}");
    let member_id = u64_of(&st["header"]["member_id"]);
    assert_ne!(member_id, 0);
    assert_eq!(u64_of(&st["leader"]), member_id, "a single member leads");
    assert!(u64_of(&st["raftIndex"]) > 0, "{st}");
    assert!(u64_of(&st["raftAppliedIndex"]) > 0, "{st}");
    assert!(
        u64_of(&st["raftAppliedIndex"]) <= u64_of(&st["raftIndex"]),
        "{st}"
    );
    assert!(u64_of(&st["raftTerm"]) > 0, "{st}");
    assert_eq!(st["header"]["revision"], 3);
    assert!(u64_of(&st["dbSize"]) > 0, "{st}");

    // Simple output: `endpoint, id-hex, version, size, isLeader, isLearner,
    // term, index, applied, errors`.
    let line = etcdctl_ok(&ep, &["endpoint", "status"], None);
    let fields: Vec<&str> = line.trim_end().split(", ").collect();
    assert_eq!(fields[0], ep);
    assert_eq!(fields[1], format!("{member_id:x}"));
    assert!(fields[2].starts_with("3.5."), "{line}");
    assert_eq!(fields[4], "true", "is leader: {line}");
    assert_eq!(fields[5], "false", "is learner: {line}");

    // etcdctl 3.4 prints the simple health line on stderr.
    let out = etcdctl(&ep, &["endpoint", "health"], None);
    assert!(out.status.success(), "{out:?}");
    let health = String::from_utf8_lossy(&out.stderr);
    assert!(
        health.starts_with(&format!(
            "{ep} is healthy: successfully committed proposal: took = "
        )),
        "{health}"
    );
    let v = json(&ep, &["endpoint", "health", "-w", "json"]);
    assert_eq!(v[0]["endpoint"], ep.as_str(), "{v}");
    assert_eq!(v[0]["health"], true, "{v}");
    assert!(v[0].get("error").is_none(), "{v}");

    let v = json(&ep, &["member", "list", "-w", "json"]);
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{v}");
    let m = &members[0];
    assert_eq!(m["name"], "default");
    assert_eq!(u64_of(&m["ID"]), member_id);
    assert_eq!(m["clientURLs"], serde_json::json!([s.url()]));
    assert_eq!(
        m["peerURLs"],
        serde_json::json!([format!("http://127.0.0.1:{}", s.peer_port)])
    );
    assert!(m.get("isLearner").is_none(), "{m}");
    assert_eq!(u64_of(&v["header"]["member_id"]), member_id);
    assert_eq!(v["header"]["cluster_id"], st["header"]["cluster_id"]);

    let table = etcdctl_ok(&ep, &["member", "list"], None);
    assert_eq!(
        table,
        format!(
            "{member_id:x}, started, default, http://127.0.0.1:{}, {}, false\n",
            s.peer_port,
            s.url()
        )
    );
}

/// The header fields of `member list` and `endpoint status` are the ones
/// etcd sends (etcd's MemberList header has no revision).
#[test]
fn member_list_and_status_headers_match_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::ferrocd(dir.path(), &[]);
    let etcd = Server::etcd(dir.path(), &[]);
    let mut shapes = Vec::new();
    for ep in [s.endpoint(), etcd.endpoint()] {
        etcdctl_ok(&ep, &["put", "a", "1"], None);
        let members = json(&ep, &["member", "list", "-w", "json"]);
        let status = json(&ep, &["endpoint", "status", "-w", "json"]);
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        shapes.push((
            keys(&members["header"]),
            keys(&members["members"][0]),
            keys(&status[0]["Status"]["header"]),
            status[0]["Status"]["header"]["revision"].clone(),
        ));
    }
    assert_eq!(shapes[0], shapes[1], "ferrocd (left) vs etcd (right)");
}

/// `--cluster` finds the endpoints through the member list and dials the
/// advertised client URL (`http://127.0.0.1:port`) as given: etcdctl 3.4
/// then sends that whole URL as the HTTP/2 `:authority`, which grpc-go
/// accepts and the `h2` crate alone would reset (`edge/authority_fix.rs`).
#[test]
fn etcdctl_cluster_flag_dials_advertised_urls() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::ferrocd(dir.path(), &[]);
    let etcd = Server::etcd(dir.path(), &[]);
    let mut failures = Vec::new();
    for (who, ep, url) in [
        ("ferrocd", s.endpoint(), s.url()),
        ("etcd", etcd.endpoint(), etcd.url()),
    ] {
        for args in [
            &["endpoint", "status", "--cluster", "-w", "json"][..],
            &["endpoint", "health", "--cluster", "-w", "json"][..],
        ] {
            let out = etcdctl(&ep, args, None);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let parsed: Option<Value> = serde_json::from_str(&stdout).ok();
            let endpoint = parsed.as_ref().map(|v| {
                if args[1] == "status" {
                    v[0]["Endpoint"].clone()
                } else {
                    v[0]["endpoint"].clone()
                }
            });
            if !out.status.success() || endpoint != Some(Value::from(url.as_str())) {
                failures.push(format!(
                    "{who}: etcdctl {args:?}: {}\nstdout: {stdout}\nstderr: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
