//! `ferrocd-perf`: end-to-end measurements. Today it measures the machine's
//! floors that bound a durable put: `fsync-floor` times pwrite + fdatasync
//! of one block into a preallocated file (the cost every acknowledged write
//! pays at least once). The load generator against ferrocd and etcd joins it
//! with the server.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

const USAGE: &str = "usage: ferrocd-perf fsync-floor [--dir DIR] [--count N] [--block-bytes B]";
const COUNT_MAX: usize = 1_000_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fsync-floor") => {
            if let Err(e) = fsync_floor(&args[1..]) {
                eprintln!("ferrocd-perf: {e}");
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|_| format!("bad value for {name}")),
    }
}

fn fsync_floor(args: &[String]) -> Result<(), String> {
    let dir: PathBuf = flag(args, "--dir", std::env::temp_dir())?;
    let count: usize = flag(args, "--count", 2000)?;
    let block: usize = flag(args, "--block-bytes", 4096)?;
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
