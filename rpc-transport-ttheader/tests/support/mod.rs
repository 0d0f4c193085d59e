//! A test service in both payload kinds (protobuf over ttstream 0x11, thrift over ttstream 0x10
//! and unary TTHeader), with probes the tests wait on.
#![allow(dead_code, unreachable_pub)]

use std::marker::PhantomData;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use rpc_core::codec::thrift::{wire, ThriftMessage};
use rpc_core::transport::BoxFuture;
use rpc_core::{
    CallOptions, Codec, IncomingCall, MethodDesc, Mode, PayloadKind, ProstCodec, Service,
    ServiceDesc, Status, ThriftCodec,
};
use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TOutputProtocol, TSerializable, TStructIdentifier, TType,
};
use tokio::sync::mpsc;

/// Protobuf message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbMsg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(int64, tag = "2")]
    pub n: i64,
    #[prost(bytes = "bytes", tag = "3")]
    pub data: Bytes,
}

/// Thrift struct `{1: string text, 2: i64 n, 3: binary data}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TMsg {
    pub text: String,
    pub n: i64,
    pub data: Bytes,
}

fn field(t: TType, id: i16) -> TFieldIdentifier {
    TFieldIdentifier::new::<Option<String>, String, i16>(None, t, id)
}

impl TSerializable for TMsg {
    fn read_from_in_protocol(i: &mut dyn TInputProtocol) -> thrift::Result<Self> {
        i.read_struct_begin()?;
        let mut out = TMsg::default();
        loop {
            let f = i.read_field_begin()?;
            match (f.field_type, f.id) {
                (TType::Stop, _) => break,
                (TType::String, Some(1)) => out.text = i.read_string()?,
                (TType::I64, Some(2)) => out.n = i.read_i64()?,
                (TType::String, Some(3)) => out.data = Bytes::from(i.read_bytes()?),
                (t, _) => i.skip(t)?,
            }
            i.read_field_end()?;
        }
        i.read_struct_end()?;
        Ok(out)
    }

    fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new(""))?;
        o.write_field_begin(&field(TType::String, 1))?;
        o.write_string(&self.text)?;
        o.write_field_end()?;
        o.write_field_begin(&field(TType::I64, 2))?;
        o.write_i64(self.n)?;
        o.write_field_end()?;
        if !self.data.is_empty() {
            o.write_field_begin(&field(TType::String, 3))?;
            o.write_bytes(&self.data)?;
            o.write_field_end()?;
        }
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

impl ThriftMessage for TMsg {
    fn encoded_len(&self) -> usize {
        let mut n = wire::STOP_LEN
            + wire::FIELD_HEADER_LEN
            + wire::bytes_len(self.text.len())
            + wire::FIELD_HEADER_LEN
            + 8;
        if !self.data.is_empty() {
            n += wire::FIELD_HEADER_LEN + wire::bytes_len(self.data.len());
        }
        n
    }

    fn encode_to<B: BufMut + ?Sized>(&self, dst: &mut B) {
        wire::put_field_begin(dst, wire::STRING, 1);
        wire::put_bytes(dst, self.text.as_bytes());
        wire::put_field_begin(dst, wire::I64, 2);
        dst.put_i64(self.n);
        if !self.data.is_empty() {
            wire::put_field_begin(dst, wire::STRING, 3);
            wire::put_bytes(dst, &self.data);
        }
        wire::put_stop(dst);
    }
}

/// What both message types offer the handlers.
pub trait TestMsg: Send + Sync + Clone + std::fmt::Debug + PartialEq + 'static {
    fn make(text: &str, n: i64, data: Bytes) -> Self;
    fn text(&self) -> &str;
    fn n(&self) -> i64;
    fn data(&self) -> &Bytes;
}

impl TestMsg for PbMsg {
    fn make(text: &str, n: i64, data: Bytes) -> Self {
        PbMsg {
            text: text.into(),
            n,
            data,
        }
    }
    fn text(&self) -> &str {
        &self.text
    }
    fn n(&self) -> i64 {
        self.n
    }
    fn data(&self) -> &Bytes {
        &self.data
    }
}

