//! Static method descriptors and the per-call context.

use std::time::Duration;

use tokio::time::Instant;

use crate::cancel::{Parent, TimeoutConfig};
use crate::metadata::Metadata;
pub use crate::peer::Peer;

/// The four interaction modes of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One request, one response (unary; Kitex calls it pingpong).
    Unary,
    /// A stream of requests, one response.
    ClientStreaming,
    /// One request, a stream of responses.
    ServerStreaming,
    /// Streams both ways.
    Bidi,
}

impl Mode {
    /// Whether the client sends a stream.
    pub fn client_streams(self) -> bool {
        matches!(self, Mode::ClientStreaming | Mode::Bidi)
    }

    /// Whether the server sends a stream.
    pub fn server_streams(self) -> bool {
        matches!(self, Mode::ServerStreaming | Mode::Bidi)
    }
}

/// How messages of a method are serialized; transports use it to pick protocol ids and content
/// types (ttstream 0x10/0x11, `application/grpc` vs `application/grpc+thrift`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayloadKind {
    /// Protocol Buffers.
    Protobuf,
    /// Thrift binary protocol structs.
    Thrift,
}

/// A method as described by the IDL. Generated code holds these as `static`s.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MethodDesc {
    /// The IDL package (`echo`), empty when the IDL has none.
    pub package: &'static str,
    /// The service name as written in the IDL (`TestService`).
    pub service: &'static str,
    /// The fully-qualified service name (`echo.TestService`, or `TestService` without package).
    pub full_service: &'static str,
    /// The method name as written in the IDL (`PingPong`).
    pub name: &'static str,
    /// The gRPC path (`/echo.TestService/PingPong`).
    pub path: &'static str,
    /// The interaction mode.
    pub mode: Mode,
    /// The serialization of the method's messages.
    pub payload: PayloadKind,
}

/// A service: its name and its methods, in IDL order.
#[derive(Debug)]
pub struct ServiceDesc {
    /// The IDL package (may be empty).
    pub package: &'static str,
    /// The service name as written in the IDL.
    pub name: &'static str,
    /// The fully-qualified name (`package.name`).
    pub full_name: &'static str,
    /// Every method of the service.
    pub methods: &'static [MethodDesc],
}

/// Everything known about one call: which method, with whom, request metadata and deadline.
///
/// The client builds it from [`CallOptions`]; the server builds it from what the transport read
/// off the wire. Call middleware may change the metadata and the deadline.
#[derive(Debug, Clone)]
pub struct CallContext {
    method: &'static MethodDesc,
    peer: Option<Peer>,
    metadata: Metadata,
    deadline: Option<Instant>,
    extensions: http::Extensions,
}

impl CallContext {
    /// A context for `method` with no metadata, peer or deadline.
    pub fn new(method: &'static MethodDesc) -> CallContext {
        CallContext {
            method,
            peer: None,
            metadata: Metadata::new(),
            deadline: None,
            extensions: http::Extensions::new(),
        }
    }

    /// Typed values layers and interceptors attach to the call (an auth layer's principal, a
    /// trace handle): never sent on the wire. On the server, the handler reads them with
    /// [`ServerContext::extension`](crate::ServerContext::extension).
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }

    /// Mutable access to [`CallContext::extensions`].
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }

    /// The method descriptor.
    pub fn method(&self) -> &'static MethodDesc {
        self.method
    }

    /// The interaction mode of the method.
    pub fn mode(&self) -> Mode {
        self.method.mode
    }

    /// The fully-qualified service name (`pkg.Service`).
    pub fn full_service(&self) -> &'static str {
        self.method.full_service
    }

    /// The peer, when the transport knows it.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// Request metadata (sent by the client with the stream open).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Mutable request metadata (client side: what will be sent).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// The instant the whole call must be done by.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (zero once it passed), if there is one.
    pub fn timeout(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Sets the peer.
    pub fn with_peer(mut self, peer: Peer) -> CallContext {
        self.peer = Some(peer);
        self
    }

    /// Sets the request metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> CallContext {
        self.metadata = metadata;
        self
    }

    /// Sets the deadline.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> CallContext {
        self.deadline = deadline;
        self
    }

    /// Sets the deadline (mutable form, for middleware).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

/// Per-call options on the client.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// Request metadata, sent with the stream open (merged after the client's defaults).
    pub metadata: Metadata,
    /// Time allowed for the whole call or stream; overrides the client's default timeout.
    pub timeout: Option<Duration>,
    /// Typed values for the call's [`CallContext::extensions`] (layers and the transport read
    /// them: gRPC's per-call compression, for one). Never sent as such.
    pub extensions: http::Extensions,
    /// This client's own limit on the whole stream (not sent to the server, unlike the
    /// timeout); overrides the client's ([`crate::cancel`]).
    pub stream_timeout: Option<Duration>,
    /// The limit on each `recv` of a stream; overrides the client's ([`crate::cancel`]).
    pub recv_timeout: Option<TimeoutConfig>,
    /// Which call this one joins for cascading cancel (default: the handler running it).
    pub parent: Parent,
}

/// The per-call cancel settings, carried in the call's extensions from [`CallOptions`] to
/// the open (so unary layers and retries keep them).
#[derive(Debug, Clone, Default)]
pub(crate) struct CallCancel {
    pub(crate) stream_timeout: Option<Duration>,
    pub(crate) recv_timeout: Option<TimeoutConfig>,
    pub(crate) parent: Parent,
}

impl CallOptions {
    /// Default options.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// Sets the timeout of the whole call or stream.
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the stream timeout: this client's own limit on the whole stream, not sent to the
    /// server; when it passes the stream is reset with `DEADLINE_EXCEEDED` (Kitex 12015).
    pub fn stream_timeout(mut self, timeout: Duration) -> CallOptions {
        self.stream_timeout = Some(timeout);
        self
    }

    /// Sets the recv timeout of this stream (Kitex `streamcall.WithRecvTimeoutConfig`).
    pub fn recv_timeout(mut self, config: TimeoutConfig) -> CallOptions {
        self.recv_timeout = Some(config);
        self
    }

    /// Sets which call this one joins for cascading cancel ([`Parent`]; `&ctx` of a
    /// handler joins that handler's call from anywhere, a task it spawned included).
    pub fn parent(mut self, parent: impl Into<Parent>) -> CallOptions {
        self.parent = parent.into();
        self
    }

    /// Joins no call: this one lives on when the handler making it ends.
    pub fn detached(self) -> CallOptions {
        self.parent(Parent::Detached)
    }

    /// Adds a typed value to the call's [`CallContext::extensions`].
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> CallOptions {
        self.extensions.insert(value);
        self
    }

    /// Adds a request metadata entry.
    pub fn metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<crate::MetadataValue>,
    ) -> Self {
        self.metadata.append(key, value);
        self
    }
}
