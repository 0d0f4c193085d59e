//! The client core that generated clients wrap, and the client-side typed handles.
//!
//! | mode | call | handle |
//! |---|---|---|
//! | unary | [`Client::unary`] | — ([`WithMetadata`]) |
//! | client streaming | [`Client::client_streaming`] | [`ClientStreamingClient`]: `send`, `close_and_recv` |
//! | server streaming | [`Client::server_streaming`] | [`ServerStreamingClient`]: `recv` |
//! | bidi | [`Client::bidi`] | [`BidiStreamingClient`]: `send`, `close_send`, `recv`, `into_split` |
//!
//! Dropping a handle before its stream ended, calling `cancel()`, or passing the deadline resets
//! the stream; the server observes it within milliseconds. The deadline covers the whole stream.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::cancel::{CallChild, CancelKind, Cancellation, Parent, TimeoutConfig};
use crate::codec::{Codec, Encodable, MsgCodec};
use crate::context::{CallCancel, CallContext, CallOptions, MethodDesc};
use crate::events::{Observers, StreamObserver};
use crate::metadata::Metadata;
pub use crate::metadata::WithMetadata;
use crate::middleware::{MessageMiddleware, RecvMiddleware, SendMiddleware};
use crate::observe::CallObserver;
use crate::status::{Error, Status};
use crate::stream::{impl_stream, End, Receiver, Sender};
use crate::transport::{BoxFuture, ClientEvent, ClientStreamRaw, ClientTransport};
use crate::unary::{UnaryRequest, UnaryResponse, UnaryService};

/// A stream opened by the transport, as seen by client call middleware.
#[derive(Clone)]
pub struct OpenStream {
    /// The context the stream was opened with (after call middleware changed it).
    pub ctx: CallContext,
    /// The raw stream.
    pub stream: Arc<dyn ClientStreamRaw>,
}

impl std::fmt::Debug for OpenStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStream")
            .field("ctx", &self.ctx)
            .finish()
    }
}

/// The tower service client call middleware wrap: opens one stream per call.
pub type OpenService = BoxCloneSyncService<CallContext, OpenStream, Status>;

/// The innermost open service: asks the transport.
#[derive(Clone)]
struct TransportOpen(Arc<dyn ClientTransport>);

impl tower::Service<CallContext> for TransportOpen {
    type Response = OpenStream;
    type Error = Status;
    type Future = BoxFuture<'static, Result<OpenStream, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ctx: CallContext) -> Self::Future {
        let open = self.0.open(&ctx);
        Box::pin(async move {
            let stream = open.await?;
            Ok(OpenStream { ctx, stream })
        })
    }
}

type UnaryLayerFn = Box<dyn FnOnce(UnaryService) -> UnaryService + Send>;

/// Builds a [`Client`].
pub struct ClientBuilder {
    transport: Arc<dyn ClientTransport>,
    layers: Vec<Box<dyn FnOnce(OpenService) -> OpenService + Send>>,
    unary_layers: Vec<UnaryLayerFn>,
    middleware: MessageMiddleware,
    observers: Vec<Arc<dyn StreamObserver>>,
    timeout: Option<Duration>,
    method_timeouts: HashMap<String, Duration>,
    metadata: Metadata,
    cancel: ClientCancel,
}

/// The client's cancel settings ([`crate::cancel`]).
#[derive(Debug, Clone, Default)]
struct ClientCancel {
    from_service: Option<Arc<str>>,
    stream_timeout: Option<Duration>,
    recv_timeout: Option<TimeoutConfig>,
}

