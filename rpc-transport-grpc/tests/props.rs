//! Property tests of the pure codecs: the message framing and the header codecs never panic on
//! any input and round-trip what they encode.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rpc_transport_grpc::codec::{
    decode_bin, encode_bin, encode_message, encode_timeout, parse_timeout, percent_decode_message,
    percent_encode_message, MessageDecoder,
};
use rpc_transport_grpc::Compression;

proptest! {
    #[test]
    fn framing_round_trips_split_anywhere(
        msgs in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..2000), any::<bool>()), 0..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut wire = BytesMut::new();
        for (m, gz) in &msgs {
            encode_message(m, gz.then_some(Compression::Gzip), &mut wire).unwrap();
        }
        let wire = wire.freeze();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut d = MessageDecoder::new(4096, Some(Compression::Gzip));
        let mut got = Vec::new();
        for w in points.windows(2) {
            d.push(wire.slice(w[0]..w[1]));
            while let Some(m) = d.next_message().unwrap() {
                got.push((m.bytes.to_vec(), m.compressed));
            }
        }
        d.finish_stream().unwrap();
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn the_decoder_never_panics_and_never_buffers_past_its_limit(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..10),
        max in 0usize..512,
        gz in any::<bool>(),
    ) {
        let mut d = MessageDecoder::new(max, gz.then_some(Compression::Gzip));
        'outer: for c in chunks {
            d.push(Bytes::from(c));
            loop {
                match d.next_message() {
                    Ok(Some(m)) => prop_assert!(m.bytes.len() <= max),
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
            // A partial message is at most its prefix, its body (<= max) and one chunk.
            prop_assert!(d.buffered() <= 5 + max + 300);
        }
        let _ = d.finish_stream();
    }

    /// zstd as gzip above: messages round-trip, and inflating anything never panics and
    /// never returns more than the limit.
    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_round_trips_and_never_exceeds_its_limit(
        msgs in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..2000), any::<bool>()), 0..8),
        junk in prop::collection::vec(any::<u8>(), 0..300),
        max in 0usize..512,
    ) {
        let mut wire = BytesMut::new();
        for (m, z) in &msgs {
            encode_message(m, z.then_some(Compression::Zstd), &mut wire).unwrap();
        }
        let mut d = MessageDecoder::new(4096, Some(Compression::Zstd));
        d.push(wire.freeze());
        let mut got = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            got.push((m.bytes.to_vec(), m.compressed));
        }
        prop_assert_eq!(got, msgs);
        // Arbitrary bytes, and arbitrary bytes behind a zstd magic number.
        let mut magic = vec![0x28, 0xb5, 0x2f, 0xfd];
        magic.extend_from_slice(&junk);
        for body in [&junk, &magic] {
            if let Ok(b) = rpc_transport_grpc::codec::decompress(Compression::Zstd, body, max) {
                prop_assert!(b.len() <= max);
            }
        }
    }

    #[test]
    fn timeouts_round_trip_never_shorter(nanos in 0u64..(1u64 << 62)) {
        let t = Duration::from_nanos(nanos);
        let enc = encode_timeout(t);
        prop_assert!(enc.len() <= 9);
        let back = parse_timeout(enc.as_bytes()).unwrap();
        prop_assert!(back >= t, "{:?} -> {} -> {:?}", t, enc, back);
    }

    #[test]
    fn timeout_parsing_never_panics(v in prop::collection::vec(any::<u8>(), 0..12)) {
        let _ = parse_timeout(&v);
    }

    #[test]
    fn grpc_message_round_trips(s in any::<String>()) {
        let enc = percent_encode_message(&s);
        prop_assert!(enc.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        prop_assert_eq!(percent_decode_message(enc.as_bytes()), s);
    }

    #[test]
    fn grpc_message_decoding_never_panics(v in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = percent_decode_message(&v);
    }

    #[test]
    fn bin_values_round_trip_padded_or_not(v in prop::collection::vec(any::<u8>(), 0..64)) {
        let enc = encode_bin(&v);
        prop_assert_eq!(&decode_bin(enc.as_bytes()).unwrap()[..], &v[..]);
        let mut padded = enc.clone();
        while padded.len() % 4 != 0 {
            padded.push('=');
        }
        prop_assert_eq!(&decode_bin(padded.as_bytes()).unwrap()[..], &v[..]);
    }

    #[test]
    fn bin_decoding_never_panics(v in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_bin(&v);
    }
}
