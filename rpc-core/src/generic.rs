//! Generic (IDL-less) calls: payloads as raw bytes plus the method's mode, on both sides, over
//! every transport — what Kitex calls binary generic calls (generic v2), for gateways,
//! proxies and tools that do not link the IDL's generated code.
//!
//! * [`RawCodec`]: the identity [`Codec`] for [`Bytes`]. Every typed handle of the core works
//!   with it (`Client::bidi::<RawCodec, Bytes, Bytes>`, `IncomingCall::unary::<RawCodec, ..>`),
//!   so generic calls get the same semantics as typed ones (EOF, CloseSend, cancel, deadlines,
//!   middleware, tracing) with no transport-specific code.
//! * [`method`]: a [`MethodDesc`] made at run time from a service name, a method name, a mode
//!   and a payload kind (interned: the same names give the same `&'static` descriptor).
//! * [`GenericClient`]: calls any method of one service by name.
//! * [`GenericHandler`]: a handler of raw payloads, one method per mode. Host it for a known
//!   [`ServiceDesc`] with [`GenericService`], or for every service and method the server does
//!   not host with [`ServerBuilder::unknown_method_handler`](crate::ServerBuilder::unknown_method_handler)
//!   (Kitex's "unknown service or method handler").
//!
//! # What the bytes are
//!
//! The bytes are what the codec layer would produce for the IDL's message — the transport
//! frames them exactly as it frames a typed call's, so bytes relayed untouched from a server
//! handle to a client call (or back) arrive as the original encoding on every transport:
//!
//! * protobuf: the encoded message (what gRPC's length-prefixed message holds, what a ttstream
//!   Data frame with protocol id 0x11 carries);
//! * thrift streaming methods: the bare request or response struct (a ttstream Data frame's
//!   payload; `application/grpc+thrift`'s message);
//! * thrift unary: the method's *args* struct (field 1: the request) and *result* struct
//!   (field 0: success, then the declared exceptions), as rpc-codegen names them
//!   `XxxArgs`/`XxxResult`. The Thrift message envelope (name, type, sequence id) is the
//!   transport's: TTHeader unary writes it around these bytes, and maps an error status to an
//!   `EXCEPTION` message. (Kitex's binary generic includes the envelope; here it is left to
//!   the transport so the same bytes serve TTHeader, gRPC and shared memory.)
//!
//! # The mode of an unknown method
//!
//! No wire tells the mode of a stream: a ttstream or HTTP/2 stream looks the same in every
//! mode. An [unknown-method handler](crate::ServerBuilder::unknown_method_handler) therefore
//! gets [`GenericHandler::unary`] where the framing says unary (TTHeader unary, a Thrift
//! CALL) and [`GenericHandler::bidi`] for every other call — any streaming mode, or a unary
//! over a stream transport (gRPC unary, ttstream). Relaying as bidi is exact for all four
//! modes: messages both ways, the half-close, the header, the trailer and the status.

use std::future::Future;
use std::sync::Arc;

use bytes::{BufMut, Bytes};

use crate::client::{BidiStreamingClient, Client, ClientStreamingClient, ServerStreamingClient};
use crate::codec::Codec;
use crate::context::{CallOptions, MethodDesc, Mode, PayloadKind, ServiceDesc};
pub use crate::interned::{method, MAX_GENERIC_METHODS, MAX_GENERIC_NAME_BYTES};
use crate::metadata::WithMetadata;
use crate::server::{
    BidiStreamingServer, ClientStreamingServer, IncomingCall, ServerBuilder, ServerContext,
    ServerStreamingServer, Service,
};
use crate::status::{Error, Status};
use crate::transport::BoxFuture;

/// The identity codec: a message is its payload bytes (see the [module docs](self) for what
/// they hold per IDL).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec<Bytes> for RawCodec {
    const NAME: &'static str = "raw";

    fn encode<B: BufMut + ?Sized>(msg: &Bytes, dst: &mut B) -> Result<(), Status> {
        if dst.remaining_mut() < msg.len() {
            return Err(Error::Encode {
                codec: "raw",
                reason: format!("{} bytes do not fit in {}", msg.len(), dst.remaining_mut()),
            }
            .into());
        }
        dst.put_slice(msg);
        Ok(())
    }

    fn decode(src: Bytes) -> Result<Bytes, Status> {
        Ok(src)
    }

    fn encoded_len(msg: &Bytes) -> Option<usize> {
        Some(msg.len())
    }
}

