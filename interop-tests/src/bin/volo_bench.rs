//! `cargo run --release -p interop-tests --bin volo_bench [-- SECONDS] [--runs N] [--base EXE]`
//!
//! Our TTHeader pingpong side by side with volo-thrift 0.12.7 and a raw TCP echo, in one run,
//! reported as ratios.
//!
//! Every row: loopback TCP, TTHeader + Framed binary payloads, the echo `PingPong` with a
//! 100-character `message`, 64 calls in flight on one connection, 0.5 s of warm-up then a fixed
//! measurement window (SECONDS, default 3). The rows, client → server:
//!
//! * volo → volo, volo → ours (and volo → base): volo's multiplex client (calls pipelined on
//!   one connection, one write syscall per call, replies matched by seqid) drives each server;
//!   the server's CPU and syscalls per call are the figures to compare;
//! * ours → ours (and ours → base): `TtHeaderClient` (one connection, `UnaryMode::Mux`,
//!   `Framing::Framed`) under the generated `TestServiceClient`, against `examples::server()`
//!   served by `rpc_core::serve::Listener`;
//! * raw → raw, the floor: a length-prefixed (u32 big-endian) echo of 100-byte payloads over
//!   plain tokio TCP, 64 in flight on one connection. The client keeps 64 requests
//!   outstanding and answers every read with one write of the requests that replace the
//!   replies it got; the server echoes everything one read gave with one write. Both ends
//!   batch, as ours do; no framework can beat it.
//!
//! `--base EXE` adds the server of another build of this binary (run as `EXE serve-ours`; e.g.
//! the same file built from the commit before a change) so before and after are measured in
//! the same run; the ours → base row uses the current client against it.
//!
//! Each server runs in its own process (this binary re-executed with `serve-volo`,
//! `serve-ours` or `serve-raw`, which prints its address and serves until its stdin closes),
//! started afresh for every row, so client and server never share runtime threads. When
//! `taskset` exists and there are two cores or more, the server process is pinned to core 0
//! and this process (the client) to core 1; each side runs a tokio runtime with one worker
//! (`TOKIO_WORKER_THREADS=1` is set for the server process, for builds that use the default).
//! The rows are interleaved: every round runs each row once, in the order above, and `--runs`
//! rounds (default 3) are made; the summary gives medians, and ratios are taken within each
//! round (rows that ran next to each other) before their median is taken.
//!
//! Per row: calls/s (calls completed inside the window over its length), p50 and p99 latency of
//! those calls, the CPU time the client and the server process spent per call in the window
//! (`utime + stime` from `/proc/<pid>/stat`, 10 ms ticks: ±0.3% over 3 s at full load), and
//! the server's **syscalls per call**: `perf stat -e raw_syscalls:sys_enter -p <server pid>`
//! over the window (an in-kernel tracepoint counter: exact, and without the slowdown
//! `strace -c`'s ptrace stops would cause, which would change the batching being measured),
//! with the mix of the common ones (`r` read/readv/recvfrom, `w` write/writev/sendto, `ep`
//! epoll_wait/epoll_pwait, `fx` futex, `y` sched_yield). `-` where `/proc` or `perf` is not
//! available.

#![forbid(unsafe_code)]

