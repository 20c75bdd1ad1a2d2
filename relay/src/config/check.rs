//! Every value of a raw configuration checked, and *every* problem collected, each named by its
//! key path (`listener.tls.key`, `downstream.ack_timeout`, `listener.tolerate[1]`,
//! `route[0].downstream`, and `listener[1].tls.key` with several listeners) or, for a value
//! from the command line, by its flag. Relative file paths are resolved against the config
//! file's directory, downstream addresses are resolved, route targets are matched to
//! downstream names, and (unless asked not to, see [`Files`]) certificate and key files are
//! checked to be readable. The result is [`Settings`]: a [`Config`](crate::config::Config) whose certificates are not
//! loaded yet.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mllp::ConfigError;
use mllp::ack::AckPolicy;
use mllp::charset::Charset;
use mllp::frame::{DEFAULT_MAX_FRAME_LEN, EventCode, FramingConfig, Tolerances};
use netio::runtime::Driver;
use netio::tls::{self, ClientTlsSettings, ServerTlsSettings, Thumbprint};
use netio::units::{format_duration, format_size, parse_duration, parse_size};
use rustls_pki_types::ServerName;

use super::raw::{
    RawConfig, RawDownstream, RawDownstreamTls, RawDuration, RawJournal, RawListener, RawSender,
    RawSize,
};
use crate::config::{
    self, AckMode, AuditConfig, BatchMode, CharsetMode, DownstreamConfig, DuplicateWindowConfig,
    JournalConfig, LinkPolicy, ListenerConfig, MissingControlId, OnDownstreamFailure,
    WhenJournalFull,
};
use crate::identity::{ClientMatch, SenderRule};
use crate::route::{Pattern, Route, RouteMatch};

/// Largest `max_frame_size` a file may set: far above any real HL7 v2 message (big ones with
/// embedded PDFs are tens of MiB), low enough that a typo cannot let one sender claim gigabytes.
pub const MAX_FRAME_SIZE_LIMIT: usize = 1 << 30;

/// Most worker threads a file may ask for: more than any machine's cores, so a larger number
/// is a typo, not a plan.
pub const MAX_WORKERS: usize = 1024;

/// Most retries a file may ask for: each retry delays the sender's answer by up to an ACK
/// timeout plus a backoff, and senders give up after a few tens of seconds anyway.
pub const MAX_RETRIES: u32 = 100;

/// Most inbound connections per worker a file may allow: each costs buffers and a file
/// descriptor; a million per worker is beyond any hospital's sender count.
pub const MAX_CONNECTIONS_PER_WORKER_LIMIT: usize = 1_000_000;

/// Longest `journal.commit_interval` a file may set: every positive ACK waits up to this long
/// while messages keep arriving, and a sender stops and waits for each ACK (original mode), so
/// a longer wait only adds latency without saving more fsyncs.
pub const MAX_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Smallest `journal.segment_size` (and so `journal.max_size`): below it, files are created,
/// fsync'ed and reclaimed so often that the directory operations dominate.
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;

/// Smallest `journal.memory`: room for a useful number of ordinary messages; less would read
/// nearly every message back from disk.
pub const MIN_JOURNAL_MEMORY: u64 = 1 << 20;

/// Most `journal.forward_lanes`: each lane is a connection per worker to every `per-core`
/// downstream, and receivers rarely take hundreds from one peer.
pub const MAX_FORWARD_LANES: usize = 256;

/// One invalid value, named by its key path (`listener.tls.key`, `listener.tolerate[1]`) or,
/// for a value given on the command line, by its flag (`--forward`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Problem {
    /// Where the value is: a key path or a flag.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl Problem {
    pub(super) fn new(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

/// A config file that cannot be used. Every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config file {}: {cause}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Not TOML, a value of the wrong type, or an unknown key (toml's message names it, with
    /// line and column).
    #[error("{}: {cause}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's error.
        cause: Box<toml::de::Error>,
    },
    /// Values that are invalid: all of them, each named by its key.
    #[error("{}", list_problems(.path, .problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

impl ConfigFileError {
    /// The invalid values (empty for read and parse errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems, .. } => problems,
            Self::Read { .. } | Self::Parse { .. } => &[],
        }
    }
}

fn list_problems(path: &Path, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{}: {one}", path.display()),
        _ => {
            let mut out = format!("{}: {} errors:", path.display(), problems.len());
            for problem in problems {
                out.push_str("\n  ");
                out.push_str(&problem.to_string());
            }
            out
        }
    }
}

/// Whether validation checks that certificate and key files can be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// Check every file (what `check-config` and `--config` do).
    Check,
    /// Resolve paths but do not touch the files (the result cannot be built into a
    /// [`Config`](crate::config::Config) unless the files exist after all).
    Skip,
}

/// Values given on the command line that replace the file's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen`: replaces `listener.listen`; refused (as a problem at `--listen`) when the
    /// file defines several listeners.
    pub listen: Option<SocketAddr>,
    /// `--forward`: replaces `downstream.address` (and so the default `downstream.tls.sni`);
    /// refused (as a problem at `--forward`) when the file defines several downstreams.
    pub forward: Option<String>,
    /// `--workers`: replaces `workers`.
    pub workers: Option<usize>,
    /// `--metrics`: replaces `metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--driver`: replaces `driver`.
    pub driver: Option<Driver>,
    /// `--no-pin` (as `Some(false)`): replaces `pin_workers`.
    pub pin_workers: Option<bool>,
}

/// A validated configuration whose certificate files have not been loaded yet: everything a
/// [`Config`](crate::config::Config) holds, with TLS as settings (paths and thumbprints) instead of rustls
/// configurations. Its `Display` is the summary `check-config` prints.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file (absolute).
    pub source: PathBuf,
    /// The listeners, in file order (at least one).
    pub listeners: Vec<ListenerSettings>,
    /// The downstreams, in file order (routes refer to them by index).
    pub downstreams: Vec<DownstreamSettings>,
    /// The routing rules, in file order; the first match wins.
    pub routes: Vec<Route>,
    /// Where messages that match no rule go (an index into `downstreams`); `None`: they are
    /// refused with an AR.
    pub default_downstream: Option<usize>,
    /// Worker threads.
    pub workers: usize,
    /// Whether workers are pinned to CPUs.
    pub pin_workers: bool,
    /// The I/O driver.
    pub driver: Driver,
    /// Where metrics are served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// How recently downstreams must have been reached for `/readyz`.
    pub readiness_window: Duration,
    /// The audit trail.
    pub audit: AuditConfig,
    /// How long shutdown waits for in-flight messages.
    pub shutdown_grace: Duration,
    /// The journal (when a listener has `ack_mode = "durable"`, and only then).
    pub journal: Option<JournalConfig>,
}

