//! Generates the peers' stubs into `OUT_DIR`:
//!
//! * `volo_gen.rs`: the volo-thrift stubs of the echo service (`idl/echo.thrift`), with volo's
//!   own code generator: the volo peer must be what volo users run, not something we wrote.
//! * `test.rs`: `grpc.testing.TestService` (and its messages) from the gRPC interop protos in
//!   `proto/grpc/testing/` (copied from grpc/grpc `src/proto/grpc/testing`), with our
//!   rpc-codegen: the service our `interop-server` and `interop-client` implement.

fn main() {
    println!("cargo:rerun-if-changed=idl/echo.thrift");
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
}
