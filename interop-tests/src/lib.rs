//! Interop tests of our TTHeader transport against a peer we did not write:
//! [volo-thrift](https://github.com/cloudwego/volo), CloudWeGo's Rust Thrift framework.
//!
//! ```sh
//! cargo test -p interop-tests
//! ```
//!
//! # Layout
//!
//! - [`echo`]: the volo-generated types and stubs of the echo service (`idl/echo.thrift`, a copy
//!   of the shared contract), written by `volo-build` from `build.rs`.
//! - [`volo_peer`]: a volo-thrift echo server implementing the contract of the echo service, and
//!   a volo-thrift client, each configurable for TTHeader + framed or TTHeader + unframed
//!   binary payloads.
//! - [`proxy`]: a recording TCP proxy, to see the exact bytes two peers exchange.
//! - [`wire`]: a small TTHeader reader for those bytes, independent of our transport's codec.
//! - `tests/`: the interop checks themselves; `tests/data/` holds the frames captured from
//!   volo-thrift 0.12.7 peers (copied from the shared vectors).
//!
//! The volo side is built with volo's own code generator and codecs (no default features but
//! `multiplex`), so it behaves as a volo user's service does.
//!
//! # What `tests/volo.rs` checks
//!
//! Both directions (volo client → our server, our client → volo server), TTHeader + Framed and
//! TTHeader + unframed: PingPong ok, the declared `EchoError`, an application error; the frames
//! on the wire (framing, seqids, message types); our replies byte for byte against a volo
//! server's; many sequential calls on one connection; concurrent calls (volo plain and
//! multiplex clients, our plain and mux clients); business status both ways; 1 MiB messages;
//! RPC_TIMEOUT (int key 12) both ways; `crrst` on graceful shutdown; unary calls to streaming
//! methods and compact payloads (rejected promptly).
//!
//! volo-thrift 0.12.7 behaviours a Kitex-compatible peer must tolerate, seen on the wire:
//! seqids from 0; MSG_TYPE (int key 22) as a raw byte; int key 3 with an empty value; a
//! `BizError` sent as an EXCEPTION message *plus* the `biz-*` keys (Kitex: a normal REPLY with
//! the keys); FLAGS 0 in its replies to mux (FLAGS 0x0001) calls; PROTOCOL ID 0 in front of a
//! compact payload.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use interop_tests::volo_peer::{self, Framing, VoloServer};
//!
//! let server = VoloServer::start(Framing::Framed).await?;
//! let client = volo_peer::client(server.local_addr(), Framing::Framed);
//! let reply = client
//!     .ping_pong(interop_tests::echo::Request {
//!         message: "hi".into(),
//!         ..Default::default()
//!     })
//!     .await;
//! # drop(reply);
//! # Ok(())
//! # }
//! ```

// Not `forbid(unsafe_code)`: the volo-generated module below needs `unsafe`; everything else
// here is under the workspace's `deny`.

/// The code written by volo-build. It is not ours to lint: it has `unsafe` blocks (volo's
/// zero-copy binary protocol), no docs and its own style.
#[allow(
    unsafe_code,
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/volo_gen.rs"));
}

/// The echo service as volo-build generates it: `Request`, `Response`, `EchoError`, the
/// `TestService` server trait, `TestServiceServer`, `TestServiceClient` and
/// `TestServiceClientBuilder`, and the Args/Result wrappers.
pub use generated::volo_gen::echo;

pub mod grpc_interop;
pub mod proxy;
pub mod volo_peer;
pub mod wire;
