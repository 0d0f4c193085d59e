//! The echo service's handlers tested the way an application tests its own: the generated
//! client wired to the service in process by `rpc_core::testing`, each stream scripted from
//! the client side (no socket; `echo_contract.rs` runs the same contract over every
//! transport).

use std::time::Duration;

use examples::proto::{Request, Response, TestServiceClient, TestServiceServer};
use examples::{thrift, Echo};
use rpc_core::testing::{self, ScriptedCall, TestServer};
use rpc_core::{CallOptions, Code, MethodError, Server};

fn req(message: &str) -> Request {
    Request {
        message: message.into(),
        ..Request::default()
    }
}

fn res(message: &str, index: i32) -> Response {
    Response {
        message: message.into(),
        index: Some(index),
    }
}

fn client() -> TestServiceClient {
    TestServiceClient::new(testing::serve(TestServiceServer::new(Echo)))
}

#[tokio::test]
async fn echo_answers_each_message_in_order_until_the_client_closes() {
    let client = TestServiceClient::new(testing::serve(TestServiceServer::new(Echo)));
    let mut echo = ScriptedCall::new(client.echo().await.unwrap());
    echo.send(req("a")).await;
    echo.expect(res("a", 0)).await;
    echo.send(req("b")).await;
    echo.expect(res("b", 1)).await;
    echo.close_send();
    echo.expect_ok().await;
}

#[tokio::test]
async fn echo_fail_ends_the_stream_after_the_earlier_answers() {
    let mut echo = ScriptedCall::new(client().echo().await.unwrap());
    echo.send(req("first")).await;
    echo.expect(res("first", 0)).await;
    echo.send(Request {
        fail: Some("bad second".into()),
        ..req("second")
    })
    .await;
    let status = echo.expect_status(Code::Unknown).await;
    testing::assert_status(&status, Code::Unknown, "bad second");
}

#[tokio::test]
async fn echo_client_concatenates_after_close_send() {
    let mut call = ScriptedCall::new(client().echo_client().await.unwrap());
    call.send(req("a")).await;
    call.send(req("b")).await;
    call.send(req("c")).await;
    call.close_send();
    call.expect(res("abc", 3)).await;
    call.expect_ok().await;
}

#[tokio::test]
async fn echo_client_fails_before_the_client_closes() {
    // The handler ends on the failing request; the script sees that end without half-closing.
    let mut call = ScriptedCall::new(client().echo_client().await.unwrap());
    call.send(req("ok")).await;
    call.send(Request {
        fail: Some("client stream bad".into()),
        ..req("x")
    })
    .await;
    let status = call.expect_status(Code::Unknown).await;
    testing::assert_status(&status, Code::Unknown, "client stream bad");
}

#[tokio::test]
async fn echo_server_repeats_then_ends_ok() {
    let client = client();
    let mut call = ScriptedCall::new(client.echo_server(req("hi")).await.unwrap());
    for index in 0..examples::DEFAULT_REPEAT {
        call.expect(res("hi", index)).await;
    }
    call.expect_ok().await;

    let two = Request {
        repeat: Some(2),
        ..req("x")
    };
    let mut call = ScriptedCall::new(client.echo_server(two).await.unwrap());
    call.expect(res("x", 0)).await;
    call.expect(res("x", 1)).await;
    call.expect_ok().await;
}

#[tokio::test]
async fn ping_pong_fail_and_the_declared_thrift_exception() {
    let err = client()
        .ping_pong(Request {
            fail: Some("boom: no".into()),
            ..req("x")
        })
        .await
        .unwrap_err();
    testing::assert_status(&err, Code::Unknown, "boom: no");

    let thrift =
        thrift::TestServiceClient::new(testing::serve(thrift::TestServiceServer::new(Echo)));
    let err = thrift
        .ping_pong(thrift::Request {
            message: "x".into(),
            fail: Some("declared: nope".into()),
            ..thrift::Request::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        MethodError::Declared(thrift::TestServicePingPongException::Err(
            thrift::EchoError {
                reason: "declared: nope".into()
            }
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn a_sleeping_handler_stops_at_the_deadline_and_at_a_cancel() {
    // A cancel grace far beyond the step timeout: the handler must end by itself, through
    // `ctx.cancelled()`, not by being dropped after the grace.
    let server = TestServer::from_server(
        Server::builder()
            .add_service(TestServiceServer::new(Echo))
            .cancel_grace(Duration::from_secs(300))
            .build(),
    );
    let client = TestServiceClient::new(server.client());
    let slow = Request {
        sleep_ms: Some(300_000),
        ..req("slow")
    };
    let short = CallOptions::new().timeout(Duration::from_millis(50));
    let err = client
        .ping_pong_with(slow.clone(), short)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    server.expect_idle().await;

    let mut echo = ScriptedCall::new(client.echo().await.unwrap());
    echo.send(slow).await;
    echo.cancel();
    echo.expect_status(Code::Cancelled).await;
    server.expect_idle().await;
}
