//! A test kit for services and their handlers: a typed client wired to a service in
//! process, a scripted peer for streaming handlers, and assertions on status and metadata.
//!
//! * [`serve`] — one line from a service to a client: `TestServiceClient::new(testing::serve(
//!   TestServiceServer::new(MyService)))`. The client and the handlers talk through
//!   [`InProcTransport`]: no socket, but the real stream semantics of every mode (bounded
//!   buffers, EOF, half-close, cancel, deadlines, header and trailer metadata), the same
//!   server core, layers and middleware as over a network.
//! * [`TestServer`] — the same with the server kept at hand: build the client with
//!   middleware ([`TestServer::client_builder`]), host a whole [`Server`] (several services,
//!   layers, limits), and wait for every handler to return ([`TestServer::expect_idle`]).
//! * [`ScriptedCall`] — plays the client of one stream step by step, the way a test reads:
//!   [`send`](ScriptedCall::send), [`expect`](ScriptedCall::expect),
//!   [`close_send`](ScriptedCall::close_send), [`cancel`](ScriptedCall::cancel),
//!   [`expect_ok`](ScriptedCall::expect_ok), [`expect_status`](ScriptedCall::expect_status).
//!   It wraps the call handle a generated client returns (bidi, client streaming or server
//!   streaming), over any transport.
//! * [`assert_status`], [`assert_metadata`], [`assert_no_metadata`] — one-line checks with the
//!   whole value in the failure message.
//!
//! Every step that waits is bounded ([`DEFAULT_STEP_TIMEOUT`], or
//! [`ScriptedCall::with_timeout`]): a handler that hangs fails its test with a message naming
//! the method, the step and the line of the test, instead of hanging the test run. Failures
//! are panics, as `assert!`'s are. With `tokio::time::pause()` the timeouts run on the paused
//! clock: a step whose handler waits on nothing but time fails as soon as the runtime is idle
//! past the timeout, at no wall-clock cost.
//!
//! # Example
//!
//! A handler test: the client a generated `EchoClient` wraps, a bidi call scripted from
//! the test (the hidden lines stand in for what `rpc-codegen` generates from
//! `service Echo { rpc Chat(stream Msg) returns (stream Msg); }`).
//!
//! ```
//! # mod echo {
//! #     use rpc_core::codegen::*;
//! #     pub static METHODS: [MethodDesc; 1] = [MethodDesc {
//! #         package: "demo", service: "Echo", full_service: "demo.Echo", name: "Chat",
//! #         path: "/demo.Echo/Chat", mode: Mode::Bidi, payload: PayloadKind::Protobuf,
//! #     }];
//! #     static DESC: ServiceDesc = ServiceDesc {
//! #         package: "demo", name: "Echo", full_name: "demo.Echo", methods: &METHODS,
//! #     };
//! #     pub trait Echo: Send + Sync + 'static {
//! #         fn chat(&self, ctx: ServerContext, stream: BidiStreamingServer<String, String>)
//! #             -> impl Future<Output = Result<(), Status>> + Send;
//! #     }
//! #     pub struct EchoServer<T>(Arc<T>);
//! #     impl<T> EchoServer<T> { pub fn new(inner: T) -> Self { EchoServer(Arc::new(inner)) } }
//! #     impl<T: Echo> Service for EchoServer<T> {
//! #         fn descriptor(&self) -> &'static ServiceDesc { &DESC }
//! #         fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
//! #             let inner = self.0.clone();
//! #             Box::pin(call.bidi::<ProstCodec, String, String, _, _>(
//! #                 move |ctx, stream| async move { inner.chat(ctx, stream).await }))
//! #         }
//! #     }
//! #     pub struct EchoClient(Client);
//! #     impl EchoClient {
//! #         pub fn new(inner: Client) -> Self { EchoClient(inner) }
//! #         pub async fn chat(&self) -> Result<BidiStreamingClient<String, String>, Status> {
//! #             self.0.bidi::<ProstCodec, String, String>(&METHODS[0], CallOptions::new()).await
//! #         }
//! #     }
//! # }
//! use echo::{Echo, EchoClient, EchoServer};
//! use rpc_core::testing::{self, ScriptedCall};
//! use rpc_core::{BidiStreamingServer, Code, ServerContext, Status};
//!
//! /// Answers every message in capitals; an empty one is an error.
//! struct Shout;
//!
//! impl Echo for Shout {
//!     async fn chat(&self, _: ServerContext, mut s: BidiStreamingServer<String, String>) -> Result<(), Status> {
//!         while let Some(text) = s.recv().await? {
//!             if text.is_empty() {
//!                 return Err(Status::invalid_argument("nothing to shout"));
//!             }
//!             s.send(text.to_uppercase()).await?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let client = EchoClient::new(testing::serve(EchoServer::new(Shout)));
//!
//! let mut chat = ScriptedCall::new(client.chat().await.unwrap());
//! chat.send("hi".to_owned()).await;
//! chat.expect("HI".to_owned()).await;
//! chat.close_send();
//! chat.expect_ok().await;
//!
//! let mut chat = ScriptedCall::new(client.chat().await.unwrap());
//! chat.send(String::new()).await;
//! let status = chat.expect_status(Code::InvalidArgument).await;
//! testing::assert_status(&status, Code::InvalidArgument, "nothing to shout");
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::time::Duration;

