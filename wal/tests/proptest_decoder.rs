//! Property tests of the frame decoder and the recovery scan.

mod common;

use ferrocd_wal::frame::{
    decode_frame, encode_batch, encode_record, frame_len, scan_segment, Frame, SegmentScan, Tail,
    RECORD_HEADER_BYTES,
};
use ferrocd_wal::io::{Crash, MemFs};
use ferrocd_wal::Record;
use proptest::prelude::*;

/// Every record a scan yields must re-encode to exactly the bytes it came from.
fn assert_yields_only_valid(buf: &[u8], scan: &SegmentScan) {
    let mut prev_end = 0;
    for s in &scan.records {
        assert!(s.offset >= prev_end, "records overlap or go backwards");
        let back = s.offset - s.batch_start;
        let mut out = vec![0u8; back];
        encode_record(&mut out, 0, &s.record);
        let n = RECORD_HEADER_BYTES + s.record.payload.len();
        assert_eq!(&out[back..back + n], &buf[s.offset..s.offset + n]);
        prev_end = s.offset + n;
    }
    assert!(scan.end <= buf.len());
    assert!(scan.end >= prev_end);
}

fn record_strategy() -> impl Strategy<Value = Record> {
    (
        1u8..=255,
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(kind, index, payload)| Record {
            kind,
            index,
            payload,
        })
}

fn batches_strategy() -> impl Strategy<Value = Vec<Vec<Record>>> {
    prop::collection::vec(prop::collection::vec(record_strategy(), 1..6), 1..8)
}

