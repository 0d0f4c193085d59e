//! The TTHeader client transport: connection pools per endpoint, one for ttstream and one for
//! unary TTHeader (Kitex never mixes the two on a connection).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rpc_core::transport::{BoxFuture, ClientStreamRaw, ClientTransport};
use rpc_core::{CallContext, Mode, PayloadKind, Status};

use super::config::{Limits, Stats, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE};
use rpc_core::net::{Address, AddressError};

use super::io::Io;
use super::stream_conn::Conn;
use super::unary::{Framing, UnaryConn, UnaryMode};
use crate::proto::Role;

/// Builds a [`TtHeaderClient`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoint: Address,
    limits: Limits,
    pool_size: usize,
    connect_timeout: Duration,
    framing: Framing,
    mode: UnaryMode,
}

impl ClientBuilder {
    /// Connection limits (frame size, buffers).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Streaming (and mux unary) connections per endpoint (default [`DEFAULT_POOL_SIZE`]).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Connect timeout (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// How unary (thrift pingpong) messages are framed (default unframed).
    pub fn unary_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Plain (one call per connection, pooled; default, what every peer speaks) or mux.
    pub fn unary_mode(mut self, mode: UnaryMode) -> Self {
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
                plain: Mutex::new(Vec::new()),
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
    plain: Mutex<Vec<Arc<UnaryConn>>>,
    next: AtomicUsize,
    stats: Arc<Stats>,
}

/// A TTHeader client transport (`rpc_core::ClientTransport`): thrift pingpong methods use unary
/// TTHeader; every other method — and protobuf pingpong, which unary TTHeader cannot carry —
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
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            framing: Framing::default(),
            mode: UnaryMode::default(),
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

impl Inner {
    async fn connect(&self) -> Result<(Io, rpc_core::Peer), Status> {
        Io::connect(&self.cfg.endpoint, self.cfg.connect_timeout)
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

    async fn unary_conn(&self) -> Result<Arc<UnaryConn>, Status> {
        if self.cfg.mode == UnaryMode::Mux {
            let mut slot = self.mux_slots[self.slot()].lock().await;
            if let Some(c) = slot.as_ref().filter(|c| c.try_acquire()) {
                return Ok(c.clone());
            }
            let (io, _) = self.connect().await?;
            let conn = UnaryConn::start(
                io,
                UnaryMode::Mux,
                self.cfg.framing,
                self.cfg.limits.clone(),
                &self.stats,
            );
            *slot = Some(conn.clone());
            return Ok(conn);
        }
        {
            let mut idle = self.plain.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|c| !c.is_dead());
            if let Some(c) = idle.iter().find(|c| c.try_acquire()) {
                return Ok(c.clone());
            }
        }
        let (io, _) = self.connect().await?;
        let conn = UnaryConn::start(
            io,
            UnaryMode::Plain,
            self.cfg.framing,
            self.cfg.limits.clone(),
            &self.stats,
        );
        let acquired = conn.try_acquire();
        debug_assert!(acquired, "a fresh connection is free");
        self.plain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn.clone());
        Ok(conn)
    }
}

impl ClientTransport for TtHeaderClient {
    fn open(
        &self,
        ctx: &CallContext,
    ) -> BoxFuture<'static, Result<Arc<dyn ClientStreamRaw>, Status>> {
        let inner = self.inner.clone();
        let ctx = ctx.clone();
        Box::pin(async move {
            let method = ctx.method();
            if method.mode == Mode::PingPong && method.payload == PayloadKind::Thrift {
                let conn = inner.unary_conn().await?;
                Ok(conn.open(&ctx))
            } else {
                let conn = inner.stream_conn().await?;
                conn.open(&ctx)
            }
        })
    }
}
