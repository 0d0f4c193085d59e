//! Generates the standard services from `proto/` into `OUT_DIR`: `health.rs` from
//! `grpc/health/v1/health.proto`, `reflection_v1.rs` and `reflection_v1alpha.rs` from
//! `grpc/reflection/{v1,v1alpha}/reflection.proto`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let compile = |name: &str, proto: &str| {
        rpc_codegen::Builder::new()
            .output_name(name)
            .compile(&[proto], &["proto"])
    };
    let result = compile("health", "proto/grpc/health/v1/health.proto")
        .and_then(|_| compile("reflection_v1", "proto/grpc/reflection/v1/reflection.proto"))
        .and_then(|_| {
            compile(
                "reflection_v1alpha",
                "proto/grpc/reflection/v1alpha/reflection.proto",
            )
        });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
