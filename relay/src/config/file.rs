//! TOML configuration files: `mllp-relay --config relay.toml` runs one,
//! `mllp-relay check-config relay.toml` validates one and prints what would run.
//!
//! # Three steps
//! 1. **Raw** ([`RawConfig`]): serde reads the file. Every table denies unknown keys, so a
//!    misspelt key is an error naming it (with toml's line, column and snippet), never a
//!    silently ignored setting. Only types are checked here, and the first error stops.
//! 2. **Validated** ([`Settings`], from [`RawConfig::validate`]): every value is checked and
//!    *every* problem is collected, each named by its key path (`listener.tls.key`,
//!    `downstream.ack_timeout`, `listener.tolerate[1]`, `route[0].downstream`, and
//!    `listener[1].tls.key` in a file with several listeners). Relative file
//!    paths are resolved against the config file's directory, downstream addresses are
//!    resolved, route targets are matched to downstream names, and (unless asked not to, see
//!    [`Files`]) certificate and key files are checked to be readable.
//! 3. **Built** ([`Config`], via `TryFrom<&Settings>`): certificates and keys are loaded into
//!    rustls configurations; a file that is not what its key says (not PEM, key not matching
//!    the certificate, …) is reported under that key.
//!
//! [`load_config`] does all three; [`load_config_unchecked`] stops after step 2 without
//! touching certificate files (for documentation examples and dry runs elsewhere).
//!
//! # Schema
//! Every key but `listener.listen`, `downstream.name`, `downstream.address`,
//! `route.downstream` and `journal.dir` is optional; defaults are the constants of
//! [`crate::config`]. (With several listeners, name them: two unnamed ones would share the
//! default name, and names must differ.)
//!
//! ```toml
//! workers = 2                  # worker threads; default: one per CPU (1..=1024)
//! pin_workers = true           # pin worker i to the i-th allowed CPU; default: true
//! driver = "auto"              # auto | io-uring | epoll; default: auto
//! shutdown_grace = "30s"       # how long SIGTERM waits for in-flight messages
//! metrics = "127.0.0.1:9464"   # serve Prometheus metrics here; default: nowhere
//! default_route = "ehr"        # the [[downstream]] for messages no [[route]] matches; see Routing
//!
//! [[listener]]                 # at least one; repeat the table for each port (see Listeners)
//! name = "lab-results"         # for logs and metric labels; letters, digits, '-', '_', '.';
//!                              # default: "listener"; unique among the listeners
//! listen = "0.0.0.0:2575"      # IP:PORT (required); port 0 picks a free port; no two listeners
//!                              # on the same address (nor 0.0.0.0 and an IP with one port)
//! ack_mode = "passthrough"     # passthrough: the receiver's own ACK | local: the relay ACKs on
//!                              # receipt and forwards afterwards (no durability: can lose messages)
//!                              # | durable: the relay ACKs (AA/CA) once the message is fsync'ed to
//!                              # the [journal] and delivers it afterwards, retrying, also after a
//!                              # crash
//! on_downstream_failure = "nak"   # nak (generated AE/CE with ERR 207) | close
//! ack_policy = "negotiated"    # negotiated | always | never | errors-only
//! max_frame_size = 16777216    # bytes, or a string such as "512KiB", "16MiB" (at most 1GiB)
//! tolerate = ["fs_without_cr"] # fs_without_cr | lf_after_fs | whitespace_between_frames
//!                              # | junk_before_start; default: none (strict MLLP)
//! allowed_sources = ["10.20.0.0/16", "192.168.7.12"]   # CIDR allowlist; default: any source
//! idle_timeout = "10min"
//! frame_deadline = "60s"
//! handshake_timeout = "10s"
//! write_timeout = "30s"
//! max_connections_per_worker = 10000   # per worker, for this listener alone
//! duplicate_window = "10min"   # durable only; default: off. A message whose MSH-3, MSH-4, MSH-10
//!                              # and content match one accepted within this time (at most 24h)
//!                              # gets the original ACK again and is not queued twice
//! duplicate_window_entries = 100000    # cap on the messages remembered (whole relay)
//!
//! [listener.tls]               # optional, belongs to the [[listener]] just above it;
//!                              # without it that listener speaks plain TCP
//! cert = "server.pem"          # certificate chain, leaf first (required in this table)
//! key = "server.key"           # its private key (required in this table)
//! client_ca = "clients-ca.pem" # optional: accept client certificates issued by this CA ...
//! client_thumbprints = ["AB:CD:…"]  # ... or with one of these SHA-256 thumbprints
//!
//! [[downstream]]               # at least one; repeat the table for each receiver
//! name = "ehr"                 # required and unique; same characters as listener.name
//! address = "10.0.0.5:6661"    # HOST:PORT, resolved when the file is loaded (required)
//! connect_timeout = "5s"
//! ack_timeout = "10s"
//! retries = 2                  # after the first attempt (0..=100)
//! link = "per-core"             # per-core: each worker pools its own connections (fastest);
//!                              # single: one connection for the whole relay (global order)
//! backoff_base = "200ms"       # doubled each retry, with jitter ...
//! backoff_cap = "5s"           # ... up to this (at least backoff_base)
//!
//! [downstream.tls]             # optional, belongs to the [[downstream]] just above it;
//!                              # without it that downstream link is plain TCP
//! ca = "ehr-ca.pem"            # trust certificates issued by this CA (name checked) ...
//! thumbprints = ["…"]          # ... or exactly these (name not checked); at least one of the two
//! sni = "ehr.example.org"      # default: the host part of downstream.address
//! client_cert = "relay.pem"    # optional, with client_key: mutual TLS towards the downstream
//! client_key = "relay.key"
//!
//! [[route]]                    # optional, repeatable: tried in file order, first match wins
//! sending_application = "LAB"  # MSH-3.1; each match key is optional: absent or "*" = any value
//! sending_facility = "*"       # MSH-4.1
//! receiving_application = "EHR"   # MSH-5.1
//! receiving_facility = "*"     # MSH-6.1
//! message_type = "ORU"         # MSH-9.1
//! trigger_event = "R01"        # MSH-9.2
//! downstream = "ehr"           # required: the name of a [[downstream]]
//!
//! [journal]                    # required when a listener has ack_mode = "durable", refused
//!                              # when none has
//! dir = "/var/lib/mllp-relay/journal"  # required: one sub-directory per worker, dead letters
//! commit_interval = "1ms"      # longest a message waits for others to share its fsync
//!                              # (more than 0, at most 100ms); a lone message is committed at once
//! max_size = "8GiB"            # cap on each worker's journal (undelivered + not yet reclaimed)
//! segment_size = "64MiB"       # size of one journal file (at least 1MiB, at most max_size)
//! memory = "64MiB"             # undelivered messages each worker keeps in memory; the rest are
//!                              # read back from the journal when their turn comes
//! forward_lanes = 8            # connections per per-core downstream delivering from the journal
//!                              # (1..=256); each sender connection keeps its order on one lane
//! when_full = "nak"            # at max_size: nak (the sender gets AE/CE "journal full") | pause
//!                              # (the sender's connection is not read until space is freed)
//! direct_io = true             # write commits with O_DIRECT + O_DSYNC where the filesystem
//!                              # allows it (less CPU); false: page cache + fdatasync. Both are
//!                              # equally durable
//! ```
//!
//! Top-level keys (`workers`, `default_route`, …) must come before the first `[[…]]` or
//! `[journal]` table: TOML puts a key written after a table header inside that table.
//!
//! # Listeners
//! A relay may accept on several ports, for example ADT on one and lab results on another: one
//! `[[listener]]` table each. Every listener has its own address, TLS (a `[listener.tls]`
//! table written under it), ACK mode, ACK policy, framing, allowlist, timeouts and connection
//! limit; they all forward through the same `[[downstream]]`s and `[[route]]`s. Names must
//! be unique (they label logs and metrics: name each listener when there are several), and no
//! two listeners may take the same address: the same IP and port, or one port on `0.0.0.0`
//! (`[::]`) and on a specific address. Port 0 is exempt, as it picks a free port each time.
//!
//! Problems inside a listener are named `listener.key` when the file has one `[[listener]]`,
//! and `listener[i].key` (`i` counted from 0 in file order) when it has several, as for
//! downstreams.
//!
//! # The journal
//! A listener with `ack_mode = "durable"` needs a `[journal]` table (a file without one is
//! refused at `journal.dir`), and a `[journal]` table is refused when no listener is durable:
//! it would be unused, and a file that looks durable but is not must not pass. One journal per
//! worker takes the messages of every durable listener. `journal.max_size` must be at least
//! the largest `max_frame_size` of the durable listeners, so that the largest accepted message
//! fits.
//!
//! # Routing
//! Each message goes to exactly one downstream. The `[[route]]` rules are tried in the order
//! of the file and the first one whose every key matches wins. Values are compared exactly
//! (case-sensitive, as HL7 codes are) with the first component of the field (`LAB` in
//! `LAB^1.2.3^ISO`); `"*"` or a missing key matches anything, an empty field included.
//!
//! A message that matches no rule goes to the *default route*:
//! - with exactly one `[[downstream]]`, no `[[route]]` and no `default_route`, that
//!   downstream (a one-receiver file needs no routing keys at all);
//! - otherwise the downstream named by `default_route`, if set;
//! - otherwise nowhere: the message is **refused with an AR** (ERR 200 "unsupported message
//!   type" or 201 "unsupported event code"), logged and counted, and not forwarded. The
//!   sender will usually hold or retry it, so add a rule or a `default_route` for every feed
//!   you expect.
//!
//! Durations are strings with a unit: `"500ms"`, `"10s"`, `"2min"`, `"1h"` (see
//! [`parse_duration`]); timeouts must be greater than zero. Sizes are integers (bytes) or
//! strings with a `KiB`, `MiB` or `GiB` suffix (see [`parse_size`]). Thumbprints are 64 hex
//! digits, optionally separated by `:` or spaces (as `openssl x509 -fingerprint -sha256`
//! prints them).
//!
//! **Relative paths** (`cert`, `key`, `client_ca`, `ca`, `client_cert`, `client_key`,
//! `journal.dir`) are resolved against the directory of the config file, not the working
//! directory, so a file and its certificates can move together.
//!
//! Problems inside a downstream are named `downstream.key` when the file has one
//! `[[downstream]]`, and `downstream[i].key` (`i` counted from 0 in file order) when it has
//! several; problems inside a route are always named `route[i].key`.
//!
//! Command-line overrides (`--listen`, `--forward`, `--workers`, `--metrics`, `--driver`,
//! `--no-pin`) arrive as [`Overrides`]; a problem with an overridden value is named by its flag.
//! (`--journal` is not among them: with a file, `journal.dir` says where the journal is.)
//! `--listen` replaces the address of the one listener, and is refused when the file defines
//! several; `--forward` likewise replaces the address of the one downstream, and is refused
//! when the file defines several.

