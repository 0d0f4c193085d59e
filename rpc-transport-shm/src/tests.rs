//! Sessions over real memfd regions and Unix sockets in one process: fallback, backpressure,
//! reclaiming, hostile peers writing garbage into their ring.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use rpc_core::codec::Codec;
use rpc_core::serve::{Listener, Running};
use rpc_core::transport::BoxFuture;
use rpc_core::{
    CallOptions, Client, Code, IncomingCall, MethodDesc, Mode, PayloadKind, Server, Service,
    ServiceDesc, Status,
};
use tokio::io::AsyncReadExt;

use crate::mem::Memory;
use crate::ring::{Producer, Slot};
use crate::setup::{self, Sizes};
use crate::{ShmClient, ShmProtocol};

/// Messages are their bytes: decoding hands the transport's `Bytes` through untouched.
pub(crate) struct Raw;

impl Codec<Bytes> for Raw {
    const NAME: &'static str = "raw";
    fn encode<B: BufMut + ?Sized>(msg: &Bytes, dst: &mut B) -> Result<(), Status> {
        dst.put_slice(msg);
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Bytes, Status> {
        Ok(src)
    }
    fn encoded_len(msg: &Bytes) -> Option<usize> {
        Some(msg.len())
    }
}

macro_rules! method {
    ($name:literal, $mode:ident) => {
        MethodDesc {
            package: "t",
            service: "Blob",
            full_service: "t.Blob",
            name: $name,
            path: concat!("/t.Blob/", $name),
            mode: Mode::$mode,
            payload: PayloadKind::Protobuf,
        }
    };
}

static METHODS: [MethodDesc; 2] = [method!("Echo", Unary), method!("Chat", Bidi)];
static ECHO: &MethodDesc = &METHODS[0];
static CHAT: &MethodDesc = &METHODS[1];
static DESC: ServiceDesc = ServiceDesc {
    package: "t",
    name: "Blob",
    full_name: "t.Blob",
    methods: &METHODS,
};

#[derive(Clone)]
struct Blob;

impl Service for Blob {
    fn descriptor(&self) -> &'static ServiceDesc {
        &DESC
    }
    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        match call.method_index() {
            0 => Box::pin(call.unary::<Raw, Bytes, Bytes, _, _>(|_, req| async move { Ok(req) })),
            _ => Box::pin(call.bidi::<Raw, Bytes, Bytes, _, _>(|_, mut s| async move {
                while let Some(m) = s.recv().await? {
                    s.send(m).await?;
                }
                Ok(())
            })),
        }
    }
}

fn path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "rpc-shm-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

async fn serve(protocol: ShmProtocol) -> (Running, PathBuf) {
    let p = path();
    let server = Server::builder().add_service(Blob).build();
    let running = Listener::new(server)
        .protocol(protocol)
        .bind(rpc_core::Address::Shm(p.clone()))
        .await
        .expect("bind")
        .start();
    (running, p)
}

const WAIT: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    within(async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(f(), "{what}");
}

fn blob(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn unary(c: &Client, m: Bytes) -> Result<Bytes, Status> {
    c.unary::<Raw, Bytes, Bytes>(ECHO, m, CallOptions::new())
        .await
        .map(|r| r.into_inner())
}

/// CPU time of the calling thread so far (`/proc/thread-self/stat`, in clock ticks of 10 ms).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("thread stat");
    // Fields after the command name (in parentheses): utime is field 14, stime field 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().expect("ticks"))
        .collect();
    Duration::from_millis((f[0] + f[1]) * 10)
}

