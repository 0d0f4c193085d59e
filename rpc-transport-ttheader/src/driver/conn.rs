//! The socket scaffold every TTHeader connection shares (ttstream sessions, unary client and
//! server connections): a writer task draining the connection's [`WriteQueue`] into the
//! socket's write half, a reader task parsing what the read half delivers (paused under
//! backpressure, bounded by the frame and idle timeouts) that writes the replies of its own
//! turns itself when the socket takes them (see [`WriteQueue::end_reader_turn`]), and one
//! `fail` that ends everything the connection carries, called by whichever task stops first.

use std::sync::Arc;

use bytes::BytesMut;
use rpc_core::limits::ByteBudget;
use rpc_core::Status;

use super::io::{Io, ReadHalf};
pub(crate) use super::reader::ReadTimeouts;
use super::reader::{read_some, Read, ReadBuffer, ReadClock, Room};
use super::write::WriteQueue;
use crate::common::{pause_while, Lifecycle};
use crate::proto::Packet;
use crate::session::Limits;

/// How often a reader paused while it counts pinned read chunks (see
/// `ReadBuffer::has_pinned`) looks again whether they were freed: a handler that handed a
/// slice of a request to another task frees it without a signal the pause waits on. 10 ms
/// costs nothing measurable while paused and bounds how long a freed chunk keeps the
/// connection waiting.
const PINNED_RECHECK: std::time::Duration = std::time::Duration::from_millis(10);

/// A connection driven by [`start`]'s two tasks.
pub(crate) trait Connection: Send + Sync + 'static {
    /// The queue the writer task drains.
    fn write_queue(&self) -> &WriteQueue;

    /// Lost state and the reader's signal.
    fn life(&self) -> &Lifecycle;

    /// Takes whole frames off the front of `buf` and handles them; returns whether it took
    /// any. It may stop early (while the connection must pause). An error ends the connection.
    fn parse(self: &Arc<Self>, buf: &mut BytesMut) -> Result<bool, Status>;

    /// The timeouts that bound the reader (a server's come from its limits).
    fn read_timeouts(&self) -> ReadTimeouts;

    /// Server side: the budget unparsed bytes are charged to.
    fn budget(&self) -> Option<&Arc<ByteBudget>> {
        None
    }

    /// Whether the reader must stop reading; `unparsed` is what its buffer holds (charged).
    fn must_pause(&self, _unparsed: usize) -> bool {
        false
    }

    /// Server side: whether the connection may hold a read buffer of `reader` bytes on its
    /// reserve (`Limits::conn_reserve`) with everything else it holds, past a spent budget.
    fn within_reserve(&self, _reader: usize) -> bool {
        true
    }

    /// The length of the frame at the front of `buf`, when its bytes say it (a TTHeader
    /// packet's or a framed Thrift message's `u32` length, plus those 4 bytes).
    fn frame_len(&self, buf: &[u8]) -> Option<usize> {
        let len = buf.get(..4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        len.checked_add(4)
    }

    /// Whether nothing is in flight (the idle clock runs).
    fn is_idle(&self) -> bool {
        false
    }

    /// The idle timeout passed: stop taking new calls if still idle, atomically with the
    /// paths that start calls, and say whether it did (then the connection closes).
    fn retire_idle(&self) -> bool {
        true
    }

    /// Ends the connection and everything it carries with `status` (once).
    fn fail(&self, status: Status);

    /// [`Connection::fail`] when the peer provably did not take the end of what this side
    /// wrote last: a write failed (its bytes were not all accepted by the kernel), or a Unix
    /// socket's read failed with a reset (Linux resets the survivor of a Unix stream pair
    /// only when the closing side left bytes unread in its receive queue).
    fn fail_unread(&self, status: Status) {
        self.fail(status);
    }

    /// Server side: whether the reader should shut the socket's read direction down now
    /// ([`ReadHalf::shutdown_read`]: a drain on a Unix socket). It then reads what the peer
    /// sent before, serves it, and at end-of-file waits until [`Connection::is_idle`] (or
    /// the connection is lost) before it ends the connection.
    fn shut_reads(&self) -> bool {
        false
    }

    /// Client side: whether, when the peer closed, the reader waits (briefly) for the writer
    /// to finish what it was writing first — so a write the closed peer refused is reported
    /// as such ([`Connection::fail_unread`]) rather than as the plain end the reader saw.
    fn settle_writes(&self) -> bool {
        false
    }
}

/// How long a reader waits for the writer at the peer's close ([`Connection::settle_writes`]).
const SETTLE_WRITES: std::time::Duration = std::time::Duration::from_secs(1);

/// Spawns the writer and the reader of `conn` over `io`; `prefix` holds bytes already read
/// (protocol detection).
pub(crate) fn start<C: Connection>(conn: &Arc<C>, io: Io, prefix: BytesMut) {
    let (rd, wr) = io.into_split();
    conn.write_queue().attach(wr);
    let writer = conn.clone();
    tokio::spawn(async move {
        match writer.write_queue().run_writer().await {
            Ok(()) => writer.fail(Status::unavailable("connection closed")),
            Err(e) => writer.fail_unread(Status::unavailable(format!("write failed: {e}"))),
        }
    });
    let reader = conn.clone();
    tokio::spawn(async move {
        let (status, unread) = run_reader(&reader, rd, prefix).await;
        if unread {
            reader.fail_unread(status);
        } else {
            reader.fail(status);
        }
    });
}

/// Whether a read error says the peer closed a Unix socket with bytes of ours unread.
fn reset_unread(rd: &ReadHalf, status: &Status) -> bool {
    rd.is_unix()
        && status
            .source_error()
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
}

