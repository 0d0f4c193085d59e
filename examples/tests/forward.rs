//! Generic (IDL-less) streaming and the `echo-server --forward` proxy, through real sockets.
//!
//! * A generic client (payload bytes) against the typed echo server, and typed clients against
//!   a generic server (the relay), all four modes, over every transport.
//! * client → proxy → backend over TCP with TTHeader and gRPC on each leg: every mode of both
//!   IDLs; request metadata and the remaining deadline downstream, header and trailer metadata
//!   and the status back; cancel and deadline reach the backend; an unknown method comes back
//!   as the backend's `UNIMPLEMENTED`.
//! * The binaries: `echo-client` → `echo-server --forward` → `echo-server`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use examples::check;
use examples::idl::{PingPongError, Proto, Thrift};
use examples::transport::Transport;
use examples::{EchoIdl, EchoRequest};
use rpc_core::codec::encode_to_bytes;
use rpc_core::generic::GenericClient;
use rpc_core::inproc::InProcTransport;
use rpc_core::serve::{Listener, Running};
use rpc_core::transport::BoxFuture;
use rpc_core::{
    Address, CallOptions, Client, Code, IncomingCall, Metadata, PayloadKind, ProstCodec, Server,
    ServerContext, Status, ThriftCodec,
};
use rpc_transport_grpc::{GrpcClient, GrpcProtocol};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};
use tokio::sync::mpsc;

/// Bound on every wait: a hang fails the test instead of stalling it.
const WAIT: Duration = Duration::from_secs(10);

/// Which protocol a leg speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    TtHeader,
    Grpc,
}

fn client_for(wire: Wire, addr: &Address) -> Client {
    match wire {
        Wire::TtHeader => Client::new(TtHeaderClient::new(addr.clone())),
        Wire::Grpc => Client::new(GrpcClient::new(addr.clone())),
    }
}

/// As [`client_for`], appending `name` to the cancel path (`ttscp`) of the calls it makes.
fn named_client_for(wire: Wire, addr: &Address, name: &str) -> Client {
    match wire {
        Wire::TtHeader => Client::builder(TtHeaderClient::new(addr.clone())),
        Wire::Grpc => Client::builder(GrpcClient::new(addr.clone())),
    }
    .from_service(name)
    .build()
}

async fn listen(server: Server) -> Running {
    Listener::new(server)
        .protocol(TtHeaderProtocol::default())
        .protocol(GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind")
        .start()
}

/// What the backend saw of one call.
#[derive(Debug, Clone)]
struct Seen {
    path: &'static str,
    metadata: Metadata,
    time_left: Option<Duration>,
}

/// The backend (the echo service, both IDLs, on TTHeader and gRPC), a proxy relaying to it
/// over `down`, and what the backend observed.
struct Chain {
    backend: Server,
    proxy: Server,
    proxy_addr: Address,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Notified (one permit) each time a call reaches the backend.
    arrived: Arc<tokio::sync::Notify>,
    /// How each backend handler that asked to be watched (`x-watch-cancel`) ended.
    cancels: mpsc::Receiver<(&'static str, Result<(), Status>)>,
    _running: (Running, Running),
}

/// A server layer that reports how each watched handler ended (its outcome is the reason a
/// cancel or deadline stopped it, however the handler learnt of it: `cancelled()`, or a
/// `recv` that failed).
#[derive(Clone)]
struct Outcomes<S> {
    inner: S,
    tx: mpsc::Sender<(&'static str, Result<(), Status>)>,
}

impl<S> tower::Service<IncomingCall> for Outcomes<S>
where
    S: tower::Service<IncomingCall, Response = (), Error = Status>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Status;
    type Future = BoxFuture<'static, Result<(), Status>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: IncomingCall) -> Self::Future {
        let path = call.context().method().path;
        let watched = call.context().metadata().contains_key("x-watch-cancel");
        let handler = self.inner.call(call);
        let tx = self.tx.clone();
        Box::pin(async move {
            let outcome = handler.await;
            if watched {
                let _ = tx.try_send((path, outcome.clone()));
            }
            outcome
        })
    }
}

async fn chain(down: Wire) -> Chain {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (cancel_tx, cancels) = mpsc::channel(16);
    let record = seen.clone();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let arrival = arrived.clone();
    let backend = Server::builder()
        .add_service(examples::thrift::TestServiceServer::new(examples::Echo))
        .add_service(examples::proto::TestServiceServer::new(examples::Echo))
        .interceptor(move |ctx: &ServerContext| {
            record.lock().unwrap().push(Seen {
                path: ctx.method().path,
                metadata: ctx.metadata().clone(),
                time_left: ctx.call().timeout(),
            });
            ctx.set_header("x-backend-header", "h")?;
            ctx.set_trailer("x-backend-trailer", "t");
            arrival.notify_one();
            Ok(())
        })
        .layer(tower::layer::layer_fn(move |inner| Outcomes {
            inner,
            tx: cancel_tx.clone(),
        }))
        .build();
    let backend_running = listen(backend.clone()).await;
    let backend_addr = backend_running.local_addrs()[0].clone();
    let proxy = examples::forward::server(
        client_for(down, &backend_addr),
        rpc_core::ServerLimits::default(),
    );
    let proxy_running = listen(proxy.clone()).await;
    Chain {
        backend,
        proxy,
        proxy_addr: proxy_running.local_addrs()[0].clone(),
        seen,
        arrived,
        cancels,
        _running: (backend_running, proxy_running),
    }
}

impl Chain {
    fn last_seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the backend saw a call")
    }

    /// Waits until neither server runs a handler.
    async fn idle(&self) {
        tokio::time::timeout(WAIT, async {
            self.proxy.wait_idle().await;
            self.backend.wait_idle().await;
        })
        .await
        .expect("handlers still running on the proxy or the backend");
    }
}