/// An idle session burns no CPU: after the last call both readers spin at most `MAX_SPIN`,
/// the returned blocks are announced within `ANNOUNCE_DELAY`, and then everything parks on
/// the eventfds. One thread runs the server, the client and both readers (a current-thread
/// runtime), so its CPU time is the session's whole cost.
#[tokio::test]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap, eventfds and Unix sockets are system calls miri does not run"
)]
async fn an_idle_session_parks_and_burns_no_cpu() {
    let protocol = ShmProtocol::default();
    let server_stats = protocol.stats().clone();
    let (_running, p) = serve(protocol).await;
    let shm = ShmClient::builder(rpc_core::Address::shm(&p))
        .pool_size(1)
        .build();
    let stats = shm.stats().clone();
    let c = Client::new(shm.clone());
    // Busy first, so the spins grow to their longest: inline and arena messages both ways.
    for i in 0..2000u32 {
        let m = blob(if i % 2 == 0 { 64 } else { 70_000 }, i as u8);
        assert_eq!(within(unary(&c, m.clone())).await.unwrap(), m);
    }
    let before = thread_cpu();
    let window = Duration::from_millis(1000);
    // The measurement window itself (not a synchronisation): nothing runs on this thread
    // but the session's tasks.
    tokio::time::sleep(window).await;
    let used = thread_cpu() - before;
    assert!(
        used <= Duration::from_millis(100),
        "an idle session used {used:?} of CPU in {window:?}"
    );
    // Idle means returned too: both arenas are empty again.
    assert_eq!(server_stats.arena_bytes_in_use(), 0);
    assert_eq!(stats.arena_bytes_in_use(), 0);
    // And it still answers.
    let m = blob(100, 9);
    assert_eq!(within(unary(&c, m.clone())).await.unwrap(), m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap and Unix sockets: system calls miri does not run"
)]
async fn frames_larger_than_the_arena_go_over_the_socket_for_that_frame_only() {
    let protocol = ShmProtocol::default();
    let server_stats = protocol.stats().clone();
    let (_running, p) = serve(protocol).await;
    let shm = ShmClient::builder(rpc_core::Address::shm(&p))
        .arena_bytes(64 * 1024)
        .pool_size(1)
        .build();
    let stats = shm.stats().clone();
    let c = Client::new(shm);
    let big = blob(1 << 20, 1);
    assert_eq!(within(unary(&c, big.clone())).await.unwrap(), big);
    assert_eq!(stats.fallback_messages(), 1, "the request");
    assert_eq!(server_stats.fallback_messages(), 1, "the reply");
    // The session keeps carrying frames in shared memory (no breaker).
    let small = blob(20_000, 2);
    for _ in 0..10 {
        assert_eq!(within(unary(&c, small.clone())).await.unwrap(), small);
    }
    assert_eq!(stats.fallback_messages(), 1);
    assert_eq!(stats.live_sessions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap and Unix sockets: system calls miri does not run"
)]
async fn a_full_ring_and_arena_make_senders_wait_and_nothing_is_lost() {
    let (_running, p) = serve(ShmProtocol::default()).await;
    let shm = ShmClient::builder(rpc_core::Address::shm(&p))
        .sizes(Sizes {
            ring_slots: 8,
            arena_bytes: 64 * 1024,
        })
        .pool_size(1)
        .build();
    let stats = shm.stats().clone();
    let c = Client::new(shm.clone());
    let mut tasks = Vec::new();
    for s in 0..32u8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut call = c
                .bidi::<Raw, Bytes, Bytes>(CHAT, CallOptions::new())
                .await?;
            for i in 0..20u8 {
                let m = blob(5000 + usize::from(i) * 100, s ^ i);
                call.send(m.clone()).await?;
                let got = call.recv().await?.ok_or_else(|| Status::internal("eof"))?;
                if got != m {
                    return Err(Status::internal("corrupted"));
                }
            }
            call.close_send()?;
            assert_eq!(call.recv().await?, None);
            Ok::<_, Status>(())
        }));
    }
    for t in tasks {
        within(t).await.unwrap().unwrap();
    }
    assert!(
        stats.sender_waits() > 0,
        "the small ring and arena made senders wait"
    );
    eventually("every block returned", || shm.arena_usage() == vec![0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap and Unix sockets: system calls miri does not run"
)]
async fn arena_usage_returns_to_zero_and_counters_move() {
    let protocol = ShmProtocol::default();
    let server_stats = protocol.stats().clone();
    let (_running, p) = serve(protocol).await;
    let shm = ShmClient::builder(rpc_core::Address::shm(&p))
        .pool_size(1)
        .build();
    let stats = shm.stats().clone();
    let c = Client::new(shm.clone());
    let m = blob(100_000, 3);
    let mut call = c
        .bidi::<Raw, Bytes, Bytes>(CHAT, CallOptions::new())
        .await
        .unwrap();
    for _ in 0..5 {
        call.send(m.clone()).await.unwrap();
    }
    // Five replies sit unread in our receive queue: the server's arena holds them.
    eventually("server arena in use", || {
        server_stats.arena_bytes_in_use() >= 5 * 100_000
    })
    .await;
    assert_eq!(stats.live_streams(), 1);
    for _ in 0..5 {
        assert_eq!(call.recv().await.unwrap().unwrap(), m);
    }
    call.close_send().unwrap();
    assert_eq!(within(call.recv()).await.unwrap(), None);
    eventually("server blocks returned", || {
        server_stats.arena_bytes_in_use() == 0
    })
    .await;
    eventually("client blocks returned", || stats.arena_bytes_in_use() == 0).await;
    assert!(stats.wakeups_sent() + stats.wakeups_received() > 0);
    assert_eq!(server_stats.live_sessions(), 1);
    drop(call);
    eventually("streams closed", || {
        stats.live_streams() == 0 && server_stats.live_streams() == 0
    })
    .await;
    drop(c);
    drop(shm);
    eventually("server session gone with the client", || {
        server_stats.live_sessions() == 0
    })
    .await;
}

