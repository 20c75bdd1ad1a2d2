//! `hold`: opens many connections, completes every TCP connect and TLS handshake, then keeps
//! them all open and idle (nothing is sent) until told to let go.
//!
//! What it is for: the memory an idle connection costs the target. Read the target's resident
//! memory while holding 100 connections and while holding 1,000; the difference over 900 is
//! the cost of one idle (TLS) connection, handshake state, buffers and all.
//!
//! # Shape
//! Connections are spread over threads (one monoio runtime each) as `send` spreads them. On
//! each thread a few opener tasks take connections off a counter and open them one at a time,
//! so no more than [`HoldConfig::concurrent_opens`] connects and handshakes are in progress at
//! once over all threads: a thousand simultaneous handshakes would only queue in the target's
//! listen backlog and time out. Each open connection then waits for readability alone, which
//! holds no buffer (see [`Conn::wait_readable`]), so a held connection costs this process its
//! socket, its TLS session state and a small task. When something does arrive (TLS 1.3 session
//! tickets right after the handshake, or the peer's close) it is read with a short deadline
//! and the buffers are given back at once.
//!
//! A connection the peer closes while held is counted ([`HoldReport::closed_by_peer`]): a
//! memory figure taken while the target was dropping connections would be wrong.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use netio::conn::{Conn, ConnError, SharedCanceller, fire, shared_canceller};
use netio::runtime::{Driver, block_on};
use tracing::{debug, warn};

use netio::connect::ClientTls;

use crate::send::{SendError, open};
use crate::stats::ErrorKind;

/// How often the threads look at the release flag, and the caller at its stop flag.
const POLL: Duration = Duration::from_millis(50);
/// How long a held connection reads when it becomes readable (session tickets, a close).
const DRAIN_READ: Duration = Duration::from_millis(50);
/// Plaintext room asked for when draining: a held connection expects none at all.
const DRAIN_CHUNK: usize = 512;
/// How long to watch the connections after the last one opened, before calling them open: a
/// target that refuses a client certificate (TLS 1.3 refuses after the client's side of the
/// handshake is done) or is over its connection limit closes them right away.
const SETTLE: Duration = Duration::from_millis(200);

/// Everything a `hold` run needs.
#[derive(Debug, Clone)]
pub struct HoldConfig {
    /// Where to connect.
    pub target: SocketAddr,
    /// TLS, or `None` for plain TCP.
    pub tls: Option<ClientTls>,
    /// Connections to open and hold.
    pub connections: usize,
    /// Threads (monoio runtimes) to spread them over.
    pub threads: usize,
    /// How long one TCP connect plus TLS handshake may take.
    pub connect_timeout: Duration,
    /// Most connections being opened (connect + handshake) at once, over all threads.
    pub concurrent_opens: usize,
    /// Let go after holding this long; `None`: only when the stop flag is set.
    pub hold_for: Option<Duration>,
    /// io_uring or epoll.
    pub driver: Driver,
}

/// The outcome of the opening phase, handed to the caller before holding begins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    /// Connections asked for.
    pub requested: usize,
    /// Connections open (connected, and TLS handshake completed).
    pub opened: usize,
    /// Connections that could not be opened.
    pub failed: usize,
    /// Of `opened`, those the target closed at once (within a moment of the last opening):
    /// refused after all.
    pub closed_at_once: usize,
    /// Why the first failure failed (`TCP connect: …`, `TLS handshake: …`, or, for one
    /// closed at once, what the close said).
    pub first_error: Option<String>,
}

impl Opened {
    /// Whether opening was cut short by the stop flag (some were never tried).
    pub fn interrupted(&self) -> bool {
        self.opened + self.failed < self.requested
    }

    /// Whether every connection asked for is open (and was not closed at once).
    pub fn all_open(&self) -> bool {
        self.opened == self.requested && self.closed_at_once == 0
    }

