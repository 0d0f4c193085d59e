//! A small, independent TTHeader reader for looking at captured bytes
//! (the shared `spec/ttheader.md` §1, §2). It is deliberately not our transport's codec: a check
//! of our transport must not go through our transport's own parser.
//!
//! It reads; it never writes, and it keeps everything (entry order, padding, raw bytes) so a
//! test can report an exact difference.

use std::fmt;

/// Why captured bytes are not a TTHeader frame or a thrift message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes end before `what` is complete.
    #[error("truncated: {what}")]
    Truncated {
        /// The part that is cut short.
        what: &'static str,
    },
    /// Bytes 4..6 are not `10 00`.
    #[error("not a TTHeader frame: magic {0:#06x}")]
    BadMagic(u16),
    /// An info id other than padding, 0x01, 0x10 or 0x11 in the variable header.
    #[error("unknown info id {0:#04x} in the TTHeader")]
    BadInfoId(u8),
    /// The payload starts with neither a strict binary message nor a length + strict message.
    #[error("payload is not a strict thrift-binary message (first bytes {0:02x?})")]
    NotThriftBinary(Vec<u8>),
}

/// One TTHeader packet, field by field, as it was on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct TtHeaderFrame {
    /// FLAGS (offset 6).
    pub flags: u16,
    /// SEQUENCE ID (offset 8).
    pub seq_id: u32,
    /// HEADER SIZE in 4-byte words (offset 12).
    pub header_words: u16,
    /// PROTOCOL ID, the first byte of the variable header.
    pub protocol_id: u8,
    /// TRANSFORM ids.
    pub transforms: Vec<u8>,
    /// The ACL token block (0x11), when present.
    pub acl_token: Option<Vec<u8>>,
    /// String KVs (0x01 block), in wire order.
    pub str_kvs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Int KVs (0x10 block), in wire order.
    pub int_kvs: Vec<(u16, Vec<u8>)>,
    /// The order the info blocks appeared in (0x01, 0x10, 0x11).
    pub block_order: Vec<u8>,
    /// Padding bytes (0x00) in the variable header.
    pub padding: usize,
    /// Everything after the variable header.
    pub payload: Vec<u8>,
    /// The whole frame, LENGTH included.
    pub raw: Vec<u8>,
}

impl TtHeaderFrame {
    /// The value of string key `key` (the last one if repeated).
    pub fn str_kv(&self, key: &str) -> Option<&[u8]> {
        self.str_kvs
            .iter()
            .rev()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The value of int key `key` (the last one if repeated).
    pub fn int_kv(&self, key: u16) -> Option<&[u8]> {
        self.int_kvs
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The payload read as a thrift-binary message (framed or not).
    pub fn message(&self) -> Result<ThriftMessage, WireError> {
        ThriftMessage::parse(&self.payload)
    }
}

impl fmt::Debug for TtHeaderFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtHeaderFrame")
            .field("flags", &format_args!("{:#06x}", self.flags))
            .field("seq_id", &self.seq_id)
            .field("header_words", &self.header_words)
            .field("protocol_id", &format_args!("{:#04x}", self.protocol_id))
            .field("transforms", &self.transforms)
            .field("acl_token", &self.acl_token.as_deref().map(Lossy))
            .field(
                "str_kvs",
                &self
                    .str_kvs
                    .iter()
                    .map(|(k, v)| (Lossy(k), Lossy(v)))
                    .collect::<Vec<_>>(),
            )
            .field(
                "int_kvs",
                &self
                    .int_kvs
                    .iter()
                    .map(|(k, v)| (k, Lossy(v)))
                    .collect::<Vec<_>>(),
            )
            .field("block_order", &self.block_order)
            .field("padding", &self.padding)
            .field("payload", &Hex(&self.payload))
            .finish()
    }
}

/// Shows bytes as a string when they are printable ASCII, else as escaped bytes.
struct Lossy<'a>(&'a [u8]);

impl fmt::Debug for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// Bytes as space-separated hex pairs, like the vector files.
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated { what });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn str16(&mut self, what: &'static str) -> Result<Vec<u8>, WireError> {
        let len = self.u16(what)?;
        Ok(self.take(usize::from(len), what)?.to_vec())
    }
}

/// Splits a captured byte stream into TTHeader frames. Bytes after the last complete frame are
/// returned as the second element (a connection cut mid-frame, or a stream still in flight).
pub fn split_frames(mut bytes: &[u8]) -> Result<(Vec<TtHeaderFrame>, &[u8]), WireError> {
    let mut frames = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let Some(total) = len.checked_add(4).filter(|total| *total <= bytes.len()) else {
            break;
        };
        let (frame, rest) = bytes.split_at(total);
        frames.push(parse_frame(frame)?);
        bytes = rest;
    }
    Ok((frames, bytes))
}

