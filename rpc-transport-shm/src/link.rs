//! One shared-memory session: the data plane between two processes, and the ttstream
//! [`Session`] it carries.
//!
//! Each side owns one region: the ring it produces descriptors into and the arena it
//! allocates frames from. A frame travels as one descriptor: inline (≤ [`INLINE_MAX`] bytes),
//! in the sender's arena (the receiver returns the block through its own ring once the last
//! `Bytes` pointing into it is dropped), or — larger than the arena — over the Unix socket
//! for that frame only. The socket otherwise carries the server's go-away (`crate::goaway`)
//! and tells us when the peer is gone (EOF).
//!
//! A batch of frames (`FrameSink::append_batch`) travels as one descriptor too, its frames
//! back to back (`Packer`; protocol version 2): a unary or server-streaming request holds
//! its Header back and sends it with its one message and the half-close, and a server's last
//! frames (Header, message, Trailer) go together, so a unary call is one descriptor each
//! way and the server's reader has the whole request before it dispatches the call (the
//! handler completes inline). A message over 4 KiB is not copied into a pack: it is encoded
//! straight into the arena, between the frames packed before and after it. Streams keep
//! ttstream's frames otherwise.
//!
//! - The **sink** ([`ShmSink`], the session's `FrameSink`) encodes a Data frame's message
//!   straight into an arena block (`Encodable::encode_slice`), pushes control frames inline,
//!   and makes senders wait (`poll_ready`) while the ring or the arena is full — never drops,
//!   never fails after a retry count. Frames appended while full (control frames never wait)
//!   queue in order in a local overflow the reader flushes as space returns; it counts as the
//!   session's write backlog, so a server stops reading before it grows without bound.
//! - The **reader** task pops descriptors, checks every offset and length against the peer's
//!   arena, hands frames to the session as `Bytes` pointing into shared memory, frees blocks
//!   the peer returns, and parks on its eventfd (through `AsyncFd`) after a short adaptive spin.
//!   The peer writes the eventfd only when the reader said it is parked.
//! - A malformed descriptor, an impossible ring index, a bogus release or a socket EOF ends the
//!   session: every stream fails with `UNAVAILABLE`, the socket is closed, our arena's
//!   bookkeeping is reset (whatever the peer held is ours again).
//! - The peer being **gone** (socket EOF or error, its process exited) does not overtake what
//!   it put in our ring before: the ring and the socket are two paths, and a peer ending right
//!   after its last frames (a server closing a drained session after a stream's trailer) has
//!   them there when the EOF arrives. The reader takes what the ring holds (at most one ring's
//!   worth, without pausing for backpressure) and only then ends the session.
//! - A server ending a drained session closes it only once the frames queued behind a full
//!   ring or arena went out ([`Link::flushed`]), within its grace period.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use rpc_core::codec::Encodable;
use rpc_core::{Code, Status};
use rpc_transport_ttheader::proto::StreamFrame;
use rpc_transport_ttheader::session::{
    append_data_frame, FrameSink, FrameWriter, Session, SinkError,
};
use tokio::sync::{mpsc, Notify};

use crate::arena::Arena;
use crate::mem::Memory;
use crate::ring::{
    arena_span, release_offsets, Consumer, Desc, Producer, RingError, Slot, INLINE_MAX,
};
use crate::stats::ShmStats;

/// A Data frame's head is at most this long in practice (fixed fields, method, frame type):
/// `poll_ready` reserves it on top of the message.
const HEAD_ESTIMATE: usize = 128;
/// Descriptors the reader handles before it looks at backpressure and returned space.
pub(crate) const BATCH: usize = 64;
/// The reader spins (`yield_now`, so the runtime's other tasks keep running) at least this
/// long on an empty ring before it parks: a peer answering within it costs no wakeup.
pub(crate) const MIN_SPIN: std::time::Duration = std::time::Duration::from_micros(2);
/// At most this long: the spin doubles each time it catches a frame and halves each time it
/// ends in parking, between the two bounds. 200 µs covers a loaded peer's gap between
/// frames (a 64 KiB message written and read back by 16 streams on a shared core): against
/// 50 µs, the shm bench's 16 streams made 1.1–1.25× the round trips at 64 KiB on a 2-core
/// VM at load 6–7 (same run, interleaved). An idle session spins once, at most this long,
/// then parks (`tests::an_idle_session_parks_and_burns_no_cpu`).
pub(crate) const MAX_SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// Blocks returned while our reader is parked (we are idle) are announced to a parked peer
/// this long after, not at once: a frame we send meanwhile carries them (a request/response
/// load's next call), so returning a reply's block costs the peer no wake-up of its own; an
/// idle session's arenas still return to zero. A peer that waits for space says so (its
/// waiting flag) and is woken at once.
pub(crate) const ANNOUNCE_DELAY: std::time::Duration = std::time::Duration::from_millis(1);

/// A spin reads the clock on every this many turns, not on each: a turn (`yield_now` and one
/// look at the ring) costs a few hundred ns on a one-worker runtime, and the clock read was
/// 9% of a 16-stream 4 KiB shm profile. Four turns overshoot a spin's end by at most about a
/// microsecond on an otherwise idle worker.
const CLOCK_EVERY: u32 = 4;

/// A reader's spin before it parks on an empty ring, adapted between [`MIN_SPIN`] and
/// [`MAX_SPIN`] to whether spinning has been catching frames (both data planes use it).
pub(crate) struct Spin {
    len: std::time::Duration,
    /// When the last spin that missed began (see [`Spin::woke`]).
    missed_at: Option<std::time::Instant>,
}

impl Spin {
    /// A spin of four times the shortest.
    pub(crate) fn new() -> Spin {
        Spin {
            len: MIN_SPIN * 4,
            missed_at: None,
        }
    }

