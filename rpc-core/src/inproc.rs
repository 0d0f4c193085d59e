//! An in-process transport: client and server in one process, joined by bounded in-memory
//! queues. It implements the raw traits exactly as a network transport must (bounded buffers,
//! half-close, reset, header/trailer, deadline propagation), so the whole stream semantics is
//! tested without sockets, and it is the fastest way to run a service inside a test.
//!
//! ```
//! # async fn demo(server: rpc_core::Server) {
//! use rpc_core::{inproc::InProcTransport, Client};
//! let transport = InProcTransport::new(server);
//! let client = Client::new(transport.clone());
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

use crate::codec::Encodable;
use crate::context::{CallContext, Peer};
use crate::metadata::Metadata;
use crate::server::Server;
use crate::status::{Error, Status};
use crate::transport::waker::{register, wake};
use crate::transport::{
    BoxFuture, ClientStreamRaw, ClientTransport, IncomingStream, ServerStreamRaw,
};

/// Default bytes buffered per direction of a stream before senders wait: big enough for many
/// small messages in flight, small enough that a stuck receiver pins little memory.
pub const DEFAULT_STREAM_BUFFER: usize = 64 * 1024;

/// The in-process transport: a client transport whose streams are served by a [`Server`].
#[derive(Clone)]
pub struct InProcTransport {
    server: Server,
    buffer: usize,
    live: Arc<Live>,
    buffered: Arc<AtomicUsize>,
}

/// Count of live streams, with a notification when it drops to zero.
#[derive(Default)]
struct Live {
    count: AtomicUsize,
    zero: tokio::sync::Notify,
}

impl std::fmt::Debug for InProcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcTransport")
            .field("buffer", &self.buffer)
            .field("live_streams", &self.live_streams())
            .finish()
    }
}

impl InProcTransport {
    /// A transport serving its streams with `server`.
    pub fn new(server: Server) -> InProcTransport {
        InProcTransport::with_buffer(server, DEFAULT_STREAM_BUFFER)
    }

    /// As [`InProcTransport::new`] with a per-direction buffer of `bytes` (at least one message
    /// is always admitted, so a message larger than the buffer still goes through).
    pub fn with_buffer(server: Server, bytes: usize) -> InProcTransport {
        InProcTransport {
            server,
            buffer: bytes,
            live: Arc::new(Live::default()),
            buffered: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Streams whose state is still allocated (some handle of either side is alive).
    pub fn live_streams(&self) -> usize {
        self.live.count.load(Ordering::Acquire)
    }

    /// Waits until no stream state is left (every handle of both sides dropped).
    pub async fn wait_no_live_streams(&self) {
        loop {
            let zero = self.live.zero.notified();
            if self.live_streams() == 0 {
                return;
            }
            zero.await;
        }
    }

    /// Bytes currently queued in all streams, both directions.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }
}

impl ClientTransport for InProcTransport {
    fn open(
        &self,
        ctx: &CallContext,
    ) -> BoxFuture<'static, Result<Arc<dyn ClientStreamRaw>, Status>> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cap: self.buffer,
            live: self.live.clone(),
            buffered: self.buffered.clone(),
        });
        self.live.count.fetch_add(1, Ordering::AcqRel);
        let method = ctx.method();
        let incoming = IncomingStream::new(method.full_service, method.name)
            .with_metadata(ctx.metadata().clone())
            .with_deadline(ctx.deadline())
            .with_peer(Some(Peer::InProcess))
            .with_payload(Some(method.payload));
        self.server
            .dispatch(incoming, Arc::new(ServerSide(shared.clone())));
        let client: Arc<dyn ClientStreamRaw> = Arc::new(ClientSide(shared));
        Box::pin(async move { Ok(client) })
    }
}

#[derive(Default)]
struct Pipe {
    queue: VecDeque<Bytes>,
    bytes: usize,
    closed: bool,
    recv_waker: Option<Waker>,
    send_waker: Option<Waker>,
}

#[derive(Default)]
struct State {
    c2s: Pipe,
    s2c: Pipe,
    header: Option<Metadata>,
    header_waker: Option<Waker>,
    /// The server finished: final status and trailer.
    end: Option<(Status, Metadata)>,
    /// The client reset the stream.
    reset: Option<Status>,
    cancel_waker: Option<Waker>,
}

impl State {
    fn wake_all(&mut self) {
        wake(&mut self.c2s.recv_waker);
        wake(&mut self.c2s.send_waker);
        wake(&mut self.s2c.recv_waker);
        wake(&mut self.s2c.send_waker);
        wake(&mut self.header_waker);
        wake(&mut self.cancel_waker);
    }

    fn ended(&self) -> bool {
        self.end.is_some() || self.reset.is_some()
    }
}

struct Shared {
    state: Mutex<State>,
    cap: usize,
    live: Arc<Live>,
    buffered: Arc<AtomicUsize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poll_ready(
        &self,
        cx: &Context<'_>,
        pick: fn(&mut State) -> &mut Pipe,
        failed: impl FnOnce(&State) -> Option<Status>,
    ) -> Poll<Result<(), Status>> {
        let mut st = self.lock();
        if let Some(status) = failed(&st) {
            return Poll::Ready(Err(status));
        }
        let cap = self.cap;
        let pipe = pick(&mut st);
        if pipe.bytes < cap {
            Poll::Ready(Ok(()))
        } else {
            register(&mut pipe.send_waker, cx);
            Poll::Pending
        }
    }

