//! What one server connection makes the process hold for its peer, charged to the
//! server-wide byte budget (`ServerLimits::max_buffered_bytes`), and the gates that stop a
//! connection at the budget.
//!
//! h2 buffers on its own: DATA received and not yet taken by a handler, DATA handed to it and
//! not yet written, and its state per stream. None of that is visible through h2's API, so
//! the connection's socket is read and written through a [`FrameScan`] on each direction,
//! which sees every frame go in and out:
//!
//! - **Partial frames** being read are charged as their bytes arrive.
//! - **Received DATA** is charged per stream (its length plus [`FRAME_COST`] for h2's record
//!   of it) when its frame is complete, and released when the handler's receiver takes it
//!   from h2, when the stream is reset (`RST_STREAM` either way: h2 drops what it held), or
//!   when the server side of the stream is dropped (h2 clears its receive buffer).
//! - **Sent DATA** is charged per stream when a handler's message is handed to h2 and
//!   released as its frames are written to the socket (or the stream is reset).
//! - **Each stream** costs [`STREAM_COST`] plus its request header list while the server
//!   side of it lives, and until its last frame (`END_STREAM` or `RST_STREAM`) is written.
//!   It is charged from the moment its opening HEADERS frame is read ([`STREAM_COST`] plus
//!   the header block's bytes), before h2 decodes it into its stream state and queues it for
//!   `accept`, so what h2 holds for streams not accepted yet is within the charge; the
//!   charge is settled to the decoded header list when the server accepts the stream, and
//!   released when it is refused or reset.
//! - A receiver's **partial message** is charged by the receiver (see `stream::Charge`),
//!   through the ledger, so it counts for the connection too.
//!
//! Everything a connection still has charged is released when its last holder goes. A
//! connection may always hold its [`CONN_RESERVE`]; beyond it, and while the budget is used
//! up, it is stopped: its socket is not read (TCP pushes back on the peer), new streams are
//! refused with `REFUSED_STREAM` (UNAVAILABLE, retryable), and handlers wait before handing
//! it more to send. A connection with little charged, such as a well-behaved client's, is
//! never stopped by what others hold.
//!
//! The protocol logic ([`FrameScan`], [`Ledger`]'s bookkeeping) is synchronous and tested on
//! bytes; the socket wrapper only moves bytes through it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use rpc_core::limits::ByteBudget;

use crate::calm::FrameHead;
use crate::lock;

/// What a connection may hold without regard to the budget: enough for a few concurrent
/// unary calls with small messages (each costs about [`STREAM_COST`] plus its headers and
/// messages), so a well-behaved client is served while hostile connections hold the rest of
/// the budget. It is part of the per-connection cost in the documented bound.
pub(crate) const CONN_RESERVE: usize = 32 * 1024;

/// What one open stream costs beyond its request header list and its messages: h2's stream
/// record and its slab slot, the server's stream state, the handler's task and call context
/// (measured with `examples/tests/memory_bound_grpc.rs`, idle streams on 16 connections:
/// between 2.7 and 5.7 KiB each with their headers, depending on how far h2's and the
/// handlers' allocations had grown; rounded up).
pub(crate) const STREAM_COST: usize = 8 * 1024;

/// What h2's record of one buffered DATA frame costs beyond its bytes (its receive or send
/// queue entry), so that many tiny frames are charged for what they hold.
pub(crate) const FRAME_COST: usize = 64;

/// Bytes of the HTTP/2 client connection preface the inbound scan skips.
pub(crate) const PREFACE_LEN: usize = 24;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const PADDED: u8 = 0x8;

/// What [`FrameScan`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// `n` payload bytes of the frame being read arrived.
    Payload(usize),
    /// A frame is complete: its type, flags, stream and payload length, and for a padded
    /// DATA frame the pad length.
    Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        len: usize,
        pad: usize,
    },
}

impl Scanned {
    /// The frame's head, if this is a complete frame.
    fn head(&self) -> Option<FrameHead> {
        match *self {
            Scanned::Frame {
                kind,
                flags,
                stream,
                len,
                pad,
            } => Some(FrameHead {
                kind,
                flags,
                stream,
                len,
                pad,
            }),
            Scanned::Payload(_) => None,
        }
    }
}

