//! One stream of a session: the protocol state machine ([`StreamState`]) and the receive queue
//! (what arrived and the core has not taken yet). Nothing else: the core keeps the call's
//! state (header sent, half-closed, ended and how, cancelled, deadline) and calls these
//! primitives in the order the raw-stream contract promises, so a stream never remembers an
//! outcome to repeat it and never guards against a call after its end. What the state machine
//! refuses (a frame after the stream finished) is not sent.
//!
//! A [`Stream`] is itself the core's raw stream (`ClientStreamRaw` on a client session,
//! `ServerStreamRaw` on a server one): one allocation per stream; the session's table holds it
//! weakly. It knows its connection
//! only through [`Host`], so this module depends on the session's lower modules (limits,
//! sink) and never on the session itself.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use rpc_core::codec::Encodable;
use rpc_core::transport::waker::{register, wake};
use rpc_core::transport::{ClientEvent, ClientStreamRaw, Finish, ServerStreamRaw};
use rpc_core::{CancelKind, Cancellation, Code, Error, Metadata, Status};
use tokio::sync::Notify;

use super::limits::{held_for, keep, Counted, Limits, RecvBytes, Stats};
use super::sink::{FrameSink, SinkError};
use crate::common::lock;
use crate::mapping::{
    biz_of, exception_of, extend_kvs, metadata_of, status_from_biz, status_from_exception,
    status_from_kitex, RPC_CODE_KEY,
};
use crate::proto::keys::{int_key, kitex_code};
use crate::proto::{
    ApplicationException, BizStatus, FrameKind, MethodName, RecvEvent, Role, StreamError,
    StreamFrame, StreamProtocol, StreamState,
};

/// What a stream needs of the connection it belongs to (the session implements it).
pub(crate) trait Host: Send + Sync + 'static {
    /// Where frames go.
    type Sink: FrameSink;
    /// Client or server.
    fn role(&self) -> Role;
    /// The connection's sink.
    fn sink(&self) -> &Self::Sink;
    /// The connection's limits.
    fn limits(&self) -> &Limits;
    /// The connection's received-bytes accounting.
    fn recv_bytes(&self) -> &RecvBytes;
    /// Notified when the connection's reader should look again (a queue fell under its limit).
    fn reader_signal(&self) -> &Notify;
    /// The counts streams are counted in.
    fn stats(&self) -> &Arc<Stats>;
    /// The status a sink error means for a stream (the connection's loss reason when closed).
    fn sink_error(&self, e: SinkError) -> Status;
    /// The stream `id` ended: forget it (frames for it are ignored from now on). `stream` is
    /// the one that ended: a stream that already left the table (reset by the peer) may end
    /// after the peer opened a new stream with the same id, and that one stays.
    fn remove(&self, id: i32, stream: *const Stream<Self>)
    where
        Self: Sized;
    /// Client: the server refused a stream because it is shutting down.
    fn peer_draining(&self) {}
}

/// The source of the status a client stream ends with when the server refused it before any
/// handler saw it, because it is shutting down (the Header and Trailer carry
/// `int_key::REFUSED_UNPROCESSED`): the call may be opened again on another connection. A
/// status's source never crosses the wire, so only this transport sets it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefusedUnprocessed;

impl std::fmt::Display for RefusedUnprocessed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server refused the stream unprocessed")
    }
}

impl std::error::Error for RefusedUnprocessed {}

/// Whether `status` ended a stream the server refused unprocessed ([`RefusedUnprocessed`]).
pub(crate) fn refused_unprocessed(status: &Status) -> bool {
    status
        .source_error()
        .is_some_and(|e| e.downcast_ref::<RefusedUnprocessed>().is_some())
}

/// One stream of a session.
pub(crate) struct Stream<H: Host> {
    id: i32,
    /// The IDL's name (the route's on a server, the call's on a client): no copy per stream.
    method: &'static str,
    protocol: StreamProtocol,
    /// The encoded head of this stream's Data frames (LENGTH set by the sink per message),
    /// made on the first `send` (a one-shot reply encodes its head in place instead).
    data_head: OnceLock<Bytes>,
    host: Arc<H>,
    st: Mutex<State>,
    _counted: Counted,
}

