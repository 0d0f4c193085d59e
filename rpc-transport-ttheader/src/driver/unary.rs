//! Unary over TTHeader (spec §2): one TTHeader packet carrying a strict Thrift-binary CALL
//! message each way, framed or unframed, pooled or multiplexed. The server also reads Kitex
//! protobuf calls (envelope magic `0x9001`, the protobuf request as the body), routes them to
//! the protobuf flavour of the method and replies in that form.
//!
//! The typed layer sends the method's Args struct and receives its Result struct (codegen wraps
//! and unwraps them); this module adds the message envelope (method, type, seqid) and turns
//! EXCEPTION replies (TApplicationException) and `biz-status` keys into `Status`es and back.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rpc_core::codec::Encodable;
use rpc_core::limits::ByteBudget;
use rpc_core::transport::ServerExt;

use super::conn::ReadTimeouts;
use rpc_core::transport::waker::{register, wake};
use rpc_core::transport::{
    BoxFuture, ClientEvent, ClientStreamRaw, Finish, IncomingStream, ServerStreamRaw,
};
use rpc_core::{CallContext, Code, Error, Metadata, Mode, PayloadKind, Peer, Server, Status};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::conn::{self, Connection};
use super::io::Io;
use super::write::WriteQueue;
use crate::common::{
    deadline_of, id_map, lock, next_id, route_refusal, timeout_ms, IdMap, Lifecycle,
};
use crate::mapping::{
    biz_of, extend_kvs, metadata_of, status_from_biz, status_from_exception, RPC_CODE_KEY,
};
use crate::proto::header::{encode_head_of, encode_small_head};
use crate::proto::keys::{int_key, str_key, FLAGS_MUX};
use crate::proto::{
    encode_error_proto, ApplicationException, BizStatus, Headers, MessageHeaderRef, MessageType,
    Packet, PayloadForm, PlainDecoder, PlainFraming, ProtocolId,
};
use crate::session::{append_packet, copies, held_for, keep, Counted, Limits, Stats};
use rpc_core::limits::STREAM_STATE_BYTES;

/// How a unary message sits in the TTHeader payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// The Thrift message follows the header directly (plain TTHeader).
    #[default]
    Unframed,
    /// The Thrift message is prefixed by its own u32 length (TTHeaderFramed, volo's default).
    Framed,
}

/// Whether unary TTHeader calls share a connection (set with
/// [`ClientBuilder::connection_mode`](crate::ClientBuilder::connection_mode)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectionMode {
    /// One outstanding call per connection; connections are pooled (what every TTHeader peer
    /// speaks).
    #[default]
    Pooled,
    /// Many outstanding calls per connection, matched by seqid (FLAGS 0x0001; Kitex's
    /// `WithMuxConnection`).
    Multiplexed,
}

/// The TApplicationException a failed unary call travels as: Kitex reports handler errors as
/// type 6 (internal error), unknown methods as 1; our exact code rides in `rpc-code`.
fn unary_exception_of(status: &Status) -> ApplicationException {
    let kind = match status.transport_code() {
        Some(k @ 0..=21) => k,
        _ if status.code() == Code::Unimplemented => ApplicationException::UNKNOWN_METHOD,
        _ => ApplicationException::INTERNAL_ERROR,
    };
    ApplicationException::new(kind, status.message())
}

/// Appends one unary packet: TTHeader head, optional frame length, message header, body. A
/// packet whose protocol is Kitex protobuf gets that envelope (`0x9001....`), always framed.
fn write_packet(
    buf: &mut BytesMut,
    packet: &Packet,
    framing: Framing,
    msg: &MessageHeaderRef<'_>,
    max: usize,
    body: impl FnOnce(&mut BytesMut) -> Result<(), Status>,
) -> Result<(), Status> {
    let kitex_pb = packet.protocol == ProtocolId::KitexProtobuf;
    let framing = if kitex_pb { Framing::Framed } else { framing };
    let head = |buf: &mut BytesMut| packet.encode_head(0, buf);
    write_with_head(buf, head, framing, msg, kitex_pb, max, body)
}

/// One unary packet (a client's request, or a server's reply through [`write_packet`]) with
/// its head written by `head` (a placeholder LENGTH, patched by `append_packet`), then the
/// frame length when framed, the message header (in Kitex protobuf's envelope when
/// `kitex_pb`) and the body.
fn write_with_head(
    buf: &mut BytesMut,
    head: impl FnOnce(&mut BytesMut) -> Result<(), crate::proto::EncodeError>,
    framing: Framing,
    msg: &MessageHeaderRef<'_>,
    kitex_pb: bool,
    max: usize,
    body: impl FnOnce(&mut BytesMut) -> Result<(), Status>,
) -> Result<(), Status> {
    let mut framed_at = 0;
    append_packet(buf, max, |buf| {
        head(buf).map_err(|e| Status::internal(format!("encode header: {e}")))?;
        framed_at = buf.len();
        if framing == Framing::Framed {
            buf.put_u32(0);
        }
        if kitex_pb {
            msg.encode_kitex_protobuf(buf)
        } else {
            msg.encode(buf)
        }
        .map_err(|e| Status::internal(format!("encode message header: {e}")))?;
        body(buf)
    })?;
    if framing == Framing::Framed {
        let inner = (buf.len() - framed_at - 4) as u32;
        buf[framed_at..framed_at + 4].copy_from_slice(&inner.to_be_bytes());
    }
    Ok(())
}

/// Appends one plain Thrift reply (no TTHeader): the message, after its `u32` length when
/// framed. A message over `max` is refused as [`write_packet`] refuses a packet.
fn write_plain(
    buf: &mut BytesMut,
    framing: PlainFraming,
    msg: &MessageHeaderRef<'_>,
    max: usize,
    body: impl FnOnce(&mut BytesMut) -> Result<(), Status>,
) -> Result<(), Status> {
    let write = |buf: &mut BytesMut| {
        msg.encode(buf)
            .map_err(|e| Status::internal(format!("encode message header: {e}")))?;
        body(buf)
    };
    match framing {
        // `append_packet` writes and patches the leading u32 length, as a frame needs.
        PlainFraming::Framed => append_packet(buf, max, |buf| {
            buf.put_u32(0);
            write(buf)
        })
        .map(drop),
        PlainFraming::Buffered => {
            let start = buf.len();
            if let Err(e) = write(buf) {
                buf.truncate(start);
                return Err(e);
            }
            let len = buf.len() - start;
            if len > max {
                buf.truncate(start);
                return Err(Error::MessageTooLarge {
                    size: len,
                    limit: max,
                }
                .into());
            }
            Ok(())
        }
    }
}

// ------------------------------------------------------------------------------------ client

