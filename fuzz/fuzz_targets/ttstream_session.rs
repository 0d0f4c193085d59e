//! The ttstream server session (`rpc_transport_ttheader::session::Session`, the connection
//! state machine shared by the socket and shared-memory transports) driven by arbitrary
//! sequences of frames — well-formed ones for a small set of stream ids and methods, raw
//! bytes, frames delivered whole (the shared-memory path) — interleaved with handlers running,
//! time passing, the client reading what the server wrote, drain and connection loss. The
//! server is real: an echo service (bidi, pingpong, and a bidi handler that never reads) on
//! a paused tokio clock.
//!
//! Asserts, beyond "no panic":
//! - the stream table never holds more than `max_concurrent_streams`;
//! - everything the session writes decodes as whole, valid frames; the server never sends
//!   Rst, and never sends Data or Trailer on a stream before its Header;
//! - nothing is written after the connection was lost;
//! - no leak: after the connection is lost and the handlers' grace has passed, no stream,
//!   connection, buffered byte or server-budget byte is left counted.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rpc_core::transport::{BoxFuture, ServerExt};
use rpc_core::{
    MethodDesc, Mode, PayloadKind, ProstCodec, Server, IncomingCall, ServerLimits, Service,
    ServiceDesc, Status,
};
use rpc_fuzz::MemSink;
use rpc_transport_ttheader::proto::{
    ApplicationException, FrameKind, Limits as ProtoLimits, Role, StreamFrame, StreamProtocol,
};
use rpc_transport_ttheader::session::Session;
use rpc_transport_ttheader::{Limits, Stats};

const MAX_STREAMS: usize = 4;

static METHODS: [MethodDesc; 3] = [
    MethodDesc {
        package: "t",
        service: "Echo",
        full_service: "t.Echo",
        name: "Chat",
        path: "/t.Echo/Chat",
        mode: Mode::Bidi,
        payload: PayloadKind::Protobuf,
    },
    MethodDesc {
        package: "t",
        service: "Echo",
        full_service: "t.Echo",
        name: "Ping",
        path: "/t.Echo/Ping",
        mode: Mode::Unary,
        payload: PayloadKind::Protobuf,
    },
    MethodDesc {
        package: "t",
        service: "Echo",
        full_service: "t.Echo",
        name: "Deaf",
        path: "/t.Echo/Deaf",
        mode: Mode::Bidi,
        payload: PayloadKind::Protobuf,
    },
];
static DESC: ServiceDesc = ServiceDesc {
    package: "t",
    name: "Echo",
    full_name: "t.Echo",
    methods: &METHODS,
};

struct Echo;

impl Service for Echo {
    fn descriptor(&self) -> &'static ServiceDesc {
        &DESC
    }

    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        match call.method_index() {
            0 => Box::pin(call.bidi::<ProstCodec, String, String, _, _>(
                |_ctx, mut stream| async move {
                    while let Some(m) = stream.recv().await? {
                        stream.send(m).await?;
                    }
                    Ok(())
                },
            )),
            1 => Box::pin(
                call.unary::<ProstCodec, String, String, _, _>(|_ctx, m| async move { Ok(m) }),
            ),
            _ => Box::pin(call.bidi::<ProstCodec, String, String, _, _>(
                |ctx, _stream| async move { Err(ctx.cancelled().await) },
            )),
        }
    }
}

const IDS: [i32; 6] = [1, 2, 3, 5, -1, i32::MAX];
const NAMES: [&str; 5] = ["Chat", "Ping", "Deaf", "", "Nope"];

/// A frame a client could send, chosen by the input.
fn frame(u: &mut Unstructured<'_>) -> Result<StreamFrame> {
    let id = if u.ratio(1, 16)? {
        u.arbitrary()?
    } else {
        *u.choose(&IDS)?
    };
    let method = *u.choose(&NAMES)?;
    let protocol = if u.ratio(1, 8)? {
        StreamProtocol::Thrift
    } else {
        StreamProtocol::Protobuf
    };
    Ok(match u.int_in_range(0..=5u8)? {
        0 => {
            let service = if u.ratio(1, 8)? {
                "other.Svc"
            } else {
                "t.Echo"
            };
            let timeout = if u.ratio(1, 4)? {
                Some(u.int_in_range(0..=2000u64)?)
            } else {
                None
            };
            let md = if u.ratio(1, 8)? {
                vec![(String::from("k"), String::from(u.arbitrary::<&str>()?))]
            } else {
                Vec::new()
            };
            StreamFrame::client_header(id, method, protocol, service, md, timeout)
        }
        1 | 2 => {
            let payload = if u.ratio(1, 8)? {
                Bytes::copy_from_slice(u.arbitrary::<&[u8]>()?)
            } else {
                // A protobuf `string` message: field 1, length, bytes.
                let n = u.int_in_range(0..=40)?;
                let text: &[u8] = u.bytes(n)?;
                let mut b = vec![0x0a, text.len() as u8];
                b.extend_from_slice(text);
                Bytes::from(b)
            };
            StreamFrame::data(id, method, protocol, payload)
        }
        3 => StreamFrame::close_send(id, method, protocol),
        4 => {
            let exc = ApplicationException::new(u.arbitrary()?, "cancel");
            let mut f = StreamFrame::rst(id, method, protocol, Some("a,b"), &exc).expect("encodes");
            if u.ratio(1, 4)? {
                f.payload = Bytes::copy_from_slice(u.arbitrary::<&[u8]>()?);
            }
            f
        }
        _ => {
            let kind = *u.choose(&[FrameKind::Meta, FrameKind::Trailer, FrameKind::Header])?;
            let mut f = StreamFrame::new(kind, id, method, protocol);
            f.payload = Bytes::copy_from_slice(u.arbitrary::<&[u8]>()?);
            f
        }
    })
}

