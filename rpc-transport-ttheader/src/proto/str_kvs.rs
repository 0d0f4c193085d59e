//! [`StrKvs`]: the string KVs of a packet (info id 0x01), read in place from the received
//! header block.
//!
//! Decoding a packet allocates nothing for its string KVs: the entries of the block stay in
//! their wire form (`str16 key, str16 value` repeated) inside the packet's `Bytes`, checked for
//! bounds (and keys for UTF-8) once when the packet is decoded, and are read from there on
//! lookup. Entries pushed afterwards (when building a packet to send) are kept apart, as
//! `&'static str`, `String` or `Bytes` without copying, and follow the received ones.
//!
//! Values are bytes on the wire: Kitex's metainfo values are Go strings, which hold any bytes,
//! and travel as they are (no prefix, no encoding). [`StrKvs::iter`], [`StrKvs::get`] and
//! [`StrKvs::iter_except`] see the values that are UTF-8; [`StrKvs::iter_raw`] sees them all.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes};

/// One key or value pushed by the sender: borrowed for `'static` strings (no copy), owned
/// otherwise.
pub type StrValue = Cow<'static, str>;

/// The string KVs of a packet, in wire order: received entries first, then pushed ones.
///
/// Entry order is kept so that a decoded packet re-encodes byte-identically, but peers write
/// Go map order, so never depend on it. [`StrKvs::get`] returns the last entry for a repeated
/// key. Two `StrKvs` are equal when they hold the same entries in the same order, whether
/// received or pushed.
#[derive(Clone, Default)]
pub struct StrKvs {
    /// The entries of the first received block in wire form, every length in bounds and every
    /// key valid UTF-8 (checked by the packet decoder); values are any bytes.
    wire: Bytes,
    /// How many entries `wire` holds.
    wire_count: usize,
    /// Entries pushed, or read from a second block (a writer emits one, a reader appends).
    added: Vec<(StrValue, Value)>,
}

impl StrKvs {
    /// No entries.
    pub const fn new() -> Self {
        StrKvs {
            wire: Bytes::new(),
            wire_count: 0,
            added: Vec::new(),
        }
    }

    /// Number of entries (counting every entry of a repeated key).
    pub fn len(&self) -> usize {
        self.wire_count + self.added.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries whose value is UTF-8, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.iter_raw()
            .filter_map(|(k, v)| Some((k, std::str::from_utf8(v).ok()?)))
    }

    /// Every entry, its value as bytes, in wire order.
    pub fn iter_raw(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        RawIter::new(&self.wire, self.wire_count)
            .filter_map(utf8_key)
            .chain(self.added.iter().map(|(k, v)| (k.as_ref(), v.as_bytes())))
    }

    /// The value of `key`; the last entry wins. Received keys are compared as bytes: only the
    /// value found is turned into a `&str` (its UTF-8 was checked at decode; safe code checks
    /// it once more, for that one value).
    pub fn get(&self, key: &str) -> Option<&str> {
        if let Some((_, v)) = self.added.iter().rev().find(|(k, _)| k == key) {
            return std::str::from_utf8(v.as_bytes()).ok();
        }
        let value = RawIter::new(&self.wire, self.wire_count)
            .filter(|(k, _)| *k == key.as_bytes())
            .last()?
            .1;
        std::str::from_utf8(value).ok()
    }

