//! The relay over real sockets on 127.0.0.1 (ephemeral ports, bounded waits): a relay
//! started in-process, a mock receiver that misbehaves on request, and a plain client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mllp::ack::{AckCode, AckParams, parse_ack, write_ack};
use mllp::frame::{Deframer, FramingConfig};
use mllp::hl7::Msh;
use netio::runtime::Driver;
use relay::config::{Config, DownstreamConfig, ListenerConfig, OnDownstreamFailure};
use relay::metrics::{DownstreamFailureKind, Stats};
use testkit::{ReservedPort, TempDir};

/// Upper bound on any wait in these tests; a healthy run needs milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

fn message(control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20261122103000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r\
PID|1||12345^^^HOSP^MR||DOE^JANE\rOBX|1|NM|GLU^Glucose||5.4|mmol/L\r"
    )
    .into_bytes()
}

fn enhanced_message(control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20261122103000||ORU^R01|{control_id}|P|2.5|||AL|NE\rPID|1\r"
    )
    .into_bytes()
}

/// How the mock receiver answers.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// AA with MSA-3 `sink`.
    Ack,
    /// This code instead of AA.
    Code(AckCode),
    /// An ACK for another control id.
    WrongControlId,
    /// Never answers.
    Silent,
    /// Answers, then closes the connection.
    CloseAfterEach,
    /// Answers without the final CR of the last segment, in three separate writes.
    SloppyPieces,
    /// Waits, then answers.
    Delay(Duration),
    /// Answers AA while the flag is set, nothing after.
    AckWhile(&'static std::sync::atomic::AtomicBool),
}

struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    connections: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(behaviour: Behaviour) -> Self {
        Self::start_with(behaviour, None)
    }

    /// A receiver that terminates TLS with `tls`.
    fn start_tls(behaviour: Behaviour, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::start_with(behaviour, Some(tls))
    }

    /// A receiver on a reserved port that refused connections until now: the receiver
    /// "comes back".
    fn start_at(port: &ReservedPort, behaviour: Behaviour) -> Self {
        Self::start_on(port.listen(), behaviour, None)
    }

    fn start_with(behaviour: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), behaviour, tls)
    }

    fn start_on(
        listener: TcpListener,
        behaviour: Behaviour,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (r, c) = (received.clone(), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                let tls = tls.clone();
                thread::spawn(move || {
                    stream.set_nodelay(true).unwrap();
                    match tls {
                        None => serve(stream, behaviour, &r),
                        Some(tls) => {
                            let session = rustls::ServerConnection::new(tls).unwrap();
                            serve(rustls::StreamOwned::new(session, stream), behaviour, &r);
                        }
                    }
                });
            }
        });
        Self {
            addr,
            received,
            connections,
        }
    }

    fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}

/// The ACK the mock sends for `message` with `code`.
fn mock_ack(message: &[u8], code: AckCode, control_id_override: Option<&[u8]>) -> Vec<u8> {
    let msh = Msh::parse(message).unwrap();
    let mut out = Vec::new();
    let params = AckParams {
        text: Some(b"sink"),
        ..AckParams::new(b"20261122103001", b"SINK1")
    };
    write_ack(&msh, code, &params, &mut out);
    if let Some(other) = control_id_override {
        let text = String::from_utf8(out).unwrap();
        let original = String::from_utf8_lossy(msh.control_id()).into_owned();
        let other = String::from_utf8_lossy(other).into_owned();
        out = text
            .replace(
                &format!("MSA|{}|{original}", code.as_str()),
                &format!("MSA|{}|{other}", code.as_str()),
            )
            .into_bytes();
    }
    out
}

fn serve(mut stream: impl Read + Write, behaviour: Behaviour, received: &Mutex<Vec<Vec<u8>>>) {
    let mut deframer = Deframer::new(FramingConfig::MLLP);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok(Some(frame)) = deframer.decode(&buf) {
            let payload = frame.payload(&buf).to_vec();
            received.lock().unwrap().push(payload.clone());
            let reply = match behaviour {
                Behaviour::Silent => continue,
                Behaviour::AckWhile(answering) if !answering.load(Ordering::SeqCst) => continue,
                Behaviour::AckWhile(_) => mock_ack(&payload, AckCode::AA, None),
                Behaviour::Ack | Behaviour::CloseAfterEach | Behaviour::SloppyPieces => {
                    mock_ack(&payload, AckCode::AA, None)
                }
                Behaviour::Delay(pause) => {
                    thread::sleep(pause);
                    mock_ack(&payload, AckCode::AA, None)
                }
                Behaviour::Code(code) => mock_ack(&payload, code, None),
                Behaviour::WrongControlId => mock_ack(&payload, AckCode::AA, Some(b"SOMEONE-ELSE")),
            };
            if let Behaviour::SloppyPieces = behaviour {
                let body = reply.strip_suffix(b"\r").unwrap_or(&reply);
                for piece in [&b"\x0b"[..], body, b"\x1c\r"] {
                    stream.write_all(piece).unwrap();
                    stream.flush().unwrap();
                    // Not synchronisation: only to make the pieces separate TCP segments.
                    thread::sleep(Duration::from_millis(5));
                }
            } else {
                let mut framed = Vec::new();
                FramingConfig::MLLP.encode(&reply, &mut framed).unwrap();
                if stream.write_all(&framed).is_err() {
                    return;
                }
            }
            if let Behaviour::CloseAfterEach = behaviour {
                return;
            }
        }
        deframer.compact(&mut buf);
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn config(downstream: SocketAddr) -> Config {
    let mut listener = ListenerConfig::plain("127.0.0.1:0".parse().unwrap());
    listener.write_timeout = PATIENCE;
    let mut downstream = DownstreamConfig::plain("mock", downstream);
    downstream.ack_timeout = Duration::from_secs(3);
    downstream.retries = 1;
    downstream.backoff_base = Duration::from_millis(10);
    Config {
        listeners: vec![listener],
        downstreams: vec![downstream],
        routes: Vec::new(),
        default_downstream: Some(0),
        workers: 2,
        pin_workers: false,
        shutdown_grace: PATIENCE,
        driver: Driver::Auto,
        metrics_addr: None,
        journal: None,
    }
}

/// Anything a sender can talk through: a TCP stream or a TLS stream over one.
trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// A sender connection, plain or TLS.
struct Client {
    tcp: TcpStream,
    io: Box<dyn Io>,
    deframer: Deframer,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        tcp.set_nodelay(true).unwrap();
        let io = Box::new(tcp.try_clone().unwrap());
        Self {
            tcp,
            io,
            deframer: Deframer::new(FramingConfig::MLLP),
            buf: Vec::new(),
        }
    }

    fn connect_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Self {
        let mut client = Self::connect(addr);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let session = rustls::ClientConnection::new(config, name).unwrap();
        client.io = Box::new(rustls::StreamOwned::new(
            session,
            client.tcp.try_clone().unwrap(),
        ));
        client
    }

    fn send(&mut self, payload: &[u8]) {
        let mut framed = Vec::new();
        FramingConfig::MLLP.encode(payload, &mut framed).unwrap();
        self.io.write_all(&framed).unwrap();
        self.io.flush().unwrap();
    }

    /// The next ACK payload, or None when the relay closed (or refused) the connection.
    fn receive(&mut self) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(frame) = self.deframer.decode(&self.buf).unwrap() {
                let payload = frame.payload(&self.buf).to_vec();
                self.deframer.compact(&mut self.buf);
                return Some(payload);
            }
            match self.io.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no answer from the relay within {PATIENCE:?}")
                }
                // Reset, TLS alert, broken pipe: the relay refused or closed the connection.
                Err(_) => return None,
            }
        }
    }

    /// The next ACK payload if one arrives within `wait` (plain connections).
    fn receive_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        self.tcp.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 4096];
        let answer = loop {
            if let Some(frame) = self.deframer.decode(&self.buf).unwrap() {
                let payload = frame.payload(&self.buf).to_vec();
                self.deframer.compact(&mut self.buf);
                break Some(payload);
            }
            match self.io.read(&mut chunk) {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => break None,
            }
        };
        self.tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        answer
    }

    fn round_trip(&mut self, payload: &[u8]) -> Vec<u8> {
        self.send(payload);
        self.receive().expect("an ACK")
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
fn passthrough_returns_the_receivers_ack_byte_for_byte() {
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr)).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let msg = message("MSG-1");
    let ack = client.round_trip(&msg);
    assert_eq!(
        ack,
        mock_ack(&msg, AckCode::AA, None),
        "the receiver's ACK, unchanged"
    );
    assert_eq!(receiver.received(), [msg], "the message, unchanged");
    relay.shutdown();
}

/// The epoll fallback carries the same traffic (io_uring is what `Auto` picks on this kernel).
#[test]
fn epoll_driver_relays_and_drains_too() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr);
    cfg.driver = Driver::Epoll;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..20 {
        assert_eq!(
            code_and_id(&client.round_trip(&message(&format!("EPOLL-{i}")))).0,
            AckCode::AA
        );
    }
    let mut idle = Client::connect(relay.listen_addr());
    relay.shutdown();
    assert_eq!(
        idle.receive(),
        None,
        "idle connections are closed at shutdown"
    );
}

#[test]
fn messages_keep_their_order_on_a_connection() {
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr)).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let sent: Vec<Vec<u8>> = (0..50).map(|i| message(&format!("ORDER-{i}"))).collect();
    for (i, msg) in sent.iter().enumerate() {
        assert_eq!(
            code_and_id(&client.round_trip(msg)),
            (AckCode::AA, format!("ORDER-{i}"))
        );
    }
    assert_eq!(receiver.received(), sent);
    // Pipelined: all sent before any ACK is read; answered in order.
    for msg in &sent {
        client.send(msg);
    }
    for i in 0..sent.len() {
        assert_eq!(
            code_and_id(&client.receive().unwrap()).1,
            format!("ORDER-{i}")
        );
    }
    relay.shutdown();
}

