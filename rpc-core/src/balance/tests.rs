//! Balancer behaviour over in-process servers (refused connects and real sockets are covered
//! by `examples/tests/balance.rs` and the etcd test).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::*;
use crate::discovery::{Instance, Resolution};
use crate::resilience::BreakerConfig;
use crate::testsvc::{named, Named, BIDI, CALL};
use crate::{CallOptions, Client, ProstCodec};

fn addr(i: usize) -> Address {
    format!("tcp://10.0.0.{i}:1").parse().unwrap()
}

struct Fleet {
    services: Vec<Named>,
    transports: HashMap<Address, Arc<dyn ClientTransport>>,
}

fn fleet(n: usize) -> Fleet {
    let mut services = Vec::new();
    let mut transports = HashMap::new();
    for i in 0..n {
        let (svc, t) = named(&format!("s{i}"));
        services.push(svc);
        transports.insert(addr(i), Arc::new(t) as Arc<dyn ClientTransport>);
    }
    Fleet {
        services,
        transports,
    }
}

impl Fleet {
    fn builder(&self) -> BalancedBuilder {
        let map = self.transports.clone();
        Balanced::builder(move |i: &Instance| {
            map.get(&i.address)
                .cloned()
                .ok_or_else(|| Status::unavailable("unknown"))
        })
    }
    fn calls(&self) -> Vec<usize> {
        self.services
            .iter()
            .map(|s| s.calls.load(Ordering::SeqCst))
            .collect()
    }
}

async fn call(c: &Client, req: &str, opts: CallOptions) -> Result<String, Status> {
    c.unary::<ProstCodec, String, String>(CALL, req.to_owned(), opts)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn weighted_round_robin_is_exact_per_cycle_and_smooth() {
    let f = fleet(3);
    let set = (0..3)
        .map(|i| Instance::new(addr(i)).with_weight(i as u32 + 1))
        .collect();
    let bal = f.builder().build(Resolution::fixed(set));
    let c = Client::new(bal);
    let mut order = Vec::new();
    for _ in 0..600 {
        order.push(call(&c, "x", CallOptions::new()).await.unwrap());
    }
    assert_eq!(f.calls(), vec![100, 200, 300]);
    // Smooth: the heaviest never takes more than 3 calls in a row (6 per cycle of 6).
    let longest = order
        .chunk_by(|a, b| a == b)
        .map(<[String]>::len)
        .max()
        .unwrap();
    assert!(longest <= 2, "{longest} in a row");
}

#[tokio::test]
async fn p2c_prefers_the_instance_with_fewer_streams_in_flight() {
    let f = fleet(2);
    let set = (0..2).map(|i| Instance::new(addr(i))).collect();
    let bal = f
        .builder()
        .policy(Policy::P2c)
        .build(Resolution::fixed(set));
    let c = Client::new(bal.clone());
    // Eight slow calls in flight: p2c with two instances compares both every time, so they
    // alternate (in-flight 0/0 -> either, 1/0 -> the other, ...).
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { call(&c, "sleep:300", CallOptions::new()).await })
        })
        .collect();
    let loaded = bal.clone();
    tokio::time::timeout(Duration::from_secs(5), async move {
        while loaded.stats().iter().map(|s| s.in_flight).sum::<usize>() < 8 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("eight calls in flight");
    let per: Vec<usize> = bal.stats().iter().map(|s| s.in_flight).collect();
    assert_eq!(per, vec![4, 4], "balanced on in-flight load");
    for s in slow {
        s.await.unwrap().unwrap();
    }
    assert!(bal.stats().iter().all(|s| s.in_flight == 0));
}

#[test]
fn p2c_never_picks_the_busier_of_the_two_it_compares() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let f = fleet(3);
        let set = (0..3).map(|i| Instance::new(addr(i))).collect();
        let bal = f
            .builder()
            .policy(Policy::P2c)
            .build(Resolution::fixed(set));
        let snap = bal.shared.snapshot();
        snap.endpoints[1].in_flight.store(5, Ordering::Relaxed);
        snap.endpoints[2].in_flight.store(5, Ordering::Relaxed);
        let ctx = CallContext::new(CALL);
        let mut picks = [0usize; 3];
        for _ in 0..3000 {
            let i = bal.shared.pick(&snap, &ctx, &[], Instant::now()).unwrap();
            picks[i] += 1;
        }
        // Instance 0 wins whenever it is one of the two sampled: 2/3 of the picks.
        assert!(
            (1800..=2200).contains(&picks[0]),
            "{picks:?}: the idle instance wins when sampled"
        );
    });
}

