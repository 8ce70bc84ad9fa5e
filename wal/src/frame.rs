//! Record framing: encoding, decoding and the recovery scan of one segment.
//!
//! Frame layout (all integers little-endian; see `FORMAT.md`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | payload length `len` |
//! | 4 | 4 | CRC32C over bytes 0..4, 8..24 and the payload |
//! | 8 | 1 | kind (non-zero) |
//! | 9 | 3 | reserved, zero |
//! | 12 | 4 | batch offset: bytes from the start of this record's batch to this frame |
//! | 16 | 8 | index |
//! | 24 | len | payload |
//! | 24+len | 0..7 | zero padding to an 8-byte boundary |
//!
//! A valid frame never has an all-zero header (kind is non-zero), so an
//! all-zero header in preallocated space marks the end of the log. The batch
//! offset lets recovery tell a torn final batch (the damage and everything
//! after it belong to the one batch that was never acknowledged) from
//! corruption (valid data of a later batch follows the damage).

use crate::{Record, RECORD_BYTES_MAX};

/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: usize = 24;
/// Frames start on multiples of this many bytes (etcd does the same), which
/// also makes the resynchronising scan after damage 8× cheaper.
pub const RECORD_ALIGN_BYTES: usize = 8;
/// Granularity of page-cache writeback. A torn write inside the final batch
/// that leaves valid records *after* the damage must show a whole zero page
/// (a page that never reached the disk); a bit flip does not.
pub const PAGE_BYTES: usize = 4096;

/// Rounds `n` up to the frame alignment.
pub fn align_up(n: usize) -> usize {
    (n + RECORD_ALIGN_BYTES - 1) & !(RECORD_ALIGN_BYTES - 1)
}

/// Encoded size of a record with `payload_len` payload bytes, padding included.
pub fn frame_len(payload_len: usize) -> usize {
    align_up(RECORD_HEADER_BYTES + payload_len)
}

fn frame_crc(header: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[0..4]);
    let crc = crc32c::crc32c_append(crc, &header[8..RECORD_HEADER_BYTES]);
    crc32c::crc32c_append(crc, payload)
}

/// Appends one frame to `out`. `batch_start` is the offset in `out` where the
/// batch began (the batch is written at an 8-aligned file offset).
///
/// Panics if the record is invalid (kind 0, payload too large, misaligned
/// buffer): callers validate first, so this is a programming error.
pub fn encode_record(out: &mut Vec<u8>, batch_start: usize, record: &Record) {
    assert_ne!(record.kind, 0, "record kind 0 is reserved");
    assert!(record.payload.len() <= RECORD_BYTES_MAX);
    assert_eq!(
        out.len() % RECORD_ALIGN_BYTES,
        0,
        "frames must start aligned"
    );
    assert!(batch_start <= out.len());
    let start = out.len();
    let back = u32::try_from(start - batch_start).expect("batch offset fits in u32");
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&(record.payload.len() as u32).to_le_bytes());
    header[8] = record.kind;
    header[12..16].copy_from_slice(&back.to_le_bytes());
    header[16..24].copy_from_slice(&record.index.to_le_bytes());
    let crc = frame_crc(&header, &record.payload);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&record.payload);
    out.resize(start + frame_len(record.payload.len()), 0);
}

/// Encodes records as one batch (the unit of one write + one fdatasync).
pub fn encode_batch<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        encode_record(&mut out, 0, r);
    }
    out
}