/// Appends `msg`: into a slice of its length when the codec knows it (its writes are then
/// plain stores, with no room check per field), else into `buf` as it grows. On an error what
/// was appended is left for the caller to remove (as `append_packet` does).
fn encode_body(buf: &mut BytesMut, msg: &mut dyn Encodable) -> Result<(), Status> {
    let Some(len) = msg.encoded_len() else {
        return msg.encode(buf);
    };
    let at = buf.len();
    buf.resize(at + len, 0);
    msg.encode_slice(&mut buf[at..])
}

/// `n` in decimal ASCII, written at the end of `buf` (20 bytes hold every `u64`).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// A client connection for unary calls.
pub(crate) struct UnaryConn {
    mode: ConnectionMode,
    framing: Framing,
    limits: Limits,
    write: WriteQueue,
    /// The calls sent and not answered, by seqid: not owned (a call the core drops resets
    /// itself, which takes it out of here).
    pending: Mutex<IdMap<i32, Weak<UnaryClient>>>,
    next_seq: AtomicI32,
    life: Lifecycle,
    /// The server asked us not to reuse the connection (`crrst`).
    reset_requested: AtomicBool,
    /// Pooled mode: a call holds the connection.
    busy: AtomicBool,
    /// Multiplexed mode: calls holding the connection (acquired, handle not dropped yet).
    handles: AtomicUsize,
    /// Multiplexed mode: retired as idle, takes no new call.
    retired: AtomicBool,
    /// Pooled mode: when the last call let go of the connection (for idling out).
    released_at: Mutex<Instant>,
    /// Pooled mode: the pool's signal that a connection came free (or died).
    freed: Option<Arc<Notify>>,
    stats: Arc<Stats>,
    counted: Counted,
    /// Pooled mode over a Unix socket: the pool, to send again a call the server provably
    /// did not read (see [`UnaryClient::send_again`]).
    redial: OnceLock<Weak<dyn Redial>>,
}

/// The client pool a call that the server provably did not read is sent again through.
pub(crate) trait Redial: Send + Sync + 'static {
    /// A pooled connection reserved for one call (as for a new call), waiting until
    /// `deadline` at most.
    fn redial(
        self: Arc<Self>,
        deadline: Option<Instant>,
    ) -> BoxFuture<'static, Result<Arc<UnaryConn>, Status>>;
}

/// How many times one call is sent again after the server provably did not read it.
const SEND_AGAIN: u8 = 3;

impl UnaryConn {
    pub(crate) fn start(
        io: Io,
        mode: ConnectionMode,
        framing: Framing,
        limits: Limits,
        stats: &Arc<Stats>,
        freed: Option<Arc<Notify>>,
    ) -> Arc<UnaryConn> {
        let conn = Arc::new(UnaryConn {
            mode,
            framing,
            write: WriteQueue::new(limits.write_buffer),
            limits,
            pending: Mutex::new(id_map()),
            next_seq: AtomicI32::new(1),
            life: Lifecycle::new(),
            reset_requested: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            handles: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            released_at: Mutex::new(Instant::now()),
            freed,
            stats: stats.clone(),
            counted: Counted::new(stats, |s| &s.connections),
            redial: OnceLock::new(),
        });
        conn::start(&conn, io, BytesMut::with_capacity(8 * 1024));
        conn
    }

    /// Pooled mode over a Unix socket: calls the server provably did not read are sent again
    /// through `pool` (see [`UnaryClient::send_again`] for what is provable).
    pub(crate) fn set_redial(&self, pool: Weak<dyn Redial>) {
        if self.mode == ConnectionMode::Pooled {
            let _ = self.redial.set(pool);
        }
    }

    /// Sends a call's encoded request (`packet`, sequence number `seq`) again on this
    /// connection, reserved for it.
    fn send_again(&self, seq: i32, packet: &Bytes, call: &Arc<UnaryClient>) -> Result<(), Status> {
        lock(&self.pending).insert(seq, Arc::downgrade(call));
        self.life.reader().notify_one();
        if self
            .write
            .append(|buf| buf.extend_from_slice(packet))
            .is_err()
        {
            lock(&self.pending).remove(&seq);
            return Err(self.life.lost_status());
        }
        Ok(())
    }

    /// Usable for a new call (and, in pooled mode, now reserved for it).
    pub(crate) fn try_acquire(&self) -> bool {
        if self.life.lost().is_some()
            || self.reset_requested.load(Ordering::Acquire)
            || self.write.is_closed()
        {
            return false;
        }
        match self.mode {
            ConnectionMode::Multiplexed => {
                // Under the pending lock, atomically with `retire_idle`.
                let _pending = lock(&self.pending);
                if self.retired.load(Ordering::Acquire) {
                    return false;
                }
                self.handles.fetch_add(1, Ordering::AcqRel);
                true
            }
            ConnectionMode::Pooled => self
                .busy
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.life.lost().is_some() || self.write.is_closed()
    }

    fn release(&self) {
        if self.mode == ConnectionMode::Multiplexed {
            if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
                // The last call let go: the reader's idle clock starts.
                self.life.reader().notify_one();
            }
            return;
        }
        *lock(&self.released_at) = Instant::now();
        self.busy.store(false, Ordering::Release);
        if let Some(f) = &self.freed {
            f.notify_one();
        }
    }

    /// Pooled mode: closes the connection if no call has used it for `idle`; says whether it did.
    pub(crate) fn retire_if_idle(&self, idle: Duration) -> bool {
        if self.busy.load(Ordering::Acquire) || lock(&self.released_at).elapsed() < idle {
            return false;
        }
        // Reserve it, so no call takes it while it closes.
        if !self.try_acquire() {
            return false;
        }
        self.fail(Status::unavailable("idle connection closed by the pool"));
        true
    }

    fn fail(&self, status: Status) {
        self.fail_with(status, false);
    }

    /// Ends the connection; `unread`: the server provably did not read the end of what was
    /// written last ([`Connection::fail_unread`]).
    fn fail_with(&self, status: Status, unread: bool) {
        if !self.life.lose(&status) {
            return;
        }
        self.write.close();
        self.counted.release();
        if let Some(f) = &self.freed {
            // Its slot in the pool is free for a new connection.
            f.notify_one();
        }
        let calls: Vec<_> = lock(&self.pending).drain().map(|(_, c)| c).collect();
        let redial = unread
            .then(|| self.redial.get().and_then(Weak::upgrade))
            .flatten();
        for c in calls.iter().filter_map(Weak::upgrade) {
            if let Some(pool) = &redial {
                if UnaryClient::send_again(&c, pool.clone()) {
                    continue;
                }
            }
            c.call.complete(Err(Status::unavailable(format!(
                "connection lost: {}",
                status.message()
            ))
            .with_transport_code(crate::proto::keys::kitex_code::CONNECTION_CLOSED)));
        }
        self.life.wake_all();
    }

