//! WAL behaviour over the in-memory, fault-injecting backend.

mod common;

use common::{layout, rec, recs, small_opts};
use ferrocd_wal::frame::{frame_len, RECORD_HEADER_BYTES};
use ferrocd_wal::io::{Crash, MemFs};
use ferrocd_wal::segment::{parse_segment_name, SEGMENT_HEADER_BYTES};
use ferrocd_wal::{BatchTicket, Record, RecoveryError, Wal, WalError};

fn open(fs: &MemFs, seg: u64) -> (Wal<MemFs>, ferrocd_wal::Recovered) {
    Wal::open_with(fs.clone(), small_opts(seg)).expect("open")
}

fn wal_segments(fs: &MemFs) -> Vec<String> {
    fs.names()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect()
}

#[test]
fn empty_dir_opens_empty() {
    let fs = MemFs::new();
    let (wal, r) = open(&fs, 4096);
    assert!(r.records.is_empty());
    assert!(r.torn.is_none());
    assert!(wal.segments().is_empty());
    assert_eq!(wal.event_fd(), None);
    // The next segment is prepared ahead.
    assert_eq!(fs.names(), vec!["0000000000000000.wal.tmp".to_string()]);
}

#[test]
fn round_trip_many_batches_with_rotation() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    let mut all = Vec::new();
    let mut next = 1;
    for b in 0..60 {
        let batch = recs(next, 1 + b % 9);
        next += batch.len() as u64;
        wal.append_sync(&batch).unwrap();
        all.extend(batch);
    }
    let segs = wal.segments().to_vec();
    assert!(
        segs.len() > 5,
        "expected rotation, got {} segments",
        segs.len()
    );
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(parse_segment_name(&s.name), Some((s.seq, s.first_index)));
        if i > 0 {
            assert_eq!(s.seq, segs[i - 1].seq + 1);
            assert!(s.first_index > segs[i - 1].first_index);
        }
    }
    // One write and one sync per batch (plus segment preparation).
    drop(wal);
    fs.crash(Crash::DropUnsynced);
    let (wal, r) = open(&fs, 4096);
    assert_eq!(r.records, all);
    assert!(r.torn.is_none());
    assert_eq!(wal.segments(), &segs[..]);
}

#[test]
fn one_write_and_one_sync_per_batch() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 1 << 20);
    wal.append_sync(&recs(1, 1)).unwrap(); // first batch rotates into segment 0
    let (w0, s0) = (fs.write_count(), fs.sync_count());
    for i in 0..10 {
        wal.append_sync(&recs(2 + i * 100, 100)).unwrap();
    }
    assert_eq!(fs.write_count() - w0, 10);
    assert_eq!(fs.sync_count() - s0, 10);
}

#[test]
fn reopen_and_continue_appending() {
    let fs = MemFs::new();
    let mut all = Vec::new();
    for round in 0..5u64 {
        let (mut wal, r) = open(&fs, 4096);
        assert_eq!(r.records, all);
        let batch = recs(round * 10 + 1, 10);
        wal.append_sync(&batch).unwrap();
        all.extend(batch);
        drop(wal);
        fs.crash(Crash::DropUnsynced);
    }
    let (_, r) = open(&fs, 4096);
    assert_eq!(r.records, all);
}

#[test]
fn pipelined_submit_and_poll() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 8192);
    let mut tickets = Vec::new();
    let mut all = Vec::new();
    for i in 0..20 {
        let batch = recs(i * 5 + 1, 5);
        tickets.push(wal.submit(&batch).unwrap());
        all.extend(batch);
    }
    assert_eq!(wal.in_flight(), 20);
    assert_eq!(tickets.first(), Some(&BatchTicket(1)));
    assert_eq!(wal.poll_completed().unwrap(), Some(BatchTicket(20)));
    assert_eq!(wal.poll_completed().unwrap(), None);
    assert_eq!(wal.durable_ticket(), Some(BatchTicket(20)));
    assert_eq!(wal.in_flight(), 0);
    fs.crash(Crash::DropUnsynced);
    let (_, r) = open(&fs, 8192);
    assert_eq!(r.records, all);
}

