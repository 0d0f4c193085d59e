//! Stream event hooks (`rpc_core::events`) on both sides, over every transport: every mode's
//! events in order with the right counts, header metadata, the final status, and a cancel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use examples::idl::Proto;
use examples::transport::Transport;
use examples::{EchoIdl, EchoRequest};
use rpc_core::events::{Side, StreamEvents, StreamFinish, StreamObserver, StreamStart};
use rpc_core::{CallOptions, Code, Metadata, Server};

const WAIT: Duration = Duration::from_secs(10);

/// One event as recorded.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Start(Side, &'static str),
    Send,
    Recv,
    Header(Option<String>),
    Finish {
        code: Code,
        sent: u64,
        received: u64,
        bytes: bool,
    },
}

/// One stream's events, in arrival order.
type Events = Arc<Mutex<Vec<Ev>>>;

/// Records every stream's events, per stream, in arrival order.
#[derive(Clone, Default)]
struct Recorder {
    streams: Arc<Mutex<Vec<Events>>>,
    finished: Arc<tokio::sync::Notify>,
}

struct Stream {
    events: Events,
    finished: Arc<tokio::sync::Notify>,
}

impl StreamObserver for Recorder {
    fn on_start(&self, start: &StreamStart<'_>) -> Option<Box<dyn StreamEvents>> {
        let events = Arc::new(Mutex::new(vec![Ev::Start(
            start.side,
            start.ctx.method().name,
        )]));
        self.streams.lock().unwrap().push(events.clone());
        Some(Box::new(Stream {
            events,
            finished: self.finished.clone(),
        }))
    }
}

impl StreamEvents for Stream {
    fn on_send(&self, _: usize) {
        self.events.lock().unwrap().push(Ev::Send);
    }
    fn on_recv(&self, _: usize) {
        self.events.lock().unwrap().push(Ev::Recv);
    }
    fn on_header(&self, header: &Metadata) {
        let v = header.get_str("x-h").map(str::to_owned);
        self.events.lock().unwrap().push(Ev::Header(v));
    }
    fn on_finish(&self, f: &StreamFinish<'_>) {
        self.events.lock().unwrap().push(Ev::Finish {
            code: f.status.code(),
            sent: f.messages_sent,
            received: f.messages_received,
            bytes: (f.bytes_sent > 0) == (f.messages_sent > 0)
                && (f.bytes_received > 0) == (f.messages_received > 0),
        });
        self.finished.notify_one();
    }
}

impl Recorder {
    /// Waits until `n` streams have finished and returns their events, oldest first.
    async fn take(&self, n: usize) -> Vec<Vec<Ev>> {
        tokio::time::timeout(WAIT, async {
            loop {
                let done = {
                    let streams = self.streams.lock().unwrap();
                    streams
                        .iter()
                        .filter(|s| matches!(s.lock().unwrap().last(), Some(Ev::Finish { .. })))
                        .count()
                };
                if done >= n {
                    break;
                }
                self.finished.notified().await;
            }
        })
        .await
        .expect("streams did not finish");
        let streams = std::mem::take(&mut *self.streams.lock().unwrap());
        streams.iter().map(|s| s.lock().unwrap().clone()).collect()
    }
}

fn req(m: &str) -> EchoRequest {
    EchoRequest {
        message: m.into(),
        ..EchoRequest::default()
    }
}

/// A server with the echo service (protobuf), the recorder, and a header entry on every call.
fn server(rec: &Recorder) -> Server {
    Server::builder()
        .add_service(examples::proto::TestServiceServer::new(examples::Echo))
        .interceptor(|ctx| ctx.set_header("x-h", "v"))
        .observer(rec.clone())
        .build()
}

