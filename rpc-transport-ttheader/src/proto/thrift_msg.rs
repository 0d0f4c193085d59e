//! Strict Thrift-binary message headers, unary payload sniffing and `TApplicationException`
//! (spec §2).
//!
//! Only what the transport itself must read or write lives here: the message envelope
//! (`0x8001_0000 | type`, method name, seqid) and the exception struct used for framework
//! errors. Request and response structs are the codec's business.

use bytes::BufMut;

use super::error::{EncodeError, ThriftError};

/// Strict Thrift-binary version word; the message type is the low byte.
pub const VERSION_1: u32 = 0x8001_0000;
/// Mask selecting the version bits of the first word.
pub const VERSION_MASK: u32 = 0xffff_0000;
/// Kitex protobuf magic (`0x9001_0000 | type`), found after the frame length prefix.
pub const KITEX_PROTOBUF_MAGIC: u32 = 0x9001_0000;

/// Deepest struct/container nesting followed when skipping unknown exception fields; Apache Thrift
/// uses the same default recursion limit.
pub const MAX_SKIP_DEPTH: usize = 64;

/// Thrift message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 1: a call expecting a reply.
    Call,
    /// 2: a reply whose body is the Result struct.
    Reply,
    /// 3: a framework error whose body is a `TApplicationException`.
    Exception,
    /// 4: a call without reply.
    Oneway,
}

impl MessageType {
    /// Parses the wire number.
    pub fn from_u8(ty: u8) -> Option<Self> {
        match ty {
            1 => Some(MessageType::Call),
            2 => Some(MessageType::Reply),
            3 => Some(MessageType::Exception),
            4 => Some(MessageType::Oneway),
            _ => None,
        }
    }

    /// The wire number.
    pub fn as_u8(self) -> u8 {
        match self {
            MessageType::Call => 1,
            MessageType::Reply => 2,
            MessageType::Exception => 3,
            MessageType::Oneway => 4,
        }
    }
}

/// The strict Thrift-binary message envelope: `u32 0x8001_0000 | type`, `i32 len` + method
/// name, `i32 seqid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// Method name.
    pub name: String,
    /// Message type.
    pub kind: MessageType,
    /// Sequence id (the stream id inside ttstream Trailer/Rst payloads).
    pub seq_id: i32,
}

impl MessageHeader {
    /// Decodes the envelope at the start of `buf`; returns it and the bytes consumed, so the
    /// struct body is `&buf[consumed..]`. Old non-strict headers are rejected.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), ThriftError> {
        let (h, used) = MessageHeaderRef::decode(buf)?;
        Ok((h.to_owned(), used))
    }

    /// The envelope with its name borrowed.
    pub fn as_ref(&self) -> MessageHeaderRef<'_> {
        MessageHeaderRef {
            name: &self.name,
            kind: self.kind,
            seq_id: self.seq_id,
        }
    }

    /// Appends the envelope.
    pub fn encode(&self, dst: &mut impl BufMut) -> Result<(), EncodeError> {
        self.as_ref().encode(dst)
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.as_ref().encoded_len()
    }
}

/// A [`MessageHeader`] whose method name is borrowed: from the received bytes when decoding
/// (no `String` per request on a server's hot path), or from a `&'static` descriptor when
/// encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeaderRef<'a> {
    /// Method name.
    pub name: &'a str,
    /// Message type.
    pub kind: MessageType,
    /// Sequence id.
    pub seq_id: i32,
}

impl<'a> MessageHeaderRef<'a> {
    /// As [`MessageHeader::decode`], borrowing the name from `buf`.
    pub fn decode(buf: &'a [u8]) -> Result<(Self, usize), ThriftError> {
        Self::decode_magic(buf, VERSION_1)
    }