/// The state a stream keeps: the protocol's, and what arrived that the core has not taken.
struct State {
    sm: StreamState,
    rx: RecvQueue,
    /// Client, one-shot request over a sink that batches it
    /// ([`FrameSink::batches_one_shot_requests`]): the Header not written yet; it goes out
    /// with the message and the half-close.
    corked: Option<Box<StreamFrame>>,
}

/// What arrived on a stream and the core has not taken yet, in delivery order: the peer's
/// header (client), messages, then how the receive side ended.
struct RecvQueue {
    /// Client: the server's Header.
    header: Option<Metadata>,
    /// Client: the server's Header said the stream was refused unprocessed (the header is
    /// not delivered; the Trailer ends the stream with [`RefusedUnprocessed`]).
    refused: bool,
    /// The first queued message, kept inline (a unary request never allocates a queue).
    first: Option<Bytes>,
    /// The messages after `first`.
    rest: VecDeque<Bytes>,
    /// Bytes queued.
    queued: usize,
    /// Over the stream's receive limit (counted in the session's `RecvBytes`).
    over: bool,
    end: Option<RecvEnd>,
    waker: Option<Waker>,
    /// Server: the core's `poll_reset`.
    reset_waker: Option<Waker>,
}

/// How the receive side of a stream ended.
enum RecvEnd {
    /// Server: the client half-closed: EOF once the queue is read.
    Eof,
    /// Client: the server's Trailer: this end (status, trailer) once the queue is read.
    Trailer(Status, Metadata),
    /// The stream failed (a Rst, a stream error, the connection lost): delivered at once, the
    /// queue is dropped.
    Failed(Status),
}

impl RecvQueue {
    fn new() -> RecvQueue {
        RecvQueue {
            header: None,
            refused: false,
            first: None,
            rest: VecDeque::new(),
            queued: 0,
            over: false,
            end: None,
            waker: None,
            reset_waker: None,
        }
    }

    fn failure(&self) -> Option<&Status> {
        match &self.end {
            Some(RecvEnd::Failed(s)) => Some(s),
            _ => None,
        }
    }

    fn wake_all(&mut self) {
        wake(&mut self.waker);
        wake(&mut self.reset_waker);
    }
}