#[test]
fn unreachable_receiver_gives_ae_with_err_207() {
    let down = ReservedPort::new();
    let relay = relay::start(config(down.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let ack = client.round_trip(&message("DOWN-1"));
    assert_eq!(code_and_id(&ack), (AckCode::AE, "DOWN-1".to_string()));
    let text = String::from_utf8_lossy(&ack);
    assert!(
        text.contains("ERR|||207^Application internal error^HL70357|E"),
        "{text}"
    );
    assert!(text.contains("cannot connect"), "{text}");
    // Enhanced mode: CE, not AE.
    let ack = client.round_trip(&enhanced_message("DOWN-2"));
    assert_eq!(code_and_id(&ack), (AckCode::CE, "DOWN-2".to_string()));
    let stats = relay.stats().clone();
    assert_eq!(Stats::get(&stats.naks_downstream_failed), 2);
    assert_eq!(
        stats.downstream_failures(DownstreamFailureKind::Connect),
        4,
        "two attempts per message"
    );
    relay.shutdown();
}

#[test]
fn receivers_negative_acks_pass_through() {
    for code in [AckCode::AE, AckCode::AR] {
        let receiver = Receiver::start(Behaviour::Code(code));
        let relay = relay::start(config(receiver.addr)).unwrap();
        let mut client = Client::connect(relay.listen_addr());
        let msg = message("NEG-1");
        assert_eq!(client.round_trip(&msg), mock_ack(&msg, code, None));
        assert_eq!(
            receiver.received().len(),
            1,
            "an answer is not a failure: no retry"
        );
        relay.shutdown();
    }
}

#[test]
fn an_ack_for_another_message_is_not_an_ack() {
    let receiver = Receiver::start(Behaviour::WrongControlId);
    let relay = relay::start(config(receiver.addr)).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let ack = client.round_trip(&message("MINE-1"));
    assert_eq!(code_and_id(&ack), (AckCode::AE, "MINE-1".to_string()));
    assert!(String::from_utf8_lossy(&ack).contains("SOMEONE-ELSE"));
    let stats = relay.stats().clone();
    assert_eq!(
        stats.downstream_failures(DownstreamFailureKind::WrongControlId),
        2
    );
    // Each bad exchange closed its connection: two attempts, two connections.
    assert_eq!(receiver.connections.load(Ordering::SeqCst), 2);
    relay.shutdown();
}

#[test]
fn silent_receiver_times_out() {
    let receiver = Receiver::start(Behaviour::Silent);
    let mut cfg = config(receiver.addr);
    cfg.downstreams[0].ack_timeout = Duration::from_millis(300);
    cfg.downstreams[0].retries = 0;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let started = Instant::now();
    let ack = client.round_trip(&message("SLOW-1"));
    assert_eq!(code_and_id(&ack), (AckCode::AE, "SLOW-1".to_string()));
    assert!(String::from_utf8_lossy(&ack).contains("no ACK"));
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(
        relay
            .stats()
            .downstream_failures(DownstreamFailureKind::AckTimeout),
        1
    );
    relay.shutdown();
}

#[test]
fn a_receiver_that_stops_reading_fails_the_send_in_time() {
    // Accepts, then never reads: the relay's write of a message bigger than both socket
    // buffers can never finish, so the write deadline (the ACK timeout) must cancel it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = held.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            holder.lock().unwrap().push(stream);
        }
    });
    let mut cfg = config(addr);
    cfg.listeners[0].framing = FramingConfig::MLLP.with_max_frame_len(16 << 20).unwrap();
    cfg.downstreams[0].ack_timeout = Duration::from_millis(300);
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let mut big = message("STUCK-1");
    big.extend(std::iter::repeat_n(b'x', 15 << 20));
    big.push(b'\r');
    let started = Instant::now();
    let ack = client.round_trip(&big);
    assert_eq!(code_and_id(&ack), (AckCode::AE, "STUCK-1".to_string()));
    assert!(started.elapsed() < PATIENCE);
    // Both attempts (one retry) failed while sending, each on its own connection.
    assert_eq!(
        relay
            .stats()
            .downstream_failures(DownstreamFailureKind::Send),
        2
    );
    assert_eq!(held.lock().unwrap().len(), 2);
    // The worker is not stuck: a small message is still relayed, with its own deadline.
    let ack = client.round_trip(&message("AFTER-1"));
    assert_eq!(code_and_id(&ack).1, "AFTER-1");
    relay.shutdown();
}

#[test]
fn receiver_that_closes_after_each_message() {
    let receiver = Receiver::start(Behaviour::CloseAfterEach);
    let relay = relay::start(config(receiver.addr)).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..5 {
        let ack = client.round_trip(&message(&format!("ONE-{i}")));
        assert_eq!(code_and_id(&ack), (AckCode::AA, format!("ONE-{i}")));
    }
    assert_eq!(receiver.received().len(), 5, "each message delivered once");
    assert_eq!(receiver.connections.load(Ordering::SeqCst), 5);
    relay.shutdown();
}

#[test]
fn acks_in_pieces_and_without_final_cr_are_accepted() {
    let receiver = Receiver::start(Behaviour::SloppyPieces);
    let relay = relay::start(config(receiver.addr)).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..3 {
        let ack = client.round_trip(&message(&format!("PIECE-{i}")));
        assert_eq!(code_and_id(&ack), (AckCode::AA, format!("PIECE-{i}")));
    }
    assert_eq!(
        receiver.connections.load(Ordering::SeqCst),
        1,
        "the connection was reused"
    );
    relay.shutdown();
}

#[test]
fn frame_without_msh_gets_ar_and_is_not_forwarded() {
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr)).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let ack = client.round_trip(b"PID|1||12345\r");
    assert_eq!(code_and_id(&ack), (AckCode::AR, String::new()));
    assert!(String::from_utf8_lossy(&ack).contains("ERR|||100^"));
    // The connection stays usable.
    assert_eq!(
        code_and_id(&client.round_trip(&message("AFTER-1"))).0,
        AckCode::AA
    );
    assert_eq!(receiver.received(), [message("AFTER-1")]);
    assert_eq!(Stats::get(&relay.stats().rejects_bad_header), 1);
    relay.shutdown();
}

#[test]
fn framing_garbage_closes_only_that_connection() {
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr)).unwrap();
    let mut good = Client::connect(relay.listen_addr());
    let mut bad = Client::connect(relay.listen_addr());
    bad.io.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(bad.receive(), None, "closed");
    assert_eq!(
        code_and_id(&good.round_trip(&message("GOOD-1"))).0,
        AckCode::AA
    );
    assert_eq!(Stats::get(&relay.stats().framing_errors), 1);
    relay.shutdown();
}

#[test]
fn a_frame_written_one_byte_at_a_time() {
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr)).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let msg = message("TRICKLE-1");
    let mut framed = Vec::new();
    FramingConfig::MLLP.encode(&msg, &mut framed).unwrap();
    for byte in &framed {
        client.io.write_all(std::slice::from_ref(byte)).unwrap();
    }
    assert_eq!(
        code_and_id(&client.receive().unwrap()),
        (AckCode::AA, "TRICKLE-1".to_string())
    );
    assert_eq!(receiver.received(), [msg]);
    relay.shutdown();
}

#[test]
fn on_failure_close_closes_instead_of_naking() {
    let down = ReservedPort::new();
    let mut cfg = config(down.addr());
    cfg.listeners[0].on_downstream_failure = OnDownstreamFailure::Close;
    cfg.downstreams[0].retries = 0;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    client.send(&message("CLOSE-1"));
    assert_eq!(client.receive(), None);
    assert_eq!(Stats::get(&relay.stats().closes_downstream_failed), 1);
    relay.shutdown();
}

#[test]
fn oversize_frame_closes_the_connection() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr);
    cfg.listeners[0].framing = FramingConfig::MLLP.with_max_frame_len(1000).unwrap();
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let mut big = message("BIG-1");
    big.extend(std::iter::repeat_n(b'x', 5000));
    client.send(&big);
    assert_eq!(client.receive(), None);
    assert!(receiver.received().is_empty());
    relay.shutdown();
}

