//! The TTHeader packet (spec §1): framing, variable header and info blocks.
//!
//! ```text
//! 0      4      6      8           12     14                 14+HEADER SIZE×4
//! LENGTH MAGIC  FLAGS  SEQUENCE ID  HSIZE  variable header... payload...
//!                                         PROTOCOL ID, NUM TRANSFORMS, TRANSFORM_ID×N,
//!                                         info blocks (0x11 ACL, 0x01 str KVs, 0x10 int KVs),
//!                                         zero padding to a multiple of 4
//! ```
//!
//! [`Packet::decode`] follows the `tokio_util::codec::Decoder` contract: `Ok(None)` means "need
//! more bytes" and leaves the buffer untouched, apart from reserving room for the rest of a frame
//! whose length is already known and within [`Limits::max_frame_size`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{EncodeError, Field, FrameError};
use super::keys::{self, int_key};
use super::str_kvs::{StrKvs, StrValue};
use super::thrift_msg::MessageType;

/// Default cap on LENGTH (bytes after the LENGTH field): 16 MiB. Kitex declares a 30-bit limit
/// but never enforces it; 16 MiB is far above any sane RPC message while bounding what a single
/// hostile length prefix can make us allocate.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Bytes before the variable header: LENGTH 4, MAGIC 2, FLAGS 2, SEQUENCE ID 4, HEADER SIZE 2.
const FIXED_LEN: usize = 14;

/// Bytes counted by LENGTH before the variable header (MAGIC, FLAGS, SEQUENCE ID, HEADER SIZE).
const FIXED_AFTER_LENGTH: usize = FIXED_LEN - 4;

/// Smallest valid LENGTH: the fixed fields plus a one-word variable header.
pub const MIN_LENGTH: u32 = (FIXED_AFTER_LENGTH + 4) as u32;

/// HEADER SIZE is a u16 count of 4-byte words.
pub const MAX_HEADER_WORDS: usize = u16::MAX as usize;

/// str16 lengths and KV counts are u16.
const MAX_STR16: usize = u16::MAX as usize;

/// Decoder limits. Defaults: [`DEFAULT_MAX_FRAME_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest accepted LENGTH value (bytes after the LENGTH field). Checked before the buffer
    /// is grown for the frame.
    pub max_frame_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

impl Limits {
    /// Limits with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`Limits::max_frame_size`].
    pub fn with_max_frame_size(mut self, max_frame_size: usize) -> Self {
        self.max_frame_size = max_frame_size;
        self
    }
}

/// The PROTOCOL ID byte. Decoding rejects every other value, including 0x02 (Thrift compact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolId {
    /// 0x00: Thrift binary (unary; the payload form is sniffed).
    ThriftBinary,
    /// 0x03: Thrift compact v2, accepted for compatibility as Kitex does.
    ThriftCompactV2,
    /// 0x04: Kitex protobuf.
    KitexProtobuf,
    /// 0x10: TTHeader Streaming, Thrift struct payloads.
    StreamThrift,
    /// 0x11: TTHeader Streaming, protobuf payloads.
    StreamProtobuf,
}

impl ProtocolId {
    /// Parses the byte; `None` for ids we do not accept.
    pub fn from_u8(id: u8) -> Option<Self> {
        match id {
            keys::PROTOCOL_THRIFT_BINARY => Some(ProtocolId::ThriftBinary),
            keys::PROTOCOL_THRIFT_COMPACT_V2 => Some(ProtocolId::ThriftCompactV2),
            keys::PROTOCOL_KITEX_PROTOBUF => Some(ProtocolId::KitexProtobuf),
            keys::PROTOCOL_STREAM_THRIFT => Some(ProtocolId::StreamThrift),
            keys::PROTOCOL_STREAM_PROTOBUF => Some(ProtocolId::StreamProtobuf),
            _ => None,
        }
    }

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        match self {
            ProtocolId::ThriftBinary => keys::PROTOCOL_THRIFT_BINARY,
            ProtocolId::ThriftCompactV2 => keys::PROTOCOL_THRIFT_COMPACT_V2,
            ProtocolId::KitexProtobuf => keys::PROTOCOL_KITEX_PROTOBUF,
            ProtocolId::StreamThrift => keys::PROTOCOL_STREAM_THRIFT,
            ProtocolId::StreamProtobuf => keys::PROTOCOL_STREAM_PROTOBUF,
        }
    }

    /// Whether this is a TTHeader Streaming protocol (0x10 or 0x11).
    pub fn is_streaming(self) -> bool {
        matches!(self, ProtocolId::StreamThrift | ProtocolId::StreamProtobuf)
    }
}

