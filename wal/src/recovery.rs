//! Opening a WAL directory: replay, torn-tail repair, refusal on corruption.
//!
//! Procedure (see `FORMAT.md`):
//! 1. Delete prepared-but-unused `*.wal.tmp` segments.
//! 2. Sort `*.wal` segments by sequence; sequences must be contiguous.
//! 3. Check each header; scan each segment ([`crate::frame::scan_segment`]).
//! 4. `L` = the last segment holding any valid record. Segments before `L`
//!    must end cleanly (their batches were all acknowledged, since a later
//!    batch was written only after they were durable). `L` may end in a torn
//!    batch, which is cut and zeroed. Segments after `L` hold no record
//!    (a torn first batch at most) and are removed.

use crate::frame::{scan_segment, Tail};
use crate::io::WalIo;
use crate::segment::{check_segment_header, parse_segment_name, SEGMENT_HEADER_BYTES};
use crate::wal::{Active, Recovered, SegmentInfo, TornTail};
use crate::RecoveryError;

pub(crate) struct Recovery {
    pub(crate) segments: Vec<SegmentInfo>,
    pub(crate) active: Option<Active>,
    pub(crate) next_seq: u64,
    pub(crate) recovered: Recovered,
}

fn io_err<'a>(
    op: &'static str,
    file: &'a str,
) -> impl FnOnce(std::io::Error) -> RecoveryError + 'a {
    move |source| RecoveryError::Io {
        op,
        file: file.to_string(),
        source,
    }
}

pub(crate) fn recover<I: WalIo>(io: &mut I) -> Result<Recovery, RecoveryError> {
    let names = io.list().map_err(io_err("list", "wal directory"))?;
    let mut dir_dirty = false;
    let mut next_seq = 0u64;
    let mut segs: Vec<SegmentInfo> = Vec::new();
    for name in names {
        if let Some(stem) = name.strip_suffix(".wal.tmp") {
            if let Ok(seq) = u64::from_str_radix(stem, 16) {
                next_seq = next_seq.max(seq.saturating_add(1));
            }
            io.remove(&name).map_err(io_err("remove", &name))?;
            dir_dirty = true;
        } else if name.ends_with(".wal") {
            let (seq, first_index) = parse_segment_name(&name)
                .ok_or_else(|| RecoveryError::BadFileName { file: name.clone() })?;
            segs.push(SegmentInfo {
                seq,
                first_index,
                name,
            });
        }
    }
    segs.sort_by_key(|s| s.seq);
    for w in segs.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            return Err(RecoveryError::MissingSegment {
                expected_seq: w[0].seq + 1,
                previous: w[0].name.clone(),
                found: w[1].name.clone(),
            });
        }
    }
    if let Some(last) = segs.last() {
        next_seq = next_seq.max(last.seq + 1);
    }

    let mut scans = Vec::with_capacity(segs.len());
    for s in &segs {
        let bytes = io.read(&s.name).map_err(io_err("read", &s.name))?;
        check_segment_header(&bytes, s.seq).map_err(|reason| RecoveryError::BadSegmentHeader {
            file: s.name.clone(),
            reason,
        })?;
        scans.push(scan_segment(&bytes, SEGMENT_HEADER_BYTES));
    }

    let last_with_data = scans.iter().rposition(|s| s.has_data());
    let mut recovered = Recovered::default();
    let mut active = None;
    let keep = if let Some(l) = last_with_data {
        for (i, (seg, scan)) in segs.iter().zip(&scans).enumerate().take(l + 1) {
            let bad = |reason: String| RecoveryError::Corrupt {
                file: seg.name.clone(),
                offset: scan.end as u64,
                reason,
            };
            match &scan.tail {
                Tail::Clean => {}
                Tail::Corrupt { reason } => return Err(bad(reason.clone())),
                Tail::Torn { reason } if i < l => {
                    return Err(bad(format!(
                        "{reason}; a later segment ({}) holds data",
                        segs[l].name
                    )))
                }
                Tail::Torn { reason } => {
                    recovered.torn = Some(TornTail {
                        file: seg.name.clone(),
                        offset: scan.end as u64,
                        bytes_discarded: (scan.nonzero_end - scan.end) as u64,
                        reason: reason.clone(),
                    });
                }
            }
        }
        for scan in scans.iter_mut().take(l + 1) {
            recovered.records.extend(
                std::mem::take(&mut scan.records)
                    .into_iter()
                    .map(|r| r.record),
            );
        }
        // If L kept no record (its first batch was torn), its name carries the
        // index of a batch that never became durable: drop it like an empty one.
        let keep = if scans[l].end == SEGMENT_HEADER_BYTES {
            l
        } else {
            l + 1
        };
        if keep > 0 {
            // Reopen the last kept segment for appending; zero the torn bytes
            // first so that stale data can never follow the new end of the log.
            let k = keep - 1;
            let seg = &segs[k];
            let file = io.open(&seg.name).map_err(io_err("open", &seg.name))?;
            if k == l {
                if let Some(t) = &recovered.torn {
                    let zeros = vec![0u8; t.bytes_discarded as usize];
                    io.write_at(file, t.offset, &zeros)
                        .map_err(io_err("zero torn tail", &seg.name))?;
                    io.sync(file).map_err(io_err("fsync", &seg.name))?;
                }
            }
            let capacity = io.len(file).map_err(io_err("stat", &seg.name))?;
            active = Some(Active {
                seq: seg.seq,
                file,
                name: seg.name.clone(),
                write_off: scans[k].end as u64,
                capacity,
                last_ticket: 0,
            });
        }
        keep
    } else {
        0
    };
    // Segments after the kept ones hold no record: at most a torn first batch.
    for (s, scan) in segs.iter().zip(&scans).skip(keep) {
        if let (None, Tail::Torn { reason }) = (&recovered.torn, &scan.tail) {
            recovered.torn = Some(TornTail {
                file: s.name.clone(),
                offset: scan.end as u64,
                bytes_discarded: (scan.nonzero_end - scan.end) as u64,
                reason: format!("{reason}; segment removed"),
            });
        }
    }
    if keep > 0 {
        // Sequences must stay contiguous: reuse the numbers of removed segments.
        next_seq = segs[keep - 1].seq + 1;
    }
    for s in segs.drain(keep..) {
        io.remove(&s.name).map_err(io_err("remove", &s.name))?;
        dir_dirty = true;
    }
    if dir_dirty {
        io.sync_dir().map_err(io_err("fsync", "wal directory"))?;
    }
    Ok(Recovery {
        segments: segs,
        active,
        next_seq,
        recovered,
    })
}
