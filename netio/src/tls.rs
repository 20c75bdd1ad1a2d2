//! TLS configuration and certificate verification for the relay (pure configuration: no I/O
//! beyond reading PEM files, no sockets).
//!
//! The relay terminates TLS 1.2 and 1.3 with rustls on the `ring` provider (it builds with only
//! a C compiler and uses the AES-NI/CLMUL assembly), optionally with mutual TLS, and can connect
//! to a downstream over TLS.
//!
//! # Inbound (server side): which client certificates are accepted
//!
//! Client authentication is off when neither a client CA nor a thumbprint allowlist is
//! configured. Otherwise it is **mandatory**, and
//!
//! > a client certificate is accepted when it is inside its validity period **and** (its SHA-256
//! > thumbprint is on the allowlist **or** it chains to the configured CA).
//!
//! So a self-signed client certificate is accepted by thumbprint alone ("exactly this
//! certificate"), and any certificate issued by the CA is accepted without being listed ("or one
//! issued by it"), as integration engines such as Rhapsody offer it.
//!
//! * The validity period is read with `x509-parser` and compared with the time rustls hands the
//!   verifier (not the system clock): expired → [`CertificateError::Expired`], not yet valid →
//!   [`CertificateError::NotValidYet`]. It is checked first, so an expired certificate is rejected
//!   even when its thumbprint is listed.
//! * The chain check is webpki's ([`WebPkiClientVerifier`]) against every certificate of the CA
//!   bundle; it also checks the intermediates' validity, the signatures and the `clientAuth`
//!   extended key usage (when the certificate carries an EKU extension).
//! * Neither path matches → [`CertificateError::UnknownIssuer`] (or the more precise webpki
//!   error) when a CA is configured, else [`CertificateError::ApplicationVerificationFailure`].
//! * The handshake signature (proof that the client holds the key) is checked with the
//!   provider's algorithms in both paths.
//!
//! rustls sends the TLS alert itself and the connection stays in its error state, so nothing a
//! rejected client sends (not even data queued right behind its `Finished`) is ever delivered as
//! application data.
//! Every rejection is counted in [`TlsRejections`] and logged once at `warn` with the reason,
//! the certificate subject and its thumbprint. One case never reaches the verifier: a client
//! that sends *no* certificate is refused by rustls before any callback runs; the connection
//! code reports it by passing the handshake error to [`TlsRejections::note_handshake_error`].
//!
//! # Outbound (client side): which downstream server certificates are accepted
//!
//! > a server certificate is accepted when (its thumbprint is pinned **and** it is inside its
//! > validity period) **or** (a CA bundle is configured **and** webpki verifies the chain *and
//! > the server name* against it).
//!
//! On the pin path the server name is not checked: the pin identifies the server exactly, which
//! is what a pin is for (self-signed downstream certificates rarely name the host the relay
//! dials). Configuring neither a CA nor a pin is a setup error, never "accept anything".

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error as TlsError,
    InconsistentKeys, PeerIncompatible, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The protocol versions the relay speaks, in preference order.
static VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------------------------
// Thumbprint
// ---------------------------------------------------------------------------------------------

/// SHA-256 of a certificate's DER encoding, the "fingerprint" `openssl x509 -fingerprint
/// -sha256` prints.
///
/// Parses from 64 hex digits in either case, optionally separated by `:` or spaces
/// (`AB:CD:…`, `ab cd …`, `abcd…`); displays as uppercase colon-separated pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thumbprint(pub [u8; 32]);

impl Thumbprint {
    /// The thumbprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }
}

/// Why a string is not a [`Thumbprint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThumbprintParseError {
    /// A character other than a hex digit, `:` or space.
    #[error(
        "invalid character {ch:?} at position {position} of a SHA-256 thumbprint \
         (expected 64 hex digits, optionally separated by ':' or spaces)"
    )]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its zero-based character position in the input (after trimming surrounding
        /// whitespace).
        position: usize,
    },
    /// Not exactly 64 hex digits.
    #[error("a SHA-256 thumbprint has 64 hex digits, this one has {digits}")]
    WrongLength {
        /// How many hex digits the input held.
        digits: usize,
    },
}

