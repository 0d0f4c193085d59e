//! Compiles the golden generated code of both IDLs and calls every method, in every mode,
//! through the typed clients against servers over `rpc_core::inproc::InProcTransport`.

/// The generated code under test (the checked-in golden files).
pub mod generated {
    /// echo.thrift
    pub mod echo_thrift {
        include!("golden/echo_thrift.rs");
    }
    /// echo.proto
    pub mod echo_proto {
        include!("golden/echo_proto.rs");
    }
    /// kitchen_sink.thrift
    pub mod sink_thrift {
        include!("golden/kitchen_sink_thrift.rs");
    }
    /// proto/sink.proto
    pub mod sink_proto {
        include!("golden/sink_proto.rs");
    }
}

use generated::{echo_proto, echo_thrift, sink_proto, sink_thrift};
use rpc_core::inproc::InProcTransport;
use rpc_core::{
    BidiStreamingServer, CallOptions, Client, ClientStreamingServer, Code, MethodError, Server,
    ServerContext, ServerStreamingServer, Status,
};

fn client_for(server: Server) -> Client {
    Client::new(InProcTransport::new(server))
}

// ---- echo.thrift ----------------------------------------------------------------------------

struct ThriftEcho;

impl echo_thrift::TestService for ThriftEcho {
    async fn ping_pong(
        &self,
        ctx: ServerContext,
        req: echo_thrift::Request,
    ) -> Result<echo_thrift::Response, MethodError<echo_thrift::TestServicePingPongException>> {
        if let Some(v) = ctx.metadata().get_str("x-echo") {
            ctx.set_header("x-echo", v.to_owned())?;
            ctx.set_trailer("x-done", "1");
        }
        match req.fail {
            Some(reason) if reason.starts_with("declared:") => Err(MethodError::Declared(
                echo_thrift::TestServicePingPongException::Err(echo_thrift::EchoError { reason }),
            )),
            Some(reason) => Err(Status::unknown(reason).into()),
            None => Ok(echo_thrift::Response {
                message: req.message,
                index: Some(0),
            }),
        }
    }

    async fn echo(
        &self,
        _ctx: ServerContext,
        mut stream: BidiStreamingServer<echo_thrift::Request, echo_thrift::Response>,
    ) -> Result<(), Status> {
        let mut i = 0;
        while let Some(req) = stream.recv().await? {
            stream
                .send(echo_thrift::Response {
                    message: req.message,
                    index: Some(i),
                })
                .await?;
            i += 1;
        }
        Ok(())
    }

    async fn echo_client(
        &self,
        _ctx: ServerContext,
        mut stream: ClientStreamingServer<echo_thrift::Request>,
    ) -> Result<echo_thrift::Response, Status> {
        let mut message = String::new();
        let mut n = 0;
        while let Some(req) = stream.recv().await? {
            message.push_str(&req.message);
            n += 1;
        }
        Ok(echo_thrift::Response {
            message,
            index: Some(n),
        })
    }

    async fn echo_server(
        &self,
        _ctx: ServerContext,
        req: echo_thrift::Request,
        mut stream: ServerStreamingServer<echo_thrift::Response>,
    ) -> Result<(), Status> {
        for i in 0..req.repeat.unwrap_or(3) {
            stream
                .send(echo_thrift::Response {
                    message: req.message.clone(),
                    index: Some(i),
                })
                .await?;
        }
        Ok(())
    }
}