impl ClientBuilder {
    /// Wraps stream opening in a tower layer (call middleware: auth, tracing, metrics, routing).
    /// Layers run once per call or stream open; the first added is the outermost.
    ///
    /// A layer sees the open, not the call: a layer that times out its own future (tower's
    /// `timeout`, which also returns a `BoxError` rather than a [`Status`]) would bound only the
    /// connect and the stream's opening. Timeouts that bound the whole call or stream, in
    /// every mode, are [`timeout`](Self::timeout), [`method_timeout`](Self::method_timeout)
    /// and [`CallOptions::timeout`] (the deadline, sent to the server) and
    /// [`stream_timeout`](Self::stream_timeout) (this client's own limit); a layer may also
    /// tighten the deadline with [`CallContext::set_deadline`], which then bounds the whole
    /// call.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<OpenService> + Send + 'static,
        L::Service: tower::Service<CallContext, Response = OpenStream, Error = Status>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<CallContext>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner))
        }));
        self
    }

    /// Wraps every unary call in a tower layer that sees it whole: the request message
    /// ([`UnaryRequest::message`]), then the response or the final status — for retries,
    /// status metrics, auth. Unary layers run outside the stream layers (each attempt opens its
    /// own stream); the first added is the outermost. See [`crate::unary`].
    pub fn unary_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<UnaryService> + Send + 'static,
        L::Service: tower::Service<UnaryRequest, Response = UnaryResponse, Error = Status>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<UnaryRequest>>::Future: Send + 'static,
    {
        self.unary_layers.push(Box::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner))
        }));
        self
    }

    /// Adds a closure interceptor: runs once per call before the stream opens, may change the
    /// context (metadata, deadline, extensions) or refuse the call (nothing is sent). It takes
    /// its place among the layers in registration order.
    pub fn interceptor(
        mut self,
        f: impl Fn(&mut CallContext) -> Result<(), Status> + Send + Sync + 'static,
    ) -> Self {
        let f: crate::intercept::ClientInterceptor = Arc::new(f);
        self.layers.push(Box::new(move |inner| {
            BoxCloneSyncService::new(crate::intercept::ClientIntercept { inner, f })
        }));
        self
    }

    /// Adds a send middleware, run on every message this client sends (first added = outermost).
    pub fn send_middleware(mut self, m: impl SendMiddleware) -> Self {
        self.middleware.push_send(Arc::new(m));
        self
    }

    /// Adds a recv middleware, run on every message this client receives (first added =
    /// outermost).
    pub fn recv_middleware(mut self, m: impl RecvMiddleware) -> Self {
        self.middleware.push_recv(Arc::new(m));
        self
    }

    /// Adds a stream observer: told of every stream this client opens — its start, each
    /// message, the response header and the end (see [`crate::events`]). With none
    /// registered there is no cost.
    pub fn observer(mut self, observer: impl StreamObserver) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Default timeout of every call (none by default: calls may run forever): the call's
    /// deadline, which bounds the whole call or stream in every mode — opening (connecting)
    /// included, every retry attempt of a unary call included — and is sent to the server.
    /// [`method_timeout`](Self::method_timeout) overrides it for one method,
    /// [`CallOptions::timeout`] for one call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Default timeout of every call of the method with gRPC path `path`
    /// (`/pkg.Service/Method`, [`MethodDesc::path`]), in any mode: as
    /// [`timeout`](Self::timeout), which it overrides for that method;
    /// [`CallOptions::timeout`] overrides both.
    pub fn method_timeout(mut self, path: impl Into<String>, timeout: Duration) -> Self {
        self.method_timeouts.insert(path.into(), timeout);
        self
    }

    /// The name this client appends to the cancel path of the streams it resets (Kitex: the
    /// client's `From` service name, sent as `ttscp`). Unset, a call made from a handler
    /// appends the name of the handler's service, and one made elsewhere appends nothing.
    pub fn from_service(mut self, name: impl Into<String>) -> Self {
        let name: String = name.into();
        self.cancel.from_service = (!name.is_empty()).then(|| Arc::from(name));
        self
    }

    /// Default stream timeout of every stream (see [`CallOptions::stream_timeout`]).
    pub fn stream_timeout(mut self, timeout: Duration) -> Self {
        self.cancel.stream_timeout = Some(timeout);
        self
    }

    /// Default recv timeout of every stream (Kitex `client.WithStreamRecvTimeoutConfig`; see
    /// [`crate::cancel`]). Unary calls are not affected.
    pub fn recv_timeout(mut self, config: TimeoutConfig) -> Self {
        self.cancel.recv_timeout = Some(config);
        self
    }

    /// Metadata sent with every call, before the per-call metadata.
    pub fn metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<crate::MetadataValue>,
    ) -> Self {
        self.metadata.append(key, value);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Client {
        let open = if self.layers.is_empty() {
            None
        } else {
            let mut svc = BoxCloneSyncService::new(TransportOpen(self.transport.clone()));
            for layer in self.layers.into_iter().rev() {
                svc = layer(svc);
            }
            Some(svc)
        };
        let unary = if self.unary_layers.is_empty() {
            None
        } else {
            let mut svc = BoxCloneSyncService::new(crate::unary::Invoker);
            for layer in self.unary_layers.into_iter().rev() {
                svc = layer(svc);
            }
            Some(Arc::new(svc))
        };
        Client {
            inner: Arc::new(ClientInner {
                transport: self.transport,
                open,
                unary,
                middleware: self.middleware,
                observers: self.observers.into(),
                timeout: self.timeout,
                method_timeouts: self.method_timeouts,
                metadata: self.metadata,
                cancel: self.cancel,
            }),
        }
    }
}

struct ClientInner {
    transport: Arc<dyn ClientTransport>,
    open: Option<OpenService>,
    unary: Option<crate::unary::Stack>,
    middleware: MessageMiddleware,
    observers: Observers,
    timeout: Option<Duration>,
    method_timeouts: HashMap<String, Duration>,
    metadata: Metadata,
    cancel: ClientCancel,
}

