//! TTHeader Streaming over a socket: a [`Session`] writing into a [`WriteQueue`], a writer task
//! sending what it queues and a reader task feeding it what the socket delivers (the
//! [`conn`](super::conn) scaffold). The streams, their bounds and their semantics are the
//! session's (see [`crate::session`]).

use std::sync::Arc;

use bytes::BytesMut;
use rpc_core::limits::ByteBudget;
use rpc_core::transport::ServerExt;
use rpc_core::{Peer, Server, Status};

use super::conn::{self, Connection, ReadTimeouts};
use super::io::Io;
use super::write::WriteQueue;
use crate::common::Lifecycle;
use crate::proto::Role;
use crate::session::{Limits, Session, Stats};

/// One ttstream connection over a socket.
pub(crate) type Conn = Session<WriteQueue>;

impl Session<WriteQueue> {
    /// Starts the reader and writer tasks of a connection.
    pub(crate) fn start(
        role: Role,
        io: Io,
        prefix: BytesMut,
        limits: Limits,
        peer: Option<Peer>,
        stats: &Arc<Stats>,
        server: Option<Server>,
    ) -> Arc<Conn> {
        let write = WriteQueue::for_conn(&limits, server.as_ref().map(ServerExt::byte_budget));
        let unix = matches!(io.stream(), rpc_core::net::IoStream::Unix(_));
        let conn = Session::new(role, write, limits, peer, stats, server);
        if role == Role::Server && unix {
            conn.linger_on_drain();
        }
        conn::start(&conn, io, prefix);
        conn
    }

    /// Closes the connection: every stream on it ends with `status`.
    pub(crate) fn fail(&self, status: Status) {
        self.on_lost(status);
    }
}

impl Connection for Session<WriteQueue> {
    fn write_queue(&self) -> &WriteQueue {
        self.sink()
    }

    fn life(&self) -> &Lifecycle {
        self.lifecycle()
    }

    fn parse(self: &Arc<Self>, buf: &mut BytesMut) -> Result<bool, Status> {
        self.on_bytes(buf)
    }

    fn read_timeouts(&self) -> ReadTimeouts {
        match self.server() {
            Some(server) => ReadTimeouts::server(server.limits()),
            None => ReadTimeouts::client(self.limits(), true),
        }
    }

    fn budget(&self) -> Option<&Arc<ByteBudget>> {
        Session::budget(self)
    }

    fn must_pause(&self, unparsed: usize) -> bool {
        Session::must_pause(self, unparsed)
    }

    fn within_reserve(&self, reader: usize) -> bool {
        Session::within_reserve(self, reader)
    }

    fn is_idle(&self) -> bool {
        Session::is_idle(self)
    }

    fn retire_idle(&self) -> bool {
        Session::retire_idle(self)
    }

    fn fail(&self, status: Status) {
        self.on_lost(status);
    }
}
