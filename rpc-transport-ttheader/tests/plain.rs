//! Plain Thrift (no TTHeader) on the TTHeader port, driven byte by byte by a hand-rolled
//! Apache-Thrift-style peer: framed and buffered, strict and non-strict envelopes; unary
//! served in the request's framing with its seqid, unknown and streaming methods answered with
//! an exception on a connection that stays usable, limits applied, and the knob that turns it
//! off.

mod support;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rpc_core::codec::{encode_to_bytes, Codec};
use rpc_core::ThriftCodec;
use rpc_transport_ttheader::proto::{ApplicationException, MessageHeaderRef, MessageType};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Wire {
    Framed,
    Buffered,
}

/// An Apache Thrift client's view of one connection.
struct Client {
    sock: TcpStream,
    wire: Wire,
    strict: bool,
    buf: BytesMut,
}

/// One reply: envelope and body.
#[derive(Debug)]
struct Reply {
    name: String,
    kind: MessageType,
    seq: i32,
    body: Bytes,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr, wire: Wire, strict: bool) -> Client {
        Client {
            sock: TcpStream::connect(addr).await.unwrap(),
            wire,
            strict,
            buf: BytesMut::new(),
        }
    }

    fn message(&self, name: &str, kind: MessageType, seq: i32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        if self.strict {
            MessageHeaderRef {
                name,
                kind,
                seq_id: seq,
            }
            .encode(&mut m)
            .unwrap();
        } else {
            m.put_i32(name.len() as i32);
            m.put_slice(name.as_bytes());
            m.put_u8(kind.as_u8());
            m.put_i32(seq);
        }
        m.extend_from_slice(body);
        if self.wire == Wire::Framed {
            let mut f = (m.len() as u32).to_be_bytes().to_vec();
            f.extend(m);
            return f;
        }
        m
    }

    /// Sends a call in pieces of `chunk` bytes, each flushed on its own.
    async fn call_chunked(&mut self, name: &str, seq: i32, body: &[u8], chunk: usize) {
        let m = self.message(name, MessageType::Call, seq, body);
        for piece in m.chunks(chunk) {
            self.sock.write_all(piece).await.unwrap();
            self.sock.flush().await.unwrap();
        }
    }

    async fn call(&mut self, name: &str, seq: i32, body: &[u8]) {
        self.call_chunked(name, seq, body, usize::MAX).await;
    }

    /// The next reply, read as its framing says (buffered: the envelope and the exact struct
    /// we expect, so any extra byte would show up in the next reply).
    async fn reply(&mut self) -> Reply {
        within(async {
            loop {
                if let Some(r) = self.parse() {
                    return r;
                }
                let n = self.sock.read_buf(&mut self.buf).await.unwrap();
                assert!(n > 0, "connection closed");
            }
        })
        .await
    }

    fn parse(&mut self) -> Option<Reply> {
        let msg: Bytes = match self.wire {
            Wire::Framed => {
                let len = u32::from_be_bytes(self.buf.get(..4)?.try_into().unwrap()) as usize;
                if self.buf.len() < 4 + len {
                    return None;
                }
                let _ = self.buf.split_to(4);
                self.buf.split_to(len).freeze()
            }
            Wire::Buffered => {
                // Replies are strict; their body is a struct our decoders can delimit.
                let mut d = rpc_transport_ttheader::proto::PlainDecoder::new(
                    rpc_transport_ttheader::proto::PlainFraming::Buffered,
                    1 << 20,
                );
                let mut probe = self.buf.clone();
                let m = d.decode(&mut probe).unwrap()?;
                let _ = self.buf.split_to(m.len());
                m
            }
        };
        let (h, used) = MessageHeaderRef::decode(&msg).expect("strict reply envelope");
        Some(Reply {
            name: h.name.to_owned(),
            kind: h.kind,
            seq: h.seq_id,
            body: msg.slice(used..),
        })
    }

    /// Whether the server closed the connection (read returns 0) within the step bound.
    async fn closed(&mut self) -> bool {
        within(async {
            loop {
                match self.sock.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        })
        .await
    }
}

fn request(text: &str, n: i64) -> Bytes {
    encode_to_bytes::<ThriftCodec, TMsg>(&msg(text, n)).unwrap()
}

fn exception(r: &Reply) -> ApplicationException {
    assert_eq!(r.kind, MessageType::Exception, "{r:?}");
    ApplicationException::decode(&r.body).unwrap().0
}

