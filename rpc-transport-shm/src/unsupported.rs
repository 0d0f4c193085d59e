//! Non-Linux stand-ins: the crate compiles, and using it reports "unsupported platform".

use std::sync::Arc;

use rpc_core::serve::{Accepted, Detect, Protocol};
use rpc_core::transport::{BoxFuture, ClientStreamRaw, ClientTransport, Connect};
use rpc_core::{CallContext, Status};

fn unsupported() -> Status {
    Status::unimplemented(
        "the shared-memory transport needs Linux (memfd, eventfd): unsupported platform",
    )
}

/// A shared-memory client: every call fails on this platform.
#[derive(Debug, Clone, Default)]
pub struct ShmClient;

impl ShmClient {
    /// A client for the control socket at `path` (fails on use on this platform).
    pub fn new(_path: impl Into<std::path::PathBuf>) -> ShmClient {
        ShmClient
    }
}

impl ClientTransport for ShmClient {
    fn open(
        &self,
        _: &CallContext,
    ) -> BoxFuture<'static, Result<Arc<dyn ClientStreamRaw>, Status>> {
        Box::pin(std::future::ready(Err(unsupported())))
    }
}

impl Connect for ShmClient {
    fn connect(_: &str) -> Result<Self, Status> {
        Err(unsupported())
    }
}

/// The shared-memory server protocol: claims nothing on this platform.
#[derive(Debug, Clone, Default)]
pub struct ShmProtocol;

impl ShmProtocol {
    /// Session limits (ignored on this platform).
    pub fn limits(self, _limits: rpc_transport_ttheader::session::Limits) -> Self {
        self
    }
}

impl Protocol for ShmProtocol {
    fn name(&self) -> &'static str {
        "shm"
    }
    fn detect(&self, _: &[u8]) -> Detect {
        Detect::No
    }
    fn serve(&self, _: Accepted) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
