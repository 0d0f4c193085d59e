//! The gRPC header codecs (`rpc_transport_grpc::codec`, `headers`): `grpc-timeout`,
//! `grpc-message` percent-encoding, `-bin` base64 values, and whole header blocks read into
//! metadata and a status, on arbitrary bytes.
//!
//! Asserts, beyond "no panic":
//! - `grpc-timeout`: a parsed value is at most 99,999,999 hours; encoding any duration gives
//!   at most 8 digits and a unit, parses back to no less than it (never earlier than the
//!   client's deadline), and encodes to itself again;
//! - `grpc-message`: encoding any text gives a valid header value that decodes to the text;
//! - `-bin`: any bytes survive encode/decode, and what decodes re-encodes to the same bytes;
//! - header blocks: metadata read from any valid block holds no reserved key, writes back
//!   (`append_metadata`) and reads back equal; a status read back from the block it was
//!   written to has the same code, message and details.
#![no_main]

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rpc_core::Metadata;
use rpc_transport_grpc::codec::{
    decode_bin, encode_bin, encode_timeout, is_reserved_header, parse_timeout,
    percent_decode_message, percent_encode_message,
};
use rpc_transport_grpc::{append_metadata, append_status, metadata_from, status_from};

fn entries(md: &Metadata) -> Vec<(String, Vec<u8>, bool)> {
    md.iter()
        .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec(), v.as_str().is_some()))
        .collect()
}

fn timeout_round_trip(d: Duration) {
    let s = encode_timeout(d);
    assert!(s.len() <= 9, "{s}");
    let back = parse_timeout(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"));
    // 99,999,999 hours is the most the header can say; longer deadlines are cut to it.
    let cap = Duration::from_secs(99_999_999 * 3600);
    assert!(
        back >= d.min(cap),
        "{d:?} encoded as {s} reads back as {back:?}"
    );
    assert_eq!(encode_timeout(back), s, "not stable");
}

fuzz_target!(|data: &[u8]| {
    // grpc-timeout
    if let Ok(d) = parse_timeout(data) {
        assert!(d <= Duration::from_secs(99_999_999 * 3600));
        timeout_round_trip(d);
    }
    if data.len() >= 12 {
        let secs = u64::from_le_bytes(data[..8].try_into().unwrap());
        let nanos = u32::from_le_bytes(data[8..12].try_into().unwrap()) % 1_000_000_000;
        timeout_round_trip(Duration::new(secs, nanos));
    }

    // grpc-message
    let text = String::from_utf8_lossy(data);
    let enc = percent_encode_message(&text);
    assert!(
        HeaderValue::from_str(&enc).is_ok(),
        "{enc:?} is not a header value"
    );
    assert_eq!(percent_decode_message(enc.as_bytes()), text);
    let _ = percent_decode_message(data);

    // -bin
    assert_eq!(
        &decode_bin(encode_bin(data).as_bytes()).expect("own encoding")[..],
        data
    );
    if let Ok(b) = decode_bin(data) {
        assert_eq!(
            decode_bin(encode_bin(&b).as_bytes()).expect("own encoding"),
            b
        );
    }

    // A header block: lines of `name:value`, the valid ones kept.
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    if let Ok(md) = metadata_from(&headers) {
        assert!(md.iter().all(|(k, _)| !is_reserved_header(k)));
        let mut written = HeaderMap::new();
        append_metadata(&mut written, &md).expect("metadata read from headers writes back");
        let back = metadata_from(&written).expect("reads back");
        assert_eq!(entries(&back), entries(&md));
    }
    if let Some(status) = status_from(&headers) {
        let mut written = HeaderMap::new();
        append_status(&mut written, &status);
        let back = status_from(&written).expect("a status was written");
        assert_eq!(back.code(), status.code());
        assert_eq!(back.message(), status.message());
        assert_eq!(back.details(), status.details());
    }
});