/// The transport-independent client core. Cheap to clone, `Send + Sync`; generated clients wrap
/// it.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("middleware", &self.inner.middleware)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl Client {
    /// A client over `transport` with default settings.
    pub fn new(transport: impl ClientTransport) -> Client {
        Client::builder(transport).build()
    }

    /// A builder over `transport`.
    pub fn builder(transport: impl ClientTransport) -> ClientBuilder {
        Self::builder_arc(Arc::new(transport))
    }

    /// A builder over a shared transport.
    pub fn builder_arc(transport: Arc<dyn ClientTransport>) -> ClientBuilder {
        ClientBuilder {
            transport,
            layers: Vec::new(),
            unary_layers: Vec::new(),
            middleware: MessageMiddleware::default(),
            observers: Vec::new(),
            timeout: None,
            method_timeouts: HashMap::new(),
            metadata: Metadata::new(),
            cancel: ClientCancel::default(),
        }
    }

    /// The context of a new call: the client's metadata then the call's, and the deadline.
    fn context(&self, method: &'static MethodDesc, opts: CallOptions) -> CallContext {
        let mut metadata = self.inner.metadata.clone();
        metadata.extend(opts.metadata);
        let deadline = opts
            .timeout
            .or_else(|| self.inner.method_timeouts.get(method.path).copied())
            .or(self.inner.timeout)
            .map(|t| Instant::now() + t);
        let mut ctx = CallContext::new(method)
            .with_metadata(metadata)
            .with_deadline(deadline);
        if !opts.extensions.is_empty() {
            ctx.extensions_mut().extend(opts.extensions);
        }
        if opts.stream_timeout.is_some()
            || opts.recv_timeout.is_some()
            || !matches!(opts.parent, Parent::Inherit)
        {
            ctx.extensions_mut().insert(CallCancel {
                stream_timeout: opts.stream_timeout,
                recv_timeout: opts.recv_timeout,
                parent: opts.parent,
            });
        }
        ctx
    }

    async fn open(
        &self,
        method: &'static MethodDesc,
        opts: CallOptions,
    ) -> Result<(Arc<ClientShared>, Timers), Status> {
        let ctx = self.context(method, opts);
        self.open_ctx(ctx).await
    }

    async fn open_ctx(&self, mut ctx: CallContext) -> Result<(Arc<ClientShared>, Timers), Status> {
        // Cascading cancel: the call joins its parent (decided now, where it is made), and
        // fails at once, sending nothing, when that call has already ended.
        let per_call = ctx
            .extensions_mut()
            .remove::<CallCancel>()
            .unwrap_or_default();
        let parent = match per_call.parent {
            Parent::Inherit => crate::cancel::current(),
            Parent::Detached => None,
            Parent::Of(handle) => Some(handle.0),
        };
        let name = match (&self.inner.cancel.from_service, &parent) {
            (Some(n), _) => HopName::Shared(n.clone()),
            (None, Some(p)) => HopName::Static(p.service_name()),
            (None, None) => HopName::Static(""),
        };
        if let Some(reason) = parent.as_ref().and_then(|p| p.ended()) {
            return Err(crate::cancel::cascade_from(&reason, name.as_str()));
        }
        let stream_timeout = per_call.stream_timeout.or(self.inner.cancel.stream_timeout);
        let recv_timeout = per_call
            .recv_timeout
            .or(self.inner.cancel.recv_timeout)
            .filter(|_| ctx.mode() != crate::context::Mode::Unary);
        let stream_deadline = stream_timeout.map(|t| Instant::now() + t);
        let observe = CallObserver::client(
            &mut ctx,
            self.inner.transport.rpc_system(),
            &self.inner.observers,
        );
        let deadline = ctx.deadline();
        // Without call layers, a transport that can open the stream at once does (no future).
        let now = match &self.inner.open {
            None => self.inner.transport.open_now(&ctx),
            Some(_) => None,
        };
        let open = match now {
            Some(stream) => stream.map(|stream| OpenStream { ctx, stream }),
            None => {
                let open: BoxFuture<'static, Result<OpenStream, Status>> = match &self.inner.open {
                    None => {
                        let stream = self.inner.transport.open(&ctx);
                        Box::pin(async move {
                            Ok(OpenStream {
                                ctx,
                                stream: stream.await?,
                            })
                        })
                    }
                    Some(svc) => Box::pin(svc.clone().oneshot(ctx)),
                };
                // The deadline covers the whole call, opening (connecting) included.
                match deadline {
                    None => open.await,
                    Some(d) => tokio::time::timeout_at(d, open).await.unwrap_or_else(|_| {
                        Err(Status::deadline_exceeded(
                            "deadline exceeded while opening the stream",
                        ))
                    }),
                }
            }
        }
        .inspect_err(|e| observe.end(e))?;
        let deadline = open.ctx.deadline();
        let shared = Arc::new(ClientShared {
            raw: open.stream,
            ctx: open.ctx,
            middleware: self.inner.middleware.clone(),
            st: Mutex::new(ClientState::default()),
            marks: AtomicU8::new(0),
            observe,
            name,
        });
        if let Some(parent) = parent {
            let weak = Arc::downgrade(&shared);
            let weak: std::sync::Weak<dyn CallChild> = weak;
            if let Err(reason) = parent.adopt(weak) {
                shared.parent_ended(&reason);
            }
        }
        // The earlier of the deadline and the stream timeout ends the stream.
        let end_at = match (deadline, stream_deadline) {
            (Some(d), Some(s)) if s < d => Some((s, CancelKind::StreamTimeout)),
            (Some(d), _) => Some((d, CancelKind::Deadline)),
            (None, Some(s)) => Some((s, CancelKind::StreamTimeout)),
            (None, None) => None,
        };
        Ok((
            shared,
            Timers {
                end_at,
                recv_timeout,
            },
        ))
    }

    fn halves<Req, Res, C>(
        shared: Arc<ClientShared>,
        deadline: Timers,
    ) -> (Sender<Req, ClientEnd>, Receiver<Res, ClientEnd>)
    where
        Req: Send + Sync + 'static,
        Res: Send + Sync + 'static,
        C: Codec<Req> + Codec<Res>,
    {
        (
            Sender::new(
                ClientEnd::new(shared.clone(), deadline),
                MsgCodec::of::<C>(),
            ),
            Receiver::new(ClientEnd::receiving(shared, deadline), MsgCodec::of::<C>()),
        )
    }

    /// A unary call: sends `req`, returns the response with header and trailer metadata.
    /// Runs through the unary layers when any are registered ([`ClientBuilder::unary_layer`]).
    pub async fn unary<C, Req, Res>(
        &self,
        method: &'static MethodDesc,
        req: Req,
        opts: CallOptions,
    ) -> Result<WithMetadata<Res>, Status>
    where
        Req: Clone + Send + Sync + 'static,
        Res: Send + Sync + 'static,
        C: Codec<Req> + Codec<Res>,
    {
        let ctx = self.context(method, opts);
        match &self.inner.unary {
            None => self.unary_direct::<C, Req, Res>(ctx, req).await,
            Some(stack) => {
                let req = UnaryRequest::new(ctx, req, invoke_as::<C, Req, Res>, self.inner.clone());
                let res = (**stack).clone().oneshot(req).await?;
                crate::unary::response::<Res>(res)
            }
        }
    }

    /// A unary call with a ready context, without the unary layers.
    pub(crate) async fn unary_direct<C, Req, Res>(
        &self,
        ctx: CallContext,
        req: Req,
    ) -> Result<WithMetadata<Res>, Status>
    where
        Req: Send + Sync + 'static,
        Res: Send + Sync + 'static,
        C: Codec<Req> + Codec<Res>,
    {
        let (shared, deadline) = self.open_ctx(ctx).await?;
        let (mut tx, mut rx) = Self::halves::<Req, Res, C>(shared, deadline);
        tx.send(req).await?;
        close_sender(&mut tx)?;
        let message = close_and_recv_one(&mut rx).await?;
        let header = header_of(&mut rx.end).await?;
        let trailer = rx.end.shared.trailer().unwrap_or_default();
        Ok(WithMetadata::new(header, message, trailer))
    }

    /// Opens a client-streaming call. Returns as soon as the stream is open; it never waits
    /// for the server's header.
    pub async fn client_streaming<C, Req, Res>(
        &self,
        method: &'static MethodDesc,
        opts: CallOptions,
    ) -> Result<ClientStreamingClient<Req, Res>, Status>
    where
        Req: Send + Sync + 'static,
        Res: Send + Sync + 'static,
        C: Codec<Req> + Codec<Res>,
    {
        let (shared, deadline) = self.open(method, opts).await?;
        let (tx, rx) = Self::halves::<Req, Res, C>(shared, deadline);
        Ok(ClientStreamingClient { tx, rx })
    }

    /// Opens a server-streaming call: sends `req` and half-closes before returning (StreamX
    /// does the same: exactly one message then the half-close on the wire).
    pub async fn server_streaming<C, Req, Res>(
        &self,
        method: &'static MethodDesc,
        req: Req,
        opts: CallOptions,
    ) -> Result<ServerStreamingClient<Res>, Status>
    where
        Req: Send + Sync + 'static,
        Res: Send + Sync + 'static,
        C: Codec<Req> + Codec<Res>,
    {
        let (shared, deadline) = self.open(method, opts).await?;
        let (mut tx, rx) = Self::halves::<Req, Res, C>(shared, deadline);
        tx.send(req).await?;
        close_sender(&mut tx)?;
        Ok(ServerStreamingClient { rx })
    }

    /// Opens a bidirectional call.
    pub async fn bidi<C, Req, Res>(
        &self,
        method: &'static MethodDesc,
        opts: CallOptions,
    ) -> Result<BidiStreamingClient<Req, Res>, Status>
    where
        Req: Send + Sync + 'static,
        Res: Send + Sync + 'static,
        C: Codec<Req> + Codec<Res>,
    {
        let (shared, deadline) = self.open(method, opts).await?;
        let (tx, rx) = Self::halves::<Req, Res, C>(shared, deadline);
        Ok(BidiStreamingClient {
            tx: ClientSender { tx },
            rx: ClientReceiver { rx },
        })
    }
}

