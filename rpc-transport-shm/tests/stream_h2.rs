//! HTTP/2 over a `ShmStream`: the `h2` crate our gRPC transport is built on runs unmodified
//! over shared memory — unary calls (one request body, one response body) and a bidirectional
//! streaming echo work byte-exactly — and the same load over a Unix socket is measured next to
//! it. The figures are printed (`-- --nocapture`; `--release` for meaningful ones), never
//! asserted: timing on a shared 2-core machine is not a correctness property.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::{client, server, RecvStream};
use http::{Request, Response};
use rpc_transport_shm::{ShmStream, ShmStreamListener};
use tokio::io::{AsyncRead, AsyncWrite};

/// Every wait fails after this long instead of hanging.
const DEADLINE: Duration = Duration::from_secs(60);
/// Windows large enough that a 1 MiB body is not paced by HTTP/2 flow control (both
/// transports get the same).
const WINDOW: u32 = 8 << 20;
/// Debug builds (the CI run) measure a tenth of the calls: the figures only mean something
/// with `--release`, and the calls are there to be correct.
const SCALE: usize = if cfg!(debug_assertions) { 10 } else { 1 };

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {DEADLINE:?}"))
}

/// Serves one HTTP/2 connection: `/unary` answers with the whole request body, `/bidi`
/// echoes each chunk as it arrives.
async fn serve<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: T) {
    let mut conn = server::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(1 << 20)
        .handshake::<_, Bytes>(io)
        .await
        .expect("server handshake");
    while let Some(req) = conn.accept().await {
        let Ok((req, mut respond)) = req else { return };
        tokio::spawn(async move {
            let unary = req.uri().path() == "/unary";
            let mut body = req.into_body();
            let mut send = respond
                .send_response(Response::new(()), false)
                .expect("response head");
            if unary {
                let whole = read_all(&mut body).await;
                send.send_data(whole, true).expect("response body");
            } else {
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.expect("request chunk");
                    let _ = body.flow_control().release_capacity(chunk.len());
                    send.send_data(chunk, false).expect("echo");
                }
                send.send_data(Bytes::new(), true).expect("end");
            }
        });
    }
}

async fn read_all(body: &mut RecvStream) -> Bytes {
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        all.extend_from_slice(&chunk);
    }
    Bytes::from(all)
}

async fn connect<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: T,
) -> client::SendRequest<Bytes> {
    let (send, conn) = client::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(1 << 20)
        .handshake::<_, Bytes>(io)
        .await
        .expect("client handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

async fn unary(send: &mut client::SendRequest<Bytes>, body: Bytes) -> Bytes {
    let mut ready = send.clone().ready().await.expect("ready");
    let req = Request::post("http://shm/unary").body(()).unwrap();
    let (resp, mut stream) = ready.send_request(req, false).expect("request");
    stream.send_data(body, true).expect("request body");
    let resp = resp.await.expect("response");
    read_all(&mut resp.into_body()).await
}

/// A bidirectional stream: each message's echo is read before the next is sent.
async fn bidi(send: &mut client::SendRequest<Bytes>, msgs: &[Bytes]) {
    let mut ready = send.clone().ready().await.expect("ready");
    let req = Request::post("http://shm/bidi").body(()).unwrap();
    let (resp, mut stream) = ready.send_request(req, false).expect("request");
    let mut body = None;
    let mut resp = Some(resp);
    let mut pending: Vec<u8> = Vec::new();
    for m in msgs {
        stream.send_data(m.clone(), false).expect("message");
        if body.is_none() {
            let r = resp.take().unwrap().await.expect("response head");
            body = Some(r.into_body());
        }
        let b = body.as_mut().unwrap();
        while pending.len() < m.len() {
            let chunk = b.data().await.expect("echo").expect("echo chunk");
            let _ = b.flow_control().release_capacity(chunk.len());
            pending.extend_from_slice(&chunk);
        }
        assert!(pending[..m.len()] == m[..], "echo differs");
        pending.drain(..m.len());
    }
    stream.send_data(Bytes::new(), true).expect("end");
    let rest = read_all(body.as_mut().unwrap()).await;
    assert!(rest.is_empty() && pending.is_empty());
}

fn payload(n: usize, seed: u8) -> Bytes {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Correctness, then figures: unary calls of several sizes and a bidi stream, byte-exact.
async fn exercise(send: &mut client::SendRequest<Bytes>) {
    for (i, n) in [0usize, 1, 64, 4096, 100_000, 1 << 20, 4 << 20]
        .into_iter()
        .enumerate()
    {
        let body = payload(n, i as u8);
        let got = unary(send, body.clone()).await;
        assert!(got == body, "unary {n} bytes differ");
    }
    let msgs: Vec<Bytes> = (0..200)
        .map(|i| payload([1, 10, 100, 1000, 20_000][i % 5], i as u8))
        .collect();
    bidi(send, &msgs).await;
    // Several calls at once on one connection.
    let calls = (0..16).map(|i| {
        let mut s = send.clone();
        async move {
            let body = payload(10_000 + i * 1000, i as u8);
            assert!(unary(&mut s, body.clone()).await == body);
        }
    });
    futures::future::join_all(calls).await;
}

struct Figures {
    p50: Duration,
    p99: Duration,
    small_per_s: f64,
    mib_per_s: f64,
}

async fn measure(send: &mut client::SendRequest<Bytes>) -> Figures {
    let small = payload(64, 1);
    for _ in 0..200 / SCALE {
        unary(send, small.clone()).await;
    }
    let n = 3000 / SCALE;
    let mut lat = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        unary(send, small.clone()).await;
        lat.push(t.elapsed());
    }
    let small_per_s = n as f64 / started.elapsed().as_secs_f64();
    lat.sort();
    let big = payload(1 << 20, 2);
    let started = Instant::now();
    let calls = 100 / SCALE;
    for _ in 0..calls {
        unary(send, big.clone()).await;
    }
    // Each call moves 1 MiB each way.
    let mib_per_s = (2 * calls) as f64 / started.elapsed().as_secs_f64();
    Figures {
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
        small_per_s,
        mib_per_s,
    }
}

fn sock(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rpc-shm-h2-{name}-{}.sock", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_shm_stream_and_unix_socket() {
    // Shared memory.
    let path = sock("shm");
    let mut listener = ShmStreamListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok(s) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    });
    let mut shm = connect(
        within("shm connect", ShmStream::connect(&path))
            .await
            .unwrap(),
    )
    .await;
    within("h2 over shm", exercise(&mut shm)).await;

    // A Unix socket, the same server code.
    let upath = sock("uds");
    let _ = std::fs::remove_file(&upath);
    let ul = tokio::net::UnixListener::bind(&upath).unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = ul.accept().await {
            tokio::spawn(serve(s));
        }
    });
    let mut uds = connect(tokio::net::UnixStream::connect(&upath).await.unwrap()).await;
    within("h2 over uds", exercise(&mut uds)).await;

    let f_shm = within("measure shm", measure(&mut shm)).await;
    let f_uds = within("measure uds", measure(&mut uds)).await;
    for (name, f) in [("ShmStream", &f_shm), ("Unix socket", &f_uds)] {
        println!(
            "h2 {name:<11}: 64 B unary p50 {:>6.1} µs, p99 {:>6.1} µs, {:>7.0} calls/s sequential; 1 MiB unary {:>6.0} MiB/s (both ways)",
            f.p50.as_secs_f64() * 1e6,
            f.p99.as_secs_f64() * 1e6,
            f.small_per_s,
            f.mib_per_s
        );
    }
    let _ = std::fs::remove_file(&upath);
}
