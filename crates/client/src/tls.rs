//! TLS for connections to a server that serves it (`lockstep serve --tls-cert`): the CA its
//! certificate is checked against, and the certificate this client presents when the server asks
//! for one (`--tls-client-ca`).

use std::path::Path;

/// How a client connects over TLS. Without it, connections are plain TCP (`http://`).
#[derive(Clone, Debug)]
pub struct TlsOptions {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
}

fn read(path: &Path, what: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot read the {what} {}: {e}", path.display())))
}

impl TlsOptions {
    /// Trusts the CA certificates (PEM) in `ca_pem`, and only them, for the server's certificate.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        TlsOptions { ca_pem: ca_pem.into(), identity: None, domain: None }
    }

    /// Reads the CA certificates (PEM) from `ca_file`.
    pub fn from_ca_file(ca_file: impl AsRef<Path>) -> std::io::Result<Self> {
        Ok(TlsOptions::new(read(ca_file.as_ref(), "CA certificate file")?))
    }

    /// Presents this certificate chain and key (PEM) to a server that asks for client
    /// certificates.
    pub fn identity(self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        TlsOptions { identity: Some((cert_pem.into(), key_pem.into())), ..self }
    }

    /// Presents the certificate chain and key (PEM) read from these files.
    pub fn identity_files(self, cert_file: impl AsRef<Path>, key_file: impl AsRef<Path>) -> std::io::Result<Self> {
        let cert = read(cert_file.as_ref(), "client certificate file")?;
        let key = read(key_file.as_ref(), "client key file")?;
        Ok(self.identity(cert, key))
    }

    /// Checks the server's certificate for this name instead of the host of the address
    /// connected to (e.g. connecting to an IP address with a certificate for a DNS name).
    pub fn domain(self, name: impl Into<String>) -> Self {
        TlsOptions { domain: Some(name.into()), ..self }
    }

    pub(crate) fn config(&self) -> tonic::transport::ClientTlsConfig {
        let mut config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use crate::{Client, ConnectOptions, Error, TlsOptions};

    async fn refusal(addr: &str, tls: Option<TlsOptions>) -> String {
        match Client::connect_with(addr, ConnectOptions { token: None, tls }).await {
            Err(Error::Connect { reason, .. }) => reason,
            Err(other) => panic!("refused for another reason: {other}"),
            Ok(_) => panic!("connected to {addr}"),
        }
    }

    #[tokio::test]
    async fn a_scheme_that_contradicts_the_tls_options_is_refused_before_connecting() {
        let tls = TlsOptions::new(&b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"[..]);
        assert!(refusal("https://127.0.0.1:1", None).await.contains("needs TLS options"));
        assert!(refusal("http://127.0.0.1:1", Some(tls)).await.contains("use https:// or host:port"));
    }

    #[test]
    fn files_that_cannot_be_read_are_named() {
        let err = TlsOptions::from_ca_file("/nonexistent/ca.pem").unwrap_err().to_string();
        assert!(err.contains("CA certificate file /nonexistent/ca.pem"), "{err}");
        let err = TlsOptions::new(Vec::new()).identity_files("/nonexistent/c.pem", "/k.pem").unwrap_err().to_string();
        assert!(err.contains("client certificate file /nonexistent/c.pem"), "{err}");
    }
}
