//! `cargo run --release -p interop-tests --bin volo_bench [-- SECONDS] [--runs N] [--base EXE]
//! [--rows FILE]` (`BENCH_ONLY=text` runs only the scenarios whose name contains `text`)
//!
//! Our TTHeader side by side with volo-thrift 0.12.7 and a raw TCP echo (the floor), in one
//! run, reported as ratios.
//!
//! Every row: loopback TCP, the echo service with a 100-character `message`, 0.5 s of warm-up
//! then a fixed measurement window (SECONDS, default 3). The scenarios:
//!
//! * **unary 4x16** (4 connections × 16 calls in flight on each) and **unary 1x64**: TTHeader +
//!   Framed binary `PingPong`, client → server:
//!   * volo → volo, volo → ours (and volo → base): volo's multiplex client (calls pipelined on
//!     one connection per client, one write syscall per call, replies matched by seqid; one
//!     client per connection) drives each server; the server's CPU and syscalls per call are
//!     the figures to compare;
//!   * ours → ours (and ours → base): `TtHeaderClient` (`pool_size(1)`, `ConnectionMode::Multiplexed`,
//!     `Framing::Framed`, one client per connection) under the generated `TestServiceClient`,
//!     against `examples::server()` served by `rpc_core::serve::Listener`;
//!   * raw → raw, the floor: a length-prefixed (u32 big-endian) echo of 100-byte payloads over
//!     plain tokio TCP, the same connections × in flight. The client keeps its requests
//!     outstanding and answers every read with one write of the requests that replace the
//!     replies it got; the server echoes everything one read gave with one write. Both ends
//!     batch, as ours do; no framework can beat it.
//! * **ttstream pingpong 4x16** and **1x64**: ours → ours, the protobuf `PingPong` over TTHeader
//!   Streaming (a stream per call; volo has no TTHeader Streaming, the floor is the reference);
//! * **ttstream bidi 1 stream** and **16 streams**: ours → ours, the thrift `Echo` over TTHeader
//!   Streaming on one connection, per stream a sender task pushing as fast as the stream takes
//!   and a receiver counting: messages echoed per second, against the 4x16 floor.
//!
//! `--base EXE` adds the server of another build of this binary (run as `EXE serve-ours`; e.g.
//! the same file built from the commit before a change) so before and after are measured in
//! the same run; the ours → base row uses the current client against it.
//!
//! Each server runs in its own process (this binary re-executed with `serve-volo`,
//! `serve-ours` or `serve-raw`, which prints its address and serves until its stdin closes),
//! started afresh for every row, so client and server never share runtime threads; each row's
//! client gets a fresh runtime. When `taskset` exists and there are two cores or more, the
//! server process is pinned to core 0 and this process (the client) to core 1; each side runs
//! a tokio runtime with one worker (`TOKIO_WORKER_THREADS=1` is set for the server process,
//! for builds that use the default). The rows are interleaved: every round runs each row once,
//! in the order above, and `--runs` rounds (default 3) are made; the summary gives medians, and
//! ratios are taken within each round (rows that ran next to each other) before their median is
//! taken. Every row is bounded (opening, window and drain each have a timeout): a row that
//! completes nothing in its window is reported as `hang`, one whose calls fail as `error: …`.
//!
//! Per row: calls/s (calls or messages completed inside the window over its length), p50 and
//! p99 latency of those calls, the CPU time the client and the server process spent per call in
//! the window (`utime + stime` from `/proc/<pid>/stat`, 10 ms ticks: ±0.3% over 3 s at full
//! load), and the server's **syscalls per call**: `perf stat -e raw_syscalls:sys_enter -p
//! <server pid>` over the window (an in-kernel tracepoint counter: exact, and without the
//! slowdown `strace -c`'s ptrace stops would cause, which would change the batching being
//! measured), with the mix of the common ones (`r` read/readv/recvfrom, `w`
//! write/writev/sendto, `ep` epoll_wait/epoll_pwait, `fx` futex, `y` sched_yield). `-` where
//! `/proc` or `perf` is not available.
//!
//! The summary ends with a markdown table: every row as a ratio to the raw floor (calls/s and
//! server CPU per call), with the TTHeader bars of issue 17 marked met or not met; `--rows
//! FILE` also writes it (header and rows) to FILE, for `benches/run.sh`.

