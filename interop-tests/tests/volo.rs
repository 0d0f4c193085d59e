//! Our TTHeader pingpong against volo-thrift 0.12.7, both ways, over TTHeader + Framed and
//! TTHeader + unframed binary:
//!
//! - a volo-thrift client calls our server (`examples::Echo` behind the `rpc-codegen` stubs,
//!   served by `rpc_transport_ttheader::serve_tcp`);
//! - our client (`TtHeaderClient` under the generated `TestServiceClient`) calls a volo-thrift
//!   server.
//!
//! Every connection goes through a recording proxy, so besides the typed outcome each test
//! checks what was on the wire (framing, seqids, message types, connection counts) with the
//! independent reader of `interop_tests::wire`.

use std::{future::Future, net::SocketAddr, time::Duration};

use examples::{thrift as ours, Echo};
use futures::future::join_all;
use interop_tests::{
    echo as volo,
    proxy::{ConnRecord, Direction, RecordingProxy},
    volo_peer::{self, Framing, VoloServer},
    wire::{split_frames, TtHeaderFrame},
};
use rpc_core::{Code, MethodError};
use rpc_transport_ttheader::{
    serve_tcp, Endpoint, ServeHandle, ServerConfig, TtHeaderClient, UnaryMode,
};
use volo_thrift::{ApplicationExceptionKind, ClientError, MaybeException};

/// Bound on every step (server start, call, batch of calls): a hang is a failure.
const STEP: Duration = Duration::from_secs(10);

/// Calls in the "many sequential calls" checks.
const SEQUENTIAL: usize = 200;

