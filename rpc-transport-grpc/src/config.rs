//! Settings of the gRPC server and client, with named defaults and their reasons.

use std::time::Duration;

#[cfg(feature = "tls")]
use rpc_core::net::TlsClientConfig;
use rpc_core::net::{ConnectOptions, Connector, TcpKeepalive};

use crate::compression::Compression;

/// Largest message accepted (after decompression): 4 MiB, gRPC's default everywhere, so a
/// peer that works with grpc-go or C-core works with us. Larger ones end the stream with
/// `RESOURCE_EXHAUSTED` before their body is buffered.
pub const DEFAULT_MAX_RECV_MESSAGE: usize = 4 * 1024 * 1024;

/// The HTTP/2 stream receive window: what one stream may have in flight to us before its
/// sender waits for us to read. 1 MiB keeps a 100 Mbit/s stream busy at 80 ms round trip
/// (bandwidth × delay), and is what one non-reading stream can make us hold (plus one
/// partly assembled message). Receive capacity is released only as the application reads
/// messages.
pub const DEFAULT_STREAM_WINDOW: u32 = 1024 * 1024;

/// The HTTP/2 connection receive window: the sum all streams of one connection may have in
/// flight. 8 streams' worth, so up to 7 non-reading streams cannot stop the others.
pub const DEFAULT_CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// The largest HTTP/2 frame we accept: 64 KiB, fewer frame headers for large messages than
/// the 16 KiB minimum, still a small read unit.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 64 * 1024;

/// Bytes h2 may buffer per stream for sending beyond the peer's window (h2's
/// `max_send_buffer_size`); our senders also wait for window before each message, so this
/// only bounds one message spilling over.
pub const DEFAULT_MAX_SEND_BUFFER: usize = 1024 * 1024;

/// The largest header list (all headers of one HEADERS block, decoded) we accept: 16 KiB,
/// C-core's hard limit; gRPC implementations send well under it. Bigger ones are refused
/// before they are kept.
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Frames a client connection may send per [`DEFAULT_CONTROL_WINDOW`] that make the server
/// work without being part of a call or paid for by a response (SETTINGS, PINGs when nothing
/// was sent since the last, WINDOW_UPDATEs beyond two per DATA frame sent, empty DATA,
/// PRIORITY, CONTINUATION, unknown types; see the crate docs, "Flood defence"). One more
/// and the connection gets `GOAWAY(ENHANCE_YOUR_CALM)` and is closed. Real clients send a
/// handful per connection (their SETTINGS, a WINDOW_UPDATE or two before any response) and
/// then keepalive PINGs, at most one per 10 s by default in grpc-go and C-core and one per
/// interval in ours: 1,000 per 10 s (100 a second) is 1,000 times a 10 s keepalive and
/// still leaves a flood connection closed after 1,000 frames instead of tens of thousands.
pub const DEFAULT_MAX_CONTROL_FRAMES: u32 = 1000;

/// The window [`DEFAULT_MAX_CONTROL_FRAMES`] is counted over: 10 s, long enough that a burst
/// (a client starting up, a reconnect) is absorbed, short enough that a slow steady sender
/// (keepalive PINGs on an idle connection for days) never adds up to the limit.
pub const DEFAULT_CONTROL_WINDOW: Duration = Duration::from_secs(10);

/// How long a connection closed for a flood is given to write its `GOAWAY` (while what it
/// sends is read and thrown away, so the close is not a reset that would discard the
/// `GOAWAY`): a client that reads gets it within a round trip; one that does not is cut
/// off after this.
pub const CALM_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 connections per endpoint in the client. One h2 connection serialises every stream
/// on one lock and one socket writer; on a 2-core machine 2–4 connections saturate both
/// cores, and more only costs handshakes and memory. 4 matches the TTHeader client's pool.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// How long a client waits for a TCP or Unix connect plus the HTTP/2 handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the client waits for the answer to a keepalive PING before it closes the
/// connection (gRPC's default `keepalive_timeout`).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The `user-agent` prefix we send (gRPC's `grpc-<lang>/<version>` form).
pub const USER_AGENT: &str = concat!("grpc-rust-rpc/", env!("CARGO_PKG_VERSION"));

