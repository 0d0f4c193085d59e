//! The client side of the interop test cases (grpc/grpc `doc/interop-test-descriptions.md`).
//!
//! Each case returns `Ok(())` when every assertion of the description held and `Err` with what
//! differed otherwise. A case never waits unboundedly: the caller bounds it ([`run`]).

use std::time::Duration;

use bytes::Bytes;
use rpc_core::{CallOptions, Code, Metadata, Status};

use super::compression::{call_with, Compression, MessageCompression};
use super::testing::{
    BoolValue, EchoStatus, Empty, Payload, ResponseParameters, SimpleRequest,
    StreamingInputCallRequest, StreamingOutputCallRequest, StreamingOutputCallResponse,
    TestServiceClient, UnimplementedServiceClient,
};
use super::{ECHO_INITIAL_KEY, ECHO_TRAILING_KEY};

/// Every case this client implements, in the order `--test_case=all` runs them.
pub const ALL: [&str; 18] = [
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
    "client_compressed_unary",
    "client_compressed_streaming",
    "server_compressed_unary",
    "server_compressed_streaming",
];

/// How long one case may take before it counts as failed.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The clients and settings the cases run with.
#[derive(Debug, Clone)]
pub struct Clients {
    /// `grpc.testing.TestService`.
    pub test: TestServiceClient,
    /// `grpc.testing.UnimplementedService` (served by no interop server).
    pub unimplemented: UnimplementedServiceClient,
    /// Whether the compression cases send their feature probe (an uncompressed request with
    /// `expect_compressed: true`, which a server implementing CompressedRequest rejects with
    /// `INVALID_ARGUMENT`). On by default, as the description asks; off only for servers that
    /// cannot see compression (grpcio's Python servicers), where the probe cannot fail.
    pub compression_probe: bool,
}

/// Runs the case `name`, bounded by [`CASE_TIMEOUT`].
pub async fn run(name: &str, c: &Clients) -> Result<(), String> {
    let case = async {
        match name {
            "empty_unary" => empty_unary(c).await,
            "large_unary" => large_unary(c).await,
            "client_streaming" => client_streaming(c).await,
            "server_streaming" => server_streaming(c).await,
            "ping_pong" => ping_pong(c).await,
            "empty_stream" => empty_stream(c).await,
            "custom_metadata" => custom_metadata(c).await,
            "status_code_and_message" => status_code_and_message(c).await,
            "special_status_message" => special_status_message(c).await,
            "unimplemented_method" => unimplemented_method(c).await,
            "unimplemented_service" => unimplemented_service(c).await,
            "cancel_after_begin" => cancel_after_begin(c).await,
            "cancel_after_first_response" => cancel_after_first_response(c).await,
            "timeout_on_sleeping_server" => timeout_on_sleeping_server(c).await,
            "client_compressed_unary" => client_compressed_unary(c).await,
            "client_compressed_streaming" => client_compressed_streaming(c).await,
            "server_compressed_unary" => server_compressed_unary(c).await,
            "server_compressed_streaming" => server_compressed_streaming(c).await,
            other => Err(format!("unknown test case {other:?}")),
        }
    };
    match tokio::time::timeout(CASE_TIMEOUT, case).await {
        Ok(r) => r,
        Err(_) => Err(format!("did not finish within {CASE_TIMEOUT:?}")),
    }
}

fn zeros(n: usize) -> Option<Payload> {
    Some(Payload {
        r#type: 0,
        body: vec![0; n],
    })
}

fn large_request() -> SimpleRequest {
    SimpleRequest {
        response_size: 314_159,
        payload: zeros(271_828),
        ..SimpleRequest::default()
    }
}

