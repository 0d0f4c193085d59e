//! The sans-IO protocol core: pure, synchronous encoders, decoders and state machines. No
//! sockets, no clocks, no async; bytes in, frames and events out.
//!
//! - [`header`]: the TTHeader packet ([`Packet`], [`Headers`], [`Limits`]).
//! - [`frame`]: TTHeader Streaming frames ([`StreamFrame`], [`FrameKind`]).
//! - [`stream`]: the per-stream state machine ([`StreamState`], [`RecvEvent`]).
//! - [`thrift_msg`]: Thrift-binary message envelope, payload sniffing, `TApplicationException`.
//! - [`status`]: Kitex ↔ gRPC code mapping and business status.
//! - [`mod@detect`]: TTHeader / TTHeader Streaming detection on a fresh connection (other
//!   protocols, gRPC among them, claim theirs through the serving layer).
//! - [`plain`]: plain Thrift (framed or buffered, no TTHeader) on the same port: detection and
//!   message delimiting.
//! - [`keys`]: wire constants.
//! - [`error`]: typed errors by scope.

pub mod detect;
pub mod error;
pub mod frame;
pub mod header;
pub mod keys;
mod kinds;
pub mod plain;
pub mod status;
pub mod str_kvs;
pub mod stream;
pub mod thrift_msg;

pub use detect::{detect, Detection};
pub use error::{
    EncodeError, Field, FrameError, Initiator, InvalidBizStatus, StreamError, ThriftError,
};
pub use frame::{
    BadFrame, DataFrame, FrameKind, MethodName, PlainFrame, StreamFrame, StreamProtocol,
};
pub use header::{Headers, Limits, Packet, PacketStart, ProtocolId, DEFAULT_MAX_FRAME_SIZE};
pub use plain::{detect_plain, PlainDecoder, PlainError, PlainFraming};
pub use status::{grpc_to_kitex_code, kitex_code_to_grpc, BizStatus};
pub use str_kvs::{StrKvs, StrValue};
pub use stream::{FinishCause, RecvEvent, Role, StreamState};
pub use thrift_msg::{
    encode_error_proto, ApplicationException, MessageHeader, MessageHeaderRef, MessageType,
    PayloadForm,
};
