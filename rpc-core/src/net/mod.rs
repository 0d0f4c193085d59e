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

/// Makes `path` free for a new listening Unix socket: a socket file no process accepts on (a
/// server that exited without removing it) is removed, and nothing else is touched.
///
/// Refused with [`io::ErrorKind::AddrInUse`](std::io::ErrorKind::AddrInUse) when a server is
/// listening there (replacing its socket file would silently steal its new clients while it
/// keeps serving the old ones: hand a running server's sockets over with a takeover instead), or
/// when the file is not a socket. Whether a server listens is found by connecting without
/// blocking: a refused connection means a stale file; a connection that is accepted or queued
/// (or a full backlog) means a live server.
#[cfg(unix)]
pub fn free_unix_path(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {}
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::AddrInUse,
                format!(
                    "{}: a file that is not a socket is in the way",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let probe = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&socket2::SockAddr::unix(path)?) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => match std::fs::remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Ok(()) => Err(live_server(path)),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Err(live_server(path)),
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn live_server(path: &std::path::Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!(
            "{}: a server is listening there (stop it first, or take its sockets over)",
            path.display()
        ),
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::free_unix_path;
    use std::io::ErrorKind;

    fn temp_path(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("rpc-free-path-{tag}-{}.sock", std::process::id()))
    }

    #[test]
    fn a_missing_path_is_free() {
        let path = temp_path("missing");
        let _ = std::fs::remove_file(&path);
        free_unix_path(&path).expect("free");
    }

    #[test]
    fn a_stale_socket_file_is_removed() {
        let path = temp_path("stale");
        let _ = std::fs::remove_file(&path);
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists(), "a closed listener leaves its file behind");
        free_unix_path(&path).expect("free");
        assert!(!path.exists());
        std::os::unix::net::UnixListener::bind(&path).expect("bind again");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_live_server_keeps_its_socket() {
        let path = temp_path("live");
        let _ = std::fs::remove_file(&path);
        let live = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let err = free_unix_path(&path).expect_err("in use");
        assert_eq!(err.kind(), ErrorKind::AddrInUse);
        assert!(err.to_string().contains("a server is listening"), "{err}");
        assert!(path.exists());
        drop(live);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_left_alone() {
        let path = temp_path("file");
        std::fs::write(&path, b"x").expect("write");
        let err = free_unix_path(&path).expect_err("in the way");
        assert_eq!(err.kind(), ErrorKind::AddrInUse);
        assert!(path.exists());
        let _ = std::fs::remove_file(&path);
    }
}
