//! From a file (or the command line's flags) to a [`Config`] the workers run with: read, check
//! (see [`check`](super::check)), then build, loading certificates and keys into rustls
//! configurations; a file that is not what its key says (not PEM, a key that does not match the
//! certificate, ...) is reported under that key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use netio::connect::ClientTls;
use netio::tls::{self, TlsRejections, TlsSetupError};

use super::check::{
    ConfigFileError, Files, Overrides, Problem, Settings, downstream_prefix, listener_prefix,
};
use super::raw::RawConfig;
use crate::config::Config;

/// The key a server-side TLS setup error belongs to, inside its listener (`tls.key`).
fn listener_tls_key(error: &TlsSetupError) -> &'static str {
    match error {
        TlsSetupError::Read { what, .. } | TlsSetupError::Pem { what, .. } => match *what {
            "private key" => "tls.key",
            "client CA" => "tls.client_ca",
            _ => "tls.cert",
        },
        TlsSetupError::NoCertificate { .. } | TlsSetupError::BadCertificate { .. } => "tls.cert",
        TlsSetupError::NoPrivateKey { .. }
        | TlsSetupError::UnusableKey { .. }
        | TlsSetupError::KeyMismatch { .. } => "tls.key",
        TlsSetupError::NoCaCertificate { .. }
        | TlsSetupError::BadCaCertificate { .. }
        | TlsSetupError::Verifier { .. } => "tls.client_ca",
        _ => "tls",
    }
}

/// The key a client-side TLS setup error belongs to, inside its downstream (`tls.ca`).
fn downstream_tls_key(error: &TlsSetupError) -> &'static str {
    match error {
        TlsSetupError::Read { what, .. } | TlsSetupError::Pem { what, .. } => match *what {
            "private key" => "tls.client_key",
            "certificate" => "tls.client_cert",
            _ => "tls.ca",
        },
        TlsSetupError::NoCertificate { .. } | TlsSetupError::BadCertificate { .. } => {
            "tls.client_cert"
        }
        TlsSetupError::NoPrivateKey { .. }
        | TlsSetupError::UnusableKey { .. }
        | TlsSetupError::KeyMismatch { .. } => "tls.client_key",
        TlsSetupError::NoCaCertificate { .. }
        | TlsSetupError::BadCaCertificate { .. }
        | TlsSetupError::Verifier { .. } => "tls.ca",
        TlsSetupError::ServerName { .. } => "tls.sni",
        _ => "tls",
    }
}

impl TryFrom<&Settings> for Config {
    type Error = Vec<Problem>;

    /// Loads the certificates and keys (both sides, so every TLS problem is reported at once).
    fn try_from(settings: &Settings) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();

        let count = settings.listeners.len();
        let mut listeners = Vec::with_capacity(count);
        for (i, l) in settings.listeners.iter().enumerate() {
            let mut listener = l.config.clone();
            // Each listener counts its own refused client certificates.
            let rejections = Arc::new(TlsRejections::new());
            if let Some(tls) = &l.tls {
                match tls::ReloadableServerConfig::load(tls.clone(), Arc::clone(&rejections)) {
                    Ok(server) => listener.tls = Some(server),
                    Err(e) => problems.push(Problem::new(
                        format!("{}.{}", listener_prefix(i, count), listener_tls_key(&e)),
                        e,
                    )),
                }
            }
            listener.tls_rejections = rejections;
            listeners.push(listener);
        }

        let count = settings.downstreams.len();
        let mut downstreams = Vec::with_capacity(count);
        for (i, d) in settings.downstreams.iter().enumerate() {
            let mut downstream = d.config.clone();
            if let Some(tls) = &d.tls {
                match tls::client_config(&tls.client) {
                    Ok(config) => {
                        downstream.tls = Some(ClientTls {
                            config,
                            server_name: tls.server_name.clone(),
                        });
                        downstream.client_certificate = tls
                            .client
                            .client_cert
                            .as_ref()
                            .and_then(|(cert, _)| tls::CertInfo::of_pem_file(cert).ok());
                    }
                    Err(e) => problems.push(Problem::new(
                        format!("{}.{}", downstream_prefix(i, count), downstream_tls_key(&e)),
                        e,
                    )),
                }
            }
            downstreams.push(downstream);
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            listeners,
            downstreams,
            routes: settings.routes.clone(),
            default_downstream: settings.default_downstream,
            workers: settings.workers,
            pin_workers: settings.pin_workers,
            driver: settings.driver,
            metrics_addr: settings.metrics_addr,
            readiness_window: settings.readiness_window,
            audit: settings.audit.clone(),
            shutdown_grace: settings.shutdown_grace,
            journal: settings.journal.clone(),
        })
    }
}

/// A loaded config file: the validated settings (for the summary) and the built [`Config`].
#[derive(Debug)]
pub struct Loaded {
    /// What was validated; its `Display` is the summary.
    pub settings: Settings,
    /// What the workers run with.
    pub config: Config,
}

/// Reads and parses a file; returns it with its absolute path.
pub fn read_raw(path: &Path) -> Result<(RawConfig, PathBuf), ConfigFileError> {
    let read_error = |cause| ConfigFileError::Read {
        path: path.to_owned(),
        cause,
    };
    let source = std::path::absolute(path).map_err(read_error)?;
    let text = std::fs::read_to_string(&source).map_err(read_error)?;
    let raw = RawConfig::from_toml(&text).map_err(|cause| ConfigFileError::Parse {
        path: path.to_owned(),
        cause: Box::new(cause),
    })?;
    Ok((raw, source))
}

fn settings(path: &Path, overrides: &Overrides, files: Files) -> Result<Settings, ConfigFileError> {
    let (raw, source) = read_raw(path)?;
    let base_dir = source.parent().unwrap_or(Path::new("/"));
    raw.validate(&source, base_dir, overrides, files)
        .map_err(|problems| ConfigFileError::Invalid {
            path: path.to_owned(),
            problems,
        })
}

/// Reads, validates and builds a config file (no overrides).
pub fn load_config(path: &Path) -> Result<Loaded, ConfigFileError> {
    load_config_with(path, &Overrides::default())
}

/// Reads, validates and builds a config file, with command-line values replacing the file's.
pub fn load_config_with(path: &Path, overrides: &Overrides) -> Result<Loaded, ConfigFileError> {
    let (raw, source) = read_raw(path)?;
    let base_dir = source.parent().unwrap_or(Path::new("/"));
    load_raw(&raw, &source, base_dir, overrides).map_err(|problems| ConfigFileError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// Checks and builds a configuration in its raw form, a file's or the command line's: the
/// one path every configuration takes. `source` says where it came from (recorded in the
/// settings); relative paths start at `base_dir`.
///
/// # Errors
/// Every problem found, each named by its key (or, for an override, its flag).
pub fn load_raw(
    raw: &RawConfig,
    source: &Path,
    base_dir: &Path,
    overrides: &Overrides,
) -> Result<Loaded, Vec<Problem>> {
    let settings = raw.validate(source, base_dir, overrides, Files::Check)?;
    let config = Config::try_from(&settings)?;
    Ok(Loaded { settings, config })
}

/// Reads and validates a config file without opening its certificate and key files (their
/// paths are still resolved). The result describes the configuration but cannot run it.
pub fn load_config_unchecked(path: &Path) -> Result<Settings, ConfigFileError> {
    settings(path, &Overrides::default(), Files::Skip)
}
