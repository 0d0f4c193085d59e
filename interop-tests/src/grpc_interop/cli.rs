//! The command lines of the official interop binaries (grpc/grpc
//! `doc/interop-test-descriptions.md`): `--flag=value` or `--flag value`; flags that only matter
//! to other deployments (TLS, credentials, service config) are accepted and ignored, except
//! `--use_tls=true`, which is refused (plaintext only).

use std::collections::HashMap;

/// Parsed `--name=value` flags.
#[derive(Debug, Default)]
pub struct Flags(HashMap<String, String>);

/// Flags every interop binary accepts without using them.
const IGNORED: [&str; 10] = [
    "server_host_override",
    "use_test_ca",
    "default_service_account",
    "oauth_scope",
    "service_account_key_file",
    "service_config_json",
    "additional_metadata",
    "num_times",
    "max_send_message_size",
    "custom_credentials_type",
];

impl Flags {
    /// Parses `args` (without the program name); `known` are the flags this binary uses.
    pub fn parse(args: impl IntoIterator<Item = String>, known: &[&str]) -> Result<Flags, String> {
        let mut out = HashMap::new();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => {
                    let v = it.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                    (flag.to_owned(), v)
                }
            };
            if name == "use_tls" {
                if matches!(value.as_str(), "true" | "1") {
                    return Err("--use_tls=true: TLS is not supported, plaintext only".into());
                }
                continue;
            }
            if IGNORED.contains(&name.as_str()) {
                continue;
            }
            if !known.contains(&name.as_str()) {
                return Err(format!("unknown flag --{name}"));
            }
            out.insert(name, value);
        }
        Ok(Flags(out))
    }

    /// The value of `--name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value of `--name` parsed as `T`, or `default` when absent.
    pub fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}={v}: not a valid value")),
        }
    }
}

/// The transport an interop binary speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// gRPC over HTTP/2 (the interop suite's transport).
    Grpc,
    /// TTHeader Streaming: the same service over our other transport.
    TtHeader,
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Transport, String> {
        match s {
            "grpc" => Ok(Transport::Grpc),
            "ttheader" => Ok(Transport::TtHeader),
            other => Err(format!("unknown transport {other:?} (grpc or ttheader)")),
        }
    }
}

/// Connects the interop clients to `address` over `transport`.
pub fn connect(
    transport: Transport,
    address: &rpc_core::Address,
    compression_probe: bool,
) -> Result<super::cases::Clients, rpc_core::Status> {
    use super::testing::{TestServiceClient, UnimplementedServiceClient};
    use rpc_core::transport::Connect;
    let address = address.to_string();
    let client = match transport {
        Transport::TtHeader => {
            rpc_core::Client::new(rpc_transport_ttheader::TtHeaderClient::connect(&address)?)
        }
        Transport::Grpc => {
            rpc_core::Client::new(rpc_transport_grpc::GrpcClient::connect(&address)?)
        }
    };
    Ok(super::cases::Clients {
        test: TestServiceClient::new(client.clone()),
        unimplemented: UnimplementedServiceClient::new(client),
        compression_probe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn official_client_flags_parse() {
        let f = Flags::parse(
            args(&[
                "--server_host=127.0.0.1",
                "--server_port",
                "8080",
                "--test_case=empty_unary,large_unary",
                "--use_tls=false",
                "--server_host_override=foo.test.google.fr",
            ]),
            &["server_host", "server_port", "test_case"],
        )
        .unwrap();
        assert_eq!(f.get("server_host"), Some("127.0.0.1"));
        assert_eq!(f.parse_or("server_port", 0u16), Ok(8080));
        assert_eq!(f.get("test_case"), Some("empty_unary,large_unary"));
        assert_eq!(f.get("server_host_override"), None);
    }

    #[test]
    fn tls_unknown_and_malformed_flags_are_refused() {
        assert!(Flags::parse(args(&["--use_tls=true"]), &[]).is_err());
        assert!(Flags::parse(args(&["--bogus=1"]), &[]).is_err());
        assert!(Flags::parse(args(&["--port"]), &["port"]).is_err());
        assert!(Flags::parse(args(&["port"]), &["port"]).is_err());
        let f = Flags::parse(args(&["--port=x"]), &["port"]).unwrap();
        assert!(f.parse_or("port", 0u16).is_err());
    }
}
