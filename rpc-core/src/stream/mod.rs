//! The typed send and receive halves shared by client and server handles.
//!
//! [`Sender`] and [`Receiver`] own encoding/decoding and run the message middleware; the side
//! specific parts (deadline on the client, response header and local cancel on the server) live
//! behind the crate-private [`End`] trait so both sides share one implementation.

use std::future::poll_fn;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::codec::{Encodable, MsgCodec, Outgoing};
use crate::context::CallContext;
use crate::middleware::{
    AnyMessage, MessageMiddleware, Received, RecvNext, RecvSource, SendNext, SendSink,
};
use crate::status::{Error, Status};
use crate::transport::BoxFuture;

/// One side's access to a raw stream, for one half (send or receive).
pub(crate) trait End: Send + 'static {
    /// An owned handle on the call context, held across a middleware chain that borrows the
    /// end mutably: a reference count, never a deep clone.
    type Ctx: std::ops::Deref<Target = CallContext> + Send + Sync + 'static;
    fn ctx(&self) -> Self::Ctx;
    fn middleware(&self) -> &MessageMiddleware;
    fn poll_send_ready(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>>;
    fn start_send(&mut self, msg: &mut dyn Encodable) -> Result<(), Status>;
    /// Waits for send capacity and sends `msg` of `len` bytes (its encoded length, 0 when
    /// unknown) in one step: `poll_send_ready` then `start_send` by default.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        msg: &mut dyn Encodable,
        len: usize,
    ) -> Poll<Result<(), Status>> {
        std::task::ready!(self.poll_send_ready(cx, len))?;
        Poll::Ready(self.start_send(msg))
    }
    /// Sends `msg` as the last message and ends the stream in the same call (server unary
    /// replies). Only called on halves created with [`Sender::new_last`].
    fn start_send_last(&mut self, msg: &mut dyn Encodable) -> Result<(), Status> {
        self.start_send(msg)
    }
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>>;
    /// The receive direction reached its end (EOF or error).
    fn recv_ended(&self);
    /// `status`, returned by a receive, fails that receive only: the stream lives on (a recv
    /// timeout with `disable_cancel_remote`).
    fn transient(&self, status: &Status) -> bool {
        let _ = status;
        false
    }
    /// A local error (decode failure) makes the stream unusable: reset it.
    fn fail(&self, status: &Status);
    /// The half was dropped before its end.
    fn abandon(&self);
    /// Another end on the same stream, for a receive that runs in an owned future (a
    /// `futures::Stream` poll with recv middleware registered).
    fn fork(&self) -> Self
    where
        Self: Sized;
}

/// The sending half of a stream of `T`.
pub(crate) struct Sender<T, E: End> {
    pub(crate) end: E,
    codec: MsgCodec<T>,
    pub(crate) closed: bool,
    /// The transport refused a send: the stream is ending (the peer ended it, it was reset,
    /// its connection is gone) even if its end has not been received yet. Dropping the
    /// sender then abandons nothing: a cancel would replace the end still on its way (the
    /// server's own status) with a user cancel.
    failed: bool,
    /// The message sent ends the stream (one-shot reply).
    last: bool,
}

