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
    BoxFuture, ClientEvent, ClientStreamRaw, ClientTransport, Finish, IncomingStream,
    ServerStreamRaw,
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
    fn rpc_system(&self) -> &'static str {
        "inproc"
    }

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
            .with_rpc_system("inproc")
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

/// One stream's state. Only what is in flight lives here — events not yet delivered and the
/// two facts each side must see (reset, finished); the outcome itself is the core's.
#[derive(Default)]
struct State {
    c2s: Pipe,
    s2c: Pipe,
    /// The response header, until the client takes it.
    header: Option<Metadata>,
    /// The server's end (status and trailer), until the client takes it after the messages.
    end: Option<(Status, Metadata)>,
    /// The server finished (no more sends).
    finished: bool,
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
        wake(&mut self.cancel_waker);
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

    /// Ready while `pipe` holds less than the cap (one message is always admitted).
    fn poll_room(&self, cx: &Context<'_>, pipe: &mut Pipe) -> Poll<Result<(), Status>> {
        if pipe.bytes < self.cap {
            Poll::Ready(Ok(()))
        } else {
            register(&mut pipe.send_waker, cx);
            Poll::Pending
        }
    }

    fn encode(msg: &mut dyn Encodable) -> Result<Bytes, Status> {
        let mut buf = BytesMut::with_capacity(msg.encoded_len().unwrap_or(64));
        msg.encode(&mut buf)?;
        Ok(buf.freeze())
    }

    fn push(&self, pipe: &mut Pipe, msg: Bytes) {
        let len = msg.len();
        pipe.bytes += len;
        pipe.queue.push_back(msg);
        wake(&mut pipe.recv_waker);
        self.buffered.fetch_add(len, Ordering::AcqRel);
    }

    fn pop(&self, pipe: &mut Pipe) -> Option<Bytes> {
        let msg = pipe.queue.pop_front()?;
        pipe.bytes -= msg.len();
        self.buffered.fetch_sub(msg.len(), Ordering::AcqRel);
        wake(&mut pipe.send_waker);
        Some(msg)
    }

    fn clear(&self, pipe: &mut Pipe) {
        while self.pop(pipe).is_some() {}
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

impl ClientStreamRaw for ClientSide {
    fn poll_send_ready(&self, cx: &mut Context<'_>, _len: usize) -> Poll<Result<(), Status>> {
        let mut st = self.0.lock();
        if st.finished {
            // Report the server's error if its end is still queued (the core has it otherwise).
            return Poll::Ready(Err(match &st.end {
                Some((status, _)) if !status.is_ok() => status.clone(),
                _ => Error::StreamFinished.into(),
            }));
        }
        self.0.poll_room(cx, &mut st.c2s)
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let msg = Shared::encode(msg)?;
        let mut st = self.0.lock();
        if st.finished {
            // The server ended first: what it would not read is dropped, as on a network.
            return Ok(());
        }
        self.0.push(&mut st.c2s, msg);
        Ok(())
    }

    fn close_send(&self) -> Result<(), Status> {
        let mut st = self.0.lock();
        st.c2s.closed = true;
        wake(&mut st.c2s.recv_waker);
        Ok(())
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<ClientEvent> {
        let mut st = self.0.lock();
        if let Some(h) = st.header.take() {
            return Poll::Ready(ClientEvent::Header(h));
        }
        if let Some(msg) = self.0.pop(&mut st.s2c) {
            return Poll::Ready(ClientEvent::Message(msg));
        }
        if let Some((status, trailer)) = st.end.take() {
            return Poll::Ready(ClientEvent::End(status, trailer));
        }
        register(&mut st.s2c.recv_waker, cx);
        Poll::Pending
    }

    fn reset(&self, status: &Status) {
        let mut st = self.0.lock();
        if st.reset.is_some() {
            return;
        }
        st.reset = Some(status.clone());
        self.0.clear(&mut st.s2c);
        st.wake_all();
    }
}

impl Drop for ClientSide {
    fn drop(&mut self) {
        // The core resets or sees the end first; this only covers raw use without the core.
        let ended = {
            let st = self.0.lock();
            st.finished || st.reset.is_some()
        };
        if !ended {
            self.reset(&Status::cancelled("client dropped the stream"));
        }
    }
}

impl ServerStreamRaw for ServerSide {
    fn poll_send_ready(&self, cx: &mut Context<'_>, _len: usize) -> Poll<Result<(), Status>> {
        let mut st = self.0.lock();
        if let Some(r) = &st.reset {
            return Poll::Ready(Err(r.clone()));
        }
        self.0.poll_room(cx, &mut st.s2c)
    }

    fn send_header(&self, header: Metadata) -> Result<(), Status> {
        let mut st = self.0.lock();
        st.header = Some(header);
        wake(&mut st.s2c.recv_waker);
        Ok(())
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let msg = Shared::encode(msg)?;
        let mut st = self.0.lock();
        if let Some(r) = &st.reset {
            return Err(r.clone());
        }
        self.0.push(&mut st.s2c, msg);
        Ok(())
    }

    fn finish(&self, finish: Finish<'_>) {
        let Finish {
            header,
            message,
            mut status,
            mut trailer,
            ..
        } = finish;
        let last = match message.map(Shared::encode) {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                status = e;
                None
            }
            None => None,
        };
        let mut st = self.0.lock();
        if st.finished {
            return;
        }
        st.finished = true;
        // Requests nobody will read are released now, not when the last handle goes.
        self.0.clear(&mut st.c2s);
        if st.reset.is_none() {
            if let Some(h) = header {
                st.header = Some(h);
            }
            if let Some(b) = last {
                self.0.push(&mut st.s2c, b);
            }
            trailer.extend(status.metadata().clone());
            st.end = Some((status, trailer));
        }
        st.wake_all();
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
        register(&mut st.c2s.recv_waker, cx);
        Poll::Pending
    }

    fn poll_reset(&self, cx: &mut Context<'_>) -> Poll<Status> {
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
        // The core always finishes first; this only covers raw use without the core.
        self.finish(Finish {
            header: None,
            message: None,
            status: Status::internal("server dropped the stream"),
            trailer: Metadata::new(),
        });
    }
}
