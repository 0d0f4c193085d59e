//! The sans-IO core of gRPC over HTTP/2: pure, synchronous codecs driven by bytes and header
//! values, never by a socket or a clock.
//!
//! - Message framing: the 5-byte prefix (compressed flag, big-endian length) with a decoder
//!   that checks the length against the receive limit *before* buffering the body
//!   ([`MessageDecoder`], [`encode_message`]).
//! - `grpc-timeout` ([`encode_timeout`], [`parse_timeout`]).
//! - `grpc-message` percent-encoding ([`percent_encode_message`], [`percent_decode_message`]).
//! - `-bin` metadata values in base64, padded or not ([`encode_bin`], [`decode_bin`]).
//! - Reserved headers kept out of user metadata ([`is_reserved_header`]).
//! - HTTP status to gRPC code for non-gRPC peers ([`code_from_http_status`]) and HTTP/2
//!   `RST_STREAM` reasons to gRPC codes ([`code_from_reason`]).
//! - `content-type` ([`content_type_payload`]).

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use rpc_core::{Code, PayloadKind, Status};

use crate::compression::Compression;

/// Bytes of the message prefix: one flag byte and a 4-byte big-endian length.
pub const PREFIX_LEN: usize = 5;

/// One decoded message: its (decompressed) bytes and whether it arrived compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The message bytes, decompressed.
    pub bytes: Bytes,
    /// Whether the per-message compressed flag was set.
    pub compressed: bool,
}

/// A message being assembled from chunks grows with the bytes that arrive up to this size,
/// then reserves the rest of its (checked) length at once (see
/// [`MessageDecoder::held`]): a peer must send this much of a message before the decoder
/// holds more than it sent.
pub const EAGER_ASSEMBLY: usize = 64 * 1024;

/// Decodes length-prefixed messages from the DATA chunks of one stream.
///
/// The length in each prefix is checked against `max_message` before anything of the body is
/// buffered (a prefix claiming 4 GiB is refused after 5 bytes); a compressed message is
/// inflated with the same cap. Errors are final for the stream:
/// `RESOURCE_EXHAUSTED` (too large), `INTERNAL` (compressed flag without a `grpc-encoding`, a
/// flag other than 0 or 1, a corrupt compressed body, a truncated message at the end).
#[derive(Debug)]
pub struct MessageDecoder {
    /// The unconsumed rest of the last chunk (sliced without copying while whole messages
    /// fit in it).
    head: Bytes,
    /// A message split across chunks, being assembled.
    partial: BytesMut,
    max_message: usize,
    encoding: Option<Compression>,
}

impl MessageDecoder {
    /// A decoder accepting messages of at most `max_message` bytes (after decompression),
    /// compressed with `encoding` (the stream's `grpc-encoding`; `None` when absent).
    pub fn new(max_message: usize, encoding: Option<Compression>) -> MessageDecoder {
        MessageDecoder {
            head: Bytes::new(),
            partial: BytesMut::new(),
            max_message,
            encoding,
        }
    }

    /// Adds a DATA chunk. Call [`MessageDecoder::next_message`] until it returns `Ok(None)`
    /// before pushing the next one.
    pub fn push(&mut self, chunk: Bytes) {
        if self.head.is_empty() {
            self.head = chunk;
        } else {
            // Only reached when the caller pushes without draining; keep every byte.
            let mut joined = BytesMut::with_capacity(self.head.len() + chunk.len());
            joined.extend_from_slice(&self.head);
            joined.extend_from_slice(&chunk);
            self.head = joined.freeze();
        }
    }