impl TestMsg for TMsg {
    fn make(text: &str, n: i64, data: Bytes) -> Self {
        TMsg {
            text: text.into(),
            n,
            data,
        }
    }
    fn text(&self) -> &str {
        &self.text
    }
    fn n(&self) -> i64 {
        self.n
    }
    fn data(&self) -> &Bytes {
        &self.data
    }
}

pub fn msg<M: TestMsg>(text: &str, n: i64) -> M {
    M::make(text, n, Bytes::new())
}

macro_rules! methods {
    ($svc:literal, $payload:ident) => {
        [
            method!($svc, "Echo", Unary, $payload),
            method!($svc, "Sum", ClientStreaming, $payload),
            method!($svc, "Count", ServerStreaming, $payload),
            method!($svc, "Chat", Bidi, $payload),
        ]
    };
}
macro_rules! method {
    ($svc:literal, $name:literal, $mode:ident, $payload:ident) => {
        MethodDesc {
            package: "test",
            service: $svc,
            full_service: concat!("test.", $svc),
            name: $name,
            path: concat!("/test.", $svc, "/", $name),
            mode: Mode::$mode,
            payload: PayloadKind::$payload,
        }
    };
}

pub static PB: [MethodDesc; 4] = methods!("PbTest", Protobuf);
pub static TH: [MethodDesc; 4] = methods!("ThTest", Thrift);
static PB_DESC: ServiceDesc = ServiceDesc {
    package: "test",
    name: "PbTest",
    full_name: "test.PbTest",
    methods: &PB,
};
static TH_DESC: ServiceDesc = ServiceDesc {
    package: "test",
    name: "ThTest",
    full_name: "test.ThTest",
    methods: &TH,
};

/// What handlers report.
#[derive(Debug)]
pub enum Event {
    Ended(Status),
    Got(i64),
    Done,
}

/// Gate a handler waits on before reading ("hold" requests).
pub type Gate = std::sync::Arc<tokio::sync::Notify>;

pub struct TestService<C, M> {
    pub events: mpsc::UnboundedSender<Event>,
    pub gate: Gate,
    _p: PhantomData<fn() -> (C, M)>,
}

impl<C, M> TestService<C, M> {
    pub fn new(events: mpsc::UnboundedSender<Event>, gate: Gate) -> Self {
        TestService {
            events,
            gate,
            _p: PhantomData,
        }
    }
}

impl<C, M> Clone for TestService<C, M> {
    fn clone(&self) -> Self {
        TestService {
            events: self.events.clone(),
            gate: self.gate.clone(),
            _p: PhantomData,
        }
    }
}

impl<C, M> TestService<C, M> {
    fn report(&self, e: Event) {
        let _ = self.events.send(e);
    }
}

/// The protobuf flavour.
pub type PbService = TestService<ProstCodec, PbMsg>;
/// The thrift flavour.
pub type ThService = TestService<ThriftCodec, TMsg>;

pub trait Flavour {
    fn desc() -> &'static ServiceDesc;
}
impl Flavour for PbService {
    fn desc() -> &'static ServiceDesc {
        &PB_DESC
    }
}
impl Flavour for ThService {
    fn desc() -> &'static ServiceDesc {
        &TH_DESC
    }
}