/// Parses, pauses while it must, reads; until the connection ends. Returns why, and whether
/// the peer provably left bytes of ours unread ([`Connection::fail_unread`]).
async fn run_reader<C: Connection>(
    conn: &Arc<C>,
    mut rd: ReadHalf,
    prefix: BytesMut,
) -> (Status, bool) {
    let mut clock = ReadClock::new(conn.read_timeouts());
    let mut rb = ReadBuffer::new(prefix, conn.budget().cloned());
    let life = conn.life();
    let mut shut = false;
    let queue = conn.write_queue();
    // The turn ends however the reader does (its replies go out, appends wake the writer).
    let _turn = TurnEnd(queue);
    loop {
        // What handlers that complete at once reply while the reader parses goes out with one
        // write from this task when the reader next waits (see `flush_before_waiting`), or
        // at once when it is a batch worth its syscall (`TURN_FLUSH_AT`); the writer task is
        // woken only if the socket is full or busy: no task switch and no scheduler round per
        // batch.
        queue.begin_reader_turn();
        let parsed = conn.parse(&mut rb.buf);
        queue.flush_full_turn();
        let decoded = match parsed {
            Ok(d) => d,
            Err(status) => return (status, false),
        };
        rb.after_parse();
        clock.after_decode(rb.buf.len(), decoded);
        // Backpressure: stop reading while the connection must not take more (the
        // connection's `must_pause` says why), or while its buffer must grow and the budget
        // has no room for it.
        let within = |n: usize| conn.within_reserve(n);
        let recheck = rb.has_pinned();
        let pause = pause_while(
            conn.budget().map(|b| &**b),
            [life.reader(), &conn.write_queue().progress],
            || conn.must_pause(rb.held()) || rb.must_wait(conn.frame_len(&rb.buf), within),
            || life.lost().is_some(),
        );
        let paused = if recheck {
            // A pinned chunk is freed by whoever drops the last slice of it, which signals
            // nothing: a pause that counts one looks again now and then.
            flush_before_waiting(queue, tokio::time::timeout(PINNED_RECHECK, pause))
                .await
                .unwrap_or(true)
        } else {
            flush_before_waiting(queue, pause).await
        };
        if paused {
            clock.after_pause(rb.buf.len());
            // Parse what is buffered before reading more.
            continue;
        }
        if let Some(s) = life.lost() {
            return (s.clone(), false);
        }
        if !shut && conn.shut_reads() {
            shut = match rd.shutdown_read() {
                Ok(done) => done,
                Err(e) => {
                    tracing::debug!(error = %e, "shutdown(SHUT_RD) failed");
                    false
                }
            };
        }
        let frame_len = conn.frame_len(&rb.buf);
        if rb.grow(frame_len, within) == Room::Wait {
            // The room went to another connection meanwhile: let it run, then wait again.
            queue.end_reader_turn();
            tokio::task::yield_now().await;
            continue;
        }
        let spare = rb.buf.capacity() - rb.buf.len();
        let before = rb.buf.len();
        let read = read_some(
            &mut rd,
            &mut rb.buf,
            &mut clock,
            || conn.is_idle(),
            life.reader(),
        );
        match flush_before_waiting(queue, read).await {
            Read::Bytes => rb.after_read(rb.buf.len() - before, spare),
            Read::Woken => {}
            Read::End(status) => {
                queue.end_reader_turn();
                if conn.settle_writes() {
                    let settled = pause_while(
                        None,
                        [&queue.progress, life.reader()],
                        || queue.backlog() > 0,
                        || life.lost().is_some(),
                    );
                    let _ = tokio::time::timeout(SETTLE_WRITES, settled).await;
                }
                if shut {
                    // The end of what the peer sent before the shutdown: the calls read
                    // before it are answered, then the connection ends.
                    life.drain(|| conn.is_idle()).await;
                }
                let unread = reset_unread(&rd, &status);
                return (status, unread);
            }
            Read::Idle(status) => {
                if conn.retire_idle() {
                    return (status, false);
                }
            }
        }
    }
}

/// Awaits `fut`; when it has to wait, the reader's turn ends first
/// ([`WriteQueue::end_reader_turn`]): the replies to everything read since the reader last
/// waited go out with one write, and appends from then on wake the writer task.
async fn flush_before_waiting<F: std::future::Future>(queue: &WriteQueue, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut open = true;
    std::future::poll_fn(|cx| {
        let polled = fut.as_mut().poll(cx);
        if polled.is_pending() && std::mem::take(&mut open) {
            queue.end_reader_turn();
        }
        polled
    })
    .await
}

/// Ends the reader's turn when the reader stops, whatever stops it.
struct TurnEnd<'q>(&'q WriteQueue);

impl Drop for TurnEnd<'_> {
    fn drop(&mut self) {
        self.0.end_reader_turn();
    }
}

/// Decodes whole TTHeader packets off the front of `buf` while `go_on(unparsed)` holds and
/// hands each to `handle` with its length on the wire; returns whether it took any. A byte stream that cannot be delimited
/// (or a `handle` error) ends the connection.
pub(crate) fn decode_packets(
    buf: &mut BytesMut,
    limits: &Limits,
    mut go_on: impl FnMut(usize) -> bool,
    mut handle: impl FnMut(Packet, usize) -> Result<(), Status>,
) -> Result<bool, Status> {
    let limits = limits.proto();
    let mut decoded = false;
    while go_on(buf.len()) {
        let before = buf.len();
        match Packet::decode(buf, &limits) {
            Ok(Some(p)) => {
                decoded = true;
                handle(p, before - buf.len())?;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "malformed TTHeader frame; closing the connection");
                return Err(Status::internal(format!("malformed frame: {e}")));
            }
        }
    }
    Ok(decoded)
}
