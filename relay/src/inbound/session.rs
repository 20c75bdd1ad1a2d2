//! One inbound connection: handshake, read, deframe, answer each message, in order.
//!
//! HL7 original mode is stop-and-wait, and so is a session: a message is delivered and
//! answered before the next one in the buffer is looked at, which keeps per-connection order.
//! Everything that can go wrong with a sender ends this connection only, after a log line and
//! a counter; even a panic inside the session ends only this connection (the worker contains
//! it).

use std::rc::Rc;
use std::time::{Duration, Instant};

use mllp::ack::{AckCode, ErrorCode, Outcome};
use mllp::batch::{Batch, LineEndings, is_batch, split_batch};
use mllp::charset::{Charset, charset_of, transcode_from_utf8, transcode_to_utf8};
use mllp::frame::Deframer;
use mllp::hl7::{HeaderEvent, Msh, normalize_segment_terminators};
use netio::conn::{Conn, ConnError, SharedCanceller, shared_canceller};
use netio::tls::CertIdentity;
use tracing::{debug, info, warn};

use super::Inbound;
use super::accept::Place;
use super::answer::{Answer, Refusal};
use crate::audit::Record;
use crate::config::{
    AckMode, BatchMode, CharsetMode, Config, MissingControlId, OnDownstreamFailure, WhenJournalFull,
};
use crate::custody::duplicates::Seen;
use crate::custody::journal::{JournalError, Writer};
use crate::identity::{self, Mismatch};
use crate::metrics::{ListenerCounter, ListenerStats, Stats};
use crate::outbound::{Expect, Timing};
use crate::route::{self, Origin};

/// Read size for a sender's connection: a few TCP segments. The buffer grows for bigger
/// frames (up to the frame limit) and is reused for the connection's life.
const READ_CHUNK: usize = 16 * 1024;

/// How long a connection may sit quiet before it gives its buffers back: a sender that keeps
/// sending never reallocates, an idle one holds none (the goal is ≤ 16 KiB per idle TLS
/// connection).
const BUFFER_RELEASE_DELAY: Duration = Duration::from_secs(1);

/// What to do with the sender after one message.
enum Reply {
    /// Send the answer's bytes (an ACK payload), framed.
    Send,
    /// Nothing is due (MSH-15/16 or the ACK policy said so).
    Nothing,
    /// Close the connection without answering.
    Close,
}

impl Reply {
    /// Send when an ACK is due, nothing otherwise.
    fn due(code: Option<AckCode>) -> Self {
        if code.is_some() {
            Self::Send
        } else {
            Self::Nothing
        }
    }
}

/// Runs a session to its end, with the settings and counters of the listener that accepted the
/// connection; never panics on input, never returns an error (it logs).
///
/// `place` is the connection's place on its listener (which listener, and the worker's shared
/// state), held for as long as the session runs and given back when dropped.
pub(super) async fn run(mut conn: Conn, place: Place) {
    let (index, inbound) = (place.index, &*place.inbound);
    let config = inbound.config();
    let listener = &config.listeners[index];
    let stats = &inbound.stats;
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
            stats.count(counters, ListenerCounter::TlsHandshakeFailures, 1);
            if let ConnError::Tls(tls_error) = &error {
                // Reasons rustls decides before our verifier runs (no certificate at all).
                listener.tls_rejections.note_handshake_error(tls_error);
            }
            warn!(listener = %listener.name, %peer, %error, "TLS handshake failed; connection closed");
            return;
        }
        debug!(%peer, "TLS handshake complete");
    }
    let opened = Instant::now();
    let client = conn.peer_certificate().map(CertIdentity::of);
    let tls = conn.tls_version().unwrap_or("off");
    match &client {
        Some(client) => info!(
            listener = %listener.name,
            %peer,
            tls,
            client_subject = client.subject.as_deref().unwrap_or("<unparsable>"),
            client_thumbprint = %client.thumbprint,
            "connection opened"
        ),
        None => info!(listener = %listener.name, %peer, tls, "connection opened"),
    }

    let mut session = Session {
        inbound,
        config: Rc::clone(&config),
        index,
        counters,
        deframer: Deframer::new(listener.framing),
        ack: Vec::new(),
        answer: Answer::default(),
        timing: Timing::default(),
        lane: inbound.next_lane(),
        writer: Writer::default(),
        window_key: Vec::new(),
        header_event_warned: false,
        missing_control_id_warned: false,
        sender_warned: false,
        repaired: Vec::new(),
        client,
        delivery_failed: false,
        transcoded: Vec::new(),
        ack_charset: None,
        messages: 0,
        peer,
        audit_sender: None,
        audit_downstream: None,
        audit_answer: None,
        audit_line: String::new(),
    };
    let ended = serve(&mut session, &mut conn).await;
    if ended.closes_gracefully() {
        conn.close().await;
    }
    info!(
        listener = %listener.name,
        %peer,
        messages = session.messages,
        duration = ?opened.elapsed(),
        reason = ended.as_str(),
        "connection closed"
    );
}

