//! What the `echo-server` and `echo-client` binaries share: endpoint URLs.

use std::path::PathBuf;

/// A listen or connect URL: `tcp://HOST:PORT`, `unix:///path.sock` or `shm:///path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Url {
    /// `tcp://HOST:PORT` (the host may be a name; it is resolved when used).
    Tcp(String),
    /// `unix:///path.sock`.
    Unix(PathBuf),
    /// `shm:///path`.
    Shm(PathBuf),
}

impl std::str::FromStr for Url {
    type Err = String;

    fn from_str(s: &str) -> Result<Url, String> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            if rest
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(format!("{s}: expected tcp://HOST:PORT"));
            }
            Ok(Url::Tcp(rest.to_owned()))
        } else if let Some(rest) = s.strip_prefix("unix://") {
            if rest.is_empty() {
                return Err(format!("{s}: expected unix:///path"));
            }
            Ok(Url::Unix(PathBuf::from(rest)))
        } else if let Some(rest) = s.strip_prefix("shm://") {
            Ok(Url::Shm(PathBuf::from(rest)))
        } else {
            Err(format!("{s}: expected tcp://, unix:// or shm://"))
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Url::Tcp(a) => write!(f, "tcp://{a}"),
            Url::Unix(p) => write!(f, "unix://{}", p.display()),
            Url::Shm(p) => write!(f, "shm://{}", p.display()),
        }
    }
}

/// Resolves a `tcp://` host and port to its first socket address.
pub async fn resolve(hostport: &str) -> Result<std::net::SocketAddr, String> {
    tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| format!("resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {hostport}: no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_are_explained() {
        assert_eq!(
            "tcp://127.0.0.1:8080".parse(),
            Ok(Url::Tcp("127.0.0.1:8080".into()))
        );
        assert_eq!(
            "unix:///tmp/e.sock".parse(),
            Ok(Url::Unix("/tmp/e.sock".into()))
        );
        assert_eq!(
            "shm:///dev/shm/x".parse(),
            Ok(Url::Shm("/dev/shm/x".into()))
        );
        assert!("tcp://nohost".parse::<Url>().is_err());
        assert!("http://x:1".parse::<Url>().is_err());
    }
}
