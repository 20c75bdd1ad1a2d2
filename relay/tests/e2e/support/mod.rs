//! What the end-to-end tests share: the relay configurations they start from, a sender
//! ([`Client`]), ACK inspection, and the bounded waits. The downstream is always testkit's
//! [`Receiver`](testkit::receiver::Receiver). The Jepsen-style harness that runs the relay
//! binary under faults is [`jepsen`].

pub(crate) mod jepsen;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mllp::ack::{AckCode, parse_ack};
use mllp::frame::{Deframer, FramingConfig};
use netio::runtime::Driver;
use netio::tls::{ReloadableServerConfig, ServerTlsSettings, Thumbprint, TlsRejections};
use relay::config::{AckMode, Config, DownstreamConfig, JournalConfig, ListenerConfig};
use testkit::pki;

/// Upper bound on any wait in the in-process relay tests; a healthy run needs milliseconds.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// TLS 1.3 and 1.2, as a client offers them.
pub(crate) const TLS_BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// One plain passthrough listener on an ephemeral port, forwarding to `downstream` ("mock")
/// with a 3 s ACK timeout and one quick retry; two unpinned workers.
pub(crate) fn config(downstream: SocketAddr) -> Config {
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
        readiness_window: relay::config::DEFAULT_READINESS_WINDOW,
        audit: relay::config::AuditConfig::Off,
        journal: None,
    }
}

/// [`config`] in durable ACK mode with its journal in `journal`, retrying quickly while the
/// receiver is away.
pub(crate) fn durable_config(downstream: SocketAddr, journal: &Path) -> Config {
    let mut cfg = config(downstream);
    cfg.listeners[0].ack_mode = AckMode::Durable;
    cfg.journal = Some(JournalConfig::new(journal));
    // Retry quickly while the receiver is away: the durable pause is the downstream's backoff.
    cfg.downstreams[0].retries = 0;
    cfg.downstreams[0].connect_timeout = Duration::from_millis(500);
    cfg.downstreams[0].backoff_cap = Duration::from_millis(50);
    cfg.shutdown_grace = Duration::from_secs(2);
    cfg
}

/// [`config`] with its listener terminating TLS with the test PKI's server certificate.
pub(crate) fn tls_config(
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
        Some(ReloadableServerConfig::load(settings, rejections.clone()).unwrap());
    cfg.listeners[0].tls_rejections = rejections.clone();
    (cfg, rejections)
}

/// An ACK's MSA-1 and MSA-2.
pub(crate) fn code_and_id(ack: &[u8]) -> (AckCode, String) {
    let parsed = parse_ack(ack).unwrap();
    (
        parsed.code,
        String::from_utf8_lossy(parsed.acknowledged_id).into_owned(),
    )
}

/// The MSH-10 of each message.
pub(crate) fn control_ids(messages: &[Vec<u8>]) -> Vec<String> {
    messages
        .iter()
        .map(|m| testkit::hl7::control_id(m).expect("a message with a header"))
        .collect()
}

/// Waits (bounded by [`PATIENCE`]) until `done` holds; panics naming `what` when it does not.
/// The address of a running `mllp-relay` binary: the first address of its ready line
/// ("mllp-relay listening on ADDR …"), waited for.
pub(crate) fn listening_addr(relay: &testkit::Process) -> SocketAddr {
    let ready = relay.line_where(|line| line.starts_with("mllp-relay listening on "));
    ready
        .strip_prefix("mllp-relay listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in the ready line {ready:?}"))
}

/// The SHA-256 of `bytes` in lowercase hex, as the interop peers report what they received.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn wait_until(what: &str, done: impl FnMut() -> bool) {
    assert!(
        testkit::wait_until(PATIENCE, done),
        "timed out waiting until {what}"
    );
}

/// A `GET path` over HTTP/1.1; the whole response, head and body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Anything a sender can talk through: a TCP stream or a TLS stream over one.
pub(crate) trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// A sender connection, plain or TLS.
pub(crate) struct Client {
    pub(crate) tcp: TcpStream,
    pub(crate) io: Box<dyn Io>,
    deframer: Deframer,
    buf: Vec<u8>,
}

impl Client {
    pub(crate) fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        tcp.set_nodelay(true).unwrap();
        let io = Box::new(tcp.try_clone().unwrap());
        Self::over(tcp, io)
    }

    /// A sender talking through `io` (a session the test set up itself) over `tcp`.
    pub(crate) fn over(tcp: TcpStream, io: Box<dyn Io>) -> Self {
        Self {
            tcp,
            io,
            deframer: Deframer::new(FramingConfig::MLLP),
            buf: Vec::new(),
        }
    }

    pub(crate) fn connect_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Self {
        let mut client = Self::connect(addr);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let session = rustls::ClientConnection::new(config, name).unwrap();
        client.io = Box::new(rustls::StreamOwned::new(
            session,
            client.tcp.try_clone().unwrap(),
        ));
        client
    }

    pub(crate) fn send(&mut self, payload: &[u8]) {
        let mut framed = Vec::new();
        FramingConfig::MLLP.encode(payload, &mut framed).unwrap();
        self.io.write_all(&framed).unwrap();
        self.io.flush().unwrap();
    }

    /// The next ACK payload, or None when the relay closed (or refused) the connection.
    pub(crate) fn receive(&mut self) -> Option<Vec<u8>> {
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
    pub(crate) fn receive_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
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

    pub(crate) fn round_trip(&mut self, payload: &[u8]) -> Vec<u8> {
        self.send(payload);
        self.receive().expect("an ACK")
    }
}
