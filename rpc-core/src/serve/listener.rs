//! [`Listener`] (binding) and [`Running`] (accept loops, detection, shutdown).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, UnixListener, UnixSocket};
use tokio::sync::{oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};

use super::{Accepted, ConnClosed, Detect, DrainHooks, Phase, Protocol, Shutdown};
#[cfg(feature = "tls")]
use crate::net::tls::TLS_HANDSHAKE_RECORD;
#[cfg(feature = "tls")]
use crate::net::TlsPeer;
#[cfg(feature = "tls")]
use crate::net::TlsServerConfig;
use crate::net::{Address, CloseHandle, Io, IoGuard, IoStream};

/// Without the `tls` feature no listener serves TLS: the configuration cannot be made.
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum TlsServerConfig {}
use crate::{Peer, Server, ServerLimits};

/// Bytes a connection may send before some protocol recognises it. Every protocol we know
/// decides within 24 bytes (the HTTP/2 preface); this bounds what an undecided connection
/// can make the server hold, and is also the initial read buffer handed to the protocol.
pub const MAX_PREFACE: usize = 8 * 1024;

/// How long connection tasks get after [`Shutdown::closed`] fires before the listener closes
/// their sockets itself (reads end, writes fail) and aborts them: closing a socket needs no
/// peer cooperation, so a protocol that honours the signal is done well within this.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long an accept loop pauses after an accept error (out of file descriptors and the
/// like) before trying again, instead of spinning on the error.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Builds a set of listeners for one [`Server`]: add protocols, bind addresses, then
/// [`Listener::start`]. See [the module docs](super).
pub struct Listener {
    server: Server,
    protocols: Vec<Arc<dyn Protocol>>,
    bound: Vec<Bound>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field(
                "protocols",
                &self.protocols.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field(
                "addrs",
                &self.bound.iter().map(|b| &b.addr).collect::<Vec<_>>(),
            )
            .finish()
    }
}

struct Bound {
    addr: Address,
    socket: Socket,
    tls: Option<TlsServerConfig>,
}

enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
    /// Connections from elsewhere ([`Listener::incoming`]); the lock is never contended (one
    /// accept loop polls it) and makes the source `Sync` like the sockets.
    Incoming(tokio::sync::Mutex<IncomingConns>),
}

/// A source of connections for [`Listener::incoming`], boxed.
type IncomingConns = futures::stream::BoxStream<'static, io::Result<(IoStream, Peer)>>;

impl Listener {
    /// A listener for `server`, with no protocol and no address yet.
    pub fn new(server: Server) -> Listener {
        Listener {
            server,
            protocols: Vec::new(),
            bound: Vec::new(),
        }
    }

    /// Adds a protocol. When several claim a connection, the one added first wins.
    pub fn protocol(mut self, protocol: impl Protocol) -> Listener {
        self.protocols.push(Arc::new(protocol));
        self
    }

    /// Binds `addr` with the server's listen backlog.
    ///
    /// `tcp://`: every address the host resolves to is tried until one binds
    /// (`SO_REUSEADDR` on, so a restarted server does not wait out `TIME_WAIT`); port 0 picks
    /// a free port ([`Listener::local_addrs`] tells which). `unix://`: a socket file left at
    /// the path by an earlier run is replaced, but one a running server listens on, or any
    /// other file there, is an `AddrInUse` error (see [`free_unix_path`](crate::net::free_unix_path);
    /// take a running server's sockets over with [`Listener::bind_inherited`] instead).
    /// `shm://` binds a Unix socket at the path, like `unix://`: the shared-memory transport's
    /// protocol (`rpc_transport_shm::ShmProtocol`) does its handshake over it.
    pub async fn bind(self, addr: Address) -> io::Result<Listener> {
        self.bind_with(addr, None).await
    }