/// Why a session ended: the `reason` of its closing log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The sender closed between messages.
    SenderClosed,
    /// The sender closed inside a frame.
    SenderClosedMidFrame,
    /// Nothing arrived within the idle timeout.
    IdleTimeout,
    /// A frame did not complete within the frame deadline.
    FrameDeadline,
    /// Bytes that are no frame.
    FramingError,
    /// The relay is shutting down.
    ShuttingDown,
    /// The ACK could not be written to the sender.
    AckWriteFailed,
    /// Reading from the sender failed.
    ReadFailed,
    /// The downstream failed and the listener closes instead of a NAK.
    DownstreamFailed,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Self::SenderClosed => "closed by the sender",
            Self::SenderClosedMidFrame => "closed by the sender inside a frame",
            Self::IdleTimeout => "idle timeout",
            Self::FrameDeadline => "frame deadline expired",
            Self::FramingError => "framing error",
            Self::ShuttingDown => "relay shutting down",
            Self::AckWriteFailed => "writing an ACK failed",
            Self::ReadFailed => "read failed",
            Self::DownstreamFailed => "downstream failed (on_downstream_failure = close)",
        }
    }

    /// Whether the relay closes its side in order (TLS close_notify, FIN); otherwise the
    /// connection is already gone and is only dropped.
    fn closes_gracefully(self) -> bool {
        !matches!(
            self,
            Self::SenderClosed
                | Self::SenderClosedMidFrame
                | Self::AckWriteFailed
                | Self::ReadFailed
        )
    }
}

/// Reads, deframes and answers messages until the connection ends, and says why.
async fn serve(session: &mut Session<'_>, conn: &mut Conn) -> Ended {
    let (inbound, counters) = (session.inbound, session.counters);
    let stats = &inbound.stats;
    let peer = conn.peer();
    // Cancels this session's reads between messages at shutdown; one for the session's life
    // (a signal is replaced only once fired, and a fired one ends the session).
    let idle_signal = shared_canceller();
    let _registration = IdleRegistration {
        inbound,
        id: inbound.sessions.register_idle(&idle_signal),
    };
    let mut buf: Vec<u8> = Vec::new();
    // When the frame being received began (for the whole-frame deadline).
    let mut frame_started: Option<(u64, Instant)> = None;
    loop {
        // This round's settings: a reload takes effect from the next message on.
        let config = Rc::clone(&session.config);
        let listener = &config.listeners[session.index];
        // Answer every complete message already buffered, in order.
        loop {
            let frame = match session.deframer.decode(&buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    stats.count(counters, ListenerCounter::FramingErrors, 1);
                    warn!(listener = %listener.name, %peer, %error, "framing error; connection closed");
                    return Ended::FramingError;
                }
            };
            session.log_events(peer);
            let payload = frame.payload(&buf);
            let started = Instant::now();
            let reply = session.handle(payload).await;
            match reply {
                Reply::Send => {
                    let framing = listener.framing;
                    let reply = &session.answer.bytes;
                    let parts: [&[u8]; 3] = [&[framing.start()], reply, framing.end()];
                    let deadline = Instant::now() + listener.write_timeout;
                    if let Err(error) = conn.write_all(&parts, deadline).await {
                        warn!(%peer, %error, "writing the ACK failed; connection closed");
                        return Ended::AckWriteFailed;
                    }
                    stats.count(counters, ListenerCounter::BytesOut, reply.len());
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
                Reply::Close => return Ended::DownstreamFailed,
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
        if inbound.sessions.shutting_down() && in_frame.is_none() {
            debug!(%peer, "shutting down: connection closed between messages");
            return Ended::ShuttingDown;
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
                    .wait_idle(conn, &mut buf, now, deadline, signal)
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
                stats.count(counters, ListenerCounter::BytesIn, n);
            }
            Err(ConnError::Closed) => {
                if let Err(error) = session.deframer.finish() {
                    stats.count(counters, ListenerCounter::FramingErrors, 1);
                    warn!(%peer, %error, "sender closed the connection mid-frame");
                    return Ended::SenderClosedMidFrame;
                }
                return Ended::SenderClosed;
            }
            Err(ConnError::TimedOut) => {
                if frame_started
                    .is_some_and(|(_, at)| Instant::now() >= at + listener.frame_deadline)
                {
                    stats.count(counters, ListenerCounter::FrameDeadlineExpired, 1);
                    warn!(%peer, deadline = ?listener.frame_deadline, "frame not completed within the frame deadline; connection closed");
                    return Ended::FrameDeadline;
                }
                stats.count(counters, ListenerCounter::IdleTimeouts, 1);
                return Ended::IdleTimeout;
            }
            Err(ConnError::Cancelled) => return Ended::ShuttingDown,
            Err(error) => {
                warn!(%peer, %error, "read failed; connection closed");
                return Ended::ReadFailed;
            }
        }
    }
}

/// The per-connection state that outlives one message.
struct Session<'c> {
    inbound: &'c Inbound,
    /// The listener that accepted the connection, and its index in `Config::listeners`.
    config: Rc<Config>,
    index: usize,
    /// Its counters.
    counters: &'c ListenerStats,
    deframer: Deframer,
    /// The downstream's ACK payload for the current message.
    ack: Vec<u8>,
    /// What goes back to the sender.
    answer: Answer,
    /// When the current message was written downstream and acknowledged.
    timing: Timing,
    /// `durable` mode: the lane key that keeps this connection's messages in order.
    lane: u32,
    /// `durable` mode: this connection as a sender the group commit may wait for.
    writer: Writer,
    /// `durable` mode with a duplicate window: scratch space for the window's key.
    window_key: Vec<u8>,
    /// Whether an unusual MSH-2 was warned about on this connection: once is enough (a sender
    /// writes every header the same way), the rest go to the debug log and the counters.
    header_event_warned: bool,
    /// The same for a message without MSH-10 that is forwarded.
    missing_control_id_warned: bool,
    /// The same for a message whose sender identity the listener refuses.
    sender_warned: bool,
    /// With `normalize_segment_terminators`: the message with its terminators rewritten.
    repaired: Vec<u8>,
    /// The client certificate, if the sender presented one (logged when the connection opens;
    /// sender identities are checked against it).
    client: Option<CertIdentity>,
    /// Frames received on this connection (for its closing log line).
    messages: u64,
    /// The sender's address.
    peer: std::net::SocketAddr,
    /// For the audit record of the message being handled: its sender identity, where it was
    /// routed, and the answer the sender got (code, and whether the relay wrote it).
    audit_sender: Option<usize>,
    audit_downstream: Option<usize>,
    audit_answer: Option<(AckCode, bool)>,
    /// Scratch space for one audit record.
    audit_line: String,
    /// Whether the last message could not be delivered or taken into custody (the receiver,
    /// the journal or the queue failed): the rest of a batch is then not attempted.
    delivery_failed: bool,
    /// For a downstream that takes UTF-8: the message transcoded.
    transcoded: Vec<u8>,
    /// While a transcoded message is delivered: the sender's character set, for its ACK.
    ack_charset: Option<Charset>,
}

