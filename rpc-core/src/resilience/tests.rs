//! Behaviour of the resilience layers over in-process servers, with tokio's paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::testsvc::{named, Named, CALL};
use crate::{CallOptions, Client, ClientBuilder, ProstCodec, Server};

async fn call(c: &Client, req: &str) -> Result<String, Status> {
    c.unary::<ProstCodec, String, String>(CALL, req.to_owned(), CallOptions::new())
        .await
        .map(|r| r.into_inner())
}

fn server() -> (Named, ClientBuilder) {
    let (svc, t) = named("s");
    (svc, Client::builder(t))
}

fn calls(svc: &Named) -> usize {
    svc.calls.load(Ordering::SeqCst)
}

fn policy() -> RetryPolicy {
    RetryPolicy::default().budget(Duration::from_secs(10), 100, 0.2)
}

#[tokio::test(start_paused = true)]
async fn a_timeout_ends_the_call_with_deadline_exceeded_at_the_timeout() {
    let (_svc, b) = server();
    let c = b
        .timeout(Duration::from_millis(100))
        .method_timeout(CALL.path, Duration::from_millis(250))
        .build();
    let t0 = Instant::now();
    let e = call(&c, "sleep:10000").await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(300),
        "the per-method timeout wins: {took:?}"
    );
    let (_svc, b) = server();
    let c = b.timeout(Duration::from_millis(100)).build();
    let t0 = Instant::now();
    assert_eq!(
        call(&c, "sleep:10000").await.unwrap_err().code(),
        Code::DeadlineExceeded
    );
    assert!(t0.elapsed() < Duration::from_millis(150));
    assert_eq!(
        call(&c, "sleep:50").await.unwrap(),
        "s",
        "in time: answered"
    );
}

