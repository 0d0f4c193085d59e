//! The TTHeader Streaming session: every stream of one connection, apart from what carries its
//! frames.
//!
//! A [`Session`] owns the connection-level policy — the stream map, id allocation, accepting,
//! routing and refusing streams, per-stream receive queues with byte accounting, the
//! `ClientStreamRaw` / `ServerStreamRaw` handles, graceful drain — and is generic over how
//! frames travel:
//!
//! - **out**: it writes encoded frames into a [`FrameSink`] (the socket transport's write
//!   queue; a shared-memory transport's ring). Control frames are appended whole; a Data frame
//!   is its stream's cached head followed by the message, which the sink lets the `Encodable`
//!   encode straight into its own buffer (no intermediate copy);
//! - **in**: the transport's reader hands it bytes ([`Session::on_bytes`]) or frames it decoded
//!   itself ([`Session::on_frame`], [`Session::on_data`], [`Session::on_bad_frame`]), and says
//!   when the connection is gone ([`Session::on_lost`]);
//! - **backpressure**: the reader asks [`Session::must_pause`] before it reads more and waits on
//!   [`Session::wait_readable`] (or [`Session::reader_signal`] and the sink's
//!   [`FrameSink::progress`]) while it must not.
//!
//! No socket, task or timer lives here: the socket transport (`driver::stream_conn`) is a write
//! queue implementing the sink, a writer task and a reader task; a shared-memory transport
//! implements the sink over its rings and feeds the same session from its ring reader.
//!
//! # One state per stream
//!
//! The raw-stream contract (`rpc_core::transport`) makes the core the owner of a call's
//! state; the session keeps only what the protocol and the wire need, once:
//!
//! ```text
//!  rpc-core (ClientShared / ServerShared)     one per call: header sent or received, send
//!  │                                          half-closed, ended and with what status and
//!  │  raw-stream primitives, in the           trailer, local cancel, deadline, metadata to
//!  │  order the contract promises             send; it never calls after the end
//!  ▼
//!  session::Stream (this module)              one per stream, one lock:
//!  │  ├─ proto::StreamState                   the protocol's state machine: each direction
//!  │  │                                       Idle → Open → Closed, and why it finished
//!  │  │                                       (trailer, Rst, connection lost); what it
//!  │  │                                       refuses is not sent
//!  │  └─ receive queue                        what arrived and the core has not taken:
//!  │                                          the peer's header (client), messages with
//!  │                                          their byte accounting, how the receive
//!  │                                          side ended (EOF / trailer / failure)
//!  ▼
//!  Session                                    one per connection: the stream table, id
//!                                             allocation, accepting/refusing, streams
//!                                             waiting for their first message, received-
//!                                             bytes accounting, lifecycle, the FrameSink
//! ```
//!
//! A stream is itself the core's `ClientStreamRaw` / `ServerStreamRaw` (one allocation per
//! stream) and reaches its connection through the `Host` trait, so it does not depend on the
//! session module. The crate's module graph has no circle:
//!
//! ```text
//!  proto (kinds ← error ← … ← frame, stream)       sans-IO codecs and state machine
//!    ▲
//!  common, mapping                                 lifecycle, ids; Status/Metadata ↔ wire
//!    ▲
//!  session (limits, sink ← stream ← mod)           streams of one connection, any carrier
//!    ▲
//!  driver (config, io, reader, write, conn, …)     sockets, tasks, pools, unary TTHeader
//!    ▲
//!  rpc-transport-shm                               the same session over shared memory
//! ```
//!
//! # Handing streams to the server
//!
//! A server session registers a stream when its Header arrives and hands it to the server
//! with its first message ([`Session::on_data`]), or when the reader's batch of frames ends
//! ([`Session::dispatch_pending`], which [`Session::on_bytes`] calls itself): a unary
//! request that travels with its Header (as every client writes it) is then queued when the
//! core first polls the handler, which completes in the reader's call without a task of its
//! own, as a unary TTHeader call does. A carrier that delivers frames in packs
//! ([`Session::on_frames`]; shared memory, whose sink says
//! [`FrameSink::batches_one_shot_requests`]: a one-shot request's Header waits for its message
//! and half-close and goes with them) dispatches once the whole pack is in, so the handler
//! finds the half-close queued too.
//!
//! # Memory bounds and the head-of-line trade-off
//!
//! ttstream has no flow control on the wire (Kitex peers have none to speak), so received data
//! is bounded the only way that never loses a message: when a stream holds more than
//! [`Limits::stream_recv_buffer`] unread bytes, or the connection more than
//! [`Limits::conn_recv_buffer`], [`Session::must_pause`] holds until the handle reads and the
//! reader stops reading. TCP (or a full ring) then pushes back on the sender. The cost is
//! head-of-line blocking: other streams on that connection wait too. Streams on other
//! connections (the client pool keeps several) are not affected, and memory never grows
//! without bound.
//!
//! A server session is bounded further by the core server's
//! [`ServerLimits`](rpc_core::limits::ServerLimits):
//! - its reader also stops while the sink's backlog, control frames included, is at twice
//!   [`Limits::write_buffer`] (a full queue behind a full batch in flight; a peer that never reads cannot make it queue replies or
//!   refusals without bound), and while the server-wide byte budget is used up and this
//!   connection holds more than [`Limits::conn_reserve`];
//! - the budget is charged with what the connection holds: messages queued for handles (each
//!   with a per-message overhead, so a flood of tiny messages counts for what it costs;
//!   a small message is copied out of the read buffer when queued, so it never pins a read
//!   chunk), the state of each open stream (`rpc_core::limits::STREAM_STATE_BYTES`), the
//!   sink's buffers ([`FrameSink::held`]) and, in the socket driver, the read buffer's
//!   capacity — together the bound `budget + PER_CONNECTION_BYTES × connections`
//!   (`rpc_core::limits`);
//! - at most `max_concurrent_streams` streams are open at once: a Header beyond that is
//!   refused with a Header + Trailer carrying an exception of type [`REFUSED_STREAM_CODE`],
//!   and so is one arriving while the budget is spent and the connection holds more than its
//!   reserve (retryable, `UNAVAILABLE`);
//! - (socket transport) a frame must complete within `frame_timeout` of its first bytes, and a
//!   connection with no open stream ([`Session::is_idle`]) and no bytes for `idle_timeout` is
//!   closed.
//!
//! Forward compatibility with newer peers: a frame of an unknown type is ignored (as HTTP/2
//! ignores unknown frame types, RFC 9113 §4.1); any other frame that is well delimited but
//! not a valid ttstream frame (no frame type, a non-streaming protocol id or flags, a method
//! that is not UTF-8, stream id 0) ends the stream it names
//! with 12004 (illegal frame) if that stream is open and is ignored otherwise. Only a byte
//! stream that cannot be delimited closes the connection.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::{Buf, Bytes, BytesMut};
use rpc_core::limits::ByteBudget;
use rpc_core::server::Route;
use rpc_core::transport::ServerExt;
use rpc_core::transport::{ClientStreamRaw, IncomingStream};
use rpc_core::{CallContext, Code, Error, PayloadKind, Peer, Server, Status};
use tokio::sync::Notify;

