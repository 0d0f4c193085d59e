//! Server limits: what one peer, or all of them together, can make a server hold.
//!
//! Every queue, map and connection a server keeps for its peers is bounded by one of these,
//! each with a named default and the reason for it. They live on the core
//! [`ServerBuilder`](crate::ServerBuilder) so every transport enforces the same numbers in its
//! own way (gRPC advertises [`ServerLimits::max_concurrent_streams`] as
//! `SETTINGS_MAX_CONCURRENT_STREAMS`; ttstream refuses the stream with a Trailer exception).
//!
//! The server-wide byte budget is shared by all connections of all listeners of one
//! [`Server`](crate::Server): see [`ByteBudget`].
//!
//! # The memory bound
//!
//! What peers can make a server hold is bounded by one formula a deployment can plan with:
//!
//! ```text
//! RSS over baseline ≤ max_buffered_bytes + PER_CONNECTION_BYTES × connections
//! ```
//!
//! ([`ServerLimits::max_buffered_bytes`], [`PER_CONNECTION_BYTES`] = 96 KiB; with the defaults,
//! 256 MiB + 96 KiB per connection, at most 1.2 GiB at the 10,000-connection cap). The budget
//! is charged with what the process *holds*, not only the bytes that arrived: the capacity of
//! read buffers (partial frames included; a large frame's buffer grows in bounded steps as
//! its bytes arrive), messages received and not yet taken by handlers (with a per-message
//! overhead, so floods of tiny messages count), encoded replies not yet written (the capacity
//! of the write buffers), and the state of every open stream or in-flight call
//! ([`STREAM_STATE_BYTES`] each). Each transport's crate docs say how it charges its own
//! buffers (HTTP/2 windows, shared-memory arenas).
//!
//! At the budget the server never crashes and never drops a message: a connection holding
//! more than its small reserve stops reading (TCP pushes back on its peer) or, for a new
//! stream, refuses it with a retryable status (`UNAVAILABLE`, as over the stream cap), until
//! handlers or the network free memory. A connection within its reserve keeps being served,
//! so a well-behaved client is not starved by peers that filled the budget. The per-connection
//! term is that reserve plus the connection's own state (its tasks, socket, tables, smallest
//! buffers), measured and stated per transport.
//!
//! ```
//! use rpc_core::limits::{ServerLimits, PER_CONNECTION_BYTES};
//!
//! // 64 MiB of buffers and at most 2,000 connections (one listener): the most the server's RSS
//! // can grow over its baseline because of what peers send or do not read.
//! let limits = ServerLimits::default().max_buffered_bytes(64 << 20).max_connections(2_000);
//! let bound = limits.max_buffered_bytes + PER_CONNECTION_BYTES * limits.max_connections;
//! assert_eq!(bound, 64 * 1024 * 1024 + 2_000 * 96 * 1024); // 251.5 MiB
//! let server = rpc_core::Server::builder().limits(limits);
//! # drop(server);
//! ```
//!
//! Per transport: TTHeader and ttstream as above; gRPC counts every HTTP/2 frame as it crosses
//! the socket (h2 does not expose its buffers) and charges partial frames, DATA h2 holds for a
//! handler that has not taken it, encoded replies not yet handed to h2 or written, partial
//! messages by capacity, and 8 KiB plus the header list per open stream; shared memory charges
//! each session twice its region size for the session's life (the server's region and the
//! client's, whose pages it touches; both faulted in as used, so this is the session's ceiling,
//! not its resident size) and refuses a session that does not fit at the handshake with a
//! retryable "busy". With the default 16 MiB regions that is 32 MiB per shm session, so
//! a 256 MiB budget admits about 7 shm sessions next to the other transports' buffers: raise
//! the budget with the number of shm clients you plan for.
//!
//! **The allocator.** The bound holds for an allocator that returns freed large blocks to the
//! system: jemalloc, mimalloc, or glibc's malloc with a fixed mmap threshold
//! (`MALLOC_MMAP_THRESHOLD_=131072` in the environment, or `mallopt(M_MMAP_THRESHOLD, ..)`).
//! glibc's default raises its mmap threshold to the size of any large block freed (up to
//! 32 MiB), after which freed message buffers stay in the heap and in RSS; with it, the gRPC
//! attacks measured up to 7 % above the bound.
//!
//! Not counted: what handlers allocate themselves (decoded messages they hold, their own
//! state), the kernel's socket buffers (bounded by [`ServerLimits::socket_send_buffer`] and
//! the kernel's receive settings), and the code and runtime that make up the baseline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::keepalive::{
    TcpKeepalive, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_RETRIES, DEFAULT_KEEPALIVE_TIME,
};

/// Streams (and in-flight unary calls) one connection may have open at once. gRPC servers
/// commonly advertise 100–1000; 1024 leaves room for heavily multiplexed clients (Kitex's
/// multiplexed clients run hundreds of calls per connection) while capping what one connection
/// can pin at about 1024 × (per-stream buffer).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: usize = 1024;

