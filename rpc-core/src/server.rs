//! The server core: hosts services, routes incoming streams, runs handlers, and the server-side
//! typed handles.
//!
//! A transport accepts a stream, wraps it as a [`ServerStreamRaw`] and calls
//! [`ServerExt::dispatch`]. The server routes by service and method, builds the [`ServerContext`],
//! runs call middleware (tower layers, once per stream) and the handler, and finishes the stream
//! with the handler's outcome. The handler is polled once in the dispatching task: one that
//! completes at once (a unary handler that awaits nothing) costs no task; one that waits
//! continues in a task of its own:
//!
//! * `Ok` → trailer with OK status and the trailer metadata the handler set;
//! * `Err(status)` → the stream's final error;
//! * a panic → `INTERNAL` ("handler panicked"); the server keeps serving;
//! * client reset, lost connection or deadline → handles fail with the reason, `cancelled()`
//!   resolves, and the handler gets [`DEFAULT_CANCEL_GRACE`] to notice before it is dropped.
//!
//! # When the response header goes out
//!
//! The header (with the metadata set by [`ServerContext::set_header`]) is sent with the first
//! message, at the end, or by [`ServerContext::send_header`], whichever comes first, and **no
//! later than the moment a client-streaming or bidi handler waits for a request**: when its
//! `recv` finds no request ready, the header is sent before it waits. A client that waits for
//! the header before it sends (tonic's generated bidi call fed by a channel resolves only once
//! the header arrived) therefore never deadlocks against a handler that reads first. Header
//! metadata set before the first `recv` goes with it. A handler that wants to set header
//! metadata from what it reads calls [`ServerContext::hold_header`] before its first `recv`;
//! its header then goes with the first message or the end, as for the other modes. (Unary
//! and server-streaming handlers get their request before they run, so they never wait for
//! one.) This is core logic: every transport sees the same `send_header` call.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::Notify;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::cancel::{
    kitex_code, CallChild, CallParent, CancelKind, Cancellation, Children, Scoped,
};
use crate::codec::{Codec, Encodable, MsgCodec};
use crate::context::{CallContext, MethodDesc, Mode, PayloadKind, Peer, ServiceDesc};
use crate::events::{Observers, StreamObserver};
use crate::limits::{ByteBudget, ServerLimits};
use crate::metadata::Metadata;
use crate::middleware::{MessageMiddleware, RecvMiddleware, SendMiddleware};
use crate::observe::CallObserver;
use crate::route::Router;
pub use crate::route::{Route, RouteError};
use crate::status::{Error, Status};
use crate::stream::{impl_stream, End, Receiver, Sender};
use crate::transport::{BoxFuture, Finish, IncomingStream, ServerExt, ServerStreamRaw};

/// How long a handler may keep running after its stream was cancelled or its deadline passed,
/// so it can observe `cancelled()` or a failing `send`/`recv` and clean up, before the server
/// drops it. Short, because the client has already been answered.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(1);

/// A service a [`Server`] can host. Generated `XxxServer<T>` adapters implement it.
pub trait Service: Send + Sync + 'static {
    /// The service's static description (name and methods, in IDL order).
    fn descriptor(&self) -> &'static ServiceDesc;

    /// Runs the handler of `call.method_index()` to completion.
    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>>;
}

/// The tower service server call middleware wrap: runs one stream's handler.
pub type CallService = BoxCloneSyncService<IncomingCall, (), Status>;

/// Runs the unknown-method handler for a call (`ServerBuilder::unknown_method_handler`).
pub(crate) type Fallback =
    Arc<dyn Fn(IncomingCall) -> BoxFuture<'static, Result<(), Status>> + Send + Sync>;

/// The hosted services and the unknown-method handler: runs the handler a route names.
#[derive(Clone)]
struct Routed {
    services: Arc<[Arc<dyn Service>]>,
    fallback: Option<Fallback>,
}

impl Routed {
    fn run(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        if call.service_index == crate::route::FALLBACK_INDEX {
            return match &self.fallback {
                Some(f) => f(call),
                // Fallback routes are only made when a handler is registered.
                None => Box::pin(std::future::ready(Err(Status::unimplemented(format!(
                    "{}: unknown method",
                    call.ctx.method().path
                ))))),
            };
        }
        self.services[call.service_index].call(call)
    }
}

impl tower::Service<IncomingCall> for Routed {
    type Response = ();
    type Error = Status;
    type Future = BoxFuture<'static, Result<(), Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: IncomingCall) -> Self::Future {
        self.run(call)
    }
}

type LayerFn = Box<dyn FnOnce(CallService) -> CallService + Send>;

/// Builds a [`Server`].
pub struct ServerBuilder {
    services: Vec<Arc<dyn Service>>,
    fallback: Option<Fallback>,
    layers: Vec<LayerFn>,
    middleware: MessageMiddleware,
    observers: Vec<Arc<dyn StreamObserver>>,
    cancel_grace: Duration,
    limits: ServerLimits,
}