fn close_sender<T: Send + Sync + 'static>(tx: &mut Sender<T, ClientEnd>) -> Result<(), Status> {
    if tx.closed {
        return Ok(());
    }
    tx.closed = true;
    tx.end.shared.close_send()
}

/// Receives the single response of a unary or client-streaming call and checks the stream
/// then ends cleanly.
async fn close_and_recv_one<T: Send + Sync + 'static>(
    rx: &mut Receiver<T, ClientEnd>,
) -> Result<T, Status> {
    let message = rx.recv().await?.ok_or(Error::MissingResponse)?;
    match rx.recv().await? {
        None => Ok(message),
        Some(_) => {
            let status: Status = Error::UnaryTooManyResponses.into();
            rx.end.shared.reset(&status);
            Err(status)
        }
    }
}

async fn header_of(end: &mut ClientEnd) -> Result<Metadata, Status> {
    poll_fn(|cx| end.poll_with_deadline(cx, |shared, cx| shared.poll_header(cx))).await
}

/// The name a client call appends to cancel paths: the client's `from_service`, or the
/// parent handler's service name, or nothing.
#[derive(Clone)]
enum HopName {
    Static(&'static str),
    Shared(Arc<str>),
}

impl HopName {
    fn as_str(&self) -> &str {
        match self {
            HopName::Static(s) => s,
            HopName::Shared(s) => s,
        }
    }
}

/// The timers of a client stream: the end of the whole stream (the deadline or the stream
/// timeout, whichever comes first) and the recv timeout.
#[derive(Clone, Copy, Default)]
struct Timers {
    end_at: Option<(Instant, CancelKind)>,
    recv_timeout: Option<TimeoutConfig>,
}

/// What both halves of a client stream share: the raw stream and the call's state, kept here
/// and nowhere else (the transport delivers events once; this remembers them).
struct ClientShared {
    raw: Arc<dyn ClientStreamRaw>,
    /// Shared with message middleware through [`ClientCtx`] (a reference count per message,
    /// never a deep clone, and no allocation of its own).
    ctx: CallContext,
    middleware: MessageMiddleware,
    st: Mutex<ClientState>,
    /// What of `st` a message's send or receive has to look at ([`EARLY`], [`ENDED`],
    /// [`SEND_CLOSED`]), kept in step with it under its lock: while none is set (a stream in
    /// the middle of its messages) sends and receives go to the transport without taking the
    /// lock. A mark set concurrently with a message is the same race as the lock released
    /// just before the transport call.
    marks: AtomicU8,
    /// Span and metrics of the call (nothing when nobody observes).
    observe: CallObserver,
    /// What this hop appends to the cancel path.
    name: HopName,
}

impl CallChild for ClientShared {
    fn parent_ended(&self, reason: &Status) {
        if self.ended() {
            return;
        }
        self.reset(&crate::cancel::cascade_from(reason, self.name.as_str()));
    }
}

/// [`ClientShared::marks`]: a message arrived before the header and waits in `early`.
const EARLY: u8 = 1;
/// [`ClientShared::marks`]: the end is known (`end`).
const ENDED: u8 = 2;
/// [`ClientShared::marks`]: `close_send` was called.
const SEND_CLOSED: u8 = 4;

#[derive(Default)]
struct ClientState {
    /// The response header, once received (empty for a trailers-only end).
    header: Option<Metadata>,
    /// A message that arrived while only the header was awaited (a transport that skips the
    /// header); delivered by the next receive.
    early: Option<Bytes>,
    /// The end: final status and trailer. Set by the transport's end, or by a local reset
    /// (cancel, deadline, a message that failed to decode). Dropping handles no longer resets.
    end: Option<(Status, Metadata)>,
    /// `close_send` was called.
    send_closed: bool,
    /// The task waiting for an event (a receive or the header), woken by a reset from
    /// another task (a cancel, a parent's cascade): the transport does not wake it then.
    waiter: Option<std::task::Waker>,
}

fn outcome_of(status: &Status) -> Result<Option<Bytes>, Status> {
    if status.is_ok() {
        Ok(None)
    } else {
        Err(status.clone())
    }
}

impl ClientShared {
    fn lock(&self) -> MutexGuard<'_, ClientState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings `marks` in step with `st` (called with the lock held, after a change).
    fn mark(&self, st: &ClientState) {
        let mut m = 0;
        if st.early.is_some() {
            m |= EARLY;
        }
        if st.end.is_some() {
            m |= ENDED;
        }
        if st.send_closed {
            m |= SEND_CLOSED;
        }
        self.marks.store(m, Ordering::Release);
    }

