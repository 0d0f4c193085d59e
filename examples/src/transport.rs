//! The transports the demo and the contract tests run over: one row each.
//!
//! Today only the in-process transport exists; TTHeader over TCP/UDS and gRPC are added here
//! as variants whose [`Transport::connect`] starts a listener for the server and returns a
//! client connected to it.

use std::fmt;

use rpc_core::inproc::InProcTransport;
use rpc_core::{Client, Server, Status};

/// A way for the echo client to reach the echo server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// `rpc_core::inproc`: bounded in-memory queues, no sockets.
    InProc,
}

impl Transport {
    /// Every transport available, in the order the demo runs them.
    pub const ALL: &'static [Transport] = &[Transport::InProc];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Transport::InProc => "inproc",
        }
    }

    /// Serves `server` over this transport and returns a client connected to it.
    pub async fn connect(self, server: Server) -> Result<Client, Status> {
        match self {
            Transport::InProc => Ok(Client::new(InProcTransport::new(server))),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
