//! `echo-server` and `echo-client` as separate processes, as `shared/echo/README.md` runs them:
//! the server prints `listening <url>`, the client checks every mode for both IDLs, and the
//! server stops cleanly on SIGTERM.

mod support;

use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

struct Server {
    child: Child,
    urls: Vec<String>,
    lines: mpsc::Receiver<String>,
}

fn start_server(listen: &[&str]) -> Server {
    let args: Vec<&str> = listen.iter().flat_map(|l| ["--listen", l]).collect();
    let (child, urls, lines) = support::spawn_echo_server(&args, listen.len());
    Server { child, urls, lines }
}

fn client(url: &str, idl: &str, protocol: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_echo-client"))
        .args(["--connect", url, "--idl", idl, "--mode", "all"])
        .args(["--protocol", protocol])
        .output()
        .expect("run echo-client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn echo_client_passes_against_echo_server_over_tcp_and_unix_with_ttheader_and_grpc_on_one_port_and_server_stops_on_sigterm(
) {
    let sock = std::env::temp_dir().join(format!("echo-bin-{}.sock", std::process::id()));
    let unix = format!("unix://{}", sock.display());
    let mut server = start_server(&["tcp://127.0.0.1:0", &unix]);
    assert!(
        server.urls[0].starts_with("tcp://127.0.0.1:"),
        "{:?}",
        server.urls
    );
    assert!(!server.urls[0].ends_with(":0"), "the bound port is printed");
    for url in &server.urls {
        // The same listener (one port, one socket path) serves both protocols.
        for (idl, protocol) in [
            ("thrift", "ttheader"),
            ("proto", "ttheader"),
            ("thrift", "grpc"),
            ("proto", "grpc"),
        ] {
            let (ok, out) = client(url, idl, protocol);
            assert!(ok, "{url} {idl} {protocol}:\n{out}");
            for mode in ["unary", "client", "server", "bidi"] {
                assert!(
                    out.lines().any(|l| l.starts_with(&format!("ok {mode} "))),
                    "{out}"
                );
            }
        }
    }
    // SIGTERM: graceful shutdown, exit 0.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = server.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "echo-server did not stop"
            );
            let _ = server.lines.recv_timeout(Duration::from_millis(50));
        }
    };
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the socket file is removed");
}

#[test]
fn echo_client_reports_failure_when_nothing_listens() {
    let (ok, out) = client("tcp://127.0.0.1:1", "thrift", "ttheader");
    assert!(!ok);
    assert!(out.lines().all(|l| l.starts_with("FAIL ")), "{out}");
}
