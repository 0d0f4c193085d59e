//! [`Address`]: where a server listens and a client connects, parsed from a string.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a server listens or a client connects, shared by every transport.
///
/// | form | meaning |
/// |---|---|
/// | `tcp://HOST:PORT` | TCP; HOST is a name, an IPv4 address or an IPv6 address in brackets (`tcp://[::1]:80`) |
/// | `unix:///abs/path.sock`, `unix://rel.sock` | a Unix socket at that path |
/// | `shm:///path` | shared memory, set up through a Unix socket at that path |
///
/// Parsing never touches the network: a host name is resolved (with
/// [`tokio::net::lookup_host`]) each time the address is bound or connected to, so one value
/// follows DNS changes. [`Display`](fmt::Display) writes the form that parses back to the same
/// value.
///
/// ```
/// use rpc_core::Address;
///
/// let a: Address = "tcp://[::1]:8080".parse()?;
/// assert_eq!(a, Address::Tcp { host: "::1".into(), port: 8080 });
/// assert_eq!(a.to_string(), "tcp://[::1]:8080");
/// let err = "tcp://localhost".parse::<Address>().unwrap_err();
/// assert_eq!(err.to_string(), "`tcp://localhost`: missing `:PORT` after the host");
/// # Ok::<(), rpc_core::address::AddressError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// `tcp://HOST:PORT`. `host` is stored without IPv6 brackets.
    Tcp {
        /// A host name or an IP address (IPv6 without brackets).
        host: String,
        /// The port (0 lets the system pick one when binding).
        port: u16,
    },
    /// `unix://PATH`.
    Unix(PathBuf),
    /// `shm://PATH`: the path of the shared-memory transport's control socket.
    Shm(PathBuf),
}

/// What to write instead of a URL scheme users of HTTP-based stacks (tonic, grpc-go) type: an
/// address names the socket, and the client's type picks the protocol.
fn scheme_hint(scheme: &str) -> &'static str {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" | "grpc" | "grpcs" | "h2" | "h2c" => {
            "; for gRPC (or any protocol) over TCP write tcp://HOST:PORT: the client type \
             (GrpcClient, TtHeaderClient) picks the protocol, and TLS is a client setting"
        }
        _ => "",
    }
}

/// Why a string is not an [`Address`]. Each message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// No `scheme://` at the start.
    #[error("`{0}`: expected tcp://HOST:PORT, unix://PATH or shm://PATH")]
    MissingScheme(String),
    /// A scheme other than `tcp`, `unix` and `shm`.
    #[error("`{input}`: unknown scheme `{scheme}` (expected tcp, unix or shm){}", scheme_hint(.scheme))]
    UnknownScheme {
        /// The whole input.
        input: String,
        /// The scheme found.
        scheme: String,
    },
    /// `tcp://` without `:PORT`.
    #[error("`{0}`: missing `:PORT` after the host")]
    MissingPort(String),
    /// The port is not a number in 0..=65535.
    #[error("`{input}`: bad port `{port}` (expected 0 to 65535)")]
    BadPort {
        /// The whole input.
        input: String,
        /// The port text found.
        port: String,
    },
    /// `tcp://:PORT`.
    #[error("`{0}`: missing host before `:PORT`")]
    MissingHost(String),
    /// A host with characters no host name or IP address has.
    #[error("`{input}`: bad host `{host}`")]
    BadHost {
        /// The whole input.
        input: String,
        /// The host text found.
        host: String,
    },
    /// An IPv6 address written without brackets (`tcp://::1:80`).
    #[error("`{0}`: an IPv6 host goes in brackets, as in tcp://[::1]:8080")]
    UnbracketedIpv6(String),
    /// A path, query or fragment after `tcp://HOST:PORT`.
    #[error("`{0}`: nothing may follow tcp://HOST:PORT")]
    TrailingPath(String),
    /// `unix://` or `shm://` with no path.
    #[error("`{0}`: missing the socket path")]
    MissingPath(String),
}