/// Splits a byte stream into HTTP/2 frames, reporting each payload's bytes as they pass and
/// each frame once it is complete. Never fails: whatever the bytes are, they are counted
/// (h2 itself rejects what is malformed).
#[derive(Debug)]
pub(crate) struct FrameScan {
    /// Preface bytes still to skip.
    skip: usize,
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to come (`None` while reading a header).
    left: Option<usize>,
    pad: usize,
}

impl FrameScan {
    /// A scan of what a client sends (it starts with the connection preface).
    pub(crate) fn inbound() -> FrameScan {
        FrameScan {
            skip: PREFACE_LEN,
            ..FrameScan::outbound()
        }
    }

    /// A scan of what the server sends.
    pub(crate) fn outbound() -> FrameScan {
        FrameScan {
            skip: 0,
            head: [0; 9],
            have: 0,
            left: None,
            pad: 0,
        }
    }

    fn kind(&self) -> u8 {
        self.head[3]
    }

    fn flags(&self) -> u8 {
        self.head[4]
    }

    fn len(&self) -> usize {
        (usize::from(self.head[0]) << 16)
            | (usize::from(self.head[1]) << 8)
            | usize::from(self.head[2])
    }

    fn stream(&self) -> u32 {
        u32::from_be_bytes([self.head[5], self.head[6], self.head[7], self.head[8]]) & 0x7fff_ffff
    }

    fn complete(&mut self, out: &mut impl FnMut(Scanned) -> bool) -> bool {
        let stop = out(Scanned::Frame {
            kind: self.kind(),
            flags: self.flags(),
            stream: self.stream(),
            len: self.len(),
            pad: self.pad,
        });
        self.left = None;
        self.have = 0;
        self.pad = 0;
        stop
    }

    /// Feeds `bytes`, reporting to `out`.
    pub(crate) fn feed(&mut self, bytes: &[u8], out: &mut impl FnMut(Scanned)) {
        self.feed_until(bytes, &mut |e| {
            out(e);
            false
        });
    }

    /// Feeds `bytes`, reporting to `out`, until `out` returns true for a complete frame:
    /// returns how many bytes were scanned (all of them, or up to the end of that frame).
    pub(crate) fn feed_until(
        &mut self,
        mut bytes: &[u8],
        out: &mut impl FnMut(Scanned) -> bool,
    ) -> usize {
        let total = bytes.len();
        let skip = self.skip.min(bytes.len());
        self.skip -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            match self.left {
                None => {
                    let take = (9 - self.have).min(bytes.len());
                    self.head[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                    self.have += take;
                    bytes = &bytes[take..];
                    if self.have == 9 {
                        self.left = Some(self.len());
                        if self.len() == 0 && self.complete(out) {
                            return total - bytes.len();
                        }
                    }
                }
                Some(left) => {
                    let take = left.min(bytes.len());
                    if self.kind() == DATA
                        && self.flags() & PADDED != 0
                        && left == self.len()
                        && take > 0
                    {
                        self.pad = usize::from(bytes[0]);
                    }
                    out(Scanned::Payload(take));
                    bytes = &bytes[take..];
                    self.left = Some(left - take);
                    if left == take && self.complete(out) {
                        return total - bytes.len();
                    }
                }
            }
        }
        total
    }
}

/// One stream's charges.
#[derive(Debug, Default)]
struct Entry {
    /// Received DATA h2 holds for the stream (with [`FRAME_COST`] per frame).
    held_in: usize,
    /// DATA handed to h2 and not yet written.
    out: usize,
    /// [`STREAM_COST`] and the request header list, from the request until the stream is
    /// done on both sides.
    fixed: usize,
    /// The server side of the stream is gone (h2 no longer keeps received DATA for it).
    local_closed: bool,
    /// Its last frame was written, or it was reset.
    ended: bool,
}

impl Entry {
    fn total(&self) -> usize {
        self.held_in + self.out + self.fixed
    }
}

/// What a stream not accepted yet has charged.
#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    /// Its received DATA (with [`FRAME_COST`] per frame).
    data: usize,
    /// [`STREAM_COST`] and its header block's bytes, from its opening HEADERS frame.
    head: usize,
}