    /// Bytes buffered and not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.head.len() + self.partial.len()
    }

    /// Memory the decoder holds: the rest of the last chunk and the capacity of the message
    /// being assembled (which grows ahead of its bytes).
    pub fn held(&self) -> usize {
        self.head.len() + self.partial.capacity()
    }

    /// Whether no partial message is buffered (a clean place for the stream to end).
    pub fn is_empty(&self) -> bool {
        self.buffered() == 0
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Decoded>, Status> {
        if self.partial.is_empty() {
            // Fast path: the whole message is inside the current chunk.
            if self.head.len() >= PREFIX_LEN {
                let (flag, len) = self.check_prefix(&self.head[..PREFIX_LEN])?;
                if self.head.len() >= PREFIX_LEN + len {
                    self.head.advance(PREFIX_LEN);
                    let body = self.head.split_to(len);
                    return self.finish(flag, body).map(Some);
                }
            }
            if self.head.is_empty() {
                return Ok(None);
            }
        }
        // Assemble across chunks: take only what the current message still needs.
        loop {
            let need = if self.partial.len() < PREFIX_LEN {
                PREFIX_LEN - self.partial.len()
            } else {
                let (_, len) = self.check_prefix(&self.partial[..PREFIX_LEN])?;
                PREFIX_LEN + len - self.partial.len()
            };
            if need == 0 {
                let (flag, _) = self.check_prefix(&self.partial[..PREFIX_LEN])?;
                let mut whole = std::mem::take(&mut self.partial);
                whole.advance(PREFIX_LEN);
                return self.finish(flag, whole.freeze()).map(Some);
            }
            if self.head.is_empty() {
                return Ok(None);
            }
            let take = need.min(self.head.len());
            if self.partial.capacity() - self.partial.len() < take {
                // The length is known and checked. Up to `EAGER_ASSEMBLY` bytes, memory
                // follows the bytes that really arrive; past it, the rest of the message is
                // reserved at once: one allocation of its exact size, instead of doubling
                // through every size below it (each copied and freed, and kept by the
                // allocator as memory the process still holds).
                let have = self.partial.len() + take;
                let want = if have <= EAGER_ASSEMBLY { take } else { need };
                self.partial.reserve(want);
            }
            self.partial.extend_from_slice(&self.head[..take]);
            self.head.advance(take);
        }
    }

    /// The next message when it is whole inside the current chunk, uncompressed and valid:
    /// handed out as a slice of the chunk, without assembling. `None` otherwise, with
    /// nothing consumed, so [`MessageDecoder::next_message`] then handles it (and reports
    /// what is wrong with it).
    pub fn next_in_chunk(&mut self) -> Option<Bytes> {
        if !self.partial.is_empty() || self.head.len() < PREFIX_LEN {
            return None;
        }
        let len = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]]);
        let len = len as usize;
        if self.head[0] != 0 || len > self.max_message || self.head.len() - PREFIX_LEN < len {
            return None;
        }
        self.head.advance(PREFIX_LEN);
        Some(self.head.split_to(len))
    }

    /// Called when the stream's DATA ended: a partial message left over is an error.
    pub fn finish_stream(&self) -> Result<(), Status> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Status::internal(format!(
                "stream ended inside a message ({} bytes of it received)",
                self.buffered()
            )))
        }
    }

    fn check_prefix(&self, prefix: &[u8]) -> Result<(u8, usize), Status> {
        let flag = prefix[0];
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if flag > 1 {
            return Err(Status::internal(format!(
                "invalid message prefix flag {flag:#04x}"
            )));
        }
        if flag == 1 && self.encoding.is_none() {
            return Err(Status::internal(
                "compressed message without a grpc-encoding header",
            ));
        }
        if len > self.max_message {
            return Err(too_large(len, self.max_message));
        }
        Ok((flag, len))
    }

    fn finish(&self, flag: u8, body: Bytes) -> Result<Decoded, Status> {
        if flag == 0 {
            return Ok(Decoded {
                bytes: body,
                compressed: false,
            });
        }
        let bytes = match self.encoding {
            Some(c) => decompress(c, &body, self.max_message)?,
            None => {
                return Err(Status::internal(
                    "compressed message without a grpc-encoding header",
                ))
            }
        };
        Ok(Decoded {
            bytes,
            compressed: true,
        })
    }
}

fn too_large(len: usize, max: usize) -> Status {
    Status::new(
        Code::ResourceExhausted,
        format!("message of {len} bytes exceeds the receive limit of {max} bytes"),
    )
}

