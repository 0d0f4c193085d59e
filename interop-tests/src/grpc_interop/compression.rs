//! Where the interop cases meet gRPC's per-message compression
//! ([`rpc_transport_grpc::MessageCompression`]): a client compresses its requests (per call or
//! per message) and sees whether responses arrived compressed; a server handler learns whether
//! a request arrived compressed and chooses compression of its responses per message.
//!
//! Transports without compression (TTHeader) put no handle in a call: a handler then sees
//! every request as uncompressed and its choices are ignored, so the compression cases fail
//! over them, as they should.
//!
//! A client call takes its handle from the call context's extensions. `CallOptions` carries no
//! extensions, so the interop client hands a handle to the next call it opens through
//! [`NextCall`], which its interceptor moves into that call's context. The interop client
//! opens one call at a time, so "the next call" is unambiguous.

use std::sync::{Arc, Mutex, PoisonError};

use rpc_core::{CallContext, ServerContext, Status};
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

/// The compression handle the next call a client opens gets (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct NextCall(Arc<Mutex<Option<MessageCompression>>>);

impl NextCall {
    /// The next call sends its messages with `send` (changeable through the returned handle,
    /// which also reports whether responses arrived compressed).
    pub fn arm(&self, send: Compression) -> MessageCompression {
        let handle = MessageCompression::new(send);
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle.clone());
        handle
    }

    /// The client interceptor that moves an armed handle into the call it runs for.
    pub fn interceptor(&self) -> impl Fn(&mut CallContext) -> Result<(), Status> + Send + Sync {
        let slot = self.0.clone();
        move |ctx| {
            if let Some(h) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
                ctx.extensions_mut().insert(h);
            }
            Ok(())
        }
    }
}
