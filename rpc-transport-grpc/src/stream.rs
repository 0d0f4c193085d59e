//! What the client and server sides of an HTTP/2 stream share: waiting for send capacity,
//! encoding a message into a DATA payload, receiving messages with flow control released as
//! the application reads, and h2 errors as statuses.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use futures::task::AtomicWaker;
use h2::{RecvStream, SendStream};
use rpc_core::codec::Encodable;
use rpc_core::transport::waker::{fanout_waker, WakerSet};
use rpc_core::{Code, Status};

use crate::codec::{compress, write_prefix, MessageDecoder, PREFIX_LEN};
use crate::compression::{Compression, MessageCompression};
use crate::ledger::Ledger;
use crate::lock;

/// A sender is ready for a message once h2 has assigned it this much window (or the whole
/// message, when smaller): waiting for a whole large message's worth could wait forever on a
/// peer whose window is smaller than the message; 16 KiB is below every HTTP/2 peer's initial
/// window (65,535 by default).
pub(crate) const SEND_READY_CHUNK: usize = 16 * 1024;

/// A stream's sending half as the send paths use it: h2's, and on the server the connection's
/// [`Ledger`] and the stream's id, so that what is handed to h2 is charged until written.
pub(crate) struct DataOut {
    pub(crate) h2: SendStream<Bytes>,
    ledger: Option<(Arc<Ledger>, u32)>,
}

impl DataOut {
    /// A client stream's: nothing charged.
    pub(crate) fn plain(h2: SendStream<Bytes>) -> DataOut {
        DataOut { h2, ledger: None }
    }

    /// A server stream's: what is handed to h2 is charged to `ledger` as `stream`'s.
    pub(crate) fn charged(h2: SendStream<Bytes>, ledger: Arc<Ledger>, stream: u32) -> DataOut {
        DataOut {
            h2,
            ledger: Some((ledger, stream)),
        }
    }
}

/// A status for an h2 error on a stream or its connection.
pub(crate) fn status_from_h2(e: &h2::Error, what: &str) -> Status {
    if let Some(reason) = e.reason() {
        let code = crate::codec::code_from_reason(u32::from(reason));
        let by = if e.is_remote() { "peer" } else { "local" };
        let status = Status::new(code, format!("{what}: stream reset by {by} ({reason:?})"));
        if e.is_go_away() {
            return Status::new(
                if reason == h2::Reason::NO_ERROR {
                    Code::Unavailable
                } else {
                    code
                },
                format!("{what}: connection going away ({reason:?})"),
            );
        }
        return status;
    }
    Status::unavailable(format!("{what}: connection lost: {e}"))
}

/// Waker fan-out for a primitive polled from two tasks (h2's `poll_capacity` and `poll_reset`
/// share one waker slot). Allocated on first use: a unary call answered at once never needs it.
pub(crate) struct Fanout(std::sync::OnceLock<(Arc<Mutex<WakerSet>>, Waker)>);

impl Fanout {
    pub(crate) const fn new() -> Fanout {
        Fanout(std::sync::OnceLock::new())
    }

    /// Registers the calling task and returns the shared waker to poll the primitive with.
    pub(crate) fn register(&self, cx: &Context<'_>) -> &Waker {
        let (set, waker) = self.0.get_or_init(|| {
            let set = Arc::new(Mutex::new(WakerSet::new()));
            (set.clone(), fanout_waker(set))
        });
        lock(set).register(cx);
        waker
    }
}

