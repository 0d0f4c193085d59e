//! Codecs: how typed messages become bytes and back.
//!
//! A [`Codec`] is a zero-sized marker type implemented for every message type it can carry:
//! [`ProstCodec`] for `prost::Message`s and [`ThriftCodec`] for thrift structs
//! (`thrift::protocol::TSerializable`). Encoding writes straight into the buffer a transport
//! hands over (`BufMut`), so bytes land where they will be sent — a socket write buffer or a
//! shared-memory slice — without an intermediate copy. Decoding reads from `Bytes` the
//! transport already owns.

mod prost_codec;
pub mod thrift;

use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};

pub use self::prost_codec::ProstCodec;
pub use self::thrift::ThriftCodec;
use crate::status::Status;

/// Serialization of messages of type `T`.
pub trait Codec<T>: Send + Sync + 'static {
    /// A short name for errors (`"protobuf"`, `"thrift"`).
    const NAME: &'static str;

    /// Appends the encoding of `msg` to `dst`.
    fn encode<B: BufMut + ?Sized>(msg: &T, dst: &mut B) -> Result<(), Status>;

    /// Decodes one whole message from `src`.
    fn decode(src: Bytes) -> Result<T, Status>;

    /// The exact encoded length when it is cheap to know (protobuf), for transports that must
    /// reserve space before encoding.
    fn encoded_len(_msg: &T) -> Option<usize> {
        None
    }
}

/// One outgoing message, type-erased for the transport: the transport calls one of the encode
/// methods with the buffer the bytes should end up in. Each method is one dynamic call; inside
/// it the codec runs monomorphized for that buffer type (no dynamic call per field).
pub trait Encodable: Send {
    /// Encodes into a `BytesMut` (the fast path for socket transports).
    fn encode(&mut self, dst: &mut BytesMut) -> Result<(), Status>;
    /// Encodes into exactly `dst` — a slice of [`Encodable::encoded_len`] bytes the transport
    /// reserved (a shared-memory arena slot, an h2 frame). Fails with `INTERNAL` when the
    /// length is unknown or the codec wrote a different number of bytes.
    fn encode_slice(&mut self, dst: &mut [u8]) -> Result<(), Status>;
    /// Encodes into any buffer (slowest: the codec's writes go through `dyn BufMut`).
    fn encode_dyn(&mut self, dst: &mut dyn BufMut) -> Result<(), Status>;
    /// The exact encoded length, when known in advance (protobuf and generated thrift types
    /// always know it).
    fn encoded_len(&self) -> Option<usize>;
}

/// The codec of one message type, resolved to plain function pointers so typed handles carry no
/// codec type parameter (`BidiStreamingClient<Req, Res>`, not `BidiStreamingClient<Req, Res, C>`).
pub(crate) struct MsgCodec<T> {
    pub(crate) encode: fn(&T, &mut BytesMut) -> Result<(), Status>,
    pub(crate) encode_slice: fn(&T, &mut [u8]) -> Result<(), Status>,
    /// As `encode_slice` for a slice of the length the codec gave for this message: the
    /// length is not computed again (the codec's own room check still runs).
    pub(crate) encode_sized: fn(&T, &mut [u8]) -> Result<(), Status>,
    pub(crate) encode_dyn: fn(&T, &mut dyn BufMut) -> Result<(), Status>,
    pub(crate) encoded_len: fn(&T) -> Option<usize>,
    pub(crate) decode: fn(Bytes) -> Result<T, Status>,
}

impl<T> Clone for MsgCodec<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for MsgCodec<T> {}

