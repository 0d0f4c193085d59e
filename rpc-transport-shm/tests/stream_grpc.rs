//! Our own transports over `ShmStream`: one `rpc_core::serve::Listener` serves gRPC and
//! TTHeader on shared-memory byte streams (`Listener::incoming` fed by a
//! `ShmStreamListener`) and on a Unix socket; `GrpcClient` and `TtHeaderClient` reach the
//! shared-memory side through the stream connector (`ConnectOptions::connector`). Unary and
//! bidirectional calls work byte-exactly on both, and the same load is measured on both and
//! printed (`-- --nocapture`, `--release` for meaningful figures; never asserted).
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use rpc_core::codec::Codec;
use rpc_core::net::ConnectOptions;
use rpc_core::serve::Listener;
use rpc_core::transport::BoxFuture;
use rpc_core::{
    Address, CallOptions, Client, IncomingCall, MethodDesc, Mode, PayloadKind, Server, Service,
    ServiceDesc, Status,
};
use rpc_transport_grpc::{GrpcClient, GrpcClientConfig, GrpcProtocol};
use rpc_transport_shm::{stream, ShmStreamListener};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

const DEADLINE: Duration = Duration::from_secs(60);
/// Debug builds (the CI run) measure a tenth of the calls in one round: the figures only mean
/// something with `--release`, and the calls are there to be correct.
const SCALE: usize = if cfg!(debug_assertions) { 10 } else { 1 };
const ROUNDS: usize = if cfg!(debug_assertions) { 1 } else { 3 };

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

static METHODS: [MethodDesc; 2] = [
    MethodDesc {
        package: "t",
        service: "Echo",
        full_service: "t.Echo",
        name: "Unary",
        path: "/t.Echo/Unary",
        mode: Mode::Unary,
        payload: PayloadKind::Protobuf,
    },
    MethodDesc {
        package: "t",
        service: "Echo",
        full_service: "t.Echo",
        name: "Bidi",
        path: "/t.Echo/Bidi",
        mode: Mode::Bidi,
        payload: PayloadKind::Protobuf,
    },
];
static DESC: ServiceDesc = ServiceDesc {
    package: "t",
    name: "Echo",
    full_name: "t.Echo",
    methods: &METHODS,
};

struct Echo;

impl Service for Echo {
    fn descriptor(&self) -> &'static ServiceDesc {
        &DESC
    }
    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        if call.method_index() == 0 {
            Box::pin(call.unary::<Raw, Bytes, Bytes, _, _>(|_, req| async move { Ok(req) }))
        } else {
            Box::pin(call.bidi::<Raw, Bytes, Bytes, _, _>(|_, mut s| async move {
                while let Some(m) = s.recv().await? {
                    s.send(m).await?;
                }
                Ok(())
            }))
        }
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {DEADLINE:?}"))
}

