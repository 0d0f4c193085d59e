//! Cascading cancel (issue 21 item 2) and stream/recv timeouts (item 3), through real sockets.
//!
//! * three hops over ttstream and over gRPC: client → A (handler calls B) → B (handler calls C)
//!   → C; cancelling the client ends every hop within 100 ms, C's reason names A and B (over
//!   ttstream, where the path travels as `ttscp`), every server's live-stream count returns
//!   to zero;
//! * the Rst a cancelled client sends, read as raw frames by a hand-driven peer and checked
//!   against Kitex's `sendRst` (`ttscp` string key, EXCEPTION payload with code 12007 / 12014);
//! * recv timeouts: `RECV_DEADLINE_EXCEEDED` with the stream reset (the server sees the cancel)
//!   or kept alive with `disable_cancel_remote`; the stream timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use examples::proto::{Request, Response, TestService, TestServiceClient, TestServiceServer};
use rpc_core::serve::{Listener, Running};
use rpc_core::{
    BidiStreamingServer, CallOptions, CancelKind, Client, ClientStreamingServer, Code, Server,
    ServerContext, ServerStreamingServer, Status, TimeoutConfig,
};
use rpc_transport_grpc::{GrpcClient, GrpcProtocol};
use rpc_transport_ttheader::proto::{FrameKind, Limits, StreamFrame};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// How long a test waits for an event before it counts as a failure.
const BOUND: Duration = Duration::from_secs(5);

