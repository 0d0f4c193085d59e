//! Thrift binary protocol over buffers.
//!
//! Writing has two paths. Generated types implement [`ThriftMessage`]: they know their exact
//! encoded length and write themselves with static dispatch (the equivalent of Kitex
//! FastCodec's `BLength`/`FastWriteNocopy`); that is what [`ThriftCodec`] uses. They also
//! implement the `thrift` crate's `TSerializable`, which reading goes through and which stays
//! the reference encoding: [`BufOutput`] writes it into any `BufMut`, and the two are
//! byte-identical (tested for every generated field kind).
//!
//! The `thrift` crate's own `TBinaryInputProtocol` trusts lengths from the wire (a 4-byte string
//! length of 2 GiB allocates 2 GiB before reading), and goes through `io::Read` per primitive.
//! [`SliceInput`] reads from a byte slice and checks every length and container size against the
//! bytes actually left before allocating, caps nesting depth, and never panics. [`BufOutput`]
//! writes into any `BufMut` — the buffer the transport hands over — with no intermediate copy.
//! All of them speak the strict binary protocol (what Kitex, volo and Apache Thrift use by
//! default).

use bytes::{Buf, BufMut, Bytes};
use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TListIdentifier, TMapIdentifier, TMessageIdentifier,
    TMessageType, TOutputProtocol, TSerializable, TSetIdentifier, TStructIdentifier, TType,
};
use thrift::{ProtocolError, ProtocolErrorKind};

use super::Codec;
use crate::status::{Error, Status};

/// A thrift struct (union, exception, unary Args/Result wrapper) that knows the exact length
/// of its encoding and writes it with static dispatch: no `dyn` call per field, no error check
/// per field, and a transport can size a frame (TTHeader's LENGTH, an h2 capacity reservation,
/// a shared-memory slot) before writing a byte. `rpc-codegen` implements it, together with
/// `TSerializable`, for every thrift struct-like type it generates.
///
/// The encoding is the strict binary protocol of the bare struct (fields, then STOP; no message
/// header), byte-identical to what `TSerializable::write_to_out_protocol` writes through
/// [`BufOutput`].
///
/// # Lengths over `i32::MAX`
///
/// The binary protocol carries string lengths and element counts as `i32`. Every element of a
/// container takes at least one byte, so when [`encoded_len`](Self::encoded_len) is at most
/// `i32::MAX` every length and count inside fits too; `encode_to` is therefore infallible and
/// [`ThriftCodec::encode`] rejects a message whose `encoded_len()` exceeds `i32::MAX` before
/// writing anything (it also checks `dst` has room). Calling `encode_to` directly on such a
/// message writes truncated lengths (garbage, but no panic when `dst` grows).
///
/// # Implementing it by hand
///
/// Sum what the fields take ([`wire`] has the sizes), write them with the [`wire`] helpers, and
/// test the result against the `TSerializable` bytes:
///
/// ```
/// use bytes::BufMut;
/// use rpc_core::codec::thrift::{wire, ThriftMessage};
/// # use thrift::protocol::{TInputProtocol, TOutputProtocol, TSerializable};
///
/// /// `struct Ping { 1: string text, 2: optional i64 n }`
/// struct Ping {
///     text: String,
///     n: Option<i64>,
/// }
/// # // Reading is not what this example shows: a stand-in that refuses.
/// # impl TSerializable for Ping {
/// #     fn read_from_in_protocol(_: &mut dyn TInputProtocol) -> thrift::Result<Self> {
/// #         Err(thrift::Error::from("not part of this example".to_owned()))
/// #     }
/// #     fn write_to_out_protocol(&self, _: &mut dyn TOutputProtocol) -> thrift::Result<()> {
/// #         Err(thrift::Error::from("not part of this example".to_owned()))
/// #     }
/// # }
///
/// impl ThriftMessage for Ping {
///     fn encoded_len(&self) -> usize {
///         let mut n = wire::STOP_LEN + wire::FIELD_HEADER_LEN + wire::bytes_len(self.text.len());
///         if self.n.is_some() {
///             n += wire::FIELD_HEADER_LEN + 8;
///         }
///         n
///     }
///     fn encode_to<B: BufMut + ?Sized>(&self, dst: &mut B) {
///         wire::put_field_begin(dst, wire::STRING, 1);
///         wire::put_bytes(dst, self.text.as_bytes());
///         if let Some(n) = self.n {
///             wire::put_field_begin(dst, wire::I64, 2);
///             dst.put_i64(n);
///         }
///         wire::put_stop(dst);
///     }
/// }
///
/// let ping = Ping { text: "hi".into(), n: None };
/// let mut buf = [0u8; 10];
/// ping.encode_to(&mut &mut buf[..]);
/// assert_eq!(ping.encoded_len(), 10);
/// assert_eq!(buf, [11, 0, 1, 0, 0, 0, 2, b'h', b'i', 0]);
/// ```
pub trait ThriftMessage: TSerializable + Send + Sync + 'static {
    /// The exact length of the strict binary-protocol encoding of `self`.
    fn encoded_len(&self) -> usize;

    /// Writes the encoding of `self` (exactly [`encoded_len`](Self::encoded_len) bytes) with
    /// static dispatch. A fixed-size `dst` (`&mut [u8]`) must have room for `encoded_len()`
    /// bytes, or `BufMut` panics; [`ThriftCodec::encode`] checks that first.
    fn encode_to<B: BufMut + ?Sized>(&self, dst: &mut B);
}

