//! TTHeader (Kitex-compatible) framing and TTHeader Streaming over TCP and Unix sockets.
//!
//! Status: placeholder; the transport lands with its own issue.