/// Keeps a session's idle signal registered with its worker (so that shutdown can cancel the
/// session's reads between messages) for the session's life.
struct IdleRegistration<'c> {
    inbound: &'c Inbound,
    id: u64,
}

impl Drop for IdleRegistration<'_> {
    fn drop(&mut self) {
        self.inbound.sessions.unregister_idle(self.id);
    }
}

impl Session<'_> {
    /// Counts an ACK with `code` about to be sent to the sender.
    fn answered(&mut self, code: AckCode, generated: bool) {
        self.audit_answer = Some((code, generated));
        self.inbound
            .stats
            .ack_to_sender(self.counters, code, generated);
    }

    /// Writes the relay's own ACK for `msh` with `outcome` (and `refusal`'s ERR) into the
    /// answer and counts it; `None` when none is due. Every ACK the relay writes itself for a
    /// message with a header comes from here.
    fn generate_ack(
        &mut self,
        msh: &Msh<'_>,
        outcome: Outcome,
        refusal: Option<Refusal<'_>>,
    ) -> Option<AckCode> {
        let policy = self.config.listeners[self.index].ack_policy;
        let code = self
            .answer
            .generate(msh, outcome, refusal, policy, &self.inbound.ids);
        if let Some(code) = code {
            self.answered(code, true);
        }
        code
    }

    /// [`generate_ack`](Self::generate_ack), and what to do with the sender.
    fn generate(&mut self, msh: &Msh<'_>, outcome: Outcome, refusal: Option<Refusal<'_>>) -> Reply {
        Reply::due(self.generate_ack(msh, outcome, refusal))
    }

    /// Answers one frame: a batch as the listener says, anything else as one message. The
    /// configuration in force is taken first, so a reload applies from the next message.
    async fn handle(&mut self, payload: &[u8]) -> Reply {
        self.config = self.inbound.config();
        let stats = &self.inbound.stats;
        stats.count(self.counters, ListenerCounter::MessagesIn, 1);
        self.messages += 1;
        if is_batch(payload) {
            // Boxed: batches are rare, and inline their state would sit in every session.
            return Box::pin(self.handle_batch(payload)).await;
        }
        self.handle_one(payload).await
    }

    /// One message, with its segment terminators repaired first when the listener says so,
    /// and its audit record when there is an audit trail.
    async fn handle_one(&mut self, payload: &[u8]) -> Reply {
        let config = Rc::clone(&self.config);
        let listener = &config.listeners[self.index];
        let started = self.inbound.audit.enabled().then(Instant::now);
        self.audit_sender = None;
        self.audit_downstream = None;
        self.audit_answer = None;
        let reply = if listener.normalize_segment_terminators {
            self.handle_repaired(payload).await
        } else {
            self.handle_message(payload).await
        };
        if let Some(started) = started {
            self.audit(payload, started);
        }
        reply
    }

    /// Writes the audit record of the message just handled.
    fn audit(&mut self, payload: &[u8], started: Instant) {
        let config = Rc::clone(&self.config);
        let listener = &config.listeners[self.index];
        let msh = Msh::parse_lenient(payload).ok();
        let record = Record {
            listener: &listener.name,
            peer: self.peer,
            client_subject: self.client.as_ref().and_then(|c| c.subject.as_deref()),
            sender: self.audit_sender.map(|i| listener.senders[i].name.as_str()),
            msh: msh.as_ref(),
            downstream: self
                .audit_downstream
                .map(|i| config.downstreams[i].name.as_str()),
            ack: self.audit_answer,
            latency: started.elapsed(),
        };
        let mut line = std::mem::take(&mut self.audit_line);
        self.inbound
            .audit
            .record(&record, &self.inbound.stats, &mut line);
        self.audit_line = line;
    }

    /// [`handle_message`](Self::handle_message) for a listener that rewrites LF and CRLF
    /// segment terminators to CR first; each message that needed it is counted.
    async fn handle_repaired(&mut self, payload: &[u8]) -> Reply {
        let mut repaired = std::mem::take(&mut self.repaired);
        repaired.clear();
        repaired.extend_from_slice(payload);
        // A frame without a header is left as it is: `handle` refuses it with its reason.
        if normalize_segment_terminators(&mut repaired).is_ok_and(|runs| runs > 0) {
            let stats = &self.inbound.stats;
            stats.count(
                self.counters,
                ListenerCounter::SegmentTerminatorsRepaired,
                1,
            );
        }
        let reply = self.handle_message(&repaired).await;
        self.repaired = repaired;
        reply
    }

    /// Delivers one message and prepares the sender's answer.
    async fn handle_message(&mut self, payload: &[u8]) -> Reply {
        let config = Rc::clone(&self.config);
        let listener = &config.listeners[self.index];
        let stats = &self.inbound.stats;
        self.delivery_failed = false;
        self.answer.bytes.clear();
        self.ack.clear();
        self.timing = Timing::default();

        // Lenient: a relay must not refuse a header the receiver behind it reads.
        let msh = match Msh::parse_lenient(payload) {
            Ok(msh) => msh,
            Err(error) => {
                stats.count(self.counters, ListenerCounter::RejectsBadHeader, 1);
                warn!(%error, "message without a readable MSH: rejected with AR, not forwarded");
                let text = format!("message rejected: {error}");
                let refusal = Refusal {
                    code: header_error_code(error),
                    text: text.as_bytes(),
                };
                self.answer.reject_headerless(refusal, &self.inbound.ids);
                self.answered(AckCode::AR, true);
                return Reply::Send;
            }
        };
        debug!(
            msh9 = %String::from_utf8_lossy(msh.raw_field(9)),
            msh10 = %String::from_utf8_lossy(msh.control_id()),
            "message received"
        );
        if let Some(event) = msh.event() {
            self.header_event(event, &msh);
        }
        if msh.control_id().trim_ascii().is_empty()
            && let Some(reply) = self.missing_control_id(&msh)
        {
            return reply;
        }
        let sender = match self.identify(&msh) {
            Ok(sender) => sender,
            Err(reply) => return reply,
        };
        let config = Rc::clone(&self.config);
        let origin = Origin {
            listener: &listener.name,
            sender: sender.map(|i| listener.senders[i].name.as_str()),
        };
        let downstream = match route::pick(&config.routes, config.default_downstream, &msh, origin)
        {
            Ok(index) => index,
            Err(code) => {
                stats.count(self.counters, ListenerCounter::RejectsUnrouted, 1);
                warn!(
                    msh3 = %String::from_utf8_lossy(msh.raw_field(3)),
                    msh9 = %String::from_utf8_lossy(msh.raw_field(9)),
                    "no route for the message: rejected with AR, not forwarded"
                );
                let text = format!("no route for {}", String::from_utf8_lossy(msh.raw_field(9)));
                let refusal = Refusal {
                    code,
                    text: text.as_bytes(),
                };
                return self.generate(&msh, Outcome::Rejected, Some(refusal));
            }
        };
        self.audit_downstream = Some(downstream);
        let transcode = config.downstreams[downstream].transcode_to.is_some();
        if transcode || listener.charset == CharsetMode::Check {
            // Boxed: opt-in, and inline its state would sit in every session.
            return Box::pin(self.with_charset(&msh, payload, downstream, transcode)).await;
        }
        self.dispatch(&msh, payload, downstream).await
    }

    /// Hands a routed message to the listener's ACK mode.
    async fn dispatch(&mut self, msh: &Msh<'_>, payload: &[u8], downstream: usize) -> Reply {
        let config = Rc::clone(&self.config);
        let listener = &config.listeners[self.index];
        match listener.ack_mode {
            AckMode::Passthrough => self.pass_through(msh, payload, downstream).await,
            AckMode::Local => self.accept_locally(msh, payload, downstream),
            AckMode::Durable => self.accept_durably(msh, payload, downstream).await,
        }
    }

    /// [`dispatch`](Self::dispatch) for a listener that checks character sets or a downstream
    /// that takes UTF-8: the message's character set (MSH-18, or the listener's default) is
    /// read, the payload checked against it (`charset = "check"`) and transcoded (with
    /// MSH-18 rewritten) for the downstream; the receiver's ACK goes back in the sender's
    /// set. A message that fails any of it gets AR, and nothing is forwarded.
    async fn with_charset(
        &mut self,
        msh: &Msh<'_>,
        payload: &[u8],
        downstream: usize,
        transcode: bool,
    ) -> Reply {
        let config = Rc::clone(&self.config);
        let listener = &config.listeners[self.index];
        let charset = match charset_of(msh, listener.default_charset) {
            Ok(charset) => charset,
            Err(error) => return self.refuse_charset(msh, error),
        };
        if listener.charset == CharsetMode::Check
            && let Err(error) = charset.check(payload)
        {
            return self.refuse_charset(msh, error);
        }
        if !transcode {
            return self.dispatch(msh, payload, downstream).await;
        }
        let mut transcoded = std::mem::take(&mut self.transcoded);
        let reply = match transcode_to_utf8(payload, charset, &mut transcoded) {
            Ok(()) => {
                Stats::bump(&self.inbound.stats.messages_transcoded);
                self.ack_charset = (charset != Charset::UTF8).then_some(charset);
                let reply = self.dispatch(msh, &transcoded, downstream).await;
                self.ack_charset = None;
                reply
            }
            Err(error) => self.refuse_charset(msh, error),
        };
        self.transcoded = transcoded;
        reply
    }

    /// AR for a message not in the character set it declares (or naming none the relay
    /// knows), with the offset and byte, or the name, in the ERR.
    fn refuse_charset(&mut self, msh: &Msh<'_>, error: mllp::CharsetError) -> Reply {
        let stats = &self.inbound.stats;
        stats.count(self.counters, ListenerCounter::RejectsCharset, 1);
        warn!(
            msh10 = %String::from_utf8_lossy(msh.control_id()),
            %error,
            "message not in its declared character set: rejected with AR, not forwarded"
        );
        let text = format!("message rejected: {error}");
        let refusal = Refusal {
            code: error.error_code(),
            text: text.as_bytes(),
        };
        self.generate(msh, Outcome::Rejected, Some(refusal))
    }

    /// Puts the receiver's UTF-8 ACK (in the answer) back into the sender's character set,
    /// with the sender's MSH-18. An ACK that is not valid UTF-8 goes back unchanged (counted).
    fn transcode_ack(&mut self, charset: Charset, sender_msh18: &[u8]) {
        let stats = &self.inbound.stats;
        match transcode_from_utf8(&self.answer.bytes, charset, sender_msh18, &mut self.ack) {
            Ok(unmappable) => {
                std::mem::swap(&mut self.answer.bytes, &mut self.ack);
                Stats::bump(&stats.acks_transcoded);
                Stats::add(&stats.unmappable_characters, unmappable);
            }
            Err(error) => {
                Stats::bump(&stats.acks_not_transcoded);
                warn!(%error, %charset, "the receiver's ACK could not be put back into the sender's character set: passed unchanged");
            }
        }
    }

    /// `passthrough` mode: deliver, and hand the sender the receiver's own ACK byte for byte;
    /// when delivery fails after every retry, an AE/CE (ERR 207) or a close, as configured.
    async fn pass_through(&mut self, msh: &Msh<'_>, payload: &[u8], downstream: usize) -> Reply {
        let config = Rc::clone(&self.config);
        let listener = &config.listeners[self.index];
        let stats = &self.inbound.stats;
        let delivery = self.inbound.delivery.get();
        let delivered = delivery
            .deliver(
                downstream,
                payload,
                msh.control_id(),
                Expect::ack_of(msh),
                &mut self.ack,
                &mut self.timing,
            )
            .await;
        let failure = match delivered {
            Ok(code) => {
                Stats::bump(&stats.messages_delivered);
                Stats::add(&stats.bytes_forwarded, payload.len());
                let Some(code) = code else {
                    return Reply::Nothing;
                };
                Stats::bump(&stats.acks_passed_through);
                self.answered(code, false);
                std::mem::swap(&mut self.answer.bytes, &mut self.ack);
                if let Some(charset) = self.ack_charset {
                    self.transcode_ack(charset, msh.charset());
                }
                return Reply::Send;
            }
            Err(failure) => failure,
        };
        self.delivery_failed = true;
        warn!(
            downstream = %delivery.downstream(downstream).name(),
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
                let refusal = Refusal {
                    code: ErrorCode::ApplicationInternal,
                    text: text.as_bytes(),
                };
                let reply = self.generate(msh, Outcome::Error, Some(refusal));
                if matches!(reply, Reply::Send) {
                    Stats::bump(&stats.naks_downstream_failed);
                }
                reply
            }
        }
    }

    /// `local` mode: queue the message for the forwarder and answer at once; when the queue is
    /// full, answer AE/CE instead (never a silent drop).
    fn accept_locally(&mut self, msh: &Msh<'_>, payload: &[u8], downstream: usize) -> Reply {
        let queued = self
            .inbound
            .custody
            .local
            .as_ref()
            .is_some_and(|q| q.try_push(downstream, payload));
        if queued {
            return self.generate(msh, Outcome::Accepted, None);
        }
        self.delivery_failed = true;
        Stats::bump(&self.inbound.stats.local_queue_full);
        warn!("local mode: forwarding queue full; the sender gets an AE/CE and may resend");
        let refusal = Refusal {
            code: ErrorCode::ApplicationInternal,
            text: b"relay queue full; resend later",
        };
        self.generate(msh, Outcome::Error, Some(refusal))
    }

    /// `durable` mode: journal the message, and answer AA/CA once the journal is synced; AE/CE
    /// (ERR 207) when the journal failed or is full (nothing is dropped silently: the sender
    /// keeps the message and may resend).
    async fn accept_durably(&mut self, msh: &Msh<'_>, payload: &[u8], downstream: usize) -> Reply {
        let inbound = self.inbound;
        let stats = &inbound.stats;
        let forwarder = inbound
            .custody
            .durable
            .as_ref()
            .expect("durable mode runs with a journal");
        let journal = &forwarder.journal;
        let window = inbound.custody.duplicates.of(self.index);
        if let Some(window) = window {
            match window.check(
                msh,
                payload,
                Instant::now(),
                &mut self.window_key,
                &mut self.answer.bytes,
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
                    if let Some(code) = answer {
                        self.answered(code, true);
                    }
                    return Reply::due(answer);
                }
            }
        }
        let pause = self
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
        let code = match &stored {
            Ok(()) => self.generate_ack(msh, Outcome::Accepted, None),
            Err(error) => {
                self.delivery_failed = true;
                match error {
                    JournalError::Full(_) => Stats::bump(&stats.journal_full_naks),
                    JournalError::Failed(_) => Stats::bump(&stats.journal_failed_naks),
                }
                warn!(
                    msh10 = %String::from_utf8_lossy(msh.control_id()),
                    %error,
                    "durable mode: message not taken into custody; the sender gets AE/CE and keeps it"
                );
                let text = format!("not accepted: {error}");
                let refusal = Refusal {
                    code: ErrorCode::ApplicationInternal,
                    text: text.as_bytes(),
                };
                self.generate_ack(msh, Outcome::Error, Some(refusal))
            }
        };
        if let (Some(window), Ok(())) = (window, &stored) {
            let answer = code.map(|code| (code, self.answer.bytes.as_slice()));
            window.remember(msh, payload, answer, Instant::now(), &mut self.window_key);
        }
        Reply::due(code)
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
                self.repaired = Vec::new();
                self.transcoded = Vec::new();
                self.answer.release();
                conn.release_buffers();
                conn.wait_readable(deadline, signal).await
            }
            other => other,
        }
    }

    /// A batch frame, as the listener's `batch` says. A listener that refuses batches, or a
    /// batch whose structure or counts (BTS-1, FTS-1) are wrong, gets one AR for the whole
    /// frame and nothing in it is forwarded.
    async fn handle_batch(&mut self, payload: &[u8]) -> Reply {
        let config = Rc::clone(&self.config);
        let listener = &config.listeners[self.index];
        let stats = &self.inbound.stats;
        stats.count(self.counters, ListenerCounter::BatchesIn, 1);
        if listener.batch == BatchMode::Reject {
            return self.refuse_batch(
                ErrorCode::SegmentSequence,
                "batch refused: this listener takes one message per frame (batch = \"reject\"); \
                 nothing in it was forwarded",
            );
        }
        let line_endings = if listener.normalize_segment_terminators {
            LineEndings::CrOrLf
        } else {
            LineEndings::Cr
        };
        let batch = match split_batch(payload, line_endings) {
            Ok(batch) => batch,
            Err(error) => {
                let text = format!("batch refused: {error}; nothing in it was forwarded");
                return self.refuse_batch(ErrorCode::SegmentSequence, &text);
            }
        };
        if let Some(event) = batch.header_event {
            stats.header_event(self.counters, event);
        }
        debug!(
            messages = batch.messages.len(),
            batches = batch.groups.len(),
            "batch received"
        );
        match listener.batch {
            BatchMode::Forward => self.forward_batch(payload, &batch).await,
            _ => self.split_batch(payload, &batch).await,
        }
    }

    /// One AR for a whole batch frame (MSA-2 empty: no single message is named).
    fn refuse_batch(&mut self, code: ErrorCode, text: &str) -> Reply {
        let stats = &self.inbound.stats;
        stats.count(self.counters, ListenerCounter::RejectsBatch, 1);
        warn!(reason = text, "batch refused with AR, not forwarded");
        let refusal = Refusal {
            code,
            text: text.as_bytes(),
        };
        self.answer.reject_headerless(refusal, &self.inbound.ids);
        self.answered(AckCode::AR, true);
        Reply::Send
    }

    /// `batch = "split"`: each message delivered on its own, in order, exactly as a frame of
    /// its own would be (identity, route, ACK mode); then one acknowledgement batch with each
    /// message's ACK. A message refused by the receiver (or the relay) does not stop the
    /// rest; one that could not be delivered or kept does, so that order is kept: it and
    /// every later message are answered AE/CE.
    async fn split_batch(&mut self, input: &[u8], batch: &Batch) -> Reply {
        let count = batch.messages.len();
        let mut acks: Vec<Option<Vec<u8>>> = Vec::with_capacity(count);
        let mut failed = None;
        for (index, range) in batch.messages.iter().enumerate() {
            let message = &input[range.clone()];
            if failed.is_some() {
                let text = "not attempted: an earlier message of this batch could not be \
                            delivered; resend it";
                acks.push(self.error_ack(message, text));
                continue;
            }
            match self.handle_one(message).await {
                Reply::Send => acks.push(Some(self.answer.bytes.clone())),
                Reply::Nothing => acks.push(None),
                Reply::Close => return Reply::Close,
            }
            if self.delivery_failed {
                failed = Some(index);
            }
        }
        if let Some(index) = failed {
            warn!(
                message = index + 1,
                not_attempted = count - index - 1,
                "batch: a message could not be delivered; the later ones were not attempted \
                 (each answered AE/CE)"
            );
        }
        let acks: Vec<Option<&[u8]>> = acks.iter().map(Option::as_deref).collect();
        self.answer
            .write_ack_batch(input, batch, &acks, &self.inbound.ids);
        Reply::Send
    }

    /// `batch = "forward"`: the whole frame to the receiver as one unit, and its answer back
    /// byte for byte. Every message must be one this listener takes (sender identity) and all
    /// must route to the same downstream, else the batch is refused whole.
    async fn forward_batch(&mut self, input: &[u8], batch: &Batch) -> Reply {
        let config = Rc::clone(&self.config);
        let listener = &config.listeners[self.index];
        let mut target = None;
        for (index, range) in batch.messages.iter().enumerate() {
            let n = index + 1;
            let Ok(msh) = Msh::parse_lenient(&input[range.clone()]) else {
                let text = format!("batch refused: message {n} has no readable MSH");
                return self.refuse_batch(ErrorCode::DataType, &text);
            };
            let rules = &listener.senders;
            let sender = if rules.is_empty() {
                None
            } else {
                match identity::identify(rules, self.client.as_ref(), &msh) {
                    Ok(i) => Some(i),
                    Err(mismatch) => {
                        let stats = &self.inbound.stats;
                        stats.count(self.counters, ListenerCounter::RejectsSender, 1);
                        let text = format!(
                            "batch refused: message {n}: {mismatch} is not one this connection \
                             may send as on listener {}",
                            listener.name
                        );
                        return self.refuse_batch(ErrorCode::TableValueNotFound, &text);
                    }
                }
            };
            let origin = Origin {
                listener: &listener.name,
                sender: sender.map(|i| rules[i].name.as_str()),
            };
            let downstream =
                match route::pick(&config.routes, config.default_downstream, &msh, origin) {
                    Ok(downstream) => downstream,
                    Err(code) => {
                        let text = format!("batch refused: message {n} matches no route");
                        return self.refuse_batch(code, &text);
                    }
                };
            if target.is_some_and(|t| t != downstream) {
                let text = format!(
                    "batch refused: message {n} routes to another downstream than message 1; \
                     a forwarded batch goes to one receiver (batch = \"split\" routes each \
                     message)"
                );
                return self.refuse_batch(ErrorCode::ApplicationInternal, &text);
            }
            target = Some(downstream);
        }
        // `split_batch` returns at least one message.
        let Some(downstream) = target else {
            return self.refuse_batch(ErrorCode::SegmentSequence, "batch refused: no message");
        };
        self.answer.bytes.clear();
        self.ack.clear();
        self.timing = Timing::default();
        let inbound = self.inbound;
        let stats = &inbound.stats;
        let delivered = inbound
            .delivery
            .get()
            .deliver(
                downstream,
                input,
                b"",
                Expect::AnyFrame,
                &mut self.ack,
                &mut self.timing,
            )
            .await;
        match delivered {
            Ok(_) => {
                Stats::bump(&stats.messages_delivered);
                Stats::add(&stats.bytes_forwarded, input.len());
                Stats::bump(&stats.acks_passed_through);
                std::mem::swap(&mut self.answer.bytes, &mut self.ack);
                Reply::Send
            }
            Err(failure) => {
                warn!(
                    downstream = %inbound.delivery.get().downstream(downstream).name(),
                    messages = batch.messages.len(),
                    error = %failure,
                    "batch delivery failed after every retry"
                );
                if listener.on_downstream_failure == OnDownstreamFailure::Close {
                    Stats::bump(&stats.closes_downstream_failed);
                    return Reply::Close;
                }
                let text = format!("not delivered: {failure}");
                let acks: Vec<Option<Vec<u8>>> = batch
                    .messages
                    .iter()
                    .map(|range| self.error_ack(&input[range.clone()], &text))
                    .collect();
                Stats::bump(&stats.naks_downstream_failed);
                let acks: Vec<Option<&[u8]>> = acks.iter().map(Option::as_deref).collect();
                self.answer
                    .write_ack_batch(input, batch, &acks, &self.inbound.ids);
                Reply::Send
            }
        }
    }

    /// The relay's AE/CE (ERR 207, `text`) for one message of a batch, if one is due.
    fn error_ack(&mut self, message: &[u8], text: &str) -> Option<Vec<u8>> {
        let msh = Msh::parse_lenient(message).ok()?;
        let refusal = Refusal {
            code: ErrorCode::ApplicationInternal,
            text: text.as_bytes(),
        };
        self.generate_ack(&msh, Outcome::Error, Some(refusal))
            .map(|_| self.answer.bytes.clone())
    }

    /// The listener's name for this message's sender (an index into its `senders`), or `None`
    /// when the listener checks no identities.
    ///
    /// # Errors
    /// The AR (or nothing, per policy) for a sender claiming an MSH-3/MSH-4 its listener or
    /// certificate may not send as: counted, logged, and not forwarded.
    fn identify(&mut self, msh: &Msh<'_>) -> Result<Option<usize>, Reply> {
        let config = Rc::clone(&self.config);
        let listener = &config.listeners[self.index];
        let rules = &listener.senders;
        if rules.is_empty() {
            return Ok(None);
        }
        let stats = &self.inbound.stats;
        match identity::identify(rules, self.client.as_ref(), msh) {
            Ok(index) => {
                stats.sender_message(self.counters, &rules[index].name);
                self.audit_sender = Some(index);
                debug!(sender = %rules[index].name, "sender identified");
                Ok(Some(index))
            }
            Err(mismatch) => {
                stats.count(self.counters, ListenerCounter::RejectsSender, 1);
                let claimed = format!(
                    "{}/{}",
                    String::from_utf8_lossy(msh.raw_field(3)),
                    String::from_utf8_lossy(msh.raw_field(4))
                );
                let client = self.client.as_ref().map_or("no client certificate", |c| {
                    c.subject.as_deref().unwrap_or("<unparsable>")
                });
                if first_time(&mut self.sender_warned) {
                    warn!(%mismatch, msh3_msh4 = %claimed, %client, "sender identity not allowed on this listener: rejected with AR, not forwarded (warned once per connection, counted in rejects_sender_total)");
                } else {
                    debug!(%mismatch, msh3_msh4 = %claimed, %client, "sender identity not allowed on this listener: rejected with AR");
                }
                let text = match mismatch {
                    Mismatch::Client => format!(
                        "sender not allowed: no [[listener.sender]] rule covers this connection \
                         ({client}) on listener {}",
                        listener.name
                    ),
                    Mismatch::Application | Mismatch::Facility => format!(
                        "sender not allowed: {mismatch} of {claimed} is not one this connection \
                         ({client}) may send as on listener {}",
                        listener.name
                    ),
                };
                let refusal = Refusal {
                    code: ErrorCode::TableValueNotFound,
                    text: text.as_bytes(),
                };
                Err(self.generate(msh, Outcome::Rejected, Some(refusal)))
            }
        }
    }

    /// Counts a header read past leniently, and warns about the first on the connection.
    fn header_event(&mut self, event: HeaderEvent, msh: &Msh<'_>) {
        self.inbound.stats.header_event(self.counters, event);
        let msh2 = msh.encoding_characters().escape_ascii();
        let msh10 = String::from_utf8_lossy(msh.control_id());
        if first_time(&mut self.header_event_warned) {
            warn!(%event, %msh2, %msh10, "unusual MSH-2 read past; forwarded unchanged (warned once per connection, counted in header_tolerances_total)");
        } else {
            debug!(%event, %msh2, %msh10, "unusual MSH-2 read past; forwarded unchanged");
        }
    }

    /// A message whose MSH-10 is empty: counted; refused with AR and ERR 101 when the listener
    /// says so (the reply), else forwarded (`None`) with a warning once per connection.
    fn missing_control_id(&mut self, msh: &Msh<'_>) -> Option<Reply> {
        let config = Rc::clone(&self.config);
        let listener = &config.listeners[self.index];
        let stats = &self.inbound.stats;
        stats.count(self.counters, ListenerCounter::MissingControlId, 1);
        let msh9 = String::from_utf8_lossy(msh.raw_field(9));
        match listener.missing_control_id {
            MissingControlId::Reject => {
                warn!(%msh9, "message without MSH-10 (control ID): rejected with AR, not forwarded");
                let refusal = Refusal {
                    code: ErrorCode::RequiredFieldMissing,
                    text: b"MSH-10 (message control ID) is empty",
                };
                Some(self.generate(msh, Outcome::Rejected, Some(refusal)))
            }
            MissingControlId::Forward => {
                if first_time(&mut self.missing_control_id_warned) {
                    warn!(%msh9, "message without MSH-10 (control ID): forwarded, its ACK cannot name it (warned once per connection, counted in missing_control_id_total)");
                } else {
                    debug!(%msh9, "message without MSH-10 (control ID): forwarded");
                }
                None
            }
        }
    }

    /// Logs and counts the framing tolerances used since the last call.
    fn log_events(&mut self, peer: std::net::SocketAddr) {
        while let Some(event) = self.deframer.poll_event() {
            self.inbound.stats.framing_event(self.counters, event.code);
            debug!(%peer, code = event.code.as_str(), offset = event.offset, len = event.len, "framing tolerance used");
        }
    }
}

/// Whether this is the first time `flag` is asked (it is set from then on): for warnings given
/// once per connection.
fn first_time(flag: &mut bool) -> bool {
    !std::mem::replace(flag, true)
}

/// The table 0357 code for a header that cannot be read.
fn header_error_code(error: mllp::Hl7Error) -> ErrorCode {
    match error {
        mllp::Hl7Error::MissingHeader => ErrorCode::SegmentSequence,
        _ => ErrorCode::DataType,
    }
}
