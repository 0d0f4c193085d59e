//! The registry against a real etcd (Debian's `etcd-server`, installed when missing, on free
//! ports with its data in a temp folder), through our own gRPC client and the stubs generated
//! from the trimmed etcd protos: registration, resolution with a watch, values written by
//! others (Kitex's, garbage, oversized), a lease revoked behind the registrar's back (it
//! re-grants and re-puts), deregistration, and an unreachable first endpoint.

#[allow(dead_code)]
#[path = "../../examples/tests/support/etcd.rs"]
mod etcd_support;

use std::time::Duration;

use etcd_support::Etcd;
use rpc_core::discovery::{Instance, Registrar, Resolution, Resolver};
use rpc_core::{Client, Status};
use rpc_registry_etcd::pb::{
    KvClient, LeaseClient, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
};
use rpc_registry_etcd::{instance_key, service_prefix, EtcdRegistry, MAX_VALUE_BYTES};
use rpc_transport_grpc::GrpcClient;

/// How long any one expected change may take.
const WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded) until the resolved set satisfies `pred`.
async fn until(res: &mut Resolution, what: &str, pred: impl Fn(&[Instance]) -> bool) {
    let wait = async {
        loop {
            if pred(&res.current_and_mark_seen()) {
                return;
            }
            assert!(res.changed().await, "resolution ended waiting for {what}");
        }
    };
    if tokio::time::timeout(WAIT, wait).await.is_err() {
        panic!("not within {WAIT:?}: {what}; set: {:?}", res.current());
    }
}

/// The TCP ports of a set, sorted.
fn ports(set: &[Instance]) -> Vec<u16> {
    let mut p: Vec<u16> = set
        .iter()
        .filter_map(|i| match &i.address {
            rpc_core::Address::Tcp { port, .. } => Some(*port),
            _ => None,
        })
        .collect();
    p.sort_unstable();
    p
}

/// A raw client of etcd's API (our stubs), for what the test does behind the registry's back.
fn raw(etcd: &Etcd) -> (KvClient, LeaseClient) {
    let t = GrpcClient::parse(&format!("tcp://{}", etcd.host_port())).expect("an address");
    let c = Client::new(t);
    (KvClient::new(c.clone()), LeaseClient::new(c))
}

/// The lease a key is attached to (0: no such key).
async fn lease_of(kv: &KvClient, key: &str) -> Result<i64, Status> {
    let r = kv
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..RangeRequest::default()
        })
        .await?;
    Ok(r.kvs.first().map_or(0, |kv| kv.lease))
}

async fn put(kv: &KvClient, key: String, value: Vec<u8>) {
    kv.put(PutRequest {
        key: key.into_bytes(),
        value,
        lease: 0,
    })
    .await
    .expect("put");
}

#[tokio::test]
async fn registers_resolves_watches_and_regrants_a_lost_lease_on_a_real_etcd() {
    let etcd = Etcd::start().await;
    // The first endpoint refuses connections: the registry moves on to the second.
    let registry = EtcdRegistry::new(["127.0.0.1:1".to_owned(), etcd.endpoint()])
        .lease_ttl(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(2));
    let mut res = registry.resolve("svc").await.expect("resolve");
    assert!(res.current().is_empty());

    let a = Instance::new("tcp://127.0.0.1:7001".parse().unwrap()).with_tag("zone", "a");
    let b = Instance::new("tcp://127.0.0.1:7002".parse().unwrap()).with_weight(3);
    let reg = registry
        .register("svc", vec![a.clone(), b.clone()])
        .await
        .expect("register");
    until(&mut res, "both instances", |s| ports(s) == [7001, 7002]).await;
    let got = res.current();
    let got_a = got.iter().find(|i| i.address == a.address).unwrap();
    assert_eq!(got_a.tags.get("zone").map(String::as_str), Some("a"));
    let got_b = got.iter().find(|i| i.address == b.address).unwrap();
    assert_eq!(got_b.weight, 3);

    // Values written by others: a Kitex one is taken; garbage and an oversized value are
    // skipped without disturbing the rest.
    let (kv, lease) = raw(&etcd);
    let prefix = service_prefix("svc");
    put(&kv, format!("{prefix}bad"), b"not json".to_vec()).await;
    put(&kv, format!("{prefix}big"), vec![b' '; MAX_VALUE_BYTES + 1]).await;
    let kitex = br#"{"network":"tcp","address":"127.0.0.1:7003","weight":10,"tags":null}"#;
    put(&kv, format!("{prefix}127.0.0.1:7003"), kitex.to_vec()).await;
    until(&mut res, "the Kitex entry", |s| {
        ports(s) == [7001, 7002, 7003]
    })
    .await;
    // `svc2` shares the text prefix `svc` but not the key prefix `.../svc/`: never seen.
    let other = br#"{"network":"tcp","address":"127.0.0.1:7009","weight":10}"#;
    put(
        &kv,
        format!("{}127.0.0.1:7009", service_prefix("svc2")),
        other.to_vec(),
    )
    .await;

    // The lease is revoked behind the registrar's back: its keys vanish, then it re-grants and
    // puts them again under a new lease.
    let key_a = instance_key("svc", &a);
    let old = lease_of(&kv, &key_a).await.expect("range");
    assert_ne!(old, 0, "registered keys carry a lease");
    lease
        .lease_revoke(LeaseRevokeRequest { id: old })
        .await
        .expect("revoke");
    until(&mut res, "keys gone with the lease", |s| ports(s) == [7003]).await;
    until(&mut res, "keys back under a new lease", |s| {
        ports(s) == [7001, 7002, 7003]
    })
    .await;
    let new = lease_of(&kv, &key_a).await.expect("range");
    assert!(new != 0 && new != old, "lease {old} -> {new}");

    // Deregistration deletes the keys and revokes the lease at once.
    reg.deregister().await.expect("deregister");
    until(&mut res, "deregistered", |s| ports(s) == [7003]).await;
    assert_eq!(lease_of(&kv, &key_a).await.expect("range"), 0);
    let mut keepalive = lease.lease_keep_alive().await.expect("keepalive stream");
    keepalive
        .send(LeaseKeepAliveRequest { id: new })
        .await
        .expect("send");
    let r = tokio::time::timeout(WAIT, keepalive.recv())
        .await
        .expect("keepalive answer in time")
        .expect("keepalive")
        .expect("a response");
    assert!(r.ttl <= 0, "the lease is revoked: ttl {}", r.ttl);
}

#[tokio::test]
async fn unreachable_etcd_fails_resolution_in_time() {
    let registry = EtcdRegistry::new(["127.0.0.1:1"]).request_timeout(Duration::from_secs(1));
    let r = tokio::time::timeout(Duration::from_secs(5), registry.resolve("svc"))
        .await
        .expect("bounded by the request timeout");
    let Err(e) = r else {
        panic!("resolved without an etcd")
    };
    assert_eq!(e.code(), rpc_core::Code::Unavailable, "{e}");
}
