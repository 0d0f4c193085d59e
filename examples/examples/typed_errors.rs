//! `cargo run -p examples --example typed_errors`: errors with a code, a message, metadata and
//! details; business errors (Kitex's `BizStatusError`); what reaches the client per transport.
use std::time::Duration;

use bytes::Bytes;
use rpc_core::{serve::Listener, Client, Metadata, Server, ServerContext, Status};
use rpc_transport_grpc::{GrpcClient, GrpcProtocol};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

rpc_core::include_generated!("cookbook");

struct Teller;

impl Bank for Teller {
    async fn withdraw(&self, _: ServerContext, req: Withdrawal) -> Result<Balance, Status> {
        let balance = 30;
        match req.account.as_str() {
            "alice" if req.amount <= balance => Ok(Balance {
                amount: balance - req.amount,
            }),
            "alice" => {
                // An error status carries metadata (sent as trailers) and opaque details bytes.
                let mut metadata = Metadata::new();
                metadata.insert("x-balance", balance.to_string());
                Err(Status::failed_precondition("insufficient funds")
                    .with_metadata(metadata)
                    .with_details(Bytes::from_static(b"\x08\x1e")))
            }
            // A business error: the call worked, the business said no.
            "bob" => Err(Status::biz_error(
                1001,
                "account frozen",
                Some(r#"{"until":"2027"}"#.into()),
            )),
            other => Err(Status::not_found(format!("no account {other:?}"))),
        }
    }
}

async fn show(client: &BankClient, over: &str, account: &str, amount: i64) {
    let account = account.to_owned();
    match client
        .withdraw(Withdrawal {
            account: account.clone(),
            amount,
        })
        .await
    {
        Ok(left) => println!("{over} {account}: ok, {} left", left.amount),
        Err(e) => {
            let (code, message, details) = (e.code(), e.message(), e.details().len());
            let balance = e.metadata().get_str("x-balance");
            let biz = e.biz_status().map(|b| (b.code, b.message, b.extra));
            println!("{over} {account}: {code} {message:?} x-balance={balance:?} details={details}B biz={biz:?}");
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder().add_service(BankServer::new(Teller));
    let running = Listener::new(server.build())
        .protocol(GrpcProtocol::default())
        .protocol(TtHeaderProtocol::default())
        .bind("tcp://127.0.0.1:0".parse()?)
        .await?
        .start();
    let addr = running.local_addrs()[0].clone();
    let grpc = BankClient::new(Client::new(GrpcClient::new(addr.clone())));
    let ttheader = BankClient::new(Client::new(TtHeaderClient::new(addr)));
    for (client, over) in [(&grpc, "grpc"), (&ttheader, "ttheader")] {
        for (account, amount) in [("alice", 10), ("alice", 50), ("bob", 1), ("carol", 1)] {
            show(client, over, account, amount).await;
        }
    }
    running.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
