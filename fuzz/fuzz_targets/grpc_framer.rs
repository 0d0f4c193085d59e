//! The gRPC message framer (`rpc_transport_grpc::codec::MessageDecoder`, `encode_message`,
//! gzip and zstd `decompress`) on arbitrary DATA bytes in arbitrary chunkings.
//!
//! Asserts, beyond "no panic":
//! - chunking never changes the outcome: the same messages, then the same error (code and
//!   text) or the same bytes left buffered;
//! - bounds: no message (after inflating) is over the receive limit, and the decoder never
//!   holds more than the bytes pushed into it;
//! - round trip: messages framed by `encode_message` (plain, gzip or zstd) and cut at arbitrary
//!   places decode to the same bodies, with the compressed flag as sent.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpc_fuzz::{chunks, split2, split_first};
use rpc_transport_grpc::codec::{decompress, encode_message, Decoded, MessageDecoder};
use rpc_transport_grpc::Compression;

const MAX: [usize; 4] = [0, 16, 1024, 4 << 20];

/// Pushes `parts` one at a time, taking every message after each: the messages and the
/// error that ended it (code and text), if any, and (without an error) the bytes left.
fn run(
    parts: &[&[u8]],
    max: usize,
    encoding: Option<Compression>,
) -> (Vec<Decoded>, Option<(rpc_core::Code, String)>, usize) {
    let mut d = MessageDecoder::new(max, encoding);
    let mut pushed = 0;
    let mut out = Vec::new();
    for part in parts {
        d.push(Bytes::copy_from_slice(part));
        pushed += part.len();
        loop {
            match d.next_message() {
                Ok(Some(m)) => {
                    assert!(m.bytes.len() <= max, "message over the receive limit");
                    out.push(m);
                }
                Ok(None) => break,
                // What is left buffered after an error depends on where the chunks fell, and
                // the stream is over: not compared.
                Err(s) => return (out, Some((s.code(), s.message().to_owned())), 0),
            }
            assert!(
                d.buffered() <= pushed,
                "decoder holds more than it was given"
            );
        }
        assert!(
            d.buffered() <= pushed,
            "decoder holds more than it was given"
        );
    }
    assert_eq!(d.finish_stream().is_ok(), d.is_empty());
    let left = d.buffered();
    (out, None, left)
}

fuzz_target!(|data: &[u8]| {
    let (config, data) = split_first(data);
    let max = MAX[usize::from(config & 3)];
    // Bit 4 picks the algorithm of the stream (and of the round trip): gzip or zstd.
    let algorithm = if config & 16 != 0 {
        Compression::Zstd
    } else {
        Compression::Gzip
    };
    let encoding = (config & 4 != 0).then_some(algorithm);
    let (sizes, wire) = split2(data);

    // Arbitrary bytes: whole, then chunked.
    let whole = run(&[wire], max, encoding);
    let chunked = run(&chunks(wire, sizes), max, encoding);
    assert_eq!(whole, chunked, "chunking changed the outcome");

    for c in [Compression::Gzip, Compression::Zstd] {
        if let Ok(out) = decompress(c, wire, max) {
            assert!(out.len() <= max);
        }
    }

    // Round trip: the input's pieces as message bodies, framed, cut elsewhere.
    let bodies = chunks(wire, sizes);
    let send = (config & 8 != 0).then_some(algorithm);
    let mut framed = BytesMut::new();
    for b in &bodies {
        encode_message(b, send, &mut framed).expect("frames");
    }
    let rev: Vec<u8> = sizes.iter().rev().copied().collect();
    let (got, err, left) = run(&chunks(&framed, &rev), 1 << 20, send.or(encoding));
    assert_eq!(err, None, "framed messages failed to decode");
    assert_eq!(left, 0);
    assert_eq!(got.len(), bodies.len());
    for (m, b) in got.iter().zip(&bodies) {
        assert_eq!(&m.bytes[..], *b);
        assert_eq!(m.compressed, send.is_some());
    }
});
