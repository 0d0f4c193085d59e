//! The socket types: rpc-core's, so a connection accepted by `rpc_core::serve::Listener` and
//! one made by the client are the same kind of value.

pub(crate) use rpc_core::net::{Io, ReadHalf, WriteHalf};
