//! The benchmark's throwaway PKI, generated in memory on every run (so the default run needs no
//! files): a P-256 CA and a leaf for `localhost` / `127.0.0.1` that it issued, written as PEM
//! files into the run's private directory because the systems under test are separate
//! processes that read certificates from files.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// The PEM files every system under test and the load generator are given.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// The CA certificate: what the load generator trusts (`--ca`).
    pub ca: PathBuf,
    /// The server chain, leaf first then the CA (what the relays present).
    pub chain: PathBuf,
    /// The leaf's private key (PKCS#8 PEM), mode 0600.
    pub key: PathBuf,
}

/// The name the load generator sends as SNI and checks against the leaf.
pub const SERVER_NAME: &str = "localhost";

/// Generates the CA and the leaf and writes them into `dir` (which must exist).
///
/// P-256 ECDSA, as the performance study used for every peer: the handshake cost is the same
/// for all systems and small next to the measured traffic.
pub fn generate(dir: &Path) -> anyhow::Result<PkiFiles> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mllp-bench throwaway CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    let files = PkiFiles {
        ca: dir.join("ca.pem"),
        chain: dir.join("chain.pem"),
        key: dir.join("leaf.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem())?;
    std::fs::write(
        &files.chain,
        format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
    )?;
    write_private(&files.key, leaf_key.serialize_pem().as_bytes())?;
    Ok(files)
}

/// Writes a file only its owner can read (private keys).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_chain_the_relay_accepts() {
        let dir = testkit::TempDir::new("mllp-bench-pki");
        let files = generate(dir.path()).unwrap();
        let chain = std::fs::read_to_string(&files.chain).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        let mode = std::fs::metadata(&files.key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // The project's TLS loader (the relay's) is the judge of whether the files are usable.
        let settings = netio::tls::ServerTlsSettings {
            cert_chain: files.chain.clone(),
            key: files.key,
            client_ca: None,
            client_thumbprints: Vec::new(),
        };
        netio::tls::server_config(
            &settings,
            std::sync::Arc::new(netio::tls::TlsRejections::new()),
        )
        .unwrap();
    }
}