/// A validated listener.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Its name (`listener.name`), for logs and metrics; also in `config.name`.
    pub name: String,
    /// Everything but TLS (`config.tls` is `None` here).
    pub config: ListenerConfig,
    /// TLS termination, if any.
    pub tls: Option<ServerTlsSettings>,
}

/// A validated downstream.
#[derive(Debug, Clone)]
pub struct DownstreamSettings {
    /// The address as written (`HOST:PORT`); `config.addr` is what it resolved to.
    pub address: String,
    /// Everything but TLS (`config.tls` is `None` here).
    pub config: DownstreamConfig,
    /// TLS towards it, if any.
    pub tls: Option<DownstreamTlsSettings>,
}

/// Validated TLS towards a downstream.
#[derive(Debug, Clone)]
pub struct DownstreamTlsSettings {
    /// CA, pins and client certificate.
    pub client: ClientTlsSettings,
    /// The name sent (SNI) and verified, as configured or derived from the address.
    pub sni: String,
    /// `sni`, parsed.
    pub server_name: ServerName<'static>,
}

/// Collects problems while validating.
struct Checker<'a> {
    base: &'a Path,
    files: Files,
    problems: Vec<Problem>,
}

/// How keys inside the `index`-th of `count` downstreams are named: `downstream` when there
/// is only one, `downstream[index]` otherwise.
pub(super) fn downstream_prefix(index: usize, count: usize) -> String {
    table_prefix("downstream", index, count)
}

/// How keys inside the `index`-th of `count` listeners are named: `listener` when there is
/// only one, `listener[index]` otherwise.
pub(super) fn listener_prefix(index: usize, count: usize) -> String {
    table_prefix("listener", index, count)
}

/// `table` when it is the only one of its kind, `table[index]` otherwise.
fn table_prefix(table: &str, index: usize, count: usize) -> String {
    if count == 1 {
        table.to_owned()
    } else {
        format!("{table}[{index}]")
    }
}

/// The HL7 delimiters in their usual assignment (MSH-1 and MSH-2): none can be part of the
/// first component of a field.
const HL7_DELIMITERS: &[char] = &['|', '^', '~', '\\', '&'];

