//! `mllp-relay gen-certs DIR`: throwaway certificates for trying TLS and mutual TLS with the
//! relay and its example configs (relay/examples/), never for production: the CA's key sits
//! next to what it signed, nothing can revoke them, and anyone who copies the directory can
//! impersonate the relay or a sender.
//!
//! Part of the binary, not of the `relay` library: only the command line makes certificates.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use netio::tls::{CertIdentity, Thumbprint};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// What the command line asked for; checked by [`run`].
#[derive(Debug)]
pub(crate) struct Request {
    /// Where the files go (created if missing).
    pub(crate) dir: PathBuf,
    /// Host names and IP addresses the server certificate names; the first is also its CN.
    pub(crate) names: Vec<String>,
    /// One client certificate per name: `client-NAME.pem`, subject `CN=NAME`.
    pub(crate) clients: Vec<String>,
    /// Validity from now.
    pub(crate) days: u32,
    /// Replace files that already exist.
    pub(crate) force: bool,
}

/// The CN of the certificate the relay presents to a receiver that wants mutual TLS.
const RELAY_CLIENT_CN: &str = "mllp-relay";

/// One file to write, and the line that tells the reader what it is for.
struct Output {
    name: String,
    contents: String,
    /// Private keys: created with mode 0600.
    private: bool,
    what: String,
    /// Lines printed under the "wrote" line: the values a config file takes from it.
    notes: Vec<String>,
}

/// Generates every certificate and key in memory, then writes them into `request.dir` and
/// prints one line per file (with the thumbprint and subject of each client certificate).
/// Nothing is written when a name is unusable or a file exists without `--force`.
pub(crate) fn run(request: &Request) -> anyhow::Result<()> {
    check_names(&request.names)?;
    check_clients(&request.clients)?;
    let outputs = generate(request)?;

    let paths: Vec<PathBuf> = outputs.iter().map(|o| request.dir.join(&o.name)).collect();
    // `symlink_metadata`: a dangling symlink is a file in the way too.
    let existing: Vec<&PathBuf> = paths
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    if let Some(first) = existing.first()
        && !request.force
    {
        let more = match existing.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more of the files gen-certs writes)"),
        };
        bail!(
            "{} already exists{more}: gen-certs does not overwrite certificates or keys; give \
             --force to replace them all, or choose another directory",
            first.display()
        );
    }
    std::fs::create_dir_all(&request.dir)
        .with_context(|| format!("cannot create the directory {}", request.dir.display()))?;
    for path in &existing {
        // Removed rather than truncated: a key must be created afresh with mode 0600 (`mode`
        // applies only to a file being created), and a symlink must not be written through.
        std::fs::remove_file(path)
            .with_context(|| format!("cannot replace {} (--force)", path.display()))?;
    }
    for (output, path) in outputs.iter().zip(&paths) {
        write_new(path, output.contents.as_bytes(), output.private)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Printed once every file is written, so a reader that stops early (`| head`) cannot
    // leave a set with some keys missing.
    let mut out = std::io::stdout().lock();
    let mut print = || -> std::io::Result<()> {
        for (output, path) in outputs.iter().zip(&paths) {
            writeln!(out, "wrote {}: {}", path.display(), output.what)?;
            for note in &output.notes {
                writeln!(out, "    {note}")?;
            }
        }
        writeln!(
            out,
            "These certificates are valid for {} day(s) and are for trying TLS only: never \
             use them in production (see mllp-relay gen-certs --help).",
            request.days
        )?;
        out.flush()
    };
    print().context("the files are written, but their list could not be printed")
}

/// Every name must go into a subjectAltName: an IP address, or a DNS name (a leading `*.`
/// allowed).
fn check_names(names: &[String]) -> anyhow::Result<()> {
    for name in names {
        if name.parse::<IpAddr>().is_ok() {
            continue;
        }
        let host = name.strip_prefix("*.").unwrap_or(name);
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            bail!(
                "--name {name:?} is neither a host name nor an IP address (host names are \
                 letters, digits, '-' and '.', e.g. relay.hospital.example; addresses e.g. \
                 10.20.0.4)"
            );
        }
    }
    Ok(())
}

/// Client names become file names (`client-NAME.pem`) and CNs: a safe, unique alphabet.
fn check_clients(clients: &[String]) -> anyhow::Result<()> {
    for (i, name) in clients.iter().enumerate() {
        let valid = !name.is_empty()
            && !name.starts_with(['.', '-'])
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            bail!(
                "--client {name:?}: use letters, digits, '-', '_' and '.' (the name becomes \
                 the file name client-NAME.pem and the certificate's CN), e.g. lab-analyser"
            );
        }
        if clients[..i].contains(name) {
            bail!("--client {name:?} is given twice: each name is one certificate");
        }
    }
    Ok(())
}

/// A certificate's validity: from an hour ago (a peer whose clock runs a little behind this
/// machine's would otherwise see a certificate that is not valid yet) to `days` from now.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(u64::from(days) * 86_400)).into();
}

