//! The client transport: a pool of shared-memory sessions to one `shm://PATH` server.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::net::Address;
use rpc_core::transport::{BoxFuture, ClientStreamRaw, ClientTransport, Connect};
use rpc_core::{CallContext, Peer, Status};
use rpc_transport_ttheader::proto::Role;
use rpc_transport_ttheader::session::Limits;
use tokio::net::UnixStream;
use tokio::time::Instant;

use crate::setup::{self, Running, Sizes};
use crate::stats::ShmStats;

/// Sessions per client by default: two, so one session's reader task does not cap throughput
/// on a multi-core host, while each costs two regions (`2 × (arena + ring)` of memory at most;
/// pages are faulted in as used). The first call opens one session; the others open in the
/// background behind it, so a fresh client pays one handshake before its first reply.
pub const DEFAULT_POOL_SIZE: usize = 2;
/// How long a connect (socket and handshake) may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnect delay after a failed connect; doubles per failure up to
/// [`MAX_RECONNECT_BACKOFF`]. Milliseconds, so a restarted server is found again at once.
pub const INITIAL_RECONNECT_BACKOFF: Duration = Duration::from_millis(1);
/// Longest reconnect delay.
pub const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(1);
/// Sessions a call tries to open its stream on: a session a server's go-away retires between
/// the pool's pick and the open makes the open fail before anything is sent, and the next pick
/// skips it. Three covers two such races in a row (two restarts within microseconds); a
/// session that keeps failing opens is an outage, reported as the last error.
pub const MAX_OPEN_ATTEMPTS: u32 = 3;

/// Builds a [`ShmClient`].
#[derive(Debug, Clone)]
pub struct ShmClientBuilder {
    address: Address,
    sizes: Sizes,
    limits: Limits,
    pool_size: usize,
    connect_timeout: Duration,
}

impl ShmClientBuilder {
    /// Region sizes to ask for (the server may grant less).
    pub fn sizes(mut self, sizes: Sizes) -> Self {
        self.sizes = sizes;
        self
    }

    /// Arena bytes per direction to ask for (a power of two ≥ 64 KiB).
    pub fn arena_bytes(mut self, n: usize) -> Self {
        self.sizes.arena_bytes = n;
        self
    }

    /// Session limits (frame size, receive buffers).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sessions in the pool (default [`DEFAULT_POOL_SIZE`]).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Connect timeout (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// The client (sessions are made on first use: the first call's, then the rest of the
    /// pool in the background).
    pub fn build(self) -> ShmClient {
        ShmClient {
            inner: Arc::new(Inner {
                slots: (0..self.pool_size)
                    .map(|_| tokio::sync::Mutex::new(SlotState::default()))
                    .collect(),
                filling: (0..self.pool_size)
                    .map(|_| AtomicBool::new(false))
                    .collect(),
                next: AtomicUsize::new(0),
                stats: Arc::new(ShmStats::default()),
                cfg: self,
            }),
        }
    }
}

#[derive(Default)]
struct SlotState {
    running: Option<Running>,
    failures: u32,
    retry_at: Option<Instant>,
}

struct Inner {
    cfg: ShmClientBuilder,
    slots: Vec<tokio::sync::Mutex<SlotState>>,
    /// Per slot: a background task is opening its session (see `Inner::fill_later`).
    filling: Vec<AtomicBool>,
    next: AtomicUsize,
    stats: Arc<ShmStats>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for s in &self.slots {
            if let Ok(s) = s.try_lock() {
                if let Some(r) = &s.running {
                    crate::link::lost(&r.session, r.link(), Status::unavailable("client dropped"));
                }
            }
        }
    }
}

/// A shared-memory client transport (`rpc_core::transport::ClientTransport`): every method, all four
/// modes, as TTHeader Streaming frames over a pool of sessions. Cheap to clone; clones share
/// the pool. Dropping the last clone closes the sessions.
#[derive(Clone)]
pub struct ShmClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmClient")
            .field("address", &self.inner.cfg.address)
            .field("stats", &self.inner.stats)
            .finish()
    }
}