    /// Binds a `tcp://` address as [`Listener::bind`] does, serving TLS on it: each accepted
    /// connection does the TLS handshake first (within
    /// [`ServerLimits::frame_timeout`](crate::ServerLimits::frame_timeout), together with
    /// protocol detection), and the protocols are then detected and served on the decrypted
    /// bytes, so one TLS port serves every protocol of this listener. A connection whose first
    /// byte is not a TLS handshake record (a plaintext client) is closed at once. The peer
    /// the handlers see is [`Peer::Tls`], with the client's certificates under mTLS. Only
    /// `tcp://`: a Unix socket is guarded by file permissions (`Unsupported`).
    #[cfg(feature = "tls")]
    pub async fn bind_tls(self, addr: Address, tls: TlsServerConfig) -> io::Result<Listener> {
        if !matches!(addr, Address::Tcp { .. }) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("bind {addr}: TLS is served on tcp:// addresses only"),
            ));
        }
        self.bind_with(addr, Some(tls)).await
    }

    /// Serves `addr` on a listening socket this process inherited instead of binding it: the
    /// successor's side of a hot restart, where the previous server passed its listening
    /// sockets over (`AcceptControl::pause` on its side; the fd passing itself is
    /// `rpc_transport_shm::takeover`). The socket file of a `unix://` or `shm://` address never
    /// disappears, so no client sees a refused connect while servers change. `fd` must be a
    /// listening socket of `addr`'s kind (a TCP socket for `tcp://`, a Unix stream socket for
    /// the others; `InvalidInput` otherwise); it is served without TLS.
    ///
    /// The socket is put in listening state again here, with this server's listen backlog:
    /// on Linux that also makes this process the one whose credentials later connects see
    /// (`SO_PEERCRED` of a Unix socket names the process that called `listen`, and a client
    /// watching its server's pid must see the new one).
    pub fn bind_inherited(mut self, addr: Address, fd: OwnedFd) -> io::Result<Listener> {
        let with_addr = |e: io::Error| io::Error::new(e.kind(), format!("adopt {addr}: {e}"));
        let backlog = i32::try_from(self.server.limits().listen_backlog).unwrap_or(i32::MAX);
        socket2::SockRef::from(&fd)
            .listen(backlog)
            .map_err(with_addr)?;
        let socket = match &addr {
            Address::Tcp { .. } => {
                let l = std::net::TcpListener::from(fd);
                let local = l.local_addr().map_err(with_addr)?;
                l.set_nonblocking(true).map_err(with_addr)?;
                let l = TcpListener::from_std(l).map_err(with_addr)?;
                self.bound.push(Bound {
                    addr: Address::from(local),
                    socket: Socket::Tcp(l),
                    tls: None,
                });
                return Ok(self);
            }
            Address::Unix(path) | Address::Shm(path) => {
                let l = std::os::unix::net::UnixListener::from(fd);
                let local = l.local_addr().map_err(with_addr)?;
                if local.as_pathname() != Some(path.as_path()) {
                    return Err(with_addr(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("the inherited socket is bound to {local:?}"),
                    )));
                }
                l.set_nonblocking(true).map_err(with_addr)?;
                Socket::Unix(UnixListener::from_std(l).map_err(with_addr)?, path.clone())
            }
        };
        self.bound.push(Bound {
            addr,
            socket,
            tls: None,
        });
        Ok(self)
    }

    async fn bind_with(
        mut self,
        addr: Address,
        tls: Option<TlsServerConfig>,
    ) -> io::Result<Listener> {
        let backlog = self.server.limits().listen_backlog;
        let with_addr = |e: io::Error| io::Error::new(e.kind(), format!("bind {addr}: {e}"));
        let socket = match &addr {
            Address::Tcp { .. } => Socket::Tcp(bind_tcp(&addr, backlog).await.map_err(with_addr)?),
            Address::Unix(path) => {
                Socket::Unix(bind_unix(path, backlog).map_err(with_addr)?, path.clone())
            }
            Address::Shm(path) => {
                Socket::Unix(bind_unix(path, backlog).map_err(with_addr)?, path.clone())
            }
        };
        let addr = match &socket {
            Socket::Tcp(l) => Address::from(l.local_addr()?),
            Socket::Unix(..) | Socket::Incoming(_) => addr,
        };
        self.bound.push(Bound { addr, socket, tls });
        Ok(self)
    }

    /// Serves the connections `incoming` yields as if accepted on a bound address: any byte
    /// streams (a shared-memory `ShmStreamListener`'s, an in-memory pipe's) get this
    /// listener's protocols, detection, limits (`max_connections` applies to the source as to
    /// an address: at the cap it is not polled) and graceful shutdown (which drops the
    /// source). `addr` names the source in [`Listener::local_addrs`] and logs. An `Err` item
    /// is logged and skipped as an accept error is; a source that ends serves nothing more.
    pub fn incoming<S, T>(mut self, addr: Address, incoming: S) -> Listener
    where
        S: futures::Stream<Item = io::Result<(T, Peer)>> + Send + 'static,
        T: crate::net::AsyncIo,
    {
        use futures::StreamExt;
        let conns = incoming
            .map(|r| r.map(|(io, peer)| (IoStream::Boxed(Box::new(io)), peer)))
            .boxed();
        self.bound.push(Bound {
            addr,
            socket: Socket::Incoming(tokio::sync::Mutex::new(conns)),
            tls: None,
        });
        self
    }

    /// The bound addresses, in bind order (a `tcp://` address with its actual port).
    pub fn local_addrs(&self) -> Vec<Address> {
        self.bound.iter().map(|b| b.addr.clone()).collect()
    }

    /// Starts accepting on every bound address (needs a tokio runtime).
    pub fn start(self) -> Running {
        let limits = self.server.limits().clone();
        let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
        let shared = Arc::new(Shared {
            server: self.server,
            protocols: self.protocols,
            frame_timeout: limits.frame_timeout,
            phase: phase_tx,
            phase_rx,
            drain_hooks: Arc::default(),
            live: AtomicUsize::new(0),
            all_closed: Notify::new(),
            tasks: Mutex::new(HashMap::new()),
            sockets: Mutex::new(HashMap::new()),
            next_task: AtomicU64::new(0),
            accepting: watch::channel(true).0,
            handed_over: AtomicBool::new(false),
            listening: Mutex::new(Vec::new()),
        });
        let mut listeners = Vec::new();
        let mut accepts = Vec::new();
        for b in self.bound {
            let state = Arc::new(ListenerState {
                addr: b.addr,
                tls: b.tls,
                cap: Arc::new(Semaphore::new(limits.max_connections)),
                live: AtomicUsize::new(0),
            });
            listeners.push(state.clone());
            let socket = Arc::new(b.socket);
            lock(&shared.listening).push((state.addr.clone(), socket.clone()));
            accepts.push(tokio::spawn(accept_loop(shared.clone(), state, socket)));
        }
        Running {
            shared,
            listeners,
            accepts,
        }
    }
}

