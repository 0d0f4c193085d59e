//! The TTHeader client transport: connection pools per endpoint, one for ttstream and one for
//! unary TTHeader (Kitex never mixes the two on a connection).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use std::collections::VecDeque;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use rpc_core::codec::Encodable;
use rpc_core::transport::{BoxFuture, ClientEvent, ClientStreamRaw, ClientTransport};
use rpc_core::{CallContext, Code, Metadata, Mode, PayloadKind, Status};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_UNARY_CONNECTIONS, DEFAULT_POOL_SIZE,
    DEFAULT_UNARY_IDLE_TIMEOUT,
};
use crate::session::{Limits, Stats};
#[cfg(feature = "tls")]
use rpc_core::net::TlsClientConfig;
use rpc_core::net::{Address, AddressError, ConnectOptions, TcpKeepalive};

use super::io::Io;
use super::stream_conn::Conn;
use super::unary::{ConnectionMode, Framing, Redial, UnaryConn};
use crate::proto::Role;
use crate::session::refused_unprocessed;

/// Builds a [`TtHeaderClient`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoint: Address,
    limits: Limits,
    pool_size: usize,
    connect: ConnectOptions,
    framing: Framing,
    mode: ConnectionMode,
    max_unary_connections: usize,
    unary_idle_timeout: Duration,
}

impl ClientBuilder {
    /// Pooled-mode unary connections at most (default [`DEFAULT_MAX_UNARY_CONNECTIONS`]); calls
    /// beyond it wait for a free connection, until their deadline.
    pub fn max_unary_connections(mut self, n: usize) -> Self {
        self.max_unary_connections = n.max(1);
        self
    }

    /// How long a pooled-mode unary connection may stay unused before the pool closes it
    /// (default [`DEFAULT_UNARY_IDLE_TIMEOUT`]).
    pub fn unary_idle_timeout(mut self, t: Duration) -> Self {
        self.unary_idle_timeout = t;
        self
    }

    /// Connection limits (frame size, buffers).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Streaming (and multiplexed unary) connections per endpoint (default [`DEFAULT_POOL_SIZE`]).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Connect timeout, TLS handshake included (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect.timeout = t;
        self
    }

    /// Connects with TLS (`rpc_core::net::tls`): the server certificate is verified against
    /// the configured CAs and the address's host (or the configured server name). TTHeader
    /// asks for no ALPN protocol. (Cargo feature `tls`, on by default.)
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: TlsClientConfig) -> Self {
        self.connect.tls = Some(tls);
        self
    }

    /// TCP keepalive on the client's connections (default on, [`TcpKeepalive::default`]);
    /// `None` turns it off.
    pub fn tcp_keepalive(mut self, keepalive: Option<TcpKeepalive>) -> Self {
        self.connect.keepalive = keepalive;
        self
    }

    /// Everything about connecting at once (timeout, keepalive, TLS).
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.connect = options;
        self
    }

    /// How unary (thrift unary) messages are framed (default unframed).
    pub fn unary_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// [`ConnectionMode::Pooled`] (one call per connection, pooled; default, what every peer
    /// speaks) or [`ConnectionMode::Multiplexed`] (many calls per connection).
    pub fn connection_mode(mut self, mode: ConnectionMode) -> Self {
        self.mode = mode;
        self
    }

    /// Builds the transport (connections are made on first use).
    pub fn build(self) -> TtHeaderClient {
        TtHeaderClient {
            inner: Arc::new(Inner {
                stream_slots: (0..self.pool_size)
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect(),
                mux_slots: (0..self.pool_size)
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect(),
                mux_ready: (0..self.pool_size).map(|_| Mutex::new(None)).collect(),
                plain: Mutex::new(Plain::default()),
                plain_freed: Arc::new(Notify::new()),
                sweeping: AtomicBool::new(false),
                next: AtomicUsize::new(0),
                stats: Arc::new(Stats::default()),
                cfg: self,
            }),
        }
    }
}