#[tokio::test]
async fn consistent_hashing_keeps_keys_on_their_instance_and_moves_only_a_leaving_ones() {
    let f = fleet(4);
    let (tx, rx) = watch::channel(Arc::new(
        (0..4).map(|i| Instance::new(addr(i))).collect::<Vec<_>>(),
    ));
    let bal = f
        .builder()
        .policy(Policy::ConsistentHash)
        .build(Resolution::from_watch(rx));
    let c = Client::new(bal.clone());
    let keyed = |k: u32| CallOptions::new().metadata(HASH_METADATA_KEY, format!("user-{k}"));
    let mut before = HashMap::new();
    for k in 0..200 {
        let a = call(&c, "x", keyed(k)).await.unwrap();
        let b = call(&c, "x", keyed(k)).await.unwrap();
        assert_eq!(a, b, "a key sticks to its instance");
        before.insert(k, a);
    }
    let used: std::collections::HashSet<_> = before.values().cloned().collect();
    assert_eq!(used.len(), 4, "keys spread over every instance");
    // s3 leaves: only its keys move.
    tx.send_replace(Arc::new((0..3).map(|i| Instance::new(addr(i))).collect()));
    tokio::time::timeout(Duration::from_secs(5), async {
        while bal.instances().len() != 3 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    for k in 0..200 {
        let now = call(&c, "x", keyed(k)).await.unwrap();
        if before[&k] != "s3" {
            assert_eq!(now, before[&k], "key {k} moved though its instance stayed");
        } else {
            assert_ne!(now, "s3");
        }
    }
    // The extension wins over metadata.
    let mut ctx = CallContext::new(CALL);
    ctx.extensions_mut().insert(HashKey::of(&"k"));
    let snap = bal.shared.snapshot();
    let first = bal.shared.pick(&snap, &ctx, &[], Instant::now());
    for _ in 0..10 {
        assert_eq!(bal.shared.pick(&snap, &ctx, &[], Instant::now()), first);
    }
}

#[tokio::test]
async fn a_stream_picks_its_instance_once() {
    let f = fleet(3);
    let set = (0..3).map(|i| Instance::new(addr(i))).collect();
    let bal = f.builder().build(Resolution::fixed(set));
    let c = Client::new(bal.clone());
    let mut s = c
        .bidi::<ProstCodec, String, String>(BIDI, CallOptions::new())
        .await
        .unwrap();
    let mut names = std::collections::HashSet::new();
    for i in 0..10 {
        s.send(format!("m{i}")).await.unwrap();
        let r = s.recv().await.unwrap().unwrap();
        names.insert(r.split(':').next().unwrap().to_owned());
    }
    s.close_send().unwrap();
    assert_eq!(s.recv().await.unwrap(), None);
    assert_eq!(names.len(), 1, "every message of a stream on one instance");
    let opened: u64 = bal.stats().iter().map(|s| s.opened).sum();
    assert_eq!(opened, 1);
}

#[tokio::test]
async fn an_update_removes_an_instance_without_disturbing_its_calls_in_flight() {
    let f = fleet(2);
    let (tx, rx) = watch::channel(Arc::new(vec![Instance::new(addr(0))]));
    let bal = f.builder().build(Resolution::from_watch(rx));
    let c = Client::new(bal.clone());
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { call(&c, "sleep:200", CallOptions::new()).await })
    };
    let b = bal.clone();
    tokio::time::timeout(Duration::from_secs(5), async move {
        while b.stats()[0].in_flight == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    tx.send_replace(Arc::new(vec![Instance::new(addr(1))]));
    let b = bal.clone();
    tokio::time::timeout(Duration::from_secs(5), async move {
        while b.instances()[0].address != addr(1) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert_eq!(call(&c, "x", CallOptions::new()).await.unwrap(), "s1");
    assert_eq!(
        slow.await.unwrap().unwrap(),
        "s0",
        "the call in flight on the removed instance finished"
    );
    // An empty set fails calls as UNAVAILABLE, marked not sent.
    tx.send_replace(Arc::new(Vec::new()));
    let b = bal.clone();
    tokio::time::timeout(Duration::from_secs(5), async move {
        while !b.instances().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let e = call(&c, "x", CallOptions::new()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(crate::resilience::NotSent::is(&e));
}

#[test]
fn policies_parse() {
    assert_eq!("rr".parse::<Policy>().unwrap(), Policy::RoundRobin);
    assert_eq!("p2c".parse::<Policy>().unwrap(), Policy::P2c);
    assert_eq!("hash".parse::<Policy>().unwrap(), Policy::ConsistentHash);
    assert!("random".parse::<Policy>().is_err());
}

#[tokio::test]
async fn an_instance_whose_streams_end_unavailable_is_ejected_by_its_breaker() {
    let f = fleet(2);
    let set = (0..2).map(|i| Instance::new(addr(i))).collect();
    let bal = f
        .builder()
        .instance_breaker(BreakerConfig {
            window: Duration::from_secs(10),
            min_calls: 4,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(60),
            max_open: Duration::from_secs(60),
            probes: 1,
        })
        .build(Resolution::fixed(set));
    let c = Client::new(bal.clone());
    // Round robin alternates: s0, s1, s0, s1, ... Each call fails UNAVAILABLE on its server
    // (a server saying it cannot serve), so both instances see failures.
    for _ in 0..8 {
        let e = call(&c, "fail:14", CallOptions::new()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(!crate::resilience::NotSent::is(&e), "sent, then failed");
    }
    assert_eq!(bal.ejected().len(), 2, "{:?}", bal.stats());
    // Application errors are not instance failures.
    let f = fleet(1);
    let bal = f
        .builder()
        .build(Resolution::fixed(vec![Instance::new(addr(0))]));
    let c = Client::new(bal.clone());
    for _ in 0..20 {
        let e = call(&c, "fail:5", CallOptions::new()).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    }
    assert!(bal.ejected().is_empty());
}
