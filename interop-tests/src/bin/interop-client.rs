//! `interop-client --server_host=H --server_port=P --test_case=a,b,...`: the gRPC interop
//! client (grpc/grpc `doc/interop-test-descriptions.md`), so our client can test any official
//! interop server.
//!
//! Runs the cases in order (`--test_case=all` runs the 18 this client implements), prints one
//! line per case (`PASS name (N ms)` or `FAIL name: why`) and a summary, and exits 0 only if
//! every case passed. `--use_tls=false`, `--server_host_override` and the credential flags are
//! accepted and ignored. Extra flags: `--transport=grpc|ttheader` (default grpc) and
//! `--compression_probe=false` (skip the uncompressed feature probe of the client_compressed_*
//! cases, for servers that cannot see compression, such as grpcio's Python servicers).

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Instant;

use interop_tests::grpc_interop::cases;
use interop_tests::grpc_interop::cli::{self, Flags, Transport};
use rpc_core::Address;

const USAGE: &str =
    "usage: interop-client --server_host=HOST --server_port=PORT --test_case=NAME[,NAME...]|all \
[--use_tls=false] [--transport=grpc|ttheader] [--compression_probe=false]";

#[tokio::main]
async fn main() -> ExitCode {
    let flags = match Flags::parse(
        std::env::args().skip(1),
        &[
            "server_host",
            "server_port",
            "test_case",
            "transport",
            "compression_probe",
        ],
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("interop-client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let parsed = (|| {
        Ok::<_, String>((
            flags.get("server_host").unwrap_or("localhost").to_owned(),
            flags.parse_or("server_port", 10000u16)?,
            flags.get("test_case").unwrap_or("large_unary").to_owned(),
            flags.parse_or("transport", Transport::Grpc)?,
            flags.parse_or("compression_probe", true)?,
        ))
    })();
    let (host, port, test_case, transport, probe) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("interop-client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let names: Vec<&str> = if test_case == "all" {
        cases::ALL.to_vec()
    } else {
        test_case.split(',').filter(|s| !s.is_empty()).collect()
    };
    if let Some(bad) = names.iter().find(|n| !cases::ALL.contains(n)) {
        eprintln!("interop-client: unknown test case {bad:?}\n{USAGE}");
        return ExitCode::from(2);
    }
    let clients = match cli::connect(transport, &Address::Tcp { host, port }, probe) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("interop-client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = 0;
    for name in &names {
        let t = Instant::now();
        match cases::run(name, &clients).await {
            Ok(()) => println!("PASS {name} ({} ms)", t.elapsed().as_millis()),
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    println!("{}/{} passed", names.len() - failed, names.len());
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
