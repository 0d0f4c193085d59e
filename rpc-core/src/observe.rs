//! Observability of every call, on both sides and over every transport: one `tracing` span per
//! call or stream, W3C trace context carried in metadata, and metrics through the `metrics`
//! facade. The client and server cores call in here at a few points (open, each message,
//! end); transports do nothing.
//!
//! # Spans
//!
//! A client call opens the span `rpc.client`, a served stream `rpc.server` (both at `INFO`),
//! with the OpenTelemetry RPC semantic-convention fields: `otel.name` (`pkg.Service/Method`),
//! `otel.kind`, `rpc.system` (the transport: `ttheader`, `grpc`, ...), `rpc.service`,
//! `rpc.method`, `network.peer.address` and `network.peer.port` (when the peer is known), and
//! at the end `rpc.status_code` (the numeric code) and `otel.status_code` (`OK`/`ERROR`), plus
//! `trace_id`, `span_id` and `parent_span_id` (hex, W3C form). Events inside the span: `rpc
//! end` (status, messages and bytes each way, duration) at `DEBUG`, and `rpc cancelled` /
//! `rpc deadline exceeded` when the call ended so.
//!
//! The spans and metrics are one observer of the stream events of [`crate::events`], built
//! in: the counters every observer's [`StreamFinish`] reports are
//! theirs, and at the end they record from the same `StreamFinish` (called statically, before
//! the registered observers). What they do besides — open the span before the call, put the
//! trace context in the request metadata, run the handler inside the span — an observer
//! cannot, so that stays here.
//!
//! # Trace context
//!
//! The trace id travels as a W3C `traceparent` metadata entry ([`TRACEPARENT`]): TTHeader
//! string keys and gRPC metadata carry it as any other entry. rpc-core has no OpenTelemetry
//! SDK dependency: a [`TraceContext`] is the 16-byte trace id, the 8-byte span id and the
//! sampled flag, generated here and recorded on the spans as fields, which is what any
//! exporter (a `tracing-opentelemetry` layer, a log pipeline) needs to join the two sides.
//! A client call joins the trace of the server call it is made from ([`TraceContext::current`]:
//! the handler runs with its call's context set), else starts a new trace; a `traceparent`
//! the caller put in the call's metadata itself is kept as the parent.
//!
//! # Cost
//!
//! With no subscriber interested in the spans and metrics not enabled, a call pays two
//! relaxed checks (the span callsite's interest and one atomic flag): nothing is allocated,
//! formatted, or sent. Metrics are recorded only after [`enable_metrics`] (call it once the
//! application installed its `metrics` recorder): the per-method handles are registered once
//! and reused, so a call costs a few atomic adds and one histogram record.

use std::cell::Cell;
#[cfg(feature = "metrics")]
use std::cell::RefCell;
#[cfg(feature = "metrics")]
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(feature = "metrics")]
use std::sync::Mutex;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

#[cfg(feature = "metrics")]
use crate::context::Mode;
use crate::context::{CallContext, MethodDesc};
use crate::events::{self, StreamEvents, StreamFinish, StreamObserver, StreamStart};
use crate::status::{Code, Status};

/// The metadata key of the W3C trace context (<https://www.w3.org/TR/trace-context/>).
pub const TRACEPARENT: &str = "traceparent";

/// A W3C trace context: which trace a call belongs to and which span is its parent.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_traceparent())
    }
}

