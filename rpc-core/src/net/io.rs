//! [`Io`]: one connected socket of any kind, and its owned read and write halves.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

use super::{Address, TcpKeepalive};
#[cfg(feature = "tls")]
use super::{TlsClientConfig, TlsPeer};
use crate::Peer;

/// Dials a connection in place of the built-in TCP and Unix-socket connect (see
/// [`ConnectOptions::connector`]): a byte stream of any kind for an address, e.g. a
/// shared-memory byte stream for `shm://` (`rpc_transport_shm::stream::connector`), so a
/// transport's client runs over it unchanged. Cheap to clone.
#[derive(Clone)]
pub struct Connector(Arc<DialFn>);

/// What a [`Connector`] runs: an address in, a connection (and its peer) out.
type DialFn =
    dyn Fn(&Address) -> crate::transport::BoxFuture<'static, io::Result<(Io, Peer)>> + Send + Sync;

impl Connector {
    /// A connector dialing with `dial`.
    pub fn new<F>(dial: F) -> Connector
    where
        F: Fn(&Address) -> crate::transport::BoxFuture<'static, io::Result<(Io, Peer)>>
            + Send
            + Sync
            + 'static,
    {
        Connector(Arc::new(dial))
    }

    /// Dials `addr`.
    pub fn dial(
        &self,
        addr: &Address,
    ) -> crate::transport::BoxFuture<'static, io::Result<(Io, Peer)>> {
        (self.0)(addr)
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

/// How a client connects: the timeout, TCP keepalive and TLS. Transports keep one in their
/// client configuration and pass it to [`Io::connect_with`], so every transport gets TLS and
/// keepalive the same way.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Connect timeout, name resolution and TLS handshake included
    /// ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub timeout: Duration,
    /// TCP keepalive (on by default, [`TcpKeepalive::default`]); `None` turns it off.
    pub keepalive: Option<TcpKeepalive>,
    /// TLS, if the server serves it (off by default).
    #[cfg(feature = "tls")]
    pub tls: Option<TlsClientConfig>,
    /// Dials instead of the built-in connect (`None`, the default: TCP for `tcp://`, a Unix
    /// socket for `unix://`). Keepalive is then the connector's business; TLS, if set, still
    /// runs over what it returns; the timeout covers both.
    pub connector: Option<Connector>,
}

/// How long a client waits for a connection to be established (TCP connect, name resolution
/// and TLS handshake). 5 s: a server that has not accepted and answered by then is overloaded
/// or unreachable, and the call is better failed (and retried elsewhere) than kept waiting.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: DEFAULT_CONNECT_TIMEOUT,
            keepalive: Some(TcpKeepalive::default()),
            #[cfg(feature = "tls")]
            tls: None,
            connector: None,
        }
    }
}

impl ConnectOptions {
    /// The defaults: 5 s timeout, keepalive on, no TLS.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Sets the connect timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets TCP keepalive (`None`: off).
    pub fn keepalive(mut self, keepalive: Option<TcpKeepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Connects with TLS (`None`: plain).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: Option<TlsClientConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Dials with `connector` instead of the built-in connect (`None`: built-in).
    pub fn connector(mut self, connector: Option<Connector>) -> Self {
        self.connector = connector;
        self
    }
}

/// Any byte stream a protocol can be served on (TLS, an in-memory pipe, ...).
pub trait AsyncIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncIo for T {}

/// The socket inside an [`Io`]. TCP and Unix sockets are kept as themselves, so a protocol
/// can split them into owned halves without a lock, or pass file descriptors over a Unix
/// socket (the shared-memory transport does).
#[non_exhaustive]
pub enum IoStream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix socket connection.
    Unix(UnixStream),
    /// Anything else.
    Boxed(Box<dyn AsyncIo>),
}

impl std::fmt::Debug for IoStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoStream::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            IoStream::Unix(s) => f.debug_tuple("Unix").field(s).finish(),
            IoStream::Boxed(_) => f.write_str("Boxed"),
        }
    }
}

/// Keeps a served connection counted by its listener while it lives (see
/// [`Io::into_parts`]). Dropping it releases the connection's slot.
#[derive(Clone, Default)]
pub struct IoGuard(Option<Arc<dyn Any + Send + Sync>>);

impl std::fmt::Debug for IoGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "IoGuard(held)"
        } else {
            "IoGuard(none)"
        })
    }
}

impl IoGuard {
    pub(crate) fn new(inner: impl Any + Send + Sync) -> IoGuard {
        IoGuard(Some(Arc::new(inner)))
    }
}

