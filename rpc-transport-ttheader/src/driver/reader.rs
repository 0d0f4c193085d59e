//! One read of a connection's socket, bounded by the frame, idle and silence timeouts, into a
//! [`ReadBuffer`] that holds (and charges) no more than its bytes need.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpc_core::limits::ServerLimits;
use rpc_core::Status;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::config::RxCharge;
use super::io::ReadHalf;
use crate::session::{Limits, MAX_CHUNK};

/// The smallest read chunk: what an idle or lightly used connection's buffer settles to.
pub(crate) const MIN_CHUNK: usize = 8 * 1024;
/// Room under which a buffer is grown (or reclaimed) before the next read.
const MIN_SPARE: usize = 1024;

/// A connection's read buffer: one allocation at a time, sized to what is being read, its
/// capacity charged to the server-wide budget (what the process holds, not only the bytes
/// received).
///
/// - With no frame in progress it reads in chunks of [`MIN_CHUNK`]..[`MAX_CHUNK`] bytes,
///   doubling while reads fill the buffer and halving when they come small, and drops an
///   emptied buffer larger than the current chunk (an idle connection holds 8 KiB).
/// - A frame larger than what is buffered gets room in steps: at most as much again as is
///   buffered (at least a chunk), never past the frame's end, so a frame's buffer holds
///   exactly that frame when complete and a peer that stops half-way holds at most twice
///   what it sent. Growing past the connection's reserve takes room from the budget first
///   ([`ReadBuffer::grow`]); without room the reader waits.
///
/// Messages are cut from the buffer as slices. A server copies a small message out of it
/// when the message is kept past the reader's batch (see `session::copies`), so the chunk is
/// normally free again when the batch ends; an allocation the reader lets go of while a slice
/// of it is still alive (a handler kept part of a message: a raw-bytes codec, a `Bytes`
/// field) stays charged, as pinned, until it is freed ([`ReadBuffer::held`]).
pub(crate) struct ReadBuffer {
    pub(crate) buf: BytesMut,
    /// The capacity of the allocation `buf` reads into, charged.
    charge: RxCharge,
    /// The end of that allocation (to notice a decoder that reallocated it).
    end: usize,
    chunk: usize,
    /// Whether the allocation was made for a frame larger than [`MAX_CHUNK`] (its own
    /// buffer, whose message is kept as a slice of it).
    large_frame: bool,
    /// Allocations let go of while still shared.
    pinned: std::sync::Mutex<Pinned>,
}

/// Allocations a reader let go of while slices of them were alive elsewhere: each is kept
/// (a handle on it, which holds no more than they do) and charged with the capacity it was
/// charged for until the handle is the last one left.
struct Pinned {
    chunks: Vec<(Bytes, usize)>,
    charge: RxCharge,
}

impl Pinned {
    /// Lets go of the allocations no one else holds any more; returns the bytes still pinned.
    fn settle(&mut self) -> usize {
        if self.chunks.is_empty() {
            return 0;
        }
        self.chunks.retain(|(b, _)| !b.is_unique());
        let n = self.chunks.iter().map(|(_, n)| n).sum();
        self.charge.set(n);
        if self.chunks.is_empty() {
            // Rare: no spare capacity kept for the next time.
            self.chunks = Vec::new();
        }
        n
    }
}

/// Whether a read buffer can grow now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    /// It has room (or was given it).
    Ready,
    /// It must grow and the budget has no room: wait for a release.
    Wait,
}

impl ReadBuffer {
    /// A buffer starting with `prefix` (bytes already read), charging `budget` if any.
    pub(crate) fn new(
        prefix: BytesMut,
        budget: Option<std::sync::Arc<rpc_core::limits::ByteBudget>>,
    ) -> ReadBuffer {
        let mut rb = ReadBuffer {
            buf: prefix,
            charge: RxCharge::new(budget.clone()),
            end: 0,
            chunk: MIN_CHUNK,
            large_frame: false,
            pinned: std::sync::Mutex::new(Pinned {
                chunks: Vec::new(),
                charge: RxCharge::new(budget),
            }),
        };
        rb.sync();
        rb
    }