impl FromStr for Thumbprint {
    type Err = ThumbprintParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        let mut digits = 0usize;
        for (position, ch) in s.trim().chars().enumerate() {
            if ch == ':' || ch == ' ' {
                continue;
            }
            let Some(nibble) = ch.to_digit(16) else {
                return Err(ThumbprintParseError::InvalidChar { ch, position });
            };
            if let Some(byte) = out.get_mut(digits / 2) {
                // `to_digit(16)` is below 16, so the narrowing is lossless.
                let nibble = u8::try_from(nibble).unwrap_or(0);
                *byte = if digits.is_multiple_of(2) {
                    nibble << 4
                } else {
                    *byte | nibble
                };
            }
            digits += 1;
        }
        if digits != 64 {
            return Err(ThumbprintParseError::WrongLength { digits });
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Rejection counters
// ---------------------------------------------------------------------------------------------

/// Why a TLS client was refused during the handshake: its certificate (or its absence), or
/// a protocol version older than TLS 1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The client offered only TLS 1.0 or 1.1 (or older), or sent a hello without the
    /// `signature_algorithms` extension TLS 1.2 introduced: it gets a `protocol_version` or
    /// `handshake_failure` alert. Old interface engines and JREs still do this; the log line
    /// says so in plain words.
    OldProtocolVersion,
    /// Client authentication is required and the client sent no certificate.
    NoCertificate,
    /// The certificate (or, on the CA path, one in its chain) is past its `notAfter`.
    Expired,
    /// The certificate (or one in its chain) is before its `notBefore`.
    NotYetValid,
    /// Not on the allowlist and does not chain to the configured CA (or webpki refused the chain
    /// for another reason, e.g. a missing `clientAuth` usage; the log names the exact error).
    UnknownCa,
    /// Not on the allowlist, and no CA is configured.
    NotAllowlisted,
    /// The certificate cannot be parsed.
    BadCertificate,
    /// A signature did not verify: the client's handshake signature (proof of key possession)
    /// or a certificate signature in its chain.
    BadSignature,
}

impl RejectReason {
    /// Every reason, in declaration order (for exporting all counters, zeros included).
    pub const ALL: [Self; 8] = [
        Self::OldProtocolVersion,
        Self::NoCertificate,
        Self::Expired,
        Self::NotYetValid,
        Self::UnknownCa,
        Self::NotAllowlisted,
        Self::BadCertificate,
        Self::BadSignature,
    ];