    /// Yields until `ready` holds (true) or the spin's time is up (false); the next spin is
    /// twice as long after a catch and half as long after a miss (but see [`Spin::woke`]).
    pub(crate) async fn wait<E>(
        &mut self,
        mut ready: impl FnMut() -> Result<bool, E>,
    ) -> Result<bool, E> {
        let start = std::time::Instant::now();
        let until = start + self.len;
        let mut turn = 0u32;
        loop {
            tokio::task::yield_now().await;
            if ready()? {
                self.len = (self.len * 2).min(MAX_SPIN);
                self.missed_at = None;
                return Ok(true);
            }
            turn = turn.wrapping_add(1);
            if turn % CLOCK_EVERY == 0 && std::time::Instant::now() >= until {
                self.len = (self.len / 2).max(MIN_SPIN);
                self.missed_at = Some(start);
                return Ok(false);
            }
        }
    }

    /// The reader woke from parking after a missed spin. When the frame came within
    /// [`MAX_SPIN`] of the spin's start, a longer spin would have caught it without the
    /// peer's wake-up: the next spin is twice that wait. Without this, a ping-pong whose round
    /// trip includes the peer's own wake-up (tens of µs on a VM) never catches a frame, so both
    /// sides shrink their spin to the minimum and pay two wake-ups per round trip for good;
    /// with it, both spin through the round trip and it costs no wake-up at all. An idle
    /// session's frames come later than that and keep the spin short.
    pub(crate) fn woke(&mut self) {
        if let Some(start) = self.missed_at.take() {
            self.waited(start.elapsed());
        }
    }

    /// A frame came `waited` after the start of a spin that missed it.
    fn waited(&mut self, waited: std::time::Duration) {
        if waited <= MAX_SPIN {
            self.len = (waited * 2).clamp(MIN_SPIN, MAX_SPIN);
        }
    }
}

#[cfg(test)]
mod spin_tests {
    use super::{Spin, MAX_SPIN, MIN_SPIN};
    use std::time::Duration;

    #[tokio::test]
    async fn a_spin_grows_on_catches_and_on_frames_it_just_missed_and_shrinks_when_idle() {
        let mut spin = Spin::new();
        assert!(spin.wait(|| Ok::<_, ()>(true)).await.unwrap());
        assert_eq!(spin.len, MIN_SPIN * 8, "a catch doubles it");
        assert!(!spin.wait(|| Ok::<_, ()>(false)).await.unwrap());
        assert_eq!(spin.len, MIN_SPIN * 4, "a miss halves it");
        assert!(spin.missed_at.is_some());
        // The frame came 30 µs into the spin: next time spin through that.
        spin.waited(Duration::from_micros(30));
        assert_eq!(spin.len, Duration::from_micros(60));
        spin.waited(Duration::from_micros(150));
        assert_eq!(spin.len, MAX_SPIN, "never beyond the bound");
        // An idle peer's frame, long after: the spin stays short.
        spin.len = MIN_SPIN;
        spin.waited(Duration::from_millis(5));
        assert_eq!(spin.len, MIN_SPIN);
        // `woke` without a miss before it changes nothing.
        spin.missed_at = None;
        spin.woke();
        assert_eq!(spin.len, MIN_SPIN);
    }
}

/// The ttstream session over shared memory.
pub type ShmSession = Session<ShmSink>;

/// Sizes both sides agreed on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) ring_slots: usize,
    pub(crate) arena_off: usize,
    pub(crate) arena_len: usize,
}

enum Pending {
    Slot(Slot),
    Frame(Bytes),
}

impl Pending {
    fn len(&self) -> usize {
        match self {
            Pending::Slot(_) => crate::ring::SLOT,
            Pending::Frame(b) => b.len(),
        }
    }
}

struct Tx {
    producer: Producer,
    arena: Arena,
    overflow: VecDeque<Pending>,
    /// Blocks of the peer's arena we are done with, not yet returned (the ring was full).
    releases: Vec<u32>,
    /// Releases were pushed without waking the peer (see `Link::flush`).
    unannounced: bool,
    /// The peer said it waits for space and we had no block to return then: the next
    /// releases wake it at once, not after [`ANNOUNCE_DELAY`].
    peer_waits: bool,
    waiters: Vec<Waker>,
    /// Space came back since the waiters registered (blocks returned, ring slots popped, the
    /// overflow shrank): only then are they woken, so a sender whose peer holds every block
    /// unread waits quietly instead of ping-ponging wakeups.
    space_returned: bool,
    /// Free ring slots when the waiters registered.
    free_at_wait: u64,
}