#![forbid(unsafe_code)]

use examples::measure::cpu_time;
use examples::measure::table::{self, fmt, median, ops_cell, times, verdict};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use examples::thrift as ours;
use interop_tests::echo as volo;
use interop_tests::volo_peer::{self, VoloServer};
use rpc_core::serve::Listener;
use rpc_transport_ttheader::{ConnectionMode, Framing, TtHeaderClient, TtHeaderProtocol};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use volo_thrift::MaybeException;

/// Length of the `message` of every request (and so of every reply's `message`); also the raw
/// echo's payload.
const MESSAGE_LEN: usize = 100;

/// Calls before the measurement window, not counted.
const WARM_UP: Duration = Duration::from_millis(500);

/// The measurement window when no SECONDS argument is given.
const DEFAULT_SECS: f64 = 3.0;

/// Rounds of all rows when no `--runs` is given.
const DEFAULT_RUNS: usize = 3;

/// How long opening a row's streams may take before the row is a hang.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the calls in flight at the end of the window may take to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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

/// What a row's client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// Pingpong calls, `conns` connections with `per_conn` calls in flight on each: unary
    /// TTHeader (ours, volo), or the raw echo.
    Unary { conns: usize, per_conn: usize },
    /// Pingpong calls over TTHeader Streaming (ours, protobuf), one stream per call.
    StreamPingpong { conns: usize, per_conn: usize },
    /// Bidi streams over TTHeader Streaming on one connection (ours, thrift), pipelined.
    StreamBidi { streams: usize },
}

impl Work {
    fn name(self) -> String {
        match self {
            Work::Unary { conns, per_conn } => format!("unary {conns}x{per_conn}"),
            Work::StreamPingpong { conns, per_conn } => {
                format!("ttstream pingpong {conns}x{per_conn}")
            }
            Work::StreamBidi { streams: 1 } => "ttstream bidi 1 stream".into(),
            Work::StreamBidi { streams } => format!("ttstream bidi {streams} streams"),
        }
    }

    /// The floor's row this row's ratios are taken against: the raw echo with the same
    /// connections × in flight (bidi: 4x16, the issue's configuration).
    fn floor(self) -> Row {
        let (conns, per_conn) = match self {
            Work::Unary { conns, per_conn } | Work::StreamPingpong { conns, per_conn } => {
                (conns, per_conn)
            }
            Work::StreamBidi { .. } => (4, 16),
        };
        Row {
            work: Work::Unary { conns, per_conn },
            combo: Combo::new(Side::Raw, Side::Raw),
        }
    }
}

/// One row of the run: a workload between a client and a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    work: Work,
    combo: Combo,
}

/// The connection shapes of the pingpong scenarios: the issue's 4×16, and 1×64.
const SHAPES: [(usize, usize); 2] = [(4, 16), (1, 64)];

/// Every row of a round, in the order they run (peers' and ours alternate where both exist).
fn rows(has_base: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for (conns, per_conn) in SHAPES {
        let unary = Work::Unary { conns, per_conn };
        let mut combos = vec![
            Combo::new(Side::Volo, Side::Volo),
            Combo::new(Side::Volo, Side::Ours),
            Combo::new(Side::Raw, Side::Raw),
            Combo::new(Side::Ours, Side::Ours),
        ];
        if has_base {
            combos.push(Combo::new(Side::Volo, Side::Base));
            combos.push(Combo::new(Side::Ours, Side::Base));
        }
        rows.extend(combos.into_iter().map(|combo| Row { work: unary, combo }));
        rows.push(Row {
            work: Work::StreamPingpong { conns, per_conn },
            combo: Combo::new(Side::Ours, Side::Ours),
        });
    }
    for streams in [1, 16] {
        rows.push(Row {
            work: Work::StreamBidi { streams },
            combo: Combo::new(Side::Ours, Side::Ours),
        });
    }
    rows
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
    /// Latency percentiles of the calls (none for bidi messages).
    p50: Option<Duration>,
    p99: Option<Duration>,
    /// Client process CPU time per call in the window.
    client_cpu: Option<Duration>,
    /// Server process CPU time per call in the window.
    server_cpu: Option<Duration>,
    /// Server syscalls per call in the window.
    syscalls: Option<f64>,
    /// The mix of the common syscalls per call (see the module docs).
    mix: Option<String>,
}

