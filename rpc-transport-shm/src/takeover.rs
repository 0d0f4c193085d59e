//! Hot restart: a new server process takes the listening sockets over from the one serving
//! them, so clients never see the path disappear or a connect refused.
//!
//! The serving process runs a [`Handover`] on a control socket next to its first Unix-socket
//! address ([`control_path`]: `PATH.takeover`). The new process ([`Takeover`]):
//!
//! 1. connects to the control socket and sends `REQUEST`;
//! 2. the old process stops accepting ([`AcceptControl::pause`]: connects wait in the kernel's
//!    backlog, nothing is refused), and replies `HANDOVER`: the address of each listening
//!    socket, with a duplicate of the socket itself attached (`SCM_RIGHTS`);
//! 3. the new process serves those sockets ([`Takeover::bind`], which falls back to binding
//!    addresses the old process did not have), starts its listener and sends `READY`;
//! 4. the old process's [`Handover::handed_over`] resolves: it shuts down gracefully
//!    (`Running::shutdown`, which leaves the socket files alone now). Shared-memory sessions
//!    get a go-away ([`crate::goaway`]): clients open new sessions — to the new process — for
//!    new calls, and the calls in flight finish on the old one within the grace period.
//!
//! If the new process does not confirm within [`READY_TIMEOUT`] (it crashed, or failed to
//! start), the old one accepts again and keeps serving.
//!
//! The same works for every listener of the process — `unix://` (TTHeader, gRPC over Unix
//! sockets) and `tcp://` too: passing the socket means one accept queue that changes owner.
//! (`SO_REUSEPORT` would give each process its own queue; the connects queued on the old
//! one's when it closes are reset.) What differs is how each protocol drains: see the crate
//! docs, "Hot restart".
//!
//! Only a process of the same user may take over (`SO_PEERCRED`); others get `REFUSE`.
//!
//! # Messages
//!
//! Every message starts with a [`HEADER_LEN`]-byte header: magic `RPCHANDO`, kind (u16),
//! version (u16), count (u16: sockets in a `HANDOVER`, the reason of a `REFUSE`), two zero
//! bytes, body length (u32), the sender's pid (u32), all little-endian. Only `HANDOVER` has a
//! body: per socket, the address's length (u16) and text (`tcp://…`, `unix://…`, `shm://…`),
//! in the order of the descriptors attached to the message's first byte.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rpc_core::serve::{AcceptControl, Listener, Running};
use rpc_core::Address;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::sys;

/// The magic every control message starts with.
pub const MAGIC: [u8; 8] = *b"RPCHANDO";
/// The version of the control protocol.
pub const VERSION: u16 = 1;
/// Bytes of a message header.
pub const HEADER_LEN: usize = 24;
/// Listening sockets one handover carries at most: the descriptors travel in one
/// `SCM_RIGHTS` message, which the receiver's control buffer (256 bytes) holds with room to
/// spare; a server with more listeners than this is refused a takeover.
pub const MAX_SOCKETS: usize = 16;
/// Longest address text in a handover (a Unix socket path is at most 108 bytes; TCP host
/// names at most 253).
pub const MAX_ADDRESS_LEN: usize = 1024;
/// How long each step of the exchange may take (a message to arrive, the new process to
/// connect): a peer that stalls is dropped, the old process keeps serving.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the old process waits for `READY` after it handed its sockets over (the new one
/// binds what it did not inherit and starts its listener); then it accepts again itself.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The control socket's suffix after the first Unix-socket path (see [`control_path`]).
pub const CONTROL_SUFFIX: &str = ".takeover";

/// Why a takeover was refused (`REFUSE`'s count field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The requesting process belongs to another user.
    Permission,
    /// The server is shutting down (or already handed over).
    ShuttingDown,
    /// The request was not understood (another version).
    Version,
    /// More listening sockets than [`MAX_SOCKETS`].
    TooMany,
    /// A reason this version does not know.
    Other(u16),
}

impl RefuseReason {
    fn code(self) -> u16 {
        match self {
            RefuseReason::Permission => 1,
            RefuseReason::ShuttingDown => 2,
            RefuseReason::Version => 3,
            RefuseReason::TooMany => 4,
            RefuseReason::Other(c) => c,
        }
    }

