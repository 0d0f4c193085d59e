//! gRPC over HTTP/2 (via `h2`): protobuf and thrift payloads over TCP and Unix sockets.
//!
//! Status: placeholder; the transport lands with its own issue.

#![forbid(unsafe_code)]
