//! End-to-end: TLS on every listener of a real `lockstep serve`, with certificates made by
//! `lockstep certs`, as an operator would set it up.
//!
//! * With `--tls-client-ca`, agents, operators (on their own listener) and HTTP clients that
//!   present a certificate of that CA are served: sessions, deliveries, barriers, the CLI, the
//!   Admin API, `/healthz`.
//! * A client without a certificate, a client speaking plain TCP, and a client that does not
//!   trust the server's CA are refused, on every listener.
//! * With `client_certificates = "optional"`, a client without a certificate is served.
//! * Files that cannot be used stop the server at start, naming the file; TLS that requires client
//!   certificates counts as authentication for a listener beyond loopback.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lockstep_client::{Client, ConnectOptions, Participants, TlsOptions};
use support::{http_get_on, opts, serve_fails, ScratchDir, Server};
use tokio_rustls::rustls;

/// `lockstep certs --out dir/name`: the directory holding the new CA and certificates.
fn certs(dir: &ScratchDir, name: &str) -> std::path::PathBuf {
    let out = dir.join(name);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["certs", "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "lockstep certs");
    out
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_str().unwrap().to_owned()
}

/// `serve` flags for TLS with the certificates in `dir`, requiring client certificates.
fn mutual(dir: &Path) -> Vec<String> {
    [
        "--tls-cert",
        &path(dir, "server.pem"),
        "--tls-key",
        &path(dir, "server.key"),
        "--tls-client-ca",
        &path(dir, "ca.pem"),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Two private CAs, each with its certificates (`lockstep certs` twice): ours and theirs.
fn two_cas(label: &str) -> (ScratchDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = ScratchDir::new(label);
    let (ours, theirs) = (certs(&dir, "ours"), certs(&dir, "theirs"));
    (dir, ours, theirs)
}

fn start(flags: &[String]) -> Server {
    Server::start(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Trusting our CA, presenting their client certificate.
fn foreign(ours: &Path, theirs: &Path) -> TlsOptions {
    TlsOptions::from_ca_file(ours.join("ca.pem"))
        .unwrap()
        .identity_files(theirs.join("client.pem"), theirs.join("client.key"))
        .unwrap()
}

fn tls(dir: &Path, with_certificate: bool) -> TlsOptions {
    let tls = TlsOptions::from_ca_file(dir.join("ca.pem")).unwrap();
    if with_certificate {
        tls.identity_files(dir.join("client.pem"), dir.join("client.key")).unwrap()
    } else {
        tls
    }
}

async fn connect(addr: &str, tls: Option<TlsOptions>) -> Result<Client, lockstep_client::Error> {
    Client::connect_with(addr, ConnectOptions { token: None, tls }).await
}

/// Whether a client connecting with `tls` gets an answer to a query: `ListAgents`, or on the
/// operators' own listener `Admin.Status`.
async fn served(addr: &str, tls: Option<TlsOptions>, operators: bool) -> bool {
    let attempt = async {
        let client = connect(addr, tls).await?;
        if operators {
            client.admin(None, None)?.status().await.map(drop)
        } else {
            client.list_agents(Default::default()).await.map(drop)
        }
    };
    matches!(tokio::time::timeout(Duration::from_secs(20), attempt).await, Ok(Ok(_)))
}

/// `GET /healthz` over TLS trusting `ca_dir`'s CA, presenting `client_dir`'s certificate if given:
/// the status, or `None` if the connection was refused.
async fn healthz_over_tls(addr: &str, ca_dir: &Path, client_dir: Option<&Path>) -> Option<u16> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client_dir {
        None => builder.with_no_client_auth(),
        Some(dir) => {
            let chain = CertificateDer::pem_file_iter(dir.join("client.pem")).unwrap().map(Result::unwrap).collect();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap()).unwrap()
        }
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.ok()?;
    // A refused client certificate (TLS 1.3) shows after the handshake, as the connection ending.
    let get = tokio::spawn(async move { http_get_on(stream, "localhost", "/healthz").await.0 });
    get.await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_serves_tls_to_clients_of_its_ca_and_refuses_others() {
    let (_dir, ours, theirs) = two_cas("tls");
    let mut flags = mutual(&ours);
    flags.extend(["--admin-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"].map(str::to_owned));
    let server = start(&flags);

    // Agents with a certificate of the CA: sessions, deliveries and a barrier.
    let client = connect(&server.addr, Some(tls(&ours, true))).await.expect("connects over TLS");
    let a = client.register(opts("a", "worker").interests(["feed"])).await.unwrap();
    let b = client.register(opts("b", "worker")).await.unwrap();
    let mut deliveries = a.deliveries().unwrap();
    b.publish_confirmed("feed", &b"over tls"[..]).await.unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(20), deliveries.recv()).await.unwrap().unwrap();
    assert_eq!(&delivered.payload[..], b"over tls");
    let both = || Participants::Agents(vec!["a".into(), "b".into()]);
    let (x, y) = tokio::join!(
        a.sync("gate", both(), Duration::from_secs(20), Bytes::new()),
        b.sync("gate", both(), Duration::from_secs(20), Bytes::new())
    );
    assert_eq!(x.unwrap().arrival_order.len(), 2);
    y.unwrap();

    // The operators' listener, through the Rust client and through the CLI.
    let admin = connect(&server.admin_addr, Some(tls(&ours, true))).await.unwrap().admin(None, Some("ops")).unwrap();
    assert_eq!(admin.status().await.unwrap().agents, 2);
    let ca = path(&ours, "ca.pem");
    let (cert, key) = (path(&ours, "client.pem"), path(&ours, "client.key"));
    let (ok, out, err) = server.cli(&["agents", "--json", "--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
    assert!(ok, "{err}");
    assert!(out.contains("\"agent_id\":\"a\"") || out.contains("\"agent_id\": \"a\""), "{out}");
    let (ok, _, err) = server.cli(&["agents", "--tls-ca", &ca]);
    assert!(!ok, "the CLI without a client certificate is refused");
    assert!(!err.is_empty());
    let (ok, _, _) = server.cli(&["agents"]);
    assert!(!ok, "the CLI over plain TCP is refused");

    // Refused on the gRPC listeners: no client certificate, plain TCP, a certificate of another
    // CA, a server certificate not trusted.
    for (addr, operators) in [(&server.addr, false), (&server.admin_addr, true)] {
        let served = |tls| served(addr, tls, operators);
        assert!(served(Some(tls(&ours, true))).await, "{addr}: a client of the CA is served");
        assert!(!served(Some(tls(&ours, false))).await, "{addr}: refused without a client certificate");
        assert!(!served(None).await, "{addr}: refused over plain TCP");
        assert!(!served(Some(foreign(&ours, &theirs))).await, "{addr}: refused with another CA's certificate");
        assert!(!served(Some(tls(&theirs, true))).await, "{addr}: the client does not trust the server");
    }

    // The HTTP listener.
    assert_eq!(healthz_over_tls(&server.http_addr, &ours, Some(&ours)).await, Some(200));
    assert_eq!(healthz_over_tls(&server.http_addr, &ours, None).await, None, "refused without a certificate");
    assert_eq!(healthz_over_tls(&server.http_addr, &ours, Some(&theirs)).await, None, "refused: another CA");
    let mut plain = tokio::net::TcpStream::connect(&server.http_addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), plain.read_to_end(&mut answer)).await.unwrap();
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "plain HTTP is not served");

    // The agents were not disturbed by any of it.
    b.publish_confirmed("feed", &b"still here"[..]).await.unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(20), deliveries.recv()).await.unwrap().unwrap();
    assert_eq!(&delivered.payload[..], b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_optional_client_certificates_a_client_without_one_is_served() {
    let (dir, ours, theirs) = two_cas("tls-optional");
    let mut flags = mutual(&ours);
    flags.extend(["--http-listen", "127.0.0.1:0"].map(str::to_owned));
    let config = dir.join("lockstep.toml");
    std::fs::write(&config, "[tls]\nclient_certificates = \"optional\"\n").unwrap();
    flags.extend(["--config".to_owned(), config.to_str().unwrap().to_owned()]);
    let server = start(&flags);
    assert!(served(&server.addr, Some(tls(&ours, false)), false).await, "served without a certificate");
    assert!(served(&server.addr, Some(tls(&ours, true)), false).await, "served with one");
    assert!(
        !served(&server.addr, Some(foreign(&ours, &theirs)), false).await,
        "a certificate presented is still verified"
    );
    assert_eq!(healthz_over_tls(&server.http_addr, &ours, None).await, Some(200));
}

#[test]
fn unusable_files_stop_the_server_naming_them() {
    let dir = ScratchDir::new("tls-files");
    let ours = certs(&dir, "ours");
    let missing = path(&ours, "missing.pem");
    let (failed, err) = serve_fails(&["--tls-cert", &missing, "--tls-key", &path(&ours, "server.key")]);
    assert!(failed && err.contains("missing.pem"), "{err}");
    // A key that is not the certificate's.
    let (failed, err) =
        serve_fails(&["--tls-cert", &path(&ours, "server.pem"), "--tls-key", &path(&ours, "client.key")]);
    assert!(failed && err.contains("server.pem") && err.contains("client.key"), "{err}");
    // A certificate file holding a key.
    let (failed, err) =
        serve_fails(&["--tls-cert", &path(&ours, "server.key"), "--tls-key", &path(&ours, "server.key")]);
    assert!(failed && err.contains("holds no PEM certificate"), "{err}");
    // Optional client certificates without a CA to verify them.
    let config = dir.join("optional.toml");
    std::fs::write(&config, "[tls]\nclient_certificates = \"optional\"\n").unwrap();
    let (failed, err) = serve_fails(&[
        "--config",
        config.to_str().unwrap(),
        "--tls-cert",
        &path(&ours, "server.pem"),
        "--tls-key",
        &path(&ours, "server.key"),
    ]);
    assert!(failed && err.contains("client_ca_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_authenticate_a_listener_beyond_loopback() {
    let dir = ScratchDir::new("tls-public");
    let ours = certs(&dir, "ours");
    let (cert, key) = (path(&ours, "server.pem"), path(&ours, "server.key"));
    // TLS alone encrypts but asks nothing of callers: still refused.
    let (failed, err) = serve_fails(&["--http-listen", "0.0.0.0:0", "--tls-cert", &cert, "--tls-key", &key]);
    assert!(failed && err.contains("without authentication"), "{err}");
    let mut flags = mutual(&ours);
    flags.extend(["--http-listen", "0.0.0.0:0"].map(str::to_owned));
    let mut server = start(&flags);
    let port = server.http_addr.rsplit(':').next().unwrap().to_owned();
    let status = healthz_over_tls(&format!("127.0.0.1:{port}"), &ours, Some(&ours)).await;
    assert_eq!(status, Some(200), "it started and serves clients of its CA");
    assert!(server.terminate(Duration::from_secs(30)), "and stops when asked");
}