/// Inflates `body` compressed with `c`, refusing more than `max` bytes of output: the output
/// buffer never grows past `max + 1` bytes (a zip bomb is refused with `RESOURCE_EXHAUSTED`
/// after at most that much), and a zstd frame that declares more content than `max`, or a
/// window above [`ZSTD_MAX_WINDOW_LOG`] (or `max`, if larger), is refused before inflating.
pub fn decompress(c: Compression, body: &[u8], max: usize) -> Result<Bytes, Status> {
    match c {
        Compression::Identity => {
            if body.len() > max {
                return Err(too_large(body.len(), max));
            }
            Ok(Bytes::copy_from_slice(body))
        }
        Compression::Gzip => {
            inflate_capped(flate2::read::GzDecoder::new(body), "gzip", body.len(), max)
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd_decompress(body, max),
    }
}

/// What an inflating buffer grows by at least (until the cap): small messages take one or two
/// reads, and a large one doubles its buffer as it goes, never past the cap.
const INFLATE_STEP: usize = 8 * 1024;

fn inflated_too_large(max: usize) -> Status {
    Status::new(
        Code::ResourceExhausted,
        format!("decompressed message exceeds the receive limit of {max} bytes"),
    )
}

/// Reads `r` to its end into a buffer that is never allowed more than `max + 1` bytes (the
/// extra byte tells "exactly `max`" from "more").
fn inflate_capped(
    mut r: impl Read,
    what: &str,
    compressed_len: usize,
    max: usize,
) -> Result<Bytes, Status> {
    let cap = max.saturating_add(1);
    let mut out: Vec<u8> = Vec::new();
    out.reserve_exact(compressed_len.saturating_mul(2).max(INFLATE_STEP).min(cap));
    loop {
        if out.len() > max {
            return Err(inflated_too_large(max));
        }
        if out.len() == out.capacity() {
            let grow = out.capacity().max(INFLATE_STEP).min(cap - out.len());
            out.reserve_exact(grow);
        }
        let filled = out.len();
        out.resize(out.capacity(), 0);
        match r.read(&mut out[filled..]) {
            Ok(0) => {
                out.truncate(filled);
                return Ok(Bytes::from(out));
            }
            Ok(n) => out.truncate(filled + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(filled),
            Err(e) => {
                return Err(if e.to_string().contains("too much memory") {
                    // zstd: the frame's window is above the decoder's limit.
                    Status::new(
                        Code::ResourceExhausted,
                        format!("{what} message needs a larger window than allowed: {e}"),
                    )
                } else {
                    Status::internal(format!("corrupt {what} message: {e}"))
                });
            }
        }
    }
}

/// The largest zstd window (log2 of bytes) we let a frame ask for when the receive limit is
/// smaller: 8 MiB. Streaming encoders that do not know the size up front (tonic's, grpc-go's)
/// declare the window of their level (2 MiB at the default level 3, 8 MiB up to level 19)
/// even for a 10-byte message, and the decoder allocates the window (or the frame's declared
/// content size, when smaller) before inflating. Above the receive limit, the limit (rounded
/// up to a power of two) is the bound instead; zstd's own default is 2^27.
#[cfg(feature = "zstd")]
pub const ZSTD_MAX_WINDOW_LOG: u32 = 23;

#[cfg(feature = "zstd")]
fn zstd_decompress(body: &[u8], max: usize) -> Result<Bytes, Status> {
    // A frame that says how much it holds is refused before anything is inflated.
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(body) {
        if size > u64::try_from(max).unwrap_or(u64::MAX) {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!(
                    "zstd message of {size} bytes (decompressed) exceeds the receive limit of {max} bytes"
                ),
            ));
        }
    }
    let limit_log = usize::BITS - max.saturating_sub(1).leading_zeros();
    let window_log = limit_log.clamp(ZSTD_MAX_WINDOW_LOG, 31);
    let mut dec = zstd::stream::read::Decoder::with_buffer(body)
        .map_err(|e| Status::internal(format!("zstd decoder: {e}")))?;
    dec.window_log_max(window_log)
        .map_err(|e| Status::internal(format!("zstd decoder: {e}")))?;
    inflate_capped(dec, "zstd", body.len(), max)
}

