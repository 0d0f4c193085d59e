//! `echo-client --connect URL [--idl thrift|proto] [--mode all|unary|client|server|bidi]
//! [--protocol ttheader|grpc]`
//!
//! Checks the echo contract against a server: runs the chosen modes, verifies every response,
//! prints `ok <mode> <n> messages <time>` or `FAIL <mode> <why>` per mode, and exits 0 only if
//! all passed.
//!
//! `--connect etcd://HOST:PORT/SERVICE` resolves SERVICE in etcd (Kitex's registry layout) and
//! balances every call and stream over its live instances with `--lb rr|p2c|hash` (default
//! rr; `hash` keys every call of this run on one `x-hash-key`, so they all reach one instance).
//! Calls whose request was never sent (an instance gone) are retried on another instance.
//!
//! TLS: `--tls-ca ca.pem [--tls-cert c.pem --tls-key c.key] [--tls-server-name NAME]` connects
//! over TLS, verifying the server's certificate against `ca.pem` and the address's host (or
//! NAME), presenting a client certificate when given (mTLS); over `--protocol grpc` it asks
//! for ALPN `h2`.
//!
//! Any method of any server that serves gRPC reflection, without its IDL:
//! `--call pkg.Service/Method [--data TEXT ...]` fetches the descriptors through
//! `grpc.reflection.v1` (over gRPC, whatever `--protocol` the call itself uses), sends each
//! `--data` (a request in the protobuf text format, `message: "hi"`; none means one empty
//! request) and prints each response in the text format, one per line
//! (`rpc_grpc_services::dynamic`). `--call list` prints the services.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

use examples::check::{self, Mode};
use examples::idl::{Proto, Thrift};
use examples::EchoIdl;
use rpc_core::net::TlsClientConfig;
use rpc_core::{Address, Client};
use rpc_transport_grpc::{GrpcClient, GrpcClientConfig};
use rpc_transport_ttheader::TtHeaderClient;

fn usage() -> ExitCode {
    eprintln!(
        "usage: echo-client --connect URL [--idl thrift|proto] [--mode all|unary|client|server|bidi] [--protocol ttheader|grpc] [--lb rr|p2c|hash]\n\
         \x20      [--tls-ca ca.pem [--tls-cert c.pem --tls-key c.key] [--tls-server-name NAME]]\n\
         \x20      [--call pkg.Service/Method|list [--data TEXT ...]]"
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
    let (mut etcd, mut lb) = (None, rpc_core::balance::Policy::RoundRobin);
    let (mut call, mut data) = (None, Vec::new());
    while let Some(a) = args.next() {
        let Some(v) = args.next() else { return usage() };
        match a.as_str() {
            "--connect" if v.starts_with("etcd://") => match rpc_registry_etcd::parse_url(&v) {
                Ok(t) => etcd = Some(t),
                Err(e) => {
                    eprintln!("echo-client: {e}");
                    return usage();
                }
            },
            "--lb" => match v.parse() {
                Ok(p) => lb = p,
                Err(e) => {
                    eprintln!("echo-client: {e}");
                    return usage();
                }
            },
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
            "--call" => call = Some(v),
            "--data" => data.push(v),
            _ => return usage(),
        }
    }
    let modes: Vec<Mode> = match mode.as_str() {
        "all" => Mode::ALL.to_vec(),
        // `pingpong` (Kitex's word for unary) stays accepted on the command line.
        "pingpong" => vec![Mode::Unary],
        m => match Mode::ALL.into_iter().find(|x| x.name() == m) {
            Some(x) => vec![x],
            None => return usage(),
        },
    };
    if let Some((endpoint, service)) = etcd {
        let client = match balanced(&endpoint, &service, lb, &protocol).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("echo-client: {e}");
                return ExitCode::FAILURE;
            }
        };
        return finish(match idl.as_str() {
            "thrift" => run::<Thrift>(client, &modes).await,
            "proto" => run::<Proto>(client, &modes).await,
            _ => return usage(),
        });
    }
    let Some(url) = url else { return usage() };
    // A tcp:// host name is resolved at each connect; failures show up as UNAVAILABLE calls.
    // shm:///path: the shared-memory transport (Linux), set up through that control socket.
    if let Address::Shm(_) = &url {
        if tls_ca.is_some() || protocol != "ttheader" {
            eprintln!("echo-client: shm:// carries TTHeader Streaming frames, without TLS");
            return ExitCode::from(2);
        }
        let client = Client::new(rpc_transport_shm::ShmClient::new(url.clone()));
        return finish(match idl.as_str() {
            "thrift" => run::<Thrift>(client, &modes).await,
            "proto" => run::<Proto>(client, &modes).await,
            _ => return usage(),
        });
    }
    let builder_addr = url.clone();
    let builder = TtHeaderClient::builder(url);
    let mut tls = None;
    if let Some(ca) = tls_ca {
        let identity = match (&tls_cert, &tls_key) {
            (Some(c), Some(k)) => Some((Path::new(c), Path::new(k))),
            (None, None) => None,
            _ => return usage(),
        };
        let t = TlsClientConfig::from_pem_files(ca, identity).and_then(|t| match &tls_name {
            Some(n) => t.server_name(n),
            None => Ok(t),
        });
        match t {
            Ok(t) => tls = Some(t),
            Err(e) => {
                eprintln!("echo-client: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if tls_cert.is_some() || tls_key.is_some() || tls_name.is_some() {
        return usage();
    }
    let grpc = |tls: Option<TlsClientConfig>| {
        let mut cfg = GrpcClientConfig::default();
        if let Some(t) = tls {
            cfg = cfg.tls(t);
        }
        Client::new(GrpcClient::with_config(builder_addr.clone(), cfg))
    };
    let reflection = call.as_ref().map(|_| grpc(tls.clone()));
    let client = match protocol.as_str() {
        "ttheader" => match tls {
            Some(t) => Client::new(builder.tls(t).build()),
            None => Client::new(builder.build()),
        },
        "grpc" => grpc(tls),
        _ => return usage(),
    };
    if let (Some(method), Some(reflection)) = (call, reflection) {
        return match dynamic_call(reflection, client, &method, &data).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo-client: {method}: {:?} {}", e.code(), e.message());
                ExitCode::FAILURE
            }
        };
    }
    let ok = match idl.as_str() {
        "thrift" => run::<Thrift>(client, &modes).await,
        "proto" => run::<Proto>(client, &modes).await,
        _ => return usage(),
    };
    finish(ok)
}

