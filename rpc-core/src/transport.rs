//! The raw transport traits: what a transport implements so typed streams can run over it.
//!
//! A raw stream moves *encoded* messages plus header metadata, trailer metadata and a final
//! [`Status`]. The transport implements **primitives** — wait for send capacity, send a header,
//! a message, the end; deliver what arrived, in order — and the core keeps every piece of
//! per-call state (header sent or received, half-closed, ended and how, cancelled, deadline)
//! and enforces the order of calls. So a transport never remembers an outcome to repeat it,
//! never guards against a call after the end, and never tracks cancel itself: the core
//! guarantees what each method's docs say it guarantees.
//!
//! Methods take `&self` (the transport keeps its own per-stream synchronization) so the typed
//! layer can share one stream between a send half, a receive half and the server core through
//! an `Arc`. All `poll_*` methods follow the usual contract: `Pending` registers the waker of
//! the calling task. Each `poll_*` method is driven by at most one task at a time, but two
//! different methods may be polled by two tasks (a split bidi stream): a transport whose
//! underlying primitive shares one waker slot between two operations (h2's `poll_capacity` and
//! `poll_reset`) fans the wakeups out with [`waker::WakerSet`].
//!
//! Ownership is the lifecycle: when the last `Arc` of a raw stream drops, the transport releases
//! the stream's slot and buffers. The core has ended the stream before (client: the end was
//! received or [`ClientStreamRaw::reset`] was called; server: [`ServerStreamRaw::finish`] was
//! called), so dropping never needs to send anything.
//!
//! A transport's server side hands each accepted stream to the [`Server`](crate::Server)
//! through [`ServerExt`] (routing, dispatch, the shared byte budget): transport-author
//! operations, kept out of `Server`'s own API so a user reading it sees what a user needs.
//! A transport's client implements [`ClientTransport`], and [`Connect`] for the one-line
//! `XxxClient::connect::<T>(addr)` of generated clients.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::time::Instant;

use crate::codec::Encodable;
use crate::context::{CallContext, PayloadKind, Peer};
use crate::limits::ByteBudget;
use crate::metadata::Metadata;
use crate::route::{Route, RouteError};
use crate::status::Status;

/// Waker slots for `poll_*` implementations.
pub mod waker {
    use std::task::{Context, Waker};

