//! Accepts the `:authority` etcdctl 3.4 sends with `--cluster`.
//!
//! `etcdctl endpoint status --cluster` (and `endpoint health`/`hashkv`
//! `--cluster`) dials each member's advertised client URL through grpc-go's
//! passthrough resolver, which sends the URL itself as the HTTP/2
//! `:authority`: `http://127.0.0.1:2379`. grpc-go, and so etcd, accepts
//! any authority; the `h2` crate resets such a stream with PROTOCOL_ERROR
//! (an authority cannot hold a scheme), and etcdctl fails.
//!
//! [`AuthorityFix`] sits between the socket and hyper, sans-IO: bytes in,
//! bytes out. It decodes the connection's first header block (HPACK, with
//! a fresh table, so one block is enough). If its `:authority` has no
//! scheme (every other client), it steps aside and the connection's bytes
//! go to hyper untouched from then on ([`AuthorityFix::is_passthrough`]).
//! If it has one, every header block of that connection is decoded, the
//! scheme (and any path) is cut from `:authority`, and the block is
//! re-encoded before hyper sees it; the other frames pass unchanged.
//! Anything it cannot parse it hands to hyper as is, to be refused there.

use loona_hpack::{Decoder, Encoder};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of a frame header.
const FRAME_HEADER_BYTES: usize = 9;
/// Largest frame payload: the SETTINGS_MAX_FRAME_SIZE the server
/// advertises (`http2::serve_connection`).
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 16 * 1024;
/// Largest header block (all its frames) the filter decodes; a gRPC
/// request's is a few hundred bytes. Larger first blocks go to hyper as
/// they are; on a transcoded connection they end it.
const HEADER_BLOCK_BYTES_MAX: usize = 16 * 1024;
/// Most header fields in a block the filter decodes (counted before
/// decoding). Bounds the decoder's work per block: it builds a Huffman
/// table per Huffman-coded string, and an indexed field can repeat a
/// 4 KiB table entry.
const HEADER_FIELDS_MAX: usize = 64;
/// The HPACK dynamic table size h2 advertises (its default; the server
/// does not change it), which the client's size updates may not exceed.
const HPACK_TABLE_BYTES_MAX: usize = 4096;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Why a transcoded connection must end.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthorityFixError {
    /// A header block that does not decode (the HPACK state is lost).
    #[error("undecodable header block: {0}")]
    Hpack(String),
    /// A header block with more fields than the filter decodes.
    #[error("header block with more than {HEADER_FIELDS_MAX} fields")]
    TooManyFields,
    /// A frame or header block above the limits.
    #[error("frame or header block too large ({0} bytes)")]
    TooLarge(usize),
    /// Frames out of HTTP/2's order inside a header block.
    #[error("expected a CONTINUATION frame of stream {0}")]
    Continuation(u32),
}

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Reading the 24-byte preface; `usize` bytes of it seen.
    Preface(usize),
    /// Reading frames until the first header block is complete.
    Undecided,
    /// Re-encoding every header block.
    Transcode,
    /// Out of the way for good.
    Passthrough,
}

/// A header block being collected (HEADERS, then CONTINUATIONs).
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    /// The 5 priority bytes of the HEADERS frame, if it had them.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The original frames, to hand on unchanged if the block is not
    /// rewritten.
    original: Vec<u8>,
}

/// The filter of one connection.
pub struct AuthorityFix {
    mode: Mode,
    /// Input not yet handled (an incomplete frame).
    pending: Vec<u8>,
    block: Option<Block>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    /// Header blocks rewritten so far.
    rewritten: u64,
}

impl Default for AuthorityFix {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for AuthorityFix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityFix")
            .field("mode", &self.mode)
            .field("pending", &self.pending.len())
            .field("rewritten", &self.rewritten)
            .finish_non_exhaustive()
    }
}

