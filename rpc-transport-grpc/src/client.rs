//! [`GrpcClient`]: an `rpc_core::transport::ClientTransport` over a small pool of HTTP/2 connections.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri};
use rpc_core::codec::Encodable;
use rpc_core::net::{Address, AddressError, Io};
use rpc_core::transport::{BoxFuture, ClientEvent, ClientStreamRaw, ClientTransport};
use rpc_core::{CallContext, Metadata, PayloadKind, Status};

use crate::codec::{
    code_from_http_status, content_type_for, encode_timeout, hdr, is_grpc_content_type,
    parse_encoding,
};
use crate::compression::{AcceptedEncodings, Compression, MessageCompression, ACCEPT_ENCODING};
use crate::config::{GrpcClientConfig, USER_AGENT as OUR_USER_AGENT};
use crate::headers::{append_metadata, metadata_from, status_from, status_with_trailers};
use crate::lock;
use crate::stream::{
    encode, flush, poll_capacity, send_data, status_from_h2, Coalesce, DataOut, Flush, Outbox,
    Received, Receiver,
};

/// A gRPC client transport: calls to one endpoint (`tcp://HOST:PORT` or `unix:///path`, or
/// any address [`GrpcClientConfig::connector`] dials, e.g. `shm:///path`) spread round-robin over [`GrpcClientConfig::connections`] HTTP/2 connections, each made on
/// first use and re-made after it fails. Cheap to clone; clones share the connections.
///
/// ```no_run
/// # fn f() -> Result<(), rpc_core::Status> {
/// use rpc_core::transport::Connect;
/// let transport = rpc_transport_grpc::GrpcClient::connect("tcp://127.0.0.1:50051")?;
/// let client = rpc_core::Client::new(transport);
/// # Ok(()) }
/// ```
///
/// Per call, a [`Compression`] or a [`MessageCompression`] in the call context's extensions
/// chooses request compression (default [`GrpcClientConfig::send_compression`]).
#[derive(Clone)]
pub struct GrpcClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GrpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcClient")
            .field("endpoint", &self.inner.endpoint)
            .field("config", &self.inner.cfg)
            .finish()
    }
}

struct Inner {
    endpoint: Address,
    authority: Authority,
    cfg: GrpcClientConfig,
    /// The request headers every call sends (content-type, te, user-agent,
    /// grpc-accept-encoding), one block per payload kind (protobuf, thrift), cloned per call
    /// instead of built and hashed header by header.
    base_headers: [HeaderMap; 2],
    /// Per connection slot: the live connection (read without waiting on the hot path) and
    /// a lock held only while one is being made.
    slots: Vec<(Mutex<Option<Conn>>, tokio::sync::Mutex<()>)>,
    next: AtomicUsize,
}

/// One HTTP/2 connection: the handle that opens streams, and whether its task has ended.
#[derive(Clone)]
struct Conn {
    send: SendRequest<Bytes>,
    dead: Arc<AtomicBool>,
    /// Streams with messages for the connection task to hand to h2.
    outbox: Arc<Outbox>,
}

impl GrpcClient {
    /// A client for `addr` with default settings (connections are made on first use).
    pub fn new(addr: impl Into<Address>) -> GrpcClient {
        GrpcClient::with_config(addr, GrpcClientConfig::default())
    }

    /// A client for `addr` with these settings.
    pub fn with_config(addr: impl Into<Address>, cfg: GrpcClientConfig) -> GrpcClient {
        let endpoint = addr.into();
        let authority = match &endpoint {
            Address::Tcp { .. } => {
                let s = endpoint.to_string();
                let hostport = s.strip_prefix("tcp://").unwrap_or(&s).to_owned();
                Authority::try_from(hostport)
                    .unwrap_or_else(|_| Authority::from_static("localhost"))
            }
            _ => Authority::from_static("localhost"),
        };
        let ua = match &cfg.user_agent {
            Some(p) => format!("{p} {OUR_USER_AGENT}"),
            None => OUR_USER_AGENT.to_owned(),
        };
        let user_agent =
            HeaderValue::from_str(&ua).unwrap_or_else(|_| HeaderValue::from_static(OUR_USER_AGENT));
        let base = |payload| {
            let mut h = HeaderMap::with_capacity(8);
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(content_type_for(payload)),
            );
            h.insert(TE, HeaderValue::from_static("trailers"));
            h.insert(USER_AGENT, user_agent.clone());
            h.insert(
                hdr::grpc_accept_encoding(),
                HeaderValue::from_static(ACCEPT_ENCODING),
            );
            h
        };
        GrpcClient {
            inner: Arc::new(Inner {
                endpoint,
                authority,
                base_headers: [base(PayloadKind::Protobuf), base(PayloadKind::Thrift)],
                slots: (0..cfg.connections.max(1))
                    .map(|_| (Mutex::new(None), tokio::sync::Mutex::new(())))
                    .collect(),
                next: AtomicUsize::new(0),
                cfg,
            }),
        }
    }

    /// A client for an address string such as `"tcp://127.0.0.1:50051"` or
    /// `"unix:///tmp/echo.sock"`, with default settings.
    pub fn parse(addr: &str) -> Result<GrpcClient, AddressError> {
        Ok(GrpcClient::new(addr.parse::<Address>()?))
    }

    /// The settings.
    pub fn config(&self) -> &GrpcClientConfig {
        &self.inner.cfg
    }
}

