//! TLS in the serving layer, over TTHeader: the echo contract (unary TTHeader and ttstream)
//! over a TLS port, mTLS with the client's identity seen by the server, rejected client
//! certificates, server-name verification, and plain/TLS mismatches failing fast. Every
//! certificate is generated here with rcgen.

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use examples::check;
use examples::idl::{PingPongError, Proto, Thrift};
use examples::{EchoIdl, EchoRequest};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rpc_core::net::tls::ClientAuth;
use rpc_core::net::{TlsClientConfig, TlsServerConfig};
use rpc_core::serve::{Listener, Running};
use rpc_core::{Address, CallOptions, Client, Code, Server, Status};
use rpc_transport_ttheader::{TtHeaderClient, TtHeaderProtocol};

/// How long a failure may take to count as "fast": well below every default timeout
/// (frame timeout 30 s, connect timeout 5 s), so a hang cannot pass.
const FAST: Duration = Duration::from_secs(2);

/// A CA and what it signed.
struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    client_der: Vec<u8>,
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

fn leaf(ca: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String, Vec<u8>) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn pki() -> Pki {
    let ca = ca("test CA");
    let (server_cert, server_key, _) = leaf(
        &ca,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key, client_der) =
        leaf(&ca, &["client.test"], ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca_pem: ca.cert.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
        client_der,
    }
}

async fn serve(server: Server, tls: Option<TlsServerConfig>) -> (Running, Address) {
    let addr = Address::tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = Listener::new(server).protocol(TtHeaderProtocol::default());
    let listener = match tls {
        Some(tls) => listener.bind_tls(addr, tls).await.unwrap(),
        None => listener.bind(addr).await.unwrap(),
    };
    let running = listener.start();
    let bound = running.local_addrs().remove(0);
    (running, bound)
}

fn client(addr: &Address, tls: Option<TlsClientConfig>) -> Client {
    let b = TtHeaderClient::builder(addr.clone());
    let b = match tls {
        Some(t) => b.tls(t),
        None => b,
    };
    Client::new(b.build())
}

fn request() -> EchoRequest {
    EchoRequest {
        message: "hi".into(),
        ..EchoRequest::default()
    }
}

/// One pingpong (thrift: unary TTHeader) and one ttstream call (protobuf pingpong); both must
/// fail fast with UNAVAILABLE, and the status is returned.
async fn fails_fast(client: Client) -> Status {
    let start = Instant::now();
    let thrift = Thrift::client(client.clone());
    let err = tokio::time::timeout(
        FAST * 2,
        Thrift::ping_pong(&thrift, request(), CallOptions::new()),
    )
    .await
    .expect("the call ends instead of hanging")
    .expect_err("the call fails");
    let proto = Proto::client(client);
    let err2 = tokio::time::timeout(
        FAST * 2,
        Proto::ping_pong(&proto, request(), CallOptions::new()),
    )
    .await
    .expect("the stream ends instead of hanging")
    .expect_err("the stream fails");
    assert!(start.elapsed() < FAST * 2, "took {:?}", start.elapsed());
    let (PingPongError::Status(err), PingPongError::Status(err2)) = (err, err2) else {
        panic!("a transport failure is a status");
    };
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert_eq!(err2.code(), Code::Unavailable, "{err2}");
    err
}

#[tokio::test]
async fn echo_contract_over_tls() {
    let p = pki();
    let tls = TlsServerConfig::from_pem(p.server_cert.as_bytes(), p.server_key.as_bytes()).unwrap();
    let (running, addr) = serve(examples::server(), Some(tls)).await;
    // The address is an IP: the certificate's IP SAN is what is verified.
    let c = client(
        &addr,
        Some(TlsClientConfig::from_ca_pem(p.ca_pem.as_bytes()).unwrap()),
    );
    for (mode, outcome) in check::run_all::<Thrift>(&Thrift::client(c.clone())).await {
        assert_eq!(outcome.result, Ok(()), "thrift {mode}");
    }
    for (mode, outcome) in check::run_all::<Proto>(&Proto::client(c.clone())).await {
        assert_eq!(outcome.result, Ok(()), "proto {mode}");
    }
    // By name: SNI and verification against the DNS SAN.
    let by_name = client(
        &format!("tcp://localhost:{}", addr.socket_addr().unwrap().port())
            .parse()
            .unwrap(),
        Some(TlsClientConfig::from_ca_pem(p.ca_pem.as_bytes()).unwrap()),
    );
    for (mode, outcome) in check::run_all::<Proto>(&Proto::client(by_name)).await {
        assert_eq!(outcome.result, Ok(()), "proto by name {mode}");
    }
    running.shutdown(Duration::from_secs(1)).await;
}

