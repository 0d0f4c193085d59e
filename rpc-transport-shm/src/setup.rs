//! Session set-up over the Unix socket: a versioned handshake that negotiates features and
//! sizes, and the memfd regions and eventfds passed with `SCM_RIGHTS`.
//!
//! 1. client → server, plain bytes: `HELLO` (magic, version, features, requested ring slots
//!    and arena bytes). The first bytes are the preface the serving layer detects.
//! 2. server → client: `ACCEPT` with the agreed sizes (each the smaller of what the client asked
//!    and the server's maximum) and features (the intersection), plus the server's region memfd
//!    and the eventfd that wakes the server's reader — or `REJECT` (wrong version), then close.
//! 3. client → server: `REGION` (the same sizes) with the client's memfd and eventfd.
//!
//! Each side checks what it receives: the region is sealed against shrinking and growing and
//! exactly as long as the agreed layout, the eventfd is an eventfd (made non-blocking), and at
//! most two descriptors came along.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rpc_core::limits::ByteBudget;
use rpc_core::{Peer, Server, Status};
use rpc_transport_ttheader::proto::Role;
use rpc_transport_ttheader::session::{Limits, Session};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::link::{socket_reader, socket_writer, Layout, Link, Reader, ShmSession, ShmSink};
use crate::mem::{Memory, PAGE};
use crate::ring::ring_bytes;
use crate::stats::ShmStats;
use crate::sys::{self, Region};

/// The preface: the first 8 bytes a client sends.
pub const MAGIC: [u8; 8] = *b"RPCSHM\x00\x01";
/// The protocol version this crate speaks. 2: a descriptor carries one frame or several back
/// to back (a one-shot request's Header, message and half-close; a reply's Header, message
/// and Trailer).
pub const VERSION: u16 = 2;
/// Feature bit: frames larger than the arena travel over the socket.
pub const FEATURE_FALLBACK: u32 = 1;
/// Feature bit: small frames inline in descriptors.
pub const FEATURE_INLINE: u32 = 2;
/// Feature bit: the server may send a go-away (`crate::goaway`) when it leaves; a client
/// without it gets the plain drain (new streams refused).
pub const FEATURE_GOAWAY: u32 = 4;
/// Feature bit: the session is a byte stream (`ShmStream`), not a ttstream session. Not a
/// negotiable option but the mode: a server serves one mode and rejects a hello of the other.
pub const FEATURE_BYTE_STREAM: u32 = 8;
const FEATURES: u32 = FEATURE_FALLBACK | FEATURE_INLINE | FEATURE_GOAWAY;

const MSG_LEN: usize = 64;
const KIND_HELLO: u16 = 1;
const KIND_ACCEPT: u16 = 2;
const KIND_REGION: u16 = 3;
const KIND_REJECT: u16 = 4;
/// Reject reasons (in the reject message's feature field).
const REJECT_VERSION: u32 = 1;
const REJECT_BUSY: u32 = 2;
const REJECT_MODE: u32 = 3;

/// The server-wide budget of region bytes (see [`DEFAULT_MAX_REGION_BYTES`]).
#[derive(Debug)]
pub(crate) struct RegionBudget {
    max: usize,
    used: std::sync::atomic::AtomicUsize,
}

/// Region bytes reserved for one session; returned on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<RegionBudget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget
            .used
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

impl RegionBudget {
    pub(crate) fn new(max: usize) -> Arc<RegionBudget> {
        Arc::new(RegionBudget {
            max,
            used: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        use std::sync::atomic::Ordering;
        let mut cur = self.used.load(Ordering::Acquire);
        loop {
            let next = cur.checked_add(bytes).filter(|n| *n <= self.max)?;
            match self
                .used
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Some(Reservation {
                        budget: self.clone(),
                        bytes,
                    })
                }
                Err(c) => cur = c,
            }
        }
    }

