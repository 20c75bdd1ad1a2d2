//! Counters and latency histograms shared by the workers, and their Prometheus text exposition
//! (served by [`serve`] at `GET /metrics`).
//!
//! Plain relaxed atomics in one shared struct: each increment is an uncontended
//! read-modify-write on a counter that the message's own worker mostly owns, far below the cost
//! of the message's syscalls. Per-worker sharding comes if a profile ever shows contention.
//!
//! Besides the relay-wide series, each listener has its own counters ([`ListenerStats`],
//! exposed as `mllp_relay_listener_*{listener="<name>"}`) and so has each downstream
//! ([`DownstreamStats`], `mllp_relay_downstream_*{downstream="<name>"}`). They live in vectors
//! indexed like [`Config::listeners`](crate::config::Config::listeners) and
//! [`Config::downstreams`](crate::config::Config::downstreams), fixed at start: the hot path
//! indexes and increments, with no lock, map or allocation. The relay-wide series stay what
//! they were (the sum over listeners), so scrapers of one-listener relays see no change; the
//! labelled series carry their own names so that no family mixes totals with their parts.
//!
//! Nothing here holds message content: counters, codes and durations only.

mod process;

pub use process::GIT_COMMIT;

use std::fmt::{self, Write as _};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mllp::ack::AckCode;
use mllp::frame::EventCode;
use mllp::hl7::{HeaderEvent, HeaderEventCode};

use netio::tls::{RejectReason, TlsRejections};

/// Why a downstream delivery attempt failed; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownstreamFailureKind {
    /// The TCP connect was refused or failed.
    Connect,
    /// The TCP connect did not finish in time.
    ConnectTimeout,
    /// The TLS handshake with the downstream failed.
    Handshake,
    /// Writing the message failed.
    Send,
    /// No ACK within the ACK timeout.
    AckTimeout,
    /// The downstream closed the connection without acknowledging.
    Closed,
    /// Reading the ACK failed.
    Receive,
    /// The downstream broke MLLP framing.
    Framing,
    /// The downstream's answer was not an ACK.
    NotAnAck,
    /// The ACK's MSA-2 was not the message's MSH-10.
    WrongControlId,
    /// A `single` link's handoff queue was full.
    HandoffFull,
}

impl DownstreamFailureKind {
    /// Every kind, in counter order.
    pub const ALL: [Self; 11] = [
        Self::Connect,
        Self::ConnectTimeout,
        Self::Handshake,
        Self::Send,
        Self::AckTimeout,
        Self::Closed,
        Self::Receive,
        Self::Framing,
        Self::NotAnAck,
        Self::WrongControlId,
        Self::HandoffFull,
    ];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::ConnectTimeout => "connect_timeout",
            Self::Handshake => "handshake",
            Self::Send => "send",
            Self::AckTimeout => "ack_timeout",
            Self::Closed => "closed",
            Self::Receive => "receive",
            Self::Framing => "framing",
            Self::NotAnAck => "not_an_ack",
            Self::WrongControlId => "wrong_control_id",
            Self::HandoffFull => "handoff_full",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The counters of one listener (the relay-wide ones in [`Stats`] count it too).
#[derive(Debug, Default)]
pub struct ListenerStats {
    name: String,
    /// Inbound connections accepted.
    pub connections_accepted: AtomicU64,
    /// Inbound connections refused at this listener's per-worker limit.
    pub connections_refused: AtomicU64,
    /// Inbound connections refused by this listener's source allowlist.
    pub connections_refused_source: AtomicU64,
    /// Inbound connections open now.
    pub connections_open: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_handshake_failures: AtomicU64,
    /// Frames received from senders.
    pub messages_in: AtomicU64,
    /// Bytes received from senders.
    pub bytes_in: AtomicU64,
    /// ACK payload bytes written to senders.
    pub bytes_out: AtomicU64,
    /// AR sent for frames without a readable MSH.
    pub rejects_bad_header: AtomicU64,
    /// AR sent for messages that match no route.
    pub rejects_unrouted: AtomicU64,
    /// AR sent for messages whose MSH-3/MSH-4 the listener's sender rules do not allow.
    pub rejects_sender: AtomicU64,
    /// AR sent for messages not in their declared character set (check or transcoding).
    pub rejects_charset: AtomicU64,
    /// Batch frames (FHS/BHS) received.
    pub batches_in: AtomicU64,
    /// Batch frames refused whole (`batch = "reject"`, or a structure or count error).
    pub rejects_batch: AtomicU64,
    /// Messages whose MSH-10 was empty (forwarded or refused, as the listener says).
    pub missing_control_id: AtomicU64,
    /// Messages whose LF/CRLF segment terminators were rewritten to CR.
    pub segment_terminators_repaired: AtomicU64,
    /// Connections closed for a framing error.
    pub framing_errors: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Connections closed because a frame did not complete within the frame deadline.
    pub frame_deadline_expired: AtomicU64,
    /// `durable` mode: resends answered from the duplicate window instead of queued again.
    pub duplicates_answered: AtomicU64,
    /// `durable` mode: messages that reused a remembered control ID with other content.
    pub duplicate_window_reused_ids: AtomicU64,
    acks_from_downstream: [AtomicU64; AckCode::ALL.len()],
    acks_generated: [AtomicU64; AckCode::ALL.len()],
    header_events: [AtomicU64; HeaderEventCode::ALL.len()],
    framing_events: [AtomicU64; EventCode::ALL.len()],
    /// Messages taken from each sender identity, named as in the listener's rules.
    senders: Vec<(String, AtomicU64)>,
}

impl ListenerStats {
    /// Counters for the listener called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// Counters for the listener called `name` whose sender identities are `senders`.
    pub fn with_senders<'a>(name: &str, senders: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            senders: senders
                .into_iter()
                .map(|s| (s.to_owned(), AtomicU64::new(0)))
                .collect(),
            ..Self::new(name)
        }
    }

    /// Messages taken from the sender identity called `name` (0 for an unknown name).
    pub fn sender_messages(&self, name: &str) -> u64 {
        self.senders
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, count)| Stats::get(count))
    }

    /// The listener's name (the `listener` label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// ACKs with `code` sent to this listener's senders, as the downstream wrote them
    /// (`generated == false`) or as the relay made them.
    pub fn acks(&self, code: AckCode, generated: bool) -> u64 {
        let counters = if generated {
            &self.acks_generated
        } else {
            &self.acks_from_downstream
        };
        Stats::get(&counters[code_index(code)])
    }

    /// Headers read past with `code` (counted relay-wide too).
    pub fn header_events(&self, code: HeaderEventCode) -> u64 {
        Stats::get(&self.header_events[code.index()])
    }

    /// Framing tolerances used with `code` (the relay-wide total counts them all).
    pub fn framing_events(&self, code: EventCode) -> u64 {
        Stats::get(&self.framing_events[code.index()])
    }
}