fn random_u64() -> u64 {
    // Not for secrets: unique, unpredictable-enough ids from the std SipHash keys and a counter.
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = STATE.get_or_init(Default::default).build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

fn nonzero_u64() -> u64 {
    loop {
        let v = random_u64();
        if v != 0 {
            return v;
        }
    }
}

thread_local! {
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

impl TraceContext {
    /// A new trace (random ids, sampled).
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: (u128::from(nonzero_u64()) << 64) | u128::from(random_u64()),
            span_id: nonzero_u64(),
            sampled: true,
        }
    }

    /// A new span in the same trace, with this one as its parent.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    /// The 16-byte trace id.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The 8-byte span id.
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// Whether the trace is sampled (the `01` flag).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// `00-<trace id>-<span id>-<flags>`.
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// Parses a `traceparent` value (version 00 layout; later versions are read by the same
    /// prefix, as the spec asks). Invalid input, all-zero ids and version `ff` are `None`.
    pub fn parse(value: &str) -> Option<TraceContext> {
        let v = value.trim().as_bytes();
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let hex = |b: &[u8]| -> Option<u128> {
            if b.iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
            {
                u128::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
            } else {
                None
            }
        };
        let version = hex(&v[0..2])?;
        if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        let trace_id = hex(&v[3..35])?;
        let span_id = u64::try_from(hex(&v[36..52])?).ok()?;
        let flags = hex(&v[53..55])?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The context of the server call whose handler is running on this thread right now
    /// (set while the handler is polled), if any: client calls made from a handler join it.
    pub fn current() -> Option<TraceContext> {
        CURRENT.with(Cell::get)
    }

    /// Runs `fut` with this context as [`TraceContext::current`] while it is polled (for work a
    /// handler spawns that makes calls of its own).
    pub fn scope<F: Future>(self, fut: F) -> Scoped<F> {
        Scoped {
            ctx: Some(self),
            fut,
        }
    }
}

pin_project_lite::pin_project! {
    /// A future polled with a [`TraceContext`] set as current ([`TraceContext::scope`]).
    pub struct Scoped<F> {
        ctx: Option<TraceContext>,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let prev = CURRENT.with(|c| c.replace(*this.ctx));
        let out = this.fut.poll(cx);
        CURRENT.with(|c| c.set(prev));
        out
    }
}

// ------------------------------------------------------------------------------------ metrics

#[cfg(feature = "metrics")]
static METRICS: AtomicBool = AtomicBool::new(false);

/// Starts recording metrics for every call from now on. Call it after installing the
/// application's `metrics` recorder (handles registered before would go to the no-op one).
#[cfg(feature = "metrics")]
pub fn enable_metrics() {
    METRICS.store(true, Ordering::Release);
}

/// Whether [`enable_metrics`] was called.
#[cfg(feature = "metrics")]
pub fn metrics_enabled() -> bool {
    METRICS.load(Ordering::Relaxed)
}

/// Metric names (Prometheus style, after the OpenTelemetry RPC metrics). Every one has the
/// labels `rpc_system`, `rpc_service`, `rpc_method`; the `finished`, `duration` ones also
/// `rpc_status` (the status code name, as `OK` or `UNAVAILABLE`). `SIDE` is `client` or
/// `server`.
#[cfg(feature = "metrics")]
pub mod names {
    /// Counter: calls and streams started.
    pub const STARTED: [&str; 2] = ["rpc_client_started_total", "rpc_server_started_total"];
    /// Counter: calls and streams finished, by status.
    pub const FINISHED: [&str; 2] = ["rpc_client_finished_total", "rpc_server_finished_total"];
    /// Gauge: calls and streams in flight.
    pub const IN_FLIGHT: [&str; 2] = ["rpc_client_in_flight", "rpc_server_in_flight"];
    /// Histogram: duration of a call or stream in seconds, by status.
    pub const DURATION: [&str; 2] = ["rpc_client_duration_seconds", "rpc_server_duration_seconds"];
    /// Counter: messages sent.
    pub const MSGS_SENT: [&str; 2] = [
        "rpc_client_messages_sent_total",
        "rpc_server_messages_sent_total",
    ];
    /// Counter: messages received.
    pub const MSGS_RECEIVED: [&str; 2] = [
        "rpc_client_messages_received_total",
        "rpc_server_messages_received_total",
    ];
    /// Counter: message bytes sent (encoded payloads, without framing).
    pub const BYTES_SENT: [&str; 2] =
        ["rpc_client_sent_bytes_total", "rpc_server_sent_bytes_total"];
    /// Counter: message bytes received.
    pub const BYTES_RECEIVED: [&str; 2] = [
        "rpc_client_received_bytes_total",
        "rpc_server_received_bytes_total",
    ];
    /// Histogram: messages received per stream (requests per RPC on a server).
    pub const MSGS_PER_STREAM: [&str; 2] = [
        "rpc_client_responses_per_rpc",
        "rpc_server_requests_per_rpc",
    ];
    /// Gauge, label `protocol`: open server connections per protocol.
    pub const CONNECTIONS: &str = "rpc_server_connections";
    /// Gauge: streams and calls the server is running.
    pub const ACTIVE_STREAMS: &str = "rpc_server_active_streams";
    /// Gauge: bytes the server holds buffered (its `ByteBudget`).
    pub const BUFFERED_BYTES: &str = "rpc_server_buffered_bytes";
}

/// Which side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Side {
    Client = 0,
    Server = 1,
}

