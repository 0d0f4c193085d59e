//! TTHeader Streaming connections: one reader task routes frames to streams, one writer task
//! sends what streams queue. Client and server share this code; the role decides who opens.
//!
//! # Memory bounds and the head-of-line trade-off
//!
//! ttstream has no flow control on the wire (Kitex peers have none to speak), so received data
//! is bounded the only way that never loses a message: when a stream holds more than
//! [`Limits::stream_recv_buffer`] unread bytes, or the connection more than
//! [`Limits::conn_recv_buffer`], the reader stops reading the socket until the handle reads.
//! TCP then pushes back on the sender. The cost is head-of-line blocking: other streams on that
//! connection wait too. Streams on other connections (the client pool keeps several) are not
//! affected, and memory never grows without bound.
//!
//! A server connection is bounded further by the core server's
//! [`ServerLimits`](rpc_core::limits::ServerLimits):
//! - its reader also stops while the connection's write queue, control frames included, is over
//!   [`Limits::write_buffer`] (a peer that never reads cannot make it queue replies or
//!   refusals without bound), and while the server-wide byte budget is used up and this
//!   connection holds more than [`Limits::conn_reserve`] (received-unread plus
//!   queued-unwritten bytes are charged to the budget);
//! - at most `max_concurrent_streams` streams are open at once: a Header beyond that is
//!   refused with a Header + Trailer carrying an exception of type [`REFUSED_STREAM_CODE`];
//! - a frame must complete within `frame_timeout` of its first bytes, and a connection with no
//!   open stream and no bytes for `idle_timeout` is closed.
//!
//! Forward compatibility with newer peers: a frame of an unknown type is ignored (as HTTP/2
//! ignores unknown frame types, RFC 9113 §4.1); any other frame that is well delimited but
//! not a valid ttstream frame (no frame type, a non-streaming protocol id or flags, a method
//! that is not UTF-8, stream id 0 or, for a new stream, a negative id) ends the stream it names
//! with 12004 (illegal frame) if that stream is open and is ignored otherwise. Only a byte
//! stream that cannot be delimited closes the connection.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpc_core::codec::Encodable;
use rpc_core::limits::ByteBudget;
use rpc_core::server::Route;
use rpc_core::transport::waker::{register, wake};
use rpc_core::transport::{ClientEvent, ClientStreamRaw, Finish, IncomingStream, ServerStreamRaw};
use rpc_core::{CallContext, Code, Error, Metadata, PayloadKind, Peer, Server, Status};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::{Counted, Limits, RxCharge, Stats};
use super::io::{Io, ReadHalf};
use super::mapping::{
    biz_of, exception_of, metadata_of, status_from_biz, status_from_exception, status_from_kitex,
    str_kvs, text_only, RPC_CODE_KEY,
};
use super::reader::{pause_while, read_some, Read, ReadClock};
use super::write::{append_packet, WriteQueue};
use crate::proto::keys::{int_key, kitex_code, str_key};
use crate::proto::{
    ApplicationException, BizStatus, FrameError, FrameKind, Packet, RecvEvent, Role, StreamFrame,
    StreamProtocol, StreamState,
};

/// The exception type a server refuses a stream with when the connection already has
/// `max_concurrent_streams` open. Kitex has no "refused stream" code; 12006 (transport
/// closing) is the one Kitex and our mapping both read as UNAVAILABLE — retry later or
/// elsewhere, as gRPC clients treat HTTP/2's REFUSED_STREAM. Graceful shutdown refuses with
/// the same code; the message tells the two apart.
pub const REFUSED_STREAM_CODE: i32 = kitex_code::TRANSPORT_CLOSING;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn protocol_of(kind: PayloadKind) -> StreamProtocol {
    match kind {
        PayloadKind::Protobuf => StreamProtocol::Protobuf,
        _ => StreamProtocol::Thrift,
    }
}

/// One ttstream connection.
pub(crate) struct Conn {
    role: Role,
    limits: Limits,
    pub(crate) write: WriteQueue,
    streams: Mutex<HashMap<i32, Arc<Stream>>>,
    /// Bytes queued in all streams of this connection.
    buffered: AtomicUsize,
    /// Streams holding more than their receive limit.
    over_limit: AtomicUsize,
    reader_resume: Notify,
    lost: OnceLock<Status>,
    next_id: AtomicI32,
    peer: Option<Peer>,
    stats: Arc<Stats>,
    server: Option<Server>,
    /// Server side: the server-wide budget received and queued bytes are charged to.
    budget: Option<Arc<ByteBudget>>,
    draining: AtomicBool,
    idle: Notify,
    _counted: Counted,
}

