//! `cargo run --release -p benches --bin allocs [-- ttheader|ttstream|grpc] [CALLS]`
//!
//! Heap allocations per pingpong call on the **server** side, counted by a global allocator,
//! for each transport's pingpong (all rows by default, or the one named):
//!
//! * `ttheader`: unary TTHeader (thrift payloads; `TtHeaderClient`, mux, framed);
//! * `ttstream`: TTHeader Streaming (protobuf payloads, which unary TTHeader cannot carry, so
//!   `TtHeaderClient` sends them as a one-message stream);
//! * `grpc`: gRPC over h2 (protobuf payloads; `GrpcClient`, one connection);
//! * `shm`: shared memory (protobuf payloads; `ShmClient`, one session), Linux only.
//!
//! The echo server (`examples::server()` on an `rpc_core::serve::Listener` over loopback TCP,
//! `TtHeaderProtocol` or `GrpcProtocol`, or a Unix socket path with `ShmProtocol`) runs in this process on a tokio runtime with one worker
//! thread; only allocations made on that thread are counted (the reader, the handler, the reply,
//! the writer, the I/O driver: everything the server does for a call). The client runs on a
//! runtime of its own whose threads are not counted (one connection, 100-character messages, 64
//! calls in flight). After a warm-up, CALLS calls (default 200,000) are made and the server
//! thread's `alloc`/`realloc` calls are divided by them.
//!
//! With `ALLOC_TRACE=N` set, the first N counted allocations after each row's warm-up are
//! grouped by their call stack (frames of this workspace only) and printed, most frequent
//! first: where the remaining allocations come from. With `ALLOC_TRACE_DEPS=1` too, the stacks
//! keep the dependencies' frames (h2, http, tokio): whose allocation it is.

// The one place of the workspace with `unsafe`: a `GlobalAlloc` must be an `unsafe impl`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use benches::{Row, RowClient};
use examples::idl::{Proto, Thrift};
use examples::EchoIdl;

/// `alloc` and `alloc_zeroed` calls on counted threads.
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// `realloc` calls on counted threads.
static REALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes requested by those calls.
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Allocations still to record call stacks for (`ALLOC_TRACE`).
static TRACE_LEFT: AtomicUsize = AtomicUsize::new(0);
/// Whether call stacks keep the dependencies' frames too (`ALLOC_TRACE_DEPS`).
static TRACE_DEPS: AtomicBool = AtomicBool::new(false);
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
    // Keep the frames of our own crates: they say which line allocated (with
    // `ALLOC_TRACE_DEPS` set, those of the dependencies too, so h2's own show).
    let deps = TRACE_DEPS.load(Ordering::Relaxed);
    let key: Vec<&str> = bt
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            if l.starts_with("at ./") && !l.contains("allocs.rs") {
                Some(l)
            } else if deps && l.starts_with("at /") && l.contains("/registry/src/") {
                l.rfind("/src/index.crates.io-")
                    .and_then(|i| l[i..].find('/').map(|j| &l[i + j..]))
                    .or(Some(l))
            } else {
                None
            }
        })
        .take(if deps { 8 } else { 4 })
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

/// Every row, in the order they run.
const ALL: [Row; 4] = [Row::TtHeader, Row::TtStream, Row::Grpc, Row::Shm];

/// The row's name on the command line.
fn name(row: Row) -> &'static str {
    match row {
        Row::TtHeader => "ttheader",
        Row::TtStream => "ttstream",
        Row::Grpc => "grpc",
        Row::Shm => "shm",
    }
}

/// What the row measures, for its heading.
fn describe(row: Row) -> &'static str {
    match row {
        Row::TtHeader => "unary TTHeader (thrift, mux, framed)",
        Row::TtStream => "TTHeader Streaming (protobuf)",
        Row::Grpc => "gRPC (protobuf, one h2 connection)",
        Row::Shm => "shared memory (protobuf, one session)",
    }
}

/// Counts the server's allocations over `calls` calls of flavour `I` through `client`, after a
/// warm-up, and prints the row.
fn measure<I: EchoIdl>(
    row: Row,
    client_rt: &tokio::runtime::Runtime,
    client: I::Client,
    calls: u64,
    trace: usize,
) {
    client_rt.block_on(benches::pingpong_calls::<I>(
        &client,
        WARM_UP_CALLS,
        IN_FLIGHT,
    ));

    ALLOCS.store(0, Ordering::Relaxed);
    REALLOCS.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    TRACE_LEFT.store(trace, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let start = Instant::now();
    client_rt.block_on(benches::pingpong_calls::<I>(&client, calls, IN_FLIGHT));
    let elapsed = start.elapsed();
    COUNTING.store(false, Ordering::Relaxed);
    TRACE_LEFT.store(0, Ordering::Relaxed);

    let per = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / calls as f64;
    println!(
        "{:<9} server-side heap allocations per pingpong call, {} \
         (100-byte messages, {IN_FLIGHT} in flight, {calls} calls, {:.0} calls/s):",
        name(row),
        describe(row),
        calls as f64 / elapsed.as_secs_f64()
    );
    println!(
        "          allocs/call {:.2}   reallocs/call {:.2}   bytes/call {:.0}",
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
}

fn main() {
    const USAGE: &str = "usage: allocs [ttheader|ttstream|grpc|shm] [CALLS]";
    let mut rows: Vec<Row> = ALL.to_vec();
    let mut calls: u64 = 200_000;
    for arg in std::env::args().skip(1) {
        if let Some(row) = ALL.into_iter().find(|r| name(*r) == arg) {
            rows = vec![row];
        } else {
            calls = arg.parse().expect(USAGE);
        }
    }
    let trace: usize = std::env::var("ALLOC_TRACE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);

    TRACE_DEPS.store(
        std::env::var_os("ALLOC_TRACE_DEPS").is_some(),
        Ordering::Relaxed,
    );
    let (server_rt, client_rt) =
        benches::one_worker_runtimes(|| SERVER_THREAD.with(|c| c.set(true)));

    for row in rows {
        #[cfg(not(target_os = "linux"))]
        if row == Row::Shm {
            println!("shm: shared memory needs Linux; skipped");
            continue;
        }
        benches::with_row(row, &server_rt, |client| match client {
            RowClient::Thrift(c) => measure::<Thrift>(row, &client_rt, c, calls, trace),
            RowClient::Proto(c) => measure::<Proto>(row, &client_rt, c, calls, trace),
        });
    }
    client_rt.shutdown_timeout(Duration::from_millis(100));
}
