//! The test kit (`rpc_core::testing`) on the hand-written test service: every mode scripted
//! to its end, metadata and status assertions, and the failure messages a broken handler
//! produces (method, step, line of the test, what came instead), including the bounded
//! waits, on the paused clock.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use rpc_core::testing::{self, ScriptedCall, TestServer};
use rpc_core::{CallOptions, Code, ProstCodec, Server, Status};
use support::*;
use tokio::sync::mpsc;

/// A test server hosting the support service, and the handler events it reports.
fn test_server() -> (TestServer, mpsc::UnboundedReceiver<Event>) {
    let (events, rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .add_service(TestService { events })
        .build();
    (TestServer::from_server(server), rx)
}

async fn chat(server: &TestServer) -> ScriptedCall<Msg, Msg> {
    let call = server
        .client()
        .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new())
        .await
        .unwrap();
    ScriptedCall::new(call)
}

/// The panic message of `fut`, which must panic.
async fn panic_of(fut: impl Future<Output = ()>) -> String {
    let payload = AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .expect_err("the step should have failed the test");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test]
async fn serve_is_one_line_from_a_service_to_a_client() {
    let (events, _rx) = mpsc::unbounded_channel();
    let client = testing::serve(TestService { events });
    let res = client
        .unary::<ProstCodec, Msg, Msg>(ECHO, msg("hi", 1), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(res.into_inner(), msg("hi", 1));
}

#[tokio::test]
async fn a_bidi_script_runs_to_ok_and_to_an_error() {
    let (server, _rx) = test_server();
    let mut call = chat(&server).await;
    call.send(msg("a", 1)).await;
    call.expect(msg("a", 1)).await;
    call.send(msg("b", 2)).await;
    assert_eq!(call.expect_message().await, msg("b", 2));
    assert!(call.expect_header().await.is_empty());
    call.close_send();
    call.close_send(); // idempotent
    call.expect_ok().await;
    // The end is sticky.
    call.expect_ok().await;
    assert!(call.trailer().is_empty());

    let mut call = chat(&server).await;
    call.send(msg("fail", 0)).await;
    let status = call.expect_status(Code::FailedPrecondition).await;
    testing::assert_status(&status, Code::FailedPrecondition, "bidi failed");
    call.expect_status(Code::FailedPrecondition).await;
    server.expect_idle().await;
}

#[tokio::test]
async fn a_client_streaming_script_sees_the_response_then_the_end() {
    let (server, _rx) = test_server();
    let call = server
        .client()
        .client_streaming::<ProstCodec, Msg, Msg>(SUM, CallOptions::new())
        .await
        .unwrap();
    let mut call = ScriptedCall::new(call);
    call.send(msg("a", 1)).await;
    call.send(msg("b", 2)).await;
    call.close_send();
    call.expect(msg("ab", 3)).await;
    call.expect_ok().await;
    server.expect_idle().await;
}

#[tokio::test]
async fn a_server_streaming_script_needs_no_requests() {
    let (server, _rx) = test_server();
    let client = server.client();
    let call = client
        .server_streaming::<ProstCodec, Msg, Msg>(COUNT, msg("n", 2), CallOptions::new())
        .await
        .unwrap();
    let mut call: ScriptedCall<Infallible, Msg> = ScriptedCall::new(call);
    call.close_send(); // nothing to do: it half-closed when it opened
    call.expect(msg("n", 0)).await;
    call.expect(msg("n", 1)).await;
    call.expect_ok().await;

    let call = client
        .server_streaming::<ProstCodec, Msg, Msg>(COUNT, msg("fail-after", 1), CallOptions::new())
        .await
        .unwrap();
    let mut call = ScriptedCall::new(call);
    call.expect(msg("fail-after", 0)).await;
    let status = call.expect_status(Code::Aborted).await;
    assert_eq!(status.message(), "after messages");
}

#[tokio::test]
async fn cancel_reaches_the_handler_and_expect_idle_waits_for_it() {
    let (server, mut rx) = test_server();
    let mut call = chat(&server).await;
    call.send(msg("wait-cancel", 0)).await;
    call.cancel();
    call.expect_status(Code::Cancelled).await;
    server.expect_idle().await;
    let mut ended = None;
    while let Ok(event) = rx.try_recv() {
        if let Event::Ended(s) = event {
            ended = Some(s);
        }
    }
    let ended = ended.expect("the handler reported how its stream ended");
    assert_eq!(ended.code(), Code::Cancelled, "{ended:?}");
    drop(call);
    within(server.transport().wait_no_live_streams()).await;
}

#[tokio::test]
async fn metadata_assertions_read_header_trailer_and_request_metadata() {
    let (server, _rx) = test_server();
    let res = server
        .client()
        .unary::<ProstCodec, Msg, Msg>(
            ECHO,
            msg("hi", 0),
            CallOptions::new().metadata("x-echo", "v1"),
        )
        .await
        .unwrap();
    testing::assert_metadata(res.header(), "x-echo", "v1");
    testing::assert_metadata(res.header(), "X-Echo", "v1"); // keys ignore ASCII case
    testing::assert_no_metadata(res.header(), "x-trailer");
    testing::assert_metadata(res.trailer(), "x-trailer", "t");

    let call = server
        .client_builder()
        .metadata("x-from-builder", "yes")
        .build()
        .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new().metadata("x-call", "1"))
        .await
        .unwrap();
    let call = ScriptedCall::new(call);
    testing::assert_metadata(call.context().metadata(), "x-call", "1");
    testing::assert_metadata(call.context().metadata(), "x-from-builder", "yes");
}

