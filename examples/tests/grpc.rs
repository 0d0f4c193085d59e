//! gRPC semantics on real sockets: `GrpcClient` and raw `h2` peers against a `Listener` serving
//! `GrpcProtocol` (next to TTHeader, as `echo-server` does). Metadata (ASCII and `-bin`),
//! status details, Trailers-Only, compression per call and per message, `grpc-timeout`,
//! cancel, HTTP-status mapping of non-gRPC peers, the receive limit, and flow control as
//! backpressure (a non-reading handler stops its sender while other streams keep flowing).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use examples::proto::{Request, Response, TestService, TestServiceClient, TestServiceServer};
use http::HeaderMap;
use prost::Message;
use rpc_core::error_details::ErrorDetails;
use rpc_core::serve::{Listener, Running};
use rpc_core::transport::ServerExt;
use rpc_core::{
    Address, BidiStreamingServer, CallOptions, Client, ClientStreamingServer, Code, Server,
    ServerContext, ServerStreamingServer, Status,
};
use rpc_transport_grpc::{
    Compression, GrpcClient, GrpcClientConfig, GrpcProtocol, MessageCompression,
};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(10);

/// A test service: each method exposes one piece of what the transport hands a handler.
#[derive(Clone, Default)]
struct Probe {
    /// Handlers that saw their call cancelled, and a signal per one.
    cancels: Arc<AtomicUsize>,
    cancelled: Arc<Notify>,
    last_cancel: Arc<std::sync::Mutex<Option<Code>>>,
}

impl Probe {
    async fn wait_cancel(&self, ctx: &ServerContext) {
        let s = ctx.cancelled().await;
        *self.last_cancel.lock().unwrap() = Some(s.code());
        self.cancels.fetch_add(1, Ordering::SeqCst);
        self.cancelled.notify_waiters();
    }
}

fn compression(ctx: &ServerContext) -> MessageCompression {
    ctx.extension::<MessageCompression>()
        .expect("the gRPC transport hands every call its MessageCompression")
}

impl TestService for Probe {
    async fn ping_pong(&self, ctx: ServerContext, req: Request) -> Result<Response, Status> {
        match req.message.as_str() {
            "details" => Err(Status::new(Code::NotFound, "ünï\ncode 100%")
                .with_details(Bytes::from_static(b"\x00\x01details"))),
            "typed details" => {
                let mut d = ErrorDetails::with_bad_request_violation("name", "empty");
                d.set_retry_info(Some(Duration::from_millis(250)));
                Err(Status::with_error_details(
                    Code::InvalidArgument,
                    "typed",
                    d,
                ))
            }
            "sleep" => {
                self.wait_cancel(&ctx).await;
                Err(Status::cancelled("gone"))
            }
            "compressed?" => {
                let c = compression(&ctx);
                match req.repeat {
                    Some(1) => c.set_send(Compression::Gzip),
                    Some(2) => c.set_send(Compression::Zstd),
                    _ => {}
                }
                Ok(Response {
                    message: format!("{}", c.last_received_compressed()),
                    index: Some(i32::from(c.peer_accepts(Compression::Gzip))),
                })
            }
            _ => {
                // Echo the request metadata: text in the header, binary in the trailer.
                if let Some(t) = ctx.metadata().get_str("x-text") {
                    ctx.set_header("x-text-echo", t.to_owned())?;
                }
                if let Some(b) = ctx.metadata().get("x-data-bin") {
                    ctx.set_trailer("x-data-echo-bin", Bytes::copy_from_slice(b.as_bytes()));
                }
                Ok(Response {
                    message: req.message,
                    index: Some(0),
                })
            }
        }
    }

    async fn echo(
        &self,
        ctx: ServerContext,
        _stream: BidiStreamingServer<Request, Response>,
    ) -> Result<(), Status> {
        // Never reads, never sends: holds the stream until it is cancelled.
        self.wait_cancel(&ctx).await;
        Ok(())
    }

    async fn echo_client(
        &self,
        ctx: ServerContext,
        mut stream: ClientStreamingServer<Request>,
    ) -> Result<Response, Status> {
        // Reports which requests arrived compressed: "1,0,...".
        let c = compression(&ctx);
        let mut flags = Vec::new();
        while let Some(_req) = stream.recv().await? {
            flags.push(if c.last_received_compressed() {
                "1"
            } else {
                "0"
            });
        }
        Ok(Response {
            message: flags.join(","),
            index: Some(flags.len() as i32),
        })
    }

    async fn echo_server(
        &self,
        ctx: ServerContext,
        req: Request,
        mut stream: ServerStreamingServer<Response>,
    ) -> Result<(), Status> {
        // Alternates identity and gzip per message (plain first: the header is sent before
        // any message asks for gzip).
        let c = compression(&ctx);
        for i in 0..req.repeat.unwrap_or(2) {
            c.set_send(if i % 2 == 1 {
                Compression::Gzip
            } else {
                Compression::Identity
            });
            stream
                .send(Response {
                    message: req.message.clone(),
                    index: Some(i),
                })
                .await?;
        }
        Ok(())
    }
}

