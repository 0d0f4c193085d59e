//! The gRPC interop suite: `grpc.testing.TestService` (grpc/grpc
//! `doc/interop-test-descriptions.md`) served and called with our stubs.
//!
//! * [`testing`]: the messages and stubs rpc-codegen generates from `proto/grpc/testing/*.proto`
//!   (copied from grpc/grpc; `test.proto` imports `empty.proto` and `messages.proto`).
//! * [`service`]: the server features (EmptyCall, UnaryCall, StreamingInputCall,
//!   StreamingOutputCall, FullDuplexCall, HalfDuplexCall, Echo Status, Echo Metadata,
//!   CompressedRequest, CompressedResponse, `interval_us`), hosted by the `interop-server` binary.
//! * [`cases`]: the client test cases (the 18 of [`cases::ALL`]), run by the `interop-client`
//!   binary.
//! * [`compression`]: where the cases meet the transport's compression controls.
//! * [`cli`]: the flags of the official interop binaries.
//!
//! The stubs are transport-generic: the binaries pick the transport with `--transport`.

pub mod cases;
pub mod cli;
pub mod compression;
pub mod service;

/// `grpc.testing`: the interop messages and the `TestService`, `UnimplementedService` and
/// `ReconnectService` stubs, as rpc-codegen generates them.
#[allow(missing_docs)]
pub mod testing {
    rpc_core::include_generated!("test");
}

/// Request metadata the server echoes back in its response header (Echo Metadata).
pub const ECHO_INITIAL_KEY: &str = "x-grpc-test-echo-initial";
/// Request metadata the server echoes back in its trailer (Echo Metadata).
pub const ECHO_TRAILING_KEY: &str = "x-grpc-test-echo-trailing-bin";
