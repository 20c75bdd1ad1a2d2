//! Worker threads: one monoio runtime per thread (io_uring, or epoll where io_uring is not
//! available), each pinned to a core and accepting on its own `SO_REUSEPORT` socket for each
//! listener, so the kernel spreads connections and a connection lives and dies on one core.
//! A worker runs one accept loop per listener; a session knows its listener (by index into
//! `Config::listeners`) and takes that listener's TLS, framing, ACK mode, limits and counters.
//!
//! Shutdown: the handle sets a flag; each worker notices it within a fifth of a second, stops
//! accepting on every listener, cancels the reads of connections that are idle between
//! messages, and waits for sessions in the middle of a message to finish it, up to the grace
//! period.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};
use socket2::Socket;
use tracing::{error, info, warn};

use crate::config::{AckMode, Config, LinkPolicy};
use crate::downstream::{Downstream, Failure, Timing};
use crate::handoff::{Handoff, ReplySlot, Request};
use crate::metrics::Stats;
use crate::session;
use mllp::ack::AckCode;
use netio::conn::{Conn, SharedCanceller, fire};
use netio::listen::{accept_within, bind_reuseport};
use netio::runtime::{allowed_cpus, block_on, cpu_for_worker, pin_current_thread, resolve_driver};

/// How often an accepting worker looks at the shutdown flag. Shutdown is rare; a fifth of a
/// second is prompt for an operator and costs five wake-ups a second per worker.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// A listener as bound: its name and the address it accepts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    /// The listener's name (`ListenerConfig::name`).
    pub name: String,
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
}

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    config: Arc<Config>,
    listeners: Vec<BoundListener>,
    metrics_addr: Option<SocketAddr>,
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<Stats>,
    /// `durable` mode: the journal's lock, held while the relay runs.
    _journal_lock: Option<crate::journal::JournalLock>,
}

impl RelayHandle {
    /// The address the first listener is bound to (the real port when 0 was asked for).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listeners[0].addr
    }

    /// Every listener with its bound address, in `Config::listeners` order.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The bound address of the listener called `name`.
    pub fn listen_addr_of(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.addr)
    }

    /// The address of the Prometheus endpoint, if one was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Reloads the certificates, keys, client CA and allowlist of every TLS listener from
    /// their files (what SIGHUP does): one result per TLS listener, with its name, in config
    /// order (empty when every listener is plain). Each listener reloads on its own: where it
    /// fails, that listener's old configuration stays in force and the others still reload.
    pub fn reload_tls(&self) -> Vec<(&str, Result<(), netio::tls::TlsSetupError>)> {
        self.config
            .listeners
            .iter()
            .filter_map(|l| Some((l.name.as_str(), l.tls.as_ref()?.reload())))
            .collect()
    }

    /// The relay's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// A flag that, once set, starts a graceful shutdown (for signal handlers).
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Starts a graceful shutdown and waits for the workers to finish.
    pub fn shutdown(self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.join();
    }

    /// Waits for the workers to finish (after the shutdown flag is set).
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                error!("a worker thread panicked");
            }
        }
    }
}

/// What one worker's tasks share: configuration, counters, the downstream pool, and the
/// shutdown state. Lives on one thread (`Rc`), so nothing here needs a lock.
pub(crate) struct WorkerContext {
    pub(crate) config: Arc<Config>,
    pub(crate) stats: Arc<Stats>,
    /// The downstreams, indexed as `config.downstreams`.
    pub(crate) downstreams: Vec<Downstream>,
    id: usize,
    shutdown: Arc<AtomicBool>,
    /// Cancellers of sessions idle between messages, cancelled at shutdown.
    idle: RefCell<HashMap<u64, SharedCanceller>>,
    next_idle: Cell<u64>,
    /// Open sessions on this worker, per listener (indexed like `config.listeners`).
    active: Box<[Cell<usize>]>,
    /// Counter for generated control ids.
    generated: Cell<u64>,
    /// `local` mode: messages acknowledged and waiting for the forwarder.
    pub(crate) local_queue: Option<crate::forwarder::LocalQueue>,
    /// Per downstream: the cross-core handoff of a `single` link (shared by all workers).
    handoffs: Arc<Vec<Option<Arc<Handoff>>>>,
    /// Workers still running; worker 0 keeps the `single` links alive until it is the last.
    workers_running: Arc<AtomicUsize>,
    /// `durable` mode: this worker's journal and forwarder.
    pub(crate) durable: Option<Rc<crate::durable::Forwarder>>,
    /// The next lane key for an inbound connection (`durable` mode keeps each one's order).
    next_lane: Cell<u32>,
}