    fn end_of(buf: &BytesMut) -> usize {
        buf.as_ptr() as usize + buf.capacity()
    }

    /// Bytes charged (the buffer's allocation).
    pub(crate) fn charged(&self) -> usize {
        self.charge.get()
    }

    /// Bytes held: the buffer's allocation and the allocations let go of that slices still
    /// pin (those freed meanwhile are released first).
    pub(crate) fn held(&self) -> usize {
        // (Only the reader's task uses the buffer: the lock is never contended; a `Mutex`
        // because the reader's pause condition borrows the buffer across an `await`.)
        let pinned = match self.pinned.try_lock() {
            Ok(mut p) => p.settle(),
            Err(_) => 0,
        };
        self.charged() + pinned
    }

    /// Whether allocations the reader let go of are still pinned (charged until freed).
    pub(crate) fn has_pinned(&self) -> bool {
        match self.pinned.try_lock() {
            Ok(p) => !p.chunks.is_empty(),
            Err(_) => false,
        }
    }

    /// Lets go of the buffer's allocation (`charged`: the bytes it was charged for): returns
    /// its bytes, moved to the front of an allocation of `cap` bytes (at least their length),
    /// the same one if no one else holds it; else a read chunk stays charged while it is
    /// pinned ([`Pinned`]). A large frame's own buffer is not: its message is kept as a slice
    /// of it on purpose and charged by whoever holds it (`session::held_for`).
    fn let_go(&mut self, cap: usize, charged: usize) -> Vec<u8> {
        let old = std::mem::take(&mut self.buf).freeze();
        if charged == 0 || self.large_frame || old.is_unique() {
            // (`Vec` takes a unique allocation back whole: no copy, no allocation.)
            let mut v = Vec::from(old);
            v.reserve_exact(cap.saturating_sub(v.len()));
            return v;
        }
        let mut v = Vec::with_capacity(cap.max(old.len()));
        v.extend_from_slice(&old);
        let p = self.pinned.get_mut().unwrap_or_else(|e| e.into_inner());
        p.settle();
        p.chunks.push((old, charged));
        let total = p.charge.get() + charged;
        p.charge.set(total);
        v
    }

    /// After a decoder ran: if it moved the buffer to a new allocation, charge that one.
    pub(crate) fn sync(&mut self) {
        let end = Self::end_of(&self.buf);
        if end != self.end {
            self.end = end;
            self.charge.set(self.buf.capacity());
        }
    }

    /// After parsing: an emptied buffer larger than the current chunk is let go.
    pub(crate) fn after_parse(&mut self) {
        self.sync();
        if self.buf.is_empty() && self.charged() > self.chunk {
            drop(self.let_go(0, self.charged()));
            self.buf = BytesMut::new();
            self.end = Self::end_of(&self.buf);
            self.charge.set(0);
        }
        self.pinned
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .settle();
    }

    /// After a read of `n` bytes into `spare` bytes of room: the next chunk's size.
    pub(crate) fn after_read(&mut self, n: usize, spare: usize) {
        if n >= spare {
            self.chunk = (self.chunk * 2).min(MAX_CHUNK);
        } else if n < self.chunk / 4 {
            self.chunk = (self.chunk / 2).max(MIN_CHUNK);
        }
    }

    /// The capacity the buffer needs before the next read, if it must grow; `frame_len` is
    /// the length of the frame at its front when known.
    fn wanted(&self, frame_len: Option<usize>) -> Option<usize> {
        let len = self.buf.len();
        let spare = self.buf.capacity() - len;
        match frame_len {
            Some(total) if total > len => {
                let rest = total - len;
                if spare >= rest.min(MIN_SPARE) {
                    return None;
                }
                // A small frame: room for it and the frames after it; a large one: bounded
                // steps up to exactly its end.
                let step = if total <= MAX_CHUNK {
                    rest.max(self.chunk)
                } else {
                    rest.min(len.max(MAX_CHUNK))
                };
                Some(len + step)
            }
            // Length unknown (plain buffered Thrift) with bytes buffered: double.
            None if len > 0 && spare < MIN_SPARE => Some(len + len.max(self.chunk)),
            _ if spare < MIN_SPARE => Some(len + self.chunk),
            _ => None,
        }
    }

