//! gRPC server reflection: `grpc.reflection.v1.ServerReflection` and its deprecated twin
//! `grpc.reflection.v1alpha.ServerReflection` (what `grpcurl`, `grpc_cli` and grpcio's
//! `ProtoReflectionDescriptorDatabase` use), served from the descriptors rpc-codegen embeds
//! in every generated proto file (`FILE_DESCRIPTOR_SET`).
//!
//! ```no_run
//! # fn f(app_descriptors: &[u8]) -> Result<(), rpc_grpc_services::reflection::ReflectionError> {
//! use rpc_grpc_services::reflection::Reflection;
//! let reflection = Reflection::builder()
//!     .register_file_descriptor_set(app_descriptors) // e.g. my_proto::FILE_DESCRIPTOR_SET
//!     .register_file_descriptor_set(rpc_grpc_services::health::FILE_DESCRIPTOR_SET)
//!     .build()?;
//! let server = rpc_core::Server::builder()
//!     .add_service(reflection.service_v1())
//!     .add_service(reflection.service_v1alpha())
//!     .build();
//! # Ok(()) }
//! ```
//!
//! What it answers, per request of the `ServerReflectionInfo` stream, in order:
//! - `list_services`: every service declared in the registered files (the reflection
//!   services themselves included), sorted;
//! - `file_by_filename`, `file_containing_symbol` (a package-qualified message, enum, enum
//!   value, service, method or extension): the file and all it transitively imports, the
//!   requested file first;
//! - `file_containing_extension`, `all_extension_numbers_of_type`: from the extensions the
//!   registered files declare;
//! - anything unknown: an `error_response` with `NOT_FOUND` (the stream goes on); a request
//!   without a question: `INVALID_ARGUMENT`.
//!
//! One request is answered before the next is read, so a client cannot make the server
//! queue answers; each answer is bounded by the registered descriptors' size.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use rpc_core::codegen::{BidiStreamingServer, ServerContext};
use rpc_core::{Code, Status};

mod gen_v1 {
    rpc_core::include_generated!("reflection_v1");
}
mod gen_v1alpha {
    rpc_core::include_generated!("reflection_v1alpha");
}

/// The generated code of `grpc/reflection/v1/reflection.proto` (messages, the
/// `ServerReflection` trait, its server and client).
pub mod v1 {
    pub use super::gen_v1::grpc::reflection::v1::*;
    /// The descriptors of `grpc/reflection/v1/reflection.proto`.
    pub use super::gen_v1::FILE_DESCRIPTOR_SET;
}

/// The generated code of `grpc/reflection/v1alpha/reflection.proto` (deprecated by gRPC, still
/// what many clients ask for first).
pub mod v1alpha {
    pub use super::gen_v1alpha::grpc::reflection::v1alpha::*;
    /// The descriptors of `grpc/reflection/v1alpha/reflection.proto`.
    pub use super::gen_v1alpha::FILE_DESCRIPTOR_SET;
}

use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

/// Why registered descriptors could not be indexed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReflectionError {
    /// Bytes that are not a serialized `google.protobuf.FileDescriptorSet`.
    Decode(prost::DecodeError),
}

impl std::fmt::Display for ReflectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReflectionError::Decode(e) => write!(f, "not a FileDescriptorSet: {e}"),
        }
    }
}

impl std::error::Error for ReflectionError {}

/// Collects descriptor sets for a [`Reflection`]; the reflection protos' own are included.
#[derive(Debug, Default)]
pub struct ReflectionBuilder {
    sets: Vec<Vec<u8>>,
}

impl ReflectionBuilder {
    /// Serves the files of this serialized `FileDescriptorSet` (rpc-codegen's
    /// `FILE_DESCRIPTOR_SET`). A file registered twice (a shared import) is kept once.
    pub fn register_file_descriptor_set(mut self, encoded: &[u8]) -> Self {
        self.sets.push(encoded.to_vec());
        self
    }

