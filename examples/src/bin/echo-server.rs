//! `echo-server --listen tcp://127.0.0.1:PORT --listen unix:///path.sock`
//!
//! Serves the echo service (both IDL flavours) on every listener given and prints one line
//! `listening <url>` per listener once it accepts connections. Stops gracefully on SIGINT or
//! SIGTERM. gRPC, TTHeader unary and TTHeader Streaming share each listener (told apart by the
//! first bytes of a connection: the HTTP/2 preface is gRPC); shared memory is not available yet.
//!
//! `shm:///path` listeners serve the shared-memory transport (Linux) through a control socket
//! at that path; `--max-frame-bytes N` raises the largest frame (default 16 MiB) of every
//! transport, e.g. for 64 MiB messages.
//!
//! Limits (defaults: `rpc_core::limits`): `--max-buffered-bytes N` (server-wide budget),
//! `--max-streams N` (streams or unary calls in flight per connection), `--frame-timeout-ms MS`,
//! `--idle-timeout-ms MS` (0: never). `--report-budget-ms MS` prints `budget <bytes>` (what
//! is charged to the budget now) every MS milliseconds, for the memory-bound tests.
//!
//! Discovery: `--register etcd://HOST:PORT/SERVICE` registers every listener (the port actually
//! bound) under SERVICE in etcd (Kitex's registry layout, `rpc-registry-etcd`) with a lease kept
//! alive; on SIGINT/SIGTERM it deregisters first, keeps serving briefly, then drains.
//! `--lease-ttl-s N` (default 60), `--weight N` (default 10), `--advertise-host HOST` (the host
//! to register for listeners bound to 0.0.0.0 or `[::]`).
//!
//! TLS: `--tls-cert cert.pem --tls-key key.pem [--tls-client-ca ca.pem]` serves every `tcp://`
//! listener over TLS (the protocols are detected inside it; ALPN `h2` offered, clients without
//! ALPN accepted); with a client CA, client certificates are required (mTLS). Unix sockets
//! stay plain.
//!
//! Standard gRPC services: health checking (`grpc.health.v1.Health`: the server `""` and
//! every hosted service SERVING; all NOT_SERVING once a stop signal starts the graceful
//! shutdown) and server reflection (`grpc.reflection.v1` and `v1alpha`: `grpcurl` and
//! `grpc_cli` list and describe `echo.TestService`).
//!
//! Proxy: `--forward URL [--protocol ttheader|grpc|shm]` serves no service of its own and
//! relays every call it receives, in every mode, to the server at URL over that protocol
//! (default `ttheader`: TTHeader unary for thrift unary, TTHeader Streaming otherwise):
//! payloads untouched, request metadata, the remaining deadline, the half-close and cancel
//! downstream; header, messages, trailer and status back (`examples::forward`). A cancel
//! cascades through it: over TTHeader Streaming the reset it sends downstream carries the
//! cancel path so far plus its `--name` (default `echo-server-forward`), as Kitex's `ttscp`.
//!
//! Metrics: `--metrics HOST:PORT` serves every call's metrics (`rpc_core::observe`) in the
//! Prometheus text format at `http://HOST:PORT/metrics` and prints `metrics <addr>`; on Linux
//! the shared-memory listener's counters come with them (`rpc_shm_*`).

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use rpc_core::net::TlsServerConfig;
use rpc_core::serve::Listener;
use rpc_core::Address;
use rpc_transport_grpc::GrpcProtocol;
use rpc_transport_ttheader::TtHeaderProtocol;
use tokio::signal::unix::{signal, SignalKind};

/// How long open calls may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What `--register` and its options asked for.
struct Register {
    /// The etcd endpoint and the service name.
    target: Option<(String, String)>,
    ttl: Duration,
    weight: u32,
    advertise: Option<String>,
}