/// A handler of raw payloads (see the [module docs](self)): one method per mode, the method
/// being served in `ctx.method()` (its names, mode and payload kind). Each method defaults to
/// `UNIMPLEMENTED`, so a handler implements the modes it serves.
///
/// Hosted for a known service with [`GenericService`], or for every call the server cannot
/// route with [`ServerBuilder::unknown_method_handler`](crate::ServerBuilder::unknown_method_handler),
/// which uses only [`unary`](Self::unary) and [`bidi`](Self::bidi).
pub trait GenericHandler: Send + Sync + 'static {
    /// A unary call: the request payload in, the response payload out.
    fn unary(
        &self,
        ctx: ServerContext,
        request: Bytes,
    ) -> impl Future<Output = Result<Bytes, Status>> + Send {
        let _ = request;
        async move { Err(unimplemented_mode(&ctx)) }
    }

    /// A client-streaming call: requests until EOF, then the one response.
    fn client_streaming(
        &self,
        ctx: ServerContext,
        requests: ClientStreamingServer<Bytes>,
    ) -> impl Future<Output = Result<Bytes, Status>> + Send {
        let _ = requests;
        async move { Err(unimplemented_mode(&ctx)) }
    }

    /// A server-streaming call: the request, then any number of responses.
    fn server_streaming(
        &self,
        ctx: ServerContext,
        request: Bytes,
        responses: ServerStreamingServer<Bytes>,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = (request, responses);
        async move { Err(unimplemented_mode(&ctx)) }
    }

    /// A bidirectional call (and, for an unknown method, any call that is not known to be a
    /// unary: see the [module docs](self#the-mode-of-an-unknown-method)).
    fn bidi(
        &self,
        ctx: ServerContext,
        stream: BidiStreamingServer<Bytes, Bytes>,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let _ = stream;
        async move { Err(unimplemented_mode(&ctx)) }
    }
}

fn unimplemented_mode(ctx: &ServerContext) -> Status {
    let m = ctx.method();
    Status::unimplemented(format!(
        "{}: the generic handler does not serve {:?} calls",
        m.path, m.mode
    ))
}

/// Runs `handler` for `call` in the call's mode.
pub(crate) async fn serve<H: GenericHandler>(
    handler: Arc<H>,
    call: IncomingCall,
) -> Result<(), Status> {
    match call.mode() {
        Mode::Unary => {
            call.unary::<RawCodec, Bytes, Bytes, _, _>(move |ctx, req| async move {
                handler.unary(ctx, req).await
            })
            .await
        }
        Mode::ClientStreaming => {
            call.client_streaming::<RawCodec, Bytes, Bytes, _, _>(move |ctx, rx| async move {
                handler.client_streaming(ctx, rx).await
            })
            .await
        }
        Mode::ServerStreaming => {
            call.server_streaming::<RawCodec, Bytes, Bytes, _, _>(move |ctx, req, tx| async move {
                handler.server_streaming(ctx, req, tx).await
            })
            .await
        }
        Mode::Bidi => {
            call.bidi::<RawCodec, Bytes, Bytes, _, _>(move |ctx, stream| async move {
                handler.bidi(ctx, stream).await
            })
            .await
        }
    }
}

impl ServerBuilder {
    /// Serves every call for a service or method this server does not host with `handler`,
    /// on payload bytes (Kitex's unknown service or method handler): the base of gateways and
    /// proxies. `ctx.method()` names what the client called, with the payload kind the
    /// transport reported (protobuf when it reports none); the handler's
    /// [`unary`](GenericHandler::unary) runs where the framing says unary (TTHeader
    /// unary), its [`bidi`](GenericHandler::bidi) for every other call, since no wire tells a
    /// stream's mode (see the [module docs](self)). Layers and message middleware apply as to
    /// hosted methods. Without one, such calls end with `UNIMPLEMENTED` (each transport's wire
    /// form of it). Names past [`MAX_GENERIC_METHODS`] stay unknown.
    pub fn unknown_method_handler(self, handler: impl GenericHandler) -> Self {
        let handler = Arc::new(handler);
        self.fallback(Arc::new(move |call| Box::pin(serve(handler.clone(), call))))
    }
}

/// Hosts a [`GenericHandler`] as the service `desc` describes: routing, modes and payload
/// kind come from the descriptor (an IDL's generated `XXX_DESCRIPTOR`, or one written by hand),
/// the messages reach the handler as bytes.
pub struct GenericService<H> {
    desc: &'static ServiceDesc,
    handler: Arc<H>,
}

impl<H> std::fmt::Debug for GenericService<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenericService")
            .field("service", &self.desc.full_name)
            .finish()
    }
}

impl<H: GenericHandler> GenericService<H> {
    /// Serves `desc`'s methods with `handler`.
    pub fn new(desc: &'static ServiceDesc, handler: H) -> Self {
        GenericService {
            desc,
            handler: Arc::new(handler),
        }
    }
}

