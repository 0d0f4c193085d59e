//! `cargo run -p examples --example middleware`: middleware on every message (send and recv
//! chains) and on every call (tower layers, interceptors), on both sides of a stream.
use rpc_core::inproc::InProcTransport;
use rpc_core::middleware::{recv_fn, send_fn};
use rpc_core::{
    BidiStreamingServer, CallContext, Client, IncomingCall, Server, ServerContext, Status,
};
use tower::util::MapRequestLayer;

rpc_core::include_generated!("cookbook");

struct Upper;

impl Chat for Upper {
    async fn talk(
        &self,
        ctx: ServerContext,
        mut stream: BidiStreamingServer<Note, Note>,
    ) -> Result<(), Status> {
        // Metadata an interceptor added on the client side.
        let user = ctx.metadata().get_str("x-user").map(str::to_owned);
        let user = user.unwrap_or_default();
        while let Some(note) = stream.recv().await? {
            let text = format!("{user}: {}", note.text.to_uppercase());
            stream.send(Note { text }).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .add_service(ChatServer::new(Upper))
        // Once per call, around the handler: any tower layer over `IncomingCall`.
        .layer(MapRequestLayer::new(|call: IncomingCall| {
            println!("server layer: call to {}", call.context().method().path);
            call
        }))
        // On every message the handlers receive, after it is decoded.
        .recv_middleware(recv_fn(|ctx, msg| {
            if let Some(note) = msg.downcast_ref::<Note>() {
                println!("server recv: {:?} on {}", note.text, ctx.method().name);
            }
            Ok(())
        }))
        .build();

    let client = Client::builder(InProcTransport::new(server)) // any transport works the same
        // Once per call, before the stream opens: change the context or refuse the call.
        .interceptor(|ctx: &mut CallContext| {
            ctx.metadata_mut().insert("x-user", "alice");
            Ok(())
        })
        // On every message sent, before it is encoded: an `Err` rejects it, nothing is sent.
        .send_middleware(send_fn(|_, msg| match msg.downcast_ref::<Note>() {
            Some(note) if note.text.is_empty() => Err(Status::invalid_argument("empty note")),
            _ => Ok(()),
        }))
        .build();
    let client = ChatClient::new(client);

    let mut call = client.talk().await?;
    for text in ["hi", "", "still open"] {
        match call.send(Note { text: text.into() }).await {
            Ok(()) => {
                let reply = call.recv().await?.map(|n| n.text).unwrap_or_default();
                println!("client recv: {reply}");
            }
            Err(e) => println!("client send rejected: {} {}", e.code(), e.message()),
        }
    }
    call.close_send()?;
    assert!(call.recv().await?.is_none());
    Ok(())
}
