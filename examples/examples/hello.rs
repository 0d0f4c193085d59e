//! `cargo run -p examples --example hello`: a service, a server and a client.
use rpc_core::{serve::Listener, Server, ServerContext, Status};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

// The stubs `build.rs` generated from `idl/hello.proto` (rpc_codegen::Builder).
rpc_core::include_generated!("hello");

struct Hi;

impl Greeter for Hi {
    async fn say_hello(&self, _: ServerContext, req: HelloRequest) -> Result<HelloReply, Status> {
        Ok(HelloReply {
            message: format!("hello, {}", req.name),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .add_service(GreeterServer::new(Hi))
        .build();
    let running = Listener::new(server)
        .protocol(TtHeaderProtocol::default())
        .bind("tcp://127.0.0.1:0".parse()?)
        .await?
        .start();

    let address = running.local_addrs()[0].to_string(); // tcp://127.0.0.1:PORT
    let client = GreeterClient::connect::<TtHeaderClient>(&address)?;
    let reply = client
        .say_hello(HelloRequest {
            name: "world".into(),
        })
        .await?;
    println!("{}", reply.message);

    running.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