impl<H: Host> Stream<H> {
    pub(crate) fn new(
        host: &Arc<H>,
        id: i32,
        method: &'static str,
        protocol: StreamProtocol,
        sm: StreamState,
    ) -> Arc<Stream<H>> {
        let stream = Arc::new(Stream {
            id,
            method,
            protocol,
            data_head: OnceLock::new(),
            host: host.clone(),
            st: Mutex::new(State {
                sm,
                rx: RecvQueue::new(),
                corked: None,
            }),
            _counted: Counted::new(host.stats(), |s| &s.streams),
        });
        if host.role() == Role::Server {
            host.recv_bytes().open_stream();
        }
        stream
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.st)
    }

    /// The method name for a frame (the IDL's string, not copied).
    fn name(&self) -> MethodName {
        MethodName::from_static(self.method)
    }

    // ------------------------------------------------------------------ the receive queue

    fn push(&self, rx: &mut RecvQueue, msg: Bytes) {
        let n = held_for(msg.len());
        rx.queued += n;
        if rx.first.is_none() && rx.rest.is_empty() {
            rx.first = Some(msg);
        } else {
            rx.rest.push_back(msg);
        }
        self.host.recv_bytes().charge(n, rx.queued, &mut rx.over);
        wake(&mut rx.waker);
    }

    fn pop(&self, rx: &mut RecvQueue) -> Option<Bytes> {
        let msg = rx.first.take()?;
        rx.first = rx.rest.pop_front();
        self.release(rx, held_for(msg.len()));
        Some(msg)
    }

    /// `n` queued bytes left the stream: uncharged, and the reader is told when this takes
    /// the stream or the session back under its limit.
    fn release(&self, rx: &mut RecvQueue, n: usize) {
        rx.queued -= n;
        if self.host.recv_bytes().release(n, rx.queued, &mut rx.over) {
            self.host.reader_signal().notify_one();
        }
    }

    fn clear_queue(&self, rx: &mut RecvQueue) {
        let n = rx.queued;
        rx.first = None;
        rx.rest.clear();
        if n > 0 || rx.over {
            self.release(rx, n);
        }
    }

    /// The receive side failed with `status`: the queue is dropped, every waiter woken.
    fn fail(&self, rx: &mut RecvQueue, status: Status) {
        rx.end = Some(RecvEnd::Failed(status));
        self.clear_queue(rx);
        rx.wake_all();
    }

    // ------------------------------------------------------------------------- inbound

    /// The session was lost: the stream fails with `status` (unless a client already has the
    /// server's end queued).
    pub(crate) fn connection_lost(&self, status: &Status) {
        let mut st = self.lock();
        st.sm.on_connection_lost();
        if !matches!(st.rx.end, Some(RecvEnd::Trailer(..))) {
            self.fail(&mut st.rx, status.clone());
        }
    }

    pub(crate) fn on_frame(&self, frame: StreamFrame) {
        let mut st = self.lock();
        // Only a client's Trailer needs the exact code (read before the frame is consumed).
        let exact_code = match (frame.kind, self.host.role()) {
            (FrameKind::Trailer, Role::Client) => {
                frame.headers.get_str(RPC_CODE_KEY).map(str::to_owned)
            }
            _ => None,
        };
        let event = st.sm.recv(frame);
        self.apply(st, event, exact_code);
    }

    /// A Data frame from the reader's fast path.
    pub(crate) fn on_data(&self, payload: Bytes) {
        let mut st = self.lock();
        let event = st.sm.recv_data(payload);
        self.apply(st, event, None);
    }

    /// After the handler's inline poll: the message the reader queued uncopied (`at`: its
    /// address and length), if still queued (the last one), is kept as [`keep`] keeps it
    /// (copied out of the read chunk). Its charge is the same either way.
    pub(crate) fn keep_queued(&self, at: (*const u8, usize), frame_len: usize) {
        let mut st = self.lock();
        let rx = &mut st.rx;
        let last = match rx.rest.back_mut() {
            Some(m) => Some(m),
            None => rx.first.as_mut(),
        };
        if let Some(m) = last.filter(|m| (m.as_ptr(), m.len()) == at) {
            *m = keep(std::mem::take(m), frame_len);
        }
    }

    fn apply(
        &self,
        mut st: MutexGuard<'_, State>,
        event: Result<RecvEvent, StreamError>,
        exact_code: Option<String>,
    ) {
        let rx = &mut st.rx;
        match event {
            Ok(RecvEvent::Data(b)) => self.push(rx, b),
            Ok(RecvEvent::Headers(h)) => {
                if self.host.role() == Role::Client
                    && h.get_int(int_key::REFUSED_UNPROCESSED).is_some()
                {
                    rx.refused = true;
                    return;
                }
                rx.header = Some(metadata_of(&h));
                wake(&mut rx.waker);
            }
            Ok(RecvEvent::RemoteClosed) => {
                rx.end.get_or_insert(RecvEnd::Eof);
                wake(&mut rx.waker);
            }
            Ok(RecvEvent::Finished { trailers, error }) => {
                let md = metadata_of(&trailers);
                let status = match (error, BizStatus::from_headers(&trailers)) {
                    (Some(exc), _) => {
                        status_from_exception(&exc, exact_code.as_deref()).with_metadata(md.clone())
                    }
                    (None, Ok(Some(biz))) => status_from_biz(&biz, md.clone()),
                    (None, Err(e)) => Status::internal(e.to_string())
                        .with_transport_code(kitex_code::ILLEGAL_BIZ_ERROR),
                    (None, Ok(None)) => Status::ok(),
                };
                let refused = rx.refused && !status.is_ok();
                let status = if refused {
                    status.with_source(RefusedUnprocessed)
                } else {
                    status
                };
                rx.end = Some(RecvEnd::Trailer(status, md));
                rx.wake_all();
                drop(st);
                if refused {
                    self.host.peer_draining();
                }
                self.host.remove(self.id, self);
            }
            Ok(RecvEvent::Reset {
                code,
                message,
                cancel_path,
            }) => {
                // A client's Rst cancels a server stream from upstream; a proxy's Rst on a
                // client stream is a cancel from downstream (Kitex `onReadRstFrame`).
                let kind = match self.host.role() {
                    Role::Server => CancelKind::Upstream,
                    Role::Client => CancelKind::Downstream,
                };
                let code_of = status_from_kitex(code, "").code();
                let status =
                    Cancellation::new(kind, cancel_path.unwrap_or_default(), code, message)
                        .into_status_with(code_of);
                self.fail(rx, status);
                drop(st);
                self.host.remove(self.id, self);
            }
            Ok(_) => {}
            Err(e) => {
                let status = Status::internal(e.to_string()).with_transport_code(e.kitex_code());
                self.stream_error(st, status, e.kitex_code());
            }
        }
    }

    /// A stream error ends this stream only; the connection keeps serving others. A server
    /// fails its receive side (the core cancels the handler and finishes, which still sends
    /// the Trailer: the state machine allows it); a client resets.
    fn stream_error(&self, mut st: MutexGuard<'_, State>, status: Status, code: i32) {
        tracing::debug!(id = self.id, %status, "ttstream stream error");
        match self.host.role() {
            Role::Server => self.fail(&mut st.rx, status),
            Role::Client => {
                self.send_reset(&mut st, &status, code);
                self.fail(&mut st.rx, status);
                drop(st);
                self.host.remove(self.id, self);
            }
        }
    }

    /// A frame naming this stream was delimited but is not a valid ttstream frame.
    pub(crate) fn illegal_frame(&self, reason: String) {
        let st = self.lock();
        if st.rx.end.is_some() || st.sm.is_finished() {
            return;
        }
        let status = Status::internal(format!("illegal frame: {reason}"))
            .with_transport_code(kitex_code::ILLEGAL_FRAME);
        self.stream_error(st, status, kitex_code::ILLEGAL_FRAME);
    }

    // ------------------------------------------------------------------------ outbound

    /// Appends one frame; callers hold the stream lock so the wire order is the state
    /// machine's order.
    fn write_frame(&self, frame: &StreamFrame) -> Result<(), Status> {
        self.host
            .sink()
            .append_frame(frame)
            .map_err(|e| self.host.sink_error(e))
    }

    fn write_data(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let head = self.data_head.get_or_init(|| {
            let mut head = BytesMut::new();
            self.encode_data_head(&mut head);
            head.freeze()
        });
        self.append_data(head, msg)
    }

    fn append_data(&self, head: &[u8], msg: &mut dyn Encodable) -> Result<(), Status> {
        let max = self.host.limits().max_frame_size;
        self.host
            .sink()
            .append_data(head, msg, max)
            .map_err(|e| self.host.sink_error(e))
    }

    /// Runs `f` with this stream's Data head: the cached one, or for a one-shot reply one
    /// encoded into a per-thread scratch buffer (no allocation, no cached head for a stream
    /// that sends once).
    fn with_data_head<R>(&self, mut f: impl FnMut(&[u8]) -> R) -> R {
        if let Some(head) = self.data_head.get() {
            return f(head);
        }
        thread_local! {
            static SCRATCH: std::cell::RefCell<BytesMut> =
                std::cell::RefCell::new(BytesMut::new());
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut head) => {
                head.clear();
                self.encode_data_head(&mut head);
                f(&head)
            }
            // Not re-entered in practice (a message's encoder does not write frames).
            Err(_) => {
                let mut head = BytesMut::new();
                self.encode_data_head(&mut head);
                f(&head)
            }
        })
    }

    fn encode_data_head(&self, dst: &mut BytesMut) {
        // Encoding a head with no headers cannot fail (the method name is bounded by the IDL).
        let _ = StreamFrame::new(FrameKind::Data, self.id, self.name(), self.protocol)
            .encode_head(0, dst);
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        self.host
            .sink()
            .poll_ready(cx, len)
            .map_err(|e| self.host.sink_error(e))
    }

    /// Why nothing more can be sent on a finished stream: its failure, a client's error end,
    /// or "finished".
    fn finished_error(&self, st: &State) -> Status {
        match &st.rx.end {
            Some(RecvEnd::Failed(s)) => s.clone(),
            Some(RecvEnd::Trailer(s, _)) if !s.is_ok() => s.clone(),
            _ => Error::StreamFinished.into(),
        }
    }

    /// Client: Rst (and the empty Trailer Kitex sends after it, if not half-closed yet), as
    /// far as the state machine allows (nothing once the stream finished).
    fn send_reset(&self, st: &mut State, status: &Status, code: i32) {
        if st.sm.send(FrameKind::Rst).is_err() {
            return;
        }
        // Kitex v0.15.1 cascading cancel (`stream.go` sendRst): the exception carries the
        // origin's code and message, the `ttscp` string key the cancel path so far, this
        // hop's name included.
        let (exc, path) = match status.cancellation() {
            Some(c) => (
                ApplicationException::new(c.kitex_code(), c.wire_message()),
                Some(c.path()).filter(|p| !p.is_empty()),
            ),
            None => (ApplicationException::new(code, status.message()), None),
        };
        if let Ok(rst) = StreamFrame::rst(self.id, self.name(), self.protocol, path, &exc) {
            let _ = self.write_frame(&rst);
        }
        if !st.sm.is_local_closed() && st.sm.send(FrameKind::Trailer).is_ok() {
            let _ = self.write_frame(&StreamFrame::close_send(
                self.id,
                self.name(),
                self.protocol,
            ));
        }
    }

    /// Server: the response Header, unless the state machine says it went out already.
    fn send_header_if_unsent(&self, st: &mut State, header: &Metadata) -> Result<(), Status> {
        if st.sm.header_sent() {
            return Ok(());
        }
        st.sm
            .send(FrameKind::Header)
            .map_err(|_| self.finished_error(st))?;
        let mut frame = StreamFrame::server_header(self.id, self.name(), self.protocol, []);
        extend_kvs(&mut frame.headers.str_kvs, header);
        self.write_frame(&frame)
    }
}

