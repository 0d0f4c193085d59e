//! Byte-stream mode: [`ShmStream`], a full-duplex byte stream over a pair of shared-memory
//! regions (`tokio::io::AsyncRead + AsyncWrite`), and [`ShmStreamListener`] that accepts them,
//! so any tokio protocol (HTTP/2, TTHeader, a user's own) can run over shared memory.
//!
//! The regions, the rings, the arenas, the eventfds and the handshake are the RPC sessions'
//! (`setup`, `ring`, `arena`, `sys`); the hello carries [`FEATURE_BYTE_STREAM`], so a byte
//! stream and an RPC session never meet by mistake (the other side refuses the mode). What
//! travels differs: a descriptor carries a chunk of the stream, not a frame.
//!
//! - **Write**: bytes are copied into the current block of our arena. A write made while the
//!   peer has read every descriptor we sent goes out at once (nothing to coalesce with: a
//!   lone request pays no delay); otherwise the block is published (one descriptor) when it
//!   is full, on `flush`/`shutdown`, or — for protocols that never flush because a socket
//!   does not need it (TTHeader's writer) — by the pump once the writing task has yielded.
//!   Nagle's rule without its timer: the small writes of a burst (HTTP/2 writes many small
//!   frames) share descriptors and wake-ups. A block is sized for the write that opens it (a
//!   power of two between [`MIN_CHUNK`] and the builder's `max_chunk`).
//! - **Backpressure**: with the ring or the arena full, `poll_write` returns `Pending` until
//!   the peer pops descriptors or returns blocks; never an error, never a drop.
//! - **Read**: a task per stream (the *pump*) pops descriptors: a chunk is queued (it stays
//!   in the peer's arena; `poll_read` copies out of it and returns the block once read
//!   whole), a release frees blocks of our arena, an empty inline descriptor is the peer's
//!   half-close. The pump spins briefly and then parks on its eventfd, as the RPC session's
//!   reader does; the peer writes the eventfd only when the pump is parked.
//! - **Half-close**: `poll_shutdown` flushes and pushes the end marker; the peer reads EOF
//!   (`Ok(0)`) after every byte before it, and may still write back.
//! - **Drop** flushes what it can and sends the end marker (the peer reads EOF, as after a TCP
//!   close), then closes the socket: the peer's writes fail with `BrokenPipe`. A peer that is
//!   gone without the marker (its process died, or its ring was full when it dropped) reads
//!   as `ConnectionReset` once the bytes it did send are read; never a hang (the socket's EOF
//!   and a pidfd tell).
//! - **Bounds**: memory is the two regions (fixed at the handshake); the queue of received
//!   chunks is at most one per 1 KiB of the peer's arena (every chunk of an honest peer holds
//!   an arena block of at least that much until we return it); a peer exceeding it, or
//!   sending a malformed descriptor, ends the stream with `InvalidData`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify, Semaphore};

use rpc_core::net::{Connector, Io};
use rpc_core::{Address, Peer};

use crate::arena::{Arena, MIN_ORDER};
use crate::link::{Layout, Spin, BATCH};
use crate::mem::Memory;
use crate::ring::{arena_span, release_offsets, Consumer, Desc, Producer, RingError, Slot};
use crate::setup::{
    self, Held, RegionBudget, Sizes, DEFAULT_MAX_REGION_BYTES, FEATURE_BYTE_STREAM,
    HANDSHAKE_TIMEOUT,
};
use crate::sys;

/// [`ShmStreamBuilder::connector`] with the default sizes: HTTP/2 (our gRPC client), TTHeader
/// or any client built on `rpc_core::net::Io::connect_with` over shared memory.
///
/// ```no_run
/// # fn f() {
/// use rpc_transport_grpc::{GrpcClient, GrpcClientConfig};
/// let cfg = GrpcClientConfig::default().connector(rpc_transport_shm::stream::connector());
/// let client = GrpcClient::with_config(rpc_core::Address::shm("/tmp/grpc.shm"), cfg);
/// # }
/// ```
pub fn connector() -> Connector {
    ShmStreamBuilder::default().connector()
}

/// Default descriptor slots per ring of a byte stream: 256 × 128 B = 32 KiB. Chunks are at
/// least [`MIN_CHUNK`] bytes, so the arena fills before the ring does under any bulk load.
pub const DEFAULT_STREAM_RING_SLOTS: usize = 256;
/// Default arena per direction of a byte stream: 4 MiB, a few times what an HTTP/2
/// connection has in flight at its default windows, and 4 MiB regions per stream rather than
/// the RPC sessions' 16 MiB (a stream carries one connection, not a pool's worth of calls).
pub const DEFAULT_STREAM_ARENA_BYTES: usize = 4 * 1024 * 1024;
/// The smallest block a write opens: 8 KiB, so that a flush's worth of small HTTP/2 frames
/// (headers, window updates, a small message) fits one block and one descriptor.
pub const MIN_CHUNK: usize = 8 * 1024;
/// Default largest block (see [`ShmStreamBuilder::max_chunk`]): 256 KiB, large enough that a
/// bulk transfer costs a descriptor per 256 KiB, small enough that the reader starts copying
/// out while the writer still fills the next block.
pub const DEFAULT_MAX_CHUNK: usize = 256 * 1024;
/// Handshakes a listener runs at once; more connecting clients wait in the socket's backlog.
/// Bounds the tasks and the half-built regions a flood of connects can make us hold.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Streams a listener keeps established but not yet taken by [`ShmStreamListener::accept`];
/// the handshakes wait while it is full (so do their clients).
pub const ACCEPT_QUEUE: usize = 64;
/// How long [`ShmStream::connect`] waits by default for the socket and the handshake.
pub const DEFAULT_STREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ring_err(e: RingError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("shared memory stream: {e}"),
    )
}