impl ServerBuilder {
    /// The limits every transport serving this server enforces (see [`crate::limits`]).
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Hosts a service (a generated `XxxServer` adapter).
    pub fn add_service(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Sets the handler of calls no hosted service routes (what
    /// `ServerBuilder::unknown_method_handler`, in `generic`, installs).
    pub(crate) fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// Wraps every stream's handler in a tower layer (call middleware: auth, tracing, metrics).
    /// It runs once per stream, around the whole handler; an `Err` ends the stream with that
    /// status without running the handler. The first added is the outermost.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<CallService> + Send + 'static,
        L::Service: tower::Service<IncomingCall, Response = (), Error = Status>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<IncomingCall>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner))
        }));
        self
    }

    /// Adds a closure interceptor: runs once per stream before the handler, sees the context
    /// (metadata, peer, deadline), may attach extensions for the handler
    /// ([`ServerContext::insert_extension`]) or refuse the call with a status (the handler
    /// never runs). It takes its place among the layers in registration order.
    pub fn interceptor(
        mut self,
        f: impl Fn(&ServerContext) -> Result<(), Status> + Send + Sync + 'static,
    ) -> Self {
        let f: ServerInterceptor = Arc::new(f);
        self.layers.push(Box::new(move |inner| {
            BoxCloneSyncService::new(ServerIntercept { inner, f })
        }));
        self
    }

    /// Adds a send middleware, run on every message any handler sends (first added = outermost).
    pub fn send_middleware(mut self, m: impl SendMiddleware) -> Self {
        self.middleware.push_send(Arc::new(m));
        self
    }

    /// Adds a recv middleware, run on every message any handler receives (first added =
    /// outermost).
    pub fn recv_middleware(mut self, m: impl RecvMiddleware) -> Self {
        self.middleware.push_recv(Arc::new(m));
        self
    }

    /// Adds a stream observer: told of every stream this server serves — its start, each
    /// message, the response header and the end (see [`crate::events`]). With none
    /// registered there is no cost.
    pub fn observer(mut self, observer: impl StreamObserver) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// How long a cancelled handler may keep running (default [`DEFAULT_CANCEL_GRACE`]).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// Builds the server.
    pub fn build(self) -> Server {
        let services: Arc<[Arc<dyn Service>]> = self.services.into();
        let descs: Vec<_> = services.iter().map(|s| s.descriptor()).collect();
        let router = Router::new(&descs);
        let routed = Routed {
            services,
            fallback: self.fallback,
        };
        let layered = if self.layers.is_empty() {
            None
        } else {
            let mut svc = BoxCloneSyncService::new(routed.clone());
            for layer in self.layers.into_iter().rev() {
                svc = layer(svc);
            }
            Some(svc)
        };
        Server {
            inner: Arc::new(ServerInner {
                routed,
                layered,
                middleware: self.middleware,
                observers: self.observers.into(),
                cancel_grace: self.cancel_grace,
                router,
                budget: ByteBudget::new(self.limits.max_buffered_bytes),
                limits: self.limits,
                active: AtomicUsize::new(0),
                idle: tokio::sync::Notify::new(),
                idle_waiters: AtomicUsize::new(0),
            }),
        }
    }
}

struct ServerInner {
    routed: Routed,
    layered: Option<CallService>,
    middleware: MessageMiddleware,
    observers: Observers,
    cancel_grace: Duration,
    router: Router,
    limits: ServerLimits,
    budget: Arc<ByteBudget>,
    active: AtomicUsize,
    idle: tokio::sync::Notify,
    idle_waiters: AtomicUsize,
}

/// Hosts services and runs their handlers for streams that transports accept. Cheap to clone;
/// every transport listener holds a clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self
            .inner
            .routed
            .services
            .iter()
            .map(|s| s.descriptor().full_name)
            .collect();
        f.debug_struct("Server")
            .field("services", &names)
            .field("active", &self.active_streams())
            .finish()
    }
}