impl<T: Send + Sync + 'static, E: End> Sender<T, E> {
    pub(crate) fn new(end: E, codec: MsgCodec<T>) -> Self {
        Sender {
            end,
            codec,
            closed: false,
            failed: false,
            last: false,
        }
    }

    /// A sender whose one message also ends the stream ([`End::start_send_last`]).
    pub(crate) fn new_last(end: E, codec: MsgCodec<T>) -> Self {
        let mut tx = Sender::new(end, codec);
        tx.last = true;
        tx
    }

    pub(crate) async fn send(&mut self, mut msg: T) -> Result<(), Status> {
        if self.closed {
            return Err(Error::SendAfterClose.into());
        }
        if self.end.middleware().send.is_empty() {
            return self.send_plain(&msg).await.map(drop);
        }
        let chain = self.end.middleware().send.clone();
        let ctx = self.end.ctx();
        let mut sink = Sink { tx: self };
        SendNext::new(&chain, &mut sink)
            .run(&ctx, &mut msg)
            .await
            .map(drop)
    }

    /// Sends every message of `msgs` in order, waiting for send capacity before each; stops at
    /// the first error.
    pub(crate) async fn send_all<S>(&mut self, msgs: S) -> Result<(), Status>
    where
        S: futures::Stream<Item = T> + Send,
    {
        use futures::StreamExt;
        let mut msgs = std::pin::pin!(msgs);
        while let Some(msg) = msgs.next().await {
            self.send(msg).await?;
        }
        Ok(())
    }

    /// Sends `msg`; returns its encoded size when the codec knew it before encoding.
    async fn send_plain(&mut self, msg: &T) -> Result<Option<usize>, Status> {
        let hint = (self.codec.encoded_len)(msg);
        let len = hint.unwrap_or(0);
        let mut out = Outgoing::with_len(msg, self.codec, hint);
        let sent = if self.last {
            match poll_fn(|cx| self.end.poll_send_ready(cx, len)).await {
                Ok(()) => {
                    self.closed = true;
                    self.end.start_send_last(&mut out)
                }
                Err(status) => Err(status),
            }
        } else {
            poll_fn(|cx| self.end.poll_send(cx, &mut out, len)).await
        };
        if sent.is_err() {
            self.failed = true;
        }
        sent.map(|()| hint)
    }
}

struct Sink<'a, T, E: End> {
    tx: &'a mut Sender<T, E>,
}

impl<T: Send + Sync + 'static, E: End> SendSink for Sink<'_, T, E> {
    fn send<'a>(
        &'a mut self,
        msg: &'a mut AnyMessage,
    ) -> BoxFuture<'a, Result<Option<usize>, Status>> {
        Box::pin(async move {
            let msg = msg.downcast_ref::<T>().ok_or(Error::MessageTypeMismatch {
                expected: std::any::type_name::<T>(),
            })?;
            self.tx.send_plain(msg).await
        })
    }
}

/// Implements `futures::Stream` for a receiving handle whose [`Receiver`] is at `$($field).+`
/// (client and server handles alike).
macro_rules! impl_stream {
    ($handle:ident < $($gen:ident),+ >, $item:ident, $($field:ident).+) => {
        impl<$($gen: Send + Sync + 'static),+> futures::Stream for $handle<$($gen),+> {
            type Item = Result<$item, Status>;

            /// Messages as `Some(Ok(msg))`; `None` at a clean end (for a server, the client's
            /// half-close); a failed stream yields `Some(Err(status))` once, then `None`.
            fn poll_next(
                self: std::pin::Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                self.get_mut().$($field).+.poll_next(cx)
            }
        }
    };
}
pub(crate) use impl_stream;

/// A receive with recv middleware, run to completion in an owned future so a
/// `futures::Stream` poll can hold it across `Pending`.
type InFlight<T> = BoxFuture<'static, Result<Option<T>, Status>>;

/// The receiving half of a stream of `T`.
pub(crate) struct Receiver<T, E: End> {
    pub(crate) end: E,
    codec: MsgCodec<T>,
    done: Option<Result<(), Status>>,
    /// A receive started by `poll_next` (recv middleware only), finished before any other.
    in_flight: Option<InFlight<T>>,
    /// A fork used inside an in-flight receive: dropping it must not reset the stream.
    forked: bool,
}

