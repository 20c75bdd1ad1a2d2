//! A Jepsen-style harness for the relay as a queue (used by the `faults` tests).
//!
//! - [`Relay`]: the real `mllp-relay` binary as a child process, killed with SIGKILL for crash
//!   faults, its stdout and stderr kept in an [`OutputLog`] for diagnostics.
//! - The downstream is testkit's [`Receiver`] (the sink): it records every control id it
//!   receives *before* answering, answers AA (CA in enhanced mode) or what its NAK rule says,
//!   can be slowed down, killed (listener closed, every connection reset) and restarted on the
//!   same port, which stays reserved meanwhile.
//! - [`Workload`]: stop-and-wait senders, each with its own connection (re-established while
//!   the relay is down), each message with a unique MSH-10, the answer to each recorded.
//! - [`classify`]: every id sent against what the sink saw: acked and never delivered is
//!   LOST; delivered twice is duplicated; delivered but never sent is unexpected; delivered
//!   without a positive ACK (NAKed, or in flight at a crash) is recovered. [`Tally::report`]
//!   prints one table row per fault (and appends it to `$MLLP_FAULT_TABLE` when set).
//!
//! Everything runs on 127.0.0.1 with ephemeral ports, and every wait is bounded.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mllp::ack::{AckCode, parse_ack};
use mllp::frame::{Deframer, FramingConfig};
use mllp::hl7::Msh;
use testkit::hl7::{oru, oru_enhanced};
use testkit::receiver::{NakRule, Received, Receiver};
use testkit::{OutputLog, PATIENCE, Process, ReservedPort, TempDir, wait_until};

/// The relay binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_mllp-relay");

/// Longest a sender keeps trying to reconnect before it gives up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);
/// How often a sender tries to reconnect.
const RECONNECT_POLL: Duration = Duration::from_millis(10);

/// The relay's `--ack-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The receiver's own ACK; no journal. Acked ⇒ delivered holds trivially (every AA comes
    /// from the sink), which makes it the harness's own control experiment.
    #[expect(
        dead_code,
        reason = "the control experiment: set `faults::MODE` to it to run"
    )]
    Passthrough,
    /// AA/CA once the message is in the fdatasync'ed journal (`--journal DIR`).
    Durable,
}

impl Mode {
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Self::Passthrough => "passthrough",
            Self::Durable => "durable",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scratch directory and diagnostics
// ---------------------------------------------------------------------------------------------

/// One test's directory (journal, libfiu's control FIFOs), the relay's address (reserved for
/// the whole test, so the relay comes back on it after each crash and nobody else can take it
/// meanwhile) and the relay's output across its lives. The directory is removed when the test
/// passes; kept, with the tail of the relay's output printed, when it panics.
#[derive(Debug)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    dir: TempDir,
    relay_port: ReservedPort,
    pub(crate) log: Arc<OutputLog>,
    lives: AtomicUsize,
}

impl Scenario {
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            dir: TempDir::new(&format!("relay-durable-{name}")),
            relay_port: ReservedPort::new(),
            log: OutputLog::new(),
            lives: AtomicUsize::new(0),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The journal directory (created by the relay).
    pub(crate) fn journal(&self) -> PathBuf {
        self.dir.join("journal")
    }

    /// The relay's listen address, the same in every life.
    pub(crate) fn relay_addr(&self) -> SocketAddr {
        self.relay_port.addr()
    }

    /// Starts a relay with `opts`, its output going to this scenario's log.
    pub(crate) fn start_relay(&self, opts: &RelayOpts) -> Relay {
        let life = self.lives.fetch_add(1, Ordering::SeqCst);
        Relay::start(opts, &self.log, life)
    }

