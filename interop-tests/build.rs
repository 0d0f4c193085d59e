//! Generates the volo-thrift stubs of the echo service (`idl/echo.thrift`) into
//! `$OUT_DIR/volo_gen.rs`, with volo's own code generator: the volo peer must be what volo users
//! run, not something we wrote.

fn main() {
    println!("cargo:rerun-if-changed=idl/echo.thrift");
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = volo_build::Builder::thrift()
        .add_service("idl/echo.thrift")
        .write()
    {
        panic!("volo-build failed on idl/echo.thrift: {e:#}");
    }
}
