//! `grpc.health.v1.Health` over real gRPC connections, with our own generated client: Check,
//! Watch following status changes, and NOT_SERVING at graceful shutdown ending the watches.

use std::time::Duration;

use rpc_core::serve::Listener;
use rpc_core::{Address, Client, Code};
use rpc_grpc_services::health::proto::health_check_response::ServingStatus as Wire;
use rpc_grpc_services::health::{HealthCheckRequest, HealthClient, HealthReporter, ServingStatus};
use rpc_transport_grpc::{GrpcClient, GrpcProtocol};

/// The bound on every wait: a hang fails the test instead of stalling it.
const WAIT: Duration = Duration::from_secs(5);

fn req(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

async fn next(
    call: &mut rpc_core::ServerStreamingClient<rpc_grpc_services::health::HealthCheckResponse>,
) -> Option<Wire> {
    tokio::time::timeout(WAIT, call.recv())
        .await
        .expect("a message or the end in time")
        .expect("no error")
        .map(|r| Wire::try_from(r.status).expect("a known status"))
}

#[tokio::test]
async fn check_watch_and_shutdown_over_grpc() {
    let health = HealthReporter::new();
    let server = rpc_core::Server::builder()
        .add_service(health.service())
        .build();
    health.set_server_serving(&server);
    let running = Listener::new(server)
        .protocol(GrpcProtocol::default())
        .bind(Address::tcp(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))))
        .await
        .unwrap()
        .start();
    health.shutdown_on_drain(&running.shutdown_signal());
    let addr = running.local_addrs().remove(0);
    let client = HealthClient::new(Client::new(GrpcClient::new(addr)));

    // Check: the server, a hosted service (the health service itself), an unknown one.
    let r = client.check(req("")).await.unwrap();
    assert_eq!(r.status, Wire::Serving as i32);
    let r = client.check(req("grpc.health.v1.Health")).await.unwrap();
    assert_eq!(r.status, Wire::Serving as i32);
    let err = client.check(req("no.Such")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");

    // Watch a known service: its current status, then each change.
    let mut known = client.watch(req("")).await.unwrap();
    assert_eq!(next(&mut known).await, Some(Wire::Serving));
    health.set_status("", ServingStatus::NotServing);
    assert_eq!(next(&mut known).await, Some(Wire::NotServing));
    health.set_status("", ServingStatus::Serving);
    assert_eq!(next(&mut known).await, Some(Wire::Serving));

    // Watch an unknown service: SERVICE_UNKNOWN without ending, then its status once set.
    let mut later = client.watch(req("app.Later")).await.unwrap();
    assert_eq!(next(&mut later).await, Some(Wire::ServiceUnknown));
    health.set_status("app.Later", ServingStatus::Serving);
    assert_eq!(next(&mut later).await, Some(Wire::Serving));
    assert_eq!(
        client
            .list(Default::default())
            .await
            .unwrap()
            .statuses
            .len(),
        3,
        "\"\", the health service, app.Later"
    );

    // Graceful shutdown: every watch hears NOT_SERVING and ends with OK, promptly (not after
    // the grace period).
    let start = std::time::Instant::now();
    let stopping = tokio::spawn(running.shutdown(Duration::from_secs(10)));
    assert_eq!(next(&mut known).await, Some(Wire::NotServing));
    assert_eq!(next(&mut known).await, None, "ends with OK");
    assert_eq!(next(&mut later).await, Some(Wire::NotServing));
    assert_eq!(next(&mut later).await, None, "ends with OK");
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the drain is not held by the watches")
        .unwrap();
    assert!(start.elapsed() < WAIT, "{:?}", start.elapsed());
    assert_eq!(health.status("app.Later"), Some(ServingStatus::NotServing));
}

/// A watcher that goes away is forgotten: its cancel ends the server's handler (the unknown
/// name it watched is dropped from the table, so a new watch sees SERVICE_UNKNOWN afresh).
#[tokio::test]
async fn a_cancelled_watch_ends_its_handler() {
    let health = HealthReporter::new();
    let server = rpc_core::Server::builder()
        .add_service(health.service())
        .build();
    let running = Listener::new(server.clone())
        .protocol(GrpcProtocol::default())
        .bind(Address::tcp(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))))
        .await
        .unwrap()
        .start();
    let addr = running.local_addrs().remove(0);
    let client = HealthClient::new(Client::new(GrpcClient::new(addr)));
    let mut w = client.watch(req("gone.Soon")).await.unwrap();
    assert_eq!(next(&mut w).await, Some(Wire::ServiceUnknown));
    assert_eq!(server.active_streams(), 1);
    drop(w);
    tokio::time::timeout(WAIT, server.wait_idle())
        .await
        .expect("the handler ends when the client cancels");
    running.shutdown(Duration::from_secs(1)).await;
}