/// Encodes batches back to back from offset 0 and returns the image plus
/// (start, unpadded end, batch number) per record.
fn image(batches: &[Vec<Record>], slack: usize) -> (Vec<u8>, Vec<(usize, usize, usize)>) {
    let mut buf = Vec::new();
    let mut lay = Vec::new();
    for (bi, b) in batches.iter().enumerate() {
        let enc = encode_batch(b);
        let mut off = buf.len();
        for r in b {
            lay.push((off, off + RECORD_HEADER_BYTES + r.payload.len(), bi));
            off += frame_len(r.payload.len());
        }
        buf.extend_from_slice(&enc);
    }
    buf.resize(buf.len() + slack, 0);
    (buf, lay)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Arbitrary bytes: no panic, and anything yielded is a genuine frame.
    #[test]
    fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..2048), start in 0usize..64) {
        let scan = scan_segment(&buf, start);
        assert_yields_only_valid(&buf, &scan);
        for off in (0..buf.len().min(256)).step_by(8) {
            let _ = decode_frame(&buf, off);
        }
        let _ = decode_frame(&buf, 3);
        let _ = decode_frame(&buf, buf.len() + 8);
    }

    /// Valid images with random mutations: no panic, only original records
    /// come out, in their original order.
    #[test]
    fn mutated_images_yield_only_written_records(
        batches in batches_strategy(),
        muts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        slack in 0usize..600,
    ) {
        let (mut buf, _) = image(&batches, slack);
        for (at, v, how) in muts {
            let i = at.index(buf.len());
            match how {
                0 => buf[i] ^= v | 1,
                1 => buf[i..].iter_mut().take(v as usize).for_each(|b| *b = 0),
                _ => buf.truncate(i),
            }
            if buf.is_empty() { break; }
        }
        let scan = scan_segment(&buf, 0);
        assert_yields_only_valid(&buf, &scan);
        let all: Vec<&Record> = batches.iter().flatten().collect();
        let mut pos = 0;
        for s in &scan.records {
            let found = all[pos..].iter().position(|r| **r == s.record);
            prop_assert!(found.is_some(), "yielded a record that was never written");
            pos += found.unwrap() + 1;
        }
    }

    /// Crash model: the image is cut at `cut` (zeros after it, as in
    /// preallocated space) and one bit may be flipped. Recovery keeps exactly
    /// the records before the first damage; damage followed by a complete
    /// later batch is reported as corruption at the damaged record. A record
    /// whose cut-off bytes were zeros anyway is undamaged: the file reads
    /// exactly as if the write had finished.
    #[test]
    fn cut_and_flip_recovers_prefix_or_reports_corruption(
        batches in batches_strategy(),
        cut in any::<prop::sample::Index>(),
        flip in prop::option::of((any::<prop::sample::Index>(), 0u8..8)),
        slack in 8usize..600,
    ) {
        let (mut buf, lay) = image(&batches, slack);
        let orig = buf.clone();
        let cut = cut.index(buf.len() + 1);
        buf[cut..].fill(0);
        // First record the cut changed (later ones all lose a non-zero header).
        let cut_record = lay
            .iter()
            .position(|&(s, e, _)| buf[s..e] != orig[s..e])
            .unwrap_or(lay.len());
        let mut flipped_record = None;
        if let Some((at, bit)) = flip {
            let f = at.index(buf.len());
            buf[f] ^= 1 << bit;
            flipped_record = lay[..cut_record].iter().position(|&(s, e, _)| s <= f && f < e);
        }
        let scan = scan_segment(&buf, 0);
        assert_yields_only_valid(&buf, &scan);
        // First record that is not intact: cut through, or flipped.
        let first_bad = flipped_record.map_or(cut_record, |r| r.min(cut_record));
        let got: Vec<Record> = scan.records.iter().map(|s| s.record.clone()).collect();
        let want: Vec<Record> = batches.iter().flatten().take(first_bad).cloned().collect();
        match &scan.tail {
            Tail::Corrupt { .. } => {
                // Only a flip can make corruption, and only with data after it.
                let r = flipped_record.expect("corruption without a flip");
                prop_assert_eq!(scan.end, lay[r].0);
                prop_assert_eq!(got, want);
            }
            Tail::Clean | Tail::Torn { .. } => {
                prop_assert_eq!(got, want);
                if let Some(r) = flipped_record {
                    let batch = lay[r].2;
                    let later_batch_intact = lay[..cut_record].iter().any(|&(_, _, b)| b > batch);
                    prop_assert!(!later_batch_intact, "flip followed by a complete later batch must be corruption");
                }
            }
        }
        if flipped_record.is_none() {
            let corrupt = matches!(scan.tail, Tail::Corrupt { .. });
            prop_assert!(!corrupt, "corruption reported without any flip");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whole WAL over MemFs: random batches, the last one torn at a random
    /// byte by a crash; recovery returns the durable records plus the
    /// complete prefix of the last batch.
    #[test]
    fn wal_crash_recovers_prefix(batches in batches_strategy(), keep in any::<prop::sample::Index>()) {
        let fs = MemFs::new();
        let opts = common::small_opts(4096);
        let (mut wal, _) = ferrocd_wal::Wal::open_with(fs.clone(), opts.clone()).unwrap();
        let (last, durable) = batches.split_last().unwrap();
        for b in durable {
            wal.append_sync(b).unwrap();
        }
        fs.stall_syncs(true);
        wal.submit(last).unwrap();
        let name = wal.segments().last().unwrap().name.clone();
        drop(wal);
        let n = keep.index(fs.unsynced_bytes(&name) + 1);
        fs.crash(Crash::KeepUnsyncedPrefix(n));
        let (_, r) = ferrocd_wal::Wal::open_with(fs, opts).unwrap();
        // A record is recovered when its header and payload were kept. It
        // may also be when the bytes the crash dropped equal what the
        // preallocated segment already held there (zeros): the file then
        // reads exactly as if the write had finished.
        let enc = encode_batch(last);
        let mut off = 0;
        let mut complete = 0;
        let mut complete_max = 0;
        let mut max_open = true;
        for rec in last {
            let end = off + frame_len(rec.payload.len());
            if off + RECORD_HEADER_BYTES + rec.payload.len() <= n { complete += 1; }
            max_open &= off + RECORD_HEADER_BYTES + rec.payload.len() <= n
                || enc[n.max(off)..end].iter().all(|b| *b == 0);
            if max_open { complete_max += 1; }
            off = end;
        }
        let base: Vec<Record> = durable.iter().flatten().cloned().collect();
        let k = r.records.len().checked_sub(base.len());
        prop_assert!(
            k.is_some_and(|k| (complete..=complete_max).contains(&k)),
            "recovered {} records, want {} durable + {complete}..={complete_max} of the torn batch",
            r.records.len(),
            base.len()
        );
        let k = k.unwrap_or(0);
        let mut want = base;
        want.extend_from_slice(&last[..k]);
        prop_assert_eq!(r.records, want);
    }
}

#[test]
fn decode_frame_kinds() {
    let buf = encode_batch(&[Record::new(3, 9, b"abc".to_vec())]);
    assert!(matches!(decode_frame(&buf, 0), Frame::Record { .. }));
    let mut bad = buf.clone();
    bad[1] = 0xff;
    assert!(matches!(decode_frame(&bad, 0), Frame::Bad(_)));
}
