//! The thrift encoding of generated types: the golden TTHeader vector, round trips of random
//! values, and decoding of random or corrupted bytes (errors, never panics).

/// The generated code under test (the checked-in golden files).
pub mod generated {
    /// echo.thrift
    pub mod echo_thrift {
        include!("golden/echo_thrift.rs");
    }
    /// kitchen_sink.thrift
    pub mod sink_thrift {
        include!("golden/kitchen_sink_thrift.rs");
    }
}

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use generated::echo_thrift::{
    EchoError, Request, Response, TestServicePingPongArgs, TestServicePingPongResult,
};
use generated::sink_thrift::{self as sink, base};
use proptest::prelude::*;
use rpc_core::codec::encode_to_bytes;
use rpc_core::codec::thrift::{BufOutput, SliceInput, ThriftMessage};
use rpc_core::{Codec, ThriftCodec};
use thrift::protocol::{TInputProtocol, TMessageType, TSerializable};

/// `unary_call_echo_hi.hex` from the shared TTHeader vectors (copied: tests never read outside
/// the crate).
const ECHO_HI: &str = include_str!("data/unary_call_echo_hi.hex");

fn hex(text: &str) -> Vec<u8> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn encode<T>(v: &T) -> Bytes
where
    ThriftCodec: Codec<T>,
{
    encode_to_bytes::<ThriftCodec, T>(v).unwrap()
}

fn decode<T>(b: &[u8]) -> Result<T, rpc_core::Status>
where
    ThriftCodec: Codec<T>,
{
    <ThriftCodec as Codec<T>>::decode(Bytes::copy_from_slice(b))
}

#[test]
fn args_struct_matches_the_ttheader_vector() {
    let frame = hex(ECHO_HI);
    // TTHeader: 14 fixed bytes, then HEADER SIZE (u16 at 12..14) * 4 bytes of header.
    let header_len = usize::from(u16::from_be_bytes([frame[12], frame[13]])) * 4;
    let payload = &frame[14 + header_len..];
    let mut input = SliceInput::new(payload);
    let msg = input.read_message_begin().unwrap();
    assert_eq!(
        (msg.name.as_str(), msg.message_type, msg.sequence_number),
        ("Echo", TMessageType::Call, 1)
    );
    let body = input.remaining();

    let args = TestServicePingPongArgs {
        req: Request {
            message: "hi".into(),
            ..Default::default()
        },
    };
    assert_eq!(&encode(&args)[..], body);
    assert_eq!(decode::<TestServicePingPongArgs>(body).unwrap(), args);
}

#[test]
fn result_struct_carries_success_in_field_0_and_exceptions_from_1() {
    let ok = TestServicePingPongResult {
        success: Some(Response {
            message: "hi".into(),
            index: None,
        }),
        err: None,
    };
    // field 0 STRUCT { field 1 STRING "hi" } STOP
    assert_eq!(
        &encode(&ok)[..],
        [12, 0, 0, 11, 0, 1, 0, 0, 0, 2, b'h', b'i', 0, 0]
    );
    let err = TestServicePingPongResult {
        success: None,
        err: Some(EchoError {
            reason: "no".into(),
        }),
    };
    assert_eq!(
        &encode(&err)[..],
        [12, 0, 1, 11, 0, 1, 0, 0, 0, 2, b'n', b'o', 0, 0]
    );
}