/// The flags behind a [`CloseHandle`]. Checked on every poll of a socket that has one (one
/// atomic load); sockets without one (client connections) pay nothing.
#[derive(Default, Debug)]
struct KillSwitch {
    reads: AtomicBool,
    writes: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
}

/// Ends a connection's I/O from outside the tasks that read and write it: the server's way
/// to stop a connection whose reader sits in a read the peer will never complete.
#[derive(Clone)]
pub struct CloseHandle(Arc<KillSwitch>);

impl std::fmt::Debug for CloseHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloseHandle")
            .field("reads_closed", &self.0.reads.load(Ordering::Acquire))
            .field("writes_closed", &self.0.writes.load(Ordering::Acquire))
            .finish()
    }
}

impl CloseHandle {
    /// From now on reads return end-of-file (a pending read wakes up). Writes go on, so
    /// replies already queued still go out.
    pub fn close_reads(&self) {
        self.0.reads.store(true, Ordering::Release);
        self.0.read_waker.wake();
    }

    /// Reads return end-of-file and writes fail with `ConnectionAborted` from now on.
    pub fn close(&self) {
        self.0.writes.store(true, Ordering::Release);
        self.0.write_waker.wake();
        self.close_reads();
    }
}

fn poll_read_unless_closed(
    kill: &Option<Arc<KillSwitch>>,
    cx: &mut Context<'_>,
    read: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<()>>,
) -> Poll<io::Result<()>> {
    let Some(k) = kill else {
        return read(cx);
    };
    // A ready read with nothing filled is end-of-file.
    if k.reads.load(Ordering::Acquire) {
        return Poll::Ready(Ok(()));
    }
    match read(cx) {
        Poll::Pending => {
            k.read_waker.register(cx.waker());
            if k.reads.load(Ordering::Acquire) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
        ready => ready,
    }
}

fn poll_write_unless_closed<T>(
    kill: &Option<Arc<KillSwitch>>,
    cx: &mut Context<'_>,
    write: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    let Some(k) = kill else {
        return write(cx);
    };
    let aborted = || {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection closed by the server",
        )))
    };
    if k.writes.load(Ordering::Acquire) {
        return aborted();
    }
    match write(cx) {
        Poll::Pending => {
            k.write_waker.register(cx.waker());
            if k.writes.load(Ordering::Acquire) {
                aborted()
            } else {
                Poll::Pending
            }
        }
        ready => ready,
    }
}

/// A connected socket: a TCP or Unix stream, or any boxed [`AsyncIo`].
///
/// A connection a [`Listener`](crate::serve::Listener) accepted carries a guard: the listener
/// counts the connection as open (against
/// [`ServerLimits::max_connections`](crate::ServerLimits::max_connections)) until this value,
/// or both halves from [`Io::into_split`], or the guard from [`Io::into_parts`], are dropped.
#[derive(Debug)]
pub struct Io {
    stream: IoStream,
    guard: IoGuard,
    kill: Option<Arc<KillSwitch>>,
}

impl Io {
    /// Wraps a socket (no guard).
    pub fn new(stream: IoStream) -> Io {
        Io {
            stream,
            guard: IoGuard::default(),
            kill: None,
        }
    }

    /// Wraps any byte stream.
    pub fn boxed(stream: impl AsyncIo) -> Io {
        Io::new(IoStream::Boxed(Box::new(stream)))
    }

    pub(crate) fn with_guard(mut self, guard: IoGuard) -> Io {
        self.guard = guard;
        self
    }

    /// A handle that ends this socket's reads and writes (and its halves') from anywhere.
    pub fn close_handle(&mut self) -> CloseHandle {
        CloseHandle(self.kill.get_or_insert_with(Default::default).clone())
    }

    /// The socket and the guard that keeps the connection counted; hold the guard for as long
    /// as the socket is in use.
    pub fn into_parts(self) -> (IoStream, IoGuard) {
        (self.stream, self.guard)
    }

    /// The socket.
    pub fn stream(&self) -> &IoStream {
        &self.stream
    }

    /// Connects to `addr` within `timeout` with default [`ConnectOptions`] (TCP keepalive
    /// on, no TLS). See [`Io::connect_with`].
    pub async fn connect(addr: &Address, timeout: Duration) -> io::Result<(Io, Peer)> {
        Self::connect_with(addr, &ConnectOptions::new().timeout(timeout)).await
    }

