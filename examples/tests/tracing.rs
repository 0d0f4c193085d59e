//! One span per call on each side with the OpenTelemetry RPC fields, joined into one trace by
//! the `traceparent` metadata entry over TTHeader; events for the end, a cancel and a deadline.
//! A capturing subscriber records every span's fields and every event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use examples::idl::{Proto, Thrift};
use examples::{EchoIdl, EchoRequest};
use rpc_core::serve::Listener;
use rpc_core::{CallOptions, Client, Code};
use rpc_transport_ttheader::{ConnectionMode, TtHeaderClient, TtHeaderProtocol};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[derive(Debug, Clone, Default)]
struct SpanRec {
    name: String,
    fields: HashMap<String, String>,
    events: Vec<HashMap<String, String>>,
}

#[derive(Default, Clone)]
struct Capture(Arc<Mutex<Vec<SpanRec>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// The index of a span in the capture, kept in the span's extensions.
struct Index(usize);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut rec = SpanRec {
            name: attrs.metadata().name().to_owned(),
            ..SpanRec::default()
        };
        attrs.record(&mut Fields(&mut rec.fields));
        let mut spans = self.0.lock().unwrap();
        spans.push(rec);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Index(spans.len() - 1));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(Index(i)) = span.extensions().get::<Index>() {
                values.record(&mut Fields(&mut self.0.lock().unwrap()[*i].fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let index = span.extensions().get::<Index>().map(|Index(i)| *i);
        if let Some(i) = index {
            self.0.lock().unwrap()[i].events.push(fields);
        }
    }
}

impl Capture {
    fn spans(&self, name: &str, method: &str) -> Vec<SpanRec> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                s.name == name && s.fields.get("rpc.method").map(String::as_str) == Some(method)
            })
            .cloned()
            .collect()
    }
}

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..EchoRequest::default()
    }
}

async fn client() -> Client {
    let running = Listener::new(examples::server())
        .protocol(TtHeaderProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .start();
    let addr = running.local_addrs().remove(0);
    std::mem::forget(running); // serves until the runtime ends
                               // Multiplexed mode for unary TTHeader: a pooled-mode client that gives up at its deadline closes
                               // the connection, and that close races the server's own deadline timer, so the server's
                               // span would end "cancelled" or "deadline exceeded" depending on the machine's load.
    Client::new(
        TtHeaderClient::builder(addr)
            .connection_mode(ConnectionMode::Multiplexed)
            .build(),
    )
}

/// Waits (bounded) until `f` holds; the server finishes its span just after the client's end.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_bidi_call_has_a_client_and_a_server_span_in_one_trace() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let proto = Proto::client(client().await);

    let mut call = Proto::echo(&proto, CallOptions::new()).await.unwrap();
    for i in 0..3 {
        call.send(request(&format!("m{i}")).into()).await.unwrap();
        call.recv().await.unwrap().expect("an echo");
    }
    call.close_send().unwrap();
    assert!(call.recv().await.unwrap().is_none());

    let has_end = |name: &str| {
        capture.spans(name, "Echo").first().is_some_and(|s| {
            s.events
                .iter()
                .any(|e| e.get("message").map(String::as_str) == Some("rpc end"))
        })
    };
    eventually("both spans end", || {
        has_end("rpc.client") && has_end("rpc.server")
    })
    .await;
    let client = capture.spans("rpc.client", "Echo").remove(0);
    let server = capture.spans("rpc.server", "Echo").remove(0);
    for (span, kind) in [(&client, "client"), (&server, "server")] {
        let f = &span.fields;
        assert_eq!(f["otel.kind"], kind);
        assert_eq!(f["otel.name"], "echo.TestService/Echo");
        assert_eq!(f["rpc.system"], "ttheader");
        assert_eq!(f["rpc.service"], "echo.TestService");
        assert_eq!(f["rpc.method"], "Echo");
        assert_eq!(f["rpc.status_code"], "0");
        assert_eq!(f["otel.status_code"], "OK");
        assert_eq!(f["trace_id"].len(), 32);
        assert_eq!(f["span_id"].len(), 16);
        let end = span
            .events
            .iter()
            .find(|e| e["message"] == "rpc end")
            .expect("an end event");
        assert_eq!(end["status"], "OK");
        assert_eq!(end["messages_sent"], "3", "{kind}: {end:?}");
        assert_eq!(end["messages_received"], "3", "{kind}: {end:?}");
    }
    // One trace: the server's span is the client span's child.
    eprintln!(
        "client span: {:?}\nserver span: {:?}",
        client.fields, server.fields
    );
    assert_eq!(client.fields["trace_id"], server.fields["trace_id"]);
    assert_eq!(server.fields["parent_span_id"], client.fields["span_id"]);
    assert_ne!(server.fields["span_id"], client.fields["span_id"]);
    assert!(!client.fields.contains_key("parent_span_id"), "a new trace");
    assert_eq!(server.fields["network.peer.address"], "127.0.0.1");
    assert!(server.fields["network.peer.port"].parse::<u16>().is_ok());
}