    /// Decodes the envelope of a Kitex protobuf message (after its `u32` length): the same
    /// layout as a strict Thrift one, with [`KITEX_PROTOBUF_MAGIC`] for the version word. The
    /// protobuf message (or `ErrorProto`, see [`encode_error_proto`]) follows.
    pub fn decode_kitex_protobuf(buf: &'a [u8]) -> Result<(Self, usize), ThriftError> {
        Self::decode_magic(buf, KITEX_PROTOBUF_MAGIC)
    }

    fn decode_magic(buf: &'a [u8], magic: u32) -> Result<(Self, usize), ThriftError> {
        let mut name = "";
        let (kind, seq_id, used) = Self::envelope(buf, magic, |bytes| {
            name = std::str::from_utf8(bytes).ok()?;
            Some(())
        })?;
        Ok((MessageHeaderRef { name, kind, seq_id }, used))
    }

    /// As [`MessageHeaderRef::decode`] for a reader that has no use for the name (a client
    /// matching replies by seqid): the same checks, the name's UTF-8 included (an ASCII name,
    /// the usual one, passes the cheaper ASCII test), returning kind, seqid and the envelope's
    /// size.
    pub(crate) fn decode_unnamed(buf: &[u8]) -> Result<(MessageType, i32, usize), ThriftError> {
        Self::envelope(buf, VERSION_1, |name| {
            (name.is_ascii() || std::str::from_utf8(name).is_ok()).then_some(())
        })
    }

    /// A strict envelope with version word `magic`, its name passed to `name` (`None`: not
    /// UTF-8): kind, seqid and the envelope's size.
    fn envelope<'b>(
        buf: &'b [u8],
        magic: u32,
        name: impl FnOnce(&'b [u8]) -> Option<()>,
    ) -> Result<(MessageType, i32, usize), ThriftError> {
        let mut r = Reader { buf, pos: 0 };
        let word = r.u32()?;
        if word & VERSION_MASK != magic {
            return Err(ThriftError::BadVersion { word });
        }
        // Apache Thrift: type = version & 0xff.
        let ty = (word & 0xff) as u8;
        let kind = MessageType::from_u8(ty).ok_or(ThriftError::UnknownMessageType { ty })?;
        let name_offset = r.pos;
        name(r.binary()?).ok_or(ThriftError::InvalidUtf8 {
            offset: name_offset,
        })?;
        let seq_id = r.i32()?;
        Ok((kind, seq_id, r.pos))
    }

    /// As [`MessageHeaderRef::decode`], also accepting the old non-strict envelope Apache
    /// Thrift clients write with `strictWrite = false`: `i32 len` + method name, `u8 type`,
    /// `i32 seqid` (the first word is the name's length, so its top bit is clear). Plain Thrift
    /// peers (no TTHeader) may send either; TTHeader payloads are always strict.
    pub fn decode_lenient(buf: &'a [u8]) -> Result<(Self, usize), ThriftError> {
        let Some(first) = buf.first() else {
            return Err(ThriftError::Truncated {
                offset: 0,
                need: 4,
                available: 0,
            });
        };
        if first & 0x80 != 0 {
            return Self::decode(buf);
        }
        let mut r = Reader { buf, pos: 0 };
        let name = r.binary()?;
        let name = std::str::from_utf8(name).map_err(|_| ThriftError::InvalidUtf8 { offset: 0 })?;
        let ty = r.u8()?;
        let kind = MessageType::from_u8(ty).ok_or(ThriftError::UnknownMessageType { ty })?;
        let seq_id = r.i32()?;
        Ok((MessageHeaderRef { name, kind, seq_id }, r.pos))
    }

    /// The envelope with its own copy of the name.
    pub fn to_owned(&self) -> MessageHeader {
        MessageHeader {
            name: self.name.to_owned(),
            kind: self.kind,
            seq_id: self.seq_id,
        }
    }

    /// Appends the envelope.
    pub fn encode(&self, dst: &mut impl BufMut) -> Result<(), EncodeError> {
        self.encode_magic(dst, VERSION_1)
    }