#[test]
fn slow_frame_hits_the_frame_deadline() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr);
    cfg.listeners[0].frame_deadline = Duration::from_millis(300);
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    client.io.write_all(b"\x0bMSH|^~\\&|").unwrap();
    let started = Instant::now();
    // Keep trickling: an idle timeout alone would never fire.
    let mut closed = false;
    while started.elapsed() < PATIENCE {
        if client.io.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
        let mut probe = [0u8; 1];
        client.tcp.set_nonblocking(true).unwrap();
        let read = client.tcp.read(&mut probe);
        client.tcp.set_nonblocking(false).unwrap();
        if matches!(read, Ok(0)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the relay closed the connection");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(Stats::get(&relay.stats().frame_deadline_expired), 1);
    relay.shutdown();
}

#[test]
fn shutdown_finishes_the_message_in_flight() {
    let receiver = Receiver::start(Behaviour::Delay(Duration::from_millis(300)));
    let relay = relay::start(config(receiver.addr)).unwrap();
    let addr = relay.listen_addr();
    let client = thread::spawn(move || {
        let mut client = Client::connect(addr);
        let ack = client.round_trip(&message("DRAIN-1"));
        (code_and_id(&ack), client.receive())
    });
    // Wait (bounded) until the receiver holds the message, then shut down mid-flight.
    let started = Instant::now();
    while receiver.received().is_empty() {
        assert!(
            started.elapsed() < PATIENCE,
            "message never reached the receiver"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let idle = Client::connect(addr);
    relay.shutdown();
    let ((ack, id), after) = client.join().unwrap();
    assert_eq!(
        (ack, id.as_str()),
        (AckCode::AA, "DRAIN-1"),
        "the in-flight message got its ACK"
    );
    assert_eq!(after, None, "then the connection was closed");
    drop(idle);
}

// --- TLS and mutual TLS, end to end --------------------------------------------------------

use testkit::pki;

use netio::tls::{RejectReason, ServerTlsSettings, Thumbprint, TlsRejections};

/// A relay config terminating TLS with the test PKI's server certificate.
fn tls_config(
    pki: &pki::Pki,
    downstream: SocketAddr,
    client_ca: Option<&pki::Cert>,
    thumbprints: &[Thumbprint],
) -> (Config, Arc<TlsRejections>) {
    let rejections = Arc::new(TlsRejections::new());
    let settings = ServerTlsSettings {
        cert_chain: pki.server.cert_path.clone(),
        key: pki.server.key_path.clone(),
        client_ca: client_ca.map(|c| c.cert_path.clone()),
        client_thumbprints: thumbprints.to_vec(),
    };
    let mut cfg = config(downstream);
    cfg.listeners[0].tls =
        Some(netio::tls::ReloadableServerConfig::load(settings, rejections.clone()).unwrap());
    cfg.listeners[0].tls_rejections = rejections.clone();
    (cfg, rejections)
}

const TLS_BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[test]
fn tls_listener_relays_byte_for_byte() {
    let pki = pki::Pki::new("e2e-tls");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, _) = tls_config(&pki, receiver.addr, None, &[]);
    let relay = relay::start(cfg).unwrap();
    for versions in [TLS_BOTH, &[&rustls::version::TLS12][..]] {
        let mut client = Client::connect_tls(relay.listen_addr(), pki.client(versions, None));
        let msg = message("TLS-1");
        assert_eq!(client.round_trip(&msg), mock_ack(&msg, AckCode::AA, None));
    }
    assert_eq!(receiver.received(), [message("TLS-1"), message("TLS-1")]);
    relay.shutdown();
}

#[test]
fn mtls_refuses_bad_clients_before_reading_a_byte() {
    let pki = pki::Pki::new("e2e-mtls-refuse");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, rejections) = tls_config(&pki, receiver.addr, Some(&pki.ca), &[]);
    let relay = relay::start(cfg).unwrap();
    let cases = [
        (
            Some(pki.client_other_ca.certified_key()),
            RejectReason::UnknownCa,
        ),
        (
            Some(pki.client_expired.certified_key()),
            RejectReason::Expired,
        ),
        (
            Some(pki.client_self.certified_key()),
            RejectReason::UnknownCa,
        ),
        (None, RejectReason::NoCertificate),
    ];
    for (cert, reason) in cases {
        let before = rejections.get(reason);
        let mut client = Client::connect_tls(relay.listen_addr(), pki.client(TLS_BOTH, cert));
        // With TLS 1.3 the client may believe it is connected and send at once.
        let mut framed = Vec::new();
        FramingConfig::MLLP
            .encode(&message("EVIL-1"), &mut framed)
            .unwrap();
        let _ = client
            .io
            .write_all(&framed)
            .and_then(|()| client.io.flush());
        assert_eq!(client.receive(), None, "{reason:?}: refused");
        // The verifier counts before rustls sends the alert; "no certificate" is decided by
        // rustls itself and counted by the session just after, so wait (bounded) for it.
        let started = Instant::now();
        while rejections.get(reason) != before + 1 && started.elapsed() < PATIENCE {
            thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(rejections.get(reason), before + 1, "{reason:?} counted");
    }
    assert!(
        receiver.received().is_empty(),
        "not one byte of a refused client was forwarded"
    );
    relay.shutdown();
}

/// A ClientHello as a TLS 1.0 or 1.1 client sends it (`version` 0x0301 or 0x0302, no
/// `supported_versions` extension, CBC suites): what old interface engines and JREs offer.
/// Real ones carry no `signature_algorithms` either (it came with TLS 1.2); with
/// `signature_algorithms` set, the hello is refused for its version alone. Built by hand
/// because rustls cannot speak those versions.
fn legacy_client_hello(version: u16, signature_algorithms: bool) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&version.to_be_bytes());
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // no session id
    // ECDHE-ECDSA-AES128-SHA, ECDHE-RSA-AES128-SHA, AES128-SHA, AES256-SHA
    let suites: [u16; 4] = [0xc009, 0xc013, 0x002f, 0x0035];
    hello.extend_from_slice(&u16::try_from(2 * suites.len()).unwrap().to_be_bytes());
    for suite in suites {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null only
    // supported_groups (x25519, secp256r1) and ec_point_formats (uncompressed)
    let mut extensions = vec![
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, //
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00,
    ];
    if signature_algorithms {
        // ecdsa_secp256r1_sha256, rsa_pkcs1_sha256
        extensions.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01]);
    }
    hello.extend_from_slice(&u16::try_from(extensions.len()).unwrap().to_be_bytes());
    hello.extend_from_slice(&extensions);
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![22, 0x03, 0x01]; // handshake record, version 1.0 as clients send it
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn tls_1_0_and_1_1_clients_are_refused_with_an_alert_and_counted() {
    let pki = pki::Pki::new("e2e-tls-old");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, rejections) = tls_config(&pki, receiver.addr, None, &[]);
    let relay = relay::start(cfg).unwrap();
    let hellos = [
        (0x0301_u16, false),
        (0x0302, false),
        (0x0301, true),
        (0x0302, true),
    ];
    for (n, (version, signature_algorithms)) in hellos.into_iter().enumerate() {
        let mut tcp = TcpStream::connect(relay.listen_addr()).unwrap();
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        tcp.write_all(&legacy_client_hello(version, signature_algorithms))
            .unwrap();
        // A message right behind the hello, as a client that does not wait would send it.
        let _ = tcp.write_all(&message("OLD-TLS-1"));
        let mut reply = Vec::new();
        let _ = tcp.read_to_end(&mut reply);
        // One fatal alert record (content type 21, level 2), then the relay closes: 70,
        // protocol_version, for a hello refused for its version; 40, handshake_failure, for
        // one without signature_algorithms (rustls checks that first).
        let expected = if signature_algorithms { 70 } else { 40 };
        assert!(
            reply.len() >= 7,
            "{version:#06x}: an alert came back: {reply:02x?}"
        );
        assert_eq!(
            reply[0], 21,
            "{version:#06x}: an alert record: {reply:02x?}"
        );
        assert_eq!(
            &reply[5..7],
            &[2, expected],
            "{version:#06x}: the fatal alert"
        );
        let started = Instant::now();
        while rejections.get(RejectReason::OldProtocolVersion) != n as u64 + 1
            && started.elapsed() < PATIENCE
        {
            thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            rejections.get(RejectReason::OldProtocolVersion),
            n as u64 + 1,
            "{version:#06x} counted as an old protocol version"
        );
    }
    assert!(receiver.received().is_empty(), "nothing was forwarded");
    assert_eq!(Stats::get(&relay.stats().tls_handshake_failures), 4);
    relay.shutdown();
}

#[test]
fn mtls_accepts_ca_issued_and_thumbprint_listed_clients() {
    let pki = pki::Pki::new("e2e-mtls-accept");
    let receiver = Receiver::start(Behaviour::Ack);
    let listed = [pki.client_self.thumbprint()];
    let (cfg, _) = tls_config(&pki, receiver.addr, Some(&pki.ca), &listed);
    let relay = relay::start(cfg).unwrap();
    for (i, cert) in [pki.client.certified_key(), pki.client_self.certified_key()]
        .into_iter()
        .enumerate()
    {
        let mut client = Client::connect_tls(relay.listen_addr(), pki.client(TLS_BOTH, Some(cert)));
        let ack = client.round_trip(&message(&format!("MTLS-{i}")));
        assert_eq!(code_and_id(&ack), (AckCode::AA, format!("MTLS-{i}")));
    }
    relay.shutdown();
}

#[test]
fn plaintext_on_a_tls_port_is_refused() {
    let pki = pki::Pki::new("e2e-plain-on-tls");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, _) = tls_config(&pki, receiver.addr, None, &[]);
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    client.send(&message("PLAIN-1"));
    // The relay answers with a TLS alert (not an MLLP frame) and closes.
    let mut reply = Vec::new();
    let _ = client.tcp.read_to_end(&mut reply);
    assert!(!reply.contains(&0x0B), "no MLLP frame came back");
    assert!(receiver.received().is_empty());
    assert_eq!(Stats::get(&relay.stats().tls_handshake_failures), 1);
    relay.shutdown();
}

#[test]
fn a_probe_that_connects_and_hangs_up_is_not_a_handshake_failure() {
    let pki = pki::Pki::new("e2e-tls-probe");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, _) = tls_config(&pki, receiver.addr, None, &[]);
    let relay = relay::start(cfg).unwrap();
    let stats = relay.stats();
    let wait_until_closed = |accepted: u64| {
        let started = Instant::now();
        while (Stats::get(&stats.connections_accepted) < accepted
            || Stats::get(&stats.connections_open) > 0)
            && started.elapsed() < PATIENCE
        {
            thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(Stats::get(&stats.connections_open), 0);
    };
    // A health check: connect, then close (FIN), or reset (linger 0), without a byte.
    TcpStream::connect(relay.listen_addr()).unwrap();
    let reset = socket2::Socket::from(TcpStream::connect(relay.listen_addr()).unwrap());
    reset.set_linger(Some(Duration::ZERO)).unwrap();
    drop(reset);
    wait_until_closed(2);
    assert_eq!(Stats::get(&stats.tls_handshake_failures), 0);
    // The same counter does count a client that speaks, and gets it wrong.
    let mut plain = TcpStream::connect(relay.listen_addr()).unwrap();
    plain.write_all(&message("PLAIN-1")).unwrap();
    let _ = plain.read_to_end(&mut Vec::new());
    drop(plain);
    wait_until_closed(3);
    assert_eq!(Stats::get(&stats.tls_handshake_failures), 1);
    // A client that begins the handshake and then hangs up is a failure too.
    let mut quitter = TcpStream::connect(relay.listen_addr()).unwrap();
    quitter
        .write_all(&legacy_client_hello(0x0303, true)[..20])
        .unwrap();
    drop(quitter);
    wait_until_closed(4);
    assert_eq!(Stats::get(&stats.tls_handshake_failures), 2);
    relay.shutdown();
}

// --- Prometheus endpoint ---------------------------------------------------------------------

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn metrics_endpoint_counts_messages_codes_and_latency() {
    let receiver = Receiver::start(Behaviour::Code(AckCode::AE));
    let mut cfg = config(receiver.addr);
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..3 {
        client.round_trip(&message(&format!("M-{i}")));
    }
    client.round_trip(b"not hl7");
    let metrics = relay.metrics_addr().expect("metrics bound");
    let expected = [
        "mllp_relay_messages_in_total 4",
        "mllp_relay_messages_delivered_total 3",
        "mllp_relay_acks_total{code=\"AE\",origin=\"downstream\"} 3",
        "mllp_relay_acks_total{code=\"AR\",origin=\"relay\"} 1",
        "mllp_relay_rejects_bad_header_total 1",
        "mllp_relay_total_seconds_count 4",
        "mllp_relay_ack_wait_seconds_count 3",
        "mllp_relay_tls_rejections_total{reason=\"unknown_ca\"} 0",
        "mllp_relay_connections_open 1",
    ];
    // The total latency is recorded just after the ACK is written, so a fast scrape can come
    // first: scrape until every line is there (bounded).
    let started = Instant::now();
    let body = loop {
        let body = http_get(metrics, "/metrics");
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        let complete = expected.iter().all(|line| body.lines().any(|l| l == *line));
        if complete || started.elapsed() > PATIENCE {
            break body;
        }
        thread::sleep(Duration::from_millis(5));
    };
    for line in expected {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    assert!(
        !body.contains("DOE^JANE") && !body.contains("M-1"),
        "no message content in metrics"
    );
    assert!(http_get(metrics, "/").starts_with("HTTP/1.1 404"));
    relay.shutdown();
}

#[test]
fn connections_beyond_the_limit_are_refused_and_counted() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr);
    cfg.workers = 1;
    cfg.listeners[0].max_connections_per_worker = 1;
    let relay = relay::start(cfg).unwrap();
    let mut first = Client::connect(relay.listen_addr());
    assert_eq!(
        code_and_id(&first.round_trip(&message("FIRST-1"))).0,
        AckCode::AA
    );
    let mut second = Client::connect(relay.listen_addr());
    second.send(&message("SECOND-1"));
    assert_eq!(
        second.receive(),
        None,
        "the excess connection is closed at once"
    );
    assert_eq!(Stats::get(&relay.stats().connections_refused), 1);
    assert_eq!(
        code_and_id(&first.round_trip(&message("FIRST-2"))).0,
        AckCode::AA,
        "the first is unaffected"
    );
    relay.shutdown();
}

