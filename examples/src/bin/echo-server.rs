//! `echo-server --listen tcp://127.0.0.1:PORT --listen unix:///path.sock`
//!
//! Serves the echo service (both IDL flavours) on every listener given and prints one line
//! `listening <url>` per listener once it accepts connections. Stops gracefully on SIGINT or
//! SIGTERM. gRPC, TTHeader unary and TTHeader Streaming share each listener (told apart by the
//! first bytes of a connection: the HTTP/2 preface is gRPC).
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
//! Hot restart (Linux): a server with a `unix://` or `shm://` listener answers takeovers on
//! the control socket `PATH.takeover` (PATH: its first such listener). `--takeover` starts a
//! server that takes the listening sockets over from the one running with the same first
//! path (`rpc_transport_shm::takeover`: the sockets are passed, so connects are never refused)
//! and prints `took over sockets from pid P in MS ms`; the old one prints `handed over N
//! sockets to pid P` and shuts down gracefully: shared-memory clients get a go-away and open
//! their next sessions to the new process, calls in flight finish within the grace period
//! (5 s), and it exits (`stopped MS ms after the takeover request`). Without a server to take
//! over from, `--takeover` binds as usual. TLS listeners are bound afresh, not handed over.
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
         \x20      [--forward URL [--protocol ttheader|grpc|shm] [--name NAME]]\n\
         \x20      [--takeover]   hot restart: take the listening sockets over from the server at the first unix/shm path"
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
    let mut takeover = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--takeover" {
            takeover = true;
            continue;
        }
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
    let control = hot_restart::control_path(&addrs);
    let mut predecessor = match (takeover, &control) {
        (false, _) => None,
        (true, None) => {
            eprintln!("echo-server: --takeover needs a unix:// or shm:// listener");
            return usage();
        }
        (true, Some(c)) => match hot_restart::request(c).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("echo-server: takeover: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    for addr in addrs {
        let bound = match (&tls, &addr, &mut predecessor) {
            (Some(tls), Address::Tcp { .. }, _) => listener.bind_tls(addr, tls.clone()).await,
            (_, _, Some(p)) => hot_restart::bind(p, listener, addr).await,
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
    let took_over = match predecessor {
        Some(p) => match hot_restart::ready(p).await {
            Ok(line) => Some(line),
            Err(e) => {
                eprintln!("echo-server: takeover: {e}");
                None
            }
        },
        None => None,
    };
    let mut handover = control.and_then(|c| match hot_restart::Handover::listen(c, &running) {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("echo-server: takeover control socket: {e}");
            None
        }
    });
    for addr in running.local_addrs() {
        println!("listening {addr}");
    }
    if let Some(line) = took_over {
        println!("{line}");
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
            h = hot_restart::handed_over(&mut handover) => println!("{}", hot_restart::describe(&h)),
        }
        // Deregister first (clients' watches drop this instance), then drain.
        if let Err(e) = registered.shutdown(SHUTDOWN_GRACE).await {
            eprintln!("echo-server: deregister: {e}");
        }
        println!("stopped");
        return ExitCode::SUCCESS;
    }
    let handed = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        h = hot_restart::handed_over(&mut handover) => {
            println!("{}", hot_restart::describe(&h));
            Some(hot_restart::requested(&h))
        }
    };
    running.shutdown(SHUTDOWN_GRACE).await;
    match handed {
        Some(at) => println!(
            "stopped {} ms after the takeover request",
            at.elapsed().as_millis()
        ),
        None => println!("stopped"),
    }
    ExitCode::SUCCESS
}

/// Hot restart through `rpc_transport_shm::takeover` (Linux); elsewhere `--takeover` fails
/// and no control socket is served.
#[cfg(target_os = "linux")]
mod hot_restart {
    use std::path::Path;
    use std::time::Instant;

    use rpc_core::serve::Listener;
    use rpc_core::Address;
    pub(crate) use rpc_transport_shm::takeover::{control_path, HandedOver};
    pub(crate) use rpc_transport_shm::Handover;
    use rpc_transport_shm::Takeover;

    /// When the successor's request arrived.
    pub(crate) fn requested(h: &HandedOver) -> Instant {
        h.requested
    }

    /// The sockets of the server at `control`; `None` (bind as usual) when none listens there.
    pub(crate) async fn request(control: &Path) -> std::io::Result<Option<Takeover>> {
        match Takeover::request(control).await {
            Ok(t) => Ok(Some(t)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                eprintln!(
                    "echo-server: no server to take over from at {} ({e}); binding",
                    control.display()
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `addr` on the inherited socket if there is one, else bound.
    pub(crate) async fn bind(
        t: &mut Takeover,
        listener: Listener,
        addr: Address,
    ) -> std::io::Result<Listener> {
        t.bind(listener, addr).await
    }

    /// Tells the old server to drain; the line to print.
    pub(crate) async fn ready(t: Takeover) -> std::io::Result<String> {
        let from = t.predecessor();
        let unused = t.addrs().len();
        let took = t.ready().await?;
        Ok(format!(
            "took over sockets from pid {from} in {} ms ({unused} not needed)",
            took.as_millis()
        ))
    }

    /// Resolves when a successor took over (never without a control socket).
    pub(crate) async fn handed_over(h: &mut Option<Handover>) -> HandedOver {
        match h {
            Some(h) => h.handed_over().await,
            None => std::future::pending().await,
        }
    }

    /// The line the old server prints.
    pub(crate) fn describe(h: &HandedOver) -> String {
        format!(
            "handed over {} sockets to pid {} ({} ms from request to ready)",
            h.sockets,
            h.successor,
            h.confirmed.duration_since(h.requested).as_millis()
        )
    }
}

#[cfg(not(target_os = "linux"))]
mod hot_restart {
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use rpc_core::serve::{Listener, Running};
    use rpc_core::Address;

    pub(crate) enum Takeover {}
    pub(crate) enum Handover {}
    pub(crate) enum HandedOver {}

    impl Handover {
        pub(crate) fn listen(_: PathBuf, _: &Running) -> std::io::Result<Handover> {
            Err(std::io::ErrorKind::Unsupported.into())
        }
    }

    pub(crate) fn requested(h: &HandedOver) -> Instant {
        match *h {}
    }

    pub(crate) fn control_path(_: &[Address]) -> Option<PathBuf> {
        None
    }

    pub(crate) async fn request(_: &Path) -> std::io::Result<Option<Takeover>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "hot restart needs Linux",
        ))
    }

    pub(crate) async fn bind(
        t: &mut Takeover,
        _: Listener,
        _: Address,
    ) -> std::io::Result<Listener> {
        match *t {}
    }

    pub(crate) async fn ready(t: Takeover) -> std::io::Result<String> {
        match t {}
    }

    pub(crate) async fn handed_over(_: &mut Option<Handover>) -> HandedOver {
        std::future::pending().await
    }

    pub(crate) fn describe(h: &HandedOver) -> String {
        match *h {}
    }
}
