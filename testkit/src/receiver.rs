//! A programmable MLLP receiver in the test's own process: the downstream a relay test
//! forwards to. It records every message *before* answering it (a message it received has
//! reached the receiver, whether or not its ACK ever makes it back), answers as told, can be
//! told otherwise while it runs (a batch frame gets an acknowledgement batch, each message
//! answered as it would be alone), and can be killed (listener closed, every connection reset,
//! as a crashed host's kernel would) and restarted on the same address.
//!
//! A thread per connection over blocking std sockets: simple enough to be obviously right,
//! which is what a test's oracle must be. Load tests and benchmarks use `mllp-loadgen sink`.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mllp::ack::{AckCode, AckMode, AckParams, Outcome, write_ack};
use mllp::batch::{AckBatchParams, LineEndings, is_batch, split_batch, write_ack_batch};
use mllp::frame::{Deframer, FramingConfig};
use mllp::hl7::Msh;

use crate::net::ReservedPort;

/// How the receiver answers each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// AA (CA in enhanced mode), or what the NAK rule says (see [`Receiver::set_nak`]).
    Ack,
    /// This code instead.
    Code(AckCode),
    /// An ACK whose MSA-2 names another control ID.
    WrongControlId,
    /// No answer at all.
    Silent,
    /// Answers, then closes the connection (servers that take one message per connection).
    CloseAfterEach,
    /// Answers without the last segment's CR, in three separate writes (a sloppy sender's
    /// ACK in pieces).
    SloppyPieces,
}

/// Which messages get AE/AR (CE/CR) instead of AA (CA): `Some(Outcome::Error)` or
/// `Some(Outcome::Rejected)` for a control ID, `None` to accept it. A pure function of the ID,
/// so a redelivery gets the same answer.
pub type NakRule = Arc<dyn Fn(&str) -> Option<Outcome> + Send + Sync>;

/// What arrived, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Every frame's payload (frames without a readable MSH too).
    pub payloads: Vec<Vec<u8>>,
    /// MSH-10 → how many times it arrived.
    pub counts: HashMap<String, u32>,
    /// Frames without a readable MSH.
    pub unparseable: u64,
}

impl Received {
    /// Frames received.
    pub fn frames(&self) -> usize {
        self.payloads.len()
    }
}

/// The receiver; killed (connections reset) when dropped.
pub struct Receiver {
    port: ReservedPort,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.port.addr())
            .finish_non_exhaustive()
    }
}

struct Shared {
    received: Mutex<Received>,
    behaviour: Mutex<Behaviour>,
    nak: Mutex<Option<NakRule>>,
    delay: Mutex<Duration>,
    tls: Option<Arc<rustls::ServerConfig>>,
    framing: FramingConfig,
    /// Run on every thread the receiver starts (e.g. to exempt it from an allocation count).
    thread_init: Option<fn()>,
    connections: AtomicUsize,
    /// Bumped by every kill: a connection of an older epoch never answers again.
    epoch: AtomicU64,
    up: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

/// How a receiver starts; [`Receiver::start`] and friends cover the usual cases.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Terminate TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Run this on each of the receiver's threads first.
    pub thread_init: Option<fn()>,
    /// Frame bytes other than MLLP's (`None`: standard MLLP).
    pub framing: Option<FramingConfig>,
}

impl Receiver {
    /// A receiver answering with `behaviour`, listening on a port of its own.
    pub fn start(behaviour: Behaviour) -> Self {
        Self::with(behaviour, Options::default())
    }

    /// A receiver that terminates TLS with `tls`.
    pub fn start_tls(behaviour: Behaviour, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::with(
            behaviour,
            Options {
                tls: Some(tls),
                ..Options::default()
            },
        )
    }

    /// A receiver that is down: its address is reserved and refuses connections until
    /// [`restart`](Self::restart). (It has never listened, so the refusal holds from the
    /// start; see [`ReservedPort::listen`] for a listener that was closed.)
    pub fn down(behaviour: Behaviour) -> Self {
        let receiver = Self::reserved(behaviour, Options::default());
        receiver.shared.up.store(false, Ordering::SeqCst);
        receiver
    }

