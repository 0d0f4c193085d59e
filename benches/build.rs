//! Generates tonic's stubs of the echo service (`examples/idl/echo.proto`) into `OUT_DIR` with
//! tonic-prost-build, tonic's own generator, so the tonic peer of the `grpc_vs_tonic` bench is
//! what tonic users run. No `protoc`: protox compiles the proto to the descriptor set
//! tonic-prost-build takes.

fn main() {
    println!("cargo:rerun-if-changed=../examples/idl/echo.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = match protox::compile(["echo.proto"], ["../examples/idl"]) {
        Ok(f) => f,
        Err(e) => panic!("protox failed on examples/idl/echo.proto: {e}"),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
    {
        panic!("tonic-prost-build failed on examples/idl/echo.proto: {e}");
    }
}