impl Server {
    /// A builder.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            services: Vec::new(),
            fallback: None,
            layers: Vec::new(),
            middleware: MessageMiddleware::default(),
            observers: Vec::new(),
            cancel_grace: DEFAULT_CANCEL_GRACE,
            limits: ServerLimits::default(),
        }
    }

    /// The limits set on the builder.
    pub fn limits(&self) -> &ServerLimits {
        &self.inner.limits
    }

    /// The server-wide budget of buffered bytes ([`ServerLimits::max_buffered_bytes`]) that
    /// every connection of every listener serving this server charges.
    pub(crate) fn byte_budget(&self) -> &Arc<ByteBudget> {
        &self.inner.budget
    }

    /// Descriptions of the hosted services.
    pub fn services(&self) -> impl Iterator<Item = &'static ServiceDesc> + '_ {
        self.inner.routed.services.iter().map(|s| s.descriptor())
    }

    /// Finds the method for `service` and `method` as they came off the wire (one hash lookup
    /// each). `service` matches the fully-qualified name (`echo.TestService`) or the bare IDL
    /// name (`TestService`); an empty service name matches a method name that only one hosted
    /// service has. With an [unknown-method handler](ServerBuilder::unknown_method_handler),
    /// a name no hosted service has routes to it.
    pub fn resolve(&self, service: &str, method: &str) -> Result<Route, RouteError> {
        self.resolve_for(service, method, None)
    }

    /// As [`Server::resolve`], and when the transport knows the payload kind (ttstream protocol
    /// id, gRPC content-type), only methods of that kind match, so the thrift and protobuf
    /// flavours of one IDL service can be hosted side by side.
    pub(crate) fn resolve_for(
        &self,
        service: &str,
        method: &str,
        payload: Option<PayloadKind>,
    ) -> Result<Route, RouteError> {
        self.inner
            .router
            .resolve(service, method, payload)
            .or_else(|e| self.fallback_route(e, service, method, payload))
    }

    /// The route to the unknown-method handler for a name routing did not find, if there is
    /// a handler (else `e`). Names past the bound of run-time descriptors
    /// (`MAX_GENERIC_METHODS`) stay unknown.
    fn fallback_route(
        &self,
        e: RouteError,
        service: &str,
        method: &str,
        payload: Option<PayloadKind>,
    ) -> Result<Route, RouteError> {
        if self.inner.routed.fallback.is_none()
            || !matches!(
                e,
                RouteError::UnknownService(_) | RouteError::UnknownMethod { .. }
            )
        {
            return Err(e);
        }
        let payload = payload.unwrap_or(PayloadKind::Protobuf);
        match crate::interned::method(service, method, Mode::Bidi, payload) {
            Ok(desc) => Ok(Route::fallback(desc)),
            Err(status) => {
                tracing::warn!(service, method, %status, "no route to the unknown-method handler");
                Err(e)
            }
        }
    }

    /// Routes a gRPC `:path` (`/echo.TestService/Echo`, or `/TestService/Echo`) with one hash
    /// lookup.
    pub(crate) fn resolve_path(
        &self,
        path: &str,
        payload: Option<PayloadKind>,
    ) -> Result<Route, RouteError> {
        self.inner.router.resolve_path(path, payload).or_else(|e| {
            match crate::route::split_path(path) {
                Some((service, method)) => self.fallback_route(e, service, method, payload),
                None => Err(e),
            }
        })
    }

    /// Number of streams whose handlers are running.
    pub fn active_streams(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Waits until no handler is running (for graceful shutdown and tests).
    pub async fn wait_idle(&self) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        // SeqCst here and in `ActiveGuard::drop`: each side writes one counter and reads the
        // other, so at least one of them must see the other's write.
        self.inner.idle_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.inner.idle_waiters);
        loop {
            let notified = self.inner.idle.notified();
            if self.inner.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Routes an accepted stream and runs its handler: polled once right here (a handler that
    /// completes at once finishes the stream before this returns), then, if it still waits, in
    /// a new task. Unknown service or method
    /// finishes the stream with `UNIMPLEMENTED` (transports map it to their wire form, e.g. a
    /// ttstream Trailer exception). Must be called within a tokio runtime.
    pub(crate) fn dispatch(&self, incoming: IncomingStream, raw: Arc<dyn ServerStreamRaw>) {
        let route = match self.resolve_for(&incoming.service, &incoming.method, incoming.payload) {
            Ok(r) => r,
            Err(e) => {
                raw.finish(Finish {
                    header: Some(Metadata::new()),
                    message: None,
                    status: e.into(),
                    trailer: Metadata::new(),
                });
                return;
            }
        };
        self.dispatch_route(route, incoming, raw);
    }

    /// As [`ServerExt::dispatch`](crate::transport::ServerExt::dispatch) for a stream the transport already routed with
    /// [`Server::resolve`]; `incoming.service` and `incoming.method` are not used again (they
    /// may be left empty).
    pub(crate) fn dispatch_route(
        &self,
        route: Route,
        incoming: IncomingStream,
        raw: Arc<dyn ServerStreamRaw>,
    ) {
        let mut ctx = CallContext::new(route.method)
            .with_metadata(incoming.metadata)
            .with_deadline(incoming.deadline);
        if let Some(peer) = incoming.peer {
            ctx = ctx.with_peer(peer);
        }
        if !incoming.extensions.is_empty() {
            ctx.extensions_mut().extend(incoming.extensions);
        }
        let observe = CallObserver::server(&mut ctx, incoming.rpc_system, &self.inner.observers);
        // The call's extensions (the transport's and the trace context) move to their one
        // home, where the handler and layers read and add them: no copy per call.
        let extensions = Mutex::new(std::mem::take(ctx.extensions_mut()));
        // One allocation for the call: the context lives inside the shared state.
        let shared = Arc::new(ServerShared {
            extensions,
            ctx,
            unlocked_sends: raw.refuses_after_finish(),
            raw,
            middleware: self.inner.middleware.clone(),
            header: Mutex::new(Some(Metadata::new())),
            header_sent: AtomicBool::new(false),
            hold_header: AtomicBool::new(false),
            trailer: Mutex::new(Metadata::new()),
            local_cancel: OnceLock::new(),
            cancel_notify: Notify::new(),
            finished: Mutex::new(false),
            observe,
            children: Mutex::new(Children::default()),
        });
        let call = IncomingCall {
            ctx: ServerContext {
                shared: shared.clone(),
            },
            service_index: route.service_index,
            method_index: route.method_index,
        };
        let fut: BoxFuture<'static, Result<(), Status>> = match &self.inner.layered {
            None => self.inner.routed.run(call),
            Some(svc) => Box::pin(svc.clone().oneshot(call)),
        };
        // Observed: the handler runs inside the call's span and trace context, and as the
        // parent of the client calls it makes (cascading cancel).
        let fut = crate::observe::instrument(&shared.observe, fut);
        let fut = Scoped::new(shared.clone(), fut);
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        let guard = ActiveGuard(self.inner.clone());
        // First poll here, in the transport's task: a handler that completes at once (a
        // unary handler that does not wait for anything) finishes its stream now, without a
        // task of its own. Only one that is still pending is spawned; the spawned task polls it
        // again with its own waker (the wakers registered by this first poll are dropped, which
        // the `Future` contract allows: the latest poll's waker is the one that counts). The
        // handler always wins a tie with cancel or deadline in `run_stream` too (`biased`), so
        // completing here is the same outcome.
        let mut handler = AssertUnwindSafe(fut).catch_unwind();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(outcome) = handler.poll_unpin(&mut cx) {
            finish_outcome(&shared, outcome);
            drop(guard);
            return;
        }
        let grace = self.inner.cancel_grace;
        tokio::spawn(async move {
            run_stream(shared, handler, grace).await;
            drop(guard);
        });
    }
}

#[cfg(feature = "metrics")]
impl crate::observe::ServerGauges for Server {
    fn active_streams(&self) -> usize {
        Server::active_streams(self)
    }

    fn buffered_bytes(&self) -> usize {
        self.inner.budget.used()
    }
}

impl crate::transport::sealed::Sealed for Server {}

impl ServerExt for Server {
    fn dispatch(&self, incoming: IncomingStream, raw: Arc<dyn ServerStreamRaw>) {
        Server::dispatch(self, incoming, raw);
    }

    fn dispatch_route(
        &self,
        route: Route,
        incoming: IncomingStream,
        raw: Arc<dyn ServerStreamRaw>,
    ) {
        Server::dispatch_route(self, route, incoming, raw);
    }

    fn resolve_for(
        &self,
        service: &str,
        method: &str,
        payload: Option<PayloadKind>,
    ) -> Result<Route, RouteError> {
        Server::resolve_for(self, service, method, payload)
    }