async fn serve(probe: Probe) -> (Running, Address) {
    let server = Server::builder()
        .add_service(TestServiceServer::new(probe))
        .build();
    let running = Listener::new(server)
        .protocol(TtHeaderProtocol::default())
        .protocol(GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .start();
    let addr = running.local_addrs()[0].clone();
    (running, addr)
}

fn client(addr: &Address) -> TestServiceClient {
    TestServiceClient::new(Client::new(GrpcClient::new(addr.clone())))
}

fn req(message: &str) -> Request {
    Request {
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn text_and_binary_metadata_and_status_details_round_trip() {
    let (_running, addr) = serve(Probe::default()).await;
    let c = client(&addr);
    let opts = CallOptions::new()
        .metadata("x-text", "hello")
        .metadata("x-data-bin", Bytes::from_static(b"\x00\xff\x01"));
    let res = c.ping_pong_with(req("hi"), opts).await.unwrap();
    assert_eq!(res.get_ref().message, "hi");
    assert_eq!(res.header().get_str("x-text-echo"), Some("hello"));
    assert_eq!(
        res.trailer().get("x-data-echo-bin").map(|v| v.as_bytes()),
        Some(&b"\x00\xff\x01"[..])
    );
    assert!(
        !res.header().contains_key("content-type") && !res.trailer().contains_key("grpc-status"),
        "reserved headers stay out of metadata"
    );
    let e = c.ping_pong(req("details")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "ünï\ncode 100%");
    assert_eq!(&e.details()[..], b"\x00\x01details");
}

/// Calls of one connection share the request metadata they carry alike (the server keeps one
/// copy per connection): each call still sees exactly its own — the same, a different value,
/// none — also across many calls that each carry a different value (the shared copy is
/// replaced now and then).
#[tokio::test]
async fn each_call_of_a_connection_sees_its_own_metadata() {
    let (_running, addr) = serve(Probe::default()).await;
    let c = TestServiceClient::new(Client::new(GrpcClient::with_config(
        addr.clone(),
        GrpcClientConfig::default().connections(1),
    )));
    let call = |text: Option<String>| {
        let c = c.clone();
        async move {
            let opts = match &text {
                Some(t) => CallOptions::new().metadata("x-text", t.clone()),
                None => CallOptions::new(),
            };
            let res = tokio::time::timeout(WAIT, c.ping_pong_with(req("hi"), opts))
                .await
                .expect("the call completes")
                .expect("the call succeeds");
            assert_eq!(
                res.header().get_str("x-text-echo"),
                text.as_deref(),
                "the handler sees this call's metadata"
            );
        }
    };
    let mut plan: Vec<Option<String>> = vec![
        None,
        Some("a".into()),
        Some("a".into()),
        Some("b".into()),
        None,
        Some("a".into()),
    ];
    plan.extend((0..40).map(|i| Some(format!("v{i}"))));
    plan.extend([
        Some("v39".into()),
        None,
        Some("v39".into()),
        Some("a".into()),
    ]);
    for text in plan {
        call(text).await;
    }
}

/// Typed error details reach a gRPC client (`grpc-status-details-bin`); over TTHeader, as with
/// Kitex, they are not carried: the same call on the same port ends without them.
#[tokio::test]
async fn typed_error_details_cross_grpc_and_not_ttheader() {
    let (_running, addr) = serve(Probe::default()).await;
    let e = client(&addr)
        .ping_pong(req("typed details"))
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "typed"));
    let bad = e.get_details_bad_request().expect("a BadRequest over gRPC");
    assert_eq!(bad.field_violations[0].field, "name");
    let retry = e.get_details_retry_info().expect("a RetryInfo over gRPC");
    assert_eq!(retry.retry_delay(), Some(Duration::from_millis(250)));

    let over_ttheader = TestServiceClient::new(Client::new(TtHeaderClient::new(addr.clone())));
    let e = over_ttheader
        .ping_pong(req("typed details"))
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "typed"));
    assert!(e.details().is_empty(), "TTHeader carries no status details");
    assert!(e.get_error_details().is_empty());
}