impl AuthorityFix {
    /// A filter for a new connection.
    #[must_use]
    pub fn new() -> AuthorityFix {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_BYTES_MAX);
        AuthorityFix {
            mode: Mode::Preface(0),
            pending: Vec::new(),
            block: None,
            decoder,
            encoder: Encoder::new(),
            rewritten: 0,
        }
    }

    /// True once the filter has stepped aside: every later byte may go to
    /// hyper without calling [`AuthorityFix::on_input`].
    #[must_use]
    pub fn is_passthrough(&self) -> bool {
        self.mode == Mode::Passthrough
    }

    /// Header blocks rewritten so far.
    #[cfg(test)]
    #[must_use]
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Takes bytes read from the client and appends what hyper should read
    /// to `out` (possibly nothing yet: an incomplete frame is kept).
    ///
    /// # Errors
    /// A transcoded connection whose header blocks cannot be decoded or are
    /// too large; the connection must be closed.
    pub fn on_input(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), AuthorityFixError> {
        if let Mode::Preface(seen) = self.mode {
            let n = (PREFACE.len() - seen).min(input.len());
            out.extend_from_slice(&input[..n]);
            input = &input[n..];
            self.mode = if seen + n == PREFACE.len() {
                Mode::Undecided
            } else {
                Mode::Preface(seen + n)
            };
        }
        if self.mode == Mode::Passthrough {
            out.extend_from_slice(input);
            return Ok(());
        }
        if matches!(self.mode, Mode::Preface(_)) {
            return Ok(());
        }
        self.pending.extend_from_slice(input);
        let mut at = 0;
        while self.pending.len() - at >= FRAME_HEADER_BYTES && self.mode != Mode::Passthrough {
            let h = &self.pending[at..at + FRAME_HEADER_BYTES];
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            if len > FRAME_PAYLOAD_BYTES_MAX {
                // Not a frame hyper accepts either.
                if self.mode == Mode::Transcode {
                    return Err(AuthorityFixError::TooLarge(len));
                }
                self.give_up(at, out);
                return Ok(());
            }
            if self.pending.len() - at < FRAME_HEADER_BYTES + len {
                break;
            }
            let frame = at..at + FRAME_HEADER_BYTES + len;
            at = frame.end;
            let frame = self.pending[frame].to_vec();
            self.on_frame(&frame, out)?;
        }
        if self.mode == Mode::Passthrough {
            out.extend_from_slice(&self.pending[at..]);
            self.pending = Vec::new();
        } else {
            self.pending.drain(..at);
        }
        Ok(())
    }

    /// Hands everything held back to hyper unchanged and steps aside.
    fn give_up(&mut self, at: usize, out: &mut Vec<u8>) {
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.original);
        }
        out.extend_from_slice(&self.pending[at..]);
        self.pending = Vec::new();
        self.mode = Mode::Passthrough;
    }

    fn on_frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), AuthorityFixError> {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_BYTES..];
        match (&mut self.block, kind) {
            (None, TYPE_HEADERS) => {
                let Some((priority, fragment)) = headers_fragment(flags, payload) else {
                    return self.not_ours(frame, out);
                };
                self.block = Some(Block {
                    stream,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    priority,
                    fragment: fragment.to_vec(),
                    original: frame.to_vec(),
                });
            }
            (Some(b), TYPE_CONTINUATION) if b.stream == stream => {
                b.fragment.extend_from_slice(payload);
                b.original.extend_from_slice(frame);
                if b.original.len() > HEADER_BLOCK_BYTES_MAX {
                    let n = b.original.len();
                    if self.mode == Mode::Transcode {
                        return Err(AuthorityFixError::TooLarge(n));
                    }
                    return self.not_ours(&[], out);
                }
            }
            (Some(b), _) => {
                let stream = b.stream;
                if self.mode == Mode::Transcode {
                    return Err(AuthorityFixError::Continuation(stream));
                }
                return self.not_ours(frame, out);
            }
            (None, _) => {
                out.extend_from_slice(frame);
                return Ok(());
            }
        }
        if flags & FLAG_END_HEADERS != 0 {
            let block = self.block.take().expect("collected above");
            self.on_block(block, out)?;
        }
        Ok(())
    }

    /// Something the filter does not understand before it decided: hyper
    /// gets it as is (and refuses it if it is wrong).
    fn not_ours(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), AuthorityFixError> {
        if self.mode == Mode::Transcode {
            return Err(AuthorityFixError::Hpack("malformed HEADERS frame".into()));
        }
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.original);
        }
        out.extend_from_slice(frame);
        self.mode = Mode::Passthrough;
        Ok(())
    }

    fn on_block(&mut self, block: Block, out: &mut Vec<u8>) -> Result<(), AuthorityFixError> {
        if hpack_fields(&block.fragment).is_some_and(|n| n > HEADER_FIELDS_MAX) {
            if self.mode == Mode::Transcode {
                return Err(AuthorityFixError::TooManyFields);
            }
            out.extend_from_slice(&block.original);
            self.mode = Mode::Passthrough;
            return Ok(());
        }
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let decoded = self.decoder.decode_with_cb(&block.fragment, |n, v| {
            headers.push((n.into_owned(), v.into_owned()))
        });
        if let Err(e) = decoded {
            if self.mode == Mode::Transcode {
                return Err(AuthorityFixError::Hpack(format!("{e:?}")));
            }
            out.extend_from_slice(&block.original);
            self.mode = Mode::Passthrough;
            return Ok(());
        }
        let mut changed = false;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" {
                if let Some(host) = strip_scheme(value) {
                    *value = host;
                    changed = true;
                }
            }
        }
        if self.mode == Mode::Undecided && !changed {
            out.extend_from_slice(&block.original);
            self.mode = Mode::Passthrough;
            return Ok(());
        }
        self.mode = Mode::Transcode;
        self.rewritten += 1;
        let encoded = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        write_block(&block, &encoded, out);
        Ok(())
    }
}