/// Why a frame failed to decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadFrame {
    /// Fewer than [`RECORD_HEADER_BYTES`] bytes remain and they are not all zero.
    TruncatedHeader,
    /// The length word exceeds [`RECORD_BYTES_MAX`].
    LengthTooLarge(u32),
    /// The frame would extend past the end of the file.
    PastEndOfFile,
    /// CRC32C mismatch.
    CrcMismatch,
    /// CRC is right but the kind is 0 (never written by this crate).
    KindZero,
    /// CRC is right but reserved bytes are non-zero (unknown format).
    ReservedNonZero,
    /// CRC is right but the batch offset is misaligned or points before the file.
    BatchOffset,
}

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadFrame::TruncatedHeader => write!(f, "truncated record header"),
            BadFrame::LengthTooLarge(n) => {
                write!(
                    f,
                    "length {n} exceeds RECORD_BYTES_MAX ({RECORD_BYTES_MAX})"
                )
            }
            BadFrame::PastEndOfFile => write!(f, "record extends past end of file"),
            BadFrame::CrcMismatch => write!(f, "CRC32C mismatch"),
            BadFrame::KindZero => write!(f, "record kind 0"),
            BadFrame::ReservedNonZero => write!(f, "reserved header bytes are not zero"),
            BadFrame::BatchOffset => write!(f, "invalid batch offset"),
        }
    }
}

/// Result of decoding at one offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A valid record.
    Record {
        /// The record.
        record: Record,
        /// File offset where the record's batch starts.
        batch_start: usize,
        /// Offset of the next frame (after padding).
        next: usize,
    },
    /// All-zero header (or all-zero bytes up to end of file): end of log.
    End,
    /// Something that is neither a record nor the end marker.
    Bad(BadFrame),
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Validates the frame at `off` without allocating; returns
/// `(payload_len, batch_start)`.
fn check_frame(buf: &[u8], off: usize) -> Result<Option<(usize, usize)>, BadFrame> {
    debug_assert_eq!(off % RECORD_ALIGN_BYTES, 0);
    let rest = buf.get(off..).unwrap_or(&[]);
    if rest.len() < RECORD_HEADER_BYTES {
        return if all_zero(rest) {
            Ok(None)
        } else {
            Err(BadFrame::TruncatedHeader)
        };
    }
    let header = &rest[..RECORD_HEADER_BYTES];
    if all_zero(header) {
        return Ok(None);
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    if len as usize > RECORD_BYTES_MAX {
        return Err(BadFrame::LengthTooLarge(len));
    }
    let len = len as usize;
    if rest.len() - RECORD_HEADER_BYTES < len {
        return Err(BadFrame::PastEndOfFile);
    }
    let stored = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let payload = &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len];
    if frame_crc(header, payload) != stored {
        return Err(BadFrame::CrcMismatch);
    }
    if header[8] == 0 {
        return Err(BadFrame::KindZero);
    }
    if header[9..12] != [0, 0, 0] {
        return Err(BadFrame::ReservedNonZero);
    }
    let back = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")) as usize;
    if !back.is_multiple_of(RECORD_ALIGN_BYTES) || back > off {
        return Err(BadFrame::BatchOffset);
    }
    Ok(Some((len, off - back)))
}

/// Decodes the frame at the 8-aligned offset `off` of a whole file `buf`.
/// Never panics, whatever the bytes.
pub fn decode_frame(buf: &[u8], off: usize) -> Frame {
    if !off.is_multiple_of(RECORD_ALIGN_BYTES) {
        return Frame::Bad(BadFrame::BatchOffset);
    }
    match check_frame(buf, off) {
        Ok(None) => Frame::End,
        Err(e) => Frame::Bad(e),
        Ok(Some((len, batch_start))) => {
            let h = &buf[off..off + RECORD_HEADER_BYTES];
            let record = Record {
                kind: h[8],
                index: u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")),
                payload: buf[off + RECORD_HEADER_BYTES..off + RECORD_HEADER_BYTES + len].to_vec(),
            };
            Frame::Record {
                record,
                batch_start,
                next: off + frame_len(len),
            }
        }
    }
}

/// A record found by [`scan_segment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedRecord {
    /// File offset of the frame.
    pub offset: usize,
    /// File offset where its batch starts.
    pub batch_start: usize,
    /// The record.
    pub record: Record,
}

/// How a segment ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// End marker followed only by zeros (or end of file).
    Clean,
    /// A torn final batch: safe to cut at [`SegmentScan::end`] if this is the
    /// last segment holding data.
    Torn {
        /// Human-readable detail.
        reason: String,
    },
    /// Damage followed by valid data of a later batch, or damage without the
    /// signature of a torn write: refuse to start.
    Corrupt {
        /// Human-readable detail.
        reason: String,
    },
}

