//! `cargo run -p examples --example tracing_prometheus`: a span per call on both sides (printed
//! by `tracing-subscriber`'s fmt layer) and per-method metrics in the Prometheus text format.
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use rpc_core::{serve::Listener, Server, ServerContext, Status};
use rpc_transport_grpc::{GrpcClient, GrpcProtocol};
use tracing::Level;
use tracing_subscriber::{filter::Targets, prelude::*};

rpc_core::include_generated!("hello");

struct Hi;

impl Greeter for Hi {
    async fn say_hello(&self, _: ServerContext, req: HelloRequest) -> Result<HelloReply, Status> {
        tracing::info!(name = %req.name, "in the handler: inside the rpc.server span");
        let message = format!("hello, {}", req.name);
        Ok(HelloReply { message })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The end-of-call event is DEBUG (errors are WARN): at INFO a successful call prints
    // nothing. DEBUG for the framework's own events only (h2's frame log is DEBUG too).
    let filter = Targets::new()
        .with_target("rpc_core", Level::DEBUG)
        .with_default(Level::INFO);
    let fmt = tracing_subscriber::fmt::layer().with_filter(filter);
    tracing_subscriber::registry().with(fmt).init();

    // Histograms rather than summaries for the durations, with buckets from 50 µs to 10 s.
    let buckets = [0.000_05, 0.000_25, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0];
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &buckets)?
        .install_recorder()?;
    rpc_core::observe::enable_metrics(); // off until a recorder is installed

    let server = Server::builder()
        .add_service(GreeterServer::new(Hi))
        .build();
    let running = Listener::new(server.clone())
        .protocol(GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse()?)
        .await?
        .start();
    let client = GreeterClient::connect::<GrpcClient>(&running.local_addrs()[0].to_string())?;
    for name in ["ann", "bob"] {
        client.say_hello(HelloRequest { name: name.into() }).await?;
    }

    // What a scrape of /metrics returns (serve it with any HTTP server; `echo-server
    // --metrics` does it in `examples/src/metrics_http.rs`). Gauges read at scrape time:
    rpc_core::observe::record_server_gauges(&server);
    for line in prometheus
        .render()
        .lines()
        .filter(|l| l.starts_with("rpc_"))
    {
        println!("{line}");
    }
    running.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