impl WorkerContext {
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Open sessions on this worker, all listeners together.
    fn open_sessions(&self) -> usize {
        self.active.iter().map(Cell::get).sum()
    }

    /// Registers an idle session's read so shutdown can cancel it.
    pub(crate) fn register_idle(&self, canceller: &SharedCanceller) -> u64 {
        let id = self.next_idle.get();
        self.next_idle.set(id + 1);
        self.idle.borrow_mut().insert(id, canceller.clone());
        id
    }

    pub(crate) fn unregister_idle(&self, id: u64) {
        self.idle.borrow_mut().remove(&id);
    }

    /// Delivers one message to downstream `index`: through this worker's own pool, or, for a
    /// `single` link, through the handoff to the link task on worker 0.
    pub(crate) async fn deliver(
        &self,
        index: usize,
        payload: &[u8],
        control_id: &[u8],
        expect_ack: bool,
        ack: &mut Vec<u8>,
        timing: &mut Timing,
    ) -> Result<Option<AckCode>, Failure> {
        let downstream = &self.downstreams[index];
        let Some(handoff) = self.handoffs.get(index).and_then(Option::as_ref) else {
            return downstream
                .deliver(payload, control_id, expect_ack, ack, &self.stats, timing)
                .await;
        };
        let reply = Arc::new(ReplySlot::default());
        let request = Request {
            payload: payload.to_vec(),
            control_id: control_id.to_vec(),
            expect_ack,
            reply: Arc::clone(&reply),
        };
        if handoff.submit(request).is_err() {
            self.stats
                .downstream_failure(crate::metrics::DownstreamFailureKind::HandoffFull);
            return Err(Failure::HandoffFull {
                addr: downstream.config().addr,
            });
        }
        let (code, bytes, took) = reply.wait().await?;
        ack.extend_from_slice(&bytes);
        *timing = took;
        Ok(code)
    }

    /// A lane key for a new inbound connection.
    pub(crate) fn next_lane(&self) -> u32 {
        let lane = self.next_lane.get();
        self.next_lane.set(lane.wrapping_add(1));
        lane
    }

    /// Writes a control id for a relay-generated ACK over `out`, unique within this process
    /// run: `R<worker>-<counter>`.
    pub(crate) fn write_next_control_id(&self, out: &mut Vec<u8>) {
        let n = self.generated.get() + 1;
        self.generated.set(n);
        out.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(out, "R{}-{n}", self.id);
    }
}

