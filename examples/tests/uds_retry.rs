//! When a TTHeader client sends a call again on another connection, and when it must not:
//! the rules the hot restart over Unix sockets relies on (`hot_restart_uds.rs`), each shown
//! against a peer that misbehaves on purpose. The peer is a socket in front of real servers:
//! per accepted connection it either closes without reading (the request stays unread: Linux
//! resets the client's read), reads and closes (the server may have acted on the request),
//! or forwards the connection's bytes to a real server.
#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::idl::{Proto, Thrift};
use examples::{EchoIdl, EchoRequest};
use rpc_core::serve::{Listener, Running};
use rpc_core::{Address, CallOptions, Client};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};
use tokio::io::AsyncReadExt;

const WAIT: Duration = Duration::from_secs(10);

/// What the peer does with its n-th accepted connection.
#[derive(Clone)]
enum Then {
    /// Waits until the request is there, then closes without reading it.
    CloseUnread,
    /// Reads what arrives first, then closes.
    ReadAndClose,
    /// Forwards both directions to the server at this path.
    Forward(PathBuf),
}

fn sock_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rpc-uds-retry-{tag}-{}.sock", std::process::id()))
}

/// A real echo server (both IDLs) for TTHeader on a Unix socket.
async fn serve(tag: &str) -> (Running, PathBuf) {
    let path = sock_path(tag);
    let _ = std::fs::remove_file(&path);
    let running = Listener::new(examples::server())
        .protocol(TtHeaderProtocol::default())
        .bind(Address::Unix(path.clone()))
        .await
        .unwrap()
        .start();
    (running, path)
}

/// Serves one accepted connection (a tokio Unix or TCP stream) as `then` says.
macro_rules! serve_conn {
    ($sock:ident, $then:expr) => {
        tokio::spawn(async move {
            let mut sock = $sock;
            match $then {
                Then::CloseUnread => {
                    // The request is in the socket: closing now leaves it unread.
                    let _ = sock.readable().await;
                    drop(sock);
                }
                Then::ReadAndClose => {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                }
                Then::Forward(path) => {
                    let mut up = tokio::net::UnixStream::connect(&path).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
                }
            }
        })
    };
}

/// Accepts on `listener` until it fails; connection n gets `plan[n]` (the last entry for the
/// rest). Evaluates to the count of connections accepted.
macro_rules! accept_loop {
    ($listener:ident, $plan:ident) => {{
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = $listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let then = $plan[n.min($plan.len() - 1)].clone();
                serve_conn!(sock, then);
            }
        });
        accepted
    }};
}

/// The misbehaving peer on a Unix socket: connection n gets `plan[n]` (the last entry for
/// the rest). Returns its address and the count of connections it accepted.
fn unix_peer(tag: &str, plan: Vec<Then>) -> (Address, Arc<AtomicUsize>) {
    let path = sock_path(tag);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let accepted = accept_loop!(listener, plan);
    (Address::Unix(path), accepted)
}

/// The same peer over TCP.
async fn tcp_peer(plan: Vec<Then>) -> (Address, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = Address::from(listener.local_addr().unwrap());
    let accepted = accept_loop!(listener, plan);
    (addr, accepted)
}

async fn ping<I: EchoIdl>(addr: &Address) -> Result<(), String> {
    let c = I::client(Client::new(TtHeaderClient::new(addr.clone())));
    ping_with::<I>(&c).await
}

async fn ping_with<I: EchoIdl>(c: &I::Client) -> Result<(), String> {
    let req = EchoRequest {
        message: "ping".into(),
        ..EchoRequest::default()
    };
    match tokio::time::timeout(WAIT, I::ping_pong(c, req, CallOptions::new())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(_) => Err("timed out".into()),
    }
}

/// Pooled TTHeader unary over a Unix socket: the server closed with the request unread (the
/// client's read is reset), so it cannot have served it: sent again on a new connection.
#[tokio::test]
async fn unary_request_left_unread_is_sent_again() {
    let (_server, real) = serve("u1-real").await;
    let (addr, accepted) = unix_peer("u1", vec![Then::CloseUnread, Then::Forward(real)]);
    ping::<Thrift>(&addr).await.expect("sent again");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A server that read the request and then closed may have acted on it: the call fails,
/// and is not sent again.
#[tokio::test]
async fn unary_request_read_then_closed_is_not_sent_again() {
    let (_server, real) = serve("u2-real").await;
    let (addr, accepted) = unix_peer("u2", vec![Then::ReadAndClose, Then::Forward(real)]);
    let e = ping::<Thrift>(&addr).await.expect_err("not sent again");
    assert!(e.contains("Unavailable"), "{e}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// Over TCP a reset proves nothing (an abortive close, a middlebox): never sent again.
#[tokio::test]
async fn unary_reset_over_tcp_is_not_sent_again() {
    let (addr, accepted) = tcp_peer(vec![Then::CloseUnread]).await;
    let e = ping::<Thrift>(&addr).await.expect_err("not sent again");
    assert!(e.contains("Unavailable"), "{e}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// TTHeader Streaming over a Unix socket: a server that drains refuses new streams marked
/// unprocessed; the call is opened again on a new connection, and the client closes the
/// refused connection (the draining server's shutdown ends well before its grace period).
#[tokio::test]
async fn ttstream_refused_while_draining_is_opened_again() {
    let (old, old_path) = serve("s1-old").await;
    let (_new, new_path) = serve("s1-new").await;
    let (addr, accepted) = unix_peer("s1", vec![Then::Forward(old_path), Then::Forward(new_path)]);
    let c = Proto::client(Client::new(
        TtHeaderClient::builder(addr.clone()).pool_size(1).build(),
    ));
    ping_with::<Proto>(&c)
        .await
        .expect("first call, on the old server");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let draining = old.shutdown_signal();
    let grace = Duration::from_secs(5);
    let started = Instant::now();
    let shutdown = tokio::spawn(old.shutdown(grace));
    tokio::time::timeout(WAIT, draining.draining())
        .await
        .expect("the drain begins");
    ping_with::<Proto>(&c)
        .await
        .expect("refused by the old server, opened again on the new one");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("the old server shuts down")
        .unwrap();
    assert!(
        started.elapsed() < grace,
        "the client closed the refused connection: {:?}",
        started.elapsed()
    );
}

/// A refusal that is not marked unprocessed (any other server error) is the call's end.
#[tokio::test]
async fn ttstream_unmarked_failure_is_not_opened_again() {
    let (_server, real) = serve("s2-real").await;
    let (addr, accepted) = unix_peer("s2", vec![Then::ReadAndClose, Then::Forward(real)]);
    let e = ping::<Proto>(&addr).await.expect_err("not opened again");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "{e}");
}
