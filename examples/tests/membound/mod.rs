//! The memory-bound attacks on `echo-server` over TTHeader and TTHeader Streaming, shared by
//! `membound_ttheader.rs` (small settings, in `cargo test`) and `membound_big.rs` (the issue's
//! sizes, behind a flag): a real server process with a `--max-buffered-bytes` budget, attackers
//! on raw sockets that never read, a sampled `VmRSS`, and a well-behaved client whose every
//! call must succeed.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use examples::thrift::{Request, TestServiceClient, TestServicePingPongArgs};
use rpc_core::codec::encode_to_bytes;
use rpc_core::limits::PER_CONNECTION_BYTES;
use rpc_core::{CallOptions, Client, ThriftCodec};
use rpc_transport_ttheader::proto::keys::{str_key, FLAGS_MUX};
use rpc_transport_ttheader::proto::{
    MessageHeader, MessageType, Packet, ProtocolId, StreamFrame, StreamProtocol,
};
use rpc_transport_ttheader::TtHeaderClient;

pub(crate) const MIB: u64 = 1024 * 1024;
/// How long an attack may keep pushing at most (it usually stalls on the server's
/// backpressure much sooner).
const ATTACK: Duration = Duration::from_secs(4);
/// How long an attack is held at most once its bytes are sent (while the server's memory
/// still grows).
const HOLD: Duration = Duration::from_secs(8);
/// Each of the good client's calls must end OK within this deadline.
const GOOD_CALL_DEADLINE: Duration = Duration::from_secs(5);

pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(budget: u64) -> Server {
        let budget = budget.to_string();
        let args = [
            "--listen",
            "tcp://127.0.0.1:0",
            "--max-buffered-bytes",
            &budget,
        ];
        let (child, urls, _lines) = crate::support::spawn_echo_server(&args, 1);
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

    fn peak(&self) -> u64 {
        self.max.load(Ordering::Acquire)
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("sampler");
        self.max.load(Ordering::Acquire)
    }
}

/// A well-behaved client calling in a loop (a pingpong, then a 3-message server stream) until
/// stopped; every call must succeed within [`GOOD_CALL_DEADLINE`]. Latency is per call.
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
                        if let Err(e) = one_round(&client, &mut latencies).await {
                            errors.push(e);
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

    /// Stops the client; asserts every call succeeded; returns (calls, p50, p99).
    fn finish(self) -> (usize, Duration, Duration) {
        self.stop.store(true, Ordering::Release);
        let (mut lat, errors) = self.thread.join().expect("good client");
        assert!(errors.is_empty(), "the good client failed: {errors:?}");
        lat.sort();
        let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
        (lat.len(), pct(50), pct(99))
    }
}