#[test]
fn certificates_reload_without_dropping_connections() {
    let pki = pki::Pki::new("e2e-reload");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    // Serve from copies, so the test can change them under the running relay.
    let cert = pki.dir.write("live.pem", read(&pki.server.cert_path));
    let key = pki.dir.write("live.key", read(&pki.server.key_path));
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr);
    let settings = ServerTlsSettings {
        cert_chain: cert.clone(),
        key: key.clone(),
        client_ca: None,
        client_thumbprints: vec![],
    };
    cfg.listeners[0].tls = Some(
        netio::tls::ReloadableServerConfig::load(settings, Arc::new(TlsRejections::new())).unwrap(),
    );
    let relay = relay::start(cfg).unwrap();
    let mut open = Client::connect_tls(relay.listen_addr(), pki.client(TLS_BOTH, None));
    assert_eq!(
        code_and_id(&open.round_trip(&message("R-1"))).0,
        AckCode::AA
    );

    // A broken key file: the reload fails and the old certificate stays in force.
    std::fs::write(&key, "not a key").unwrap();
    let [(name, result)] = relay.reload_tls().try_into().unwrap();
    assert_eq!(name, "listener");
    assert!(result.is_err());
    let mut fresh = Client::connect_tls(relay.listen_addr(), pki.client(TLS_BOTH, None));
    assert_eq!(
        code_and_id(&fresh.round_trip(&message("R-2"))).0,
        AckCode::AA
    );

    // A new (here: expired) certificate: new handshakes present it, and the client refuses it...
    std::fs::write(&cert, read(&pki.server_expired.cert_path)).unwrap();
    std::fs::write(&key, read(&pki.server_expired.key_path)).unwrap();
    let [(_, result)] = relay.reload_tls().try_into().unwrap();
    result.unwrap();
    let mut after = Client::connect_tls(relay.listen_addr(), pki.client(TLS_BOTH, None));
    let mut framed = Vec::new();
    FramingConfig::MLLP
        .encode(&message("R-3"), &mut framed)
        .unwrap();
    let refused = after
        .io
        .write_all(&framed)
        .and_then(|()| after.io.flush())
        .is_err()
        || after.receive().is_none();
    assert!(refused, "the new certificate is the one presented");
    // ...while the connection opened before the reload carries on.
    assert_eq!(
        code_and_id(&open.round_trip(&message("R-4"))).0,
        AckCode::AA
    );
    relay.shutdown();
}

#[test]
fn source_allowlist_refuses_other_addresses_before_any_byte() {
    let receiver = Receiver::start(Behaviour::Ack);
    // Loopback is outside 10.0.0.0/8: refused.
    let mut cfg = config(receiver.addr);
    cfg.listeners[0].allowed_sources = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    client.send(&message("FROM-LOOPBACK"));
    assert_eq!(client.receive(), None);
    assert_eq!(Stats::get(&relay.stats().connections_refused_source), 1);
    assert!(receiver.received().is_empty());
    relay.shutdown();
    // 127.0.0.0/8 allows it.
    let mut cfg = config(receiver.addr);
    cfg.listeners[0].allowed_sources = vec!["127.0.0.0/8".parse().unwrap()];
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    assert_eq!(
        code_and_id(&client.round_trip(&message("ALLOWED-1"))).0,
        AckCode::AA
    );
    relay.shutdown();
}

#[test]
fn source_nets_parse_and_match() {
    use relay::config::SourceNet;
    let net: SourceNet = "192.168.7.0/24".parse().unwrap();
    assert!(net.contains("192.168.7.200".parse().unwrap()));
    assert!(!net.contains("192.168.8.1".parse().unwrap()));
    assert!(
        net.contains("::ffff:192.168.7.9".parse().unwrap()),
        "IPv4-mapped IPv6"
    );
    let host: SourceNet = "10.1.2.3".parse().unwrap();
    assert!(
        host.contains("10.1.2.3".parse().unwrap()) && !host.contains("10.1.2.4".parse().unwrap())
    );
    let all: SourceNet = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("8.8.8.8".parse().unwrap()) && !all.contains("::1".parse().unwrap()));
    let v6: SourceNet = "fd00::/8".parse().unwrap();
    assert!(v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap()));
    for bad in [
        "10.0.0.0/33",
        "::1/129",
        "hospital.example",
        "10.0.0/8",
        "10.0.0.0/x",
    ] {
        assert!(bad.parse::<SourceNet>().is_err(), "{bad}");
    }
}

// --- local ACK mode ------------------------------------------------------------------------

#[test]
fn local_mode_acks_on_receipt_and_forwards_in_order() {
    // A slow receiver: in local mode the sender does not wait for it.
    let receiver = Receiver::start(Behaviour::Delay(Duration::from_millis(20)));
    let mut cfg = config(receiver.addr);
    cfg.listeners[0].ack_mode = relay::config::AckMode::Local;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let sent: Vec<Vec<u8>> = (0..10).map(|i| message(&format!("LOCAL-{i}"))).collect();
    for (i, msg) in sent.iter().enumerate() {
        let ack = client.round_trip(msg);
        assert_eq!(code_and_id(&ack), (AckCode::AA, format!("LOCAL-{i}")));
        assert!(
            String::from_utf8_lossy(&ack).contains("|R"),
            "a relay-generated ACK"
        );
    }
    let ack = client.round_trip(&enhanced_message("LOCAL-E"));
    assert_eq!(
        code_and_id(&ack).0,
        AckCode::CA,
        "enhanced mode gets a commit ACK"
    );
    // Shutdown waits for the forwarder to empty its queue.
    relay.shutdown();
    let mut expected = sent;
    expected.push(enhanced_message("LOCAL-E"));
    assert_eq!(
        receiver.received(),
        expected,
        "every message forwarded, in order"
    );
}

#[test]
fn local_mode_counts_what_it_loses() {
    let down = ReservedPort::new();
    let mut cfg = config(down.addr());
    cfg.listeners[0].ack_mode = relay::config::AckMode::Local;
    cfg.downstreams[0].retries = 0;
    cfg.shutdown_grace = Duration::from_secs(5);
    let relay = relay::start(cfg).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    assert_eq!(
        code_and_id(&client.round_trip(&message("DOOMED-1"))).0,
        AckCode::AA
    );
    relay.shutdown();
    assert_eq!(
        Stats::get(&stats.local_lost),
        1,
        "the loss is counted, not hidden"
    );
}

// --- several listeners ---------------------------------------------------------------------

/// A plain passthrough listener called `name` on an ephemeral port, with the tests' write
/// timeout.
fn listener(name: &str) -> ListenerConfig {
    let mut listener = ListenerConfig::plain("127.0.0.1:0".parse().unwrap());
    listener.name = name.to_owned();
    listener.write_timeout = PATIENCE;
    listener
}

/// Scrapes `metrics` until every line of `expected` is in the body (bounded), and returns it.
fn scrape_until(metrics: SocketAddr, expected: &[String]) -> String {
    let started = Instant::now();
    loop {
        let body = http_get(metrics, "/metrics");
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        let complete = expected.iter().all(|line| body.lines().any(|l| l == line));
        if complete {
            return body;
        }
        if started.elapsed() > PATIENCE {
            let missing: Vec<&String> = expected
                .iter()
                .filter(|line| !body.lines().any(|l| l == *line))
                .collect();
            panic!("missing {missing:?} in\n{body}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn two_listeners_apply_their_own_settings_and_share_the_downstream() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr);
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    // "adt": passthrough, small frames. "lab": local ACK mode, the default frame limit. The
    // second listener is the only one in local mode: its forwarder must run all the same.
    let mut adt = listener("adt");
    adt.framing = FramingConfig::MLLP.with_max_frame_len(1000).unwrap();
    let mut lab = listener("lab");
    lab.ack_mode = relay::config::AckMode::Local;
    cfg.listeners = vec![adt, lab];
    let relay = relay::start(cfg).unwrap();

    let bound = relay.listeners();
    let names: Vec<&str> = bound.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["adt", "lab"]);
    let (adt_addr, lab_addr) = (bound[0].addr, bound[1].addr);
    assert_ne!(adt_addr.port(), 0);
    assert_ne!(lab_addr.port(), 0);
    assert_ne!(adt_addr, lab_addr);
    assert_eq!(
        relay.listen_addr(),
        adt_addr,
        "listen_addr is the first listener's"
    );
    assert_eq!(relay.listen_addr_of("lab"), Some(lab_addr));
    assert_eq!(relay.listen_addr_of("nope"), None);

    // adt passes the receiver's own ACK through, byte for byte.
    let mut adt = Client::connect(adt_addr);
    let msg = message("ADT-1");
    assert_eq!(adt.round_trip(&msg), mock_ack(&msg, AckCode::AA, None));
    // lab answers on receipt with the relay's own AA.
    let mut lab = Client::connect(lab_addr);
    let ack = lab.round_trip(&message("LAB-1"));
    assert_eq!(code_and_id(&ack), (AckCode::AA, "LAB-1".to_owned()));
    assert_ne!(ack, mock_ack(&message("LAB-1"), AckCode::AA, None));
    assert!(
        String::from_utf8_lossy(&ack).contains("|R"),
        "a relay-generated ACK"
    );

    // The same 6 KB message: too big for adt (its connection is closed), fine for lab.
    let mut big = message("BIG-1");
    big.extend(std::iter::repeat_n(b'x', 5000));
    assert_eq!(code_and_id(&lab.round_trip(&big)).0, AckCode::AA);
    let mut adt_big = Client::connect(adt_addr);
    adt_big.send(&big);
    assert_eq!(
        adt_big.receive(),
        None,
        "adt's frame limit closed the connection"
    );
    // The first adt connection is unaffected.
    let msg = message("ADT-2");
    assert_eq!(adt.round_trip(&msg), mock_ack(&msg, AckCode::AA, None));

    // Both listeners deliver to the one downstream.
    wait_until("every accepted message delivered", || {
        receiver.received().len() == 4
    });
    let mut delivered = control_ids(&receiver.received());
    delivered.sort();
    assert_eq!(delivered, ["ADT-1", "ADT-2", "BIG-1", "LAB-1"]);

    // Per-listener series, one per listener, next to the unchanged relay-wide ones.
    let expected: Vec<String> = [
        "mllp_relay_messages_in_total 4",
        "mllp_relay_listener_messages_in_total{listener=\"adt\"} 2",
        "mllp_relay_listener_messages_in_total{listener=\"lab\"} 2",
        "mllp_relay_acks_total{code=\"AA\",origin=\"downstream\"} 2",
        "mllp_relay_acks_total{code=\"AA\",origin=\"relay\"} 2",
        "mllp_relay_listener_acks_total{listener=\"adt\",code=\"AA\",origin=\"downstream\"} 2",
        "mllp_relay_listener_acks_total{listener=\"adt\",code=\"AA\",origin=\"relay\"} 0",
        "mllp_relay_listener_acks_total{listener=\"lab\",code=\"AA\",origin=\"downstream\"} 0",
        "mllp_relay_listener_acks_total{listener=\"lab\",code=\"AA\",origin=\"relay\"} 2",
        "mllp_relay_framing_errors_total 1",
        "mllp_relay_listener_framing_errors_total{listener=\"adt\"} 1",
        "mllp_relay_listener_framing_errors_total{listener=\"lab\"} 0",
        "mllp_relay_listener_connections_accepted_total{listener=\"adt\"} 2",
        "mllp_relay_listener_connections_accepted_total{listener=\"lab\"} 1",
        "mllp_relay_listener_connections_open{listener=\"adt\"} 1",
        "mllp_relay_listener_connections_open{listener=\"lab\"} 1",
        "mllp_relay_downstream_messages_total{downstream=\"mock\"} 4",
        "mllp_relay_downstream_acks_total{downstream=\"mock\",code=\"AA\"} 4",
    ]
    .map(str::to_owned)
    .to_vec();
    let body = scrape_until(relay.metrics_addr().unwrap(), &expected);
    for family in [
        "mllp_relay_listener_bytes_in_total",
        "mllp_relay_listener_bytes_out_total",
        "mllp_relay_listener_tls_rejections_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} counter")),
            "{family}"
        );
    }

    // Bytes in and out, per listener, add up to the relay-wide counters.
    let stats = relay.stats();
    let (adt_stats, lab_stats) = (stats.listener(0), stats.listener(1));
    assert_eq!(adt_stats.name(), "adt");
    assert_eq!(stats.listener_named("lab").unwrap().name(), "lab");
    assert!(
        Stats::get(&lab_stats.bytes_in) > 5000,
        "lab read the big message"
    );
    assert!(Stats::get(&adt_stats.bytes_in) > 0);
    assert_eq!(
        Stats::get(&adt_stats.bytes_in) + Stats::get(&lab_stats.bytes_in),
        Stats::get(&stats.bytes_in)
    );
    assert!(Stats::get(&adt_stats.bytes_out) > 0 && Stats::get(&lab_stats.bytes_out) > 0);
    assert_eq!(
        Stats::get(&adt_stats.bytes_out) + Stats::get(&lab_stats.bytes_out),
        Stats::get(&stats.bytes_out)
    );
    relay.shutdown();
}