    fn resolve_path(&self, path: &str, payload: Option<PayloadKind>) -> Result<Route, RouteError> {
        Server::resolve_path(self, path, payload)
    }

    fn byte_budget(&self) -> &Arc<ByteBudget> {
        Server::byte_budget(self)
    }
}

/// Ends the stream with the handler's outcome, unless a handler that returned `Ok` already
/// ended it (a unary reply finishes the stream as it is sent: no second OK status is built).
fn finish_outcome(
    shared: &ServerShared,
    outcome: Result<Result<(), Status>, Box<dyn std::any::Any + Send>>,
) {
    if matches!(outcome, Ok(Ok(()))) && *lock(&shared.finished) {
        return;
    }
    shared.finish(handler_status(shared, outcome));
}

/// What a handler's outcome (or its panic) ends the stream with.
fn handler_status(
    shared: &ServerShared,
    outcome: Result<Result<(), Status>, Box<dyn std::any::Any + Send>>,
) -> Status {
    match outcome {
        Ok(Ok(())) => Status::ok(),
        Ok(Err(status)) => status,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            tracing::error!(method = shared.ctx.method().path, panic = %what, "handler panicked");
            Error::HandlerPanic(what).into()
        }
    }
}

/// A handler future, its panics caught.
type Handler =
    futures::future::CatchUnwind<AssertUnwindSafe<Scoped<BoxFuture<'static, Result<(), Status>>>>>;

struct ActiveGuard(Arc<ServerInner>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        // Only `wait_idle` listens; skip the notify lock on the hot path when nobody does.
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.idle_waiters.load(Ordering::SeqCst) > 0
        {
            self.0.idle.notify_waiters();
        }
    }
}

/// Runs a handler future (already polled once) to the end of its stream (see the module docs
/// for the outcomes).
async fn run_stream(shared: Arc<ServerShared>, mut handler: Handler, grace: Duration) {
    let cancelled = {
        let shared = shared.clone();
        async move {
            let by_peer = async { upstream(poll_fn(|cx| shared.raw.poll_reset(cx)).await) };
            match shared.ctx.deadline() {
                None => by_peer.await,
                Some(d) => tokio::select! {
                    s = by_peer => s,
                    () = tokio::time::sleep_until(d) => {
                        Cancellation::new(CancelKind::Deadline, "", kitex_code::STREAM_TIMEOUT, "")
                            .into_status()
                    }
                },
            }
        }
    };
    tokio::select! {
        biased;
        outcome = &mut handler => finish_outcome(&shared, outcome),
        status = cancelled => {
            shared.cancel_locally(status.clone());
            shared.finish(status);
            // Give the handler a moment to observe the cancel through its handles; its
            // outcome no longer matters.
            let _ = tokio::time::timeout(grace, handler).await;
        }
    }
}

/// A reset the peer sent, as the handler sees it: a cancel by upstream, with the path and
/// code the transport read (a reset without them — gRPC's `RST_STREAM(CANCEL)` — is one too).
/// A lost connection stays `UNAVAILABLE`.
fn upstream(status: Status) -> Status {
    match status.cancellation() {
        Some(c) if c.kind() == CancelKind::Upstream => status,
        Some(c) => c
            .received_as(CancelKind::Upstream)
            .into_status_with(status.code()),
        None if status.code() == crate::status::Code::Cancelled => Cancellation::new(
            CancelKind::Upstream,
            "",
            status.transport_code().unwrap_or(kitex_code::USER_CANCEL),
            status.message(),
        )
        .into_status(),
        None => status,
    }
}

/// What the server core, the context and the handles of one stream share.
struct ServerShared {
    /// Shared with message middleware through [`SharedCtx`] (a reference count per message,
    /// never a deep clone).
    ctx: CallContext,
    /// Typed values a layer or interceptor hands to the handler.
    extensions: Mutex<http::Extensions>,
    raw: Arc<dyn ServerStreamRaw>,
    middleware: MessageMiddleware,
    /// The response header until it is sent (`None` once sent).
    header: Mutex<Option<Metadata>>,
    header_sent: AtomicBool,
    /// [`ServerContext::hold_header`]: a waiting `recv` does not send the header.
    hold_header: AtomicBool,
    trailer: Mutex<Metadata>,
    /// Set when the stream was cancelled or its deadline passed; handles fail with it.
    local_cancel: OnceLock<Status>,
    cancel_notify: Notify,
    /// Whether the stream was finished. Held while sending, so no message or header ever
    /// reaches the transport after `finish` (the raw-stream contract), even from a split
    /// sender still running in another task when the handler returns; not held for a
    /// message once the header is out when the transport refuses what comes after `finish`
    /// itself (`unlocked_sends`).
    finished: Mutex<bool>,
    /// [`ServerStreamRaw::refuses_after_finish`].
    unlocked_sends: bool,
    /// Span and metrics of the call (nothing when nobody observes).
    observe: CallObserver,
    /// Client streams the handler opened (cascading cancel).
    children: Mutex<Children>,
}

impl CallParent for ServerShared {
    fn adopt(&self, child: Weak<dyn CallChild>) -> Result<(), Status> {
        lock(&self.children).adopt(child)
    }

    fn ended(&self) -> Option<Status> {
        lock(&self.children).ended().cloned()
    }

