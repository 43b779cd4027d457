//! TLS on the server's listeners: the agents', the operators' and the HTTP listener all present
//! one certificate, and, given a client CA, verify the certificates clients present.
//!
//! What this module guarantees:
//! * the files are read and checked once, at start: a missing file, a file without a
//!   certificate or a key, a key that does not match the certificate, or a client CA that holds
//!   no usable certificate stops the server with an error naming the file — never a listener that
//!   fails every handshake later;
//! * every listener uses rustls with the ring provider (TLS 1.2 and 1.3, rustls's safe defaults);
//!   the gRPC listeners offer HTTP/2 (ALPN `h2`), the HTTP listener HTTP/1.1;
//! * a client that does not finish its handshake within [`HANDSHAKE_WITHIN`] is dropped, and
//!   handshakes run beside each other: a slow or silent client holds only its own connection;
//! * with `client_certificates = "required"` (the default once a client CA is given) a client
//!   without a certificate signed by that CA is refused during the handshake, before any call.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinSet;
use tokio_rustls::rustls;

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);

/// The `[tls]` section of the configuration: where the server's certificate and key are, and
/// whether (and against which CA) clients' certificates are verified.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that clients' certificates must be signed by; unset: clients present
    /// none.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Whether a client must present a certificate (`required`, the default with a client CA) or
    /// may connect without one (`optional`: one presented is still verified).
    #[serde(default)]
    pub client_certificates: Option<ClientCertificates>,
}

/// Whether clients must present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertificates {
    Required,
    Optional,
}

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the TLS file {} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("the TLS file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("the TLS file {} is not valid PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("the certificate {} and the key {} cannot be used together: {reason}", cert.display(), key.display())]
    Identity { cert: PathBuf, key: PathBuf, reason: String },
    #[error("the client CA {} cannot verify client certificates: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error(
        "client_certificates = \"optional\" needs client_ca_file: without a CA no client certificate can be verified"
    )]
    OptionalWithoutCa,
}

/// The loaded TLS settings, ready for every listener.
#[derive(Clone)]
pub struct Tls {
    grpc: tonic::transport::ServerTlsConfig,
    http: Arc<rustls::ServerConfig>,
    clients_must_present_certificates: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("clients_must_present_certificates", &self.clients_must_present_certificates)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_path_buf() },
        e => TlsError::Pem { path: path.to_path_buf(), reason: e.to_string() },
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Reads and checks `files`.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let (cert_pem, key_pem) = (read(&files.cert_file)?, read(&files.key_file)?);
        let chain = certificates(&files.cert_file, &cert_pem)?;
        let key = private_key(&files.key_file, &key_pem)?;
        let identity_error = |e: rustls::Error| TlsError::Identity {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
            reason: e.to_string(),
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Identity {
                cert: files.cert_file.clone(),
                key: files.key_file.clone(),
                reason: e.to_string(),
            })?;
        let required = match (&files.client_ca_file, files.client_certificates) {
            (None, Some(ClientCertificates::Optional)) => return Err(TlsError::OptionalWithoutCa),
            (None, _) => false,
            (Some(_), c) => c != Some(ClientCertificates::Optional),
        };
        let mut grpc = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&cert_pem, &key_pem))
            .timeout(HANDSHAKE_WITHIN);
        let builder = match &files.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let ca_pem = read(path)?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(path, &ca_pem)? {
                    roots.add(cert).map_err(|e| TlsError::ClientCa { path: path.clone(), reason: e.to_string() })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let verifier = if required { verifier } else { verifier.allow_unauthenticated() };
                let verifier =
                    verifier.build().map_err(|e| TlsError::ClientCa { path: path.clone(), reason: e.to_string() })?;
                grpc = grpc
                    .client_ca_root(tonic::transport::Certificate::from_pem(&ca_pem))
                    .client_auth_optional(!required);
                builder.with_client_cert_verifier(verifier)
            }
        };
        // The key is checked against the certificate here, for every listener (tonic's own
        // configuration reads the same PEM).
        let mut http = builder.with_single_cert(chain, key).map_err(identity_error)?;
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls { grpc, http: Arc::new(http), clients_must_present_certificates: required })
    }

    /// Whether every client must present a certificate signed by the client CA: then no listener
    /// is open to whoever can reach it.
    pub fn authenticates_clients(&self) -> bool {
        self.clients_must_present_certificates
    }

    /// The configuration of the gRPC listeners.
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        self.grpc.clone()
    }
}

