//! The connection's outgoing byte queue and its writer task.
//!
//! Streams encode frames straight into one shared buffer (no per-frame allocation, no copy of
//! the message), and a single writer task takes everything queued so far and writes it with one
//! `write_all`: under load many frames go out per syscall, and nothing is flushed per frame
//! while more are queued. The buffer is bounded: senders wait in `poll_ready` while it holds
//! more than the limit. Control frames (Header, Trailer, Rst, refusals) skip that wait, so
//! closing or cancelling never blocks, but they count toward the limit like data: a server
//! reader stops reading while the queue (including the batch being written) is at twice its
//! limit ([`WriteQueue::backlog`]: one full queue behind one full batch in flight), so a peer that never reads cannot make the server queue
//! replies or refusals without bound.
//!
//! What is appended while the connection's reader handles what it read (handlers that
//! complete at once reply inside that turn) is written by the reader itself when its turn
//! ends (when it next has to wait: everything several reads in a row brought goes out
//! together), with non-blocking writes, if nobody else is writing: no wake of the writer task
//! and no scheduler round per batch. Whoever writes holds the socket's write half (taken out
//! of the queue's state and put back), so batches never interleave; what the socket does not
//! take is left to the writer task, which writes it before anything queued after it.
//!
//! On the server, the queue's memory is charged to the server-wide
//! [`ByteBudget`](rpc_core::limits::ByteBudget): the capacity of its buffers (what the process
//! holds, growth slack included), not only the bytes queued. The writer takes the queued bytes
//! as a whole buffer (the queue goes on in a spare one) and, once they are written, keeps that
//! buffer as the next spare while more is queued; when the queue runs dry it lets buffers over
//! [`SPARE_MAX`] go: an idle connection holds at most two small buffers.
//! While the budget is used up, a queue holding more than its reserve
//! ([`Limits::conn_reserve`]) makes senders wait too, so connections to peers that do not read
//! cannot together hold more than the budget plus one reserve each.
//!

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use rpc_core::codec::Encodable;
use rpc_core::limits::ByteBudget;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::io::WriteHalf;
use crate::proto::StreamFrame;
use crate::session::{append_data_frame, BufWriter, FrameSink, FrameWriter, Limits, SinkError};

/// The largest buffer the writer keeps for reuse once written while the connection is idle
/// (nothing queued): queues of small frames reuse theirs (no allocation per batch), and an idle
/// connection holds at most two such buffers. While more is queued (a stream in full flow) it
/// keeps the written buffer whatever its size, up to the queue's limit, for the next batch.
pub(crate) const SPARE_MAX: usize = 8 * 1024;

/// A reader's turn flushes its replies before it next waits, or as soon as this much is queued
/// ([`WriteQueue::flush_full_turn`]). Small batches wait for the replies to what the reader
/// reads next (one syscall for more of them); from 4 KiB — some 25 small replies — the
/// syscall is well amortised, and holding the replies back would only make a pipelining peer
/// wait: with one connection and 64 calls in flight, flushing only when the reader waited
/// halved the calls per second against flushing each turn.
pub(crate) const TURN_FLUSH_AT: usize = 4 * 1024;

pub(crate) struct WriteQueue {
    state: Mutex<WriteState>,
    /// The connection's reader is handling what it read (see [`WriteQueue::begin_reader_turn`]):
    /// appends do not wake the writer task, the reader flushes them when its turn ends.
    reader_turn: AtomicBool,
    writer: Notify,
    /// Signalled whenever the backlog shrinks (a batch was taken or written): the connection's
    /// reader waits on it while the queue is over its limit.
    pub(crate) progress: Notify,
    limit: usize,
    /// Server side: the server-wide budget the queue's buffers are charged to, and what this
    /// queue may keep holding while that budget is used up.
    budget: Option<(Arc<ByteBudget>, usize)>,
}

struct WriteState {
    buf: BytesMut,
    /// Bytes of the batch the writer is writing now (taken out of `buf`, not yet written).
    writing: usize,
    /// The capacity of that batch's buffer.
    writing_cap: usize,
    /// An emptied buffer (at most [`SPARE_MAX`]) the queue goes on in when the writer takes
    /// the next batch.
    spare: BytesMut,
    /// The capacity of the three buffers, as charged to the budget (server side).
    held: usize,
    closed: bool,
    waiters: Vec<Waker>,
    /// The socket while nobody writes to it: whoever writes a batch (the writer task, or the
    /// reader flushing at the end of its turn) takes it out and puts it back, so batches never
    /// interleave. `None` before [`WriteQueue::attach`] and after the writer ended.
    sock: Option<WriteHalf>,
    /// The part of a batch a reader's flush could not write (the socket was full): the writer
    /// task writes it before anything queued after it. Counted in `writing`.
    rest: Option<BytesMut>,
    /// The reader holds `sock` (flushing at the end of its turn).
    flushing: bool,
}