/// The building blocks of [`ThriftMessage`] implementations (generated code uses them through
/// `rpc_core::codegen::thrift_wire`): type ids, sizes and writers of the strict binary protocol.
pub mod wire {
    use bytes::BufMut;

    /// Type id of `bool`.
    pub const BOOL: u8 = 2;
    /// Type id of `byte`/`i8`.
    pub const I8: u8 = 3;
    /// Type id of `double`.
    pub const DOUBLE: u8 = 4;
    /// Type id of `i16`.
    pub const I16: u8 = 6;
    /// Type id of `i32` (and enums).
    pub const I32: u8 = 8;
    /// Type id of `i64`.
    pub const I64: u8 = 10;
    /// Type id of `string` and `binary`.
    pub const STRING: u8 = 11;
    /// Type id of structs, unions and exceptions.
    pub const STRUCT: u8 = 12;
    /// Type id of `map`.
    pub const MAP: u8 = 13;
    /// Type id of `set`.
    pub const SET: u8 = 14;
    /// Type id of `list`.
    pub const LIST: u8 = 15;

    /// Bytes of a field header (type id, field id).
    pub const FIELD_HEADER_LEN: usize = 3;
    /// Bytes of the STOP that ends a struct.
    pub const STOP_LEN: usize = 1;
    /// Bytes of a list or set header (element type, count).
    pub const LIST_HEADER_LEN: usize = 5;
    /// Bytes of a map header (key type, value type, count).
    pub const MAP_HEADER_LEN: usize = 6;

    /// Bytes a `string`/`binary` of `len` bytes takes (length prefix and data).
    #[inline]
    pub const fn bytes_len(len: usize) -> usize {
        4 + len
    }

    /// Writes a field header.
    #[inline]
    pub fn put_field_begin<B: BufMut + ?Sized>(dst: &mut B, ttype: u8, id: i16) {
        let [hi, lo] = id.to_be_bytes();
        dst.put_slice(&[ttype, hi, lo]);
    }

    /// Writes the STOP that ends a struct.
    #[inline]
    pub fn put_stop<B: BufMut + ?Sized>(dst: &mut B) {
        dst.put_u8(0);
    }

    /// Writes a `string`/`binary`: its length as `i32`, then the bytes. A length over
    /// `i32::MAX` is truncated (see [`ThriftMessage`](super::ThriftMessage) for why callers
    /// never pass one).
    #[inline]
    pub fn put_bytes<B: BufMut + ?Sized>(dst: &mut B, b: &[u8]) {
        dst.put_i32(b.len() as i32);
        dst.put_slice(b);
    }