/// Binds the listeners and starts the workers.
///
/// # Errors
/// When the listeners cannot run together (none, a name used twice, overlapping addresses),
/// a listen address cannot be bound, or a worker thread cannot start.
pub fn start(config: Config) -> io::Result<RelayHandle> {
    config
        .check_listeners()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let workers = config.workers.max(1);
    // sockets[worker][listener]. The first worker's bind of each listener fixes its port (port
    // 0 picks one); the other workers bind that same port.
    let mut sockets: Vec<Vec<Socket>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        let named = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("listener {:?} on {}: {e}", listener.name, listener.addr),
            )
        };
        let first = bind_reuseport(listener.addr).map_err(named)?;
        let addr = first
            .local_addr()
            .map_err(named)?
            .as_socket()
            .ok_or_else(|| named(io::Error::other("the socket has no IP address")))?;
        sockets[0].push(first);
        for worker in &mut sockets[1..] {
            worker.push(bind_reuseport(addr).map_err(named)?);
        }
        bound.push(BoundListener {
            name: listener.name.clone(),
            addr,
        });
    }
    let local: Vec<&str> = config
        .listeners
        .iter()
        .filter(|l| l.ack_mode == AckMode::Local)
        .map(|l| l.name.as_str())
        .collect();
    if !local.is_empty() {
        warn!(
            listeners = %local.join(", "),
            "ack mode LOCAL: senders get AA/CA on receipt, before the receiver has the message; \
             a crash, or a receiver that refuses or never answers, LOSES acknowledged messages \
             (each loss is logged and counted). Use passthrough when messages must not be lost."
        );
    }
    let stats = Arc::new(Stats::for_config(&config));
    let (journal_lock, mut recovered) = open_journals(&config, workers, &stats)?;
    let config = Arc::new(config);
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(workers + 1);
    let mut metrics_addr = None;
    if let Some(addr) = config.metrics_addr {
        let listener = crate::metrics::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("metrics address {addr}: {e}")))?;
        metrics_addr = Some(listener.local_addr()?);
        let rejections = config
            .listeners
            .iter()
            .map(|l| l.tls_rejections.clone())
            .collect();
        let (stats, stop) = (stats.clone(), shutdown.clone());
        threads.push(
            std::thread::Builder::new()
                .name("mllp-relay-metrics".into())
                .spawn(move || crate::metrics::serve(listener, stats, rejections, stop))?,
        );
    }
    // The CPUs this process may run on (taskset, a container's cpuset): workers are pinned
    // within them, never onto a CPU outside the set.
    let allowed = if config.pin_workers {
        allowed_cpus()
    } else {
        Vec::new()
    };
    if config.pin_workers && allowed.is_empty() {
        warn!("cannot read the process's CPU affinity: workers are not pinned");
    }
    let allowed = Arc::new(allowed);
    let handoffs: Arc<Vec<Option<Arc<Handoff>>>> = Arc::new(
        config
            .downstreams
            .iter()
            .map(|d| (d.link == LinkPolicy::Single).then(|| Arc::new(Handoff::new(stats.clone()))))
            .collect(),
    );
    let workers_running = Arc::new(AtomicUsize::new(workers));
    let driver = resolve_driver(config.driver)?;
    for (id, sockets) in sockets.into_iter().enumerate() {
        let config = config.clone();
        let shutdown = shutdown.clone();
        let stats = stats.clone();
        let handoffs = handoffs.clone();
        let workers_running = workers_running.clone();
        let cpu = cpu_for_worker(id, &allowed);
        let journal = recovered.get_mut(id).and_then(Option::take);
        let thread = std::thread::Builder::new()
            .name(format!("mllp-relay-w{id}"))
            .spawn(move || {
                if let Some(cpu) = cpu
                    && let Err(e) = pin_current_thread(cpu)
                {
                    warn!(worker = id, cpu, error = %e, "could not pin the worker to a core");
                }
                let local_queue = config
                    .uses_ack_mode(AckMode::Local)
                    .then(|| crate::forwarder::LocalQueue::new(stats.clone()));
                let run = async move {
                    let durable = match journal {
                        Some(recovered) => match open_forwarder(recovered, id, &config, &stats) {
                            Ok(forwarder) => Some(forwarder),
                            Err(e) => {
                                error!(worker = id, error = %e, "cannot open the journal: this worker does not accept");
                                return;
                            }
                        },
                        None => None,
                    };
                    let active = config.listeners.iter().map(|_| Cell::new(0)).collect();
                    let context = Rc::new(WorkerContext {
                        downstreams: config
                            .downstreams
                            .iter()
                            .cloned()
                            .enumerate()
                            .map(|(index, d)| Downstream::new(index, d))
                            .collect(),
                        config,
                        stats,
                        id,
                        shutdown,
                        idle: RefCell::new(HashMap::new()),
                        next_idle: Cell::new(0),
                        active,
                        generated: Cell::new(0),
                        local_queue,
                        handoffs,
                        workers_running,
                        durable,
                        next_lane: Cell::new(0),
                    });
                    run_worker(sockets, context).await;
                };
                if let Err(e) = block_on(driver, run) {
                    error!(worker = id, error = %e, "cannot build the runtime");
                }
            })?;
        threads.push(thread);
    }
    Ok(RelayHandle {
        config,
        listeners: bound,
        metrics_addr,
        shutdown,
        threads,
        stats,
        _journal_lock: journal_lock,
    })
}

