//! Closure interceptors: the short way to write call middleware that only looks at (or
//! changes) the call's context — authentication, metadata injection, rejecting calls — without
//! writing a tower layer. Registered with
//! [`ClientBuilder::interceptor`](crate::ClientBuilder::interceptor) and
//! [`ServerBuilder::interceptor`](crate::ServerBuilder::interceptor); they run once per call or
//! stream, in registration order, together with the tower layers (first registered is
//! outermost).

use std::sync::Arc;
use std::task::{Context, Poll};

use crate::context::CallContext;
use crate::status::Status;
use crate::transport::BoxFuture;

/// A client interceptor: may change the outgoing context (metadata, deadline, extensions) or
/// refuse the call with a status, in which case nothing is sent.
pub type ClientInterceptor = Arc<dyn Fn(&mut CallContext) -> Result<(), Status> + Send + Sync>;

/// A server interceptor (defined with the server, whose context it sees).
pub use crate::server::ServerInterceptor;

/// The tower service a client interceptor becomes.
#[derive(Clone)]
pub(crate) struct ClientIntercept<S> {
    pub(crate) inner: S,
    pub(crate) f: ClientInterceptor,
}

impl<S, R> tower::Service<CallContext> for ClientIntercept<S>
where
    S: tower::Service<CallContext, Response = R, Error = Status>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = R;
    type Error = Status;
    type Future = BoxFuture<'static, Result<R, Status>>;

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
