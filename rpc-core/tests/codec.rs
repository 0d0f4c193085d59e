//! Codecs: round trips, untrusted input, and encoding into a buffer the transport owns.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use rpc_core::codec::thrift::{wire, BufOutput, SliceInput, ThriftMessage};
use rpc_core::{Codec, ProstCodec, ThriftCodec};
use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TListIdentifier, TOutputProtocol, TSerializable,
    TStructIdentifier, TType,
};

/// A hand-written thrift struct `{1: string s, 2: i32 n, 3: list<i64> l}`, as codegen emits.
#[derive(Debug, Clone, PartialEq, Default)]
struct T {
    s: String,
    n: i32,
    l: Vec<i64>,
}

fn field(t: TType, id: i16) -> TFieldIdentifier {
    TFieldIdentifier::new::<Option<String>, String, i16>(None, t, id)
}

impl TSerializable for T {
    fn read_from_in_protocol(i: &mut dyn TInputProtocol) -> thrift::Result<Self> {
        i.read_struct_begin()?;
        let mut out = T::default();
        loop {
            let f = i.read_field_begin()?;
            match (f.field_type, f.id) {
                (TType::Stop, _) => break,
                (TType::String, Some(1)) => out.s = i.read_string()?,
                (TType::I32, Some(2)) => out.n = i.read_i32()?,
                (TType::List, Some(3)) => {
                    let l = i.read_list_begin()?;
                    for _ in 0..l.size {
                        out.l.push(i.read_i64()?);
                    }
                    i.read_list_end()?;
                }
                (t, _) => i.skip(t)?,
            }
            i.read_field_end()?;
        }
        i.read_struct_end()?;
        Ok(out)
    }

    fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new(""))?;
        o.write_field_begin(&field(TType::String, 1))?;
        o.write_string(&self.s)?;
        o.write_field_end()?;
        o.write_field_begin(&field(TType::I32, 2))?;
        o.write_i32(self.n)?;
        o.write_field_end()?;
        o.write_field_begin(&field(TType::List, 3))?;
        o.write_list_begin(&TListIdentifier::new(TType::I64, self.l.len() as i32))?;
        for v in &self.l {
            o.write_i64(*v)?;
        }
        o.write_list_end()?;
        o.write_field_end()?;
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

impl ThriftMessage for T {
    fn encoded_len(&self) -> usize {
        wire::STOP_LEN
            + wire::FIELD_HEADER_LEN
            + wire::bytes_len(self.s.len())
            + wire::FIELD_HEADER_LEN
            + 4
            + wire::FIELD_HEADER_LEN
            + wire::LIST_HEADER_LEN
            + 8 * self.l.len()
    }

    fn encode_to<B: BufMut + ?Sized>(&self, dst: &mut B) {
        wire::put_field_begin(dst, wire::STRING, 1);
        wire::put_bytes(dst, self.s.as_bytes());
        wire::put_field_begin(dst, wire::I32, 2);
        dst.put_i32(self.n);
        wire::put_field_begin(dst, wire::LIST, 3);
        wire::put_list_begin(dst, wire::I64, self.l.len());
        for v in &self.l {
            dst.put_i64(*v);
        }
        wire::put_stop(dst);
    }
}

#[test]
fn thrift_encoding_matches_the_binary_protocol_bytes() {
    let t = T {
        s: "hi".into(),
        n: 1,
        l: vec![2],
    };
    let mut buf = BytesMut::new();
    <ThriftCodec as Codec<T>>::encode(&t, &mut buf).unwrap();
    let want: &[u8] = &[
        0x0b, 0, 1, 0, 0, 0, 2, b'h', b'i', // 1: string "hi"
        0x08, 0, 2, 0, 0, 0, 1, // 2: i32 1
        0x0f, 0, 3, 0x0a, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, // 3: list<i64> [2]
        0, // STOP
    ];
    assert_eq!(&buf[..], want);
    assert_eq!(<ThriftCodec as Codec<T>>::encoded_len(&t), Some(want.len()));
    let mut reference = BytesMut::new();
    t.write_to_out_protocol(&mut BufOutput::new(&mut reference))
        .unwrap();
    assert_eq!(&reference[..], want);
}

