//! `cargo run -p examples --example hello`: a service, a server on a real socket, a client,
//! and one call in each of the four modes. The stubs come from `idl/echo.thrift` (see
//! `build.rs`); in your own crate, `rpc_core::include_generated!("echo")` brings them in.
#![forbid(unsafe_code)]

use std::time::Duration;

use examples::thrift::{
    Request, Response, TestService, TestServiceClient, TestServicePingPongException as PingErr,
    TestServiceServer,
};
use rpc_core::serve::Listener;
use rpc_core::{
    BidiStream, Client, MethodError, RecvStream, SendStream, Server, ServerContext, Status,
};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

struct Hello;

impl TestService for Hello {
    async fn ping_pong(
        &self,
        _: ServerContext,
        req: Request,
    ) -> Result<Response, MethodError<PingErr>> {
        Ok(msg(format!("hello, {}", req.message)))
    }
    async fn echo(
        &self,
        _: ServerContext,
        mut s: BidiStream<Request, Response>,
    ) -> Result<(), Status> {
        while let Some(req) = s.recv().await? {
            s.send(msg(req.message)).await?;
        }
        Ok(())
    }
    async fn echo_client(
        &self,
        _: ServerContext,
        mut s: RecvStream<Request>,
    ) -> Result<Response, Status> {
        let mut words = Vec::new();
        while let Some(req) = s.recv().await? {
            words.push(req.message);
        }
        Ok(msg(words.join(" ")))
    }
    async fn echo_server(
        &self,
        _: ServerContext,
        req: Request,
        mut s: SendStream<Response>,
    ) -> Result<(), Status> {
        for word in req.message.split(' ') {
            s.send(msg(word)).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .add_service(TestServiceServer::new(Hello))
        .build();
    let running = Listener::new(server)
        .protocol(TtHeaderProtocol::default())
        .bind("tcp://127.0.0.1:0".parse()?)
        .await?
        .start();
    let transport = TtHeaderClient::new(running.local_addrs().remove(0));
    let client = TestServiceClient::new(Client::new(transport));

    println!(
        "pingpong: {}",
        client.ping_pong(req("world")).await?.message
    );

    let mut up = client.echo_client().await?;
    for word in ["client", "streaming"] {
        up.send(req(word)).await?;
    }
    println!("client streaming: {}", up.close_and_recv().await?.message);

    let mut down = client.echo_server(req("server streaming")).await?;
    while let Some(res) = down.recv().await? {
        println!("server streaming: {}", res.message);
    }

    let mut bidi = client.echo().await?;
    bidi.send(req("bidi")).await?;
    bidi.close_send()?;
    while let Some(res) = bidi.recv().await? {
        println!("bidi: {}", res.message);
    }

    running.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

fn msg(message: impl Into<String>) -> Response {
    Response {
        message: message.into(),
        ..Default::default()
    }
}

fn req(message: &str) -> Request {
    Request {
        message: message.into(),
        ..Default::default()
    }
}
