//! A connection's limits ([`Limits`], with documented defaults) and live counts ([`Stats`]):
//! what a session enforces and counts, whatever carries its frames (the socket driver and the
//! shared-memory transport read the same values).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::proto::DEFAULT_MAX_FRAME_SIZE;

/// Bytes one stream may hold received but not yet read before the connection stops reading
/// (TCP backpressure): enough for a burst of small messages or one large one.
pub const DEFAULT_STREAM_RECV_BUFFER: usize = 1024 * 1024;
/// Bytes all streams of one connection may hold received but not yet read.
pub const DEFAULT_CONN_RECV_BUFFER: usize = 8 * 1024 * 1024;
/// Bytes queued for writing on one connection before senders wait.
pub const DEFAULT_WRITE_BUFFER: usize = 1024 * 1024;
/// Bytes one server connection may keep holding (its read buffer, messages received and
/// unread, stream state, write buffers) while the server-wide byte budget is used up.
/// Connections holding less keep being read and served, and may open streams, so a
/// well-behaved client is not starved by peers that filled the budget by not reading; the
/// hogs, holding more, wait (and have new streams refused). 64 KiB fits a burst of small calls;
/// with the connection's own state it makes the per-connection term of the server's memory
/// bound, `rpc_core::limits::PER_CONNECTION_BYTES` (96 KiB: budget + 96 KiB × connections,
/// against the 2.8 MiB per connection a non-reading peer could pin without it).
pub const DEFAULT_CONN_RESERVE: usize = 64 * 1024;

/// How long a client's streaming or multiplexed connection may carry nothing before it closes, so the
/// pool's slots do not keep connections forever. The same 30 s as
/// unary idle timeout (`DEFAULT_UNARY_IDLE_TIMEOUT`) for the same reasons (Kitex's pool idle time, well below a
/// server's 5 min idle timeout, so the client closes first).
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits of one connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Largest frame accepted or sent (the TTHeader LENGTH field), checked before allocating.
    pub max_frame_size: usize,
    /// See [`DEFAULT_STREAM_RECV_BUFFER`].
    pub stream_recv_buffer: usize,
    /// See [`DEFAULT_CONN_RECV_BUFFER`].
    pub conn_recv_buffer: usize,
    /// See [`DEFAULT_WRITE_BUFFER`].
    pub write_buffer: usize,
    /// See [`DEFAULT_CONN_RESERVE`] (server side only).
    pub conn_reserve: usize,
    /// Client side: a streaming or multiplexed unary connection with nothing in flight for this long
    /// is closed ([`DEFAULT_CLIENT_IDLE_TIMEOUT`]; `None`: never). Pooled unary connections
    /// idle out by the pool's own timer (`ClientBuilder::unary_idle_timeout`). A server's
    /// idle timeout is `rpc_core::ServerLimits::idle_timeout`.
    pub idle_timeout: Option<Duration>,
    /// Client side: with calls or streams in flight, no byte from the server for this long
    /// ends the connection and everything on it with `UNAVAILABLE` — how a client notices a
    /// server that hung or vanished behind a proxy that keeps the TCP connection open
    /// (TCP keepalive notices a vanished host; TTHeader has no ping frame Kitex answers).
    /// Off by default (`None`): a stream may legitimately stay quiet for any time, so only
    /// the application knows a bound; set it above the longest expected quiet period.
    pub silence_timeout: Option<Duration>,
    /// Client side: how long a frame may take from its first byte to its last
    /// (`rpc_core::limits::DEFAULT_FRAME_TIMEOUT`, as on the server).
    pub frame_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            stream_recv_buffer: DEFAULT_STREAM_RECV_BUFFER,
            conn_recv_buffer: DEFAULT_CONN_RECV_BUFFER,
            write_buffer: DEFAULT_WRITE_BUFFER,
            conn_reserve: DEFAULT_CONN_RESERVE,
            idle_timeout: Some(DEFAULT_CLIENT_IDLE_TIMEOUT),
            silence_timeout: None,
            frame_timeout: Some(rpc_core::limits::DEFAULT_FRAME_TIMEOUT),
        }
    }
}

impl Limits {
    /// Sets the largest frame accepted or sent.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets the per-stream receive buffer.
    pub fn stream_recv_buffer(mut self, bytes: usize) -> Self {
        self.stream_recv_buffer = bytes;
        self
    }

    /// Sets the per-connection receive buffer.
    pub fn conn_recv_buffer(mut self, bytes: usize) -> Self {
        self.conn_recv_buffer = bytes;
        self
    }

    /// Sets the per-connection write buffer.
    pub fn write_buffer(mut self, bytes: usize) -> Self {
        self.write_buffer = bytes;
        self
    }

    /// Sets what a server connection may hold while the server-wide budget is used up.
    pub fn conn_reserve(mut self, bytes: usize) -> Self {
        self.conn_reserve = bytes;
        self
    }

