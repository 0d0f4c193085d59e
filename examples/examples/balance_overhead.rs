//! The cost of a balanced call against a direct one, against one running `echo-server`:
//!
//! ```sh
//! cargo build --release -p examples --bin echo-server --example balance_overhead
//! taskset -c 0 target/release/echo-server --listen tcp://127.0.0.1:7777 & SERVER=$!
//! taskset -c 1 target/release/examples/balance_overhead tcp://127.0.0.1:7777 $SERVER [SECONDS] [ROUNDS]
//! ```
//!
//! Rows, interleaved per round: `direct` (a client over one `TtHeaderClient`), `balanced rr`
//! and `balanced p2c` (a [`Balanced`] transport over a static resolution holding that one
//! instance: the whole balancer path — pick, per-stream tracking, breaker bookkeeping — with
//! nothing else changed). Thrift unary, 100-byte messages, 64 calls in flight, one tokio
//! worker. Prints calls/s, p50/p99 latency and the server's and this client's CPU per call
//! (from `/proc/PID/stat`, `/proc/self/stat`) per row and round, then medians.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::idl::Thrift;
use examples::{EchoIdl, EchoRequest};
use rpc_core::balance::{Balanced, Policy};
use rpc_core::discovery::Resolution;
use rpc_core::{Address, CallOptions, Client};
use rpc_transport_ttheader::TtHeaderClient;

const IN_FLIGHT: usize = 64;

/// CPU time so far of process `pid` (a number, or `self`).
fn cpu_ticks(pid: &str) -> Option<Duration> {
    let pid = if pid == "self" {
        std::process::id()
    } else {
        pid.parse().ok()?
    };
    examples::measure::cpu_time(pid)
}

struct Row {
    calls_per_s: f64,
    p50: Duration,
    p99: Duration,
    server_us_per_call: f64,
    client_us_per_call: f64,
}

async fn run(client: Client, secs: f64, server_pid: &str) -> Row {
    let client = Thrift::client(client);
    let message = "x".repeat(100);
    // Warm the connections.
    for _ in 0..100 {
        let req = EchoRequest {
            message: message.clone(),
            ..Default::default()
        };
        Thrift::ping_pong(&client, req, CallOptions::new())
            .await
            .expect("warm-up call");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ticks0 = cpu_ticks(server_pid);
    let own0 = cpu_ticks("self");
    let start = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, stop, message) = (client.clone(), stop.clone(), message.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 16);
                while !stop.load(Ordering::Relaxed) {
                    let req = EchoRequest {
                        message: message.clone(),
                        ..Default::default()
                    };
                    let t = Instant::now();
                    Thrift::ping_pong(&client, req, CallOptions::new())
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
    let ticks1 = cpu_ticks(server_pid);
    let own1 = cpu_ticks("self");
    lat.sort_unstable();
    let n = lat.len().max(1);
    let server_s = match (ticks0, ticks1) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    let client_s = match (own0, own1) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    Row {
        calls_per_s: lat.len() as f64 / elapsed,
        p50: lat[n / 2],
        p99: lat[(n * 99 / 100).min(n - 1)],
        server_us_per_call: server_s * 1e6 / n as f64,
        client_us_per_call: client_s * 1e6 / n as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(pid)) = (args.first(), args.get(1)) else {
        eprintln!("usage: balance_overhead tcp://HOST:PORT SERVER_PID [SECONDS] [ROUNDS]");
        std::process::exit(2);
    };
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let address: Address = addr.parse().expect("an address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let direct = Client::new(TtHeaderClient::new(address.clone()));
        let rr = Client::new(Balanced::connect::<TtHeaderClient>(
            Resolution::fixed(vec![rpc_core::discovery::Instance::new(address.clone())]),
            Policy::RoundRobin,
        ));
        let p2c = Client::new(Balanced::connect::<TtHeaderClient>(
            Resolution::fixed(vec![rpc_core::discovery::Instance::new(address.clone())]),
            Policy::P2c,
        ));
        let rows: [(&str, &Client); 3] = [("direct", &direct), ("balanced rr", &rr), ("balanced p2c", &p2c)];
        let mut results: Vec<Vec<Row>> = (0..rows.len()).map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for (i, (name, client)) in rows.iter().enumerate() {
                let r = run((*client).clone(), secs, pid).await;
                println!(
                    "round {round} {name:<13} {:>9.0} calls/s  p50 {:>8.1?}  p99 {:>8.1?}  server {:.2} us/call  client {:.2} us/call",
                    r.calls_per_s, r.p50, r.p99, r.server_us_per_call, r.client_us_per_call
                );
                results[i].push(r);
            }
        }
        println!("medians of {rounds} rounds ({IN_FLIGHT} in flight, {secs} s each):");
        let base = median(results[0].iter().map(|r| r.calls_per_s).collect());
        for (i, (name, _)) in rows.iter().enumerate() {
            let cps = median(results[i].iter().map(|r| r.calls_per_s).collect());
            let p99 = median(results[i].iter().map(|r| r.p99.as_secs_f64() * 1e6).collect());
            let cpu = median(results[i].iter().map(|r| r.server_us_per_call).collect());
            let own = median(results[i].iter().map(|r| r.client_us_per_call).collect());
            println!(
                "{name:<13} {cps:>9.0} calls/s ({:.3}x direct)  p99 {p99:>7.0} us  server {cpu:.2} us/call  client {own:.2} us/call",
                cps / base
            );
        }
    });
}