#[tokio::test(start_paused = true)]
async fn a_method_timeout_bounds_a_whole_stream_not_only_its_open() {
    let (_svc, b) = server();
    let c = b
        .method_timeout(crate::testsvc::BIDI.path, Duration::from_millis(100))
        .build();
    let t0 = Instant::now();
    let mut s = c
        .bidi::<ProstCodec, String, String>(crate::testsvc::BIDI, CallOptions::new())
        .await
        .unwrap();
    s.send("a".to_owned()).await.unwrap();
    assert_eq!(s.recv().await.unwrap().as_deref(), Some("s:a"));
    // The stream stays open and idle: the timeout ends it.
    let e = s.recv().await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(150),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn unavailable_after_the_request_was_sent_is_retried_only_for_idempotent_methods() {
    // Not idempotent: the server may have processed it; returned as is.
    let (svc, b) = server();
    let c = b.unary_layer(RetryLayer::new(policy())).build();
    let e = call(&c, "fail:14").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(!NotSent::is(&e));
    assert_eq!(calls(&svc), 1, "not retried");

    // Idempotent by the policy's list: retried up to max_attempts.
    let (svc, b) = server();
    let c = b
        .unary_layer(RetryLayer::new(
            policy().max_attempts(3).idempotent([CALL.path]),
        ))
        .build();
    assert_eq!(
        call(&c, "fail:14").await.unwrap_err().code(),
        Code::Unavailable
    );
    assert_eq!(calls(&svc), 3);

    // Idempotent by the per-call extension (set by an outer layer).
    let (svc, b) = server();
    let c = b
        .unary_layer(tower::util::MapRequestLayer::new(|mut r: UnaryRequest| {
            r.context_mut().extensions_mut().insert(Idempotent);
            r
        }))
        .unary_layer(RetryLayer::new(policy().max_attempts(2)))
        .build();
    assert!(call(&c, "fail:14").await.is_err());
    assert_eq!(calls(&svc), 2);

    // A status that is not retryable is never retried, idempotent or not.
    let (svc, b) = server();
    let c = b
        .unary_layer(RetryLayer::new(policy().idempotent([CALL.path])))
        .build();
    assert_eq!(call(&c, "fail:5").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(calls(&svc), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_never_sent_is_retried_for_any_method_and_succeeds() {
    let (svc, b) = server();
    let refused = Arc::new(AtomicUsize::new(0));
    let r = refused.clone();
    let c = b
        .unary_layer(RetryLayer::new(policy().max_attempts(3)))
        .layer(MarkUnsentLayer)
        // Refuses the first two opens as a refused connect would: nothing reaches the server.
        .interceptor(move |_| {
            if r.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(Status::unavailable("connection refused"))
            } else {
                Ok(())
            }
        })
        .build();
    assert_eq!(call(&c, "x").await.unwrap(), "s");
    assert_eq!(refused.load(Ordering::SeqCst), 3);
    assert_eq!(calls(&svc), 1, "the request ran once");
}

#[tokio::test(start_paused = true)]
async fn retries_stop_when_the_budget_is_spent_or_the_deadline_is_near() {
    let (svc, b) = server();
    let c = b
        .unary_layer(RetryLayer::new(
            RetryPolicy::default()
                .idempotent([CALL.path])
                .budget(Duration::from_secs(10), 0, 0.0),
        ))
        .build();
    assert!(call(&c, "fail:14").await.is_err());
    assert_eq!(calls(&svc), 1, "an empty budget allows no retry");

    let (svc, b) = server();
    let c = b
        .timeout(Duration::from_millis(5))
        .unary_layer(RetryLayer::new(
            policy()
                .idempotent([CALL.path])
                .backoff(Duration::from_millis(100), Duration::from_millis(100)),
        ))
        .build();
    assert!(call(&c, "fail:14").await.is_err());
    assert_eq!(
        calls(&svc),
        1,
        "no retry whose backoff ends after the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_on_failures_fails_fast_and_closes_after_a_good_probe() {
    let (svc, b) = server();
    let layer = CircuitBreakerLayer::new(BreakerConfig {
        window: Duration::from_secs(10),
        min_calls: 4,
        failure_ratio: 0.5,
        open_for: Duration::from_secs(1),
        max_open: Duration::from_secs(8),
        probes: 1,
    });
    let c = b.unary_layer(layer.clone()).build();
    for _ in 0..4 {
        assert!(call(&c, "fail:14").await.is_err());
    }
    assert!(matches!(layer.state(CALL.path), BreakerState::Open { .. }));
    let e = call(&c, "x").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(NotSent::is(&e), "refused by the breaker: never sent");
    assert_eq!(calls(&svc), 4, "fails fast without reaching the server");

    // Application errors do not count as failures.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(layer.state(CALL.path), BreakerState::HalfOpen);
    assert_eq!(call(&c, "x").await.unwrap(), "s", "the probe passes");
    assert_eq!(layer.state(CALL.path), BreakerState::Closed);
    for _ in 0..10 {
        assert_eq!(call(&c, "fail:5").await.unwrap_err().code(), Code::NotFound);
    }
    assert_eq!(layer.state(CALL.path), BreakerState::Closed);
}

fn limited(add: impl FnOnce(crate::ServerBuilder) -> crate::ServerBuilder) -> (Named, Client) {
    let svc = Named {
        name: "s".into(),
        calls: Arc::default(),
    };
    let server = add(Server::builder()).add_service(svc.clone()).build();
    (
        svc,
        Client::new(crate::inproc::InProcTransport::new(server)),
    )
}

#[tokio::test(start_paused = true)]
async fn the_server_concurrency_limit_sheds_calls_beyond_it() {
    let (svc, c) = limited(|b| b.layer(ConcurrencyLimitLayer::new(2)));
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { call(&c, "sleep:100").await })
        })
        .collect();
    // Both reach the handler (their sleeps hold them there).
    tokio::time::timeout(Duration::from_secs(5), async {
        while calls(&svc) < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("two calls in the handler");
    let e = call(&c, "x").await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap(), "s");
    }
    assert_eq!(call(&c, "x").await.unwrap(), "s", "permits come back");
}

#[tokio::test(start_paused = true)]
async fn the_server_rate_limit_admits_the_burst_then_the_rate() {
    let (_svc, c) = limited(|b| b.layer(RateLimitLayer::new(10.0, 2)));
    assert!(call(&c, "x").await.is_ok());
    assert!(call(&c, "x").await.is_ok());
    assert_eq!(
        call(&c, "x").await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(call(&c, "x").await.is_ok(), "one token per 100 ms");
    assert!(call(&c, "x").await.is_err());
}

#[test]
fn a_token_bucket_refills_at_its_rate_up_to_its_burst() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(2.0, 3);
    assert!((0..3).all(|_| b.try_take(t0)));
    assert!(!b.try_take(t0));
    assert!(b.try_take(t0 + Duration::from_millis(500)));
    assert!(!b.try_take(t0 + Duration::from_millis(500)));
    let later = t0 + Duration::from_secs(60);
    assert_eq!(
        (0..10).filter(|_| b.try_take(later)).count(),
        3,
        "capped at the burst"
    );
}
