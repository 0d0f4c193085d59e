//! Protocol detection on a fresh server connection (spec §1 "Detection").

use super::keys;

/// The HTTP/2 client connection preface that starts every gRPC connection.
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detection {
    /// Too few bytes to decide; read more.
    NeedMore,
    /// TTHeader unary (pingpong), FLAGS without the streaming bit.
    TTHeader,
    /// TTHeader Streaming (FLAGS & 0x0002).
    TTHeaderStreaming,
    /// The HTTP/2 client preface: gRPC.
    Http2,
    /// None of the above.
    Unknown,
}

/// Classifies a connection by its first bytes: bytes 4..6 `10 00` is TTHeader and FLAGS (bytes
/// 6..8) tell streaming from unary; the full 24-byte HTTP/2 preface is gRPC. A connection
/// carries one kind only, so this runs once per connection.
pub fn detect(prefix: &[u8]) -> Detection {
    if let Some(m) = prefix.get(4..6) {
        if u16::from_be_bytes([m[0], m[1]]) == keys::MAGIC {
            return match prefix.get(6..8) {
                None => Detection::NeedMore,
                Some(f) if u16::from_be_bytes([f[0], f[1]]) & keys::FLAGS_STREAMING != 0 => {
                    Detection::TTHeaderStreaming
                }
                Some(_) => Detection::TTHeader,
            };
        }
    }
    let n = prefix.len().min(HTTP2_PREFACE.len());
    if prefix[..n] == HTTP2_PREFACE[..n] {
        if n == HTTP2_PREFACE.len() {
            Detection::Http2
        } else {
            Detection::NeedMore
        }
    } else if prefix.len() < 6 {
        Detection::NeedMore
    } else {
        Detection::Unknown
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
        assert_eq!(detect(&HTTP2_PREFACE[..10]), Detection::NeedMore);
        assert_eq!(detect(HTTP2_PREFACE), Detection::Http2);
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detection::Unknown);
        assert_eq!(detect(b"GET"), Detection::NeedMore);
    }
}
