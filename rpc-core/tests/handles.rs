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
    let call = within(
        h.client
            .bidi::<ProstCodec, Msg, Msg>(CHAT, CallOptions::new()),
    )
    .await
    .unwrap();
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