use crate::client::{
    BidiStreamingClient, Client, ClientBuilder, ClientStreamingClient, ServerStreamingClient,
};
use crate::context::CallContext;
use crate::inproc::InProcTransport;
use crate::metadata::{Metadata, MetadataValue};
use crate::server::{Server, Service};
use crate::status::{Code, Status};

/// How long one step of a [`ScriptedCall`] (or [`TestServer::expect_idle`]) may wait before it
/// fails the test: far beyond what any in-process step takes, even on a loaded CI machine,
/// yet short enough that a hung handler fails its test with a message rather than hanging
/// the whole run.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `service` in process and returns a client connected to it: wrap it in the
/// generated client, `TestServiceClient::new(testing::serve(TestServiceServer::new(Impl)))`.
///
/// Every call runs through the in-process transport and the real server core (see the
/// [module docs](self)). For middleware, several services, or waiting on the handlers, use a
/// [`TestServer`].
pub fn serve(service: impl Service) -> Client {
    TestServer::new(service).client()
}

/// A server in process with the clients of a test: [`serve`] with the server kept at hand.
///
/// ```
/// # fn demo(service: impl rpc_core::Service, app_server: rpc_core::Server) {
/// use rpc_core::testing::TestServer;
/// let server = TestServer::new(service);
/// let client = server.client(); // wrap it in the generated client
/// // The application's whole server: its services, layers, limits and observers.
/// let server = TestServer::from_server(app_server);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TestServer {
    server: Server,
    transport: InProcTransport,
    timeout: Duration,
}

impl TestServer {
    /// Hosts one service (a generated `XxxServer`) on a server with default settings.
    pub fn new(service: impl Service) -> TestServer {
        TestServer::from_server(Server::builder().add_service(service).build())
    }

    /// Hosts a server built as the application builds it (its services, layers, middleware,
    /// limits and observers all apply).
    pub fn from_server(server: Server) -> TestServer {
        TestServer {
            transport: InProcTransport::new(server.clone()),
            server,
            timeout: DEFAULT_STEP_TIMEOUT,
        }
    }