/// Connections one listener holds at once. Each costs a file descriptor and a few KiB of
/// buffers before any stream opens; 10,000 is above any sane fan-in per process and below
/// common `ulimit -n` settings for servers, so the process never dies of EMFILE first.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Bytes all connections of a server together may hold — read buffers (by capacity, partial
/// frames included), messages received and not yet read by handlers, replies queued for
/// writing and not yet written, and the state of open streams and calls: the `budget` term of
/// the memory bound (module docs), `RSS over baseline ≤ budget + PER_CONNECTION_BYTES ×
/// connections`. When it is used up, connections over their reserve stop reading (TCP pushes
/// back on the peers) and refuse new streams until handlers or the network catch up. 256 MiB
/// lets a busy server keep hundreds of connections streaming large messages, and still stops
/// thousands of hostile non-reading clients long before the machine runs out of memory.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 * 1024 * 1024;

/// What one connection may cost beyond [`ServerLimits::max_buffered_bytes`]: the
/// per-connection term of the memory bound (module docs). It covers the connection's own
/// state — its tasks, socket, tables and smallest buffers: 13 KiB for an idle TTHeader
/// connection, 12 KiB for a ttstream one, measured — plus what it may keep holding past a
/// spent budget, its reserve (64 KiB by default, `rpc_transport_ttheader::Limits::conn_reserve`:
/// enough to keep serving small calls to a well-behaved peer while hostile ones wait), with
/// room left for the allocator's rounding.
pub const PER_CONNECTION_BYTES: usize = 96 * 1024;

/// What an open stream or in-flight unary call is charged to the byte budget for its state for
/// as long as it lives: the transport's and the core's per-call state and the task of a small
/// handler (3.3 KiB measured per sleeping ttstream stream of the echo service). Charging it
/// makes streams count towards the budget like the bytes they buffer, so many connections
/// each opening their maximum of streams cannot hold memory past the bound; a handler's own
/// allocations are the application's and are not counted.
pub const STREAM_STATE_BYTES: usize = 4 * 1024;

/// How long a connection may stay open with no stream and no call in flight. Five minutes
/// matches common load-balancer idle timeouts (so we close before a middlebox silently drops
/// the flow) and frees the slots of clients that connected and walked away.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a frame (or a new connection's protocol preface) may take from its first byte to
/// its last. A peer that sends a valid prefix and then nothing is cut off after this, instead
/// of holding its connection and buffer forever. 30 s covers a 16 MiB frame at ~4 Mbit/s.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// The listen backlog: connections the kernel queues before `accept`. The common default of
/// 128 makes a burst of connects stall for a SYN retransmit (one second); 1024 absorbs bursts
/// (the kernel still caps it at `net.core.somaxconn`).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 1024;

/// The kernel send buffer (`SO_SNDBUF`) of every accepted TCP connection. Left alone, Linux
/// grows it up to `net.ipv4.tcp_wmem`'s maximum (4 MiB by default) for a peer that stops
/// reading, so 500 non-reading streaming clients pinned about 1.5 GiB of kernel memory and
/// pushed the host's TCP memory into pressure (packet drops, 200 ms retransmits for everyone).
/// 512 KiB (the kernel doubles it for its bookkeeping) still fills a 10 Gbit/s link at 0.4 ms
/// round trip; raise it for bulk transfers over long fat links.
pub const DEFAULT_SOCKET_SEND_BUFFER: usize = 512 * 1024;

/// The limits of one server. Build with [`ServerLimits::default`] and the setters.
///
/// Together they bound the server's memory: `RSS over baseline ≤ max_buffered_bytes +
/// PER_CONNECTION_BYTES × connections` (see [the module docs](self#the-memory-bound)), and
/// connections are at most `max_connections` per listener.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerLimits {
    /// See [`DEFAULT_MAX_CONCURRENT_STREAMS`].
    pub max_concurrent_streams: usize,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`DEFAULT_MAX_BUFFERED_BYTES`].
    pub max_buffered_bytes: usize,
    /// See [`DEFAULT_IDLE_TIMEOUT`]; `None` keeps idle connections open forever.
    pub idle_timeout: Option<Duration>,
    /// See [`DEFAULT_FRAME_TIMEOUT`].
    pub frame_timeout: Duration,
    /// See [`DEFAULT_LISTEN_BACKLOG`].
    pub listen_backlog: u32,
    /// See [`DEFAULT_SOCKET_SEND_BUFFER`]; `None` leaves the kernel's autotuning alone.
    pub socket_send_buffer: Option<usize>,
    /// TCP keepalive on every accepted TCP connection (on by default, see
    /// [`TcpKeepalive`]); `None` turns it off.
    pub tcp_keepalive: Option<TcpKeepalive>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            socket_send_buffer: Some(DEFAULT_SOCKET_SEND_BUFFER),
            tcp_keepalive: Some(TcpKeepalive::default()),
        }
    }
}

impl ServerLimits {
    /// Sets [`ServerLimits::max_concurrent_streams`] (at least 1).
    pub fn max_concurrent_streams(mut self, n: usize) -> Self {
        self.max_concurrent_streams = n.max(1);
        self
    }