/// `durable` mode: locks the journal directory, moves the messages of surplus worker journals
/// to running ones, and recovers each worker's journal (before any connection is accepted),
/// one entry per worker.
#[allow(clippy::type_complexity)]
fn open_journals(
    config: &Config,
    workers: usize,
    stats: &Stats,
) -> io::Result<(
    Option<crate::journal::JournalLock>,
    Vec<Option<crate::journal::Recovered>>,
)> {
    let Some(durable) = config
        .listeners
        .iter()
        .find(|l| l.ack_mode == AckMode::Durable)
    else {
        return Ok((None, Vec::new()));
    };
    let Some(journal) = &config.journal else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "listener {:?} has ack mode durable, which needs a journal directory \
                 (--journal DIR, or [journal] dir)",
                durable.name
            ),
        ));
    };
    let lock = crate::journal::lock(&journal.dir)?;
    crate::journal::adopt_orphans(&journal.dir, workers, stats)?;
    let route = |payload: &[u8]| {
        mllp::hl7::Msh::parse(payload)
            .ok()
            .and_then(|msh| config.route(&msh).ok())
    };
    let mut windows = WindowsFromJournal::new(config);
    let mut recovered = Vec::with_capacity(workers);
    for id in 0..workers {
        let mut journal = crate::journal::recover(
            &journal.dir,
            id,
            &route,
            &mut |payload, taken_ms| windows.remember(payload, taken_ms),
            stats,
        )?;
        journal.begin_segment()?;
        journal.count_in(stats);
        recovered.push(Some(journal));
    }
    let undelivered: usize = recovered
        .iter()
        .flatten()
        .map(crate::journal::Recovered::undelivered)
        .sum();
    info!(
        journal = %journal.dir.display(),
        undelivered,
        commit_interval = ?journal.commit_interval,
        "ack mode DURABLE: senders get AA/CA once their message is fsync'ed to the journal"
    );
    Ok((Some(lock), recovered))
}

/// Refills the duplicate windows of durable listeners with the messages found in the journal
/// at start-up (delivered or not, within each window's age), so that a sender that resends a
/// message after a restart (it may never have seen the ACK: the relay went down between the
/// fdatasync and the answer) gets an ACK instead of a second copy queued. The window does not
/// keep the ACK itself across a restart: it is made anew, with the same code and MSA-2 under
/// the listener's ACK policy, a new MSH-7 and an MSH-10 of the form `RJ-<n>`. A
/// record does not say which listener took it, so with several durable listeners every window
/// learns every message. Segments already reclaimed are gone: the window then covers what is
/// still on disk (at least the undelivered messages).
struct WindowsFromJournal<'c> {
    windows: Vec<(&'c crate::duplicates::DuplicateWindow, mllp::ack::AckPolicy)>,
    now: Instant,
    now_ms: u64,
    timestamp: Vec<u8>,
    control_id: Vec<u8>,
    key: Vec<u8>,
    ack: Vec<u8>,
    remembered: u64,
}

impl<'c> WindowsFromJournal<'c> {
    fn new(config: &'c Config) -> Self {
        let mut windows: Vec<(&crate::duplicates::DuplicateWindow, mllp::ack::AckPolicy)> =
            Vec::new();
        for listener in &config.listeners {
            if let (AckMode::Durable, Some(window)) = (listener.ack_mode, &listener.duplicates)
                && !windows.iter().any(|(w, _)| std::ptr::eq(*w, &**window))
            {
                windows.push((window, listener.ack_policy));
            }
        }
        let wall = std::time::SystemTime::now();
        let now_ms = wall
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut timestamp = Vec::new();
        mllp::timestamp::write_hl7_timestamp(wall, &mut timestamp);
        Self {
            windows,
            now: Instant::now(),
            now_ms,
            timestamp,
            control_id: Vec::new(),
            key: Vec::new(),
            ack: Vec::new(),
            remembered: 0,
        }
    }

