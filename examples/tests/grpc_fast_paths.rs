//! What a gRPC handler sees must not change with the server stream's fast paths.
//!
//! - Receive: the stream hands the core every whole message of a DATA chunk at once (one
//!   receive lock per chunk instead of one per message). Each test sends many messages in one
//!   DATA frame from a raw h2 client, so they arrive in one chunk, and checks the order and
//!   the end (EOF after the last one), that a cancel stops the handler's `recv` although the
//!   rest of the chunk was already taken from h2, and that a broken message in the middle of
//!   a chunk is an error after the good ones before it.
//! - Send: once the header is out, a message goes to the transport without the core's
//!   `finished` lock (the gRPC stream refuses what comes after `finish` itself): a sender
//!   that outlives its handler still fails, and nothing of it reaches the client.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use examples::proto::{Request, Response, TestService, TestServiceServer};
use prost::Message;
use rpc_core::serve::{Listener, Running};
use rpc_core::{
    Address, BidiStreamingServer, ClientStreamingServer, Code, Server, ServerContext,
    ServerStreamingServer, Status,
};
use rpc_transport_grpc::GrpcProtocol;
use tokio::sync::{mpsc, Notify};

const WAIT: Duration = Duration::from_secs(10);

/// What a handler reports: the indexes it received, then how its stream ended.
#[derive(Debug)]
enum Seen {
    Message(i32),
    End(Result<(), Code>),
}

#[derive(Clone)]
struct Batch {
    seen: mpsc::UnboundedSender<Seen>,
    /// Lets the sender that outlives `echo_server` send (once the client saw the end).
    late: Arc<Notify>,
}

impl Batch {
    /// Reports every request until the end; with `stop_after`, waits for the call to be
    /// cancelled after that many requests, then reports what the next `recv` gives.
    async fn drain(
        &self,
        ctx: &ServerContext,
        rx: &mut ClientStreamingServer<Request>,
        stop_after: Option<usize>,
    ) {
        let mut n = 0;
        loop {
            if stop_after == Some(n) {
                ctx.cancelled().await;
            }
            match rx.recv().await {
                Ok(Some(r)) => {
                    let _ = self.seen.send(Seen::Message(r.repeat.unwrap_or(-1)));
                    n += 1;
                }
                Ok(None) => {
                    let _ = self.seen.send(Seen::End(Ok(())));
                    return;
                }
                Err(e) => {
                    let _ = self.seen.send(Seen::End(Err(e.code())));
                    return;
                }
            }
        }
    }
}

impl TestService for Batch {
    async fn ping_pong(&self, _ctx: ServerContext, req: Request) -> Result<Response, Status> {
        Ok(Response {
            message: req.message,
            index: Some(0),
        })
    }

    /// Reads one request, waits for the cancel, then reads again.
    async fn echo(
        &self,
        ctx: ServerContext,
        stream: BidiStreamingServer<Request, Response>,
    ) -> Result<(), Status> {
        let (_tx, mut rx) = stream.into_split();
        self.drain(&ctx, &mut rx, Some(1)).await;
        Ok(())
    }

    /// Reads every request to the end.
    async fn echo_client(
        &self,
        ctx: ServerContext,
        mut stream: ClientStreamingServer<Request>,
    ) -> Result<Response, Status> {
        self.drain(&ctx, &mut stream, None).await;
        Ok(Response::default())
    }

    /// Sends one response and returns; a task keeps the send half and, once let, sends again
    /// and reports how that went.
    async fn echo_server(
        &self,
        _ctx: ServerContext,
        req: Request,
        mut stream: ServerStreamingServer<Response>,
    ) -> Result<(), Status> {
        stream
            .send(Response {
                message: req.message,
                index: Some(0),
            })
            .await?;
        let (late, seen) = (self.late.clone(), self.seen.clone());
        tokio::spawn(async move {
            late.notified().await;
            let r = stream
                .send(Response {
                    message: "too late".into(),
                    index: Some(1),
                })
                .await;
            let _ = seen.send(Seen::End(r.map_err(|e| e.code())));
        });
        Ok(())
    }
}