/// What the client has seen the server write: per stream id, whether a Header came.
#[derive(Default)]
struct Seen {
    headers: std::collections::HashSet<i32>,
}

impl Seen {
    fn read(&mut self, wire: BytesMut) {
        let mut wire = wire;
        let limits = ProtoLimits::new();
        while !wire.is_empty() {
            let f = StreamFrame::decode(&mut wire, &limits)
                .expect("the session wrote a malformed frame")
                .expect("the session wrote part of a frame");
            match f.kind {
                FrameKind::Header => {
                    self.headers.insert(f.stream_id);
                }
                FrameKind::Data | FrameKind::Trailer => assert!(
                    self.headers.contains(&f.stream_id),
                    "{:?} on stream {} before its Header",
                    f.kind,
                    f.stream_id
                ),
                FrameKind::Rst => panic!("a server sent Rst"),
                FrameKind::Meta => {}
            }
        }
    }
}

/// The connection is gone: what the server wrote before is read, the session closed.
fn lose(s: &Session<MemSink>, seen: &mut Seen, why: &str) {
    seen.read(s.sink().take());
    s.on_lost(Status::unavailable(why));
}

async fn drive(u: &mut Unstructured<'_>) -> Result<()> {
    let server = Server::builder()
        .limits(ServerLimits::default().max_concurrent_streams(MAX_STREAMS))
        .add_service(Echo)
        .build();
    let stats = Arc::new(Stats::default());
    let limits = Limits::default()
        .max_frame_size(u.int_in_range(64..=1 << 16)?)
        .stream_recv_buffer(u.int_in_range(0..=4096)?)
        .conn_recv_buffer(u.int_in_range(0..=16384)?);
    let s = Session::new(
        Role::Server,
        MemSink::default(),
        limits,
        None,
        &stats,
        Some(server.clone()),
    );
    let mut seen = Seen::default();
    let mut wire = BytesMut::new();
    let mut lost = false;
    let result: Result<()> = async {
        let trace = std::env::var_os("FUZZ_TRACE").is_some();
        for _ in 0..u.int_in_range(1..=48)? {
            let op = u.int_in_range(0..=7u8)?;
            if trace {
                eprintln!(
                    "op {op}, wire {} bytes, streams {}",
                    wire.len(),
                    s.stream_count()
                );
            }
            match op {
                0 | 1 => {
                    let f = frame(u)?;
                    if trace {
                        eprintln!(
                            "  {:?} {} {} {:?} {:?}",
                            f.kind, f.stream_id, f.method, f.headers, f.payload
                        );
                    }
                    let _ = f.encode(&mut wire);
                }
                2 => {
                    let n = u.int_in_range(0..=32)?;
                    wire.extend_from_slice(u.bytes(n)?)
                }
                3 => {
                    // The reader delivers what has arrived, or only part of it.
                    let n = u.int_in_range(0..=wire.len())?;
                    let mut head = wire.split_to(n);
                    if !lost {
                        if s.on_bytes(&mut head).is_err() {
                            lose(&s, &mut seen, "malformed");
                            lost = true;
                        }
                    }
                    head.unsplit(wire);
                    wire = head;
                }
                4 => {
                    // A frame delivered whole (shared memory).
                    let f = frame(u)?;
                    if trace {
                        eprintln!(
                            "  whole {:?} {} {} {:?} {:?}",
                            f.kind, f.stream_id, f.method, f.headers, f.payload
                        );
                    }
                    let mut b = BytesMut::new();
                    if f.encode(&mut b).is_ok() && !lost {
                        if s.on_whole_frame(b.freeze()).is_err() {
                            lose(&s, &mut seen, "malformed");
                            lost = true;
                        }
                        s.dispatch_pending();
                    }
                }
                5 => {
                    for _ in 0..u.int_in_range(1..=8)? {
                        tokio::task::yield_now().await;
                    }
                    if u.ratio(1, 4)? {
                        tokio::time::sleep(Duration::from_millis(u.int_in_range(1..=3000)?)).await;
                    }
                }
                6 => seen.read(s.sink().take()),
                _ => {
                    if u.arbitrary()? {
                        s.start_drain();
                    } else {
                        lose(&s, &mut seen, "peer went");
                        lost = true;
                    }
                }
            }
            assert!(s.stream_count() <= MAX_STREAMS, "stream table over the cap");
            if lost {
                assert!(
                    s.sink().take().is_empty(),
                    "written after the connection was lost"
                );
            }
        }
        Ok(())
    }
    .await;
    // The end of the connection: every stream ends, handlers get their grace.
    lose(&s, &mut seen, "done");
    drop(s);
    tokio::time::sleep(Duration::from_secs(10)).await;
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    assert_eq!(stats.streams(), 0, "streams leaked");
    assert_eq!(stats.connections(), 0, "connection still counted");
    assert_eq!(stats.buffered_bytes(), 0, "buffered bytes leaked");
    assert_eq!(server.byte_budget().used(), 0, "server budget leaked");
    assert_eq!(server.active_streams(), 0, "server still counts streams");
    result
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let mut u = Unstructured::new(data);
    let _ = rt.block_on(drive(&mut u));
});