    /// Appends the envelope of a Kitex protobuf message (see
    /// [`MessageHeaderRef::decode_kitex_protobuf`]).
    pub fn encode_kitex_protobuf(&self, dst: &mut impl BufMut) -> Result<(), EncodeError> {
        self.encode_magic(dst, KITEX_PROTOBUF_MAGIC)
    }

    fn encode_magic(&self, dst: &mut impl BufMut, magic: u32) -> Result<(), EncodeError> {
        let len = thrift_len(self.name.len())?;
        let word = magic | u32::from(self.kind.as_u8());
        let name = self.name.as_bytes();
        // A name that fits goes out with the rest in one put (each small put into a
        // `BytesMut` is a call to `memcpy`).
        const SHORT: usize = 52;
        if name.len() <= SHORT {
            let mut head = [0u8; SHORT + 12];
            head[..4].copy_from_slice(&word.to_be_bytes());
            head[4..8].copy_from_slice(&len.to_be_bytes());
            head[8..8 + name.len()].copy_from_slice(name);
            head[8 + name.len()..12 + name.len()].copy_from_slice(&self.seq_id.to_be_bytes());
            dst.put_slice(&head[..12 + name.len()]);
            return Ok(());
        }
        dst.put_u32(word);
        dst.put_i32(len);
        dst.put_slice(name);
        dst.put_i32(self.seq_id);
        Ok(())
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        12 + self.name.len()
    }
}

/// How a unary TTHeader payload carries its message (spec §2 sniffing rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadForm {
    /// A strict Thrift-binary message starts at byte 0.
    Unframed,
    /// A u32 length, then a strict Thrift-binary message (TTHeaderFramed).
    Framed,
    /// A u32 length, then a Kitex protobuf message (`0x9001....`).
    KitexProtobuf,
}

impl PayloadForm {
    /// Sniffs the payload as a Kitex server does: `p[0..4]` strict Thrift → unframed; else
    /// `p[4..8]` strict Thrift → framed; else `p[4..8]` `0x9001....` → Kitex protobuf. The
    /// unframed test goes first; a framed payload could only match it with a length of at least
    /// 2 GiB, which no frame limit allows.
    pub fn sniff(payload: &[u8]) -> Option<Self> {
        let word = |at: usize| {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & VERSION_MASK)
        };
        if word(0) == Some(VERSION_1) {
            Some(PayloadForm::Unframed)
        } else if word(4) == Some(VERSION_1) {
            Some(PayloadForm::Framed)
        } else if word(4) == Some(KITEX_PROTOBUF_MAGIC) {
            Some(PayloadForm::KitexProtobuf)
        } else {
            None
        }
    }

    /// Sniffs and strips the frame length prefix: returns the form and the message bytes. The
    /// prefix must equal the bytes that follow it.
    pub fn split(payload: &[u8]) -> Result<(Self, &[u8]), ThriftError> {
        let form = Self::sniff(payload).ok_or(ThriftError::UnknownPayloadForm)?;
        match form {
            PayloadForm::Unframed => Ok((form, payload)),
            PayloadForm::Framed | PayloadForm::KitexProtobuf => {
                // sniff() saw 8 bytes.
                let declared = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                let body = &payload[4..];
                if usize::try_from(declared).ok() != Some(body.len()) {
                    return Err(ThriftError::FramedLength {
                        declared,
                        actual: body.len(),
                    });
                }
                Ok((form, body))
            }
        }
    }
}