async fn bind_tcp(addr: &Address, backlog: u32) -> io::Result<TcpListener> {
    let mut last = None;
    for a in addr.resolve().await? {
        let socket = if a.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(backlog)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable)))
}

fn bind_unix(path: &std::path::Path, backlog: u32) -> io::Result<UnixListener> {
    crate::net::free_unix_path(path)?;
    let socket = UnixSocket::new_stream()?;
    socket.bind(path)?;
    socket.listen(backlog)
}

/// Listeners serving; stop them with [`Running::shutdown`]. Dropping this value does not stop
/// them: they serve until the runtime ends.
pub struct Running {
    shared: Arc<Shared>,
    listeners: Vec<Arc<ListenerState>>,
    accepts: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addrs", &self.local_addrs())
            .field("connections", &self.connections())
            .finish()
    }
}

impl Running {
    /// The bound addresses, in bind order (a `tcp://` address with its actual port).
    pub fn local_addrs(&self) -> Vec<Address> {
        self.listeners.iter().map(|l| l.addr.clone()).collect()
    }

    /// Open connections per listener, in bind order: those being detected and those being
    /// served.
    pub fn connections(&self) -> Vec<usize> {
        self.listeners
            .iter()
            .map(|l| l.live.load(Ordering::Acquire))
            .collect()
    }

    /// A [`Shutdown`] handle, to watch this listener's shutdown from outside a protocol.
    pub fn shutdown_signal(&self) -> Shutdown {
        self.shared.shutdown()
    }

    /// A handle that pauses and resumes the accept loops and hands the listening sockets out,
    /// for a hot restart (see [`AcceptControl`]).
    pub fn accept_control(&self) -> AcceptControl {
        AcceptControl {
            shared: self.shared.clone(),
        }
    }