/// What the server saw of its callers.
#[derive(Default)]
struct Seen {
    leaf: Option<Vec<u8>>,
    valid_for_client: bool,
    valid_for_other: bool,
    sni: Option<String>,
}

#[tokio::test]
async fn mtls_identity_reaches_the_server_context() {
    let p = pki();
    let tls = TlsServerConfig::with_client_auth(
        p.server_cert.as_bytes(),
        p.server_key.as_bytes(),
        p.ca_pem.as_bytes(),
        ClientAuth::Required,
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let server = {
        let seen = seen.clone();
        rpc_core::Server::builder()
            .interceptor(move |ctx| {
                let tls = ctx
                    .peer()
                    .and_then(|p| p.tls())
                    .ok_or_else(|| Status::unauthenticated("not TLS"))?;
                seen.lock().unwrap().push(Seen {
                    leaf: tls.certificates().first().map(|c| c.to_vec()),
                    valid_for_client: tls.certificate_valid_for("client.test"),
                    valid_for_other: tls.certificate_valid_for("other.test"),
                    sni: tls.server_name().map(str::to_owned),
                });
                Ok(())
            })
            .add_service(examples::thrift::TestServiceServer::new(examples::Echo))
            .add_service(examples::proto::TestServiceServer::new(examples::Echo))
            .build()
    };
    let (running, addr) = serve(server, Some(tls)).await;
    let port = addr.socket_addr().unwrap().port();
    let with_cert = TlsClientConfig::from_ca_pem(p.ca_pem.as_bytes())
        .unwrap()
        .client_certificate(p.client_cert.as_bytes(), p.client_key.as_bytes())
        .unwrap();
    let c = client(
        &format!("tcp://localhost:{port}").parse().unwrap(),
        Some(with_cert),
    );
    for (mode, outcome) in check::run_all::<Proto>(&Proto::client(c.clone())).await {
        assert_eq!(outcome.result, Ok(()), "proto {mode}");
    }
    Thrift::ping_pong(&Thrift::client(c), request(), CallOptions::new())
        .await
        .unwrap();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 5, "four proto streams and one unary call");
        for s in seen.iter() {
            assert_eq!(s.leaf.as_deref(), Some(&p.client_der[..]));
            assert!(s.valid_for_client);
            assert!(!s.valid_for_other);
            assert_eq!(s.sni.as_deref(), Some("localhost"));
        }
    }

    // No client certificate: refused by the handshake, fast.
    let no_cert = client(
        &addr,
        Some(TlsClientConfig::from_ca_pem(p.ca_pem.as_bytes()).unwrap()),
    );
    let err = fails_fast(no_cert).await;
    assert!(
        err.message().contains("Certificate"),
        "the alert names the missing certificate: {err}"
    );
    // A certificate from another CA: refused.
    let other = ca("another CA");
    let (cert, key, _) = leaf(
        &other,
        &["client.test"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let foreign = TlsClientConfig::from_ca_pem(p.ca_pem.as_bytes())
        .unwrap()
        .client_certificate(cert.as_bytes(), key.as_bytes())
        .unwrap();
    fails_fast(client(&addr, Some(foreign))).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        5,
        "no refused call reached a handler"
    );
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_server_name_is_verified() {
    let p = pki();
    let tls = TlsServerConfig::from_pem(p.server_cert.as_bytes(), p.server_key.as_bytes()).unwrap();
    let (running, addr) = serve(examples::server(), Some(tls)).await;
    let wrong = TlsClientConfig::from_ca_pem(p.ca_pem.as_bytes())
        .unwrap()
        .server_name("wrong.test")
        .unwrap();
    let err = fails_fast(client(&addr, Some(wrong))).await;
    assert!(err.message().contains("TLS handshake"), "{err}");
    assert!(
        err.message().contains("not valid for name \"wrong.test\""),
        "{err}"
    );
    // A CA the server's certificate does not chain to.
    let other = ca("another CA");
    let untrusted = TlsClientConfig::from_ca_pem(other.cert.pem().as_bytes()).unwrap();
    let err = fails_fast(client(&addr, Some(untrusted))).await;
    assert!(err.message().contains("invalid peer certificate"), "{err}");
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn plain_and_tls_mismatches_fail_fast() {
    let p = pki();
    let tls = TlsServerConfig::from_pem(p.server_cert.as_bytes(), p.server_key.as_bytes()).unwrap();
    let (tls_running, tls_addr) = serve(examples::server(), Some(tls)).await;
    let (plain_running, plain_addr) = serve(examples::server(), None).await;

    // A plaintext client on the TLS port: the server closes at its first byte.
    fails_fast(client(&tls_addr, None)).await;
    // A TLS client on the plaintext port: no protocol recognises a ClientHello.
    let err = fails_fast(client(
        &plain_addr,
        Some(TlsClientConfig::from_ca_pem(p.ca_pem.as_bytes()).unwrap()),
    ))
    .await;
    assert!(err.message().contains("is it serving TLS"), "{err}");
    // Both ports still serve the right clients.
    let ok = client(
        &tls_addr,
        Some(TlsClientConfig::from_ca_pem(p.ca_pem.as_bytes()).unwrap()),
    );
    Proto::ping_pong(&Proto::client(ok), request(), CallOptions::new())
        .await
        .unwrap();
    Proto::ping_pong(
        &Proto::client(client(&plain_addr, None)),
        request(),
        CallOptions::new(),
    )
    .await
    .unwrap();
    tls_running.shutdown(Duration::from_secs(1)).await;
    plain_running.shutdown(Duration::from_secs(1)).await;
}

/// The PEM files of [`pki`] written for the echo binaries: the directory (removed by the
/// test), the CA, and the client's certificate and key.
struct MtlsFiles {
    dir: std::path::PathBuf,
    ca: String,
    ccert: String,
    ckey: String,
}

/// `echo-server` on a TLS port that requires client certificates (`--tls-cert --tls-key
/// --tls-client-ca`), with its files in a temp directory named after `tag`.
fn mtls_echo_server(
    tag: &str,
) -> (
    std::process::Child,
    Vec<String>,
    std::sync::mpsc::Receiver<String>,
    MtlsFiles,
) {
    let p = pki();
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    };
    let (ca, cert, key) = (
        file("ca.pem", &p.ca_pem),
        file("server.pem", &p.server_cert),
        file("server.key", &p.server_key),
    );
    let (ccert, ckey) = (
        file("client.pem", &p.client_cert),
        file("client.key", &p.client_key),
    );
    let (child, urls, lines) = support::spawn_echo_server(
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
        1,
    );
    (
        child,
        urls,
        lines,
        MtlsFiles {
            dir,
            ca,
            ccert,
            ckey,
        },
    )
}

/// `echo-server --tls-cert --tls-key --tls-client-ca` and `echo-client --tls-ca --tls-cert
/// --tls-key` as separate processes: mTLS passes with the client certificate, fails without.
#[test]
fn echo_binaries_speak_mtls() {
    let (mut child, urls, _lines, files) = mtls_echo_server("rpc-tls-bin");
    let MtlsFiles {
        dir,
        ca,
        ccert,
        ckey,
    } = files;
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_echo-client"))
            .args(["--connect", &urls[0], "--idl", "proto", "--tls-ca", &ca])
            .args(extra)
            .output()
            .expect("run echo-client");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = run(&["--tls-cert", &ccert, "--tls-key", &ckey]);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        4,
        "{out}"
    );
    let (ok, out) = run(&[]);
    assert!(!ok, "no client certificate must fail:\n{out}");
    assert!(out.contains("UNAVAILABLE"), "{out}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A peer that starts a TLS handshake and stalls is closed after the frame timeout (the
/// handshake and the protocol preface share it); one that sends plaintext is closed at once.
#[tokio::test]
async fn a_stalled_handshake_is_closed_after_the_frame_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = pki();
    let tls = TlsServerConfig::from_pem(p.server_cert.as_bytes(), p.server_key.as_bytes()).unwrap();
    // One second: long enough that "closed at once" below cannot be mistaken for the timer on
    // a loaded machine, short enough to keep the test quick.
    const FRAME_TIMEOUT: Duration = Duration::from_secs(1);
    let limits = rpc_core::ServerLimits::default().frame_timeout(FRAME_TIMEOUT);
    let (running, addr) = serve(examples::server_with_limits(limits), Some(tls)).await;
    let sock = addr.socket_addr().unwrap();

    let mut stalled = tokio::net::TcpStream::connect(sock).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap(); // a record header, then nothing
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("closed instead of held open")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        start.elapsed() >= FRAME_TIMEOUT - Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );

    let mut plain = tokio::net::TcpStream::connect(sock).await.unwrap();
    plain.write_all(b"\x00\x00\x00\x10hello").await.unwrap();
    let start = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf))
        .await
        .expect("closed instead of held open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        start.elapsed() < FRAME_TIMEOUT,
        "at once, not by the frame timeout: {:?}",
        start.elapsed()
    );
    running.shutdown(Duration::from_secs(1)).await;
}

