//! A hand-written test service (what generated code would produce) with probes the tests wait on.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use rpc_core::inproc::InProcTransport;
use rpc_core::transport::BoxFuture;
use rpc_core::{
    Client, IncomingCall, MethodDesc, Mode, PayloadKind, ProstCodec, Server, Service, ServiceDesc,
    Status,
};
use tokio::sync::mpsc;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(int64, tag = "2")]
    pub n: i64,
}

pub fn msg(text: &str, n: i64) -> Msg {
    Msg {
        text: text.to_owned(),
        n,
    }
}

macro_rules! method {
    ($name:literal, $mode:ident) => {
        MethodDesc {
            package: "test",
            service: "Test",
            full_service: "test.Test",
            name: $name,
            path: concat!("/test.Test/", $name),
            mode: Mode::$mode,
            payload: PayloadKind::Protobuf,
        }
    };
}

pub static METHODS: [MethodDesc; 4] = [
    method!("Echo", Unary),
    method!("Sum", ClientStreaming),
    method!("Count", ServerStreaming),
    method!("Chat", Bidi),
];
pub static ECHO: &MethodDesc = &METHODS[0];
pub static SUM: &MethodDesc = &METHODS[1];
pub static COUNT: &MethodDesc = &METHODS[2];
pub static CHAT: &MethodDesc = &METHODS[3];

pub static UNKNOWN: MethodDesc = MethodDesc {
    package: "test",
    service: "Nope",
    full_service: "test.Nope",
    name: "Echo",
    path: "/test.Nope/Echo",
    mode: Mode::Unary,
    payload: PayloadKind::Protobuf,
};

static DESC: ServiceDesc = ServiceDesc {
    package: "test",
    name: "Test",
    full_name: "test.Test",
    methods: &METHODS,
};

/// What handlers report to the test.
#[derive(Debug)]
pub enum Event {
    /// A handler saw its stream end this way (recv/send error, or cancelled()).
    Ended(Status),
    /// A handler received a message.
    Got(Msg),
    /// A handler finished normally.
    Done,
}

#[derive(Clone)]
pub struct TestService {
    pub events: mpsc::UnboundedSender<Event>,
}

impl TestService {
    fn report(&self, e: Event) {
        let _ = self.events.send(e);
    }
}

impl Service for TestService {
    fn descriptor(&self) -> &'static ServiceDesc {
        &DESC
    }

    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        let this = self.clone();
        match call.method_index() {
            0 => Box::pin(call.unary::<ProstCodec, Msg, Msg, _, _>(move |ctx, req| async move {
                match req.text.as_str() {
                    "fail" => return Err(Status::invalid_argument("boom")),
                    "panic" => panic!("handler exploded"),
                    "sleep" => {
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(req.n as u64)) => {}
                            s = ctx.cancelled() => { this.report(Event::Ended(s.clone())); return Err(s) }
                        }
                    }
                    _ => {}
                }
                if let Some(v) = ctx.metadata().get_str("x-echo") {
                    ctx.set_header("x-echo", v.to_owned())?;
                }
                ctx.set_trailer("x-trailer", "t");
                Ok(req)
            })),
            1 => Box::pin(call.client_streaming::<ProstCodec, Msg, Msg, _, _>(
                move |_ctx, mut stream| async move {
                    let mut sum = 0;
                    let mut text = String::new();
                    loop {
                        match stream.recv().await {
                            Ok(Some(m)) => {
                                sum += m.n;
                                text.push_str(&m.text);
                                this.report(Event::Got(m));
                            }
                            Ok(None) => break,
                            Err(s) => {
                                this.report(Event::Ended(s.clone()));
                                return Err(s);
                            }
                        }
                    }
                    Ok(Msg { text, n: sum })
                },
            )),
            2 => Box::pin(call.server_streaming::<ProstCodec, Msg, Msg, _, _>(
                move |_ctx, req, mut stream| async move {
                    for i in 0..req.n {
                        if let Err(s) = stream.send(msg(&req.text, i)).await {
                            this.report(Event::Ended(s.clone()));
                            return Err(s);
                        }
                    }
                    if req.text == "fail-after" {
                        return Err(Status::aborted("after messages"));
                    }
                    Ok(())
                },
            )),
            _ => Box::pin(call.bidi::<ProstCodec, Msg, Msg, _, _>(move |ctx, mut stream| async move {
                loop {
                    match stream.recv().await {
                        Ok(Some(m)) if m.text == "wait-cancel" => {
                            let s = ctx.cancelled().await;
                            this.report(Event::Ended(s.clone()));
                            return Err(s);
                        }
                        Ok(Some(m)) if m.text == "stop-reading" => {
                            // Never read again; hold the stream until cancelled.
                            let s = ctx.cancelled().await;
                            this.report(Event::Ended(s.clone()));
                            return Err(s);
                        }
                        Ok(Some(m)) if m.text == "fail" => {
                            return Err(Status::failed_precondition("bidi failed"));
                        }
                        Ok(Some(m)) => {
                            this.report(Event::Got(m.clone()));
                            if let Err(s) = stream.send(m).await {
                                this.report(Event::Ended(s.clone()));
                                return Err(s);
                            }
                        }
                        Ok(None) => {
                            this.report(Event::Done);
                            return Ok(());
                        }
                        Err(s) => {
                            this.report(Event::Ended(s.clone()));
                            return Err(s);
                        }
                    }
                }
            })),
        }
    }
}

pub struct Harness {
    pub server: Server,
    pub transport: InProcTransport,
    pub client: Client,
    pub events: mpsc::UnboundedReceiver<Event>,
}

pub fn harness() -> Harness {
    harness_with(|b| b, |c| c, rpc_core::inproc::DEFAULT_STREAM_BUFFER)
}

pub fn harness_with(
    server: impl FnOnce(rpc_core::ServerBuilder) -> rpc_core::ServerBuilder,
    client: impl FnOnce(rpc_core::ClientBuilder) -> rpc_core::ClientBuilder,
    buffer: usize,
) -> Harness {
    let (tx, events) = mpsc::unbounded_channel();
    let server = server(Server::builder().add_service(TestService { events: tx })).build();
    let transport = InProcTransport::with_buffer(server.clone(), buffer);
    let client = client(Client::builder_arc(Arc::new(transport.clone()))).build();
    Harness {
        server,
        transport,
        client,
        events,
    }
}

/// Fails the test if `fut` does not complete within 5 s.
pub async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("timed out waiting for an event")
}

impl Harness {
    /// Opens a bidi `CHAT` call (bounded wait).
    pub async fn chat(&self) -> rpc_core::BidiStreamingClient<Msg, Msg> {
        within(
            self.client
                .bidi::<ProstCodec, Msg, Msg>(CHAT, rpc_core::CallOptions::new()),
        )
        .await
        .expect("the call opens")
    }

    /// The next handler event (bounded wait).
    pub async fn event(&mut self) -> Event {
        within(self.events.recv()).await.expect("service gone")
    }

    /// The next `Ended` event, skipping others.
    pub async fn ended(&mut self) -> Status {
        loop {
            if let Event::Ended(s) = self.event().await {
                return s;
            }
        }
    }

    /// Waits until every stream's state is released on both sides.
    pub async fn assert_no_leaks(&self) {
        within(self.server.wait_idle()).await;
        within(self.transport.wait_no_live_streams()).await;
        assert_eq!(self.transport.buffered_bytes(), 0);
    }
}