/// `--call`: the descriptors through reflection, then the call over `client`.
async fn dynamic_call(
    reflection: Client,
    client: Client,
    method: &str,
    data: &[String],
) -> Result<(), rpc_core::Status> {
    use rpc_grpc_services::dynamic::DynamicClient;
    let reflected = DynamicClient::from_reflection(reflection).await?;
    let dynamic = DynamicClient::new(client, reflected.pool().clone());
    if method == "list" {
        dynamic.services().iter().for_each(|s| println!("{s}"));
        return Ok(());
    }
    let m = dynamic.method(method)?;
    let texts: Vec<&str> = match data {
        [] => vec![""],
        d => d.iter().map(String::as_str).collect(),
    };
    let requests = texts
        .iter()
        .map(|t| dynamic.parse_request(&m, t))
        .collect::<Result<Vec<_>, _>>()?;
    dynamic
        .call_with(&m, requests, rpc_core::CallOptions::new(), |r| {
            println!("{}", r.to_text_format());
            Ok(())
        })
        .await
}

fn finish(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How long to wait for the first instance of a service.
const RESOLVE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A client balanced over the instances of `service` registered in etcd at `endpoint`.
async fn balanced(
    endpoint: &str,
    service: &str,
    lb: rpc_core::balance::Policy,
    protocol: &str,
) -> Result<Client, rpc_core::Status> {
    use rpc_core::discovery::Resolver;
    let mut resolution = rpc_registry_etcd::EtcdRegistry::new([endpoint])
        .resolve(service)
        .await?;
    let waited = tokio::time::timeout(RESOLVE_WAIT, async {
        while resolution.current().is_empty() {
            if !resolution.changed().await {
                break;
            }
        }
    })
    .await;
    if waited.is_err() || resolution.current().is_empty() {
        return Err(rpc_core::Status::unavailable(format!(
            "no instance of {service} registered in etcd at {endpoint}"
        )));
    }
    let transport = match protocol {
        "grpc" => rpc_core::balance::Balanced::connect::<GrpcClient>(resolution, lb),
        "ttheader" => rpc_core::balance::Balanced::connect::<TtHeaderClient>(resolution, lb),
        other => {
            return Err(rpc_core::Status::invalid_argument(format!(
                "unknown protocol {other}"
            )))
        }
    };
    let mut builder =
        Client::builder(transport).unary_layer(rpc_core::resilience::RetryLayer::default());
    if lb == rpc_core::balance::Policy::ConsistentHash {
        builder = builder.metadata(
            rpc_core::balance::HASH_METADATA_KEY,
            format!("echo-client-{}", std::process::id()),
        );
    }
    Ok(builder.build())
}