/// A row's result in one round: its figures, or why there are none (`hang`, `error: …`).
type Outcome = Result<Figures, String>;

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
        // Closing stdin asks the server to stop; one that has not exited within the bound
        // (a connection it cannot finish) is killed.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
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

/// Phases of a measurement, shared with the calling tasks.
const PHASE_WARM_UP: u8 = 0;
const PHASE_MEASURE: u8 = 1;
const PHASE_STOP: u8 = 2;

/// What a row's calling tasks share with the row.
struct Shared {
    /// [`PHASE_WARM_UP`], [`PHASE_MEASURE`] or [`PHASE_STOP`].
    phase: AtomicU8,
    /// Calls or messages completed inside the window.
    counted: AtomicU64,
    /// The first failure a task saw before the stop.
    error: Mutex<Option<String>>,
}

impl Shared {
    fn new() -> Self {
        Self {
            phase: AtomicU8::new(PHASE_WARM_UP),
            counted: AtomicU64::new(0),
            error: Mutex::new(None),
        }
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    /// Counts one completion if the window is open; says whether it was.
    fn complete(&self) -> bool {
        let counted = self.phase() == PHASE_MEASURE;
        if counted {
            self.counted.fetch_add(1, Ordering::Relaxed);
        }
        counted
    }

    /// Records a failure (the first one; failures after the stop are the teardown's).
    fn fail(&self, what: String) {
        if self.phase() == PHASE_STOP {
            return;
        }
        let mut error = self.error.lock().unwrap_or_else(|p| p.into_inner());
        error.get_or_insert(what);
    }
}

/// One pingpong call, checked, as a benchmark client makes it.
trait Caller: Clone + Send + Sync + 'static {
    /// Makes one call and checks the reply.
    fn call(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// A `TtHeaderClient` with one connection, as the benchmark's clients use it.
fn our_transport(addr: SocketAddr) -> rpc_core::Client {
    let transport = TtHeaderClient::builder(addr)
        .pool_size(1)
        .connection_mode(ConnectionMode::Multiplexed)
        .unary_framing(Framing::Framed)
        .build();
    rpc_core::Client::new(transport)
}

/// Our generated client over `TtHeaderClient`: thrift, unary TTHeader.
#[derive(Clone)]
struct OurCaller {
    client: ours::TestServiceClient,
    req: ours::Request,
}

impl OurCaller {
    fn new(addr: SocketAddr) -> Self {
        Self {
            client: ours::TestServiceClient::new(our_transport(addr)),
            req: ours::Request {
                message: "x".repeat(MESSAGE_LEN),
                ..Default::default()
            },
        }
    }
}

impl Caller for OurCaller {
    async fn call(&self) -> Result<(), String> {
        match self.client.ping_pong(self.req.clone()).await {
            Ok(resp) if resp.message.len() == MESSAGE_LEN => Ok(()),
            Ok(resp) => Err(format!("echoed {} bytes", resp.message.len())),
            Err(e) => Err(format!("our PingPong: {e:?}")),
        }
    }
}

/// Our generated client over `TtHeaderClient`: protobuf, so TTHeader Streaming.
#[derive(Clone)]
struct OurStreamCaller {
    client: examples::proto::TestServiceClient,
    req: examples::proto::Request,
}

impl OurStreamCaller {
    fn new(addr: SocketAddr) -> Self {
        Self {
            client: examples::proto::TestServiceClient::new(our_transport(addr)),
            req: examples::proto::Request {
                message: "x".repeat(MESSAGE_LEN),
                ..Default::default()
            },
        }
    }
}

impl Caller for OurStreamCaller {
    async fn call(&self) -> Result<(), String> {
        match self.client.ping_pong(self.req.clone()).await {
            Ok(resp) if resp.message.len() == MESSAGE_LEN => Ok(()),
            Ok(resp) => Err(format!("echoed {} bytes", resp.message.len())),
            Err(e) => Err(format!("our ttstream PingPong: {e:?}")),
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
    async fn call(&self) -> Result<(), String> {
        match self.client.ping_pong(self.req.clone()).await {
            Ok(MaybeException::Ok(resp)) if resp.message.len() == MESSAGE_LEN => Ok(()),
            Ok(MaybeException::Ok(resp)) => Err(format!("echoed {} bytes", resp.message.len())),
            Ok(MaybeException::Exception(e)) => Err(format!("volo PingPong exception {e:?}")),
            Err(e) => Err(format!("volo PingPong: {e}")),
        }
    }
}

/// `conns` clients made by `make` (one connection each) with `per_conn` tasks calling each in a
/// loop until the stop; each task returns the latencies of the calls completed in the window.
fn spawn_callers<C: Caller>(
    make: impl Fn() -> C,
    (conns, per_conn): (usize, usize),
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<Vec<Duration>>,
) {
    for _ in 0..conns {
        let caller = make();
        for _ in 0..per_conn {
            let caller = caller.clone();
            let shared = shared.clone();
            tasks.spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 14);
                while shared.phase() != PHASE_STOP {
                    let start = Instant::now();
                    if let Err(e) = caller.call().await {
                        shared.fail(e);
                        break;
                    }
                    let latency = start.elapsed();
                    // A call counts if it completed inside the window.
                    if shared.complete() {
                        latencies.push(latency);
                    }
                }
                latencies
            });
        }
    }
}

/// The raw floor's client: `conns` connections, `per_conn` length-prefixed requests
/// outstanding on each; every read's replies are answered with one write of as many new
/// requests.
fn spawn_raw(
    addr: SocketAddr,
    (conns, per_conn): (usize, usize),
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<Vec<Duration>>,
) {
    for _ in 0..conns {
        let shared = shared.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            if let Err(e) = raw_client(addr, per_conn, &shared, &mut latencies).await {
                shared.fail(format!("raw echo: {e}"));
            }
            latencies
        });
    }
}

