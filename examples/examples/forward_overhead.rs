//! The cost of one `echo-server --forward` hop against calling the backend directly:
//!
//! ```sh
//! cargo build --release -p examples --bin echo-server --example forward_overhead
//! taskset -c 0 target/release/echo-server --listen tcp://127.0.0.1:7777 & B=$!
//! taskset -c 0 target/release/echo-server --listen tcp://127.0.0.1:7778 \
//!     --forward tcp://127.0.0.1:7777 --protocol ttheader & PT=$!
//! taskset -c 0 target/release/echo-server --listen tcp://127.0.0.1:7779 \
//!     --forward tcp://127.0.0.1:7777 --protocol grpc & PG=$!
//! taskset -c 1 target/release/examples/forward_overhead tcp://127.0.0.1:7777 \
//!     tcp://127.0.0.1:7778 tcp://127.0.0.1:7779 $B,$PT,$PG [SECONDS] [ROUNDS] [IN_FLIGHT]
//! ```
//!
//! Rows, interleaved per round: thrift unary over TTHeader and protobuf unary over gRPC,
//! each `direct` (client → backend) and `1 hop` (client → proxy → backend, the proxy relaying
//! over the same protocol). 100-byte messages, 64 calls in flight by default, one tokio worker
//! here; the servers each have one core's worth of workers (`taskset`). Prints calls/s, p50/p99
//! latency and the CPU per call of the servers (backend + proxies, from `/proc/PID/stat`) per
//! row and round, then medians and each hop row's ratio to its direct row.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::idl::{Proto, Thrift};
use examples::measure::table::median;
use examples::{EchoIdl, EchoRequest};
use rpc_core::{Address, CallOptions, Client};
use rpc_transport_grpc::GrpcClient;
use rpc_transport_ttheader::TtHeaderClient;

struct Row {
    calls_per_s: f64,
    p50: Duration,
    p99: Duration,
    server_us_per_call: f64,
}

fn servers_cpu(pids: &[u32]) -> Option<Duration> {
    pids.iter().map(|p| examples::measure::cpu_time(*p)).sum()
}

async fn run<I: EchoIdl>(client: Client, secs: f64, in_flight: usize, pids: &[u32]) -> Row {
    let client = I::client(client);
    let message = "x".repeat(100);
    let req = || EchoRequest {
        message: message.clone(),
        ..Default::default()
    };
    for _ in 0..100 {
        I::ping_pong(&client, req(), CallOptions::new())
            .await
            .expect("warm-up call");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = servers_cpu(pids);
    let start = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (client, stop, req) = (client.clone(), stop.clone(), req());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 16);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    I::ping_pong(&client, req.clone(), CallOptions::new())
                        .await
                        .expect("call");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = servers_cpu(pids);
    lat.sort_unstable();
    let n = lat.len().max(1);
    let server_s = match (cpu0, cpu1) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    Row {
        calls_per_s: lat.len() as f64 / elapsed,
        p50: lat[n / 2],
        p99: lat[(n * 99 / 100).min(n - 1)],
        server_us_per_call: server_s * 1e6 / n as f64,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(backend), Some(via_tt), Some(via_grpc), Some(pids)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        eprintln!(
            "usage: forward_overhead BACKEND_URL PROXY_TTHEADER_URL PROXY_GRPC_URL PID,PID,... [SECONDS] [ROUNDS] [IN_FLIGHT]"
        );
        std::process::exit(2);
    };
    let pids: Vec<u32> = pids.split(',').filter_map(|p| p.parse().ok()).collect();
    let secs: f64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let rounds: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(3);
    let in_flight: usize = args.get(6).and_then(|s| s.parse().ok()).unwrap_or(64);
    let addr = |s: &String| -> Address { s.parse().expect("an address") };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tt = |a: &String| Client::new(TtHeaderClient::new(addr(a)));
        let grpc = |a: &String| Client::new(GrpcClient::new(addr(a)));
        let rows: [(&str, Client, bool); 4] = [
            ("ttheader direct", tt(backend), true),
            ("ttheader 1 hop", tt(via_tt), true),
            ("grpc direct", grpc(backend), false),
            ("grpc 1 hop", grpc(via_grpc), false),
        ];
        let mut results: Vec<Vec<Row>> = (0..rows.len()).map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for (i, (name, client, thrift)) in rows.iter().enumerate() {
                let r = if *thrift {
                    run::<Thrift>(client.clone(), secs, in_flight, &pids).await
                } else {
                    run::<Proto>(client.clone(), secs, in_flight, &pids).await
                };
                println!(
                    "round {round} {name:<16} {:>9.0} calls/s  p50 {:>8.1?}  p99 {:>8.1?}  servers {:.2} us/call",
                    r.calls_per_s, r.p50, r.p99, r.server_us_per_call
                );
                results[i].push(r);
            }
        }
        println!("medians of {rounds} rounds ({in_flight} in flight, {secs} s each):");
        for (i, (name, _, _)) in rows.iter().enumerate() {
            let direct = i - i % 2;
            let med = |j: usize, f: &dyn Fn(&Row) -> f64| {
                median(results[j].iter().map(f).collect()).unwrap_or(f64::NAN)
            };
            let cps = med(i, &|r| r.calls_per_s);
            let p99 = med(i, &|r| r.p99.as_secs_f64() * 1e6);
            let cpu = med(i, &|r| r.server_us_per_call);
            println!(
                "{name:<16} {cps:>9.0} calls/s ({:.3}x direct)  p99 {p99:>7.0} us ({:.2}x)  servers {cpu:.2} us/call ({:.2}x)",
                cps / med(direct, &|r| r.calls_per_s),
                p99 / med(direct, &|r| r.p99.as_secs_f64() * 1e6),
                cpu / med(direct, &|r| r.server_us_per_call),
            );
        }
    });
}
