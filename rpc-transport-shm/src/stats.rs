//! Counters a user (and the tests) can read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use rpc_transport_ttheader::session::Stats;

/// Live counters of one [`ShmClient`](crate::ShmClient) or [`ShmProtocol`](crate::ShmProtocol)
/// (all of its sessions).
#[derive(Debug, Default)]
pub struct ShmStats {
    pub(crate) arena_in_use: AtomicUsize,
    pub(crate) fallback_messages: AtomicU64,
    pub(crate) wakeups_sent: AtomicU64,
    pub(crate) wakeups_received: AtomicU64,
    pub(crate) sender_waits: AtomicU64,
    pub(crate) descriptors_sent: AtomicU64,
    pub(crate) sessions: Arc<Stats>,
}

impl ShmStats {
    /// Bytes of our own arenas holding frames the peers have not returned yet (0 when idle;
    /// back to 0 when a peer dies, since its blocks are reclaimed).
    pub fn arena_bytes_in_use(&self) -> usize {
        self.arena_in_use.load(Ordering::Relaxed)
    }
    /// Frames that went over the socket because they were larger than the arena.
    pub fn fallback_messages(&self) -> u64 {
        self.fallback_messages.load(Ordering::Relaxed)
    }
    /// Eventfd wakeups written to peers (only when a peer was parked or waiting).
    pub fn wakeups_sent(&self) -> u64 {
        self.wakeups_sent.load(Ordering::Relaxed)
    }
    /// Eventfd wakeups our readers received.
    pub fn wakeups_received(&self) -> u64 {
        self.wakeups_received.load(Ordering::Relaxed)
    }
    /// Times a sender had to wait for ring or arena space.
    pub fn sender_waits(&self) -> u64 {
        self.sender_waits.load(Ordering::Relaxed)
    }
    /// Descriptors carrying frames pushed into our rings (returned blocks not counted): one
    /// per frame, or one per pack of frames (a one-shot request's Header, message and
    /// half-close; a reply's Header, message and Trailer), so a unary call costs one each
    /// way.
    pub fn frame_descriptors_sent(&self) -> u64 {
        self.descriptors_sent.load(Ordering::Relaxed)
    }
    /// Live sessions.
    pub fn live_sessions(&self) -> usize {
        self.sessions.connections()
    }
    /// Live streams over all sessions.
    pub fn live_streams(&self) -> usize {
        self.sessions.streams()
    }
}
