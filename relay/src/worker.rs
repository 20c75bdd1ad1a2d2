//! Worker threads: one monoio runtime per thread (io_uring, or epoll where io_uring is not
//! available), each pinned to a core and accepting on its own `SO_REUSEPORT` socket for each
//! listener, so the kernel spreads connections and a connection lives and dies on one core.
//! A worker runs one accept loop per listener; a session knows its listener (by index into
//! `Config::listeners`) and takes that listener's TLS, framing, ACK mode, limits and counters.
//!
//! The only module that wires the others together: each worker gets its own
//! `outbound::Delivery`, its `custody::Custody` and the `inbound::Inbound` its sessions share,
//! runs a session per admitted connection in its own task with panics contained (a panic
//! ends that connection only), and drains at shutdown. Nothing imports this module.
//!
//! Shutdown: the handle sets a flag; each worker notices it within a fifth of a second, stops
//! accepting on every listener, cancels the reads of connections that are idle between
//! messages, and waits for sessions in the middle of a message to finish it, up to the grace
//! period.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;
use netio::listen::{accept_within, bind_reuseport};
use netio::runtime::{allowed_cpus, cpu_for_worker, resolve_driver, spawn_runtime};
use netio::tls::TlsSetupError;
use socket2::Socket;
use tracing::{error, warn};