    /// Whether any of `marks` is set.
    fn marked(&self, marks: u8) -> bool {
        self.marks.load(Ordering::Acquire) & marks != 0
    }

    fn record_end(&self, status: Status, trailer: Metadata) {
        self.observe.end(&status);
        let mut st = self.lock();
        st.header.get_or_insert_with(Metadata::new);
        st.end.get_or_insert((status, trailer));
        self.mark(&st);
    }

    /// The next message: one `ready` holds (taken from the transport with an earlier one,
    /// up to `batch` at a time), else the transport's next event.
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        ready: &mut VecDeque<Bytes>,
        batch: usize,
    ) -> Poll<Result<Option<Bytes>, Status>> {
        if self.marked(EARLY | ENDED) {
            let mut st = self.lock();
            if let Some(b) = st.early.take() {
                self.mark(&st);
                return Poll::Ready(Ok(Some(b)));
            }
            if let Some((status, _)) = &st.end {
                // A local end (cancel, deadline, a response that failed to decode): the
                // responses still queued are not delivered after it.
                ready.clear();
                return Poll::Ready(outcome_of(status));
            }
        }
        if let Some(b) = ready.pop_front() {
            return Poll::Ready(Ok(Some(b)));
        }
        loop {
            let event = if batch > 0 {
                self.raw.poll_event_many(cx, ready, batch)
            } else {
                self.raw.poll_event(cx)
            };
            match event {
                Poll::Pending => return self.wait(cx),
                Poll::Ready(ClientEvent::Header(h)) => {
                    self.observe.header(&h);
                    self.lock().header.get_or_insert(h);
                }
                Poll::Ready(ClientEvent::Message(b)) => return Poll::Ready(Ok(Some(b))),
                Poll::Ready(ClientEvent::End(status, trailer)) => {
                    let outcome = outcome_of(&status);
                    self.record_end(status, trailer);
                    return Poll::Ready(outcome);
                }
            }
        }
    }

    fn poll_header(&self, cx: &mut Context<'_>) -> Poll<Result<Metadata, Status>> {
        {
            let st = self.lock();
            if let Some(h) = &st.header {
                return Poll::Ready(Ok(h.clone()));
            }
            if let Some((status, _)) = &st.end {
                return Poll::Ready(Err(status.clone()));
            }
        }
        match self.raw.poll_event(cx) {
            Poll::Pending => self.wait(cx),
            Poll::Ready(ClientEvent::Header(h)) => {
                self.observe.header(&h);
                self.lock().header = Some(h.clone());
                Poll::Ready(Ok(h))
            }
            Poll::Ready(ClientEvent::Message(b)) => {
                let mut st = self.lock();
                st.early = Some(b);
                st.header = Some(Metadata::new());
                self.mark(&st);
                Poll::Ready(Ok(Metadata::new()))
            }
            Poll::Ready(ClientEvent::End(status, trailer)) => {
                let header = if status.is_ok() {
                    Ok(Metadata::new())
                } else {
                    Err(status.clone())
                };
                self.record_end(status, trailer);
                Poll::Ready(header)
            }
        }
    }

    fn trailer(&self) -> Option<Metadata> {
        self.lock().end.as_ref().map(|(_, t)| t.clone())
    }