/// `TestServiceClient::connect::<GrpcClient>("tcp://127.0.0.1:50051")`.
impl rpc_core::transport::Connect for GrpcClient {
    fn connect(address: &str) -> Result<Self, Status> {
        GrpcClient::parse(address).map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

impl Inner {
    async fn conn(&self, slot: usize) -> Result<Conn, Status> {
        let (live, connecting) = &self.slots[slot];
        let usable = |c: &Option<Conn>| {
            c.as_ref()
                .filter(|c| !c.dead.load(Ordering::Acquire))
                .cloned()
        };
        if let Some(c) = usable(&lock(live)) {
            return Ok(c);
        }
        let _connecting = connecting.lock().await;
        if let Some(c) = usable(&lock(live)) {
            return Ok(c);
        }
        let conn = self.connect().await?;
        *lock(live) = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self) -> Result<Conn, Status> {
        let unavailable =
            |what: String| Status::unavailable(format!("connect to {}: {what}", self.endpoint));
        let cfg = &self.cfg;
        let handshake = async {
            let (io, _peer) = Io::connect_with(&self.endpoint, &cfg.connect_options())
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let mut b = h2::client::Builder::new();
            b.initial_window_size(cfg.stream_window)
                .initial_connection_window_size(cfg.connection_window)
                .max_frame_size(cfg.max_frame_size)
                .max_send_buffer_size(cfg.max_send_buffer)
                .max_header_list_size(cfg.max_header_list_size)
                .enable_push(false);
            b.handshake::<_, Bytes>(io)
                .await
                .map_err(|e| unavailable(format!("HTTP/2 handshake: {e}")))
        };
        let (send, mut conn) = tokio::time::timeout(cfg.connect_timeout, handshake)
            .await
            .map_err(|_| unavailable(format!("timed out after {:?}", cfg.connect_timeout)))??;
        let dead = Arc::new(AtomicBool::new(false));
        let keepalive = cfg.keepalive_interval.map(|i| (i, cfg.keepalive_timeout));
        let ping = keepalive.and_then(|_| conn.ping_pong());
        let dead2 = dead.clone();
        let outbox = Outbox::new();
        let outbox2 = outbox.clone();
        tokio::spawn(async move {
            let mut conn = crate::stream::Batched::new(conn, Some(&*outbox2));
            match (keepalive, ping) {
                (Some((interval, timeout)), Some(mut pp)) => loop {
                    tokio::select! {
                        _ = &mut conn => break,
                        () = tokio::time::sleep(interval) => {
                            tokio::select! {
                                _ = &mut conn => break,
                                r = tokio::time::timeout(timeout, pp.ping(h2::Ping::opaque())) => {
                                    if !matches!(r, Ok(Ok(_))) {
                                        tracing::debug!("grpc: keepalive ping unanswered; closing the connection");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                },
                _ => {
                    let _ = conn.await;
                }
            }
            dead2.store(true, Ordering::Release);
            outbox2.close();
        });
        Ok(Conn { send, dead, outbox })
    }

    fn request(
        &self,
        ctx: &CallContext,
        encoding: Option<Compression>,
    ) -> Result<Request<()>, Status> {
        let path =
            PathAndQuery::from_maybe_shared(Bytes::from_static(ctx.method().path.as_bytes()))
                .map_err(|_| {
                    Status::internal(format!("invalid method path {:?}", ctx.method().path))
                })?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if self.cfg.uses_tls() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        let uri = Uri::from_parts(parts).map_err(|e| Status::internal(format!("uri: {e}")))?;
        let mut headers = match ctx.method().payload {
            PayloadKind::Thrift => self.base_headers[1].clone(),
            _ => self.base_headers[0].clone(),
        };
        if let Some(c) = encoding {
            headers.insert(hdr::grpc_encoding(), HeaderValue::from_static(c.name()));
        }
        if let Some(t) = ctx.timeout() {
            if let Ok(v) = HeaderValue::from_str(&encode_timeout(t)) {
                headers.insert(hdr::grpc_timeout(), v);
            }
        }
        append_metadata(&mut headers, ctx.metadata())?;
        let mut req = Request::new(());
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        Ok(req)
    }
}

/// How many times one call is sent again after a server refused it unprocessed.
const TRANSPARENT_RETRIES: u8 = 3;

/// Whether a stream's error proves the server never processed it, so the call may be sent
/// again on another connection whatever the method (gRPC's transparent retry): the stream's
/// id was above the last-stream-id of the server's `GOAWAY` (RFC 9113 §6.8: such streams
/// "were not and will not be processed"; h2 fails exactly those streams with the remote
/// `GOAWAY` error — streams at or below it end with the connection instead), or the server
/// reset it with `REFUSED_STREAM` (§8.7: closed before any processing).
fn never_processed(e: &h2::Error) -> bool {
    e.is_remote() && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// What a single-request call needs to be opened again (see [`never_processed`]).
struct Retry {
    inner: Arc<Inner>,
    ctx: CallContext,
    slot: usize,
    /// Attempts left.
    left: u8,
}

type Reopen = Pin<Box<dyn Future<Output = Result<Opened, Status>> + Send>>;
type Opened = (ResponseFuture, h2::SendStream<Bytes>, Arc<Outbox>);

impl Inner {
    /// Opens a stream on the connection of `slot`; a connection found dead or going away
    /// before the request was handed to h2 (nothing sent) is replaced and the stream opened
    /// on the new one, a few times at most.
    async fn open_stream(
        &self,
        slot: usize,
        ctx: &CallContext,
        encoding: Option<Compression>,
    ) -> Result<Opened, Status> {
        let mut again = TRANSPARENT_RETRIES;
        loop {
            let mut conn = self.conn(slot).await?;
            // Unsent: any failure here may go on a fresh connection, unless h2 refused the
            // request itself (a local stream-level error).
            let retry = |e: &h2::Error, again: u8| {
                again > 0 && (e.reason().is_none() || e.is_go_away() || never_processed(e))
            };
            if let Err(e) = poll_fn(|cx| conn.send.poll_ready(cx)).await {
                conn.dead.store(true, Ordering::Release);
                if retry(&e, again) {
                    again -= 1;
                    continue;
                }
                return Err(status_from_h2(&e, "open stream"));
            }
            let req = self.request(ctx, encoding)?;
            match conn.send.send_request(req, false) {
                Ok((response, stream)) => return Ok((response, stream, conn.outbox.clone())),
                Err(e) => {
                    conn.dead.store(true, Ordering::Release);
                    if retry(&e, again) {
                        again -= 1;
                        continue;
                    }
                    return Err(status_from_h2(&e, "open stream"));
                }
            }
        }
    }
}

/// The status of a trailer block (or Trailers-Only header block): the usual `grpc-status: 0`
/// alone is read without looking up the other status headers.
fn end_status(headers: &HeaderMap) -> Option<Status> {
    let code = headers.get(hdr::grpc_status())?;
    if code.as_bytes() == b"0" && headers.len() == 1 {
        return Some(Status::ok());
    }
    status_from(headers)
}

/// How a call compresses its requests: a per-message handle, or one choice for the call.
fn send_choice(
    ctx: &CallContext,
    default: Compression,
) -> (Option<MessageCompression>, Compression) {
    if let Some(m) = ctx.extensions().get::<MessageCompression>() {
        // A handle that starts plain announces gzip, so it can switch compression on later.
        let announced = m.send().active().unwrap_or(Compression::Gzip);
        return (Some(m.clone()), announced);
    }
    let c = ctx
        .extensions()
        .get::<Compression>()
        .copied()
        .unwrap_or(default);
    (None, c)
}

impl ClientTransport for GrpcClient {
    fn open(
        &self,
        ctx: &CallContext,
    ) -> BoxFuture<'static, Result<Arc<dyn ClientStreamRaw>, Status>> {
        let inner = self.inner.clone();
        let (per_message, announced) = send_choice(ctx, inner.cfg.send_compression);
        let encoding = announced.active();
        let single = !ctx.method().mode.client_streams();
        let ctx = ctx.clone();
        Box::pin(async move {
            let slot = inner.next.fetch_add(1, Ordering::Relaxed) % inner.slots.len();
            let (response, stream, outbox) = inner.open_stream(slot, &ctx, encoding).await?;
            // A single-request call keeps what it needs to be sent again on a new connection
            // if the server refuses it unprocessed (see `never_processed`).
            let retry = single.then(|| Retry {
                inner: inner.clone(),
                ctx,
                slot,
                left: TRANSPARENT_RETRIES,
            });
            Ok(Arc::new_cyclic(|me| ClientStream {
                me: me.clone(),
                outbox,
                send: Mutex::new(ClientSend {
                    stream: DataOut::plain(stream),
                    out: Coalesce::new(),
                    single,
                    sent: false,
                    resend: None,
                }),
                recv: Mutex::new(RecvState::Waiting(response)),
                retry: Mutex::new(retry),
                per_message,
                fixed: encoding,
                max_send: inner.cfg.max_send_message,
                max_recv: inner.cfg.max_recv_message,
            }) as Arc<dyn ClientStreamRaw>)
        })
    }

    fn rpc_system(&self) -> &'static str {
        "grpc"
    }
}

struct ClientSend {
    stream: DataOut,
    /// Messages on their way to h2 (see `stream::Outbox`), encoded in shared blocks (see
    /// `stream::SCRATCH_CHUNK`).
    out: Coalesce,
    /// The method sends exactly one message and then half-closes (unary, server
    /// streaming: the core always does `send` then `close_send`), so the message carries
    /// END_STREAM itself: one DATA frame and one wake-up of the connection task fewer per call.
    single: bool,
    /// Whether a message was sent. The first one goes without waiting for window: h2
    /// assigns a new stream window only once its connection task has opened it, and waiting
    /// for that costs every unary call a round of task wake-ups; one message buffered ahead
    /// of the window keeps the bound (a window plus one message).
    sent: bool,
    /// A single-request call's request (shared, not copied), kept until the response header
    /// arrives, to be sent again if the server refuses the stream unprocessed.
    resend: Option<Bytes>,
}

enum RecvState {
    /// Waiting for the response header.
    Waiting(ResponseFuture),
    /// The server refused the stream unprocessed: opening it again on another connection.
    Reopening(Reopen),
    /// Reading messages, then the trailers.
    Body(Receiver),
    /// The end was delivered.
    Done,
}

/// The client side of one gRPC stream.
struct ClientStream {
    me: Weak<ClientStream>,
    outbox: Arc<Outbox>,
    send: Mutex<ClientSend>,
    recv: Mutex<RecvState>,
    /// Single-request calls: how to open the stream again (taken when the response header
    /// arrives).
    retry: Mutex<Option<Retry>>,
    per_message: Option<MessageCompression>,
    /// The compression announced in the request header.
    fixed: Option<Compression>,
    max_send: usize,
    max_recv: usize,
}

impl ClientStream {
    fn compression(&self) -> Option<Compression> {
        match &self.per_message {
            // The algorithm is the one announced at open; the handle says whether to use it.
            Some(m) => m.send().active().and(self.fixed),
            None => self.fixed,
        }
    }

    /// Sends `msg` with the send state held (see `ClientStreamRaw::send`).
    fn send_locked(
        &self,
        s: &mut ClientSend,
        msg: &mut dyn Encodable,
        c: Option<Compression>,
    ) -> Result<(), Status> {
        let repeat = s.sent;
        s.sent = true;
        if s.single {
            let data = encode(&mut s.out.pending, msg, c, self.max_send, repeat)?;
            s.resend = Some(data.clone());
            return send_data(&mut s.stream, data, true);
        }
        self.outbox.send(
            &self.me,
            &mut s.out,
            &mut s.stream,
            msg,
            c,
            self.max_send,
            repeat,
        )
    }

    fn cancel_send(&self) {
        let mut s = lock(&self.send);
        s.out.pending.clear();
        s.stream.h2.send_reset(h2::Reason::CANCEL);
    }

    /// Reads the response header: the end (Trailers-Only, a non-200 HTTP status, a malformed
    /// response) or the header metadata and a receiver for the body.
    fn on_response(
        &self,
        res: http::Response<h2::RecvStream>,
    ) -> Result<(Metadata, Receiver), ClientEvent> {
        let (parts, body) = res.into_parts();
        let headers = &parts.headers;
        if parts.status != http::StatusCode::OK {
            let code = code_from_http_status(parts.status.as_u16());
            let status = Status::new(
                code,
                format!("HTTP status {} from a non-gRPC response", parts.status),
            );
            return Err(ClientEvent::End(status, Metadata::new()));
        }
        if let Some(status) = end_status(headers) {
            // Trailers-Only.
            let md = metadata_from(headers).unwrap_or_default();
            return Err(ClientEvent::End(status_with_trailers(status, &md), md));
        }
        let ct_ok = headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| is_grpc_content_type(v.as_bytes()));
        if !ct_ok {
            let status = Status::internal(format!(
                "response content-type {:?} is not gRPC",
                headers.get(CONTENT_TYPE)
            ));
            return Err(ClientEvent::End(status, Metadata::new()));
        }
        let encoding = match headers
            .get(hdr::grpc_encoding())
            .map(|v| parse_encoding(v.as_bytes()))
        {
            None => None,
            Some(Ok(e)) => e,
            Some(Err(name)) => {
                let status =
                    Status::internal(format!("response grpc-encoding {name:?} is not supported"));
                return Err(ClientEvent::End(status, Metadata::new()));
            }
        };
        let md = metadata_from(headers).map_err(|s| ClientEvent::End(s, Metadata::new()))?;
        // Only a per-message handle is told what arrives (nothing else can read it).
        if let Some(m) = &self.per_message {
            let accepts = headers
                .get(hdr::grpc_accept_encoding())
                .map(|v| AcceptedEncodings::parse(v.as_bytes()))
                .unwrap_or_default();
            m.set_peer(encoding, accepts);
        }
        let rx = Receiver::new(body, self.max_recv, encoding, self.per_message.clone());
        Ok((md, rx))
    }
}

impl Flush for ClientStream {
    fn flush_pending(&self) {
        let mut s = lock(&self.send);
        let s = &mut *s;
        if let Err(e) = self.outbox.flush_listed(&mut s.out, Some(&mut s.stream)) {
            tracing::trace!(error = %e, "grpc: flushing messages of an ended stream");
        }
    }
}

impl ClientStreamRaw for ClientStream {
    fn poll_send_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        let mut s = lock(&self.send);
        if !s.sent {
            return Poll::Ready(Ok(()));
        }
        let s = &mut *s;
        // Only the sending half polls the send stream (the receiving half polls the response
        // and body), so its waker slot needs no fan-out.
        poll_capacity(&mut s.stream, &mut s.out, None, cx, len)
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let c = self.compression();
        let mut s = lock(&self.send);
        self.send_locked(&mut s, msg, c)
    }

    fn poll_send(&self, cx: &mut Context<'_>, msg: &mut dyn Encodable) -> Poll<Result<(), Status>> {
        let c = self.compression();
        let mut s = lock(&self.send);
        if s.sent {
            let s = &mut *s;
            let len = msg.encoded_len().unwrap_or(0);
            std::task::ready!(poll_capacity(&mut s.stream, &mut s.out, None, cx, len))?;
        }
        Poll::Ready(self.send_locked(&mut s, msg, c))
    }

    fn close_send(&self) -> Result<(), Status> {
        // The server may already have ended the stream (a unary reply and then
        // RST_STREAM(NO_ERROR), as gRPC servers do when they finish before the client's
        // END_STREAM): there is nothing left to half-close, and the end the server sent is
        // what `poll_event` reports.
        let mut s = lock(&self.send);
        if s.single && s.sent {
            return Ok(()); // the message carried END_STREAM
        }
        let s = &mut *s;
        if let Err(e) = flush(&mut s.stream, &mut s.out.pending, true) {
            tracing::trace!(error = %e, "grpc: close_send on an ended stream");
        }
        Ok(())
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<ClientEvent> {
        self.poll_event_into(cx, None)
    }

    fn poll_event_many(
        &self,
        cx: &mut Context<'_>,
        more: &mut VecDeque<Bytes>,
        max: usize,
    ) -> Poll<ClientEvent> {
        self.poll_event_into(cx, Some((more, max)))
    }

    fn reset(&self, _status: &Status) {
        self.cancel_send();
        *lock(&self.recv) = RecvState::Done;
    }
}

impl ClientStream {
    /// The response header; while the server refuses the call unprocessed (and attempts are
    /// left), the call is sent again on another connection first.
    fn poll_response(
        &self,
        st: &mut RecvState,
        cx: &mut Context<'_>,
    ) -> Poll<Result<http::Response<h2::RecvStream>, ClientEvent>> {
        let end = |status| ClientEvent::End(status, Metadata::new());
        loop {
            match st {
                RecvState::Waiting(fut) => {
                    let e = match std::task::ready!(Pin::new(&mut *fut).poll(cx)) {
                        Ok(res) => return Poll::Ready(Ok(res)),
                        Err(e) => e,
                    };
                    let reopen = never_processed(&e).then(|| self.reopen()).flatten();
                    let Some(reopen) = reopen else {
                        return Poll::Ready(Err(end(status_from_h2(&e, "call"))));
                    };
                    tracing::debug!(error = %e, "grpc: stream refused unprocessed; sending it again");
                    *st = RecvState::Reopening(reopen);
                }
                RecvState::Reopening(f) => match std::task::ready!(f.as_mut().poll(cx)) {
                    Ok((response, stream, _)) => {
                        let mut s = lock(&self.send);
                        s.stream = DataOut::plain(stream);
                        if let Some(data) = s.resend.clone() {
                            if let Err(e) = send_data(&mut s.stream, data, true) {
                                return Poll::Ready(Err(end(e)));
                            }
                        }
                        drop(s);
                        *st = RecvState::Waiting(response);
                    }
                    Err(e) => return Poll::Ready(Err(end(e))),
                },
                RecvState::Body(_) | RecvState::Done => {
                    return Poll::Ready(Err(end(Status::internal("no response to wait for"))))
                }
            }
        }
    }

    /// A new attempt of this single-request call, if one is left.
    fn reopen(&self) -> Option<Reopen> {
        let mut retry = lock(&self.retry);
        let r = retry.as_mut().filter(|r| r.left > 0)?;
        r.left -= 1;
        let (inner, ctx, slot, encoding) = (r.inner.clone(), r.ctx.clone(), r.slot, self.fixed);
        Some(Box::pin(async move {
            inner.open_stream(slot, &ctx, encoding).await
        }))
    }
}

impl ClientStream {
    /// The next event; with `more`, a message comes with up to `max` more that are whole in
    /// the chunk being decoded (see `ClientStreamRaw::poll_event_many`).
    fn poll_event_into(
        &self,
        cx: &mut Context<'_>,
        more: Option<(&mut VecDeque<Bytes>, usize)>,
    ) -> Poll<ClientEvent> {
        let mut st = lock(&self.recv);
        match &mut *st {
            RecvState::Waiting(_) | RecvState::Reopening(_) => {
                let res = match std::task::ready!(self.poll_response(&mut st, cx)) {
                    Ok(r) => r,
                    Err(end) => {
                        *st = RecvState::Done;
                        return Poll::Ready(end);
                    }
                };
                match self.on_response(res) {
                    Ok((md, rx)) => {
                        *st = RecvState::Body(rx);
                        Poll::Ready(ClientEvent::Header(md))
                    }
                    Err(end) => {
                        *st = RecvState::Done;
                        self.cancel_send();
                        Poll::Ready(end)
                    }
                }
            }
            RecvState::Body(rx) => match std::task::ready!(rx.poll_message(cx)) {
                Ok(Received::Message(m)) => {
                    if let Some((more, max)) = more {
                        rx.take_ready(more, max);
                    }
                    Poll::Ready(ClientEvent::Message(m))
                }
                Ok(Received::Eof) => {
                    let end = match std::task::ready!(rx.body.poll_trailers(cx)) {
                        Ok(Some(t)) => match end_status(&t) {
                            Some(status) => {
                                let md = metadata_from(&t).unwrap_or_default();
                                ClientEvent::End(status_with_trailers(status, &md), md)
                            }
                            None => ClientEvent::End(
                                Status::internal("trailers without grpc-status"),
                                metadata_from(&t).unwrap_or_default(),
                            ),
                        },
                        Ok(None) => ClientEvent::End(
                            Status::internal("the server ended the stream without trailers"),
                            Metadata::new(),
                        ),
                        Err(e) => ClientEvent::End(status_from_h2(&e, "trailers"), Metadata::new()),
                    };
                    *st = RecvState::Done;
                    Poll::Ready(end)
                }
                Err(e) => {
                    *st = RecvState::Done;
                    self.cancel_send();
                    Poll::Ready(ClientEvent::End(e, Metadata::new()))
                }
            },
            RecvState::Done => Poll::Pending,
        }
    }
}
