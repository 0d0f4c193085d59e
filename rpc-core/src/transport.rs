//! The raw transport traits: what a transport implements so typed streams can run over it.
//!
//! A raw stream moves *encoded* messages plus header metadata, trailer metadata and a final
//! [`Status`]. Methods take `&self` (the transport keeps its own per-stream synchronization) so
//! the typed layer can share one stream between a send half, a receive half and the server core
//! through an `Arc`. All `poll_*` methods follow the usual contract: `Pending` registers the
//! waker of the calling task; each `poll_*` method is driven by at most one task at a time (the
//! typed layer guarantees it), so one waker slot per method is enough.
//!
//! Ownership is the lifecycle: when the last `Arc` of a raw stream drops, the transport releases
//! the stream's slot and buffers, and resets the stream on the wire if it had not ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::time::Instant;

use crate::codec::Encodable;
use crate::context::{CallContext, PayloadKind, Peer};
use crate::metadata::Metadata;
use crate::status::Status;

/// Waker slots for `poll_*` implementations that keep one waker per operation (the raw-stream
/// contract: each `poll_*` method is driven by one task at a time).
pub mod waker {
    use std::task::{Context, Waker};

    /// Stores the waker of `cx` in `slot`, unless the one there already wakes the same task.
    pub fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
        match slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
    }

    /// Wakes and clears `slot`, if it holds a waker.
    pub fn wake(slot: &mut Option<Waker>) {
        if let Some(w) = slot.take() {
            w.wake();
        }
    }
}

/// A boxed, sendable future (the shape of every dynamic future in this crate).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The client side of one stream.
pub trait ClientStreamRaw: Send + Sync + 'static {
    /// Ready when one more message may be queued; memory between the caller and the wire is
    /// bounded, so this waits while the stream's send buffer is full. An error ends sending.
    fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Status>>;

    /// Encodes and queues one message. Called only after `poll_send_ready` returned `Ready(Ok)`.
    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status>;

    /// Half-closes the sending direction (the peer's receive ends with EOF after the messages
    /// already queued). Idempotent.
    fn close_send(&self) -> Result<(), Status>;

    /// Ready with the response header metadata once it arrived, or with the stream's error if
    /// the stream ended first.
    fn poll_header(&self, cx: &mut Context<'_>) -> Poll<Result<Metadata, Status>>;

    /// The next message: `Ok(Some)`, `Ok(None)` at a clean end (server finished with OK), or
    /// the final error status. Once ended, it returns the same outcome again.
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>>;

    /// Trailer metadata, once the stream ended (OK or not).
    fn trailer(&self) -> Option<Metadata>;

    /// Resets the stream (cancel or deadline) with `status`, which tells the transport the
    /// reason (`CANCELLED` or `DEADLINE_EXCEEDED`). Pending operations end with `status`.
    fn cancel(&self, status: &Status);
}

/// The server side of one stream.
pub trait ServerStreamRaw: Send + Sync + 'static {
    /// As [`ClientStreamRaw::poll_send_ready`].
    fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Status>>;

    /// Encodes and queues one message; the transport sends the response header first if it has
    /// not been sent yet (the core always calls [`ServerStreamRaw::send_header`] first).
    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status>;

    /// Sends the response header metadata now. Called at most once.
    fn send_header(&self, header: Metadata) -> Result<(), Status>;

    /// The next request message, `Ok(None)` after the client's half-close, or an error
    /// (`CANCELLED` when the client reset, `UNAVAILABLE` when the connection was lost).
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>>;

    /// Ends the stream with `status` (OK or the error) and trailer metadata. `header` is the
    /// response header if it was never sent (so a transport can send a trailers-only response).
    /// Called once; later sends fail.
    fn finish(&self, header: Option<Metadata>, status: Status, trailer: Metadata);

    /// Ready with the reason once the stream was reset by the client or its connection was lost.
    /// Polled only by the server core.
    fn poll_cancelled(&self, cx: &mut Context<'_>) -> Poll<Status>;
}

/// A transport that opens client streams (one per call).
pub trait ClientTransport: Send + Sync + 'static {
    /// Opens a stream for `ctx.method()` carrying `ctx.metadata()` and the deadline. It must
    /// not wait for anything from the server beyond connection setup: client-streaming calls
    /// return as soon as the stream is open.
    fn open(
        &self,
        ctx: &CallContext,
    ) -> BoxFuture<'static, Result<Arc<dyn ClientStreamRaw>, Status>>;
}

/// A stream a server transport accepted, before routing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IncomingStream {
    /// The service name as it came off the wire (full `pkg.Service` or bare `Service`; may be
    /// empty when the protocol has none).
    pub service: String,
    /// The method name.
    pub method: String,
    /// Request metadata.
    pub metadata: Metadata,
    /// The deadline the client sent, converted to a local instant.
    pub deadline: Option<Instant>,
    /// The peer.
    pub peer: Option<Peer>,
    /// The payload kind, when the protocol tells (routing picks the matching flavour).
    pub payload: Option<PayloadKind>,
}

impl IncomingStream {
    /// A stream for `service`/`method` with no metadata, deadline or peer.
    pub fn new(service: impl Into<String>, method: impl Into<String>) -> IncomingStream {
        IncomingStream {
            service: service.into(),
            method: method.into(),
            metadata: Metadata::new(),
            deadline: None,
            peer: None,
            payload: None,
        }
    }

    /// Sets the payload kind.
    pub fn with_payload(mut self, payload: Option<PayloadKind>) -> Self {
        self.payload = payload;
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the deadline.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the peer.
    pub fn with_peer(mut self, peer: Option<Peer>) -> Self {
        self.peer = peer;
        self
    }
}

/// A client transport made from an address string (`tcp://HOST:PORT`, `unix:///path`, ...),
/// so a generated client is one line with the transport chosen by the caller:
/// `TestServiceClient::connect::<TtHeaderClient>("tcp://127.0.0.1:8888")?`.
///
/// Connecting is lazy: this parses and checks the address; connections are made on first use
/// (and re-made after a failure), so the error of an unreachable server comes from the call.
pub trait Connect: ClientTransport + Sized {
    /// A transport for `address` with default settings.
    fn connect(address: &str) -> Result<Self, Status>;
}