    fn service_name(&self) -> &'static str {
        self.ctx.method().service
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data inconsistent (plain
    // replace/take), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ServerShared {
    /// Sends the header if it was not sent yet. The caller holds the `finished` lock.
    fn ensure_header_sent_locked(&self, finished: bool) -> Result<(), Status> {
        if finished {
            return Err(Error::StreamFinished.into());
        }
        if self.header_sent.load(Ordering::Acquire) {
            return Ok(());
        }
        let header = lock(&self.header).take();
        self.header_sent.store(true, Ordering::Release);
        match header {
            Some(h) => {
                self.observe.header(&h);
                self.raw.send_header(h)
            }
            None => Ok(()),
        }
    }

    fn ensure_header_sent(&self) -> Result<(), Status> {
        let finished = lock(&self.finished);
        self.ensure_header_sent_locked(*finished)
    }

    /// A handler's `recv` is about to wait: sends the header unless it is out already, held
    /// ([`ServerContext::hold_header`]) or the stream has ended (see the module docs). Two
    /// atomic loads once the header is out.
    fn send_header_before_waiting(&self) -> Result<(), Status> {
        if self.header_sent.load(Ordering::Acquire) || self.hold_header.load(Ordering::Acquire) {
            return Ok(());
        }
        let finished = lock(&self.finished);
        if *finished {
            return Ok(());
        }
        self.ensure_header_sent_locked(false)
    }

    /// Whether a message may go to the transport without the `finished` lock: the
    /// transport refuses it after `finish` itself, and no header has to go first.
    fn unlocked_send(&self) -> bool {
        self.unlocked_sends && self.header_sent.load(Ordering::Acquire)
    }

    /// A transport's refusal of an unlocked send: the stream finished (the core's error for
    /// that), or the transport's own error.
    fn refused(&self, e: Status) -> Status {
        if *lock(&self.finished) {
            Error::StreamFinished.into()
        } else {
            e
        }
    }

    /// Sends one message (and the header before it, if needed).
    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        if self.unlocked_send() {
            return self.raw.send(msg).map_err(|e| self.refused(e));
        }
        let finished = lock(&self.finished);
        self.ensure_header_sent_locked(*finished)?;
        self.raw.send(msg)
    }

    /// Waits for send capacity and sends one message (the header before it, if needed), with
    /// the transport's state taken once (see [`ServerStreamRaw::poll_send`]).
    fn poll_send(&self, cx: &mut Context<'_>, msg: &mut dyn Encodable) -> Poll<Result<(), Status>> {
        if self.unlocked_send() {
            return self.raw.poll_send(cx, msg).map_err(|e| self.refused(e));
        }
        let finished = lock(&self.finished);
        self.ensure_header_sent_locked(*finished)?;
        self.raw.poll_send(cx, msg)
    }

    fn cancel_locally(&self, status: Status) {
        // The handler's own handles fail first, then the cascade: a handler that sees its
        // downstream call fail finds its own call already cancelled.
        let _ = self.local_cancel.set(status.clone());
        self.cancel_notify.notify_waiters();
        self.end_children(&status);
    }

    /// The call ended with `reason`: every client stream the handler opened and has not
    /// finished is reset, the reason cascading down (once; later calls do nothing).
    fn end_children(&self, reason: &Status) {
        let children = lock(&self.children).end(reason);
        crate::cancel::end_children(children, reason);
    }

    /// Ends the stream (once; later calls return `false`), with an optional last message.
    /// `message` is the last message and its length (for the observers: header, message
    /// and end are seen in wire order).
    fn finish_with(&self, status: Status, message: Option<(&mut dyn Encodable, usize)>) -> bool {
        let mut finished = lock(&self.finished);
        if *finished {
            return false;
        }
        *finished = true;
        let header = if self.header_sent.swap(true, Ordering::AcqRel) {
            None
        } else {
            lock(&self.header).take()
        };
        let trailer = std::mem::take(&mut *lock(&self.trailer));
        if let Some(h) = &header {
            self.observe.header(h);
        }
        let message = message.map(|(m, len)| {
            self.observe.sent(len);
            m
        });
        self.observe.end(&status);
        self.raw.finish(Finish {
            header,
            message,
            status,
            trailer,
        });
        drop(finished);
        // The handler's call is over: streams it opened and left open end with it (Kitex
        // 12012). Nothing to do when it opened none.
        if lock(&self.children).has_children() {
            self.end_children(
                &Cancellation::new(
                    CancelKind::HandlerReturned,
                    "",
                    kitex_code::HANDLER_RETURNED,
                    "",
                )
                .into_status(),
            );
        }
        true
    }

    fn finish(&self, status: Status) {
        self.finish_with(status, None);
    }

    fn check_cancel(&self) -> Result<(), Status> {
        match self.local_cancel.get() {
            Some(s) => Err(s.clone()),
            None => Ok(()),
        }
    }
}

/// A handler's view of its call: the request context, response metadata, and cancellation.
#[derive(Clone)]
pub struct ServerContext {
    shared: Arc<ServerShared>,
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext")
            .field("call", &self.shared.ctx)
            .finish()
    }
}

impl ServerContext {
    /// The call context (method, peer, request metadata, deadline).
    pub fn call(&self) -> &CallContext {
        &self.shared.ctx
    }