fn bool_value(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

fn failed(what: &str, s: &Status) -> String {
    format!("{what}: {:?} {:?}", s.code(), s.message())
}

/// The body of a payload when it is `want` zero bytes.
fn check_zeros(what: &str, payload: Option<&Payload>, want: usize) -> Result<(), String> {
    let body = payload.map_or(&[][..], |p| &p.body[..]);
    if body.len() != want {
        return Err(format!(
            "{what}: payload of {} bytes, want {want}",
            body.len()
        ));
    }
    if body.iter().any(|b| *b != 0) {
        return Err(format!("{what}: payload is not all zeros"));
    }
    Ok(())
}

fn expect_code<T>(what: &str, r: Result<T, Status>, want: Code) -> Result<Status, String> {
    match r {
        Ok(_) => Err(format!("{what}: succeeded, want {want:?}")),
        Err(s) if s.code() == want => Ok(s),
        Err(s) => Err(format!("{what}: want {want:?}, got {}", failed("", &s))),
    }
}

async fn empty_unary(c: &Clients) -> Result<(), String> {
    c.test
        .empty_call(Empty {})
        .await
        .map(|_| ())
        .map_err(|s| failed("EmptyCall", &s))
}

async fn large_unary(c: &Clients) -> Result<(), String> {
    let res = c
        .test
        .unary_call(large_request())
        .await
        .map_err(|s| failed("UnaryCall", &s))?;
    check_zeros("UnaryCall", res.payload.as_ref(), 314_159)
}

const SIZES_IN: [usize; 4] = [27_182, 8, 1_828, 45_904];
const SIZES_OUT: [usize; 4] = [31_415, 9, 2_653, 58_979];

async fn client_streaming(c: &Clients) -> Result<(), String> {
    let mut call = c
        .test
        .streaming_input_call()
        .await
        .map_err(|s| failed("StreamingInputCall", &s))?;
    for n in SIZES_IN {
        let req = StreamingInputCallRequest {
            payload: zeros(n),
            ..Default::default()
        };
        call.send(req).await.map_err(|s| failed("send", &s))?;
    }
    let res = call
        .close_and_recv()
        .await
        .map_err(|s| failed("StreamingInputCall", &s))?;
    if res.aggregated_payload_size != 74_922 {
        return Err(format!(
            "aggregated_payload_size {}, want 74922",
            res.aggregated_payload_size
        ));
    }
    Ok(())
}

fn output_request(sizes: &[usize]) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: sizes
            .iter()
            .map(|n| ResponseParameters {
                size: i32::try_from(*n).unwrap_or(i32::MAX),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn check_sizes(
    what: &str,
    got: &[StreamingOutputCallResponse],
    want: &[usize],
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} responses, want {}",
            got.len(),
            want.len()
        ));
    }
    for (i, (m, n)) in got.iter().zip(want).enumerate() {
        check_zeros(&format!("{what} response {i}"), m.payload.as_ref(), *n)?;
    }
    Ok(())
}

async fn server_streaming(c: &Clients) -> Result<(), String> {
    let mut call = c
        .test
        .streaming_output_call(output_request(&SIZES_OUT))
        .await
        .map_err(|s| failed("StreamingOutputCall", &s))?;
    let mut got = Vec::new();
    while let Some(m) = call.recv().await.map_err(|s| failed("recv", &s))? {
        got.push(m);
    }
    check_sizes("StreamingOutputCall", &got, &SIZES_OUT)
}

async fn ping_pong(c: &Clients) -> Result<(), String> {
    let mut call = c
        .test
        .full_duplex_call()
        .await
        .map_err(|s| failed("FullDuplexCall", &s))?;
    for (i, (out, inp)) in SIZES_OUT.iter().zip(SIZES_IN).enumerate() {
        let mut req = output_request(&[*out]);
        req.payload = zeros(inp);
        call.send(req).await.map_err(|s| failed("send", &s))?;
        match call.recv().await {
            Ok(Some(m)) => check_zeros(&format!("response {i}"), m.payload.as_ref(), *out)?,
            Ok(None) => return Err(format!("stream ended after {i} responses, want 4")),
            Err(s) => return Err(failed("recv", &s)),
        }
    }
    call.close_send().map_err(|s| failed("close_send", &s))?;
    match call.recv().await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err("a fifth response".into()),
        Err(s) => Err(failed("end of stream", &s)),
    }
}