/// Waits until `stream` may take a message of `len` bytes (see [`SEND_READY_CHUNK`]) after the
/// pending bytes `q` holds but has not handed to h2 (see [`Outbox`]): capacity is reserved for
/// both, and when h2 has not assigned enough, the pending bytes are handed to h2 before
/// waiting (so no stream waits for capacity while holding data h2 has not seen, and what a
/// stream buffers stays within the window h2 assigned it). `fanout` when another task may poll
/// the stream's reset at the same time (server side).
///
/// While the stream is sending a burst (it is listed in the outbox), room for up to
/// [`CREDIT_AHEAD`] more bytes is asked for at once, and what h2 assigned beyond this message
/// is kept as the stream's credit: the burst's next messages spend it without asking h2 again
/// (each ask takes h2's lock twice). The connection task gives what is left back to h2 when it
/// flushes the burst (see [`Outbox::flush_listed`]).
pub(crate) fn poll_capacity(
    stream: &mut DataOut,
    q: &mut Coalesce,
    fanout: Option<&Fanout>,
    cx: &mut Context<'_>,
    len: usize,
) -> Poll<Result<(), Status>> {
    let want = len.saturating_add(PREFIX_LEN);
    if q.credit >= want {
        q.credit -= want;
        return Poll::Ready(Ok(()));
    }
    q.credit = 0;
    let enough = want.min(SEND_READY_CHUNK);
    let pending = q.pending.len();
    if pending > 0 {
        let ahead = if q.queued { CREDIT_AHEAD } else { 0 };
        stream
            .h2
            .reserve_capacity(want.saturating_add(pending).saturating_add(ahead));
        let capacity = stream.h2.capacity();
        if capacity >= enough.saturating_add(pending) {
            if q.queued {
                q.credit = capacity.saturating_sub(pending).saturating_sub(want);
            }
            return Poll::Ready(Ok(()));
        }
        flush(stream, &mut q.pending, false)?;
    }
    stream.h2.reserve_capacity(want);
    loop {
        if stream.h2.capacity() >= enough {
            return Poll::Ready(Ok(()));
        }
        let polled = match fanout {
            Some(f) => stream
                .h2
                .poll_capacity(&mut Context::from_waker(f.register(cx))),
            None => stream.h2.poll_capacity(cx),
        };
        match polled {
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(status_from_h2(&e, "send"))),
            Poll::Ready(None) => return Poll::Ready(Err(Status::unavailable("stream closed"))),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// What a stream in the middle of a burst asks h2 for beyond its pending bytes and the next
/// message (see [`poll_capacity`]): one [`COALESCE_MAX`] block, so a burst asks h2 about once
/// per DATA frame rather than once per message. Held only until the connection task's next
/// flush, so an idle stream keeps none of the connection's window.
pub(crate) const CREDIT_AHEAD: usize = COALESCE_MAX;

/// Hands the `pending` messages to h2 as one DATA payload (`end`: with END_STREAM, sent even
/// when nothing is pending).
pub(crate) fn flush(stream: &mut DataOut, pending: &mut BytesMut, end: bool) -> Result<(), Status> {
    if pending.is_empty() && !end {
        return Ok(());
    }
    send_data(stream, pending.split().freeze(), end)
}

/// Hands `data` to h2. Data for a stream the peer already ended is not an error: h2 refuses it
/// as a user error without a reason ("inactive stream"; e.g. a Trailers-Only UNIMPLEMENTED that
/// arrives before the request's message is handed over), the data could never be processed,
/// and the end the peer sent is what the receiving side reports (as grpc-go's SendMsg returns
/// EOF and leaves the status to RecvMsg). Resets and lost connections stay errors.
pub(crate) fn send_data(stream: &mut DataOut, data: Bytes, end: bool) -> Result<(), Status> {
    let n = data.len();
    match stream.h2.send_data(data, end) {
        Ok(()) => {
            if let Some((ledger, id)) = &stream.ledger {
                ledger.handed(*id, n + crate::ledger::FRAME_COST);
            }
            Ok(())
        }
        Err(e) if e.reason().is_none() && !e.is_io() => {
            tracing::trace!(error = %e, "grpc: data for a stream the peer ended");
            Ok(())
        }
        Err(e) => Err(status_from_h2(&e, "send")),
    }
}

/// Messages a stream sends while earlier ones wait in its pending buffer are appended to it,
/// and the buffer goes to h2 as one DATA payload once it holds this much (or earlier: see
/// [`Outbox`]). h2 queues, prioritises and writes each `send_data` as its own frame, at a
/// fixed cost per frame; one frame per 16 KiB of small messages instead of one per message
/// amortises it. 16 KiB is HTTP/2's default (and smallest) maximum frame size, so a payload
/// of this size is still one frame.
pub(crate) const COALESCE_MAX: usize = 16 * 1024;

/// A stream that holds encoded messages not yet handed to h2.
pub(crate) trait Flush: Send + Sync {
    /// Hands the pending messages to h2 (errors surface on the stream's next send or poll).
    fn flush_pending(&self);
}

/// A stream's send-side state for [`Outbox::send`].
pub(crate) struct Coalesce {
    /// Encoded messages not yet handed to h2 (see [`Outbox`]); between bursts, the unused
    /// rest of the block the last messages were encoded into (see [`SCRATCH_CHUNK`]).
    pub(crate) pending: BytesMut,
    /// Whether the stream is listed in the connection's outbox.
    queued: bool,
    /// The outbox round in which the stream last handed a message to h2 itself.
    round: u64,
    /// Send capacity h2 assigned that no message has spent yet (see [`poll_capacity`]); only
    /// while the stream is listed.
    credit: usize,
}

impl Coalesce {
    pub(crate) fn new() -> Coalesce {
        Coalesce {
            pending: BytesMut::new(),
            queued: false,
            // No round yet: the first message goes straight.
            round: u64::MAX,
            credit: 0,
        }
    }
}

/// How a connection's streams send messages: straight to h2 when that is a lone message,
/// coalesced into one DATA payload when it is part of a burst.
///
/// h2 writes what it holds whenever its connection task polls it, so a message handed to h2
/// is written on the next poll; the outbox counts those polls (`round`). A stream's message
/// goes to h2 from the sending task itself when the stream holds nothing pending and the
/// connection task has polled h2 since the stream last handed it a message (that message is
/// written or on its way): a lone message costs no extra hop. A message sent before that poll
/// (the stream is sending a burst faster than the connection writes) is appended to the
/// stream's pending buffer instead, the stream is listed here once, and the connection task
/// hands every listed stream's messages to h2 as one payload right before its next poll (see
/// [`Batched`]). So the first message of a burst is one DATA frame and the rest of the burst
/// up to that poll is another (split at [`COALESCE_MAX`]).
pub(crate) struct Outbox {
    /// Polls of h2 the connection task has started (see [`Batched`]).
    round: AtomicU64,
    /// Whether `inner.streams` is non-empty (read by the connection task without the lock).
    listed: AtomicBool,
    /// The connection task (woken when the first stream is listed).
    waker: AtomicWaker,
    inner: Mutex<OutboxInner>,
    /// The connection task's list being flushed (kept to reuse its allocation).
    spare: Mutex<Vec<Weak<dyn Flush>>>,
}

struct OutboxInner {
    streams: Vec<Weak<dyn Flush>>,
    /// The connection task ended: streams hand their messages to h2 directly.
    closed: bool,
}

impl Outbox {
    pub(crate) fn new() -> Arc<Outbox> {
        Arc::new(Outbox {
            round: AtomicU64::new(0),
            listed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            inner: Mutex::new(OutboxInner {
                streams: Vec::new(),
                closed: false,
            }),
            spare: Mutex::new(Vec::new()),
        })
    }

    /// Sends `msg` on `stream` (whose flusher is `me`): straight to h2 when it is a lone
    /// message, else appended to the stream's pending messages (see [`Outbox`]). `repeat` as
    /// for [`encode`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send<S: Flush + 'static>(
        &self,
        me: &Weak<S>,
        q: &mut Coalesce,
        stream: &mut DataOut,
        msg: &mut dyn Encodable,
        compression: Option<Compression>,
        max: usize,
        repeat: bool,
    ) -> Result<(), Status> {
        let round = self.round.load(Ordering::Acquire);
        if q.pending.is_empty() && q.round != round {
            let data = encode(&mut q.pending, msg, compression, max, repeat)?;
            q.round = round;
            return send_data(stream, data, false);
        }
        append(stream, &mut q.pending, msg, compression, max, repeat)?;
        if !q.queued {
            let me: Weak<dyn Flush> = me.clone();
            if self.enqueue(me) {
                q.queued = true;
            } else {
                flush(stream, &mut q.pending, false)?;
            }
        }
        Ok(())
    }

    /// Hands `q`'s pending messages to h2 (the connection task's flush of a listed stream).
    pub(crate) fn flush_listed(
        &self,
        q: &mut Coalesce,
        stream: Option<&mut DataOut>,
    ) -> Result<(), Status> {
        q.queued = false;
        q.round = self.round.load(Ordering::Acquire);
        let credit = std::mem::take(&mut q.credit);
        match stream {
            Some(stream) => {
                let flushed = flush(stream, &mut q.pending, false);
                if credit > 0 {
                    // The burst's unspent credit goes back to the connection.
                    stream.h2.reserve_capacity(0);
                }
                flushed
            }
            None => Ok(()),
        }
    }

    /// Lists `stream` for the next flush; false when the connection task is gone (the
    /// caller flushes itself).
    fn enqueue(&self, stream: Weak<dyn Flush>) -> bool {
        let first = {
            let mut o = lock(&self.inner);
            if o.closed {
                return false;
            }
            o.streams.push(stream);
            let first = o.streams.len() == 1;
            if first {
                self.listed.store(true, Ordering::Release);
            }
            first
        };
        if first {
            self.waker.wake();
        }
        true
    }

    /// Flushes every listed stream, then counts a new round (the caller polls h2 next).
    fn flush(&self) {
        if self.listed.load(Ordering::Acquire) {
            let mut spare = lock(&self.spare);
            let spare = &mut *spare;
            loop {
                {
                    let mut o = lock(&self.inner);
                    if o.streams.is_empty() {
                        break;
                    }
                    std::mem::swap(&mut o.streams, spare);
                    self.listed.store(false, Ordering::Release);
                }
                for s in spare.drain(..) {
                    if let Some(s) = s.upgrade() {
                        s.flush_pending();
                    }
                }
            }
        }
        self.round.fetch_add(1, Ordering::AcqRel);
    }

    /// The connection task ended: nothing will flush listed streams any more.
    pub(crate) fn close(&self) {
        let mut o = lock(&self.inner);
        o.closed = true;
        o.streams = Vec::new();
        self.listed.store(false, Ordering::Release);
    }
}

/// What a stream that sends more than one message reserves at a time for encoding them: the
/// messages are split off one allocation until it is used up (one `malloc` per 4 KiB of small
/// messages instead of one per message). A stream's first message gets exactly its size, so a
/// unary call (and each of many idle streams) holds no more than its message.
pub(crate) const SCRATCH_CHUNK: usize = 4 * 1024;

/// Encodes `msg` with its 5-byte prefix into a DATA payload, compressed when `compression`
/// says so. `scratch` is reused between messages of one stream; `repeat` says whether the
/// stream has sent before (and so probably sends again: see [`SCRATCH_CHUNK`]).
pub(crate) fn encode(
    scratch: &mut BytesMut,
    msg: &mut dyn Encodable,
    compression: Option<Compression>,
    max: usize,
    repeat: bool,
) -> Result<Bytes, Status> {
    scratch.clear();
    if !repeat && scratch.capacity() == 0 {
        // A buffer of its own, frozen whole: when the size hint was exact (it is for
        // protobuf and thrift), the `Bytes` takes the buffer over without the extra
        // allocation that splitting it off a shared block costs.
        let mut own = BytesMut::new();
        encode_into(&mut own, msg, compression, max, 0)?;
        return Ok(own.freeze());
    }
    let block = if repeat { SCRATCH_CHUNK } else { 0 };
    encode_into(scratch, msg, compression, max, block)?;
    Ok(scratch.split().freeze())
}

/// Appends `msg` to a stream's `pending` messages (see [`Outbox`]); `repeat` as for
/// [`encode`]. The pending messages go to h2 first when they reach [`COALESCE_MAX`], or when
/// their block has no room left for `msg` (growing it would copy them); the block after that
/// is [`COALESCE_MAX`] large, since the stream is sending a burst. So a stream holds at
/// most one such block beyond what h2 holds.
pub(crate) fn append(
    stream: &mut DataOut,
    pending: &mut BytesMut,
    msg: &mut dyn Encodable,
    compression: Option<Compression>,
    max: usize,
    repeat: bool,
) -> Result<(), Status> {
    let mut block = if repeat { SCRATCH_CHUNK } else { 0 };
    if !pending.is_empty() {
        let need = PREFIX_LEN + msg.encoded_len().unwrap_or(64);
        if pending.len() >= COALESCE_MAX || pending.capacity() - pending.len() < need {
            flush(stream, pending, false)?;
            block = COALESCE_MAX;
        }
    }
    encode_into(pending, msg, compression, max, block)
}

/// Appends `msg` with its 5-byte prefix to `buf` (see [`encode`]), reserving at least
/// `block` bytes when `buf` has no room for it. On an error `buf` keeps what it held before.
pub(crate) fn encode_into(
    buf: &mut BytesMut,
    msg: &mut dyn Encodable,
    compression: Option<Compression>,
    max: usize,
    block: usize,
) -> Result<(), Status> {
    let start = buf.len();
    let r = encode_at(buf, start, msg, compression, max, block);
    if r.is_err() {
        buf.truncate(start);
    }
    r
}

fn encode_at(
    buf: &mut BytesMut,
    start: usize,
    msg: &mut dyn Encodable,
    compression: Option<Compression>,
    max: usize,
    block: usize,
) -> Result<(), Status> {
    let hint = msg.encoded_len();
    let body = start + PREFIX_LEN;
    match (compression, hint) {
        (None, Some(len)) => {
            // The length is known: the message is written into exactly its bytes. A codec's
            // writes into a slice are plain stores, where each write into a `BytesMut`
            // (prost writes every varint byte on its own) checks and grows the buffer.
            check_send_size(len, max)?;
            let need = PREFIX_LEN + len;
            if buf.capacity() - start < need {
                buf.reserve(need.max(block));
            }
            buf.put_bytes(0, need);
            write_prefix(&mut buf[start..body], len)?;
            msg.encode_slice(&mut buf[body..])?;
        }
        (None, None) => {
            let need = PREFIX_LEN + 64;
            if buf.capacity() - start < need {
                buf.reserve(need.max(block));
            }
            buf.put_bytes(0, PREFIX_LEN);
            msg.encode(buf)?;
            let len = buf.len() - body;
            check_send_size(len, max)?;
            write_prefix(&mut buf[start..body], len)?;
        }
        (Some(c), _) => {
            let mut plain = BytesMut::with_capacity(hint.unwrap_or(64));
            msg.encode(&mut plain)?;
            check_send_size(plain.len(), max)?;
            buf.reserve(PREFIX_LEN + plain.len() / 2 + 64);
            buf.put_bytes(0, PREFIX_LEN);
            compress(c, &plain, buf)?;
            let len = buf.len() - body;
            write_prefix(&mut buf[start..body], len)?;
            buf[start] = 1;
        }
    }
    Ok(())
}

fn check_send_size(len: usize, max: usize) -> Result<(), Status> {
    if len > max {
        return Err(Status::new(
            Code::ResourceExhausted,
            format!("message of {len} bytes exceeds the send limit of {max} bytes"),
        ));
    }
    Ok(())
}

/// The receiving half of a stream: DATA chunks are taken from h2 only while the application
/// asks for a message and none is assembled, and their flow-control capacity is released
/// once taken (in [`RELEASE_CHUNK`]s, and all of it before waiting). So a receiver that stops
/// reading holds at most one window in h2 plus one partly assembled message here, and its
/// peer stops sending.
pub(crate) struct Receiver {
    pub(crate) body: RecvStream,
    pub(crate) decoder: MessageDecoder,
    pub(crate) eof: bool,
    /// The call's compression handle, told how messages arrive (server side: only once a
    /// handler asked for it, see [`Receiver::attach`]).
    pub(crate) compression: Option<MessageCompression>,
    /// The compressed flag of the last message received (`None` before the first): the
    /// handle is told only when it changes, not per message.
    last_compressed: Option<bool>,
    /// Server side: the connection's ledger, charged with what the decoder holds.
    pub(crate) budget: Option<Charge>,
    /// Bytes taken from h2 whose flow-control capacity is not yet released (see
    /// [`RELEASE_CHUNK`]).
    unreleased: usize,
}

/// Flow-control capacity of DATA taken from h2 is released in chunks of this many bytes, and
/// always before the receiver waits for more (and at the end), instead of once per DATA frame:
/// a stream of small messages takes h2's lock and queues window bookkeeping once per 16 KiB
/// rather than once per message. Releasing later only holds the peer back more, never lets it
/// send more; and since all of it is released before waiting, a window smaller than this
/// cannot stall the stream.
pub(crate) const RELEASE_CHUNK: usize = 16 * 1024;

/// Bytes a server stream's decoder holds (a partly received message), charged to the
/// server-wide budget (`ServerLimits::max_buffered_bytes`) through the connection's
/// [`Ledger`] until released; and the stream's id, to tell the ledger when DATA leaves h2.
pub(crate) struct Charge {
    ledger: Arc<Ledger>,
    stream: u32,
    charged: usize,
}

impl Charge {
    pub(crate) fn new(ledger: Arc<Ledger>, stream: u32) -> Charge {
        Charge {
            ledger,
            stream,
            charged: 0,
        }
    }

    /// Brings the charge to `n` bytes.
    pub(crate) fn set(&mut self, n: usize) {
        if n > self.charged {
            self.ledger.adjust(n - self.charged, true);
        } else if n < self.charged {
            self.ledger.adjust(self.charged - n, false);
        }
        self.charged = n;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0);
        self.ledger.unpark(self.stream);
    }
}

