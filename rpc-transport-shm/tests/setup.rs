//! Session set-up: a fresh client's first call works at once, and fresh clients one after
//! another leave nothing behind — no live session on either side, no region bytes or byte
//! budget still charged on the server, no descriptor and no mapping of a region left open in
//! the process (client and server both run here; this file is its own test process, so the
//! process-wide counts are ours alone).
#![cfg(target_os = "linux")]

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use rpc_core::codec::Codec;
use rpc_core::serve::Listener;
use rpc_core::transport::{BoxFuture, ServerExt};
use rpc_core::{
    Address, CallOptions, Client, IncomingCall, MethodDesc, Mode, PayloadKind, Server, Service,
    ServiceDesc, Status,
};
use rpc_transport_shm::{ShmClient, ShmProtocol};

struct Raw;

impl Codec<Bytes> for Raw {
    const NAME: &'static str = "raw";
    fn encode<B: BufMut + ?Sized>(msg: &Bytes, dst: &mut B) -> Result<(), Status> {
        dst.put_slice(msg);
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Bytes, Status> {
        Ok(src)
    }
    fn encoded_len(msg: &Bytes) -> Option<usize> {
        Some(msg.len())
    }
}

static METHODS: [MethodDesc; 1] = [MethodDesc {
    package: "t",
    service: "Setup",
    full_service: "t.Setup",
    name: "Echo",
    path: "/t.Setup/Echo",
    mode: Mode::Unary,
    payload: PayloadKind::Protobuf,
}];
static DESC: ServiceDesc = ServiceDesc {
    package: "t",
    name: "Setup",
    full_name: "t.Setup",
    methods: &METHODS,
};

struct Echo;

impl Service for Echo {
    fn descriptor(&self) -> &'static ServiceDesc {
        &DESC
    }
    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        Box::pin(call.unary::<Raw, Bytes, Bytes, _, _>(|_, req| async move { Ok(req) }))
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// Polls `f` until it holds, for at most [`WAIT`].
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let ok = tokio::time::timeout(WAIT, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(ok.is_ok() && f(), "{what}");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Mappings of session regions (memfds are named `rpc-shm`).
fn region_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().filter(|l| l.contains("memfd:rpc-shm")).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_clients_answer_their_first_call_and_leave_nothing_behind_even_dropped_mid_setup() {
    let path = std::env::temp_dir().join(format!("rpc-shm-setup-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let protocol = ShmProtocol::default();
    let server_stats = protocol.stats().clone();
    // Room for three clients of four sessions (32 MiB of budget each): a client dropped
    // during its pool's set-up closes its sessions a moment later, and on a loaded machine the
    // next client's first handshake can come before they are gone. The default budget (about
    // seven sessions) would then refuse it as busy, which is the budget's job, not this test's.
    let limits = rpc_core::ServerLimits::default().max_buffered_bytes(384 << 20);
    let server = Server::builder().limits(limits).add_service(Echo).build();
    let budget = Arc::clone(server.byte_budget());
    let running = Listener::new(server)
        .protocol(protocol.clone())
        .bind(rpc_core::Address::Shm(path.clone()))
        .await
        .expect("bind")
        .start();

    let fds = open_fds();
    assert_eq!(region_mappings(), 0);
    for i in 0..20u8 {
        // Default pool (two sessions): the first call opens one, the other opens behind it.
        let shm = ShmClient::new(Address::shm(&path));
        let stats = shm.stats().clone();
        let client = Client::new(shm);
        let m = Bytes::from(vec![i; 300]);
        let reply = tokio::time::timeout(
            WAIT,
            client.unary::<Raw, Bytes, Bytes>(&METHODS[0], m.clone(), CallOptions::new()),
        )
        .await
        .expect("first call in time")
        .expect("first call");
        assert_eq!(reply.into_inner(), m, "client {i}");
        // The second pool slot's session opens in the background; wait for it so the drop
        // below races with nothing (a drop during its handshake is the next test's case).
        eventually("the pool's second session", || stats.live_sessions() == 2).await;
        drop(client);
        eventually("client sessions closed", || stats.live_sessions() == 0).await;
    }
    eventually("server sessions closed", || {
        server_stats.live_sessions() == 0
    })
    .await;
    eventually("region budget returned", || protocol.region_bytes() == 0).await;
    eventually("byte budget returned", || budget.used() == 0).await;
    eventually("region mappings unmapped", || region_mappings() == 0).await;
    eventually("descriptors closed", || open_fds() <= fds).await;

    // Clients dropped right after their first reply, while the rest of their pool is still
    // being opened in the background: those handshakes finish and close what they opened.
    for i in 0..20u8 {
        let shm = ShmClient::builder(Address::shm(&path)).pool_size(4).build();
        let client = Client::new(shm);
        let m = Bytes::from(vec![i; 10]);
        let reply = tokio::time::timeout(
            WAIT,
            client.unary::<Raw, Bytes, Bytes>(&METHODS[0], m.clone(), CallOptions::new()),
        )
        .await
        .expect("first call in time")
        .expect("first call");
        assert_eq!(reply.into_inner(), m);
        drop(client);
    }
    eventually("server sessions closed", || {
        server_stats.live_sessions() == 0
    })
    .await;
    eventually("region budget returned", || protocol.region_bytes() == 0).await;
    eventually("byte budget returned", || budget.used() == 0).await;
    eventually("region mappings unmapped", || region_mappings() == 0).await;
    eventually("descriptors closed", || open_fds() <= fds).await;
    drop(running);
}
