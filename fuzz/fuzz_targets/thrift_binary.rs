//! rpc-core's thrift binary reader (`codec::thrift::SliceInput`, what `ThriftCodec::decode`
//! reads through) decoding generated types — every field kind, recursion, a union, nested
//! containers, unknown fields skipped — and the `thrift` crate's generic skip over it.
//!
//! Asserts, beyond "no panic" (and no stack overflow: nesting is capped):
//! - a decoded value's static encoder (`ThriftMessage::encode_to`) writes exactly
//!   `encoded_len()` bytes, byte-identical to the reference `TSerializable` writer
//!   (`BufOutput`), and those bytes decode to a value that encodes the same again
//!   (encodings compared, not values: NaN doubles are not equal to themselves);
//! - allocation stays proportional to the input (libFuzzer's malloc limit catches a length
//!   trusted from the wire).
#![no_main]

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpc_core::codec::thrift::{BufOutput, SliceInput, ThriftMessage};
use rpc_core::{Codec, ThriftCodec};
use rpc_fuzz::sink::base::Meta;
use rpc_fuzz::sink::{ChildGetArgs, ChildGetResult, Everything, Node, Value};
use rpc_fuzz::split_first;
use thrift::protocol::{TInputProtocol, TType};

fn encode<T: ThriftMessage>(v: &T) -> BytesMut {
    let len = v.encoded_len();
    let mut fast = BytesMut::new();
    v.encode_to(&mut fast);
    assert_eq!(fast.len(), len, "encoded_len disagrees with encode_to");
    let mut reference = BytesMut::new();
    v.write_to_out_protocol(&mut BufOutput::new(&mut reference))
        .expect("the reference writer takes a decoded value");
    assert_eq!(
        fast, reference,
        "encode_to differs from the TSerializable writer"
    );
    fast
}

fn check<T: ThriftMessage + Debug>(buf: &[u8])
where
    ThriftCodec: Codec<T>,
{
    let Ok(v) = <ThriftCodec as Codec<T>>::decode(Bytes::copy_from_slice(buf)) else {
        return;
    };
    let first = encode(&v);
    let back = <ThriftCodec as Codec<T>>::decode(first.clone().freeze())
        .unwrap_or_else(|e| panic!("re-encoded {v:?} does not decode: {e}"));
    assert_eq!(encode(&back), first, "round trip changed the encoding");
}

fuzz_target!(|data: &[u8]| {
    let (which, buf) = split_first(data);
    match which % 7 {
        0 => check::<Everything>(buf),
        1 => check::<Node>(buf),
        2 => check::<Value>(buf),
        3 => check::<ChildGetArgs>(buf),
        4 => check::<ChildGetResult>(buf),
        5 => check::<Meta>(buf),
        _ => {
            // The generic skip the generated readers use for unknown fields, from any type.
            let (ty, rest) = split_first(buf);
            let types = [
                TType::Bool,
                TType::I08,
                TType::Double,
                TType::I16,
                TType::I32,
                TType::I64,
                TType::String,
                TType::Struct,
                TType::Map,
                TType::Set,
                TType::List,
            ];
            let mut input = SliceInput::new(rest);
            if input.skip(types[usize::from(ty) % types.len()]).is_ok() {
                assert!(input.remaining().len() <= rest.len());
            }
            let _ = SliceInput::new(rest).read_message_begin();
        }
    }
});
