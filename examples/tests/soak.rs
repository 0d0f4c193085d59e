//! Soak with faults (`cargo test -p examples --test soak -- --soak SECS`; without `--soak` it
//! only says how to run it, so `cargo test`'s default run stays short).
//!
//! Real `echo-server` processes and a real etcd (Debian's `etcd-server`, installed when
//! missing), every transport, every mode, both IDLs, small and 64 KiB messages, calls cancelled
//! at random points and calls that run into their deadline, while the soak:
//!
//! * kills (`SIGKILL`) or stops (`SIGTERM`, graceful) and restarts the servers that register in
//!   etcd, and the shared-memory server, on a cycle;
//! * resets (RST, `SO_LINGER` 0) every connection that passes its TCP proxy, on a cycle;
//! * kills and restarts etcd, on a cycle.
//!
//! One server (`stable`) is never touched: calls to it straight over TCP and shared memory
//! must all succeed (the faults elsewhere must not leak into them). Every call is counted:
//! sent, succeeded, cancelled by the soak, and failed (by status code). At the end it asserts:
//!
//! * no call lost: every call sent ended, and none ran more than [`HANG_SLACK`] past its
//!   deadline (a watchdog per call);
//! * no message lost, duplicated or crossed: every response carries its call's id, streams
//!   carry each index once and in order, client-streaming concatenations are exact;
//! * only the statuses a fault explains (UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, and
//!   RESOURCE_EXHAUSTED while a server drains), never INTERNAL, UNKNOWN and the like;
//! * calls meant to run into their deadline end with DEADLINE_EXCEEDED (or UNAVAILABLE where
//!   their server was killed) and no later than the watchdog allows;
//! * the stable server's RSS and open fds, and this process's, are flat after warm-up: the
//!   highest reading of the last third of the run is within a slack of the highest of the
//!   first third after warm-up.

#[path = "support/etcd.rs"]
mod etcd_support;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_support::Etcd;
use examples::idl::{PingPongError, Proto, Thrift};
use examples::{EchoIdl, EchoRequest, EchoResponse};
use rpc_core::balance::{Balanced, Policy};
use rpc_core::discovery::Resolver;
use rpc_core::{Address, CallOptions, Client, Code, Status};
use rpc_registry_etcd::EtcdRegistry;
use rpc_transport_grpc::GrpcClient;
use rpc_transport_shm::ShmClient;
use rpc_transport_ttheader::TtHeaderClient;
use support::spawn_echo_server;
use tokio::sync::watch;

/// Tasks calling in a loop.
const CALLERS: usize = 12;
/// The deadline of an ordinary call.
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// How far past its deadline a call may end before the watchdog counts it as hung: the
/// deadline is enforced by timers, so only scheduling delay on a loaded machine is allowed.
const HANG_SLACK: Duration = Duration::from_secs(2);
/// A call meant to run into its deadline: the server sleeps this long...
const SLOW_HANDLER_MS: i64 = 600;
/// ...and the call gives up after this.
const SHORT_DEADLINE: Duration = Duration::from_millis(100);
/// The cycle of each fault.
const KILL_EVERY: Duration = Duration::from_secs(3);
const RESET_EVERY: Duration = Duration::from_secs(2);
const ETCD_RESTART_EVERY: Duration = Duration::from_secs(9);
/// The lease TTL the registered servers use (etcd's minimum is about 1.5 s).
const TTL_S: &str = "2";
/// Readings before this share of the run are warm-up.
const WARM_UP_SHARE: f64 = 0.25;
/// How much the last third's highest RSS may exceed the first third's (after warm-up):
/// allocator slack and per-connection buffers of whatever was in flight at that moment.
const RSS_SLACK: u64 = 24 << 20;
/// Likewise for open fds (connections and shm sessions in flight at the reading).
const FD_SLACK: u64 = 48;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs = args
        .iter()
        .position(|a| a == "--soak")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse::<u64>().expect("--soak SECS"));
    let Some(secs) = secs else {
        println!("soak: not run (pass `-- --soak SECS` to run it)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(soak(Duration::from_secs(secs)));
}

// ------------------------------------------------------------------------------- processes

/// An `echo-server` child, killed when dropped.
struct EchoServer {
    child: Child,
    urls: Vec<String>,
    _lines: mpsc::Receiver<String>,
}

impl EchoServer {
    fn start(args: &[&str]) -> EchoServer {
        let listens = args.iter().filter(|a| **a == "--listen").count();
        let (child, urls, lines) = spawn_echo_server(args, listens);
        EchoServer {
            child,
            urls,
            _lines: lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `SIGKILL`, or `SIGTERM` and a bounded wait for the graceful exit.
    fn stop(mut self, graceful: bool) {
        if graceful {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("echo-server did not exit within 10 s of SIGTERM");
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RSS bytes and open fds of `pid` (`/proc`), or `None` once it is gone.
fn footprint(pid: u32) -> Option<(u64, u64)> {
    let rss = examples::measure::rss(pid)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

// ----------------------------------------------------------------------------------- proxy

/// A TCP proxy whose connections are all reset (RST) each time [`ResettingProxy::reset`] is
/// called.
struct ResettingProxy {
    addr: SocketAddr,
    generation: watch::Sender<u64>,
}

impl ResettingProxy {
    async fn start(target: SocketAddr) -> ResettingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let (generation, watch_rx) = watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut reset = watch_rx.clone();
                reset.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut a, mut b) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = reset.changed() => {
                            // Linger 0: the close is an RST, as a crashed middlebox sends.
                            let _ = a.set_zero_linger();
                            let _ = b.set_zero_linger();
                        }
                    }
                });
            }
        });
        ResettingProxy { addr, generation }
    }

    fn reset(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

// ----------------------------------------------------------------------------------- calls

/// Where a call goes.
struct Target {
    name: &'static str,
    /// No fault touches this path: every ordinary call must succeed.
    stable: bool,
    client: Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Unary,
    ClientStreaming,
    ServerStreaming,
    Bidi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Must succeed unless a fault explains the failure.
    Ordinary,
    /// Dropped after a random delay (cancel at a random point of the call).
    Cancel(Duration),
    /// The handler sleeps past the call's short deadline.
    Deadline,
}

/// How one call ended.
#[derive(Debug)]
enum End {
    Ok,
    CancelledBySoak,
    Failed(Code, String),
    /// Wrong, missing, extra or crossed messages.
    Corrupt(String),
}

/// A small xorshift generator: the soak's choices, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn text(id: u64, part: usize, big: bool) -> String {
    let pad = if big { 64 * 1024 } else { 16 };
    format!("{id}.{part}:{}", "x".repeat(pad))
}