use crate::common::{
    deadline_of, id_map, lock, pause_while, route_refusal, timeout_ms, IdMap, Lifecycle,
};
use crate::mapping::{extend_kvs, metadata_of};
use crate::proto::keys::{int_key, kitex_code, str_key};
use crate::proto::{
    ApplicationException, BadFrame, FrameError, FrameKind, MethodName, PlainFrame, Role,
    StreamFrame, StreamProtocol, StreamState,
};

mod limits;
mod sink;
mod stream;
#[cfg(test)]
mod tests;

use limits::RecvBytes;
pub(crate) use limits::{copies, held_for, keep, Counted, MAX_CHUNK};
pub use limits::{
    Limits, Stats, DEFAULT_CLIENT_IDLE_TIMEOUT, DEFAULT_CONN_RECV_BUFFER, DEFAULT_CONN_RESERVE,
    DEFAULT_STREAM_RECV_BUFFER, DEFAULT_WRITE_BUFFER,
};
pub(crate) use sink::append_packet;
pub use sink::{append_data_frame, BufWriter, FrameSink, FrameWriter, MemorySink, SinkError};
pub(crate) use stream::refused_unprocessed;

use stream::{Host, Stream};

/// The exception type a server refuses a stream with when the connection already has
/// `max_concurrent_streams` open. Kitex has no "refused stream" code; 12006 (transport
/// closing) is the one Kitex and our mapping both read as UNAVAILABLE — retry later or
/// elsewhere, as gRPC clients treat HTTP/2's REFUSED_STREAM. Graceful shutdown refuses with
/// the same code; the message tells the two apart.
pub const REFUSED_STREAM_CODE: i32 = kitex_code::TRANSPORT_CLOSING;

