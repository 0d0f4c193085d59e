//! Plain Thrift on a TTHeader port: the framed and buffered (unframed) transports of Apache
//! Thrift, without TTHeader, as every Apache Thrift client (C++, Java, Python, Go) and
//! volo-thrift's `framed()`/`buffered()` codecs speak them.
//!
//! - **Framed** (`TFramedTransport`): `u32` length, then one Thrift-binary message.
//! - **Buffered** (`TBufferedTransport`, a bare socket): the message alone. Nothing says where
//!   it ends, so [`PlainDecoder`] walks the Thrift-binary encoding as bytes arrive, resuming
//!   where it stopped (no rescan from the start), and knows a message is whole when its Args
//!   struct's STOP byte arrives.
//!
//! Both carry strict envelopes (`0x8001_00TT`) or, from clients with `strictWrite = false`, the
//! old non-strict one (`i32 len` + name, `u8 type`, `i32 seqid`). Detection follows what
//! volo-thrift and Kitex look at (`0x8001` at offset 0 buffered, at offset 4 framed), plus the
//! non-strict shapes: a small length, then a method name of identifier characters, then a
//! CALL or ONEWAY type byte. No TTHeader packet, HTTP/2 preface or shared-memory handshake
//! matches any of these.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use super::thrift_msg::{
    MessageHeaderRef, TYPE_BOOL, TYPE_BYTE, TYPE_DOUBLE, TYPE_I16, TYPE_I32, TYPE_I64, TYPE_LIST,
    TYPE_MAP, TYPE_SET, TYPE_STOP, TYPE_STRING, TYPE_STRUCT, TYPE_UUID,
};
use super::ThriftError;

/// How a plain Thrift connection delimits its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlainFraming {
    /// `u32` length + message (`TFramedTransport`).
    Framed,
    /// The bare message (`TBufferedTransport`).
    Buffered,
}

/// Longest method name a non-strict envelope may announce for the connection to be taken for
/// plain Thrift. Detection reads the whole name before it decides, and it must fit in the
/// serving layer's preface budget (8 KiB); method names are identifiers, far shorter.
pub const MAX_DETECT_NAME: usize = 1024;

/// Deepest struct/container nesting [`PlainDecoder`] follows, as Apache Thrift's default
/// recursion limit (and [`MAX_SKIP_DEPTH`](super::thrift_msg::MAX_SKIP_DEPTH)).
pub const MAX_DEPTH: usize = super::thrift_msg::MAX_SKIP_DEPTH;

/// What the first bytes say, three ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    NeedMore,
}

impl Tri {
    fn and_then(self, next: impl FnOnce() -> Tri) -> Tri {
        match self {
            Tri::Yes => next(),
            other => other,
        }
    }
}

/// Checks `p[at..]` byte by byte against `checks`: `No` at the first mismatch, `NeedMore`
/// when the bytes run out first.
fn bytes_match(p: &[u8], at: usize, checks: &[fn(u8) -> bool]) -> Tri {
    for (i, check) in checks.iter().enumerate() {
        match p.get(at + i) {
            None => return Tri::NeedMore,
            Some(b) if !check(*b) => return Tri::No,
            Some(_) => {}
        }
    }
    Tri::Yes
}

fn is_call_type(b: u8) -> bool {
    // A client opens with CALL (1) or ONEWAY (4).
    b == 1 || b == 4
}

/// A strict envelope's first word, `80 01 00 {01|04}`, at `at`.
fn strict_at(p: &[u8], at: usize) -> Tri {
    bytes_match(
        p,
        at,
        &[|b| b == 0x80, |b| b == 0x01, |b| b == 0, is_call_type],
    )
}

/// Characters of a Thrift method name (identifiers; `:` for TMultiplexedProtocol's
/// `Service:method`).
fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b':'
}