    /// Stores the waker of `cx` in `slot`, unless the one there already wakes the same task.
    pub fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
        match slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
    }

    /// Wakes and clears `slot`, if it holds a waker.
    pub fn wake(slot: &mut Option<Waker>) {
        if let Some(w) = slot.take() {
            w.wake();
        }
    }

    /// Several tasks waiting on one event: for a primitive that keeps a single waker slot but
    /// is needed by more than one operation (h2's `ServerStreamingServer::poll_capacity` and `poll_reset`
    /// share one; a split bidi stream polls them from two tasks). Each operation registers its
    /// task here and polls the primitive with the shared waker of [`fanout_waker`], so whichever
    /// task the primitive wakes, all of them are woken.
    ///
    /// Registration is deduplicated by [`Waker::will_wake`]; the set holds at most one entry per
    /// distinct task and is emptied by every wake, so it stays as small as the number of
    /// tasks waiting at once.
    #[derive(Debug, Default)]
    pub struct WakerSet {
        wakers: Vec<Waker>,
    }

    impl WakerSet {
        /// An empty set.
        pub const fn new() -> WakerSet {
            WakerSet { wakers: Vec::new() }
        }

        /// Adds the waker of `cx`, unless one that wakes the same task is there.
        pub fn register(&mut self, cx: &Context<'_>) {
            if !self.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                self.wakers.push(cx.waker().clone());
            }
        }

        /// Wakes every registered task and empties the set.
        pub fn wake_all(&mut self) {
            for w in self.wakers.drain(..) {
                w.wake();
            }
        }

        /// Takes the registered wakers (to wake them after a lock is released).
        pub fn take(&mut self) -> Vec<Waker> {
            std::mem::take(&mut self.wakers)
        }

        /// Whether no task waits.
        pub fn is_empty(&self) -> bool {
            self.wakers.is_empty()
        }

        /// How many distinct tasks wait.
        pub fn len(&self) -> usize {
            self.wakers.len()
        }
    }

    /// A waker that wakes every task of a shared [`WakerSet`]: hand it to a primitive with one
    /// waker slot (`Context::from_waker(&fanout_waker(set))`) after registering the calling
    /// task in the set.
    pub fn fanout_waker(set: std::sync::Arc<std::sync::Mutex<WakerSet>>) -> Waker {
        Waker::from(std::sync::Arc::new(Fanout(set)))
    }

    struct Fanout(std::sync::Arc<std::sync::Mutex<WakerSet>>);

    impl std::task::Wake for Fanout {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            let wakers = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

/// Lets every task that is ready to run right now run first, then resumes the caller: the task
/// wakes itself and goes to the back of its worker's run queue.
///
/// Unlike `tokio::task::yield_now`, which defers the task until the worker has polled the I/O
/// driver (on Linux an `epoll_wait` system call per yield), this costs no system call: it is
/// for a connection's writer that waits one round for the frames other tasks are about to
/// queue. I/O is not starved: the runtime still polls the driver every few dozen tasks, and
/// whenever it runs out of tasks.
pub async fn yield_to_ready() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// A boxed, sendable future (the shape of every dynamic future in this crate).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a client stream delivers, in order: the response header, messages, then the end.
/// A trailers-only end (no header before it) is allowed; the core then reports an empty header.
#[derive(Debug)]
pub enum ClientEvent {
    /// The response header metadata. At most once, before any message.
    Header(Metadata),
    /// One encoded message.
    Message(Bytes),
    /// The stream ended: the final status (OK or the error: the server's, a reset, or
    /// `UNAVAILABLE` when the connection was lost) and the trailer metadata. Last event.
    End(Status, Metadata),
}

/// The client side of one stream. See the [module docs](self) for what the core guarantees.
pub trait ClientStreamRaw: Send + Sync + 'static {
    /// Ready when a message of `len` bytes may be sent now (`len` is exact when the message
    /// knows its encoded length, which generated types do, else 0): a socket transport waits
    /// while its write buffer is full, h2 reserves `len` bytes of flow-control capacity, shm
    /// waits for an arena slot of `len` bytes. An error means nothing more can be sent; the
    /// core then reports the stream's end if it knows it, else this error.
    fn poll_send_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>>;

    /// Encodes and sends one message. The core calls it only after `poll_send_ready` returned
    /// `Ready(Ok)`, never after [`ClientStreamRaw::close_send`] or the end.
    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status>;

    /// Waits for send capacity for `msg` and sends it, in one call: what the core calls for
    /// each message of a stream. The default is [`ClientStreamRaw::poll_send_ready`] with
    /// `msg`'s encoded length, then [`ClientStreamRaw::send`]; a transport overrides it to
    /// look at its stream state once per message instead of twice. On `Pending` nothing was
    /// sent and the core polls again with the same message. Same guarantees as `send`.
    fn poll_send(&self, cx: &mut Context<'_>, msg: &mut dyn Encodable) -> Poll<Result<(), Status>> {
        let len = msg.encoded_len().unwrap_or(0);
        std::task::ready!(self.poll_send_ready(cx, len))?;
        Poll::Ready(self.send(msg))
    }

    /// As [`ClientStreamRaw::poll_event`], and when it returns a message, it may also append
    /// up to `max` more to `more`: messages that are whole and ready now, so one call (one
    /// lock of the transport's receive state) hands out a burst instead of one call per
    /// message. Only after the header was delivered; an end the transport met behind them is
    /// reported by a later call, never instead of a message. The core hands the queued
    /// messages out in order before it polls again (unless the call ended locally: cancel,
    /// deadline). A transport appends only what it already holds in memory of its own, so
    /// the queue holds no more than the transport did. The default returns one event
    /// (`poll_event`).
    fn poll_event_many(
        &self,
        cx: &mut Context<'_>,
        more: &mut std::collections::VecDeque<Bytes>,
        max: usize,
    ) -> Poll<ClientEvent> {
        let _ = (more, max);
        self.poll_event(cx)
    }

    /// Half-closes the sending direction (the peer's receive ends with EOF after the messages
    /// already sent). Called at most once, never after a reset.
    fn close_send(&self) -> Result<(), Status>;

    /// The next event. Polled by one task (the receiving half); never again after
    /// [`ClientEvent::End`], nor after [`ClientStreamRaw::reset`].
    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<ClientEvent>;

    /// Resets the stream (cancel, deadline, a local failure) with `status`, which tells the
    /// transport the reason (`CANCELLED`, `DEADLINE_EXCEEDED`, ...). Called at most once and
    /// only before the core saw the end; the transport may already have received it (a race
    /// with the peer), in which case nothing goes on the wire.
    fn reset(&self, status: &Status);
}