    /// Connects to `addr` as `options` say, within their timeout (name resolution and the
    /// TLS handshake included): each address a `tcp://` host resolves to is tried in turn,
    /// and TCP sockets get `TCP_NODELAY` (frames are batched by the transports; Nagle would
    /// only add latency) and keepalive. With TLS the connection returned is encrypted and the
    /// peer is [`Peer::Tls`]; a handshake failure is an error naming the address (a server
    /// that does not speak TLS shows as the connection closed during the handshake).
    /// `shm://` is not a socket address: `Unsupported` (unless `options` carry a
    /// [`Connector`], which then dials every address).
    pub async fn connect_with(addr: &Address, options: &ConnectOptions) -> io::Result<(Io, Peer)> {
        let timeout = options.timeout;
        let connect = async {
            let (io, peer) = match (addr, &options.connector) {
                (_, Some(c)) => c.dial(addr).await?,
                (Address::Tcp { .. }, None) => {
                    let mut last = None;
                    let mut connected = None;
                    for a in addr.resolve().await? {
                        match TcpStream::connect(a).await {
                            Ok(s) => {
                                s.set_nodelay(true)?;
                                if let Some(ka) = &options.keepalive {
                                    ka.apply(&s)?;
                                }
                                connected = Some((Io::new(IoStream::Tcp(s)), Peer::Tcp(a)));
                                break;
                            }
                            Err(e) => last = Some(e),
                        }
                    }
                    match connected {
                        Some(c) => c,
                        None => {
                            return Err(
                                last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound))
                            )
                        }
                    }
                }
                (Address::Unix(path), None) => (
                    Io::new(IoStream::Unix(UnixStream::connect(path).await?)),
                    Peer::Unix(Some(path.clone())),
                ),
                (Address::Shm(_), None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("{addr}: shared memory is not a socket; use the shm transport (or a shared-memory byte stream as the connector)"),
                    ))
                }
            };
            tls_upgrade(addr, options, io, peer).await
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out after {timeout:?}"),
            )),
        }
    }

    /// Splits into owned halves; both carry the guard. TCP and Unix sockets split without a
    /// lock; a boxed stream goes through [`tokio::io::split`].
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        let (r, w) = match self.stream {
            IoStream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadInner::Tcp(r), WriteInner::Tcp(w))
            }
            IoStream::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadInner::Unix(r), WriteInner::Unix(w))
            }
            IoStream::Boxed(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadInner::Boxed(r), WriteInner::Boxed(w))
            }
        };
        (
            ReadHalf {
                inner: r,
                _guard: self.guard.clone(),
                kill: self.kill.clone(),
            },
            WriteHalf {
                inner: w,
                _guard: self.guard,
                kill: self.kill,
            },
        )
    }
}

/// The read half of an [`Io`].
#[derive(Debug)]
pub struct ReadHalf {
    inner: ReadInner,
    _guard: IoGuard,
    kill: Option<Arc<KillSwitch>>,
}

impl ReadHalf {
    /// Whether this is a Unix socket's read half.
    pub fn is_unix(&self) -> bool {
        matches!(self.inner, ReadInner::Unix(_))
    }

    /// Shuts the socket's read direction down in the kernel (`shutdown(SHUT_RD)`), on a Unix
    /// socket only; says whether it did. What the peer wrote before stays to be read, then
    /// reads return end-of-file. On Linux the peer's writes from then on fail with `EPIPE`
    /// (the kernel queues a write whole or refuses it, under the receiving socket's lock),
    /// so a byte either reaches this reader or its writer learns it did not: a server's
    /// race-free way to stop taking requests on a connection it drains.
    pub fn shutdown_read(&self) -> io::Result<bool> {
        match &self.inner {
            ReadInner::Unix(r) => {
                let stream: &UnixStream = r.as_ref();
                socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Read)?;
                Ok(true)
            }
            ReadInner::Tcp(_) | ReadInner::Boxed(_) => Ok(false),
        }
    }
}

/// Runs the client's TLS handshake on a connected `io` when `options` ask for TLS.
#[cfg(feature = "tls")]
async fn tls_upgrade(
    addr: &Address,
    options: &ConnectOptions,
    io: Io,
    peer: Peer,
) -> io::Result<(Io, Peer)> {
    let Some(tls) = &options.tls else {
        return Ok((io, peer));
    };
    let host = match addr {
        Address::Tcp { host, .. } => Some(host.as_str()),
        _ => None,
    };
    let stream = tls.connect(host, io).await.map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                " (the server closed the connection: is it serving TLS on this address?)"
            }
            _ => "",
        };
        io::Error::new(e.kind(), format!("TLS handshake with {addr}: {e}{hint}"))
    })?;
    let (_, conn) = stream.get_ref();
    let peer = Peer::Tls(Arc::new(TlsPeer::from_client(peer, conn, host)));
    Ok((Io::boxed(stream), peer))
}