    /// Graceful shutdown: stop accepting (Unix socket files are removed), tell every
    /// protocol to drain its connections, wait up to `grace` for them to close, then tell the
    /// protocols to close what is left and abort connection tasks still running
    /// [`CLOSE_TIMEOUT`] after that.
    pub async fn shutdown(self, grace: Duration) {
        // Before the first await: every connection is marked draining by the time this
        // future first returns (see `Shutdown::on_drain`), and the accept loops stop.
        self.shared.drain_hooks.run();
        self.shared.phase.send_replace(Phase::Draining);
        for a in self.accepts {
            let _ = a.await;
        }
        // The listening sockets close now (a handed-over one stays open in its new process).
        lock(&self.shared.listening).clear();
        if !self.shared.wait_all_closed(grace).await {
            self.shared.phase.send_replace(Phase::Closed);
            if !self.shared.wait_all_closed(CLOSE_TIMEOUT).await {
                let tasks: Vec<_> = lock(&self.shared.tasks).drain().map(|(_, t)| t).collect();
                let sockets: Vec<_> = lock(&self.shared.sockets).values().cloned().collect();
                tracing::warn!(
                    connections = self.shared.live.load(Ordering::Acquire),
                    "connections still open after the grace period; closing their sockets"
                );
                sockets.iter().for_each(CloseHandle::close);
                tasks.iter().for_each(AbortHandle::abort);
                if !self.shared.wait_all_closed(CLOSE_TIMEOUT).await {
                    tracing::warn!(
                        connections = self.shared.live.load(Ordering::Acquire),
                        "a protocol keeps sockets open after they were closed"
                    );
                }
            }
        }
        self.shared.phase.send_replace(Phase::Closed);
    }
}

/// What every accept loop and connection task of one [`Running`] shares.
struct Shared {
    server: Server,
    protocols: Vec<Arc<dyn Protocol>>,
    frame_timeout: Duration,
    phase: watch::Sender<Phase>,
    phase_rx: watch::Receiver<Phase>,
    drain_hooks: Arc<DrainHooks>,
    /// Open connections over all listeners; `all_closed` fires when it drops to 0.
    live: AtomicUsize,
    all_closed: Notify,
    /// Connection tasks and open sockets by connection id, for closing what is left after
    /// the grace period. A task leaves when it ends, a socket when it is dropped (a protocol
    /// may keep it in tasks of its own).
    tasks: Mutex<HashMap<u64, AbortHandle>>,
    sockets: Mutex<HashMap<u64, CloseHandle>>,
    next_task: AtomicU64,
    /// Whether the accept loops accept (false while paused by [`AcceptControl::pause`]).
    accepting: watch::Sender<bool>,
    /// The sockets were handed to a successor: shutdown leaves the socket files in place.
    handed_over: AtomicBool,
    /// Every listening socket, for handing over; emptied when shutdown stops accepting.
    listening: Mutex<Vec<(Address, Arc<Socket>)>>,
}

/// Pauses and resumes a [`Running`]'s accept loops and hands out its listening sockets: the
/// predecessor's side of a hot restart. Cheap to clone.
///
/// [`AcceptControl::pause`] stops accepting (connects wait in the kernel's backlog; nothing is
/// refused) and returns a duplicate of every listening socket to pass to the successor, which
/// serves them with [`Listener::bind_inherited`]. From then on [`Running::shutdown`] leaves
/// the Unix socket files in place (they are the successor's now). If the successor fails,
/// [`AcceptControl::resume`] undoes the pause.
#[derive(Clone)]
pub struct AcceptControl {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AcceptControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptControl")
            .field("accepting", &*self.shared.accepting.borrow())
            .finish()
    }
}

impl AcceptControl {
    /// Stops accepting and returns every bound socket address with a duplicate of its listening
    /// socket, in bind order. A connection the loops accepted before is still served.
    /// `NotConnected` once shutdown has begun (the sockets are closing).
    pub fn pause(&self) -> io::Result<Vec<(Address, OwnedFd)>> {
        let listening = lock(&self.shared.listening);
        if self.shared.shutdown().is_draining() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the listener is shutting down",
            ));
        }
        self.shared.accepting.send_replace(false);
        self.shared.handed_over.store(true, Ordering::Release);
        // A source of connections (`Listener::incoming`) has no listening socket to hand
        // over: it is paused with the others and left out.
        listening
            .iter()
            .filter_map(|(addr, socket)| {
                let fd = match &**socket {
                    Socket::Tcp(l) => l.as_fd().try_clone_to_owned(),
                    Socket::Unix(l, _) => l.as_fd().try_clone_to_owned(),
                    Socket::Incoming(_) => return None,
                };
                Some(fd.map(|fd| (addr.clone(), fd)))
            })
            .collect()
    }

    /// Accepts again after [`AcceptControl::pause`] (the successor failed): shutdown removes
    /// the socket files again.
    pub fn resume(&self) {
        self.shared.handed_over.store(false, Ordering::Release);
        self.shared.accepting.send_replace(true);
    }

    /// Whether the accept loops are paused.
    pub fn is_paused(&self) -> bool {
        !*self.shared.accepting.borrow()
    }
}

