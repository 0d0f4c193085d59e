//! The client side of the echo contract: one scenario per mode, every response verified.
//!
//! `messages` counts what crossed the wire for the scenario: requests sent plus responses
//! received.

use std::fmt;
use std::time::{Duration, Instant};

use rpc_core::CallOptions;

use crate::idl::EchoIdl;
use crate::service::{EchoRequest, EchoResponse, DEFAULT_REPEAT};

/// The four modes, as the demo names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `PingPong` (the one unary method of the echo contract).
    Unary,
    /// `EchoClient`.
    Client,
    /// `EchoServer`.
    Server,
    /// `Echo`.
    Bidi,
}

impl Mode {
    /// Every mode, in the order the demo runs them.
    pub const ALL: [Mode; 4] = [Mode::Unary, Mode::Client, Mode::Server, Mode::Bidi];

    /// The name used by `echo-client --mode` and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Unary => "unary",
            Mode::Client => "client",
            Mode::Server => "server",
            Mode::Bidi => "bidi",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of one scenario.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `Ok`, or why the scenario failed.
    pub result: Result<(), String>,
    /// Requests sent plus responses received.
    pub messages: usize,
    /// Wall time of the scenario.
    pub elapsed: Duration,
}

/// Messages each streaming scenario sends.
const STREAM_MESSAGES: usize = 3;

fn request(message: impl Into<String>) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..EchoRequest::default()
    }
}

fn expect(got: EchoResponse, message: &str, index: i32) -> Result<(), String> {
    // An unset optional index counts as 0 (a peer may leave a zero optional out).
    if got.message == message && got.index.unwrap_or(0) == index {
        Ok(())
    } else {
        Err(format!(
            "expected ({message:?}, {index}), got ({:?}, {:?})",
            got.message, got.index
        ))
    }
}

/// Runs the scenario of `mode` against `client`.
pub async fn run<I: EchoIdl>(client: &I::Client, mode: Mode) -> Outcome {
    let start = Instant::now();
    let mut messages = 0;
    let result = match mode {
        Mode::Unary => unary::<I>(client, &mut messages).await,
        Mode::Client => client_streaming::<I>(client, &mut messages).await,
        Mode::Server => server_streaming::<I>(client, &mut messages).await,
        Mode::Bidi => bidi::<I>(client, &mut messages).await,
    };
    Outcome {
        result,
        messages,
        elapsed: start.elapsed(),
    }
}

/// Runs every mode's scenario, in [`Mode::ALL`] order.
pub async fn run_all<I: EchoIdl>(client: &I::Client) -> Vec<(Mode, Outcome)> {
    let mut out = Vec::with_capacity(Mode::ALL.len());
    for mode in Mode::ALL {
        out.push((mode, run::<I>(client, mode).await));
    }
    out
}

async fn unary<I: EchoIdl>(client: &I::Client, messages: &mut usize) -> Result<(), String> {
    *messages += 1;
    let res = I::ping_pong(client, request("hello"), CallOptions::new())
        .await
        .map_err(|e| e.to_string())?;
    *messages += 1;
    expect(res, "hello", 0)
}

async fn client_streaming<I: EchoIdl>(
    client: &I::Client,
    messages: &mut usize,
) -> Result<(), String> {
    let mut call = I::echo_client(client, CallOptions::new())
        .await
        .map_err(|e| e.to_string())?;
    let mut all = String::new();
    for i in 0..STREAM_MESSAGES {
        let m = format!("m{i}");
        all.push_str(&m);
        call.send(request(m).into())
            .await
            .map_err(|e| e.to_string())?;
        *messages += 1;
    }
    let res = call.close_and_recv().await.map_err(|e| e.to_string())?;
    *messages += 1;
    let count = i32::try_from(STREAM_MESSAGES).unwrap_or(i32::MAX);
    expect(res.into(), &all, count)
}

async fn server_streaming<I: EchoIdl>(
    client: &I::Client,
    messages: &mut usize,
) -> Result<(), String> {
    let mut call = I::echo_server(client, request("stream"), CallOptions::new())
        .await
        .map_err(|e| e.to_string())?;
    *messages += 1;
    let mut index = 0;
    while let Some(res) = call.recv().await.map_err(|e| e.to_string())? {
        *messages += 1;
        expect(res.into(), "stream", index)?;
        index += 1;
    }
    if index == DEFAULT_REPEAT {
        Ok(())
    } else {
        Err(format!("expected {DEFAULT_REPEAT} responses, got {index}"))
    }
}

async fn bidi<I: EchoIdl>(client: &I::Client, messages: &mut usize) -> Result<(), String> {
    let mut call = I::echo(client, CallOptions::new())
        .await
        .map_err(|e| e.to_string())?;
    // One request, then its response, so a server that answers late is caught too.
    for i in 0..STREAM_MESSAGES {
        let m = format!("b{i}");
        call.send(request(m.clone()).into())
            .await
            .map_err(|e| e.to_string())?;
        *messages += 1;
        let res = call
            .recv()
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("stream ended before the response to {m}"))?;
        *messages += 1;
        expect(res.into(), &m, i32::try_from(i).unwrap_or(i32::MAX))?;
    }
    call.close_send().map_err(|e| e.to_string())?;
    match call.recv().await.map_err(|e| e.to_string())? {
        None => Ok(()),
        Some(extra) => Err(format!("unexpected response after CloseSend: {extra:?}")),
    }
}