use std::fmt;
use std::marker::PhantomData;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mllp::ack::AckPolicy;
use mllp::frame::{DEFAULT_MAX_FRAME_LEN, EventCode, FramingConfig, Tolerances};
use rustls_pki_types::ServerName;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use netio::connect::ClientTls;
use netio::runtime::Driver;
use netio::tls::{
    self, ClientTlsSettings, ServerTlsSettings, Thumbprint, TlsRejections, TlsSetupError,
};
use netio::units::{format_duration, format_size, parse_duration, parse_size};

use crate::config::{
    self, AckMode, Config, DownstreamConfig, DuplicateWindowConfig, JournalConfig, LinkPolicy,
    ListenerConfig, OnDownstreamFailure, WhenJournalFull,
};
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

// ---------------------------------------------------------------------------------------------
// Raw layer (serde)
// ---------------------------------------------------------------------------------------------

/// The file as written: types checked, values not yet. Field names are the TOML keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Worker threads.
    pub workers: Option<i64>,
    /// Whether to pin workers to CPUs.
    pub pin_workers: Option<bool>,
    /// `auto`, `io-uring` or `epoll`.
    pub driver: Option<String>,
    /// Shutdown grace period.
    pub shutdown_grace: Option<RawDuration>,
    /// Metrics endpoint address.
    pub metrics: Option<String>,
    /// The `[[downstream]]` name for messages no `[[route]]` matches.
    pub default_route: Option<String>,
    /// `[[listener]]` tables.
    #[serde(default, deserialize_with = "array_of_tables")]
    pub listener: Vec<RawListener>,
    /// `[[downstream]]` tables.
    #[serde(default, deserialize_with = "array_of_tables")]
    pub downstream: Vec<RawDownstream>,
    /// `[[route]]` tables, in file order.
    #[serde(default, deserialize_with = "array_of_tables")]
    pub route: Vec<RawRoute>,
    /// The `[journal]` table (`durable` ACK mode).
    pub journal: Option<RawJournal>,
}