    /// The entries in wire order, without those whose key is one of `skip`: the keys of
    /// received entries are compared as bytes, and only the entries kept are turned into
    /// `&str`s (a packet carrying only framework keys converts nothing).
    pub fn iter_except<'a>(
        &'a self,
        skip: &'a [&'a str],
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.iter_raw_except(skip)
            .filter_map(|(k, v)| Some((k, std::str::from_utf8(v).ok()?)))
    }

    /// As [`StrKvs::iter_except`], every value as bytes (UTF-8 or not).
    pub fn iter_raw_except<'a>(
        &'a self,
        skip: &'a [&'a str],
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let kept = move |k: &[u8]| !skip.iter().any(|s| s.as_bytes() == k);
        RawIter::new(&self.wire, self.wire_count)
            .filter(move |(k, _)| kept(k))
            .filter_map(utf8_key)
            .chain(
                self.added
                    .iter()
                    .filter(move |(k, _)| kept(k.as_bytes()))
                    .map(|(k, v)| (k.as_ref(), v.as_bytes())),
            )
    }

    /// Appends an entry (shadowing earlier entries with the same key on lookup). `'static`
    /// strings and `String`s are stored without a copy.
    pub fn push(&mut self, key: impl Into<StrValue>, value: impl Into<StrValue>) {
        self.added.push((key.into(), Value::Text(value.into())));
    }

    /// Appends an entry whose value is any bytes, sent as they are (Kitex's binary metainfo:
    /// a Go string value holding non-UTF-8 bytes travels the same way).
    pub fn push_bytes(&mut self, key: impl Into<StrValue>, value: Bytes) {
        self.added.push((key.into(), Value::Bytes(value)));
    }

    /// Adds a received block: `count` entries in wire form, every str16 in bounds and UTF-8
    /// (checked by the packet decoder). Kept in place when it is the first, copied into owned
    /// entries otherwise (a second block is legal, but no writer emits one).
    pub(crate) fn push_block(&mut self, block: Bytes, count: usize) {
        if self.is_empty() {
            self.wire = block;
            self.wire_count = count;
            return;
        }
        let owned = RawIter::new(&block, count)
            .filter_map(utf8_key)
            .map(|(k, v)| (Cow::Owned(k.to_owned()), Value::Bytes(block.slice_ref(v))));
        self.added.extend(owned);
    }

    /// Bytes the entries take on the wire (without the count), or the length of the first key
    /// (`true`) or value (`false`) over the str16 limit.
    pub(crate) fn encoded_len(&self) -> Result<usize, (bool, usize)> {
        let mut n = self.wire.len();
        for (k, v) in &self.added {
            for (key, s) in [(true, k.as_bytes()), (false, v.as_bytes())] {
                if s.len() > usize::from(u16::MAX) {
                    return Err((key, s.len()));
                }
                n += 2 + s.len();
            }
        }
        Ok(n)
    }

    /// Appends the entries (without the count); [`StrKvs::encoded_len`] must have passed.
    pub(crate) fn encode(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.wire);
        for (k, v) in &self.added {
            for s in [k.as_bytes(), v.as_bytes()] {
                // Checked by `encoded_len`: the cast is exact.
                dst.put_u16(s.len() as u16);
                dst.put_slice(s);
            }
        }
    }
}

/// Reads checked wire entries as bytes (no UTF-8 conversion). Stops early, rather than
/// failing, on bytes that are not what the decoder accepted (which cannot happen: `wire` is
/// private and set only by `push_block`).
struct RawIter<'a> {
    buf: &'a [u8],
    left: usize,
}

impl<'a> RawIter<'a> {
    fn new(buf: &'a [u8], left: usize) -> RawIter<'a> {
        RawIter { buf, left }
    }

    fn str16(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.buf.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let s = rest.get(..len)?;
        self.buf = &rest[len..];
        Some(s)
    }
}

impl<'a> Iterator for RawIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let kv = self.str16().zip(self.str16());
        if kv.is_none() {
            self.left = 0;
        }
        kv
    }
}

/// A received entry with its key as `&str` (its UTF-8 was checked at decode; safe code checks
/// it again).
fn utf8_key<'a>((k, v): (&'a [u8], &'a [u8])) -> Option<(&'a str, &'a [u8])> {
    Some((std::str::from_utf8(k).ok()?, v))
}

/// A pushed value: text, or bytes sent as they are.
#[derive(Clone)]
enum Value {
    Text(StrValue),
    Bytes(Bytes),
}

impl Value {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Text(s) => s.as_bytes(),
            Value::Bytes(b) => b,
        }
    }
}

impl PartialEq for StrKvs {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter_raw().eq(other.iter_raw())
    }
}

