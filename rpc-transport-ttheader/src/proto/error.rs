//! Typed errors of the sans-IO core, split by scope.
//!
//! - [`FrameError`]: the byte stream cannot be parsed as TTHeader. Connection scope: framing is
//!   lost or the peer speaks something else, so the driver closes the connection.
//! - [`StreamError`]: a well-formed frame broke the per-stream rules, or the local side tried an
//!   illegal operation. Stream scope: only that stream ends; [`StreamError::initiator`] says who
//!   caused it and [`StreamError::kitex_code`] gives the code to put on the wire.
//! - [`EncodeError`]: a value cannot be represented on the wire (a field over its size limit).
//! - [`ThriftError`]: a Thrift-binary message header or `TApplicationException` is malformed.
//! - [`InvalidBizStatus`]: the `biz-status` string key is not a decimal i32.

use bytes::Bytes;
use thiserror::Error;

use super::keys::kitex_code;
use super::kinds::{FrameKind, Role};

/// The wire field an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The fixed part of the variable header (PROTOCOL ID, NUM TRANSFORMS).
    Preamble,
    /// The transform id list.
    Transforms,
    /// The ACL token block (info id 0x11).
    AclToken,
    /// The entry count of a string KV block (info id 0x01).
    StrKvCount,
    /// A key in a string KV block.
    StrKey,
    /// A value in a string KV block.
    StrValue,
    /// The entry count of an int KV block (info id 0x10).
    IntKvCount,
    /// A key in an int KV block.
    IntKey,
    /// A value in an int KV block.
    IntValue,
    /// The payload after the variable header.
    Payload,
}

/// The TTHeader byte stream is malformed. Connection scope: the driver must close the connection.
///
/// Header offsets count from the PROTOCOL ID byte (the first byte of the variable header).
/// When the error is reported after the frame was delimited (anything but `TooShort`, `TooLarge`,
/// `BadMagic`, `ZeroHeaderSize` and `HeaderSizeOverflow`), the frame's bytes have already been
/// consumed from the input buffer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame handed over whole (a shared-memory transport's descriptor) whose LENGTH does
    /// not match the bytes it came in.
    #[error("frame LENGTH says {total} bytes but the frame holds {len}")]
    LengthMismatch {
        /// LENGTH + 4.
        total: usize,
        /// The bytes delivered.
        len: usize,
    },
    /// LENGTH exceeds the configured maximum frame size; reported before any allocation.
    #[error("frame LENGTH {length} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The LENGTH field (bytes after the field itself).
        length: u32,
        /// The configured limit ([`Limits::max_frame_size`](super::header::Limits)).
        max: usize,
    },
    /// LENGTH is too small to hold the fixed fields and a one-word header.
    #[error("frame LENGTH {length} is below the minimum of {min}")]
    TooShort {
        /// The LENGTH field.
        length: u32,
        /// The smallest valid LENGTH.
        min: u32,
    },
    /// Bytes 4..6 are not the TTHeader magic `0x1000`.
    #[error("bad magic 0x{magic:04x}, expected 0x1000")]
    BadMagic {
        /// The two bytes found.
        magic: u16,
    },
    /// HEADER SIZE is 0 words; the spec requires at least one (PROTOCOL ID + NUM TRANSFORMS).
    #[error("HEADER SIZE is 0 words, must be at least 1")]
    ZeroHeaderSize,
    /// HEADER SIZE × 4 is larger than what LENGTH leaves after the fixed fields.
    #[error("header of {header_bytes} bytes does not fit in the {available} bytes left by LENGTH")]
    HeaderSizeOverflow {
        /// HEADER SIZE × 4.
        header_bytes: usize,
        /// LENGTH minus the fixed fields (magic, flags, sequence id, header size).
        available: usize,
    },
    /// PROTOCOL ID is not one we accept (0x02 Thrift compact is rejected on purpose).
    #[error("unsupported PROTOCOL ID 0x{id:02x}")]
    UnsupportedProtocol {
        /// The PROTOCOL ID byte.
        id: u8,
    },
    /// A field runs past the end of the variable header.
    #[error("truncated {field:?} at header offset {offset}: need {need} bytes, {available} left")]
    Truncated {
        /// What was being read.
        field: Field,
        /// Header offset where the read started.
        offset: usize,
        /// Bytes needed.
        need: usize,
        /// Bytes left in the variable header.
        available: usize,
    },
    /// An info block id other than 0x00, 0x01, 0x10, 0x11.
    #[error("unknown info block id 0x{id:02x} at header offset {offset}")]
    UnknownInfoId {
        /// The id byte.
        id: u8,
        /// Its header offset.
        offset: usize,
    },
    /// A string KV key or value is not UTF-8 (string KVs are exposed as `String`).
    #[error("{field:?} at header offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which part.
        field: Field,
        /// Header offset of the str16 length prefix.
        offset: usize,
    },
    /// A streaming frame without the FLAGS bit 0x0002.
    #[error("FLAGS 0x{flags:04x} lack the streaming bit 0x0002")]
    NotStreaming {
        /// The FLAGS field.
        flags: u16,
    },
    /// A streaming frame whose PROTOCOL ID is not 0x10 or 0x11.
    #[error("PROTOCOL ID 0x{id:02x} is not a streaming protocol (0x10 or 0x11)")]
    NotStreamProtocol {
        /// The PROTOCOL ID byte.
        id: u8,
    },
    /// A streaming frame without int key 27 (FRAME_TYPE).
    #[error("stream {stream_id}: missing FRAME_TYPE (int key 27)")]
    MissingFrameType {
        /// The SEQUENCE ID field.
        stream_id: i32,
    },
    /// Int key 27 is not one of the ASCII digits "1".."5".
    #[error("stream {stream_id}: unknown FRAME_TYPE {value:?}")]
    UnknownFrameType {
        /// The SEQUENCE ID field.
        stream_id: i32,
        /// The raw value of int key 27.
        value: Bytes,
    },
    /// Int key 9 (TO_METHOD) of a streaming frame is not UTF-8.
    #[error("stream {stream_id}: method name (int key 9) is not valid UTF-8")]
    MethodNotUtf8 {
        /// The SEQUENCE ID field.
        stream_id: i32,
    },
    /// A non-Meta streaming frame with stream id 0 (stream ids are non-zero).
    #[error("{kind:?} frame with stream id 0")]
    ZeroStreamId {
        /// The frame type.
        kind: FrameKind,
    },
}

