//! TTHeader Streaming ("ttstream") frames (spec §3).
//!
//! Every frame is a [`Packet`] with FLAGS `0x0002`, SEQUENCE ID = stream id, PROTOCOL ID `0x10`
//! or `0x11`, and int keys 27 (frame type, one ASCII digit) and 9 (method) in both directions.
//! [`StreamFrame`] lifts those out of the int KVs; the remaining KVs are metadata.

use bytes::{Bytes, BytesMut};

use super::error::{EncodeError, FrameError};
use super::header::{is_utf8, HeadRef, Headers, Limits, Packet, PacketStart, ProtocolId};
use super::keys::{self, int_key, str_key};
pub use super::kinds::FrameKind;
use super::status::BizStatus;
use super::thrift_msg::{encode_exception_message, ApplicationException};

/// The payload encoding of a stream, from its PROTOCOL ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamProtocol {
    /// `0x10`: bare Thrift-binary structs.
    Thrift,
    /// `0x11`: protobuf messages.
    Protobuf,
}

impl StreamProtocol {
    /// The PROTOCOL ID.
    pub fn protocol_id(self) -> ProtocolId {
        match self {
            StreamProtocol::Thrift => ProtocolId::StreamThrift,
            StreamProtocol::Protobuf => ProtocolId::StreamProtobuf,
        }
    }

    /// The stream protocol of a PROTOCOL ID, if it is one.
    pub fn from_protocol_id(id: ProtocolId) -> Option<Self> {
        match id {
            ProtocolId::StreamThrift => Some(StreamProtocol::Thrift),
            ProtocolId::StreamProtobuf => Some(StreamProtocol::Protobuf),
            _ => None,
        }
    }
}

/// A method name (int key 9): UTF-8, shared without copying — an IDL's `&'static str`
/// ([`MethodName::from_static`]), a `String` moved in, or a slice of a received frame.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct MethodName(Bytes);

impl MethodName {
    /// A name the program holds for good (an IDL method): no allocation.
    pub const fn from_static(name: &'static str) -> MethodName {
        MethodName(Bytes::from_static(name.as_bytes()))
    }