impl Side {
    fn kind(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// The handles of one method on one side (and one system), registered once.
#[cfg(feature = "metrics")]
struct MethodMetrics {
    labels: [(&'static str, &'static str); 3],
    side: usize,
    started: metrics::Counter,
    in_flight: metrics::Gauge,
    msgs_sent: metrics::Counter,
    msgs_received: metrics::Counter,
    bytes_sent: metrics::Counter,
    bytes_received: metrics::Counter,
    /// Only for modes where the count varies.
    per_stream: Option<metrics::Histogram>,
    /// By status code: finished counter and duration histogram, registered on first use.
    by_code: [OnceLock<(metrics::Counter, metrics::Histogram)>; 17],
}

#[cfg(feature = "metrics")]
type MetricsKey = (usize, Side, &'static str);

/// The handles of `method` on `side`: registered once per process (and leaked: one small
/// value per method, side and transport, for the life of the process), then found through a
/// per-thread cache, so a call touches no shared lock or reference count to find them.
#[cfg(feature = "metrics")]
fn method_metrics(
    method: &'static MethodDesc,
    side: Side,
    system: &'static str,
) -> &'static MethodMetrics {
    static MAP: OnceLock<Mutex<HashMap<MetricsKey, &'static MethodMetrics>>> = OnceLock::new();
    thread_local! {
        static CACHE: RefCell<HashMap<MetricsKey, &'static MethodMetrics>> =
            RefCell::new(HashMap::new());
    }
    let key = (std::ptr::from_ref(method) as usize, side, system);
    if let Some(m) = CACHE.with(|c| c.borrow().get(&key).copied()) {
        return m;
    }
    let map = MAP.get_or_init(Default::default);
    let m = *map
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_insert_with(|| Box::leak(Box::new(MethodMetrics::register(method, side, system))));
    CACHE.with(|c| c.borrow_mut().insert(key, m));
    m
}

#[cfg(feature = "metrics")]
impl MethodMetrics {
    fn register(method: &'static MethodDesc, side: Side, system: &'static str) -> MethodMetrics {
        let labels = [
            ("rpc_system", system),
            ("rpc_service", method.full_service),
            ("rpc_method", method.name),
        ];
        let s = side as usize;
        // Requests per RPC of a unary or server-streaming method, responses per RPC of a
        // unary or client-streaming one: always 1, not worth a histogram record per call.
        let varies = matches!(
            (side, method.mode),
            (_, Mode::Bidi)
                | (Side::Server, Mode::ClientStreaming)
                | (Side::Client, Mode::ServerStreaming)
        );
        MethodMetrics {
            labels,
            side: s,
            started: metrics::counter!(names::STARTED[s], &labels),
            in_flight: metrics::gauge!(names::IN_FLIGHT[s], &labels),
            msgs_sent: metrics::counter!(names::MSGS_SENT[s], &labels),
            msgs_received: metrics::counter!(names::MSGS_RECEIVED[s], &labels),
            bytes_sent: metrics::counter!(names::BYTES_SENT[s], &labels),
            bytes_received: metrics::counter!(names::BYTES_RECEIVED[s], &labels),
            per_stream: varies.then(|| metrics::histogram!(names::MSGS_PER_STREAM[s], &labels)),
            by_code: Default::default(),
        }
    }

    /// A call started.
    fn on_start(&self) {
        self.started.increment(1);
        self.in_flight.increment(1.0);
    }

    /// A call ended with `code` after `elapsed`, with these message and byte counts.
    fn on_end(&self, code: Code, elapsed: std::time::Duration, counts: [u64; 4]) {
        self.in_flight.decrement(1.0);
        let (finished, duration) = self.finished(code);
        finished.increment(1);
        duration.record(elapsed.as_secs_f64());
        for (c, n) in [
            &self.msgs_sent,
            &self.msgs_received,
            &self.bytes_sent,
            &self.bytes_received,
        ]
        .into_iter()
        .zip(counts)
        {
            if n > 0 {
                c.increment(n);
            }
        }
        if let Some(h) = &self.per_stream {
            h.record(counts[1] as f64);
        }
    }

    fn finished(&self, code: Code) -> &(metrics::Counter, metrics::Histogram) {
        let i = (code as usize).min(16);
        self.by_code[i].get_or_init(|| {
            let labels = [
                self.labels[0],
                self.labels[1],
                self.labels[2],
                ("rpc_status", code_name(code)),
            ];
            (
                metrics::counter!(names::FINISHED[self.side], &labels),
                metrics::histogram!(names::DURATION[self.side], &labels),
            )
        })
    }
}

/// Without the `metrics` feature there are no per-method handles: nothing is recorded.
#[cfg(not(feature = "metrics"))]
enum MethodMetrics {}

#[cfg(not(feature = "metrics"))]
impl MethodMetrics {
    fn on_start(&self) {
        match *self {}
    }

    fn on_end(&self, _code: Code, _elapsed: std::time::Duration, _counts: [u64; 4]) {
        match *self {}
    }
}

/// The metric handles of `method` on `side`, when metrics are built and enabled.
fn metrics_for(
    method: &'static MethodDesc,
    side: Side,
    system: &'static str,
) -> Option<&'static MethodMetrics> {
    #[cfg(feature = "metrics")]
    {
        metrics_enabled().then(|| method_metrics(method, side, system))
    }
    #[cfg(not(feature = "metrics"))]
    {
        let _ = (method, side, system);
        None
    }
}

/// The canonical name of a code (`OK`, `UNAVAILABLE`, ...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::RecvDeadlineExceeded => "RECV_DEADLINE_EXCEEDED",
    }
}