    /// Region bytes committed now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A session's regions charged to the server-wide byte budget
/// (`ServerLimits::max_buffered_bytes`) for its life; released on drop.
#[derive(Debug)]
pub(crate) struct BudgetHold {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Drop for BudgetHold {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// Serialises the check-then-charge of [`BudgetHold::take`] between concurrent handshakes.
static HOLD: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl BudgetHold {
    /// What a session of `sizes` makes the server hold at most: its own region and the
    /// client's (mapped; its pages count for the server once it reads frames from them). Both
    /// are faulted in as used, so this is the ceiling of the session's resident memory, not
    /// what it holds from the start.
    pub(crate) fn cost(sizes: Sizes) -> usize {
        sizes.region_len().saturating_mul(2)
    }

    /// Charges a session of `sizes` to `budget` if it fits within the budget's limit.
    fn take(budget: &Arc<ByteBudget>, sizes: Sizes) -> Option<BudgetHold> {
        let bytes = BudgetHold::cost(sizes);
        let _one = HOLD.lock().unwrap_or_else(|e| e.into_inner());
        if budget.used().saturating_add(bytes) > budget.limit() {
            return None;
        }
        budget.charge(bytes);
        Some(BudgetHold {
            budget: budget.clone(),
            bytes,
        })
    }
}

/// Default descriptor slots per ring: 1024 × 128 B = 128 KiB, enough for a burst of 1,000
/// small frames before a sender waits.
pub const DEFAULT_RING_SLOTS: usize = 1024;
/// Default arena per direction: 16 MiB holds the default connection receive budget (8 MiB of
/// unread frames) twice over; a frame larger than the arena goes over the socket.
pub const DEFAULT_ARENA_BYTES: usize = 16 * 1024 * 1024;
/// Largest ring a server accepts (8 MiB of descriptors).
pub const MAX_RING_SLOTS: usize = 65536;
/// Largest arena a server accepts per direction.
pub const MAX_ARENA_BYTES: usize = 1 << 30;
/// Shared memory a server commits to sessions at most, over all of them (its own regions,
/// faulted in as used, so this bounds what they can grow to): 1 GiB is 63 sessions at the
/// default sizes. A client beyond it is refused at
/// the handshake (`UNAVAILABLE`, retry later), so a peer opening sessions in a loop cannot make
/// the server commit memory without bound.
pub const DEFAULT_MAX_REGION_BYTES: usize = 1 << 30;
/// How long the handshake may take after the socket connected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sizes of a session's regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Descriptor slots per ring (a power of two).
    pub ring_slots: usize,
    /// Arena bytes per direction (a power of two, at least 64 KiB).
    pub arena_bytes: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            ring_slots: DEFAULT_RING_SLOTS,
            arena_bytes: DEFAULT_ARENA_BYTES,
        }
    }
}

impl Sizes {
    pub(crate) fn valid(&self) -> bool {
        self.ring_slots.is_power_of_two()
            && (8..=MAX_RING_SLOTS).contains(&self.ring_slots)
            && self.arena_bytes.is_power_of_two()
            && (64 * 1024..=MAX_ARENA_BYTES).contains(&self.arena_bytes)
    }

    pub(crate) fn layout(&self) -> Layout {
        let arena_off = ring_bytes(self.ring_slots).div_ceil(PAGE) * PAGE;
        Layout {
            ring_slots: self.ring_slots,
            arena_off,
            arena_len: self.arena_bytes,
        }
    }

    pub(crate) fn region_len(&self) -> usize {
        self.layout().arena_off + self.arena_bytes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Msg {
    kind: u16,
    version: u16,
    features: u32,
    sizes: Sizes,
    region_len: u64,
    /// The sender's pid (ACCEPT; 0 elsewhere and from older servers): the client watches
    /// this process for the server's death. Not `SO_PEERCRED`: after a hot restart the
    /// listening socket was made by the old process, and a connect's peer credentials are
    /// the listener's (`crate::takeover`).
    pid: u32,
}

impl Msg {
    fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.kind.to_le_bytes());
        b[10..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.features.to_le_bytes());
        b[16..20].copy_from_slice(&(self.sizes.ring_slots as u32).to_le_bytes());
        b[24..32].copy_from_slice(&(self.sizes.arena_bytes as u64).to_le_bytes());
        b[32..40].copy_from_slice(&self.region_len.to_le_bytes());
        b[40..44].copy_from_slice(&self.pid.to_le_bytes());
        b
    }