async fn one_round(client: &TestServiceClient, lat: &mut Vec<Duration>) -> Result<(), String> {
    let opts = || CallOptions::new().timeout(GOOD_CALL_DEADLINE);
    let start = Instant::now();
    let res = client
        .ping_pong_with(req("good", None), opts())
        .await
        .map_err(|e| format!("ping_pong: {e:?}"))?;
    if res.into_inner().message != "good" {
        return Err("ping_pong: wrong reply".into());
    }
    lat.push(start.elapsed());
    if start.elapsed() > Duration::from_millis(50) {
        eprintln!("[membound-tt] slow pingpong {:?}", start.elapsed());
    }
    let start = Instant::now();
    let mut call = client
        .echo_server_with(req("good", Some(3)), opts())
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
    lat.push(start.elapsed());
    if start.elapsed() > Duration::from_millis(50) {
        eprintln!("[membound-tt] slow stream {:?}", start.elapsed());
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

/// One unary PingPong call with a `message` of `len` bytes (plain, or mux when `mux`).
fn unary_call(seq: i32, mux: bool, len: usize) -> BytesMut {
    let mut payload = BytesMut::new();
    MessageHeader {
        name: "PingPong".into(),
        kind: MessageType::Call,
        seq_id: seq,
    }
    .encode(&mut payload)
    .unwrap();
    let args = TestServicePingPongArgs {
        req: req(&"x".repeat(len), None),
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

fn data_raw(id: i32, method: &str, body: Bytes, wire: &mut BytesMut) {
    StreamFrame::data(id, method, StreamProtocol::Thrift, body)
        .encode(wire)
        .unwrap();
}

fn data(id: i32, method: &str, r: &Request, wire: &mut BytesMut) {
    data_raw(
        id,
        method,
        encode_to_bytes::<ThriftCodec, _>(r).unwrap(),
        wire,
    );
}

fn close_send(id: i32, method: &str, wire: &mut BytesMut) {
    StreamFrame::close_send(id, method, StreamProtocol::Thrift)
        .encode(wire)
        .unwrap();
}

/// A connection whose receive buffer is small (the server's replies stop at the socket soon,
/// as they would behind a hostile reader), non-blocking for [`push`].
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
    s.into_std().expect("std socket")
}

/// One attacking connection: what it sends (a `prefix` once, then `body` `repeat` times,
/// never reading), and how far it got.
pub(crate) struct Attacker {
    sock: TcpStream,
    prefix: Bytes,
    body: Bytes,
    /// How many times `body` is sent at most.
    repeat: usize,
    sent: usize,
}

impl Attacker {
    fn new(addr: SocketAddr, prefix: Bytes, body: Bytes, repeat: usize) -> Attacker {
        Attacker {
            sock: hostile_connect(addr),
            prefix,
            body,
            repeat,
            sent: 0,
        }
    }

    fn total(&self) -> usize {
        self.prefix.len() + self.body.len() * self.repeat
    }

    /// Writes what the socket takes now; returns the bytes written.
    fn push(&mut self) -> usize {
        let mut wrote = 0;
        while self.sent < self.total() {
            let at = self.sent;
            let chunk = if at < self.prefix.len() {
                &self.prefix[at..]
            } else {
                let off = (at - self.prefix.len()) % self.body.len().max(1);
                &self.body[off..]
            };
            match self.sock.write(chunk) {
                Ok(0) => panic!("the server closed an attacking connection"),
                Ok(n) => {
                    self.sent += n;
                    wrote += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("the server closed an attacking connection: {e}"),
            }
        }
        wrote
    }
}

/// Pushes every attacker's bytes round-robin until all are sent, the server stopped taking
/// any for a second (its backpressure), or [`ATTACK`] is over. Returns the bytes sent.
fn attack(attackers: &mut [Attacker]) -> usize {
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let mut total = 0;
    while start.elapsed() < ATTACK && last_progress.elapsed() < Duration::from_secs(1) {
        let wrote: usize = attackers.iter_mut().map(Attacker::push).sum();
        total += wrote;
        if wrote > 0 {
            last_progress = Instant::now();
        } else if attackers.iter().all(|a| a.sent == a.total()) {
            break;
        } else {
            // Load generation, not synchronisation: the sockets are full; try again soon.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    total
}

/// Runs `attackers` (made once the server and the good client run) against a fresh server
/// with a budget of `budget` bytes; asserts the RSS bound and the good client's success;
/// prints the figures.
pub(crate) fn run(name: &str, budget: u64, make: impl FnOnce(SocketAddr) -> Vec<Attacker>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(budget);
    let good = GoodClient::start(server.addr);
    let base = server.rss();
    let rss = RssSampler::start(&server);
    let mut attackers = make(server.addr);
    let conns = attackers.len() as u64;
    let sent = attack(&mut attackers);
    // Hold the attack (connections open, nothing read) while the server works through what
    // it took (handlers still producing replies): until its RSS has not risen for a second,
    // at most `HOLD`. Sampling, not synchronisation: the bound must hold at every sample.
    let hold = Instant::now();
    let (mut peak, mut risen) = (rss.peak(), Instant::now());
    while hold.elapsed() < HOLD && risen.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
        if rss.peak() > peak {
            (peak, risen) = (rss.peak(), Instant::now());
        }
    }
    let max = rss.finish();
    let (calls, p50, p99) = good.finish();
    let grown = max.saturating_sub(base);
    let bound = budget + conns * PER_CONNECTION_BYTES as u64;
    println!(
        "[membound-tt] {name}: {conns} connections sent {:.1} MiB; server RSS baseline {:.1} MiB, \
         peak +{:.1} MiB, bound +{:.1} MiB (budget {} MiB + {} KiB × {conns}); good client {calls} \
         calls, p50 {p50:?}, p99 {p99:?}",
        sent as f64 / MIB as f64,
        base as f64 / MIB as f64,
        grown as f64 / MIB as f64,
        bound as f64 / MIB as f64,
        budget / MIB,
        PER_CONNECTION_BYTES / 1024,
    );
    assert!(
        grown <= bound,
        "{name}: RSS grew {:.1} MiB, bound {:.1} MiB",
        grown as f64 / MIB as f64,
        bound as f64 / MIB as f64
    );
    drop(attackers);
}

/// Partial max-size frames: each of `conns` connections sends 15 MiB of a 16 MiB frame (half
/// unary TTHeader packets, half ttstream Data frames after a Header) and waits.
pub(crate) fn partial_frames(conns: usize) -> impl FnOnce(SocketAddr) -> Vec<Attacker> {
    move |addr| {
        let big = Bytes::from(vec![b'p'; 16 * 1024 * 1024 - 4096]);
        let mut unary = Packet::new(0, 1, ProtocolId::ThriftBinary);
        unary.payload = big.clone();
        let mut unary_wire = BytesMut::new();
        unary.encode(&mut unary_wire).unwrap();
        let mut stream_wire = BytesMut::new();
        header(1, "Echo", &mut stream_wire);
        data_raw(1, "Echo", big, &mut stream_wire);
        let sent = 15 * 1024 * 1024;
        let unary_wire = unary_wire.freeze().slice(..sent);
        let stream_wire = stream_wire.freeze().slice(..sent);
        (0..conns)
            .map(|i| {
                let wire = if i % 2 == 0 {
                    &unary_wire
                } else {
                    &stream_wire
                };
                Attacker::new(addr, wire.clone(), Bytes::new(), 0)
            })
            .collect()
    }
}

/// Replies never read: of `conns` connections, half pipeline 1 KB PingPong calls (plain and
/// mux), half open an endless server stream of 1 KB messages; none reads a byte.
pub(crate) fn replies_never_read(conns: usize) -> impl FnOnce(SocketAddr) -> Vec<Attacker> {
    move |addr| {
        let mut calls = [BytesMut::new(), BytesMut::new()];
        for (mux, wire) in calls.iter_mut().enumerate() {
            for seq in 1..=64 {
                wire.extend_from_slice(&unary_call(seq, mux == 1, 1000));
            }
        }
        let calls = calls.map(BytesMut::freeze);
        let stream = server_stream(i32::MAX);
        (0..conns)
            .map(|i| match i % 4 {
                0 | 1 => Attacker::new(addr, Bytes::new(), calls[i % 2].clone(), 1000),
                _ => Attacker::new(addr, stream.clone(), Bytes::new(), 0),
            })
            .collect()
    }
}

/// One EchoServer call of `repeat` 1 KB replies (Header, request, CloseSend).
fn server_stream(repeat: i32) -> Bytes {
    let mut stream = BytesMut::new();
    header(1, "EchoServer", &mut stream);
    data(
        1,
        "EchoServer",
        &req(&"y".repeat(1000), Some(repeat)),
        &mut stream,
    );
    close_send(1, "EchoServer", &mut stream);
    stream.freeze()
}

/// The second measurement: each of `conns` connections opens one server stream of
/// `repeat` 1 KB replies and never reads.
pub(crate) fn server_streams_never_read(
    conns: usize,
    repeat: i32,
) -> impl FnOnce(SocketAddr) -> Vec<Attacker> {
    move |addr| {
        let stream = server_stream(repeat);
        (0..conns)
            .map(|_| Attacker::new(addr, stream.clone(), Bytes::new(), 0))
            .collect()
    }
}

/// Streams whose handler does not read: each of `conns` connections opens 4 bidi Echo
/// streams whose first request makes the handler sleep a minute, then keeps sending 1 KB
/// requests on them.
pub(crate) fn unread_streams(conns: usize) -> impl FnOnce(SocketAddr) -> Vec<Attacker> {
    const STREAMS: i32 = 4;
    move |addr| {
        let mut prefix = BytesMut::new();
        let mut body = BytesMut::new();
        for id in 1..=STREAMS {
            header(id, "Echo", &mut prefix);
            data(id, "Echo", &sleepy(), &mut prefix);
            data(id, "Echo", &req(&"z".repeat(1000), None), &mut body);
        }
        let (prefix, body) = (prefix.freeze(), body.freeze());
        (0..conns)
            .map(|_| Attacker::new(addr, prefix.clone(), body.clone(), 100_000))
            .collect()
    }
}

/// A flood of tiny ttstream Data frames (1-byte messages) on a stream per connection whose
/// handler does not read: what the server holds per message is far more than its one byte.
pub(crate) fn tiny_frames(conns: usize) -> impl FnOnce(SocketAddr) -> Vec<Attacker> {
    move |addr| {
        let mut prefix = BytesMut::new();
        header(1, "Echo", &mut prefix);
        data(1, "Echo", &sleepy(), &mut prefix);
        let mut body = BytesMut::new();
        for _ in 0..1024 {
            data_raw(1, "Echo", Bytes::from_static(b"t"), &mut body);
        }
        let (prefix, body) = (prefix.freeze(), body.freeze());
        (0..conns)
            .map(|_| Attacker::new(addr, prefix.clone(), body.clone(), 100_000))
            .collect()
    }
}

/// A request that makes an Echo handler sleep a minute before it reads on.
fn sleepy() -> Request {
    Request {
        sleep_ms: Some(60_000),
        ..req("sleep", None)
    }
}

/// Measures (prints) the server's RSS per idle connection and per open stream: the figures
/// behind `PER_CONNECTION_BYTES` and `STREAM_STATE_BYTES`. Not an assertion.
pub(crate) fn measure_fixed_costs(budget: u64) {
    use std::io::Read;
    const CONNS: usize = 1000;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(budget);
    let settle = |server: &Server| {
        // Sampling, not synchronisation: the server takes the connections' bytes.
        std::thread::sleep(Duration::from_millis(1500));
        server.rss()
    };
    // A pingpong each over TTHeader unary, answered, the connection left open.
    let call = unary_call(1, false, 10).freeze();
    let mut ttheader = Vec::new();
    let base = settle(&server);
    for _ in 0..CONNS {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        s.write_all(&call).expect("call");
        ttheader.push(s);
    }
    for s in &mut ttheader {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 256];
        assert!(s.read(&mut b).expect("a reply") > 0);
    }
    let unary = settle(&server);
    // A ttstream connection each with one stream whose handler sleeps.
    let sleepy = sleepy();
    let mut wire = BytesMut::new();
    header(1, "Echo", &mut wire);
    data(1, "Echo", &sleepy, &mut wire);
    let mut streaming = Vec::new();
    for _ in 0..CONNS {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        s.write_all(&wire).expect("stream");
        streaming.push(s);
    }
    let one_stream = settle(&server);
    // 15 more streams on each of the first 100 streaming connections.
    let mut more = BytesMut::new();
    for id in 2..=16 {
        header(id, "Echo", &mut more);
        data(id, "Echo", &sleepy, &mut more);
    }
    for s in streaming.iter_mut().take(100) {
        s.write_all(&more).expect("streams");
    }
    let streams = settle(&server);
    let kib = |a: u64, b: u64, n: usize| (b.saturating_sub(a)) as f64 / 1024.0 / n as f64;
    println!(
        "[membound-tt] per unary connection (one call done) {:.1} KiB; per ttstream connection \
         with one sleeping stream {:.1} KiB; per further stream {:.2} KiB",
        kib(base, unary, CONNS),
        kib(unary, one_stream, CONNS),
        kib(one_stream, streams, 1500),
    );
}
