//! The one path generated code uses to reach its dependencies (like `tonic::codegen`), so a
//! user crate depends only on `rpc-core`. Not part of the stable API.

pub use crate::client::{
    BidiStreamingClient, Client, ClientStreamingClient, ServerStreamingClient, WithMetadata,
};
pub use crate::codec::thrift::{wire as thrift_wire, ThriftMessage};
pub use crate::codec::{ProstCodec, ThriftCodec};
pub use crate::context::{CallOptions, MethodDesc, Mode, PayloadKind, ServiceDesc};
pub use crate::exception::MethodError;
pub use crate::metadata::Metadata;
pub use crate::server::{
    BidiStreamingServer, ClientStreamingServer, IncomingCall, ServerContext, ServerStreamingServer,
    Service,
};
pub use crate::status::{Code, Status};
pub use crate::transport::{BoxFuture, Connect};
pub use bytes;
pub use prost;
pub use std::future::Future;
pub use std::sync::Arc;
pub use thrift;
