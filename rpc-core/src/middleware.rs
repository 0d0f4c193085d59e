//! Per-message send and recv middleware (DESIGN §4).
//!
//! Call middleware (once per unary call or stream open) are plain `tower::Layer`s, added with
//! `ClientBuilder::layer` and `ServerBuilder::layer`. This module holds the per-message kind,
//! which no tower stack can express: chains that run on **every** message of a stream, on both
//! sides.
//!
//! # Order
//!
//! The first registered middleware is the outermost:
//!
//! * **send**: `first → second → … → encode + transport`. The outer one sees the message first
//!   and may modify it before the inner ones do; an `Err` stops the chain and nothing is sent.
//! * **recv**: `first → second → … → transport + decode`. Each middleware calls `next` to obtain
//!   the message, so the innermost sees it first and the outermost last (after the inner ones
//!   modified it), then the caller gets it.
//!
//! # Cost
//!
//! With no middleware registered the typed handles never enter this module: no boxing, no
//! dynamic dispatch, no allocation per message. With middleware, each call boxes its future
//! and a received message is boxed as `Box<AnyMessage>` so it can be handed through the
//! chain and downcast (`downcast_mut::<MyMessage>()`).
//!
//! # Sizes
//!
//! Both chains learn the message's encoded size from `next`, where the core knows it:
//! [`SendNext::run`] returns the size of the message it sent (`Some` when the codec knew it
//! before encoding, as the protobuf and thrift codecs do), [`RecvNext::run`] returns a
//! [`Received`] whose [`encoded_len`](Received::encoded_len) is the size the codec decoded
//! (after any decompression, as the send size is before compression). These are the sizes
//! stream observers ([`crate::events`]) see.
//!
//! ```
//! use rpc_core::middleware::{Received, RecvMiddleware, RecvNext};
//! use rpc_core::transport::BoxFuture;
//! use rpc_core::{CallContext, Status};
//!
//! /// Refuses received messages over 1 KiB (after decoding them).
//! struct MaxRecv;
//! impl RecvMiddleware for MaxRecv {
//!     fn on_recv<'a>(
//!         &'a self,
//!         ctx: &'a CallContext,
//!         next: RecvNext<'a>,
//!     ) -> BoxFuture<'a, Result<Option<Received>, Status>> {
//!         Box::pin(async move {
//!             let got = next.run(ctx).await?;
//!             match &got {
//!                 Some(r) if r.encoded_len > 1024 => Err(Status::resource_exhausted("too big")),
//!                 _ => Ok(got),
//!             }
//!         })
//!     }
//! }
//! ```

use std::any::Any;
use std::sync::Arc;

use crate::context::CallContext;
use crate::status::Status;
use crate::transport::BoxFuture;

/// A type-erased message, as send and recv middleware and unary layers
/// ([`crate::unary`]) see it: downcast with `downcast_ref::<T>()` / `downcast_mut::<T>()`
/// (`Box<AnyMessage>`: `downcast::<T>()`).
pub type AnyMessage = dyn Any + Send + Sync;

/// A received message as recv middleware see it: the decoded message and its encoded size.
#[derive(Debug)]
#[non_exhaustive]
pub struct Received {
    /// The decoded message: downcast with `downcast_mut::<T>()`. A middleware may replace it
    /// with another value of the same type.
    pub message: Box<AnyMessage>,
    /// The size in bytes of the encoded message the codec decoded (after any decompression).
    pub encoded_len: usize,
}

impl Received {
    /// A received `message` of `encoded_len` bytes.
    pub fn new(message: Box<AnyMessage>, encoded_len: usize) -> Received {
        Received {
            message,
            encoded_len,
        }
    }
}

/// Middleware run on every message sent, on a client or server stream.
pub trait SendMiddleware: Send + Sync + 'static {
    /// Inspect or modify `msg`, then call `next.run(ctx, msg)` to continue (it returns the
    /// encoded size of what it sent, when known; return it on); return an error to reject the
    /// message (nothing is sent and the caller's `send` returns the error).
    fn on_send<'a>(
        &'a self,
        ctx: &'a CallContext,
        msg: &'a mut AnyMessage,
        next: SendNext<'a>,
    ) -> BoxFuture<'a, Result<Option<usize>, Status>>;
}

/// Middleware run on every receive, on a client or server stream.
pub trait RecvMiddleware: Send + Sync + 'static {
    /// Call `next.run(ctx)` to receive (`Ok(None)` is the end of the stream), then inspect or
    /// modify the message (its encoded size is in [`Received::encoded_len`]), or reject it by
    /// returning an error (the caller's `recv` returns it).
    fn on_recv<'a>(
        &'a self,
        ctx: &'a CallContext,
        next: RecvNext<'a>,
    ) -> BoxFuture<'a, Result<Option<Received>, Status>>;
}

/// The innermost send step (encode and queue), type-erased.
pub(crate) trait SendSink: Send {
    fn send<'a>(
        &'a mut self,
        msg: &'a mut AnyMessage,
    ) -> BoxFuture<'a, Result<Option<usize>, Status>>;
}