async fn serve() -> (Running, Address, mpsc::UnboundedReceiver<Seen>, Arc<Notify>) {
    let (seen, rx) = mpsc::unbounded_channel();
    let late = Arc::new(Notify::new());
    let server = Server::builder()
        .add_service(TestServiceServer::new(Batch {
            seen,
            late: late.clone(),
        }))
        .build();
    let running = Listener::new(server)
        .protocol(GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .start();
    let addr = running.local_addrs()[0].clone();
    (running, addr, rx, late)
}

/// `n` requests with `repeat` = their index, each with its 5-byte prefix, in one buffer.
fn requests(n: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..n {
        let m = Request {
            message: "x".repeat(100),
            repeat: Some(i as i32),
            ..Default::default()
        }
        .encode_to_vec();
        buf.put_u8(0);
        buf.put_u32(m.len() as u32);
        buf.put_slice(&m);
    }
    buf
}

/// Opens `path` on a raw h2 connection and sends `body` as one DATA frame (`end`: with
/// END_STREAM). The response future and the send stream are returned (the connection task
/// runs until they are dropped).
async fn open(
    addr: &Address,
    path: &str,
    body: Bytes,
    end: bool,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let sock = tokio::net::TcpStream::connect(addr.socket_addr().unwrap())
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(sock).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (res, mut stream) = send.send_request(req, false).unwrap();
    assert!(body.len() <= 16 * 1024, "one DATA frame");
    stream.send_data(body, end).unwrap();
    (res, stream)
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, seen.recv())
        .await
        .expect("the handler reports")
        .expect("a report")
}

#[tokio::test]
async fn a_chunk_of_messages_arrives_in_order_then_eof() {
    const N: usize = 100;
    let (_running, addr, mut seen, _) = serve().await;
    let body = requests(N).freeze();
    let (res, _stream) = open(&addr, "/echo.TestService/EchoClient", body, true).await;
    for i in 0..N {
        match next(&mut seen).await {
            Seen::Message(got) => assert_eq!(got, i as i32),
            other => panic!("message {i}: {other:?}"),
        }
    }
    assert!(matches!(next(&mut seen).await, Seen::End(Ok(()))));
    let res = tokio::time::timeout(WAIT, res).await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_cancel_stops_recv_although_the_rest_of_the_chunk_was_taken() {
    const N: usize = 100;
    let (_running, addr, mut seen, _) = serve().await;
    let body = requests(N).freeze();
    let (_res, mut stream) = open(&addr, "/echo.TestService/Echo", body, false).await;
    assert!(matches!(next(&mut seen).await, Seen::Message(0)));
    // The handler took the first message of the chunk; the other 99 are in the server.
    stream.send_reset(h2::Reason::CANCEL);
    match next(&mut seen).await {
        Seen::End(Err(Code::Cancelled)) => {}
        other => panic!("after the cancel the handler's recv gave {other:?}"),
    }
}

#[tokio::test]
async fn a_broken_message_inside_a_chunk_fails_after_the_good_ones() {
    const GOOD: usize = 10;
    let (_running, addr, mut seen, _) = serve().await;
    let mut body = requests(GOOD);
    // A prefix flag that is neither 0 nor 1, then more good messages behind it.
    body.put_slice(&[2, 0, 0, 0, 1, 0]);
    body.put(requests(5));
    let (_res, _stream) = open(&addr, "/echo.TestService/EchoClient", body.freeze(), true).await;
    for i in 0..GOOD {
        match next(&mut seen).await {
            Seen::Message(got) => assert_eq!(got, i as i32),
            other => panic!("message {i}: {other:?}"),
        }
    }
    match next(&mut seen).await {
        Seen::End(Err(Code::Internal)) => {}
        other => panic!("after the good messages: {other:?}"),
    }
}

#[tokio::test]
async fn a_sender_that_outlives_its_handler_fails_and_sends_nothing() {
    let (_running, addr, mut seen, late) = serve().await;
    let client = examples::proto::TestServiceClient::new(rpc_core::Client::new(
        rpc_transport_grpc::GrpcClient::new(addr.clone()),
    ));
    let mut call = tokio::time::timeout(WAIT, client.echo_server(Request::default()))
        .await
        .unwrap()
        .unwrap();
    let first = tokio::time::timeout(WAIT, call.recv()).await.unwrap();
    assert_eq!(first.unwrap().map(|r| r.index), Some(Some(0)));
    // The end: nothing after the handler's return reaches the client.
    let end = tokio::time::timeout(WAIT, call.recv()).await.unwrap();
    assert_eq!(end.unwrap(), None);
    late.notify_one();
    match next(&mut seen).await {
        Seen::End(Err(Code::FailedPrecondition)) => {}
        other => panic!("a send after the stream finished gave {other:?}"),
    }
}