#[test]
fn missing_required_field_is_an_error_and_unknown_fields_are_skipped() {
    // Request with only field 2 (repeat = 5): `message` (required) is missing.
    let bytes = [8, 0, 2, 0, 0, 0, 5, 0];
    assert!(decode::<Request>(&bytes).is_err());
    // (rpc-core's codec reports the error kind only; the generated message names the field.)
    match <Request as TSerializable>::read_from_in_protocol(&mut SliceInput::new(&bytes)) {
        Err(thrift::Error::Protocol(e)) => assert!(e.message.contains("`message`"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    // Unknown field 9 (a list of i32) and field 1 with the wrong type (i32) are skipped.
    let bytes = [
        15, 0, 9, 8, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, // 9: list<i32> [1, 2]
        8, 0, 1, 0, 0, 0, 7, // 1: i32 7 (wrong type for `message`)
        11, 0, 1, 0, 0, 0, 1, b'x', // 1: string "x"
        0,
    ];
    assert_eq!(decode::<Request>(&bytes).unwrap().message, "x");
    // A default-requiredness field that is missing reads as its default.
    let node = decode::<sink::Node>(&[10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0]).unwrap();
    assert_eq!(
        (node.id, node.weight, node.color),
        (3, 7, sink::Color::GREEN)
    );
}

#[test]
fn unions_need_exactly_one_field() {
    assert!(decode::<sink::Value>(&[0]).is_err());
    let two = [
        10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0,
    ];
    assert!(decode::<sink::Value>(&two).is_err());
    let one = &two[..11];
    let mut one = one.to_vec();
    one.push(0);
    assert_eq!(
        decode::<sink::Value>(&one).unwrap(),
        sink::Value::IntValue(1)
    );
}

#[test]
fn huge_claimed_sizes_do_not_allocate() {
    // Everything.strings (field 10): a list claiming i32::MAX strings with nothing after it.
    let bytes = [15, 0, 10, 11, 0x7f, 0xff, 0xff, 0xff];
    assert!(decode::<sink::Everything>(&bytes).is_err());
    // A map claiming a billion entries.
    let bytes = [13, 0, 2, 11, 11, 0x3b, 0x9a, 0xca, 0x00, 0];
    assert!(decode::<base::Meta>(&bytes).is_err());
}

#[test]
fn unknown_enum_values_survive_a_round_trip() {
    let meta = base::NotFound {
        what: "w".into(),
        level: Some(base::Level(1234)),
    };
    assert_eq!(decode::<base::NotFound>(&encode(&meta)).unwrap(), meta);
}

// ---- property tests -------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), ".{0,12}"]
}

fn opt<T: Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    proptest::option::of(s).boxed()
}

fn request() -> impl Strategy<Value = Request> {
    (text(), opt(any::<i32>()), opt(text()), opt(any::<i64>())).prop_map(
        |(message, repeat, fail, sleep_ms)| Request {
            message,
            repeat,
            fail,
            sleep_ms,
        },
    )
}

fn response() -> impl Strategy<Value = Response> {
    (text(), opt(any::<i32>())).prop_map(|(message, index)| Response { message, index })
}

fn level() -> impl Strategy<Value = base::Level> {
    prop_oneof![
        Just(base::Level::LOW),
        Just(base::Level::NEGATIVE),
        any::<i32>().prop_map(base::Level)
    ]
}

fn color() -> impl Strategy<Value = sink::Color> {
    (0..4i32).prop_map(sink::Color)
}

fn meta() -> impl Strategy<Value = base::Meta> {
    (
        opt(text()),
        proptest::collection::btree_map(text(), text(), 0..3),
    )
        .prop_map(|(trace_id, tags)| base::Meta { trace_id, tags })
}

fn node() -> impl Strategy<Value = sink::Node> {
    let leaf = (any::<i64>(), color(), any::<i32>(), opt(text())).prop_map(
        |(id, color, weight, label)| sink::Node {
            id,
            color,
            weight,
            label,
            ..Default::default()
        },
    );
    leaf.prop_recursive(3, 12, 3, |inner| {
        (
            any::<i64>(),
            opt(inner.clone()),
            proptest::collection::vec(inner, 0..3),
        )
            .prop_map(|(id, next, children)| sink::Node {
                id,
                next: next.map(Box::new),
                children,
                ..Default::default()
            })
    })
}

fn value() -> impl Strategy<Value = sink::Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(sink::Value::IntValue),
        text().prop_map(sink::Value::StringValue),
        node().prop_map(sink::Value::Node),
    ];
    leaf.prop_recursive(3, 10, 3, |inner| {
        proptest::collection::vec(inner, 0..3).prop_map(sink::Value::ListValue)
    })
}

