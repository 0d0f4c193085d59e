//! [`Metadata`]: an ordered multimap of string keys to text or binary values.
//!
//! Keys are compared ASCII-case-insensitively and stored as given (HTTP/2 lower-cases them on
//! the wire; TTHeader keeps them as sent). Order of insertion is preserved, and a key may hold
//! several values (`append`), as gRPC metadata and HTTP headers allow. `insert` replaces.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

/// One metadata value: text (`ascii` in gRPC terms, any UTF-8 here) or binary (`-bin` keys).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum MetadataValue {
    /// A text value.
    Text(String),
    /// A binary value.
    Binary(Bytes),
}

impl MetadataValue {
    /// The text, if this is a text value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::Text(s) => Some(s),
            MetadataValue::Binary(_) => None,
        }
    }

    /// The raw bytes of either kind.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            MetadataValue::Text(s) => s.as_bytes(),
            MetadataValue::Binary(b) => b,
        }
    }
}

impl fmt::Debug for MetadataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataValue::Text(s) => fmt::Debug::fmt(s, f),
            MetadataValue::Binary(b) => write!(f, "bin{b:?}"),
        }
    }
}

impl From<&str> for MetadataValue {
    fn from(s: &str) -> Self {
        MetadataValue::Text(s.to_owned())
    }
}

impl From<String> for MetadataValue {
    fn from(s: String) -> Self {
        MetadataValue::Text(s)
    }
}

impl From<Bytes> for MetadataValue {
    fn from(b: Bytes) -> Self {
        MetadataValue::Binary(b)
    }
}

impl From<Vec<u8>> for MetadataValue {
    fn from(b: Vec<u8>) -> Self {
        MetadataValue::Binary(Bytes::from(b))
    }
}

/// One entry: the key (static when the transport knows it) and the value.
type Entry = (Cow<'static, str>, MetadataValue);

/// An ordered multimap of metadata entries. Empty metadata does not allocate; a key given as
/// a `&'static str` ([`Metadata::append_static`]) is not copied; clones of metadata made
/// [shared](Metadata::into_shared) share one copy of the entries.
#[derive(Clone, Default)]
pub struct Metadata {
    entries: Entries,
}

/// The entries: owned, or shared by clones until one of them changes (copy on write).
#[derive(Clone)]
enum Entries {
    Own(Vec<Entry>),
    Shared(std::sync::Arc<Vec<Entry>>),
}

impl Default for Entries {
    fn default() -> Entries {
        Entries::Own(Vec::new())
    }
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Metadata) -> bool {
        self.slice() == other.slice()
    }
}

impl Eq for Metadata {}

impl Metadata {
    /// Empty metadata.
    pub const fn new() -> Metadata {
        Metadata {
            entries: Entries::Own(Vec::new()),
        }
    }

    /// This metadata made cheap to clone: its clones share the entries (a reference count per
    /// clone instead of a copy of every key and value), and a clone that changes copies them
    /// first. What a transport uses for metadata that many calls receive alike (the same
    /// `user-agent` on every call of a connection). One allocation, unless already shared.
    pub fn into_shared(self) -> Metadata {
        match self.entries {
            Entries::Own(v) => Metadata {
                entries: Entries::Shared(std::sync::Arc::new(v)),
            },
            shared @ Entries::Shared(_) => Metadata { entries: shared },
        }
    }

    /// The entries, read-only.
    fn slice(&self) -> &[Entry] {
        match &self.entries {
            Entries::Own(v) => v,
            Entries::Shared(v) => v,
        }
    }

    /// The entries to change: copied first when shared with another clone.
    fn vec_mut(&mut self) -> &mut Vec<Entry> {
        match &mut self.entries {
            Entries::Own(v) => v,
            Entries::Shared(v) => std::sync::Arc::make_mut(v),
        }
    }

    /// Number of entries (counting every value of a repeated key).
    pub fn len(&self) -> usize {
        self.slice().len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.slice().is_empty()
    }

    /// Sets `key` to the single value `value`, removing earlier values of the key.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<MetadataValue>) {
        let key = key.into();
        self.remove(&key);
        self.vec_mut().push((Cow::Owned(key), value.into()));
    }

    /// Adds a value for `key`, keeping earlier ones.
    pub fn append(&mut self, key: impl Into<String>, value: impl Into<MetadataValue>) {
        self.vec_mut().push((Cow::Owned(key.into()), value.into()));
    }

    /// As [`Metadata::append`] for a key known at compile time (a transport's well-known
    /// header names): the key is kept as the static string, without an allocation.
    pub fn append_static(&mut self, key: &'static str, value: impl Into<MetadataValue>) {
        self.vec_mut().push((Cow::Borrowed(key), value.into()));
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.slice()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// The first value of `key` if it is text.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetadataValue::as_str)
    }

    /// Every value of `key`, in insertion order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a MetadataValue> + 'a {
        self.slice()
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// Whether `key` has at least one value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Removes every value of `key`; returns the first one removed.
    pub fn remove(&mut self, key: &str) -> Option<MetadataValue> {
        if !self
            .slice()
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(key))
        {
            // Nothing to remove: shared entries stay shared.
            return None;
        }
        let entries = self.vec_mut();
        let mut first = None;
        let mut i = 0;
        while i < entries.len() {
            if entries[i].0.eq_ignore_ascii_case(key) {
                let (_, v) = entries.remove(i);
                first.get_or_insert(v);
            } else {
                i += 1;
            }
        }
        first
    }

    /// All entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.slice().iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Appends every entry of `other`.
    pub fn extend(&mut self, other: Metadata) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = other;
            return;
        }
        self.vec_mut().extend(other.into_vec());
    }

    /// The entries as an owned vector (copied when shared with other clones).
    fn into_vec(self) -> Vec<Entry> {
        match self.entries {
            Entries::Own(v) => v,
            Entries::Shared(v) => std::sync::Arc::try_unwrap(v).unwrap_or_else(|v| (*v).clone()),
        }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.slice().iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<K: Into<String>, V: Into<MetadataValue>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Metadata {
            entries: Entries::Own(
                iter.into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into()), v.into()))
                    .collect(),
            ),
        }
    }
}