    /// The method being served.
    pub fn method(&self) -> &'static MethodDesc {
        self.shared.ctx.method()
    }

    /// Request metadata.
    pub fn metadata(&self) -> &Metadata {
        self.shared.ctx.metadata()
    }

    /// The peer, if the transport knows it.
    pub fn peer(&self) -> Option<&Peer> {
        self.shared.ctx.peer()
    }

    /// The deadline the client set.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.shared.ctx.deadline()
    }

    /// Adds response header metadata. Fails with `FAILED_PRECONDITION` once the header was
    /// sent (by the first message, by [`ServerContext::send_header`], by the end, or — in a
    /// client-streaming or bidi handler — by the first `recv` that had to wait, unless
    /// [`ServerContext::hold_header`] was called; see the [module docs](self)).
    pub fn set_header(
        &self,
        key: impl Into<String>,
        value: impl Into<crate::MetadataValue>,
    ) -> Result<(), Status> {
        match lock(&self.shared.header).as_mut() {
            Some(h) if !self.shared.header_sent.load(Ordering::Acquire) => {
                h.append(key, value);
                Ok(())
            }
            _ => Err(Error::HeaderAlreadySent.into()),
        }
    }

    /// Sends the response header now (otherwise it goes with the first message, the end, or
    /// before a client-streaming or bidi handler's `recv` waits).
    pub fn send_header(&self) -> Result<(), Status> {
        self.shared.check_cancel()?;
        self.shared.ensure_header_sent()
    }

    /// Keeps the response header back when a client-streaming or bidi handler's `recv` waits
    /// for a request (the default sends it then, see the [module docs](self)): it goes with the
    /// first message, at the end, or on [`ServerContext::send_header`], so header metadata may
    /// be set from what was read. Call it before the first `recv`.
    ///
    /// Beware: a client that waits for the header before it sends anything (tonic's generated
    /// bidi call fed by a channel) waits forever for a handler that holds the header and reads
    /// first.
    pub fn hold_header(&self) {
        self.shared.hold_header.store(true, Ordering::Release);
    }

    /// Adds trailer metadata, sent when the handler returns (OK or error).
    pub fn set_trailer(&self, key: impl Into<String>, value: impl Into<crate::MetadataValue>) {
        lock(&self.shared.trailer).append(key, value);
    }

    /// Resolves with the reason once the client cancelled, the connection was lost, or the
    /// deadline passed. Cancel-safe; any number of these may be awaited at once.
    pub async fn cancelled(&self) -> Status {
        loop {
            let notified = self.shared.cancel_notify.notified();
            if let Some(s) = self.shared.local_cancel.get() {
                return s.clone();
            }
            notified.await;
        }
    }

    /// A copy of the extension of type `T` a layer or interceptor attached to this call
    /// ([`ServerContext::insert_extension`]), or else the transport put in the call
    /// ([`IncomingStream::extensions`](crate::transport::IncomingStream::extensions)) or
    /// offers for it (such as gRPC's `MessageCompression`), if any.
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        if let Some(v) = lock(&self.shared.extensions).get::<T>() {
            return Some(v.clone());
        }
        let mut want: Option<T> = None;
        self.shared.raw.extension(&mut want);
        want
    }

    /// Attaches a typed value to this call for the handler (and later layers) to read with
    /// [`ServerContext::extension`]; returns the previous value of that type. Never sent.
    pub fn insert_extension<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        lock(&self.shared.extensions).insert(value)
    }

    /// Whether the stream has been cancelled (see [`ServerContext::cancelled`]).
    pub fn is_cancelled(&self) -> bool {
        self.shared.local_cancel.get().is_some()
    }

    /// Runs `fut` with this call as the parent of the client calls it makes (cascading
    /// cancel, [`crate::cancel`]): for a task the handler spawns. The handler itself runs so
    /// already.
    pub fn scope<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        Scoped::new(self.as_parent(), fut)
    }

    /// This call as the parent of client calls ([`crate::cancel::Parent::Of`]).
    pub(crate) fn as_parent(&self) -> Arc<dyn CallParent> {
        self.shared.clone()
    }
}

impl From<&ServerContext> for crate::cancel::Parent {
    /// Joins the client call to this server call ([`crate::cancel::Parent::Of`]).
    fn from(ctx: &ServerContext) -> Self {
        crate::cancel::Parent::Of(crate::cancel::CallHandle(ctx.as_parent()))
    }
}

/// One accepted stream, routed, on its way to a handler: what call middleware and generated
/// service adapters receive. Its `unary`, `client_streaming`, `server_streaming` and `bidi`
/// run a handler of that mode with the mode's handle.
pub struct IncomingCall {
    ctx: ServerContext,
    service_index: usize,
    method_index: usize,
}

impl std::fmt::Debug for IncomingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingCall")
            .field("ctx", &self.ctx)
            .finish()
    }
}

impl IncomingCall {
    /// The handler's context.
    pub fn context(&self) -> &ServerContext {
        &self.ctx
    }

    /// Index of the method in its service's descriptor.
    pub fn method_index(&self) -> usize {
        self.method_index
    }

    fn end(&self) -> ServerEnd {
        ServerEnd {
            shared: self.ctx.shared.clone(),
            sending: 0,
            header_on_wait: false,
            ready: VecDeque::new(),
            batch: 0,
        }
    }

    /// The end of a handler's request stream: a `recv` that waits sends the header first,
    /// and requests the transport holds ready are taken a burst at a time (not when recv
    /// middleware run: a middleware's receive may run on a fork of this end, which must
    /// not find requests queued here).
    fn recv_end(&self) -> ServerEnd {
        let batch = if self.ctx.shared.middleware.recv.is_empty() {
            RECV_BATCH
        } else {
            0
        };
        ServerEnd {
            header_on_wait: true,
            batch,
            ..self.end()
        }
    }

    /// Runs a unary handler: receives the request, calls `f`, sends its response.
    pub async fn unary<C, Req, Res, F, Fut>(self, f: F) -> Result<(), Status>
    where
        C: Codec<Req> + Codec<Res>,
        Req: Send + Sync + 'static,
        Res: Send + Sync + 'static,
        F: FnOnce(ServerContext, Req) -> Fut,
        Fut: Future<Output = Result<Res, Status>>,
    {
        let req = self.first_request::<C, Req>().await?;
        let res = f(self.ctx.clone(), req).await?;
        self.respond::<C, Res>(res).await
    }

    /// Runs a client-streaming handler: `f` gets the request stream and returns the response.
    pub async fn client_streaming<C, Req, Res, F, Fut>(self, f: F) -> Result<(), Status>
    where
        C: Codec<Req> + Codec<Res>,
        Req: Send + Sync + 'static,
        Res: Send + Sync + 'static,
        F: FnOnce(ServerContext, ClientStreamingServer<Req>) -> Fut,
        Fut: Future<Output = Result<Res, Status>>,
    {
        let stream = ClientStreamingServer {
            rx: Receiver::new(self.recv_end(), MsgCodec::of::<C>()),
        };
        let res = f(self.ctx.clone(), stream).await?;
        self.respond::<C, Res>(res).await
    }

