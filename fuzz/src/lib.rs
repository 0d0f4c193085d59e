//! Helpers the fuzz targets share: the kitchen-sink thrift types (rpc-codegen's golden output,
//! which its golden test keeps identical to what the generator writes), an in-memory
//! ttstream frame sink, and the splitting of one input into chunks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::BytesMut;
use rpc_core::codec::Encodable;
use rpc_core::Status;
use rpc_transport_ttheader::proto::StreamFrame;
use rpc_transport_ttheader::session::{append_data_frame, FrameSink, SinkError};
use tokio::sync::Notify;

/// `rpc-codegen/tests/idl/kitchen_sink.thrift`: every thrift field kind, a recursive struct,
/// a union, enums, typedefs, containers nested in containers.
#[allow(missing_docs)]
pub mod sink {
    include!("../../rpc-codegen/tests/golden/kitchen_sink_thrift.rs");
}

/// Frames a session writes, kept in memory as a socket's write queue would hold them.
#[derive(Default)]
pub struct MemSink {
    buf: Mutex<BytesMut>,
    closed: AtomicBool,
    progress: Notify,
}

impl MemSink {
    /// Takes everything written so far (as the socket writer would).
    pub fn take(&self) -> BytesMut {
        let b = self.buf.lock().unwrap().split();
        self.progress.notify_one();
        b
    }

    fn check(&self) -> Result<(), SinkError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SinkError::Closed);
        }
        Ok(())
    }
}

impl FrameSink for MemSink {
    fn poll_ready(&self, _cx: &mut Context<'_>, _len: usize) -> Poll<Result<(), SinkError>> {
        Poll::Ready(self.check())
    }

    fn append_frame(&self, frame: &StreamFrame) -> Result<(), SinkError> {
        self.check()?;
        frame
            .encode(&mut self.buf.lock().unwrap())
            .map_err(|e| SinkError::Frame(Status::internal(e.to_string())))
    }

    fn append_data(
        &self,
        head: &[u8],
        msg: &mut dyn Encodable,
        max_frame: usize,
    ) -> Result<(), SinkError> {
        self.check()?;
        append_data_frame(&mut self.buf.lock().unwrap(), head, msg, max_frame)
            .map_err(SinkError::Frame)
    }

    fn backlog(&self) -> usize {
        self.buf.lock().unwrap().len()
    }

    fn progress(&self) -> &Notify {
        &self.progress
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Splits `data` into chunks whose sizes come from `sizes` (each byte a chunk of 1..=256
/// bytes, cycling; one chunk when `sizes` is empty): how a socket may deliver the same bytes.
pub fn chunks<'a>(data: &'a [u8], sizes: &'a [u8]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(sizes[i % sizes.len()]) + 1).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}

/// Splits an input at its first byte: `(first, rest)`; `(0, [])` for an empty input.
pub fn split_first(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((b, rest)) => (*b, rest),
        None => (0, &[]),
    }
}

/// Splits an input in two at a length taken from its first two bytes (little-endian, modulo
/// the length): `(a, b)`.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (data, &[]);
    }
    let n = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let rest = &data[2..];
    let at = if rest.is_empty() {
        0
    } else {
        n % (rest.len() + 1)
    };
    rest.split_at(at)
}
