//! The transports the demo and the contract tests run over: one row each.
//!
//! [`Transport::connect`] serves the server over the transport (a listener on an ephemeral
//! port or a fresh socket path) and returns a client connected to it. The listener lives until
//! the runtime ends.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rpc_core::inproc::InProcTransport;
use rpc_core::serve::Listener;
use rpc_core::Address;
use rpc_core::{Client, ClientBuilder, Server, Status};
use rpc_transport_grpc::{GrpcClient, GrpcProtocol};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

/// A way for the echo client to reach the echo server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// `rpc_core::inproc`: bounded in-memory queues, no sockets.
    InProc,
    /// TTHeader over TCP: unary TTHeader for thrift unary, TTHeader Streaming otherwise.
    TtHeaderTcp,
    /// TTHeader over a Unix socket.
    TtHeaderUnix,
    /// gRPC over TCP (protobuf as `application/grpc`, thrift as `application/grpc+thrift`),
    /// served on the same listener as TTHeader.
    GrpcTcp,
    /// gRPC over a Unix socket.
    GrpcUnix,
    /// Shared memory (`rpc-transport-shm`, Linux): TTHeader Streaming frames in memfd rings.
    Shm,
}

impl Transport {
    /// Every transport available, in the order the demo runs them.
    pub const ALL: &'static [Transport] = &[
        Transport::InProc,
        Transport::TtHeaderTcp,
        Transport::TtHeaderUnix,
        Transport::GrpcTcp,
        Transport::GrpcUnix,
        #[cfg(target_os = "linux")]
        Transport::Shm,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Transport::InProc => "inproc",
            Transport::TtHeaderTcp => "ttheader/tcp",
            Transport::TtHeaderUnix => "ttheader/uds",
            Transport::GrpcTcp => "grpc/tcp",
            Transport::GrpcUnix => "grpc/uds",
            Transport::Shm => "shm",
        }
    }

    /// Serves `server` over this transport and returns a client connected to it.
    pub async fn connect(self, server: Server) -> Result<Client, Status> {
        Ok(self.connect_builder(server).await?.build())
    }

    /// As [`Transport::connect`], returning the client's builder (to add middleware,
    /// observers, ...).
    pub async fn connect_builder(self, server: Server) -> Result<ClientBuilder, Status> {
        let io = |e: std::io::Error| Status::unavailable(format!("listen: {e}"));
        match self {
            Transport::InProc => Ok(Client::builder(InProcTransport::new(server))),
            Transport::Shm => {
                let path = socket_path();
                let running = Listener::new(server)
                    .protocol(rpc_transport_shm::ShmProtocol::default())
                    .bind(Address::Shm(path.clone()))
                    .await
                    .map_err(io)?
                    .start();
                drop(running);
                Ok(Client::builder(rpc_transport_shm::ShmClient::new(
                    Address::Shm(path),
                )))
            }
            _ => {
                let addr = if matches!(self, Transport::TtHeaderTcp | Transport::GrpcTcp) {
                    Address::tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                } else {
                    Address::unix(socket_path())
                };
                // One listener serves both protocols, as `echo-server` does.
                let running = Listener::new(server)
                    .protocol(TtHeaderProtocol::default())
                    .protocol(GrpcProtocol::default())
                    .bind(addr)
                    .await
                    .map_err(io)?
                    .start();
                let bound = running.local_addrs().remove(0);
                Ok(match self {
                    Transport::GrpcTcp | Transport::GrpcUnix => {
                        Client::builder(GrpcClient::new(bound))
                    }
                    _ => Client::builder(TtHeaderClient::new(bound)),
                })
            }
        }
    }
}

/// A socket path unique to this process and call.
fn socket_path() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("rpc-echo-{}-{n}.sock", std::process::id()))
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