#[tokio::test(flavor = "current_thread")]
async fn cancel_and_deadline_are_events_of_the_spans() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let c = client().await;
    let (proto, thrift) = (Proto::client(c.clone()), Thrift::client(c));

    // Cancel: the client drops a bidi stream mid-way.
    let mut call = Proto::echo(&proto, CallOptions::new()).await.unwrap();
    call.send(request("x").into()).await.unwrap();
    call.recv().await.unwrap().expect("an echo");
    drop(call);
    // Deadline: a pingpong whose handler sleeps past it.
    let slow = EchoRequest {
        sleep_ms: Some(2_000),
        ..request("slow")
    };
    let err = Thrift::ping_pong(
        &thrift,
        slow,
        CallOptions::new().timeout(Duration::from_millis(50)),
    )
    .await
    .expect_err("the deadline passes");
    assert!(err.to_string().contains("DEADLINE"), "{err}");

    let has = |name: &str, method: &str, event: &str| {
        capture.spans(name, method).iter().any(|s| {
            s.events
                .iter()
                .any(|e| e.get("message").map(String::as_str) == Some(event))
        })
    };
    eventually("cancel events", || {
        has("rpc.client", "Echo", "rpc cancelled") && has("rpc.server", "Echo", "rpc cancelled")
    })
    .await;
    eventually("deadline events", || {
        has("rpc.client", "PingPong", "rpc deadline exceeded")
            && has("rpc.server", "PingPong", "rpc deadline exceeded")
    })
    .await;
    let client = capture.spans("rpc.client", "PingPong").remove(0);
    assert_eq!(
        client.fields["rpc.status_code"],
        (Code::DeadlineExceeded as i32).to_string()
    );
    assert_eq!(client.fields["otel.status_code"], "ERROR");
}

/// Over gRPC: both spans name the system `grpc` (the transport reports it on both sides) and
/// join one trace through the `traceparent` metadata entry.
#[tokio::test(flavor = "current_thread")]
async fn grpc_spans_name_the_system_grpc_and_join_one_trace() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let running = Listener::new(examples::server())
        .protocol(rpc_transport_grpc::GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .start();
    let addr = running.local_addrs().remove(0);
    let proto = Proto::client(Client::new(rpc_transport_grpc::GrpcClient::new(addr)));
    let mut call = Proto::echo(&proto, CallOptions::new()).await.unwrap();
    call.send(request("m").into()).await.unwrap();
    call.recv().await.unwrap().expect("an echo");
    call.close_send().unwrap();
    assert!(call.recv().await.unwrap().is_none());
    let ended = |name: &str| {
        capture.spans(name, "Echo").first().is_some_and(|s| {
            s.events
                .iter()
                .any(|e| e.get("message").map(String::as_str) == Some("rpc end"))
        })
    };
    eventually("both spans end", || {
        ended("rpc.client") && ended("rpc.server")
    })
    .await;
    let client = capture.spans("rpc.client", "Echo").remove(0);
    let server = capture.spans("rpc.server", "Echo").remove(0);
    assert_eq!(client.fields["rpc.system"], "grpc");
    assert_eq!(server.fields["rpc.system"], "grpc");
    assert_eq!(client.fields["trace_id"], server.fields["trace_id"]);
    assert_eq!(server.fields["parent_span_id"], client.fields["span_id"]);
    running.shutdown(Duration::from_secs(1)).await;
}