impl Address {
    /// `tcp://` at this socket address.
    pub fn tcp(addr: SocketAddr) -> Address {
        Address::from(addr)
    }

    /// `unix://` at this path.
    pub fn unix(path: impl Into<PathBuf>) -> Address {
        Address::Unix(path.into())
    }

    /// `shm://` at this path (the shared-memory transport's control socket; an absolute
    /// path displays as `shm:///path`).
    pub fn shm(path: impl Into<PathBuf>) -> Address {
        Address::Shm(path.into())
    }

    /// The scheme: `tcp`, `unix` or `shm`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Address::Tcp { .. } => "tcp",
            Address::Unix(_) => "unix",
            Address::Shm(_) => "shm",
        }
    }

    /// The socket address of a `tcp://` address whose host is an IP address (no lookup).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Tcp { host, port } => host
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, *port)),
            _ => None,
        }
    }

    /// Resolves a `tcp://` address to its socket addresses with [`tokio::net::lookup_host`]
    /// (an IP host resolves to itself without a lookup). Other schemes are an
    /// `InvalidInput` error. (Feature `net`: the lookup is part of the socket layer.)
    #[cfg(feature = "net")]
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let Address::Tcp { host, port } = self else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{self}: not a tcp:// address"),
            ));
        };
        if let Some(a) = self.socket_addr() {
            return Ok(vec![a]);
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
            .await?
            .collect();
        if found.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{self}: the host resolves to no address"),
            ));
        }
        Ok(found)
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Address, AddressError> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(AddressError::MissingScheme(s.to_owned()));
        };
        match scheme {
            "tcp" => parse_tcp(s, rest),
            "unix" | "shm" => {
                if rest.is_empty() {
                    return Err(AddressError::MissingPath(s.to_owned()));
                }
                let path = PathBuf::from(rest);
                Ok(if scheme == "unix" {
                    Address::Unix(path)
                } else {
                    Address::Shm(path)
                })
            }
            _ => Err(AddressError::UnknownScheme {
                input: s.to_owned(),
                scheme: scheme.to_owned(),
            }),
        }
    }
}

