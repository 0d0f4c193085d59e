//! The shared-memory transport under memory attacks from many sessions: `echo-server` runs as
//! a child with a 32 MiB budget (`--max-buffered-bytes`), hostile clients open sessions with
//! large arenas, make the server read through their whole arena with calls (so its pages
//! count for the server), then open server streams they never read (the server's arena fills with frames
//! the client never returns). The server's RSS is checked against the bound
//! `rpc-transport-shm` documents (RSS over baseline ≤ budget + F × sessions; a session's
//! regions are charged to the budget, sessions beyond it are refused at the handshake),
//! while a well-behaved shm client keeps being answered.
//!
//! Run with `--nocapture` to see the `MEMBOUND` line.
#![cfg(target_os = "linux")]

mod memory_bound;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use examples::proto::{Request, TestServiceClient};
use memory_bound::*;
use rpc_core::Client;
use rpc_transport_shm::ShmClient;

/// What each hostile session asks for per direction.
const HOSTILE_ARENA: usize = 4 << 20;
/// The well-behaved client's arena.
const GOOD_ARENA: usize = 1 << 20;

#[test]
fn sessions_that_never_return_buffers() {
    const SESSIONS: u64 = 12;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::env::temp_dir().join(format!("rpc-membound-{}.sock", std::process::id()));
    let url = format!("shm://{}", path.display());
    let budget = BUDGET.to_string();
    let (child, urls, _lines) = support::spawn_echo_server_with_env(
        &["--listen", &url, "--max-buffered-bytes", &budget],
        1,
        SERVER_ENV,
    );
    assert_eq!(urls, [url]);
    let server = ServerChild { child };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let good = TestServiceClient::new(Client::new(
        ShmClient::builder(rpc_core::Address::shm(&path))
            .arena_bytes(GOOD_ARENA)
            .pool_size(1)
            .build(),
    ));
    rt.block_on(async {
        for i in 0..20 {
            good.ping_pong(Request {
                message: format!("warm {i}"),
                ..Default::default()
            })
            .await
            .expect("warm-up call");
        }
    });
    let base = server.rss();
    eprintln!("server at the baseline: {}", rss_parts(server.pid()));
    let sampler = RssSampler::start(server.pid(), String::new);
    let stop = Arc::new(AtomicBool::new(false));
    let log = {
        let good = good.clone();
        well_behaved(rt.handle(), stop.clone(), move |i| {
            let good = good.clone();
            async move {
                let m = format!("good {i}");
                let r = good
                    .ping_pong(Request {
                        message: m.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                if r.message == m {
                    Ok(())
                } else {
                    Err(format!("echoed {:?}", r.message))
                }
            }
        })
    };
    let (accepted, held) = rt.block_on(async {
        let mut held = Vec::new();
        let mut accepted = 0;
        for _ in 0..SESSIONS {
            let c = TestServiceClient::new(Client::new(
                ShmClient::builder(rpc_core::Address::shm(&path))
                    .arena_bytes(HOSTILE_ARENA)
                    .pool_size(1)
                    .build(),
            ));
            // Through the whole arena: 8 MiB of requests the server reads (calls one at a
            // time, so what the echo handlers hold stays one message).
            let sent = tokio::time::timeout(Duration::from_secs(10), async {
                for _ in 0..128 {
                    c.ping_pong(Request {
                        message: "a".repeat(64 * 1024),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
            .await;
            if !matches!(sent, Ok(Ok(_))) {
                // Refused at the handshake (the budget has no room for its regions).
                continue;
            }
            accepted += 1;
            // A server stream never read: the server's arena fills with frames this client
            // never returns.
            if let Ok(Ok(s)) = tokio::time::timeout(
                Duration::from_secs(5),
                c.echo_server(Request {
                    message: "s".repeat(64 * 1024),
                    repeat: Some(1_000_000),
                    ..Default::default()
                }),
            )
            .await
            {
                held.push((c, s));
            }
        }
        settle(server.pid()).await;
        eprintln!("server after the attack: {}", rss_parts(server.pid()));
        (accepted, held)
    });
    stop.store(true, Ordering::Release);
    let log = rt.block_on(log).expect("well-behaved client task");
    let max = sampler.finish();
    eprintln!("shm: {accepted} of {SESSIONS} hostile sessions accepted");
    let (over, bound) = report(
        "shm sessions that never return buffers",
        SESSIONS + 1,
        base,
        max,
        &log,
    );
    drop(held);
    assert!(
        log.failures.is_empty(),
        "the well-behaved client failed: {:?}",
        &log.failures[..log.failures.len().min(5)]
    );
    assert!(log.calls.len() >= 5, "only {} calls", log.calls.len());
    assert!(
        over <= bound,
        "RSS over baseline {} KiB exceeds the bound {} KiB",
        over / KIB,
        bound / KIB
    );
}