/// Reads one whole TTHeader frame (LENGTH included, nothing after it).
pub fn parse_frame(raw: &[u8]) -> Result<TtHeaderFrame, WireError> {
    let mut r = Reader { buf: raw };
    let _length = r.u32("LENGTH")?;
    let magic = r.u16("MAGIC")?;
    if magic != 0x1000 {
        return Err(WireError::BadMagic(magic));
    }
    let flags = r.u16("FLAGS")?;
    let seq_id = r.u32("SEQUENCE ID")?;
    let header_words = r.u16("HEADER SIZE")?;
    let header = r.take(usize::from(header_words) * 4, "variable header")?;
    let payload = r.buf.to_vec();

    let mut h = Reader { buf: header };
    let protocol_id = h.u8("PROTOCOL ID")?;
    let num_transforms = h.u8("NUM TRANSFORMS")?;
    let transforms = h
        .take(usize::from(num_transforms), "TRANSFORM ids")?
        .to_vec();
    let mut frame = TtHeaderFrame {
        flags,
        seq_id,
        header_words,
        protocol_id,
        transforms,
        acl_token: None,
        str_kvs: Vec::new(),
        int_kvs: Vec::new(),
        block_order: Vec::new(),
        padding: 0,
        payload,
        raw: raw.to_vec(),
    };
    while !h.buf.is_empty() {
        match h.u8("info id")? {
            0x00 => frame.padding += 1,
            0x01 => {
                frame.block_order.push(0x01);
                let count = h.u16("string KV count")?;
                for _ in 0..count {
                    let k = h.str16("string KV key")?;
                    let v = h.str16("string KV value")?;
                    frame.str_kvs.push((k, v));
                }
            }
            0x10 => {
                frame.block_order.push(0x10);
                let count = h.u16("int KV count")?;
                for _ in 0..count {
                    let k = h.u16("int KV key")?;
                    let v = h.str16("int KV value")?;
                    frame.int_kvs.push((k, v));
                }
            }
            0x11 => {
                frame.block_order.push(0x11);
                frame.acl_token = Some(h.str16("ACL token")?);
            }
            other => return Err(WireError::BadInfoId(other)),
        }
    }
    Ok(frame)
}

/// The head of a strict thrift-binary message, as carried in a unary TTHeader payload.
#[derive(Clone, PartialEq, Eq)]
pub struct ThriftMessage {
    /// The `u32` length prefix of TTHeaderFramed, when present.
    pub frame_len: Option<u32>,
    /// CALL 1, REPLY 2, EXCEPTION 3, ONEWAY 4.
    pub msg_type: u8,
    /// The method name.
    pub name: Vec<u8>,
    /// The message's seqid.
    pub seq_id: i32,
    /// The struct after the message header (Args, Result or ApplicationException).
    pub body: Vec<u8>,
}

impl ThriftMessage {
    /// Reads `payload` as a strict binary message, with or without a TTHeaderFramed length
    /// prefix (told apart as in spec §2: `0x8001` at offset 0 or at offset 4).
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let strict_at = |at: usize| payload.get(at..at + 2) == Some(&[0x80, 0x01][..]);
        let mut r = Reader { buf: payload };
        let frame_len = if strict_at(0) {
            None
        } else if strict_at(4) {
            Some(r.u32("framed length")?)
        } else {
            return Err(WireError::NotThriftBinary(
                payload.iter().take(8).copied().collect(),
            ));
        };
        let version = r.u32("message version")?;
        let msg_type = (version & 0xff) as u8;
        let name_len = r.u32("method name length")?;
        let name = r.take(name_len as usize, "method name")?.to_vec();
        let seq_id = r.u32("message seqid")? as i32;
        Ok(Self {
            frame_len,
            msg_type,
            name,
            seq_id,
            body: r.buf.to_vec(),
        })
    }
}

impl fmt::Debug for ThriftMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThriftMessage")
            .field("frame_len", &self.frame_len)
            .field("msg_type", &self.msg_type)
            .field("name", &Lossy(&self.name))
            .field("seq_id", &self.seq_id)
            .field("body", &Hex(&self.body))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.bytes())
            .filter(u8::is_ascii_hexdigit)
            .collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    /// The frame a volo-thrift 0.12.7 client sent (the shared vectors), read field by field.
    #[test]
    fn reads_the_captured_volo_call() {
        let raw = unhex(include_str!(
            "../tests/data/volo_client_call_framed_echo_hello.hex"
        ));
        let (frames, rest) = split_frames(&raw).unwrap();
        assert!(rest.is_empty());
        let [frame] = frames.as_slice() else {
            panic!("one frame expected, got {frames:?}")
        };
        assert_eq!(frame.seq_id, 0);
        assert_eq!(frame.flags, 0);
        assert_eq!(frame.protocol_id, 0);
        assert_eq!(frame.str_kv("isn"), Some(&b"EchoService"[..]));
        let keys: Vec<u16> = frame.int_kvs.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [16, 3, 9, 6, 11]);
        assert_eq!(frame.int_kv(3), Some(&b""[..]));
        let msg = frame.message().unwrap();
        assert_eq!(msg.frame_len, Some(0x21));
        assert_eq!(
            (msg.msg_type, msg.name.as_slice(), msg.seq_id),
            (1, &b"Echo"[..], 0)
        );
    }

    /// The reply of a volo-thrift 0.12.7 server: MSG_TYPE as a raw byte.
    #[test]
    fn reads_the_captured_volo_reply() {
        let raw = unhex(include_str!(
            "../tests/data/volo_server_reply_framed_echo_hello.hex"
        ));
        let frame = parse_frame(&raw).unwrap();
        assert_eq!(frame.int_kvs, [(22, vec![2])]);
        assert!(frame.str_kvs.is_empty());
        assert_eq!(frame.message().unwrap().msg_type, 2);
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let raw = unhex(include_str!(
            "../tests/data/volo_client_call_framed_echo_hello.hex"
        ));
        for cut in 0..raw.len() {
            let _ = parse_frame(&raw[..cut]);
            let (frames, _) = split_frames(&raw[..cut]).unwrap();
            assert!(frames.is_empty());
        }
    }
}