/// A non-strict envelope at `at`: `i32` name length in `1..=MAX_DETECT_NAME`, the name, a
/// CALL/ONEWAY type byte.
fn non_strict_at(p: &[u8], at: usize) -> Tri {
    let Some(len) = p.get(at..at + 4) else {
        // A first byte with the top bit set is a strict envelope or nothing.
        return match p.get(at) {
            Some(b) if *b != 0 => Tri::No,
            _ => Tri::NeedMore,
        };
    };
    let n = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let Some(n) = usize::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_DETECT_NAME).contains(n))
    else {
        return Tri::No;
    };
    let name = p.get(at + 4..).unwrap_or_default();
    if name.iter().take(n).any(|b| !is_name_char(*b)) {
        return Tri::No;
    }
    match name.get(n) {
        None => Tri::NeedMore,
        Some(t) if is_call_type(*t) => Tri::Yes,
        Some(_) => Tri::No,
    }
}

/// A framed message: a non-negative `u32` length, then a strict or non-strict envelope.
fn framed(p: &[u8]) -> Tri {
    let length = bytes_match(p, 0, &[|b| b < 0x80, |_| true, |_| true, |_| true]);
    length.and_then(|| any(strict_at(p, 4), non_strict_at(p, 4)))
}

/// `Yes` if either says yes, else `NeedMore` if either needs more, else `No`.
fn any(a: Tri, b: Tri) -> Tri {
    match (a, b) {
        (Tri::Yes, _) | (_, Tri::Yes) => Tri::Yes,
        (Tri::NeedMore, _) | (_, Tri::NeedMore) => Tri::NeedMore,
        _ => Tri::No,
    }
}

/// Whether a fresh connection's first bytes are plain Thrift: `Ok(Some(framing))` if so,
/// `Ok(None)` if not, `Err(())` if more bytes are needed to tell.
#[allow(clippy::result_unit_err)]
pub fn detect_plain(prefix: &[u8]) -> Result<Option<PlainFraming>, ()> {
    let buffered = any(strict_at(prefix, 0), non_strict_at(prefix, 0));
    if buffered == Tri::Yes {
        return Ok(Some(PlainFraming::Buffered));
    }
    match framed(prefix) {
        Tri::Yes => Ok(Some(PlainFraming::Framed)),
        Tri::NeedMore => Err(()),
        Tri::No if buffered == Tri::NeedMore => Err(()),
        Tri::No => Ok(None),
    }
}

/// A plain Thrift byte stream cannot be delimited.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlainError {
    /// A message (framed: its declared length; buffered: the bytes it needs) is over the
    /// limit. Checked before the bytes are buffered.
    #[error("plain thrift message of at least {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Bytes the message needs (at least).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The Thrift-binary encoding is malformed (a negative length, an unknown type id,
    /// nesting deeper than [`MAX_DEPTH`], a bad envelope).
    #[error("malformed plain thrift message: {0}")]
    Malformed(#[from] ThriftError),
}

/// One open struct or container of the message being walked.
#[derive(Debug, Clone, Copy)]
enum Level {
    /// Field headers until STOP.
    Struct,
    /// `left` elements of type `elem` (lists and sets).
    List { elem: u8, left: u64 },
    /// `left` keys and values still to come, alternating (key first).
    Map { key: u8, value: u8, left: u64 },
}

/// Where the walk of a buffered message stands.
#[derive(Debug, Default)]
struct Walk {
    /// Bytes of the message known to be whole so far.
    pos: usize,
    /// The envelope was read; the Args struct is being walked.
    started: bool,
    /// A value of this type starts at `pos`.
    pending: Option<u8>,
    stack: Vec<Level>,
}

/// Takes whole plain Thrift messages off the front of a connection's read buffer (the
/// tokio-util decoder contract: `Ok(None)` means "need more bytes").
#[derive(Debug)]
pub struct PlainDecoder {
    framing: PlainFraming,
    max: usize,
    walk: Walk,
}

/// What the walk needs from the buffer next.
enum Need {
    More,
    Fail(PlainError),
}

