//! One message type for both stacks: tonic 0.14's generated client, built (`extern_path`) on
//! the prost messages rpc-codegen generated for `examples/idl/echo.proto`, calls our generated
//! server over gRPC. A team migrating service by service passes the same `Request` value to a
//! tonic stub and to ours; this compiles only because both sit on one prost (0.14).

use std::time::Duration;

use examples::proto::{Request, Response};
use rpc_core::serve::Listener;
use rpc_core::Address;
use rpc_transport_grpc::GrpcProtocol;

/// tonic's client stub, on our messages (see `build.rs`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod tonic_shared {
    include!(concat!(env!("OUT_DIR"), "/tonic_shared/echo.rs"));
}

const STEP: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_tonic_client_on_our_message_types_calls_our_server() {
    let running = Listener::new(examples::server())
        .protocol(GrpcProtocol::default())
        .bind(Address::tcp(([127, 0, 0, 1], 0).into()))
        .await
        .expect("bind")
        .start();
    let addr = running.local_addrs()[0].socket_addr().expect("tcp");
    let mut tonic = tokio::time::timeout(
        STEP,
        tonic_shared::test_service_client::TestServiceClient::connect(format!("http://{addr}")),
    )
    .await
    .expect("connect in time")
    .expect("connect");

    // The same value goes to tonic's stub here and would go to ours unchanged.
    let request: Request = Request {
        message: "one type".into(),
        ..Request::default()
    };
    let reply: Response = tokio::time::timeout(STEP, tonic.ping_pong(request.clone()))
        .await
        .expect("answered in time")
        .expect("ok")
        .into_inner();
    assert_eq!(reply.message, "one type");
    assert_eq!(reply.index.unwrap_or(0), 0);

    // A server stream too, to see the stub's decoder on our type.
    let mut stream = tokio::time::timeout(
        STEP,
        tonic.echo_server(Request {
            repeat: Some(3),
            ..request
        }),
    )
    .await
    .expect("answered in time")
    .expect("ok")
    .into_inner();
    let mut indices = Vec::new();
    while let Some(r) = tokio::time::timeout(STEP, stream.message())
        .await
        .expect("in time")
        .expect("ok")
    {
        assert_eq!(r.message, "one type");
        indices.push(r.index.unwrap_or(0));
    }
    assert_eq!(indices, [0, 1, 2]);
    running.shutdown(Duration::from_secs(1)).await;
}