async fn empty_stream(c: &Clients) -> Result<(), String> {
    let mut call = c
        .test
        .full_duplex_call()
        .await
        .map_err(|s| failed("FullDuplexCall", &s))?;
    call.close_send().map_err(|s| failed("close_send", &s))?;
    match call.recv().await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err("a response, want none".into()),
        Err(s) => Err(failed("end of stream", &s)),
    }
}

const INITIAL_VALUE: &str = "test_initial_metadata_value";
const TRAILING_VALUE: [u8; 3] = [0xab, 0xab, 0xab];

fn echo_metadata_options() -> CallOptions {
    CallOptions::new()
        .metadata(ECHO_INITIAL_KEY, INITIAL_VALUE)
        .metadata(ECHO_TRAILING_KEY, Bytes::from_static(&TRAILING_VALUE))
}

fn check_echoed(what: &str, header: &Metadata, trailer: &Metadata) -> Result<(), String> {
    if header.get_str(ECHO_INITIAL_KEY) != Some(INITIAL_VALUE) {
        return Err(format!(
            "{what}: header {header:?} lacks {ECHO_INITIAL_KEY}: {INITIAL_VALUE}"
        ));
    }
    if trailer.get(ECHO_TRAILING_KEY).map(|v| v.as_bytes()) != Some(&TRAILING_VALUE[..]) {
        return Err(format!(
            "{what}: trailer {trailer:?} lacks {ECHO_TRAILING_KEY}: 0xababab"
        ));
    }
    Ok(())
}

async fn custom_metadata(c: &Clients) -> Result<(), String> {
    let res = c
        .test
        .unary_call_with(large_request(), echo_metadata_options())
        .await
        .map_err(|s| failed("UnaryCall", &s))?;
    check_zeros("UnaryCall", res.get_ref().payload.as_ref(), 314_159)?;
    check_echoed("UnaryCall", res.header(), res.trailer())?;

    let mut call = c
        .test
        .full_duplex_call_with(echo_metadata_options())
        .await
        .map_err(|s| failed("FullDuplexCall", &s))?;
    let mut req = output_request(&[314_159]);
    req.payload = zeros(271_828);
    call.send(req).await.map_err(|s| failed("send", &s))?;
    call.close_send().map_err(|s| failed("close_send", &s))?;
    let mut got = Vec::new();
    while let Some(m) = call.recv().await.map_err(|s| failed("recv", &s))? {
        got.push(m);
    }
    check_sizes("FullDuplexCall", &got, &[314_159])?;
    let header = call.header().await.map_err(|s| failed("header", &s))?;
    let trailer = call.trailer().unwrap_or_default();
    check_echoed("FullDuplexCall", &header, &trailer)
}

