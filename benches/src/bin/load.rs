//! `cargo run --release -p benches --bin load [-- SECONDS]` (`LOAD_ONLY=text` runs only the rows
//! whose name contains `text`; `LOAD_PIN=1` pins the server to core 0 and this process to core 1
//! with `taskset`, one tokio worker each, and adds per-operation client and server CPU, from
//! `/proc/<pid>/stat`, and syscalls, from `perf stat -e raw_syscalls:sys_enter`, to each row)
//!
//! End-to-end load over TTHeader on loopback TCP, one connection, 100-byte messages, with the
//! echo server in a separate process (this binary re-executed with `serve`):
//!
//! * pingpong calls/s: thrift over unary TTHeader (mux) and protobuf over TTHeader Streaming,
//!   64 calls in flight, with p50/p99 latency;
//! * stream messages/s: one bidi stream, sender and receiver in separate tasks (pipelined);
//! * pingpong calls/s and bidi messages/s over gRPC (one h2 connection, same server port);
//! * the same over the in-process transport, as the framework's own ceiling.
//!
//! `LOAD_SERVER_WRAP="valgrind --tool=callgrind --callgrind-out-file=F"` starts the server
//! process under that command (not with `LOAD_PIN`): with `LOAD_ONLY` selecting one row, the
//! server's instructions divided by the row's operations (printed as `ops N`: every operation
//! the server served, not only those in the window) give a same-machine, load-independent
//! cost per operation; the difference of two runs of different lengths leaves out the
//! server's start and end.
//!
//! `LOAD_METRICS=1` records every call's metrics (`rpc_core::observe`, Prometheus recorder) in
//! both processes; `LOAD_TLS=1` runs the TTHeader rows over TLS (certificates generated at
//! start).

#![forbid(unsafe_code)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::idl::{Proto, Thrift};
use examples::{proto, thrift, EchoIdl};
use rpc_core::serve::Listener;
use rpc_core::Address;
use rpc_core::Client;
use rpc_transport_grpc::{GrpcClient, GrpcClientConfig, GrpcProtocol};
use rpc_transport_ttheader::{ConnectionMode, TtHeaderClient, TtHeaderProtocol};
use tokio::io::AsyncBufReadExt;