/// A listener of the HTTP server whose connections are TLS streams: handshakes run on their own
/// tasks (at most [`HANDSHAKE_WITHIN`] each), so that `accept` hands out only finished ones.
pub struct TlsListener<L: axum::serve::Listener> {
    inner: L,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: JoinSet<Option<Accepted<L>>>,
}

/// A connection whose handshake finished, and its peer.
type Accepted<L> =
    (tokio_rustls::server::TlsStream<<L as axum::serve::Listener>::Io>, <L as axum::serve::Listener>::Addr);

impl<L: axum::serve::Listener> TlsListener<L>
where
    L::Addr: 'static,
{
    pub fn new(inner: L, tls: &Tls) -> Self {
        TlsListener { inner, acceptor: tokio_rustls::TlsAcceptor::from(tls.http.clone()), handshakes: JoinSet::new() }
    }
}

impl<L> axum::serve::Listener for TlsListener<L>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug + 'static,
{
    type Io = tokio_rustls::server::TlsStream<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                (io, addr) = self.inner.accept() => {
                    let handshake = self.acceptor.accept(io);
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_WITHIN, handshake).await {
                            Ok(Ok(stream)) => Some((stream, addr)),
                            Ok(Err(e)) => {
                                tracing::debug!(peer = ?addr, error = %e, "an HTTP client's TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(peer = ?addr, "an HTTP client did not finish its TLS handshake in time");
                                None
                            }
                        }
                    });
                }
                Some(Ok(Some(done))) = self.handshakes.join_next(), if !self.handshakes.is_empty() => return done,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` in `dir`: (cert file, key file).
    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn files(cert: &Path, key: &Path) -> TlsFiles {
        TlsFiles { cert_file: cert.into(), key_file: key.into(), client_ca_file: None, client_certificates: None }
    }

    #[test]
    fn files_that_cannot_serve_are_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "server");
        let (_, other_key) = self_signed(dir.path(), "other");
        assert!(Tls::load(&files(&cert, &key)).is_ok());
        let missing = dir.path().join("missing.pem");
        assert!(matches!(Tls::load(&files(&missing, &key)), Err(TlsError::Read { path, .. }) if path == missing));
        assert!(matches!(Tls::load(&files(&key, &key)), Err(TlsError::NoCertificate { path }) if path == key));
        assert!(matches!(Tls::load(&files(&cert, &cert)), Err(TlsError::NoKey { path }) if path == cert));
        assert!(matches!(Tls::load(&files(&cert, &other_key)), Err(TlsError::Identity { .. })));
        let optional = TlsFiles { client_certificates: Some(ClientCertificates::Optional), ..files(&cert, &key) };
        assert!(matches!(Tls::load(&optional), Err(TlsError::OptionalWithoutCa)));
        let empty_ca = dir.path().join("empty.pem");
        std::fs::write(&empty_ca, "").unwrap();
        let with_empty_ca = TlsFiles { client_ca_file: Some(empty_ca.clone()), ..files(&cert, &key) };
        assert!(matches!(Tls::load(&with_empty_ca), Err(TlsError::NoCertificate { path }) if path == empty_ca));
    }

    #[test]
    fn a_client_ca_requires_certificates_unless_they_are_optional() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "server");
        assert!(!Tls::load(&files(&cert, &key)).unwrap().authenticates_clients());
        let with_ca = TlsFiles { client_ca_file: Some(cert.clone()), ..files(&cert, &key) };
        assert!(Tls::load(&with_ca).unwrap().authenticates_clients());
        let optional = TlsFiles { client_certificates: Some(ClientCertificates::Optional), ..with_ca };
        assert!(!Tls::load(&optional).unwrap().authenticates_clients());
    }

    /// A client that connects and never starts its handshake holds only its own connection:
    /// another client's finished handshake is handed out while the silent one is still open.
    #[tokio::test]
    async fn a_silent_client_does_not_hold_back_another_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "server");
        let tls = Tls::load(&files(&cert, &key)).unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = TlsListener::new(tcp, &tls);

        let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&cert).unwrap()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
        });
        let (_stream, peer) = axum::serve::Listener::accept(&mut listener).await;
        let connected = client.await.unwrap().expect("the client's handshake completes");
        assert_eq!(peer, connected.get_ref().0.local_addr().unwrap());
        // The silent client's connection was not given up on to get there.
        let mut byte = [0u8; 1];
        assert!(matches!(silent.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
    }
}
