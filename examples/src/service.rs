//! The echo service: one implementation of the contract, exposed through both generated
//! traits.
//!
//! | method | behaviour |
//! |---|---|
//! | PingPong | `Response{message, index: 0}` |
//! | Echo (bidi) | per request i: `Response{message, index: i}`; OK after the client's CloseSend |
//! | EchoClient | after CloseSend: `Response{all messages concatenated, index: count}` |
//! | EchoServer | `repeat` (default 3) responses `Response{message, index: i}`, then OK |
//!
//! Hooks, on every request: `sleep_ms` waits that long first (stopping early when the call
//! is cancelled or its deadline passes); `fail` then ends the call with exactly that message
//! (`UNKNOWN`), or — thrift unary with the [`DECLARED_PREFIX`] — with the declared
//! `EchoError{reason: fail}`. Responses already sent stay sent.

use std::time::Duration;

use rpc_core::{
    BidiStreamingServer, ClientStreamingServer, MethodError, ServerContext, ServerStreamingServer,
    Status,
};

use crate::{proto, thrift};

/// A `fail` text starting with this makes thrift unary answer with the declared
/// `EchoError` exception instead of an application error.
pub const DECLARED_PREFIX: &str = "declared:";

/// Responses EchoServer sends when the request has no `repeat`.
pub const DEFAULT_REPEAT: i32 = 3;

/// A request of either IDL, by value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoRequest {
    /// The text to echo.
    pub message: String,
    /// EchoServer: how many responses to send.
    pub repeat: Option<i32>,
    /// End the call with this error message.
    pub fail: Option<String>,
    /// Wait this long before answering.
    pub sleep_ms: Option<i64>,
}

/// A response of either IDL, by value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoResponse {
    /// The echoed text.
    pub message: String,
    /// Position in the stream, or number of requests (EchoClient).
    pub index: Option<i32>,
}

impl EchoResponse {
    fn new(message: String, index: i32) -> Self {
        EchoResponse {
            message,
            index: Some(index),
        }
    }
}

/// Conversions between the neutral types and the generated ones of one IDL.
macro_rules! conversions {
    ($m:ident) => {
        impl From<$m::Request> for EchoRequest {
            fn from(r: $m::Request) -> Self {
                EchoRequest {
                    message: r.message,
                    repeat: r.repeat,
                    fail: r.fail,
                    sleep_ms: r.sleep_ms,
                }
            }
        }

        impl From<EchoRequest> for $m::Request {
            fn from(r: EchoRequest) -> Self {
                $m::Request {
                    message: r.message,
                    repeat: r.repeat,
                    fail: r.fail,
                    sleep_ms: r.sleep_ms,
                }
            }
        }

        impl From<$m::Response> for EchoResponse {
            fn from(r: $m::Response) -> Self {
                EchoResponse {
                    message: r.message,
                    index: r.index,
                }
            }
        }

        impl From<EchoResponse> for $m::Response {
            fn from(r: EchoResponse) -> Self {
                $m::Response {
                    message: r.message,
                    index: r.index,
                }
            }
        }
    };
}

conversions!(thrift);
conversions!(proto);

/// The echo service. It implements [`thrift::TestService`] and [`proto::TestService`]; host
/// it with `thrift::TestServiceServer::new(Echo)` or `proto::TestServiceServer::new(Echo)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

/// The `sleep_ms` hook: waits, or ends early with the reason the call was cancelled.
async fn sleep_hook(ctx: &ServerContext, req: &EchoRequest) -> Result<(), Status> {
    let Some(ms) = req.sleep_ms.filter(|ms| *ms > 0) else {
        return Ok(());
    };
    let ms = u64::try_from(ms).unwrap_or(0);
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(()),
        reason = ctx.cancelled() => Err(reason),
    }
}

/// The `fail` hook: the application error with exactly the `fail` text.
fn fail_hook(req: &EchoRequest) -> Result<(), Status> {
    match &req.fail {
        Some(text) => Err(Status::unknown(text.clone())),
        None => Ok(()),
    }
}

async fn hooks(ctx: &ServerContext, req: &EchoRequest) -> Result<(), Status> {
    sleep_hook(ctx, req).await?;
    fail_hook(req)
}