    /// Sets how long [`TestServer::expect_idle`] waits (default [`DEFAULT_STEP_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> TestServer {
        self.timeout = timeout;
        self
    }

    /// A client of this server with default settings; cheap, and every client shares the
    /// server.
    pub fn client(&self) -> Client {
        Client::new(self.transport.clone())
    }

    /// A client builder over this server: add the middleware, layers, timeouts or metadata
    /// the application's client has, then `build()`.
    pub fn client_builder(&self) -> ClientBuilder {
        Client::builder(self.transport.clone())
    }

    /// The server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The in-process transport the clients use (live streams, buffered bytes).
    pub fn transport(&self) -> &InProcTransport {
        &self.transport
    }

    /// Waits until no handler is running: every stream the test opened has ended and every
    /// handler has returned (a handler that a cancel or deadline ended must notice it, through
    /// its handles or [`ServerContext::cancelled`](crate::ServerContext::cancelled), or be
    /// dropped after the server's cancel grace).
    ///
    /// # Panics
    ///
    /// When handlers still run after the timeout, naming how many.
    #[track_caller]
    pub fn expect_idle(&self) -> impl Future<Output = ()> + '_ {
        let at = Location::caller();
        async move {
            if tokio::time::timeout(self.timeout, self.server.wait_idle())
                .await
                .is_err()
            {
                panic!(
                    "expect_idle at {at}: {} handler(s) still running after {:?}",
                    self.server.active_streams(),
                    self.timeout
                );
            }
        }
    }
}

/// The call handle a [`ScriptedCall`] drives.
enum Handle<Req: Send + Sync + 'static, Res: Send + Sync + 'static> {
    Bidi(BidiStreamingClient<Req, Res>),
    ClientStreaming(ClientStreamingClient<Req, Res>),
    ServerStreaming(ServerStreamingClient<Res>),
}

impl<Req: Send + Sync + 'static, Res: Send + Sync + 'static> Handle<Req, Res> {
    fn context(&self) -> &CallContext {
        match self {
            Handle::Bidi(c) => c.context(),
            Handle::ClientStreaming(c) => c.context(),
            Handle::ServerStreaming(c) => c.context(),
        }
    }

    async fn send(&mut self, msg: Req) -> Result<(), Status> {
        match self {
            Handle::Bidi(c) => c.send(msg).await,
            Handle::ClientStreaming(c) => c.send(msg).await,
            Handle::ServerStreaming(_) => Err(Status::failed_precondition(
                "a server-streaming call sends its one request when it opens",
            )),
        }
    }

    fn close_send(&mut self) -> Result<(), Status> {
        match self {
            Handle::Bidi(c) => c.close_send(),
            Handle::ClientStreaming(c) => c.close_send_only(),
            // Half-closed when it opened.
            Handle::ServerStreaming(_) => Ok(()),
        }
    }

    async fn recv(&mut self) -> Result<Option<Res>, Status> {
        match self {
            Handle::Bidi(c) => c.recv().await,
            Handle::ClientStreaming(c) => c.recv_response().await,
            Handle::ServerStreaming(c) => c.recv().await,
        }
    }

    async fn header(&mut self) -> Result<Metadata, Status> {
        match self {
            Handle::Bidi(c) => c.header().await,
            Handle::ClientStreaming(c) => c.header().await,
            Handle::ServerStreaming(c) => c.header().await,
        }
    }

    fn trailer(&self) -> Option<Metadata> {
        match self {
            Handle::Bidi(c) => c.trailer(),
            Handle::ClientStreaming(c) => c.trailer(),
            Handle::ServerStreaming(c) => c.trailer(),
        }
    }

    fn cancel(&self) {
        match self {
            Handle::Bidi(c) => c.cancel(),
            Handle::ClientStreaming(c) => c.cancel(),
            Handle::ServerStreaming(c) => c.cancel(),
        }
    }
}

