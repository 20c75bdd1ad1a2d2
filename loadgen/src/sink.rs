//! `sink`: an MLLP receiver that ACKs every message, records every MSH-10 and can misbehave
//! on purpose.
//!
//! It plays the receiving engine in tests and benchmarks: plain, TLS or mutual TLS; each
//! message answered in original or enhanced mode as its MSH-15/16 ask (via [`mllp::ack`]); and
//! faults to inject — ACK delay and jitter, AE/AR answers, dropped ACKs, ACKs with a wrong
//! MSA-2, connections closed after N messages or after each one (as some real servers do), and
//! a stall of every ACK for a set time in the middle of a run. Every control id received is
//! kept, so at the end it can say how many messages arrived, how many were distinct, and which
//! were duplicates: the other half of an end-to-end loss check.
//!
//! Not a store: payloads are only written out when asked (`record_payloads`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mllp::ack::{
    self, AckCode, AckDecision, AckParams, AckPolicy, ErrorCode, ErrorDetail, Outcome,
};
use mllp::frame::{Deframer, FramingConfig};
use mllp::hl7::Msh;
use monoio::net::{TcpListener, TcpStream};
use netio::conn::{Conn, ConnError, SharedCanceller, fire, shared_canceller};
use netio::listen::{accept_within, bind_reuseport};
use netio::runtime::{Driver, spawn_runtime};
use tracing::{debug, warn};

use crate::pace::PreciseTimer;
use crate::source::{TIMESTAMP_LEN, TimestampCache};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// A connection with nothing to say for this long is closed, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The answer given instead of AA when a NAK is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NakCode {
    /// AE (CE in enhanced mode): error, the sender may retry.
    Error,
    /// AR (CR in enhanced mode): rejected.
    Reject,
}

/// Faults to inject. The default injects none.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Wait this long before each ACK.
    pub ack_delay: Duration,
    /// Plus a uniformly random extra wait up to this.
    pub ack_jitter: Duration,
    /// Share of messages (0..=1) answered with [`Faults::nak_code`] instead of AA/CA.
    pub nak_rate: f64,
    /// Which negative answer.
    pub nak_code: Option<NakCode>,
    /// Share of messages that get no ACK at all (still recorded as received).
    pub drop_ack_rate: f64,
    /// Share of ACKs whose MSA-2 names a different control id.
    pub wrong_msa2_rate: f64,
    /// Close each connection after this many messages (after answering the last).
    pub close_after: Option<u64>,
    /// Close each connection after its first message, like servers that expect one message
    /// per connection.
    pub one_per_connection: bool,
    /// Hold every ACK due in `[start + .0, start + .0 + .1)` until that window ends.
    pub stall: Option<(Duration, Duration)>,
}

/// Everything a sink needs.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// TLS (with or without client certificates), or `None` for plain MLLP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Threads (monoio runtimes), each accepting on its own `SO_REUSEPORT` socket.
    pub threads: usize,
    /// Faults to inject.
    pub faults: Faults,
    /// Keep every raw message in this directory (one file each).
    pub record_payloads: Option<PathBuf>,
    /// Largest message accepted.
    pub max_frame_len: usize,
    /// Frame bytes: MLLP's, or others negotiated with the senders.
    pub framing: FramingConfig,
    /// Seed of the fault dice (runs with the same seed and traffic misbehave identically).
    pub seed: u64,
    /// io_uring or epoll.
    pub driver: Driver,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

