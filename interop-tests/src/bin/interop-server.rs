//! `interop-server --port=P`: the gRPC interop server (`grpc.testing.TestService`, grpc/grpc
//! `doc/interop-test-descriptions.md`), so any official interop client can test ours.
//!
//! Listens on `0.0.0.0:P` (`--port=0` picks a free port) and prints `listening tcp://HOST:PORT`
//! once it accepts connections; serves until SIGINT/SIGTERM or until stdin closes when
//! `--stop_on_stdin_eof=true` (how tests tie it to their lifetime). `--use_tls=false` is
//! accepted; TLS is not supported. `--transport=grpc|ttheader` (default grpc) picks what the
//! listener speaks.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use interop_tests::grpc_interop::cli::{Flags, Transport};
use interop_tests::grpc_interop::service;
use rpc_core::serve::Listener;
use rpc_core::Address;
use rpc_transport_grpc::GrpcProtocol;
use rpc_transport_ttheader::TtHeaderProtocol;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

/// How long open calls may take to finish after a stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

const USAGE: &str = "usage: interop-server --port=PORT [--use_tls=false] [--transport=grpc|ttheader] [--stop_on_stdin_eof=true]";

#[tokio::main]
async fn main() -> ExitCode {
    let flags = match Flags::parse(
        std::env::args().skip(1),
        &["port", "transport", "stop_on_stdin_eof", "host"],
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("interop-server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let parsed = (|| {
        Ok::<_, String>((
            flags.parse_or("port", 10000u16)?,
            flags.parse_or("transport", Transport::Grpc)?,
            flags.parse_or("stop_on_stdin_eof", false)?,
            flags.get("host").unwrap_or("0.0.0.0").to_owned(),
        ))
    })();
    let (port, transport, stdin_stop, host) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("interop-server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = Listener::new(service::server());
    let listener = match transport {
        // TTHeader shares the port with gRPC (told apart per connection by the HTTP/2 preface).
        Transport::Grpc => listener
            .protocol(GrpcProtocol::default())
            .protocol(TtHeaderProtocol::default()),
        Transport::TtHeader => listener.protocol(TtHeaderProtocol::default()),
    };
    let running = match listener.bind(Address::Tcp { host, port }).await {
        Ok(l) => l.start(),
        Err(e) => {
            eprintln!("interop-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in running.local_addrs() {
        println!("listening {addr}");
    }
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("interop-server: cannot watch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdin_closed = async {
        if !stdin_stop {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = stdin_closed => {}
    }
    running.shutdown(SHUTDOWN_GRACE).await;
    ExitCode::SUCCESS
}