impl Pending {
    fn total(&self) -> usize {
        self.data + self.head
    }
}

#[derive(Debug)]
struct Inner {
    inbound: FrameScan,
    outbound: FrameScan,
    book: Book,
}

/// Streams not accepted yet, by id, in order. A client opens streams in increasing order, so
/// an entry is almost always added at the back and the accepted one is at the front. Unlike a
/// `BTreeMap` (which allocates a node each time it goes from empty to one entry: once per
/// call for a connection with a call or two in flight), it keeps its capacity, up to
/// [`PendingStreams::KEEP`] entries once emptied: at most 1.5 KiB held for the connection's
/// life outside the per-stream charges, as the server's metadata cache is (a part of the
/// per-connection term of the memory bound).
#[derive(Debug, Default)]
struct PendingStreams(VecDeque<(u32, Pending)>);

impl PendingStreams {
    /// Entries of capacity kept once the queue is empty (24 bytes each): enough for 64 calls
    /// opened in one read without growing again.
    const KEEP: usize = 64;

    fn find(&self, id: u32) -> Result<usize, usize> {
        // The usual case first: the newest stream, at the back.
        match self.0.back() {
            Some((last, _)) if *last < id => Err(self.0.len()),
            Some((last, _)) if *last == id => Ok(self.0.len() - 1),
            _ => self.0.binary_search_by_key(&id, |(k, _)| *k),
        }
    }

    /// The entry of `id`, added (empty) if it has none.
    fn entry(&mut self, id: u32) -> &mut Pending {
        let at = match self.find(id) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (id, Pending::default()));
                at
            }
        };
        &mut self.0[at].1
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut Pending> {
        let at = self.find(id).ok()?;
        Some(&mut self.0[at].1)
    }

    fn remove(&mut self, id: u32) -> Option<Pending> {
        let at = self.find(id).ok()?;
        let p = self.0.remove(at).map(|(_, p)| p);
        self.emptied();
        p
    }

    /// Removes the entries below `id`; returns what they charged.
    fn remove_below(&mut self, id: u32) -> usize {
        let mut gone = 0;
        while let Some((first, p)) = self.0.front() {
            if *first >= id {
                break;
            }
            gone += p.total();
            self.0.pop_front();
        }
        self.emptied();
        gone
    }

    fn emptied(&mut self) {
        if self.0.is_empty() && self.0.capacity() > Self::KEEP {
            self.0.shrink_to(Self::KEEP);
        }
    }
}

/// The charges, apart from the scans that feed them.
#[derive(Debug, Default)]
struct Book {
    /// Bytes of the inbound frame being read, charged as they arrive.
    partial: usize,
    /// Streams the server accepted (or whose DATA arrived before it was accepted).
    streams: HashMap<u32, Entry>,
    /// Streams not accepted yet, opened by a HEADERS frame read or with DATA read (h2
    /// queues them for `accept`, or refuses them).
    pending: PendingStreams,
    /// The highest stream a HEADERS frame opened: a HEADERS frame on a stream at or below
    /// it is trailers (or a protocol error h2 answers), not a new stream.
    headed: u32,
    /// The highest stream the server accepted or answered: DATA of a lower stream that is
    /// not in `streams` is for one h2 no longer keeps (it drops it).
    accepted: u32,
    /// Everything this connection has charged now (its share of the budget).
    charged: usize,
    /// Receivers waiting for more of a large partial message: woken when the connection is
    /// stopped, so they give their partial message up (see `stream::STREAM_RESERVE`) rather
    /// than wait for bytes that are not read.
    parked: HashMap<u32, Waker>,
}

/// The charges of one server connection (see the module docs).
#[derive(Debug)]
pub(crate) struct Ledger {
    budget: Arc<ByteBudget>,
    inner: Mutex<Inner>,
}

impl Ledger {
    pub(crate) fn new(budget: Arc<ByteBudget>) -> Arc<Ledger> {
        Arc::new(Ledger {
            budget,
            inner: Mutex::new(Inner {
                inbound: FrameScan::inbound(),
                outbound: FrameScan::outbound(),
                book: Book::default(),
            }),
        })
    }

    pub(crate) fn budget(&self) -> &Arc<ByteBudget> {
        &self.budget
    }