/// How a server ends a stream: what [`ServerStreamRaw::finish`] sends, in one call.
pub struct Finish<'a> {
    /// The response header, if it was never sent (the transport sends it first, or folds it
    /// into a trailers-only response when there is no message).
    pub header: Option<Metadata>,
    /// A last message to send before the end (one-shot unary replies): the transport encodes
    /// it straight into its frame, with the header and trailer, in one write.
    pub message: Option<&'a mut dyn Encodable>,
    /// The final status.
    pub status: Status,
    /// Trailer metadata.
    pub trailer: Metadata,
}

impl std::fmt::Debug for Finish<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finish")
            .field("header", &self.header)
            .field("message", &self.message.as_ref().map(|m| m.encoded_len()))
            .field("status", &self.status)
            .field("trailer", &self.trailer)
            .finish()
    }
}

/// The server side of one stream. See the [module docs](self) for what the core guarantees.
pub trait ServerStreamRaw: Send + Sync + 'static {
    /// As [`ClientStreamRaw::poll_send_ready`].
    fn poll_send_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>>;

    /// Sends the response header metadata. Called at most once, before any message and before
    /// [`ServerStreamRaw::finish`] (which carries the header instead when this never ran).
    fn send_header(&self, header: Metadata) -> Result<(), Status>;

    /// Encodes and sends one message. Called only after `send_header` and a ready
    /// `poll_send_ready`, never after `finish`.
    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status>;

    /// Waits for send capacity for `msg` and sends it, in one call (as
    /// [`ClientStreamRaw::poll_send`]): the default is [`ServerStreamRaw::poll_send_ready`]
    /// with `msg`'s encoded length, then [`ServerStreamRaw::send`]. Called only after
    /// `send_header`, never after `finish`.
    fn poll_send(&self, cx: &mut Context<'_>, msg: &mut dyn Encodable) -> Poll<Result<(), Status>> {
        let len = msg.encoded_len().unwrap_or(0);
        std::task::ready!(self.poll_send_ready(cx, len))?;
        Poll::Ready(self.send(msg))
    }

    /// Whether this stream refuses, with an error and without sending anything, every
    /// [`ServerStreamRaw::send`] and [`ServerStreamRaw::poll_send`] that comes after
    /// [`ServerStreamRaw::finish`], deciding that under the same lock `finish` takes. The core
    /// then lets a message go to the transport without serialising it against `finish` itself
    /// once the header is out (one lock per message fewer) and reports such a refusal as the
    /// stream having finished; otherwise it guarantees the order of the two. Asked once per
    /// stream. The default is `false`.
    fn refuses_after_finish(&self) -> bool {
        false
    }

    /// Ends the stream: the header if never sent, an optional last message, the status and the
    /// trailer. Called exactly once (the core calls it for every stream, also after a reset,
    /// when the transport just releases the stream). If encoding the message fails the
    /// transport ends the stream with that error instead.
    fn finish(&self, finish: Finish<'_>);

    /// The next request message, `Ok(None)` after the client's half-close, or an error
    /// (`CANCELLED` when the client reset, `UNAVAILABLE` when the connection was lost). Not
    /// polled again after `Ok(None)` or an error.
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>>;

    /// As [`ServerStreamRaw::poll_recv`], and when it returns a message, it may also append
    /// up to `max` more to `more`: messages that are whole and ready now, so one call (one
    /// lock of the transport's receive state) hands out a burst instead of one call per
    /// message. What the core queues this way it hands to the handler in order before it
    /// polls again; an end or error the transport met behind them must be reported by a later
    /// call, never instead of a message. A transport appends only what it already holds in
    /// memory of its own (e.g. messages of the chunk it decodes), so the queue holds no more
    /// than the transport did. The default returns one message (`poll_recv`).
    fn poll_recv_many(
        &self,
        cx: &mut Context<'_>,
        more: &mut std::collections::VecDeque<Bytes>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, Status>> {
        let _ = (more, max);
        self.poll_recv(cx)
    }

    /// Ready with the reason once the stream was reset by the client or its connection was
    /// lost. Polled only by the server core, until ready.
    fn poll_reset(&self, cx: &mut Context<'_>) -> Poll<Status>;

    /// A typed value the transport offers the handler for this stream, made only when asked
    /// (per-call transport controls such as gRPC's message compression): `want` is an
    /// `Option<T>`, `None`, for the `T` a handler asked
    /// [`ServerContext::extension`](crate::ServerContext::extension) for; a transport that
    /// has a `T` for this stream sets it (`want.downcast_mut::<Option<T>>()`). Asked only when
    /// no layer or interceptor attached a `T`. The default offers nothing. Unlike
    /// [`IncomingStream::extensions`], a call whose handler never asks costs nothing.
    fn extension(&self, want: &mut dyn std::any::Any) {
        let _ = want;
    }
}

/// A transport that opens client streams (one per call).
pub trait ClientTransport: Send + Sync + 'static {
    /// Opens a stream for `ctx.method()` carrying `ctx.metadata()` and the deadline. It must
    /// not wait for anything from the server beyond connection setup: client-streaming calls
    /// return as soon as the stream is open.
    fn open(
        &self,
        ctx: &CallContext,
    ) -> BoxFuture<'static, Result<Arc<dyn ClientStreamRaw>, Status>>;

    /// Opens the stream at once, as [`ClientTransport::open`] would, when that needs no
    /// waiting (say, its connection is already up); `None` when it cannot, and the core then
    /// calls `open`. The core tries this first, which spares the hot path `open`'s boxed
    /// future. The default never opens at once.
    fn open_now(&self, ctx: &CallContext) -> Option<Result<Arc<dyn ClientStreamRaw>, Status>> {
        let _ = ctx;
        None
    }

    /// The `rpc.system` the client's spans and metrics name (`ttheader`, `grpc`, ...).
    fn rpc_system(&self) -> &'static str {
        "unknown"
    }
}

