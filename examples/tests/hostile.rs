//! `echo-server` under attack: each test starts the real binary, attacks it over raw TCP the
//! way issue 7 describes, samples the server's RSS (`VmRSS` in `/proc/PID/status`) throughout,
//! and meanwhile runs a well-behaved `TtHeaderClient` that must keep getting answers with sane
//! latency. Run with `--nocapture` to see the figures (RSS over baseline, good client's
//! p50/p99).
//!
//! Debug builds are slow; the attacks are sized to take a few seconds each (see each test).
//! The tests run one at a time (a shared lock): they measure memory and latency, and the
//! machine has two cores.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use examples::thrift::{Request, TestServiceClient, TestServicePingPongArgs};
use rpc_core::codec::encode_to_bytes;
use rpc_core::{CallOptions, Client, ThriftCodec};
use rpc_transport_ttheader::proto::keys::{str_key, FLAGS_MUX};
use rpc_transport_ttheader::proto::thrift_msg::decode_exception_message;
use rpc_transport_ttheader::proto::{
    FrameKind, Limits, MessageHeader, MessageType, Packet, ProtocolId, StreamFrame, StreamProtocol,
};
use rpc_transport_ttheader::{TtHeaderClient, REFUSED_STREAM_CODE};

const MIB: u64 = 1024 * 1024;
/// What one hostile connection may add to the server's RSS (issue 7).
const ONE_CONNECTION_BOUND: u64 = 64 * MIB;
/// How long each flood runs.
const ATTACK: Duration = Duration::from_secs(3);
/// Each of the good client's calls must end OK within this deadline: a server starved by the
/// attack fails the test. Its latencies (p50, p99) are printed, not asserted: speed goals live
/// in benchmarks, and a p99 bound failed here only when the machine itself was overloaded
/// (load average 12: p99 1.08 s with every call served).
const GOOD_CALL_DEADLINE: Duration = Duration::from_secs(5);

static SERIAL: Mutex<()> = Mutex::new(());

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let all: Vec<&str> = ["--listen", "tcp://127.0.0.1:0"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let (child, urls, _lines) = support::spawn_echo_server(&all, 1);
        let addr = urls[0]
            .strip_prefix("tcp://")
            .and_then(|a| a.parse().ok())
            .expect("a tcp:// socket address");
        Server { child, addr }
    }

    fn rss(&self) -> u64 {
        examples::measure::rss(self.child.id()).expect("the server is alive, with a VmRSS")
    }
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
                    if let Some(bytes) = examples::measure::rss(pid) {
                        max.fetch_max(bytes, Ordering::AcqRel);
                    }
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

/// A well-behaved client calling in a loop (a pingpong, then a 3-message server stream) until
/// stopped; every call must succeed.
struct GoodClient {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<Duration>, Vec<String>)>,
}

impl GoodClient {
    fn start(addr: SocketAddr) -> GoodClient {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let client = TestServiceClient::new(Client::new(TtHeaderClient::new(addr)));
                    let mut latencies = Vec::new();
                    let mut errors = Vec::new();
                    let mut first = true;
                    while first || !stop.load(Ordering::Acquire) {
                        let start = Instant::now();
                        match one_round(&client).await {
                            Ok(()) => latencies.push(start.elapsed()),
                            Err(e) => errors.push(e),
                        }
                        if first {
                            first = false;
                            let _ = ready_tx.send(());
                        }
                    }
                    (latencies, errors)
                })
            })
        };
        ready
            .recv_timeout(Duration::from_secs(20))
            .expect("the good client's first call");
        GoodClient { stop, thread }
    }

    /// Stops the client; asserts every call succeeded (each within [`GOOD_CALL_DEADLINE`]);
    /// returns (calls, p50, p99).
    fn finish(self) -> (usize, Duration, Duration) {
        self.stop.store(true, Ordering::Release);
        let (mut lat, errors) = self.thread.join().expect("good client");
        assert!(errors.is_empty(), "the good client failed: {errors:?}");
        lat.sort();
        let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
        (lat.len(), pct(50), pct(99))
    }
}