    /// Sets the client idle timeout ([`Limits::idle_timeout`]).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the client silence timeout ([`Limits::silence_timeout`]).
    pub fn silence_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.silence_timeout = timeout;
        self
    }

    /// Sets the client frame timeout ([`Limits::frame_timeout`]).
    pub fn frame_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.frame_timeout = timeout;
        self
    }

    pub(crate) fn proto(&self) -> crate::proto::Limits {
        crate::proto::Limits::new().with_max_frame_size(self.max_frame_size)
    }

    /// Server side: whether a connection's reader must stop for its writes or the server-wide
    /// budget: its write backlog (queued plus the batch being written) is at twice the write
    /// limit, or `budget` is used up and the connection holds more than its reserve (`held`:
    /// everything it holds, its read buffer, queued messages, stream state and write buffers).
    /// Never without a budget (client side).
    ///
    /// Twice: the writer takes everything queued as one batch, so a fast stream routinely has
    /// a full batch in flight while senders queue the next one (double buffering). Pausing the
    /// reader at one write limit stalled reading behind every large write and cost a fifth of
    /// bidi streaming throughput; at two, only a peer that stops reading pauses it.
    pub(crate) fn writes_block_reading(
        &self,
        backlog: usize,
        budget: Option<&rpc_core::limits::ByteBudget>,
        held: usize,
    ) -> bool {
        let Some(budget) = budget else {
            return false;
        };
        backlog >= 2 * self.write_buffer || (budget.is_exhausted() && held > self.conn_reserve)
    }
}

/// The largest read chunk of the socket driver's reader (reads that keep filling its buffer
/// double it up to this). Frames larger than this get a buffer of their own, grown in bounded
/// steps to exactly their size; messages of smaller frames are copied out of the read buffer
/// when they are kept (see [`keep`]), so a small message never pins a chunk.
pub(crate) const MAX_CHUNK: usize = 64 * 1024;

/// A payload to keep past the reader's batch (queued for a handle): a copy when its frame
/// (`frame_len` bytes on the wire) came in a shared read chunk, so it holds exactly its bytes
/// and not the chunk; the slice itself (no copy) when its frame had a buffer of its own
/// ([`MAX_CHUNK`]) and the rest of that frame is small (at most 1/64 of the payload). What a
/// kept payload may hold is thus at most [`held_for`] of its length.
pub(crate) fn keep(payload: Bytes, frame_len: usize) -> Bytes {
    if copies(payload.len(), frame_len) {
        Bytes::copy_from_slice(&payload)
    } else {
        payload
    }
}

/// Whether [`keep`] copies a payload of `len` bytes cut from a frame of `frame_len` bytes
/// (it came in a shared read chunk). A server hands such a payload to a handler it polls
/// inline uncopied, and keeps (copies) it only if the handler did not take it during that
/// poll: a pingpong request is decoded straight out of the read chunk (one allocation per
/// call fewer), and what stays queued holds only its own bytes. A chunk a handler still
/// pins past the reader's batch (it kept a slice: a raw-bytes codec, a `Bytes` field) is
/// charged by the reader until it is freed (`driver::reader::ReadBuffer`).
pub(crate) fn copies(len: usize, frame_len: usize) -> bool {
    let head = frame_len.saturating_sub(len);
    !(frame_len > MAX_CHUNK && head.saturating_mul(64) <= len)
}

/// What a payload of `len` bytes, kept with [`keep`], is charged: its bytes, the frame head a
/// zero-copy payload keeps alive (at most 1/64), and the allocator's and queue's overhead per
/// message (a tiny-message flood holds far more than its payload bytes).
pub(crate) fn held_for(len: usize) -> usize {
    len + len / 64 + MESSAGE_OVERHEAD
}

/// What one kept message costs beyond its bytes: the allocator's header and rounding (up to
/// 32 bytes) and its queue slot (a `Bytes`, 32 bytes).
pub(crate) const MESSAGE_OVERHEAD: usize = 64;

/// Live counts, for leak checks and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) connections: AtomicUsize,
    pub(crate) streams: AtomicUsize,
    pub(crate) buffered: AtomicUsize,
    pub(crate) max_buffered: AtomicUsize,
}

impl Stats {
    /// Open connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Streams and unary calls whose state is still allocated.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Bytes received and queued for handles, not yet read.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    /// The highest value [`Stats::buffered_bytes`] reached.
    pub fn max_buffered_bytes(&self) -> usize {
        self.max_buffered.load(Ordering::Acquire)
    }

    pub(crate) fn add_buffered(&self, n: usize) {
        let now = self.buffered.fetch_add(n, Ordering::AcqRel) + n;
        self.max_buffered.fetch_max(now, Ordering::AcqRel);
    }