/// The shared state of one session's data plane.
pub(crate) struct Link {
    tx_mem: Arc<dyn Memory>,
    rx_mem: Arc<dyn Memory>,
    layout: Layout,
    tx: Mutex<Tx>,
    /// Flag access to the peer's ring (its "producer waiting" flag).
    peer_flags: Consumer,
    wake_peer: OwnedFd,
    closed: AtomicBool,
    closed_notify: Notify,
    /// Why the peer is gone (socket EOF or error, process exit), once it is: the reader
    /// takes what the ring still holds, then ends the session with it.
    gone: OnceLock<Status>,
    gone_notify: Notify,
    progress: Notify,
    /// Releases were pushed unannounced while our reader was parked: it announces them after
    /// [`ANNOUNCE_DELAY`] unless a frame we send does first (`Link::announce_later`).
    lazy: Notify,
    backlog: AtomicUsize,
    /// Woken when the backlog drops to zero (see [`Link::flushed`]).
    flushed_notify: Notify,
    fallback: mpsc::UnboundedSender<Bytes>,
    max_frame: usize,
    stats: Arc<ShmStats>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// This link's arena bytes in use, mirrored for readers without the lock.
    in_use: AtomicUsize,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("layout", &self.layout)
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ring_status(e: &RingError) -> Status {
    Status::internal(format!("shared memory session: {e}"))
}

enum Placed {
    Done,
    NoRoom,
}

impl Link {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        tx_mem: Arc<dyn Memory>,
        rx_mem: Arc<dyn Memory>,
        layout: Layout,
        wake_peer: OwnedFd,
        fallback: mpsc::UnboundedSender<Bytes>,
        max_frame: usize,
        stats: Arc<ShmStats>,
    ) -> Result<(Arc<Link>, Consumer), RingError> {
        let producer = Producer::new(tx_mem.clone(), 0, layout.ring_slots)?;
        let consumer = Consumer::new(rx_mem.clone(), 0, layout.ring_slots)?;
        let peer_flags = Consumer::new(rx_mem.clone(), 0, layout.ring_slots)?;
        let arena = Arena::new(layout.arena_len).ok_or(RingError::Layout {
            cap: layout.ring_slots,
            offset: layout.arena_off,
            len: layout.arena_len,
        })?;
        let link = Arc::new(Link {
            tx_mem,
            rx_mem,
            layout,
            tx: Mutex::new(Tx {
                producer,
                arena,
                overflow: VecDeque::new(),
                releases: Vec::new(),
                unannounced: false,
                peer_waits: false,
                waiters: Vec::new(),
                space_returned: false,
                free_at_wait: 0,
            }),
            peer_flags,
            wake_peer,
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            gone: OnceLock::new(),
            gone_notify: Notify::new(),
            progress: Notify::new(),
            lazy: Notify::new(),
            backlog: AtomicUsize::new(0),
            flushed_notify: Notify::new(),
            fallback,
            max_frame,
            stats,
            tasks: Mutex::new(Vec::new()),
            in_use: AtomicUsize::new(0),
        });
        Ok((link, consumer))
    }

    pub(crate) fn add_task(&self, h: tokio::task::AbortHandle) {
        if self.is_closed() {
            h.abort();
        } else {
            lock(&self.tasks).push(h);
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves once the link is closed.
    pub(crate) async fn closed(&self) {
        loop {
            let n = self.closed_notify.notified();
            if self.is_closed() {
                return;
            }
            n.await;
        }
    }

    /// The peer is gone (`status` says how): the reader takes what the ring still holds and
    /// then ends the session with `status` (module docs). Only the first call counts.
    pub(crate) fn peer_gone(&self, status: Status) {
        if self.gone.set(status).is_ok() {
            self.gone_notify.notify_waiters();
        }
    }

    /// Why the peer is gone, once it is.
    fn gone(&self) -> Option<&Status> {
        self.gone.get()
    }

    /// Resolves once the peer is gone ([`Link::peer_gone`]).
    async fn peer_went(&self) {
        loop {
            let n = self.gone_notify.notified();
            if self.gone.get().is_some() {
                return;
            }
            n.await;
        }
    }

    /// Resolves once nothing we sent waits behind a full ring or arena or in the socket's
    /// queue (the write backlog is empty), or the link is closed.
    pub(crate) async fn flushed(&self) {
        loop {
            let n = self.flushed_notify.notified();
            if self.backlog.load(Ordering::Acquire) == 0 || self.is_closed() {
                return;
            }
            n.await;
        }
    }

    /// `n` bytes left the write backlog.
    fn unqueued(&self, n: usize) {
        if self.backlog.fetch_sub(n, Ordering::AcqRel) == n {
            self.flushed_notify.notify_waiters();
        }
    }

    /// Sends the peer a go-away over the socket (see [`crate::goaway`]): it opens no new
    /// stream on this session and closes it once its streams ended.
    pub(crate) fn send_goaway(&self) {
        let msg = Bytes::from_static(&crate::goaway::GOAWAY);
        self.backlog.fetch_add(msg.len(), Ordering::AcqRel);
        if self.fallback.send(msg).is_err() {
            self.unqueued(crate::goaway::GOAWAY.len());
        }
    }

    /// This session's arena bytes in use.
    pub(crate) fn arena_in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Ends the data plane: senders fail, the reader and socket tasks stop, and every block
    /// of our arena the peer held is ours again.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let waiters = {
            let mut tx = lock(&self.tx);
            let used = tx.arena.in_use();
            tx.arena.reset();
            self.set_in_use(used, 0);
            tx.overflow.clear();
            tx.releases.clear();
            std::mem::take(&mut tx.waiters)
        };
        self.backlog.store(0, Ordering::Release);
        for w in waiters {
            w.wake();
        }
        self.closed_notify.notify_waiters();
        self.flushed_notify.notify_waiters();
        self.progress.notify_waiters();
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }

    fn set_in_use(&self, before: usize, after: usize) {
        self.in_use.store(after, Ordering::Relaxed);
        if after >= before {
            self.stats
                .arena_in_use
                .fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.stats
                .arena_in_use
                .fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    fn signal_peer(&self) {
        crate::sys_signal(&self.wake_peer);
        self.stats.wakeups_sent.fetch_add(1, Ordering::Relaxed);
    }

    fn tx(&self) -> MutexGuard<'_, Tx> {
        lock(&self.tx)
    }

    /// The bytes of a block of our arena just allocated from `tx.arena` (the `&mut Tx` proves
    /// the send lock is held).
    fn arena_slice<'a>(&'a self, _tx: &'a mut Tx, offset: u32, len: usize) -> &'a mut [u8] {
        let start = self.layout.arena_off + offset as usize;
        assert!(
            start + len <= self.tx_mem.len(),
            "arena block inside the region"
        );
        // SAFETY: in bounds (asserted; offsets come from our own allocator, never the peer).
        // The block was just allocated and is not yet published, so the peer (which reads it
        // only after its descriptor, and writes only its own region and ring indices) does not
        // touch it, and no other local writer can: the allocator hands each block out once and
        // we hold the send lock (`_tx`) for as long as the slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.tx_mem.base().as_ptr().add(start), len) }
    }

    /// Pushes a descriptor, or queues it behind earlier ones.
    fn push_slot(&self, tx: &mut Tx, slot: Slot) -> Result<(), RingError> {
        if tx.overflow.is_empty() {
            self.push_releases(tx)?;
            if tx.producer.push(&slot)? {
                self.sent_frame();
                self.announce(tx);
                return Ok(());
            }
        }
        self.queue(tx, Pending::Slot(slot))
    }

    fn queue(&self, tx: &mut Tx, p: Pending) -> Result<(), RingError> {
        self.backlog.fetch_add(p.len(), Ordering::AcqRel);
        tx.overflow.push_back(p);
        if !tx.producer.has_space()? {
            tx.producer.set_waiting()?;
        }
        Ok(())
    }

    /// Places a whole encoded frame: inline, in the arena (one copy: this path is for control
    /// frames and messages of unknown length), or over the socket.
    fn try_place(&self, tx: &mut Tx, frame: &Bytes) -> Result<Placed, RingError> {
        self.push_releases(tx)?;
        if !tx.producer.has_space()? {
            return Ok(Placed::NoRoom);
        }
        let slot = if let Some(s) = Slot::inline(frame) {
            s
        } else if frame.len() <= self.layout.arena_len {
            let Some((off, _)) = tx.arena.alloc_exact(frame.len()) else {
                return Ok(Placed::NoRoom);
            };
            self.note_alloc(tx);
            self.arena_slice(tx, off, frame.len())
                .copy_from_slice(frame);
            Slot::arena(off, frame.len() as u32)
        } else {
            let len = u32::try_from(frame.len())
                .map_err(|_| RingError::BadDescriptor("frame over 4 GiB"))?;
            self.backlog.fetch_add(frame.len(), Ordering::AcqRel);
            self.stats.fallback_messages.fetch_add(1, Ordering::Relaxed);
            let _ = self.fallback.send(frame.clone());
            Slot::fallback(len)
        };
        if tx.producer.push(&slot)? {
            self.sent_frame();
        }
        self.announce(tx);
        Ok(Placed::Done)
    }

    /// Pushes the blocks we are done with (batched, up to `RELEASE_MAX` per descriptor) ahead
    /// of whatever comes next; returns whether any went out.
    fn push_releases(&self, tx: &mut Tx) -> Result<bool, RingError> {
        let mut returned = false;
        while !tx.releases.is_empty() {
            let (slot, n) = Slot::release(&tx.releases);
            if !tx.producer.push(&slot)? {
                tx.producer.set_waiting()?;
                break;
            }
            tx.releases.drain(..n);
            returned = true;
            tx.unannounced = true;
        }
        Ok(returned)
    }

    /// Everything pushed so far is visible to the peer: wake it if it is parked.
    fn announce(&self, tx: &mut Tx) {
        tx.unannounced = false;
        if tx.producer.take_parked() {
            self.signal_peer();
        }
    }

    /// Our reader is about to park: make sure the peer sees the blocks we returned.
    fn before_park(&self) -> Result<(), RingError> {
        let mut tx = self.tx();
        self.push_releases(&mut tx)?;
        if tx.unannounced {
            self.announce(&mut tx);
        }
        Ok(())
    }

    /// While our reader is parked: announces releases left unannounced by `flush` once
    /// [`ANNOUNCE_DELAY`] passed (a frame sent meanwhile announced them already). Never
    /// returns; the reader drops it when it wakes.
    async fn announce_later(&self) {
        loop {
            self.lazy.notified().await;
            tokio::time::sleep(ANNOUNCE_DELAY).await;
            let mut tx = self.tx();
            if tx.unannounced {
                self.announce(&mut tx);
            }
        }
    }

    /// A descriptor carrying a frame (or a pack of them) went into the ring.
    fn sent_frame(&self) {
        self.stats.descriptors_sent.fetch_add(1, Ordering::Relaxed);
    }

    fn note_alloc(&self, tx: &Tx) {
        let now = tx.arena.in_use();
        let before = self.in_use.load(Ordering::Relaxed);
        self.set_in_use(before, now);
    }

    /// Places a pack of whole frames (at most the arena's size) as one descriptor, copied
    /// into an inline slot or an arena block; behind queued frames or without room, it is
    /// queued like any frame.
    fn place_packed(&self, tx: &mut Tx, pack: &[u8]) -> Result<(), RingError> {
        if tx.overflow.is_empty() {
            self.push_releases(tx)?;
            if tx.producer.has_space()? {
                let slot = if let Some(s) = Slot::inline(pack) {
                    Some(s)
                } else if let Some((off, _)) = tx.arena.alloc_exact(pack.len()) {
                    self.note_alloc(tx);
                    self.arena_slice(tx, off, pack.len()).copy_from_slice(pack);
                    Some(Slot::arena(off, pack.len() as u32))
                } else {
                    None
                };
                if let Some(slot) = slot {
                    if tx.producer.push(&slot)? {
                        self.sent_frame();
                    }
                    self.announce(tx);
                    return Ok(());
                }
            }
        }
        self.place_frame(tx, Bytes::copy_from_slice(pack))
    }

    fn place_frame(&self, tx: &mut Tx, frame: Bytes) -> Result<(), RingError> {
        if tx.overflow.is_empty() {
            if let Placed::Done = self.try_place(tx, &frame)? {
                return Ok(());
            }
            if tx.producer.has_space()? {
                // The arena is full: the peer returns blocks through its ring; make sure its
                // reader is awake to flush them.
                self.ask_for_releases(tx)?;
            }
        }
        self.queue(tx, Pending::Frame(frame))
    }

    fn ask_for_releases(&self, tx: &mut Tx) -> Result<(), RingError> {
        tx.producer.set_waiting()?;
        self.signal_peer();
        Ok(())
    }

    /// Flushes pending releases and queued frames as far as space allows; wakes senders and
    /// the paused reader when space came back.
    fn flush(&self) -> Result<(), RingError> {
        let mut tx = self.tx();
        let tx = &mut *tx;
        let returned = self.push_releases(tx)?;
        // The peer waits for space (its ring or its arena, which our releases refill): wake
        // it. Returned blocks alone do not wake a parked peer while our reader is busy: the
        // next frame we send (or our reader going idle) carries them (`announce`), so a
        // request/response load costs no extra wakeup per returned block.
        if returned {
            tx.unannounced = true;
        }
        if self.peer_flags.take_waiting() {
            tx.unannounced = false;
            // Woken with nothing returned, it may wait for blocks we still hold.
            tx.peer_waits = !returned;
            self.signal_peer();
        } else if returned && tx.peer_waits {
            tx.peer_waits = false;
            self.announce(tx);
        } else if returned && self.peer_flags.peek_parked() {
            // Our reader is parked (we are idle): the next frame we send carries them, or our
            // parked reader announces them after `ANNOUNCE_DELAY` (`announce_later`).
            self.lazy.notify_one();
        }
        let mut shrunk = false;
        while let Some(front) = tx.overflow.front() {
            let placed = match front {
                Pending::Slot(s) => {
                    if tx.producer.push(s)? {
                        self.sent_frame();
                        Placed::Done
                    } else {
                        Placed::NoRoom
                    }
                }
                Pending::Frame(f) => {
                    let f = f.clone();
                    self.try_place(tx, &f)?
                }
            };
            match placed {
                Placed::Done => {
                    if let Some(p) = tx.overflow.pop_front() {
                        self.unqueued(p.len());
                    }
                    shrunk = true;
                }
                Placed::NoRoom => {
                    if tx.producer.has_space()? {
                        self.ask_for_releases(tx)?;
                    } else {
                        tx.producer.set_waiting()?;
                    }
                    break;
                }
            }
        }
        if shrunk {
            self.announce(tx);
            self.progress.notify_one();
        }
        if !tx.waiters.is_empty() {
            let more_slots = tx.producer.free()? > tx.free_at_wait;
            if tx.overflow.is_empty() && (tx.space_returned || more_slots || shrunk) {
                tx.space_returned = false;
                for w in tx.waiters.drain(..) {
                    w.wake();
                }
            }
        }
        Ok(())
    }

    /// A received block of the peer's arena is no longer referenced: return it (batched; a
    /// peer waiting for space is woken at once, a parked one by the next frame we send or
    /// after [`ANNOUNCE_DELAY`], so its arena usage returns to zero when idle).
    fn release(&self, offset: u32) {
        if self.is_closed() {
            return;
        }
        {
            let mut tx = self.tx();
            tx.releases.push(offset);
            // Batched: the next frame we push, our reader's next batch or its going idle
            // carries them. Only an idle reader (nothing else will come soon) or a full batch
            // pushes now.
            if tx.releases.len() < crate::ring::RELEASE_MAX && !self.peer_flags.peek_parked() {
                return;
            }
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "shared memory ring failed while returning a block");
            self.close();
        }
    }