/// The priority bytes and header block fragment of a HEADERS payload, or
/// `None` if its padding or priority fields do not fit.
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0;
    if flags & FLAG_PADDED != 0 {
        pad = usize::from(*p.first()?);
        p = &p[1..];
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        priority = Some(p.get(..5)?.try_into().expect("5 bytes"));
        p = &p[5..];
    }
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}

/// Field representations in an HPACK block, counted without decoding any
/// string (RFC 7541 §6); `None` when it does not parse (the decoder then
/// reports it).
fn hpack_fields(mut b: &[u8]) -> Option<usize> {
    let mut fields = 0;
    while let Some(&first) = b.first() {
        if first & 0x80 != 0 {
            b = hpack_int(b, 7)?.1;
            fields += 1;
        } else if first & 0xe0 == 0x20 {
            b = hpack_int(b, 5)?.1;
        } else {
            let prefix = if first & 0xc0 == 0x40 { 6 } else { 4 };
            let (name_index, rest) = hpack_int(b, prefix)?;
            b = rest;
            if name_index == 0 {
                b = hpack_skip_string(b)?;
            }
            b = hpack_skip_string(b)?;
            fields += 1;
        }
    }
    Some(fields)
}

/// An HPACK integer with an N-bit prefix (RFC 7541 §5.1) and the bytes
/// after it.
fn hpack_int(b: &[u8], prefix_bits: u32) -> Option<(u64, &[u8])> {
    let max = (1u64 << prefix_bits) - 1;
    let mut value = u64::from(*b.first()?) & max;
    if value < max {
        return Some((value, &b[1..]));
    }
    let mut shift = 0u32;
    for (i, &byte) in b.iter().enumerate().skip(1) {
        value = value.checked_add(u64::from(byte & 0x7f) << shift)?;
        if byte & 0x80 == 0 {
            return Some((value, &b[i + 1..]));
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
    None
}

fn hpack_skip_string(b: &[u8]) -> Option<&[u8]> {
    let (len, rest) = hpack_int(b, 7)?;
    rest.get(usize::try_from(len).ok()?..)
}

/// `http://host:port[/...]` -> `host:port`; `None` when there is no scheme.
fn strip_scheme(authority: &[u8]) -> Option<Vec<u8>> {
    let at = authority.windows(3).position(|w| w == b"://")?;
    let rest = &authority[at + 3..];
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    Some(rest[..end].to_vec())
}

/// Writes `encoded` as a HEADERS frame (keeping END_STREAM and the
/// priority, dropping padding) and CONTINUATIONs as needed.
fn write_block(block: &Block, encoded: &[u8], out: &mut Vec<u8>) {
    let prio_bytes = block.priority.map_or(0, |_| 5);
    let first_room = FRAME_PAYLOAD_BYTES_MAX - prio_bytes;
    let first_len = encoded.len().min(first_room);
    let mut flags = 0;
    if block.end_stream {
        flags |= FLAG_END_STREAM;
    }
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if first_len == encoded.len() {
        flags |= FLAG_END_HEADERS;
    }
    frame_header(
        out,
        prio_bytes + first_len,
        TYPE_HEADERS,
        flags,
        block.stream,
    );
    if let Some(p) = block.priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(&encoded[..first_len]);
    let mut rest = &encoded[first_len..];
    while !rest.is_empty() {
        let n = rest.len().min(FRAME_PAYLOAD_BYTES_MAX);
        let flags = if n == rest.len() { FLAG_END_HEADERS } else { 0 };
        frame_header(out, n, TYPE_CONTINUATION, flags, block.stream);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= FRAME_PAYLOAD_BYTES_MAX);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One client stream: the preface, a SETTINGS frame, then header blocks
    /// encoded by one HPACK encoder (as a client's), each split into
    /// HEADERS + CONTINUATION pieces of `piece` bytes, with optional padding
    /// and priority, and a DATA frame after each.
    fn client_bytes(blocks: &[Vec<(&[u8], &[u8])>], piece: usize, pad: u8) -> Vec<u8> {
        let mut enc = Encoder::new();
        let mut out = PREFACE.to_vec();
        frame_header(&mut out, 6, 0x4, 0, 0);
        out.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        for (i, headers) in blocks.iter().enumerate() {
            let stream = 2 * i as u32 + 1;
            let encoded = enc.encode(headers.iter().copied());
            let mut chunks = encoded.chunks(piece);
            let first = chunks.next().unwrap_or(&[]);
            let rest: Vec<&[u8]> = chunks.collect();
            let mut flags = FLAG_PRIORITY | if pad > 0 { FLAG_PADDED } else { 0 };
            if rest.is_empty() {
                flags |= FLAG_END_HEADERS;
            }
            let pad_field = usize::from(pad > 0);
            let len = pad_field + 5 + first.len() + usize::from(pad);
            frame_header(&mut out, len, TYPE_HEADERS, flags, stream);
            if pad > 0 {
                out.push(pad);
            }
            out.extend_from_slice(&[0, 0, 0, 0, 16]);
            out.extend_from_slice(first);
            out.extend(std::iter::repeat_n(0u8, usize::from(pad)));
            for (j, c) in rest.iter().enumerate() {
                let f = if j + 1 == rest.len() {
                    FLAG_END_HEADERS
                } else {
                    0
                };
                frame_header(&mut out, c.len(), TYPE_CONTINUATION, f, stream);
                out.extend_from_slice(c);
            }
            frame_header(&mut out, 3, 0x0, FLAG_END_STREAM, stream);
            out.extend_from_slice(b"abc");
        }
        out
    }

    /// Parses frames after the preface: (type, flags, stream, payload).
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(bytes.starts_with(PREFACE));
        let mut at = PREFACE.len();
        let mut v = Vec::new();
        while at < bytes.len() {
            let h = &bytes[at..at + 9];
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
            v.push((h[3], h[4], stream, bytes[at + 9..at + 9 + len].to_vec()));
            at += 9 + len;
        }
        v
    }

    /// Header lists of every block in the output, decoded by one decoder
    /// (as h2's).
    fn decoded_blocks(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut dec = Decoder::new();
        let mut blocks = Vec::new();
        let mut frag = Vec::new();
        for (kind, flags, _, payload) in frames(bytes) {
            match kind {
                TYPE_HEADERS => {
                    let (_, f) = headers_fragment(flags, &payload).unwrap();
                    frag = f.to_vec();
                }
                TYPE_CONTINUATION => frag.extend_from_slice(&payload),
                _ => continue,
            }
            if flags & FLAG_END_HEADERS != 0 {
                let mut hs = Vec::new();
                dec.decode_with_cb(&frag, |n, v| hs.push((n.into_owned(), v.into_owned())))
                    .unwrap();
                blocks.push(hs);
            }
        }
        blocks
    }

    fn run(input: &[u8], step: usize) -> (Vec<u8>, AuthorityFix) {
        let mut fix = AuthorityFix::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            if fix.is_passthrough() {
                out.extend_from_slice(piece);
            } else {
                fix.on_input(piece, &mut out).unwrap();
            }
        }
        (out, fix)
    }

    fn request<'a>(
        authority: &'a [u8],
        path: &'a [u8],
        big: &'a [u8],
    ) -> Vec<(&'a [u8], &'a [u8])> {
        vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"user-agent", b"grpc-go/1.26.0"),
            (b"te", b"trailers"),
            (b"x-big", big),
        ]
    }

    #[test]
    fn a_plain_authority_passes_through_byte_for_byte() {
        let big = vec![b'q'; 40];
        let blocks = vec![
            request(b"127.0.0.1:2379", b"/etcdserverpb.KV/Range", &big),
            request(b"127.0.0.1:2379", b"/etcdserverpb.KV/Put", &big),
        ];
        for pad in [0, 7] {
            let input = client_bytes(&blocks, 16, pad);
            for step in [1, 5, 9, 64, 100_000] {
                let (out, fix) = run(&input, step);
                assert_eq!(out, input, "step {step} pad {pad}");
                assert!(fix.is_passthrough());
                assert_eq!(fix.rewritten(), 0);
            }
        }
    }

    #[test]
    fn a_scheme_in_the_authority_is_cut_from_every_block() {
        let big = vec![b'z'; 4 * 1024];
        let blocks = vec![
            request(
                b"http://127.0.0.1:2379",
                b"/etcdserverpb.Maintenance/Status",
                b"x",
            ),
            request(b"http://127.0.0.1:2379", b"/etcdserverpb.KV/Range", &big),
            request(
                b"https://[::1]:2379/some/path",
                b"/etcdserverpb.KV/Put",
                b"y",
            ),
            request(b"plain:1", b"/etcdserverpb.KV/Put", b"y"),
        ];
        for pad in [0, 3] {
            let input = client_bytes(&blocks, 1000, pad);
            for step in [1, 13, 4096, 1_000_000] {
                let (out, fix) = run(&input, step);
                assert!(!fix.is_passthrough());
                assert_eq!(fix.rewritten(), 4);
                let got = decoded_blocks(&out);
                assert_eq!(got.len(), 4);
                for (b, (want, got)) in blocks.iter().zip(&got).enumerate() {
                    for ((wn, wv), (gn, gv)) in want.iter().zip(got) {
                        assert_eq!(*wn, gn.as_slice());
                        if *wn == b":authority" {
                            let host: &[u8] = match b {
                                0 | 1 => b"127.0.0.1:2379",
                                2 => b"[::1]:2379",
                                _ => b"plain:1",
                            };
                            assert_eq!(gv.as_slice(), host);
                        } else {
                            assert_eq!(*wv, gv.as_slice());
                        }
                    }
                }
                let fs = frames(&out);
                assert!(fs.iter().all(|f| f.3.len() <= FRAME_PAYLOAD_BYTES_MAX));
                // DATA frames unchanged, END_STREAM kept off the HEADERS.
                let data: Vec<_> = fs.iter().filter(|f| f.0 == 0).collect();
                assert_eq!(data.len(), 4);
                assert!(data.iter().all(|f| f.3 == b"abc" && f.1 == FLAG_END_STREAM));
                assert!(fs
                    .iter()
                    .filter(|f| f.0 == TYPE_HEADERS)
                    .all(|f| f.1 & FLAG_END_STREAM == 0 && f.1 & FLAG_PRIORITY != 0));
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = client_bytes(
            &[
                request(b"http://h:1", b"/a/b", b"v"),
                request(b"http://h:1", b"/a/c", b"w"),
            ],
            7,
            2,
        );
        for _ in 0..3000 {
            let mut input = valid.clone();
            for _ in 0..(rnd() % 6 + 1) {
                let i = (rnd() as usize) % input.len();
                input[i] = rnd() as u8;
            }
            let cut = (rnd() as usize) % (input.len() + 1);
            input.truncate(cut);
            let mut fix = AuthorityFix::new();
            let mut out = Vec::new();
            for piece in input.chunks((rnd() % 50 + 1) as usize) {
                if fix.on_input(piece, &mut out).is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn a_block_that_grows_when_re_encoded_is_split_into_continuations() {
        // A Huffman-coded value of 20,000 '0's (5-bit code 00000: 12,500
        // zero bytes) fits one frame; re-encoded as a plain literal it
        // needs two.
        let mut enc = Encoder::new();
        let mut block = enc.encode(request(b"http://h:1", b"/a/b", b"v"));
        block.push(0x00); // literal without indexing, new name
        block.push(6);
        block.extend_from_slice(b"x-huge");
        block.extend_from_slice(&[0x80 | 0x7f, 0xd5, 0x60]); // H, 127 + 12,373 = 12,500
        block.extend(std::iter::repeat_n(0u8, 12_500));
        let mut input = PREFACE.to_vec();
        frame_header(&mut input, block.len(), TYPE_HEADERS, FLAG_END_HEADERS, 1);
        input.extend_from_slice(&block);
        let (out, fix) = run(&input, 1000);
        assert_eq!(fix.rewritten(), 1);
        let fs = frames(&out);
        assert_eq!(
            fs.iter().map(|f| f.0).collect::<Vec<_>>(),
            vec![TYPE_HEADERS, TYPE_CONTINUATION]
        );
        assert_eq!(fs[0].1 & FLAG_END_HEADERS, 0);
        assert_eq!(fs[1].1 & FLAG_END_HEADERS, FLAG_END_HEADERS);
        let got = &decoded_blocks(&out)[0];
        let authority = got.iter().find(|(n, _)| n == b":authority").unwrap();
        assert_eq!(authority.1, b"h:1");
        let huge = &got.iter().find(|(n, _)| n == b"x-huge").unwrap().1;
        assert!(huge.len() == 20_000 && huge.iter().all(|&b| b == b'0'));
    }

    #[test]
    fn blocks_beyond_the_limits_are_not_decoded() {
        // First block: 65 fields -> handed to hyper unchanged.
        let many: Vec<(Vec<u8>, Vec<u8>)> = (0..65)
            .map(|i| (format!("x-{i}").into_bytes(), b"v".to_vec()))
            .collect();
        let mut headers = request(b"http://h:1", b"/a/b", b"v");
        headers.extend(many.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let input = client_bytes(&[headers.clone()], 1000, 0);
        let (out, fix) = run(&input, 7);
        assert_eq!(out, input);
        assert!(fix.is_passthrough());
        // The same block after a rewritten one ends the connection.
        let input = client_bytes(&[request(b"http://h:1", b"/a/b", b"v"), headers], 1000, 0);
        let mut fix = AuthorityFix::new();
        let mut out = Vec::new();
        assert_eq!(
            fix.on_input(&input, &mut out),
            Err(AuthorityFixError::TooManyFields)
        );
        // A table size update above h2's 4096 is refused by the decoder.
        let mut block = vec![0x3f, 0xe1, 0x7f]; // size update to 16,384
        block.extend_from_slice(&[0x82]); // :method GET
        let mut bytes = PREFACE.to_vec();
        frame_header(&mut bytes, block.len(), TYPE_HEADERS, FLAG_END_HEADERS, 1);
        bytes.extend_from_slice(&block);
        let (out, fix) = run(&bytes, 100);
        assert_eq!(out, bytes, "handed to hyper, which refuses it");
        assert!(fix.is_passthrough());
    }

    #[test]
    fn hpack_field_count_matches_the_decoder() {
        let mut enc = Encoder::new();
        let big = vec![b'q'; 300];
        for headers in [
            request(b"http://h:1", b"/a", &big),
            request(b"a:1", b"/b", b""),
        ] {
            let block = enc.encode(headers.iter().copied());
            assert_eq!(hpack_fields(&block), Some(headers.len()));
        }
        assert_eq!(hpack_fields(&[0x3f, 0xe1, 0x7f, 0x82]), Some(1));
        assert_eq!(hpack_fields(&[0x40, 0x05, b'a']), None, "cut string");
        assert_eq!(hpack_fields(&[0xff, 0xff, 0xff]), None, "cut integer");
        assert_eq!(hpack_fields(&[0xff; 12]), None, "integer too long");
    }

    #[test]
    fn strip_scheme_cases() {
        assert_eq!(strip_scheme(b"http://a:1"), Some(b"a:1".to_vec()));
        assert_eq!(strip_scheme(b"unix://x/y"), Some(b"x".to_vec()));
        assert_eq!(strip_scheme(b"a:1"), None);
        assert_eq!(strip_scheme(b"://"), Some(Vec::new()));
    }
}
