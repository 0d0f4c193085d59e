//! The interop server: `grpc.testing.TestService` with the server features of grpc/grpc
//! `doc/interop-test-descriptions.md`.
//!
//! `UnimplementedCall` answers `UNIMPLEMENTED` (the trait has every method; the wire result is
//! what a server without the method sends), and `UnimplementedService` is not hosted at all.
//!
//! Everything in a request is untrusted: sizes are capped ([`MAX_RESPONSE_SIZE`]) and delays
//! bounded ([`MAX_INTERVAL`]) before anything is allocated or slept, and a cancelled stream
//! stops its handler.

use std::time::Duration;

use rpc_core::{
    BidiStreamingServer, ClientStreamingServer, Code, Server, ServerContext, ServerStreamingServer,
    Status,
};

use super::compression;
use super::testing::{
    BoolValue, EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest,
    SimpleResponse, StreamingInputCallRequest, StreamingInputCallResponse,
    StreamingOutputCallRequest, StreamingOutputCallResponse, TestService, TestServiceServer,
};
use super::{ECHO_INITIAL_KEY, ECHO_TRAILING_KEY};

/// The largest payload one response may ask for: gRPC's default maximum receive message size
/// (4 MiB), as no default client could receive more; larger asks are `INVALID_ARGUMENT`
/// instead of an allocation a peer chose.
pub const MAX_RESPONSE_SIZE: usize = 4 << 20;

/// The longest `interval_us` a response may ask the server to wait before sending: the interop
/// cases use none or a few milliseconds; longer asks are `INVALID_ARGUMENT` so a peer cannot
/// park handlers.
pub const MAX_INTERVAL: Duration = Duration::from_secs(10);

/// The interop `TestService`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InteropService;

/// A `rpc_core::Server` hosting [`InteropService`] (and nothing else: `UnimplementedService`
/// is not served).
pub fn server() -> Server {
    Server::builder()
        .add_service(TestServiceServer::new(InteropService))
        .build()
}

/// Echo Metadata: the initial key goes back in the header, the trailing key in the trailer.
fn echo_metadata(ctx: &ServerContext) -> Result<(), Status> {
    if let Some(v) = ctx.metadata().get(ECHO_INITIAL_KEY) {
        ctx.set_header(ECHO_INITIAL_KEY, v.clone())?;
    }
    if let Some(v) = ctx.metadata().get(ECHO_TRAILING_KEY) {
        ctx.set_trailer(ECHO_TRAILING_KEY, v.clone());
    }
    Ok(())
}

/// Echo Status: a non-zero `response_status` ends the call with that code and message.
fn echo_status(status: Option<&EchoStatus>) -> Result<(), Status> {
    match status {
        Some(s) if s.code != 0 => Err(Status::new(Code::from_i32(s.code), s.message.clone())),
        _ => Ok(()),
    }
}

/// CompressedRequest: `expect_compressed: true` on a request that did not arrive compressed is
/// `INVALID_ARGUMENT`.
fn check_compressed(ctx: &ServerContext, expect: Option<&BoolValue>) -> Result<(), Status> {
    match expect {
        Some(BoolValue { value: true }) if !compression::request_was_compressed(ctx) => Err(
            Status::invalid_argument("expected a compressed request, got an uncompressed one"),
        ),
        _ => Ok(()),
    }
}

/// Only `COMPRESSABLE` payloads exist in the interop protos; anything else is refused.
fn check_type(response_type: i32) -> Result<(), Status> {
    match PayloadType::try_from(response_type) {
        Ok(PayloadType::Compressable) => Ok(()),
        Err(_) => Err(Status::invalid_argument(format!(
            "unsupported response_type {response_type}"
        ))),
    }
}

/// A payload of `size` zero bytes, refused when negative or above [`MAX_RESPONSE_SIZE`].
fn zeros(size: i32) -> Result<Payload, Status> {
    let n = usize::try_from(size)
        .ok()
        .filter(|n| *n <= MAX_RESPONSE_SIZE)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "response size {size} outside 0..={MAX_RESPONSE_SIZE}"
            ))
        })?;
    Ok(Payload {
        r#type: PayloadType::Compressable.into(),
        body: vec![0; n],
    })
}

/// Observe `interval_us`: waits before a response, refused above [`MAX_INTERVAL`]; ends early
/// (with the reason) if the call is cancelled meanwhile.
async fn wait_interval(ctx: &ServerContext, interval_us: i32) -> Result<(), Status> {
    if interval_us <= 0 {
        return Ok(());
    }
    let d = Duration::from_micros(u64::from(interval_us.unsigned_abs()));
    if d > MAX_INTERVAL {
        return Err(Status::invalid_argument(format!(
            "interval_us {interval_us} above {MAX_INTERVAL:?}"
        )));
    }
    tokio::select! {
        () = tokio::time::sleep(d) => Ok(()),
        reason = ctx.cancelled() => Err(reason),
    }
}

/// Sends the responses `params` ask for, each after its interval, compressed as asked.
async fn respond(
    ctx: &ServerContext,
    params: &[ResponseParameters],
    mut send: impl AsyncSend,
) -> Result<(), Status> {
    for p in params {
        let payload = zeros(p.size)?;
        wait_interval(ctx, p.interval_us).await?;
        if let Some(c) = &p.compressed {
            compression::compress_responses(ctx, c.value);
        }
        send.send(StreamingOutputCallResponse {
            payload: Some(payload),
        })
        .await?;
    }
    Ok(())
}

