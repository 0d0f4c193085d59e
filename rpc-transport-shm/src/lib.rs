//! Shared-memory transport between processes on one Linux host: TTHeader Streaming frames in
//! memfd regions (one ring and one arena per direction), a Unix socket for the handshake,
//! peer-death detection and messages too large for the arena.
//!
//! ```no_run
//! # async fn run(server: rpc_core::Server) -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_core::serve::Listener;
//! use rpc_transport_shm::{ShmClient, ShmProtocol};
//!
//! let address = rpc_core::Address::shm("/tmp/echo.shm"); // or "shm:///tmp/echo.shm".parse()?
//! let running = Listener::new(server)
//!     .protocol(ShmProtocol::default())
//!     .bind(address.clone())
//!     .await?
//!     .start();
//! let client = ShmClient::new(address); // an Address, as every transport's client takes
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`ring`]: the single-producer/single-consumer descriptor ring (pure; unit, property and
//!   stress tested on heap memory, model-checked with loom; see Testing below).
//! - [`arena`]: the sender-owned arena's buddy allocator (pure, private bookkeeping).
//! - `link` (Linux): the data plane — the ttstream session's `FrameSink` over the ring and
//!   arena, the reader task, wakeups, backpressure, the socket fallback, peer death.
//! - `setup` (Linux): the handshake; `sys` (Linux): memfd, seals, mmap, eventfd, `SCM_RIGHTS`.
//! - [`stream`] (Linux): the byte-stream mode (below) over the same rings, arenas and set-up.
//!
//! # Byte-stream mode
//!
//! [`ShmStream`] is a full-duplex byte stream over the same regions (Linux):
//! `tokio::io::AsyncRead + AsyncWrite`, so any tokio protocol runs over shared memory —
//! HTTP/2 with `h2`, our gRPC and TTHeader transports, a user's own. [`ShmStream::connect`]
//! dials a [`ShmStreamListener`] (bound at a Unix socket path, `accept` or a
//! `futures::Stream` of streams); [`ShmStream::builder`] sets the ring, arena and chunk
//! sizes. Our transports take it through two hooks in `rpc-core`:
//!
//! ```no_run
//! # async fn run(server: rpc_core::Server) -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_core::{serve::Listener, Address};
//! use rpc_transport_grpc::{GrpcClient, GrpcClientConfig, GrpcProtocol};
//! use rpc_transport_shm::{stream, ShmStreamListener};
//!
//! let path = "/tmp/grpc.shm";
//! // Server: every protocol of the listener, served on the accepted streams.
//! let running = Listener::new(server)
//!     .protocol(GrpcProtocol::default())
//!     .incoming(Address::shm(path), ShmStreamListener::bind(path)?.into_incoming())
//!     .start();
//! // Client: HTTP/2 dialled through the stream connector.
//! let cfg = GrpcClientConfig::default().connector(stream::connector());
//! let client = GrpcClient::with_config(Address::shm(path), cfg);
//! # Ok(()) }
//! ```
//!
//! (TTHeader: `TtHeaderClient::builder(addr).connect_options(ConnectOptions::new()
//! .connector(Some(stream::connector())))`.) The handshake is the RPC sessions' with the mode
//! in its features ([`setup::FEATURE_BYTE_STREAM`]): a stream and an RPC session never pair
//! up (`ConnectionRefused`). A write copies into the current arena block, published at once if
//! the peer has read all we sent before, else when the block fills, on `flush`, or — for
//! protocols that never flush, as sockets allow — by the stream's task once the writer
//! yields, so a burst of small writes (HTTP/2 frames) shares descriptors; a full ring or arena
//! makes `poll_write` wait. `poll_read` copies out of the peer's arena
//! and returns each block once read whole. `shutdown` is a half-close (the peer reads EOF
//! after the last byte); a dropped stream reads as EOF too, a killed peer as
//! `ConnectionReset` (socket EOF or its pidfd; never a hang), and writes to a gone peer fail
//! with `BrokenPipe`. Memory is the two regions (4 MiB arenas by default,
//! [`stream::DEFAULT_STREAM_ARENA_BYTES`]); the queue of received chunks is bounded by the
//! peer's arena. See [`stream`] for the details and limits.
//!
//! # Memory bound
//!
//! A session's regions make the server hold up to both of them: its own and the client's
//! (mapped; its pages count for the server once it reads frames from them). Neither is
//! pre-faulted: a page is allocated when first written (or read), so a session's resident
//! memory grows with the frames it carries — LIFO block reuse keeps a steady load on a few
//! pages — and never beyond its two regions, whatever the peer does (a hostile client can
//! make the server touch pages of the client's region by pointing descriptors at unwritten
//! arena bytes, but only inside that region). The
//! server charges twice the region size to its byte budget (`ServerLimits::max_buffered_bytes`,
//! shared with every transport) for the session's life and refuses a session at the handshake
//! when that does not fit (the client sees a busy server and retries later), next to the
//! region budget of [`ShmProtocol::max_region_bytes`]. A client that stops returning buffers
//! fills only the server's own arena, which is already counted; the server's senders wait.
//! So the sessions' regions stay within the budget of the bound every transport documents
//! (RSS over baseline ≤ budget + F × connections). The charge is that ceiling, not the
//! (usually far smaller) resident size. At the default sizes (16 MiB arenas) a session costs
//! about 32 MiB of budget: raise `max_buffered_bytes` or lower
//! [`ShmProtocol::max_sizes`] for many sessions. The ttstream session each carries charges
//! its own buffers as over TCP (`rpc-transport-ttheader`).
//!
//! # Hot restart
//!
//! A new server process takes the listening socket over from the running one
//! ([`takeover`]): the old process answers on a control socket ([`Handover`], at
//! `PATH.takeover` by [`takeover::control_path`]), stops accepting and passes the new one its
//! listening sockets (`SCM_RIGHTS`), so the path never disappears and no connect is refused;
//! once the new process says it serves ([`Takeover::ready`]) the old one shuts down
//! gracefully. Each of its sessions then gets a go-away ([`goaway`], negotiated at the
//! handshake): the client opens no new stream on it — its next calls open a session to the
//! new process — and closes it once its streams ended; the old server keeps serving whatever
//! still arrives on it, so a call that had not started on the old process starts on the new
//! one and a call in flight finishes where it started, within the grace period. The old
//! process exits when its last session closed. The client watches the pid the server's
//! handshake names for the server's death, not the socket's peer credentials (which name the
//! process that called `listen`: the old one). `echo-server --takeover` is the command-line
//! form; `examples/tests/hot_restart.rs` drives 8 callers through it (0 failed calls).
//!
//! The handover works for every listener of the process (`unix://` for TTHeader and gRPC,
//! `tcp://` too); those protocols drain in their own way (gRPC: `GOAWAY`; TTHeader: `crrst`
//! on unary replies, new streams refused with a retryable `UNAVAILABLE`), and a few calls
//! racing those drains fail with `UNAVAILABLE` (`examples/tests/hot_restart_uds.rs` prints how
//! many: up to about 15 of 1,600 per takeover).
//! It lives in this crate because receiving descriptors needs `unsafe`, which `rpc-core`
//! forbids; `rpc-core` has the safe halves (`AcceptControl`, `Listener::bind_inherited`).
//!
//! # Testing the lock-free and unsafe parts
//!
//! The ring is the one lock-free protocol between the two processes, and the ring and memory
//! code hold most of the crate's `unsafe`. Besides their unit, property and two-thread stress
//! tests, two tools check them:
//!
//! - **loom**: `RUSTFLAGS="--cfg loom" cargo test -p rpc-transport-shm --release --lib loom`
//!   (a few seconds after the build; `.ci/run` runs it). Three models of one producer and one
//!   consumer run the ring's own code on heap memory, loom's atomics standing in for the
//!   header words and loom's cells recording every slot copy, and the threads sleep and wake
//!   each other the way the link does around its eventfds. Loom explores their interleavings
//!   and weak-memory outcomes (up to a preemption bound per model; `LOOM_MAX_PREEMPTIONS`
//!   raises it) and fails the model if
//!   - a wake-up is lost: the consumer sets its parked flag and re-checks the ring, the
//!     producer publishes and then checks the flag, and one of them must see the other (the
//!     same for the producer's waiting flag when the ring is full); a side left asleep is a
//!     deadlock to loom;
//!   - a slot is read before its write is visible (the head's Release/Acquire) or rewritten
//!     before the consumer's copy of it is done (the tail's): a causality violation;
//!   - a descriptor is lost, repeated or out of order.
//!
//!   Under `--cfg loom` the crate builds only [`ring`], [`arena`] and [`mem`] (tokio has no
//!   `net` module under that cfg). The flags are written with swaps, not stores, because loom
//!   orders a plain store racing with the other side's swap only partially and would report a
//!   lost wake-up the memory model rules out (see [`ring::Consumer::park`]).
//! - **miri**: `cargo +nightly miri test -p rpc-transport-shm --lib` (needs the nightly
//!   `miri` and `rust-src` components; about 10 s of tests after building the dependencies
//!   for miri, which takes minutes, so CI does not run it). It runs the ring, arena and
//!   handshake-message unit tests and the two-thread stress test (2,000 descriptors) on heap
//!   memory and checks every raw-pointer access is in bounds, aligned and to live memory, and
//!   that the slot copies never race with each other (miri's data-race detector and
//!   weak-memory emulation, over the schedule each run draws). Ignored under miri: the
//!   session tests (memfd, mmap, eventfds and Unix sockets are system calls it does not run),
//!   so the `unsafe` that maps regions and slices them is exercised by those tests only, and
//!   the property tests (minutes per case).
//!
//! On other platforms the crate compiles and [`ShmClient`] / [`ShmProtocol`] fail at run
//! time with an "unsupported platform" error.

pub mod arena;
pub mod mem;
pub mod ring;
mod sync;

#[cfg(all(target_os = "linux", not(loom)))]
mod client;
#[cfg(all(target_os = "linux", not(loom)))]
pub mod goaway;
#[cfg(all(target_os = "linux", not(loom)))]
mod link;
#[cfg(all(target_os = "linux", not(loom)))]
mod server;
#[cfg(all(target_os = "linux", not(loom)))]
pub mod setup;
#[cfg(all(target_os = "linux", not(loom)))]
mod stats;
#[cfg(all(target_os = "linux", not(loom)))]
pub mod stream;
#[cfg(all(target_os = "linux", not(loom)))]
mod sys;
#[cfg(all(target_os = "linux", not(loom)))]
pub mod takeover;

#[cfg(all(target_os = "linux", not(loom)))]
pub use client::{
    ShmClient, ShmClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE,
    INITIAL_RECONNECT_BACKOFF, MAX_OPEN_ATTEMPTS, MAX_RECONNECT_BACKOFF,
};
#[cfg(all(target_os = "linux", not(loom)))]
pub use link::{ShmSession, ShmSink};
#[cfg(all(target_os = "linux", not(loom)))]
pub use server::ShmProtocol;
#[cfg(all(target_os = "linux", not(loom)))]
pub use setup::{Sizes, DEFAULT_MAX_REGION_BYTES};
#[cfg(all(target_os = "linux", not(loom)))]
pub use stats::ShmStats;
#[cfg(all(target_os = "linux", not(loom)))]
pub use stream::{ShmStream, ShmStreamBuilder, ShmStreamListener};
#[cfg(all(target_os = "linux", not(loom)))]
pub use takeover::{Handover, Takeover};

#[cfg(all(test, target_os = "linux", not(loom)))]
mod tests;

#[cfg(all(target_os = "linux", not(loom)))]
fn sys_signal(fd: &std::os::fd::OwnedFd) {
    sys::signal(fd)
}

#[cfg(all(target_os = "linux", not(loom)))]
fn sys_drain(fd: &std::os::fd::OwnedFd) -> bool {
    sys::drain(fd)
}

/// Entry points for the fuzz targets in `fuzz/` (not API: hidden, may change at any time).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::ring::arena_span;
}

#[cfg(not(any(target_os = "linux", loom)))]
mod unsupported;
#[cfg(not(any(target_os = "linux", loom)))]
pub use unsupported::{ShmClient, ShmProtocol};