/// Settings of [`GrpcProtocol`](crate::GrpcProtocol). The per-server limits (streams per
/// connection, connections, idle timeout, preface/handshake timeout) come from the server's
/// `rpc_core::ServerLimits`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GrpcServerConfig {
    /// See [`DEFAULT_MAX_RECV_MESSAGE`].
    pub max_recv_message: usize,
    /// Largest message we send; bigger responses end the stream with `RESOURCE_EXHAUSTED`.
    pub max_send_message: usize,
    /// See [`DEFAULT_STREAM_WINDOW`].
    pub stream_window: u32,
    /// See [`DEFAULT_CONNECTION_WINDOW`].
    pub connection_window: u32,
    /// See [`DEFAULT_MAX_FRAME_SIZE`].
    pub max_frame_size: u32,
    /// See [`DEFAULT_MAX_SEND_BUFFER`].
    pub max_send_buffer: usize,
    /// See [`DEFAULT_MAX_HEADER_LIST_SIZE`].
    pub max_header_list_size: u32,
    /// Compression of responses unless the handler chooses otherwise (see
    /// [`MessageCompression`](crate::MessageCompression)); used only when the client accepts it.
    pub send_compression: Compression,
    /// See [`DEFAULT_MAX_CONTROL_FRAMES`].
    pub max_control_frames: u32,
    /// See [`DEFAULT_CONTROL_WINDOW`].
    pub control_window: Duration,
}

impl Default for GrpcServerConfig {
    fn default() -> Self {
        GrpcServerConfig {
            max_recv_message: DEFAULT_MAX_RECV_MESSAGE,
            max_send_message: usize::MAX,
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_send_buffer: DEFAULT_MAX_SEND_BUFFER,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            send_compression: Compression::Identity,
            max_control_frames: DEFAULT_MAX_CONTROL_FRAMES,
            control_window: DEFAULT_CONTROL_WINDOW,
        }
    }
}

impl GrpcServerConfig {
    /// Sets the flood limit: at most `frames` control frames per `window` (see
    /// [`DEFAULT_MAX_CONTROL_FRAMES`]).
    pub fn control_frames(mut self, frames: u32, window: Duration) -> Self {
        self.max_control_frames = frames;
        self.control_window = window;
        self
    }

    /// Sets [`GrpcServerConfig::max_recv_message`].
    pub fn max_recv_message(mut self, bytes: usize) -> Self {
        self.max_recv_message = bytes;
        self
    }

    /// Sets [`GrpcServerConfig::max_send_message`].
    pub fn max_send_message(mut self, bytes: usize) -> Self {
        self.max_send_message = bytes;
        self
    }

    /// Sets the stream and connection receive windows.
    pub fn windows(mut self, stream: u32, connection: u32) -> Self {
        self.stream_window = stream;
        self.connection_window = connection.max(stream);
        self
    }

    /// Sets [`GrpcServerConfig::max_header_list_size`].
    pub fn max_header_list_size(mut self, bytes: u32) -> Self {
        self.max_header_list_size = bytes;
        self
    }

    /// Sets [`GrpcServerConfig::send_compression`].
    pub fn send_compression(mut self, c: Compression) -> Self {
        self.send_compression = c;
        self
    }
}

/// Settings of [`GrpcClient`](crate::GrpcClient).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GrpcClientConfig {
    /// See [`DEFAULT_CONNECTIONS`].
    pub connections: usize,
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`DEFAULT_MAX_RECV_MESSAGE`].
    pub max_recv_message: usize,
    /// Largest message we send; bigger requests fail with `RESOURCE_EXHAUSTED`.
    pub max_send_message: usize,
    /// See [`DEFAULT_STREAM_WINDOW`].
    pub stream_window: u32,
    /// See [`DEFAULT_CONNECTION_WINDOW`].
    pub connection_window: u32,
    /// See [`DEFAULT_MAX_FRAME_SIZE`].
    pub max_frame_size: u32,
    /// See [`DEFAULT_MAX_SEND_BUFFER`].
    pub max_send_buffer: usize,
    /// See [`DEFAULT_MAX_HEADER_LIST_SIZE`].
    pub max_header_list_size: u32,
    /// Interval of keepalive PINGs on each connection; `None` (the default, as in every gRPC
    /// implementation) sends none. gRPC servers by default answer pings more often than every
    /// 5 minutes without calls in flight with `GOAWAY(ENHANCE_YOUR_CALM)`, so set this only
    /// for servers that permit it (ours always do).
    pub keepalive_interval: Option<Duration>,
    /// See [`DEFAULT_KEEPALIVE_TIMEOUT`].
    pub keepalive_timeout: Duration,
    /// Compression of requests unless the call's extensions say otherwise.
    pub send_compression: Compression,
    /// Sent before our own `user-agent` ([`USER_AGENT`]), as gRPC's
    /// `grpc.primary_user_agent` does.
    pub user_agent: Option<String>,
    /// TLS, if the server serves it (off by default). Set it with
    /// [`GrpcClientConfig::tls`], which also asks for ALPN `h2`. (Cargo feature `tls`, on by
    /// default.)
    #[cfg(feature = "tls")]
    pub tls: Option<TlsClientConfig>,
    /// TCP keepalive on each connection (on by default, [`TcpKeepalive::default`]); `None`
    /// turns it off.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Dials connections instead of TCP / Unix sockets (`None`, the default), e.g.
    /// `rpc_transport_shm::stream::connector()` for HTTP/2 over shared memory at `shm://`
    /// addresses. See `rpc_core::net::ConnectOptions::connector`.
    pub connector: Option<Connector>,
}

