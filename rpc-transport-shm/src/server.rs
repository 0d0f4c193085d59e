//! The server side: a `rpc_core::serve::Protocol` for `shm://PATH` listeners.

use std::sync::Arc;

use rpc_core::net::IoStream;
use rpc_core::serve::{Accepted, Detect, Protocol};
use rpc_core::transport::BoxFuture;
use rpc_core::Status;
use rpc_transport_ttheader::proto::Role;
use rpc_transport_ttheader::session::Limits;

use crate::setup::{self, RegionBudget, Sizes, DEFAULT_MAX_REGION_BYTES, HANDSHAKE_TIMEOUT};
use crate::stats::ShmStats;

/// Serves a `rpc_core::Server` over shared memory: add it to a
/// [`Listener`](rpc_core::serve::Listener) bound to `shm:///path` (a Unix socket the clients
/// connect to for the handshake). The server's limits apply as over TTHeader (streams per
/// session, the server-wide byte budget, graceful drain); each session's regions are charged
/// to the byte budget too (see the crate docs, "Memory bound").
#[derive(Debug, Clone)]
pub struct ShmProtocol {
    max: Sizes,
    limits: Limits,
    stats: Arc<ShmStats>,
    budget: Arc<RegionBudget>,
}

impl Default for ShmProtocol {
    fn default() -> Self {
        ShmProtocol {
            max: Sizes::default(),
            limits: Limits::default(),
            stats: Arc::default(),
            budget: RegionBudget::new(DEFAULT_MAX_REGION_BYTES),
        }
    }
}

impl ShmProtocol {
    /// Shared memory committed to sessions at most, over all of them (default
    /// [`DEFAULT_MAX_REGION_BYTES`]); clients beyond it are refused at the handshake.
    pub fn max_region_bytes(mut self, bytes: usize) -> Self {
        self.budget = RegionBudget::new(bytes);
        self
    }

    /// Region bytes committed to live sessions now.
    pub fn region_bytes(&self) -> usize {
        self.budget.used()
    }

    /// The largest regions a client may ask for (default [`Sizes::default`]); smaller
    /// requests are granted as asked.
    pub fn max_sizes(mut self, max: Sizes) -> Self {
        self.max = max;
        self
    }

    /// Session limits (frame size, receive buffers).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Counters of every session this protocol served.
    pub fn stats(&self) -> &Arc<ShmStats> {
        &self.stats
    }
}

impl Protocol for ShmProtocol {
    fn name(&self) -> &'static str {
        "shm"
    }

    fn detect(&self, prefix: &[u8]) -> Detect {
        match setup::detect(prefix) {
            Some(true) => Detect::Yes,
            Some(false) => Detect::No,
            None => Detect::NeedMore,
        }
    }

    fn serve(&self, conn: Accepted) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move {
            let Accepted {
                io,
                prefix,
                peer,
                server,
                shutdown,
                ..
            } = conn;
            let (stream, _guard) = io.into_parts();
            let IoStream::Unix(stream) = stream else {
                tracing::debug!("shm handshake on a socket that is not a Unix socket; closed");
                return;
            };
            let peer = match peer {
                rpc_core::Peer::Unix(Some(p)) => rpc_core::Peer::Shm(p),
                p => p,
            };
            let est = match tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                setup::server(
                    stream,
                    &prefix,
                    this.max,
                    &this.budget,
                    Some(rpc_core::transport::ServerExt::byte_budget(&server)),
                ),
            )
            .await
            {
                Ok(Ok(e)) => e,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "shm handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let (est, _held) = est;
            let running = match setup::start(
                est,
                Role::Server,
                this.limits.clone(),
                Some(peer),
                &this.stats,
                Some(server),
            ) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%e, "shm session setup failed");
                    return;
                }
            };
            let session = running.session.clone();
            let link = running.link().clone();
            let goaway = running.goaway;
            let _hook = shutdown.on_drain({
                let s = Arc::downgrade(&session);
                let l = Arc::downgrade(&link);
                move || {
                    if goaway {
                        // The client stops opening streams here and closes the session once
                        // its streams ended (see `crate::goaway`).
                        if let Some(l) = l.upgrade() {
                            l.send_goaway();
                        }
                    } else if let Some(s) = s.upgrade() {
                        s.start_drain();
                    }
                }
            });
            tokio::select! {
                () = link.closed() => return,
                () = shutdown.draining() => {}
            }
            if goaway {
                // Every stream that still arrives is served: the client may have opened it
                // before the go-away reached it. The client closes the session when done.
                tokio::select! {
                    () = link.closed() => return,
                    () = shutdown.closed() => {}
                }
                session.start_drain();
            } else {
                session.start_drain();
                tokio::select! {
                    () = link.closed() => return,
                    () = session.drain() => {}
                    () = shutdown.closed() => {}
                }
            }
            // The last streams' trailers may still wait behind a full ring or arena: they go
            // out before the session closes (within the grace period).
            tokio::select! {
                () = link.flushed() => {}
                () = shutdown.closed() => {}
            }
            crate::link::lost(&session, &link, Status::unavailable("server shut down"));
        })
    }
}