const WIRES: [Wire; 2] = [Wire::TtHeader, Wire::Grpc];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_of_both_idls_passes_through_the_proxy_on_every_pair_of_protocols() {
    for down in WIRES {
        let chain = chain(down).await;
        for up in WIRES {
            let client = client_for(up, &chain.proxy_addr);
            for (mode, outcome) in check::run_all::<Thrift>(&Thrift::client(client.clone())).await {
                assert!(
                    outcome.result.is_ok(),
                    "thrift {mode} {up:?}→{down:?}: {outcome:?}"
                );
            }
            for (mode, outcome) in check::run_all::<Proto>(&Proto::client(client)).await {
                assert!(
                    outcome.result.is_ok(),
                    "proto {mode} {up:?}→{down:?}: {outcome:?}"
                );
            }
        }
        chain.idle().await;
    }
}

fn req(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..EchoRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_deadline_and_status_cross_the_proxy_both_ways() {
    for wire in WIRES {
        let chain = chain(wire).await;
        let client = client_for(wire, &chain.proxy_addr);
        let opts = || {
            CallOptions::new()
                .metadata("x-request", "from-client")
                .timeout(Duration::from_secs(30))
        };

        // Pingpong (thrift: a Thrift CALL over TTHeader unary when the wire is TTHeader).
        let thrift = Thrift::client(client.clone());
        let res = thrift
            .ping_pong_with(examples::thrift::Request::from(req("hi")), opts())
            .await
            .expect("pingpong through the proxy");
        assert_eq!(
            res.header().get_str("x-backend-header"),
            Some("h"),
            "{wire:?}"
        );
        assert_eq!(
            res.trailer().get_str("x-backend-trailer"),
            Some("t"),
            "{wire:?}"
        );
        // TTHeader unary carries one map: nothing comes back twice.
        assert_eq!(res.header().get_all("x-backend-header").count(), 1);
        assert_eq!(res.trailer().get_all("x-backend-trailer").count(), 1);
        let seen = chain.last_seen();
        assert_eq!(seen.path, "/echo.TestService/PingPong");
        assert_eq!(seen.metadata.get_str("x-request"), Some("from-client"));
        let left = seen.time_left.expect("the deadline reached the backend");
        assert!(
            left <= Duration::from_secs(30) && left > Duration::from_secs(20),
            "{left:?}"
        );

        // Bidi: header before the first response, trailer after the end.
        let proto = Proto::client(client.clone());
        let mut call = Proto::echo(&proto, opts()).await.unwrap();
        call.send(req("one").into()).await.unwrap();
        let header = tokio::time::timeout(WAIT, call.header())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(header.get_str("x-backend-header"), Some("h"), "{wire:?}");
        call.close_send().unwrap();
        let first = call.recv().await.unwrap().expect("a response");
        assert_eq!(first.message, "one");
        assert!(call.recv().await.unwrap().is_none());
        assert_eq!(
            call.trailer().unwrap().get_str("x-backend-trailer"),
            Some("t")
        );
        let seen = chain.last_seen();
        assert_eq!(seen.path, "/echo.TestService/Echo");
        assert_eq!(seen.metadata.get_str("x-request"), Some("from-client"));
        assert!(seen.time_left.is_some());

        // An error status: code, message and trailer metadata from the backend.
        let mut call = Proto::echo(&proto, opts()).await.unwrap();
        let mut failing = req("x");
        failing.fail = Some("boom from the backend".into());
        call.send(failing.into()).await.unwrap();
        call.close_send().unwrap();
        let err = tokio::time::timeout(WAIT, call.recv())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), Code::Unknown, "{wire:?}: {err:?}");
        assert_eq!(err.message(), "boom from the backend");
        assert_eq!(
            err.metadata().get_str("x-backend-trailer"),
            Some("t"),
            "{err:?}"
        );

        // Thrift's declared exception is payload (the Result struct): relayed as it is.
        let mut declared = req("x");
        declared.fail = Some(format!("{}bad input", examples::DECLARED_PREFIX));
        match Thrift::ping_pong(&thrift, declared, CallOptions::new()).await {
            Err(PingPongError::Declared(reason)) => {
                assert_eq!(reason, format!("{}bad input", examples::DECLARED_PREFIX))
            }
            other => panic!("{wire:?}: expected the declared exception, got {other:?}"),
        }
        chain.idle().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_backend_through_the_proxy() {
    for wire in WIRES {
        let mut chain = chain(wire).await;
        let proto = Proto::client(client_for(wire, &chain.proxy_addr));
        let mut call = Proto::echo(&proto, CallOptions::new().metadata("x-watch-cancel", "1"))
            .await
            .unwrap();
        let mut slow = req("slow");
        slow.sleep_ms = Some(60_000);
        call.send(slow.into()).await.unwrap();
        tokio::time::timeout(WAIT, chain.arrived.notified())
            .await
            .expect("the call did not reach the backend");
        let cancelled_at = tokio::time::Instant::now();
        call.cancel();
        let (path, why) = tokio::time::timeout(WAIT, chain.cancels.recv())
            .await
            .expect("the backend's handler was not cancelled")
            .unwrap();
        assert_eq!(path, "/echo.TestService/Echo");
        let why = why.expect_err("the backend's handler ended early");
        assert_eq!(why.code(), Code::Cancelled, "{wire:?}: {why:?}");
        eprintln!(
            "{wire:?}: cancel reached the backend in {:?}",
            cancelled_at.elapsed()
        );
        chain.idle().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_reaches_the_backend_through_the_proxy() {
    for wire in WIRES {
        let mut chain = chain(wire).await;
        let client = client_for(wire, &chain.proxy_addr);
        let mut slow = req("slow");
        slow.sleep_ms = Some(60_000);
        let opts = CallOptions::new()
            .metadata("x-watch-cancel", "1")
            .timeout(Duration::from_millis(300));
        let err =
            tokio::time::timeout(WAIT, Thrift::ping_pong(&Thrift::client(client), slow, opts))
                .await
                .expect("the deadline did not end the call");
        match err {
            Err(PingPongError::Status(s)) => {
                assert_eq!(s.code(), Code::DeadlineExceeded, "{wire:?}: {s:?}")
            }
            other => panic!("{wire:?}: expected DEADLINE_EXCEEDED, got {other:?}"),
        }
        let seen = chain.last_seen();
        let left = seen.time_left.expect("the deadline reached the backend");
        assert!(left <= Duration::from_millis(300), "{left:?}");
        let (_, why) = tokio::time::timeout(WAIT, chain.cancels.recv())
            .await
            .expect("the backend's handler did not stop at the deadline")
            .unwrap();
        let why = why.expect_err("the backend's handler ended early");
        // The backend's own deadline, or the proxy's client giving up at the same moment:
        // a reset, or for TTHeader unary (no cancel frame) the connection it closes.
        let ok = match wire {
            Wire::Grpc => matches!(why.code(), Code::DeadlineExceeded | Code::Cancelled),
            Wire::TtHeader => matches!(
                why.code(),
                Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable
            ),
        };
        assert!(ok, "{wire:?}: {why:?}");
        chain.idle().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_method_comes_back_as_the_backends_status() {
    for wire in WIRES {
        let chain = chain(wire).await;
        let client = client_for(wire, &chain.proxy_addr);
        for payload in [PayloadKind::Thrift, PayloadKind::Protobuf] {
            for service in ["echo.TestService", "nope.Missing"] {
                let generic = GenericClient::new(client.clone(), service, payload);
                let err = tokio::time::timeout(
                    WAIT,
                    generic.unary("Nope", Bytes::from_static(b"\0"), CallOptions::new()),
                )
                .await
                .unwrap()
                .unwrap_err();
                assert_eq!(
                    err.code(),
                    Code::Unimplemented,
                    "{wire:?} {service}: {err:?}"
                );
                let mut call = generic.bidi("Nope", CallOptions::new()).await.unwrap();
                let err = tokio::time::timeout(WAIT, call.recv())
                    .await
                    .unwrap()
                    .unwrap_err();
                assert_eq!(
                    err.code(),
                    Code::Unimplemented,
                    "{wire:?} {service}: {err:?}"
                );
                assert!(
                    err.message().contains("Nope") || err.message().contains("Missing"),
                    "the backend's message names the method or service: {err:?}"
                );
            }
        }
        assert!(
            chain.seen.lock().unwrap().is_empty(),
            "no backend handler ran"
        );
        chain.idle().await;
    }
}

/// `echo.TestService` methods as generic descriptors see them.
const SERVICE: &str = "echo.TestService";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_clients_and_handlers_work_in_every_mode_over_every_transport() {
    for &transport in Transport::ALL {
        // Typed clients → a generic server (the relay) → the typed echo server.
        let backend = Client::new(InProcTransport::new(examples::server()));
        let relay = examples::forward::server(backend, rpc_core::ServerLimits::default());
        let client = transport.connect(relay).await.unwrap();
        for (mode, outcome) in check::run_all::<Thrift>(&Thrift::client(client.clone())).await {
            assert!(
                outcome.result.is_ok(),
                "thrift {mode} over {transport}: {outcome:?}"
            );
        }
        for (mode, outcome) in check::run_all::<Proto>(&Proto::client(client)).await {
            assert!(
                outcome.result.is_ok(),
                "proto {mode} over {transport}: {outcome:?}"
            );
        }

        // A generic client (payload bytes) → the typed echo server.
        let client = transport.connect(examples::server()).await.unwrap();
        let proto = GenericClient::new(client.clone(), SERVICE, PayloadKind::Protobuf);
        let encode = |m: &str| {
            encode_to_bytes::<ProstCodec, _>(&examples::proto::Request::from(req(m))).unwrap()
        };
        let decode = |b: Bytes| -> examples::EchoResponse {
            <ProstCodec as rpc_core::Codec<examples::proto::Response>>::decode(b)
                .map(Into::into)
                .unwrap()
        };
        let res = proto
            .unary("PingPong", encode("p"), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(decode(res.into_inner()).message, "p", "{transport}");
        let mut cs = proto
            .client_streaming("EchoClient", CallOptions::new())
            .await
            .unwrap();
        cs.send(encode("a")).await.unwrap();
        cs.send(encode("b")).await.unwrap();
        let all = decode(cs.close_and_recv().await.unwrap());
        assert_eq!(
            (all.message.as_str(), all.index),
            ("ab", Some(2)),
            "{transport}"
        );
        let mut ss = proto
            .server_streaming("EchoServer", encode("s"), CallOptions::new())
            .await
            .unwrap();
        let mut n = 0;
        while let Some(b) = ss.recv().await.unwrap() {
            assert_eq!(decode(b).message, "s");
            n += 1;
        }
        assert_eq!(n, examples::DEFAULT_REPEAT, "{transport}");
        let mut bidi = proto.bidi("Echo", CallOptions::new()).await.unwrap();
        for m in ["x", "y"] {
            bidi.send(encode(m)).await.unwrap();
            assert_eq!(
                decode(bidi.recv().await.unwrap().unwrap()).message,
                m,
                "{transport}"
            );
        }
        bidi.close_send().unwrap();
        assert!(bidi.recv().await.unwrap().is_none());

        // Thrift: pingpong bytes are the args and result structs.
        let thrift = GenericClient::new(client, SERVICE, PayloadKind::Thrift);
        let args = examples::thrift::TestServicePingPongArgs {
            req: examples::thrift::Request::from(req("t")),
        };
        let res = thrift
            .unary(
                "PingPong",
                encode_to_bytes::<ThriftCodec, _>(&args).unwrap(),
                CallOptions::new(),
            )
            .await
            .unwrap();
        let result = <ThriftCodec as rpc_core::Codec<
            examples::thrift::TestServicePingPongResult,
        >>::decode(res.into_inner())
        .unwrap();
        assert_eq!(result.success.expect("success").message, "t", "{transport}");
        let mut bidi = thrift.bidi("Echo", CallOptions::new()).await.unwrap();
        let request = examples::thrift::Request::from(req("tb"));
        bidi.send(encode_to_bytes::<ThriftCodec, _>(&request).unwrap())
            .await
            .unwrap();
        bidi.close_send().unwrap();
        let got: examples::thrift::Response =
            <ThriftCodec as rpc_core::Codec<examples::thrift::Response>>::decode(
                bidi.recv().await.unwrap().unwrap(),
            )
            .map_err(|e: Status| e)
            .unwrap();
        assert_eq!(got.message, "tb", "{transport}");
        assert!(bidi.recv().await.unwrap().is_none());
    }
}

/// `echo-client` → `echo-server --forward URL --protocol P` → `echo-server`, as separate
/// processes: every mode of both IDLs over both protocols, then both servers stop on SIGTERM.
#[test]
fn echo_client_passes_through_echo_server_forward() {
    let (mut backend, urls, backend_lines) =
        support::spawn_echo_server(&["--listen", "tcp://127.0.0.1:0"], 1);
    for protocol in ["ttheader", "grpc"] {
        let (mut proxy, proxy_urls, proxy_lines) = support::spawn_echo_server(
            &[
                "--listen",
                "tcp://127.0.0.1:0",
                "--forward",
                &urls[0],
                "--protocol",
                protocol,
            ],
            1,
        );
        for idl in ["thrift", "proto"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_echo-client"))
                .args(["--connect", &proxy_urls[0], "--idl", idl, "--mode", "all"])
                .args(["--protocol", protocol])
                .output()
                .expect("run echo-client");
            assert!(
                out.status.success(),
                "{idl} through --forward --protocol {protocol}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        stop(&mut proxy, &proxy_lines);
    }
    stop(&mut backend, &backend_lines);
}

/// SIGTERM, then waits (bounded) for the server's `stopped` line and its exit status.
fn stop(child: &mut std::process::Child, lines: &std::sync::mpsc::Receiver<String>) {
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    loop {
        let line = lines
            .recv_timeout(WAIT)
            .expect("echo-server did not stop on SIGTERM");
        if line == "stopped" {
            break;
        }
    }
    let status = child.wait().expect("echo-server exit status");
    assert!(status.success(), "echo-server exited with {status}");
}

/// How each watched handler of one hop ended, and when.
type Ended = (&'static str, tokio::time::Instant, Result<(), Status>);

/// A server layer that reports when each watched handler (`x-watch-cancel`) of hop `hop`
/// ended and how.
#[derive(Clone)]
struct HopEnds<S> {
    inner: S,
    hop: &'static str,
    tx: mpsc::Sender<Ended>,
}

impl<S> tower::Service<IncomingCall> for HopEnds<S>
where
    S: tower::Service<IncomingCall, Response = (), Error = Status>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Status;
    type Future = BoxFuture<'static, Result<(), Status>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: IncomingCall) -> Self::Future {
        let watched = call.context().metadata().contains_key("x-watch-cancel");
        let handler = self.inner.call(call);
        let (tx, hop) = (self.tx.clone(), self.hop);
        Box::pin(async move {
            let outcome = handler.await;
            if watched {
                let _ = tx.try_send((hop, tokio::time::Instant::now(), outcome.clone()));
            }
            outcome
        })
    }
}

/// client → proxy A → proxy B → backend: a client's cancel ends the handler of every hop,
/// and every server is idle again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_ends_every_hop_of_a_three_hop_chain() {
    for wire in WIRES {
        let (tx, mut ended) = mpsc::channel(16);
        let hop = |name: &'static str, to: &Address| {
            let tx = tx.clone();
            Server::builder()
                .layer(tower::layer::layer_fn(move |inner| HopEnds {
                    inner,
                    hop: name,
                    tx: tx.clone(),
                }))
                .unknown_method_handler(examples::forward::Forward::new(named_client_for(
                    wire, to, name,
                )))
                .build()
        };
        let backend = Server::builder()
            .add_service(examples::proto::TestServiceServer::new(examples::Echo))
            .layer(tower::layer::layer_fn({
                let tx = tx.clone();
                move |inner| HopEnds {
                    inner,
                    hop: "backend",
                    tx: tx.clone(),
                }
            }))
            .build();
        let backend_running = listen(backend.clone()).await;
        let b = hop("proxy B", &backend_running.local_addrs()[0]);
        let b_running = listen(b.clone()).await;
        let a = hop("proxy A", &b_running.local_addrs()[0]);
        let a_running = listen(a.clone()).await;

        let proto = Proto::client(client_for(wire, &a_running.local_addrs()[0]));
        let mut call = Proto::echo(&proto, CallOptions::new().metadata("x-watch-cancel", "1"))
            .await
            .unwrap();
        // A first echo proves every hop is up; the second request sleeps at the backend.
        call.send(req("first").into()).await.unwrap();
        tokio::time::timeout(WAIT, call.recv())
            .await
            .expect("no echo through three hops")
            .unwrap()
            .unwrap();
        let mut slow = req("slow");
        slow.sleep_ms = Some(60_000);
        call.send(slow.into()).await.unwrap();
        let cancelled_at = tokio::time::Instant::now();
        call.cancel();
        let mut timeline = Vec::new();
        for _ in 0..3 {
            let (hop, at, outcome) = tokio::time::timeout(WAIT, ended.recv())
                .await
                .expect("a hop's handler did not end after the cancel")
                .unwrap();
            let why = outcome.expect_err("a hop ended cleanly after a cancel");
            assert!(
                matches!(why.code(), Code::Cancelled),
                "{wire:?} {hop}: {why:?}"
            );
            // ttstream carries the cancel path (Kitex's `ttscp`): the backend's reason names
            // both forwarders, in order. (RST_STREAM carries only a code: over gRPC the
            // backend learns "cancelled upstream" without the path.)
            if hop == "backend" && wire == Wire::TtHeader {
                let path = why.cancellation().map(|c| c.path().to_owned());
                assert_eq!(
                    path.as_deref(),
                    Some("proxy A,proxy B"),
                    "{wire:?} backend: {why:?}"
                );
            }
            timeline.push((hop, at - cancelled_at));
        }
        eprintln!("{wire:?}: cancel → handler end per hop: {timeline:?}");
        let mut hops: Vec<_> = timeline.iter().map(|(h, _)| *h).collect();
        hops.sort_unstable();
        assert_eq!(hops, ["backend", "proxy A", "proxy B"], "{wire:?}");
        for (hop, took) in &timeline {
            assert!(*took < Duration::from_secs(1), "{wire:?} {hop}: {took:?}");
        }
        tokio::time::timeout(WAIT, async {
            a.wait_idle().await;
            b.wait_idle().await;
            backend.wait_idle().await;
        })
        .await
        .expect("a hop still runs a handler");
        assert_eq!(
            (
                a.active_streams(),
                b.active_streams(),
                backend.active_streams()
            ),
            (0, 0, 0)
        );
        drop((a_running, b_running, backend_running));
    }
}
