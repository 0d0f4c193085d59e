//! `cargo run --release -p benches --bin observe [-- CALLS]`: the cost of `rpc_core::observe`
//! per call, client and server side together: sequential thrift pingpong calls over the
//! in-process transport on a current-thread runtime (no sockets, no other thread), in phases:
//! nothing observing; a subscriber not interested in the spans (`WARN` and above); metrics
//! recorded (Prometheus recorder); spans recorded by a bare `tracing` registry.

#![forbid(unsafe_code)]

use std::time::Instant;

use examples::idl::Thrift;
use examples::{thrift, EchoIdl};
use rpc_core::{CallOptions, Client};
use tracing_subscriber::layer::SubscriberExt;

async fn per_call(client: &thrift::TestServiceClient, calls: u32) -> f64 {
    let req = examples::EchoRequest {
        message: "x".repeat(100),
        ..Default::default()
    };
    // Warm up (connections, caches, registration of metric handles).
    for _ in 0..1000 {
        Thrift::ping_pong(client, req.clone(), CallOptions::new())
            .await
            .expect("call");
    }
    let start = Instant::now();
    for _ in 0..calls {
        Thrift::ping_pong(client, req.clone(), CallOptions::new())
            .await
            .expect("call");
    }
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = thrift::TestServiceClient::new(Client::new(
            rpc_core::inproc::InProcTransport::new(examples::server()),
        ));
        let base = per_call(&client, calls).await;
        println!("in-process pingpong, {calls} sequential calls, ns per call (both sides)");
        println!("{:<48} {base:>8.0}", "nothing observing");
        let warn =
            tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::WARN);
        let t = {
            let _g = tracing::subscriber::set_default(warn);
            per_call(&client, calls).await
        };
        println!("{:<48} {t:>8.0}", "subscriber, spans not enabled (WARN)");
        let traced = {
            let _g = tracing::subscriber::set_default(tracing_subscriber::registry());
            per_call(&client, calls).await
        };
        println!("{:<48} {traced:>8.0}", "spans recorded (bare registry)");
        std::mem::forget(examples::metrics_http::install().expect("recorder"));
        let m = per_call(&client, calls).await;
        println!("{:<48} {m:>8.0}", "metrics recorded (Prometheus recorder)");
    });
}
