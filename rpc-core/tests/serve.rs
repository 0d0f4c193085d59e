//! The serving layer over real sockets: protocol detection, the connection cap, the preface
//! timeout and graceful shutdown, with toy protocols that announce themselves and echo.
//!
//! Every wait is on an event with a bounded timeout as the failure; the only fixed waits are
//! the bounded negative checks ("nothing arrives within 300 ms").

use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_core::net::Address;
use rpc_core::serve::{Accepted, Detect, Listener, Protocol, Running};
use rpc_core::transport::BoxFuture;
use rpc_core::{Server, ServerLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The failure bound of every positive wait.
const WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Eq)]
enum OnShutdown {
    /// On drain, says `draining`; closes when the client says `bye` or at `closed()`.
    Polite,
    /// Ignores every shutdown signal.
    Stubborn,
    /// Hands the socket to a task of its own that ignores shutdown, and returns at once.
    Detached,
}

/// A toy protocol: claims connections starting with `preface`, answers `name\n`, then echoes.
#[derive(Clone)]
struct Toy {
    name: &'static str,
    preface: &'static [u8],
    on_shutdown: OnShutdown,
    /// Prefix lengths `detect` was asked about, in order.
    seen: Arc<watch::Sender<Vec<usize>>>,
}

impl Toy {
    fn new(name: &'static str, preface: &'static [u8]) -> Toy {
        Toy {
            name,
            preface,
            on_shutdown: OnShutdown::Polite,
            seen: Arc::new(watch::channel(Vec::new()).0),
        }
    }

    fn on_shutdown(mut self, mode: OnShutdown) -> Toy {
        self.on_shutdown = mode;
        self
    }
}

impl Protocol for Toy {
    fn name(&self) -> &'static str {
        self.name
    }

    fn detect(&self, prefix: &[u8]) -> Detect {
        self.seen.send_modify(|s| s.push(prefix.len()));
        let n = prefix.len().min(self.preface.len());
        if prefix[..n] != self.preface[..n] {
            Detect::No
        } else if n == self.preface.len() {
            Detect::Yes
        } else {
            Detect::NeedMore
        }
    }

    fn serve(&self, conn: Accepted) -> BoxFuture<'static, ()> {
        let (name, skip, mode) = (self.name, self.preface.len(), self.on_shutdown);
        let work = async move {
            let Accepted {
                mut io,
                prefix,
                shutdown,
                ..
            } = conn;
            let mut reply = format!("{name}\n").into_bytes();
            reply.extend_from_slice(&prefix[skip..]);
            if io.write_all(&reply).await.is_err() {
                return;
            }
            let mut buf = [0u8; 256];
            let mut told = false;
            loop {
                tokio::select! {
                    r = io.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) if &buf[..n] == b"bye" => return,
                        Ok(n) => if io.write_all(&buf[..n]).await.is_err() { return },
                    },
                    () = shutdown.draining(), if mode == OnShutdown::Polite && !told => {
                        told = true;
                        if io.write_all(b"draining\n").await.is_err() { return }
                    }
                    () = shutdown.closed(), if mode == OnShutdown::Polite => return,
                }
            }
        };
        if mode == OnShutdown::Detached {
            tokio::spawn(work);
            Box::pin(async {})
        } else {
            Box::pin(work)
        }
    }
}

fn server(limits: ServerLimits) -> Server {
    Server::builder().limits(limits).build()
}

async fn start(limits: ServerLimits, protocols: Vec<Toy>) -> (Running, std::net::SocketAddr) {
    let mut l = Listener::new(server(limits));
    for p in protocols {
        l = l.protocol(p);
    }
    let running = l
        .bind("tcp://127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind")
        .start();
    let addr = running.local_addrs()[0]
        .socket_addr()
        .expect("an IP address");
    assert_ne!(addr.port(), 0, "the bound port is reported");
    (running, addr)
}

/// Reads exactly `want.len()` bytes and compares.
async fn expect(s: &mut TcpStream, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| panic!("no {:?} within {WAIT:?}", String::from_utf8_lossy(want)))
        .expect("read");
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// Waits for the server to close the connection.
async fn expect_closed(s: &mut TcpStream) {
    let mut b = [0u8; 64];
    match tokio::time::timeout(WAIT, s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("expected a close, got {:?}", &b[..n]),
        Err(_) => panic!("not closed within {WAIT:?}"),
    }
}