/// A unary call travels as one descriptor each way (the request's Header, message and
/// half-close packed; the reply's Header, message and Trailer packed), at every size that
/// packs; a larger message still crosses (its Header and half-close around it); a bidi stream
/// keeps ttstream's frames, one descriptor each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_is_one_descriptor_each_way_and_streams_keep_their_frames() {
    let protocol = ShmProtocol::default();
    let server_stats = protocol.stats().clone();
    let (_running, p) = serve(protocol).await;
    let shm = ShmClient::builder(rpc_core::Address::shm(&p))
        .pool_size(1)
        .build();
    let stats = shm.stats().clone();
    let c = Client::new(shm);
    let sent = || {
        (
            stats.frame_descriptors_sent(),
            server_stats.frame_descriptors_sent(),
        )
    };
    assert_eq!(within(unary(&c, blob(10, 1))).await.unwrap(), blob(10, 1));
    for (size, seed) in [(0, 2), (10, 3), (300, 4), (4000, 5)] {
        let (c0, s0) = sent();
        let m = blob(size, seed);
        assert_eq!(within(unary(&c, m.clone())).await.unwrap(), m);
        let (c1, s1) = sent();
        assert_eq!((c1 - c0, s1 - s0), (1, 1), "descriptors each way, {size} B");
    }
    let m = blob(200_000, 6);
    assert_eq!(within(unary(&c, m.clone())).await.unwrap(), m);

    let (c0, s0) = sent();
    let mut call = within(c.bidi::<Raw, Bytes, Bytes>(CHAT, CallOptions::new()))
        .await
        .unwrap();
    for i in 0..3 {
        call.send(blob(50, i)).await.unwrap();
        assert_eq!(within(call.recv()).await.unwrap(), Some(blob(50, i)));
    }
    call.close_send().unwrap();
    assert_eq!(within(call.recv()).await.unwrap(), None);
    let (c1, s1) = sent();
    // Client: Header, 3 messages, half-close. Server: Header, 3 messages, Trailer.
    assert_eq!((c1 - c0, s1 - s0), (5, 5));
    let _ = std::fs::remove_file(&p);
}

/// What a hostile peer writes into its own ring.
#[derive(Clone, Copy, Debug)]
enum Garbage {
    /// A descriptor of an unknown kind.
    Kind,
    /// A frame outside the arena.
    Offset,
    /// Returns a block the server never lent.
    Release,
    /// A head index far beyond the capacity.
    Index,
    /// An inline frame that is not a TTHeader frame.
    Frame,
}