    fn on_reply(&self, packet: Packet) -> Result<(), Status> {
        if packet.headers.get_str(str_key::CONN_RESET).is_some() {
            self.reset_requested.store(true, Ordering::Release);
        }
        let (kind, seq_id, body_at) = parse_reply(&packet.payload)?;
        let body = packet.payload.slice(body_at..);
        let headers = &packet.headers;
        // Multiplexed control frame: seqid 0, method "none" (graceful shutdown notice).
        if self.mode == ConnectionMode::Multiplexed && seq_id == 0 && kind == MessageType::Reply {
            return Ok(());
        }
        let call = {
            let mut pending = lock(&self.pending);
            match pending.remove(&seq_id) {
                Some(c) => Some(c),
                // spec §2: EXCEPTION replies may carry seqid 0 (proxies); in pooled mode the one
                // pending call is the one it answers.
                None if kind == MessageType::Exception
                    && self.mode == ConnectionMode::Pooled
                    && pending.len() == 1 =>
                {
                    let key = pending.keys().next().copied();
                    key.and_then(|k| pending.remove(&k))
                }
                None => None,
            }
        };
        // Upgraded with the pending lock released: the last reference may go here, and the
        // call's drop takes that lock.
        let Some(call) = call.and_then(|c| c.upgrade()) else {
            tracing::debug!(seq = seq_id, "reply for no pending call ignored");
            return Ok(());
        };
        let md = metadata_of(headers);
        let outcome = match kind {
            MessageType::Reply => match BizStatus::from_headers(headers) {
                Ok(Some(biz)) => Err(status_from_biz(&biz, md.clone())),
                Ok(None) => Ok(body),
                Err(e) => Err(Status::internal(e.to_string())),
            },
            MessageType::Exception => match ApplicationException::decode(&body) {
                Ok((exc, _)) => Err(status_from_exception(&exc, headers.get_str(RPC_CODE_KEY))
                    .with_metadata(md.clone())),
                Err(e) => Err(Status::internal(format!("malformed exception: {e}"))),
            },
            other => Err(Status::internal(format!("unexpected {other:?} reply"))),
        };
        call.call.complete_with(outcome, md);
        Ok(())
    }

    pub(crate) fn open(self: &Arc<Self>, ctx: &CallContext) -> Arc<dyn ClientStreamRaw> {
        Arc::new_cyclic(|me| UnaryClient {
            conn: self.clone(),
            ctx_method: ctx.method().name,
            service: ctx.method().service,
            metadata: ctx.metadata().clone(),
            timeout: ctx.timeout(),
            call: Call::default(),
            me: me.clone(),
            _counted: Counted::new(&self.stats, |s| &s.streams),
        })
    }
}

#[derive(Default)]
struct Call {
    st: Mutex<CallState>,
}

#[derive(Default)]
struct CallState {
    seq: Option<i32>,
    sent: bool,
    /// The encoded request, kept when the connection can send it again (see
    /// [`UnaryClient::send_again`]), with the call's deadline and the attempts used.
    request: Option<Bytes>,
    deadline: Option<Instant>,
    again: u8,
    /// The connection the call was sent again on (released with the call).
    moved: Option<Arc<UnaryConn>>,
    reply: Option<Result<Bytes, Status>>,
    /// Events the core took: 0 none, 1 the header, 2 the message too.
    delivered: u8,
    metadata: Option<Metadata>,
    waker: Option<Waker>,
}

impl Call {
    fn complete(&self, outcome: Result<Bytes, Status>) {
        let mut st = lock(&self.st);
        if st.reply.is_none() {
            st.reply = Some(outcome);
        }
        st.metadata.get_or_insert_with(Metadata::new);
        wake(&mut st.waker);
    }

    /// Completes the call with its reply's outcome and metadata (the metadata is kept even
    /// when the call already ended: a reset raced with the reply).
    fn complete_with(&self, outcome: Result<Bytes, Status>, md: Metadata) {
        let mut st = lock(&self.st);
        if st.reply.is_none() {
            st.reply = Some(outcome);
        }
        st.metadata = Some(md);
        wake(&mut st.waker);
    }
}

/// One unary call as a raw client stream.
struct UnaryClient {
    conn: Arc<UnaryConn>,
    ctx_method: &'static str,
    service: &'static str,
    metadata: Metadata,
    timeout: Option<Duration>,
    /// The call's state, in the same allocation (the connection's `pending` and a resend's
    /// task hold a `Weak`).
    call: Call,
    /// This call, for the connection's `pending`.
    me: Weak<UnaryClient>,
    _counted: Counted,
}

impl UnaryClient {
    /// Sends the call again on another pooled connection, when the connection it was on
    /// ended and the server provably did not read its request; says whether it did.
    ///
    /// Provable, in pooled mode (one call per connection: the request is the last thing
    /// written on it, nothing follows it until its reply): the request never reached the
    /// socket (the connection was lost before `send`); or the write carrying it failed (the
    /// kernel did not accept the end of it); or, on a Unix socket, the read failed with a
    /// reset (Linux resets a Unix stream's survivor only when the closing side left bytes
    /// unread, and the unread bytes are the end of what was sent: the request). A server
    /// cannot have served a request it did not read whole. A plain end of the connection
    /// (`EOF`) proves nothing — a server may have read the request and died — so such a call
    /// fails, as does everything over TCP, where a reset may come from an abortive close or
    /// a middlebox after the request was read.
    fn send_again(client: &Arc<UnaryClient>, pool: Arc<dyn Redial>) -> bool {
        let (packet, seq, deadline) = {
            let mut st = lock(&client.call.st);
            let (Some(packet), Some(seq)) = (st.request.clone(), st.seq) else {
                return false;
            };
            if st.reply.is_some() || st.again >= SEND_AGAIN {
                return false;
            }
            st.again += 1;
            if let Some(old) = st.moved.take() {
                old.release();
            }
            (packet, seq, st.deadline)
        };
        // Not owned by the task: a call the core drops meanwhile resets itself as usual.
        let client = Arc::downgrade(client);
        tokio::spawn(async move {
            let conn = pool.redial(deadline).await;
            let Some(client) = client.upgrade() else {
                if let Ok(conn) = conn {
                    conn.release();
                }
                return;
            };
            let conn = match conn {
                Ok(c) => c,
                Err(e) => return client.call.complete(Err(e)),
            };
            let call = &client.call;
            let sent = {
                let mut st = lock(&call.st);
                if st.reply.is_some() {
                    // Reset meanwhile.
                    drop(st);
                    conn.release();
                    return;
                }
                st.moved = Some(conn.clone());
                // Under the call's lock, as `reset` looks for it.
                conn.send_again(seq, &packet, &client)
            };
            if let Err(e) = sent {
                call.complete(Err(e));
            }
        });
        true
    }
}

