//! The dynamic protobuf client (`rpc_grpc_services::dynamic`) against a real server serving
//! reflection: descriptors fetched at run time, every mode of `echo.TestService` called with
//! text-format messages over gRPC and TTHeader, directly and through the `--forward` relay;
//! and `echo-client --call` against the `echo-server` binary.

mod support;

use std::time::Duration;

use rpc_core::serve::{Listener, Running};
use rpc_core::{Address, CallOptions, Client, Code};
use rpc_grpc_services::dynamic::DynamicClient;
use rpc_grpc_services::health::HealthReporter;
use rpc_transport_grpc::{GrpcClient, GrpcProtocol};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

const WAIT: Duration = Duration::from_secs(10);

async fn listen(server: rpc_core::Server) -> Running {
    Listener::new(server)
        .protocol(TtHeaderProtocol::default())
        .protocol(GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind")
        .start()
}

fn clients(addr: &Address) -> [(&'static str, Client); 2] {
    [
        ("grpc", Client::new(GrpcClient::new(addr.clone()))),
        ("ttheader", Client::new(TtHeaderClient::new(addr.clone()))),
    ]
}

/// Reflection over gRPC (over TTHeader the bare service name `ServerReflection` that its
/// client sends is ambiguous between `v1` and `v1alpha`), then every call over `client`.
async fn check(name: &str, grpc: Client, client: Client) {
    let reflected = tokio::time::timeout(WAIT, DynamicClient::from_reflection(grpc))
        .await
        .expect("reflection hung")
        .unwrap_or_else(|e| panic!("{name}: reflection: {e:?}"));
    let dynamic = DynamicClient::new(client, reflected.pool().clone());
    assert!(
        dynamic.services().iter().any(|s| s == "echo.TestService"),
        "{name}: {:?}",
        dynamic.services()
    );
    let call = |method: &'static str, texts: &'static [&'static str]| {
        let dynamic = dynamic.clone();
        async move {
            let m = dynamic.method(method)?;
            let reqs = texts
                .iter()
                .map(|t| dynamic.parse_request(&m, t))
                .collect::<Result<Vec<_>, _>>()?;
            let res = tokio::time::timeout(WAIT, dynamic.call(&m, reqs, CallOptions::new()))
                .await
                .expect("call hung")?;
            Ok::<Vec<String>, rpc_core::Status>(res.iter().map(|r| r.to_text_format()).collect())
        }
    };
    assert_eq!(
        call("echo.TestService/PingPong", &[r#"message: "hi""#])
            .await
            .unwrap(),
        [r#"message:"hi",index:0"#],
        "{name}"
    );
    assert_eq!(
        call(
            "/echo.TestService/EchoClient",
            &[r#"message: "a""#, r#"message: "b""#]
        )
        .await
        .unwrap(),
        [r#"message:"ab",index:2"#],
        "{name}"
    );
    assert_eq!(
        call(
            "echo.TestService.EchoServer",
            &[r#"message: "s" repeat: 2"#]
        )
        .await
        .unwrap(),
        [r#"message:"s",index:0"#, r#"message:"s",index:1"#],
        "{name}"
    );
    assert_eq!(
        call(
            "echo.TestService/Echo",
            &[r#"message: "x""#, r#"message: "y""#]
        )
        .await
        .unwrap(),
        [r#"message:"x",index:0"#, r#"message:"y",index:1"#],
        "{name}"
    );
    // The server's own error, and a method the descriptors do not have.
    let err = call("echo.TestService/PingPong", &[r#"message: "x" fail: "no""#])
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unknown, "no"), "{name}");
    let err = call("echo.TestService/Nope", &[""]).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{name}: {err:?}");
    let err = call("echo.TestService/PingPong", &["nonsense: 1"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamic_client_calls_every_mode_found_through_reflection() {
    let health = HealthReporter::new();
    let backend = listen(examples::server_with_grpc_services(
        rpc_core::ServerLimits::default(),
        &health,
    ))
    .await;
    let backend_addr = backend.local_addrs()[0].clone();
    for (name, client) in clients(&backend_addr) {
        check(name, clients(&backend_addr)[0].1.clone(), client).await;
    }
    // Through the relay: reflection itself is one more bidi method it forwards.
    let proxy = listen(examples::forward::server(
        Client::new(GrpcClient::new(backend_addr)),
        rpc_core::ServerLimits::default(),
    ))
    .await;
    let proxy_addr = proxy.local_addrs()[0].clone();
    for (name, client) in clients(&proxy_addr) {
        let grpc = clients(&proxy_addr)[0].1.clone();
        check(&format!("{name} via the proxy"), grpc, client).await;
    }
}

/// `echo-client --call` against the `echo-server` binary: any method, no IDL.
#[test]
fn echo_client_calls_a_method_found_through_reflection() {
    let (mut server, urls, lines) =
        support::spawn_echo_server(&["--listen", "tcp://127.0.0.1:0"], 1);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_echo-client"))
            .args(["--connect", &urls[0]])
            .args(args)
            .output()
            .expect("run echo-client");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for protocol in ["grpc", "ttheader"] {
        let (ok, out, err) = run(&[
            "--protocol",
            protocol,
            "--call",
            "echo.TestService/EchoServer",
            "--data",
            r#"message: "m" repeat: 2"#,
        ]);
        assert!(ok, "{protocol}: {err}");
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [r#"message:"m",index:0"#, r#"message:"m",index:1"#],
            "{protocol}"
        );
    }
    let (ok, out, _) = run(&["--protocol", "grpc", "--call", "list"]);
    assert!(ok);
    assert!(out.lines().any(|l| l == "echo.TestService"), "{out}");
    let (ok, _, err) = run(&["--protocol", "grpc", "--call", "echo.TestService/Nope"]);
    assert!(!ok);
    assert!(err.contains("Nope"), "{err}");
    let pid = server.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    while lines.recv_timeout(WAIT).expect("echo-server did not stop") != "stopped" {}
    assert!(server.wait().unwrap().success());
}