impl Conn {
    fn new(
        role: Role,
        limits: Limits,
        peer: Option<Peer>,
        stats: &Arc<Stats>,
        server: Option<Server>,
    ) -> Arc<Conn> {
        let budget = server.as_ref().map(|s| s.byte_budget().clone());
        let write = match &budget {
            Some(b) => WriteQueue::with_budget(limits.write_buffer, b.clone(), limits.conn_reserve),
            None => WriteQueue::new(limits.write_buffer),
        };
        Arc::new(Conn {
            role,
            write,
            limits,
            streams: Mutex::new(HashMap::new()),
            buffered: AtomicUsize::new(0),
            over_limit: AtomicUsize::new(0),
            reader_resume: Notify::new(),
            lost: OnceLock::new(),
            next_id: AtomicI32::new(1),
            peer,
            stats: stats.clone(),
            server,
            budget,
            draining: AtomicBool::new(false),
            idle: Notify::new(),
            _counted: Counted::new(stats, |s| &s.connections),
        })
    }

    /// Starts the reader and writer tasks of a connection.
    pub(crate) fn start(
        role: Role,
        io: Io,
        prefix: BytesMut,
        limits: Limits,
        peer: Option<Peer>,
        stats: &Arc<Stats>,
        server: Option<Server>,
    ) -> Arc<Conn> {
        let conn = Conn::new(role, limits, peer, stats, server);
        let (rd, wr) = io.into_split();
        let writer = conn.clone();
        tokio::spawn(async move {
            if let Err(e) = writer.write.run_writer(wr).await {
                writer.fail(Status::unavailable(format!("write failed: {e}")));
            }
        });
        let reader = conn.clone();
        tokio::spawn(async move {
            let status = reader.run_reader(rd, prefix).await;
            reader.fail(status);
        });
        conn
    }

