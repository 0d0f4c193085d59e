//! Protocol detection on a fresh server connection (spec §1 "Detection").

use super::keys;
use super::plain::{detect_plain, PlainFraming};

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detection {
    /// Too few bytes to decide; read more.
    NeedMore,
    /// TTHeader unary, FLAGS without the streaming bit.
    TTHeader,
    /// TTHeader Streaming (FLAGS & 0x0002).
    TTHeaderStreaming,
    /// Plain Thrift without TTHeader, framed or buffered ([`super::plain`]).
    Plain(PlainFraming),
    /// Not TTHeader, whatever follows.
    Unknown,
}

/// Classifies a connection by its first bytes: bytes 4..6 `10 00` is TTHeader and FLAGS (bytes
/// 6..8) tell streaming from unary; plain Thrift (framed or buffered, strict or old non-strict
/// envelope) is told by [`detect_plain`]. Anything else is [`Detection::Unknown`] as soon as
/// the bytes rule every kind out (other protocols, gRPC among them, are told apart by the
/// serving layer). A connection carries one kind only, so this runs once per connection.
pub fn detect(prefix: &[u8]) -> Detection {
    // Plain first: a strict buffered message starts `80 01`, which as a TTHeader LENGTH would
    // be a 2 GiB frame no limit allows.
    let plain = detect_plain(prefix);
    if let Ok(Some(framing)) = plain {
        return Detection::Plain(framing);
    }
    match (detect_ttheader(prefix), plain) {
        (Detection::Unknown, Err(())) => Detection::NeedMore,
        (d, _) => d,
    }
}

fn detect_ttheader(prefix: &[u8]) -> Detection {
    let magic = keys::MAGIC.to_be_bytes();
    let seen = prefix.get(4..).unwrap_or_default();
    let n = seen.len().min(2);
    if seen[..n] != magic[..n] {
        return Detection::Unknown;
    }
    match prefix.get(6..8) {
        None => Detection::NeedMore,
        Some(f) if u16::from_be_bytes([f[0], f[1]]) & keys::FLAGS_STREAMING != 0 => {
            Detection::TTHeaderStreaming
        }
        Some(_) => Detection::TTHeader,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_prefixes() {
        assert_eq!(detect(b""), Detection::NeedMore);
        assert_eq!(detect(&[0, 0, 0, 30, 0x10, 0]), Detection::NeedMore);
        assert_eq!(detect(&[0, 0, 0, 30, 0x10, 0, 0, 0]), Detection::TTHeader);
        assert_eq!(detect(&[0, 0, 0, 30, 0x10, 0, 0, 1]), Detection::TTHeader);
        assert_eq!(
            detect(&[0, 0, 0, 30, 0x10, 0, 0, 2]),
            Detection::TTHeaderStreaming
        );
        assert_eq!(
            detect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Detection::Unknown
        );
        assert_eq!(detect(b"PRI * "), Detection::Unknown);
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detection::Unknown);
        assert_eq!(detect(b"GET"), Detection::NeedMore);
        assert_eq!(detect(&[0, 0, 0, 30, 0x10]), Detection::NeedMore);
        assert_eq!(detect(&[0, 0, 0, 30, 0x11]), Detection::Unknown);
        assert_eq!(
            detect(&[0x80, 1, 0, 1]),
            Detection::Plain(PlainFraming::Buffered)
        );
        assert_eq!(
            detect(&[0, 0, 0, 30, 0x80, 1, 0, 1]),
            Detection::Plain(PlainFraming::Framed)
        );
        // Undecided until byte 4 rules out plain thrift and TTHeader alike.
        assert_eq!(detect(&[0, 0, 0, 30]), Detection::NeedMore);
    }
}
