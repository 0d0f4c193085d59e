//! The gRPC transport under memory attacks from many connections: `echo-server` runs as a
//! child with a 32 MiB budget (`--max-buffered-bytes`), each test attacks it over real
//! sockets, samples its RSS and checks it against the bound `rpc-transport-grpc` documents
//! (RSS over baseline ≤ budget + F × connections), while a well-behaved gRPC client on its own
//! connection keeps being answered (every call within a deadline; its p99 is printed).
//!
//! The bound is checked on the RSS while the attack holds its connections, until what the
//! server charged for them is stable (`settle_hold`); what the server does when they all
//! close at once is sampled and printed too, not asserted (see `run_attack`).
//!
//! Run with `--nocapture` to see one `MEMBOUND` line per attack, and with `MEMBOUND_SERIES=1`
//! for the RSS and the server's charge every 50 ms.

mod memory_bound;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use examples::proto::{Request, TestServiceClient};
use memory_bound::*;
use prost::Message;
use rpc_core::{Address, Client};
use rpc_transport_grpc::GrpcClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the server reports charged to its budget (`--report-budget-ms`), in bytes, and its
/// RSS sampled every 10 ms with the charge at the time; `release` marks when the attack let
/// its connections go.
#[derive(Default)]
struct Charged {
    now: AtomicU64,
    max: AtomicU64,
    /// (RSS, charged) every 10 ms.
    series: std::sync::Mutex<Vec<(u64, u64)>>,
    /// How many samples were taken before the attack released its connections.
    release: std::sync::Mutex<Option<usize>>,
    done: AtomicBool,
}

