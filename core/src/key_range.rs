//! The key ranges of etcd requests.
//!
//! etcd encodes a range as `(key, range_end)`:
//!
//! | `range_end`          | meaning                         |
//! |----------------------|---------------------------------|
//! | empty                | the single key `key`            |
//! | `"\0"`               | every key `>= key` ("from key") |
//! | anything else        | `[key, range_end)`, bytewise    |
//!
//! `key = range_end = "\0"` is therefore the whole keyspace (no key is
//! empty). A `range_end <= key` is an empty range, not an error.

use std::ops::Bound;

/// A borrowed, decoded etcd key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// Exactly one key.
    Single(&'a [u8]),
    /// Every key `>= start`.
    From(&'a [u8]),
    /// Every key in `[start, end)`.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    /// Decodes `(key, range_end)` as etcd does (`mkGteRange` plus the
    /// single-key rule).
    #[must_use]
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Between(key, end),
        }
    }

    /// The first key the range can contain.
    #[must_use]
    pub fn start(&self) -> &'a [u8] {
        match *self {
            KeyRange::Single(k) | KeyRange::From(k) | KeyRange::Between(k, _) => k,
        }
    }

    /// True when the range cannot contain any key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        matches!(*self, KeyRange::Between(start, end) if end <= start)
    }

    /// True when `key` lies in the range.
    #[must_use]
    pub fn contains(&self, key: &[u8]) -> bool {
        match *self {
            KeyRange::Single(k) => key == k,
            KeyRange::From(start) => key >= start,
            KeyRange::Between(start, end) => key >= start && key < end,
        }
    }

    /// The range as `std` bounds, for `BTreeMap::range`. Panics-free even for
    /// empty ranges: an empty `Between` maps to `[start, start)`.
    #[must_use]
    pub fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match *self {
            KeyRange::Single(k) => (Bound::Included(k), Bound::Included(k)),
            KeyRange::From(start) => (Bound::Included(start), Bound::Unbounded),
            KeyRange::Between(start, end) if end <= start => {
                (Bound::Included(start), Bound::Excluded(start))
            }
            KeyRange::Between(start, end) => (Bound::Included(start), Bound::Excluded(end)),
        }
    }
}

/// The smallest key greater than every key with `prefix`: the last byte
/// below 0xff incremented, trailing 0xff bytes dropped; `"\0"` (from-key)
/// when the prefix is all 0xff or empty. This is etcd's `GetPrefixRangeEnd`.
#[must_use]
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_etcd_encodings() {
        assert_eq!(KeyRange::new(b"a", b""), KeyRange::Single(b"a"));
        assert_eq!(KeyRange::new(b"a", b"\0"), KeyRange::From(b"a"));
        assert_eq!(KeyRange::new(b"a", b"c"), KeyRange::Between(b"a", b"c"));
        let all = KeyRange::new(b"\0", b"\0");
        assert!(all.contains(b"\0") && all.contains(b"zzz") && all.contains(b"\xff"));
    }

    #[test]
    fn contains_and_empty() {
        let r = KeyRange::new(b"b", b"d");
        assert!(!r.contains(b"a") && r.contains(b"b") && r.contains(b"c\xff") && !r.contains(b"d"));
        assert!(KeyRange::new(b"d", b"b").is_empty());
        assert!(KeyRange::new(b"d", b"d").is_empty());
        assert!(!KeyRange::new(b"d", b"\0").is_empty());
    }

    #[test]
    fn prefix_end_matches_etcd() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