#[test]
fn queue_full_is_back_pressure() {
    let fs = MemFs::new();
    let mut opts = small_opts(1 << 20);
    opts.batches_in_flight_max = 2;
    let (mut wal, _) = Wal::open_with(fs.clone(), opts).unwrap();
    wal.submit(&recs(1, 1)).unwrap();
    wal.submit(&recs(2, 1)).unwrap();
    assert!(matches!(
        wal.submit(&recs(3, 1)),
        Err(WalError::QueueFull { .. })
    ));
    assert!(!wal.is_poisoned());
    wal.wait().unwrap();
    wal.submit(&recs(3, 1)).unwrap();
    wal.append_sync(&recs(4, 1)).unwrap();
}

#[test]
fn invalid_batches_are_rejected_without_poison() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    assert!(matches!(wal.submit(&[]), Err(WalError::EmptyBatch)));
    assert!(matches!(
        wal.submit(&[Record::new(0, 1, vec![1])]),
        Err(WalError::InvalidKind { index: 1 })
    ));
    let big = Record::new(1, 1, vec![1; ferrocd_wal::RECORD_BYTES_MAX + 1]);
    assert!(matches!(
        wal.submit(&[big]),
        Err(WalError::RecordTooLarge { .. })
    ));
    assert!(!wal.is_poisoned());
    wal.append_sync(&recs(1, 3)).unwrap();
}

#[test]
fn batch_larger_than_segment_gets_its_own_segment() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    wal.append_sync(&recs(1, 2)).unwrap();
    let big: Vec<Record> = (3..8).map(|i| rec(i, 3000)).collect();
    wal.append_sync(&big).unwrap();
    wal.append_sync(&recs(8, 2)).unwrap();
    fs.crash(Crash::DropUnsynced);
    let (_, r) = open(&fs, 4096);
    let mut want = recs(1, 2);
    want.extend(big);
    want.extend(recs(8, 2));
    assert_eq!(r.records, want);
}

/// Crash while the last batch is in flight, keeping every possible prefix of
/// its bytes: recovery returns exactly the durable records plus the complete
/// records of the prefix, and the log keeps working afterwards.
fn crash_at_every_offset(rotate_on_last: bool) {
    let base = MemFs::new();
    let seg = 4096;
    let (mut wal, _) = open(&base, seg);
    let mut durable = Vec::new();
    let mut batches = Vec::new();
    for b in 0..4u64 {
        let batch = recs(b * 3 + 1, 3);
        wal.append_sync(&batch).unwrap();
        durable.extend(batch.clone());
        batches.push(batch);
    }
    let last: Vec<Record> = if rotate_on_last {
        (100..103).map(|i| rec(i, 1500)).collect()
    } else {
        vec![rec(100, 5), rec(101, 300), rec(102, 77)]
    };
    base.stall_syncs(true);
    wal.submit(&last).unwrap();
    let active = wal.segments().last().unwrap().name.clone();
    drop(wal);
    let unsynced = base.unsynced_bytes(&active);
    let expected_len: usize = last.iter().map(|r| frame_len(r.payload.len())).sum();
    assert_eq!(unsynced, expected_len);
    // Unpadded end of each record of the last batch, relative to the batch start.
    let mut ends = Vec::new();
    let mut off = 0;
    for r in &last {
        ends.push(off + RECORD_HEADER_BYTES + r.payload.len());
        off += frame_len(r.payload.len());
    }
    for n in 0..=unsynced {
        let fs = base.fork();
        fs.crash(Crash::KeepUnsyncedPrefix(n));
        let (mut wal, r) = Wal::open_with(fs.clone(), small_opts(seg))
            .unwrap_or_else(|e| panic!("prefix {n}: {e}"));
        let complete = ends.iter().filter(|&&e| e <= n).count();
        let mut want = durable.clone();
        want.extend_from_slice(&last[..complete]);
        assert_eq!(r.records.len(), want.len(), "prefix {n}");
        assert_eq!(r.records, want, "prefix {n}");
        let enc = ferrocd_wal::frame::encode_batch(&last);
        let cut_from = if complete == 0 { 0 } else { ends[complete - 1] };
        let garbage = enc[cut_from..n].iter().any(|&b| b != 0);
        assert_eq!(
            r.torn.is_some(),
            garbage,
            "prefix {n}: torn tail reported iff bytes were cut"
        );
        // The repaired log accepts appends and replays them after the cut.
        wal.append_sync(&[rec(500, 10)]).unwrap();
        drop(wal);
        fs.crash(Crash::DropUnsynced);
        let (_, r2) = Wal::open_with(fs, small_opts(seg)).unwrap();
        want.push(rec(500, 10));
        assert_eq!(r2.records, want, "prefix {n} after append");
        assert!(r2.torn.is_none());
    }
}