/// What one server stream may hold of a partial message while the server-wide budget is
/// used up: a stream above it fails with `RESOURCE_EXHAUSTED` instead of taking more, so
/// streams of small messages keep working while a flood of large partial messages is cut.
pub(crate) const STREAM_RESERVE: usize = 64 * 1024;

impl Drop for Receiver {
    fn drop(&mut self) {
        self.release();
    }
}

/// What [`Receiver::poll_message`] yields.
pub(crate) enum Received {
    Message(Bytes),
    /// The DATA ended cleanly (trailers may follow).
    Eof,
}

impl Receiver {
    pub(crate) fn new(
        body: RecvStream,
        max: usize,
        encoding: Option<Compression>,
        compression: Option<MessageCompression>,
    ) -> Receiver {
        Receiver {
            body,
            decoder: MessageDecoder::new(max, encoding),
            eof: false,
            compression,
            last_compressed: None,
            budget: None,
            unreleased: 0,
        }
    }

    fn release(&mut self) {
        if self.unreleased > 0 {
            let _ = self.body.flow_control().release_capacity(self.unreleased);
            self.unreleased = 0;
        }
    }

    /// Tells `handle` (made after messages may have arrived) how the last one did, and keeps
    /// it told from now on.
    pub(crate) fn attach(&mut self, handle: MessageCompression) {
        if let Some(compressed) = self.last_compressed {
            handle.record_received(compressed);
        }
        self.compression = Some(handle);
    }

