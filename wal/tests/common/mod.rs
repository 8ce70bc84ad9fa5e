//! Helpers shared by the integration tests.
#![allow(dead_code)]

use ferrocd_wal::frame::{frame_len, RECORD_HEADER_BYTES};
use ferrocd_wal::segment::SEGMENT_HEADER_BYTES;
use ferrocd_wal::{Prealloc, Record, WalOptions};

/// Options with small segments so tests rotate often.
pub fn small_opts(segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        prealloc: Prealloc::Fallocate,
        ..WalOptions::default()
    }
}

/// A deterministic record with a non-zero payload (zero-heavy payloads would
/// look like unwritten pages).
pub fn rec(index: u64, len: usize) -> Record {
    let mut x = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let payload = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x as u8) | 1
        })
        .collect::<Vec<u8>>();
    Record::new(1 + (index % 4) as u8, index, payload)
}

/// Records `from..from+n` with payload lengths cycling through a few sizes.
pub fn recs(from: u64, n: usize) -> Vec<Record> {
    (from..from + n as u64)
        .map(|i| rec(i, [0, 1, 7, 8, 100, 255, 256, 300][(i % 8) as usize]))
        .collect()
}

/// Byte offsets of each record of `batches` within a segment whose first batch
/// starts right after the header: `(start, unpadded end)`.
pub fn layout(batches: &[Vec<Record>]) -> Vec<(usize, usize)> {
    let mut off = SEGMENT_HEADER_BYTES;
    let mut out = Vec::new();
    for b in batches {
        for r in b {
            out.push((off, off + RECORD_HEADER_BYTES + r.payload.len()));
            off += frame_len(r.payload.len());
        }
    }
    out
}

/// Small deterministic PRNG for garbage bytes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
