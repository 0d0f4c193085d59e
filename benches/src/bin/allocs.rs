//! `cargo run --release -p benches --bin allocs [-- CALLS]`
//!
//! Heap allocations per unary call on the **server** side, counted by a global allocator.
//!
//! The echo server (`examples::server()` on an `rpc_core::serve::Listener`, TTHeader over loopback TCP) runs in
//! this process on a tokio runtime with one worker thread; only allocations made on that thread
//! are counted (the reader, the handler, the reply, the writer, the I/O driver: everything the
//! server does for a call). The client is our `TtHeaderClient` (one connection, mux, framed,
//! 100-character messages, 64 calls in flight) on a runtime of its own whose threads are not
//! counted. After a warm-up, CALLS calls (default 200,000) are made and the server thread's
//! `alloc`/`realloc` calls are divided by them.
//!
//! With `ALLOC_TRACE=N` set, the first N counted allocations after the warm-up are grouped by
//! their call stack (frames of this workspace only) and printed, most frequent first: where the
//! remaining allocations come from.

// The one place of the workspace with `unsafe`: a `GlobalAlloc` must be an `unsafe impl`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use examples::thrift;
use rpc_core::Client;
use rpc_transport_ttheader::{Framing, TtHeaderClient, TtHeaderProtocol, UnaryMode};

/// `alloc` and `alloc_zeroed` calls on counted threads.
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// `realloc` calls on counted threads.
static REALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes requested by those calls.
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Allocations still to record call stacks for (`ALLOC_TRACE`).
static TRACE_LEFT: AtomicUsize = AtomicUsize::new(0);
/// Whether counting is on (after the warm-up).
static COUNTING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Whether this thread is a server worker (its allocations count).
    static SERVER_THREAD: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread records a call stack (the recording allocates too).
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

/// Call stacks recorded for `ALLOC_TRACE`, with how often each was seen.
static TRACES: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

/// The system allocator, counting what server threads ask of it.
struct Counting;

fn counted() -> bool {
    COUNTING.load(Ordering::Relaxed)
        && SERVER_THREAD.try_with(Cell::get).unwrap_or(false)
        && !IN_TRACE.try_with(Cell::get).unwrap_or(true)
}

fn record(size: usize) {
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    if TRACE_LEFT.load(Ordering::Relaxed) == 0 {
        return;
    }
    if TRACE_LEFT
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_err()
    {
        return;
    }
    IN_TRACE.with(|t| t.set(true));
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    // Keep the frames of our own crates: they say which line allocated.
    let key: Vec<&str> = bt
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("at ./") && !l.contains("allocs.rs"))
        .take(4)
        .collect();
    let key = format!("{size:>6} B  {}", key.join("\n           "));
    *TRACES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_insert(0) += 1;
    IN_TRACE.with(|t| t.set(false));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counting around it only touches atomics and a const-initialized
// thread-local `Cell` (neither allocates), except `record`'s tracing, which guards against
// re-entry with `IN_TRACE`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            record(layout.size());
        }
        // SAFETY: the caller's `layout` is passed through unchanged (same contract).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            record(layout.size());
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (every allocation goes through it) with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            REALLOCS.fetch_add(1, Ordering::Relaxed);
            record(new_size);
        }
        // SAFETY: as in `dealloc`; `new_size` is passed through unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Calls in flight at once.
const IN_FLIGHT: usize = 64;
/// Calls before counting starts.
const WARM_UP_CALLS: u64 = 20_000;

/// `IN_FLIGHT` tasks make `calls` calls between them.
async fn run_calls(client: &thrift::TestServiceClient, calls: u64) {
    let left = Arc::new(AtomicU64::new(calls));
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let client = client.clone();
            let left = left.clone();
            tokio::spawn(async move {
                let req = thrift::Request {
                    message: "x".repeat(100),
                    ..Default::default()
                };
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let resp = client.ping_pong(req.clone()).await.expect("pingpong");
                    assert_eq!(resp.message.len(), 100, "echoed message");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("calling task");
    }
}

fn main() {
    let calls: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("usage: allocs [CALLS]"))
        .unwrap_or(200_000);
    let trace: usize = std::env::var("ALLOC_TRACE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| SERVER_THREAD.with(|c| c.set(true)))
        .enable_all()
        .build()
        .expect("server runtime");
    let handle = server_rt.block_on(async {
        rpc_core::serve::Listener::new(examples::server())
            .protocol(TtHeaderProtocol::default())
            .bind("tcp://127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("listen")
            .start()
    });
    let addr = handle.local_addrs()[0]
        .socket_addr()
        .expect("a TCP listener has an address");

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    let client = thrift::TestServiceClient::new(Client::new(
        TtHeaderClient::builder(addr)
            .pool_size(1)
            .unary_mode(UnaryMode::Mux)
            .unary_framing(Framing::Framed)
            .build(),
    ));
    client_rt.block_on(run_calls(&client, WARM_UP_CALLS));

    TRACE_LEFT.store(trace, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let start = Instant::now();
    client_rt.block_on(run_calls(&client, calls));
    let elapsed = start.elapsed();
    COUNTING.store(false, Ordering::Relaxed);

    let per = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / calls as f64;
    println!(
        "server-side heap allocations per unary call (TTHeader mux framed, 100-byte messages, \
         {IN_FLIGHT} in flight, {calls} calls, {:.0} calls/s):",
        calls as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  allocs/call {:.2}   reallocs/call {:.2}   bytes/call {:.0}",
        per(&ALLOCS),
        per(&REALLOCS),
        per(&BYTES)
    );
    if let Some(traces) = TRACES.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let mut traces: Vec<_> = traces.into_iter().collect();
        traces.sort_by_key(|t| std::cmp::Reverse(t.1));
        println!("call stacks of the first {trace} counted allocations (our frames):");
        for (stack, n) in traces {
            println!("{n:>6}x {stack}");
        }
    }
    drop(client);
    client_rt.shutdown_timeout(Duration::from_millis(100));
    server_rt.block_on(handle.shutdown(Duration::from_millis(100)));
}
