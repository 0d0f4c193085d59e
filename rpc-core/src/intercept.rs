//! Closure interceptors: the short way to write call middleware that only looks at (or
//! changes) the call's context — authentication, metadata injection, rejecting calls — without
//! writing a tower layer. Registered with
//! [`ClientBuilder::interceptor`](crate::ClientBuilder::interceptor) and
//! [`ServerBuilder::interceptor`](crate::ServerBuilder::interceptor); they run once per call or
//! stream, in registration order, together with the tower layers (first registered is
//! outermost).

use std::sync::Arc;
use std::task::{Context, Poll};

use crate::client::OpenStream;
use crate::context::CallContext;
use crate::server::{ServerCall, ServerContext};
use crate::status::Status;
use crate::transport::BoxFuture;

/// A client interceptor: may change the outgoing context (metadata, deadline, extensions) or
/// refuse the call with a status, in which case nothing is sent.
pub type ClientInterceptor = Arc<dyn Fn(&mut CallContext) -> Result<(), Status> + Send + Sync>;

/// A server interceptor: sees the incoming call (metadata, peer, deadline), may attach
/// extensions for the handler, or refuse the call with a status (the handler never runs).
pub type ServerInterceptor = Arc<dyn Fn(&ServerContext) -> Result<(), Status> + Send + Sync>;

/// The tower service a client interceptor becomes.
#[derive(Clone)]
pub(crate) struct ClientIntercept<S> {
    pub(crate) inner: S,
    pub(crate) f: ClientInterceptor,
}

impl<S> tower::Service<CallContext> for ClientIntercept<S>
where
    S: tower::Service<CallContext, Response = OpenStream, Error = Status>,
    S::Future: Send + 'static,
{
    type Response = OpenStream;
    type Error = Status;
    type Future = BoxFuture<'static, Result<OpenStream, Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut ctx: CallContext) -> Self::Future {
        match (self.f)(&mut ctx) {
            Ok(()) => Box::pin(self.inner.call(ctx)),
            Err(status) => Box::pin(std::future::ready(Err(status))),
        }
    }
}

/// The tower service a server interceptor becomes.
#[derive(Clone)]
pub(crate) struct ServerIntercept<S> {
    pub(crate) inner: S,
    pub(crate) f: ServerInterceptor,
}

impl<S> tower::Service<ServerCall> for ServerIntercept<S>
where
    S: tower::Service<ServerCall, Response = (), Error = Status>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Status;
    type Future = BoxFuture<'static, Result<(), Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        match (self.f)(call.context()) {
            Ok(()) => Box::pin(self.inner.call(call)),
            Err(status) => Box::pin(std::future::ready(Err(status))),
        }
    }
}
