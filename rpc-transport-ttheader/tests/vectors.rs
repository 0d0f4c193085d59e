//! Golden vectors (`tests/data/*.hex`): each decodes to the frame its description states, field
//! by field, and re-encodes byte-identically. The stream vectors are also played through the
//! client and server state machines as the one bidi stream they form.
//!
//! All vectors round-trip byte-identically, volo captures included: the decoder keeps KV entry
//! order, the ACL/string/int block order is the spec's, and padding is canonical (minimal,
//! zero), so no vector needs the semantic-equality fallback.

mod common;

use bytes::{Bytes, BytesMut};
use common::{vector, vector_buf, VECTORS};
use rpc_transport_ttheader::proto::keys::{int_key, kitex_code, FLAGS_STREAMING};
use rpc_transport_ttheader::proto::thrift_msg::decode_exception_message;
use rpc_transport_ttheader::proto::{
    ApplicationException, BizStatus, FrameKind, Headers, Limits, MessageHeader, MessageType,
    Packet, PayloadForm, ProtocolId, RecvEvent, Role, StrKvs, StreamFrame, StreamProtocol,
    StreamState,
};

fn packet(name: &str) -> Packet {
    let mut buf = vector_buf(name);
    let p = Packet::decode(&mut buf, &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .unwrap_or_else(|| panic!("{name}: incomplete"));
    assert!(buf.is_empty(), "{name}: trailing bytes");
    p
}

fn frame(name: &str) -> StreamFrame {
    let mut buf = vector_buf(name);
    let f = StreamFrame::decode(&mut buf, &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .unwrap_or_else(|| panic!("{name}: incomplete"));
    assert!(buf.is_empty(), "{name}: trailing bytes");
    f
}

fn ints(pairs: &[(u16, &'static [u8])]) -> Vec<(u16, Bytes)> {
    pairs
        .iter()
        .map(|(k, v)| (*k, Bytes::from_static(v)))
        .collect()
}

fn strs(pairs: &[(&str, &str)]) -> StrKvs {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Splits a unary payload into its message header and struct body.
fn unary_message(p: &Packet) -> (PayloadForm, MessageHeader, Vec<u8>) {
    let (form, msg) = PayloadForm::split(&p.payload).expect("sniffable payload");
    let (header, n) = MessageHeader::decode(msg).expect("message header");
    (form, header, msg[n..].to_vec())
}

fn msg(name: &str, kind: MessageType, seq_id: i32) -> MessageHeader {
    MessageHeader {
        name: name.to_owned(),
        kind,
        seq_id,
    }
}

#[test]
fn every_data_file_is_listed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".hex").map(str::to_owned))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = VECTORS.iter().map(|(n, _)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn every_vector_reencodes_byte_identically() {
    for (name, _) in VECTORS {
        let bytes = vector(name);
        let p = packet(name);
        let mut out = BytesMut::new();
        p.encode(&mut out).unwrap();
        assert_eq!(&out[..], &bytes[..], "{name}: Packet re-encode");

        if name.starts_with("stream_") {
            let f = frame(name);
            let mut out = BytesMut::new();
            f.encode(&mut out).unwrap();
            assert_eq!(&out[..], &bytes[..], "{name}: StreamFrame re-encode");
            assert_eq!(Packet::from(f), p, "{name}: StreamFrame -> Packet");
        }
    }
}

#[test]
fn stream_c2s_header_open() {
    let p = packet("stream_c2s_header_open");
    assert_eq!(p.flags, FLAGS_STREAMING);
    assert_eq!(p.protocol, ProtocolId::StreamThrift);
    assert_eq!(
        p.headers.int_kvs,
        ints(&[(int_key::TO_METHOD, b"Echo"), (int_key::FRAME_TYPE, b"2")])
    );

    let f = frame("stream_c2s_header_open");
    assert_eq!(f.kind, FrameKind::Header);
    assert_eq!(f.stream_id, 1);
    assert_eq!(f.method, "Echo");
    assert_eq!(f.protocol, StreamProtocol::Thrift);
    assert_eq!(f.headers.str_kvs, strs(&[("isn", "TestService")]));
    assert!(f.headers.int_kvs.is_empty());
    assert_eq!(f.headers.acl_token, None);
    assert!(f.payload.is_empty());

    let built =
        StreamFrame::client_header(1, "Echo", StreamProtocol::Thrift, "TestService", [], None);
    assert_eq!(built, f);
}

#[test]
fn stream_data_frames() {
    for (name, letter) in [
        ("stream_data_request_a", b'a'),
        ("stream_data_response_A", b'A'),
    ] {
        let f = frame(name);
        assert_eq!(f.kind, FrameKind::Data, "{name}");
        assert_eq!(f.stream_id, 1);
        assert_eq!(f.method, "Echo");
        assert_eq!(f.protocol, StreamProtocol::Thrift);
        assert_eq!(f.headers, Headers::default());
        // Bare struct {1: string 'x'}: no message header, no Args wrapper, no length prefix.
        assert_eq!(&f.payload[..], &[0x0b, 0, 1, 0, 0, 0, 1, letter, 0]);
        let built = StreamFrame::data(1, "Echo", StreamProtocol::Thrift, f.payload.clone());
        assert_eq!(built, f);
    }
}

#[test]
fn stream_s2c_header_empty() {
    let f = frame("stream_s2c_header_empty");
    assert_eq!(f.kind, FrameKind::Header);
    assert_eq!(f.stream_id, 1);
    assert_eq!(f.method, "Echo");
    assert_eq!(f.headers, Headers::default());
    assert!(f.payload.is_empty());
    assert_eq!(
        StreamFrame::server_header(1, "Echo", StreamProtocol::Thrift, []),
        f
    );
}

#[test]
fn stream_trailer_empty() {
    let f = frame("stream_trailer_empty");
    assert_eq!(f.kind, FrameKind::Trailer);
    assert_eq!(f.stream_id, 1);
    assert_eq!(f.method, "Echo");
    assert_eq!(f.headers, Headers::default());
    assert!(f.payload.is_empty());
    assert_eq!(
        StreamFrame::close_send(1, "Echo", StreamProtocol::Thrift),
        f
    );
}

#[test]
fn stream_trailer_exception_boom() {
    let f = frame("stream_trailer_exception_boom");
    assert_eq!(f.kind, FrameKind::Trailer);
    assert_eq!(f.stream_id, 1);
    assert_eq!(f.headers, Headers::default());
    let (h, exc) = decode_exception_message(&f.payload).unwrap();
    assert_eq!(h, msg("Echo", MessageType::Exception, 1));
    assert_eq!(
        exc,
        ApplicationException::new(ApplicationException::INTERNAL_ERROR, "biz error: boom")
    );
    let built =
        StreamFrame::trailer(1, "Echo", StreamProtocol::Thrift, [], None, Some(&exc)).unwrap();
    assert_eq!(built, f);
}

#[test]
fn stream_trailer_biz_status() {
    let f = frame("stream_trailer_biz_status");
    assert_eq!(f.kind, FrameKind::Trailer);
    assert_eq!(f.stream_id, 1);
    assert_eq!(
        f.headers.str_kvs,
        strs(&[
            ("biz-status", "10001"),
            ("biz-message", "insufficient balance")
        ])
    );
    assert!(f.headers.int_kvs.is_empty());
    assert!(f.payload.is_empty());
    let biz = BizStatus {
        code: 10001,
        message: "insufficient balance".into(),
        extra: None,
    };
    assert_eq!(BizStatus::from_headers(&f.headers), Ok(Some(biz.clone())));
    let built =
        StreamFrame::trailer(1, "Echo", StreamProtocol::Thrift, [], Some(&biz), None).unwrap();
    assert_eq!(built, f);
}

#[test]
fn stream_rst_cancel() {
    let f = frame("stream_rst_cancel");
    assert_eq!(f.kind, FrameKind::Rst);
    assert_eq!(f.stream_id, 1);
    assert_eq!(f.method, "Echo");
    assert_eq!(f.headers.str_kvs, strs(&[("ttscp", "ServiceA")]));
    let (h, exc) = decode_exception_message(&f.payload).unwrap();
    assert_eq!(h, msg("Echo", MessageType::Exception, 1));
    assert_eq!(
        exc,
        ApplicationException::new(kitex_code::USER_CANCEL, "user canceled")
    );
    let built =
        StreamFrame::rst(1, "Echo", StreamProtocol::Thrift, Some("ServiceA"), &exc).unwrap();
    assert_eq!(built, f);
}

#[test]
fn unary_call_echo_hi() {
    let p = packet("unary_call_echo_hi");
    assert_eq!(p.flags, 0);
    assert_eq!(p.seq_id, 1);
    assert_eq!(p.protocol, ProtocolId::ThriftBinary);
    assert_eq!(p.headers, Headers::default());
    let (form, h, body) = unary_message(&p);
    assert_eq!(form, PayloadForm::Unframed);
    assert_eq!(h, msg("Echo", MessageType::Call, 1));
    // Args{1: Request{1: 'hi'}}
    assert_eq!(body, [0x0c, 0, 1, 0x0b, 0, 1, 0, 0, 0, 2, b'h', b'i', 0, 0]);
}

#[test]
fn unary_reply_echo_hi() {
    let p = packet("unary_reply_echo_hi");
    assert_eq!(
        (p.flags, p.seq_id, p.protocol),
        (0, 1, ProtocolId::ThriftBinary)
    );
    assert_eq!(p.headers, Headers::default());
    let (form, h, body) = unary_message(&p);
    assert_eq!(form, PayloadForm::Unframed);
    assert_eq!(h, msg("Echo", MessageType::Reply, 1));
    // Result{0: Response{1: 'hi'}}
    assert_eq!(body, [0x0c, 0, 0, 0x0b, 0, 1, 0, 0, 0, 2, b'h', b'i', 0, 0]);
}

#[test]
fn unary_exception_boom() {
    let p = packet("unary_exception_boom");
    assert_eq!(
        (p.flags, p.seq_id, p.protocol),
        (0, 1, ProtocolId::ThriftBinary)
    );
    assert_eq!(p.headers, Headers::default());
    assert_eq!(PayloadForm::sniff(&p.payload), Some(PayloadForm::Unframed));
    let (h, exc) = decode_exception_message(&p.payload).unwrap();
    assert_eq!(h, msg("Echo", MessageType::Exception, 1));
    assert_eq!(exc, ApplicationException::new(6, "biz error: boom"));
}

#[test]
fn unary_framed_call_with_headers() {
    let p = packet("unary_framed_call_with_headers");
    assert_eq!(
        (p.flags, p.seq_id, p.protocol),
        (0, 1, ProtocolId::ThriftBinary)
    );
    assert_eq!(p.headers.acl_token, None);
    assert_eq!(p.headers.str_kvs, strs(&[("isn", "TestService")]));
    assert_eq!(
        p.headers.int_kvs,
        ints(&[
            (int_key::TRANSPORT_TYPE, b"framed"),
            (int_key::FROM_SERVICE, b"a.client"),
            (int_key::TO_SERVICE, b"b.server"),
            (int_key::TO_METHOD, b"Echo"),
            (int_key::FROM_METHOD, b""),
            (int_key::MSG_TYPE, b"1"),
        ])
    );
    assert_eq!(p.headers.msg_type(), Some(MessageType::Call));
    let (form, h, body) = unary_message(&p);
    assert_eq!(form, PayloadForm::Framed);
    assert_eq!(h, msg("Echo", MessageType::Call, 1));
    assert_eq!(body, [0x0c, 0, 1, 0x0b, 0, 1, 0, 0, 0, 2, b'h', b'i', 0, 0]);
}

#[test]
fn volo_client_call_framed_echo_hello() {
    let p = packet("volo_client_call_framed_echo_hello");
    // volo quirk: seqid 0 on an ordinary call.
    assert_eq!(
        (p.flags, p.seq_id, p.protocol),
        (0, 0, ProtocolId::ThriftBinary)
    );
    assert_eq!(p.headers.str_kvs, strs(&[("isn", "EchoService")]));
    assert_eq!(
        p.headers.int_kvs,
        ints(&[
            (int_key::WITH_MESH_HEADER, b"3"),
            // volo quirk: FROM_SERVICE with an empty value.
            (int_key::FROM_SERVICE, b""),
            (int_key::TO_METHOD, b"Echo"),
            (int_key::TO_SERVICE, b"echo"),
            (int_key::DEST_ADDRESS, b"127.0.0.1:9300"),
        ])
    );
    assert_eq!(p.headers.msg_type(), None);
    let (form, h, body) = unary_message(&p);
    assert_eq!(form, PayloadForm::Framed);
    assert_eq!(h, msg("Echo", MessageType::Call, 0));
    let mut expected = vec![0x0c, 0, 1, 0x0b, 0, 1, 0, 0, 0, 5];
    expected.extend_from_slice(b"hello");
    expected.extend_from_slice(&[0, 0]);
    assert_eq!(body, expected);
}

#[test]
fn volo_server_reply_framed_echo_hello() {
    let p = packet("volo_server_reply_framed_echo_hello");
    assert_eq!(
        (p.flags, p.seq_id, p.protocol),
        (0, 0, ProtocolId::ThriftBinary)
    );
    assert!(p.headers.str_kvs.is_empty());
    // volo quirk: MSG_TYPE as the raw byte 0x02, not ASCII "2".
    assert_eq!(p.headers.int_kvs, ints(&[(int_key::MSG_TYPE, b"\x02")]));
    assert_eq!(p.headers.msg_type(), Some(MessageType::Reply));
    let (form, h, body) = unary_message(&p);
    assert_eq!(form, PayloadForm::Framed);
    assert_eq!(h, msg("Echo", MessageType::Reply, 0));
    let mut expected = vec![0x0c, 0, 0, 0x0b, 0, 1, 0, 0, 0, 5];
    expected.extend_from_slice(b"hello");
    expected.extend_from_slice(&[0, 0]);
    assert_eq!(body, expected);
}

#[test]
fn all_vectors_back_to_back_in_one_buffer() {
    let mut buf = BytesMut::new();
    for (name, _) in VECTORS {
        buf.extend_from_slice(&vector(name));
    }
    let mut n = 0;
    while let Some(p) = Packet::decode(&mut buf, &Limits::default()).unwrap() {
        assert_eq!(p, packet(VECTORS[n].0));
        n += 1;
    }
    assert_eq!(n, VECTORS.len());
    assert!(buf.is_empty());
}

/// The stream vectors are one bidi stream: open, "a" → "A", CloseSend, end.
#[test]
fn stream_vectors_play_as_one_bidi_stream() {
    let mut client = StreamState::new(Role::Client, 1);
    let mut server = StreamState::new(Role::Server, 1);

    let open = frame("stream_c2s_header_open");
    client.send(open.kind).unwrap();
    match server.recv(open).unwrap() {
        RecvEvent::Headers(h) => assert_eq!(h.get_str("isn"), Some("TestService")),
        other => panic!("{other:?}"),
    }

    let req = frame("stream_data_request_a");
    client.send(req.kind).unwrap();
    assert_eq!(
        server.recv(req.clone()).unwrap(),
        RecvEvent::Data(req.payload)
    );

    let hdr = frame("stream_s2c_header_empty");
    server.send(hdr.kind).unwrap();
    assert_eq!(
        client.recv(hdr).unwrap(),
        RecvEvent::Headers(Headers::default())
    );

    let resp = frame("stream_data_response_A");
    server.send(resp.kind).unwrap();
    assert_eq!(
        client.recv(resp.clone()).unwrap(),
        RecvEvent::Data(resp.payload)
    );

    let close = frame("stream_trailer_empty");
    client.send(close.kind).unwrap();
    assert_eq!(server.recv(close.clone()).unwrap(), RecvEvent::RemoteClosed);
    assert!(server.is_remote_closed() && client.is_local_closed());

    server.send(close.kind).unwrap();
    assert_eq!(
        client.recv(close).unwrap(),
        RecvEvent::Finished {
            trailers: Headers::default(),
            error: None
        }
    );
    assert!(client.is_finished() && server.is_finished());
}

#[test]
fn stream_end_variants_seen_by_the_client() {
    let opened = || {
        let mut c = StreamState::new(Role::Client, 1);
        c.send(FrameKind::Header).unwrap();
        c.recv(frame("stream_s2c_header_empty")).unwrap();
        c
    };

    let mut c = opened();
    assert_eq!(
        c.recv(frame("stream_trailer_exception_boom")).unwrap(),
        RecvEvent::Finished {
            trailers: Headers::default(),
            error: Some(ApplicationException::new(6, "biz error: boom")),
        }
    );

    let mut c = opened();
    match c.recv(frame("stream_trailer_biz_status")).unwrap() {
        RecvEvent::Finished { trailers, error } => {
            assert_eq!(error, None);
            assert_eq!(
                BizStatus::from_headers(&trailers).unwrap().unwrap().code,
                10001
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stream_rst_cancel_seen_by_the_server() {
    let mut s = StreamState::new(Role::Server, 1);
    s.recv(frame("stream_c2s_header_open")).unwrap();
    assert_eq!(
        s.recv(frame("stream_rst_cancel")).unwrap(),
        RecvEvent::Reset {
            code: kitex_code::USER_CANCEL,
            message: "user canceled".into(),
            cancel_path: Some("ServiceA".into()),
        }
    );
    // The client follows its Rst with an empty Trailer: ignored on a finished stream.
    assert_eq!(
        s.recv(frame("stream_trailer_empty")).unwrap(),
        RecvEvent::Ignored
    );
}