    /// A snake_case name, for Prometheus labels and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::OldProtocolVersion => "old_protocol_version",
            Self::NoCertificate => "no_certificate",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::UnknownCa => "unknown_ca",
            Self::NotAllowlisted => "not_allowlisted",
            Self::BadCertificate => "bad_certificate",
            Self::BadSignature => "bad_signature",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Counts of refused client certificates, per [`RejectReason`]. Shared by all listeners and
/// threads; counting is a relaxed atomic increment.
#[derive(Debug, Default)]
pub struct TlsRejections {
    counts: [AtomicU64; RejectReason::ALL.len()],
}

impl TlsRejections {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one rejection.
    pub fn record(&self, reason: RejectReason) {
        if let Some(counter) = self.counts.get(reason.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The number of rejections for `reason` so far.
    pub fn get(&self, reason: RejectReason) -> u64 {
        self.counts
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Feed a server-side handshake error here. rustls refuses a client that offers only
    /// TLS 1.0/1.1, and one that sends no certificate (when one is required), before the
    /// verifier is called, so those two cases are counted and logged here; every other
    /// certificate rejection has already been counted by the verifier, and for those (and for
    /// other errors) this does nothing and returns `None`.
    pub fn note_handshake_error(&self, err: &TlsError) -> Option<RejectReason> {
        let (reason, why) = match err {
            TlsError::NoCertificatesPresented => (
                RejectReason::NoCertificate,
                "no client certificate presented",
            ),
            TlsError::PeerIncompatible(
                PeerIncompatible::Tls12NotOffered | PeerIncompatible::Tls12NotOfferedOrEnabled,
            ) => (
                RejectReason::OldProtocolVersion,
                "the client offered only TLS 1.1 or older; this relay accepts TLS 1.2 and 1.3 \
                 (enable TLS 1.2 in the sender, or upgrade its Java/OpenSSL runtime)",
            ),
            // Checked by rustls before the version: a TLS 1.0/1.1 client never sends this
            // extension (it came with TLS 1.2), so this is how most of them are refused.
            TlsError::PeerIncompatible(PeerIncompatible::SignatureAlgorithmsExtensionRequired) => (
                RejectReason::OldProtocolVersion,
                "the client's hello has no signature_algorithms extension, which TLS 1.2 and 1.3 \
                 require: a TLS 1.0/1.1 client (enable TLS 1.2 in the sender, or upgrade its \
                 Java/OpenSSL runtime)",
            ),
            _ => return None,
        };
        self.record(reason);
        tracing::warn!(reason = reason.label(), "rejected TLS client: {why}");
        Some(reason)
    }
}

// ---------------------------------------------------------------------------------------------
// Setup errors
// ---------------------------------------------------------------------------------------------

/// A TLS configuration that cannot be built. The messages name the file and the cause, so they
/// can be shown to the operator as they are.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file could not be opened or read.
    #[error("cannot read {what} file {}: {cause}", .path.display())]
    Read {
        /// What the file was meant to hold ("certificate", "private key", "client CA", …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is not valid PEM.
    #[error("{} is not a valid PEM {what} file: {cause}", .path.display())]
    Pem {
        /// What the file was meant to hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM decoding error.
        cause: pem::Error,
    },
    /// The certificate chain file holds no `CERTIFICATE` section.
    #[error("{} holds no PEM certificate", .path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PKCS#8, PKCS#1 or SEC1 private key.
    #[error("{} holds no private key", .path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a type or curve the provider cannot sign with.
    #[error("the private key in {} cannot be used: {cause}", .path.display())]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// The provider's reason.
        cause: TlsError,
    },
    /// The first certificate of the chain cannot be parsed.
    #[error("the first certificate in {} cannot be parsed: {cause}", .path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// The parser's reason.
        cause: TlsError,
    },
    /// The private key does not belong to the (first) certificate of the chain.
    #[error(
        "the private key in {} does not match the certificate in {}",
        .key.display(),
        .cert.display()
    )]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// A CA bundle holds no certificate.
    #[error("{what} file {} holds no certificate", .path.display())]
    NoCaCertificate {
        /// "client CA" or "CA".
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A certificate in a CA bundle cannot be used as a trust anchor.
    #[error(
        "{what} file {} holds a certificate that cannot be a trust anchor: {cause}",
        .path.display()
    )]
    BadCaCertificate {
        /// "client CA" or "CA".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// webpki's reason.
        cause: TlsError,
    },
    /// webpki refused to build a verifier from the CA bundle.
    #[error("cannot build a certificate verifier from {what} file {}: {cause}", .path.display())]
    Verifier {
        /// "client CA" or "CA".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The builder's reason.
        cause: rustls::server::VerifierBuilderError,
    },
    /// Outbound TLS without anything to trust.
    #[error("forward TLS needs a CA bundle or a pinned server thumbprint")]
    ForwardNeedsTrust,
    /// The crypto provider does not support the requested protocol versions (a build problem,
    /// not a configuration one).
    #[error("the TLS provider cannot be set up: {0}")]
    Provider(TlsError),
    /// Not a DNS name or IP address.
    #[error("{name:?} is not a valid TLS server name (DNS name or IP address)")]
    ServerName {
        /// The rejected name.
        name: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Loading PEM files
// ---------------------------------------------------------------------------------------------

fn pem_error(what: &'static str, path: &Path, err: pem::Error) -> TlsSetupError {
    match err {
        pem::Error::Io(cause) => TlsSetupError::Read {
            what,
            path: path.to_owned(),
            cause,
        },
        cause => TlsSetupError::Pem {
            what,
            path: path.to_owned(),
            cause,
        },
    }
}

/// Every `CERTIFICATE` section of a PEM file (other sections are skipped).
fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    match PrivateKeyDer::from_pem_file(path) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(TlsSetupError::NoPrivateKey {
            path: path.to_owned(),
        }),
        Err(e) => Err(pem_error("private key", path, e)),
    }
}