/// The streams of one ttstream connection, generic over how frames are written ([`FrameSink`])
/// and fed by whatever reads them (module docs). Client and server share it; the role decides
/// who opens streams.
pub struct Session<S: FrameSink> {
    role: Role,
    limits: Limits,
    sink: S,
    /// The open streams, by id. Weak: a stream lives as long as the core holds it (its
    /// `Drop` ends it if the core never did, see `Stream`), and leaves this table when it
    /// ends.
    streams: Mutex<IdMap<i32, Weak<Stream<Session<S>>>>>,
    /// Server: streams accepted and not yet handed to the server, waiting for their first
    /// message (see [`Session::dispatch_pending`]).
    pending: Mutex<Vec<Pending<S>>>,
    /// Whether `pending` may hold a stream (set under its lock with each push, cleared under
    /// it when found empty): a Data frame of a running stream skips the lock.
    any_pending: AtomicBool,
    /// Bytes queued in all streams of this session.
    rx: RecvBytes,
    life: Lifecycle,
    next_id: AtomicI32,
    peer: Option<Peer>,
    stats: Arc<Stats>,
    server: Option<Server>,
    /// Server side: the server-wide budget received and queued bytes are charged to.
    budget: Option<Arc<ByteBudget>>,
    counted: Counted,
    /// Retired as idle: no new stream (client side; see [`Session::retire_idle`]).
    retired: AtomicBool,
    /// Server side: a drain waits for the client to close (see [`Session::linger_on_drain`]).
    linger: AtomicBool,
}

impl<S: FrameSink> std::fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("peer", &self.peer)
            .field("streams", &self.stream_count())
            .field("lost", &self.life.lost())
            .finish()
    }
}

impl<S: FrameSink> Session<S> {
    /// A session writing into `sink`. A server session (`server` is `Some`) accepts streams
    /// and dispatches them to `server`, charging received bytes to its byte budget (the sink
    /// charges what it queues, if it wants to). `stats` counts the session and its streams.
    pub fn new(
        role: Role,
        sink: S,
        limits: Limits,
        peer: Option<Peer>,
        stats: &Arc<Stats>,
        server: Option<Server>,
    ) -> Arc<Session<S>> {
        let budget = server.as_ref().map(|s| s.byte_budget().clone());
        let rx = RecvBytes::new(&limits, stats, budget.clone());
        Arc::new(Session {
            role,
            limits,
            sink,
            streams: Mutex::new(id_map()),
            pending: Mutex::new(Vec::new()),
            any_pending: AtomicBool::new(false),
            rx,
            life: Lifecycle::new(),
            next_id: AtomicI32::new(1),
            peer,
            stats: stats.clone(),
            server,
            budget,
            counted: Counted::new(stats, |s| &s.connections),
            retired: AtomicBool::new(false),
            linger: AtomicBool::new(false),
        })
    }

    /// The sink frames are written into.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The limits this session was made with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The server a server session dispatches to.
    pub fn server(&self) -> Option<&Server> {
        self.server.as_ref()
    }

    /// The server-wide byte budget (server side): a reader charges its unparsed bytes to it.
    pub fn budget(&self) -> Option<&Arc<ByteBudget>> {
        self.budget.as_ref()
    }

    /// Whether the session can carry new streams.
    pub fn is_usable(&self) -> bool {
        self.life.lost().is_none()
            && !self.sink.is_closed()
            && !self.life.is_draining()
            && !self.retired.load(Ordering::Acquire)
    }

    /// No stream is open: take no new one (the connection is about to close as idle); says
    /// whether it did. Atomic with [`Session::open`] (both hold the stream table): once it
    /// returned true, `open` fails without sending anything, so the caller may close the
    /// connection and retry the open elsewhere (the shared-memory client does after a server's
    /// go-away).
    pub fn retire_idle(&self) -> bool {
        let streams = lock(&self.streams);
        if !streams.is_empty() {
            return false;
        }
        self.retired.store(true, Ordering::Release);
        true
    }

    /// Whether the session was retired as idle ([`Session::retire_idle`]): a stream that
    /// failed to open on it may be retried on a new connection.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Streams open now.
    pub fn stream_count(&self) -> usize {
        lock(&self.streams).len()
    }

    /// No open stream (the reader's idle clock runs).
    pub fn is_idle(&self) -> bool {
        self.stream_count() == 0
    }

    pub(crate) fn lifecycle(&self) -> &Lifecycle {
        &self.life
    }

    /// Why the session ended, once it did.
    pub fn lost(&self) -> Option<&Status> {
        self.life.lost()
    }

    /// Server shutdown begins: new streams are refused from now on.
    pub fn start_drain(&self) {
        self.life.start_drain();
    }

    /// Server shutdown: refuses new streams; resolves once the open ones ended — or, when
    /// the session lingers (the server set it for a Unix socket), once the connection is gone.
    pub async fn drain(&self) {
        let linger = self.linger.load(Ordering::Acquire);
        self.life
            .drain(|| !linger && self.stream_count() == 0)
            .await;
    }