impl ClientStreamRaw for UnaryClient {
    fn poll_send_ready(&self, _cx: &mut Context<'_>, _len: usize) -> Poll<Result<(), Status>> {
        if lock(&self.call.st).sent {
            return Poll::Ready(Err(Error::SendAfterClose.into()));
        }
        Poll::Ready(Ok(()))
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        let mut st = lock(&self.call.st);
        if st.sent {
            return Err(Error::SendAfterClose.into());
        }
        let conn = &self.conn;
        let seq = next_id(&conn.next_seq);
        let flags = if conn.mode == ConnectionMode::Multiplexed {
            FLAGS_MUX
        } else {
            0
        };
        // The head is laid out straight from the call (no `Packet` built per call). Without
        // metadata (the usual call) it is the service name and the timeout (its digits
        // formatted on the stack), laid out on the stack; else the headers are built as a
        // packet's: the service name, then the call's metadata, then the timeout.
        let mut digits = [0u8; 20];
        let timeout = self.timeout.map(|t| decimal(timeout_ms(t), &mut digits));
        let timeout_set = timeout.is_some();
        let head = |buf: &mut BytesMut| {
            if self.metadata.is_empty() {
                let service: [(&str, &[u8]); 1] =
                    [(str_key::IDL_SERVICE_NAME, self.service.as_bytes())];
                let timeout: [(u16, &[u8]); 1] =
                    [(int_key::RPC_TIMEOUT, timeout.unwrap_or_default())];
                let ints = if timeout_set { &timeout[..] } else { &[] };
                let small =
                    encode_small_head(flags, seq, ProtocolId::ThriftBinary, &service, ints, buf);
                if small.is_some() {
                    return Ok(());
                }
            }
            let mut headers = Headers::default();
            headers.push_str(str_key::IDL_SERVICE_NAME, self.service);
            extend_kvs(&mut headers.str_kvs, &self.metadata);
            if let Some(t) = timeout {
                headers.push_int(int_key::RPC_TIMEOUT, Bytes::copy_from_slice(t));
            }
            encode_head_of(flags, seq, ProtocolId::ThriftBinary, &headers, buf)
        };
        let header = MessageHeaderRef {
            name: self.ctx_method,
            kind: MessageType::Call,
            seq_id: seq,
        };
        {
            let mut pending = lock(&conn.pending);
            pending.insert(seq, self.me.clone());
            if pending.len() == 1 {
                // The reader may sit in an idle read: its silence clock starts now.
                conn.life.reader().notify_one();
            }
        }
        let max = conn.limits.max_frame_size;
        if conn.redial.get().is_none() {
            let written = conn.write.append(|buf| {
                write_with_head(buf, head, conn.framing, &header, false, max, |b| {
                    encode_body(b, msg)
                })
            });
            return match written {
                Ok(Ok(())) => {
                    st.seq = Some(seq);
                    st.sent = true;
                    Ok(())
                }
                Ok(Err(e)) => {
                    lock(&conn.pending).remove(&seq);
                    Err(e)
                }
                Err(_) => {
                    lock(&conn.pending).remove(&seq);
                    Err(conn.life.lost_status())
                }
            };
        }
        // The request may have to be sent again (see `UnaryClient::send_again`): encoded on its own
        // and kept.
        let mut own = BytesMut::new();
        if let Err(e) = write_with_head(&mut own, head, conn.framing, &header, false, max, |b| {
            encode_body(b, msg)
        }) {
            lock(&conn.pending).remove(&seq);
            return Err(e);
        }
        let own = own.freeze();
        st.seq = Some(seq);
        st.sent = true;
        st.request = Some(own.clone());
        st.deadline = self.timeout.map(|t| Instant::now() + t);
        if conn.write.append(|buf| buf.extend_from_slice(&own)).is_ok() {
            return Ok(());
        }
        // The connection was lost before the request reached it: on another one.
        lock(&conn.pending).remove(&seq);
        drop(st);
        let (Some(pool), Some(me)) = (conn.redial.get().and_then(Weak::upgrade), self.me.upgrade())
        else {
            return Err(conn.life.lost_status());
        };
        if UnaryClient::send_again(&me, pool) {
            return Ok(());
        }
        Err(conn.life.lost_status())
    }

    fn close_send(&self) -> Result<(), Status> {
        // The request went out whole with `send`; there is nothing more to close.
        Ok(())
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<ClientEvent> {
        // One reply carries everything: its key-values are the header and the trailer.
        let mut st = lock(&self.call.st);
        let Some(reply) = &st.reply else {
            register(&mut st.waker, cx);
            return Poll::Pending;
        };
        // The metadata is cloned only for the events that carry it.
        let md = || st.metadata.clone().unwrap_or_default();
        let event = match (st.delivered, reply) {
            (0, _) => ClientEvent::Header(md()),
            (1, Ok(body)) => ClientEvent::Message(body.clone()),
            (_, Ok(_)) => ClientEvent::End(Status::ok(), md()),
            (_, Err(e)) => ClientEvent::End(e.clone(), md()),
        };
        st.delivered = st.delivered.saturating_add(1);
        Poll::Ready(event)
    }

    fn reset(&self, status: &Status) {
        let (seq, moved) = {
            let mut st = lock(&self.call.st);
            if st.reply.is_some() {
                return;
            }
            st.reply = Some(Err(status.clone()));
            (st.seq, st.moved.clone())
        };
        if let Some(seq) = seq {
            let conn = &moved.unwrap_or_else(|| self.conn.clone());
            let was_pending = lock(&conn.pending).remove(&seq).is_some();
            // Pooled mode: the reply will still arrive on this connection and would be taken
            // for the next call's; the connection cannot be reused.
            if was_pending && conn.mode == ConnectionMode::Pooled {
                conn.fail(Status::cancelled("a call on this connection was abandoned"));
            }
        }
    }
}

impl Drop for UnaryClient {
    fn drop(&mut self) {
        // Answered (the usual case): nothing to reset, and no status to build for it.
        let answered = lock(&self.call.st).reply.is_some();
        if !answered {
            self.reset(&Status::cancelled("the client dropped the call"));
        }
        self.conn.release();
        if let Some(moved) = lock(&self.call.st).moved.take() {
            moved.release();
        }
    }
}

// ------------------------------------------------------------------------------------ server

/// Serves unary calls on an accepted connection until it closes.
///
/// Bounded by the core server's limits: the reader stops reading while
/// `max_concurrent_streams` calls are in flight (a pipelining client just waits; TCP pushes
/// back), while the write queue holds twice [`Limits::write_buffer`] of replies (queued plus the
/// batch being written; a
/// client that never reads its socket cannot make replies pile up), and while the server-wide
/// byte budget is used up and this connection holds more than [`Limits::conn_reserve`]
/// (its read buffer's capacity, requests not yet taken by their handler with their overhead,
/// each call's state and the write buffers are charged to it). A frame must complete within `frame_timeout` of its first bytes, and a connection with
/// no call in flight and no bytes for `idle_timeout` is closed.
pub(crate) struct UnaryServerConn {
    limits: Limits,
    write: WriteQueue,
    server: Server,
    /// Request bytes held for handlers that have not taken them yet.
    held: Arc<AtomicUsize>,
    peer: Option<Peer>,
    in_flight: std::sync::atomic::AtomicUsize,
    stats: Arc<Stats>,
    /// Lost, draining, idle; its reader signal wakes the reader when a call ends (it may read
    /// again, or start its idle clock).
    life: Lifecycle,
    /// In-flight calls whose handlers wait (registered when the core first asks for a reset),
    /// so a lost connection can cancel them. A call whose handler completes in its first poll
    /// never enters it.
    calls: Mutex<IdMap<u64, Weak<UnaryServer>>>,
    next_call: std::sync::atomic::AtomicU64,
    /// Plain Thrift (no TTHeader): how its messages are delimited. Only the reader task
    /// decodes; the lock is uncontended.
    plain: Option<Mutex<PlainDecoder>>,
    /// A Unix socket: a drain shuts its read direction down (see `start_drain`).
    shut_on_drain: bool,
    _counted: Counted,
}

impl UnaryServerConn {
    pub(crate) fn start(
        io: Io,
        prefix: BytesMut,
        limits: Limits,
        peer: Option<Peer>,
        stats: &Arc<Stats>,
        server: Server,
        plain: Option<PlainFraming>,
    ) -> Arc<UnaryServerConn> {
        let shut_on_drain = matches!(io.stream(), rpc_core::net::IoStream::Unix(_));
        let conn = Arc::new(UnaryServerConn {
            shut_on_drain,
            plain: plain.map(|f| Mutex::new(PlainDecoder::new(f, limits.max_frame_size))),
            write: WriteQueue::for_conn(&limits, Some(server.byte_budget())),
            limits,
            server,
            held: Arc::new(AtomicUsize::new(0)),
            peer,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            stats: stats.clone(),
            life: Lifecycle::new(),
            calls: Mutex::new(id_map()),
            next_call: std::sync::atomic::AtomicU64::new(0),
            _counted: Counted::new(stats, |s| &s.connections),
        });
        conn::start(&conn, io, prefix);
        conn
    }

