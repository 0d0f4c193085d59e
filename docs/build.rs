//! Generates the stubs the guide's code blocks include (`rpc_core::include_generated!`), from
//! the IDLs of the examples crate (`hello.rs`, `cookbook.rs`) and the guide's own thrift IDL
//! (`chat.rs`), as a user's `build.rs` would.

use std::process::ExitCode;

fn main() -> ExitCode {
    let result = rpc_codegen::Builder::new()
        .compile(&["../examples/idl/hello.proto"], &["../examples/idl"])
        .and_then(|_| {
            rpc_codegen::Builder::new()
                .compile(&["../examples/idl/cookbook.proto"], &["../examples/idl"])
        })
        .and_then(|_| rpc_codegen::Builder::new().compile(&["idl/chat.thrift"], &["idl"]));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