/// A counter kept both relay-wide (in [`Stats`]) and for the listener concerned (in its
/// [`ListenerStats`]); [`Stats::count`] moves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerCounter {
    ConnectionsAccepted,
    ConnectionsRefused,
    ConnectionsRefusedSource,
    TlsHandshakeFailures,
    MessagesIn,
    BytesIn,
    BytesOut,
    RejectsBadHeader,
    RejectsUnrouted,
    RejectsSender,
    RejectsCharset,
    BatchesIn,
    RejectsBatch,
    MissingControlId,
    SegmentTerminatorsRepaired,
    FramingErrors,
    IdleTimeouts,
    FrameDeadlineExpired,
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The counters of one downstream.
#[derive(Debug, Default)]
pub struct DownstreamStats {
    name: String,
    /// When a delivery to it or a new connection to it last succeeded (Unix ms; 0: never).
    last_reached_ms: AtomicU64,
    /// 1 when the last attempt to reach it (a delivery, a connection, a readiness probe)
    /// failed, 0 when it succeeded or none was made yet.
    down: AtomicU64,
    /// Failed delivery attempts to it, by kind.
    failures: [AtomicU64; DownstreamFailureKind::ALL.len()],
    /// Messages the downstream took (acknowledged with any code, or took without an ACK when
    /// MSH-15 asked for none).
    pub messages: AtomicU64,
    /// Payload bytes of those messages.
    pub bytes: AtomicU64,
    /// Delivery attempts that failed (each retry counts).
    pub failed_attempts: AtomicU64,
    acks: [AtomicU64; AckCode::ALL.len()],
}

impl DownstreamStats {
    /// Counters for the downstream called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// The downstream's name (the `downstream` label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// ACKs with `code` read from this downstream.
    pub fn acks(&self, code: AckCode) -> u64 {
        Stats::get(&self.acks[code_index(code)])
    }

    /// Counts one message the downstream took, with its ACK's code if it sent one.
    pub(crate) fn delivered(&self, bytes: usize, code: Option<AckCode>) {
        self.reached();
        Stats::bump(&self.messages);
        Stats::add(&self.bytes, bytes);
        if let Some(code) = code {
            Stats::bump(&self.acks[code_index(code)]);
        }
    }
}

impl DownstreamStats {
    /// Notes that the downstream was just reached (a delivery, a connection, a probe).
    pub fn reached(&self) {
        self.last_reached_ms.store(unix_ms(), Ordering::Relaxed);
        self.down.store(0, Ordering::Relaxed);
    }

    /// Notes that an attempt to reach it failed (counted in `failed_attempts` by its caller).
    pub fn unreachable(&self) {
        self.down.store(1, Ordering::Relaxed);
    }

    /// Counts a failed delivery attempt of `kind` (its caller counts `failed_attempts`).
    pub(crate) fn failed(&self, kind: DownstreamFailureKind) {
        Stats::bump(&self.failures[kind.index()]);
        self.unreachable();
    }

    /// Failed delivery attempts to it of `kind`.
    pub fn failures(&self, kind: DownstreamFailureKind) -> u64 {
        Stats::get(&self.failures[kind.index()])
    }

    /// Whether the last attempt to reach it succeeded (or none was made yet).
    pub fn is_up(&self) -> bool {
        self.down.load(Ordering::Relaxed) == 0
    }

    /// When it was last reached (Unix ms; 0: never).
    pub fn last_reached_ms(&self) -> u64 {
        self.last_reached_ms.load(Ordering::Relaxed)
    }
}

/// The relay's counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Workers whose listeners are registered and accepting (readiness).
    pub workers_accepting: AtomicU64,
    /// Audit records dropped because the file writer could not keep up.
    pub audit_records_dropped: AtomicU64,
    /// 1 when the last reload (SIGHUP) failed in some part (that part's previous
    /// configuration stays in force), 0 when it succeeded or none was made.
    config_reload_failed: AtomicU64,
    /// When the configuration was last loaded or reloaded (Unix ms).
    config_loaded_ms: AtomicU64,
    /// Inbound connections accepted.
    pub connections_accepted: AtomicU64,
    /// Inbound connections refused because the worker was at its limit.
    pub connections_refused: AtomicU64,
    /// Inbound connections closed because their source address is not on the allowlist.
    pub connections_refused_source: AtomicU64,
    /// Inbound connections open now.
    pub connections_open: AtomicU64,
    /// TLS handshakes that failed (bad certificate, plaintext on a TLS port, timeout).
    pub tls_handshake_failures: AtomicU64,
    /// Frames received from senders.
    pub messages_in: AtomicU64,
    /// Payload bytes received from senders.
    pub bytes_in: AtomicU64,
    /// Messages the downstream acknowledged (whatever its code).
    pub messages_delivered: AtomicU64,
    /// ACKs sent to senders as the downstream wrote them.
    pub acks_passed_through: AtomicU64,
    /// AE/CE generated because the downstream failed.
    pub naks_downstream_failed: AtomicU64,
    /// Connections closed instead of a NAK (`on_downstream_failure = close`).
    pub closes_downstream_failed: AtomicU64,
    /// AR sent for frames without a readable MSH.
    pub rejects_bad_header: AtomicU64,
    /// AR sent for messages that match no route (ERR 200/201).
    pub rejects_unrouted: AtomicU64,
    /// AR sent for messages whose MSH-3/MSH-4 the listener's sender rules do not allow.
    pub rejects_sender: AtomicU64,
    /// AR sent for messages not in their declared character set.
    pub rejects_charset: AtomicU64,
    /// Batch frames (FHS/BHS) received.
    pub batches_in: AtomicU64,
    /// Batch frames refused whole.
    pub rejects_batch: AtomicU64,
    /// Messages transcoded for a downstream (`transcode_to`).
    pub messages_transcoded: AtomicU64,
    /// Receivers' ACKs put back into the sender's character set.
    pub acks_transcoded: AtomicU64,
    /// Receivers' ACKs that were not valid UTF-8, passed back unchanged.
    pub acks_not_transcoded: AtomicU64,
    /// Characters of receivers' ACKs the sender's character set cannot hold (sent as `?`).
    pub unmappable_characters: AtomicU64,
    /// Messages whose MSH-10 was empty (forwarded or refused, as the listener says).
    pub missing_control_id: AtomicU64,
    /// Messages whose LF/CRLF segment terminators were rewritten to CR.
    pub segment_terminators_repaired: AtomicU64,
    /// Connections closed for a framing error.
    pub framing_errors: AtomicU64,
    /// Tolerated framing deviations (all codes together).
    pub framing_events: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Connections closed because a frame did not complete within the frame deadline.
    pub frame_deadline_expired: AtomicU64,
    /// Session tasks that panicked (contained: only their connection was lost).
    pub session_panics: AtomicU64,
    /// Payload bytes written to the downstream.
    pub bytes_forwarded: AtomicU64,
    /// `single` links: messages waiting in the cross-core handoff queues now.
    pub handoff_queue_depth: AtomicU64,
    /// `local` mode: messages waiting to be forwarded now.
    pub local_queue_depth: AtomicU64,
    /// `local` mode: messages refused with AE/CE because the forwarding queue was full.
    pub local_queue_full: AtomicU64,
    /// `local` mode: messages acknowledged to the sender and never delivered.
    pub local_lost: AtomicU64,
    /// `local` mode: messages acknowledged to the sender that the receiver then refused.
    pub local_refused_after_ack: AtomicU64,
    /// ACK payload bytes written to senders.
    pub bytes_out: AtomicU64,
    /// `durable` mode: messages in the journals not yet delivered (nor dead-lettered).
    pub journal_messages: AtomicU64,
    /// `durable` mode: bytes of the journals' segment files.
    pub journal_bytes: AtomicU64,
    /// `durable` mode: undelivered messages found at start-up.
    pub journal_recovered: AtomicU64,
    /// `durable` mode: segments found with a torn or corrupt tail at start-up.
    pub journal_damaged_tails: AtomicU64,
    /// `durable` mode: journals that failed (a write or fdatasync error) and refuse messages.
    pub journal_failures: AtomicU64,
    /// `durable` mode: commits (one fdatasync each).
    pub journal_commits: AtomicU64,
    /// `durable` mode: segments begun in a delivered segment's file (reused, not zero-filled
    /// or created).
    pub journal_segments_reused: AtomicU64,
    /// `durable` mode: messages answered AE/CE because the journal was full.
    pub journal_full_naks: AtomicU64,
    /// `durable` mode: messages answered AE/CE because the journal had failed.
    pub journal_failed_naks: AtomicU64,
    /// `durable` mode: messages the receiver refused (AE/AR/CE/CR), moved to the dead letters.
    pub dead_letters: AtomicU64,
    /// `durable` mode: delivery rounds that failed (every retry) and will be tried again.
    pub durable_retries: AtomicU64,
    /// `durable` mode: fdatasync latency per commit.
    pub journal_fsync: Histogram,
    /// `durable` mode: messages per commit.
    pub journal_batch: CountHistogram,
    /// `durable` mode: per worker, when its oldest undelivered message was taken in (ms since
    /// the epoch; 0: none). Workers beyond the array share the last slot.
    journal_oldest_ms: [AtomicU64; OLDEST_SLOTS],
    /// Frame complete → message written to the downstream.
    pub latency_forward: Histogram,
    /// Message written → the downstream's ACK read.
    pub latency_ack_wait: Histogram,
    /// Frame complete → answer written to the sender (the relay's whole share of the round trip,
    /// receiver included).
    pub latency_total: Histogram,
    downstream_failures: [AtomicU64; DownstreamFailureKind::ALL.len()],
    acks_from_downstream: [AtomicU64; AckCode::ALL.len()],
    acks_generated: [AtomicU64; AckCode::ALL.len()],
    header_events: [AtomicU64; HeaderEventCode::ALL.len()],
    /// Per listener, indexed like `Config::listeners` (empty in a default `Stats`).
    listeners: Vec<ListenerStats>,
    /// Per downstream, indexed like `Config::downstreams` (empty in a default `Stats`).
    downstreams: Vec<DownstreamStats>,
}

