//! Generates the service stubs from `idl/` into `OUT_DIR`: `echo.rs` from the thrift IDL,
//! `echo_proto.rs` from the proto IDL (same stem, so the proto output is renamed), and
//! `hello.rs` for the `hello` example, and `cookbook.rs` for the cookbook examples.

use std::process::ExitCode;

fn main() -> ExitCode {
    let result = rpc_codegen::Builder::new()
        .compile(&["idl/echo.thrift"], &["idl"])
        .and_then(|_| {
            rpc_codegen::Builder::new()
                .output_name("echo_proto")
                .compile(&["idl/echo.proto"], &["idl"])
        })
        .and_then(|_| rpc_codegen::Builder::new().compile(&["idl/hello.proto"], &["idl"]))
        .and_then(|_| rpc_codegen::Builder::new().compile(&["idl/cookbook.proto"], &["idl"]));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with file:line:column, as cargo shows a build script's stderr.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
