//! The interop cases of `interop-client` against the `TestService` of `interop-server`, in one
//! process over real sockets: over gRPC every one of the 18 passes; over TTHeader Streaming
//! exactly the ones that need what TTHeader does not carry (binary metadata, compression)
//! fail. (`tests/grpcio.rs` runs the binaries against grpcio.)

use interop_tests::grpc_interop::cases::{self, ALL};
use interop_tests::grpc_interop::cli::{connect, Transport};
use interop_tests::grpc_interop::service;
use interop_tests::grpc_interop::testing::{TEST_SERVICE_METHODS, UNIMPLEMENTED_SERVICE_METHODS};
use rpc_core::serve::Listener;
use rpc_core::Mode;
use rpc_transport_grpc::GrpcProtocol;
use rpc_transport_ttheader::TtHeaderProtocol;

async fn run_all(transport: Transport) -> Vec<(&'static str, Result<(), String>)> {
    let running = Listener::new(service::server())
        .protocol(GrpcProtocol::default())
        .protocol(TtHeaderProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind")
        .start();
    let clients = connect(transport, &running.local_addrs()[0], true).expect("connect");
    let mut out = Vec::new();
    for name in ALL {
        out.push((name, cases::run(name, &clients).await));
    }
    running.shutdown(std::time::Duration::from_secs(1)).await;
    out
}

#[tokio::test]
async fn all_cases_pass_over_grpc() {
    for (name, r) in run_all(Transport::Grpc).await {
        assert_eq!(r, Ok(()), "{name}");
    }
}

#[tokio::test]
async fn over_ttheader_only_compression_fails() {
    // custom_metadata's binary `-bin` trailer travels as raw string-KV bytes (Kitex's binary
    // metainfo form), so it passes; gRPC compression has no TTHeader form.
    let expected_failures = [
        "client_compressed_unary",
        "client_compressed_streaming",
        "server_compressed_unary",
        "server_compressed_streaming",
    ];
    for (name, r) in run_all(Transport::TtHeader).await {
        assert_eq!(
            r.is_err(),
            expected_failures.contains(&name),
            "{name}: {r:?}"
        );
    }
}

#[test]
fn generated_descriptors_have_the_interop_paths_and_modes() {
    let paths: Vec<(&str, Mode)> = TEST_SERVICE_METHODS
        .iter()
        .map(|m| (m.path, m.mode))
        .collect();
    assert_eq!(
        paths,
        [
            ("/grpc.testing.TestService/EmptyCall", Mode::Unary),
            ("/grpc.testing.TestService/UnaryCall", Mode::Unary),
            ("/grpc.testing.TestService/CacheableUnaryCall", Mode::Unary),
            (
                "/grpc.testing.TestService/StreamingOutputCall",
                Mode::ServerStreaming
            ),
            (
                "/grpc.testing.TestService/StreamingInputCall",
                Mode::ClientStreaming
            ),
            ("/grpc.testing.TestService/FullDuplexCall", Mode::Bidi),
            ("/grpc.testing.TestService/HalfDuplexCall", Mode::Bidi),
            ("/grpc.testing.TestService/UnimplementedCall", Mode::Unary),
        ]
    );
    assert_eq!(
        UNIMPLEMENTED_SERVICE_METHODS[0].path,
        "/grpc.testing.UnimplementedService/UnimplementedCall"
    );
}

#[test]
fn interop_messages_encode_as_protobuf() {
    use interop_tests::grpc_interop::testing::{BoolValue, Payload, SimpleRequest};
    use prost::Message;
    let req = SimpleRequest {
        response_size: 3,
        payload: Some(Payload {
            r#type: 0,
            body: vec![0, 0],
        }),
        expect_compressed: Some(BoolValue { value: true }),
        ..Default::default()
    };
    // field 2 varint 3; field 3 len 4 {field 2 len 2 00 00}; field 8 len 2 {field 1 varint 1}
    assert_eq!(
        req.encode_to_vec(),
        [0x10, 3, 0x1a, 4, 0x12, 2, 0, 0, 0x42, 2, 0x08, 1]
    );
}
