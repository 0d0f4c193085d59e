//! Helpers the fuzz targets share: the kitchen-sink thrift types (rpc-codegen's golden output,
//! which its golden test keeps identical to what the generator writes), the ttheader crate's
//! in-memory frame sink under the name the targets use, and the splitting of one input into chunks.

/// `rpc-codegen/tests/idl/kitchen_sink.thrift`: every thrift field kind, a recursive struct,
/// a union, enums, typedefs, containers nested in containers.
#[allow(missing_docs)]
pub mod sink {
    include!("../../rpc-codegen/tests/golden/kitchen_sink_thrift.rs");
}

/// Frames a session writes, kept in memory (the crate's own in-memory sink).
pub use rpc_transport_ttheader::session::MemorySink as MemSink;

/// Splits `data` into chunks whose sizes come from `sizes` (each byte a chunk of 1..=256
/// bytes, cycling; one chunk when `sizes` is empty): how a socket may deliver the same bytes.
pub fn chunks<'a>(data: &'a [u8], sizes: &'a [u8]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(sizes[i % sizes.len()]) + 1).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}

/// Splits an input at its first byte: `(first, rest)`; `(0, [])` for an empty input.
pub fn split_first(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((b, rest)) => (*b, rest),
        None => (0, &[]),
    }
}

/// Splits an input in two at a length taken from its first two bytes (little-endian, modulo
/// the length): `(a, b)`.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (data, &[]);
    }
    let n = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let rest = &data[2..];
    let at = if rest.is_empty() {
        0
    } else {
        n % (rest.len() + 1)
    };
    rest.split_at(at)
}