/// Load a chain and its key, and check that the key belongs to the chain's first certificate.
fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsSetupError> {
    let chain = read_certs("certificate", cert_path)?;
    if chain.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = read_key(key_path)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|cause| TlsSetupError::UnusableKey {
            path: key_path.to_owned(),
            cause,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsSetupError::KeyMismatch {
                key: key_path.to_owned(),
                cert: cert_path.to_owned(),
            })
        }
        // The key cannot report its public half (never the case for ring's keys): prove
        // possession instead.
        Err(TlsError::InconsistentKeys(InconsistentKeys::Unknown)) => {
            if signs_for_certificate(&certified, provider) {
                Ok(certified)
            } else {
                Err(TlsSetupError::KeyMismatch {
                    key: key_path.to_owned(),
                    cert: cert_path.to_owned(),
                })
            }
        }
        Err(cause) => Err(TlsSetupError::BadCertificate {
            path: cert_path.to_owned(),
            cause,
        }),
    }
}

/// Sign a test message with the key and verify it with the certificate's public key, using
/// the provider's verification algorithms for the scheme the key picked.
fn signs_for_certificate(certified: &CertifiedKey, provider: &CryptoProvider) -> bool {
    let Some(cert) = certified.cert.first() else {
        return false;
    };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return false;
    };
    let public_key = parsed.public_key().subject_public_key.data.as_ref();
    let algorithms = &provider.signature_verification_algorithms;
    let Some(signer) = certified.key.choose_scheme(&algorithms.supported_schemes()) else {
        return false;
    };
    let message = b"mllp-relay key/certificate consistency check";
    let Ok(signature) = signer.sign(message) else {
        return false;
    };
    algorithms
        .mapping
        .iter()
        .filter(|(scheme, _)| *scheme == signer.scheme())
        .flat_map(|(_, algs)| algs.iter())
        .any(|alg| {
            alg.verify_signature(public_key, message, &signature)
                .is_ok()
        })
}

fn load_roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let certs = read_certs(what, path)?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCaCertificate {
            what,
            path: path.to_owned(),
        });
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|cause| TlsSetupError::BadCaCertificate {
                what,
                path: path.to_owned(),
                cause,
            })?;
    }
    Ok(roots)
}

// ---------------------------------------------------------------------------------------------
// Certificate facts
// ---------------------------------------------------------------------------------------------

/// Who a client certificate names: its SHA-256 thumbprint, and its subject as the relay
/// writes it in logs (`CN=lab.example, O=Hospital`, RFC 4514 order as x509-parser renders it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// SHA-256 of the DER certificate.
    pub thumbprint: Thumbprint,
    /// The subject distinguished name; `None` when the certificate cannot be parsed (a
    /// verified peer's always can).
    pub subject: Option<String>,
}

impl CertIdentity {
    /// The identity of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Self {
        Self {
            thumbprint: Thumbprint::of(der),
            subject: cert_facts(der).map(|facts| facts.subject),
        }
    }
}

/// What an operator needs to know of a certificate the relay presents: who it names, which
/// one it is, and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject, as the relay renders it (`CN=relay.example`).
    pub subject: String,
    /// SHA-256 of the DER certificate.
    pub thumbprint: Thumbprint,
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// The facts of a DER certificate; `None` when it cannot be parsed.
    pub fn of(der: &[u8]) -> Option<Self> {
        let facts = cert_facts(der)?;
        Some(Self {
            subject: facts.subject,
            thumbprint: Thumbprint::of(der),
            not_after: facts.not_after,
        })
    }

    /// The facts of the first certificate (the leaf) of a PEM file.
    ///
    /// # Errors
    /// When the file cannot be read, holds no certificate, or its first cannot be parsed.
    pub fn of_pem_file(path: &Path) -> Result<Self, TlsSetupError> {
        let chain = read_certs("certificate", path)?;
        let leaf = chain.first().ok_or_else(|| TlsSetupError::NoCertificate {
            path: path.to_owned(),
        })?;
        Self::of(leaf).ok_or_else(|| TlsSetupError::NoCertificate {
            path: path.to_owned(),
        })
    }

    /// Whole days from `now` (Unix seconds) until it expires; negative once it has.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// Its expiry as an RFC 3339 date and time (UTC), for logs and summaries.
    pub fn not_after_text(&self) -> String {
        x509_parser::time::ASN1Time::from_timestamp(self.not_after)
            .map_or_else(|_| self.not_after.to_string(), |t| t.to_string())
    }
}