impl<T: Send + Sync + 'static, E: End> Receiver<T, E> {
    pub(crate) fn new(end: E, codec: MsgCodec<T>) -> Self {
        Receiver {
            end,
            codec,
            done: None,
            in_flight: None,
            forked: false,
        }
    }

    /// Records the end of the receive direction from an outcome.
    fn settle(&mut self, got: &Result<Option<T>, Status>) {
        match got {
            Ok(Some(_)) => {}
            Ok(None) => self.done = Some(Ok(())),
            Err(e) if self.end.transient(e) => {}
            Err(e) => self.done = Some(Err(e.clone())),
        }
    }

    /// `futures::Stream::poll_next` for every receiving handle: `Some(Ok(msg))`, then `None` at
    /// a clean end, or `Some(Err(status))` once and `None` after it.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, Status>>>
    where
        E: Send,
    {
        if self.in_flight.is_none() {
            if self.done.is_some() {
                // A stream yields its error once, then ends.
                return Poll::Ready(None);
            }
            if self.end.middleware().recv.is_empty() {
                return self.poll_recv_plain(cx).map(Result::transpose);
            }
            let mut fork = Receiver::new(self.end.fork(), self.codec);
            fork.forked = true;
            self.in_flight = Some(Box::pin(async move { fork.recv().await }));
        }
        let Some(fut) = self.in_flight.as_mut() else {
            return Poll::Ready(None);
        };
        let got = std::task::ready!(fut.as_mut().poll(cx));
        self.in_flight = None;
        self.settle(&got);
        Poll::Ready(got.transpose())
    }

    pub(crate) async fn recv(&mut self) -> Result<Option<T>, Status> {
        if let Some(fut) = self.in_flight.take() {
            // A receive a `Stream` poll started goes first, so no message is lost.
            let got = fut.await;
            self.settle(&got);
            return got;
        }
        if self.end.middleware().recv.is_empty() {
            return self.recv_plain().await;
        }
        if let Some(done) = &self.done {
            return done.clone().map(|()| None);
        }
        let chain = self.end.middleware().recv.clone();
        let ctx = self.end.ctx();
        let mut source = Source { rx: self };
        let got = RecvNext::new(&chain, &mut source).run(&ctx).await;
        let got = match got {
            Err(e) => Err(e),
            Ok(None) => Ok(None),
            Ok(Some(r)) => match r.message.downcast::<T>() {
                Ok(m) => Ok(Some(*m)),
                Err(_) => Err(Error::MessageTypeMismatch {
                    expected: std::any::type_name::<T>(),
                }
                .into()),
            },
        };
        self.settle(&got);
        got
    }

    async fn recv_plain(&mut self) -> Result<Option<T>, Status> {
        poll_fn(|cx| self.poll_recv_plain(cx)).await
    }

    fn poll_recv_plain(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, Status>> {
        self.poll_recv_sized(cx)
            .map(|r| r.map(|m| m.map(|(m, _)| m)))
    }

    /// A received message with its encoded size (for recv middleware).
    async fn recv_sized(&mut self) -> Result<Option<(T, usize)>, Status> {
        poll_fn(|cx| self.poll_recv_sized(cx)).await
    }

    fn poll_recv_sized(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<(T, usize)>, Status>> {
        if let Some(done) = &self.done {
            return Poll::Ready(done.clone().map(|()| None));
        }
        let got = std::task::ready!(self.end.poll_recv(cx));
        let outcome = match got {
            Ok(Some(bytes)) => match (bytes.len(), (self.codec.decode)(bytes)) {
                (len, Ok(m)) => return Poll::Ready(Ok(Some((m, len)))),
                (_, Err(status)) => {
                    // gRPC: a message that fails to parse ends the call with INTERNAL.
                    self.end.fail(&status);
                    Err(status)
                }
            },
            Ok(None) => Ok(()),
            Err(status) if self.end.transient(&status) => return Poll::Ready(Err(status)),
            Err(status) => Err(status),
        };
        self.done = Some(outcome.clone());
        self.end.recv_ended();
        Poll::Ready(outcome.map(|()| None))
    }
}

impl<T, E: End> Drop for Receiver<T, E> {
    fn drop(&mut self) {
        if self.done.is_none() && !self.forked {
            self.end.abandon();
        }
    }
}

struct Source<'a, T, E: End> {
    rx: &'a mut Receiver<T, E>,
}

impl<T: Send + Sync + 'static, E: End> RecvSource for Source<'_, T, E> {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Received>, Status>> {
        Box::pin(async move {
            Ok(self
                .rx
                .recv_sized()
                .await?
                .map(|(m, len)| Received::new(Box::new(m), len)))
        })
    }
}

impl<T, E: End> Drop for Sender<T, E> {
    fn drop(&mut self) {
        if !self.closed && !self.failed {
            self.end.abandon();
        }
    }
}