/// Result of scanning one segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// Valid records before [`SegmentScan::end`], in order.
    pub records: Vec<ScannedRecord>,
    /// Offset of the first byte that is not part of a valid record: the end of
    /// the log in this segment, or the damaged record.
    pub end: usize,
    /// Classification of what lies at and after `end`.
    pub tail: Tail,
    /// Valid-looking records found after `end` (part of a torn batch or evidence of corruption).
    pub records_after_end: usize,
    /// One past the last non-zero byte of the file (0 if none): the extent to
    /// zero when repairing a torn tail.
    pub nonzero_end: usize,
}

impl SegmentScan {
    /// Whether the segment holds any valid record, before or after the damage.
    pub fn has_data(&self) -> bool {
        !self.records.is_empty() || self.records_after_end > 0
    }
}

/// Does `buf[from..to]` contain a page-aligned, all-zero [`PAGE_BYTES`] block?
fn has_zero_page(buf: &[u8], from: usize, to: usize) -> bool {
    let mut p = from.div_ceil(PAGE_BYTES) * PAGE_BYTES;
    while p + PAGE_BYTES <= to.min(buf.len()) {
        if all_zero(&buf[p..p + PAGE_BYTES]) {
            return true;
        }
        p += PAGE_BYTES;
    }
    false
}