/// One `[[listener]]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// A name for logs.
    pub name: Option<String>,
    /// `IP:PORT` to bind.
    pub listen: Option<String>,
    /// Who answers the sender.
    pub ack_mode: Option<String>,
    /// `nak` or `close`.
    pub on_downstream_failure: Option<String>,
    /// `negotiated`, `always`, `never` or `errors-only`.
    pub ack_policy: Option<String>,
    /// Largest frame accepted.
    pub max_frame_size: Option<RawSize>,
    /// Tolerance names.
    #[serde(default)]
    pub tolerate: Vec<String>,
    /// Idle timeout.
    pub idle_timeout: Option<RawDuration>,
    /// Frame deadline.
    pub frame_deadline: Option<RawDuration>,
    /// TLS handshake timeout.
    pub handshake_timeout: Option<RawDuration>,
    /// ACK write timeout.
    pub write_timeout: Option<RawDuration>,
    /// Connection cap per worker.
    pub max_connections_per_worker: Option<i64>,
    /// Source addresses allowed to connect (CIDR); empty or absent allows every source.
    #[serde(default)]
    pub allowed_sources: Vec<String>,
    /// `durable` mode: how long an accepted message is remembered to answer a resend of it.
    pub duplicate_window: Option<RawDuration>,
    /// `durable` mode: most messages the duplicate window remembers.
    pub duplicate_window_entries: Option<i64>,
    /// `[listener.tls]`.
    pub tls: Option<RawListenerTls>,
}

