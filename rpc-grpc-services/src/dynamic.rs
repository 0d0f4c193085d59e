//! A dynamic protobuf client: calls any method of any service a descriptor set describes —
//! one given, or one fetched from a server's reflection service — with messages built at run
//! time (`prost_reflect::DynamicMessage`, from and to the protobuf text format), in any of
//! the four modes, over any transport. What `echo-client --call` and tools in the style of
//! `grpcurl` are made of.
//!
//! The messages travel as payload bytes through `rpc_core::generic`, so everything a typed
//! call has (metadata, deadlines, cancel, middleware, every transport) applies.
//!
//! ```no_run
//! # async fn f(client: rpc_core::Client) -> Result<(), rpc_core::Status> {
//! use rpc_grpc_services::dynamic::DynamicClient;
//! // The descriptors of every service the server lists, through its reflection service.
//! let dynamic = DynamicClient::from_reflection(client).await?;
//! let method = dynamic.method("echo.TestService/PingPong")?;
//! let request = dynamic.parse_request(&method, r#"message: "hi""#)?;
//! let responses = dynamic.call(&method, vec![request], Default::default()).await?;
//! println!("{}", responses[0].to_text_format());
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use rpc_core::generic::{GenericClient, RawCodec};
use rpc_core::{CallOptions, Client, Code, Mode, PayloadKind, Status};

use crate::reflection::v1;
use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

/// How many files [`DynamicClient::from_reflection`] takes from a server: more than any real
/// set of services imports, and a bound on what a server can make the client hold.
pub const MAX_REFLECTED_FILES: usize = 4096;

/// How many responses [`DynamicClient::call`] collects before it stops the call with
/// `RESOURCE_EXHAUSTED` (a tool printing them reads them with [`DynamicClient::call_with`]
/// instead, one at a time).
pub const MAX_COLLECTED_RESPONSES: usize = 100_000;

/// Calls methods of the services in a descriptor pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamicClient {
    client: Client,
    pool: DescriptorPool,
}

fn invalid(what: impl std::fmt::Display) -> Status {
    Status::invalid_argument(what.to_string())
}

impl DynamicClient {
    /// Calls through `client` the methods `pool` describes.
    pub fn new(client: Client, pool: DescriptorPool) -> DynamicClient {
        DynamicClient { client, pool }
    }

    /// Calls through `client` the methods of a serialized `FileDescriptorSet` (rpc-codegen's
    /// `FILE_DESCRIPTOR_SET`, `protoc --descriptor_set_out`, protox).
    pub fn from_descriptor_set(client: Client, encoded: &[u8]) -> Result<DynamicClient, Status> {
        let pool = DescriptorPool::decode(encoded).map_err(invalid)?;
        Ok(DynamicClient::new(client, pool))
    }

    /// Asks the server `client` reaches for its services (`grpc.reflection.v1`: list the
    /// services, then the file of each and the files it imports) and calls them through the
    /// same client. At most [`MAX_REFLECTED_FILES`] files are taken.
    pub async fn from_reflection(client: Client) -> Result<DynamicClient, Status> {
        let files = reflect_files(&client).await?;
        let pool = pool_of(files)?;
        Ok(DynamicClient::new(client, pool))
    }

    /// The descriptors.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The services the pool describes (full names).
    pub fn services(&self) -> Vec<String> {
        self.pool
            .services()
            .map(|s| s.full_name().to_owned())
            .collect()
    }

    /// The method `name` names: `pkg.Service/Method` (a gRPC path, with or without the
    /// leading `/`) or `pkg.Service.Method`.
    pub fn method(&self, name: &str) -> Result<MethodDescriptor, Status> {
        let name = name.trim_start_matches('/');
        let (service, method) = name
            .rsplit_once('/')
            .or_else(|| name.rsplit_once('.'))
            .ok_or_else(|| invalid(format!("{name:?} is not Service/Method")))?;
        let svc = self
            .pool
            .get_service_by_name(service)
            .ok_or_else(|| Status::not_found(format!("no service {service} in the descriptors")))?;
        let found = svc.methods().find(|m| m.name() == method);
        found.ok_or_else(|| Status::not_found(format!("service {service} has no method {method}")))
    }

    /// A request of `method` from the protobuf text format (`message: "hi" repeat: 2`).
    pub fn parse_request(
        &self,
        method: &MethodDescriptor,
        text: &str,
    ) -> Result<DynamicMessage, Status> {
        DynamicMessage::parse_text_format(method.input(), text).map_err(invalid)
    }