impl Charged {
    /// Follows the server's `budget <bytes>` lines and samples its RSS.
    fn watch(pid: u32, lines: std::sync::mpsc::Receiver<String>) -> Arc<Charged> {
        let charged = Arc::new(Charged::default());
        let c = charged.clone();
        std::thread::spawn(move || {
            for line in lines {
                if let Some(n) = line.strip_prefix("budget ").and_then(|n| n.parse().ok()) {
                    c.now.store(n, Ordering::Release);
                    c.max.fetch_max(n, Ordering::AcqRel);
                }
            }
        });
        let c = charged.clone();
        std::thread::spawn(move || {
            while !c.done.load(Ordering::Acquire) {
                let Some(rss) = examples::measure::rss(pid) else {
                    return;
                };
                let now = c.now();
                c.series
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((rss, now));
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        charged
    }

    fn now(&self) -> u64 {
        self.now.load(Ordering::Acquire)
    }

    /// Waits until the charge is stable (it moved by no more than 1 MiB over 500 ms, at most
    /// 10 s: the attack holds what the server let it hold), then marks the release.
    async fn settle_then_release(&self) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = self.now();
        while std::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.now();
            if now.abs_diff(last) <= MIB {
                break;
            }
            last = now;
        }
        let n = self.series.lock().unwrap_or_else(|e| e.into_inner()).len();
        *self.release.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
    }

    /// The highest RSS sampled while the attack held its connections (all samples if it
    /// never marked its release).
    fn held_max(&self) -> u64 {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let n = self
            .release
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(series.len());
        series[..n.min(series.len())]
            .iter()
            .map(|(r, _)| *r)
            .max()
            .unwrap_or(0)
    }

    /// The RSS over `base` where the charge was highest, and the charge where the RSS was,
    /// while held and after.
    fn summary(&self, base: u64) -> String {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let n = self
            .release
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(series.len())
            .min(series.len());
        let show = |p: Option<&(u64, u64)>| match p {
            Some((r, c)) => format!(
                "RSS over baseline {} KiB, charged {} KiB",
                r.saturating_sub(base) / KIB,
                c / KIB
            ),
            None => "no samples".to_owned(),
        };
        if std::env::var_os("MEMBOUND_SERIES").is_some() {
            let pts: Vec<String> = series
                .iter()
                .step_by(5)
                .map(|(r, c)| format!("{}/{}", r.saturating_sub(base) / KIB, c / KIB))
                .collect();
            eprintln!(
                "series every 50 ms (RSS over baseline/charged, KiB; released after {}): {}",
                n / 5,
                pts.join(" ")
            );
        }
        let (held, after) = series.split_at(n);
        format!(
            "while held: highest charge {}; highest RSS {}; after the release: highest RSS {}",
            show(held.iter().max_by_key(|(_, c)| *c)),
            show(held.iter().max_by_key(|(r, _)| *r)),
            show(after.iter().max_by_key(|(r, _)| *r)),
        )
    }
}

/// The attack running now (tests run one at a time, see `SERIAL`), for [`settle_hold`].
static ATTACK: std::sync::Mutex<Option<Arc<Charged>>> = std::sync::Mutex::new(None);

/// How often the server reports its charge.
const REPORT_BUDGET_MS: &str = "10";

fn start_server() -> (ServerChild, SocketAddr, Arc<Charged>) {
    let budget = BUDGET.to_string();
    let (child, urls, lines) = support::spawn_echo_server_with_env(
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--max-buffered-bytes",
            &budget,
            "--report-budget-ms",
            REPORT_BUDGET_MS,
        ],
        1,
        SERVER_ENV,
    );
    let addr = urls[0]
        .strip_prefix("tcp://")
        .and_then(|a| a.parse().ok())
        .expect("a tcp:// socket address");
    let pid = child.id();
    (ServerChild { child }, addr, Charged::watch(pid, lines))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One attack: the server, its baseline after a warm-up, the sampler and the well-behaved
/// client around `attack`, then the check against the bound for `connections`.
fn run_attack<F, Fut>(name: &str, connections: u64, attack: F)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (server, addr, charged) = start_server();
    let rt = runtime();
    let good = TestServiceClient::new(Client::new(GrpcClient::new(Address::from(addr))));
    // Warm-up: the good client's connection and the server's threads exist before the
    // baseline is taken.
    rt.block_on(async {
        for i in 0..20 {
            good.ping_pong(Request {
                message: format!("warm {i}"),
                ..Default::default()
            })
            .await
            .expect("warm-up call");
        }
    });
    let base = server.rss();
    let sampler = {
        let charged = charged.clone();
        RssSampler::start(server.pid(), move || {
            format!(", charged {} KiB", charged.now() / KIB)
        })
    };
    *ATTACK.lock().unwrap_or_else(|e| e.into_inner()) = Some(charged.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let log = {
        let good = good.clone();
        well_behaved(rt.handle(), stop.clone(), move |i| {
            let good = good.clone();
            async move {
                let m = format!("good {i}");
                let r = good
                    .ping_pong(Request {
                        message: m.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                if r.message == m {
                    Ok(())
                } else {
                    Err(format!("echoed {:?}", r.message))
                }
            }
        })
    };
    rt.block_on(async {
        attack(addr).await;
        settle(server.pid()).await;
        eprintln!(
            "server after the attack: {}, charged {} KiB (highest {} KiB)",
            rss_parts(server.pid()),
            charged.now() / KIB,
            charged.max.load(Ordering::Acquire) / KIB
        );
    });
    stop.store(true, Ordering::Release);
    let log = rt.block_on(log).expect("well-behaved client task");
    let max = sampler.finish();
    charged.done.store(true, Ordering::Release);
    *ATTACK.lock().unwrap_or_else(|e| e.into_inner()) = None;
    eprintln!("{name}: {}", charged.summary(base));
    eprintln!(
        "{name}: RSS over baseline at its highest, the release of the attack's connections \
         included: {} KiB",
        max.saturating_sub(base) / KIB
    );
    // The bound is for what the attack holds: RSS while its connections are held (see
    // `settle_hold`). When they all close at once, the handlers of the others refill the
    // freed budget while glibc still holds the freed memory in its heaps (the RSS of that
    // churn is printed above, not asserted).
    let held = charged.held_max().max(base);
    // The well-behaved connection counts as one of the connections.
    let (over, bound) = report(name, connections + 1, base, held, &log);
    assert!(
        log.failures.is_empty(),
        "{name}: the well-behaved client failed: {:?}",
        &log.failures[..log.failures.len().min(5)]
    );
    assert!(
        log.calls.len() >= 5,
        "{name}: the well-behaved client made only {} calls",
        log.calls.len()
    );
    assert!(
        over <= bound,
        "{name}: RSS over baseline {} KiB exceeds the bound {} KiB",
        over / KIB,
        bound / KIB
    );
    drop(server);
}

/// A gRPC message: the 5-byte prefix and `body`.
fn grpc_message(body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u8(0);
    b.put_u32(body.len() as u32);
    b.put_slice(body);
    b.freeze()
}

fn echo_request(message: String, repeat: Option<i32>, sleep_ms: Option<i64>) -> Vec<u8> {
    Request {
        message,
        repeat,
        sleep_ms,
        ..Default::default()
    }
    .encode_to_vec()
}

/// An h2 client connection (driven by its own task) to `addr`.
async fn h2_connect(addr: SocketAddr) -> Option<h2::client::SendRequest<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (send, conn) = h2::client::handshake(tcp).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.ok()
}

fn grpc_request(path: &str) -> http::Request<()> {
    http::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// Sends `total` bytes of `filler` on `stream` in 16 KiB pieces, each only once h2 has the
/// flow-control window for it; stops early when the server grants no window for 1 s (it
/// stopped reading) or resets the stream.
async fn push_within_window(stream: &mut h2::SendStream<Bytes>, total: usize) -> usize {
    const PIECE: usize = 16 * 1024;
    let piece = Bytes::from(vec![0x5a; PIECE]);
    let mut sent = 0;
    while sent < total {
        let want = PIECE.min(total - sent);
        stream.reserve_capacity(want);
        let cap = loop {
            if stream.capacity() > 0 {
                break stream.capacity();
            }
            match tokio::time::timeout(
                Duration::from_secs(1),
                std::future::poll_fn(|cx| stream.poll_capacity(cx)),
            )
            .await
            {
                Ok(Some(Ok(_))) => continue,
                _ => return sent,
            }
        };
        let n = cap.min(want);
        if stream.send_data(piece.slice(..n), false).is_err() {
            return sent;
        }
        sent += n;
    }
    sent
}

/// Many connections, each with streams whose handler reads the first message and then sleeps
/// (the echo service's `sleep_ms`), so nothing else the client sends is read: every stream
/// pushes up to a full stream window of DATA the server must hold or refuse.
#[test]
fn unread_request_streams_on_many_connections() {
    const CONNECTIONS: u64 = 40;
    const STREAMS: usize = 8;
    run_attack("unread request streams", CONNECTIONS, |addr| async move {
        let mut tasks = Vec::new();
        let mut keep = Vec::new();
        for _ in 0..CONNECTIONS {
            let Some(send) = h2_connect(addr).await else {
                continue;
            };
            keep.push(send.clone());
            for _ in 0..STREAMS {
                let mut send = send.clone();
                tasks.push(tokio::spawn(async move {
                    let Ok(s) = send.ready().await else {
                        return (0, None);
                    };
                    send = s;
                    let Ok((resp, mut stream)) =
                        send.send_request(grpc_request("/echo.TestService/EchoClient"), false)
                    else {
                        return (0, None);
                    };
                    let first = grpc_message(&echo_request("x".into(), None, Some(60_000)));
                    let _ = stream.send_data(first, false);
                    let sent = push_within_window(&mut stream, 2 << 20).await;
                    (sent, Some((resp, stream)))
                }));
            }
        }
        let mut total = 0;
        let mut streams = Vec::new();
        for t in tasks {
            if let Ok((sent, s)) = t.await {
                total += sent;
                streams.extend(s);
            }
        }
        eprintln!("unread request streams: {} KiB pushed", total / 1024);
        // The streams (and their connections) stay open while the server is measured.
        settle_hold(streams, keep).await;
    });
}

/// Keeps what an attack opened alive for 500 ms and until what the server charged for it
/// is stable, then lets it go (the end of what the bound is checked over).
async fn settle_hold<T, U>(streams: Vec<T>, conns: Vec<U>) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attack = ATTACK.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(charged) = attack {
        charged.settle_then_release().await;
    }
    drop((streams, conns));
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK block for a gRPC request, literals only (no dynamic table).
fn request_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
    let lit_indexed = |b: &mut Vec<u8>, idx: u8, v: &str| {
        b.push(idx);
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    };
    lit_indexed(&mut b, 0x04, path); // :path
    lit_indexed(&mut b, 0x01, "localhost"); // :authority
    for (k, v) in [("content-type", "application/grpc"), ("te", "trailers")] {
        b.push(0x00);
        b.push(k.len() as u8);
        b.extend_from_slice(k.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// A raw connection: the preface, our SETTINGS (`settings`: id/value pairs) and the ACK of
/// the server's, with a receive buffer of 4 KiB (the kernel rounds it up), so a client that
/// never reads stops the server's writes almost at once.
async fn raw_connect(addr: SocketAddr, settings: &[(u16, u32)]) -> Option<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    let _ = sock.set_recv_buffer_size(4096);
    let mut s = sock.connect(addr).await.ok()?;
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut p = Vec::new();
    for (id, v) in settings {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(0x4, 0, 0, &p, &mut hello);
    frame(0x4, 0x1, 0, &[], &mut hello);
    s.write_all(&hello).await.ok()?;
    Some(s)
}

/// Many connections ask for endless server streams while advertising huge flow-control
/// windows and never reading the socket: everything the handlers write stays in the server
/// unless it is charged and stopped.
#[test]
fn unread_replies_on_many_connections() {
    const CONNECTIONS: u64 = 200;
    const STREAMS: u32 = 4;
    run_attack("unread replies", CONNECTIONS, |addr| async move {
        let mut tasks = Vec::new();
        for _ in 0..CONNECTIONS {
            tasks.push(tokio::spawn(async move {
                // SETTINGS_INITIAL_WINDOW_SIZE: the largest window; the connection window too.
                let mut s = raw_connect(addr, &[(0x4, 0x7fff_ffff)]).await?;
                let mut wire = Vec::new();
                frame(
                    0x8,
                    0,
                    0,
                    &(0x7fff_ffffu32 - 65_535).to_be_bytes(),
                    &mut wire,
                );
                let body = grpc_message(&echo_request("r".repeat(1024), Some(1_000_000), None));
                let block = request_block("/echo.TestService/EchoServer");
                for i in 0..STREAMS {
                    let id = 2 * i + 1;
                    frame(0x1, 0x4, id, &block, &mut wire);
                    frame(0x0, 0x1, id, &body, &mut wire);
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&wire)).await;
                Some(s)
            }));
        }
        let mut conns = Vec::new();
        for t in tasks {
            conns.extend(t.await.ok().flatten());
        }
        settle_hold(conns, Vec::<()>::new()).await;
    });
}

/// Many connections each send most of a 4 MiB message (the default receive limit) and
/// stall: partial messages the server must hold or cut.
#[test]
fn partial_max_size_messages_on_many_connections() {
    const CONNECTIONS: u64 = 100;
    run_attack(
        "partial max-size messages",
        CONNECTIONS,
        |addr| async move {
            let mut tasks = Vec::new();
            for _ in 0..CONNECTIONS {
                tasks.push(tokio::spawn(async move {
                    let mut send = h2_connect(addr).await?;
                    let (resp, mut stream) = send
                        .send_request(grpc_request("/echo.TestService/PingPong"), false)
                        .ok()?;
                    let mut prefix = BytesMut::new();
                    prefix.put_u8(0);
                    prefix.put_u32((4 << 20) - 16);
                    let _ = stream.send_data(prefix.freeze(), false);
                    let sent = push_within_window(&mut stream, (4 << 20) - 64 * 1024).await;
                    Some((sent, resp, stream, send))
                }));
            }
            let mut held = Vec::new();
            let mut total = 0;
            for t in tasks {
                if let Ok(Some((sent, resp, stream, send))) = t.await {
                    total += sent;
                    held.push((resp, stream, send));
                }
            }
            eprintln!("partial messages: {} KiB pushed", total / 1024);
            settle_hold(held, Vec::<()>::new()).await;
        },
    );
}

/// Many connections each open as many streams as the server allows (and more) and send
/// nothing on them: per-stream state the server must charge or refuse.
#[test]
fn idle_streams_on_many_connections() {
    const CONNECTIONS: u64 = 16;
    run_attack("idle streams", CONNECTIONS, |addr| async move {
        let mut conns = Vec::new();
        let block = request_block("/echo.TestService/Echo");
        for _ in 0..CONNECTIONS {
            let Some(s) = raw_connect(addr, &[]).await else {
                continue;
            };
            let (mut r, mut w) = s.into_split();
            // Drained, so the server's refusals and SETTINGS never block it.
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
            });
            let mut wire = Vec::new();
            for i in 0..2_000u32 {
                frame(0x1, 0x4, 2 * i + 1, &block, &mut wire);
            }
            let _ = w.write_all(&wire).await;
            conns.push(w);
        }
        settle_hold(conns, Vec::<()>::new()).await;
    });
}

/// How a flood connection ended, as the client saw it.
#[derive(Debug, Default, Clone, Copy)]
struct FloodEnd {
    /// The server closed the connection (EOF or reset) within [`FLOOD_CLOSE_DEADLINE`].
    closed: bool,
    /// It sent `GOAWAY(ENHANCE_YOUR_CALM)` first.
    calm: bool,
}

/// How long a flood connection may stay open after its flood (not a speed assertion: a
/// server that never closes it must not hang the test). The server gives a calmed
/// connection `CALM_CLOSE_TIMEOUT` (2 s) to take its GOAWAY; the rest is slack for a loaded
/// machine.
const FLOOD_CLOSE_DEADLINE: Duration = Duration::from_secs(20);

/// `GOAWAY`'s error code `ENHANCE_YOUR_CALM` (RFC 9113 §7).
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Reads what the server sends until it closes the connection, looking for a GOAWAY.
async fn read_until_closed(s: &mut tokio::net::TcpStream) -> FloodEnd {
    let mut end = FloodEnd::default();
    let mut wire = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => wire.extend_from_slice(&buf[..n]),
            }
        }
    };
    end.closed = tokio::time::timeout(FLOOD_CLOSE_DEADLINE, read_all)
        .await
        .is_ok();
    let mut rest = &wire[..];
    while rest.len() >= 9 {
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        if rest.len() < 9 + len {
            break;
        }
        let payload = &rest[9..9 + len];
        if rest[3] == 0x7 && len >= 8 {
            let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
            end.calm |= code == ENHANCE_YOUR_CALM;
        }
        rest = &rest[9 + len..];
    }
    end
}

