//! Resilience layers, usable on every transport.
//!
//! Client, over the typed unary layer ([`ClientBuilder::unary_layer`](crate::ClientBuilder::unary_layer)),
//! so they see a unary call whole:
//!
//! * [`RetryLayer`] — retries on retryable statuses (`UNAVAILABLE` by default) with backoff and
//!   a retry budget ([`tower::retry::budget::TpsBudget`]: retries may add at most a set
//!   percentage to the calls that succeed, so a sick service is not hit twice as hard). A call
//!   is retried only if it **cannot have been processed** — its status is marked [`NotSent`]:
//!   the stream never opened (connect refused or timed out), which [`crate::balance::Balanced`]
//!   and [`MarkUnsentLayer`] mark — **or its method is idempotent**: listed in
//!   [`RetryPolicy::idempotent`] or marked per call with the [`Idempotent`] extension. An
//!   `UNAVAILABLE` after the stream opened (the connection dropped after the request was
//!   written) may have run on the server and is returned as is for other methods.
//! * [`CircuitBreakerLayer`] — one [`Breaker`] per method: an error-rate window, openings with
//!   exponential backoff, half-open probes. While open, calls fail fast with `UNAVAILABLE`
//!   (marked [`NotSent`]). The balancer keeps one breaker per instance as well.
//!
//! Recommended order (first added = outermost): retry, circuit breaker — each attempt passes
//! the breaker.
//!
//! Timeouts are not a layer: [`ClientBuilder::timeout`](crate::ClientBuilder::timeout),
//! [`ClientBuilder::method_timeout`](crate::ClientBuilder::method_timeout) and
//! [`CallOptions::timeout`](crate::CallOptions::timeout) set the call's deadline before any
//! layer runs, so it bounds the whole call in every mode (a unary call's retry attempts
//! included; the retry layer stops when the next backoff would end past it) and reaches the
//! server with the request.
//!
//! Streams are never retried: unary layers see only unary calls, and the balancer retries
//! an open on another instance only when the open itself failed, before any message was sent.
//!
//! Server, over call middleware ([`ServerBuilder::layer`](crate::ServerBuilder::layer)):
//! [`ConcurrencyLimitLayer`] and [`RateLimitLayer`] shed load with `RESOURCE_EXHAUSTED` instead
//! of queueing (a queue in front of an overloaded server only adds latency to every call).

pub mod breaker;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::Layer;

pub use breaker::{Breaker, BreakerConfig, BreakerState};

use crate::client::OpenStream;
use crate::context::CallContext;
use crate::server::IncomingCall;
use crate::status::{Code, Status};
use crate::transport::BoxFuture;
use crate::unary::{UnaryRequest, UnaryResponse};

/// Marks a status as "the request was never sent": the stream could not be opened, so the
/// server cannot have processed it and a retry is safe for any method. The original status is
/// the source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("request not sent: {0}")]
pub struct NotSent(#[source] pub Status);

impl NotSent {
    /// `status` with a [`NotSent`] source (code and message unchanged).
    pub fn mark(status: Status) -> Status {
        if NotSent::is(&status) {
            return status;
        }
        let code = status.code();
        let message = status.message().to_owned();
        Status::new(code, message).with_source(NotSent(status))
    }

    /// Whether `status` is marked.
    pub fn is(status: &Status) -> bool {
        status
            .source_error()
            .is_some_and(|e| e.downcast_ref::<NotSent>().is_some())
    }
}

/// A call extension marking this call as idempotent (safe to run twice): the retry layer may
/// retry it even when the request may have been processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Idempotent;

/// A stream-level client layer ([`ClientBuilder::layer`](crate::ClientBuilder::layer)) that
/// marks every failed open [`NotSent`], for clients on one transport without a balancer.
#[derive(Debug, Clone, Copy, Default)]
pub struct MarkUnsentLayer;

impl<S> Layer<S> for MarkUnsentLayer {
    type Service = MarkUnsent<S>;
    fn layer(&self, inner: S) -> MarkUnsent<S> {
        MarkUnsent(inner)
    }
}

/// The service of [`MarkUnsentLayer`].
#[derive(Debug, Clone)]
pub struct MarkUnsent<S>(S);

impl<S> tower::Service<CallContext> for MarkUnsent<S>
where
    S: tower::Service<CallContext, Response = OpenStream, Error = Status>,
    S::Future: Send + 'static,
{
    type Response = OpenStream;
    type Error = Status;
    type Future = BoxFuture<'static, Result<OpenStream, Status>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, ctx: CallContext) -> Self::Future {
        let f = self.0.call(ctx);
        Box::pin(async move { f.await.map_err(NotSent::mark) })
    }
}