/// One connection of the raw floor's client, until the stop.
async fn raw_client(
    addr: SocketAddr,
    in_flight: usize,
    shared: &Shared,
    latencies: &mut Vec<Duration>,
) -> std::io::Result<()> {
    let sock = tokio::net::TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let (mut rd, mut wr) = sock.into_split();
    let mut frame = Vec::with_capacity(4 + MESSAGE_LEN);
    frame.put_u32(MESSAGE_LEN as u32);
    frame.extend(std::iter::repeat_n(b'x', MESSAGE_LEN));
    let mut sent = std::collections::VecDeque::with_capacity(in_flight);
    let mut out = BytesMut::with_capacity(in_flight * frame.len());
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut fresh = in_flight;
    loop {
        let now = Instant::now();
        for _ in 0..fresh {
            out.extend_from_slice(&frame);
            sent.push_back(now);
        }
        wr.write_all(&out).await?;
        out.clear();
        fresh = 0;
        while fresh == 0 {
            if rd.read_buf(&mut buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            while buf.len() >= 4 + MESSAGE_LEN {
                let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if len != MESSAGE_LEN {
                    return Err(std::io::Error::other(format!(
                        "echoed frame of {len} bytes"
                    )));
                }
                buf.advance(4 + len);
                let Some(start) = sent.pop_front() else {
                    return Err(std::io::Error::other("a reply no request asked for"));
                };
                if shared.phase() == PHASE_STOP {
                    return Ok(());
                }
                if shared.complete() {
                    latencies.push(start.elapsed());
                }
                fresh += 1;
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
        }
    }
}

/// Opens `streams` bidi calls (thrift `Echo` over TTHeader Streaming, one connection) and starts
/// their sender and receiver tasks.
async fn open_bidi(
    addr: SocketAddr,
    streams: usize,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<Vec<Duration>>,
) -> Result<(), String> {
    let client = ours::TestServiceClient::new(our_transport(addr));
    let req = ours::Request {
        message: "x".repeat(MESSAGE_LEN),
        ..Default::default()
    };
    for _ in 0..streams {
        let call = client
            .echo()
            .await
            .map_err(|e| format!("our Echo opens: {e:?}"))?;
        let (mut tx, mut rx) = call.into_split();
        let (s, req) = (shared.clone(), req.clone());
        tasks.spawn(async move {
            while s.phase() != PHASE_STOP {
                if let Err(e) = tx.send(req.clone()).await {
                    s.fail(format!("our Echo send: {e:?}"));
                    break;
                }
            }
            let _ = tx.close_send();
            Vec::new()
        });
        let (s, keep) = (shared.clone(), client.clone());
        tasks.spawn(async move {
            let _client = keep;
            loop {
                match rx.recv().await {
                    Ok(Some(_)) => {
                        s.complete();
                    }
                    Ok(None) => break,
                    Err(e) => {
                        s.fail(format!("our Echo recv: {e:?}"));
                        break;
                    }
                }
            }
            Vec::new()
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measurement.

/// Warm-up, then the window over the calling `tasks`: measures and stops them.
async fn load(
    shared: &Shared,
    tasks: &mut JoinSet<Vec<Duration>>,
    window: Duration,
    server_pid: u32,
    setup: &Setup,
) -> Outcome {
    // The timed windows of a benchmark: sleeping is the measurement here, not a wait.
    tokio::time::sleep(WARM_UP).await;
    let own_pid = std::process::id();
    let perf = if setup.perf {
        start_syscall_count(server_pid, window)
    } else {
        None
    };
    let cpu_before = (cpu_time(own_pid), cpu_time(server_pid));
    shared.phase.store(PHASE_MEASURE, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(window).await;
    shared.phase.store(PHASE_STOP, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let cpu_after = (cpu_time(own_pid), cpu_time(server_pid));
    let counted = shared.counted.load(Ordering::Relaxed);

    // The calls in flight at the stop finish (bounded); the set aborts the rest when dropped.
    let mut all = Vec::new();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(latencies) = r {
                all.extend(latencies);
            }
        }
    })
    .await;
    let counts = perf.and_then(syscall_counts);
    if let Some(e) = shared
        .error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(format!("error: {e}"));
    }
    if counted == 0 {
        return Err("hang".into());
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
    };
    let calls = u32::try_from(counted).unwrap_or(u32::MAX);
    let per_call = |before: Option<Duration>, after: Option<Duration>| {
        Some(after?.checked_sub(before?)? / calls)
    };
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
    Ok(Figures {
        calls_per_sec: counted as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        client_cpu: per_call(cpu_before.0, cpu_after.0),
        server_cpu: per_call(cpu_before.1, cpu_after.1),
        syscalls,
        mix,
    })
}

/// Starts a row's calling tasks and measures them.
async fn run(row: Row, addr: SocketAddr, window: Duration, pid: u32, setup: &Setup) -> Outcome {
    let shared = Arc::new(Shared::new());
    let mut tasks = JoinSet::new();
    match (row.work, row.combo.client) {
        (Work::Unary { conns, per_conn }, Side::Ours | Side::Base) => spawn_callers(
            || OurCaller::new(addr),
            (conns, per_conn),
            &shared,
            &mut tasks,
        ),
        (Work::Unary { conns, per_conn }, Side::Volo) => spawn_callers(
            || VoloCaller::new(addr),
            (conns, per_conn),
            &shared,
            &mut tasks,
        ),
        (Work::Unary { conns, per_conn }, Side::Raw) => {
            spawn_raw(addr, (conns, per_conn), &shared, &mut tasks)
        }
        (Work::StreamPingpong { conns, per_conn }, _) => spawn_callers(
            || OurStreamCaller::new(addr),
            (conns, per_conn),
            &shared,
            &mut tasks,
        ),
        (Work::StreamBidi { streams }, _) => {
            match tokio::time::timeout(OPEN_TIMEOUT, open_bidi(addr, streams, &shared, &mut tasks))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("error: {e}")),
                Err(_) => return Err("hang: the streams never opened".into()),
            }
        }
    }
    load(&shared, &mut tasks, window, pid, setup).await
}

/// One row: a fresh server process and a fresh client runtime, every step bounded.
fn measure(row: Row, window: Duration, setup: &Setup) -> Outcome {
    let server = ServerProcess::start(row.combo.server, setup);
    let rt = one_worker_runtime();
    let addr = server.addr;
    let pid = server.child.id();
    let limit = OPEN_TIMEOUT + WARM_UP + window + DRAIN_TIMEOUT + Duration::from_secs(5);
    let outcome = rt.block_on(async move {
        tokio::time::timeout(limit, run(row, addr, window, pid, setup))
            .await
            .unwrap_or_else(|_| Err("hang: the row did not finish".into()))
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    drop(server);
    outcome
}

// ---------------------------------------------------------------------------------------------
// Report.

fn micros(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1}us", d.as_secs_f64() * 1e6),
    )
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
        "{first:<4} {:<24} {HEADER:<14} {:>10} {:>9} {:>9} {:>10} {:>10} {:>8}  mix/call",
        "scenario", "calls/s", "p50", "p99", "cli cpu", "srv cpu", "srv sys"
    );
}

fn print_row(run: &str, row: Row, f: &Outcome) {
    match f {
        Ok(f) => println!(
            "{run:<4} {:<24} {:<14} {:>10.0} {:>9} {:>9} {:>10} {:>10} {:>8}  {}",
            row.work.name(),
            row.combo.label(),
            f.calls_per_sec,
            micros(f.p50),
            micros(f.p99),
            cpu_micros(f.client_cpu),
            cpu_micros(f.server_cpu),
            f.syscalls
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}")),
            f.mix.as_deref().unwrap_or("-"),
        ),
        Err(e) => println!(
            "{run:<4} {:<24} {:<14} {e}",
            row.work.name(),
            row.combo.label()
        ),
    }
}