    fn fail(&self, status: Status) {
        if !self.life.lose(&status) {
            return;
        }
        self.write.close();
        let calls: Vec<_> = lock(&self.calls).drain().map(|(_, c)| c).collect();
        for c in calls.iter().filter_map(Weak::upgrade) {
            let mut st = lock(&c.st);
            st.cancelled.get_or_insert(status.clone());
            wake(&mut st.cancel_waker);
        }
        self.life.wake_all();
    }

    /// Shutdown begins: replies from now on carry `crrst`. On a Unix socket the reader also
    /// shuts the socket's read direction down: what the client wrote before is read and
    /// answered, what it writes after fails at its end with `EPIPE` (never read, so the
    /// client may send it again elsewhere), and the connection ends once those calls are
    /// answered. No request is left unanswered in the socket when it closes — the race a
    /// close of an idle connection has with a request on its way.
    pub(crate) fn start_drain(&self) {
        self.life.start_drain();
        if self.shut_on_drain {
            self.life.reader().notify_one();
        }
    }

    /// Graceful shutdown: later replies carry `crrst`; resolves when no call is in flight
    /// (on a Unix socket: when the reader ended the connection, see `start_drain`).
    pub(crate) async fn drain(&self) {
        let shut = self.shut_on_drain;
        self.life
            .drain(|| !shut && self.in_flight.load(Ordering::Acquire) == 0)
            .await;
    }

    pub(crate) fn close(&self) {
        self.write.close();
    }

    /// Whether the reader must stop reading (type docs). `rx` is what it holds unparsed.
    fn must_pause(&self, rx: usize) -> bool {
        if self.in_flight.load(Ordering::Acquire) >= self.server.limits().max_concurrent_streams {
            return true;
        }
        // One lock of the queue for both figures (this runs before every call is parsed).
        let (backlog, queue_held) = self.write.backlog_and_held();
        self.limits.writes_block_reading(
            backlog,
            Some(self.server.byte_budget()),
            rx + self.held.load(Ordering::Acquire) + queue_held,
        )
    }

    /// Charges `n` bytes held for a call to this connection and the server-wide budget.
    fn charge(&self, n: usize) {
        self.held.fetch_add(n, Ordering::AcqRel);
        self.server.byte_budget().charge(n);
    }

    /// Releases `n` bytes [`UnaryServerConn::charge`]d (nothing for 0).
    fn release(&self, n: usize) {
        if n > 0 {
            self.held.fetch_sub(n, Ordering::AcqRel);
            self.server.byte_budget().release(n);
        }
    }

    /// A call ended: forget it and let the reader go on.
    fn call_done(&self, call_id: u64, registered: bool) {
        if registered {
            lock(&self.calls).remove(&call_id);
        }
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.life.became_idle();
        }
        self.life.reader().notify_one();
    }

    fn on_call(self: &Arc<Self>, packet: Packet, frame_len: usize) -> Result<(), Status> {
        // The payload is sniffed, not trusted to the id: Kitex has sent Kitex protobuf
        // payloads under id 0 as well as under its own id 4.
        if packet.protocol != ProtocolId::ThriftBinary
            && packet.protocol != ProtocolId::ThriftCompactV2
            && packet.protocol != ProtocolId::KitexProtobuf
        {
            return Err(Status::internal(format!(
                "unsupported protocol {:?} on a unary connection",
                packet.protocol
            )));
        }
        let seq_id = packet.seq_id;
        let flags = packet.flags;
        let msg = match parse_message(&packet.payload) {
            Ok(m) => m,
            Err(e) => {
                // The TTHeader framing is intact, only the payload is not strict Thrift binary
                // (e.g. compact, which we do not speak): answer, keep the connection.
                let to = ReplyTo {
                    flags: flags & FLAGS_MUX,
                    seq: seq_id,
                    framing: Framing::Unframed,
                    kitex_pb: false,
                    method: Cow::Borrowed(""),
                    oneway: false,
                };
                let status = Status::unimplemented(format!("unsupported payload: {e}"))
                    .with_transport_code(ApplicationException::INVALID_PROTOCOL);
                self.reply(&to, &Metadata::new(), Err(&status));
                return Ok(());
            }
        };
        self.on_message(
            flags,
            seq_id,
            &packet.headers,
            &packet.payload,
            msg,
            frame_len,
        )
    }