fn req(message: String, slow: bool) -> EchoRequest {
    EchoRequest {
        message,
        repeat: None,
        fail: None,
        sleep_ms: slow.then_some(SLOW_HANDLER_MS),
    }
}

fn check(got: EchoResponse, message: &str, index: i32) -> Result<(), End> {
    if got.message == message && got.index.unwrap_or(0) == index {
        Ok(())
    } else {
        let shown: String = got.message.chars().take(24).collect();
        Err(End::Corrupt(format!(
            "expected index {index} of {:?}, got {:?} index {:?}",
            &message[..message.len().min(24)],
            shown,
            got.index
        )))
    }
}

fn status(s: Status) -> End {
    End::Failed(s.code(), s.message().to_owned())
}

/// One call of `mode`; every response checked against what this call sent.
async fn call<I: EchoIdl>(c: &I::Client, id: u64, mode: Mode, slow: bool, big: bool) -> End {
    let options = if slow {
        CallOptions::new().timeout(SHORT_DEADLINE)
    } else {
        CallOptions::new().timeout(CALL_DEADLINE)
    };
    let run = async {
        match mode {
            Mode::Unary => {
                let m = text(id, 0, big);
                match I::ping_pong(c, req(m.clone(), slow), options).await {
                    Ok(r) => check(r, &m, 0),
                    Err(PingPongError::Status(s)) => Err(status(s)),
                    Err(e) => Err(End::Corrupt(format!("unexpected {e}"))),
                }
            }
            Mode::ClientStreaming => {
                let mut call = I::echo_client(c, options).await.map_err(status)?;
                let mut all = String::new();
                for part in 0..3 {
                    let m = text(id, part, big && part == 0);
                    all.push_str(&m);
                    call.send(req(m, slow && part == 0).into())
                        .await
                        .map_err(status)?;
                }
                let r = call.close_and_recv().await.map_err(status)?;
                check(r.into(), &all, 3)
            }
            Mode::ServerStreaming => {
                let m = text(id, 0, big);
                let mut r = req(m.clone(), slow);
                r.repeat = Some(5);
                let mut call = I::echo_server(c, r, options).await.map_err(status)?;
                let mut index = 0;
                while let Some(r) = call.recv().await.map_err(status)? {
                    check(r.into(), &m, index)?;
                    index += 1;
                }
                if index == 5 {
                    Ok(())
                } else {
                    Err(End::Corrupt(format!("5 responses expected, got {index}")))
                }
            }
            Mode::Bidi => {
                let mut call = I::echo(c, options).await.map_err(status)?;
                for part in 0..3 {
                    let m = text(id, part, big && part == 1);
                    call.send(req(m.clone(), slow && part == 0).into())
                        .await
                        .map_err(status)?;
                    match call.recv().await.map_err(status)? {
                        Some(r) => check(r.into(), &m, part as i32)?,
                        None => return Err(End::Corrupt(format!("ended before reply {part}"))),
                    }
                }
                call.close_send().map_err(status)?;
                match call.recv().await.map_err(status)? {
                    None => Ok(()),
                    Some(extra) => Err(End::Corrupt(format!("extra reply {extra:?}"))),
                }
            }
        }
    };
    match run.await {
        Ok(()) => End::Ok,
        Err(e) => e,
    }
}