#[test]
fn crash_at_every_offset_of_last_batch() {
    crash_at_every_offset(false);
}

#[test]
fn crash_at_every_offset_of_last_batch_in_new_segment() {
    crash_at_every_offset(true);
}

#[test]
fn crash_after_rotation_removes_empty_trailing_segment() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    wal.append_sync(&recs(1, 4)).unwrap();
    fs.stall_syncs(true);
    let big: Vec<Record> = (5..8).map(|i| rec(i, 1500)).collect();
    wal.submit(&big).unwrap();
    assert_eq!(wal_segments(&fs).len(), 2);
    drop(wal);
    fs.crash(Crash::DropUnsynced);
    let (mut wal, r) = open(&fs, 4096);
    assert_eq!(r.records, recs(1, 4));
    assert_eq!(wal_segments(&fs).len(), 1);
    wal.append_sync(&big).unwrap();
    drop(wal);
    fs.crash(Crash::DropUnsynced);
    let (_, r) = open(&fs, 4096);
    let mut want = recs(1, 4);
    want.extend(big);
    assert_eq!(r.records, want);
}

fn flip_case(batches: &[Vec<Record>], victim: usize) {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 1 << 16);
    for b in batches {
        wal.append_sync(b).unwrap();
    }
    let seg = wal.segments()[0].name.clone();
    drop(wal);
    let (start, end) = layout(batches)[victim];
    // Flip a payload bit (or a header bit for empty payloads).
    let at = if end - start > RECORD_HEADER_BYTES {
        start + RECORD_HEADER_BYTES
    } else {
        start + 16
    };
    fs.flip_bit(&seg, at, 3).unwrap();
    let err = Wal::open_with(fs.clone(), small_opts(1 << 16)).unwrap_err();
    match &err {
        RecoveryError::Corrupt { file, offset, .. } => {
            assert_eq!(file, &seg);
            assert_eq!(*offset, start as u64);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&seg) && msg.contains(&start.to_string()),
        "{msg}"
    );
    // Refusing leaves the files untouched.
    assert!(fs.file(&seg).is_some());
}

#[test]
fn bit_flip_in_middle_record_is_an_error() {
    let batches: Vec<Vec<Record>> = (0..10).map(|b| recs(b * 3 + 1, 3)).collect();
    for victim in [0, 1, 5, 14, 26] {
        flip_case(&batches, victim);
    }
}

#[test]
fn bit_flip_in_middle_of_single_batch_is_an_error() {
    let batches = vec![(1..30).map(|i| rec(i, 200)).collect::<Vec<_>>()];
    for victim in [0, 3, 15, 27] {
        flip_case(&batches, victim);
    }
}

#[test]
fn damage_in_earlier_segment_is_an_error() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    for b in 0..20 {
        wal.append_sync(&recs(b * 4 + 1, 4)).unwrap();
    }
    let segs = wal.segments().to_vec();
    assert!(segs.len() >= 3);
    drop(wal);
    // Cut the tail of the first segment as if torn: not allowed, later segments hold data.
    let mut bytes = fs.file(&segs[0].name).unwrap();
    let body_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[body_end - 10..].fill(0);
    fs.set_file(&segs[0].name, bytes);
    match Wal::open_with(fs.clone(), small_opts(4096)).unwrap_err() {
        RecoveryError::Corrupt { file, .. } => assert_eq!(file, segs[0].name),
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn missing_segment_is_an_error() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    for b in 0..20 {
        wal.append_sync(&recs(b * 4 + 1, 4)).unwrap();
    }
    let segs = wal.segments().to_vec();
    drop(wal);
    let mut m = fs.clone();
    ferrocd_wal::io::FileSystem::remove(&mut m, &segs[1].name).unwrap();
    assert!(matches!(
        Wal::open_with(fs, small_opts(4096)).unwrap_err(),
        RecoveryError::MissingSegment {
            expected_seq: 1,
            ..
        }
    ));
}