    /// Decodes and indexes the descriptors.
    pub fn build(self) -> Result<Reflection, ReflectionError> {
        let mut index = Index::default();
        let own: [&[u8]; 2] = [v1::FILE_DESCRIPTOR_SET, v1alpha::FILE_DESCRIPTOR_SET];
        for set in own.into_iter().chain(self.sets.iter().map(Vec::as_slice)) {
            let set = FileDescriptorSet::decode(set).map_err(ReflectionError::Decode)?;
            for file in set.file {
                index.add(file);
            }
        }
        Ok(Reflection {
            index: Arc::new(index),
        })
    }
}

/// Indexed descriptors, served as both reflection services. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reflection {
    index: Arc<Index>,
}

impl Reflection {
    /// A builder, with the reflection protos' descriptors registered.
    pub fn builder() -> ReflectionBuilder {
        ReflectionBuilder::default()
    }

    /// `grpc.reflection.v1.ServerReflection`, for `ServerBuilder::add_service`.
    pub fn service_v1(&self) -> v1::ServerReflectionServer<Reflection> {
        v1::ServerReflectionServer::new(self.clone())
    }

    /// `grpc.reflection.v1alpha.ServerReflection`, for `ServerBuilder::add_service`.
    pub fn service_v1alpha(&self) -> v1alpha::ServerReflectionServer<Reflection> {
        v1alpha::ServerReflectionServer::new(self.clone())
    }