fn thrift_req(message: &str) -> echo_thrift::Request {
    echo_thrift::Request {
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn thrift_echo_all_modes() {
    let server = Server::builder()
        .add_service(echo_thrift::TestServiceServer::new(ThriftEcho))
        .build();
    let client = echo_thrift::TestServiceClient::new(client_for(server));

    let res = client.ping_pong(thrift_req("hi")).await.unwrap();
    assert_eq!(res.message, "hi");
    // The `_with` variant hands back the response metadata as well.
    let res = client
        .ping_pong_with(thrift_req("md"), CallOptions::new().metadata("x-echo", "v"))
        .await
        .unwrap();
    assert_eq!(res.header().get_str("x-echo"), Some("v"));
    assert_eq!(res.trailer().get_str("x-done"), Some("1"));
    assert_eq!(res.into_inner().message, "md");

    let mut bidi = client.echo().await.unwrap();
    for m in ["a", "b"] {
        bidi.send(thrift_req(m)).await.unwrap();
    }
    bidi.close_send().unwrap();
    let mut got = Vec::new();
    while let Some(r) = bidi.recv().await.unwrap() {
        got.push((r.message, r.index));
    }
    assert_eq!(got, [("a".into(), Some(0)), ("b".into(), Some(1))]);

    let mut cs = client.echo_client().await.unwrap();
    for m in ["x", "y", "z"] {
        cs.send(thrift_req(m)).await.unwrap();
    }
    let r = cs.close_and_recv().await.unwrap();
    assert_eq!((r.message.as_str(), r.index), ("xyz", Some(3)));

    let mut ss = client
        .echo_server(echo_thrift::Request {
            repeat: Some(2),
            ..thrift_req("s")
        })
        .await
        .unwrap();
    let mut n = 0;
    while let Some(r) = ss.recv().await.unwrap() {
        assert_eq!((r.message.as_str(), r.index), ("s", Some(n)));
        n += 1;
    }
    assert_eq!(n, 2);
}

#[tokio::test]
async fn thrift_declared_exception_and_status() {
    let server = Server::builder()
        .add_service(echo_thrift::TestServiceServer::new(ThriftEcho))
        .build();
    let client = echo_thrift::TestServiceClient::new(client_for(server));
    let err = client
        .ping_pong(echo_thrift::Request {
            fail: Some("declared: nope".into()),
            ..thrift_req("x")
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        MethodError::Declared(echo_thrift::TestServicePingPongException::Err(
            echo_thrift::EchoError {
                reason: "declared: nope".into()
            }
        ))
    );
    let err = client
        .ping_pong_with(
            echo_thrift::Request {
                fail: Some("boom".into()),
                ..thrift_req("x")
            },
            CallOptions::new().timeout(std::time::Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    match err {
        MethodError::Status(s) => assert_eq!((s.code(), s.message()), (Code::Unknown, "boom")),
        other => panic!("{other:?}"),
    }
}

// ---- echo.proto -----------------------------------------------------------------------------

struct ProtoEcho;

impl echo_proto::TestService for ProtoEcho {
    async fn ping_pong(
        &self,
        _ctx: ServerContext,
        request: echo_proto::Request,
    ) -> Result<echo_proto::Response, Status> {
        if let Some(fail) = request.fail {
            return Err(Status::unknown(fail));
        }
        Ok(echo_proto::Response {
            message: request.message,
            index: Some(0),
        })
    }

    async fn echo(
        &self,
        _ctx: ServerContext,
        mut stream: BidiStreamingServer<echo_proto::Request, echo_proto::Response>,
    ) -> Result<(), Status> {
        let mut i = 0;
        while let Some(req) = stream.recv().await? {
            stream
                .send(echo_proto::Response {
                    message: req.message,
                    index: Some(i),
                })
                .await?;
            i += 1;
        }
        Ok(())
    }

    async fn echo_client(
        &self,
        _ctx: ServerContext,
        mut stream: ClientStreamingServer<echo_proto::Request>,
    ) -> Result<echo_proto::Response, Status> {
        let mut message = String::new();
        let mut n = 0;
        while let Some(req) = stream.recv().await? {
            message.push_str(&req.message);
            n += 1;
        }
        Ok(echo_proto::Response {
            message,
            index: Some(n),
        })
    }

    async fn echo_server(
        &self,
        _ctx: ServerContext,
        request: echo_proto::Request,
        mut stream: ServerStreamingServer<echo_proto::Response>,
    ) -> Result<(), Status> {
        for i in 0..request.repeat.unwrap_or(3) {
            stream
                .send(echo_proto::Response {
                    message: request.message.clone(),
                    index: Some(i),
                })
                .await?;
        }
        Ok(())
    }
}

fn proto_req(message: &str) -> echo_proto::Request {
    echo_proto::Request {
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn proto_echo_all_modes() {
    let server = Server::builder()
        .add_service(echo_proto::TestServiceServer::new(ProtoEcho))
        .build();
    let client = echo_proto::TestServiceClient::new(client_for(server));

    assert_eq!(
        client.ping_pong(proto_req("hi")).await.unwrap().message,
        "hi"
    );
    let err = client
        .ping_pong(echo_proto::Request {
            fail: Some("bad".into()),
            ..proto_req("x")
        })
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unknown, "bad"));

    let mut bidi = client.echo().await.unwrap();
    bidi.send(proto_req("a")).await.unwrap();
    let r = bidi.recv().await.unwrap().unwrap();
    assert_eq!((r.message.as_str(), r.index), ("a", Some(0)));
    bidi.close_send().unwrap();
    assert!(bidi.recv().await.unwrap().is_none());

    let mut cs = client.echo_client().await.unwrap();
    cs.send(proto_req("p")).await.unwrap();
    cs.send(proto_req("q")).await.unwrap();
    let r = cs.close_and_recv().await.unwrap();
    assert_eq!((r.message.as_str(), r.index), ("pq", Some(2)));

    let mut ss = client.echo_server(proto_req("s")).await.unwrap();
    let mut n = 0;
    while ss.recv().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
}

#[tokio::test]
async fn descriptors_follow_the_idl() {
    let d = &echo_thrift::TEST_SERVICE_DESCRIPTOR;
    assert_eq!(
        (d.package, d.name, d.full_name),
        ("echo", "TestService", "echo.TestService")
    );
    let paths: Vec<_> = d.methods.iter().map(|m| (m.path, m.mode)).collect();
    assert_eq!(
        paths,
        [
            ("/echo.TestService/PingPong", rpc_core::Mode::Unary),
            ("/echo.TestService/Echo", rpc_core::Mode::Bidi),
            (
                "/echo.TestService/EchoClient",
                rpc_core::Mode::ClientStreaming
            ),
            (
                "/echo.TestService/EchoServer",
                rpc_core::Mode::ServerStreaming
            ),
        ]
    );
    assert!(d
        .methods
        .iter()
        .all(|m| m.payload == rpc_core::PayloadKind::Thrift));
    let p = &echo_proto::TEST_SERVICE_DESCRIPTOR;
    assert_eq!(p.full_name, "echo.TestService");
    assert!(p
        .methods
        .iter()
        .all(|m| m.payload == rpc_core::PayloadKind::Protobuf));
    // Kitex path rule: the wire package is the last segment of `namespace go`.
    let k = &sink_thrift::CHILD_DESCRIPTOR;
    assert_eq!((k.package, k.full_name), ("sink", "sink.Child"));
    let names: Vec<_> = k.methods.iter().map(|m| m.name).collect();
    assert_eq!(
        names,
        ["Ping", "Get", "Fire", "Walk", "Collect", "Chat", "Single"]
    );
    assert_eq!(sink_proto::SINK_DESCRIPTOR.full_name, "acme.sink.Sink");
    assert!(sink_thrift::EMPTY_DESCRIPTOR.methods.is_empty());
}

// ---- kitchen_sink.thrift: multiple arguments, void, several exceptions, extends ----------

struct Child;

use sink_thrift::base;

impl sink_thrift::Child for Child {
    async fn ping(&self, _ctx: ServerContext) -> Result<String, Status> {
        Ok("pong".into())
    }

    async fn get(
        &self,
        _ctx: ServerContext,
        id: sink_thrift::Id,
        meta: Option<base::Meta>,
        color: sink_thrift::Color,
    ) -> Result<sink_thrift::Everything, MethodError<sink_thrift::ChildGetException>> {
        match id {
            1 => Err(MethodError::Declared(sink_thrift::ChildGetException::Oops(
                sink_thrift::Oops {
                    message: "oops".into(),
                    ..Default::default()
                },
            ))),
            2 => Err(MethodError::Declared(
                sink_thrift::ChildGetException::NotFound(base::NotFound {
                    what: "thing".into(),
                    level: Some(base::Level::HIGH),
                }),
            )),
            _ => Ok(sink_thrift::Everything {
                huge: id,
                meta,
                by_color: [(color, sink_thrift::Node::default())].into(),
                r#type: "t".into(),
                ..Default::default()
            }),
        }
    }

    async fn fire(&self, _ctx: ServerContext, what: String) -> Result<(), Status> {
        if what == "fail" {
            return Err(Status::invalid_argument("no"));
        }
        Ok(())
    }

    async fn walk(
        &self,
        _ctx: ServerContext,
        start: sink_thrift::Node,
        mut stream: ServerStreamingServer<sink_thrift::Node>,
    ) -> Result<(), Status> {
        let mut next = Some(Box::new(start));
        while let Some(node) = next {
            let mut node = *node;
            next = node.next.take();
            stream.send(node).await?;
        }
        Ok(())
    }

    async fn collect(
        &self,
        _ctx: ServerContext,
        mut stream: ClientStreamingServer<sink_thrift::Node>,
    ) -> Result<sink_thrift::Node, Status> {
        let mut root = sink_thrift::Node::default();
        while let Some(n) = stream.recv().await? {
            root.children.push(n);
        }
        Ok(root)
    }

    async fn chat(
        &self,
        _ctx: ServerContext,
        mut stream: BidiStreamingServer<sink_thrift::Value, sink_thrift::Value>,
    ) -> Result<(), Status> {
        while let Some(v) = stream.recv().await? {
            stream
                .send(sink_thrift::Value::ListValue(vec![v.clone(), v]))
                .await?;
        }
        Ok(())
    }

    async fn single(
        &self,
        _ctx: ServerContext,
        n: sink_thrift::Node,
    ) -> Result<sink_thrift::Node, Status> {
        Ok(n)
    }
}

#[tokio::test]
async fn thrift_kitchen_sink_service() {
    let server = Server::builder()
        .add_service(sink_thrift::ChildServer::new(Child))
        .build();
    let client = sink_thrift::ChildClient::new(client_for(server));

    assert_eq!(client.ping().await.unwrap(), "pong");
    let meta = base::Meta {
        trace_id: Some("t1".into()),
        tags: [("k".to_owned(), "v".to_owned())].into(),
    };
    let e = client
        .get(7, Some(meta.clone()), sink_thrift::Color::BLUE)
        .await
        .unwrap();
    assert_eq!((e.huge, e.meta.as_ref()), (7, Some(&meta)));
    assert!(e.by_color.contains_key(&sink_thrift::Color::BLUE));
    match client.get(1, None, sink_thrift::Color::RED).await {
        Err(MethodError::Declared(sink_thrift::ChildGetException::Oops(o))) => {
            assert_eq!((o.message.as_str(), o.code), ("oops", 500));
        }
        other => panic!("{other:?}"),
    }
    match client.get(2, None, sink_thrift::Color::RED).await {
        Err(MethodError::Declared(sink_thrift::ChildGetException::NotFound(n))) => {
            assert_eq!(n.level, Some(base::Level::HIGH));
        }
        other => panic!("{other:?}"),
    }
    client.fire("ok".into()).await.unwrap();
    assert_eq!(
        client.fire("fail".into()).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let chain = sink_thrift::Node {
        id: 1,
        next: Some(Box::new(sink_thrift::Node {
            id: 2,
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut walk = client.walk(chain).await.unwrap();
    let mut ids = Vec::new();
    while let Some(n) = walk.recv().await.unwrap() {
        ids.push(n.id);
    }
    assert_eq!(ids, [1, 2]);

    let mut collect = client.collect().await.unwrap();
    for id in 0..3 {
        collect
            .send(sink_thrift::Node {
                id,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert_eq!(collect.close_and_recv().await.unwrap().children.len(), 3);

    let mut chat = client.chat().await.unwrap();
    chat.send(sink_thrift::Value::IntValue(5)).await.unwrap();
    chat.close_send().unwrap();
    assert_eq!(
        chat.recv().await.unwrap(),
        Some(sink_thrift::Value::ListValue(vec![
            sink_thrift::Value::IntValue(5),
            sink_thrift::Value::IntValue(5)
        ]))
    );
    assert_eq!(chat.recv().await.unwrap(), None);

    let n = sink_thrift::Node {
        id: 9,
        ..Default::default()
    };
    assert_eq!(client.single(n.clone()).await.unwrap(), n);
}

struct Nothing;

impl sink_thrift::Empty for Nothing {}

#[tokio::test]
async fn a_service_without_methods_answers_unimplemented() {
    let server = Server::builder()
        .add_service(sink_thrift::EmptyServer::new(Nothing))
        .build();
    let client = sink_thrift::ChildClient::new(client_for(server));
    assert_eq!(client.ping().await.unwrap_err().code(), Code::Unimplemented);
}

#[test]
fn thrift_defaults_and_constants() {
    let n = sink_thrift::Node::default();
    assert_eq!(
        (n.color, n.weight, n.label.as_deref()),
        (sink_thrift::Color::GREEN, 7, Some("none"))
    );
    assert_eq!(sink_thrift::GREETING, "hello \"world\"");
    assert_eq!(sink_thrift::MAGIC, b"rpc");
    assert_eq!(*sink_thrift::PRIMES, [2, 3, 5, 7]);
    assert_eq!(sink_thrift::LEVELS.get("high"), Some(&base::Level::HIGH));
    assert!(sink_thrift::TAGS.contains("b"));
    assert_eq!(sink_thrift::ROOT, 1);
    assert_eq!(sink_thrift::DEFAULT_LEVEL, base::Level::MID);
    assert_eq!(sink_thrift::LIMIT, base::DEFAULT_LIMIT);
    const { assert!(sink_thrift::ENABLED) };
    assert_eq!(sink_thrift::RATIO, 0.25);
    assert_eq!(base::Level::HIGH.0, 16);
    assert_eq!(base::Level::NEGATIVE.0, -3);
    assert_eq!(base::Level::MID.name(), Some("MID"));
    assert_eq!(base::Level::from_name("LOW"), Some(base::Level::LOW));
    assert_eq!(format!("{:?}", base::Level(99)), "Level(99)");
    assert_eq!(sink_thrift::Oops::default().code, 500);
}

// ---- proto/sink.proto: imports, packages, google.protobuf.Empty ---------------------------

struct Sink;

use sink_proto::acme::{common, sink};

impl sink::Sink for Sink {
    async fn list(
        &self,
        _ctx: ServerContext,
        request: sink::ListRequest,
        mut stream: ServerStreamingServer<sink::Item>,
    ) -> Result<(), Status> {
        let limit = request.page.map_or(0, |p| p.limit);
        for i in 0..limit {
            stream
                .send(sink::Item {
                    name: format!("item{i}"),
                    ..Default::default()
                })
                .await?;
        }
        Ok(())
    }

    async fn put(
        &self,
        _ctx: ServerContext,
        mut stream: ClientStreamingServer<sink::Item>,
    ) -> Result<(), Status> {
        while stream.recv().await?.is_some() {}
        Ok(())
    }

    async fn get(&self, _ctx: ServerContext, request: common::Page) -> Result<sink::Item, Status> {
        Ok(sink::Item {
            name: request.offset.to_string(),
            status: common::Status::Active as i32,
            payload: Some(sink::item::Payload::Text("t".into())),
            ..Default::default()
        })
    }

    async fn sync(
        &self,
        _ctx: ServerContext,
        mut stream: BidiStreamingServer<sink::Item, sink::Item>,
    ) -> Result<(), Status> {
        while let Some(item) = stream.recv().await? {
            stream.send(item).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn proto_sink_service() {
    let server = Server::builder()
        .add_service(sink::SinkServer::new(Sink))
        .build();
    let client = sink::SinkClient::new(client_for(server));

    let mut list = client
        .list(sink::ListRequest {
            page: Some(common::Page {
                offset: 0,
                limit: 2,
            }),
        })
        .await
        .unwrap();
    let mut n = 0;
    while list.recv().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 2);

    let mut put = client.put().await.unwrap();
    put.send(sink::Item::default()).await.unwrap();
    put.close_and_recv().await.unwrap();

    let item = client
        .get(common::Page {
            offset: 4,
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(item.name, "4");
    assert_eq!(item.status(), common::Status::Active);

    let mut sync = client.sync().await.unwrap();
    let tagged = sink::Item {
        tags: vec![sink::item::Tag { key: "k".into() }],
        ..Default::default()
    };
    sync.send(tagged.clone()).await.unwrap();
    assert_eq!(sync.recv().await.unwrap(), Some(tagged));
    sync.close_send().unwrap();
    assert_eq!(sync.recv().await.unwrap(), None);
}

// ---- one-line clients: `XxxClient::connect::<T>(address)` ----------------------------------

/// A test-only transport made from an address: `inproc://NAME` opens its streams on the
/// server registered under `NAME` (in this process), through `InProcTransport`.
#[derive(Debug)]
struct NamedInProc(InProcTransport);

fn registry() -> &'static std::sync::Mutex<std::collections::HashMap<String, Server>> {
    static SERVERS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Server>>,
    > = std::sync::OnceLock::new();
    SERVERS.get_or_init(Default::default)
}

fn register(name: &str, server: Server) {
    registry().lock().unwrap().insert(name.to_owned(), server);
}

impl rpc_core::transport::ClientTransport for NamedInProc {
    fn open(
        &self,
        ctx: &rpc_core::CallContext,
    ) -> rpc_core::transport::BoxFuture<
        'static,
        Result<std::sync::Arc<dyn rpc_core::transport::ClientStreamRaw>, Status>,
    > {
        self.0.open(ctx)
    }
}

impl rpc_core::transport::Connect for NamedInProc {
    fn connect(address: &str) -> Result<Self, Status> {
        let name = address.strip_prefix("inproc://").ok_or_else(|| {
            Status::invalid_argument(format!("not an inproc:// address: {address}"))
        })?;
        let server = registry()
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| Status::unavailable(format!("no server named {name}")))?;
        Ok(NamedInProc(InProcTransport::new(server)))
    }
}

#[tokio::test]
async fn clients_connect_from_an_address() {
    register(
        "echo-thrift",
        Server::builder()
            .add_service(echo_thrift::TestServiceServer::new(ThriftEcho))
            .build(),
    );
    let client =
        echo_thrift::TestServiceClient::connect::<NamedInProc>("inproc://echo-thrift").unwrap();
    assert_eq!(
        client.ping_pong(thrift_req("hi")).await.unwrap().message,
        "hi"
    );

    register(
        "sink-proto",
        Server::builder()
            .add_service(sink::SinkServer::new(Sink))
            .build(),
    );
    let client = sink::SinkClient::connect::<NamedInProc>("inproc://sink-proto").unwrap();
    let item = client
        .get(common::Page {
            offset: 9,
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(item.name, "9");

    // The transport's errors come back as they are.
    let err = echo_thrift::TestServiceClient::connect::<NamedInProc>("tcp://x").unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = sink_thrift::ChildClient::connect::<NamedInProc>("inproc://nobody").unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

// ---- embedded descriptors -------------------------------------------------------------------

/// `FILE_DESCRIPTOR_SET` of a proto holds the file and everything it imports (the
/// well-known types included), imports first, without source info; thrift output has none.
#[test]
fn proto_output_embeds_its_file_descriptor_set() {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(sink_proto::FILE_DESCRIPTOR_SET).unwrap();
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    let sink = names
        .iter()
        .position(|n| *n == "sink.proto")
        .expect("the root file");
    for import in ["common/common.proto", "google/protobuf/empty.proto"] {
        let at = names.iter().position(|n| *n == import).expect(import);
        assert!(at < sink, "imports first: {names:?}");
    }
    assert!(set.file.iter().all(|f| f.source_code_info.is_none()));
    let echo = prost_types::FileDescriptorSet::decode(echo_proto::FILE_DESCRIPTOR_SET).unwrap();
    let file = echo.file.iter().find(|f| f.name() == "echo.proto").unwrap();
    assert_eq!(file.package(), "echo");
    assert_eq!(file.service[0].name(), "TestService");
    assert_eq!(file.service[0].method.len(), 4);
}