#[tokio::test]
async fn compression_per_call_and_per_message_both_ways() {
    let (_running, addr) = serve(Probe::default()).await;
    let c = client(&addr);
    // Uncompressed request: the handler sees it.
    let plain = c.ping_pong(req("compressed?")).await.unwrap();
    assert_eq!(plain.message, "false");
    assert_eq!(plain.index, Some(1), "our client accepts gzip");
    // A gzip call, and a gzip response the handler asked for.
    let mut r = req("compressed?");
    r.repeat = Some(1);
    let opts = CallOptions::new().extension(Compression::Gzip);
    let gz = c.ping_pong_with(r, opts).await.unwrap();
    assert_eq!(gz.get_ref().message, "true");
    // Per message on the client: compressed, plain, compressed.
    let per = MessageCompression::new(Compression::Gzip);
    let mut call = c
        .echo_client_with(CallOptions::new().extension(per.clone()))
        .await
        .unwrap();
    for (i, mode) in [Compression::Gzip, Compression::Identity, Compression::Gzip]
        .into_iter()
        .enumerate()
    {
        per.set_send(mode);
        call.send(req(&format!("m{i}"))).await.unwrap();
    }
    assert_eq!(call.close_and_recv().await.unwrap().message, "1,0,1");
    // Per message on the server: the client sees the flags alternate.
    let seen = MessageCompression::default();
    let mut r = req(&"z".repeat(1000));
    r.repeat = Some(4);
    let mut stream = c
        .echo_server_with(r, CallOptions::new().extension(seen.clone()))
        .await
        .unwrap();
    let mut flags = Vec::new();
    while let Some(m) = stream.recv().await.unwrap() {
        assert_eq!(m.message.len(), 1000);
        flags.push(seen.last_received_compressed());
    }
    assert_eq!(flags, [false, true, false, true]);
}

#[tokio::test]
async fn a_streaming_call_returns_before_the_server_answers_and_cancel_reaches_the_handler() {
    let probe = Probe::default();
    let (_running, addr) = serve(probe.clone()).await;
    let c = client(&addr);
    // The handler never sends a header: opening must not wait for one.
    let call = tokio::time::timeout(WAIT, c.echo()).await.unwrap().unwrap();
    let cancelled = probe.cancelled.notified();
    let start = Instant::now();
    drop(call); // RST_STREAM(CANCEL)
    tokio::time::timeout(WAIT, cancelled).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(*probe.last_cancel.lock().unwrap(), Some(Code::Cancelled));
}

#[tokio::test]
async fn grpc_timeout_is_sent_and_enforced_by_the_server() {
    let probe = Probe::default();
    let (_running, addr) = serve(probe.clone()).await;
    // A raw client sends grpc-timeout and never resets: the server's own deadline fires.
    let mut h2c = RawClient::connect(&addr).await;
    let cancelled = probe.cancelled.notified();
    let start = Instant::now();
    let (headers, _data, trailers) = h2c
        .call(
            "/echo.TestService/PingPong",
            &[("grpc-timeout", "200m")],
            &prefixed(&req("sleep").encode_to_vec()),
        )
        .await;
    tokio::time::timeout(WAIT, cancelled).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(
        *probe.last_cancel.lock().unwrap(),
        Some(Code::DeadlineExceeded)
    );
    let st = trailers.unwrap_or(headers);
    assert_eq!(st["grpc-status"], "4");
}

/// 256 MiB offered to a handler that never reads: the sender is stopped by flow control
/// after about one window (plus what h2 buffers for one message), and a second stream on the
/// same connection is still served.
#[tokio::test]
async fn a_non_reading_handler_stops_its_sender_and_other_streams_keep_flowing() {
    let (_running, addr) = serve(Probe::default()).await;
    let transport =
        GrpcClient::with_config(addr.clone(), GrpcClientConfig::default().connections(1));
    let c = TestServiceClient::new(Client::new(transport));
    let mut call = c.echo().await.unwrap();
    let chunk = "x".repeat(256 * 1024);
    let mut sent = 0usize;
    while sent < 256 << 20 {
        match tokio::time::timeout(Duration::from_millis(300), call.send(req(&chunk))).await {
            Ok(r) => {
                r.unwrap();
                sent += chunk.len();
            }
            Err(_) => break, // blocked: flow control holds the sender
        }
    }
    // The server's stream window (1 MiB) + h2's send buffer (1 MiB) + one message in flight.
    eprintln!(
        "sent {} KiB before flow control stopped the sender",
        sent >> 10
    );
    assert!(sent >= 512 << 10, "flow control let {sent} bytes through");
    assert!(
        sent <= 4 << 20,
        "sent {} MiB before being stopped",
        sent >> 20
    );
    // Another stream on the same connection still works.
    let r = tokio::time::timeout(WAIT, c.ping_pong(req("still here")))
        .await
        .expect("a second stream is not blocked by the first")
        .unwrap();
    assert_eq!(r.message, "still here");
}

