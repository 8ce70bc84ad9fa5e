//! `progress_notify` watches with `--experimental-watch-progress-notify-interval`:
//! an idle watch gets an empty response (its watch id, the current
//! revision) every interval; compared with a real etcd given the same flag.

mod common;

use common::Server;
use etcd_client::{Client, WatchOptions};
use std::time::Duration;

/// (watch id, revision, events) of the first response after `created`.
async fn first_notification(url: String) -> (i64, i64, usize, bool) {
    let mut c = Client::connect([url], None).await.expect("connect");
    c.put("other", "x", None).await.expect("put"); // revision 2
    let mut stream = c
        .watch("p", Some(WatchOptions::new().with_progress_notify()))
        .await
        .expect("watch");
    let created = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("created in time")
        .expect("stream ok")
        .expect("a response");
    assert!(created.created());
    let r = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a progress notification within 10 s at a 1 s interval")
        .expect("stream ok")
        .expect("a response");
    let rev = r.header().map_or(0, |h| h.revision());
    (r.watch_id(), rev, r.events().len(), r.canceled())
}

#[test]
fn idle_progress_notify_watch_gets_a_bookmark_like_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let flag = ["--experimental-watch-progress-notify-interval", "1s"];
    let ferrocd = Server::ferrocd(dir.path(), &flag);
    let etcd = Server::etcd(dir.path(), &flag);
    let rt = common::runtime();
    let got = rt.block_on(first_notification(ferrocd.url()));
    let want = rt.block_on(first_notification(etcd.url()));
    assert_eq!(want, (0, 2, 0, false), "etcd's answer");
    assert_eq!(got, want);
}

#[test]
fn a_bad_interval_is_refused_like_etcd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrocd"))
        .args(["--experimental-watch-progress-notify-interval", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "invalid value \"soon\" for flag -experimental-watch-progress-notify-interval: parse error"
        ),
        "{err}"
    );
}
