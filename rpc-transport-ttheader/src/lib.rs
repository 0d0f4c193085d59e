//! TTHeader (Kitex-compatible) framing and TTHeader Streaming.
//!
//! # Layout
//!
//! - [`proto`]: the sans-IO core. Packet and frame codecs, the Thrift message envelope and
//!   `TApplicationException`, the per-stream state machine, code mapping. Pure and synchronous:
//!   it never touches a socket or a clock, so it is tested (and fuzzable) on bytes alone.
//! - The tokio driver: [`TtHeaderProtocol`] serves an `rpc_core::Server` as one protocol of
//!   `rpc_core::serve::Listener` (one task pair per connection; unary and streaming told apart
//!   by the first bytes), and [`TtHeaderClient`] is an `rpc_core::transport::ClientTransport` with
//!   connection pools to an `rpc_core::Address`. Writes are batched: streams encode
//!   frames into one buffer per connection and a writer task sends everything queued with one
//!   syscall. See the stream connection docs for the memory bounds and their trade-off.
//!
//! # Errors on the wire
//!
//! An error status travels as Kitex sends one: a `TApplicationException` (unary) or a
//! trailer exception (streaming) with Kitex's code, plus the [`RPC_CODE_KEY`] string key so two
//! of our peers keep the exact gRPC code; a business status as `biz-status`, `biz-message`,
//! `biz-extra`. `Status::details` (gRPC's `grpc-status-details-bin`, the typed
//! `rpc_core::error_details`) is **not carried**: Kitex sends gRPC status details only over
//! gRPC, and its TTHeader codecs have no key for them, so the client gets the code and message
//! without details. Use a business status's `extra` for structured errors a TTHeader client
//! must see.
//!
//! # Example
//!
//! Decode a TTHeader Streaming Data frame and feed it to a server-side stream:
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use rpc_transport_ttheader::proto::{
//!     FrameKind, Limits, RecvEvent, Role, StreamFrame, StreamProtocol, StreamState,
//! };
//!
//! let mut wire = BytesMut::new();
//! StreamFrame::client_header(1, "Echo", StreamProtocol::Thrift, "TestService", [], None)
//!     .encode(&mut wire)?;
//! StreamFrame::data(1, "Echo", StreamProtocol::Thrift, Bytes::from_static(b"\x00"))
//!     .encode(&mut wire)?;
//!
//! let mut stream = StreamState::new(Role::Server, 1);
//! let limits = Limits::default();
//! let open = StreamFrame::decode(&mut wire, &limits)?.expect("a whole frame");
//! assert_eq!(open.kind, FrameKind::Header);
//! assert!(matches!(stream.recv(open)?, RecvEvent::Headers(h) if h.get_str("isn") == Some("TestService")));
//! let data = StreamFrame::decode(&mut wire, &limits)?.expect("a whole frame");
//! assert_eq!(stream.recv(data)?, RecvEvent::Data(Bytes::from_static(b"\x00")));
//! assert_eq!(StreamFrame::decode(&mut wire, &limits)?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod common;
mod driver;
mod mapping;
pub mod proto;
pub mod session;

pub use driver::client::{ClientBuilder, TtHeaderClient};
pub use driver::config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_UNARY_CONNECTIONS, DEFAULT_POOL_SIZE,
    DEFAULT_UNARY_IDLE_TIMEOUT,
};
pub use driver::server::TtHeaderProtocol;
pub use driver::unary::{ConnectionMode, Framing};
pub use mapping::{biz_status_error, RPC_CODE_KEY};
pub use session::REFUSED_STREAM_CODE;
pub use session::{
    Limits, Stats, DEFAULT_CLIENT_IDLE_TIMEOUT, DEFAULT_CONN_RECV_BUFFER, DEFAULT_CONN_RESERVE,
    DEFAULT_STREAM_RECV_BUFFER, DEFAULT_WRITE_BUFFER,
};
