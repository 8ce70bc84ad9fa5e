//! `ferrocd-perf`: end-to-end measurements.
//!
//! - `put`, `range`: a load generator against any etcd v3 endpoint (ferrocd
//!   or etcd), modelled on etcd's `benchmark` tool (see `load.rs`);
//!   `perf/compare.sh` runs it against both side by side.
//! - `watch`: put-to-event latency, missing/duplicate events and the
//!   server's memory per watcher (see `watch.rs`); `perf/compare-watch.sh`
//!   runs it against both.
//! - `lease-keepalive`: keep-alive throughput, latency and CPU for many
//!   leases kept alive over a few streams; `lease-expire`: put latency
//!   while many leases expire at once (see `lease.rs`, `lease_expire.rs`);
//!   `perf/compare-lease.sh` runs both against etcd and ferrocd.
//! - `chart`: latency against throughput as an SVG, from the compare
//!   scripts' TSV (see `chart.rs`).
//! - `fsync-floor`: times pwrite + fdatasync of one block into a
//!   preallocated file (the cost every acknowledged write pays at least
//!   once).

mod args;
mod chart;
mod grpc;
mod lease;
mod lease_expire;
mod load;
mod watch;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

const USAGE_FSYNC: &str =
    "usage: ferrocd-perf fsync-floor [--dir DIR] [--count N] [--block-bytes B]";
const COUNT_MAX: usize = 1_000_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("");
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "{}\n{}\n{}\n{}\n{USAGE_FSYNC}\n{}",
            load::USAGE,
            watch::USAGE,
            lease::USAGE,
            lease_expire::USAGE,
            chart::USAGE
        );
        return;
    }
    let result = match cmd {
        "fsync-floor" => fsync_floor(&args[1..]),
        "chart" => chart::main(&args[1..]),
        "put" | "range" | "txn-put" | "mixed" => load::main(cmd, &args[1..]),
        "watch" => watch::main(&args[1..]),
        "lease-keepalive" => lease::main(&args[1..]),
        "lease-expire" => lease_expire::main(&args[1..]),
        _ => {
            eprintln!(
                "{}\n{}\n{}\n{}\n{USAGE_FSYNC}\n{}",
                load::USAGE,
                watch::USAGE,
                lease::USAGE,
                lease_expire::USAGE,
                chart::USAGE
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("ferrocd-perf {cmd}: {e}");
        std::process::exit(1);
    }
}

fn fsync_floor(args: &[String]) -> Result<(), String> {
    let f = args::Flags::parse(args, &["--dir", "--count", "--block-bytes"], &[])?;
    let dir: PathBuf = f.get("--dir", std::env::temp_dir())?;
    let count: usize = f.get("--count", 2000)?;
    let block: usize = f.get("--block-bytes", 4096)?;
    if count == 0 || count > COUNT_MAX {
        return Err(format!("--count must be 1..={COUNT_MAX}"));
    }
    let path = dir.join(format!("ferrocd-perf-fsync-{}.tmp", std::process::id()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let len = (count * block) as libc::off_t;
    // SAFETY: fd is valid for the lifetime of `file`.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        return Err(format!("fallocate: errno {rc}"));
    }
    file.sync_all().map_err(|e| e.to_string())?;
    let buf = vec![0xa5u8; block];
    let mut lat_us = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        file.write_all_at(&buf, (i * block) as u64)
            .map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        lat_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    lat_us.sort_by(f64::total_cmp);
    let pct = |p: f64| lat_us[((lat_us.len() - 1) as f64 * p).round() as usize];
    println!(
        "pwrite({block} B)+fdatasync x{count} in {}: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
        dir.display(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
