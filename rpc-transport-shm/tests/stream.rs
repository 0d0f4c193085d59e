//! Byte-stream mode (`ShmStream`): byte-exact transfer both ways at random sizes and write
//! chunkings, many small writes, backpressure through a small arena, half-close, a dropped or
//! killed peer (EOF or an error, never a hang), the mode check, and dropped streams leaving no
//! descriptor or mapping behind. Real memfds, eventfds and Unix sockets; the killed peer is a
//! child process (this test binary run again). This file is its own test process, so the
//! process-wide descriptor and mapping counts are ours alone (the count test waits for the
//! others' streams to end first by running them in one test function order-free: it compares
//! against a baseline taken with nothing of ours open, see `no_leaks`).
#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;
use rpc_transport_shm::{ShmStream, ShmStreamListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every wait in these tests fails after this long instead of hanging (generous: a loaded
/// 2-core CI machine moves 4 MiB through shared memory in milliseconds).
const DEADLINE: Duration = Duration::from_secs(30);

fn sock(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rpc-shm-stream-{name}-{}.sock", std::process::id()))
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {DEADLINE:?}"))
}

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

async fn pair(name: &str, builder: rpc_transport_shm::ShmStreamBuilder) -> (ShmStream, ShmStream) {
    let path = sock(name);
    let mut listener = builder.bind(&path).expect("bind");
    let (client, server) = within("connect", async {
        tokio::join!(builder.connect(&path), listener.accept())
    })
    .await;
    (client.expect("connect"), server.expect("accept"))
}

/// Writes `data` in random chunks (flushing at random points and at the end).
async fn write_chunked(w: &mut (impl AsyncWriteExt + Unpin), data: &[u8], seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut at = 0;
    while at < data.len() {
        let n = match rng.below(4) {
            0 => 1 + rng.below(16),
            1 => 1 + rng.below(4096),
            2 => 1 + rng.below(100_000),
            _ => 1 + rng.below(1 << 20),
        }
        .min(data.len() - at);
        w.write_all(&data[at..at + n]).await.expect("write");
        at += n;
        if rng.below(3) == 0 {
            w.flush().await.expect("flush");
        }
    }
    w.flush().await.expect("flush");
}

async fn read_exactly(r: &mut (impl AsyncReadExt + Unpin), n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut buf = vec![0u8; 1 + rng.below(300_000)];
        let k = r.read(&mut buf).await.expect("read");
        assert!(k > 0, "EOF after {} of {n} bytes", out.len());
        out.extend_from_slice(&buf[..k]);
    }
    out
}

/// Random sizes from 1 B to 4 MiB, both ways at once, random write and read chunking: every
/// byte arrives, in order. Run with the default sizes and with a 64 KiB arena and an 8-slot
/// ring, where the writers wait for the readers (backpressure) many times per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_are_byte_exact_both_ways() {
    for (name, builder) in [
        ("default", ShmStream::builder()),
        (
            "tiny",
            ShmStream::builder()
                .arena_bytes(64 * 1024)
                .ring_slots(8)
                .max_chunk(16 * 1024),
        ),
    ] {
        let (mut a, mut b) = pair(&format!("exact-{name}"), builder).await;
        let mut rng = Rng(0x5eed);
        let mut sizes = vec![1, 2, 120, 121, 1023, 1024, 1025, 4 << 20];
        sizes.extend((0..12).map(|_| 1 + rng.below(4 << 20)));
        for (i, &n) in sizes.iter().enumerate() {
            let ab = rng.bytes(n);
            let ba = rng.bytes(n / 2 + 1);
            let seed = i as u64 * 7919 + 1;
            let (a2, b2) = within("transfer", async {
                let (ra, wa) = tokio::io::split(&mut a);
                let (rb, wb) = tokio::io::split(&mut b);
                let (mut ra, mut wa, mut rb, mut wb) = (ra, wa, rb, wb);
                let ((), (), got_b, got_a) = tokio::join!(
                    write_chunked(&mut wa, &ab, seed),
                    write_chunked(&mut wb, &ba, seed + 1),
                    read_exactly(&mut rb, ab.len(), seed + 2),
                    read_exactly(&mut ra, ba.len(), seed + 3),
                );
                (got_a, got_b)
            })
            .await;
            assert!(b2 == ab, "{name}: {n} bytes a→b differ");
            assert!(a2 == ba, "{name}: {} bytes b→a differ", ba.len());
        }
        // Idle again: every block was returned (the writer's last block only once read).
        within("blocks returned", async {
            while a.arena_in_use() != 0 || b.arena_in_use() != 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
    }
}

/// 100,000 writes of 1–20 bytes with a flush every few hundred: coalesced into blocks, all
/// bytes arrive in order; prints how many bytes each descriptor carried on average.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_writes() {
    let (mut a, mut b) = pair("small", ShmStream::builder()).await;
    let mut rng = Rng(42);
    let msgs: Vec<Vec<u8>> = (0..100_000)
        .map(|_| {
            let n = 1 + rng.below(20);
            rng.bytes(n)
        })
        .collect();
    let expected: Vec<u8> = msgs.concat();
    let started = std::time::Instant::now();
    let got = within("small writes", async {
        let writer = async {
            let mut rng = Rng(7);
            for m in &msgs {
                a.write_all(m).await.expect("write");
                if rng.below(300) == 0 {
                    a.flush().await.expect("flush");
                }
            }
            a.shutdown().await.expect("shutdown");
        };
        let reader = async {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.expect("read");
            got
        };
        tokio::join!(writer, reader).1
    })
    .await;
    println!(
        "many_small_writes: {} writes, {} bytes in {:?}",
        msgs.len(),
        expected.len(),
        started.elapsed()
    );
    assert!(got == expected, "bytes differ");
}

/// A writer that never flushes (as over a socket, where `write_all` alone sends): its bytes
/// still arrive, sent by the stream's own task once the writer yields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unflushed_writes_arrive() {
    let (mut a, mut b) = pair("unflushed", ShmStream::builder()).await;
    within("unflushed bytes", async {
        for i in 0..50u8 {
            a.write_all(&[i; 33]).await.unwrap();
            let mut got = [0u8; 33];
            b.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [i; 33]);
        }
    })
    .await;
}

