//! What a tonic user expects of the handles: `futures::Stream` for every receiving handle,
//! `send_all(impl Stream)` for sending ones, with and without recv middleware.

mod support;

use futures::{stream, StreamExt};
use rpc_core::middleware::{recv_fn, AnyMessage};
use rpc_core::{CallContext, CallOptions, Code, ProstCodec, Status};
use support::*;

#[tokio::test]
async fn server_streaming_call_is_a_stream_and_ends_with_none() {
    let h = harness();
    let call = within(h.client.server_streaming::<ProstCodec, Msg, Msg>(
        COUNT,
        msg("n", 5),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    let got: Vec<_> = within(call.map(|r| r.unwrap().n).collect::<Vec<_>>()).await;
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn a_failed_stream_yields_its_error_once_then_none() {
    let h = harness();
    let mut call = within(h.client.server_streaming::<ProstCodec, Msg, Msg>(
        COUNT,
        msg("fail-after", 2),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    assert_eq!(within(call.next()).await.unwrap().unwrap().n, 0);
    assert_eq!(within(call.next()).await.unwrap().unwrap().n, 1);
    let err = within(call.next()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(within(call.next()).await.is_none());
    // The async `recv` still reports the end as before.
    assert_eq!(within(call.recv()).await.unwrap_err().code(), Code::Aborted);
    drop(call);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn bidi_send_all_from_a_stream_and_receive_as_a_stream() {
    let h = harness();
    let call = h.chat().await;
    let (mut tx, rx) = call.into_split();
    let sender = tokio::spawn(async move {
        tx.send_all(stream::iter((0..100).map(|i| msg("m", i))))
            .await
            .unwrap();
        tx.close_send().unwrap();
    });
    let got: Vec<i64> = within(rx.map(|r| r.unwrap().n).collect::<Vec<_>>()).await;
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    within(sender).await.unwrap();
    h.assert_no_leaks().await;
}

fn suffix(tag: &'static str) -> impl Fn(&CallContext, &mut AnyMessage) -> Result<(), Status> {
    move |_ctx, m| {
        let m = m.downcast_mut::<Msg>().expect("Msg");
        m.text.push_str(tag);
        Ok(())
    }
}

#[tokio::test]
async fn stream_polling_runs_recv_middleware_on_both_sides() {
    let h = harness_with(
        |s| s.recv_middleware(recv_fn(suffix("-s"))),
        |c| c.recv_middleware(recv_fn(suffix("-c"))),
        rpc_core::inproc::DEFAULT_STREAM_BUFFER,
    );
    let mut call = within(
        h.client
            .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new()),
    )
    .await
    .unwrap();
    call.send_all(stream::iter((0..3).map(|i| msg("x", i))))
        .await
        .unwrap();
    call.close_send().unwrap();
    // Mix the two ways of receiving: a `Stream` poll, then `recv`, then the stream again.
    let first = within(call.next()).await.unwrap().unwrap();
    assert_eq!(first.text, "x-s-c");
    let second = within(call.recv()).await.unwrap().unwrap();
    assert_eq!(second.n, 1);
    let rest: Vec<_> = within(call.by_ref().collect::<Vec<_>>()).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].as_ref().unwrap().text, "x-s-c");
    assert!(within(call.recv()).await.unwrap().is_none());
    drop(call);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn dropping_a_stream_mid_poll_with_middleware_resets_and_leaks_nothing() {
    let h = harness_with(
        |s| s,
        |c| c.recv_middleware(recv_fn(suffix("-c"))),
        rpc_core::inproc::DEFAULT_STREAM_BUFFER,
    );
    let mut call = within(
        h.client
            .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new()),
    )
    .await
    .unwrap();
    // A poll that stays pending (nothing sent yet) holds a receive in flight.
    let pending = futures::poll!(call.next());
    assert!(pending.is_pending());
    drop(call);
    h.assert_no_leaks().await;
}

mod who {
    use rpc_core::transport::BoxFuture;
    use rpc_core::{
        IncomingCall, MethodDesc, Mode, PayloadKind, ProstCodec, Service, ServiceDesc, Status,
    };

    pub(crate) static METHODS: [MethodDesc; 1] = [MethodDesc {
        package: "demo",
        service: "Who",
        full_service: "demo.Who",
        name: "Am",
        path: "/demo.Who/Am",
        mode: Mode::Unary,
        payload: PayloadKind::Protobuf,
    }];
    static DESC: ServiceDesc = ServiceDesc {
        package: "demo",
        name: "Who",
        full_name: "demo.Who",
        methods: &METHODS,
    };

    /// The principal an auth interceptor attaches.
    #[derive(Clone, Debug, PartialEq)]
    pub(crate) struct Principal(pub(crate) String);

    /// Answers with the principal the interceptor found.
    pub(crate) struct Who;
    impl Service for Who {
        fn descriptor(&self) -> &'static ServiceDesc {
            &DESC
        }
        fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
            Box::pin(
                call.unary::<ProstCodec, String, String, _, _>(|ctx, _req| async move {
                    let p = ctx
                        .extension::<Principal>()
                        .ok_or_else(|| Status::internal("no principal"))?;
                    Ok(p.0)
                }),
            )
        }
    }
}

#[tokio::test]
async fn interceptors_add_metadata_refuse_calls_and_hand_extensions_to_the_handler() {
    use rpc_core::inproc::InProcTransport;
    use rpc_core::{Client, Server};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let server = Server::builder()
        .add_service(who::Who)
        .interceptor(move |ctx| {
            counted.fetch_add(1, Ordering::SeqCst);
            match ctx.metadata().get_str("authorization") {
                Some(token) if token.starts_with("Bearer ") => {
                    ctx.insert_extension(who::Principal(token[7..].to_owned()));
                    Ok(())
                }
                _ => Err(Status::unauthenticated("no token")),
            }
        })
        .build();
    let transport = InProcTransport::new(server);
    let authed = Client::builder(transport.clone())
        .interceptor(|ctx| {
            ctx.metadata_mut().append("authorization", "Bearer alice");
            Ok(())
        })
        .build();
    let res = within(authed.unary::<ProstCodec, String, String>(
        &who::METHODS[0],
        "?".into(),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    assert_eq!(res.into_inner(), "alice");

    let anonymous = Client::new(transport.clone());
    let err = within(anonymous.unary::<ProstCodec, String, String>(
        &who::METHODS[0],
        "?".into(),
        CallOptions::new(),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(seen.load(Ordering::SeqCst), 2);

    // A client interceptor that refuses: nothing reaches the server.
    let refused = Client::builder(transport.clone())
        .interceptor(|_ctx| Err(Status::failed_precondition("not today")))
        .build();
    let err = within(refused.unary::<ProstCodec, String, String>(
        &who::METHODS[0],
        "?".into(),
        CallOptions::new(),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(seen.load(Ordering::SeqCst), 2, "the server never saw it");
    within(transport.wait_no_live_streams()).await;
}

/// A unary layer that records each call's request text and final code, and retries a call
/// that failed with INVALID_ARGUMENT once with a repaired request (a retry needs the message).
#[derive(Clone)]
struct Audit<S> {
    inner: S,
    log: std::sync::Arc<std::sync::Mutex<Vec<(String, Code)>>>,
}

impl<S> tower::Service<rpc_core::unary::UnaryRequest> for Audit<S>
where
    S: tower::Service<
            rpc_core::unary::UnaryRequest,
            Response = rpc_core::unary::UnaryResponse,
            Error = Status,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = rpc_core::unary::UnaryResponse;
    type Error = Status;
    type Future = rpc_core::transport::BoxFuture<'static, Result<Self::Response, Status>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: rpc_core::unary::UnaryRequest) -> Self::Future {
        let mut inner = self.inner.clone();
        let log = self.log.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            let text = req
                .message::<Msg>()
                .map(|m| m.text.clone())
                .unwrap_or_default();
            let retry = req.clone();
            let first = inner.ready().await?.call(req).await;
            let code = first.as_ref().err().map_or(Code::Ok, Status::code);
            log.lock().unwrap().push((text, code));
            match first {
                Err(e) if e.code() == Code::InvalidArgument => {
                    let mut again = retry;
                    again.message_mut::<Msg>().unwrap().text = "repaired".into();
                    let second = inner.ready().await?.call(again).await;
                    let code = second.as_ref().err().map_or(Code::Ok, Status::code);
                    log.lock().unwrap().push(("repaired".into(), code));
                    second
                }
                other => other,
            }
        })
    }
}

#[tokio::test]
async fn unary_layers_see_the_request_message_and_the_final_status_and_can_retry() {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let layer_log = log.clone();
    let h = harness_with(
        |s| s,
        move |c| {
            c.unary_layer(tower::layer::layer_fn(move |inner| Audit {
                inner,
                log: layer_log.clone(),
            }))
        },
        rpc_core::inproc::DEFAULT_STREAM_BUFFER,
    );
    let ok = within(h.client.unary::<ProstCodec, Msg, Msg>(
        ECHO,
        msg("hello", 1),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    assert_eq!(ok.get_ref().text, "hello");
    // The handler fails "fail" with INVALID_ARGUMENT; the layer retries with a new message.
    let retried = within(h.client.unary::<ProstCodec, Msg, Msg>(
        ECHO,
        msg("fail", 2),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    assert_eq!(retried.get_ref().text, "repaired");
    assert_eq!(
        retried.trailer().get_str("x-trailer"),
        Some("t"),
        "metadata survives the layer"
    );
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            ("hello".to_owned(), Code::Ok),
            ("fail".to_owned(), Code::InvalidArgument),
            ("repaired".to_owned(), Code::Ok),
        ]
    );
    h.assert_no_leaks().await;
}
