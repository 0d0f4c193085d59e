//! Runs every cookbook example (`examples/examples/*.rs`, linked from the guide) as the
//! process a user gets from `cargo run -p examples --example NAME`, with a bounded timeout,
//! and checks what it prints. The etcd example runs against a real etcd started here.

#[allow(dead_code)]
#[path = "support/etcd.rs"]
mod etcd_support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// How long one example may run before the test kills it and fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory cargo puts example binaries in, next to this test's own binary
/// (`target/<profile>/deps/cookbook-*` → `target/<profile>/examples`).
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir.join("examples")
}

/// Builds the examples once per test run (a no-op after `cargo test`, which builds them; needed
/// after `cargo test --test cookbook`, which does not), with the cargo that runs this test.
fn build_examples() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = examples_dir();
        let profile_dir = dir.parent().expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args([
                "build",
                "--quiet",
                "-p",
                "examples",
                "--examples",
                "--target-dir",
            ])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build --examples");
        assert!(status.success(), "cargo build --examples failed");
        dir
    })
}

/// Runs example `name` with `args` to its end (killed after [`RUN_TIMEOUT`]); returns its
/// stdout after checking it exited with success.
fn run(name: &str, args: &[&str]) -> String {
    let exe = build_examples().join(name);
    let child = Command::new(&exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(out) => out.expect("wait for the example"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("example {name} did not finish within {RUN_TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "example {name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// Asserts that `out` has a line equal to each of `lines`.
fn has_lines(name: &str, out: &str, lines: &[&str]) {
    for want in lines {
        assert!(
            out.lines().any(|l| l == *want),
            "example {name} did not print {want:?}; it printed:\n{out}"
        );
    }
}

#[test]
fn hello() {
    has_lines("hello", &run("hello", &[]), &["hello, world"]);
}

#[test]
fn generic() {
    let out = run("generic", &[]);
    has_lines("generic", &out, &["hello, typed", "hello, generic"]);
}

#[test]
fn chat_grpc() {
    let out = run("chat_grpc", &[]);
    has_lines(
        "chat_grpc",
        &out,
        &[
            "lockstep: PING",
            "received: HELLO",
            "received: STREAMING",
            "received: WORLD",
            "stream ended: OK",
        ],
    );
}

#[test]
fn chat_ttheader_shm() {
    let out = run("chat_ttheader_shm", &[]);
    let mut want = vec!["ttheader: one -> ONE", "ttheader: two -> TWO"];
    if cfg!(target_os = "linux") {
        want.extend(["shm: one -> ONE", "shm: two -> TWO"]);
    }
    has_lines("chat_ttheader_shm", &out, &want);
}

#[test]
fn middleware() {
    let out = run("middleware", &[]);
    has_lines(
        "middleware",
        &out,
        &[
            "server layer: call to /cookbook.Chat/Talk",
            r#"server recv: "hi" on Talk"#,
            "client recv: alice: HI",
            "client send rejected: INVALID_ARGUMENT empty note",
            r#"server recv: "still open" on Talk"#,
            "client recv: alice: STILL OPEN",
        ],
    );
    // The rejected message never reached the server.
    assert!(!out.contains(r#"server recv: """#), "{out}");
}

#[test]
fn cancel_deadline() {
    let out = run("cancel_deadline", &[]);
    has_lines(
        "cancel_deadline",
        &out,
        &[
            "client: the stream ended with DEADLINE_EXCEEDED",
            "server: the handler saw DEADLINE_EXCEEDED",
            "client: got 1000, cancelling",
            "server: the handler saw CANCELLED",
        ],
    );
}

#[test]
fn typed_errors() {
    let out = run("typed_errors", &[]);
    let biz = r#"biz=Some((1001, "account frozen", Some("{\"until\":\"2027\"}")))"#;
    let frozen = format!(r#"UNKNOWN "account frozen" x-balance=None details=0B {biz}"#);
    let carol = r#"NOT_FOUND "no account \"carol\"" x-balance=None details=0B biz=None"#;
    has_lines(
        "typed_errors",
        &out,
        &[
            "grpc alice: ok, 20 left",
            r#"grpc alice: FAILED_PRECONDITION "insufficient funds" x-balance=Some("30") details=2B biz=None"#,
            &format!("grpc bob: {frozen}"),
            &format!("grpc carol: {carol}"),
            "ttheader alice: ok, 20 left",
            // TTHeader carries the error's metadata but not its details bytes.
            r#"ttheader alice: FAILED_PRECONDITION "insufficient funds" x-balance=Some("30") details=0B biz=None"#,
            &format!("ttheader bob: {frozen}"),
            &format!("ttheader carol: {carol}"),
        ],
    );
}

#[test]
fn tls_limits() {
    let out = run("tls_limits", &[]);
    has_lines(
        "tls_limits",
        &out,
        &[
            "ttheader: HELLO (over TLS: true)",
            "grpc: HELLO (over TLS: true)",
            "grpc, 5 MiB message: RESOURCE_EXHAUSTED",
        ],
    );
}

#[test]
fn tracing_prometheus() {
    let out = run("tracing_prometheus", &[]);
    let trace_ids = |span: &str| -> std::collections::BTreeSet<String> {
        out.lines()
            .filter(|l| l.contains(&format!("{span}{{")) && l.contains("rpc end"))
            .filter_map(|l| l.split("trace_id=\"").nth(1)?.split('"').next())
            .map(str::to_owned)
            .collect()
    };
    // One span per call on each side; the server's joins the client's trace.
    let (client, server) = (trace_ids("rpc.client"), trace_ids("rpc.server"));
    assert_eq!(client.len(), 2, "{out}");
    assert_eq!(client, server, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(" INFO rpc.server{") && l.contains("in the handler")),
        "{out}"
    );
    let method = r#"rpc_system="grpc",rpc_service="hello.Greeter",rpc_method="SayHello""#;
    has_lines(
        "tracing_prometheus",
        &out,
        &[
            &format!(r#"rpc_server_finished_total{{{method},rpc_status="OK"}} 2"#),
            &format!(r#"rpc_client_finished_total{{{method},rpc_status="OK"}} 2"#),
            &format!(
                r#"rpc_server_duration_seconds_bucket{{{method},rpc_status="OK",le="+Inf"}} 2"#
            ),
            "rpc_server_active_streams 0",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_balance() {
    let etcd = etcd_support::Etcd::start().await;
    let endpoint = etcd.endpoint();
    let out = tokio::task::spawn_blocking(move || run("etcd_balance", &[&endpoint]))
        .await
        .expect("the example's runner");
    has_lines("etcd_balance", &out, &["instances: 3"]);
    let six = out
        .lines()
        .find_map(|l| l.strip_prefix("6 calls: "))
        .expect("6 calls");
    for server in ["server 0", "server 1", "server 2"] {
        assert!(six.contains(server), "round robin skipped {server}: {out}");
    }
    let after = out
        .lines()
        .find_map(|l| l.strip_prefix("after a stop, 4 calls: "))
        .expect("after a stop");
    assert!(
        !after.contains("server 0"),
        "a stopped server was called: {out}"
    );
    drop(etcd);
}

/// A child process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_runs_until_sigterm() {
    let exe = build_examples().join("serve");
    let mut child = Killed(
        Command::new(&exe)
            .arg("tcp://127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the serve example"),
    );
    let (tx, lines) = mpsc::channel();
    let stdout = child.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || lines.recv_timeout(RUN_TIMEOUT).expect("a line from serve");
    let addr = next()
        .strip_prefix("listening ")
        .expect("listening ADDR")
        .to_owned();
    let reply = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = hello::GreeterClient::connect::<rpc_transport_grpc::GrpcClient>(&addr)?;
        let req = hello::HelloRequest {
            name: "signal".into(),
        };
        tokio::time::timeout(RUN_TIMEOUT, client.say_hello(req))
            .await
            .map_err(|_| rpc_core::Status::deadline_exceeded("no reply"))?
    });
    assert_eq!(reply.expect("a call to serve").message, "hello, signal");
    let pid = child.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    assert_eq!(next(), "stopping");
    assert_eq!(next(), "stopped");
    // Its stdout closes when it exits.
    assert_eq!(
        lines.recv_timeout(RUN_TIMEOUT),
        Err(mpsc::RecvTimeoutError::Disconnected),
        "serve did not exit after stopping"
    );
    let status = child.0.wait().expect("wait for serve");
    assert!(status.success(), "serve exited with {status}");
}

mod hello {
    rpc_core::include_generated!("hello");
}