use examples::measure::cpu_time;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use examples::thrift as ours;
use interop_tests::echo as volo;
use interop_tests::volo_peer::{self, VoloServer};
use rpc_core::serve::Listener;
use rpc_transport_ttheader::{Framing, TtHeaderClient, TtHeaderProtocol, UnaryMode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use volo_thrift::MaybeException;

/// Calls in flight at once (one task each, all on the client's one connection).
const IN_FLIGHT: usize = 64;

/// Length of the `message` of every request (and so of every reply's `message`); also the raw
/// echo's payload.
const MESSAGE_LEN: usize = 100;

/// Calls before the measurement window, not counted.
const WARM_UP: Duration = Duration::from_millis(500);

/// The measurement window when no SECONDS argument is given.
const DEFAULT_SECS: f64 = 3.0;

/// Rounds of all rows when no `--runs` is given.
const DEFAULT_RUNS: usize = 3;

/// The core the server process is pinned to, and the client's.
const SERVER_CORE: &str = "0";
const CLIENT_CORE: &str = "1";

/// Whose code a client or a server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Ours: `rpc-transport-ttheader` under the `rpc-codegen` stubs of `examples`.
    Ours,
    /// Our server from another build (`--base`): before vs after in one run.
    Base,
    /// volo-thrift 0.12.7 with volo-build's stubs.
    Volo,
    /// A length-prefixed echo over plain tokio TCP: the floor.
    Raw,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::Base => "base",
            Side::Volo => "volo",
            Side::Raw => "raw",
        }
    }

    /// The subcommand that serves this side's echo server.
    fn serve_command(self) -> &'static str {
        match self {
            Side::Ours | Side::Base => "serve-ours",
            Side::Volo => "serve-volo",
            Side::Raw => "serve-raw",
        }
    }
}

/// One client → server combination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Combo {
    client: Side,
    server: Side,
}

impl Combo {
    const fn new(client: Side, server: Side) -> Self {
        Self { client, server }
    }

    fn label(self) -> String {
        format!("{} -> {}", self.client.name(), self.server.name())
    }
}

/// How the processes are placed.
#[derive(Clone, Debug)]
struct Setup {
    /// Whether server and client are pinned (`taskset` exists and there are ≥ 2 cores).
    pinned: bool,
    /// Whether `perf` can count the server's syscalls.
    perf: bool,
    /// The executable serving [`Side::Base`].
    base: Option<PathBuf>,
}