/// Without TLS built, a connection is used as it is.
#[cfg(not(feature = "tls"))]
async fn tls_upgrade(
    _addr: &Address,
    _options: &ConnectOptions,
    io: Io,
    peer: Peer,
) -> io::Result<(Io, Peer)> {
    Ok((io, peer))
}

enum ReadInner {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
    Boxed(tokio::io::ReadHalf<Box<dyn AsyncIo>>),
}

impl std::fmt::Debug for ReadInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadInner::Tcp(_) => "Tcp",
            ReadInner::Unix(_) => "Unix",
            ReadInner::Boxed(_) => "Boxed",
        })
    }
}

/// The write half of an [`Io`].
#[derive(Debug)]
pub struct WriteHalf {
    inner: WriteInner,
    _guard: IoGuard,
    kill: Option<Arc<KillSwitch>>,
}

impl WriteHalf {
    /// Whether [`WriteHalf::try_write`] can write without a task: a TCP or Unix socket (a
    /// boxed stream, TLS for one, is written only through [`AsyncWrite`]).
    pub fn can_try_write(&self) -> bool {
        !matches!(self.inner, WriteInner::Boxed(_))
    }

    /// Writes what the socket takes now, without waiting and without a task's waker: the
    /// bytes written, or `WouldBlock` when it takes none (and always for a boxed stream; see
    /// [`WriteHalf::can_try_write`]). Fails with `ConnectionAborted` once the connection's
    /// [`CloseHandle::close`] was called, as [`AsyncWrite`] writes do.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        if self
            .kill
            .as_ref()
            .is_some_and(|k| k.writes.load(Ordering::Acquire))
        {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by the server",
            ));
        }
        match &self.inner {
            WriteInner::Tcp(s) => s.try_write(buf),
            WriteInner::Unix(s) => s.try_write(buf),
            WriteInner::Boxed(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

enum WriteInner {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
    Boxed(tokio::io::WriteHalf<Box<dyn AsyncIo>>),
}

impl std::fmt::Debug for WriteInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteInner::Tcp(_) => "Tcp",
            WriteInner::Unix(_) => "Unix",
            WriteInner::Boxed(_) => "Boxed",
        })
    }
}

/// Forwards the AsyncRead/AsyncWrite calls to whichever socket `$e` holds.
macro_rules! each {
    ($e:expr, $s:ident => $body:expr) => {
        match $e {
            Inner::Tcp($s) => $body,
            Inner::Unix($s) => $body,
            Inner::Boxed($s) => $body,
        }
    };
}

/// AsyncRead and AsyncWrite for a type with a `kill` field and a socket enum at `$field`.
macro_rules! impl_io {
    (read $ty:ty, $inner:ident, $field:ident) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                use $inner as Inner;
                let this = self.get_mut();
                poll_read_unless_closed(&this.kill, cx, |cx| {
                    each!(&mut this.$field, s => Pin::new(s).poll_read(cx, buf))
                })
            }
        }
    };
    (write $ty:ty, $inner:ident, $field:ident) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                use $inner as Inner;
                let this = self.get_mut();
                poll_write_unless_closed(&this.kill, cx, |cx| {
                    each!(&mut this.$field, s => Pin::new(s).poll_write(cx, buf))
                })
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                use $inner as Inner;
                let this = self.get_mut();
                poll_write_unless_closed(&this.kill, cx, |cx| {
                    each!(&mut this.$field, s => Pin::new(s).poll_write_vectored(cx, bufs))
                })
            }
            fn is_write_vectored(&self) -> bool {
                use $inner as Inner;
                each!(&self.$field, s => s.is_write_vectored())
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                use $inner as Inner;
                let this = self.get_mut();
                poll_write_unless_closed(&this.kill, cx, |cx| {
                    each!(&mut this.$field, s => Pin::new(s).poll_flush(cx))
                })
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                use $inner as Inner;
                let this = self.get_mut();
                poll_write_unless_closed(&this.kill, cx, |cx| {
                    each!(&mut this.$field, s => Pin::new(s).poll_shutdown(cx))
                })
            }
        }
    };
}

impl_io!(read Io, IoStream, stream);
impl_io!(write Io, IoStream, stream);
impl_io!(read ReadHalf, ReadInner, inner);
impl_io!(write WriteHalf, WriteInner, inner);