    /// Bytes this connection has charged now.
    pub(crate) fn charged(&self) -> usize {
        lock(&self.inner).book.charged
    }

    /// Whether the connection must stop taking more: the budget is used up and it holds
    /// more than its [`CONN_RESERVE`].
    pub(crate) fn blocked(&self) -> bool {
        self.budget.is_exhausted() && self.charged() > CONN_RESERVE
    }

    fn charge(&self, i: &mut Book, n: usize) {
        if n > 0 {
            i.charged += n;
            self.budget.charge(n);
        }
    }

    fn release(&self, i: &mut Book, n: usize) {
        let n = n.min(i.charged);
        if n > 0 {
            i.charged -= n;
            self.budget.release(n);
        }
    }

    /// Bytes read from the socket, on their way to h2.
    #[cfg(test)]
    pub(crate) fn on_read(&self, bytes: &[u8]) -> usize {
        self.on_read_seen(bytes, &mut |_| {})
    }

    /// Bytes read from the socket, on their way to h2; each complete frame is shown to
    /// `seen` as well. Stops after the first complete frame that leaves the connection
    /// [`Ledger::blocked`], and returns how many bytes were scanned: the rest must not be
    /// given to h2 yet (they are fed again once the connection may take more), so that h2
    /// decodes no more than the budget allows.
    pub(crate) fn on_read_seen(&self, bytes: &[u8], seen: &mut impl FnMut(FrameHead)) -> usize {
        let mut g = lock(&self.inner);
        let Inner { inbound, book, .. } = &mut *g;
        inbound.feed_until(bytes, &mut |e| {
            let f = e.head();
            if let Some(f) = f {
                seen(f);
            }
            self.scanned_in(book, e);
            f.is_some() && self.budget.is_exhausted() && book.charged > CONN_RESERVE
        })
    }

    fn scanned_in(&self, i: &mut Book, e: Scanned) {
        match e {
            Scanned::Payload(n) => {
                i.partial += n;
                self.charge(i, n);
            }
            Scanned::Frame {
                kind,
                flags,
                stream,
                len,
                pad,
            } => {
                let partial = std::mem::take(&mut i.partial);
                self.release(i, partial);
                match kind {
                    DATA if stream != 0 => {
                        let padding = if flags & PADDED != 0 { 1 + pad } else { 0 };
                        let data = len.saturating_sub(padding);
                        if data > 0 {
                            self.received(i, stream, data + FRAME_COST);
                        }
                    }
                    HEADERS if stream % 2 == 1 && stream > i.headed => {
                        i.headed = stream;
                        if stream > i.accepted {
                            let head = STREAM_COST + len;
                            i.pending.entry(stream).head += head;
                            self.charge(i, head);
                        }
                    }
                    CONTINUATION if stream != 0 && stream == i.headed => {
                        if let Some(p) = i.pending.get_mut(stream) {
                            p.head += len;
                            self.charge(i, len);
                        }
                    }
                    RST_STREAM => self.reset(i, stream),
                    _ => {}
                }
            }
        }
    }

    fn received(&self, i: &mut Book, stream: u32, n: usize) {
        if let Some(e) = i.streams.get_mut(&stream) {
            if e.local_closed || e.ended {
                return;
            }
            e.held_in += n;
        } else if stream > i.accepted {
            i.pending.entry(stream).data += n;
        } else {
            return;
        }
        self.charge(i, n);
    }

    /// Bytes written to the socket by h2.
    #[cfg(test)]
    pub(crate) fn on_write(&self, bytes: &[u8]) {
        self.on_write_seen(bytes, &mut |_| {});
    }

    /// Bytes written to the socket by h2; each complete frame is shown to `seen` as well.
    pub(crate) fn on_write_seen(&self, bytes: &[u8], seen: &mut impl FnMut(FrameHead)) {
        let mut g = lock(&self.inner);
        let Inner { outbound, book, .. } = &mut *g;
        outbound.feed(bytes, &mut |e| {
            if let Some(f) = e.head() {
                seen(f);
            }
            self.scanned_out(book, e)
        });
    }