#[test]
fn each_listener_has_its_own_tls_allowlist_and_connection_limit() {
    let pki = pki::Pki::new("e2e-listeners");
    let receiver = Receiver::start(Behaviour::Ack);
    let (mut cfg, rejections) = tls_config(&pki, receiver.addr, None, &[]);
    cfg.workers = 1;
    // 0 "partners": TLS, one connection per worker. 1 "internal": plain, default limit.
    // 2 "blocked": plain, loopback not allowed.
    cfg.listeners[0].name = "partners".to_owned();
    cfg.listeners[0].max_connections_per_worker = 1;
    let mut blocked = listener("blocked");
    blocked.allowed_sources = vec!["10.0.0.0/8".parse().unwrap()];
    cfg.listeners.push(listener("internal"));
    cfg.listeners.push(blocked);
    let relay = relay::start(cfg).unwrap();
    let addrs: Vec<SocketAddr> = relay.listeners().iter().map(|l| l.addr).collect();

    let mut partner = Client::connect_tls(addrs[0], pki.client(TLS_BOTH, None));
    let ack = partner.round_trip(&message("TLS-1"));
    assert_eq!(code_and_id(&ack), (AckCode::AA, "TLS-1".to_owned()));
    // Plaintext is TLS's problem on the TLS port only; the internal port speaks plain MLLP.
    let mut internal = Client::connect(addrs[1]);
    assert_eq!(
        code_and_id(&internal.round_trip(&message("PLAIN-1"))).0,
        AckCode::AA
    );
    // partners is full (one connection per worker): a second partner is refused...
    let mut second = Client::connect_tls(addrs[0], pki.client(TLS_BOTH, None));
    let mut framed = Vec::new();
    FramingConfig::MLLP
        .encode(&message("TLS-2"), &mut framed)
        .unwrap();
    let _ = second
        .io
        .write_all(&framed)
        .and_then(|()| second.io.flush());
    assert_eq!(second.receive(), None, "partners' limit refused it");
    // ...while internal takes more connections than partners' limit.
    let mut more = Client::connect(addrs[1]);
    assert_eq!(
        code_and_id(&more.round_trip(&message("PLAIN-2"))).0,
        AckCode::AA
    );
    // blocked refuses loopback before any byte.
    let mut outsider = Client::connect(addrs[2]);
    outsider.send(&message("BLOCKED-1"));
    assert_eq!(outsider.receive(), None);

    let stats = relay.stats();
    let counter =
        |i: usize, pick: fn(&relay::metrics::ListenerStats) -> &std::sync::atomic::AtomicU64| {
            Stats::get(pick(stats.listener(i)))
        };
    assert_eq!(counter(0, |l| &l.connections_refused), 1);
    assert_eq!(counter(1, |l| &l.connections_refused), 0);
    assert_eq!(counter(2, |l| &l.connections_refused), 0);
    assert_eq!(counter(2, |l| &l.connections_refused_source), 1);
    assert_eq!(counter(0, |l| &l.connections_refused_source), 0);
    assert_eq!(counter(0, |l| &l.connections_accepted), 1);
    assert_eq!(counter(1, |l| &l.connections_accepted), 2);
    assert_eq!(Stats::get(&stats.connections_refused), 1);
    assert_eq!(Stats::get(&stats.connections_refused_source), 1);
    assert_eq!(counter(0, |l| &l.messages_in), 1);
    assert_eq!(counter(1, |l| &l.messages_in), 2);
    assert_eq!(rejections.get(RejectReason::UnknownCa), 0);

    // SIGHUP's reload reaches every TLS listener, and only those.
    let reloaded = relay.reload_tls();
    assert_eq!(reloaded.len(), 1, "one TLS listener");
    assert_eq!(reloaded[0].0, "partners");
    assert!(reloaded[0].1.is_ok());
    // The open connections carry on after the reload.
    assert_eq!(
        code_and_id(&partner.round_trip(&message("TLS-3"))).0,
        AckCode::AA
    );
    assert_eq!(
        code_and_id(&internal.round_trip(&message("PLAIN-3"))).0,
        AckCode::AA
    );

    // Shutdown closes every listener.
    relay.shutdown();
    for addr in addrs {
        assert!(
            TcpStream::connect_timeout(&addr, PATIENCE).is_err(),
            "{addr} still accepts after shutdown"
        );
    }
}

#[test]
fn a_durable_listener_next_to_a_passthrough_one() {
    let journal = TempDir::new("two-listeners");
    let receiver_port = ReservedPort::new();
    let receiver_addr = receiver_port.addr();
    let mut cfg = durable_config(receiver_addr, journal.path());
    // The first listener is passthrough; only the second is durable, and the journal is set up
    // for it all the same.
    cfg.listeners[0].ack_mode = relay::config::AckMode::Passthrough;
    cfg.listeners[0].name = "adt".to_owned();
    let mut lab = listener("lab");
    lab.ack_mode = relay::config::AckMode::Durable;
    cfg.listeners.push(lab);
    let relay = relay::start(cfg).unwrap();
    let lab_addr = relay.listen_addr_of("lab").unwrap();

    // The receiver is down: adt's sender hears so (AE), lab's message is taken into custody.
    let mut adt = Client::connect(relay.listen_addr());
    let ack = adt.round_trip(&message("ADT-DOWN"));
    assert_eq!(code_and_id(&ack), (AckCode::AE, "ADT-DOWN".to_owned()));
    let mut lab = Client::connect(lab_addr);
    let ack = lab.round_trip(&message("LAB-DURABLE"));
    assert_eq!(code_and_id(&ack), (AckCode::AA, "LAB-DURABLE".to_owned()));
    assert_eq!(Stats::get(&relay.stats().journal_messages), 1);

    // The receiver comes back: the journaled message is delivered; adt's was never kept.
    let receiver = Receiver::start_at(&receiver_port, Behaviour::Ack);
    wait_until("the journaled message delivered", || {
        !receiver.received().is_empty()
    });
    assert_eq!(control_ids(&receiver.received()), ["LAB-DURABLE"]);
    // And adt passes the receiver's ACKs through again.
    let msg = message("ADT-UP");
    assert_eq!(adt.round_trip(&msg), mock_ack(&msg, AckCode::AA, None));
    relay.shutdown();
}

#[test]
fn listeners_that_cannot_run_together_are_refused_at_start() {
    let receiver = Receiver::start(Behaviour::Ack);
    let start_error = |cfg: Config| match relay::start(cfg) {
        Ok(relay) => {
            relay.shutdown();
            panic!("started")
        }
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
            e.to_string()
        }
    };
    // No listener.
    let mut cfg = config(receiver.addr);
    cfg.listeners.clear();
    assert!(start_error(cfg).contains("at least one listener"));
    // Two with one name.
    let mut cfg = config(receiver.addr);
    cfg.listeners.push(listener("listener"));
    assert!(start_error(cfg).contains("two listeners are named \"listener\""));
    // Two on one address (SO_REUSEPORT would let both bind and split the connections).
    let reserved = ReservedPort::new();
    let taken = reserved.addr();
    let mut cfg = config(receiver.addr);
    cfg.listeners[0].addr = taken;
    let mut other = listener("other");
    other.addr = SocketAddr::from(([0, 0, 0, 0], taken.port()));
    cfg.listeners.push(other);
    assert!(start_error(cfg).contains("would share an address"));
}

// --- routing -------------------------------------------------------------------------------