/// Many connections that never read (while they send) flood the server with frames it must
/// answer or keep: PINGs, SETTINGS, and header blocks split over CONTINUATION frames. Each
/// is closed with `GOAWAY(ENHANCE_YOUR_CALM)` (the PINGs and SETTINGS by the server's flood
/// limit, the CONTINUATIONs by h2's), read once the flood is sent.
#[test]
fn control_and_continuation_floods_on_many_connections() {
    const CONNECTIONS: u64 = 60;
    let ends = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = ends.clone();
    run_attack(
        "PING/SETTINGS/CONTINUATION floods",
        CONNECTIONS,
        move |addr| async move {
            let mut tasks = Vec::new();
            for c in 0..CONNECTIONS {
                tasks.push(tokio::spawn(async move {
                    let mut s = raw_connect(addr, &[]).await?;
                    let mut wire = Vec::new();
                    match c % 3 {
                        0 => {
                            for i in 0..50_000u64 {
                                frame(0x6, 0, 0, &i.to_be_bytes(), &mut wire);
                            }
                        }
                        1 => {
                            for _ in 0..50_000 {
                                frame(0x4, 0, 0, &[0, 0x3, 0, 0, 0, 100], &mut wire);
                            }
                        }
                        _ => {
                            // A request whose header block never ends: ~15 KiB of header list in
                            // 150-byte CONTINUATION frames.
                            let mut block = request_block("/echo.TestService/PingPong");
                            let v = "v".repeat(100);
                            for i in 0..140 {
                                let k = format!("x-cont-{i:03}");
                                block.push(0x00);
                                block.push(k.len() as u8);
                                block.extend_from_slice(k.as_bytes());
                                block.push(v.len() as u8);
                                block.extend_from_slice(v.as_bytes());
                            }
                            let mut pieces = block.chunks(150);
                            frame(0x1, 0, 1, pieces.next().unwrap_or(&[]), &mut wire);
                            for p in pieces {
                                frame(0x9, 0, 1, p, &mut wire);
                            }
                        }
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(3), s.write_all(&wire)).await;
                    Some(read_until_closed(&mut s).await)
                }));
            }
            for t in tasks {
                let end = t.await.ok().flatten().unwrap_or_default();
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(end);
            }
        },
    );
    let ends = ends.lock().unwrap_or_else(|e| e.into_inner());
    let closed = ends.iter().filter(|e| e.closed).count();
    let calm = ends.iter().filter(|e| e.calm).count();
    eprintln!(
        "floods: {} connections, {closed} closed by the server, {calm} with GOAWAY(ENHANCE_YOUR_CALM)",
        ends.len()
    );
    assert_eq!(
        ends.len() as u64,
        CONNECTIONS,
        "every flood connection was made"
    );
    assert_eq!(
        closed,
        ends.len(),
        "every flood connection was closed: {ends:?}"
    );
    assert_eq!(
        calm,
        ends.len(),
        "every flood connection got GOAWAY(ENHANCE_YOUR_CALM): {ends:?}"
    );
}

/// Many connections that finish the HTTP/2 handshake and do nothing more: the fixed cost of
/// a connection (F), which the bound allows per connection.
#[test]
fn idle_connections() {
    const CONNECTIONS: u64 = 400;
    run_attack("idle connections", CONNECTIONS, |addr| async move {
        let mut conns = Vec::new();
        for _ in 0..CONNECTIONS {
            conns.extend(h2_connect(addr).await);
        }
        assert_eq!(
            conns.len() as u64,
            CONNECTIONS,
            "every connection is accepted"
        );
        settle_hold(conns, Vec::<()>::new()).await;
    });
}