/// Appends Kitex's `ErrorProto {int32 TypeID = 1; string Message = 2;}`, protobuf-encoded: the
/// body of an EXCEPTION message in Kitex protobuf, where a Thrift peer gets an
/// [`ApplicationException`] (`TypeID` takes the same exception types). Written by hand: two
/// fields, and the transport has no protobuf codec of its own.
pub fn encode_error_proto(type_id: i32, message: &str, dst: &mut impl BufMut) {
    fn varint(mut v: u64, dst: &mut impl BufMut) {
        while v >= 0x80 {
            dst.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        dst.put_u8(v as u8);
    }
    if type_id != 0 {
        // Field 1, varint; a negative int32 is sign-extended to 10 bytes, as protobuf says.
        dst.put_u8(0x08);
        varint(i64::from(type_id) as u64, dst);
    }
    if !message.is_empty() {
        // Field 2, length-delimited.
        dst.put_u8(0x12);
        varint(message.len() as u64, dst);
        dst.put_slice(message.as_bytes());
    }
}

/// `TApplicationException {1: string message, 2: i32 type}`: the framework error of an
/// EXCEPTION message, a ttstream error Trailer, or a Rst (whose `kind` is a Kitex code 120xx).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplicationException {
    /// Field 1. Decoded lossily: a bad byte in an error message must not hide the error.
    pub message: String,
    /// Field 2, the exception type (`type` on the wire; see the associated consts and
    /// [`kitex_code`](super::keys::kitex_code)). 0 when absent.
    pub kind: i32,
}

impl ApplicationException {
    /// Unknown (also the value when field 2 is absent).
    pub const UNKNOWN: i32 = 0;
    /// Unknown method.
    pub const UNKNOWN_METHOD: i32 = 1;
    /// Invalid message type.
    pub const INVALID_MESSAGE_TYPE: i32 = 2;
    /// Wrong method name.
    pub const WRONG_METHOD_NAME: i32 = 3;
    /// Bad sequence id.
    pub const BAD_SEQUENCE_ID: i32 = 4;
    /// Missing result.
    pub const MISSING_RESULT: i32 = 5;
    /// Internal error; Kitex handler errors arrive as this with `"biz error: <text>"`.
    pub const INTERNAL_ERROR: i32 = 6;
    /// Protocol error.
    pub const PROTOCOL_ERROR: i32 = 7;
    /// Invalid transform.
    pub const INVALID_TRANSFORM: i32 = 8;
    /// Invalid protocol.
    pub const INVALID_PROTOCOL: i32 = 9;
    /// Unsupported client type.
    pub const UNSUPPORTED_CLIENT_TYPE: i32 = 10;
    /// Unknown service.
    pub const UNKNOWN_SERVICE: i32 = 20;
    /// No service name.
    pub const NO_SERVICE_NAME: i32 = 21;

    /// An exception of type `kind`.
    pub fn new(kind: i32, message: impl Into<String>) -> Self {
        ApplicationException {
            message: message.into(),
            kind,
        }
    }

    /// Appends the struct (field 1, field 2, STOP).
    pub fn encode(&self, dst: &mut impl BufMut) -> Result<(), EncodeError> {
        let len = thrift_len(self.message.len())?;
        dst.put_u8(TYPE_STRING);
        dst.put_i16(1);
        dst.put_i32(len);
        dst.put_slice(self.message.as_bytes());
        dst.put_u8(TYPE_I32);
        dst.put_i16(2);
        dst.put_i32(self.kind);
        dst.put_u8(TYPE_STOP);
        Ok(())
    }

    /// Decodes the struct at the start of `buf`; returns it and the bytes consumed. Unknown
    /// fields, and known ids with an unexpected type, are skipped as Thrift readers do.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), ThriftError> {
        let mut r = Reader { buf, pos: 0 };
        let mut exc = ApplicationException::default();
        loop {
            let ty = r.u8()?;
            if ty == TYPE_STOP {
                break;
            }
            let id = r.i16()?;
            match (id, ty) {
                (1, TYPE_STRING) => exc.message = String::from_utf8_lossy(r.binary()?).into_owned(),
                (2, TYPE_I32) => exc.kind = r.i32()?,
                _ => skip(&mut r, ty, 0)?,
            }
        }
        Ok((exc, r.pos))
    }
}

