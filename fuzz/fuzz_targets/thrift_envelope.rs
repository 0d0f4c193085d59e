//! The TTHeader crate's thrift-binary reader (`proto::thrift_msg`): the message envelope,
//! `TApplicationException` (with its skipping of unknown fields), whole EXCEPTION messages
//! (ttstream Trailer and Rst payloads) and unary payload sniffing, on arbitrary bytes.
//!
//! Asserts, beyond "no panic": a decoded envelope re-encodes to exactly the bytes it was read
//! from (but for the unused byte of the version word); a decoded exception (message and EXCEPTION message) round-trips; every error offset
//! lies inside the input and a truncation reports the bytes that were really left (also
//! after re-basing a nested error onto the outer buffer); `split` agrees with `sniff` and
//! returns a suffix of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpc_transport_ttheader::proto::thrift_msg::{
    decode_exception_message, encode_exception_message,
};
use rpc_transport_ttheader::proto::{
    ApplicationException, MessageHeader, MessageHeaderRef, PayloadForm, ThriftError,
};

/// Every offset an error names is inside `buf`, and a truncation says what was left.
fn check_error(e: &ThriftError, buf: &[u8]) {
    match *e {
        ThriftError::Truncated {
            offset,
            need,
            available,
        } => {
            assert_eq!(offset + available, buf.len(), "{e}");
            assert!(need > available, "{e}");
        }
        ThriftError::NegativeLength { offset, .. }
        | ThriftError::InvalidUtf8 { offset }
        | ThriftError::InvalidType { offset, .. } => assert!(offset <= buf.len(), "{e}"),
        _ => {}
    }
}

fuzz_target!(|buf: &[u8]| {
    match MessageHeaderRef::decode(buf) {
        Ok((h, n)) => {
            assert!(n <= buf.len());
            let mut enc = Vec::new();
            h.encode(&mut enc).expect("encodes");
            // Byte 2 of the version word is unused: ignored on read (as Apache Thrift does),
            // written as 0.
            assert_eq!(enc[2], 0);
            let mut read = buf[..n].to_vec();
            read[2] = 0;
            assert_eq!(enc, read, "envelope did not re-encode to its bytes");
            assert_eq!(h.encoded_len(), n);
            assert_eq!(MessageHeader::decode(buf), Ok((h.to_owned(), n)));
        }
        Err(e) => check_error(&e, buf),
    }

    match ApplicationException::decode(buf) {
        Ok((exc, n)) => {
            assert!(n <= buf.len());
            let mut enc = Vec::new();
            exc.encode(&mut enc).expect("encodes");
            assert_eq!(ApplicationException::decode(&enc), Ok((exc, enc.len())));
        }
        Err(e) => check_error(&e, buf),
    }

    match decode_exception_message(buf) {
        Ok((header, exc)) => {
            let mut enc = Vec::new();
            encode_exception_message(&header.name, header.seq_id, &exc, &mut enc).expect("encodes");
            assert_eq!(decode_exception_message(&enc), Ok((header, exc)));
        }
        Err(e) => check_error(&e, buf),
    }

    match PayloadForm::split(buf) {
        Ok((form, body)) => {
            assert_eq!(PayloadForm::sniff(buf), Some(form));
            assert!(buf.ends_with(body));
        }
        Err(e) => check_error(&e, buf),
    }
});
