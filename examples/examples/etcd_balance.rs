//! `cargo run -p examples --example etcd_balance -- http://127.0.0.1:2379`: three servers
//! register in etcd, a client resolves them, balances, retries and rides out a server stopping.
use std::collections::BTreeMap;
use std::time::Duration;

use rpc_core::balance::{Balanced, Policy};
use rpc_core::discovery::{InstanceMeta, Registered, Resolver};
use rpc_core::resilience::{RetryLayer, RetryPolicy};
use rpc_core::{serve::Listener, Client, Server, ServerContext, Status};
use rpc_registry_etcd::EtcdRegistry;
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

rpc_core::include_generated!("hello");

struct Hi(usize);

impl Greeter for Hi {
    async fn say_hello(&self, _: ServerContext, _: HelloRequest) -> Result<HelloReply, Status> {
        let message = format!("server {}", self.0);
        Ok(HelloReply { message })
    }
}

async fn calls(client: &GreeterClient, n: usize) -> Result<BTreeMap<String, usize>, Status> {
    let mut by_server = BTreeMap::new();
    for _ in 0..n {
        let reply = client.say_hello(HelloRequest { name: "x".into() }).await?;
        *by_server.entry(reply.message).or_default() += 1;
    }
    Ok(by_server)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let etcd = args.next().unwrap_or("http://127.0.0.1:2379".into());
    let registry = EtcdRegistry::new([etcd]).lease_ttl(Duration::from_secs(5));
    let service = format!("cookbook-greeter-{}", std::process::id());

    let mut servers = Vec::new();
    for n in 0..3 {
        let hi = Server::builder().add_service(GreeterServer::new(Hi(n)));
        let running = Listener::new(hi.build())
            .protocol(TtHeaderProtocol::default())
            .bind("tcp://127.0.0.1:0".parse()?) // the real port is registered
            .await?
            .start();
        let meta = InstanceMeta::new().with_weight(10); // weight and tags; no address
        let registered = Registered::register(running, &registry, &service, None, meta)
            .await
            .map_err(|(_, e)| e)?; // registers what `running` bound, with that weight
        servers.push(registered);
    }

    let resolution = registry.resolve(&service).await?; // watched: follows the registrations
    let balanced = Balanced::connect::<TtHeaderClient>(resolution, Policy::RoundRobin);
    let retry = RetryPolicy::default().idempotent(["/hello.Greeter/SayHello"]);
    let client = GreeterClient::new(
        Client::builder(balanced.clone())
            .timeout(Duration::from_secs(1)) // the deadline: whole call, every attempt
            .unary_layer(RetryLayer::new(retry)) // UNAVAILABLE: if unsent, or idempotent
            .build(),
    );
    println!("instances: {}", balanced.instances().len());
    println!("6 calls: {:?}", calls(&client, 6).await?);

    servers.remove(0).shutdown(Duration::from_secs(1)).await?; // deregisters, then drains
    tokio::time::timeout(Duration::from_secs(5), async {
        while balanced.instances().len() != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;
    println!("after a stop, 4 calls: {:?}", calls(&client, 4).await?);
    for server in servers {
        server.shutdown(Duration::from_secs(1)).await?;
    }
    Ok(())
}