/// What one measurement window gave.
#[derive(Clone, Debug, Default)]
struct Figures {
    calls_per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// Client process CPU time per call in the window.
    client_cpu: Option<Duration>,
    /// Server process CPU time per call in the window.
    server_cpu: Option<Duration>,
    /// Server syscalls per call in the window.
    syscalls: Option<f64>,
    /// The mix of the common syscalls per call (see the module docs).
    mix: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Servers (child processes).

/// A runtime with one worker (the server's, or the client's).
fn one_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Serves `side`'s echo server on 127.0.0.1 until stdin closes; prints the address first.
fn serve(side: Side) {
    let rt = one_worker_runtime();
    rt.block_on(async {
        match side {
            Side::Ours | Side::Base => {
                let handle = Listener::new(examples::server())
                    .protocol(TtHeaderProtocol::default())
                    .bind(SocketAddr::from(([127, 0, 0, 1], 0)).into())
                    .await
                    .expect("our server binds 127.0.0.1:0")
                    .start();
                println!(
                    "{}",
                    handle.local_addrs()[0]
                        .socket_addr()
                        .expect("a TCP listener has an address")
                );
                until_stdin_closes().await;
                handle.shutdown(Duration::from_millis(100)).await;
            }
            Side::Volo => {
                let server = VoloServer::start(volo_peer::Framing::Framed)
                    .await
                    .expect("volo server binds 127.0.0.1:0");
                println!("{}", server.local_addr());
                until_stdin_closes().await;
                drop(server);
            }
            Side::Raw => {
                let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .expect("raw server binds 127.0.0.1:0");
                println!("{}", listener.local_addr().expect("bound"));
                let accept = tokio::spawn(async move {
                    while let Ok((sock, _)) = listener.accept().await {
                        tokio::spawn(raw_echo(sock));
                    }
                });
                until_stdin_closes().await;
                accept.abort();
            }
        }
    });
    // Connections still open belong to a client that is gone; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(100));
}

/// The raw floor's server side: echoes every complete length-prefixed frame one read gave, all
/// with one write.
async fn raw_echo(sock: tokio::net::TcpStream) {
    let _ = sock.set_nodelay(true);
    let (mut rd, mut wr) = sock.into_split();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            out.extend_from_slice(&buf[..4 + len]);
            buf.advance(4 + len);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

async fn until_stdin_closes() {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    // EOF (the parent closed our stdin or exited) or an error: either way, stop.
    while matches!(stdin.read_line(&mut line).await, Ok(n) if n > 0) {
        line.clear();
    }
}

/// A server child process; dropping it closes its stdin and waits for it to exit.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    /// Kept open so the child never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl ServerProcess {
    fn start(side: Side, setup: &Setup) -> Self {
        let exe = match side {
            Side::Base => setup.base.clone().expect("--base was given for base rows"),
            _ => std::env::current_exe().expect("own executable"),
        };
        let mut cmd = if setup.pinned {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(SERVER_CORE).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let mut child = cmd
            .arg(side.serve_command())
            .env("TOKIO_WORKER_THREADS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn server process");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        // Startup only, before any runtime exists: a blocking read of the first line.
        let mut line = String::new();
        stdout.read_line(&mut line).expect("server address line");
        let addr = line
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{} printed {line:?}: {e}", side.serve_command()));
        Self {
            child,
            addr,
            _stdout: stdout,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The syscall tracepoints counted, and the mix column each one adds to.
const SYSCALL_EVENTS: [(&str, &str); 10] = [
    ("raw_syscalls:sys_enter", "all"),
    ("syscalls:sys_enter_read", "r"),
    ("syscalls:sys_enter_readv", "r"),
    ("syscalls:sys_enter_recvfrom", "r"),
    ("syscalls:sys_enter_write", "w"),
    ("syscalls:sys_enter_writev", "w"),
    ("syscalls:sys_enter_sendto", "w"),
    ("syscalls:sys_enter_epoll_wait", "ep"),
    ("syscalls:sys_enter_epoll_pwait", "ep"),
    ("syscalls:sys_enter_futex", "fx"),
];

/// `perf stat` counting the syscalls of `pid` for `window`, started now.
fn start_syscall_count(pid: u32, window: Duration) -> Option<Child> {
    let events: Vec<&str> = SYSCALL_EVENTS
        .iter()
        .map(|(e, _)| *e)
        .chain(["syscalls:sys_enter_sched_yield"])
        .collect();
    Command::new("perf")
        .args(["stat", "-x", ",", "-e", &events.join(","), "-p"])
        .arg(pid.to_string())
        .arg("--")
        .arg("sleep")
        .arg(format!("{:.3}", window.as_secs_f64()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()
}

/// The counts `perf stat -x ,` printed, per event name.
fn syscall_counts(perf: Child) -> Option<Vec<(String, f64)>> {
    let out = perf.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let counts: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((f.get(2)?.to_string(), f.first()?.parse().ok()?))
        })
        .collect();
    (!counts.is_empty()).then_some(counts)
}

/// Whether `perf` can count syscall tracepoints here.
fn perf_works() -> bool {
    Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            "raw_syscalls:sys_enter",
            "--",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stderr).lines().any(|l| {
                    l.split(',')
                        .next()
                        .is_some_and(|c| c.parse::<u64>().is_ok())
                })
        })
}

/// Pins this process (all its threads) to the client core; says whether it did.
fn pin_self() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return false;
    }
    Command::new("taskset")
        .args(["-a", "-p", "-c", CLIENT_CORE])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// One pingpong call, checked, as a benchmark client makes it.
trait Caller: Clone + Send + Sync + 'static {
    /// Makes one call and checks the reply; panics on any failure.
    fn call(&self) -> impl Future<Output = ()> + Send;
}

/// Our generated client over `TtHeaderClient`.
#[derive(Clone)]
struct OurCaller {
    client: ours::TestServiceClient,
    req: ours::Request,
}

impl OurCaller {
    fn new(addr: SocketAddr) -> Self {
        let transport = TtHeaderClient::builder(addr)
            .pool_size(1)
            .unary_mode(UnaryMode::Mux)
            .unary_framing(Framing::Framed)
            .build();
        Self {
            client: ours::TestServiceClient::new(rpc_core::Client::new(transport)),
            req: ours::Request {
                message: "x".repeat(MESSAGE_LEN),
                ..Default::default()
            },
        }
    }
}

