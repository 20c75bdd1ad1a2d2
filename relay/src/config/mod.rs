//! The relay's validated configuration: what the workers run with.
//!
//! Every value here has already been checked. A configuration comes from a TOML file or from
//! the command line's flags, in three steps that both take:
//! 1. [`raw`]: the file as written (serde; unknown keys refused), or the flags in the same form;
//! 2. [`check`]: every value checked and every problem collected, each named by its key (or
//!    flag), into [`check::Settings`];
//! 3. [`load`]: certificates and keys loaded into rustls configurations: a [`Config`].
//!
//! `show` writes the summary `check-config` prints. Every key is described in
//! `docs/configuration.md`; defaults are the constants below, each with the reason for its
//! value.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use mllp::ack::AckPolicy;
use mllp::charset::Charset;
use mllp::frame::FramingConfig;
use netio::connect::ClientTls;
use netio::runtime::Driver;

use crate::identity::SenderRule;
use crate::route::Route;

pub mod check;
pub mod load;
pub mod raw;
pub mod reload;
mod show;

/// Default ACK timeout for a downstream: long enough for a busy EHR to commit a message,
/// short enough that the sender (whose own timeout is typically 10–30 s) hears our AE first.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Default connect timeout for a downstream: a LAN peer answers in milliseconds; five seconds
/// covers a busy one without stalling the sender for long.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default retries after a failed delivery attempt (so three attempts in all). Each attempt
/// that fails closes its connection, so a late ACK can never be taken for the next message's.
pub const DEFAULT_RETRIES: u32 = 2;

/// First backoff between attempts; doubled each retry, with full jitter, up to the cap.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(200);

/// Largest backoff between attempts.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Default idle timeout of an inbound connection: ten minutes, as interface engines expect
/// long-lived, mostly idle links (and the GCP/AWS NATs drop idle flows after ~10 min anyway).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Default limit from a frame's start byte to its end: a whole message must arrive within a
/// minute. An idle timeout alone lets a slow sender hold a connection forever, one byte at a
/// time (slowloris).
pub const DEFAULT_FRAME_DEADLINE: Duration = Duration::from_secs(60);

/// Default readiness window: a downstream reached within the last minute counts as up. Long
/// enough that a quiet link is not probed more than once a minute, short enough that a load
/// balancer hears of a dead receiver before senders pile up.
pub const DEFAULT_READINESS_WINDOW: Duration = Duration::from_secs(60);

/// Default TLS handshake timeout: a handshake is a few round trips; ten seconds is generous.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long writing an ACK to a sender (or a message to a downstream) may take before the
/// peer is deemed stuck and the connection closed.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default cap on inbound connections per worker; beyond it new connections are accepted and
/// closed at once (with a log line and a counter), so the listen queue never fills silently.
pub const DEFAULT_MAX_CONNECTIONS_PER_WORKER: usize = 10_000;

/// How long SIGTERM waits for in-flight messages before the process exits anyway.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What the sender hears when the downstream fails after every retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDownstreamFailure {
    /// A generated AE (original mode) or CE (enhanced mode) with ERR 207 naming the failure.
    Nak,
    /// No answer: the connection is closed, and the sender resends on a new one.
    Close,
}

/// What a listener does with a message whose MSH-10 (message control ID) is empty or absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingControlId {
    /// Forward it: the receiver decides (its ACK's MSA-2 is then empty too). Counted, and
    /// warned about once per connection.
    Forward,
    /// Refuse it with AR and ERR 101 (required field missing); it is not forwarded.
    Reject,
}

/// What a listener does with a batch (`FHS`/`BHS` … `BTS`/`FTS` in one frame).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BatchMode {
    /// Refuse it whole with AR (ERR 100): nothing in it is forwarded. The default: a frame is
    /// meant to hold one message, and not every receiver takes batches.
    #[default]
    Reject,
    /// Send the whole frame to the receiver as one unit and hand its answer back byte for
    /// byte (passthrough listeners only: the relay cannot vouch for a batch it holds).
    Forward,
    /// Deliver each message on its own under the listener's ACK mode, and answer with one
    /// acknowledgement batch naming each message's outcome.
    Split,
}