async fn serve(limits: rpc_transport_ttheader::Limits) -> Served {
    let (server, _probe) = server();
    serve_tcp(server, "127.0.0.1:0".parse().unwrap(), limits)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingpong_unknown_and_streaming_methods_in_every_framing() {
    let h = serve(rpc_transport_ttheader::Limits::default()).await;
    let addr = h.local_addr().unwrap();
    for wire in [Wire::Framed, Wire::Buffered] {
        for strict in [true, false] {
            let what = format!("{wire:?} strict={strict}");
            let mut c = Client::connect(addr, wire, strict).await;
            // A unary call, byte by byte: the reply carries its seqid and the echo.
            c.call_chunked("Echo", 77, &request("hi", 5), 1).await;
            let r = c.reply().await;
            assert_eq!(
                (r.name.as_str(), r.kind, r.seq),
                ("Echo", MessageType::Reply, 77),
                "{what}"
            );
            let echoed: TMsg = <ThriftCodec as Codec<TMsg>>::decode(r.body).unwrap();
            assert_eq!((echoed.text(), echoed.n()), ("hi", 5), "{what}");
            // Seqid 0 (volo's first) and negative ones are echoed as they are.
            for seq in [0, -3] {
                c.call("Echo", seq, &request("x", 1)).await;
                assert_eq!(c.reply().await.seq, seq, "{what}");
            }
            // An unknown method: UNKNOWN_METHOD, never a silent close.
            c.call("Nope", 78, &request("x", 1)).await;
            let r = c.reply().await;
            assert_eq!((r.name.as_str(), r.seq), ("Nope", 78), "{what}");
            let e = exception(&r);
            assert_eq!(
                e.kind,
                ApplicationException::UNKNOWN_METHOD,
                "{what}: {e:?}"
            );
            // A streaming method: an exception that says it needs TTHeader Streaming.
            c.call("Chat", 79, &request("x", 1)).await;
            let r = c.reply().await;
            assert_eq!((r.name.as_str(), r.seq), ("Chat", 79), "{what}");
            let e = exception(&r);
            assert_eq!(e.kind, ApplicationException::INVALID_PROTOCOL, "{what}");
            assert!(
                e.message.contains("streaming method") && e.message.contains("TTHeader Streaming"),
                "{what}: {e:?}"
            );
            // A handler error is an exception too; then the connection still serves.
            c.call("Echo", 80, &request("fail", 1)).await;
            let r = c.reply().await;
            assert_eq!(r.seq, 80);
            assert_eq!(exception(&r).message, "no such thing", "{what}");
            c.call("Echo", 81, &request("after", 2)).await;
            assert_eq!(c.reply().await.kind, MessageType::Reply, "{what}");
        }
    }
    h.shutdown(Duration::from_secs(1)).await;
}

/// Apache Thrift's TMultiplexedProtocol names the method `Service:method`: routed to that
/// service; the reply names the method alone, as Apache's multiplexed processor does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_names_route_by_service() {
    let h = serve(rpc_transport_ttheader::Limits::default()).await;
    let mut c = Client::connect(h.local_addr().unwrap(), Wire::Buffered, true).await;
    c.call("ThTest:Echo", 1, &request("m", 3)).await;
    let r = c.reply().await;
    assert_eq!((r.name.as_str(), r.kind), ("Echo", MessageType::Reply));
    c.call("NoSuchService:Echo", 2, &request("m", 3)).await;
    let e = exception(&c.reply().await);
    assert_eq!(e.kind, ApplicationException::UNKNOWN_SERVICE);
    h.shutdown(Duration::from_secs(1)).await;
}

/// Business status has no header to travel in: a plain client gets an exception naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn biz_status_becomes_an_exception() {
    let h = serve(rpc_transport_ttheader::Limits::default()).await;
    let mut c = Client::connect(h.local_addr().unwrap(), Wire::Framed, true).await;
    c.call("Echo", 4, &request("biz", 0)).await;
    let e = exception(&c.reply().await);
    assert_eq!(e.kind, ApplicationException::INTERNAL_ERROR);
    assert!(
        e.message.contains("4001") && e.message.contains("insufficient balance"),
        "{e:?}"
    );
    h.shutdown(Duration::from_secs(1)).await;
}

/// The frame size limit applies: a framed length over it, and a buffered message growing past
/// it, close the connection before the bytes are held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_close_the_connection() {
    let limits = rpc_transport_ttheader::Limits::default().max_frame_size(4096);
    let h = serve(limits).await;
    let addr = h.local_addr().unwrap();
    let big = request(&"x".repeat(8192), 1);
    for wire in [Wire::Framed, Wire::Buffered] {
        let mut c = Client::connect(addr, wire, true).await;
        // Under the limit: served.
        c.call("Echo", 1, &request("small", 1)).await;
        assert_eq!(c.reply().await.kind, MessageType::Reply, "{wire:?}");
        // Only the head of the big one goes out: the announced length is enough to refuse it.
        let m = c.message("Echo", MessageType::Call, 2, &big);
        c.sock.write_all(&m[..64]).await.unwrap();
        assert!(c.closed().await, "{wire:?}");
    }
    h.shutdown(Duration::from_secs(1)).await;
}

/// A half-sent message is bounded by the frame timeout like a TTHeader frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_message_is_bounded_by_the_frame_timeout() {
    let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
    let server = rpc_core::Server::builder()
        .limits(rpc_core::ServerLimits::default().frame_timeout(Duration::from_millis(200)))
        .add_service(ThService::new(tx, Gate::default()))
        .build();
    let h = serve_tcp(
        server,
        "127.0.0.1:0".parse().unwrap(),
        rpc_transport_ttheader::Limits::default(),
    )
    .await
    .unwrap();
    for wire in [Wire::Framed, Wire::Buffered] {
        let mut c = Client::connect(h.local_addr().unwrap(), wire, true).await;
        let m = c.message("Echo", MessageType::Call, 1, &request("stall", 1));
        c.sock.write_all(&m[..m.len() - 1]).await.unwrap();
        assert!(c.closed().await, "{wire:?}");
    }
    h.shutdown(Duration::from_secs(1)).await;
}

/// With plain Thrift turned off the port is TTHeader only: such a connection is not claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_thrift_can_be_turned_off() {
    let (server, _probe) = server();
    let running = rpc_core::serve::Listener::new(server)
        .protocol(rpc_transport_ttheader::TtHeaderProtocol::default().plain_thrift(false))
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .start();
    let addr = running.local_addrs()[0].socket_addr().unwrap();
    let mut c = Client::connect(addr, Wire::Framed, true).await;
    c.call("Echo", 1, &request("x", 1)).await;
    assert!(c.closed().await);
    running.shutdown(Duration::from_secs(1)).await;
}