/// Half-close: the client shuts its side down; the server reads every byte, then EOF, and
/// can still answer; the client reads the answer and then EOF once the server shuts down.
/// Writing after shutdown is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close() {
    let (mut c, mut s) = pair("half", ShmStream::builder()).await;
    within("half close", async {
        c.write_all(b"question").await.unwrap();
        c.shutdown().await.unwrap();
        assert!(c.write_all(b"more").await.is_err(), "write after shutdown");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"question");
        assert_eq!(s.read(&mut [0u8; 8]).await.unwrap(), 0, "EOF stays EOF");
        s.write_all(b"answer").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"answer");
    })
    .await;
}

/// A dropped peer: the other side reads what was sent, then EOF (the drop sends the end
/// marker), and its writes fail once the socket's EOF is seen — within the deadline, never a
/// hang, also for a writer blocked on a full arena.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_peer_is_eof_then_broken_pipe() {
    let (mut c, mut s) = pair(
        "drop",
        ShmStream::builder()
            .arena_bytes(64 * 1024)
            .max_chunk(16 * 1024),
    )
    .await;
    c.write_all(b"last words").await.unwrap();
    drop(c);
    within("EOF after a drop", async {
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
        // Writes: more than the arena holds, so without the peer-gone signal this would block.
        let big = vec![7u8; 1 << 20];
        let err = loop {
            match s.write_all(&big).await.and(s.flush().await) {
                Ok(()) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    })
    .await;

    // A writer already blocked on the full arena when the peer goes.
    let (c, mut s) = pair(
        "drop-blocked",
        ShmStream::builder()
            .arena_bytes(64 * 1024)
            .max_chunk(16 * 1024),
    )
    .await;
    let writer = tokio::spawn(async move {
        let big = vec![7u8; 1 << 20];
        loop {
            if let Err(e) = s.write_all(&big).await.and(s.flush().await) {
                return e;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await; // let it fill the arena (not asserted)
    drop(c);
    let err = within("blocked writer fails", writer).await.unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
}

/// Child side of `killed_peer_is_connection_reset` (run as a separate process: this binary
/// with `SHM_STREAM_CHILD` set; a no-op otherwise).
#[tokio::test]
async fn child_writes_then_waits() {
    let Ok(path) = std::env::var("SHM_STREAM_CHILD") else {
        return;
    };
    let mut s = ShmStream::connect(&path).await.expect("child connect");
    s.write_all(b"from the child").await.unwrap();
    s.flush().await.unwrap();
    // Wait to be killed (the parent's deadline bounds this).
    tokio::time::sleep(DEADLINE).await;
}

/// A peer process killed (no end marker): what it flushed is read, then `ConnectionReset`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_peer_is_connection_reset() {
    let path = sock("killed");
    let mut listener = ShmStreamListener::bind(&path).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writes_then_waits", "--nocapture"])
        .env("SHM_STREAM_CHILD", &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child");
    let mut s = within("child connects", listener.accept()).await.unwrap();
    let mut got = [0u8; 14];
    within("child's bytes", s.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"from the child");
    child.kill().unwrap();
    child.wait().unwrap();
    let err = within("reset after the kill", s.read(&mut [0u8; 16]))
        .await
        .expect_err("a killed peer is not a clean EOF");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

/// A byte-stream client and a byte-stream listener only meet each other: an RPC client
/// (`ShmClient`) is refused by a stream listener, and a stream client by an RPC server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_do_not_mix() {
    use rpc_core::serve::Listener;
    use rpc_transport_shm::ShmProtocol;
    let path = sock("mode-rpc");
    let running = Listener::new(rpc_core::Server::builder().build())
        .protocol(ShmProtocol::default())
        .bind(rpc_core::Address::shm(&path))
        .await
        .unwrap()
        .start();
    let err = within("refused", ShmStream::connect(&path))
        .await
        .expect_err("an RPC server refuses a byte stream");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    running.shutdown(Duration::from_secs(1)).await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Mappings of regions (memfds are named `rpc-shm`).
fn region_maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().filter(|l| l.contains("memfd:rpc-shm")).count())
        .unwrap_or(0)
}

/// Dropped streams and listeners release every descriptor and mapping: 20 streams opened,
/// used and dropped (alternating which side drops first), then the counts are back to the
/// baseline. Runs in a child process of its own, so the other tests' streams do not count.
#[test]
fn no_leaks() {
    if std::env::var("SHM_STREAM_LEAKS").is_err() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "no_leaks", "--nocapture", "--test-threads=1"])
            .env("SHM_STREAM_LEAKS", "1")
            .status()
            .expect("run the leak check");
        assert!(status.success(), "leak check failed");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (fds, maps) = (open_fds(), region_maps());
        let path = sock("leaks");
        let mut listener = ShmStreamListener::bind(&path).unwrap();
        for i in 0..20 {
            let (c, s) = tokio::join!(ShmStream::connect(&path), listener.accept());
            let (mut c, mut s) = (c.unwrap(), s.unwrap());
            c.write_all(&vec![i as u8; 100_000]).await.unwrap();
            c.flush().await.unwrap();
            let mut got = vec![0u8; 100_000];
            s.read_exact(&mut got).await.unwrap();
            if i == 0 {
                // The counts see a live stream (so their return to the baseline means something).
                assert!(region_maps() >= maps + 2 && open_fds() > fds);
            }
            if i % 2 == 0 {
                drop(c);
                drop(s);
            } else {
                drop(s);
                drop(c);
            }
        }
        within("region budget released", async {
            while listener.region_bytes() != 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        drop(listener);
        within("descriptors and mappings released", async {
            loop {
                let (f, m) = (open_fds(), region_maps());
                if f <= fds && m <= maps {
                    println!(
                        "no_leaks: fds {f} (baseline {fds}), region mappings {m} (baseline {maps})"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any sequence of writes (sizes up to 100 KB, each followed by a flush or not), read
    /// with any read sizes, through a 64 KiB arena and an 8-slot ring: the bytes arrive
    /// exactly, and the end marker after them.
    #[test]
    fn any_writes_any_reads(
        writes in proptest::collection::vec((1usize..100_000, any::<bool>()), 1..30),
        reads in proptest::collection::vec(1usize..150_000, 1..10),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (sent, got) = rt.block_on(async {
            let builder = ShmStream::builder()
                .arena_bytes(64 * 1024)
                .ring_slots(8)
                .max_chunk(16 * 1024);
            let (mut a, mut b) = pair("prop", builder).await;
            let mut rng = Rng(writes.len() as u64 * 31 + 7);
            let data: Vec<Vec<u8>> = writes.iter().map(|&(n, _)| rng.bytes(n)).collect();
            within("proptest case", async {
                let writer = async {
                    for (d, &(_, flush)) in data.iter().zip(&writes) {
                        a.write_all(d).await.unwrap();
                        if flush {
                            a.flush().await.unwrap();
                        }
                    }
                    a.shutdown().await.unwrap();
                };
                let reader = async {
                    let mut got = Vec::new();
                    for i in 0.. {
                        let mut buf = vec![0u8; reads[i % reads.len()]];
                        let n = b.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    got
                };
                let ((), got) = tokio::join!(writer, reader);
                (data.concat(), got)
            })
            .await
        });
        prop_assert!(sent == got, "{} bytes sent, {} received", sent.len(), got.len());
    }
}