    fn add(&mut self, other: &Self) {
        self.opened += other.opened;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// What a `hold` run saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldReport {
    /// The opening phase.
    pub opened: Opened,
    /// Whether the connections were held (the caller's `on_opened` said so).
    pub held: bool,
    /// How long they were held (from the end of opening to the release).
    pub held_for: Duration,
    /// Open connections the peer closed (or reset) before they were let go, including those
    /// closed at once ([`Opened::closed_at_once`]).
    pub closed_by_peer: usize,
}

/// What a thread tells the caller.
enum ThreadReport {
    /// Its share is opened (or failed).
    Opened(Opened),
    /// Its connections are closed.
    Closed,
}

/// What every thread's connections add to.
#[derive(Default)]
struct Losses {
    /// Held connections the peer closed.
    closed_by_peer: AtomicUsize,
    /// What the first such close said.
    first_cause: Mutex<Option<String>>,
}

impl Losses {
    fn record(&self, cause: String) {
        self.closed_by_peer.fetch_add(1, Ordering::SeqCst);
        let mut first = self.first_cause.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(cause);
    }
}

/// Opens `config.connections` connections and holds them.
///
/// Once every connection is open or has failed, `on_opened` is called (on the calling
/// thread) with the outcome; it returns whether to hold them. Holding ends when `stop` is set
/// or after `config.hold_for`; then every connection is closed (TLS close_notify, then FIN)
/// and the report returned. When `on_opened` returns `false`, or `stop` was set during
/// opening, the open connections are closed at once.
///
/// # Errors
/// When the configuration is unusable or the threads cannot start. Connections that fail are
/// not errors: they are in [`Opened`].
pub fn run(
    config: &HoldConfig,
    stop: &Arc<AtomicBool>,
    on_opened: impl FnOnce(&Opened) -> bool,
) -> Result<HoldReport, SendError> {
    if config.connections == 0 {
        return Err(SendError::Config("--connections must be at least 1".into()));
    }
    if config.concurrent_opens == 0 {
        return Err(SendError::Config(
            "--concurrent-opens must be at least 1".into(),
        ));
    }
    let threads = config.threads.clamp(1, config.connections);
    let per_thread_opens = config.concurrent_opens.div_ceil(threads);
    let release = Arc::new(AtomicBool::new(false));
    let losses = Arc::new(Losses::default());
    let (sender, receiver) = mpsc::channel::<ThreadReport>();
    let mut handles = Vec::with_capacity(threads);
    for thread in 0..threads {
        let share =
            config.connections / threads + usize::from(thread < config.connections % threads);
        let plan = ThreadPlan {
            target: config.target,
            tls: config.tls.clone(),
            connections: share,
            openers: per_thread_opens.min(share),
            connect_timeout: config.connect_timeout,
            stop: Arc::clone(stop),
            release: Arc::clone(&release),
            losses: Arc::clone(&losses),
        };
        let sender = sender.clone();
        let driver = config.driver;
        let handle = std::thread::Builder::new()
            .name(format!("mllp-loadgen-hold-{thread}"))
            .spawn(move || {
                let on_error = sender.clone();
                if let Err(e) = block_on(driver, hold_thread(plan, sender)) {
                    warn!(thread, error = %e, "cannot build the runtime");
                    let _ = on_error.send(ThreadReport::Opened(Opened {
                        failed: share,
                        first_error: Some(format!("cannot build the I/O runtime: {e}")),
                        ..Opened::default()
                    }));
                }
            });
        match handle {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                release.store(true, Ordering::SeqCst);
                for handle in handles {
                    let _ = handle.join();
                }
                return Err(SendError::Runtime(e));
            }
        }
    }
    drop(sender);

    let mut report = HoldReport {
        opened: Opened {
            requested: config.connections,
            ..Opened::default()
        },
        ..HoldReport::default()
    };
    // Opening: every thread reports its share.
    let mut reported = 0;
    while reported < threads {
        match receiver.recv() {
            Ok(ThreadReport::Opened(part)) => {
                report.opened.add(&part);
                reported += 1;
            }
            Ok(ThreadReport::Closed) => {} // not before that thread's `Opened`
            Err(_) => break,
        }
    }
    // Connections refused after all close within a moment.
    let settle_until = Instant::now() + SETTLE;
    while report.opened.opened > 0 && Instant::now() < settle_until && !stop.load(Ordering::Relaxed)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    report.opened.closed_at_once = losses.closed_by_peer.load(Ordering::SeqCst);
    if report.opened.closed_at_once > 0 && report.opened.first_error.is_none() {
        let cause = losses.first_cause.lock().unwrap_or_else(|e| e.into_inner());
        report.opened.first_error = cause
            .as_ref()
            .map(|c| format!("closed by the target right after opening: {c}"));
    }
    let interrupted = stop.load(Ordering::Relaxed) || report.opened.interrupted();
    report.held = !interrupted && on_opened(&report.opened);
    // Holding: until the stop flag or the time is up.
    let since = Instant::now();
    if report.held {
        while !stop.load(Ordering::Relaxed) && config.hold_for.is_none_or(|d| since.elapsed() < d) {
            let left = config
                .hold_for
                .map_or(POLL, |d| d.saturating_sub(since.elapsed()).min(POLL));
            std::thread::sleep(left);
        }
    }
    report.held_for = since.elapsed();
    release.store(true, Ordering::SeqCst);
    // Every thread closes its connections, says so and ends (dropping its sender).
    while receiver.recv().is_ok() {}
    for handle in handles {
        let _ = handle.join();
    }
    report.closed_by_peer = losses.closed_by_peer.load(Ordering::SeqCst);
    Ok(report)
}