struct Inner {
    cfg: ClientBuilder,
    stream_slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    mux_slots: Vec<tokio::sync::Mutex<Option<Arc<UnaryConn>>>>,
    /// Multiplexed mode: the connection each slot of `mux_slots` holds, for a call to take
    /// without the slot's async lock (whose release takes a lock of its own); set under that
    /// lock whenever the slot's connection changes.
    mux_ready: Vec<Mutex<Option<Arc<UnaryConn>>>>,
    plain: Mutex<Plain>,
    /// Signalled when a plain connection comes free or dies.
    plain_freed: Arc<Notify>,
    /// Whether the idle sweeper task runs.
    sweeping: AtomicBool,
    next: AtomicUsize,
    stats: Arc<Stats>,
}

/// A TTHeader client transport (`rpc_core::transport::ClientTransport`): thrift unary methods use unary
/// TTHeader; every other method — and protobuf unary, which unary TTHeader cannot carry —
/// uses TTHeader Streaming. Cheap to clone; clones share the pools.
#[derive(Clone)]
pub struct TtHeaderClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TtHeaderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtHeaderClient")
            .field("endpoint", &self.inner.cfg.endpoint)
            .field("stats", &self.inner.stats)
            .finish()
    }
}

impl TtHeaderClient {
    /// A builder for `addr` (a `tcp://` host is resolved at each connect).
    pub fn builder(addr: impl Into<Address>) -> ClientBuilder {
        ClientBuilder {
            endpoint: addr.into(),
            limits: Limits::default(),
            pool_size: DEFAULT_POOL_SIZE,
            connect: ConnectOptions::new().timeout(DEFAULT_CONNECT_TIMEOUT),
            framing: Framing::default(),
            mode: ConnectionMode::default(),
            max_unary_connections: DEFAULT_MAX_UNARY_CONNECTIONS,
            unary_idle_timeout: DEFAULT_UNARY_IDLE_TIMEOUT,
        }
    }

    /// A client for `addr` with default settings. Connections are made on first use.
    pub fn new(addr: impl Into<Address>) -> TtHeaderClient {
        Self::builder(addr).build()
    }

    /// A client for an address string such as `"tcp://127.0.0.1:8888"` or
    /// `"unix:///tmp/echo.sock"`, with default settings.
    pub fn parse(addr: &str) -> Result<TtHeaderClient, AddressError> {
        Ok(Self::new(addr.parse::<Address>()?))
    }

    /// Live connection and stream counts.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }
}

/// The pooled-mode unary pool: connections, and connects in progress (both count toward the
/// maximum).
#[derive(Default)]
struct Plain {
    conns: Vec<Arc<UnaryConn>>,
    connecting: usize,
}