/// The innermost recv step (receive and decode), type-erased.
pub(crate) trait RecvSource: Send {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Received>, Status>>;
}

/// The rest of a send chain.
pub struct SendNext<'a> {
    chain: &'a [Arc<dyn SendMiddleware>],
    sink: &'a mut dyn SendSink,
}

impl<'a> SendNext<'a> {
    pub(crate) fn new(chain: &'a [Arc<dyn SendMiddleware>], sink: &'a mut dyn SendSink) -> Self {
        SendNext { chain, sink }
    }

    /// Runs the remaining middleware and then sends the message; returns its encoded size
    /// when the codec knew it before encoding (the protobuf and thrift codecs do).
    pub fn run(
        self,
        ctx: &'a CallContext,
        msg: &'a mut AnyMessage,
    ) -> BoxFuture<'a, Result<Option<usize>, Status>> {
        match self.chain.split_first() {
            Some((first, rest)) => first.on_send(ctx, msg, SendNext::new(rest, self.sink)),
            None => self.sink.send(msg),
        }
    }
}

/// The rest of a recv chain.
pub struct RecvNext<'a> {
    chain: &'a [Arc<dyn RecvMiddleware>],
    source: &'a mut dyn RecvSource,
}

impl<'a> RecvNext<'a> {
    pub(crate) fn new(
        chain: &'a [Arc<dyn RecvMiddleware>],
        source: &'a mut dyn RecvSource,
    ) -> Self {
        RecvNext { chain, source }
    }

    /// Runs the remaining middleware and the receive: the message with its encoded size;
    /// `Ok(None)` is the end of the stream.
    pub fn run(self, ctx: &'a CallContext) -> BoxFuture<'a, Result<Option<Received>, Status>> {
        match self.chain.split_first() {
            Some((first, rest)) => first.on_recv(ctx, RecvNext::new(rest, self.source)),
            None => self.source.recv(),
        }
    }
}

/// The send and recv chains of a client or a server (cheap to clone; shared by every stream).
#[derive(Clone, Default)]
pub struct MessageMiddleware {
    pub(crate) send: Arc<[Arc<dyn SendMiddleware>]>,
    pub(crate) recv: Arc<[Arc<dyn RecvMiddleware>]>,
}

impl MessageMiddleware {
    pub(crate) fn push_send(&mut self, m: Arc<dyn SendMiddleware>) {
        let mut v: Vec<_> = self.send.iter().cloned().collect();
        v.push(m);
        self.send = v.into();
    }

    pub(crate) fn push_recv(&mut self, m: Arc<dyn RecvMiddleware>) {
        let mut v: Vec<_> = self.recv.iter().cloned().collect();
        v.push(m);
        self.recv = v.into();
    }
}

impl std::fmt::Debug for MessageMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageMiddleware")
            .field("send", &self.send.len())
            .field("recv", &self.recv.len())
            .finish()
    }
}

/// A send middleware from a closure run before the message goes on (synchronous inspection or
/// modification; return `Err` to reject). The closure runs before encoding; a middleware that
/// needs the encoded size implements [`SendMiddleware`] and reads what [`SendNext::run`]
/// returns.
pub fn send_fn<F>(f: F) -> impl SendMiddleware
where
    F: Fn(&CallContext, &mut AnyMessage) -> Result<(), Status> + Send + Sync + 'static,
{
    struct SendFn<F>(F);
    impl<F> SendMiddleware for SendFn<F>
    where
        F: Fn(&CallContext, &mut AnyMessage) -> Result<(), Status> + Send + Sync + 'static,
    {
        fn on_send<'a>(
            &'a self,
            ctx: &'a CallContext,
            msg: &'a mut AnyMessage,
            next: SendNext<'a>,
        ) -> BoxFuture<'a, Result<Option<usize>, Status>> {
            Box::pin(async move {
                (self.0)(ctx, msg)?;
                next.run(ctx, msg).await
            })
        }
    }
    SendFn(f)
}

/// A recv middleware from a closure run on each received message (not on the end of stream).
/// A middleware that needs the encoded size implements [`RecvMiddleware`] and reads
/// [`Received::encoded_len`].
pub fn recv_fn<F>(f: F) -> impl RecvMiddleware
where
    F: Fn(&CallContext, &mut AnyMessage) -> Result<(), Status> + Send + Sync + 'static,
{
    struct RecvFn<F>(F);
    impl<F> RecvMiddleware for RecvFn<F>
    where
        F: Fn(&CallContext, &mut AnyMessage) -> Result<(), Status> + Send + Sync + 'static,
    {
        fn on_recv<'a>(
            &'a self,
            ctx: &'a CallContext,
            next: RecvNext<'a>,
        ) -> BoxFuture<'a, Result<Option<Received>, Status>> {
            Box::pin(async move {
                let mut got = next.run(ctx).await?;
                if let Some(r) = got.as_mut() {
                    (self.0)(ctx, &mut *r.message)?;
                }
                Ok(got)
            })
        }
    }
    RecvFn(f)
}
