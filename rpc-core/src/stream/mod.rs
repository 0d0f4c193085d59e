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
use crate::middleware::{AnyMessage, MessageMiddleware, RecvNext, RecvSource, SendNext, SendSink};
use crate::status::{Error, Status};
use crate::transport::BoxFuture;

/// One side's access to a raw stream, for one half (send or receive).
pub(crate) trait End: Send + 'static {
    fn ctx(&self) -> &CallContext;
    fn middleware(&self) -> &MessageMiddleware;
    fn poll_send_ready(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>>;
    fn start_send(&mut self, msg: &mut dyn Encodable) -> Result<(), Status>;
    /// Sends `msg` as the last message and ends the stream in the same call (server unary
    /// replies). Only called on halves created with [`Sender::new_last`].
    fn start_send_last(&mut self, msg: &mut dyn Encodable) -> Result<(), Status> {
        self.start_send(msg)
    }
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>>;
    /// The receive direction reached its end (EOF or error).
    fn recv_ended(&self);
    /// A local error (decode failure) makes the stream unusable: reset it.
    fn fail(&self, status: &Status);
    /// The half was dropped before its end.
    fn abandon(&self);
}

/// The sending half of a stream of `T`.
pub(crate) struct Sender<T, E: End> {
    pub(crate) end: E,
    codec: MsgCodec<T>,
    pub(crate) closed: bool,
    /// The message sent ends the stream (one-shot reply).
    last: bool,
}

impl<T: Send + Sync + 'static, E: End> Sender<T, E> {
    pub(crate) fn new(end: E, codec: MsgCodec<T>) -> Self {
        Sender {
            end,
            codec,
            closed: false,
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
            return self.send_plain(&msg).await;
        }
        let chain = self.end.middleware().send.clone();
        let ctx = self.end.ctx().clone();
        let mut sink = Sink { tx: self };
        SendNext::new(&chain, &mut sink).run(&ctx, &mut msg).await
    }

    async fn send_plain(&mut self, msg: &T) -> Result<(), Status> {
        let len = (self.codec.encoded_len)(msg).unwrap_or(0);
        poll_fn(|cx| self.end.poll_send_ready(cx, len)).await?;
        let mut out = Outgoing::new(msg, self.codec);
        if self.last {
            self.closed = true;
            self.end.start_send_last(&mut out)
        } else {
            self.end.start_send(&mut out)
        }
    }
}

struct Sink<'a, T, E: End> {
    tx: &'a mut Sender<T, E>,
}

impl<T: Send + Sync + 'static, E: End> SendSink for Sink<'_, T, E> {
    fn send<'a>(&'a mut self, msg: &'a mut AnyMessage) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            let msg = msg.downcast_ref::<T>().ok_or(Error::MessageTypeMismatch {
                expected: std::any::type_name::<T>(),
            })?;
            self.tx.send_plain(msg).await
        })
    }
}

/// The receiving half of a stream of `T`.
pub(crate) struct Receiver<T, E: End> {
    pub(crate) end: E,
    codec: MsgCodec<T>,
    done: Option<Result<(), Status>>,
}

impl<T: Send + Sync + 'static, E: End> Receiver<T, E> {
    pub(crate) fn new(end: E, codec: MsgCodec<T>) -> Self {
        Receiver {
            end,
            codec,
            done: None,
        }
    }

    pub(crate) async fn recv(&mut self) -> Result<Option<T>, Status> {
        if self.end.middleware().recv.is_empty() {
            return self.recv_plain().await;
        }
        let chain = self.end.middleware().recv.clone();
        let ctx = self.end.ctx().clone();
        let mut source = Source { rx: self };
        let got = RecvNext::new(&chain, &mut source).run(&ctx).await?;
        match got {
            None => Ok(None),
            Some(b) => match b.downcast::<T>() {
                Ok(m) => Ok(Some(*m)),
                Err(_) => Err(Error::MessageTypeMismatch {
                    expected: std::any::type_name::<T>(),
                }
                .into()),
            },
        }
    }

    async fn recv_plain(&mut self) -> Result<Option<T>, Status> {
        if let Some(done) = &self.done {
            return done.clone().map(|()| None);
        }
        let outcome = poll_fn(|cx| self.end.poll_recv(cx)).await;
        let outcome = match outcome {
            Ok(Some(bytes)) => match (self.codec.decode)(bytes) {
                Ok(m) => return Ok(Some(m)),
                Err(status) => {
                    // gRPC: a message that fails to parse ends the call with INTERNAL.
                    self.end.fail(&status);
                    Err(status)
                }
            },
            Ok(None) => Ok(()),
            Err(status) => Err(status),
        };
        self.done = Some(outcome.clone());
        self.end.recv_ended();
        outcome.map(|()| None)
    }
}

impl<T, E: End> Drop for Receiver<T, E> {
    fn drop(&mut self) {
        if self.done.is_none() {
            self.end.abandon();
        }
    }
}

struct Source<'a, T, E: End> {
    rx: &'a mut Receiver<T, E>,
}

impl<T: Send + Sync + 'static, E: End> RecvSource for Source<'_, T, E> {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Box<AnyMessage>>, Status>> {
        Box::pin(async move {
            Ok(self
                .rx
                .recv_plain()
                .await?
                .map(|m| Box::new(m) as Box<AnyMessage>))
        })
    }
}

impl<T, E: End> Drop for Sender<T, E> {
    fn drop(&mut self) {
        if !self.closed {
            self.end.abandon();
        }
    }
}