#[test]
fn messages_are_routed_by_msh_and_unrouted_ones_refused() {
    use relay::route::{Pattern, Route, RouteMatch};
    let results = Receiver::start(Behaviour::Ack);
    let admissions = Receiver::start(Behaviour::Ack);
    let mut cfg = config(results.addr);
    cfg.downstreams
        .push(DownstreamConfig::plain("adt", admissions.addr));
    cfg.routes = vec![
        Route {
            matcher: RouteMatch {
                message_type: Pattern::parse("ORU"),
                ..RouteMatch::default()
            },
            downstream: 0,
        },
        Route {
            matcher: RouteMatch {
                message_type: Pattern::parse("ADT"),
                trigger_event: Pattern::parse("A01"),
                ..RouteMatch::default()
            },
            downstream: 1,
        },
    ];
    cfg.default_downstream = None;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let oru = message("ROUTE-ORU");
    let adt = b"MSH|^~\\&|ADMIT|HOSP|EHR|CLINIC|2026||ADT^A01|ROUTE-ADT|P|2.5\rPID|1\r".to_vec();
    let a08 = b"MSH|^~\\&|ADMIT|HOSP|EHR|CLINIC|2026||ADT^A08|ROUTE-A08|P|2.5\rPID|1\r".to_vec();
    let siu = b"MSH|^~\\&|SCHED|HOSP|EHR|CLINIC|2026||SIU^S12|ROUTE-SIU|P|2.5\rSCH|1\r".to_vec();
    assert_eq!(code_and_id(&client.round_trip(&oru)).0, AckCode::AA);
    assert_eq!(code_and_id(&client.round_trip(&adt)).0, AckCode::AA);
    let refused = client.round_trip(&a08);
    assert_eq!(
        code_and_id(&refused),
        (AckCode::AR, "ROUTE-A08".to_string())
    );
    assert!(
        String::from_utf8_lossy(&refused).contains("ERR|||201^"),
        "no rule for the trigger event"
    );
    let refused = client.round_trip(&siu);
    assert!(
        String::from_utf8_lossy(&refused).contains("ERR|||200^"),
        "no rule for the message type"
    );
    assert_eq!(results.received(), [oru]);
    assert_eq!(admissions.received(), [adt]);
    assert_eq!(Stats::get(&relay.stats().rejects_unrouted), 2);
    relay.shutdown();
}

// --- single link policy ----------------------------------------------------------------------