/// The info blocks of a packet, in wire order.
///
/// Entry order is kept so that a decoded packet re-encodes byte-identically, but peers write
/// Go map order, so never depend on it. Lookups return the last entry for a repeated key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// The ACL token block (info id 0x11): the value of string key `RPC_TRANSIT_gdpr-token`.
    /// Kept as raw bytes and apart from `str_kvs` so it round-trips in its own block.
    pub acl_token: Option<Bytes>,
    /// String KVs (info id 0x01). Keys must be UTF-8; values are any bytes (binary metadata).
    /// Read in place from the received header (decoding allocates nothing for them).
    pub str_kvs: StrKvs,
    /// Int KVs (info id 0x10). Values are raw str16 bytes: volo-thrift writes MSG_TYPE as a raw
    /// byte, so no charset is assumed.
    pub int_kvs: Vec<(u16, Bytes)>,
}

impl Headers {
    /// Empty headers.
    pub const fn new() -> Self {
        Headers {
            acl_token: None,
            str_kvs: StrKvs::new(),
            int_kvs: Vec::new(),
        }
    }

    /// Whether no block would be written.
    pub fn is_empty(&self) -> bool {
        self.acl_token.is_none() && self.str_kvs.is_empty() && self.int_kvs.is_empty()
    }

    /// The value of a string key; the last entry wins.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.str_kvs.get(key)
    }

    /// The value of an int key; the last entry wins.
    pub fn get_int(&self, key: u16) -> Option<&Bytes> {
        self.int_kvs
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Appends a string KV (shadowing earlier entries with the same key on lookup).
    /// `'static` strings and `String`s are stored without a copy.
    pub fn push_str(&mut self, key: impl Into<StrValue>, value: impl Into<StrValue>) {
        self.str_kvs.push(key, value);
    }

    /// Appends an int KV (shadowing earlier entries with the same key on lookup).
    pub fn push_int(&mut self, key: u16, value: impl Into<Bytes>) {
        self.int_kvs.push((key, value.into()));
    }

    /// An int key holding a decimal u64 (RPC_TIMEOUT and CONNECT_TIMEOUT, in ms). `None` if the
    /// key is missing or not plain ASCII decimal: a malformed hint is treated as absent rather
    /// than failing the call.
    pub fn get_int_decimal(&self, key: u16) -> Option<u64> {
        let v = self.get_int(key)?;
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(v).ok()?.parse().ok()
    }

    /// MSG_TYPE (int key 22): ASCII `"1"`/`"2"`/`"3"`/`"4"` as Kitex writes it, or the same
    /// number as one raw byte as volo-thrift writes it. `None` if missing or anything else.
    pub fn msg_type(&self) -> Option<MessageType> {
        match self.get_int(int_key::MSG_TYPE)?.as_ref() {
            [b @ b'1'..=b'4'] => MessageType::from_u8(b - b'0'),
            [b] => MessageType::from_u8(*b),
            _ => None,
        }
    }
}

/// One TTHeader packet. Transforms are skipped on read and never written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// FLAGS: 0 plain unary, [`keys::FLAGS_MUX`], or [`keys::FLAGS_STREAMING`].
    pub flags: u16,
    /// SEQUENCE ID: the unary seqid or the stream id.
    pub seq_id: i32,
    /// PROTOCOL ID.
    pub protocol: ProtocolId,
    /// Info blocks.
    pub headers: Headers,
    /// Everything after the variable header.
    pub payload: Bytes,
}

/// Marks a packet whose head was written by [`Packet::encode_begin`] and whose LENGTH is patched
/// by [`PacketStart::finish`] once the payload has been appended.
#[derive(Debug)]
#[must_use = "the LENGTH field stays 0 until finish() is called"]
pub struct PacketStart {
    start: usize,
}

impl PacketStart {
    pub(crate) fn new(start: usize) -> Self {
        PacketStart { start }
    }

    /// Patches LENGTH to cover everything written to `dst` since the packet began. On error the
    /// packet is removed from `dst`.
    ///
    /// # Panics
    ///
    /// If `dst` was truncated below the packet's head in between (a caller bug, not input).
    pub fn finish(self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let end = dst.len();
        let len = end.saturating_sub(self.start + 4);
        match u32::try_from(len) {
            Ok(length) => {
                dst[self.start..self.start + 4].copy_from_slice(&length.to_be_bytes());
                Ok(())
            }
            Err(_) => {
                dst.truncate(self.start);
                Err(EncodeError::FrameTooLarge { len })
            }
        }
    }
}

impl Packet {
    /// A packet with empty headers and payload.
    pub fn new(flags: u16, seq_id: i32, protocol: ProtocolId) -> Self {
        Packet {
            flags,
            seq_id,
            protocol,
            headers: Headers::default(),
            payload: Bytes::new(),
        }
    }

    /// Decodes one packet from the front of `src`.
    ///
    /// Returns `Ok(None)` when `src` holds only a prefix of a valid packet. LENGTH, MAGIC and
    /// HEADER SIZE are checked as soon as their bytes arrive, and LENGTH is compared with
    /// `limits.max_frame_size` before `src` is grown, so a hostile prefix costs nothing.
    pub fn decode(src: &mut BytesMut, limits: &Limits) -> Result<Option<Packet>, FrameError> {
        // tokio-util codec contract (in `split`): reserve the rest of a frame once its
        // (bounded) length is known, so the driver reads it without repeated reallocation;
        // only for frames up to `RESERVE_AHEAD_MAX` (see `reserve_frame`).
        match Packet::split(src, limits)? {
            Some(frame) => parse_frame(frame, &mut |_, _| false).map(Some),
            None => Ok(None),
        }
    }