async fn one_round(client: &TestServiceClient) -> Result<(), String> {
    let timeout = GOOD_CALL_DEADLINE;
    let res = client
        .ping_pong_with(req("good", None), CallOptions::new().timeout(timeout))
        .await
        .map_err(|e| format!("ping_pong: {e:?}"))?;
    if res.into_inner().message != "good" {
        return Err("ping_pong: wrong reply".into());
    }
    let mut call = client
        .echo_server_with(req("good", Some(3)), CallOptions::new().timeout(timeout))
        .await
        .map_err(|e| format!("echo_server: {e}"))?;
    let mut n = 0;
    while let Some(_m) = call
        .recv()
        .await
        .map_err(|e| format!("echo_server recv: {e}"))?
    {
        n += 1;
    }
    if n != 3 {
        return Err(format!("echo_server: {n} messages"));
    }
    Ok(())
}

fn req(message: &str, repeat: Option<i32>) -> Request {
    Request {
        message: message.into(),
        repeat,
        ..Default::default()
    }
}

/// One unary PingPong call (plain, or mux when `mux`).
fn unary_call(seq: i32, mux: bool, message: &str) -> BytesMut {
    let mut payload = BytesMut::new();
    MessageHeader {
        name: "PingPong".into(),
        kind: MessageType::Call,
        seq_id: seq,
    }
    .encode(&mut payload)
    .unwrap();
    let args = TestServicePingPongArgs {
        req: req(message, None),
    };
    payload.extend_from_slice(&encode_to_bytes::<ThriftCodec, _>(&args).unwrap());
    let mut p = Packet::new(
        if mux { FLAGS_MUX } else { 0 },
        seq,
        ProtocolId::ThriftBinary,
    );
    p.headers.push_str(str_key::IDL_SERVICE_NAME, "TestService");
    p.payload = Bytes::from(payload);
    let mut wire = BytesMut::new();
    p.encode(&mut wire).unwrap();
    wire
}

fn header(id: i32, method: &str, wire: &mut BytesMut) {
    StreamFrame::client_header(id, method, StreamProtocol::Thrift, "TestService", [], None)
        .encode(wire)
        .unwrap();
}

fn data(id: i32, method: &str, r: &Request, wire: &mut BytesMut) {
    let body = encode_to_bytes::<ThriftCodec, _>(r).unwrap();
    StreamFrame::data(id, method, StreamProtocol::Thrift, body)
        .encode(wire)
        .unwrap();
}

fn close_send(id: i32, method: &str, wire: &mut BytesMut) {
    StreamFrame::close_send(id, method, StreamProtocol::Thrift)
        .encode(wire)
        .unwrap();
}

/// A connection whose receive buffer is small (so the server's replies stop at the socket
/// soon, as they would behind a slow or hostile reader) and whose writes time out.
fn hostile_connect(addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        sock.connect(addr).await.expect("connect")
    });
    let s = s.into_std().expect("std socket");
    s.set_nonblocking(false).expect("blocking");
    s.set_write_timeout(Some(Duration::from_millis(100)))
        .expect("write timeout");
    s
}

