//! Discovery on a real etcd (Debian's `etcd-server`, installed when missing, started by the
//! test on free ports with its data in a temp folder): real `echo-server` processes register
//! themselves, a balanced client in this process resolves and calls them, and the test kills,
//! stops and adds servers and restarts etcd under load.
//!
//! Prints the failover timeline (kill, first failed call, ejection, removal at lease expiry).

#[path = "support/etcd.rs"]
mod etcd_support;
mod support;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_support::Etcd;
use examples::idl::Thrift;
use examples::{EchoIdl, EchoRequest};
use rpc_core::balance::{Balanced, Policy};
use rpc_core::discovery::Resolver;
use rpc_core::resilience::{RetryLayer, RetryPolicy};
use rpc_core::{Address, CallOptions, Client};
use rpc_registry_etcd::EtcdRegistry;
use rpc_transport_ttheader::TtHeaderClient;
use support::spawn_echo_server;

/// The lease TTL the servers register with (etcd's minimum is about 1.5 s).
const TTL_S: u64 = 2;
/// Client tasks calling in a loop during the load phases.
const LOAD_TASKS: usize = 8;
/// The PingPong method: marked idempotent for the retry layer.
const PING_PONG: &str = "/echo.TestService/PingPong";

/// An echo-server registered in etcd; killed when dropped.
struct EchoServer {
    child: Child,
    addr: Address,
    _lines: mpsc::Receiver<String>,
}

impl EchoServer {
    fn start(etcd: &Etcd) -> EchoServer {
        let url = format!("etcd://{}/echo", etcd.host_port());
        let ttl = TTL_S.to_string();
        let (child, urls, lines) = spawn_echo_server(
            &[
                "--listen",
                "tcp://127.0.0.1:0",
                "--register",
                &url,
                "--lease-ttl-s",
                &ttl,
            ],
            1,
        );
        let want = format!("registered echo {}", urls[0]);
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(10))
                .expect("echo-server did not register");
            if line == want {
                break;
            }
        }
        EchoServer {
            child,
            addr: urls[0].parse().expect("an address"),
            _lines: lines,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig}");
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < end, "echo-server did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 2 ms until it holds; panics with `what` after `timeout`. Returns when.
async fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Instant {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return Instant::now();
        }
        assert!(Instant::now() < end, "timed out after {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn has(bal: &Balanced, a: &Address) -> bool {
    bal.instances().iter().any(|i| &i.address == a)
}

fn opened(bal: &Balanced, a: &Address) -> u64 {
    bal.stats()
        .iter()
        .find(|s| &s.address == a)
        .map_or(0, |s| s.opened)
}