impl From<ThriftError> for Need {
    fn from(e: ThriftError) -> Need {
        Need::Fail(e.into())
    }
}

impl PlainDecoder {
    /// A decoder for `framing`, refusing messages over `max` bytes (framed: the length
    /// prefix's value).
    pub fn new(framing: PlainFraming, max: usize) -> PlainDecoder {
        PlainDecoder {
            framing,
            max,
            walk: Walk::default(),
        }
    }

    /// The framing this decoder reads.
    pub fn framing(&self) -> PlainFraming {
        self.framing
    }

    /// The next whole message (envelope + struct, without a frame length), or `Ok(None)`
    /// until its last byte arrived.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, PlainError> {
        match self.framing {
            PlainFraming::Framed => self.decode_framed(buf),
            PlainFraming::Buffered => match self.walk_message(buf) {
                Ok(len) => {
                    self.walk = Walk::default();
                    Ok(Some(buf.split_to(len).freeze()))
                }
                Err(Need::More) => Ok(None),
                Err(Need::Fail(e)) => Err(e),
            },
        }
    }

    fn decode_framed(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, PlainError> {
        let Some(head) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > self.max {
            return Err(PlainError::TooLarge {
                size: len,
                limit: self.max,
            });
        }
        if buf.len() < 4 + len {
            crate::proto::header::reserve_frame(buf, 4 + len);
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(len).freeze()))
    }

    /// `n` more bytes at `at`, within the limit.
    fn need(&self, buf: &[u8], at: usize, n: usize) -> Result<(), Need> {
        let end = at.saturating_add(n);
        if end > self.max {
            return Err(Need::Fail(PlainError::TooLarge {
                size: end,
                limit: self.max,
            }));
        }
        if end > buf.len() {
            return Err(Need::More);
        }
        Ok(())
    }

    /// Walks on from where the last call stopped; returns the message's length once whole.
    fn walk_message(&mut self, buf: &[u8]) -> Result<usize, Need> {
        if !self.walk.started {
            match MessageHeaderRef::decode_lenient(buf) {
                Ok((_, used)) => {
                    self.walk.pos = used;
                    self.walk.started = true;
                    self.walk.pending = Some(TYPE_STRUCT);
                }
                Err(ThriftError::Truncated { offset, need, .. }) => {
                    self.need(buf, offset, need)?;
                    // `need` saw the bytes missing: unreachable, but never trust it to be.
                    return Err(Need::More);
                }
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            if let Some(ty) = self.walk.pending {
                self.start_value(buf, ty)?;
                self.walk.pending = None;
                continue;
            }
            let pos = self.walk.pos;
            let Some(top) = self.walk.stack.last_mut() else {
                return Ok(pos);
            };
            match top {
                Level::Struct => {
                    self.need(buf, pos, 1)?;
                    let ty = buf[pos];
                    if ty == TYPE_STOP {
                        self.walk.pos += 1;
                        self.walk.stack.pop();
                        continue;
                    }
                    // Field header: type, i16 id.
                    self.need(buf, pos, 3)?;
                    self.walk.pos += 3;
                    self.walk.pending = Some(ty);
                }
                Level::List { elem, left } => {
                    if *left == 0 {
                        self.walk.stack.pop();
                        continue;
                    }
                    let (elem, remaining) = (*elem, *left);
                    if let Some(w) = fixed_width(elem) {
                        // Whole runs of fixed-width elements at once.
                        let avail = ((buf.len().min(self.max) - pos) / w) as u64;
                        let take = remaining.min(avail);
                        if take == 0 {
                            self.need(buf, pos, w)?;
                            return Err(Need::More);
                        }
                        if let Some(Level::List { left, .. }) = self.walk.stack.last_mut() {
                            *left -= take;
                        }
                        self.walk.pos += take as usize * w;
                    } else {
                        *left -= 1;
                        self.walk.pending = Some(elem);
                    }
                }
                Level::Map { key, value, left } => {
                    if *left == 0 {
                        self.walk.stack.pop();
                        continue;
                    }
                    let ty = if *left % 2 == 0 { *key } else { *value };
                    *left -= 1;
                    self.walk.pending = Some(ty);
                }
            }
        }
    }

    /// Consumes a scalar of type `ty` at `pos`, or the header of a struct or container (then
    /// one level deeper). Leaves the walk as it was when the bytes are not there yet.
    fn start_value(&mut self, buf: &[u8], ty: u8) -> Result<(), Need> {
        let pos = self.walk.pos;
        if let Some(w) = fixed_width(ty) {
            self.need(buf, pos, w)?;
            self.walk.pos += w;
            return Ok(());
        }
        let level = match ty {
            TYPE_STRING => {
                self.need(buf, pos, 4)?;
                let n = read_size(buf, pos)?;
                self.need(buf, pos, 4 + n)?;
                self.walk.pos += 4 + n;
                return Ok(());
            }
            TYPE_STRUCT => (Level::Struct, 0),
            TYPE_MAP => {
                self.need(buf, pos, 6)?;
                let n = read_size(buf, pos + 2)? as u64;
                let (key, value) = (buf[pos], buf[pos + 1]);
                (
                    Level::Map {
                        key,
                        value,
                        left: 2 * n,
                    },
                    6,
                )
            }
            TYPE_LIST | TYPE_SET => {
                self.need(buf, pos, 5)?;
                let n = read_size(buf, pos + 1)? as u64;
                (
                    Level::List {
                        elem: buf[pos],
                        left: n,
                    },
                    5,
                )
            }
            _ => {
                return Err(ThriftError::InvalidType { ty, offset: pos }.into());
            }
        };
        if self.walk.stack.len() >= MAX_DEPTH {
            return Err(ThriftError::DepthLimit { limit: MAX_DEPTH }.into());
        }
        self.walk.stack.push(level.0);
        self.walk.pos += level.1;
        Ok(())
    }
}