/// Calls in flight (`LOAD_CONCURRENCY` overrides).
fn concurrency() -> usize {
    std::env::var("LOAD_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn payload() -> String {
    "x".repeat(100)
}

struct Figures {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// Operations counted (for the per-operation costs of `LOAD_PIN`).
    ops: u64,
}

/// Whether `LOAD_PIN` asks for pinned processes and per-operation costs.
fn pinned() -> bool {
    std::env::var_os("LOAD_PIN").is_some()
}

/// User + system CPU time of process `pid` so far, in seconds (0 where unreadable).
fn cpu_secs(pid: u32) -> f64 {
    examples::measure::cpu_time(pid).map_or(0.0, |d| d.as_secs_f64())
}

/// `perf stat` counting the syscalls of `pid` until it is stopped (SIGINT).
fn count_syscalls(pid: u32) -> Option<std::process::Child> {
    Command::new("perf")
        .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p"])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()
}

/// Stops a `count_syscalls` and reads its count.
fn syscalls_counted(perf: Option<std::process::Child>) -> f64 {
    let Some(perf) = perf else { return f64::NAN };
    let _ = Command::new("kill")
        .args(["-INT", &perf.id().to_string()])
        .status();
    let Ok(out) = perf.wait_with_output() else {
        return f64::NAN;
    };
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.split(',').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Per-operation costs of one row, measured around it when `LOAD_PIN` is set.
struct Costs {
    server: u32,
    cpu: (f64, f64),
    perf: Option<(Option<std::process::Child>, Option<std::process::Child>)>,
}

impl Costs {
    fn start(server: u32) -> Costs {
        let perf = pinned().then(|| (count_syscalls(std::process::id()), count_syscalls(server)));
        if perf.is_some() {
            // perf attaches asynchronously; let it start counting before the row.
            std::thread::sleep(Duration::from_millis(300));
        }
        Costs {
            server,
            cpu: (cpu_secs(std::process::id()), cpu_secs(server)),
            perf,
        }
    }

    /// `client µs/op, server µs/op, client syscalls/op, server syscalls/op` for `ops`.
    fn finish(self, ops: u64) -> Option<String> {
        let (c1, s1) = (cpu_secs(std::process::id()), cpu_secs(self.server));
        let (pc, ps) = self.perf?;
        let n = ops.max(1) as f64;
        let (sc, ss) = (syscalls_counted(pc), syscalls_counted(ps));
        Some(format!(
            "  cpu/op client {:>5.2}µs server {:>5.2}µs  syscalls/op client {:>5.2} server {:>5.2}",
            (c1 - self.cpu.0) * 1e6 / n,
            (s1 - self.cpu.1) * 1e6 / n,
            sc / n,
            ss / n
        ))
    }
}

async fn pingpong<I: EchoIdl>(client: I::Client, secs: f64) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..concurrency() {
        let client = client.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let req = examples::EchoRequest {
                message: payload(),
                ..Default::default()
            };
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                I::ping_pong(&client, req.clone(), rpc_core::CallOptions::new())
                    .await
                    .expect("pingpong failed");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Figures {
        ops_per_sec: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        ops: all.len() as u64,
    }
}

async fn stream<I: EchoIdl>(client: I::Client, secs: f64) -> Figures {
    let call = I::echo(&client, rpc_core::CallOptions::new())
        .await
        .expect("open");
    let (mut tx, mut rx) = call.into_split();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let sender = tokio::spawn(async move {
        let req = examples::EchoRequest {
            message: payload(),
            ..Default::default()
        };
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            tx.send(req.clone().into()).await.expect("send");
            n += 1;
        }
        tx.close_send().expect("close");
        n
    });
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut received = 0u64;
    let mut at_deadline = None;
    while let Some(_m) = rx.recv().await.expect("recv") {
        received += 1;
        if at_deadline.is_none() && Instant::now() >= deadline {
            at_deadline = Some((received, start.elapsed()));
            stop.store(true, Ordering::Relaxed);
        }
    }
    let sent = sender.await.expect("sender");
    assert_eq!(sent, received, "every message echoed");
    let (n, t) = at_deadline.unwrap_or((received, start.elapsed()));
    Figures {
        ops_per_sec: n as f64 / t.as_secs_f64(),
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        ops: received,
    }
}

/// Whether the row `name` runs: all of them, or those whose name contains `LOAD_ONLY`.
fn wanted(name: &str) -> bool {
    std::env::var("LOAD_ONLY").map_or(true, |only| name.contains(only.as_str()))
}

fn row(name: &str, f: &Figures, costs: Costs) {
    let mut costs = costs.finish(f.ops).unwrap_or_default();
    if std::env::var_os("LOAD_SERVER_WRAP").is_some() {
        // The server's instructions are divided by every operation it served, warm-up included.
        costs.push_str(&format!("  ops {}", f.ops));
    }
    if f.p50.is_zero() {
        println!("{name:<44} {:>12.0}/s{costs}", f.ops_per_sec);
    } else {
        println!(
            "{name:<44} {:>12.0}/s   p50 {:>8.1?}  p99 {:>8.1?}{costs}",
            f.ops_per_sec, f.p50, f.p99
        );
    }
}

fn metrics_on() {
    if std::env::var_os("LOAD_METRICS").is_some() {
        // The handle is not rendered: the cost measured is recording.
        std::mem::forget(examples::metrics_http::install().expect("metrics recorder"));
    }
}

/// `LOAD_TLS=1`: a CA and a server certificate for 127.0.0.1, as PEM (CA, cert, key).
fn tls_pems() -> Option<(String, String, String)> {
    std::env::var_os("LOAD_TLS")?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = ca.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    Some((ca.pem(), cert.pem(), key.serialize_pem()))
}

async fn serve() {
    metrics_on();
    let listener = Listener::new(examples::server())
        .protocol(TtHeaderProtocol::default())
        .protocol(GrpcProtocol::default());
    let addr = "tcp://127.0.0.1:0".parse().expect("addr");
    let listener = match std::env::var("LOAD_TLS_PEMS") {
        Ok(pems) => {
            let mut parts = pems.split("\n--CUT--\n");
            let (cert, key) = (parts.next().expect("cert"), parts.next().expect("key"));
            let tls = rpc_core::net::TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes())
                .expect("tls");
            listener.bind_tls(addr, tls).await
        }
        Err(_) => listener.bind(addr).await,
    };
    let h = listener.expect("listen").start();
    println!("{}", h.local_addrs()[0]);
    // Serve until the parent closes our stdin.
    let mut line = String::new();
    let _ = tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
    h.shutdown(Duration::from_millis(100)).await;
}

/// One tokio worker with `LOAD_PIN` (each process has one core), the default otherwise. Every
/// row runs on the workers (spawned), not on the thread that blocks on the runtime: a stream
/// row's receiving loop there would wake across threads on every message.
fn main() {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if pinned() {
        rt.worker_threads(1);
    }
    rt.enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async { tokio::spawn(run()).await })
        .expect("load run");
}

