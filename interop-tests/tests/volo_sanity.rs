//! The volo side alone: a volo-thrift client against the volo-thrift echo server, over
//! TTHeader framed and unframed. If this fails, the interop tests in `volo.rs` prove nothing.

use std::time::Duration;

use interop_tests::{
    echo::{EchoError, Request, Response, TestServicePingPongException},
    proxy::{Direction, RecordingProxy},
    volo_peer::{self, Framing, VoloServer},
    wire::split_frames,
};
use volo_thrift::{ApplicationExceptionKind, ClientError, MaybeException};

/// Bound on every call and server start; a hang is a failure, not a wait.
const STEP: Duration = Duration::from_secs(10);

fn request(message: &str, fail: Option<&str>) -> Request {
    Request {
        message: message.to_owned().into(),
        fail: fail.map(|f| f.to_owned().into()),
        ..Default::default()
    }
}

async fn check_contract(framing: Framing) {
    let server = tokio::time::timeout(STEP, VoloServer::start(framing))
        .await
        .expect("server start timed out")
        .expect("server start");
    let proxy = RecordingProxy::start(server.local_addr())
        .await
        .expect("proxy start");
    let client = volo_peer::client(proxy.local_addr(), framing);

    let ok = tokio::time::timeout(STEP, client.ping_pong(request("hello", None)))
        .await
        .expect("ok call timed out")
        .expect("ok call");
    match ok {
        MaybeException::Ok(resp) => assert_eq!(
            resp,
            Response {
                message: "hello".into(),
                index: Some(0)
            }
        ),
        MaybeException::Exception(e) => panic!("unexpected exception {e:?}"),
    }

    let declared = tokio::time::timeout(STEP, client.ping_pong(request("x", Some("declared:no"))))
        .await
        .expect("declared call timed out")
        .expect("declared call");
    match declared {
        MaybeException::Exception(TestServicePingPongException::Err(e)) => assert_eq!(
            e,
            EchoError {
                reason: "declared:no".into()
            }
        ),
        MaybeException::Ok(resp) => panic!("expected EchoError, got {resp:?}"),
    }

    let app = tokio::time::timeout(STEP, client.ping_pong(request("x", Some("boom"))))
        .await
        .expect("app error call timed out");
    match app {
        Err(ClientError::Application(e)) => {
            assert_eq!(e.kind(), ApplicationExceptionKind::INTERNAL_ERROR);
            assert_eq!(e.message(), "boom");
        }
        Err(other) => panic!("expected an application exception, got {other:?}"),
        Ok(MaybeException::Ok(resp)) => panic!("expected an application exception, got {resp:?}"),
        Ok(MaybeException::Exception(e)) => {
            panic!("expected an application exception, got {e:?}")
        }
    }

    // The three sequential calls shared one pooled connection, and the framing on the wire is
    // the one configured, in both directions (a volo server answers in the request's form).
    assert_eq!(proxy.connections(), 1);
    let record = proxy.record(0).expect("one connection");
    for dir in [Direction::ToServer, Direction::ToClient] {
        let (frames, rest) = split_frames(record.bytes(dir)).expect("TTHeader frames");
        assert!(rest.is_empty(), "{dir:?}: trailing bytes {rest:02x?}");
        assert_eq!(frames.len(), 3, "{dir:?}: {frames:#?}");
        for (i, frame) in frames.iter().enumerate() {
            let msg = frame.message().expect("thrift message");
            assert_eq!(
                msg.frame_len.is_some(),
                framing == Framing::Framed,
                "{frame:#?}"
            );
            // volo-thrift numbers its calls from 0, in the TTHeader and in the message.
            assert_eq!(frame.seq_id, i as u32);
            assert_eq!(msg.seq_id, i as i32);
            assert_eq!(msg.name, b"PingPong");
            let expected_type = match (dir, i) {
                (Direction::ToServer, _) => 1,
                (Direction::ToClient, 2) => 3,
                (Direction::ToClient, _) => 2,
            };
            assert_eq!(msg.msg_type, expected_type, "{frame:#?}");
        }
    }
}

#[tokio::test]
async fn volo_client_to_volo_server_framed() {
    check_contract(Framing::Framed).await;
}

#[tokio::test]
async fn volo_client_to_volo_server_unframed() {
    check_contract(Framing::Unframed).await;
}
