//! The bounds of issue 7 that need a real connection but not a separate process: the
//! server-wide byte budget is released when calls and connections end, invalid ttstream frames
//! end only their stream, a stream over the cap is refused, and the plain unary pool has a
//! maximum and idles connections out. (The attacks against `echo-server` live in
//! `examples/tests/hostile.rs`.)

mod support;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpc_core::codec::encode_to_bytes;
use rpc_core::limits::ServerLimits;
use rpc_core::transport::ServerExt;
use rpc_core::{CallOptions, Client, Code, ThriftCodec};
use rpc_transport_ttheader::proto::keys::{int_key, kitex_code};
use rpc_transport_ttheader::proto::thrift_msg::decode_exception_message;
use rpc_transport_ttheader::proto::{FrameKind, Limits, Packet, StreamFrame, StreamProtocol};
use rpc_transport_ttheader::{TtHeaderClient, REFUSED_STREAM_CODE};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn server_with(limits: ServerLimits) -> (rpc_core::Server, Probe) {
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let gate = Gate::default();
    let server = rpc_core::Server::builder()
        .limits(limits)
        .add_service(PbService::new(tx.clone(), gate.clone()))
        .add_service(ThService::new(tx, gate.clone()))
        .build();
    (server, Probe { events, gate })
}

async fn serve(server: rpc_core::Server) -> Served {
    serve_tcp(
        server,
        "127.0.0.1:0".parse().unwrap(),
        rpc_transport_ttheader::Limits::default(),
    )
    .await
    .unwrap()
}

struct Peer {
    sock: TcpStream,
    buf: BytesMut,
}