    /// Decodes `frame`, which must hold exactly one whole packet (a transport that delivers
    /// frames already delimited, such as shared memory). The header and payload are slices of
    /// `frame`: nothing is copied.
    pub fn decode_whole(frame: Bytes, limits: &Limits) -> Result<Packet, FrameError> {
        Packet::check_whole(&frame, limits)?;
        parse_frame(frame, &mut |_, _| false)
    }

    /// Splits one whole packet off the front of `src`, checked as [`Packet::decode`] checks
    /// its prefix, without parsing it (`Ok(None)`: only a prefix is there yet).
    pub(crate) fn split(src: &mut BytesMut, limits: &Limits) -> Result<Option<Bytes>, FrameError> {
        let Some(total) = check_prefix(src, limits)? else {
            return Ok(None);
        };
        if src.len() < total {
            reserve_frame(src, total);
            return Ok(None);
        }
        Ok(Some(src.split_to(total).freeze()))
    }

    /// Checks that `frame` is exactly one whole packet (what [`Packet::decode_whole`] checks
    /// before parsing).
    pub(crate) fn check_whole(frame: &Bytes, limits: &Limits) -> Result<(), FrameError> {
        let total = check_prefix(frame, limits)?.unwrap_or(0);
        if total != frame.len() || frame.len() < FIXED_LEN {
            return Err(FrameError::LengthMismatch {
                total,
                len: frame.len(),
            });
        }
        Ok(())
    }

    /// Parses a packet [`Packet::split`] or [`Packet::check_whole`] delimited, handing every
    /// int KV to `take` first: the ones it takes (returns `true` for) are not stored, so a
    /// caller that lifts its keys out (the ttstream frame type and method) allocates nothing
    /// for them.
    pub(crate) fn parse_taking(
        frame: Bytes,
        take: &mut dyn FnMut(u16, &Bytes) -> bool,
    ) -> Result<Packet, FrameError> {
        parse_frame(frame, take)
    }

    /// Appends the encoded packet to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_head(self.payload.len(), dst)?;
        dst.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Appends everything but the payload, with LENGTH computed for a payload of `payload_len`
    /// bytes that the caller must append right after. `self.payload` is ignored.
    pub fn encode_head(&self, payload_len: usize, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let head = HeadRef {
            flags: self.flags,
            seq_id: self.seq_id,
            protocol: self.protocol.as_u8(),
            headers: &self.headers,
            extra_int_kvs: &[],
            skip_int_keys: &[],
        };
        head.encode(payload_len, dst)
    }

    /// Appends everything but the payload with a placeholder LENGTH; append the payload to `dst`
    /// (e.g. with a streaming encoder) and call [`PacketStart::finish`]. `self.payload` is
    /// ignored.
    pub fn encode_begin(&self, dst: &mut BytesMut) -> Result<PacketStart, EncodeError> {
        let start = dst.len();
        self.encode_head(0, dst)?;
        Ok(PacketStart { start })
    }
}

/// Appends the head of a packet with these fields and `headers` (with a placeholder LENGTH, as
/// [`Packet::encode_begin`]), without building the `Packet`.
pub(crate) fn encode_head_of(
    flags: u16,
    seq_id: i32,
    protocol: ProtocolId,
    headers: &Headers,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    HeadRef {
        flags,
        seq_id,
        protocol: protocol.as_u8(),
        headers,
        extra_int_kvs: &[],
        skip_int_keys: &[],
    }
    .encode(0, dst)
}

