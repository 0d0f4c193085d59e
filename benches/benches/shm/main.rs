//! Shared memory, cross-process, with real payload reads and writes:
//! `cargo bench -p benches --bench shm [-- --secs S --runs N --sizes 64,4096,65536,1048576]`.
//!
//! Rows (interleaved: every run goes through every size and every transport in turn):
//!
//! - `shm`: our `rpc-transport-shm` (bidi streams of raw `Bytes` messages, echoed);
//! - `uds`: our TTHeader Streaming over a Unix socket, the same service and client code;
//! - `shmipc-v3` / `shmipc-v4e`: the `shmipc` crate (CloudWeGo shmipc-rs), default config and
//!   V4 with eventfd wakeups, memfd, a stream per worker.
//!
//! Each row runs a server process pinned to core 1 (`taskset -c 1`) and a client process pinned
//! to core 0, each with a one-thread tokio runtime. The client writes a fresh payload into
//! every request (a real write: our codec copies it into the arena; shmipc's `write_bytes`
//! copies it into its slice) and reads every byte of every reply (a checksum); the servers read
//! every request byte and write every reply byte. Scenarios: one stream, round trips timed one
//! by one (p50, p99); 16 streams (16 tasks, each its own stream) for round trips per second,
//! with the server's and the client's CPU per round trip from `/proc/PID/stat`. Figures are
//! medians over runs.
//! The host is shared with other builds: figures are ratios within one run, not absolutes.

#[cfg(target_os = "linux")]
mod linux;

fn main() {
    #[cfg(target_os = "linux")]
    linux::main();
    #[cfg(not(target_os = "linux"))]
    eprintln!("the shared-memory benchmark needs Linux: unsupported platform");
}
