//! The test PKI: a CA, a server certificate for `localhost` and `127.0.0.1`, client
//! certificates of every flavour (valid, expired, not yet valid, self-signed, from another CA),
//! written as PEM files in a [`TempDir`].

use std::path::PathBuf;
use std::sync::Arc;

use netio::tls::{ServerTlsSettings, Thumbprint, TlsRejections, server_config};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

use crate::TempDir;

/// A certificate with its key, as DER and as PEM files.
#[derive(Debug)]
pub struct Cert {
    pub der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Cert {
    pub fn thumbprint(&self) -> Thumbprint {
        Thumbprint::of(&self.der)
    }

    pub fn certified_key(&self) -> CertifiedKey {
        certified(vec![self.der.clone()], &self.key_der)
    }
}

pub fn certified(chain: Vec<CertificateDer<'static>>, key_der: &[u8]) -> CertifiedKey {
    let key = PrivateKeyDer::try_from(key_der.to_vec()).unwrap();
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .unwrap();
    CertifiedKey::new(chain, signing_key)
}

pub fn write_cert(dir: &TempDir, name: &str, cert: &rcgen::Certificate, key: &KeyPair) -> Cert {
    Cert {
        der: cert.der().clone(),
        key_der: key.serialize_der(),
        cert_path: dir.write(&format!("{name}.pem"), cert.pem()),
        key_path: dir.write(&format!("{name}.key"), key.serialize_pem()),
    }
}

pub fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

pub fn leaf_params(cn: &str, names: &[&str], eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![eku];
    params
}

pub fn expired(mut params: CertificateParams) -> CertificateParams {
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2001, 1, 1);
    params
}

pub fn not_yet_valid(mut params: CertificateParams) -> CertificateParams {
    params.not_before = date_time_ymd(2090, 1, 1);
    params.not_after = date_time_ymd(2091, 1, 1);
    params
}

/// The whole test PKI: a CA, a server certificate it issued for `localhost` and `127.0.0.1`,
/// client certificates of every flavour, and a second, unrelated CA.
#[derive(Debug)]
pub struct Pki {
    pub dir: TempDir,
    pub ca: Cert,
    pub server: Cert,
    /// Issued by `ca`, currently valid.
    pub client: Cert,
    /// Issued by `ca`, expired in 2001.
    pub client_expired: Cert,
    /// Issued by `ca`, valid from 2090.
    pub client_future: Cert,
    /// Self-signed, currently valid.
    pub client_self: Cert,
    /// Self-signed, expired.
    pub client_self_expired: Cert,
    /// Issued by `other_ca`.
    pub client_other_ca: Cert,
    pub other_ca: Cert,
    /// Issued by `ca` for `localhost`, expired.
    pub server_expired: Cert,
}

impl Pki {
    pub fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);

        let ca_key = KeyPair::generate().unwrap();
        let root_params = ca_params("Relay Test CA");
        let ca_cert = root_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&root_params, &ca_key);

        let other_key = KeyPair::generate().unwrap();
        let other_params = ca_params("Some Other CA");
        let other_cert = other_params.self_signed(&other_key).unwrap();
        let other_issuer = Issuer::from_params(&other_params, &other_key);

        let signed = |name: &str, params: CertificateParams, issuer: &Issuer<'_, &KeyPair>| {
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, issuer).unwrap();
            write_cert(&dir, name, &cert, &key)
        };
        let self_signed = |name: &str, params: CertificateParams| {
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            write_cert(&dir, name, &cert, &key)
        };
        let server_names = ["localhost", "127.0.0.1"];
        let client_eku = ExtendedKeyUsagePurpose::ClientAuth;
        let server_eku = ExtendedKeyUsagePurpose::ServerAuth;

        Self {
            ca: write_cert(&dir, "ca", &ca_cert, &ca_key),
            server: signed(
                "server",
                leaf_params("localhost", &server_names, server_eku.clone()),
                &issuer,
            ),
            server_expired: signed(
                "server-expired",
                expired(leaf_params("localhost", &server_names, server_eku)),
                &issuer,
            ),
            client: signed(
                "client",
                leaf_params("sender-1", &[], client_eku.clone()),
                &issuer,
            ),
            client_expired: signed(
                "client-expired",
                expired(leaf_params("sender-expired", &[], client_eku.clone())),
                &issuer,
            ),
            client_future: signed(
                "client-future",
                not_yet_valid(leaf_params("sender-future", &[], client_eku.clone())),
                &issuer,
            ),
            client_self: self_signed(
                "client-self",
                leaf_params("sender-self-signed", &[], client_eku.clone()),
            ),
            client_self_expired: self_signed(
                "client-self-expired",
                expired(leaf_params("sender-self-expired", &[], client_eku.clone())),
            ),
            client_other_ca: signed(
                "client-other-ca",
                leaf_params("sender-other-ca", &[], client_eku),
                &other_issuer,
            ),
            other_ca: write_cert(&dir, "other-ca", &other_cert, &other_key),
            dir,
        }
    }

    pub fn server_settings(&self) -> ServerTlsSettings {
        ServerTlsSettings {
            cert_chain: self.server.cert_path.clone(),
            key: self.server.key_path.clone(),
            client_ca: None,
            client_thumbprints: Vec::new(),
        }
    }

    pub fn server_with(
        &self,
        client_ca: Option<&Cert>,
        thumbprints: &[Thumbprint],
    ) -> (Arc<ServerConfig>, Arc<TlsRejections>) {
        let rejections = Arc::new(TlsRejections::new());
        let settings = ServerTlsSettings {
            client_ca: client_ca.map(|c| c.cert_path.clone()),
            client_thumbprints: thumbprints.to_vec(),
            ..self.server_settings()
        };
        let config = server_config(&settings, Arc::clone(&rejections)).unwrap();
        (config, rejections)
    }

    /// A test client built with plain rustls (independent of the code under test), trusting
    /// `ca`, limited to `versions`, presenting `cert` if given.
    pub fn client(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        cert: Option<CertifiedKey>,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der.clone()).unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots);
        Arc::new(match cert {
            Some(cert) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(cert))),
            None => builder.with_no_client_auth(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_certificate_loads_and_thumbprints_tell_certificates_apart() {
        let pki = Pki::new("pki-self-test");
        let (config, _) = pki.server_with(Some(&pki.ca), &[pki.client_self.thumbprint()]);
        assert!(!config.alpn_protocols.iter().any(Vec::is_empty));
        assert_ne!(pki.client.thumbprint(), pki.client_self.thumbprint());
        assert_eq!(pki.client.thumbprint(), Thumbprint::of(&pki.client.der));
        for cert in [&pki.ca, &pki.server, &pki.client_expired] {
            assert!(cert.cert_path.is_file() && cert.key_path.is_file());
        }
    }
}