    /// Server side: a drain keeps the connection, reading and refusing new streams (each
    /// refusal marked unprocessed), until the client closes it or the grace period ends,
    /// instead of closing it once its streams ended: a client that opens a stream while the
    /// server closes cannot know whether the server read it, while a refused stream is known
    /// unprocessed and opened again elsewhere, and our client closes a connection whose
    /// streams were refused once its own streams ended. Set for Unix sockets (see
    /// `stream_conn`).
    pub(crate) fn linger_on_drain(&self) {
        self.linger.store(true, Ordering::Release);
    }

    /// Client side: the server refused a stream because it is shutting down: no new stream
    /// goes on this session, and it closes once its streams ended.
    pub(crate) fn peer_draining(&self) {
        if self.role != Role::Client {
            return;
        }
        self.life.start_drain();
        let close = Self::retire_drained(self, &lock(&self.streams));
        if close {
            self.on_lost(Status::unavailable("the server is shutting down"));
        }
    }

    /// Client side, the stream table held: whether a session whose server is shutting down
    /// carries no stream any more; it then takes no new one (atomically with `open`, which
    /// fails as on a session retired as idle and is retried elsewhere) and the caller closes
    /// it.
    fn retire_drained<T>(&self, streams: &IdMap<i32, T>) -> bool {
        self.role == Role::Client
            && self.life.is_draining()
            && streams.is_empty()
            && !self.retired.swap(true, Ordering::AcqRel)
    }

    // ------------------------------------------------------------------------------- inbound

    /// The connection is gone (EOF, an I/O error, a timeout, shutdown): every open stream ends
    /// with `UNAVAILABLE` carrying `status`'s message, the sink is closed and the reader and
    /// `drain` are woken. Only the first call counts.
    pub fn on_lost(&self, status: Status) {
        if !self.life.lose(&status) {
            return;
        }
        if status.code() != Code::Ok {
            tracing::debug!(role = ?self.role, peer = ?self.peer, %status, "ttstream connection closed");
        }
        self.sink.close();
        self.counted.release();
        // Streams accepted and not handed over yet end with the rest; the server never sees
        // them.
        lock(&self.pending).clear();
        // Upgraded outside the table's lock: a stream whose last holder lets go here ends in
        // its `Drop`, which takes the table.
        let streams: Vec<_> = lock(&self.streams).drain().map(|(_, s)| s).collect();
        let code = match self.role {
            Role::Client => kitex_code::TRANSPORT_CLOSING,
            Role::Server => kitex_code::CONNECTION_CLOSED,
        };
        let stream_status = Status::unavailable(format!("connection lost: {}", status.message()))
            .with_transport_code(code);
        for s in streams.iter().filter_map(Weak::upgrade) {
            s.connection_lost(&stream_status);
        }
        self.life.wake_all();
    }

    /// Takes every whole frame off the front of `buf` and handles it; returns whether it took
    /// any. An error means the bytes cannot be delimited: the connection must end with it.
    pub fn on_bytes(self: &Arc<Self>, buf: &mut BytesMut) -> Result<bool, Status> {
        let limits = self.limits.proto();
        let mut decoded = false;
        let outcome = loop {
            // Most frames are plain: Data frames are taken without allocating, and a frame
            // for a stream this session no longer has is dropped unparsed.
            if let Some(p) = StreamFrame::peek_plain(buf, &limits) {
                if p.kind == FrameKind::Data {
                    decoded = true;
                    let frame = buf.split_to(p.len).freeze();
                    self.on_data_read(p.stream_id, frame.slice(p.payload_at..), p.len);
                    continue;
                }
                if self.unwanted(&p) {
                    decoded = true;
                    buf.advance(p.len);
                    continue;
                }
            }
            let before = buf.len();
            match StreamFrame::read(buf, &limits) {
                Ok(Some(mut frame)) => {
                    decoded = true;
                    if let Ok(f) = &mut frame {
                        if !f.payload.is_empty() {
                            let len = before - buf.len();
                            f.payload = self.kept(std::mem::take(&mut f.payload), len);
                        }
                    }
                    self.on_read(frame);
                }
                Ok(None) => break Ok(decoded),
                Err(e) => break Err(self.malformed(&e)),
            }
        };
        // The batch is over: streams whose first message did not come with their Header are
        // handed to the server now.
        self.dispatch_pending();
        outcome
    }