/// One thread's share.
struct ThreadPlan {
    target: SocketAddr,
    tls: Option<ClientTls>,
    connections: usize,
    openers: usize,
    connect_timeout: Duration,
    stop: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    losses: Arc<Losses>,
}

impl ThreadPlan {
    fn released(&self) -> bool {
        self.release.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed)
    }
}

/// State shared by one thread's tasks.
#[derive(Default)]
struct ThreadState {
    /// Connections not yet taken by an opener.
    to_open: Cell<usize>,
    openers_running: Cell<usize>,
    opened: RefCell<Opened>,
    /// Held connections' cancel signals, fired at release.
    signals: RefCell<Vec<SharedCanceller>>,
    /// Held connections not yet closed.
    live: Cell<usize>,
}

async fn hold_thread(plan: ThreadPlan, reports: mpsc::Sender<ThreadReport>) {
    let plan = Rc::new(plan);
    let state = Rc::new(ThreadState::default());
    state.to_open.set(plan.connections);
    state.openers_running.set(plan.openers);
    for _ in 0..plan.openers {
        let (plan, state) = (Rc::clone(&plan), Rc::clone(&state));
        monoio::spawn(async move {
            opener(&plan, &state).await;
            state.openers_running.set(state.openers_running.get() - 1);
        });
    }
    while state.openers_running.get() > 0 {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    let opened = state.opened.borrow().clone();
    let _ = reports.send(ThreadReport::Opened(opened));
    while !plan.release.load(Ordering::Relaxed) {
        monoio::time::sleep(POLL).await;
    }
    for signal in state.signals.borrow_mut().drain(..) {
        fire(&signal);
    }
    while state.live.get() > 0 {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = reports.send(ThreadReport::Closed);
}

/// Opens connections one at a time until none are left (or the run is released), and starts
/// a holding task for each.
async fn opener(plan: &Rc<ThreadPlan>, state: &Rc<ThreadState>) {
    loop {
        let left = state.to_open.get();
        if left == 0 || plan.released() {
            return;
        }
        state.to_open.set(left - 1);
        match open(plan.target, plan.tls.as_ref(), plan.connect_timeout).await {
            Ok(conn) => {
                state.opened.borrow_mut().opened += 1;
                state.live.set(state.live.get() + 1);
                let signal = shared_canceller();
                state.signals.borrow_mut().push(Rc::clone(&signal));
                let (plan, state) = (Rc::clone(plan), Rc::clone(state));
                monoio::spawn(async move {
                    if let Held::ClosedByPeer(cause) = hold_one(conn, &signal).await {
                        plan.losses.record(cause);
                    }
                    state.live.set(state.live.get() - 1);
                });
            }
            Err((kind, cause)) => {
                debug!(%cause, "opening a connection failed");
                let mut opened = state.opened.borrow_mut();
                opened.failed += 1;
                if opened.first_error.is_none() {
                    let what = if kind == ErrorKind::Tls {
                        "TLS handshake"
                    } else {
                        "TCP connect"
                    };
                    opened.first_error = Some(format!("{what}: {cause}"));
                }
            }
        }
    }
}

/// How holding a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Held {
    /// Let go by us (closed politely).
    Released,
    /// The peer closed it, reset it, or it failed (how, in words).
    ClosedByPeer(String),
}

/// Keeps `conn` open and idle until `signal` fires (then closes it) or the peer closes it.
async fn hold_one(mut conn: Conn, signal: &SharedCanceller) -> Held {
    conn.release_buffers();
    loop {
        let far = Instant::now() + Duration::from_secs(86_400);
        match conn.wait_readable(far, signal).await {
            Ok(()) => {}
            Err(ConnError::Cancelled) => break,
            Err(ConnError::TimedOut) => continue,
            Err(error) => {
                debug!(%error, "a held connection failed");
                return Held::ClosedByPeer(error.to_string());
            }
        }
        // Something arrived: TLS session tickets, stray bytes, or the close. Read it with a
        // deadline of its own (not `signal`, which that deadline would fire), then give the
        // buffers back.
        let deadline = Instant::now() + DRAIN_READ;
        let (result, _) = conn
            .read_into(Vec::new(), DRAIN_CHUNK, deadline, None)
            .await;
        conn.release_buffers();
        match result {
            Ok(_) | Err(ConnError::TimedOut | ConnError::Cancelled) => {}
            Err(error) => {
                debug!(peer = %conn.peer(), %error, "a held connection was lost");
                return Held::ClosedByPeer(error.to_string());
            }
        }
        if signal.is_fired() {
            break;
        }
    }
    conn.close().await;
    Held::Released
}