/// The sending half of either streaming handle.
trait AsyncSend {
    async fn send(&mut self, msg: StreamingOutputCallResponse) -> Result<(), Status>;
}

impl AsyncSend for &mut ServerStreamingServer<StreamingOutputCallResponse> {
    async fn send(&mut self, msg: StreamingOutputCallResponse) -> Result<(), Status> {
        ServerStreamingServer::send(self, msg).await
    }
}

impl AsyncSend
    for &mut BidiStreamingServer<StreamingOutputCallRequest, StreamingOutputCallResponse>
{
    async fn send(&mut self, msg: StreamingOutputCallResponse) -> Result<(), Status> {
        BidiStreamingServer::send(self, msg).await
    }
}

impl InteropService {
    fn simple(ctx: &ServerContext, req: &SimpleRequest) -> Result<SimpleResponse, Status> {
        echo_metadata(ctx)?;
        echo_status(req.response_status.as_ref())?;
        check_compressed(ctx, req.expect_compressed.as_ref())?;
        check_type(req.response_type)?;
        if let Some(c) = &req.response_compressed {
            compression::compress_responses(ctx, c.value);
        }
        Ok(SimpleResponse {
            payload: Some(zeros(req.response_size)?),
            ..SimpleResponse::default()
        })
    }
}

impl TestService for InteropService {
    async fn empty_call(&self, ctx: ServerContext, _: Empty) -> Result<Empty, Status> {
        echo_metadata(&ctx)?;
        Ok(Empty {})
    }

    async fn unary_call(
        &self,
        ctx: ServerContext,
        req: SimpleRequest,
    ) -> Result<SimpleResponse, Status> {
        Self::simple(&ctx, &req)
    }

    async fn cacheable_unary_call(
        &self,
        ctx: ServerContext,
        _req: SimpleRequest,
    ) -> Result<SimpleResponse, Status> {
        // The payload is the current time in nanoseconds, as ASCII decimal, so each response
        // differs (the cache headers only matter behind a caching proxy, which we do not run).
        echo_metadata(&ctx)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        ctx.set_header("cache-control", "max-age=60, public")?;
        Ok(SimpleResponse {
            payload: Some(Payload {
                r#type: PayloadType::Compressable.into(),
                body: nanos.to_string().into_bytes(),
            }),
            ..SimpleResponse::default()
        })
    }

    async fn streaming_output_call(
        &self,
        ctx: ServerContext,
        req: StreamingOutputCallRequest,
        mut stream: ServerStreamingServer<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        echo_metadata(&ctx)?;
        echo_status(req.response_status.as_ref())?;
        check_type(req.response_type)?;
        respond(&ctx, &req.response_parameters, &mut stream).await
    }

    async fn streaming_input_call(
        &self,
        ctx: ServerContext,
        mut stream: ClientStreamingServer<StreamingInputCallRequest>,
    ) -> Result<StreamingInputCallResponse, Status> {
        let mut total: i32 = 0;
        while let Some(req) = stream.recv().await? {
            check_compressed(&ctx, req.expect_compressed.as_ref())?;
            let n = req.payload.map_or(0, |p| p.body.len());
            total = i32::try_from(n)
                .ok()
                .and_then(|n| total.checked_add(n))
                .ok_or_else(|| {
                    Status::invalid_argument("aggregated payload size overflows int32")
                })?;
        }
        Ok(StreamingInputCallResponse {
            aggregated_payload_size: total,
        })
    }

    async fn full_duplex_call(
        &self,
        ctx: ServerContext,
        mut stream: BidiStreamingServer<StreamingOutputCallRequest, StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        echo_metadata(&ctx)?;
        while let Some(req) = stream.recv().await? {
            echo_status(req.response_status.as_ref())?;
            check_type(req.response_type)?;
            respond(&ctx, &req.response_parameters, &mut stream).await?;
        }
        Ok(())
    }

    async fn half_duplex_call(
        &self,
        ctx: ServerContext,
        mut stream: BidiStreamingServer<StreamingOutputCallRequest, StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        /// Requests buffered before the first response: bounded so a peer cannot make the
        /// server hold an unbounded stream (the cases send at most a handful).
        const MAX_BUFFERED: usize = 1024;
        echo_metadata(&ctx)?;
        let mut reqs = Vec::new();
        while let Some(req) = stream.recv().await? {
            if reqs.len() == MAX_BUFFERED {
                return Err(Status::resource_exhausted(format!(
                    "more than {MAX_BUFFERED} requests before the half-close"
                )));
            }
            reqs.push(req);
        }
        for req in reqs {
            echo_status(req.response_status.as_ref())?;
            respond(&ctx, &req.response_parameters, &mut stream).await?;
        }
        Ok(())
    }

    async fn unimplemented_call(&self, _: ServerContext, _: Empty) -> Result<Empty, Status> {
        Err(Status::unimplemented(
            "grpc.testing.TestService/UnimplementedCall is not implemented",
        ))
    }
}
