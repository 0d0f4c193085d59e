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

pub(crate) struct WriteQueue {
    state: Mutex<WriteState>,
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
            }),
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
        if was_empty && has_bytes {
            self.writer.notify_one();
        }
        Ok(r)
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
    /// socket fails. On return the queue is closed and holds nothing (all charges released).
    pub(crate) async fn run_writer(&self, out: WriteHalf) -> std::io::Result<()> {
        let r = self.write_batches(out).await;
        let waiters = {
            let mut st = self.lock();
            st.closed = true;
            st.buf = BytesMut::new();
            st.spare = BytesMut::new();
            st.writing = 0;
            st.writing_cap = 0;
            self.recharge(&mut st);
            std::mem::take(&mut st.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
        self.progress.notify_one();
        r
    }

    async fn write_batches(&self, mut out: WriteHalf) -> std::io::Result<()> {
        loop {
            let batch = loop {
                let notified = self.writer.notified();
                {
                    let mut st = self.lock();
                    if !st.buf.is_empty() {
                        // The whole buffer is the batch; the queue goes on in the spare.
                        let spare = std::mem::take(&mut st.spare);
                        let batch = std::mem::replace(&mut st.buf, spare);
                        st.writing = batch.len();
                        st.writing_cap = batch.capacity();
                        self.recharge(&mut st);
                        let waiters = std::mem::take(&mut st.waiters);
                        drop(st);
                        waiters.into_iter().for_each(Waker::wake);
                        break Some(batch);
                    }
                    if st.closed {
                        break None;
                    }
                    // Idle: let large buffers go (a burst's), keep small ones.
                    if st.spare.capacity() > SPARE_MAX {
                        st.spare = BytesMut::new();
                    }
                    if st.buf.capacity() > SPARE_MAX {
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
            match batch {
                Some(mut batch) => {
                    // On an error the batch stays counted in `writing`; `run_writer` releases it.
                    out.write_all(&batch).await?;
                    let waiters = {
                        let mut st = self.lock();
                        st.writing = 0;
                        st.writing_cap = 0;
                        let keep = if st.buf.is_empty() {
                            SPARE_MAX
                        } else {
                            self.limit.max(SPARE_MAX)
                        };
                        if batch.capacity() <= keep && st.spare.capacity() == 0 {
                            batch.clear();
                            st.spare = std::mem::take(&mut batch);
                        }
                        self.recharge(&mut st);
                        std::mem::take(&mut st.waiters)
                    };
                    drop(batch);
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
