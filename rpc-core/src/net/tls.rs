//! TLS for every TCP transport, with rustls (ring provider).
//!
//! TLS lives in the shared socket layer, not in the transports: a
//! [`Listener`](crate::serve::Listener) address bound with
//! [`bind_tls`](crate::serve::Listener::bind_tls) runs the TLS handshake on each accepted
//! connection *before* protocol detection, so detection sees the decrypted bytes and one TLS
//! port serves every protocol the listener has (TTHeader, ttstream, gRPC). A client carries a
//! [`TlsClientConfig`] in its [`ConnectOptions`](super::ConnectOptions), and
//! [`Io::connect_with`](super::Io::connect_with) returns a connection that is already
//! encrypted. A transport therefore needs no TLS code of its own: it passes its
//! `ConnectOptions` to `Io::connect_with` (a gRPC client also asks for ALPN `h2` with
//! [`TlsClientConfig::alpn`]) and serves whatever [`Io`](super::Io) the listener hands it.
//!
//! The peer's TLS identity reaches handlers through the peer: a connection accepted over TLS
//! has [`Peer::Tls`](crate::Peer::Tls), and [`TlsPeer`] tells the negotiated ALPN protocol,
//! the SNI name the client asked for, and the client's certificate chain under mTLS
//! ([`TlsPeer::certificate_valid_for`] checks a name against the leaf's SANs).
//!
//! Certificates and keys come from PEM ([`TlsServerConfig::from_pem`],
//! [`TlsServerConfig::from_pem_files`], ...) or from a ready rustls config
//! ([`TlsServerConfig::from_rustls`], [`TlsClientConfig::from_rustls`]).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The first byte of every TLS connection: a handshake record (RFC 8446 §5.1,
/// `ContentType.handshake` = 22). A listener that expects TLS closes a connection starting
/// with anything else at once, instead of feeding plaintext to the handshake and waiting.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The ALPN protocols a [`TlsServerConfig`] offers by default: `h2`, what gRPC clients ask
/// for. A client that offers no ALPN at all (TTHeader over TLS, as Kitex does) is accepted
/// too; one that offers only protocols this list lacks is refused by the handshake.
pub const DEFAULT_SERVER_ALPN: &[&[u8]] = &[b"h2"];

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// No certificate (or no private key) in the PEM input.
    #[error("no {0} found in the PEM input")]
    Missing(&'static str),
    /// The PEM input is malformed.
    #[error("malformed PEM ({what}): {message}")]
    Pem {
        /// What was being read.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// rustls refused the configuration (a key that does not match the certificate, an
    /// unusable CA certificate, ...).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA certificates.
    #[error("client CA: {0}")]
    Verifier(String),
    /// Not a valid server name for SNI and verification.
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate in `pem`, in order (at least one).
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing("certificate"));
    }
    Ok(certs)
}

/// The first private key in `pem` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing("private key"),
        e => TlsError::Pem {
            what: "private key",
            message: e.to_string(),
        },
    })
}

fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certificates_from_pem(pem)? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// Whether a server asks clients for certificates, and whether it insists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client must present a certificate signed by one of the CAs (mTLS).
    Required,
    /// A client may present one (it is verified if it does); clients without are served.
    Optional,
}

/// The server side of TLS: a certificate chain and key, optional client-certificate
/// verification, ALPN. Cheap to clone.
#[derive(Clone)]
pub struct TlsServerConfig {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl TlsServerConfig {
    /// A server presenting the chain in `cert_pem` (leaf first) with the key in `key_pem`,
    /// asking for no client certificate, offering [`DEFAULT_SERVER_ALPN`].
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsServerConfig, TlsError> {
        Self::build(cert_pem, key_pem, None)
    }

    /// As [`TlsServerConfig::from_pem`], verifying client certificates against the CAs in
    /// `client_ca_pem` (mTLS when `auth` is [`ClientAuth::Required`]).
    pub fn with_client_auth(
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: &[u8],
        auth: ClientAuth,
    ) -> Result<TlsServerConfig, TlsError> {
        Self::build(cert_pem, key_pem, Some((client_ca_pem, auth)))
    }

    /// From PEM files: `echo-server --tls-cert cert.pem --tls-key key.pem [--tls-client-ca
    /// ca.pem]`. With a client CA, client certificates are required.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        client_ca: Option<&Path>,
    ) -> Result<TlsServerConfig, TlsError> {
        let (cert, key) = (read_file(cert.as_ref())?, read_file(key.as_ref())?);
        match client_ca {
            None => Self::from_pem(&cert, &key),
            Some(ca) => Self::with_client_auth(&cert, &key, &read_file(ca)?, ClientAuth::Required),
        }
    }

