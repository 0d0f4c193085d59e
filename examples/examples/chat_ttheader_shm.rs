//! `cargo run -p examples --example chat_ttheader_shm`: the chat service of `chat_grpc`, served
//! over TTHeader Streaming on TCP (what Kitex speaks) and over shared memory, from one listener.
use std::time::Duration;

use rpc_core::{serve::Listener, BidiStreamingServer, Server, ServerContext, Status};
use rpc_transport_shm::{ShmClient, ShmProtocol};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

rpc_core::include_generated!("cookbook");

struct Upper;

impl Chat for Upper {
    async fn talk(
        &self,
        _: ServerContext,
        mut stream: BidiStreamingServer<Note, Note>,
    ) -> Result<(), Status> {
        while let Some(note) = stream.recv().await? {
            let text = note.text.to_uppercase();
            stream.send(Note { text }).await?;
        }
        Ok(())
    }
}

/// The client side does not depend on the transport: a `ChatClient` is a `ChatClient`.
async fn chat(client: &ChatClient, over: &str) -> Result<(), Status> {
    let mut call = client.talk().await?;
    for text in ["one", "two"] {
        call.send(Note { text: text.into() }).await?;
        let reply = call
            .recv()
            .await?
            .ok_or_else(|| Status::internal("ended early"))?;
        println!("{over}: {text} -> {}", reply.text);
    }
    call.close_send()?;
    assert!(call.recv().await?.is_none());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The shared-memory transport's control socket; the memory itself is memfd, not a file.
    let shm_path = std::env::temp_dir().join(format!("chat-{}.shm", std::process::id()));
    let server = Server::builder()
        .add_service(ChatServer::new(Upper))
        .build();
    let running = Listener::new(server)
        .protocol(TtHeaderProtocol::default())
        .protocol(ShmProtocol::default())
        .bind("tcp://127.0.0.1:0".parse()?)
        .await?
        .bind(format!("shm://{}", shm_path.display()).parse()?)
        .await?
        .start();
    let [tcp, shm] = [0, 1].map(|i| running.local_addrs()[i].to_string());

    chat(&ChatClient::connect::<TtHeaderClient>(&tcp)?, "ttheader").await?;
    chat(&ChatClient::connect::<ShmClient>(&shm)?, "shm").await?;

    running.shutdown(Duration::from_secs(1)).await; // also removes the socket file
    Ok(())
}