/// Whether a listener checks that a message is in the character set it declares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CharsetMode {
    /// Bytes pass unchanged and unchecked (the default: the receiver decides).
    #[default]
    Passthrough,
    /// The payload must decode in the character set MSH-18 names (or the listener's
    /// `default_charset` when MSH-18 is empty); otherwise AR with ERR 102 (bytes that are not
    /// that set) or 103 (a name that is no character set), and nothing is forwarded.
    Check,
}

/// Where the audit trail (a record per message: who sent what to where, and the answer)
/// goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuditConfig {
    /// Nowhere (the default).
    #[default]
    Off,
    /// Into the log, at info, target `audit`.
    Log,
    /// Appended to this file, one JSON object per line; reopened on SIGHUP.
    File(PathBuf),
}

/// Who answers the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// The downstream's own ACK, byte for byte; a generated AE/CE (or a close) only when the
    /// downstream cannot be reached or does not answer properly.
    Passthrough,
    /// The relay answers on receipt (AA/CA as MSH-15/16 and the policy say) and forwards
    /// afterwards, without durability: a crash or a refusing receiver loses messages. For
    /// benchmarks and senders that cannot wait; announced loudly at start-up.
    Local,
    /// The relay answers AA/CA only once the message is in the worker's journal and the
    /// journal is fsync'ed ([`JournalConfig`]); a forwarder delivers it afterwards, retrying
    /// for as long as it takes, and again after a crash.
    Durable,
}

/// Default wait for more messages to share a journal commit (one fdatasync): an upper bound,
/// reached only while earlier commits are still in flight and more senders are expected; a
/// lone message is committed at once.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(1);

/// Default cap on one worker's journal (undelivered messages plus not yet reclaimed segments):
/// a day of a busy lab feed (100 msg/s of 4 KiB is 35 GB/day, so about 7 hours of it) and well
/// within a small disk.
pub const DEFAULT_JOURNAL_MAX_BYTES: u64 = 8 << 30;

/// Default segment size: big enough that rotation (a file create and two fsyncs) is rare,
/// small enough that a delivered segment is reclaimed soon.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Default memory a worker keeps of undelivered messages; beyond it, messages are read back
/// from the journal when their turn comes, so a receiver that is down for hours costs disk,
/// not memory.
pub const DEFAULT_JOURNAL_MEMORY_BYTES: usize = 64 << 20;

/// Default number of downstream connections a worker's durable forwarder uses per `per-core`
/// downstream. Each sender connection's messages go to one lane, in order; different senders
/// are delivered in parallel, as passthrough would.
pub const DEFAULT_FORWARD_LANES: usize = 8;

/// Default cap on the messages a `durable` listener's duplicate window remembers (when the
/// window is turned on): about 100 bytes each plus the ACK, so some 30 MB; at 100 msgs/s that
/// is over a quarter of an hour of traffic.
pub const DEFAULT_DUPLICATE_WINDOW_ENTRIES: usize = 100_000;

/// Longest duplicate window accepted: senders resend within minutes, while a message resent on
/// purpose (an operator replaying a day's feed after the receiver lost it) must not be
/// swallowed as a duplicate.
pub const MAX_DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Most entries a duplicate window may be given (about 3 GB at the size above).
pub const MAX_DUPLICATE_WINDOW_ENTRIES: usize = 10_000_000;

/// What happens to a message arriving when the journal is at its size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenJournalFull {
    /// The sender gets an AE/CE ("journal full") and may resend later.
    Nak,
    /// The sender's connection is not read until delivered messages free space (the sender
    /// waits, as with a slow receiver in passthrough mode).
    Pause,
}

