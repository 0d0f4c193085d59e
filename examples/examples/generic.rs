//! `cargo run -p examples --example generic`: a proxy and a client that know no IDL.
use bytes::Bytes;
use prost::Message;
use rpc_core::generic::GenericClient;
use rpc_core::{serve::Listener, CallOptions, Client, PayloadKind, Server, ServerContext, Status};
use rpc_transport_grpc::{GrpcClient, GrpcProtocol};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

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
    let any = || "tcp://127.0.0.1:0".parse();
    // The backend hosts the typed service.
    let backend = Server::builder()
        .add_service(GreeterServer::new(Hi))
        .build();
    let backend = Listener::new(backend)
        .protocol(TtHeaderProtocol::default())
        .bind(any()?)
        .await?
        .start();
    // The proxy hosts nothing: its unknown-method handler relays every call, in any mode,
    // to the backend over TTHeader (what `echo-server --forward URL` runs).
    let to_backend = Client::new(TtHeaderClient::new(backend.local_addrs()[0].clone()));
    let proxy = Server::builder()
        .unknown_method_handler(examples::forward::Forward::new(to_backend))
        .build();
    let proxy = Listener::new(proxy)
        .protocol(GrpcProtocol::default())
        .bind(any()?)
        .await?
        .start();
    let proxy_addr = proxy.local_addrs()[0].clone();

    // A typed gRPC client through the proxy.
    let typed = GreeterClient::new(Client::new(GrpcClient::new(proxy_addr.clone())));
    let reply = typed
        .say_hello(HelloRequest {
            name: "typed".into(),
        })
        .await?;
    println!("{}", reply.message);

    // A generic client: the method by name, the payload as protobuf bytes.
    let generic = GenericClient::new(
        Client::new(GrpcClient::new(proxy_addr)),
        "hello.Greeter",
        PayloadKind::Protobuf,
    );
    let request = Bytes::from(
        HelloRequest {
            name: "generic".into(),
        }
        .encode_to_vec(),
    );
    let response = generic
        .unary("SayHello", request, CallOptions::new())
        .await?;
    println!("{}", HelloReply::decode(response.into_inner())?.message);

    proxy.shutdown(std::time::Duration::from_secs(1)).await;
    backend.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