impl Default for Register {
    fn default() -> Self {
        Register {
            target: None,
            ttl: rpc_registry_etcd::DEFAULT_LEASE_TTL,
            weight: rpc_core::discovery::DEFAULT_WEIGHT,
            advertise: None,
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: echo-server --listen URL [--listen URL ...]   (URL: tcp://HOST:PORT, unix:///path, shm:///path)\n\
         \x20      [--max-frame-bytes N] [--max-buffered-bytes N] [--max-streams N] [--frame-timeout-ms MS] [--idle-timeout-ms MS] [--report-budget-ms MS]\n\
         \x20      [--register etcd://HOST:PORT/SERVICE [--lease-ttl-s N] [--weight N] [--advertise-host HOST]]\n\
         \x20      [--tls-cert cert.pem --tls-key key.pem [--tls-client-ca ca.pem]] [--metrics HOST:PORT]\n\
         \x20      [--forward URL [--protocol ttheader|grpc|shm] [--name NAME]]"
    );
    ExitCode::from(2)
}

/// The cancel-path name of a `--forward` proxy without `--name`.
const DEFAULT_FORWARD_NAME: &str = "echo-server-forward";

/// The client `--forward URL --protocol P` relays through; `name` is what it appends to the
/// cancel path of the calls it relays.
fn forward_client(url: &str, protocol: &str, name: &str) -> Result<rpc_core::Client, String> {
    use rpc_core::transport::Connect;
    let builder = match protocol {
        "ttheader" => rpc_core::Client::builder(
            rpc_transport_ttheader::TtHeaderClient::connect(url).map_err(|e| e.to_string())?,
        ),
        "grpc" => rpc_core::Client::builder(
            rpc_transport_grpc::GrpcClient::connect(url).map_err(|e| e.to_string())?,
        ),
        "shm" => rpc_core::Client::builder(
            rpc_transport_shm::ShmClient::connect(url).map_err(|e| e.to_string())?,
        ),
        other => {
            return Err(format!(
                "unknown protocol {other:?} (ttheader, grpc or shm)"
            ))
        }
    };
    Ok(builder.from_service(name).build())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut addrs = Vec::new();
    let (mut tls_cert, mut tls_key, mut tls_client_ca) = (None, None, None);
    let mut metrics_addr = None;
    let mut report_budget = None;
    let mut limits = rpc_core::limits::ServerLimits::default();
    let mut reg = Register::default();
    let mut conn_limits = rpc_transport_ttheader::Limits::default();
    let (mut forward, mut protocol, mut name) = (None, None, None);
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
            ("--report-budget-ms", Some(ms)) => {
                report_budget = (ms > 0).then(|| Duration::from_millis(ms));
                continue;
            }
            ("--lease-ttl-s", Some(s)) => {
                reg.ttl = Duration::from_secs(s.max(1));
                continue;
            }
            ("--weight", Some(w)) => {
                reg.weight = u32::try_from(w).unwrap_or(u32::MAX);
                continue;
            }
            _ => {}
        }
        match (a.as_str(), next) {
            ("--metrics", Some(v)) => match v.parse::<std::net::SocketAddr>() {
                Ok(a) => metrics_addr = Some(a),
                Err(e) => {
                    eprintln!("echo-server: --metrics {v}: {e}");
                    return usage();
                }
            },
            ("--tls-cert", Some(v)) => tls_cert = Some(v),
            ("--tls-key", Some(v)) => tls_key = Some(v),
            ("--tls-client-ca", Some(v)) => tls_client_ca = Some(v),
            ("--listen", Some(v)) => match v.parse::<Address>() {
                Ok(u) => addrs.push(u),
                Err(e) => {
                    eprintln!("echo-server: {e}");
                    return usage();
                }
            },
            ("--register", Some(v)) => match rpc_registry_etcd::parse_url(&v) {
                Ok(target) => reg.target = Some(target),
                Err(e) => {
                    eprintln!("echo-server: {e}");
                    return usage();
                }
            },
            ("--advertise-host", Some(v)) => reg.advertise = Some(v),
            ("--forward", Some(v)) => forward = Some(v),
            ("--protocol", Some(v)) => protocol = Some(v),
            ("--name", Some(v)) => name = Some(v),
            _ => return usage(),
        }
    }
    if addrs.is_empty() {
        return usage();
    }
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => {
            match TlsServerConfig::from_pem_files(
                cert,
                key,
                tls_client_ca.as_deref().map(Path::new),
            ) {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("echo-server: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        (None, None) if tls_client_ca.is_none() => None,
        _ => return usage(),
    };
    // The recorder goes in before the server exists, so every handle registers with it.
    let metrics = match metrics_addr.map(|a| examples::metrics_http::install().map(|h| (a, h))) {
        Some(Err(e)) => {
            eprintln!("echo-server: metrics: {e}");
            return ExitCode::FAILURE;
        }
        Some(Ok(m)) => Some(m),
        None => None,
    };
    let health = rpc_grpc_services::health::HealthReporter::new();
    let server = match forward {
        None if protocol.is_some() || name.is_some() => return usage(),
        None => examples::server_with_grpc_services(limits, &health),
        Some(url) => match forward_client(
            &url,
            protocol.as_deref().unwrap_or("ttheader"),
            name.as_deref().unwrap_or(DEFAULT_FORWARD_NAME),
        ) {
            Ok(client) => examples::forward::server(client, limits),
            Err(e) => {
                eprintln!("echo-server: --forward {url}: {e}");
                return usage();
            }
        },
    };
    if let Some(every) = report_budget {
        let budget = rpc_core::transport::ServerExt::byte_budget(&server).clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                println!("budget {}", budget.used());
            }
        });
    }
    let shm = rpc_transport_shm::ShmProtocol::default().limits(conn_limits.clone());
    #[cfg(target_os = "linux")]
    let on_scrape: examples::metrics_http::ScrapeHook = {
        let stats = shm.stats().clone();
        std::sync::Arc::new(move || examples::metrics_http::record_shm(&stats))
    };
    #[cfg(not(target_os = "linux"))]
    let on_scrape: examples::metrics_http::ScrapeHook = std::sync::Arc::new(|| {});
    let mut metrics_bound = None;
    if let Some((addr, handle)) = metrics {
        match examples::metrics_http::serve(addr, handle, server.clone(), on_scrape).await {
            Ok(bound) => metrics_bound = Some(bound),
            Err(e) => {
                eprintln!("echo-server: metrics on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut listener = Listener::new(server)
        .protocol(TtHeaderProtocol::new(conn_limits.clone()))
        .protocol(GrpcProtocol::default())
        .protocol(shm);
    for addr in addrs {
        let bound = match (&tls, &addr) {
            (Some(tls), Address::Tcp { .. }) => listener.bind_tls(addr, tls.clone()).await,
            _ => listener.bind(addr).await,
        };
        listener = match bound {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo-server: {e}");
                return ExitCode::FAILURE;
            }
        };
    }
    let running = listener.start();
    health.shutdown_on_drain(&running.shutdown_signal());
    for addr in running.local_addrs() {
        println!("listening {addr}");
    }
    if let Some(bound) = metrics_bound {
        println!("metrics {bound}");
    }
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo-server: cannot watch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some((endpoint, service)) = reg.target {
        let registry = rpc_registry_etcd::EtcdRegistry::new([endpoint]).lease_ttl(reg.ttl);
        let meta = rpc_core::discovery::InstanceMeta::new().with_weight(reg.weight);
        let registered = match rpc_core::discovery::Registered::register(
            running,
            &registry,
            &service,
            reg.advertise.as_deref(),
            meta,
        )
        .await
        {
            Ok(r) => r,
            Err((running, e)) => {
                eprintln!("echo-server: register in etcd: {e}");
                running.shutdown(SHUTDOWN_GRACE).await;
                return ExitCode::FAILURE;
            }
        };
        for i in registered.instances() {
            println!("registered {service} {}", i.address);
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        // Deregister first (clients' watches drop this instance), then drain.
        if let Err(e) = registered.shutdown(SHUTDOWN_GRACE).await {
            eprintln!("echo-server: deregister: {e}");
        }
        println!("stopped");
        return ExitCode::SUCCESS;
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.shutdown(SHUTDOWN_GRACE).await;
    println!("stopped");
    ExitCode::SUCCESS
}