impl Inner {
    fn plain(&self) -> MutexGuard<'_, Plain> {
        self.plain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes plain connections unused for the idle time, every half of it, until the client
    /// is dropped.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(self);
        let idle = self.cfg.unary_idle_timeout;
        let period = (idle / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                inner
                    .plain()
                    .conns
                    .retain(|c| !c.retire_if_idle(idle) && !c.is_dead());
            }
        });
    }

    /// A plain connection reserved for one call: a free one, a new one while below the
    /// maximum, or else the next to come free, waiting until `deadline`.
    async fn plain_conn(
        self: &Arc<Self>,
        deadline: Option<Instant>,
    ) -> Result<Arc<UnaryConn>, Status> {
        loop {
            let freed = self.plain_freed.notified();
            {
                let mut plain = self.plain();
                plain.conns.retain(|c| !c.is_dead());
                if let Some(c) = plain.conns.iter().find(|c| c.try_acquire()) {
                    return Ok(c.clone());
                }
                if plain.conns.len() + plain.connecting < self.cfg.max_unary_connections {
                    plain.connecting += 1;
                    break;
                }
            }
            match deadline {
                Some(at) => {
                    if tokio::time::timeout_at(at, freed).await.is_err() {
                        return Err(Status::new(
                            Code::DeadlineExceeded,
                            format!(
                                "no free connection to {} within the deadline ({} in use)",
                                self.cfg.endpoint, self.cfg.max_unary_connections
                            ),
                        ));
                    }
                }
                None => freed.await,
            }
        }
        self.start_sweeper();
        let connected = self.connect().await;
        let mut plain = self.plain();
        plain.connecting -= 1;
        let (io, _) = match connected {
            Ok(c) => c,
            Err(e) => {
                drop(plain);
                self.plain_freed.notify_one();
                return Err(e);
            }
        };
        let conn = UnaryConn::start(
            io,
            ConnectionMode::Pooled,
            self.cfg.framing,
            self.cfg.limits.clone(),
            &self.stats,
            Some(self.plain_freed.clone()),
        );
        if matches!(self.cfg.endpoint, Address::Unix(_)) {
            // Over a Unix socket a call the server provably did not read goes again on
            // another connection (see `unary::Call::send_again`).
            let pool: Weak<dyn Redial> = Arc::downgrade(self) as Weak<dyn Redial>;
            conn.set_redial(pool);
        }
        let acquired = conn.try_acquire();
        debug_assert!(acquired, "a fresh connection is free");
        plain.conns.push(conn.clone());
        Ok(conn)
    }

    async fn connect(&self) -> Result<(Io, rpc_core::Peer), Status> {
        Io::connect_with(&self.cfg.endpoint, &self.cfg.connect)
            .await
            .map_err(|e| {
                Status::unavailable(format!("connect to {}: {e}", self.cfg.endpoint)).with_source(
                    rpc_core::Error::Io {
                        initiator: rpc_core::status::Initiator::Local,
                        source: e,
                    },
                )
            })
    }

    fn slot(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.cfg.pool_size
    }

    async fn stream_conn(&self) -> Result<Arc<Conn>, Status> {
        let mut slot = self.stream_slots[self.slot()].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_usable()) {
            return Ok(c.clone());
        }
        let (io, peer) = self.connect().await?;
        let conn = Conn::start(
            Role::Client,
            io,
            BytesMut::new(),
            self.cfg.limits.clone(),
            Some(peer),
            &self.stats,
            None,
        );
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn unary_conn(
        self: &Arc<Self>,
        deadline: Option<Instant>,
    ) -> Result<Arc<UnaryConn>, Status> {
        if self.cfg.mode == ConnectionMode::Pooled {
            return self.plain_conn(deadline).await;
        }
        self.mux_conn(self.slot()).await
    }

    /// Multiplexed mode: the connection of `slot` if it is up and takes the call now (acquired
    /// for it), without waiting: `None` while the slot is empty, dead or being connected.
    fn ready_mux_conn(&self, slot: usize) -> Option<Arc<UnaryConn>> {
        let ready = self.mux_ready[slot]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        ready.as_ref().filter(|c| c.try_acquire()).cloned()
    }

    /// Multiplexed mode: the connection of `slot`, connected first if need be (acquired).
    async fn mux_conn(&self, slot_index: usize) -> Result<Arc<UnaryConn>, Status> {
        let mut slot = self.mux_slots[slot_index].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.try_acquire()) {
            return Ok(c.clone());
        }
        let (io, _) = self.connect().await?;
        let conn = UnaryConn::start(
            io,
            ConnectionMode::Multiplexed,
            self.cfg.framing,
            self.cfg.limits.clone(),
            &self.stats,
            None,
        );
        let acquired = conn.try_acquire();
        debug_assert!(acquired, "a fresh connection is usable");
        *slot = Some(conn.clone());
        *self.mux_ready[slot_index]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }
}

impl Redial for Inner {
    fn redial(
        self: Arc<Self>,
        deadline: Option<Instant>,
    ) -> BoxFuture<'static, Result<Arc<UnaryConn>, Status>> {
        Box::pin(async move { self.plain_conn(deadline).await })
    }
}

