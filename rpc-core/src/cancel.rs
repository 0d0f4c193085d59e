//! Cascading cancel and stream timeouts (Kitex StreamX's lifecycle control, v0.15.1–v0.16).
//!
//! # Cascading cancel
//!
//! A client call made while a handler runs joins the handler's call, the way its trace context
//! does ([`crate::observe`]): when that call ends — the client cancelled it, its deadline
//! passed, its connection was lost, or the handler returned — every stream the handler opened
//! as a client and has not finished is reset too, and so on down the chain. The reset carries
//! a [`Cancellation`]: who cancelled ([`CancelKind`]), the *cancel path* (the services the
//! cancel passed through, in order; Kitex's `ttscp`) and the Kitex code it travels with. Each
//! hop appends its own name to the path ([`ClientBuilder::from_service`], else the name of
//! the service whose handler made the call), so a handler three hops down reads
//! `[canceled path: A -> B] canceled by upstream: ...` in its
//! [`ServerContext::cancelled`](crate::ServerContext::cancelled) status.
//!
//! "Joined" is decided when the call opens: [`CallOptions::parent`] with [`Parent::Inherit`]
//! (the default) joins the handler polled on this thread right now (a handler and everything
//! it awaits; a task it spawns joins only inside [`ServerContext::scope`]),
//! [`Parent::Of`] joins the given call, [`Parent::Detached`] joins none.
//!
//! On the wire: ttstream sends a Rst frame whose exception has the Kitex code (12007 user
//! cancel, 12012 handler returned, 12014 recv timeout, 12015 stream timeout; a cascaded cancel
//! keeps the code of its origin, as Kitex does) and whose `ttscp` string key is the path; gRPC
//! sends `RST_STREAM(CANCEL)`, which carries an error code only, so a gRPC server sees a
//! cancel by upstream without a path (Kitex's gRPC carries none either); in-process the
//! status itself crosses.
//!
//! # Stream and recv timeouts
//!
//! Besides the deadline (sent to the server, which enforces it too), a client stream may have
//! a *stream timeout* ([`ClientBuilder::stream_timeout`], [`CallOptions::stream_timeout`]):
//! this client's own limit on the whole stream, not sent; when it passes the stream is reset
//! with `DEADLINE_EXCEEDED` ([`CancelKind::StreamTimeout`], Kitex 12015). A *recv timeout*
//! ([`TimeoutConfig`]) limits each `recv`: one that waits longer returns
//! [`Code::RecvDeadlineExceeded`] (Kitex 12014) and resets
//! the stream, unless [`TimeoutConfig::disable_cancel_remote`] is set — then the stream lives
//! on and a later `recv` may still get the message.
//!
//! ```
//! use std::time::Duration;
//! use rpc_core::{inproc::InProcTransport, CallOptions, Client, Server, TimeoutConfig};
//!
//! # let server = Server::builder().build();
//! let client = Client::builder(InProcTransport::new(server))
//!     .from_service("gateway") // appended to the cancel path of the streams it resets
//!     .stream_timeout(Duration::from_secs(30)) // whole stream, this client's own limit
//!     .recv_timeout(TimeoutConfig::new(Duration::from_secs(5))) // each recv
//!     .build();
//! // Per call: a recv timeout that keeps the stream alive, and a call that outlives the
//! // handler making it.
//! let opts = CallOptions::new()
//!     .recv_timeout(TimeoutConfig::new(Duration::from_millis(500)).disable_cancel_remote(true))
//!     .detached();
//! # let _ = (client, opts);
//! ```
//!
//! [`ClientBuilder::from_service`]: crate::ClientBuilder::from_service
//! [`ClientBuilder::stream_timeout`]: crate::ClientBuilder::stream_timeout
//! [`CallOptions::parent`]: crate::CallOptions::parent
//! [`CallOptions::stream_timeout`]: crate::CallOptions::stream_timeout
//! [`ServerContext::scope`]: crate::ServerContext::scope

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::status::{Code, Status};

pub use crate::status::{append_path, kitex_code, CancelKind, Cancellation};

