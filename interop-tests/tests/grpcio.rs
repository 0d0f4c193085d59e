//! The gRPC interop suite against grpcio (gRPC C-core, through its Python binding), both ways,
//! plus our client against our server:
//!
//! * **ours → grpcio**: our `interop-client` (all 18 cases) against `python/interop.py server`;
//! * **grpcio → ours**: `python/interop.py client` (all 18 cases) against our `interop-server`;
//! * **ours → ours**: our `interop-client` against our `interop-server`, over gRPC.
//!
//! The test installs grpcio itself: a virtualenv under cargo's target tmp dir
//! (`target/tmp/grpcio-<version>`, reused while its pins match; delete it to reinstall) with
//! pinned `grpcio`, `grpcio-tools` and `protobuf` from PyPI, and the Python stubs generated
//! from the protos in `proto/grpc/testing` with `grpc_tools.protoc` into a fresh temporary
//! directory. It needs `python3` with the `venv` module (Debian: `python3-venv`) and network
//! access to PyPI on the first run.
//!
//! Every process is started on a free port, waited for by its "ready" line (never by a
//! sleep), bounded by a timeout, and killed when the test ends, pass or fail.
//!
//! # What grpcio cannot do, and what is asserted instead
//!
//! grpcio hides the per-message compressed flag and `grpc-encoding` from Python servicers
//! (see `_check_compressed` in `interop.py`), so its server cannot implement the
//! CompressedRequest feature: it accepts the *uncompressed* feature probe of
//! `client_compressed_unary` / `client_compressed_streaming`, which the descriptions require a
//! server to reject with `INVALID_ARGUMENT`. Against it, our client therefore must report
//! exactly these two cases as failed, for exactly that reason (asserted), and the cases must
//! pass with the probe step skipped (`--compression_probe=false`): grpcio decoded our gzip
//! requests and our plain ones. The probe step itself is asserted against a server that can
//! see compression: ours (grpcio → ours and ours → ours). Every other case, and all 18 of
//! grpcio's client against our server, must pass outright.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The grpcio release the suite runs against, and the tools and protobuf matching it; the
/// standard services' Python packages are the clients of the health and reflection tests, and
/// `grpcio-status` (with googleapis-common-protos' `google.rpc` messages) the peer of the
/// error-details tests.
const PINS: [&str; 6] = [
    "grpcio==1.85.3",
    "grpcio-tools==1.85.1",
    "protobuf==7.36.2",
    "grpcio-health-checking==1.85.1",
    "grpcio-reflection==1.85.1",
    "grpcio-status==1.85.1",
];