/// What a hop's handler saw when its call was cancelled.
type Report = (&'static str, Status, Instant);

/// A hop: EchoServer relays the stream of `next` (joined to this call without saying so);
/// without `next` it is the leaf, sending one response and waiting for the cancel.
struct Hop {
    name: &'static str,
    next: Option<TestServiceClient>,
    reports: mpsc::UnboundedSender<Report>,
}

impl Hop {
    fn report(&self, status: Status) -> Status {
        let _ = self
            .reports
            .send((self.name, status.clone(), Instant::now()));
        status
    }
}

impl TestService for Hop {
    async fn ping_pong(&self, _: ServerContext, r: Request) -> Result<Response, Status> {
        Ok(Response {
            message: r.message,
            index: None,
        })
    }

    async fn echo(
        &self,
        _: ServerContext,
        _: BidiStreamingServer<Request, Response>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn echo_client(
        &self,
        _: ServerContext,
        _: ClientStreamingServer<Request>,
    ) -> Result<Response, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn echo_server(
        &self,
        ctx: ServerContext,
        req: Request,
        mut out: ServerStreamingServer<Response>,
    ) -> Result<(), Status> {
        let Some(next) = &self.next else {
            out.send(Response {
                message: format!("{} from {}", req.message, self.name),
                index: Some(0),
            })
            .await?;
            return Err(self.report(ctx.cancelled().await));
        };
        // A plain call from the handler: it joins this call (cascading cancel).
        let mut down = next.echo_server(req).await?;
        loop {
            tokio::select! {
                reason = ctx.cancelled() => return Err(self.report(reason)),
                got = down.recv() => match got {
                    Ok(Some(m)) => out.send(m).await?,
                    Ok(None) => return Ok(()),
                    // The cascade ended the downstream call because this one was cancelled.
                    Err(_) if ctx.is_cancelled() => return Err(self.report(ctx.cancelled().await)),
                    Err(e) => return Err(e),
                },
            }
        }
    }
}

async fn serve(server: Server) -> Running {
    Listener::new(server)
        .protocol(TtHeaderProtocol::default())
        .protocol(GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .start()
}

#[derive(Clone, Copy, Debug)]
enum Wire {
    TtStream,
    Grpc,
}

fn client(wire: Wire, addr: &str, name: &str) -> TestServiceClient {
    let inner = match wire {
        Wire::TtStream => Client::builder(TtHeaderClient::new(
            addr.parse::<rpc_core::Address>().unwrap(),
        )),
        Wire::Grpc => Client::builder(GrpcClient::new(addr.parse::<rpc_core::Address>().unwrap())),
    };
    TestServiceClient::new(inner.from_service(name).build())
}

async fn three_hops(wire: Wire) {
    let (tx, mut reports) = mpsc::unbounded_channel();
    let hop = |name, next| {
        Server::builder()
            .add_service(TestServiceServer::new(Hop {
                name,
                next,
                reports: tx.clone(),
            }))
            .build()
    };
    let c = hop("C", None);
    let c_run = serve(c.clone()).await;
    let b = hop(
        "B",
        Some(client(wire, &c_run.local_addrs()[0].to_string(), "B")),
    );
    let b_run = serve(b.clone()).await;
    let a = hop(
        "A",
        Some(client(wire, &b_run.local_addrs()[0].to_string(), "A")),
    );
    let a_run = serve(a.clone()).await;
    let top = client(wire, &a_run.local_addrs()[0].to_string(), "client");

    let mut call = top
        .echo_server(Request {
            message: "hi".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = tokio::time::timeout(BOUND, call.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.unwrap().message, "hi from C", "the chain is up");

    let t0 = Instant::now();
    call.cancel();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let r = tokio::time::timeout(BOUND, reports.recv())
            .await
            .unwrap_or_else(|_| panic!("{wire:?}: only {:?} ended", names(&seen)))
            .unwrap();
        seen.push(r);
    }
    let mut timeline = String::new();
    for (name, status, at) in &seen {
        let ms = at.duration_since(t0).as_secs_f64() * 1e3;
        timeline.push_str(&format!("{name} {ms:.2} ms; "));
        assert!(
            ms < 100.0,
            "{wire:?}: {name} ended {ms:.1} ms after the cancel"
        );
        assert_eq!(status.code(), Code::Cancelled, "{name}: {status:?}");
        let c = status.cancellation().expect("a cancellation");
        assert_eq!(c.kind(), CancelKind::Upstream, "{name}: {status:?}");
    }
    println!("{wire:?} three-hop cancel timeline: {timeline}");
    let c_reason = &seen.iter().find(|r| r.0 == "C").unwrap().1;
    let cancel = c_reason.cancellation().unwrap();
    match wire {
        Wire::TtStream => {
            // The path travels in `ttscp`; the code stays the origin's (Kitex: 12007).
            assert_eq!(
                cancel.nodes().collect::<Vec<_>>(),
                ["client", "A", "B"],
                "{c_reason:?}"
            );
            assert_eq!(cancel.kitex_code(), 12007);
            assert!(
                c_reason
                    .message()
                    .contains("[canceled path: client -> A -> B]"),
                "{c_reason:?}"
            );
        }
        Wire::Grpc => {
            // RST_STREAM(CANCEL) has no room for a path: C knows it was cancelled from
            // upstream, not by whom.
            assert_eq!(cancel.kitex_code(), 12007);
        }
    }
    for (name, s) in [("A", &a), ("B", &b), ("C", &c)] {
        tokio::time::timeout(BOUND, s.wait_idle())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{wire:?}: {name} still has {} live streams",
                    s.active_streams()
                )
            });
    }
    for r in [a_run, b_run, c_run] {
        r.shutdown(Duration::from_secs(1)).await;
    }
}

fn names(seen: &[Report]) -> Vec<&'static str> {
    seen.iter().map(|r| r.0).collect()
}

#[tokio::test]
async fn cancelling_the_client_ends_three_ttstream_hops_and_c_names_the_path() {
    three_hops(Wire::TtStream).await;
}

#[tokio::test]
async fn cancelling_the_client_ends_three_grpc_hops() {
    three_hops(Wire::Grpc).await;
}

/// A raw TCP peer that accepts one ttstream connection and returns the frames it reads until
/// one of `until` arrives.
async fn read_frames_until(
    listener: tokio::net::TcpListener,
    until: FrameKind,
) -> Vec<StreamFrame> {
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    loop {
        while let Some(f) = StreamFrame::decode(&mut buf, &Limits::default()).unwrap() {
            let done = f.kind == until;
            frames.push(f);
            if done {
                return frames;
            }
        }
        if sock.read_buf(&mut buf).await.unwrap() == 0 {
            return frames;
        }
    }
}