    /// Charges what the decoder holds, and tells what it takes from h2, to the connection's
    /// `ledger` as `stream`'s (server side).
    pub(crate) fn with_ledger(mut self, ledger: Arc<Ledger>, stream: u32) -> Receiver {
        self.budget = Some(Charge::new(ledger, stream));
        self
    }

    /// Brings the budget's charge to what the decoder holds. Called when a DATA chunk was
    /// taken and when the decoder runs empty, not per message: while the messages of one
    /// chunk are handed out the chunk stays charged whole (its memory is one allocation,
    /// held until the last message of it is dropped), so a burst of small messages costs one
    /// charge and one release per chunk rather than an atomic operation per message.
    fn recharge(&mut self) {
        let held = self.decoder.held();
        if let Some(c) = &mut self.budget {
            c.set(held);
        }
    }

    pub(crate) fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Received, Status>> {
        let r = self.poll_message_inner(cx);
        match &r {
            // Still inside a charged chunk: the charge is updated when it runs out.
            Poll::Ready(Ok(Received::Message(_))) if !self.decoder.is_empty() => {}
            _ => self.recharge(),
        }
        r
    }

    /// After [`Receiver::poll_message`] gave a message: appends up to `max` more that are
    /// whole, uncompressed and valid in the chunk being decoded (see
    /// [`MessageDecoder::next_in_chunk`]) to `more`, taking nothing more from h2. Anything
    /// else (the end, an error, a compressed or partial message) is left for the next
    /// `poll_message`. The queued messages are slices of the chunk, which was charged to the
    /// byte budget while they were in it; like a message handed out one at a time, they are
    /// the handler's from here.
    pub(crate) fn take_ready(&mut self, more: &mut std::collections::VecDeque<Bytes>, max: usize) {
        if self.last_compressed != Some(false) {
            // The compression handle is told when the flag changes; this path never does.
            return;
        }
        let mut taken = 0;
        while taken < max {
            match self.decoder.next_in_chunk() {
                Some(m) => {
                    more.push_back(m);
                    taken += 1;
                }
                None => break,
            }
        }
        if taken > 0 && self.decoder.is_empty() {
            self.recharge();
        }
    }

