//! `send`: drives an MLLP listener with many connections and measures every ACK.
//!
//! # How latency is measured
//! - **Closed loop** (the default): each connection keeps up to `pipeline` messages in flight
//!   (1: HL7 original mode's stop-and-wait) and sends the next on an ACK. Latency runs from the
//!   actual send. A closed loop slows down with the target, so it cannot see the target's
//!   stalls in its percentiles: use it for throughput and the latency floor.
//! - **Open loop** (`rate`): every connection has its own schedule of intended send times
//!   (rate ÷ connections, phase-shifted, uniform or Poisson). When the target is slow, messages
//!   queue *in the generator* and their latency runs from the **intended** send time, so a stall
//!   of the target is charged to every message that should have been sent during it
//!   (coordinated omission corrected, as wrk2 does). When the connection was free at the
//!   intended time, latency runs from the actual send, so the pacer's own wake-up delay is not
//!   charged to the target.
//!
//! # What is counted
//! Everything, in a [`RunStats`]: sent, ACKs by MSA-1, and one error per message that did not
//! get a matching ACK (timeout, connection closed with it in flight, still unanswered at the
//! end), plus ACKs whose MSA-2 names no message in flight, unreadable ACKs, connect and TLS
//! failures, reconnects. Messages are never re-sent: a load test that retried would hide loss.
//! The warm-up period's messages are sent and answered but not recorded: only counted apart
//! (`warmup_sent`, `warmup_acked`), so that every message written is accounted for.
//!
//! # Shape
//! One monoio runtime per thread; connections are spread over threads and each lives on one.
//! Each thread records into its own [`Interval`] and hands it to the calling thread once a
//! second, which adds them up and shows progress. Nothing on the send path allocates.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use mllp::frame::{Deframer, FramingConfig, Tolerances};
use netio::conn::{Conn, ConnError, fire, shared_canceller};
use netio::connect::{ClientTls, ConnectError, connect};
use netio::runtime::{Driver, block_on, spawn_runtime};
use tracing::{debug, warn};

use crate::pace::{Arrival, PreciseTimer, Schedule};
use crate::source::{
    CONTROL_ID_LEN, Message, RunTag, TimestampCache, control_id, parse_control_id,
};
use crate::stats::{ErrorKind, Interval, RunStats};

/// Bytes asked of the socket per read: ACKs are ~100 bytes, so this holds many.
const READ_CHUNK: usize = 16 * 1024;
/// The most intended sends an open-loop connection lets pile up while its target is down;
/// beyond this they are counted as [`ErrorKind::ScheduleOverflow`] and skipped.
const MAX_SCHEDULE_BACKLOG: Duration = Duration::from_secs(60);

/// When the run stops sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many measured messages in total.
    Count(u64),
    /// After this long (not counting warm-up).
    Duration(Duration),
}

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loop {
    /// Next message on each ACK.
    Closed,
    /// `rate` messages per second in total, spaced per `arrival`.
    Open {
        /// Messages per second across all connections.
        rate: f64,
        /// Uniform or Poisson spacing.
        arrival: Arrival,
    },
}

/// Everything a `send` run needs.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Where to connect.
    pub target: SocketAddr,
    /// TLS, or `None` for plain MLLP.
    pub tls: Option<ClientTls>,
    /// Connections to keep open.
    pub connections: usize,
    /// Threads (monoio runtimes) to spread them over.
    pub threads: usize,
    /// Messages in flight per connection (1 = stop-and-wait).
    pub pipeline: usize,
    /// Closed or open loop.
    pub mode: Loop,
    /// When to stop.
    pub stop: Stop,
    /// Sending before measuring (connections warm, caches hot, the target's JIT if any).
    pub warmup: Duration,
    /// The messages, sent round-robin (each connection starting at its own offset).
    pub messages: Arc<Vec<Message>>,
    /// How long a message may wait for its ACK.
    pub ack_timeout: Duration,
    /// How long a TCP connect plus TLS handshake may take.
    pub connect_timeout: Duration,
    /// First and largest pause before reconnecting (doubled each failure, with jitter).
    pub reconnect_backoff: (Duration, Duration),
    /// Tag of this run's control ids (MSH-10), so several generators never collide.
    pub run_tag: RunTag,
    /// io_uring or epoll.
    pub driver: Driver,
    /// Frame bytes: MLLP's, or others negotiated with the target.
    pub framing: FramingConfig,
}

