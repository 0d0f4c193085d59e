//! Serving an `rpc_core::Server` over TTHeader on TCP and Unix listeners: an accept loop, and
//! per connection a protocol check from its first bytes (TTHeader unary vs TTHeader Streaming).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;
use rpc_core::{Peer, Server, Status};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{Limits, Stats};
use super::io::Io;
use super::stream_conn::Conn;
use super::unary::UnaryServerConn;
use crate::proto::{detect, Detection, Role};

/// Longest a new connection may take to send enough bytes to tell its protocol.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Server settings.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Connection limits.
    pub limits: Limits,
}

impl ServerConfig {
    /// Sets the connection limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

enum Served {
    Stream(Weak<Conn>),
    Unary(Weak<UnaryServerConn>),
}

struct Shared {
    server: Server,
    config: ServerConfig,
    stats: Arc<Stats>,
    conns: Mutex<Vec<Served>>,
}

/// A running listener. Dropping it does not stop it; call [`ServeHandle::shutdown`].
pub struct ServeHandle {
    local_addr: Option<SocketAddr>,
    path: Option<PathBuf>,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ServeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHandle")
            .field("local_addr", &self.local_addr)
            .field("path", &self.path)
            .finish()
    }
}

impl ServeHandle {
    /// The bound TCP address (for `127.0.0.1:0` listeners).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Live connection and stream counts of this listener's connections.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    /// Graceful shutdown: stop accepting, refuse new streams (unary replies carry `crrst`), let
    /// open calls finish within `grace`, then close every connection.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        // Mark open connections before the listener goes away, so anyone who sees connects
        // refused also sees `crrst` and refusals on the existing connections.
        for c in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            match c {
                Served::Stream(w) => w.upgrade().iter().for_each(|c| c.start_drain()),
                Served::Unary(w) => w.upgrade().iter().for_each(|c| c.start_drain()),
            }
        }
        let _ = self.accept.await;
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
        let conns: Vec<_> =
            std::mem::take(&mut *self.shared.conns.lock().unwrap_or_else(|e| e.into_inner()));
        let drains = conns.iter().map(|c| async move {
            match c {
                Served::Stream(w) => {
                    if let Some(c) = w.upgrade() {
                        let _ = tokio::time::timeout(grace, c.drain()).await;
                        c.fail(Status::unavailable("server shut down"));
                    }
                }
                Served::Unary(w) => {
                    if let Some(c) = w.upgrade() {
                        let _ = tokio::time::timeout(grace, c.drain()).await;
                        c.close();
                    }
                }
            }
        });
        futures::future::join_all(drains).await;
    }
}

/// Serves `server` on a TCP address.
pub async fn serve_tcp(
    server: Server,
    addr: SocketAddr,
    config: ServerConfig,
) -> io::Result<ServeHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        server,
        config,
        stats: Arc::new(Stats::default()),
        conns: Mutex::new(Vec::new()),
    });
    let accept = tokio::spawn(accept_tcp(listener, shared.clone(), stopped));
    Ok(ServeHandle {
        local_addr: Some(local),
        path: None,
        stop,
        accept,
        shared,
    })
}

/// Serves `server` on a Unix socket at `path` (an existing socket file there is replaced).
pub async fn serve_unix(
    server: Server,
    path: impl AsRef<Path>,
    config: ServerConfig,
) -> io::Result<ServeHandle> {
    let path = path.as_ref().to_path_buf();
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        server,
        config,
        stats: Arc::new(Stats::default()),
        conns: Mutex::new(Vec::new()),
    });
    let accept = tokio::spawn(accept_unix(listener, path.clone(), shared.clone(), stopped));
    Ok(ServeHandle {
        local_addr: None,
        path: Some(path),
        stop,
        accept,
        shared,
    })
}

async fn accept_tcp(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            Ok(()) = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((s, peer)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve_io(shared.clone(), Io::Tcp(s), Some(Peer::Tcp(peer))));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn accept_unix(
    listener: UnixListener,
    path: PathBuf,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            Ok(()) = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    tokio::spawn(serve_io(shared.clone(), Io::Unix(s), Some(Peer::Unix(Some(path.clone())))));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn serve_io(shared: Arc<Shared>, mut io: Io, peer: Option<Peer>) {
    let mut prefix = BytesMut::with_capacity(8 * 1024);
    let kind = tokio::time::timeout(DETECT_TIMEOUT, async {
        loop {
            match detect(&prefix) {
                Detection::NeedMore => {}
                other => return Ok(other),
            }
            if io.read_buf(&mut prefix).await? == 0 {
                return Ok(Detection::Unknown);
            }
        }
    })
    .await;
    let kind: io::Result<Detection> = kind.unwrap_or(Ok(Detection::Unknown));
    let limits = shared.config.limits.clone();
    let served = match kind {
        Ok(Detection::TTHeaderStreaming) => Served::Stream(Arc::downgrade(&Conn::start(
            Role::Server,
            io,
            prefix,
            limits,
            peer,
            &shared.stats,
            Some(shared.server.clone()),
        ))),
        Ok(Detection::TTHeader) => Served::Unary(Arc::downgrade(&UnaryServerConn::start(
            io,
            prefix,
            limits,
            peer,
            &shared.stats,
            shared.server.clone(),
        ))),
        Ok(other) => {
            tracing::debug!(?peer, ?other, "not a TTHeader connection; closed");
            return;
        }
        Err(e) => {
            tracing::debug!(?peer, error = %e, "connection failed before its protocol was known");
            return;
        }
    };
    let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
    conns.retain(|c| match c {
        Served::Stream(w) => w.strong_count() > 0,
        Served::Unary(w) => w.strong_count() > 0,
    });
    conns.push(served);
}
