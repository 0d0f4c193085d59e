//! `echo-server --metrics HOST:PORT`: the metrics of every call in the Prometheus text format
//! at `GET /metrics`.
//!
//! The recorder is `metrics-exporter-prometheus` without its HTTP feature (which would bring
//! hyper and its stack into the build for one GET): the answer is a few lines of HTTP/1.0
//! written here, one request per connection, bounded in size and time.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rpc_core::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes of request head a scrape may send: a scraper's GET is a few hundred.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Histogram buckets of call durations, in seconds: 50 µs to 10 s.
const DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
/// Histogram buckets of messages per stream.
const COUNT_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 5.0, 10.0, 100.0, 1_000.0, 10_000.0];

/// Installs the Prometheus recorder as the process's `metrics` recorder and turns on
/// `rpc_core::observe` metrics.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), DURATION_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("per_rpc".into()), COUNT_BUCKETS))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    rpc_core::observe::enable_metrics();
    Ok(handle)
}

/// Sets what a scrape reads at the moment it happens, beside the server's own gauges: the
/// counters of a shared-memory listener, as gauges and counters named `rpc_shm_*`.
#[cfg(target_os = "linux")]
pub fn record_shm(stats: &rpc_transport_shm::ShmStats) {
    metrics::gauge!("rpc_shm_arena_bytes_in_use").set(stats.arena_bytes_in_use() as f64);
    metrics::gauge!("rpc_shm_sessions").set(stats.live_sessions() as f64);
    metrics::gauge!("rpc_shm_streams").set(stats.live_streams() as f64);
    metrics::counter!("rpc_shm_fallback_messages_total").absolute(stats.fallback_messages());
    metrics::counter!("rpc_shm_wakeups_sent_total").absolute(stats.wakeups_sent());
    metrics::counter!("rpc_shm_wakeups_received_total").absolute(stats.wakeups_received());
    metrics::counter!("rpc_shm_sender_waits_total").absolute(stats.sender_waits());
}

/// What a scrape runs first, to set gauges that are read rather than counted (see
/// [`record_shm`]).
pub type ScrapeHook = Arc<dyn Fn() + Send + Sync>;

/// Serves `GET /metrics` on `addr` until the runtime ends; returns the bound address. Every
/// scrape first records the server's gauges and runs `on_scrape`.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    server: Server,
    on_scrape: ScrapeHook,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (handle, server, hook) = (handle.clone(), server.clone(), on_scrape.clone());
            tokio::spawn(async move {
                if let Err(e) = answer(conn, &handle, &server, &*hook).await {
                    tracing::debug!(error = %e, "metrics request failed");
                }
            });
        }
    });
    Ok(local)
}

async fn answer(
    mut conn: TcpStream,
    handle: &PrometheusHandle,
    server: &Server,
    on_scrape: &(dyn Fn() + Send + Sync),
) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_REQUEST {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request"));
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, body) = if line.starts_with(b"GET /metrics ") {
        rpc_core::observe::record_server_gauges(server);
        on_scrape();
        ("200 OK", handle.render())
    } else {
        ("404 Not Found", "not found; try GET /metrics\n".to_owned())
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}