/// Appends a whole EXCEPTION message: envelope (`method`, type 3, `seq_id`) + exception struct.
pub fn encode_exception_message(
    method: &str,
    seq_id: i32,
    exc: &ApplicationException,
    dst: &mut impl BufMut,
) -> Result<(), EncodeError> {
    let len = thrift_len(method.len())?;
    dst.put_u32(VERSION_1 | u32::from(MessageType::Exception.as_u8()));
    dst.put_i32(len);
    dst.put_slice(method.as_bytes());
    dst.put_i32(seq_id);
    exc.encode(dst)
}

/// Decodes a whole EXCEPTION message. Any other message type is an error.
pub fn decode_exception_message(
    buf: &[u8],
) -> Result<(MessageHeader, ApplicationException), ThriftError> {
    let (header, n) = MessageHeader::decode(buf)?;
    if header.kind != MessageType::Exception {
        return Err(ThriftError::NotException {
            ty: header.kind.as_u8(),
        });
    }
    let body = &buf[n..];
    let (exc, _) = ApplicationException::decode(body).map_err(|e| shift(e, n))?;
    Ok((header, exc))
}

/// Re-bases error offsets of a nested decode onto the outer buffer.
fn shift(e: ThriftError, by: usize) -> ThriftError {
    match e {
        ThriftError::Truncated {
            offset,
            need,
            available,
        } => ThriftError::Truncated {
            offset: offset + by,
            need,
            available,
        },
        ThriftError::NegativeLength { len, offset } => ThriftError::NegativeLength {
            len,
            offset: offset + by,
        },
        ThriftError::InvalidType { ty, offset } => ThriftError::InvalidType {
            ty,
            offset: offset + by,
        },
        ThriftError::InvalidUtf8 { offset } => ThriftError::InvalidUtf8 {
            offset: offset + by,
        },
        other => other,
    }
}

fn thrift_len(len: usize) -> Result<i32, EncodeError> {
    i32::try_from(len).map_err(|_| EncodeError::ThriftStringTooLong { len })
}

pub(crate) const TYPE_STOP: u8 = 0;
pub(crate) const TYPE_BOOL: u8 = 2;
pub(crate) const TYPE_BYTE: u8 = 3;
pub(crate) const TYPE_DOUBLE: u8 = 4;
pub(crate) const TYPE_I16: u8 = 6;
pub(crate) const TYPE_I32: u8 = 8;
pub(crate) const TYPE_I64: u8 = 10;
pub(crate) const TYPE_STRING: u8 = 11;
pub(crate) const TYPE_STRUCT: u8 = 12;
pub(crate) const TYPE_MAP: u8 = 13;
pub(crate) const TYPE_SET: u8 = 14;
pub(crate) const TYPE_LIST: u8 = 15;
pub(crate) const TYPE_UUID: u8 = 16;

/// Skips one value of type `ty`. Every element consumes at least one byte or fails, so the work
/// is bounded by the input length; nesting is bounded by [`MAX_SKIP_DEPTH`].
fn skip(r: &mut Reader<'_>, ty: u8, depth: usize) -> Result<(), ThriftError> {
    match ty {
        TYPE_BOOL | TYPE_BYTE => r.advance(1),
        TYPE_I16 => r.advance(2),
        TYPE_I32 => r.advance(4),
        TYPE_DOUBLE | TYPE_I64 => r.advance(8),
        TYPE_UUID => r.advance(16),
        TYPE_STRING => r.binary().map(|_| ()),
        TYPE_STRUCT | TYPE_MAP | TYPE_SET | TYPE_LIST => {
            if depth >= MAX_SKIP_DEPTH {
                return Err(ThriftError::DepthLimit {
                    limit: MAX_SKIP_DEPTH,
                });
            }
            match ty {
                TYPE_STRUCT => loop {
                    let field_ty = r.u8()?;
                    if field_ty == TYPE_STOP {
                        return Ok(());
                    }
                    r.advance(2)?;
                    skip(r, field_ty, depth + 1)?;
                },
                TYPE_MAP => {
                    let k = r.u8()?;
                    let v = r.u8()?;
                    let n = r.size()?;
                    for _ in 0..n {
                        skip(r, k, depth + 1)?;
                        skip(r, v, depth + 1)?;
                    }
                    Ok(())
                }
                _ => {
                    let e = r.u8()?;
                    let n = r.size()?;
                    for _ in 0..n {
                        skip(r, e, depth + 1)?;
                    }
                    Ok(())
                }
            }
        }
        _ => Err(ThriftError::InvalidType { ty, offset: r.pos }),
    }
}