/// Sizes and chunking of a byte stream: build with [`ShmStream::builder`], then
/// [`connect`](ShmStreamBuilder::connect) or [`bind`](ShmStreamBuilder::bind).
#[derive(Debug, Clone)]
pub struct ShmStreamBuilder {
    sizes: Sizes,
    max_chunk: usize,
    connect_timeout: Duration,
    max_region_bytes: usize,
}

impl Default for ShmStreamBuilder {
    fn default() -> Self {
        ShmStreamBuilder {
            sizes: Sizes {
                ring_slots: DEFAULT_STREAM_RING_SLOTS,
                arena_bytes: DEFAULT_STREAM_ARENA_BYTES,
            },
            max_chunk: DEFAULT_MAX_CHUNK,
            connect_timeout: DEFAULT_STREAM_CONNECT_TIMEOUT,
            max_region_bytes: DEFAULT_MAX_REGION_BYTES,
        }
    }
}

impl ShmStreamBuilder {
    /// Descriptor slots per ring (a power of two, 8 ..= 65536; default
    /// [`DEFAULT_STREAM_RING_SLOTS`]). A client asks for it; a listener grants at most it.
    pub fn ring_slots(mut self, slots: usize) -> Self {
        self.sizes.ring_slots = slots;
        self
    }

    /// Arena bytes per direction (a power of two, 64 KiB ..= 1 GiB; default
    /// [`DEFAULT_STREAM_ARENA_BYTES`]): the most one side has in flight. A client asks for
    /// it; a listener grants at most it.
    pub fn arena_bytes(mut self, bytes: usize) -> Self {
        self.sizes.arena_bytes = bytes;
        self
    }

    /// The largest block one descriptor carries (default [`DEFAULT_MAX_CHUNK`]; rounded down
    /// to a power of two, at least [`MIN_CHUNK`], at most a quarter of the arena).
    pub fn max_chunk(mut self, bytes: usize) -> Self {
        self.max_chunk = bytes;
        self
    }

    /// How long [`connect`](Self::connect) waits for the socket and the handshake.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A listener's budget of region bytes over all its live streams (its own regions;
    /// default [`DEFAULT_MAX_REGION_BYTES`]); clients beyond it are refused at the handshake.
    pub fn max_region_bytes(mut self, bytes: usize) -> Self {
        self.max_region_bytes = bytes;
        self
    }

    fn check(&self) -> io::Result<()> {
        if self.sizes.valid() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "shared memory stream sizes {:?}: ring slots a power of two in 8..=65536, arena a power of two in 64 KiB..=1 GiB",
                    self.sizes
                ),
            ))
        }
    }

    /// Connects to the [`ShmStreamListener`] at `path` (its Unix socket) and sets up the
    /// regions.
    pub async fn connect(&self, path: impl AsRef<Path>) -> io::Result<ShmStream> {
        self.check()?;
        let path = path.as_ref();
        let setup = async {
            let socket = UnixStream::connect(path).await?;
            setup::client_with(socket, self.sizes, FEATURE_BYTE_STREAM).await
        };
        let e = tokio::time::timeout(self.connect_timeout, setup)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "shared memory stream to {}: no handshake within {:?}",
                        path.display(),
                        self.connect_timeout
                    ),
                )
            })?
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("shared memory stream to {}: {e}", path.display()),
                )
            })?;
        ShmStream::start(e, self.max_chunk, None)
    }

    /// A connector for our transports' clients (`rpc_core::net::ConnectOptions::connector`,
    /// `GrpcClientConfig::connector`, TTHeader's `ClientBuilder::connect_options`): it dials
    /// `shm://PATH` addresses with a [`ShmStream`] of these sizes (the peer is
    /// `Peer::Shm(PATH)`); any other address is `Unsupported`.
    pub fn connector(&self) -> Connector {
        let builder = self.clone();
        Connector::new(move |addr: &Address| {
            let builder = builder.clone();
            let addr = addr.clone();
            Box::pin(async move {
                match addr {
                    Address::Shm(path) => {
                        let s = builder.connect(&path).await?;
                        Ok((Io::boxed(s), Peer::Shm(path)))
                    }
                    other => Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "{other}: the shared-memory stream connector dials shm:// addresses only"
                        ),
                    )),
                }
            })
        })
    }

    /// Binds a listener at `path` (a Unix socket; a socket file left there by an earlier run
    /// is replaced, but one a running server listens on, or any other file, is an `AddrInUse`
    /// error: see `rpc_core::net::free_unix_path`). Needs a tokio runtime.
    pub fn bind(&self, path: impl AsRef<Path>) -> io::Result<ShmStreamListener> {
        self.check()?;
        ShmStreamListener::bind_with(path.as_ref(), self.clone())
    }
}