#[tokio::test]
async fn a_message_above_the_receive_limit_is_resource_exhausted() {
    let (_running, addr) = serve(Probe::default()).await;
    let c = client(&addr);
    let big = "y".repeat(5 << 20);
    let e = c.ping_pong(req(&big)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // The connection is fine afterwards.
    assert_eq!(c.ping_pong(req("ok")).await.unwrap().message, "ok");
}

// --- raw HTTP/2 peers -------------------------------------------------------------------

fn prefixed(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

struct RawClient {
    send: h2::client::SendRequest<Bytes>,
}

impl RawClient {
    async fn connect(addr: &Address) -> RawClient {
        let sock = tokio::net::TcpStream::connect(addr.socket_addr().unwrap())
            .await
            .unwrap();
        let (send, conn) = h2::client::handshake(sock).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        RawClient { send }
    }

    /// One call: the response headers, the DATA bytes, the trailers (None for Trailers-Only).
    async fn call(
        &mut self,
        path: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> (HeaderMap, Bytes, Option<HeaderMap>) {
        self.call_ct(path, "application/grpc", extra, body).await
    }

    async fn call_ct(
        &mut self,
        path: &str,
        content_type: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> (HeaderMap, Bytes, Option<HeaderMap>) {
        let mut b = http::Request::builder()
            .method("POST")
            .uri(format!("http://localhost{path}"))
            .header("content-type", content_type)
            .header("te", "trailers");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let mut send = self.send.clone().ready().await.unwrap();
        let (res, mut stream) = send.send_request(b.body(()).unwrap(), false).unwrap();
        stream
            .send_data(Bytes::copy_from_slice(body), true)
            .unwrap();
        let res = tokio::time::timeout(WAIT, res).await.unwrap().unwrap();
        let (parts, mut recv) = res.into_parts();
        let mut headers = parts.headers;
        headers.insert("x-http-status", parts.status.as_str().parse().unwrap());
        if recv.is_end_stream() {
            return (headers, Bytes::new(), None);
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.unwrap();
            let _ = recv.flow_control().release_capacity(chunk.len());
            data.put(chunk);
        }
        let trailers = recv.trailers().await.unwrap();
        (headers, data.freeze(), trailers)
    }
}

#[tokio::test]
async fn wire_details_seen_by_a_raw_http2_client() {
    let (_running, addr) = serve(Probe::default()).await;
    let mut h = RawClient::connect(&addr).await;
    let body = prefixed(&req("raw").encode_to_vec());

    // A full response: headers, one message, trailers with grpc-status 0; bare path too.
    for path in ["/echo.TestService/PingPong", "/TestService/PingPong"] {
        let (headers, data, trailers) = h.call(path, &[("x-data-bin", "AQI=")], &body).await;
        assert_eq!(headers["x-http-status"], "200");
        assert_eq!(headers["content-type"], "application/grpc");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        // Padded base64 in, unpadded out.
        assert_eq!(trailers["x-data-echo-bin"], "AQI");
        let res = Response::decode(&data[5..]).unwrap();
        assert_eq!(res.message, "raw");
    }

    // Errors before any message are Trailers-Only (one HEADERS with END_STREAM).
    let (headers, _, trailers) = h.call("/echo.TestService/Nope", &[], &body).await;
    assert!(trailers.is_none());
    assert_eq!(headers["grpc-status"], "12");
    let (headers, _, trailers) = h
        .call(
            "/echo.TestService/PingPong",
            &[],
            &prefixed(&req("details").encode_to_vec()),
        )
        .await;
    assert!(trailers.is_none());
    assert_eq!(headers["grpc-status"], "5");
    assert_eq!(headers["grpc-message"], "%C3%BCn%C3%AF%0Acode 100%25");
    assert_eq!(headers["grpc-status-details-bin"], "AAFkZXRhaWxz");

    // Unsupported encoding: UNIMPLEMENTED, with what we accept.
    let (headers, _, _) = h
        .call(
            "/echo.TestService/PingPong",
            &[("grpc-encoding", "snappy")],
            &body,
        )
        .await;
    assert_eq!(headers["grpc-status"], "12");
    assert_eq!(headers["grpc-accept-encoding"], "gzip,zstd");

    // Compressed flag without grpc-encoding: INTERNAL.
    let mut flagged = body.clone();
    flagged[0] = 1;
    let (headers, _, trailers) = h.call("/echo.TestService/PingPong", &[], &flagged).await;
    let st = trailers.unwrap_or(headers);
    assert_eq!(st["grpc-status"], "13");

    // A prefix claiming 4 GiB: RESOURCE_EXHAUSTED, nothing allocated.
    let (headers, _, trailers) = h
        .call(
            "/echo.TestService/PingPong",
            &[],
            &[0, 0xff, 0xff, 0xff, 0xff],
        )
        .await;
    assert_eq!(trailers.unwrap_or(headers)["grpc-status"], "8");

    // A truncated prefix, then END_STREAM: INTERNAL.
    let (headers, _, trailers) = h.call("/echo.TestService/PingPong", &[], &[0, 0, 0]).await;
    assert_eq!(trailers.unwrap_or(headers)["grpc-status"], "13");

    // Malformed grpc-timeout: INTERNAL.
    let (headers, _, _) = h
        .call(
            "/echo.TestService/PingPong",
            &[("grpc-timeout", "soon")],
            &body,
        )
        .await;
    assert_eq!(headers["grpc-status"], "13");

    // Thrift over gRPC: routed by content-type, answered in the same content-type (the
    // Probe hosts only the protobuf flavour, so the thrift method is unknown).
    let (headers, _, _) = h
        .call_ct(
            "/echo.TestService/PingPong",
            "application/grpc+thrift",
            &[],
            &body,
        )
        .await;
    assert_eq!(headers["content-type"], "application/grpc+thrift");
    assert_eq!(headers["grpc-status"], "12");

    // Not gRPC at all: HTTP 415.
    let (headers, _, _) = h
        .call_ct("/echo.TestService/PingPong", "text/plain", &[], &body)
        .await;
    assert_eq!(headers["x-http-status"], "415");

    // gzip with grpc-encoding: fine.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &req("zipped").encode_to_vec()).unwrap();
    let mut zipped = prefixed(&gz.finish().unwrap());
    zipped[0] = 1;
    let (_, data, trailers) = h
        .call(
            "/echo.TestService/PingPong",
            &[("grpc-encoding", "gzip")],
            &zipped,
        )
        .await;
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    assert_eq!(Response::decode(&data[5..]).unwrap().message, "zipped");
}

/// What a client accepts decides the response's `grpc-encoding`: the handler's choice when
/// accepted, else another algorithm the client accepts, else none (plain messages).
#[tokio::test]
async fn the_response_encoding_is_one_the_client_accepts() {
    let (_running, addr) = serve(Probe::default()).await;
    let mut h = RawClient::connect(&addr).await;
    let mut r = req("compressed?");
    r.repeat = Some(2); // the handler asks for zstd
    let body = prefixed(&r.encode_to_vec());
    let path = "/echo.TestService/PingPong";
    for (accept, announced) in [
        (Some("zstd"), Some("zstd")),
        (Some("gzip,zstd"), Some("zstd")),
        (Some("identity, gzip"), Some("gzip")),
        (Some("snappy, identity"), None),
        (None, None),
    ] {
        let extra: Vec<_> = accept
            .map(|a| ("grpc-accept-encoding", a))
            .into_iter()
            .collect();
        let (headers, data, trailers) = h.call(path, &extra, &body).await;
        assert_eq!(trailers.unwrap()["grpc-status"], "0", "accept {accept:?}");
        assert_eq!(headers["grpc-accept-encoding"], "gzip,zstd");
        let got = headers.get("grpc-encoding").map(|v| v.to_str().unwrap());
        assert_eq!(got, announced, "accept {accept:?}");
        let plain = match (data[0], got) {
            (0, None) => data.slice(5..),
            (1, Some("zstd")) => Bytes::from(zstd::stream::decode_all(&data[5..]).unwrap()),
            (1, Some("gzip")) => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[5..]), &mut out)
                    .unwrap();
                Bytes::from(out)
            }
            other => panic!("accept {accept:?}: flag and encoding {other:?}"),
        };
        let res = Response::decode(plain).unwrap();
        assert_eq!(res.message, "false", "the request went plain");
    }
    // A zstd request (with its content size, as our encoder writes it) reads as compressed.
    let mut zipped =
        prefixed(&zstd::bulk::compress(&req("compressed?").encode_to_vec(), 1).unwrap());
    zipped[0] = 1;
    let (_, data, trailers) = h.call(path, &[("grpc-encoding", "zstd")], &zipped).await;
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    assert_eq!(Response::decode(&data[5..]).unwrap().message, "true");
}

/// zstd zip bombs against the 4 MiB receive limit: `RESOURCE_EXHAUSTED`, whether the frame says
/// its size (refused before inflating) or not (refused at the limit while inflating).
#[tokio::test]
async fn a_zstd_bomb_ends_the_call_with_resource_exhausted() {
    let (_running, addr) = serve(Probe::default()).await;
    let mut h = RawClient::connect(&addr).await;
    let zeros = vec![0u8; 16 << 20];
    let sized = zstd::bulk::compress(&zeros, 1).unwrap();
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    enc.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut enc, &zeros).unwrap();
    let streamed = enc.finish().unwrap();
    for bomb in [sized, streamed] {
        assert!(
            bomb.len() < 64 << 10,
            "a bomb is small: {} bytes",
            bomb.len()
        );
        let mut wire = prefixed(&bomb);
        wire[0] = 1;
        let (headers, _, trailers) = h
            .call(
                "/echo.TestService/PingPong",
                &[("grpc-encoding", "zstd")],
                &wire,
            )
            .await;
        assert_eq!(trailers.unwrap_or(headers)["grpc-status"], "8");
    }
}

