//! `cargo run --release -p interop-tests --bin volo_bench [-- SECONDS]`
//!
//! Our TTHeader pingpong side by side with volo-thrift 0.12.7, in one run, reported as ratios.
//!
//! Every row: loopback TCP, TTHeader + Framed binary payloads, the echo `PingPong` with a
//! 100-character `message`, 64 calls in flight on one connection, 0.5 s of warm-up then a fixed
//! measurement window (SECONDS, default 3). The four client → server combinations:
//!
//! * volo → volo: volo's multiplex client (calls pipelined on one connection, replies matched
//!   by seqid) against a volo server ([`interop_tests::volo_peer`]);
//! * ours → ours: `TtHeaderClient` (one connection, `UnaryMode::Mux`, `Framing::Framed`) under
//!   the generated `TestServiceClient`, against `examples::server()` served by `serve_tcp`;
//! * ours → volo and volo → ours, the same clients and servers crossed.
//!
//! Each server runs in its own process (this binary re-executed with `serve-volo` or
//! `serve-ours`, which prints its address and serves until its stdin closes), started afresh
//! for every row, so client and server never share runtime threads. Both sides use a
//! multi-thread tokio runtime with the default worker count; the client side builds a fresh
//! runtime for every row. Each combination is run twice, alternating (ours, volo, ours, volo),
//! so the run-to-run noise is visible next to the ratios.
//!
//! Per row: calls/s (calls completed inside the window over its length), p50 and p99 latency of
//! those calls, and the CPU time the client and the server process spent per call in the
//! window (from `/proc/<pid>/stat`; `-` where that is not readable).

#![forbid(unsafe_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::thrift as ours;
use interop_tests::echo as volo;
use interop_tests::volo_peer::{self, VoloServer};
use rpc_core::serve::Listener;
use rpc_transport_ttheader::{Framing, TtHeaderClient, TtHeaderProtocol, UnaryMode};
use tokio::io::AsyncBufReadExt;
use volo_thrift::MaybeException;

/// Calls in flight at once (one task each, all on the client's one connection).
const IN_FLIGHT: usize = 64;

/// Length of the `message` of every request (and so of every reply's `message`).
const MESSAGE_LEN: usize = 100;

/// Calls before the measurement window, not counted.
const WARM_UP: Duration = Duration::from_millis(500);

/// The measurement window when no SECONDS argument is given.
const DEFAULT_SECS: f64 = 3.0;

/// Runs of each combination (alternating ours, volo, ours, volo).
const RUNS: usize = 2;