    /// A payload of a frame of `frame_len` bytes cut from the reader's buffer, as a server
    /// keeps it (see [`keep`]: small messages are copied out of the read chunk, so what they
    /// hold is what they are charged). A client keeps the slice.
    fn kept(&self, payload: Bytes, frame_len: usize) -> Bytes {
        match self.budget {
            Some(_) => keep(payload, frame_len),
            None => payload,
        }
    }

    /// A Data frame's payload cut from the reader's buffer (`frame_len` bytes on the wire),
    /// as [`Session::on_data`]. A server hands a message it would copy ([`copies`]) to a
    /// stream whose handler is about to be polled inline as a slice of the read chunk, and
    /// copies it ([`keep`]) only if it is still queued after that poll: a pingpong request
    /// is decoded straight out of the chunk.
    fn on_data_read(&self, stream_id: i32, payload: Bytes, frame_len: usize) {
        let Some(s) = self.stream(stream_id) else {
            return;
        };
        if self.budget.is_none() || !copies(payload.len(), frame_len) {
            s.on_data(payload);
        } else if !self.any_pending.load(Ordering::Acquire) {
            // No handler runs here now: kept at once.
            s.on_data(keep(payload, frame_len));
            return;
        } else {
            let at = (payload.as_ptr(), payload.len());
            s.on_data(payload);
            self.dispatch_pending();
            s.keep_queued(at, frame_len);
            return;
        }
        self.dispatch_pending();
    }

    /// Whether the session would ignore plain frame `p` once parsed: it is for a stream the
    /// session does not have and opens none (the client's CloseSend arriving after a unary
    /// reply ended the stream). Such a frame is dropped unparsed.
    fn unwanted(&self, p: &PlainFrame) -> bool {
        let opens = self.role == Role::Server && p.kind == FrameKind::Header;
        !opens && self.stream(p.stream_id).is_none()
    }

    fn on_read(self: &Arc<Self>, frame: Result<StreamFrame, BadFrame>) {
        match frame {
            Ok(frame) => self.on_frame(frame),
            Err(bad) => self.on_bad_frame(bad.stream_id, &bad.error),
        }
    }

    fn malformed(&self, e: &FrameError) -> Status {
        tracing::warn!(peer = ?self.peer, error = %e, "malformed ttstream frame; closing the connection");
        Status::internal(format!("malformed frame: {e}")).with_source(Error::Protocol {
            initiator: rpc_core::status::Initiator::Remote,
            reason: e.to_string(),
        })
    }

    /// Handles `frame`, exactly one whole frame (a transport that delivers frames delimited,
    /// such as shared memory). Payloads handed to streams are slices of `frame`: nothing is
    /// copied. An error means the frame cannot be delimited: the connection must end with it.
    /// Call [`Session::dispatch_pending`] when a batch of frames ends.
    pub fn on_whole_frame(self: &Arc<Self>, frame: Bytes) -> Result<(), Status> {
        self.whole_frame(frame, true).map(drop)
    }

    /// Handles `pack`: one or more whole frames back to back, delivered as one unit (a
    /// shared-memory descriptor carrying a stream's Header, message and half-close, or a
    /// server's Header, message and Trailer). Streams are handed to the server once the whole
    /// pack is in (a pingpong request's handler then finds its message and the half-close
    /// queued and completes inline) if the pack carried a message, as [`Session::on_data`]
    /// does; otherwise when the batch ends ([`Session::dispatch_pending`]). Payloads are
    /// slices of `pack`. An error means the pack cannot be delimited: the connection must end.
    pub fn on_frames(self: &Arc<Self>, mut pack: Bytes) -> Result<(), Status> {
        let mut data = false;
        while !pack.is_empty() {
            let total = pack
                .get(..4)
                .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
                .and_then(|n| n.checked_add(4));
            let end = total.filter(|end| *end <= pack.len()).ok_or_else(|| {
                self.malformed(&FrameError::LengthMismatch {
                    total: total.unwrap_or(usize::MAX),
                    len: pack.len(),
                })
            })?;
            data |= self.whole_frame(pack.split_to(end), false)?;
        }
        if data {
            self.dispatch_pending();
        }
        Ok(())
    }

    /// One whole frame; Data dispatches waiting streams if `dispatch`. Says whether it was a
    /// Data frame.
    fn whole_frame(self: &Arc<Self>, frame: Bytes, dispatch: bool) -> Result<bool, Status> {
        let limits = self.limits.proto();
        if let Some(p) = StreamFrame::peek_plain(&frame, &limits) {
            if p.len == frame.len() {
                if p.kind == FrameKind::Data {
                    let payload = frame.slice(p.payload_at..);
                    if dispatch {
                        self.on_data(p.stream_id, payload);
                    } else if let Some(s) = self.stream(p.stream_id) {
                        s.on_data(payload);
                    }
                    return Ok(true);
                }
                if self.unwanted(&p) {
                    return Ok(false);
                }
            }
        }
        match StreamFrame::read_whole(frame, &limits) {
            Ok(frame) => {
                let data = matches!(&frame, Ok(f) if f.kind == FrameKind::Data);
                self.on_read(frame);
                Ok(data)
            }
            Err(e) => Err(self.malformed(&e)),
        }
    }

