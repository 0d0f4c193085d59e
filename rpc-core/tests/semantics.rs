//! DESIGN §3: the stream semantics every transport honours, checked over the in-process
//! transport. Every wait is bounded (`within`): a hang is a failure, never a sleep.

mod support;

use std::time::Duration;

use rpc_core::server::RouteError;
use rpc_core::transport::ServerExt;
use rpc_core::{CallOptions, Code, Error, ProstCodec, Status};
use support::*;
use tokio::time::Instant;

#[tokio::test]
async fn pingpong_returns_response_with_header_and_trailer_metadata() {
    let h = harness();
    let res = within(h.client.unary::<ProstCodec, Msg, Msg>(
        ECHO,
        msg("hi", 7),
        CallOptions::new().metadata("x-echo", "v1"),
    ))
    .await
    .unwrap();
    assert_eq!(res.header().get_str("x-echo"), Some("v1"));
    assert_eq!(res.trailer().get_str("x-trailer"), Some("t"));
    assert_eq!(res.into_inner(), msg("hi", 7));
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn handler_error_reaches_client_as_status() {
    let h = harness();
    let err = within(h.client.unary::<ProstCodec, Msg, Msg>(
        ECHO,
        msg("fail", 0),
        CallOptions::new(),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "boom");
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn handler_panic_is_internal_and_server_keeps_serving() {
    let h = harness();
    let err = within(h.client.unary::<ProstCodec, Msg, Msg>(
        ECHO,
        msg("panic", 0),
        CallOptions::new(),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("handler exploded"), "{err}");
    let ok = within(h.client.unary::<ProstCodec, Msg, Msg>(
        ECHO,
        msg("after", 1),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    assert_eq!(ok.into_inner().text, "after");
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn unknown_service_or_method_is_unimplemented() {
    let h = harness();
    let err = within(h.client.unary::<ProstCodec, Msg, Msg>(
        &UNKNOWN,
        msg("x", 0),
        CallOptions::new(),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    // Routing errors are typed: an unknown method of a known service vs an unknown service.
    let route = h.server.resolve("Test", "Nope").unwrap_err();
    assert!(
        matches!(&route, RouteError::UnknownMethod { service, method } if service == "Test" && method == "Nope")
    );
    assert_eq!(Status::from(route).code(), Code::Unimplemented);
    assert_eq!(
        h.server.resolve("nope.Nope", "Chat").unwrap_err(),
        RouteError::UnknownService("nope.Nope".into())
    );
    // gRPC paths resolve with the full or the bare service name; malformed ones say so.
    assert_eq!(
        h.server
            .resolve_path("/test.Test/Chat", None)
            .unwrap()
            .method()
            .name,
        "Chat"
    );
    assert_eq!(
        h.server
            .resolve_path("/Test/Sum", None)
            .unwrap()
            .method()
            .name,
        "Sum"
    );
    assert!(h
        .server
        .resolve_path("/test.Test/Nope", None)
        .unwrap_err()
        .to_string()
        .contains("unknown method Nope"));
    assert!(h
        .server
        .resolve_path("/x.Y/Chat", None)
        .unwrap_err()
        .is_unknown_service());
    assert!(matches!(
        h.server.resolve_path("test.Test", None),
        Err(RouteError::MalformedPath(_))
    ));
    // Bare service name and empty service name both route (spec: /TestService/Echo must work).
    assert_eq!(
        h.server.resolve("Test", "Chat").unwrap().method().name,
        "Chat"
    );
    assert_eq!(h.server.resolve("", "Sum").unwrap().method().name, "Sum");
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn eof_is_ok_none_and_repeats() {
    let h = harness();
    let mut call = within(h.client.server_streaming::<ProstCodec, Msg, Msg>(
        COUNT,
        msg("s", 3),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    for i in 0..3 {
        assert_eq!(within(call.recv()).await.unwrap(), Some(msg("s", i)));
    }
    for _ in 0..3 {
        assert_eq!(within(call.recv()).await.unwrap(), None);
    }
    assert!(call.trailer().is_some());
    drop(call);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn error_after_messages_is_delivered_after_them_and_repeats() {
    let h = harness();
    let mut call = within(h.client.server_streaming::<ProstCodec, Msg, Msg>(
        COUNT,
        msg("fail-after", 2),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    assert!(within(call.recv()).await.unwrap().is_some());
    assert!(within(call.recv()).await.unwrap().is_some());
    let e1 = within(call.recv()).await.unwrap_err();
    let e2 = within(call.recv()).await.unwrap_err();
    assert_eq!(e1.code(), Code::Aborted);
    assert_eq!(e1, e2);
    drop(call);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn close_send_is_idempotent_and_send_after_it_fails_with_nothing_sent() {
    let mut h = harness();
    let mut call = within(
        h.client
            .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new()),
    )
    .await
    .unwrap();
    within(call.send(msg("a", 1))).await.unwrap();
    call.close_send().unwrap();
    call.close_send().unwrap();
    let err = within(call.send(msg("late", 2))).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(matches!(err.library_error(), Some(Error::SendAfterClose)));
    assert_eq!(within(call.recv()).await.unwrap(), Some(msg("a", 1)));
    assert_eq!(within(call.recv()).await.unwrap(), None);
    // The server saw exactly "a" and then EOF: the late message was never sent.
    assert!(matches!(h.event().await, Event::Got(m) if m.text == "a"));
    assert!(matches!(h.event().await, Event::Done));
    drop(call);
    h.assert_no_leaks().await;
}

// Paused time: the in-process path has no I/O, so the clock moves only when every task waits
// on a timer. A cancel that travels by events takes no virtual time at all; one that waited on
// some timer would show that timer's length. Wall-clock load cannot fail this.
#[tokio::test(start_paused = true)]
async fn dropping_a_client_handle_cancels_the_server_within_100ms() {
    let mut h = harness();
    let mut call = within(
        h.client
            .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new()),
    )
    .await
    .unwrap();
    within(call.send(msg("ping", 0))).await.unwrap();
    assert_eq!(within(call.recv()).await.unwrap(), Some(msg("ping", 0)));
    within(call.send(msg("wait-cancel", 0))).await.unwrap();
    let _ = h.event().await; // Got(ping)
    let dropped = Instant::now();
    drop(call);
    let status = h.ended().await;
    let elapsed = dropped.elapsed();
    assert_eq!(status.code(), Code::Cancelled);
    assert!(
        elapsed < Duration::from_millis(100),
        "server saw the cancel after {elapsed:?}"
    );
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn explicit_cancel_fails_server_recv_with_cancelled() {
    let mut h = harness();
    let mut call = within(
        h.client
            .client_streaming::<ProstCodec, Msg, Msg>(SUM, CallOptions::new()),
    )
    .await
    .unwrap();
    within(call.send(msg("a", 1))).await.unwrap();
    assert!(matches!(h.event().await, Event::Got(_)));
    call.cancel();
    assert_eq!(h.ended().await.code(), Code::Cancelled);
    // The client's own handle reports the cancel too, and does not hang.
    assert_eq!(
        within(call.close_and_recv()).await.unwrap_err().code(),
        Code::Cancelled
    );
    drop(call);
    h.assert_no_leaks().await;
}

// Paused time: the 10 ms pacing and the 200 ms deadline run on the virtual clock, so the
// number of round trips before the deadline does not depend on the machine's load.
#[tokio::test(start_paused = true)]
async fn deadline_ends_a_long_bidi_stream_on_both_sides() {
    let mut h = harness();
    let mut call = within(h.client.bidi::<ProstCodec, Msg, Msg>(
        CHAT,
        CallOptions::new().timeout(Duration::from_millis(200)),
    ))
    .await
    .unwrap();
    let start = Instant::now();
    // Keep the stream busy past the deadline: the deadline covers the stream, not the setup.
    let mut i = 0;
    let client_err = loop {
        match within(call.send(msg("tick", i))).await {
            Ok(()) => {}
            Err(e) => break e,
        }
        match within(call.recv()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("stream ended cleanly"),
            Err(e) => break e,
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await; // pacing the load, not waiting
    };
    assert_eq!(client_err.code(), Code::DeadlineExceeded);
    assert!(start.elapsed() >= Duration::from_millis(190));
    assert!(i > 3, "the stream ran before the deadline");
    assert_eq!(h.ended().await.code(), Code::DeadlineExceeded);
    // Further operations keep reporting the deadline.
    assert_eq!(
        within(call.recv()).await.unwrap_err().code(),
        Code::DeadlineExceeded
    );
    drop(call);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn server_side_deadline_fires_even_when_client_is_idle() {
    let mut h = harness();
    let call = within(h.client.unary::<ProstCodec, Msg, Msg>(
        ECHO,
        msg("sleep", 10_000),
        CallOptions::new().timeout(Duration::from_millis(100)),
    ));
    let err = call.await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(h.ended().await.code(), Code::DeadlineExceeded);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn client_streaming_returns_before_any_server_header() {
    let h = harness();
    // The handler sends nothing until the client half-closes; opening must not wait for it.
    let mut call = within(
        h.client
            .client_streaming::<ProstCodec, Msg, Msg>(SUM, CallOptions::new()),
    )
    .await
    .unwrap();
    for i in 1..=4 {
        within(call.send(msg("x", i))).await.unwrap();
    }
    let res = within(call.close_and_recv()).await.unwrap();
    assert_eq!(res, msg("xxxx", 10));
    drop(call);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn into_split_runs_send_and_recv_in_different_tasks() {
    let h = harness();
    let call = h.chat().await;
    let (mut tx, mut rx) = call.into_split();
    let sender = tokio::spawn(async move {
        for i in 0..100 {
            tx.send(msg("m", i)).await?;
        }
        tx.close_send()
    });
    let receiver = tokio::spawn(async move {
        let mut n = 0;
        while let Some(m) = rx.recv().await? {
            assert_eq!(m.n, n);
            n += 1;
        }
        Ok::<_, rpc_core::Status>(n)
    });
    within(sender).await.unwrap().unwrap();
    assert_eq!(within(receiver).await.unwrap().unwrap(), 100);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn dropping_the_receiver_half_resets_the_stream() {
    let mut h = harness();
    let call = h.chat().await;
    let (mut tx, rx) = call.into_split();
    within(tx.send(msg("wait-cancel", 0))).await.unwrap();
    drop(rx);
    assert_eq!(h.ended().await.code(), Code::Cancelled);
    let err = within(tx.send(msg("x", 0))).await.unwrap_err();
    assert_eq!(err.code(), Code::Cancelled);
    drop(tx);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn sender_blocks_when_receiver_never_reads_and_memory_stays_bounded() {
    const BUF: usize = 4096;
    let mut h = harness_with(|b| b, |c| c, BUF);
    let mut call = within(
        h.client
            .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new()),
    )
    .await
    .unwrap();
    within(call.send(msg("stop-reading", 0))).await.unwrap();
    let payload = "x".repeat(100);
    let mut sent = 0;
    let blocked = loop {
        let send = call.send(msg(&payload, sent));
        match tokio::time::timeout(Duration::from_millis(200), send).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(e)) => panic!("send failed: {e}"),
            Err(_) => break true,
        }
        assert!(sent < 10_000, "sender never blocked");
    };
    assert!(blocked);
    let one = 104; // encoded size of one message
    assert!(
        sent as usize * one >= BUF - one,
        "blocked too early after {sent} messages"
    );
    assert!(
        h.transport.buffered_bytes() <= BUF + one,
        "buffered {}",
        h.transport.buffered_bytes()
    );
    call.cancel();
    assert_eq!(h.ended().await.code(), Code::Cancelled);
    drop(call);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn server_header_rules_and_handles_outliving_the_handler() {
    use rpc_core::transport::BoxFuture;
    use rpc_core::{IncomingCall, MethodDesc, Mode, PayloadKind, Service, ServiceDesc, Status};

    static M: [MethodDesc; 1] = [MethodDesc {
        package: "",
        service: "Late",
        full_service: "Late",
        name: "Go",
        path: "/Late/Go",
        mode: Mode::ServerStreaming,
        payload: PayloadKind::Protobuf,
    }];
    static D: ServiceDesc = ServiceDesc {
        package: "",
        name: "Late",
        full_name: "Late",
        methods: &M,
    };
    struct Late(tokio::sync::mpsc::UnboundedSender<Result<(), Status>>);
    impl Service for Late {
        fn descriptor(&self) -> &'static ServiceDesc {
            &D
        }
        fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
            let report = self.0.clone();
            Box::pin(call.server_streaming::<ProstCodec, Msg, Msg, _, _>(
                move |ctx, _req, mut stream| async move {
                    ctx.set_header("early", "1")?;
                    stream.send(msg("one", 1)).await?;
                    let late_header = ctx.set_header("late", "2");
                    assert_eq!(late_header.unwrap_err().code(), Code::FailedPrecondition);
                    // A task that outlives the handler: its send must fail, never panic.
                    tokio::spawn(async move {
                        tokio::task::yield_now().await;
                        let r = stream.send(msg("too late", 2)).await;
                        let _ = report.send(r);
                    });
                    Ok(())
                },
            ))
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = rpc_core::Server::builder().add_service(Late(tx)).build();
    let transport = rpc_core::inproc::InProcTransport::new(server);
    let client = rpc_core::Client::new(transport.clone());
    let mut call = within(client.server_streaming::<ProstCodec, Msg, Msg>(
        &M[0],
        msg("", 0),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    assert_eq!(
        within(call.header()).await.unwrap().get_str("early"),
        Some("1")
    );
    assert_eq!(within(call.recv()).await.unwrap(), Some(msg("one", 1)));
    assert_eq!(within(call.recv()).await.unwrap(), None);
    let late = within(rx.recv()).await.unwrap();
    assert!(late.is_err(), "send after the handler returned must fail");
    drop(call);
    within(transport.wait_no_live_streams()).await;
}

/// A tiny deterministic generator, so a failure reproduces.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_dropped_at_random_points_leave_nothing_behind() {
    let h = harness();
    let mut rng = Lcg(0x5eed);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10_000u64 {
        let client = h.client.clone();
        let point = rng.next(6);
        tasks.spawn(async move {
            let Ok(mut call) = client
                .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new())
                .await
            else {
                return;
            };
            if point == 0 {
                return;
            }
            let _ = call.send(msg("r", i as i64)).await;
            if point == 1 {
                return;
            }
            let _ = call.recv().await;
            if point == 2 {
                return;
            }
            let _ = call.close_send();
            if point == 3 {
                return;
            }
            if point == 4 {
                call.cancel();
                return;
            }
            while let Ok(Some(_)) = call.recv().await {}
        });
        while tasks.len() > 256 {
            tasks.join_next().await;
        }
    }
    within(async { while tasks.join_next().await.is_some() {} }).await;
    h.assert_no_leaks().await;
    assert_eq!(h.server.active_streams(), 0);
    assert_eq!(h.transport.live_streams(), 0);
}

#[tokio::test]
async fn thrift_and_protobuf_flavours_of_one_service_route_by_payload() {
    use rpc_core::transport::BoxFuture;
    use rpc_core::{IncomingCall, MethodDesc, Mode, PayloadKind, Service, ServiceDesc, Status};

    static THRIFT_CHAT: [MethodDesc; 1] = [MethodDesc {
        package: "test",
        service: "Test",
        full_service: "test.Test",
        name: "Chat",
        path: "/test.Test/Chat",
        mode: Mode::Bidi,
        payload: PayloadKind::Thrift,
    }];
    static THRIFT_DESC: ServiceDesc = ServiceDesc {
        package: "test",
        name: "Test",
        full_name: "test.Test",
        methods: &THRIFT_CHAT,
    };
    struct ThriftFlavour;
    impl Service for ThriftFlavour {
        fn descriptor(&self) -> &'static ServiceDesc {
            &THRIFT_DESC
        }
        fn call(&self, _call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
            Box::pin(async { Err(Status::aborted("thrift flavour")) })
        }
    }
    let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
    let server = rpc_core::Server::builder()
        .add_service(TestService { events: tx })
        .add_service(ThriftFlavour)
        .build();
    let pb = server
        .resolve_for("test.Test", "Chat", Some(PayloadKind::Protobuf))
        .unwrap();
    assert_eq!(pb.method().payload, PayloadKind::Protobuf);
    let th = server
        .resolve_for("Test", "Chat", Some(PayloadKind::Thrift))
        .unwrap();
    assert_eq!(th.method().payload, PayloadKind::Thrift);
    // Without the payload kind the name alone is ambiguous: refused, never a guess.
    assert_eq!(
        server.resolve("test.Test", "Chat").unwrap_err(),
        RouteError::Ambiguous("Chat".into())
    );
    // Only the protobuf flavour has Echo.
    assert_eq!(
        server.resolve("test.Test", "Echo").unwrap().method().name,
        "Echo"
    );
    // In-process calls carry their payload kind, so each reaches its flavour.
    let client = rpc_core::Client::new(rpc_core::inproc::InProcTransport::new(server));
    let mut call = within(client.bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new()))
        .await
        .unwrap();
    within(call.send(msg("pb", 1))).await.unwrap();
    assert_eq!(within(call.recv()).await.unwrap(), Some(msg("pb", 1)));
}

/// A send that fails because the server ended the stream, then the sender dropped without
/// `close_send` (what a relay does when its backend answered first): the drop must not turn
/// the stream into a user cancel, and the receiver still gets the server's own status.
#[tokio::test]
async fn dropping_a_sender_whose_send_failed_keeps_the_servers_status() {
    let h = harness();
    let call = h.chat().await;
    let (mut tx, mut rx) = call.into_split();
    within(tx.send(msg("fail", 0))).await.unwrap();
    within(async {
        while tx.send(msg("x", 0)).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(tx);
    let err = within(rx.recv()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    drop(rx);
    h.assert_no_leaks().await;
}