impl ShmClient {
    /// A builder for the server at `address`: an `shm://PATH` address, PATH being the
    /// server's control socket (`Address::shm(path)`, or `"shm:///path".parse()`), as every
    /// transport's client takes an [`Address`]. Any other scheme is refused when the client
    /// connects: every call then fails with `INVALID_ARGUMENT` (nothing is retried);
    /// [`ShmClient::parse`] checks a text address up front.
    pub fn builder(address: impl Into<Address>) -> ShmClientBuilder {
        ShmClientBuilder {
            address: address.into(),
            sizes: Sizes::default(),
            limits: Limits::default(),
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// A client with default settings for the server at `address` (see
    /// [`builder`](Self::builder)).
    pub fn new(address: impl Into<Address>) -> ShmClient {
        Self::builder(address).build()
    }

    /// A client with default settings for the `shm://PATH` address in `address`; fails on
    /// text that is not an address or an address of another scheme.
    pub fn parse(address: &str) -> Result<ShmClient, Status> {
        let address = address
            .parse::<Address>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        shm_path(&address)?;
        Ok(ShmClient::new(address))
    }

    /// Counters of this client's sessions.
    pub fn stats(&self) -> &Arc<ShmStats> {
        &self.inner.stats
    }

    /// Bytes in use of each live session's own arena (one entry per pool slot with a session).
    pub fn arena_usage(&self) -> Vec<usize> {
        self.inner
            .slots
            .iter()
            .filter_map(|s| s.try_lock().ok())
            .filter_map(|s| s.running.as_ref().map(|r| r.link().arena_in_use()))
            .collect()
    }
}

/// The control socket path of an `shm://` address; `INVALID_ARGUMENT` for another scheme.
fn shm_path(address: &Address) -> Result<&PathBuf, Status> {
    match address {
        Address::Shm(path) => Ok(path),
        other => Err(Status::invalid_argument(format!(
            "{other}: the shared-memory transport needs an shm://PATH address"
        ))),
    }
}

impl Inner {
    /// A usable session for the next call. Slots are used in turn; a slot with no session
    /// connects — but while another slot has a live one, the call goes there and this slot's
    /// session is opened in the background, so a fresh client pays one handshake before its
    /// first call, not one per pool slot.
    async fn session(self: &Arc<Self>) -> Result<Running, Status> {
        // A wrong scheme is the caller's error, not an outage: no reconnect backoff.
        shm_path(&self.cfg.address)?;
        let n = self.slots.len();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        if n > 1 {
            if let Ok(slot) = self.slots[i].try_lock() {
                if let Some(r) = slot.running.as_ref().filter(|r| r.session.is_usable()) {
                    return Ok(r.clone());
                }
            }
            // Slot `i` is empty (or being filled): borrow a live sibling, fill `i` behind it.
            for k in (1..n).map(|d| (i + d) % n) {
                let live = self.slots[k].try_lock().ok().and_then(|s| {
                    s.running
                        .as_ref()
                        .filter(|r| r.session.is_usable())
                        .cloned()
                });
                if let Some(r) = live {
                    self.fill_later(i);
                    return Ok(r);
                }
            }
        }
        let mut slot = self.slots[i].lock().await;
        if let Some(r) = slot.running.as_ref().filter(|r| r.session.is_usable()) {
            return Ok(r.clone());
        }
        slot.running = None;
        if let Some(at) = slot.retry_at {
            tokio::time::sleep_until(at).await;
        }
        match self.connect().await {
            Ok(r) => {
                slot.failures = 0;
                slot.retry_at = None;
                slot.running = Some(r.clone());
                drop(slot);
                for k in (1..n).map(|d| (i + d) % n) {
                    self.fill_later(k);
                }
                Ok(r)
            }
            Err(e) => {
                let backoff = INITIAL_RECONNECT_BACKOFF
                    .saturating_mul(1 << slot.failures.min(16))
                    .min(MAX_RECONNECT_BACKOFF);
                slot.failures += 1;
                slot.retry_at = Some(Instant::now() + backoff);
                Err(e)
            }
        }
    }

    /// Opens slot `k`'s session in a background task unless it has a live one, one is being
    /// opened, or its reconnect backoff has not passed. The task holds only a weak reference
    /// while it connects: a client dropped meanwhile closes the new session at once.
    fn fill_later(self: &Arc<Self>, k: usize) {
        if self.filling[k].swap(true, Ordering::AcqRel) {
            return;
        }
        let busy = match self.slots[k].try_lock() {
            Ok(s) => {
                s.running.as_ref().is_some_and(|r| r.session.is_usable())
                    || s.retry_at.is_some_and(|at| at > Instant::now())
            }
            Err(_) => true,
        };
        if busy {
            self.filling[k].store(false, Ordering::Release);
            return;
        }
        let weak = Arc::downgrade(self);
        let cfg = self.cfg.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let result = connect(&cfg, &stats).await;
            let Some(inner) = weak.upgrade() else {
                if let Ok(r) = result {
                    crate::link::lost(&r.session, r.link(), Status::unavailable("client dropped"));
                }
                return;
            };
            {
                let mut slot = inner.slots[k].lock().await;
                match result {
                    Ok(r) if slot.running.as_ref().is_some_and(|r| r.session.is_usable()) => {
                        // A caller filled it first.
                        crate::link::lost(&r.session, r.link(), Status::unavailable("not needed"));
                    }
                    Ok(r) => {
                        slot.failures = 0;
                        slot.retry_at = None;
                        slot.running = Some(r);
                    }
                    Err(e) => {
                        tracing::debug!(%e, "shm background connect failed");
                        let backoff = INITIAL_RECONNECT_BACKOFF
                            .saturating_mul(1 << slot.failures.min(16))
                            .min(MAX_RECONNECT_BACKOFF);
                        slot.failures += 1;
                        slot.retry_at = Some(Instant::now() + backoff);
                    }
                }
            }
            inner.filling[k].store(false, Ordering::Release);
            // The slot's guard is gone before `inner`: if this was the last reference, its
            // Drop finds every slot unlocked and closes the sessions.
            drop(inner);
        });
    }

