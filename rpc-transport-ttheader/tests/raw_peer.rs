//! The server driven by a hand-rolled peer that writes frames byte by byte, as a Kitex client
//! would: stream errors stay stream errors, unknown streams are ignored, shutdown says `crrst`.

mod support;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpc_core::codec::encode_to_bytes;
use rpc_core::ThriftCodec;
use rpc_transport_ttheader::proto::keys::{kitex_code, str_key};
use rpc_transport_ttheader::proto::{
    FrameKind, Limits, MessageHeader, MessageType, Packet, ProtocolId, StreamFrame, StreamProtocol,
};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Peer {
    sock: TcpStream,
    buf: BytesMut,
}

impl Peer {
    async fn connect(addr: std::net::SocketAddr) -> Peer {
        Peer {
            sock: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, f: StreamFrame) {
        let mut b = BytesMut::new();
        f.encode(&mut b).unwrap();
        self.sock.write_all(&b).await.unwrap();
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

    async fn packet(&mut self) -> Packet {
        within(async {
            loop {
                if let Some(p) = Packet::decode(&mut self.buf, &Limits::default()).unwrap() {
                    return p;
                }
                let n = self.sock.read_buf(&mut self.buf).await.unwrap();
                assert!(n > 0, "connection closed");
            }
        })
        .await
    }
}

fn data(id: i32, text: &str, n: i64) -> StreamFrame {
    let body = encode_to_bytes::<ThriftCodec, TMsg>(&msg(text, n)).unwrap();
    StreamFrame::data(id, "Chat", StreamProtocol::Thrift, body)
}

/// A TTHeader unary Thrift call of `ThTest.Echo`, as a Kitex client writes it (`framed`:
/// with the framed transport's length before the message).
fn thrift_echo_call(seq: i32, text: &str, framed: bool) -> BytesMut {
    let mut payload = BytesMut::new();
    if framed {
        payload.extend_from_slice(&[0; 4]);
    }
    MessageHeader {
        name: "Echo".into(),
        kind: MessageType::Call,
        seq_id: seq,
    }
    .encode(&mut payload)
    .unwrap();
    payload
        .extend_from_slice(&encode_to_bytes::<ThriftCodec, TMsg>(&msg(text, seq.into())).unwrap());
    if framed {
        let len = (payload.len() - 4) as u32;
        payload[..4].copy_from_slice(&len.to_be_bytes());
    }
    let mut p = Packet::new(0, seq, ProtocolId::ThriftBinary);
    p.headers.push_str(str_key::IDL_SERVICE_NAME, "ThTest");
    p.payload = payload.freeze();
    let mut wire = BytesMut::new();
    p.encode(&mut wire).unwrap();
    wire
}

fn open(id: i32) -> StreamFrame {
    StreamFrame::client_header(id, "Chat", StreamProtocol::Thrift, "ThTest", [], None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_header_is_a_stream_error_and_unknown_streams_are_ignored() {
    let (server, _probe) = server();
    let h = serve_tcp(
        server,
        "127.0.0.1:0".parse().unwrap(),
        rpc_transport_ttheader::Limits::default(),
    )
    .await
    .unwrap();
    let mut peer = Peer::connect(h.local_addr().unwrap()).await;

    // Stream ids need not start at 1 nor be in order (Kitex uses a process-wide counter).
    peer.send(open(7)).await;
    peer.send(data(7, "a", 1)).await;
    let hdr = peer.frame().await;
    assert_eq!((hdr.kind, hdr.stream_id), (FrameKind::Header, 7));
    let d = peer.frame().await;
    assert_eq!((d.kind, d.stream_id), (FrameKind::Data, 7));

    // Frames for a stream that does not exist are ignored: nothing comes back, nothing breaks.
    peer.send(data(99, "ghost", 0)).await;
    // A second Header on stream 7 ends stream 7 only.
    peer.send(open(7)).await;
    let t = peer.frame().await;
    assert_eq!((t.kind, t.stream_id), (FrameKind::Trailer, 7));
    let (_, exc) =
        rpc_transport_ttheader::proto::thrift_msg::decode_exception_message(&t.payload).unwrap();
    assert_eq!(exc.kind, kitex_code::UNEXPECTED_HEADER);

    // The connection still serves new streams.
    peer.send(open(3)).await;
    peer.send(data(3, "b", 2)).await;
    peer.send(StreamFrame::close_send(3, "Chat", StreamProtocol::Thrift))
        .await;
    let kinds: Vec<_> = [peer.frame().await, peer.frame().await, peer.frame().await]
        .iter()
        .map(|f| (f.kind, f.stream_id))
        .collect();
    assert_eq!(
        kinds,
        [
            (FrameKind::Header, 3),
            (FrameKind::Data, 3),
            (FrameKind::Trailer, 3)
        ]
    );
    h.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_replies_in_the_request_form_and_say_crrst_during_shutdown() {
    let (server, mut probe) = server();
    let h = serve_tcp(
        server,
        "127.0.0.1:0".parse().unwrap(),
        rpc_transport_ttheader::Limits::default(),
    )
    .await
    .unwrap();
    let mut peer = Peer::connect(h.local_addr().unwrap()).await;
    // framed request → framed reply with the same seqid
    peer.sock
        .write_all(&thrift_echo_call(5, "x", true))
        .await
        .unwrap();
    let reply = peer.packet().await;
    assert_eq!(reply.seq_id, 5);
    let len = u32::from_be_bytes(reply.payload[..4].try_into().unwrap()) as usize;
    assert_eq!(len, reply.payload.len() - 4, "framed like the request");
    let (mh, _) = MessageHeader::decode(&reply.payload[4..]).unwrap();
    assert_eq!(
        (mh.kind, mh.seq_id, mh.name.as_str()),
        (MessageType::Reply, 5, "Echo")
    );
    assert!(reply.headers.get_str(str_key::CONN_RESET).is_none());

    // A call in flight when shutdown starts is answered, with crrst.
    peer.sock
        .write_all(&thrift_echo_call(6, "gate", false))
        .await
        .unwrap();
    assert!(matches!(probe.event().await, Event::Got(6)));
    let addr = h.local_addr().unwrap();
    let shutdown = tokio::spawn(h.shutdown(Duration::from_secs(5)));
    // Once new connections are refused, open connections are draining: release the handler.
    within(async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    probe.gate.notify_one();
    let reply = peer.packet().await;
    assert_eq!(reply.seq_id, 6);
    let (mh, _) = MessageHeader::decode(&reply.payload).unwrap();
    assert_eq!(mh.kind, MessageType::Reply, "unframed like the request");
    assert_eq!(reply.headers.get_str(str_key::CONN_RESET), Some("1"));
    within(shutdown).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_payload_we_cannot_read_is_answered_and_the_connection_survives() {
    let (server, _probe) = server();
    let h = serve_tcp(
        server,
        "127.0.0.1:0".parse().unwrap(),
        rpc_transport_ttheader::Limits::default(),
    )
    .await
    .unwrap();
    let mut peer = Peer::connect(h.local_addr().unwrap()).await;
    // A Thrift compact message (`82 21 ...`) behind a binary protocol id, as a compact volo
    // client sends it.
    let mut p = Packet::new(0, 9, ProtocolId::ThriftBinary);
    p.payload = Bytes::from_static(&[0x82, 0x21, 0x01, 0x04, b'E', b'c', b'h', b'o', 0x00]);
    let mut wire = BytesMut::new();
    p.encode(&mut wire).unwrap();
    peer.sock.write_all(&wire).await.unwrap();
    let reply = peer.packet().await;
    assert_eq!(reply.seq_id, 9);
    let (mh, used) = MessageHeader::decode(&reply.payload).unwrap();
    assert_eq!(mh.kind, MessageType::Exception);
    let (exc, _) =
        rpc_transport_ttheader::proto::ApplicationException::decode(&reply.payload[used..])
            .unwrap();
    assert_eq!(
        exc.kind,
        rpc_transport_ttheader::proto::ApplicationException::INVALID_PROTOCOL
    );

    // Same connection, a proper call.
    peer.sock
        .write_all(&thrift_echo_call(10, "ok", false))
        .await
        .unwrap();
    let reply = peer.packet().await;
    let (mh, _) = MessageHeader::decode(&reply.payload).unwrap();
    assert_eq!((mh.kind, mh.seq_id), (MessageType::Reply, 10));
    h.shutdown(Duration::from_secs(1)).await;
}

/// Reads frames until every stream of `ids` got its Trailer; returns each stream's frames in
/// arrival order.
async fn frames_of(
    peer: &mut Peer,
    ids: &[i32],
) -> std::collections::HashMap<i32, Vec<StreamFrame>> {
    let mut got: std::collections::HashMap<i32, Vec<StreamFrame>> = Default::default();
    let done = |got: &std::collections::HashMap<i32, Vec<StreamFrame>>| {
        ids.iter().all(|id| {
            got.get(id)
                .is_some_and(|fs| fs.iter().any(|f| f.kind == FrameKind::Trailer))
        })
    };
    while !done(&got) {
        let f = peer.frame().await;
        assert!(
            ids.contains(&f.stream_id),
            "a frame for a stream we did not open: {f:?}"
        );
        got.entry(f.stream_id).or_default().push(f);
    }
    got
}

/// One echoed stream: Header, the echo of `text`, a clean Trailer (no exception).
fn assert_echoed(id: i32, frames: &[StreamFrame], text: &str) {
    let kinds: Vec<_> = frames.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [FrameKind::Header, FrameKind::Data, FrameKind::Trailer],
        "stream {id}"
    );
    let echoed: TMsg =
        <ThriftCodec as rpc_core::codec::Codec<TMsg>>::decode(frames[1].payload.clone())
            .expect("an echoed message");
    assert_eq!(echoed.text(), text, "stream {id}");
    assert!(
        frames[2].payload.is_empty(),
        "stream {id} ends without an exception"
    );
}

/// Spec §3: a stream id is any non-zero i32. A Kitex client's process-wide counter wraps past
/// `i32::MAX` to negative ids; those streams are served like any other, alone or interleaved
/// with positive ones, through the real listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_and_extreme_stream_ids_are_served_in_any_order() {
    let (server, _probe) = server();
    let h = serve_tcp(
        server,
        "127.0.0.1:0".parse().unwrap(),
        rpc_transport_ttheader::Limits::default(),
    )
    .await
    .unwrap();
    let mut peer = Peer::connect(h.local_addr().unwrap()).await;
    let close = |id| StreamFrame::close_send(id, "Chat", StreamProtocol::Thrift);

    // Each alone: open, one message, half-close.
    for id in [-5, i32::MIN, i32::MAX, -1] {
        peer.send(open(id)).await;
        peer.send(data(id, "alone", 1)).await;
        peer.send(close(id)).await;
        let got = frames_of(&mut peer, &[id]).await;
        assert_echoed(id, &got[&id], "alone");
    }

    // Interleaved: negative, positive and extreme ids open at once, frames mixed.
    let ids = [i32::MIN + 1, 4, -40_000, i32::MAX - 1, -2, 2];
    for &id in &ids {
        peer.send(open(id)).await;
    }
    for &id in ids.iter().rev() {
        peer.send(data(id, &format!("m{id}"), 1)).await;
    }
    for &id in &ids {
        peer.send(close(id)).await;
    }
    let got = frames_of(&mut peer, &ids).await;
    for &id in &ids {
        assert_echoed(id, &got[&id], &format!("m{id}"));
    }
    h.shutdown(Duration::from_secs(1)).await;
}

/// A Kitex client with a protobuf IDL calls over TTHeader in Kitex protobuf (its default for
/// protobuf): `u32 len`, `u32 0x9001_0000 | type`, method, seqid, then the protobuf request
/// itself. The server routes it to the protobuf flavour of the method, answers in the same
/// form (id 4, framed, the protobuf response), failures as EXCEPTION + `ErrorProto`, business
/// statuses in the header with an empty body; streaming methods are refused, and a Thrift call
/// on the same connection is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kitex_protobuf_calls_are_served_in_their_own_form() {
    use prost::Message;
    use rpc_transport_ttheader::proto::{ApplicationException, MessageHeaderRef};

    #[derive(Clone, PartialEq, prost::Message)]
    struct ErrorProto {
        #[prost(int32, tag = "1")]
        type_id: i32,
        #[prost(string, tag = "2")]
        message: String,
    }

    let (server, _probe) = server();
    let h = serve_tcp(
        server,
        "127.0.0.1:0".parse().unwrap(),
        rpc_transport_ttheader::Limits::default(),
    )
    .await
    .unwrap();
    let mut peer = Peer::connect(h.local_addr().unwrap()).await;
    let call = |seq: i32, method: &str, text: &str, id: ProtocolId| {
        let mut body = BytesMut::new();
        MessageHeaderRef {
            name: method,
            kind: MessageType::Call,
            seq_id: seq,
        }
        .encode_kitex_protobuf(&mut body)
        .unwrap();
        PbMsg {
            text: text.into(),
            n: seq.into(),
            data: Bytes::new(),
        }
        .encode(&mut body)
        .unwrap();
        let mut payload = BytesMut::new();
        payload.extend_from_slice(&(body.len() as u32).to_be_bytes());
        payload.extend_from_slice(&body);
        let mut p = Packet::new(0, seq, id);
        p.headers.push_str(str_key::IDL_SERVICE_NAME, "PbTest");
        p.headers.push_str("x-echo", "hello");
        p.payload = payload.freeze();
        let mut wire = BytesMut::new();
        p.encode(&mut wire).unwrap();
        wire
    };
    // What a reply says: its envelope, and the body after it.
    let open = |reply: &Packet| {
        assert_eq!(reply.protocol, ProtocolId::KitexProtobuf);
        let len = u32::from_be_bytes(reply.payload[..4].try_into().unwrap()) as usize;
        assert_eq!(len, reply.payload.len() - 4, "framed, as Kitex protobuf is");
        let (mh, used) = MessageHeaderRef::decode_kitex_protobuf(&reply.payload[4..]).unwrap();
        (
            (mh.kind, mh.seq_id, mh.name.to_owned()),
            reply.payload.slice(4 + used..),
        )
    };

    // Under Kitex's protocol id 4, and under id 0 (the payload is what tells).
    for (seq, id) in [
        (1, ProtocolId::KitexProtobuf),
        (2, ProtocolId::ThriftBinary),
    ] {
        peer.sock
            .write_all(&call(seq, "Echo", "hi", id))
            .await
            .unwrap();
        let reply = peer.packet().await;
        assert_eq!(reply.seq_id, seq);
        let (head, body) = open(&reply);
        assert_eq!(head, (MessageType::Reply, seq, "Echo".into()));
        let echoed = PbMsg::decode(body).unwrap();
        assert_eq!((echoed.text.as_str(), echoed.n), ("hi", i64::from(seq)));
        assert_eq!(reply.headers.get_str("x-echo"), Some("hello"));
    }

    // A handler error: EXCEPTION with ErrorProto, the exact code in `rpc-code`.
    peer.sock
        .write_all(&call(3, "Echo", "fail", ProtocolId::KitexProtobuf))
        .await
        .unwrap();
    let reply = peer.packet().await;
    let (head, body) = open(&reply);
    assert_eq!(head, (MessageType::Exception, 3, "Echo".into()));
    let err = ErrorProto::decode(body).unwrap();
    assert_eq!(err.type_id, ApplicationException::INTERNAL_ERROR);
    assert!(err.message.contains("no such thing"), "{}", err.message);
    assert_eq!(reply.headers.get_str("rpc-code"), Some("5"));

    // A business status: a REPLY with no body, the status in the header.
    peer.sock
        .write_all(&call(4, "Echo", "biz", ProtocolId::KitexProtobuf))
        .await
        .unwrap();
    let reply = peer.packet().await;
    let (head, body) = open(&reply);
    assert_eq!(head, (MessageType::Reply, 4, "Echo".into()));
    assert!(body.is_empty());
    assert_eq!(reply.headers.get_str(str_key::BIZ_STATUS), Some("4001"));

    // Unknown and streaming methods: EXCEPTION in the caller's form.
    for (seq, method, kind) in [
        (5, "Nope", ApplicationException::UNKNOWN_METHOD),
        (6, "Chat", ApplicationException::INVALID_PROTOCOL),
    ] {
        peer.sock
            .write_all(&call(seq, method, "x", ProtocolId::KitexProtobuf))
            .await
            .unwrap();
        let reply = peer.packet().await;
        let (head, body) = open(&reply);
        assert_eq!(head, (MessageType::Exception, seq, method.into()));
        assert_eq!(ErrorProto::decode(body).unwrap().type_id, kind, "{method}");
    }

    // A body that is not the method's message: a clean error, the connection lives on.
    let mut bad = BytesMut::new();
    MessageHeaderRef {
        name: "Echo",
        kind: MessageType::Call,
        seq_id: 7,
    }
    .encode_kitex_protobuf(&mut bad)
    .unwrap();
    bad.extend_from_slice(&[0x0a, 0x7f]); // field 1, 127 bytes announced, none there
    let mut payload = BytesMut::new();
    payload.extend_from_slice(&(bad.len() as u32).to_be_bytes());
    payload.extend_from_slice(&bad);
    let mut p = Packet::new(0, 7, ProtocolId::KitexProtobuf);
    p.payload = payload.freeze();
    let mut wire = BytesMut::new();
    p.encode(&mut wire).unwrap();
    peer.sock.write_all(&wire).await.unwrap();
    let reply = peer.packet().await;
    let (head, _) = open(&reply);
    assert_eq!((head.0, head.1), (MessageType::Exception, 7));

    // The same connection still serves Thrift.
    peer.sock
        .write_all(&thrift_echo_call(8, "th", false))
        .await
        .unwrap();
    let reply = peer.packet().await;
    assert_eq!(reply.protocol, ProtocolId::ThriftBinary);
    let (mh, _) = MessageHeader::decode(&reply.payload).unwrap();
    assert_eq!((mh.kind, mh.seq_id), (MessageType::Reply, 8));
    h.shutdown(Duration::from_secs(1)).await;
}