    pub fn with(behaviour: Behaviour, options: Options) -> Self {
        let mut receiver = Self::reserved(behaviour, options);
        receiver.acceptor = Some(accept_loop(receiver.port.listen(), receiver.shared.clone()));
        receiver
    }

    /// A receiver on a reserved port, not listening yet.
    fn reserved(behaviour: Behaviour, options: Options) -> Self {
        let port = ReservedPort::new();
        let shared = Arc::new(Shared {
            received: Mutex::default(),
            behaviour: Mutex::new(behaviour),
            nak: Mutex::new(None),
            delay: Mutex::new(Duration::ZERO),
            tls: options.tls,
            framing: options.framing.unwrap_or(FramingConfig::MLLP),
            thread_init: options.thread_init,
            connections: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            up: AtomicBool::new(true),
            open: Mutex::new(Vec::new()),
        });
        Self {
            port,
            shared,
            acceptor: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.port.addr()
    }

    /// What arrived so far.
    pub fn received(&self) -> Received {
        lock(&self.shared.received).clone()
    }

    /// The payloads that arrived so far, in order.
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        lock(&self.shared.received).payloads.clone()
    }

    /// Frames received so far.
    pub fn frames(&self) -> usize {
        lock(&self.shared.received).payloads.len()
    }

    /// How many of `ids` have not arrived yet.
    pub fn missing(&self, ids: &[String]) -> usize {
        let received = lock(&self.shared.received);
        ids.iter()
            .filter(|id| !received.counts.contains_key(*id))
            .count()
    }

    /// Connections accepted so far (over every life).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Answer with `behaviour` from the next message on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.shared.behaviour) = behaviour;
    }

    /// With [`Behaviour::Ack`], answer the IDs `rule` picks with AE/AR (CE/CR) from now on.
    pub fn set_nak(&self, rule: NakRule) {
        *lock(&self.shared.nak) = Some(rule);
    }

    /// The NAK rule in force, if any.
    pub fn nak_rule(&self) -> Option<NakRule> {
        lock(&self.shared.nak).clone()
    }

    /// Wait this long before each answer (a slow receiver).
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// Stops accepting and resets every open connection: messages in flight are recorded
    /// (they arrived) but never answered. The address stays reserved and refuses connections.
    pub fn kill(&mut self) {
        self.shared.up.store(false, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor
                .join()
                .expect("the receiver's accept loop panicked");
        }
        for stream in lock(&self.shared.open).drain(..) {
            // SO_LINGER 0: the close that follows sends RST, as a crashed host's kernel would.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same address.
    ///
    /// # Panics
    /// When it is running.
    pub fn restart(&mut self) {
        assert!(self.acceptor.is_none(), "restart of a running receiver");
        let listener = self.port.listen();
        self.shared.up.store(true, Ordering::SeqCst);
        self.acceptor = Some(accept_loop(listener, self.shared.clone()));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    // Non-blocking accept, polled: kill() must be able to stop it and close the listener.
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    thread::spawn(move || {
        if let Some(init) = shared.thread_init {
            init();
        }
        let epoch = shared.epoch.load(Ordering::SeqCst);
        while shared.up.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_nodelay(true);
                    if let Ok(clone) = stream.try_clone() {
                        lock(&shared.open).push(clone);
                    }
                    let shared = shared.clone();
                    thread::spawn(move || {
                        if let Some(init) = shared.thread_init {
                            init();
                        }
                        match shared.tls.clone() {
                            None => serve(stream, &shared, epoch),
                            Some(tls) => {
                                let Ok(session) = rustls::ServerConnection::new(tls) else {
                                    return;
                                };
                                serve(rustls::StreamOwned::new(session, stream), &shared, epoch);
                            }
                        }
                    });
                }
                // WouldBlock (nothing to accept), or a transient error: poll again.
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
    })
}

fn serve(mut stream: impl Read + Write, shared: &Shared, epoch: u64) {
    let mut deframer = Deframer::new(shared.framing);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        loop {
            let frame = match deframer.decode(&buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return,
            };
            let payload = frame.payload(&buf);
            // Record first: from here on the message has reached the receiver.
            let msh = record(shared, payload);
            let delay = *lock(&shared.delay);
            if !delay.is_zero() {
                thread::sleep(delay);
            }
            if shared.epoch.load(Ordering::SeqCst) != epoch {
                return; // killed meanwhile: no answer
            }
            let behaviour = *lock(&shared.behaviour);
            let reply = match &msh {
                Some(msh) => answer(shared, msh, behaviour),
                None => answer_batch(shared, payload, behaviour),
            };
            let Some(reply) = reply else {
                continue;
            };
            let written = if behaviour == Behaviour::SloppyPieces {
                write_in_pieces(&mut stream, &reply)
            } else {
                let mut framed = Vec::new();
                shared
                    .framing
                    .encode(&reply, &mut framed)
                    .expect("an ACK holds no framing byte");
                stream.write_all(&framed).and_then(|()| stream.flush())
            };
            if written.is_err() || behaviour == Behaviour::CloseAfterEach {
                return;
            }
        }
        deframer.compact(&mut buf);
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Records `payload`; returns its header when it has one.
fn record<'p>(shared: &Shared, payload: &'p [u8]) -> Option<Msh<'p>> {
    let msh = Msh::parse_lenient(payload).ok();
    let mut received = lock(&shared.received);
    received.payloads.push(payload.to_vec());
    match &msh {
        Some(msh) => {
            let id = String::from_utf8_lossy(msh.control_id()).into_owned();
            *received.counts.entry(id).or_default() += 1;
        }
        None => received.unparseable += 1,
    }
    msh
}

