//! Balancing over real TTHeader servers on real sockets: an instance whose connect is refused
//! is ejected and every call still succeeds on the others (the open is retried there before
//! anything was sent), whatever the method; a DNS-resolved name balances too.

use std::net::TcpListener;
use std::time::Duration;

use examples::idl::{Proto, Thrift};
use examples::{EchoIdl, EchoRequest};
use rpc_core::balance::{Balanced, Policy};
use rpc_core::discovery::{DnsResolver, Resolver, StaticResolver};
use rpc_core::serve::{Listener, Running};
use rpc_core::{Address, CallOptions, Client};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

async fn serve() -> Running {
    Listener::new(examples::server())
        .protocol(TtHeaderProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .start()
}

/// A loopback address nothing listens on (bound, then closed).
fn refused() -> Address {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = Address::tcp(l.local_addr().unwrap());
    drop(l);
    a
}

#[tokio::test]
async fn a_refused_instance_is_ejected_and_every_call_succeeds_elsewhere() {
    let (s1, s2) = (serve().await, serve().await);
    let dead = refused();
    let addrs = vec![
        s1.local_addrs()[0].clone(),
        dead.clone(),
        s2.local_addrs()[0].clone(),
    ];
    for policy in [Policy::RoundRobin, Policy::P2c, Policy::ConsistentHash] {
        let started = std::time::Instant::now();
        let resolution = StaticResolver::from_addresses(addrs.clone())
            .resolve("echo")
            .await
            .unwrap();
        let bal = Balanced::connect::<TtHeaderClient>(resolution, policy);
        // No retry layer: the balancer alone moves a refused open to another instance.
        let client = Thrift::client(Client::new(bal.clone()));
        for i in 0..100 {
            let req = EchoRequest {
                message: format!("m{i}"),
                ..Default::default()
            };
            let r = Thrift::ping_pong(&client, req, CallOptions::new())
                .await
                .unwrap_or_else(|e| panic!("{policy:?} call {i}: {e}"));
            assert_eq!(r.message, format!("m{i}"));
        }
        // Streams too (protobuf: TTHeader Streaming).
        let pclient = Proto::client(Client::new(bal.clone()));
        let mut s = Proto::echo(&pclient, CallOptions::new()).await.unwrap();
        let msg = EchoRequest {
            message: "x".into(),
            ..Default::default()
        };
        s.send(msg.into()).await.unwrap();
        s.close_send().unwrap();
        assert!(s.recv().await.unwrap().is_some());
        let stats = bal.stats();
        let dead_stats = stats.iter().find(|s| s.address == dead).unwrap();
        assert_eq!(dead_stats.opened, 0);
        // Ejected after each refusal for 100 ms, doubling: tried again a handful of times at
        // most, not once per call (the bound allows for a slow, loaded machine).
        let probes_allowed = 2 + started.elapsed().as_millis().max(100).ilog2() as u64;
        assert!(
            (1..=probes_allowed).contains(&dead_stats.failed_opens),
            "{policy:?}: {stats:?} after {:?}",
            started.elapsed()
        );
        let live: u64 = stats.iter().map(|s| s.opened).sum();
        assert_eq!(
            live, 101,
            "{policy:?}: every call opened exactly one stream"
        );
        if policy == Policy::RoundRobin {
            assert!(stats
                .iter()
                .filter(|s| s.address != dead)
                .all(|s| s.opened >= 45));
        }
    }
    s1.shutdown(Duration::from_secs(1)).await;
    s2.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_dns_name_resolves_and_balances() {
    let s = serve().await;
    let port = s.local_addrs()[0].socket_addr().unwrap().port();
    let resolution = DnsResolver::new(Duration::from_secs(30))
        .resolve(&format!("localhost:{port}"))
        .await
        .unwrap();
    let bal = Balanced::connect::<TtHeaderClient>(resolution, Policy::P2c);
    let client = Thrift::client(Client::new(bal));
    // `localhost` may also resolve to ::1, where nothing listens: that instance is ejected.
    for i in 0..20 {
        let req = EchoRequest {
            message: format!("d{i}"),
            ..Default::default()
        };
        let r = Thrift::ping_pong(&client, req, CallOptions::new())
            .await
            .unwrap();
        assert_eq!(r.message, format!("d{i}"));
    }
    s.shutdown(Duration::from_secs(1)).await;
}