    fn decode(b: &[u8; MSG_LEN]) -> Result<Msg, String> {
        if b[..8] != MAGIC {
            return Err("not a shared-memory handshake (bad magic)".into());
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        Ok(Msg {
            kind: u16_at(8),
            version: u16_at(10),
            features: u32_at(12),
            sizes: Sizes {
                ring_slots: u32_at(16) as usize,
                arena_bytes: usize::try_from(u64_at(24)).map_err(|_| "arena size")?,
            },
            region_len: u64_at(32),
            pid: u32_at(40),
        })
    }
}

fn proto_err(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// What a finished handshake leaves: our region, the peer's, the two eventfds, the socket.
pub(crate) struct Established {
    pub(crate) stream: UnixStream,
    pub(crate) sizes: Sizes,
    /// The features both sides have.
    pub(crate) features: u32,
    /// The server's pid as its ACCEPT says (client side; `None` from an older server).
    pub(crate) peer_pid: Option<u32>,
    pub(crate) mine: Arc<Region>,
    pub(crate) theirs: Arc<Region>,
    pub(crate) wake_me: OwnedFd,
    pub(crate) wake_peer: OwnedFd,
}

#[cfg(test)]
impl Established {
    /// Test access for a hand-driven (hostile) peer: the socket, our region, the eventfd that
    /// wakes the other side, and the ring size.
    pub(crate) fn into_raw(self) -> (UnixStream, Arc<Region>, OwnedFd, usize) {
        (
            self.stream,
            self.mine,
            self.wake_peer,
            self.sizes.ring_slots,
        )
    }
}

fn own_region(sizes: Sizes) -> std::io::Result<(Arc<Region>, OwnedFd, OwnedFd)> {
    let (region, fd) = Region::create(sizes.region_len())?;
    let region = Arc::new(region);
    let mem: Arc<dyn Memory> = region.clone();
    crate::ring::init(&mem, 0, sizes.ring_slots).map_err(|e| proto_err(e.to_string()))?;
    Ok((region, fd, sys::eventfd()?))
}

fn peer_parts(fds: Vec<OwnedFd>, sizes: Sizes) -> std::io::Result<(Arc<Region>, OwnedFd)> {
    let mut fds = fds.into_iter();
    let (Some(memfd), Some(efd), None) = (fds.next(), fds.next(), fds.next()) else {
        return Err(proto_err("expected a region and an eventfd from the peer"));
    };
    let region = Region::open(&memfd, sizes.region_len())?;
    sys::check_eventfd(&efd)?;
    Ok((Arc::new(region), efd))
}

/// Client side of the handshake, asking for `want`.
pub(crate) async fn client(stream: UnixStream, want: Sizes) -> std::io::Result<Established> {
    client_with(stream, want, 0).await
}

/// Client side of the handshake in a mode: `mode` is 0 (a ttstream session) or
/// [`FEATURE_BYTE_STREAM`].
pub(crate) async fn client_with(
    stream: UnixStream,
    want: Sizes,
    mode: u32,
) -> std::io::Result<Established> {
    let hello = Msg {
        kind: KIND_HELLO,
        version: VERSION,
        features: FEATURES | mode,
        sizes: want,
        region_len: 0,
        pid: 0,
    };
    sys::send_with_fds(&stream, &hello.encode(), &[]).await?;
    let mut b = [0u8; MSG_LEN];
    let fds = sys::recv_with_fds(&stream, &mut b, 2).await?;
    let accept = Msg::decode(&b).map_err(proto_err)?;
    if accept.kind == KIND_REJECT {
        return Err(if accept.features == REJECT_BUSY {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "server has no shared memory left for another session",
            )
        } else if accept.features == REJECT_MODE {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "server serves the other shared-memory mode (byte streams vs. RPC sessions)",
            )
        } else {
            proto_err(format!(
                "server speaks shared-memory protocol version {}, we speak {VERSION}",
                accept.version
            ))
        });
    }
    let sizes = accept.sizes;
    if accept.kind != KIND_ACCEPT
        || accept.version != VERSION
        || !sizes.valid()
        || sizes.ring_slots > want.ring_slots
        || sizes.arena_bytes > want.arena_bytes
        || accept.region_len != sizes.region_len() as u64
        || accept.features & FEATURE_BYTE_STREAM != mode
    {
        return Err(proto_err(format!("bad handshake reply {accept:?}")));
    }
    let (theirs, wake_peer) = peer_parts(fds, sizes)?;
    let (mine, memfd, wake_me) = own_region(sizes)?;
    let region = Msg {
        kind: KIND_REGION,
        pid: 0,
        ..accept
    };
    sys::send_with_fds(
        &stream,
        &region.encode(),
        &[memfd.as_raw_fd(), wake_me.as_raw_fd()],
    )
    .await?;
    Ok(Established {
        stream,
        sizes,
        features: accept.features & FEATURES,
        peer_pid: (accept.pid != 0).then_some(accept.pid),
        mine,
        theirs,
        wake_me,
        wake_peer,
    })
}