/// The client of one stream, played step by step by a test: what the handler under test sees
/// as its peer.
///
/// Make one from the handle a generated client returns — [`BidiStreamingClient`],
/// [`ClientStreamingClient`] or [`ServerStreamingClient`] (its request type is then
/// [`Infallible`]: its one request went out when it opened) — over the in-process transport
/// of [`serve`] or any other. Each step waits at most the step timeout
/// ([`DEFAULT_STEP_TIMEOUT`]); a step that fails panics with the method, the step number, the
/// line of the test and what came instead:
///
/// ```text
/// /demo.Echo/Chat, step 2 (expect) at tests/echo.rs:14:10: expected message "HI",
/// got the end INVALID_ARGUMENT: nothing to shout
/// ```
///
/// The receive steps follow the stream semantics: a message, then the end — `OK`
/// ([`expect_ok`](Self::expect_ok)) or a status ([`expect_status`](Self::expect_status)),
/// which every later receive sees again. A client-streaming call delivers its one response
/// as a message before its end, and — unlike
/// [`ClientStreamingClient::close_and_recv`] — a script can wait for it without
/// half-closing, to see a handler that ends before the client does.
pub struct ScriptedCall<Req: Send + Sync + 'static, Res: Send + Sync + 'static> {
    handle: Handle<Req, Res>,
    timeout: Duration,
    step: usize,
}

impl<Req: Send + Sync + 'static, Res: Send + Sync + 'static> fmt::Debug for ScriptedCall<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedCall")
            .field("method", &self.handle.context().method().path)
            .field("steps", &self.step)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<Req: Send + Sync + 'static, Res: Send + Sync + 'static> From<BidiStreamingClient<Req, Res>>
    for ScriptedCall<Req, Res>
{
    fn from(call: BidiStreamingClient<Req, Res>) -> Self {
        ScriptedCall::with_handle(Handle::Bidi(call))
    }
}

impl<Req: Send + Sync + 'static, Res: Send + Sync + 'static> From<ClientStreamingClient<Req, Res>>
    for ScriptedCall<Req, Res>
{
    fn from(call: ClientStreamingClient<Req, Res>) -> Self {
        ScriptedCall::with_handle(Handle::ClientStreaming(call))
    }
}

impl<Res: Send + Sync + 'static> From<ServerStreamingClient<Res>>
    for ScriptedCall<Infallible, Res>
{
    fn from(call: ServerStreamingClient<Res>) -> Self {
        ScriptedCall::with_handle(Handle::ServerStreaming(call))
    }
}

/// What a receive step got, for failure messages.
fn describe<Res: fmt::Debug>(got: &Result<Option<Res>, Status>) -> String {
    match got {
        Ok(Some(msg)) => format!("message {msg:?}"),
        Ok(None) => "the end OK".to_owned(),
        Err(status) => format!("the end {status}"),
    }
}

impl<Req: Send + Sync + 'static, Res: Send + Sync + 'static> ScriptedCall<Req, Res> {
    /// Scripts `call`: a [`BidiStreamingClient`], [`ClientStreamingClient`] or [`ServerStreamingClient`].
    pub fn new(call: impl Into<ScriptedCall<Req, Res>>) -> Self {
        call.into()
    }

    fn with_handle(handle: Handle<Req, Res>) -> Self {
        ScriptedCall {
            handle,
            timeout: DEFAULT_STEP_TIMEOUT,
            step: 0,
        }
    }

    /// Sets how long each later step may wait (default [`DEFAULT_STEP_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The call's context: method, request metadata, deadline.
    pub fn context(&self) -> &CallContext {
        self.handle.context()
    }

    /// Starts a step: its number and the prefix of its failure messages.
    fn begin(&mut self, what: &str, at: &Location<'_>) -> String {
        self.step += 1;
        format!(
            "{}, step {} ({what}) at {at}",
            self.handle.context().method().path,
            self.step
        )
    }