/// Calls in flight at once in the concurrency checks.
const CONCURRENT: usize = 16;

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(STEP, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no outcome within {STEP:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Our side.

async fn our_server() -> ServeHandle {
    let server = rpc_core::Server::builder()
        .add_service(ours::TestServiceServer::new(Echo))
        .build();
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    within(
        "our server start",
        serve_tcp(server, addr, ServerConfig::default()),
    )
    .await
    .expect("our server binds 127.0.0.1:0")
}

fn our_addr(handle: &ServeHandle) -> SocketAddr {
    handle.local_addr().expect("a TCP listener has an address")
}

fn our_framing(framing: Framing) -> rpc_transport_ttheader::Framing {
    match framing {
        Framing::Framed => rpc_transport_ttheader::Framing::Framed,
        Framing::Unframed => rpc_transport_ttheader::Framing::Unframed,
    }
}

fn our_client(addr: SocketAddr, framing: Framing, mode: UnaryMode) -> ours::TestServiceClient {
    let transport = TtHeaderClient::builder(Endpoint::Tcp(addr))
        .unary_framing(our_framing(framing))
        .unary_mode(mode)
        // One connection, so "on one connection" is what the mux checks measure.
        .pool_size(1)
        .build();
    ours::TestServiceClient::new(rpc_core::Client::new(transport))
}

fn our_request(message: &str, fail: Option<&str>) -> ours::Request {
    ours::Request {
        message: message.to_owned(),
        fail: fail.map(str::to_owned),
        ..Default::default()
    }
}

fn volo_request(message: &str, fail: Option<&str>) -> volo::Request {
    volo::Request {
        message: message.to_owned().into(),
        fail: fail.map(|f| f.to_owned().into()),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Wire checks.

/// The frames of one direction of one connection; all bytes must form whole frames.
fn frames(record: &ConnRecord, dir: Direction) -> Vec<TtHeaderFrame> {
    let (frames, rest) =
        split_frames(record.bytes(dir)).unwrap_or_else(|e| panic!("{dir:?}: not TTHeader: {e}"));
    assert!(rest.is_empty(), "{dir:?}: {} trailing bytes", rest.len());
    frames
}

/// Every call of `calls` (message types of the replies, in order) on `record`: one TTHeader
/// packet each way per call, in the configured framing, the reply's seqids (TTHeader and thrift
/// message) equal to the call's, method `PingPong`.
fn check_unary_exchange(record: &ConnRecord, framing: Framing, reply_types: &[u8]) {
    let calls = frames(record, Direction::ToServer);
    let replies = frames(record, Direction::ToClient);
    assert_eq!(calls.len(), reply_types.len(), "calls: {calls:#?}");
    assert_eq!(replies.len(), reply_types.len(), "replies: {replies:#?}");
    for ((call, reply), reply_type) in calls.iter().zip(&replies).zip(reply_types) {
        let call_msg = call.message().expect("call payload is a thrift message");
        let reply_msg = reply.message().expect("reply payload is a thrift message");
        let framed = framing == Framing::Framed;
        assert_eq!(call_msg.frame_len.is_some(), framed, "call {call:#?}");
        assert_eq!(reply_msg.frame_len.is_some(), framed, "reply {reply:#?}");
        if let Some(len) = call_msg.frame_len {
            assert_eq!(len as usize, call.payload.len() - 4, "call {call:#?}");
        }
        if let Some(len) = reply_msg.frame_len {
            assert_eq!(len as usize, reply.payload.len() - 4, "reply {reply:#?}");
        }
        assert_eq!(call.protocol_id, 0, "call {call:#?}");
        assert_eq!(reply.protocol_id, 0, "reply {reply:#?}");
        assert_eq!(call_msg.msg_type, 1, "call {call_msg:#?}");
        assert_eq!(reply_msg.msg_type, *reply_type, "reply {reply_msg:#?}");
        assert_eq!(call_msg.name, b"PingPong");
        assert_eq!(reply_msg.name, b"PingPong");
        assert_eq!(reply.seq_id, call.seq_id, "reply {reply:#?} to {call:#?}");
        assert_eq!(reply_msg.seq_id, call_msg.seq_id, "reply {reply_msg:#?}");
    }
}

const REPLY: u8 = 2;
const EXCEPTION: u8 = 3;

// ---------------------------------------------------------------------------------------------
// (1) volo client -> our server.

/// PingPong ok, declared exception, application error: what the volo client sees.
async fn volo_calls_us(framing: Framing) {
    let server = our_server().await;
    let proxy = RecordingProxy::start(our_addr(&server))
        .await
        .expect("proxy");
    let client = volo_peer::client(proxy.local_addr(), framing);

    match within("ok call", client.ping_pong(volo_request("hello", None))).await {
        Ok(MaybeException::Ok(resp)) => assert_eq!(
            resp,
            volo::Response {
                message: "hello".into(),
                index: Some(0)
            }
        ),
        Ok(MaybeException::Exception(e)) => panic!("ok call: exception {e:?}"),
        Err(e) => panic!("ok call: {e}"),
    }

    match within(
        "declared call",
        client.ping_pong(volo_request("x", Some("declared:out of stock"))),
    )
    .await
    {
        Ok(MaybeException::Exception(volo::TestServicePingPongException::Err(e))) => assert_eq!(
            e,
            volo::EchoError {
                reason: "declared:out of stock".into()
            }
        ),
        Ok(MaybeException::Ok(resp)) => panic!("declared call: ok {resp:?}"),
        Err(e) => panic!("declared call: {e}"),
    }

    match within(
        "app error call",
        client.ping_pong(volo_request("x", Some("boom"))),
    )
    .await
    {
        Err(ClientError::Application(e)) => {
            // The text arrives as is; the type is INTERNAL_ERROR, as Kitex and volo servers
            // use for handler errors.
            assert_eq!(e.message(), "boom", "{e:?}");
            assert_eq!(e.kind(), ApplicationExceptionKind::INTERNAL_ERROR, "{e:?}");
        }
        Err(e) => panic!("app error call: not an application exception: {e}"),
        Ok(MaybeException::Ok(resp)) => panic!("app error call: ok {resp:?}"),
        Ok(MaybeException::Exception(e)) => panic!("app error call: declared {e:?}"),
    }

    assert_eq!(proxy.connections(), 1, "volo reuses its pooled connection");
    let record = proxy.record(0).expect("one connection");
    check_unary_exchange(&record, framing, &[REPLY, REPLY, EXCEPTION]);
    // volo numbers calls from 0 (spec §2: seqid 0 is an ordinary call on a plain connection).
    let seqs: Vec<u32> = frames(&record, Direction::ToServer)
        .iter()
        .map(|f| f.seq_id)
        .collect();
    assert_eq!(seqs, [0, 1, 2]);

    within(
        "our server shutdown",
        server.shutdown(Duration::from_secs(1)),
    )
    .await;
}

#[tokio::test]
async fn volo_client_to_our_server_framed() {
    volo_calls_us(Framing::Framed).await;
}

#[tokio::test]
async fn volo_client_to_our_server_unframed() {
    volo_calls_us(Framing::Unframed).await;
}

// ---------------------------------------------------------------------------------------------
// (2) our client -> volo server.

async fn we_call_volo(framing: Framing, mode: UnaryMode) {
    let server = within("volo server start", VoloServer::start(framing))
        .await
        .expect("volo server");
    let proxy = RecordingProxy::start(server.local_addr())
        .await
        .expect("proxy");
    let client = our_client(proxy.local_addr(), framing, mode);

    let resp = within("ok call", client.ping_pong(our_request("hello", None)))
        .await
        .unwrap_or_else(|e| panic!("ok call: {e}"));
    assert_eq!(
        resp,
        ours::Response {
            message: "hello".into(),
            index: Some(0)
        }
    );

    match within(
        "declared call",
        client.ping_pong(our_request("x", Some("declared:out of stock"))),
    )
    .await
    {
        Err(MethodError::Declared(ours::TestServicePingPongException::Err(e))) => {
            assert_eq!(e.reason, "declared:out of stock")
        }
        other => panic!("declared call: {other:?}"),
    }

    match within(
        "app error call",
        client.ping_pong(our_request("x", Some("boom"))),
    )
    .await
    {
        Err(MethodError::Status(status)) => {
            assert_eq!(status.message(), "boom", "{status:?}");
            // volo sends TApplicationException type 6 (internal error).
            assert_eq!(status.transport_code(), Some(6), "{status:?}");
            assert_eq!(status.code(), Code::Internal, "{status:?}");
        }
        other => panic!("app error call: {other:?}"),
    }

    assert_eq!(
        proxy.connections(),
        1,
        "one connection for sequential calls"
    );
    let record = proxy.record(0).expect("one connection");
    check_unary_exchange(&record, framing, &[REPLY, REPLY, EXCEPTION]);
    let expected_flags = match mode {
        UnaryMode::Plain => 0,
        _ => 1,
    };
    for call in frames(&record, Direction::ToServer) {
        assert_eq!(call.flags, expected_flags, "{call:#?}");
        // The TTHeader seqid and the message seqid agree.
        let msg = call.message().expect("thrift message");
        assert_eq!(call.seq_id as i32, msg.seq_id, "{call:#?}");
        // volo routes by the IDL service name.
        assert_eq!(call.str_kv("isn"), Some(&b"TestService"[..]), "{call:#?}");
    }
}

#[tokio::test]
async fn our_client_to_volo_server_framed() {
    we_call_volo(Framing::Framed, UnaryMode::Plain).await;
}

#[tokio::test]
async fn our_client_to_volo_server_unframed() {
    we_call_volo(Framing::Unframed, UnaryMode::Plain).await;
}

#[tokio::test]
async fn our_mux_client_to_volo_server_framed() {
    we_call_volo(Framing::Framed, UnaryMode::Mux).await;
}

#[tokio::test]
async fn our_mux_client_to_volo_server_unframed() {
    we_call_volo(Framing::Unframed, UnaryMode::Mux).await;
}

// ---------------------------------------------------------------------------------------------
// Differential: the same volo client calls, answered by volo and by us, give the same thrift
// messages (the Result struct bytes and the ApplicationException).

async fn replies_of(addr: SocketAddr, framing: Framing) -> Vec<TtHeaderFrame> {
    let proxy = RecordingProxy::start(addr).await.expect("proxy");
    let client = volo_peer::client(proxy.local_addr(), framing);
    for fail in [None, Some("declared:no"), Some("boom")] {
        let _ = within("call", client.ping_pong(volo_request("hello", fail))).await;
    }
    assert_eq!(proxy.connections(), 1);
    frames(
        &proxy.record(0).expect("one connection"),
        Direction::ToClient,
    )
}

async fn same_replies_as_volo(framing: Framing) {
    let volo_server = VoloServer::start(framing).await.expect("volo server");
    let our_server = our_server().await;
    let theirs = replies_of(volo_server.local_addr(), framing).await;
    let ours = replies_of(our_addr(&our_server), framing).await;
    assert_eq!(theirs.len(), 3);
    assert_eq!(ours.len(), 3);
    for (t, o) in theirs.iter().zip(&ours) {
        let (tm, om) = (t.message().expect("volo"), o.message().expect("ours"));
        assert_eq!(
            (tm.frame_len, tm.msg_type, &tm.name, tm.seq_id),
            (om.frame_len, om.msg_type, &om.name, om.seq_id),
            "message heads differ:\nvolo {t:#?}\nours {o:#?}"
        );
        assert_eq!(
            tm.body, om.body,
            "message bodies differ:\nvolo {tm:#?}\nours {om:#?}"
        );
        assert_eq!(
            (t.flags, t.seq_id, t.protocol_id),
            (o.flags, o.seq_id, o.protocol_id)
        );
    }
    within(
        "our server shutdown",
        our_server.shutdown(Duration::from_secs(1)),
    )
    .await;
}

#[tokio::test]
async fn our_server_replies_like_a_volo_server_framed() {
    same_replies_as_volo(Framing::Framed).await;
}

#[tokio::test]
async fn our_server_replies_like_a_volo_server_unframed() {
    same_replies_as_volo(Framing::Unframed).await;
}

// ---------------------------------------------------------------------------------------------
// (3) Many sequential calls, and concurrent calls.

fn check_volo_ok(
    i: usize,
    out: Result<MaybeException<volo::Response, volo::TestServicePingPongException>, ClientError>,
) {
    match out {
        Ok(MaybeException::Ok(resp)) => {
            assert_eq!(resp.message, format!("m{i}"));
            assert_eq!(resp.index, Some(0));
        }
        Ok(MaybeException::Exception(e)) => panic!("call {i}: exception {e:?}"),
        Err(e) => panic!("call {i}: {e}"),
    }
}

#[tokio::test]
async fn volo_client_many_sequential_calls_on_one_connection() {
    let server = our_server().await;
    for framing in Framing::ALL {
        let proxy = RecordingProxy::start(our_addr(&server))
            .await
            .expect("proxy");
        let client = volo_peer::client(proxy.local_addr(), framing);
        within("sequential calls", async {
            for i in 0..SEQUENTIAL {
                check_volo_ok(
                    i,
                    client.ping_pong(volo_request(&format!("m{i}"), None)).await,
                );
            }
        })
        .await;
        assert_eq!(proxy.connections(), 1, "{framing:?}");
        let record = proxy.record(0).expect("one connection");
        check_unary_exchange(&record, framing, &[REPLY; SEQUENTIAL]);
    }
    within(
        "our server shutdown",
        server.shutdown(Duration::from_secs(1)),
    )
    .await;
}

/// Requests that finish in reverse order of sending (the later, the shorter the handler's
/// `sleep_ms`), so a server that runs calls concurrently answers out of order.
fn staggered(i: usize) -> i64 {
    ((CONCURRENT - i) * 5) as i64
}

#[tokio::test]
async fn volo_multiplex_client_concurrent_calls_on_one_connection() {
    let server = our_server().await;
    for framing in Framing::ALL {
        let proxy = RecordingProxy::start(our_addr(&server))
            .await
            .expect("proxy");
        let client = volo_peer::multiplex_client(proxy.local_addr(), framing);
        let calls = (0..CONCURRENT).map(|i| {
            let client = client.clone();
            async move {
                let mut req = volo_request(&format!("m{i}"), None);
                req.sleep_ms = Some(staggered(i));
                (i, client.ping_pong(req).await)
            }
        });
        for (i, out) in within("concurrent calls", join_all(calls)).await {
            check_volo_ok(i, out);
        }
        assert_eq!(proxy.connections(), 1, "{framing:?}");
    }
    within(
        "our server shutdown",
        server.shutdown(Duration::from_secs(1)),
    )
    .await;
}

#[tokio::test]
async fn volo_client_concurrent_calls() {
    let server = our_server().await;
    for framing in Framing::ALL {
        let proxy = RecordingProxy::start(our_addr(&server))
            .await
            .expect("proxy");
        let client = volo_peer::client(proxy.local_addr(), framing);
        let calls = (0..CONCURRENT).map(|i| {
            let client = client.clone();
            async move {
                let mut req = volo_request(&format!("m{i}"), None);
                req.sleep_ms = Some(staggered(i));
                (i, client.ping_pong(req).await)
            }
        });
        for (i, out) in within("concurrent calls", join_all(calls)).await {
            check_volo_ok(i, out);
        }
        // A plain volo client holds a connection per outstanding call.
        let conns = proxy.connections();
        assert!((1..=CONCURRENT).contains(&conns), "{conns} connections");
        for record in proxy.records() {
            let n = frames(&record, Direction::ToServer).len();
            check_unary_exchange(&record, framing, &vec![REPLY; n]);
        }
    }
    within(
        "our server shutdown",
        server.shutdown(Duration::from_secs(1)),
    )
    .await;
}

#[tokio::test]
async fn our_client_many_sequential_calls_on_one_connection() {
    for framing in Framing::ALL {
        let server = VoloServer::start(framing).await.expect("volo server");
        let proxy = RecordingProxy::start(server.local_addr())
            .await
            .expect("proxy");
        let client = our_client(proxy.local_addr(), framing, UnaryMode::Plain);
        within("sequential calls", async {
            for i in 0..SEQUENTIAL {
                let resp = client
                    .ping_pong(our_request(&format!("m{i}"), None))
                    .await
                    .unwrap_or_else(|e| panic!("call {i}: {e}"));
                assert_eq!(resp.message, format!("m{i}"));
                assert_eq!(resp.index, Some(0));
            }
        })
        .await;
        assert_eq!(proxy.connections(), 1, "{framing:?}");
        let record = proxy.record(0).expect("one connection");
        check_unary_exchange(&record, framing, &[REPLY; SEQUENTIAL]);
    }
}

async fn our_concurrent_calls(mode: UnaryMode) {
    for framing in Framing::ALL {
        let server = VoloServer::start(framing).await.expect("volo server");
        let proxy = RecordingProxy::start(server.local_addr())
            .await
            .expect("proxy");
        let client = our_client(proxy.local_addr(), framing, mode);
        let calls = (0..CONCURRENT).map(|i| {
            let client = client.clone();
            async move {
                let mut req = our_request(&format!("m{i}"), None);
                req.sleep_ms = Some(staggered(i));
                (i, client.ping_pong(req).await)
            }
        });
        for (i, out) in within("concurrent calls", join_all(calls)).await {
            let resp = out.unwrap_or_else(|e| panic!("call {i}: {e}"));
            assert_eq!(resp.message, format!("m{i}"));
        }
        let conns = proxy.connections();
        match mode {
            // Mux: every call on the one pooled connection; volo's pingpong server answers
            // them one after the other.
            UnaryMode::Mux => assert_eq!(conns, 1, "{framing:?}"),
            _ => assert!((1..=CONCURRENT).contains(&conns), "{conns} connections"),
        }
        for record in proxy.records() {
            let n = frames(&record, Direction::ToServer).len();
            check_unary_exchange(&record, framing, &vec![REPLY; n]);
        }
    }
}

#[tokio::test]
async fn our_mux_client_concurrent_calls_on_one_connection() {
    our_concurrent_calls(UnaryMode::Mux).await;
}

#[tokio::test]
async fn our_plain_client_concurrent_calls() {
    our_concurrent_calls(UnaryMode::Plain).await;
}