/// Our client and server in zstd: per call, and per message with the handle telling the
/// client what the server announced and accepts.
#[tokio::test]
async fn zstd_per_call_and_per_message_between_our_client_and_server() {
    let (_running, addr) = serve(Probe::default()).await;
    let c = client(&addr);
    let mut r = req("compressed?");
    r.repeat = Some(2);
    let seen = MessageCompression::new(Compression::Zstd);
    let res = c
        .ping_pong_with(r, CallOptions::new().extension(seen.clone()))
        .await
        .unwrap();
    assert_eq!(res.get_ref().message, "true", "the request arrived in zstd");
    assert_eq!(seen.peer_encoding(), Compression::Zstd);
    assert!(seen.peer_accepts(Compression::Zstd) && seen.peer_accepts(Compression::Gzip));
    assert!(
        seen.last_received_compressed(),
        "the response came back in zstd"
    );
    // Per message: zstd, plain, zstd.
    let per = MessageCompression::new(Compression::Zstd);
    let mut call = c
        .echo_client_with(CallOptions::new().extension(per.clone()))
        .await
        .unwrap();
    for (i, mode) in [Compression::Zstd, Compression::Identity, Compression::Zstd]
        .into_iter()
        .enumerate()
    {
        per.set_send(mode);
        call.send(req(&format!("m{i}"))).await.unwrap();
    }
    assert_eq!(call.close_and_recv().await.unwrap().message, "1,0,1");
    // Per call, from the client's config.
    let cfg = GrpcClientConfig::default().send_compression(Compression::Zstd);
    let c = TestServiceClient::new(Client::new(GrpcClient::with_config(addr.clone(), cfg)));
    assert_eq!(
        c.ping_pong(req("compressed?")).await.unwrap().message,
        "true"
    );
}

