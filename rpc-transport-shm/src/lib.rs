//! Shared-memory transport between processes on one Linux host: TTHeader Streaming frames in
//! memfd regions (one ring and one arena per direction), a Unix socket for the handshake,
//! peer-death detection and messages too large for the arena.
//!
//! ```no_run
//! # async fn run(server: rpc_core::Server) -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_core::serve::Listener;
//! use rpc_transport_shm::{ShmClient, ShmProtocol};
//!
//! let running = Listener::new(server)
//!     .protocol(ShmProtocol::default())
//!     .bind("shm:///tmp/echo.shm".parse()?)
//!     .await?
//!     .start();
//! let client = ShmClient::new("/tmp/echo.shm"); // or `Connect::connect("shm:///tmp/echo.shm")`
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`ring`]: the single-producer/single-consumer descriptor ring (pure; unit, property and
//!   stress tested on heap memory).
//! - [`arena`]: the sender-owned arena's buddy allocator (pure, private bookkeeping).
//! - `link` (Linux): the data plane — the ttstream session's `FrameSink` over the ring and
//!   arena, the reader task, wakeups, backpressure, the socket fallback, peer death.
//! - `setup` (Linux): the handshake; `sys` (Linux): memfd, seals, mmap, eventfd, `SCM_RIGHTS`.
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
//! On other platforms the crate compiles and [`ShmClient`] / [`ShmProtocol`] fail at run
//! time with an "unsupported platform" error.

pub mod arena;
pub mod mem;
pub mod ring;

#[cfg(target_os = "linux")]
mod client;
#[cfg(target_os = "linux")]
mod link;
#[cfg(target_os = "linux")]
mod server;
#[cfg(target_os = "linux")]
pub mod setup;
#[cfg(target_os = "linux")]
mod stats;
#[cfg(target_os = "linux")]
mod sys;

#[cfg(target_os = "linux")]
pub use client::{
    ShmClient, ShmClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE,
    INITIAL_RECONNECT_BACKOFF, MAX_RECONNECT_BACKOFF,
};
#[cfg(target_os = "linux")]
pub use link::{ShmSession, ShmSink};
#[cfg(target_os = "linux")]
pub use server::ShmProtocol;
#[cfg(target_os = "linux")]
pub use setup::{Sizes, DEFAULT_MAX_REGION_BYTES};
#[cfg(target_os = "linux")]
pub use stats::ShmStats;

#[cfg(all(test, target_os = "linux"))]
mod tests;

#[cfg(target_os = "linux")]
fn sys_signal(fd: &std::os::fd::OwnedFd) {
    sys::signal(fd)
}

#[cfg(target_os = "linux")]
fn sys_drain(fd: &std::os::fd::OwnedFd) -> bool {
    sys::drain(fd)
}

/// Entry points for the fuzz targets in `fuzz/` (not API: hidden, may change at any time).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::ring::arena_span;
}

#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
pub use unsupported::{ShmClient, ShmProtocol};