impl<C: Codec<M>, M: TestMsg> Service for TestService<C, M>
where
    TestService<C, M>: Flavour,
{
    fn descriptor(&self) -> &'static ServiceDesc {
        <Self as Flavour>::desc()
    }

    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        let this = self.clone();
        match call.method_index() {
            0 => Box::pin(call.unary::<C, M, M, _, _>(move |ctx, req| async move {
                match req.text() {
                    "fail" => return Err(Status::not_found("no such thing")),
                    "biz" => {
                        return Err(rpc_transport_ttheader::biz_status_error(
                            4001,
                            "insufficient balance",
                            Some("{\"k\":\"v\"}".into()),
                        ))
                    }
                    "wait-cancel" => {
                        let s = ctx.cancelled().await;
                        this.report(Event::Ended(s.clone()));
                        return Err(s);
                    }
                    "gate" => {
                        this.report(Event::Got(req.n()));
                        this.gate.notified().await;
                    }
                    _ => {}
                }
                if let Some(v) = ctx.metadata().get_str("x-echo") {
                    ctx.set_header("x-echo", v.to_owned())?;
                }
                // Binary metadata comes back as it came, in the header and the trailer, under
                // every key the request had it.
                for (k, v) in ctx.metadata().iter() {
                    if let rpc_core::MetadataValue::Binary(b) = v {
                        ctx.set_header(format!("echo-{k}"), b.clone())?;
                        ctx.set_trailer(format!("trailer-{k}"), b.clone());
                    }
                }
                ctx.set_trailer("x-trailer", "t");
                Ok(req)
            })),
            1 => Box::pin(call.client_streaming::<C, M, M, _, _>(
                move |_ctx, mut stream| async move {
                    let (mut sum, mut count, mut bytes) = (0, 0, 0);
                    loop {
                        match stream.recv().await {
                            Ok(Some(m)) => {
                                sum += m.n();
                                count += 1;
                                bytes += m.data().len();
                            }
                            Ok(None) => break,
                            Err(s) => {
                                this.report(Event::Ended(s.clone()));
                                return Err(s);
                            }
                        }
                    }
                    Ok(M::make(&format!("{count}:{bytes}"), sum, Bytes::new()))
                },
            )),
            2 => Box::pin(call.server_streaming::<C, M, M, _, _>(
                move |_ctx, req, mut stream| async move {
                    for i in 0..req.n() {
                        if let Err(s) = stream
                            .send(M::make(req.text(), i, req.data().clone()))
                            .await
                        {
                            this.report(Event::Ended(s.clone()));
                            return Err(s);
                        }
                    }
                    if req.text() == "fail-after" {
                        return Err(Status::aborted("after messages"));
                    }
                    Ok(())
                },
            )),
            _ => Box::pin(
                call.bidi::<C, M, M, _, _>(move |ctx, mut stream| async move {
                    loop {
                        match stream.recv().await {
                            Ok(Some(m)) if m.text() == "wait-cancel" => {
                                this.report(Event::Got(m.n()));
                                let s = ctx.cancelled().await;
                                this.report(Event::Ended(s.clone()));
                                return Err(s);
                            }
                            Ok(Some(m)) if m.text() == "hold" => {
                                // Stop reading until the test opens the gate.
                                this.report(Event::Got(m.n()));
                                this.gate.notified().await;
                            }
                            Ok(Some(m)) => {
                                this.report(Event::Got(m.n()));
                                if m.text() == "bulk" {
                                    continue;
                                }
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
                }),
            ),
        }
    }
}

/// Fails the test if `fut` does not complete within 10 s.
pub async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("timed out waiting for an event")
}

pub struct Probe {
    pub events: mpsc::UnboundedReceiver<Event>,
    pub gate: Gate,
}

impl Probe {
    pub async fn event(&mut self) -> Event {
        within(self.events.recv()).await.expect("service gone")
    }

    pub async fn ended(&mut self) -> Status {
        loop {
            if let Event::Ended(s) = self.event().await {
                return s;
            }
        }
    }
}

/// A server hosting both flavours, and its probe.
pub fn server() -> (rpc_core::Server, Probe) {
    let (tx, events) = mpsc::unbounded_channel();
    let gate = Gate::default();
    let server = rpc_core::Server::builder()
        .add_service(PbService::new(tx.clone(), gate.clone()))
        .add_service(ThService::new(tx, gate.clone()))
        .build();
    (server, Probe { events, gate })
}