/// Creating the virtualenv and installing the pins (a download on the first run).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Generating the stubs, and a server printing its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// One interop client run (18 cases of a few milliseconds each; 30 s per case at most).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The 18 cases, as `interop-client --test_case` and `interop.py` name them.
const CASES: [&str; 18] = [
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

/// The cases whose feature probe grpcio's server cannot fail (see the module docs).
const PROBED: [&str; 2] = ["client_compressed_unary", "client_compressed_streaming"];

/// Why our client fails [`PROBED`] against grpcio: the probe was accepted.
const PROBE_ACCEPTED: &str = "uncompressed probe: succeeded, want InvalidArgument";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` to completion within `limit`, killing it on timeout; returns its status and
/// output.
async fn run(mut cmd: Command, limit: Duration, what: &str) -> (ExitStatus, String, String) {
    cmd.kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// Runs `cmd` and panics with its output unless it succeeds.
async fn run_ok(cmd: Command, limit: Duration, what: &str) {
    let (status, out, err) = run(cmd, limit, what).await;
    assert!(status.success(), "{what} failed ({status}):\n{out}\n{err}");
}

/// The grpcio peer: a virtualenv with the pins, and a directory with `interop.py` and its
/// generated stubs (removed on drop).
struct Grpcio {
    python: PathBuf,
    dir: PathBuf,
}

impl Drop for Grpcio {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Grpcio {
    async fn install() -> Grpcio {
        // Tests of this file may install at once: one at a time, and each its own stubs dir.
        static INSTALLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        static STUBS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let _installing = INSTALLING.lock().await;
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let venv = tmp.join("grpcio-1.85.3");
        let python = venv.join("bin").join("python");
        let marker = venv.join("installed");
        let pins = PINS.join(" ");
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(pins.as_str()) {
            let _ = std::fs::remove_dir_all(&venv);
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "venv"]).arg(&venv);
            run_ok(
                cmd,
                INSTALL_TIMEOUT,
                "python3 -m venv (needs python3 with venv; Debian: python3-venv)",
            )
            .await;
            let mut cmd = Command::new(&python);
            cmd.args(["-m", "pip", "install", "--quiet", "--no-input"])
                .args(PINS)
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
            run_ok(cmd, INSTALL_TIMEOUT, "pip install the grpcio pins").await;
            std::fs::write(&marker, &pins).expect("write the venv marker");
        }

        let dir = tmp.join(format!(
            "grpcio-stubs-{}-{}",
            std::process::id(),
            STUBS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the stubs dir");
        let grpcio = Grpcio { python, dir };
        let protos = crate_dir().join("proto/grpc/testing");
        let mut cmd = Command::new(&grpcio.python);
        cmd.args(["-m", "grpc_tools.protoc"])
            .arg("-I")
            .arg(&protos)
            .arg(format!("--python_out={}", grpcio.dir.display()))
            .arg(format!("--grpc_python_out={}", grpcio.dir.display()))
            .args(["empty.proto", "messages.proto", "test.proto"]);
        run_ok(cmd, START_TIMEOUT, "grpc_tools.protoc").await;
        std::fs::copy(
            crate_dir().join("python/interop.py"),
            grpcio.dir.join("interop.py"),
        )
        .expect("copy interop.py");
        grpcio
    }

    fn interop(&self) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.current_dir(&self.dir)
            .arg("interop.py")
            .env("PYTHONUNBUFFERED", "1");
        cmd
    }
}

/// A server process, killed on drop.
struct Server {
    _child: Child,
    port: u16,
}

/// Starts `cmd` and waits (bounded) for the stdout line `ready` finds the port in.
async fn start_server(mut cmd: Command, ready: impl Fn(&str) -> Option<u16>, what: &str) -> Server {
    let mut child = cmd
        .kill_on_drop(true)
        .stdin(Stdio::piped()) // our server stops when it closes
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let port = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.ok().flatten() {
            if let Some(port) = ready(&line) {
                return Some(port);
            }
        }
        None
    })
    .await;
    let port = match port {
        Ok(Some(p)) => p,
        Ok(None) => panic!("{what} exited before it was ready"),
        Err(_) => panic!("{what} not ready within {START_TIMEOUT:?}"),
    };
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        _child: child,
        port,
    }
}

/// A port nobody listens on right now, for `interop.py server --port`.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start_grpcio_server(grpcio: &Grpcio) -> Server {
    let port = free_port();
    let mut cmd = grpcio.interop();
    cmd.arg("server").arg(format!("--port={port}"));
    start_server(
        cmd,
        move |line| line.contains("interop server on").then_some(port),
        "interop.py server",
    )
    .await
}

async fn start_our_server() -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_interop-server"));
    cmd.args(["--port=0", "--host=127.0.0.1", "--stop_on_stdin_eof=true"]);
    start_server(
        cmd,
        |line| {
            line.strip_prefix("listening tcp://")
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
        },
        "interop-server",
    )
    .await
}

/// One client run: exit status, and per case `Ok(())` or `Err(why)`.
struct Outcome {
    status: ExitStatus,
    cases: BTreeMap<String, Result<(), String>>,
    output: String,
}

async fn run_client(mut cmd: Command, what: &str) -> Outcome {
    let (status, out, err) = run(
        {
            cmd.env("PYTHONUNBUFFERED", "1");
            cmd
        },
        CLIENT_TIMEOUT,
        what,
    )
    .await;
    let mut cases = BTreeMap::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("PASS ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            cases.insert(name.to_owned(), Ok(()));
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            let (name, why) = rest.split_once(": ").unwrap_or((rest, ""));
            cases.insert(name.to_owned(), Err(why.to_owned()));
        }
    }
    Outcome {
        status,
        cases,
        output: format!("{out}{err}"),
    }
}

fn our_client(port: u16, cases: &[&str], probe: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_interop-client"));
    cmd.args([
        "--server_host=127.0.0.1",
        &format!("--server_port={port}"),
        &format!("--test_case={}", cases.join(",")),
        "--use_tls=false",
        &format!("--compression_probe={probe}"),
    ]);
    cmd
}

fn assert_all_passed(o: &Outcome, what: &str) {
    for case in CASES {
        match o.cases.get(case) {
            Some(Ok(())) => {}
            Some(Err(why)) => panic!("{what}: {case} failed: {why}\n{}", o.output),
            None => panic!("{what}: {case} did not run\n{}", o.output),
        }
    }
    assert!(
        o.status.success(),
        "{what}: exit {}\n{}",
        o.status,
        o.output
    );
}

fn cell(o: &Outcome, case: &str) -> &'static str {
    match o.cases.get(case) {
        Some(Ok(())) => "pass",
        Some(Err(_)) => "FAIL",
        None => "-",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_both_directions_and_ours_against_ours() {
    let grpcio = Grpcio::install().await;

    // grpcio → ours: all 18 pass.
    let ours = start_our_server().await;
    let mut cmd = grpcio.interop();
    cmd.args([
        "client",
        "--server_host=127.0.0.1",
        &format!("--server_port={}", ours.port),
        &format!("--test_case={}", CASES.join(",")),
    ]);
    let from_grpcio = run_client(cmd, "interop.py client → interop-server").await;

    // ours → ours (gRPC): all 18 pass, probes included.
    let ours_ours = run_client(
        our_client(ours.port, &CASES, true),
        "interop-client → interop-server",
    )
    .await;
    drop(ours);

    // ours → grpcio: all 18 with the probes, then the probed cases without them.
    let py = start_grpcio_server(&grpcio).await;
    let to_grpcio = run_client(
        our_client(py.port, &CASES, true),
        "interop-client → interop.py server",
    )
    .await;
    let to_grpcio_no_probe = run_client(
        our_client(py.port, &PROBED, false),
        "interop-client --compression_probe=false → interop.py server",
    )
    .await;
    drop(py);

    // The table first, so a failure below still shows the whole picture.
    println!("| case | ours → grpcio | grpcio → ours | ours → ours |");
    println!("|---|---|---|---|");
    for case in CASES {
        let to = if PROBED.contains(&case) {
            match (to_grpcio.cases.get(case), cell(&to_grpcio_no_probe, case)) {
                (Some(Err(why)), "pass") if why == PROBE_ACCEPTED => "pass (probe n/a¹)",
                _ => "FAIL",
            }
        } else {
            cell(&to_grpcio, case)
        };
        println!(
            "| {case} | {to} | {} | {} |",
            cell(&from_grpcio, case),
            cell(&ours_ours, case)
        );
    }
    println!(
        "\n¹ grpcio's Python servicer cannot see compression, so it accepts the uncompressed \
         probe; the compressed and uncompressed calls pass (probe skipped), and the probe is \
         checked against our server in the other two columns."
    );

    assert_all_passed(&from_grpcio, "grpcio client → our server");
    assert_all_passed(&ours_ours, "our client → our server");
    for case in CASES {
        let got = to_grpcio.cases.get(case);
        if PROBED.contains(&case) {
            assert_eq!(
                got,
                Some(&Err(PROBE_ACCEPTED.to_owned())),
                "our client → grpcio: {case} should fail only at the probe\n{}",
                to_grpcio.output
            );
        } else {
            assert_eq!(
                got,
                Some(&Ok(())),
                "our client → grpcio: {case}\n{}",
                to_grpcio.output
            );
        }
    }
    assert!(
        !to_grpcio.status.success(),
        "two cases failed, exit must be non-zero"
    );
    for case in PROBED {
        assert_eq!(
            to_grpcio_no_probe.cases.get(case),
            Some(&Ok(())),
            "our client → grpcio without probe: {case}\n{}",
            to_grpcio_no_probe.output
        );
    }
    assert!(to_grpcio_no_probe.status.success());
}

/// Our echo server with the standard services (what `echo-server` serves), in process on a
/// free port, so the test can change statuses and shut it down between client steps.
async fn start_services_server() -> (
    rpc_core::serve::Running,
    u16,
    rpc_grpc_services::health::HealthReporter,
) {
    let health = rpc_grpc_services::health::HealthReporter::new();
    let server =
        examples::server_with_grpc_services(rpc_core::limits::ServerLimits::default(), &health);
    let running = rpc_core::serve::Listener::new(server)
        .protocol(rpc_transport_grpc::GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("bind")
        .start();
    health.shutdown_on_drain(&running.shutdown_signal());
    let port = running.local_addrs()[0]
        .socket_addr()
        .expect("a tcp address")
        .port();
    (running, port, health)
}

/// The lines of a running `services.py`, read with a bounded wait each.
struct Lines {
    _child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

impl Lines {
    fn start(grpcio: &Grpcio, args: &[&str]) -> Lines {
        Lines::start_script(grpcio, "services.py", args)
    }

    /// `python/<script>` with `args`; its stdin stays open until it is dropped.
    fn start_script(grpcio: &Grpcio, script: &str, args: &[&str]) -> Lines {
        let mut child = Command::new(&grpcio.python)
            .arg(crate_dir().join("python").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONPATH", &grpcio.dir)
            .kill_on_drop(true)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        Lines {
            _child: child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// The next line, which must be `want`.
    async fn expect(&mut self, want: &str) {
        let line = tokio::time::timeout(START_TIMEOUT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line within {START_TIMEOUT:?}; so far {:?}", self.seen))
            .expect("read services.py")
            .unwrap_or_else(|| panic!("services.py ended; want {want:?}; so far {:?}", self.seen));
        assert_eq!(line, want, "so far {:?}", self.seen);
        self.seen.push(line);
    }
}

/// `grpcio-health-checking`'s client against our health service: Check of the server, a
/// hosted service and an unknown one; Watch following status changes, and NOT_SERVING then
/// the end of the call when graceful shutdown begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_health_client_against_our_health_service() {
    use rpc_grpc_services::health::ServingStatus;
    let grpcio = Grpcio::install().await;
    let (running, port, health) = start_services_server().await;
    let mut py = Lines::start(&grpcio, &["health", &port.to_string()]);
    py.expect("check '' SERVING").await;
    py.expect("check 'echo.TestService' SERVING").await;
    py.expect("check 'no.Such' NOT_FOUND").await;
    py.expect("watch SERVING").await;
    health.set_status("", ServingStatus::NotServing);
    py.expect("watch NOT_SERVING").await;
    health.set_status("", ServingStatus::Serving);
    py.expect("watch SERVING").await;
    let stopping = tokio::spawn(running.shutdown(Duration::from_secs(10)));
    py.expect("watch NOT_SERVING").await;
    py.expect("watch ended OK").await;
    tokio::time::timeout(START_TIMEOUT, stopping)
        .await
        .expect("shutdown completes")
        .expect("shutdown task");
}

/// `grpcio-reflection`'s client (`ProtoReflectionDescriptorDatabase`, v1alpha) with a
/// protobuf descriptor pool over it, and its v1 stub, against our reflection service: the
/// services listed, `echo.TestService` resolved with its methods and message types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_reflection_client_against_our_reflection_service() {
    let grpcio = Grpcio::install().await;
    // grpcio-reflection ships Python stubs for v1alpha only: generate v1's from our copy of
    // the proto (under another file name, so its module does not shadow the `grpc` package).
    std::fs::copy(
        crate_dir().join("../rpc-grpc-services/proto/grpc/reflection/v1/reflection.proto"),
        grpcio.dir.join("reflection_v1.proto"),
    )
    .expect("copy reflection.proto");
    let mut cmd = Command::new(&grpcio.python);
    cmd.args(["-m", "grpc_tools.protoc"])
        .arg("-I")
        .arg(&grpcio.dir)
        .arg(format!("--python_out={}", grpcio.dir.display()))
        .arg(format!("--grpc_python_out={}", grpcio.dir.display()))
        .arg("reflection_v1.proto");
    run_ok(cmd, START_TIMEOUT, "grpc_tools.protoc reflection_v1.proto").await;
    let (running, port, _health) = start_services_server().await;
    let mut py = Lines::start(&grpcio, &["reflection", &port.to_string()]);
    let services = "echo.TestService,grpc.health.v1.Health,grpc.reflection.v1.ServerReflection,\
                    grpc.reflection.v1alpha.ServerReflection";
    py.expect(&format!("services {services}")).await;
    py.expect("service echo.TestService in echo.proto").await;
    py.expect("method PingPong echo.Request echo.Response - -")
        .await;
    py.expect("method Echo echo.Request echo.Response client_streaming server_streaming")
        .await;
    py.expect("method EchoClient echo.Request echo.Response client_streaming -")
        .await;
    py.expect("method EchoServer echo.Request echo.Response - server_streaming")
        .await;
    py.expect("message echo.Request message,repeat,fail,sleep_ms")
        .await;
    py.expect("unknown not found").await;
    py.expect(&format!("v1 services {services}")).await;
    py.expect("v1 files grpc/health/v1/health.proto").await;
    running.shutdown(Duration::from_secs(1)).await;
}

// ---- typed error details with grpcio-status ------------------------------------------------

/// The details both sides send: one of each standard `google.rpc` detail (the same values as
/// `fixture()` in `python/status_details.py`).
fn fixture() -> rpc_core::error_details::ErrorDetails {
    use rpc_core::error_details::{ErrorDetails, PreconditionViolation, QuotaViolation};
    let mut d = ErrorDetails::with_error_info(
        "QUOTA_EXCEEDED",
        "example.com",
        [("zone".to_owned(), "eu".to_owned())],
    );
    d.set_retry_info(Some(Duration::from_millis(1500)))
        .set_debug_info(["a.rs:1".to_owned(), "b.rs:2".to_owned()], "boom")
        .set_quota_failure([QuotaViolation {
            subject: "clientip:127.0.0.1".into(),
            description: "daily limit".into(),
        }])
        .set_precondition_failure([PreconditionViolation {
            r#type: "TOS".into(),
            subject: "user:1".into(),
            description: "not accepted".into(),
        }])
        .add_bad_request_violation("name", "empty")
        .add_bad_request_violation("age", "negative")
        .set_request_info("req-1", "trace")
        .set_resource_info("table", "users", "team", "missing")
        .add_help_link("docs", "https://example.com/docs")
        .set_localized_message("de-DE", "Fehler");
    d
}

/// PingPong fails with [`fixture`] when the request says "details"; nothing else is served.
struct Detailed;

impl examples::proto::TestService for Detailed {
    async fn ping_pong(
        &self,
        _ctx: rpc_core::ServerContext,
        req: examples::proto::Request,
    ) -> Result<examples::proto::Response, rpc_core::Status> {
        match req.message.as_str() {
            "details" => Err(rpc_core::Status::with_error_details(
                rpc_core::Code::InvalidArgument,
                "from ours",
                fixture(),
            )),
            other => Err(rpc_core::Status::invalid_argument(format!("no {other:?}"))),
        }
    }

    async fn echo(
        &self,
        _ctx: rpc_core::ServerContext,
        _stream: rpc_core::BidiStreamingServer<examples::proto::Request, examples::proto::Response>,
    ) -> Result<(), rpc_core::Status> {
        Err(rpc_core::Status::unimplemented("not in this test"))
    }

    async fn echo_client(
        &self,
        _ctx: rpc_core::ServerContext,
        _stream: rpc_core::ClientStreamingServer<examples::proto::Request>,
    ) -> Result<examples::proto::Response, rpc_core::Status> {
        Err(rpc_core::Status::unimplemented("not in this test"))
    }

    async fn echo_server(
        &self,
        _ctx: rpc_core::ServerContext,
        _req: examples::proto::Request,
        _stream: rpc_core::ServerStreamingServer<examples::proto::Response>,
    ) -> Result<(), rpc_core::Status> {
        Err(rpc_core::Status::unimplemented("not in this test"))
    }
}

/// grpcio-status's `rpc_status.from_call` reads our `grpc-status-details-bin`: the
/// `google.rpc.Status` agrees with `grpc-status` and `grpc-message` (from_call checks), and
/// every standard detail unpacks equal to the fixture, in our order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_status_reads_our_error_details() {
    let grpcio = Grpcio::install().await;
    let server = rpc_core::Server::builder()
        .add_service(examples::proto::TestServiceServer::new(Detailed))
        .build();
    let running = rpc_core::serve::Listener::new(server)
        .protocol(rpc_transport_grpc::GrpcProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("bind")
        .start();
    let port = running.local_addrs()[0]
        .socket_addr()
        .expect("a tcp address")
        .port();
    let mut py = Lines::start_script(&grpcio, "status_details.py", &["read", &port.to_string()]);
    py.expect("status INVALID_ARGUMENT from ours").await;
    py.expect("details 10 3 from ours").await;
    for name in [
        "ErrorInfo",
        "RetryInfo",
        "DebugInfo",
        "QuotaFailure",
        "PreconditionFailure",
        "BadRequest",
        "RequestInfo",
        "ResourceInfo",
        "Help",
        "LocalizedMessage",
    ] {
        py.expect(&format!("{name} ok")).await;
    }
    py.expect("done").await;
    running.shutdown(Duration::from_secs(1)).await;
}

/// Our client reads the details a grpcio server packs with `rpc_status.to_status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_reads_grpcio_status_details() {
    let grpcio = Grpcio::install().await;
    let port = free_port();
    let mut py = Lines::start_script(&grpcio, "status_details.py", &["serve", &port.to_string()]);
    py.expect("serving").await;
    let addr: rpc_core::Address = format!("tcp://127.0.0.1:{port}")
        .parse()
        .expect("an address");
    let client = examples::proto::TestServiceClient::new(rpc_core::Client::new(
        rpc_transport_grpc::GrpcClient::new(addr),
    ));
    let req = examples::proto::Request {
        message: "details".into(),
        ..Default::default()
    };
    let e = tokio::time::timeout(START_TIMEOUT, client.ping_pong(req))
        .await
        .expect("the call ends in time")
        .expect_err("grpcio's server fails the call");
    assert_eq!(e.code(), rpc_core::Code::InvalidArgument, "{e:?}");
    assert_eq!(e.message(), "from grpcio");
    let rpc = e
        .check_rpc_status()
        .expect("a google.rpc.Status")
        .expect("details present");
    assert_eq!((rpc.code, rpc.message.as_str()), (3, "from grpcio"));
    assert_eq!(
        e.check_error_details().expect("standard details decode"),
        fixture()
    );
    assert_eq!(e.get_error_details_vec(), fixture().to_vec());
    let bad = e.get_details_bad_request().expect("a BadRequest");
    assert_eq!(bad.field_violations[1].field, "age");
    let retry = e.get_details_retry_info().expect("a RetryInfo");
    assert_eq!(retry.retry_delay(), Some(Duration::from_millis(1500)));
}
