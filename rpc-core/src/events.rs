//! Stream event hooks (Kitex v0.16's `StreamEventHandler`): an observer sees every stream
//! start, each message sent and received, the response header, and the end — with the final
//! status, message and byte counts each way, and the duration — on both sides, over every
//! transport.
//!
//! Register a [`StreamObserver`] with
//! [`ClientBuilder::observer`](crate::ClientBuilder::observer) or
//! [`ServerBuilder::observer`](crate::ServerBuilder::observer). For each stream it is asked
//! once, at the start ([`StreamObserver::on_start`]), and returns the stream's own
//! [`StreamEvents`] (or `None` to skip that stream); the events of that stream then go there,
//! in order, from whichever task sends or receives:
//!
//! | event | client | server |
//! |---|---|---|
//! | [`on_start`](StreamObserver::on_start) | the stream is about to open (after call middleware; the request metadata as it is sent) | the stream was routed, before the handler runs |
//! | [`on_send`](StreamEvents::on_send) | a request went to the transport | a response went to the transport |
//! | [`on_recv`](StreamEvents::on_recv) | a response arrived | a request arrived |
//! | [`on_header`](StreamEvents::on_header) | the response header arrived (not for a trailers-only end) | the response header was sent |
//! | [`on_finish`](StreamEvents::on_finish) | the stream ended (exactly once: its status, a reset, the deadline, or dropped handles) | the stream ended (exactly once) |
//!
//! Message sizes are the encoded lengths (0 when a codec cannot tell in advance); the message
//! itself is for send/recv middleware. Events run inline on the call's path: keep them short,
//! hand heavy work to a channel or a task.
//!
//! # Cost
//!
//! With no observer registered nothing changes: the core's per-call observation state is not
//! even allocated unless tracing or metrics want it, and every event is one branch on it.
//! With observers, a stream costs one `on_start` call each, one allocation for the events
//! they return, and a dynamic call per event.
//!
//! ```
//! use rpc_core::events::{StreamEvents, StreamFinish, StreamObserver, StreamStart};
//!
//! struct SlowCalls;
//! struct Timer(&'static str);
//!
//! impl StreamObserver for SlowCalls {
//!     fn on_start(&self, start: &StreamStart<'_>) -> Option<Box<dyn StreamEvents>> {
//!         Some(Box::new(Timer(start.ctx.method().path)))
//!     }
//! }
//!
//! impl StreamEvents for Timer {
//!     fn on_finish(&self, end: &StreamFinish<'_>) {
//!         if end.duration.as_millis() > 100 {
//!             eprintln!("{} took {:?}: {:?}", self.0, end.duration, end.status.code());
//!         }
//!     }
//! }
//!
//! let server = rpc_core::Server::builder().observer(SlowCalls).build();
//! # drop(server);
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::context::CallContext;
use crate::metadata::Metadata;
use crate::status::Status;

/// Which side of a call a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client's stream (a call this process makes).
    Client,
    /// The server's stream (a call this process serves).
    Server,
}

/// A stream starting: what an observer sees to decide whether to follow it.
#[derive(Debug)]
#[non_exhaustive]
pub struct StreamStart<'a> {
    /// Client or server.
    pub side: Side,
    /// The call: method (names, mode, payload kind), request metadata, peer, deadline.
    pub ctx: &'a CallContext,
    /// The transport's `rpc.system` (`ttheader`, `grpc`, `shm`, `inproc`, ...).
    pub rpc_system: &'static str,
}

/// How a stream ended.
#[derive(Debug)]
#[non_exhaustive]
pub struct StreamFinish<'a> {
    /// The final status: the server's, or the reset, deadline or loss that ended it.
    pub status: &'a Status,
    /// Messages this side sent.
    pub messages_sent: u64,
    /// Messages this side received.
    pub messages_received: u64,
    /// Encoded bytes of the messages sent.
    pub bytes_sent: u64,
    /// Encoded bytes of the messages received.
    pub bytes_received: u64,
    /// From the start to the end.
    pub duration: Duration,
}

/// Decides, per stream, whether and how to follow it (see the [module docs](self)).
pub trait StreamObserver: Send + Sync + 'static {
    /// A stream starts: the events to send its later events to, or `None` to skip it.
    fn on_start(&self, start: &StreamStart<'_>) -> Option<Box<dyn StreamEvents>>;
}

/// The events of one stream, in order. Every method defaults to doing nothing.
pub trait StreamEvents: Send + Sync + 'static {
    /// A message of `bytes` (encoded) went out.
    fn on_send(&self, bytes: usize) {
        let _ = bytes;
    }

    /// A message of `bytes` (encoded) came in.
    fn on_recv(&self, bytes: usize) {
        let _ = bytes;
    }

    /// The response header: received (client) or sent (server).
    fn on_header(&self, header: &Metadata) {
        let _ = header;
    }

    /// The stream ended; the last event.
    fn on_finish(&self, finish: &StreamFinish<'_>) {
        let _ = finish;
    }
}

/// The observers a client or server has: empty (and free) when none is registered.
pub(crate) type Observers = Arc<[Arc<dyn StreamObserver>]>;
