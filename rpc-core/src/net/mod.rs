//! Addresses and sockets shared by every transport: [`Address`] (`tcp://`, `unix://`,
//! `shm://`) and [`Io`], a connected socket of any kind that a client connects with
//! [`Io::connect`] and a [`Listener`](crate::serve::Listener) hands to a protocol.

//!
//! TLS ([`tls`]) and TCP keepalive ([`TcpKeepalive`]) live here too, so every transport gets
//! them without code of its own: clients connect with [`Io::connect_with`] and
//! [`ConnectOptions`], servers with [`Listener::bind_tls`](crate::serve::Listener::bind_tls)
//! and [`ServerLimits::tcp_keepalive`](crate::ServerLimits::tcp_keepalive).

mod io;
#[cfg(feature = "tls")]
pub mod tls;

pub use crate::address::{Address, AddressError};
pub use crate::keepalive::{
    TcpKeepalive, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_RETRIES, DEFAULT_KEEPALIVE_TIME,
};
pub use io::{
    AsyncIo, CloseHandle, ConnectOptions, Connector, Io, IoGuard, IoStream, ReadHalf, WriteHalf,
    DEFAULT_CONNECT_TIMEOUT,
};
#[cfg(feature = "tls")]
pub use tls::{TlsClientConfig, TlsPeer, TlsServerConfig};