/// The `durable` ACK mode's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// The directory holding one sub-directory per worker (`worker-0`, …) and the dead letters.
    pub dir: PathBuf,
    /// Longest a message waits for others to share its commit (see [`DEFAULT_COMMIT_INTERVAL`]).
    pub commit_interval: Duration,
    /// Cap on one worker's journal, in bytes of records. On disk a worker also holds the
    /// unwritten rest of its current segment and up to two spare segments (a delivered
    /// segment's file to be reused, and one of zeros: prepared ahead so that syncs do not
    /// change the file size): up to three segments more than this.
    pub max_bytes: u64,
    /// Size at which a worker starts a new segment file.
    pub segment_bytes: u64,
    /// Memory a worker may keep of undelivered messages.
    pub memory_bytes: usize,
    /// Parallel connections per `per-core` downstream for delivering journaled messages.
    pub forward_lanes: usize,
    /// Full-journal policy.
    pub when_full: WhenJournalFull,
    /// Write commits with `O_DIRECT` (`O_DSYNC` for those holding messages) where the
    /// filesystem supports it; otherwise, or when false, through the page cache and
    /// `fdatasync`. Equally durable; direct costs less CPU per commit.
    pub direct_io: bool,
}

impl JournalConfig {
    /// A journal in `dir` with the defaults.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            max_bytes: DEFAULT_JOURNAL_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            memory_bytes: DEFAULT_JOURNAL_MEMORY_BYTES,
            forward_lanes: DEFAULT_FORWARD_LANES,
            when_full: WhenJournalFull::Nak,
            direct_io: true,
        }
    }
}

/// A range of source addresses in CIDR form (`10.0.0.0/8`, `192.168.1.7`, `::1/128`), for a
/// listener's allowlist. An IPv4 peer seen as an IPv4-mapped IPv6 address matches IPv4 ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceNet {
    addr: IpAddr,
    prefix: u8,
}

impl SourceNet {
    /// Whether `ip` is inside this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for SourceNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for SourceNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The name [`ListenerConfig::plain`] gives a listener (and a config file's `[[listener]]`
/// without a `name`).
pub const DEFAULT_LISTENER_NAME: &str = "listener";

/// A listener: one address with its own TLS, ACK mode, framing and limits. A relay has one or
/// more; they all share the downstreams and routes.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// A name for logs and the `listener` label of metrics; unique within a relay.
    pub name: String,
    /// Address to bind; port 0 picks a free port (printed at start).
    pub addr: SocketAddr,
    /// TLS termination, if any; reloadable on SIGHUP.
    pub tls: Option<netio::tls::ReloadableServerConfig>,
    /// Where refused TLS clients are counted (the verifier counts most reasons itself; the
    /// session adds those rustls decides before the verifier runs).
    pub tls_rejections: Arc<netio::tls::TlsRejections>,
    /// Framing, size limit and tolerances.
    pub framing: FramingConfig,
    /// Rewrite LF and CRLF segment terminators to CR before the message is read and forwarded
    /// (`mllp::hl7::normalize_segment_terminators`: a LF inside text such as OBX-5 is kept).
    /// Off by default: bytes then pass unchanged.
    pub normalize_segment_terminators: bool,
    /// Who answers the sender.
    pub ack_mode: AckMode,
    /// When ACKs are sent (relay-generated ones; passthrough ACKs are the downstream's).
    pub ack_policy: AckPolicy,
    /// What the sender hears when the downstream fails.
    pub on_downstream_failure: OnDownstreamFailure,
    /// What happens to a message without MSH-10.
    pub missing_control_id: MissingControlId,
    /// What happens to a batch frame.
    pub batch: BatchMode,
    /// Whether payloads are checked against their character set.
    pub charset: CharsetMode,
    /// The character set of a message whose MSH-18 is empty (HL7: ASCII), for `charset =
    /// "check"` and for transcoding towards a downstream.
    pub default_charset: Charset,
    /// Idle timeout between messages.
    pub idle_timeout: Duration,
    /// Limit from a frame's start byte to its end.
    pub frame_deadline: Duration,
    /// TLS handshake timeout.
    pub handshake_timeout: Duration,
    /// Limit for writing one ACK.
    pub write_timeout: Duration,
    /// Inbound connections per worker on this listener before new ones are refused.
    pub max_connections_per_worker: usize,
    /// Source addresses allowed to connect; empty allows every source. Others are closed at
    /// once, before any TLS or MLLP byte, with a log line and a counter.
    pub allowed_sources: Vec<SourceNet>,
    /// `durable` mode: the window of recently accepted messages that answers a resend with
    /// its original ACK; `None` (the default) queues every message it receives.
    pub duplicates: Option<DuplicateWindowConfig>,
    /// The sender identities this listener accepts, tried in order; empty (the default):
    /// every MSH-3/MSH-4 is taken as it comes.
    pub senders: Vec<SenderRule>,
}