/// Median of each figure over the rounds that measured the row (each figure on its own).
fn medians(runs: &[Outcome]) -> Outcome {
    let runs: Vec<&Figures> = runs.iter().flatten().collect();
    if runs.is_empty() {
        return Err("no round measured this row".into());
    }
    let secs = |f: &dyn Fn(&Figures) -> Option<Duration>| {
        let v: Option<Vec<f64>> = runs.iter().map(|r| f(r).map(|d| d.as_secs_f64())).collect();
        v.and_then(median).map(Duration::from_secs_f64)
    };
    Ok(Figures {
        calls_per_sec: median(runs.iter().map(|f| f.calls_per_sec).collect()).unwrap_or(0.0),
        p50: secs(&|f| f.p50),
        p99: secs(&|f| f.p99),
        client_cpu: secs(&|f| f.client_cpu),
        server_cpu: secs(&|f| f.server_cpu),
        syscalls: runs
            .iter()
            .map(|f| f.syscalls)
            .collect::<Option<Vec<f64>>>()
            .and_then(median),
        mix: None,
    })
}

/// One figure of two rows as a ratio `a / b`, if both have it.
type Pick = fn(&Figures) -> Option<f64>;

const CALLS: Pick = |f| Some(f.calls_per_sec);
const SRV_CPU: Pick = |f| f.server_cpu.map(|d| d.as_secs_f64());