impl<H: Host> Stream<H> {
    /// The stream's Header could not be written: it is over, with nothing to send.
    pub(crate) fn never_sent(&self) {
        self.lock().sm.on_connection_lost();
    }

    /// Client: holds the stream's Header back until its one message (or half-close, or the
    /// first wait for the server) sends it.
    pub(crate) fn cork(&self, header: StreamFrame) {
        self.lock().corked = Some(Box::new(header));
    }

    /// Client: writes the held-back Header now (the stream waits for the server before it
    /// sent anything).
    fn uncork(&self, st: &mut State) -> Result<(), Status> {
        match st.corked.take() {
            Some(header) => self.write_frame(&header),
            None => Ok(()),
        }
    }

    /// Client, one-shot request: the held-back Header, the message and (if `close`) the
    /// half-close as one batch. The caller has moved the state machine past the Data.
    fn send_one_shot(
        &self,
        st: &mut State,
        header: &StreamFrame,
        msg: &mut dyn Encodable,
    ) -> Result<(), Status> {
        let max = self.host.limits().max_frame_size;
        let mut msg = Some(msg);
        let mut result = Ok(());
        self.host.sink().append_batch(&mut |w| {
            result = w.frame(header);
            if result.is_err() {
                return;
            }
            if let Some(msg) = msg.take() {
                result = self.with_data_head(|head| w.data(head, msg, max));
            }
            if result.is_ok() && st.sm.send(FrameKind::Trailer).is_ok() {
                let _ = w.frame(&StreamFrame::close_send(
                    self.id,
                    self.name(),
                    self.protocol,
                ));
            }
        });
        result.map_err(|e| self.host.sink_error(e))
    }
}

