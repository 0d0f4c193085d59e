//! The standard gRPC services `echo-server` serves on its gRPC port, checked with our own
//! generated clients against the real binary: health checking (Check of the server and of
//! `echo.TestService`, Watch, NOT_SERVING when SIGTERM starts the graceful shutdown).

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
