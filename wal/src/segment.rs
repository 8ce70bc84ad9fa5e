//! Segment file names and the 32-byte segment header.
//!
//! A segment is named `{seq:016x}-{index:016x}.wal`: `seq` orders segments
//! (contiguous from the oldest kept one) and `index` is the index of the first
//! record of the batch that opened the segment, so whole segments below a
//! snapshot can be released. A prepared, not yet used segment is
//! `{seq:016x}.wal.tmp`; recovery deletes those.

/// Bytes of the segment header; records start right after it.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Magic at offset 0 of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"FRCDWAL\0";
/// On-disk format version written in segment headers.
pub const WAL_FORMAT_VERSION: u32 = 1;

/// Name of a live segment.
pub fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

/// Name of a prepared (preallocated, unused) segment.
pub fn tmp_segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal.tmp")
}

/// Parses `{seq:016x}-{index:016x}.wal` into `(seq, first_index)`.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, index) = stem.split_once('-')?;
    if seq.len() != 16 || index.len() != 16 {
        return None;
    }
    let hex = |s: &str| {
        if s.bytes().all(|b| b.is_ascii_hexdigit()) {
            u64::from_str_radix(s, 16).ok()
        } else {
            None
        }
    };
    Some((hex(seq)?, hex(index)?))
}

/// Encodes the header of segment `seq`.
pub fn encode_segment_header(seq: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&WAL_FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks the header at the start of `file` against the expected sequence number.
pub fn check_segment_header(file: &[u8], expected_seq: u64) -> Result<(), String> {
    let Some(h) = file.get(..SEGMENT_HEADER_BYTES) else {
        return Err(format!(
            "file is {} bytes, shorter than the {SEGMENT_HEADER_BYTES}-byte header",
            file.len()
        ));
    };
    if h[0..8] != SEGMENT_MAGIC {
        return Err("bad magic".into());
    }
    let stored = u32::from_le_bytes(h[24..28].try_into().expect("4 bytes"));
    if crc32c::crc32c(&h[0..24]) != stored {
        return Err("header CRC32C mismatch".into());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != WAL_FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let seq = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
    if seq != expected_seq {
        return Err(format!(
            "header sequence {seq:016x} does not match file name {expected_seq:016x}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = segment_name(3, 0xabc);
        assert_eq!(n, "0000000000000003-0000000000000abc.wal");
        assert_eq!(parse_segment_name(&n), Some((3, 0xabc)));
        assert_eq!(parse_segment_name("3-abc.wal"), None);
        assert_eq!(parse_segment_name(&tmp_segment_name(3)), None);
        assert_eq!(
            parse_segment_name("000000000000000g-0000000000000abc.wal"),
            None
        );
        assert_eq!(
            parse_segment_name("+000000000000003-0000000000000abc.wal"),
            None
        );
    }

    #[test]
    fn header_checks() {
        let h = encode_segment_header(7);
        assert_eq!(check_segment_header(&h, 7), Ok(()));
        assert!(check_segment_header(&h, 8).is_err());
        assert!(check_segment_header(&h[..10], 7).is_err());
        let mut bad = h;
        bad[17] ^= 1;
        assert!(check_segment_header(&bad, 7).is_err());
    }
}