    /// Writes a list or set header: element type, then the count as `i32` (truncated as in
    /// [`put_bytes`]).
    #[inline]
    pub fn put_list_begin<B: BufMut + ?Sized>(dst: &mut B, element_type: u8, len: usize) {
        let [a, b, c, d] = (len as i32).to_be_bytes();
        dst.put_slice(&[element_type, a, b, c, d]);
    }

    /// Writes a map header: key type, value type, then the count as `i32` (truncated as in
    /// [`put_bytes`]).
    #[inline]
    pub fn put_map_begin<B: BufMut + ?Sized>(
        dst: &mut B,
        key_type: u8,
        value_type: u8,
        len: usize,
    ) {
        let [a, b, c, d] = (len as i32).to_be_bytes();
        dst.put_slice(&[key_type, value_type, a, b, c, d]);
    }
}

/// Thrift structs (generated types, implementing [`ThriftMessage`]), binary protocol.
/// The encoding is the bare struct: fields then STOP, no message header.
///
/// Encoding goes through [`ThriftMessage::encode_to`] after one [`ThriftMessage::encoded_len`]
/// to check the limits; decoding through `TSerializable` over [`SliceInput`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ThriftCodec;

impl<T: ThriftMessage> Codec<T> for ThriftCodec {
    const NAME: &'static str = "thrift";

    fn encode<B: BufMut + ?Sized>(msg: &T, dst: &mut B) -> Result<(), Status> {
        let len = msg.encoded_len();
        if len > i32::MAX as usize {
            return Err(Error::Encode {
                codec: "thrift",
                reason: format!("message of {len} bytes exceeds the binary protocol's i32 limit"),
            }
            .into());
        }
        let room = dst.remaining_mut();
        if room < len {
            return Err(Error::Encode {
                codec: "thrift",
                reason: format!("message of {len} bytes does not fit the {room} bytes of room"),
            }
            .into());
        }
        msg.encode_to(dst);
        Ok(())
    }

    fn decode(src: Bytes) -> Result<T, Status> {
        let mut input = SliceInput::new(&src);
        T::read_from_in_protocol(&mut input).map_err(|e| {
            Error::Decode {
                codec: "thrift",
                reason: describe(&e),
            }
            .into()
        })
    }

    fn encoded_len(msg: &T) -> Option<usize> {
        Some(msg.encoded_len())
    }
}

/// The `thrift` crate's `Display` prints only the error kind ("bad data"); keep the message.
fn describe(e: &thrift::Error) -> String {
    match e {
        thrift::Error::Protocol(p) => format!("{:?}: {}", p.kind, p.message),
        thrift::Error::Transport(t) => format!("{:?}: {}", t.kind, t.message),
        thrift::Error::Application(a) => format!("{:?}: {}", a.kind, a.message),
        other => other.to_string(),
    }
}

/// Deepest struct/container nesting accepted when reading (matches the `thrift` crate's skip
/// depth): deeper input is an error, not a stack overflow.
pub const MAX_NESTING_DEPTH: usize = 64;

const VERSION_1: u32 = 0x8001_0000;
const VERSION_MASK: u32 = 0xffff_0000;

fn ttype_to_u8(t: TType) -> u8 {
    match t {
        TType::Stop => 0,
        TType::Void => 1,
        TType::Bool => 2,
        TType::I08 => 3,
        TType::Double => 4,
        TType::I16 => 6,
        TType::I32 => 8,
        TType::I64 => 10,
        TType::String | TType::Utf7 => 11,
        TType::Struct => 12,
        TType::Map => 13,
        TType::Set => 14,
        TType::List => 15,
        TType::Utf8 => 16,
        TType::Utf16 => 17,
    }
}