impl<T: 'static> MsgCodec<T> {
    pub(crate) fn of<C: Codec<T>>() -> MsgCodec<T> {
        fn enc<C: Codec<T>, T>(m: &T, dst: &mut BytesMut) -> Result<(), Status> {
            C::encode(m, dst)
        }
        fn enc_dyn<C: Codec<T>, T>(m: &T, dst: &mut dyn BufMut) -> Result<(), Status> {
            C::encode(m, dst)
        }
        fn enc_slice<C: Codec<T>, T>(m: &T, dst: &mut [u8]) -> Result<(), Status> {
            encode_exact::<C, T>(m, dst)
        }
        fn enc_sized<C: Codec<T>, T>(m: &T, dst: &mut [u8]) -> Result<(), Status> {
            fill_exact::<C, T>(m, dst)
        }
        MsgCodec {
            encode: enc::<C, T>,
            encode_slice: enc_slice::<C, T>,
            encode_sized: enc_sized::<C, T>,
            encode_dyn: enc_dyn::<C, T>,
            encoded_len: C::encoded_len,
            decode: C::decode,
        }
    }
}

/// A borrowed typed message paired with its codec.
pub(crate) struct Outgoing<'a, T> {
    pub(crate) msg: &'a T,
    pub(crate) codec: MsgCodec<T>,
    /// The codec's [`Codec::encoded_len`] of `msg`, computed once (the sender needs it for
    /// `poll_send_ready` and a transport asks again to size its buffer).
    len: Option<usize>,
    _p: PhantomData<&'a T>,
}

impl<'a, T> Outgoing<'a, T> {
    /// `msg` whose encoded length the caller already asked the codec for (`len`).
    pub(crate) fn with_len(msg: &'a T, codec: MsgCodec<T>, len: Option<usize>) -> Self {
        Outgoing {
            msg,
            codec,
            len,
            _p: PhantomData,
        }
    }
}

impl<T: Sync> Encodable for Outgoing<'_, T> {
    fn encode(&mut self, dst: &mut BytesMut) -> Result<(), Status> {
        (self.codec.encode)(self.msg, dst)
    }
    fn encode_slice(&mut self, dst: &mut [u8]) -> Result<(), Status> {
        if self.len == Some(dst.len()) {
            // The length was asked of the codec for this very message: not again.
            return (self.codec.encode_sized)(self.msg, dst);
        }
        (self.codec.encode_slice)(self.msg, dst)
    }
    fn encode_dyn(&mut self, dst: &mut dyn BufMut) -> Result<(), Status> {
        (self.codec.encode_dyn)(self.msg, dst)
    }
    fn encoded_len(&self) -> Option<usize> {
        self.len
    }
}

/// Encodes `msg` into exactly `dst`, which must be [`Codec::encoded_len`] bytes long. The codec
/// runs monomorphized for `&mut [u8]` (static dispatch). A codec that does not know the length,
/// or writes a different number of bytes than it announced, is an `INTERNAL` error (never a
/// panic: a slice too short makes `BufMut` writes fail in the codec first, which is checked).
pub fn encode_exact<C: Codec<T>, T>(msg: &T, dst: &mut [u8]) -> Result<(), Status> {
    let expected = C::encoded_len(msg).ok_or_else(|| {
        Status::internal(format!(
            "the {} codec does not know the encoded length in advance",
            C::NAME
        ))
    })?;
    if expected != dst.len() {
        return Err(Status::internal(format!(
            "{} message is {expected} bytes, slice is {}",
            C::NAME,
            dst.len()
        )));
    }
    fill_exact::<C, T>(msg, dst)
}

/// Encodes `msg` into `dst`, which the codec said is its length: a codec that writes fewer
/// bytes is an `INTERNAL` error (more cannot happen without the codec's room check failing).
fn fill_exact<C: Codec<T>, T>(msg: &T, dst: &mut [u8]) -> Result<(), Status> {
    let expected = dst.len();
    let mut cursor: &mut [u8] = dst;
    C::encode(msg, &mut cursor)?;
    if !cursor.is_empty() {
        return Err(Status::internal(format!(
            "the {} codec wrote {} bytes, announced {expected}",
            C::NAME,
            expected - cursor.len()
        )));
    }
    Ok(())
}

/// Encodes a message into a fresh buffer; used where the bytes must exist before a transport
/// sees them (tests, retries).
pub fn encode_to_bytes<C: Codec<T>, T>(msg: &T) -> Result<Bytes, Status> {
    let mut buf = BytesMut::with_capacity(C::encoded_len(msg).unwrap_or(64));
    C::encode(msg, &mut buf)?;
    Ok(buf.freeze())
}