impl Caller for OurCaller {
    async fn call(&self) {
        match self.client.ping_pong(self.req.clone()).await {
            Ok(resp) => assert_eq!(resp.message.len(), MESSAGE_LEN, "echoed message"),
            Err(e) => panic!("our client: PingPong failed: {e:?}"),
        }
    }
}

/// volo's generated client, multiplex transport.
#[derive(Clone)]
struct VoloCaller {
    client: volo::TestServiceClient,
    req: volo::Request,
}

impl VoloCaller {
    fn new(addr: SocketAddr) -> Self {
        Self {
            client: volo_peer::multiplex_client(addr, volo_peer::Framing::Framed),
            req: volo::Request {
                message: "x".repeat(MESSAGE_LEN).into(),
                ..Default::default()
            },
        }
    }
}

impl Caller for VoloCaller {
    async fn call(&self) {
        match self.client.ping_pong(self.req.clone()).await {
            Ok(MaybeException::Ok(resp)) => {
                assert_eq!(resp.message.len(), MESSAGE_LEN, "echoed message")
            }
            Ok(MaybeException::Exception(e)) => panic!("volo client: PingPong exception {e:?}"),
            Err(e) => panic!("volo client: PingPong failed: {e}"),
        }
    }
}

/// Phases of a measurement, shared with the calling tasks.
const PHASE_WARM_UP: u8 = 0;
const PHASE_MEASURE: u8 = 1;
const PHASE_STOP: u8 = 2;

/// `IN_FLIGHT` tasks calling `caller` in a loop until the phase says stop; each returns the
/// latencies of the calls that completed inside the window.
fn spawn_callers<C: Caller>(caller: C, phase: &Arc<AtomicU8>) -> Vec<JoinHandle<Vec<Duration>>> {
    (0..IN_FLIGHT)
        .map(|_| {
            let caller = caller.clone();
            let phase = phase.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 14);
                loop {
                    let start = Instant::now();
                    caller.call().await;
                    let latency = start.elapsed();
                    // A call counts if it completed inside the window.
                    match phase.load(Ordering::Relaxed) {
                        PHASE_WARM_UP => {}
                        PHASE_MEASURE => latencies.push(latency),
                        _ => break latencies,
                    }
                }
            })
        })
        .collect()
}

/// The raw floor's client: one connection, `IN_FLIGHT` length-prefixed requests outstanding;
/// every read's replies are answered with one write of as many new requests.
fn spawn_raw(addr: SocketAddr, phase: &Arc<AtomicU8>) -> Vec<JoinHandle<Vec<Duration>>> {
    let phase = phase.clone();
    vec![tokio::spawn(async move {
        let sock = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the raw echo");
        sock.set_nodelay(true).expect("TCP_NODELAY");
        let (mut rd, mut wr) = sock.into_split();
        let mut frame = Vec::with_capacity(4 + MESSAGE_LEN);
        frame.put_u32(MESSAGE_LEN as u32);
        frame.extend(std::iter::repeat_n(b'x', MESSAGE_LEN));
        let mut sent = std::collections::VecDeque::with_capacity(IN_FLIGHT);
        let mut out = BytesMut::with_capacity(IN_FLIGHT * frame.len());
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut latencies = Vec::with_capacity(1 << 16);
        let mut fresh = IN_FLIGHT;
        loop {
            let now = Instant::now();
            for _ in 0..fresh {
                out.extend_from_slice(&frame);
                sent.push_back(now);
            }
            wr.write_all(&out).await.expect("raw write");
            out.clear();
            fresh = 0;
            while fresh == 0 {
                if rd.read_buf(&mut buf).await.expect("raw read") == 0 {
                    panic!("the raw echo closed the connection");
                }
                while buf.len() >= 4 + MESSAGE_LEN {
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    assert_eq!(len, MESSAGE_LEN, "echoed frame length");
                    buf.advance(4 + len);
                    let start = sent.pop_front().expect("a reply answers a request");
                    match phase.load(Ordering::Relaxed) {
                        PHASE_WARM_UP => {}
                        PHASE_MEASURE => latencies.push(start.elapsed()),
                        _ => return latencies,
                    }
                    fresh += 1;
                }
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(64 * 1024);
                }
            }
        }
    })]
}