    /// Calls `method` in its mode: sends `requests` (exactly one for unary and server
    /// streaming), half-closes, and returns every response (at most
    /// [`MAX_COLLECTED_RESPONSES`]).
    pub async fn call(
        &self,
        method: &MethodDescriptor,
        requests: Vec<DynamicMessage>,
        opts: CallOptions,
    ) -> Result<Vec<DynamicMessage>, Status> {
        let mut out = Vec::new();
        self.call_with(method, requests, opts, |m| {
            if out.len() >= MAX_COLLECTED_RESPONSES {
                return Err(Status::resource_exhausted(format!(
                    "more than {MAX_COLLECTED_RESPONSES} responses"
                )));
            }
            out.push(m);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// As [`DynamicClient::call`], handing each response to `each` as it arrives (an error
    /// from it cancels the call).
    pub async fn call_with(
        &self,
        method: &MethodDescriptor,
        requests: Vec<DynamicMessage>,
        opts: CallOptions,
        mut each: impl FnMut(DynamicMessage) -> Result<(), Status>,
    ) -> Result<(), Status> {
        let mode = match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => Mode::Unary,
            (true, false) => Mode::ClientStreaming,
            (false, true) => Mode::ServerStreaming,
            (true, true) => Mode::Bidi,
        };
        if !mode.client_streams() && requests.len() != 1 {
            return Err(invalid(format!(
                "{} takes exactly one request, not {}",
                method.full_name(),
                requests.len()
            )));
        }
        let output = method.output();
        let decode = |b: Bytes| DynamicMessage::decode(output.clone(), b).map_err(invalid);
        let generic = GenericClient::new(
            self.client.clone(),
            method.parent_service().full_name(),
            PayloadKind::Protobuf,
        );
        let desc = generic.method(method.name(), mode)?;
        // Every mode as a bidi stream of its own mode's descriptor: one loop for all four.
        let mut call = self
            .client
            .bidi::<RawCodec, Bytes, Bytes>(desc, opts)
            .await?;
        for r in requests {
            call.send(Bytes::from(r.encode_to_vec())).await?;
        }
        call.close_send()?;
        while let Some(b) = call.recv().await? {
            if let Err(e) = decode(b).and_then(&mut each) {
                call.cancel();
                return Err(e);
            }
        }
        Ok(())
    }
}

/// The files of every service the server lists, with their imports, through
/// `grpc.reflection.v1` (one stream; one question answered at a time).
async fn reflect_files(client: &Client) -> Result<Vec<FileDescriptorProto>, Status> {
    let reflection = v1::ServerReflectionClient::new(client.clone());
    let mut stream = reflection.server_reflection_info().await?;
    let ask = |q: MessageRequest| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(q),
    };
    stream
        .send(ask(MessageRequest::ListServices(String::new())))
        .await?;
    let services = match answer(&mut stream).await? {
        MessageResponse::ListServicesResponse(l) => l.service,
        other => return Err(unexpected(&other)),
    };
    let mut files: HashMap<String, FileDescriptorProto> = HashMap::new();
    for service in services {
        stream
            .send(ask(MessageRequest::FileContainingSymbol(service.name)))
            .await?;
        match answer(&mut stream).await? {
            MessageResponse::FileDescriptorResponse(r) => {
                for bytes in r.file_descriptor_proto {
                    let file = FileDescriptorProto::decode(bytes.as_slice()).map_err(|e| {
                        Status::internal(format!("reflection sent a malformed file: {e}"))
                    })?;
                    if files.len() >= MAX_REFLECTED_FILES {
                        stream.cancel();
                        return Err(Status::resource_exhausted(format!(
                            "the server describes more than {MAX_REFLECTED_FILES} files"
                        )));
                    }
                    files.entry(file.name().to_owned()).or_insert(file);
                }
            }
            MessageResponse::ErrorResponse(e) => {
                return Err(Status::new(Code::from_i32(e.error_code), e.error_message))
            }
            other => return Err(unexpected(&other)),
        }
    }
    stream.close_send()?;
    Ok(files.into_values().collect())
}

async fn answer(
    stream: &mut rpc_core::BidiStreamingClient<
        v1::ServerReflectionRequest,
        v1::ServerReflectionResponse,
    >,
) -> Result<MessageResponse, Status> {
    stream
        .recv()
        .await?
        .and_then(|r| r.message_response)
        .ok_or_else(|| Status::internal("the reflection stream ended without an answer"))
}

fn unexpected(r: &MessageResponse) -> Status {
    Status::internal(format!("unexpected reflection answer: {r:?}"))
}

/// A pool of `files` in any order: each is added once the files it imports are in.
fn pool_of(mut files: Vec<FileDescriptorProto>) -> Result<DescriptorPool, Status> {
    let mut pool = DescriptorPool::new();
    let mut added: HashSet<String> = HashSet::new();
    while !files.is_empty() {
        let (ready, waiting): (Vec<_>, Vec<_>) = files
            .into_iter()
            .partition(|f| f.dependency.iter().all(|d| added.contains(d)));
        if ready.is_empty() {
            let missing: Vec<_> = waiting.iter().map(|f| f.name().to_owned()).collect();
            return Err(Status::internal(format!(
                "reflection files whose imports never came: {missing:?}"
            )));
        }
        added.extend(ready.iter().map(|f| f.name().to_owned()));
        pool.add_file_descriptor_set(FileDescriptorSet { file: ready })
            .map_err(|e| Status::internal(format!("reflection descriptors: {e}")))?;
        files = waiting;
    }
    Ok(pool)
}