/// What the verifiers need from a certificate: its subject (for logs) and validity window.
struct CertFacts {
    subject: String,
    not_before: i64,
    not_after: i64,
}

fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let validity = cert.validity();
    Some(CertFacts {
        subject: cert.subject().to_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// The validity verdict at `now` (both bounds inclusive, as RFC 5280 has it).
fn check_validity(facts: &CertFacts, now: UnixTime) -> Result<(), CertificateError> {
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now > facts.not_after {
        Err(CertificateError::Expired)
    } else if now < facts.not_before {
        Err(CertificateError::NotValidYet)
    } else {
        Ok(())
    }
}

/// The counter for an error the CA path (webpki) returned. Validity was checked before, so a
/// date error here concerns an intermediate; anything not about dates, encoding or signatures
/// (unknown issuer, wrong key usage, unsupported critical extension, …) means "does not chain
/// to the CA" and counts as [`RejectReason::UnknownCa`]; the log carries the exact error.
fn reason_for_ca_error(err: &TlsError) -> RejectReason {
    let TlsError::InvalidCertificate(e) = err else {
        return RejectReason::UnknownCa;
    };
    match e {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            RejectReason::Expired
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            RejectReason::NotYetValid
        }
        CertificateError::BadEncoding => RejectReason::BadCertificate,
        CertificateError::BadSignature
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            RejectReason::BadSignature
        }
        _ => RejectReason::UnknownCa,
    }
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/// Inbound TLS settings of one listener.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerTlsSettings {
    /// PEM file: the server certificate first, then any intermediates.
    pub cert_chain: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM bundle of CAs whose client certificates are accepted.
    pub client_ca: Option<PathBuf>,
    /// Client certificates accepted by exact SHA-256 thumbprint.
    pub client_thumbprints: Vec<Thumbprint>,
}

/// A listener's TLS configuration that can be reloaded from its files while the relay runs
/// (SIGHUP): new handshakes use the new certificates, keys, CA and allowlist; connections
/// already open keep the configuration they started with, so nothing is dropped. A reload
/// that fails (a half-written file, a key that does not match) keeps the old configuration.
#[derive(Debug, Clone)]
pub struct ReloadableServerConfig {
    settings: ServerTlsSettings,
    rejections: Arc<TlsRejections>,
    current: Arc<RwLock<Arc<ServerConfig>>>,
    /// The current certificate's facts (`None` when its leaf cannot be parsed).
    certificate: Arc<RwLock<Option<CertInfo>>>,
}