/// A block of our arena being filled (not yet published).
#[derive(Debug, Clone, Copy)]
struct Block {
    off: u32,
    cap: usize,
    len: usize,
}

/// The sending side: our ring and arena.
struct Tx {
    producer: Producer,
    arena: Arena,
    cur: Option<Block>,
    /// Blocks of the peer's arena we have read whole, not yet returned (our ring was full).
    releases: Vec<u32>,
    /// The writer waits for ring slots or arena space.
    waker: Option<Waker>,
    /// The end marker went out: no more writes.
    shut: bool,
}

/// A received chunk, still in the peer's arena.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    off: u32,
    start: usize,
    end: usize,
}

/// The receiving side: chunks the pump took off the peer's ring.
struct Rx {
    queue: VecDeque<Chunk>,
    waker: Option<Waker>,
    /// The peer's end marker arrived (after every chunk in `queue`).
    eof: bool,
    /// The stream failed or the peer is gone without an end marker: reads fail with this
    /// once the queue is empty.
    error: Option<(io::ErrorKind, String)>,
    /// Reused for the offsets a read finishes with.
    done: Vec<u32>,
}

/// What the stream's user and its pump task share.
struct Shared {
    tx_mem: Arc<dyn Memory>,
    rx_mem: Arc<dyn Memory>,
    layout: Layout,
    tx: Mutex<Tx>,
    rx: Mutex<Rx>,
    /// Flag access to the peer's ring (its "producer waiting" flag).
    peer_flags: Consumer,
    wake_peer: OwnedFd,
    /// The peer is gone or the stream failed: writes fail with `BrokenPipe`.
    broken: AtomicBool,
    /// A write left a partly filled block unpublished: the pump publishes it once the
    /// writing task has yielded (see the module docs, "Write").
    dirty: AtomicBool,
    /// Wakes a parked pump for `dirty`.
    publish_soon: Notify,
    max_chunk: usize,
    /// Received chunks queued at most (see the module docs, "Bounds").
    max_queue: usize,
}

impl Shared {
    fn signal_peer(&self) {
        sys::signal(&self.wake_peer);
    }

    /// After pushing into our ring: wake the peer's pump if it is parked or its writer waits
    /// (our pops or releases gave it space).
    fn announce(&self, tx: &Tx) {
        let parked = tx.producer.take_parked();
        let waiting = self.peer_flags.take_waiting();
        if parked || waiting {
            self.signal_peer();
        }
    }

    /// The bytes of a block of our arena (the `&mut Tx` proves the send lock is held).
    fn block_mut<'a>(&'a self, _tx: &'a mut Tx, b: Block) -> &'a mut [u8] {
        let start = self.layout.arena_off + b.off as usize;
        assert!(
            start + b.cap <= self.tx_mem.len(),
            "arena block inside the region"
        );
        // SAFETY: in bounds (asserted; the block comes from our own allocator). It is
        // allocated and not yet published, so the peer (which reads a block only after its
        // descriptor) does not touch it, and no other local code can: the allocator hands each
        // block out once and we hold the send lock (`_tx`) while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.tx_mem.base().as_ptr().add(start), b.cap) }
    }

    /// Pushes the releases we hold; on a full ring asks the peer to wake us when it pops.
    fn push_releases(&self, tx: &mut Tx) -> Result<bool, RingError> {
        let mut pushed = false;
        while !tx.releases.is_empty() {
            let (slot, n) = Slot::release(&tx.releases);
            if !tx.producer.push(&slot)? {
                tx.producer.set_waiting()?;
                break;
            }
            tx.releases.drain(..n);
            pushed = true;
        }
        Ok(pushed)
    }

    /// Publishes the current block if it holds bytes; `false` when the ring is full.
    fn publish(&self, tx: &mut Tx) -> Result<bool, RingError> {
        let Some(b) = tx.cur else { return Ok(true) };
        if b.len == 0 {
            return Ok(true);
        }
        self.push_releases(tx)?;
        if !tx.producer.push(&Slot::arena(b.off, b.len as u32))? {
            return Ok(false);
        }
        tx.cur = None;
        self.announce(tx);
        Ok(true)
    }

    /// Opens a block for a write of `want` more bytes; `None` when the arena has no block now.
    fn open_block(&self, tx: &mut Tx, want: usize) -> Option<Block> {
        let min = 1usize << MIN_ORDER;
        let mut size = want
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .clamp(MIN_CHUNK.min(self.max_chunk), self.max_chunk);
        loop {
            if let Some((off, cap)) = tx.arena.alloc(size) {
                return Some(Block { off, cap, len: 0 });
            }
            if size <= min {
                return None;
            }
            size /= 2;
        }
    }