    /// Sends one request, waiting (bounded) for send capacity.
    ///
    /// # Panics
    ///
    /// When the stream refuses it (it has ended: a handler that returned, a reset, a
    /// deadline — the message names the status; use [`try_send`](Self::try_send) when that
    /// race is part of the test), or when no capacity frees up within the timeout (the
    /// handler stopped reading).
    #[track_caller]
    pub fn send(&mut self, msg: Req) -> impl Future<Output = ()> + '_ {
        let at = Location::caller();
        async move {
            let step = self.begin("send", at);
            match tokio::time::timeout(self.timeout, self.handle.send(msg)).await {
                Ok(Ok(())) => {}
                Ok(Err(status)) => panic!("{step}: the stream refused the message: {status}"),
                Err(_) => panic!(
                    "{step}: no send capacity within {:?} (is the handler reading?)",
                    self.timeout
                ),
            }
        }
    }

    /// Sends one request and returns what the stream said, for a test where the handler may
    /// end the stream first (the send then fails; the end itself comes from the next receive
    /// step).
    ///
    /// # Panics
    ///
    /// Only when no send capacity frees up within the timeout.
    #[track_caller]
    pub fn try_send(&mut self, msg: Req) -> impl Future<Output = Result<(), Status>> + '_ {
        let at = Location::caller();
        async move {
            let step = self.begin("try_send", at);
            match tokio::time::timeout(self.timeout, self.handle.send(msg)).await {
                Ok(sent) => sent,
                Err(_) => panic!(
                    "{step}: no send capacity within {:?} (is the handler reading?)",
                    self.timeout
                ),
            }
        }
    }

    /// Half-closes (the client's CloseSend): the handler's next receive returns `Ok(None)`
    /// once it has read what was sent. Idempotent; on a server-streaming call it does nothing
    /// (that call half-closed when it opened). A stream that already ended is left as it is:
    /// the next receive step reports its end.
    pub fn close_send(&mut self) {
        self.step += 1;
        // An error here means the stream has ended; the next receive step reports how.
        let _ = self.handle.close_send();
    }

    /// Cancels the stream (a reset): the handler's handles fail with `CANCELLED` and
    /// [`ServerContext::cancelled`](crate::ServerContext::cancelled) resolves; every later
    /// receive step sees `CANCELLED`. Wait for the handler to notice with
    /// [`TestServer::expect_idle`].
    pub fn cancel(&mut self) {
        self.step += 1;
        self.handle.cancel();
    }

    /// Receives the next message, or `None` at an `OK` end, with the stream's failure as an
    /// `Err` (for checks the other steps do not cover).
    ///
    /// # Panics
    ///
    /// When nothing comes within the timeout.
    #[track_caller]
    pub fn recv(&mut self) -> impl Future<Output = Result<Option<Res>, Status>> + '_ {
        let at = Location::caller();
        async move {
            let step = self.begin("recv", at);
            self.recv_step(&step).await
        }
    }

    async fn recv_step(&mut self, step: &str) -> Result<Option<Res>, Status> {
        match tokio::time::timeout(self.timeout, self.handle.recv()).await {
            Ok(got) => got,
            Err(_) => panic!(
                "{step}: nothing within {:?}: the handler neither sent a message nor ended",
                self.timeout
            ),
        }
    }

    /// Waits for the response header metadata (what the handler set with
    /// [`ServerContext::set_header`](crate::ServerContext::set_header), sent with its first
    /// message or at its end).
    ///
    /// # Panics
    ///
    /// When the stream fails before a header comes, or nothing comes within the timeout.
    #[track_caller]
    pub fn expect_header(&mut self) -> impl Future<Output = Metadata> + '_ {
        let at = Location::caller();
        async move {
            let step = self.begin("expect_header", at);
            match tokio::time::timeout(self.timeout, self.handle.header()).await {
                Ok(Ok(header)) => header,
                Ok(Err(status)) => panic!("{step}: expected the header, got the end {status}"),
                Err(_) => panic!("{step}: no header within {:?}", self.timeout),
            }
        }
    }

    /// The trailer metadata of the ended stream (what the handler set with
    /// [`ServerContext::set_trailer`](crate::ServerContext::set_trailer), and the metadata of
    /// its error status).
    ///
    /// # Panics
    ///
    /// When the stream has not ended yet: step to its end first
    /// ([`expect_ok`](Self::expect_ok), [`expect_status`](Self::expect_status)).
    #[track_caller]
    pub fn trailer(&self) -> Metadata {
        match self.handle.trailer() {
            Some(trailer) => trailer,
            None => panic!(
                "{}, trailer at {}: the stream has not ended; the trailer comes with its end \
                 (expect_ok or expect_status first)",
                self.handle.context().method().path,
                Location::caller()
            ),
        }
    }
}