fn parse_tcp(input: &str, rest: &str) -> Result<Address, AddressError> {
    let err_input = || input.to_owned();
    if rest.contains(['/', '?', '#']) {
        return Err(AddressError::TrailingPath(err_input()));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((ip, after)) = bracketed.split_once(']') else {
            return Err(AddressError::BadHost {
                input: err_input(),
                host: rest.to_owned(),
            });
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(AddressError::BadHost {
                input: err_input(),
                host: format!("[{ip}]"),
            });
        }
        let Some(port) = after.strip_prefix(':') else {
            return Err(AddressError::MissingPort(err_input()));
        };
        (ip, port)
    } else {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(AddressError::MissingPort(err_input()));
        };
        if host.contains(':') {
            return Err(AddressError::UnbracketedIpv6(err_input()));
        }
        if host.is_empty() {
            return Err(AddressError::MissingHost(err_input()));
        }
        // RFC 1123 host names (letters, digits, `-`, `.`), plus `_`, which real DNS names use.
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(AddressError::BadHost {
                input: err_input(),
                host: host.to_owned(),
            });
        }
        (host, port)
    };
    if port.is_empty() {
        return Err(AddressError::MissingPort(err_input()));
    }
    let Ok(port_num) = port.parse::<u16>() else {
        return Err(AddressError::BadPort {
            input: err_input(),
            port: port.to_owned(),
        });
    };
    Ok(Address::Tcp {
        host: host.to_owned(),
        port: port_num,
    })
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Shm(p) => write!(f, "shm://{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Address {
        Address::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn good_addresses_parse_and_round_trip() {
        let cases = [
            ("tcp://127.0.0.1:8080", tcp("127.0.0.1", 8080)),
            ("tcp://localhost:0", tcp("localhost", 0)),
            (
                "tcp://echo.example-1.internal:65535",
                tcp("echo.example-1.internal", 65535),
            ),
            ("tcp://[::1]:80", tcp("::1", 80)),
            ("tcp://[fe80::1:2]:9", tcp("fe80::1:2", 9)),
            (
                "unix:///tmp/echo.sock",
                Address::Unix("/tmp/echo.sock".into()),
            ),
            ("unix://rel.sock", Address::Unix("rel.sock".into())),
            ("shm:///dev/shm/echo", Address::Shm("/dev/shm/echo".into())),
        ];
        assert_eq!(
            Address::shm("/dev/shm/echo").to_string(),
            "shm:///dev/shm/echo"
        );
        for (text, want) in cases {
            let got: Address = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text, "display of {text}");
            assert_eq!(got.to_string().parse::<Address>(), Ok(got));
        }
    }

    #[test]
    fn an_http_url_is_answered_with_the_tcp_address_to_write() {
        for url in [
            "http://127.0.0.1:50051",
            "https://api.example:443",
            "grpc://h:1",
        ] {
            let message = url.parse::<Address>().unwrap_err().to_string();
            assert!(message.contains("write tcp://HOST:PORT"), "{message}");
        }
        let other = "udp://h:1".parse::<Address>().unwrap_err().to_string();
        assert_eq!(
            other,
            "`udp://h:1`: unknown scheme `udp` (expected tcp, unix or shm)"
        );
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        use AddressError as E;
        let s = |x: &str| x.to_owned();
        let cases = [
            ("127.0.0.1:80", E::MissingScheme(s("127.0.0.1:80"))),
            (
                "http://x:1",
                E::UnknownScheme {
                    input: s("http://x:1"),
                    scheme: s("http"),
                },
            ),
            ("tcp://nohost", E::MissingPort(s("tcp://nohost"))),
            ("tcp://host:", E::MissingPort(s("tcp://host:"))),
            ("tcp://[::1]", E::MissingPort(s("tcp://[::1]"))),
            ("tcp://:80", E::MissingHost(s("tcp://:80"))),
            (
                "tcp://h:99999",
                E::BadPort {
                    input: s("tcp://h:99999"),
                    port: s("99999"),
                },
            ),
            (
                "tcp://h:8o",
                E::BadPort {
                    input: s("tcp://h:8o"),
                    port: s("8o"),
                },
            ),
            ("tcp://::1:80", E::UnbracketedIpv6(s("tcp://::1:80"))),
            (
                "tcp://[zz::1]:80",
                E::BadHost {
                    input: s("tcp://[zz::1]:80"),
                    host: s("[zz::1]"),
                },
            ),
            (
                "tcp://a b:80",
                E::BadHost {
                    input: s("tcp://a b:80"),
                    host: s("a b"),
                },
            ),
            ("tcp://h:80/x", E::TrailingPath(s("tcp://h:80/x"))),
            ("unix://", E::MissingPath(s("unix://"))),
            ("shm://", E::MissingPath(s("shm://"))),
        ];
        for (text, want) in cases {
            let got = text.parse::<Address>();
            assert_eq!(got.as_ref().err(), Some(&want), "{text}");
            assert!(want.to_string().contains(text), "{want}");
        }
    }

    #[test]
    fn socket_addresses_convert_both_ways() {
        let v6: SocketAddr = "[::1]:7".parse().expect("literal");
        let a = Address::from(v6);
        assert_eq!(a.to_string(), "tcp://[::1]:7");
        assert_eq!(a.socket_addr(), Some(v6));
        assert_eq!(tcp("localhost", 1).socket_addr(), None);
        assert_eq!(Address::unix("/x").scheme(), "unix");
    }

    #[cfg(feature = "net")]
    #[tokio::test]
    async fn names_resolve_when_used_not_when_parsed() {
        let a: Address = "tcp://localhost:1234".parse().expect("parses");
        let found = a.resolve().await.expect("localhost resolves");
        assert!(found
            .iter()
            .all(|s| s.port() == 1234 && s.ip().is_loopback()));
        assert!(Address::unix("/x").resolve().await.is_err());
    }
}