    /// What a failure message should carry: the relay's last lines and the journal's files.
    pub(crate) fn diagnostics(&self) -> String {
        format!(
            "--- relay output (last 60 lines) ---\n{}\n--- journal {} ---\n{}",
            self.log.tail(60),
            self.journal().display(),
            journal_listing(&self.journal())
        )
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("[{}] FAILED\n{}", self.name, self.diagnostics());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The relay process
// ---------------------------------------------------------------------------------------------

/// How to run the relay.
#[derive(Debug, Clone)]
pub(crate) struct RelayOpts {
    pub(crate) mode: Mode,
    /// `--listen`: a fixed port when the relay must come back on the same address.
    pub(crate) listen: SocketAddr,
    pub(crate) forward: SocketAddr,
    /// `--journal` (durable mode only).
    pub(crate) journal: PathBuf,
    pub(crate) workers: usize,
    /// `--driver`: auto, io-uring or epoll.
    pub(crate) driver: &'static str,
    pub(crate) retries: u32,
    pub(crate) ack_timeout: &'static str,
    /// `--duplicate-window` (durable mode only).
    pub(crate) duplicate_window: Option<&'static str>,
    /// A program and its arguments that run the relay (e.g. `fiu-run -x -f PREFIX`).
    pub(crate) wrapper: Vec<OsString>,
    /// The journal's `direct_io` and `segment_size` (durable mode): when either is not the
    /// default, the relay runs from a config file written next to the journal (the keys have
    /// no command-line flags).
    pub(crate) direct_io: bool,
    pub(crate) segment_size: Option<&'static str>,
}

impl RelayOpts {
    pub(crate) fn new(mode: Mode, listen: SocketAddr, forward: SocketAddr, journal: &Path) -> Self {
        Self {
            mode,
            listen,
            forward,
            journal: journal.to_path_buf(),
            workers: 2,
            driver: "auto",
            retries: 2,
            ack_timeout: "2s",
            duplicate_window: None,
            wrapper: Vec::new(),
            direct_io: true,
            segment_size: None,
        }
    }

    fn args(&self) -> Vec<OsString> {
        if self.mode == Mode::Durable && (!self.direct_io || self.segment_size.is_some()) {
            return self.config_file_args();
        }
        let mut args: Vec<OsString> = [
            "--listen".to_string(),
            self.listen.to_string(),
            "--forward".into(),
            self.forward.to_string(),
            "--ack-mode".into(),
            self.mode.flag().into(),
            "--workers".into(),
            self.workers.to_string(),
            "--no-pin".into(),
            "--driver".into(),
            self.driver.into(),
            "--retries".into(),
            self.retries.to_string(),
            "--ack-timeout".into(),
            self.ack_timeout.into(),
            "--connect-timeout".into(),
            "1s".into(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        if self.mode == Mode::Durable {
            args.push("--journal".into());
            args.push(self.journal.clone().into_os_string());
        }
        if let Some(window) = self.duplicate_window {
            args.push("--duplicate-window".into());
            args.push(window.into());
        }
        args
    }

    /// The same relay as [`args`](Self::args) describes, from a config file (written now).
    fn config_file_args(&self) -> Vec<OsString> {
        let window = self
            .duplicate_window
            .map(|w| format!("duplicate_window = \"{w}\"\n"))
            .unwrap_or_default();
        let segment = self
            .segment_size
            .map(|s| format!("segment_size = \"{s}\"\n"))
            .unwrap_or_default();
        let text = format!(
            "[[listener]]\nlisten = \"{listen}\"\nack_mode = \"durable\"\n{window}\n\
             [[downstream]]\nname = \"sink\"\naddress = \"{forward}\"\n\
             connect_timeout = \"1s\"\nack_timeout = \"{ack_timeout}\"\nretries = {retries}\n\n\
             [journal]\ndir = {journal:?}\ndirect_io = {direct_io}\n{segment}",
            direct_io = self.direct_io,
            listen = self.listen,
            forward = self.forward,
            ack_timeout = self.ack_timeout,
            retries = self.retries,
            journal = self.journal.display().to_string(),
        );
        let path = self.journal.with_extension("toml");
        fs::write(&path, text).expect("write the relay's config file");
        [
            OsString::from("--config"),
            path.into_os_string(),
            "--workers".into(),
            self.workers.to_string().into(),
            "--no-pin".into(),
            "--driver".into(),
            self.driver.into(),
        ]
        .into()
    }
}

/// A running relay; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub(crate) struct Relay {
    process: Process,
    addr: SocketAddr,
    life: usize,
    log: Arc<OutputLog>,
}

impl Relay {
    /// Starts the relay and waits (bounded) for its ready line.
    pub(crate) fn start(opts: &RelayOpts, log: &Arc<OutputLog>, life: usize) -> Self {
        let mut command = match opts.wrapper.split_first() {
            None => Command::new(BIN),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(BIN);
                command
            }
        };
        let args = opts.args();
        log.push(format!(
            "[life {life}] $ {} {BIN} {}",
            opts.wrapper
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        let process = Process::start_logged(command.args(&args), log, &format!("[life {life}]"));
        let ready = process.line_where(|line| line.starts_with("mllp-relay listening on "));
        let addr = ready
            .strip_prefix("mllp-relay listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in the ready line {ready:?}"));
        Self {
            process,
            addr,
            life,
            log: log.clone(),
        }
    }

    /// The address it listens on (from its ready line).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether the process is still running (it has not crashed or exited).
    pub(crate) fn alive(&mut self) -> bool {
        self.process.alive()
    }

    /// `kill -9`, and waits for the process to be gone (so its sockets and files are closed).
    pub(crate) fn kill(&mut self) {
        self.process.kill();
        self.log.push(format!(
            "[life {}] killed (SIGKILL): {:?}",
            self.life,
            self.process.try_status()
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// The senders
// ---------------------------------------------------------------------------------------------

/// The sequence number in an id made by [`Workload`] (`<tag><sender:02><seq:06>`).
pub(crate) fn seq_of(id: &str) -> Option<u64> {
    id.len()
        .checked_sub(6)
        .and_then(|start| id.get(start..))
        .and_then(|digits| digits.parse().ok())
}

/// What a sender heard back for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// AA or CA.
    Positive(AckCode),
    /// AE, AR, CE or CR.
    Negative(AckCode),
    /// Nothing: the connection failed or the answer timed out (the message may or may not
    /// have reached the relay).
    Nothing,
}

/// One message sent.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub(crate) id: String,
    pub(crate) answer: Answer,
    /// Just before its first byte was written.
    pub(crate) sent: Instant,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkloadOpts {
    /// A prefix for the ids, unique within the test (keep it to 4 characters: ids stay within
    /// MSH-10's 20).
    pub(crate) tag: &'static str,
    pub(crate) senders: usize,
    /// Messages per sender, or until [`Workload::finish`].
    pub(crate) per_sender: Option<u64>,
    /// Longest a sender waits for an answer before it gives the connection up.
    pub(crate) answer_timeout: Duration,
    /// After each positive ACK, send the same message again on a new connection, as a sender
    /// that missed the ACK would (the answers are in [`History::resends`]).
    pub(crate) resend_acked: bool,
}

impl WorkloadOpts {
    pub(crate) fn new(tag: &'static str, senders: usize) -> Self {
        Self {
            tag,
            senders,
            per_sender: None,
            answer_timeout: Duration::from_secs(10),
            resend_acked: false,
        }
    }
}

/// Counters over every answer so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) positive: u64,
    pub(crate) negative: u64,
    pub(crate) nothing: u64,
}

impl Counts {
    pub(crate) fn answered(&self) -> u64 {
        self.positive + self.negative
    }
}

struct WorkShared {
    stop: AtomicBool,
    target: SocketAddr,
    counts: Mutex<Counts>,
    attempts: Mutex<Vec<Attempt>>,
    /// ACKs whose MSA-2 was not the message's MSH-10: a protocol violation.
    mismatched: Mutex<Vec<String>>,
    resends: Mutex<Vec<(String, Answer)>>,
    gave_up: AtomicUsize,
}

/// Stop-and-wait senders, each on its own connection.
pub(crate) struct Workload {
    shared: Arc<WorkShared>,
    threads: Vec<JoinHandle<()>>,
}

/// Every message the senders sent, with its answer.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) mismatched: Vec<String>,
    /// With [`WorkloadOpts::resend_acked`]: each resent id and the answer to its resend.
    pub(crate) resends: Vec<(String, Answer)>,
}

impl History {
    /// The ids that got AA or CA.
    pub(crate) fn acked(&self) -> Vec<String> {
        self.attempts
            .iter()
            .filter(|a| matches!(a.answer, Answer::Positive(_)))
            .map(|a| a.id.clone())
            .collect()
    }
}

impl Workload {
    pub(crate) fn start(target: SocketAddr, opts: WorkloadOpts) -> Self {
        let shared = Arc::new(WorkShared {
            stop: AtomicBool::new(false),
            target,
            counts: Mutex::new(Counts::default()),
            attempts: Mutex::new(Vec::new()),
            mismatched: Mutex::new(Vec::new()),
            resends: Mutex::new(Vec::new()),
            gave_up: AtomicUsize::new(0),
        });
        let threads = (0..opts.senders)
            .map(|index| {
                let shared = shared.clone();
                thread::spawn(move || send_loop(&shared, index, opts))
            })
            .collect();
        Self { shared, threads }
    }

    pub(crate) fn counts(&self) -> Counts {
        *self.shared.counts.lock().unwrap()
    }

    /// Senders that could not reconnect within [`CONNECT_PATIENCE`] (and stopped).
    fn gave_up(&self) -> usize {
        self.shared.gave_up.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `more` further messages got AA/CA; panics with `scenario`'s
    /// diagnostics if they do not come: the relay is making no progress.
    pub(crate) fn wait_for_acks(&self, more: u64, patience: Duration, scenario: &Scenario) {
        let goal = self.counts().positive + more;
        let reached = wait_until(patience, || self.counts().positive >= goal);
        assert!(
            reached,
            "[{}] no progress: {:?} after {patience:?}, wanted {goal} positive ACKs ({} \
             sender(s) gave up reconnecting)\n{}",
            scenario.name,
            self.counts(),
            self.gave_up(),
            scenario.diagnostics()
        );
    }

    /// Waits (bounded) until `more` further messages got any answer (positive or negative).
    pub(crate) fn wait_for_answers(&self, more: u64, patience: Duration, scenario: &Scenario) {
        let goal = self.counts().answered() + more;
        let reached = wait_until(patience, || self.counts().answered() >= goal);
        assert!(
            reached,
            "[{}] no answers: {:?} after {patience:?}, wanted {goal} ({} sender(s) gave up \
             reconnecting)\n{}",
            scenario.name,
            self.counts(),
            self.gave_up(),
            scenario.diagnostics()
        );
    }

    /// Whether every sender has finished its quota (or given up).
    pub(crate) fn done(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Stops the senders (each finishes its current message, bounded by its answer timeout)
    /// and returns what happened.
    pub(crate) fn finish(self) -> History {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().expect("a sender panicked");
        }
        History {
            attempts: self.shared.attempts.lock().unwrap().clone(),
            mismatched: self.shared.mismatched.lock().unwrap().clone(),
            resends: self.shared.resends.lock().unwrap().clone(),
        }
    }
}

fn send_loop(shared: &WorkShared, index: usize, opts: WorkloadOpts) {
    // Every other sender asks for enhanced mode, so CA/CE are exercised as well as AA/AE.
    let enhanced = index % 2 == 1;
    let mut conn: Option<Connection> = None;
    let mut seq: u64 = 0;
    while !shared.stop.load(Ordering::SeqCst) && opts.per_sender.is_none_or(|n| seq < n) {
        let mut connection = match conn.take() {
            Some(c) => c,
            None => match connect(shared) {
                Some(stream) => Connection::new(stream),
                None => return,
            },
        };
        let id = format!("{}{index:02}{seq:06}", opts.tag);
        seq += 1;
        let sent = Instant::now();
        let payload = if enhanced {
            oru_enhanced(&id)
        } else {
            oru(&id)
        };
        let answer = ask(shared, &mut connection, &id, &payload, opts.answer_timeout);
        if answer != Answer::Nothing {
            conn = Some(connection);
        }
        if opts.resend_acked
            && matches!(answer, Answer::Positive(_))
            && let Some(stream) = connect(shared)
        {
            // A sender that missed the ACK reconnects and sends the message again.
            let mut fresh = Connection::new(stream);
            let again = ask(shared, &mut fresh, &id, &payload, opts.answer_timeout);
            shared.resends.lock().unwrap().push((id.clone(), again));
            conn = (again != Answer::Nothing).then_some(fresh);
        }
        {
            let mut counts = shared.counts.lock().unwrap();
            match answer {
                Answer::Positive(_) => counts.positive += 1,
                Answer::Negative(_) => counts.negative += 1,
                Answer::Nothing => counts.nothing += 1,
            }
        }
        shared
            .attempts
            .lock()
            .unwrap()
            .push(Attempt { id, answer, sent });
    }
}

/// Sends `payload` (whose MSH-10 is `id`) on `connection` and classifies the answer; an ACK
/// for another id is recorded as a protocol violation and counts as no answer.
fn ask(
    shared: &WorkShared,
    connection: &mut Connection,
    id: &str,
    payload: &[u8],
    timeout: Duration,
) -> Answer {
    match connection.exchange(payload, timeout) {
        Ok((code, acknowledged)) if acknowledged == id => {
            if code.is_accept() {
                Answer::Positive(code)
            } else {
                Answer::Negative(code)
            }
        }
        Ok((code, acknowledged)) => {
            shared
                .mismatched
                .lock()
                .unwrap()
                .push(format!("{id} answered {code} for {acknowledged}"));
            Answer::Nothing
        }
        Err(_) => Answer::Nothing,
    }
}

/// Connects to the target, retrying while it is down (bounded).
fn connect(shared: &WorkShared) -> Option<TcpStream> {
    let deadline = Instant::now() + CONNECT_PATIENCE;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        let target = shared.target;
        if let Ok(stream) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            // While nothing listens on an ephemeral port, the kernel may pick that very port
            // as our source port and connect the socket to itself (TCP simultaneous open).
            // Such a socket would also keep the relay from binding its port again.
            if stream.local_addr().ok() != stream.peer_addr().ok() {
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
        }
        if Instant::now() >= deadline {
            shared.gave_up.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        thread::sleep(RECONNECT_POLL);
    }
}

struct Connection {
    stream: TcpStream,
    deframer: Deframer,
    buf: Vec<u8>,
}

impl Connection {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            deframer: Deframer::new(FramingConfig::MLLP),
            buf: Vec::new(),
        }
    }

    /// Sends one framed message and reads one ACK: its code and MSA-2.
    fn exchange(
        &mut self,
        payload: &[u8],
        timeout: Duration,
    ) -> std::io::Result<(AckCode, String)> {
        let mut framed = Vec::new();
        FramingConfig::MLLP
            .encode(payload, &mut framed)
            .map_err(std::io::Error::other)?;
        self.stream.write_all(&framed)?;
        self.stream.set_read_timeout(Some(timeout))?;
        let mut chunk = [0u8; 4096];
        loop {
            let frame = self
                .deframer
                .decode(&self.buf)
                .map_err(std::io::Error::other)?;
            if let Some(frame) = frame {
                let parsed = {
                    let ack = parse_ack(frame.payload(&self.buf)).map_err(std::io::Error::other)?;
                    (
                        ack.code,
                        String::from_utf8_lossy(ack.acknowledged_id).into_owned(),
                    )
                };
                self.deframer.compact(&mut self.buf);
                return Ok(parsed);
            }
            self.deframer.compact(&mut self.buf);
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Settling and classifying
// ---------------------------------------------------------------------------------------------

/// Waits (bounded by `patience`) until the sink has every id that got AA/CA, then until it
/// has been quiet for a moment (redeliveries of NAKed or in-flight messages have landed, so
/// the counts are stable). Returns whether every acked id arrived.
pub(crate) fn settle(sink: &Receiver, history: &History, patience: Duration) -> bool {
    let acked = history.acked();
    let all = wait_until(patience, || sink.missing(&acked) == 0);
    let quiet_for = Duration::from_millis(500);
    let mut last = sink.frames();
    let mut since = Instant::now();
    wait_until(Duration::from_secs(5), || {
        let now = sink.frames();
        if now != last {
            last = now;
            since = Instant::now();
        }
        since.elapsed() >= quiet_for
    });
    all
}

/// One fault's outcome.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    pub(crate) fault: String,
    pub(crate) mode: &'static str,
    /// Messages sent (one unique id each).
    pub(crate) sent: usize,
    /// Got AA or CA.
    pub(crate) acked: usize,
    /// Got AE, AR, CE or CR.
    pub(crate) naked: usize,
    /// Got nothing (connection dropped, timeout).
    pub(crate) unanswered: usize,
    /// Sent ids the sink saw at least once.
    pub(crate) delivered: usize,
    /// Acked, never delivered.
    pub(crate) lost: usize,
    /// Delivered more than once.
    pub(crate) duplicated: usize,
    /// Deliveries beyond the first, over all ids.
    pub(crate) extra_copies: u64,
    /// The most times one id was delivered.
    pub(crate) max_copies: u32,
    /// Delivered, never sent (or unreadable).
    pub(crate) unexpected: usize,
    /// Delivered without a positive ACK to the sender.
    pub(crate) recovered: usize,
    /// Delivered ids the sink answered AE/AR (CE/CR): final (a durable relay dead-letters them).
    pub(crate) refused: usize,
    /// ACKs with the wrong MSA-2.
    pub(crate) mismatched: usize,
    pub(crate) lost_ids: Vec<String>,
    pub(crate) unexpected_ids: Vec<String>,
    pub(crate) note: String,
}

/// Classifies every id sent against what the sink received.
pub(crate) fn classify(
    fault: &str,
    mode: Mode,
    history: &History,
    received: &Received,
    nak: Option<&NakRule>,
) -> Tally {
    let mut tally = Tally {
        fault: fault.to_string(),
        mode: mode.flag(),
        mismatched: history.mismatched.len(),
        ..Tally::default()
    };
    let mut sent: HashMap<&str, Answer> = HashMap::new();
    for attempt in &history.attempts {
        let previous = sent.insert(&attempt.id, attempt.answer);
        assert!(previous.is_none(), "id {} sent twice", attempt.id);
    }
    tally.sent = sent.len();
    for (id, answer) in &sent {
        let copies = received.counts.get(*id).copied().unwrap_or(0);
        let acked = matches!(answer, Answer::Positive(_));
        match answer {
            Answer::Positive(_) => tally.acked += 1,
            Answer::Negative(_) => tally.naked += 1,
            Answer::Nothing => tally.unanswered += 1,
        }
        if copies == 0 {
            if acked {
                tally.lost += 1;
                tally.lost_ids.push((*id).to_string());
            }
            continue;
        }
        tally.delivered += 1;
        tally.max_copies = tally.max_copies.max(copies);
        if copies > 1 {
            tally.duplicated += 1;
            tally.extra_copies += u64::from(copies - 1);
        }
        if !acked {
            tally.recovered += 1;
        }
        if nak.is_some_and(|rule| rule(id).is_some()) {
            tally.refused += 1;
        }
    }
    for id in received.counts.keys() {
        if !sent.contains_key(id.as_str()) {
            tally.unexpected += 1;
            tally.unexpected_ids.push(id.clone());
        }
    }
    tally.unexpected += usize::try_from(received.unparseable).unwrap_or(usize::MAX);
    tally.lost_ids.sort();
    tally.unexpected_ids.sort();
    tally
}

const TABLE_HEADER: &str = "| fault | mode | sent | acked | delivered | lost | duplicated | unexpected | recovered | NAKed | unanswered | refused downstream | extra copies | max copies |\n\
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

impl Tally {
    fn row(&self) -> String {
        let fault = if self.note.is_empty() {
            self.fault.clone()
        } else {
            format!("{} ({})", self.fault, self.note)
        };
        format!(
            "| {fault} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.mode,
            self.sent,
            self.acked,
            self.delivered,
            self.lost,
            self.duplicated,
            self.unexpected,
            self.recovered,
            self.naked,
            self.unanswered,
            self.refused,
            self.extra_copies,
            self.max_copies
        )
    }

    /// Prints the row (visible with `--nocapture`) and appends it to `$MLLP_FAULT_TABLE`.
    pub(crate) fn report(&self) {
        let row = self.row();
        println!("{TABLE_HEADER}\n{row}");
        if let Some(path) = std::env::var_os("MLLP_FAULT_TABLE") {
            static FILE: Mutex<()> = Mutex::new(());
            let _guard = FILE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let fresh = fs::metadata(&path).map_or(true, |m| m.len() == 0);
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("open $MLLP_FAULT_TABLE");
            if fresh {
                writeln!(file, "{TABLE_HEADER}").unwrap();
            }
            writeln!(file, "{row}").unwrap();
        }
    }

    /// The invariants every fault must keep: nothing acked is lost, nothing delivered was not
    /// sent, every ACK names its message; with `max_duplicated`, a bound on duplicated ids.
    pub(crate) fn assert_safe(&self, max_duplicated: Option<usize>, scenario: &Scenario) {
        let first = |ids: &[String]| ids.iter().take(20).cloned().collect::<Vec<_>>().join(" ");
        assert_eq!(
            self.lost,
            0,
            "[{}] {} acked message(s) LOST, e.g. {}\n{}",
            self.fault,
            self.lost,
            first(&self.lost_ids),
            scenario.diagnostics()
        );
        assert_eq!(
            self.unexpected,
            0,
            "[{}] {} unexpected delivery(ies) (never sent or unreadable), e.g. {}\n{}",
            self.fault,
            self.unexpected,
            first(&self.unexpected_ids),
            scenario.diagnostics()
        );
        assert_eq!(
            self.mismatched, 0,
            "[{}] ACKs with a wrong MSA-2",
            self.fault
        );
        if let Some(bound) = max_duplicated {
            assert!(
                self.duplicated <= bound,
                "[{}] {} duplicated ids, more than the bound {bound}\n{}",
                self.fault,
                self.duplicated,
                scenario.diagnostics()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The journal on disk
// ---------------------------------------------------------------------------------------------

/// Every file under `dir`, with its size, for failure messages.
pub(crate) fn journal_listing(dir: &Path) -> String {
    fn walk(dir: &Path, out: &mut String) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(fs::DirEntry::path);
        for entry in entries {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                let len = entry.metadata().map_or(0, |m| m.len());
                out.push_str(&format!("{} {len}\n", path.display()));
            }
        }
    }
    let mut out = String::new();
    walk(dir, &mut out);
    if out.is_empty() {
        out.push_str("(no files)\n");
    }
    out
}

/// The newest segment (`<20-digit first sequence number>.log`, the greatest name) of every
/// `worker-<i>` directory of the journal.
pub(crate) fn newest_segments(journal: &Path) -> Vec<PathBuf> {
    let Ok(workers) = fs::read_dir(journal) else {
        return Vec::new();
    };
    let mut newest = Vec::new();
    for worker in workers.flatten() {
        let name = worker.file_name();
        if !name.to_string_lossy().starts_with("worker-") || !worker.path().is_dir() {
            continue;
        }
        let Ok(segments) = fs::read_dir(worker.path()) else {
            continue;
        };
        let last = segments
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .max();
        newest.extend(last);
    }
    newest.sort();
    newest
}

/// What a crash mid-write leaves after the last complete record.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tear {
    /// Bytes of noise.
    Noise(usize),
    /// Zeros: a file extended whose data never reached the disk (common after a power cut).
    Zeros(usize),
    /// The first bytes of a copy of the segment's last complete record: a header cut short.
    PrefixOfLast(usize),
    /// A whole copy of the segment's last complete message record with its MSH-10 changed to
    /// an id never sent: the right length, the wrong checksum. Delivering it would show up as
    /// an unexpected id.
    FlippedLast,
}

/// A torn record appended to a segment: where, and what.
#[derive(Debug, Clone)]
pub(crate) struct Torn {
    pub(crate) segment: PathBuf,
    pub(crate) at: usize,
    pub(crate) tail: Vec<u8>,
}

impl Torn {
    /// Whether the torn bytes are still where they were put (recovery did not cut them off).
    /// A segment that is gone has no tail left either.
    pub(crate) fn still_there(&self) -> bool {
        fs::read(&self.segment).is_ok_and(|bytes| {
            bytes
                .get(self.at..)
                .is_some_and(|rest| rest.starts_with(&self.tail))
        })
    }
}

/// The byte ranges of the complete records at the start of a segment, read with the only
/// part of the journal's format the harness relies on (relay/src/journal/record.rs): a 32-byte
/// header whose bytes 4..8 hold the payload length, little-endian.
fn record_spans(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    const HEADER: usize = 32;
    let mut spans = Vec::new();
    let mut at = 0;
    while let Some(len) = bytes.get(at + 4..at + 8) {
        let len = u32::from_le_bytes(len.try_into().unwrap());
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| (at + HEADER).checked_add(len))
            .filter(|&end| end <= bytes.len());
        let Some(end) = end else { break };
        spans.push(at..end);
        at = end;
    }
    spans
}

/// Appends a torn record to `segment` (noise instead when it holds no complete record).
pub(crate) fn tear(segment: &Path, kind: Tear, seed: u64) -> Torn {
    let existing = fs::read(segment).expect("read the segment");
    let mut state = seed | 1;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                // xorshift64: deterministic noise without a dependency.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    };
    let spans = record_spans(&existing);
    let last = spans.last().map(|span| &existing[span.clone()]);
    // The last record that carries a message (delivered marks have no payload), and where its
    // MSH-10 sits in it.
    let last_message = spans.iter().rev().find_map(|span| {
        let record = &existing[span.clone()];
        let payload = record.get(32..)?;
        let id = Msh::parse(payload).ok()?.control_id();
        let at = payload.windows(id.len()).position(|w| w == id)?;
        (!id.is_empty()).then_some((record, 32 + at + id.len() - 1))
    });
    let tail: Vec<u8> = match (kind, last, last_message) {
        (Tear::Noise(n), _, _) => noise(n),
        (Tear::Zeros(n), _, _) => vec![0; n],
        (Tear::PrefixOfLast(n), Some(last), _) => last[..n.min(last.len() - 1)].to_vec(),
        (Tear::FlippedLast, _, Some((record, id_end))) => {
            let mut copy = record.to_vec();
            // Ids end in digits: `X` makes one that was never sent.
            copy[id_end] = b'X';
            copy
        }
        (Tear::PrefixOfLast(_), None, _) | (Tear::FlippedLast, _, None) => noise(40),
    };
    let mut file = OpenOptions::new()
        .append(true)
        .open(segment)
        .expect("open the segment to append");
    file.write_all(&tail).expect("append the torn record");
    file.sync_all().expect("sync the torn segment");
    Torn {
        segment: segment.to_path_buf(),
        at: existing.len(),
        tail,
    }
}

/// How many of `ids` appear in the journal's files outside the `worker-*` segments (where a
/// dead-letter file would be), for the report; the file's format is the relay's business.
pub(crate) fn found_outside_segments(journal: &Path, ids: &[String]) -> usize {
    fn collect(dir: &Path, top: bool, out: &mut Vec<u8>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let worker = entry.file_name().to_string_lossy().starts_with("worker-");
            if path.is_dir() {
                if !(top && worker) {
                    collect(&path, false, out);
                }
            } else if let Ok(bytes) = fs::read(&path) {
                out.extend_from_slice(&bytes);
                out.push(b'\n');
            }
        }
    }
    let mut all = Vec::new();
    collect(journal, true, &mut all);
    ids.iter()
        .filter(|id| {
            let needle = id.as_bytes();
            all.windows(needle.len()).any(|w| w == needle)
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// libfiu (fault injection into libc calls)
// ---------------------------------------------------------------------------------------------

/// `fiu-run` and `fiu-ctrl` (Debian package fiu-utils).
#[derive(Debug)]
pub(crate) struct Fiu {
    run: PathBuf,
    ctrl: PathBuf,
}

impl Fiu {
    /// The tools from `PATH`. Without them: `None` and a line saying the test is skipped, or a
    /// panic when `MLLP_FAULTS_REQUIRED=1` (CI).
    pub(crate) fn find(test: &str) -> Option<Self> {
        let find = |name: &str| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        };
        let preload = Path::new("/usr/lib/fiu/fiu_posix_preload.so");
        match (find("fiu-run"), find("fiu-ctrl")) {
            (Some(run), Some(ctrl)) if preload.is_file() => Some(Self { run, ctrl }),
            _ => {
                let required = std::env::var("MLLP_FAULTS_REQUIRED").is_ok_and(|v| v == "1");
                assert!(
                    !required,
                    "{test}: MLLP_FAULTS_REQUIRED=1 but fiu-run/fiu-ctrl (and \
                     {}) are not installed (apt-get install fiu-utils)",
                    preload.display()
                );
                println!(
                    "{test}: SKIPPED: libfiu's fiu-run/fiu-ctrl are not installed \
                     (apt-get install fiu-utils; MLLP_FAULTS_REQUIRED=1 makes this a failure)"
                );
                None
            }
        }
    }

    /// The wrapper that runs the relay with libfiu's POSIX preload library, remote-controlled
    /// through FIFOs at `<ctrl_prefix>-<pid>.{in,out}`.
    pub(crate) fn wrapper(&self, ctrl_prefix: &Path) -> Vec<OsString> {
        vec![
            self.run.clone().into_os_string(),
            "-x".into(),
            "-f".into(),
            ctrl_prefix.as_os_str().to_owned(),
        ]
    }

    /// Sends one remote-control command (e.g. `enable name=posix/io/sync/*`) to `pid`.
    pub(crate) fn ctrl(&self, ctrl_prefix: &Path, pid: u32, command: &str) {
        let output = testkit::run(
            Command::new(&self.ctrl)
                .arg("-f")
                .arg(ctrl_prefix)
                .arg("-c")
                .arg(command)
                .arg(pid.to_string()),
            PATIENCE,
        );
        // fiu-ctrl exits 0 even on failure; it says so on stdout.
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && said.trim().is_empty(),
            "fiu-ctrl -c '{command}' {pid} failed: {:?} {said}",
            output.status
        );
    }
}