/// What a server keeps for a session's life: its share of the region budget and of the
/// server-wide byte budget.
#[derive(Debug)]
pub(crate) struct Held {
    _region: Reservation,
    _bytes: Option<BudgetHold>,
}

/// Server side: `prefix` holds what the serving layer already read of the hello. The session's
/// regions are reserved from `budget` and, with `bytes` (the server's byte budget), charged
/// there too; a client they do not fit is refused (busy, retry later).
pub(crate) async fn server(
    stream: UnixStream,
    prefix: &[u8],
    max: Sizes,
    budget: &Arc<RegionBudget>,
    bytes: Option<&Arc<ByteBudget>>,
) -> std::io::Result<(Established, Held)> {
    server_with(stream, prefix, max, budget, bytes, 0).await
}

/// Server side in a mode (see [`client_with`]): a hello of the other mode is rejected.
pub(crate) async fn server_with(
    stream: UnixStream,
    prefix: &[u8],
    max: Sizes,
    budget: &Arc<RegionBudget>,
    bytes: Option<&Arc<ByteBudget>>,
    mode: u32,
) -> std::io::Result<(Established, Held)> {
    let mut b = [0u8; MSG_LEN];
    let have = prefix.len().min(MSG_LEN);
    if prefix.len() > MSG_LEN {
        return Err(proto_err(
            "client sent more than the hello before the reply",
        ));
    }
    b[..have].copy_from_slice(&prefix[..have]);
    if have < MSG_LEN {
        let fds = sys::recv_with_fds(&stream, &mut b[have..], 0).await?;
        drop(fds);
    }
    let hello = Msg::decode(&b).map_err(proto_err)?;
    if hello.kind != KIND_HELLO {
        return Err(proto_err("expected a hello"));
    }
    let reject = |reason: u32| Msg {
        kind: KIND_REJECT,
        version: VERSION,
        features: reason,
        sizes: Sizes {
            ring_slots: 0,
            arena_bytes: 0,
        },
        region_len: 0,
        pid: 0,
    };
    if hello.version != VERSION {
        let _ = sys::send_with_fds(&stream, &reject(REJECT_VERSION).encode(), &[]).await;
        return Err(proto_err(format!(
            "client speaks version {}, we speak {VERSION}",
            hello.version
        )));
    }
    if hello.features & FEATURE_BYTE_STREAM != mode {
        let _ = sys::send_with_fds(&stream, &reject(REJECT_MODE).encode(), &[]).await;
        return Err(proto_err(
            "client asked for the other shared-memory mode (byte streams vs. RPC sessions)",
        ));
    }
    let sizes = Sizes {
        ring_slots: hello.sizes.ring_slots.min(max.ring_slots),
        arena_bytes: hello.sizes.arena_bytes.min(max.arena_bytes),
    };
    if !sizes.valid() {
        return Err(proto_err(format!("unusable sizes {sizes:?}")));
    }
    let Some(reservation) = budget.reserve(sizes.region_len()) else {
        let _ = sys::send_with_fds(&stream, &reject(REJECT_BUSY).encode(), &[]).await;
        return Err(proto_err(format!(
            "region budget of {} bytes used up ({} in use)",
            budget.max,
            budget.used()
        )));
    };
    let hold = match bytes {
        Some(b) => match BudgetHold::take(b, sizes) {
            Some(h) => Some(h),
            None => {
                let _ = sys::send_with_fds(&stream, &reject(REJECT_BUSY).encode(), &[]).await;
                return Err(proto_err(format!(
                    "the server's byte budget of {} bytes has no room for a session's {} bytes of regions ({} in use)",
                    b.limit(),
                    BudgetHold::cost(sizes),
                    b.used()
                )));
            }
        },
        None => None,
    };
    let (mine, memfd, wake_me) = own_region(sizes)?;
    let accept = Msg {
        kind: KIND_ACCEPT,
        version: VERSION,
        features: hello.features & (FEATURES | mode),
        sizes,
        region_len: sizes.region_len() as u64,
        pid: std::process::id(),
    };
    sys::send_with_fds(
        &stream,
        &accept.encode(),
        &[memfd.as_raw_fd(), wake_me.as_raw_fd()],
    )
    .await?;
    let mut b = [0u8; MSG_LEN];
    let fds = sys::recv_with_fds(&stream, &mut b, 2).await?;
    let region = Msg::decode(&b).map_err(proto_err)?;
    if region.kind != KIND_REGION || region.sizes != sizes {
        return Err(proto_err(format!("bad region message {region:?}")));
    }
    let (theirs, wake_peer) = peer_parts(fds, sizes)?;
    Ok((
        Established {
            stream,
            sizes,
            features: accept.features,
            peer_pid: None,
            mine,
            theirs,
            wake_me,
            wake_peer,
        },
        Held {
            _region: reservation,
            _bytes: hold,
        },
    ))
}

