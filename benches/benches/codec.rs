#![forbid(unsafe_code)]
#![allow(missing_docs)] // criterion_group! generates undocumented items
//! `cargo bench -p benches --bench codec`: the per-message hot path of TTHeader Streaming —
//! encoding a 100-byte message into a Data frame and decoding it again — and the message codecs
//! (thrift and protobuf) on the echo request.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rpc_transport_ttheader::proto::{Limits, StreamFrame, StreamProtocol};

fn frames(c: &mut Criterion) {
    let payload = Bytes::from(vec![b'x'; 100]);
    let frame = StreamFrame::data(1, "Echo", StreamProtocol::Thrift, payload.clone());
    let mut g = c.benchmark_group("ttstream_data_100B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        b.iter(|| {
            buf.clear();
            frame.encode(&mut buf).unwrap();
            black_box(buf.len());
        })
    });
    let mut wire = BytesMut::new();
    frame.encode(&mut wire).unwrap();
    let wire = wire.freeze();
    let limits = Limits::default();
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut src = BytesMut::from(&wire[..]);
            black_box(StreamFrame::decode(&mut src, &limits).unwrap());
        })
    });
    g.bench_function("decode_data_fast_path", |b| {
        b.iter(|| {
            let mut src = BytesMut::from(&wire[..]);
            black_box(StreamFrame::decode_data(&mut src, &limits).unwrap());
        })
    });
    g.bench_function("copy_only_baseline", |b| {
        b.iter(|| black_box(BytesMut::from(&wire[..])))
    });
    g.finish();
}

/// The message codecs on the echo `Request` with a 100-byte message, both IDLs.
fn messages(c: &mut Criterion) {
    use rpc_core::{Codec, ProstCodec, ThriftCodec};
    let text = "x".repeat(100);
    let thrift_req = examples::thrift::Request {
        message: text.clone(),
        ..Default::default()
    };
    let proto_req = examples::proto::Request {
        message: text,
        ..Default::default()
    };
    let mut g = c.benchmark_group("echo_request_100B");
    g.throughput(Throughput::Elements(1));
    let mut buf = BytesMut::with_capacity(4096);
    g.bench_function("thrift_encode", |b| {
        b.iter(|| {
            buf.clear();
            ThriftCodec::encode(black_box(&thrift_req), &mut buf).unwrap();
        })
    });
    // The reference path the codec used before `ThriftMessage`: `TSerializable` through
    // `BufOutput`, one `dyn TOutputProtocol` call (and error check) per field.
    g.bench_function("thrift_encode_tserializable", |b| {
        use thrift::protocol::TSerializable;
        b.iter(|| {
            buf.clear();
            let mut out = rpc_core::codec::thrift::BufOutput::new(&mut buf);
            black_box(&thrift_req)
                .write_to_out_protocol(&mut out)
                .unwrap();
        })
    });
    // `ThriftMessage::encode_to` alone (the codec adds one `encoded_len` and two checks).
    g.bench_function("thrift_encode_to", |b| {
        use rpc_core::codec::thrift::ThriftMessage;
        b.iter(|| {
            buf.clear();
            black_box(&thrift_req).encode_to(&mut buf);
        })
    });
    g.bench_function("thrift_encoded_len", |b| {
        use rpc_core::codec::thrift::ThriftMessage;
        b.iter(|| black_box(black_box(&thrift_req).encoded_len()))
    });
    // Into an exact-size slice, as a shared-memory slot or an h2 reservation would hand over.
    let mut slot = vec![0u8; ThriftCodec::encoded_len(&thrift_req).unwrap_or(0)];
    g.bench_function("thrift_encode_exact_slice", |b| {
        b.iter(|| {
            ThriftCodec::encode(black_box(&thrift_req), &mut &mut slot[..]).unwrap();
        })
    });
    let thrift_bytes = rpc_core::codec::encode_to_bytes::<ThriftCodec, _>(&thrift_req).unwrap();
    g.bench_function("thrift_decode", |b| {
        b.iter(|| {
            let r: examples::thrift::Request = ThriftCodec::decode(thrift_bytes.clone()).unwrap();
            black_box(r)
        })
    });
    g.bench_function("protobuf_encode", |b| {
        b.iter(|| {
            buf.clear();
            ProstCodec::encode(black_box(&proto_req), &mut buf).unwrap();
        })
    });
    let proto_bytes = rpc_core::codec::encode_to_bytes::<ProstCodec, _>(&proto_req).unwrap();
    g.bench_function("protobuf_decode", |b| {
        b.iter(|| {
            let r: examples::proto::Request = ProstCodec::decode(proto_bytes.clone()).unwrap();
            black_box(r)
        })
    });
    g.finish();
}

criterion_group!(benches, frames, messages);
criterion_main!(benches);