impl Shared {
    fn shutdown(&self) -> Shutdown {
        Shutdown::new(self.phase_rx.clone(), self.drain_hooks.clone())
    }

    /// Waits until no connection is open; false if `timeout` passed first.
    async fn wait_all_closed(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            loop {
                let notified = self.all_closed.notified();
                if self.live.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }
}

struct ListenerState {
    addr: Address,
    tls: Option<TlsServerConfig>,
    cap: Arc<Semaphore>,
    live: AtomicUsize,
}

/// One open connection's place in its listener: dropped with the connection's socket.
struct Slot {
    id: u64,
    shared: Arc<Shared>,
    listener: Arc<ListenerState>,
    _permit: OwnedSemaphorePermit,
    _closed: oneshot::Sender<()>,
}

impl Slot {
    fn new(
        id: u64,
        shared: Arc<Shared>,
        listener: Arc<ListenerState>,
        permit: OwnedSemaphorePermit,
    ) -> (Slot, ConnClosed) {
        shared.live.fetch_add(1, Ordering::AcqRel);
        listener.live.fetch_add(1, Ordering::AcqRel);
        let (tx, closed) = ConnClosed::new();
        let slot = Slot {
            id,
            shared,
            listener,
            _permit: permit,
            _closed: tx,
        };
        (slot, closed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.shared.sockets).remove(&self.id);
        self.listener.live.fetch_sub(1, Ordering::AcqRel);
        if self.shared.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.all_closed.notify_waiters();
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: Arc<ListenerState>, socket: Arc<Socket>) {
    let shutdown = shared.shutdown();
    let mut accepting = shared.accepting.subscribe();
    loop {
        // Paused while a successor takes the sockets over (`AcceptControl`): connects wait in
        // the backlog. Accepting is cancel-safe: a connect not taken stays queued.
        tokio::select! {
            r = accepting.wait_for(|a| *a) => if r.is_err() { break },
            () = shutdown.reached(Phase::Draining) => break,
        }
        let mut paused = accepting.clone();
        // At the cap, stop accepting until a connection closes (see the module docs).
        let permit = tokio::select! {
            p = listener.cap.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.reached(Phase::Draining) => break,
            _ = paused.wait_for(|a| !*a) => continue,
        };
        let accepted = tokio::select! {
            r = accept(&socket, shared.server.limits()) => r,
            () = shutdown.reached(Phase::Draining) => break,
            _ = paused.wait_for(|a| !*a) => continue,
        };
        match accepted {
            Ok((stream, peer)) => spawn_conn(&shared, &listener, stream, peer, permit),
            Err(e) => {
                tracing::warn!(addr = %listener.addr, error = %e, "accept failed");
                drop(permit);
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    () = shutdown.reached(Phase::Draining) => break,
                }
            }
        }
    }
    if let Socket::Unix(_, path) = &*socket {
        if shared.handed_over.load(Ordering::Acquire) {
            // The path is the successor's now.
            return;
        }
        if let Err(e) = std::fs::remove_file(path) {
            tracing::debug!(path = %path.display(), error = %e, "could not remove the socket file");
        }
    }
}

async fn accept(socket: &Socket, limits: &ServerLimits) -> io::Result<(IoStream, Peer)> {
    match socket {
        Socket::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            // Protocols batch their writes; Nagle would only add latency.
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY");
            }
            // Bounds the kernel memory a peer that stops reading can pin (limits docs).
            if let Some(bytes) = limits.socket_send_buffer {
                if let Err(e) = socket2::SockRef::from(&s).set_send_buffer_size(bytes) {
                    tracing::debug!(error = %e, "SO_SNDBUF");
                }
            }
            if let Some(ka) = &limits.tcp_keepalive {
                if let Err(e) = ka.apply(&s) {
                    tracing::debug!(error = %e, "SO_KEEPALIVE");
                }
            }
            Ok((IoStream::Tcp(s), Peer::Tcp(peer)))
        }
        Socket::Unix(l, path) => {
            let (s, _) = l.accept().await?;
            Ok((IoStream::Unix(s), Peer::Unix(Some(path.clone()))))
        }
        Socket::Incoming(conns) => match futures::StreamExt::next(&mut *conns.lock().await).await {
            Some(r) => r,
            // The source ended: nothing more to accept (until shutdown ends the loop).
            None => std::future::pending().await,
        },
    }
}

