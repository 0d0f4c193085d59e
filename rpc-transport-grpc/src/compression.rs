//! Message compression: the algorithms, and the per-call handle through which a client or a
//! handler chooses compression per message and learns how messages arrived.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// A message compression algorithm (`grpc-encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// No compression.
    #[default]
    Identity,
    /// gzip (RFC 1952), what every gRPC implementation supports.
    Gzip,
}

impl Compression {
    /// The `grpc-encoding` name.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Identity => "identity",
            Compression::Gzip => "gzip",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Compression::Identity => 0,
            Compression::Gzip => 1,
        }
    }

    fn from_u8(v: u8) -> Compression {
        match v {
            1 => Compression::Gzip,
            _ => Compression::Identity,
        }
    }

    /// `Some(self)` unless identity.
    pub(crate) fn active(self) -> Option<Compression> {
        (self != Compression::Identity).then_some(self)
    }
}

/// The `grpc-accept-encoding` we send: every algorithm we can decode.
pub(crate) const ACCEPT_ENCODING: &str = "gzip";

const FLAG_ARRIVED: u8 = 1;
const FLAG_LAST_COMPRESSED: u8 = 2;
const FLAG_PEER_ACCEPTS_GZIP: u8 = 4;

#[derive(Debug, Default)]
struct State {
    send: AtomicU8,
    flags: AtomicU8,
    request_encoding: AtomicU8,
}

/// One call's compression, shared between the transport and the application: which
/// algorithm the messages sent from now on use (changeable between messages), and whether
/// the last message received arrived compressed. Cheap to clone (clones share the state).
///
/// **On the server** the gRPC transport offers one to every call, made when the handler
/// first asks for it with `ctx.extension::<MessageCompression>()` (a call that never asks
/// costs no handle):
///
/// ```
/// # use rpc_transport_grpc::{Compression, MessageCompression};
/// # fn handler(ctx: rpc_core::ServerContext) -> Result<(), rpc_core::Status> {
/// if let Some(c) = ctx.extension::<MessageCompression>() {
///     // Refuse a request that should have been compressed but was not.
///     if !c.last_received_compressed() {
///         return Err(rpc_core::Status::invalid_argument("expected a compressed message"));
///     }
///     // Compress the responses (only if the client accepts gzip; else they go plain).
///     c.set_send(Compression::Gzip);
/// }
/// # Ok(()) }
/// ```
///
/// When the client accepts gzip (`grpc-accept-encoding`), the response header announces
/// `grpc-encoding: gzip` and each message follows the choice current when it is sent, through
/// its per-message flag (so one response stream may mix compressed and plain messages, as the
/// spec allows). A client that does not accept gzip gets plain messages whatever the choice.
///
/// **On the client** put a [`Compression`] into the call context's extensions for the whole
/// call (`ctx.extensions_mut().insert(Compression::Gzip)`, from an interceptor or layer), or
/// a `MessageCompression` you keep a clone of to change it between messages. The request
/// header announces gzip when either says gzip at open; the client's
/// `GrpcClientConfig::send_compression` is the default.
#[derive(Debug, Clone, Default)]
pub struct MessageCompression(Arc<State>);

impl MessageCompression {
    /// A handle whose messages are sent with `send`.
    pub fn new(send: Compression) -> MessageCompression {
        let m = MessageCompression::default();
        m.set_send(send);
        m
    }

    /// Messages sent from now on use `c`.
    pub fn set_send(&self, c: Compression) {
        self.0.send.store(c.to_u8(), Ordering::Release);
    }

    /// What messages sent now use.
    pub fn send(&self) -> Compression {
        Compression::from_u8(self.0.send.load(Ordering::Acquire))
    }

    /// Whether the last message received on this call had its compressed flag set (false
    /// before any message).
    pub fn last_received_compressed(&self) -> bool {
        self.0.flags.load(Ordering::Acquire) & FLAG_LAST_COMPRESSED != 0
    }

    /// Whether any message has been received on this call.
    pub fn received_any(&self) -> bool {
        self.0.flags.load(Ordering::Acquire) & FLAG_ARRIVED != 0
    }

    /// The `grpc-encoding` the peer announced for its messages (identity when none).
    pub fn peer_encoding(&self) -> Compression {
        Compression::from_u8(self.0.request_encoding.load(Ordering::Acquire))
    }

    /// Whether the peer's `grpc-accept-encoding` names `c` (identity always).
    pub fn peer_accepts(&self, c: Compression) -> bool {
        match c {
            Compression::Identity => true,
            Compression::Gzip => self.0.flags.load(Ordering::Acquire) & FLAG_PEER_ACCEPTS_GZIP != 0,
        }
    }

    pub(crate) fn record_received(&self, compressed: bool) {
        let set = FLAG_ARRIVED | if compressed { FLAG_LAST_COMPRESSED } else { 0 };
        let keep = FLAG_PEER_ACCEPTS_GZIP;
        let _ = self
            .0
            .flags
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                Some((f & keep) | set)
            });
    }

    pub(crate) fn set_peer(&self, encoding: Option<Compression>, accepts_gzip: bool) {
        self.0
            .request_encoding
            .store(encoding.unwrap_or_default().to_u8(), Ordering::Release);
        if accepts_gzip {
            self.0
                .flags
                .fetch_or(FLAG_PEER_ACCEPTS_GZIP, Ordering::AcqRel);
        }
    }
}