impl ReloadableServerConfig {
    /// Loads the files named by `settings` (see [`server_config`]).
    ///
    /// # Errors
    /// As [`server_config`].
    pub fn load(
        settings: ServerTlsSettings,
        rejections: Arc<TlsRejections>,
    ) -> Result<Self, TlsSetupError> {
        let config = server_config(&settings, Arc::clone(&rejections))?;
        let certificate = CertInfo::of_pem_file(&settings.cert_chain).ok();
        Ok(Self {
            settings,
            rejections,
            current: Arc::new(RwLock::new(config)),
            certificate: Arc::new(RwLock::new(certificate)),
        })
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the files again and, if they load, makes them current.
    ///
    /// # Errors
    /// As [`server_config`]; the previous configuration then stays in force.
    pub fn reload(&self) -> Result<(), TlsSetupError> {
        let fresh = server_config(&self.settings, Arc::clone(&self.rejections))?;
        let certificate = CertInfo::of_pem_file(&self.settings.cert_chain).ok();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        *self
            .certificate
            .write()
            .unwrap_or_else(PoisonError::into_inner) = certificate;
        Ok(())
    }

    /// The facts of the certificate in force (the one the last load or reload read).
    pub fn certificate(&self) -> Option<CertInfo> {
        self.certificate
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The files this configuration comes from.
    pub fn settings(&self) -> &ServerTlsSettings {
        &self.settings
    }
}

/// Build the listener's rustls configuration: TLS 1.3 and 1.2 on the ring provider, no ALPN,
/// and (when a client CA or thumbprints are configured) mandatory client certificates checked
/// by the rule in the [module documentation](self). Rejections are counted in `rejections`.
pub fn server_config(
    settings: &ServerTlsSettings,
    rejections: Arc<TlsRejections>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = provider();
    let certified = load_certified_key(&settings.cert_chain, &settings.key, &provider)?;

    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(VERSIONS)
        .map_err(TlsSetupError::Provider)?;

    let builder = if settings.client_ca.is_none() && settings.client_thumbprints.is_empty() {
        builder.with_no_client_auth()
    } else {
        let ca = match &settings.client_ca {
            Some(path) => {
                let what = "client CA";
                let roots = load_roots(what, path)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|cause| TlsSetupError::Verifier {
                    what,
                    path: path.clone(),
                    cause,
                })?;
                Some(verifier)
            }
            None => None,
        };
        builder.with_client_cert_verifier(Arc::new(ClientVerifier {
            allowlist: settings.client_thumbprints.clone(),
            ca,
            provider,
            rejections,
        }))
    };

    Ok(Arc::new(builder.with_cert_resolver(Arc::new(
        SingleCertAndKey::from(certified),
    ))))
}

/// Client certificate verifier implementing "valid AND (allowlisted OR chains to the CA)".
#[derive(Debug)]
struct ClientVerifier {
    allowlist: Vec<Thumbprint>,
    ca: Option<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
    rejections: Arc<TlsRejections>,
}

impl ClientVerifier {
    fn reject(
        &self,
        reason: RejectReason,
        subject: &str,
        thumbprint: &Thumbprint,
        err: TlsError,
    ) -> TlsError {
        self.rejections.record(reason);
        tracing::warn!(
            reason = reason.label(),
            subject,
            thumbprint = %thumbprint,
            error = %err,
            "rejected TLS client certificate"
        );
        err
    }

