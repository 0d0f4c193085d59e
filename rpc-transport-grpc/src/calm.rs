//! Flood defence: frames a client sends that make the server work without making progress on
//! any call, counted per connection; a connection that sends far more of them than any real
//! client does is answered with `GOAWAY(ENHANCE_YOUR_CALM)` and closed.
//!
//! The attacks are the HTTP/2 "resource loops" (CVE-2019-9512 PING flood, CVE-2019-9515
//! SETTINGS flood, CVE-2019-9518 empty frames flood, CVE-2024-27316 CONTINUATION flood):
//! each frame is tiny and cheap to send, and the server must parse it, often answer it (a
//! PING or SETTINGS ACK), and keep the answer while the client does not read. Servers defend
//! in two ways: by bounding what they queue for a peer that does not read (Go's
//! `x/net/http2` and nghttp2 close the connection above 10,000 queued control frames; here
//! the socket's writes stop h2 from reading: h2 keeps one pending PING ACK and reads no more
//! until it is written), and by counting frames that make no progress (nginx compares a
//! connection's bytes with its useful payload; grpc-go and gRPC C-core count "ping strikes",
//! PINGs that arrive when the server sent nothing since the last one; netty counts empty
//! DATA frames). This module does the second, for every kind of such frame:
//!
//! - **Unpaid** frames are counted: SETTINGS (and unsolicited ACKs), PINGs when the server
//!   wrote no HEADERS or DATA since the previous PING (grpc-go's rule: a PING after a
//!   response, such as a BDP probe, is paid for), WINDOW_UPDATEs beyond two per DATA frame
//!   the server wrote (one for the stream, one for the connection), DATA frames that carry no
//!   data and do not end the stream, PRIORITY, CONTINUATION, GOAWAY, PUSH_PROMISE and frames
//!   of unknown type (HTTP/2 says to ignore them, which still costs a parse).
//! - HEADERS, DATA with data or `END_STREAM`, and RST_STREAM are the calls themselves. Rapid
//!   reset (CVE-2023-44487: HEADERS then RST_STREAM, over and over) is bounded by h2's limit
//!   on streams reset before they are accepted (`max_pending_accept_reset_streams`, 20) and
//!   by the server's stream limit; a CONTINUATION chain longer than a header list needs ends
//!   the connection in h2 with `ENHANCE_YOUR_CALM` (at most 5 frames per block with our frame
//!   size and header list limit) before it gets far here.
//! - A connection may send [`DEFAULT_MAX_CONTROL_FRAMES`](crate::DEFAULT_MAX_CONTROL_FRAMES)
//!   unpaid frames per [`DEFAULT_CONTROL_WINDOW`](crate::DEFAULT_CONTROL_WINDOW) (a fixed
//!   window from the first such frame). One more and it is calmed: the server stops reading
//!   it, sends `GOAWAY(ENHANCE_YOUR_CALM)`, and closes it (see `server`).
//!
//! The counting is synchronous and tested on frames; the socket wrapper feeds it.

use std::time::{Duration, Instant};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const PADDED: u8 = 0x8;

/// WINDOW_UPDATEs a client may send for each DATA frame the server wrote without their
/// counting: one for the stream and one for the connection.
const UPDATES_PER_DATA_FRAME: u32 = 2;

/// Frame kinds counted separately for the log line (the 10 of RFC 9113, and "unknown").
const KINDS: usize = 11;

/// The head of one complete HTTP/2 frame, as the ledger's scan reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    /// Frame type.
    pub(crate) kind: u8,
    /// Frame flags.
    pub(crate) flags: u8,
    /// Stream id.
    pub(crate) stream: u32,
    /// Payload length.
    pub(crate) len: usize,
    /// Pad length of a padded DATA frame (0 otherwise).
    pub(crate) pad: usize,
}

/// The counting of one connection's unpaid frames (see the module docs).
#[derive(Debug)]
pub(crate) struct CalmGuard {
    max: u32,
    window: Duration,
    /// When the current window started (the first unpaid frame of it).
    start: Option<Instant>,
    /// Unpaid frames in the current window.
    unpaid: u32,
    /// Unpaid frames by kind, over the connection's life (for the log line).
    by_kind: [u32; KINDS],
    /// The server wrote HEADERS or DATA since the client's last PING.
    wrote_since_ping: bool,
    /// WINDOW_UPDATEs the client may still send unpaid-for (see
    /// [`UPDATES_PER_DATA_FRAME`]).
    update_credit: u32,
    tripped: bool,
}

impl CalmGuard {
    /// A guard allowing `max` unpaid frames per `window`.
    pub(crate) fn new(max: u32, window: Duration) -> CalmGuard {
        CalmGuard {
            max,
            window,
            start: None,
            unpaid: 0,
            by_kind: [0; KINDS],
            wrote_since_ping: false,
            update_credit: 0,
            tripped: false,
        }
    }

