//! Delivery to one downstream from one worker: a pool of connections, one message in flight
//! on each, the ACK checked against the message's control id, bounded retries with backoff.
//!
//! The rules that keep ACKs honest:
//! - A connection carries one message at a time and is reused only after a clean exchange
//!   (one ACK, nothing after it). Any failure — timeout, close, unreadable ACK, MSA-2 that
//!   is not the message's MSH-10 — closes that connection, so a late ACK can never be read as
//!   the answer to a later message (the duplicate-flood failure of engines that keep the
//!   connection and match the next ACK that arrives).
//! - Before a pooled connection is reused it is checked for a close (or stray bytes) that
//!   arrived while it sat idle; such a connection is discarded without sending on it. Some
//!   servers close after every message; they simply get a new connection each time.
//! - The downstream's own verdict (AA, AE, AR, CA, CE, CR) is an answer, not a failure: it is
//!   passed to the sender as it is.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mllp::ack::{AckCode, parse_ack};
use mllp::frame::Deframer;
use tracing::{debug, warn};

use super::Expect;
use crate::config::DownstreamConfig;
use crate::metrics::{DownstreamFailureKind, Stats};
use netio::conn::{Conn, ConnError};
use netio::connect::{ConnectError, connect};

/// Initial read buffer of a downstream connection: ACKs are small.
const ACK_BUFFER: usize = 1024;

/// An open connection to the downstream with its own deframer.
struct Link {
    conn: Conn,
    deframer: Deframer,
    buf: Vec<u8>,
    /// The control IDs of the last messages written on this link without waiting for an
    /// ACK (their MSH-15 asked for none). A receiver may answer them anyway, and its answer
    /// can arrive after the next message is written: an ACK naming one of these is that late
    /// answer, dropped, not a wrong ACK for the message being delivered. At most
    /// [`UNANSWERED_KEPT`].
    unanswered: VecDeque<Vec<u8>>,
}

/// Late answers a link watches for: a receiver answers in order, so one or two are in flight
/// at most; a few more cover a burst of such messages.
const UNANSWERED_KEPT: usize = 4;

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("sending to {addr} failed: {error}")]
    Send { addr: SocketAddr, error: ConnError },
    #[error("no ACK from {addr} within {after:?}")]
    AckTimeout { addr: SocketAddr, after: Duration },
    #[error("{addr} closed the connection before acknowledging")]
    Closed { addr: SocketAddr },
    #[error("reading the ACK from {addr} failed: {error}")]
    Receive { addr: SocketAddr, error: ConnError },
    #[error("{addr} sent a broken frame: {error}")]
    Framing {
        addr: SocketAddr,
        error: mllp::FrameError,
    },
    #[error("{addr} answered with something that is not an ACK: {error}")]
    NotAnAck {
        addr: SocketAddr,
        error: mllp::AckError,
    },
    #[error("{addr} acknowledged control id {got:?} instead of {expected:?}")]
    WrongControlId {
        addr: SocketAddr,
        got: String,
        expected: String,
    },
    #[error("the queue to the single link {addr} is full (the receiver is not keeping up)")]
    HandoffFull { addr: SocketAddr },
}

impl Failure {
    fn kind(&self) -> DownstreamFailureKind {
        match self {
            Self::Connect(ConnectError::Connect { .. }) => DownstreamFailureKind::Connect,
            Self::Connect(ConnectError::TimedOut { .. }) => DownstreamFailureKind::ConnectTimeout,
            Self::Connect(ConnectError::Handshake { .. }) => DownstreamFailureKind::Handshake,
            Self::Send { .. } => DownstreamFailureKind::Send,
            Self::AckTimeout { .. } => DownstreamFailureKind::AckTimeout,
            Self::Closed { .. } => DownstreamFailureKind::Closed,
            Self::Receive { .. } => DownstreamFailureKind::Receive,
            Self::Framing { .. } => DownstreamFailureKind::Framing,
            Self::NotAnAck { .. } => DownstreamFailureKind::NotAnAck,
            Self::WrongControlId { .. } => DownstreamFailureKind::WrongControlId,
            Self::HandoffFull { .. } => DownstreamFailureKind::HandoffFull,
        }
    }
}

