//! `cargo run -p examples --example cancel_deadline`: a deadline over a whole stream and a
//! cancel by dropping the handle, as the handler sees them.
use std::time::Duration;

use rpc_core::{
    serve::Listener, CallOptions, Server, ServerContext, ServerStreamingServer, Status,
};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};
use tokio::sync::mpsc;

rpc_core::include_generated!("cookbook");

/// Counts down; tells `main` how each call ended on the server side.
struct Countdowns(mpsc::Sender<String>);

impl Clock for Countdowns {
    async fn count(
        &self,
        ctx: ServerContext,
        req: Countdown,
        mut stream: ServerStreamingServer<Note>,
    ) -> Result<(), Status> {
        let every = Duration::from_millis(req.interval_ms.max(1).unsigned_abs());
        let work = async {
            for n in (1..=req.from).rev() {
                tokio::time::sleep(every).await;
                let text = n.to_string();
                stream.send(Note { text }).await?;
            }
            Ok(())
        };
        // `cancelled()` resolves with the reason: the client's cancel, or the deadline.
        let outcome = tokio::select! {
            biased;
            why = ctx.cancelled() => Err(why),
            done = work => done,
        };
        let code = outcome.as_ref().err().map_or("OK", |s| s.code().as_str());
        let _ = self.0.send(format!("server: the handler saw {code}")).await;
        outcome
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (tx, mut ends) = mpsc::channel(4);
    let server = Server::builder().add_service(ClockServer::new(Countdowns(tx)));
    let running = Listener::new(server.build())
        .protocol(TtHeaderProtocol::default())
        .bind("tcp://127.0.0.1:0".parse()?)
        .await?
        .start();
    let client = ClockClient::connect::<TtHeaderClient>(&running.local_addrs()[0].to_string())?;

    // A deadline covers the whole stream, and the server enforces it too.
    let (from, interval_ms) = (1000, 10);
    let slow = Countdown { from, interval_ms };
    let options = CallOptions::new().timeout(Duration::from_millis(200));
    let mut call = client.count_with(slow, options).await?;
    let ended = loop {
        match call.recv().await {
            Ok(Some(_)) => {}
            end => break end.err().unwrap_or_else(Status::ok), // Ok(None): finished
        }
    };
    println!("client: the stream ended with {}", ended.code());
    println!("{}", ends.recv().await.unwrap_or_default());

    // Cancel: drop the handle (or call `cancel()`) before the stream ends.
    let mut call = client.count(slow).await?;
    let first = call.recv().await?.ok_or("ended early")?;
    println!("client: got {}, cancelling", first.text);
    drop(call);
    println!("{}", ends.recv().await.unwrap_or_default());

    running.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