async fn echo_status(c: &Clients, message: &str, duplex: bool) -> Result<(), String> {
    let status = Some(EchoStatus {
        code: 2,
        message: message.to_owned(),
    });
    let r = c
        .test
        .unary_call(SimpleRequest {
            response_status: status.clone(),
            ..Default::default()
        })
        .await;
    let s = expect_code("UnaryCall", r, Code::Unknown)?;
    if s.message() != message {
        return Err(format!(
            "UnaryCall: message {:?}, want {message:?}",
            s.message()
        ));
    }
    if !duplex {
        return Ok(());
    }
    let mut call = c
        .test
        .full_duplex_call()
        .await
        .map_err(|s| failed("FullDuplexCall", &s))?;
    let req = StreamingOutputCallRequest {
        response_status: status,
        ..Default::default()
    };
    // The server may end the stream before our half-close lands: a failed send or close
    // carries the same status as the next recv, which is what we check.
    let _ = call.send(req).await;
    let _ = call.close_send();
    let r = loop {
        match call.recv().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let s = expect_code("FullDuplexCall", r, Code::Unknown)?;
    if s.message() != message {
        return Err(format!(
            "FullDuplexCall: message {:?}, want {message:?}",
            s.message()
        ));
    }
    Ok(())
}

async fn status_code_and_message(c: &Clients) -> Result<(), String> {
    echo_status(c, "test status message", true).await
}

async fn special_status_message(c: &Clients) -> Result<(), String> {
    echo_status(
        c,
        "\t\ntest with whitespace\r\nand Unicode BMP \u{263a} and non-BMP \u{1f608}\t\n",
        false,
    )
    .await
}

async fn unimplemented_method(c: &Clients) -> Result<(), String> {
    let r = c.test.unimplemented_call(Empty {}).await;
    expect_code("UnimplementedCall", r, Code::Unimplemented).map(|_| ())
}

async fn unimplemented_service(c: &Clients) -> Result<(), String> {
    let r = c.unimplemented.unimplemented_call(Empty {}).await;
    expect_code(
        "UnimplementedService/UnimplementedCall",
        r,
        Code::Unimplemented,
    )
    .map(|_| ())
}

async fn cancel_after_begin(c: &Clients) -> Result<(), String> {
    let mut call = c
        .test
        .streaming_input_call()
        .await
        .map_err(|s| failed("StreamingInputCall", &s))?;
    call.cancel();
    expect_code(
        "StreamingInputCall",
        call.close_and_recv().await,
        Code::Cancelled,
    )
    .map(|_| ())
}

async fn cancel_after_first_response(c: &Clients) -> Result<(), String> {
    let mut call = c
        .test
        .full_duplex_call()
        .await
        .map_err(|s| failed("FullDuplexCall", &s))?;
    let mut req = output_request(&[31_415]);
    req.payload = zeros(27_182);
    call.send(req).await.map_err(|s| failed("send", &s))?;
    match call.recv().await {
        Ok(Some(m)) => check_zeros("response", m.payload.as_ref(), 31_415)?,
        Ok(None) => return Err("stream ended before the first response".into()),
        Err(s) => return Err(failed("recv", &s)),
    }
    call.cancel();
    expect_code("FullDuplexCall", call.recv().await, Code::Cancelled).map(|_| ())
}

async fn timeout_on_sleeping_server(c: &Clients) -> Result<(), String> {
    let opts = CallOptions::new().timeout(Duration::from_millis(1));
    let mut call = match c.test.full_duplex_call_with(opts).await {
        Ok(call) => call,
        // The deadline may pass before the stream is even open.
        Err(s) => {
            return expect_code::<()>("FullDuplexCall", Err(s), Code::DeadlineExceeded).map(|_| ())
        }
    };
    let req = StreamingOutputCallRequest {
        payload: zeros(27_182),
        ..Default::default()
    };
    // A send may already fail with the deadline; the receive reports the call's outcome.
    let _ = call.send(req).await;
    let r = loop {
        match call.recv().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    expect_code("FullDuplexCall", r, Code::DeadlineExceeded).map(|_| ())
}

/// Whether a message arrived with the compressed flag `want`, as the call's handle saw it.
fn check_flag(what: &str, handle: &MessageCompression, want: bool) -> Result<(), String> {
    if !handle.received_any() {
        return Err(format!(
            "{what}: the transport recorded no received message (no compression support?)"
        ));
    }
    match handle.last_received_compressed() {
        got if got == want => Ok(()),
        got => Err(format!("{what}: compressed flag {got}, want {want}")),
    }
}

async fn client_compressed_unary(c: &Clients) -> Result<(), String> {
    let probe = SimpleRequest {
        expect_compressed: bool_value(true),
        ..large_request()
    };
    if c.compression_probe {
        let (opts, _) = call_with(Compression::Identity);
        let r = c.test.unary_call_with(probe.clone(), opts).await;
        expect_code("uncompressed probe", r, Code::InvalidArgument)?;
    }
    let (opts, _) = call_with(Compression::Gzip);
    let res = c
        .test
        .unary_call_with(probe, opts)
        .await
        .map_err(|s| failed("compressed UnaryCall", &s))?;
    check_zeros(
        "compressed UnaryCall",
        res.get_ref().payload.as_ref(),
        314_159,
    )?;
    let plain = SimpleRequest {
        expect_compressed: bool_value(false),
        ..large_request()
    };
    let (opts, _) = call_with(Compression::Identity);
    let res = c
        .test
        .unary_call_with(plain, opts)
        .await
        .map_err(|s| failed("uncompressed UnaryCall", &s))?;
    check_zeros(
        "uncompressed UnaryCall",
        res.get_ref().payload.as_ref(),
        314_159,
    )
}

async fn client_compressed_streaming(c: &Clients) -> Result<(), String> {
    let probe = StreamingInputCallRequest {
        expect_compressed: bool_value(true),
        payload: zeros(27_182),
    };
    if c.compression_probe {
        let (opts, _) = call_with(Compression::Identity);
        let mut call = c
            .test
            .streaming_input_call_with(opts)
            .await
            .map_err(|s| failed("StreamingInputCall", &s))?;
        // The server may reject the probe before our half-close lands; the outcome is the
        // call's status either way.
        let _ = call.send(probe.clone()).await;
        expect_code(
            "uncompressed probe",
            call.close_and_recv().await,
            Code::InvalidArgument,
        )?;
    }
    let (opts, handle) = call_with(Compression::Gzip);
    let mut call = c
        .test
        .streaming_input_call_with(opts)
        .await
        .map_err(|s| failed("StreamingInputCall", &s))?;
    call.send(probe)
        .await
        .map_err(|s| failed("send compressed", &s))?;
    handle.set_send(Compression::Identity);
    let plain = StreamingInputCallRequest {
        expect_compressed: bool_value(false),
        payload: zeros(45_904),
    };
    call.send(plain)
        .await
        .map_err(|s| failed("send uncompressed", &s))?;
    let res = call
        .close_and_recv()
        .await
        .map_err(|s| failed("StreamingInputCall", &s))?;
    if res.aggregated_payload_size != 73_086 {
        return Err(format!(
            "aggregated_payload_size {}, want 73086",
            res.aggregated_payload_size
        ));
    }
    Ok(())
}

async fn server_compressed_unary(c: &Clients) -> Result<(), String> {
    for on in [true, false] {
        let req = SimpleRequest {
            response_compressed: bool_value(on),
            ..large_request()
        };
        let what = format!("UnaryCall response_compressed={on}");
        let (opts, handle) = call_with(Compression::Identity);
        let res = c
            .test
            .unary_call_with(req, opts)
            .await
            .map_err(|s| failed(&what, &s))?;
        check_zeros(&what, res.get_ref().payload.as_ref(), 314_159)?;
        check_flag(&what, &handle, on)?;
    }
    Ok(())
}

async fn server_compressed_streaming(c: &Clients) -> Result<(), String> {
    let sizes = [31_415, 92_653];
    let req = StreamingOutputCallRequest {
        response_parameters: vec![
            ResponseParameters {
                size: 31_415,
                compressed: bool_value(true),
                ..Default::default()
            },
            ResponseParameters {
                size: 92_653,
                compressed: bool_value(false),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let (opts, handle) = call_with(Compression::Identity);
    let mut call = c
        .test
        .streaming_output_call_with(req, opts)
        .await
        .map_err(|s| failed("StreamingOutputCall", &s))?;
    for (i, (size, compressed)) in sizes.into_iter().zip([true, false]).enumerate() {
        let what = format!("response {i}");
        match call.recv().await {
            Ok(Some(m)) => check_zeros(&what, m.payload.as_ref(), size)?,
            Ok(None) => return Err(format!("stream ended after {i} responses, want 2")),
            Err(s) => return Err(failed("recv", &s)),
        }
        check_flag(&what, &handle, compressed)?;
    }
    match call.recv().await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err("a third response".into()),
        Err(s) => Err(failed("end of stream", &s)),
    }
}