impl<H: Host> Drop for Stream<H> {
    fn drop(&mut self) {
        if self.host.role() == Role::Server {
            self.host.recv_bytes().close_stream();
        }
        // The core ends every stream before it lets go (the raw-stream contract); one it
        // never ended (raw use, a caller that gave up between open and the first call) ends
        // here as the core would have ended it, so it does not stay in the session's table.
        if !self.lock().sm.is_finished() {
            match self.host.role() {
                Role::Client => ClientStreamRaw::reset(
                    self,
                    &Status::cancelled("the client dropped the stream"),
                ),
                Role::Server => self.finish(Finish {
                    header: None,
                    message: None,
                    status: Status::internal("the server dropped the stream"),
                    trailer: Metadata::new(),
                }),
            }
        }
        // Whatever is still queued leaves the session's and the server's counts with it.
        let st = self.st.get_mut().unwrap_or_else(|e| e.into_inner());
        if st.rx.queued > 0 || st.rx.over {
            let mut st = lock(&self.st);
            self.clear_queue(&mut st.rx);
        }
    }
}

impl<H: Host> ClientStreamRaw for Stream<H> {
    fn poll_send_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        {
            let st = self.lock();
            if st.sm.is_finished() {
                return Poll::Ready(Err(self.finished_error(&st)));
            }
        }
        self.poll_write_ready(cx, len)
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let mut st = self.lock();
        if st.sm.send(FrameKind::Data).is_err() {
            return Err(self.finished_error(&st));
        }
        if let Some(header) = st.corked.take() {
            // The one message of a one-shot request: it goes out with its Header and the
            // half-close (the core's `close_send` that follows finds it done).
            return self.send_one_shot(&mut st, &header, msg);
        }
        self.write_data(msg)
    }

    fn close_send(&self) -> Result<(), Status> {
        let mut st = self.lock();
        self.uncork(&mut st)?;
        // Refused once the stream finished: nothing is left to half-close.
        if st.sm.send(FrameKind::Trailer).is_ok() {
            self.write_frame(&StreamFrame::close_send(
                self.id,
                self.name(),
                self.protocol,
            ))?;
        }
        Ok(())
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<ClientEvent> {
        let mut st = self.lock();
        if st.corked.is_some() {
            // Waiting for the server before sending: the server must hear of the stream.
            if let Err(status) = self.uncork(&mut st) {
                return Poll::Ready(ClientEvent::End(status, Metadata::new()));
            }
        }
        let rx = &mut st.rx;
        if let Some(h) = rx.header.take() {
            return Poll::Ready(ClientEvent::Header(h));
        }
        if let Some(m) = self.pop(rx) {
            return Poll::Ready(ClientEvent::Message(m));
        }
        match rx.end.take() {
            Some(RecvEnd::Trailer(status, trailer)) => {
                Poll::Ready(ClientEvent::End(status, trailer))
            }
            Some(RecvEnd::Failed(status)) => Poll::Ready(ClientEvent::End(status, Metadata::new())),
            // A client never half-closes its receive side.
            Some(RecvEnd::Eof) | None => {
                register(&mut rx.waker, cx);
                Poll::Pending
            }
        }
    }

    fn reset(&self, status: &Status) {
        let code = match status.code() {
            Code::DeadlineExceeded => kitex_code::STREAM_TIMEOUT,
            Code::RecvDeadlineExceeded => kitex_code::RECV_TIMEOUT,
            _ => kitex_code::USER_CANCEL,
        };
        let mut st = self.lock();
        if st.corked.take().is_some() {
            // The server never heard of this stream: nothing to cancel on the wire.
            st.sm.on_connection_lost();
        } else {
            self.send_reset(&mut st, status, code);
        }
        self.clear_queue(&mut st.rx);
        drop(st);
        self.host.remove(self.id, self);
    }
}