    /// Frees blocks the peer returned.
    fn on_release(&self, offsets: &[u8]) -> Result<(), Status> {
        let mut tx = self.tx();
        for off in release_offsets(offsets) {
            tx.arena.free(off).map_err(|e| {
                Status::internal(format!("shared memory session: peer returned {e}"))
            })?;
        }
        self.note_alloc(&tx);
        tx.space_returned = true;
        Ok(())
    }

    fn written(&self, n: usize) {
        self.unqueued(n);
        self.progress.notify_one();
    }
}

/// A block of the peer's arena holding one received frame: the owner of the `Bytes` the
/// session hands out. Dropping the last reference returns the block.
struct RxBlock {
    link: Arc<Link>,
    offset: u32,
    len: usize,
}

impl AsRef<[u8]> for RxBlock {
    fn as_ref(&self) -> &[u8] {
        let start = self.link.layout.arena_off + self.offset as usize;
        // SAFETY: `start + len <= rx_mem.len()` was checked against the negotiated layout when
        // the descriptor was read (`Reader::frame_of`); the mapping lives as long as
        // `self.link` holds `rx_mem`. The block is the peer's and by protocol it does not write
        // it until we return it (on drop). A peer breaking that rule only changes bytes that
        // every decoder reads as untrusted input with bounds-checked indexing; it cannot make
        // this slice dangle or change its length.
        unsafe { std::slice::from_raw_parts(self.link.rx_mem.base().as_ptr().add(start), self.len) }
    }
}

impl Drop for RxBlock {
    fn drop(&mut self) {
        self.link.release(self.offset);
    }
}

/// The session's [`FrameSink`]: frames into the ring and the arena.
#[derive(Debug, Clone)]
pub struct ShmSink(pub(crate) Arc<Link>);

impl ShmSink {
    /// Bytes of this session's own arena in use (frames the peer has not returned yet).
    pub fn arena_in_use(&self) -> usize {
        self.0.arena_in_use()
    }

    fn fail(&self, e: RingError) -> SinkError {
        tracing::warn!(error = %e, "shared memory ring failed; closing the session");
        self.0.close();
        SinkError::Closed
    }
}

