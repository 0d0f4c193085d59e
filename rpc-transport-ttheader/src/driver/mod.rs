//! The tokio driver: sockets, tasks and pools around the sans-IO [`crate::proto`] core.

pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod conn;
pub(crate) mod io;
pub(crate) mod reader;
pub(crate) mod server;
pub(crate) mod stream_conn;
pub(crate) mod unary;
pub(crate) mod write;