impl Peer {
    async fn connect(h: &Served) -> Peer {
        Peer {
            sock: TcpStream::connect(h.local_addr().unwrap()).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    async fn send_packet(&mut self, p: Packet) {
        let mut b = BytesMut::new();
        p.encode(&mut b).unwrap();
        self.sock.write_all(&b).await.unwrap();
    }

    async fn send(&mut self, f: StreamFrame) {
        self.send_packet(Packet::from(f)).await;
    }

    async fn frame(&mut self) -> StreamFrame {
        within(async {
            loop {
                if let Some(f) = StreamFrame::decode(&mut self.buf, &Limits::default()).unwrap() {
                    return f;
                }
                let n = self.sock.read_buf(&mut self.buf).await.unwrap();
                assert!(n > 0, "connection closed");
            }
        })
        .await
    }
}

fn open(id: i32) -> StreamFrame {
    StreamFrame::client_header(id, "Chat", StreamProtocol::Thrift, "ThTest", [], None)
}

fn data(id: i32, text: &str, n: i64) -> StreamFrame {
    let body = encode_to_bytes::<ThriftCodec, TMsg>(&msg(text, n)).unwrap();
    StreamFrame::data(id, "Chat", StreamProtocol::Thrift, body)
}

/// `frame` with int key 27 replaced by `kind` (or removed).
fn with_frame_type(frame: StreamFrame, kind: Option<&'static [u8]>) -> Packet {
    let mut p = Packet::from(frame);
    p.headers.int_kvs.retain(|(k, _)| *k != int_key::FRAME_TYPE);
    if let Some(k) = kind {
        p.headers
            .push_int(int_key::FRAME_TYPE, Bytes::from_static(k));
    }
    p
}

fn exception_kind(f: &StreamFrame) -> i32 {
    decode_exception_message(&f.payload).unwrap().1.kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_frame_types_are_ignored_and_invalid_frames_end_only_their_stream() {
    let (server, _probe) = server_with(ServerLimits::default());
    let h = serve(server).await;
    let mut peer = Peer::connect(&h).await;
    peer.send(open(7)).await;
    peer.send(data(7, "a", 1)).await;
    assert_eq!(peer.frame().await.kind, FrameKind::Header);
    assert_eq!(peer.frame().await.kind, FrameKind::Data);

    // A frame type from a newer peer: ignored, on an open stream and on none.
    peer.send_packet(with_frame_type(data(7, "x", 0), Some(b"9")))
        .await;
    peer.send_packet(with_frame_type(data(42, "x", 0), Some(b"6")))
        .await;
    // Stream 7 still works.
    peer.send(data(7, "b", 2)).await;
    let d = peer.frame().await;
    assert_eq!((d.kind, d.stream_id), (FrameKind::Data, 7));

    // A frame without a frame type for no open stream, and a Header with stream id 0 (ids
    // are non-zero i32s, spec §3): ignored, no stream opens.
    peer.send_packet(with_frame_type(data(43, "x", 0), None))
        .await;
    peer.send(open(0)).await;
    // A negative id is a stream like any other (spec §3, a Kitex client's counter wraps
    // there): opened and served. Its handler waits for a request, so its header comes first.
    peer.send(open(-5)).await;
    let hdr = peer.frame().await;
    assert_eq!((hdr.kind, hdr.stream_id), (FrameKind::Header, -5));
    peer.send(data(-5, "n", 5)).await;
    let d = peer.frame().await;
    assert_eq!((d.kind, d.stream_id), (FrameKind::Data, -5));
    // One without a frame type on stream 7 ends stream 7 (illegal frame), not the connection.
    peer.send_packet(with_frame_type(data(7, "x", 0), None))
        .await;
    let t = peer.frame().await;
    assert_eq!((t.kind, t.stream_id), (FrameKind::Trailer, 7));
    assert_eq!(exception_kind(&t), kitex_code::ILLEGAL_FRAME);
    // Nor stream -5: it still echoes, and ends cleanly on its CloseSend.
    peer.send(data(-5, "m", 6)).await;
    let d = peer.frame().await;
    assert_eq!((d.kind, d.stream_id), (FrameKind::Data, -5));
    peer.send(StreamFrame::close_send(-5, "Chat", StreamProtocol::Thrift))
        .await;
    let t = peer.frame().await;
    assert_eq!((t.kind, t.stream_id), (FrameKind::Trailer, -5));
    assert!(t.payload.is_empty(), "a clean end");

    peer.send(open(3)).await;
    peer.send(data(3, "c", 3)).await;
    peer.send(StreamFrame::close_send(3, "Chat", StreamProtocol::Thrift))
        .await;
    let got: Vec<_> = [peer.frame().await, peer.frame().await, peer.frame().await]
        .iter()
        .map(|f| (f.kind, f.stream_id))
        .collect();
    assert_eq!(
        got,
        [
            (FrameKind::Header, 3),
            (FrameKind::Data, 3),
            (FrameKind::Trailer, 3)
        ]
    );
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_the_cap_is_refused_and_the_cap_frees_up() {
    let (server, _probe) = server_with(ServerLimits::default().max_concurrent_streams(2));
    let h = serve(server).await;
    let mut peer = Peer::connect(&h).await;
    for id in [1, 3] {
        peer.send(open(id)).await;
        peer.send(data(id, "a", 1)).await;
        assert_eq!(peer.frame().await.kind, FrameKind::Header);
        assert_eq!(peer.frame().await.kind, FrameKind::Data);
    }
    peer.send(open(5)).await;
    let hdr = peer.frame().await;
    let t = peer.frame().await;
    assert_eq!((hdr.kind, hdr.stream_id), (FrameKind::Header, 5));
    assert_eq!((t.kind, t.stream_id), (FrameKind::Trailer, 5));
    assert_eq!(exception_kind(&t), REFUSED_STREAM_CODE);

    // Stream 1 ends; a new stream is accepted again.
    peer.send(StreamFrame::close_send(1, "Chat", StreamProtocol::Thrift))
        .await;
    let t = peer.frame().await;
    assert_eq!((t.kind, t.stream_id), (FrameKind::Trailer, 1));
    assert!(t.payload.is_empty(), "a clean end");
    peer.send(open(7)).await;
    peer.send(data(7, "b", 2)).await;
    let hdr = peer.frame().await;
    let d = peer.frame().await;
    assert_eq!(
        (hdr.stream_id, d.kind, d.stream_id),
        (7, FrameKind::Data, 7)
    );
    h.shutdown(Duration::from_secs(1)).await;
}

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let ok = tokio::time::timeout(Duration::from_secs(10), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_charged_to_the_budget_is_released() {
    let (server, _probe) = server_with(ServerLimits::default());
    let budget = server.byte_budget().clone();
    let h = serve(server).await;
    let addr = h.local_addr().unwrap();
    for mode in [
        rpc_transport_ttheader::ConnectionMode::Pooled,
        rpc_transport_ttheader::ConnectionMode::Multiplexed,
    ] {
        let transport = TtHeaderClient::builder(addr).connection_mode(mode).build();
        let client = Client::new(transport);
        for i in 0..20 {
            let r = within(client.unary::<ThriftCodec, TMsg, TMsg>(
                &TH[0],
                msg("hi", i),
                CallOptions::new(),
            ))
            .await
            .unwrap();
            assert_eq!(r.into_inner().n, i);
        }
        // Streams that end every way: cleanly, by cancel (drop) with unread data, by a
        // server stream the client drops halfway.
        let mut call = within(client.bidi::<ThriftCodec, TMsg, TMsg>(&TH[3], CallOptions::new()))
            .await
            .unwrap();
        for i in 0..5 {
            within(call.send(msg("b", i))).await.unwrap();
        }
        call.close_send().unwrap();
        while within(call.recv()).await.unwrap().is_some() {}
        let mut dropped =
            within(client.bidi::<ThriftCodec, TMsg, TMsg>(&TH[3], CallOptions::new()))
                .await
                .unwrap();
        for i in 0..5 {
            within(dropped.send(msg("unread", i))).await.unwrap();
        }
        drop(dropped);
        let mut stream = within(client.server_streaming::<ThriftCodec, TMsg, TMsg>(
            &TH[2],
            msg("many", 10_000),
            CallOptions::new(),
        ))
        .await
        .unwrap();
        assert!(within(stream.recv()).await.unwrap().is_some());
        drop(stream);
    }
    // A raw peer that leaves half a frame and unread requests behind, then goes away.
    let mut peer = Peer::connect(&h).await;
    peer.send(open(1)).await;
    for i in 0..3 {
        peer.send(data(1, "raw", i)).await;
    }
    peer.sock.write_all(&[0, 0, 0, 50, 0x10, 0]).await.unwrap();
    drop(peer);
    // Once every connection ended (the shutdown closes what the peers left open), nothing
    // is charged any more.
    h.shutdown(Duration::from_secs(1)).await;
    eventually("the budget back at 0", || budget.used() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_unary_pool_has_a_maximum_and_idles_connections_out() {
    let (server, mut probe) = server_with(ServerLimits::default());
    let h = serve(server).await;
    let transport = TtHeaderClient::builder(h.local_addr().unwrap())
        .max_unary_connections(1)
        .unary_idle_timeout(Duration::from_millis(200))
        .build();
    let client = Client::new(transport.clone());
    // One call holds the only connection (the handler waits on the gate).
    let held = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .unary::<ThriftCodec, TMsg, TMsg>(&TH[0], msg("gate", 1), CallOptions::new())
                .await
        })
    };
    assert!(matches!(probe.event().await, Event::Got(1)));
    // A second call waits for it, and gives up at its deadline.
    let err = within(client.unary::<ThriftCodec, TMsg, TMsg>(
        &TH[0],
        msg("second", 2),
        CallOptions::new().timeout(Duration::from_millis(100)),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(transport.stats().connections(), 1);
    // A third one waits and gets the connection once the first is done.
    let third = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .unary::<ThriftCodec, TMsg, TMsg>(&TH[0], msg("third", 3), CallOptions::new())
                .await
        })
    };
    probe.gate.notify_one();
    assert_eq!(within(held).await.unwrap().unwrap().into_inner().n, 1);
    assert_eq!(within(third).await.unwrap().unwrap().into_inner().n, 3);
    assert_eq!(transport.stats().connections(), 1);
    // Unused, the connection is closed by the pool.
    eventually("the idle connection closed", || {
        transport.stats().connections() == 0
    })
    .await;
    // And the pool connects again on demand.
    let r = within(client.unary::<ThriftCodec, TMsg, TMsg>(
        &TH[0],
        msg("again", 4),
        CallOptions::new(),
    ))
    .await
    .unwrap();
    assert_eq!(r.into_inner().n, 4);
    h.shutdown(Duration::from_secs(1)).await;
}