/// A `durable` listener's duplicate window: how long it remembers an accepted message, and how
/// many at most (the oldest go first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateWindowConfig {
    pub max_age: Duration,
    pub max_entries: usize,
}

impl DuplicateWindowConfig {
    /// A window of `max_age` with the default number of entries.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            max_entries: DEFAULT_DUPLICATE_WINDOW_ENTRIES,
        }
    }
}

/// How a downstream's connections are shared among workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkPolicy {
    /// Each worker keeps its own pooled connections: fastest.
    #[default]
    PerCore,
    /// Exactly one connection for the whole relay, owned by worker 0; the other workers hand
    /// their messages over through a bounded queue. For receivers that accept one connection
    /// only or need one global order.
    Single,
}

/// A downstream link.
#[derive(Debug, Clone)]
pub struct DownstreamConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// TLS towards it, with the name to present (SNI) and verify.
    pub tls: Option<ClientTls>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// ACK timeout.
    pub ack_timeout: Duration,
    /// Retries after the first failed attempt.
    pub retries: u32,
    /// First backoff.
    pub backoff_base: Duration,
    /// Largest backoff.
    pub backoff_cap: Duration,
    /// Framing of the link (the downstream's ACKs are deframed with it; its tolerances apply
    /// to what the downstream sends).
    pub framing: FramingConfig,
    /// How connections to it are shared among workers.
    pub link: LinkPolicy,
    /// The certificate the relay presents to it (mutual TLS), for expiry warnings and the
    /// expiry gauge; `None` without one.
    pub client_certificate: Option<netio::tls::CertInfo>,
    /// Whether `/readyz` requires this downstream to have been reached recently (the
    /// default); off for a receiver whose absence must not take the relay out of a load
    /// balancer.
    pub ready_check: bool,
    /// Transcode each message into this character set (UTF-8 only) before sending it, with
    /// MSH-18 set to say so, and the receiver's ACK back into the sender's set; `None` (the
    /// default): bytes pass unchanged.
    pub transcode_to: Option<Charset>,
}

