//! `echo-client --connect URL [--idl thrift|proto] [--mode all|pingpong|client|server|bidi]
//! [--protocol ttheader|grpc]`
//!
//! Checks the echo contract against a server: runs the chosen modes, verifies every response,
//! prints `ok <mode> <n> messages <time>` or `FAIL <mode> <why>` per mode, and exits 0 only if
//! all passed.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use examples::check::{self, Mode};
use examples::idl::{Proto, Thrift};
use examples::EchoIdl;
use rpc_core::{Address, Client};
use rpc_transport_ttheader::TtHeaderClient;

fn usage() -> ExitCode {
    eprintln!(
        "usage: echo-client --connect URL [--idl thrift|proto] [--mode all|pingpong|client|server|bidi] [--protocol ttheader|grpc]"
    );
    ExitCode::from(2)
}

async fn run<I: EchoIdl>(client: Client, modes: &[Mode]) -> bool {
    let client = I::client(client);
    let mut all_ok = true;
    for &mode in modes {
        let o = check::run::<I>(&client, mode).await;
        match o.result {
            Ok(()) => println!("ok {mode} {} messages {:.2?}", o.messages, o.elapsed),
            Err(why) => {
                all_ok = false;
                println!("FAIL {mode} {why}");
            }
        }
    }
    all_ok
}

#[tokio::main]
async fn main() -> ExitCode {
    let (mut url, mut idl, mut mode, mut protocol) = (
        None,
        "thrift".to_owned(),
        "all".to_owned(),
        "ttheader".to_owned(),
    );
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let Some(v) = args.next() else { return usage() };
        match a.as_str() {
            "--connect" => match v.parse::<Address>() {
                Ok(u) => url = Some(u),
                Err(e) => {
                    eprintln!("echo-client: {e}");
                    return usage();
                }
            },
            "--idl" => idl = v,
            "--mode" => mode = v,
            "--protocol" => protocol = v,
            _ => return usage(),
        }
    }
    let Some(url) = url else { return usage() };
    let modes: Vec<Mode> = match mode.as_str() {
        "all" => Mode::ALL.to_vec(),
        m => match Mode::ALL.into_iter().find(|x| x.name() == m) {
            Some(x) => vec![x],
            None => return usage(),
        },
    };
    if protocol != "ttheader" {
        eprintln!("echo-client: protocol {protocol} is not available yet (ttheader is)");
        return ExitCode::from(2);
    }
    // A tcp:// host name is resolved at each connect; failures show up as UNAVAILABLE calls.
    // shm:///path: the shared-memory transport (Linux), set up through that control socket.
    let client = match url {
        Address::Shm(path) => Client::new(rpc_transport_shm::ShmClient::new(path)),
        url => Client::new(TtHeaderClient::new(url)),
    };
    let ok = match idl.as_str() {
        "thrift" => run::<Thrift>(client, &modes).await,
        "proto" => run::<Proto>(client, &modes).await,
        _ => return usage(),
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
