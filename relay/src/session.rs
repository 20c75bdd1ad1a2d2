//! One inbound connection: handshake, read, deframe, answer each message, in order.
//!
//! HL7 original mode is stop-and-wait, and so is a session: a message is delivered and
//! answered before the next one in the buffer is looked at, which keeps per-connection order.
//! Everything that can go wrong with a sender ends this connection only, after a log line and
//! a counter; a panic inside the session is caught by the worker (see `worker.rs`).

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use mllp::ack::{
    self, AckCode, AckDecision, AckParams, ErrorCode, ErrorDetail, Outcome, expects_accept_ack,
};
use mllp::frame::Deframer;
use mllp::hl7::Msh;
use tracing::{debug, info, warn};

use crate::config::{AckMode, ListenerConfig, OnDownstreamFailure, WhenJournalFull};
use crate::downstream::Timing;
use crate::duplicates::Seen;
use crate::journal::{JournalError, Writer};
use crate::metrics::{ListenerStats, Stats};
use crate::worker::WorkerContext;
use mllp::timestamp::write_hl7_timestamp;
use netio::conn::{Conn, ConnError, SharedCanceller, shared_canceller};

/// Read size for a sender's connection: a few TCP segments. The buffer grows for bigger
/// frames (up to the frame limit) and is reused for the connection's life.
const READ_CHUNK: usize = 16 * 1024;

/// How long a connection may sit quiet before it gives its buffers back: a sender that keeps
/// sending never reallocates, an idle one holds none (the goal is ≤ 16 KiB per idle TLS
/// connection).
const BUFFER_RELEASE_DELAY: Duration = Duration::from_secs(1);

/// What to do with the sender after one message.
enum Reply {
    /// Send these bytes (an ACK payload), framed.
    Send,
    /// Nothing is due (MSH-15/16 or the ACK policy said so).
    Nothing,
    /// Close the connection without answering.
    Close,
}