/// A value cannot be encoded within the wire format's limits. Nothing usable was written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The padded variable header exceeds 65535 words.
    #[error("variable header of {bytes} bytes exceeds 65535 words")]
    HeaderTooLarge {
        /// Padded size in bytes.
        bytes: usize,
    },
    /// A str16 is longer than 65535 bytes.
    #[error("{field:?} of {len} bytes exceeds the str16 limit of 65535")]
    Str16TooLong {
        /// Which part.
        field: Field,
        /// Its length.
        len: usize,
    },
    /// A KV block has more than 65535 entries.
    #[error("{field:?} block has {count} entries, more than 65535")]
    TooManyEntries {
        /// `StrKvCount` or `IntKvCount`.
        field: Field,
        /// The entry count.
        count: usize,
    },
    /// The frame does not fit the u32 LENGTH field.
    #[error("frame of {len} bytes after LENGTH does not fit in u32")]
    FrameTooLarge {
        /// Bytes after the LENGTH field.
        len: usize,
    },
    /// A Thrift string or binary is longer than `i32::MAX` bytes.
    #[error("thrift string of {len} bytes exceeds i32::MAX")]
    ThriftStringTooLong {
        /// Its length.
        len: usize,
    },
}

/// A Thrift-binary message header or `TApplicationException` struct is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ThriftError {
    /// The input ends early.
    #[error("truncated thrift data at offset {offset}: need {need} bytes, {available} left")]
    Truncated {
        /// Offset of the read.
        offset: usize,
        /// Bytes needed.
        need: usize,
        /// Bytes left.
        available: usize,
    },
    /// The first word is not `0x8001_00xx` (we read and write strict Thrift binary only).
    #[error("not a strict thrift-binary message: version word 0x{word:08x}")]
    BadVersion {
        /// The first four bytes.
        word: u32,
    },
    /// Message type outside CALL 1, REPLY 2, EXCEPTION 3, ONEWAY 4.
    #[error("unknown thrift message type {ty}")]
    UnknownMessageType {
        /// The type byte.
        ty: u8,
    },
    /// A message of another type where an EXCEPTION was required.
    #[error("expected an EXCEPTION message, got type {ty}")]
    NotException {
        /// The type byte.
        ty: u8,
    },
    /// A negative string, binary or container length.
    #[error("negative thrift length {len} at offset {offset}")]
    NegativeLength {
        /// The length read.
        len: i32,
        /// Its offset.
        offset: usize,
    },
    /// A method name is not UTF-8.
    #[error("thrift method name at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the string's length prefix.
        offset: usize,
    },
    /// A field or element type id that Thrift binary does not define.
    #[error("invalid thrift type id {ty} at offset {offset}")]
    InvalidType {
        /// The type id.
        ty: u8,
        /// Offset where a value of that type would start.
        offset: usize,
    },
    /// Nested structs or containers deeper than the skip limit.
    #[error("thrift nesting deeper than {limit}")]
    DepthLimit {
        /// The limit.
        limit: usize,
    },
    /// The length prefix of a framed payload disagrees with the bytes that follow.
    #[error("framed payload declares {declared} bytes but carries {actual}")]
    FramedLength {
        /// The u32 prefix.
        declared: u32,
        /// Bytes after the prefix.
        actual: usize,
    },
    /// The payload is too short to tell framed from unframed, or matches neither.
    #[error("payload is neither framed nor unframed strict thrift-binary nor Kitex protobuf")]
    UnknownPayloadForm,
}

/// The `biz-status` string key is not a decimal i32 (Kitex: 12003 illegal biz error).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("biz-status {value:?} is not a decimal i32")]
pub struct InvalidBizStatus {
    /// The value found.
    pub value: String,
}

/// Who caused a stream error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// Our own code tried an illegal operation; nothing was sent.
    Local,
    /// The peer sent a frame that breaks the stream rules.
    Remote,
}