/// A `[listener.tls]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// Certificate chain file.
    pub cert: Option<PathBuf>,
    /// Private key file.
    pub key: Option<PathBuf>,
    /// Client CA bundle file.
    pub client_ca: Option<PathBuf>,
    /// Accepted client certificate thumbprints.
    #[serde(default)]
    pub client_thumbprints: Vec<String>,
}

/// One `[[downstream]]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDownstream {
    /// A name for logs and metrics.
    pub name: Option<String>,
    /// `HOST:PORT`.
    pub address: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Option<RawDuration>,
    /// ACK timeout.
    pub ack_timeout: Option<RawDuration>,
    /// `per-core` (default) or `single`.
    pub link: Option<String>,
    /// Retries after the first attempt.
    pub retries: Option<i64>,
    /// First backoff.
    pub backoff_base: Option<RawDuration>,
    /// Largest backoff.
    pub backoff_cap: Option<RawDuration>,
    /// `[downstream.tls]`.
    pub tls: Option<RawDownstreamTls>,
}

/// A `[downstream.tls]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDownstreamTls {
    /// CA bundle file.
    pub ca: Option<PathBuf>,
    /// Pinned server certificate thumbprints.
    #[serde(default)]
    pub thumbprints: Vec<String>,
    /// Server name to send and verify.
    pub sni: Option<String>,
    /// Client certificate chain file.
    pub client_cert: Option<PathBuf>,
    /// Its private key file.
    pub client_key: Option<PathBuf>,
}

/// One `[[route]]` table as written. Absent match keys match any value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// MSH-3.1.
    pub sending_application: Option<String>,
    /// MSH-4.1.
    pub sending_facility: Option<String>,
    /// MSH-5.1.
    pub receiving_application: Option<String>,
    /// MSH-6.1.
    pub receiving_facility: Option<String>,
    /// MSH-9.1.
    pub message_type: Option<String>,
    /// MSH-9.2.
    pub trigger_event: Option<String>,
    /// The `[[downstream]]` name matching messages go to.
    pub downstream: Option<String>,
}

/// The `[journal]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJournal {
    /// The journal directory.
    pub dir: Option<PathBuf>,
    /// Longest wait for more messages to share a commit.
    pub commit_interval: Option<RawDuration>,
    /// Cap on each worker's journal.
    pub max_size: Option<RawSize>,
    /// Size of one segment file.
    pub segment_size: Option<RawSize>,
    /// Memory each worker keeps of undelivered messages.
    pub memory: Option<RawSize>,
    /// Delivery connections per `per-core` downstream.
    pub forward_lanes: Option<i64>,
    /// `nak` or `pause`.
    pub when_full: Option<String>,
    /// Direct (`O_DIRECT`) commit writes.
    pub direct_io: Option<bool>,
}