/// Ticks of `utime`/`stime` in `/proc/<pid>/stat` per second (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// Whose code a client or a server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Ours: `rpc-transport-ttheader` under the `rpc-codegen` stubs of `examples`.
    Ours,
    /// volo-thrift 0.12.7 with volo-build's stubs.
    Volo,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::Volo => "volo",
        }
    }

    /// The subcommand that serves this side's echo server.
    fn serve_command(self) -> &'static str {
        match self {
            Side::Ours => "serve-ours",
            Side::Volo => "serve-volo",
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

/// What one measurement window gave.
#[derive(Clone, Debug)]
struct Figures {
    calls_per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// Client process CPU time per call in the window.
    client_cpu: Option<Duration>,
    /// Server process CPU time per call in the window.
    server_cpu: Option<Duration>,
}

// ---------------------------------------------------------------------------------------------
// Servers (child processes).

/// Serves `side`'s echo server on 127.0.0.1 until stdin closes; prints the address first.
fn serve(side: Side) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("server runtime");
    rt.block_on(async {
        match side {
            Side::Ours => {
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
        }
    });
    // Connections still open belong to a client that is gone; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(100));
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
    fn start(side: Side) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("own executable"))
            .arg(side.serve_command())
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

/// User + system CPU time of process `pid` so far (all its threads), if readable.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces): state is
    // field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
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

/// `IN_FLIGHT` tasks calling in a loop: warm-up, then the window, then stop.
async fn load<C: Caller>(caller: C, window: Duration, server_pid: u32) -> Figures {
    let phase = Arc::new(AtomicU8::new(PHASE_WARM_UP));
    let tasks: Vec<_> = (0..IN_FLIGHT)
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
        .collect();
    drop(caller);

    // The timed windows of a benchmark: sleeping is the measurement here, not a wait.
    tokio::time::sleep(WARM_UP).await;
    let own_pid = std::process::id();
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
    Figures {
        calls_per_sec: f64::from(calls) / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        client_cpu: per_call(cpu_before.0, cpu_after.0),
        server_cpu: per_call(cpu_before.1, cpu_after.1),
    }
}

/// One row: a fresh server process and a fresh client runtime.
fn measure(combo: Combo, window: Duration) -> Figures {
    let server = ServerProcess::start(combo.server);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let addr = server.addr;
    let pid = server.child.id();
    let figures = rt.block_on(async move {
        match combo.client {
            Side::Ours => load(OurCaller::new(addr), window, pid).await,
            Side::Volo => load(VoloCaller::new(addr), window, pid).await,
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
    d.map_or_else(|| "-".to_owned(), micros)
}

fn print_row(run: usize, combo: Combo, f: &Figures) {
    println!(
        "{run:>3}  {:<14} {:>10.0} {:>10} {:>10} {:>12} {:>12}",
        combo.label(),
        f.calls_per_sec,
        micros(f.p50),
        micros(f.p99),
        cpu_micros(f.client_cpu),
        cpu_micros(f.server_cpu),
    );
}

fn ratio_line(label: &str, ours: &Figures, volo: &Figures) {
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let cpu = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if !b.is_zero() => format!("{:.2}", ratio(a, b)),
        _ => "-".to_owned(),
    };
    println!(
        "{label:<19} {:>10.2} {:>10.2} {:>10.2} {:>12} {:>12}",
        ours.calls_per_sec / volo.calls_per_sec,
        ratio(ours.p50, volo.p50),
        ratio(ours.p99, volo.p99),
        cpu(ours.client_cpu, volo.client_cpu),
        cpu(ours.server_cpu, volo.server_cpu),
    );
}

/// The mean of several runs' figures (CPU only when every run has it).
fn mean(runs: &[Figures]) -> Figures {
    let n = runs.len() as u32;
    let sum = |f: &dyn Fn(&Figures) -> Duration| runs.iter().map(f).sum::<Duration>() / n;
    let cpu = |f: &dyn Fn(&Figures) -> Option<Duration>| {
        runs.iter().map(f).sum::<Option<Duration>>().map(|d| d / n)
    };
    Figures {
        calls_per_sec: runs.iter().map(|f| f.calls_per_sec).sum::<f64>() / f64::from(n),
        p50: sum(&|f| f.p50),
        p99: sum(&|f| f.p99),
        client_cpu: cpu(&|f| f.client_cpu),
        server_cpu: cpu(&|f| f.server_cpu),
    }
}

fn bench(window: Duration) {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "TTHeader + Framed pingpong on loopback TCP: {MESSAGE_LEN}-byte messages, {IN_FLIGHT} calls \
         in flight on 1 connection, {:.1} s warm-up, {:.1} s per row",
        WARM_UP.as_secs_f64(),
        window.as_secs_f64()
    );
    println!(
        "server in a separate process (fresh per row); client and server each a multi-thread \
         tokio runtime with the default {workers} workers"
    );
    println!(
        "ours: TtHeaderClient pool_size(1), UnaryMode::Mux, Framing::Framed / examples::server() \
         on rpc_core::serve::Listener"
    );
    println!("volo: volo-thrift 0.12.7 multiplex client (one pipelined connection) / volo server");
    println!("cpu/call: process CPU time (user + sys) in the window per completed call");
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("load average before the run: {}", load.join(" "));
    }
    println!();

    let ours_ours = Combo::new(Side::Ours, Side::Ours);
    let volo_volo = Combo::new(Side::Volo, Side::Volo);
    let ours_volo = Combo::new(Side::Ours, Side::Volo);
    let volo_ours = Combo::new(Side::Volo, Side::Ours);

    println!(
        "run  {:<14} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "client->server", "calls/s", "p50", "p99", "cli cpu/call", "srv cpu/call"
    );
    let mut results: Vec<(Combo, Vec<Figures>)> = [ours_ours, volo_volo, ours_volo, volo_ours]
        .into_iter()
        .map(|c| (c, Vec::new()))
        .collect();
    // Same-framework pair, then the crossed pair; within each, alternating ours, volo.
    for pair in [[ours_ours, volo_volo], [ours_volo, volo_ours]] {
        for run in 1..=RUNS {
            for combo in pair {
                let f = measure(combo, window);
                print_row(run, combo, &f);
                let slot = results
                    .iter_mut()
                    .find(|(c, _)| *c == combo)
                    .expect("every combo has a slot");
                slot.1.push(f);
            }
        }
    }
    let runs_of = |combo: Combo| -> &[Figures] {
        &results
            .iter()
            .find(|(c, _)| *c == combo)
            .expect("every combo has a slot")
            .1
    };

    println!();
    println!(
        "{:<19} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "ratio ours/volo", "calls/s", "p50", "p99", "cli cpu/call", "srv cpu/call"
    );
    println!("(calls/s above 1: ours faster; latency and cpu/call below 1: ours better)");
    let (oo, vv) = (runs_of(ours_ours), runs_of(volo_volo));
    for run in 0..RUNS {
        ratio_line(&format!("same-framework r{}", run + 1), &oo[run], &vv[run]);
    }
    ratio_line("same-framework mean", &mean(oo), &mean(vv));
    // The crossed rows split the difference: one side swapped, the other held fixed (means of
    // rows that did not run back to back, so noisier than the same-framework lines).
    println!("one side swapped, the other held fixed (means over the runs):");
    let (ov, vo) = (runs_of(ours_volo), runs_of(volo_ours));
    ratio_line("client (volo srv)", &mean(ov), &mean(vv));
    ratio_line("server (volo cli)", &mean(vo), &mean(vv));
    ratio_line("client (our srv)", &mean(oo), &mean(vo));
    ratio_line("server (our cli)", &mean(oo), &mean(ov));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve-ours") => serve(Side::Ours),
        Some("serve-volo") => serve(Side::Volo),
        arg => {
            let secs = match arg {
                None => DEFAULT_SECS,
                Some(s) => s
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .unwrap_or_else(|| panic!("usage: volo_bench [SECONDS], got {s:?}")),
            };
            bench(Duration::from_secs_f64(secs));
        }
    }
}