    /// The transport has nothing yet: remembers the waiting task so a reset from another task
    /// wakes it, unless that reset came in between (then the end is the outcome).
    fn wait<R>(&self, cx: &mut Context<'_>) -> Poll<Result<R, Status>> {
        let mut st = self.lock();
        if let Some((status, _)) = &st.end {
            if !status.is_ok() {
                return Poll::Ready(Err(status.clone()));
            }
        }
        crate::transport::waker::register(&mut st.waiter, cx);
        Poll::Pending
    }

    /// The error a send reports once the stream cannot carry more messages.
    fn send_error(&self, st: &ClientState) -> Option<Status> {
        match &st.end {
            Some((status, _)) if status.is_ok() => Some(Error::StreamFinished.into()),
            Some((status, _)) => Some(status.clone()),
            None if st.send_closed => Some(Error::SendAfterClose.into()),
            None => None,
        }
    }

    fn poll_send_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        if self.marked(ENDED | SEND_CLOSED) {
            if let Some(e) = self.send_error(&self.lock()) {
                return Poll::Ready(Err(e));
            }
        }
        self.raw.poll_send_ready(cx, len).map_err(|e| {
            // Prefer the stream's own end (the server's status) over the transport's reason.
            match &self.lock().end {
                Some((status, _)) if !status.is_ok() => status.clone(),
                _ => e,
            }
        })
    }

    /// Waits for send capacity and sends one message in one transport call (see
    /// [`ClientStreamRaw::poll_send`]).
    fn poll_send(&self, cx: &mut Context<'_>, msg: &mut dyn Encodable) -> Poll<Result<(), Status>> {
        if self.marked(ENDED | SEND_CLOSED) {
            if let Some(e) = self.send_error(&self.lock()) {
                return Poll::Ready(Err(e));
            }
        }
        self.raw.poll_send(cx, msg).map_err(|e| {
            // Prefer the stream's own end (the server's status) over the transport's reason.
            match &self.lock().end {
                Some((status, _)) if !status.is_ok() => status.clone(),
                _ => e,
            }
        })
    }

    /// Sends one message. `poll_send_ready` checked the stream's state just before, and a
    /// half's own close is checked by its `Sender`, so no second look under the lock.
    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        self.raw.send(msg)
    }

    fn close_send(&self) -> Result<(), Status> {
        {
            let mut st = self.lock();
            if st.send_closed || st.end.is_some() {
                return Ok(());
            }
            st.send_closed = true;
            self.mark(&st);
        }
        self.raw.close_send()
    }

    /// Resets the stream with `status` unless it already ended; later receives report it.
    fn reset(&self, status: &Status) {
        {
            let mut st = self.lock();
            if st.end.is_some() {
                return;
            }
            st.header.get_or_insert_with(Metadata::new);
            st.end = Some((status.clone(), Metadata::new()));
            self.mark(&st);
            crate::transport::waker::wake(&mut st.waiter);
        }
        self.observe.end(status);
        self.raw.reset(status);
    }

    fn ended(&self) -> bool {
        self.marked(ENDED)
    }
}

/// One half's view of a client stream, with the timers of that half.
pub(crate) struct ClientEnd {
    shared: Arc<ClientShared>,
    timers: Timers,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The recv timeout of the `recv` waiting now.
    recv_sleep: Option<Pin<Box<Sleep>>>,
    /// The length of the message being sent (from `poll_send_ready`), for metrics.
    sending: usize,
    /// Responses taken from the transport and not yet handed out (see [`RECV_BATCH`]).
    ready: VecDeque<Bytes>,
    /// How many responses one call to the transport may add to `ready` (0: one at a time).
    batch: usize,
}

/// Responses a receiving half takes from its transport in one call beyond the first
/// ([`ClientStreamRaw::poll_event_many`]): a burst of small messages costs one call and one
/// lock of the transport's receive state per this many. The transport hands out only
/// messages it already holds (for gRPC: of the DATA chunk it is decoding), so the queue
/// holds no memory the transport did not; 32 entries are 1 KiB per stream, allocated on the
/// first burst.
const RECV_BATCH: usize = 32;

impl ClientEnd {
    fn new(shared: Arc<ClientShared>, timers: Timers) -> Self {
        ClientEnd {
            shared,
            timers,
            sleep: None,
            recv_sleep: None,
            sending: 0,
            ready: VecDeque::new(),
            batch: 0,
        }
    }

    /// The end of a receiving half: responses the transport holds ready are taken a burst at
    /// a time (not when recv middleware run: a middleware's receive may run on a fork of this
    /// end, which must not find responses queued here).
    fn receiving(shared: Arc<ClientShared>, timers: Timers) -> Self {
        let batch = if shared.middleware.recv.is_empty() {
            RECV_BATCH
        } else {
            0
        };
        ClientEnd {
            batch,
            ..ClientEnd::new(shared, timers)
        }
    }

    /// A cancellation starting at this hop (a user cancel, a timeout).
    fn origin(&self, kind: CancelKind, cause: impl Into<String>) -> Status {
        Cancellation::new(kind, self.shared.name.as_str(), kind.kitex_code(), cause).into_status()
    }

