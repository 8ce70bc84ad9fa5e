//! Crash test: writers get acknowledgements for puts, the server is
//! SIGKILLed at a random moment, restarted, and every acknowledged put must
//! be there with its revision. Rounds: `FERROCD_CRASH_ROUNDS` (default 20);
//! seed: `FERROCD_CRASH_SEED` (printed, for reproduction).

mod common;

use common::Server;
use etcd_client::{Client, GetOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Concurrent writers per round (exercises group commit and pipelining).
const WRITERS: usize = 8;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// key -> (value, mod_revision) of every acknowledged put.
type Acked = Arc<Mutex<BTreeMap<String, (String, i64)>>>;
/// key -> value of a put whose answer never came (the kill raced it): it
/// may or may not have been applied.
type Unacked = Arc<Mutex<BTreeMap<String, String>>>;

#[test]
fn acknowledged_puts_survive_kill_9() {
    let rounds: usize = std::env::var("FERROCD_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("FERROCD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {rounds} rounds, FERROCD_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // Snapshots every 300 entries: crashes land before, during and after them.
    let mut server = Server::ferrocd(dir.path(), &["--snapshot-count", "300"]);
    let rt = common::runtime();
    let acked: Acked = Arc::new(Mutex::new(BTreeMap::new()));
    let unacked: Unacked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut compacted_at = 0i64;
    let mut max_acked_rev = 0i64;

    for round in 0..rounds {
        if round > 0 {
            server.restart();
        }
        // Verify everything acknowledged so far, then write until killed.
        rt.block_on(async {
            let mut c = Client::connect([server.url()], None).await.unwrap();
            let g = c
                .get("crash/", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            let rev = g.header().unwrap().revision();
            assert!(
                rev >= max_acked_rev,
                "round {round}: revision {rev} went back below acknowledged {max_acked_rev} (seed {seed})"
            );
            let found: BTreeMap<String, (String, i64)> = g
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        kv.key_str().unwrap().to_string(),
                        (kv.value_str().unwrap().to_string(), kv.mod_revision()),
                    )
                })
                .collect();
            {
            let mut unacked = unacked.lock().unwrap();
            for (k, (v, r)) in acked.lock().unwrap().iter_mut() {
                let got = found.get(k);
                // An unanswered overwrite may have landed after the ack.
                if let (Some((gv, gr)), Some(u)) = (got, unacked.get(k)) {
                    if gv == u && gr > r {
                        (*v, *r) = (gv.clone(), *gr);
                        continue;
                    }
                }
                assert_eq!(
                    got,
                    Some(&(v.clone(), *r)),
                    "round {round}: acknowledged put {k}={v}@{r} lost or changed (seed {seed})"
                );
            }
            unacked.clear();
            }
            if compacted_at > 0 {
                let e = c
                    .get("crash/", Some(GetOptions::new().with_revision(compacted_at - 1)))
                    .await
                    .unwrap_err();
                assert!(
                    e.to_string().contains("required revision has been compacted"),
                    "round {round}: compaction at {compacted_at} lost: {e} (seed {seed})"
                );
            }
            // Every few rounds, compact at the newest acknowledged revision.
            if round % 5 == 4 && rev > compacted_at {
                c.compact(rev, None).await.unwrap();
                compacted_at = rev;
            }
        });

        let kill_after = Duration::from_millis(50 + rng.below(400));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let url = server.url();
                let acked = acked.clone();
                let unacked = unacked.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let rt = common::runtime();
                    rt.block_on(async move {
                        let Ok(mut c) = Client::connect([url], None).await else {
                            return;
                        };
                        let mut i = 0u64;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let key = format!("crash/r{round:03}/w{w}/{i:06}");
                            let val = format!("v{round}-{w}-{i}");
                            // A put that errors (server killed) is unacknowledged.
                            match c.put(key.clone(), val.clone(), None).await {
                                Ok(r) => {
                                    let rev = r.header().unwrap().revision();
                                    acked.lock().unwrap().insert(key, (val, rev));
                                }
                                Err(_) => {
                                    unacked.lock().unwrap().insert(key, val);
                                    return;
                                }
                            }
                            i += 1;
                            // Overwrite a key of this writer now and then, so
                            // later versions must win after replay.
                            if i.is_multiple_of(7) {
                                let key = format!("crash/r{round:03}/w{w}/{:06}", i - 3);
                                let val = format!("v{round}-{w}-{i}-again");
                                match c.put(key.clone(), val.clone(), None).await {
                                    Ok(r) => {
                                        let rev = r.header().unwrap().revision();
                                        acked.lock().unwrap().insert(key, (val, rev));
                                    }
                                    Err(_) => {
                                        unacked.lock().unwrap().insert(key, val);
                                        return;
                                    }
                                }
                            }
                        }
                    });
                })
            })
            .collect();
        std::thread::sleep(kill_after);
        server.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        max_acked_rev = acked
            .lock()
            .unwrap()
            .values()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0);
    }
    let n = acked.lock().unwrap().len();
    eprintln!("crash test: {n} acknowledged keys verified across {rounds} kill -9 rounds");
    assert!(
        n > rounds,
        "too few acknowledged writes to mean anything: {n}"
    );
    // Final check after the last kill.
    server.restart();
    rt.block_on(async {
        let mut c = Client::connect([server.url()], None).await.unwrap();
        let unacked = unacked.lock().unwrap().clone();
        let acked = acked.lock().unwrap().clone();
        for (k, (v, r)) in &acked {
            let g = c.get(k.as_str(), None).await.unwrap();
            let kv = g
                .kvs()
                .first()
                .unwrap_or_else(|| panic!("lost {k} (seed {seed})"));
            let got = (kv.value_str().unwrap(), kv.mod_revision());
            if unacked.get(k).is_some_and(|u| u == got.0 && got.1 > *r) {
                continue;
            }
            assert_eq!(got, (v.as_str(), *r), "{k} (seed {seed})");
        }
    });
}