    /// Sets [`ServerLimits::max_connections`] (at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets [`ServerLimits::max_buffered_bytes`].
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Sets [`ServerLimits::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`ServerLimits::frame_timeout`].
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// Sets [`ServerLimits::socket_send_buffer`].
    pub fn socket_send_buffer(mut self, bytes: Option<usize>) -> Self {
        self.socket_send_buffer = bytes;
        self
    }

    /// Sets [`ServerLimits::tcp_keepalive`].
    pub fn tcp_keepalive(mut self, keepalive: Option<TcpKeepalive>) -> Self {
        self.tcp_keepalive = keepalive;
        self
    }

    /// Sets [`ServerLimits::listen_backlog`].
    pub fn listen_backlog(mut self, backlog: u32) -> Self {
        self.listen_backlog = backlog;
        self
    }
}

/// A byte budget shared by many connections: a counter with a limit. Connections charge what
/// they hold and release it when it leaves; a reader that finds the budget exhausted stops
/// reading until [`ByteBudget::is_exhausted`] turns false (it may poll with
/// [`ByteBudget::notified`]).
///
/// [`ByteBudget::charge`] never fails: bytes that already arrived are accounted even past the
/// limit (they are in memory either way); the limit decides whether more are read. Memory a
/// connection is about to allocate (a read buffer growing for a large frame) is taken with
/// [`ByteBudget::try_charge`] instead, which never goes past the limit.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    limit: usize,
    released: tokio::sync::Notify,
}

impl ByteBudget {
    /// Room a waiter for [`ByteBudget::try_charge`] is woken for: [`ByteBudget::notified`]
    /// also resolves when a release leaves at least this much available. A connection asks for
    /// at most this much at once while the budget is nearly spent, so the wake-up always
    /// comes with enough room for it.
    pub const ROOM: usize = 64 * 1024;

    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            used: AtomicUsize::new(0),
            limit,
            released: tokio::sync::Notify::new(),
        })
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged and not yet released.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Bytes that may still be charged before the limit.
    pub fn available(&self) -> usize {
        self.limit.saturating_sub(self.used())
    }

    /// Whether readers should stop reading.
    pub fn is_exhausted(&self) -> bool {
        self.used() >= self.limit
    }

    /// Charges `n` bytes.
    pub fn charge(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Charges `n` bytes if that stays within the limit; says whether it did.
    pub fn try_charge(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&after| after <= self.limit)
            })
            .is_ok()
    }

    /// Releases `n` bytes charged earlier; wakes waiters when the budget drops below its
    /// limit, and when it leaves [`ByteBudget::ROOM`] bytes available.
    pub fn release(&self, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "released more than charged");
        let after = before - n;
        let crossed = |limit: usize| before >= limit && after < limit;
        if crossed(self.limit) || crossed(self.limit.saturating_sub(Self::ROOM)) {
            self.released.notify_waiters();
        }
    }

    /// Resolves after the next release that brings the budget below its limit or leaves
    /// [`ByteBudget::ROOM`] bytes available. Create the future, then check
    /// [`ByteBudget::is_exhausted`] (or [`ByteBudget::available`]), then await (no lost
    /// wakeups).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_and_reports_exhaustion() {
        let b = ByteBudget::new(100);
        b.charge(60);
        assert!(!b.is_exhausted());
        b.charge(60);
        assert!(b.is_exhausted());
        assert_eq!(b.used(), 120);
        b.release(30);
        assert!(!b.is_exhausted());
        b.release(90);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn try_charge_never_passes_the_limit() {
        let b = ByteBudget::new(100);
        assert!(b.try_charge(60));
        assert_eq!(b.available(), 40);
        assert!(!b.try_charge(41), "past the limit");
        assert_eq!(b.used(), 60, "a refused charge charges nothing");
        assert!(b.try_charge(40));
        assert!(b.is_exhausted());
        assert!(!b.try_charge(1));
        b.charge(10);
        assert_eq!(b.available(), 0);
        b.release(110);
        assert!(!b.try_charge(usize::MAX), "no overflow");
    }

    #[tokio::test]
    async fn release_that_leaves_room_wakes_a_waiter() {
        // Used stays below the limit throughout: only the room crossing wakes.
        let b = ByteBudget::new(4 * ByteBudget::ROOM);
        b.charge(4 * ByteBudget::ROOM - 10);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                loop {
                    let n = b.notified();
                    if b.available() >= ByteBudget::ROOM {
                        return;
                    }
                    n.await;
                }
            })
        };
        tokio::task::yield_now().await;
        b.release(ByteBudget::ROOM);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken within the timeout")
            .expect("no panic");
    }

    #[tokio::test]
    async fn release_below_the_limit_wakes_a_waiter() {
        let b = ByteBudget::new(10);
        b.charge(10);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                loop {
                    let n = b.notified();
                    if !b.is_exhausted() {
                        return;
                    }
                    n.await;
                }
            })
        };
        tokio::task::yield_now().await;
        b.release(1);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken within the timeout")
            .expect("no panic");
    }
}