/// When the last attempt of a delivery wrote the message and read its ACK.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) written: Option<Instant>,
    pub(crate) acked: Option<Instant>,
}

/// One downstream, as seen from one worker.
pub(crate) struct Downstream {
    /// Its index in `Config::downstreams` (and so in the per-downstream counters).
    index: usize,
    config: DownstreamConfig,
    idle: RefCell<Vec<Link>>,
}

impl Downstream {
    pub(crate) fn new(index: usize, config: DownstreamConfig) -> Self {
        Self {
            index,
            config,
            idle: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// The downstream's configuration.
    pub(crate) fn config(&self) -> &DownstreamConfig {
        &self.config
    }

    /// Takes over `before`'s idle connections when they lead to the same place in the same
    /// way: the same name, address and framing, both plain.
    pub(crate) fn adopt_idle(&self, before: &Self) {
        let (new, old) = (&self.config, &before.config);
        let same = new.name == old.name
            && new.addr == old.addr
            && new.framing == old.framing
            && new.tls.is_none()
            && old.tls.is_none();
        if same {
            let mut idle = before.idle.borrow_mut();
            self.idle.borrow_mut().append(&mut idle);
        }
    }

    /// Delivers one message (the payload of a frame) and waits for what `expect` says: the
    /// ACK whose MSA-2 is `control_id` (its payload appended to `ack`, its code returned), any
    /// one frame (appended, no code), or nothing.
    /// Retries as configured. Returns the last failure when every attempt failed.
    pub(crate) async fn deliver(
        &self,
        payload: &[u8],
        control_id: &[u8],
        expect: Expect,
        ack: &mut Vec<u8>,
        stats: &Stats,
        timing: &mut Timing,
    ) -> Result<Option<AckCode>, Failure> {
        let mut attempt = 0;
        loop {
            *timing = Timing::default();
            match self
                .attempt(payload, control_id, expect, ack, stats, timing)
                .await
            {
                Ok(code) => {
                    if let Some(counters) = stats.downstream(self.index) {
                        counters.delivered(payload.len(), code);
                    }
                    return Ok(code);
                }
                Err(failure) => {
                    stats.downstream_failure(failure.kind());
                    if let Some(counters) = stats.downstream(self.index) {
                        Stats::bump(&counters.failed_attempts);
                        counters.failed(failure.kind());
                    }
                    if attempt >= self.config.retries {
                        return Err(failure);
                    }
                    let pause = self.backoff(attempt);
                    warn!(
                        downstream = %self.config.name,
                        attempt = attempt + 1,
                        error = %failure,
                        retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                        "delivery attempt failed"
                    );
                    // Boxed: a timer is 640 bytes aligned to 128, and inline it would sit
                    // (with its padding) in every session's task for a pause that only a
                    // failed attempt takes.
                    Box::pin(monoio::time::sleep(pause)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Full-jitter exponential backoff: a random pause up to `base * 2^attempt`, capped, so
    /// that many senders retrying at once do not hit a recovering receiver together.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .config
            .backoff_base
            .saturating_mul(1 << attempt.min(16))
            .min(self.config.backoff_cap);
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(random % nanos)
    }

    async fn attempt(
        &self,
        payload: &[u8],
        control_id: &[u8],
        expect: Expect,
        ack: &mut Vec<u8>,
        stats: &Stats,
        timing: &mut Timing,
    ) -> Result<Option<AckCode>, Failure> {
        let addr = self.config.addr;
        let mut link = match self.pooled() {
            Some(link) => link,
            // Boxed: connecting (TCP, then maybe a TLS handshake, each under a timer) is the
            // largest future on the delivery path and happens once per downstream connection,
            // not per message; inline, its space would sit in every session's task, idle or
            // not, for the connection's whole life.
            None => {
                let link = Box::pin(self.connect()).await?;
                if let Some(counters) = stats.downstream(self.index) {
                    counters.reached();
                }
                link
            }
        };
        let framing = self.config.framing;
        let write_deadline = Instant::now() + self.config.ack_timeout;
        let parts: [&[u8]; 3] = [&[framing.start()], payload, framing.end()];
        if let Err(error) = link.conn.write_all(&parts, write_deadline).await {
            return Err(Failure::Send { addr, error });
        }
        timing.written = Some(Instant::now());
        if expect == Expect::Nothing {
            if !control_id.is_empty() {
                if link.unanswered.len() == UNANSWERED_KEPT {
                    link.unanswered.pop_front();
                }
                link.unanswered.push_back(control_id.to_vec());
            }
            self.idle.borrow_mut().push(link);
            return Ok(None);
        }
        let deadline = Instant::now() + self.config.ack_timeout;
        loop {
            match link.deframer.decode(&link.buf) {
                Ok(Some(frame)) => {
                    let bytes = frame.payload(&link.buf);
                    let code = if expect == Expect::Ack {
                        let parsed =
                            parse_ack(bytes).map_err(|error| Failure::NotAnAck { addr, error })?;
                        if parsed.acknowledged_id != control_id {
                            if let Some(late) = link
                                .unanswered
                                .iter()
                                .position(|id| id.as_slice() == parsed.acknowledged_id)
                            {
                                link.unanswered.remove(late);
                                debug!(downstream = %self.config.name, "late ACK for a message sent without one due: dropped");
                                continue;
                            }
                            return Err(Failure::WrongControlId {
                                addr,
                                got: String::from_utf8_lossy(parsed.acknowledged_id).into_owned(),
                                expected: String::from_utf8_lossy(control_id).into_owned(),
                            });
                        }
                        Some(parsed.code)
                    } else {
                        None
                    };
                    ack.extend_from_slice(bytes);
                    timing.acked = Some(Instant::now());
                    // Anything after the ACK's trailer is unexplained: do not reuse the link.
                    let trailing = link.buf.len() > link.deframer.discardable();
                    while link.deframer.poll_event().is_some() {}
                    if !trailing {
                        link.buf.clear();
                        link.deframer = Deframer::new(framing);
                        self.idle.borrow_mut().push(link);
                    } else {
                        debug!(downstream = %self.config.name, "bytes after the ACK: connection not reused");
                    }
                    return Ok(code);
                }
                Ok(None) => {}
                Err(error) => return Err(Failure::Framing { addr, error }),
            }
            while link.deframer.poll_event().is_some() {}
            link.deframer.reserve_for_read(&mut link.buf, ACK_BUFFER);
            let buf = std::mem::take(&mut link.buf);
            let (result, buf) = link.conn.read_into(buf, ACK_BUFFER, deadline, None).await;
            link.buf = buf;
            match result {
                Ok(_) => {}
                Err(ConnError::TimedOut) => {
                    return Err(Failure::AckTimeout {
                        addr,
                        after: self.config.ack_timeout,
                    });
                }
                Err(ConnError::Closed) => return Err(Failure::Closed { addr }),
                Err(error) => return Err(Failure::Receive { addr, error }),
            }
        }
    }

    /// An idle pooled connection that is still open and quiet, if any.
    fn pooled(&self) -> Option<Link> {
        let mut idle = self.idle.borrow_mut();
        while let Some(link) = idle.pop() {
            if link.conn.is_quiet() {
                return Some(link);
            }
            debug!(downstream = %self.config.name, "pooled connection closed or noisy while idle: discarded");
        }
        None
    }

    async fn connect(&self) -> Result<Link, Failure> {
        let conn = connect(
            self.config.addr,
            self.config.tls.as_ref(),
            self.config.connect_timeout,
        )
        .await?;
        Ok(Link {
            conn,
            deframer: Deframer::new(self.config.framing),
            buf: Vec::with_capacity(ACK_BUFFER),
            unanswered: VecDeque::new(),
        })
    }
}
