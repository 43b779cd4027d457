//! `lockstep certs`: a private certificate authority with one server and one client certificate,
//! to try TLS (`serve --tls-cert`) and client certificates (`serve --tls-client-ca`) without a
//! PKI. Keys are ECDSA P-256, written readable by their owner only; certificates are valid from a
//! day before they were made for `--days` days. For production, use certificates from the
//! organisation's own CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

/// The files `lockstep certs` writes into its directory.
pub const FILES: [&str; 5] = ["ca.pem", "server.pem", "server.key", "client.pem", "client.key"];

#[derive(Args)]
pub struct CertsArgs {
    /// Directory to write ca.pem, server.pem, server.key, client.pem and client.key into (created
    /// if missing; existing files are not overwritten).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Names and IP addresses the server certificate is valid for, besides localhost, 127.0.0.1
    /// and ::1 (repeat the flag for several).
    #[arg(long = "host", value_name = "NAME_OR_IP")]
    hosts: Vec<String>,
    /// The client certificate's common name.
    #[arg(long, default_value = "lockstep-client")]
    client_name: String,
    /// How many days the certificates are valid for.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
}

/// Validity from a day ago (clocks differ) to `days` from now.
fn validity(params: &mut CertificateParams, days: u32) -> anyhow::Result<()> {
    const DAY: Duration = Duration::from_secs(86_400);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the system clock is before 1970")?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(DAY);
    params.not_after = epoch + now + DAY * days;
    Ok(())
}

fn subject_alt_name(host: &str) -> anyhow::Result<SanType> {
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => {
            // rcgen takes any ASCII; the name is checked as a TLS client will check it.
            rustls_pki_types::DnsName::try_from(host).with_context(|| format!("`{host}` is not a valid DNS name"))?;
            SanType::DnsName(host.try_into()?)
        }
    })
}

/// An end-entity certificate for `purpose`, signed by `ca`: its PEM and its key's PEM.
fn leaf(
    ca: &Issuer<'_, KeyPair>,
    common_name: &str,
    names: Vec<SanType>,
    purpose: ExtendedKeyUsagePurpose,
    days: u32,
) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.subject_alt_names = names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days)?;
    let key = KeyPair::generate()?;
    Ok((params.signed_by(&key, ca)?.pem(), key.serialize_pem()))
}

/// Writes `text` to `path`, refusing to replace a file; `private` files are readable by their
/// owner only.
fn write_new(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("cannot create {} (existing files are not replaced)", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let mut names = vec![subject_alt_name("localhost")?, subject_alt_name("127.0.0.1")?, subject_alt_name("::1")?];
    for host in &args.hosts {
        names.push(subject_alt_name(host)?);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    for name in FILES {
        let path = args.out.join(name);
        anyhow::ensure!(!path.exists(), "{} exists already: give --out an empty or new directory", path.display());
    }

    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "lockstep private CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut ca, args.days)?;
    let ca_key = KeyPair::generate()?;
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);

    let (server_pem, server_key) =
        leaf(&issuer, "lockstep server", names, ExtendedKeyUsagePurpose::ServerAuth, args.days)?;
    let (client_pem, client_key) =
        leaf(&issuer, &args.client_name, vec![], ExtendedKeyUsagePurpose::ClientAuth, args.days)?;
    for (name, text, private) in [
        (FILES[0], &ca_pem, false),
        (FILES[1], &server_pem, false),
        (FILES[2], &server_key, true),
        (FILES[3], &client_pem, false),
        (FILES[4], &client_key, true),
    ] {
        write_new(&args.out.join(name), text, private)?;
    }
    println!(
        "wrote {} into {}: serve with --tls-cert server.pem --tls-key server.key [--tls-client-ca ca.pem]; \
         connect with --tls-ca ca.pem [--tls-cert client.pem --tls-key client.key]",
        FILES.join(", "),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(out: &Path) -> CertsArgs {
        CertsArgs {
            out: out.to_path_buf(),
            hosts: vec!["lockstep.internal".into(), "10.0.0.7".into()],
            client_name: "planner".into(),
            days: 30,
        }
    }

    #[test]
    fn writes_a_ca_and_certificates_the_server_can_load() {
        let dir = tempfile::tempdir().unwrap();
        run(args(dir.path())).unwrap();
        let tls = lockstep_server::tls::Tls::load(&lockstep_server::tls::TlsFiles {
            cert_file: dir.path().join("server.pem"),
            key_file: dir.path().join("server.key"),
            client_ca_file: Some(dir.path().join("ca.pem")),
            client_certificates: None,
        })
        .unwrap();
        assert!(tls.authenticates_clients());
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("server.key"), 0o600);
        assert_eq!(mode("client.key"), 0o600);
        assert_eq!(mode("ca.pem"), 0o644);
    }

    #[test]
    fn never_replaces_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.key"), "mine").unwrap();
        let err = run(args(dir.path())).unwrap_err().to_string();
        assert!(err.contains("server.key exists already"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join("server.key")).unwrap(), "mine");
        assert!(!dir.path().join("ca.pem").exists());
    }

    #[test]
    fn a_host_that_is_neither_a_name_nor_an_address_is_refused() {
        let err = subject_alt_name("not a host").unwrap_err().to_string();
        assert!(err.contains("not a valid DNS name"), "{err}");
    }
}
