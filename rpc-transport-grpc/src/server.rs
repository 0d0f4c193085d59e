//! [`GrpcProtocol`]: gRPC as one protocol of `rpc_core::serve::Listener`, claimed by the
//! HTTP/2 client preface.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h2::server::SendResponse;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use rpc_core::codec::Encodable;
use rpc_core::serve::{Accepted, Detect, Protocol};
use rpc_core::transport::{BoxFuture, Finish, IncomingStream, ServerExt, ServerStreamRaw};
use rpc_core::{Code, Metadata, Server, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::calm::{CalmGuard, ReadTurn};
use crate::codec::{
    content_type_payload, hdr, is_grpc_content_type, parse_encoding, parse_timeout,
};
use crate::compression::{AcceptedEncodings, Compression, MessageCompression, ACCEPT_ENCODING};
use crate::config::{GrpcServerConfig, CALM_CLOSE_TIMEOUT};
use crate::headers::{
    append_metadata, append_status, metadata_from, metadata_matches, status_trailer,
};
use crate::ledger::{Gate, Ledger, STREAM_COST};
use crate::lock;
use crate::stream::{
    append, encode, flush, poll_capacity, send_data, status_from_h2, Charge, Coalesce, DataOut,
    Fanout, Flush, Outbox, Received, Receiver, WriteHold,
};

/// Requests taken off a connection before they are handled as one batch (see `serve_conn`):
/// enough to write the replies of a burst with one syscall, few enough that the first of them
/// is not held back long.
const MAX_ACCEPT_BATCH: usize = 64;

/// A request's header map of at most this capacity is kept (emptied) to build the response
/// header in; a larger one is freed at once rather than held for the stream.
const REUSE_HEADERS_MAX: usize = 32;

/// The HTTP/2 client connection preface (RFC 9113 §3.4): what a gRPC connection starts with.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// The ledger's inbound scan skips exactly the preface.
const _: () = assert!(PREFACE.len() == crate::ledger::PREFACE_LEN);

/// The gRPC protocol for `rpc_core::serve::Listener`: claims connections that start with the
/// HTTP/2 client preface and serves gRPC on them with `h2`.
///
/// ```no_run
/// # async fn run(server: rpc_core::Server) -> std::io::Result<()> {
/// use rpc_core::serve::Listener;
/// use rpc_transport_grpc::GrpcProtocol;
/// let running = Listener::new(server)
///     .protocol(GrpcProtocol::default())
///     .bind("tcp://127.0.0.1:0".parse().expect("an address"))
///     .await?
///     .start();
/// # Ok(()) }
/// ```
///
/// The server's `ServerLimits` apply: `max_concurrent_streams` is advertised as
/// `SETTINGS_MAX_CONCURRENT_STREAMS` (h2 refuses streams above it with `REFUSED_STREAM`),
/// `frame_timeout` bounds the HTTP/2 handshake, `idle_timeout` closes (with `GOAWAY`) a
/// connection that had no stream for that long, and what each connection holds is charged to
/// `max_buffered_bytes` (see the crate docs, "Memory bound"). On graceful shutdown each connection sends
/// `GOAWAY`, lets its open streams finish, and closes; at the end of the grace period the
/// rest is closed.
#[derive(Debug, Clone, Default)]
pub struct GrpcProtocol {
    cfg: Arc<GrpcServerConfig>,
}

impl GrpcProtocol {
    /// The protocol with these settings.
    pub fn new(cfg: GrpcServerConfig) -> GrpcProtocol {
        GrpcProtocol { cfg: Arc::new(cfg) }
    }

    /// The settings.
    pub fn config(&self) -> &GrpcServerConfig {
        &self.cfg
    }
}

impl Protocol for GrpcProtocol {
    fn name(&self) -> &'static str {
        "grpc"
    }

    fn detect(&self, prefix: &[u8]) -> Detect {
        let n = prefix.len().min(PREFACE.len());
        if prefix[..n] != PREFACE[..n] {
            Detect::No
        } else if n == PREFACE.len() {
            Detect::Yes
        } else {
            Detect::NeedMore
        }
    }

    fn serve(&self, conn: Accepted) -> BoxFuture<'static, ()> {
        let cfg = self.cfg.clone();
        Box::pin(serve_conn(conn, cfg))
    }
}

/// The socket as h2 sees it: the bytes already read during detection put back in front, and
/// every byte in and out shown to the connection's [`Ledger`]; reading stops while the
/// ledger says the connection is over its share of a used-up budget (see `ledger`).
///
/// Every frame read is also counted by the connection's [`CalmGuard`]: once it trips, no
/// more is given to h2, the connection task is told (`calmed`) and sends
/// `GOAWAY(ENHANCE_YOUR_CALM)`, and while that waits to be written (and after the write half
/// is shut) what the client still sends is read and thrown away, so that closing the socket
/// does not reset it (a reset would discard the `GOAWAY` before the client reads it).
///
/// Reads are cooperative: after a [`ReadTurn`]'s worth of bytes or frames the reader yields
/// once, so one connection's burst does not keep the worker from the others (tokio's own
/// budget counts socket reads, 128 per turn, each up to h2's read buffer: up to a megabyte
/// of tiny frames).
///
/// Writes are gathered while the connection task holds them (see [`WriteHold`]): h2 writes
/// every DATA frame of more than 256 bytes with a syscall of its own (it flushes before
/// buffering the next frame), so a round that hands it the coalesced messages of 16 streams
/// cost a `writev` (and a TCP segment) per stream; held, the round's frames go out together.
struct Rewind<T> {
    prefix: Bytes,
    io: T,
    /// Bytes h2 wrote while writes were held, not yet written to `io` (from `wpos`);
    /// allocated while it holds any.
    wbuf: Vec<u8>,
    wpos: usize,
    hold: Arc<WriteHold>,
    ledger: Arc<Ledger>,
    gate: Gate,
    calm: CalmGuard,
    calmed: Arc<Notify>,
    turn: ReadTurn,
    /// The turn is used up: the next read yields first.
    yield_next: bool,
    /// The write half was shut down after the `GOAWAY` of a flood.
    shut: bool,
}