    /// Makes room for the next read. `within_reserve(n)` says whether the connection may hold
    /// a read buffer of `n` bytes on its reserve (past a spent budget); beyond it, the growth
    /// is taken from the budget's room, in steps of at most [`ByteBudget::ROOM`] while it is
    /// nearly spent. `Wait` when there is no room: the reader waits for a release.
    ///
    /// [`ByteBudget::ROOM`]: rpc_core::limits::ByteBudget::ROOM
    pub(crate) fn grow(
        &mut self,
        frame_len: Option<usize>,
        within_reserve: impl Fn(usize) -> bool,
    ) -> Room {
        let Some(want) = self.wanted(frame_len) else {
            return Room::Ready;
        };
        let len = self.buf.len();
        let old_charge = self.charged();
        let large_frame = matches!(frame_len, Some(total) if total > MAX_CHUNK);
        let mut cap = want;
        // What the new allocation adds to the charge (the old one is let go).
        if let Some(budget) = self.charge.budget() {
            if cap > self.charged() && !within_reserve(cap) {
                let room = budget.available();
                let need = cap - self.charged();
                if room < need.min(rpc_core::limits::ByteBudget::ROOM) {
                    return Room::Wait;
                }
                cap = self.charged() + need.min(room);
                if cap <= len {
                    return Room::Wait;
                }
                if !self.charge.try_grow(cap) {
                    // Another connection took the room meanwhile.
                    return Room::Wait;
                }
            }
        }
        if len == 0 && self.charged() >= cap && self.buf.try_reclaim(cap) {
            // The same allocation, reused: its charge stays.
            let n = self.charged().max(self.buf.capacity());
            self.charge.set(n);
        } else {
            // Grown in place where the allocator can (a large buffer is remapped, not copied,
            // and leaves no freed block behind): the bytes move to the front of their own
            // allocation (a copy only if it is shared), which then grows to exactly `cap`.
            let v = self.let_go(cap, old_charge);
            // (`Bytes` adopts the vector, `BytesMut` takes it back whole: no copy.)
            self.buf = BytesMut::from(bytes::Bytes::from(v));
            self.charge.set(self.buf.capacity());
        }
        self.end = Self::end_of(&self.buf);
        self.large_frame = large_frame;
        Room::Ready
    }

    /// Whether growing now would have to wait (see [`ReadBuffer::grow`]), without growing.
    pub(crate) fn must_wait(
        &self,
        frame_len: Option<usize>,
        within_reserve: impl Fn(usize) -> bool,
    ) -> bool {
        let (Some(want), Some(budget)) = (self.wanted(frame_len), self.charge.budget()) else {
            return false;
        };
        if want <= self.charged() || within_reserve(want) {
            return false;
        }
        budget.available() < (want - self.charged()).min(rpc_core::limits::ByteBudget::ROOM)
    }
}

/// Which timeout ended a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// A frame's first bytes arrived and the rest did not within `frame_timeout`.
    Frame(Duration),
    /// Nothing in flight and no bytes for `idle_timeout`.
    Idle(Duration),
    /// Calls in flight and no bytes from the peer for `silence_timeout` (client side).
    Silent(Duration),
}

impl Expired {
    pub(crate) fn status(self) -> Status {
        match self {
            Expired::Frame(t) => Status::unavailable(format!(
                "a frame was not completed within {t:?}; connection closed"
            )),
            Expired::Idle(t) => Status::unavailable(format!("connection idle for {t:?}; closed")),
            Expired::Silent(t) => Status::unavailable(format!(
                "no bytes from the peer for {t:?} with calls in flight (peer dead or unreachable); connection closed"
            )),
        }
    }
}

/// The timeouts that bound a connection's reads (each `None`: never).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadTimeouts {
    /// From a frame's first byte to its last.
    pub(crate) frame: Option<Duration>,
    /// Nothing in flight and no bytes.
    pub(crate) idle: Option<Duration>,
    /// Something in flight and no bytes (a vanished or hung peer).
    pub(crate) silence: Option<Duration>,
}

