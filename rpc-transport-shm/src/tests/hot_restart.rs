//! The go-away (the client's draining sessions) and the takeover of a listening socket
//! between two listeners in one process, over real sockets and memfd regions.

use super::*;
use crate::takeover::{self, Handover, Message, Takeover};

fn control(p: &std::path::Path) -> PathBuf {
    takeover::control_path(&[rpc_core::Address::shm(p)]).expect("a unix path")
}

async fn open_chat(c: &Client) -> rpc_core::BidiStreamingClient<Bytes, Bytes> {
    let mut call = c
        .bidi::<Raw, Bytes, Bytes>(CHAT, CallOptions::new())
        .await
        .expect("open");
    call.send(blob(10, 1)).await.expect("send");
    assert_eq!(within(call.recv()).await.expect("recv"), Some(blob(10, 1)));
    call
}

async fn finish_chat(mut call: rpc_core::BidiStreamingClient<Bytes, Bytes>) {
    call.send(blob(20, 2))
        .await
        .expect("send after the go-away");
    assert_eq!(within(call.recv()).await.expect("recv"), Some(blob(20, 2)));
    call.close_send().expect("close");
    assert_eq!(within(call.recv()).await.expect("end"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap and Unix sockets: system calls miri does not run"
)]
async fn a_takeover_moves_new_calls_to_the_new_listener_and_lets_streams_finish() {
    let old_protocol = ShmProtocol::default();
    let old_stats = old_protocol.stats().clone();
    let (old, p) = serve(old_protocol).await;
    let mut handover = Handover::listen(control(&p), &old).expect("control socket");
    let shm = ShmClient::builder(rpc_core::Address::shm(&p))
        .pool_size(1)
        .build();
    let client_stats = shm.stats().clone();
    let c = Client::new(shm);
    let call = open_chat(&c).await;
    assert_eq!(old_stats.live_sessions(), 1);

    // The successor: the old listener's socket, served by a new listener.
    let mut t = within(Takeover::request(control(&p)))
        .await
        .expect("request");
    assert_eq!(t.predecessor(), std::process::id());
    assert_eq!(t.addrs(), [rpc_core::Address::shm(&p)]);
    let new_protocol = ShmProtocol::default();
    let new_stats = new_protocol.stats().clone();
    let listener =
        Listener::new(Server::builder().add_service(Blob).build()).protocol(new_protocol);
    let listener = within(t.bind(listener, rpc_core::Address::shm(&p)))
        .await
        .expect("inherited");
    let new = listener.start();
    within(t.ready()).await.expect("ready");
    let h = within(handover.handed_over()).await;
    assert_eq!(h.sockets, 1);
    let grace = Duration::from_secs(60);
    let t0 = std::time::Instant::now();
    let old_down = tokio::spawn(old.shutdown(grace));

    // The client's session got the go-away: it is draining, and new calls open a session on
    // the new listener while the stream on the old one carries on.
    for i in 0..20 {
        let m = blob(100, i);
        assert_eq!(unary(&c, m.clone()).await.expect("no call fails"), m);
    }
    assert_eq!(
        new_stats.live_sessions(),
        1,
        "the calls went to the new listener"
    );
    assert_eq!(old_stats.live_sessions(), 1, "the stream keeps its session");
    finish_chat(call).await;
    // Its last stream done, the client closes the old session and the old listener's shutdown
    // is over long before its grace period.
    within(old_down).await.expect("old listener shut down");
    assert!(t0.elapsed() < grace / 2, "{:?}", t0.elapsed());
    eventually("the old session is gone", || {
        old_stats.live_sessions() == 0 && client_stats.live_sessions() == 1
    })
    .await;
    // The socket file is the new listener's: still there, still served.
    assert!(p.exists());
    let m = blob(70_000, 9);
    assert_eq!(unary(&c, m.clone()).await.expect("served"), m);
    // The successor answers takeovers in turn.
    let _next = Handover::listen(control(&p), &new).expect("control socket");
    new.shutdown(Duration::from_secs(1)).await;
    assert!(!p.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap and Unix sockets: system calls miri does not run"
)]
async fn a_successor_that_goes_away_before_ready_leaves_the_old_listener_serving() {
    let (old, p) = serve(ShmProtocol::default()).await;
    let _handover = Handover::listen(control(&p), &old).expect("control socket");
    let accept = old.accept_control();
    let t = within(Takeover::request(control(&p)))
        .await
        .expect("request");
    assert!(accept.is_paused());
    drop(t);
    eventually("the old listener accepts again", || !accept.is_paused()).await;
    let c = Client::new(ShmClient::new(rpc_core::Address::shm(&p)));
    let m = blob(10, 3);
    assert_eq!(within(unary(&c, m.clone())).await.expect("served"), m);
    // And a second successor can still take over.
    let t = within(Takeover::request(control(&p)))
        .await
        .expect("request");
    assert_eq!(t.addrs().len(), 1);
    old.shutdown(Duration::from_secs(1)).await;
    // Paused for a takeover that never finished: the socket file stays (it may be the
    // successor's); the next bind replaces it.
    drop(t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap and Unix sockets: system calls miri does not run"
)]
async fn garbage_on_the_control_socket_changes_nothing() {
    use tokio::io::AsyncWriteExt;
    let (old, p) = serve(ShmProtocol::default()).await;
    let _handover = Handover::listen(control(&p), &old).expect("control socket");
    let accept = old.accept_control();
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &Message::Ready { pid: 1 }.encode()[..],
        &Message::Request { pid: 1 }.encode()[..10],
    ] {
        let mut s = tokio::net::UnixStream::connect(control(&p))
            .await
            .expect("connect");
        s.write_all(garbage).await.expect("write");
        s.shutdown().await.expect("half-close");
        // The old listener answers nothing and closes, or refuses: no sockets handed out.
        let mut got = Vec::new();
        let _ = within(s.read_to_end(&mut got)).await;
        assert!(
            got.is_empty()
                || Message::decode(&got).is_ok_and(|m| matches!(m, Message::Refuse { .. })),
            "{got:02x?}"
        );
        assert!(!accept.is_paused());
    }
    let c = Client::new(ShmClient::new(rpc_core::Address::shm(&p)));
    let m = blob(10, 5);
    assert_eq!(within(unary(&c, m.clone())).await.expect("served"), m);
    old.shutdown(Duration::from_secs(1)).await;
    assert!(!p.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap and Unix sockets: system calls miri does not run"
)]
async fn a_plain_shutdown_sends_the_go_away_and_waits_for_the_stream() {
    let protocol = ShmProtocol::default();
    let stats = protocol.stats().clone();
    let (running, p) = serve(protocol).await;
    let c = Client::new(
        ShmClient::builder(rpc_core::Address::shm(&p))
            .pool_size(1)
            .build(),
    );
    let call = open_chat(&c).await;
    let down = tokio::spawn(running.shutdown(Duration::from_secs(60)));
    // The socket file goes at once; the session drains: the stream carries on.
    eventually("the socket file is removed", || !p.exists()).await;
    finish_chat(call).await;
    within(down).await.expect("shut down");
    eventually("the session is gone", || stats.live_sessions() == 0).await;
    // No server: a new call fails as unavailable (it is not sent to the drained session).
    let e = within(unary(&c, blob(1, 1))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
}
