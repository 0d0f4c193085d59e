//! A real etcd for tests: the binary of Debian's `etcd-server` package (installed with apt when
//! missing), on free loopback ports, with its data in a temporary folder, killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rpc_core::discovery::Resolver;

/// How long etcd may take to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The etcd binary: on PATH, or installed from Debian's `etcd-server` package (`apt-get update`
/// first only when the package is unknown to apt).
pub(crate) fn etcd_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = which("etcd") {
            return p;
        }
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "etcd-server"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let updated = Command::new("apt-get")
                .args(["update", "-q"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(updated, "etcd is not on PATH and `apt-get update` failed");
            assert!(
                install(),
                "etcd is not on PATH and `apt-get install etcd-server` failed"
            );
        }
        which("etcd").expect("etcd-server installed but no `etcd` on PATH")
    })
    .clone()
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running etcd (one member), restartable on the same ports and data.
pub(crate) struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub(crate) async fn start() -> Etcd {
        let dir = std::env::temp_dir().join(format!(
            "rpc-etcd-test-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn().await;
        etcd
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    async fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log file");
        let child = Command::new(etcd_binary())
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Waits (bounded) until etcd serves a read.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let endpoint = self.endpoint();
        loop {
            // A resolution is a connect plus a prefix read: etcd serves reads.
            let probe = rpc_registry_etcd::EtcdRegistry::new([endpoint.as_str()])
                .request_timeout(Duration::from_millis(500))
                .resolve("ready-probe");
            if probe.await.is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("etcd exited: {status}; log: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer within {READY_TIMEOUT:?}; log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Stops etcd (SIGKILL: as abrupt as a crash) and waits for it to exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again (after [`Etcd::stop`]) on the same ports with the same data.
    pub(crate) async fn start_again(&mut self) {
        self.spawn().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