/// Warm-up, then the window: runs the calling tasks `spawn` starts and measures.
async fn load(
    spawn: impl FnOnce(&Arc<AtomicU8>) -> Vec<JoinHandle<Vec<Duration>>>,
    window: Duration,
    server_pid: u32,
    setup: &Setup,
) -> Figures {
    let phase = Arc::new(AtomicU8::new(PHASE_WARM_UP));
    let tasks = spawn(&phase);

    // The timed windows of a benchmark: sleeping is the measurement here, not a wait.
    tokio::time::sleep(WARM_UP).await;
    let own_pid = std::process::id();
    let perf = if setup.perf {
        start_syscall_count(server_pid, window)
    } else {
        None
    };
    let cpu_before = (cpu_time(own_pid), cpu_time(server_pid));
    phase.store(PHASE_MEASURE, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(window).await;
    phase.store(PHASE_STOP, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let cpu_after = (cpu_time(own_pid), cpu_time(server_pid));

    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("calling task"));
    }
    assert!(!all.is_empty(), "no call completed in the window");
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    let calls = all.len() as u32;
    let per_call = |before: Option<Duration>, after: Option<Duration>| {
        Some(after?.checked_sub(before?)? / calls)
    };
    let counts = perf.and_then(syscall_counts);
    let (syscalls, mix) = match counts {
        Some(counts) => {
            let sum = |col: &str| -> f64 {
                SYSCALL_EVENTS
                    .iter()
                    .filter(|(_, c)| *c == col)
                    .filter_map(|(e, _)| counts.iter().find(|(n, _)| n == e))
                    .map(|(_, v)| v)
                    .sum::<f64>()
                    / f64::from(calls)
            };
            let y = counts
                .iter()
                .find(|(n, _)| n == "syscalls:sys_enter_sched_yield")
                .map_or(0.0, |(_, v)| v / f64::from(calls));
            (
                Some(sum("all")),
                Some(format!(
                    "r{:.2} w{:.2} ep{:.2} fx{:.2} y{:.2}",
                    sum("r"),
                    sum("w"),
                    sum("ep"),
                    sum("fx"),
                    y
                )),
            )
        }
        None => (None, None),
    };
    Figures {
        calls_per_sec: f64::from(calls) / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        client_cpu: per_call(cpu_before.0, cpu_after.0),
        server_cpu: per_call(cpu_before.1, cpu_after.1),
        syscalls,
        mix,
    }
}

/// One row: a fresh server process and a fresh client runtime.
fn measure(combo: Combo, window: Duration, setup: &Setup) -> Figures {
    let server = ServerProcess::start(combo.server, setup);
    let rt = one_worker_runtime();
    let addr = server.addr;
    let pid = server.child.id();
    let figures = rt.block_on(async move {
        match combo.client {
            Side::Ours | Side::Base => {
                let caller = OurCaller::new(addr);
                load(|p| spawn_callers(caller, p), window, pid, setup).await
            }
            Side::Volo => {
                let caller = VoloCaller::new(addr);
                load(|p| spawn_callers(caller, p), window, pid, setup).await
            }
            Side::Raw => load(|p| spawn_raw(addr, p), window, pid, setup).await,
        }
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    drop(server);
    figures
}

// ---------------------------------------------------------------------------------------------
// Report.

fn micros(d: Duration) -> String {
    format!("{:.1}us", d.as_secs_f64() * 1e6)
}

fn cpu_micros(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.2}us", d.as_secs_f64() * 1e6),
    )
}

const HEADER: &str = "client->server";

fn print_header(first: &str) {
    println!(
        "{first:<4} {HEADER:<14} {:>10} {:>9} {:>9} {:>10} {:>10} {:>8}  mix/call",
        "calls/s", "p50", "p99", "cli cpu", "srv cpu", "srv sys"
    );
}

