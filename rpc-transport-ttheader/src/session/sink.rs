//! Where a session's frames go: the [`FrameSink`] a transport implements (a socket's write
//! queue, a shared-memory ring) and the helpers that append frames to a byte buffer.

use std::task::{Context, Poll};

use bytes::BytesMut;
use rpc_core::codec::Encodable;
use rpc_core::Status;
use tokio::sync::Notify;

use crate::proto::StreamFrame;

/// Why a [`FrameSink`] did not take a frame.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SinkError {
    /// The sink is closed (the connection is gone); nothing was appended.
    Closed,
    /// This frame could not be encoded (or is over the frame size limit); nothing was
    /// appended and the sink stays usable.
    Frame(Status),
}

/// Where a [`Session`](super::Session) writes its encoded frames, in order. Implementations synchronize
/// internally (all methods take `&self`); frames appended by one call must reach the peer
/// whole and in append order.
///
/// Every frame appended counts toward [`FrameSink::backlog`] until the peer (or the socket)
/// took it: a server session stops reading while the backlog is at twice
/// [`Limits::write_buffer`](super::Limits::write_buffer), so control frames, which never wait, are bounded too.
pub trait FrameSink: Send + Sync + 'static {
    /// Ready when a Data frame of `len` message bytes (0 when unknown) may be appended now;
    /// `Err` once the sink is closed. A socket queue waits while its buffer is full; a ring
    /// waits for a slot of `len` bytes.
    fn poll_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), SinkError>>;

    /// Appends one control frame (Header, Trailer, Rst) without waiting for room.
    fn append_frame(&self, frame: &StreamFrame) -> Result<(), SinkError>;

    /// Appends one Data frame: `head` (the stream's encoded Data head, with a LENGTH of 0 that
    /// the sink sets to the frame's length, `head.len() - 4` plus the message's) followed by
    /// `msg` encoded straight into the sink's buffer. A frame longer than `max_frame` bytes
    /// (LENGTH) is not appended: `SinkError::Frame` with `RESOURCE_EXHAUSTED`.
    fn append_data(
        &self,
        head: &[u8],
        msg: &mut dyn Encodable,
        max_frame: usize,
    ) -> Result<(), SinkError>;

    /// Appends the frames `write` hands to its [`FrameWriter`], in order, as one batch (a
    /// stream's last frames: Header, Data, Trailer). Each frame succeeds or fails on its own,
    /// as with [`FrameSink::append_frame`] and [`FrameSink::append_data`]; a sink that can
    /// take several frames for the price of one (a socket queue: one lock, one wake-up of its
    /// writer) overrides this. The default appends them one by one.
    fn append_batch(&self, write: &mut dyn FnMut(&mut dyn FrameWriter)) {
        write(&mut OneByOne(self));
    }

    /// Whether a client stream that sends exactly one message (pingpong, server streaming)
    /// holds its Header back and sends Header, message and half-close as one
    /// [`FrameSink::append_batch`]. A sink that delivers a batch as one unit, so the peer
    /// dispatches the call with the whole request there (shared memory), says yes; the
    /// default, a socket to any ttstream peer, sends the Header when the stream opens.
    fn batches_one_shot_requests(&self) -> bool {
        false
    }

    /// Bytes appended and not yet taken by the peer (or the socket), control frames included.
    fn backlog(&self) -> usize;

    /// Memory the sink holds for its backlog (its buffers' capacity), which a server session
    /// counts against its reserve; the backlog itself by default.
    fn held(&self) -> usize {
        self.backlog()
    }

    /// Notified (`notify_one`) whenever the backlog shrinks: a paused reader waits on it.
    fn progress(&self) -> &Notify;

    /// Stops accepting frames: appends fail with [`SinkError::Closed`] and waiters in
    /// `poll_ready` wake. What was appended before is still delivered if it can be.
    fn close(&self);

    /// Whether [`FrameSink::close`] ran (or the sink failed on its own).
    fn is_closed(&self) -> bool;
}

/// Where [`FrameSink::append_batch`] has its frames appended.
pub trait FrameWriter {
    /// Appends one control frame, as [`FrameSink::append_frame`].
    fn frame(&mut self, frame: &StreamFrame) -> Result<(), SinkError>;

    /// Appends one Data frame, as [`FrameSink::append_data`].
    fn data(
        &mut self,
        head: &[u8],
        msg: &mut dyn Encodable,
        max_frame: usize,
    ) -> Result<(), SinkError>;
}

/// The default batch: each frame appended to the sink on its own.
struct OneByOne<'a, S: ?Sized>(&'a S);