/// What the progress callback gets once a second.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Seconds since measuring began (negative during warm-up is reported as 0).
    pub elapsed: Duration,
    /// ACKs matched in the last second.
    pub last_second_acked: u64,
    /// Everything so far.
    pub so_far: &'a RunStats,
    /// Still warming up.
    pub warming_up: bool,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The target refused or did not answer.
    #[error("cannot connect to {target}: {cause}")]
    Connect {
        /// The target.
        target: SocketAddr,
        /// What the OS said.
        cause: String,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {target} failed: {cause}")]
    Tls {
        /// The target.
        target: SocketAddr,
        /// What rustls said.
        cause: String,
    },
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// A runtime or thread could not start.
    #[error("cannot start the sending threads: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Checks the target once (connect, and TLS handshake), so that a wrong address or
/// certificate is one clear error instead of a run full of failures.
///
/// # Errors
/// [`SendError::Connect`] or [`SendError::Tls`] naming the cause.
pub fn probe(config: &SendConfig) -> Result<(), SendError> {
    let target = config.target;
    let tls = config.tls.clone();
    let timeout = config.connect_timeout;
    block_on(config.driver, async move {
        match open(target, tls.as_ref(), timeout).await {
            Ok(mut conn) => {
                // In TLS 1.3 the client finishes its handshake before the server has checked
                // the client certificate: a refusal arrives as an alert just after. Listen
                // briefly for it.
                if tls.is_some() {
                    let deadline = Instant::now() + Duration::from_millis(150);
                    let (result, _) = conn.read_into(Vec::new(), 512, deadline, None).await;
                    match result {
                        Err(ConnError::Tls(e)) => {
                            return Err(SendError::Tls {
                                target,
                                cause: e.to_string(),
                            });
                        }
                        Err(ConnError::Closed) => {
                            return Err(SendError::Tls {
                                target,
                                cause: "the target closed the connection right after the \
                                        handshake (client certificate refused?)"
                                    .into(),
                            });
                        }
                        _ => {}
                    }
                }
                conn.close().await;
                Ok(())
            }
            Err((ErrorKind::Tls, cause)) => Err(SendError::Tls { target, cause }),
            Err((_, cause)) => Err(SendError::Connect { target, cause }),
        }
    })?
}

/// Runs the load and returns what was measured. `on_progress` is called on the calling thread
/// about once a second. Setting `stop` (Ctrl-C) ends sending early; messages then still in
/// flight are counted as [`ErrorKind::Unanswered`].
///
/// # Errors
/// When the configuration is unusable or threads cannot start. Failures *during* the run are
/// measurements, not errors: they are in the returned stats.
pub fn run(
    config: SendConfig,
    stop: &Arc<AtomicBool>,
    mut on_progress: impl FnMut(Progress<'_>),
) -> Result<RunStats, SendError> {
    validate(&config)?;
    let threads = config.threads.clamp(1, config.connections);
    let start = Instant::now() + Duration::from_millis(20);
    let measure_start = start + config.warmup;
    let (sender, receiver) = mpsc::channel::<Report>();
    let config = Arc::new(config);
    let mut handles = Vec::with_capacity(threads);
    for thread in 0..threads {
        let config = Arc::clone(&config);
        let sender = sender.clone();
        let stop = Arc::clone(stop);
        let driver = config.driver;
        let handle = spawn_runtime(format!("mllp-loadgen-{thread}"), driver, None, move || {
            let plan = ThreadPlan {
                thread,
                threads,
                start,
                measure_start,
                stop,
            };
            run_thread(config, plan, sender)
        })?;
        handles.push(handle);
    }
    drop(sender);

    let mut stats = RunStats::default();
    let mut finished_threads = 0;
    let mut last_progress = Instant::now();
    let mut second_acked: Vec<u64> = Vec::new();
    let mut last_ack: Option<Instant> = None;
    while finished_threads < threads {
        match receiver.recv_timeout(Duration::from_millis(250)) {
            Ok(Report::Interval { second, interval }) => {
                stats.add_interval(&interval, second);
                if second_acked.len() <= second {
                    second_acked.resize(second + 1, 0);
                }
                second_acked[second] += interval.acked;
            }
            Ok(Report::Done {
                last_ack: thread_last_ack,
            }) => {
                finished_threads += 1;
                last_ack = last_ack.max(thread_last_ack);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now.duration_since(last_progress) >= Duration::from_secs(1) {
            last_progress = now;
            let warming_up = now < measure_start;
            let elapsed = now.saturating_duration_since(measure_start);
            // The last *complete* second: threads report it a moment after it ends.
            let complete = usize::try_from(elapsed.as_secs()).unwrap_or(usize::MAX);
            let last_second_acked = complete
                .checked_sub(1)
                .and_then(|s| second_acked.get(s))
                .copied()
                .unwrap_or(0);
            on_progress(Progress {
                elapsed,
                last_second_acked,
                so_far: &stats,
                warming_up,
            });
        }
    }
    for handle in handles {
        let _ = handle.join();
    }
    // A timed run lasts its configured time (ACKs of its last messages come in a moment
    // later); a counted run lasts until its last ACK.
    let measured = match config.stop {
        Stop::Duration(d) if !stop.load(Ordering::Relaxed) => d,
        _ => last_ack
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(measure_start),
    };
    stats.duration_s = measured.as_secs_f64();
    describe(&config, &mut stats);
    Ok(stats)
}

fn validate(config: &SendConfig) -> Result<(), SendError> {
    let fail = |m: &str| Err(SendError::Config(m.to_owned()));
    if config.connections == 0 {
        return fail("--connections must be at least 1");
    }
    if config.pipeline == 0 {
        return fail("--pipeline must be at least 1");
    }
    if config.messages.is_empty() {
        return fail("no messages to send");
    }
    if let Loop::Open { rate, .. } = config.mode
        && !(rate.is_finite() && rate > 0.0)
    {
        return fail("--rate must be a positive number of messages per second");
    }
    if config.stop == Stop::Count(0) {
        return fail("--count must be at least 1");
    }
    if config.connections > 36usize.pow(4) {
        return fail("at most 1,679,616 connections (the control id has 4 digits for them)");
    }
    Ok(())
}

/// Records the run's settings in the stats' free-form facts.
fn describe(config: &SendConfig, stats: &mut RunStats) {
    let meta = &mut stats.meta;
    meta.insert("target".into(), config.target.to_string());
    meta.insert("tls".into(), config.tls.is_some().to_string());
    meta.insert("connections".into(), config.connections.to_string());
    meta.insert("pipeline".into(), config.pipeline.to_string());
    match config.mode {
        Loop::Closed => {
            meta.insert("mode".into(), "closed".into());
        }
        Loop::Open { rate, arrival } => {
            meta.insert("mode".into(), "open".into());
            meta.insert("rate".into(), rate.to_string());
            meta.insert("arrival".into(), format!("{arrival:?}").to_lowercase());
        }
    }
    meta.insert("warmup_s".into(), config.warmup.as_secs_f64().to_string());
    meta.insert("messages".into(), config.messages.len().to_string());
    meta.insert(
        "run_tag".into(),
        String::from_utf8_lossy(config.run_tag.as_bytes()).into_owned(),
    );
}

/// What a thread hands to the calling thread.
enum Report {
    /// One second's measurements (index from the start of measuring).
    Interval {
        second: usize,
        interval: Box<Interval>,
    },
    /// The thread has finished; when it matched its last ACK.
    Done { last_ack: Option<Instant> },
}

#[derive(Debug, Clone)]
struct ThreadPlan {
    thread: usize,
    threads: usize,
    start: Instant,
    measure_start: Instant,
    stop: Arc<AtomicBool>,
}

/// State shared by the connection tasks of one thread.
struct ThreadState {
    config: Arc<SendConfig>,
    measure_start: Instant,
    /// When sending stops (duration runs); far future for count runs.
    send_until: Instant,
    interval: RefCell<Interval>,
    timestamps: RefCell<TimestampCache>,
    /// When this thread last matched an ACK (the end of a counted run).
    last_ack: Cell<Option<Instant>>,
    /// Set on Ctrl-C: stop sending.
    stop: Arc<AtomicBool>,
    /// The target has been seen closing connections between messages: check that a
    /// connection is still open before each send. Off until needed: the check is a syscall.
    check_peer_closed: Cell<bool>,
    /// The target closed a connection after this many ACKs with the next message in flight
    /// (servers that take one message per connection do this): from then on, connections are
    /// closed and reopened after that many ACKs, as such a server's own clients do, rather
    /// than losing a message to each close.
    learned_close_after: Cell<Option<u64>>,
    uring: bool,
}

impl ThreadState {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

async fn run_thread(config: Arc<SendConfig>, plan: ThreadPlan, reports: mpsc::Sender<Report>) {
    let uring = config.driver != Driver::Epoll;
    let send_until = match config.stop {
        Stop::Duration(d) => plan.measure_start + d,
        // Count runs end by quota; this bound only stops a run whose target never answers.
        Stop::Count(_) => plan.measure_start + Duration::from_secs(365 * 86_400),
    };
    let state = Rc::new(ThreadState {
        config: Arc::clone(&config),
        measure_start: plan.measure_start,
        send_until,
        interval: RefCell::new(Interval::default()),
        timestamps: RefCell::new(TimestampCache::default()),
        last_ack: Cell::new(None),
        stop: Arc::clone(&plan.stop),
        check_peer_closed: Cell::new(false),
        learned_close_after: Cell::new(None),
        uring,
    });
    // This thread's connections: every `threads`-th one.
    let mine: Vec<usize> = (plan.thread..config.connections)
        .step_by(plan.threads)
        .collect();
    let running = Rc::new(Cell::new(mine.len()));
    let start = plan.start;
    for &index in &mine {
        let quota = match config.stop {
            Stop::Count(total) => {
                let n = config.connections as u64;
                let index64 = index as u64;
                Some(total / n + u64::from(index64 < total % n))
            }
            Stop::Duration(_) => None,
        };
        let state = Rc::clone(&state);
        let running = Rc::clone(&running);
        monoio::spawn(async move {
            connection_task(&state, index, quota, start).await;
            running.set(running.get() - 1);
        });
    }
    // Hand over one interval per second, aligned to the start of measuring.
    let mut second = 0usize;
    let mut warming = plan.measure_start > Instant::now();
    loop {
        let next = if warming {
            plan.measure_start
        } else {
            plan.measure_start + Duration::from_secs(second as u64 + 1)
        };
        // Wake at the next boundary, or earlier to notice that every connection is done.
        while running.get() > 0 && Instant::now() < next {
            let step = (next - Instant::now()).min(Duration::from_millis(50));
            monoio::time::sleep(step).await;
        }
        if warming {
            // Nothing of the warm-up's messages is recorded (see `InFlight::measured`); what
            // the interval holds now (connection errors, reconnects) goes into second 0.
            warming = false;
        } else {
            let taken = state.interval.borrow_mut().take();
            let _ = reports.send(Report::Interval {
                second,
                interval: Box::new(taken),
            });
            second += 1;
        }
        if running.get() == 0 {
            break;
        }
    }
    let _ = reports.send(Report::Done {
        last_ack: state.last_ack.get(),
    });
}

/// A message sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    /// Where its latency is measured from (see the module docs).
    origin: Instant,
    /// When it was written (for the ACK timeout).
    written: Instant,
    /// Due (open loop) or sent (closed loop) after warm-up: its outcome is recorded.
    measured: bool,
}

/// How a connection's session ended.
enum SessionEnd {
    /// Its quota or the run's time is used up and everything was answered (or given up).
    Finished,
    /// It failed and should reconnect after a pause.
    Failed,
    /// The target closed it between messages: reconnect at once.
    PeerClosed,
}

/// One connection for the whole run: connect, send, reconnect after failures.
async fn connection_task(state: &ThreadState, index: usize, quota: Option<u64>, start: Instant) {
    let config = &state.config;
    let mut conn_state = ConnState {
        index,
        index_u32: u32::try_from(index).unwrap_or(u32::MAX),
        seq: 0,
        next_message: index % config.messages.len(),
        quota,
        measured_sent: 0,
        acked_on_connections: 0,
        inflight: VecDeque::with_capacity(config.pipeline),
        schedule: match config.mode {
            Loop::Closed => None,
            Loop::Open { rate, arrival } => {
                let per_connection = rate / config.connections as f64;
                // Phase-shift connections so their sends interleave instead of bunching.
                let phase = Duration::from_secs_f64(index as f64 / rate);
                Some(Schedule::new(
                    state.measure_start.min(start) + phase,
                    per_connection,
                    arrival,
                    0x9E37_79B9_7F4A_7C15 ^ index as u64,
                ))
            }
        },
        free_since: start,
        out: Vec::with_capacity(config.messages.iter().map(Message::len).max().unwrap_or(0) + 3),
        timer: match PreciseTimer::new(state.uring) {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "no precise timer; open-loop pacing falls back to 1 ms");
                PreciseTimer::new(false).expect("the wheel timer cannot fail")
            }
        },
    };
    // Every connection starts at `start`, so they all open together.
    monoio::time::sleep_until(start.into()).await;
    let (min_backoff, max_backoff) = config.reconnect_backoff;
    let mut backoff = min_backoff;
    let mut first = true;
    loop {
        if conn_state.out_of_work(state) {
            break;
        }
        if !first {
            state.interval.borrow_mut().reconnects += 1;
        }
        first = false;
        let mut conn = match open(config.target, config.tls.as_ref(), config.connect_timeout).await
        {
            Ok(conn) => conn,
            Err((kind, cause)) => {
                debug!(connection = index, %cause, "connect failed");
                state.interval.borrow_mut().error(kind);
                let pause = jitter(backoff, conn_state.seq ^ index as u64);
                monoio::time::sleep(pause).await;
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        backoff = min_backoff;
        conn_state.free_since = Instant::now();
        let end = conn_state.session(state, &mut conn).await;
        match end {
            SessionEnd::Finished => {
                conn.close().await;
                break;
            }
            SessionEnd::Failed => {
                let pause = jitter(min_backoff, conn_state.seq ^ index as u64);
                monoio::time::sleep(pause).await;
            }
            SessionEnd::PeerClosed => {}
        }
    }
}

/// A pause of between half and all of `base`, so reconnecting connections spread out.
fn jitter(base: Duration, seed: u64) -> Duration {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x >> 29;
    let fraction = (x % 1_000) as f64 / 2_000.0 + 0.5;
    base.mul_f64(fraction)
}

/// Opens a connection (TCP_NODELAY) and runs the TLS handshake, both within `timeout`; a
/// failure is [`ErrorKind::Connect`] or [`ErrorKind::Tls`] with the cause in words.
pub(crate) async fn open(
    target: SocketAddr,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<Conn, (ErrorKind, String)> {
    connect(target, tls, timeout).await.map_err(|e| match e {
        ConnectError::Connect { error, .. } => (ErrorKind::Connect, error.to_string()),
        ConnectError::TimedOut { after, .. } => {
            (ErrorKind::Connect, format!("no answer within {after:?}"))
        }
        ConnectError::Handshake { error, .. } => (ErrorKind::Tls, handshake_failure(&error)),
    })
}

/// A TLS handshake failure in the words the report uses.
fn handshake_failure(error: &ConnError) -> String {
    match error {
        ConnError::Tls(e) => e.to_string(),
        ConnError::TimedOut => "handshake not completed in time".into(),
        ConnError::Closed => {
            "the target closed the connection during the TLS handshake (not a TLS port?)".into()
        }
        other => other.to_string(),
    }
}

/// Per-connection sending state that survives reconnects.
struct ConnState {
    index: usize,
    index_u32: u32,
    /// Sequence number of the next message (part of its control id).
    seq: u64,
    /// Index of the next message to send; connections start at different ones.
    next_message: usize,
    /// Measured messages left to send, for count runs.
    quota: Option<u64>,
    measured_sent: u64,
    /// ACKs matched on every connection so far (to count them per connection).
    acked_on_connections: u64,
    inflight: VecDeque<InFlight>,
    schedule: Option<Schedule>,
    /// Since when the connection could have sent (window not full): an intended send time
    /// before this was delayed by the target, after it only by the generator.
    free_since: Instant,
    out: Vec<u8>,
    timer: PreciseTimer,
}

impl ConnState {
    /// Whether this connection has nothing more to send.
    fn out_of_work(&self, state: &ThreadState) -> bool {
        if state.stopped() || self.quota.is_some_and(|q| self.measured_sent >= q) {
            return true;
        }
        let next = self
            .schedule
            .as_ref()
            .map_or_else(Instant::now, Schedule::peek);
        next >= state.send_until
    }

    /// Sends and reads on one open connection until the work is done or the connection fails.
    async fn session(&mut self, state: &ThreadState, conn: &mut Conn) -> SessionEnd {
        let config = &state.config;
        let tolerant = config.framing.with_tolerances(Tolerances::ALL);
        let mut deframer = Deframer::new(tolerant);
        let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        let acked_before = self.acked_on_connections;
        loop {
            let acked_here = self.acked_on_connections - acked_before;
            if self.inflight.is_empty()
                && state
                    .learned_close_after
                    .get()
                    .is_some_and(|n| acked_here >= n)
                && !self.out_of_work(state)
            {
                return SessionEnd::PeerClosed; // reopen, as the target expects
            }
            // Send while the window has room and a message is due.
            while self.inflight.len() < config.pipeline && !self.out_of_work(state) {
                let now = Instant::now();
                let intended = self.schedule.as_ref().map(Schedule::peek);
                if let Some(t) = intended {
                    if t > now {
                        if !self.inflight.is_empty() {
                            break; // wait for ACKs and the tick together, below
                        }
                        if let Err(e) = self.timer.sleep_until(t).await {
                            warn!(error = %e, "pacer timer failed");
                        }
                        if self.out_of_work(state) {
                            break;
                        }
                    } else if now - t > MAX_SCHEDULE_BACKLOG {
                        self.skip_backlog(state, now);
                        continue;
                    }
                }
                if state.check_peer_closed.get() && conn.peer_has_closed() {
                    if self.inflight.is_empty() {
                        // Closed between messages: nothing lost, just reconnect.
                        return SessionEnd::PeerClosed;
                    }
                    break; // read what is in flight; the read will see the close
                }
                if let Err(kind) = self.send_one(state, conn, intended).await {
                    let lost = if kind == ErrorKind::ClosedWithInFlight {
                        self.inflight.len()
                    } else {
                        0
                    };
                    return self.fail(state, kind, lost);
                }
            }
            if state.stopped() {
                let unanswered = self.inflight.iter().filter(|m| m.measured).count() as u64;
                state
                    .interval
                    .borrow_mut()
                    .errors(ErrorKind::Unanswered, unanswered);
                self.inflight.clear();
                return SessionEnd::Finished;
            }
            let Some(oldest) = self.inflight.front().copied() else {
                if self.out_of_work(state) {
                    return SessionEnd::Finished;
                }
                continue;
            };
            // Wait for ACKs; in an open loop with room in the window, also for the next tick.
            let ack_deadline = oldest.written + config.ack_timeout;
            let tick = self
                .schedule
                .as_ref()
                .map(Schedule::peek)
                .filter(|_| self.inflight.len() < config.pipeline && !self.out_of_work(state));
            deframer.reserve_for_read(&mut buf, READ_CHUNK);
            let (result, returned) = match tick {
                None => conn.read_into(buf, READ_CHUNK, ack_deadline, None).await,
                Some(tick) => {
                    let signal = shared_canceller();
                    let read = conn.read_into(buf, READ_CHUNK, ack_deadline, Some(&signal));
                    let timer = &mut self.timer;
                    let wake = async {
                        let _ = timer.sleep_until(tick).await;
                        fire(&signal);
                        std::future::pending::<()>().await;
                    };
                    monoio::select! {
                        r = read => r,
                        () = wake => unreachable!("pending forever"),
                    }
                }
            };
            buf = returned;
            match result {
                Ok(_) => {}
                Err(ConnError::Cancelled) => continue, // a tick is due
                Err(ConnError::TimedOut) => {
                    return self.fail(state, ErrorKind::AckTimeout, self.inflight.len());
                }
                Err(ConnError::Closed) => {
                    state.check_peer_closed.set(true);
                    let acked_here = self.acked_on_connections - acked_before;
                    if acked_here > 0 && state.learned_close_after.get().is_none() {
                        debug!(
                            connection = self.index,
                            after = acked_here,
                            "the target closes connections after this many messages; reopening before it does"
                        );
                        state.learned_close_after.set(Some(acked_here));
                    }
                    return self.fail(state, ErrorKind::ClosedWithInFlight, self.inflight.len());
                }
                Err(ConnError::Tls(_)) => return self.fail(state, ErrorKind::Tls, 0),
                Err(ConnError::Io(_)) => return self.fail(state, ErrorKind::Io, 0),
            }
            // Every complete ACK in the buffer.
            loop {
                match deframer.decode(&buf) {
                    Ok(Some(frame)) => {
                        while deframer.poll_event().is_some() {}
                        self.on_ack(state, frame.payload(&buf));
                    }
                    Ok(None) => break,
                    Err(error) => {
                        debug!(connection = self.index, %error, "framing error from the target");
                        return self.fail(state, ErrorKind::BadFraming, 0);
                    }
                }
            }
            while deframer.poll_event().is_some() {}
            deframer.compact(&mut buf);
        }
    }

    /// Stamps the next message and writes it.
    async fn send_one(
        &mut self,
        state: &ThreadState,
        conn: &mut Conn,
        intended: Option<Instant>,
    ) -> Result<(), ErrorKind> {
        let config = &state.config;
        let messages = &config.messages;
        let message = &messages[self.next_message];
        self.next_message = (self.next_message + 1) % messages.len();
        let id: [u8; CONTROL_ID_LEN] = control_id(config.run_tag, self.index_u32, self.seq);
        {
            let mut timestamps = state.timestamps.borrow_mut();
            message.write_framed_as(&config.framing, &mut self.out, &id, timestamps.now());
        }
        let written_at = Instant::now();
        let origin = match intended {
            // The target held the connection busy past the intended time: charge it.
            Some(t) if t < self.free_since => t,
            _ => written_at,
        };
        // A message belongs to the measured period by its intended time (open loop), so the
        // backlog of a slow warm-up is not counted as measured traffic; by its send time
        // otherwise.
        let measured = intended.unwrap_or(written_at) >= state.measure_start;
        let deadline = written_at + config.ack_timeout;
        let result = conn.write_all(&[&self.out], deadline).await;
        if let Some(schedule) = &mut self.schedule {
            schedule.advance();
        }
        let seq = self.seq;
        self.seq += 1;
        if measured {
            self.measured_sent += 1;
            state.interval.borrow_mut().sent += 1;
        } else {
            state.interval.borrow_mut().warmup_sent += 1;
        }
        self.inflight.push_back(InFlight {
            seq,
            origin,
            written: written_at,
            measured,
        });
        match result {
            Ok(()) => Ok(()),
            Err(ConnError::Closed) => Err(ErrorKind::ClosedWithInFlight),
            Err(ConnError::Tls(_)) => Err(ErrorKind::Tls),
            // A write that cannot finish: the target stopped reading.
            Err(_) => Err(ErrorKind::Io),
        }
    }

    /// Matches one ACK to its message and records it.
    fn on_ack(&mut self, state: &ThreadState, payload: &[u8]) {
        let now = Instant::now();
        let mut interval = state.interval.borrow_mut();
        let ack = match mllp::ack::parse_ack(payload) {
            Ok(ack) => ack,
            Err(error) => {
                debug!(connection = self.index, %error, "unreadable ACK");
                interval.error(ErrorKind::BadAck);
                return;
            }
        };
        let position = parse_control_id(state.config.run_tag, ack.acknowledged_id)
            .filter(|&(connection, _)| connection == self.index_u32)
            .and_then(|(_, seq)| self.inflight.iter().position(|m| m.seq == seq));
        let Some(position) = position else {
            debug!(
                connection = self.index,
                msa2 = %String::from_utf8_lossy(ack.acknowledged_id),
                "ACK for no message in flight"
            );
            interval.error(ErrorKind::Msa2Mismatch);
            return;
        };
        let window_was_full = self.inflight.len() >= state.config.pipeline;
        let message = self
            .inflight
            .remove(position)
            .expect("position is in range");
        if window_was_full {
            self.free_since = now;
        }
        self.acked_on_connections += 1;
        state.last_ack.set(Some(now));
        if message.measured {
            let latency = now.saturating_duration_since(message.origin);
            let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
            interval.ack(ack.code.as_str().as_bytes(), ns);
        } else {
            interval.warmup_acked += 1;
        }
    }

    /// Counts the messages lost with a failed connection and ends the session.
    fn fail(&mut self, state: &ThreadState, kind: ErrorKind, lost_messages: usize) -> SessionEnd {
        let mut interval = state.interval.borrow_mut();
        let measured_lost = self.inflight.iter().filter(|m| m.measured).count() as u64;
        if lost_messages > 0 {
            interval.errors(kind, measured_lost);
        } else {
            // A connection-level failure: one error of its kind, and the messages it took
            // with it as closed-with-in-flight.
            interval.error(kind);
            interval.errors(ErrorKind::ClosedWithInFlight, measured_lost);
        }
        debug!(
            connection = self.index,
            kind = kind.key(),
            in_flight = self.inflight.len(),
            "connection failed"
        );
        self.inflight.clear();
        SessionEnd::Failed
    }

    /// Gives up intended sends that are hopelessly late (target down for a long time), so the
    /// backlog stays bounded; each one is counted.
    fn skip_backlog(&mut self, state: &ThreadState, now: Instant) {
        let Some(schedule) = &mut self.schedule else {
            return;
        };
        let mut skipped = 0;
        while now.saturating_duration_since(schedule.peek()) > MAX_SCHEDULE_BACKLOG / 2 {
            let t = schedule.advance();
            if t >= state.measure_start {
                skipped += 1;
            }
        }
        state
            .interval
            .borrow_mut()
            .errors(ErrorKind::ScheduleOverflow, skipped);
    }
}
