//! Where the interop cases meet gRPC's per-message compression
//! ([`rpc_transport_grpc::MessageCompression`]): a client compresses its requests (per call or
//! per message) and sees whether responses arrived compressed; a server handler learns whether
//! a request arrived compressed and chooses compression of its responses per message.
//!
//! Transports without compression (TTHeader) put no handle in a call: a handler then sees
//! every request as uncompressed and its choices are ignored, so the compression cases fail
//! over them, as they should.
//!
//! A client call takes its handle from its `CallOptions` extensions ([`call_with`]).

use rpc_core::{CallOptions, ServerContext};
pub use rpc_transport_grpc::{Compression, MessageCompression};

/// Whether the request message the handler received last arrived compressed. `false` when the
/// transport has no compression.
pub fn request_was_compressed(ctx: &ServerContext) -> bool {
    ctx.extension::<MessageCompression>()
        .is_some_and(|c| c.last_received_compressed())
}

/// Asks the transport to compress (or not) the response messages the handler sends from now
/// on. A no-op on transports without compression.
pub fn compress_responses(ctx: &ServerContext, on: bool) {
    if let Some(c) = ctx.extension::<MessageCompression>() {
        c.set_send(if on {
            Compression::Gzip
        } else {
            Compression::Identity
        });
    }
}

/// Call options whose call sends its messages with `send` (changeable between messages through
/// the returned handle, which also records whether responses arrived compressed).
pub fn call_with(send: Compression) -> (CallOptions, MessageCompression) {
    let handle = MessageCompression::new(send);
    (CallOptions::new().extension(handle.clone()), handle)
}