impl<Req: Send + Sync + 'static, Res: fmt::Debug + Send + Sync + 'static> ScriptedCall<Req, Res> {
    /// Receives the next message and returns it (for checks beyond equality).
    ///
    /// # Panics
    ///
    /// When the stream ends instead (naming its status) or nothing comes within the timeout.
    #[track_caller]
    pub fn expect_message(&mut self) -> impl Future<Output = Res> + '_ {
        let at = Location::caller();
        async move {
            let step = self.begin("expect_message", at);
            match self.recv_step(&step).await {
                Ok(Some(msg)) => msg,
                other => panic!("{step}: expected a message, got {}", describe(&other)),
            }
        }
    }

    /// Receives the next message and checks it equals `want`.
    ///
    /// # Panics
    ///
    /// When another message comes (both are shown), the stream ends instead, or nothing comes
    /// within the timeout.
    #[track_caller]
    pub fn expect(&mut self, want: Res) -> impl Future<Output = ()> + '_
    where
        Res: PartialEq,
    {
        let at = Location::caller();
        async move {
            let step = self.begin("expect", at);
            match self.recv_step(&step).await {
                Ok(Some(got)) if got == want => {}
                other => panic!(
                    "{step}: expected message {want:?}, got {}",
                    describe(&other)
                ),
            }
        }
    }

    /// Checks the stream ends with `OK` now: no further message, and the handler returned
    /// `Ok` (for a client-streaming call: after its response).
    ///
    /// # Panics
    ///
    /// When a message comes instead, the stream fails, or nothing comes within the timeout.
    #[track_caller]
    pub fn expect_ok(&mut self) -> impl Future<Output = ()> + '_ {
        let at = Location::caller();
        async move {
            let step = self.begin("expect_ok", at);
            match self.recv_step(&step).await {
                Ok(None) => {}
                other => panic!("{step}: expected the end OK, got {}", describe(&other)),
            }
        }
    }

    /// Checks the stream ends now with `code` and returns the status (message, details,
    /// metadata, cancellation) for further checks.
    ///
    /// # Panics
    ///
    /// When a message comes instead, the stream ends with another status (shown), or nothing
    /// comes within the timeout.
    #[track_caller]
    pub fn expect_status(&mut self, code: Code) -> impl Future<Output = Status> + '_ {
        let at = Location::caller();
        async move {
            let step = self.begin("expect_status", at);
            match self.recv_step(&step).await {
                Err(status) if status.code() == code => status,
                other => panic!("{step}: expected the end {code}, got {}", describe(&other)),
            }
        }
    }
}

/// Checks a status's code and exact message, showing the whole status when they differ.
///
/// # Panics
///
/// When the code or the message differs.
#[track_caller]
pub fn assert_status(status: &Status, code: Code, message: &str) {
    assert!(
        status.code() == code && status.message() == message,
        "expected status {code}: {message:?}, got {status:?}"
    );
}

/// Checks `metadata` holds `value` under `key` (keys compare ASCII-case-insensitively; any
/// of several values under one key counts), showing all the metadata when it does not.
///
/// # Panics
///
/// When no value under `key` equals `value`.
#[track_caller]
pub fn assert_metadata(metadata: &Metadata, key: &str, value: impl Into<MetadataValue>) {
    let value = value.into();
    assert!(
        metadata.get_all(key).any(|v| *v == value),
        "expected metadata {key}: {value:?}, got {metadata:?}"
    );
}

/// Checks `metadata` has nothing under `key`, showing all the metadata when it does.
///
/// # Panics
///
/// When `key` is present.
#[track_caller]
pub fn assert_no_metadata(metadata: &Metadata, key: &str) {
    assert!(
        !metadata.contains_key(key),
        "expected no metadata {key}, got {metadata:?}"
    );
}