    fn of(code: u16) -> RefuseReason {
        match code {
            1 => RefuseReason::Permission,
            2 => RefuseReason::ShuttingDown,
            3 => RefuseReason::Version,
            4 => RefuseReason::TooMany,
            c => RefuseReason::Other(c),
        }
    }
}

/// One control message (see the module docs, "Messages").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// New → old: hand me your sockets.
    Request {
        /// The sender's pid.
        pid: u32,
    },
    /// Old → new: the listening sockets' addresses, in the order of the attached descriptors.
    Handover {
        /// The sender's pid.
        pid: u32,
        /// One address per attached socket.
        addrs: Vec<Address>,
    },
    /// New → old: serving; drain and exit.
    Ready {
        /// The sender's pid.
        pid: u32,
    },
    /// Old → new: no.
    Refuse {
        /// The sender's pid.
        pid: u32,
        /// Why.
        reason: RefuseReason,
    },
}

const KIND_REQUEST: u16 = 1;
const KIND_HANDOVER: u16 = 2;
const KIND_READY: u16 = 3;
const KIND_REFUSE: u16 = 4;

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// A message's header, decoded: kind, version, count, body length, pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    kind: u16,
    version: u16,
    count: u16,
    body_len: u32,
    pid: u32,
}

impl Header {
    fn decode(b: &[u8; HEADER_LEN]) -> std::io::Result<Header> {
        if b[..8] != MAGIC {
            return Err(invalid("not a takeover control message (bad magic)"));
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let h = Header {
            kind: u16_at(8),
            version: u16_at(10),
            count: u16_at(12),
            body_len: u32_at(16),
            pid: u32_at(20),
        };
        let max_body = MAX_SOCKETS * (2 + MAX_ADDRESS_LEN);
        if h.body_len as usize > max_body {
            return Err(invalid(format!(
                "control message body of {} bytes, at most {max_body}",
                h.body_len
            )));
        }
        Ok(h)
    }
}

impl Message {
    /// The wire bytes: header and body.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, count, pid, body) = match self {
            Message::Request { pid } => (KIND_REQUEST, 0, *pid, Vec::new()),
            Message::Ready { pid } => (KIND_READY, 0, *pid, Vec::new()),
            Message::Refuse { pid, reason } => (KIND_REFUSE, reason.code(), *pid, Vec::new()),
            Message::Handover { pid, addrs } => {
                let mut body = Vec::new();
                for a in addrs {
                    let text = a.to_string();
                    body.extend_from_slice(&(text.len() as u16).to_le_bytes());
                    body.extend_from_slice(text.as_bytes());
                }
                (KIND_HANDOVER, addrs.len() as u16, *pid, body)
            }
        };
        let mut b = Vec::with_capacity(HEADER_LEN + body.len());
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&(body.len() as u32).to_le_bytes());
        b.extend_from_slice(&pid.to_le_bytes());
        b.extend_from_slice(&body);
        b
    }

    /// Decodes a whole message (header and body); a typed error for anything malformed: bad
    /// magic, another version, an unknown kind, a body of the wrong length, an address that
    /// does not parse, more than [`MAX_SOCKETS`] addresses.
    pub fn decode(b: &[u8]) -> std::io::Result<Message> {
        let head: &[u8; HEADER_LEN] = b
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| invalid("control message shorter than its header"))?;
        let h = Header::decode(head)?;
        Message::decode_parts(h, &b[HEADER_LEN..])
    }

    fn decode_parts(h: Header, body: &[u8]) -> std::io::Result<Message> {
        if h.version != VERSION {
            return Err(invalid(format!(
                "takeover control protocol version {}, we speak {VERSION}",
                h.version
            )));
        }
        if body.len() != h.body_len as usize {
            return Err(invalid("control message body length does not match"));
        }
        let pid = h.pid;
        let empty = |m: Message| {
            if body.is_empty() {
                Ok(m)
            } else {
                Err(invalid("unexpected control message body"))
            }
        };
        match h.kind {
            KIND_REQUEST => empty(Message::Request { pid }),
            KIND_READY => empty(Message::Ready { pid }),
            KIND_REFUSE => empty(Message::Refuse {
                pid,
                reason: RefuseReason::of(h.count),
            }),
            KIND_HANDOVER => {
                let n = h.count as usize;
                if n > MAX_SOCKETS {
                    return Err(invalid(format!(
                        "{n} sockets handed over, at most {MAX_SOCKETS}"
                    )));
                }
                let mut addrs = Vec::with_capacity(n);
                let mut rest = body;
                for _ in 0..n {
                    let (len, tail) = rest
                        .split_first_chunk::<2>()
                        .ok_or_else(|| invalid("handover body cut short"))?;
                    let len = u16::from_le_bytes(*len) as usize;
                    if len > MAX_ADDRESS_LEN || len > tail.len() {
                        return Err(invalid("handover address cut short or too long"));
                    }
                    let (text, tail) = tail.split_at(len);
                    let text = std::str::from_utf8(text)
                        .map_err(|_| invalid("handover address is not UTF-8"))?;
                    addrs.push(
                        text.parse::<Address>()
                            .map_err(|e| invalid(format!("handover address: {e}")))?,
                    );
                    rest = tail;
                }
                if !rest.is_empty() {
                    return Err(invalid("bytes after the handover's addresses"));
                }
                Ok(Message::Handover { pid, addrs })
            }
            k => Err(invalid(format!(
                "unknown takeover control message kind {k}"
            ))),
        }
    }
}