    /// A Data frame's payload for `stream_id` (a reader's fast path: no frame allocated).
    pub fn on_data(&self, stream_id: i32, payload: Bytes) {
        if let Some(s) = self.stream(stream_id) {
            s.on_data(payload);
            // A stream waiting for its first message has it now: its handler can run to
            // completion right here (a unary reply without a task of its own).
            self.dispatch_pending();
        }
    }

    /// Hands every stream accepted and not yet dispatched to the server (a server's handler
    /// is first polled inline, by `Server::dispatch_route`: one whose request is already
    /// queued completes without a task of its own). A Header is held back until its stream's
    /// first message arrives or the reader's batch ends; a reader that feeds frames one at a
    /// time ([`Session::on_whole_frame`]) calls this when its batch ends, and
    /// [`Session::on_bytes`] does so itself.
    pub fn dispatch_pending(&self) {
        let Some(server) = &self.server else {
            return;
        };
        if !self.any_pending.load(Ordering::Acquire) {
            return;
        }
        loop {
            // One at a time, the lock released while the handler runs (it may open nothing
            // here, but it finishes streams, which takes the stream table).
            let next = {
                let mut pending = lock(&self.pending);
                if pending.is_empty() {
                    self.any_pending.store(false, Ordering::Release);
                    return;
                }
                pending.remove(0)
            };
            let Pending {
                stream,
                route,
                incoming,
            } = next;
            server.dispatch_route(route, incoming, stream);
        }
    }

    /// One decoded frame: routed to its stream, or (server, Header) a new stream, handed to
    /// the server with its first message or by [`Session::dispatch_pending`], which a reader
    /// feeding frames one at a time calls when its batch ends.
    pub fn on_frame(self: &Arc<Self>, frame: StreamFrame) {
        match self.stream(frame.stream_id) {
            Some(s) => s.on_frame(frame),
            // Any non-zero i32 opens a stream (spec §3): a Kitex client's process-wide counter
            // wraps past i32::MAX to negative ids. (Id 0 never reaches here: the frame decoder
            // refuses it for every frame type but Meta.)
            None if self.role == Role::Server && frame.kind == FrameKind::Header => {
                self.accept(frame)
            }
            // Frames for unknown or finished streams are ignored, as Kitex does (spec §3).
            None => {
                tracing::trace!(id = frame.stream_id, kind = ?frame.kind, "frame for unknown stream ignored")
            }
        }
    }

    /// A delimited frame for `stream_id` that is not a valid ttstream frame (module docs).
    pub fn on_bad_frame(&self, stream_id: i32, e: &FrameError) {
        if matches!(e, FrameError::UnknownFrameType { .. }) {
            tracing::debug!(stream_id, error = %e, "frame of an unknown type ignored");
            return;
        }
        match self.stream(stream_id) {
            Some(s) => s.illegal_frame(e.to_string()),
            None => {
                tracing::debug!(stream_id, error = %e, "invalid frame for no open stream ignored")
            }
        }
    }

    // -------------------------------------------------------------------------- backpressure

    /// Whether the reader must stop reading now (module docs). `unparsed` is what it holds
    /// received and not yet handed over.
    pub fn must_pause(&self, unparsed: usize) -> bool {
        if self.rx.over() {
            return true;
        }
        self.limits.writes_block_reading(
            self.sink.backlog(),
            self.budget.as_deref(),
            unparsed + self.held() + self.sink.held(),
        )
    }

    /// What the session holds apart from its reader's buffer and its sink: messages queued
    /// for handles and (server side) the state of its open streams.
    fn held(&self) -> usize {
        self.rx.held() + self.rx.state()
    }

    /// Server side: whether the connection may hold a read buffer of `reader` bytes with
    /// everything else it holds on its reserve ([`Limits::conn_reserve`]) while the budget is
    /// spent.
    pub fn within_reserve(&self, reader: usize) -> bool {
        reader + self.held() + self.sink.held() <= self.limits.conn_reserve
    }

    /// Notified (`notify_one`) when the reader should look again: a stream's queue fell back
    /// under its limit, the last stream closed (the idle clock starts), or the session was
    /// lost. With the sink's [`FrameSink::progress`] and the budget's release these are all
    /// the reasons [`Session::must_pause`] can turn false.
    pub fn reader_signal(&self) -> &Notify {
        self.life.reader()
    }

