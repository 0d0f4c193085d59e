//! One stream of a [`Session`]: its state machine, its receive queue with byte accounting, and
//! the raw handles the core drives (`ClientStreamRaw` for the client, `ServerStreamRaw` for the
//! server).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use rpc_core::codec::Encodable;
use rpc_core::transport::waker::{register, wake};
use rpc_core::transport::{ClientEvent, ClientStreamRaw, Finish, ServerStreamRaw};
use rpc_core::{Code, Error, Metadata, Status};

use super::Counted;
use super::{FrameSink, Session};
use crate::common::lock;
use crate::mapping::{
    biz_of, exception_of, metadata_of, status_from_biz, status_from_exception, status_from_kitex,
    str_kvs, text_only, text_only_finish, RPC_CODE_KEY,
};
use crate::proto::keys::kitex_code;
use crate::proto::{
    ApplicationException, BizStatus, FrameKind, RecvEvent, Role, StreamFrame, StreamProtocol,
    StreamState,
};

/// One stream of a session.
pub(crate) struct Stream<S: FrameSink> {
    id: i32,
    method: String,
    protocol: StreamProtocol,
    /// The encoded head of this stream's Data frames (LENGTH set by the sink per message).
    data_head: Bytes,
    conn: Arc<Session<S>>,
    st: Mutex<Inner>,
    _counted: Counted,
}

pub(crate) struct Inner {
    sm: StreamState,
    queue: VecDeque<Bytes>,
    queued: usize,
    over: bool,
    recv_waker: Option<Waker>,
    /// Client: the response header, until the core takes it (the state machine admits one).
    header: Option<Metadata>,
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

impl<S: FrameSink> Stream<S> {
    pub(crate) fn new(
        conn: &Arc<Session<S>>,
        id: i32,
        method: String,
        protocol: StreamProtocol,
        sm: StreamState,
    ) -> Arc<Stream<S>> {
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
        let conn = &self.conn;
        st.queued += n;
        st.queue.push_back(msg);
        conn.buffered.fetch_add(n, Ordering::AcqRel);
        conn.stats.add_buffered(n);
        if let Some(b) = &conn.budget {
            b.charge(n);
        }
        if !st.over && st.queued > conn.limits.stream_recv_buffer {
            st.over = true;
            conn.over_limit.fetch_add(1, Ordering::AcqRel);
        }
        wake(&mut st.recv_waker);
    }

    fn pop(&self, st: &mut Inner) -> Option<Bytes> {
        let msg = st.queue.pop_front()?;
        self.release(st, msg.len());
        Some(msg)
    }

    /// `n` queued bytes left the stream: uncharged, and the reader is told when this takes
    /// the stream or the session back under its limit.
    fn release(&self, st: &mut Inner, n: usize) {
        let conn = &self.conn;
        st.queued -= n;
        let before = conn.buffered.fetch_sub(n, Ordering::AcqRel);
        conn.stats.sub_buffered(n);
        if let (Some(b), true) = (&conn.budget, n > 0) {
            b.release(n);
        }
        let limit = conn.limits.conn_recv_buffer;
        let mut resume = before > limit && before - n <= limit;
        if st.over && st.queued <= conn.limits.stream_recv_buffer {
            st.over = false;
            conn.over_limit.fetch_sub(1, Ordering::AcqRel);
            resume = true;
        }
        if resume {
            conn.reader_signal().notify_one();
        }
    }

    fn clear_queue(&self, st: &mut Inner) {
        let n = st.queued;
        st.queue.clear();
        if n > 0 || st.over {
            self.release(st, n);
        }
    }

    /// The session was lost: the stream ends with `status` on both sides.
    pub(crate) fn connection_lost(&self, status: &Status) {
        let mut st = self.lock();
        st.sm.on_connection_lost();
        st.end.get_or_insert(Err(status.clone()));
        st.cancelled.get_or_insert(status.clone());
        self.clear_queue(&mut st);
        st.wake_all();
    }

    pub(crate) fn on_frame(&self, frame: StreamFrame) {
        let exact_code = frame.headers.get_str(RPC_CODE_KEY).map(str::to_owned);
        let mut st = self.lock();
        let event = st.sm.recv(frame);
        self.apply(st, event, exact_code);
    }

    /// A Data frame from the reader's fast path.
    pub(crate) fn on_data(&self, payload: Bytes) {
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
    pub(crate) fn illegal_frame(&self, reason: String) {
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
        self.conn
            .sink
            .append_frame(frame)
            .map_err(|e| self.conn.sink_error(e))
    }

    fn write_data(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let max = self.conn.limits.max_frame_size;
        self.conn
            .sink
            .append_data(&self.data_head, msg, max)
            .map_err(|e| self.conn.sink_error(e))
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        self.conn
            .sink
            .poll_ready(cx, len)
            .map_err(|e| self.conn.sink_error(e))
    }

    /// This stream's half-close: an empty Trailer frame.
    fn close_send_frame(&self) -> StreamFrame {
        StreamFrame::close_send(self.id, self.method.as_str(), self.protocol)
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
                let _ = self.write_frame(&self.close_send_frame());
            }
        }
        st.end = Some(Err(status.clone()));
        self.clear_queue(&mut st);
        st.wake_all();
        drop(st);
        self.conn.remove(self.id);
    }
}

impl<S: FrameSink> Drop for Stream<S> {
    fn drop(&mut self) {
        // Whatever is still queued leaves the session's and the server's counts with it.
        let st = self.st.get_mut().unwrap_or_else(|e| e.into_inner());
        if st.queued > 0 || st.over {
            let mut st = lock(&self.st);
            self.clear_queue(&mut st);
        }
    }
}

/// The client's raw stream.
pub(crate) struct ClientHandle<S: FrameSink>(pub(crate) Arc<Stream<S>>);

impl<S: FrameSink> ClientStreamRaw for ClientHandle<S> {
    fn poll_send_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        {
            let st = self.0.lock();
            match &st.end {
                Some(Err(e)) => return Poll::Ready(Err(e.clone())),
                Some(Ok(())) => return Poll::Ready(Err(Error::StreamFinished.into())),
                None => {}
            }
        }
        self.0.poll_write_ready(cx, len)
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
            self.0.write_frame(&self.0.close_send_frame())?;
        }
        Ok(())
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<ClientEvent> {
        let mut st = self.0.lock();
        if let Some(h) = st.header.take() {
            return Poll::Ready(ClientEvent::Header(h));
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

impl<S: FrameSink> Drop for ClientHandle<S> {
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
pub(crate) struct ServerHandle<S: FrameSink>(pub(crate) Arc<Stream<S>>);

impl<S: FrameSink> ServerHandle<S> {
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

impl<S: FrameSink> ServerStreamRaw for ServerHandle<S> {
    fn poll_send_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        self.check(&self.0.lock())?;
        self.0.poll_write_ready(cx, len)
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
        // Binary metadata cannot travel: the stream fails with that error instead.
        let Finish {
            header,
            message,
            mut status,
            trailer,
            ..
        } = text_only_finish(finish);
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

impl<S: FrameSink> Drop for ServerHandle<S> {
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
