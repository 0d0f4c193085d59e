//! The connection's outgoing byte queue and its writer task.
//!
//! Streams encode frames straight into one shared buffer (no per-frame allocation, no copy of
//! the message), and a single writer task takes everything queued so far and writes it with one
//! `write_all`: under load many frames go out per syscall, and nothing is flushed per frame
//! while more are queued. The buffer is bounded: senders wait in `poll_ready` while it holds
//! more than the limit. Control frames (Header, Trailer, Rst) skip that wait — they are small
//! and bounded by the number of streams — so closing or cancelling never blocks.

use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::io::WriteHalf;

pub(crate) struct WriteQueue {
    state: Mutex<WriteState>,
    writer: Notify,
    limit: usize,
}

struct WriteState {
    buf: BytesMut,
    closed: bool,
    waiters: Vec<Waker>,
}

/// Appends one TTHeader packet whose LENGTH is known only once `write` has written it all:
/// `write` appends the head (with a placeholder LENGTH) and the payload, then LENGTH is
/// patched. On an error, or when the packet exceeds `max` bytes, everything appended is removed
/// and the error is returned (`RESOURCE_EXHAUSTED` for the size). Returns where the packet
/// starts in `buf`.
pub(crate) fn append_packet(
    buf: &mut BytesMut,
    max: usize,
    write: impl FnOnce(&mut BytesMut) -> Result<(), rpc_core::Status>,
) -> Result<usize, rpc_core::Status> {
    let start = buf.len();
    if let Err(e) = write(buf) {
        buf.truncate(start);
        return Err(e);
    }
    let len = buf.len() - start - 4;
    if len > max {
        buf.truncate(start);
        return Err(rpc_core::Error::MessageTooLarge {
            size: len,
            limit: max,
        }
        .into());
    }
    // `len <= max`, and the frame codec caps `max` far below u32::MAX.
    buf[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(start)
}

/// The queue was closed (the connection is gone).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Closed;

impl WriteQueue {
    pub(crate) fn new(limit: usize) -> WriteQueue {
        WriteQueue {
            state: Mutex::new(WriteState {
                buf: BytesMut::with_capacity(8 * 1024),
                closed: false,
                waiters: Vec::new(),
            }),
            writer: Notify::new(),
            limit,
        }
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
        if st.buf.len() < self.limit {
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
    /// socket fails.
    pub(crate) async fn run_writer(&self, mut out: WriteHalf) -> std::io::Result<()> {
        loop {
            let batch = loop {
                let notified = self.writer.notified();
                {
                    let mut st = self.lock();
                    if !st.buf.is_empty() {
                        let batch = st.buf.split();
                        let waiters = std::mem::take(&mut st.waiters);
                        drop(st);
                        waiters.into_iter().for_each(Waker::wake);
                        break Some(batch);
                    }
                    if st.closed {
                        break None;
                    }
                }
                notified.await;
                // Woken by the first frame of a burst: let the tasks that are ready right now
                // (other handlers finishing) append theirs too, so they share one syscall.
                tokio::task::yield_now().await;
            };
            match batch {
                Some(batch) => out.write_all(&batch).await?,
                None => {
                    let _ = out.shutdown().await;
                    return Ok(());
                }
            }
        }
    }
}
