//! Counters shared by the workers and read by whoever reports them (tests now; the Prometheus
//! endpoint next).
//!
//! Plain relaxed atomics in one shared struct: each increment is an uncontended
//! read-modify-write on a counter that the message's own worker mostly owns, far below the cost
//! of the message's syscalls. Per-worker sharding comes if a profile ever shows contention.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl DownstreamFailureKind {
    /// Every kind, in counter order.
    pub const ALL: [Self; 10] = [
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
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The relay's counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Inbound connections accepted.
    pub connections_accepted: AtomicU64,
    /// Inbound connections refused because the worker was at its limit.
    pub connections_refused: AtomicU64,
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
    downstream_failures: [AtomicU64; DownstreamFailureKind::ALL.len()],
}

impl Stats {
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
}