impl ReadTimeouts {
    /// A server's: the frame and idle timeouts of its limits.
    pub(crate) fn server(limits: &ServerLimits) -> ReadTimeouts {
        ReadTimeouts {
            frame: Some(limits.frame_timeout),
            idle: limits.idle_timeout,
            silence: None,
        }
    }

    /// A client connection's: the frame and silence timeouts of its limits, and the idle
    /// timeout where the connection idles out by its reader (`idle`).
    pub(crate) fn client(limits: &Limits, idle: bool) -> ReadTimeouts {
        ReadTimeouts {
            frame: limits.frame_timeout,
            idle: if idle { limits.idle_timeout } else { None },
            silence: limits.silence_timeout,
        }
    }
}

/// The reader's clock: when the incomplete frame at the front of the buffer started, since
/// when the connection has been idle, and since when it has been silent with calls in flight.
///
/// One timer serves every read and is moved only when a deadline comes *earlier* than the one
/// it is set to. A deadline that moved later (a new frame started, the usual case under load)
/// leaves the timer where it is: when it fires early, the read re-checks and sets it to the
/// current deadline. Registering a fresh timer per read would cost a timer-wheel insert and
/// removal each time and, whenever it is the runtime's earliest timer, a wake of the I/O
/// driver (an `eventfd` write): one extra syscall per read.
pub(crate) struct ReadClock {
    frame_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    silence_timeout: Option<Duration>,
    frame_start: Option<Instant>,
    idle_since: Option<Instant>,
    silent_since: Option<Instant>,
    /// The timer, created on first use, and the instant it is set to.
    timer: Option<Pin<Box<Sleep>>>,
    armed: Option<Instant>,
}

impl ReadClock {
    pub(crate) fn new(t: ReadTimeouts) -> ReadClock {
        ReadClock {
            frame_timeout: t.frame,
            idle_timeout: t.idle,
            silence_timeout: t.silence,
            frame_start: None,
            idle_since: None,
            silent_since: None,
            timer: None,
            armed: None,
        }
    }

