//! `--auto-compaction-mode` / `--auto-compaction-retention` against the
//! real binary, side by side with a real etcd given the same flags.

mod common;

use common::Server;
use etcd_client::{Client, GetOptions};
use std::time::{Duration, Instant};

async fn connect(s: &Server) -> Client {
    Client::connect([s.url()], None).await.expect("connect")
}

/// ferrocd and etcd, each started with the same auto-compaction flags.
fn both(dir: &std::path::Path, mode: &str, retention: &str) -> [Server; 2] {
    let flags = [
        "--auto-compaction-mode",
        mode,
        "--auto-compaction-retention",
        retention,
    ];
    [Server::ferrocd(dir, &flags), Server::etcd(dir, &flags)]
}

/// Whether a read at `rev` is refused as compacted.
async fn compacted(c: &mut Client, rev: i64) -> bool {
    match c.get("k", Some(GetOptions::new().with_revision(rev))).await {
        Ok(_) => false,
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("required revision has been compacted"),
                "{text}"
            );
            true
        }
    }
}

/// Periodic retention of 1 s: the history older than about a second goes
/// away while recent revisions stay readable, on both servers.
#[test]
fn periodic_retention_compacts_old_history_like_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let servers = both(dir.path(), "periodic", "1s");
    let rt = common::runtime();
    rt.block_on(async {
        for s in &servers {
            let mut c = connect(s).await;
            // 3 s of writes, one every 20 ms.
            let start = Instant::now();
            let mut last = 0;
            while start.elapsed() < Duration::from_secs(3) {
                last = c
                    .put("k", "v", None)
                    .await
                    .unwrap()
                    .header()
                    .unwrap()
                    .revision();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(last > 50, "{}: only {last} revisions", s.url());
            // The first revisions are compacted (within a few periods)...
            let deadline = Instant::now() + Duration::from_secs(10);
            while !compacted(&mut c, 2).await {
                assert!(
                    Instant::now() < deadline,
                    "{}: revision 2 never compacted",
                    s.url()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // ...but not the last one, and not while it is within the window.
            let r = c
                .get("k", Some(GetOptions::new().with_revision(last)))
                .await
                .unwrap();
            assert_eq!(r.kvs()[0].mod_revision(), last, "{}", s.url());
        }
    });
    assert!(
        servers[0]
            .log()
            .contains("completed auto periodic compaction"),
        "ferrocd logs etcd's message: {}",
        servers[0].log()
    );
}

/// Revision mode checks every 5 minutes (etcd's interval), too slow for a
/// test run; its arithmetic is unit-tested in `src/auto_compactor.rs`.
/// Here: both servers start with it and answer normally, and both refuse
/// an unknown mode.
#[test]
fn revision_mode_starts_and_unknown_modes_are_refused_like_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let servers = both(dir.path(), "revision", "1000");
    let rt = common::runtime();
    rt.block_on(async {
        for s in &servers {
            let mut c = connect(s).await;
            c.put("k", "v", None).await.unwrap();
            assert!(!compacted(&mut c, 1).await);
        }
    });
    for (bin, extra) in [
        (env!("CARGO_BIN_EXE_ferrocd").to_string(), vec![]),
        (
            common::etcd_bin().display().to_string(),
            vec!["--logger", "zap"],
        ),
    ] {
        let data = dir.path().join(format!("bad-{}", extra.len()));
        let out = std::process::Command::new(&bin)
            .args([
                "--auto-compaction-mode",
                "hourly",
                "--auto-compaction-retention",
                "1",
            ])
            .args(["--listen-client-urls", "http://127.0.0.1:0"])
            .args(["--advertise-client-urls", "http://127.0.0.1:2379"])
            .args(["--listen-peer-urls", "http://127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .args(&extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bin} accepted an unknown mode");
        // etcd logs it as JSON (quotes escaped), ferrocd as text.
        assert!(
            stderr.contains("unknown auto-compaction-mode") && stderr.contains("hourly"),
            "{bin}: {stderr}"
        );
    }
}