    /// Whether the connection sent more than it may: it must be closed.
    pub(crate) fn tripped(&self) -> bool {
        self.tripped
    }

    /// The kind of frame the connection sent most of unpaid, by name (for the log line).
    pub(crate) fn worst(&self) -> &'static str {
        let (kind, _) = self
            .by_kind
            .iter()
            .enumerate()
            .max_by_key(|(_, n)| **n)
            .unwrap_or((KINDS - 1, &0));
        const NAMES: [&str; KINDS] = [
            "empty DATA",
            "HEADERS",
            "PRIORITY",
            "RST_STREAM",
            "SETTINGS",
            "PUSH_PROMISE",
            "PING",
            "GOAWAY",
            "WINDOW_UPDATE",
            "CONTINUATION",
            "unknown",
        ];
        NAMES[kind]
    }

    /// A frame the server wrote: HEADERS and DATA pay for the client's next PING, DATA for
    /// its WINDOW_UPDATEs.
    pub(crate) fn outbound(&mut self, f: FrameHead) {
        match f.kind {
            DATA => {
                self.wrote_since_ping = true;
                self.update_credit = self.update_credit.saturating_add(UPDATES_PER_DATA_FRAME);
            }
            HEADERS => self.wrote_since_ping = true,
            _ => {}
        }
    }

    /// A frame the client sent, complete, at `now`; true when it is the one over the limit.
    pub(crate) fn inbound(&mut self, f: FrameHead, now: Instant) -> bool {
        if self.tripped || self.paid(f) {
            return false;
        }
        self.by_kind[usize::from(f.kind).min(KINDS - 1)] += 1;
        match self.start {
            Some(start) if now.saturating_duration_since(start) < self.window => {}
            _ => {
                self.start = Some(now);
                self.unpaid = 0;
            }
        }
        self.unpaid += 1;
        if self.unpaid > self.max {
            self.tripped = true;
        }
        self.tripped
    }

    /// Whether `f` is part of a call, or paid for by what the server sent.
    fn paid(&mut self, f: FrameHead) -> bool {
        match f.kind {
            DATA => {
                let padding = if f.flags & PADDED != 0 { 1 + f.pad } else { 0 };
                f.len > padding || f.flags & END_STREAM != 0
            }
            HEADERS | RST_STREAM => true,
            PING if f.flags & ACK == 0 => std::mem::take(&mut self.wrote_since_ping),
            WINDOW_UPDATE if self.update_credit > 0 => {
                self.update_credit -= 1;
                true
            }
            SETTINGS => false,
            // An unsolicited PING ACK, WINDOW_UPDATE beyond the
            // credit, PRIORITY, CONTINUATION, GOAWAY, PUSH_PROMISE, unknown types.
            _ => false,
        }
    }
}

/// The bound on the work one connection's reads do before its task yields (see
/// [`ReadTurn`]).
#[derive(Debug)]
pub(crate) struct ReadTurn {
    bytes: usize,
    frames: usize,
}

/// Bytes one connection reads in one turn before it yields: 64 KiB is a few reads of h2's
/// buffer, so a burst of large DATA frames still moves in big steps, while a turn is short
/// (tens of microseconds of parsing) for the other connections waiting for the worker.
pub(crate) const TURN_BYTES: usize = 64 * 1024;

/// Complete frames one connection reads in one turn before it yields: 256 frames of small
/// requests are 128 calls (a few accept batches, see `server::MAX_ACCEPT_BATCH`), and of
/// 9-byte control frames about 2 KiB — each frame costs h2 work regardless of its size.
pub(crate) const TURN_FRAMES: usize = 256;

impl ReadTurn {
    /// A fresh turn.
    pub(crate) fn new() -> ReadTurn {
        ReadTurn {
            bytes: 0,
            frames: 0,
        }
    }

    /// `bytes` holding `frames` complete frames were read; true when the turn is used up:
    /// the reader should yield (and the turn starts over).
    pub(crate) fn read(&mut self, bytes: usize, frames: usize) -> bool {
        self.bytes += bytes;
        self.frames += frames;
        if self.bytes >= TURN_BYTES || self.frames >= TURN_FRAMES {
            self.idle();
            return true;
        }
        false
    }

