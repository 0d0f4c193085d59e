//! Generates the etcd v3 API stubs (`etcd.rs` in `OUT_DIR`) from the trimmed copies of etcd's
//! protos in `proto/`, with our rpc-codegen (protox: no `protoc` needed).

use std::process::ExitCode;

fn main() -> ExitCode {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    match rpc_codegen::Builder::new()
        .output_name("etcd")
        .compile(&["proto/etcdserverpb/rpc.proto"], &["proto"])
    {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