/// Compresses `body` with `c`, appending to `dst`.
pub fn compress(c: Compression, body: &[u8], dst: &mut BytesMut) -> Result<(), Status> {
    match c {
        Compression::Identity => {
            dst.extend_from_slice(body);
            Ok(())
        }
        Compression::Gzip => {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(dst.writer(), flate2::Compression::fast());
            enc.write_all(body)
                .and_then(|()| enc.finish().map(drop))
                .map_err(|e| Status::internal(format!("gzip: {e}")))
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            // One shot, so the frame records its content size (the peer can refuse an
            // oversized message before inflating it) and its window is no larger than the
            // message.
            let start = dst.len();
            let bound = zstd::zstd_safe::compress_bound(body.len());
            dst.resize(start + bound, 0);
            match zstd::bulk::compress_to_buffer(body, &mut dst[start..], ZSTD_LEVEL) {
                Ok(n) => {
                    dst.truncate(start + n);
                    Ok(())
                }
                Err(e) => {
                    dst.truncate(start);
                    Err(Status::internal(format!("zstd: {e}")))
                }
            }
        }
    }
}

/// The zstd level we compress with: 1, the fastest, as gzip's `fast()` (RPC messages are
/// compressed on the call's path; zstd's level 1 already beats gzip's ratio).
#[cfg(feature = "zstd")]
const ZSTD_LEVEL: i32 = 1;