const PICKS: [(&str, Pick); 5] = [
    ("calls/s", CALLS),
    ("p50", |f| f.p50.map(|d| d.as_secs_f64())),
    ("p99", |f| f.p99.map(|d| d.as_secs_f64())),
    ("srv cpu", SRV_CPU),
    ("srv sys", |f| f.syscalls),
];

/// The per-round ratios `a / b` of a figure (rounds where both rows measured it).
fn per_round(a: &[Outcome], b: &[Outcome], pick: Pick) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter_map(|(x, y)| Some(pick(x.as_ref().ok()?)? / pick(y.as_ref().ok()?)?))
        .collect()
}

/// Prints, for a pair of rows, the median over the rounds of the per-round ratio of each
/// figure (and the per-round values).
fn ratio_line(label: &str, a: &[Outcome], b: &[Outcome]) {
    let mut cells = Vec::new();
    for (_, pick) in PICKS {
        let per_round = per_round(a, b, pick);
        let rounds: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
        cells.push(match median(per_round) {
            Some(m) => format!("{m:.2} ({})", rounds.join(" ")),
            None => "-".to_owned(),
        });
    }
    println!("{label:<30} {}", cells.join("  "));
}

/// The table (header and rows, markdown): every row against the floor, with the bars.
fn table(results: &[(Row, Vec<Outcome>)]) -> String {
    let runs_of = |row: Row| {
        results
            .iter()
            .find(|(r, _)| *r == row)
            .map(|(_, v)| v.as_slice())
    };
    let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
    let mut out = String::from(table::HEADER);
    for (row, v) in results {
        if v.is_empty() {
            continue;
        }
        let floor = row.work.floor();
        let is_floor = *row == floor;
        let floor_runs = runs_of(floor).filter(|_| !is_floor);
        let (ops, cpu) = match floor_runs {
            Some(b) => (
                median(per_round(v, b, CALLS)),
                median(per_round(v, b, SRV_CPU)),
            ),
            None => (None, None),
        };
        let med = medians(v).ok();
        let four_by_sixteen = matches!(
            row.work,
            Work::Unary {
                conns: 4,
                per_conn: 16
            } | Work::StreamPingpong {
                conns: 4,
                per_conn: 16
            }
        );
        let (bar, verdict) = match (row.work, row.combo.client, row.combo.server) {
            (Work::Unary { .. }, Side::Ours, Side::Ours) if four_by_sixteen => (
                format!("calls/s ≥ 0.5× the floor at 4x16: {}", times(ops)),
                verdict(v, &[ops.map(|r| r >= 0.5)]),
            ),
            (Work::StreamPingpong { .. }, _, _) if four_by_sixteen => (
                format!("calls/s ≥ 0.3× the floor at 4x16: {}", times(ops)),
                verdict(v, &[ops.map(|r| r >= 0.3)]),
            ),
            (Work::Unary { .. }, Side::Volo, Side::Ours) => {
                let volo = Row {
                    work: row.work,
                    combo: Combo::new(Side::Volo, Side::Volo),
                };
                let r = runs_of(volo).and_then(|b| median(per_round(v, b, SRV_CPU)));
                (
                    format!("srv CPU/call ≤ 0.7× volo→volo's: {}", times(r)),
                    verdict(v, &[r.map(|r| r <= 0.7)]),
                )
            }
            _ => (String::new(), String::new()),
        };
        out.push_str(&format!(
            "\n| TTHeader | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.work.name(),
            row.combo.label().replace("->", "→"),
            ops_cell(v, |f| f.calls_per_sec),
            fmt(med.as_ref().and_then(|f| us(f.p50)), 0),
            fmt(med.as_ref().and_then(|f| us(f.p99)), 0),
            fmt(med.as_ref().and_then(|f| us(f.server_cpu)), 2),
            if is_floor {
                "(the floor)".to_owned()
            } else {
                format!("raw → raw {}", floor.work.name())
            },
            if is_floor {
                "1.00×".to_owned()
            } else {
                times(ops)
            },
            if is_floor {
                "1.00×".to_owned()
            } else {
                times(cpu)
            },
            bar,
            verdict,
        ));
    }
    out
}