/// Counts an open server connection of `protocol` while it lives (the serving layer holds one
/// per served connection when metrics are enabled).
#[cfg(all(feature = "net", feature = "metrics"))]
pub(crate) struct ConnGauge(metrics::Gauge);

/// Without the `metrics` feature no connection is counted.
#[cfg(all(feature = "net", not(feature = "metrics")))]
pub(crate) enum ConnGauge {}

#[cfg(all(feature = "net", not(feature = "metrics")))]
impl ConnGauge {
    pub(crate) fn open(_protocol: &'static str) -> Option<ConnGauge> {
        None
    }
}

#[cfg(all(feature = "net", feature = "metrics"))]
impl ConnGauge {
    pub(crate) fn open(protocol: &'static str) -> Option<ConnGauge> {
        if !metrics_enabled() {
            return None;
        }
        let g = metrics::gauge!(names::CONNECTIONS, "protocol" => protocol);
        g.increment(1.0);
        Some(ConnGauge(g))
    }
}

#[cfg(all(feature = "net", feature = "metrics"))]
impl Drop for ConnGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Sets the server-wide gauges (active streams, buffered bytes) from `server`'s counters:
/// call it before rendering a scrape.
#[cfg(feature = "metrics")]
pub fn record_server_gauges(server: &impl ServerGauges) {
    metrics::gauge!(names::ACTIVE_STREAMS).set(server.active_streams() as f64);
    metrics::gauge!(names::BUFFERED_BYTES).set(server.buffered_bytes() as f64);
}