/// Appends one message with its prefix to `dst`: `body` as is (flag 0) or compressed with
/// `compression` (flag 1).
pub fn encode_message(
    body: &[u8],
    compression: Option<Compression>,
    dst: &mut BytesMut,
) -> Result<(), Status> {
    let start = dst.len();
    dst.put_bytes(0, PREFIX_LEN);
    match compression.and_then(Compression::active) {
        Some(c) => {
            compress(c, body, dst)?;
            dst[start] = 1;
        }
        None => dst.extend_from_slice(body),
    }
    let len = dst.len() - start - PREFIX_LEN;
    let len = u32::try_from(len)
        .map_err(|_| Status::internal(format!("message of {len} bytes is too large")))?;
    dst[start + 1..start + PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Writes the prefix of an uncompressed message of `len` bytes into `prefix`.
pub fn write_prefix(prefix: &mut [u8], len: usize) -> Result<(), Status> {
    let len = u32::try_from(len)
        .map_err(|_| Status::internal(format!("message of {len} bytes is too large")))?;
    prefix[0] = 0;
    prefix[1..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Largest value of a `grpc-timeout` (at most 8 digits).
const TIMEOUT_MAX: u64 = 99_999_999;

/// Encodes a timeout as `grpc-timeout`: the finest unit whose value fits 8 digits, rounded
/// up so the server never times out before the client does.
pub fn encode_timeout(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let v = nanos.div_ceil(per);
        if v <= u128::from(TIMEOUT_MAX) {
            return format!("{v}{unit}");
        }
    }
    format!("{TIMEOUT_MAX}H")
}

/// Parses a `grpc-timeout` value (1–8 ASCII digits and a unit of `H M S m u n`).
pub fn parse_timeout(v: &[u8]) -> Result<Duration, Status> {
    let bad = || {
        Status::internal(format!(
            "malformed grpc-timeout {:?}",
            String::from_utf8_lossy(v)
        ))
    };
    let (unit, digits) = v.split_last().ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let n = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(bad()),
    })
}

/// Percent-encodes a status message for `grpc-message`: bytes outside printable ASCII
/// (0x20–0x7E) and `%` become `%XX`.
pub fn percent_encode_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for &b in msg.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes a `grpc-message` value: `%XX` sequences become bytes (a malformed sequence is kept
/// as it is, as the spec asks), and the result is read as UTF-8 (invalid sequences replaced).
pub fn percent_decode_message(v: &[u8]) -> String {
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            if let (Some(h), Some(l)) = (hex(v[i + 1]), hex(v[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Encodes a binary metadata value for a `-bin` header: base64 without padding (what gRPC
/// implementations send).
pub fn encode_bin(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(v)
}

/// Decodes a `-bin` header value: base64, padded or not (both are allowed on the wire).
pub fn decode_bin(v: &[u8]) -> Result<Bytes, Status> {
    let v = v.trim_ascii();
    let unpadded = v
        .strip_suffix(b"==")
        .or_else(|| v.strip_suffix(b"="))
        .unwrap_or(v);
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(unpadded)
        .map(Bytes::from)
        .map_err(|e| Status::internal(format!("malformed base64 in binary metadata: {e}")))
}

/// Whether a binary-valued metadata key (`-bin` suffix, any case).
pub fn is_bin_key(key: &str) -> bool {
    key.len() >= 4 && key[key.len() - 4..].eq_ignore_ascii_case("-bin")
}

/// Whether a header (lower-case name) belongs to the protocol, not to user metadata:
/// pseudo-headers, `grpc-*` (status, message, timeout, encodings, details are read by the
/// transport), `content-type`, `te`, and HTTP connection headers. Kept out of the metadata a
/// handler or a client sees, and dropped from metadata given to send.
pub fn is_reserved_header(name: &str) -> bool {
    name.starts_with(':')
        || name.starts_with("grpc-")
        || matches!(
            name,
            "content-type"
                | "te"
                | "host"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "content-length"
        )
}

/// The gRPC code for a response whose HTTP status is not 200 (grpc/grpc
/// `doc/http-grpc-status-mapping.md`).
pub fn code_from_http_status(status: u16) -> Code {
    match status {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The gRPC code for an HTTP/2 `RST_STREAM` (or `GOAWAY`) reason code
/// (grpc/grpc `doc/PROTOCOL-HTTP2.md`, "Errors").
pub fn code_from_reason(reason: u32) -> Code {
    match reason {
        0x7 => Code::Unavailable,       // REFUSED_STREAM
        0x8 => Code::Cancelled,         // CANCEL
        0xb => Code::ResourceExhausted, // ENHANCE_YOUR_CALM
        0xc => Code::PermissionDenied,  // INADEQUATE_SECURITY
        _ => Code::Internal,
    }
}

/// The payload a `content-type` announces: `application/grpc` and `application/grpc+proto`
/// are protobuf, `application/grpc+thrift` is thrift (Kitex). `None` for anything else
/// (including other `application/grpc+...` subtypes we cannot decode). Parameters after `;`
/// are ignored.
pub fn content_type_payload(ct: &[u8]) -> Option<PayloadKind> {
    // What every gRPC peer sends, matched without the lower-casing copy.
    match ct {
        b"application/grpc" | b"application/grpc+proto" => return Some(PayloadKind::Protobuf),
        b"application/grpc+thrift" => return Some(PayloadKind::Thrift),
        _ => {}
    }
    let ct = ct
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let lower = ct.to_ascii_lowercase();
    match lower.as_slice() {
        b"application/grpc" | b"application/grpc+proto" => Some(PayloadKind::Protobuf),
        b"application/grpc+thrift" => Some(PayloadKind::Thrift),
        _ => None,
    }
}

/// Whether a `content-type` is some gRPC content type (`application/grpc` or
/// `application/grpc+...`, `application/grpc;...`).
pub fn is_grpc_content_type(ct: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    ct.len() >= GRPC.len()
        && ct[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(ct.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// Header names and values the transport writes or reads on every call, built at compile time
/// (`const` blocks), so the hot path neither parses nor validates them and looks them up by
/// their precomputed form.
pub(crate) mod hdr {
    use http::header::{HeaderName, HeaderValue};

    /// `grpc-encoding`.
    pub(crate) fn grpc_encoding() -> HeaderName {
        const { HeaderName::from_static("grpc-encoding") }
    }

    /// `grpc-accept-encoding`.
    pub(crate) fn grpc_accept_encoding() -> HeaderName {
        const { HeaderName::from_static("grpc-accept-encoding") }
    }

    /// `grpc-timeout`.
    pub(crate) fn grpc_timeout() -> HeaderName {
        const { HeaderName::from_static("grpc-timeout") }
    }

    /// `grpc-status`.
    pub(crate) fn grpc_status() -> HeaderName {
        const { HeaderName::from_static("grpc-status") }
    }

    /// `grpc-status: 0`.
    pub(crate) fn status_ok() -> HeaderValue {
        const { HeaderValue::from_static("0") }
    }
}

/// The `content-type` we send for a payload kind.
pub fn content_type_for(payload: PayloadKind) -> &'static str {
    match payload {
        PayloadKind::Thrift => "application/grpc+thrift",
        _ => "application/grpc",
    }
}

/// Parses `grpc-encoding`: `None` for identity (or empty), the algorithm when supported, and
/// `Err(name)` for one we do not support.
pub fn parse_encoding(v: &[u8]) -> Result<Option<Compression>, String> {
    match v.trim_ascii() {
        b"" | b"identity" => Ok(None),
        b"gzip" => Ok(Some(Compression::Gzip)),
        #[cfg(feature = "zstd")]
        b"zstd" => Ok(Some(Compression::Zstd)),
        other => match std::str::from_utf8(other)
            .ok()
            .and_then(Compression::from_name)
        {
            Some(c) => Ok(c.active()),
            None => Err(String::from_utf8_lossy(other).into_owned()),
        },
    }
}

/// Whether a `grpc-accept-encoding` list names `c` (identity always counts as accepted).
pub fn accepts(list: &[u8], c: Compression) -> bool {
    crate::compression::AcceptedEncodings::parse(list).contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decodes_messages_split_anywhere() {
        let mut wire = frame(0, b"hello");
        wire.extend(frame(0, b""));
        wire.extend(frame(0, b"world!"));
        for split in 0..wire.len() {
            let mut d = MessageDecoder::new(64, None);
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                d.push(Bytes::copy_from_slice(part));
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m.bytes);
                }
            }
            assert_eq!(got, vec![&b"hello"[..], b"", b"world!"], "split at {split}");
            d.finish_stream().unwrap();
        }
    }

    #[test]
    fn a_prefix_claiming_4_gib_is_refused_after_five_bytes() {
        let mut d = MessageDecoder::new(4 << 20, None);
        d.push(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]));
        let e = d.next_message().unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(d.buffered() <= 5);
    }

    #[test]
    fn compressed_flag_without_encoding_is_internal() {
        let mut d = MessageDecoder::new(64, None);
        d.push(Bytes::from(frame(1, b"x")));
        assert_eq!(d.next_message().unwrap_err().code(), Code::Internal);
    }

    #[test]
    fn truncated_message_at_end_is_internal() {
        let mut d = MessageDecoder::new(64, None);
        d.push(Bytes::from_static(&[0, 0, 0, 0, 9, 1, 2]));
        assert_eq!(d.next_message().unwrap(), None);
        assert_eq!(d.finish_stream().unwrap_err().code(), Code::Internal);
    }

    #[test]
    fn gzip_round_trips_and_is_capped() {
        let body = vec![7u8; 10_000];
        let mut wire = BytesMut::new();
        encode_message(&body, Some(Compression::Gzip), &mut wire).unwrap();
        assert_eq!(wire[0], 1);
        assert!(wire.len() < 200);
        let mut d = MessageDecoder::new(10_000, Some(Compression::Gzip));
        d.push(wire.clone().freeze());
        let m = d.next_message().unwrap().unwrap();
        assert!(m.compressed);
        assert_eq!(m.bytes, body);
        // A zip bomb against a smaller limit: refused while inflating.
        let mut d = MessageDecoder::new(1000, Some(Compression::Gzip));
        d.push(wire.freeze());
        assert_eq!(
            d.next_message().unwrap_err().code(),
            Code::ResourceExhausted
        );
    }

    /// gzip inflating exactly to the limit is fine; one byte more is refused, and the output
    /// never grew past the limit to find out.
    #[test]
    fn gzip_exactly_at_the_limit() {
        let mut wire = BytesMut::new();
        compress(Compression::Gzip, &[1u8; 5000], &mut wire).unwrap();
        assert_eq!(
            decompress(Compression::Gzip, &wire, 5000).unwrap().len(),
            5000
        );
        let e = decompress(Compression::Gzip, &wire, 4999).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        let e = decompress(Compression::Gzip, b"not gzip", 5000).unwrap_err();
        assert_eq!(e.code(), Code::Internal);
    }

    #[cfg(feature = "zstd")]
    mod zstd_tests {
        use super::*;
        use std::io::Write;

        /// A streamed zstd frame (no content size in its header, the window of its level), as
        /// streaming encoders write it.
        fn streamed(body: &[u8], window_log: u32) -> Vec<u8> {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            enc.include_contentsize(false).unwrap();
            enc.window_log(window_log).unwrap();
            enc.write_all(body).unwrap();
            enc.finish().unwrap()
        }

        #[test]
        fn zstd_round_trips_per_message() {
            let body = b"zstd zstd zstd zstd zstd zstd zstd zstd".repeat(100);
            let mut wire = BytesMut::new();
            encode_message(&body, Some(Compression::Zstd), &mut wire).unwrap();
            encode_message(b"plain", None, &mut wire).unwrap();
            assert_eq!(wire[0], 1);
            assert!(wire.len() < body.len() / 10);
            let mut d = MessageDecoder::new(body.len(), Some(Compression::Zstd));
            d.push(wire.freeze());
            let m = d.next_message().unwrap().unwrap();
            assert!(m.compressed);
            assert_eq!(m.bytes, body);
            let m = d.next_message().unwrap().unwrap();
            assert!(!m.compressed);
            assert_eq!(m.bytes, &b"plain"[..]);
            // A streamed frame from another encoder decodes too, and empty messages work.
            let other = streamed(&body, 21);
            assert_eq!(
                decompress(Compression::Zstd, &other, body.len()).unwrap(),
                body
            );
            let mut empty = BytesMut::new();
            compress(Compression::Zstd, b"", &mut empty).unwrap();
            assert!(decompress(Compression::Zstd, &empty, 0).unwrap().is_empty());
        }

        /// A zip bomb whose frame says its size: refused before inflating anything.
        #[test]
        fn zstd_bomb_with_a_content_size_is_refused_up_front() {
            let bomb = zstd::bulk::compress(&vec![0u8; 16 << 20], 1).unwrap();
            assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
            let mut wire = BytesMut::new();
            wire.put_u8(1);
            wire.put_u32(bomb.len() as u32);
            wire.extend_from_slice(&bomb);
            let mut d = MessageDecoder::new(4 << 20, Some(Compression::Zstd));
            d.push(wire.freeze());
            let e = d.next_message().unwrap_err();
            assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        }

        /// A zip bomb that does not say its size: refused while inflating, at the limit.
        #[test]
        fn zstd_streamed_bomb_is_refused_at_the_limit() {
            let bomb = streamed(&vec![0u8; 4 << 20], 20);
            assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
            let e = decompress(Compression::Zstd, &bomb, 1 << 20).unwrap_err();
            assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
            // Exactly at the limit is fine.
            let exact = streamed(&vec![7u8; 1 << 20], 20);
            assert_eq!(
                decompress(Compression::Zstd, &exact, 1 << 20)
                    .unwrap()
                    .len(),
                1 << 20
            );
        }

        /// A frame asking for a window past the bound (8 MiB, or the limit when larger) is
        /// refused before the decoder allocates it.
        #[test]
        fn zstd_window_above_the_bound_is_refused() {
            let big_window = streamed(b"tiny", 27);
            let e = decompress(Compression::Zstd, &big_window, 4 << 20).unwrap_err();
            assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
            // The same window is allowed when the receive limit is that large.
            assert_eq!(
                decompress(Compression::Zstd, &big_window, 128 << 20).unwrap(),
                &b"tiny"[..]
            );
            // The level-3 window streaming encoders use is allowed under a small limit.
            let level3 = streamed(b"tiny", 21);
            assert_eq!(
                decompress(Compression::Zstd, &level3, 64).unwrap(),
                &b"tiny"[..]
            );
        }

        #[test]
        fn corrupt_zstd_is_internal() {
            let e = decompress(Compression::Zstd, b"\x28\xb5\x2f\xfd garbage", 4096).unwrap_err();
            assert_eq!(e.code(), Code::Internal, "{e:?}");
        }

        #[test]
        fn zstd_encoding_names() {
            assert_eq!(parse_encoding(b"zstd"), Ok(Some(Compression::Zstd)));
            assert_eq!(parse_encoding(b"ZSTD"), Ok(Some(Compression::Zstd)));
            assert_eq!(parse_encoding(b"snappy"), Err("snappy".to_owned()));
            assert!(accepts(b"gzip, zstd", Compression::Zstd));
            assert!(!accepts(b"gzip", Compression::Zstd));
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(encode_timeout(Duration::from_millis(1500)), "1500000u");
        assert_eq!(encode_timeout(Duration::from_secs(3600 * 1000)), "3600000S");
        assert_eq!(
            encode_timeout(Duration::from_secs(3600 * 100_000)),
            "6000000M"
        );
        assert_eq!(encode_timeout(Duration::from_nanos(5)), "5n");
        assert_eq!(parse_timeout(b"100m").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_timeout(b"2H").unwrap(), Duration::from_secs(7200));
        assert!(parse_timeout(b"123456789S").is_err());
        assert!(parse_timeout(b"m").is_err());
        assert!(parse_timeout(b"10x").is_err());
        assert!(parse_timeout(b"").is_err());
    }

    #[test]
    fn messages_percent_encode_both_ways() {
        let m = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
        let e = percent_encode_message(m);
        assert!(e.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        assert_eq!(percent_decode_message(e.as_bytes()), m);
        assert_eq!(percent_decode_message(b"50%"), "50%");
        assert_eq!(percent_decode_message(b"%zz%4"), "%zz%4");
        assert_eq!(percent_decode_message(b"a%20b"), "a b");
    }

    #[test]
    fn bin_values_padded_or_not() {
        assert_eq!(encode_bin(b"\x01\x02"), "AQI");
        assert_eq!(decode_bin(b"AQI").unwrap(), &b"\x01\x02"[..]);
        assert_eq!(decode_bin(b"AQI=").unwrap(), &b"\x01\x02"[..]);
        assert!(decode_bin(b"A").is_err());
        assert!(decode_bin(b"!!!").is_err());
    }

    #[test]
    fn status_and_content_type_mapping() {
        assert_eq!(code_from_http_status(404), Code::Unimplemented);
        assert_eq!(code_from_http_status(503), Code::Unavailable);
        assert_eq!(code_from_http_status(418), Code::Unknown);
        assert_eq!(code_from_reason(8), Code::Cancelled);
        assert_eq!(
            content_type_payload(b"application/grpc+thrift"),
            Some(PayloadKind::Thrift)
        );
        assert_eq!(
            content_type_payload(b"application/grpc; charset=utf-8"),
            Some(PayloadKind::Protobuf)
        );
        assert_eq!(content_type_payload(b"application/grpc+json"), None);
        assert!(is_grpc_content_type(b"application/grpc+json"));
        assert!(!is_grpc_content_type(b"text/html"));
        assert!(is_reserved_header("grpc-timeout"));
        assert!(is_reserved_header(":path"));
        assert!(!is_reserved_header("x-user"));
        assert!(accepts(b"identity, gzip", Compression::Gzip));
    }
}