// --------------------------------------------------------------------------------- counting

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ended: AtomicU64,
    /// (target, kind, outcome) -> calls.
    outcomes: Mutex<BTreeMap<(String, String, String), u64>>,
    /// Everything that breaks a promise, with its details.
    violations: Mutex<Vec<String>>,
}

impl Counts {
    fn record(&self, target: &str, kind: &str, outcome: String) {
        *self
            .outcomes
            .lock()
            .unwrap()
            .entry((target.to_owned(), kind.to_owned(), outcome))
            .or_default() += 1;
    }

    fn violation(&self, v: String) {
        let mut all = self.violations.lock().unwrap();
        if all.len() < 50 {
            eprintln!("soak: VIOLATION {v}");
        }
        all.push(v);
    }
}

/// Codes a fault (a killed server, a reset connection, a restart, a drain) explains.
fn explained(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::ResourceExhausted
    )
}

async fn caller(seed: u64, targets: Arc<Vec<Target>>, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    let mut rng = Rng(seed | 1);
    while !stop.load(Ordering::Relaxed) {
        let t = &targets[rng.below(targets.len() as u64) as usize];
        let mode = [
            Mode::Unary,
            Mode::ClientStreaming,
            Mode::ServerStreaming,
            Mode::Bidi,
        ][rng.below(4) as usize];
        let kind = match rng.below(10) {
            0 => Kind::Cancel(Duration::from_micros(rng.below(5_000))),
            1 => Kind::Deadline,
            _ => Kind::Ordinary,
        };
        let big = rng.below(8) == 0;
        let thrift = rng.below(2) == 0;
        let id = counts.sent.fetch_add(1, Ordering::Relaxed);
        let slow = kind == Kind::Deadline;
        let fut = async {
            if thrift {
                call::<Thrift>(&Thrift::client(t.client.clone()), id, mode, slow, big).await
            } else {
                call::<Proto>(&Proto::client(t.client.clone()), id, mode, slow, big).await
            }
        };
        let deadline = if slow { SHORT_DEADLINE } else { CALL_DEADLINE };
        let started = Instant::now();
        let end = match kind {
            Kind::Cancel(after) => match tokio::time::timeout(after, fut).await {
                Ok(end) => end,
                Err(_) => End::CancelledBySoak,
            },
            _ => match tokio::time::timeout(deadline + HANG_SLACK, fut).await {
                Ok(end) => end,
                Err(_) => {
                    counts.violation(format!(
                        "{} {mode:?} call {id} hung past its deadline ({:?})",
                        t.name,
                        started.elapsed()
                    ));
                    End::Failed(Code::Unknown, "hung".into())
                }
            },
        };
        counts.ended.fetch_add(1, Ordering::Relaxed);
        let kind_name = match kind {
            Kind::Ordinary => "ordinary",
            Kind::Cancel(_) => "cancel",
            Kind::Deadline => "deadline",
        };
        let outcome = match &end {
            End::Ok => "ok".to_owned(),
            End::CancelledBySoak => "cancelled by soak".to_owned(),
            End::Failed(code, _) => format!("{code:?}"),
            End::Corrupt(_) => "CORRUPT".to_owned(),
        };
        counts.record(t.name, kind_name, outcome);
        match (&end, kind) {
            (End::Corrupt(why), _) => {
                counts.violation(format!("{} {mode:?} call {id}: {why}", t.name))
            }
            (End::Failed(code, msg), Kind::Ordinary) if t.stable || !explained(*code) => counts
                .violation(format!(
                    "{} {mode:?} call {id} failed: {code:?} {msg}",
                    t.name
                )),
            (End::Ok, Kind::Deadline) => counts.violation(format!(
                "{} {mode:?} call {id} succeeded past its deadline",
                t.name
            )),
            (End::Failed(code, msg), Kind::Deadline)
                if *code != Code::DeadlineExceeded && (t.stable || !explained(*code)) =>
            {
                counts.violation(format!(
                    "{} {mode:?} deadline call {id} ended {code:?} {msg}",
                    t.name
                ))
            }
            (End::Failed(code, msg), Kind::Cancel(_)) if !explained(*code) => counts.violation(
                format!("{} {mode:?} call {id} failed: {code:?} {msg}", t.name),
            ),
            _ => {}
        }
    }
}