    fn scanned_out(&self, i: &mut Book, e: Scanned) {
        let Scanned::Frame {
            kind,
            flags,
            stream,
            len,
            ..
        } = e
        else {
            return;
        };
        match kind {
            DATA | HEADERS if stream != 0 => {
                if let Some(e) = i.streams.get_mut(&stream) {
                    let n = if kind == DATA {
                        (len + FRAME_COST).min(e.out)
                    } else {
                        0
                    };
                    e.out -= n;
                    if flags & END_STREAM != 0 {
                        e.ended = true;
                    }
                    self.release(i, n);
                    self.maybe_remove(i, stream);
                }
            }
            RST_STREAM => self.reset(i, stream),
            _ => {}
        }
    }

    /// A stream was reset (either way): h2 drops what it held of it.
    fn reset(&self, i: &mut Book, stream: u32) {
        if let Some(p) = i.pending.remove(stream) {
            self.release(i, p.total());
        }
        if let Some(e) = i.streams.get_mut(&stream) {
            let n = e.held_in + e.out;
            e.held_in = 0;
            e.out = 0;
            e.ended = true;
            self.release(i, n);
            self.maybe_remove(i, stream);
        }
    }

    fn maybe_remove(&self, i: &mut Book, stream: u32) {
        let done = i
            .streams
            .get(&stream)
            .is_some_and(|e| e.local_closed && e.ended);
        if done {
            if let Some(e) = i.streams.remove(&stream) {
                self.release(i, e.total());
            }
        }
    }

    /// The server accepted `stream` and keeps it (`fixed`: its [`STREAM_COST`] and header
    /// list; what its HEADERS frame charged is settled to the larger of the two). Streams
    /// below it that were never accepted were refused by h2: what they charged is released.
    pub(crate) fn open(&self, stream: u32, fixed: usize) {
        let mut g = lock(&self.inner);
        let i = &mut g.book;
        self.settle_below(i, stream);
        let Pending { data, head } = i.pending.remove(stream).unwrap_or_default();
        i.streams.insert(
            stream,
            Entry {
                held_in: data,
                fixed: fixed.max(head),
                ..Entry::default()
            },
        );
        self.charge(i, fixed.saturating_sub(head));
    }

    /// The server answered `stream` without keeping it (refused, or an error before any
    /// handler): nothing of it stays.
    pub(crate) fn drop_stream(&self, stream: u32) {
        let mut g = lock(&self.inner);
        let i = &mut g.book;
        self.settle_below(i, stream);
        if let Some(p) = i.pending.remove(stream) {
            self.release(i, p.total());
        }
    }

    fn settle_below(&self, i: &mut Book, stream: u32) {
        i.accepted = i.accepted.max(stream);
        let gone = i.pending.remove_below(stream);
        self.release(i, gone);
    }

    /// The handler's receiver took `n` bytes of `stream`'s DATA from h2 (one frame).
    pub(crate) fn taken(&self, stream: u32, n: usize) {
        let mut g = lock(&self.inner);
        let i = &mut g.book;
        if let Some(e) = i.streams.get_mut(&stream) {
            let n = (n + FRAME_COST).min(e.held_in);
            e.held_in -= n;
            self.release(i, n);
        }
    }

    /// `n` bytes of `stream`'s messages were handed to h2 for sending.
    pub(crate) fn handed(&self, stream: u32, n: usize) {
        let mut g = lock(&self.inner);
        let i = &mut g.book;
        if let Some(e) = i.streams.get_mut(&stream) {
            if !e.ended {
                e.out += n;
                self.charge(i, n);
            }
        }
    }

    /// The server side of `stream` is gone: h2 drops the DATA it still held for it; what it
    /// has to send stays charged until written.
    pub(crate) fn close(&self, stream: u32) {
        let mut g = lock(&self.inner);
        let i = &mut g.book;
        if let Some(e) = i.streams.get_mut(&stream) {
            let n = e.held_in;
            e.held_in = 0;
            e.local_closed = true;
            self.release(i, n);
            self.maybe_remove(i, stream);
        }
    }

    /// `stream`'s receiver waits for more of a partial message above its reserve: `waker` is
    /// woken when the connection is stopped (see [`Ledger::wake_parked`]).
    pub(crate) fn park(&self, stream: u32, waker: &Waker) {
        let mut g = lock(&self.inner);
        match g.book.parked.get_mut(&stream) {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => w.clone_from(waker),
            None => {
                g.book.parked.insert(stream, waker.clone());
            }
        }
    }

