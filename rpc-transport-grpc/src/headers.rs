//! Between `rpc_core` values (metadata, status) and HTTP/2 header maps. Pure.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rpc_core::{Code, Metadata, MetadataValue, Status};

use crate::codec::{
    decode_bin, encode_bin, is_bin_key, is_reserved_header, percent_decode_message,
    percent_encode_message,
};

/// `grpc-status`.
pub(crate) const GRPC_STATUS: &str = "grpc-status";
/// `grpc-message`.
pub(crate) const GRPC_MESSAGE: &str = "grpc-message";
/// `grpc-status-details-bin`.
pub(crate) const GRPC_STATUS_DETAILS: &str = "grpc-status-details-bin";

/// Appends user metadata to `headers`: keys lower-cased, reserved keys dropped (the
/// transport owns them), `-bin` values base64-encoded. A key that is not a valid header
/// name, a text value that is not a valid header value, or a binary value under a key
/// without `-bin` fails with `INTERNAL`.
pub fn append_metadata(headers: &mut HeaderMap, md: &Metadata) -> Result<(), Status> {
    for (key, value) in md.iter() {
        let lower = key.to_ascii_lowercase();
        if is_reserved_header(&lower) {
            continue;
        }
        let name = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| Status::internal(format!("invalid metadata key {key:?}")))?;
        let value = if is_bin_key(&lower) {
            HeaderValue::from_str(&encode_bin(value.as_bytes()))
        } else {
            match value {
                MetadataValue::Text(s) => HeaderValue::from_str(s),
                MetadataValue::Binary(_) => {
                    return Err(Status::internal(format!(
                        "binary metadata value under key {key:?}, which does not end in -bin"
                    )))
                }
            }
        }
        .map_err(|_| Status::internal(format!("invalid value for metadata key {key:?}")))?;
        headers.append(name, value);
    }
    Ok(())
}

/// The user metadata in `headers`: reserved headers left out, `-bin` values decoded (padded
/// or unpadded base64; malformed is `INTERNAL`), text values as text.
pub fn metadata_from(headers: &HeaderMap) -> Result<Metadata, Status> {
    let mut md = Metadata::new();
    for (name, value) in headers {
        let key = name.as_str();
        if is_reserved_header(key) {
            continue;
        }
        if is_bin_key(key) {
            md.append(key, decode_bin(value.as_bytes())?);
        } else {
            let text = match value.to_str() {
                Ok(s) => s.to_owned(),
                Err(_) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
            };
            match WELL_KNOWN.iter().find(|k| **k == key) {
                Some(k) => md.append_static(k, text),
                None => md.append(key, text),
            }
        }
    }
    Ok(md)
}

/// Header names that arrive on many calls (clients send `user-agent` on every one): their
/// metadata keys are these static strings instead of a copy per call.
const WELL_KNOWN: &[&str] = &[
    "user-agent",
    "authorization",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// Appends `grpc-status`, `grpc-message` (percent-encoded) and `grpc-status-details-bin`.
pub fn append_status(headers: &mut HeaderMap, status: &Status) {
    headers.insert(GRPC_STATUS, HeaderValue::from(status.code().as_i32()));
    if !status.message().is_empty() {
        let msg = percent_encode_message(status.message());
        if let Ok(v) = HeaderValue::from_str(&msg) {
            headers.insert(GRPC_MESSAGE, v);
        }
    }
    if !status.details().is_empty() {
        if let Ok(v) = HeaderValue::from_str(&encode_bin(status.details())) {
            headers.insert(GRPC_STATUS_DETAILS, v);
        }
    }
}

/// The status in a trailer block (or a Trailers-Only header block), with the block's user
/// metadata attached to it; `None` when it has no `grpc-status`.
pub fn status_from(headers: &HeaderMap) -> Option<Status> {
    let code = headers.get(GRPC_STATUS)?;
    let code = std::str::from_utf8(code.as_bytes())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let Some(code) = code else {
        return Some(Status::internal("malformed grpc-status"));
    };
    let message = headers
        .get(GRPC_MESSAGE)
        .map(|m| percent_decode_message(m.as_bytes()))
        .unwrap_or_default();
    let mut status = Status::new(Code::from_i32(code), message);
    if let Some(d) = headers.get(GRPC_STATUS_DETAILS) {
        if let Ok(d) = decode_bin(d.as_bytes()) {
            status = status.with_details(d);
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn metadata_round_trips_with_binary_and_reserved_keys_dropped() {
        let mut md = Metadata::new();
        md.append("X-Text", "hello");
        md.append("x-data-bin", Bytes::from_static(b"\x00\xff\x10"));
        md.append("grpc-timeout", "1S");
        md.append("content-type", "text/plain");
        let mut h = HeaderMap::new();
        append_metadata(&mut h, &md).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h["x-data-bin"], "AP8Q");
        let back = metadata_from(&h).unwrap();
        assert_eq!(back.get_str("x-text"), Some("hello"));
        assert_eq!(back.get("x-data-bin").unwrap().as_bytes(), b"\x00\xff\x10");
    }

    #[test]
    fn binary_under_a_text_key_is_refused() {
        let mut md = Metadata::new();
        md.append("x-data", Bytes::from_static(b"\x00"));
        assert_eq!(
            append_metadata(&mut HeaderMap::new(), &md)
                .unwrap_err()
                .code(),
            Code::Internal
        );
    }

    #[test]
    fn status_round_trips() {
        let s = Status::new(Code::NotFound, "ünïcode\n%")
            .with_details(Bytes::from_static(b"\x01\x02\x03"));
        let mut h = HeaderMap::new();
        append_status(&mut h, &s);
        let back = status_from(&h).unwrap();
        assert_eq!(back.code(), Code::NotFound);
        assert_eq!(back.message(), "ünïcode\n%");
        assert_eq!(&back.details()[..], b"\x01\x02\x03");
        assert!(status_from(&HeaderMap::new()).is_none());
    }
}
