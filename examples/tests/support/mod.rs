//! Shared by the tests that run the real `echo-server` binary as a child process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Starts `echo-server` with `args` and waits for `count` `listening <url>` lines; returns the
/// child, the URLs it reported, and its remaining stdout lines.
#[allow(dead_code)] // the memory-bound tests use only the variant with an environment
pub(crate) fn spawn_echo_server(
    args: &[&str],
    count: usize,
) -> (Child, Vec<String>, mpsc::Receiver<String>) {
    spawn_echo_server_with_env(args, count, &[])
}

/// [`spawn_echo_server`] with `env` set for the child.
pub(crate) fn spawn_echo_server_with_env(
    args: &[&str],
    count: usize,
    env: &[(&str, &str)],
) -> (Child, Vec<String>, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn echo-server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut urls = Vec::new();
    while urls.len() < count {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("echo-server did not report its listeners");
        if let Some(url) = line.strip_prefix("listening ") {
            urls.push(url.to_owned());
        }
    }
    (child, urls, lines)
}