#[tokio::test]
async fn assertion_failures_show_the_whole_value() {
    let status = Status::not_found("no such user");
    let text =
        panic_of(async { testing::assert_status(&status, Code::NotFound, "no such thing") }).await;
    assert!(
        text.contains("expected status NOT_FOUND: \"no such thing\""),
        "{text}"
    );
    assert!(text.contains("no such user"), "{text}");

    let md: rpc_core::Metadata = [("a", "1"), ("b", "2")].into_iter().collect();
    let text = panic_of(async { testing::assert_metadata(&md, "a", "2") }).await;
    assert!(text.contains("expected metadata a: \"2\""), "{text}");
    assert!(text.contains("\"b\""), "{text}");
    let text = panic_of(async { testing::assert_no_metadata(&md, "b") }).await;
    assert!(text.contains("expected no metadata b"), "{text}");
}

#[tokio::test]
async fn a_failed_step_names_the_method_the_step_and_the_line() {
    let (server, _rx) = test_server();
    let mut call = chat(&server).await;
    call.send(msg("fail", 0)).await;
    let line = line!() + 1;
    let text = panic_of(call.expect(msg("never", 0))).await;
    let at = format!("{}:{line}:", file!());
    assert!(
        text.starts_with("/test.Test/Chat, step 2 (expect) at "),
        "{text}"
    );
    assert!(text.contains(&at), "{text} (at {at})");
    assert!(
        text.contains("expected message Msg { text: \"never\", n: 0 }, got the end FAILED_PRECONDITION: bidi failed"),
        "{text}"
    );

    let mut call = chat(&server).await;
    call.send(msg("a", 0)).await;
    let text = panic_of(call.expect_ok()).await;
    assert!(
        text.contains("expected the end OK, got message Msg { text: \"a\", n: 0 }"),
        "{text}"
    );
    let call = chat(&server).await;
    let text = panic_of(async { drop(call.trailer()) }).await;
    assert!(text.contains("the stream has not ended"), "{text}");
}

#[tokio::test]
async fn a_send_to_an_ended_stream_fails_the_step_unless_tried() {
    let (server, _rx) = test_server();
    let mut call = chat(&server).await;
    call.send(msg("fail", 0)).await;
    call.expect_status(Code::FailedPrecondition).await;
    assert!(call.try_send(msg("late", 0)).await.is_err());
    let text = panic_of(call.send(msg("late", 0))).await;
    assert!(text.contains("step 4 (send)"), "{text}");
    assert!(text.contains("the stream refused the message"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_never_answers_fails_the_step_after_the_timeout() {
    let (server, _rx) = test_server();
    let mut call = chat(&server).await.with_timeout(Duration::from_secs(3));
    call.send(msg("wait-cancel", 0)).await;
    let text = panic_of(async {
        call.expect_message().await;
    })
    .await;
    assert!(text.contains("step 2 (expect_message)"), "{text}");
    assert!(
        text.contains("nothing within 3s: the handler neither sent a message nor ended"),
        "{text}"
    );
    // The handler still waits for the cancel that never came: expect_idle says so.
    let short = server.clone().with_timeout(Duration::from_secs(2));
    let text = panic_of(short.expect_idle()).await;
    assert!(
        text.contains("1 handler(s) still running after 2s"),
        "{text}"
    );
    drop(call);
    server.expect_idle().await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_stops_reading_fails_the_send_after_the_timeout() {
    let (server, _rx) = test_server();
    let mut call = chat(&server).await;
    call.send(msg("stop-reading", 0)).await;
    let big = msg(&"x".repeat(40 * 1024), 0);
    let text = panic_of(async {
        for _ in 0..8 {
            call.send(big.clone()).await;
        }
    })
    .await;
    assert!(text.contains("(send)"), "{text}");
    assert!(
        text.contains("no send capacity within 5s (is the handler reading?)"),
        "{text}"
    );
}