    /// Sets the timer to fire no later than `at` (never earlier than needed by more than the
    /// distance a deadline moved since it was set; see the type's docs).
    fn arm(&mut self, at: Instant) -> Pin<&mut Sleep> {
        let reset = self.armed.is_none_or(|armed| armed > at);
        if reset {
            self.armed = Some(at);
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if reset {
            timer.as_mut().reset(at);
        }
        timer.as_mut()
    }

    /// After parsing: `left` bytes of an incomplete frame remain; `decoded` says whether whole
    /// frames were taken (then what is left is a new frame, started with the last read).
    pub(crate) fn after_decode(&mut self, left: usize, decoded: bool) {
        if left == 0 {
            self.frame_start = None;
        } else if decoded || self.frame_start.is_none() {
            self.frame_start = Some(Instant::now());
        }
    }

    /// After the reader paused (our backpressure, not the peer's slowness): the incomplete
    /// frame's time starts again.
    pub(crate) fn after_pause(&mut self, left: usize) {
        self.frame_start = (left > 0).then(Instant::now);
    }

    /// When the next read must have completed, given whether anything is in flight.
    fn deadline(&mut self, idle: bool) -> Option<(Instant, Expired)> {
        if let (Some(start), Some(t)) = (self.frame_start, self.frame_timeout) {
            return Some((start + t, Expired::Frame(t)));
        }
        if !idle {
            self.idle_since = None;
            let t = self.silence_timeout?;
            let since = *self.silent_since.get_or_insert_with(Instant::now);
            return Some((since + t, Expired::Silent(t)));
        }
        self.silent_since = None;
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        self.idle_timeout.map(|t| (since + t, Expired::Idle(t)))
    }
}

/// What one read attempt ended with.
pub(crate) enum Read {
    /// Bytes were appended to the buffer.
    Bytes,
    /// `wake` was notified (in-flight work changed): re-check and read again.
    Woken,
    /// The connection ends with this status (EOF, error, timeout).
    End(Status),
    /// The idle timeout passed: the connection ends with this status if it can still be
    /// retired as idle (a client may be opening a call on it right now).
    Idle(Status),
}

/// Reads once into `buf`, bounded by the clock's deadline, or returns early when `wake` fires.
/// `is_idle` tells whether nothing is in flight; it is asked again when the timer fires (a
/// client opens calls without waking its reader, so "idle" may have ended meanwhile).
pub(crate) async fn read_some(
    rd: &mut ReadHalf,
    buf: &mut BytesMut,
    clock: &mut ReadClock,
    is_idle: impl Fn() -> bool,
    wake: &Notify,
) -> Read {
    let idle = is_idle();
    if buf.capacity() == buf.len() {
        // Never in the driver (its `ReadBuffer` makes room first); `read_buf` would reserve.
        buf.reserve(MIN_CHUNK);
    }
    let deadline = clock.deadline(idle);
    loop {
        let timer = deadline.map(|(at, _)| clock.arm(at));
        let expire = async {
            match timer {
                Some(t) => t.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rd.read_buf(buf) => return match r {
                Ok(0) => Read::End(Status::unavailable("connection closed by peer")),
                Ok(_) => {
                    clock.idle_since = None;
                    clock.silent_since = None;
                    Read::Bytes
                }
                // The error rides along: a reset says the peer closed with bytes unread.
                Err(e) => Read::End(Status::unavailable(format!("read failed: {e}")).with_source(e)),
            },
            () = expire => {}
            () = wake.notified() => return Read::Woken,
        }
        // The timer fired: at the deadline, or early (it was set for an earlier deadline that
        // has since moved later).
        clock.armed = None;
        if let Some((at, what)) = deadline {
            if is_idle() != idle {
                // In-flight work began or ended since this read started: re-evaluate.
                return Read::Woken;
            }
            if Instant::now() >= at {
                tracing::debug!(?what, "closing a connection on timeout");
                if let Expired::Idle(_) = what {
                    // The next read starts the idle clock afresh if the connection lives on.
                    clock.idle_since = None;
                    return Read::Idle(what.status());
                }
                return Read::End(what.status());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_core::limits::ByteBudget;

    /// Fills the buffer's room, as a read would (`n` bytes at most).
    fn arrive(rb: &mut ReadBuffer, n: usize) {
        let room = (rb.buf.capacity() - rb.buf.len()).min(n);
        rb.buf.extend_from_slice(&vec![7u8; room]);
    }

    #[test]
    fn a_large_frame_grows_in_bounded_steps_to_exactly_its_size() {
        const TOTAL: usize = 16 * 1024 * 1024;
        let budget = ByteBudget::new(64 * 1024 * 1024);
        let mut rb = ReadBuffer::new(BytesMut::new(), Some(budget.clone()));
        let mut steps = 0;
        while rb.buf.len() < TOTAL {
            assert_eq!(rb.grow(Some(TOTAL), |_| false), Room::Ready);
            let (len, cap) = (rb.buf.len(), rb.buf.capacity());
            assert!(cap > len, "room to read into");
            assert!(
                cap <= TOTAL && cap <= 2 * len.max(MAX_CHUNK) + MAX_CHUNK,
                "capacity {cap} for {len} buffered: at most twice what arrived"
            );
            assert_eq!(budget.used(), rb.charged(), "the capacity is charged");
            assert_eq!(rb.charged(), cap);
            arrive(&mut rb, usize::MAX);
            steps += 1;
        }
        assert_eq!(rb.buf.capacity(), TOTAL, "exactly the frame once complete");
        assert!(steps < 16, "{steps} steps: geometric, not one per chunk");
        drop(rb);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn growth_past_the_reserve_waits_for_room_in_the_budget() {
        const TOTAL: usize = 1024 * 1024;
        let budget = ByteBudget::new(256 * 1024);
        let mut rb = ReadBuffer::new(BytesMut::new(), Some(budget.clone()));
        // Within the budget: grows, charged with `try_charge`.
        while rb.grow(Some(TOTAL), |_| false) == Room::Ready && rb.buf.len() < TOTAL {
            arrive(&mut rb, usize::MAX);
            assert!(budget.used() <= budget.limit(), "never past the limit");
        }
        assert!(rb.buf.len() < TOTAL);
        assert!(rb.must_wait(Some(TOTAL), |_| false));
        let charged = rb.charged();
        assert_eq!(budget.used(), charged);
        // The reserve allows a little more even with the budget spent.
        budget.charge(budget.available());
        assert_eq!(rb.grow(Some(TOTAL), |_| false), Room::Wait);
        assert_eq!(rb.charged(), charged, "a refused growth charges nothing");
        // The connection's reserve lets it grow even with the budget spent (charged past the
        // limit: the reserve is the per-connection term of the bound).
        assert!(!rb.must_wait(Some(TOTAL), |_| true));
        assert_eq!(rb.grow(Some(TOTAL), |_| true), Room::Ready);
        assert!(rb.charged() > charged);
        assert_eq!(budget.used(), budget.limit() - charged + rb.charged());
    }

    #[test]
    fn an_emptied_large_buffer_is_let_go_and_reads_start_small() {
        let budget = ByteBudget::new(1 << 30);
        let mut rb = ReadBuffer::new(BytesMut::new(), Some(budget.clone()));
        assert_eq!(rb.grow(Some(1 << 20), |_| false), Room::Ready);
        arrive(&mut rb, usize::MAX);
        let frame = rb.buf.split_to(rb.buf.len());
        rb.after_parse();
        assert_eq!(rb.charged(), 0, "the emptied buffer is released");
        assert_eq!(budget.used(), 0);
        drop(frame);
        // No frame in progress: a small chunk.
        assert_eq!(rb.grow(None, |_| true), Room::Ready);
        assert_eq!(rb.buf.capacity(), MIN_CHUNK);
        // Reads that fill it double the chunk (up to MAX_CHUNK); small ones halve it.
        for _ in 0..10 {
            let spare = rb.buf.capacity() - rb.buf.len();
            rb.after_read(spare, spare);
        }
        assert_eq!(rb.chunk, MAX_CHUNK);
        for _ in 0..10 {
            rb.after_read(10, MAX_CHUNK);
        }
        assert_eq!(rb.chunk, MIN_CHUNK);
    }

    #[test]
    fn a_read_chunk_a_slice_still_pins_stays_charged_until_freed() {
        let budget = ByteBudget::new(1 << 30);
        let mut rb = ReadBuffer::new(BytesMut::new(), Some(budget.clone()));
        assert_eq!(rb.grow(None, |_| true), Room::Ready);
        let chunk = rb.charged();
        assert_eq!(chunk, MIN_CHUNK);
        // Two small frames arrive; a handler keeps a slice of the first one.
        rb.buf.extend_from_slice(&[1u8; 200]);
        let first = rb.buf.split_to(100).freeze();
        let kept = first.slice(10..20);
        drop(first);
        drop(rb.buf.split_to(100));
        rb.after_parse();
        assert_eq!(rb.held(), chunk, "the chunk, still the buffer's");
        // The next read needs room: the chunk cannot be reused, a new one is made, and the
        // old one stays charged while the slice pins it.
        rb.buf.reserve(0);
        let spare = rb.buf.capacity() - rb.buf.len();
        rb.buf.extend_from_slice(&vec![0u8; spare]);
        drop(rb.buf.split_to(spare));
        assert_eq!(rb.grow(None, |_| true), Room::Ready);
        assert_eq!(rb.held(), rb.charged() + chunk, "pinned: charged");
        assert_eq!(budget.used(), rb.held());
        drop(kept);
        assert_eq!(rb.held(), rb.charged(), "freed: released");
        assert_eq!(budget.used(), rb.charged());
        drop(rb);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_decoder_that_reallocates_is_noticed() {
        let budget = ByteBudget::new(1 << 30);
        let mut rb = ReadBuffer::new(BytesMut::with_capacity(16), Some(budget.clone()));
        assert_eq!(budget.used(), rb.buf.capacity());
        rb.buf.reserve(100_000);
        rb.sync();
        assert_eq!(rb.charged(), rb.buf.capacity());
        assert_eq!(budget.used(), rb.buf.capacity());
    }
}