/// A stream a server transport accepted, before routing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IncomingStream {
    /// The service name as it came off the wire (full `pkg.Service` or bare `Service`; may be
    /// empty when the protocol has none).
    pub service: String,
    /// The method name.
    pub method: String,
    /// Request metadata.
    pub metadata: Metadata,
    /// The deadline the client sent, converted to a local instant.
    pub deadline: Option<Instant>,
    /// The peer.
    pub peer: Option<Peer>,
    /// The payload kind, when the protocol tells (routing picks the matching flavour).
    pub payload: Option<PayloadKind>,
    /// Typed values the transport hands to the handler (read with
    /// [`ServerContext::extension`](crate::ServerContext::extension)): per-call transport
    /// controls such as gRPC's message compression. Empty (no allocation) when unused.
    pub extensions: http::Extensions,
    /// The `rpc.system` the server's spans and metrics name (`ttheader`, `grpc`, ...).
    pub rpc_system: &'static str,
}

impl IncomingStream {
    /// A stream for `service`/`method` with no metadata, deadline or peer.
    pub fn new(service: impl Into<String>, method: impl Into<String>) -> IncomingStream {
        IncomingStream {
            service: service.into(),
            method: method.into(),
            metadata: Metadata::new(),
            deadline: None,
            peer: None,
            payload: None,
            extensions: http::Extensions::new(),
            rpc_system: "unknown",
        }
    }

    /// Adds a typed value for the handler (see [`IncomingStream::extensions`]).
    pub fn with_extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// Sets the `rpc.system` name (the transport's: `ttheader`, `grpc`, ...).
    pub fn with_rpc_system(mut self, system: &'static str) -> Self {
        self.rpc_system = system;
        self
    }