/// Workers whose oldest undelivered message is tracked one by one.
const OLDEST_SLOTS: usize = 32;

impl Stats {
    /// Counters for a relay with these listeners and downstreams (names, in config order).
    pub fn new<'a>(
        listeners: impl IntoIterator<Item = &'a str>,
        downstreams: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self {
            listeners: listeners.into_iter().map(ListenerStats::new).collect(),
            downstreams: downstreams.into_iter().map(DownstreamStats::new).collect(),
            ..Self::default()
        }
    }

    /// Notes a reload: whether every part of it succeeded, and when.
    pub fn reloaded(&self, succeeded: bool) {
        self.config_reload_failed
            .store(u64::from(!succeeded), Ordering::Relaxed);
        self.config_loaded_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Counters for the relay `config` describes.
    pub fn for_config(config: &crate::config::Config) -> Self {
        let mut stats = Self::new(
            std::iter::empty(),
            config.downstreams.iter().map(|d| d.name.as_str()),
        );
        stats.listeners = config
            .listeners
            .iter()
            .map(|l| {
                ListenerStats::with_senders(&l.name, l.senders.iter().map(|s| s.name.as_str()))
            })
            .collect();
        stats.config_loaded_ms.store(unix_ms(), Ordering::Relaxed);
        stats
    }

    /// Every listener's counters, indexed like `Config::listeners`.
    pub fn listeners(&self) -> &[ListenerStats] {
        &self.listeners
    }

    /// Listener `index`'s counters.
    ///
    /// # Panics
    /// When there is no such listener (the workers' `Stats` has one entry per listener).
    pub fn listener(&self, index: usize) -> &ListenerStats {
        &self.listeners[index]
    }

    /// The counters of the listener called `name`, if there is one.
    pub fn listener_named(&self, name: &str) -> Option<&ListenerStats> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Every downstream's counters, indexed like `Config::downstreams`.
    pub fn downstreams(&self) -> &[DownstreamStats] {
        &self.downstreams
    }

    /// Downstream `index`'s counters, if it has any (a default `Stats` has none).
    pub fn downstream(&self, index: usize) -> Option<&DownstreamStats> {
        self.downstreams.get(index)
    }

    /// Adds `n` to `counter`, relay-wide and for `listener`.
    pub(crate) fn count(&self, listener: &ListenerStats, counter: ListenerCounter, n: usize) {
        use ListenerCounter as C;
        let (total, own) = match counter {
            C::ConnectionsAccepted => (&self.connections_accepted, &listener.connections_accepted),
            C::ConnectionsRefused => (&self.connections_refused, &listener.connections_refused),
            C::ConnectionsRefusedSource => (
                &self.connections_refused_source,
                &listener.connections_refused_source,
            ),
            C::TlsHandshakeFailures => (
                &self.tls_handshake_failures,
                &listener.tls_handshake_failures,
            ),
            C::MessagesIn => (&self.messages_in, &listener.messages_in),
            C::BytesIn => (&self.bytes_in, &listener.bytes_in),
            C::BytesOut => (&self.bytes_out, &listener.bytes_out),
            C::RejectsBadHeader => (&self.rejects_bad_header, &listener.rejects_bad_header),
            C::RejectsUnrouted => (&self.rejects_unrouted, &listener.rejects_unrouted),
            C::RejectsSender => (&self.rejects_sender, &listener.rejects_sender),
            C::RejectsCharset => (&self.rejects_charset, &listener.rejects_charset),
            C::BatchesIn => (&self.batches_in, &listener.batches_in),
            C::RejectsBatch => (&self.rejects_batch, &listener.rejects_batch),
            C::MissingControlId => (&self.missing_control_id, &listener.missing_control_id),
            C::SegmentTerminatorsRepaired => (
                &self.segment_terminators_repaired,
                &listener.segment_terminators_repaired,
            ),
            C::FramingErrors => (&self.framing_errors, &listener.framing_errors),
            C::IdleTimeouts => (&self.idle_timeouts, &listener.idle_timeouts),
            C::FrameDeadlineExpired => (
                &self.frame_deadline_expired,
                &listener.frame_deadline_expired,
            ),
        };
        Self::add(total, n);
        Self::add(own, n);
    }

    /// Counts an ACK with `code` sent to a sender of listener `listener`, relay-wide and for
    /// the listener.
    pub fn ack_to_sender(&self, listener: &ListenerStats, code: AckCode, generated: bool) {
        self.ack(code, generated);
        let counters = if generated {
            &listener.acks_generated
        } else {
            &listener.acks_from_downstream
        };
        Self::bump(&counters[code_index(code)]);
    }

    /// Counts a message taken from the sender identity called `name` on `listener` (one
    /// the listener had at start: an identity a reload added is counted after a restart).
    pub(crate) fn sender_message(&self, listener: &ListenerStats, name: &str) {
        if let Some((_, count)) = listener.senders.iter().find(|(n, _)| n == name) {
            Self::bump(count);
        }
    }

    /// Counts a header read past leniently (an unusual MSH-2), relay-wide and for `listener`.
    pub(crate) fn header_event(&self, listener: &ListenerStats, event: HeaderEvent) {
        Self::bump(&self.header_events[event.code.index()]);
        Self::bump(&listener.header_events[event.code.index()]);
    }

    /// Counts one use of a framing tolerance: relay-wide (all codes together, as
    /// `framing_tolerances_total` always was) and for `listener` by code.
    pub(crate) fn framing_event(&self, listener: &ListenerStats, code: EventCode) {
        Self::bump(&self.framing_events);
        Self::bump(&listener.framing_events[code.index()]);
    }

    /// Headers read past with `code`, relay-wide.
    pub fn header_events(&self, code: HeaderEventCode) -> u64 {
        Self::get(&self.header_events[code.index()])
    }

    /// Sets worker `worker`'s oldest undelivered message time (ms since the epoch; 0: none).
    pub fn set_journal_oldest(&self, worker: usize, time_ms: u64) {
        self.journal_oldest_ms[worker.min(OLDEST_SLOTS - 1)].store(time_ms, Ordering::Relaxed);
    }

    /// Age of the oldest undelivered message in any journal, if there is one.
    pub fn journal_oldest_age(&self) -> Option<Duration> {
        let oldest = self
            .journal_oldest_ms
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .filter(|&t| t > 0)
            .min()?;
        Some(Duration::from_millis(unix_ms().saturating_sub(oldest)))
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts one failed delivery attempt.
    pub fn downstream_failure(&self, kind: DownstreamFailureKind) {
        Self::bump(&self.downstream_failures[kind.index()]);
    }

    /// Failed delivery attempts of one kind.
    pub fn downstream_failures(&self, kind: DownstreamFailureKind) -> u64 {
        Self::get(&self.downstream_failures[kind.index()])
    }

    /// Counts an ACK with `code`, as the downstream wrote it or as the relay generated it.
    pub fn ack(&self, code: AckCode, generated: bool) {
        let counters = if generated {
            &self.acks_generated
        } else {
            &self.acks_from_downstream
        };
        Self::bump(&counters[code_index(code)]);
    }

    /// ACKs with `code` seen from the downstream (`generated == false`) or made by the relay.
    pub fn acks(&self, code: AckCode, generated: bool) -> u64 {
        let counters = if generated {
            &self.acks_generated
        } else {
            &self.acks_from_downstream
        };
        Self::get(&counters[code_index(code)])
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter and histogram.
    /// `rejections` are the listeners' client-certificate refusals, indexed like the listeners
    /// (listeners may share one; it is then counted once in the relay-wide series).
    pub fn render(&self, rejections: &[Arc<TlsRejections>]) -> String {
        let mut out = String::with_capacity(8 << 10);
        let counters: [(&str, &str, &AtomicU64); 48] = [
            (
                "journal_messages",
                "durable mode: journaled messages not yet delivered.",
                &self.journal_messages,
            ),
            (
                "journal_bytes",
                "durable mode: bytes of the journals' segment files.",
                &self.journal_bytes,
            ),
            (
                "journal_recovered_total",
                "durable mode: undelivered messages found in the journals at start-up.",
                &self.journal_recovered,
            ),
            (
                "journal_damaged_tails_total",
                "durable mode: journal segments found torn or corrupt at start-up.",
                &self.journal_damaged_tails,
            ),
            (
                "journal_failures_total",
                "durable mode: journals failed by a write or fdatasync error (they refuse messages).",
                &self.journal_failures,
            ),
            (
                "journal_commits_total",
                "durable mode: journal commits (one fdatasync each).",
                &self.journal_commits,
            ),
            (
                "journal_segments_reused_total",
                "durable mode: journal segments begun in a delivered segment's file instead of a new one.",
                &self.journal_segments_reused,
            ),
            (
                "journal_full_naks_total",
                "durable mode: messages answered AE/CE because the journal was full.",
                &self.journal_full_naks,
            ),
            (
                "journal_failed_naks_total",
                "durable mode: messages answered AE/CE because the journal had failed.",
                &self.journal_failed_naks,
            ),
            (
                "dead_letters_total",
                "durable mode: messages the receiver refused, kept as dead letters.",
                &self.dead_letters,
            ),
            (
                "durable_retries_total",
                "durable mode: delivery rounds that failed every attempt and are tried again.",
                &self.durable_retries,
            ),
            (
                "handoff_queue_depth",
                "single links: messages waiting in the cross-core handoff queue.",
                &self.handoff_queue_depth,
            ),
            (
                "rejects_unrouted_total",
                "AR sent for messages that match no route (ERR 200/201).",
                &self.rejects_unrouted,
            ),
            (
                "rejects_sender_total",
                "AR sent for messages whose MSH-3/MSH-4 the listener's sender rules do not \
                 allow (ERR 103).",
                &self.rejects_sender,
            ),
            (
                "rejects_charset_total",
                "AR sent for messages not in the character set MSH-18 (or the listener's \
                 default) declares (ERR 102/103).",
                &self.rejects_charset,
            ),
            (
                "batches_in_total",
                "Batch frames (FHS/BHS ... BTS/FTS) received.",
                &self.batches_in,
            ),
            (
                "audit_records_dropped_total",
                "Audit records dropped because the audit file writer could not keep up.",
                &self.audit_records_dropped,
            ),
            (
                "messages_transcoded_total",
                "Messages transcoded to UTF-8 for a downstream (transcode_to), MSH-18 set.",
                &self.messages_transcoded,
            ),
            (
                "acks_transcoded_total",
                "Receivers' ACKs put back into the sender's character set.",
                &self.acks_transcoded,
            ),
            (
                "acks_not_transcoded_total",
                "Receivers' ACKs that were not valid UTF-8, passed back unchanged.",
                &self.acks_not_transcoded,
            ),
            (
                "unmappable_characters_total",
                "Characters of receivers' ACKs the sender's character set cannot hold, sent as ?.",
                &self.unmappable_characters,
            ),
            (
                "rejects_batch_total",
                "Batch frames refused whole (batch = reject, or a structure or count error).",
                &self.rejects_batch,
            ),
            (
                "missing_control_id_total",
                "Messages with an empty MSH-10 (forwarded, or refused with AR and ERR 101, as \
                 the listener's missing_control_id says).",
                &self.missing_control_id,
            ),
            (
                "segment_terminators_repaired_total",
                "Messages whose LF/CRLF segment terminators were rewritten to CR \
                 (normalize_segment_terminators).",
                &self.segment_terminators_repaired,
            ),
            (
                "local_queue_full_total",
                "local mode: messages answered AE/CE because the forwarding queue was full.",
                &self.local_queue_full,
            ),
            (
                "local_lost_total",
                "local mode: messages acknowledged to the sender and never delivered.",
                &self.local_lost,
            ),
            (
                "local_refused_after_ack_total",
                "local mode: acknowledged messages the receiver then refused.",
                &self.local_refused_after_ack,
            ),
            (
                "local_queue_depth",
                "local mode: messages waiting to be forwarded.",
                &self.local_queue_depth,
            ),
            (
                "connections_refused_source_total",
                "Inbound connections refused by the source-address allowlist.",
                &self.connections_refused_source,
            ),
            (
                "connections_accepted_total",
                "Inbound connections accepted.",
                &self.connections_accepted,
            ),
            (
                "connections_refused_total",
                "Inbound connections refused at the per-worker limit.",
                &self.connections_refused,
            ),
            (
                "tls_handshake_failures_total",
                "Inbound TLS handshakes that failed.",
                &self.tls_handshake_failures,
            ),
            (
                "messages_in_total",
                "Frames received from senders.",
                &self.messages_in,
            ),
            (
                "received_bytes_total",
                "Bytes received from senders.",
                &self.bytes_in,
            ),
            (
                "messages_delivered_total",
                "Messages the downstream acknowledged (any code).",
                &self.messages_delivered,
            ),
            (
                "forwarded_bytes_total",
                "Payload bytes written to the downstream.",
                &self.bytes_forwarded,
            ),
            (
                "sent_bytes_total",
                "ACK payload bytes written to senders.",
                &self.bytes_out,
            ),
            (
                "acks_passed_through_total",
                "Downstream ACKs passed to senders unchanged.",
                &self.acks_passed_through,
            ),
            (
                "naks_downstream_failed_total",
                "AE/CE generated because the downstream failed.",
                &self.naks_downstream_failed,
            ),
            (
                "closes_downstream_failed_total",
                "Connections closed instead of a NAK after a downstream failure.",
                &self.closes_downstream_failed,
            ),
            (
                "rejects_bad_header_total",
                "AR sent for frames without a readable MSH.",
                &self.rejects_bad_header,
            ),
            (
                "framing_errors_total",
                "Connections closed for an MLLP framing error.",
                &self.framing_errors,
            ),
            (
                "framing_tolerances_total",
                "Tolerated framing deviations.",
                &self.framing_events,
            ),
            (
                "idle_timeouts_total",
                "Connections closed by the idle timeout.",
                &self.idle_timeouts,
            ),
            (
                "frame_deadline_expired_total",
                "Connections closed because a frame did not complete in time.",
                &self.frame_deadline_expired,
            ),
            (
                "session_panics_total",
                "Sessions that panicked (only their connection was lost).",
                &self.session_panics,
            ),
            (
                "connections_open",
                "Inbound connections open now.",
                &self.connections_open,
            ),
            ("relay_info", "Always 1; carries the version.", &ONE),
        ];
        for (name, help, value) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP mllp_relay_{name} {help}\n# TYPE mllp_relay_{name} {kind}"
            );
            if name == "relay_info" {
                let _ = writeln!(
                    out,
                    "mllp_relay_{name}{{version=\"{}\"}} 1",
                    env!("CARGO_PKG_VERSION")
                );
            } else {
                let _ = writeln!(out, "mllp_relay_{name} {}", Self::get(value));
            }
        }
        out.push_str("# HELP mllp_relay_acks_total ACKs sent to senders, by code and origin (downstream or relay).\n");
        out.push_str("# TYPE mllp_relay_acks_total counter\n");
        for code in AckCode::ALL {
            for (origin, generated) in [("downstream", false), ("relay", true)] {
                let _ = writeln!(
                    out,
                    "mllp_relay_acks_total{{code=\"{code}\",origin=\"{origin}\"}} {}",
                    self.acks(code, generated)
                );
            }
        }
        out.push_str(
            "# HELP mllp_relay_downstream_failures_total Failed delivery attempts, by kind.\n",
        );
        out.push_str("# TYPE mllp_relay_downstream_failures_total counter\n");
        for kind in DownstreamFailureKind::ALL {
            let _ = writeln!(
                out,
                "mllp_relay_downstream_failures_total{{kind=\"{}\"}} {}",
                kind.label(),
                self.downstream_failures(kind)
            );
        }
        out.push_str(
            "# HELP mllp_relay_header_tolerances_total Messages forwarded although their MSH-2 \
             is unusual (read past leniently), by code.\n\
             # TYPE mllp_relay_header_tolerances_total counter\n",
        );
        for code in HeaderEventCode::ALL {
            let _ = writeln!(
                out,
                "mllp_relay_header_tolerances_total{{code=\"{code}\"}} {}",
                self.header_events(code)
            );
        }
        out.push_str(
            "# HELP mllp_relay_tls_rejections_total TLS clients refused in the handshake (certificate or protocol version), by reason.\n",
        );
        out.push_str("# TYPE mllp_relay_tls_rejections_total counter\n");
        let mut distinct: Vec<&Arc<TlsRejections>> = Vec::with_capacity(rejections.len());
        for r in rejections {
            if !distinct.iter().any(|seen| Arc::ptr_eq(seen, r)) {
                distinct.push(r);
            }
        }
        for reason in RejectReason::ALL {
            let _ = writeln!(
                out,
                "mllp_relay_tls_rejections_total{{reason=\"{}\"}} {}",
                reason.label(),
                distinct.iter().map(|r| r.get(reason)).sum::<u64>()
            );
        }
        let _ = writeln!(
            out,
            "# HELP mllp_relay_config_reload_success 1 when the last reload (SIGHUP) succeeded \
             or none was made, 0 when some part failed and kept its previous configuration.\n\
             # TYPE mllp_relay_config_reload_success gauge\nmllp_relay_config_reload_success {}\n\
             # HELP mllp_relay_config_reload_timestamp_seconds When the configuration was last \
             loaded or reloaded (Unix time).\n\
             # TYPE mllp_relay_config_reload_timestamp_seconds gauge\n\
             mllp_relay_config_reload_timestamp_seconds {}",
            1 - Self::get(&self.config_reload_failed).min(1),
            Self::get(&self.config_loaded_ms) as f64 / 1000.0
        );
        self.render_listeners(rejections, &mut out);
        self.render_downstreams(&mut out);
        process::render(&mut out);
        out.push_str("# HELP mllp_relay_journal_oldest_undelivered_seconds durable mode: age of the oldest undelivered message (0: none).\n");
        out.push_str("# TYPE mllp_relay_journal_oldest_undelivered_seconds gauge\n");
        let _ = writeln!(
            out,
            "mllp_relay_journal_oldest_undelivered_seconds {}",
            self.journal_oldest_age()
                .map_or(0.0, |age| age.as_secs_f64())
        );
        self.journal_batch.render(
            "mllp_relay_journal_batch_messages",
            "durable mode: messages per journal commit.",
            &mut out,
        );
        for (name, help, histogram) in [
            (
                "journal_fsync_seconds",
                "durable mode: time to make each journal commit durable (an O_DSYNC direct write, or a write and fdatasync where the filesystem has no O_DIRECT).",
                &self.journal_fsync,
            ),
            (
                "forward_seconds",
                "Frame complete to message written to the downstream.",
                &self.latency_forward,
            ),
            (
                "ack_wait_seconds",
                "Message written to the downstream's ACK read.",
                &self.latency_ack_wait,
            ),
            (
                "total_seconds",
                "Frame complete to answer written to the sender.",
                &self.latency_total,
            ),
        ] {
            histogram.render(&format!("mllp_relay_{name}"), help, &mut out);
        }
        out
    }
}