    /// The services the registered files declare, sorted (what `list_services` answers).
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.index.services.iter().map(String::as_str)
    }

    /// The answer to one request.
    pub fn answer(&self, request: v1::ServerReflectionRequest) -> v1::ServerReflectionResponse {
        let response = match &request.message_request {
            None => error(Code::InvalidArgument, "the request asks nothing".to_owned()),
            Some(MessageRequest::ListServices(_)) => {
                MessageResponse::ListServicesResponse(v1::ListServiceResponse {
                    service: self
                        .index
                        .services
                        .iter()
                        .map(|name| v1::ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
            Some(MessageRequest::FileByFilename(name)) => self.files_from(name),
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                match self.index.symbols.get(symbol.trim_start_matches('.')) {
                    Some(file) => self.files_from(file),
                    None => error(Code::NotFound, format!("unknown symbol `{symbol}`")),
                }
            }
            Some(MessageRequest::FileContainingExtension(ext)) => {
                let key = (
                    ext.containing_type.trim_start_matches('.').to_owned(),
                    ext.extension_number,
                );
                match self.index.extensions.get(&key) {
                    Some(file) => self.files_from(file),
                    None => error(
                        Code::NotFound,
                        format!(
                            "no extension {} of `{}`",
                            ext.extension_number, ext.containing_type
                        ),
                    ),
                }
            }
            Some(MessageRequest::AllExtensionNumbersOfType(ty)) => {
                let ty = ty.trim_start_matches('.');
                if self.index.messages.contains(ty) {
                    MessageResponse::AllExtensionNumbersResponse(v1::ExtensionNumberResponse {
                        base_type_name: ty.to_owned(),
                        extension_number: self
                            .index
                            .extension_numbers
                            .get(ty)
                            .map(|s| s.iter().copied().collect())
                            .unwrap_or_default(),
                    })
                } else {
                    error(Code::NotFound, format!("unknown message type `{ty}`"))
                }
            }
        };
        v1::ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(response),
        }
    }

    /// `name` and every file it imports, transitively, `name` first.
    fn files_from(&self, name: &str) -> MessageResponse {
        if !self.index.files.contains_key(name) {
            return error(Code::NotFound, format!("unknown file `{name}`"));
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([name]);
        while let Some(n) = queue.pop_front() {
            if !seen.insert(n) {
                continue;
            }
            // An import that was not registered is left out: the client learns of it by
            // name from the dependency list and can ask elsewhere.
            if let Some((file, encoded)) = self.index.files.get(n) {
                out.push(encoded.clone());
                queue.extend(file.dependency.iter().map(String::as_str));
            }
        }
        MessageResponse::FileDescriptorResponse(v1::FileDescriptorResponse {
            file_descriptor_proto: out,
        })
    }

    async fn serve<Req, Res>(
        &self,
        mut stream: BidiStreamingServer<Req, Res>,
        into: impl Fn(Req) -> Result<v1::ServerReflectionRequest, Status>,
        from: impl Fn(v1::ServerReflectionResponse) -> Result<Res, Status>,
    ) -> Result<(), Status>
    where
        Req: Send + Sync + 'static,
        Res: Send + Sync + 'static,
    {
        while let Some(request) = stream.recv().await? {
            let answer = self.answer(into(request)?);
            stream.send(from(answer)?).await?;
        }
        Ok(())
    }
}

fn error(code: Code, message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(v1::ErrorResponse {
        error_code: code as i32,
        error_message: message,
    })
}

/// v1alpha and v1 messages are the same on the wire (same fields and numbers): converting is
/// re-encoding.
fn convert<A: Message, B: Message + Default>(a: &A) -> Result<B, Status> {
    B::decode(a.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("reflection message conversion: {e}")))
}

impl v1::ServerReflection for Reflection {
    async fn server_reflection_info(
        &self,
        _ctx: ServerContext,
        stream: BidiStreamingServer<v1::ServerReflectionRequest, v1::ServerReflectionResponse>,
    ) -> Result<(), Status> {
        self.serve(stream, Ok, Ok).await
    }
}

impl v1alpha::ServerReflection for Reflection {
    async fn server_reflection_info(
        &self,
        _ctx: ServerContext,
        stream: BidiStreamingServer<
            v1alpha::ServerReflectionRequest,
            v1alpha::ServerReflectionResponse,
        >,
    ) -> Result<(), Status> {
        self.serve(stream, |r| convert(&r), |r| convert(&r)).await
    }
}

/// The registered files and what they declare.
#[derive(Debug, Default)]
struct Index {
    /// By file name: the descriptor and its encoding (what is sent).
    files: HashMap<String, (FileDescriptorProto, Vec<u8>)>,
    /// Fully-qualified symbol (no leading dot) → file name.
    symbols: HashMap<String, String>,
    /// Fully-qualified message names.
    messages: HashSet<String>,
    /// Services, sorted.
    services: BTreeSet<String>,
    /// (extendee, field number) → file name.
    extensions: HashMap<(String, i32), String>,
    /// Extendee → field numbers of its extensions.
    extension_numbers: HashMap<String, BTreeSet<i32>>,
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

impl Index {
    fn add(&mut self, file: FileDescriptorProto) {
        let name = file.name().to_owned();
        if self.files.contains_key(&name) {
            return;
        }
        let package = file.package().to_owned();
        for m in &file.message_type {
            self.message(&name, &package, m);
        }
        for e in &file.enum_type {
            self.enumeration(&name, &package, e);
        }
        for s in &file.service {
            let full = qualify(&package, s.name());
            for m in &s.method {
                self.symbols.insert(qualify(&full, m.name()), name.clone());
            }
            self.symbols.insert(full.clone(), name.clone());
            self.services.insert(full);
        }
        for x in &file.extension {
            self.extension(&name, &package, x);
        }
        let encoded = file.encode_to_vec();
        self.files.insert(name, (file, encoded));
    }

    fn message(&mut self, file: &str, scope: &str, m: &DescriptorProto) {
        let full = qualify(scope, m.name());
        for n in &m.nested_type {
            self.message(file, &full, n);
        }
        for e in &m.enum_type {
            self.enumeration(file, &full, e);
        }
        for x in &m.extension {
            self.extension(file, &full, x);
        }
        for o in &m.oneof_decl {
            self.symbols
                .insert(qualify(&full, o.name()), file.to_owned());
        }
        for f in &m.field {
            self.symbols
                .insert(qualify(&full, f.name()), file.to_owned());
        }
        self.messages.insert(full.clone());
        self.symbols.insert(full, file.to_owned());
    }

    fn enumeration(&mut self, file: &str, scope: &str, e: &EnumDescriptorProto) {
        // Enum values are siblings of their enum (protobuf's C++ scoping rule).
        for v in &e.value {
            self.symbols
                .insert(qualify(scope, v.name()), file.to_owned());
        }
        self.symbols
            .insert(qualify(scope, e.name()), file.to_owned());
    }

    fn extension(&mut self, file: &str, scope: &str, x: &prost_types::FieldDescriptorProto) {
        let extendee = x.extendee().trim_start_matches('.').to_owned();
        self.extensions
            .insert((extendee.clone(), x.number()), file.to_owned());
        self.extension_numbers
            .entry(extendee)
            .or_default()
            .insert(x.number());
        self.symbols
            .insert(qualify(scope, x.name()), file.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(r: &Reflection, q: MessageRequest) -> MessageResponse {
        r.answer(v1::ServerReflectionRequest {
            host: "h".into(),
            message_request: Some(q),
        })
        .message_response
        .expect("an answer")
    }

    fn files(resp: MessageResponse) -> Vec<String> {
        match resp {
            MessageResponse::FileDescriptorResponse(f) => f
                .file_descriptor_proto
                .iter()
                .map(|b| {
                    FileDescriptorProto::decode(b.as_slice())
                        .unwrap()
                        .name()
                        .to_owned()
                })
                .collect(),
            other => panic!("not files: {other:?}"),
        }
    }

    fn code(resp: MessageResponse) -> i32 {
        match resp {
            MessageResponse::ErrorResponse(e) => e.error_code,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn lists_resolves_and_refuses() {
        let r = Reflection::builder()
            .register_file_descriptor_set(crate::health::FILE_DESCRIPTOR_SET)
            .build()
            .unwrap();
        let MessageResponse::ListServicesResponse(l) =
            ask(&r, MessageRequest::ListServices(String::new()))
        else {
            panic!("a list")
        };
        let names: Vec<_> = l.service.into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"
            ]
        );
        for symbol in [
            "grpc.health.v1.Health",
            ".grpc.health.v1.Health.Watch",
            "grpc.health.v1.HealthCheckResponse.ServingStatus",
            "grpc.health.v1.HealthCheckResponse.SERVICE_UNKNOWN",
            "grpc.health.v1.HealthListResponse.StatusesEntry",
        ] {
            assert_eq!(
                files(ask(&r, MessageRequest::FileContainingSymbol(symbol.into()))),
                ["grpc/health/v1/health.proto"],
                "{symbol}"
            );
        }
        assert_eq!(
            files(ask(
                &r,
                MessageRequest::FileByFilename("grpc/reflection/v1/reflection.proto".into())
            )),
            ["grpc/reflection/v1/reflection.proto"]
        );
        assert_eq!(
            code(ask(
                &r,
                MessageRequest::FileContainingSymbol("no.Such".into())
            )),
            Code::NotFound as i32
        );
        assert_eq!(
            code(ask(&r, MessageRequest::FileByFilename("nope.proto".into()))),
            Code::NotFound as i32
        );
        let MessageResponse::AllExtensionNumbersResponse(x) = ask(
            &r,
            MessageRequest::AllExtensionNumbersOfType("grpc.health.v1.HealthCheckRequest".into()),
        ) else {
            panic!("extension numbers")
        };
        assert!(x.extension_number.is_empty());
        let resp = r.answer(v1::ServerReflectionRequest::default());
        assert_eq!(
            code(resp.message_response.unwrap()),
            Code::InvalidArgument as i32
        );
    }

    #[test]
    fn garbage_descriptors_are_an_error() {
        let err = Reflection::builder()
            .register_file_descriptor_set(b"\x0a\xff\xff\xff\xff\x0f")
            .build()
            .unwrap_err();
        assert!(matches!(err, ReflectionError::Decode(_)));
    }
}