    /// A plain Thrift message (no TTHeader): the envelope, strict or not, then the Args
    /// struct. Apache Thrift's TMultiplexedProtocol names the method `Service:method`.
    fn on_plain(self: &Arc<Self>, message: Bytes) -> Result<(), Status> {
        let (head, used) = MessageHeaderRef::decode_lenient(&message)
            .map_err(|e| Status::internal(format!("malformed plain thrift message: {e}")))?;
        let msg = MessageAt {
            framing: Framing::Unframed,
            kitex_pb: false,
            kind: head.kind,
            seq_id: head.seq_id,
            name: head.name,
            body_at: used,
        };
        // A framed message had a buffer of exactly its frame when large; a buffered one grew
        // by doubling (its length is not on the wire), so its body is always copied out.
        let frame_len = match self.plain.as_ref().map(|d| lock(d).framing()) {
            Some(PlainFraming::Framed) => message.len() + 4,
            _ => 0,
        };
        self.on_message(0, head.seq_id, &PLAIN_HEADERS, &message, msg, frame_len)
    }

    /// Routes and dispatches one call, or answers it with an exception (unknown method,
    /// streaming method over a unary transport). `frame_len`: the call's length on the wire.
    fn on_message(
        self: &Arc<Self>,
        flags: u16,
        seq_id: i32,
        headers: &Headers,
        payload: &Bytes,
        msg: MessageAt<'_>,
        frame_len: usize,
    ) -> Result<(), Status> {
        let oneway = match msg.kind {
            MessageType::Call => false,
            MessageType::Oneway => true,
            other => {
                return Err(Status::internal(format!(
                    "unexpected {other:?} message from a client"
                )))
            }
        };
        let mut reply_to = ReplyTo {
            flags: flags & FLAGS_MUX,
            seq: if msg.seq_id != 0 { msg.seq_id } else { seq_id },
            framing: msg.framing,
            kitex_pb: msg.kitex_pb,
            method: Cow::Borrowed(""),
            oneway,
        };
        // Names borrowed from the packet: routing copies nothing.
        let mut service = headers
            .get_str(str_key::IDL_SERVICE_NAME)
            .unwrap_or_default();
        let mut method = msg.name;
        if self.plain.is_some() {
            if let Some((s, m)) = msg.name.split_once(':') {
                (service, method) = (s, m);
            }
        }
        let payload_kind = if msg.kitex_pb {
            PayloadKind::Protobuf
        } else {
            PayloadKind::Thrift
        };
        let route = match self.server.resolve_for(service, method, Some(payload_kind)) {
            // A Thrift CALL is a unary: an unknown-method handler serves it as one.
            Ok(r) => r.framed_as_unary(),
            Err(e) => {
                reply_to.method = Cow::Owned(msg.name.to_owned());
                let kind = route_refusal(&e);
                let status = Status::from(e).with_transport_code(kind);
                self.reply(&reply_to, &Metadata::new(), Err(&status));
                return Ok(());
            }
        };
        // Routing matched the name exactly: the reply names the method with the descriptor's
        // `&'static str`.
        reply_to.method = Cow::Borrowed(route.method().name);
        if route.method().mode != Mode::Unary {
            // volo-build turns streaming methods into unary ones; a streaming handler cannot
            // run over one CALL/REPLY, so say so instead of failing on the payload.
            let status = Status::unimplemented(format!(
                "{} is a streaming method: call it over TTHeader Streaming",
                route.method().name
            ))
            .with_transport_code(ApplicationException::INVALID_PROTOCOL);
            self.reply(&reply_to, &Metadata::new(), Err(&status));
            return Ok(());
        }
        let deadline = deadline_of(headers);
        // Kept until the handler takes it, charged with its overhead, and the call's state
        // with it. Handed over as a slice of the read chunk: a handler that completes in its
        // inline first poll decodes it from there; one that did not take it gets it copied
        // out of the chunk after that poll (`keep`), unless its frame had a buffer of its own.
        let body = payload.slice(msg.body_at..);
        let copy_after = copies(body.len(), frame_len);
        // Already routed: `dispatch_route` does not need the names again (no allocation).
        // Fields set in place: each builder call would move the whole struct.
        let mut incoming = IncomingStream::new(String::new(), String::new());
        incoming.rpc_system = "ttheader";
        incoming.metadata = metadata_of(headers);
        incoming.deadline = deadline;
        incoming.peer = self.peer.clone();
        incoming.payload = Some(payload_kind);
        // The request (until its handler takes it) and the call's state, charged at once and
        // released by the call itself (no counters cloned into it).
        let request_charge = held_for(body.len());
        self.charge(request_charge + STREAM_STATE_BYTES);
        let call_id = self.next_call.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        // One allocation for the call's transport state (the core holds it as its raw stream).
        let raw = Arc::new_cyclic(|me| UnaryServer {
            conn: self.clone(),
            call_id,
            reply_to,
            me: me.clone(),
            st: Mutex::new(ServerCallInner {
                request_charge,
                request: Some(body),
                response: None,
                header: Metadata::new(),
                cancelled: None,
                cancel_waker: None,
                finished: false,
                registered: false,
            }),
            _counted: Counted::new(&self.stats, |s| &s.streams),
        });
        if !copy_after {
            self.server.dispatch_route(route, incoming, raw);
            return Ok(());
        }
        self.server.dispatch_route(route, incoming, raw.clone());
        // The handler's first poll is over: a request it did not take leaves the read chunk
        // now (a slice would pin the chunk while it waits to be taken).
        let mut st = lock(&raw.st);
        if let Some(request) = st.request.as_mut() {
            *request = keep(std::mem::take(request), frame_len);
        }
        Ok(())
    }

