//! `echo-server` under gRPC attack: each test starts the real binary (gRPC and TTHeader on one
//! port), attacks it over raw TCP or with a misbehaving client, samples the server's RSS, and
//! checks that a well-behaved gRPC client is still served. The message-level attacks
//! (truncated prefix, a prefix claiming 4 GiB, compressed flag without encoding) are in
//! `tests/grpc.rs` against the same protocol in-process.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use examples::proto::{Request, TestServiceClient};
use rpc_core::{Address, Client};
use rpc_transport_grpc::{GrpcClient, GrpcClientConfig};

const MIB: u64 = 1024 * 1024;
/// What one hostile connection may add to the server's RSS.
const ONE_CONNECTION_BOUND: u64 = 64 * MIB;

static SERIAL: Mutex<()> = Mutex::new(());

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Server {
        let (child, urls, _lines) =
            support::spawn_echo_server(&["--listen", "tcp://127.0.0.1:0"], 1);
        let addr = urls[0]
            .strip_prefix("tcp://")
            .and_then(|a| a.parse().ok())
            .expect("a tcp:// socket address");
        Server { child, addr }
    }

    fn rss(&self) -> u64 {
        rss_of(self.child.id())
    }
}

fn rss_of(pid: u32) -> u64 {
    examples::measure::rss(pid).unwrap_or(0)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples the server's RSS every 20 ms until stopped; returns the highest.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(server: &Server) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(server.rss()));
        let pid = server.child.id();
        let thread = {
            let (stop, max) = (stop.clone(), max.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    max.fetch_max(rss_of(pid), Ordering::AcqRel);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        RssSampler { stop, max, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("sampler");
        self.max.load(Ordering::Acquire)
    }
}

/// A few calls of a well-behaved gRPC client, each within a bound.
async fn good_client_works(addr: SocketAddr) {
    let c = TestServiceClient::new(Client::new(GrpcClient::new(Address::from(addr))));
    for i in 0..5 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            c.ping_pong(Request {
                message: format!("good {i}"),
                ..Default::default()
            }),
        )
        .await
        .expect("the good client is answered in time")
        .expect("the good client's call succeeds");
        assert_eq!(r.message, format!("good {i}"));
    }
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

/// Connects and sends the preface and an empty SETTINGS; a thread drains what the server
/// sends (so its writes never block on us) and reports when the connection closed.
fn hostile(addr: SocketAddr) -> (TcpStream, std::sync::mpsc::Receiver<Instant>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(0x4, 0, 0, &[], &mut hello);
    s.write_all(&hello).expect("preface");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut r = s.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        let _ = tx.send(Instant::now());
    });
    (s, rx)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn random_bytes_end_only_their_connection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = vec![0u8; 64 * 1024];
    for b in noise.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    // Without the preface: no protocol claims it; after the preface: an HTTP/2 protocol error.
    for with_preface in [false, true] {
        let (mut s, closed) = if with_preface {
            hostile(server.addr)
        } else {
            let s = TcpStream::connect(server.addr).expect("connect");
            let (tx, rx) = std::sync::mpsc::channel();
            let mut r = s.try_clone().expect("clone");
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
                let _ = tx.send(Instant::now());
            });
            (s, rx)
        };
        let _ = s.write_all(&noise);
        closed
            .recv_timeout(Duration::from_secs(10))
            .expect("the server closes a connection sending garbage");
    }
    runtime().block_on(good_client_works(server.addr));
}

#[test]
fn ten_thousand_streams_opened_and_never_sent_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start();
    let base = server.rss();
    let sampler = RssSampler::start(&server);
    let (mut s, closed) = hostile(server.addr);
    let block = request_block("/echo.TestService/Echo");
    let mut wire = Vec::new();
    for i in 0..10_000u32 {
        // HEADERS with END_HEADERS, no END_STREAM: the stream is open and nothing follows.
        frame(0x1, 0x4, 2 * i + 1, &block, &mut wire);
    }
    let _ = s.write_all(&wire);
    // Served streams wait for data; the server refuses streams beyond its limit
    // (SETTINGS_MAX_CONCURRENT_STREAMS) and may close a connection that keeps ignoring that.
    let _ = closed.recv_timeout(Duration::from_secs(2));
    runtime().block_on(good_client_works(server.addr));
    let max = sampler.finish();
    eprintln!(
        "10,000 idle streams: server RSS +{} KiB",
        (max.saturating_sub(base)) >> 10
    );
    assert!(
        max.saturating_sub(base) < ONE_CONNECTION_BOUND,
        "RSS grew by {} MiB",
        (max - base) / MIB
    );
}

#[test]
fn a_headers_flood_of_oversized_header_blocks_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start();
    let base = server.rss();
    let sampler = RssSampler::start(&server);
    let (mut s, closed) = hostile(server.addr);
    // Each block carries ~15 KiB of a custom header: under the frame size limit, and over the
    // 16 KiB header list limit together with the rest. CONTINUATION frames would make it larger.
    let mut block = request_block("/echo.TestService/PingPong");
    let big = "v".repeat(120);
    for i in 0..140 {
        let k = format!("x-flood-{i:03}");
        block.push(0x00);
        block.push(k.len() as u8);
        block.extend_from_slice(k.as_bytes());
        block.push(big.len() as u8);
        block.extend_from_slice(big.as_bytes());
    }
    let mut wire = Vec::new();
    for i in 0..2_000u32 {
        frame(0x1, 0x4 | 0x1, 2 * i + 1, &block, &mut wire);
    }
    let _ = s.write_all(&wire);
    let _ = closed.recv_timeout(Duration::from_secs(2));
    runtime().block_on(good_client_works(server.addr));
    let max = sampler.finish();
    eprintln!(
        "HEADERS flood: server RSS +{} KiB",
        (max.saturating_sub(base)) >> 10
    );
    assert!(max.saturating_sub(base) < ONE_CONNECTION_BOUND);
}

/// A client asks for 256 MiB of server stream and never reads: flow control stops the
/// server's handler after about one window, and the server's memory stays flat.
#[test]
fn two_hundred_fifty_six_mib_pushed_at_a_non_reading_client() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start();
    let base = server.rss();
    let sampler = RssSampler::start(&server);
    let rt = runtime();
    rt.block_on(async {
        let transport = GrpcClient::with_config(
            Address::from(server.addr),
            GrpcClientConfig::default().connections(1),
        );
        let c = TestServiceClient::new(Client::new(transport));
        let mut stream = c
            .echo_server(Request {
                message: "m".repeat(1 << 20),
                repeat: Some(256),
                ..Default::default()
            })
            .await
            .expect("open");
        // Let the server push as much as flow control allows.
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The same connection still serves another stream.
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            c.ping_pong(Request {
                message: "beside".into(),
                ..Default::default()
            }),
        )
        .await
        .expect("a second stream flows")
        .expect("ok");
        assert_eq!(r.message, "beside");
        // Reading resumes the stream: the first messages arrive intact.
        let first = stream.recv().await.expect("ok").expect("a message");
        assert_eq!(first.message.len(), 1 << 20);
        drop(stream);
        good_client_works(server.addr).await;
    });
    let max = sampler.finish();
    eprintln!(
        "256 MiB at a non-reading client: server RSS +{} KiB",
        (max.saturating_sub(base)) >> 10
    );
    assert!(
        max.saturating_sub(base) < ONE_CONNECTION_BOUND,
        "RSS grew by {} MiB",
        (max - base) / MIB
    );
}
