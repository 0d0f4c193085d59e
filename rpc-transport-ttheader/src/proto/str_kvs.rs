//! [`StrKvs`]: the string KVs of a packet (info id 0x01), read in place from the received
//! header block.
//!
//! Decoding a packet allocates nothing for its string KVs: the entries of the block stay in
//! their wire form (`str16 key, str16 value` repeated) inside the packet's `Bytes`, checked for
//! bounds and UTF-8 once when the packet is decoded, and are read from there on lookup. Entries
//! pushed afterwards (when building a packet to send) are kept apart, as `&'static str` or
//! `String` without copying, and follow the received ones.

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
    /// key and value valid UTF-8 (checked by the packet decoder).
    wire: Bytes,
    /// How many entries `wire` holds.
    wire_count: usize,
    /// Entries pushed, or read from a second block (a writer emits one, a reader appends).
    added: Vec<(StrValue, StrValue)>,
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

    /// The entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        RawIter::new(&self.wire, self.wire_count)
            .map_while(utf8_pair)
            .chain(self.added.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
    }

    /// The value of `key`; the last entry wins. Received keys are compared as bytes: only the
    /// value found is turned into a `&str` (its UTF-8 was checked at decode; safe code checks
    /// it once more, for that one value).
    pub fn get(&self, key: &str) -> Option<&str> {
        if let Some((_, v)) = self.added.iter().rev().find(|(k, _)| k == key) {
            return Some(v);
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
        let kept = move |k: &[u8]| !skip.iter().any(|s| s.as_bytes() == k);
        RawIter::new(&self.wire, self.wire_count)
            .filter(move |(k, _)| kept(k))
            .filter_map(utf8_pair)
            .chain(
                self.added
                    .iter()
                    .filter(move |(k, _)| kept(k.as_bytes()))
                    .map(|(k, v)| (k.as_ref(), v.as_ref())),
            )
    }

    /// Appends an entry (shadowing earlier entries with the same key on lookup). `'static`
    /// strings and `String`s are stored without a copy.
    pub fn push(&mut self, key: impl Into<StrValue>, value: impl Into<StrValue>) {
        self.added.push((key.into(), value.into()));
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
            .map_while(utf8_pair)
            .map(|(k, v)| (Cow::Owned(k.to_owned()), Cow::Owned(v.to_owned())));
        self.added.extend(owned);
    }

    /// Bytes the entries take on the wire (without the count), or the length of the first key
    /// (`true`) or value (`false`) over the str16 limit.
    pub(crate) fn encoded_len(&self) -> Result<usize, (bool, usize)> {
        let mut n = self.wire.len();
        for (k, v) in &self.added {
            for (key, s) in [(true, k), (false, v)] {
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
            for s in [k, v] {
                // Checked by `encoded_len`: the cast is exact.
                dst.put_u16(s.len() as u16);
                dst.put_slice(s.as_bytes());
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

/// A received entry as `&str`s (its UTF-8 was checked at decode; safe code checks it again).
fn utf8_pair<'a>((k, v): (&'a [u8], &'a [u8])) -> Option<(&'a str, &'a str)> {
    Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?))
}

impl PartialEq for StrKvs {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for StrKvs {}

impl fmt::Debug for StrKvs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<K: Into<StrValue>, V: Into<StrValue>> Extend<(K, V)> for StrKvs {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.added
            .extend(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
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
}
