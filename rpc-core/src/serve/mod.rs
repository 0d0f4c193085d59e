//! The serving layer: one [`Listener`] runs any set of [`Protocol`]s on any set of TCP and
//! Unix addresses for one [`Server`], tells the protocols apart per connection by its first
//! bytes, enforces the listener-level [`ServerLimits`](crate::ServerLimits), and shuts
//! everything down gracefully.
//!
//! ```no_run
//! # async fn run(server: rpc_core::Server, ttheader: impl rpc_core::serve::Protocol) -> std::io::Result<()> {
//! use std::time::Duration;
//! use rpc_core::serve::Listener;
//!
//! let running = Listener::new(server)
//!     .protocol(ttheader)
//!     .bind("tcp://127.0.0.1:0".parse().expect("an address"))
//!     .await?
//!     .bind("unix:///tmp/echo.sock".parse().expect("an address"))
//!     .await?
//!     .start();
//! println!("listening on {:?}", running.local_addrs());
//! running.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! # A connection's life
//!
//! 1. **Accept.** Each bound address has its own accept loop and its own cap of
//!    [`ServerLimits::max_connections`](crate::ServerLimits::max_connections). At the cap the
//!    loop *stops accepting* until a connection closes: new connects wait in the kernel's
//!    listen backlog ([`ServerLimits::listen_backlog`](crate::ServerLimits::listen_backlog)),
//!    and past that the kernel refuses or drops them, so the pressure reaches clients as slow
//!    connects, not as connections opened and closed at once (which would cost a syscall
//!    round per attempt under a flood and look to the client like a server crash).
//! 2. **Detect.** The listener reads until one protocol's [`Protocol::detect`] says
//!    [`Detect::Yes`] (the earliest registered wins if several do), every protocol says
//!    [`Detect::No`] (the connection is closed), [`MAX_PREFACE`] bytes arrived undecided
//!    (closed), or [`ServerLimits::frame_timeout`](crate::ServerLimits::frame_timeout) passed
//!    (closed).
//! 3. **Serve.** The chosen protocol's [`Protocol::serve`] gets the socket, the bytes read so
//!    far, the peer, the server and a [`Shutdown`] handle. The connection counts against the
//!    cap until its [`Io`] (or both of its halves) is dropped.
//! 4. **Shut down.** [`Running::shutdown`] runs the [`Shutdown::on_drain`] hooks and fires
//!    [`Shutdown::draining`] on every connection, and stops every accept loop (Unix socket
//!    files are removed). Each protocol drains
//!    in its own way (TTHeader: `crrst` on unary replies and refusal of new streams; HTTP/2:
//!    GOAWAY) and closes its connection when its calls are done. After the grace period
//!    [`Shutdown::closed`] fires and protocols close what is left at once; [`CLOSE_TIMEOUT`]
//!    later the listener closes the sockets still open itself (through their
//!    [`CloseHandle`](crate::net::CloseHandle)) and aborts their tasks.

mod listener;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::sync::{oneshot, watch};

use crate::net::Io;
use crate::transport::BoxFuture;
use crate::{Peer, Server};

pub use listener::{AcceptControl, Listener, Running, CLOSE_TIMEOUT, MAX_PREFACE};

/// What a protocol makes of a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detect {
    /// This connection is mine.
    Yes,
    /// It is not mine, whatever follows.
    No,
    /// Too few bytes to tell; read more.
    NeedMore,
}

/// A wire protocol a [`Listener`] can serve, told apart from the others by the first bytes a
/// client sends (so each protocol's preface must differ from the others' within
/// [`MAX_PREFACE`] bytes).
pub trait Protocol: Send + Sync + 'static {
    /// A short name for logs (`"ttheader"`, `"grpc"`).
    fn name(&self) -> &'static str;

    /// Classifies a connection by the bytes received so far (possibly none). Called again
    /// with more bytes after [`Detect::NeedMore`]; must not panic on any input.
    fn detect(&self, prefix: &[u8]) -> Detect;

    /// Serves one connection this protocol claimed. The future should run for as long as the
    /// connection does (resolving once [`Accepted::closed`] does is the simple way): the
    /// listener closes the socket and aborts this future if they are still alive
    /// [`CLOSE_TIMEOUT`] after [`Shutdown::closed`].
    fn serve(&self, conn: Accepted) -> BoxFuture<'static, ()>;
}

