//! `echo-server --listen tcp://127.0.0.1:PORT --listen unix:///path.sock`
//!
//! Serves the echo service (both IDL flavours) on every listener given and prints one line
//! `listening <url>` per listener once it accepts connections. Stops gracefully on SIGINT or
//! SIGTERM. TTHeader unary and TTHeader Streaming share each listener (told apart by the first
//! bytes of a connection); gRPC and shared memory are not available yet.
//!
//! Limits (defaults: `rpc_core::limits`): `--max-buffered-bytes N` (server-wide budget),
//! `--max-streams N` (streams or unary calls in flight per connection), `--frame-timeout-ms MS`,
//! `--idle-timeout-ms MS` (0: never).

use std::process::ExitCode;
use std::time::Duration;

use examples::cli::{resolve, Url};
use rpc_transport_ttheader::{serve_tcp, serve_unix, ServerConfig};
use tokio::signal::unix::{signal, SignalKind};

/// How long open calls may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn usage() -> ExitCode {
    eprintln!(
        "usage: echo-server --listen URL [--listen URL ...]   (URL: tcp://HOST:PORT, unix:///path)\n\
         \x20      [--max-buffered-bytes N] [--max-streams N] [--frame-timeout-ms MS] [--idle-timeout-ms MS]"
    );
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut urls = Vec::new();
    let mut limits = rpc_core::limits::ServerLimits::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let number = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<u64>().ok());
        let next = args.next();
        match (a.as_str(), number(&next)) {
            ("--max-buffered-bytes", Some(n)) => {
                limits = limits.max_buffered_bytes(usize::try_from(n).unwrap_or(usize::MAX));
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
            ("--listen", Some(v)) => match v.parse::<Url>() {
                Ok(u) => urls.push(u),
                Err(e) => {
                    eprintln!("echo-server: {e}");
                    return usage();
                }
            },
            _ => return usage(),
        }
    }
    if urls.is_empty() {
        return usage();
    }
    let server = examples::server_with_limits(limits);
    let mut handles = Vec::new();
    for url in urls {
        let served = match &url {
            Url::Tcp(hostport) => match resolve(hostport).await {
                Ok(addr) => serve_tcp(server.clone(), addr, ServerConfig::default())
                    .await
                    .map(|h| {
                        let bound = h.local_addr().map(|a| format!("tcp://{a}"));
                        (h, bound.unwrap_or_else(|| url.to_string()))
                    })
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            },
            Url::Unix(path) => serve_unix(server.clone(), path, ServerConfig::default())
                .await
                .map(|h| (h, url.to_string()))
                .map_err(|e| e.to_string()),
            Url::Shm(_) => Err("the shared-memory transport is not available yet".to_owned()),
        };
        match served {
            Ok((h, shown)) => {
                println!("listening {shown}");
                handles.push(h);
            }
            Err(e) => {
                eprintln!("echo-server: {url}: {e}");
                return ExitCode::FAILURE;
            }
        }
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
    futures_join(handles).await;
    println!("stopped");
    ExitCode::SUCCESS
}

async fn futures_join(handles: Vec<rpc_transport_ttheader::ServeHandle>) {
    let mut set = tokio::task::JoinSet::new();
    for h in handles {
        set.spawn(h.shutdown(SHUTDOWN_GRACE));
    }
    while set.join_next().await.is_some() {}
}
