//! rpc-codegen's thrift frontend (hand-written lexer and parser, name resolution and checks)
//! and the generator behind it, on arbitrary text.
//!
//! Asserts, beyond "no panic": an IDL error names a place inside the text (1-based line at
//! most one past the last line, column at most one past the end of that line, in
//! characters); whatever the frontend accepts, the generator turns into code or refuses with
//! a typed error, and does so deterministically (same text, same output).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpc_codegen::fuzzing::load_thrift_str;
use rpc_codegen::{generate, Error};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match load_thrift_str(text) {
        Ok(ir) => {
            let first = generate(&ir).map_err(|e| e.to_string());
            if let Ok(code) = &first {
                assert!(!code.is_empty());
            }
            let again = load_thrift_str(text).expect("accepted once, accepted again");
            assert_eq!(
                generate(&again).map_err(|e| e.to_string()),
                first,
                "not deterministic"
            );
        }
        Err(Error::Idl(e)) => {
            let lines: Vec<&str> = text.split('\n').collect();
            let line = e.location.line as usize;
            assert!(
                line >= 1 && line <= lines.len() + 1,
                "{e}: line out of range"
            );
            let width = lines.get(line - 1).map_or(0, |l| l.chars().count());
            let column = e.location.column as usize;
            assert!(
                column >= 1 && column <= width + 1,
                "{e}: column out of range"
            );
        }
        Err(e) => panic!("a thrift text failed with a non-IDL error: {e}"),
    }
});
