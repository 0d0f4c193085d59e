//! `echo-client --connect URL [--idl thrift|proto] [--mode all|pingpong|client|server|bidi]
//! [--protocol ttheader|grpc]`
//!
//! Checks the echo contract against a server: runs the chosen modes, verifies every response,
//! prints `ok <mode> <n> messages <time>` or `FAIL <mode> <why>` per mode, and exits 0 only if
//! all passed.
//!
//! TLS: `--tls-ca ca.pem [--tls-cert c.pem --tls-key c.key] [--tls-server-name NAME]` connects
//! over TLS, verifying the server's certificate against `ca.pem` and the address's host (or
//! NAME), presenting a client certificate when given (mTLS).

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

use examples::check::{self, Mode};
use examples::idl::{Proto, Thrift};
use examples::EchoIdl;
use rpc_core::net::TlsClientConfig;
use rpc_core::{Address, Client};
use rpc_transport_ttheader::TtHeaderClient;

fn usage() -> ExitCode {
    eprintln!(
        "usage: echo-client --connect URL [--idl thrift|proto] [--mode all|pingpong|client|server|bidi] [--protocol ttheader|grpc]\n\
         \x20      [--tls-ca ca.pem [--tls-cert c.pem --tls-key c.key] [--tls-server-name NAME]]"
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
    let (mut tls_ca, mut tls_cert, mut tls_key, mut tls_name) = (None, None, None, None);
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
            "--tls-ca" => tls_ca = Some(v),
            "--tls-cert" => tls_cert = Some(v),
            "--tls-key" => tls_key = Some(v),
            "--tls-server-name" => tls_name = Some(v),
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
    if let Address::Shm(_) = url {
        eprintln!("echo-client: the shared-memory transport is not available yet");
        return ExitCode::from(2);
    }
    // A tcp:// host name is resolved at each connect; failures show up as UNAVAILABLE calls.
    let mut builder = TtHeaderClient::builder(url);
    if let Some(ca) = tls_ca {
        let identity = match (&tls_cert, &tls_key) {
            (Some(c), Some(k)) => Some((Path::new(c), Path::new(k))),
            (None, None) => None,
            _ => return usage(),
        };
        let tls = TlsClientConfig::from_pem_files(ca, identity).and_then(|t| match &tls_name {
            Some(n) => t.server_name(n),
            None => Ok(t),
        });
        match tls {
            Ok(t) => builder = builder.tls(t),
            Err(e) => {
                eprintln!("echo-client: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if tls_cert.is_some() || tls_key.is_some() || tls_name.is_some() {
        return usage();
    }
    let client = Client::new(builder.build());
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
