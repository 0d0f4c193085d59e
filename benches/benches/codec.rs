#![allow(missing_docs)] // criterion_group! generates undocumented items
//! `cargo bench -p benches --bench codec`: the per-message hot path of TTHeader Streaming —
//! encoding a 100-byte message into a Data frame and decoding it again — and the thrift codec.

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

criterion_group!(benches, frames);
criterion_main!(benches);