/// A duration as written (a string, parsed during validation so the error can name its key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration as a string with a unit, e.g. \"500ms\", \"10s\", \"2min\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(text.to_owned()))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// A size as written: an integer number of bytes or a string with a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSize {
    /// `max_frame_size = 1048576`
    Bytes(i64),
    /// `max_frame_size = "1MiB"`
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Size;
        impl Visitor<'_> for Size {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes (an integer) or a string such as \"16MiB\"")
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(bytes))
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(bytes).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(text.to_owned()))
            }
        }
        deserializer.deserialize_any(Size)
    }
}

/// `[[name]]` tables, with a hint when a single `[name]` table was written instead.
fn array_of_tables<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Tables<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Tables<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "an array of tables: write the header with double brackets, \
                 [[listener]], [[downstream]] or [[route]]",
            )
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut tables = Vec::new();
            while let Some(table) = seq.next_element()? {
                tables.push(table);
            }
            Ok(tables)
        }
    }
    deserializer.deserialize_seq(Tables(PhantomData))
}

impl RawConfig {
    /// Parses TOML text (types only; see [`validate`](Self::validate) for values).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

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
    fn new(key: impl Into<String>, message: impl fmt::Display) -> Self {
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

// ---------------------------------------------------------------------------------------------
// Validated layer
// ---------------------------------------------------------------------------------------------

/// Whether validation checks that certificate and key files can be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// Check every file (what `check-config` and `--config` do).
    Check,
    /// Resolve paths but do not touch the files (the result cannot be built into a
    /// [`Config`] unless the files exist after all).
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
/// [`Config`] holds, with TLS as settings (paths and thumbprints) instead of rustls
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
fn downstream_prefix(index: usize, count: usize) -> String {
    table_prefix("downstream", index, count)
}

/// How keys inside the `index`-th of `count` listeners are named: `listener` when there is
/// only one, `listener[index]` otherwise.
fn listener_prefix(index: usize, count: usize) -> String {
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
        for (i, text) in raw.allowed_sources.iter().enumerate() {
            match text.parse() {
                Ok(net) => config.allowed_sources.push(net),
                Err(message) => self.fail(format!("{prefix}.allowed_sources[{i}]"), message),
            }
        }
        config.framing = match FramingConfig::MLLP.with_max_frame_len(max_frame_size) {
            Ok(framing) => framing.with_tolerances(tolerances),
            Err(e) => {
                self.fail(key, e);
                FramingConfig::MLLP
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
            };
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
            shutdown_grace,
            journal,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Built layer
// ---------------------------------------------------------------------------------------------

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
    type Error = ConfigFileError;

    /// Loads the certificates and keys (both sides, so every TLS problem is reported at once).
    fn try_from(settings: &Settings) -> Result<Self, ConfigFileError> {
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
            return Err(ConfigFileError::Invalid {
                path: settings.source.clone(),
                problems,
            });
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
            shutdown_grace: settings.shutdown_grace,
            journal: settings.journal.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

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
    let settings = settings(path, overrides, Files::Check)?;
    let config = Config::try_from(&settings).map_err(|e| match e {
        ConfigFileError::Invalid { problems, .. } => ConfigFileError::Invalid {
            path: path.to_owned(),
            problems,
        },
        other => other,
    })?;
    Ok(Loaded { settings, config })
}

/// Reads and validates a config file without opening its certificate and key files (their
/// paths are still resolved). The result describes the configuration but cannot run it.
pub fn load_config_unchecked(path: &Path) -> Result<Settings, ConfigFileError> {
    settings(path, &Overrides::default(), Files::Skip)
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

/// Describes a rule "issued by CA OR one of the thumbprints".
fn trust_rule(ca: Option<&Path>, thumbprints: usize, noun: &str) -> String {
    let pins = match thumbprints {
        0 => None,
        1 => Some(format!("with the listed {noun} thumbprint")),
        n => Some(format!("with one of the {n} listed {noun} thumbprints")),
    };
    match (ca, pins) {
        (Some(ca), Some(pins)) => format!("issued by the CA in {} OR {pins}", ca.display()),
        (Some(ca), None) => format!("issued by the CA in {}", ca.display()),
        (None, Some(pins)) => pins,
        (None, None) => "nothing (invalid)".to_owned(),
    }
}

/// A route value as the summary shows it: `*` for any value.
struct PatternText<'a>(&'a Pattern);

impl fmt::Display for PatternText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Pattern::Any => f.write_str("*"),
            Pattern::Exact(value) => f.write_str(&String::from_utf8_lossy(value)),
        }
    }
}

impl fmt::Display for ListenerSettings {
    /// The listener's lines of the `check-config` summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self;
        let lc = &l.config;
        writeln!(f, "listener {:?} on {}", l.name, lc.addr)?;
        match &l.tls {
            None => writeln!(f, "  TLS: off (plain TCP)")?,
            Some(tls) => {
                writeln!(
                    f,
                    "  TLS: on, certificate {}, key {}",
                    tls.cert_chain.display(),
                    tls.key.display()
                )?;
                if tls.client_ca.is_none() && tls.client_thumbprints.is_empty() {
                    writeln!(f, "  client certificates: not asked for")?;
                } else {
                    writeln!(
                        f,
                        "  client certificates: required, accepted when {}",
                        trust_rule(
                            tls.client_ca.as_deref(),
                            tls.client_thumbprints.len(),
                            "client"
                        )
                    )?;
                }
            }
        }
        let mode = match lc.ack_mode {
            AckMode::Passthrough => "passthrough",
            AckMode::Local => "local (ACK on receipt, no durability: messages can be lost)",
            AckMode::Durable => {
                "durable (AA/CA once fsync'ed to the journal; delivered afterwards with \
                 retries, also after a crash)"
            }
        };
        let failure = match lc.on_downstream_failure {
            OnDownstreamFailure::Nak => "nak",
            OnDownstreamFailure::Close => "close",
        };
        let policy = match lc.ack_policy {
            AckPolicy::Negotiated => "negotiated",
            AckPolicy::Always => "always",
            AckPolicy::Never => "never",
            AckPolicy::ErrorsOnly => "errors-only",
        };
        if lc.ack_mode == AckMode::Passthrough {
            writeln!(
                f,
                "  ack mode {mode}, ack policy {policy}, on downstream failure {failure}"
            )?;
        } else {
            // The sender is answered before delivery: a downstream failure never reaches it.
            writeln!(f, "  ack mode {mode}, ack policy {policy}")?;
        }
        if let Some(window) = &lc.duplicates {
            writeln!(
                f,
                "  duplicate window: {}, at most {} messages (a resend within it gets its \
                 original ACK and is not queued again)",
                format_duration(window.max_age),
                window.max_entries
            )?;
        }
        let t = lc.framing.tolerances();
        let tolerated: Vec<&str> = [
            (t.fs_without_cr, EventCode::FsWithoutCr),
            (t.lf_after_fs, EventCode::LfAfterFs),
            (
                t.whitespace_between_frames,
                EventCode::WhitespaceBetweenFrames,
            ),
            (t.junk_before_start, EventCode::JunkBeforeStart),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, code)| code.config_name())
        .collect();
        writeln!(
            f,
            "  frames: at most {}, tolerating {}",
            format_size(lc.framing.max_frame_len() as u64),
            if tolerated.is_empty() {
                "nothing (strict MLLP)".to_owned()
            } else {
                tolerated.join(", ")
            }
        )?;
        if !lc.allowed_sources.is_empty() {
            let nets: Vec<String> = lc.allowed_sources.iter().map(ToString::to_string).collect();
            writeln!(f, "  sources allowed: {}", nets.join(", "))?;
        }
        writeln!(
            f,
            "  timeouts: idle {}, frame {}, handshake {}, write {}; at most {} connections per worker",
            format_duration(lc.idle_timeout),
            format_duration(lc.frame_deadline),
            format_duration(lc.handshake_timeout),
            format_duration(lc.write_timeout),
            lc.max_connections_per_worker
        )?;
        Ok(())
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.listeners.len() > 1 {
            writeln!(
                f,
                "{} listeners (each with its own settings; downstreams and routes shared):",
                self.listeners.len()
            )?;
        }
        for listener in &self.listeners {
            write!(f, "{listener}")?;
        }