/// The queue was closed (the connection is gone).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Closed;

impl WriteQueue {
    pub(crate) fn new(limit: usize) -> WriteQueue {
        WriteQueue {
            state: Mutex::new(WriteState {
                buf: BytesMut::new(),
                writing: 0,
                writing_cap: 0,
                spare: BytesMut::new(),
                held: 0,
                closed: false,
                waiters: Vec::new(),
                sock: None,
                rest: None,
                flushing: false,
            }),
            reader_turn: AtomicBool::new(false),
            writer: Notify::new(),
            progress: Notify::new(),
            limit,
            budget: None,
        }
    }

    /// A connection's queue: bounded by [`Limits::write_buffer`]; on the server side
    /// (`budget`), its buffers are charged to the server-wide budget, and while it is used up
    /// senders wait once the queue holds more than [`Limits::conn_reserve`].
    pub(crate) fn for_conn(limits: &Limits, budget: Option<&Arc<ByteBudget>>) -> WriteQueue {
        let mut q = WriteQueue::new(limits.write_buffer);
        q.budget = budget.map(|b| (b.clone(), limits.conn_reserve));
        q
    }

    /// Bytes queued or being written (control frames included). A server reader stops reading
    /// while this is at twice the limit, until [`WriteQueue::progress`] says it shrank.
    pub(crate) fn backlog(&self) -> usize {
        let st = self.lock();
        st.buf.len() + st.writing
    }

    /// [`WriteQueue::backlog`] and [`WriteQueue::held`] under one lock.
    pub(crate) fn backlog_and_held(&self) -> (usize, usize) {
        let st = self.lock();
        (st.buf.len() + st.writing, st.held)
    }

    /// The capacity of the queue's buffers (what it holds, charged to the budget).
    pub(crate) fn held(&self) -> usize {
        self.lock().held
    }

    fn budget_blocks(&self, st: &WriteState) -> bool {
        // Only with a backlog, whose writing wakes the waiters: no wakeup is lost.
        self.budget.as_ref().is_some_and(|(b, reserve)| {
            b.is_exhausted() && st.buf.len() + st.writing > 0 && st.held > *reserve
        })
    }

    /// Charges or releases the change in the buffers' capacity.
    fn recharge(&self, st: &mut WriteState) {
        let now = st.buf.capacity() + st.writing_cap + st.spare.capacity();
        if let Some((b, _)) = &self.budget {
            if now > st.held {
                b.charge(now - st.held);
            } else if now < st.held {
                b.release(st.held - now);
            }
        }
        st.held = now;
    }