// ---------------------------------------------------------------------------------------------
// Retry

/// The first retry's backoff; each further retry doubles it, up to [`MAX_BACKOFF`], with full
/// jitter (a random wait between half of it and all of it).
pub const BASE_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// When and how often the [`RetryLayer`] retries.
#[derive(Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    retryable: Arc<[Code]>,
    idempotent: Arc<std::collections::HashSet<String>>,
    budget: Arc<TpsBudget>,
    base: Duration,
    max: Duration,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("retryable", &self.retryable)
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    /// 3 attempts, `UNAVAILABLE` only, no idempotent method, a budget of 20% retries over 10 s
    /// plus 10 retries per second.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            retryable: Arc::new([Code::Unavailable]),
            idempotent: Arc::default(),
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            base: BASE_BACKOFF,
            max: MAX_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// The most attempts per call, the first included (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The statuses that may be retried (default `UNAVAILABLE`).
    pub fn retryable(mut self, codes: &[Code]) -> Self {
        self.retryable = codes.into();
        self
    }

    /// Methods (gRPC paths, `/pkg.Service/Method`) that are safe to run twice: retried even
    /// when the request may have been processed.
    pub fn idempotent<I: Into<String>>(mut self, paths: impl IntoIterator<Item = I>) -> Self {
        self.idempotent = Arc::new(paths.into_iter().map(Into::into).collect());
        self
    }

    /// The retry budget: over `ttl`, retries may add `percent` (0.0..=1000.0) of the
    /// successful calls, plus `min_per_sec` retries per second.
    pub fn budget(mut self, ttl: Duration, min_per_sec: u32, percent: f32) -> Self {
        self.budget = Arc::new(TpsBudget::new(ttl, min_per_sec, percent));
        self
    }

    /// The backoff: the first retry waits up to `base`, doubling up to `max`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base = base;
        self.max = max.max(base);
        self
    }

    /// Whether this failed attempt may be retried (budget aside).
    pub fn may_retry(&self, req: &UnaryRequest, status: &Status) -> bool {
        self.retryable.contains(&status.code())
            && (NotSent::is(status)
                || req.context().extensions().get::<Idempotent>().is_some()
                || self.idempotent.contains(req.method().path))
    }
}

/// Retries unary calls by a [`RetryPolicy`]. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// A layer with `policy`.
    pub fn new(policy: RetryPolicy) -> RetryLayer {
        RetryLayer { policy }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = tower::retry::Retry<Attempts, S>;
    fn layer(&self, inner: S) -> Self::Service {
        tower::retry::Retry::new(
            Attempts {
                policy: self.policy.clone(),
                attempt: 1,
            },
            inner,
        )
    }
}

/// The per-call state of a retry: the policy and the attempt number.
#[derive(Debug, Clone)]
pub struct Attempts {
    policy: RetryPolicy,
    attempt: u32,
}

impl tower::retry::Policy<UnaryRequest, UnaryResponse, Status> for Attempts {
    type Future = Pin<Box<tokio::time::Sleep>>;

    fn retry(
        &mut self,
        req: &mut UnaryRequest,
        result: &mut Result<UnaryResponse, Status>,
    ) -> Option<Self::Future> {
        if self.attempt == 1 {
            // Every call (not attempt) earns the budget its share of retries.
            self.policy.budget.deposit();
        }
        let Err(status) = result else {
            return None;
        };
        if self.attempt >= self.policy.max_attempts || !self.policy.may_retry(req, status) {
            return None;
        }
        let factor = 1u32 << (self.attempt - 1).min(16);
        let cap = self.policy.base.saturating_mul(factor).min(self.policy.max);
        let wait = cap / 2 + jitter(cap / 2);
        let at = Instant::now() + wait;
        if req.context().deadline().is_some_and(|d| at >= d) {
            return None; // no time left for another attempt
        }
        if !self.policy.budget.withdraw() {
            tracing::debug!(method = req.method().path, "retry budget spent");
            return None;
        }
        self.attempt += 1;
        Some(Box::pin(tokio::time::sleep_until(at)))
    }

    fn clone_request(&mut self, req: &UnaryRequest) -> Option<UnaryRequest> {
        (self.attempt < self.policy.max_attempts).then(|| req.clone())
    }
}

fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let r = RandomState::new().hash_one(std::time::SystemTime::now());
    let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(r % nanos)
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker per method