impl Stats {
    /// One `mllp_relay_listener_<name>{listener, code}` counter family: its HELP and TYPE, then
    /// a sample per listener and code.
    fn render_by_listener_and_code<C: Copy + fmt::Display>(
        &self,
        name: &str,
        help: &str,
        codes: &[C],
        count: fn(&ListenerStats, C) -> u64,
        out: &mut String,
    ) {
        let _ = writeln!(
            out,
            "# HELP mllp_relay_listener_{name} {help}\n# TYPE mllp_relay_listener_{name} counter"
        );
        for listener in &self.listeners {
            for &code in codes {
                let _ = writeln!(
                    out,
                    "mllp_relay_listener_{name}{{listener=\"{}\",code=\"{code}\"}} {}",
                    LabelValue(&listener.name),
                    count(listener, code)
                );
            }
        }
    }

    /// The `mllp_relay_listener_*` series: one per listener and counter.
    fn render_listeners(&self, rejections: &[Arc<TlsRejections>], out: &mut String) {
        if self.listeners.is_empty() {
            return;
        }
        type Field = fn(&ListenerStats) -> &AtomicU64;
        let counters: [(&str, &str, Field); 21] = [
            (
                "connections_accepted_total",
                "Inbound connections accepted, by listener.",
                |l| &l.connections_accepted,
            ),
            (
                "connections_refused_total",
                "Inbound connections refused at the listener's per-worker limit.",
                |l| &l.connections_refused,
            ),
            (
                "connections_refused_source_total",
                "Inbound connections refused by the listener's source allowlist.",
                |l| &l.connections_refused_source,
            ),
            (
                "connections_open",
                "Inbound connections open now, by listener.",
                |l| &l.connections_open,
            ),
            (
                "tls_handshake_failures_total",
                "Inbound TLS handshakes that failed, by listener.",
                |l| &l.tls_handshake_failures,
            ),
            (
                "messages_in_total",
                "Frames received from senders, by listener.",
                |l| &l.messages_in,
            ),
            (
                "received_bytes_total",
                "Bytes received from senders, by listener.",
                |l| &l.bytes_in,
            ),
            (
                "sent_bytes_total",
                "ACK payload bytes written to senders, by listener.",
                |l| &l.bytes_out,
            ),
            (
                "rejects_bad_header_total",
                "AR sent for frames without a readable MSH, by listener.",
                |l| &l.rejects_bad_header,
            ),
            (
                "rejects_unrouted_total",
                "AR sent for messages that match no route, by listener.",
                |l| &l.rejects_unrouted,
            ),
            (
                "rejects_sender_total",
                "AR sent for sender identities the listener does not allow, by listener.",
                |l| &l.rejects_sender,
            ),
            (
                "rejects_charset_total",
                "AR sent for messages not in their declared character set, by listener.",
                |l| &l.rejects_charset,
            ),
            (
                "batches_in_total",
                "Batch frames received, by listener.",
                |l| &l.batches_in,
            ),
            (
                "rejects_batch_total",
                "Batch frames refused whole, by listener.",
                |l| &l.rejects_batch,
            ),
            (
                "missing_control_id_total",
                "Messages with an empty MSH-10, by listener.",
                |l| &l.missing_control_id,
            ),
            (
                "segment_terminators_repaired_total",
                "Messages whose LF/CRLF segment terminators were rewritten to CR, by listener.",
                |l| &l.segment_terminators_repaired,
            ),
            (
                "framing_errors_total",
                "Connections closed for an MLLP framing error, by listener.",
                |l| &l.framing_errors,
            ),
            (
                "idle_timeouts_total",
                "Connections closed by the idle timeout, by listener.",
                |l| &l.idle_timeouts,
            ),
            (
                "frame_deadline_expired_total",
                "Connections closed because a frame did not complete in time, by listener.",
                |l| &l.frame_deadline_expired,
            ),
            (
                "duplicates_answered_total",
                "durable mode: resends answered with their original ACK from the duplicate \
                 window instead of queued again, by listener.",
                |l| &l.duplicates_answered,
            ),
            (
                "duplicate_window_reused_ids_total",
                "durable mode: messages that reused a control ID the duplicate window remembers \
                 for different content (queued as new), by listener.",
                |l| &l.duplicate_window_reused_ids,
            ),
        ];
        for (name, help, field) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP mllp_relay_listener_{name} {help}\n# TYPE mllp_relay_listener_{name} {kind}"
            );
            for listener in &self.listeners {
                let _ = writeln!(
                    out,
                    "mllp_relay_listener_{name}{{listener=\"{}\"}} {}",
                    LabelValue(&listener.name),
                    Self::get(field(listener))
                );
            }
        }
        out.push_str(
            "# HELP mllp_relay_listener_acks_total ACKs sent to senders, by listener, code and \
             origin (downstream or relay).\n# TYPE mllp_relay_listener_acks_total counter\n",
        );
        for listener in &self.listeners {
            for code in AckCode::ALL {
                for (origin, generated) in [("downstream", false), ("relay", true)] {
                    let _ = writeln!(
                        out,
                        "mllp_relay_listener_acks_total{{listener=\"{}\",code=\"{code}\",\
                         origin=\"{origin}\"}} {}",
                        LabelValue(&listener.name),
                        listener.acks(code, generated)
                    );
                }
            }
        }
        out.push_str(
            "# HELP mllp_relay_listener_sender_messages_total Messages taken from each sender \
             identity ([[listener.sender]]), by listener and sender.\n# TYPE \
             mllp_relay_listener_sender_messages_total counter\n",
        );
        for listener in &self.listeners {
            for (sender, count) in &listener.senders {
                let _ = writeln!(
                    out,
                    "mllp_relay_listener_sender_messages_total{{listener=\"{}\",sender=\"{}\"}} {}",
                    LabelValue(&listener.name),
                    LabelValue(sender),
                    Self::get(count)
                );
            }
        }
        self.render_by_listener_and_code(
            "framing_tolerances_total",
            "Tolerated framing deviations, by listener and code.",
            &EventCode::ALL,
            ListenerStats::framing_events,
            out,
        );
        self.render_by_listener_and_code(
            "header_tolerances_total",
            "Messages forwarded although their MSH-2 is unusual (read past leniently), by \
             listener and code.",
            &HeaderEventCode::ALL,
            ListenerStats::header_events,
            out,
        );
        out.push_str(
            "# HELP mllp_relay_listener_tls_rejections_total TLS clients refused in the \
             handshake (certificate or protocol version), by listener and reason.\n# TYPE mllp_relay_listener_tls_rejections_total counter\n",
        );
        for (listener, rejections) in self.listeners.iter().zip(rejections) {
            for reason in RejectReason::ALL {
                let _ = writeln!(
                    out,
                    "mllp_relay_listener_tls_rejections_total{{listener=\"{}\",reason=\"{}\"}} {}",
                    LabelValue(&listener.name),
                    reason.label(),
                    rejections.get(reason)
                );
            }
        }
    }

    /// The `mllp_relay_downstream_*{downstream=…}` series: one per downstream and counter.
    fn render_downstreams(&self, out: &mut String) {
        if self.downstreams.is_empty() {
            return;
        }
        type Field = fn(&DownstreamStats) -> &AtomicU64;
        let counters: [(&str, &str, Field); 3] = [
            (
                "messages_total",
                "Messages the downstream took (any ACK code, or none when none was asked for).",
                |d| &d.messages,
            ),
            (
                "delivered_bytes_total",
                "Payload bytes of the messages the downstream took.",
                |d| &d.bytes,
            ),
            (
                "failed_attempts_total",
                "Delivery attempts to the downstream that failed (each retry counts).",
                |d| &d.failed_attempts,
            ),
        ];
        for (name, help, field) in counters {
            let _ = writeln!(
                out,
                "# HELP mllp_relay_downstream_{name} {help}\n# TYPE mllp_relay_downstream_{name} counter"
            );
            for downstream in &self.downstreams {
                let _ = writeln!(
                    out,
                    "mllp_relay_downstream_{name}{{downstream=\"{}\"}} {}",
                    LabelValue(&downstream.name),
                    Self::get(field(downstream))
                );
            }
        }
        out.push_str(
            "# HELP mllp_relay_downstream_failed_attempts_by_kind_total Failed delivery \
             attempts to each downstream, by kind.\n# TYPE \
             mllp_relay_downstream_failed_attempts_by_kind_total counter\n",
        );
        for downstream in &self.downstreams {
            for kind in DownstreamFailureKind::ALL {
                let _ = writeln!(
                    out,
                    "mllp_relay_downstream_failed_attempts_by_kind_total{{downstream=\"{}\",\
                     kind=\"{}\"}} {}",
                    LabelValue(&downstream.name),
                    kind.label(),
                    downstream.failures(kind)
                );
            }
        }
        out.push_str(
            "# HELP mllp_relay_downstream_up 1 when the last attempt to reach the downstream (a \
             delivery, a connection, a readiness probe) succeeded or none was made yet, 0 when \
             it failed.\n# TYPE mllp_relay_downstream_up gauge\n",
        );
        for downstream in &self.downstreams {
            let _ = writeln!(
                out,
                "mllp_relay_downstream_up{{downstream=\"{}\"}} {}",
                LabelValue(&downstream.name),
                u8::from(downstream.is_up())
            );
        }
        out.push_str(
            "# HELP mllp_relay_downstream_last_reached_timestamp_seconds When a delivery or a \
             connection to the downstream last succeeded (Unix time; 0: never).\n# TYPE \
             mllp_relay_downstream_last_reached_timestamp_seconds gauge\n",
        );
        for downstream in &self.downstreams {
            let _ = writeln!(
                out,
                "mllp_relay_downstream_last_reached_timestamp_seconds{{downstream=\"{}\"}} {}",
                LabelValue(&downstream.name),
                downstream.last_reached_ms() as f64 / 1000.0
            );
        }
        out.push_str(
            "# HELP mllp_relay_downstream_acks_total ACKs read from each downstream, by code.\n\
             # TYPE mllp_relay_downstream_acks_total counter\n",
        );
        for downstream in &self.downstreams {
            for code in AckCode::ALL {
                let _ = writeln!(
                    out,
                    "mllp_relay_downstream_acks_total{{downstream=\"{}\",code=\"{code}\"}} {}",
                    LabelValue(&downstream.name),
                    downstream.acks(code)
                );
            }
        }
    }
}

