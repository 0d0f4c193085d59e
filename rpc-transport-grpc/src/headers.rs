//! Between `rpc_core` values (metadata, status) and HTTP/2 header maps. Pure.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rpc_core::status::{BIZ_MESSAGE_KEY, BIZ_STATUS_KEY};
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

/// Whether [`metadata_from`] makes exactly `md` of `headers`: the same user headers in the same
/// order, each a text value whose bytes are `md`'s (a `-bin` header never matches). So a
/// connection's calls that carry the same metadata can share one copy of it.
pub(crate) fn metadata_matches(headers: &HeaderMap, md: &Metadata) -> bool {
    let mut want = md.iter();
    for (name, value) in headers {
        let key = name.as_str();
        if is_reserved_header(key) {
            continue;
        }
        match want.next() {
            Some((k, MetadataValue::Text(t)))
                if k == key && t.as_bytes() == value.as_bytes() && !is_bin_key(key) => {}
            _ => return false,
        }
    }
    want.next().is_none()
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
/// A business status ([`Status::biz_error`]) goes out as Kitex's gRPC transport sends one:
/// `grpc-status: 13` (INTERNAL) with its message; its `biz-status` and `biz-extra` trailers
/// come from the status metadata (see [`status_trailer`]).
pub fn append_status(headers: &mut HeaderMap, status: &Status) {
    let code = if status.biz_status().is_some() {
        Code::Internal
    } else {
        status.code()
    };
    headers.insert(GRPC_STATUS, HeaderValue::from(code.as_i32()));
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

/// The metadata a status adds to the trailers: all of it, except that a business status's
/// `biz-message` is left out (Kitex sends the message as `grpc-message` only, and its
/// clients read it from there).
pub fn status_trailer(status: &Status) -> Metadata {
    let mut md = status.metadata().clone();
    if status.biz_status().is_some() {
        md.remove(BIZ_MESSAGE_KEY);
    }
    md
}

/// A received error status with its trailers attached as its metadata. Trailers with a
/// decimal `biz-status` (Kitex's business status, paired with any non-OK `grpc-status`) make
/// it the business status [`Status::biz_error`] would have made — code `UNKNOWN`, the
/// `grpc-message`, `transport_code() == Some(biz code)`, `biz-message` added when absent —
/// so it reads the same as one received over TTHeader.
pub fn status_with_trailers(status: Status, trailers: &Metadata) -> Status {
    if status.is_ok() {
        return status;
    }
    let biz = trailers
        .get_str(BIZ_STATUS_KEY)
        .and_then(|c| c.trim().parse::<i32>().ok());
    let Some(code) = biz else {
        return status.with_metadata(trailers.clone());
    };
    let mut md = trailers.clone();
    if !md.contains_key(BIZ_MESSAGE_KEY) {
        md.insert(BIZ_MESSAGE_KEY, status.message().to_owned());
    }
    Status::unknown(status.message())
        .with_details(status.details().clone())
        .with_metadata(md)
        .with_transport_code(code)
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
    fn metadata_matches_only_what_metadata_from_would_make() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("user-agent", HeaderValue::from_static("ua/1"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let md = metadata_from(&h).unwrap();
        assert!(metadata_matches(&h, &md));
        assert!(metadata_matches(&h, &md.clone().into_shared()));
        // A different value, a missing or an extra header, another order: no match.
        let mut other = h.clone();
        other.insert("user-agent", HeaderValue::from_static("ua/2"));
        assert!(!metadata_matches(&other, &md));
        let mut fewer = h.clone();
        fewer.remove("x-a");
        assert!(!metadata_matches(&fewer, &md));
        let mut more = h.clone();
        more.insert("x-b", HeaderValue::from_static("3"));
        assert!(!metadata_matches(&more, &md));
        let mut order = HeaderMap::new();
        order.append("x-a", HeaderValue::from_static("2"));
        order.append("x-a", HeaderValue::from_static("1"));
        order.insert("user-agent", HeaderValue::from_static("ua/1"));
        assert!(!metadata_matches(&order, &md));
        // Reserved headers do not count; binary metadata never matches.
        let mut reserved = h.clone();
        reserved.insert("grpc-timeout", HeaderValue::from_static("1S"));
        assert!(metadata_matches(&reserved, &md));
        let mut bin = HeaderMap::new();
        bin.insert("x-d-bin", HeaderValue::from_static("AAE"));
        assert!(!metadata_matches(&bin, &metadata_from(&bin).unwrap()));
        assert!(metadata_matches(&HeaderMap::new(), &Metadata::new()));
    }

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

    /// A business status's trailer block, header for header, is what Kitex's nphttp2
    /// `WriteStatus` writes for a `BizStatusError`; and Kitex's block reads back as the same
    /// business status.
    #[test]
    fn biz_status_trailers_are_kitex_s() {
        let s = Status::biz_error(4001, "insufficient balance", Some(r#"{"k":"v"}"#.into()));
        let mut h = HeaderMap::new();
        append_status(&mut h, &s);
        append_metadata(&mut h, &status_trailer(&s)).unwrap();
        let mut got: Vec<_> = h
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("biz-extra", r#"{"k":"v"}"#),
                ("biz-status", "4001"),
                ("grpc-message", "insufficient balance"),
                ("grpc-status", "13"),
            ]
        );
        // Read back (Kitex's block is the same bytes): the status a TTHeader peer would get.
        let read = status_with_trailers(status_from(&h).unwrap(), &metadata_from(&h).unwrap());
        assert_eq!(read.code(), Code::Unknown);
        assert_eq!(read.message(), "insufficient balance");
        assert_eq!(read.transport_code(), Some(4001));
        assert_eq!(read.biz_status(), s.biz_status());
        // Without `biz-extra` (Kitex leaves it out when the map is empty), and with a
        // `biz-status` that is not a number (an ordinary error then).
        let mut h = HeaderMap::new();
        h.insert(GRPC_STATUS, HeaderValue::from_static("13"));
        h.insert("biz-status", HeaderValue::from_static("7"));
        let read = status_with_trailers(status_from(&h).unwrap(), &metadata_from(&h).unwrap());
        let biz = read.biz_status().unwrap();
        assert_eq!((biz.code, biz.message.as_str(), biz.extra), (7, "", None));
        h.insert("biz-status", HeaderValue::from_static("x"));
        let read = status_with_trailers(status_from(&h).unwrap(), &metadata_from(&h).unwrap());
        assert_eq!((read.code(), read.transport_code()), (Code::Internal, None));
        assert!(read.biz_status().is_none());
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