    async fn connect(&self) -> Result<Running, Status> {
        connect(&self.cfg, &self.stats).await
    }
}

/// Connects one session: the socket, the handshake, the session's tasks.
async fn connect(cfg: &ShmClientBuilder, stats: &Arc<ShmStats>) -> Result<Running, Status> {
    let path = shm_path(&cfg.address)?;
    let unavailable = |e: std::io::Error| {
        Status::unavailable(format!("connect to shm://{}: {e}", path.display()))
    };
    let est = tokio::time::timeout(cfg.connect_timeout, async {
        let stream = UnixStream::connect(path).await?;
        setup::client(stream, cfg.sizes).await
    })
    .await
    .map_err(|_| Status::unavailable(format!("connect to shm://{}: timed out", path.display())))?
    .map_err(unavailable)?;
    setup::start(
        est,
        Role::Client,
        cfg.limits.clone(),
        Some(Peer::Shm(path.clone())),
        stats,
        None,
    )
}

impl ClientTransport for ShmClient {
    fn open(
        &self,
        ctx: &CallContext,
    ) -> BoxFuture<'static, Result<Arc<dyn ClientStreamRaw>, Status>> {
        // Binary metadata travels as raw string-KV bytes, as over TTHeader.
        let inner = self.inner.clone();
        let ctx = ctx.clone();
        Box::pin(async move {
            let mut attempt = 1;
            loop {
                let r = inner.session().await?;
                match r.session.open(&ctx) {
                    Ok(stream) => return Ok(stream),
                    // The session went away between the pick and the open (a server's
                    // go-away retired it, or it was lost): `open` failed before anything was
                    // sent, so the call is opened on another session.
                    Err(e) if attempt < MAX_OPEN_ATTEMPTS && !r.session.is_usable() => {
                        tracing::debug!(%e, attempt, "shm session unusable at open; retrying");
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }
}

impl Connect for ShmClient {
    fn connect(address: &str) -> Result<Self, Status> {
        ShmClient::parse(address)
    }
}