    /// A name from received bytes, if they are UTF-8 (no copy).
    pub fn from_utf8(bytes: Bytes) -> Result<MethodName, Bytes> {
        if is_utf8(&bytes) {
            Ok(MethodName(bytes))
        } else {
            Err(bytes)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // UTF-8 by construction (every constructor checks or takes a `str`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name's length in bytes (no UTF-8 conversion, unlike `as_str().len()`).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the name is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes, shared.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl std::ops::Deref for MethodName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for MethodName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A copy of `name` (use [`MethodName::from_static`] for a name held for good: no copy).
impl From<&str> for MethodName {
    fn from(name: &str) -> MethodName {
        MethodName(Bytes::copy_from_slice(name.as_bytes()))
    }
}

impl From<String> for MethodName {
    fn from(name: String) -> MethodName {
        MethodName(Bytes::from(name))
    }
}

impl From<&String> for MethodName {
    fn from(name: &String) -> MethodName {
        MethodName(Bytes::copy_from_slice(name.as_bytes()))
    }
}

impl PartialEq<str> for MethodName {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for MethodName {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// One ttstream frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFrame {
    /// Int key 27.
    pub kind: FrameKind,
    /// SEQUENCE ID: any non-zero i32 (0 only on Meta frames).
    pub stream_id: i32,
    /// Int key 9; empty if the peer omitted it.
    pub method: MethodName,
    /// PROTOCOL ID.
    pub protocol: StreamProtocol,
    /// Metadata: string KVs, ACL token and int KVs other than 9 and 27 (those are never written
    /// from here, the fields above are).
    pub headers: Headers,
    /// Payload: a message (Data), an EXCEPTION message (Trailer, Rst) or nothing.
    pub payload: Bytes,
}

/// The longest method name [`StreamFrame::encode_head`] lays out directly (longer ones, which
/// no IDL has, take the general encoder).
const PLAIN_METHOD_MAX: usize = 1024;

/// A delimited packet that is not a valid ttstream frame: the stream it names and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame {
    /// The packet's SEQUENCE ID.
    pub stream_id: i32,
    /// What is wrong with it.
    pub error: FrameError,
}

impl TryFrom<Packet> for StreamFrame {
    type Error = FrameError;

    fn try_from(mut p: Packet) -> Result<Self, FrameError> {
        // The last entry of a repeated key wins, as in every lookup.
        let mut kind = None;
        let mut method = None;
        p.headers.int_kvs.retain(|(k, v)| match *k {
            int_key::FRAME_TYPE => {
                kind = Some(v.clone());
                false
            }
            int_key::TO_METHOD => {
                method = Some(v.clone());
                false
            }
            _ => true,
        });
        StreamFrame::from_parts(p, kind, method)
    }
}

impl StreamFrame {
    /// A frame from a packet whose int keys 27 (`kind`) and 9 (`method`) were lifted out.
    fn from_parts(
        p: Packet,
        kind: Option<Bytes>,
        method: Option<Bytes>,
    ) -> Result<StreamFrame, FrameError> {
        if p.flags & keys::FLAGS_STREAMING == 0 {
            return Err(FrameError::NotStreaming { flags: p.flags });
        }
        let protocol =
            StreamProtocol::from_protocol_id(p.protocol).ok_or(FrameError::NotStreamProtocol {
                id: p.protocol.as_u8(),
            })?;
        let stream_id = p.seq_id;
        let ty = kind.ok_or(FrameError::MissingFrameType { stream_id })?;
        let kind = FrameKind::from_wire(&ty).ok_or(FrameError::UnknownFrameType {
            stream_id,
            value: ty,
        })?;
        if stream_id == 0 && kind != FrameKind::Meta {
            return Err(FrameError::ZeroStreamId { kind });
        }
        // The spec says key 9 is always present; tolerate its absence as an empty name and let
        // the server answer "unknown method" rather than killing the connection.
        let method = match method {
            Some(m) => {
                MethodName::from_utf8(m).map_err(|_| FrameError::MethodNotUtf8 { stream_id })?
            }
            None => MethodName::default(),
        };
        Ok(StreamFrame {
            kind,
            stream_id,
            method,
            protocol,
            headers: p.headers,
            payload: p.payload,
        })
    }

    /// Parses one delimited packet as a frame, lifting int keys 27 and 9 out while parsing
    /// (no allocation for them). The outer error means the packet itself is malformed
    /// (connection scope); the inner one, a well-delimited packet that is not a valid frame.
    fn parse(frame: Bytes) -> Result<Result<StreamFrame, BadFrame>, FrameError> {
        let mut kind = None;
        let mut method = None;
        let p = Packet::parse_taking(frame, &mut |k, v| match k {
            int_key::FRAME_TYPE => {
                kind = Some(v.clone());
                true
            }
            int_key::TO_METHOD => {
                method = Some(v.clone());
                true
            }
            _ => false,
        })?;
        let stream_id = p.seq_id;
        Ok(StreamFrame::from_parts(p, kind, method).map_err(|error| BadFrame { stream_id, error }))
    }

    /// Decodes one frame from the front of `src` for a reader that keeps going after a bad
    /// frame: `Ok(None)` while only a prefix is there; `Err` when the bytes cannot be
    /// delimited or parsed as a packet (the connection must end); `Ok(Some(Err(bad)))` for a
    /// whole packet that is not a valid ttstream frame (it is consumed: the stream it names
    /// may end, the connection goes on). Allocates nothing for int keys 27 and 9.
    pub fn read(
        src: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Result<StreamFrame, BadFrame>>, FrameError> {
        match Packet::split(src, limits)? {
            Some(frame) => StreamFrame::parse(frame).map(Some),
            None => Ok(None),
        }
    }

    /// [`StreamFrame::read`] for a frame delivered whole: `frame` must be exactly one packet.
    pub fn read_whole(
        frame: Bytes,
        limits: &Limits,
    ) -> Result<Result<StreamFrame, BadFrame>, FrameError> {
        Packet::check_whole(&frame, limits)?;
        StreamFrame::parse(frame)
    }
}

impl From<StreamFrame> for Packet {
    fn from(f: StreamFrame) -> Packet {
        let mut headers = f.headers;
        headers
            .int_kvs
            .retain(|(k, _)| *k != int_key::FRAME_TYPE && *k != int_key::TO_METHOD);
        headers.int_kvs.splice(
            0..0,
            [
                (int_key::TO_METHOD, f.method.into_bytes()),
                (int_key::FRAME_TYPE, Bytes::from(vec![f.kind.as_ascii()])),
            ],
        );
        Packet {
            flags: keys::FLAGS_STREAMING,
            seq_id: f.stream_id,
            protocol: f.protocol.protocol_id(),
            headers,
            payload: f.payload,
        }
    }
}

impl StreamFrame {
    /// A frame with no metadata and no payload.
    pub fn new(
        kind: FrameKind,
        stream_id: i32,
        method: impl Into<MethodName>,
        protocol: StreamProtocol,
    ) -> Self {
        StreamFrame {
            kind,
            stream_id,
            method: method.into(),
            protocol,
            headers: Headers::default(),
            payload: Bytes::new(),
        }
    }

    /// The client's opening Header: `isn` = `service`, then `metadata` (metainfo and user
    /// metadata), and the deadline as int key 12 (RPC_TIMEOUT, decimal ms) when given.
    pub fn client_header(
        stream_id: i32,
        method: impl Into<MethodName>,
        protocol: StreamProtocol,
        service: &str,
        metadata: impl IntoIterator<Item = (String, String)>,
        timeout_ms: Option<u64>,
    ) -> Self {
        let mut f = Self::new(FrameKind::Header, stream_id, method, protocol);
        f.headers
            .push_str(str_key::IDL_SERVICE_NAME, service.to_owned());
        f.headers.str_kvs.extend(metadata);
        if let Some(ms) = timeout_ms {
            f.headers.push_int(int_key::RPC_TIMEOUT, ms.to_string());
        }
        f
    }

    /// The server's response Header with its header map.
    pub fn server_header(
        stream_id: i32,
        method: impl Into<MethodName>,
        protocol: StreamProtocol,
        metadata: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut f = Self::new(FrameKind::Header, stream_id, method, protocol);
        f.headers.str_kvs.extend(metadata);
        f
    }

    /// A Data frame carrying one encoded message.
    pub fn data(
        stream_id: i32,
        method: impl Into<MethodName>,
        protocol: StreamProtocol,
        payload: Bytes,
    ) -> Self {
        let mut f = Self::new(FrameKind::Data, stream_id, method, protocol);
        f.payload = payload;
        f
    }

    /// The client's CloseSend, or a server's clean end without trailers: an empty Trailer.
    pub fn close_send(
        stream_id: i32,
        method: impl Into<MethodName>,
        protocol: StreamProtocol,
    ) -> Self {
        Self::new(FrameKind::Trailer, stream_id, method, protocol)
    }

    /// A server Trailer: the trailer map, the `biz-*` keys of `biz` if any, and when `error` is
    /// given an EXCEPTION message (method, type 3, seqid = stream id) as payload.
    pub fn trailer(
        stream_id: i32,
        method: impl Into<MethodName>,
        protocol: StreamProtocol,
        trailers: impl IntoIterator<Item = (String, String)>,
        biz: Option<&BizStatus>,
        error: Option<&ApplicationException>,
    ) -> Result<Self, EncodeError> {
        let mut f = Self::new(FrameKind::Trailer, stream_id, method, protocol);
        f.headers.str_kvs.extend(trailers);
        if let Some(biz) = biz {
            biz.push_to(&mut f.headers);
        }
        if let Some(exc) = error {
            f.payload = exception_payload(f.method.as_str(), stream_id, exc)?;
        }
        Ok(f)
    }

    /// A Rst: `ttscp` = `cancel_path` when given, payload = EXCEPTION message with
    /// `{message, code}` (e.g. 12007 user cancel, 12015 stream timeout).
    pub fn rst(
        stream_id: i32,
        method: impl Into<MethodName>,
        protocol: StreamProtocol,
        cancel_path: Option<&str>,
        reason: &ApplicationException,
    ) -> Result<Self, EncodeError> {
        let mut f = Self::new(FrameKind::Rst, stream_id, method, protocol);
        if let Some(path) = cancel_path {
            f.headers.push_str(str_key::CANCEL_PATH, path.to_owned());
        }
        f.payload = exception_payload(f.method.as_str(), stream_id, reason)?;
        Ok(f)
    }

    /// Decodes one frame from the front of `src` ([`Packet::decode`] plus the ttstream checks).
    pub fn decode(src: &mut BytesMut, limits: &Limits) -> Result<Option<Self>, FrameError> {
        match StreamFrame::read(src, limits)? {
            Some(frame) => frame.map(Some).map_err(|bad| bad.error),
            None => Ok(None),
        }
    }

    /// Appends the encoded frame to `dst`. Int keys 9 and 27 are written first, from `method`
    /// and `kind`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_head(self.payload.len(), dst)?;
        dst.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Appends everything but the payload, with LENGTH computed for `payload_len` bytes the
    /// caller appends next. `self.payload` is ignored.
    pub fn encode_head(&self, payload_len: usize, dst: &mut BytesMut) -> Result<(), EncodeError> {
        if self.headers.is_empty() && self.method.len() <= PLAIN_METHOD_MAX {
            return self.encode_plain_head(payload_len, dst);
        }
        let kind = [self.kind.as_ascii()];
        let extra: [(u16, &[u8]); 2] = [
            (int_key::TO_METHOD, self.method.as_bytes()),
            (int_key::FRAME_TYPE, &kind),
        ];
        HeadRef {
            flags: keys::FLAGS_STREAMING,
            seq_id: self.stream_id,
            protocol: self.protocol.protocol_id().as_u8(),
            headers: &self.headers,
            extra_int_kvs: &extra,
            skip_int_keys: &[int_key::TO_METHOD, int_key::FRAME_TYPE],
        }
        .encode(payload_len, dst)
    }

    /// [`StreamFrame::encode_head`] for a frame without metadata (what most frames are): its
    /// header is one int KV block of keys 9 and 27, laid out directly. Byte for byte what the
    /// general encoder writes.
    fn encode_plain_head(&self, payload_len: usize, dst: &mut BytesMut) -> Result<(), EncodeError> {
        use bytes::BufMut;
        let method = self.method.as_bytes();
        // PROTOCOL ID, NUM TRANSFORMS, the block id and count, key 9 and its value, key 27
        // and its one-digit value.
        let unpadded = 2 + 3 + (2 + 2 + method.len()) + (2 + 2 + 1);
        let padded = unpadded.div_ceil(4) * 4;
        let after_length = 10 + padded;
        let length = after_length
            .checked_add(payload_len)
            .and_then(|l| u32::try_from(l).ok())
            .ok_or(EncodeError::FrameTooLarge {
                len: after_length.saturating_add(payload_len),
            })?;
        let start = dst.len();
        dst.resize(start + 4 + after_length, 0);
        let mut w: &mut [u8] = &mut dst[start..];
        w.put_u32(length);
        w.put_u16(keys::MAGIC);
        w.put_u16(keys::FLAGS_STREAMING);
        w.put_i32(self.stream_id);
        // At most (5 + 4 + PLAIN_METHOD_MAX + 5) / 4 words: far below u16::MAX.
        w.put_u16((padded / 4) as u16);
        w.put_u8(self.protocol.protocol_id().as_u8());
        w.put_u8(0);
        w.put_u8(keys::INFO_INT_KVS);
        w.put_u16(2);
        w.put_u16(int_key::TO_METHOD);
        // At most PLAIN_METHOD_MAX: the cast is exact.
        w.put_u16(method.len() as u16);
        w.put_slice(method);
        w.put_u16(int_key::FRAME_TYPE);
        w.put_u16(1);
        w.put_u8(self.kind.as_ascii());
        // The rest is padding, already zero.
        Ok(())
    }

    /// Appends everything but the payload with a placeholder LENGTH; append the message and
    /// call [`PacketStart::finish`]. `self.payload` is ignored.
    pub fn encode_begin(&self, dst: &mut BytesMut) -> Result<PacketStart, EncodeError> {
        let start = dst.len();
        self.encode_head(0, dst)?;
        Ok(PacketStart::new(start))
    }
}

/// A Data frame split off by [`StreamFrame::decode_data`], without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame {
    /// SEQUENCE ID: the stream.
    pub stream_id: i32,
    /// PROTOCOL ID.
    pub protocol: StreamProtocol,
    /// The message.
    pub payload: Bytes,
}

impl StreamFrame {
    /// The hot path of a stream reader: if `src` starts with a complete Data frame whose header
    /// holds only int keys and padding (what every peer writes for Data), split it off and
    /// return it without allocating. Anything else — another frame type, string keys, an ACL
    /// token, a frame that is incomplete or wrong in any way — returns `None` and leaves `src`
    /// untouched, so the caller falls back to [`StreamFrame::decode`], which reports errors.
    /// Whenever this returns a frame, `decode` would have returned the same stream id,
    /// protocol and payload.
    pub fn decode_data(src: &mut BytesMut, limits: &Limits) -> Option<DataFrame> {
        let (stream_id, protocol, header_end, total) = data_frame_shape(src, limits)?;
        let frame = src.split_to(total).freeze();
        Some(DataFrame {
            stream_id,
            protocol,
            payload: frame.slice(header_end..),
        })
    }
}

impl StreamFrame {
    /// [`StreamFrame::decode_data`] for a frame delivered whole: if `frame` is exactly one
    /// plain Data frame, its stream id, protocol and payload (a slice of `frame`, no copy).
    pub fn data_of_whole(frame: &Bytes, limits: &Limits) -> Option<DataFrame> {
        let (stream_id, protocol, header_end, total) = data_frame_shape(frame, limits)?;
        (total == frame.len()).then(|| DataFrame {
            stream_id,
            protocol,
            payload: frame.slice(header_end..),
        })
    }
}

/// A whole frame at the front of a buffer whose header holds only int keys and padding (what
/// peers write for Data frames and for Trailer and Rst frames without metadata), seen without
/// parsing it into a [`StreamFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainFrame {
    /// SEQUENCE ID (never 0).
    pub stream_id: i32,
    /// Int key 27.
    pub kind: FrameKind,
    /// The frame's length on the wire, LENGTH included.
    pub len: usize,
    /// Where its payload starts (a Data frame's message: `len - payload_at` bytes).
    pub payload_at: usize,
}

impl StreamFrame {
    /// If `src` starts with a whole, well-formed plain frame ([`PlainFrame`]), what it is;
    /// `None` for anything else (the caller decodes it fully, which reports errors). A reader
    /// can drop such a frame for a stream it no longer has without parsing it: decoding it
    /// would give a valid frame of that stream id and kind.
    pub fn peek_plain(src: &[u8], limits: &Limits) -> Option<PlainFrame> {
        let (stream_id, _, kind, payload_at, len) = plain_frame_shape(src, limits)?;
        Some(PlainFrame {
            stream_id,
            kind,
            len,
            payload_at,
        })
    }
}

/// Checks the Data-frame shape of the frame at the start of `src`: returns its stream id,
/// protocol, where the payload starts and the frame's total length.
fn data_frame_shape(src: &[u8], limits: &Limits) -> Option<(i32, StreamProtocol, usize, usize)> {
    match plain_frame_shape(src, limits)? {
        (stream_id, protocol, FrameKind::Data, header_end, total) => {
            Some((stream_id, protocol, header_end, total))
        }
        _ => None,
    }
}

/// Checks the plain-frame shape (header of int keys and padding only, a frame type, a UTF-8
/// method) of the frame at the start of `src`: returns its stream id, protocol, kind, where
/// the payload starts and the frame's total length.
fn plain_frame_shape(
    src: &[u8],
    limits: &Limits,
) -> Option<(i32, StreamProtocol, FrameKind, usize, usize)> {
    let be16 = |b: &[u8], at: usize| -> Option<u16> {
        b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]))
    };
    let fixed = src.get(..14)?;
    let length =
        usize::try_from(u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]])).ok()?;
    if length > limits.max_frame_size || length < 10 {
        return None;
    }
    let total = length.checked_add(4)?;
    if src.len() < total
        || be16(fixed, 4)? != keys::MAGIC
        || be16(fixed, 6)? & keys::FLAGS_STREAMING == 0
    {
        return None;
    }
    let stream_id = i32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    let header_end = 14 + usize::from(be16(fixed, 12)?) * 4;
    if stream_id == 0 || header_end > total || header_end < 16 {
        return None;
    }
    let header = &src[14..header_end];
    let protocol = StreamProtocol::from_protocol_id(ProtocolId::from_u8(header[0])?)?;
    let mut pos = 2 + usize::from(header[1]);
    let mut kind: Option<&[u8]> = None;
    while pos < header.len() {
        match header[pos] {
            keys::INFO_PADDING => pos += 1,
            keys::INFO_INT_KVS => {
                let count = be16(header, pos + 1)?;
                pos += 3;
                for _ in 0..count {
                    let key = be16(header, pos)?;
                    let len = usize::from(be16(header, pos + 2)?);
                    let value = header.get(pos + 4..pos + 4 + len)?;
                    pos += 4 + len;
                    match key {
                        // Repeated keys: the last one wins, as in the full decoder.
                        int_key::FRAME_TYPE => kind = Some(value),
                        int_key::TO_METHOD if !is_utf8(value) => return None,
                        _ => {}
                    }
                }
            }
            // String keys or an ACL token: not the plain Data shape; let the full decoder work.
            _ => return None,
        }
    }
    let kind = FrameKind::from_wire(kind?)?;
    Some((stream_id, protocol, kind, header_end, total))
}