/// A label value in the exposition format: backslash, double quote and newline escaped (config
/// files allow none of them in names, but a `Config` built in code might).
struct LabelValue<'a>(&'a str);

impl fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A constant 1 for info-style gauges.
static ONE: AtomicU64 = AtomicU64::new(1);

const fn code_index(code: AckCode) -> usize {
    match code {
        AckCode::AA => 0,
        AckCode::AE => 1,
        AckCode::AR => 2,
        AckCode::CA => 3,
        AckCode::CE => 4,
        AckCode::CR => 5,
    }
}

/// Upper bounds of the latency buckets, in microseconds: 50 µs (a relay hop on loopback) to
/// 10 s (the default ACK timeout), roughly three per decade.
const BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// A Prometheus histogram with fixed buckets, updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_US.iter().position(|&bound| us <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Upper bounds of the count buckets (messages per commit).
const BUCKETS_COUNT: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// A Prometheus histogram of counts with power-of-two buckets, updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct CountHistogram {
    buckets: [AtomicU64; BUCKETS_COUNT.len()],
    count: AtomicU64,
    sum: AtomicU64,
}

impl CountHistogram {
    /// Records one observation.
    pub fn record_count(&self, value: usize) {
        let value = value as u64;
        if let Some(i) = BUCKETS_COUNT.iter().position(|&bound| value <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of the observations.
    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS_COUNT.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {count}", self.sum());
    }
}

/// Largest HTTP request read from a scraper: a GET line and headers fit easily.
const REQUEST_LIMIT: usize = 8 << 10;

/// Why the relay is not ready for traffic (`GET /readyz`), or `Ok`.
pub type Readiness = Box<dyn Fn() -> Result<(), String> + Send>;

/// Serves `GET /metrics`, `GET /healthz` (200 while this thread serves: the process is alive)
/// and `GET /readyz` (200, or 503 with `ready`'s one-line reason) on `listener` from a plain
/// thread until `stop` is set. One request per connection, answered and closed: scrapes and
/// probes are rare and tiny, so this needs no runtime of its own.
pub fn serve(
    listener: TcpListener,
    stats: Arc<Stats>,
    live: Arc<crate::config::Live>,
    ready: Readiness,
    stop: Arc<AtomicBool>,
) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::Relaxed) {
        let (mut stream, _) = match listener.accept() {
            Ok(pair) => pair,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(_) => continue,
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let mut request = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < REQUEST_LIMIT {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        let path = request_path(&request);
        let (status, body) = match path {
            Some("/metrics") => {
                let config = live.current();
                let rejections: Vec<Arc<TlsRejections>> = config
                    .listeners
                    .iter()
                    .map(|l| l.tls_rejections.clone())
                    .collect();
                let mut body = stats.render(&rejections);
                render_certificates(&config, &mut body);
                ("200 OK", body)
            }
            Some("/healthz") => ("200 OK", "ok\n".to_owned()),
            Some("/readyz") => match ready() {
                Ok(()) => ("200 OK", "ready\n".to_owned()),
                Err(reason) => ("503 Service Unavailable", format!("not ready: {reason}\n")),
            },
            _ => (
                "404 Not Found",
                "try GET /metrics, /healthz or /readyz\n".to_owned(),
            ),
        };
        let header = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream
            .write_all(header.as_bytes())
            .and_then(|()| stream.write_all(body.as_bytes()));
    }
}

/// The expiry of every certificate the relay presents: each TLS listener's (as last loaded or
/// reloaded) and each downstream's client certificate.
pub fn render_certificates(config: &crate::config::Config, out: &mut String) {
    out.push_str(
        "# HELP mllp_relay_certificate_expiry_timestamp_seconds When a certificate the relay \
         presents expires (Unix time), by listener (its server certificate) or downstream \
         (its client certificate).\n# TYPE mllp_relay_certificate_expiry_timestamp_seconds \
         gauge\n",
    );
    for listener in &config.listeners {
        if let Some(cert) = listener.tls.as_ref().and_then(|tls| tls.certificate()) {
            let _ = writeln!(
                out,
                "mllp_relay_certificate_expiry_timestamp_seconds{{listener=\"{}\",\
                 subject=\"{}\"}} {}",
                LabelValue(&listener.name),
                LabelValue(&cert.subject),
                cert.not_after
            );
        }
    }
    for downstream in &config.downstreams {
        if let Some(cert) = &downstream.client_certificate {
            let _ = writeln!(
                out,
                "mllp_relay_certificate_expiry_timestamp_seconds{{downstream=\"{}\",\
                 subject=\"{}\"}} {}",
                LabelValue(&downstream.name),
                LabelValue(&cert.subject),
                cert.not_after
            );
        }
    }
}

/// The path of a `GET` request (without its query), if the request is one.
fn request_path(request: &[u8]) -> Option<&str> {
    let line = request.strip_prefix(b"GET ")?;
    let target = line.split(|&b| b == b' ').next()?;
    let path = target.split(|&b| b == b'?').next()?;
    std::str::from_utf8(path).ok()
}

/// Binds the metrics address (so a bad address fails at start, not later).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_and_downstreams_get_their_own_labelled_series() {
        let stats = Stats::new(["adt", "lab"], ["ehr"]);
        let (adt, lab) = (stats.listener(0), stats.listener(1));
        Stats::bump(&adt.messages_in);
        Stats::bump(&stats.messages_in);
        Stats::add(&lab.bytes_in, 3);
        stats.ack_to_sender(lab, AckCode::CA, true);
        stats.ack_to_sender(adt, AckCode::AE, false);
        let doubled = HeaderEvent {
            code: HeaderEventCode::Msh2RepeatedDelimiter,
            byte: b'\\',
        };
        stats.header_event(lab, doubled);
        stats.framing_event(adt, EventCode::LfAfterFs);
        stats
            .downstream(0)
            .unwrap()
            .delivered(10, Some(AckCode::AE));
        assert!(stats.downstream(1).is_none());
        // The relay-wide ACK counters count what the listeners count.
        assert_eq!(stats.acks(AckCode::CA, true), 1);
        assert_eq!(lab.acks(AckCode::CA, true), 1);
        assert_eq!(adt.acks(AckCode::CA, true), 0);

        let rejections = [
            Arc::new(TlsRejections::new()),
            Arc::new(TlsRejections::new()),
        ];
        let text = stats.render(&rejections);
        for line in [
            "mllp_relay_messages_in_total 1",
            "mllp_relay_listener_messages_in_total{listener=\"adt\"} 1",
            "mllp_relay_listener_messages_in_total{listener=\"lab\"} 0",
            "mllp_relay_listener_received_bytes_total{listener=\"lab\"} 3",
            "mllp_relay_acks_total{code=\"CA\",origin=\"relay\"} 1",
            "mllp_relay_listener_acks_total{listener=\"lab\",code=\"CA\",origin=\"relay\"} 1",
            "mllp_relay_listener_acks_total{listener=\"adt\",code=\"AE\",origin=\"downstream\"} 1",
            "mllp_relay_listener_tls_rejections_total{listener=\"adt\",reason=\"unknown_ca\"} 0",
            "mllp_relay_header_tolerances_total{code=\"HL7_MSH2_REPEATED_DELIMITER\"} 1",
            "mllp_relay_header_tolerances_total{code=\"HL7_MSH2_TOO_LONG\"} 0",
            "mllp_relay_listener_header_tolerances_total{listener=\"lab\",code=\"HL7_MSH2_REPEATED_DELIMITER\"} 1",
            "mllp_relay_listener_header_tolerances_total{listener=\"adt\",code=\"HL7_MSH2_REPEATED_DELIMITER\"} 0",
            "# TYPE mllp_relay_header_tolerances_total counter",
            "mllp_relay_framing_tolerances_total 1",
            "mllp_relay_listener_framing_tolerances_total{listener=\"adt\",code=\"MLLP_LF_AFTER_FS\"} 1",
            "mllp_relay_listener_framing_tolerances_total{listener=\"lab\",code=\"MLLP_LF_AFTER_FS\"} 0",
            "# TYPE mllp_relay_listener_framing_tolerances_total counter",
            "mllp_relay_downstream_messages_total{downstream=\"ehr\"} 1",
            "mllp_relay_downstream_delivered_bytes_total{downstream=\"ehr\"} 10",
            "mllp_relay_downstream_acks_total{downstream=\"ehr\",code=\"AE\"} 1",
            "# TYPE mllp_relay_listener_connections_open gauge",
            "# TYPE mllp_relay_listener_messages_in_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        // One HELP and TYPE per family, however many listeners.
        assert_eq!(
            text.matches("# TYPE mllp_relay_listener_messages_in_total ")
                .count(),
            1
        );
    }

    #[test]
    fn shared_tls_rejections_are_counted_once_relay_wide() {
        let stats = Stats::new(["a", "b", "c"], []);
        let shared = Arc::new(TlsRejections::new());
        let own = Arc::new(TlsRejections::new());
        shared.record(RejectReason::UnknownCa);
        own.record(RejectReason::UnknownCa);
        let text = stats.render(&[shared.clone(), shared, own]);
        for line in [
            "mllp_relay_tls_rejections_total{reason=\"unknown_ca\"} 2",
            "mllp_relay_listener_tls_rejections_total{listener=\"a\",reason=\"unknown_ca\"} 1",
            "mllp_relay_listener_tls_rejections_total{listener=\"b\",reason=\"unknown_ca\"} 1",
            "mllp_relay_listener_tls_rejections_total{listener=\"c\",reason=\"unknown_ca\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(LabelValue("a\"b\\c\nd").to_string(), "a\\\"b\\\\c\\nd");
        let stats = Stats::new(["we\"ird"], []);
        let text = stats.render(&[Arc::new(TlsRejections::new())]);
        assert!(
            text.contains("mllp_relay_listener_messages_in_total{listener=\"we\\\"ird\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn a_default_stats_has_no_labelled_series() {
        let text = Stats::default().render(&[]);
        assert!(!text.contains("mllp_relay_listener_"), "{text}");
        assert!(
            !text.contains("mllp_relay_downstream_messages_total"),
            "{text}"
        );
        assert!(text.contains("mllp_relay_messages_in_total 0"), "{text}");
    }
}
