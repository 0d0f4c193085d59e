//! Where the peer of a call is ([`Peer`]) and, over TLS, what the handshake told
//! ([`TlsPeer`], feature `tls`). Below both the call context and the socket layer, which each
//! re-export what they hand out.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

#[cfg(feature = "tls")]
use rustls::pki_types::{CertificateDer, ServerName};

/// Where the peer of a call is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Peer {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix-socket peer (path of the socket, if known).
    Unix(Option<PathBuf>),
    /// A shared-memory peer (path of the region's control socket).
    Shm(PathBuf),
    /// The same process (in-process transport).
    InProcess,
    /// A peer over TLS: the socket peer under it and what the handshake told (ALPN, SNI, the
    /// peer's verified certificate chain: a client's identity under mTLS).
    #[cfg(feature = "tls")]
    Tls(std::sync::Arc<TlsPeer>),
}

impl Peer {
    /// The socket address of a TCP peer (over TLS or not).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Peer::Tcp(a) => Some(*a),
            #[cfg(feature = "tls")]
            Peer::Tls(t) => t.transport().socket_addr(),
            _ => None,
        }
    }

    /// What TLS told about the peer, if the connection is TLS.
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&TlsPeer> {
        match self {
            Peer::Tls(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "tcp://{a}"),
            Peer::Unix(Some(p)) => write!(f, "unix://{}", p.display()),
            Peer::Unix(None) => f.write_str("unix://(unnamed)"),
            Peer::Shm(p) => write!(f, "shm://{}", p.display()),
            Peer::InProcess => f.write_str("inproc"),
            #[cfg(feature = "tls")]
            Peer::Tls(t) => write!(f, "tls+{}", t.transport()),
        }
    }
}

/// What the TLS handshake told about a peer: [`Peer::Tls`](crate::Peer::Tls) carries it.
#[cfg(feature = "tls")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsPeer {
    transport: Peer,
    alpn: Option<Vec<u8>>,
    sni: Option<String>,
    certificates: Vec<CertificateDer<'static>>,
}

#[cfg(feature = "tls")]
impl TlsPeer {
    pub(crate) fn from_server(transport: Peer, conn: &rustls::ServerConnection) -> TlsPeer {
        TlsPeer {
            transport,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            sni: conn.server_name().map(str::to_owned),
            certificates: conn
                .peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
        }
    }

    pub(crate) fn from_client(
        transport: Peer,
        conn: &rustls::ClientConnection,
        name: Option<&str>,
    ) -> TlsPeer {
        TlsPeer {
            transport,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            sni: name.map(str::to_owned),
            certificates: conn
                .peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
        }
    }

    /// The socket peer under TLS (`Peer::Tcp`).
    pub fn transport(&self) -> &Peer {
        &self.transport
    }

    /// The ALPN protocol agreed on, if any (`b"h2"` for gRPC; none for TTHeader).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// On a server: the SNI name the client asked for. On a client: the name verified.
    pub fn server_name(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The peer's certificate chain, leaf first, as DER: on a server, the client's
    /// certificates (empty without mTLS); on a client, the server's. Already verified by the
    /// handshake.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }

    /// Whether the peer presented a (verified) certificate whose subject alternative names
    /// cover `name` (a DNS name or an IP address): the way to authorise an mTLS client by
    /// identity.
    pub fn certificate_valid_for(&self, name: &str) -> bool {
        let Some(leaf) = self.certificates.first() else {
            return false;
        };
        let Ok(name) = ServerName::try_from(name) else {
            return false;
        };
        webpki::EndEntityCert::try_from(leaf)
            .and_then(|c| c.verify_is_valid_for_subject_name(&name))
            .is_ok()
    }
}