/// The ACK a receiver sends for `message` with `code` (what a test compares the relay's
/// pass-through answer with, byte for byte).
///
/// # Panics
/// When `message` has no readable MSH.
pub fn ack_for(message: &[u8], code: AckCode) -> Vec<u8> {
    let msh = Msh::parse_lenient(message).expect("a message with a readable MSH");
    ack(&msh, code)
}

fn ack(msh: &Msh<'_>, code: AckCode) -> Vec<u8> {
    let params = AckParams {
        text: Some(b"receiver"),
        ..AckParams::new(b"20261122103001", b"RECEIVER")
    };
    let mut out = Vec::new();
    write_ack(msh, code, &params, &mut out);
    out
}

/// The ACK payload for `msh` under `behaviour`, or `None` when nothing is sent.
fn answer(shared: &Shared, msh: &Msh<'_>, behaviour: Behaviour) -> Option<Vec<u8>> {
    let code = match behaviour {
        Behaviour::Silent => return None,
        Behaviour::Code(code) => code,
        Behaviour::Ack
        | Behaviour::WrongControlId
        | Behaviour::CloseAfterEach
        | Behaviour::SloppyPieces => {
            let id = String::from_utf8_lossy(msh.control_id());
            let rule = lock(&shared.nak).clone();
            let outcome = rule.and_then(|rule| rule(&id)).unwrap_or(Outcome::Accepted);
            AckCode::for_outcome(AckMode::of(msh), outcome)
        }
    };
    let mut out = ack(msh, code);
    if behaviour == Behaviour::WrongControlId {
        let text = String::from_utf8_lossy(&out).into_owned();
        let original = String::from_utf8_lossy(msh.control_id()).into_owned();
        out = text
            .replace(
                &format!("MSA|{}|{original}", code.as_str()),
                &format!("MSA|{}|SOMEONE-ELSE", code.as_str()),
            )
            .into_bytes();
    }
    Some(out)
}

/// The acknowledgement batch for a batch frame (FHS/BHS … BTS/FTS): each message answered as
/// [`answer`] would answer it alone; `None` for a frame that is no readable batch.
fn answer_batch(shared: &Shared, payload: &[u8], behaviour: Behaviour) -> Option<Vec<u8>> {
    if !is_batch(payload) {
        return None;
    }
    let batch = split_batch(payload, LineEndings::Cr).ok()?;
    let acks: Vec<Option<Vec<u8>>> = batch
        .messages
        .iter()
        .map(|range| {
            let msh = Msh::parse_lenient(&payload[range.clone()]).ok()?;
            answer(shared, &msh, behaviour)
        })
        .collect();
    let acks: Vec<Option<&[u8]>> = acks.iter().map(Option::as_deref).collect();
    let mut out = Vec::new();
    let params = AckBatchParams::new(b"20261122103001", b"RECEIVER");
    write_ack_batch(payload, &batch, &acks, &params, &mut out);
    Some(out)
}