    /// Runs a server-streaming handler: receives the request, `f` gets it and the response
    /// stream.
    pub async fn server_streaming<C, Req, Res, F, Fut>(self, f: F) -> Result<(), Status>
    where
        C: Codec<Req> + Codec<Res>,
        Req: Send + Sync + 'static,
        Res: Send + Sync + 'static,
        F: FnOnce(ServerContext, Req, ServerStreamingServer<Res>) -> Fut,
        Fut: Future<Output = Result<(), Status>>,
    {
        let req = self.first_request::<C, Req>().await?;
        let stream = ServerStreamingServer {
            tx: Sender::new(self.end(), MsgCodec::of::<C>()),
        };
        f(self.ctx.clone(), req, stream).await
    }

    /// Runs a bidirectional handler.
    pub async fn bidi<C, Req, Res, F, Fut>(self, f: F) -> Result<(), Status>
    where
        C: Codec<Req> + Codec<Res>,
        Req: Send + Sync + 'static,
        Res: Send + Sync + 'static,
        F: FnOnce(ServerContext, BidiStreamingServer<Req, Res>) -> Fut,
        Fut: Future<Output = Result<(), Status>>,
    {
        let stream = BidiStreamingServer {
            rx: ClientStreamingServer {
                rx: Receiver::new(self.recv_end(), MsgCodec::of::<C>()),
            },
            tx: ServerStreamingServer {
                tx: Sender::new(self.end(), MsgCodec::of::<C>()),
            },
        };
        f(self.ctx.clone(), stream).await
    }

    async fn first_request<C: Codec<Req>, Req: Send + Sync + 'static>(
        &self,
    ) -> Result<Req, Status> {
        let mut rx = Receiver::<Req, _>::new(self.end(), MsgCodec::of::<C>());
        rx.recv().await?.ok_or_else(|| Error::MissingRequest.into())
    }

    /// Sends the one response and ends the stream with OK in the same transport call.
    async fn respond<C: Codec<Res>, Res: Send + Sync + 'static>(
        &self,
        res: Res,
    ) -> Result<(), Status> {
        let mut tx = Sender::new_last(self.end(), MsgCodec::of::<C>());
        tx.send(res).await
    }

    /// The mode of the method (for adapters that dispatch generically).
    pub fn mode(&self) -> Mode {
        self.ctx.method().mode
    }
}

/// Requests a handler's request stream takes from its transport in one call beyond the first
/// ([`ServerStreamRaw::poll_recv_many`]): a burst of small messages costs one call and one
/// lock of the transport's receive state per this many. The transport hands out only
/// messages it already holds (for gRPC: of the DATA chunk it is decoding), so the queue
/// holds no memory the transport did not; 32 entries are 1 KiB per stream, allocated on the
/// first burst.
const RECV_BATCH: usize = 32;

/// The server's view of a stream for one handle.
pub(crate) struct ServerEnd {
    shared: Arc<ServerShared>,
    /// The length of the message being sent (from `poll_send_ready`), for metrics.
    sending: usize,
    /// A handler's request stream: a `recv` that waits sends the header first.
    header_on_wait: bool,
    /// Requests taken from the transport and not yet handed out (see [`RECV_BATCH`]).
    ready: VecDeque<Bytes>,
    /// How many requests one call to the transport may add to `ready` (0: one at a time).
    batch: usize,
}

/// The call context of a server stream, owned through its shared state (what message
/// middleware hold while they run).
pub(crate) struct SharedCtx(Arc<ServerShared>);

impl std::ops::Deref for SharedCtx {
    type Target = CallContext;

    fn deref(&self) -> &CallContext {
        &self.0.ctx
    }
}

impl End for ServerEnd {
    type Ctx = SharedCtx;
    fn ctx(&self) -> SharedCtx {
        SharedCtx(self.shared.clone())
    }
    fn middleware(&self) -> &MessageMiddleware {
        &self.shared.middleware
    }
    fn poll_send_ready(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        self.sending = len;
        self.shared.check_cancel()?;
        self.shared
            .raw
            .poll_send_ready(cx, len)
            .map_err(|e| self.prefer_cancel(e))
    }
    fn start_send(&mut self, msg: &mut dyn Encodable) -> Result<(), Status> {
        self.shared.check_cancel()?;
        self.shared.send(msg)?;
        self.shared.observe.sent(self.sending);
        Ok(())
    }
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        msg: &mut dyn Encodable,
        len: usize,
    ) -> Poll<Result<(), Status>> {
        self.shared.check_cancel()?;
        std::task::ready!(self.shared.poll_send(cx, msg)).map_err(|e| self.prefer_cancel(e))?;
        self.shared.observe.sent(len);
        Poll::Ready(Ok(()))
    }
    fn start_send_last(&mut self, msg: &mut dyn Encodable) -> Result<(), Status> {
        self.shared.check_cancel()?;
        // Counted inside, after the header and before the end is recorded.
        if self
            .shared
            .finish_with(Status::ok(), Some((msg, self.sending)))
        {
            Ok(())
        } else {
            Err(Error::StreamFinished.into())
        }
    }
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        self.shared.check_cancel()?;
        if let Some(b) = self.ready.pop_front() {
            self.shared.observe.received(b.len());
            return Poll::Ready(Ok(Some(b)));
        }
        let got = if self.batch > 0 {
            self.shared
                .raw
                .poll_recv_many(cx, &mut self.ready, self.batch)
        } else {
            self.shared.raw.poll_recv(cx)
        }
        .map_err(|e| self.prefer_cancel(e));
        match &got {
            Poll::Ready(Ok(Some(b))) => self.shared.observe.received(b.len()),
            Poll::Pending if self.header_on_wait => {
                // About to wait for a request: the header goes out first (module docs).
                if let Err(e) = self.shared.send_header_before_waiting() {
                    return Poll::Ready(Err(self.prefer_cancel(e)));
                }
            }
            _ => {}
        }
        got
    }
    fn recv_ended(&self) {}
    fn fail(&self, status: &Status) {
        self.shared.cancel_locally(status.clone());
    }
    fn abandon(&self) {}
    fn fork(&self) -> Self {
        ServerEnd {
            shared: self.shared.clone(),
            sending: 0,
            header_on_wait: self.header_on_wait,
            ready: VecDeque::new(),
            batch: 0,
        }
    }
}