/// gRPC over TLS: one TLS port serving TTHeader and gRPC; the echo contract over both, gRPC
/// negotiating ALPN `h2` (seen by the server) and TTHeader none; a plain gRPC client on the
/// TLS port fails fast; spans and metrics name the system `grpc`.
#[tokio::test]
async fn echo_contract_over_grpc_and_tls() {
    use rpc_transport_grpc::{GrpcClient, GrpcClientConfig, GrpcProtocol};
    let p = pki();
    let tls = TlsServerConfig::from_pem(p.server_cert.as_bytes(), p.server_key.as_bytes()).unwrap();
    let alpns = Arc::new(Mutex::new(Vec::<Option<Vec<u8>>>::new()));
    let server = {
        let alpns = alpns.clone();
        rpc_core::Server::builder()
            .interceptor(move |ctx| {
                let tls = ctx
                    .peer()
                    .and_then(|p| p.tls())
                    .ok_or_else(|| Status::unauthenticated("not TLS"))?;
                alpns.lock().unwrap().push(tls.alpn().map(<[u8]>::to_vec));
                Ok(())
            })
            .add_service(examples::thrift::TestServiceServer::new(examples::Echo))
            .add_service(examples::proto::TestServiceServer::new(examples::Echo))
            .build()
    };
    let running = Listener::new(server)
        .protocol(TtHeaderProtocol::default())
        .protocol(GrpcProtocol::default())
        .bind_tls(
            Address::tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            tls,
        )
        .await
        .unwrap()
        .start();
    let addr = running.local_addrs().remove(0);
    let ca = || TlsClientConfig::from_ca_pem(p.ca_pem.as_bytes()).unwrap();

    let grpc = GrpcClient::with_config(addr.clone(), GrpcClientConfig::default().tls(ca()));
    assert_eq!(
        rpc_core::transport::ClientTransport::rpc_system(&grpc),
        "grpc"
    );
    let grpc = Client::new(grpc);
    for (mode, outcome) in check::run_all::<Proto>(&Proto::client(grpc.clone())).await {
        assert_eq!(outcome.result, Ok(()), "grpc proto {mode}");
    }
    for (mode, outcome) in check::run_all::<Thrift>(&Thrift::client(grpc)).await {
        assert_eq!(outcome.result, Ok(()), "grpc thrift {mode}");
    }
    {
        let seen = alpns.lock().unwrap();
        assert_eq!(seen.len(), 8, "four proto and four thrift streams");
        assert!(
            seen.iter().all(|a| a.as_deref() == Some(&b"h2"[..])),
            "{seen:?}"
        );
    }
    // TTHeader over TLS on the same port: no ALPN.
    let tt = client(&addr, Some(ca()));
    for (mode, outcome) in check::run_all::<Proto>(&Proto::client(tt)).await {
        assert_eq!(outcome.result, Ok(()), "ttheader proto {mode}");
    }
    assert!(alpns.lock().unwrap()[8..].iter().all(Option::is_none));

    // A plaintext gRPC client on the TLS port fails fast with UNAVAILABLE.
    let plain = Proto::client(Client::new(GrpcClient::new(addr.clone())));
    let start = Instant::now();
    let err = tokio::time::timeout(
        FAST * 2,
        Proto::ping_pong(&plain, request(), CallOptions::new()),
    )
    .await
    .expect("the call ends instead of hanging")
    .expect_err("the call fails");
    assert!(start.elapsed() < FAST * 2, "took {:?}", start.elapsed());
    let PingPongError::Status(err) = err else {
        panic!("a transport failure is a status");
    };
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    running.shutdown(Duration::from_secs(1)).await;
}

/// `echo-client --protocol grpc --tls-ca ... --tls-cert ... --tls-key ...` against
/// `echo-server` with mTLS: the contract over gRPC+TLS between processes.
#[test]
fn echo_binaries_speak_grpc_over_mtls() {
    let (mut child, urls, _lines, files) = mtls_echo_server("rpc-tls-grpc-bin");
    let MtlsFiles {
        dir,
        ca,
        ccert,
        ckey,
    } = files;
    for idl in ["proto", "thrift"] {
        let out = Command::new(env!("CARGO_BIN_EXE_echo-client"))
            .args(["--connect", &urls[0], "--idl", idl, "--protocol", "grpc"])
            .args(["--tls-ca", &ca, "--tls-cert", &ccert, "--tls-key", &ckey])
            .output()
            .expect("run echo-client");
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.lines().filter(|l| l.starts_with("ok ")).count(),
            4,
            "{idl}: {out}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
