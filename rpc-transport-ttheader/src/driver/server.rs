//! [`TtHeaderProtocol`]: TTHeader unary and TTHeader Streaming as one protocol of
//! `rpc_core::serve::Listener`, told apart from other protocols (and from each other) by the
//! first bytes of a connection.

use std::sync::{Arc, Weak};

use rpc_core::serve::{Accepted, Detect, Protocol};
use rpc_core::transport::BoxFuture;
use rpc_core::Status;

use super::stream_conn::Conn;
use super::unary::UnaryServerConn;
use crate::proto::{detect, Detection, Role};
use crate::session::{Limits, Stats};

/// The TTHeader protocol for `rpc_core::serve::Listener`: claims connections whose first bytes
/// are a TTHeader packet, serving unary TTHeader (framed or unframed, pooled or multiplexed) and
/// TTHeader Streaming, and plain Thrift without TTHeader (framed or buffered; see
/// [`TtHeaderProtocol::plain_thrift`]).
///
/// On graceful shutdown a unary connection answers its remaining calls with `crrst` set (the
/// Kitex "connection reset" hint, so the client does not reuse it) and a streaming connection
/// refuses new streams; each closes once its calls have ended, or when the grace period is
/// over.
///
/// Clones share [`TtHeaderProtocol::stats`].
#[derive(Debug, Clone, Default)]
pub struct TtHeaderProtocol {
    limits: Limits,
    stats: Arc<Stats>,
    /// Refuse plain Thrift (framed or buffered, no TTHeader) instead of serving it.
    no_plain: bool,
}

impl TtHeaderProtocol {
    /// The protocol with these connection limits.
    pub fn new(limits: Limits) -> TtHeaderProtocol {
        TtHeaderProtocol {
            limits,
            stats: Arc::default(),
            no_plain: false,
        }
    }

    /// Whether connections speaking plain Thrift — framed (`u32` length + message) or buffered
    /// (the bare message), strict or old non-strict envelope, no TTHeader, as Apache Thrift's
    /// `TFramedTransport`/`TBufferedTransport` clients and volo-thrift's `framed()`/`buffered()`
    /// codecs send — are served on this port (the default, as Kitex and volo-thrift servers
    /// do). Their unary calls are served and answered in the same framing; unknown
    /// methods get an `UNKNOWN_METHOD` exception and streaming methods an exception saying
    /// they need TTHeader Streaming. Without a header there is no metadata, deadline, service
    /// name (`Service:method` from TMultiplexedProtocol routes by service) or business
    /// status (it arrives as an `INTERNAL_ERROR` exception naming the code). `false` leaves
    /// such connections unclaimed (the listener closes them).
    ///
    /// ```
    /// use rpc_transport_ttheader::TtHeaderProtocol;
    ///
    /// // TTHeader and TTHeader Streaming only: a plain Thrift client's connection is closed.
    /// let ttheader_only = TtHeaderProtocol::default().plain_thrift(false);
    /// # drop(ttheader_only);
    /// ```
    pub fn plain_thrift(mut self, serve: bool) -> TtHeaderProtocol {
        self.no_plain = !serve;
        self
    }

    /// Sets the connection limits.
    pub fn limits(mut self, limits: Limits) -> TtHeaderProtocol {
        self.limits = limits;
        self
    }

    /// Live connection and stream counts of every connection this protocol serves.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

/// A served connection of either kind.
enum Served {
    Stream(Arc<Conn>),
    Unary(Arc<UnaryServerConn>),
}

/// A served connection that does not keep it alive.
enum WeakServed {
    Stream(Weak<Conn>),
    Unary(Weak<UnaryServerConn>),
}

impl WeakServed {
    fn start_drain(&self) {
        match self {
            WeakServed::Stream(c) => c.upgrade().iter().for_each(|c| c.start_drain()),
            WeakServed::Unary(c) => c.upgrade().iter().for_each(|c| c.start_drain()),
        }
    }
}

impl Served {
    fn weak(&self) -> WeakServed {
        match self {
            Served::Stream(c) => WeakServed::Stream(Arc::downgrade(c)),
            Served::Unary(c) => WeakServed::Unary(Arc::downgrade(c)),
        }
    }

    fn start_drain(&self) {
        match self {
            Served::Stream(c) => c.start_drain(),
            Served::Unary(c) => c.start_drain(),
        }
    }

    async fn drain(&self) {
        match self {
            Served::Stream(c) => c.drain().await,
            Served::Unary(c) => c.drain().await,
        }
    }

    fn close(&self) {
        match self {
            Served::Stream(c) => c.fail(Status::unavailable("server shut down")),
            Served::Unary(c) => c.close(),
        }
    }
}

impl Protocol for TtHeaderProtocol {
    fn name(&self) -> &'static str {
        "ttheader"
    }

    fn detect(&self, prefix: &[u8]) -> Detect {
        match detect(prefix) {
            Detection::TTHeader | Detection::TTHeaderStreaming => Detect::Yes,
            Detection::Plain(_) if !self.no_plain => Detect::Yes,
            Detection::Plain(_) => Detect::No,
            Detection::NeedMore => Detect::NeedMore,
            Detection::Unknown => Detect::No,
        }
    }

    fn serve(&self, conn: Accepted) -> BoxFuture<'static, ()> {
        let limits = self.limits.clone();
        let stats = self.stats.clone();
        Box::pin(async move {
            let Accepted {
                mut io,
                prefix,
                peer,
                server,
                shutdown,
                closed,
                ..
            } = conn;
            let close_reads = io.close_handle();
            let served = match detect(&prefix) {
                Detection::TTHeaderStreaming => Served::Stream(Conn::start(
                    Role::Server,
                    io,
                    prefix,
                    limits,
                    Some(peer),
                    &stats,
                    Some(server),
                )),
                Detection::TTHeader => Served::Unary(UnaryServerConn::start(
                    io,
                    prefix,
                    limits,
                    Some(peer),
                    &stats,
                    server,
                    None,
                )),
                Detection::Plain(framing) => Served::Unary(UnaryServerConn::start(
                    io,
                    prefix,
                    limits,
                    Some(peer),
                    &stats,
                    server,
                    Some(framing),
                )),
                // The listener hands over only what `detect` claimed.
                Detection::NeedMore | Detection::Unknown => return,
            };
            // Marked at once when shutdown begins, so every reply written after that carries
            // `crrst` (the rest of the drain runs below, when this task is next polled).
            let _hook = shutdown.on_drain({
                let served = served.weak();
                move || served.start_drain()
            });
            tokio::pin!(closed);
            tokio::select! {
                () = &mut closed => return,
                () = shutdown.draining() => {}
            }
            served.start_drain();
            tokio::select! {
                () = &mut closed => return,
                () = served.drain() => {}
                () = shutdown.closed() => {}
            }
            // Flushes what is queued and sends FIN; the reader may sit in a read the peer
            // never completes, so end it here instead of waiting for the peer to close.
            served.close();
            close_reads.close_reads();
            closed.await;
        })
    }
}
