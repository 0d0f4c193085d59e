//! `echo-server --listen tcp://127.0.0.1:PORT --listen unix:///path.sock`
//!
//! Serves the echo service (both IDL flavours) on every listener given and prints one line
//! `listening <url>` per listener once it accepts connections. Stops gracefully on SIGINT or
//! SIGTERM. TTHeader unary and TTHeader Streaming share each listener (told apart by the first
//! bytes of a connection); gRPC and shared memory are not available yet.
//!
//! `shm:///path` listeners serve the shared-memory transport (Linux) through a control socket
//! at that path; `--max-frame-bytes N` raises the largest frame (default 16 MiB) of every
//! transport, e.g. for 64 MiB messages.
//!
//! Limits (defaults: `rpc_core::limits`): `--max-buffered-bytes N` (server-wide budget),
//! `--max-streams N` (streams or unary calls in flight per connection), `--frame-timeout-ms MS`,
//! `--idle-timeout-ms MS` (0: never).

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use rpc_core::serve::Listener;
use rpc_core::Address;
use rpc_transport_ttheader::TtHeaderProtocol;
use tokio::signal::unix::{signal, SignalKind};

/// How long open calls may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn usage() -> ExitCode {
    eprintln!(
        "usage: echo-server --listen URL [--listen URL ...]   (URL: tcp://HOST:PORT, unix:///path, shm:///path)\n\
         \x20      [--max-frame-bytes N] [--max-buffered-bytes N] [--max-streams N] [--frame-timeout-ms MS] [--idle-timeout-ms MS]"
    );
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut addrs = Vec::new();
    let mut limits = rpc_core::limits::ServerLimits::default();
    let mut conn_limits = rpc_transport_ttheader::Limits::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let number = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<u64>().ok());
        let next = args.next();
        match (a.as_str(), number(&next)) {
            ("--max-buffered-bytes", Some(n)) => {
                limits = limits.max_buffered_bytes(usize::try_from(n).unwrap_or(usize::MAX));
                continue;
            }
            ("--max-frame-bytes", Some(n)) => {
                conn_limits = conn_limits.max_frame_size(usize::try_from(n).unwrap_or(usize::MAX));
                continue;
            }
            ("--max-streams", Some(n)) => {
                limits = limits.max_concurrent_streams(usize::try_from(n).unwrap_or(usize::MAX));
                continue;
            }
            ("--frame-timeout-ms", Some(ms)) => {
                limits = limits.frame_timeout(Duration::from_millis(ms));
                continue;
            }
            ("--idle-timeout-ms", Some(ms)) => {
                limits = limits.idle_timeout((ms > 0).then(|| Duration::from_millis(ms)));
                continue;
            }
            _ => {}
        }
        match (a.as_str(), next) {
            ("--listen", Some(v)) => match v.parse::<Address>() {
                Ok(u) => addrs.push(u),
                Err(e) => {
                    eprintln!("echo-server: {e}");
                    return usage();
                }
            },
            _ => return usage(),
        }
    }
    if addrs.is_empty() {
        return usage();
    }
    let server = examples::server_with_limits(limits);
    let mut listener = Listener::new(server)
        .protocol(TtHeaderProtocol::new(conn_limits.clone()))
        .protocol(rpc_transport_shm::ShmProtocol::default().limits(conn_limits));
    for addr in addrs {
        listener = match listener.bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo-server: {e}");
                return ExitCode::FAILURE;
            }
        };
    }
    let running = listener.start();
    for addr in running.local_addrs() {
        println!("listening {addr}");
    }
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo-server: cannot watch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.shutdown(SHUTDOWN_GRACE).await;
    println!("stopped");
    ExitCode::SUCCESS
}