use crate::audit::Audit;
use crate::config::{AckMode, Config, Live};
use crate::custody::Custody;
use crate::custody::duplicates::DuplicateWindows;
use crate::custody::journal::JournalLock;
use crate::custody::local::LocalQueue;
use crate::custody::recovery::{open_forwarder, open_journals};
use crate::inbound::{Inbound, accept};
use crate::metrics::Stats;
use crate::outbound::SingleLinks;

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
    live: Arc<Live>,
    listeners: Vec<BoundListener>,
    metrics_addr: Option<SocketAddr>,
    shutdown: Arc<AtomicBool>,
    /// The metrics thread and the workers (`Err`: a worker's runtime could not be built).
    threads: Vec<JoinHandle<io::Result<()>>>,
    stats: Arc<Stats>,
    audit: Arc<Audit>,
    /// `durable` mode: the journal's lock, held while the relay runs.
    _journal_lock: Option<JournalLock>,
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
    pub fn reload_tls(&self) -> Vec<(String, Result<(), TlsSetupError>)> {
        let outcomes: Vec<(String, Result<(), TlsSetupError>)> = self
            .live
            .current()
            .listeners
            .iter()
            .filter_map(|l| Some((l.name.clone(), l.tls.as_ref()?.reload())))
            .collect();
        self.stats
            .reloaded(outcomes.iter().all(|(_, outcome)| outcome.is_ok()));
        outcomes
    }

    /// Puts `new` in force without dropping a connection (see [`crate::config::reload`]):
    /// connections open now keep running, and each worker takes the new configuration before
    /// its next message or connection, so a message in flight finishes under the one it
    /// started with. Settings that need a restart keep their running values; they are
    /// returned, each as `key: …`, for the log.
    ///
    /// # Errors
    /// The changes that leave no consistent way to apply the rest; nothing is applied then.
    pub fn reload(&self, new: Config) -> Result<Vec<String>, Vec<String>> {
        let current = self.live.current();
        match crate::config::reload::plan(&current, new) {
            Ok(plan) => {
                self.live.replace(Arc::new(plan.config));
                self.stats.reloaded(true);
                Ok(plan.kept)
            }
            Err(refused) => {
                self.stats.reloaded(false);
                Err(refused)
            }
        }
    }

    /// Notes a reload that could not even start (a configuration file with problems), for the
    /// reload metrics.
    pub fn reload_failed(&self) {
        self.stats.reloaded(false);
    }

    /// Reopens the audit file, if there is one (after logrotate moved it; part of SIGHUP).
    pub fn reopen_audit(&self) {
        self.audit.reopen();
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

/// One worker as it starts: its sessions' shared state and its place among the workers.
struct Worker {
    id: usize,
    inbound: Rc<Inbound>,
    /// Workers still running; worker 0 keeps the `single` links alive until it is the last.
    workers_running: Arc<AtomicUsize>,
    /// Whether the `single` links' tasks run here (worker 0, when there are any).
    runs_single_links: bool,
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
    let audit = Arc::new(Audit::start(&config.audit)?);
    let duplicates = DuplicateWindows::for_config(&config);
    let (journal_lock, mut recovered) = open_journals(&config, workers, &duplicates, &stats)?;
    let config = Arc::new(config);
    let live = Arc::new(Live::new(config.clone()));
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(workers + 1);
    let mut metrics_addr = None;
    if let Some(addr) = config.metrics_addr {
        let listener = crate::metrics::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("metrics address {addr}: {e}")))?;
        metrics_addr = Some(listener.local_addr()?);
        let (stats, stop, serving) = (stats.clone(), shutdown.clone(), live.clone());
        let ready: crate::metrics::Readiness = {
            let (live, stats, stop) = (live.clone(), stats.clone(), stop.clone());
            Box::new(move || {
                let stopping = stop.load(Ordering::Relaxed);
                let config = live.current();
                crate::health::check(&config, &stats, stopping, &crate::health::tcp_probe)
            })
        };
        threads.push(
            std::thread::Builder::new()
                .name("mllp-relay-metrics".into())
                .spawn(move || {
                    crate::metrics::serve(listener, stats, serving, ready, stop);
                    Ok(())
                })?,
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
    let single = SingleLinks::new(&config, &stats);
    let workers_running = Arc::new(AtomicUsize::new(workers));
    let driver = resolve_driver(config.driver)?;
    for (id, sockets) in sockets.into_iter().enumerate() {
        let config = config.clone();
        let live = live.clone();
        let shutdown = shutdown.clone();
        let stats = stats.clone();
        let single = single.clone();
        let duplicates = duplicates.clone();
        let audit = audit.clone();
        let workers_running = workers_running.clone();
        let cpu = cpu_for_worker(id, &allowed);
        let journal = recovered.get_mut(id).and_then(Option::take);
        let thread = spawn_runtime(
            format!("mllp-relay-w{id}"),
            driver,
            cpu,
            move || async move {
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
                let custody = Custody {
                    local: config
                        .uses_ack_mode(AckMode::Local)
                        .then(|| Rc::new(LocalQueue::new(stats.clone()))),
                    durable,
                    duplicates,
                };
                let runs_single_links = id == 0 && single.any();
                let inbound = Rc::new(Inbound::new(
                    id, live, stats, audit, single, custody, shutdown,
                ));
                let worker = Worker {
                    id,
                    inbound,
                    workers_running,
                    runs_single_links,
                };
                run_worker(sockets, worker).await;
            },
        )?;
        threads.push(thread);
    }
    Ok(RelayHandle {
        live,
        listeners: bound,
        metrics_addr,
        shutdown,
        threads,
        stats,
        audit,
        _journal_lock: journal_lock,
    })
}

/// One worker's life: registers its listener sockets, starts the tasks that take messages out
/// of custody (and, on worker 0, the `single` links), accepts on every listener until
/// shutdown, then drains.
/// Warns of certificates about to expire at start and then once a day, for as long as the
/// relay runs (worker 0 does it; the task ends with its runtime).
async fn warn_of_expiring_certificates(inbound: Rc<Inbound>) {
    const DAY: Duration = Duration::from_secs(24 * 60 * 60);
    loop {
        let now = i64::try_from(crate::metrics::unix_ms() / 1000).unwrap_or(i64::MAX);
        for line in crate::health::expiring_certificates(&inbound.config(), now) {
            warn!("{line}");
        }
        monoio::time::sleep(DAY).await;
    }
}

async fn run_worker(sockets: Vec<Socket>, worker: Worker) {
    let Worker {
        id,
        inbound,
        workers_running,
        runs_single_links,
    } = worker;
    let mut listeners = Vec::with_capacity(sockets.len());
    for (socket, config) in sockets.into_iter().zip(&inbound.config().listeners) {
        match TcpListener::from_std(socket.into()) {
            Ok(listener) => listeners.push(listener),
            Err(e) => {
                error!(worker = id, listener = %config.name, error = %e, "cannot register the listener with the runtime");
                return;
            }
        }
    }
    let committer = inbound.custody.start(&inbound.delivery, &inbound.stats);
    if runs_single_links {
        inbound.delivery.get().spawn_single_links();
    }
    monoio::spawn(return_freed_memory(inbound.clone()));
    if id == 0 {
        monoio::spawn(warn_of_expiring_certificates(inbound.clone()));
    }
    let loops: Vec<monoio::task::JoinHandle<()>> = listeners
        .into_iter()
        .enumerate()
        .map(|(index, listener)| monoio::spawn(accept_loop(listener, index, inbound.clone())))
        .collect();
    Stats::bump(&inbound.stats.workers_accepting);
    for accepting in loops {
        accepting.await;
    }
    inbound
        .stats
        .workers_accepting
        .fetch_sub(1, Ordering::Relaxed);
    let grace = inbound.config().shutdown_grace;
    drain(&inbound).await;
    inbound.custody.stop(committer, grace).await;
    if runs_single_links {
        // The other workers' sessions may still wait for the single links, which run here.
        let deadline = Instant::now() + grace;
        while workers_running.load(Ordering::SeqCst) > 1 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    workers_running.fetch_sub(1, Ordering::SeqCst);
}

/// Until shutdown, hands the memory this worker freed back to the operating system on a slow
/// tick (see [`crate::memory`]): idle connections after a burst then cost what they hold, not
/// what the burst once needed.
async fn return_freed_memory(inbound: Rc<Inbound>) {
    while !inbound.sessions.shutting_down() {
        monoio::time::sleep(crate::memory::RETURN_PERIOD).await;
        crate::memory::return_freed_memory();
    }
}

/// Accepts on listener `index` until shutdown, running each admitted connection's session in
/// its own task, contained; the socket is closed when it returns.
async fn accept_loop(listener: TcpListener, index: usize, inbound: Rc<Inbound>) {
    while !inbound.sessions.shutting_down() {
        match accept_within(&listener, SHUTDOWN_POLL).await {
            Some(Ok((tcp, peer))) => {
                let Some(session) = accept::admit(tcp, peer, index, &inbound) else {
                    continue;
                };
                let stats = inbound.stats.clone();
                monoio::spawn(async move {
                    let peer = session.peer();
                    // Pinned in place: the session future (several KiB, most of an idle
                    // connection's memory) is stored once in this task, not moved into a second
                    // copy.
                    if contained(std::pin::pin!(session.run())).await.is_err() {
                        Stats::bump(&stats.session_panics);
                        error!(%peer, "a session panicked; only its connection was lost");
                    }
                });
            }
            Some(Err(e)) => {
                warn!(listener = %inbound.config().listeners[index].name, error = %e, "accept failed");
                // Out of file descriptors and the like: do not spin.
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
            None => {}
        }
    }
}

/// After accepting stops: cancel idle reads, then wait for sessions mid-message and for the
/// `local` queue to empty, up to the grace period.
async fn drain(inbound: &Inbound) {
    let deadline = Instant::now() + inbound.config().shutdown_grace;
    loop {
        inbound.sessions.cancel_idle();
        let open = inbound.sessions.open();
        if open == 0 && inbound.custody.is_idle() {
            return;
        }
        if Instant::now() >= deadline {
            warn!(
                open,
                queued = inbound.custody.queued(),
                "shutdown grace period over: closing with messages in flight"
            );
            return;
        }
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
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