impl FrameSink for ShmSink {
    fn poll_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), SinkError>> {
        let link = &self.0;
        if link.is_closed() {
            return Poll::Ready(Err(SinkError::Closed));
        }
        let mut tx = link.tx();
        let need = len + HEAD_ESTIMATE;
        let ring = match tx.producer.has_space() {
            Ok(r) => r,
            Err(e) => return Poll::Ready(Err(self.fail(e))),
        };
        let arena = need <= INLINE_MAX || need > link.layout.arena_len || tx.arena.can_alloc(need);
        if tx.overflow.is_empty() && ring && arena {
            return Poll::Ready(Ok(()));
        }
        if tx.waiters.is_empty() {
            tx.space_returned = false;
            tx.free_at_wait = match tx.producer.free() {
                Ok(f) => f,
                Err(e) => return Poll::Ready(Err(self.fail(e))),
            };
        }
        if !tx.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            tx.waiters.push(cx.waker().clone());
        }
        link.stats.sender_waits.fetch_add(1, Ordering::Relaxed);
        let r = if !ring {
            tx.producer.set_waiting().map(drop)
        } else if !arena {
            link.ask_for_releases(&mut tx)
        } else {
            // Behind queued frames: the reader flushes them as space returns.
            tx.producer.set_waiting().map(drop)
        };
        if let Err(e) = r {
            drop(tx);
            return Poll::Ready(Err(self.fail(e)));
        }
        Poll::Pending
    }

    fn append_frame(&self, frame: &StreamFrame) -> Result<(), SinkError> {
        if self.0.is_closed() {
            return Err(SinkError::Closed);
        }
        let mut buf = BytesMut::with_capacity(64 + frame.payload.len());
        frame
            .encode(&mut buf)
            .map_err(|e| SinkError::Frame(Status::internal(e.to_string())))?;
        let mut tx = self.0.tx();
        self.0.place_frame(&mut tx, buf.freeze()).map_err(|e| {
            drop(tx);
            self.fail(e)
        })
    }

    fn append_data(
        &self,
        head: &[u8],
        msg: &mut dyn Encodable,
        max_frame: usize,
    ) -> Result<(), SinkError> {
        let link = &self.0;
        if link.is_closed() {
            return Err(SinkError::Closed);
        }
        let too_large = |len: usize| {
            SinkError::Frame(Status::new(
                Code::ResourceExhausted,
                format!("frame of {len} bytes exceeds the limit of {max_frame}"),
            ))
        };
        if let Some(n) = msg.encoded_len() {
            let total = head.len() + n;
            if total.saturating_sub(4) > max_frame.min(link.max_frame) {
                return Err(too_large(total - 4));
            }
            let length = ((total - 4) as u32).to_be_bytes();
            let mut tx = link.tx();
            let ready =
                tx.overflow.is_empty() && tx.producer.has_space().map_err(|e| self.fail(e))?;
            if ready {
                if let Some(mut slot) = Slot::inline_empty(total) {
                    let buf = slot.inline_mut();
                    buf[..head.len()].copy_from_slice(head);
                    msg.encode_slice(&mut buf[head.len()..])
                        .map_err(SinkError::Frame)?;
                    buf[..4].copy_from_slice(&length);
                    return link.push_slot(&mut tx, slot).map_err(|e| {
                        drop(tx);
                        self.fail(e)
                    });
                }
                if total <= link.layout.arena_len {
                    if let Some((off, _)) = tx.arena.alloc_exact(total) {
                        link.note_alloc(&tx);
                        let dst = link.arena_slice(&mut tx, off, total);
                        dst[..head.len()].copy_from_slice(head);
                        // Zero copy: the codec writes straight into shared memory.
                        if let Err(s) = msg.encode_slice(&mut dst[head.len()..]) {
                            let _ = tx.arena.free(off);
                            link.note_alloc(&tx);
                            return Err(SinkError::Frame(s));
                        }
                        dst[..4].copy_from_slice(&length);
                        return link
                            .push_slot(&mut tx, Slot::arena(off, total as u32))
                            .map_err(|e| {
                                drop(tx);
                                self.fail(e)
                            });
                    }
                }
            }
        }
        // Unknown length, or no room right now (a sender that did not wait): encode into a
        // buffer and place it whole (one copy).
        let mut buf = BytesMut::new();
        append_data_frame(&mut buf, head, msg, max_frame.min(link.max_frame))
            .map_err(SinkError::Frame)?;
        let mut tx = link.tx();
        link.place_frame(&mut tx, buf.freeze()).map_err(|e| {
            drop(tx);
            self.fail(e)
        })
    }

    fn append_batch(&self, write: &mut dyn FnMut(&mut dyn FrameWriter)) {
        thread_local! {
            /// Where a batch is packed before it is copied into a slot or a block (kept per
            /// thread, at most `PACK_KEEP` bytes of it, so a batch allocates nothing).
            static PACK: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
        }
        PACK.with(|cell| {
            let mut fresh = BytesMut::new();
            let mut scratch = cell.try_borrow_mut();
            let buf = match scratch.as_deref_mut() {
                Ok(b) => b,
                // Re-entered (not in practice): a buffer of its own.
                Err(_) => &mut fresh,
            };
            buf.clear();
            let mut packer = Packer { sink: self, buf };
            write(&mut packer);
            packer.flush();
            if buf.capacity() > PACK_KEEP {
                *buf = BytesMut::new();
            }
        });
    }

    fn batches_one_shot_requests(&self) -> bool {
        true
    }

    fn backlog(&self) -> usize {
        self.0.backlog.load(Ordering::Acquire)
    }

    fn progress(&self) -> &Notify {
        &self.0.progress
    }

    fn close(&self) {
        self.0.close();
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Frames of a batch ([`FrameSink::append_batch`]: a one-shot request's Header, message and
/// half-close; a reply's Header, message and Trailer) packed back to back into one
/// descriptor, so the peer's reader takes them as one unit ([`Session::on_frames`]). A message
/// larger than [`PACK_MAX`] is not copied into the pack: what is packed so far goes out, then
/// the message through the zero-copy path of [`FrameSink::append_data`].
struct Packer<'a> {
    sink: &'a ShmSink,
    buf: &'a mut BytesMut,
}

/// Largest message a pack copies (larger ones are encoded straight into the arena).
const PACK_MAX: usize = 4096;
/// Capacity a thread keeps for packing between batches.
const PACK_KEEP: usize = 64 * 1024;

impl Packer<'_> {
    /// Places what is packed as one descriptor (or, larger than the arena, frame by frame).
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let link = &self.sink.0;
        let mut tx = link.tx();
        let r = if self.buf.len() <= link.layout.arena_len {
            link.place_packed(&mut tx, self.buf)
        } else {
            let mut r = Ok(());
            while r.is_ok() && self.buf.len() >= 4 {
                let n = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                let end = (n as usize + 4).min(self.buf.len());
                r = link.place_frame(&mut tx, self.buf.split_to(end).freeze());
            }
            r
        };
        self.buf.clear();
        if let Err(e) = r {
            drop(tx);
            let _ = self.sink.fail(e);
        }
    }
}