    /// Sets the payload kind.
    pub fn with_payload(mut self, payload: Option<PayloadKind>) -> Self {
        self.payload = payload;
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the deadline.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the peer.
    pub fn with_peer(mut self, peer: Option<Peer>) -> Self {
        self.peer = peer;
        self
    }
}

/// A client transport made from an address string (`tcp://HOST:PORT`, `unix:///path`, ...),
/// so a generated client is one line with the transport chosen by the caller:
/// `TestServiceClient::connect::<TtHeaderClient>("tcp://127.0.0.1:8888")?`.
///
/// Connecting is lazy: this parses and checks the address; connections are made on first use
/// (and re-made after a failure), so the error of an unreachable server comes from the call.
pub trait Connect: ClientTransport + Sized {
    /// A transport for `address` with default settings.
    fn connect(address: &str) -> Result<Self, Status>;
}

/// What a transport's server side does with a [`Server`](crate::Server): route a stream it
/// accepted, run its handler, and charge the server-wide byte budget. Implemented for
/// `Server` only (sealed); bring it into scope with `use rpc_core::transport::ServerExt`.
pub trait ServerExt: sealed::Sealed {
    /// Routes an accepted stream and runs its handler: polled once right here (a handler that
    /// completes at once finishes the stream before this returns), then, if it still waits, in
    /// a new task. Unknown service or method finishes the stream with `UNIMPLEMENTED`
    /// (transports map it to their wire form, e.g. a ttstream Trailer exception). Must be
    /// called within a tokio runtime.
    fn dispatch(&self, incoming: IncomingStream, raw: Arc<dyn ServerStreamRaw>);

    /// As [`ServerExt::dispatch`] for a stream the transport already routed with
    /// [`ServerExt::resolve_for`] or [`ServerExt::resolve_path`]; `incoming.service` and
    /// `incoming.method` are not used again (they may be left empty).
    fn dispatch_route(&self, route: Route, incoming: IncomingStream, raw: Arc<dyn ServerStreamRaw>);

    /// Finds the method for `service` and `method` as they came off the wire, as
    /// [`Server::resolve`](crate::Server::resolve) does, and when the transport knows the
    /// payload kind (ttstream protocol id, gRPC content-type) only methods of that kind match,
    /// so the thrift and protobuf flavours of one IDL service can be hosted side by side.
    fn resolve_for(
        &self,
        service: &str,
        method: &str,
        payload: Option<PayloadKind>,
    ) -> Result<Route, RouteError>;

    /// Routes a gRPC `:path` (`/echo.TestService/Echo`, or `/TestService/Echo`) with one hash
    /// lookup.
    fn resolve_path(&self, path: &str, payload: Option<PayloadKind>) -> Result<Route, RouteError>;

    /// The server-wide budget of buffered bytes
    /// ([`ServerLimits::max_buffered_bytes`](crate::ServerLimits::max_buffered_bytes)) that
    /// every connection of every listener serving this server charges.
    fn byte_budget(&self) -> &Arc<ByteBudget>;
}

/// Keeps [`ServerExt`] implemented by the core's `Server` only.
pub(crate) mod sealed {
    /// The seal.
    pub trait Sealed {}
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Wake, Waker};

    use super::waker::{fanout_waker, WakerSet};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn yield_to_ready_lets_the_ready_tasks_run_first_then_resumes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let order = Arc::new(Mutex::new(Vec::new()));
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let o = order.clone();
                    let me = tokio::task::spawn_local(async move {
                        o.lock().unwrap().push("before");
                        // Ready from now on: it runs before this task goes on.
                        let o2 = o.clone();
                        let other = tokio::task::spawn_local(async move {
                            o2.lock().unwrap().push("ready task");
                        });
                        super::yield_to_ready().await;
                        o.lock().unwrap().push("after");
                        other.await.unwrap();
                    });
                    me.await.unwrap();
                })
                .await;
            assert_eq!(*order.lock().unwrap(), ["before", "ready task", "after"]);
        });
    }

    #[test]
    fn a_fanout_waker_wakes_every_registered_task_once() {
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let set = Arc::new(Mutex::new(WakerSet::new()));
        // Two operations of two tasks share a primitive with one waker slot.
        set.lock().unwrap().register(&Context::from_waker(&wa));
        set.lock().unwrap().register(&Context::from_waker(&wa)); // deduplicated
        set.lock().unwrap().register(&Context::from_waker(&wb));
        assert_eq!(set.lock().unwrap().len(), 2);
        let slot = fanout_waker(set.clone());
        slot.wake_by_ref();
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert!(set.lock().unwrap().is_empty(), "a wake empties the set");
        slot.wake();
        assert_eq!(
            a.0.load(Ordering::SeqCst),
            1,
            "nothing registered, nothing woken"
        );
    }
}