/// Why `text`, the value of route key `key`, could never match what its author meant.
fn check_pattern(key: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("empty: write \"*\" (or leave the key out) to match any value".to_owned());
    }
    if text.trim() != text {
        return Err(format!(
            "{text:?}: remove the spaces around the value (values are compared exactly)"
        ));
    }
    if text != "*" && text.contains('*') {
        return Err(format!(
            "{text:?}: \"*\" only works alone, meaning any value; partial wildcards are not \
             supported"
        ));
    }
    if key.ends_with(".message_type") && text.contains('^') {
        return Err(format!(
            "{text:?}: write the message type and the trigger event apart, e.g. \
             message_type = \"ORU\" and trigger_event = \"R01\""
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() || HL7_DELIMITERS.contains(c))
    {
        return Err(format!(
            "{text:?} contains {c:?}: give the first component only, e.g. \"LAB\" for \
             LAB^1.2.3^ISO (delimiters and control characters cannot match)"
        ));
    }
    Ok(())
}

/// Stands in for an invalid address so validation can go on and report the rest.
const NO_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

impl Checker<'_> {
    fn fail(&mut self, key: impl Into<String>, message: impl fmt::Display) {
        self.problems.push(Problem::new(key, message));
    }

    /// A duration; zero is refused unless `zero_ok`.
    fn duration(
        &mut self,
        key: &str,
        raw: Option<&RawDuration>,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        let Some(RawDuration(text)) = raw else {
            return default;
        };
        match parse_duration(text) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.fail(key, format!("{text:?}: must be greater than zero"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.fail(key, e);
                default
            }
        }
    }

    /// One of a fixed set of names.
    fn choice<T: Copy>(
        &mut self,
        key: &str,
        raw: Option<&str>,
        known: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(text) = raw else {
            return default;
        };
        if let Some(&(_, value)) = known.iter().find(|(name, _)| *name == text) {
            return value;
        }
        let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
        self.fail(
            key,
            format!("unknown value {text:?} (known: {})", names.join(", ")),
        );
        default
    }

    /// The framing bytes of a listener or downstream: `start_byte` and `end_bytes` as hex
    /// (`"0x0B"`, `["0x1C", "0x0D"]`), each defaulting to MLLP's; refused, naming the key, when
    /// unreadable or when messages could hold them ([`FramingConfig::new`] says which bytes).
    fn frame_bytes(&mut self, prefix: &str, start: Option<&str>, end: &[String]) -> FramingConfig {
        let start_key = format!("{prefix}.start_byte");
        let start = match start {
            None => Some(FramingConfig::MLLP.start()),
            Some(text) => self.hex_byte(&start_key, text),
        };
        let end: Option<Vec<u8>> = if end.is_empty() {
            Some(FramingConfig::MLLP.end().to_vec())
        } else {
            // Every byte read (and every bad one reported) before any is given up on.
            let bytes: Vec<Option<u8>> = end
                .iter()
                .enumerate()
                .map(|(i, text)| self.hex_byte(&format!("{prefix}.end_bytes[{i}]"), text))
                .collect();
            bytes.into_iter().collect()
        };
        let (Some(start), Some(end)) = (start, end) else {
            return FramingConfig::MLLP;
        };
        match FramingConfig::new(start, &end) {
            Ok(framing) => framing,
            Err(error) => {
                let key = match error {
                    ConfigError::NotAFrameByte { byte } if byte == start => start_key,
                    _ => format!("{prefix}.end_bytes"),
                };
                self.fail(key, error);
                FramingConfig::MLLP
            }
        }
    }

    /// One byte written in hex ([`netio::units::parse_hex_byte`]).
    fn hex_byte(&mut self, key: &str, text: &str) -> Option<u8> {
        netio::units::parse_hex_byte(text)
            .map_err(|error| self.fail(key, error))
            .ok()
    }

    /// An integer within `min..=max`.
    fn integer<T>(&mut self, key: &str, raw: Option<i64>, min: T, max: T, default: T) -> T
    where
        T: TryFrom<i64> + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = raw else {
            return default;
        };
        match T::try_from(raw) {
            Ok(value) if value >= min && value <= max => value,
            _ => {
                self.fail(key, format!("must be between {min} and {max}, not {raw}"));
                default
            }
        }
    }

    /// A size in bytes within `min..=max` (`u64::MAX`: no upper bound).
    fn size(&mut self, key: &str, raw: Option<&RawSize>, min: u64, max: u64, default: u64) -> u64 {
        let Some(size) = raw else {
            return default;
        };
        let parsed = match size {
            RawSize::Bytes(n) => {
                u64::try_from(*n).map_err(|_| format!("{n} is not a size in bytes"))
            }
            RawSize::Text(text) => parse_size(text)
                .map(|n| n as u64)
                .map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(n) => {
                let low = match min {
                    1 => "1 byte".to_owned(),
                    _ => format_size(min),
                };
                let range = match max {
                    u64::MAX => format!("at least {low}"),
                    _ => format!("between {low} and {}", format_size(max)),
                };
                self.fail(key, format!("{n} bytes: must be {range}"));
                default
            }
            Err(message) => {
                self.fail(key, message);
                default
            }
        }
    }

    /// A name for logs and metric labels.
    fn name(&mut self, key: &str, raw: Option<&str>, default: Option<&str>) -> String {
        let Some(name) = raw.or(default) else {
            self.fail(key, "missing: give it a name, e.g. \"ehr\"");
            return String::new();
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            self.fail(
                key,
                format!(
                    "{name:?}: use 1 to 64 letters, digits, '-', '_' or '.' \
                     (it appears in logs and metric labels)"
                ),
            );
        }
        name.to_owned()
    }

    /// A file path, resolved against the config file's directory and (with [`Files::Check`])
    /// opened once to prove it is readable.
    fn file(&mut self, key: &str, raw: &Path) -> PathBuf {
        if raw.as_os_str().is_empty() {
            self.fail(key, "empty path");
            return PathBuf::new();
        }
        let path = self.base.join(raw);
        if self.files == Files::Check
            && let Err(e) = std::fs::File::open(&path)
        {
            self.fail(key, format!("cannot read {}: {e}", path.display()));
        }
        path
    }

    fn required_file(&mut self, key: &str, raw: Option<&Path>, what: &str) -> PathBuf {
        match raw {
            Some(raw) => self.file(key, raw),
            None => {
                self.fail(key, format!("missing: the {what}"));
                PathBuf::new()
            }
        }
    }

    fn thumbprints(&mut self, key: &str, raw: &[String]) -> Vec<Thumbprint> {
        let mut out = Vec::with_capacity(raw.len());
        for (i, text) in raw.iter().enumerate() {
            match text.parse::<Thumbprint>() {
                Ok(t) => out.push(t),
                Err(e) => self.fail(format!("{key}[{i}]"), e),
            }
        }
        out
    }

    /// A route value: absent or `*` matches anything, anything else exactly.
    fn pattern(&mut self, key: &str, raw: Option<&str>) -> Pattern {
        let Some(text) = raw else {
            return Pattern::Any;
        };
        match check_pattern(key, text) {
            Ok(()) => Pattern::parse(text),
            Err(message) => {
                self.fail(key, message);
                Pattern::Any
            }
        }
    }

    /// A route's `listener` or `sender` key: absent or `*` matches anything, anything else
    /// must be one of `known` (names of `what`).
    fn origin(&mut self, key: &str, raw: Option<&str>, what: &str, known: &[&str]) -> Pattern {
        let pattern = self.pattern(key, raw);
        if let (Pattern::Exact(_), Some(name)) = (&pattern, raw)
            && !known.contains(&name)
        {
            let mut listed: Vec<&str> = Vec::with_capacity(known.len());
            for name in known {
                if !listed.contains(name) {
                    listed.push(name);
                }
            }
            let listed = if listed.is_empty() {
                "none defined".to_owned()
            } else {
                format!("known: {}", listed.join(", "))
            };
            self.fail(key, format!("no {what} is named {name:?} ({listed})"));
        }
        pattern
    }

    /// The index of the downstream named `name` among `names` (the `[[downstream]]` names as
    /// written). With no downstream at all, the missing table is already reported.
    fn target(&mut self, key: &str, name: Option<&str>, names: &[Option<&str>]) -> Option<usize> {
        if names.is_empty() {
            return None;
        }
        let mut known: Vec<&str> = Vec::with_capacity(names.len());
        for name in names.iter().flatten() {
            if !known.contains(name) {
                known.push(name);
            }
        }
        let known = known.join(", ");
        let Some(name) = name else {
            self.fail(
                key,
                format!("missing: the name of the [[downstream]] to send to (known: {known})"),
            );
            return None;
        };
        let found = names.iter().position(|n| *n == Some(name));
        if found.is_none() {
            self.fail(key, format!("unknown downstream {name:?} (known: {known})"));
        }
        found
    }

    /// `{prefix}.duplicate_window` and `..._entries`: the window, only for a durable listener
    /// (elsewhere the relay does not answer on its own, or keeps no custody to protect).
    fn duplicate_window(
        &mut self,
        prefix: &str,
        raw: &RawListener,
        mode: AckMode,
    ) -> Option<DuplicateWindowConfig> {
        let key = format!("{prefix}.duplicate_window");
        let entries = self.integer(
            &format!("{prefix}.duplicate_window_entries"),
            raw.duplicate_window_entries,
            1,
            config::MAX_DUPLICATE_WINDOW_ENTRIES,
            config::DEFAULT_DUPLICATE_WINDOW_ENTRIES,
        );
        let Some(text) = raw.duplicate_window.as_ref() else {
            if raw.duplicate_window_entries.is_some() {
                self.fail(
                    format!("{prefix}.duplicate_window_entries"),
                    format!("set without {key}: give the window a duration too, e.g. \"10min\""),
                );
            }
            return None;
        };
        let age = self.duration(&key, Some(text), Duration::ZERO, false);
        if age > config::MAX_DUPLICATE_WINDOW {
            self.fail(
                &key,
                format!(
                    "{:?} is longer than 24h: a message resent on purpose must not be swallowed",
                    text.0
                ),
            );
        }
        if mode != AckMode::Durable {
            self.fail(
                &key,
                "only a listener with ack_mode = \"durable\" can answer a resend from its own \
                 custody: set ack_mode = \"durable\" or remove this key",
            );
        }
        (!age.is_zero()).then_some(DuplicateWindowConfig {
            max_age: age,
            max_entries: entries,
        })
    }

    /// `{prefix}.sender[i]`: the listener's sender identities. A certificate condition needs
    /// client certificates (`client_auth`); names are unique within the listener.
    fn senders(&mut self, prefix: &str, raw: &[RawSender], client_auth: bool) -> Vec<SenderRule> {
        let mut rules: Vec<SenderRule> = Vec::with_capacity(raw.len());
        for (i, table) in raw.iter().enumerate() {
            let key = |field: &str| format!("{prefix}.sender[{i}].{field}");
            let name = self.name(&key("name"), table.name.as_deref(), None);
            if let Some(j) = rules.iter().position(|r| r.name == name) {
                self.fail(
                    key("name"),
                    format!(
                        "duplicate: {name:?} is already the name of {prefix}.sender[{j}] \
                         (metrics and routes tell senders apart by name)"
                    ),
                );
            }
            let application = self.pattern(
                &key("sending_application"),
                table.sending_application.as_deref(),
            );
            let facility =
                self.pattern(&key("sending_facility"), table.sending_facility.as_deref());
            let client = match (&table.client_thumbprint, &table.client_subject) {
                (Some(_), Some(_)) => {
                    self.fail(
                        key("client_subject"),
                        "set with client_thumbprint: give one of the two (a thumbprint names \
                         one certificate, a subject every certificate issued to it)",
                    );
                    ClientMatch::Any
                }
                (Some(text), None) => match text.parse::<Thumbprint>() {
                    Ok(thumbprint) => ClientMatch::Thumbprint(thumbprint),
                    Err(e) => {
                        self.fail(key("client_thumbprint"), e);
                        ClientMatch::Any
                    }
                },
                (None, Some(subject)) if subject.trim().is_empty() => {
                    self.fail(
                        key("client_subject"),
                        "empty: give the subject as the relay logs it, e.g. \
                         \"CN=lab.example, O=Hospital\"",
                    );
                    ClientMatch::Any
                }
                (None, Some(subject)) => ClientMatch::Subject(subject.trim().to_owned()),
                (None, None) => ClientMatch::Any,
            };
            if client != ClientMatch::Any && !client_auth {
                self.fail(
                    key(if table.client_thumbprint.is_some() {
                        "client_thumbprint"
                    } else {
                        "client_subject"
                    }),
                    format!(
                        "{prefix} does not ask for client certificates: add \
                         {prefix}.tls.client_ca or {prefix}.tls.client_thumbprints"
                    ),
                );
            }
            rules.push(SenderRule {
                name,
                client,
                application,
                facility,
            });
        }
        rules
    }

    /// One listener; its keys are named `{prefix}.key`. `listen` (from `--listen`) replaces its
    /// address.
    fn listener(
        &mut self,
        raw: &RawListener,
        prefix: &str,
        listen: Option<SocketAddr>,
    ) -> ListenerSettings {
        let name = self.name(
            &format!("{prefix}.name"),
            raw.name.as_deref(),
            Some(config::DEFAULT_LISTENER_NAME),
        );
        let addr = match (listen, raw.listen.as_deref()) {
            (Some(addr), _) => addr,
            (None, Some(text)) => text.trim().parse().unwrap_or_else(|_| {
                self.fail(
                    format!("{prefix}.listen"),
                    format!("{text:?} is not an IP:PORT to listen on, e.g. \"0.0.0.0:2575\""),
                );
                NO_ADDR
            }),
            (None, None) => {
                self.fail(
                    format!("{prefix}.listen"),
                    "missing: the IP:PORT to accept senders on, e.g. \"0.0.0.0:2575\"",
                );
                NO_ADDR
            }
        };
        let mut config = ListenerConfig::plain(addr);
        config.name.clone_from(&name);

        config.ack_mode = self.choice(
            &format!("{prefix}.ack_mode"),
            raw.ack_mode.as_deref(),
            &[
                ("passthrough", AckMode::Passthrough),
                ("local", AckMode::Local),
                ("durable", AckMode::Durable),
            ],
            AckMode::Passthrough,
        );
        config.on_downstream_failure = self.choice(
            &format!("{prefix}.on_downstream_failure"),
            raw.on_downstream_failure.as_deref(),
            &[
                ("nak", OnDownstreamFailure::Nak),
                ("close", OnDownstreamFailure::Close),
            ],
            OnDownstreamFailure::Nak,
        );
        config.missing_control_id = self.choice(
            &format!("{prefix}.missing_control_id"),
            raw.missing_control_id.as_deref(),
            &[
                ("forward", MissingControlId::Forward),
                ("reject", MissingControlId::Reject),
            ],
            MissingControlId::Forward,
        );
        let batch_key = format!("{prefix}.batch");
        config.batch = self.choice(
            &batch_key,
            raw.batch.as_deref(),
            &[
                ("reject", BatchMode::Reject),
                ("forward", BatchMode::Forward),
                ("split", BatchMode::Split),
            ],
            BatchMode::Reject,
        );
        if config.batch == BatchMode::Forward && config.ack_mode != AckMode::Passthrough {
            self.fail(
                batch_key,
                "\"forward\" hands the receiver's answer to the whole batch back byte for byte, \
                 which needs ack_mode = \"passthrough\"; with local or durable custody use \
                 batch = \"split\" (each message kept and answered on its own)",
            );
        }
        config.charset = self.choice(
            &format!("{prefix}.charset"),
            raw.charset.as_deref(),
            &[
                ("passthrough", CharsetMode::Passthrough),
                ("check", CharsetMode::Check),
            ],
            CharsetMode::Passthrough,
        );
        if let Some(name) = raw.default_charset.as_deref() {
            match Charset::from_name(name) {
                Ok(charset) => config.default_charset = charset,
                Err(error) => self.fail(format!("{prefix}.default_charset"), error),
            }
        }
        config.ack_policy = self.choice(
            &format!("{prefix}.ack_policy"),
            raw.ack_policy.as_deref(),
            &[
                ("negotiated", AckPolicy::Negotiated),
                ("always", AckPolicy::Always),
                ("never", AckPolicy::Never),
                ("errors-only", AckPolicy::ErrorsOnly),
            ],
            AckPolicy::Negotiated,
        );

        let key = &format!("{prefix}.max_frame_size");
        let max_frame_size = self.size(
            key,
            raw.max_frame_size.as_ref(),
            1,
            MAX_FRAME_SIZE_LIMIT as u64,
            DEFAULT_MAX_FRAME_LEN as u64,
        );
        // At most MAX_FRAME_SIZE_LIMIT, a usize.
        let max_frame_size = usize::try_from(max_frame_size).unwrap_or(DEFAULT_MAX_FRAME_LEN);
        let mut tolerances = Tolerances::STRICT;
        for (i, name) in raw.tolerate.iter().enumerate() {
            if !tolerances.enable(name) {
                let known: Vec<&str> = EventCode::ALL.iter().map(|c| c.config_name()).collect();
                self.fail(
                    format!("{prefix}.tolerate[{i}]"),
                    format!("unknown tolerance {name:?} (known: {})", known.join(", ")),
                );
            }
        }
        config.normalize_segment_terminators = raw.normalize_segment_terminators.unwrap_or(false);
        for (i, text) in raw.allowed_sources.iter().enumerate() {
            match text.parse() {
                Ok(net) => config.allowed_sources.push(net),
                Err(message) => self.fail(format!("{prefix}.allowed_sources[{i}]"), message),
            }
        }
        let framing = self.frame_bytes(prefix, raw.start_byte.as_deref(), &raw.end_bytes);
        config.framing = match framing.with_max_frame_len(max_frame_size) {
            Ok(framing) => framing.with_tolerances(tolerances),
            Err(e) => {
                self.fail(key, e);
                framing
            }
        };

        config.idle_timeout = self.duration(
            &format!("{prefix}.idle_timeout"),
            raw.idle_timeout.as_ref(),
            config::DEFAULT_IDLE_TIMEOUT,
            false,
        );
        config.frame_deadline = self.duration(
            &format!("{prefix}.frame_deadline"),
            raw.frame_deadline.as_ref(),
            config::DEFAULT_FRAME_DEADLINE,
            false,
        );
        config.handshake_timeout = self.duration(
            &format!("{prefix}.handshake_timeout"),
            raw.handshake_timeout.as_ref(),
            config::DEFAULT_HANDSHAKE_TIMEOUT,
            false,
        );
        config.write_timeout = self.duration(
            &format!("{prefix}.write_timeout"),
            raw.write_timeout.as_ref(),
            config::DEFAULT_WRITE_TIMEOUT,
            false,
        );
        config.max_connections_per_worker = self.integer(
            &format!("{prefix}.max_connections_per_worker"),
            raw.max_connections_per_worker,
            1,
            MAX_CONNECTIONS_PER_WORKER_LIMIT,
            config::DEFAULT_MAX_CONNECTIONS_PER_WORKER,
        );
        config.duplicates = self.duplicate_window(prefix, raw, config.ack_mode);
        let client_auth = raw
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca.is_some() || !tls.client_thumbprints.is_empty());
        config.senders = self.senders(prefix, &raw.sender, client_auth);

        let tls = raw.tls.as_ref().map(|tls| ServerTlsSettings {
            cert_chain: self.required_file(
                &format!("{prefix}.tls.cert"),
                tls.cert.as_deref(),
                "certificate chain (PEM, server certificate first)",
            ),
            key: self.required_file(
                &format!("{prefix}.tls.key"),
                tls.key.as_deref(),
                &format!("private key of {prefix}.tls.cert (PEM)"),
            ),
            client_ca: tls
                .client_ca
                .as_deref()
                .map(|path| self.file(&format!("{prefix}.tls.client_ca"), path)),
            client_thumbprints: self.thumbprints(
                &format!("{prefix}.tls.client_thumbprints"),
                &tls.client_thumbprints,
            ),
        });
        ListenerSettings { name, config, tls }
    }

    /// The `[[listener]]` tables: each validated (named `listener` when there is one,
    /// `listener[i]` when there are several), then checked against each other (unique names,
    /// addresses that do not overlap). `--listen` replaces the address of the only listener
    /// and is refused when there are several.
    fn listeners(&mut self, raw: &[RawListener], overrides: &Overrides) -> Vec<ListenerSettings> {
        let count = raw.len();
        if count == 0 {
            self.fail(
                "listener",
                "missing: add a [[listener]] table with at least listen = \"IP:PORT\"",
            );
            // The missing table is reported; the keys it lacks would only be noise. The
            // default listener keeps validation going.
            let mark = self.problems.len();
            let listener = self.listener(&RawListener::default(), "listener", overrides.listen);
            self.problems.truncate(mark);
            return vec![listener];
        }
        let listen = match overrides.listen {
            Some(_) if count > 1 => {
                self.fail(
                    "--listen",
                    format!(
                        "the file defines {count} listeners; set their addresses in the file \
                         (listener[i].listen)"
                    ),
                );
                None
            }
            listen => listen,
        };
        let mut listeners: Vec<ListenerSettings> = Vec::with_capacity(count);
        for (i, table) in raw.iter().enumerate() {
            let prefix = listener_prefix(i, count);
            let listener = self.listener(table, &prefix, listen);
            let name = &listener.name;
            if let Some(j) = listeners.iter().position(|l| l.name == *name) {
                let hint = if table.name.is_none() {
                    " (the default, given to a [[listener]] without a name; name each one)"
                } else {
                    ""
                };
                self.fail(
                    format!("{prefix}.name"),
                    format!(
                        "duplicate: {name:?}{hint} is already the name of listener[{j}] (logs and \
                         metrics tell listeners apart by name)"
                    ),
                );
            }
            let addr = listener.config.addr;
            // An unreadable address is already reported (and stands in as port 0).
            if let Some(j) = listeners
                .iter()
                .position(|l| config::addresses_overlap(l.config.addr, addr))
            {
                let other = listeners[j].config.addr;
                let how = if other == addr {
                    format!("{addr} is already the address of listener[{j}]")
                } else {
                    format!(
                        "{addr} overlaps listener[{j}]'s {other} (same port, and one covers the other)"
                    )
                };
                self.fail(
                    format!("{prefix}.listen"),
                    format!("{how}: each listener needs its own address or port"),
                );
            }
            listeners.push(listener);
        }
        listeners
    }

    /// One downstream; its keys are named `{prefix}.key`. `forward` (from `--forward`)
    /// replaces its address.
    fn downstream(
        &mut self,
        raw: &RawDownstream,
        prefix: &str,
        forward: Option<&str>,
    ) -> DownstreamSettings {
        let name = self.name(&format!("{prefix}.name"), raw.name.as_deref(), None);
        let (address_key, address) = match (forward, &raw.address) {
            (Some(forward), _) => ("--forward".to_owned(), Some(forward.trim().to_owned())),
            (None, address) => (
                format!("{prefix}.address"),
                address.as_ref().map(|a| a.trim().to_owned()),
            ),
        };
        let addr = match &address {
            Some(address) => self.resolve(&address_key, address),
            None => {
                self.fail(
                    &*address_key,
                    "missing: the receiver's HOST:PORT, e.g. \"10.0.0.5:6661\"",
                );
                NO_ADDR
            }
        };
        let address = address.unwrap_or_default();
        let mut config = DownstreamConfig::plain(&name, addr);
        config.framing = self.frame_bytes(prefix, raw.start_byte.as_deref(), &raw.end_bytes);
        if let Some(name) = raw.transcode_to.as_deref() {
            let key = format!("{prefix}.transcode_to");
            match Charset::from_name(name) {
                Ok(charset) if charset == Charset::UTF8 => config.transcode_to = Some(charset),
                Ok(charset) => self.fail(
                    key,
                    format!(
                        "{name:?} is {charset}: only \"UTF-8\" is supported as a target (a \
                         receiver that needs another set is rare; say which)"
                    ),
                ),
                Err(error) => self.fail(key, error),
            }
        }
        config.ready_check = raw.ready_check.unwrap_or(true);
        config.connect_timeout = self.duration(
            &format!("{prefix}.connect_timeout"),
            raw.connect_timeout.as_ref(),
            config::DEFAULT_CONNECT_TIMEOUT,
            false,
        );
        config.ack_timeout = self.duration(
            &format!("{prefix}.ack_timeout"),
            raw.ack_timeout.as_ref(),
            config::DEFAULT_ACK_TIMEOUT,
            false,
        );
        config.link = self.choice(
            &format!("{prefix}.link"),
            raw.link.as_deref(),
            &[
                ("per-core", LinkPolicy::PerCore),
                ("single", LinkPolicy::Single),
            ],
            LinkPolicy::PerCore,
        );
        config.retries = self.integer(
            &format!("{prefix}.retries"),
            raw.retries,
            0,
            MAX_RETRIES,
            config::DEFAULT_RETRIES,
        );
        config.backoff_base = self.duration(
            &format!("{prefix}.backoff_base"),
            raw.backoff_base.as_ref(),
            config::DEFAULT_BACKOFF_BASE,
            true,
        );
        let cap_key = format!("{prefix}.backoff_cap");
        config.backoff_cap = self.duration(
            &cap_key,
            raw.backoff_cap.as_ref(),
            config::DEFAULT_BACKOFF_CAP,
            true,
        );
        if config.backoff_cap < config.backoff_base {
            self.fail(
                cap_key,
                format!(
                    "{} is shorter than {prefix}.backoff_base ({})",
                    format_duration(config.backoff_cap),
                    format_duration(config.backoff_base)
                ),
            );
        }

        let tls = raw
            .tls
            .as_ref()
            .map(|tls| self.downstream_tls(tls, prefix, &address_key, &address));
        DownstreamSettings {
            address,
            config,
            tls,
        }
    }

    /// The `[journal]` table. `largest_frame` is the largest `max_frame_size` of the durable
    /// listeners, with its key (the largest message must fit in the journal); `None` without a
    /// durable listener (the journal is refused then anyway).
    fn journal(&mut self, raw: &RawJournal, largest_frame: Option<(&str, usize)>) -> JournalConfig {
        let dir = match raw.dir.as_deref() {
            Some(raw) if raw.as_os_str().is_empty() => {
                self.fail("journal.dir", "empty path");
                PathBuf::new()
            }
            Some(raw) => {
                let dir = self.base.join(raw);
                // The relay creates the directory at start; a file in its place cannot work.
                if self.files == Files::Check && dir.exists() && !dir.is_dir() {
                    self.fail(
                        "journal.dir",
                        format!("{} exists and is not a directory", dir.display()),
                    );
                }
                dir
            }
            None => {
                self.fail(
                    "journal.dir",
                    "missing: the directory where messages are fsync'ed before they are                      acknowledged, e.g. \"/var/lib/mllp-relay/journal\"",
                );
                PathBuf::new()
            }
        };
        let mut journal = JournalConfig::new(dir);

        journal.commit_interval = self.duration(
            "journal.commit_interval",
            raw.commit_interval.as_ref(),
            config::DEFAULT_COMMIT_INTERVAL,
            false,
        );
        if journal.commit_interval > MAX_COMMIT_INTERVAL {
            self.fail(
                "journal.commit_interval",
                format!(
                    "{}: must be at most {} (every ACK may wait this long for its fsync)",
                    format_duration(journal.commit_interval),
                    format_duration(MAX_COMMIT_INTERVAL)
                ),
            );
            journal.commit_interval = config::DEFAULT_COMMIT_INTERVAL;
        }

        let max_key = "journal.max_size";
        journal.max_bytes = self.size(
            max_key,
            raw.max_size.as_ref(),
            MIN_SEGMENT_SIZE,
            u64::MAX,
            config::DEFAULT_JOURNAL_MAX_BYTES,
        );
        let segment_key = "journal.segment_size";
        journal.segment_bytes = self.size(
            segment_key,
            raw.segment_size.as_ref(),
            MIN_SEGMENT_SIZE,
            u64::MAX,
            config::DEFAULT_SEGMENT_BYTES,
        );
        if journal.segment_bytes > journal.max_bytes {
            if raw.segment_size.is_some() {
                self.fail(
                    segment_key,
                    format!(
                        "{} is larger than {max_key} ({})",
                        format_size(journal.segment_bytes),
                        format_size(journal.max_bytes)
                    ),
                );
            } else {
                self.fail(
                    max_key,
                    format!(
                        "{} is smaller than the default {segment_key} ({}): set \
                         {segment_key} too (at most {max_key})",
                        format_size(journal.max_bytes),
                        format_size(journal.segment_bytes)
                    ),
                );
            }
        }
        if let Some((frame_key, frame)) = largest_frame
            && journal.max_bytes < frame as u64
        {
            let frame = frame as u64;
            self.fail(
                max_key,
                format!(
                    "{} is smaller than {frame_key} ({}): the largest message \
                     accepted could never be journaled",
                    format_size(journal.max_bytes),
                    format_size(frame)
                ),
            );
        }
        let memory = self.size(
            "journal.memory",
            raw.memory.as_ref(),
            MIN_JOURNAL_MEMORY,
            usize::MAX as u64,
            config::DEFAULT_JOURNAL_MEMORY_BYTES as u64,
        );
        journal.memory_bytes =
            usize::try_from(memory).unwrap_or(config::DEFAULT_JOURNAL_MEMORY_BYTES);
        journal.forward_lanes = self.integer(
            "journal.forward_lanes",
            raw.forward_lanes,
            1,
            MAX_FORWARD_LANES,
            config::DEFAULT_FORWARD_LANES,
        );
        journal.when_full = self.choice(
            "journal.when_full",
            raw.when_full.as_deref(),
            &[
                ("nak", WhenJournalFull::Nak),
                ("pause", WhenJournalFull::Pause),
            ],
            WhenJournalFull::Nak,
        );
        journal.direct_io = raw.direct_io.unwrap_or(true);
        journal
    }

    fn resolve(&mut self, key: &str, address: &str) -> SocketAddr {
        let resolved = address.to_socket_addrs().map(|mut addrs| addrs.next());
        match resolved {
            Ok(Some(addr)) if addr.port() == 0 => {
                self.fail(key, format!("{address:?}: port 0 cannot be connected to"));
                NO_ADDR
            }
            Ok(Some(addr)) => addr,
            Ok(None) => {
                self.fail(key, format!("{address:?} resolves to no address"));
                NO_ADDR
            }
            Err(e) => {
                self.fail(
                    key,
                    format!("{address:?} is not a HOST:PORT that resolves: {e}"),
                );
                NO_ADDR
            }
        }
    }

    fn downstream_tls(
        &mut self,
        raw: &RawDownstreamTls,
        prefix: &str,
        address_key: &str,
        address: &str,
    ) -> DownstreamTlsSettings {
        let ca = raw
            .ca
            .as_deref()
            .map(|path| self.file(&format!("{prefix}.tls.ca"), path));
        let pinned = self.thumbprints(&format!("{prefix}.tls.thumbprints"), &raw.thumbprints);
        if ca.is_none() && raw.thumbprints.is_empty() {
            self.fail(
                format!("{prefix}.tls"),
                "set ca, thumbprints or both: the relay never trusts a downstream \
                 certificate without one of them",
            );
        }
        let client_cert = match (&raw.client_cert, &raw.client_key) {
            (Some(cert), Some(key)) => Some((
                self.file(&format!("{prefix}.tls.client_cert"), cert),
                self.file(&format!("{prefix}.tls.client_key"), key),
            )),
            (Some(_), None) => {
                self.fail(
                    format!("{prefix}.tls.client_key"),
                    "missing: client_cert is set, so its private key is needed too",
                );
                None
            }
            (None, Some(_)) => {
                self.fail(
                    format!("{prefix}.tls.client_cert"),
                    "missing: client_key is set, so its certificate chain is needed too",
                );
                None
            }
            (None, None) => None,
        };
        let (sni_key, sni) = match &raw.sni {
            Some(sni) => (format!("{prefix}.tls.sni"), sni.trim().to_owned()),
            None => (
                format!("{prefix}.tls.sni (default: the host of {address_key})"),
                address
                    .rsplit_once(':')
                    .map_or(address, |(host, _)| host)
                    .to_owned(),
            ),
        };
        let server_name = match tls::server_name(&sni) {
            Ok(name) => name,
            Err(e) => {
                self.fail(sni_key, e);
                ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
            }
        };
        DownstreamTlsSettings {
            client: ClientTlsSettings {
                ca,
                pinned,
                client_cert,
            },
            sni: sni.trim_matches(['[', ']']).to_owned(),
            server_name,
        }
    }
}