/// The counters [`record_server_gauges`] reads: implemented by
/// [`Server`](crate::Server) (a trait so this module, which the server core records calls
/// through, does not depend on it).
#[cfg(feature = "metrics")]
pub trait ServerGauges {
    /// Streams and calls whose handlers are running.
    fn active_streams(&self) -> usize;
    /// Bytes held buffered against the server-wide budget.
    fn buffered_bytes(&self) -> usize;
}

// ------------------------------------------------------------------------------ call observer

/// What one call records while it runs; nothing at all when nobody observes.
pub(crate) struct CallObserver(Option<Box<Active>>);

struct Active {
    /// The span and the metrics: the built-in observer, a [`StreamEvents`] like the
    /// registered ones (called first, statically).
    builtin: Builtin,
    /// The per-stream events of the registered observers ([`crate::events`]).
    hooks: Vec<Box<dyn StreamEvents>>,
    start: Instant,
    trace: Option<TraceContext>,
    msgs_sent: AtomicU64,
    msgs_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    ended: AtomicBool,
}

fn open_span(side: Side, ctx: &CallContext, system: &'static str) -> tracing::Span {
    let m = ctx.method();
    let span = match side {
        Side::Client => tracing::info_span!(
            "rpc.client",
            otel.name = m.path.trim_start_matches('/'),
            otel.kind = side.kind(),
            rpc.system = system,
            rpc.service = m.full_service,
            rpc.method = m.name,
            network.peer.address = tracing::field::Empty,
            network.peer.port = tracing::field::Empty,
            rpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
        ),
        Side::Server => tracing::info_span!(
            "rpc.server",
            otel.name = m.path.trim_start_matches('/'),
            otel.kind = side.kind(),
            rpc.system = system,
            rpc.service = m.full_service,
            rpc.method = m.name,
            network.peer.address = tracing::field::Empty,
            network.peer.port = tracing::field::Empty,
            rpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
        ),
    };
    if !span.is_disabled() {
        if let Some(peer) = ctx.peer() {
            match peer.socket_addr() {
                Some(a) => {
                    span.record("network.peer.address", tracing::field::display(a.ip()));
                    span.record("network.peer.port", a.port());
                }
                None => {
                    span.record("network.peer.address", tracing::field::display(peer));
                }
            }
        }
    }
    span
}

impl CallObserver {
    /// A client call about to open: its span, its trace context (written to the call's
    /// metadata as `traceparent`), its metrics.
    pub(crate) fn client(
        ctx: &mut CallContext,
        system: &'static str,
        observers: &[Arc<dyn StreamObserver>],
    ) -> CallObserver {
        let span = open_span(Side::Client, ctx, system);
        let metrics = metrics_for(ctx.method(), Side::Client, system);
        let parent = TraceContext::current();
        if span.is_disabled() && metrics.is_none() && parent.is_none() && observers.is_empty() {
            return CallObserver(None);
        }
        // Propagate when tracing here, or when passing on a trace this call is part of.
        let mut trace = None;
        if !span.is_disabled() || parent.is_some() {
            let explicit = ctx
                .metadata()
                .get(TRACEPARENT)
                .and_then(|v| v.as_str())
                .and_then(TraceContext::parse);
            let own = match explicit.or(parent) {
                Some(p) => {
                    span.record("parent_span_id", p.span_id_hex());
                    p.child()
                }
                None => TraceContext::new_root(),
            };
            if explicit.is_none() {
                ctx.metadata_mut().insert(TRACEPARENT, own.to_traceparent());
            }
            span.record("trace_id", own.trace_id_hex());
            span.record("span_id", own.span_id_hex());
            trace = Some(own);
        }
        let hooks = start_hooks(events::Side::Client, ctx, system, observers);
        Self::start(Side::Client, span, metrics, trace, hooks)
    }