#[test]
fn bad_segment_header_is_an_error() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    wal.append_sync(&recs(1, 4)).unwrap();
    let seg = wal.segments()[0].name.clone();
    drop(wal);
    fs.flip_bit(&seg, 2, 0).unwrap();
    match Wal::open_with(fs, small_opts(4096)).unwrap_err() {
        RecoveryError::BadSegmentHeader { file, .. } => assert_eq!(file, seg),
        other => panic!("expected BadSegmentHeader, got {other}"),
    }
}

#[test]
fn unwritten_page_inside_torn_last_batch_is_cut() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 1 << 16);
    wal.append_sync(&recs(1, 3)).unwrap();
    let last: Vec<Record> = (10..40).map(|i| rec(i, 500)).collect();
    wal.append_sync(&last).unwrap();
    let seg = wal.segments()[0].name.clone();
    drop(wal);
    // Page 2 of the file never reached the disk; later pages did.
    let mut bytes = fs.file(&seg).unwrap();
    bytes[8192..12288].fill(0);
    fs.set_file(&seg, bytes);
    let (_, r) = open(&fs, 1 << 16);
    let lay = layout(&[recs(1, 3), last.clone()]);
    let complete = lay.iter().filter(|(_, e)| *e <= 8192).count();
    let mut want = recs(1, 3);
    want.extend_from_slice(&last[..complete - 3]);
    assert_eq!(r.records, want);
    assert!(r.torn.is_some());
}

#[test]
fn failed_fsync_poisons() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    wal.append_sync(&recs(1, 2)).unwrap();
    fs.fail_next_sync(libc::EIO);
    let err = wal.append_sync(&recs(3, 2)).unwrap_err();
    match &err {
        WalError::SyncFailed { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::EIO)),
        other => panic!("expected SyncFailed, got {other}"),
    }
    assert!(wal.is_poisoned());
    assert!(matches!(
        wal.submit(&recs(5, 1)),
        Err(WalError::Poisoned(_))
    ));
    assert!(matches!(wal.poll_completed(), Err(WalError::Poisoned(_))));
    assert!(matches!(wal.wait(), Err(WalError::Poisoned(_))));
    assert!(matches!(
        wal.append_sync(&recs(5, 1)),
        Err(WalError::Poisoned(_))
    ));
    assert!(matches!(wal.release_to(100), Err(WalError::Poisoned(_))));
    // The failed batch was never durable: after a crash only the first batch remains.
    drop(wal);
    fs.crash(Crash::DropUnsynced);
    let (_, r) = open(&fs, 4096);
    assert_eq!(r.records, recs(1, 2));
}

#[test]
fn failed_write_poisons() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    wal.append_sync(&recs(1, 2)).unwrap();
    fs.fail_next_write(libc::ENOSPC);
    let t = wal.submit(&recs(3, 2)).unwrap();
    let err = wal.wait_for(t).unwrap_err();
    assert!(matches!(err, WalError::WriteFailed { .. }), "{err}");
    assert!(matches!(
        wal.append_sync(&recs(5, 1)),
        Err(WalError::Poisoned(_))
    ));
}

#[test]
fn failed_fsync_among_pipelined_batches_poisons() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 1 << 16);
    wal.submit(&recs(1, 2)).unwrap();
    fs.fail_next_sync(libc::EIO);
    wal.submit(&recs(3, 2)).unwrap();
    wal.submit(&recs(5, 2)).unwrap();
    assert!(matches!(
        wal.poll_completed(),
        Err(WalError::SyncFailed { .. })
    ));
    assert!(matches!(wal.poll_completed(), Err(WalError::Poisoned(_))));
    assert!(wal.durable_ticket() < Some(BatchTicket(2)));
}

#[test]
fn failed_segment_preparation_poisons() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    wal.append_sync(&recs(1, 2)).unwrap();
    // The next rotation renames the prepared segment and fsyncs the directory.
    fs.fail_next_sync(libc::EIO);
    let big: Vec<Record> = (3..6).map(|i| rec(i, 1500)).collect();
    assert!(matches!(wal.submit(&big), Err(WalError::Io { .. })));
    assert!(matches!(
        wal.submit(&recs(9, 1)),
        Err(WalError::Poisoned(_))
    ));
}