    fn lock(&self) -> MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready while the queue holds less than its limit.
    pub(crate) fn poll_ready(&self, cx: &Context<'_>) -> Poll<Result<(), Closed>> {
        let mut st = self.lock();
        if st.closed {
            return Poll::Ready(Err(Closed));
        }
        // While the budget blocks, a backlog is queued or being written, so the writer wakes
        // the waiters when it takes or finishes a batch: no wakeup is lost.
        if st.buf.len() < self.limit && !self.budget_blocks(&st) {
            return Poll::Ready(Ok(()));
        }
        if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            st.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Appends bytes with `f` and wakes the writer. `f` must leave the buffer as it found it on
    /// error (the frame encoders do).
    pub(crate) fn append<R>(&self, f: impl FnOnce(&mut BytesMut) -> R) -> Result<R, Closed> {
        let mut st = self.lock();
        if st.closed {
            return Err(Closed);
        }
        let was_empty = st.buf.is_empty();
        let r = f(&mut st.buf);
        let has_bytes = !st.buf.is_empty();
        // Charged under the lock, before the writer can see (and release) the bytes.
        self.recharge(&mut st);
        drop(st);
        // During the reader's turn the reader flushes when it ends (it clears the flag before
        // it looks at the queue under the lock, so it sees these bytes: no wakeup is lost).
        if was_empty && has_bytes && !self.reader_turn.load(Ordering::Acquire) {
            self.writer.notify_one();
        }
        Ok(r)
    }

    /// The connection's reader starts handling what it read: what handlers that complete at
    /// once (and the reader itself) append until [`WriteQueue::end_reader_turn`] goes out with
    /// one write from the reader's task, without waking the writer task.
    pub(crate) fn begin_reader_turn(&self) {
        self.reader_turn.store(true, Ordering::Release);
    }

    /// The reader's turn ends: writes what is queued from this task when nobody else is
    /// writing, as much as the socket takes now without waiting; what it does not take (or
    /// what cannot be written from here: a boxed stream, the writer task busy) is left to the
    /// writer task, woken for it.
    pub(crate) fn end_reader_turn(&self) {
        let st = self.lock();
        // Cleared under the lock: an append made after it wakes the writer, one made before
        // it is in what this flush takes.
        self.reader_turn.store(false, Ordering::Release);
        self.flush_turn(st);
    }

    /// Ends the reader's turn early, as [`WriteQueue::end_reader_turn`], if at least
    /// [`TURN_FLUSH_AT`] bytes are queued: a batch that size is worth its syscall now, and
    /// the peer can start on those replies while the reader reads on.
    pub(crate) fn flush_full_turn(&self) {
        let st = self.lock();
        if st.buf.len() < TURN_FLUSH_AT {
            return;
        }
        self.reader_turn.store(false, Ordering::Release);
        self.flush_turn(st);
    }

    fn flush_turn(&self, mut st: MutexGuard<'_, WriteState>) {
        if st.buf.is_empty() {
            return;
        }
        let direct = !st.closed
            && st.rest.is_none()
            && st.sock.as_ref().is_some_and(WriteHalf::can_try_write);
        if !direct {
            drop(st);
            self.writer.notify_one();
            return;
        }
        let Some(sock) = st.sock.take() else {
            return;
        };
        st.flushing = true;
        let mut batch = self.take_batch(&mut st);
        drop(st);
        let mut written = 0;
        while written < batch.len() {
            match sock.try_write(&batch[written..]) {
                Ok(n) if n > 0 => written += n,
                // Full (or failed: the writer task meets the error again and reports it).
                _ => break,
            }
        }
        let waiters = {
            let mut st = self.lock();
            st.sock = Some(sock);
            st.flushing = false;
            if written == batch.len() {
                self.batch_written(&mut st, batch);
            } else {
                // The writer task writes the rest first; the whole buffer stays charged.
                bytes::Buf::advance(&mut batch, written);
                st.writing = batch.len();
                st.rest = Some(batch);
            }
            let wake_writer = st.rest.is_some() || !st.buf.is_empty() || st.closed;
            let waiters = std::mem::take(&mut st.waiters);
            drop(st);
            if wake_writer {
                self.writer.notify_one();
            }
            waiters
        };
        waiters.into_iter().for_each(Waker::wake);
        if written > 0 {
            // The backlog shrank: a reader paused on it looks again (this one may be it).
            self.progress.notify_one();
        }
    }

    /// Takes everything queued as the batch to write (the queue goes on in the spare buffer),
    /// counted in `writing` until [`WriteQueue::batch_written`].
    fn take_batch(&self, st: &mut WriteState) -> BytesMut {
        let spare = std::mem::take(&mut st.spare);
        let batch = std::mem::replace(&mut st.buf, spare);
        st.writing = batch.len();
        st.writing_cap = batch.capacity();
        self.recharge(st);
        batch
    }

    /// A batch went out: it is no longer counted, and its buffer is kept as the spare when
    /// small enough (or while more is queued), else let go.
    fn batch_written(&self, st: &mut WriteState, mut batch: BytesMut) {
        st.writing = 0;
        st.writing_cap = 0;
        let keep = if st.buf.is_empty() {
            SPARE_MAX
        } else {
            self.limit.max(SPARE_MAX)
        };
        if batch.capacity() <= keep && st.spare.capacity() == 0 {
            batch.clear();
            st.spare = batch;
        }
        self.recharge(st);
    }

    /// Hands the socket's write half to the queue (before the writer task and the reader
    /// start).
    pub(crate) fn attach(&self, out: WriteHalf) {
        self.lock().sock = Some(out);
    }

    /// Stops accepting bytes; the writer flushes what is queued and exits.
    pub(crate) fn close(&self) {
        let waiters = {
            let mut st = self.lock();
            st.closed = true;
            std::mem::take(&mut st.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
        self.writer.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Writes everything appended, batch by batch, until the queue is closed and drained or the
    /// socket fails; the socket is the one [`WriteQueue::attach`] gave (none: returns at
    /// once). On return the queue is closed and holds nothing (all charges released).
    pub(crate) async fn run_writer(&self) -> std::io::Result<()> {
        let r = self.write_batches().await;
        let (waiters, sock) = {
            let mut st = self.lock();
            st.closed = true;
            st.buf = BytesMut::new();
            st.spare = BytesMut::new();
            st.rest = None;
            st.writing = 0;
            st.writing_cap = 0;
            self.recharge(&mut st);
            (std::mem::take(&mut st.waiters), st.sock.take())
        };
        drop(sock);
        waiters.into_iter().for_each(Waker::wake);
        self.progress.notify_one();
        r
    }

    async fn write_batches(&self) -> std::io::Result<()> {
        loop {
            let (batch, mut out, whole) = loop {
                let notified = self.writer.notified();
                {
                    let mut st = self.lock();
                    // `None` while the reader flushes: it wakes this task when it is done.
                    if st.sock.is_some() {
                        if let Some(rest) = st.rest.take() {
                            let out = st.sock.take();
                            break (Some(rest), out, false);
                        }
                        if !st.buf.is_empty() {
                            // The whole buffer is the batch; the queue goes on in the spare.
                            let batch = self.take_batch(&mut st);
                            let waiters = std::mem::take(&mut st.waiters);
                            let out = st.sock.take();
                            drop(st);
                            waiters.into_iter().for_each(Waker::wake);
                            break (Some(batch), out, true);
                        }
                        if st.closed {
                            let out = st.sock.take();
                            break (None, out, true);
                        }
                    } else if !st.flushing {
                        // No socket was attached: nothing can be written.
                        return Ok(());
                    }
                    // Idle: let large buffers go (a burst's), keep small ones.
                    if st.spare.capacity() > SPARE_MAX {
                        st.spare = BytesMut::new();
                    }
                    // (Bytes may be queued while the reader holds the socket: those stay.)
                    if st.buf.is_empty() && st.buf.capacity() > SPARE_MAX {
                        st.buf = BytesMut::new();
                    }
                    self.recharge(&mut st);
                }
                notified.await;
                // Woken by the first frame of a burst: let the tasks that are ready right now
                // (other handlers finishing) append theirs too, so they share one syscall. Not
                // `tokio::task::yield_now`: that one polls the I/O driver first, one more
                // `epoll_wait` per batch, and what the batch waits for is already queued.
                rpc_core::transport::yield_to_ready().await;
            };
            let Some(mut out) = out.take() else {
                // Checked above: the socket was there.
                return Ok(());
            };
            match batch {
                Some(batch) => {
                    // On an error the batch stays counted in `writing`; `run_writer` releases it.
                    out.write_all(&batch).await?;
                    let waiters = {
                        let mut st = self.lock();
                        st.sock = Some(out);
                        if whole {
                            self.batch_written(&mut st, batch);
                        } else {
                            // The rest of a reader's batch (advanced): not reused.
                            st.writing = 0;
                            st.writing_cap = 0;
                            drop(batch);
                            self.recharge(&mut st);
                        }
                        std::mem::take(&mut st.waiters)
                    };
                    waiters.into_iter().for_each(Waker::wake);
                    self.progress.notify_one();
                }
                None => {
                    let _ = out.shutdown().await;
                    return Ok(());
                }
            }
        }
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        // A queue whose writer never ran (or bytes appended after it stopped, before `closed`
        // was seen): release what is still charged.
        let held = self.state.get_mut().unwrap_or_else(|e| e.into_inner()).held;
        if let (Some((b, _)), true) = (&self.budget, held > 0) {
            b.release(held);
        }
    }
}

/// The socket transport's sink: frames are appended to the queue the writer task drains.
impl FrameSink for WriteQueue {
    fn poll_ready(&self, cx: &mut Context<'_>, _len: usize) -> Poll<Result<(), SinkError>> {
        WriteQueue::poll_ready(self, cx).map_err(|Closed| SinkError::Closed)
    }

    fn append_frame(&self, frame: &StreamFrame) -> Result<(), SinkError> {
        match self.append(|buf| frame.encode(buf)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SinkError::Frame(rpc_core::Status::internal(format!(
                "encode frame: {e}"
            )))),
            Err(Closed) => Err(SinkError::Closed),
        }
    }

    fn append_data(
        &self,
        head: &[u8],
        msg: &mut dyn Encodable,
        max_frame: usize,
    ) -> Result<(), SinkError> {
        match self.append(|buf| append_data_frame(buf, head, msg, max_frame)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(SinkError::Frame(status)),
            Err(Closed) => Err(SinkError::Closed),
        }
    }

    fn append_batch(&self, write: &mut dyn FnMut(&mut dyn FrameWriter)) {
        // One lock, one budget charge and at most one wake-up of the writer for all of them.
        if let Err(Closed) = self.append(|buf| write(&mut BufWriter(Some(buf)))) {
            write(&mut BufWriter(None));
        }
    }

    fn backlog(&self) -> usize {
        WriteQueue::backlog(self)
    }

    fn held(&self) -> usize {
        WriteQueue::held(self)
    }

    fn progress(&self) -> &Notify {
        &self.progress
    }

    fn close(&self) {
        WriteQueue::close(self);
    }

    fn is_closed(&self) -> bool {
        WriteQueue::is_closed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::StreamProtocol;
    use bytes::BufMut;

    /// A message of `n` bytes.
    struct Raw(usize);

    impl Encodable for Raw {
        fn encode(&mut self, dst: &mut BytesMut) -> Result<(), rpc_core::Status> {
            dst.put_bytes(b'm', self.0);
            Ok(())
        }
        fn encode_slice(&mut self, dst: &mut [u8]) -> Result<(), rpc_core::Status> {
            dst.fill(b'm');
            Ok(())
        }
        fn encode_dyn(&mut self, dst: &mut dyn bytes::BufMut) -> Result<(), rpc_core::Status> {
            dst.put_bytes(b'm', self.0);
            Ok(())
        }
        fn encoded_len(&self) -> Option<usize> {
            Some(self.0)
        }
    }

    const P: StreamProtocol = StreamProtocol::Protobuf;

    fn head(id: i32) -> Vec<u8> {
        let mut b = BytesMut::new();
        StreamFrame::new(crate::proto::FrameKind::Data, id, "M", P)
            .encode_head(0, &mut b)
            .unwrap();
        b.to_vec()
    }

    #[test]
    fn the_queue_charges_its_buffers_capacity_and_releases_it_when_dropped() {
        let budget = ByteBudget::new(1 << 30);
        let limits = Limits::default();
        let q = WriteQueue::for_conn(&limits, Some(&budget));
        assert_eq!(
            (q.held(), budget.used()),
            (0, 0),
            "nothing allocated up front"
        );
        for _ in 0..100 {
            q.append_data(&head(1), &mut Raw(1000), 1 << 20).unwrap();
        }
        let held = q.held();
        assert!(held >= q.backlog(), "capacity, not only the bytes queued");
        assert_eq!(budget.used(), held);
        drop(q);
        assert_eq!(budget.used(), 0);
    }

    /// A queue attached to one end of a Unix socket pair, and the other end.
    fn attached(budget: Option<&Arc<ByteBudget>>) -> (WriteQueue, tokio::net::UnixStream) {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let q = WriteQueue::for_conn(&Limits::default(), budget);
        let (_rd, wr) = rpc_core::net::Io::new(rpc_core::net::IoStream::Unix(a)).into_split();
        q.attach(wr);
        (q, b)
    }

    async fn read_exactly(peer: &mut tokio::net::UnixStream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0; n];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            peer.read_exact(&mut got),
        )
        .await
        .expect("the bytes arrive")
        .unwrap();
        got
    }

    #[tokio::test]
    async fn the_reader_writes_its_turns_replies_itself_without_the_writer_task() {
        let (q, mut peer) = attached(None);
        q.begin_reader_turn();
        q.append(|b| b.put_slice(b"one ")).unwrap();
        q.append(|b| b.put_slice(b"two")).unwrap();
        assert_eq!(q.backlog(), 7, "held until the turn ends");
        q.end_reader_turn();
        // No writer task runs in this test: the reader's flush wrote them.
        assert_eq!(read_exactly(&mut peer, 7).await, b"one two");
        assert_eq!(q.backlog(), 0);
        let st = q.lock();
        assert!(st.sock.is_some() && !st.flushing && st.rest.is_none());
    }

    #[tokio::test]
    async fn a_turn_flushes_early_only_once_a_batch_is_worth_its_syscall() {
        let (q, mut peer) = attached(None);
        q.begin_reader_turn();
        q.append(|b| b.put_bytes(b'a', TURN_FLUSH_AT - 1)).unwrap();
        q.flush_full_turn();
        assert_eq!(
            q.backlog(),
            TURN_FLUSH_AT - 1,
            "small: waits for the next read's replies"
        );
        assert!(q.reader_turn.load(Ordering::Acquire), "the turn goes on");
        q.append(|b| b.put_u8(b'b')).unwrap();
        q.flush_full_turn();
        assert!(!q.reader_turn.load(Ordering::Acquire), "the turn ended");
        let got = read_exactly(&mut peer, TURN_FLUSH_AT).await;
        assert!(got[..TURN_FLUSH_AT - 1].iter().all(|&c| c == b'a'));
        assert_eq!(got[TURN_FLUSH_AT - 1], b'b');
        assert_eq!(q.backlog(), 0);
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_is_written_by_the_writer_task_in_order() {
        let budget = ByteBudget::new(1 << 30);
        let (q, mut peer) = attached(Some(&budget));
        let q = Arc::new(q);
        // More than a Unix socket buffers: the flush leaves a rest for the writer task.
        const TOTAL: usize = 4 << 20;
        let expected: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        q.begin_reader_turn();
        q.append(|b| b.put_slice(&expected[..TOTAL / 2])).unwrap();
        q.end_reader_turn();
        assert!(q.lock().rest.is_some(), "the socket took only part of it");
        // Queued behind the rest: must follow it on the wire.
        q.append(|b| b.put_slice(&expected[TOTAL / 2..])).unwrap();
        let writer = tokio::spawn({
            let q = q.clone();
            async move { q.run_writer().await }
        });
        assert!(
            read_exactly(&mut peer, TOTAL).await == expected,
            "every byte, in order"
        );
        q.close();
        writer.await.unwrap().unwrap();
        assert_eq!(budget.used(), 0, "all charges released");
    }

    #[tokio::test]
    async fn bytes_queued_while_the_reader_holds_the_socket_are_kept_and_written() {
        let (q, mut peer) = attached(None);
        let q = Arc::new(q);
        // The reader holds the socket (mid-flush) when the writer wakes with a large queue:
        // the writer must wait for it, not take the queue for an idle one.
        let sock = {
            let mut st = q.lock();
            st.flushing = true;
            st.sock.take().unwrap()
        };
        let big = vec![7u8; 4 * SPARE_MAX];
        q.append(|b| b.put_slice(&big)).unwrap();
        let writer = tokio::spawn({
            let q = q.clone();
            async move { q.run_writer().await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            q.backlog(),
            big.len(),
            "still queued while the socket is away"
        );
        {
            let mut st = q.lock();
            st.sock = Some(sock);
            st.flushing = false;
        }
        q.writer.notify_one();
        assert!(read_exactly(&mut peer, big.len()).await == big);
        q.close();
        writer.await.unwrap().unwrap();
    }

    #[test]
    fn a_batch_appends_in_order_like_single_appends_and_each_frame_fails_alone() {
        let header = StreamFrame::server_header(1, "M", P, []);
        let trailer = StreamFrame::trailer(1, "M", P, [], None, None).unwrap();
        let one = WriteQueue::new(1 << 20);
        one.append_frame(&header).unwrap();
        one.append_data(&head(1), &mut Raw(10), 1 << 20).unwrap();
        one.append_frame(&trailer).unwrap();
        let batched = WriteQueue::new(1 << 20);
        let mut results = Vec::new();
        batched.append_batch(&mut |w| {
            results.push(w.frame(&header).is_ok());
            // Over the frame limit: this frame alone is left out.
            results.push(w.data(&head(1), &mut Raw(100), 50).is_ok());
            results.push(w.data(&head(1), &mut Raw(10), 1 << 20).is_ok());
            results.push(w.frame(&trailer).is_ok());
        });
        assert_eq!(results, [true, false, true, true]);
        assert_eq!(batched.lock().buf, one.lock().buf);
        assert_eq!(batched.backlog(), one.backlog());

        // A closed queue takes nothing: every frame of the batch says so.
        batched.close();
        let mut closed = Vec::new();
        batched.append_batch(&mut |w| {
            closed.push(matches!(w.frame(&header), Err(SinkError::Closed)));
            closed.push(matches!(
                w.data(&head(1), &mut Raw(1), 1 << 20),
                Err(SinkError::Closed)
            ));
        });
        assert_eq!(closed, [true, true]);
        assert_eq!(batched.backlog(), one.backlog());
    }
}