        if let Some(j) = &self.journal {
            writeln!(
                f,
                "journal in {} (one sub-directory per worker)",
                j.dir.display()
            )?;
            writeln!(
                f,
                "  commit interval at most {}; per worker: at most {} of records in segments of {} \
                 (on disk up to 3 segments more: spares and the current one's unwritten rest), \
                 {} in memory",
                format_duration(j.commit_interval),
                format_size(j.max_bytes),
                format_size(j.segment_bytes),
                format_size(j.memory_bytes as u64)
            )?;
            let full = match j.when_full {
                WhenJournalFull::Nak => "nak (the sender gets AE/CE \"journal full\")",
                WhenJournalFull::Pause => "pause (senders are not read until space is freed)",
            };
            writeln!(
                f,
                "  {} forward lane(s) per per-core downstream; when full: {full}",
                j.forward_lanes
            )?;
            writeln!(
                f,
                "  commits written {}",
                if j.direct_io {
                    "with O_DIRECT + O_DSYNC where the filesystem allows it, else page cache + fdatasync"
                } else {
                    "through the page cache + fdatasync (direct_io = false)"
                }
            )?;
        }

        for d in &self.downstreams {
            let dc = &d.config;
            if d.address == dc.addr.to_string() {
                writeln!(f, "downstream {:?} at {}", dc.name, d.address)?;
            } else {
                writeln!(
                    f,
                    "downstream {:?} at {} (resolved to {})",
                    dc.name, d.address, dc.addr
                )?;
            }
            match &d.tls {
                None => writeln!(f, "  TLS: off (plain TCP)")?,
                Some(tls) => {
                    writeln!(
                        f,
                        "  TLS: on, server name {}, its certificate accepted when {}",
                        tls.sni,
                        trust_rule(tls.client.ca.as_deref(), tls.client.pinned.len(), "pinned")
                    )?;
                    match &tls.client.client_cert {
                        Some((cert, _)) => {
                            writeln!(f, "  client certificate: {}", cert.display())?;
                        }
                        None => writeln!(f, "  client certificate: none")?,
                    }
                }
            }
            writeln!(
                f,
                "  timeouts: connect {}, ack {}; {} retries, backoff {} doubling up to {}",
                format_duration(dc.connect_timeout),
                format_duration(dc.ack_timeout),
                dc.retries,
                format_duration(dc.backoff_base),
                format_duration(dc.backoff_cap)
            )?;
        }