#[test]
fn a_single_link_carries_every_worker_on_one_connection() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr);
    cfg.workers = 2;
    cfg.downstreams[0].link = relay::config::LinkPolicy::Single;
    let relay = relay::start(cfg).unwrap();
    let addr = relay.listen_addr();
    // Several senders at once, spread over both workers by SO_REUSEPORT.
    let senders: Vec<_> = (0..12)
        .map(|s| {
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0..15 {
                    let ack = client.round_trip(&message(&format!("S{s}-{i}")));
                    assert_eq!(code_and_id(&ack), (AckCode::AA, format!("S{s}-{i}")));
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    assert_eq!(
        receiver.connections.load(Ordering::SeqCst),
        1,
        "exactly one downstream connection"
    );
    let received = receiver.received();
    assert_eq!(received.len(), 180);
    // Each sender's messages arrive in the order it sent them.
    for s in 0..12 {
        let prefix = format!("|S{s}-");
        let order: Vec<usize> = received
            .iter()
            .filter_map(|m| {
                let text = String::from_utf8_lossy(m);
                let at = text.find(&prefix)?;
                text[at + prefix.len()..].split('|').next()?.parse().ok()
            })
            .collect();
        assert_eq!(order, (0..15).collect::<Vec<_>>(), "sender {s}");
    }
    relay.shutdown();
}

#[test]
fn downstream_over_tls_carries_large_messages_byte_for_byte() {
    use netio::tls::ClientTlsSettings;
    let pki = pki::Pki::new("e2e-downstream-tls");
    let settings = ServerTlsSettings {
        cert_chain: pki.server.cert_path.clone(),
        key: pki.server.key_path.clone(),
        client_ca: None,
        client_thumbprints: vec![],
    };
    let server = netio::tls::server_config(&settings, Arc::new(TlsRejections::new())).unwrap();
    let receiver = Receiver::start_tls(Behaviour::Ack, server);
    // Larger than rustls's 64 KiB send buffer: written in pieces.
    let mut big = message("TLS-BIG");
    big.extend(std::iter::repeat_n(b'A', 300_000));
    big.push(b'\r');
    let trusts = [
        ClientTlsSettings {
            ca: Some(pki.ca.cert_path.clone()),
            pinned: vec![],
            client_cert: None,
        },
        ClientTlsSettings {
            ca: None,
            pinned: vec![pki.server.thumbprint()],
            client_cert: None,
        },
    ];
    for trust in trusts {
        let mut cfg = config(receiver.addr);
        let client = netio::tls::client_config(&trust).unwrap();
        cfg.downstreams[0].tls = Some(netio::connect::ClientTls {
            config: client,
            server_name: netio::tls::server_name("localhost").unwrap(),
        });
        let relay = relay::start(cfg).unwrap();
        let mut sender = Client::connect(relay.listen_addr());
        assert_eq!(
            code_and_id(&sender.round_trip(&big)),
            (AckCode::AA, "TLS-BIG".to_string())
        );
        assert_eq!(
            code_and_id(&sender.round_trip(&message("TLS-SMALL"))).0,
            AckCode::AA
        );
        relay.shutdown();
    }
    let received = receiver.received();
    assert_eq!(received.len(), 4);
    assert_eq!(received[0], big, "byte for byte through TLS");
    assert_eq!(
        receiver.connections.load(Ordering::SeqCst),
        2,
        "one pooled TLS connection per relay"
    );
}

#[test]
fn downstream_requiring_a_client_certificate_gets_the_relays() {
    use netio::tls::ClientTlsSettings;
    let pki = pki::Pki::new("e2e-downstream-mtls");
    let settings = ServerTlsSettings {
        cert_chain: pki.server.cert_path.clone(),
        key: pki.server.key_path.clone(),
        client_ca: Some(pki.ca.cert_path.clone()),
        client_thumbprints: vec![],
    };
    let server = netio::tls::server_config(&settings, Arc::new(TlsRejections::new())).unwrap();
    let receiver = Receiver::start_tls(Behaviour::Ack, server);
    let run = |client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>| {
        let trust = ClientTlsSettings {
            ca: Some(pki.ca.cert_path.clone()),
            pinned: vec![],
            client_cert,
        };
        let mut cfg = config(receiver.addr);
        cfg.downstreams[0].retries = 0;
        let client = netio::tls::client_config(&trust).unwrap();
        cfg.downstreams[0].tls = Some(netio::connect::ClientTls {
            config: client,
            server_name: netio::tls::server_name("localhost").unwrap(),
        });
        let relay = relay::start(cfg).unwrap();
        let mut sender = Client::connect(relay.listen_addr());
        let ack = code_and_id(&sender.round_trip(&message("DS-MTLS"))).0;
        relay.shutdown();
        ack
    };
    let identity = (pki.client.cert_path.clone(), pki.client.key_path.clone());
    assert_eq!(
        run(Some(identity)),
        AckCode::AA,
        "the receiver accepts the relay's certificate"
    );
    assert_eq!(
        run(None),
        AckCode::AE,
        "without one the receiver refuses, and the sender hears it"
    );
    assert_eq!(receiver.received().len(), 1);
}

#[test]
fn a_big_tls_record_split_across_reads_then_small_records() {
    let pki = pki::Pki::new("e2e-small-records");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, _) = tls_config(&pki, receiver.addr, None, &[]);
    let relay = relay::start(cfg).unwrap();
    let tcp = TcpStream::connect(relay.listen_addr()).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(pki.client(TLS_BOTH, None), name).unwrap();
    let mut stream = rustls::StreamOwned::new(session, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    // One socket write holding: a ~1.3 KB record, a full 16 KiB record, then small records.
    // The relay's first 17 KiB read ends inside the big record; completing it on the next
    // read yields 16 KiB of plaintext at once, and the small records behind it push rustls past
    // its 16 KiB plaintext buffer before that read is fed entirely.
    let mut sent = Vec::new();
    let mut add = |msg: Vec<u8>, out: &mut Vec<u8>| {
        FramingConfig::MLLP.encode(&msg, out).unwrap();
        sent.push(msg);
    };
    let pad = |id: &str, extra: usize| {
        let mut msg = message(id);
        msg.extend(std::iter::repeat_n(b'x', extra));
        msg.push(b'\r');
        msg
    };
    let mut first = Vec::new();
    add(pad("REC-0", 1100), &mut first);
    let mut big = Vec::new();
    add(pad("REC-1", 16_384), &mut big);
    stream.conn.writer().write_all(&first).unwrap();
    stream.conn.writer().write_all(&big[..16_384]).unwrap(); // exactly one full record
    stream.conn.writer().write_all(&big[16_384..]).unwrap();
    for i in 2..12 {
        let mut small = Vec::new();
        add(pad(&format!("REC-{i}"), 800), &mut small);
        stream.conn.writer().write_all(&small).unwrap();
    }
    let mut wire = Vec::new();
    while stream.conn.wants_write() {
        stream.conn.write_tls(&mut wire).unwrap();
    }
    stream.sock.write_all(&wire).unwrap();
    let mut client = Client {
        tcp: stream.sock.try_clone().unwrap(),
        io: Box::new(stream),
        deframer: Deframer::new(FramingConfig::MLLP),
        buf: Vec::new(),
    };
    for i in 0..12 {
        let ack = client.receive().expect("every message answered");
        assert_eq!(code_and_id(&ack), (AckCode::AA, format!("REC-{i}")));
    }
    assert_eq!(receiver.received(), sent);
    relay.shutdown();
}

// --- durable ACK mode ----------------------------------------------------------------------

fn durable_config(downstream: SocketAddr, journal: &std::path::Path) -> Config {
    let mut cfg = config(downstream);
    cfg.listeners[0].ack_mode = relay::config::AckMode::Durable;
    cfg.journal = Some(relay::config::JournalConfig::new(journal));
    // Retry quickly while the receiver is away: the durable pause is the downstream's backoff.
    cfg.downstreams[0].retries = 0;
    cfg.downstreams[0].connect_timeout = Duration::from_millis(500);
    cfg.downstreams[0].backoff_cap = Duration::from_millis(50);
    cfg.shutdown_grace = Duration::from_secs(2);
    cfg
}

/// Waits (bounded) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn control_ids(messages: &[Vec<u8>]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(Msh::parse(m).unwrap().control_id()).into_owned())
        .collect()
}

#[test]
fn durable_mode_acks_while_the_receiver_is_down_and_delivers_when_it_returns() {
    let journal = TempDir::new("down");
    let receiver_port = ReservedPort::new();
    let receiver_addr = receiver_port.addr();
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    let ids: Vec<String> = (0..20).map(|i| format!("DUR-{i}")).collect();
    for id in &ids {
        let ack = client.round_trip(&message(id));
        assert_eq!(code_and_id(&ack), (AckCode::AA, id.clone()));
        assert!(
            String::from_utf8_lossy(&ack).contains("|R"),
            "the relay's own ACK: the receiver is down"
        );
    }
    assert_eq!(
        code_and_id(&client.round_trip(&enhanced_message("DUR-E"))).0,
        AckCode::CA,
        "enhanced mode gets a commit ACK"
    );
    assert!(Stats::get(&stats.journal_commits) >= 1);
    assert_eq!(Stats::get(&stats.journal_messages), 21, "all queued");
    assert!(
        Stats::get(&stats.durable_retries) >= 1,
        "the receiver is down"
    );

    let receiver = Receiver::start_at(&receiver_port, Behaviour::Ack);
    wait_until("the receiver has every message", || {
        receiver.received().len() >= 21
    });
    let mut expected = ids;
    expected.push("DUR-E".into());
    assert_eq!(
        control_ids(&receiver.received()),
        expected,
        "one connection's messages arrive once each, in order"
    );
    wait_until("the queue is empty", || {
        Stats::get(&stats.journal_messages) == 0
    });
    relay.shutdown();
}

#[test]
fn durable_mode_delivers_after_a_restart_what_it_had_not_delivered() {
    let journal = TempDir::new("restart");
    let receiver_port = ReservedPort::new();
    let receiver_addr = receiver_port.addr();
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..30 {
        let id = format!("KEEP-{i}");
        assert_eq!(
            code_and_id(&client.round_trip(&message(&id))),
            (AckCode::AA, id)
        );
    }
    drop(client);
    relay.shutdown();

    let receiver = Receiver::start_at(&receiver_port, Behaviour::Ack);
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    let stats = relay.stats().clone();
    assert_eq!(Stats::get(&stats.journal_recovered), 30);
    wait_until("the receiver has every message", || {
        receiver.received().len() >= 30
    });
    let expected: Vec<String> = (0..30).map(|i| format!("KEEP-{i}")).collect();
    assert_eq!(
        control_ids(&receiver.received()),
        expected,
        "in order, once each"
    );
    wait_until("the queue is empty", || {
        Stats::get(&stats.journal_messages) == 0
    });
    relay.shutdown();

    // Delivered means gone: a third start finds nothing to deliver.
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    assert_eq!(Stats::get(&relay.stats().journal_recovered), 0);
    relay.shutdown();
    assert_eq!(receiver.received().len(), 30, "nothing delivered twice");
}

#[test]
fn durable_mode_with_a_single_link_delivers_in_the_order_it_acknowledged() {
    // One worker, one link: the relay's global order is its journal's order. The receiver is
    // down while six senders take turns, so everything queues; when it comes back, the order
    // it receives must be the order the AAs were given, across connections. (With the
    // per-core policy, connections are delivered on parallel lanes and may interleave.)
    let journal = TempDir::new("single-order");
    let receiver_port = ReservedPort::new();
    let receiver_addr = receiver_port.addr();
    let mut cfg = durable_config(receiver_addr, journal.path());
    cfg.workers = 1;
    cfg.downstreams[0].link = relay::config::LinkPolicy::Single;
    let relay = relay::start(cfg).unwrap();
    let mut clients: Vec<Client> = (0..6)
        .map(|_| Client::connect(relay.listen_addr()))
        .collect();
    let mut acknowledged = Vec::new();
    for round in 0..10 {
        for (c, client) in clients.iter_mut().enumerate() {
            // Not simply round-robin: the next sender depends on the round, so that no
            // per-connection grouping can reproduce the order by accident.
            let id = format!("ORDER-{round}-{}", (c * 5 + round) % 6);
            assert_eq!(
                code_and_id(&client.round_trip(&message(&id))),
                (AckCode::AA, id.clone())
            );
            acknowledged.push(id);
        }
    }
    let receiver = Receiver::start_at(&receiver_port, Behaviour::Ack);
    wait_until("the receiver has every message", || {
        receiver.received().len() >= acknowledged.len()
    });
    drop(clients);
    relay.shutdown();
    assert_eq!(
        receiver.connections.load(Ordering::SeqCst),
        1,
        "one downstream connection"
    );
    assert_eq!(control_ids(&receiver.received()), acknowledged);
}

#[test]
fn durable_mode_writes_into_prepared_segments_and_recovers_through_their_zeros() {
    // Small segments: many rotations, most of them into a zero-filled spare prepared ahead
    // (the first may find it not ready yet). The receiver is down, so every record is a
    // message and every segment is kept.
    const SEGMENT: u64 = 4096;
    const SENT: usize = 200;
    let journal = TempDir::new("prepared");
    let receiver_port = ReservedPort::new();
    let receiver_addr = receiver_port.addr();
    let config = || {
        let mut cfg = durable_config(receiver_addr, journal.path());
        cfg.workers = 1;
        cfg.journal.as_mut().unwrap().segment_bytes = SEGMENT;
        cfg
    };
    let relay = relay::start(config()).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let dir = journal.path().join("worker-0");
    let mut sent = 0;
    // At least SENT messages, and then until the last one's rotation began a prepared
    // segment (on a slow machine the spare may not be ready for a few more).
    while sent < SENT || !newest_segment_is_untouched_spare(&dir, SEGMENT) {
        assert!(sent < SENT + 500, "no rotation found a prepared spare");
        let id = format!("PREP-{sent}");
        assert_eq!(
            code_and_id(&client.round_trip(&message(&id))),
            (AckCode::AA, id)
        );
        sent += 1;
        if sent % 20 == 0 {
            // Pauses, as real traffic leaves them (and the spare's thread uses them).
            thread::sleep(Duration::from_millis(20));
        }
    }
    drop(client);
    relay.shutdown();

    // A segment begun from a spare ends in the spare's zeros until records overhang its end
    // (a message record ends with the message's last byte, a CR, never a zero). The one being
    // written at shutdown was begun from a spare: it holds fewer records than its size.
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(journal.path().join("worker-0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    paths.sort();
    assert!(paths.len() > 5, "{} segments", paths.len());
    let newest = std::fs::read(paths.last().unwrap()).unwrap();
    assert!(
        newest.len() as u64 >= SEGMENT && newest.last() == Some(&0),
        "the newest segment ({} bytes) was not prepared ahead",
        newest.len()
    );

    // A restart reads every segment to its zeros: nothing reported damaged, everything
    // delivered once, in order.
    let receiver = Receiver::start_at(&receiver_port, Behaviour::Ack);
    let expected: Vec<String> = (0..sent).map(|i| format!("PREP-{i}")).collect();
    assert_recovers_in_order(config(), &receiver, &expected);
}

/// Whether the newest segment in `dir` is a spare taken by a rotation and not written yet:
/// at least a segment long, and zeros only (a new file begun empty would be shorter; one
/// written into would not be all zeros).
fn newest_segment_is_untouched_spare(dir: &std::path::Path, segment: u64) -> bool {
    let bytes = std::fs::read(newest_segment(dir)).unwrap_or_default();
    bytes.len() as u64 >= segment && bytes.iter().all(|&b| b == 0)
}

/// Starts a relay with `config` over an existing journal and checks that it finds `expected`
/// undelivered, reports no damage, and delivers them to `receiver` once each, in order.
fn assert_recovers_in_order(config: Config, receiver: &Receiver, expected: &[String]) {
    let relay = relay::start(config).unwrap();
    let stats = relay.stats().clone();
    assert_eq!(Stats::get(&stats.journal_recovered), expected.len() as u64);
    assert_eq!(Stats::get(&stats.journal_damaged_tails), 0);
    wait_until("the receiver has every message", || {
        receiver.received().len() >= expected.len()
    });
    relay.shutdown();
    assert_eq!(
        control_ids(&receiver.received()),
        expected,
        "in order, once each"
    );
}

#[test]
fn durable_mode_reuses_delivered_segments_and_recovers_through_their_earlier_records() {
    // Segments of 16 blocks: while the receiver answers, they fill (a block per commit: a
    // message, and the delivered record of the one before) and are delivered, and their files
    // are reused for later segments. The last message of each is marked delivered in the next
    // one, so a reused file holds an earlier message that it does not say was delivered (read
    // as this segment's, it would be delivered again: checked by stamping every commit
    // `Stamp::Plain`, which fails this test). Then the receiver stops answering: the messages
    // after that stay in the journal, in a reused file whose earlier records lie behind
    // theirs.
    const SEGMENT: u64 = 16 * 4096;
    const DELIVERED: usize = 200;
    const KEPT: usize = 5;
    let journal = TempDir::new("reuse");
    let config = |downstream| {
        let mut cfg = durable_config(downstream, journal.path());
        cfg.workers = 1;
        cfg.journal.as_mut().unwrap().segment_bytes = SEGMENT;
        cfg
    };
    static ANSWERING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let receiver = Receiver::start(Behaviour::AckWhile(&ANSWERING));
    let relay = relay::start(config(receiver.addr)).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    let mut send = |id: String| {
        assert_eq!(
            code_and_id(&client.round_trip(&message(&id))),
            (AckCode::AA, id)
        );
    };
    // At least DELIVERED messages, and then until a rotation has just begun a segment in a
    // reused file (the counter moved since the message before), so that the kept messages
    // below go into it.
    let mut delivered = 0;
    let mut reused_before = 0;
    loop {
        send(format!("DONE-{delivered}"));
        delivered += 1;
        let reused = Stats::get(&stats.journal_segments_reused);
        if delivered >= DELIVERED && reused >= 3 && reused > reused_before {
            break;
        }
        reused_before = reused;
        assert!(delivered < DELIVERED + 2000, "{reused} segments reused");
        if delivered % 20 == 0 {
            // Pauses, as real traffic leaves them (and the spare's thread uses them).
            thread::sleep(Duration::from_millis(20));
        }
    }
    wait_until("the receiver has every message", || {
        receiver.received().len() >= delivered
    });
    ANSWERING.store(false, Ordering::SeqCst);
    for i in 0..KEPT {
        send(format!("KEPT-{i}"));
    }
    drop(client);
    relay.shutdown();
    // The newest segment is a reused file: records of its earlier use fill its last block
    // (a zero-filled one would end in zeros, a new one would be short).
    let newest = newest_segment(&journal.path().join("worker-0"));
    let bytes = std::fs::read(&newest).unwrap();
    assert_eq!(bytes.len() as u64, SEGMENT, "{}", newest.display());
    assert!(
        bytes[bytes.len() - 4096..].iter().any(|&b| b != 0),
        "the newest segment was not a reused one"
    );

    // A restart reads each segment to the end of its own records: the kept messages, once
    // each and in order; nothing of the delivered ones, nothing reported damaged.
    let receiver = Receiver::start(Behaviour::Ack);
    let expected: Vec<String> = (0..KEPT).map(|i| format!("KEPT-{i}")).collect();
    assert_recovers_in_order(config(receiver.addr), &receiver, &expected);
}

/// The segment of a worker's journal directory with the highest name.
fn newest_segment(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .expect("a segment")
}

#[test]
fn the_duplicate_window_remembers_journaled_messages_across_a_restart() {
    // The relay goes down after journaling a message (here: after delivering it too; the
    // segment holding it is still on disk). Its sender never saw the ACK and resends after
    // the restart: it gets an AA, and the receiver gets the message once.
    let journal = TempDir::new("window");
    let receiver = Receiver::start(Behaviour::Ack);
    let config = || {
        let mut cfg = durable_config(receiver.addr, journal.path());
        cfg.listeners[0].duplicates = Some(relay::config::DuplicateWindowConfig {
            max_age: Duration::from_secs(600),
            max_entries: 1000,
        });
        cfg
    };
    let relay = relay::start(config()).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    assert_eq!(
        code_and_id(&client.round_trip(&message("WIN-1"))),
        (AckCode::AA, "WIN-1".to_owned())
    );
    wait_until("the receiver has the message", || {
        !receiver.received().is_empty()
    });
    drop(client);
    relay.shutdown();

    let relay = relay::start(config()).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    let resent = client.round_trip(&message("WIN-1"));
    assert_eq!(code_and_id(&resent), (AckCode::AA, "WIN-1".to_owned()));
    assert_eq!(Stats::get(&stats.listener(0).duplicates_answered), 1);
    // A new message is taken as usual.
    assert_eq!(
        code_and_id(&client.round_trip(&message("WIN-2"))),
        (AckCode::AA, "WIN-2".to_owned())
    );
    wait_until("the receiver has the new message", || {
        receiver.received().len() >= 2
    });
    drop(client);
    relay.shutdown();
    assert_eq!(control_ids(&receiver.received()), ["WIN-1", "WIN-2"]);
}

#[test]
fn durable_mode_cuts_a_torn_journal_tail_and_delivers_everything_acknowledged() {
    let journal = TempDir::new("torn");
    let receiver_port = ReservedPort::new();
    let receiver_addr = receiver_port.addr();
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..5 {
        let id = format!("TORN-{i}");
        assert_eq!(
            code_and_id(&client.round_trip(&message(&id))),
            (AckCode::AA, id)
        );
    }
    drop(client);
    relay.shutdown();
    // A crash mid-write leaves a partial record: the first bytes of a copy of a real one.
    let mut segments: Vec<_> = std::fs::read_dir(journal.path().join("worker-0"))
        .unwrap()
        .chain(std::fs::read_dir(journal.path().join("worker-1")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    segments.sort();
    let newest = segments
        .last()
        .expect("a segment with the messages")
        .clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let torn = bytes[..40].to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(&newest, &bytes).unwrap();

    let receiver = Receiver::start_at(&receiver_port, Behaviour::Ack);
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    let stats = relay.stats().clone();
    assert_eq!(Stats::get(&stats.journal_damaged_tails), 1);
    assert_eq!(Stats::get(&stats.journal_recovered), 5);
    wait_until("the receiver has every message", || {
        receiver.received().len() >= 5
    });
    relay.shutdown();
    let expected: Vec<String> = (0..5).map(|i| format!("TORN-{i}")).collect();
    assert_eq!(
        control_ids(&receiver.received()),
        expected,
        "once each, in order"
    );
}

#[test]
fn durable_mode_keeps_refused_messages_as_dead_letters_and_replays_them() {
    let journal = TempDir::new("dead");
    let refusing = Receiver::start(Behaviour::Code(AckCode::AR));
    let relay = relay::start(durable_config(refusing.addr, journal.path())).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    for id in ["REFUSED-1", "REFUSED-2"] {
        assert_eq!(
            code_and_id(&client.round_trip(&message(id))),
            (AckCode::AA, id.to_string()),
            "the relay took custody; the receiver's later answer is its own business"
        );
    }
    wait_until("both are dead letters", || {
        Stats::get(&stats.dead_letters) == 2
    });
    assert_eq!(
        refusing.received().len(),
        2,
        "a final answer is not retried"
    );
    let (letters, warnings) = relay::custody::dead_letters::read_all(journal.path()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut ids: Vec<String> = letters.iter().map(|l| l.control_id()).collect();
    ids.sort();
    assert_eq!(ids, ["REFUSED-1", "REFUSED-2"]);
    assert!(letters.iter().all(|l| l.answer_summary().starts_with("AR")));

    // Replay needs the relay stopped (it rewrites the files under the journal's lock).
    let accepting = Receiver::start(Behaviour::Ack);
    let busy =
        relay::custody::dead_letters::replay(journal.path(), accepting.addr, PATIENCE, |_, _| {});
    assert!(busy.is_err(), "the running relay holds the lock");
    relay.shutdown();
    let mut outcomes = Vec::new();
    let summary =
        relay::custody::dead_letters::replay(journal.path(), accepting.addr, PATIENCE, |l, o| {
            outcomes.push(format!("{} {o}", l.control_id()));
        })
        .unwrap();
    assert_eq!((summary.accepted, summary.kept), (2, 0), "{outcomes:?}");
    assert_eq!(accepting.received().len(), 2);
    let (left, _) = relay::custody::dead_letters::read_all(journal.path()).unwrap();
    assert!(left.is_empty(), "accepted dead letters are removed");
}

#[test]
fn durable_mode_naks_when_the_journal_is_full_and_never_drops() {
    let journal = TempDir::new("full");
    let down = ReservedPort::new();
    let mut cfg = durable_config(down.addr(), journal.path());
    cfg.workers = 1;
    if let Some(j) = cfg.journal.as_mut() {
        j.max_bytes = 2_000;
    }
    let relay = relay::start(cfg).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    let mut codes = Vec::new();
    for i in 0..20 {
        codes.push(code_and_id(&client.round_trip(&message(&format!("FULL-{i}")))).0);
    }
    let accepted = codes.iter().filter(|c| **c == AckCode::AA).count();
    assert!(accepted >= 1, "{codes:?}");
    assert!(
        codes[accepted..].iter().all(|c| *c == AckCode::AE),
        "once full, every message gets an AE: {codes:?}"
    );
    assert_eq!(Stats::get(&stats.journal_full_naks), (20 - accepted) as u64);
    assert_eq!(Stats::get(&stats.journal_messages), accepted as u64);
    let ack = client.round_trip(&message("FULL-LAST"));
    assert!(
        String::from_utf8_lossy(&ack).contains("ERR|")
            && String::from_utf8_lossy(&ack).contains("207"),
        "ERR 207 names the problem: {}",
        String::from_utf8_lossy(&ack)
    );
    relay.shutdown();
}

#[test]
fn a_journal_is_used_by_one_relay_at_a_time() {
    let journal = TempDir::new("lock");
    let down = ReservedPort::new();
    let first = relay::start(durable_config(down.addr(), journal.path())).unwrap();
    let second = relay::start(durable_config(down.addr(), journal.path()));
    let error = second.expect_err("the journal is in use").to_string();
    assert!(error.contains("in use"), "{error}");
    first.shutdown();
}

#[test]
fn fewer_workers_after_a_restart_still_deliver_every_message() {
    let journal = TempDir::new("shrink");
    let receiver_port = ReservedPort::new();
    let receiver_addr = receiver_port.addr();
    let mut cfg = durable_config(receiver_addr, journal.path());
    cfg.workers = 3;
    let relay = relay::start(cfg).unwrap();
    // Several connections, so that the kernel spreads them over the workers.
    let mut clients: Vec<Client> = (0..6)
        .map(|_| Client::connect(relay.listen_addr()))
        .collect();
    let mut sent = 0;
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..5 {
            let id = format!("SHRINK-{c}-{i}");
            assert_eq!(
                code_and_id(&client.round_trip(&message(&id))),
                (AckCode::AA, id)
            );
            sent += 1;
        }
    }
    drop(clients);
    relay.shutdown();

    let receiver = Receiver::start_at(&receiver_port, Behaviour::Ack);
    let mut cfg = durable_config(receiver_addr, journal.path());
    cfg.workers = 1;
    let relay = relay::start(cfg).unwrap();
    assert_eq!(
        Stats::get(&relay.stats().journal_recovered),
        sent as u64,
        "every worker's messages are in the remaining worker's journal"
    );
    wait_until("the receiver has every message", || {
        receiver.received().len() >= sent
    });
    relay.shutdown();
    let mut got = control_ids(&receiver.received());
    assert_eq!(got.len(), sent, "once each");
    // Each connection's order is kept.
    for c in 0..6 {
        let prefix = format!("SHRINK-{c}-");
        let order: Vec<&String> = got.iter().filter(|id| id.starts_with(&prefix)).collect();
        let expected: Vec<String> = (0..5).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(order, expected.iter().collect::<Vec<_>>());
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), sent);
    assert!(
        !journal.path().join("worker-2").exists(),
        "the surplus journal is gone"
    );
}

#[test]
fn durable_mode_pauses_a_sender_while_the_journal_is_full_and_resumes_when_it_drains() {
    let journal = TempDir::new("pause");
    let receiver_port = ReservedPort::new();
    let receiver_addr = receiver_port.addr();
    let mut cfg = durable_config(receiver_addr, journal.path());
    cfg.workers = 1;
    if let Some(j) = cfg.journal.as_mut() {
        // The cap equals the segment size: space comes back only when the segment being
        // written is sealed early, once everything in it is delivered.
        j.max_bytes = 2_000;
        j.segment_bytes = 2_000;
        j.when_full = relay::config::WhenJournalFull::Pause;
    }
    let relay = relay::start(cfg).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    let mut accepted = 0;
    loop {
        let id = format!("PAUSE-{accepted}");
        client.send(&message(&id));
        match client.receive_within(Duration::from_millis(300)) {
            Some(ack) => {
                assert_eq!(code_and_id(&ack), (AckCode::AA, id));
                accepted += 1;
                assert!(accepted < 100, "the journal never filled");
            }
            None => break,
        }
    }
    assert!(accepted >= 1);
    assert_eq!(
        Stats::get(&stats.journal_full_naks),
        0,
        "paused, not refused"
    );
    // The receiver comes back: the queue drains, space returns, the paused message is taken.
    let receiver = Receiver::start_at(&receiver_port, Behaviour::Ack);
    let ack = client.receive().expect("the paused message's ACK");
    assert_eq!(
        code_and_id(&ack),
        (AckCode::AA, format!("PAUSE-{accepted}"))
    );
    for i in accepted + 1..accepted + 20 {
        let id = format!("PAUSE-{i}");
        assert_eq!(
            code_and_id(&client.round_trip(&message(&id))),
            (AckCode::AA, id)
        );
    }
    wait_until("every message is delivered", || {
        receiver.received().len() >= accepted + 20
    });
    relay.shutdown();
    let expected: Vec<String> = (0..accepted + 20).map(|i| format!("PAUSE-{i}")).collect();
    assert_eq!(
        control_ids(&receiver.received()),
        expected,
        "once each, in order"
    );
}
