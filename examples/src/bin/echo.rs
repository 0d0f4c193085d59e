//! `cargo run --release -p examples --bin echo`
//!
//! Starts the echo server and runs all four modes for both IDLs against it on every transport
//! available, prints a table, and exits non-zero if any scenario failed.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use examples::check::{self, Mode, Outcome};
use examples::idl::{Proto, Thrift};
use examples::transport::Transport;
use examples::EchoIdl;

struct Row {
    transport: Transport,
    idl: &'static str,
    mode: Mode,
    outcome: Outcome,
}

async fn rows_for<I: EchoIdl>(transport: Transport) -> Vec<Row> {
    let row = |mode, outcome| Row {
        transport,
        idl: I::NAME,
        mode,
        outcome,
    };
    match transport.connect(I::server()).await {
        Ok(client) => check::run_all::<I>(&I::client(client))
            .await
            .into_iter()
            .map(|(mode, outcome)| row(mode, outcome))
            .collect(),
        Err(e) => Mode::ALL
            .into_iter()
            .map(|mode| {
                row(
                    mode,
                    Outcome {
                        result: Err(format!("connect: {e}")),
                        messages: 0,
                        elapsed: Duration::ZERO,
                    },
                )
            })
            .collect(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut rows = Vec::new();
    for &transport in Transport::ALL {
        rows.extend(rows_for::<Thrift>(transport).await);
        rows.extend(rows_for::<Proto>(transport).await);
    }
    println!(
        "{:<13} {:<7} {:<9} {:<6} {:>8} {:>10}",
        "transport", "idl", "mode", "result", "messages", "time"
    );
    let mut failed = 0;
    for r in &rows {
        let (result, why) = match &r.outcome.result {
            Ok(()) => ("ok", String::new()),
            Err(e) => {
                failed += 1;
                ("FAIL", format!("  {e}"))
            }
        };
        println!(
            "{:<13} {:<7} {:<9} {:<6} {:>8} {:>10}{why}",
            r.transport.name(),
            r.idl,
            r.mode.name(),
            result,
            r.outcome.messages,
            format!("{:.2?}", r.outcome.elapsed),
        );
    }
    if failed == 0 {
        println!("all {} passed", rows.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} FAILED", rows.len());
        ExitCode::FAILURE
    }
}