    /// A server stream about to run: its span (joined to the client's trace through the
    /// request's `traceparent`), its metrics. The trace context goes into the call's
    /// extensions ([`TraceContext`]) for the handler.
    pub(crate) fn server(
        ctx: &mut CallContext,
        system: &'static str,
        observers: &[Arc<dyn StreamObserver>],
    ) -> CallObserver {
        let span = open_span(Side::Server, ctx, system);
        let metrics = metrics_for(ctx.method(), Side::Server, system);
        let remote = ctx
            .metadata()
            .get(TRACEPARENT)
            .and_then(|v| v.as_str())
            .and_then(TraceContext::parse);
        let traced = !span.is_disabled() || metrics.is_some() || remote.is_some();
        if !traced {
            if observers.is_empty() {
                return CallObserver(None);
            }
            // Only observers: no trace context is made for them.
            let hooks = start_hooks(events::Side::Server, ctx, system, observers);
            return Self::start(Side::Server, span, metrics, None, hooks);
        }
        let trace = match remote {
            Some(p) => {
                span.record("parent_span_id", p.span_id_hex());
                p.child()
            }
            None => TraceContext::new_root(),
        };
        span.record("trace_id", trace.trace_id_hex());
        span.record("span_id", trace.span_id_hex());
        ctx.extensions_mut().insert(trace);
        let hooks = start_hooks(events::Side::Server, ctx, system, observers);
        Self::start(Side::Server, span, metrics, Some(trace), hooks)
    }

    fn start(
        side: Side,
        span: tracing::Span,
        metrics: Option<&'static MethodMetrics>,
        trace: Option<TraceContext>,
        hooks: Vec<Box<dyn StreamEvents>>,
    ) -> CallObserver {
        if let Some(m) = &metrics {
            m.on_start();
        }
        CallObserver(Some(Box::new(Active {
            builtin: Builtin {
                side,
                span,
                metrics,
            },
            hooks,
            start: Instant::now(),
            trace,
            msgs_sent: AtomicU64::new(0),
            msgs_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        })))
    }

    /// The call's span (disabled when nobody observes).
    pub(crate) fn span(&self) -> Option<&tracing::Span> {
        self.0.as_ref().map(|a| &a.builtin.span)
    }

    /// The call's trace context, if traced.
    pub(crate) fn trace(&self) -> Option<TraceContext> {
        self.0.as_ref().and_then(|a| a.trace)
    }

    /// A message of `bytes` went out.
    #[inline]
    pub(crate) fn sent(&self, bytes: usize) {
        if let Some(a) = &self.0 {
            a.msgs_sent.fetch_add(1, Ordering::Relaxed);
            a.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
            a.hooks.iter().for_each(|h| h.on_send(bytes));
        }
    }

    /// The response header was received (client) or sent (server).
    #[inline]
    pub(crate) fn header(&self, header: &crate::metadata::Metadata) {
        if let Some(a) = &self.0 {
            a.hooks.iter().for_each(|h| h.on_header(header));
        }
    }

    /// A message of `bytes` came in.
    #[inline]
    pub(crate) fn received(&self, bytes: usize) {
        if let Some(a) = &self.0 {
            a.msgs_received.fetch_add(1, Ordering::Relaxed);
            a.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
            a.hooks.iter().for_each(|h| h.on_recv(bytes));
        }
    }

    /// The call ended with `status` (only the first end counts).
    pub(crate) fn end(&self, status: &Status) {
        let Some(a) = &self.0 else {
            return;
        };
        if a.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        let finish = StreamFinish {
            status,
            messages_sent: a.msgs_sent.load(Ordering::Relaxed),
            messages_received: a.msgs_received.load(Ordering::Relaxed),
            bytes_sent: a.bytes_sent.load(Ordering::Relaxed),
            bytes_received: a.bytes_received.load(Ordering::Relaxed),
            duration: a.start.elapsed(),
        };
        a.builtin.on_finish(&finish);
        a.hooks.iter().for_each(|h| h.on_finish(&finish));
    }
}

