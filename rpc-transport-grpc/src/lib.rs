//! gRPC over HTTP/2 (with `h2`): protobuf (`application/grpc`) and thrift
//! (`application/grpc+thrift`, Kitex-compatible) payloads over TCP and Unix sockets, on the
//! same `rpc_core` seam as every other transport.
//!
//! # Server
//!
//! [`GrpcProtocol`] is one protocol of `rpc_core::serve::Listener`, told apart from the others
//! by the HTTP/2 client preface, so one port serves gRPC next to TTHeader:
//!
//! ```no_run
//! # async fn run(server: rpc_core::Server, ttheader: impl rpc_core::serve::Protocol) -> std::io::Result<()> {
//! use rpc_core::serve::Listener;
//! use rpc_transport_grpc::GrpcProtocol;
//! let running = Listener::new(server)
//!     .protocol(ttheader) // e.g. rpc_transport_ttheader::TtHeaderProtocol::default()
//!     .protocol(GrpcProtocol::default())
//!     .bind("tcp://0.0.0.0:8888".parse().expect("an address"))
//!     .await?
//!     .start();
//! running.shutdown(std::time::Duration::from_secs(5)).await; // GOAWAY, drain, close
//! # Ok(()) }
//! ```
//!
//! # Client
//!
//! [`GrpcClient`] implements `rpc_core::transport::Connect`:
//! `TestServiceClient::connect::<GrpcClient>("tcp://127.0.0.1:50051")`, or
//! [`GrpcClient::with_config`] with a [`GrpcClientConfig`] (connections per endpoint, windows,
//! receive limit, keepalive, default compression, user-agent).
//!
//! # Compression
//!
//! gzip and zstd (the `zstd` cargo feature, on by default; without it only gzip), both ways:
//! `grpc-encoding`, `grpc-accept-encoding` (we advertise every algorithm we decode) and the
//! per-message flag. A client call compresses its requests when its context's extensions hold
//! a [`Compression`] such as [`Compression::Zstd`] (or a [`MessageCompression`] handle, to
//! switch per message); a handler finds the call's [`MessageCompression`] with
//! `ctx.extension::<MessageCompression>()` to learn how the requests arrived and what the
//! client accepts, and to choose compression of its responses, per call or per message. The
//! server answers only in an algorithm the client's `grpc-accept-encoding` names (see
//! [`MessageCompression`] for the choice). A compressed message without `grpc-encoding` is
//! `INTERNAL`; an unsupported `grpc-encoding` is `UNIMPLEMENTED`, answered with our
//! `grpc-accept-encoding`. Decompression is capped by the receive limit: a message that
//! inflates past it ends the stream with `RESOURCE_EXHAUSTED`, and the output buffer never
//! grows past the limit (a zip bomb costs at most the limit); see [`codec::decompress`].
//!
//! ```no_run
//! # async fn run(client: rpc_core::Client) -> Result<(), rpc_core::Status> {
//! use rpc_core::CallOptions;
//! use rpc_transport_grpc::Compression;
//! // One call's requests in zstd (a generated client's `*_with` methods take the options):
//! # #[cfg(feature = "zstd")]
//! let opts = CallOptions::new().extension(Compression::Zstd);
//! # #[cfg(not(feature = "zstd"))]
//! # let opts = CallOptions::new().extension(Compression::Gzip);
//! # let _ = (client, opts); Ok(()) }
//! ```
//!
//! # Wire details
//!
//! - Path `/<package>.<Service>/<Method>`; `/<Service>/<Method>` is accepted too.
//! - `grpc-timeout` is sent from the call's deadline and enforced by the server for the whole
//!   stream; `grpc-message` is percent-encoded both ways; `grpc-status-details-bin` carries
//!   `Status::details`.
//! - Metadata: ASCII values as they are, `-bin` keys base64 (sent unpadded, accepted padded
//!   or not); reserved headers (pseudo-headers, `grpc-*`, `content-type`, `te`, connection
//!   headers) never appear in user metadata and are dropped from metadata given to send.
//! - Errors before any message go as Trailers-Only (one HEADERS frame with END_STREAM).
//! - A response with an HTTP status other than 200 gets the code of grpc's
//!   `http-grpc-status-mapping.md`; `RST_STREAM` reasons map as `PROTOCOL-HTTP2.md` says.
//! - Messages above the receive limit (default 4 MiB) end the stream with
//!   `RESOURCE_EXHAUSTED` before their body is buffered.
//! - Flow control is backpressure: receive capacity is released only as the application
//!   reads messages, so a stream that is not read holds at most one window plus one message,
//!   while other streams of the connection keep flowing; senders wait for window.
//!
//! # Memory bound
//!
//! What a peer can make the server hold is charged to the server-wide byte budget
//! (`ServerLimits::max_buffered_bytes`), per connection, by watching every frame go through
//! the socket (h2 does not expose its buffers): partial frames being read, DATA h2 holds for a
//! handler that has not taken it, partial messages being assembled, encoded replies not yet
//! handed to h2 and DATA h2 has not yet written, and each open stream (a fixed 8 KiB for h2's,
//! the server's and the handler's state, plus its request header list; charged from the
//! moment its HEADERS frame is read, before h2 decodes it). Each connection may hold 32 KiB
//! whatever the budget; beyond that, while the budget is used up, the server stops reading
//! the connection (TCP pushes back; what was read past the frame that used the budget up is
//! kept from h2 until it may take more), refuses its new streams with `REFUSED_STREAM`
//! (the client sees `UNAVAILABLE`, retryable), and holds its handlers' sends — nothing is
//! dropped, and a connection that holds little (a well-behaved client's) is served on.
//!
//! The bound, for RSS over the process's baseline:
//!
//! > RSS over baseline ≤ budget + F × connections, F = 96 KiB
//!
//! F is what a connection costs outside the budget: its h2 state and buffers (an idle
//! connection measures 24 KiB), its 32 KiB reserve, h2's write buffer, and the unused room
//! of the buffer a round's writes are gathered in (up to 16 KiB of its 32 KiB while the
//! socket does not take them; the DATA in it stays charged until written). A message being
//! assembled holds the bytes that arrived up to 64 KiB ([`codec::EAGER_ASSEMBLY`]), then its
//! whole checked length at once, charged as it is reserved: no doubling through every size
//! below it, whose freed buffers an allocator would keep resident. RSS also depends on the
//! allocator returning what is freed: glibc's default raises its mmap threshold to the
//! largest block freed, so freed message buffers stay in its heap. With a fixed
//! `MALLOC_MMAP_THRESHOLD_` (or jemalloc, mimalloc) the attacks measured within the bound;
//! with glibc's defaults, up to 7 % above it (unread replies on 200 connections).
//! The bound holds while the attack holds its connections; when hundreds of them close at
//! once, the blocked handlers of the others refill the freed budget while the allocator still
//! holds what was freed, and RSS has been measured up to 6.5 MB above the bound for a moment
//! (unread replies on 200 connections; it falls back once the churn ends).
//! `examples/tests/memory_bound_grpc.rs` runs the server with the fixed threshold against one
//! attack per kind, each on many connections: unread request streams, unread replies, partial
//! 4 MiB messages, idle streams, PING/SETTINGS/CONTINUATION floods (closed with
//! `GOAWAY(ENHANCE_YOUR_CALM)`, see "Flood defence"), idle connections.
//!
//! # Flood defence
//!
//! HTTP/2 lets a client make the server work with frames that carry no call: PINGs and
//! SETTINGS the server must acknowledge, WINDOW_UPDATEs, empty DATA, PRIORITY, frames of
//! unknown type (CVE-2019-9512, -9515, -9518). The server counts, per connection, the frames
//! no call or response accounts for: every SETTINGS, PRIORITY, CONTINUATION and unknown frame,
//! a PING unless the server wrote HEADERS or DATA since the previous one (grpc-go's rule, so
//! BDP probes and pings during calls are free), WINDOW_UPDATEs beyond two per DATA frame the
//! server wrote, and DATA frames with neither data nor `END_STREAM`. More than
//! [`DEFAULT_MAX_CONTROL_FRAMES`] (1,000) of them within [`DEFAULT_CONTROL_WINDOW`] (10 s)
//! and the server stops reading the connection, sends `GOAWAY(ENHANCE_YOUR_CALM)`, and closes
//! it once the client has had [`CALM_CLOSE_TIMEOUT`] (2 s) to read it, reading and dropping
//! what the client still sends meanwhile so the close is not a reset that discards the
//! GOAWAY. Real clients send a handful per connection plus keepalive PINGs (grpc-go and
//! C-core: at most one per 10 s by default); set the limit with
//! [`GrpcServerConfig::control_frames`]. h2 itself ends a connection with
//! `ENHANCE_YOUR_CALM` for a header block split over more CONTINUATION frames than the
//! header list limit needs (CVE-2024-27316) and for more than 20 streams reset before they
//! were accepted (rapid reset, CVE-2023-44487); what a connection that does not read makes the
//! server keep is charged to the byte budget (above).
//!
//! Reads are cooperative: a connection's task yields after 64 KiB or 256 frames read in one
//! turn, so a burst on one connection does not hold a worker from the others (tokio's own
//! budget counts socket reads, 128 per turn, each up to h2's 8 KiB-and-growing read buffer).
//!
//! The codecs are pure and tested on bytes in [`codec`].

#![forbid(unsafe_code)]

mod calm;
mod client;
pub mod codec;
mod compression;
mod config;
mod headers;
mod ledger;
mod server;
mod stream;

pub use client::GrpcClient;
pub use compression::{Compression, MessageCompression, SUPPORTED};
pub use config::{
    GrpcClientConfig, GrpcServerConfig, CALM_CLOSE_TIMEOUT, DEFAULT_CONNECTIONS,
    DEFAULT_CONNECTION_WINDOW, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONTROL_WINDOW,
    DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CONTROL_FRAMES, DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HEADER_LIST_SIZE, DEFAULT_MAX_RECV_MESSAGE, DEFAULT_MAX_SEND_BUFFER,
    DEFAULT_STREAM_WINDOW, USER_AGENT,
};
pub use headers::{
    append_metadata, append_status, metadata_from, status_from, status_trailer,
    status_with_trailers,
};
pub use server::{GrpcProtocol, PREFACE};

/// Locks a mutex, taking the data of one a panicking thread poisoned (every critical section
/// here leaves its data consistent at each step, so a panic elsewhere is no reason to fail).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