/// The whole relay.
#[derive(Debug, Clone)]
pub struct Config {
    /// The listeners, at least one, with unique names and addresses that do not overlap (see
    /// [`addresses_overlap`]); indexed in this order everywhere (metrics, sessions). The first
    /// one is the address printed first at start-up and returned by
    /// [`RelayHandle::listen_addr`](crate::RelayHandle::listen_addr).
    pub listeners: Vec<ListenerConfig>,
    /// The downstream links, by index (names in [`DownstreamConfig::name`]).
    pub downstreams: Vec<DownstreamConfig>,
    /// Routing rules, tried in order; the first match wins.
    pub routes: Vec<Route>,
    /// Where messages that match no rule go; `None`: they are refused with an AR (ERR 200 or
    /// 201) and not forwarded.
    pub default_downstream: Option<usize>,
    /// Worker threads, one runtime each, pinned to cores in order.
    pub workers: usize,
    /// Whether to pin worker `i` to the `i`-th CPU this process may run on (its affinity mask,
    /// so `taskset` and container cpusets are respected).
    pub pin_workers: bool,
    /// The I/O driver.
    pub driver: Driver,
    /// Where to serve Prometheus metrics (`GET /metrics`) and the health checks (`GET
    /// /healthz`, `GET /readyz`), if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// How recently each downstream must have been reached for `/readyz` to answer ready
    /// (an idle one is probed with a TCP connect when asked).
    pub readiness_window: Duration,
    /// The audit trail.
    pub audit: AuditConfig,
    /// How long shutdown waits for in-flight messages.
    pub shutdown_grace: Duration,
    /// The journal, required when any listener's ACK mode is [`AckMode::Durable`] (one per
    /// worker, shared by every durable listener).
    pub journal: Option<JournalConfig>,
}

/// The configuration in force, shared by every worker, and how many times it was replaced. A
/// worker compares the generation (one relaxed load) before each message and connection, and
/// takes a copy of its own when it moved; readers never block the relay's hot path.
#[derive(Debug)]
pub struct Live {
    current: std::sync::RwLock<Arc<Config>>,
    generation: std::sync::atomic::AtomicU64,
}