/// Writes `reply` framed but without its last CR, as three separate TCP segments.
fn write_in_pieces(stream: &mut impl Write, reply: &[u8]) -> std::io::Result<()> {
    let body = reply.strip_suffix(b"\r").unwrap_or(reply);
    for piece in [&b"\x0b"[..], body, b"\x1c\r"] {
        stream.write_all(piece)?;
        stream.flush()?;
        // Not synchronisation: only to make the pieces separate TCP segments.
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7;
    use mllp::ack::parse_ack;

    /// Sends `message` on a new connection and returns the answer, or `None` when none comes
    /// within a second.
    fn exchange(addr: SocketAddr, message: &[u8]) -> Option<Vec<u8>> {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        stream.write_all(&hl7::framed(message)).unwrap();
        let mut deframer = Deframer::new(FramingConfig::MLLP);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Ok(Some(frame)) = deframer.decode(&buf) {
                return Some(frame.payload(&buf).to_vec());
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn code_and_id(ack: &[u8]) -> (AckCode, String) {
        let parsed = parse_ack(ack).unwrap();
        (
            parsed.code,
            String::from_utf8_lossy(parsed.acknowledged_id).into_owned(),
        )
    }

    #[test]
    fn it_answers_as_told_and_records_first() {
        let receiver = Receiver::start(Behaviour::Ack);
        let ack = exchange(receiver.addr(), &hl7::oru("R-1")).unwrap();
        assert_eq!(code_and_id(&ack), (AckCode::AA, "R-1".into()));
        let ack = exchange(receiver.addr(), &hl7::oru_enhanced("R-2")).unwrap();
        assert_eq!(code_and_id(&ack).0, AckCode::CA);

        receiver.set_nak(Arc::new(|id: &str| {
            (id == "R-3").then_some(Outcome::Rejected)
        }));
        let ack = exchange(receiver.addr(), &hl7::oru("R-3")).unwrap();
        assert_eq!(code_and_id(&ack).0, AckCode::AR);

        receiver.set_behaviour(Behaviour::WrongControlId);
        let ack = exchange(receiver.addr(), &hl7::oru("R-4")).unwrap();
        assert_eq!(code_and_id(&ack), (AckCode::AA, "SOMEONE-ELSE".into()));

        receiver.set_behaviour(Behaviour::Silent);
        assert_eq!(exchange(receiver.addr(), &hl7::oru("R-5")), None);

        receiver.set_behaviour(Behaviour::SloppyPieces);
        let ack = exchange(receiver.addr(), &hl7::oru("R-6")).unwrap();
        assert!(
            ack.ends_with(b"MSA|AA|R-6|receiver"),
            "no CR after the last segment"
        );

        let received = receiver.received();
        assert_eq!(received.frames(), 6);
        assert_eq!(
            received.counts["R-5"], 1,
            "recorded although never answered"
        );
        assert_eq!(receiver.connections(), 6);
        assert_eq!(receiver.missing(&["R-1".into(), "R-9".into()]), 1);
    }

    #[test]
    fn a_killed_receiver_refuses_and_comes_back_on_its_address() {
        // Refused once the closed listener's last copy is gone (see `ReservedPort::listen`).
        let refusing = |receiver: &Receiver| {
            crate::wait_until(crate::PATIENCE, || crate::net::refuses(receiver.addr()))
        };
        let mut receiver = Receiver::down(Behaviour::Ack);
        assert!(refusing(&receiver));
        receiver.restart();
        assert!(exchange(receiver.addr(), &hl7::oru("B-1")).is_some());
        receiver.kill();
        assert!(refusing(&receiver));
        receiver.restart();
        assert!(exchange(receiver.addr(), &hl7::oru("B-2")).is_some());
        assert_eq!(receiver.payloads(), [hl7::oru("B-1"), hl7::oru("B-2")]);
    }
}