#[test]
fn release_removes_old_segments() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    let mut all = Vec::new();
    for b in 0..40u64 {
        let batch = recs(b * 4 + 1, 4);
        wal.append_sync(&batch).unwrap();
        all.extend(batch);
    }
    let segs = wal.segments().to_vec();
    assert!(segs.len() >= 6);
    // Snapshot below the second segment: nothing to release.
    assert!(wal.release_to(segs[1].first_index - 1).unwrap().is_empty());
    let snap = segs[3].first_index + 2;
    let removed = wal.release_to(snap).unwrap();
    assert_eq!(
        removed,
        segs[..3].iter().map(|s| s.name.clone()).collect::<Vec<_>>()
    );
    assert_eq!(wal.segments(), &segs[3..]);
    assert_eq!(wal_segments(&fs).len(), segs.len() - 3);
    drop(wal);
    fs.crash(Crash::DropUnsynced);
    let (mut wal, r) = open(&fs, 4096);
    assert_eq!(r.records.first().unwrap().index, segs[3].first_index);
    assert!(r.records.iter().any(|x| x.index == snap + 1));
    assert_eq!(
        r.records[..],
        all[all
            .iter()
            .position(|x| x.index == segs[3].first_index)
            .unwrap()..]
    );
    // Releasing everything keeps the active segment.
    let n = wal.segments().len();
    assert_eq!(wal.release_to(u64::MAX).unwrap().len(), n - 1);
    assert_eq!(wal.segments().len(), 1);
}

#[test]
fn forgotten_segments_stay_until_removed_and_recovery_accepts_them() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    let mut all = Vec::new();
    for b in 0..40u64 {
        let batch = recs(b * 4 + 1, 4);
        wal.append_sync(&batch).unwrap();
        all.extend(batch);
    }
    let segs = wal.segments().to_vec();
    let snap = segs[3].first_index + 2;
    let forgotten = wal.forget_to(snap).unwrap();
    assert_eq!(
        forgotten,
        segs[..3].iter().map(|s| s.name.clone()).collect::<Vec<_>>()
    );
    assert_eq!(wal.segments(), &segs[3..]);
    // The files are still there (the caller removes them later) ...
    assert_eq!(wal_segments(&fs).len(), segs.len());
    wal.append_sync(&recs(161, 4)).unwrap();
    drop(wal);
    fs.crash(Crash::DropUnsynced);
    // ... and a restart before their removal reads them like any segment.
    let (wal, r) = open(&fs, 4096);
    drop(wal);
    assert_eq!(r.records.first().unwrap().index, 1);
    assert_eq!(r.records.last().unwrap().index, 164);
    // Removing the oldest ones first keeps the rest contiguous.
    let mut fs2 = fs.clone();
    ferrocd_wal::io::FileSystem::remove(&mut fs2, &forgotten[0]).unwrap();
    let (_, r) = open(&fs, 4096);
    assert_eq!(r.records.first().unwrap().index, segs[1].first_index);
    assert_eq!(all.len(), 160);
}

#[test]
fn preamble_starts_every_new_segment() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    let hs = Record::new(9, 0, b"hard-state".to_vec());
    wal.set_segment_preamble(vec![hs.clone()]);
    for b in 0..30u64 {
        wal.append_sync(&recs(b * 4 + 1, 4)).unwrap();
    }
    let segs = wal.segments().to_vec();
    let keep = &segs[segs.len() - 2];
    wal.release_to(keep.first_index).unwrap();
    drop(wal);
    fs.crash(Crash::DropUnsynced);
    let (_, r) = open(&fs, 4096);
    assert_eq!(r.records[0], hs);
    assert_eq!(r.records[1].index, keep.first_index);
    assert_eq!(r.records.iter().filter(|x| **x == hs).count(), 2);
    let _ = SEGMENT_HEADER_BYTES;
}

#[test]
fn leftover_tmp_segments_are_removed() {
    let fs = MemFs::new();
    let (mut wal, _) = open(&fs, 4096);
    wal.append_sync(&recs(1, 2)).unwrap();
    drop(wal);
    fs.set_file("00000000000000ff.wal.tmp", vec![1, 2, 3]);
    let (_, r) = open(&fs, 4096);
    assert_eq!(r.records, recs(1, 2));
    assert!(!fs.names().contains(&"00000000000000ff.wal.tmp".to_string()));
    // The next segment continues the sequence of the kept ones.
    assert!(fs.names().contains(&"0000000000000001.wal.tmp".to_string()));
}
