//! Shared by the memory-bound tests (`memory_bound_grpc.rs`, `memory_bound_shm.rs`): the
//! `echo-server` child with a small byte budget, its RSS sampled while an attack runs, the
//! bound the crates document (RSS over baseline ≤ budget + F × connections), and a
//! well-behaved client whose calls are timed while it all happens.

use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const KIB: u64 = 1024;
pub(crate) const MIB: u64 = 1024 * KIB;

/// The server-wide budget (`--max-buffered-bytes`) every memory-bound test runs with.
pub(crate) const BUDGET: u64 = 32 * MIB;

/// The per-connection fixed cost the gRPC and shm transports document (`F`).
pub(crate) const PER_CONNECTION: u64 = 96 * KIB;

/// What one well-behaved call may take before the test fails (not a speed assertion: a
/// call that is not answered at all must not hang the test).
pub(crate) const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// The environment the server child runs with: glibc's malloc raises its mmap threshold to
/// the size of any large block freed (up to 32 MiB), after which freed message buffers stay
/// in the heap and in RSS rather than going back to the system, so RSS follows the
/// high-water mark of the allocator's history as well as what is held (with glibc's
/// defaults the attacks measured up to 7 % above the bound). The documented bound is for a
/// fixed threshold, or an allocator that returns large blocks (jemalloc, mimalloc).
pub(crate) const SERVER_ENV: &[(&str, &str)] = &[("MALLOC_MMAP_THRESHOLD_", "131072")];

/// The bound for `connections` hostile connections (the well-behaved client's one included).
pub(crate) fn bound(connections: u64) -> u64 {
    BUDGET + PER_CONNECTION * connections
}

/// The server child; killed on drop.
pub(crate) struct ServerChild {
    pub(crate) child: Child,
}

impl ServerChild {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn rss(&self) -> u64 {
        examples::measure::rss(self.pid()).unwrap_or(0)
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples a process's RSS every 10 ms until finished; returns the highest.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    /// [`rss_parts`] when the highest RSS was seen.
    at_max: Arc<Mutex<String>>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    /// Samples `pid`; `note()` (e.g. what the server has charged) is noted along with the
    /// parts of the highest RSS.
    pub(crate) fn start(pid: u32, note: impl Fn() -> String + Send + 'static) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let at_max = Arc::new(Mutex::new(String::new()));
        let thread = {
            let (stop, max, at_max) = (stop.clone(), max.clone(), at_max.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let now = examples::measure::rss(pid).unwrap_or(0);
                    if now > max.fetch_max(now, Ordering::AcqRel) {
                        let parts = format!("{}{}", rss_parts(pid), note());
                        *at_max.lock().unwrap_or_else(|e| e.into_inner()) = parts;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        RssSampler {
            stop,
            max,
            at_max,
            thread,
        }
    }

    /// The highest RSS seen (its parts printed).
    pub(crate) fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("sampler");
        eprintln!(
            "server at its highest: {}",
            self.at_max.lock().unwrap_or_else(|e| e.into_inner())
        );
        self.max.load(Ordering::Acquire)
    }
}

/// Latencies of a well-behaved client's calls.
#[derive(Default)]
pub(crate) struct Latencies {
    pub(crate) calls: Vec<Duration>,
    pub(crate) failures: Vec<String>,
}

impl Latencies {
    pub(crate) fn p99(&self) -> Duration {
        let mut v = self.calls.clone();
        v.sort();
        v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

/// Runs `call` in a loop (each within [`CALL_DEADLINE`]) until `stop` is set; the latencies
/// and failures land in the returned log.
pub(crate) fn well_behaved<F, Fut>(
    rt: &tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    mut call: F,
) -> tokio::task::JoinHandle<Latencies>
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    rt.spawn(async move {
        let mut log = Latencies::default();
        let mut i = 0;
        while !stop.load(Ordering::Acquire) {
            let t = Instant::now();
            match tokio::time::timeout(CALL_DEADLINE, call(i)).await {
                Ok(Ok(())) => log.calls.push(t.elapsed()),
                Ok(Err(e)) => log.failures.push(e),
                Err(_) => log
                    .failures
                    .push(format!("call {i} not answered in {CALL_DEADLINE:?}")),
            }
            i += 1;
            // Paced, so the client measures service rather than saturating a core.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        log
    })
}

/// What one attack showed, printed in one line per attack for the report.
pub(crate) fn report(
    name: &str,
    connections: u64,
    base: u64,
    max: u64,
    log: &Latencies,
) -> (u64, u64) {
    let over = max.saturating_sub(base);
    let bound = bound(connections);
    eprintln!(
        "MEMBOUND {name}: connections {connections}, RSS over baseline {} KiB, bound {} KiB \
         (budget {} KiB + {} KiB × {connections}), well-behaved calls {} (p99 {:?}), failures {}",
        over / KIB,
        bound / KIB,
        BUDGET / KIB,
        PER_CONNECTION / KIB,
        log.calls.len(),
        log.p99(),
        log.failures.len()
    );
    (over, bound)
}

/// Waits until a process's RSS stopped growing (by no more than 1 MiB over 500 ms), at most
/// 10 s: the attacks have no completion event on the server side to wait for.
pub(crate) async fn settle(pid: u32) {
    let rss = || examples::measure::rss(pid).unwrap_or(0);
    let end = Instant::now() + Duration::from_secs(10);
    let mut last = rss();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss();
        if now <= last + MIB {
            return;
        }
        last = now;
    }
}

/// The `RssAnon`, `RssFile` and `RssShmem` lines of a process's status, for the report.
pub(crate) fn rss_parts(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Rss"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tests in one binary run one at a time: each measures one server's RSS and loads the
/// machine.
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());