/// A peer that answers with plain HTTP: the client maps the HTTP status per
/// `http-grpc-status-mapping.md`.
#[tokio::test]
async fn http_statuses_of_non_grpc_peers_are_mapped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = Address::from(listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let code: u16 = req.headers()["x-answer"].to_str().unwrap().parse().unwrap();
                    let res = http::Response::builder()
                        .status(code)
                        .header("content-type", "text/html")
                        .body(())
                        .unwrap();
                    let _ = respond.send_response(res, true);
                }
            });
        }
    });
    let c = client(&addr);
    for (http, code) in [
        (400, Code::Internal),
        (401, Code::Unauthenticated),
        (403, Code::PermissionDenied),
        (404, Code::Unimplemented),
        (429, Code::Unavailable),
        (502, Code::Unavailable),
        (503, Code::Unavailable),
        (504, Code::Unavailable),
        (500, Code::Unknown),
        (200, Code::Internal), // 200 but not gRPC
    ] {
        let opts = CallOptions::new().metadata("x-answer", http.to_string());
        let e = c.ping_pong_with(req("?"), opts).await.unwrap_err();
        assert_eq!(e.code(), code, "HTTP {http}: {e:?}");
    }
}

/// Graceful shutdown: GOAWAY, the open stream goes on to its end, then the connection closes
/// (well before the grace period is over).
#[tokio::test]
async fn graceful_shutdown_lets_open_streams_finish() {
    let running = Listener::new(examples::server())
        .protocol(GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .start();
    let addr = running.local_addrs()[0].clone();
    let c = client(&addr);
    let mut call = c.echo().await.unwrap();
    call.send(req("a")).await.unwrap();
    assert_eq!(call.recv().await.unwrap().unwrap().message, "a");
    let started = Instant::now();
    let shutdown = tokio::spawn(running.shutdown(Duration::from_secs(20)));
    // The stream keeps working while the server drains.
    call.send(req("b")).await.unwrap();
    assert_eq!(call.recv().await.unwrap().unwrap().message, "b");
    call.close_send().unwrap();
    assert!(call.recv().await.unwrap().is_none());
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the drain ended with the last stream, not with the grace period"
    );
    // New calls find no server.
    let e = c.ping_pong(req("late")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

/// Keepalive: a peer that stops answering (its HTTP/2 connection is never polled again after
/// the handshake) is detected by an unanswered PING, and the call on it fails.
#[tokio::test]
async fn keepalive_detects_a_dead_peer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = Address::from(listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut frozen = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            if let Ok(conn) = h2::server::handshake(sock).await {
                frozen.push(conn); // never polled again
            }
        }
    });
    let cfg = GrpcClientConfig::default()
        .connections(1)
        .keepalive(Duration::from_millis(200), Duration::from_millis(300));
    let c = TestServiceClient::new(Client::new(GrpcClient::with_config(addr, cfg)));
    let started = Instant::now();
    let e = tokio::time::timeout(WAIT, c.ping_pong(req("anyone?")))
        .await
        .expect("keepalive ends the call")
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// `ServerLimits::idle_timeout`: a connection with no stream for that long gets GOAWAY and is
/// closed; one with a stream open is left alone.
#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = Server::builder()
        .limits(rpc_core::ServerLimits::default().idle_timeout(Some(Duration::from_millis(300))))
        .add_service(TestServiceServer::new(Probe::default()))
        .build();
    let running = Listener::new(server)
        .protocol(GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .start();
    let addr = running.local_addrs()[0].clone();
    let sock = tokio::net::TcpStream::connect(addr.socket_addr().unwrap())
        .await
        .unwrap();
    let (mut send, conn) = h2::client::handshake(sock).await.unwrap();
    let closed = tokio::spawn(conn);
    // One call, then silence.
    let req = http::Request::builder()
        .method("POST")
        .uri("http://localhost/echo.TestService/PingPong")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let (res, mut body) = send.send_request(req, false).unwrap();
    body.send_data(Bytes::from(prefixed(&req_msg("idle"))), true)
        .unwrap();
    assert_eq!(res.await.unwrap().status(), 200);
    let started = Instant::now();
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(200));
}