impl SinkConfig {
    /// A plain sink on `listen` with one thread and no faults.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            tls: None,
            threads: 1,
            faults: Faults::default(),
            record_payloads: None,
            max_frame_len: mllp::frame::DEFAULT_MAX_FRAME_LEN,
            framing: FramingConfig::MLLP,
            seed: 1,
            driver: Driver::Auto,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Live counters, readable while the sink runs.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Messages received (framed, with a readable MSH-10 or not).
    pub received: AtomicU64,
    /// ACKs written (any code).
    pub acks_sent: AtomicU64,
    /// Of those, injected NAKs.
    pub naks: AtomicU64,
    /// ACKs withheld on purpose.
    pub dropped_acks: AtomicU64,
    /// ACKs sent with a wrong MSA-2 on purpose.
    pub wrong_msa2: AtomicU64,
    /// Messages without a readable MSH (answered AR with an empty MSA-2).
    pub unreadable: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed because of a framing error.
    pub framing_errors: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failures: AtomicU64,
}

/// What the sink saw, when it stops.
#[derive(Debug, Clone, Default)]
pub struct SinkReport {
    /// Messages received.
    pub received: u64,
    /// Distinct MSH-10 values among them.
    pub unique: u64,
    /// `received − unique` among messages with a readable MSH-10.
    pub duplicates: u64,
    /// Every MSH-10 received, in arrival order per thread, each followed by `\n`.
    pub ids: Vec<u8>,
    /// ACKs written.
    pub acks_sent: u64,
    /// Injected NAKs, dropped ACKs, wrong MSA-2s.
    pub naks: u64,
    /// ACKs withheld on purpose.
    pub dropped_acks: u64,
    /// ACKs with a wrong MSA-2 on purpose.
    pub wrong_msa2: u64,
    /// Messages without a readable MSH.
    pub unreadable: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections closed on framing errors.
    pub framing_errors: u64,
    /// Failed TLS handshakes.
    pub tls_failures: u64,
}

impl SinkReport {
    /// The control ids as lines (without the newlines).
    pub fn id_lines(&self) -> impl Iterator<Item = &[u8]> {
        self.ids
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
    }
}

/// A running sink.
#[derive(Debug)]
pub struct SinkHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<SinkCounters>,
    ids: Arc<Mutex<Vec<u8>>>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl SinkHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Live counters.
    pub fn counters(&self) -> &Arc<SinkCounters> {
        &self.counters
    }

    /// A flag that stops the sink when set (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Stops accepting, closes every connection, and reports.
    pub fn stop(self) -> SinkReport {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits until the sink stops (its stop flag is set) and reports.
    pub fn join(self) -> SinkReport {
        for thread in self.threads {
            let _ = thread.join();
        }
        let ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()));
        let mut seen = HashSet::new();
        let mut with_id = 0u64;
        for line in ids.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            with_id += 1;
            seen.insert(line);
        }
        let unique = seen.len() as u64;
        drop(seen);
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkReport {
            received: get(&c.received),
            unique,
            duplicates: with_id - unique,
            ids,
            acks_sent: get(&c.acks_sent),
            naks: get(&c.naks),
            dropped_acks: get(&c.dropped_acks),
            wrong_msa2: get(&c.wrong_msa2),
            unreadable: get(&c.unreadable),
            connections: get(&c.connections),
            framing_errors: get(&c.framing_errors),
            tls_failures: get(&c.tls_failures),
        }
    }
}