    /// Copies as much of `bufs` as space allows; `Ok(0)` when none fits now.
    fn write(&self, tx: &mut Tx, bufs: &[io::IoSlice<'_>]) -> Result<usize, RingError> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut written = 0;
        'bufs: for buf in bufs {
            let mut rest: &[u8] = buf;
            while !rest.is_empty() {
                let b = match tx.cur {
                    Some(b) if b.len < b.cap => b,
                    Some(_) => {
                        if !self.publish(tx)? {
                            break 'bufs;
                        }
                        continue;
                    }
                    None => match self.open_block(tx, total - written) {
                        Some(b) => {
                            tx.cur = Some(b);
                            b
                        }
                        None => break 'bufs,
                    },
                };
                let n = rest.len().min(b.cap - b.len);
                self.block_mut(tx, b)[b.len..b.len + n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                written += n;
                tx.cur = Some(Block {
                    len: b.len + n,
                    ..b
                });
            }
        }
        // A full block goes out now (publishing stops at the first write that cannot go on,
        // so a full ring leaves it for the next write or flush).
        if matches!(tx.cur, Some(b) if b.len == b.cap) {
            self.publish(tx)?;
        }
        Ok(written)
    }

    /// Waits (registers `cx`) for space; `true` when space appeared meanwhile (retry).
    fn wait_for_space(&self, tx: &mut Tx, cx: &mut Context<'_>) -> Result<bool, RingError> {
        if !tx.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            tx.waker = Some(cx.waker().clone());
        }
        // Set even when only the arena is full: the peer's pops and releases then wake us.
        tx.producer.set_waiting()
    }

    /// The stream is over: writes fail with `BrokenPipe`, reads with `kind` once the queue is
    /// empty — unless the peer's end marker came first (a clean EOF stays one). Wakes both
    /// sides.
    fn fail(&self, kind: io::ErrorKind, msg: String) {
        self.broken.store(true, Ordering::Release);
        let w = {
            let mut rx = lock(&self.rx);
            if rx.error.is_none() && !rx.eof {
                rx.error = Some((kind, msg));
            }
            rx.waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
        if let Some(w) = lock(&self.tx).waker.take() {
            w.wake();
        }
    }

    fn broken_pipe(&self) -> io::Error {
        let why = lock(&self.rx).error.clone();
        let msg = match why {
            Some((_, m)) => format!("shared memory stream is closed: {m}"),
            None => "shared memory stream: the peer is gone".to_string(),
        };
        io::Error::new(io::ErrorKind::BrokenPipe, msg)
    }

    /// Handles one descriptor the peer pushed.
    fn on_desc(&self, slot: &Slot) -> Result<(), io::Error> {
        match slot.decode().map_err(ring_err)? {
            Desc::Arena { offset, len } => {
                let span = arena_span(offset, len, self.layout.arena_len).map_err(ring_err)?;
                let w = {
                    let mut rx = lock(&self.rx);
                    if rx.eof {
                        return Err(ring_err(RingError::BadDescriptor("data after the end")));
                    }
                    if rx.queue.len() >= self.max_queue {
                        return Err(ring_err(RingError::BadDescriptor(
                            "more chunks than the peer's arena can hold",
                        )));
                    }
                    rx.queue.push_back(Chunk {
                        off: offset,
                        start: span.start,
                        end: span.end,
                    });
                    rx.waker.take()
                };
                if let Some(w) = w {
                    w.wake();
                }
            }
            Desc::Release(offsets) => {
                let w = {
                    let mut tx = lock(&self.tx);
                    for off in release_offsets(offsets) {
                        tx.arena.free(off).map_err(|e| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("shared memory stream: peer returned {e}"),
                            )
                        })?;
                    }
                    tx.waker.take()
                };
                if let Some(w) = w {
                    w.wake();
                }
            }
            Desc::Inline([]) => {
                let w = {
                    let mut rx = lock(&self.rx);
                    rx.eof = true;
                    rx.waker.take()
                };
                if let Some(w) = w {
                    w.wake();
                }
            }
            Desc::Inline(_) | Desc::Fallback { .. } => {
                return Err(ring_err(RingError::BadDescriptor(
                    "not a byte-stream descriptor",
                )))
            }
        }
        Ok(())
    }

    /// After the pump popped descriptors or was woken: return what we hold, let a waiting
    /// writer retry.
    fn service(&self) -> Result<(), RingError> {
        let mut tx = lock(&self.tx);
        if self.push_releases(&mut tx)? {
            self.announce(&tx);
        }
        if self.dirty.load(Ordering::Acquire) {
            self.publish_dirty(&mut tx)?;
        }
        if let Some(w) = tx.waker.take() {
            w.wake();
        }
        Ok(())
    }
}

/// A full-duplex byte stream over shared memory (Linux): `tokio::io::AsyncRead +
/// AsyncWrite`, so HTTP/2, TTHeader or any tokio protocol runs over it. Open one with
/// [`ShmStream::connect`] (or [`ShmStream::builder`]) to a [`ShmStreamListener`].
///
/// Writes are coalesced in shared memory until a block fills, the stream is flushed, or the
/// writing task yields (then the stream's own task sends them, as a socket would have): a
/// `flush` sends at once. See the crate docs, "Byte-stream mode".
pub struct ShmStream {
    shared: Arc<Shared>,
    pump: tokio::task::AbortHandle,
    _held: Option<Held>,
}

impl std::fmt::Debug for ShmStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmStream")
            .field("layout", &self.shared.layout)
            .field("broken", &self.shared.broken.load(Ordering::Relaxed))
            .finish()
    }
}