/// The cancellation a stream made from a call gets when that call ends with `reason`, `name`
/// being this hop's name.
pub(crate) fn cascade_from(reason: &Status, name: &str) -> Status {
    let c = match reason.cancellation() {
        Some(c) if c.kind() == CancelKind::HandlerReturned => {
            Cancellation::new(CancelKind::HandlerReturned, name, c.kitex_code(), c.cause())
        }
        Some(c) => c.cascade(CancelKind::Upstream, name),
        None => {
            let code = match reason.code() {
                Code::Cancelled => kitex_code::USER_CANCEL,
                Code::DeadlineExceeded => kitex_code::STREAM_TIMEOUT,
                Code::Unavailable => kitex_code::CONNECTION_CLOSED,
                _ => kitex_code::INTERNAL_CANCEL,
            };
            Cancellation::new(CancelKind::Upstream, name, code, reason.message())
        }
    };
    c.into_status()
}

/// Per-`recv` timeout of a client stream (Kitex `streaming.TimeoutConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutConfig {
    /// How long one `recv` may wait.
    pub timeout: Duration,
    /// Keep the stream alive when a `recv` times out (only that `recv` fails; a later one may
    /// still get the message). Off by default: the stream is reset so the server and
    /// everything it called stop (Kitex: "to prevent stream leakage").
    pub disable_cancel_remote: bool,
}

impl TimeoutConfig {
    /// A recv timeout of `timeout` that resets the stream when it fires.
    pub fn new(timeout: Duration) -> TimeoutConfig {
        TimeoutConfig {
            timeout,
            disable_cancel_remote: false,
        }
    }

    /// Sets [`TimeoutConfig::disable_cancel_remote`].
    pub fn disable_cancel_remote(mut self, disable: bool) -> TimeoutConfig {
        self.disable_cancel_remote = disable;
        self
    }
}

/// Which call a client call joins for cascading cancel ([`CallOptions::parent`]).
///
/// [`CallOptions::parent`]: crate::CallOptions::parent
#[derive(Clone, Debug, Default)]
pub enum Parent {
    /// The handler being polled on this thread when the call opens, if any (the default).
    #[default]
    Inherit,
    /// No call: this one lives on when the handler's call ends.
    Detached,
    /// This server call, wherever the client call is made from (a spawned task): made from a
    /// [`ServerContext`](crate::ServerContext) with `Parent::from(&ctx)`.
    Of(CallHandle),
}

/// A server call as the parent of client calls ([`Parent::Of`]): `Parent::from(&ctx)`.
#[derive(Clone)]
pub struct CallHandle(pub(crate) Arc<dyn CallParent>);

impl fmt::Debug for CallHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CallHandle")
            .field(&self.0.service_name())
            .finish()
    }
}

/// A server call client calls can join.
pub(crate) trait CallParent: Send + Sync {
    /// Registers `child`; the reason to fail it with at once when the call already ended.
    fn adopt(&self, child: Weak<dyn CallChild>) -> Result<(), Status>;
    /// The reason the call ended, once it has.
    fn ended(&self) -> Option<Status>;
    /// The name this hop appends to the cancel path when nothing else names it.
    fn service_name(&self) -> &'static str;
}

/// A client call that ends with its parent.
pub(crate) trait CallChild: Send + Sync {
    /// The parent call ended with `reason`.
    fn parent_ended(&self, reason: &Status);
}

/// The children of one server call: live client streams it opened. Ended ones are pruned
/// whenever the list doubles, so it holds about as many entries as live streams (each of
/// which the transport bounds), never a history.
#[derive(Default)]
pub(crate) struct Children {
    list: Vec<Weak<dyn CallChild>>,
    /// Prune when the list reaches this length (doubles with the live count).
    prune_at: usize,
    ended: Option<Status>,
}

/// Initial prune threshold of a call's child list: calls that open a few streams never prune.
const CHILDREN_PRUNE_AT: usize = 8;

impl Children {
    /// Adds `child`, or returns the status the call ended with.
    pub(crate) fn adopt(&mut self, child: Weak<dyn CallChild>) -> Result<(), Status> {
        if let Some(s) = &self.ended {
            return Err(s.clone());
        }
        if self.list.len() >= self.prune_at.max(CHILDREN_PRUNE_AT) {
            self.list.retain(|w| w.strong_count() > 0);
            self.prune_at = (self.list.len() * 2).max(CHILDREN_PRUNE_AT);
        }
        self.list.push(child);
        Ok(())
    }

    /// The reason the call ended, once it has.
    pub(crate) fn ended(&self) -> Option<&Status> {
        self.ended.as_ref()
    }

    /// Whether any child was ever adopted and not yet ended.
    pub(crate) fn has_children(&self) -> bool {
        !self.list.is_empty()
    }