    /// Forgets `stream`'s parked receiver.
    pub(crate) fn unpark(&self, stream: u32) {
        lock(&self.inner).book.parked.remove(&stream);
    }

    /// Wakes every parked receiver (the connection stopped reading).
    fn wake_parked(&self) {
        let parked = std::mem::take(&mut lock(&self.inner).book.parked);
        for (_, w) in parked {
            w.wake();
        }
    }

    /// A receiver's partial message grew (`more`) or shrank by `n` bytes.
    pub(crate) fn adjust(&self, n: usize, more: bool) {
        let mut g = lock(&self.inner);
        if more {
            self.charge(&mut g.book, n);
        } else {
            self.release(&mut g.book, n);
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let i = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        let n = std::mem::take(&mut i.book.charged);
        if n > 0 {
            self.budget.release(n);
        }
    }
}

/// Waits until a connection is no longer [`Ledger::blocked`]: polled by whatever must stop
/// (the socket reader, a sender), it resolves once the budget drops below its limit or the
/// connection's own charges fall within its reserve.
#[derive(Default)]
pub(crate) struct Gate {
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("waiting", &self.wait.is_some())
            .finish()
    }
}

impl Gate {
    /// Ready when `ledger` may take more; else registers `cx` to be woken at the next
    /// release of budget.
    pub(crate) fn poll_open(&mut self, ledger: &Ledger, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if !ledger.blocked() {
                self.wait = None;
                return Poll::Ready(());
            }
            if self.wait.is_none() {
                ledger.wake_parked();
            }
            let wait = self.wait.get_or_insert_with(|| {
                let budget = ledger.budget().clone();
                Box::pin(async move { budget.notified().await })
            });
            // The first poll creates and registers the waiter; the check above runs again
            // after it, so a release in between is not missed.
            match wait.as_mut().poll(cx) {
                Poll::Ready(()) => self.wait = None,
                Poll::Pending => {
                    if !ledger.blocked() {
                        self.wait = None;
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let len = payload.len() as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The client connection preface (`server::PREFACE`, spelled out: the server imports the
    /// ledger, not the other way round).
    fn preface() -> Vec<u8> {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
    }

    #[test]
    fn the_scan_reports_frames_split_anywhere() {
        let mut wire = preface();
        wire.extend(frame(DATA, PADDED | END_STREAM, 3, &[4, 1, 2, 0, 0, 0, 0]));
        wire.extend(frame(0x4, 0, 0, &[]));
        wire.extend(frame(RST_STREAM, 0, 5, &[0, 0, 0, 8]));
        for split in 1..wire.len() {
            let mut scan = FrameScan::inbound();
            let mut got = Vec::new();
            scan.feed(&wire[..split], &mut |e| got.push(e));
            scan.feed(&wire[split..], &mut |e| got.push(e));
            let payload: usize = got
                .iter()
                .map(|e| match e {
                    Scanned::Payload(n) => *n,
                    _ => 0,
                })
                .sum();
            assert_eq!(payload, 11, "split at {split}");
            let frames: Vec<_> = got
                .into_iter()
                .filter(|e| matches!(e, Scanned::Frame { .. }))
                .collect();
            assert_eq!(
                frames,
                [
                    Scanned::Frame {
                        kind: DATA,
                        flags: PADDED | END_STREAM,
                        stream: 3,
                        len: 7,
                        pad: 4
                    },
                    Scanned::Frame {
                        kind: 0x4,
                        flags: 0,
                        stream: 0,
                        len: 0,
                        pad: 0
                    },
                    Scanned::Frame {
                        kind: RST_STREAM,
                        flags: 0,
                        stream: 5,
                        len: 4,
                        pad: 0
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_partial_frame_is_charged_as_it_arrives_and_settled_when_complete() {
        let budget = ByteBudget::new(1 << 20);
        let l = Ledger::new(budget.clone());
        let mut wire = preface();
        wire.extend(frame(0x8, 0, 0, &[0; 4])); // WINDOW_UPDATE
        let data = frame(DATA, 0, 1, &[7; 1000]);
        wire.extend(&data[..509]); // header + 500 bytes
        l.on_read(&wire);
        assert_eq!(budget.used(), 500);
        l.open(1, 100);
        l.on_read(&data[509..]);
        assert_eq!(budget.used(), 100 + 1000 + FRAME_COST);
        l.taken(1, 1000);
        assert_eq!(budget.used(), 100);
        l.close(1);
        // Still charged until its end is written.
        assert_eq!(budget.used(), 100);
        l.on_write(&frame(HEADERS, END_STREAM | 0x4, 1, &[0x88]));
        assert_eq!(budget.used(), 0);
        assert_eq!(l.charged(), 0);
    }

    #[test]
    fn data_before_accept_moves_to_the_stream_and_refused_streams_release_theirs() {
        let budget = ByteBudget::new(1 << 20);
        let l = Ledger::new(budget.clone());
        let mut wire = preface();
        wire.extend(frame(DATA, 0, 1, &[0; 100]));
        wire.extend(frame(DATA, 0, 3, &[0; 200]));
        wire.extend(frame(DATA, 0, 5, &[0; 300]));
        l.on_read(&wire);
        assert_eq!(budget.used(), 600 + 3 * FRAME_COST);
        // Stream 1 refused by h2 (its RST_STREAM written), stream 3 never accepted, 5 is.
        l.on_write(&frame(RST_STREAM, 0, 1, &[0, 0, 0, 7]));
        l.open(5, 10);
        assert_eq!(budget.used(), 300 + FRAME_COST + 10);
        // DATA for a stream below the accepted one and not kept is dropped by h2.
        l.on_read(&frame(DATA, 0, 3, &[0; 50]));
        assert_eq!(budget.used(), 300 + FRAME_COST + 10);
        drop(l);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_stream_is_charged_from_its_headers_frame_and_settled_at_accept() {
        let budget = ByteBudget::new(1 << 20);
        let l = Ledger::new(budget.clone());
        let mut wire = preface();
        // Stream 1: HEADERS without END_HEADERS, then a CONTINUATION.
        wire.extend(frame(HEADERS, 0, 1, &[0; 40]));
        wire.extend(frame(CONTINUATION, 0x4, 1, &[0; 10]));
        wire.extend(frame(HEADERS, 0x4, 3, &[0; 20]));
        wire.extend(frame(HEADERS, 0x4, 5, &[0; 30]));
        wire.extend(frame(DATA, 0, 5, &[0; 100]));
        assert_eq!(l.on_read(&wire), wire.len());
        let heads = 3 * STREAM_COST + 50 + 20 + 30;
        assert_eq!(budget.used(), heads + 100 + FRAME_COST);
        // Trailers on stream 1 (a HEADERS frame on a stream already open) open nothing.
        l.on_read(&frame(HEADERS, 0x5, 1, &[0; 5]));
        assert_eq!(budget.used(), heads + 100 + FRAME_COST);
        // Stream 1 accepted with a decoded header list larger than its block: charged the
        // list; stream 3 refused by h2 (its RST_STREAM written): released.
        l.open(1, STREAM_COST + 200);
        assert_eq!(budget.used(), heads + 150 + 100 + FRAME_COST);
        l.on_write(&frame(RST_STREAM, 0, 3, &[0, 0, 0, 7]));
        assert_eq!(budget.used(), 2 * STREAM_COST + 200 + 30 + 100 + FRAME_COST);
        // Stream 5 accepted with a smaller list: keeps what its HEADERS frame charged, and
        // its DATA moves to it.
        l.open(5, STREAM_COST + 1);
        assert_eq!(budget.used(), 2 * STREAM_COST + 200 + 30 + 100 + FRAME_COST);
        l.taken(5, 100);
        l.close(5);
        l.on_write(&frame(HEADERS, END_STREAM | 0x4, 5, &[0x88]));
        assert_eq!(budget.used(), STREAM_COST + 200);
        // A stream refused by the server releases what its HEADERS frame charged.
        l.on_read(&frame(HEADERS, 0x4, 7, &[0; 10]));
        assert_eq!(budget.used(), 2 * STREAM_COST + 210);
        l.drop_stream(7);
        assert_eq!(budget.used(), STREAM_COST + 200);
        drop(l);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn reading_stops_after_the_frame_that_blocks_the_connection() {
        // Room for the reserve and a little more: the HEADERS frames that use up the budget
        // end the scan, and what follows is left for later.
        let budget = ByteBudget::new(CONN_RESERVE + STREAM_COST);
        let l = Ledger::new(budget.clone());
        let mut wire = preface();
        let mut ends = Vec::new();
        for i in 0..10u32 {
            wire.extend(frame(HEADERS, 0x4, 2 * i + 1, &[0; 16]));
            ends.push(wire.len());
        }
        let n = l.on_read(&wire);
        assert!(l.blocked());
        // The first frame after which the connection is blocked ends the scan.
        let blocking = (CONN_RESERVE + STREAM_COST) / (STREAM_COST + 16) + 1;
        assert_eq!(n, ends[blocking - 1]);
        assert_eq!(l.charged(), blocking * (STREAM_COST + 16));
        // The rest is scanned once fed again (the server does so when the gate opens).
        for s in 0..blocking as u32 {
            l.drop_stream(2 * s + 1);
        }
        assert!(!l.blocked());
        let m = l.on_read(&wire[n..]);
        assert_eq!(n + m, wire.len());
    }

    #[test]
    fn sent_data_is_charged_until_written_or_reset() {
        let budget = ByteBudget::new(1 << 20);
        let l = Ledger::new(budget.clone());
        l.on_read(&preface());
        l.open(1, 0);
        l.open(3, 0);
        l.handed(1, 5000);
        l.handed(3, 7000);
        assert_eq!(budget.used(), 12_000);
        l.on_write(&frame(DATA, 0, 1, &[0; 4000 - FRAME_COST]));
        assert_eq!(budget.used(), 8000);
        // The peer resets stream 3: h2 drops what it had to send.
        l.on_read(&frame(RST_STREAM, 0, 3, &[0, 0, 0, 8]));
        assert_eq!(budget.used(), 1000);
        l.on_write(&frame(DATA, END_STREAM, 1, &[0; 1000]));
        assert_eq!(budget.used(), 0);
        l.close(1);
        l.close(3);
        assert_eq!(l.charged(), 0);
    }

    #[test]
    fn padding_and_tiny_frames_are_charged_for_what_h2_keeps() {
        let budget = ByteBudget::new(1 << 20);
        let l = Ledger::new(budget.clone());
        l.on_read(&preface());
        l.open(1, 0);
        // 1 byte of data, 1 pad-length byte, 10 bytes of padding.
        let mut p = vec![10, 0xaa];
        p.extend([0; 10]);
        l.on_read(&frame(DATA, PADDED, 1, &p));
        assert_eq!(budget.used(), 1 + FRAME_COST);
        for _ in 0..100 {
            l.on_read(&frame(DATA, 0, 1, &[1]));
        }
        assert_eq!(budget.used(), 101 * (1 + FRAME_COST));
        l.close(1);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_connection_within_its_reserve_is_never_blocked() {
        let budget = ByteBudget::new(1000);
        let hog = Ledger::new(budget.clone());
        let good = Ledger::new(budget.clone());
        hog.on_read(&preface());
        hog.open(1, CONN_RESERVE + 5000);
        assert!(budget.is_exhausted());
        assert!(hog.blocked());
        good.open(1, 500);
        assert!(!good.blocked());
        hog.close(1);
        hog.on_write(&frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        assert!(!budget.is_exhausted());
        assert!(!hog.blocked());
    }

    #[tokio::test]
    async fn the_gate_opens_when_the_budget_is_released() {
        let budget = ByteBudget::new(1000);
        let hog = Ledger::new(budget.clone());
        hog.open(1, CONN_RESERVE + 5000);
        let other = Ledger::new(budget.clone());
        other.open(1, 10);
        let waiter = {
            let hog = hog.clone();
            tokio::spawn(async move {
                let mut gate = Gate::default();
                std::future::poll_fn(|cx| gate.poll_open(&hog, cx)).await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // The hog's own stream ends: it falls within its reserve and the budget recovers.
        hog.close(1);
        hog.on_write(&frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the gate opened")
            .expect("no panic");
    }
}
