//! [`Io`]: one connected socket of any kind, and its owned read and write halves.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

use super::Address;
use crate::Peer;

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
}

impl Io {
    /// Wraps a socket (no guard).
    pub fn new(stream: IoStream) -> Io {
        Io {
            stream,
            guard: IoGuard::default(),
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

    /// The socket and the guard that keeps the connection counted; hold the guard for as long
    /// as the socket is in use.
    pub fn into_parts(self) -> (IoStream, IoGuard) {
        (self.stream, self.guard)
    }

    /// The socket.
    pub fn stream(&self) -> &IoStream {
        &self.stream
    }

    /// Connects to `addr` within `timeout` (name resolution included): each address a
    /// `tcp://` host resolves to is tried in turn, and TCP sockets get `TCP_NODELAY` (frames
    /// are batched by the transports; Nagle would only add latency). `shm://` is not a socket
    /// address: `Unsupported`.
    pub async fn connect(addr: &Address, timeout: Duration) -> io::Result<(Io, Peer)> {
        let connect = async {
            match addr {
                Address::Tcp { .. } => {
                    let mut last = None;
                    for a in addr.resolve().await? {
                        match TcpStream::connect(a).await {
                            Ok(s) => {
                                s.set_nodelay(true)?;
                                return Ok((Io::new(IoStream::Tcp(s)), Peer::Tcp(a)));
                            }
                            Err(e) => last = Some(e),
                        }
                    }
                    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
                }
                Address::Unix(path) => Ok((
                    Io::new(IoStream::Unix(UnixStream::connect(path).await?)),
                    Peer::Unix(Some(path.clone())),
                )),
                Address::Shm(_) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{addr}: shared memory is not a socket; use the shm transport"),
                )),
            }
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
            },
            WriteHalf {
                inner: w,
                _guard: self.guard,
            },
        )
    }
}

/// The read half of an [`Io`].
#[derive(Debug)]
pub struct ReadHalf {
    inner: ReadInner,
    _guard: IoGuard,
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

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use IoStream as Inner;
        each!(&mut self.get_mut().stream, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        use IoStream as Inner;
        each!(&mut self.get_mut().stream, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        use IoStream as Inner;
        each!(&mut self.get_mut().stream, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        use IoStream as Inner;
        each!(&self.stream, s => s.is_write_vectored())
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use IoStream as Inner;
        each!(&mut self.get_mut().stream, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use IoStream as Inner;
        each!(&mut self.get_mut().stream, s => Pin::new(s).poll_shutdown(cx))
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use ReadInner as Inner;
        each!(&mut self.get_mut().inner, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        use WriteInner as Inner;
        each!(&mut self.get_mut().inner, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        use WriteInner as Inner;
        each!(&mut self.get_mut().inner, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        use WriteInner as Inner;
        each!(&self.inner, s => s.is_write_vectored())
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use WriteInner as Inner;
        each!(&mut self.get_mut().inner, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use WriteInner as Inner;
        each!(&mut self.get_mut().inner, s => Pin::new(s).poll_shutdown(cx))
    }
}