fn bench(window: Duration, runs: usize, base: Option<PathBuf>, rows_file: Option<PathBuf>) {
    let pinned = pin_self();
    let setup = Setup {
        pinned,
        perf: perf_works(),
        base,
    };
    println!(
        "TTHeader on loopback TCP: {MESSAGE_LEN}-byte messages, {:.1} s warm-up, {:.1} s per \
         row, {runs} interleaved rounds",
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
        "ours: TtHeaderClient pool_size(1) per connection, ConnectionMode::Multiplexed, Framing::Framed / \
         examples::server() on rpc_core::serve::Listener; ttstream rows: TTHeader Streaming"
    );
    println!(
        "volo: volo-thrift 0.12.7 multiplex client (one pipelined connection each) / volo server"
    );
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

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let mut results: Vec<(Row, Vec<Outcome>)> = rows(setup.base.is_some())
        .into_iter()
        .filter(|r| r.work.name().contains(only.as_str()))
        .map(|r| (r, Vec::new()))
        .collect();

    print_header("run");
    for run in 1..=runs {
        for (row, outcomes) in results.iter_mut() {
            let f = measure(*row, window, &setup);
            print_row(&run.to_string(), *row, &f);
            outcomes.push(f);
        }
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("load average after the run: {}", load.join(" "));
    }
    let runs_of = |row: Row| -> &[Outcome] {
        results
            .iter()
            .find(|(r, _)| *r == row)
            .map_or(&[], |(_, v)| v)
    };

    println!();
    println!("medians over {runs} rounds:");
    print_header("");
    for (row, v) in &results {
        print_row("", *row, &medians(v));
    }

    println!();
    println!(
        "ratios a/b: median of the per-round ratios (the rounds' values in parentheses); \
         calls/s above 1 = a faster, latency/cpu/syscalls below 1 = a cheaper"
    );
    println!("{:<30} {}", "a / b", PICKS.map(|(n, _)| n).join(" | "));
    for (conns, per_conn) in SHAPES {
        let work = Work::Unary { conns, per_conn };
        let at = |client, server| Row {
            work,
            combo: Combo::new(client, server),
        };
        let pairs = [
            (
                "srv: volo->ours / volo->volo",
                at(Side::Volo, Side::Ours),
                at(Side::Volo, Side::Volo),
            ),
            (
                "srv: volo->base / volo->volo",
                at(Side::Volo, Side::Base),
                at(Side::Volo, Side::Volo),
            ),
            (
                "srv: volo->ours / volo->base",
                at(Side::Volo, Side::Ours),
                at(Side::Volo, Side::Base),
            ),
            (
                "ours->ours / volo->volo",
                at(Side::Ours, Side::Ours),
                at(Side::Volo, Side::Volo),
            ),
            (
                "ours->ours / raw floor",
                at(Side::Ours, Side::Ours),
                at(Side::Raw, Side::Raw),
            ),
            (
                "ours->base / raw floor",
                at(Side::Ours, Side::Base),
                at(Side::Raw, Side::Raw),
            ),
            (
                "ours->ours / ours->base",
                at(Side::Ours, Side::Ours),
                at(Side::Ours, Side::Base),
            ),
        ];
        let (a0, b0) = (runs_of(pairs[0].1), runs_of(pairs[0].2));
        if a0.is_empty() && b0.is_empty() && runs_of(pairs[4].1).is_empty() {
            continue;
        }
        println!("{}:", work.name());
        for (label, a, b) in pairs {
            let (a, b) = (runs_of(a), runs_of(b));
            if !a.is_empty() && !b.is_empty() {
                ratio_line(label, a, b);
            }
        }
    }

    println!();
    let table = table(&results);
    println!("{table}");
    if let Some(path) = rows_file {
        if let Err(e) = std::fs::write(&path, format!("{table}\n")) {
            eprintln!("volo_bench: writing {}: {e}", path.display());
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: volo_bench [SECONDS] [--runs N] [--base EXE] [--rows FILE]");
    std::process::exit(2)
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
            let mut rows_file = None;
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
                    "--rows" => {
                        rows_file = Some(PathBuf::from(it.next().unwrap_or_else(|| usage())))
                    }
                    s => {
                        secs = s
                            .parse()
                            .ok()
                            .filter(|s: &f64| s.is_finite() && *s > 0.0)
                            .unwrap_or_else(|| usage())
                    }
                }
            }
            bench(Duration::from_secs_f64(secs), runs, base, rows_file);
        }
    }
}