/// Reads one message and the descriptors attached to it (at most `max_fds`).
async fn read_message(
    stream: &UnixStream,
    max_fds: usize,
) -> std::io::Result<(Message, Vec<OwnedFd>)> {
    let mut head = [0u8; HEADER_LEN];
    let fds = sys::recv_with_fds(stream, &mut head, max_fds).await?;
    let h = Header::decode(&head)?;
    let mut body = vec![0u8; h.body_len as usize];
    if !body.is_empty() {
        sys::recv_with_fds(stream, &mut body, 0).await?;
    }
    Ok((Message::decode_parts(h, &body)?, fds))
}

async fn step<T>(
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, f).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("takeover: {what} timed out"),
        )
    })?
}

/// The control socket of a server with these addresses: the first `unix://` or `shm://` path
/// with [`CONTROL_SUFFIX`] appended; `None` without a Unix-socket address.
pub fn control_path(addrs: &[Address]) -> Option<PathBuf> {
    addrs.iter().find_map(|a| match a {
        Address::Unix(p) | Address::Shm(p) => {
            let mut s = p.clone().into_os_string();
            s.push(CONTROL_SUFFIX);
            Some(PathBuf::from(s))
        }
        _ => None,
    })
}

/// The new process's side: the sockets the old process handed over, until [`Takeover::ready`]
/// tells it to drain.
#[derive(Debug)]
pub struct Takeover {
    stream: UnixStream,
    sockets: Vec<(Address, OwnedFd)>,
    predecessor: u32,
    started: Instant,
}