/// Spans and metrics, as one observer of the stream events: at the end it records the
/// metrics, the span's status fields and the end events.
struct Builtin {
    side: Side,
    span: tracing::Span,
    metrics: Option<&'static MethodMetrics>,
}

impl StreamEvents for Builtin {
    fn on_finish(&self, f: &StreamFinish<'_>) {
        let (status, elapsed) = (f.status, f.duration);
        let code = status.code();
        let (ms, mr, bs, br) = (
            f.messages_sent,
            f.messages_received,
            f.bytes_sent,
            f.bytes_received,
        );
        if let Some(m) = &self.metrics {
            m.on_end(code, elapsed, [ms, mr, bs, br]);
        }
        if self.span.is_disabled() {
            return;
        }
        self.span.record("rpc.status_code", code as i32);
        self.span.record(
            "otel.status_code",
            if status.is_ok() { "OK" } else { "ERROR" },
        );
        let side = self.side.kind();
        match code {
            Code::Cancelled => {
                tracing::info!(parent: &self.span, side, reason = %status.message(), "rpc cancelled")
            }
            Code::DeadlineExceeded => {
                tracing::info!(parent: &self.span, side, reason = %status.message(), "rpc deadline exceeded")
            }
            _ => {}
        }
        tracing::debug!(
            parent: &self.span,
            side,
            status = code_name(code),
            reason = %status.message(),
            messages_sent = ms,
            messages_received = mr,
            bytes_sent = bs,
            bytes_received = br,
            duration_us = elapsed.as_micros() as u64,
            "rpc end"
        );
    }
}

impl Drop for CallObserver {
    fn drop(&mut self) {
        // A call dropped without an end (a handle dropped, a task aborted) ends as cancelled.
        if self
            .0
            .as_ref()
            .is_some_and(|a| !a.ended.load(Ordering::Acquire))
        {
            self.end(&Status::cancelled("dropped before its end"));
        }
    }
}

/// The events of the observers that follow this stream (no allocation when none does).
fn start_hooks(
    side: events::Side,
    ctx: &CallContext,
    rpc_system: &'static str,
    observers: &[Arc<dyn StreamObserver>],
) -> Vec<Box<dyn StreamEvents>> {
    if observers.is_empty() {
        return Vec::new();
    }
    let start = StreamStart {
        side,
        ctx,
        rpc_system,
    };
    observers
        .iter()
        .filter_map(|o| o.on_start(&start))
        .collect()
}

/// `fut` running inside the call's span and with its trace context current (boxed once more
/// only when the call is traced).
pub(crate) fn instrument(
    observe: &CallObserver,
    fut: crate::transport::BoxFuture<'static, Result<(), Status>>,
) -> crate::transport::BoxFuture<'static, Result<(), Status>> {
    use tracing::Instrument;
    let (Some(span), Some(trace)) = (observe.span(), observe.trace()) else {
        return fut;
    };
    if span.is_disabled() {
        Box::pin(trace.scope(fut))
    } else {
        Box::pin(trace.scope(fut).instrument(span.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::TraceContext;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_input() {
        let t = TraceContext::new_root();
        let s = t.to_traceparent();
        assert_eq!(s.len(), 55);
        assert_eq!(TraceContext::parse(&s), Some(t));
        let c = t.child();
        assert_eq!(c.trace_id(), t.trace_id());
        assert_ne!(c.span_id(), t.span_id());
        let spec = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = TraceContext::parse(spec).unwrap();
        assert_eq!(p.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id_hex(), "00f067aa0ba902b7");
        assert!(p.sampled());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        // A later version with more fields is read by its prefix.
        assert!(TraceContext::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"
        )
        .is_some());
    }
}
