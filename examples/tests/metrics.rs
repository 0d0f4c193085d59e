//! `echo-server --metrics`: after a known load, a scrape of `/metrics` (Prometheus text) shows
//! the exact counts per method and status, the in-flight gauges back at zero, and the
//! connection gauge.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use examples::idl::{PingPongError, Proto, Thrift};
use examples::{EchoIdl, EchoRequest};
use rpc_core::{CallOptions, Client};
use rpc_transport_ttheader::TtHeaderClient;

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..EchoRequest::default()
    }
}

fn scrape(addr: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
    out
}

/// The sum of the samples of `name` whose labels include every pair of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

#[test]
fn a_scrape_after_a_known_load_shows_its_counts() {
    let (mut child, urls, lines) = support::spawn_echo_server(
        &["--listen", "tcp://127.0.0.1:0", "--metrics", "127.0.0.1:0"],
        1,
    );
    let metrics = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("the metrics line")
        .strip_prefix("metrics ")
        .expect("metrics <addr>")
        .to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::new(TtHeaderClient::parse(&urls[0]).unwrap());
        let (thrift, proto) = (Thrift::client(client.clone()), Proto::client(client));
        for i in 0..7 {
            Thrift::ping_pong(&thrift, request(&format!("p{i}")), CallOptions::new())
                .await
                .unwrap();
        }
        let failing = EchoRequest {
            fail: Some("boom".into()),
            ..request("f")
        };
        let err = Proto::ping_pong(&proto, failing, CallOptions::new())
            .await
            .expect_err("the fail hook fails the call");
        assert!(matches!(err, PingPongError::Status(_)), "{err}");
        let mut bidi = Proto::echo(&proto, CallOptions::new()).await.unwrap();
        for i in 0..3 {
            bidi.send(request(&format!("b{i}")).into()).await.unwrap();
            bidi.recv().await.unwrap().expect("an echo");
        }
        bidi.close_send().unwrap();
        assert!(bidi.recv().await.unwrap().is_none());
    });
    // Every count is recorded as its call ends, before the client sees the end; the server's
    // count of running streams drops a moment later, when the handler's task is done.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = scrape(&metrics);
        if sample(&text, "rpc_server_active_streams", &[]) == 0.0 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "streams still running:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let ping = [
        ("rpc_system", "ttheader"),
        ("rpc_service", "echo.TestService"),
        ("rpc_method", "PingPong"),
    ];
    let echo = [
        ("rpc_system", "ttheader"),
        ("rpc_service", "echo.TestService"),
        ("rpc_method", "Echo"),
    ];
    let with = |base: &[(&'static str, &'static str)], extra: (&'static str, &'static str)| {
        let mut v = base.to_vec();
        v.push(extra);
        v
    };
    let excerpt: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("rpc_method=\"PingPong\"") || l.contains("rpc_server_connections"))
        .collect();
    eprintln!("{}", excerpt.join("\n"));
    assert_eq!(
        sample(&text, "rpc_server_started_total", &ping),
        8.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "rpc_server_finished_total",
            &with(&ping, ("rpc_status", "OK"))
        ),
        7.0
    );
    assert_eq!(sample(&text, "rpc_server_finished_total", &ping), 8.0);
    assert_eq!(
        sample(
            &text,
            "rpc_server_duration_seconds_count",
            &with(&ping, ("rpc_status", "OK"))
        ),
        7.0,
        "{text}"
    );
    assert_eq!(sample(&text, "rpc_server_in_flight", &ping), 0.0);
    assert_eq!(
        sample(&text, "rpc_server_messages_received_total", &ping),
        8.0
    );
    assert_eq!(sample(&text, "rpc_server_messages_sent_total", &ping), 7.0);
    assert!(sample(&text, "rpc_server_received_bytes_total", &ping) > 0.0);
    // The bidi stream: 3 messages each way, one stream.
    assert_eq!(sample(&text, "rpc_server_started_total", &echo), 1.0);
    assert_eq!(
        sample(&text, "rpc_server_messages_received_total", &echo),
        3.0
    );
    assert_eq!(sample(&text, "rpc_server_messages_sent_total", &echo), 3.0);
    assert_eq!(
        sample(&text, "rpc_server_requests_per_rpc_count", &echo),
        1.0
    );
    assert_eq!(sample(&text, "rpc_server_in_flight", &echo), 0.0);
    // The client's connections (one unary, one ttstream) are still open.
    assert!(
        sample(&text, "rpc_server_connections", &[("protocol", "ttheader")]) >= 2.0,
        "{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The shared-memory listener's counters reach the scrape: a live session while a client holds
/// one, the arena back at zero once the replies are dropped, and the session gone with the
/// client.
#[cfg(target_os = "linux")]
#[test]
fn a_scrape_shows_the_shared_memory_counters() {
    let path = std::env::temp_dir().join(format!("rpc-metrics-shm-{}.sock", std::process::id()));
    let url = format!("shm://{}", path.display());
    let (mut child, _urls, lines) =
        support::spawn_echo_server(&["--listen", &url, "--metrics", "127.0.0.1:0"], 1);
    let metrics = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("the metrics line")
        .strip_prefix("metrics ")
        .expect("metrics <addr>")
        .to_owned();
    // A worker thread keeps the client's session tasks running between the calls and the
    // scrapes (its returns of the server's blocks travel on them).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let shm = rpc_transport_shm::ShmClient::new(rpc_core::Address::shm(path.clone()));
    rt.block_on(async {
        let proto = Proto::client(Client::new(shm.clone()));
        // Larger than a descriptor's inline bytes: these travel through the arenas.
        let big = "x".repeat(4096);
        for _ in 0..5 {
            let reply = Proto::ping_pong(&proto, request(&big), CallOptions::new())
                .await
                .unwrap();
            assert_eq!(reply.message.len(), big.len());
        }
    });
    let wait_for = |what: &str, ok: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = scrape(&metrics);
            if ok(&text) {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "{what}:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for("a live session, the arena back at zero", &|t| {
        sample(t, "rpc_shm_sessions", &[]) >= 1.0
            && sample(t, "rpc_shm_arena_bytes_in_use", &[]) == 0.0
    });
    let text = scrape(&metrics);
    for name in [
        "rpc_shm_streams",
        "rpc_shm_fallback_messages_total",
        "rpc_shm_wakeups_sent_total",
        "rpc_shm_wakeups_received_total",
        "rpc_shm_sender_waits_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{text}"
        );
    }
    assert_eq!(sample(&text, "rpc_shm_fallback_messages_total", &[]), 0.0);
    drop(shm);
    drop(rt);
    wait_for("the session gone with its client", &|t| {
        sample(t, "rpc_shm_sessions", &[]) == 0.0
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
}
