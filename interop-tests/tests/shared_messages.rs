//! One message type for both stacks, both ways round (`extern_path`), over gRPC:
//!
//! * tonic 0.14's generated client, built on the prost messages rpc-codegen generated for
//!   `examples/idl/echo.proto`, calls our generated server;
//! * our generated server, built on the messages tonic-prost-build generated, is called by
//!   tonic's own client.
//!
//! A team migrating service by service passes the same `Request` value to a tonic stub and to
//! ours; this compiles only because both sit on one prost (0.14).

use std::time::Duration;

use examples::proto::{Request, Response};
use rpc_core::serve::{Listener, Running};
use rpc_core::Address;
use rpc_transport_grpc::GrpcProtocol;

/// tonic's client stub, on our messages (see `build.rs`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod tonic_shared {
    include!(concat!(env!("OUT_DIR"), "/tonic_shared/echo.rs"));
}

/// tonic's stubs (messages, client, server) of the same proto.
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod tonic_echo {
    include!(concat!(env!("OUT_DIR"), "/tonic/echo.rs"));
}

/// Our stubs, on tonic's messages (see `build.rs`).
mod ours_on_tonic {
    rpc_core::include_generated!("echo_on_tonic");
}

const STEP: Duration = Duration::from_secs(10);

/// `fut`, or a panic after [`STEP`] (a hang fails the test).
async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .expect("no answer within STEP (hung)")
}

/// `server` over gRPC on a loopback port: the running server and its address.
async fn serve_grpc(server: rpc_core::Server) -> (Running, std::net::SocketAddr) {
    let running = Listener::new(server)
        .protocol(GrpcProtocol::default())
        .bind(Address::tcp(([127, 0, 0, 1], 0).into()))
        .await
        .expect("bind")
        .start();
    let addr = running.local_addrs()[0].socket_addr().expect("tcp");
    (running, addr)
}

/// An echo of the four modes, written against our generated trait with tonic's types.
struct OnTonicTypes;

impl ours_on_tonic::TestService for OnTonicTypes {
    async fn ping_pong(
        &self,
        _ctx: rpc_core::ServerContext,
        request: tonic_echo::Request,
    ) -> Result<tonic_echo::Response, rpc_core::Status> {
        Ok(tonic_echo::Response {
            message: request.message,
            index: Some(0),
        })
    }

    async fn echo(
        &self,
        _ctx: rpc_core::ServerContext,
        mut stream: rpc_core::BidiStreamingServer<tonic_echo::Request, tonic_echo::Response>,
    ) -> Result<(), rpc_core::Status> {
        let mut index = 0;
        while let Some(r) = stream.recv().await? {
            stream
                .send(tonic_echo::Response {
                    message: r.message,
                    index: Some(index),
                })
                .await?;
            index += 1;
        }
        Ok(())
    }

    async fn echo_client(
        &self,
        _ctx: rpc_core::ServerContext,
        mut stream: rpc_core::ClientStreamingServer<tonic_echo::Request>,
    ) -> Result<tonic_echo::Response, rpc_core::Status> {
        let (mut all, mut count) = (String::new(), 0);
        while let Some(r) = stream.recv().await? {
            all.push_str(&r.message);
            count += 1;
        }
        Ok(tonic_echo::Response {
            message: all,
            index: Some(count),
        })
    }

    async fn echo_server(
        &self,
        _ctx: rpc_core::ServerContext,
        request: tonic_echo::Request,
        mut stream: rpc_core::ServerStreamingServer<tonic_echo::Response>,
    ) -> Result<(), rpc_core::Status> {
        for index in 0..request.repeat.unwrap_or(3) {
            stream
                .send(tonic_echo::Response {
                    message: request.message.clone(),
                    index: Some(index),
                })
                .await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn our_server_on_tonic_message_types_serves_tonic_client() {
    let server = rpc_core::Server::builder()
        .add_service(ours_on_tonic::TestServiceServer::new(OnTonicTypes))
        .build();
    let (running, addr) = serve_grpc(server).await;
    let mut tonic = within(tonic_echo::test_service_client::TestServiceClient::connect(
        format!("http://{addr}"),
    ))
    .await
    .expect("connect");
    let request = tonic_echo::Request {
        message: "tonic's type".into(),
        repeat: Some(2),
        ..Default::default()
    };
    let reply = within(tonic.ping_pong(request.clone()))
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(reply.message, "tonic's type");
    let mut stream = within(tonic.echo_server(request))
        .await
        .expect("ok")
        .into_inner();
    let mut indices = Vec::new();
    while let Some(r) = within(stream.message()).await.expect("ok") {
        assert_eq!(r.message, "tonic's type");
        indices.push(r.index.unwrap_or(0));
    }
    assert_eq!(indices, [0, 1]);
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_tonic_client_on_our_message_types_calls_our_server() {
    let (running, addr) = serve_grpc(examples::server()).await;
    let mut tonic = within(
        tonic_shared::test_service_client::TestServiceClient::connect(format!("http://{addr}")),
    )
    .await
    .expect("connect");

    // The same value goes to tonic's stub here and would go to ours unchanged.
    let request: Request = Request {
        message: "one type".into(),
        ..Request::default()
    };
    let reply: Response = within(tonic.ping_pong(request.clone()))
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(reply.message, "one type");
    assert_eq!(reply.index.unwrap_or(0), 0);

    // A server stream too, to see the stub's decoder on our type.
    let mut stream = within(tonic.echo_server(Request {
        repeat: Some(3),
        ..request
    }))
    .await
    .expect("ok")
    .into_inner();
    let mut indices = Vec::new();
    while let Some(r) = within(stream.message()).await.expect("ok") {
        assert_eq!(r.message, "one type");
        indices.push(r.index.unwrap_or(0));
    }
    assert_eq!(indices, [0, 1, 2]);
    running.shutdown(Duration::from_secs(1)).await;
}