/// An entry with its key as an owned `String`.
type OwnedEntry = (String, MetadataValue);

impl IntoIterator for Metadata {
    type Item = OwnedEntry;
    type IntoIter = std::iter::Map<
        std::vec::IntoIter<(Cow<'static, str>, MetadataValue)>,
        fn((Cow<'static, str>, MetadataValue)) -> OwnedEntry,
    >;
    fn into_iter(self) -> Self::IntoIter {
        fn owned((k, v): (Cow<'static, str>, MetadataValue)) -> OwnedEntry {
            (k.into_owned(), v)
        }
        self.into_vec().into_iter().map(owned as fn(_) -> _)
    }
}

/// A unary response message with its header and trailer metadata. (Named so it never
/// collides with an IDL type called `Response`.)
#[derive(Debug, Clone)]
pub struct WithMetadata<T> {
    header: Metadata,
    message: T,
    trailer: Metadata,
}

impl<T> WithMetadata<T> {
    /// A response from its parts.
    pub fn new(header: Metadata, message: T, trailer: Metadata) -> WithMetadata<T> {
        WithMetadata {
            header,
            message,
            trailer,
        }
    }

    /// Maps the message, keeping the metadata (generated clients unwrap thrift Result structs
    /// this way).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> WithMetadata<U> {
        WithMetadata {
            header: self.header,
            message: f(self.message),
            trailer: self.trailer,
        }
    }

    /// The response message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }
    /// Takes the response message.
    pub fn into_inner(self) -> T {
        self.message
    }
    /// Response header metadata.
    pub fn header(&self) -> &Metadata {
        &self.header
    }
    /// Trailer metadata.
    pub fn trailer(&self) -> &Metadata {
        &self.trailer
    }
    /// Splits into (header, message, trailer).
    pub fn into_parts(self) -> (Metadata, T, Metadata) {
        (self.header, self.message, self.trailer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multimap_keeps_order_and_repeated_keys() {
        let mut md = Metadata::new();
        md.append("a", "1");
        md.append("b", Bytes::from_static(b"\x00\x01"));
        md.append("A", "2");
        assert_eq!(md.len(), 3);
        let all: Vec<_> = md.get_all("a").filter_map(|v| v.as_str()).collect();
        assert_eq!(all, ["1", "2"]);
        assert_eq!(md.get("b").map(|v| v.as_bytes()), Some(&b"\x00\x01"[..]));
        md.insert("a", "3");
        assert_eq!(md.get_all("a").count(), 1);
        assert_eq!(md.get_str("a"), Some("3"));
        let keys: Vec<_> = md.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "a"]);
        assert!(md.remove("B").is_some());
        assert!(!md.contains_key("b"));
    }

    #[test]
    fn a_static_key_reads_and_moves_like_any_other() {
        let mut md = Metadata::new();
        md.append_static("user-agent", "a");
        md.append("User-Agent", "b");
        let all: Vec<_> = md
            .get_all("USER-AGENT")
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(all, ["a", "b"]);
        let mut other = Metadata::new();
        other.append("user-agent", "a");
        other.append("User-Agent", "b");
        assert_eq!(md, other, "equal whatever the key's storage");
        let owned: Vec<(String, MetadataValue)> = md.into_iter().collect();
        assert_eq!(owned[0].0, "user-agent");
        assert_eq!(owned[1].0, "User-Agent");
    }

    #[test]
    fn shared_metadata_is_copied_on_write() {
        let mut md = Metadata::new();
        md.append_static("user-agent", "a");
        md.append("x", "1");
        let shared = md.clone().into_shared();
        let mut copy = shared.clone();
        assert_eq!(copy, md, "equal whatever the storage");
        copy.append("y", "2");
        copy.insert("x", "3");
        assert_eq!(shared, md, "a change to a clone leaves the others alone");
        assert_eq!(copy.get_str("x"), Some("3"));
        assert_eq!(copy.len(), 3);
        let mut other = shared.clone();
        assert!(other.remove("nope").is_none());
        assert!(other.remove("X").is_some());
        assert_eq!(shared.len(), 2);
        let mut ext = Metadata::new();
        ext.extend(shared.clone());
        ext.extend(copy.clone());
        assert_eq!(ext.len(), 5);
        let owned: Vec<(String, MetadataValue)> = shared.into_iter().collect();
        assert_eq!(owned.len(), 2);
    }
}