    /// Whether the connection can carry new streams.
    pub(crate) fn is_usable(&self) -> bool {
        self.lost.get().is_none()
            && !self.write.is_closed()
            && !self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn stream_count(&self) -> usize {
        lock(&self.streams).len()
    }

    /// Server shutdown begins: new streams are refused from now on.
    pub(crate) fn start_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Server shutdown: refuse new streams; resolves once the open ones ended.
    pub(crate) async fn drain(&self) {
        self.start_drain();
        loop {
            let idle = self.idle.notified();
            if self.stream_count() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Closes the connection: every stream on it ends with `status`.
    pub(crate) fn fail(&self, status: Status) {
        if self.lost.set(status.clone()).is_err() {
            return;
        }
        if status.code() != Code::Ok {
            tracing::debug!(role = ?self.role, peer = ?self.peer, %status, "ttstream connection closed");
        }
        self.write.close();
        let streams: Vec<_> = lock(&self.streams).drain().map(|(_, s)| s).collect();
        let code = match self.role {
            Role::Client => kitex_code::TRANSPORT_CLOSING,
            Role::Server => kitex_code::CONNECTION_CLOSED,
        };
        for s in streams {
            let stream_status =
                Status::unavailable(format!("connection lost: {}", status.message()))
                    .with_transport_code(code);
            let mut st = s.lock();
            st.sm.on_connection_lost();
            st.end.get_or_insert(Err(stream_status.clone()));
            st.cancelled.get_or_insert(stream_status);
            s.clear_queue(&mut st);
            st.wake_all();
        }
        self.reader_resume.notify_one();
        self.idle.notify_waiters();
    }

    fn lost_status(&self) -> Status {
        self.lost
            .get()
            .cloned()
            .unwrap_or_else(|| Status::unavailable("connection closed"))
    }

    fn remove(&self, id: i32) {
        let mut streams = lock(&self.streams);
        let removed = streams.remove(&id).is_some();
        // Only `drain` waits for idleness, and it sets `draining` before it checks the count.
        if streams.is_empty() {
            drop(streams);
            if self.draining.load(Ordering::Acquire) {
                self.idle.notify_waiters();
            }
            // The reader starts the idle clock (server side).
            if removed && self.server.is_some() {
                self.reader_resume.notify_one();
            }
        }
    }

    fn is_over_limit(&self) -> bool {
        self.over_limit.load(Ordering::Acquire) > 0
            || self.buffered.load(Ordering::Acquire) > self.limits.conn_recv_buffer
    }

    /// Server side: whether the reader must stop reading (module docs). `rx` is what the
    /// reader holds unparsed.
    fn must_pause(&self, rx: usize) -> bool {
        if self.is_over_limit() {
            return true;
        }
        let Some(budget) = &self.budget else {
            return false;
        };
        let backlog = self.write.backlog();
        backlog >= self.limits.write_buffer
            || (budget.is_exhausted()
                && rx + self.buffered.load(Ordering::Acquire) + backlog > self.limits.conn_reserve)
    }

    async fn run_reader(self: &Arc<Self>, mut rd: ReadHalf, mut buf: BytesMut) -> Status {
        let limits = self.limits.proto();
        let mut clock = ReadClock::new(self.server.as_ref().map(Server::limits));
        let mut rx = RxCharge::new(self.budget.clone());
        loop {
            let mut decoded = false;
            loop {
                // Most frames are plain Data frames: take them without allocating.
                if let Some(d) = StreamFrame::decode_data(&mut buf, &limits) {
                    decoded = true;
                    let stream = lock(&self.streams).get(&d.stream_id).cloned();
                    if let Some(s) = stream {
                        s.on_data(d.payload);
                    }
                    continue;
                }
                match Packet::decode(&mut buf, &limits) {
                    Ok(Some(packet)) => {
                        decoded = true;
                        let id = packet.seq_id;
                        match StreamFrame::try_from(packet) {
                            Ok(frame) => self.on_frame(frame),
                            Err(e) => self.on_bad_frame(id, &e),
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(peer = ?self.peer, error = %e, "malformed ttstream frame; closing the connection");
                        return Status::internal(format!("malformed frame: {e}")).with_source(
                            Error::Protocol {
                                initiator: rpc_core::status::Initiator::Remote,
                                reason: e.to_string(),
                            },
                        );
                    }
                }
            }
            rx.set(buf.len());
            clock.after_decode(buf.len(), decoded);
            // Backpressure: stop reading while a handle has too much unread, the write queue
            // is over its limit, or the server-wide budget is used up (module docs).
            let paused = pause_while(
                self.budget.as_deref(),
                [&self.reader_resume, &self.write.progress],
                || self.must_pause(rx.get()),
                || self.lost.get().is_some(),
            )
            .await;
            if paused {
                clock.after_pause(buf.len());
            }
            if let Some(s) = self.lost.get() {
                return s.clone();
            }
            let idle = self.server.is_some() && self.stream_count() == 0;
            match read_some(&mut rd, &mut buf, &mut clock, idle, &self.reader_resume).await {
                Read::Bytes => rx.set(buf.len()),
                Read::Woken => {}
                Read::End(status) => return status,
            }
        }
    }

    /// A delimited frame that is not a valid ttstream frame (module docs).
    fn on_bad_frame(&self, id: i32, e: &FrameError) {
        if matches!(e, FrameError::UnknownFrameType { .. }) {
            tracing::debug!(id, error = %e, "frame of an unknown type ignored");
            return;
        }
        let stream = lock(&self.streams).get(&id).cloned();
        match stream {
            Some(s) => s.illegal_frame(e.to_string()),
            None => tracing::debug!(id, error = %e, "invalid frame for no open stream ignored"),
        }
    }

    fn on_frame(self: &Arc<Self>, frame: StreamFrame) {
        let stream = lock(&self.streams).get(&frame.stream_id).cloned();
        match stream {
            Some(s) => s.on_frame(frame),
            None if self.role == Role::Server
                && frame.kind == FrameKind::Header
                && frame.stream_id > 0 =>
            {
                self.accept(frame)
            }
            // Frames for unknown or finished streams are ignored, as Kitex does (spec §3).
            None => {
                tracing::trace!(id = frame.stream_id, kind = ?frame.kind, "frame for unknown stream ignored")
            }
        }
    }

    /// Server: a Header for a new stream id.
    fn accept(self: &Arc<Self>, frame: StreamFrame) {
        let Some(server) = self.server.clone() else {
            return;
        };
        let id = frame.stream_id;
        let method = frame.method.clone();
        let protocol = frame.protocol;
        let service = frame
            .headers
            .get_str(str_key::IDL_SERVICE_NAME)
            .unwrap_or_default()
            .to_owned();
        let metadata = metadata_of(&frame.headers);
        let deadline = frame
            .headers
            .get_int_decimal(int_key::RPC_TIMEOUT)
            .filter(|ms| *ms > 0)
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let mut sm = StreamState::new(Role::Server, id);
        if sm.recv(frame).is_err() {
            return;
        }
        let refuse = |kind: i32, message: String| {
            let exc = ApplicationException::new(kind, message);
            let _ = self.write.append(|buf| {
                let _ = StreamFrame::server_header(id, method.as_str(), protocol, []).encode(buf);
                if let Ok(t) =
                    StreamFrame::trailer(id, method.as_str(), protocol, [], None, Some(&exc))
                {
                    let _ = t.encode(buf);
                }
            });
        };
        if self.draining.load(Ordering::Acquire) {
            return refuse(
                kitex_code::TRANSPORT_CLOSING,
                "server is shutting down".into(),
            );
        }
        let max = server.limits().max_concurrent_streams;
        if self.stream_count() >= max {
            // Bounded like every write: the reader stops while the queue is over its limit.
            return refuse(
                REFUSED_STREAM_CODE,
                format!("too many concurrent streams on this connection (limit {max})"),
            );
        }
        let payload = match protocol {
            StreamProtocol::Thrift => PayloadKind::Thrift,
            StreamProtocol::Protobuf => PayloadKind::Protobuf,
        };
        let route = match server.resolve_for(&service, &method, Some(payload)) {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_unknown_service() {
                    ApplicationException::UNKNOWN_SERVICE
                } else {
                    ApplicationException::UNKNOWN_METHOD
                };
                return refuse(kind, e.to_string());
            }
        };
        let stream = Stream::new(self, id, method, protocol, sm);
        lock(&self.streams).insert(id, stream.clone());
        // Already routed: `dispatch_route` does not need the names again (no allocation).
        drop(service);
        let incoming = IncomingStream::new(String::new(), String::new())
            .with_metadata(metadata)
            .with_deadline(deadline)
            .with_peer(self.peer.clone())
            .with_payload(Some(payload));
        dispatch(&server, route, incoming, stream);
    }

    /// Client: opens a stream (writes its Header; never waits for the server).
    pub(crate) fn open(
        self: &Arc<Self>,
        ctx: &CallContext,
    ) -> Result<Arc<dyn ClientStreamRaw>, Status> {
        if let Some(s) = self.lost.get() {
            return Err(s.clone());
        }
        let method = ctx.method();
        let protocol = protocol_of(method.payload);
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id > 0 {
                break id;
            }
            // Wrapped around i32::MAX: ids restart at 1 (0 is reserved).
            let _ = self.next_id.compare_exchange(
                id.wrapping_add(1),
                1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        };
        let mut sm = StreamState::new(Role::Client, id);
        sm.send(FrameKind::Header)
            .map_err(|e| Status::internal(e.to_string()))?;
        let timeout_ms = ctx
            .timeout()
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        let header = StreamFrame::client_header(
            id,
            method.name,
            protocol,
            method.service,
            str_kvs(ctx.metadata()),
            timeout_ms,
        );
        let stream = Stream::new(self, id, method.name.to_owned(), protocol, sm);
        lock(&self.streams).insert(id, stream.clone());
        let written = self.write.append(|buf| header.encode(buf));
        match written {
            Ok(Ok(())) => Ok(Arc::new(ClientHandle(stream))),
            Ok(Err(e)) => {
                self.remove(id);
                Err(Status::internal(format!("encode header: {e}")))
            }
            Err(_) => {
                self.remove(id);
                Err(self.lost_status())
            }
        }
    }
}

fn dispatch(server: &Server, route: Route, incoming: IncomingStream, stream: Arc<Stream>) {
    server.dispatch_route(route, incoming, Arc::new(ServerHandle(stream)));
}

/// One stream of a connection.
pub(crate) struct Stream {
    id: i32,
    method: String,
    protocol: StreamProtocol,
    /// The encoded head of this stream's Data frames (LENGTH patched per message).
    data_head: Bytes,
    conn: Arc<Conn>,
    st: Mutex<Inner>,
    _counted: Counted,
}

struct Inner {
    sm: StreamState,
    queue: VecDeque<Bytes>,
    queued: usize,
    over: bool,
    recv_waker: Option<Waker>,
    /// Client: the response header, until the core takes it (then `header_taken`).
    header: Option<Metadata>,
    header_taken: bool,
    trailer: Option<Metadata>,
    /// Client: how the receive side ends once the queue is drained. Server: `Ok` once the
    /// client half-closed.
    end: Option<Result<(), Status>>,
    /// Server: why the stream was cancelled (Rst, connection loss, stream error).
    cancelled: Option<Status>,
    cancel_waker: Option<Waker>,
    /// Server: `finish` ran. Client: `cancel` ran.
    done_locally: bool,
    /// Server: the peer broke the stream's rules; unlike a Rst, it still gets a Trailer.
    stream_error: bool,
}

impl Inner {
    fn wake_all(&mut self) {
        wake(&mut self.recv_waker);
        wake(&mut self.cancel_waker);
    }
}

impl Stream {
    fn new(
        conn: &Arc<Conn>,
        id: i32,
        method: String,
        protocol: StreamProtocol,
        sm: StreamState,
    ) -> Arc<Stream> {
        let mut head = BytesMut::new();
        // Encoding a head with no headers cannot fail (the method name is bounded by the IDL).
        let _ = StreamFrame::new(FrameKind::Data, id, method.as_str(), protocol)
            .encode_head(0, &mut head);
        Arc::new(Stream {
            id,
            method,
            protocol,
            data_head: head.freeze(),
            conn: conn.clone(),
            st: Mutex::new(Inner {
                sm,
                queue: VecDeque::new(),
                queued: 0,
                over: false,
                recv_waker: None,
                header: None,
                header_taken: false,
                trailer: None,
                end: None,
                cancelled: None,
                cancel_waker: None,
                done_locally: false,
                stream_error: false,
            }),
            _counted: Counted::new(&conn.stats, |s| &s.streams),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.st)
    }

    fn push(&self, st: &mut Inner, msg: Bytes) {
        let n = msg.len();
        st.queued += n;
        st.queue.push_back(msg);
        self.conn.buffered.fetch_add(n, Ordering::AcqRel);
        self.conn.stats.add_buffered(n);
        if let Some(b) = &self.conn.budget {
            b.charge(n);
        }
        if !st.over && st.queued > self.conn.limits.stream_recv_buffer {
            st.over = true;
            self.conn.over_limit.fetch_add(1, Ordering::AcqRel);
        }
        wake(&mut st.recv_waker);
    }

    fn pop(&self, st: &mut Inner) -> Option<Bytes> {
        let msg = st.queue.pop_front()?;
        self.release(st, msg.len());
        Some(msg)
    }

    fn release(&self, st: &mut Inner, n: usize) {
        st.queued -= n;
        let before = self.conn.buffered.fetch_sub(n, Ordering::AcqRel);
        self.conn.stats.sub_buffered(n);
        if let (Some(b), true) = (&self.conn.budget, n > 0) {
            b.release(n);
        }
        let mut resume = before > self.conn.limits.conn_recv_buffer
            && before - n <= self.conn.limits.conn_recv_buffer;
        if st.over && st.queued <= self.conn.limits.stream_recv_buffer {
            st.over = false;
            self.conn.over_limit.fetch_sub(1, Ordering::AcqRel);
            resume = true;
        }
        if resume {
            self.conn.reader_resume.notify_one();
        }
    }

    fn clear_queue(&self, st: &mut Inner) {
        let n = st.queued;
        st.queue.clear();
        if n > 0 || st.over {
            self.release(st, n);
        }
    }

    fn on_frame(&self, frame: StreamFrame) {
        let exact_code = frame.headers.get_str(RPC_CODE_KEY).map(str::to_owned);
        let mut st = self.lock();
        let event = st.sm.recv(frame);
        self.apply(st, event, exact_code);
    }

    /// A Data frame from the reader's fast path.
    fn on_data(&self, payload: Bytes) {
        let mut st = self.lock();
        let event = st.sm.recv_data(payload);
        self.apply(st, event, None);
    }

    fn apply(
        &self,
        mut st: MutexGuard<'_, Inner>,
        event: Result<RecvEvent, crate::proto::StreamError>,
        exact_code: Option<String>,
    ) {
        match event {
            Ok(RecvEvent::Headers(h)) => {
                st.header = Some(metadata_of(&h));
                wake(&mut st.recv_waker);
            }
            Ok(RecvEvent::Data(b)) => self.push(&mut st, b),
            Ok(RecvEvent::RemoteClosed) => {
                st.end.get_or_insert(Ok(()));
                wake(&mut st.recv_waker);
            }
            Ok(RecvEvent::Finished { trailers, error }) => {
                let md = metadata_of(&trailers);
                let outcome = match (error, BizStatus::from_headers(&trailers)) {
                    (Some(exc), _) => Err(status_from_exception(&exc, exact_code.as_deref())
                        .with_metadata(md.clone())),
                    (None, Ok(Some(biz))) => Err(status_from_biz(&biz, md.clone())),
                    (None, Err(e)) => Err(Status::internal(e.to_string())
                        .with_transport_code(kitex_code::ILLEGAL_BIZ_ERROR)),
                    (None, Ok(None)) => Ok(()),
                };
                st.trailer = Some(md);
                st.end.get_or_insert(outcome);
                st.wake_all();
                drop(st);
                self.conn.remove(self.id);
            }
            Ok(RecvEvent::Reset { code, message, .. }) => {
                let status = status_from_kitex(code, message);
                st.cancelled.get_or_insert(status.clone());
                st.end = match st.end.take() {
                    Some(Ok(())) if self.conn.role == Role::Server => Some(Ok(())),
                    _ => Some(Err(status)),
                };
                self.clear_queue(&mut st);
                st.wake_all();
                drop(st);
                self.conn.remove(self.id);
            }
            Ok(_) => {}
            Err(e) => {
                let status = Status::internal(e.to_string()).with_transport_code(e.kitex_code());
                self.stream_error(st, status, e.kitex_code());
            }
        }
    }

    /// A stream error ends this stream only; the connection keeps serving others.
    fn stream_error(&self, mut st: MutexGuard<'_, Inner>, status: Status, code: i32) {
        tracing::debug!(id = self.id, %status, "ttstream stream error");
        match self.conn.role {
            Role::Server => {
                st.cancelled.get_or_insert(status);
                st.stream_error = true;
                st.wake_all();
            }
            Role::Client => {
                drop(st);
                self.reset(&status, code);
            }
        }
    }

    /// A frame naming this stream was delimited but is not a valid ttstream frame.
    fn illegal_frame(&self, reason: String) {
        let st = self.lock();
        if st.end.is_some() || st.done_locally {
            return;
        }
        let status = Status::internal(format!("illegal frame: {reason}"))
            .with_transport_code(kitex_code::ILLEGAL_FRAME);
        self.stream_error(st, status, kitex_code::ILLEGAL_FRAME);
    }

    /// Appends one frame under the stream lock so the wire order is the state machine's order.
    fn write_frame(&self, frame: &StreamFrame) -> Result<(), Status> {
        match self.conn.write.append(|buf| frame.encode(buf)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Status::internal(format!("encode frame: {e}"))),
            Err(_) => Err(self.conn.lost_status()),
        }
    }

    fn write_data(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let max = self.conn.limits.max_frame_size;
        let appended = self.conn.write.append(|buf| {
            append_packet(buf, max, |buf| {
                buf.extend_from_slice(&self.data_head);
                msg.encode(buf)
            })
            .map(drop)
        });
        match appended {
            Ok(r) => r,
            Err(_) => Err(self.conn.lost_status()),
        }
    }

    fn poll_write_ready(&self, cx: &Context<'_>) -> Poll<Result<(), Status>> {
        self.conn
            .write
            .poll_ready(cx)
            .map_err(|_| self.conn.lost_status())
    }

    /// Client cancel: Rst (and the empty Trailer Kitex sends after it), then the stream is over.
    fn reset(&self, status: &Status, code: i32) {
        let mut st = self.lock();
        if st.end.is_some() || st.done_locally {
            return;
        }
        st.done_locally = true;
        let exc = ApplicationException::new(code, status.message());
        if st.sm.send(FrameKind::Rst).is_ok() {
            if let Ok(rst) =
                StreamFrame::rst(self.id, self.method.as_str(), self.protocol, None, &exc)
            {
                let _ = self.write_frame(&rst);
            }
            if !st.sm.is_local_closed() && st.sm.send(FrameKind::Trailer).is_ok() {
                let _ = self.write_frame(&StreamFrame::close_send(
                    self.id,
                    self.method.as_str(),
                    self.protocol,
                ));
            }
        }
        st.end = Some(Err(status.clone()));
        self.clear_queue(&mut st);
        st.wake_all();
        drop(st);
        self.conn.remove(self.id);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Whatever is still queued leaves the connection's and the server's counts with it.
        let st = self.st.get_mut().unwrap_or_else(|e| e.into_inner());
        if st.queued > 0 || st.over {
            let mut st = lock(&self.st);
            self.clear_queue(&mut st);
        }
    }
}

/// The client's raw stream.
struct ClientHandle(Arc<Stream>);

impl ClientStreamRaw for ClientHandle {
    fn poll_send_ready(&self, cx: &mut Context<'_>, _len: usize) -> Poll<Result<(), Status>> {
        {
            let st = self.0.lock();
            match &st.end {
                Some(Err(e)) => return Poll::Ready(Err(e.clone())),
                Some(Ok(())) => return Poll::Ready(Err(Error::StreamFinished.into())),
                None => {}
            }
        }
        self.0.poll_write_ready(cx)
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let mut st = self.0.lock();
        if let Some(Err(e)) = &st.end {
            return Err(e.clone());
        }
        if st.sm.send(FrameKind::Data).is_err() {
            return Err(Error::StreamFinished.into());
        }
        self.0.write_data(msg)
    }

    fn close_send(&self) -> Result<(), Status> {
        let mut st = self.0.lock();
        if st.sm.is_local_closed() || st.end.is_some() {
            return Ok(());
        }
        if st.sm.send(FrameKind::Trailer).is_ok() {
            let s = &self.0;
            s.write_frame(&StreamFrame::close_send(
                s.id,
                s.method.as_str(),
                s.protocol,
            ))?;
        }
        Ok(())
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<ClientEvent> {
        let mut st = self.0.lock();
        if !st.header_taken {
            if let Some(h) = st.header.take() {
                st.header_taken = true;
                return Poll::Ready(ClientEvent::Header(h));
            }
        }
        if let Some(m) = self.0.pop(&mut st) {
            return Poll::Ready(ClientEvent::Message(m));
        }
        match &st.end {
            Some(end) => {
                let status = match end {
                    Ok(()) => Status::ok(),
                    Err(e) => e.clone(),
                };
                let trailer = st.trailer.take().unwrap_or_default();
                Poll::Ready(ClientEvent::End(status, trailer))
            }
            None => {
                register(&mut st.recv_waker, cx);
                Poll::Pending
            }
        }
    }

    fn reset(&self, status: &Status) {
        let code = if status.code() == Code::DeadlineExceeded {
            kitex_code::STREAM_TIMEOUT
        } else {
            kitex_code::USER_CANCEL
        };
        self.0.reset(status, code);
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        let ended = self.0.lock().end.is_some();
        if !ended {
            // The core resets or sees the end before it drops the stream; this covers raw use.
            self.reset(&Status::cancelled("the client dropped the stream"));
        }
        self.0.conn.remove(self.0.id);
    }
}

/// The server's raw stream.
struct ServerHandle(Arc<Stream>);

impl ServerHandle {
    fn check(&self, st: &Inner) -> Result<(), Status> {
        if let Some(c) = &st.cancelled {
            return Err(c.clone());
        }
        if st.done_locally {
            return Err(Error::StreamFinished.into());
        }
        Ok(())
    }

    fn send_header_locked(&self, st: &mut Inner, header: &Metadata) -> Result<(), Status> {
        st.sm
            .send(FrameKind::Header)
            .map_err(|_| Status::from(Error::HeaderAlreadySent))?;
        let s = &self.0;
        s.write_frame(&StreamFrame::server_header(
            s.id,
            s.method.as_str(),
            s.protocol,
            str_kvs(header),
        ))
    }
}

impl ServerStreamRaw for ServerHandle {
    fn poll_send_ready(&self, cx: &mut Context<'_>, _len: usize) -> Poll<Result<(), Status>> {
        self.check(&self.0.lock())?;
        self.0.poll_write_ready(cx)
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let mut st = self.0.lock();
        self.check(&st)?;
        if !st.sm.header_sent() {
            self.send_header_locked(&mut st, &Metadata::new())?;
        }
        st.sm
            .send(FrameKind::Data)
            .map_err(|_| Status::from(Error::StreamFinished))?;
        self.0.write_data(msg)
    }

    fn send_header(&self, header: Metadata) -> Result<(), Status> {
        text_only(&header)?;
        let mut st = self.0.lock();
        self.check(&st)?;
        self.send_header_locked(&mut st, &header)
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        let mut st = self.0.lock();
        if let Some(c) = &st.cancelled {
            return Poll::Ready(Err(c.clone()));
        }
        if let Some(m) = self.0.pop(&mut st) {
            return Poll::Ready(Ok(Some(m)));
        }
        if let Some(end) = &st.end {
            return Poll::Ready(end.clone().map(|()| None));
        }
        if st.done_locally {
            return Poll::Ready(Err(Error::StreamFinished.into()));
        }
        register(&mut st.recv_waker, cx);
        Poll::Pending
    }

    fn finish(&self, finish: Finish<'_>) {
        let Finish {
            header,
            message,
            mut status,
            trailer,
            ..
        } = finish;
        // Binary metadata cannot travel: the stream fails with that error instead.
        let (header, trailer) = match header
            .as_ref()
            .map_or(Ok(()), text_only)
            .and_then(|()| text_only(&trailer))
        {
            Ok(()) => (header, trailer),
            Err(e) => {
                status = e;
                (header.map(|_| Metadata::new()), Metadata::new())
            }
        };
        let s = &self.0;
        let mut st = s.lock();
        if st.done_locally {
            return;
        }
        st.done_locally = true;
        if st.cancelled.is_none() || st.stream_error {
            // spec §3.5: the Header goes first even when the handler failed before any data
            // (Kitex issue #1887).
            if !st.sm.header_sent() {
                let _ = self.send_header_locked(&mut st, &header.unwrap_or_default());
            }
            if let Some(msg) = message {
                let sent = match st.sm.send(FrameKind::Data) {
                    Ok(_) => s.write_data(msg),
                    Err(_) => Err(Error::StreamFinished.into()),
                };
                if let Err(e) = sent {
                    status = e;
                }
            }
            let mut trailers: Vec<(String, String)> = str_kvs(&trailer).collect();
            let (biz, exc) = if status.is_ok() {
                (None, None)
            } else if let Some(biz) = biz_of(&status) {
                (Some(biz), None)
            } else {
                trailers.extend(str_kvs(status.metadata()));
                trailers.push((RPC_CODE_KEY.to_owned(), status.code().as_i32().to_string()));
                (None, Some(exception_of(&status)))
            };
            if st.sm.send(FrameKind::Trailer).is_ok() {
                match StreamFrame::trailer(
                    s.id,
                    s.method.as_str(),
                    s.protocol,
                    trailers,
                    biz.as_ref(),
                    exc.as_ref(),
                ) {
                    Ok(f) => {
                        let _ = s.write_frame(&f);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not encode the trailer"),
                }
            }
        }
        s.clear_queue(&mut st);
        st.wake_all();
        drop(st);
        s.conn.remove(s.id);
    }

    fn poll_reset(&self, cx: &mut Context<'_>) -> Poll<Status> {
        let mut st = self.0.lock();
        if let Some(c) = &st.cancelled {
            return Poll::Ready(c.clone());
        }
        register(&mut st.cancel_waker, cx);
        Poll::Pending
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        // The core always finishes first; this covers raw use without the core.
        self.finish(Finish {
            header: None,
            message: None,
            status: Status::internal("the server dropped the stream"),
            trailer: Metadata::new(),
        });
    }
}
