//! Generates the standard services from `proto/` into `OUT_DIR`: `health.rs` from
//! `grpc/health/v1/health.proto`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let result = rpc_codegen::Builder::new()
        .output_name("health")
        .compile(&["proto/grpc/health/v1/health.proto"], &["proto"]);
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