async fn hostile_peer(p: &PathBuf, g: Garbage) -> tokio::net::UnixStream {
    let stream = tokio::net::UnixStream::connect(p).await.unwrap();
    let est = setup::client(stream, Sizes::default()).await.unwrap();
    let (stream, mine, wake_peer, slots) = est.into_raw();
    let mem: Arc<dyn Memory> = mine;
    let mut producer = Producer::new(mem.clone(), 0, slots).unwrap();
    match g {
        Garbage::Kind => {
            producer.push(&Slot([0xee; crate::ring::SLOT])).unwrap();
        }
        Garbage::Offset => {
            producer.push(&Slot::arena(u32::MAX - 10, 100)).unwrap();
        }
        Garbage::Release => {
            producer.push(&Slot::release(&[4096]).0).unwrap();
        }
        Garbage::Frame => {
            producer
                .push(&Slot::inline(b"garbage, not a frame").unwrap())
                .unwrap();
        }
        Garbage::Index => {
            // SAFETY: test: the head index lives at offset 64 of our own ring, 8-aligned.
            unsafe {
                (*(mem.base().as_ptr().add(64) as *const AtomicU64))
                    .store(1 << 40, Ordering::Release)
            };
        }
    }
    crate::sys::signal(&wake_peer);
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap and Unix sockets: system calls miri does not run"
)]
async fn a_peer_writing_garbage_loses_its_session_and_others_are_served() {
    let protocol = ShmProtocol::default();
    let server_stats = protocol.stats().clone();
    let (_running, p) = serve(protocol).await;
    let good = Client::new(
        ShmClient::builder(rpc_core::Address::shm(&p))
            .pool_size(1)
            .build(),
    );
    let m = blob(3000, 9);
    assert_eq!(within(unary(&good, m.clone())).await.unwrap(), m);
    for g in [
        Garbage::Kind,
        Garbage::Offset,
        Garbage::Release,
        Garbage::Index,
        Garbage::Frame,
    ] {
        let mut s = hostile_peer(&p, g).await;
        // The server closes that session: the socket reaches EOF.
        let mut b = [0u8; 16];
        let n = within(s.read(&mut b)).await;
        assert!(matches!(n, Ok(0) | Err(_)), "{g:?}: {n:?}");
        assert_eq!(within(unary(&good, m.clone())).await.unwrap(), m, "{g:?}");
    }
    eventually("only the good client's session is left", || {
        server_stats.live_sessions() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap and Unix sockets: system calls miri does not run"
)]
async fn a_dead_peer_ends_every_stream_with_unavailable_promptly_and_reconnects() {
    let protocol = ShmProtocol::default();
    let (running, p) = serve(protocol).await;
    let shm = ShmClient::builder(rpc_core::Address::shm(&p))
        .pool_size(1)
        .build();
    let c = Client::new(shm);
    let mut calls = Vec::new();
    for _ in 0..10 {
        let mut call = c
            .bidi::<Raw, Bytes, Bytes>(CHAT, CallOptions::new())
            .await
            .unwrap();
        call.send(blob(10, 1)).await.unwrap();
        assert_eq!(call.recv().await.unwrap().unwrap(), blob(10, 1));
        calls.push(call);
    }
    // The server goes away (its sessions close their sockets as a dead process's would).
    let t0 = std::time::Instant::now();
    running.shutdown(Duration::from_millis(0)).await;
    for mut call in calls {
        let e = within(call.recv()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e}");
    }
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    // A new server on the same path: the client reconnects at once.
    let server = Server::builder().add_service(Blob).build();
    let _running = Listener::new(server)
        .protocol(ShmProtocol::default())
        .bind(rpc_core::Address::Shm(p.clone()))
        .await
        .unwrap()
        .start();
    let m = blob(50, 4);
    let t0 = std::time::Instant::now();
    loop {
        match unary(&c, m.clone()).await {
            Ok(got) => {
                assert_eq!(got, m);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e}");
                assert!(t0.elapsed() < WAIT);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap and Unix sockets: system calls miri does not run"
)]
async fn the_server_refuses_sessions_beyond_its_region_budget() {
    let small = Sizes {
        ring_slots: 64,
        arena_bytes: 64 * 1024,
    };
    let one = small.ring_slots * crate::ring::SLOT + crate::ring::HEADER;
    let one = one.div_ceil(crate::mem::PAGE) * crate::mem::PAGE + small.arena_bytes;
    let protocol = ShmProtocol::default().max_region_bytes(one);
    let (_running, p) = serve(protocol.clone()).await;
    let first = Client::new(
        ShmClient::builder(rpc_core::Address::shm(&p))
            .sizes(small)
            .pool_size(1)
            .build(),
    );
    let m = blob(100, 1);
    assert_eq!(within(unary(&first, m.clone())).await.unwrap(), m);
    assert_eq!(protocol.region_bytes(), one);
    let second = Client::new(
        ShmClient::builder(rpc_core::Address::shm(&p))
            .sizes(small)
            .pool_size(1)
            .build(),
    );
    let e = within(unary(&second, m.clone())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("no shared memory left"), "{e}");
    drop(first);
    eventually("budget returned", || protocol.region_bytes() == 0).await;
    let t0 = std::time::Instant::now();
    loop {
        match unary(&second, m.clone()).await {
            Ok(got) => break assert_eq!(got, m),
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e}");
                assert!(t0.elapsed() < WAIT);
            }
        }
    }
}