impl RawConfig {
    /// Checks every value. `base_dir` is where relative file paths start (the config file's
    /// directory); `source` is only recorded in the result.
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn validate(
        &self,
        source: &Path,
        base_dir: &Path,
        overrides: &Overrides,
        files: Files,
    ) -> Result<Settings, Vec<Problem>> {
        let mut check = Checker {
            base: base_dir,
            files,
            problems: Vec::new(),
        };

        let workers = match overrides.workers {
            Some(0) => {
                check.fail("--workers", "must be at least 1");
                1
            }
            Some(n) => n,
            None => check.integer("workers", self.workers, 1, MAX_WORKERS, 0),
        };
        let workers = match workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let pin_workers = overrides.pin_workers.or(self.pin_workers).unwrap_or(true);
        let driver = match overrides.driver {
            Some(driver) => driver,
            None => check.choice(
                "driver",
                self.driver.as_deref(),
                &[
                    ("auto", Driver::Auto),
                    ("io-uring", Driver::IoUring),
                    ("epoll", Driver::Epoll),
                ],
                Driver::Auto,
            ),
        };
        let shutdown_grace = check.duration(
            "shutdown_grace",
            self.shutdown_grace.as_ref(),
            config::DEFAULT_SHUTDOWN_GRACE,
            true,
        );
        let metrics_addr = match (overrides.metrics, self.metrics.as_deref()) {
            (Some(addr), _) => Some(addr),
            (None, Some(text)) => match text.trim().parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    check.fail(
                        "metrics",
                        format!("{text:?} is not an IP:PORT, e.g. \"127.0.0.1:9464\""),
                    );
                    None
                }
            },
            (None, None) => None,
        };

        let readiness_window = check.duration(
            "readiness_window",
            self.readiness_window.as_ref(),
            config::DEFAULT_READINESS_WINDOW,
            false,
        );
        let audit = match self.audit.as_deref().map(str::trim) {
            None | Some("off") => AuditConfig::Off,
            Some("log") => AuditConfig::Log,
            Some(text) => match text.strip_prefix("file:").map(str::trim) {
                Some(path) if !path.is_empty() => AuditConfig::File(check.base.join(path)),
                _ => {
                    check.fail(
                        "audit",
                        format!(
                            "{text:?}: write \"off\", \"log\" or \"file:PATH\" (e.g. \
                             \"file:/var/log/mllp-relay/audit.jsonl\")"
                        ),
                    );
                    AuditConfig::Off
                }
            },
        };
        let listeners = check.listeners(&self.listener, overrides);

        let count = self.downstream.len();
        let downstreams = if count == 0 {
            check.fail(
                "downstream",
                "missing: add a [[downstream]] table with name and address",
            );
            // The missing table is reported; the keys it lacks would only be noise.
            Vec::new()
        } else {
            let forward = match overrides.forward.as_deref() {
                Some(_) if count > 1 => {
                    check.fail(
                        "--forward",
                        format!(
                            "the file defines {count} downstreams; set their addresses in the file"
                        ),
                    );
                    None
                }
                forward => forward,
            };
            let mut downstreams = Vec::with_capacity(count);
            for (i, raw) in self.downstream.iter().enumerate() {
                let prefix = downstream_prefix(i, count);
                downstreams.push(check.downstream(raw, &prefix, forward));
                let earlier = self.downstream[..i]
                    .iter()
                    .position(|d| d.name.is_some() && d.name == raw.name);
                if let (Some(j), Some(name)) = (earlier, &raw.name) {
                    check.fail(
                        format!("{prefix}.name"),
                        format!(
                            "duplicate: {name:?} is already the name of downstream[{j}] \
                             (routes, logs and metrics tell downstreams apart by name)"
                        ),
                    );
                }
            }
            downstreams
        };

        let names: Vec<Option<&str>> = self.downstream.iter().map(|d| d.name.as_deref()).collect();
        let listener_names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        let sender_names: Vec<&str> = listeners
            .iter()
            .flat_map(|l| l.config.senders.iter().map(|s| s.name.as_str()))
            .collect();
        let mut routes = Vec::with_capacity(self.route.len());
        for (i, raw) in self.route.iter().enumerate() {
            let key = |field: &str| format!("route[{i}].{field}");
            let matcher = RouteMatch {
                sending_application: check.pattern(
                    &key("sending_application"),
                    raw.sending_application.as_deref(),
                ),
                sending_facility: check
                    .pattern(&key("sending_facility"), raw.sending_facility.as_deref()),
                receiving_application: check.pattern(
                    &key("receiving_application"),
                    raw.receiving_application.as_deref(),
                ),
                receiving_facility: check.pattern(
                    &key("receiving_facility"),
                    raw.receiving_facility.as_deref(),
                ),
                message_type: check.pattern(&key("message_type"), raw.message_type.as_deref()),
                trigger_event: check.pattern(&key("trigger_event"), raw.trigger_event.as_deref()),
                listener: check.origin(
                    &key("listener"),
                    raw.listener.as_deref(),
                    "listener",
                    &listener_names,
                ),
                sender: check.origin(
                    &key("sender"),
                    raw.sender.as_deref(),
                    "[[listener.sender]]",
                    &sender_names,
                ),
            };
            if matcher.uses_origin()
                && let Some(durable) = listeners
                    .iter()
                    .find(|l| l.config.ack_mode == AckMode::Durable)
            {
                let which = if raw.listener.is_some() {
                    "listener"
                } else {
                    "sender"
                };
                check.fail(
                    key(which),
                    format!(
                        "listener {:?} journals its messages (ack_mode = \"durable\"), and a \
                         journaled message is routed again from its MSH alone after a restart: \
                         route on MSH fields, or give that listener another ack_mode",
                        durable.name
                    ),
                );
            }
            if let Some(downstream) =
                check.target(&key("downstream"), raw.downstream.as_deref(), &names)
            {
                routes.push(Route {
                    matcher,
                    downstream,
                });
            }
        }
        let default_downstream = match self.default_route.as_deref() {
            Some(name) => check.target("default_route", Some(name), &names),
            // One receiver and no routing keys at all: everything goes there.
            None if count == 1 && self.route.is_empty() => Some(0),
            None => None,
        };

        // The journal takes the messages of every durable listener: the largest frame any of
        // them accepts must fit.
        let listener_count = listeners.len();
        let durable: Vec<(String, usize)> = listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.config.ack_mode == AckMode::Durable)
            .map(|(i, l)| {
                let key = format!("{}.max_frame_size", listener_prefix(i, listener_count));
                (key, l.config.framing.max_frame_len())
            })
            .collect();
        // The first of the largest, so the error names the first listener that needs room.
        let largest = durable
            .iter()
            .rev()
            .max_by_key(|(_, frame)| *frame)
            .map(|(key, frame)| (key.as_str(), *frame));
        let journal = self.journal.as_ref().map(|raw| check.journal(raw, largest));
        match (&journal, durable.first()) {
            (None, Some((key, _))) => check.fail(
                "journal.dir",
                format!(
                    "missing: {}.ack_mode = \"durable\" acknowledges a message only once \
                     it is fsync'ed to the journal; add a [journal] table with dir = \"…\"",
                    key.trim_end_matches(".max_frame_size")
                ),
            ),
            // Without a listener table the mode is only the default; that table is reported.
            (Some(_), None) if !self.listener.is_empty() => {
                let modes = match listeners.as_slice() {
                    [one] => {
                        let mode = match one.config.ack_mode {
                            AckMode::Local => "local",
                            _ => "passthrough",
                        };
                        format!("listener.ack_mode is {mode:?}: set it to \"durable\"")
                    }
                    _ => "no listener has ack_mode = \"durable\": set it on one".to_owned(),
                };
                check.fail(
                    "journal",
                    format!(
                        "the journal is only used by ack_mode = \"durable\", and {modes} or \
                         remove the [journal] table"
                    ),
                );
            }
            _ => {}
        }

        if !check.problems.is_empty() {
            return Err(check.problems);
        }
        Ok(Settings {
            source: source.to_owned(),
            listeners,
            downstreams,
            routes,
            default_downstream,
            workers,
            pin_workers,
            driver,
            metrics_addr,
            readiness_window,
            audit,
            shutdown_grace,
            journal,
        })
    }
}