/// Appends the head of a packet whose only entries are `extra_str` (string KVs) and `extra_int`
/// (int KVs), in that order, laid out on the stack and appended in one copy: byte for byte what
/// [`Packet::encode_head`] writes for the packet holding them. `None` (nothing written) when it
/// would not fit [`SMALL_HEAD`] bytes, which also keeps every length and count far below the
/// wire's u16 limits.
pub(crate) fn encode_small_head(
    flags: u16,
    seq_id: i32,
    protocol: ProtocolId,
    extra_str: &[(&str, &[u8])],
    extra_int: &[(u16, &[u8])],
    dst: &mut BytesMut,
) -> Option<()> {
    let mut unpadded = 2;
    if !extra_str.is_empty() {
        unpadded += 3 + extra_str
            .iter()
            .map(|(k, v)| 4 + k.len() + v.len())
            .sum::<usize>();
    }
    if !extra_int.is_empty() {
        unpadded += 3 + extra_int.iter().map(|(_, v)| 4 + v.len()).sum::<usize>();
    }
    let padded = unpadded.div_ceil(4) * 4;
    let total = FIXED_LEN + padded;
    if total > SMALL_HEAD || extra_str.len() > SMALL_HEAD || extra_int.len() > SMALL_HEAD {
        return None;
    }
    let mut head = [0u8; SMALL_HEAD];
    let mut w: &mut [u8] = &mut head[..];
    // LENGTH of the head alone (as `Packet::encode_head` with no payload): the caller patches
    // it once the payload is written.
    w.put_u32((total - 4) as u32);
    w.put_u16(keys::MAGIC);
    w.put_u16(flags);
    w.put_i32(seq_id);
    // Exact: `padded` < SMALL_HEAD, and so are the lengths and counts below.
    w.put_u16((padded / 4) as u16);
    w.put_u8(protocol.as_u8());
    w.put_u8(0);
    if !extra_str.is_empty() {
        w.put_u8(keys::INFO_STR_KVS);
        w.put_u16(extra_str.len() as u16);
        for (k, v) in extra_str {
            put_str16(&mut w, k.as_bytes());
            put_str16(&mut w, v);
        }
    }
    if !extra_int.is_empty() {
        w.put_u8(keys::INFO_INT_KVS);
        w.put_u16(extra_int.len() as u16);
        for (k, v) in extra_int {
            w.put_u16(*k);
            put_str16(&mut w, v);
        }
    }
    // What is left up to `total` is the padding, already zero.
    dst.extend_from_slice(&head[..total]);
    Some(())
}

/// The largest head [`encode_small_head`] lays out on the stack.
const SMALL_HEAD: usize = 256;

/// The largest frame a decoder reserves room for as soon as its length is known. A larger
/// frame is not reserved up front (a peer that sends a 16 MiB LENGTH and then a trickle would
/// otherwise make the process allocate, and the budget charge, 16 MiB at once): the driver's
/// reader grows its buffer for it in bounded steps as the bytes arrive.
pub const RESERVE_AHEAD_MAX: usize = 64 * 1024;

/// Makes room for the rest of a `total`-byte frame at the front of `src` (the decoders'
/// reserve), exactly: a frame of at most [`RESERVE_AHEAD_MAX`] gets a buffer of its size, not
/// the doubled one `BytesMut::reserve` may pick; a larger one gets nothing here.
pub(crate) fn reserve_frame(src: &mut BytesMut, total: usize) {
    if total > RESERVE_AHEAD_MAX || src.capacity() >= total {
        return;
    }
    if !src.try_reclaim(total - src.len()) {
        let mut grown = BytesMut::with_capacity(total);
        grown.extend_from_slice(src);
        *src = grown;
    }
}

