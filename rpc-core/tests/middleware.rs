//! DESIGN §4: per-message send/recv middleware and tower call middleware, on both sides.

mod support;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rpc_core::client::OpenStream;
use rpc_core::middleware::{recv_fn, send_fn, AnyMessage};
use rpc_core::server::IncomingCall;
use rpc_core::transport::BoxFuture;
use rpc_core::{CallContext, CallOptions, Code, ProstCodec, Status};
use support::*;

type Log = Arc<Mutex<Vec<String>>>;

fn log_entry(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

/// Appends `suffix` to the message text and logs `tag`.
fn tagger(
    log: &Log,
    tag: &'static str,
) -> impl Fn(&CallContext, &mut AnyMessage) -> Result<(), Status> + Send + Sync + 'static {
    let log = log.clone();
    move |_ctx, m| {
        let m = m.downcast_mut::<Msg>().expect("Msg");
        if m.text.starts_with("bad") && tag.ends_with("reject") {
            return Err(Status::permission_denied(format!(
                "{tag} rejected {}",
                m.text
            )));
        }
        m.text.push_str(&format!("-{tag}"));
        log_entry(&log, tag);
        Ok(())
    }
}

#[tokio::test]
async fn message_middleware_order_and_modification_on_both_sides() {
    let log: Log = Arc::default();
    let mut h = harness_with(
        |s| {
            s.recv_middleware(recv_fn(tagger(&log, "srecv1")))
                .recv_middleware(recv_fn(tagger(&log, "srecv2")))
                .send_middleware(send_fn(tagger(&log, "ssend1")))
                .send_middleware(send_fn(tagger(&log, "ssend2")))
        },
        |c| {
            c.send_middleware(send_fn(tagger(&log, "csend1")))
                .send_middleware(send_fn(tagger(&log, "csend2")))
                .recv_middleware(recv_fn(tagger(&log, "crecv1")))
                .recv_middleware(recv_fn(tagger(&log, "crecv2")))
        },
        rpc_core::inproc::DEFAULT_STREAM_BUFFER,
    );
    let mut call = within(
        h.client
            .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new()),
    )
    .await
    .unwrap();
    within(call.send(msg("x", 0))).await.unwrap();
    let got = within(call.recv()).await.unwrap().unwrap();
    // Send: first registered runs first. Recv: first registered is outermost, so it sees the
    // message last (after the inner ones changed it).
    let on_server = "x-csend1-csend2-srecv2-srecv1";
    match h.event().await {
        Event::Got(m) => assert_eq!(m.text, on_server),
        e => panic!("{e:?}"),
    }
    assert_eq!(got.text, format!("{on_server}-ssend1-ssend2-crecv2-crecv1"));
    assert_eq!(
        *log.lock().unwrap(),
        ["csend1", "csend2", "srecv2", "srecv1", "ssend1", "ssend2", "crecv2", "crecv1"]
    );
    call.close_send().unwrap();
    assert_eq!(within(call.recv()).await.unwrap(), None);
    drop(call);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn client_send_middleware_rejection_sends_nothing_and_stream_continues() {
    let log: Log = Arc::default();
    let mut h = harness_with(
        |s| s,
        |c| c.send_middleware(send_fn(tagger(&log, "reject"))),
        1 << 16,
    );
    let mut call = within(
        h.client
            .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new()),
    )
    .await
    .unwrap();
    let err = within(call.send(msg("bad", 0))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    within(call.send(msg("good", 1))).await.unwrap();
    call.close_send().unwrap();
    assert_eq!(
        within(call.recv()).await.unwrap().unwrap().text,
        "good-reject"
    );
    assert_eq!(within(call.recv()).await.unwrap(), None);
    // The server saw only the accepted message.
    match h.event().await {
        Event::Got(m) => assert_eq!(m.text, "good-reject"),
        e => panic!("{e:?}"),
    }
    assert!(matches!(h.event().await, Event::Done));
    drop(call);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn server_recv_middleware_rejection_reaches_handler_and_client() {
    let log: Log = Arc::default();
    let mut h = harness_with(
        |s| s.recv_middleware(recv_fn(tagger(&log, "reject"))),
        |c| c,
        1 << 16,
    );
    let mut call = within(
        h.client
            .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new()),
    )
    .await
    .unwrap();
    within(call.send(msg("bad-input", 0))).await.unwrap();
    let seen_by_handler = h.ended().await;
    assert_eq!(seen_by_handler.code(), Code::PermissionDenied);
    let err = within(call.recv()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("rejected bad-input"));
    drop(call);
    h.assert_no_leaks().await;
}

