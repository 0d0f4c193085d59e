//! The echo service of the shared `echo/README.md` (the contract every example, end-to-end test,
//! benchmark and interop check relies on), generated from `idl/echo.thrift` and
//! `idl/echo.proto` by `build.rs` through `rpc-codegen`.
//!
//! ```text
//! cargo run --release -p examples --bin echo
//! ```
//!
//! runs all four modes for both IDLs over every transport available and prints a table.
//!
//! # Layout
//!
//! * [`thrift`] / [`proto`] — the generated code (types, `TestService` trait,
//!   `TestServiceServer`, `TestServiceClient`).
//! * [`Echo`] — the service, implementing both generated traits with the same behaviour,
//!   including the test hooks (`sleep_ms`, `fail`).
//! * [`idl`] — [`EchoIdl`]: what the checks need from each IDL flavour, so every check is
//!   written once for both.
//! * [`check`] — the client side of the contract: one scenario per mode, verified.
//! * [`transport`] — the transports the demo runs over, one row each.
//! * [`forward`] — the streaming proxy of `echo-server --forward`.
//!
//! ```
//! use examples::{check, idl::Thrift, transport::Transport, EchoIdl};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let client = Transport::InProc.connect(Thrift::server()).await.unwrap();
//! let client = Thrift::client(client);
//! for (mode, outcome) in check::run_all::<Thrift>(&client).await {
//!     assert!(outcome.result.is_ok(), "{mode}: {outcome:?}");
//! }
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod check;
pub mod forward;
pub mod idl;
pub mod measure;
pub mod metrics_http;
mod service;
pub mod transport;

pub use idl::EchoIdl;
pub use service::{Echo, EchoRequest, EchoResponse, DECLARED_PREFIX, DEFAULT_REPEAT};

/// A server hosting both flavours of `echo.TestService`: requests are routed by payload kind
/// (thrift or protobuf), which every transport reports.
pub fn server() -> rpc_core::Server {
    server_with_limits(rpc_core::limits::ServerLimits::default())
}

/// [`server`] with the given limits (what `echo-server`'s `--max-*` and `--*-timeout-ms` flags
/// set).
pub fn server_with_limits(limits: rpc_core::limits::ServerLimits) -> rpc_core::Server {
    rpc_core::Server::builder()
        .limits(limits)
        .add_service(thrift::TestServiceServer::new(Echo))
        .add_service(proto::TestServiceServer::new(Echo))
        .build()
}

/// [`server_with_limits`] plus the standard gRPC services `echo-server` serves: health
/// checking (`grpc.health.v1.Health`, statuses from `health`; every hosted service is marked
/// SERVING) and server reflection (`grpc.reflection.v1` and `v1alpha`, describing
/// `echo.proto`, the health service and reflection itself).
pub fn server_with_grpc_services(
    limits: rpc_core::limits::ServerLimits,
    health: &rpc_grpc_services::health::HealthReporter,
) -> rpc_core::Server {
    let mut builder = rpc_core::Server::builder()
        .limits(limits)
        .add_service(thrift::TestServiceServer::new(Echo))
        .add_service(proto::TestServiceServer::new(Echo))
        .add_service(health.service());
    let reflection = rpc_grpc_services::reflection::Reflection::builder()
        .register_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_file_descriptor_set(rpc_grpc_services::health::FILE_DESCRIPTOR_SET)
        .build();
    match reflection {
        Ok(r) => {
            builder = builder
                .add_service(r.service_v1())
                .add_service(r.service_v1alpha());
        }
        // Only if the embedded descriptors were corrupt: serve the rest.
        Err(e) => tracing::error!("server reflection unavailable: {e}"),
    }
    let server = builder.build();
    health.set_server_serving(&server);
    server
}

/// The code generated from `idl/echo.thrift` (thrift binary payloads).
pub mod thrift {
    rpc_core::include_generated!("echo");
}

/// The code generated from `idl/echo.proto` (protobuf payloads).
pub mod proto {
    rpc_core::include_generated!("echo_proto");
}