/// Validates what is available of the fixed fields. `Ok(Some(total))` once LENGTH is known and
/// valid; `Ok(None)` when fewer than 4 bytes are buffered.
fn check_prefix(src: &[u8], limits: &Limits) -> Result<Option<usize>, FrameError> {
    let Some(len_bytes) = src.get(0..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    if length < MIN_LENGTH {
        return Err(FrameError::TooShort {
            length,
            min: MIN_LENGTH,
        });
    }
    let too_large = FrameError::TooLarge {
        length,
        max: limits.max_frame_size,
    };
    let Ok(length_usize) = usize::try_from(length) else {
        return Err(too_large);
    };
    if length_usize > limits.max_frame_size {
        return Err(too_large);
    }
    let Some(total) = length_usize.checked_add(4) else {
        return Err(too_large);
    };
    if let Some(m) = src.get(4..6) {
        let magic = u16::from_be_bytes([m[0], m[1]]);
        if magic != keys::MAGIC {
            return Err(FrameError::BadMagic { magic });
        }
    }
    if let Some(h) = src.get(12..14) {
        let words = usize::from(u16::from_be_bytes([h[0], h[1]]));
        if words == 0 {
            return Err(FrameError::ZeroHeaderSize);
        }
        let header_bytes = words * 4;
        let available = length_usize - FIXED_AFTER_LENGTH;
        if header_bytes > available {
            return Err(FrameError::HeaderSizeOverflow {
                header_bytes,
                available,
            });
        }
    }
    Ok(Some(total))
}

/// Parses a complete frame whose fixed fields were validated by [`check_prefix`]; int KVs that
/// `take` takes are not stored.
fn parse_frame(
    frame: Bytes,
    take: &mut dyn FnMut(u16, &Bytes) -> bool,
) -> Result<Packet, FrameError> {
    let mut fixed = &frame[4..FIXED_LEN];
    let _magic = fixed.get_u16();
    let flags = fixed.get_u16();
    let seq_id = fixed.get_i32();
    let header_len = usize::from(fixed.get_u16()) * 4;
    let header_end = FIXED_LEN + header_len;
    let header = frame.slice(FIXED_LEN..header_end);
    let payload = frame.slice(header_end..);

    let mut r = Reader {
        buf: &header,
        pos: 0,
    };
    // HEADER SIZE >= 1 word guarantees these two bytes.
    let protocol_byte = r.u8(Field::Preamble)?;
    let protocol = ProtocolId::from_u8(protocol_byte)
        .ok_or(FrameError::UnsupportedProtocol { id: protocol_byte })?;
    let transforms = usize::from(r.u8(Field::Preamble)?);
    // Transforms (compression) are never written by Kitex; skip their ids, apply nothing.
    r.take(transforms, Field::Transforms)?;

    let mut headers = Headers::default();
    // Writers emit each block at most once; a reader meeting a block again appends to it (Kitex
    // reads every block into the same map), so lookups still see the last value.
    while let Some(id) = r.next_u8() {
        match id {
            keys::INFO_PADDING => {}
            keys::INFO_STR_KVS => {
                let count = usize::from(r.u16(Field::StrKvCount)?);
                // Checked here, read in place later: no allocation per key or value.
                let start = r.pos;
                for _ in 0..count {
                    r.str16_utf8(Field::StrKey)?;
                    // Values are bytes: Kitex's metainfo values are Go strings, any bytes.
                    r.str16_range(Field::StrValue)?;
                }
                headers
                    .str_kvs
                    .push_block(header.slice(start..r.pos), count);
            }
            keys::INFO_INT_KVS => {
                let count = usize::from(r.u16(Field::IntKvCount)?);
                let mut left = count;
                for _ in 0..count {
                    let k = r.u16(Field::IntKey)?;
                    let v = header.slice(r.str16_range(Field::IntValue)?);
                    left -= 1;
                    if take(k, &v) {
                        continue;
                    }
                    if headers.int_kvs.capacity() == 0 {
                        // Room for this entry and the rest of the block, bounded by the bytes
                        // left (an entry takes at least 4).
                        headers.int_kvs.reserve(1 + left.min(r.remaining() / 4));
                    }
                    headers.int_kvs.push((k, v));
                }
            }
            keys::INFO_ACL_TOKEN => {
                let v = r.str16_range(Field::AclToken)?;
                headers.acl_token = Some(header.slice(v));
            }
            other => {
                return Err(FrameError::UnknownInfoId {
                    id: other,
                    offset: r.pos - 1,
                })
            }
        }
    }
    Ok(Packet {
        flags,
        seq_id,
        protocol,
        headers,
        payload,
    })
}

/// Bounds-checked cursor over the variable header.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn next_u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize, field: Field) -> Result<std::ops::Range<usize>, FrameError> {
        if n > self.remaining() {
            return Err(FrameError::Truncated {
                field,
                offset: self.pos,
                need: n,
                available: self.remaining(),
            });
        }
        let range = self.pos..self.pos + n;
        self.pos += n;
        Ok(range)
    }

    fn u8(&mut self, field: Field) -> Result<u8, FrameError> {
        let r = self.take(1, field)?;
        Ok(self.buf[r.start])
    }

    fn u16(&mut self, field: Field) -> Result<u16, FrameError> {
        let r = self.take(2, field)?;
        Ok(u16::from_be_bytes([
            self.buf[r.start],
            self.buf[r.start + 1],
        ]))
    }

    fn str16_range(&mut self, field: Field) -> Result<std::ops::Range<usize>, FrameError> {
        let len = usize::from(self.u16(field)?);
        self.take(len, field)
    }

    /// Skips a str16 after checking that it is UTF-8.
    fn str16_utf8(&mut self, field: Field) -> Result<(), FrameError> {
        let offset = self.pos;
        let r = self.str16_range(field)?;
        if is_utf8(&self.buf[r]) {
            Ok(())
        } else {
            Err(FrameError::InvalidUtf8 { field, offset })
        }
    }
}

/// Whether `b` is UTF-8: ASCII (what names and keys on the wire are) is checked word by word,
/// anything else by the full validator.
pub(crate) fn is_utf8(b: &[u8]) -> bool {
    b.is_ascii() || std::str::from_utf8(b).is_ok()
}

/// A borrowed packet head, shared by [`Packet`] and the streaming frame encoder so a frame can
/// add keys 9 and 27 without cloning its headers.
pub(crate) struct HeadRef<'a> {
    pub(crate) flags: u16,
    pub(crate) seq_id: i32,
    pub(crate) protocol: u8,
    pub(crate) headers: &'a Headers,
    /// Int KVs written before `headers.int_kvs`.
    pub(crate) extra_int_kvs: &'a [(u16, &'a [u8])],
    /// Keys of `headers.int_kvs` not written (they are carried by `extra_int_kvs`).
    pub(crate) skip_int_keys: &'a [u16],
}