impl Eq for StrKvs {}

impl fmt::Debug for StrKvs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter_raw().map(|(k, v)| match std::str::from_utf8(v) {
                Ok(text) => (k, Cow::Borrowed(text)),
                Err(_) => (k, Cow::Owned(format!("bytes{v:02x?}"))),
            }))
            .finish()
    }
}

impl<K: Into<StrValue>, V: Into<StrValue>> Extend<(K, V)> for StrKvs {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.added.extend(
            iter.into_iter()
                .map(|(k, v)| (k.into(), Value::Text(v.into()))),
        );
    }
}

impl<K: Into<StrValue>, V: Into<StrValue>> FromIterator<(K, V)> for StrKvs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut kvs = StrKvs::new();
        kvs.extend(iter);
        kvs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn block(entries: &[(&str, &str)]) -> Bytes {
        let mut b = BytesMut::new();
        for (k, v) in entries {
            for s in [k, v] {
                b.put_u16(s.len() as u16);
                b.put_slice(s.as_bytes());
            }
        }
        b.freeze()
    }

    #[test]
    fn received_and_pushed_entries_read_alike() {
        let raw = block(&[("isn", "Svc"), ("k", "1")]);
        let mut got = StrKvs::new();
        got.push_block(raw.clone(), 2);
        let built: StrKvs = [("isn", "Svc"), ("k", "1")].into_iter().collect();
        assert_eq!(got, built);
        assert_eq!(format!("{got:?}"), format!("{built:?}"));
        assert_eq!(got.get("k"), Some("1"));
        got.push("k", String::from("2"));
        assert_eq!(got.get("k"), Some("2"));
        assert_eq!(got.get("isn"), Some("Svc"));
        assert_eq!(got.get("x"), None);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got.iter_except(&["isn"]).collect::<Vec<_>>(),
            [("k", "1"), ("k", "2")]
        );
        assert_eq!(
            got.iter_except(&["k", "zz"]).collect::<Vec<_>>(),
            [("isn", "Svc")]
        );
        assert_eq!(
            got.iter_except(&[]).collect::<Vec<_>>(),
            got.iter().collect::<Vec<_>>()
        );

        // A second block appends (owned); the last entry still wins.
        let mut two = StrKvs::new();
        two.push_block(raw, 2);
        two.push_block(block(&[("k", "3")]), 1);
        assert_eq!(two.get("k"), Some("3"));
        assert_eq!(
            two.iter().collect::<Vec<_>>(),
            [("isn", "Svc"), ("k", "1"), ("k", "3")]
        );

        let mut enc = BytesMut::new();
        two.encode(&mut enc);
        assert_eq!(Ok(enc.len()), two.encoded_len());
        assert_eq!(enc, block(&[("isn", "Svc"), ("k", "1"), ("k", "3")]));
    }

    #[test]
    fn binary_values_are_kept_as_bytes() {
        let mut raw = BytesMut::new();
        for s in [&b"k"[..], b"\xff\x00", b"t", b"text"] {
            raw.put_u16(s.len() as u16);
            raw.put_slice(s);
        }
        let mut got = StrKvs::new();
        got.push_block(raw.freeze(), 2);
        got.push_bytes("b", Bytes::from_static(b"\x80"));
        // Text views skip the binary values; the raw view has them all.
        assert_eq!(got.iter().collect::<Vec<_>>(), [("t", "text")]);
        assert_eq!(got.get("k"), None);
        assert_eq!(
            got.iter_raw().collect::<Vec<_>>(),
            [("k", &b"\xff\x00"[..]), ("t", b"text"), ("b", b"\x80")]
        );
        assert_eq!(
            got.iter_raw_except(&["t"]).collect::<Vec<_>>(),
            [("k", &b"\xff\x00"[..]), ("b", b"\x80")]
        );
        let mut enc = BytesMut::new();
        got.encode(&mut enc);
        assert_eq!(Ok(enc.len()), got.encoded_len());
        assert!(format!("{got:?}").contains("bytes[ff, 00]"));
    }
}