fn payload(n: usize, seed: u8) -> Bytes {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn unary(c: &Client, m: Bytes) -> Bytes {
    c.unary::<Raw, Bytes, Bytes>(&METHODS[0], m, CallOptions::new())
        .await
        .expect("unary call")
        .into_inner()
}

/// Unary calls of several sizes, a bidi stream, and concurrent calls: byte-exact.
async fn exercise(c: &Client, name: &str) {
    for (i, n) in [0usize, 1, 64, 4096, 100_000, 1 << 20, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let m = payload(n, i as u8);
        assert!(unary(c, m.clone()).await == m, "{name}: unary {n} bytes");
    }
    let mut bidi = c
        .bidi::<Raw, Bytes, Bytes>(&METHODS[1], CallOptions::new())
        .await
        .expect("bidi");
    for i in 0..200 {
        let m = payload([1, 10, 100, 1000, 20_000][i % 5], i as u8);
        bidi.send(m.clone()).await.expect("send");
        let got = bidi.recv().await.expect("recv").expect("an echo");
        assert!(got == m, "{name}: bidi message {i}");
    }
    bidi.close_send().expect("close");
    assert!(bidi.recv().await.expect("end").is_none());
    let calls = (0..16).map(|i| async move {
        let m = payload(10_000 + i * 1000, i as u8);
        assert!(
            unary(c, m.clone()).await == m,
            "{name}: concurrent call {i}"
        );
    });
    futures::future::join_all(calls).await;
}

struct Figures {
    p50: Duration,
    p99: Duration,
    small_per_s: f64,
    mib_per_s: f64,
    par_per_s: f64,
}

async fn measure(c: &Client) -> Figures {
    let small = payload(64, 1);
    for _ in 0..200 / SCALE {
        unary(c, small.clone()).await;
    }
    let n = 3000 / SCALE;
    let mut lat = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        unary(c, small.clone()).await;
        lat.push(t.elapsed());
    }
    let small_per_s = n as f64 / started.elapsed().as_secs_f64();
    lat.sort();
    // 16 callers at once, 64 B each.
    let started = Instant::now();
    let per = 500 / SCALE;
    let callers = (0..16).map(|_| {
        let small = small.clone();
        async move {
            for _ in 0..per {
                unary(c, small.clone()).await;
            }
        }
    });
    futures::future::join_all(callers).await;
    let par_per_s = (16 * per) as f64 / started.elapsed().as_secs_f64();
    let big = payload(1 << 20, 2);
    let started = Instant::now();
    let calls = 100 / SCALE;
    for _ in 0..calls {
        unary(c, big.clone()).await;
    }
    let mib_per_s = (2 * calls) as f64 / started.elapsed().as_secs_f64();
    Figures {
        p50: lat[n / 2],
        p99: lat[n * 99 / 100],
        small_per_s,
        mib_per_s,
        par_per_s,
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<24}: 64 B unary p50 {:>6.1} µs, p99 {:>6.1} µs, {:>6.0}/s sequential, {:>6.0}/s with 16 callers; 1 MiB unary {:>5.0} MiB/s (both ways)",
        f.p50.as_secs_f64() * 1e6,
        f.p99.as_secs_f64() * 1e6,
        f.small_per_s,
        f.par_per_s,
        f.mib_per_s
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_ttheader_over_shm_streams_and_unix_sockets() {
    let pid = std::process::id();
    let shm_path = std::env::temp_dir().join(format!("rpc-shm-grpc-{pid}.shm"));
    let uds_path = std::env::temp_dir().join(format!("rpc-shm-grpc-{pid}.sock"));
    let server = Server::builder().add_service(Echo).build();
    let streams = ShmStreamListener::bind(&shm_path).expect("bind shm");
    let running = Listener::new(server)
        .protocol(GrpcProtocol::default())
        .protocol(TtHeaderProtocol::default())
        .incoming(Address::shm(&shm_path), streams.into_incoming())
        .bind(Address::Unix(uds_path.clone()))
        .await
        .expect("bind unix")
        .start();

    let grpc_shm = Client::new(GrpcClient::with_config(
        Address::shm(&shm_path),
        GrpcClientConfig::default().connector(stream::connector()),
    ));
    let grpc_uds = Client::new(GrpcClient::new(Address::Unix(uds_path.clone())));
    let tt_shm = Client::new(
        TtHeaderClient::builder(Address::shm(&shm_path))
            .connect_options(ConnectOptions::new().connector(Some(stream::connector())))
            .build(),
    );
    let tt_uds = Client::new(TtHeaderClient::new(Address::Unix(uds_path.clone())));

    let clients = [
        ("gRPC over ShmStream", &grpc_shm),
        ("gRPC over Unix socket", &grpc_uds),
        ("TTHeader over ShmStream", &tt_shm),
        ("TTHeader over Unix socket", &tt_uds),
    ];
    for (name, c) in clients {
        let t = Instant::now();
        within(name, exercise(c, name)).await;
        println!("{name}: calls work ({:?})", t.elapsed());
    }
    // Three rounds, the clients taking turns, so that load from elsewhere on the machine
    // falls on all of them alike (compare within a round).
    for round in 1..=ROUNDS {
        println!("round {round}");
        for (name, c) in clients {
            let f = within(name, measure(c)).await;
            print(name, &f);
        }
    }
    drop((grpc_shm, grpc_uds, tt_shm, tt_uds));
    within("shutdown", running.shutdown(Duration::from_secs(5))).await;
    assert!(
        !shm_path.exists(),
        "the stream listener's socket file is removed at shutdown"
    );
}