    pub(crate) fn sub_buffered(&self, n: usize) {
        self.buffered.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Counts a live object in [`Stats`] for as long as it exists.
#[derive(Debug)]
pub(crate) struct Counted {
    stats: std::sync::Arc<Stats>,
    which: fn(&Stats) -> &AtomicUsize,
    released: std::sync::atomic::AtomicBool,
}

impl Counted {
    pub(crate) fn new(stats: &std::sync::Arc<Stats>, which: fn(&Stats) -> &AtomicUsize) -> Self {
        which(stats).fetch_add(1, Ordering::AcqRel);
        Counted {
            stats: stats.clone(),
            which,
            released: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Stops counting before the object is dropped (a lost connection a pool still holds).
    pub(crate) fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            (self.which)(&self.stats).fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.release();
    }
}

/// What the streams of one session hold received and not yet read: counted for the session's
/// backpressure ([`Limits::stream_recv_buffer`], [`Limits::conn_recv_buffer`]), in [`Stats`],
/// and (server side) charged to the server-wide byte budget.
#[derive(Debug)]
pub(crate) struct RecvBytes {
    buffered: AtomicUsize,
    /// What the open streams' state is charged ([`rpc_core::limits::STREAM_STATE_BYTES`]
    /// each; server side).
    state: AtomicUsize,
    /// Streams holding more than their limit.
    over_limit: AtomicUsize,
    stats: std::sync::Arc<Stats>,
    budget: Option<std::sync::Arc<rpc_core::limits::ByteBudget>>,
    stream_limit: usize,
    conn_limit: usize,
}

impl RecvBytes {
    pub(crate) fn new(
        limits: &Limits,
        stats: &std::sync::Arc<Stats>,
        budget: Option<std::sync::Arc<rpc_core::limits::ByteBudget>>,
    ) -> RecvBytes {
        RecvBytes {
            buffered: AtomicUsize::new(0),
            state: AtomicUsize::new(0),
            over_limit: AtomicUsize::new(0),
            stats: stats.clone(),
            budget,
            stream_limit: limits.stream_recv_buffer,
            conn_limit: limits.conn_recv_buffer,
        }
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    /// What the open streams' state is charged now.
    pub(crate) fn state(&self) -> usize {
        self.state.load(Ordering::Acquire)
    }

    /// Server side: a stream opened; its state is charged to the budget until
    /// [`RecvBytes::close_stream`].
    pub(crate) fn open_stream(&self) {
        if let Some(b) = &self.budget {
            let n = rpc_core::limits::STREAM_STATE_BYTES;
            self.state.fetch_add(n, Ordering::AcqRel);
            b.charge(n);
        }
    }

    /// Server side: a stream [`RecvBytes::open_stream`] counted is gone.
    pub(crate) fn close_stream(&self) {
        if let Some(b) = &self.budget {
            let n = rpc_core::limits::STREAM_STATE_BYTES;
            self.state.fetch_sub(n, Ordering::AcqRel);
            b.release(n);
        }
    }

    /// Whether the budget (server side) is spent.
    pub(crate) fn budget_spent(&self) -> bool {
        self.budget.as_ref().is_some_and(|b| b.is_exhausted())
    }

    /// Whether the reader must stop for what the streams hold.
    pub(crate) fn over(&self) -> bool {
        self.over_limit.load(Ordering::Acquire) > 0 || self.held() > self.conn_limit
    }

    /// `n` bytes were queued on a stream that now holds `queued`; `over` is the stream's
    /// over-limit flag, set here when it crosses its limit.
    pub(crate) fn charge(&self, n: usize, queued: usize, over: &mut bool) {
        self.buffered.fetch_add(n, Ordering::AcqRel);
        self.stats.add_buffered(n);
        if let Some(b) = &self.budget {
            b.charge(n);
        }
        if !*over && queued > self.stream_limit {
            *over = true;
            self.over_limit.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// `n` bytes left a stream that now holds `queued` (`over`: its flag, cleared here when
    /// it is back under its limit). Returns whether the reader should look again (the stream
    /// or the session went back under its limit).
    pub(crate) fn release(&self, n: usize, queued: usize, over: &mut bool) -> bool {
        let before = self.buffered.fetch_sub(n, Ordering::AcqRel);
        self.stats.sub_buffered(n);
        if let (Some(b), true) = (&self.budget, n > 0) {
            b.release(n);
        }
        let mut resume = before > self.conn_limit && before - n <= self.conn_limit;
        if *over && queued <= self.stream_limit {
            *over = false;
            self.over_limit.fetch_sub(1, Ordering::AcqRel);
            resume = true;
        }
        resume
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_messages_of_small_frames_are_copied_and_large_ones_are_not() {
        let chunk = Bytes::from(vec![1u8; MAX_CHUNK]);
        let small = chunk.slice(100..1100);
        let kept = keep(small.clone(), 1200);
        assert_eq!(kept, small);
        let inside = |b: &Bytes| chunk.as_ptr_range().contains(&b.as_ptr());
        assert!(!inside(&kept), "a small message does not pin the chunk");

        let frame = Bytes::from(vec![2u8; 1 << 20]);
        let payload = frame.slice(40..);
        let kept = keep(payload.clone(), frame.len());
        assert_eq!(
            kept.as_ptr(),
            payload.as_ptr(),
            "a large frame's payload is not copied"
        );
        // A large frame that is mostly header: copied, so it holds only the payload.
        let padded = frame.slice((1 << 20) - 1000..);
        assert_ne!(keep(padded.clone(), frame.len()).as_ptr(), padded.as_ptr());
        // What a kept message is charged covers what it may hold.
        assert_eq!(held_for(0), MESSAGE_OVERHEAD);
        assert!(held_for(payload.len()) >= frame.len());
    }
}
