//! Property tests: decoders never panic on any input, truncation is "need more bytes", valid
//! packets and frames round-trip, incremental feeding at arbitrary split points yields the same
//! frames, and the stream state machine never panics and never leaves "finished".

mod common;

use bytes::{Bytes, BytesMut};
use common::{vector, VECTORS};
use proptest::prelude::*;
use proptest::sample::Index;
use rpc_transport_ttheader::proto::keys::int_key;
use rpc_transport_ttheader::proto::thrift_msg::decode_exception_message;
use rpc_transport_ttheader::proto::{
    detect_plain, ApplicationException, FrameKind, Headers, Limits, MessageHeader,
    MessageHeaderRef, MessageType, Packet, PayloadForm, PlainDecoder, PlainFraming, ProtocolId,
    RecvEvent, Role, StreamFrame, StreamProtocol, StreamState,
};

fn protocol() -> impl Strategy<Value = ProtocolId> {
    prop_oneof![
        Just(ProtocolId::ThriftBinary),
        Just(ProtocolId::ThriftCompactV2),
        Just(ProtocolId::KitexProtobuf),
        Just(ProtocolId::StreamThrift),
        Just(ProtocolId::StreamProtobuf),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Headers; with `stream_meta`, int keys 9 and 27 are avoided (a frame owns them).
fn headers(stream_meta: bool) -> impl Strategy<Value = Headers> {
    let int_key = any::<u16>().prop_map(move |k| {
        if stream_meta && (k == int_key::TO_METHOD || k == int_key::FRAME_TYPE) {
            k + 1000
        } else {
            k
        }
    });
    (
        proptest::option::of(bytes(40)),
        proptest::collection::vec((".{0,10}", ".{0,20}"), 0..5),
        proptest::collection::vec((int_key, bytes(20)), 0..5),
    )
        .prop_map(|(acl_token, str_kvs, int_kvs)| Headers {
            acl_token,
            str_kvs: str_kvs.into_iter().collect(),
            int_kvs,
        })
}

fn packet() -> impl Strategy<Value = Packet> {
    (
        any::<u16>(),
        any::<i32>(),
        protocol(),
        headers(false),
        bytes(200),
    )
        .prop_map(|(flags, seq_id, protocol, headers, payload)| Packet {
            flags,
            seq_id,
            protocol,
            headers,
            payload,
        })
}

fn frame_kind() -> impl Strategy<Value = FrameKind> {
    prop_oneof![
        Just(FrameKind::Meta),
        Just(FrameKind::Header),
        Just(FrameKind::Data),
        Just(FrameKind::Trailer),
        Just(FrameKind::Rst),
    ]
}

fn stream_frame() -> impl Strategy<Value = StreamFrame> {
    (
        frame_kind(),
        any::<i32>().prop_filter("non-zero stream id", |id| *id != 0),
        ".{0,16}",
        prop_oneof![Just(StreamProtocol::Thrift), Just(StreamProtocol::Protobuf)],
        headers(true),
        bytes(200),
    )
        .prop_map(
            |(kind, stream_id, method, protocol, headers, payload)| StreamFrame {
                kind,
                stream_id,
                method: method.into(),
                protocol,
                headers,
                payload,
            },
        )
}

fn encode(p: &Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    p.encode(&mut b).unwrap();
    b.to_vec()
}

/// Decodes everything decodable, exercising every layer on each packet; must not panic.
fn drain(buf: &mut BytesMut, limits: &Limits) {
    // Each successful decode consumes at least 18 bytes, so this terminates.
    while let Ok(Some(p)) = Packet::decode(buf, limits) {
        let _ = p.headers.msg_type();
        let _ = PayloadForm::split(&p.payload);
        let _ = MessageHeader::decode(&p.payload);
        let _ = decode_exception_message(&p.payload);
        if let Ok(f) = StreamFrame::try_from(p) {
            let mut s = StreamState::new(Role::Client, f.stream_id);
            let _ = s.recv(f);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        drain(&mut BytesMut::from(&data[..]), &Limits::default());
    }

    /// Random bytes behind a plausible fixed part, so the variable-header parser is reached.
    #[test]
    fn random_headers_never_panic(
        words in 1u16..8,
        flags in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut b = BytesMut::new();
        let length = (10 + body.len()) as u32;
        b.extend_from_slice(&length.to_be_bytes());
        b.extend_from_slice(&[0x10, 0x00]);
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&words.to_be_bytes());
        b.extend_from_slice(&body);
        drain(&mut b, &Limits::default());
    }

    /// Valid packets with random bytes overwritten.
    #[test]
    fn mutated_packets_never_panic(
        p in packet(),
        edits in proptest::collection::vec((any::<Index>(), any::<u8>()), 1..6),
    ) {
        let mut data = encode(&p);
        for (at, byte) in edits {
            let i = at.index(data.len());
            data[i] = byte;
        }
        drain(&mut BytesMut::from(&data[..]), &Limits::default());
    }

    #[test]
    fn truncated_packets_need_more_bytes(p in packet()) {
        let data = encode(&p);
        for n in 0..data.len() {
            let mut b = BytesMut::from(&data[..n]);
            prop_assert_eq!(Packet::decode(&mut b, &Limits::default()), Ok(None), "prefix {}", n);
            prop_assert_eq!(&b[..], &data[..n]);
        }
    }

    #[test]
    fn packets_round_trip(p in packet()) {
        let mut b = BytesMut::from(&encode(&p)[..]);
        prop_assert_eq!(b.len() % 4, (14 + p.payload.len()) % 4);
        prop_assert_eq!(Packet::decode(&mut b, &Limits::default()), Ok(Some(p)));
        prop_assert!(b.is_empty());
    }

    /// The Data fast path agrees with the full decoder whenever it answers, answers for every
    /// plain Data frame, and never consumes anything else.
    #[test]
    fn data_fast_path_agrees_with_the_full_decoder(f in stream_frame()) {
        let mut wire = BytesMut::new();
        f.encode(&mut wire).unwrap();
        let mut fast = wire.clone();
        let plain = f.kind == FrameKind::Data
            && f.headers.str_kvs.is_empty()
            && f.headers.acl_token.is_none();
        match StreamFrame::decode_data(&mut fast, &Limits::default()) {
            Some(d) => {
                prop_assert!(plain);
                prop_assert!(fast.is_empty());
                prop_assert_eq!((d.stream_id, d.protocol, d.payload), (f.stream_id, f.protocol, f.payload));
            }
            None => {
                prop_assert!(!plain, "a plain Data frame missed the fast path");
                prop_assert_eq!(&fast[..], &wire[..]);
            }
        }
        // Any strict prefix is incomplete: nothing is consumed.
        let mut prefix = BytesMut::from(&wire[..wire.len() - 1]);
        prop_assert!(StreamFrame::decode_data(&mut prefix, &Limits::default()).is_none());
        prop_assert_eq!(prefix.len(), wire.len() - 1);
    }

    #[test]
    fn data_fast_path_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut b = BytesMut::from(&data[..]);
        let _ = StreamFrame::decode_data(&mut b, &Limits::default());
    }

    #[test]
    fn stream_frames_round_trip(f in stream_frame()) {
        let mut b = BytesMut::new();
        f.encode(&mut b).unwrap();
        let via_packet = encode(&Packet::from(f.clone()));
        prop_assert_eq!(&b[..], &via_packet[..]);
        prop_assert_eq!(StreamFrame::decode(&mut b, &Limits::default()), Ok(Some(f)));
        prop_assert!(b.is_empty());
    }

    #[test]
    fn split_feeding_yields_the_same_frames(
        packets in proptest::collection::vec(packet(), 1..5),
        splits in proptest::collection::vec(any::<Index>(), 0..10),
    ) {
        let wire: Vec<u8> = packets.iter().flat_map(encode).collect();
        let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();

        let limits = Limits::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        for cut in cuts {
            buf.extend_from_slice(&wire[at..cut]);
            at = cut;
            while let Some(p) = Packet::decode(&mut buf, &limits).unwrap() {
                got.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, packets);
    }

    #[test]
    fn thrift_decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = MessageHeader::decode(&data);
        let _ = ApplicationException::decode(&data);
        let _ = decode_exception_message(&data);
        let _ = PayloadForm::split(&data);
    }

    /// Plain Thrift: detection and both decoders are total on any bytes, fed whole or
    /// split anywhere, and a buffered decoder never takes more than it was given.
    #[test]
    fn plain_thrift_decoders_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..300),
        cut in any::<Index>(),
        max in 0usize..400,
    ) {
        let _ = detect_plain(&data);
        let _ = MessageHeaderRef::decode_lenient(&data);
        for framing in [PlainFraming::Framed, PlainFraming::Buffered] {
            let mut d = PlainDecoder::new(framing, max);
            let at = cut.index(data.len() + 1);
            let mut buf = BytesMut::from(&data[..at]);
            let mut taken = 0;
            for more in [&data[at..], &[][..]] {
                buf.extend_from_slice(more);
                while let Ok(Some(m)) = d.decode(&mut buf) {
                    prop_assert!(m.len() <= max);
                    taken += m.len();
                }
            }
            prop_assert!(taken <= data.len());
        }
    }

    /// A buffered decoder finds a strict message whose Args struct is a random (valid) packet
    /// body wrapped as a binary field, at any split point.
    #[test]
    fn plain_buffered_finds_whole_messages(
        name in "[A-Za-z]{1,12}",
        seq in any::<i32>(),
        payload in bytes(300),
        cut in any::<Index>(),
    ) {
        let mut m = Vec::new();
        MessageHeaderRef { name: &name, kind: MessageType::Call, seq_id: seq }
            .encode(&mut m)
            .unwrap();
        m.extend_from_slice(&[11, 0, 1]);
        m.extend_from_slice(&(payload.len() as i32).to_be_bytes());
        m.extend_from_slice(&payload);
        m.push(0);
        let mut d = PlainDecoder::new(PlainFraming::Buffered, 1 << 20);
        let at = cut.index(m.len() + 1);
        let mut buf = BytesMut::from(&m[..at]);
        let first = d.decode(&mut buf).unwrap();
        prop_assert_eq!(first.is_some(), at == m.len());
        buf.extend_from_slice(&m[at..]);
        let got = first.or_else(|| d.decode(&mut buf).unwrap());
        prop_assert_eq!(got.as_deref(), Some(&m[..]));
    }

    #[test]
    fn application_exception_round_trips(message in ".{0,40}", kind in any::<i32>()) {
        let exc = ApplicationException::new(kind, message);
        let mut v = Vec::new();
        exc.encode(&mut v).unwrap();
        prop_assert_eq!(ApplicationException::decode(&v), Ok((exc, v.len())));
    }

    /// Any interleaving of local sends and peer frames: no panic, "finished" is terminal, and
    /// a finished stream ignores every frame.
    #[test]
    fn state_machine_is_total(
        client in any::<bool>(),
        ops in proptest::collection::vec((any::<bool>(), frame_kind()), 0..24),
    ) {
        let role = if client { Role::Client } else { Role::Server };
        let mut s = StreamState::new(role, 1);
        let mut was_finished = false;
        let mut header_sent = false;
        for (local, kind) in ops {
            if local {
                let _ = s.send(kind);
            } else {
                let ev = s.recv(StreamFrame::new(kind, 1, "M", StreamProtocol::Thrift));
                if was_finished {
                    prop_assert_eq!(ev, Ok(RecvEvent::Ignored));
                }
            }
            prop_assert!(!was_finished || s.is_finished(), "finished is terminal");
            prop_assert!(!header_sent || s.header_sent(), "header_sent is monotone");
            was_finished = s.is_finished();
            header_sent = s.header_sent();
        }
    }
}

#[test]
fn every_strict_prefix_of_every_vector_needs_more_bytes() {
    for (name, _) in VECTORS {
        let data = vector(name);
        for n in 0..data.len() {
            let mut b = BytesMut::from(&data[..n]);
            assert_eq!(
                Packet::decode(&mut b, &Limits::default()),
                Ok(None),
                "{name} prefix {n}"
            );
        }
    }
}

#[test]
fn vectors_fed_one_byte_at_a_time() {
    let wire: Vec<u8> = VECTORS.iter().flat_map(|(n, _)| vector(n)).collect();
    let mut buf = BytesMut::new();
    let mut n = 0;
    for byte in wire {
        buf.extend_from_slice(&[byte]);
        while Packet::decode(&mut buf, &Limits::default())
            .unwrap()
            .is_some()
        {
            n += 1;
        }
    }
    assert_eq!(n, VECTORS.len());
}