fn req_msg(m: &str) -> Vec<u8> {
    req(m).encode_to_vec()
}

/// `ServerLimits::max_buffered_bytes` covers partly received messages: many streams each
/// trickling a large message cannot make the server hold more than the budget (plus a small
/// reserve per stream); the streams above their reserve fail with RESOURCE_EXHAUSTED while a
/// small call still works.
#[tokio::test]
async fn partial_messages_are_charged_to_the_server_budget() {
    const BUDGET: usize = 4 << 20;
    let server = Server::builder()
        .limits(rpc_core::ServerLimits::default().max_buffered_bytes(BUDGET))
        .add_service(TestServiceServer::new(Probe::default()))
        .build();
    let budget = server.byte_budget().clone();
    let running = Listener::new(server)
        .protocol(GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .start();
    let addr = running.local_addrs()[0].clone();
    let raw = RawClient::connect(&addr).await;
    let mut streams = Vec::new();
    let mut responses = Vec::new();
    for _ in 0..16 {
        let req = http::Request::builder()
            .method("POST")
            .uri("http://localhost/echo.TestService/EchoClient")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let mut send = raw.send.clone().ready().await.unwrap();
        let (res, mut body) = send.send_request(req, false).unwrap();
        // A prefix claiming 4 MiB, then 1 MiB of it (one stream window), never the rest.
        let mut chunk = vec![0u8, 0, 0x40, 0, 0];
        chunk.resize(1 << 20, b'x');
        body.send_data(Bytes::from(chunk), false).unwrap();
        streams.push(body);
        responses.push(res);
    }
    // The streams under budget wait for the rest of their message (never sent); the others
    // answer RESOURCE_EXHAUSTED. A waiting handler has sent its response header (the server
    // core's header rule), so the bound covers the whole answer, header and end.
    let answers = futures::future::join_all(responses.into_iter().map(|res| {
        tokio::time::timeout(Duration::from_millis(1500), async move {
            let (parts, mut body) = res.await.ok()?.into_parts();
            Some(match parts.headers.get("grpc-status") {
                Some(s) => s.clone(),
                None => {
                    while body.data().await.is_some() {}
                    body.trailers().await.ok()??["grpc-status"].clone()
                }
            })
        })
    }))
    .await;
    let answers: Vec<_> = answers.into_iter().map(|a| a.ok().flatten()).collect();
    let exhausted = answers.iter().flatten().filter(|s| *s == "8").count();
    assert!(
        budget.used() <= BUDGET + 16 * (128 << 10),
        "{} bytes held",
        budget.used()
    );
    assert!(exhausted >= 8, "only {exhausted} streams were cut");
    let c = client(&addr);
    assert_eq!(c.ping_pong(req("small")).await.unwrap().message, "small");
    drop(streams);
}

/// A handler's burst of messages reaches the wire in few DATA frames (the transport hands a
/// stream's messages sent within one scheduler round to h2 as one payload), every frame
/// within HTTP/2's default maximum frame size, and every message intact and in order; a
/// lone reply still comes back at once.
#[tokio::test]
async fn a_burst_of_messages_is_coalesced_into_few_data_frames() {
    const MESSAGES: i32 = 400;
    let (_running, addr) = serve(Probe::default()).await;
    let mut h = RawClient::connect(&addr).await;
    let b = http::Request::builder()
        .method("POST")
        .uri("http://localhost/echo.TestService/EchoServer")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    let mut send = h.send.clone().ready().await.unwrap();
    let (res, mut stream) = send.send_request(b.body(()).unwrap(), false).unwrap();
    let body = prefixed(
        &Request {
            message: "x".repeat(100),
            repeat: Some(MESSAGES),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    stream.send_data(Bytes::from(body), true).unwrap();
    let res = tokio::time::timeout(WAIT, res).await.unwrap().unwrap();
    let mut recv = res.into_body();
    let mut frames = 0usize;
    let mut data = BytesMut::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, recv.data()).await.unwrap() {
        let chunk = chunk.unwrap();
        assert!(
            chunk.len() <= 16 * 1024,
            "a DATA frame of {} bytes",
            chunk.len()
        );
        let _ = recv.flow_control().release_capacity(chunk.len());
        frames += 1;
        data.put(chunk);
    }
    let trailers = recv.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    let mut data = data.freeze();
    for i in 0..MESSAGES {
        assert_eq!(data[0], 0, "message {i} is not compressed");
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let res = Response::decode(&data[5..5 + len]).unwrap();
        assert_eq!((res.message.len(), res.index), (100, Some(i)));
        data = data.slice(5 + len..);
    }
    assert!(data.is_empty());
    // About 44 KiB of messages: one frame each before, now a few (16 KiB each at most).
    assert!(frames <= 20, "{MESSAGES} messages in {frames} DATA frames");

    let started = Instant::now();
    let (_, data, _) = h
        .call(
            "/echo.TestService/PingPong",
            &[],
            &prefixed(&req("lone").encode_to_vec()),
        )
        .await;
    assert_eq!(Response::decode(&data[5..]).unwrap().message, "lone");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// The client side of the same: a burst of messages on a bidi stream reaches a raw h2 server
/// that reads nothing until END_STREAM in few DATA frames, intact and in order, the last
/// one carrying END_STREAM after `close_send`.
#[tokio::test]
async fn a_client_burst_is_coalesced_into_few_data_frames() {
    const MESSAGES: usize = 400;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: Address = format!("tcp://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(sock).await.unwrap();
        let (req, mut respond) = conn.accept().await.unwrap().unwrap();
        tokio::spawn(async move { while conn.accept().await.is_some() {} });
        let mut body = req.into_body();
        let (mut frames, mut data) = (0usize, BytesMut::new());
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            frames += 1;
            data.put(chunk);
        }
        let mut res = http::Response::new(());
        res.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        let mut send = respond.send_response(res, false).unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        send.send_trailers(trailers).unwrap();
        let _ = got_tx.send((frames, data.freeze()));
    });
    let c = client(&addr);
    let mut call = tokio::time::timeout(WAIT, c.echo()).await.unwrap().unwrap();
    for i in 0..MESSAGES {
        call.send(Request {
            message: "x".repeat(100),
            repeat: Some(i as i32),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    call.close_send().unwrap();
    let (frames, mut data) = tokio::time::timeout(WAIT, got_rx).await.unwrap().unwrap();
    for i in 0..MESSAGES {
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let m = Request::decode(&data[5..5 + len]).unwrap();
        assert_eq!((m.message.len(), m.repeat), (100, Some(i as i32)));
        data = data.slice(5 + len..);
    }
    assert!(data.is_empty());
    assert!(frames <= 20, "{MESSAGES} messages in {frames} DATA frames");
}

/// A raw HTTP/2 peer that ends the first `refuse` requests with `reset` and answers the rest
/// with a gRPC response echoing `message`; counts the requests it received.
async fn resetting_peer(refuse: usize, reset: h2::Reason) -> (Address, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = Address::from(listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let seen = counter.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let mut body = req.into_body();
                    // The whole request first: it was read, so the server may have acted on it.
                    while let Some(Ok(_)) = body.data().await {}
                    if n < refuse {
                        respond.send_reset(reset);
                        continue;
                    }
                    let res = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    let mut out = respond.send_response(res, false).unwrap();
                    let msg = Response {
                        message: "pong".into(),
                        ..Default::default()
                    }
                    .encode_to_vec();
                    let mut frame = BytesMut::new();
                    frame.put_u8(0);
                    frame.put_u32(msg.len() as u32);
                    frame.put_slice(&msg);
                    let _ = out.send_data(frame.freeze(), false);
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let _ = out.send_trailers(trailers);
                }
            });
        }
    });
    (addr, seen)
}