impl_stream!(ClientStreamingServer<Req>, Req, rx);
impl_stream!(BidiStreamingServer<Req, Res>, Req, rx.rx);

impl ServerEnd {
    /// After a local cancel (deadline), report that rather than the transport's "finished".
    ///
    /// A reset from the peer that reaches the handler through one of its handles (before the
    /// core's own watch saw it) cancels the call here first, so the streams the handler opened
    /// get the cascade (with the path so far) before the handler can react to the error —
    /// dropping its downstream call, say, which alone would read as its own user cancel.
    fn prefer_cancel(&self, e: Status) -> Status {
        if let Some(local) = self.shared.local_cancel.get() {
            return local.clone();
        }
        if e.cancellation().is_some() || e.code() == crate::status::Code::Cancelled {
            let reason = upstream(e);
            self.shared.cancel_locally(reason.clone());
            return reason;
        }
        e
    }
}

/// The server's handle of a client-streaming call (grpc-go's `ClientStreamingServer`): the
/// request stream a handler `recv`s from; also the receiving half of a split
/// [`BidiStreamingServer`]. The client's side is [`crate::ClientStreamingClient`].
pub struct ClientStreamingServer<Req: Send + Sync + 'static> {
    rx: Receiver<Req, ServerEnd>,
}

impl<Req: Send + Sync + 'static> ClientStreamingServer<Req> {
    /// The next request; `Ok(None)` after the client's half-close. After the end or an error,
    /// returns the same outcome again. When no request is ready it sends the response header
    /// before it waits, unless [`ServerContext::hold_header`] was called (see the
    /// [module docs](self)).
    pub async fn recv(&mut self) -> Result<Option<Req>, Status> {
        self.rx.recv().await
    }

    /// The handler's context.
    pub fn context(&self) -> ServerContext {
        ServerContext {
            shared: self.rx.end.shared.clone(),
        }
    }
}

/// The server's handle of a server-streaming call: the response stream a handler `send`s
/// to; also the sending half of a split [`BidiStreamingServer`]. The client's side is
/// [`crate::ServerStreamingClient`].
pub struct ServerStreamingServer<Res: Send + Sync + 'static> {
    tx: Sender<Res, ServerEnd>,
}

impl<Res: Send + Sync + 'static> ServerStreamingServer<Res> {
    /// Sends one response (waits while the send buffer is full). The first send also sends
    /// the response header.
    pub async fn send(&mut self, msg: Res) -> Result<(), Status> {
        self.tx.send(msg).await
    }

    /// Sends every response of `msgs` (any `futures::Stream`); stops at the first error.
    pub async fn send_all(
        &mut self,
        msgs: impl futures::Stream<Item = Res> + Send,
    ) -> Result<(), Status> {
        self.tx.send_all(msgs).await
    }

    /// The handler's context.
    pub fn context(&self) -> ServerContext {
        ServerContext {
            shared: self.tx.end.shared.clone(),
        }
    }
}

/// The server's handle of a bidirectional streaming call: `recv` requests and `send`
/// responses, or split them. The client's side is [`crate::BidiStreamingClient`].
pub struct BidiStreamingServer<Req: Send + Sync + 'static, Res: Send + Sync + 'static> {
    rx: ClientStreamingServer<Req>,
    tx: ServerStreamingServer<Res>,
}

impl<Req: Send + Sync + 'static, Res: Send + Sync + 'static> BidiStreamingServer<Req, Res> {
    /// The next request; `Ok(None)` after the client's half-close. Sends the response header
    /// before it waits, as [`ClientStreamingServer::recv`] does.
    pub async fn recv(&mut self) -> Result<Option<Req>, Status> {
        self.rx.recv().await
    }

    /// Sends one response.
    pub async fn send(&mut self, msg: Res) -> Result<(), Status> {
        self.tx.send(msg).await
    }

    /// Sends every response of `msgs` (any `futures::Stream`); stops at the first error.
    pub async fn send_all(
        &mut self,
        msgs: impl futures::Stream<Item = Res> + Send,
    ) -> Result<(), Status> {
        self.tx.send_all(msgs).await
    }

    /// Splits into the two directions so they can run in different tasks. The stream still ends
    /// when the handler returns; handles used after that fail with an error.
    pub fn into_split(self) -> (ServerStreamingServer<Res>, ClientStreamingServer<Req>) {
        (self.tx, self.rx)
    }

    /// The handler's context.
    pub fn context(&self) -> ServerContext {
        self.rx.context()
    }
}

/// A server interceptor: sees the incoming call (metadata, peer, deadline), may attach
/// extensions for the handler, or refuse the call with a status (the handler never runs).
/// Also at [`crate::intercept::ServerInterceptor`].
pub type ServerInterceptor = Arc<dyn Fn(&ServerContext) -> Result<(), Status> + Send + Sync>;

/// The tower service a server interceptor becomes.
#[derive(Clone)]
pub(crate) struct ServerIntercept<S> {
    pub(crate) inner: S,
    pub(crate) f: ServerInterceptor,
}

impl<S> tower::Service<IncomingCall> for ServerIntercept<S>
where
    S: tower::Service<IncomingCall, Response = (), Error = Status>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Status;
    type Future = BoxFuture<'static, Result<(), Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: IncomingCall) -> Self::Future {
        match (self.f)(call.context()) {
            Ok(()) => Box::pin(self.inner.call(call)),
            Err(status) => Box::pin(std::future::ready(Err(status))),
        }
    }
}