fn print_row(run: &str, combo: Combo, f: &Figures) {
    println!(
        "{run:<4} {:<14} {:>10.0} {:>9} {:>9} {:>10} {:>10} {:>8}  {}",
        combo.label(),
        f.calls_per_sec,
        micros(f.p50),
        micros(f.p99),
        cpu_micros(f.client_cpu),
        cpu_micros(f.server_cpu),
        f.syscalls
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}")),
        f.mix.as_deref().unwrap_or("-"),
    );
}

/// The median of some values (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Median of each figure over the runs (each figure on its own).
fn medians(runs: &[Figures]) -> Figures {
    let secs = |f: &dyn Fn(&Figures) -> Option<Duration>| {
        let v: Option<Vec<f64>> = runs.iter().map(|r| f(r).map(|d| d.as_secs_f64())).collect();
        v.and_then(median).map(Duration::from_secs_f64)
    };
    Figures {
        calls_per_sec: median(runs.iter().map(|f| f.calls_per_sec).collect()).unwrap_or(0.0),
        p50: secs(&|f| Some(f.p50)).unwrap_or_default(),
        p99: secs(&|f| Some(f.p99)).unwrap_or_default(),
        client_cpu: secs(&|f| f.client_cpu),
        server_cpu: secs(&|f| f.server_cpu),
        syscalls: runs
            .iter()
            .map(|f| f.syscalls)
            .collect::<Option<Vec<f64>>>()
            .and_then(median),
        mix: None,
    }
}

/// One figure of two rows as a ratio `a / b`, if both have it.
type Pick = fn(&Figures) -> Option<f64>;

const PICKS: [(&str, Pick); 5] = [
    ("calls/s", |f| Some(f.calls_per_sec)),
    ("p50", |f| Some(f.p50.as_secs_f64())),
    ("p99", |f| Some(f.p99.as_secs_f64())),
    ("srv cpu", |f| f.server_cpu.map(|d| d.as_secs_f64())),
    ("srv sys", |f| f.syscalls),
];

/// Prints, for a pair of rows, the median over the rounds of the per-round ratio of each
/// figure (and the per-round values).
fn ratio_line(label: &str, a: &[Figures], b: &[Figures]) {
    let mut cells = Vec::new();
    for (_, pick) in PICKS {
        let per_round: Vec<f64> = a
            .iter()
            .zip(b)
            .filter_map(|(x, y)| Some(pick(x)? / pick(y)?))
            .collect();
        let rounds: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
        cells.push(match median(per_round) {
            Some(m) => format!("{m:.2} ({})", rounds.join(" ")),
            None => "-".to_owned(),
        });
    }
    println!("{label:<22} {}", cells.join("  "));
}

