//! Generates the peers' stubs into `OUT_DIR`:
//!
//! * `volo_gen.rs`: the volo-thrift stubs of the echo service (`idl/echo.thrift`), with volo's
//!   own code generator: the volo peer must be what volo users run, not something we wrote.
//! * `test.rs`: `grpc.testing.TestService` (and its messages) from the gRPC interop protos in
//!   `proto/grpc/testing/` (copied from grpc/grpc `src/proto/grpc/testing`), with our
//!   rpc-codegen: the service our `interop-server` and `interop-client` implement.
//! * `tonic/echo.rs`: tonic's stubs of the echo service (`../examples/idl/echo.proto`, the proto
//!   our side serves and calls through `examples::proto`), written by tonic-prost-build, for
//!   `tests/tonic.rs`. No `protoc`: protox compiles the proto to a descriptor set. tonic's and
//!   rpc-codegen's messages derive through the same `::prost` (0.14, one line in Cargo.lock).

fn main() {
    println!("cargo:rerun-if-changed=idl/echo.thrift");
    println!("cargo:rerun-if-changed=../examples/idl/echo.proto");
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = volo_build::Builder::thrift()
        .add_service("idl/echo.thrift")
        .write()
    {
        panic!("volo-build failed on idl/echo.thrift: {e:#}");
    }
    if let Err(e) = rpc_codegen::Builder::new()
        .compile(&["proto/grpc/testing/test.proto"], &["proto/grpc/testing"])
    {
        panic!("rpc-codegen failed on proto/grpc/testing/test.proto: {e}");
    }
    tonic_stubs();
    tonic_stubs_on_our_messages();
    // The reverse: our service stubs on tonic's messages (`tests/shared_messages.rs` includes
    // tonic's `echo.rs` as `crate::tonic_echo`).
    if let Err(e) = rpc_codegen::Builder::new()
        .output_name("echo_on_tonic")
        .extern_path(".echo", "crate::tonic_echo")
        .compile(&["../examples/idl/echo.proto"], &["../examples/idl"])
    {
        panic!("rpc-codegen (extern_path) failed on ../examples/idl/echo.proto: {e}");
    }
}

/// tonic's client and server stubs of the same proto, but with the messages mapped
/// (`extern_path`) to the ones rpc-codegen generated in `examples::proto`: one message type for
/// both stacks, as a team migrating service by service has it. Into `OUT_DIR/tonic_shared/`.
fn tonic_stubs_on_our_messages() {
    let fds = match protox::compile(["echo.proto"], ["../examples/idl"]) {
        Ok(f) => f,
        Err(e) => panic!("protox failed on ../examples/idl/echo.proto: {e}"),
    };
    let out = match std::env::var_os("OUT_DIR") {
        Some(d) => std::path::PathBuf::from(d).join("tonic_shared"),
        None => panic!("cargo sets OUT_DIR for build scripts"),
    };
    if let Err(e) = std::fs::create_dir_all(&out) {
        panic!("creating {}: {e}", out.display());
    }
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .extern_path(".echo", "::examples::proto")
        .out_dir(&out)
        .compile_fds(fds)
    {
        panic!("tonic-prost-build (extern_path) failed on ../examples/idl/echo.proto: {e}");
    }
}

/// tonic's stubs of `../examples/idl/echo.proto` into `OUT_DIR/tonic/echo.rs`.
fn tonic_stubs() {
    let fds = match protox::compile(["echo.proto"], ["../examples/idl"]) {
        Ok(f) => f,
        Err(e) => panic!("protox failed on ../examples/idl/echo.proto: {e}"),
    };
    let out = match std::env::var_os("OUT_DIR") {
        Some(d) => std::path::PathBuf::from(d).join("tonic"),
        None => panic!("cargo sets OUT_DIR for build scripts"),
    };
    if let Err(e) = std::fs::create_dir_all(&out) {
        panic!("creating {}: {e}", out.display());
    }
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&out)
        .compile_fds(fds)
    {
        panic!("tonic-prost-build failed on ../examples/idl/echo.proto: {e}");
    }
}