fn ttype_from_u8(b: u8) -> thrift::Result<TType> {
    Ok(match b {
        0 => TType::Stop,
        1 => TType::Void,
        2 => TType::Bool,
        3 => TType::I08,
        4 => TType::Double,
        6 => TType::I16,
        8 => TType::I32,
        10 => TType::I64,
        11 => TType::String,
        12 => TType::Struct,
        13 => TType::Map,
        14 => TType::Set,
        15 => TType::List,
        16 => TType::Utf8,
        17 => TType::Utf16,
        other => {
            return Err(protocol_error(
                ProtocolErrorKind::InvalidData,
                format!("unknown thrift type id {other}"),
            ))
        }
    })
}

fn protocol_error(kind: ProtocolErrorKind, message: String) -> thrift::Error {
    thrift::Error::Protocol(ProtocolError::new(kind, message))
}

/// Strict binary protocol writer into any `BufMut`.
pub struct BufOutput<'a, B: BufMut + ?Sized> {
    dst: &'a mut B,
}

impl<'a, B: BufMut + ?Sized> BufOutput<'a, B> {
    /// A writer appending to `dst`.
    pub fn new(dst: &'a mut B) -> Self {
        BufOutput { dst }
    }

    fn put_len(&mut self, len: usize) -> thrift::Result<()> {
        let len = i32::try_from(len).map_err(|_| {
            protocol_error(
                ProtocolErrorKind::SizeLimit,
                format!("length {len} does not fit in i32"),
            )
        })?;
        self.dst.put_i32(len);
        Ok(())
    }
}

impl<B: BufMut + ?Sized> TOutputProtocol for BufOutput<'_, B> {
    fn write_message_begin(&mut self, id: &TMessageIdentifier) -> thrift::Result<()> {
        self.dst
            .put_u32(VERSION_1 | u32::from(u8::from(id.message_type)));
        self.write_string(&id.name)?;
        self.dst.put_i32(id.sequence_number);
        Ok(())
    }
    fn write_message_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_struct_begin(&mut self, _: &TStructIdentifier) -> thrift::Result<()> {
        Ok(())
    }
    fn write_struct_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_field_begin(&mut self, id: &TFieldIdentifier) -> thrift::Result<()> {
        let fid = id.id.ok_or_else(|| {
            protocol_error(ProtocolErrorKind::InvalidData, "field id missing".into())
        })?;
        self.dst.put_u8(ttype_to_u8(id.field_type));
        self.dst.put_i16(fid);
        Ok(())
    }
    fn write_field_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_field_stop(&mut self) -> thrift::Result<()> {
        self.dst.put_u8(0);
        Ok(())
    }
    fn write_bool(&mut self, b: bool) -> thrift::Result<()> {
        self.dst.put_u8(u8::from(b));
        Ok(())
    }
    fn write_bytes(&mut self, b: &[u8]) -> thrift::Result<()> {
        self.put_len(b.len())?;
        self.dst.put_slice(b);
        Ok(())
    }
    fn write_i8(&mut self, i: i8) -> thrift::Result<()> {
        self.dst.put_i8(i);
        Ok(())
    }
    fn write_i16(&mut self, i: i16) -> thrift::Result<()> {
        self.dst.put_i16(i);
        Ok(())
    }
    fn write_i32(&mut self, i: i32) -> thrift::Result<()> {
        self.dst.put_i32(i);
        Ok(())
    }
    fn write_i64(&mut self, i: i64) -> thrift::Result<()> {
        self.dst.put_i64(i);
        Ok(())
    }
    fn write_double(&mut self, d: f64) -> thrift::Result<()> {
        self.dst.put_f64(d);
        Ok(())
    }
    fn write_string(&mut self, s: &str) -> thrift::Result<()> {
        self.write_bytes(s.as_bytes())
    }
    fn write_list_begin(&mut self, id: &TListIdentifier) -> thrift::Result<()> {
        self.dst.put_u8(ttype_to_u8(id.element_type));
        self.dst.put_i32(id.size);
        Ok(())
    }
    fn write_list_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_set_begin(&mut self, id: &TSetIdentifier) -> thrift::Result<()> {
        self.dst.put_u8(ttype_to_u8(id.element_type));
        self.dst.put_i32(id.size);
        Ok(())
    }
    fn write_set_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_map_begin(&mut self, id: &TMapIdentifier) -> thrift::Result<()> {
        // An empty map may come without element types; write 0 (STOP) as Apache Thrift does.
        let k = id.key_type.map(ttype_to_u8).unwrap_or(0);
        let v = id.value_type.map(ttype_to_u8).unwrap_or(0);
        self.dst.put_u8(k);
        self.dst.put_u8(v);
        self.dst.put_i32(id.size);
        Ok(())
    }
    fn write_map_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn write_byte(&mut self, b: u8) -> thrift::Result<()> {
        self.dst.put_u8(b);
        Ok(())
    }
}