/// `TestServiceClient::connect::<TtHeaderClient>("tcp://127.0.0.1:8888")`: a client in one
/// line (connections are made on first use).
impl rpc_core::transport::Connect for TtHeaderClient {
    fn connect(address: &str) -> Result<Self, Status> {
        Self::parse(address).map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

impl ClientTransport for TtHeaderClient {
    fn rpc_system(&self) -> &'static str {
        "ttheader"
    }

    fn open_now(&self, ctx: &CallContext) -> Option<Result<Arc<dyn ClientStreamRaw>, Status>> {
        let method = ctx.method();
        if method.mode == Mode::Unary
            && method.payload == PayloadKind::Thrift
            && self.inner.cfg.mode == ConnectionMode::Multiplexed
        {
            // The next slot's connection is up: the call opens now, and takes the slot. Else
            // the slot is left for `open` (which connects it), so a pool's round robin does
            // not skip the slots still connecting.
            let next = self.inner.next.load(Ordering::Relaxed);
            let conn = self.inner.ready_mux_conn(next % self.inner.cfg.pool_size)?;
            self.inner.next.fetch_add(1, Ordering::Relaxed);
            return Some(Ok(conn.open(ctx)));
        }
        None
    }

    fn open(
        &self,
        ctx: &CallContext,
    ) -> BoxFuture<'static, Result<Arc<dyn ClientStreamRaw>, Status>> {
        let method = ctx.method();
        if method.mode == Mode::Unary
            && method.payload == PayloadKind::Thrift
            && self.inner.cfg.mode == ConnectionMode::Multiplexed
        {
            let slot = self.inner.slot();
            // The slot's connection is up: the call opens now, in a future with nothing to
            // wait for (no copy of the context, no connect future built and moved per call).
            if let Some(conn) = self.inner.ready_mux_conn(slot) {
                return Box::pin(std::future::ready(Ok(conn.open(ctx))));
            }
            let inner = self.inner.clone();
            let ctx = ctx.clone();
            return Box::pin(async move {
                let conn = inner.mux_conn(slot).await?;
                Ok(conn.open(&ctx))
            });
        }
        let inner = self.inner.clone();
        let ctx = ctx.clone();
        Box::pin(async move {
            let method = ctx.method();
            if method.mode == Mode::Unary && method.payload == PayloadKind::Thrift {
                let conn = inner.unary_conn(ctx.deadline()).await?;
                Ok(conn.open(&ctx))
            } else {
                let raw = inner.open_stream(&ctx).await?;
                if matches!(inner.cfg.endpoint, Address::Unix(_)) && !method.mode.client_streams() {
                    // Over a Unix socket a single-request call the server refuses unprocessed
                    // while it shuts down is opened again elsewhere (see `Resend`).
                    return Ok(Arc::new(Resend {
                        inner: inner.clone(),
                        ctx: ctx.clone(),
                        st: Mutex::new(ResendState {
                            cur: raw,
                            request: None,
                            closed: false,
                            delivered: false,
                            // Each refusal retires one pooled connection: the others may
                            // be to the same old server.
                            left: RESEND.saturating_add(inner.stream_slots.len().min(64) as u8),
                            reopen: None,
                        }),
                    }) as Arc<dyn ClientStreamRaw>);
                }
                Ok(raw)
            }
        })
    }
}

impl Inner {
    /// Opens a TTHeader Streaming stream on a pooled connection.
    async fn open_stream(&self, ctx: &CallContext) -> Result<Arc<dyn ClientStreamRaw>, Status> {
        let conn = self.stream_conn().await?;
        match conn.open(ctx) {
            // Retired (as idle, or because its server is shutting down) between the pool's
            // check and the open: once more, on a new connection (the pool no longer hands
            // this one out).
            Err(_) if conn.is_retired() => self.stream_conn().await?.open(ctx),
            r => r,
        }
    }
}

/// How many times one call is opened again after a server refused it unprocessed, beyond
/// one per pooled connection.
const RESEND: u8 = 3;

