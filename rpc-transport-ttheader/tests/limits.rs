//! Size limits and framing checks: every bad length is rejected as soon as its bytes arrive and
//! before the buffer grows for the frame.

mod common;

use bytes::{BufMut, BytesMut};
use common::vector;
use rpc_transport_ttheader::proto::header::MIN_LENGTH;
use rpc_transport_ttheader::proto::{
    FrameError, Limits, Packet, ProtocolId, StreamFrame, StreamProtocol, DEFAULT_MAX_FRAME_SIZE,
};

/// LENGTH, MAGIC, FLAGS, SEQUENCE ID, HEADER SIZE.
fn fixed(length: u32, header_words: u16) -> BytesMut {
    let mut b = BytesMut::with_capacity(64);
    b.put_u32(length);
    b.put_u16(0x1000);
    b.put_u16(0);
    b.put_i32(1);
    b.put_u16(header_words);
    b
}

#[test]
fn default_limit_is_16_mib() {
    assert_eq!(DEFAULT_MAX_FRAME_SIZE, 16 * 1024 * 1024);
    assert_eq!(Limits::default().max_frame_size, DEFAULT_MAX_FRAME_SIZE);
}

#[test]
fn oversized_length_is_rejected_before_allocating() {
    for length in [DEFAULT_MAX_FRAME_SIZE as u32 + 1, 0x7fff_ffff, u32::MAX] {
        // Only the 4-byte LENGTH has arrived.
        let mut b = BytesMut::with_capacity(16);
        b.put_u32(length);
        assert_eq!(
            Packet::decode(&mut b, &Limits::default()),
            Err(FrameError::TooLarge {
                length,
                max: DEFAULT_MAX_FRAME_SIZE
            })
        );
        assert!(b.capacity() < 1024, "capacity grew to {}", b.capacity());
        assert_eq!(b.len(), 4, "input consumed");

        // With the whole fixed part.
        let mut b = fixed(length, 1);
        let cap = b.capacity();
        assert!(matches!(
            Packet::decode(&mut b, &Limits::default()),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(b.capacity(), cap);
    }
}

#[test]
fn configurable_limit_is_inclusive() {
    let limits = Limits::new().with_max_frame_size(100);
    let mut b = fixed(101, 1);
    assert_eq!(
        Packet::decode(&mut b, &limits),
        Err(FrameError::TooLarge {
            length: 101,
            max: 100
        })
    );
    assert!(b.capacity() < 101);

    // LENGTH == limit: accepted; once the length is known, the rest of the frame is reserved.
    let mut b = fixed(100, 1);
    b.put_slice(&[0, 0, 0, 0]);
    assert_eq!(Packet::decode(&mut b, &limits), Ok(None));
    assert!(b.capacity() >= 104);
    b.put_bytes(0xab, 100 - 14);
    let p = Packet::decode(&mut b, &limits).unwrap().unwrap();
    assert_eq!(p.payload.len(), 86);
    assert!(b.is_empty());
}

#[test]
fn encoded_frame_larger_than_limit_is_rejected_by_decoder() {
    let f = StreamFrame::data(1, "M", StreamProtocol::Thrift, vec![0u8; 1000].into());
    let mut b = BytesMut::new();
    f.encode(&mut b).unwrap();
    let len = b.len() as u32 - 4;
    assert_eq!(
        StreamFrame::decode(&mut b, &Limits::new().with_max_frame_size(999)),
        Err(FrameError::TooLarge {
            length: len,
            max: 999
        })
    );
}

#[test]
fn length_below_minimum_is_an_error() {
    assert_eq!(MIN_LENGTH, 14);
    for length in [0, 1, 10, 13] {
        let mut b = BytesMut::new();
        b.put_u32(length);
        assert_eq!(
            Packet::decode(&mut b, &Limits::default()),
            Err(FrameError::TooShort { length, min: 14 })
        );
    }
}

#[test]
fn header_size_zero_is_an_error_as_soon_as_it_arrives() {
    let mut b = fixed(100, 0);
    assert_eq!(
        Packet::decode(&mut b, &Limits::default()),
        Err(FrameError::ZeroHeaderSize)
    );
}

#[test]
fn header_size_bigger_than_frame_is_an_error() {
    // LENGTH 30 leaves 20 bytes after the fixed fields; 6 words = 24 bytes do not fit.
    let mut b = fixed(30, 6);
    assert_eq!(
        Packet::decode(&mut b, &Limits::default()),
        Err(FrameError::HeaderSizeOverflow {
            header_bytes: 24,
            available: 20
        })
    );
    // 5 words fit exactly: empty payload.
    let mut b = fixed(30, 5);
    b.put_bytes(0, 20);
    let p = Packet::decode(&mut b, &Limits::default()).unwrap().unwrap();
    assert!(p.payload.is_empty());
    // The largest HEADER SIZE with a small LENGTH.
    let mut b = fixed(1000, u16::MAX);
    assert!(matches!(
        Packet::decode(&mut b, &Limits::default()),
        Err(FrameError::HeaderSizeOverflow { .. })
    ));
}

#[test]
fn bad_magic_is_an_error_at_six_bytes() {
    // The HTTP/2 preface on a TTHeader-only port: "PRI " is a 1.3 GB LENGTH, over the limit...
    let mut b = BytesMut::from(&b"PRI * HTTP/2.0"[..]);
    assert!(matches!(
        Packet::decode(&mut b, &Limits::default()),
        Err(FrameError::TooLarge { .. })
    ));
    // ...and with a small LENGTH, the magic is checked before the frame is complete.
    let mut b = BytesMut::from(&[0, 0, 0, 20, 0x20, 0x00][..]);
    assert_eq!(
        Packet::decode(&mut b, &Limits::default()),
        Err(FrameError::BadMagic { magic: 0x2000 })
    );
}

#[test]
fn frame_at_the_u16_header_limit_round_trips() {
    // 65535 words of header: the largest HEADER SIZE. Strings padded to hit it exactly.
    let mut p = Packet::new(0, 1, ProtocolId::ThriftBinary);
    // 2 (preamble) + 3 (block) + 4 × (2 + 1 + 2 + v) must equal 65535 × 4 = 262140.
    let per_entry = (262_140 - 5) / 4; // 65533 rem 3
    let v = per_entry - 5;
    for k in ["a", "b", "c"] {
        p.headers.push_str(k, "x".repeat(v));
    }
    p.headers.push_str("d", "x".repeat(v + 3));
    let mut b = BytesMut::new();
    p.encode(&mut b).unwrap();
    assert_eq!(u16::from_be_bytes([b[12], b[13]]), u16::MAX);
    let back = Packet::decode(&mut b, &Limits::default()).unwrap().unwrap();
    assert_eq!(back, p);
}

#[test]
fn partial_vector_reserves_the_rest_of_the_frame() {
    let v = vector("unary_framed_call_with_headers");
    let mut b = BytesMut::with_capacity(16);
    b.put_slice(&v[..16]);
    assert_eq!(Packet::decode(&mut b, &Limits::default()), Ok(None));
    assert_eq!(&b[..], &v[..16], "Ok(None) must not consume input");
    assert!(b.capacity() >= v.len());
}