/// The EXCEPTION message Kitex's `EncodeException` writes into a Rst: strict Thrift binary
/// `80 01 00 03`, the method, seqid = stream id, `TApplicationException{1: message, 2: type}`.
fn exception_bytes(method: &str, sid: i32, message: &str, code: i32) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u32(0x8001_0003);
    b.put_i32(method.len() as i32);
    b.put_slice(method.as_bytes());
    b.put_i32(sid);
    b.put_u8(11); // STRING
    b.put_i16(1);
    b.put_i32(message.len() as i32);
    b.put_slice(message.as_bytes());
    b.put_u8(8); // I32
    b.put_i16(2);
    b.put_i32(code);
    b.put_u8(0); // STOP
    b
}

async fn rst_of(
    cancel: impl FnOnce(&mut rpc_core::ServerStreamingClient<Response>),
    opts: CallOptions,
) -> (StreamFrame, i32) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("tcp://{}", listener.local_addr().unwrap());
    let peer = tokio::spawn(read_frames_until(listener, FrameKind::Rst));
    let cli = client(Wire::TtStream, &addr, "ServiceA");
    let mut call = cli
        .echo_server_with(Request::default(), opts)
        .await
        .unwrap();
    cancel(&mut call);
    let frames = tokio::time::timeout(BOUND, peer).await.unwrap().unwrap();
    let open = &frames[0];
    assert_eq!(open.kind, FrameKind::Header);
    let rst = frames.last().unwrap().clone();
    assert_eq!(rst.kind, FrameKind::Rst, "{frames:?}");
    (rst, open.stream_id)
}

#[tokio::test]
async fn a_cancelled_client_sends_kitex_rst_with_ttscp_and_code_12007() {
    let (rst, sid) = rst_of(|call| call.cancel(), CallOptions::new()).await;
    assert_eq!(rst.stream_id, sid);
    assert_eq!(rst.headers.get_str("ttscp"), Some("ServiceA"));
    assert_eq!(
        &rst.payload[..],
        &exception_bytes("EchoServer", sid, "canceled by the user", 12007)[..]
    );
}

