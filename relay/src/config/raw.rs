//! A config file as written: serde reads it into these types. Every table denies unknown keys,
//! so a misspelt key is an error naming it (with toml's line, column and snippet), never a
//! silently ignored setting. Only types are checked here, and the first error stops; the
//! values are checked by [`check`](super::check).

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

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
    /// How recently downstreams must have been reached for `/readyz`.
    pub readiness_window: Option<RawDuration>,
    /// `off`, `log` or `file:PATH`.
    pub audit: Option<String>,
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
    /// `forward` or `reject`.
    pub missing_control_id: Option<String>,
    /// `reject`, `forward` or `split`.
    pub batch: Option<String>,
    /// `passthrough` or `check`.
    pub charset: Option<String>,
    /// The character set of a message with an empty MSH-18.
    pub default_charset: Option<String>,
    /// `negotiated`, `always`, `never` or `errors-only`.
    pub ack_policy: Option<String>,
    /// Largest frame accepted.
    pub max_frame_size: Option<RawSize>,
    /// Tolerance names.
    #[serde(default)]
    pub tolerate: Vec<String>,
    /// Rewrite LF/CRLF segment terminators to CR.
    pub normalize_segment_terminators: Option<bool>,
    /// The frame start byte, in hex.
    pub start_byte: Option<String>,
    /// The one or two frame end bytes, in hex.
    #[serde(default)]
    pub end_bytes: Vec<String>,
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
    /// `[[listener.sender]]`: the identities senders may claim on this listener.
    #[serde(default)]
    pub sender: Vec<RawSender>,
}

/// One `[[listener.sender]]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSender {
    /// The identity's name (metrics label, route key).
    pub name: Option<String>,
    /// MSH-3.1 it may send as.
    pub sending_application: Option<String>,
    /// MSH-4.1 it may send as.
    pub sending_facility: Option<String>,
    /// The client certificate's SHA-256 thumbprint.
    pub client_thumbprint: Option<String>,
    /// The client certificate's subject.
    pub client_subject: Option<String>,
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
    /// The frame start byte, in hex.
    pub start_byte: Option<String>,
    /// The one or two frame end bytes, in hex.
    #[serde(default)]
    pub end_bytes: Vec<String>,
    /// The character set to transcode messages into.
    pub transcode_to: Option<String>,
    /// Whether `/readyz` checks it.
    pub ready_check: Option<bool>,
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
    /// The listener's name.
    pub listener: Option<String>,
    /// The sender identity's name.
    pub sender: Option<String>,
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