async fn ping_pong(ctx: &ServerContext, req: EchoRequest) -> Result<EchoResponse, Status> {
    hooks(ctx, &req).await?;
    Ok(EchoResponse::new(req.message, 0))
}

async fn bidi<Req, Res>(
    ctx: &ServerContext,
    mut stream: BidiStreamingServer<Req, Res>,
) -> Result<(), Status>
where
    Req: Into<EchoRequest> + Send + Sync + 'static,
    Res: From<EchoResponse> + Send + Sync + 'static,
{
    let mut index = 0;
    while let Some(req) = stream.recv().await? {
        let req: EchoRequest = req.into();
        hooks(ctx, &req).await?;
        stream
            .send(EchoResponse::new(req.message, index).into())
            .await?;
        index += 1;
    }
    Ok(())
}

async fn client_streaming<Req>(
    ctx: &ServerContext,
    mut stream: ClientStreamingServer<Req>,
) -> Result<EchoResponse, Status>
where
    Req: Into<EchoRequest> + Send + Sync + 'static,
{
    let mut message = String::new();
    let mut count = 0;
    while let Some(req) = stream.recv().await? {
        let req: EchoRequest = req.into();
        hooks(ctx, &req).await?;
        message.push_str(&req.message);
        count += 1;
    }
    Ok(EchoResponse::new(message, count))
}

async fn server_streaming<Res>(
    ctx: &ServerContext,
    req: EchoRequest,
    mut stream: ServerStreamingServer<Res>,
) -> Result<(), Status>
where
    Res: From<EchoResponse> + Send + Sync + 'static,
{
    hooks(ctx, &req).await?;
    for index in 0..req.repeat.unwrap_or(DEFAULT_REPEAT) {
        stream
            .send(EchoResponse::new(req.message.clone(), index).into())
            .await?;
    }
    Ok(())
}

impl thrift::TestService for Echo {
    async fn ping_pong(
        &self,
        ctx: ServerContext,
        req: thrift::Request,
    ) -> Result<thrift::Response, MethodError<thrift::TestServicePingPongException>> {
        let mut req = EchoRequest::from(req);
        if req
            .fail
            .as_deref()
            .is_some_and(|f| f.starts_with(DECLARED_PREFIX))
        {
            sleep_hook(&ctx, &req).await?;
            let reason = req.fail.take().unwrap_or_default();
            return Err(MethodError::Declared(
                thrift::TestServicePingPongException::Err(thrift::EchoError { reason }),
            ));
        }
        Ok(ping_pong(&ctx, req).await?.into())
    }

    async fn echo(
        &self,
        ctx: ServerContext,
        stream: BidiStreamingServer<thrift::Request, thrift::Response>,
    ) -> Result<(), Status> {
        bidi(&ctx, stream).await
    }

    async fn echo_client(
        &self,
        ctx: ServerContext,
        stream: ClientStreamingServer<thrift::Request>,
    ) -> Result<thrift::Response, Status> {
        Ok(client_streaming(&ctx, stream).await?.into())
    }

    async fn echo_server(
        &self,
        ctx: ServerContext,
        req: thrift::Request,
        stream: ServerStreamingServer<thrift::Response>,
    ) -> Result<(), Status> {
        server_streaming(&ctx, req.into(), stream).await
    }
}

impl proto::TestService for Echo {
    async fn ping_pong(
        &self,
        ctx: ServerContext,
        request: proto::Request,
    ) -> Result<proto::Response, Status> {
        Ok(ping_pong(&ctx, request.into()).await?.into())
    }

    async fn echo(
        &self,
        ctx: ServerContext,
        stream: BidiStreamingServer<proto::Request, proto::Response>,
    ) -> Result<(), Status> {
        bidi(&ctx, stream).await
    }

    async fn echo_client(
        &self,
        ctx: ServerContext,
        stream: ClientStreamingServer<proto::Request>,
    ) -> Result<proto::Response, Status> {
        Ok(client_streaming(&ctx, stream).await?.into())
    }

    async fn echo_server(
        &self,
        ctx: ServerContext,
        request: proto::Request,
        stream: ServerStreamingServer<proto::Response>,
    ) -> Result<(), Status> {
        server_streaming(&ctx, request.into(), stream).await
    }
}