    fn push(
        &self,
        msg: &mut dyn Encodable,
        pick: fn(&mut State) -> &mut Pipe,
    ) -> Result<(), Status> {
        let mut buf = BytesMut::with_capacity(msg.encoded_len().unwrap_or(64));
        msg.encode(&mut buf)?;
        let len = buf.len();
        let mut st = self.lock();
        let pipe = pick(&mut st);
        pipe.bytes += len;
        pipe.queue.push_back(buf.freeze());
        wake(&mut pipe.recv_waker);
        self.buffered.fetch_add(len, Ordering::AcqRel);
        Ok(())
    }

    fn pop(&self, pipe: &mut Pipe) -> Option<Bytes> {
        let msg = pipe.queue.pop_front()?;
        pipe.bytes -= msg.len();
        self.buffered.fetch_sub(msg.len(), Ordering::AcqRel);
        wake(&mut pipe.send_waker);
        Some(msg)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let left = st.c2s.bytes + st.s2c.bytes;
        self.buffered.fetch_sub(left, Ordering::AcqRel);
        if self.live.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.live.zero.notify_waiters();
        }
    }
}

struct ClientSide(Arc<Shared>);
struct ServerSide(Arc<Shared>);

fn c2s(s: &mut State) -> &mut Pipe {
    &mut s.c2s
}
fn s2c(s: &mut State) -> &mut Pipe {
    &mut s.s2c
}

impl ClientStreamRaw for ClientSide {
    fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.0.poll_ready(cx, c2s, |st| {
            if let Some(r) = &st.reset {
                Some(r.clone())
            } else if let Some((status, _)) = &st.end {
                Some(if status.is_ok() {
                    Error::StreamFinished.into()
                } else {
                    status.clone()
                })
            } else if st.c2s.closed {
                Some(Error::SendAfterClose.into())
            } else {
                None
            }
        })
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        self.0.push(msg, c2s)
    }

    fn close_send(&self) -> Result<(), Status> {
        let mut st = self.0.lock();
        st.c2s.closed = true;
        wake(&mut st.c2s.recv_waker);
        Ok(())
    }

    fn poll_header(&self, cx: &mut Context<'_>) -> Poll<Result<Metadata, Status>> {
        let mut st = self.0.lock();
        if let Some(h) = &st.header {
            return Poll::Ready(Ok(h.clone()));
        }
        if let Some(r) = &st.reset {
            return Poll::Ready(Err(r.clone()));
        }
        register(&mut st.header_waker, cx);
        Poll::Pending
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        let mut st = self.0.lock();
        if let Some(r) = &st.reset {
            return Poll::Ready(Err(r.clone()));
        }
        if let Some(msg) = self.0.pop(&mut st.s2c) {
            return Poll::Ready(Ok(Some(msg)));
        }
        if let Some((status, _)) = &st.end {
            return Poll::Ready(if status.is_ok() {
                Ok(None)
            } else {
                Err(status.clone())
            });
        }
        register(&mut st.s2c.recv_waker, cx);
        Poll::Pending
    }

    fn trailer(&self) -> Option<Metadata> {
        self.0.lock().end.as_ref().map(|(_, t)| t.clone())
    }

    fn cancel(&self, status: &Status) {
        let mut st = self.0.lock();
        if st.ended() {
            return;
        }
        st.reset = Some(status.clone());
        st.wake_all();
    }
}

impl Drop for ClientSide {
    fn drop(&mut self) {
        self.cancel(&Status::cancelled("client dropped the stream"));
    }
}

impl ServerStreamRaw for ServerSide {
    fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.0.poll_ready(cx, s2c, |st| {
            if let Some(r) = &st.reset {
                Some(r.clone())
            } else if st.end.is_some() {
                Some(Error::StreamFinished.into())
            } else {
                None
            }
        })
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        {
            let mut st = self.0.lock();
            if st.header.is_none() {
                st.header = Some(Metadata::new());
                wake(&mut st.header_waker);
            }
        }
        self.0.push(msg, s2c)
    }

    fn send_header(&self, header: Metadata) -> Result<(), Status> {
        let mut st = self.0.lock();
        if st.header.is_some() {
            return Err(Error::HeaderAlreadySent.into());
        }
        st.header = Some(header);
        wake(&mut st.header_waker);
        Ok(())
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        let mut st = self.0.lock();
        if let Some(r) = &st.reset {
            return Poll::Ready(Err(r.clone()));
        }
        if let Some(msg) = self.0.pop(&mut st.c2s) {
            return Poll::Ready(Ok(Some(msg)));
        }
        if st.c2s.closed {
            return Poll::Ready(Ok(None));
        }
        if st.end.is_some() {
            return Poll::Ready(Err(Error::StreamFinished.into()));
        }
        register(&mut st.c2s.recv_waker, cx);
        Poll::Pending
    }

    fn finish(&self, header: Option<Metadata>, status: Status, trailer: Metadata) {
        let mut st = self.0.lock();
        if st.ended() {
            return;
        }
        if st.header.is_none() {
            st.header = Some(header.unwrap_or_default());
        }
        let mut trailer = trailer;
        trailer.extend(status.metadata().clone());
        st.end = Some((status, trailer));
        // Requests nobody will read are released now, not when the last handle goes.
        while self.0.pop(&mut st.c2s).is_some() {}
        st.wake_all();
    }

    fn poll_cancelled(&self, cx: &mut Context<'_>) -> Poll<Status> {
        let mut st = self.0.lock();
        if let Some(r) = &st.reset {
            return Poll::Ready(r.clone());
        }
        register(&mut st.cancel_waker, cx);
        Poll::Pending
    }
}

impl Drop for ServerSide {
    fn drop(&mut self) {
        self.finish(
            None,
            Status::internal("server dropped the stream"),
            Metadata::new(),
        );
    }
}