impl FrameWriter for Packer<'_> {
    fn frame(&mut self, frame: &StreamFrame) -> Result<(), SinkError> {
        if self.sink.0.is_closed() {
            return Err(SinkError::Closed);
        }
        frame
            .encode(self.buf)
            .map_err(|e| SinkError::Frame(Status::internal(e.to_string())))
    }

    fn data(
        &mut self,
        head: &[u8],
        msg: &mut dyn Encodable,
        max_frame: usize,
    ) -> Result<(), SinkError> {
        let link = &self.sink.0;
        if link.is_closed() {
            return Err(SinkError::Closed);
        }
        if msg.encoded_len().is_none_or(|n| n > PACK_MAX) {
            self.flush();
            return self.sink.append_data(head, msg, max_frame);
        }
        append_data_frame(self.buf, head, msg, max_frame.min(link.max_frame))
            .map_err(SinkError::Frame)
    }
}

/// What ended a session, for the streams' `UNAVAILABLE`.
pub(crate) fn lost(session: &ShmSession, link: &Link, status: Status) {
    session.on_lost(status);
    link.close();
}

/// The reader task: pops descriptors, feeds the session, parks on the eventfd.
pub(crate) struct Reader {
    pub(crate) link: Arc<Link>,
    pub(crate) consumer: Consumer,
    pub(crate) session: Arc<ShmSession>,
    pub(crate) wake_me: tokio::io::unix::AsyncFd<OwnedFd>,
    pub(crate) fallback: mpsc::Receiver<Bytes>,
}

impl Reader {
    pub(crate) async fn run(mut self) {
        let status = match self.serve().await {
            Ok(()) => Status::unavailable("shared memory session closed"),
            Err(s) => s,
        };
        if status.code() != Code::Unavailable {
            tracing::warn!(%status, "shared memory session failed");
        }
        lost(&self.session, &self.link, status);
    }

    fn frame_of(&self, d: Desc<'_>) -> Result<Option<Bytes>, Status> {
        match d {
            Desc::Inline(b) => Ok(Some(Bytes::copy_from_slice(b))),
            Desc::Arena { offset, len } => {
                let arena_len = self.link.layout.arena_len;
                let span = arena_span(offset, len, arena_len).map_err(|_| {
                    Status::internal(format!(
                        "shared memory session: descriptor [{offset}, +{len}) outside the peer's arena of {arena_len} bytes",
                    ))
                })?;
                Ok(Some(Bytes::from_owner(RxBlock {
                    link: self.link.clone(),
                    offset,
                    len: span.len(),
                })))
            }
            Desc::Release(offsets) => {
                self.link.on_release(offsets)?;
                Ok(None)
            }
            Desc::Fallback { .. } => Ok(None),
        }
    }

    async fn serve(&mut self) -> Result<(), Status> {
        let mut spin = Spin::new();
        loop {
            if self.link.is_closed() {
                return Ok(());
            }
            // Looked at before the ring: whatever the peer pushed before it went is there now.
            if let Some(status) = self.link.gone().cloned() {
                self.take_the_rest().await?;
                return Err(status);
            }
            let mut n = 0;
            while n < BATCH && self.take_one().await? {
                n += 1;
            }
            // Streams whose Header came in this batch without their first message go to the
            // server now (see `Session::dispatch_pending`).
            self.session.dispatch_pending();
            if n > 0 && self.consumer.take_waiting() {
                self.link.signal_peer();
            }
            self.link.flush().map_err(|e| ring_status(&e))?;
            if n > 0 {
                if self.session.must_pause(0) {
                    // A peer that is gone sends nothing more: what it left is taken at once.
                    tokio::select! {
                        _ = self.session.wait_readable(0) => {}
                        () = self.link.peer_went() => {}
                    }
                }
                continue;
            }
            // Nothing: spin a little (the peer may be about to answer), then park.
            let consumer = &mut self.consumer;
            if spin
                .wait(|| consumer.is_empty().map(|e| !e).map_err(|e| ring_status(&e)))
                .await?
            {
                continue;
            }
            if !self.consumer.park().map_err(|e| ring_status(&e))? {
                continue;
            }
            // After the parked flag is set (a drop racing with us either sees the flag or
            // leaves `unannounced` for this call; both under the send lock).
            self.link.before_park().map_err(|e| ring_status(&e))?;
            tokio::select! {
                r = self.wake_me.readable() => {
                    match r {
                        Ok(mut guard) => {
                            if crate::sys_drain(self.wake_me.get_ref()) {
                                self.link.stats.wakeups_received.fetch_add(1, Ordering::Relaxed);
                            }
                            guard.clear_ready();
                        }
                        Err(e) => return Err(Status::unavailable(format!("eventfd: {e}"))),
                    }
                }
                () = self.link.closed() => {}
                () = self.link.peer_went() => {}
                () = self.link.announce_later() => {}
            }
            self.consumer.unpark();
            spin.woke();
        }
    }