/// Bytes of a flooding client's input thrown away per poll (see [`Rewind`]): one turn's
/// worth, then the task yields.
const DISCARD_CHUNK: usize = 8 * 1024;

/// The most bytes a connection gathers while its writes are held (see [`WriteHold`]); more
/// is written out first: one syscall per 32 KiB. What the buffer holds beyond its DATA
/// (charged to the budget until written) counts in the crate docs' per-connection F.
const WRITE_HOLD_MAX: usize = 32 * 1024;

/// What a hold first allocates (doubling up to [`WRITE_HOLD_MAX`] when a round writes more):
/// a round of a few small replies does not take the whole bound.
const WRITE_HOLD_FIRST: usize = 8 * 1024;

impl<T: AsyncRead + AsyncWrite + Unpin> Rewind<T> {
    /// Copies `bufs` into the held bytes when writes are held and they fit (after writing
    /// out what was held, when they do not fit behind it); `None` when they were not taken.
    fn poll_gather(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Option<Poll<io::Result<usize>>> {
        if !self.hold.holding() {
            return None;
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total > WRITE_HOLD_MAX {
            return None;
        }
        if self.wbuf.len() + total > WRITE_HOLD_MAX {
            match self.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                other => return Some(other.map_ok(|()| 0)),
            }
        }
        let need = self.wbuf.len() + total;
        if need > self.wbuf.capacity() {
            // Doubling from WRITE_HOLD_FIRST, never past WRITE_HOLD_MAX.
            let size = need
                .max(WRITE_HOLD_FIRST)
                .next_power_of_two()
                .min(WRITE_HOLD_MAX);
            self.wbuf.reserve_exact(size - self.wbuf.len());
        }
        for b in bufs {
            self.wbuf.extend_from_slice(b);
        }
        Some(Poll::Ready(Ok(total)))
    }

    /// Writes out the held bytes; `Ready(Ok)` once none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let Poll::Ready(n) = Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..])?
            else {
                return self.pending_write(cx);
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let calm = &mut self.calm;
            self.ledger
                .on_write_seen(&self.wbuf[self.wpos..self.wpos + n], &mut |f| {
                    calm.outbound(f)
                });
            self.wpos += n;
        }
        // Freed once written: an idle connection holds no write buffer of its own.
        self.wbuf = Vec::new();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> Rewind<T> {
    /// Reads and drops what a calmed client sends: `Ready` at its end (EOF or error),
    /// `Pending` when nothing is left for now or a turn's worth was dropped.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; DISCARD_CHUNK];
        let mut dropped = 0;
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            std::task::ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            dropped += buf.filled().len();
            if dropped >= crate::calm::TURN_BYTES {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }

    /// After a write half-done because the socket is full: a calmed connection reads and
    /// drops meanwhile (the `GOAWAY` waits behind what the client does not read); its end
    /// fails the write.
    fn pending_write<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if self.calm.tripped() {
            if let Poll::Ready(r) = self.poll_discard(cx) {
                r?;
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.calm.tripped() {
            // Nothing more for h2: the connection task was told and sends the GOAWAY.
            return Poll::Pending;
        }
        if std::mem::take(&mut this.yield_next) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        std::task::ready!(this.gate.poll_open(&this.ledger, cx));
        let now = std::time::Instant::now();
        let mut frames = 0;
        let calm = &mut this.calm;
        let mut seen = |f| {
            frames += 1;
            calm.inbound(f, now);
        };
        // What the ledger did not scan (the connection became blocked within it) is kept
        // back in `prefix` and given to h2 once the gate opens again: a complete frame ends
        // the scan, so at least one byte is given whenever any was read.
        let n = if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            let n = this.ledger.on_read_seen(&this.prefix[..n], &mut seen);
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            n
        } else {
            let before = buf.filled().len();
            if Pin::new(&mut this.io).poll_read(cx, buf)?.is_pending() {
                this.turn.idle();
                return Poll::Pending;
            }
            let got = buf.filled().len() - before;
            let n = this.ledger.on_read_seen(&buf.filled()[before..], &mut seen);
            if n < got {
                this.prefix = Bytes::copy_from_slice(&buf.filled()[before + n..]);
                buf.set_filled(before + n);
            }
            n
        };
        if this.calm.tripped() {
            tracing::debug!(
                flood = this.calm.worst(),
                "grpc: a connection sent too many control frames; GOAWAY(ENHANCE_YOUR_CALM)"
            );
            this.calmed.notify_one();
        }
        this.yield_next = this.turn.read(n, frames);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(r) = this.poll_gather(cx, &[io::IoSlice::new(buf)]) {
            return r;
        }
        std::task::ready!(this.poll_drain(cx))?;
        let Poll::Ready(n) = Pin::new(&mut this.io).poll_write(cx, buf)? else {
            return this.pending_write(cx);
        };
        let calm = &mut this.calm;
        this.ledger
            .on_write_seen(&buf[..n], &mut |f| calm.outbound(f));
        Poll::Ready(Ok(n))
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(r) = this.poll_gather(cx, bufs) {
            return r;
        }
        std::task::ready!(this.poll_drain(cx))?;
        let Poll::Ready(n) = Pin::new(&mut this.io).poll_write_vectored(cx, bufs)? else {
            return this.pending_write(cx);
        };
        let mut left = n;
        let calm = &mut this.calm;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(b.len());
            this.ledger
                .on_write_seen(&b[..take], &mut |f| calm.outbound(f));
            left -= take;
        }
        Poll::Ready(Ok(n))
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.wpos < this.wbuf.len() {
            if this.hold.holding() {
                // Written when the connection task polls h2 again, not holding.
                this.hold.defer();
                return Poll::Ready(Ok(()));
            }
            std::task::ready!(this.poll_drain(cx))?;
        }
        match Pin::new(&mut this.io).poll_flush(cx)? {
            Poll::Ready(()) => Poll::Ready(Ok(())),
            Poll::Pending => this.pending_write(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_drain(cx))?;
        if !this.calm.tripped() {
            return Pin::new(&mut this.io).poll_shutdown(cx);
        }
        // A calmed connection: the GOAWAY is written; shut the write half (the client reads
        // the GOAWAY and then the end) and drop what it sends until it closes its side, or
        // the connection task gives up (`CALM_CLOSE_TIMEOUT`).
        if !this.shut {
            match Pin::new(&mut this.io).poll_shutdown(cx)? {
                Poll::Ready(()) => this.shut = true,
                Poll::Pending => return this.pending_write(cx),
            }
        }
        this.poll_discard(cx).map(|_| Ok(()))
    }
}

/// Streams alive on one connection, and when the last one ended (for the idle timeout).
struct Activity {
    active: AtomicUsize,
    last_end: Mutex<Instant>,
}

async fn serve_conn(conn: Accepted, cfg: Arc<GrpcServerConfig>) {
    let Accepted {
        io,
        prefix,
        peer,
        server,
        shutdown,
        ..
    } = conn;
    let limits = server.limits().clone();
    let ledger = Ledger::new(server.byte_budget().clone());
    let calmed = Arc::new(Notify::new());
    let hold = Arc::new(WriteHold::default());
    let io = Rewind {
        prefix: prefix.freeze(),
        io,
        wbuf: Vec::new(),
        wpos: 0,
        hold: hold.clone(),
        ledger: ledger.clone(),
        gate: Gate::default(),
        calm: CalmGuard::new(cfg.max_control_frames, cfg.control_window),
        calmed: calmed.clone(),
        turn: ReadTurn::new(),
        yield_next: false,
        shut: false,
    };
    let max_streams = u32::try_from(limits.max_concurrent_streams).unwrap_or(u32::MAX);
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(cfg.stream_window)
        .initial_connection_window_size(cfg.connection_window)
        .max_frame_size(cfg.max_frame_size)
        .max_send_buffer_size(cfg.max_send_buffer)
        .max_header_list_size(cfg.max_header_list_size)
        .max_concurrent_streams(max_streams);
    let mut h2conn =
        match tokio::time::timeout(limits.frame_timeout, builder.handshake::<_, Bytes>(io)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "grpc handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "grpc handshake timed out");
                return;
            }
        };
    let activity = Arc::new(Activity {
        active: AtomicUsize::new(0),
        last_end: Mutex::new(Instant::now()),
    });
    let conn_ctx = ConnCtx {
        server,
        cfg,
        peer,
        activity: activity.clone(),
        outbox: Outbox::new(),
        ledger,
        metadata: std::cell::RefCell::new(MetadataCache::default()),
    };
    let _close = CloseOutbox(conn_ctx.outbox.clone());
    let mut draining = false;
    let mut batch = Vec::new();
    let idle = limits.idle_timeout;
    let idle_sleep = tokio::time::sleep(idle.unwrap_or(std::time::Duration::from_secs(3600)));
    tokio::pin!(idle_sleep);
    let drain_signal = shutdown.draining();
    tokio::pin!(drain_signal);
    let closed_signal = shutdown.closed();
    tokio::pin!(closed_signal);
    loop {
        tokio::select! {
            biased;
            next = crate::stream::Batched::new(Box::pin(h2conn.accept()), Some(&*conn_ctx.outbox)).holding(&hold) => match next {
                Some(Ok(first)) => {
                    // Take every request that already arrived before handling any: each
                    // `accept` polls the connection, which flushes what is queued, so
                    // handling them one by one would write each reply with its own syscall.
                    // Handled as a batch, their replies go out together on the next poll.
                    batch.push(first);
                    let mut ended = false;
                    while batch.len() < MAX_ACCEPT_BATCH {
                        match futures::FutureExt::now_or_never(h2conn.accept()) {
                            Some(Some(Ok(r))) => batch.push(r),
                            Some(Some(Err(_)) | None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                    for (req, respond) in batch.drain(..) {
                        conn_ctx.on_request(req, respond);
                    }
                    if ended {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(peer = %conn_ctx.peer, error = %e, "grpc connection error");
                    break;
                }
                None => break,
            },
            () = calmed.notified() => {
                tracing::debug!(peer = %conn_ctx.peer, "grpc: closing a flooding connection");
                h2conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                // Driven until the GOAWAY is written and the client closed, or the time is
                // up; requests still in flight are dropped (h2 resets them).
                let _ = tokio::time::timeout(CALM_CLOSE_TIMEOUT, async {
                    while let Some(Ok(req)) = h2conn.accept().await {
                        drop(req);
                    }
                })
                .await;
                break;
            }
            () = &mut drain_signal, if !draining => {
                draining = true;
                h2conn.graceful_shutdown();
            }
            () = &mut closed_signal => break,
            () = &mut idle_sleep, if idle.is_some() && !draining => {
                let idle = idle.unwrap_or_default();
                let since = *lock(&activity.last_end);
                if activity.active.load(Ordering::Acquire) == 0 && since.elapsed() >= idle {
                    draining = true;
                    h2conn.graceful_shutdown();
                } else {
                    idle_sleep.as_mut().reset(Instant::now() + idle);
                }
            }
        }
    }
}

struct ConnCtx {
    server: Server,
    cfg: Arc<GrpcServerConfig>,
    peer: rpc_core::Peer,
    activity: Arc<Activity>,
    /// Streams with messages for the connection task to hand to h2.
    outbox: Arc<Outbox>,
    /// What the connection holds, charged to the server's budget.
    ledger: Arc<Ledger>,
    /// The request metadata calls of this connection share (see [`MetadataCache`]).
    metadata: std::cell::RefCell<MetadataCache>,
}

/// The metadata of a recent request of a connection, shared (`Metadata::into_shared`) with
/// every later request whose user headers are the same: most clients send the same few
/// headers (`user-agent`) on every call of a connection, and those calls then get their
/// metadata as a reference count instead of a vector and a string per header. Only text
/// metadata of at most [`SHARED_METADATA_MAX`] bytes is kept (held for the connection's life,
/// outside the per-stream charges); after [`RESHARE_AFTER`] requests in a row that differ
/// from it, the next one that qualifies replaces it (so calls that each carry a different
/// value, a request id, pay for that replacement once per that many calls).
#[derive(Default)]
struct MetadataCache {
    shared: Option<Metadata>,
    misses: u32,
}

/// The most bytes (keys and values) of metadata a connection keeps to share (see
/// [`MetadataCache`]).
const SHARED_METADATA_MAX: usize = 1024;

/// Requests in a row whose metadata differs from the shared one before it is replaced (see
/// [`MetadataCache`]).
const RESHARE_AFTER: u32 = 16;

impl ConnCtx {
    /// The user metadata of a request's `headers` (shared with earlier requests of the
    /// connection when it is the same, see [`MetadataCache`]).
    fn metadata(&self, headers: &HeaderMap) -> Result<Metadata, Status> {
        let mut cache = self.metadata.borrow_mut();
        let cache = &mut *cache;
        if let Some(md) = &cache.shared {
            if metadata_matches(headers, md) {
                cache.misses = 0;
                return Ok(md.clone());
            }
        }
        let md = metadata_from(headers)?;
        if md.is_empty() {
            return Ok(md);
        }
        if cache.shared.is_some() && cache.misses < RESHARE_AFTER {
            cache.misses += 1;
            return Ok(md);
        }
        let text = md.iter().all(|(_, v)| v.as_str().is_some());
        let size: usize = md.iter().map(|(k, v)| k.len() + v.as_bytes().len()).sum();
        if !text || size > SHARED_METADATA_MAX {
            return Ok(md);
        }
        let md = md.into_shared();
        cache.shared = Some(md.clone());
        cache.misses = 0;
        Ok(md)
    }
}

/// Closes the connection's outbox when its task ends (streams then flush themselves).
struct CloseOutbox(Arc<Outbox>);

impl Drop for CloseOutbox {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Answers a request that never reaches a handler with a Trailers-Only response.
fn trailers_only(mut respond: SendResponse<Bytes>, content_type: HeaderValue, status: &Status) {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, content_type);
    append_status(&mut headers, status);
    if status.code() == Code::Unimplemented {
        headers.insert(
            hdr::grpc_accept_encoding(),
            HeaderValue::from_static(ACCEPT_ENCODING),
        );
    }
    let mut res = Response::new(());
    *res.headers_mut() = headers;
    let _ = respond.send_response(res, true);
}

fn http_error(mut respond: SendResponse<Bytes>, code: StatusCode) {
    let mut res = Response::new(());
    *res.status_mut() = code;
    let _ = respond.send_response(res, true);
}

impl ConnCtx {
    fn on_request(&self, req: Request<h2::RecvStream>, mut respond: SendResponse<Bytes>) {
        let id = u32::from(respond.stream_id());
        if self.ledger.blocked() {
            // The budget is used up and this connection holds more than its reserve: the
            // client may retry the stream (UNAVAILABLE), here later or elsewhere.
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            self.ledger.drop_stream(id);
            return;
        }
        let fixed = STREAM_COST + header_list_size(req.headers());
        self.ledger.open(id, fixed);
        let kept = self.on_request_inner(req, respond, id);
        if !kept {
            self.ledger.close(id);
        }
    }

    /// Handles a request whose stream `id` the ledger has opened; false when no handler
    /// keeps it (answered here).
    fn on_request_inner(
        &self,
        req: Request<h2::RecvStream>,
        respond: SendResponse<Bytes>,
        id: u32,
    ) -> bool {
        let (mut parts, body) = req.into_parts();
        if parts.method != http::Method::POST {
            http_error(respond, StatusCode::METHOD_NOT_ALLOWED);
            return false;
        }
        let ct = parts.headers.get(CONTENT_TYPE);
        let Some(ct) = ct.filter(|v| is_grpc_content_type(v.as_bytes())).cloned() else {
            http_error(respond, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            return false;
        };
        let Some(payload) = content_type_payload(ct.as_bytes()) else {
            let s = Status::unimplemented(format!(
                "content-type {:?} is not supported (application/grpc, application/grpc+proto, application/grpc+thrift are)",
                String::from_utf8_lossy(ct.as_bytes())
            ));
            trailers_only(respond, ct, &s);
            return false;
        };
        let route = match self.server.resolve_path(parts.uri.path(), Some(payload)) {
            Ok(r) => r,
            Err(e) => {
                trailers_only(respond, ct, &Status::from(e));
                return false;
            }
        };
        let h = &parts.headers;
        let encoding = match h
            .get(hdr::grpc_encoding())
            .map(|v| parse_encoding(v.as_bytes()))
        {
            None => None,
            Some(Ok(e)) => e,
            Some(Err(name)) => {
                let s = Status::unimplemented(format!(
                    "grpc-encoding {name:?} is not supported (grpc-accept-encoding: {ACCEPT_ENCODING})"
                ));
                trailers_only(respond, ct, &s);
                return false;
            }
        };
        let deadline = match h
            .get(hdr::grpc_timeout())
            .map(|v| parse_timeout(v.as_bytes()))
        {
            None => None,
            Some(Ok(t)) => Instant::now().checked_add(t),
            Some(Err(s)) => {
                trailers_only(respond, ct, &s);
                return false;
            }
        };
        let metadata = match self.metadata(h) {
            Ok(m) => m,
            Err(s) => {
                trailers_only(respond, ct, &s);
                return false;
            }
        };
        let accepts = h
            .get(hdr::grpc_accept_encoding())
            .map(|v| AcceptedEncodings::parse(v.as_bytes()))
            .unwrap_or_default();
        // The request's header map, emptied, carries the response header (h2 takes each
        // map it sends and frees it once written; reusing this one saves building another).
        let reuse = (parts.headers.capacity() <= REUSE_HEADERS_MAX).then(|| {
            let mut h = std::mem::take(&mut parts.headers);
            h.clear();
            h
        });
        self.activity.active.fetch_add(1, Ordering::AcqRel);
        let stream = Arc::new_cyclic(|me| ServerStream {
            me: me.clone(),
            outbox: self.outbox.clone(),
            send: Mutex::new(SendSide {
                respond: Some(respond),
                headers: reuse,
                stream: None,
                out: Coalesce::new(),
                gate: Gate::default(),
                pending: Charge::new(self.ledger.clone(), id),
                block: None,
                encoding: None,
                sent: false,
            }),
            recv: Mutex::new(Some(
                Receiver::new(body, self.cfg.max_recv_message, encoding, None)
                    .with_ledger(self.ledger.clone(), id),
            )),
            fanout: Fanout::new(),
            compression: OnceLock::new(),
            send_compression: self.cfg.send_compression,
            peer_encoding: encoding,
            accepts,
            content_type: ct,
            max_send: self.cfg.max_send_message,
            activity: self.activity.clone(),
            id,
            ledger: self.ledger.clone(),
        });
        let incoming = IncomingStream::new("", "")
            .with_metadata(metadata)
            .with_deadline(deadline)
            .with_peer(Some(self.peer.clone()))
            .with_payload(Some(payload))
            .with_rpc_system("grpc");
        self.server.dispatch_route(route, incoming, stream);
        true
    }
}

/// The size of a header list as HTTP/2 counts it (RFC 9113 §6.5.2: name, value and 32 bytes
/// per field), what the server keeps of a request's headers at most.
fn header_list_size(h: &HeaderMap) -> usize {
    h.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum()
}

struct SendSide {
    /// Until the response header is sent.
    respond: Option<SendResponse<Bytes>>,
    /// An empty header map to build the response header in (the request's).
    headers: Option<HeaderMap>,
    /// After the response header was sent, until the end.
    stream: Option<DataOut>,
    /// Holds the handler back while the connection is over its share of a used-up budget.
    gate: Gate,
    /// Charges what `out.pending` holds: the whole block its messages are encoded into
    /// (see [`SendSide::settle`]).
    pending: Charge,
    /// The block `out.pending` is a view of, as (end address, size charged for it).
    block: Option<(usize, usize)>,
    /// Messages on their way to h2 (see `stream::Outbox`).
    out: Coalesce,
    /// The `grpc-encoding` announced in the response header.
    encoding: Option<Compression>,
    /// Whether a message was sent (later ones are encoded into shared chunks, see
    /// `stream::SCRATCH_CHUNK`).
    sent: bool,
}

/// The server side of one gRPC stream.
struct ServerStream {
    me: Weak<ServerStream>,
    outbox: Arc<Outbox>,
    send: Mutex<SendSide>,
    /// Until the stream is finished: then h2 is told (by dropping the receiving half) to
    /// drop what the client still sends, instead of buffering it for nobody.
    recv: Mutex<Option<Receiver>>,
    fanout: Fanout,
    /// The handle a handler asked for (`ServerContext::extension::<MessageCompression>()`);
    /// made on first ask, so a call that never asks allocates none.
    compression: OnceLock<MessageCompression>,
    /// What messages are sent with until a handler changes it through the handle.
    send_compression: Compression,
    /// The request's `grpc-encoding`.
    peer_encoding: Option<Compression>,
    /// What the request's `grpc-accept-encoding` names.
    accepts: AcceptedEncodings,
    content_type: HeaderValue,
    max_send: usize,
    activity: Arc<Activity>,
    /// The HTTP/2 stream id, as the ledger knows the stream.
    id: u32,
    ledger: Arc<Ledger>,
}

impl Drop for ServerStream {
    fn drop(&mut self) {
        self.ledger.close(self.id);
        if self.activity.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.activity.last_end) = Instant::now();
        }
    }
}

impl ServerStream {
    /// The response header block: `:status` 200, content-type, encodings, user metadata.
    fn response_header(&self, md: &Metadata, s: &mut SendSide) -> Result<Response<()>, Status> {
        let mut headers = match s.headers.take() {
            Some(h) => h,
            None => HeaderMap::with_capacity(4 + md.len()),
        };
        headers.insert(CONTENT_TYPE, self.content_type.clone());
        // Announced whenever the client accepts an algorithm, so the handler may switch
        // compression on for any later message; each message says by its flag whether it is
        // compressed (see `MessageCompression`).
        s.encoding = self.accepts.response_encoding(self.wanted());
        if let Some(c) = s.encoding {
            headers.insert(hdr::grpc_encoding(), HeaderValue::from_static(c.name()));
        }
        headers.insert(
            hdr::grpc_accept_encoding(),
            HeaderValue::from_static(ACCEPT_ENCODING),
        );
        append_metadata(&mut headers, md)?;
        let mut res = Response::new(());
        *res.headers_mut() = headers;
        Ok(res)
    }

    fn send_header_locked(&self, s: &mut SendSide, md: &Metadata) -> Result<(), Status> {
        let res = self.response_header(md, s)?;
        let Some(mut respond) = s.respond.take() else {
            return Err(Status::internal("response header sent twice"));
        };
        let stream = respond
            .send_response(res, false)
            .map_err(|e| status_from_h2(&e, "send header"))?;
        s.stream = Some(DataOut::charged(stream, self.ledger.clone(), self.id));
        Ok(())
    }

    /// The compression of the next message: the handler's current choice, if the header
    /// announced an encoding.
    fn message_compression(&self, s: &SendSide) -> Option<Compression> {
        let announced = s.encoding?;
        self.wanted().active().map(|_| announced)
    }

    /// What the handler wants messages sent with now (the configured compression until it
    /// chooses through its handle).
    fn wanted(&self) -> Compression {
        match self.compression.get() {
            Some(handle) => handle.send(),
            None => self.send_compression,
        }
    }

    /// The call's compression handle, made on first ask: it starts from the configured send
    /// compression and what the request announced, and learns how the last message arrived
    /// from the receiver.
    fn compression_handle(&self) -> MessageCompression {
        self.compression
            .get_or_init(|| {
                let handle = MessageCompression::new(self.send_compression);
                handle.set_peer(self.peer_encoding, self.accepts);
                if let Some(r) = lock(&self.recv).as_mut() {
                    r.attach(handle.clone());
                }
                handle
            })
            .clone()
    }

    /// Sends `msg`; `coalesce`: straight to h2 or with the stream's burst, as the outbox
    /// decides (see `stream::Outbox`), else with whatever is pending, at once (the last
    /// message, before the trailers).
    fn send_locked(
        &self,
        s: &mut SendSide,
        msg: &mut dyn Encodable,
        coalesce: bool,
    ) -> Result<(), Status> {
        let c = self.message_compression(s);
        let stream = s.stream.as_mut().ok_or_else(|| {
            Status::internal("no send stream: the header was not sent or the stream ended")
        })?;
        let repeat = s.sent;
        s.sent = true;
        if coalesce {
            return self
                .outbox
                .send(&self.me, &mut s.out, stream, msg, c, self.max_send, repeat);
        }
        if s.out.pending.is_empty() {
            let data = encode(&mut s.out.pending, msg, c, self.max_send, repeat)?;
            return send_data(stream, data, false);
        }
        append(stream, &mut s.out.pending, msg, c, self.max_send, repeat)?;
        flush(stream, &mut s.out.pending, false)
    }

    fn finish_locked(&self, s: &mut SendSide, finish: Finish<'_>) -> Result<(), Status> {
        let Finish {
            header,
            message,
            status,
            mut trailer,
        } = finish;
        trailer.extend(status_trailer(&status));
        if let Some(h) = header {
            if message.is_none() && h.is_empty() && s.respond.is_some() {
                // Trailers-Only: one HEADERS frame with END_STREAM.
                let mut res = self.response_header(&h, s)?;
                append_status(res.headers_mut(), &status);
                append_metadata(res.headers_mut(), &trailer)?;
                if let Some(mut respond) = s.respond.take() {
                    respond
                        .send_response(res, true)
                        .map_err(|e| status_from_h2(&e, "send"))?;
                }
                return Ok(());
            }
            if s.respond.is_some() {
                self.send_header_locked(s, &h)?;
            }
        }
        let mut status = status;
        if let Some(m) = message {
            if let Err(e) = self.send_locked(s, m, false) {
                status = e;
            }
        }
        if let Some(stream) = s.stream.as_mut() {
            if let Err(e) = flush(stream, &mut s.out.pending, false) {
                status = e;
            }
        }
        // Room for exactly what goes in (h2 takes the map, so none is reused): `grpc-status`,
        // `grpc-message` and `grpc-status-details-bin` when there is one, and the metadata.
        let plain_ok = status.is_ok() && status.message().is_empty() && status.details().is_empty();
        let status_entries = 1
            + usize::from(!status.message().is_empty())
            + usize::from(!status.details().is_empty());
        let mut trailers = HeaderMap::with_capacity(status_entries + trailer.len());
        if plain_ok {
            // The usual end, without formatting the code or parsing header names.
            trailers.insert(hdr::grpc_status(), hdr::status_ok());
        } else {
            append_status(&mut trailers, &status);
        }
        if let Err(e) = append_metadata(&mut trailers, &trailer) {
            trailers.clear();
            append_status(&mut trailers, &e);
        }
        match s.stream.as_mut() {
            Some(stream) => stream
                .h2
                .send_trailers(trailers)
                .map_err(|e| status_from_h2(&e, "send trailers")),
            None => Err(Status::internal("trailers before the response header")),
        }
    }
}

impl SendSide {
    /// Brings the charge for the pending messages up to date (after every change to them).
    ///
    /// `out.pending` is the tail of a block: the messages split off its front were handed to
    /// h2 (charged as sent DATA until written), but the block stays allocated, written part
    /// and all, as long as the tail is held. So the charge is the whole block as first seen
    /// (its size when it was allocated, or reclaimed in place to its full size), not only
    /// the tail: with streams parked mid-block that uncharged front averaged 8 KiB per stream
    /// (unread replies, `examples/tests/memory_bound_grpc.rs`). A block is known by its end
    /// address, which splitting its front does not move.
    fn settle(&mut self) {
        let cap = self.out.pending.capacity();
        let held = if cap == 0 {
            self.block = None;
            0
        } else {
            let end = self.out.pending.as_ptr() as usize + cap;
            match self.block {
                Some((e, size)) if e == end => size.max(cap),
                _ => cap,
            }
        };
        if held > 0 {
            let end = self.out.pending.as_ptr() as usize + cap;
            self.block = Some((end, held));
        }
        self.pending.set(held);
    }
}

impl Flush for ServerStream {
    fn flush_pending(&self) {
        let mut s = lock(&self.send);
        let s = &mut *s;
        if let Err(e) = self.outbox.flush_listed(&mut s.out, s.stream.as_mut()) {
            tracing::trace!(error = %e, "grpc: flushing messages of an ended stream");
        }
        s.settle();
    }
}

impl ServerStreamRaw for ServerStream {
    fn poll_send_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        let mut s = lock(&self.send);
        let s = &mut *s;
        std::task::ready!(s.gate.poll_open(&self.ledger, cx));
        let r = match s.stream.as_mut() {
            Some(stream) => poll_capacity(stream, &mut s.out, Some(&self.fanout), cx, len),
            // The header goes first; the first message may follow it into h2's buffer.
            None => Poll::Ready(Ok(())),
        };
        s.settle();
        r
    }

    fn send_header(&self, header: Metadata) -> Result<(), Status> {
        let mut s = lock(&self.send);
        self.send_header_locked(&mut s, &header)
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let mut s = lock(&self.send);
        let r = self.send_locked(&mut s, msg, true);
        s.settle();
        r
    }

    fn poll_send(&self, cx: &mut Context<'_>, msg: &mut dyn Encodable) -> Poll<Result<(), Status>> {
        let mut s = lock(&self.send);
        let s = &mut *s;
        std::task::ready!(s.gate.poll_open(&self.ledger, cx));
        if let Some(stream) = s.stream.as_mut() {
            let len = msg.encoded_len().unwrap_or(0);
            let ready = poll_capacity(stream, &mut s.out, Some(&self.fanout), cx, len);
            if !matches!(ready, Poll::Ready(Ok(()))) {
                s.settle();
                return ready;
            }
        }
        let r = self.send_locked(s, msg, true);
        s.settle();
        Poll::Ready(r)
    }

    /// `finish` ends with `respond` and `stream` both `None`, under the send lock, and every
    /// send takes that lock and fails without a send stream.
    fn refuses_after_finish(&self) -> bool {
        true
    }

    fn finish(&self, finish: Finish<'_>) {
        let mut s = lock(&self.send);
        if let Err(e) = self.finish_locked(&mut s, finish) {
            tracing::debug!(error = %e, "grpc: could not finish a stream");
            // Whatever half got out, the peer must not wait for more.
            s.out.pending.clear();
            if let Some(stream) = s.stream.as_mut() {
                stream.h2.send_reset(h2::Reason::INTERNAL_ERROR);
            } else if let Some(respond) = s.respond.as_mut() {
                respond.send_reset(h2::Reason::INTERNAL_ERROR);
            }
        }
        s.respond = None;
        s.stream = None;
        s.settle();
        drop(s);
        // The call is over: with the last handle on the h2 stream gone, h2 drops what the
        // client still sends (and ends the stream with RST_STREAM(NO_ERROR) after the
        // trailers when the client has not ended its side, as HTTP/2 asks).
        let r = lock(&self.recv).take();
        drop(r);
        self.ledger.close(self.id);
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        let mut r = lock(&self.recv);
        let Some(r) = r.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        match std::task::ready!(r.poll_message(cx)) {
            Ok(Received::Message(m)) => Poll::Ready(Ok(Some(m))),
            Ok(Received::Eof) => Poll::Ready(Ok(None)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_recv_many(
        &self,
        cx: &mut Context<'_>,
        more: &mut VecDeque<Bytes>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, Status>> {
        let mut r = lock(&self.recv);
        let Some(r) = r.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        match std::task::ready!(r.poll_message(cx)) {
            Ok(Received::Message(m)) => {
                r.take_ready(more, max);
                Poll::Ready(Ok(Some(m)))
            }
            Ok(Received::Eof) => Poll::Ready(Ok(None)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn extension(&self, want: &mut dyn std::any::Any) {
        if let Some(want) = want.downcast_mut::<Option<MessageCompression>>() {
            *want = Some(self.compression_handle());
        }
    }

    fn poll_reset(&self, cx: &mut Context<'_>) -> Poll<Status> {
        let mut s = lock(&self.send);
        let waker = self.fanout.register(cx);
        let mut fcx = Context::from_waker(waker);
        let r = if let Some(stream) = s.stream.as_mut() {
            stream.h2.poll_reset(&mut fcx)
        } else if let Some(respond) = s.respond.as_mut() {
            respond.poll_reset(&mut fcx)
        } else {
            return Poll::Pending;
        };
        match r {
            Poll::Ready(Ok(h2::Reason::CANCEL)) | Poll::Ready(Ok(h2::Reason::NO_ERROR)) => {
                Poll::Ready(Status::cancelled("cancelled by the client"))
            }
            Poll::Ready(Ok(reason)) => Poll::Ready(Status::new(
                crate::codec::code_from_reason(u32::from(reason)),
                format!("stream reset by the client ({reason:?})"),
            )),
            Poll::Ready(Err(e)) => Poll::Ready(status_from_h2(&e, "stream")),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// A socket that takes every write whole and counts the writes.
    #[derive(Default)]
    struct Counting {
        writes: usize,
        out: Vec<u8>,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.out.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn rewind(hold: Arc<WriteHold>) -> Rewind<Counting> {
        Rewind {
            prefix: Bytes::new(),
            io: Counting::default(),
            wbuf: Vec::new(),
            wpos: 0,
            hold,
            ledger: Ledger::new(rpc_core::limits::ByteBudget::new(1 << 20)),
            gate: Gate::default(),
            calm: CalmGuard::new(1000, std::time::Duration::from_secs(1)),
            calmed: Arc::new(Notify::new()),
            turn: ReadTurn::new(),
            yield_next: false,
            shut: false,
        }
    }

    async fn write_then_flush(io: &mut Rewind<Counting>, chunks: &[Vec<u8>]) {
        use tokio::io::AsyncWriteExt;
        for c in chunks {
            io.write_all(c).await.expect("write");
            // h2 flushes after every DATA frame it does not copy.
            poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx))
                .await
                .expect("flush");
        }
    }

    /// While held, what h2 writes and flushes frame by frame is gathered and reaches the
    /// socket in one write at the first flush after the hold is released, in order; unheld,
    /// each write goes straight through.
    #[tokio::test]
    async fn held_writes_go_out_together_after_the_release() {
        let hold = Arc::new(WriteHold::default());
        let mut io = rewind(hold.clone());
        let chunks: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; 1000]).collect();
        hold.hold();
        write_then_flush(&mut io, &chunks).await;
        assert_eq!(io.io.writes, 0, "nothing written while held");
        assert!(hold.release(), "the held bytes ask for another poll");
        assert!(!hold.release(), "asked once");
        poll_fn(|cx| Pin::new(&mut io).poll_flush(cx))
            .await
            .expect("flush");
        assert_eq!(io.io.writes, 1, "one write for the held frames");
        assert_eq!(io.io.out, chunks.concat());

        write_then_flush(&mut io, &chunks[..2]).await;
        assert_eq!(io.io.writes, 3, "not held: each write goes through");
    }

    /// A hold never gathers more than [`WRITE_HOLD_MAX`]: what does not fit behind the held
    /// bytes writes them out first, and nothing is lost or reordered.
    #[tokio::test]
    async fn a_hold_gathers_at_most_its_bound() {
        let hold = Arc::new(WriteHold::default());
        let mut io = rewind(hold.clone());
        let chunks: Vec<Vec<u8>> = (0..40u32).map(|i| vec![i as u8; 4000]).collect();
        hold.hold();
        write_then_flush(&mut io, &chunks).await;
        assert!(io.wbuf.len() <= WRITE_HOLD_MAX);
        assert!(io.wbuf.capacity() <= WRITE_HOLD_MAX);
        let total = 40 * 4000;
        assert!(
            io.io.writes >= total / WRITE_HOLD_MAX,
            "{} writes while held",
            io.io.writes
        );
        hold.release();
        use tokio::io::AsyncWriteExt;
        io.shutdown().await.expect("shutdown writes what is held");
        assert_eq!(io.io.out, chunks.concat());
    }
}
