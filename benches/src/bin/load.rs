//! `cargo run --release -p benches --bin load [-- SECONDS]` (`LOAD_ONLY=text` runs only the rows
//! whose name contains `text`)
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
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol, UnaryMode};
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
    }
}

/// Whether the row `name` runs: all of them, or those whose name contains `LOAD_ONLY`.
fn wanted(name: &str) -> bool {
    std::env::var("LOAD_ONLY").map_or(true, |only| name.contains(only.as_str()))
}

fn row(name: &str, f: &Figures) {
    if f.p50.is_zero() {
        println!("{name:<44} {:>12.0}/s", f.ops_per_sec);
    } else {
        println!(
            "{name:<44} {:>12.0}/s   p50 {:>8.1?}  p99 {:>8.1?}",
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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve().await;
    }
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    metrics_on();
    let pems = tls_pems();
    let mut server = Command::new(std::env::current_exe().expect("exe"));
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

    println!(
        "TTHeader over loopback TCP{}{}, server in another process, 1 connection, 100-byte messages, {secs}s each",
        if pems.is_some() { " + TLS" } else { "" },
        if std::env::var_os("LOAD_METRICS").is_some() { ", metrics on" } else { "" },
    );
    let tt = |mode| {
        let b = TtHeaderClient::builder(addr.clone())
            .pool_size(1)
            .unary_mode(mode);
        let b = match &client_tls {
            Some(t) => b.tls(t.clone()),
            None => b,
        };
        Client::new(b.build())
    };
    if wanted("pingpong thrift, unary TTHeader mux") {
        let f = pingpong::<Thrift>(thrift::TestServiceClient::new(tt(UnaryMode::Mux)), secs).await;
        row("pingpong thrift, unary TTHeader mux", &f);
    }
    if wanted("pingpong protobuf, TTHeader Streaming") {
        let f = pingpong::<Proto>(proto::TestServiceClient::new(tt(UnaryMode::Mux)), secs).await;
        row("pingpong protobuf, TTHeader Streaming", &f);
    }
    if wanted("bidi stream thrift, messages echoed") {
        let f = stream::<Thrift>(thrift::TestServiceClient::new(tt(UnaryMode::Mux)), secs).await;
        row("bidi stream thrift, messages echoed", &f);
    }
    if wanted("bidi stream protobuf, messages echoed") {
        let f = stream::<Proto>(proto::TestServiceClient::new(tt(UnaryMode::Mux)), secs).await;
        row("bidi stream protobuf, messages echoed", &f);
    }
    let grpc = || {
        Client::new(GrpcClient::with_config(
            addr.clone(),
            GrpcClientConfig::default().connections(1),
        ))
    };
    if wanted("pingpong protobuf, gRPC") {
        let f = pingpong::<Proto>(proto::TestServiceClient::new(grpc()), secs).await;
        row("pingpong protobuf, gRPC", &f);
    }
    if wanted("pingpong thrift, gRPC") {
        let f = pingpong::<Thrift>(thrift::TestServiceClient::new(grpc()), secs).await;
        row("pingpong thrift, gRPC", &f);
    }
    if wanted("pingpong protobuf, gRPC, 4 connections") {
        let four = Client::new(GrpcClient::new(addr.clone()));
        let f = pingpong::<Proto>(proto::TestServiceClient::new(four), secs).await;
        row("pingpong protobuf, gRPC, 4 connections", &f);
    }
    if wanted("bidi stream protobuf, gRPC") {
        let f = stream::<Proto>(proto::TestServiceClient::new(grpc()), secs).await;
        row("bidi stream protobuf, gRPC", &f);
    }

    let inproc = Client::new(rpc_core::inproc::InProcTransport::new(examples::server()));
    if wanted("in-process pingpong thrift") {
        let f = pingpong::<Thrift>(thrift::TestServiceClient::new(inproc.clone()), secs).await;
        row("in-process pingpong thrift", &f);
    }
    if wanted("in-process bidi stream thrift") {
        let f = stream::<Thrift>(thrift::TestServiceClient::new(inproc), secs).await;
        row("in-process bidi stream thrift", &f);
    }

    drop(child.stdin.take());
    let _ = child.wait();
}
