//! WAL group commit throughput, and one durable append against the raw
//! pwrite+fdatasync floor of the same disk.
//!
//! Groups:
//! - `wal_group_commit/append_sync_256B/{1,16,256}`: one batch of N records of
//!   256 payload bytes, made durable with ONE write and ONE fdatasync (linked
//!   io_uring SQEs), default options (64 MiB fallocate'd segments). Criterion
//!   reports records/s and bytes/s (payload bytes).
//! - `fdatasync_floor/*`: one durable 4 KiB append per iteration.
//!   `raw_pwrite_4KiB_{before,after}` is the floor, measured before and after
//!   the WAL cases to bracket drift: plain `pwrite` of 4 KiB into a
//!   preallocated, zero-filled, fsynced file followed by `fdatasync` (libc).
//!   The WAL cases append one record whose frame is exactly 4 KiB, once with
//!   zero-filled segments (same conditions as the floor) and once with the
//!   default fallocate'd segments. WAL batches start 32 bytes past a page
//!   boundary (segment header), so each 4 KiB batch touches two pages.
//!
//! All files live in a temp dir under the system temp dir (same filesystem as
//! /tmp). Every case runs 1 s warm-up + 3 s measurement; `--quick` is
//! supported by criterion itself.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrocd_wal::frame::RECORD_HEADER_BYTES;
use ferrocd_wal::{Prealloc, Record, Wal, WalOptions};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Duration;

/// Payload of a group-commit record.
const RECORD_BYTES: usize = 256;
/// Batch sizes measured (records per write + fdatasync).
const BATCH_SIZES: [usize; 3] = [1, 16, 256];
/// Size of one write in the floor comparison.
const FLOOR_WRITE_BYTES: usize = 4096;
/// Preallocated size of the raw floor file; writes wrap around inside it.
const FLOOR_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Zero-filled WAL segment size for the floor comparison: large enough that
/// no rotation (which zero-fills the next segment) happens while measuring.
const ZERO_FILL_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;
/// Pause after creating the floor comparison's files, before measuring.
const SETTLE_SECS: u64 = 3;
const WARM_UP_SECS: u64 = 1;
const MEASUREMENT_SECS: u64 = 3;

fn records(n: usize, payload: usize) -> Vec<Record> {
    (0..n as u64)
        .map(|i| Record::new(1, i + 1, vec![(i as u8) | 1; payload]))
        .collect()
}

fn open_wal(dir: &std::path::Path, opts: WalOptions) -> Wal {
    let (mut wal, _) = Wal::open(dir, opts).expect("open WAL");
    // First append opens the first segment and prepares the next one: keep
    // that one-off cost out of the measurement.
    wal.append_sync(&records(1, RECORD_BYTES))
        .expect("warm-up append");
    wal
}

fn group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut wal = open_wal(dir.path(), WalOptions::default());
    let mut g = c.benchmark_group("wal_group_commit");
    for &n in &BATCH_SIZES {
        let batch = records(n, RECORD_BYTES);
        g.throughput(Throughput::ElementsAndBytes {
            elements: n as u64,
            bytes: (n * RECORD_BYTES) as u64,
        });
        g.bench_with_input(
            BenchmarkId::new("append_sync_256B", n),
            &batch,
            |b, batch| b.iter(|| wal.append_sync(batch).expect("append_sync")),
        );
    }
    g.finish();
}

fn raw_floor_file(dir: &std::path::Path) -> std::fs::File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("floor.dat"))
        .expect("create floor file");
    let zeros = vec![0u8; 1024 * 1024];
    let mut off = 0u64;
    while off < FLOOR_FILE_BYTES {
        file.write_all_at(&zeros, off).expect("zero-fill");
        off += zeros.len() as u64;
    }
    file.sync_all().expect("fsync floor file");
    file
}

fn floor(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Set every file up first, then let the device settle: zero-filling
    // hundreds of MiB right before a case slows its flushes for seconds.
    let file = raw_floor_file(dir.path());
    let rec = records(1, FLOOR_WRITE_BYTES - RECORD_HEADER_BYTES); // frame is exactly 4 KiB
    let mut wals: Vec<(&str, Wal, tempfile::TempDir)> = [
        (
            "wal_append_4KiB_zerofill",
            Prealloc::ZeroFill,
            ZERO_FILL_SEGMENT_BYTES,
        ),
        (
            "wal_append_4KiB_fallocate",
            Prealloc::Fallocate,
            ferrocd_wal::SEGMENT_BYTES_DEFAULT,
        ),
    ]
    .into_iter()
    .map(|(label, prealloc, segment_bytes)| {
        let wal_dir = tempfile::tempdir_in(dir.path()).expect("temp dir");
        let wal = open_wal(
            wal_dir.path(),
            WalOptions {
                segment_bytes,
                prealloc,
                ..WalOptions::default()
            },
        );
        (label, wal, wal_dir)
    })
    .collect();
    std::thread::sleep(Duration::from_secs(SETTLE_SECS));

    let mut g = c.benchmark_group("fdatasync_floor");
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: FLOOR_WRITE_BYTES as u64,
    });
    let fd = file.as_raw_fd();
    let buf = vec![0xa5u8; FLOOR_WRITE_BYTES];
    let mut pos = 0u64;
    let mut raw = |label: &str, g: &mut criterion::BenchmarkGroup<'_, _>| {
        g.bench_function(label, |b| {
            b.iter(|| {
                // SAFETY: valid fd and a buffer of FLOOR_WRITE_BYTES bytes.
                let n = unsafe {
                    libc::pwrite(
                        fd,
                        buf.as_ptr().cast(),
                        FLOOR_WRITE_BYTES,
                        pos as libc::off_t,
                    )
                };
                assert_eq!(n, FLOOR_WRITE_BYTES as isize, "pwrite");
                // SAFETY: plain syscall on a valid fd.
                assert_eq!(unsafe { libc::fdatasync(fd) }, 0, "fdatasync");
                pos = (pos + FLOOR_WRITE_BYTES as u64) % FLOOR_FILE_BYTES;
            })
        });
    };
    // The floor is measured before and after the WAL cases to bracket drift
    // from neighbour IO on a shared machine.
    raw("raw_pwrite_4KiB_before", &mut g);
    for (label, wal, _) in &mut wals {
        g.bench_function(*label, |b| {
            b.iter(|| wal.append_sync(&rec).expect("append_sync"))
        });
    }
    raw("raw_pwrite_4KiB_after", &mut g);
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(WARM_UP_SECS))
        .measurement_time(Duration::from_secs(MEASUREMENT_SECS))
        .sample_size(20)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = group_commit, floor
}
criterion_main!(benches);