    fn poll_message_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<Received, Status>> {
        loop {
            if let Some(m) = self.decoder.next_message()? {
                if self.last_compressed != Some(m.compressed) {
                    self.last_compressed = Some(m.compressed);
                    if let Some(c) = &self.compression {
                        c.record_received(m.compressed);
                    }
                }
                return Poll::Ready(Ok(Received::Message(m.bytes)));
            }
            if self.eof {
                self.decoder.finish_stream()?;
                return Poll::Ready(Ok(Received::Eof));
            }
            if let Some(c) = &self.budget {
                if c.ledger.budget().is_exhausted() && self.decoder.buffered() > STREAM_RESERVE {
                    return Poll::Ready(Err(Status::new(
                        Code::ResourceExhausted,
                        "the server's buffer budget is used up; this stream holds a large partial message",
                    )));
                }
            }
            match self.body.poll_data(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(c) = &self.budget {
                        c.ledger.taken(c.stream, chunk.len());
                    }
                    self.unreleased += chunk.len();
                    if self.unreleased >= RELEASE_CHUNK {
                        self.release();
                    }
                    self.decoder.push(chunk);
                    self.recharge();
                }
                Poll::Ready(Some(Err(e))) => {
                    self.release();
                    return Poll::Ready(Err(status_from_h2(&e, "receive")));
                }
                Poll::Ready(None) => {
                    self.release();
                    self.eof = true;
                }
                Poll::Pending => {
                    // Everything taken is released before waiting: the peer may be stopped
                    // on exactly this capacity.
                    self.release();
                    if let Some(c) = &self.budget {
                        if self.decoder.buffered() > STREAM_RESERVE {
                            // Woken if the connection stops being read meanwhile: the check
                            // above then gives the partial message up.
                            c.ledger.park(c.stream, cx.waker());
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Whether a server connection's writes are held back: set by the connection task
/// ([`Batched`]) while it polls h2, so that the frames h2 writes in one poll are gathered by
/// the server's socket wrapper (up to its bound) and written with one syscall when the task
/// polls h2 once more without holding (h2's flush at the end of that poll writes them).
#[derive(Default)]
pub(crate) struct WriteHold {
    holding: AtomicBool,
    /// Something was held at a flush: h2 must be polled again to write it.
    deferred: AtomicBool,
}

impl WriteHold {
    /// Writes are held from now until [`WriteHold::release`].
    pub(crate) fn hold(&self) {
        self.holding.store(true, Ordering::Relaxed);
    }

    /// Writes are no longer held; true when some were held at a flush (the caller polls h2
    /// again, which writes them).
    pub(crate) fn release(&self) -> bool {
        self.holding.store(false, Ordering::Relaxed);
        self.deferred.swap(false, Ordering::Relaxed)
    }

    /// Whether writes are held now.
    pub(crate) fn holding(&self) -> bool {
        self.holding.load(Ordering::Relaxed)
    }

    /// A flush found held bytes: the caller of [`WriteHold::release`] polls h2 again.
    pub(crate) fn defer(&self) {
        self.deferred.store(true, Ordering::Relaxed);
    }
}

/// Polls a future (an h2 connection, or the server's `accept`) one scheduler round after it
/// was woken: streams of other tasks
/// that are ready to run queue their frames first, so one poll writes them together (h2
/// flushes on every poll of its connection; polled at each wake-up under load it writes a
/// few frames per syscall). Right before that poll, the streams listed in the connection's
/// [`Outbox`] hand their pending messages to h2 and the outbox counts a new round.
pub(crate) struct Batched<'a, F> {
    inner: F,
    yielded: bool,
    outbox: Option<&'a Outbox>,
    hold: Option<&'a WriteHold>,
}

impl<'a, F> Batched<'a, F> {
    pub(crate) fn new(inner: F, outbox: Option<&'a Outbox>) -> Self {
        Batched {
            inner,
            yielded: false,
            outbox,
            hold: None,
        }
    }

    /// Holds the connection's writes while polling (see [`WriteHold`]): what h2 writes
    /// in one poll goes out with one syscall, on a second poll made when anything was held.
    pub(crate) fn holding(mut self, hold: &'a WriteHold) -> Self {
        self.hold = Some(hold);
        self
    }
}

impl<F: Future + Unpin> Future for Batched<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if let Some(o) = this.outbox {
            o.waker.register(cx.waker());
        }
        if !this.yielded {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.yielded = false;
        if let Some(o) = this.outbox {
            o.flush();
        }
        let Some(hold) = this.hold else {
            return Pin::new(&mut this.inner).poll(cx);
        };
        hold.hold();
        let r = Pin::new(&mut this.inner).poll(cx);
        if hold.release() && r.is_pending() {
            // Writes what the first poll held (ready: whatever a request that arrived since).
            return Pin::new(&mut this.inner).poll(cx);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Raw bytes as a message.
    struct Raw(Bytes);

    impl Encodable for Raw {
        fn encode(&mut self, dst: &mut BytesMut) -> Result<(), Status> {
            dst.extend_from_slice(&self.0);
            Ok(())
        }
        fn encode_slice(&mut self, dst: &mut [u8]) -> Result<(), Status> {
            dst.copy_from_slice(&self.0);
            Ok(())
        }
        fn encode_dyn(&mut self, dst: &mut dyn BufMut) -> Result<(), Status> {
            dst.put_slice(&self.0);
            Ok(())
        }
        fn encoded_len(&self) -> Option<usize> {
            Some(self.0.len())
        }
    }

    /// One stream over h2 whose receiver has a `window`-byte stream and connection window:
    /// the server task counts the stream's 100-byte messages (message `i` is 100 bytes of
    /// `i as u8`) until its end and returns the count; the client's halves of the stream are
    /// returned for the test to send on.
    async fn small_window_stream(
        window: u32,
    ) -> (
        tokio::task::JoinHandle<usize>,
        h2::client::ResponseFuture,
        DataOut,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::Builder::new()
                .initial_window_size(window)
                .initial_connection_window_size(window)
                .handshake::<_, Bytes>(b)
                .await
                .expect("server handshake");
            let (req, _respond) = conn
                .accept()
                .await
                .expect("a request")
                .expect("a valid request");
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            let mut rx = Receiver::new(req.into_body(), 1 << 20, None, None);
            let mut got = 0usize;
            loop {
                match std::future::poll_fn(|cx| rx.poll_message(cx)).await {
                    Ok(Received::Message(m)) => {
                        assert_eq!(&m[..], &[got as u8; 100][..]);
                        got += 1;
                    }
                    Ok(Received::Eof) => return got,
                    Err(e) => panic!("receive failed: {e}"),
                }
            }
        });
        let (mut send, conn) = h2::client::handshake(a).await.expect("client handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::post("http://localhost/s.S/M")
            .body(())
            .expect("request");
        let (response, stream) = send.send_request(req, false).expect("open");
        (server, response, DataOut::plain(stream))
    }

    /// The client half of one h2 stream whose server side forwards each DATA frame it
    /// receives (as h2 hands them over: one chunk per frame) to the returned channel. The
    /// client connection is polled by a plain task: no [`Batched`], so nothing ever flushes
    /// an [`Outbox`].
    async fn frame_probe() -> (
        DataOut,
        tokio::sync::mpsc::Receiver<Bytes>,
        h2::client::ResponseFuture,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(b).await.expect("server handshake");
            let (req, _respond) = conn
                .accept()
                .await
                .expect("a request")
                .expect("a valid request");
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            let mut body = req.into_body();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        let (send, conn) = h2::client::handshake(a).await.expect("client handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut send = send.ready().await.expect("ready");
        let req = http::Request::post("http://localhost/s.S/M")
            .body(())
            .expect("request");
        let (response, stream) = send.send_request(req, false).expect("open");
        (DataOut::plain(stream), rx, response)
    }

    /// A stream sending through an [`Outbox`], as the client and server streams do.
    struct Probe {
        me: Weak<Probe>,
        outbox: Arc<Outbox>,
        send: Mutex<(Coalesce, DataOut)>,
    }

    impl Flush for Probe {
        fn flush_pending(&self) {
            let mut s = lock(&self.send);
            let (q, stream) = &mut *s;
            self.outbox.flush_listed(q, Some(stream)).expect("flush");
        }
    }

    /// A lone message goes to h2 from the sending task: it arrives although no connection
    /// task ever flushes the outbox. Messages sent after it in the same round (before the
    /// connection task polled h2) wait in the stream's pending buffer and arrive as one DATA
    /// frame once the outbox is flushed; the next message after that round goes straight
    /// again.
    #[tokio::test]
    async fn a_lone_message_goes_straight_and_a_burst_is_coalesced() {
        let wait = Duration::from_secs(10);
        let (stream, mut frames, _response) = frame_probe().await;
        let outbox = Outbox::new();
        let probe = Arc::new_cyclic(|me| Probe {
            me: me.clone(),
            outbox: outbox.clone(),
            send: Mutex::new((Coalesce::new(), stream)),
        });
        let send = |i: u8| {
            let mut s = lock(&probe.send);
            let (q, stream) = &mut *s;
            let mut msg = Raw(Bytes::from(vec![i; 100]));
            outbox
                .send(&probe.me, q, stream, &mut msg, None, usize::MAX, i > 0)
                .expect("send");
        };
        send(0);
        let first = tokio::time::timeout(wait, frames.recv())
            .await
            .expect("a lone message must reach h2 without the connection task")
            .expect("a frame");
        assert_eq!(first.len(), PREFIX_LEN + 100);
        assert_eq!(first[PREFIX_LEN], 0);

        // Messages 1..=3 follow within the same round: they wait for the flush.
        for i in 1..=3 {
            send(i);
        }
        assert!(!lock(&probe.send).0.pending.is_empty());
        // What the connection task does before it polls h2.
        outbox.flush();
        assert!(lock(&probe.send).0.pending.is_empty());
        let burst = tokio::time::timeout(wait, frames.recv())
            .await
            .expect("the flushed burst")
            .expect("a frame");
        assert_eq!(
            burst.len(),
            3 * (PREFIX_LEN + 100),
            "one DATA frame for the burst"
        );
        for i in 1..=3u8 {
            assert_eq!(
                burst[(usize::from(i) - 1) * (PREFIX_LEN + 100) + PREFIX_LEN],
                i
            );
        }

        // A new round: straight again.
        send(4);
        let next = tokio::time::timeout(wait, frames.recv())
            .await
            .expect("a lone message after the round")
            .expect("a frame");
        assert_eq!(next[PREFIX_LEN], 4);
    }

    /// A receive window far below [`RELEASE_CHUNK`]: the deferred release must still let a
    /// stream of many small messages through (everything taken is released before the
    /// receiver waits), and each message arrives intact.
    #[tokio::test]
    async fn a_window_smaller_than_the_release_chunk_does_not_stall_the_stream() {
        const WINDOW: u32 = 1024;
        const MESSAGES: usize = 2000;
        let (server, _response, mut stream) = small_window_stream(WINDOW).await;
        let sending = async move {
            let mut scratch = BytesMut::new();
            for i in 0..MESSAGES {
                let mut msg = Raw(Bytes::from(vec![i as u8; 100]));
                std::future::poll_fn(|cx| {
                    poll_capacity(&mut stream, &mut Coalesce::new(), None, cx, 100)
                })
                .await
                .expect("send capacity");
                let data = encode(&mut scratch, &mut msg, None, usize::MAX, i > 0).expect("encode");
                stream.h2.send_data(data, false).expect("send");
            }
            stream.h2.send_data(Bytes::new(), true).expect("close");
            stream
        };
        let both = async { tokio::join!(sending, server) };
        let (_stream, got) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("the stream stalled");
        assert_eq!(got.expect("server task"), MESSAGES);
    }

    /// Messages appended to a pending buffer that is handed to h2 only every ten messages
    /// (as the connection task does once per round), on a window smaller than ten messages:
    /// `poll_capacity` hands the pending messages over itself when h2 has not assigned room
    /// for them and the next one, so the stream never waits on data h2 has not seen, and
    /// the pending buffer never outgrows the window — also while the stream is listed and
    /// spends credit asked for ahead.
    #[tokio::test]
    async fn pending_messages_are_handed_over_before_waiting_for_capacity() {
        for listed in [false, true] {
            pending_within_window(listed).await;
        }
    }

    async fn pending_within_window(listed: bool) {
        const WINDOW: u32 = 1024;
        const MESSAGES: usize = 2000;
        let (server, _response, mut stream) = small_window_stream(WINDOW).await;
        let outbox = Outbox::new();
        let sending = async move {
            let mut q = Coalesce::new();
            q.queued = listed;
            let mut most = 0;
            for i in 0..MESSAGES {
                let mut msg = Raw(Bytes::from(vec![i as u8; 100]));
                std::future::poll_fn(|cx| poll_capacity(&mut stream, &mut q, None, cx, 100))
                    .await
                    .expect("send capacity");
                let block = if i > 0 { SCRATCH_CHUNK } else { 0 };
                encode_into(&mut q.pending, &mut msg, None, usize::MAX, block).expect("encode");
                most = most.max(q.pending.len());
                if i % 10 == 9 {
                    if listed {
                        outbox
                            .flush_listed(&mut q, Some(&mut stream))
                            .expect("send");
                        q.queued = true;
                    } else {
                        flush(&mut stream, &mut q.pending, false).expect("send");
                    }
                }
            }
            flush(&mut stream, &mut q.pending, true).expect("close");
            (stream, most)
        };
        let both = async { tokio::join!(sending, server) };
        let ((_stream, most), got) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("the stream stalled");
        assert_eq!(got.expect("server task"), MESSAGES);
        assert!(
            most <= WINDOW as usize,
            "{most} bytes pending on a {WINDOW}-byte window (listed: {listed})"
        );
    }
}
