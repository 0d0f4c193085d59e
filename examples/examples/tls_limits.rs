//! `cargo run -p examples --example tls_limits`: one TLS port serving TTHeader and gRPC, server
//! limits, and what a client sees at a message-size limit.
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rpc_core::net::{TlsClientConfig, TlsServerConfig};
use rpc_core::{
    serve::Listener, BidiStreamingServer, Client, Server, ServerContext, ServerLimits, Status,
};
use rpc_transport_grpc::{GrpcClient, GrpcClientConfig, GrpcProtocol};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

rpc_core::include_generated!("cookbook");

struct Upper;

impl Chat for Upper {
    async fn talk(
        &self,
        ctx: ServerContext,
        mut stream: BidiStreamingServer<Note, Note>,
    ) -> Result<(), Status> {
        let tls = ctx.peer().and_then(|p| p.tls()).is_some();
        while let Some(note) = stream.recv().await? {
            let text = format!("{} (over TLS: {tls})", note.text.to_uppercase());
            stream.send(Note { text }).await?;
        }
        Ok(())
    }
}

async fn chat(client: &ChatClient, text: String) -> Result<String, Status> {
    let mut call = client.talk().await?;
    call.send(Note { text }).await?;
    call.close_send()?;
    Ok(call.recv().await?.map(|n| n.text).unwrap_or_default())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A CA and a certificate for "localhost" (in production: `TlsServerConfig::from_pem_files`).
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca = ca.self_signed(&ca_key)?;
    let (key, names) = (KeyPair::generate()?, vec!["localhost".to_owned()]);
    let cert = CertificateParams::new(names)?.signed_by(&key, &ca, &ca_key)?;
    let tls = TlsServerConfig::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?;

    let limits = ServerLimits::default()
        .max_connections(1_000) // per listener; at the cap new connects wait in the backlog
        .max_concurrent_streams(100) // per connection
        .max_buffered_bytes(64 << 20); // server-wide: received-not-read plus queued-not-written
    let builder = Server::builder().limits(limits);
    let running = Listener::new(builder.add_service(ChatServer::new(Upper)).build())
        .protocol(TtHeaderProtocol::default())
        .protocol(GrpcProtocol::default())
        .bind_tls("tcp://127.0.0.1:0".parse()?, tls)
        .await?
        .start();
    let addr = running.local_addrs()[0].clone(); // tcp://127.0.0.1:PORT

    // Trust the CA; verify the name in the certificate (by default: the address's host).
    let trust = || TlsClientConfig::from_ca_pem(ca.pem().as_bytes())?.server_name("localhost");
    let ttheader = Client::new(TtHeaderClient::builder(addr.clone()).tls(trust()?).build());
    let grpc_config = GrpcClientConfig::default().tls(trust()?); // ALPN h2 is added
    let grpc = Client::new(GrpcClient::with_config(addr, grpc_config));
    let (ttheader, grpc) = (ChatClient::new(ttheader), ChatClient::new(grpc));
    println!("ttheader: {}", chat(&ttheader, "hello".into()).await?);
    println!("grpc: {}", chat(&grpc, "hello".into()).await?);

    // gRPC's receive limit (4 MiB by default, `GrpcServerConfig::max_recv_message`).
    let big = chat(&grpc, "x".repeat(5 << 20)).await.unwrap_err();
    println!("grpc, 5 MiB message: {}", big.code());

    running.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