// ------------------------------------------------------------------------------------ soak

/// Stops `old` (see [`EchoServer::stop`]) and starts a server with `args`, off the runtime's
/// workers: both wait on the child process.
async fn restart(old: EchoServer, graceful: bool, args: Vec<String>) -> EchoServer {
    tokio::task::spawn_blocking(move || {
        old.stop(graceful);
        EchoServer::start(&strs(&args))
    })
    .await
    .expect("restart")
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn temp_path(what: &str) -> String {
    std::env::temp_dir()
        .join(format!("rpc-soak-{}-{what}", std::process::id()))
        .display()
        .to_string()
}

async fn soak(length: Duration) {
    let started = Instant::now();
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 2_654_435_761);
    println!("soak: {length:?}, seed {seed} (SOAK_SEED repeats the choices)");
    let mut etcd = Etcd::start().await;
    let register = format!("etcd://{}/soak", etcd.host_port());

    // The stable server: TCP (TTHeader and gRPC) and shared memory; no fault touches it.
    let stable_shm = format!("shm://{}", temp_path("stable"));
    let stable = EchoServer::start(&["--listen", "tcp://127.0.0.1:0", "--listen", &stable_shm]);
    let stable_tcp: Address = stable.urls[0].parse().expect("tcp url");
    let stable_sock = stable_tcp.socket_addr().expect("socket addr");
    let proxy = ResettingProxy::start(stable_sock).await;
    let registered = |n: usize| -> Vec<String> {
        vec![
            "--listen".into(),
            "tcp://127.0.0.1:0".into(),
            "--register".into(),
            register.clone(),
            "--lease-ttl-s".into(),
            TTL_S.into(),
            "--weight".into(),
            (n + 1).to_string(),
        ]
    };
    let mut churn: Vec<Option<EchoServer>> = (0..2)
        .map(|n| Some(EchoServer::start(&strs(&registered(n)))))
        .collect();
    let churn_shm = temp_path("churn");
    let churn_shm_url = format!("shm://{churn_shm}");
    let mut churn_shm_server = Some(EchoServer::start(&["--listen", &churn_shm_url]));

    let registry = EtcdRegistry::new([etcd.endpoint()]);
    let tt_bal = Balanced::connect::<TtHeaderClient>(
        registry.resolve("soak").await.expect("resolve"),
        Policy::RoundRobin,
    );
    let grpc_bal = Balanced::connect::<GrpcClient>(
        registry.resolve("soak").await.expect("resolve"),
        Policy::RoundRobin,
    );
    let proxied = Address::from(proxy.addr);
    let targets = Arc::new(vec![
        Target {
            name: "stable ttheader/tcp",
            stable: true,
            client: Client::new(TtHeaderClient::new(stable_tcp.clone())),
        },
        Target {
            name: "stable grpc/tcp",
            stable: true,
            client: Client::new(GrpcClient::new(stable_tcp.clone())),
        },
        Target {
            name: "stable shm",
            stable: true,
            client: Client::new(ShmClient::new(rpc_core::Address::shm(temp_path("stable")))),
        },
        Target {
            name: "reset ttheader/tcp",
            stable: false,
            client: Client::new(TtHeaderClient::new(proxied.clone())),
        },
        Target {
            name: "reset grpc/tcp",
            stable: false,
            client: Client::new(GrpcClient::new(proxied)),
        },
        Target {
            name: "etcd ttheader (churn)",
            stable: false,
            client: Client::new(tt_bal.clone()),
        },
        Target {
            name: "etcd grpc (churn)",
            stable: false,
            client: Client::new(grpc_bal.clone()),
        },
        Target {
            name: "churn shm",
            stable: false,
            client: Client::new(ShmClient::new(rpc_core::Address::shm(&churn_shm))),
        },
    ]);

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            tokio::spawn(caller(
                seed.wrapping_add(i as u64 * 0x9E37_79B9),
                targets.clone(),
                counts.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Faults and readings, until the time is up.
    let own_pid = std::process::id();
    let mut readings: Vec<Reading> = Vec::new();
    let (mut last_kill, mut last_reset, mut last_etcd) = (started, started, started);
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut n = 0usize;
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        if now - last_reset >= RESET_EVERY {
            proxy.reset();
            *faults.entry("proxy resets").or_default() += 1;
            last_reset = now;
        }
        if now - last_kill >= KILL_EVERY {
            let graceful = n % 2 == 1;
            let which = n % 3;
            let (slot, args) = if which < 2 {
                (&mut churn[which], registered(which))
            } else {
                (
                    &mut churn_shm_server,
                    vec!["--listen".to_owned(), churn_shm_url.clone()],
                )
            };
            let old = slot.take().expect("running");
            *slot = Some(restart(old, graceful, args).await);
            *faults
                .entry(if graceful {
                    "server SIGTERM + restart"
                } else {
                    "server SIGKILL + restart"
                })
                .or_default() += 1;
            n += 1;
            last_kill = Instant::now();
        }
        if now - last_etcd >= ETCD_RESTART_EVERY {
            etcd.stop();
            tokio::time::sleep(Duration::from_millis(300)).await;
            etcd.start_again().await;
            *faults.entry("etcd kill + restart").or_default() += 1;
            last_etcd = Instant::now();
        }
        if let (Some(s), Some(o)) = (footprint(stable.pid()), footprint(own_pid)) {
            readings.push((started.elapsed(), s, o));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        tokio::time::timeout(CALL_DEADLINE + HANG_SLACK * 2, c)
            .await
            .expect("callers stop")
            .expect("caller task");
    }

    // The report.
    let sent = counts.sent.load(Ordering::Relaxed);
    let ended = counts.ended.load(Ordering::Relaxed);
    println!(
        "soak: {sent} calls sent, {ended} ended in {:?}",
        started.elapsed()
    );
    println!("soak: faults: {faults:?}");
    println!("| target | kind | outcome | calls |\n|---|---|---|---|");
    for ((t, k, o), n) in counts.outcomes.lock().unwrap().iter() {
        println!("| {t} | {k} | {o} | {n} |");
    }
    let flat = flat_after_warm_up(&readings, length);
    for line in &flat.report {
        println!("soak: {line}");
    }

    let violations = counts.violations.lock().unwrap().clone();
    assert_eq!(sent, ended, "calls lost: sent {sent}, ended {ended}");
    assert!(
        violations.is_empty(),
        "{} violations, first: {:?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
    let ok: u64 = counts
        .outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|((_, _, o), _)| o == "ok")
        .map(|(_, n)| n)
        .sum();
    assert!(ok > sent / 2, "only {ok} of {sent} calls succeeded");
    assert!(flat.problems.is_empty(), "not flat: {:?}", flat.problems);
    drop((stable, churn, churn_shm_server, etcd));
}

/// When (since the start), and (RSS bytes, open fds) of the stable server and of this process.
type Reading = (Duration, (u64, u64), (u64, u64));

struct Flatness {
    report: Vec<String>,
    problems: Vec<String>,
}

/// Compares the highest readings of the first and last thirds after warm-up.
fn flat_after_warm_up(readings: &[Reading], length: Duration) -> Flatness {
    let warm = length.mul_f64(WARM_UP_SHARE);
    let after: Vec<_> = readings.iter().filter(|r| r.0 >= warm).collect();
    let third = after.len() / 3;
    let mut out = Flatness {
        report: Vec::new(),
        problems: Vec::new(),
    };
    if third == 0 {
        out.problems
            .push(format!("too few readings ({}) to judge", readings.len()));
        return out;
    }
    let (first, last) = (&after[..third], &after[after.len() - third..]);
    type Pick = fn(&Reading) -> u64;
    let series: [(&str, Pick, u64); 4] = [
        ("stable server RSS", |r| r.1 .0, RSS_SLACK),
        ("stable server fds", |r| r.1 .1, FD_SLACK),
        ("soak process RSS", |r| r.2 .0, RSS_SLACK),
        ("soak process fds", |r| r.2 .1, FD_SLACK),
    ];
    for (name, pick, slack) in series {
        let a = first.iter().map(|r| pick(r)).max().unwrap_or(0);
        let b = last.iter().map(|r| pick(r)).max().unwrap_or(0);
        let show = |v: u64| {
            if name.ends_with("RSS") {
                format!("{:.1} MiB", v as f64 / (1 << 20) as f64)
            } else {
                v.to_string()
            }
        };
        out.report.push(format!(
            "{name}: first third max {}, last third max {} (slack {})",
            show(a),
            show(b),
            show(slack)
        ));
        if b > a + slack {
            out.problems
                .push(format!("{name} grew from {} to {}", show(a), show(b)));
        }
    }
    out
}