    /// Remembers one message found in the journal, taken in at `taken_ms`.
    fn remember(&mut self, payload: &[u8], taken_ms: u64) {
        if self.windows.is_empty() {
            return;
        }
        let Ok(msh) = mllp::hl7::Msh::parse(payload) else {
            return;
        };
        let age = Duration::from_millis(self.now_ms.saturating_sub(taken_ms));
        let Some(at) = self.now.checked_sub(age) else {
            return;
        };
        for (window, policy) in &self.windows {
            if age > window.max_age() {
                continue;
            }
            self.remembered += 1;
            self.control_id.clear();
            let _ = write!(self.control_id, "RJ-{}", self.remembered);
            self.ack.clear();
            let params = mllp::ack::AckParams::new(&self.timestamp, &self.control_id);
            let answer = match mllp::ack::build_ack(
                &msh,
                mllp::ack::Outcome::Accepted,
                *policy,
                &params,
                &mut self.ack,
            ) {
                mllp::ack::AckDecision::Send(code) => Some((code, self.ack.as_slice())),
                mllp::ack::AckDecision::NotDue => None,
            };
            window.remember(&msh, payload, answer, at, &mut self.key);
        }
    }
}

impl Drop for WindowsFromJournal<'_> {
    fn drop(&mut self) {
        if self.remembered > 0 {
            info!(
                messages = self.remembered,
                "duplicate window: messages found in the journal remembered, so that their resends after this restart are answered, not queued again"
            );
        }
    }
}

/// Opens a worker's journal and forwarder on its runtime.
fn open_forwarder(
    recovered: crate::journal::Recovered,
    id: usize,
    config: &Arc<Config>,
    stats: &Arc<Stats>,
) -> io::Result<Rc<crate::durable::Forwarder>> {
    let journal_config = config.journal.clone().expect("durable mode has a journal");
    let root = journal_config.dir.clone();
    let lanes = journal_config.forward_lanes;
    let (journal, entries) =
        crate::journal::Journal::open(recovered, id, journal_config, stats.clone())?;
    let links: Vec<LinkPolicy> = config.downstreams.iter().map(|d| d.link).collect();
    Ok(Rc::new(crate::durable::Forwarder::new(
        journal, &links, lanes, &root, id, entries,
    )))
}

