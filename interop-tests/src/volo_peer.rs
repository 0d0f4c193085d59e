//! The volo-thrift side of the interop tests: an echo server that honours the echo service
//! contract (the shared `echo/README.md`) and a client, both over TTHeader with a framed or an
//! unframed binary payload.
//!
//! volo-thrift has no streaming: volo-build turns the streaming methods of `echo.thrift`
//! (`streaming.mode` annotations) into ordinary pingpong methods, which [`VoloEcho`] answers
//! with an `UNKNOWN_METHOD` application exception. Only `PingPong` is part of the interop checks.

use std::{io, net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use volo::net::{
    conn::Conn,
    incoming::{DefaultIncoming, Incoming, MakeIncoming},
};
use volo_thrift::{
    codec::default::{
        framed::MakeFramedCodec, thrift::MakeThriftCodec, ttheader::MakeTTHeaderCodec,
        DefaultMakeCodec,
    },
    ApplicationException, ApplicationExceptionKind, MaybeException, ServerError,
};

use crate::echo::{
    EchoError, Request, Response, TestService, TestServiceClient, TestServiceClientBuilder,
    TestServicePingPongException, TestServiceServer,
};

/// The prefix of a `fail` text that selects the declared `EchoError` exception (contract of the
/// echo service); any other `fail` text is an application error.
pub const DECLARED_PREFIX: &str = "declared:";

/// The service name the volo client puts in its TTHeader (int key 6, TO_SERVICE) and the IDL
/// service name (`isn` string key) volo-build sets on every call.
pub const SERVICE_NAME: &str = "TestService";

/// How the thrift message sits inside the TTHeader packet (the shared `spec/ttheader.md` §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// TTHeader + Framed: the thrift message is prefixed by its own `u32` length. volo's default
    /// (`DefaultMakeCodec::ttheader_framed()`).
    Framed,
    /// TTHeader + unframed binary: the thrift message follows the TTHeader directly
    /// (`DefaultMakeCodec::new(MakeTTHeaderCodec::new(MakeThriftCodec::new()))`).
    Unframed,
}

impl Framing {
    /// Both framings, for tests that run once per framing.
    pub const ALL: [Framing; 2] = [Framing::Framed, Framing::Unframed];
}

/// volo's codec for TTHeader + Framed + Binary.
pub type FramedCodec = DefaultMakeCodec<MakeTTHeaderCodec<MakeFramedCodec<MakeThriftCodec>>>;

/// volo's codec for TTHeader + unframed Binary.
pub type UnframedCodec = DefaultMakeCodec<MakeTTHeaderCodec<MakeThriftCodec>>;

/// volo's codec for TTHeader + Framed + Binary (volo's default).
fn framed_codec() -> FramedCodec {
    DefaultMakeCodec::ttheader_framed()
}

/// volo's codec for TTHeader + unframed Binary.
///
/// When decoding, volo's codecs look at the bytes (the framed one also accepts an unframed
/// message), and a volo server answers in the form of the request.
fn unframed_codec() -> UnframedCodec {
    DefaultMakeCodec::new(MakeTTHeaderCodec::new(MakeThriftCodec::new()))
}

/// The echo handler, per the contract of the echo service.
#[derive(Clone, Copy, Debug, Default)]
pub struct VoloEcho;

impl VoloEcho {
    /// The application error for the streaming methods, which volo-thrift cannot serve.
    fn no_streaming(method: &str) -> ServerError {
        ServerError::Application(ApplicationException::new(
            ApplicationExceptionKind::UNKNOWN_METHOD,
            format!("{method} is a streaming method; volo-thrift has no streaming"),
        ))
    }
}

impl TestService for VoloEcho {
    async fn ping_pong(
        &self,
        req: Request,
    ) -> Result<MaybeException<Response, TestServicePingPongException>, ServerError> {
        if let Some(ms) = req.sleep_ms.filter(|ms| *ms > 0) {
            // The `sleep_ms` test hook of the contract: the handler waits before answering.
            tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())).await;
        }
        match req.fail {
            Some(reason) if reason.starts_with(DECLARED_PREFIX) => Ok(MaybeException::Exception(
                TestServicePingPongException::Err(EchoError { reason }),
            )),
            // A handler error of a volo service is an application exception, type
            // INTERNAL_ERROR (6), whose message is the error text as is (volo adds no
            // "biz error: " prefix, unlike Kitex).
            Some(text) => Err(ServerError::Application(ApplicationException::new(
                ApplicationExceptionKind::INTERNAL_ERROR,
                text.to_string(),
            ))),
            None => Ok(MaybeException::Ok(Response {
                message: req.message,
                index: Some(0),
            })),
        }
    }

    async fn echo(&self, _req: Request) -> Result<Response, ServerError> {
        Err(Self::no_streaming("Echo"))
    }

    async fn echo_client(&self, _req: Request) -> Result<Response, ServerError> {
        Err(Self::no_streaming("EchoClient"))
    }

    async fn echo_server(&self, _req: Request) -> Result<Response, ServerError> {
        Err(Self::no_streaming("EchoServer"))
    }
}