fn generate(request: &Request) -> anyhow::Result<Vec<Output>> {
    let mut outputs = Vec::new();
    let failed = |what: &str| format!("cannot generate the {what}");

    let ca_key = KeyPair::generate().with_context(|| failed("CA key"))?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params.distinguished_name.push(
        DnType::CommonName,
        "mllp-relay gen-certs throwaway CA (not for production)",
    );
    // Issues leaf certificates only.
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca_params, request.days);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .with_context(|| failed("CA certificate"))?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    // A leaf the CA issues, with the key usages a strict peer (OpenSSL, Java) checks.
    let leaf = |cn: &str,
                names: &[String],
                eku: ExtendedKeyUsagePurpose|
     -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
        let key = KeyPair::generate().with_context(|| failed("key"))?;
        let mut params =
            CertificateParams::new(names.to_vec()).with_context(|| failed("certificate"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, request.days);
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| failed(&format!("certificate for {cn}")))?;
        Ok((cert, key))
    };

    outputs.push(Output {
        name: "ca.pem".into(),
        contents: ca_cert.pem(),
        private: false,
        what: "the CA certificate: listener.tls.client_ca (accepts the client certificates \
               below); senders and a downstream relay trust it"
            .into(),
        notes: Vec::new(),
    });
    outputs.push(Output {
        name: "ca.key".into(),
        contents: ca_key.serialize_pem(),
        private: true,
        what: "the CA's private key, mode 0600 (issues more certificates; the relay never \
               reads it)"
            .into(),
        notes: Vec::new(),
    });

    let server_cn = request.names.first().map_or("localhost", String::as_str);
    let (server, server_key) = leaf(
        server_cn,
        &request.names,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    outputs.push(Output {
        name: "server.pem".into(),
        // Leaf first, then the CA: the chain `listener.tls.cert` expects.
        contents: format!("{}{}", server.pem(), ca_cert.pem()),
        private: false,
        what: format!(
            "the server certificate for {}, then the CA: listener.tls.cert",
            request.names.join(", ")
        ),
        notes: vec![format!(
            "thumbprints = [\"{}\"]   # [downstream.tls] of a relay that forwards here",
            Thumbprint::of(server.der())
        )],
    });
    outputs.push(Output {
        name: "server.key".into(),
        contents: server_key.serialize_pem(),
        private: true,
        what: "its private key, mode 0600: listener.tls.key".into(),
        notes: Vec::new(),
    });

    let mut client = |file: &str, cn: &str, what: String, key_what: &str| -> anyhow::Result<()> {
        let (cert, key) = leaf(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)?;
        let identity = CertIdentity::of(cert.der());
        let subject = identity.subject.unwrap_or_else(|| format!("CN={cn}"));
        outputs.push(Output {
            name: format!("{file}.pem"),
            contents: cert.pem(),
            private: false,
            what,
            notes: vec![
                format!(
                    "client_thumbprint = \"{}\"   # [[listener.sender]]; or list it in \
                     listener.tls.client_thumbprints",
                    identity.thumbprint
                ),
                format!("client_subject = {subject:?}   # [[listener.sender]]"),
            ],
        });
        outputs.push(Output {
            name: format!("{file}.key"),
            contents: key.serialize_pem(),
            private: true,
            what: format!("its private key, mode 0600{key_what}"),
            notes: Vec::new(),
        });
        Ok(())
    };
    for name in &request.clients {
        client(
            &format!("client-{name}"),
            name,
            format!("a client certificate for the sender {name:?} (hand it over with its key)"),
            "",
        )?;
    }
    client(
        "relay-client",
        RELAY_CLIENT_CN,
        "the relay's own client certificate, for a receiver that wants mutual TLS: \
         downstream.tls.client_cert"
            .into(),
        ": downstream.tls.client_key",
    )?;
    Ok(outputs)
}

/// Creates `path` (it must not exist) with `contents`; a private file only its owner can read.
fn write_new(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_clients_are_checked() {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(check_names(&names(&["localhost", "127.0.0.1", "::1", "*.lab.example"])).is_ok());
        for bad in [
            "",
            "bad name",
            "-x.example",
            "a..b",
            "*.",
            "ünïcode.example",
        ] {
            let e = check_names(&names(&[bad])).unwrap_err().to_string();
            assert!(e.starts_with("--name "), "{e}");
        }
        assert!(check_clients(&names(&["sender", "lab_2", "ris.1"])).is_ok());
        for bad in ["", "../x", ".hidden", "a b"] {
            assert!(check_clients(&names(&[bad])).is_err(), "{bad:?}");
        }
        let e = check_clients(&names(&["a", "a"])).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn every_file_is_generated_keys_marked_private() {
        let request = Request {
            dir: PathBuf::new(),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            clients: vec!["sender".into(), "lab".into()],
            days: 1,
            force: false,
        };
        let outputs = generate(&request).unwrap();
        let generated: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            generated,
            [
                "ca.pem",
                "ca.key",
                "server.pem",
                "server.key",
                "client-sender.pem",
                "client-sender.key",
                "client-lab.pem",
                "client-lab.key",
                "relay-client.pem",
                "relay-client.key",
            ]
        );
        for output in &outputs {
            assert_eq!(
                output.private,
                output.name.ends_with(".key"),
                "{}",
                output.name
            );
        }
    }
}