#[tokio::test]
async fn a_recv_timeout_sends_rst_12014_with_the_client_as_the_path() {
    let opts = CallOptions::new().recv_timeout(TimeoutConfig::new(Duration::from_millis(20)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("tcp://{}", listener.local_addr().unwrap());
    let peer = tokio::spawn(read_frames_until(listener, FrameKind::Rst));
    let cli = client(Wire::TtStream, &addr, "ServiceA");
    let mut call = cli
        .echo_server_with(Request::default(), opts)
        .await
        .unwrap();
    let err = tokio::time::timeout(BOUND, call.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::RecvDeadlineExceeded, "{err:?}");
    assert_eq!(err.cancellation().unwrap().kind(), CancelKind::RecvTimeout);
    // The stream is over: the same outcome again.
    assert_eq!(
        call.recv().await.unwrap_err().code(),
        Code::RecvDeadlineExceeded
    );
    let frames = tokio::time::timeout(BOUND, peer).await.unwrap().unwrap();
    let sid = frames[0].stream_id;
    let rst = frames.last().unwrap();
    assert_eq!(rst.kind, FrameKind::Rst);
    assert_eq!(rst.headers.get_str("ttscp"), Some("ServiceA"));
    assert_eq!(
        &rst.payload[..],
        &exception_bytes(
            "EchoServer",
            sid,
            "stream recv timeout, timeout=20ms",
            12014
        )[..]
    );
}

/// A leaf whose EchoServer sends one response after `delay`, then another after `delay`
/// again, and records how its call ended.
struct Slow {
    delay: Duration,
    ended: Arc<Mutex<Vec<Status>>>,
}

impl TestService for Slow {
    async fn ping_pong(&self, _: ServerContext, r: Request) -> Result<Response, Status> {
        Ok(Response {
            message: r.message,
            index: None,
        })
    }

    async fn echo(
        &self,
        _: ServerContext,
        _: BidiStreamingServer<Request, Response>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn echo_client(
        &self,
        _: ServerContext,
        _: ClientStreamingServer<Request>,
    ) -> Result<Response, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn echo_server(
        &self,
        ctx: ServerContext,
        _: Request,
        mut out: ServerStreamingServer<Response>,
    ) -> Result<(), Status> {
        for i in 0..2 {
            tokio::select! {
                reason = ctx.cancelled() => {
                    self.ended.lock().unwrap().push(reason.clone());
                    return Err(reason);
                }
                () = tokio::time::sleep(self.delay) => {}
            }
            out.send(Response {
                message: "late".into(),
                index: Some(i),
            })
            .await?;
        }
        self.ended.lock().unwrap().push(Status::ok());
        Ok(())
    }
}

async fn slow_server(delay: Duration) -> (Server, Running, Arc<Mutex<Vec<Status>>>) {
    let ended = Arc::new(Mutex::new(Vec::new()));
    let server = Server::builder()
        .add_service(TestServiceServer::new(Slow {
            delay,
            ended: ended.clone(),
        }))
        .build();
    let run = serve(server.clone()).await;
    (server, run, ended)
}

#[tokio::test]
async fn a_recv_timeout_cancels_the_server_over_ttstream_and_grpc() {
    for wire in [Wire::TtStream, Wire::Grpc] {
        let (server, run, ended) = slow_server(Duration::from_secs(30)).await;
        let cli = client(wire, &run.local_addrs()[0].to_string(), "client");
        let opts = CallOptions::new().recv_timeout(TimeoutConfig::new(Duration::from_millis(30)));
        let mut call = cli
            .echo_server_with(Request::default(), opts)
            .await
            .unwrap();
        let err = tokio::time::timeout(BOUND, call.recv())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), Code::RecvDeadlineExceeded, "{wire:?}: {err:?}");
        tokio::time::timeout(BOUND, server.wait_idle())
            .await
            .unwrap();
        let ended = ended.lock().unwrap().clone();
        assert_eq!(ended.len(), 1, "{wire:?}");
        assert_ne!(
            ended[0].code(),
            Code::Ok,
            "{wire:?}: the server was cancelled: {ended:?}"
        );
        run.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn with_disable_cancel_remote_a_recv_timeout_keeps_the_stream() {
    for wire in [Wire::TtStream, Wire::Grpc] {
        let (server, run, ended) = slow_server(Duration::from_millis(150)).await;
        let cli = client(wire, &run.local_addrs()[0].to_string(), "client");
        let cfg = TimeoutConfig::new(Duration::from_millis(20)).disable_cancel_remote(true);
        let mut call = cli
            .echo_server_with(Request::default(), CallOptions::new().recv_timeout(cfg))
            .await
            .unwrap();
        let err = tokio::time::timeout(BOUND, call.recv())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), Code::RecvDeadlineExceeded, "{wire:?}");
        // Retry until the message comes: the stream was not reset.
        let mut got = None;
        let t0 = Instant::now();
        while got.is_none() && t0.elapsed() < BOUND {
            match call.recv().await {
                Ok(m) => got = m,
                Err(e) => assert_eq!(e.code(), Code::RecvDeadlineExceeded, "{wire:?}: {e:?}"),
            }
        }
        assert_eq!(got.expect("the late message").message, "late");
        drop(call);
        tokio::time::timeout(BOUND, server.wait_idle())
            .await
            .unwrap();
        let _ = ended;
        run.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn the_stream_timeout_ends_the_stream_without_telling_the_server_a_deadline() {
    let (server, run, ended) = slow_server(Duration::from_secs(30)).await;
    let cli = client(Wire::TtStream, &run.local_addrs()[0].to_string(), "client");
    let mut call = cli
        .echo_server_with(
            Request::default(),
            CallOptions::new().stream_timeout(Duration::from_millis(40)),
        )
        .await
        .unwrap();
    let err = tokio::time::timeout(BOUND, call.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(
        err.cancellation().unwrap().kind(),
        CancelKind::StreamTimeout
    );
    assert_eq!(err.transport_code(), Some(12015));
    tokio::time::timeout(BOUND, server.wait_idle())
        .await
        .unwrap();
    let ended = ended.lock().unwrap().clone();
    let c = ended[0].cancellation().expect("cancelled from upstream");
    assert_eq!(
        (c.kind(), c.kitex_code(), c.path()),
        (CancelKind::Upstream, 12015, "client")
    );
    run.shutdown(Duration::from_secs(1)).await;
}
