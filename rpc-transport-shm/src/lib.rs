//! Shared-memory transport between processes on one Linux host: TTHeader Streaming frames in
//! memfd regions (one ring and one arena per direction), a Unix socket for the handshake,
//! peer-death detection and messages too large for the arena.

pub mod arena;
pub mod mem;
pub mod ring;
