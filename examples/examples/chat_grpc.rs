//! `cargo run -p examples --example chat_grpc`: a bidirectional streaming service over gRPC.
use std::time::Duration;

use rpc_core::{serve::Listener, BidiStreamingServer, Server, ServerContext, Status};
use rpc_transport_grpc::{GrpcClient, GrpcProtocol};

// `Chat`, `ChatServer`, `ChatClient` and `Note`, generated from `idl/cookbook.proto`.
rpc_core::include_generated!("cookbook");

struct Upper;

impl Chat for Upper {
    async fn talk(
        &self,
        _: ServerContext,
        mut stream: BidiStreamingServer<Note, Note>,
    ) -> Result<(), Status> {
        // `Ok(None)` is the client's CloseSend; returning `Ok(())` ends the stream with OK.
        while let Some(note) = stream.recv().await? {
            let text = note.text.to_uppercase();
            stream.send(Note { text }).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .add_service(ChatServer::new(Upper))
        .build();
    let running = Listener::new(server)
        .protocol(GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse()?)
        .await?
        .start();
    let address = running.local_addrs()[0].to_string(); // tcp://127.0.0.1:PORT, not http://

    let client = ChatClient::connect::<GrpcClient>(&address)?;

    // Lockstep: send one, receive one.
    let mut call = client.talk().await?;
    call.send(Note {
        text: "ping".into(),
    })
    .await?;
    println!(
        "lockstep: {}",
        call.recv().await?.ok_or("ended early")?.text
    );
    call.close_send()?;
    assert!(
        call.recv().await?.is_none(),
        "the server ends with OK after CloseSend"
    );

    // Both directions at once: the sending half in its own task.
    let (mut tx, mut rx) = client.talk().await?.into_split();
    let sender = tokio::spawn(async move {
        for text in ["hello", "streaming", "world"] {
            tx.send(Note { text: text.into() }).await?;
        }
        tx.close_send() // half-close: the server's `recv` returns Ok(None)
    });
    while let Some(note) = rx.recv().await? {
        println!("received: {}", note.text);
    }
    sender.await??;
    println!("stream ended: OK");

    running.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