/// Whether a status counts as a failure for a breaker: `UNAVAILABLE`, `DEADLINE_EXCEEDED`,
/// `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNKNOWN` (the server or the path to it is in trouble);
/// application errors (`NOT_FOUND`, `INVALID_ARGUMENT`, ...) are successes of the service.
pub fn is_breaker_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
    )
}

/// A circuit breaker per method (by gRPC path) over unary calls.
#[derive(Clone, Debug, Default)]
pub struct CircuitBreakerLayer {
    cfg: BreakerConfig,
    breakers: Arc<Mutex<HashMap<&'static str, Breaker>>>,
}

impl CircuitBreakerLayer {
    /// Breakers with `cfg`.
    pub fn new(cfg: BreakerConfig) -> CircuitBreakerLayer {
        CircuitBreakerLayer {
            cfg,
            breakers: Arc::default(),
        }
    }

    /// The state of `path`'s breaker (closed if it never saw a call).
    pub fn state(&self, path: &str) -> BreakerState {
        self.breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .map_or(BreakerState::Closed, |b| b.state(Instant::now()))
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;
    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`CircuitBreakerLayer`].
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    layer: CircuitBreakerLayer,
}

impl<S> tower::Service<UnaryRequest> for CircuitBreaker<S>
where
    S: tower::Service<UnaryRequest, Response = UnaryResponse, Error = Status>,
    S::Future: Send + 'static,
{
    type Response = UnaryResponse;
    type Error = Status;
    type Future = BoxFuture<'static, Result<UnaryResponse, Status>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: UnaryRequest) -> Self::Future {
        let path = req.method().path;
        let admitted = {
            let mut map = self
                .layer
                .breakers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            map.entry(path)
                .or_insert_with(|| Breaker::new(self.layer.cfg.clone()))
                .try_acquire(Instant::now())
        };
        if !admitted {
            return Box::pin(std::future::ready(Err(NotSent::mark(Status::unavailable(
                format!("circuit open for {path}"),
            )))));
        }
        let f = self.inner.call(req);
        let breakers = self.layer.breakers.clone();
        Box::pin(async move {
            let r = f.await;
            let ok = match &r {
                Ok(_) => true,
                Err(s) => !is_breaker_failure(s),
            };
            if let Some(b) = breakers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(path)
            {
                b.record(Instant::now(), ok);
            }
            r
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Server: concurrency and rate limits

/// A server layer that admits at most `max` calls (streams included) at once and refuses the
/// rest with `RESOURCE_EXHAUSTED` at once (no queue).
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    permits: Arc<tokio::sync::Semaphore>,
}

impl ConcurrencyLimitLayer {
    /// At most `max` calls at once.
    pub fn new(max: usize) -> ConcurrencyLimitLayer {
        ConcurrencyLimitLayer {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// The service of [`ConcurrencyLimitLayer`].
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    permits: Arc<tokio::sync::Semaphore>,
}

impl<S> tower::Service<IncomingCall> for ConcurrencyLimit<S>
where
    S: tower::Service<IncomingCall, Response = (), Error = Status>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Status;
    type Future = BoxFuture<'static, Result<(), Status>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, call: IncomingCall) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let f = self.inner.call(call);
                Box::pin(async move {
                    let r = f.await;
                    drop(permit);
                    r
                })
            }
            Err(_) => Box::pin(std::future::ready(Err(Status::resource_exhausted(
                "server concurrency limit reached",
            )))),
        }
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved. Pure; time passed in.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: rate.max(0.0),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: None,
        }
    }

    /// Takes a token at `now`, if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A server layer that admits `rate` calls per second (bursts up to `burst`) and refuses the
/// rest with `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Arc<Mutex<TokenBucket>>,
}

impl RateLimitLayer {
    /// `rate` calls per second, bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> RateLimitLayer {
        RateLimitLayer {
            bucket: Arc::new(Mutex::new(TokenBucket::new(rate, burst))),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            bucket: self.bucket.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    bucket: Arc<Mutex<TokenBucket>>,
}

impl<S> tower::Service<IncomingCall> for RateLimit<S>
where
    S: tower::Service<IncomingCall, Response = (), Error = Status>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Status;
    type Future = BoxFuture<'static, Result<(), Status>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, call: IncomingCall) -> Self::Future {
        let ok = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(Instant::now());
        if ok {
            Box::pin(self.inner.call(call))
        } else {
            Box::pin(std::future::ready(Err(Status::resource_exhausted(
                "server rate limit reached",
            ))))
        }
    }
}

#[cfg(all(test, feature = "inproc"))]
mod tests;
