//! The typed unary call layer: tower layers that see a unary call whole — the request
//! message going in, the response message or the final status coming out — so retries,
//! per-status metrics, hedging, caching or auth can be written once for every method.
//!
//! Stream-level call layers ([`ClientBuilder::layer`](crate::ClientBuilder::layer)) see only a
//! stream being opened; unary layers ([`ClientBuilder::unary_layer`](crate::ClientBuilder::unary_layer))
//! wrap the whole call, outside them: each attempt a retry layer makes opens a new stream
//! through the stream layers and message middleware.
//!
//! The message is type-erased (`dyn Any`) so one layer serves every method;
//! [`UnaryRequest::message`] and [`UnaryResponse`]'s message downcast to the concrete type
//! where a layer needs it. A [`UnaryRequest`] is `Clone` (the message is cloned through the
//! method's own `Clone`), which is what `tower::retry` needs.
//!
//! With no unary layer registered, [`Client::unary`](crate::Client::unary) takes a direct path
//! without any of this (no boxing, no type erasure).

use std::any::Any;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::util::BoxCloneSyncService;

use crate::context::{CallContext, MethodDesc};
use crate::metadata::WithMetadata;
use crate::middleware::AnyMessage;
use crate::status::{Error, Status};
use crate::transport::BoxFuture;

/// The response of a unary call as layers see it: the message type-erased as
/// [`Box<AnyMessage>`](AnyMessage) (downcast with `downcast::<T>()`), as message middleware
/// see it.
pub type UnaryResponse = WithMetadata<Box<AnyMessage>>;

/// The tower service unary layers wrap.
pub type UnaryService = BoxCloneSyncService<UnaryRequest, UnaryResponse, Status>;

/// Runs a request at the bottom of the stack: the client's direct path, typed for the request's
/// method (chosen by the client that made the request).
pub(crate) type Invoke = fn(UnaryRequest) -> BoxFuture<'static, Result<UnaryResponse, Status>>;

/// The client core that made a request, type-erased: this layer does not know the client, the
/// client's [`Invoke`] does.
pub(crate) type Origin = Arc<dyn Any + Send + Sync>;

/// One unary call on its way through unary layers.
pub struct UnaryRequest {
    ctx: CallContext,
    message: Box<dyn RequestMessage>,
    invoke: Invoke,
    origin: Origin,
}

impl std::fmt::Debug for UnaryRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnaryRequest")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl Clone for UnaryRequest {
    fn clone(&self) -> Self {
        UnaryRequest {
            ctx: self.ctx.clone(),
            message: self.message.clone_box(),
            invoke: self.invoke,
            origin: self.origin.clone(),
        }
    }
}

impl UnaryRequest {
    /// A request for `message`, run at the bottom of the stack by `invoke` with `origin`.
    pub(crate) fn new<T: Clone + Send + Sync + 'static>(
        ctx: CallContext,
        message: T,
        invoke: Invoke,
        origin: Origin,
    ) -> UnaryRequest {
        UnaryRequest {
            ctx,
            message: Box::new(message),
            invoke,
            origin,
        }
    }

    /// Takes the request apart for its [`Invoke`]: context, message, origin.
    pub(crate) fn into_parts(self) -> (CallContext, Box<AnyMessage>, Origin) {
        (self.ctx, self.message.into_any(), self.origin)
    }

    /// The call's context (method, metadata, deadline, extensions).
    pub fn context(&self) -> &CallContext {
        &self.ctx
    }

    /// Mutable access to the context (add metadata, tighten the deadline).
    pub fn context_mut(&mut self) -> &mut CallContext {
        &mut self.ctx
    }

    /// The method being called.
    pub fn method(&self) -> &'static MethodDesc {
        self.ctx.method()
    }

    /// The request message, if it is a `T`.
    pub fn message<T: 'static>(&self) -> Option<&T> {
        self.message.as_any().downcast_ref::<T>()
    }

    /// Mutable access to the request message, if it is a `T`.
    pub fn message_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.message.as_any_mut().downcast_mut::<T>()
    }
}

/// The innermost unary service: runs the call on the client's direct path.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Invoker;

impl tower::Service<UnaryRequest> for Invoker {
    type Response = UnaryResponse;
    type Error = Status;
    type Future = BoxFuture<'static, Result<UnaryResponse, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: UnaryRequest) -> Self::Future {
        (req.invoke)(req)
    }
}

/// A request message behind its type: clonable (through the type's own `Clone`, for retries)
/// and reachable only as its own type, so it can never be swapped for another.
trait RequestMessage: Send + Sync {
    fn clone_box(&self) -> Box<dyn RequestMessage>;
    fn as_any(&self) -> &AnyMessage;
    fn as_any_mut(&mut self) -> &mut AnyMessage;
    fn into_any(self: Box<Self>) -> Box<AnyMessage>;
}

impl<T: Clone + Send + Sync + 'static> RequestMessage for T {
    fn clone_box(&self) -> Box<dyn RequestMessage> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &AnyMessage {
        self
    }
    fn as_any_mut(&mut self) -> &mut AnyMessage {
        self
    }
    fn into_any(self: Box<Self>) -> Box<AnyMessage> {
        self
    }
}

/// Takes the typed response out of a layered call's response.
pub(crate) fn response<Res: 'static>(res: UnaryResponse) -> Result<WithMetadata<Res>, Status> {
    let (header, message, trailer) = res.into_parts();
    match message.downcast::<Res>() {
        Ok(m) => Ok(WithMetadata::new(header, *m, trailer)),
        Err(_) => Err(Error::MessageTypeMismatch {
            expected: std::any::type_name::<Res>(),
        }
        .into()),
    }
}

/// A shared, layered unary stack.
pub(crate) type Stack = Arc<UnaryService>;