/// A stream-scope protocol violation. Only the stream ends; the connection stays up.
///
/// The state machine does not change state on error, except for a malformed Trailer or Rst
/// payload, which still ends the stream (see [`StreamState::recv`](super::stream::StreamState)).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer sent a second Header frame.
    #[error("stream {stream_id}: unexpected second Header frame from the peer")]
    UnexpectedHeader {
        /// The stream.
        stream_id: i32,
    },
    /// The peer sent Data before its Header.
    #[error("stream {stream_id}: Data frame before the Header frame")]
    DataBeforeHeader {
        /// The stream.
        stream_id: i32,
    },
    /// A client sent its Trailer before its Header.
    #[error("stream {stream_id}: Trailer frame before the Header frame")]
    TrailerBeforeHeader {
        /// The stream.
        stream_id: i32,
    },
    /// The peer sent a frame after half-closing its side.
    #[error("stream {stream_id}: {kind:?} frame after the peer's Trailer")]
    FrameAfterClose {
        /// The stream.
        stream_id: i32,
        /// The frame type.
        kind: FrameKind,
    },
    /// A Trailer or Rst payload is not a valid EXCEPTION message; the stream has ended anyway.
    #[error("stream {stream_id}: malformed {kind:?} payload: {source}")]
    MalformedPayload {
        /// The stream.
        stream_id: i32,
        /// The frame type.
        kind: FrameKind,
        /// What was wrong.
        #[source]
        source: ThriftError,
    },
    /// Local: a second Header (e.g. setting headers after they were sent).
    #[error("stream {stream_id}: Header already sent")]
    HeaderAlreadySent {
        /// The stream.
        stream_id: i32,
    },
    /// Local: a frame that must follow our Header, sent before it.
    #[error("stream {stream_id}: cannot send {kind:?} before the Header")]
    HeaderNotSent {
        /// The stream.
        stream_id: i32,
        /// The frame type.
        kind: FrameKind,
    },
    /// Local: Data or Trailer after our Trailer (send after CloseSend).
    #[error("stream {stream_id}: cannot send {kind:?} after CloseSend")]
    SendAfterClose {
        /// The stream.
        stream_id: i32,
        /// The frame type.
        kind: FrameKind,
    },
    /// Local: anything after the stream finished.
    #[error("stream {stream_id}: cannot send {kind:?}, the stream has finished")]
    StreamFinished {
        /// The stream.
        stream_id: i32,
        /// The frame type.
        kind: FrameKind,
    },
    /// Local: a frame type this role never sends (a server Rst).
    #[error("stream {stream_id}: a {role:?} never sends {kind:?}")]
    NotAllowed {
        /// The stream.
        stream_id: i32,
        /// Our role.
        role: Role,
        /// The frame type.
        kind: FrameKind,
    },
}

impl StreamError {
    /// Who caused the error.
    pub fn initiator(&self) -> Initiator {
        match self {
            StreamError::UnexpectedHeader { .. }
            | StreamError::DataBeforeHeader { .. }
            | StreamError::TrailerBeforeHeader { .. }
            | StreamError::FrameAfterClose { .. }
            | StreamError::MalformedPayload { .. } => Initiator::Remote,
            StreamError::HeaderAlreadySent { .. }
            | StreamError::HeaderNotSent { .. }
            | StreamError::SendAfterClose { .. }
            | StreamError::StreamFinished { .. }
            | StreamError::NotAllowed { .. } => Initiator::Local,
        }
    }

    /// The stream the error is about.
    pub fn stream_id(&self) -> i32 {
        match self {
            StreamError::UnexpectedHeader { stream_id }
            | StreamError::DataBeforeHeader { stream_id }
            | StreamError::TrailerBeforeHeader { stream_id }
            | StreamError::FrameAfterClose { stream_id, .. }
            | StreamError::MalformedPayload { stream_id, .. }
            | StreamError::HeaderAlreadySent { stream_id }
            | StreamError::HeaderNotSent { stream_id, .. }
            | StreamError::SendAfterClose { stream_id, .. }
            | StreamError::StreamFinished { stream_id, .. }
            | StreamError::NotAllowed { stream_id, .. } => *stream_id,
        }
    }

    /// The Kitex error code describing this error: 12002 unexpected header, 12004 illegal frame
    /// for other peer violations, 12005 illegal operation for local misuse.
    pub fn kitex_code(&self) -> i32 {
        match self {
            StreamError::UnexpectedHeader { .. } => kitex_code::UNEXPECTED_HEADER,
            StreamError::DataBeforeHeader { .. }
            | StreamError::TrailerBeforeHeader { .. }
            | StreamError::FrameAfterClose { .. }
            | StreamError::MalformedPayload { .. } => kitex_code::ILLEGAL_FRAME,
            StreamError::HeaderAlreadySent { .. }
            | StreamError::HeaderNotSent { .. }
            | StreamError::SendAfterClose { .. }
            | StreamError::StreamFinished { .. }
            | StreamError::NotAllowed { .. } => kitex_code::ILLEGAL_OPERATION,
        }
    }
}