#[test]
fn thrift_encoding_into_a_short_slice_is_an_error() {
    let t = T {
        s: "hi".into(),
        n: 1,
        l: vec![2],
    };
    let mut region = [0u8; 32];
    let err = <ThriftCodec as Codec<T>>::encode(&t, &mut &mut region[..]).unwrap_err();
    assert!(err.message().contains("does not fit"), "{err}");
    assert_eq!(region, [0u8; 32], "nothing was written");
}

#[test]
fn encoding_into_a_fixed_slice_writes_in_place() {
    // A transport can hand over memory it owns (a shared-memory slice): no copy in between.
    let t = T {
        s: "zero-copy".into(),
        n: 9,
        l: vec![],
    };
    let mut region = [0u8; 64];
    let mut dst: &mut [u8] = &mut region[..];
    <ThriftCodec as Codec<T>>::encode(&t, &mut dst).unwrap();
    let written = 64 - dst.remaining_mut();
    let back: T = ThriftCodec::decode(Bytes::copy_from_slice(&region[..written])).unwrap();
    assert_eq!(back, t);
}

#[test]
fn truncated_thrift_input_is_an_error_not_a_panic() {
    let t = T {
        s: "abc".into(),
        n: 5,
        l: vec![1, 2, 3],
    };
    let full = rpc_core::codec::encode_to_bytes::<ThriftCodec, T>(&t).unwrap();
    for cut in 0..full.len() {
        let r: Result<T, _> = ThriftCodec::decode(full.slice(..cut));
        assert!(r.is_err(), "cut at {cut} decoded");
    }
}

proptest! {
    #[test]
    fn thrift_round_trips(s in ".*", n in any::<i32>(), l in proptest::collection::vec(any::<i64>(), 0..20)) {
        let t = T { s, n, l };
        let bytes = rpc_core::codec::encode_to_bytes::<ThriftCodec, T>(&t).unwrap();
        let mut reference = BytesMut::new();
        t.write_to_out_protocol(&mut BufOutput::new(&mut reference)).unwrap();
        prop_assert_eq!(&bytes[..], &reference[..]);
        prop_assert_eq!(t.encoded_len(), bytes.len());
        let back: T = ThriftCodec::decode(bytes).unwrap();
        prop_assert_eq!(back, t);
    }

    #[test]
    fn thrift_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = <ThriftCodec as Codec<T>>::decode(Bytes::from(bytes.clone()));
        // Skipping arbitrary input as an unknown struct must not panic or overflow either.
        let mut p = SliceInput::new(&bytes);
        let _ = p.skip(TType::Struct);
    }

    #[test]
    fn prost_round_trips_and_random_bytes_never_panic(s in ".*", bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let enc = rpc_core::codec::encode_to_bytes::<ProstCodec, String>(&s).unwrap();
        let back: String = ProstCodec::decode(enc).unwrap();
        prop_assert_eq!(back, s);
        let _ = <ProstCodec as Codec<String>>::decode(Bytes::from(bytes));
    }
}

#[test]
fn encode_exact_fills_a_reserved_slice_and_refuses_a_wrong_size() {
    let msg = "exactly these bytes".to_owned();
    let len = <ProstCodec as Codec<String>>::encoded_len(&msg).unwrap();
    let mut slot = vec![0u8; len];
    rpc_core::codec::encode_exact::<ProstCodec, String>(&msg, &mut slot).unwrap();
    let back: String = ProstCodec::decode(bytes::Bytes::from(slot)).unwrap();
    assert_eq!(back, msg);
    let mut short = vec![0u8; len - 1];
    let err = rpc_core::codec::encode_exact::<ProstCodec, String>(&msg, &mut short).unwrap_err();
    assert_eq!(err.code(), rpc_core::Code::Internal);
}
