//! IDL frontends (`.thrift`, `.proto`) feeding one IR and one generator of typed Rust stubs,
//! driven from `build.rs` or the `rpc-codegen` CLI.
//!
//! Status: placeholder; the generator lands with the codegen issue.