    /// The reader found nothing to read (it waits, so its turn ends anyway).
    pub(crate) fn idle(&mut self) {
        self.bytes = 0;
        self.frames = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(kind: u8, flags: u8, stream: u32, len: usize) -> FrameHead {
        FrameHead {
            kind,
            flags,
            stream,
            len,
            pad: 0,
        }
    }

    const W: Duration = Duration::from_secs(10);

    #[test]
    fn a_ping_flood_trips_after_the_limit() {
        let mut g = CalmGuard::new(100, W);
        let t = Instant::now();
        for i in 0..100 {
            assert!(!g.inbound(head(PING, 0, 0, 8), t), "ping {i}");
        }
        assert!(g.inbound(head(PING, 0, 0, 8), t));
        assert!(g.tripped());
        assert_eq!(g.worst(), "PING");
        // Reported once.
        assert!(!g.inbound(head(PING, 0, 0, 8), t));
        assert!(g.tripped());
    }

    #[test]
    fn pings_after_responses_are_free() {
        let mut g = CalmGuard::new(10, W);
        let t = Instant::now();
        for _ in 0..10_000 {
            g.outbound(head(HEADERS, 0x4, 1, 20));
            assert!(!g.inbound(head(PING, 0, 0, 8), t));
            g.outbound(head(DATA, 0, 1, 100));
            assert!(!g.inbound(head(PING, 0, 0, 8), t));
        }
        assert!(!g.tripped());
        // Two PINGs after one response: the second counts.
        for _ in 0..10 {
            g.outbound(head(DATA, 0, 1, 100));
            g.inbound(head(PING, 0, 0, 8), t);
            g.inbound(head(PING, 0, 0, 8), t);
        }
        assert!(!g.tripped());
        g.inbound(head(PING, 0, 0, 8), t);
        assert!(g.tripped());
    }

    #[test]
    fn window_updates_are_free_up_to_two_per_data_frame_sent() {
        let mut g = CalmGuard::new(5, W);
        let t = Instant::now();
        for _ in 0..1000 {
            g.outbound(head(DATA, 0, 1, 16_384));
        }
        for _ in 0..2000 {
            assert!(!g.inbound(head(WINDOW_UPDATE, 0, 1, 4), t));
        }
        for _ in 0..5 {
            assert!(!g.inbound(head(WINDOW_UPDATE, 0, 0, 4), t));
        }
        assert!(g.inbound(head(WINDOW_UPDATE, 0, 0, 4), t));
        assert_eq!(g.worst(), "WINDOW_UPDATE");
    }

    #[test]
    fn calls_never_count_and_empty_data_does() {
        let mut g = CalmGuard::new(3, W);
        let t = Instant::now();
        for i in 0..100_000u32 {
            let id = 2 * i + 1;
            g.inbound(head(HEADERS, 0x4, id, 30), t);
            g.inbound(head(DATA, 0, id, 10), t);
            // An empty DATA frame that ends the stream is how some clients half-close.
            g.inbound(head(DATA, END_STREAM, id, 0), t);
            g.inbound(head(RST_STREAM, 0, id, 4), t);
        }
        assert!(!g.tripped());
        // Padding only, no data, no END_STREAM: empty.
        let mut padded = head(DATA, PADDED, 1, 5);
        padded.pad = 4;
        for _ in 0..3 {
            assert!(!g.inbound(padded, t));
        }
        assert!(g.inbound(head(DATA, 0, 1, 0), t));
        assert_eq!(g.worst(), "empty DATA");
    }

    #[test]
    fn settings_priority_continuation_and_unknown_frames_count() {
        for kind in [SETTINGS, 0x2, 0x9, 0x7, 0x5, 0xfa] {
            let mut g = CalmGuard::new(50, W);
            let t = Instant::now();
            for _ in 0..50 {
                assert!(!g.inbound(head(kind, 0, 0, 6), t), "kind {kind}");
            }
            assert!(g.inbound(head(kind, 0, 0, 6), t), "kind {kind}");
        }
        // An unsolicited PING ACK counts too, whatever was written.
        let mut g = CalmGuard::new(1, W);
        let t = Instant::now();
        g.outbound(head(DATA, 0, 1, 1));
        g.inbound(head(PING, ACK, 0, 8), t);
        g.outbound(head(DATA, 0, 1, 1));
        assert!(g.inbound(head(PING, ACK, 0, 8), t));
    }

    #[test]
    fn the_allowance_renews_each_window() {
        // A keepalive-style client: 5 unpaid frames every second, for an hour.
        let mut g = CalmGuard::new(100, W);
        let t0 = Instant::now();
        for s in 0..3600u64 {
            let t = t0 + Duration::from_secs(s);
            for _ in 0..5 {
                assert!(!g.inbound(head(PING, 0, 0, 8), t), "second {s}");
            }
        }
        // 101 within one window trips, even late in the connection's life.
        let t = t0 + Duration::from_secs(4000);
        for _ in 0..100 {
            assert!(!g.inbound(head(SETTINGS, 0, 0, 0), t));
        }
        assert!(g.inbound(head(SETTINGS, 0, 0, 0), t + Duration::from_secs(9)));
    }

    #[test]
    fn a_turn_ends_after_its_bytes_or_frames() {
        let mut turn = ReadTurn::new();
        assert!(!turn.read(TURN_BYTES - 1, 1));
        assert!(turn.read(1, 0));
        // It starts over after yielding, and after an idle read.
        assert!(!turn.read(100, TURN_FRAMES - 1));
        turn.idle();
        assert!(!turn.read(100, TURN_FRAMES - 1));
        assert!(turn.read(9, 1));
    }
}