impl ShmStream {
    /// Connects to the listener at `path` with the default sizes.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<ShmStream> {
        ShmStreamBuilder::default().connect(path).await
    }

    /// Sizes and chunking to connect or bind with.
    pub fn builder() -> ShmStreamBuilder {
        ShmStreamBuilder::default()
    }

    /// The arena bytes per direction the two sides agreed on.
    pub fn arena_bytes(&self) -> usize {
        self.shared.layout.arena_len
    }

    /// Bytes of our arena the peer has not returned yet (written and not yet read by it,
    /// plus the block being filled).
    pub fn arena_in_use(&self) -> usize {
        lock(&self.shared.tx).arena.in_use()
    }

    fn start(e: setup::Established, max_chunk: usize, held: Option<Held>) -> io::Result<ShmStream> {
        let setup::Established {
            stream,
            sizes,
            mine,
            theirs,
            wake_me,
            wake_peer,
            ..
        } = e;
        let layout = sizes.layout();
        let tx_mem: Arc<dyn Memory> = mine;
        let rx_mem: Arc<dyn Memory> = theirs;
        let producer = Producer::new(tx_mem.clone(), 0, layout.ring_slots).map_err(ring_err)?;
        let consumer = Consumer::new(rx_mem.clone(), 0, layout.ring_slots).map_err(ring_err)?;
        let peer_flags = Consumer::new(rx_mem.clone(), 0, layout.ring_slots).map_err(ring_err)?;
        let arena = Arena::new(layout.arena_len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "arena size"))?;
        // A power of two (rounded down) in MIN_CHUNK ..= arena / 4 (the arena is at least
        // 64 KiB, so the range is not empty).
        let max_chunk = max_chunk.clamp(MIN_CHUNK, (layout.arena_len / 4).max(MIN_CHUNK));
        let max_chunk = 1usize << (usize::BITS - 1 - max_chunk.leading_zeros());
        let shared = Arc::new(Shared {
            tx_mem,
            rx_mem,
            layout,
            tx: Mutex::new(Tx {
                producer,
                arena,
                cur: None,
                releases: Vec::new(),
                waker: None,
                shut: false,
            }),
            rx: Mutex::new(Rx {
                queue: VecDeque::new(),
                waker: None,
                eof: false,
                error: None,
                done: Vec::new(),
            }),
            peer_flags,
            wake_peer,
            broken: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            publish_soon: Notify::new(),
            max_chunk,
            max_queue: (layout.arena_len >> MIN_ORDER).max(1),
        });
        // SAFETY: `wake_me` is an open eventfd we own; the AsyncFd takes ownership, so it
        // stays open and refers to the same file until the AsyncFd drops.
        let wake_me = unsafe { AsyncFd::register_with_interest(wake_me, Interest::READABLE) }?;
        let pidfd = sys::peer_pidfd(&stream).and_then(|fd| {
            // SAFETY: as for `wake_me`: an open pidfd we own, moved into the AsyncFd.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
        });
        let pump = Pump {
            shared: shared.clone(),
            consumer,
            wake_me,
            socket: stream,
            pidfd,
        };
        let pump = tokio::spawn(pump.run()).abort_handle();
        Ok(ShmStream {
            shared,
            pump,
            _held: held,
        })
    }

    fn poll_write_bufs(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let s = &*self.shared;
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        loop {
            if s.broken.load(Ordering::Acquire) {
                return Poll::Ready(Err(s.broken_pipe()));
            }
            let mut tx = lock(&s.tx);
            if tx.shut {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "shared memory stream: write after shutdown",
                )));
            }
            let n = s.write(&mut tx, bufs).map_err(ring_err)?;
            if n > 0 {
                if matches!(tx.cur, Some(b) if b.len > 0) {
                    // Nagle without the delay: with nothing of ours unread in the ring (the
                    // peer took all we sent), the bytes go now; behind unread descriptors
                    // they wait for more writes of this burst, and go at the flush, when the
                    // block fills, or once the writer yields (the pump).
                    let idle = tx.producer.free().map_err(ring_err)? == tx.producer.capacity();
                    if idle {
                        s.publish(&mut tx).map_err(ring_err)?;
                    } else if !s.dirty.swap(true, Ordering::AcqRel) {
                        s.publish_soon.notify_one();
                    }
                }
                return Poll::Ready(Ok(n));
            }
            // Nothing fit: a full block waits for a ring slot, or the arena has no block.
            let ring_space = s.wait_for_space(&mut tx, cx).map_err(ring_err)?;
            let retry = match tx.cur {
                Some(_) => ring_space,
                // Blocks come back through our pump, under this lock: none came meanwhile.
                None => false,
            };
            if !retry {
                return Poll::Pending;
            }
        }
    }

    /// Publishes the current block and, with `end`, the end marker; `Pending` while the ring
    /// is full.
    fn poll_push(&self, cx: &mut Context<'_>, end: bool) -> Poll<io::Result<()>> {
        let s = &*self.shared;
        loop {
            let mut tx = lock(&s.tx);
            if tx.shut {
                return Poll::Ready(Ok(()));
            }
            if s.broken.load(Ordering::Acquire) {
                drop(tx);
                return Poll::Ready(Err(s.broken_pipe()));
            }
            let mut done = s.publish(&mut tx).map_err(ring_err)?;
            if done && end {
                done = s.push_end(&mut tx).map_err(ring_err)?;
            }
            if done {
                return Poll::Ready(Ok(()));
            }
            if !s.wait_for_space(&mut tx, cx).map_err(ring_err)? {
                return Poll::Pending;
            }
        }
    }
}