#[tokio::test]
async fn server_send_middleware_rejection_fails_the_handler_send() {
    let log: Log = Arc::default();
    let mut h = harness_with(
        |s| s.send_middleware(send_fn(tagger(&log, "reject"))),
        |c| c,
        1 << 16,
    );
    let mut call = within(h.client.server_streaming::<ProstCodec, Msg, Msg>(
        COUNT,
        msg("bad", 2),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    assert_eq!(h.ended().await.code(), Code::PermissionDenied);
    assert_eq!(
        within(call.recv()).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    drop(call);
    h.assert_no_leaks().await;
}

// ---- tower call middleware ----

#[derive(Clone)]
struct Tag<S> {
    inner: S,
    name: &'static str,
    log: Log,
}

#[derive(Clone)]
struct TagLayer {
    name: &'static str,
    log: Log,
}

impl<S> tower::Layer<S> for TagLayer {
    type Service = Tag<S>;
    fn layer(&self, inner: S) -> Tag<S> {
        Tag {
            inner,
            name: self.name,
            log: self.log.clone(),
        }
    }
}

impl<S> tower::Service<CallContext> for Tag<S>
where
    S: tower::Service<CallContext, Response = OpenStream, Error = Status> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = OpenStream;
    type Error = Status;
    type Future = BoxFuture<'static, Result<OpenStream, Status>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut ctx: CallContext) -> Self::Future {
        log_entry(&self.log, self.name);
        ctx.metadata_mut().append("x-layers", self.name);
        Box::pin(self.inner.call(ctx))
    }
}

impl<S> tower::Service<IncomingCall> for Tag<S>
where
    S: tower::Service<IncomingCall, Response = (), Error = Status> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Status;
    type Future = BoxFuture<'static, Result<(), Status>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, call: IncomingCall) -> Self::Future {
        log_entry(&self.log, self.name);
        if self.name == "auth" && call.context().metadata().get_str("authorization") != Some("ok") {
            return Box::pin(async { Err(Status::unauthenticated("no credentials")) });
        }
        Box::pin(self.inner.call(call))
    }
}

#[tokio::test]
async fn tower_layers_wrap_calls_in_registration_order_and_can_reject() {
    let log: Log = Arc::default();
    let l = |name| TagLayer {
        name,
        log: log.clone(),
    };
    let mut h = harness_with(
        |s| s.layer(l("s-outer")).layer(l("auth")),
        |c| c.layer(l("c-outer")).layer(l("c-inner")),
        1 << 16,
    );
    let err = within(
        h.client
            .unary::<ProstCodec, Msg, Msg>(ECHO, msg("x", 0), CallOptions::new()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        *log.lock().unwrap(),
        ["c-outer", "c-inner", "s-outer", "auth"]
    );
    log.lock().unwrap().clear();

    let ok = within(h.client.unary::<ProstCodec, Msg, Msg>(
        ECHO,
        msg("y", 1),
        CallOptions::new().metadata("authorization", "ok"),
    ))
    .await
    .unwrap();
    assert_eq!(ok.get_ref().text, "y");
    assert_eq!(
        *log.lock().unwrap(),
        ["c-outer", "c-inner", "s-outer", "auth"]
    );
    // The handler never ran for the rejected call: no events at all were produced.
    assert!(h.events.try_recv().is_err());
    h.assert_no_leaks().await;
}

/// (middleware and direction, the size `next` reported).
type SizeLog = Arc<Mutex<Vec<(String, Option<usize>)>>>;

/// Records the size `next` reports, per direction, in both chains.
struct Sizes {
    tag: &'static str,
    log: SizeLog,
}

impl rpc_core::SendMiddleware for Sizes {
    fn on_send<'a>(
        &'a self,
        ctx: &'a CallContext,
        msg: &'a mut AnyMessage,
        next: rpc_core::middleware::SendNext<'a>,
    ) -> BoxFuture<'a, Result<Option<usize>, Status>> {
        Box::pin(async move {
            let size = next.run(ctx, msg).await?;
            let tag = format!("{}-send", self.tag);
            self.log.lock().unwrap().push((tag, size));
            Ok(size)
        })
    }
}

impl rpc_core::RecvMiddleware for Sizes {
    fn on_recv<'a>(
        &'a self,
        ctx: &'a CallContext,
        next: rpc_core::middleware::RecvNext<'a>,
    ) -> BoxFuture<'a, Result<Option<rpc_core::middleware::Received>, Status>> {
        Box::pin(async move {
            let got = next.run(ctx).await?;
            if let Some(r) = &got {
                assert!(r.message.downcast_ref::<Msg>().is_some());
                let tag = format!("{}-recv", self.tag);
                self.log.lock().unwrap().push((tag, Some(r.encoded_len)));
            }
            Ok(got)
        })
    }
}

#[tokio::test]
async fn send_and_recv_middleware_see_the_encoded_size_on_both_sides() {
    let log: SizeLog = Arc::default();
    let sizes = |tag| Sizes {
        tag,
        log: log.clone(),
    };
    let mut h = harness_with(
        |s| {
            s.recv_middleware(sizes("server"))
                .send_middleware(sizes("server"))
        },
        |c| {
            c.send_middleware(sizes("client"))
                .recv_middleware(sizes("client"))
        },
        rpc_core::inproc::DEFAULT_STREAM_BUFFER,
    );
    let mut call = within(
        h.client
            .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new()),
    )
    .await
    .unwrap();
    let sent = msg("a message of some size", 123_456);
    let len = prost::Message::encoded_len(&sent);
    within(call.send(sent.clone())).await.unwrap();
    assert!(matches!(h.event().await, Event::Got(m) if m == sent));
    assert_eq!(within(call.recv()).await.unwrap(), Some(sent));
    call.close_send().unwrap();
    assert_eq!(within(call.recv()).await.unwrap(), None);
    // The order of a send's entry and the peer's recv entry is a race: compare sorted.
    let mut log = log.lock().unwrap().clone();
    log.sort();
    let expect = ["client-recv", "client-send", "server-recv", "server-send"]
        .map(|t| (t.to_owned(), Some(len)));
    assert_eq!(log, expect);
}
