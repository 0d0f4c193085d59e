//! The TTHeader packet decoder (`proto::header`): arbitrary bytes, whole or in chunks.
//!
//! Asserts, beyond "no panic":
//! - the decoder contract: `Ok(None)` leaves the buffer's bytes as they were, and feeding the
//!   same bytes in any chunking yields the same packets and the same final error;
//! - allocation: the buffer never grows past twice the larger of the input and the
//!   configured frame limit (a hostile LENGTH costs nothing beyond the limit);
//! - round trip: every decoded packet re-encodes (or fails with a typed error), decodes back
//!   equal and re-encodes to the same bytes; `decode_whole` of its exact bytes agrees.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpc_fuzz::{chunks, split2, split_first};
use rpc_transport_ttheader::proto::{detect, FrameError, Limits, Packet};

/// The frame limits a run picks from (the default 16 MiB among them).
const LIMITS: [usize; 4] = [
    64,
    4096,
    1 << 20,
    rpc_transport_ttheader::proto::DEFAULT_MAX_FRAME_SIZE,
];

/// Decodes everything in `input` fed as `parts`: the packets with their wire bytes, and the
/// outcome that stopped it (`None`: a prefix of a packet is left).
fn decode_all(parts: &[&[u8]], limits: &Limits) -> (Vec<(Packet, Bytes)>, Option<FrameError>) {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            let before = buf.clone();
            match Packet::decode(&mut buf, limits) {
                Ok(Some(p)) => {
                    let used = before.len() - buf.len();
                    out.push((p, before.freeze().slice(..used)));
                }
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) must leave the bytes as they were");
                    let bound = 2 * total.max(limits.max_frame_size + 4).max(64);
                    assert!(
                        buf.capacity() <= bound,
                        "buffer grew to {} for {total} input bytes (limit {})",
                        buf.capacity(),
                        limits.max_frame_size
                    );
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let (config, data) = split_first(data);
    let limits = Limits::new().with_max_frame_size(LIMITS[usize::from(config & 3)]);
    let (sizes, wire) = split2(data);
    let _ = detect(wire);

    let (whole, end) = decode_all(&[wire], &limits);
    let parts = chunks(wire, sizes);
    let (chunked, chunked_end) = decode_all(&parts, &limits);
    assert_eq!(whole.len(), chunked.len(), "chunking changed the packets");
    for ((a, _), (b, _)) in whole.iter().zip(&chunked) {
        assert_eq!(a, b, "chunking changed a packet");
    }
    assert_eq!(end, chunked_end, "chunking changed the error");

    for (p, raw) in whole {
        assert_eq!(
            Packet::decode_whole(raw.clone(), &limits).as_ref(),
            Ok(&p),
            "decode_whole disagrees with decode"
        );
        let mut enc = BytesMut::new();
        if p.encode(&mut enc).is_err() {
            // e.g. more than 65535 entries once repeated blocks are merged: refused, typed.
            continue;
        }
        assert!(enc.len() <= raw.len(), "re-encoding grew the packet");
        let mut again = enc.clone();
        let back = Packet::decode(&mut again, &Limits::new())
            .expect("a re-encoded packet decodes")
            .expect("whole");
        assert!(again.is_empty());
        assert_eq!(back, p, "round trip changed the packet");
        let mut enc2 = BytesMut::new();
        back.encode(&mut enc2).expect("encodes again");
        assert_eq!(enc2, enc, "re-encoding is not stable");
    }
});
