//! The TTHeader Streaming frame decoders (`proto::frame`): `StreamFrame::read` (what the
//! session reader uses), its allocation-free fast paths `peek_plain` and `decode_data`, and
//! `read_whole` (shared memory), on arbitrary bytes.
//!
//! Asserts, beyond "no panic":
//! - the fast paths agree with the full decoder whenever they return a frame (same stream id,
//!   kind, length and payload), and leave the buffer alone when they do not;
//! - `read_whole` of a frame's exact bytes gives what `read` gave;
//! - round trip: a decoded frame re-encodes, decodes back equal and re-encodes to the same
//!   bytes; the frame kept through `Packet` conversion is the same frame.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpc_fuzz::split_first;
use rpc_transport_ttheader::proto::{FrameKind, Limits, Packet, StreamFrame};

const LIMITS: [usize; 4] = [
    64,
    4096,
    1 << 20,
    rpc_transport_ttheader::proto::DEFAULT_MAX_FRAME_SIZE,
];

fuzz_target!(|data: &[u8]| {
    let (config, wire) = split_first(data);
    let limits = Limits::new().with_max_frame_size(LIMITS[usize::from(config & 3)]);
    let mut buf = BytesMut::from(wire);
    loop {
        let before = buf.clone().freeze();
        let plain = StreamFrame::peek_plain(&before, &limits);
        let mut fast = buf.clone();
        let data = StreamFrame::decode_data(&mut fast, &limits);
        if data.is_none() {
            assert_eq!(
                fast, buf,
                "decode_data must leave the buffer alone when it declines"
            );
        }
        let read = match StreamFrame::read(&mut buf, &limits) {
            Ok(Some(r)) => r,
            Ok(None) => {
                assert!(
                    plain.is_none() && data.is_none(),
                    "fast path saw a frame the decoder did not"
                );
                break;
            }
            Err(_) => {
                assert!(
                    plain.is_none() && data.is_none(),
                    "fast path accepted a malformed packet"
                );
                break;
            }
        };
        let used = before.len() - buf.len();
        let raw: Bytes = before.slice(..used);
        assert_eq!(
            StreamFrame::read_whole(raw.clone(), &limits),
            Ok(read.clone()),
            "read_whole disagrees with read"
        );
        if let Some(p) = plain {
            let f = read.as_ref().expect("a plain frame is a valid frame");
            assert_eq!((p.stream_id, p.kind, p.len), (f.stream_id, f.kind, used));
            assert_eq!(raw.slice(p.payload_at..), f.payload);
            assert!(f.headers.str_kvs.is_empty() && f.headers.acl_token.is_none());
        }
        if let Some(d) = &data {
            let f = read
                .as_ref()
                .expect("a Data frame from the fast path is valid");
            assert_eq!(f.kind, FrameKind::Data);
            assert_eq!(
                (d.stream_id, d.protocol, &d.payload),
                (f.stream_id, f.protocol, &f.payload)
            );
            assert_eq!(fast, buf, "decode_data took a different length");
            assert_eq!(StreamFrame::data_of_whole(&raw, &limits).as_ref(), Some(d));
        }
        let Ok(frame) = read else { continue };
        assert!(frame.stream_id != 0 || frame.kind == FrameKind::Meta);
        let mut enc = BytesMut::new();
        if frame.encode(&mut enc).is_err() {
            continue;
        }
        let mut again = enc.clone();
        let back = StreamFrame::decode(&mut again, &Limits::new())
            .expect("a re-encoded frame decodes")
            .expect("whole");
        assert!(again.is_empty());
        assert_eq!(back, frame, "round trip changed the frame");
        let mut enc2 = BytesMut::new();
        back.encode(&mut enc2).expect("encodes again");
        assert_eq!(enc2, enc, "re-encoding is not stable");
        let via_packet = StreamFrame::try_from(Packet::from(frame.clone()));
        assert_eq!(via_packet, Ok(frame), "Packet conversion changed the frame");
    }
});