impl Takeover {
    /// Asks the server whose control socket is at `control` for its listening sockets. It
    /// stops accepting when it answers: call [`Takeover::bind`] for each address, start the
    /// listener and call [`Takeover::ready`] promptly (within [`READY_TIMEOUT`]). Errors:
    /// `NotFound` / `ConnectionRefused` when no server listens there, `PermissionDenied` when
    /// it refused, `InvalidData` for a malformed answer.
    pub async fn request(control: impl AsRef<Path>) -> std::io::Result<Takeover> {
        let started = Instant::now();
        let control = control.as_ref();
        let stream = step("connect", async { UnixStream::connect(control).await }).await?;
        let me = std::process::id();
        step("request", async {
            sys::send_with_fds(&stream, &Message::Request { pid: me }.encode(), &[]).await
        })
        .await?;
        let (msg, fds) = step("handover", read_message(&stream, MAX_SOCKETS)).await?;
        match msg {
            Message::Handover { pid, addrs } => {
                if addrs.len() != fds.len() {
                    return Err(invalid(format!(
                        "handover of {} addresses came with {} sockets",
                        addrs.len(),
                        fds.len()
                    )));
                }
                Ok(Takeover {
                    stream,
                    sockets: addrs.into_iter().zip(fds).collect(),
                    predecessor: pid,
                    started,
                })
            }
            Message::Refuse { reason, .. } => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("takeover refused: {reason:?}"),
            )),
            other => Err(invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// The old process's pid (as it said).
    pub fn predecessor(&self) -> u32 {
        self.predecessor
    }

    /// The addresses handed over and not yet taken.
    pub fn addrs(&self) -> Vec<Address> {
        self.sockets.iter().map(|(a, _)| a.clone()).collect()
    }

    /// Takes the inherited socket of `addr`, if the old process had one.
    pub fn take(&mut self, addr: &Address) -> Option<OwnedFd> {
        let i = self.sockets.iter().position(|(a, _)| a == addr)?;
        Some(self.sockets.remove(i).1)
    }

    /// Adds `addr` to `listener`: the inherited socket if the old process had one
    /// ([`Listener::bind_inherited`]), else a fresh bind.
    pub async fn bind(&mut self, listener: Listener, addr: Address) -> std::io::Result<Listener> {
        match self.take(&addr) {
            Some(fd) => listener.bind_inherited(addr, fd),
            None => listener.bind(addr).await,
        }
    }

    /// Tells the old process this one serves now: it drains and exits. Sockets handed over
    /// and not taken are closed (the old process closes its copies as it exits). Returns how
    /// long the takeover took from [`Takeover::request`].
    pub async fn ready(self) -> std::io::Result<Duration> {
        let me = std::process::id();
        step("ready", async {
            sys::send_with_fds(&self.stream, &Message::Ready { pid: me }.encode(), &[]).await
        })
        .await?;
        Ok(self.started.elapsed())
    }
}

/// What [`Handover::handed_over`] reports.
#[derive(Debug, Clone, Copy)]
pub struct HandedOver {
    /// The new process's pid.
    pub successor: u32,
    /// Listening sockets handed over.
    pub sockets: usize,
    /// When the request arrived.
    pub requested: Instant,
    /// When the new process confirmed.
    pub confirmed: Instant,
}

/// The old process's side: answers takeover requests on a control socket for a [`Running`]
/// listener (see the module docs). Dropping it stops answering.
#[derive(Debug)]
pub struct Handover {
    path: PathBuf,
    done: watch::Receiver<Option<HandedOver>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Handover {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Handover {
    /// Listens for a successor on `control` (a stale socket file there is replaced) for
    /// `running`'s sockets. Answers one request at a time, until one succeeds or `running`
    /// shuts down.
    pub fn listen(control: impl Into<PathBuf>, running: &Running) -> std::io::Result<Handover> {
        let path = control.into();
        if std::fs::symlink_metadata(&path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        let (tx, done) = watch::channel(None);
        let task = tokio::spawn(serve_control(
            listener,
            path.clone(),
            running.accept_control(),
            running.shutdown_signal(),
            tx,
        ));
        Ok(Handover { path, done, task })
    }

    /// The control socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves once a successor confirmed it serves the sockets: shut the listener down now
    /// (gracefully). Pending forever if none does.
    pub async fn handed_over(&mut self) -> HandedOver {
        loop {
            if let Some(h) = *self.done.borrow_and_update() {
                return h;
            }
            if self.done.changed().await.is_err() {
                // The control task ended without a successor: none will come.
                std::future::pending::<()>().await;
            }
        }
    }
}

async fn serve_control(
    listener: UnixListener,
    path: PathBuf,
    control: AcceptControl,
    shutdown: rpc_core::serve::Shutdown,
    done: watch::Sender<Option<HandedOver>>,
) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "takeover control socket: accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(STEP_TIMEOUT) => continue,
                        () = shutdown.draining() => break,
                    }
                }
            },
            () = shutdown.draining() => break,
        };
        match answer(&stream, &control, me).await {
            Ok(Some(h)) => {
                done.send_replace(Some(h));
                // The control path is the successor's now (it binds its own there).
                return;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "takeover failed; serving on");
                if control.is_paused() {
                    control.resume();
                }
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// One takeover request: `Some` once the successor confirmed, `None` if refused.
async fn answer(
    stream: &UnixStream,
    control: &AcceptControl,
    me: u32,
) -> std::io::Result<Option<HandedOver>> {
    let pid = std::process::id();
    let refuse = |reason| Message::Refuse { pid, reason }.encode();
    let (msg, _) = step("request", read_message(stream, 0)).await?;
    let requested = Instant::now();
    let Message::Request { pid: successor } = msg else {
        return Err(invalid(format!("expected a request, got {msg:?}")));
    };
    let uid = stream.peer_cred()?.uid();
    if uid != me {
        tracing::warn!(uid, "takeover request from another user refused");
        step(
            "refuse",
            sys::send_with_fds(stream, &refuse(RefuseReason::Permission), &[]),
        )
        .await?;
        return Ok(None);
    }
    let sockets = match control.pause() {
        Ok(s) => s,
        Err(_) => {
            step(
                "refuse",
                sys::send_with_fds(stream, &refuse(RefuseReason::ShuttingDown), &[]),
            )
            .await?;
            return Ok(None);
        }
    };
    if sockets.len() > MAX_SOCKETS {
        control.resume();
        step(
            "refuse",
            sys::send_with_fds(stream, &refuse(RefuseReason::TooMany), &[]),
        )
        .await?;
        return Ok(None);
    }
    let addrs: Vec<Address> = sockets.iter().map(|(a, _)| a.clone()).collect();
    let fds: Vec<_> = sockets.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let msg = Message::Handover { pid, addrs }.encode();
    step("handover", sys::send_with_fds(stream, &msg, &fds)).await?;
    // Our duplicates close here; the successor holds its own.
    drop(sockets);
    let (msg, _) = tokio::time::timeout(READY_TIMEOUT, read_message(stream, 0))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the successor never said ready",
            )
        })??;
    match msg {
        Message::Ready { .. } => Ok(Some(HandedOver {
            successor,
            sockets: fds.len(),
            requested,
            confirmed: Instant::now(),
        })),
        other => Err(invalid(format!("expected ready, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let msgs = [
            Message::Request { pid: 7 },
            Message::Ready { pid: 8 },
            Message::Refuse {
                pid: 9,
                reason: RefuseReason::Permission,
            },
            Message::Refuse {
                pid: 9,
                reason: RefuseReason::Other(77),
            },
            Message::Handover {
                pid: 10,
                addrs: vec![
                    "shm:///tmp/a.shm".parse().unwrap(),
                    "unix:///tmp/b.sock".parse().unwrap(),
                    "tcp://127.0.0.1:4000".parse().unwrap(),
                ],
            },
            Message::Handover {
                pid: 11,
                addrs: vec![],
            },
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(Message::decode(&b).unwrap(), m, "{b:02x?}");
        }
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        let good = Message::Handover {
            pid: 1,
            addrs: vec!["shm:///tmp/a".parse().unwrap()],
        }
        .encode();
        let bad = |b: &[u8]| {
            let e = Message::decode(b).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        };
        // Short, bad magic, other version, unknown kind.
        bad(&good[..10]);
        let mut b = good.clone();
        b[0] = b'X';
        bad(&b);
        let mut b = good.clone();
        b[10] = 9;
        bad(&b);
        let mut b = good.clone();
        b[8] = 99;
        bad(&b);
        // Body shorter or longer than the header says.
        bad(&good[..good.len() - 1]);
        let mut b = good.clone();
        b.push(0);
        bad(&b);
        // More sockets than the body holds; more than allowed.
        let mut b = good.clone();
        b[12] = 2;
        bad(&b);
        let mut b = Message::Handover {
            pid: 1,
            addrs: vec![],
        }
        .encode();
        b[12] = (MAX_SOCKETS + 1) as u8;
        bad(&b);
        // An address that is not one.
        let mut b = good.clone();
        let at = HEADER_LEN + 2;
        b[at..at + 3].copy_from_slice(b"xyz");
        bad(&b);
        // A body on a request; a huge declared body.
        let mut b = Message::Request { pid: 1 }.encode();
        b[16] = 1;
        b.push(0);
        bad(&b);
        let mut b = Message::Request { pid: 1 }.encode();
        b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        bad(&b);
        // Every truncation of a valid message fails cleanly (no panic).
        for n in 0..good.len() {
            assert!(Message::decode(&good[..n]).is_err());
        }
    }

    #[test]
    fn the_control_path_follows_the_first_unix_socket() {
        let addrs: Vec<Address> = ["tcp://127.0.0.1:1", "shm:///tmp/p", "unix:///tmp/q"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(control_path(&addrs), Some(PathBuf::from("/tmp/p.takeover")));
        assert_eq!(control_path(&addrs[..1]), None);
    }
}