impl HeadRef<'_> {
    fn int_kvs(&self) -> impl Iterator<Item = (u16, &[u8])> + '_ {
        self.extra_int_kvs.iter().copied().chain(
            self.headers
                .int_kvs
                .iter()
                .filter(|(k, _)| !self.skip_int_keys.contains(k))
                .map(|(k, v)| (*k, v.as_ref())),
        )
    }

    /// Unpadded variable header size, validating every wire limit.
    fn header_len(&self) -> Result<usize, EncodeError> {
        fn str16(field: Field, len: usize) -> Result<usize, EncodeError> {
            if len > MAX_STR16 {
                return Err(EncodeError::Str16TooLong { field, len });
            }
            Ok(2 + len)
        }
        // PROTOCOL ID + NUM TRANSFORMS (always 0).
        let mut n = 2;
        if let Some(acl) = &self.headers.acl_token {
            n += 1 + str16(Field::AclToken, acl.len())?;
        }
        let strs = &self.headers.str_kvs;
        if !strs.is_empty() {
            if strs.len() > MAX_STR16 {
                return Err(EncodeError::TooManyEntries {
                    field: Field::StrKvCount,
                    count: strs.len(),
                });
            }
            n += 3;
            n += strs
                .encoded_len()
                .map_err(|(key, len)| EncodeError::Str16TooLong {
                    field: if key { Field::StrKey } else { Field::StrValue },
                    len,
                })?;
        }
        let mut count = 0usize;
        let mut ints = 0usize;
        for (_, v) in self.int_kvs() {
            count += 1;
            ints += 2 + str16(Field::IntValue, v.len())?;
        }
        if count > 0 {
            if count > MAX_STR16 {
                return Err(EncodeError::TooManyEntries {
                    field: Field::IntKvCount,
                    count,
                });
            }
            n += 3 + ints;
        }
        Ok(n)
    }

    /// Appends the head for a payload of `payload_len` bytes.
    pub(crate) fn encode(&self, payload_len: usize, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let unpadded = self.header_len()?;
        let padded = unpadded.div_ceil(4) * 4;
        if padded / 4 > MAX_HEADER_WORDS {
            return Err(EncodeError::HeaderTooLarge { bytes: padded });
        }
        let after_length = FIXED_AFTER_LENGTH + padded;
        let too_large = EncodeError::FrameTooLarge {
            len: after_length.saturating_add(payload_len),
        };
        let length = after_length
            .checked_add(payload_len)
            .and_then(|l| u32::try_from(l).ok())
            .ok_or(too_large)?;
        // The head's size is known: grow `dst` once (zeroed, which is the padding) and write
        // into that slice, whose fixed-size puts compile to plain stores.
        let start = dst.len();
        dst.resize(start + 4 + after_length, 0);
        let mut w: &mut [u8] = &mut dst[start..];
        w.put_u32(length);
        w.put_u16(keys::MAGIC);
        w.put_u16(self.flags);
        w.put_i32(self.seq_id);
        // Cannot truncate: checked against MAX_HEADER_WORDS above.
        w.put_u16((padded / 4) as u16);
        w.put_u8(self.protocol);
        w.put_u8(0);
        // Lengths and counts below were checked by header_len, so the `as u16` casts are exact,
        // and they add up to the size `w` was made with.
        if let Some(acl) = &self.headers.acl_token {
            w.put_u8(keys::INFO_ACL_TOKEN);
            put_str16(&mut w, acl);
        }
        if !self.headers.str_kvs.is_empty() {
            w.put_u8(keys::INFO_STR_KVS);
            w.put_u16(self.headers.str_kvs.len() as u16);
            self.headers.str_kvs.encode(&mut w);
        }
        let count = self.int_kvs().count();
        if count > 0 {
            w.put_u8(keys::INFO_INT_KVS);
            w.put_u16(count as u16);
            for (k, v) in self.int_kvs() {
                w.put_u16(k);
                put_str16(&mut w, v);
            }
        }
        // What is left is the padding, already zero.
        debug_assert_eq!(w.len(), padded - unpadded);
        Ok(())
    }
}