    /// The peer is gone: hands the session every frame still in the ring (module docs). At
    /// most one ring's worth: a peer that keeps pushing after it closed its socket gets no
    /// more than that.
    async fn take_the_rest(&mut self) -> Result<(), Status> {
        for _ in 0..self.link.layout.ring_slots {
            if !self.take_one().await? {
                break;
            }
        }
        self.session.dispatch_pending();
        Ok(())
    }

    /// Takes the next frame off the ring, if there is one, and hands it to the session; says
    /// whether there was one.
    async fn take_one(&mut self) -> Result<bool, Status> {
        let Some(slot) = self.consumer.pop().map_err(|e| ring_status(&e))? else {
            return Ok(false);
        };
        let desc = slot.decode().map_err(|e| ring_status(&e))?;
        let is_fallback = matches!(desc, Desc::Fallback { .. });
        let frame = match desc {
            Desc::Fallback { len } => Some(self.fallback_frame(len).await?),
            d => self.frame_of(d)?,
        };
        if let Some(f) = frame {
            match is_fallback {
                true => self.session.on_whole_frame(f)?,
                // A descriptor carries one frame or a pack of them (`Packer`).
                false => self.session.on_frames(f)?,
            }
        }
        Ok(true)
    }

    async fn fallback_frame(&mut self, len: u32) -> Result<Bytes, Status> {
        if len as usize > self.link.max_frame + 4 {
            return Err(Status::internal(format!(
                "shared memory session: fallback frame of {len} bytes over the limit"
            )));
        }
        let frame = tokio::select! {
            f = self.fallback.recv() => f,
            () = self.link.closed() => None,
        };
        let frame =
            frame.ok_or_else(|| Status::unavailable("shared memory peer closed the socket"))?;
        if frame.len() != len as usize {
            return Err(Status::internal(format!(
                "shared memory session: fallback frame of {} bytes, descriptor said {len}",
                frame.len()
            )));
        }
        Ok(frame)
    }
}

/// Writes fallback frames to the socket, in order.
pub(crate) async fn socket_writer(
    link: Arc<Link>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    mut w: tokio::net::unix::OwnedWriteHalf,
) {
    use tokio::io::AsyncWriteExt;
    while let Some(b) = rx.recv().await {
        if w.write_all(&b).await.is_err() {
            break;
        }
        link.written(b.len());
    }
}

/// Reads fallback frames from the socket (each a whole TTHeader frame, LENGTH-prefixed and
/// capped) and notices EOF: the peer is gone.
pub(crate) async fn socket_reader(
    session: Arc<ShmSession>,
    link: Arc<Link>,
    mut r: tokio::net::unix::OwnedReadHalf,
    tx: mpsc::Sender<Bytes>,
) {
    use tokio::io::AsyncReadExt;
    let status = loop {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len).await {
            Ok(_) => {}
            // The peer is gone, but what it pushed into the ring before is still to be read
            // (module docs): the reader ends the session once it took it.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return link.peer_gone(Status::unavailable(
                    "shared memory peer closed the connection",
                ));
            }
            Err(e) => {
                return link.peer_gone(Status::unavailable(format!("shared memory socket: {e}")))
            }
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == crate::goaway::GOAWAY_BODY.len() {
            // Too short for a TTHeader frame: a control message (`crate::goaway`).
            let mut body = [0u8; crate::goaway::GOAWAY_BODY.len()];
            if let Err(e) = r.read_exact(&mut body).await {
                break Status::unavailable(format!("shared memory socket: {e}"));
            }
            match crate::goaway::decode(&body) {
                Ok(()) => on_goaway(&session, &link),
                Err(e) => break e,
            }
            continue;
        }
        if n > link.max_frame {
            break Status::internal(format!(
                "shared memory session: fallback frame of {n} bytes over the limit of {}",
                link.max_frame
            ));
        }
        let mut buf = BytesMut::with_capacity(n + 4);
        buf.extend_from_slice(&len);
        buf.resize(n + 4, 0);
        if let Err(e) = r.read_exact(&mut buf[4..]).await {
            break Status::unavailable(format!("shared memory socket: {e}"));
        }
        if tx.send(buf.freeze()).await.is_err() {
            return;
        }
    };
    lost(&session, &link, status);
}

/// The peer said go away: no new stream on this session; once its streams ended it is
/// retired (atomically with `open`, see `Session::retire_idle`) and closed. A second go-away
/// changes nothing.
fn on_goaway(session: &Arc<ShmSession>, link: &Arc<Link>) {
    if !session.is_usable() {
        return;
    }
    session.start_drain();
    let (s, l) = (session.clone(), link.clone());
    let task = tokio::spawn(async move {
        loop {
            // Resolves once no stream is open (or the session is lost).
            s.drain().await;
            if s.lost().is_some() {
                return;
            }
            if s.retire_idle() {
                lost(&s, &l, Status::unavailable("server went away"));
                return;
            }
        }
    });
    link.add_task(task.abort_handle());
}
