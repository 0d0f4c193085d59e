//! The core of the RPC framework: typed streams in four modes, [`Status`], [`Metadata`],
//! codecs, per-message middleware, the [`Server`] and [`Client`] cores, and the raw transport
//! traits every transport crate implements.
//!
//! # Layout
//!
//! * [`status`], [`metadata`], [`context`] — the values every call carries.
//! * [`codec`] — [`ProstCodec`] and [`ThriftCodec`], encoding straight into the transport's
//!   buffer.
//! * [`transport`] — what a transport author needs, and only there: the raw stream traits
//!   ([`transport::ClientStreamRaw`], [`transport::ServerStreamRaw`],
//!   [`transport::ClientTransport`], [`transport::Connect`]) a transport implements, and
//!   [`transport::ServerExt`], how its server side hands streams to a [`Server`].
//! * [`client`] / [`server`] — typed handles for unary, client streaming, server streaming
//!   and bidi, with the semantics of DESIGN §3 (EOF as `Ok(None)`, idempotent `close_send`,
//!   cancel by drop, deadlines over the whole stream).
//! * [`middleware`] — send/recv chains on every message; call middleware are tower layers.
//! * [`address`] — [`Address`] (`tcp://`, `unix://`, `shm://`), parsed without touching the
//!   network.
//! * [`limits`] — [`ServerLimits`]: what a peer can make a server hold.
//! * [`events`] — stream event hooks: an observer of every stream's start, messages, header
//!   and end, on both sides.
//! * [`observe`] — a tracing span per call on both sides, W3C trace context in metadata,
//!   metrics through the `metrics` facade (feature `metrics`).
//! * [`cancel`] — cascading cancel (a handler's client calls end with its call, the cancel
//!   path travelling with them), stream and recv timeouts.
//!
//! The rest is optional, each a cargo feature (all on by default, so `rpc-core = "..."` gets
//! everything; a crate that needs only the call model says `default-features = false`):
//!
//! | feature | what | pulls in |
//! |---|---|---|
//! | `inproc` | [`inproc`]: an in-process transport | nothing |
//! | `testing` | [`testing`]: a test kit — a typed client wired to a service in process, a scripted peer for streaming handlers, status and metadata assertions | `inproc` |
//! | `net` | `net`: the socket every socket transport connects and serves with (TCP, Unix, keepalive); `serve`: one `serve::Listener` runs any set of protocols (TTHeader, gRPC, ...) with connection limits and graceful shutdown | socket2 |
//! | `tls` | `net::tls`: TLS and mTLS for every `net` client and listener | rustls, webpki |
//! | `discovery` | `discovery`: resolvers (static, DNS; etcd in `rpc-registry-etcd`) and registrars | nothing |
//! | `resilience` | `resilience`: retry (budgeted, idempotency-aware), circuit breaker, server load shedding (timeouts are the call deadline, in the core) | tower's `retry` |
//! | `balance` | `balance`: a transport that picks an instance per call or stream (round robin, power of two choices, consistent hashing) and ejects failing ones | `discovery`, `resilience` |
//! | `metrics` | per-call metrics in [`observe`] through the `metrics` facade | metrics |
//!
//! # Example
//!
//! A hand-written service (generated code does the same through `rpc_core::codegen`):
//!
//! ```
//! use rpc_core::{inproc::InProcTransport, CallOptions, Client, MethodDesc, Mode, PayloadKind,
//!                ProstCodec, Server, IncomingCall, Service, ServiceDesc, Status};
//! use rpc_core::transport::BoxFuture;
//!
//! static METHODS: [MethodDesc; 1] = [MethodDesc {
//!     package: "demo", service: "Upper", full_service: "demo.Upper", name: "Call",
//!     path: "/demo.Upper/Call", mode: Mode::Unary, payload: PayloadKind::Protobuf,
//! }];
//! static DESC: ServiceDesc = ServiceDesc {
//!     package: "demo", name: "Upper", full_name: "demo.Upper", methods: &METHODS,
//! };
//!
//! struct Upper;
//! impl Service for Upper {
//!     fn descriptor(&self) -> &'static ServiceDesc { &DESC }
//!     fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
//!         Box::pin(call.unary::<ProstCodec, String, String, _, _>(|_ctx, s| async move {
//!             Ok(s.to_uppercase())
//!         }))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Status> {
//! let server = Server::builder().add_service(Upper).build();
//! let client = Client::new(InProcTransport::new(server));
//! let res = client
//!     .unary::<ProstCodec, String, String>(&METHODS[0], "hi".to_owned(), CallOptions::new())
//!     .await?;
//! assert_eq!(res.into_inner(), "HI");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod address;
#[cfg(feature = "balance")]
pub mod balance;
pub mod cancel;
pub mod client;
pub mod codec;
#[doc(hidden)]
pub mod codegen;
pub mod context;
#[cfg(feature = "discovery")]
pub mod discovery;
#[cfg(feature = "error-details")]
pub mod error_details;
pub mod events;
pub mod exception;
pub mod generic;
#[cfg(feature = "inproc")]
pub mod inproc;
pub mod intercept;
mod interned;
mod keepalive;
pub mod limits;
pub mod metadata;
pub mod middleware;
#[cfg(feature = "net")]
pub mod net;
pub mod observe;
mod peer;
#[cfg(feature = "resilience")]
pub mod resilience;
mod route;
#[cfg(feature = "net")]
pub mod serve;
pub mod server;
pub mod status;
mod stream;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(all(
    test,
    feature = "inproc",
    any(feature = "balance", feature = "resilience")
))]
mod testsvc;
pub mod transport;
pub mod unary;

pub use address::Address;
pub use cancel::{CancelKind, Cancellation, Parent, TimeoutConfig};
pub use client::{
    BidiStreamingClient, Client, ClientBuilder, ClientReceiver, ClientSender,
    ClientStreamingClient, ServerStreamingClient, WithMetadata,
};
pub use codec::{Codec, ProstCodec, ThriftCodec};
pub use context::{CallContext, CallOptions, MethodDesc, Mode, PayloadKind, Peer, ServiceDesc};
pub use exception::MethodError;
pub use limits::ServerLimits;
pub use metadata::{Metadata, MetadataValue};
pub use middleware::{RecvMiddleware, SendMiddleware};
pub use server::{
    BidiStreamingServer, ClientStreamingServer, IncomingCall, Server, ServerBuilder, ServerContext,
    ServerStreamingServer, Service,
};
pub use status::{BizStatus, Code, Error, Status};

/// Includes code generated by `rpc-codegen` from `build.rs` into the current module:
/// `rpc_core::include_generated!("echo");` expands to `include!(concat!(env!("OUT_DIR"), "/echo.rs"))`.
#[macro_export]
macro_rules! include_generated {
    ($name:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $name, ".rs"));
    };
}