    fn reply(&self, to: &ReplyTo, md: &Metadata, outcome: Result<Body<'_>, &Status>) {
        if to.oneway {
            return;
        }
        let plain = self.plain.as_ref().map(|d| lock(d).framing());
        let protocol = if to.kitex_pb {
            ProtocolId::KitexProtobuf
        } else {
            ProtocolId::ThriftBinary
        };
        let mut packet = Packet::new(to.flags, to.seq, protocol);
        if plain.is_none() {
            extend_kvs(&mut packet.headers.str_kvs, md);
        }
        if self.life.is_draining() && plain.is_none() {
            packet.headers.push_str(str_key::CONN_RESET, "1");
        }
        let (kind, mut body): (MessageType, Result<Body<'_>, ApplicationException>) = match outcome
        {
            Ok(b) => (MessageType::Reply, Ok(b)),
            Err(status) => {
                if plain.is_some() {
                    // No header to carry `rpc-code`, metadata or a business status: the
                    // exception is all a plain Thrift client can get.
                    let exc = match biz_of(status) {
                        Some(biz) => ApplicationException::new(
                            ApplicationException::INTERNAL_ERROR,
                            format!("biz status {}: {}", biz.code, biz.message),
                        ),
                        None => unary_exception_of(status),
                    };
                    (MessageType::Exception, Err(exc))
                } else if let Some(biz) = biz_of(status) {
                    // A business status travels on a normal REPLY with an empty Result struct
                    // (in Kitex protobuf: no bytes, a Result without success).
                    biz.push_to(&mut packet.headers);
                    let empty = if to.kitex_pb {
                        &NO_BYTES
                    } else {
                        &EMPTY_STRUCT
                    };
                    (MessageType::Reply, Ok(Body::Bytes(empty)))
                } else {
                    extend_kvs(&mut packet.headers.str_kvs, status.metadata());
                    packet
                        .headers
                        .push_str(RPC_CODE_KEY, status.code().as_i32().to_string());
                    (MessageType::Exception, Err(unary_exception_of(status)))
                }
            }
        };
        let header = MessageHeaderRef {
            name: &to.method,
            kind,
            seq_id: to.seq,
        };
        let max = self.limits.max_frame_size;
        let res = self.write.append(|buf| {
            let body = |b: &mut BytesMut| match &mut body {
                Ok(Body::Bytes(bytes)) => {
                    b.extend_from_slice(bytes);
                    Ok(())
                }
                // The handler's response is encoded straight into the reply packet.
                Ok(Body::Message(msg)) => msg.encode(b),
                // Kitex protobuf carries the exception as `ErrorProto`.
                Err(exc) if to.kitex_pb => {
                    encode_error_proto(exc.kind, &exc.message, b);
                    Ok(())
                }
                Err(exc) => exc
                    .encode(b)
                    .map_err(|e| Status::internal(format!("encode exception: {e}"))),
            };
            match plain {
                Some(framing) => write_plain(buf, framing, &header, max, body),
                None => write_packet(buf, &packet, to.framing, &header, max, body),
            }
        });
        match res {
            Ok(Err(e)) if matches!(body, Ok(Body::Message(_))) => {
                // The response could not be encoded (or is over the frame limit): the call
                // fails with that error instead.
                self.reply(to, md, Err(&e));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not write a reply"),
            _ => {}
        }
    }
}

impl Connection for UnaryConn {
    fn write_queue(&self) -> &WriteQueue {
        &self.write
    }

    fn life(&self) -> &Lifecycle {
        &self.life
    }

    fn parse(self: &Arc<Self>, buf: &mut BytesMut) -> Result<bool, Status> {
        conn::decode_packets(buf, &self.limits, |_| true, |p, _| self.on_reply(p))
    }

    fn read_timeouts(&self) -> ReadTimeouts {
        // Pooled connections idle out by the pool's sweeper, which reserves them first.
        ReadTimeouts::client(&self.limits, self.mode == ConnectionMode::Multiplexed)
    }

    fn is_idle(&self) -> bool {
        match self.mode {
            // A multiplexed call holds the connection from `try_acquire` to its handle's drop.
            ConnectionMode::Multiplexed => self.handles.load(Ordering::Acquire) == 0,
            ConnectionMode::Pooled => lock(&self.pending).is_empty(),
        }
    }

    fn retire_idle(&self) -> bool {
        let _pending = lock(&self.pending);
        if self.handles.load(Ordering::Acquire) != 0 {
            return false;
        }
        self.retired.store(true, Ordering::Release);
        true
    }

    fn fail(&self, status: Status) {
        UnaryConn::fail(self, status);
    }

    fn fail_unread(&self, status: Status) {
        self.fail_with(status, true);
    }

    fn settle_writes(&self) -> bool {
        self.redial.get().is_some() && !lock(&self.pending).is_empty()
    }
}

impl Connection for UnaryServerConn {
    fn write_queue(&self) -> &WriteQueue {
        &self.write
    }

    fn life(&self) -> &Lifecycle {
        &self.life
    }

    fn parse(self: &Arc<Self>, buf: &mut BytesMut) -> Result<bool, Status> {
        // Stop parsing (not only reading) at the in-flight cap: pipelined calls already in the
        // buffer wait there, charged to the budget.
        if let Some(decoder) = &self.plain {
            let mut decoded = false;
            while !self.must_pause(buf.len()) {
                let message = lock(decoder).decode(buf);
                match message {
                    Ok(Some(m)) => {
                        decoded = true;
                        self.on_plain(m)?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "malformed plain thrift stream; closing the connection");
                        return Err(Status::internal(e.to_string()));
                    }
                }
            }
            return Ok(decoded);
        }
        conn::decode_packets(
            buf,
            &self.limits,
            |unparsed| !self.must_pause(unparsed),
            |p, len| self.on_call(p, len),
        )
    }

    fn read_timeouts(&self) -> ReadTimeouts {
        ReadTimeouts::server(self.server.limits())
    }

    fn budget(&self) -> Option<&Arc<ByteBudget>> {
        Some(self.server.byte_budget())
    }

    fn must_pause(&self, unparsed: usize) -> bool {
        UnaryServerConn::must_pause(self, unparsed)
    }

    fn within_reserve(&self, reader: usize) -> bool {
        reader + self.held.load(Ordering::Acquire) + self.write.held() <= self.limits.conn_reserve
    }

    fn frame_len(&self, buf: &[u8]) -> Option<usize> {
        let framing = self.plain.as_ref().map(|d| lock(d).framing());
        let len = buf.get(..4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        match framing {
            // A bare message: its length is known only once it is parsed.
            Some(PlainFraming::Buffered) => None,
            _ => len.checked_add(4),
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn fail(&self, status: Status) {
        UnaryServerConn::fail(self, status);
    }

    fn shut_reads(&self) -> bool {
        self.shut_on_drain && self.life.is_draining()
    }
}

/// The headers of a plain Thrift call: none.
static PLAIN_HEADERS: Headers = Headers::new();

/// An empty Thrift struct (STOP): the Result of a REPLY that carries a business status.
static EMPTY_STRUCT: Bytes = Bytes::from_static(&[0]);
/// A protobuf message with no field set (a Kitex protobuf Result without success).
static NO_BYTES: Bytes = Bytes::new();

/// The payload of a successful reply.
enum Body<'a> {
    /// Bytes encoded earlier.
    Bytes(&'a Bytes),
    /// The handler's response, encoded into the packet as it is written.
    Message(&'a mut dyn Encodable),
}

#[derive(Debug, Clone)]
struct ReplyTo {
    flags: u16,
    seq: i32,
    framing: Framing,
    /// The call came as Kitex protobuf: the reply goes back in that form.
    kitex_pb: bool,
    /// The routed method's `&'static` name; owned only for a name that did not route.
    method: Cow<'static, str>,
    oneway: bool,
}

/// The message envelope of a unary payload (request or reply), its method name borrowed from
/// the packet.
struct MessageAt<'a> {
    framing: Framing,
    /// A Kitex protobuf message: the body is the protobuf request (not an Args struct).
    kitex_pb: bool,
    kind: MessageType,
    seq_id: i32,
    name: &'a str,
    /// Where the Args (or Result) struct starts in the payload.
    body_at: usize,
}

/// The envelope of a reply to this client: kind, seqid and where the Result struct starts in
/// the payload. The method name is checked but not kept (replies are matched by seqid).
fn parse_reply(payload: &[u8]) -> Result<(MessageType, i32, usize), Status> {
    let malformed = |e: String| Status::internal(format!("malformed reply: {e}"));
    let (form, message) = PayloadForm::split(payload).map_err(|e| malformed(e.to_string()))?;
    if form == PayloadForm::KitexProtobuf {
        // This client sends Thrift calls only (protobuf goes over TTHeader Streaming); the
        // envelope is still read first, for the same error as a request's.
        parse_message(payload).map_err(malformed)?;
        return Err(Status::internal(
            "malformed reply: Kitex protobuf to a Thrift call",
        ));
    }
    let (kind, seq_id, used) =
        MessageHeaderRef::decode_unnamed(message).map_err(|e| malformed(e.to_string()))?;
    Ok((kind, seq_id, payload.len() - message.len() + used))
}

/// Parses the envelope of a request or a reply: strict Thrift binary, framed or not, or Kitex
/// protobuf (Kitex's default for a protobuf IDL: the same envelope with magic `0x9001`, after a
/// `u32` length; the body is the protobuf message itself).
fn parse_message(payload: &[u8]) -> Result<MessageAt<'_>, String> {
    let (form, message) = PayloadForm::split(payload).map_err(|e| e.to_string())?;
    let (framing, kitex_pb) = match form {
        PayloadForm::Unframed => (Framing::Unframed, false),
        PayloadForm::Framed => (Framing::Framed, false),
        PayloadForm::KitexProtobuf => (Framing::Framed, true),
    };
    let (head, used) = if kitex_pb {
        MessageHeaderRef::decode_kitex_protobuf(message)
    } else {
        MessageHeaderRef::decode(message)
    }
    .map_err(|e| e.to_string())?;
    Ok(MessageAt {
        framing,
        kitex_pb,
        kind: head.kind,
        seq_id: head.seq_id,
        name: head.name,
        body_at: payload.len() - message.len() + used,
    })
}

struct ServerCallInner {
    /// The request's charge to the connection and the server-wide budget, until taken (0
    /// once released).
    request_charge: usize,
    request: Option<Bytes>,
    response: Option<Bytes>,
    header: Metadata,
    cancelled: Option<Status>,
    cancel_waker: Option<Waker>,
    finished: bool,
    /// In the connection's `calls` (the core asked for a reset: the handler waits).
    registered: bool,
}

/// One unary call as a raw server stream: the request is the only message, then EOF; the
/// response is held until `finish`, when the one REPLY carries it with all metadata.
struct UnaryServer {
    conn: Arc<UnaryServerConn>,
    call_id: u64,
    reply_to: ReplyTo,
    /// This call, for the connection's `calls` (no second allocation).
    me: Weak<UnaryServer>,
    st: Mutex<ServerCallInner>,
    _counted: Counted,
}

impl ServerStreamRaw for UnaryServer {
    fn poll_send_ready(&self, _cx: &mut Context<'_>, _len: usize) -> Poll<Result<(), Status>> {
        let st = lock(&self.st);
        if let Some(c) = &st.cancelled {
            return Poll::Ready(Err(c.clone()));
        }
        Poll::Ready(Ok(()))
    }

    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        // Only reached when a handler sends before finishing (the core's one-shot reply goes
        // through `finish`): keep the bytes for the REPLY.
        let mut buf = BytesMut::with_capacity(msg.encoded_len().unwrap_or(128));
        msg.encode(&mut buf)?;
        let mut st = lock(&self.st);
        if st.response.is_some() {
            return Err(Error::StreamFinished.into());
        }
        st.response = Some(buf.freeze());
        Ok(())
    }

    fn send_header(&self, header: Metadata) -> Result<(), Status> {
        lock(&self.st).header.extend(header);
        Ok(())
    }

    fn poll_recv(&self, _cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        let mut st = lock(&self.st);
        if let Some(c) = &st.cancelled {
            return Poll::Ready(Err(c.clone()));
        }
        self.conn.release(std::mem::take(&mut st.request_charge));
        Poll::Ready(Ok(st.request.take()))
    }

    fn finish(&self, finish: Finish<'_>) {
        let Finish {
            header,
            message,
            status,
            trailer,
            ..
        } = finish;
        let (md, response) = {
            let mut st = lock(&self.st);
            if st.finished {
                return;
            }
            st.finished = true;
            let mut md = std::mem::take(&mut st.header);
            if let Some(h) = header {
                md.extend(h);
            }
            md.extend(trailer);
            (md, st.response.take())
        };
        if self.conn.life.lost().is_none() {
            let to = &self.reply_to;
            match (status.is_ok(), message, response) {
                (true, Some(msg), _) => self.conn.reply(to, &md, Ok(Body::Message(msg))),
                (true, None, Some(body)) => self.conn.reply(to, &md, Ok(Body::Bytes(&body))),
                (true, None, None) => self.conn.reply(
                    to,
                    &md,
                    Err(&Status::internal("handler returned no response")
                        .with_transport_code(ApplicationException::MISSING_RESULT)),
                ),
                (false, _, _) => self.conn.reply(to, &md, Err(&status)),
            }
        }
        let registered = {
            let mut st = lock(&self.st);
            self.conn.release(std::mem::take(&mut st.request_charge));
            st.registered
        };
        self.conn.call_done(self.call_id, registered);
    }

    fn poll_reset(&self, cx: &mut Context<'_>) -> Poll<Status> {
        let mut st = lock(&self.st);
        if let Some(c) = &st.cancelled {
            return Poll::Ready(c.clone());
        }
        if !st.registered && !st.finished {
            // The handler waits: from now on a lost connection must cancel it. Lock order:
            // the call, then `calls` (`fail` never holds `calls` while locking a call).
            st.registered = true;
            lock(&self.conn.calls).insert(self.call_id, self.me.clone());
            // `fail` marks the connection lost before it drains `calls`: if it drained before
            // the insert, the loss is visible here.
            if let Some(lost) = self.conn.life.lost() {
                let lost = st.cancelled.get_or_insert(lost.clone()).clone();
                return Poll::Ready(lost);
            }
        }
        register(&mut st.cancel_waker, cx);
        Poll::Pending
    }
}

impl Drop for UnaryServer {
    fn drop(&mut self) {
        // The core always finishes first; this covers raw use without the core.
        if !lock(&self.st).finished {
            self.finish(Finish {
                header: None,
                message: None,
                status: Status::internal("the server dropped the call"),
                trailer: Metadata::new(),
            });
        }
        // The call's state (charged with the request in `on_message`), and the request if
        // it is still charged.
        let request = std::mem::take(&mut lock(&self.st).request_charge);
        self.conn.release(STREAM_STATE_BYTES + request);
    }
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimal_writes_every_u64_as_to_string_does() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            1500,
            4_294_967_296,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }
}