    /// Count and log a failed handshake signature.
    fn signature_result(
        &self,
        result: Result<HandshakeSignatureValid, TlsError>,
        cert: &CertificateDer<'_>,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        result.map_err(|err| {
            let subject = cert_facts(cert).map_or_else(|| "<unparsable>".to_owned(), |f| f.subject);
            self.reject(
                RejectReason::BadSignature,
                &subject,
                &Thumbprint::of(cert),
                err,
            )
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.ca.as_ref().map_or(&[], |ca| ca.root_hint_subjects())
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let thumbprint = Thumbprint::of(end_entity);
        let Some(facts) = cert_facts(end_entity) else {
            return Err(self.reject(
                RejectReason::BadCertificate,
                "<unparsable>",
                &thumbprint,
                CertificateError::BadEncoding.into(),
            ));
        };
        if let Err(err) = check_validity(&facts, now) {
            let reason = match err {
                CertificateError::Expired => RejectReason::Expired,
                _ => RejectReason::NotYetValid,
            };
            return Err(self.reject(reason, &facts.subject, &thumbprint, err.into()));
        }
        if self.allowlist.contains(&thumbprint) {
            tracing::debug!(
                subject = %facts.subject,
                thumbprint = %thumbprint,
                "client certificate accepted by thumbprint"
            );
            return Ok(ClientCertVerified::assertion());
        }
        match &self.ca {
            Some(ca) => match ca.verify_client_cert(end_entity, intermediates, now) {
                Ok(verified) => {
                    tracing::debug!(
                        subject = %facts.subject,
                        thumbprint = %thumbprint,
                        "client certificate accepted by CA"
                    );
                    Ok(verified)
                }
                Err(err) => {
                    Err(self.reject(reason_for_ca_error(&err), &facts.subject, &thumbprint, err))
                }
            },
            None => Err(self.reject(
                RejectReason::NotAllowlisted,
                &facts.subject,
                &thumbprint,
                CertificateError::ApplicationVerificationFailure.into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.signature_result(
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            ),
            cert,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.signature_result(
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            ),
            cert,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// Outbound TLS settings of one downstream link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTlsSettings {
    /// PEM bundle of CAs trusted to issue the downstream's certificate (name checked).
    pub ca: Option<PathBuf>,
    /// Downstream certificates trusted by exact SHA-256 thumbprint (name not checked).
    pub pinned: Vec<Thumbprint>,
    /// `(certificate chain, private key)` PEM files presented for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Build a downstream link's rustls configuration: TLS 1.3 and 1.2 on the ring provider, the
/// server certificate checked by the rule in the [module documentation](self), and optionally
/// a client certificate. Neither a CA nor a pin → [`TlsSetupError::ForwardNeedsTrust`].
pub fn client_config(settings: &ClientTlsSettings) -> Result<Arc<ClientConfig>, TlsSetupError> {
    if settings.ca.is_none() && settings.pinned.is_empty() {
        return Err(TlsSetupError::ForwardNeedsTrust);
    }
    let provider = provider();
    let ca = match &settings.ca {
        Some(path) => {
            let what = "CA";
            let roots = load_roots(what, path)?;
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|cause| TlsSetupError::Verifier {
                        what,
                        path: path.clone(),
                        cause,
                    })?;
            Some(verifier)
        }
        None => None,
    };
    let verifier = ServerVerifier {
        pinned: settings.pinned.clone(),
        ca,
        accept_any: false,
        provider: Arc::clone(&provider),
    };
    build_client_config(verifier, settings.client_cert.as_ref())
}

/// A client configuration that accepts **any** server certificate (still checking that the
/// server holds its key): for load tests against self-signed test servers only. Optionally
/// with a client certificate for mutual TLS.
///
/// # Errors
/// When the client certificate or key cannot be loaded.
pub fn insecure_client_config(
    client_cert: Option<&(PathBuf, PathBuf)>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let verifier = ServerVerifier {
        pinned: Vec::new(),
        ca: None,
        accept_any: true,
        provider: provider(),
    };
    build_client_config(verifier, client_cert)
}

fn build_client_config(
    verifier: ServerVerifier,
    client_cert: Option<&(PathBuf, PathBuf)>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = Arc::clone(&verifier.provider);
    let certified = match client_cert {
        Some((cert, key)) => Some(load_certified_key(cert, key, &provider)?),
        None => None,
    };
    let verifier = Arc::new(verifier);
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(TlsSetupError::Provider)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match certified {
        Some(certified) => {
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Server certificate verifier implementing "(pinned AND valid) OR (CA AND webpki incl. name)",
/// or accepting any certificate when `accept_any` (load tests only).
#[derive(Debug)]
struct ServerVerifier {
    pinned: Vec<Thumbprint>,
    ca: Option<Arc<WebPkiServerVerifier>>,
    accept_any: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let thumbprint = Thumbprint::of(end_entity);
        let facts = cert_facts(end_entity);
        let subject = facts
            .as_ref()
            .map_or("<unparsable>", |f| f.subject.as_str());
        let result = if self.pinned.contains(&thumbprint) {
            match &facts {
                None => Err(CertificateError::BadEncoding.into()),
                Some(facts) => check_validity(facts, now)
                    .map(|()| ServerCertVerified::assertion())
                    .map_err(TlsError::from),
            }
        } else if let Some(ca) = &self.ca {
            ca.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        } else if self.accept_any {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(CertificateError::ApplicationVerificationFailure.into())
        };
        if let Err(err) = &result {
            tracing::warn!(
                server = %server_name.to_str(),
                subject,
                thumbprint = %thumbprint,
                error = %err,
                "rejected downstream TLS server certificate"
            );
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Parse a downstream host for SNI and certificate name checks: a DNS name, an IPv4 address
/// or an IPv6 address (with or without `[]`).
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsSetupError> {
    let trimmed = name.trim();
    let bare = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(trimmed);
    ServerName::try_from(bare)
        .map(|n| n.to_owned())
        .map_err(|_| TlsSetupError::ServerName {
            name: name.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789ABCDEF00112233445566778899aabbccddeeff";

    #[test]
    fn thumbprint_parses_plain_hex_in_any_case() {
        let t: Thumbprint = HEX.parse().unwrap();
        assert_eq!(t.0[0], 0x01);
        assert_eq!(t.0[7], 0xef);
        assert_eq!(t.0[15], 0xef);
        assert_eq!(t.0[31], 0xff);
        assert_eq!(HEX.to_lowercase().parse::<Thumbprint>().unwrap(), t);
        assert_eq!(HEX.to_uppercase().parse::<Thumbprint>().unwrap(), t);
    }

    #[test]
    fn thumbprint_display_round_trips_and_accepts_separators() {
        let t: Thumbprint = HEX.parse().unwrap();
        let shown = t.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1);
        assert!(shown.starts_with("01:23:45:67:89:AB:CD:EF:01:23"));
        assert!(shown.ends_with(":EE:FF"));
        assert_eq!(shown.parse::<Thumbprint>().unwrap(), t);
        assert_eq!(shown.to_lowercase().parse::<Thumbprint>().unwrap(), t);
        assert_eq!(shown.replace(':', " ").parse::<Thumbprint>().unwrap(), t);
        assert_eq!(format!("  {shown}\n").parse::<Thumbprint>().unwrap(), t);
    }

    #[test]
    fn thumbprint_rejects_wrong_length() {
        for (input, digits) in [
            ("", 0),
            ("ab:cd", 4),
            (&HEX[..62], 62),
            (&*format!("{HEX}00"), 66),
        ] {
            let err = input.parse::<Thumbprint>().unwrap_err();
            assert_eq!(
                err,
                ThumbprintParseError::WrongLength { digits },
                "{input:?}"
            );
            assert!(err.to_string().contains(&digits.to_string()));
        }
    }

    #[test]
    fn thumbprint_rejects_non_hex_with_position() {
        let mut bad = HEX.to_owned();
        bad.replace_range(5..6, "g");
        let err = bad.parse::<Thumbprint>().unwrap_err();
        assert_eq!(
            err,
            ThumbprintParseError::InvalidChar {
                ch: 'g',
                position: 5
            }
        );
        assert!(err.to_string().contains("'g'"));
        assert!(err.to_string().contains("position 5"));

        let err = "AB-CD".parse::<Thumbprint>().unwrap_err();
        assert_eq!(
            err,
            ThumbprintParseError::InvalidChar {
                ch: '-',
                position: 2
            }
        );
    }

    #[test]
    fn thumbprint_of_is_sha256() {
        // SHA-256 of the empty string.
        let expected: Thumbprint =
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse()
                .unwrap();
        assert_eq!(Thumbprint::of(b""), expected);
    }

    #[test]
    fn reject_reason_labels_are_distinct_and_indexed() {
        let rejections = TlsRejections::new();
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
            for _ in 0..=i {
                rejections.record(*reason);
            }
        }
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(rejections.get(*reason), i as u64 + 1);
        }
        let mut labels: Vec<_> = RejectReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), RejectReason::ALL.len());
    }

    #[test]
    fn sign_and_verify_fallback_tells_matching_keys_apart() {
        let provider = provider();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let other = rcgen::KeyPair::generate_for(alg).unwrap();
            let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            let cert = params.self_signed(&key).unwrap().der().clone();
            let load = |k: &rcgen::KeyPair| {
                let der = PrivateKeyDer::try_from(k.serialize_der()).unwrap();
                provider.key_provider.load_private_key(der).unwrap()
            };
            let right = CertifiedKey::new(vec![cert.clone()], load(&key));
            let wrong = CertifiedKey::new(vec![cert], load(&other));
            assert!(signs_for_certificate(&right, &provider), "{alg:?}");
            assert!(!signs_for_certificate(&wrong, &provider), "{alg:?}");
            assert!(right.keys_match().is_ok());
        }
    }
}
