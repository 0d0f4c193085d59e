//! The benchmark itself (Linux: memfd, eventfd, taskset); see `main.rs`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use rpc_core::codec::Codec;
use rpc_core::serve::Listener;
use rpc_core::transport::BoxFuture;
use rpc_core::{
    CallOptions, Client, IncomingCall, MethodDesc, Mode, PayloadKind, Server, Service, ServiceDesc,
    Status,
};

const KINDS: [&str; 4] = ["shm", "uds", "shmipc-v3", "shmipc-v4e"];
const STREAMS: usize = 16;

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
    package: "b",
    service: "Blob",
    full_service: "b.Blob",
    name: "Chat",
    path: "/b.Blob/Chat",
    mode: Mode::Bidi,
    payload: PayloadKind::Protobuf,
}];
static DESC: ServiceDesc = ServiceDesc {
    package: "b",
    name: "Blob",
    full_name: "b.Blob",
    methods: &METHODS,
};

struct Blob;

impl Service for Blob {
    fn descriptor(&self) -> &'static ServiceDesc {
        &DESC
    }
    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        // Echo: encoding the reply reads every request byte and writes every reply byte.
        Box::pin(call.bidi::<Raw, Bytes, Bytes, _, _>(|_, mut s| async move {
            while let Some(m) = s.recv().await? {
                s.send(m).await?;
            }
            Ok(())
        }))
    }
}

fn checksum(b: &[u8]) -> u64 {
    b.chunks(8).fold(0u64, |a, c| {
        let mut x = [0u8; 8];
        x[..c.len()].copy_from_slice(c);
        a.wrapping_add(u64::from_le_bytes(x))
    })
}

fn payload(size: usize, seed: u64) -> Vec<u8> {
    (0..size).map(|i| (i as u64 ^ seed) as u8).collect()
}

pub(crate) fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        return serve(&args[2], &args[3]);
    }
    if args.get(1).map(String::as_str) == Some("--client") {
        return client(&args[2], &args[3], &args[4], &args[5], &args[6]);
    }
    if args.get(1).map(String::as_str) == Some("--serve-echo") {
        return serve_echo(&args[2], &args[3]);
    }
    if args.get(1).map(String::as_str) == Some("--setup-client") {
        return setup_client(&args[2], &args[3], &args[4]);
    }
    if let Some(i) = args.iter().position(|a| a == "--setup") {
        let n = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(SETUP_CLIENTS);
        return setup(n);
    }
    let mut secs = 2.0f64;
    let mut runs = 3usize;
    let mut sizes = vec![64usize, 4096, 65536, 1 << 20];
    let mut only: Option<String> = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            "--sizes" => {
                sizes = it
                    .next()
                    .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
                    .unwrap_or(sizes)
            }
            "--only" => only = it.next().cloned(),
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    let pin = Command::new("taskset").arg("-V").output().is_ok();
    if !pin {
        eprintln!("taskset not found: running unpinned");
    }
    // (kind, size) -> per-run (p50 µs, p99 µs, round trips/s, server and client µs CPU per
    // round trip)
    let mut results: BTreeMap<(usize, usize), Vec<[f64; 5]>> = BTreeMap::new();
    for run in 0..runs {
        for &size in &sizes {
            for (k, kind) in KINDS.iter().enumerate() {
                if only
                    .as_deref()
                    .is_some_and(|o| !o.split(',').any(|o| o == *kind))
                {
                    continue;
                }
                match one_row(kind, size, secs, pin) {
                    Ok(r) => {
                        eprintln!(
                            "run {run} {kind:>10} {size:>8} B: p50 {:>8.1} µs p99 {:>8.1} µs  16 streams {:>9.0}/s  server {:.2} µs/rt  client {:.2} µs/rt",
                            r[0], r[1], r[2], r[3], r[4]
                        );
                        results.entry((size, k)).or_default().push(r);
                    }
                    Err(e) => eprintln!("run {run} {kind} {size}: {e}"),
                }
            }
        }
    }
    println!("\nmedians of {runs} runs, {secs} s per scenario (client core 0, server core 1, one tokio worker each)");
    println!(
        "| size | transport | 1 stream p50 µs | p99 µs | 16 streams rt/s | server CPU µs/rt | client CPU µs/rt | vs uds (rt/s) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &size in &sizes {
        let uds = results.get(&(size, 1)).map(|v| median(v, 2));
        for (k, kind) in KINDS.iter().enumerate() {
            let Some(v) = results.get(&(size, k)) else {
                continue;
            };
            let ratio = uds.map(|u| median(v, 2) / u).unwrap_or(f64::NAN);
            println!(
                "| {} | {kind} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2}× |",
                human(size),
                median(v, 0),
                median(v, 1),
                median(v, 2),
                median(v, 3),
                median(v, 4),
                ratio
            );
        }
    }
}

fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn median(v: &[[f64; 5]], i: usize) -> f64 {
    let mut x: Vec<f64> = v.iter().map(|r| r[i]).collect();
    x.sort_by(|a, b| a.total_cmp(b));
    x[x.len() / 2]
}

fn one_row(kind: &str, size: usize, secs: f64, pin: bool) -> Result<[f64; 5], String> {
    let path =
        std::env::temp_dir().join(format!("rpc-shm-bench-{}-{kind}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let spawn = |core: &str, args: &[&str]| {
        let mut c = if pin {
            let mut c = Command::new("taskset");
            c.args(["-c", core]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        c.args(args).stdout(Stdio::piped()).spawn()
    };
    let p = path.to_string_lossy().into_owned();
    let mut server = spawn("1", &["--serve", kind, &p]).map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(server.stdout.take().ok_or("stdout")?).lines();
    match lines.next() {
        Some(Ok(l)) if l == "ready" => {}
        other => {
            let _ = server.kill();
            return Err(format!("server did not start: {other:?}"));
        }
    }
    let out = spawn(
        "0",
        &[
            "--client",
            kind,
            &p,
            &size.to_string(),
            &secs.to_string(),
            &server.id().to_string(),
        ],
    )
    .and_then(|c| c.wait_with_output());
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&path);
    let out = out.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let diag = String::from_utf8_lossy(&out.stderr);
    if !diag.trim().is_empty() {
        eprint!("{diag}");
    }
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .ok_or_else(|| {
            format!(
                "client failed: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let v: Vec<f64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
    v.try_into().map_err(|_| format!("bad result line {line}"))
}

/// Fresh clients the set-up scenario times by default.
const SETUP_CLIENTS: usize = 100;

/// The set-up scenario (`--setup [N]`): N fresh clients, one at a time, each timed from its
/// creation to the reply of its first `PingPong` (the echo service `echo-client --mode
/// unary` calls, protobuf flavour). Our shm client with its default pool, against
/// TTHeader over a Unix socket; server on core 1, client on core 0 as in the other rows.
fn setup(n: usize) {
    let pin = Command::new("taskset").arg("-V").output().is_ok();
    println!("\nset-up: {n} fresh clients one at a time, creation to first unary reply");
    println!("| transport | median ms | p90 ms | max ms |");
    println!("|---|---|---|---|");
    for kind in ["shm", "uds"] {
        match setup_row(kind, n, pin) {
            Ok(v) => println!("| {kind} | {:.3} | {:.3} | {:.3} |", v[0], v[1], v[2]),
            Err(e) => eprintln!("set-up {kind}: {e}"),
        }
    }
}

fn setup_row(kind: &str, n: usize, pin: bool) -> Result<Vec<f64>, String> {
    let path = std::env::temp_dir().join(format!(
        "rpc-shm-bench-setup-{}-{kind}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let spawn = |core: &str, args: &[&str]| {
        let mut c = if pin {
            let mut c = Command::new("taskset");
            c.args(["-c", core]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        c.args(args).stdout(Stdio::piped()).spawn()
    };
    let p = path.to_string_lossy().into_owned();
    let mut server = spawn("1", &["--serve-echo", kind, &p]).map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(server.stdout.take().ok_or("stdout")?).lines();
    if !matches!(lines.next(), Some(Ok(l)) if l == "ready") {
        let _ = server.kill();
        return Err("server did not start".into());
    }
    let out = spawn("0", &["--setup-client", kind, &p, &n.to_string()])
        .and_then(|c| c.wait_with_output());
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&path);
    let out = out.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .ok_or_else(|| {
            format!(
                "client failed: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok(line.split(' ').filter_map(|x| x.parse().ok()).collect())
}

fn serve_echo(kind: &str, path: &str) {
    rt().block_on(serve_until_killed(examples::server(), kind, path));
}

/// Serves `server` on `shm://path` (`kind` "shm") or TTHeader over the Unix socket `path`,
/// says "ready", and runs until the process is killed.
async fn serve_until_killed(server: Server, kind: &str, path: &str) {
    let listener = Listener::new(server);
    let running = if kind == "shm" {
        listener
            .protocol(rpc_transport_shm::ShmProtocol::default())
            .bind(rpc_core::Address::Shm(path.into()))
            .await
    } else {
        listener
            .protocol(rpc_transport_ttheader::TtHeaderProtocol::default())
            .bind(rpc_core::Address::unix(path))
            .await
    }
    .expect("bind")
    .start();
    println!("ready");
    std::future::pending::<()>().await;
    drop(running);
}

fn setup_client(kind: &str, path: &str, n: &str) {
    use examples::idl::Proto;
    use examples::EchoIdl;
    let n: usize = n.parse().expect("clients");
    let mut times = rt().block_on(async move {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            let client = if kind == "shm" {
                Client::new(rpc_transport_shm::ShmClient::new(rpc_core::Address::shm(
                    path,
                )))
            } else {
                Client::new(rpc_transport_ttheader::TtHeaderClient::new(
                    rpc_core::Address::unix(path),
                ))
            };
            let client = Proto::client(client);
            let req = examples::EchoRequest {
                message: "hello".into(),
                ..Default::default()
            };
            let resp = Proto::ping_pong(&client, req, CallOptions::new())
                .await
                .expect("pingpong");
            times.push(start.elapsed());
            assert_eq!(resp.message, "hello");
            drop(client);
            // Let the dropped client's tasks end before the next one starts.
            tokio::task::yield_now().await;
        }
        times
    });
    if std::env::var_os("SETUP_TRACE").is_some() {
        eprintln!(
            "{:?}",
            times.iter().map(|t| t.as_micros()).collect::<Vec<_>>()
        );
    }
    times.sort();
    let ms = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!("result {} {} {}", ms(0.5), ms(0.9), ms(1.0));
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn serve(kind: &str, path: &str) {
    rt().block_on(async move {
        match kind {
            "shm" | "uds" => {
                let server = Server::builder().add_service(Blob).build();
                serve_until_killed(server, kind, path).await;
            }
            _ => shmipc_serve(kind, path).await,
        }
    });
}

fn shmipc_config(kind: &str) -> shmipc::session::SessionManagerConfig {
    let config = if kind == "shmipc-v4e" {
        shmipc::config::Config::default().with_v4_eventfd()
    } else {
        shmipc::config::Config::default()
    };
    let mut c = shmipc::session::SessionManagerConfig::new()
        .with_config(config)
        .with_session_num(1);
    c.config_mut().mem_map_type = shmipc::consts::MemMapType::MemMapTypeMemFd;
    c
}

async fn shmipc_serve(kind: &str, path: &str) {
    let addr = std::os::unix::net::SocketAddr::from_pathname(path).expect("path");
    let mut listener = shmipc::Listener::new(
        shmipc::transport::DefaultUnixListen,
        addr,
        shmipc_config(kind).config().clone(),
    )
    .await
    .expect("listen");
    println!("ready");
    loop {
        let Ok(mut stream) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            // The request size is the first 4 bytes' value; the reply has the same size.
            let mut reply: Vec<u8> = Vec::new();
            loop {
                let size = match stream.read_exact_bytes(4).await {
                    Ok(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
                    Err(_) => return,
                };
                let sum = match stream.read_exact_bytes(size - 4).await {
                    Ok(b) => checksum(&b),
                    Err(_) => return,
                };
                shmipc::buffer::BufferReader::release_previous_read(stream.recv_buf());
                if reply.len() != size {
                    reply = payload(size, 7);
                    reply[..4].copy_from_slice(&(size as u32).to_le_bytes());
                }
                reply[4..12.min(size)].copy_from_slice(&sum.to_le_bytes()[..8.min(size - 4)]);
                if stream.write_bytes(&reply).is_err() {
                    return;
                }
                loop {
                    match stream.flush(false).await {
                        Ok(()) => break,
                        Err(shmipc::Error::QueueFull) => tokio::task::yield_now().await,
                        Err(_) => return,
                    }
                }
            }
        });
    }
}

/// CPU time so far of process `pid`, in microseconds (NaN where unreadable).
fn cpu_us(pid: &str) -> f64 {
    pid.parse()
        .ok()
        .and_then(examples::measure::cpu_time)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}

fn client(kind: &str, path: &str, size: &str, secs: &str, server_pid: &str) {
    let size: usize = size.parse().expect("size");
    let secs = Duration::from_secs_f64(secs.parse().expect("secs"));
    let (p50, p99, rps, cpu, own) = rt().block_on(async move {
        if kind.starts_with("shmipc") {
            shmipc_client(kind, path, size, secs, server_pid).await
        } else {
            ours_client(kind, path, size, secs, server_pid).await
        }
    });
    println!("result {p50} {p99} {rps} {cpu} {own}");
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

async fn ours_client(
    kind: &str,
    path: &str,
    size: usize,
    secs: Duration,
    server_pid: &str,
) -> (f64, f64, f64, f64, f64) {
    let shm = rpc_transport_shm::ShmClient::builder(rpc_core::Address::shm(path))
        .pool_size(1)
        .build();
    let stats = shm.stats().clone();
    let client = if kind == "shm" {
        Client::new(shm)
    } else {
        Client::new(rpc_transport_ttheader::TtHeaderClient::new(
            rpc_core::Address::unix(path),
        ))
    };
    let body = payload(size, 3);
    let round = |mut call: rpc_core::BidiStreamingClient<Bytes, Bytes>, body: Vec<u8>| async move {
        let mut n = 0u64;
        let mut sink = 0u64;
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed() < secs {
            let t = Instant::now();
            // A real write: a fresh payload (the codec copies it into the transport's buffer).
            let mut m = body.clone();
            m[0] = n as u8;
            call.send(Bytes::from(m)).await.expect("send");
            let r = call.recv().await.expect("recv").expect("reply");
            sink ^= checksum(&r);
            times.push(t.elapsed());
            n += 1;
        }
        std::hint::black_box(sink);
        (n, times)
    };
    let open = || async {
        client
            .bidi::<Raw, Bytes, Bytes>(&METHODS[0], CallOptions::new())
            .await
            .expect("open")
    };
    // Warm up (sessions, arenas' hot blocks, the server's stream).
    let (_, _) = round(open().await, body.clone()).await;
    let (_, times) = round(open().await, body.clone()).await;
    let (p50, p99) = percentiles(times);
    let mut calls = Vec::new();
    for _ in 0..STREAMS {
        calls.push(open().await);
    }
    let me = std::process::id().to_string();
    let (cpu0, own0) = (cpu_us(server_pid), cpu_us(&me));
    let start = Instant::now();
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|c| tokio::spawn(round(c, body.clone())))
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task").0;
    }
    let el = start.elapsed().as_secs_f64();
    let cpu = (cpu_us(server_pid) - cpu0) / total as f64;
    let own = (cpu_us(&me) - own0) / total as f64;
    if kind == "shm" {
        eprintln!(
            "  shm client: {total} round trips (16 streams), wakeups sent {} received {}, sender waits {}, fallbacks {}",
            stats.wakeups_sent(),
            stats.wakeups_received(),
            stats.sender_waits(),
            stats.fallback_messages()
        );
    }
    (p50, p99, total as f64 / el, cpu, own)
}

async fn shmipc_client(
    kind: &str,
    path: &str,
    size: usize,
    secs: Duration,
    server_pid: &str,
) -> (f64, f64, f64, f64, f64) {
    let size = size.max(12);
    let addr = std::os::unix::net::SocketAddr::from_pathname(path).expect("path");
    let sm = shmipc::session::SessionManager::new(
        shmipc_config(kind),
        shmipc::transport::DefaultUnixConnect,
        addr,
    )
    .await
    .expect("connect");
    let mut body = payload(size, 3);
    body[..4].copy_from_slice(&(size as u32).to_le_bytes());
    let round = |mut stream: shmipc::stream::Stream, body: Vec<u8>| async move {
        let mut n = 0u64;
        let mut sink = 0u64;
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed() < secs {
            let t = Instant::now();
            let mut m = body.clone();
            m[5] = n as u8;
            stream.write_bytes(&m).expect("write");
            loop {
                match stream.flush(false).await {
                    Ok(()) => break,
                    Err(shmipc::Error::QueueFull) => tokio::task::yield_now().await,
                    Err(e) => panic!("flush: {e}"),
                }
            }
            let r = stream.read_exact_bytes(m.len()).await.expect("read");
            sink ^= checksum(&r);
            drop(r);
            stream.release_read_and_reuse();
            times.push(t.elapsed());
            n += 1;
        }
        std::hint::black_box(sink);
        (n, times)
    };
    let _ = round(sm.get_stream().expect("stream"), body.clone()).await;
    let (_, times) = round(sm.get_stream().expect("stream"), body.clone()).await;
    let (p50, p99) = percentiles(times);
    let me = std::process::id().to_string();
    let (cpu0, own0) = (cpu_us(server_pid), cpu_us(&me));
    let start = Instant::now();
    let tasks: Vec<_> = (0..STREAMS)
        .map(|_| tokio::spawn(round(sm.get_stream().expect("stream"), body.clone())))
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task").0;
    }
    let el = start.elapsed().as_secs_f64();
    let cpu = (cpu_us(server_pid) - cpu0) / total as f64;
    let own = (cpu_us(&me) - own0) / total as f64;
    (p50, p99, total as f64 / el, cpu, own)
}