impl<H: Host> ServerStreamRaw for Stream<H> {
    fn poll_send_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        {
            let st = self.lock();
            if st.sm.is_finished() {
                return Poll::Ready(Err(self.finished_error(&st)));
            }
        }
        self.poll_write_ready(cx, len)
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let mut st = self.lock();
        self.send_header_if_unsent(&mut st, &Metadata::new())?;
        if st.sm.send(FrameKind::Data).is_err() {
            return Err(self.finished_error(&st));
        }
        self.write_data(msg)
    }

    fn send_header(&self, header: Metadata) -> Result<(), Status> {
        let mut st = self.lock();
        if st.sm.header_sent() {
            return Err(Error::HeaderAlreadySent.into());
        }
        self.send_header_if_unsent(&mut st, &header)
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        let mut st = self.lock();
        if let Some(failure) = st.rx.failure() {
            return Poll::Ready(Err(failure.clone()));
        }
        if let Some(m) = self.pop(&mut st.rx) {
            return Poll::Ready(Ok(Some(m)));
        }
        if st.rx.end.is_some() {
            return Poll::Ready(Ok(None));
        }
        if st.sm.is_finished() {
            // Finished here (a receiver that outlived its handler): nothing more will come.
            return Poll::Ready(Err(Error::StreamFinished.into()));
        }
        register(&mut st.rx.waker, cx);
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
        let mut st = self.lock();
        // Whatever the state machine still allows goes out: nothing after a Rst or the
        // connection's loss; after a stream error, the Header (spec §3.5: first, even when
        // the handler failed before any data, Kitex issue #1887) and the Trailer. The frames
        // go to the sink as one batch (a socket queue is locked and its writer woken once).
        if !st.sm.is_finished() {
            let (mut header, mut message) = (header, message);
            let max = self.host.limits().max_frame_size;
            self.host.sink().append_batch(&mut |w| {
                if !st.sm.header_sent() && st.sm.send(FrameKind::Header).is_ok() {
                    let mut frame =
                        StreamFrame::server_header(self.id, self.name(), self.protocol, []);
                    extend_kvs(
                        &mut frame.headers.str_kvs,
                        &header.take().unwrap_or_default(),
                    );
                    let _ = w.frame(&frame);
                }
                if let Some(msg) = message.take() {
                    let sent = match st.sm.send(FrameKind::Data) {
                        Ok(()) => self
                            .with_data_head(|head| w.data(head, msg, max))
                            .map_err(|e| self.host.sink_error(e)),
                        Err(_) => Err(Error::StreamFinished.into()),
                    };
                    if let Err(e) = sent {
                        status = e;
                    }
                }
                if st.sm.send(FrameKind::Trailer).is_ok() {
                    match self.trailer_frame(&status, &trailer) {
                        Ok(f) => {
                            let _ = w.frame(&f);
                        }
                        Err(e) => tracing::warn!(error = %e, "could not encode the trailer"),
                    }
                }
            });
        }
        self.clear_queue(&mut st.rx);
        st.rx.wake_all();
        drop(st);
        self.host.remove(self.id, self);
    }

    fn poll_reset(&self, cx: &mut Context<'_>) -> Poll<Status> {
        let mut st = self.lock();
        if let Some(failure) = st.rx.failure() {
            return Poll::Ready(failure.clone());
        }
        register(&mut st.rx.reset_waker, cx);
        Poll::Pending
    }
}

impl<H: Host> Stream<H> {
    /// The server's Trailer for `status`: OK, a business status, or an exception (with the
    /// exact code in [`RPC_CODE_KEY`]).
    fn trailer_frame(
        &self,
        status: &Status,
        trailer: &Metadata,
    ) -> Result<StreamFrame, crate::proto::EncodeError> {
        let (biz, exc) = if status.is_ok() {
            (None, None)
        } else if let Some(biz) = biz_of(status) {
            (Some(biz), None)
        } else {
            (None, Some(exception_of(status)))
        };
        let code = exc
            .is_some()
            .then(|| (RPC_CODE_KEY.to_owned(), status.code().as_i32().to_string()));
        let mut frame = StreamFrame::trailer(
            self.id,
            self.name(),
            self.protocol,
            code,
            biz.as_ref(),
            exc.as_ref(),
        )?;
        extend_kvs(&mut frame.headers.str_kvs, trailer);
        if exc.is_some() {
            extend_kvs(&mut frame.headers.str_kvs, status.metadata());
        }
        Ok(frame)
    }
}