/// A volo-thrift echo server on a TCP port of 127.0.0.1, running on the current tokio runtime.
///
/// Dropping it stops accepting (the listener is closed) and aborts the server task; connections
/// already accepted end when their client closes them or the runtime shuts down.
#[derive(Debug)]
pub struct VoloServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl VoloServer {
    /// Binds `127.0.0.1:0` and serves [`VoloEcho`] with volo's codec for `framing`.
    pub async fn start(framing: Framing) -> io::Result<Self> {
        Self::start_with(VoloEcho, framing).await
    }

    /// Binds `127.0.0.1:0` and serves `handler` with volo's codec for `framing` (for checks
    /// beyond the echo contract, such as business status errors).
    pub async fn start_with<H>(handler: H, framing: Framing) -> io::Result<Self>
    where
        H: TestService + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let incoming = StoppableIncoming {
            inner: DefaultIncoming::from(listener),
            stopped,
        };
        let server = TestServiceServer::new(handler);
        let task = match framing {
            Framing::Framed => tokio::spawn(async move {
                let result = server.make_codec(framed_codec()).run(incoming).await;
                if let Err(e) = result {
                    tracing::warn!("volo server on {addr} ended: {e}");
                }
            }),
            Framing::Unframed => tokio::spawn(async move {
                let result = server.make_codec(unframed_codec()).run(incoming).await;
                if let Err(e) = result {
                    tracing::warn!("volo server on {addr} ended: {e}");
                }
            }),
        };
        Ok(Self { addr, stop, task })
    }

    /// The address the server accepts connections on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for VoloServer {
    fn drop(&mut self) {
        // The accept loop volo spawns ends when `accept` returns `Ok(None)`; `run` itself then
        // waits for signals and a grace period, so it is aborted.
        self.stop.send_replace(true);
        self.task.abort();
    }
}

/// volo's TCP incoming stream that also ends (`Ok(None)`) when told to stop.
#[derive(Debug)]
struct StoppableIncoming {
    inner: DefaultIncoming,
    stopped: watch::Receiver<bool>,
}

impl Incoming for StoppableIncoming {
    async fn accept(&mut self) -> io::Result<Option<Conn>> {
        tokio::select! {
            conn = self.inner.accept() => conn,
            // Ok: told to stop; Err: the server handle is gone. Either way no more connections.
            _ = self.stopped.wait_for(|stop| *stop) => Ok(None),
        }
    }
}

impl MakeIncoming for StoppableIncoming {
    type Incoming = Self;

    async fn make_incoming(self) -> io::Result<Self> {
        Ok(self)
    }
}

/// A volo-thrift `TestService` client of the server at `addr`, using volo's codec for `framing`
/// and volo's defaults otherwise (pooled plain connections, one outstanding call per
/// connection, no timeouts sent).
pub fn client(addr: SocketAddr, framing: Framing) -> TestServiceClient {
    build_client(addr, framing, false)
}

/// As [`client`], but with volo's multiplex transport: calls are pipelined on one connection
/// (FLAGS stay 0; replies are matched by seqid, so they may come back in any order).
pub fn multiplex_client(addr: SocketAddr, framing: Framing) -> TestServiceClient {
    build_client(addr, framing, true)
}

/// Plain Thrift without TTHeader, as volo-thrift's `DefaultMakeCodec::framed()` and
/// `DefaultMakeCodec::buffered()` speak it (and every Apache Thrift client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlainFraming {
    /// `u32` length + binary message (`DefaultMakeCodec::framed()`).
    Framed,
    /// The bare binary message (`DefaultMakeCodec::buffered()`).
    Buffered,
}

impl PlainFraming {
    /// Both, for tests that run once per framing.
    pub const ALL: [PlainFraming; 2] = [PlainFraming::Framed, PlainFraming::Buffered];
}

/// A volo-thrift `TestService` client of the server at `addr` speaking plain Thrift (no
/// TTHeader) in `framing`, volo's defaults otherwise.
pub fn plain_client(addr: SocketAddr, framing: PlainFraming) -> TestServiceClient {
    let builder = TestServiceClientBuilder::new(SERVICE_NAME).address(addr);
    match framing {
        PlainFraming::Framed => builder.make_codec(DefaultMakeCodec::framed()).build(),
        PlainFraming::Buffered => builder.make_codec(DefaultMakeCodec::buffered()).build(),
    }
}

fn build_client(addr: SocketAddr, framing: Framing, multiplex: bool) -> TestServiceClient {
    let builder = TestServiceClientBuilder::new(SERVICE_NAME)
        .address(addr)
        .multiplex(multiplex);
    match framing {
        Framing::Framed => builder.make_codec(framed_codec()).build(),
        Framing::Unframed => builder.make_codec(unframed_codec()).build(),
    }
}
