//! IDL frontends (`.thrift`, `.proto`) feeding one IR and one generator of typed Rust stubs,
//! driven from `build.rs` ([`Builder`]) or the `rpc-codegen` CLI.
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), rpc_codegen::Error> {
//!     rpc_codegen::Builder::new().compile(&["idl/echo.thrift"], &["idl"])?;
//!     Ok(())
//! }
//! ```
//!
//! ```ignore
//! // src/lib.rs: the service, with the generated code included
//! mod echo {
//!     rpc_core::include_generated!("echo");
//! }
//! use echo::{Request, Response, TestService, TestServiceClient, TestServiceServer};
//! ```
//!
//! For each service `TestService` the generated code has:
//!
//! * `trait TestService` — one `fn` per method returning `impl Future + Send` (implement it
//!   with `async fn`): unary `ping_pong(&self, ctx, req) -> Result<Response, Status>`
//!   (`Result<Response, MethodError<TestServicePingPongException>>` when the thrift method
//!   declares `throws`), client streaming `echo_client(&self, ctx, ClientStreamingServer<Request>) ->
//!   Result<Response, Status>`, server streaming `echo_server(&self, ctx, req,
//!   ServerStreamingServer<Response>) -> Result<(), Status>`, bidi `echo(&self, ctx, BidiStreamingServer<Request,
//!   Response>) -> Result<(), Status>`;
//! * `TestServiceServer<T>` — the adapter a `rpc_core::Server` hosts;
//! * `TestServiceClient` — wraps a `rpc_core::Client`; `ping_pong(req)`, `echo_client()`,
//!   `echo_server(req)`, `echo()`, each with a `_with(.., CallOptions)` variant;
//! * `TEST_SERVICE_METHODS` / `TEST_SERVICE_DESCRIPTOR` — the static descriptors
//!   (package = thrift namespace / proto package, path `/pkg.Service/Method`);
//! * for a `.proto`, `FILE_DESCRIPTOR_SET` at the top of the generated file — the serialized
//!   `google.protobuf.FileDescriptorSet` of the file and all it imports (source info
//!   stripped), what server reflection (`rpc-grpc-services`) serves.
//!
//! Thrift types become Rust structs, enums (unions), open newtype enums and aliases
//! implementing `thrift::protocol::TSerializable`; proto messages are prost's. How a generated
//! file is laid out is described in [`gen`].
//!
//! # Layout
//!
//! * [`Builder`] — the build.rs API (and [`load`] + [`generate`] for other drivers); the
//!   `rpc-codegen` binary (`src/main.rs`) is a thin CLI over it.
//! * [`ir`] — the IR both frontends produce.
//! * `thrift` — the thrift frontend: a hand-written parser with spans (why: see below),
//!   include resolution, name resolution and checks.
//! * `proto` — the protobuf frontend: protox → descriptors → prost-build for messages.
//! * [`gen`] — the generator (quote + prettyplease).
//! * [`Error`] / [`IdlError`] — typed errors; IDL errors name file, line and column.
//!
//! # Thrift frontend
//!
//! `pilota-thrift-parser` parses thrift, but its syntax tree carries no source positions, so
//! semantic errors (unknown type, bad `streaming.mode`) could not name a line and column, and
//! its syntax errors come only as a formatted report string. The thrift grammar is small, so
//! the parser here is hand-written and keeps a span on every name and type.
//!
//! * Includes resolve against the including file's directory, then the include directories;
//!   included definitions are named `<file stem>.<Name>`.
//! * The Rust module of a file is its `namespace rs` (dotted), else the last segment of
//!   `namespace go`, else `namespace *`; the wire package is the lower-cased last segment of
//!   `namespace go`, else of `rs` (Kitex compatible).
//! * `streaming.mode` = `bidirectional` | `client` | `server` | `unary`; annotated methods take
//!   exactly one argument; streaming methods take and return structs and declare no
//!   exceptions. `oneway` methods, `uuid` and struct-valued constants are rejected.
//! * Field requiredness: `required` → `T` (decoding fails without it), `optional` →
//!   `Option<T>`, neither → `T` (decoding uses the default when it is missing).
//! * `set`/`map` become `BTreeSet`/`BTreeMap` (deterministic encoding); their keys may not
//!   contain `double`. Recursive struct fields are boxed.
//!
//! # Proto frontend
//!
//! protox compiles the file and its imports (no `protoc`); prost-build 0.14 (matching the
//! workspace's prost) generates the messages; our generator adds the services. prost's derives
//! name `::prost`, so a crate using proto IDLs depends on `prost` (and on `prost-types` when
//! it imports `google/protobuf/*`).

#![forbid(unsafe_code)]

pub mod builder;
mod error;
pub mod gen;
pub mod ir;
mod names;
mod proto;
mod thrift;

pub use builder::{load, Builder, GeneratedFile};
pub use error::{Error, IdlError, IdlErrorKind, Location};
pub use gen::generate;

/// Entry points for the fuzz targets in `fuzz/` (not API: hidden, may change at any time).
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    use crate::{ir::Ir, Error};

    /// Parses, resolves and checks one `.thrift` file given as text, as [`crate::load`] does
    /// for a file on disk (named `fuzz.thrift` in errors; includes are reported missing).
    pub fn load_thrift_str(text: &str) -> Result<Ir, Error> {
        crate::thrift::load_str(Path::new("fuzz.thrift"), text)
    }
}