    /// Marks the call ended with `reason` (first call only) and returns the children to end.
    pub(crate) fn end(&mut self, reason: &Status) -> Vec<Weak<dyn CallChild>> {
        if self.ended.is_some() {
            return Vec::new();
        }
        self.ended = Some(reason.clone());
        std::mem::take(&mut self.list)
    }
}

/// Ends `children` with `reason` (outside any lock).
pub(crate) fn end_children(children: Vec<Weak<dyn CallChild>>, reason: &Status) {
    for c in children {
        if let Some(c) = c.upgrade() {
            c.parent_ended(reason);
        }
    }
}

thread_local! {
    static CURRENT: Cell<Option<Arc<dyn CallParent>>> = const { Cell::new(None) };
}

/// The server call whose handler is being polled on this thread, if any.
pub(crate) fn current() -> Option<Arc<dyn CallParent>> {
    CURRENT.with(|c| {
        let v = c.take();
        let r = v.clone();
        c.set(v);
        r
    })
}

pin_project_lite::pin_project! {
    /// A future polled with a server call as the current parent of client calls.
    pub(crate) struct Scoped<F> {
        parent: Option<Arc<dyn CallParent>>,
        #[pin]
        fut: F,
    }
}

impl<F> Scoped<F> {
    pub(crate) fn new(parent: Arc<dyn CallParent>, fut: F) -> Scoped<F> {
        Scoped {
            parent: Some(parent),
            fut,
        }
    }
}

/// Puts the previous current parent back when a poll ends, also by a panic.
struct Restore<'a> {
    slot: &'a mut Option<Arc<dyn CallParent>>,
    prev: Option<Option<Arc<dyn CallParent>>>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take() {
            *self.slot = CURRENT.with(|c| c.replace(prev));
        }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The parent moves into the thread-local for the poll and back after: no reference
        // count traffic per poll.
        let mine = this.parent.take();
        let prev = CURRENT.with(|c| c.replace(mine));
        let _restore = Restore {
            slot: this.parent,
            prev: Some(prev),
        };
        this.fut.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_append_and_format_like_kitex() {
        assert_eq!(append_path("", "A"), "A");
        assert_eq!(append_path("A", "B"), "A,B");
        assert_eq!(append_path("A", ""), "A");
        let c = Cancellation::new(
            CancelKind::User,
            "A",
            kitex_code::USER_CANCEL,
            "user canceled",
        );
        let down = c.cascade(CancelKind::Upstream, "B");
        assert_eq!(down.path(), "A,B");
        assert_eq!(down.nodes().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(
            down.kitex_code(),
            12007,
            "a cascade keeps its origin's code"
        );
        assert_eq!(
            down.to_string(),
            "canceled by upstream [canceled path: A -> B]: user canceled"
        );
        let s = down.into_status();
        assert_eq!(s.code(), Code::Cancelled);
        assert_eq!(s.transport_code(), Some(12007));
        assert_eq!(s.cancellation().unwrap().kind(), CancelKind::Upstream);
    }

    #[test]
    fn a_parent_without_a_cancellation_cascades_with_a_code_for_its_status() {
        let s = cascade_from(&Status::deadline_exceeded("deadline exceeded"), "B");
        let c = s.cancellation().unwrap();
        assert_eq!(
            (c.kind(), c.path(), c.kitex_code()),
            (CancelKind::Upstream, "B", 12015)
        );
        let s = cascade_from(&Status::unavailable("connection lost"), "B");
        assert_eq!(s.cancellation().unwrap().kitex_code(), 12013);
    }

    #[test]
    fn children_prune_ended_entries_and_refuse_after_the_end() {
        struct C;
        impl CallChild for C {
            fn parent_ended(&self, _: &Status) {}
        }
        let mut ch = Children::default();
        let live: Arc<dyn CallChild> = Arc::new(C);
        for _ in 0..100 {
            let dead: Arc<dyn CallChild> = Arc::new(C);
            ch.adopt(Arc::downgrade(&dead)).unwrap();
        }
        ch.adopt(Arc::downgrade(&live)).unwrap();
        assert!(ch.list.len() <= 2 * CHILDREN_PRUNE_AT, "{}", ch.list.len());
        let ended = ch.end(&Status::cancelled("x"));
        assert_eq!(ended.iter().filter(|w| w.strong_count() > 0).count(), 1);
        assert!(ch.adopt(Arc::downgrade(&live)).is_err());
    }
}
