//! WAL behaviour on real files through io_uring (temp dirs under the system temp dir).

mod common;

use common::{layout, rec, recs, small_opts, Rng};
use ferrocd_wal::frame::RECORD_HEADER_BYTES;
use ferrocd_wal::{BatchTicket, Prealloc, Record, RecoveryError, Wal, WalOptions};
use std::os::fd::RawFd;
use std::path::Path;

fn wal_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    v.sort();
    v
}

fn readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    n == 1 && p.revents & libc::POLLIN != 0
}

#[test]
fn round_trip_pipelined_with_rotation_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(16 * 1024);
    let (mut wal, r) = Wal::open(dir.path(), opts.clone()).unwrap();
    assert!(r.records.is_empty());
    let efd = wal.event_fd().expect("io_uring exposes an eventfd");
    let mut all = Vec::new();
    let mut next = 1u64;
    let mut last = BatchTicket(0);
    for b in 0..80 {
        let batch = recs(next, 1 + b % 13);
        next += batch.len() as u64;
        loop {
            match wal.submit(&batch) {
                Ok(t) => {
                    last = t;
                    break;
                }
                Err(ferrocd_wal::WalError::QueueFull { .. }) => {
                    assert!(readable(efd, 10_000), "eventfd never became readable");
                    wal.poll_completed().unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        all.extend(batch);
    }
    // Reactor style: wait on the eventfd, then reap.
    while wal.durable_ticket() < Some(last) {
        if wal.in_flight() > 0 {
            assert!(readable(efd, 10_000), "eventfd never became readable");
        }
        wal.poll_completed().unwrap();
    }
    assert_eq!(wal.in_flight(), 0);
    let segs = wal.segments().to_vec();
    assert!(segs.len() >= 3, "expected rotation, got {}", segs.len());
    assert_eq!(
        wal_files(dir.path()),
        segs.iter().map(|s| s.name.clone()).collect::<Vec<_>>()
    );
    drop(wal);
    let (mut wal, r) = Wal::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(r.records, all);
    assert!(r.torn.is_none());
    wal.append_sync(&recs(next, 3)).unwrap();
    all.extend(recs(next, 3));
    drop(wal);
    let (_, r) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(r.records, all);
}

#[test]
fn zero_filled_segments_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_bytes: 64 * 1024,
        prealloc: Prealloc::ZeroFill,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
    let mut all = Vec::new();
    for b in 0..20u64 {
        let batch: Vec<Record> = (0..16).map(|i| rec(b * 16 + i + 1, 256)).collect();
        wal.append_sync(&batch).unwrap();
        all.extend(batch);
    }
    drop(wal);
    let (_, r) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(r.records, all);
}

enum Damage {
    /// Bytes from the offset on read as zeros (preallocated space never written).
    Zero,
    /// The file ends at the offset.
    Truncate,
    /// Garbage from the offset to the end of the record, zeros after it.
    Garble,
}

/// Writes 4 durable batches and a last record, then damages a copy of the
/// segment at every byte offset of that last record and recovers it.
#[test]
fn torn_last_record_at_every_offset_real_files() {
    let src = tempfile::tempdir().unwrap();
    let opts = small_opts(8192);
    let (mut wal, _) = Wal::open(src.path(), opts.clone()).unwrap();
    let mut batches: Vec<Vec<Record>> = (0..4u64).map(|b| recs(b * 3 + 1, 3)).collect();
    for b in &batches {
        wal.append_sync(b).unwrap();
    }
    let last = rec(100, 300);
    wal.append_sync(std::slice::from_ref(&last)).unwrap();
    let seg = wal.segments()[0].name.clone();
    assert_eq!(wal.segments().len(), 1);
    drop(wal);
    let original = std::fs::read(src.path().join(&seg)).unwrap();
    batches.push(vec![last.clone()]);
    let (start, end) = *layout(&batches).last().unwrap();
    assert_eq!(end - start, RECORD_HEADER_BYTES + 300);
    let durable: Vec<Record> = batches[..4].concat();
    let mut rng = Rng(0x5eed);
    let mut cases = 0;
    for off in start..=end {
        for damage in [Damage::Zero, Damage::Truncate, Damage::Garble] {
            let mut bytes = original.clone();
            match damage {
                Damage::Zero => bytes[off..].fill(0),
                Damage::Truncate => bytes.truncate(off),
                Damage::Garble => {
                    for b in &mut bytes[off..end] {
                        *b = (rng.next_u64() as u8) | 0x10;
                    }
                }
            }
            // Only a cut exactly at the record's end leaves it complete.
            let complete = off == end;
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(&seg), &bytes).unwrap();
            let (mut wal, r) = Wal::open(dir.path(), opts.clone())
                .unwrap_or_else(|e| panic!("offset {off}: refused to open: {e}"));
            let mut want = durable.clone();
            if complete {
                want.push(last.clone());
            }
            assert_eq!(r.records, want, "offset {off}");
            assert_eq!(
                r.torn.is_some(),
                !complete && bytes.len() > start && bytes[start..].iter().any(|&b| b != 0),
                "offset {off}"
            );
            if off % 37 == 0 {
                // The repaired log keeps working.
                wal.append_sync(&[rec(200, 50)]).unwrap();
                drop(wal);
                let (_, r2) = Wal::open(dir.path(), opts.clone()).unwrap();
                want.push(rec(200, 50));
                assert_eq!(r2.records, want, "offset {off} after append");
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 3 * (end - start + 1));
}

#[test]
fn bit_flip_in_middle_record_real_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(1 << 16);
    let (mut wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
    let batches: Vec<Vec<Record>> = (0..8u64).map(|b| recs(b * 4 + 1, 4)).collect();
    for b in &batches {
        wal.append_sync(b).unwrap();
    }
    let seg = wal.segments()[0].name.clone();
    drop(wal);
    let (start, _) = layout(&batches)[13];
    let path = dir.path().join(&seg);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[start + 20] ^= 0x40; // inside the index field
    std::fs::write(&path, &bytes).unwrap();
    let err = Wal::open(dir.path(), opts).unwrap_err();
    match &err {
        RecoveryError::Corrupt {
            file,
            offset,
            reason,
        } => {
            assert_eq!(file, &seg);
            assert_eq!(*offset, start as u64);
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("{seg} at byte offset {start}")),
        "{err}"
    );
    // Nothing was repaired or removed.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn release_removes_old_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(4096);
    let (mut wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
    for b in 0..30u64 {
        wal.append_sync(&recs(b * 4 + 1, 4)).unwrap();
    }
    let segs = wal.segments().to_vec();
    assert!(segs.len() >= 4);
    let removed = wal.release_to(segs[2].first_index).unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(
        wal_files(dir.path()),
        segs[2..].iter().map(|s| s.name.clone()).collect::<Vec<_>>()
    );
    drop(wal);
    let (_, r) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(r.records[0].index, segs[2].first_index);
}

#[test]
fn leftover_tmp_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(4096);
    let (mut wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
    wal.append_sync(&recs(1, 3)).unwrap();
    drop(wal);
    std::fs::write(dir.path().join("README"), b"not a segment").unwrap();
    let (_, r) = Wal::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(r.records, recs(1, 3));
    std::fs::write(dir.path().join("bogus.wal"), b"x").unwrap();
    assert!(matches!(
        Wal::open(dir.path(), opts).unwrap_err(),
        RecoveryError::BadFileName { .. }
    ));
}

#[test]
fn invalid_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(100);
    assert!(matches!(
        Wal::open(dir.path(), opts).unwrap_err(),
        RecoveryError::Options(_)
    ));
}

/// A write the kernel rejects surfaces as `IoFailure::Write`, and the linked
/// fdatasync is cancelled instead of running.
#[test]
fn uring_write_error_is_reported_and_cancels_the_sync() {
    use ferrocd_wal::io::{FileSystem, IoFailure, UringIo, WalIo};
    let dir = tempfile::tempdir().unwrap();
    let mut io = UringIo::open_dir(dir.path(), 8).unwrap();
    let f = io.create("x").unwrap();
    // Far beyond any filesystem's maximum file size: EFBIG/EINVAL.
    io.submit_write_sync(f, 1 << 62, vec![1; 512], 7).unwrap();
    let fd = io.event_fd().unwrap();
    assert!(readable(fd, 10_000));
    let mut out = Vec::new();
    while out.is_empty() {
        io.reap(true, &mut out).unwrap();
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].tag, 7);
    assert!(
        matches!(out[0].result, Err(IoFailure::Write(_))),
        "{:?}",
        out[0].result
    );
    // A good batch on the same ring still works.
    io.submit_write_sync(f, 0, vec![2; 512], 8).unwrap();
    out.clear();
    while out.is_empty() {
        io.reap(true, &mut out).unwrap();
    }
    assert!(out[0].result.is_ok());
    assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), vec![2; 512]);
}