/// A TTHeader server on one real listener of `rpc_core::serve`, with the protocol's stats.
pub struct Served {
    running: rpc_core::serve::Running,
    protocol: rpc_transport_ttheader::TtHeaderProtocol,
}

impl Served {
    /// The bound TCP address, if the listener is TCP.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.running.local_addrs().first()?.socket_addr()
    }

    /// The served connections' live counts.
    pub fn stats(&self) -> &std::sync::Arc<rpc_transport_ttheader::Stats> {
        self.protocol.stats()
    }

    /// Graceful shutdown.
    pub async fn shutdown(self, grace: Duration) {
        self.running.shutdown(grace).await
    }
}

async fn serve_on(
    server: rpc_core::Server,
    addr: rpc_core::Address,
    limits: rpc_transport_ttheader::Limits,
) -> std::io::Result<Served> {
    let protocol = rpc_transport_ttheader::TtHeaderProtocol::new(limits);
    let running = rpc_core::serve::Listener::new(server)
        .protocol(protocol.clone())
        .bind(addr)
        .await?
        .start();
    Ok(Served { running, protocol })
}

/// Serves `server` over TTHeader on a TCP address.
pub async fn serve_tcp(
    server: rpc_core::Server,
    addr: std::net::SocketAddr,
    limits: rpc_transport_ttheader::Limits,
) -> std::io::Result<Served> {
    serve_on(server, addr.into(), limits).await
}

/// Serves `server` over TTHeader on a Unix socket.
pub async fn serve_unix(
    server: rpc_core::Server,
    path: impl AsRef<std::path::Path>,
    limits: rpc_transport_ttheader::Limits,
) -> std::io::Result<Served> {
    serve_on(server, rpc_core::Address::unix(path.as_ref()), limits).await
}

/// Runs all four modes against `methods` (over any transport) and checks every answer.
pub async fn all_modes<C, M>(client: &rpc_core::Client, methods: &'static [MethodDesc; 4])
where
    C: Codec<M>,
    M: TestMsg,
{
    // unary, with metadata both ways
    let res = within(client.unary::<C, M, M>(
        &methods[0],
        msg("hi", 7),
        CallOptions::new().metadata("x-echo", "v"),
    ))
    .await
    .unwrap();
    assert_eq!(res.header().get_str("x-echo"), Some("v"));
    assert_eq!(res.trailer().get_str("x-trailer"), Some("t"));
    assert_eq!(res.into_inner(), msg::<M>("hi", 7));

    // client streaming
    let mut call = within(client.client_streaming::<C, M, M>(&methods[1], CallOptions::new()))
        .await
        .unwrap();
    for i in 1..=10 {
        within(call.send(msg("x", i))).await.unwrap();
    }
    let sum = within(call.close_and_recv()).await.unwrap();
    assert_eq!((sum.text(), sum.n()), ("10:0", 55));

    // server streaming: messages, then a clean end that repeats
    let mut call =
        within(client.server_streaming::<C, M, M>(&methods[2], msg("s", 5), CallOptions::new()))
            .await
            .unwrap();
    for i in 0..5 {
        assert_eq!(within(call.recv()).await.unwrap(), Some(msg("s", i)));
    }
    assert_eq!(within(call.recv()).await.unwrap(), None);
    assert_eq!(within(call.recv()).await.unwrap(), None);

    // bidi, split across tasks
    let call = within(client.bidi::<C, M, M>(&methods[3], CallOptions::new()))
        .await
        .unwrap();
    let (mut tx, mut rx) = call.into_split();
    let sender = tokio::spawn(async move {
        for i in 0..50 {
            tx.send(msg("b", i)).await?;
        }
        tx.close_send()
    });
    let mut n = 0;
    while let Some(m) = within(rx.recv()).await.unwrap() {
        assert_eq!(m.n(), n);
        n += 1;
    }
    assert_eq!(n, 50);
    within(sender).await.unwrap().unwrap();
}
