//! `--listen-metrics-urls`: `/health` and `/metrics` over HTTP/1.1 on
//! ferrocd and on a real etcd given the same flag.

mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One HTTP/1.1 GET: (status code, raw response).
fn get(port: u16, target: &str) -> (u16, String) {
    request(port, "GET", target)
}

/// One HTTP/1.1 request with any method: (status code, raw response).
fn request(port: u16, method: &str, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {raw:?}"));
    (code, raw)
}

/// The body of a raw response, chunked transfer coding undone (etcd's Go
/// server streams `/metrics` in chunks that can split a line).
fn body(raw: &str) -> String {
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return rest.to_string();
    }
    let mut out = String::new();
    let mut rest = rest;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// The value of an unlabelled metric line `name value`.
fn metric(raw: &str, name: &str) -> Option<f64> {
    body(raw)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn health_and_metrics_like_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [common::free_port(), common::free_port()];
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let servers = [
        Server::ferrocd(dir.path(), &["--listen-metrics-urls", &urls[0]]),
        Server::etcd(dir.path(), &["--listen-metrics-urls", &urls[1]]),
    ];
    let rt = common::runtime();
    let mut revisions = Vec::new();
    for s in &servers {
        revisions.push(rt.block_on(async {
            let mut c = etcd_client::Client::connect([s.url()], None).await.unwrap();
            for i in 0..5 {
                c.put(format!("k{i}"), "v", None).await.unwrap();
            }
            c.status().await.unwrap().header().unwrap().revision()
        }));
    }
    for (s, port) in servers.iter().zip(ports) {
        let who = s.url();
        for target in [
            "/health",
            "/health?serializable=true",
            "/health?exclude=NOSPACE&serializable=true",
        ] {
            let (code, raw) = get(port, target);
            assert_eq!(code, 200, "{who} {target}: {raw}");
            assert!(raw.contains(r#"{"health":"true""#), "{who} {target}: {raw}");
        }
        let (code, raw) = get(port, "/nope");
        assert_eq!(code, 404, "{who}: {raw}");
        assert!(raw.ends_with("404 page not found\n"), "{who}: {raw:?}");
        let (code, raw) = get(port, "/metrics");
        assert_eq!(code, 200, "{who}: {raw}");
        assert!(
            raw.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
            "{who}"
        );
        assert_eq!(metric(&raw, "etcd_server_has_leader"), Some(1.0), "{who}");
        assert_eq!(metric(&raw, "etcd_server_is_leader"), Some(1.0), "{who}");
        assert!(metric(&raw, "etcd_mvcc_db_total_size_in_bytes").is_some_and(|v| v > 0.0));
        assert!(metric(&raw, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));
        assert!(metric(&raw, "etcd_server_proposals_applied_total").is_some_and(|v| v >= 5.0));
    }
    // Values that follow ferrocd's own state exactly.
    let (_, raw) = get(ports[0], "/metrics");
    assert_eq!(
        metric(&raw, "etcd_debugging_mvcc_current_revision"),
        Some(revisions[0] as f64)
    );
    assert_eq!(
        metric(&raw, "etcd_debugging_mvcc_compact_revision"),
        Some(0.0)
    );
    assert_eq!(metric(&raw, "etcd_debugging_mvcc_watcher_total"), Some(0.0));
    // The client port answers HTTP/1.1 as well (gRPC clients keep working:
    // the puts above went through it).
    for s in &servers {
        let who = s.url();
        let port = s.client_port;
        for target in ["/health", "/health?serializable=true"] {
            let (code, raw) = request(port, "GET", target);
            assert_eq!(code, 200, "{who} {target}: {raw}");
            assert!(raw.contains(r#"{"health":"true""#), "{who}: {raw}");
        }
        let (code, raw) = request(port, "GET", "/version");
        assert_eq!(code, 200, "{who}: {raw}");
        assert!(
            raw.contains("Content-Type: application/json"),
            "{who}: {raw}"
        );
        assert!(
            raw.contains(r#"{"etcdserver":"3."#) && raw.contains(r#""etcdcluster":"3."#),
            "{who}: {raw}"
        );
        let (code, raw) = request(port, "GET", "/metrics");
        assert_eq!(code, 200, "{who}");
        assert_eq!(metric(&raw, "etcd_server_has_leader"), Some(1.0), "{who}");
        let (code, raw) = request(port, "GET", "/nope");
        assert_eq!(code, 404, "{who}: {raw}");
        assert!(raw.ends_with("404 page not found\n"), "{who}: {raw:?}");
        let (code, raw) = request(port, "POST", "/health");
        assert_eq!(code, 405, "{who}: {raw}");
        assert!(raw.contains("Allow: GET"), "{who}: {raw}");
    }
    // A flag value that is not a URL is refused by both at startup.
    for (bin, extra) in [
        (env!("CARGO_BIN_EXE_ferrocd").to_string(), vec![]),
        (
            common::etcd_bin().display().to_string(),
            vec!["--logger", "zap"],
        ),
    ] {
        let out = std::process::Command::new(&bin)
            .args(["--listen-metrics-urls", "not a url"])
            .arg("--data-dir")
            .arg(dir.path().join(format!("bad-{}", extra.len())))
            .args(&extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bin} accepted a bad metrics URL");
    }
}