/// Runs a session on a connection accepted by listener `index` (of `Config::listeners`) to its
/// end, with that listener's settings and counters; never panics on input, never returns an
/// error (it logs).
pub(crate) async fn run(mut conn: Conn, index: usize, ctx: Rc<WorkerContext>) {
    let listener = &ctx.config.listeners[index];
    let stats = &ctx.stats;
    let counters = stats.listener(index);
    let peer = conn.peer();
    if conn.is_tls() {
        if let Err(error) = conn
            .handshake(Instant::now() + listener.handshake_timeout)
            .await
        {
            if matches!(error, ConnError::Closed) {
                // Closed (or reset) before sending a byte: a load balancer's health check or
                // a port probe. Not a refusal, and a warning for each would bury the real ones.
                debug!(listener = %listener.name, %peer, "closed by the peer before the TLS handshake began");
                return;
            }
            Stats::bump(&stats.tls_handshake_failures);
            Stats::bump(&counters.tls_handshake_failures);
            if let ConnError::Tls(tls_error) = &error {
                // Reasons rustls decides before our verifier runs (no certificate at all).
                listener.tls_rejections.note_handshake_error(tls_error);
            }
            warn!(listener = %listener.name, %peer, %error, "TLS handshake failed; connection closed");
            return;
        }
        debug!(%peer, "TLS handshake complete");
    }

    let mut session = Session {
        ctx: &ctx,
        listener,
        counters,
        deframer: Deframer::new(listener.framing),
        ack: Vec::new(),
        reply: Vec::new(),
        timing: Timing::default(),
        lane: ctx.next_lane(),
        writer: Writer::default(),
        window_key: Vec::new(),
        ids: GeneratedIds::default(),
    };
    // Cancels this session's reads between messages at shutdown; one for the session's life
    // (a signal is replaced only once fired, and a fired one ends the session).
    let idle_signal = shared_canceller();
    let _registration = IdleRegistration {
        ctx: &ctx,
        id: ctx.register_idle(&idle_signal),
    };
    let mut buf: Vec<u8> = Vec::new();
    // When the frame being received began (for the whole-frame deadline).
    let mut frame_started: Option<(u64, Instant)> = None;
    loop {
        // Answer every complete message already buffered, in order.
        loop {
            let frame = match session.deframer.decode(&buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    Stats::bump(&stats.framing_errors);
                    Stats::bump(&counters.framing_errors);
                    warn!(listener = %listener.name, %peer, %error, "framing error; connection closed");
                    conn.close().await;
                    return;
                }
            };
            session.log_events(peer);
            let payload = frame.payload(&buf);
            let started = Instant::now();
            match session.handle(payload).await {
                Reply::Send => {
                    let framing = listener.framing;
                    let parts: [&[u8]; 3] = [&[framing.start()], &session.reply, framing.end()];
                    let deadline = Instant::now() + listener.write_timeout;
                    if let Err(error) = conn.write_all(&parts, deadline).await {
                        warn!(%peer, %error, "writing the ACK failed; connection closed");
                        return;
                    }
                    Stats::add(&stats.bytes_out, session.reply.len());
                    Stats::add(&counters.bytes_out, session.reply.len());
                    stats.latency_total.record(started.elapsed());
                    if let Some(timing) = session.timing.written {
                        stats
                            .latency_forward
                            .record(timing.saturating_duration_since(started));
                        if let Some(acked) = session.timing.acked {
                            stats
                                .latency_ack_wait
                                .record(acked.saturating_duration_since(timing));
                        }
                    }
                }
                Reply::Nothing => {}
                Reply::Close => {
                    conn.close().await;
                    return;
                }
            }
        }
        session.log_events(peer);

        let now = Instant::now();
        let in_frame = session.deframer.frame_in_progress();
        frame_started = match (in_frame, frame_started) {
            (None, _) => None,
            (Some(offset), Some((started, at))) if started == offset => Some((started, at)),
            (Some(offset), _) => Some((offset, now)),
        };
        if ctx.shutting_down() && in_frame.is_none() {
            debug!(%peer, "shutting down: connection closed between messages");
            conn.close().await;
            return;
        }
        let idle_deadline = now + listener.idle_timeout;
        let deadline = match frame_started {
            Some((_, at)) => idle_deadline.min(at + listener.frame_deadline),
            None => idle_deadline,
        };

        // Between messages the wait can be cancelled by shutdown; inside a frame it cannot.
        let canceller = in_frame.is_none().then_some(&idle_signal);
        let nothing_kept = buf.len() == session.deframer.discardable();
        let waited = match &canceller {
            Some(signal) if nothing_kept => {
                session
                    .wait_idle(&mut conn, &mut buf, now, deadline, signal)
                    .await
            }
            _ => Ok(()),
        };
        let result = match waited {
            Ok(()) => {
                session.deframer.reserve_for_read(&mut buf, READ_CHUNK);
                let (result, returned) = conn.read_into(buf, READ_CHUNK, deadline, canceller).await;
                buf = returned;
                result
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(n) => {
                Stats::add(&stats.bytes_in, n);
                Stats::add(&counters.bytes_in, n);
            }
            Err(ConnError::Closed) => {
                if let Err(error) = session.deframer.finish() {
                    Stats::bump(&stats.framing_errors);
                    Stats::bump(&counters.framing_errors);
                    warn!(%peer, %error, "sender closed the connection mid-frame");
                } else {
                    debug!(%peer, "sender closed the connection");
                }
                return;
            }
            Err(ConnError::TimedOut) => {
                if frame_started
                    .is_some_and(|(_, at)| Instant::now() >= at + listener.frame_deadline)
                {
                    Stats::bump(&stats.frame_deadline_expired);
                    Stats::bump(&counters.frame_deadline_expired);
                    warn!(%peer, deadline = ?listener.frame_deadline, "frame not completed within the frame deadline; connection closed");
                } else {
                    Stats::bump(&stats.idle_timeouts);
                    Stats::bump(&counters.idle_timeouts);
                    info!(%peer, idle = ?listener.idle_timeout, "idle timeout; connection closed");
                }
                conn.close().await;
                return;
            }
            Err(ConnError::Cancelled) => {
                debug!(%peer, "shutting down: idle connection closed");
                conn.close().await;
                return;
            }
            Err(error) => {
                warn!(%peer, %error, "read failed; connection closed");
                return;
            }
        }
    }
}

/// The per-connection state that outlives one message.
struct Session<'c> {
    ctx: &'c WorkerContext,
    /// The listener that accepted the connection.
    listener: &'c ListenerConfig,
    /// Its counters.
    counters: &'c ListenerStats,
    deframer: Deframer,
    /// The downstream's ACK payload for the current message.
    ack: Vec<u8>,
    /// The payload to send back to the sender.
    reply: Vec<u8>,
    /// When the current message was written downstream and acknowledged.
    timing: Timing,
    /// `durable` mode: the lane key that keeps this connection's messages in order.
    lane: u32,
    /// `durable` mode: this connection as a sender the group commit may wait for.
    writer: Writer,
    /// `durable` mode with a duplicate window: scratch space for the window's key.
    window_key: Vec<u8>,
    /// MSH-7 and MSH-10 of the ACKs the relay writes itself, made only when one is written.
    ids: GeneratedIds,
}