    fn build(
        cert_pem: &[u8],
        key_pem: &[u8],
        client_auth: Option<(&[u8], ClientAuth)>,
    ) -> Result<TlsServerConfig, TlsError> {
        let certs = certificates_from_pem(cert_pem)?;
        let key = private_key_from_pem(key_pem)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match client_auth {
            None => builder.with_no_client_auth(),
            Some((ca, auth)) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots_from_pem(ca)?),
                    provider(),
                );
                let verifier = match auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| TlsError::Verifier(e.to_string()))?,
                )
            }
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = DEFAULT_SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(TlsServerConfig {
            config: Arc::new(config),
        })
    }

    /// A ready rustls configuration, used as it is (its ALPN list included; leave it empty
    /// to accept any client, or include `h2` for gRPC).
    pub fn from_rustls(config: Arc<ServerConfig>) -> TlsServerConfig {
        TlsServerConfig { config }
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// Runs the server handshake on `io`.
    pub(crate) async fn accept<IO>(&self, io: IO) -> io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
            .accept(io)
            .await
    }
}

/// The client side of TLS: the CAs a server certificate must chain to, the name to verify it
/// against (and send as SNI), an optional client certificate, ALPN. Cheap to clone.
#[derive(Clone)]
pub struct TlsClientConfig {
    config: Arc<ClientConfig>,
    roots: Option<Arc<RootCertStore>>,
    identity: Option<Arc<Identity>>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig")
            .field("server_name", &self.server_name)
            .field("alpn", &self.config.alpn_protocols)
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsClientConfig {
    /// Trusts the CA certificates in `ca_pem` (and nothing else). The server name is the
    /// host of the address connected to, unless [`TlsClientConfig::server_name`] sets one.
    pub fn from_ca_pem(ca_pem: &[u8]) -> Result<TlsClientConfig, TlsError> {
        let roots = Arc::new(roots_from_pem(ca_pem)?);
        Ok(TlsClientConfig {
            config: build_client(&roots, None, Vec::new())?,
            roots: Some(roots),
            identity: None,
            server_name: None,
        })
    }

    /// From a CA file, with an optional client certificate and key file (`echo-client
    /// --tls-ca ca.pem [--tls-cert c.pem --tls-key c.key]`).
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        client_cert_and_key: Option<(&Path, &Path)>,
    ) -> Result<TlsClientConfig, TlsError> {
        let c = Self::from_ca_pem(&read_file(ca.as_ref())?)?;
        match client_cert_and_key {
            None => Ok(c),
            Some((cert, key)) => c.client_certificate(&read_file(cert)?, &read_file(key)?),
        }
    }

    /// Presents this certificate chain (leaf first) and key when the server asks (mTLS).
    pub fn client_certificate(
        mut self,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<TlsClientConfig, TlsError> {
        self.identity = Some(Arc::new((
            certificates_from_pem(cert_pem)?,
            private_key_from_pem(key_pem)?,
        )));
        let alpn = self.config.alpn_protocols.clone();
        self.rebuild(alpn)?;
        Ok(self)
    }

    /// Verifies the server's certificate against `name` and sends it as SNI, whatever host
    /// the address names (for an IP address, or a `unix://` address, or a certificate issued
    /// for a service name).
    pub fn server_name(mut self, name: &str) -> Result<TlsClientConfig, TlsError> {
        self.server_name = Some(
            ServerName::try_from(name.to_owned())
                .map_err(|_| TlsError::ServerName(name.to_owned()))?,
        );
        Ok(self)
    }

    /// Asks for these ALPN protocols, most preferred first (a gRPC client asks for `h2`).
    pub fn alpn(mut self, protocols: &[&[u8]]) -> TlsClientConfig {
        let alpn: Vec<Vec<u8>> = protocols.iter().map(|p| p.to_vec()).collect();
        let mut config = (*self.config).clone();
        config.alpn_protocols = alpn;
        self.config = Arc::new(config);
        self
    }

    /// A ready rustls configuration, used as it is.
    pub fn from_rustls(config: Arc<ClientConfig>) -> TlsClientConfig {
        TlsClientConfig {
            config,
            roots: None,
            identity: None,
            server_name: None,
        }
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    fn rebuild(&mut self, alpn: Vec<Vec<u8>>) -> Result<(), TlsError> {
        if let Some(roots) = &self.roots {
            self.config = build_client(roots, self.identity.as_deref(), alpn)?;
        }
        Ok(())
    }

    /// The name to verify and send: the configured one, else the address's host.
    fn name_for(&self, host: Option<&str>) -> io::Result<ServerName<'static>> {
        if let Some(n) = &self.server_name {
            return Ok(n.clone());
        }
        let host = host.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS needs a server name for this address (TlsClientConfig::server_name)",
            )
        })?;
        ServerName::try_from(host.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{host}` is not a valid TLS server name"),
            )
        })
    }

    /// Runs the client handshake on `io`; `host` is the address's host name.
    pub(crate) async fn connect<IO>(
        &self,
        host: Option<&str>,
        io: IO,
    ) -> io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = self.name_for(host)?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, io)
            .await
    }
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn build_client(
    roots: &Arc<RootCertStore>,
    identity: Option<&Identity>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots.clone());
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((certs, key)) => builder.with_client_auth_cert(certs.clone(), key.clone_key())?,
    };
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

pub use crate::peer::TlsPeer;