/// A connection a [`Protocol`] claimed, with everything needed to serve it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Accepted {
    /// The socket. The listener counts the connection as open until it (or both of its
    /// halves, or the guard of [`Io::into_parts`]) is dropped.
    pub io: Io,
    /// The bytes already read from `io` during detection: the start of the protocol's data.
    pub prefix: BytesMut,
    /// Who connected.
    pub peer: Peer,
    /// The server whose services to call.
    pub server: Server,
    /// Graceful-shutdown signals.
    pub shutdown: Shutdown,
    /// Resolves once the connection's socket is dropped.
    pub closed: ConnClosed,
}

/// Where a listener is in its shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Serving,
    Draining,
    Closed,
}

/// The graceful-shutdown signals of a [`Listener`], as a connection sees them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    phase: watch::Receiver<Phase>,
    hooks: Arc<DrainHooks>,
}

impl Shutdown {
    pub(crate) fn new(phase: watch::Receiver<Phase>, hooks: Arc<DrainHooks>) -> Shutdown {
        Shutdown { phase, hooks }
    }

    /// Runs `hook` when shutdown begins, synchronously inside the first poll of
    /// [`Running::shutdown`] (before it yields), or now if shutdown has begun. For state that
    /// must change before anything else happens — TTHeader marks its connection draining
    /// here, so every reply written after `shutdown` was first polled carries `crrst` — while
    /// the rest of the drain waits on [`Shutdown::draining`]. Dropping the returned guard
    /// unregisters the hook (do it when the connection ends).
    pub fn on_drain(&self, hook: impl FnOnce() + Send + 'static) -> DrainHook {
        let mut st = lock(&self.hooks.state);
        if st.draining {
            drop(st);
            hook();
            return DrainHook { hooks: None, id: 0 };
        }
        let id = st.next;
        st.next += 1;
        st.hooks.insert(id, Box::new(hook));
        DrainHook {
            hooks: Some(Arc::downgrade(&self.hooks)),
            id,
        }
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        *self.phase.borrow() >= Phase::Draining
    }

    /// Resolves when shutdown begins (at once if it has): stop taking new work, tell the peer
    /// in the protocol's own way, let open calls finish.
    pub async fn draining(&self) {
        self.reached(Phase::Draining).await
    }

    /// Resolves when the grace period is over (at once if it is): close the connection now.
    pub async fn closed(&self) {
        self.reached(Phase::Closed).await
    }

    pub(crate) async fn reached(&self, phase: Phase) {
        let mut rx = self.phase.clone();
        if rx.wait_for(|p| *p >= phase).await.is_err() {
            // The listener is gone without shutting down: this phase never comes.
            std::future::pending::<()>().await;
        }
    }
}

/// Hooks registered with [`Shutdown::on_drain`].
#[derive(Default)]
pub(crate) struct DrainHooks {
    state: Mutex<HookState>,
}

#[derive(Default)]
struct HookState {
    draining: bool,
    next: u64,
    hooks: HashMap<u64, Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for DrainHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.state);
        f.debug_struct("DrainHooks")
            .field("draining", &st.draining)
            .field("hooks", &st.hooks.len())
            .finish()
    }
}

impl DrainHooks {
    /// Marks shutdown begun and runs every hook registered so far.
    pub(crate) fn run(&self) {
        let hooks = {
            let mut st = lock(&self.state);
            st.draining = true;
            std::mem::take(&mut st.hooks)
        };
        hooks.into_values().for_each(|h| h());
    }
}

/// Unregisters a [`Shutdown::on_drain`] hook when dropped.
#[derive(Debug)]
pub struct DrainHook {
    hooks: Option<Weak<DrainHooks>>,
    id: u64,
}

impl Drop for DrainHook {
    fn drop(&mut self) {
        if let Some(hooks) = self.hooks.as_ref().and_then(Weak::upgrade) {
            lock(&hooks.state).hooks.remove(&self.id);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A future that resolves once a served connection's socket has been dropped (see
/// [`Accepted::closed`]).
#[derive(Debug)]
pub struct ConnClosed {
    rx: oneshot::Receiver<()>,
}

impl ConnClosed {
    pub(crate) fn new() -> (oneshot::Sender<()>, ConnClosed) {
        let (tx, rx) = oneshot::channel();
        (tx, ConnClosed { rx })
    }
}

impl Future for ConnClosed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Nothing is ever sent: the sender lives in the socket's guard and is only dropped.
        Pin::new(&mut self.rx).poll(cx).map(|_| ())
    }
}