/// Scans a whole segment file whose records start at `body_start` (8-aligned)
/// and classifies its end. Never panics, whatever the bytes.
///
/// Rules (see `FORMAT.md`, "Torn tail versus corruption"): decoding stops at
/// the first offset `X` that is not a valid record. If only zeros follow, the
/// end is clean (or torn, if `X` was not an end marker). If valid records
/// follow, they must all belong to the batch that contains `X` (their batch
/// start is at or before `X`), and every damaged stretch before one of them
/// must contain a whole zero page; then the batch is a torn write, otherwise
/// the segment is corrupt.
pub fn scan_segment(buf: &[u8], body_start: usize) -> SegmentScan {
    let body_start = align_up(body_start);
    let mut records = Vec::new();
    let mut off = body_start;
    // Batch start of the last valid record; a record must continue it or start a new batch.
    let mut current_batch = body_start;
    let stop: Option<BadFrame> = loop {
        if off >= buf.len() {
            break None;
        }
        match decode_frame(buf, off) {
            Frame::Record {
                record,
                batch_start,
                next,
            } => {
                if batch_start != off && batch_start != current_batch {
                    break Some(BadFrame::BatchOffset);
                }
                current_batch = batch_start;
                records.push(ScannedRecord {
                    offset: off,
                    batch_start,
                    record,
                });
                off = next;
            }
            Frame::End => break None,
            Frame::Bad(e) => break Some(e),
        }
    };
    let end = off.min(buf.len());
    let nonzero_end = buf.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let mut scan = SegmentScan {
        records,
        end,
        tail: Tail::Clean,
        records_after_end: 0,
        nonzero_end,
    };
    if nonzero_end <= end {
        // Nothing but zeros from `end` on.
        debug_assert!(stop.is_none() || end == buf.len());
        if let Some(e) = stop {
            scan.tail = Tail::Torn {
                reason: e.to_string(),
            };
        }
        return scan;
    }
    let what = match stop {
        None => "end marker followed by non-zero bytes".to_string(),
        Some(e) => e.to_string(),
    };
    // Look for valid records after the damage, at every aligned offset.
    let mut pos = end + RECORD_ALIGN_BYTES;
    let mut gap_start = end;
    let mut later = 0usize;
    while pos < nonzero_end {
        match check_frame(buf, pos) {
            Ok(Some((len, batch_start))) => {
                later += 1;
                if batch_start > end {
                    scan.records_after_end = later;
                    scan.tail = Tail::Corrupt {
                        reason: format!(
                            "{what}; a valid record of a later batch (batch at byte {batch_start}) follows at byte {pos}"
                        ),
                    };
                    return scan;
                }
                if batch_start != current_batch && batch_start != end {
                    scan.records_after_end = later;
                    scan.tail = Tail::Corrupt {
                        reason: format!(
                            "{what}; the valid record at byte {pos} claims an inconsistent batch start {batch_start}"
                        ),
                    };
                    return scan;
                }
                if pos > gap_start && !has_zero_page(buf, gap_start, pos) {
                    scan.records_after_end = later;
                    scan.tail = Tail::Corrupt {
                        reason: format!(
                            "{what}; valid records of the same batch follow at byte {pos} and the damage is not an unwritten page"
                        ),
                    };
                    return scan;
                }
                pos += frame_len(len);
                gap_start = pos;
            }
            _ => pos += RECORD_ALIGN_BYTES,
        }
    }
    scan.records_after_end = later;
    scan.tail = Tail::Torn {
        reason: if later == 0 {
            what
        } else {
            format!("{what}; unwritten page(s) inside the final batch")
        },
    };
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64, len: usize) -> Record {
        Record::new(
            1 + (i % 3) as u8,
            i,
            vec![(i as u8).wrapping_mul(7) | 1; len],
        )
    }

    #[test]
    fn round_trip_frames() {
        let recs: Vec<Record> = (0..20).map(|i| rec(i, i as usize * 13)).collect();
        let buf = encode_batch(&recs);
        let scan = scan_segment(&buf, 0);
        assert_eq!(scan.tail, Tail::Clean);
        assert_eq!(scan.end, buf.len());
        let got: Vec<Record> = scan.records.into_iter().map(|s| s.record).collect();
        assert_eq!(got, recs);
    }

    #[test]
    fn empty_payload_is_not_end_marker() {
        let buf = encode_batch(&[Record::new(1, 0, Vec::new())]);
        assert_eq!(buf.len(), RECORD_HEADER_BYTES);
        assert!(matches!(decode_frame(&buf, 0), Frame::Record { .. }));
    }

    #[test]
    fn zeros_are_end() {
        assert_eq!(decode_frame(&[0u8; 100], 0), Frame::End);
        assert_eq!(decode_frame(&[0u8; 3], 0), Frame::End);
        assert_eq!(decode_frame(&[], 0), Frame::End);
        assert_eq!(
            decode_frame(&[0, 0, 1], 0),
            Frame::Bad(BadFrame::TruncatedHeader)
        );
    }

    #[test]
    fn flip_in_earlier_batch_is_corrupt() {
        let a = encode_batch(&[rec(1, 40), rec(2, 40)]);
        let b = encode_batch(&[rec(3, 40)]);
        let mut buf = a.clone();
        buf.extend_from_slice(&b);
        buf.resize(buf.len() + 64, 0);
        buf[30] ^= 4;
        let scan = scan_segment(&buf, 0);
        assert_eq!(scan.end, 0);
        assert!(matches!(scan.tail, Tail::Corrupt { .. }), "{:?}", scan.tail);
    }

    #[test]
    fn flip_in_last_batch_before_valid_records_is_corrupt() {
        let recs: Vec<Record> = (0..5).map(|i| rec(i, 100)).collect();
        let mut buf = encode_batch(&recs);
        let second = frame_len(100);
        buf[second + 30] ^= 1;
        let scan = scan_segment(&buf, 0);
        assert_eq!(scan.end, second);
        assert!(matches!(scan.tail, Tail::Corrupt { .. }), "{:?}", scan.tail);
    }

    #[test]
    fn unwritten_page_inside_last_batch_is_torn() {
        let recs: Vec<Record> = (0..40).map(|i| rec(i, 500)).collect();
        let mut buf = encode_batch(&recs);
        buf[PAGE_BYTES..2 * PAGE_BYTES].fill(0);
        let scan = scan_segment(&buf, 0);
        assert!(matches!(scan.tail, Tail::Torn { .. }), "{:?}", scan.tail);
        assert!(scan.end <= PAGE_BYTES);
        assert!(scan.records_after_end > 0);
        assert_eq!(
            scan.records.len(),
            (PAGE_BYTES - RECORD_HEADER_BYTES) / frame_len(500)
        );
    }
}