fn put_str16(dst: &mut impl BufMut, s: &[u8]) {
    dst.put_u16(s.len() as u16);
    dst.put_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_utf8_agrees_with_the_full_validator() {
        let cases: [&[u8]; 8] = [
            b"",
            b"Echo",
            b"a.rather.long.service.Name.with.more.than.sixteen.bytes",
            "m\u{e9}thode".as_bytes(),
            "\u{1f600}".as_bytes(),
            b"\xff",
            b"ok\xc3",
            b"\xed\xa0\x80",
        ];
        for c in cases {
            assert_eq!(is_utf8(c), std::str::from_utf8(c).is_ok(), "{c:?}");
        }
    }

    fn sample() -> Packet {
        let mut p = Packet::new(keys::FLAGS_MUX, 7, ProtocolId::ThriftBinary);
        p.headers.acl_token = Some(Bytes::from_static(b"tok"));
        p.headers.push_str("isn", "Svc");
        p.headers
            .push_int(int_key::TO_METHOD, Bytes::from_static(b"Echo"));
        p.payload = Bytes::from_static(b"\x80\x01\x00\x01payload");
        p
    }

    fn encode(p: &Packet) -> BytesMut {
        let mut b = BytesMut::new();
        p.encode(&mut b).unwrap();
        b
    }

    /// The head laid out on the stack is the head of the packet holding the same entries, byte
    /// for byte: with and without string and int KVs, binary values, and the padding each
    /// length gives; a head past the stack's size is refused (nothing written).
    #[test]
    fn a_small_head_is_the_head_of_a_packet_holding_the_same_entries() {
        let extras: [&[(&str, &[u8])]; 4] = [
            &[],
            &[("idl_service_name", b"Svc")],
            &[("idl_service_name", b"TestService"), ("k", b"\xff\x00")],
            &[("idl_service_name", &[b'x'; 300])],
        ];
        let ints: [&[(u16, &[u8])]; 3] = [&[], &[(int_key::RPC_TIMEOUT, b"1500")], &[(9, b"Echo")]];
        for extra_str in extras {
            for extra_int in ints {
                let mut p = Packet::new(keys::FLAGS_MUX, 9, ProtocolId::ThriftBinary);
                for (k, v) in extra_str {
                    p.headers
                        .str_kvs
                        .push_bytes(k.to_string(), Bytes::copy_from_slice(v));
                }
                for (k, v) in extra_int {
                    p.headers.push_int(*k, Bytes::copy_from_slice(v));
                }
                let mut want = BytesMut::new();
                p.encode_head(0, &mut want).unwrap();
                let mut got = BytesMut::from(&b"prev"[..]);
                let small = encode_small_head(
                    keys::FLAGS_MUX,
                    9,
                    ProtocolId::ThriftBinary,
                    extra_str,
                    extra_int,
                    &mut got,
                );
                if want.len() > SMALL_HEAD {
                    assert!(small.is_none());
                    assert_eq!(&got[..], b"prev");
                    continue;
                }
                assert!(small.is_some());
                assert_eq!(&got[4..], &want[..], "{extra_str:?} {extra_int:?}");
                let mut of = BytesMut::new();
                encode_head_of(
                    keys::FLAGS_MUX,
                    9,
                    ProtocolId::ThriftBinary,
                    &p.headers,
                    &mut of,
                )
                .unwrap();
                assert_eq!(of, want);
            }
        }
    }

    #[test]
    fn round_trip_with_all_blocks() {
        let p = sample();
        let mut b = encode(&p);
        assert_eq!(b.len() % 4, (14 + p.payload.len()) % 4);
        let got = Packet::decode(&mut b, &Limits::default()).unwrap().unwrap();
        assert_eq!(got, p);
        assert!(b.is_empty());
    }

    #[test]
    fn blocks_written_in_spec_order_and_empty_blocks_omitted() {
        let p = sample();
        let b = encode(&p);
        let hdr = &b[14..];
        assert_eq!(&hdr[..3], &[0x00, 0x00, keys::INFO_ACL_TOKEN]);
        assert_eq!(hdr[3 + 2 + 3], keys::INFO_STR_KVS);
        let empty = Packet::new(0, 1, ProtocolId::ThriftBinary);
        let b = encode(&empty);
        assert_eq!(
            &b[..],
            &[0, 0, 0, 14, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn encode_head_and_begin_match_encode() {
        let p = sample();
        let whole = encode(&p);

        let mut a = BytesMut::new();
        p.encode_head(p.payload.len(), &mut a).unwrap();
        a.extend_from_slice(&p.payload);
        assert_eq!(a, whole);

        let mut c = BytesMut::from(&b"prev"[..]);
        let start = p.encode_begin(&mut c).unwrap();
        c.extend_from_slice(&p.payload);
        start.finish(&mut c).unwrap();
        assert_eq!(&c[..4], b"prev");
        assert_eq!(&c[4..], &whole[..]);
    }

    #[test]
    fn repeated_key_last_wins() {
        let mut h = Headers::new();
        h.push_str("k", "1");
        h.push_str("k", "2");
        h.push_int(5, Bytes::from_static(b"a"));
        h.push_int(5, Bytes::from_static(b"b"));
        assert_eq!(h.get_str("k"), Some("2"));
        assert_eq!(h.get_int(5).map(|b| &b[..]), Some(&b"b"[..]));
        assert_eq!(h.get_str("x"), None);
    }

    #[test]
    fn msg_type_ascii_and_raw() {
        let mut h = Headers::new();
        h.push_int(int_key::MSG_TYPE, Bytes::from_static(b"2"));
        assert_eq!(h.msg_type(), Some(MessageType::Reply));
        h.push_int(int_key::MSG_TYPE, Bytes::from_static(b"\x03"));
        assert_eq!(h.msg_type(), Some(MessageType::Exception));
        h.push_int(int_key::MSG_TYPE, Bytes::from_static(b"9"));
        assert_eq!(h.msg_type(), None);
        h.push_int(int_key::MSG_TYPE, Bytes::from_static(b""));
        assert_eq!(h.msg_type(), None);
    }

    #[test]
    fn decimal_int_values() {
        let mut h = Headers::new();
        assert_eq!(h.get_int_decimal(int_key::RPC_TIMEOUT), None);
        h.push_int(int_key::RPC_TIMEOUT, Bytes::from_static(b"1500"));
        assert_eq!(h.get_int_decimal(int_key::RPC_TIMEOUT), Some(1500));
        h.push_int(int_key::RPC_TIMEOUT, Bytes::from_static(b"+15"));
        assert_eq!(h.get_int_decimal(int_key::RPC_TIMEOUT), None);
        h.push_int(
            int_key::RPC_TIMEOUT,
            Bytes::from_static(b"99999999999999999999999"),
        );
        assert_eq!(h.get_int_decimal(int_key::RPC_TIMEOUT), None);
    }

    #[test]
    fn str16_over_limit_is_an_encode_error() {
        let mut p = Packet::new(0, 1, ProtocolId::ThriftBinary);
        p.headers.push_str("k", "v".repeat(65536));
        let mut b = BytesMut::new();
        assert_eq!(
            p.encode(&mut b),
            Err(EncodeError::Str16TooLong {
                field: Field::StrValue,
                len: 65536
            })
        );
        assert!(b.is_empty());
        p.headers.str_kvs = StrKvs::new();
        p.headers.push_str("k", "v".repeat(65535));
        p.encode(&mut b).unwrap();
    }

    #[test]
    fn header_over_65535_words_is_an_encode_error() {
        let mut p = Packet::new(0, 1, ProtocolId::ThriftBinary);
        for i in 0..5 {
            p.headers.push_str(format!("k{i}"), "v".repeat(60000));
        }
        let mut b = BytesMut::new();
        assert!(matches!(
            p.encode(&mut b),
            Err(EncodeError::HeaderTooLarge { bytes }) if bytes > 65535 * 4
        ));
        assert!(b.is_empty());
    }

    #[test]
    fn unknown_info_id_and_compact_protocol_rejected() {
        let mut b =
            BytesMut::from(&[0, 0, 0, 14, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0x20, 0][..]);
        assert_eq!(
            Packet::decode(&mut b, &Limits::default()),
            Err(FrameError::UnknownInfoId {
                id: 0x20,
                offset: 2
            })
        );
        let mut b = BytesMut::from(&[0, 0, 0, 14, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 0, 0, 0][..]);
        assert_eq!(
            Packet::decode(&mut b, &Limits::default()),
            Err(FrameError::UnsupportedProtocol { id: 2 })
        );
    }

    #[test]
    fn transforms_are_skipped_and_bounded() {
        // Two transform ids, then padding.
        let mut b = BytesMut::from(&[0, 0, 0, 14, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 2, 9, 9][..]);
        let p = Packet::decode(&mut b, &Limits::default()).unwrap().unwrap();
        assert!(p.headers.is_empty());
        // Three transform ids do not fit in the one-word header.
        let mut b = BytesMut::from(&[0, 0, 0, 14, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 3, 9, 9][..]);
        assert_eq!(
            Packet::decode(&mut b, &Limits::default()),
            Err(FrameError::Truncated {
                field: Field::Transforms,
                offset: 2,
                need: 3,
                available: 2
            })
        );
    }

    #[test]
    fn truncated_kv_block_is_an_error() {
        // str KV block claiming one entry with a 5-byte key in a 2-word header.
        let mut b = BytesMut::from(
            &[
                0, 0, 0, 18, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 1, 0, 1, 0, 5, b'a',
            ][..],
        );
        assert_eq!(
            Packet::decode(&mut b, &Limits::default()),
            Err(FrameError::Truncated {
                field: Field::StrKey,
                offset: 7,
                need: 5,
                available: 1
            })
        );
    }

    /// Kitex's binary metainfo: a Go string value holding any bytes, written as they are. It
    /// decodes (keys alone must be UTF-8), and re-encodes to the same bytes.
    #[test]
    fn non_utf8_string_kv_values_are_bytes() {
        let wire = [
            0, 0, 0, 22, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 1, 0, 1, 0, 1, b'k', 0, 1, 0xff, 0,
        ];
        let p = Packet::decode(&mut BytesMut::from(&wire[..]), &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            p.headers.str_kvs.iter_raw().collect::<Vec<_>>(),
            [("k", &[0xff][..])]
        );
        assert_eq!(p.headers.get_str("k"), None, "not text");
        let mut again = BytesMut::new();
        p.encode(&mut again).unwrap();
        assert_eq!(&again[..], &wire[..]);
    }

    #[test]
    fn non_utf8_string_kv_rejected() {
        let mut b = BytesMut::from(
            &[
                0, 0, 0, 22, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 1, 0, 1, 0, 1, 0xff, 0, 0, 0, 0,
            ][..],
        );
        assert_eq!(
            Packet::decode(&mut b, &Limits::default()),
            Err(FrameError::InvalidUtf8 {
                field: Field::StrKey,
                offset: 5
            })
        );
    }
}