fn spawn_conn(
    shared: &Arc<Shared>,
    listener: &Arc<ListenerState>,
    stream: IoStream,
    peer: Peer,
    permit: OwnedSemaphorePermit,
) {
    let id = shared.next_task.fetch_add(1, Ordering::Relaxed);
    let (slot, closed) = Slot::new(id, shared.clone(), listener.clone(), permit);
    let mut io = Io::new(stream).with_guard(IoGuard::new(slot));
    lock(&shared.sockets).insert(id, io.close_handle());
    let task = {
        let shared = shared.clone();
        let tls = listener.tls.clone();
        async move {
            serve_conn(&shared, tls, io, peer, closed).await;
            lock(&shared.tasks).remove(&id);
        }
    };
    // Hold the map while spawning, so the task's own removal cannot run before the insert.
    let mut tasks = lock(&shared.tasks);
    let handle = tokio::spawn(task);
    tasks.insert(id, handle.abort_handle());
}

async fn serve_conn(
    shared: &Arc<Shared>,
    tls: Option<TlsServerConfig>,
    io: Io,
    peer: Peer,
    closed: ConnClosed,
) {
    let shutdown = shared.shutdown();
    let mut prefix = BytesMut::with_capacity(MAX_PREFACE);
    let log_peer = peer.clone();
    let start = async {
        let (mut io, peer) = match &tls {
            Some(tls) => tls_accept(tls, io, peer).await?,
            None => (io, peer),
        };
        let chosen = detect(&shared.protocols, &mut io, &mut prefix).await?;
        Ok::<_, io::Error>((chosen, io, peer))
    };
    let detected = tokio::select! {
        r = tokio::time::timeout(shared.frame_timeout, start) => r,
        () = shutdown.closed() => return,
    };
    let peer = log_peer;
    let (chosen, io, peer) = match detected {
        Ok(Ok((Some(i), io, peer))) => (i, io, peer),
        Ok(Ok((None, _, _))) => {
            tracing::debug!(%peer, prefix = ?&prefix[..prefix.len().min(32)], "no protocol recognises the connection; closed");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed before its protocol was known");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, timeout = ?shared.frame_timeout, "no protocol preface in time; closed");
            return;
        }
    };
    let protocol = shared.protocols[chosen].clone();
    // Counts the connection as open for its protocol while it is served (metrics enabled).
    let _counted = crate::observe::ConnGauge::open(protocol.name());
    protocol
        .serve(Accepted {
            io,
            prefix,
            peer,
            server: shared.server.clone(),
            shutdown,
            closed,
        })
        .await;
}

/// The server side of TLS on an accepted TCP connection: a first byte that is not a TLS
/// handshake record fails at once (a plaintext client on a TLS port), otherwise the
/// handshake runs and the peer becomes [`Peer::Tls`].
#[cfg(feature = "tls")]
async fn tls_accept(tls: &TlsServerConfig, io: Io, peer: Peer) -> io::Result<(Io, Peer)> {
    if let IoStream::Tcp(s) = io.stream() {
        let mut first = [0u8; 1];
        if s.peek(&mut first).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "first byte {:#04x} is not a TLS handshake: a plaintext client on a TLS port",
                    first[0]
                ),
            ));
        }
    }
    let stream = tls
        .accept(io)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
    let peer = Peer::Tls(Arc::new(TlsPeer::from_server(peer, stream.get_ref().1)));
    Ok((Io::boxed(stream), peer))
}

#[cfg(not(feature = "tls"))]
async fn tls_accept(tls: &TlsServerConfig, _io: Io, _peer: Peer) -> io::Result<(Io, Peer)> {
    match *tls {}
}

/// Reads until a protocol claims the connection (`Some(index)`) or none can (`None`).
async fn detect(
    protocols: &[Arc<dyn Protocol>],
    io: &mut Io,
    prefix: &mut BytesMut,
) -> io::Result<Option<usize>> {
    loop {
        let mut undecided = false;
        for (i, p) in protocols.iter().enumerate() {
            match p.detect(prefix) {
                Detect::Yes => return Ok(Some(i)),
                Detect::NeedMore => undecided = true,
                Detect::No => {}
            }
        }
        if !undecided || prefix.len() >= MAX_PREFACE {
            return Ok(None);
        }
        let room = MAX_PREFACE - prefix.len();
        prefix.reserve(room);
        if (&mut *io).take(room as u64).read_buf(prefix).await? == 0 {
            return Ok(None);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