impl Shared {
    /// Publishes a block a write left partly filled (the writer did not flush): what a
    /// socket would have sent by now. `false` when the ring is full (still dirty; retried
    /// once the peer pops, which wakes us, or by the writer's flush).
    fn publish_dirty(&self, tx: &mut Tx) -> Result<bool, RingError> {
        self.dirty.store(false, Ordering::Release);
        if !tx.shut && !self.publish(tx)? {
            self.dirty.store(true, Ordering::Release);
            tx.producer.set_waiting()?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Pushes the end marker (after the current block); `false` when the ring is full.
    fn push_end(&self, tx: &mut Tx) -> Result<bool, RingError> {
        if !self.publish(tx)? {
            return Ok(false);
        }
        let Some(end) = Slot::inline(&[]) else {
            return Ok(true);
        };
        if !tx.producer.push(&end)? {
            return Ok(false);
        }
        tx.shut = true;
        self.announce(tx);
        Ok(true)
    }
}

impl AsyncRead for ShmStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let s = &*self.shared;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut rx = lock(&s.rx);
        if rx.queue.is_empty() {
            if rx.eof {
                return Poll::Ready(Ok(()));
            }
            if let Some((kind, msg)) = &rx.error {
                return Poll::Ready(Err(io::Error::new(*kind, msg.clone())));
            }
            if !rx.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                rx.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let rx = &mut *rx;
        let base = s.layout.arena_off;
        while buf.remaining() > 0 {
            let Some(c) = rx.queue.front_mut() else { break };
            let n = buf.remaining().min(c.end - c.start);
            // SAFETY: `c.start..c.end` lies inside the peer's arena (checked against the
            // negotiated layout by `arena_span` when the descriptor was popped), and the
            // mapping lives as long as `s.rx_mem`. By protocol the peer does not write the
            // block until we return it (below, after this copy). A peer breaking that rule
            // only changes the bytes we copy, which are the stream's untrusted payload; it
            // cannot make this slice dangle.
            let src = unsafe {
                std::slice::from_raw_parts(s.rx_mem.base().as_ptr().add(base + c.start), n)
            };
            buf.put_slice(src);
            c.start += n;
            if c.start == c.end {
                let off = c.off;
                rx.queue.pop_front();
                rx.done.push(off);
            }
        }
        if !rx.done.is_empty() {
            let mut tx = lock(&s.tx);
            tx.releases.append(&mut rx.done);
            let pushed = s.push_releases(&mut tx);
            match pushed {
                Ok(true) => s.announce(&tx),
                Ok(false) => {}
                Err(e) => {
                    drop(tx);
                    let e = ring_err(e);
                    s.fail(e.kind(), e.to_string());
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ShmStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_bufs(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_push(cx, false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_push(cx, true)
    }
}

impl Drop for ShmStream {
    fn drop(&mut self) {
        // Best effort: what was written and the end marker, so the peer reads EOF (a full
        // ring leaves the peer a `ConnectionReset` instead).
        let s = &*self.shared;
        if !s.broken.load(Ordering::Acquire) {
            let mut tx = lock(&s.tx);
            if !tx.shut {
                let _ = s.push_end(&mut tx);
            }
        }
        s.fail(
            io::ErrorKind::ConnectionAborted,
            "shared memory stream dropped".into(),
        );
        // The pump owns the socket, the eventfd and the pidfd; with it gone the peer sees the
        // socket's EOF and the regions are unmapped once the last `Arc<Shared>` drops.
        self.pump.abort();
    }
}

/// The task that takes descriptors off the peer's ring and notices the peer going away.
struct Pump {
    shared: Arc<Shared>,
    consumer: Consumer,
    wake_me: AsyncFd<OwnedFd>,
    socket: UnixStream,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

/// How the peer went away.
enum Gone {
    /// Its socket closed (or failed).
    Closed,
    /// Its process exited (pidfd).
    Exited,
}

impl Pump {
    async fn run(mut self) {
        let (kind, msg) = match self.serve().await {
            Ok(Gone::Closed) => (
                io::ErrorKind::ConnectionReset,
                "shared memory stream: the peer closed without shutting down".to_string(),
            ),
            Ok(Gone::Exited) => (
                io::ErrorKind::ConnectionReset,
                "shared memory stream: the peer process exited".to_string(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "shared memory stream failed");
                (e.kind(), e.to_string())
            }
        };
        self.shared.fail(kind, msg);
    }

    /// Pops up to a batch; returns how many.
    fn take(&mut self, max: usize) -> io::Result<usize> {
        let mut n = 0;
        while n < max {
            let Some(slot) = self.consumer.pop().map_err(ring_err)? else {
                break;
            };
            self.shared.on_desc(&slot)?;
            n += 1;
        }
        if n > 0 && self.consumer.take_waiting() {
            // The peer's ring was full (or its writer waits for blocks): it has room now.
            self.shared.signal_peer();
        }
        Ok(n)
    }

    async fn serve(&mut self) -> io::Result<Gone> {
        let shared = self.shared.clone();
        let mut spin = Spin::new();
        // A dirty block is waiting for ring space: not worth spinning for (the peer's pop
        // wakes us).
        let mut stalled = false;
        loop {
            if shared.broken.load(Ordering::Acquire) {
                return Ok(Gone::Closed);
            }
            let n = self.take(BATCH)?;
            if n > 0 {
                stalled = false;
                shared.service().map_err(ring_err)?;
                if n == BATCH {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            if !stalled && shared.dirty.load(Ordering::Acquire) {
                // Let the writing task finish its burst first (its writes coalesce), then send
                // what it did not flush.
                tokio::task::yield_now().await;
                stalled = !shared
                    .publish_dirty(&mut lock(&shared.tx))
                    .map_err(ring_err)?;
                continue;
            }
            // Nothing: spin a little (the peer may be about to answer), then park.
            let consumer = &mut self.consumer;
            let ready = || {
                Ok::<_, io::Error>(
                    !consumer.is_empty().map_err(ring_err)?
                        || (!stalled && shared.dirty.load(Ordering::Acquire)),
                )
            };
            if spin.wait(ready).await? {
                continue;
            }
            if !self.consumer.park().map_err(ring_err)? {
                continue;
            }
            let gone = tokio::select! {
                r = self.wake_me.readable() => {
                    let mut guard = r?;
                    sys::drain(self.wake_me.get_ref());
                    guard.clear_ready();
                    None
                }
                r = self.socket.readable() => {
                    r?;
                    let mut b = [0u8; 1];
                    match self.socket.try_read(&mut b) {
                        Ok(0) => Some(Gone::Closed),
                        Ok(_) => {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "shared memory stream: unexpected bytes on the control socket",
                            ))
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                        Err(_) => Some(Gone::Closed),
                    }
                }
                () = shared.publish_soon.notified() => None,
                r = async {
                    match &self.pidfd {
                        Some(fd) => fd.readable().await.map(drop),
                        None => std::future::pending().await,
                    }
                } => {
                    r?;
                    Some(Gone::Exited)
                }
            };
            self.consumer.unpark();
            spin.woke();
            // The peer may have popped our ring (room for a waiting writer or a dirty block)
            // or asked for blocks back.
            stalled = false;
            shared.service().map_err(ring_err)?;
            if let Some(gone) = gone {
                // What it pushed before it went is still ours to read: at most one ring's
                // worth (a peer that keeps pushing after closing gets no more than that).
                self.take(self.shared.layout.ring_slots)?;
                return Ok(gone);
            }
        }
    }
}

/// Accepts [`ShmStream`]s on a Unix socket (Linux). Handshakes run in the background (at most
/// [`MAX_PENDING_HANDSHAKES`] at once, each within the handshake timeout), so a slow or
/// hostile client does not hold up the others; [`accept`](Self::accept) takes the next
/// established stream. Also a `futures::Stream` of them (for `serve_with_incoming`-style
/// servers). Dropping the listener stops accepting and removes the socket file.
#[derive(Debug)]
pub struct ShmStreamListener {
    path: PathBuf,
    rx: mpsc::Receiver<io::Result<ShmStream>>,
    accept: tokio::task::AbortHandle,
    budget: Arc<RegionBudget>,
}

impl ShmStreamListener {
    /// Binds at `path` with the default sizes (see [`ShmStreamBuilder::bind`]).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<ShmStreamListener> {
        ShmStreamBuilder::default().bind(path)
    }

    fn bind_with(path: &Path, cfg: ShmStreamBuilder) -> io::Result<ShmStreamListener> {
        rpc_core::net::free_unix_path(path)?;
        let listener = UnixListener::bind(path)?;
        let budget = RegionBudget::new(cfg.max_region_bytes);
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let accept = tokio::spawn(accept_loop(listener, cfg, budget.clone(), tx)).abort_handle();
        Ok(ShmStreamListener {
            path: path.to_path_buf(),
            rx,
            accept,
            budget,
        })
    }

    /// The next established stream. A failed handshake is not returned (it is logged at
    /// debug level and the client sees its error); an error here means the listening socket
    /// itself failed.
    pub async fn accept(&mut self) -> io::Result<ShmStream> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next established stream (see [`accept`](Self::accept)).
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<ShmStream>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(r),
            Poll::Ready(None) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "shared memory listener stopped",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Region bytes committed to this listener's live streams now.
    pub fn region_bytes(&self) -> usize {
        self.budget.used()
    }

    /// The streams with their peer (`Peer::Shm(path)`), for
    /// `rpc_core::serve::Listener::incoming`: every protocol of a listener (gRPC, TTHeader)
    /// served over shared-memory byte streams.
    ///
    /// ```no_run
    /// # async fn f(server: rpc_core::Server) -> std::io::Result<()> {
    /// use rpc_core::serve::Listener;
    /// use rpc_transport_shm::ShmStreamListener;
    /// let path = "/tmp/grpc.shm";
    /// let running = Listener::new(server)
    ///     .protocol(rpc_transport_grpc::GrpcProtocol::default())
    ///     .incoming(rpc_core::Address::shm(path), ShmStreamListener::bind(path)?.into_incoming())
    ///     .start();
    /// # Ok(()) }
    /// ```
    pub fn into_incoming(
        self,
    ) -> impl futures::Stream<Item = io::Result<(ShmStream, Peer)>> + Send + 'static {
        use futures::StreamExt;
        let peer = Peer::Shm(self.path.clone());
        self.map(move |r| r.map(|s| (s, peer.clone())))
    }
}

impl futures::Stream for ShmStreamListener {
    type Item = io::Result<ShmStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_accept(cx).map(Some)
    }
}

impl Drop for ShmStreamListener {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(
    listener: UnixListener,
    cfg: ShmStreamBuilder,
    budget: Arc<RegionBudget>,
    out: mpsc::Sender<io::Result<ShmStream>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let mut handshakes = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let socket = tokio::select! {
            r = listener.accept() => r,
            // Reap finished handshakes as we go (the set would otherwise keep their results).
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
        };
        let socket = match socket {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: tell the user, keep listening.
                if out.send(Err(e)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (cfg, budget, out) = (cfg.clone(), budget.clone(), out.clone());
        handshakes.spawn(async move {
            let _permit = permit;
            let hs = setup::server_with(socket, &[], cfg.sizes, &budget, None, FEATURE_BYTE_STREAM);
            let r = match tokio::time::timeout(HANDSHAKE_TIMEOUT, hs).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "handshake timeout")),
            };
            match r.and_then(|(e, held)| ShmStream::start(e, cfg.max_chunk, Some(held))) {
                Ok(s) => {
                    let _ = out.send(Ok(s)).await;
                }
                Err(e) => tracing::debug!(error = %e, "shared memory stream handshake failed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(name: &str) -> (ShmStream, ShmStream) {
        let path = std::env::temp_dir().join(format!(
            "rpc-shm-stream-unit-{name}-{}.sock",
            std::process::id()
        ));
        let mut l = ShmStreamListener::bind(&path).unwrap();
        let (c, s) = tokio::join!(ShmStream::connect(&path), l.accept());
        (c.unwrap(), s.unwrap())
    }

    /// Pushes `slot` into `from`'s ring as a hostile peer would, and wakes the other side.
    fn push_raw(from: &ShmStream, slot: Slot) {
        let s = &*from.shared;
        let mut tx = lock(&s.tx);
        assert!(tx.producer.push(&slot).unwrap());
        tx.producer.take_parked();
        s.signal_peer();
    }

    /// Every malformed descriptor ends the stream with `InvalidData` on the receiving side's
    /// reads and `BrokenPipe` on its writes — never a panic or a hang.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_descriptors_are_typed_errors() {
        let bad: [(&str, Slot); 5] = [
            ("outside the arena", Slot::arena(u32::MAX - 10, 100)),
            ("empty chunk", Slot::arena(0, 0)),
            (
                "inline data",
                Slot::inline(b"not a stream descriptor").unwrap(),
            ),
            ("fallback", Slot::fallback(10)),
            ("bogus release", Slot::release(&[4096 * 3 + 1]).0),
        ];
        for (what, slot) in bad {
            let (mut a, mut b) = pair("hostile").await;
            a.write_all(b"ok").await.unwrap();
            a.flush().await.unwrap();
            push_raw(&a, slot);
            let r = tokio::time::timeout(Duration::from_secs(10), async {
                let mut got = Vec::new();
                b.read_to_end(&mut got).await.map(|_| got)
            })
            .await
            .unwrap_or_else(|_| panic!("{what}: hang"));
            let e = r.expect_err(what);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}: {e}");
            let w = b.write_all(b"x").await.and(b.flush().await);
            assert_eq!(w.unwrap_err().kind(), io::ErrorKind::BrokenPipe, "{what}");
        }
    }

    /// A peer flooding chunks it never could have allocated (the same block over and over)
    /// is cut off at the queue bound instead of growing it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunk_queue_is_bounded() {
        let (a, mut b) = pair("flood").await;
        let bound = b.shared.max_queue;
        let mut pushed = 0;
        let err = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let full = {
                    let s = &*a.shared;
                    let mut tx = lock(&s.tx);
                    let ok = tx.producer.push(&Slot::arena(0, 1024)).unwrap();
                    tx.producer.take_parked();
                    s.signal_peer();
                    !ok
                };
                if full {
                    tokio::task::yield_now().await;
                } else {
                    pushed += 1;
                }
                if b.shared.broken.load(Ordering::Acquire) {
                    break;
                }
            }
            // Reads drain what was queued, then fail.
            let mut sink = vec![0u8; 1 << 16];
            loop {
                match b.read(&mut sink).await {
                    Ok(0) => panic!("EOF instead of an error"),
                    Ok(_) => {}
                    Err(e) => break e,
                }
            }
        })
        .await
        .expect("no hang");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(
            pushed <= bound + 2 * DEFAULT_STREAM_RING_SLOTS,
            "{pushed} vs {bound}"
        );
        assert!(lock(&b.shared.rx).queue.len() <= bound);
    }
}
