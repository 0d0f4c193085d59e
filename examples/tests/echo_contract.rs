//! The echo contract (`shared/echo/README.md`) over every transport, for both IDLs: the four
//! modes, the `fail` hook (exact messages, the typed declared exception) and the `sleep_ms`
//! hook (deadlines, and handlers that stop early when the call is cancelled). Streams are
//! scripted with `rpc_core::testing::ScriptedCall`, which drives any transport's call handles;
//! `echo_handlers.rs` tests the same handlers in process only.

use std::time::Duration;

use examples::check::{self, Mode};
use examples::idl::{PingPongError, Proto, Thrift};
use examples::transport::Transport;
use examples::{proto, thrift, Echo, EchoIdl, EchoRequest, EchoResponse};
use rpc_core::testing::{ScriptedCall, TestServer};
use rpc_core::{CallOptions, Code, MethodError, Server, Status};

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..EchoRequest::default()
    }
}

fn failing(message: &str, fail: &str) -> EchoRequest {
    EchoRequest {
        fail: Some(fail.into()),
        ..request(message)
    }
}

/// A client of `I` over every transport (one server, hosting both flavours, per transport).
async fn clients<I: EchoIdl>() -> Vec<(Transport, I::Client)> {
    let mut out = Vec::new();
    for &transport in Transport::ALL {
        let client = transport.connect(examples::server()).await.unwrap();
        out.push((transport, I::client(client)));
    }
    out
}

async fn all_modes<I: EchoIdl>() {
    for &transport in Transport::ALL {
        let client = I::client(transport.connect(I::server()).await.unwrap());
        let outcomes = check::run_all::<I>(&client).await;
        assert_eq!(outcomes.len(), 4);
        for (mode, outcome) in outcomes {
            assert_eq!(outcome.result, Ok(()), "{transport} {} {mode}", I::NAME);
            let expected = match mode {
                Mode::Unary => 2,
                Mode::Client | Mode::Server => 4,
                Mode::Bidi => 6,
            };
            assert_eq!(outcome.messages, expected, "{transport} {} {mode}", I::NAME);
        }
    }
}

#[tokio::test]
async fn thrift_all_modes() {
    all_modes::<Thrift>().await;
}

#[tokio::test]
async fn proto_all_modes() {
    all_modes::<Proto>().await;
}

fn assert_app_error(s: &Status, text: &str) {
    assert_eq!((s.code(), s.message()), (Code::Unknown, text), "{s}");
}