/// Whether `prefix` starts a shared-memory handshake (`None`: too short to tell).
pub fn detect(prefix: &[u8]) -> Option<bool> {
    let n = prefix.len().min(MAGIC.len());
    if prefix[..n] != MAGIC[..n] {
        return Some(false);
    }
    (n == MAGIC.len()).then_some(true)
}

/// A running session and its data plane.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) session: Arc<ShmSession>,
    /// Both sides speak the go-away (`FEATURE_GOAWAY`).
    pub(crate) goaway: bool,
}

impl Running {
    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.session.sink().0
    }
}

/// Starts the tasks of an established session.
pub(crate) fn start(
    e: Established,
    role: Role,
    limits: Limits,
    peer: Option<Peer>,
    stats: &Arc<ShmStats>,
    server: Option<Server>,
) -> Result<Running, Status> {
    let Established {
        stream,
        sizes,
        features,
        peer_pid,
        mine,
        theirs,
        wake_me,
        wake_peer,
    } = e;
    let (fb_tx, fb_rx) = mpsc::unbounded_channel::<Bytes>();
    let (link, consumer) = Link::new(
        mine,
        theirs,
        sizes.layout(),
        wake_peer,
        fb_tx,
        limits.max_frame_size,
        stats.clone(),
    )
    .map_err(|e| Status::internal(e.to_string()))?;
    // SAFETY: `wake_me` is an `OwnedFd` we created (an open eventfd); the `AsyncFd` takes
    // ownership of it, so it stays open and refers to the same file until the AsyncFd drops,
    // and `OwnedFd::as_raw_fd` always returns that same descriptor.
    let wake_me = unsafe { AsyncFd::register_with_interest(wake_me, Interest::READABLE) }
        .map_err(|e| Status::unavailable(format!("eventfd: {e}")))?;
    let session = Session::new(
        role,
        ShmSink(link.clone()),
        limits,
        peer,
        &stats.sessions,
        server,
    );
    let pidfd = match peer_pid {
        Some(pid) => sys::pidfd(pid),
        None => sys::peer_pidfd(&stream),
    };
    let (r, w) = stream.into_split();
    let (ftx, frx) = mpsc::channel(1);
    let reader = Reader {
        link: link.clone(),
        consumer,
        session: session.clone(),
        wake_me,
        fallback: frx,
    };
    tokio::spawn(reader.run());
    let h = tokio::spawn(socket_reader(session.clone(), link.clone(), r, ftx));
    link.add_task(h.abort_handle());
    let h = tokio::spawn(socket_writer(link.clone(), fb_rx, w));
    link.add_task(h.abort_handle());
    if let Some(pidfd) = pidfd {
        // SAFETY: `pidfd` is an open descriptor we own; the AsyncFd takes ownership, so it
        // stays open and the same for the AsyncFd's lifetime.
        if let Ok(fd) = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
            let l = Arc::downgrade(&link);
            let h = tokio::spawn(async move {
                if fd.readable().await.is_ok() {
                    // What it pushed before it exited is still read (see `Link::peer_gone`).
                    if let Some(l) = l.upgrade() {
                        l.peer_gone(Status::unavailable("shared memory peer process exited"));
                    }
                }
            });
            link.add_task(h.abort_handle());
        }
    }
    Ok(Running {
        session,
        goaway: features & FEATURE_GOAWAY != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_detect() {
        let m = Msg {
            kind: KIND_ACCEPT,
            version: VERSION,
            features: FEATURES,
            sizes: Sizes::default(),
            region_len: Sizes::default().region_len() as u64,
            pid: 4242,
        };
        assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        let mut bad = m.encode();
        bad[0] = b'X';
        assert!(Msg::decode(&bad).is_err());
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b"RPC"), None);
        assert_eq!(detect(&MAGIC), Some(true));
        assert_eq!(detect(b"\x00\x00\x00\x10"), Some(false));
        assert!(Sizes::default().valid());
        assert!(!Sizes {
            ring_slots: 3,
            arena_bytes: 1 << 20
        }
        .valid());
    }
}