/// Writes `chunk` over and over (never reading) until `ATTACK` is over or `total` bytes went
/// out; returns the bytes the server took.
fn flood(sock: &mut TcpStream, chunk: &[u8], total: usize) -> usize {
    let end = Instant::now() + ATTACK;
    let mut sent = 0;
    let mut at = 0;
    while sent < total && Instant::now() < end {
        match sock.write(&chunk[at..]) {
            Ok(n) => {
                sent += n;
                at = (at + n) % chunk.len();
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("the server closed the attack connection: {e}"),
        }
    }
    sent
}

fn report(name: &str, base: u64, max: u64, good: (usize, Duration, Duration), extra: &str) {
    println!(
        "[hostile] {name}: server RSS baseline {:.1} MiB, peak {:.1} MiB (+{:.1} MiB); good client {} rounds, p50 {:?}, p99 {:?}; {extra}",
        base as f64 / MIB as f64,
        max as f64 / MIB as f64,
        max.saturating_sub(base) as f64 / MIB as f64,
        good.0,
        good.1,
        good.2
    );
}

/// Starts the server and a good client, lets them warm up, and returns the baseline RSS.
fn setup(args: &[&str]) -> (Server, GoodClient, u64) {
    let server = Server::start(args);
    let good = GoodClient::start(server.addr);
    let base = server.rss();
    (server, good, base)
}

fn pipelined_unary(mux: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (server, good, base) = setup(&[]);
    let rss = RssSampler::start(&server);
    let mut sock = hostile_connect(server.addr);
    let mut chunk = BytesMut::new();
    let text = "x".repeat(1000);
    for seq in 1..=256 {
        chunk.extend_from_slice(&unary_call(seq, mux, &text));
    }
    let sent = flood(&mut sock, &chunk, usize::MAX);
    let max = rss.finish();
    let good = good.finish();
    let calls = sent / (chunk.len() / 256);
    report(
        if mux {
            "(a) pipelined mux unary"
        } else {
            "(a) pipelined plain unary"
        },
        base,
        max,
        good,
        &format!(
            "{calls} calls ({:.1} MiB) taken from the attacker",
            sent as f64 / MIB as f64
        ),
    );
    assert!(
        max.saturating_sub(base) <= ONE_CONNECTION_BOUND,
        "RSS grew {} MiB",
        (max - base) / MIB
    );
    drop(sock);
}

/// (a) Pipelined unary calls (1 KB each, 1 KB replies) from a client that never reads.
#[test]
fn a_pipelined_plain_unary_calls_never_read() {
    pipelined_unary(false);
}

/// (a) The same over a mux connection.
#[test]
fn a_pipelined_mux_unary_calls_never_read() {
    pipelined_unary(true);
}

/// (b) 100,000 ttstream Header frames on one connection: at most `max_concurrent_streams`
/// (default 1024) are opened, every other one is refused with a Trailer exception. The
/// attacker reads (so the stream cap is what is tested, not the write backlog).
#[test]
fn b_a_hundred_thousand_stream_headers_on_one_connection() {
    const STREAMS: i32 = 100_000;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (server, good, base) = setup(&[]);
    let rss = RssSampler::start(&server);
    let sock = TcpStream::connect(server.addr).expect("connect");
    let refused = Arc::new(AtomicUsize::new(0));
    let reader = {
        let mut sock = sock.try_clone().expect("clone");
        let refused = refused.clone();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                while let Ok(Some(f)) = StreamFrame::decode(&mut buf, &Limits::default()) {
                    if f.kind == FrameKind::Trailer {
                        if let Ok((_, e)) = decode_exception_message(&f.payload) {
                            if e.kind == REFUSED_STREAM_CODE
                                && refused.fetch_add(1, Ordering::AcqRel) + 1
                                    == (STREAMS - 1024) as usize
                            {
                                return;
                            }
                        }
                    }
                }
                match sock.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
    };
    let mut wire = BytesMut::new();
    for id in 1..=STREAMS {
        header(id, "Echo", &mut wire);
    }
    let mut w = sock.try_clone().expect("clone");
    w.write_all(&wire).expect("the server takes every Header");
    let started = Instant::now();
    reader.join().expect("reader");
    let max = rss.finish();
    let good = good.finish();
    let refused = refused.load(Ordering::Acquire);
    report(
        "(b) 100,000 Header frames",
        base,
        max,
        good,
        &format!(
            "{:.1} MiB of Headers sent, {refused} refused with {REFUSED_STREAM_CODE} ({:?} after the last write)",
            wire.len() as f64 / MIB as f64,
            started.elapsed()
        ),
    );
    assert_eq!(
        refused,
        (STREAMS - 1024) as usize,
        "every stream over the cap is refused"
    );
    assert!(
        max.saturating_sub(base) <= ONE_CONNECTION_BOUND,
        "RSS grew {} MiB",
        (max - base) / MIB
    );
}

/// (c) Complete streams (Header + CloseSend of the bidi echo) whose replies (Header + Trailer
/// each) are never read: the server stops reading once a write buffer of replies is queued.
/// The attacker offers 300,000 streams for `ATTACK`.
#[test]
fn c_complete_streams_whose_replies_are_never_read() {
    const STREAMS: i32 = 300_000;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (server, good, base) = setup(&[]);
    let rss = RssSampler::start(&server);
    let mut sock = hostile_connect(server.addr);
    let mut wire = BytesMut::new();
    for id in 1..=STREAMS {
        header(id, "Echo", &mut wire);
        close_send(id, "Echo", &mut wire);
    }
    let sent = flood(&mut sock, &wire, wire.len());
    let max = rss.finish();
    let good = good.finish();
    let per_stream = wire.len() / STREAMS as usize;
    report(
        "(c) Header+CloseSend streams never read",
        base,
        max,
        good,
        &format!(
            "the server took {} of {STREAMS} streams offered ({:.1} MiB) before pushing back",
            sent / per_stream,
            sent as f64 / MIB as f64
        ),
    );
    assert!(
        max.saturating_sub(base) <= ONE_CONNECTION_BOUND,
        "RSS grew {} MiB",
        (max - base) / MIB
    );
}

/// (d) Many connections, each with one server-streaming call (1 KB messages, endless) never
/// read, against a server with a 16 MiB budget. Bound: the server's documented memory bound,
/// the budget plus `rpc_core::limits::PER_CONNECTION_BYTES` (96 KiB) per connection (it was
/// the budget + 192 KiB per connection + 16 MiB before buffers were charged by capacity;
/// measured about 48 MiB of the 63 MiB bound). Without the budget each connection pinned about
/// 2.8 MiB.
#[test]
fn d_many_connections_each_with_a_server_stream_never_read() {
    const CONNS: usize = 500;
    const BUDGET: u64 = 16 * MIB;
    const PER_CONNECTION: u64 = rpc_core::limits::PER_CONNECTION_BYTES as u64;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let budget = BUDGET.to_string();
    let (server, good, base) = setup(&["--max-buffered-bytes", &budget]);
    let rss = RssSampler::start(&server);
    let mut wire = BytesMut::new();
    header(1, "EchoServer", &mut wire);
    data(
        1,
        "EchoServer",
        &req(&"y".repeat(1000), Some(i32::MAX)),
        &mut wire,
    );
    close_send(1, "EchoServer", &mut wire);
    let mut socks = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let mut s = hostile_connect(server.addr);
        s.write_all(&wire).expect("the call goes out");
        socks.push(s);
    }
    // Let the servers' streams run into their bounds while the good client keeps calling;
    // watch the host's kernel TCP memory too (sampling, not synchronisation).
    let tcp_base = tcp_kernel_memory();
    let mut tcp_peak = tcp_base;
    let end = Instant::now() + ATTACK;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        tcp_peak = tcp_peak.max(tcp_kernel_memory());
    }
    let max = rss.finish();
    let good = good.finish();
    let bound = BUDGET + CONNS as u64 * PER_CONNECTION;
    report(
        "(d) 500 connections with a server stream never read",
        base,
        max,
        good,
        &format!(
            "budget {} MiB, bound +{} MiB; kernel TCP memory +{} MiB",
            BUDGET / MIB,
            bound / MIB,
            tcp_peak.saturating_sub(tcp_base) / MIB
        ),
    );
    assert!(
        max.saturating_sub(base) <= bound,
        "RSS grew {} MiB, bound {} MiB",
        (max - base) / MIB,
        bound / MIB
    );
    // The server caps each socket's send buffer (ServerLimits::socket_send_buffer, 512 KiB,
    // doubled by the kernel): left to autotuning (4 MiB each) these streams pinned about
    // 1.5 GiB of kernel memory and pushed the host into TCP memory pressure.
    let tcp_bound = CONNS as u64 * 2 * MIB;
    assert!(
        tcp_peak.saturating_sub(tcp_base) <= tcp_bound,
        "kernel TCP memory grew {} MiB, bound {} MiB",
        tcp_peak.saturating_sub(tcp_base) / MIB,
        tcp_bound / MIB
    );
    drop(socks);
}