type Nested = BTreeMap<String, Vec<BTreeMap<i32, BTreeSet<String>>>>;

fn nested() -> impl Strategy<Value = Nested> {
    use proptest::collection::{btree_map, btree_set, vec};
    btree_map(
        text(),
        vec(btree_map(any::<i32>(), btree_set(text(), 0..2), 0..2), 0..2),
        0..2,
    )
}

fn everything() -> impl Strategy<Value = sink::Everything> {
    use proptest::collection::{btree_map, btree_set, vec};
    let scalars = (
        any::<bool>(),
        any::<i8>(),
        any::<i8>(),
        any::<i16>(),
        any::<i32>(),
        any::<i64>(),
        prop_oneof![Just(0.0), -1e300..1e300f64],
        text(),
        vec(any::<u8>(), 0..8),
    );
    let containers = (
        vec(text(), 0..3),
        btree_set(any::<i64>(), 0..3),
        nested(),
        opt(meta()),
        vec(meta(), 0..2),
        opt(value()),
        btree_map(color(), node(), 0..2),
        text(),
        opt(vec(vec(any::<u8>(), 0..4), 0..2)),
    );
    let fixed = (
        opt(btree_map(any::<i16>(), color(), 0..3)),
        vec(any::<bool>(), 0..4),
        btree_set(any::<i64>(), 0..3),
        opt(btree_map(any::<i64>(), -1e9..1e9f64, 0..3)),
    );
    (scalars, containers, fixed).prop_map(
        |(
            (b, by, small, medium, large, huge, d, s, bin),
            (strings, ids, nested, meta, metas, value, by_color, r#type, blobs),
            (codes, flags, typed_ids, weights),
        )| sink::Everything {
            b,
            by,
            small,
            medium,
            large,
            huge,
            d,
            s,
            bin,
            strings,
            ids,
            nested,
            meta,
            metas,
            value,
            by_color,
            r#type,
            blobs,
            codes,
            flags,
            typed_ids,
            weights,
        },
    )
}

fn round_trip<T>(v: &T) -> Result<(), TestCaseError>
where
    ThriftCodec: Codec<T>,
    T: PartialEq + Debug,
{
    let bytes = encode(v);
    prop_assert_eq!(&decode::<T>(&bytes).unwrap(), v);
    Ok(())
}

/// The fast path (`ThriftMessage`) against the reference (`TSerializable` through
/// `BufOutput`): the same length, the same bytes into a growable buffer and into an exact-size
/// slice, and the codec refuses a slice one byte short instead of panicking.
fn fast_path_matches<T: ThriftMessage>(v: &T) -> Result<(), TestCaseError> {
    let mut reference = BytesMut::new();
    v.write_to_out_protocol(&mut BufOutput::new(&mut reference))
        .unwrap();
    prop_assert_eq!(v.encoded_len(), reference.len());
    prop_assert_eq!(
        <ThriftCodec as Codec<T>>::encoded_len(v),
        Some(reference.len())
    );

    let mut grown = BytesMut::new();
    v.encode_to(&mut grown);
    prop_assert_eq!(&grown[..], &reference[..]);
    let mut vec = Vec::new();
    v.encode_to(&mut vec);
    prop_assert_eq!(&vec[..], &reference[..]);

    let mut exact = vec![0u8; reference.len()];
    let mut dst = &mut exact[..];
    v.encode_to(&mut dst);
    prop_assert_eq!(dst.len(), 0);
    prop_assert_eq!(&exact[..], &reference[..]);

    let mut exact = vec![0u8; reference.len()];
    <ThriftCodec as Codec<T>>::encode(v, &mut &mut exact[..]).unwrap();
    prop_assert_eq!(&exact[..], &reference[..]);
    let mut short = vec![0u8; reference.len() - 1];
    prop_assert!(<ThriftCodec as Codec<T>>::encode(v, &mut &mut short[..]).is_err());
    Ok(())
}

/// Decodes `bytes` as every generated type; only the absence of panics is checked.
fn decode_all(bytes: &[u8]) {
    let _ = decode::<Request>(bytes);
    let _ = decode::<Response>(bytes);
    let _ = decode::<TestServicePingPongArgs>(bytes);
    let _ = decode::<TestServicePingPongResult>(bytes);
    let _ = decode::<sink::Everything>(bytes);
    let _ = decode::<sink::Node>(bytes);
    let _ = decode::<sink::Value>(bytes);
    let _ = decode::<base::Meta>(bytes);
    let _ = decode::<sink::ChildGetArgs>(bytes);
    let _ = decode::<sink::ChildGetResult>(bytes);
}

proptest! {
    #[test]
    fn echo_types_round_trip(req in request(), res in response(), reason in text()) {
        round_trip(&req)?;
        round_trip(&res)?;
        round_trip(&TestServicePingPongArgs { req })?;
        round_trip(&TestServicePingPongResult { success: Some(res), err: None })?;
        round_trip(&TestServicePingPongResult { success: None, err: Some(EchoError { reason }) })?;
    }

    #[test]
    fn kitchen_sink_types_round_trip(e in everything(), v in value(), l in level(), m in meta()) {
        round_trip(&e)?;
        round_trip(&v)?;
        round_trip(&m)?;
        round_trip(&base::NotFound { what: "x".into(), level: Some(l) })?;
        round_trip(&sink::ChildGetArgs { id: 3, meta: Some(m), color: sink::Color::RED })?;
    }

    #[test]
    fn echo_types_encode_the_reference_bytes(req in request(), res in response(), reason in text()) {
        fast_path_matches(&req)?;
        fast_path_matches(&res)?;
        fast_path_matches(&EchoError { reason: reason.clone() })?;
        fast_path_matches(&TestServicePingPongArgs { req })?;
        fast_path_matches(&TestServicePingPongResult { success: Some(res), err: None })?;
        fast_path_matches(&TestServicePingPongResult { success: None, err: Some(EchoError { reason }) })?;
        fast_path_matches(&TestServicePingPongResult { success: None, err: None })?;
    }

    #[test]
    fn kitchen_sink_types_encode_the_reference_bytes(
        e in everything(),
        v in value(),
        n in node(),
        l in level(),
        m in meta(),
        text in text(),
    ) {
        fast_path_matches(&v)?;
        fast_path_matches(&n)?;
        fast_path_matches(&m)?;
        fast_path_matches(&base::NotFound { what: text.clone(), level: Some(l) })?;
        fast_path_matches(&base::NotFound { what: text.clone(), level: None })?;
        fast_path_matches(&sink::Oops { message: text.clone(), code: l.0 })?;
        fast_path_matches(&sink::ChildGetArgs { id: 3, meta: Some(m.clone()), color: sink::Color::RED })?;
        fast_path_matches(&sink::ChildGetResult { success: None, oops: Some(sink::Oops::default()), not_found: None })?;
        fast_path_matches(&sink::ChildGetResult {
            success: None,
            oops: None,
            not_found: Some(base::NotFound { what: text.clone(), level: None }),
        })?;
        fast_path_matches(&sink::ChildFireArgs { what: text.clone() })?;
        fast_path_matches(&sink::ChildFireResult {})?;
        fast_path_matches(&sink::ChildPingArgs {})?;
        fast_path_matches(&sink::ChildPingResult { success: Some(text) })?;
        fast_path_matches(&sink::ChildSingleArgs { n: n.clone() })?;
        fast_path_matches(&sink::ChildSingleResult { success: Some(n) })?;
        fast_path_matches(&sink::ChildGetResult { success: Some(e.clone()), oops: None, not_found: None })?;
        fast_path_matches(&e)?;
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_all(&bytes);
    }

    #[test]
    fn decoding_corrupted_encodings_never_panics(
        e in everything(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode(&e).to_vec();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        decode_all(&bytes);
        let n = cut.index(bytes.len() + 1);
        decode_all(&bytes[..n]);
    }
}
