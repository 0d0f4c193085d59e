//! The memory-bound attacks of `membound_ttheader.rs` at the sizes issue 19 measured, against
//! `echo-server` with the default 256 MiB budget (`cargo test -p examples --test membound_big
//! -- --big`; without `--big` it only says how to run it, so `cargo test`'s default run stays
//! short). Each scenario asserts `RSS over baseline ≤ budget + PER_CONNECTION_BYTES ×
//! connections` while a well-behaved client is served, and prints the figures.
//!
//! Flags: `--measure` (print the RSS per idle connection and per open stream instead),
//! `--budget-mib N` (default 256), `--only NAME` (one of `partial`, `replies`,
//! `server-streams`, `streams`, `tiny`), `--conns N` (overrides each scenario's count). The
//! scenarios: 40 connections each sending 15 MiB of a 16 MiB frame; 2,000 connections each
//! with one server stream of 3,000 × 1 KB replies never read (the two figures); 2,000
//! connections of pipelined calls and endless streams never read; 500 connections of streams
//! whose handlers do not read; 500 connections flooding 1-byte messages. Needs `ulimit -n`
//! above twice the largest connection count.

mod membound;
mod support;

use membound::{
    partial_frames, replies_never_read, run, server_streams_never_read, tiny_frames,
    unread_streams, MIB,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--big") {
        println!(
            "membound_big: the issue-19 sizes; run with `cargo test -p examples --test membound_big -- --big [--budget-mib N] [--only NAME] [--conns N]`"
        );
        return;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let budget = value("--budget-mib")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(256)
        * MIB;
    let only = value("--only");
    let conns = value("--conns").and_then(|v| v.parse::<usize>().ok());
    let n = |default: usize| conns.unwrap_or(default);
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if args.iter().any(|a| a == "--measure") {
        membound::measure_fixed_costs(budget);
        return;
    }
    if wanted("partial") {
        run("partial 16 MiB frames", budget, partial_frames(n(40)));
    }
    if wanted("server-streams") {
        run(
            "server streams of 3,000 replies never read",
            budget,
            server_streams_never_read(n(2000), 3000),
        );
    }
    if wanted("replies") {
        run("replies never read", budget, replies_never_read(n(2000)));
    }
    if wanted("streams") {
        run("unread ttstream streams", budget, unread_streams(n(500)));
    }
    if wanted("tiny") {
        run("tiny Data frame flood", budget, tiny_frames(n(500)));
    }
}
