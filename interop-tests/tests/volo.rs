//! Our TTHeader pingpong against volo-thrift 0.12.7, both ways, over TTHeader + Framed and
//! TTHeader + unframed binary:
//!
//! - a volo-thrift client calls our server (`examples::Echo` behind the `rpc-codegen` stubs,
//!   served by `rpc_transport_ttheader::TtHeaderProtocol` on an `rpc_core::serve::Listener`);
//! - our client (`TtHeaderClient` under the generated `TestServiceClient`) calls a volo-thrift
//!   server.
//!
//! Every connection goes through a recording proxy, so besides the typed outcome each test
//! checks what was on the wire (framing, seqids, message types, connection counts) with the
//! independent reader of `interop_tests::wire`.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use examples::{thrift as ours, Echo};
use futures::future::join_all;
use interop_tests::{
    echo as volo,
    proxy::{ConnRecord, Direction, RecordingProxy},
    volo_peer::{self, Framing, VoloServer},
    wire::{split_frames, TtHeaderFrame},
};
use rpc_core::serve::{Listener, Running};
use rpc_core::{Code, MethodError};
use rpc_transport_ttheader::{ConnectionMode, TtHeaderClient, TtHeaderProtocol};
use tokio::sync::Notify;
use volo_thrift::{ApplicationExceptionKind, BizError, ClientError, MaybeException, ServerError};

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

/// Serves `server` over TTHeader on `addr`.
async fn serve_tcp(server: rpc_core::Server, addr: SocketAddr) -> std::io::Result<Running> {
    Ok(Listener::new(server)
        .protocol(TtHeaderProtocol::default())
        .bind(addr.into())
        .await?
        .start())
}

async fn our_server() -> Running {
    let server = rpc_core::Server::builder()
        .add_service(ours::TestServiceServer::new(Echo))
        .build();
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    within("our server start", serve_tcp(server, addr))
        .await
        .expect("our server binds 127.0.0.1:0")
}

fn our_addr(handle: &Running) -> SocketAddr {
    handle.local_addrs()[0]
        .socket_addr()
        .expect("a TCP listener has an address")
}

fn our_framing(framing: Framing) -> rpc_transport_ttheader::Framing {
    match framing {
        Framing::Framed => rpc_transport_ttheader::Framing::Framed,
        Framing::Unframed => rpc_transport_ttheader::Framing::Unframed,
    }
}