impl<S: FrameSink + ?Sized> FrameWriter for OneByOne<'_, S> {
    fn frame(&mut self, frame: &StreamFrame) -> Result<(), SinkError> {
        self.0.append_frame(frame)
    }

    fn data(
        &mut self,
        head: &[u8],
        msg: &mut dyn Encodable,
        max_frame: usize,
    ) -> Result<(), SinkError> {
        self.0.append_data(head, msg, max_frame)
    }
}

/// A [`FrameWriter`] over a byte buffer (a sink's queue, its lock held), or over nothing when
/// the sink is closed (every frame fails with [`SinkError::Closed`]).
pub struct BufWriter<'a>(pub Option<&'a mut BytesMut>);

impl FrameWriter for BufWriter<'_> {
    fn frame(&mut self, frame: &StreamFrame) -> Result<(), SinkError> {
        let buf = self.0.as_deref_mut().ok_or(SinkError::Closed)?;
        frame
            .encode(buf)
            .map_err(|e| SinkError::Frame(Status::internal(format!("encode frame: {e}"))))
    }

    fn data(
        &mut self,
        head: &[u8],
        msg: &mut dyn Encodable,
        max_frame: usize,
    ) -> Result<(), SinkError> {
        let buf = self.0.as_deref_mut().ok_or(SinkError::Closed)?;
        append_data_frame(buf, head, msg, max_frame).map_err(SinkError::Frame)
    }
}

/// Appends one Data frame to `dst` as [`FrameSink::append_data`] describes it, for sinks that
/// write into a `BytesMut`: `head`, then `msg` encoded in place, then LENGTH set. On an error
/// (encoding, or a frame over `max_frame` bytes) nothing is left appended.
pub fn append_data_frame(
    dst: &mut BytesMut,
    head: &[u8],
    msg: &mut dyn Encodable,
    max_frame: usize,
) -> Result<(), Status> {
    append_packet(dst, max_frame, |buf| {
        buf.extend_from_slice(head);
        msg.encode(buf)
    })
    .map(drop)
}

/// Appends one TTHeader packet whose LENGTH is known only once `write` has written it all:
/// `write` appends the head (with a placeholder LENGTH) and the payload, then LENGTH is
/// patched. On an error, or when the packet exceeds `max` bytes, everything appended is removed
/// and the error is returned (`RESOURCE_EXHAUSTED` for the size). Returns where the packet
/// starts in `buf`.
pub(crate) fn append_packet(
    buf: &mut BytesMut,
    max: usize,
    write: impl FnOnce(&mut BytesMut) -> Result<(), rpc_core::Status>,
) -> Result<usize, rpc_core::Status> {
    let start = buf.len();
    if let Err(e) = write(buf) {
        buf.truncate(start);
        return Err(e);
    }
    let len = buf.len() - start - 4;
    if len > max {
        buf.truncate(start);
        return Err(rpc_core::Error::MessageTooLarge {
            size: len,
            limit: max,
        }
        .into());
    }
    // `len <= max`, and the frame codec caps `max` far below u32::MAX.
    buf[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(start)
}

/// A [`FrameSink`] that keeps what a session writes in memory, as a socket's write queue
/// would hold it: for driving a [`super::Session`] with bytes and no socket (the session's own
/// tests, the fuzz targets, a user's tests of a transport built on it). Unbounded by design:
/// the caller drains it with [`MemorySink::take`].
#[derive(Debug, Default)]
pub struct MemorySink {
    buf: std::sync::Mutex<BytesMut>,
    closed: std::sync::atomic::AtomicBool,
    progress: Notify,
}

impl MemorySink {
    /// Takes everything written so far (as the socket writer would), waking a session that
    /// waits for the backlog to shrink.
    pub fn take(&self) -> BytesMut {
        let b = self.lock().split();
        self.progress.notify_one();
        b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BytesMut> {
        // Plain appends and splits: a panic cannot leave the buffer inconsistent.
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<(), SinkError> {
        if self.is_closed() {
            return Err(SinkError::Closed);
        }
        Ok(())
    }
}

impl FrameSink for MemorySink {
    fn poll_ready(&self, _cx: &mut Context<'_>, _len: usize) -> Poll<Result<(), SinkError>> {
        Poll::Ready(self.check())
    }

    fn append_frame(&self, frame: &StreamFrame) -> Result<(), SinkError> {
        self.check()?;
        frame
            .encode(&mut self.lock())
            .map_err(|e| SinkError::Frame(Status::internal(e.to_string())))
    }

    fn append_data(
        &self,
        head: &[u8],
        msg: &mut dyn Encodable,
        max_frame: usize,
    ) -> Result<(), SinkError> {
        self.check()?;
        append_data_frame(&mut self.lock(), head, msg, max_frame).map_err(SinkError::Frame)
    }

    fn backlog(&self) -> usize {
        self.lock().len()
    }

    fn progress(&self) -> &Notify {
        &self.progress
    }

    fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }
}