impl Live {
    /// `config`, in force from the start (generation 0).
    pub fn new(config: Arc<Config>) -> Self {
        Self {
            current: std::sync::RwLock::new(config),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Config> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// How many times it was replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Puts `config` in force: the workers take it before their next message.
    pub fn replace(&self, config: Arc<Config>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Config {
    /// A relay with one listener and one downstream that receives every message.
    pub fn single(listener: ListenerConfig, downstream: DownstreamConfig) -> Self {
        Self {
            listeners: vec![listener],
            downstreams: vec![downstream],
            routes: Vec::new(),
            default_downstream: Some(0),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            pin_workers: true,
            driver: Driver::Auto,
            metrics_addr: None,
            readiness_window: DEFAULT_READINESS_WINDOW,
            audit: AuditConfig::Off,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            journal: None,
        }
    }

    /// Whether any listener answers with `mode`.
    pub fn uses_ack_mode(&self, mode: AckMode) -> bool {
        self.listeners.iter().any(|l| l.ack_mode == mode)
    }

    /// Why these listeners cannot run together: no listener at all, two with one name, or two
    /// whose addresses overlap. Config files report the same problems under their keys.
    ///
    /// # Errors
    /// A sentence naming the listeners concerned.
    pub fn check_listeners(&self) -> Result<(), String> {
        if self.listeners.is_empty() {
            return Err("a relay needs at least one listener".to_owned());
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            for earlier in &self.listeners[..i] {
                if earlier.name == listener.name {
                    return Err(format!(
                        "two listeners are named {:?}: names must be unique (logs and metrics \
                         tell listeners apart by name)",
                        listener.name
                    ));
                }
                if addresses_overlap(earlier.addr, listener.addr) {
                    return Err(format!(
                        "listeners {:?} ({}) and {:?} ({}) would share an address",
                        earlier.name, earlier.addr, listener.name, listener.addr
                    ));
                }
            }
        }
        Ok(())
    }
}

impl DownstreamConfig {
    /// A plain downstream at `addr` with default timeouts and retries.
    pub fn plain(name: &str, addr: SocketAddr) -> Self {
        Self {
            name: name.to_string(),
            addr,
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            retries: DEFAULT_RETRIES,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            framing: FramingConfig::MLLP,
            link: LinkPolicy::PerCore,
            transcode_to: None,
            ready_check: true,
            client_certificate: None,
        }
    }
}

/// Whether two listen addresses would take the same connections: the same port (not 0, which
/// picks a free port each time) and the same IP, or one of them the unspecified address that
/// covers the other (`0.0.0.0` covers IPv4 addresses, `[::]` every address, as a dual-stack
/// socket does). The workers bind with `SO_REUSEPORT`, so the kernel would not refuse such a
/// pair: it would split or steal connections silently.
pub fn addresses_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |wide: IpAddr, other: IpAddr| wide.is_unspecified() && (wide.is_ipv6() || other.is_ipv4());
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}

impl ListenerConfig {
    /// A plain passthrough listener at `addr` named `listener`, with default limits.
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            name: DEFAULT_LISTENER_NAME.to_owned(),
            addr,
            tls: None,
            tls_rejections: Arc::default(),
            framing: FramingConfig::MLLP,
            normalize_segment_terminators: false,
            ack_mode: AckMode::Passthrough,
            ack_policy: AckPolicy::Negotiated,
            on_downstream_failure: OnDownstreamFailure::Nak,
            missing_control_id: MissingControlId::Forward,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            frame_deadline: DEFAULT_FRAME_DEADLINE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections_per_worker: DEFAULT_MAX_CONNECTIONS_PER_WORKER,
            allowed_sources: Vec::new(),
            duplicates: None,
            senders: Vec::new(),
            batch: BatchMode::Reject,
            charset: CharsetMode::Passthrough,
            default_charset: Charset::ASCII,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_overlap_on_one_port_when_one_covers_the_other() {
        let overlap = |a: &str, b: &str| {
            let (a, b): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(addresses_overlap(a, b), addresses_overlap(b, a), "{a} {b}");
            addresses_overlap(a, b)
        };
        assert!(overlap("127.0.0.1:2575", "127.0.0.1:2575"));
        assert!(overlap("0.0.0.0:2575", "10.1.2.3:2575"));
        assert!(
            overlap("[::]:2575", "10.1.2.3:2575"),
            "a dual-stack wildcard"
        );
        assert!(overlap("[::]:2575", "[::1]:2575"));
        assert!(overlap("0.0.0.0:2575", "0.0.0.0:2575"));
        assert!(!overlap("127.0.0.1:2575", "127.0.0.1:2576"));
        assert!(!overlap("127.0.0.1:2575", "127.0.0.2:2575"));
        assert!(
            !overlap("0.0.0.0:2575", "[::1]:2575"),
            "IPv4's wildcard covers IPv4 only"
        );
        assert!(
            !overlap("127.0.0.1:0", "127.0.0.1:0"),
            "port 0 picks a port each time"
        );
    }

    #[test]
    fn listeners_need_unique_names_and_addresses() {
        let downstream = DownstreamConfig::plain("ehr", "127.0.0.1:1".parse().unwrap());
        let named = |name: &str, addr: &str| ListenerConfig {
            name: name.to_owned(),
            ..ListenerConfig::plain(addr.parse().unwrap())
        };
        let mut config = Config::single(named("adt", "127.0.0.1:2575"), downstream);
        assert_eq!(config.check_listeners(), Ok(()));
        config.listeners.push(named("lab", "127.0.0.1:2576"));
        assert_eq!(config.check_listeners(), Ok(()));
        assert!(config.uses_ack_mode(AckMode::Passthrough));
        assert!(!config.uses_ack_mode(AckMode::Local));
        config.listeners[1].ack_mode = AckMode::Local;
        assert!(config.uses_ack_mode(AckMode::Local));

        config.listeners[1].name = "adt".to_owned();
        let error = config.check_listeners().unwrap_err();
        assert!(error.contains("two listeners are named \"adt\""), "{error}");
        config.listeners[1] = named("lab", "0.0.0.0:2575");
        let error = config.check_listeners().unwrap_err();
        assert!(
            error.contains("\"adt\" (127.0.0.1:2575) and \"lab\" (0.0.0.0:2575)"),
            "{error}"
        );
        config.listeners.clear();
        assert!(config.check_listeners().is_err());
    }
}
