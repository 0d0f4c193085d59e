//! End to end over real sockets: every mode, both payload kinds, TCP and Unix sockets, and the
//! failure behaviour (cancel, deadline, errors, peer crash, malformed input, memory bounds).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rpc_core::Address;
use rpc_core::{CallOptions, Client, Code, MethodDesc, ProstCodec, ThriftCodec};
use rpc_transport_ttheader::{ConnectionMode, Framing, Limits, TtHeaderClient};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn tcp_server() -> (Served, Probe) {
    let (server, probe) = server();
    let h = serve_tcp(server, "127.0.0.1:0".parse().unwrap(), Limits::default())
        .await
        .unwrap();
    (h, probe)
}

fn endpoint(h: &Served) -> Address {
    Address::from(h.local_addr().unwrap())
}

async fn no_leaks(client: &TtHeaderClient, server: &Served) {
    within(async {
        while client.stats().streams() != 0 || server.stats().streams() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(client.stats().buffered_bytes(), 0);
    assert_eq!(server.stats().buffered_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_modes_over_tcp_with_protobuf_and_thrift() {
    let (h, _probe) = tcp_server().await;
    let transport = TtHeaderClient::new(endpoint(&h));
    let client = Client::new(transport.clone());
    all_modes::<ProstCodec, PbMsg>(&client, &PB).await;
    all_modes::<ThriftCodec, TMsg>(&client, &TH).await;
    no_leaks(&transport, &h).await;
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_modes_over_unix_sockets() {
    let dir = std::env::temp_dir().join(format!("rpc-tt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("e2e.sock");
    let (server, _probe) = server();
    let h = serve_unix(server, &path, Limits::default()).await.unwrap();
    let transport = TtHeaderClient::new(Address::Unix(path.clone()));
    let client = Client::new(transport.clone());
    all_modes::<ProstCodec, PbMsg>(&client, &PB).await;
    all_modes::<ThriftCodec, TMsg>(&client, &TH).await;
    no_leaks(&transport, &h).await;
    h.shutdown(Duration::from_secs(1)).await;
    assert!(!path.exists(), "the socket file is removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_thrift_framed_unframed_plain_and_mux() {
    let (h, _probe) = tcp_server().await;
    for framing in [Framing::Unframed, Framing::Framed] {
        for mode in [ConnectionMode::Pooled, ConnectionMode::Multiplexed] {
            let transport = TtHeaderClient::builder(endpoint(&h))
                .unary_framing(framing)
                .connection_mode(mode)
                .build();
            let client = Client::new(transport.clone());
            // concurrent calls: pooled mode opens more connections, multiplexed mode shares them
            let calls = (0..20).map(|i| {
                let client = client.clone();
                async move {
                    client
                        .unary::<ThriftCodec, TMsg, TMsg>(&TH[0], msg("u", i), CallOptions::new())
                        .await
                }
            });
            let results = within(futures::future::join_all(calls)).await;
            for (i, r) in results.into_iter().enumerate() {
                assert_eq!(
                    r.unwrap().into_inner(),
                    msg("u", i as i64),
                    "{framing:?} {mode:?}"
                );
            }
            no_leaks(&transport, &h).await;
        }
    }
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn handler_errors_keep_their_code_and_message() {
    let (h, _probe) = tcp_server().await;
    let client = Client::new(TtHeaderClient::new(endpoint(&h)));
    // unary TTHeader (EXCEPTION reply) and ttstream (Trailer exception)
    for method in [&TH[0]] {
        let e = within(client.unary::<ThriftCodec, TMsg, TMsg>(
            method,
            msg("fail", 0),
            CallOptions::new(),
        ))
        .await
        .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "no such thing"));
    }
    let e = within(client.unary::<ProstCodec, PbMsg, PbMsg>(
        &PB[0],
        msg("fail", 0),
        CallOptions::new(),
    ))
    .await
    .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "no such thing"));
    assert_eq!(
        e.transport_code(),
        Some(12001),
        "Kitex sees an application exception"
    );

    // an error after messages arrives after them
    let mut call = within(client.server_streaming::<ProstCodec, PbMsg, PbMsg>(
        &PB[2],
        msg("fail-after", 2),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    assert!(within(call.recv()).await.unwrap().is_some());
    assert!(within(call.recv()).await.unwrap().is_some());
    assert_eq!(within(call.recv()).await.unwrap_err().code(), Code::Aborted);
    h.shutdown(Duration::from_secs(1)).await;
}

/// Binary metadata travels as Kitex carries binary metainfo (the value's bytes as they are in
/// the string KV), over unary TTHeader and TTHeader Streaming, both ways: neither refused nor
/// dropped. A non-UTF-8 value, and any value under a `-bin` key, reads back as binary.
#[tokio::test]
async fn binary_metadata_travels_as_raw_bytes() {
    let (h, _probe) = tcp_server().await;
    let client = Client::new(TtHeaderClient::new(endpoint(&h)));
    let raw = Bytes::from_static(b"\x00\xff\x01");
    let utf8 = Bytes::from_static(b"plain");
    let mut opts = CallOptions::new();
    opts.metadata.append("trace-bin", utf8.clone());
    opts.metadata.append("x-raw", raw.clone());
    let check = |header: &rpc_core::Metadata, trailer: &rpc_core::Metadata, what: &str| {
        for (md, prefix) in [(header, "echo-"), (trailer, "trailer-")] {
            let bin = |k: &str| match md.get(&format!("{prefix}{k}")) {
                Some(rpc_core::MetadataValue::Binary(b)) => b.clone(),
                other => panic!("{what}: {prefix}{k} is {other:?} in {md:?}"),
            };
            assert_eq!(bin("trace-bin"), utf8, "{what}");
            assert_eq!(bin("x-raw"), raw, "{what}");
        }
    };
    let thrift = within(client.unary::<ThriftCodec, TMsg, TMsg>(&TH[0], msg("x", 0), opts.clone()))
        .await
        .unwrap();
    check(thrift.header(), thrift.trailer(), "unary TTHeader");
    let stream = within(client.unary::<ProstCodec, PbMsg, PbMsg>(&PB[0], msg("x", 0), opts))
        .await
        .unwrap();
    check(stream.header(), stream.trailer(), "TTHeader Streaming");
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn biz_status_travels_as_keys_not_exceptions() {
    let (h, _probe) = tcp_server().await;
    let client = Client::new(TtHeaderClient::new(endpoint(&h)));
    let unary =
        within(client.unary::<ThriftCodec, TMsg, TMsg>(&TH[0], msg("biz", 0), CallOptions::new()))
            .await
            .unwrap_err();
    let stream =
        within(client.unary::<ProstCodec, PbMsg, PbMsg>(&PB[0], msg("biz", 0), CallOptions::new()))
            .await
            .unwrap_err();
    for e in [unary, stream] {
        assert_eq!(e.transport_code(), Some(4001));
        assert_eq!(e.message(), "insufficient balance");
        assert_eq!(e.metadata().get_str("biz-status"), Some("4001"));
        assert_eq!(e.metadata().get_str("biz-extra"), Some("{\"k\":\"v\"}"));
    }
    h.shutdown(Duration::from_secs(1)).await;
}

static MISSING: [MethodDesc; 2] = [
    MethodDesc {
        package: "test",
        service: "PbTest",
        full_service: "test.PbTest",
        name: "Nope",
        path: "/test.PbTest/Nope",
        mode: rpc_core::Mode::Bidi,
        payload: rpc_core::PayloadKind::Protobuf,
    },
    MethodDesc {
        package: "test",
        service: "Ghost",
        full_service: "test.Ghost",
        name: "Echo",
        path: "/test.Ghost/Echo",
        mode: rpc_core::Mode::Unary,
        payload: rpc_core::PayloadKind::Thrift,
    },
];

#[tokio::test]
async fn unknown_method_or_service_is_answered_not_left_hanging() {
    let (h, _probe) = tcp_server().await;
    let client = Client::new(TtHeaderClient::new(endpoint(&h)));
    let mut call = within(client.bidi::<ProstCodec, PbMsg, PbMsg>(&MISSING[0], CallOptions::new()))
        .await
        .unwrap();
    let e = within(call.recv()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert_eq!(
        e.transport_code(),
        Some(1),
        "TApplicationException UNKNOWN_METHOD"
    );
    let e = within(client.unary::<ThriftCodec, TMsg, TMsg>(
        &MISSING[1],
        msg("x", 0),
        CallOptions::new(),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert_eq!(
        e.transport_code(),
        Some(20),
        "TApplicationException UNKNOWN_SERVICE"
    );
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_by_drop_reaches_the_server_as_rst() {
    let (h, mut probe) = tcp_server().await;
    let transport = TtHeaderClient::new(endpoint(&h));
    let client = Client::new(transport.clone());
    let mut call = within(client.bidi::<ProstCodec, PbMsg, PbMsg>(&PB[3], CallOptions::new()))
        .await
        .unwrap();
    within(call.send(msg("wait-cancel", 0))).await.unwrap();
    // Make sure the handler is running before we drop.
    assert!(matches!(probe.event().await, Event::Got(0)));
    let t = tokio::time::Instant::now();
    drop(call);
    let s = probe.ended().await;
    assert_eq!(s.code(), Code::Cancelled);
    assert_eq!(s.transport_code(), Some(12007));
    // Event-driven: about a millisecond when idle. Nothing but the Rst ends this handler (it
    // waits for a cancel), so the bound only has to tell "promptly" from "stuck"; it is generous
    // for a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    no_leaks(&transport, &h).await;
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_is_sent_on_the_wire_and_enforced_by_the_server() {
    let (h, mut probe) = tcp_server().await;
    let transport = TtHeaderClient::new(endpoint(&h));
    let client = Client::new(transport.clone());
    for method in [&PB[0]] {
        let e = within(client.unary::<ProstCodec, PbMsg, PbMsg>(
            method,
            msg("wait-cancel", 0),
            CallOptions::new().timeout(Duration::from_millis(150)),
        ))
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded);
        assert_eq!(probe.ended().await.code(), Code::DeadlineExceeded);
    }
    // unary TTHeader: int key 12 reaches the server, which ends the handler on time. Multiplexed
    // mode, because a pooled-mode client that gives up closes its connection (the late reply
    // would be taken for the next call's), and that close races the server's own timer: the
    // handler would end as cancelled or as timed out depending on the machine's load.
    let mux = TtHeaderClient::builder(endpoint(&h))
        .connection_mode(ConnectionMode::Multiplexed)
        .build();
    let e = within(Client::new(mux.clone()).unary::<ThriftCodec, TMsg, TMsg>(
        &TH[0],
        msg("wait-cancel", 0),
        CallOptions::new().timeout(Duration::from_millis(150)),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert_eq!(probe.ended().await.code(), Code::DeadlineExceeded);
    no_leaks(&transport, &h).await;
    no_leaks(&mux, &h).await;
    h.shutdown(Duration::from_secs(1)).await;
}

/// A TCP proxy the test can cut, to simulate a peer crash mid-stream.
async fn proxy(target: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (mut inbound, _) = l.accept().await.unwrap();
            conns.spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_connection_mid_stream_ends_both_sides_promptly() {
    let (h, mut probe) = tcp_server().await;
    let (addr, proxy_task) = proxy(h.local_addr().unwrap()).await;
    let transport = TtHeaderClient::new(Address::from(addr));
    let client = Client::new(transport.clone());
    let mut call = within(client.bidi::<ThriftCodec, TMsg, TMsg>(&TH[3], CallOptions::new()))
        .await
        .unwrap();
    within(call.send(msg("a", 1))).await.unwrap();
    assert_eq!(within(call.recv()).await.unwrap(), Some(msg("a", 1)));
    assert!(matches!(probe.event().await, Event::Got(1)));
    proxy_task.abort(); // drops every proxied socket: the connection is gone
    let e = within(call.recv()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(probe.ended().await.code(), Code::Unavailable);
    drop(call);
    no_leaks(&transport, &h).await;
    // The client reconnects for the next call (through a new proxy).
    let (addr2, _p2) = proxy(h.local_addr().unwrap()).await;
    let client2 = Client::new(TtHeaderClient::new(Address::from(addr2)));
    assert!(within(client2.unary::<ThriftCodec, TMsg, TMsg>(
        &TH[0],
        msg("again", 0),
        CallOptions::new()
    ))
    .await
    .is_ok());
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_closed_the_connection() {
    let (server, _probe) = server();
    let h = serve_tcp(
        server.clone(),
        "127.0.0.1:0".parse().unwrap(),
        Limits::default(),
    )
    .await
    .unwrap();
    let addr = h.local_addr().unwrap();
    let transport = TtHeaderClient::builder(Address::from(addr))
        .pool_size(1)
        .build();
    let client = Client::new(transport.clone());
    within(client.unary::<ProstCodec, PbMsg, PbMsg>(&PB[0], msg("1", 1), CallOptions::new()))
        .await
        .unwrap();
    h.shutdown(Duration::from_millis(100)).await;
    let h2 = serve_tcp(server, addr, Limits::default()).await.unwrap();
    // The pooled connection is dead; the next call finds out and dials again.
    let mut ok = false;
    for _ in 0..3 {
        if within(client.unary::<ProstCodec, PbMsg, PbMsg>(&PB[0], msg("2", 2), CallOptions::new()))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "no reconnect");
    h2.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frame_closes_that_connection_and_the_server_keeps_serving() {
    let (h, _probe) = tcp_server().await;
    let client = Client::new(TtHeaderClient::new(endpoint(&h)));
    let mut good = within(client.bidi::<ProstCodec, PbMsg, PbMsg>(&PB[3], CallOptions::new()))
        .await
        .unwrap();
    within(good.send(msg("before", 1))).await.unwrap();
    assert!(within(good.recv()).await.unwrap().is_some());

    // A streaming-flagged TTHeader frame whose header declares an info block id 0x42.
    let mut bad = tokio::net::TcpStream::connect(h.local_addr().unwrap())
        .await
        .unwrap();
    let frame: &[u8] = &[
        0, 0, 0, 14, 0x10, 0x00, 0x00, 0x02, 0, 0, 0, 1, 0, 1, 0x10, 0x00, 0x42, 0x00,
    ];
    bad.write_all(frame).await.unwrap();
    let mut sink = Vec::new();
    let n = within(bad.read_to_end(&mut sink)).await.unwrap_or(0);
    assert_eq!(
        n, 0,
        "the server closed the bad connection without answering"
    );

    within(good.send(msg("after", 2))).await.unwrap();
    assert_eq!(within(good.recv()).await.unwrap().map(|m| m.n), Some(2));
    good.close_send().unwrap();
    assert_eq!(within(good.recv()).await.unwrap(), None);
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_rejected_before_allocation() {
    let (server, _probe) = server();
    let cfg = Limits::default().max_frame_size(64 * 1024);
    let h = serve_tcp(server, "127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let mut raw = tokio::net::TcpStream::connect(h.local_addr().unwrap())
        .await
        .unwrap();
    // LENGTH = 1 GiB, then nothing: the server must close, not wait for (or reserve) 1 GiB.
    raw.write_all(&[0x40, 0, 0, 0, 0x10, 0x00, 0x00, 0x02, 0, 0, 0, 1, 0, 1])
        .await
        .unwrap();
    let mut sink = Vec::new();
    assert_eq!(within(raw.read_to_end(&mut sink)).await.unwrap_or(0), 0);
    // A client whose messages exceed the limit gets RESOURCE_EXHAUSTED, not a broken connection.
    let transport = TtHeaderClient::builder(endpoint(&h))
        .limits(Limits::default().max_frame_size(64 * 1024))
        .build();
    let client = Client::new(transport);
    let big = PbMsg::make("big", 0, Bytes::from(vec![0u8; 100 * 1024]));
    let mut call = within(client.bidi::<ProstCodec, PbMsg, PbMsg>(&PB[3], CallOptions::new()))
        .await
        .unwrap();
    let e = within(call.send(big)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    within(call.send(msg("small", 3))).await.unwrap();
    assert_eq!(within(call.recv()).await.unwrap().map(|m| m.n), Some(3));
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_on_one_connection() {
    let (h, _probe) = tcp_server().await;
    let transport = TtHeaderClient::builder(endpoint(&h)).pool_size(1).build();
    let client = Client::new(transport.clone());
    let mut set = tokio::task::JoinSet::new();
    for s in 0..1000i64 {
        let client = client.clone();
        set.spawn(async move {
            let mut call = client
                .bidi::<ThriftCodec, TMsg, TMsg>(&TH[3], CallOptions::new())
                .await?;
            for i in 0..3 {
                call.send(msg("c", s * 10 + i)).await?;
            }
            call.close_send()?;
            let mut got = Vec::new();
            while let Some(m) = call.recv().await? {
                got.push(m.n);
            }
            assert_eq!(got, vec![s * 10, s * 10 + 1, s * 10 + 2]);
            Ok::<_, rpc_core::Status>(())
        });
    }
    within(async {
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
    })
    .await;
    assert_eq!(
        transport.stats().connections(),
        1,
        "all streams shared one connection"
    );
    no_leaks(&transport, &h).await;
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_does_not_read_bounds_memory_while_256_mib_are_pushed() {
    const STREAM_BUF: usize = 1 << 20;
    const MSG: usize = 256 * 1024;
    const TOTAL: usize = 256 << 20;
    let (server, mut probe) = server();
    let cfg = Limits::default().stream_recv_buffer(STREAM_BUF);
    let h = serve_tcp(server, "127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let transport = TtHeaderClient::builder(endpoint(&h)).pool_size(2).build();
    let client = Client::new(transport.clone());

    let mut call = within(client.bidi::<ProstCodec, PbMsg, PbMsg>(&PB[3], CallOptions::new()))
        .await
        .unwrap();
    within(call.send(msg("hold", -1))).await.unwrap();
    assert!(matches!(probe.event().await, Event::Got(-1)));
    let payload = Bytes::from(vec![7u8; MSG]);
    let pusher = tokio::spawn(async move {
        for i in 0..(TOTAL / MSG) as i64 {
            call.send(PbMsg::make("bulk", i, payload.clone())).await?;
        }
        call.close_send()?;
        while call.recv().await?.is_some() {}
        Ok::<_, rpc_core::Status>(())
    });
    // The handler is not reading: the stream's buffer fills up and the reader stops.
    within(async {
        while h.stats().buffered_bytes() < STREAM_BUF {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Meanwhile a stream on another connection of the pool works (head-of-line blocking is
    // confined to the stalled connection).
    let other = Client::new(TtHeaderClient::new(endpoint(&h)));
    within(other.unary::<ProstCodec, PbMsg, PbMsg>(&PB[0], msg("alive", 1), CallOptions::new()))
        .await
        .unwrap();
    assert!(h.stats().buffered_bytes() <= STREAM_BUF + MSG);
    probe.gate.notify_one();
    tokio::time::timeout(Duration::from_secs(120), pusher)
        .await
        .expect("256 MiB did not get through")
        .unwrap()
        .unwrap();
    let max = h.stats().max_buffered_bytes();
    assert!(max <= STREAM_BUF + MSG, "buffered up to {max} bytes");
    assert!(max >= STREAM_BUF, "the bound was reached ({max})");
    no_leaks(&transport, &h).await;
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_open_streams_finish_and_refuses_new_ones() {
    let (h, _probe) = tcp_server().await;
    let transport = TtHeaderClient::builder(endpoint(&h)).pool_size(1).build();
    let client = Client::new(transport.clone());
    let mut call = within(client.bidi::<ThriftCodec, TMsg, TMsg>(&TH[3], CallOptions::new()))
        .await
        .unwrap();
    within(call.send(msg("a", 1))).await.unwrap();
    assert!(within(call.recv()).await.unwrap().is_some());
    let shutdown = tokio::spawn(h.shutdown(Duration::from_secs(5)));
    // The open stream keeps working during the grace period.
    tokio::task::yield_now().await;
    within(call.send(msg("b", 2))).await.unwrap();
    assert_eq!(within(call.recv()).await.unwrap().map(|m| m.n), Some(2));
    call.close_send().unwrap();
    assert_eq!(within(call.recv()).await.unwrap(), None);
    within(shutdown).await.unwrap();
    let e =
        within(client.unary::<ThriftCodec, TMsg, TMsg>(&TH[0], msg("late", 0), CallOptions::new()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
}

/// A multiplexed pool's calls go round its slots, connecting each on its first call: calls made
/// one after another end up on every connection of the pool (the calls that open at once, on
/// a connection already up, never make the round robin skip a slot still to connect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiplexed_pool_connects_every_slot() {
    let (h, _probe) = tcp_server().await;
    let mux = TtHeaderClient::builder(endpoint(&h))
        .connection_mode(ConnectionMode::Multiplexed)
        .pool_size(4)
        .build();
    let client = Client::new(mux.clone());
    for i in 0..16 {
        within(client.unary::<ThriftCodec, TMsg, TMsg>(&TH[0], msg("x", i), CallOptions::new()))
            .await
            .unwrap();
    }
    assert_eq!(mux.stats().connections(), 4);
    no_leaks(&mux, &h).await;
    h.shutdown(Duration::from_secs(1)).await;
}