        let name = |index: usize| {
            self.downstreams
                .get(index)
                .map_or("?", |d| d.config.name.as_str())
        };
        if self.routes.is_empty() {
            writeln!(f, "routes: none")?;
        } else {
            writeln!(
                f,
                "routes (first match wins; MSH-3/MSH-4/MSH-5/MSH-6/MSH-9 -> downstream):"
            )?;
            for (i, route) in self.routes.iter().enumerate() {
                let m = &route.matcher;
                writeln!(
                    f,
                    "  {}. {}/{}/{}/{}/{}^{} -> {}",
                    i + 1,
                    PatternText(&m.sending_application),
                    PatternText(&m.sending_facility),
                    PatternText(&m.receiving_application),
                    PatternText(&m.receiving_facility),
                    PatternText(&m.message_type),
                    PatternText(&m.trigger_event),
                    name(route.downstream)
                )?;
            }
        }
        match self.default_downstream {
            Some(index) => writeln!(f, "default route: {}", name(index))?,
            None => writeln!(
                f,
                "default route: none: unrouted messages are refused with AR (ERR 200/201), \
                 not forwarded"
            )?,
        }

        let driver = match self.driver {
            Driver::Auto => "auto",
            Driver::IoUring => "io-uring",
            Driver::Epoll => "epoll",
        };
        writeln!(
            f,
            "workers: {}{}, driver {driver}, shutdown grace {}",
            self.workers,
            if self.pin_workers {
                ", pinned to CPUs"
            } else {
                ", not pinned"
            },
            format_duration(self.shutdown_grace)
        )?;
        match self.metrics_addr {
            Some(addr) => write!(f, "metrics: http://{addr}/metrics"),
            None => write!(f, "metrics: off"),
        }
    }
}