fn finish(code: Code, sent: u64, received: u64) -> Ev {
    Ev::Finish {
        code,
        sent,
        received,
        bytes: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_reports_its_events_on_both_sides_over_every_transport() {
    for &transport in Transport::ALL {
        let (srv, cli) = (Recorder::default(), Recorder::default());
        let client = transport
            .connect_builder(server(&srv))
            .await
            .unwrap()
            .observer(cli.clone())
            .build();
        let client = Proto::client(client);
        let header = Ev::Header(Some("v".into()));
        let t = transport;

        // Pingpong.
        Proto::ping_pong(&client, req("p"), CallOptions::new())
            .await
            .unwrap();
        let s = srv.take(1).await.remove(0);
        assert_eq!(
            s,
            [
                Ev::Start(Side::Server, "PingPong"),
                Ev::Recv,
                header.clone(),
                Ev::Send,
                finish(Code::Ok, 1, 1)
            ],
            "{t}"
        );
        let c = cli.take(1).await.remove(0);
        assert_eq!(c.first(), Some(&Ev::Start(Side::Client, "PingPong")), "{t}");
        assert_eq!(c.last(), Some(&finish(Code::Ok, 1, 1)), "{t}");
        assert_eq!(c.iter().filter(|e| **e == header).count(), 1, "{t}: {c:?}");

        // Client streaming: 3 requests, one response.
        let mut call = Proto::echo_client(&client, CallOptions::new())
            .await
            .unwrap();
        for m in ["a", "b", "c"] {
            call.send(req(m).into()).await.unwrap();
        }
        call.close_and_recv().await.unwrap();
        let s = srv.take(1).await.remove(0);
        assert_eq!(
            s.first(),
            Some(&Ev::Start(Side::Server, "EchoClient")),
            "{t}"
        );
        assert_eq!(s.last(), Some(&finish(Code::Ok, 1, 3)), "{t}: {s:?}");
        let c = cli.take(1).await.remove(0);
        assert_eq!(c.last(), Some(&finish(Code::Ok, 3, 1)), "{t}: {c:?}");

        // Server streaming: one request, DEFAULT_REPEAT responses; the header before them.
        let mut call = Proto::echo_server(&client, req("s"), CallOptions::new())
            .await
            .unwrap();
        while call.recv().await.unwrap().is_some() {}
        let n = examples::DEFAULT_REPEAT as u64;
        let s = srv.take(1).await.remove(0);
        assert_eq!(
            s[..3],
            [
                Ev::Start(Side::Server, "EchoServer"),
                Ev::Recv,
                header.clone()
            ],
            "{t}"
        );
        assert_eq!(s.last(), Some(&finish(Code::Ok, n, 1)), "{t}: {s:?}");
        let c = cli.take(1).await.remove(0);
        let first_recv = c.iter().position(|e| *e == Ev::Recv).unwrap();
        let header_at = c.iter().position(|e| *e == header).unwrap();
        assert!(header_at < first_recv, "{t}: the header comes first: {c:?}");
        assert_eq!(c.last(), Some(&finish(Code::Ok, 1, n)), "{t}: {c:?}");

        // Bidi ending with an error: the status reaches both sides' finish.
        let mut call = Proto::echo(&client, CallOptions::new()).await.unwrap();
        call.send(req("1").into()).await.unwrap();
        call.recv().await.unwrap().unwrap();
        let mut failing = req("2");
        failing.fail = Some("no".into());
        call.send(failing.into()).await.unwrap();
        assert_eq!(call.recv().await.unwrap_err().code(), Code::Unknown);
        let s = srv.take(1).await.remove(0);
        assert_eq!(s.last(), Some(&finish(Code::Unknown, 1, 2)), "{t}: {s:?}");
        let c = cli.take(1).await.remove(0);
        assert_eq!(c.last(), Some(&finish(Code::Unknown, 2, 1)), "{t}: {c:?}");

        // A cancel: CANCELLED on both sides, exactly one finish each.
        let mut call = Proto::echo(&client, CallOptions::new()).await.unwrap();
        call.send(req("x").into()).await.unwrap();
        call.recv().await.unwrap().unwrap();
        call.cancel();
        let s = srv.take(1).await.remove(0);
        assert_eq!(s.last(), Some(&finish(Code::Cancelled, 1, 1)), "{t}: {s:?}");
        let c = cli.take(1).await.remove(0);
        assert_eq!(c.last(), Some(&finish(Code::Cancelled, 1, 1)), "{t}: {c:?}");
        assert_eq!(
            c.iter().filter(|e| matches!(e, Ev::Finish { .. })).count(),
            1,
            "{t}"
        );
    }
}