    /// Waits while [`Session::must_pause`] holds (and the session is not lost); returns
    /// whether it waited.
    pub async fn wait_readable(&self, unparsed: usize) -> bool {
        pause_while(
            self.budget.as_deref(),
            [self.life.reader(), self.sink.progress()],
            || self.must_pause(unparsed),
            || self.life.lost().is_some(),
        )
        .await
    }

    // ------------------------------------------------------------------------------- streams

    fn stream(&self, id: i32) -> Option<Arc<Stream<Session<S>>>> {
        lock(&self.streams).get(&id).and_then(Weak::upgrade)
    }

    /// Forgets stream `id` if the table still holds `stream` under it (see `Host::remove`).
    fn remove(&self, id: i32, stream: *const Stream<Session<S>>) {
        let mut streams = lock(&self.streams);
        let removed = match streams.get(&id) {
            Some(w) if std::ptr::eq(w.as_ptr(), stream) => streams.remove(&id).is_some(),
            _ => false,
        };
        if streams.is_empty() {
            let close = self.retire_drained(&streams);
            drop(streams);
            if close {
                // The server is shutting down (see `peer_draining`): nothing more goes here.
                self.on_lost(Status::unavailable("the server is shutting down"));
            }
            self.life.became_idle();
            // The reader starts the idle clock.
            if removed {
                self.life.reader().notify_one();
            }
        }
    }

    /// Server: a Header for a new stream id. The stream is routed and registered now and
    /// handed to the server with its first message (see [`Session::dispatch_pending`]).
    fn accept(self: &Arc<Self>, frame: StreamFrame) {
        let Some(server) = self.server.as_ref() else {
            return;
        };
        let id = frame.stream_id;
        let protocol = frame.protocol;
        let payload = match protocol {
            StreamProtocol::Thrift => PayloadKind::Thrift,
            StreamProtocol::Protobuf => PayloadKind::Protobuf,
        };
        let route = {
            let service = frame
                .headers
                .get_str(str_key::IDL_SERVICE_NAME)
                .unwrap_or_default();
            server.resolve_for(service, &frame.method, Some(payload))
        };
        let max = server.limits().max_concurrent_streams;
        let draining = self.life.is_draining();
        let refusal = if draining {
            Some((
                kitex_code::TRANSPORT_CLOSING,
                "server is shutting down".to_owned(),
            ))
        } else if self.rx.budget_spent()
            && !self.within_reserve(rpc_core::limits::STREAM_STATE_BYTES)
        {
            // The server's memory budget is spent and this connection holds more than its
            // reserve: a new stream would add state past the bound. Retryable, like a
            // refusal over the stream cap.
            Some((
                REFUSED_STREAM_CODE,
                "server memory budget spent; retry later".to_owned(),
            ))
        } else if self.stream_count() >= max {
            // Bounded like every write: the reader stops while the backlog is over its limit.
            Some((
                REFUSED_STREAM_CODE,
                format!("too many concurrent streams on this connection (limit {max})"),
            ))
        } else {
            route
                .as_ref()
                .err()
                .map(|e| (route_refusal(e), e.to_string()))
        };
        if let Some((kind, message)) = refusal {
            return self.refuse(id, frame.method, protocol, kind, message, draining);
        }
        let Ok(route) = route else { return };
        let metadata = metadata_of(&frame.headers);
        let deadline = deadline_of(&frame.headers);
        let mut sm = StreamState::new(Role::Server, id);
        if sm.recv(frame).is_err() {
            return;
        }
        // Routing matched the name exactly: the stream names its method with the IDL's
        // `&'static str` (no copy, and nothing of the read buffer kept alive).
        let stream = Stream::new(self, id, route.method().name, protocol, sm);
        lock(&self.streams).insert(id, Arc::downgrade(&stream));
        // Already routed: `dispatch_route` does not need the names again (no allocation).
        // Fields set in place: each builder call would move the whole struct.
        let mut incoming = IncomingStream::new(String::new(), String::new());
        incoming.rpc_system = "ttheader";
        incoming.metadata = metadata;
        incoming.deadline = deadline;
        incoming.peer = self.peer.clone();
        incoming.payload = Some(payload);
        let mut pending = lock(&self.pending);
        pending.push(Pending {
            stream,
            route,
            incoming,
        });
        self.any_pending.store(true, Ordering::Release);
    }