impl Default for GrpcClientConfig {
    fn default() -> Self {
        GrpcClientConfig {
            connections: DEFAULT_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_recv_message: DEFAULT_MAX_RECV_MESSAGE,
            max_send_message: usize::MAX,
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_send_buffer: DEFAULT_MAX_SEND_BUFFER,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            keepalive_interval: None,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            send_compression: Compression::Identity,
            user_agent: None,
            #[cfg(feature = "tls")]
            tls: None,
            tcp_keepalive: Some(TcpKeepalive::default()),
            connector: None,
        }
    }
}

impl GrpcClientConfig {
    /// Sets [`GrpcClientConfig::connections`] (at least 1).
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n.max(1);
        self
    }

    /// Sets [`GrpcClientConfig::connect_timeout`].
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Sets [`GrpcClientConfig::max_recv_message`].
    pub fn max_recv_message(mut self, bytes: usize) -> Self {
        self.max_recv_message = bytes;
        self
    }

    /// Sets [`GrpcClientConfig::max_send_message`].
    pub fn max_send_message(mut self, bytes: usize) -> Self {
        self.max_send_message = bytes;
        self
    }

    /// Sets the stream and connection receive windows.
    pub fn windows(mut self, stream: u32, connection: u32) -> Self {
        self.stream_window = stream;
        self.connection_window = connection.max(stream);
        self
    }

    /// Sends a PING every `interval` and closes the connection when its answer takes longer
    /// than `timeout`.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = Some(interval);
        self.keepalive_timeout = timeout;
        self
    }

    /// Sets [`GrpcClientConfig::send_compression`].
    pub fn send_compression(mut self, c: Compression) -> Self {
        self.send_compression = c;
        self
    }

    /// Sets [`GrpcClientConfig::user_agent`].
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = Some(ua.into());
        self
    }

    /// Connects over TLS with `tls`, asking for ALPN `h2` (what gRPC servers expect; ours
    /// serve gRPC and TTHeader on one TLS port either way). (Cargo feature `tls`, on by default.)
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: TlsClientConfig) -> Self {
        self.tls = Some(tls.alpn(&[b"h2"]));
        self
    }

    /// Sets [`GrpcClientConfig::tcp_keepalive`] (`None`: off).
    pub fn tcp_keepalive(mut self, keepalive: Option<TcpKeepalive>) -> Self {
        self.tcp_keepalive = keepalive;
        self
    }

    /// Sets [`GrpcClientConfig::connector`].
    pub fn connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }

    /// How connections are made: [`GrpcClientConfig::connect_timeout`],
    /// [`GrpcClientConfig::tcp_keepalive`] and [`GrpcClientConfig::tls`], for
    /// `rpc_core::net::Io::connect_with`.
    pub fn connect_options(&self) -> ConnectOptions {
        let options = ConnectOptions::new()
            .timeout(self.connect_timeout)
            .keepalive(self.tcp_keepalive)
            .connector(self.connector.clone());
        #[cfg(feature = "tls")]
        let options = options.tls(self.tls.clone());
        options
    }

    /// Whether connections are made over TLS (the request URIs' scheme: `https` or `http`).
    pub(crate) fn uses_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}