/// Strict binary protocol reader over a byte slice, with every length checked against the bytes
/// left before allocating.
pub struct SliceInput<'a> {
    buf: &'a [u8],
    depth: usize,
}

impl<'a> SliceInput<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        SliceInput { buf, depth: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    fn need(&self, n: usize) -> thrift::Result<()> {
        if self.buf.len() < n {
            Err(thrift::Error::Transport(thrift::TransportError::new(
                thrift::TransportErrorKind::EndOfFile,
                format!("need {n} bytes, {} left", self.buf.len()),
            )))
        } else {
            Ok(())
        }
    }

    /// Reads a size (string length or element count) and checks it against the bytes left:
    /// every element takes at least `min_elem` bytes on the wire.
    fn size(&mut self, min_elem: usize) -> thrift::Result<usize> {
        let n = self.read_i32()?;
        let n = usize::try_from(n).map_err(|_| {
            protocol_error(
                ProtocolErrorKind::NegativeSize,
                format!("negative size {n}"),
            )
        })?;
        if n.saturating_mul(min_elem) > self.buf.len() {
            return Err(protocol_error(
                ProtocolErrorKind::SizeLimit,
                format!("size {n} exceeds the {} bytes left", self.buf.len()),
            ));
        }
        Ok(n)
    }

    fn enter(&mut self) -> thrift::Result<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING_DEPTH {
            return Err(protocol_error(
                ProtocolErrorKind::DepthLimit,
                format!("nesting deeper than {MAX_NESTING_DEPTH}"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn slice(&mut self, n: usize) -> thrift::Result<&'a [u8]> {
        self.need(n)?;
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
}

impl TInputProtocol for SliceInput<'_> {
    fn read_message_begin(&mut self) -> thrift::Result<TMessageIdentifier> {
        let header = self.read_i32()? as u32;
        if header & VERSION_MASK != VERSION_1 {
            return Err(protocol_error(
                ProtocolErrorKind::BadVersion,
                format!("not a strict binary message header: {header:#010x}"),
            ));
        }
        let message_type = TMessageType::try_from((header & 0xff) as u8)?;
        let name = self.read_string()?;
        let sequence_number = self.read_i32()?;
        Ok(TMessageIdentifier::new(name, message_type, sequence_number))
    }
    fn read_message_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_struct_begin(&mut self) -> thrift::Result<Option<TStructIdentifier>> {
        self.enter()?;
        Ok(None)
    }
    fn read_struct_end(&mut self) -> thrift::Result<()> {
        self.leave();
        Ok(())
    }
    fn read_field_begin(&mut self) -> thrift::Result<TFieldIdentifier> {
        let t = ttype_from_u8(self.read_byte()?)?;
        if t == TType::Stop {
            return Ok(TFieldIdentifier::new::<Option<String>, String, Option<i16>>(None, t, None));
        }
        let id = self.read_i16()?;
        Ok(TFieldIdentifier::new::<Option<String>, String, i16>(
            None, t, id,
        ))
    }
    fn read_field_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_bool(&mut self) -> thrift::Result<bool> {
        Ok(self.read_byte()? != 0)
    }
    fn read_bytes(&mut self) -> thrift::Result<Vec<u8>> {
        let n = self.size(1)?;
        Ok(self.slice(n)?.to_vec())
    }
    fn read_i8(&mut self) -> thrift::Result<i8> {
        Ok(self.read_byte()? as i8)
    }
    fn read_i16(&mut self) -> thrift::Result<i16> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }
    fn read_i32(&mut self) -> thrift::Result<i32> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }
    fn read_i64(&mut self) -> thrift::Result<i64> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }
    fn read_double(&mut self) -> thrift::Result<f64> {
        self.need(8)?;
        Ok(self.buf.get_f64())
    }
    fn read_string(&mut self) -> thrift::Result<String> {
        let n = self.size(1)?;
        let raw = self.slice(n)?;
        String::from_utf8(raw.to_vec()).map_err(|e| {
            protocol_error(
                ProtocolErrorKind::InvalidData,
                format!("invalid UTF-8: {e}"),
            )
        })
    }
    fn read_list_begin(&mut self) -> thrift::Result<TListIdentifier> {
        self.enter()?;
        let t = ttype_from_u8(self.read_byte()?)?;
        let n = self.size(1)?;
        Ok(TListIdentifier::new(t, n as i32))
    }
    fn read_list_end(&mut self) -> thrift::Result<()> {
        self.leave();
        Ok(())
    }
    fn read_set_begin(&mut self) -> thrift::Result<TSetIdentifier> {
        self.enter()?;
        let t = ttype_from_u8(self.read_byte()?)?;
        let n = self.size(1)?;
        Ok(TSetIdentifier::new(t, n as i32))
    }
    fn read_set_end(&mut self) -> thrift::Result<()> {
        self.leave();
        Ok(())
    }
    fn read_map_begin(&mut self) -> thrift::Result<TMapIdentifier> {
        self.enter()?;
        let k = ttype_from_u8(self.read_byte()?)?;
        let v = ttype_from_u8(self.read_byte()?)?;
        let n = self.size(2)?;
        Ok(TMapIdentifier::new(k, v, n as i32))
    }
    fn read_map_end(&mut self) -> thrift::Result<()> {
        self.leave();
        Ok(())
    }
    fn read_byte(&mut self) -> thrift::Result<u8> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_string_length_is_rejected_before_allocating() {
        // field 1 STRING with length i32::MAX and 3 bytes of data
        let bytes = [11u8, 0, 1, 0x7f, 0xff, 0xff, 0xff, b'a', b'b', b'c'];
        let mut p = SliceInput::new(&bytes);
        let f = p.read_field_begin().unwrap();
        assert_eq!(f.field_type, TType::String);
        let err = p.read_string().unwrap_err();
        match err {
            thrift::Error::Protocol(e) => {
                assert_eq!(e.kind, ProtocolErrorKind::SizeLimit);
                assert!(e.message.contains("exceeds"), "{}", e.message);
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn negative_list_size_and_deep_nesting_are_errors() {
        let bytes = [8u8, 0xff, 0xff, 0xff, 0xff];
        assert!(SliceInput::new(&bytes).read_list_begin().is_err());
        let deep = [15u8, 15, 0, 0, 0, 1].repeat(100);
        let mut p = SliceInput::new(&deep);
        let mut res = Ok(());
        for _ in 0..100 {
            res = p.read_list_begin().map(|_| ());
            if res.is_err() {
                break;
            }
        }
        assert!(res.is_err());
    }

    #[test]
    fn message_header_round_trips() {
        let mut buf = bytes::BytesMut::new();
        let id = TMessageIdentifier::new("Echo", TMessageType::Call, 7);
        BufOutput::new(&mut buf).write_message_begin(&id).unwrap();
        assert_eq!(&buf[..4], &[0x80, 0x01, 0x00, 0x01]);
        let got = SliceInput::new(&buf).read_message_begin().unwrap();
        assert_eq!(got, id);
    }
}