/// Bounds-checked big-endian cursor.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ThriftError> {
        let available = self.buf.len() - self.pos;
        if n > available {
            return Err(ThriftError::Truncated {
                offset: self.pos,
                need: n,
                available,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn advance(&mut self, n: usize) -> Result<(), ThriftError> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, ThriftError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, ThriftError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ThriftError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32, ThriftError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-negative i32 length or count.
    fn size(&mut self) -> Result<usize, ThriftError> {
        let offset = self.pos;
        let len = self.i32()?;
        usize::try_from(len).map_err(|_| ThriftError::NegativeLength { len, offset })
    }

    fn binary(&mut self) -> Result<&'a [u8], ThriftError> {
        let n = self.size()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exc_bytes(exc: &ApplicationException) -> Vec<u8> {
        let mut v = Vec::new();
        exc.encode(&mut v).unwrap();
        v
    }

    #[test]
    fn message_header_round_trip() {
        let h = MessageHeader {
            name: "Echo".into(),
            kind: MessageType::Oneway,
            seq_id: -5,
        };
        let mut v = Vec::new();
        h.encode(&mut v).unwrap();
        assert_eq!(v.len(), h.encoded_len());
        v.extend_from_slice(b"body");
        let (got, n) = MessageHeader::decode(&v).unwrap();
        assert_eq!(got, h);
        assert_eq!(&v[n..], b"body");
    }

    #[test]
    fn message_headers_encode_the_same_bytes_whatever_the_name_length() {
        for n in [0, 1, 51, 52, 53, 300] {
            let name = "n".repeat(n);
            let h = MessageHeaderRef {
                name: &name,
                kind: MessageType::Reply,
                seq_id: 0x0102_0304,
            };
            let mut expected = vec![0x80, 0x01, 0x00, 0x02];
            expected.extend_from_slice(&(n as i32).to_be_bytes());
            expected.extend_from_slice(name.as_bytes());
            expected.extend_from_slice(&[1, 2, 3, 4]);
            let mut got = bytes::BytesMut::new();
            h.encode(&mut got).unwrap();
            assert_eq!(&got[..], &expected[..], "name of {n} bytes");
            assert_eq!(got.len(), h.encoded_len());
        }
    }

    #[test]
    fn message_header_rejects_bad_input() {
        assert_eq!(
            MessageHeader::decode(&[0, 0, 0, 4, b'E', b'c', b'h', b'o', 1, 0, 0, 0, 1]),
            Err(ThriftError::BadVersion { word: 4 })
        );
        assert_eq!(
            MessageHeader::decode(&[0x80, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(ThriftError::UnknownMessageType { ty: 5 })
        );
        assert_eq!(
            MessageHeader::decode(&[0x80, 1, 0, 1, 0xff, 0xff, 0xff, 0xff]),
            Err(ThriftError::NegativeLength { len: -1, offset: 4 })
        );
        assert_eq!(
            MessageHeader::decode(&[0x80, 1, 0, 1, 0, 0, 0, 9, b'x']),
            Err(ThriftError::Truncated {
                offset: 8,
                need: 9,
                available: 1
            })
        );
        assert_eq!(
            MessageHeader::decode(&[0x80, 1, 0, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0]),
            Err(ThriftError::InvalidUtf8 { offset: 4 })
        );
    }

    #[test]
    fn sniffing() {
        let msg = [0x80, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(PayloadForm::sniff(&msg), Some(PayloadForm::Unframed));
        let mut framed = vec![0, 0, 0, 12];
        framed.extend_from_slice(&msg);
        assert_eq!(PayloadForm::sniff(&framed), Some(PayloadForm::Framed));
        assert_eq!(
            PayloadForm::split(&framed),
            Ok((PayloadForm::Framed, &msg[..]))
        );
        let pb = [0, 0, 0, 4, 0x90, 1, 0, 1];
        assert_eq!(PayloadForm::sniff(&pb), Some(PayloadForm::KitexProtobuf));
        assert_eq!(PayloadForm::sniff(&[0x80, 1, 0]), None);
        assert_eq!(PayloadForm::sniff(&[0, 0, 0, 0, 0, 0, 0, 0]), None);
        framed[3] = 13;
        assert_eq!(
            PayloadForm::split(&framed),
            Err(ThriftError::FramedLength {
                declared: 13,
                actual: 12
            })
        );
    }

    #[test]
    fn exception_round_trip() {
        let e = ApplicationException::new(ApplicationException::UNKNOWN_SERVICE, "no such svc");
        let v = exc_bytes(&e);
        assert_eq!(ApplicationException::decode(&v), Ok((e, v.len())));
    }

    #[test]
    fn exception_skips_unknown_fields_of_every_type() {
        let mut v = vec![];
        // 3: bool, 4: byte, 5: double, 6: i16, 7: i64, 8: uuid
        v.extend_from_slice(&[TYPE_BOOL, 0, 3, 1]);
        v.extend_from_slice(&[TYPE_BYTE, 0, 4, 7]);
        v.extend_from_slice(&[TYPE_DOUBLE, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&[TYPE_I16, 0, 6, 0, 1]);
        v.extend_from_slice(&[TYPE_I64, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1]);
        v.push(TYPE_UUID);
        v.extend_from_slice(&[0, 8]);
        v.extend_from_slice(&[0xaa; 16]);
        // 9: struct { 1: list<string> ["x"], 2: map<i32, set<byte>> {1: {2}} }
        v.extend_from_slice(&[TYPE_STRUCT, 0, 9]);
        v.extend_from_slice(&[TYPE_LIST, 0, 1, TYPE_STRING, 0, 0, 0, 1, 0, 0, 0, 1, b'x']);
        v.extend_from_slice(&[TYPE_MAP, 0, 2, TYPE_I32, TYPE_SET, 0, 0, 0, 1]);
        v.extend_from_slice(&[0, 0, 0, 1, TYPE_BYTE, 0, 0, 0, 1, 2]);
        v.push(TYPE_STOP);
        // 1 with the wrong type (i32) is skipped, then the real fields.
        v.extend_from_slice(&[TYPE_I32, 0, 1, 0, 0, 0, 9]);
        v.extend_from_slice(&exc_bytes(&ApplicationException::new(7, "bad")));
        let (e, n) = ApplicationException::decode(&v).unwrap();
        assert_eq!(e, ApplicationException::new(7, "bad"));
        assert_eq!(n, v.len());
    }

    #[test]
    fn exception_missing_fields_default() {
        assert_eq!(
            ApplicationException::decode(&[0]),
            Ok((ApplicationException::default(), 1))
        );
    }

    #[test]
    fn exception_skip_is_depth_limited() {
        let mut v = vec![TYPE_STRUCT, 0, 9];
        for _ in 0..100 {
            v.extend_from_slice(&[TYPE_STRUCT, 0, 1]);
        }
        assert_eq!(
            ApplicationException::decode(&v),
            Err(ThriftError::DepthLimit {
                limit: MAX_SKIP_DEPTH
            })
        );
    }

    #[test]
    fn exception_rejects_invalid_types_and_lengths() {
        assert_eq!(
            ApplicationException::decode(&[5, 0, 3]),
            Err(ThriftError::InvalidType { ty: 5, offset: 3 })
        );
        assert_eq!(
            ApplicationException::decode(&[TYPE_LIST, 0, 3, TYPE_I32, 0xff, 0, 0, 0]),
            Err(ThriftError::NegativeLength {
                len: -16777216,
                offset: 4
            })
        );
        // A list claiming 2^31-1 bools stops at the end of the input.
        assert!(matches!(
            ApplicationException::decode(&[TYPE_LIST, 0, 3, TYPE_BOOL, 0x7f, 0xff, 0xff, 0xff, 1]),
            Err(ThriftError::Truncated { .. })
        ));
    }

    #[test]
    fn exception_message_round_trip_and_type_check() {
        let e = ApplicationException::new(12007, "user canceled");
        let mut v = Vec::new();
        encode_exception_message("Echo", 1, &e, &mut v).unwrap();
        let (h, got) = decode_exception_message(&v).unwrap();
        assert_eq!(
            h,
            MessageHeader {
                name: "Echo".into(),
                kind: MessageType::Exception,
                seq_id: 1
            }
        );
        assert_eq!(got, e);
        v[3] = 2;
        assert_eq!(
            decode_exception_message(&v),
            Err(ThriftError::NotException { ty: 2 })
        );
        v[3] = 3;
        v.pop();
        assert!(matches!(
            decode_exception_message(&v),
            Err(ThriftError::Truncated { offset, .. }) if offset == v.len()
        ));
    }
}

#[cfg(test)]
mod kitex_protobuf_tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct ErrorProto {
        #[prost(int32, tag = "1")]
        type_id: i32,
        #[prost(string, tag = "2")]
        message: String,
    }

    #[test]
    fn the_envelope_is_thrifts_layout_with_the_kitex_magic() {
        let head = MessageHeaderRef {
            name: "Echo",
            kind: MessageType::Reply,
            seq_id: -7,
        };
        let mut b = Vec::new();
        head.encode_kitex_protobuf(&mut b).unwrap();
        // u32 0x9001_0002, i32 4 "Echo", i32 -7 (Kitex's codec writes the same bytes).
        assert_eq!(
            b,
            [0x90, 0x01, 0x00, 0x02, 0, 0, 0, 4, b'E', b'c', b'h', b'o', 0xff, 0xff, 0xff, 0xf9]
        );
        let (back, used) = MessageHeaderRef::decode_kitex_protobuf(&b).unwrap();
        assert_eq!((back, used), (head, b.len()));
        // Neither decoder takes the other's magic.
        assert!(matches!(
            MessageHeaderRef::decode(&b),
            Err(ThriftError::BadVersion { word: 0x9001_0002 })
        ));
        let mut t = Vec::new();
        head.encode(&mut t).unwrap();
        assert!(MessageHeaderRef::decode_kitex_protobuf(&t).is_err());
        // Truncated anywhere: an error, never a panic.
        for n in 0..b.len() {
            assert!(
                MessageHeaderRef::decode_kitex_protobuf(&b[..n]).is_err(),
                "{n}"
            );
        }
    }

    #[test]
    fn error_proto_is_what_protobuf_decodes() {
        use prost::Message;
        for (type_id, message) in [(6, "biz error: boom"), (1, ""), (0, "x"), (-3, "negative")] {
            let mut b = Vec::new();
            encode_error_proto(type_id, message, &mut b);
            let got = ErrorProto::decode(&b[..]).unwrap();
            assert_eq!(
                got,
                ErrorProto {
                    type_id,
                    message: message.into()
                }
            );
            assert_eq!(b.len(), got.encoded_len());
        }
        let long = "m".repeat(300);
        let mut b = Vec::new();
        encode_error_proto(7, &long, &mut b);
        assert_eq!(ErrorProto::decode(&b[..]).unwrap().message, long);
    }
}