    /// Refuses a new stream: a Header, then a Trailer carrying the exception.
    fn refuse(
        &self,
        id: i32,
        method: MethodName,
        protocol: StreamProtocol,
        kind: i32,
        message: String,
        unprocessed: bool,
    ) {
        let exc = ApplicationException::new(kind, message);
        let mut header = StreamFrame::server_header(id, method.clone(), protocol, []);
        let mark = |h: &mut crate::proto::Headers| {
            if unprocessed {
                h.push_int(int_key::REFUSED_UNPROCESSED, Bytes::from_static(b"1"));
            }
        };
        mark(&mut header.headers);
        let _ = self.sink.append_frame(&header);
        if let Ok(mut t) = StreamFrame::trailer(id, method, protocol, [], None, Some(&exc)) {
            mark(&mut t.headers);
            let _ = self.sink.append_frame(&t);
        }
    }

    /// Client: opens a stream (writes its Header; never waits for the server).
    pub fn open(self: &Arc<Self>, ctx: &CallContext) -> Result<Arc<dyn ClientStreamRaw>, Status> {
        if let Some(s) = self.life.lost() {
            return Err(s.clone());
        }
        let method = ctx.method();
        let protocol = protocol_of(method.payload);
        let mut streams = lock(&self.streams);
        if self.retired.load(Ordering::Acquire) {
            return Err(Status::unavailable("connection closed as idle"));
        }
        let id = next_stream_id(&self.next_id, |id| streams.contains_key(&id));
        let mut sm = StreamState::new(Role::Client, id);
        sm.send(FrameKind::Header)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut header = StreamFrame::client_header(
            id,
            MethodName::from_static(method.name),
            protocol,
            method.service,
            [],
            ctx.timeout().map(timeout_ms),
        );
        extend_kvs(&mut header.headers.str_kvs, ctx.metadata());
        let stream = Stream::new(self, id, method.name, protocol, sm);
        let first = {
            streams.insert(id, Arc::downgrade(&stream));
            streams.len() == 1
        };
        drop(streams);
        if first {
            // The reader may sit in an idle read: its silence clock starts now.
            self.life.reader().notify_one();
        }
        if !method.mode.client_streams() && self.sink.batches_one_shot_requests() {
            // One message then the half-close: the Header waits for them (`Stream::send`).
            stream.cork(header);
            return Ok(stream);
        }
        match self.sink.append_frame(&header) {
            Ok(()) => Ok(stream),
            Err(e) => {
                // Its Header never went out: nothing is sent for it when it drops.
                stream.never_sent();
                self.remove(id, Arc::as_ptr(&stream));
                Err(self.sink_error(e))
            }
        }
    }

    fn sink_error(&self, e: SinkError) -> Status {
        match e {
            SinkError::Closed => self.life.lost_status(),
            SinkError::Frame(status) => status,
        }
    }
}

/// A stream accepted and not yet handed to the server.
struct Pending<S: FrameSink> {
    stream: Arc<Stream<Session<S>>>,
    route: Route,
    incoming: IncomingStream,
}

impl<S: FrameSink> Host for Session<S> {
    type Sink = S;

    fn role(&self) -> Role {
        self.role
    }

    fn sink(&self) -> &S {
        &self.sink
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn recv_bytes(&self) -> &RecvBytes {
        &self.rx
    }

    fn reader_signal(&self) -> &Notify {
        self.life.reader()
    }

    fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    fn sink_error(&self, e: SinkError) -> Status {
        Session::sink_error(self, e)
    }

    fn remove(&self, id: i32, stream: *const Stream<Self>) {
        Session::remove(self, id, stream);
    }

    fn peer_draining(&self) {
        Session::peer_draining(self);
    }
}

/// The next stream id of `counter` that is not `live`: any non-zero i32 (spec §3). Ids count up
/// from 1 and wrap past `i32::MAX` to `i32::MIN`, as a Kitex client's counter does; 0 (control
/// frames) and ids of streams still open on the connection are skipped (the caller holds the
/// stream table, which is bounded far below the 2^32 - 1 ids, so the loop ends).
pub(crate) fn next_stream_id(counter: &AtomicI32, live: impl Fn(i32) -> bool) -> i32 {
    loop {
        // `fetch_add` wraps on overflow: i32::MAX + 1 is i32::MIN.
        let id = counter.fetch_add(1, Ordering::Relaxed);
        if id != 0 && !live(id) {
            return id;
        }
    }
}

/// The ttstream protocol a payload kind travels as.
pub(crate) fn protocol_of(kind: PayloadKind) -> StreamProtocol {
    match kind {
        PayloadKind::Protobuf => StreamProtocol::Protobuf,
        _ => StreamProtocol::Thrift,
    }
}