/// Checks that nothing arrives for a while (a bounded negative check, not synchronisation).
async fn expect_silence(s: &mut TcpStream) {
    let mut b = [0u8; 64];
    if let Ok(r) = tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await {
        panic!("expected silence, got {r:?}");
    }
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

#[tokio::test]
async fn two_protocols_are_told_apart_on_one_port() {
    let (running, addr) = start(
        ServerLimits::default(),
        vec![Toy::new("ping", b"PING"), Toy::new("pong", b"PONG!!")],
    )
    .await;
    let mut a = connect(addr).await;
    a.write_all(b"PINGhello").await.expect("write");
    expect(&mut a, b"ping\nhello").await;
    let mut b = connect(addr).await;
    b.write_all(b"PONG!!").await.expect("write");
    expect(&mut b, b"pong\n").await;
    b.write_all(b"again").await.expect("write");
    expect(&mut b, b"again").await;
    assert_eq!(running.connections(), vec![2]);
    drop((a, b));
    running.shutdown(WAIT).await;
}

#[tokio::test]
async fn need_more_waits_across_small_writes() {
    let long = Toy::new("long", b"LONGPREFACE");
    let seen = long.seen.subscribe();
    let (running, addr) = start(
        ServerLimits::default(),
        vec![Toy::new("short", b"LONGX"), long],
    )
    .await;
    let mut s = connect(addr).await;
    s.set_nodelay(true).expect("nodelay");
    for (i, b) in b"LONGPREFACE".iter().enumerate() {
        s.write_all(&[*b]).await.expect("write");
        if i + 1 < b"LONGPREFACE".len() {
            // Wait until the server has looked at this byte, so each arrives on its own.
            let mut seen = seen.clone();
            tokio::time::timeout(WAIT, seen.wait_for(|v| v.contains(&(i + 1))))
                .await
                .expect("detect ran on the partial preface")
                .expect("protocol alive");
        }
    }
    expect(&mut s, b"long\n").await;
    let lengths = seen.borrow().clone();
    assert!(lengths.contains(&3) && lengths.contains(&7), "{lengths:?}");
    drop(s);
    running.shutdown(WAIT).await;
}

#[tokio::test]
async fn an_unknown_preface_is_closed() {
    let (running, addr) = start(ServerLimits::default(), vec![Toy::new("ping", b"PING")]).await;
    let mut s = connect(addr).await;
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
    expect_closed(&mut s).await;
    // The server still serves others.
    let mut ok = connect(addr).await;
    ok.write_all(b"PING").await.expect("write");
    expect(&mut ok, b"ping\n").await;
    drop(ok);
    running.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_partial_preface_is_cut_off_after_the_frame_timeout() {
    let timeout = Duration::from_millis(200);
    let (running, addr) = start(
        ServerLimits::default().frame_timeout(timeout),
        vec![Toy::new("ping", b"PING")],
    )
    .await;
    let mut s = connect(addr).await;
    let started = Instant::now();
    s.write_all(b"PI").await.expect("write");
    expect_closed(&mut s).await;
    assert!(started.elapsed() >= timeout, "closed before the timeout");
    running.shutdown(WAIT).await;
}

#[tokio::test]
async fn the_connection_cap_holds_new_connections_until_one_closes() {
    let (running, addr) = start(
        ServerLimits::default().max_connections(2),
        vec![Toy::new("ping", b"PING")],
    )
    .await;
    let mut a = connect(addr).await;
    a.write_all(b"PING").await.expect("write");
    expect(&mut a, b"ping\n").await;
    let mut b = connect(addr).await;
    b.write_all(b"PING").await.expect("write");
    expect(&mut b, b"ping\n").await;

    // The third connect completes in the kernel's backlog but is not accepted.
    let mut c = connect(addr).await;
    c.write_all(b"PING").await.expect("write");
    expect_silence(&mut c).await;
    assert_eq!(running.connections(), vec![2]);
    // The two served ones still work.
    a.write_all(b"x").await.expect("write");
    expect(&mut a, b"x").await;
    b.write_all(b"y").await.expect("write");
    expect(&mut b, b"y").await;

    drop(a);
    expect(&mut c, b"ping\n").await;
    drop((b, c));
    running.shutdown(WAIT).await;
}

#[tokio::test]
async fn shutdown_waits_for_the_protocols_drain() {
    let (running, addr) = start(ServerLimits::default(), vec![Toy::new("ping", b"PING")]).await;
    let mut s = connect(addr).await;
    s.write_all(b"PING").await.expect("write");
    expect(&mut s, b"ping\n").await;
    let shutdown = tokio::spawn(running.shutdown(WAIT));
    expect(&mut s, b"draining\n").await;
    // New connections are refused once the accept loop has stopped.
    tokio::time::timeout(WAIT, async {
        while let Ok(mut s) = TcpStream::connect(addr).await {
            // Connected into the backlog just before the listener closed: reset with it.
            expect_closed(&mut s).await;
        }
    })
    .await
    .expect("the listener closes");
    // The drain is not over until the client says goodbye.
    assert!(!shutdown.is_finished());
    s.write_all(b"bye").await.expect("write");
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown ends once the connection drained")
        .expect("no panic");
    expect_closed(&mut s).await;
}

#[tokio::test]
async fn shutdown_closes_what_is_left_after_the_grace_period() {
    let grace = Duration::from_millis(200);
    let (running, addr) = start(ServerLimits::default(), vec![Toy::new("ping", b"PING")]).await;
    let mut s = connect(addr).await;
    s.write_all(b"PING").await.expect("write");
    expect(&mut s, b"ping\n").await;
    let started = Instant::now();
    let shutdown = tokio::spawn(running.shutdown(grace));
    expect(&mut s, b"draining\n").await;
    expect_closed(&mut s).await;
    assert!(started.elapsed() >= grace, "closed before the grace period");
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown ends")
        .expect("no panic");
}

#[tokio::test]
async fn shutdown_aborts_a_protocol_that_ignores_it() {
    shutdown_closes_sockets_left_open(OnShutdown::Stubborn).await;
}

#[tokio::test]
async fn shutdown_closes_sockets_a_protocol_task_keeps() {
    shutdown_closes_sockets_left_open(OnShutdown::Detached).await;
}

async fn shutdown_closes_sockets_left_open(mode: OnShutdown) {
    let (running, addr) = start(
        ServerLimits::default(),
        vec![Toy::new("ping", b"PING").on_shutdown(mode)],
    )
    .await;
    let mut s = connect(addr).await;
    s.write_all(b"PING").await.expect("write");
    expect(&mut s, b"ping\n").await;
    let grace = Duration::from_millis(100);
    tokio::time::timeout(WAIT, running.shutdown(grace))
        .await
        .expect("shutdown ends even if a protocol ignores it");
    expect_closed(&mut s).await;
}

#[tokio::test]
async fn unix_listeners_serve_and_remove_their_socket_file() {
    let path = std::env::temp_dir().join(format!("rpc-core-serve-{}.sock", std::process::id()));
    let running = Listener::new(server(ServerLimits::default()))
        .protocol(Toy::new("ping", b"PING"))
        .bind(Address::unix(&path))
        .await
        .expect("bind")
        .start();
    assert_eq!(running.local_addrs(), vec![Address::unix(&path)]);
    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    s.write_all(b"PINGu").await.expect("write");
    let mut got = [0u8; 6];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .expect("reply in time")
        .expect("read");
    assert_eq!(&got, b"ping\nu");
    drop(s);

    // A second server at the same path is refused while this one listens: replacing the
    // socket file would steal this server's new clients while it keeps running.
    let second = Listener::new(server(ServerLimits::default()))
        .protocol(Toy::new("ping", b"PING"))
        .bind(Address::unix(&path))
        .await
        .expect_err("a live server's socket is kept");
    assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        second.to_string().contains("a server is listening"),
        "{second}"
    );
    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .expect("the first server still owns the path");
    s.write_all(b"PINGv").await.expect("write");
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .expect("reply in time")
        .expect("read");
    assert_eq!(&got, b"ping\nv");
    drop(s);

    running.shutdown(WAIT).await;
    assert!(!path.exists(), "socket file removed");

    // A socket file left by a server that is gone (no shutdown ran) is stale and replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind a stale file"));
    let again = Listener::new(server(ServerLimits::default()))
        .protocol(Toy::new("ping", b"PING"))
        .bind(Address::unix(&path))
        .await
        .expect("a stale socket file is replaced")
        .start();
    again.shutdown(WAIT).await;
    assert!(!path.exists(), "socket file removed");
}

#[tokio::test]
async fn bind_errors_say_what_is_wrong() {
    let l = || Listener::new(server(ServerLimits::default()));
    // shm:// binds a Unix socket for the shared-memory handshake and keeps its scheme.
    let shm_path = std::env::temp_dir().join(format!("rpc-core-serve-{}.shm", std::process::id()));
    let shm = l()
        .bind(
            format!("shm://{}", shm_path.display())
                .parse()
                .expect("address"),
        )
        .await
        .expect("shm:// binds a control socket");
    assert_eq!(shm.local_addrs()[0].scheme(), "shm");
    let running = shm.start();
    assert!(shm_path.exists());
    running.shutdown(WAIT).await;
    assert!(!shm_path.exists(), "control socket removed");

    let file = std::env::temp_dir().join(format!("rpc-core-serve-{}.txt", std::process::id()));
    std::fs::write(&file, b"not a socket").expect("write");
    let in_way = l()
        .bind(Address::unix(&file))
        .await
        .expect_err("a regular file is kept");
    assert_eq!(in_way.kind(), std::io::ErrorKind::AddrInUse);
    assert!(in_way.to_string().contains("unix://"), "{in_way}");
    assert!(file.exists());
    let _ = std::fs::remove_file(&file);

    let taken = l()
        .bind("tcp://127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind");
    let busy = taken.local_addrs()[0].clone();
    let twice = l().bind(busy).await.expect_err("port in use");
    assert_eq!(twice.kind(), std::io::ErrorKind::AddrInUse);
}

/// A hot restart in one process: the first listener pauses and hands out its sockets, a second
/// one serves them; connects made while paused wait in the backlog and reach the second.
#[tokio::test]
async fn paused_sockets_are_served_by_the_listener_that_inherits_them() {
    let path = std::env::temp_dir().join(format!("rpc-core-handover-{}.sock", std::process::id()));
    let old = Listener::new(server(ServerLimits::default()))
        .protocol(Toy::new("old", b"PING"))
        .bind(Address::unix(&path))
        .await
        .expect("bind")
        .bind("tcp://127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind")
        .start();
    let tcp = old.local_addrs()[1].socket_addr().expect("an IP address");
    let control = old.accept_control();
    let sockets = control.pause().expect("pause");
    assert!(control.is_paused());
    assert_eq!(
        sockets.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>(),
        old.local_addrs()
    );
    // Paused: a connect is queued, not refused, and nobody answers it yet.
    let mut waiting = connect(tcp).await;
    waiting.write_all(b"PING").await.expect("write");
    expect_silence(&mut waiting).await;
    // A wrong kind of socket for the address is an error, not a panic.
    let mismatched = sockets[1].1.try_clone().expect("dup");
    let e = Listener::new(server(ServerLimits::default()))
        .bind_inherited(Address::unix(&path), mismatched)
        .expect_err("a TCP socket is not a Unix one");
    assert!(e.to_string().contains("adopt"), "{e}");
    let mut new = Listener::new(server(ServerLimits::default())).protocol(Toy::new("new", b"PING"));
    for (addr, fd) in sockets {
        new = new.bind_inherited(addr, fd).expect("inherit");
    }
    let new = new.start();
    assert_eq!(new.local_addrs(), old.local_addrs());
    expect(&mut waiting, b"new\n").await;
    // The old listener's shutdown leaves the socket file to the new one.
    old.shutdown(WAIT).await;
    assert!(path.exists(), "the socket file is the new listener's");
    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    s.write_all(b"PINGu").await.expect("write");
    let mut got = [0u8; 5];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .expect("reply in time")
        .expect("read");
    assert_eq!(&got, b"new\nu");
    drop((s, waiting));
    new.shutdown(WAIT).await;
    assert!(!path.exists(), "socket file removed");
}

/// A pause undone: the listener accepts again, and its shutdown removes its socket file.
#[tokio::test]
async fn a_resumed_listener_accepts_again() {
    let (running, addr) = start(ServerLimits::default(), vec![Toy::new("ping", b"PING")]).await;
    let control = running.accept_control();
    drop(control.pause().expect("pause"));
    let mut s = connect(addr).await;
    s.write_all(b"PING").await.expect("write");
    expect_silence(&mut s).await;
    control.resume();
    expect(&mut s, b"ping\n").await;
    drop(s);
    running.shutdown(WAIT).await;
    assert!(
        control.pause().is_err(),
        "nothing to hand out after shutdown"
    );
}