fn our_client(addr: SocketAddr, framing: Framing, mode: ConnectionMode) -> ours::TestServiceClient {
    let transport = TtHeaderClient::builder(addr)
        .unary_framing(our_framing(framing))
        .connection_mode(mode)
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

async fn we_call_volo(framing: Framing, mode: ConnectionMode) {
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
        ConnectionMode::Pooled => 0,
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
    we_call_volo(Framing::Framed, ConnectionMode::Pooled).await;
}

#[tokio::test]
async fn our_client_to_volo_server_unframed() {
    we_call_volo(Framing::Unframed, ConnectionMode::Pooled).await;
}

#[tokio::test]
async fn our_mux_client_to_volo_server_framed() {
    we_call_volo(Framing::Framed, ConnectionMode::Multiplexed).await;
}

#[tokio::test]
async fn our_mux_client_to_volo_server_unframed() {
    we_call_volo(Framing::Unframed, ConnectionMode::Multiplexed).await;
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
        let client = our_client(proxy.local_addr(), framing, ConnectionMode::Pooled);
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

async fn our_concurrent_calls(mode: ConnectionMode) {
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
            // Multiplexed: every call on the one pooled connection; volo's pingpong server answers
            // them one after the other.
            ConnectionMode::Multiplexed => assert_eq!(conns, 1, "{framing:?}"),
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
    our_concurrent_calls(ConnectionMode::Multiplexed).await;
}

#[tokio::test]
async fn our_plain_client_concurrent_calls() {
    our_concurrent_calls(ConnectionMode::Pooled).await;
}

// ---------------------------------------------------------------------------------------------
// Business status errors (spec §2: `biz-status` / `biz-message` / `biz-extra` string keys).

const BIZ_CODE: i32 = 4001;
const BIZ_MESSAGE: &str = "insufficient balance";

/// A volo handler whose PingPong always fails with a business status error.
struct VoloBiz;

impl volo::TestService for VoloBiz {
    async fn ping_pong(
        &self,
        _req: volo::Request,
    ) -> Result<MaybeException<volo::Response, volo::TestServicePingPongException>, ServerError>
    {
        let mut extra = pilota::AHashMap::default();
        extra.insert("k".into(), "v".into());
        Err(ServerError::Biz(BizError {
            status_code: BIZ_CODE,
            status_message: BIZ_MESSAGE.into(),
            extra: Some(extra),
        }))
    }
    async fn echo(&self, _req: volo::Request) -> Result<volo::Response, ServerError> {
        unreachable!("only PingPong is called")
    }
    async fn echo_client(&self, _req: volo::Request) -> Result<volo::Response, ServerError> {
        unreachable!("only PingPong is called")
    }
    async fn echo_server(&self, _req: volo::Request) -> Result<volo::Response, ServerError> {
        unreachable!("only PingPong is called")
    }
}

/// Our handler whose PingPong always fails with a business status error.
struct OurBiz;

impl ours::TestService for OurBiz {
    async fn ping_pong(
        &self,
        _ctx: rpc_core::ServerContext,
        _req: ours::Request,
    ) -> Result<ours::Response, MethodError<ours::TestServicePingPongException>> {
        Err(MethodError::Status(
            rpc_transport_ttheader::biz_status_error(
                BIZ_CODE,
                BIZ_MESSAGE,
                Some(r#"{"k":"v"}"#.to_owned()),
            ),
        ))
    }
    async fn echo(
        &self,
        _ctx: rpc_core::ServerContext,
        _stream: rpc_core::BidiStreamingServer<ours::Request, ours::Response>,
    ) -> Result<(), rpc_core::Status> {
        Err(rpc_core::Status::unimplemented("only PingPong"))
    }
    async fn echo_client(
        &self,
        _ctx: rpc_core::ServerContext,
        _stream: rpc_core::ClientStreamingServer<ours::Request>,
    ) -> Result<ours::Response, rpc_core::Status> {
        Err(rpc_core::Status::unimplemented("only PingPong"))
    }
    async fn echo_server(
        &self,
        _ctx: rpc_core::ServerContext,
        _req: ours::Request,
        _stream: rpc_core::ServerStreamingServer<ours::Response>,
    ) -> Result<(), rpc_core::Status> {
        Err(rpc_core::Status::unimplemented("only PingPong"))
    }
}

async fn our_biz_server() -> Running {
    let server = rpc_core::Server::builder()
        .add_service(ours::TestServiceServer::new(OurBiz))
        .build();
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    serve_tcp(server, addr)
        .await
        .expect("our server binds 127.0.0.1:0")
}

/// Our server's business status (a normal REPLY with an empty Result struct and the `biz-*`
/// keys, as Kitex sends it) is volo's `BizError`, code, message and extra intact.
#[tokio::test]
async fn our_biz_status_is_a_volo_biz_error() {
    let server = our_biz_server().await;
    for framing in Framing::ALL {
        let proxy = RecordingProxy::start(our_addr(&server))
            .await
            .expect("proxy");
        let client = volo_peer::client(proxy.local_addr(), framing);
        match within("biz call", client.ping_pong(volo_request("x", None))).await {
            Err(ClientError::Biz(e)) => {
                assert_eq!(e.status_code, BIZ_CODE);
                assert_eq!(e.status_message, BIZ_MESSAGE);
                let extra = e.extra.expect("biz-extra");
                assert_eq!(extra.len(), 1);
                assert_eq!(extra.get("k").map(|v| v.as_str()), Some("v"));
            }
            Err(e) => panic!("{framing:?}: not a biz error: {e}"),
            Ok(_) => panic!("{framing:?}: biz call succeeded"),
        }
        let record = proxy.record(0).expect("one connection");
        check_unary_exchange(&record, framing, &[REPLY]);
    }
    within(
        "our server shutdown",
        server.shutdown(Duration::from_secs(1)),
    )
    .await;
}

/// A volo server's `BizError` reaches our client with its business status intact.
///
/// volo does not send it as Kitex does: its reply is an EXCEPTION message
/// (TApplicationException type 6, message `"status_code: 4001, status_message: insufficient
/// balance, extra: k: v,"`) *and* the `biz-status`/`biz-message`/`biz-extra` keys, where Kitex
/// sends a normal REPLY with the keys. A Kitex client returns the exception in that case
/// (`kc.eps` error wins over `BizStatusErr()`); volo's client returns the biz error. Either
/// reading is accepted here; what must hold is that the three keys reach the caller.
#[tokio::test]
async fn volo_biz_error_reaches_our_client() {
    for framing in Framing::ALL {
        let server = VoloServer::start_with(VoloBiz, framing)
            .await
            .expect("volo server");
        let proxy = RecordingProxy::start(server.local_addr())
            .await
            .expect("proxy");
        let client = our_client(proxy.local_addr(), framing, ConnectionMode::Pooled);
        let status = match within("biz call", client.ping_pong(our_request("x", None))).await {
            Err(MethodError::Status(status)) => status,
            other => panic!("{framing:?}: {other:?}"),
        };
        let md = status.metadata();
        assert_eq!(md.get_str("biz-status"), Some("4001"), "{status:?}");
        assert_eq!(md.get_str("biz-message"), Some(BIZ_MESSAGE), "{status:?}");
        assert_eq!(md.get_str("biz-extra"), Some(r#"{"k":"v"}"#), "{status:?}");
        match status.transport_code() {
            // Read as a business status (volo's client's reading).
            Some(BIZ_CODE) => assert_eq!(status.message(), BIZ_MESSAGE, "{status:?}"),
            // Read as the exception (a Kitex client's reading).
            Some(6) => {
                assert_eq!(status.code(), Code::Internal, "{status:?}");
                assert!(
                    status.message().contains("4001") && status.message().contains(BIZ_MESSAGE),
                    "{status:?}"
                );
            }
            other => panic!("{framing:?}: transport code {other:?} in {status:?}"),
        }
        let record = proxy.record(0).expect("one connection");
        check_unary_exchange(&record, framing, &[EXCEPTION]);
    }
}

// ---------------------------------------------------------------------------------------------
// Edges.

/// volo-build turns the streaming methods of echo.thrift into pingpong methods, so a volo
/// user can call them over unary TTHeader. Our server must answer (an application exception),
/// not hang, and the connection must stay usable.
#[tokio::test]
async fn volo_unary_call_to_a_streaming_method_fails_cleanly() {
    let server = our_server().await;
    for framing in Framing::ALL {
        let proxy = RecordingProxy::start(our_addr(&server))
            .await
            .expect("proxy");
        let client = volo_peer::client(proxy.local_addr(), framing);
        for (name, out) in [
            (
                "Echo",
                within("Echo", client.echo(volo_request("x", None))).await,
            ),
            (
                "EchoClient",
                within("EchoClient", client.echo_client(volo_request("x", None))).await,
            ),
            (
                "EchoServer",
                within("EchoServer", client.echo_server(volo_request("x", None))).await,
            ),
        ] {
            match out {
                Err(ClientError::Application(_)) => {}
                Err(e) => panic!("{framing:?} {name}: not an application exception: {e}"),
                Ok(resp) => panic!("{framing:?} {name}: answered {resp:?}"),
            }
        }
        check_volo_ok(
            0,
            within("PingPong after", client.ping_pong(volo_request("m0", None))).await,
        );
        assert_eq!(proxy.connections(), 1, "{framing:?}");
        let record = proxy.record(0).expect("one connection");
        check_unary_exchange_names(&record, framing);
    }
    within(
        "our server shutdown",
        server.shutdown(Duration::from_secs(1)),
    )
    .await;
}

/// As `check_unary_exchange`, for calls to several methods: the reply names the call's method.
fn check_unary_exchange_names(record: &ConnRecord, framing: Framing) {
    let calls = frames(record, Direction::ToServer);
    let replies = frames(record, Direction::ToClient);
    assert_eq!(calls.len(), replies.len());
    for (call, reply) in calls.iter().zip(&replies) {
        let (c, r) = (
            call.message().expect("call"),
            reply.message().expect("reply"),
        );
        assert_eq!(r.name, c.name);
        assert_eq!(r.seq_id, c.seq_id);
        assert_eq!(reply.seq_id, call.seq_id);
        assert_eq!(r.frame_len.is_some(), framing == Framing::Framed);
    }
}

/// A 1 MiB message each way, both directions of peers, both framings.
#[tokio::test]
async fn large_messages_both_ways() {
    const SIZE: usize = 1 << 20;
    let big: String = (0..SIZE)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let our_server = our_server().await;
    for framing in Framing::ALL {
        let volo_client = volo_peer::client(our_addr(&our_server), framing);
        let out = within(
            "volo -> ours",
            volo_client.ping_pong(volo_request(&big, None)),
        )
        .await;
        match out {
            Ok(MaybeException::Ok(resp)) => assert!(resp.message == big.as_str()),
            Ok(MaybeException::Exception(e)) => panic!("{framing:?}: exception {e:?}"),
            Err(e) => panic!("{framing:?}: {e}"),
        }

        let volo_server = VoloServer::start(framing).await.expect("volo server");
        let our_client = our_client(volo_server.local_addr(), framing, ConnectionMode::Pooled);
        let resp = within(
            "ours -> volo",
            our_client.ping_pong(our_request(&big, None)),
        )
        .await
        .unwrap_or_else(|e| panic!("{framing:?}: {e}"));
        assert!(resp.message == big);
    }
    within(
        "our server shutdown",
        our_server.shutdown(Duration::from_secs(1)),
    )
    .await;
}

/// Deadlines travel as int key 12 (RPC_TIMEOUT, decimal ms). volo sends it from its client's
/// `rpc_timeout`; our server must read it: a handler still sleeping past the deadline is
/// cancelled, and volo's client gives up on its own clock either way. Here: a call within its
/// deadline succeeds with the key present, and our client's per-call timeout reaches a volo
/// server as key 12.
#[tokio::test]
async fn deadlines_travel_as_rpc_timeout() {
    let server = our_server().await;
    let proxy = RecordingProxy::start(our_addr(&server))
        .await
        .expect("proxy");
    let client = volo::TestServiceClientBuilder::new(volo_peer::SERVICE_NAME)
        .address(proxy.local_addr())
        .rpc_timeout(Some(Duration::from_secs(5)))
        .build();
    check_volo_ok(
        0,
        within("call", client.ping_pong(volo_request("m0", None))).await,
    );
    let call = frames(
        &proxy.record(0).expect("one connection"),
        Direction::ToServer,
    )
    .into_iter()
    .next()
    .expect("one call");
    assert_eq!(call.int_kv(12), Some(&b"5000"[..]), "{call:#?}");
    within(
        "our server shutdown",
        server.shutdown(Duration::from_secs(1)),
    )
    .await;

    let volo_server = VoloServer::start(Framing::Framed)
        .await
        .expect("volo server");
    let proxy = RecordingProxy::start(volo_server.local_addr())
        .await
        .expect("proxy");
    let client = our_client(proxy.local_addr(), Framing::Framed, ConnectionMode::Pooled);
    let resp = within(
        "call",
        client.ping_pong_with(
            our_request("m0", None),
            rpc_core::CallOptions::new().timeout(Duration::from_secs(5)),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.get_ref().message, "m0");
    let call = frames(
        &proxy.record(0).expect("one connection"),
        Direction::ToServer,
    )
    .into_iter()
    .next()
    .expect("one call");
    let timeout_ms: u64 = std::str::from_utf8(call.int_kv(12).expect("key 12 sent"))
        .expect("ascii")
        .parse()
        .expect("decimal ms");
    assert!((4000..=5000).contains(&timeout_ms), "{call:#?}");
}

/// Our handler that signals when PingPong starts and answers when released.
struct OurGate {
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

impl ours::TestService for OurGate {
    async fn ping_pong(
        &self,
        _ctx: rpc_core::ServerContext,
        req: ours::Request,
    ) -> Result<ours::Response, MethodError<ours::TestServicePingPongException>> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(ours::Response {
            message: req.message,
            index: Some(0),
        })
    }
    async fn echo(
        &self,
        _ctx: rpc_core::ServerContext,
        _stream: rpc_core::BidiStreamingServer<ours::Request, ours::Response>,
    ) -> Result<(), rpc_core::Status> {
        Err(rpc_core::Status::unimplemented("only PingPong"))
    }
    async fn echo_client(
        &self,
        _ctx: rpc_core::ServerContext,
        _stream: rpc_core::ClientStreamingServer<ours::Request>,
    ) -> Result<ours::Response, rpc_core::Status> {
        Err(rpc_core::Status::unimplemented("only PingPong"))
    }
    async fn echo_server(
        &self,
        _ctx: rpc_core::ServerContext,
        _req: ours::Request,
        _stream: rpc_core::ServerStreamingServer<ours::Response>,
    ) -> Result<(), rpc_core::Status> {
        Err(rpc_core::Status::unimplemented("only PingPong"))
    }
}

/// Graceful shutdown of our server with a volo call in flight: the call is answered, and the
/// reply carries `crrst: "1"` (spec §1), which volo reads as "do not reuse this connection"
/// without failing the call.
#[tokio::test]
async fn our_graceful_shutdown_answers_volo_with_crrst() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let server = rpc_core::Server::builder()
        .add_service(ours::TestServiceServer::new(OurGate {
            entered: entered.clone(),
            release: release.clone(),
        }))
        .build();
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let handle = serve_tcp(server, addr).await.expect("our server");
    let proxy = RecordingProxy::start(our_addr(&handle))
        .await
        .expect("proxy");
    let client = volo_peer::client(proxy.local_addr(), Framing::Framed);
    let call = tokio::spawn(async move { client.ping_pong(volo_request("m0", None)).await });
    within("handler entered", entered.notified()).await;

    // The first poll of `shutdown` marks every connection as draining before it awaits.
    let mut shutdown = Box::pin(handle.shutdown(STEP));
    assert!(futures::poll!(shutdown.as_mut()).is_pending());
    release.notify_one();

    check_volo_ok(0, within("in-flight call", call).await.expect("call task"));
    within("our server shutdown", shutdown).await;
    let reply = frames(
        &proxy.record(0).expect("one connection"),
        Direction::ToClient,
    )
    .into_iter()
    .next()
    .expect("one reply");
    assert_eq!(reply.str_kv("crrst"), Some(&b"1"[..]), "{reply:#?}");
}

/// A volo client set to Apache Compact: volo still writes PROTOCOL ID 0 (binary) in the
/// TTHeader and puts a compact message (`82 21 ...`) in the payload, so only sniffing the
/// payload tells. Compact is not supported (spec §1: reject); the volo call must fail promptly,
/// not hang.
#[tokio::test]
async fn volo_compact_payload_is_rejected_promptly() {
    use volo_thrift::codec::default::{
        framed::MakeFramedCodec,
        thrift::{MakeThriftCodec, Protocol},
        ttheader::MakeTTHeaderCodec,
        DefaultMakeCodec,
    };
    let server = our_server().await;
    let proxy = RecordingProxy::start(our_addr(&server))
        .await
        .expect("proxy");
    let client = volo::TestServiceClientBuilder::new(volo_peer::SERVICE_NAME)
        .address(proxy.local_addr())
        .make_codec(DefaultMakeCodec::new(MakeTTHeaderCodec::new(
            MakeFramedCodec::new(MakeThriftCodec::new().with_protocol(Protocol::ApacheCompact)),
        )))
        .build();
    let out = within(
        "compact call",
        client.ping_pong(volo_request("hello", None)),
    )
    .await;
    assert!(out.is_err(), "a compact call was answered");
    let call = frames(
        &proxy.record(0).expect("one connection"),
        Direction::ToServer,
    )
    .into_iter()
    .next()
    .expect("one call");
    assert_eq!(call.protocol_id, 0, "{call:#?}");
    assert_eq!(call.payload.get(4..6), Some(&[0x82, 0x21][..]), "{call:#?}");
    within(
        "our server shutdown",
        server.shutdown(Duration::from_secs(1)),
    )
    .await;
}
