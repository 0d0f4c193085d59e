//! A streaming proxy: relays every call it receives, in every mode, to one backend, on payload
//! bytes (`rpc_core::generic`), without the IDL. What `echo-server --forward URL` serves.
//!
//! For each call, inside the handler's task and with the ordinary client API (so call-scoped
//! context such as the trace flows downstream as for any call a handler makes):
//!
//! * **Request**: the same service, method and payload kind (protobuf or thrift, as the
//!   transport reported it), the request metadata (minus `user-agent`, which each hop's
//!   client sets) and the deadline: the time remaining when the call reached the proxy.
//! * **Messages** go both ways untouched, as they arrive; the client's half-close becomes
//!   the backend call's `close_send`.
//! * **Response**: the backend's header metadata is the proxy's header (held until it arrives,
//!   so it is exactly the backend's), its messages, then its trailer metadata and final status
//!   (an error status with its message, details, trailer metadata and transport code).
//! * **Cancel**: a client that cancels, or a deadline that passes, cancels the backend call at
//!   once; a backend that fails ends the client's call with its status.
//!
//! Unary calls that arrive over TTHeader unary are relayed as unary (so a TTHeader
//! backend gets a Thrift CALL); every other call is relayed as a bidi stream, which is exact
//! for every mode since no wire tells the mode (see `rpc_core::generic`).

use bytes::Bytes;
use rpc_core::generic::{GenericHandler, RawCodec};
use rpc_core::limits::ServerLimits;
use rpc_core::{BidiStreamingServer, CallOptions, Client, Server, ServerContext, Status};

/// Request metadata the proxy does not relay: each hop's client sends its own.
const HOP_BY_HOP: &[&str] = &["user-agent"];

/// The relay: an unknown-method handler that makes each call again on `client`.
#[derive(Debug, Clone)]
pub struct Forward {
    client: Client,
}

impl Forward {
    /// Relays to whatever `client` reaches.
    pub fn new(client: Client) -> Forward {
        Forward { client }
    }
}

/// A server that hosts nothing and relays every call with [`Forward`].
pub fn server(client: Client, limits: ServerLimits) -> Server {
    Server::builder()
        .limits(limits)
        .unknown_method_handler(Forward::new(client))
        .build()
}

/// The backend call's options: the request metadata and the time left.
fn options(ctx: &ServerContext) -> CallOptions {
    let mut opts = CallOptions::new();
    for (k, v) in ctx.metadata().iter() {
        if !HOP_BY_HOP.contains(&k) {
            opts.metadata.append(k, v.clone());
        }
    }
    if let Some(left) = ctx.call().timeout() {
        opts = opts.timeout(left);
    }
    opts
}

impl GenericHandler for Forward {
    async fn unary(&self, ctx: ServerContext, request: Bytes) -> Result<Bytes, Status> {
        let call =
            self.client
                .unary::<RawCodec, Bytes, Bytes>(ctx.method(), request, options(&ctx));
        // A cancelled client drops the backend call, which resets it.
        let res = tokio::select! {
            res = call => res?,
            status = ctx.cancelled() => return Err(status),
        };
        let (header, message, trailer) = res.into_parts();
        for (k, v) in header.iter() {
            ctx.set_header(k, v.clone())?;
        }
        // TTHeader unary has one map for both (its client reports it as header and as
        // trailer): an entry already in the header is not repeated in the trailer.
        for (k, v) in trailer.iter() {
            if !header.get_all(k).any(|h| h == v) {
                ctx.set_trailer(k, v.clone());
            }
        }
        Ok(message)
    }

    async fn bidi(
        &self,
        ctx: ServerContext,
        stream: BidiStreamingServer<Bytes, Bytes>,
    ) -> Result<(), Status> {
        // The header is the backend's: it goes out when that arrives (or with the end).
        ctx.hold_header();
        let call = tokio::select! {
            call = self.client.bidi::<RawCodec, Bytes, Bytes>(ctx.method(), options(&ctx)) => call?,
            status = ctx.cancelled() => return Err(status),
        };
        let (mut down_tx, mut down_rx) = call.into_split();
        let (mut up_tx, mut up_rx) = stream.into_split();
        let requests = async move {
            loop {
                match up_rx.recv().await {
                    Ok(Some(m)) => {
                        if down_tx.send(m).await.is_err() {
                            // The backend call ended: its outcome comes through `responses`.
                            return Ok(());
                        }
                    }
                    Ok(None) => return down_tx.close_send(),
                    Err(status) => {
                        // Client cancel, deadline, lost connection: the backend call too.
                        down_tx.cancel();
                        return Err(status);
                    }
                }
            }
        };
        let responses = async {
            match down_rx.header().await {
                Ok(header) => {
                    for (k, v) in header.iter() {
                        ctx.set_header(k, v.clone())?;
                    }
                    ctx.send_header()?;
                }
                // Trailers-only: the status carries the trailer metadata.
                Err(status) => return Err(status),
            }
            while let Some(m) = down_rx.recv().await? {
                up_tx.send(m).await?;
            }
            for (k, v) in down_rx.trailer().unwrap_or_default().iter() {
                ctx.set_trailer(k, v.clone());
            }
            Ok(())
        };
        tokio::pin!(requests, responses);
        let mut requests_done = false;
        loop {
            tokio::select! {
                // The call ends with the backend's end (its messages are all relayed then).
                r = &mut responses => return r,
                r = &mut requests, if !requests_done => {
                    r?;
                    requests_done = true;
                }
                status = ctx.cancelled() => return Err(status),
            }
        }
    }
}
