//! The standard gRPC services `echo-server` serves on its gRPC port, checked with our own
//! generated clients against the real binary: health checking (Check of the server and of
//! `echo.TestService`, Watch, NOT_SERVING when SIGTERM starts the graceful shutdown) and server
//! reflection v1 and v1alpha.

mod support;

use std::process::Command;
use std::time::Duration;

use rpc_core::{Client, Code};
use rpc_grpc_services::health::proto::health_check_response::ServingStatus as Wire;
use rpc_grpc_services::health::{HealthCheckRequest, HealthClient};
use rpc_transport_grpc::GrpcClient;

/// The bound on every wait.
const WAIT: Duration = Duration::from_secs(10);

fn req(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn echo_server_serves_health_and_goes_not_serving_on_sigterm() {
    let (mut child, urls, _lines) =
        support::spawn_echo_server(&["--listen", "tcp://127.0.0.1:0"], 1);
    let addr: rpc_core::Address = urls[0].parse().unwrap();
    let health = HealthClient::new(Client::new(GrpcClient::new(addr)));
    for service in ["", "echo.TestService", "grpc.health.v1.Health"] {
        let r = health.check(req(service)).await.unwrap();
        assert_eq!(r.status, Wire::Serving as i32, "{service:?}");
    }
    let err = health.check(req("echo.Nope")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");

    let mut watch = health.watch(req("echo.TestService")).await.unwrap();
    let first = tokio::time::timeout(WAIT, watch.recv()).await.unwrap();
    assert_eq!(first.unwrap().unwrap().status, Wire::Serving as i32);

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let next = tokio::time::timeout(WAIT, watch.recv())
        .await
        .expect("NOT_SERVING in time");
    assert_eq!(next.unwrap().unwrap().status, Wire::NotServing as i32);
    let end = tokio::time::timeout(WAIT, watch.recv())
        .await
        .expect("the watch ends in time");
    assert!(matches!(end, Ok(None)), "ends with OK: {end:?}");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "{s}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "echo-server did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Server reflection of `echo-server`, v1 and v1alpha, with our generated clients: the
/// services listed, `echo.TestService` resolved to `echo.proto` with its four methods, an
/// unknown symbol answered with NOT_FOUND on the same stream.
#[tokio::test]
async fn echo_server_serves_reflection_v1_and_v1alpha() {
    use prost::Message;
    use rpc_grpc_services::reflection::{v1, v1alpha};
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;

    let (mut child, urls, _lines) =
        support::spawn_echo_server(&["--listen", "tcp://127.0.0.1:0"], 1);
    let addr: rpc_core::Address = urls[0].parse().unwrap();
    let client = Client::new(GrpcClient::new(addr));
    let ask = |q: MessageRequest| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(q),
    };
    let questions = [
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "echo.TestService".into(),
        )),
        ask(MessageRequest::FileContainingSymbol("echo.Nope".into())),
    ];

    // v1 with its own client; v1alpha with its client (same wire, other names).
    let mut answers: Vec<Vec<v1::ServerReflectionResponse>> = Vec::new();
    let mut call = v1::ServerReflectionClient::new(client.clone())
        .server_reflection_info()
        .await
        .unwrap();
    let mut got = Vec::new();
    for q in &questions {
        call.send(q.clone()).await.unwrap();
        let a = tokio::time::timeout(WAIT, call.recv()).await.unwrap();
        got.push(a.unwrap().expect("an answer"));
    }
    call.close_send().unwrap();
    assert!(tokio::time::timeout(WAIT, call.recv())
        .await
        .unwrap()
        .unwrap()
        .is_none());
    answers.push(got);
    let mut call = v1alpha::ServerReflectionClient::new(client)
        .server_reflection_info()
        .await
        .unwrap();
    let mut got = Vec::new();
    for q in &questions {
        let q = v1alpha::ServerReflectionRequest::decode(q.encode_to_vec().as_slice()).unwrap();
        call.send(q).await.unwrap();
        let a = tokio::time::timeout(WAIT, call.recv()).await.unwrap();
        let a = a.unwrap().expect("an answer").encode_to_vec();
        got.push(v1::ServerReflectionResponse::decode(a.as_slice()).unwrap());
    }
    answers.push(got);

    for (version, got) in ["v1", "v1alpha"].iter().zip(answers) {
        let Some(MessageResponse::ListServicesResponse(l)) = &got[0].message_response else {
            panic!("{version}: a list: {:?}", got[0]);
        };
        let names: Vec<&str> = l.service.iter().map(|s| s.name.as_str()).collect();
        for want in [
            "echo.TestService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(names.contains(&want), "{version}: {names:?}");
        }
        let Some(MessageResponse::FileDescriptorResponse(f)) = &got[1].message_response else {
            panic!("{version}: files: {:?}", got[1]);
        };
        let file = prost_types_file(&f.file_descriptor_proto[0]).expect("a FileDescriptorProto");
        assert_eq!(file.0, "echo.proto", "{version}");
        assert_eq!(file.1, ["PingPong", "Echo", "EchoClient", "EchoServer"]);
        assert_eq!(
            got[1].original_request.as_ref(),
            Some(&questions[1]),
            "{version}: the question is echoed"
        );
        let Some(MessageResponse::ErrorResponse(e)) = &got[2].message_response else {
            panic!("{version}: an error: {:?}", got[2]);
        };
        assert_eq!(e.error_code, Code::NotFound as i32, "{version}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The file name and the methods of its first service, decoded by hand from a serialized
/// `FileDescriptorProto` (name = 1, service = 6; service: method = 2; method: name = 1), so
/// the test needs no descriptor library.
fn prost_types_file(bytes: &[u8]) -> Option<(String, Vec<String>)> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Method {
        #[prost(string, tag = "1")]
        name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Service {
        #[prost(message, repeated, tag = "2")]
        method: Vec<Method>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct File {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, repeated, tag = "6")]
        service: Vec<Service>,
    }
    let f = <File as prost::Message>::decode(bytes).ok()?;
    let methods = f
        .service
        .first()?
        .method
        .iter()
        .map(|m| m.name.clone())
        .collect();
    Some((f.name, methods))
}