impl<H: GenericHandler> Service for GenericService<H> {
    fn descriptor(&self) -> &'static ServiceDesc {
        self.desc
    }

    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        Box::pin(serve(self.handler.clone(), call))
    }
}

/// Calls any method of one service by name, with payload bytes (Kitex's generic client).
/// Cheap to clone. The handles are the ordinary typed ones over [`Bytes`], so everything the
/// [`Client`] does (metadata, deadlines, cancel, middleware, the transport) applies.
///
/// ```
/// use bytes::Bytes;
/// use rpc_core::generic::{GenericClient, GenericHandler, RawCodec};
/// use rpc_core::{inproc::InProcTransport, CallOptions, Client, PayloadKind, Server,
///                ServerContext, Status};
///
/// // A server that answers every method it does not host by echoing the payload back.
/// struct Mirror;
/// impl GenericHandler for Mirror {
///     async fn unary(&self, _: ServerContext, req: Bytes) -> Result<Bytes, Status> {
///         Ok(req)
///     }
///     async fn bidi(
///         &self,
///         _: ServerContext,
///         mut stream: rpc_core::BidiStreamingServer<Bytes, Bytes>,
///     ) -> Result<(), Status> {
///         while let Some(m) = stream.recv().await? {
///             stream.send(m).await?;
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Status> {
/// let server = Server::builder().unknown_method_handler(Mirror).build();
/// let client = GenericClient::new(
///     Client::new(InProcTransport::new(server)),
///     "demo.Anything",
///     PayloadKind::Protobuf,
/// );
/// let mut call = client.bidi("Chat", CallOptions::new()).await?;
/// call.send(Bytes::from_static(b"\x0a\x02hi")).await?;
/// call.close_send()?;
/// assert_eq!(call.recv().await?.as_deref(), Some(&b"\x0a\x02hi"[..]));
/// assert_eq!(call.recv().await?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct GenericClient {
    client: Client,
    service: Arc<str>,
    payload: PayloadKind,
}

impl GenericClient {
    /// Calls methods of `service` (fully qualified: `echo.TestService`) whose messages are
    /// `payload` (protobuf or thrift: picks the ttstream protocol id and the gRPC
    /// content-type) through `client`.
    pub fn new(client: Client, service: impl Into<Arc<str>>, payload: PayloadKind) -> Self {
        GenericClient {
            client,
            service: service.into(),
            payload,
        }
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The descriptor of method `name` in `mode` (see [`method`]).
    pub fn method(&self, name: &str, mode: Mode) -> Result<&'static MethodDesc, Status> {
        method(&self.service, name, mode, self.payload)
    }

    /// A unary call of `name`: the response payload with header and trailer metadata.
    pub async fn unary(
        &self,
        name: &str,
        request: Bytes,
        opts: CallOptions,
    ) -> Result<WithMetadata<Bytes>, Status> {
        let m = self.method(name, Mode::Unary)?;
        self.client
            .unary::<RawCodec, Bytes, Bytes>(m, request, opts)
            .await
    }

    /// Opens a client-streaming call of `name`.
    pub async fn client_streaming(
        &self,
        name: &str,
        opts: CallOptions,
    ) -> Result<ClientStreamingClient<Bytes, Bytes>, Status> {
        let m = self.method(name, Mode::ClientStreaming)?;
        self.client
            .client_streaming::<RawCodec, Bytes, Bytes>(m, opts)
            .await
    }

    /// Opens a server-streaming call of `name` with its one request.
    pub async fn server_streaming(
        &self,
        name: &str,
        request: Bytes,
        opts: CallOptions,
    ) -> Result<ServerStreamingClient<Bytes>, Status> {
        let m = self.method(name, Mode::ServerStreaming)?;
        self.client
            .server_streaming::<RawCodec, Bytes, Bytes>(m, request, opts)
            .await
    }

    /// Opens a bidirectional call of `name`.
    pub async fn bidi(
        &self,
        name: &str,
        opts: CallOptions,
    ) -> Result<BidiStreamingClient<Bytes, Bytes>, Status> {
        let m = self.method(name, Mode::Bidi)?;
        self.client.bidi::<RawCodec, Bytes, Bytes>(m, opts).await
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn raw_codec_is_the_identity_and_checks_room() {
        let b = Bytes::from_static(b"\x0b\x00\x01");
        let mut out = Vec::new();
        RawCodec::encode(&b, &mut out).unwrap();
        assert_eq!(out, b"\x0b\x00\x01");
        assert_eq!(RawCodec::decode(b.clone()).unwrap(), b);
        let mut small = [0u8; 2];
        assert!(RawCodec::encode(&b, &mut &mut small[..]).is_err());
    }
}