/// Encoded size of a fixed-width Thrift-binary type.
fn fixed_width(ty: u8) -> Option<usize> {
    match ty {
        TYPE_BOOL | TYPE_BYTE => Some(1),
        TYPE_I16 => Some(2),
        TYPE_I32 => Some(4),
        TYPE_DOUBLE | TYPE_I64 => Some(8),
        TYPE_UUID => Some(16),
        _ => None,
    }
}

/// The non-negative `i32` length or count at `at` (the caller checked 4 bytes are there).
fn read_size(buf: &[u8], at: usize) -> Result<usize, ThriftError> {
    let len = i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    usize::try_from(len).map_err(|_| ThriftError::NegativeLength { len, offset: at })
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;
    use crate::proto::MessageType;

    const MAX: usize = 1 << 20;

    fn envelope(name: &str, seq: i32, strict: bool) -> Vec<u8> {
        let mut v = Vec::new();
        if strict {
            MessageHeaderRef {
                name,
                kind: MessageType::Call,
                seq_id: seq,
            }
            .encode(&mut v)
            .unwrap();
        } else {
            v.put_i32(name.len() as i32);
            v.put_slice(name.as_bytes());
            v.put_u8(1);
            v.put_i32(seq);
        }
        v
    }

    /// An Args struct with every kind of field: `1: struct{1: string, 2: i32, 3: i64}`,
    /// `2: list<i32>`, `3: map<string, list<bool>>`, `4: set<struct{}>`, `5: double`, `6: uuid`.
    fn args() -> Vec<u8> {
        let mut v = Vec::new();
        v.put_u8(TYPE_STRUCT);
        v.put_i16(1);
        v.put_u8(TYPE_STRING);
        v.put_i16(1);
        v.put_i32(5);
        v.put_slice(b"hello");
        v.put_u8(TYPE_I32);
        v.put_i16(2);
        v.put_i32(7);
        v.put_u8(TYPE_I64);
        v.put_i16(3);
        v.put_i64(-1);
        v.put_u8(TYPE_STOP);
        v.put_u8(TYPE_LIST);
        v.put_i16(2);
        v.put_u8(TYPE_I32);
        v.put_i32(3);
        for i in 0..3 {
            v.put_i32(i);
        }
        v.put_u8(TYPE_MAP);
        v.put_i16(3);
        v.put_u8(TYPE_STRING);
        v.put_u8(TYPE_LIST);
        v.put_i32(2);
        for k in ["a", "bb"] {
            v.put_i32(k.len() as i32);
            v.put_slice(k.as_bytes());
            v.put_u8(TYPE_BOOL);
            v.put_i32(2);
            v.put_slice(&[1, 0]);
        }
        v.put_u8(TYPE_SET);
        v.put_i16(4);
        v.put_u8(TYPE_STRUCT);
        v.put_i32(2);
        v.put_slice(&[TYPE_STOP, TYPE_STOP]);
        v.put_u8(TYPE_DOUBLE);
        v.put_i16(5);
        v.put_f64(1.5);
        v.put_u8(TYPE_UUID);
        v.put_i16(6);
        v.put_slice(&[9; 16]);
        v.put_u8(TYPE_STOP);
        v
    }

    fn message(strict: bool) -> Vec<u8> {
        let mut m = envelope("PingPong", 7, strict);
        m.extend(args());
        m
    }

    #[test]
    fn detects_strict_and_non_strict_in_both_framings() {
        let strict = message(true);
        let old = message(false);
        let framed = |m: &[u8]| {
            let mut v = (m.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(m);
            v
        };
        for (bytes, want) in [
            (strict.clone(), PlainFraming::Buffered),
            (old.clone(), PlainFraming::Buffered),
            (framed(&strict), PlainFraming::Framed),
            (framed(&old), PlainFraming::Framed),
        ] {
            assert_eq!(detect_plain(&bytes), Ok(Some(want)), "{bytes:02x?}");
            // Every shorter prefix is undecided or the same answer, never another one.
            for n in 0..bytes.len() {
                let got = detect_plain(&bytes[..n]);
                assert!(got == Err(()) || got == Ok(Some(want)), "{n}: {got:?}");
            }
        }
        // Strict buffered is known from 4 bytes, strict framed from 8.
        assert_eq!(detect_plain(&strict[..4]), Ok(Some(PlainFraming::Buffered)));
        assert_eq!(
            detect_plain(&framed(&strict)[..8]),
            Ok(Some(PlainFraming::Framed))
        );
    }

    #[test]
    fn other_protocols_are_not_plain_thrift() {
        let ttheader = [0, 0, 0, 30, 0x10, 0, 0, 0, 0, 0, 0, 1];
        let ttstream = [0, 0, 0, 30, 0x10, 0, 0, 2, 0, 0, 0, 1];
        for p in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            &b"GET / HTTP/1.1\r\n"[..],
            &b"RPCSHM\x00\x01"[..],
            &ttheader[..],
            &ttstream[..],
            // Compact protocol, a REPLY, a non-strict name with a space, a huge name.
            &[0x82, 0x21, 0, 0][..],
            &[0x80, 0x01, 0, 2][..],
            &[0, 0, 0, 2, b'a', b' ', 1, 0, 0, 0, 0][..],
            &[0, 1, 0, 0, b'a'][..],
        ] {
            assert_eq!(detect_plain(p), Ok(None), "{p:02x?}");
        }
        // A TTHeader prefix is told apart by its fifth byte.
        assert_eq!(detect_plain(&ttheader[..4]), Err(()));
        assert_eq!(detect_plain(&ttheader[..5]), Ok(None));
    }

    #[test]
    fn framed_messages_split_at_their_length() {
        let m = message(true);
        let mut buf = BytesMut::new();
        buf.put_u32(m.len() as u32);
        buf.put_slice(&m);
        buf.put_u32(m.len() as u32);
        buf.put_slice(&m[..10]);
        let mut d = PlainDecoder::new(PlainFraming::Framed, MAX);
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&m[..]));
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.put_slice(&m[10..]);
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&m[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn framed_length_over_the_limit_fails_before_buffering() {
        let mut buf = BytesMut::from(&[0, 0, 1, 1][..]);
        let mut d = PlainDecoder::new(PlainFraming::Framed, 256);
        assert_eq!(
            d.decode(&mut buf),
            Err(PlainError::TooLarge {
                size: 257,
                limit: 256
            })
        );
    }

    #[test]
    fn buffered_messages_are_found_byte_by_byte() {
        for strict in [true, false] {
            let m = message(strict);
            let mut wire = m.clone();
            wire.extend_from_slice(&m);
            let mut d = PlainDecoder::new(PlainFraming::Buffered, MAX);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for b in &wire {
                buf.put_u8(*b);
                while let Some(msg) = d.decode(&mut buf).unwrap() {
                    got.push(msg);
                }
            }
            assert_eq!(got.len(), 2, "strict: {strict}");
            assert!(got.iter().all(|g| g[..] == m[..]));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn buffered_message_in_one_piece_and_in_two() {
        let m = message(true);
        for cut in [1, 5, 12, 20, m.len() - 1] {
            let mut d = PlainDecoder::new(PlainFraming::Buffered, MAX);
            let mut buf = BytesMut::from(&m[..cut]);
            assert_eq!(d.decode(&mut buf).unwrap(), None, "cut {cut}");
            buf.put_slice(&m[cut..]);
            assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&m[..]));
        }
    }

    #[test]
    fn buffered_limits_and_malformed_input_fail() {
        let m = message(true);
        let mut d = PlainDecoder::new(PlainFraming::Buffered, m.len() - 1);
        let mut buf = BytesMut::from(&m[..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(PlainError::TooLarge { .. })
        ));
        // A string announcing more than the limit fails at once, not when the bytes come.
        let mut big = envelope("PingPong", 1, true);
        big.extend_from_slice(&[TYPE_STRING, 0, 1, 0x7f, 0xff, 0xff, 0xff]);
        let mut d = PlainDecoder::new(PlainFraming::Buffered, MAX);
        assert!(matches!(
            d.decode(&mut BytesMut::from(&big[..])),
            Err(PlainError::TooLarge { .. })
        ));
        // Unknown type ids, negative lengths, nesting past the limit.
        for body in [
            vec![99u8, 0, 1],
            vec![TYPE_LIST, 0, 1, TYPE_I32, 0xff, 0xff, 0xff, 0xff],
            std::iter::repeat_n([TYPE_STRUCT, 0, 1], MAX_DEPTH + 1)
                .flatten()
                .collect(),
        ] {
            let mut v = envelope("PingPong", 1, true);
            v.extend(body);
            let mut d = PlainDecoder::new(PlainFraming::Buffered, MAX);
            assert!(
                matches!(
                    d.decode(&mut BytesMut::from(&v[..])),
                    Err(PlainError::Malformed(_))
                ),
                "{v:02x?}"
            );
        }
    }

    #[test]
    fn long_lists_of_fixed_width_elements_are_skipped_in_runs() {
        let mut v = envelope("PingPong", 1, true);
        v.extend_from_slice(&[TYPE_LIST, 0, 1, TYPE_I64]);
        v.put_i32(100_000);
        v.extend(std::iter::repeat_n(0u8, 800_000));
        v.push(TYPE_STOP);
        let mut d = PlainDecoder::new(PlainFraming::Buffered, MAX);
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in v.chunks(64 * 1024) {
            buf.put_slice(chunk);
            if let Some(m) = d.decode(&mut buf).unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got.map(|m| m.len()), Some(v.len()));
    }
}
