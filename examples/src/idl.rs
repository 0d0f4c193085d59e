//! [`EchoIdl`]: the two flavours of the echo service (thrift, proto) behind one interface, so
//! each contract check is written once.

use std::future::Future;

use rpc_core::{
    BidiStreamingClient, CallOptions, Client, ClientStreamingClient, MethodError, Server,
    ServerStreamingClient, Status,
};

use crate::service::{Echo, EchoRequest, EchoResponse};
use crate::{proto, thrift};

/// How a unary call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum PingPongError {
    /// The declared `EchoError{reason}` (thrift only).
    Declared(String),
    /// Any other failure.
    Status(Status),
}

impl std::fmt::Display for PingPongError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PingPongError::Declared(reason) => write!(f, "declared EchoError: {reason}"),
            PingPongError::Status(s) => write!(f, "{s}"),
        }
    }
}

/// One IDL flavour of the echo service: its message types, its generated client, and a
/// server hosting it.
pub trait EchoIdl: Send + Sync + 'static {
    /// `"thrift"` or `"proto"`.
    const NAME: &'static str;
    /// The generated request type.
    type Request: From<EchoRequest> + Into<EchoRequest> + std::fmt::Debug + Send + Sync + 'static;
    /// The generated response type.
    type Response: From<EchoResponse> + Into<EchoResponse> + std::fmt::Debug + Send + Sync + 'static;
    /// The generated client.
    type Client: Clone + Send + Sync + 'static;

    /// A server hosting [`Echo`] for this IDL only (see [`crate::server`] for both at once).
    fn server() -> Server;

    /// The generated client over `inner`.
    fn client(inner: Client) -> Self::Client;

    /// `PingPong`.
    fn ping_pong(
        client: &Self::Client,
        req: EchoRequest,
        options: CallOptions,
    ) -> impl Future<Output = Result<EchoResponse, PingPongError>> + Send;

    /// `Echo` (bidi).
    fn echo(
        client: &Self::Client,
        options: CallOptions,
    ) -> impl Future<Output = Result<BidiStreamingClient<Self::Request, Self::Response>, Status>> + Send;

    /// `EchoClient` (client streaming).
    fn echo_client(
        client: &Self::Client,
        options: CallOptions,
    ) -> impl Future<Output = Result<ClientStreamingClient<Self::Request, Self::Response>, Status>> + Send;

    /// `EchoServer` (server streaming).
    fn echo_server(
        client: &Self::Client,
        req: EchoRequest,
        options: CallOptions,
    ) -> impl Future<Output = Result<ServerStreamingClient<Self::Response>, Status>> + Send;
}

/// The thrift flavour (`idl/echo.thrift`, thrift binary payloads).
#[derive(Debug, Clone, Copy)]
pub struct Thrift;

impl EchoIdl for Thrift {
    const NAME: &'static str = "thrift";
    type Request = thrift::Request;
    type Response = thrift::Response;
    type Client = thrift::TestServiceClient;

    fn server() -> Server {
        Server::builder()
            .add_service(thrift::TestServiceServer::new(Echo))
            .build()
    }

    fn client(inner: Client) -> Self::Client {
        thrift::TestServiceClient::new(inner)
    }

    async fn ping_pong(
        client: &Self::Client,
        req: EchoRequest,
        options: CallOptions,
    ) -> Result<EchoResponse, PingPongError> {
        match client.ping_pong_with(req.into(), options).await {
            Ok(res) => Ok(res.into_inner().into()),
            Err(MethodError::Declared(thrift::TestServicePingPongException::Err(e))) => {
                Err(PingPongError::Declared(e.reason))
            }
            Err(MethodError::Status(s)) => Err(PingPongError::Status(s)),
        }
    }

    async fn echo(
        client: &Self::Client,
        options: CallOptions,
    ) -> Result<BidiStreamingClient<Self::Request, Self::Response>, Status> {
        client.echo_with(options).await
    }

    async fn echo_client(
        client: &Self::Client,
        options: CallOptions,
    ) -> Result<ClientStreamingClient<Self::Request, Self::Response>, Status> {
        client.echo_client_with(options).await
    }

    async fn echo_server(
        client: &Self::Client,
        req: EchoRequest,
        options: CallOptions,
    ) -> Result<ServerStreamingClient<Self::Response>, Status> {
        client.echo_server_with(req.into(), options).await
    }
}

/// The protobuf flavour (`idl/echo.proto`).
#[derive(Debug, Clone, Copy)]
pub struct Proto;

impl EchoIdl for Proto {
    const NAME: &'static str = "proto";
    type Request = proto::Request;
    type Response = proto::Response;
    type Client = proto::TestServiceClient;

    fn server() -> Server {
        Server::builder()
            .add_service(proto::TestServiceServer::new(Echo))
            .build()
    }

    fn client(inner: Client) -> Self::Client {
        proto::TestServiceClient::new(inner)
    }

    async fn ping_pong(
        client: &Self::Client,
        req: EchoRequest,
        options: CallOptions,
    ) -> Result<EchoResponse, PingPongError> {
        client
            .ping_pong_with(req.into(), options)
            .await
            .map(|res| res.into_inner().into())
            .map_err(PingPongError::Status)
    }

    async fn echo(
        client: &Self::Client,
        options: CallOptions,
    ) -> Result<BidiStreamingClient<Self::Request, Self::Response>, Status> {
        client.echo_with(options).await
    }

    async fn echo_client(
        client: &Self::Client,
        options: CallOptions,
    ) -> Result<ClientStreamingClient<Self::Request, Self::Response>, Status> {
        client.echo_client_with(options).await
    }

    async fn echo_server(
        client: &Self::Client,
        req: EchoRequest,
        options: CallOptions,
    ) -> Result<ServerStreamingClient<Self::Response>, Status> {
        client.echo_server_with(req.into(), options).await
    }
}