fn bench(window: Duration, runs: usize, base: Option<PathBuf>) {
    let pinned = pin_self();
    let setup = Setup {
        pinned,
        perf: perf_works(),
        base,
    };
    println!(
        "TTHeader + Framed pingpong on loopback TCP: {MESSAGE_LEN}-byte messages, {IN_FLIGHT} calls \
         in flight on 1 connection, {:.1} s warm-up, {:.1} s per row, {runs} interleaved rounds",
        WARM_UP.as_secs_f64(),
        window.as_secs_f64()
    );
    if setup.pinned {
        println!(
            "server process pinned to core {SERVER_CORE}, client (this process) to core \
             {CLIENT_CORE}; one tokio worker each; server fresh per row"
        );
    } else {
        println!(
            "not pinned (no taskset or one core); one tokio worker each; server fresh per row"
        );
    }
    println!(
        "ours: TtHeaderClient pool_size(1), UnaryMode::Mux, Framing::Framed / examples::server() \
         on rpc_core::serve::Listener"
    );
    println!("volo: volo-thrift 0.12.7 multiplex client (one pipelined connection) / volo server");
    println!("raw: length-prefixed echo over plain tokio TCP, both ends batching (the floor)");
    if let Some(b) = &setup.base {
        println!("base: the server of {}", b.display());
    }
    println!(
        "cpu: process CPU (user + sys) per call in the window; srv sys: server syscalls per call \
         ({})",
        if setup.perf {
            "perf stat -e raw_syscalls:sys_enter -p PID"
        } else {
            "perf not available"
        }
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("load average before the run: {}", load.join(" "));
    }
    println!();

    let volo_volo = Combo::new(Side::Volo, Side::Volo);
    let volo_ours = Combo::new(Side::Volo, Side::Ours);
    let volo_base = Combo::new(Side::Volo, Side::Base);
    let ours_ours = Combo::new(Side::Ours, Side::Ours);
    let ours_base = Combo::new(Side::Ours, Side::Base);
    let raw_raw = Combo::new(Side::Raw, Side::Raw);
    let has_base = setup.base.is_some();
    let combos: Vec<Combo> = [
        volo_volo, volo_ours, volo_base, ours_ours, ours_base, raw_raw,
    ]
    .into_iter()
    .filter(|c| has_base || (c.server != Side::Base))
    .collect();

    print_header("run");
    let mut results: Vec<(Combo, Vec<Figures>)> = combos.iter().map(|c| (*c, Vec::new())).collect();
    for run in 1..=runs {
        for &combo in &combos {
            let f = measure(combo, window, &setup);
            print_row(&run.to_string(), combo, &f);
            if let Some(slot) = results.iter_mut().find(|(c, _)| *c == combo) {
                slot.1.push(f);
            }
        }
    }
    let runs_of = |combo: Combo| -> &[Figures] {
        results
            .iter()
            .find(|(c, _)| *c == combo)
            .map_or(&[], |(_, r)| r)
    };

    println!();
    println!("medians over {runs} rounds:");
    print_header("");
    for &combo in &combos {
        print_row("", combo, &medians(runs_of(combo)));
    }

    println!();
    println!(
        "ratios a/b: median of the per-round ratios (the rounds' values in parentheses); \
         calls/s above 1 = a faster, latency/cpu/syscalls below 1 = a cheaper"
    );
    println!("{:<22} {}", "a / b", PICKS.map(|(n, _)| n).join(" | "));
    ratio_line(
        "srv: volo->ours / volo->volo",
        runs_of(volo_ours),
        runs_of(volo_volo),
    );
    if has_base {
        ratio_line(
            "srv: volo->base / volo->volo",
            runs_of(volo_base),
            runs_of(volo_volo),
        );
        ratio_line(
            "srv: volo->ours / volo->base",
            runs_of(volo_ours),
            runs_of(volo_base),
        );
    }
    ratio_line(
        "ours->ours / volo->volo",
        runs_of(ours_ours),
        runs_of(volo_volo),
    );
    ratio_line(
        "ours->ours / raw floor",
        runs_of(ours_ours),
        runs_of(raw_raw),
    );
    if has_base {
        ratio_line(
            "ours->base / raw floor",
            runs_of(ours_base),
            runs_of(raw_raw),
        );
        ratio_line(
            "ours->ours / ours->base",
            runs_of(ours_ours),
            runs_of(ours_base),
        );
    }
}

fn usage() -> ! {
    panic!("usage: volo_bench [SECONDS] [--runs N] [--base EXE]")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve-ours") => serve(Side::Ours),
        Some("serve-volo") => serve(Side::Volo),
        Some("serve-raw") => serve(Side::Raw),
        _ => {
            let mut secs = DEFAULT_SECS;
            let mut runs = DEFAULT_RUNS;
            let mut base = None;
            let mut it = args.iter().skip(1);
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--runs" => {
                        runs = it
                            .next()
                            .and_then(|s| s.parse().ok())
                            .filter(|n| *n > 0)
                            .unwrap_or_else(|| usage())
                    }
                    "--base" => base = Some(PathBuf::from(it.next().unwrap_or_else(|| usage()))),
                    s => {
                        secs = s
                            .parse()
                            .ok()
                            .filter(|s: &f64| s.is_finite() && *s > 0.0)
                            .unwrap_or_else(|| usage())
                    }
                }
            }
            bench(Duration::from_secs_f64(secs), runs, base);
        }
    }
}