/// A single-request TTHeader Streaming call (unary, server streaming) that is opened again on
/// another connection when the server refused it unprocessed: a draining server answers a
/// new stream with a Header and a Trailer marked `int_key::REFUSED_UNPROCESSED` (before any
/// handler saw it), which the session turns into a status whose source is
/// `RefusedUnprocessed` — a local value no peer's metadata can forge. The request is kept
/// (encoded) until the call ends; nothing was delivered to the caller before the refusal,
/// so the retry is invisible to it.
struct Resend {
    inner: Arc<Inner>,
    ctx: CallContext,
    st: Mutex<ResendState>,
}

struct ResendState {
    cur: Arc<dyn ClientStreamRaw>,
    /// The request, encoded.
    request: Option<Bytes>,
    /// `close_send` was called.
    closed: bool,
    /// An event went to the caller: no more retries.
    delivered: bool,
    left: u8,
    reopen: Option<BoxFuture<'static, Result<Arc<dyn ClientStreamRaw>, Status>>>,
}

impl Resend {
    fn state(&self) -> MutexGuard<'_, ResendState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Already encoded message bytes, sent as they are.
struct Encoded<'a>(&'a Bytes);

impl Encodable for Encoded<'_> {
    fn encode(&mut self, dst: &mut BytesMut) -> Result<(), Status> {
        dst.extend_from_slice(self.0);
        Ok(())
    }

    fn encode_slice(&mut self, dst: &mut [u8]) -> Result<(), Status> {
        if dst.len() != self.0.len() {
            return Err(Status::internal("encoded length mismatch"));
        }
        dst.copy_from_slice(self.0);
        Ok(())
    }

    fn encode_dyn(&mut self, dst: &mut dyn BufMut) -> Result<(), Status> {
        dst.put_slice(self.0);
        Ok(())
    }

    fn encoded_len(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

impl ClientStreamRaw for Resend {
    fn poll_send_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        let cur = self.state().cur.clone();
        cur.poll_send_ready(cx, len)
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let mut own = BytesMut::with_capacity(msg.encoded_len().unwrap_or(64));
        msg.encode(&mut own)?;
        let own = own.freeze();
        let mut st = self.state();
        st.request = Some(own.clone());
        st.cur.send(&mut Encoded(&own))
    }

    fn close_send(&self) -> Result<(), Status> {
        let mut st = self.state();
        st.closed = true;
        st.cur.close_send()
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<ClientEvent> {
        self.poll_event_many(cx, &mut VecDeque::new(), 0)
    }

    fn poll_event_many(
        &self,
        cx: &mut Context<'_>,
        more: &mut VecDeque<Bytes>,
        max: usize,
    ) -> Poll<ClientEvent> {
        let mut st = self.state();
        loop {
            if let Some(f) = st.reopen.as_mut() {
                let opened = std::task::ready!(f.as_mut().poll(cx));
                st.reopen = None;
                let new = match opened {
                    Ok(s) => s,
                    Err(e) => return Poll::Ready(ClientEvent::End(e, Metadata::new())),
                };
                let sent = match st.request.clone() {
                    Some(r) => new.send(&mut Encoded(&r)),
                    None => Ok(()),
                };
                let sent = sent.and_then(|()| if st.closed { new.close_send() } else { Ok(()) });
                st.cur = new;
                if let Err(e) = sent {
                    return Poll::Ready(ClientEvent::End(e, Metadata::new()));
                }
            }
            if st.delivered {
                return st.cur.poll_event_many(cx, more, max);
            }
            let event = std::task::ready!(st.cur.poll_event(cx));
            match event {
                ClientEvent::End(status, _) if refused_unprocessed(&status) && st.left > 0 => {
                    st.left -= 1;
                    tracing::debug!(%status, "ttstream: stream refused unprocessed; opening it again");
                    let (inner, ctx) = (self.inner.clone(), self.ctx.clone());
                    st.reopen = Some(Box::pin(async move { inner.open_stream(&ctx).await }));
                }
                event => {
                    st.delivered = true;
                    return Poll::Ready(event);
                }
            }
        }
    }

    fn reset(&self, status: &Status) {
        let mut st = self.state();
        st.reopen = None;
        st.cur.reset(status);
    }
}
