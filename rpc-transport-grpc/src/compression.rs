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
    /// Zstandard (RFC 8878): better ratios than gzip at a fraction of its CPU; tonic, grpc-go
    /// and volo speak it. Needs the `zstd` feature (on by default).
    #[cfg(feature = "zstd")]
    Zstd,
}

impl Compression {
    /// The `grpc-encoding` name.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Identity => "identity",
            Compression::Gzip => "gzip",
            #[cfg(feature = "zstd")]
            Compression::Zstd => "zstd",
        }
    }

    /// The algorithm a `grpc-encoding` name stands for (ASCII case ignored), `None` for a name
    /// this build does not support.
    pub fn from_name(name: &str) -> Option<Compression> {
        SUPPORTED
            .iter()
            .copied()
            .chain([Compression::Identity])
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    fn to_u8(self) -> u8 {
        match self {
            Compression::Identity => 0,
            Compression::Gzip => 1,
            #[cfg(feature = "zstd")]
            Compression::Zstd => 2,
        }
    }

    fn from_u8(v: u8) -> Compression {
        match v {
            1 => Compression::Gzip,
            #[cfg(feature = "zstd")]
            2 => Compression::Zstd,
            _ => Compression::Identity,
        }
    }

    /// This algorithm's bit in an [`AcceptedEncodings`] set.
    fn bit(self) -> u8 {
        1 << self.to_u8()
    }

    /// `Some(self)` unless identity.
    pub(crate) fn active(self) -> Option<Compression> {
        (self != Compression::Identity).then_some(self)
    }
}

/// Every algorithm this build compresses and decompresses, in the order we prefer them when
/// the peer accepts several and the application did not choose.
#[cfg(feature = "zstd")]
pub const SUPPORTED: &[Compression] = &[Compression::Gzip, Compression::Zstd];
/// Every algorithm this build compresses and decompresses.
#[cfg(not(feature = "zstd"))]
pub const SUPPORTED: &[Compression] = &[Compression::Gzip];

/// The `grpc-accept-encoding` we send: every algorithm we can decode ([`SUPPORTED`]).
#[cfg(feature = "zstd")]
pub(crate) const ACCEPT_ENCODING: &str = "gzip,zstd";
/// The `grpc-accept-encoding` we send: every algorithm we can decode ([`SUPPORTED`]).
#[cfg(not(feature = "zstd"))]
pub(crate) const ACCEPT_ENCODING: &str = "gzip";

/// The algorithms a peer's `grpc-accept-encoding` names (of those we support), as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AcceptedEncodings(u8);

impl AcceptedEncodings {
    /// The supported algorithms named in a `grpc-accept-encoding` list (names compared
    /// ignoring ASCII case and blanks; unknown names skipped).
    pub(crate) fn parse(list: &[u8]) -> AcceptedEncodings {
        let mut bits = 0;
        for name in list.split(|&b| b == b',') {
            let name = name.trim_ascii();
            if let Some(c) = SUPPORTED
                .iter()
                .find(|c| c.name().as_bytes().eq_ignore_ascii_case(name))
            {
                bits |= c.bit();
            }
        }
        AcceptedEncodings(bits)
    }

    /// Whether `c` is in the set (identity always is).
    pub(crate) fn contains(self, c: Compression) -> bool {
        c == Compression::Identity || self.0 & c.bit() != 0
    }

    /// The `grpc-encoding` to announce in a response, given what the application wants its
    /// messages sent with: `want` when the peer accepts it; otherwise the first of
    /// [`SUPPORTED`] the peer accepts (messages the application wants compressed then use that
    /// one, and the handler may switch compression on later); `None` when the peer accepts
    /// none.
    pub(crate) fn response_encoding(self, want: Compression) -> Option<Compression> {
        if want != Compression::Identity && self.contains(want) {
            return Some(want);
        }
        SUPPORTED.iter().copied().find(|c| self.contains(*c))
    }
}

const FLAG_ARRIVED: u8 = 1;
const FLAG_LAST_COMPRESSED: u8 = 2;

