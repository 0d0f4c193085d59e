//! The benchmark harnesses' shared pieces: the `allocs`, `grpc_vs_tonic`, `load` and
//! `observe` binaries, the `codec` and `shm` benches, and the `server_allocs` guard test.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use examples::EchoIdl;

/// `in_flight` tasks make `calls` echo pingpong calls of flavour `I` through `client`
/// between them (100-character messages), and each checks its reply. What the `allocs`
/// bench and the `server_allocs` test drive the server with.
pub async fn pingpong_calls<I: EchoIdl>(client: &I::Client, calls: u64, in_flight: usize) {
    let left = Arc::new(AtomicU64::new(calls));
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let client = client.clone();
            let left = left.clone();
            tokio::spawn(async move {
                let req = examples::EchoRequest {
                    message: "x".repeat(100),
                    ..Default::default()
                };
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let resp = I::ping_pong(&client, req.clone(), rpc_core::CallOptions::new())
                        .await
                        .expect("pingpong");
                    assert_eq!(resp.message.len(), 100, "echoed message");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("calling task");
    }
}