/// gRPC's transparent retry: a stream the server reset with `REFUSED_STREAM` (RFC 9113
/// §8.7: closed before any processing) is sent again, invisibly to the caller.
#[tokio::test]
async fn a_refused_stream_is_sent_again() {
    let (addr, seen) = resetting_peer(2, h2::Reason::REFUSED_STREAM).await;
    let c = client(&addr);
    let res = tokio::time::timeout(WAIT, c.ping_pong(req("ping")))
        .await
        .expect("the call ends")
        .expect("sent again after two refusals");
    assert_eq!(res.message, "pong");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

/// A stream the server may have processed is never sent again: reset (after it read the
/// request) with any reason but `REFUSED_STREAM`.
#[tokio::test]
async fn a_stream_reset_after_processing_is_not_sent_again() {
    for reason in [
        h2::Reason::INTERNAL_ERROR,
        h2::Reason::CANCEL,
        h2::Reason::NO_ERROR,
        h2::Reason::ENHANCE_YOUR_CALM,
    ] {
        let (addr, seen) = resetting_peer(1, reason).await;
        let c = client(&addr);
        let e = tokio::time::timeout(WAIT, c.ping_pong(req("ping")))
            .await
            .expect("the call ends")
            .expect_err("not sent again");
        assert_eq!(seen.load(Ordering::SeqCst), 1, "{reason:?}: {e:?}");
    }
}

/// Refusals are bounded: a server that refuses every stream fails the call after a few
/// attempts.
#[tokio::test]
async fn refusals_are_retried_a_bounded_number_of_times() {
    let (addr, seen) = resetting_peer(usize::MAX, h2::Reason::REFUSED_STREAM).await;
    let c = client(&addr);
    let e = tokio::time::timeout(WAIT, c.ping_pong(req("ping")))
        .await
        .expect("the call ends")
        .expect_err("refused every time");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        4,
        "one attempt and three retries"
    );
}