    /// Polls `op`; while it is pending, the deadline is watched: once it passes, the stream is
    /// reset with `DEADLINE_EXCEEDED` and that is the outcome.
    fn poll_with_deadline<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&ClientShared, &mut Context<'_>) -> Poll<Result<R, Status>>,
    ) -> Poll<Result<R, Status>> {
        if let Poll::Ready(r) = op(&self.shared, cx) {
            return Poll::Ready(r);
        }
        let Some((deadline, kind)) = self.timers.end_at else {
            return Poll::Pending;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let status = self.origin(kind, "");
                self.shared.reset(&status);
                // The stream may have ended just before: report its real end then.
                Poll::Ready(Err(match &self.shared.lock().end {
                    Some((s, _)) if !s.is_ok() => s.clone(),
                    _ => status,
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn cancel(&self) {
        if !self.shared.ended() {
            self.shared.reset(&self.origin(CancelKind::User, ""));
        }
    }

    /// A receive, with the recv timeout watched while it waits: when it fires the outcome is
    /// `RECV_DEADLINE_EXCEEDED`, and the stream is reset unless the config keeps it alive.
    fn poll_recv_timed(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        let (mut ready, batch) = (std::mem::take(&mut self.ready), self.batch);
        let got = self.poll_with_deadline(cx, |shared, cx| shared.poll_recv(cx, &mut ready, batch));
        self.ready = ready;
        let Some(cfg) = self.timers.recv_timeout else {
            return got;
        };
        if got.is_ready() {
            self.recv_sleep = None;
            return got;
        }
        let sleep = self
            .recv_sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(cfg.timeout)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.recv_sleep = None;
        let status = self.origin(
            CancelKind::RecvTimeout,
            format!("stream recv timeout, timeout={:?}", cfg.timeout),
        );
        if !cfg.disable_cancel_remote {
            self.shared.reset(&status);
            if let Some((end, _)) = &self.shared.lock().end {
                return Poll::Ready(outcome_of(end));
            }
        }
        Poll::Ready(Err(status))
    }
}

use std::future::Future as _;

/// A client call's context as message middleware hold it: a reference to the call's shared
/// state (as the server's `SharedCtx`).
pub(crate) struct ClientCtx(Arc<ClientShared>);

impl std::ops::Deref for ClientCtx {
    type Target = CallContext;

    fn deref(&self) -> &CallContext {
        &self.0.ctx
    }
}

impl End for ClientEnd {
    type Ctx = ClientCtx;
    fn ctx(&self) -> ClientCtx {
        ClientCtx(self.shared.clone())
    }
    fn middleware(&self) -> &MessageMiddleware {
        &self.shared.middleware
    }
    fn poll_send_ready(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        self.sending = len;
        self.poll_with_deadline(cx, |shared, cx| shared.poll_send_ready(cx, len))
    }
    fn start_send(&mut self, msg: &mut dyn Encodable) -> Result<(), Status> {
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
        std::task::ready!(self.poll_with_deadline(cx, |shared, cx| shared.poll_send(cx, msg)))?;
        self.shared.observe.sent(len);
        Poll::Ready(Ok(()))
    }
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        let got = self.poll_recv_timed(cx);
        if let Poll::Ready(Ok(Some(b))) = &got {
            self.shared.observe.received(b.len());
        }
        got
    }
    fn recv_ended(&self) {}
    fn transient(&self, status: &Status) -> bool {
        // A recv timeout that left the stream alive (`disable_cancel_remote`).
        status.code() == crate::status::Code::RecvDeadlineExceeded && !self.shared.ended()
    }
    fn fail(&self, status: &Status) {
        self.shared.reset(status);
    }
    fn abandon(&self) {
        self.cancel();
    }
    fn fork(&self) -> Self {
        ClientEnd::new(self.shared.clone(), self.timers)
    }
}

impl_stream!(ServerStreamingClient<Res>, Res, rx);
impl_stream!(ClientReceiver<Res>, Res, rx);
impl_stream!(BidiStreamingClient<Req, Res>, Res, rx.rx);

/// The bottom of a layered unary call: the client's direct path for `Req` and `Res`.
fn invoke_as<C, Req, Res>(req: UnaryRequest) -> BoxFuture<'static, Result<UnaryResponse, Status>>
where
    C: Codec<Req> + Codec<Res>,
    Req: Clone + Send + Sync + 'static,
    Res: Send + Sync + 'static,
{
    Box::pin(async move {
        let (ctx, message, origin) = req.into_parts();
        let Ok(inner) = origin.downcast::<ClientInner>() else {
            return Err(Status::from(Error::MessageTypeMismatch {
                expected: std::any::type_name::<Client>(),
            }));
        };
        let message = message.downcast::<Req>().map_err(|_| {
            Status::from(Error::MessageTypeMismatch {
                expected: std::any::type_name::<Req>(),
            })
        })?;
        let res = Client { inner }
            .unary_direct::<C, Req, Res>(ctx, *message)
            .await?;
        Ok(res.map(|m| Box::new(m) as Box<crate::middleware::AnyMessage>))
    })
}

/// Common accessors of every client handle.
macro_rules! client_handle_common {
    ($($field:ident).+) => {
        fn end(&self) -> &ClientEnd {
            &self.$($field).+
        }

        fn end_mut(&mut self) -> &mut ClientEnd {
            &mut self.$($field).+
        }

        /// The call context (method, metadata sent, deadline).
        pub fn context(&self) -> &CallContext {
            &self.end().shared.ctx
        }

        /// Waits for the response header metadata (or the stream's error).
        pub async fn header(&mut self) -> Result<Metadata, Status> {
            header_of(self.end_mut()).await
        }

        /// Trailer metadata, once the stream has ended.
        pub fn trailer(&self) -> Option<Metadata> {
            self.end().shared.trailer()
        }

        /// Resets the stream (the server sees `CANCELLED`). Does nothing once it has ended.
        pub fn cancel(&self) {
            self.end().cancel();
        }
    };
}

/// The client's handle of a client-streaming call (grpc-go's `ClientStreamingClient`):
/// `send` requests, then `close_and_recv` for the response. The server's side is
/// [`crate::ClientStreamingServer`].
pub struct ClientStreamingClient<Req: Send + Sync + 'static, Res: Send + Sync + 'static> {
    tx: Sender<Req, ClientEnd>,
    rx: Receiver<Res, ClientEnd>,
}

impl<Req: Send + Sync + 'static, Res: Send + Sync + 'static> ClientStreamingClient<Req, Res> {
    /// Sends one request (waits while the send buffer is full). Fails with
    /// `FAILED_PRECONDITION` after `close_and_recv`.
    pub async fn send(&mut self, msg: Req) -> Result<(), Status> {
        self.tx.send(msg).await
    }

    /// Sends every request of `msgs` (any `futures::Stream`), waiting for send capacity
    /// before each; stops at the first error. Does not half-close.
    pub async fn send_all(
        &mut self,
        msgs: impl futures::Stream<Item = Req> + Send,
    ) -> Result<(), Status> {
        self.tx.send_all(msgs).await
    }

    /// Half-closes and waits for the single response.
    pub async fn close_and_recv(&mut self) -> Result<Res, Status> {
        close_sender(&mut self.tx)?;
        close_and_recv_one(&mut self.rx).await
    }

    /// Half-closes without waiting for the response ([`crate::testing::ScriptedCall`]).
    #[cfg(feature = "testing")]
    pub(crate) fn close_send_only(&mut self) -> Result<(), Status> {
        close_sender(&mut self.tx)
    }

    /// The response as a stream would deliver it: `Some(response)`, then `None` at an `OK`
    /// end, or the failure; half-closed or not ([`crate::testing::ScriptedCall`]).
    #[cfg(feature = "testing")]
    pub(crate) async fn recv_response(&mut self) -> Result<Option<Res>, Status> {
        self.rx.recv().await
    }

    client_handle_common!(rx.end);
}

/// The client's handle of a server-streaming call: `recv` responses until `Ok(None)`.
/// The server's side is [`crate::ServerStreamingServer`].
pub struct ServerStreamingClient<Res: Send + Sync + 'static> {
    rx: Receiver<Res, ClientEnd>,
}

impl<Res: Send + Sync + 'static> ServerStreamingClient<Res> {
    /// The next response; `Ok(None)` at the end. After the end or an error, returns the same
    /// outcome again.
    pub async fn recv(&mut self) -> Result<Option<Res>, Status> {
        self.rx.recv().await
    }

    client_handle_common!(rx.end);
}

/// The client's handle of a bidirectional streaming call; [`into_split`](Self::into_split)
/// gives a [`ClientSender`] and a [`ClientReceiver`]. The server's side is
/// [`crate::BidiStreamingServer`].
pub struct BidiStreamingClient<Req: Send + Sync + 'static, Res: Send + Sync + 'static> {
    tx: ClientSender<Req>,
    rx: ClientReceiver<Res>,
}

impl<Req: Send + Sync + 'static, Res: Send + Sync + 'static> BidiStreamingClient<Req, Res> {
    /// Sends one message (waits while the send buffer is full).
    pub async fn send(&mut self, msg: Req) -> Result<(), Status> {
        self.tx.send(msg).await
    }

    /// Half-closes the sending direction. Idempotent.
    pub fn close_send(&mut self) -> Result<(), Status> {
        self.tx.close_send()
    }

    /// Sends every message of `msgs` (any `futures::Stream`); stops at the first error.
    /// Does not half-close.
    pub async fn send_all(
        &mut self,
        msgs: impl futures::Stream<Item = Req> + Send,
    ) -> Result<(), Status> {
        self.tx.tx.send_all(msgs).await
    }

    /// The next message; `Ok(None)` when the server ended with OK.
    pub async fn recv(&mut self) -> Result<Option<Res>, Status> {
        self.rx.recv().await
    }

    /// Splits into halves that can run in different tasks. Dropping the sender without
    /// `close_send`, or the receiver before the end, resets the stream.
    pub fn into_split(self) -> (ClientSender<Req>, ClientReceiver<Res>) {
        (self.tx, self.rx)
    }

    client_handle_common!(rx.rx.end);
}

/// The sending half of a [`BidiStreamingClient`].
pub struct ClientSender<Req: Send + Sync + 'static> {
    tx: Sender<Req, ClientEnd>,
}

impl<Req: Send + Sync + 'static> ClientSender<Req> {
    /// Sends one message.
    pub async fn send(&mut self, msg: Req) -> Result<(), Status> {
        self.tx.send(msg).await
    }

    /// Half-closes the sending direction. Idempotent.
    pub fn close_send(&mut self) -> Result<(), Status> {
        close_sender(&mut self.tx)
    }

    /// Sends every message of `msgs` (any `futures::Stream`); stops at the first error.
    /// Does not half-close.
    pub async fn send_all(
        &mut self,
        msgs: impl futures::Stream<Item = Req> + Send,
    ) -> Result<(), Status> {
        self.tx.send_all(msgs).await
    }

    /// Resets the stream.
    pub fn cancel(&self) {
        self.tx.end.cancel();
    }
}

/// The receiving half of a [`BidiStreamingClient`].
pub struct ClientReceiver<Res: Send + Sync + 'static> {
    rx: Receiver<Res, ClientEnd>,
}

impl<Res: Send + Sync + 'static> ClientReceiver<Res> {
    /// The next message; `Ok(None)` at the end.
    pub async fn recv(&mut self) -> Result<Option<Res>, Status> {
        self.rx.recv().await
    }

    client_handle_common!(rx.end);
}