#[derive(Debug, Default)]
struct State {
    send: AtomicU8,
    flags: AtomicU8,
    request_encoding: AtomicU8,
    /// The peer's [`AcceptedEncodings`] set.
    peer_accepts: AtomicU8,
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
/// gRPC fixes one algorithm per stream and direction (`grpc-encoding`, in the header); each
/// message then says by its flag whether it is compressed with it, so one stream may mix
/// compressed and plain messages, as the spec allows. The response header announces the
/// handler's choice at the time it goes out (the configured
/// `GrpcServerConfig::send_compression` if the handler has not chosen) when the client's
/// `grpc-accept-encoding` names it, and otherwise the first algorithm of [`SUPPORTED`] the
/// client accepts, so the handler can still switch compression on for later messages. From
/// then on, a choice other than identity compresses with the announced algorithm (a handler
/// that picks zstd for a client accepting only gzip sends gzip); a client that accepts no
/// algorithm gets plain messages whatever the choice. [`MessageCompression::peer_accepts`]
/// says what the client accepts.
///
/// **On the client** put a [`Compression`] into the call context's extensions for the whole
/// call (`ctx.extensions_mut().insert(Compression::Zstd)`, from an interceptor or layer, or
/// `CallOptions::new().extension(Compression::Zstd)`), or a `MessageCompression` you keep a
/// clone of to change it between messages. The request header announces the algorithm either
/// says at open (a handle that says identity then announces gzip, so it can switch on later);
/// the client's `GrpcClientConfig::send_compression` is the default. A server that does not
/// support the algorithm answers `UNIMPLEMENTED`. Once the response header arrived, a handle
/// also tells [`MessageCompression::peer_encoding`] (the response's `grpc-encoding`) and
/// [`MessageCompression::peer_accepts`] (the server's `grpc-accept-encoding`).
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
        AcceptedEncodings(self.0.peer_accepts.load(Ordering::Acquire)).contains(c)
    }

    pub(crate) fn record_received(&self, compressed: bool) {
        let set = FLAG_ARRIVED | if compressed { FLAG_LAST_COMPRESSED } else { 0 };
        self.0.flags.store(set, Ordering::Release);
    }

    pub(crate) fn set_peer(&self, encoding: Option<Compression>, accepts: AcceptedEncodings) {
        self.0
            .request_encoding
            .store(encoding.unwrap_or_default().to_u8(), Ordering::Release);
        self.0.peer_accepts.store(accepts.0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sets_and_the_response_encoding() {
        let none = AcceptedEncodings::parse(b"");
        assert!(none.contains(Compression::Identity));
        assert!(!none.contains(Compression::Gzip));
        assert_eq!(none.response_encoding(Compression::Gzip), None);
        let gzip = AcceptedEncodings::parse(b"identity, GZIP ,deflate");
        assert!(gzip.contains(Compression::Gzip));
        // What the handler wants when the client accepts it, else the first one it accepts.
        assert_eq!(
            gzip.response_encoding(Compression::Identity),
            Some(Compression::Gzip)
        );
        assert_eq!(
            gzip.response_encoding(Compression::Gzip),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_name("Gzip"), Some(Compression::Gzip));
        assert_eq!(
            Compression::from_name("identity"),
            Some(Compression::Identity)
        );
        assert_eq!(Compression::from_name("snappy"), None);
        #[cfg(feature = "zstd")]
        {
            assert!(!gzip.contains(Compression::Zstd));
            assert_eq!(
                gzip.response_encoding(Compression::Zstd),
                Some(Compression::Gzip)
            );
            let zstd = AcceptedEncodings::parse(b"zstd");
            assert_eq!(
                zstd.response_encoding(Compression::Identity),
                Some(Compression::Zstd)
            );
            assert_eq!(
                zstd.response_encoding(Compression::Gzip),
                Some(Compression::Zstd)
            );
            let both = AcceptedEncodings::parse(b"gzip,zstd");
            assert_eq!(
                both.response_encoding(Compression::Zstd),
                Some(Compression::Zstd)
            );
            assert_eq!(
                both.response_encoding(Compression::Identity),
                Some(Compression::Gzip)
            );
            assert_eq!(AcceptedEncodings::parse(ACCEPT_ENCODING.as_bytes()), both);
        }
        assert_eq!(
            AcceptedEncodings::parse(ACCEPT_ENCODING.as_bytes())
                .0
                .count_ones() as usize,
            SUPPORTED.len()
        );
    }

    #[test]
    fn the_handle_keeps_peer_and_arrival_apart() {
        let m = MessageCompression::new(Compression::Gzip);
        m.set_peer(Some(Compression::Gzip), AcceptedEncodings::parse(b"gzip"));
        m.record_received(true);
        assert!(m.last_received_compressed() && m.received_any());
        m.record_received(false);
        assert!(!m.last_received_compressed() && m.received_any());
        assert!(m.peer_accepts(Compression::Gzip));
        assert_eq!(m.peer_encoding(), Compression::Gzip);
    }
}
