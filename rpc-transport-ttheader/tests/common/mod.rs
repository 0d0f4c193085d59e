//! Shared helpers: the golden vectors in `tests/data` (copied from the project's shared vectors;
//! the crate never reads outside itself).

#![allow(dead_code, unreachable_pub)]

use bytes::BytesMut;

/// Every vector, by file stem.
pub const VECTORS: &[(&str, &str)] = &[
    (
        "stream_c2s_header_open",
        include_str!("../data/stream_c2s_header_open.hex"),
    ),
    (
        "stream_data_request_a",
        include_str!("../data/stream_data_request_a.hex"),
    ),
    (
        "stream_data_response_A",
        include_str!("../data/stream_data_response_A.hex"),
    ),
    (
        "stream_rst_cancel",
        include_str!("../data/stream_rst_cancel.hex"),
    ),
    (
        "stream_s2c_header_empty",
        include_str!("../data/stream_s2c_header_empty.hex"),
    ),
    (
        "stream_trailer_biz_status",
        include_str!("../data/stream_trailer_biz_status.hex"),
    ),
    (
        "stream_trailer_empty",
        include_str!("../data/stream_trailer_empty.hex"),
    ),
    (
        "stream_trailer_exception_boom",
        include_str!("../data/stream_trailer_exception_boom.hex"),
    ),
    (
        "unary_call_echo_hi",
        include_str!("../data/unary_call_echo_hi.hex"),
    ),
    (
        "unary_exception_boom",
        include_str!("../data/unary_exception_boom.hex"),
    ),
    (
        "unary_framed_call_with_headers",
        include_str!("../data/unary_framed_call_with_headers.hex"),
    ),
    (
        "unary_reply_echo_hi",
        include_str!("../data/unary_reply_echo_hi.hex"),
    ),
    (
        "volo_client_call_framed_echo_hello",
        include_str!("../data/volo_client_call_framed_echo_hello.hex"),
    ),
    (
        "volo_server_reply_framed_echo_hello",
        include_str!("../data/volo_server_reply_framed_echo_hello.hex"),
    ),
];

/// Parses a `.hex` vector: a `#` description line, then hex bytes with insignificant whitespace.
pub fn parse_hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The bytes of a vector by name.
pub fn vector(name: &str) -> Vec<u8> {
    let (_, text) = VECTORS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no vector {name}"));
    parse_hex(text)
}

/// A buffer holding a vector.
pub fn vector_buf(name: &str) -> BytesMut {
    BytesMut::from(&vector(name)[..])
}