/// Calls running in the background until stopped, recording every failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<(Instant, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &<Thrift as EchoIdl>::Client) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..LOAD_TASKS)
            .map(|t| {
                let (client, stop, ok, failures) =
                    (client.clone(), stop.clone(), ok.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let req = EchoRequest {
                            message: format!("load {t} {n}"),
                            // Calls stay in flight for a while, so a kill catches some.
                            sleep_ms: Some(3),
                            ..Default::default()
                        };
                        let opts = CallOptions::new().timeout(Duration::from_secs(5));
                        match Thrift::ping_pong(&client, req.clone(), opts).await {
                            Ok(r) if r.message == req.message => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failures
                                .lock()
                                .unwrap()
                                .push((Instant::now(), format!("wrong echo {r:?}"))),
                            Err(e) => failures
                                .lock()
                                .unwrap()
                                .push((Instant::now(), e.to_string())),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    fn failures(&self) -> Vec<(Instant, String)> {
        self.failures.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` more calls succeeded.
    async fn progress(&self, n: u64, what: &str) {
        let start = self.ok.load(Ordering::Relaxed);
        until(what, Duration::from_secs(10), || {
            self.ok.load(Ordering::Relaxed) >= start + n
        })
        .await;
    }

    async fn stop(self) -> (u64, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let f = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), f)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_register_clients_balance_and_ride_out_failures_on_a_real_etcd() {
    let test_start = Instant::now();
    let mut etcd = Etcd::start().await;
    let registry = EtcdRegistry::new([etcd.endpoint()]);

    // Three servers register; the client resolves them.
    let mut a = EchoServer::start(&etcd);
    let mut b = EchoServer::start(&etcd);
    let c = EchoServer::start(&etcd);
    let resolution = registry.resolve("echo").await.expect("resolve");
    let bal = Balanced::connect::<TtHeaderClient>(resolution, Policy::RoundRobin);
    until("three instances resolved", Duration::from_secs(5), || {
        bal.instances().len() == 3
    })
    .await;
    // Failed attempts counted under the retry layer: failed attempts - failed calls = retries.
    let failed_attempts = Arc::new(AtomicU64::new(0));
    let first_failed_attempt: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (counted, first) = (failed_attempts.clone(), first_failed_attempt.clone());
    let client = Thrift::client(
        Client::builder(bal.clone())
            .unary_layer(RetryLayer::new(
                RetryPolicy::default().idempotent([PING_PONG]),
            ))
            .unary_layer(tower::util::MapResultLayer::new(
                move |r: Result<rpc_core::unary::UnaryResponse, rpc_core::Status>| {
                    if r.is_err() {
                        counted.fetch_add(1, Ordering::Relaxed);
                        first.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                    r
                },
            ))
            .build(),
    );

    // Calls spread over all three (round robin: evenly).
    for i in 0..300 {
        let req = EchoRequest {
            message: format!("spread {i}"),
            ..Default::default()
        };
        let r = Thrift::ping_pong(&client, req, CallOptions::new())
            .await
            .expect("call");
        assert_eq!(r.message, format!("spread {i}"));
    }
    let counts: Vec<u64> = [&a, &b, &c].iter().map(|s| opened(&bal, &s.addr)).collect();
    eprintln!("calls per instance (round robin, 300 calls): {counts:?}");
    assert!(
        counts.iter().all(|&n| (95..=105).contains(&n)),
        "{counts:?}"
    );

    // kill -9 one mid-load: calls keep succeeding; it leaves within its lease TTL.
    let load = Load::start(&client);
    load.progress(200, "load before the kill").await;
    let failed_attempts_at_kill = failed_attempts.load(Ordering::Relaxed);
    let failed_calls_at_kill = load.failures().len() as u64;
    let killed = Instant::now();
    a.signal("-KILL");
    a.wait_exit(Duration::from_secs(5));
    let ejected = until(
        "the killed instance is ejected",
        Duration::from_secs(5),
        || bal.stats().iter().any(|s| s.address == a.addr && s.ejected) || !has(&bal, &a.addr),
    )
    .await;
    let left = until(
        "the killed instance leaves the set at lease expiry",
        Duration::from_secs(TTL_S + 4),
        || !has(&bal, &a.addr),
    )
    .await;
    load.progress(200, "load after the kill").await;
    let failed_after_kill = load.failures();
    let retried = (failed_attempts.load(Ordering::Relaxed) - failed_attempts_at_kill)
        .saturating_sub(failed_after_kill.len() as u64 - failed_calls_at_kill);
    let first_failure = failed_after_kill.first().map(|(t, _)| *t - killed);
    let first_failed_attempt = first_failed_attempt.lock().unwrap().map(|t| t - killed);
    eprintln!(
        "failover timeline: kill -9 at 0; first failed attempt: {first_failed_attempt:?}; \
         first failed call: {first_failure:?}; ejected after {:?}; \
         removed from the set after {:?} (lease TTL {TTL_S} s); {retried} failed attempts retried; \
         failed calls: {} {:?}",
        ejected - killed,
        left - killed,
        failed_after_kill.len(),
        failed_after_kill.iter().map(|(_, e)| e).collect::<Vec<_>>()
    );
    assert!(
        failed_after_kill.len() <= LOAD_TASKS,
        "at most the calls in flight on the killed instance may fail: {failed_after_kill:?}"
    );
    assert!(
        left - killed <= Duration::from_secs(TTL_S + 3),
        "left after {:?}",
        left - killed
    );

    // SIGTERM another: it deregisters at once and no call fails.
    let before = load.failures().len();
    let termed = Instant::now();
    b.signal("-TERM");
    let gone = until(
        "the stopped instance leaves the set at once",
        Duration::from_secs(2),
        || !has(&bal, &b.addr),
    )
    .await;
    b.wait_exit(Duration::from_secs(10));
    load.progress(100, "load after SIGTERM").await;
    eprintln!("SIGTERM: removed from the set after {:?}", gone - termed);
    assert!(
        gone - termed < Duration::from_secs(1),
        "{:?}",
        gone - termed
    );
    assert_eq!(
        load.failures().len(),
        before,
        "no call fails when an instance stops gracefully: {:?}",
        &load.failures()[before..]
    );

    // A fourth registers: it takes calls without a client restart.
    let d = EchoServer::start(&etcd);
    let joined = Instant::now();
    until(
        "the new instance joins the set",
        Duration::from_secs(5),
        || has(&bal, &d.addr),
    )
    .await;
    until(
        "the new instance takes calls",
        Duration::from_secs(5),
        || opened(&bal, &d.addr) > 10,
    )
    .await;
    eprintln!("new instance taking calls after {:?}", joined.elapsed());

    // etcd restarts: the client keeps its last set and calls go on; then it watches again.
    let set_before: Vec<Address> = bal.instances().into_iter().map(|i| i.address).collect();
    let before = load.failures().len();
    etcd.stop();
    load.progress(300, "load while etcd is down").await;
    let set_down: Vec<Address> = bal.instances().into_iter().map(|i| i.address).collect();
    assert_eq!(
        set_down, set_before,
        "the last known set is kept while etcd is down"
    );
    etcd.start_again().await;
    let e = EchoServer::start(&etcd);
    let restarted = Instant::now();
    until(
        "a server registered after the etcd restart reaches the client (re-watch)",
        Duration::from_secs(10),
        || has(&bal, &e.addr),
    )
    .await;
    eprintln!(
        "etcd restart: change seen {:?} after registration",
        restarted.elapsed()
    );
    // The servers that lived through the restart keep (or re-establish) their leases: still
    // registered after longer than a TTL.
    tokio::time::sleep(Duration::from_secs(TTL_S + 1)).await;
    let fresh = registry
        .resolve("echo")
        .await
        .expect("resolve after restart");
    let mut now: Vec<String> = fresh
        .current()
        .iter()
        .map(|i| i.address.to_string())
        .collect();
    now.sort();
    let mut want: Vec<String> = [&c.addr, &d.addr, &e.addr]
        .iter()
        .map(|a| a.to_string())
        .collect();
    want.sort();
    assert_eq!(now, want, "registrations survive an etcd restart");
    assert_eq!(
        load.failures().len(),
        before,
        "no call fails across the etcd restart: {:?}",
        &load.failures()[before..]
    );
    let (ok, failures) = load.stop().await;
    eprintln!("load: {ok} calls succeeded, {} failed", failures.len());

    // The echo-client binary resolves, balances and checks the contract with each policy.
    for lb in ["rr", "p2c", "hash"] {
        let out = Command::new(env!("CARGO_BIN_EXE_echo-client"))
            .args([
                "--connect",
                &format!("etcd://{}/echo", etcd.host_port()),
                "--lb",
                lb,
            ])
            .output()
            .expect("run echo-client");
        assert!(
            out.status.success(),
            "echo-client --lb {lb}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop((c, d, e));
    eprintln!("whole etcd test: {:?}", test_start.elapsed());
}