fn exception_payload(
    method: &str,
    stream_id: i32,
    exc: &ApplicationException,
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    encode_exception_message(method, stream_id, exc, &mut buf)?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::thrift_msg::decode_exception_message;

    fn packet_of(f: &StreamFrame) -> Packet {
        let mut b = BytesMut::new();
        f.encode(&mut b).unwrap();
        Packet::decode(&mut b, &Limits::default()).unwrap().unwrap()
    }

    #[test]
    fn whole_frames_decode_like_the_stream_decoder_and_lengths_are_checked() {
        let limits = Limits::default();
        let frames = [
            StreamFrame::data(
                3,
                "Echo",
                StreamProtocol::Thrift,
                Bytes::from_static(b"abc"),
            ),
            StreamFrame::client_header(5, "Echo", StreamProtocol::Protobuf, "Svc", [], None),
            StreamFrame::close_send(5, "Echo", StreamProtocol::Protobuf),
        ];
        for f in frames {
            let mut b = BytesMut::new();
            f.encode(&mut b).unwrap();
            let whole = b.clone().freeze();
            let streamed = StreamFrame::decode(&mut b, &limits).unwrap().unwrap();
            let p = Packet::decode_whole(whole.clone(), &limits).unwrap();
            assert_eq!(StreamFrame::try_from(p).unwrap(), streamed);
            match StreamFrame::data_of_whole(&whole, &limits) {
                Some(d) => {
                    assert_eq!(streamed.kind, FrameKind::Data);
                    assert_eq!(
                        (d.stream_id, &d.payload),
                        (streamed.stream_id, &streamed.payload)
                    );
                }
                None => assert_ne!(streamed.kind, FrameKind::Data),
            }
            // One byte more or less than LENGTH says: refused, never read past the end.
            let short = whole.slice(..whole.len() - 1);
            assert!(Packet::decode_whole(short.clone(), &limits).is_err());
            assert!(StreamFrame::data_of_whole(&short, &limits).is_none());
            let mut long = BytesMut::from(&whole[..]);
            long.extend_from_slice(b"x");
            let long = long.freeze();
            assert!(matches!(
                Packet::decode_whole(long.clone(), &limits),
                Err(FrameError::LengthMismatch { .. })
            ));
            assert!(StreamFrame::data_of_whole(&long, &limits).is_none());
        }
        assert!(Packet::decode_whole(Bytes::from_static(b"\x00\x00"), &limits).is_err());
    }

    #[test]
    fn encode_and_into_packet_agree() {
        let mut f = StreamFrame::client_header(
            3,
            "Echo",
            StreamProtocol::Protobuf,
            "Svc",
            [("k".to_owned(), "v".to_owned())],
            Some(1500),
        );
        f.headers
            .push_int(int_key::FRAME_TYPE, Bytes::from_static(b"9"));
        let via_encode = packet_of(&f);
        let via_from = Packet::from(f.clone());
        assert_eq!(via_encode, via_from);
        assert_eq!(via_encode.flags, keys::FLAGS_STREAMING);
        assert_eq!(via_encode.protocol, ProtocolId::StreamProtobuf);
        assert_eq!(via_encode.headers.get_str("isn"), Some("Svc"));
        assert_eq!(
            via_encode.headers.get_int_decimal(int_key::RPC_TIMEOUT),
            Some(1500)
        );
        // The stray key 27 in metadata is not written: the kind wins.
        let back = StreamFrame::try_from(via_encode).unwrap();
        assert_eq!(back.kind, FrameKind::Header);
        f.headers.int_kvs.pop();
        assert_eq!(back, f);
    }

    #[test]
    fn conversion_errors() {
        let ok = Packet::from(StreamFrame::close_send(1, "Echo", StreamProtocol::Thrift));
        let mut p = ok.clone();
        p.flags = 0;
        assert_eq!(
            StreamFrame::try_from(p),
            Err(FrameError::NotStreaming { flags: 0 })
        );
        let mut p = ok.clone();
        p.protocol = ProtocolId::ThriftBinary;
        assert_eq!(
            StreamFrame::try_from(p),
            Err(FrameError::NotStreamProtocol { id: 0 })
        );
        let mut p = ok.clone();
        p.headers.int_kvs.retain(|(k, _)| *k != int_key::FRAME_TYPE);
        assert_eq!(
            StreamFrame::try_from(p),
            Err(FrameError::MissingFrameType { stream_id: 1 })
        );
        for bad in [&b"6"[..], b"0", b"\x02", b"22", b""] {
            let mut p = ok.clone();
            p.headers
                .push_int(int_key::FRAME_TYPE, Bytes::copy_from_slice(bad));
            assert_eq!(
                StreamFrame::try_from(p),
                Err(FrameError::UnknownFrameType {
                    stream_id: 1,
                    value: Bytes::copy_from_slice(bad)
                })
            );
        }
        let mut p = ok.clone();
        p.seq_id = 0;
        assert_eq!(
            StreamFrame::try_from(p),
            Err(FrameError::ZeroStreamId {
                kind: FrameKind::Trailer
            })
        );
        let meta0 = Packet::from(StreamFrame::new(
            FrameKind::Meta,
            0,
            "",
            StreamProtocol::Thrift,
        ));
        assert!(StreamFrame::try_from(meta0).is_ok());
        let mut p = ok.clone();
        p.headers
            .push_int(int_key::TO_METHOD, Bytes::from_static(b"\xff"));
        assert_eq!(
            StreamFrame::try_from(p),
            Err(FrameError::MethodNotUtf8 { stream_id: 1 })
        );
        let mut p = ok;
        p.headers.int_kvs.retain(|(k, _)| *k != int_key::TO_METHOD);
        assert_eq!(StreamFrame::try_from(p).unwrap().method, "");
    }

    #[test]
    fn read_lifts_type_and_method_out_without_storing_them() {
        let limits = Limits::default();
        let mut wire = BytesMut::new();
        let open = StreamFrame::client_header(-7, "Echo", StreamProtocol::Thrift, "S", [], None);
        open.encode(&mut wire).unwrap();
        let f = StreamFrame::read(&mut wire, &limits)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(f, open);
        assert_eq!(f.method, "Echo");
        assert_eq!(
            f.headers.int_kvs.capacity(),
            0,
            "no int KV stored, none allocated"
        );
        // Other int keys are kept, after 27 and 9 were taken.
        let timed = StreamFrame::client_header(3, "Echo", StreamProtocol::Thrift, "S", [], Some(5));
        timed.encode(&mut wire).unwrap();
        let f = StreamFrame::read(&mut wire, &limits)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(f.headers.get_int_decimal(int_key::RPC_TIMEOUT), Some(5));
        assert_eq!(f, timed);

        // A well-delimited packet that is not a frame is consumed and named.
        let mut p = Packet::from(StreamFrame::close_send(9, "Echo", StreamProtocol::Thrift));
        p.headers.int_kvs.retain(|(k, _)| *k != int_key::FRAME_TYPE);
        p.encode(&mut wire).unwrap();
        let bad = StreamFrame::read(&mut wire, &limits)
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            bad,
            BadFrame {
                stream_id: 9,
                error: FrameError::MissingFrameType { stream_id: 9 }
            }
        );
        assert!(wire.is_empty());
        assert_eq!(StreamFrame::read(&mut wire, &limits), Ok(None));

        // Whole frames: the same, and a length that does not match is the connection's error.
        let mut whole = BytesMut::new();
        open.encode(&mut whole).unwrap();
        let whole = whole.freeze();
        assert_eq!(
            StreamFrame::read_whole(whole.clone(), &limits),
            Ok(Ok(open))
        );
        assert!(StreamFrame::read_whole(whole.slice(..whole.len() - 1), &limits).is_err());
    }

    #[test]
    fn plain_frames_are_seen_without_parsing() {
        let limits = Limits::default();
        let enc = |f: &StreamFrame| {
            let mut b = BytesMut::new();
            f.encode(&mut b).unwrap();
            b
        };
        let close = enc(&StreamFrame::close_send(-3, "Echo", StreamProtocol::Thrift));
        assert_eq!(
            StreamFrame::peek_plain(&close, &limits),
            Some(PlainFrame {
                stream_id: -3,
                kind: FrameKind::Trailer,
                len: close.len(),
                payload_at: close.len()
            })
        );
        let data = enc(&StreamFrame::data(
            5,
            "E",
            StreamProtocol::Protobuf,
            Bytes::from_static(b"x"),
        ));
        assert_eq!(
            StreamFrame::peek_plain(&data, &limits).map(|p| p.kind),
            Some(FrameKind::Data)
        );
        // Metadata, an incomplete frame, an unknown type: not plain (decode them fully).
        let open = enc(&StreamFrame::client_header(
            1,
            "Echo",
            StreamProtocol::Thrift,
            "S",
            [],
            None,
        ));
        assert_eq!(StreamFrame::peek_plain(&open, &limits), None);
        assert_eq!(
            StreamFrame::peek_plain(&close[..close.len() - 1], &limits),
            None
        );
        let mut p = Packet::from(StreamFrame::close_send(1, "Echo", StreamProtocol::Thrift));
        p.headers.int_kvs.retain(|(k, _)| *k != int_key::FRAME_TYPE);
        p.headers
            .push_int(int_key::FRAME_TYPE, Bytes::from_static(b"9"));
        let mut odd = BytesMut::new();
        p.encode(&mut odd).unwrap();
        assert_eq!(StreamFrame::peek_plain(&odd, &limits), None);
    }

    #[test]
    fn plain_heads_are_what_the_general_encoder_writes() {
        let general = |f: &StreamFrame, payload_len: usize| {
            let kind = [f.kind.as_ascii()];
            let extra: [(u16, &[u8]); 2] = [
                (int_key::TO_METHOD, f.method.as_bytes()),
                (int_key::FRAME_TYPE, &kind),
            ];
            let mut b = BytesMut::new();
            HeadRef {
                flags: keys::FLAGS_STREAMING,
                seq_id: f.stream_id,
                protocol: f.protocol.protocol_id().as_u8(),
                headers: &f.headers,
                extra_int_kvs: &extra,
                skip_int_keys: &[int_key::TO_METHOD, int_key::FRAME_TYPE],
            }
            .encode(payload_len, &mut b)
            .unwrap();
            b
        };
        let long = "m".repeat(PLAIN_METHOD_MAX + 1);
        for method in [
            "",
            "E",
            "Ec",
            "Ech",
            "Echo",
            "PingPong",
            "ServerStreaming",
            long.as_str(),
        ] {
            for kind in [
                FrameKind::Header,
                FrameKind::Data,
                FrameKind::Trailer,
                FrameKind::Rst,
            ] {
                for (id, protocol) in [
                    (1, StreamProtocol::Thrift),
                    (i32::MIN, StreamProtocol::Protobuf),
                ] {
                    let f = StreamFrame::new(kind, id, method.to_owned(), protocol);
                    for payload_len in [0, 7, 100_000] {
                        let mut b = BytesMut::from(&b"prefix"[..]);
                        f.encode_head(payload_len, &mut b).unwrap();
                        assert_eq!(&b[..6], b"prefix");
                        assert_eq!(b[6..], general(&f, payload_len)[..], "{kind:?} {method:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn method_names_share_their_bytes() {
        let m = MethodName::from_static("Echo");
        assert_eq!(m.as_str(), "Echo");
        assert_eq!(m, "Echo");
        assert_eq!(format!("{m} {m:?}"), "Echo \"Echo\"");
        assert_eq!(MethodName::from("Echo".to_owned()), m);
        assert_eq!(MethodName::from_utf8(Bytes::from_static(b"Echo")), Ok(m));
        assert!(MethodName::from_utf8(Bytes::from_static(b"\xff")).is_err());
        assert_eq!(MethodName::default().as_str(), "");
    }

    #[test]
    fn trailer_and_rst_helpers() {
        let biz = BizStatus {
            code: 7,
            message: "m".into(),
            extra: None,
        };
        let exc = ApplicationException::new(6, "biz error: boom");
        let t = StreamFrame::trailer(
            9,
            "Echo",
            StreamProtocol::Thrift,
            [("t".to_owned(), "1".to_owned())],
            Some(&biz),
            Some(&exc),
        )
        .unwrap();
        assert_eq!(t.headers.get_str("t"), Some("1"));
        assert_eq!(BizStatus::from_headers(&t.headers), Ok(Some(biz)));
        let (h, e) = decode_exception_message(&t.payload).unwrap();
        assert_eq!((h.name.as_str(), h.seq_id, e), ("Echo", 9, exc));

        let reason = ApplicationException::new(12015, "timeout");
        let r = StreamFrame::rst(9, "Echo", StreamProtocol::Thrift, Some("A,B"), &reason).unwrap();
        assert_eq!(r.kind, FrameKind::Rst);
        assert_eq!(r.headers.get_str("ttscp"), Some("A,B"));
        assert_eq!(decode_exception_message(&r.payload).unwrap().1, reason);
    }

    #[test]
    fn encode_begin_patches_length() {
        let f = StreamFrame::data(5, "M", StreamProtocol::Thrift, Bytes::from_static(b"\x00"));
        let mut whole = BytesMut::new();
        f.encode(&mut whole).unwrap();
        let mut b = BytesMut::new();
        let start = f.encode_begin(&mut b).unwrap();
        b.extend_from_slice(b"\x00");
        start.finish(&mut b).unwrap();
        assert_eq!(b, whole);
    }
}