/// One worker's life: registers its listener sockets, starts the forwarding tasks its
/// listeners' ACK modes need, accepts on every listener until shutdown, then drains.
async fn run_worker(sockets: Vec<Socket>, ctx: Rc<WorkerContext>) {
    let mut listeners = Vec::with_capacity(sockets.len());
    for (socket, config) in sockets.into_iter().zip(&ctx.config.listeners) {
        match TcpListener::from_std(socket.into()) {
            Ok(listener) => listeners.push(listener),
            Err(e) => {
                error!(worker = ctx.id, listener = %config.name, error = %e, "cannot register the listener with the runtime");
                return;
            }
        }
    }
    if ctx.local_queue.is_some() {
        monoio::spawn(crate::forwarder::run(ctx.clone()));
    }
    let committer = ctx.durable.as_ref().map(|forwarder| {
        forwarder.spawn_lanes(&ctx);
        let journal = forwarder.journal.clone();
        let forwarder = forwarder.clone();
        let dispatch: Rc<dyn Fn(crate::journal::Entry)> =
            Rc::new(move |entry| forwarder.dispatch(entry));
        monoio::spawn(journal.run_committer(dispatch))
    });
    if ctx.id == 0 {
        for (index, handoff) in ctx.handoffs.iter().enumerate() {
            if let Some(handoff) = handoff {
                monoio::spawn(link_task(ctx.clone(), index, Arc::clone(handoff)));
            }
        }
    }
    monoio::spawn(return_freed_memory(ctx.clone()));
    let loops: Vec<monoio::task::JoinHandle<()>> = listeners
        .into_iter()
        .enumerate()
        .map(|(index, listener)| monoio::spawn(accept_loop(listener, index, ctx.clone())))
        .collect();
    for accepting in loops {
        accepting.await;
    }
    drain(&ctx).await;
    if let (Some(forwarder), Some(committer)) = (&ctx.durable, committer) {
        stop_durable(&ctx, forwarder, committer).await;
    }
    if ctx.id == 0 && ctx.handoffs.iter().any(Option::is_some) {
        // The other workers' sessions may still wait for the single links, which run here.
        let deadline = Instant::now() + ctx.config.shutdown_grace;
        while ctx.workers_running.load(Ordering::SeqCst) > 1 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    ctx.workers_running.fetch_sub(1, Ordering::SeqCst);
}

/// Until shutdown, hands the memory this worker freed back to the operating system on a slow
/// tick (see [`crate::memory`]): idle connections after a burst then cost what they hold, not
/// what the burst once needed.
async fn return_freed_memory(ctx: Rc<WorkerContext>) {
    while !ctx.shutting_down() {
        monoio::time::sleep(crate::memory::RETURN_PERIOD).await;
        crate::memory::return_freed_memory();
    }
}

/// Accepts on listener `index` until shutdown; the socket is closed when it returns.
async fn accept_loop(listener: TcpListener, index: usize, ctx: Rc<WorkerContext>) {
    while !ctx.shutting_down() {
        match accept_within(&listener, SHUTDOWN_POLL).await {
            Some(Ok((tcp, peer))) => admit(tcp, peer, index, &ctx),
            Some(Err(e)) => {
                warn!(listener = %ctx.config.listeners[index].name, error = %e, "accept failed");
                // Out of file descriptors and the like: do not spin.
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
            None => {}
        }
    }
}

/// Owns the only connection of a `single` downstream: delivers handed-over messages one at a
/// time, in arrival order, and hands each outcome back.
async fn link_task(ctx: Rc<WorkerContext>, index: usize, handoff: Arc<Handoff>) {
    let mut ack = Vec::new();
    loop {
        let request = handoff.next().await;
        ack.clear();
        let mut timing = Timing::default();
        let outcome = ctx.downstreams[index]
            .deliver(
                &request.payload,
                &request.control_id,
                request.expect_ack,
                &mut ack,
                &ctx.stats,
                &mut timing,
            )
            .await
            .map(|code| (code, std::mem::take(&mut ack), timing));
        request.reply.complete(outcome);
    }
}

/// Starts a session for a connection accepted on listener `index`, or refuses it when its
/// source is not allowed or the listener is at its per-worker limit.
fn admit(tcp: TcpStream, peer: SocketAddr, index: usize, ctx: &Rc<WorkerContext>) {
    let listener = &ctx.config.listeners[index];
    let counters = ctx.stats.listener(index);
    let active = &ctx.active[index];
    if !listener.allowed_sources.is_empty()
        && !listener
            .allowed_sources
            .iter()
            .any(|net| net.contains(peer.ip()))
    {
        Stats::bump(&ctx.stats.connections_refused_source);
        Stats::bump(&counters.connections_refused_source);
        warn!(listener = %listener.name, %peer, "source address not on the allowlist: connection refused");
        return;
    }
    if active.get() >= listener.max_connections_per_worker {
        Stats::bump(&ctx.stats.connections_refused);
        Stats::bump(&counters.connections_refused);
        warn!(listener = %listener.name, %peer, limit = listener.max_connections_per_worker, "connection limit reached: connection refused");
        drop(tcp);
        return;
    }
    let _ = tcp.set_nodelay(true);
    Stats::bump(&ctx.stats.connections_accepted);
    Stats::bump(&counters.connections_accepted);
    let conn = match &listener.tls {
        None => Conn::plain(tcp, peer),
        Some(tls) => match rustls::ServerConnection::new(tls.current()) {
            Ok(session) => Conn::tls(tcp, peer, session.into()),
            Err(e) => {
                error!(listener = %listener.name, %peer, error = %e, "cannot start a TLS session");
                return;
            }
        },
    };
    active.set(active.get() + 1);
    ctx.stats.connections_open.fetch_add(1, Ordering::Relaxed);
    counters.connections_open.fetch_add(1, Ordering::Relaxed);
    let task_ctx = ctx.clone();
    monoio::spawn(async move {
        // Pinned in place: the session future (several KiB, most of an idle connection's
        // memory) is stored once in this task, not moved into a second copy.
        if contained(std::pin::pin!(session::run(conn, index, task_ctx.clone())))
            .await
            .is_err()
        {
            Stats::bump(&task_ctx.stats.session_panics);
            error!(%peer, "a session panicked; only its connection was lost");
        }
        let active = &task_ctx.active[index];
        active.set(active.get() - 1);
        task_ctx
            .stats
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        task_ctx
            .stats
            .listener(index)
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    });
}

/// After accepting stops: cancel idle reads, then wait for sessions mid-message.
async fn drain(ctx: &Rc<WorkerContext>) {
    let deadline = Instant::now() + ctx.config.shutdown_grace;
    loop {
        let idle: Vec<SharedCanceller> = ctx.idle.borrow_mut().drain().map(|(_, c)| c).collect();
        for canceller in &idle {
            fire(canceller);
        }
        let forwarding = ctx.local_queue.as_ref().is_some_and(|q| !q.is_idle());
        if ctx.open_sessions() == 0 && !forwarding {
            return;
        }
        if Instant::now() >= deadline {
            let queued = ctx
                .local_queue
                .as_ref()
                .map_or(0, crate::forwarder::LocalQueue::len);
            warn!(
                open = ctx.open_sessions(),
                queued, "shutdown grace period over: closing with messages in flight"
            );
            return;
        }
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `durable` mode at shutdown, once no session is left: lets the lanes finish the delivery
/// each is in (up to the grace period), writes the last delivered records and syncs. What is
/// still queued stays in the journal for the next start.
async fn stop_durable(
    ctx: &WorkerContext,
    forwarder: &crate::durable::Forwarder,
    committer: monoio::task::JoinHandle<()>,
) {
    forwarder.stop();
    let deadline = Instant::now() + ctx.config.shutdown_grace;
    while !forwarder.is_idle() && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    forwarder.journal.stop();
    committer.await;
    forwarder.journal.sync().await;
}

/// Runs `task` so that a panic inside it ends that task only: `Err(())` instead of unwinding
/// into the worker's event loop, which would take every other connection on the core with it.
/// (The release profile keeps `panic = "unwind"` for this.)
fn contained<F: Future + Unpin>(task: F) -> CatchUnwind<F> {
    CatchUnwind(task)
}

/// Polls a future inside `catch_unwind`.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Pin::new(&mut *inner).poll(cx)
        })) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_session_ends_alone_and_the_worker_goes_on() {
        // Two sessions on one single-threaded runtime, as on a worker: one panics after it has
        // been suspended once (mid-message, so to speak), the other is still waiting on I/O
        // (here a timer) when that happens and must finish normally afterwards.
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        let (panicking, survivor, after) = runtime.block_on(async {
            let panicking = monoio::spawn(contained(Box::pin(async {
                monoio::time::sleep(Duration::from_millis(1)).await;
                let frames: Vec<u8> = Vec::new();
                // An out-of-bounds index: the kind of bug containment is for.
                frames[usize::from(frames.is_empty())]
            })));
            let survivor = monoio::spawn(contained(Box::pin(async {
                monoio::time::sleep(Duration::from_millis(20)).await;
                "finished"
            })));
            let panicking = panicking.await;
            let survivor = survivor.await;
            // The runtime still runs new work after the panic.
            let after = monoio::spawn(contained(Box::pin(async { 7 }))).await;
            (panicking, survivor, after)
        });
        assert_eq!(panicking, Err(()));
        assert_eq!(survivor, Ok("finished"));
        assert_eq!(after, Ok(7));
    }
}