/// A hand-driven server peer for `client`: accepts one session at `p` and returns the
/// producer of its ring (the client reads it) and its socket.
async fn fake_server(listener: &tokio::net::UnixListener) -> (Producer, tokio::net::UnixStream) {
    let (stream, _) = within(listener.accept()).await.unwrap();
    let budget = setup::RegionBudget::new(setup::DEFAULT_MAX_REGION_BYTES);
    let (est, _held) = setup::server(stream, &[], Sizes::default(), &budget, None)
        .await
        .unwrap();
    let (stream, mine, _wake_peer, slots) = est.into_raw();
    let mem: Arc<dyn Memory> = mine;
    (Producer::new(mem, 0, slots).unwrap(), stream)
}

/// One whole ttstream frame as the peer's session would write it.
fn frame_bytes(f: rpc_transport_ttheader::proto::StreamFrame) -> Slot {
    let mut b = bytes::BytesMut::new();
    rpc_transport_ttheader::proto::Packet::from(f)
        .encode(&mut b)
        .unwrap();
    Slot::inline(&b).expect("a small frame fits a descriptor")
}

/// A peer that puts its last frames in the ring and closes its socket at once (a server
/// ending its graceful drain, a process exiting right after its answer): the socket's EOF
/// must not overtake those frames. The client's reader is parked and no wakeup is sent for
/// them, so only the EOF wakes it: it reads what the ring holds before it ends the session,
/// and the stream ends with the server's trailer, not `UNAVAILABLE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "memfd, mmap and Unix sockets: system calls miri does not run"
)]
async fn frames_in_the_ring_when_the_peer_closes_are_delivered_before_the_loss() {
    use rpc_transport_ttheader::proto::{StreamFrame, StreamProtocol};
    let p = path();
    let listener = tokio::net::UnixListener::bind(&p).unwrap();
    let c = Client::new(
        ShmClient::builder(rpc_core::Address::shm(&p))
            .pool_size(1)
            .build(),
    );
    let (call, peer) = tokio::join!(
        async { c.bidi::<Raw, Bytes, Bytes>(CHAT, CallOptions::new()).await },
        fake_server(&listener)
    );
    let mut call = call.unwrap();
    let (mut producer, socket) = peer;
    // The client's reader finds the ring empty and parks (its flag is in our ring); taking
    // the flag means no push of ours wakes it.
    let mut parked = false;
    eventually("the client's reader parks", || {
        parked = parked || producer.take_parked();
        parked
    })
    .await;
    let proto = StreamProtocol::Protobuf;
    let id = 1;
    for f in [
        StreamFrame::server_header(id, "Chat", proto, []),
        StreamFrame::data(id, "Chat", proto, blob(40, 3)),
        StreamFrame::trailer(id, "Chat", proto, [], None, None).unwrap(),
    ] {
        assert!(producer.push(&frame_bytes(f)).unwrap());
    }
    drop(socket);
    assert_eq!(within(call.recv()).await.unwrap(), Some(blob(40, 3)));
    assert_eq!(within(call.recv()).await.unwrap(), None);
    let _ = std::fs::remove_file(&p);
}

// Hot restart: the go-away and the takeover of the listening socket.
mod hot_restart;