/// The host's kernel TCP memory in bytes (`/proc/net/sockstat`, `TCP: ... mem PAGES`); 0 when
/// it cannot be read.
fn tcp_kernel_memory() -> u64 {
    let stat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    stat.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "mem")?;
            words.next()?.parse::<u64>().ok()
        })
        .map_or(0, |pages| pages * 4096)
}

/// Reads until EOF; returns when the server closed the connection.
fn wait_closed(mut s: &TcpStream, within: Duration) -> Instant {
    s.set_read_timeout(Some(within)).expect("read timeout");
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return Instant::now(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Instant::now(),
            Err(e) => panic!("the server did not close the connection within {within:?}: {e}"),
        }
    }
}

/// (e) Connections that send a valid 8-byte prefix (unary or streaming) and then nothing are
/// closed after `--frame-timeout-ms`; one that made a call and then idles is closed after
/// `--idle-timeout-ms`.
#[test]
fn e_a_prefix_then_nothing_is_closed_after_the_frame_timeout() {
    // 2 × 50 stays below the listen backlog of 128: past it, connects stall for a SYN
    // retransmit or are reset (the `serve` listener raises the backlog; not this test's point).
    const EACH: usize = 50;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let frame_timeout = Duration::from_millis(300);
    let idle_timeout = Duration::from_millis(1500);
    let (server, good, base) = setup(&["--frame-timeout-ms", "300", "--idle-timeout-ms", "1500"]);
    let rss = RssSampler::start(&server);
    // LENGTH 100, magic, FLAGS: unary (0) and streaming (2).
    let prefixes: [&[u8]; 2] = [
        &[0, 0, 0, 100, 0x10, 0x00, 0x00, 0x00],
        &[0, 0, 0, 100, 0x10, 0x00, 0x00, 0x02],
    ];
    let mut socks = Vec::new();
    for i in 0..2 * EACH {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        s.write_all(prefixes[i % 2]).expect("prefix");
        socks.push((s, Instant::now()));
    }
    let mut idle = TcpStream::connect(server.addr).expect("connect");
    idle.write_all(&unary_call(1, false, "once")).expect("call");
    let mut buf = BytesMut::new();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let answered = loop {
        if let Some(p) = Packet::decode(&mut buf, &Limits::default()).expect("a reply") {
            break p;
        }
        let mut chunk = [0u8; 4096];
        let n = idle.read(&mut chunk).expect("the reply");
        assert!(n > 0, "closed before replying");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(answered.seq_id, 1);
    let idle_from = Instant::now();
    let (mut fastest, mut slowest) = (Duration::MAX, Duration::ZERO);
    for (s, sent_at) in &socks {
        let after = wait_closed(s, Duration::from_secs(10)) - *sent_at;
        fastest = fastest.min(after);
        slowest = slowest.max(after);
    }
    let idle_closed = wait_closed(&idle, Duration::from_secs(10)) - idle_from;
    let max = rss.finish();
    let good = good.finish();
    report(
        "(e) prefix then nothing",
        base,
        max,
        good,
        &format!(
            "{} connections closed {fastest:?}..{slowest:?} after their prefix (frame timeout {frame_timeout:?}; the last ones are observed late, one after another); an idle connection closed after {idle_closed:?} (idle timeout {idle_timeout:?})",
            socks.len()
        ),
    );
    assert!(fastest >= frame_timeout, "closed before the frame timeout");
    assert!(
        idle_closed >= idle_timeout - Duration::from_millis(50),
        "idle connection closed after {idle_closed:?}"
    );
}
