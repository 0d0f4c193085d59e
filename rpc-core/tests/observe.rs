//! Trace context propagation through a server that calls another server: the nested client
//! call made by a handler joins the trace of the call being served, with the handler's span as
//! its parent, even with no subscriber in the process (pass-through); without an incoming
//! trace and with nobody observing, nothing is added to the wire.

use rpc_core::inproc::InProcTransport;
use rpc_core::observe::{TraceContext, TRACEPARENT};
use rpc_core::transport::BoxFuture;
use rpc_core::{
    CallOptions, Client, IncomingCall, MethodDesc, Mode, PayloadKind, ProstCodec, Server, Service,
    ServiceDesc, Status,
};

static BACK_METHODS: [MethodDesc; 1] = [MethodDesc {
    package: "t",
    service: "Back",
    full_service: "t.Back",
    name: "Call",
    path: "/t.Back/Call",
    mode: Mode::Unary,
    payload: PayloadKind::Protobuf,
}];
static BACK: ServiceDesc = ServiceDesc {
    package: "t",
    name: "Back",
    full_name: "t.Back",
    methods: &BACK_METHODS,
};
static FRONT_METHODS: [MethodDesc; 1] = [MethodDesc {
    package: "t",
    service: "Front",
    full_service: "t.Front",
    name: "Call",
    path: "/t.Front/Call",
    mode: Mode::Unary,
    payload: PayloadKind::Protobuf,
}];
static FRONT: ServiceDesc = ServiceDesc {
    package: "t",
    name: "Front",
    full_name: "t.Front",
    methods: &FRONT_METHODS,
};

/// Answers with the `traceparent` it received (empty if none).
struct Back;
impl Service for Back {
    fn descriptor(&self) -> &'static ServiceDesc {
        &BACK
    }
    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        Box::pin(
            call.unary::<ProstCodec, String, String, _, _>(|ctx, _| async move {
                Ok(ctx.metadata().get_str(TRACEPARENT).unwrap_or("").to_owned())
            }),
        )
    }
}

/// Calls Back, answers `<its own trace context>|<Back's answer>`.
struct Front(Client);
impl Service for Front {
    fn descriptor(&self) -> &'static ServiceDesc {
        &FRONT
    }
    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        let back = self.0.clone();
        Box::pin(
            call.unary::<ProstCodec, String, String, _, _>(move |ctx, _| async move {
                let own = ctx
                    .extension::<TraceContext>()
                    .map(|t| t.to_traceparent())
                    .unwrap_or_default();
                // The nested call is made after an await point, in whatever task polls this.
                tokio::task::yield_now().await;
                let got = back
                    .unary::<ProstCodec, String, String>(
                        &BACK_METHODS[0],
                        String::new(),
                        CallOptions::new(),
                    )
                    .await?
                    .into_inner();
                Ok(format!("{own}|{got}"))
            }),
        )
    }
}

fn front() -> Client {
    let back = Client::new(InProcTransport::new(
        Server::builder().add_service(Back).build(),
    ));
    Client::new(InProcTransport::new(
        Server::builder().add_service(Front(back)).build(),
    ))
}

#[tokio::test]
async fn a_nested_call_joins_the_trace_of_the_call_being_served() {
    let client = front();
    let root = TraceContext::new_root();
    let reply = client
        .unary::<ProstCodec, String, String>(
            &FRONT_METHODS[0],
            String::new(),
            CallOptions::new().metadata(TRACEPARENT, root.to_traceparent()),
        )
        .await
        .unwrap()
        .into_inner();
    let (own, nested) = reply.split_once('|').unwrap();
    let own = TraceContext::parse(own).expect("the front handler sees its trace context");
    let nested = TraceContext::parse(nested).expect("the nested call carries a traceparent");
    assert_eq!(
        own.trace_id(),
        root.trace_id(),
        "the server joined the caller's trace"
    );
    assert_ne!(own.span_id(), root.span_id());
    assert_eq!(
        nested.trace_id(),
        root.trace_id(),
        "the nested call is in the same trace"
    );
    assert_ne!(
        nested.span_id(),
        own.span_id(),
        "a child span of the handler's"
    );
    assert_eq!(
        TraceContext::current(),
        None,
        "nothing leaks into the test's thread"
    );
    // Nobody observing and no incoming trace: nothing on the wire.
    let reply = client
        .unary::<ProstCodec, String, String>(&FRONT_METHODS[0], String::new(), CallOptions::new())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply, "|");
}
