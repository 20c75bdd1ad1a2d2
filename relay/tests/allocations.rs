//! The hot path allocates nothing of its own: a relay in this process, under a counting
//! allocator, relays thousands of messages over one warmed-up connection, plain and TLS, while
//! every allocation made by the relay's threads is counted. The test's own threads (sender,
//! receiver, set-up) are not counted.
//!
//! A count, not a clock: deterministic on any machine, so it is asserted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use mllp::frame::{Deframer, FramingConfig};
use netio::runtime::Driver;
use netio::tls::{ReloadableServerConfig, ServerTlsSettings, TlsRejections};
use relay::config::{Config, DownstreamConfig, ListenerConfig};
use testkit::hl7::oru;
use testkit::pki;
use testkit::receiver::{Behaviour, Options, Receiver};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the test's own threads (sender, receiver): their allocations are not the relay's.
    static NOT_COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Exempts the calling thread from the count (the test's own threads, the receiver's).
fn mark_thread_uncounted() {
    NOT_COUNTED.with(|c| c.set(true));
}

fn count() {
    if !NOT_COUNTED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; the counter only observes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Messages sent before counting (buffers grow to their working size) and while counting.
const WARM_UP: usize = 300;
const COUNTED: usize = 3000;

/// A receiver that ACKs every message AA, on uncounted threads.
fn start_receiver() -> Receiver {
    Receiver::with(
        Behaviour::Ack,
        Options {
            thread_init: Some(mark_thread_uncounted),
            ..Options::default()
        },
    )
}

fn config(receiver: SocketAddr, tls: Option<&pki::Pki>) -> Config {
    let mut listener = ListenerConfig::plain("127.0.0.1:0".parse().unwrap());
    if let Some(pki) = tls {
        let rejections = Arc::new(TlsRejections::new());
        let settings = ServerTlsSettings {
            cert_chain: pki.server.cert_path.clone(),
            key: pki.server.key_path.clone(),
            client_ca: None,
            client_thumbprints: Vec::new(),
        };
        listener.tls = Some(ReloadableServerConfig::load(settings, rejections.clone()).unwrap());
        listener.tls_rejections = rejections;
    }
    Config {
        listeners: vec![listener],
        downstreams: vec![DownstreamConfig::plain("sink", receiver)],
        routes: Vec::new(),
        default_downstream: Some(0),
        workers: 1,
        pin_workers: false,
        shutdown_grace: Duration::from_secs(5),
        driver: Driver::Auto,
        metrics_addr: None,
        readiness_window: relay::config::DEFAULT_READINESS_WINDOW,
        audit: relay::config::AuditConfig::Off,
        journal: None,
    }
}

/// Relays `WARM_UP` then `COUNTED` messages one at a time on one connection and returns the
/// allocations the relay made while the counted ones went through.
fn allocations_while_relaying(tls: Option<&pki::Pki>) -> u64 {
    // One relay at a time: the counter cannot tell two relays in this process apart.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let receiver = start_receiver();
    let relay = relay::start(config(receiver.addr(), tls)).unwrap();
    let addr = relay.listen_addr();
    let client_config = tls.map(|pki| pki.client(&[&rustls::version::TLS13], None));
    let counted = thread::spawn(move || {
        mark_thread_uncounted();
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut io: Box<dyn ReadWrite> = match client_config {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let session = rustls::ClientConnection::new(config, name).unwrap();
                Box::new(rustls::StreamOwned::new(session, tcp))
            }
        };
        let mut deframer = Deframer::new(FramingConfig::MLLP);
        let (mut buf, mut chunk) = (Vec::new(), [0u8; 8192]);
        let mut round_trip = |n: usize| {
            let mut framed = Vec::new();
            FramingConfig::MLLP
                .encode(&oru(&format!("MSG-{n:08}")), &mut framed)
                .unwrap();
            io.write_all(&framed).unwrap();
            io.flush().unwrap();
            loop {
                if let Some(frame) = deframer.decode(&buf).unwrap() {
                    let ack = frame.payload(&buf);
                    assert!(
                        ack.windows(7).any(|w| w == b"MSA|AA|"),
                        "{}",
                        String::from_utf8_lossy(ack)
                    );
                    deframer.compact(&mut buf);
                    return;
                }
                let got = io.read(&mut chunk).unwrap();
                assert!(got > 0, "the relay closed the connection");
                buf.extend_from_slice(&chunk[..got]);
            }
        };
        for n in 0..WARM_UP {
            round_trip(n);
        }
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for n in WARM_UP..WARM_UP + COUNTED {
            round_trip(n);
        }
        ALLOCATIONS.load(Ordering::Relaxed) - before
    })
    .join()
    .unwrap();
    relay.shutdown();
    counted
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// Allowed: the odd allocation of the runtime's own bookkeeping (a timer wheel level, a
/// once-a-second task), never one per message. That bookkeeping follows the clock, not the
/// messages: a loaded machine stretches the counted window and adds a few (12 to 16 in a
/// quiet run of the plain test, 36 once for TLS under load). A twentieth of one per message
/// leaves room for that and still fails at the first allocation per message.
const AT_MOST: u64 = (COUNTED / 20) as u64;

/// What rustls's buffered API allocates per message here: one record in (the received
/// record's plaintext is copied into a new buffer) and one record out (each sealed record is
/// built in a new buffer). The relay hands it each ACK as one record; before, the frame's
/// three parts made three records, and four allocations per message. rustls's unbuffered API,
/// which works in the caller's buffers, would take these two away too.
const RUSTLS_PER_MESSAGE: u64 = 2;

#[test]
fn relaying_plain_messages_allocates_nothing_per_message() {
    mark_thread_uncounted();
    let allocations = allocations_while_relaying(None);
    println!("plain: {allocations} allocations for {COUNTED} messages");
    assert!(
        allocations <= AT_MOST,
        "{allocations} allocations for {COUNTED} messages"
    );
}

#[test]
fn relaying_tls_messages_allocates_only_rustls_records() {
    mark_thread_uncounted();
    let pki = pki::Pki::new("allocations");
    let allocations = allocations_while_relaying(Some(&pki));
    println!("TLS: {allocations} allocations for {COUNTED} messages");
    assert!(
        allocations <= RUSTLS_PER_MESSAGE * COUNTED as u64 + AT_MOST,
        "{allocations} allocations for {COUNTED} messages"
    );
}