async fn run() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve().await;
    }
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    metrics_on();
    let pems = tls_pems();
    let exe = std::env::current_exe().expect("exe");
    let mut server = if pinned() {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1"])
            .arg(std::process::id().to_string())
            .stdout(Stdio::null())
            .status();
        let mut c = Command::new("taskset");
        c.arg("-c").arg("0").arg(exe);
        c
    } else if let Ok(wrap) = std::env::var("LOAD_SERVER_WRAP") {
        let mut words = wrap.split_whitespace();
        let mut c = Command::new(words.next().expect("wrapper"));
        c.args(words).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    if let Some((_, cert, key)) = &pems {
        server.env("LOAD_TLS_PEMS", format!("{cert}\n--CUT--\n{key}"));
    }
    let client_tls = pems.as_ref().map(|(ca, _, _)| {
        rpc_core::net::TlsClientConfig::from_ca_pem(ca.as_bytes()).expect("client tls")
    });
    let mut child = server
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    // Startup only: a blocking read of the child's first line is fine here.
    let mut addr = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut addr,
    )
    .expect("server address");
    let addr: Address = addr.trim().parse().expect("address");
    let server = child.id();

    println!(
        "TTHeader over loopback TCP{}{}, server in another process, 1 connection, 100-byte messages, {secs}s each",
        if pems.is_some() { " + TLS" } else { "" },
        if std::env::var_os("LOAD_METRICS").is_some() { ", metrics on" } else { "" },
    );
    let tt = |mode| {
        let b = TtHeaderClient::builder(addr.clone())
            .pool_size(1)
            .connection_mode(mode);
        let b = match &client_tls {
            Some(t) => b.tls(t.clone()),
            None => b,
        };
        Client::new(b.build())
    };
    if wanted("pingpong thrift, unary TTHeader mux") {
        let c = Costs::start(server);
        let f = pingpong::<Thrift>(
            thrift::TestServiceClient::new(tt(ConnectionMode::Multiplexed)),
            secs,
        )
        .await;
        row("pingpong thrift, unary TTHeader mux", &f, c);
    }
    if wanted("pingpong protobuf, TTHeader Streaming") {
        let c = Costs::start(server);
        let f = pingpong::<Proto>(
            proto::TestServiceClient::new(tt(ConnectionMode::Multiplexed)),
            secs,
        )
        .await;
        row("pingpong protobuf, TTHeader Streaming", &f, c);
    }
    if wanted("bidi stream thrift, messages echoed") {
        let c = Costs::start(server);
        let f = stream::<Thrift>(
            thrift::TestServiceClient::new(tt(ConnectionMode::Multiplexed)),
            secs,
        )
        .await;
        row("bidi stream thrift, messages echoed", &f, c);
    }
    if wanted("bidi stream protobuf, messages echoed") {
        let c = Costs::start(server);
        let f = stream::<Proto>(
            proto::TestServiceClient::new(tt(ConnectionMode::Multiplexed)),
            secs,
        )
        .await;
        row("bidi stream protobuf, messages echoed", &f, c);
    }
    let grpc = || {
        Client::new(GrpcClient::with_config(
            addr.clone(),
            GrpcClientConfig::default().connections(1),
        ))
    };
    if wanted("pingpong protobuf, gRPC") {
        let c = Costs::start(server);
        let f = pingpong::<Proto>(proto::TestServiceClient::new(grpc()), secs).await;
        row("pingpong protobuf, gRPC", &f, c);
    }
    if wanted("pingpong thrift, gRPC") {
        let c = Costs::start(server);
        let f = pingpong::<Thrift>(thrift::TestServiceClient::new(grpc()), secs).await;
        row("pingpong thrift, gRPC", &f, c);
    }
    if wanted("pingpong protobuf, gRPC, 4 connections") {
        let four = Client::new(GrpcClient::new(addr.clone()));
        let c = Costs::start(server);
        let f = pingpong::<Proto>(proto::TestServiceClient::new(four), secs).await;
        row("pingpong protobuf, gRPC, 4 connections", &f, c);
    }
    if wanted("bidi stream protobuf, gRPC") {
        let c = Costs::start(server);
        let f = stream::<Proto>(proto::TestServiceClient::new(grpc()), secs).await;
        row("bidi stream protobuf, gRPC", &f, c);
    }

    let inproc = Client::new(rpc_core::inproc::InProcTransport::new(examples::server()));
    if wanted("in-process pingpong thrift") {
        let c = Costs::start(server);
        let f = pingpong::<Thrift>(thrift::TestServiceClient::new(inproc.clone()), secs).await;
        row("in-process pingpong thrift", &f, c);
    }
    if wanted("in-process bidi stream thrift") {
        let c = Costs::start(server);
        let f = stream::<Thrift>(thrift::TestServiceClient::new(inproc), secs).await;
        row("in-process bidi stream thrift", &f, c);
    }

    drop(child.stdin.take());
    let _ = child.wait();
}
