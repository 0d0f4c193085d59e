//! The header rule of the server core (`rpc_core::server` docs): a client-streaming or bidi
//! handler's response header goes out no later than the moment its `recv` waits for a request,
//! so a client that waits for the header before it sends (tonic's generated bidi call) is
//! answered; `ServerContext::hold_header` keeps it back for handlers that set header metadata
//! from what they read. Checked in-process (transport-independent core logic); the tonic peer
//! test in `interop-tests/tests/tonic.rs` checks it over gRPC on the wire.
//!
//! No timing: the handler polls `recv` once while the client has sent nothing (the client
//! sends only after the handler reported), and whether the header is still unsent is read
//! from `set_header`, which succeeds only before the header went out.

use std::time::Duration;

use futures::FutureExt;
use rpc_core::inproc::InProcTransport;
use rpc_core::transport::BoxFuture;
use rpc_core::{
    CallOptions, Client, IncomingCall, MethodDesc, Mode, PayloadKind, ProstCodec, Server, Service,
    ServiceDesc, Status,
};
use tokio::sync::mpsc;

static METHODS: [MethodDesc; 2] = [
    MethodDesc {
        package: "hdr",
        service: "Hdr",
        full_service: "hdr.Hdr",
        name: "Chat",
        path: "/hdr.Hdr/Chat",
        mode: Mode::Bidi,
        payload: PayloadKind::Protobuf,
    },
    MethodDesc {
        package: "hdr",
        service: "Hdr",
        full_service: "hdr.Hdr",
        name: "Sum",
        path: "/hdr.Hdr/Sum",
        mode: Mode::ClientStreaming,
        payload: PayloadKind::Protobuf,
    },
];
static DESC: ServiceDesc = ServiceDesc {
    package: "hdr",
    name: "Hdr",
    full_name: "hdr.Hdr",
    methods: &METHODS,
};

/// What a handler saw once its first `recv` had to wait.
#[derive(Debug, PartialEq, Eq)]
struct Waited {
    /// The first poll of `recv` found no request.
    pending: bool,
    /// `set_header` still succeeded afterwards, i.e. the header had not gone out.
    header_unsent: bool,
}

/// The handler's report once its first `recv` waited: it did wait, and its header was (or,
/// when held, was not yet) sent.
async fn expect_waited(reports: &mut mpsc::Receiver<Waited>, header_unsent: bool) {
    let waited = within(reports.recv()).await.unwrap();
    assert_eq!(
        waited,
        Waited {
            pending: true,
            header_unsent
        }
    );
}

/// Both handlers: hold the header if asked (before anything is read), set header metadata,
/// poll `recv` once (the client has sent nothing yet), report what they saw, then serve.
#[derive(Clone)]
struct Hdr {
    hold: bool,
    report: mpsc::Sender<Waited>,
}

impl Service for Hdr {
    fn descriptor(&self) -> &'static ServiceDesc {
        &DESC
    }

    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        let Hdr { hold, report } = self.clone();
        if hold {
            call.context().hold_header();
        }
        match call.method_index() {
            0 => Box::pin(call.bidi::<ProstCodec, String, String, _, _>(
                move |ctx, mut stream| async move {
                    ctx.set_header("early", "1")?;
                    let first = stream.recv().now_or_never();
                    let waited = Waited {
                        pending: first.is_none(),
                        header_unsent: ctx.set_header("late", "2").is_ok(),
                    };
                    let _ = report.send(waited).await;
                    while let Some(m) = stream.recv().await? {
                        stream.send(m).await?;
                    }
                    Ok(())
                },
            )),
            _ => Box::pin(call.client_streaming::<ProstCodec, String, String, _, _>(
                move |ctx, mut stream| async move {
                    ctx.set_header("early", "1")?;
                    let first = stream.recv().now_or_never();
                    let waited = Waited {
                        pending: first.is_none(),
                        header_unsent: ctx.set_header("late", "2").is_ok(),
                    };
                    let _ = report.send(waited).await;
                    let mut all = String::new();
                    while let Some(m) = stream.recv().await? {
                        all.push_str(&m);
                    }
                    Ok(all)
                },
            )),
        }
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(v) => v,
        Err(_) => panic!("nothing within 10 s (hung)"),
    }
}

fn client(hold: bool) -> (Client, mpsc::Receiver<Waited>) {
    let (report, rx) = mpsc::channel(4);
    let server = Server::builder().add_service(Hdr { hold, report }).build();
    (Client::new(InProcTransport::new(server)), rx)
}

#[tokio::test]
async fn a_waiting_bidi_handler_has_sent_its_header() {
    let (client, mut reports) = client(false);
    let mut call =
        within(client.bidi::<ProstCodec, String, String>(&METHODS[0], CallOptions::new()))
            .await
            .unwrap();
    expect_waited(&mut reports, false).await;
    // The header arrives before the client sent anything, with what was set before the wait.
    let header = within(call.header()).await.unwrap();
    assert_eq!(header.get_str("early"), Some("1"));
    assert_eq!(header.get_str("late"), None);
    within(call.send("a".to_owned())).await.unwrap();
    assert_eq!(within(call.recv()).await.unwrap().as_deref(), Some("a"));
    call.close_send().unwrap();
    assert_eq!(within(call.recv()).await.unwrap(), None);
}

#[tokio::test]
async fn a_waiting_client_streaming_handler_has_sent_its_header() {
    let (client, mut reports) = client(false);
    let mut call = within(
        client.client_streaming::<ProstCodec, String, String>(&METHODS[1], CallOptions::new()),
    )
    .await
    .unwrap();
    expect_waited(&mut reports, false).await;
    let header = within(call.header()).await.unwrap();
    assert_eq!(header.get_str("early"), Some("1"));
    within(call.send("a".to_owned())).await.unwrap();
    within(call.send("b".to_owned())).await.unwrap();
    assert_eq!(within(call.close_and_recv()).await.unwrap(), "ab");
}

#[tokio::test]
async fn hold_header_keeps_it_until_the_first_message() {
    let (client, mut reports) = client(true);
    let mut call =
        within(client.bidi::<ProstCodec, String, String>(&METHODS[0], CallOptions::new()))
            .await
            .unwrap();
    expect_waited(&mut reports, true).await;
    within(call.send("a".to_owned())).await.unwrap();
    // The header came with the first response, with what was set after the wait too.
    let header = within(call.header()).await.unwrap();
    assert_eq!(header.get_str("early"), Some("1"));
    assert_eq!(header.get_str("late"), Some("2"));
    assert_eq!(within(call.recv()).await.unwrap().as_deref(), Some("a"));
    call.close_send().unwrap();
    assert_eq!(within(call.recv()).await.unwrap(), None);
}

#[tokio::test]
async fn hold_header_in_client_streaming_sends_it_with_the_response() {
    let (client, mut reports) = client(true);
    let mut call = within(
        client.client_streaming::<ProstCodec, String, String>(&METHODS[1], CallOptions::new()),
    )
    .await
    .unwrap();
    expect_waited(&mut reports, true).await;
    within(call.send("x".to_owned())).await.unwrap();
    assert_eq!(within(call.close_and_recv()).await.unwrap(), "x");
    let header = within(call.header()).await.unwrap();
    assert_eq!(header.get_str("late"), Some("2"));
}