/// The MSH-7 (time) and MSH-10 (control ID) of an ACK the relay generates, in buffers reused
/// from message to message. Filled only when such an ACK is written: a passed-through ACK
/// needs neither, so relaying a message reads no clock for it and allocates nothing.
#[derive(Default)]
struct GeneratedIds {
    timestamp: Vec<u8>,
    control_id: Vec<u8>,
}

impl GeneratedIds {
    fn params(&self) -> AckParams<'_> {
        AckParams::new(&self.timestamp, &self.control_id)
    }
}

/// Keeps a session's idle signal registered with its worker (so that shutdown can cancel the
/// session's reads between messages) for the session's life.
struct IdleRegistration<'c> {
    ctx: &'c WorkerContext,
    id: u64,
}

impl Drop for IdleRegistration<'_> {
    fn drop(&mut self) {
        self.ctx.unregister_idle(self.id);
    }
}

impl Session<'_> {
    /// The IDs for an ACK the relay writes itself, now: taken out of `self.ids` (give them
    /// back when the ACK is written, so that their buffers are reused).
    fn take_ids(&mut self) -> GeneratedIds {
        let mut ids = std::mem::take(&mut self.ids);
        write_hl7_timestamp(SystemTime::now(), &mut ids.timestamp);
        self.ctx.write_next_control_id(&mut ids.control_id);
        ids
    }

    /// Counts an ACK with `code` about to be sent to the sender.
    fn answered(&self, code: AckCode, generated: bool) {
        self.ctx.stats.ack_to_sender(self.counters, code, generated);
    }

    /// Delivers one message and prepares the sender's answer in `self.reply`.
    async fn handle(&mut self, payload: &[u8]) -> Reply {
        let stats = &self.ctx.stats;
        let listener = self.listener;
        Stats::bump(&stats.messages_in);
        Stats::bump(&self.counters.messages_in);
        self.reply.clear();
        self.ack.clear();
        self.timing = Timing::default();

        let msh = match Msh::parse(payload) {
            Ok(msh) => msh,
            Err(error) => {
                Stats::bump(&stats.rejects_bad_header);
                Stats::bump(&self.counters.rejects_bad_header);
                warn!(%error, "message without a readable MSH: rejected with AR, not forwarded");
                let text = format!("message rejected: {error}");
                let ids = self.take_ids();
                let params = AckParams {
                    text: Some(text.as_bytes()),
                    ..ids.params()
                };
                let detail = ErrorDetail {
                    code: header_error_code(error),
                    diagnostic: text.as_bytes(),
                };
                ack::write_headerless_reject(&params, detail, &mut self.reply);
                self.ids = ids;
                self.answered(AckCode::AR, true);
                return Reply::Send;
            }
        };
        debug!(
            msh9 = %String::from_utf8_lossy(msh.raw_field(9)),
            msh10 = %String::from_utf8_lossy(msh.control_id()),
            "message received"
        );
        let downstream = match self.ctx.config.route(&msh) {
            Ok(index) => index,
            Err(code) => {
                Stats::bump(&stats.rejects_unrouted);
                Stats::bump(&self.counters.rejects_unrouted);
                warn!(
                    msh3 = %String::from_utf8_lossy(msh.raw_field(3)),
                    msh9 = %String::from_utf8_lossy(msh.raw_field(9)),
                    "no route for the message: rejected with AR, not forwarded"
                );
                let text = format!("no route for {}", String::from_utf8_lossy(msh.raw_field(9)));
                let ids = self.take_ids();
                let params = AckParams {
                    text: Some(text.as_bytes()),
                    error: Some(ErrorDetail {
                        code,
                        diagnostic: text.as_bytes(),
                    }),
                    ..ids.params()
                };
                let decision = ack::build_ack(
                    &msh,
                    Outcome::Rejected,
                    listener.ack_policy,
                    &params,
                    &mut self.reply,
                );
                self.ids = ids;
                return match decision {
                    AckDecision::Send(code) => {
                        self.answered(code, true);
                        Reply::Send
                    }
                    AckDecision::NotDue => Reply::Nothing,
                };
            }
        };
        match listener.ack_mode {
            AckMode::Local => {
                return self.accept_locally(&msh, payload);
            }
            AckMode::Durable => {
                return self.accept_durably(&msh, payload, downstream).await;
            }
            AckMode::Passthrough => {}
        }
        let expect_ack = expects_accept_ack(&msh);
        let ctx = self.ctx;
        match ctx
            .deliver(
                downstream,
                payload,
                msh.control_id(),
                expect_ack,
                &mut self.ack,
                &mut self.timing,
            )
            .await
        {
            Ok(code) => {
                Stats::bump(&stats.messages_delivered);
                Stats::add(&stats.bytes_forwarded, payload.len());
                let Some(code) = code else {
                    return Reply::Nothing;
                };
                Stats::bump(&stats.acks_passed_through);
                self.answered(code, false);
                std::mem::swap(&mut self.reply, &mut self.ack);
                Reply::Send
            }
            Err(failure) => {
                warn!(
                    downstream = %ctx.downstreams[downstream].name(),
                    msh9 = %String::from_utf8_lossy(msh.raw_field(9)),
                    msh10 = %String::from_utf8_lossy(msh.control_id()),
                    error = %failure,
                    "delivery failed after every retry"
                );
                match listener.on_downstream_failure {
                    OnDownstreamFailure::Close => {
                        Stats::bump(&stats.closes_downstream_failed);
                        Reply::Close
                    }
                    OnDownstreamFailure::Nak => {
                        let text = format!("not delivered: {failure}");
                        let ids = self.take_ids();
                        let params = AckParams {
                            text: Some(text.as_bytes()),
                            error: Some(ErrorDetail {
                                code: ErrorCode::ApplicationInternal,
                                diagnostic: text.as_bytes(),
                            }),
                            ..ids.params()
                        };
                        let decision = ack::build_ack(
                            &msh,
                            Outcome::Error,
                            listener.ack_policy,
                            &params,
                            &mut self.reply,
                        );
                        self.ids = ids;
                        match decision {
                            AckDecision::Send(code) => {
                                Stats::bump(&stats.naks_downstream_failed);
                                self.answered(code, true);
                                Reply::Send
                            }
                            AckDecision::NotDue => Reply::Nothing,
                        }
                    }
                }
            }
        }
    }

    /// `local` mode: queue the message for the forwarder and answer at once; when the queue is
    /// full, answer AE/CE instead (never a silent drop).
    fn accept_locally(&mut self, msh: &Msh<'_>, payload: &[u8]) -> Reply {
        let stats = &self.ctx.stats;
        let listener = self.listener;
        let queued = self
            .ctx
            .local_queue
            .as_ref()
            .is_some_and(|q| q.try_push(payload));
        let ids = self.take_ids();
        let (outcome, params) = if queued {
            (Outcome::Accepted, ids.params())
        } else {
            Stats::bump(&stats.local_queue_full);
            warn!("local mode: forwarding queue full; the sender gets an AE/CE and may resend");
            let text: &[u8] = b"relay queue full; resend later";
            let error = Some(ErrorDetail {
                code: ErrorCode::ApplicationInternal,
                diagnostic: text,
            });
            (
                Outcome::Error,
                AckParams {
                    text: Some(text),
                    error,
                    ..ids.params()
                },
            )
        };
        let decision = ack::build_ack(msh, outcome, listener.ack_policy, &params, &mut self.reply);
        self.ids = ids;
        match decision {
            AckDecision::Send(code) => {
                self.answered(code, true);
                Reply::Send
            }
            AckDecision::NotDue => Reply::Nothing,
        }
    }

    /// `durable` mode: journal the message, and answer AA/CA once the journal is synced; AE/CE
    /// (ERR 207) when the journal failed or is full (nothing is dropped silently: the sender
    /// keeps the message and may resend).
    async fn accept_durably(&mut self, msh: &Msh<'_>, payload: &[u8], downstream: usize) -> Reply {
        let ctx = self.ctx;
        let stats = &ctx.stats;
        let listener = self.listener;
        let forwarder = ctx
            .durable
            .as_ref()
            .expect("durable mode runs with a journal");
        let journal = &forwarder.journal;
        if let Some(window) = &listener.duplicates {
            match window.check(
                msh,
                payload,
                Instant::now(),
                &mut self.window_key,
                &mut self.reply,
            ) {
                Seen::New => {}
                Seen::ReusedControlId => {
                    Stats::bump(&self.counters.duplicate_window_reused_ids);
                    warn!(
                        msh3 = %String::from_utf8_lossy(msh.raw_field(3)),
                        msh10 = %String::from_utf8_lossy(msh.control_id()),
                        "control ID reused for a different message within the duplicate window: \
                         taken as a new message"
                    );
                }
                Seen::Resent(answer) => {
                    Stats::bump(&self.counters.duplicates_answered);
                    info!(
                        msh3 = %String::from_utf8_lossy(msh.raw_field(3)),
                        msh10 = %String::from_utf8_lossy(msh.control_id()),
                        "resend of a message already in custody: answered with its original \
                         ACK, not queued again"
                    );
                    return match answer {
                        Some(code) => {
                            self.answered(code, true);
                            Reply::Send
                        }
                        None => Reply::Nothing,
                    };
                }
            }
        }
        let pause = ctx
            .config
            .journal
            .as_ref()
            .is_some_and(|j| j.when_full == WhenJournalFull::Pause);
        if pause && journal.is_full(payload.len()) {
            debug!("journal full: waiting for delivered messages to free space before answering");
            journal.space_for(payload.len()).await;
        }
        let stored = match journal.append(&self.writer, self.lane, downstream, payload) {
            Ok(batch) => journal.committed(batch).await,
            Err(error) => Err(error),
        };
        let failure_text;
        let ids = self.take_ids();
        let (outcome, params) = match &stored {
            Ok(()) => (Outcome::Accepted, ids.params()),
            Err(error) => {
                match error {
                    JournalError::Full(_) => Stats::bump(&stats.journal_full_naks),
                    JournalError::Failed(_) => Stats::bump(&stats.journal_failed_naks),
                }
                warn!(
                    msh10 = %String::from_utf8_lossy(msh.control_id()),
                    %error,
                    "durable mode: message not taken into custody; the sender gets AE/CE and keeps it"
                );
                failure_text = format!("not accepted: {error}");
                let text = failure_text.as_bytes();
                (
                    Outcome::Error,
                    AckParams {
                        text: Some(text),
                        error: Some(ErrorDetail {
                            code: ErrorCode::ApplicationInternal,
                            diagnostic: text,
                        }),
                        ..ids.params()
                    },
                )
            }
        };
        let decision = ack::build_ack(msh, outcome, listener.ack_policy, &params, &mut self.reply);
        self.ids = ids;
        if let (Some(window), Ok(())) = (&listener.duplicates, &stored) {
            let answer = match decision {
                AckDecision::Send(code) => Some((code, self.reply.as_slice())),
                AckDecision::NotDue => None,
            };
            window.remember(msh, payload, answer, Instant::now(), &mut self.window_key);
        }
        match decision {
            AckDecision::Send(code) => {
                self.answered(code, true);
                Reply::Send
            }
            AckDecision::NotDue => Reply::Nothing,
        }
    }

    /// Waits for the next message on a connection with nothing buffered. A connection that
    /// stays quiet for [`BUFFER_RELEASE_DELAY`] gives its buffers back and waits holding none,
    /// so idle connections cost little memory while busy ones never reallocate.
    async fn wait_idle(
        &mut self,
        conn: &mut Conn,
        buf: &mut Vec<u8>,
        now: Instant,
        deadline: Instant,
        signal: &SharedCanceller,
    ) -> Result<(), ConnError> {
        let quiet = (now + BUFFER_RELEASE_DELAY).min(deadline);
        match conn.wait_readable(quiet, signal).await {
            Err(ConnError::TimedOut) if Instant::now() < deadline => {
                self.deframer.compact(buf);
                *buf = Vec::new();
                self.ack = Vec::new();
                self.reply = Vec::new();
                self.ids = GeneratedIds::default();
                conn.release_buffers();
                conn.wait_readable(deadline, signal).await
            }
            other => other,
        }
    }

    /// Logs and counts the framing tolerances used since the last call.
    fn log_events(&mut self, peer: std::net::SocketAddr) {
        while let Some(event) = self.deframer.poll_event() {
            Stats::bump(&self.ctx.stats.framing_events);
            debug!(%peer, code = event.code.as_str(), offset = event.offset, len = event.len, "framing tolerance used");
        }
    }
}

/// The table 0357 code for a header that cannot be read.
fn header_error_code(error: mllp::Hl7Error) -> ErrorCode {
    match error {
        mllp::Hl7Error::MissingHeader => ErrorCode::SegmentSequence,
        _ => ErrorCode::DataType,
    }
}
