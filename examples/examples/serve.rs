//! `cargo run -p examples --example serve -- tcp://0.0.0.0:50051`: a server that runs until
//! Ctrl-C or SIGTERM, then stops gracefully (dropping `Running` would not stop it).
use std::time::Duration;

use rpc_core::{serve::Listener, Server, ServerContext, Status};
use rpc_transport_grpc::GrpcProtocol;
use rpc_transport_ttheader::TtHeaderProtocol;

rpc_core::include_generated!("hello");

struct Hi;

impl Greeter for Hi {
    async fn say_hello(&self, _: ServerContext, req: HelloRequest) -> Result<HelloReply, Status> {
        Ok(HelloReply {
            message: format!("hello, {}", req.name),
        })
    }
}

/// Resolves at Ctrl-C (SIGINT) or, on Unix, SIGTERM (what `kill`, systemd and Kubernetes send).
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Addresses are `tcp://HOST:PORT` (or `unix:///path`), never `http://`: one port serves
    // every protocol added below, so the scheme names the socket, not a protocol.
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp://127.0.0.1:50051".into());
    let server = Server::builder()
        .add_service(GreeterServer::new(Hi))
        .build();
    let running = Listener::new(server)
        .protocol(TtHeaderProtocol::default())
        .protocol(GrpcProtocol::default())
        .bind(listen.parse()?)
        .await?
        .start();
    println!("listening {}", running.local_addrs()[0]);

    stop_signal().await?;
    println!("stopping");
    // Stop accepting, let calls in flight finish for up to 10 s, then close the rest.
    running.shutdown(Duration::from_secs(10)).await;
    println!("stopped");
    Ok(())
}