/// Starts a sink; it runs until [`SinkHandle::stop`].
///
/// # Errors
/// When the address cannot be bound or a thread cannot start.
pub fn start(config: SinkConfig) -> io::Result<SinkHandle> {
    if let Some(dir) = &config.record_payloads {
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    let threads = config.threads.max(1);
    // Bind the first socket here so that port 0 resolves once and errors surface now.
    let first = bind(config.listen)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..threads {
        sockets.push(bind(addr)?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(SinkCounters::default());
    let ids = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let config = Arc::new(config);
    let mut handles = Vec::with_capacity(threads);
    for (thread, socket) in sockets.into_iter().enumerate() {
        let shared = Shared {
            config: Arc::clone(&config),
            stop: Arc::clone(&stop),
            counters: Arc::clone(&counters),
            ids: Arc::clone(&ids),
            started,
            thread,
        };
        let driver = shared.config.driver;
        handles.push(spawn_runtime(
            format!("mllp-sink-{thread}"),
            driver,
            None,
            move || accept_loop(socket, shared),
        )?);
    }
    Ok(SinkHandle {
        addr,
        stop,
        counters,
        ids,
        threads: handles,
    })
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    bind_reuseport(addr)
        .map(Into::into)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// What every thread shares.
struct Shared {
    config: Arc<SinkConfig>,
    stop: Arc<AtomicBool>,
    counters: Arc<SinkCounters>,
    ids: Arc<Mutex<Vec<u8>>>,
    started: Instant,
    thread: usize,
}

/// One thread's state.
struct ThreadCtx {
    shared: Shared,
    /// The cancel signal of every read in progress on this thread, fired all at once on stop.
    /// Each read has its own: a read that times out fires its signal, and a shared one would
    /// cancel every other connection's read with it.
    reads: RefCell<std::collections::HashMap<u64, SharedCanceller>>,
    /// Numbers the entries of `reads`.
    next_read: std::cell::Cell<u64>,
    /// Set on stop, before the reads are cancelled: no new read starts after it.
    stopping: std::cell::Cell<bool>,
    /// This thread's received ids, handed to `shared.ids` when the thread ends.
    ids: RefCell<Vec<u8>>,
    /// Connections accepted on this thread (seeds each one's dice).
    accepted: std::cell::Cell<u64>,
    /// The ACKs' MSH-7, per second.
    timestamps: RefCell<TimestampCache>,
    /// Payload files written by this thread.
    payloads_written: std::cell::Cell<u64>,
    uring: bool,
}

async fn accept_loop(socket: std::net::TcpListener, shared: Shared) {
    let listener = match TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot use the listening socket");
            return;
        }
    };
    let uring = shared.config.driver != Driver::Epoll && monoio::utils::detect_uring();
    let ctx = Rc::new(ThreadCtx {
        shared,
        reads: RefCell::new(std::collections::HashMap::new()),
        next_read: std::cell::Cell::new(0),
        stopping: std::cell::Cell::new(false),
        ids: RefCell::new(Vec::new()),
        accepted: std::cell::Cell::new(0),
        payloads_written: std::cell::Cell::new(0),
        timestamps: RefCell::new(TimestampCache::default()),
        uring,
    });
    let open = Rc::new(std::cell::Cell::new(0usize));
    loop {
        if ctx.shared.stop.load(Ordering::Relaxed) {
            break;
        }
        match accept_within(&listener, Duration::from_millis(50)).await {
            None => {}
            Some(Ok((tcp, peer))) => {
                let ctx = Rc::clone(&ctx);
                let open = Rc::clone(&open);
                open.set(open.get() + 1);
                monoio::spawn(async move {
                    serve(tcp, peer, &ctx).await;
                    open.set(open.get() - 1);
                });
            }
            Some(Err(e)) => {
                warn!(error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // Stop: cancel every read, let connections close, then hand the ids over.
    ctx.stopping.set(true);
    let reads: Vec<SharedCanceller> = ctx.reads.borrow_mut().drain().map(|(_, s)| s).collect();
    for signal in &reads {
        fire(signal);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while open.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    let mine = std::mem::take(&mut *ctx.ids.borrow_mut());
    ctx.shared
        .ids
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend_from_slice(&mine);
}

/// A connection's fault dice: seeded, so a run with the same seed and traffic misbehaves the
/// same way.
struct Dice(mllp::rand::XorShift);

impl Dice {
    /// True with probability `p`.
    fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && self.0.unit() < p
    }

    /// A uniformly random duration up to `max`.
    fn up_to(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        max.mul_f64(self.0.unit())
    }
}

async fn serve(tcp: TcpStream, peer: SocketAddr, ctx: &ThreadCtx) {
    let shared = &ctx.shared;
    let config = &shared.config;
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let _ = tcp.set_nodelay(true);
    let mut conn = match &config.tls {
        None => Conn::plain(tcp, peer),
        Some(tls) => {
            let session = match rustls::ServerConnection::new(Arc::clone(tls)) {
                Ok(s) => s,
                Err(e) => {
                    warn!(%peer, error = %e, "cannot start TLS");
                    return;
                }
            };
            let mut conn = Conn::tls(tcp, peer, rustls::Connection::Server(session));
            if let Err(error) = conn
                .handshake(Instant::now() + Duration::from_secs(10))
                .await
            {
                shared.counters.tls_failures.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, %error, "TLS handshake failed");
                return;
            }
            conn
        }
    };
    let n = ctx.accepted.get();
    ctx.accepted.set(n + 1);
    let mut dice = Dice(mllp::rand::XorShift::new(
        config.seed ^ (shared.thread as u64) << 48 ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    ));
    let framing = config
        .framing
        .with_max_frame_len(config.max_frame_len)
        .unwrap_or(config.framing);
    let mut deframer = Deframer::new(framing);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut ack_buf: Vec<u8> = Vec::with_capacity(256);
    let mut timer = None;
    let mut answered = 0u64;
    loop {
        loop {
            let frame = match deframer.decode(&buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    shared
                        .counters
                        .framing_errors
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, %error, "framing error; connection closed");
                    conn.close().await;
                    return;
                }
            };
            while deframer.poll_event().is_some() {}
            let payload = frame.payload(&buf);
            let reply = answer(ctx, payload, &mut dice, &mut ack_buf);
            if reply {
                if let Some(wait) = ack_wait(&config.faults, shared.started, &mut dice) {
                    let timer = timer.get_or_insert_with(|| {
                        PreciseTimer::new(ctx.uring)
                            .or_else(|_| PreciseTimer::new(false))
                            .expect("the wheel timer cannot fail")
                    });
                    let _ = timer.sleep_until(wait).await;
                }
                let parts: [&[u8]; 3] = [&[framing.start()], &ack_buf, framing.end()];
                let deadline = Instant::now() + Duration::from_secs(30);
                if let Err(error) = conn.write_all(&parts, deadline).await {
                    debug!(%peer, %error, "writing the ACK failed");
                    return;
                }
                shared.counters.acks_sent.fetch_add(1, Ordering::Relaxed);
            }
            answered += 1;
            let faults = &config.faults;
            if faults.one_per_connection || faults.close_after.is_some_and(|n| answered >= n) {
                conn.close().await;
                return;
            }
        }
        deframer.compact(&mut buf);
        deframer.reserve_for_read(&mut buf, READ_CHUNK);
        if ctx.stopping.get() {
            conn.close().await;
            return;
        }
        let deadline = Instant::now() + ctx.shared.config.idle_timeout;
        let signal = shared_canceller();
        let id = ctx.next_read.get();
        ctx.next_read.set(id + 1);
        ctx.reads.borrow_mut().insert(id, signal.clone());
        let (result, returned) = conn
            .read_into(buf, READ_CHUNK, deadline, Some(&signal))
            .await;
        ctx.reads.borrow_mut().remove(&id);
        buf = returned;
        match result {
            Ok(_) => {}
            Err(ConnError::Closed) => {
                if let Err(error) = deframer.finish() {
                    shared
                        .counters
                        .framing_errors
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, %error, "closed mid-frame");
                }
                return;
            }
            Err(ConnError::Cancelled) => {
                conn.close().await;
                return;
            }
            Err(error) => {
                debug!(%peer, %error, "connection ended");
                return;
            }
        }
    }
}

/// When the ACK may go out, if it must wait (delay, jitter, stall).
fn ack_wait(faults: &Faults, started: Instant, dice: &mut Dice) -> Option<Instant> {
    let now = Instant::now();
    let mut at = now + faults.ack_delay + dice.up_to(faults.ack_jitter);
    if let Some((after, length)) = faults.stall {
        let (from, until) = (started + after, started + after + length);
        if at >= from && at < until {
            at = until;
        }
    }
    (at > now).then_some(at)
}

/// Records a message and writes its ACK into `out`; false when no ACK is to be sent.
fn answer(ctx: &ThreadCtx, payload: &[u8], dice: &mut Dice, out: &mut Vec<u8>) -> bool {
    let shared = &ctx.shared;
    let counters = &shared.counters;
    let faults = &shared.config.faults;
    counters.received.fetch_add(1, Ordering::Relaxed);
    if let Some(dir) = &shared.config.record_payloads {
        let n = ctx.payloads_written.get();
        ctx.payloads_written.set(n + 1);
        let path = dir.join(format!("{}-{n:09}.hl7", shared.thread));
        if let Err(e) = std::fs::write(&path, payload) {
            warn!(path = %path.display(), error = %e, "cannot record the payload");
        }
    }
    out.clear();
    // MSH-7 of the ACK, recomputed once a second rather than formatted per message.
    let timestamp: [u8; TIMESTAMP_LEN] = *ctx.timestamps.borrow_mut().now();
    // Read as a lenient receiver reads: only a frame without a usable MSH-1 is unreadable.
    let Ok(msh) = Msh::parse_lenient(payload) else {
        counters.unreadable.fetch_add(1, Ordering::Relaxed);
        ack::write_headerless_reject(
            &AckParams::new(&timestamp, b"SINKACK"),
            ErrorDetail {
                code: ErrorCode::SegmentSequence,
                diagnostic: b"no readable MSH segment",
            },
            out,
        );
        return true;
    };
    {
        let mut ids = ctx.ids.borrow_mut();
        ids.extend_from_slice(msh.control_id());
        ids.push(b'\n');
    }
    if dice.roll(faults.drop_ack_rate) {
        counters.dropped_acks.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    let nak = faults.nak_code.filter(|_| dice.roll(faults.nak_rate));
    let outcome = match nak {
        None => Outcome::Accepted,
        Some(NakCode::Error) => Outcome::Error,
        Some(NakCode::Reject) => Outcome::Rejected,
    };
    let control_id = b"SINKACK";
    let params = match nak {
        None => AckParams::new(&timestamp, control_id),
        Some(_) => AckParams {
            text: Some(b"injected by mllp-loadgen sink"),
            error: Some(ErrorDetail {
                code: ErrorCode::ApplicationInternal,
                diagnostic: b"fault injected by mllp-loadgen sink",
            }),
            ..AckParams::new(&timestamp, control_id)
        },
    };
    match ack::build_ack(&msh, outcome, AckPolicy::Negotiated, &params, out) {
        AckDecision::Send(code) => {
            if nak.is_some() {
                counters.naks.fetch_add(1, Ordering::Relaxed);
            }
            if dice.roll(faults.wrong_msa2_rate) {
                corrupt_msa2(out, code);
                counters.wrong_msa2.fetch_add(1, Ordering::Relaxed);
            }
            true
        }
        AckDecision::NotDue => false,
    }
}

/// Changes the MSA-2 of the ACK in `ack` so that it names another message: a trailing `X`
/// is appended to the control id.
fn corrupt_msa2(ack: &mut Vec<u8>, code: AckCode) {
    let Ok(msh) = Msh::parse_lenient(ack) else {
        return;
    };
    let fs = msh.delimiters().field;
    let mut pattern = b"MSA".to_vec();
    pattern.push(fs);
    pattern.extend_from_slice(code.as_str().as_bytes());
    pattern.push(fs);
    let Some(start) = ack
        .windows(pattern.len())
        .position(|w| w == pattern.as_slice())
    else {
        return;
    };
    let id_start = start + pattern.len();
    let id_end = ack[id_start..]
        .iter()
        .position(|&b| b == fs || b == b'\r')
        .map_or(ack.len(), |p| id_start + p);
    ack.insert(id_end, b'X');
}