#[tokio::test]
async fn pingpong_fail_is_an_application_error_with_the_exact_text() {
    for (tr, t) in clients::<Thrift>().await {
        match Thrift::ping_pong(&t, failing("x", "boom: no"), CallOptions::new()).await {
            Err(PingPongError::Status(s)) => assert_app_error(&s, "boom: no"),
            other => panic!("{tr}: {other:?}"),
        }
    }
    for (tr, p) in clients::<Proto>().await {
        match Proto::ping_pong(&p, failing("x", "boom: no"), CallOptions::new()).await {
            Err(PingPongError::Status(s)) => assert_app_error(&s, "boom: no"),
            other => panic!("{tr}: {other:?}"),
        }
        // protobuf declares no exceptions: the "declared:" text is an application error there.
        match Proto::ping_pong(&p, failing("x", "declared: nope"), CallOptions::new()).await {
            Err(PingPongError::Status(s)) => assert_app_error(&s, "declared: nope"),
            other => panic!("{tr}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn thrift_pingpong_declared_prefix_is_the_typed_echo_error() {
    for (tr, t) in clients::<Thrift>().await {
        let err = t
            .ping_pong(failing("x", "declared: nope").into())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            MethodError::Declared(thrift::TestServicePingPongException::Err(
                thrift::EchoError {
                    reason: "declared: nope".into()
                }
            )),
            "{tr}"
        );
    }
}

async fn bidi_fail_keeps_earlier_answers<I: EchoIdl>() {
    for (_, c) in clients::<I>().await {
        bidi_fail_keeps_earlier_answers_on::<I>(&c).await;
    }
}

async fn bidi_fail_keeps_earlier_answers_on<I: EchoIdl>(c: &I::Client) {
    let c = c.clone();
    let mut call = ScriptedCall::new(I::echo(&c, CallOptions::new()).await.unwrap());
    call.send(request("first").into()).await;
    let first: EchoResponse = call.expect_message().await.into();
    assert_eq!((first.message.as_str(), first.index), ("first", Some(0)));
    call.send(failing("second", "bad second").into()).await;
    let err = call.expect_status(Code::Unknown).await;
    assert_app_error(&err, "bad second");
    // The end is sticky.
    assert_app_error(&call.expect_status(Code::Unknown).await, "bad second");
}

#[tokio::test]
async fn bidi_fail_ends_the_stream_after_earlier_answers() {
    bidi_fail_keeps_earlier_answers::<Thrift>().await;
    bidi_fail_keeps_earlier_answers::<Proto>().await;
}

async fn streaming_fail<I: EchoIdl>() {
    for (_, c) in clients::<I>().await {
        streaming_fail_on::<I>(&c).await;
    }
}

async fn streaming_fail_on<I: EchoIdl>(c: &I::Client) {
    let c = c.clone();
    let mut call = I::echo_client(&c, CallOptions::new()).await.unwrap();
    call.send(request("ok").into()).await.unwrap();
    // The server may end the stream while we still send: either way the outcome is the error.
    let _ = call.send(failing("x", "client stream bad").into()).await;
    assert_app_error(
        &call.close_and_recv().await.unwrap_err(),
        "client stream bad",
    );

    let mut call = I::echo_server(&c, failing("x", "server stream bad"), CallOptions::new())
        .await
        .unwrap();
    assert_app_error(&call.recv().await.unwrap_err(), "server stream bad");
}

#[tokio::test]
async fn streaming_fail_ends_the_call_with_the_exact_text() {
    streaming_fail::<Thrift>().await;
    streaming_fail::<Proto>().await;
}

async fn sleep_past_deadline<I: EchoIdl>() {
    for (_, c) in clients::<I>().await {
        sleep_past_deadline_on::<I>(&c).await;
    }
}

async fn sleep_past_deadline_on<I: EchoIdl>(c: &I::Client) {
    let c = c.clone();
    let slow = EchoRequest {
        sleep_ms: Some(5_000),
        ..request("slow")
    };
    let short = || CallOptions::new().timeout(Duration::from_millis(50));
    match I::ping_pong(&c, slow.clone(), short()).await {
        Err(PingPongError::Status(s)) => assert_eq!(s.code(), Code::DeadlineExceeded, "{s}"),
        other => panic!("{} pingpong: {other:?}", I::NAME),
    }
    let mut call = I::echo_server(&c, slow, short()).await.unwrap();
    let err = call.recv().await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
}

#[tokio::test]
async fn sleep_ms_with_a_short_timeout_is_deadline_exceeded() {
    sleep_past_deadline::<Thrift>().await;
    sleep_past_deadline::<Proto>().await;
}

#[tokio::test]
async fn sleeping_handlers_stop_when_the_call_is_cancelled() {
    // A grace far longer than the test: the handler must end by itself, through
    // `ctx.cancelled()`, not by being dropped after the grace.
    let server = TestServer::from_server(
        Server::builder()
            .add_service(proto::TestServiceServer::new(Echo))
            .cancel_grace(Duration::from_secs(300))
            .build(),
    )
    .with_timeout(Duration::from_secs(10));
    let c = Proto::client(server.client());
    let slow = EchoRequest {
        sleep_ms: Some(300_000),
        ..request("slow")
    };
    let res = Proto::ping_pong(
        &c,
        slow.clone(),
        CallOptions::new().timeout(Duration::from_millis(50)),
    )
    .await;
    assert!(matches!(res, Err(PingPongError::Status(ref s)) if s.code() == Code::DeadlineExceeded));
    // The handler stopped sleeping when its deadline passed.
    server.expect_idle().await;

    // Dropping a streaming call cancels it just the same.
    let mut call = Proto::echo(&c, CallOptions::new()).await.unwrap();
    call.send(slow.into()).await.unwrap();
    while server.server().active_streams() == 0 {
        tokio::task::yield_now().await;
    }
    drop(call);
    // The handler stopped sleeping when the client cancelled.
    server.expect_idle().await;
}
