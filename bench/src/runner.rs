//! Running a scenario: for each round, each phase, each system, start a fresh sink and system
//! under test, drive them with `mllp-loadgen`, and measure.
//!
//! Placement follows the performance study: the system under test alone on its CPUs, the load
//! generator (and, behind a relay, the sink) on the others, SCHED_IDLE spinners keeping every
//! CPU awake. Each run is self-contained (fresh processes, so no run inherits another's
//! connections or memory) and bounded in time; a system that does not start, or a run with
//! errors, becomes a recorded failure rather than a missing line.

use crate::peers::{self, PeerKind, PeerTls};
use crate::pki::{self, PkiFiles};
use crate::process::{self, CpuSet, MachineCpu, Managed, Memory};
use crate::scenario::{Load, Phase, Rate, Scenario};
use crate::system::System;
use anyhow::{Context, bail};
use loadgen::stats::RunStats;
use rustix::process::Signal;
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a system may take to print its address or accept a connection.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long held connections may take to open (1,000 TLS handshakes on one core).
const HOLD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopped process may take to drain and exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long held connections sit idle before a memory reading. Idle connections in the field
/// sit for minutes; a reading taken sooner counts memory a system keeps only for a connection
/// that just spoke (mllp-relay gives a connection's buffers back after 1 s of quiet, and its
/// allocator returns freed pages to the OS a second or two later). The same for every system.
const MEMORY_SETTLE: Duration = Duration::from_secs(4);

/// Numbers the peers' per-run directories.
static PEER_DIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The programs the benchmark drives.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `mllp-relay`.
    pub relay: PathBuf,
    /// `mllp-loadgen` (send, sink, hold).
    pub loadgen: PathBuf,
    /// `taskset`, for pinning; without it nothing is pinned (and the report says so).
    pub taskset: Option<PathBuf>,
    /// `chrt`, for the SCHED_IDLE spinners.
    pub chrt: Option<PathBuf>,
    /// This program, re-run as a spinner.
    pub myself: PathBuf,
    /// The peers found on this machine, with their versions.
    pub peers: Vec<(PeerKind, PathBuf, String)>,
}

impl Tools {
    /// Finds the relay and the load generator next to this binary (building them with cargo
    /// first when this binary runs from a workspace checkout), and the optional helpers.
    pub fn locate(build: bool, say: &mut dyn FnMut(&str)) -> anyhow::Result<Self> {
        let myself = std::env::current_exe().context("cannot find this program's path")?;
        let dir = myself
            .parent()
            .context("this program's path has no directory")?
            .to_path_buf();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .filter(|w| w.join("Cargo.lock").is_file() && myself.starts_with(w));
        let relay = dir.join("mllp-relay");
        let loadgen = dir.join("mllp-loadgen");
        if build && let Some(workspace) = &workspace {
            // A release `mllp-bench` sits in target/release next to the others; rebuilding is a
            // no-op when they are fresh, and measuring a stale relay would be worse than slow.
            let profile = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("release");
            say(&format!(
                "building mllp-relay and mllp-loadgen ({profile}) with cargo…"
            ));
            let mut cargo = std::process::Command::new(
                std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            );
            cargo.current_dir(workspace).args([
                "build", "--quiet", "--locked", "-p", "relay", "-p", "loadgen", "--bins",
            ]);
            if profile == "release" {
                cargo.arg("--release");
            } else if profile != "debug" {
                cargo.args(["--profile", profile]);
            }
            let status = cargo
                .status()
                .context("cannot run cargo to build the binaries")?;
            if !status.success() {
                bail!("cargo could not build mllp-relay and mllp-loadgen ({status})");
            }
        }
        for binary in [&relay, &loadgen] {
            if !binary.is_file() {
                bail!(
                    "{} is missing; build it with: cargo build --release -p relay -p loadgen",
                    binary.display()
                );
            }
        }
        let peers = PeerKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let binary = kind.find()?;
                let version = kind
                    .version(&binary)
                    .unwrap_or_else(|| "version unknown".to_owned());
                Some((kind, binary, version))
            })
            .collect();
        Ok(Self {
            relay,
            loadgen,
            taskset: process::find_program("taskset"),
            chrt: process::find_program("chrt"),
            myself,
            peers,
        })
    }

    fn peer(&self, kind: PeerKind) -> Option<&Path> {
        self.peers
            .iter()
            .find(|(k, _, _)| *k == kind)
            .map(|(_, path, _)| path.as_path())
    }
}

/// Where things run.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The system under test's CPUs (`None`: not pinned).
    pub sut: Option<CpuSet>,
    /// The load generator's and (behind a relay) the sink's CPUs.
    pub load: Option<CpuSet>,
    /// SCHED_IDLE spinners on every pinned CPU.
    pub spinners: bool,
    /// Why pinning or spinners are off, if they are.
    pub notes: Vec<String>,
}

impl Placement {
    /// Pins as the scenario says when the machine has those CPUs and `taskset`; otherwise
    /// runs unpinned and notes why.
    pub fn choose(scenario: &Scenario, tools: &Tools) -> anyhow::Result<Self> {
        let sut = CpuSet::parse(&scenario.sut_cpus).context("sut_cpus")?;
        let load = CpuSet::parse(&scenario.load_cpus).context("load_cpus")?;
        let mut notes = Vec::new();
        let allowed = process::allowed_cpus();
        let fits = |set: &CpuSet| {
            allowed
                .as_ref()
                .is_some_and(|a| set.cpus().iter().all(|c| a.cpus().contains(c)))
        };
        let pinned = if tools.taskset.is_none() {
            notes.push("not pinned: taskset (util-linux) is not installed".to_owned());
            false
        } else if !fits(&sut) || !fits(&load) {
            notes.push(format!(
                "not pinned: CPUs {sut} and {load} are not both available here (allowed: {})",
                allowed.map_or_else(|| "unknown".to_owned(), |a| a.to_string())
            ));
            false
        } else {
            if sut.cpus().iter().any(|c| load.cpus().contains(c)) {
                notes.push(format!(
                    "the system under test (CPUs {sut}) shares CPUs with the load (CPUs {load})"
                ));
            }
            true
        };
        let spinners = scenario.spinners && pinned && tools.chrt.is_some();
        if scenario.spinners && pinned && tools.chrt.is_none() {
            notes.push("no spinners: chrt (util-linux) is not installed".to_owned());
        }
        Ok(Self {
            sut: pinned.then_some(sut),
            load: pinned.then_some(load),
            spinners,
            notes,
        })
    }

    fn sut_threads(&self) -> usize {
        self.sut.as_ref().map_or(1, CpuSet::len)
    }

    fn load_threads(&self) -> usize {
        self.load.as_ref().map_or(1, CpuSet::len)
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        let mut text = match (&self.sut, &self.load) {
            (Some(sut), Some(load)) => format!(
                "system under test on CPU {sut}; load generator (and the sink behind a relay) on CPU {load}"
            ),
            _ => "nothing pinned".to_owned(),
        };
        text.push_str(if self.spinners {
            "; SCHED_IDLE spinners on those CPUs"
        } else {
            "; no spinners"
        });
        text
    }
}

/// What one (phase, system, round) gave.
#[derive(Debug)]
pub struct RunRecord {
    /// The phase's name.
    pub phase: String,
    /// The system.
    pub system: System,
    /// 1-based round.
    pub round: u32,
    /// The measurement, or why there is none.
    pub outcome: Outcome,
}

/// The result of a run.
#[derive(Debug)]
pub enum Outcome {
    /// A closed- or open-loop load run.
    Load(Box<LoadResult>),
    /// Idle connections held.
    Hold(HoldResult),
    /// The run could not be made (a system did not start, the load generator failed…).
    Failed(String),
    /// The run was not attempted, and why.
    Skipped(String),
}

/// Measurements of a load run.
#[derive(Debug)]
pub struct LoadResult {
    /// The load generator's result (its JSON).
    pub stats: RunStats,
    /// Open loop: the rate asked for.
    pub target_rate: Option<f64>,
    /// CPU seconds of the system under test's process tree over the load generator's life.
    pub sut_cpu_s: f64,
    /// The kernel's part of `sut_cpu_s` (system time).
    pub sut_system_s: f64,
    /// Wall seconds of that window.
    pub wall_s: f64,
    /// The sink's counts (every message that went through the system under test).
    pub sink: SinkCounts,
    /// The system under test's memory at the end of the load.
    pub sut_memory: Memory,
    /// CPU seconds of the load generator process.
    pub loadgen_cpu_s: f64,
    /// Other load on the machine during the window, in cores: busy time that was neither
    /// ours (system under test, sink, load generator, spinners) nor idle.
    pub foreign_cores: f64,
    /// Time the hypervisor gave this VM's vCPUs to someone else, in cores.
    pub steal_cores: f64,
    /// `durable` mode: what the relay's journal held when the run ended.
    pub custody: Option<Custody>,
}

/// The relay's journal at the end of a `durable` run (from its metrics), after waiting for the
/// queue to drain (bounded).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Custody {
    /// Messages still in the journal, not yet delivered (they would be after the run).
    pub queued: u64,
    /// Messages the receiver refused (kept as dead letters).
    pub dead_letters: u64,
    /// Journal commits (fdatasyncs).
    pub commits: u64,
    /// Messages committed (the sum of the commit batch sizes).
    pub committed: u64,
}

impl Custody {
    /// Mean messages per commit (per fdatasync).
    pub fn mean_batch(&self) -> Option<f64> {
        (self.commits > 0).then(|| self.committed as f64 / self.commits as f64)
    }

    /// Reads the journal's counters from the relay's Prometheus text.
    pub fn parse(metrics: &str) -> Option<Self> {
        // Counters and gauges are integers; Prometheus writes them without a fraction.
        let value = |name: &str| {
            metrics.lines().find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse::<u64>().ok())?
            })
        };
        Some(Self {
            queued: value("mllp_relay_journal_messages")?,
            dead_letters: value("mllp_relay_dead_letters_total")?,
            commits: value("mllp_relay_journal_commits_total")?,
            committed: value("mllp_relay_journal_batch_messages_sum")?,
        })
    }
}

impl LoadResult {
    /// CPU microseconds of the system under test per message through it.
    /// In `durable` mode, per message taken in (the sink may still be far behind).
    pub fn sut_us_per_msg(&self) -> Option<f64> {
        self.per_message_us(self.sut_cpu_s)
    }

    /// The kernel's part of [`Self::sut_us_per_msg`].
    pub fn sut_kernel_us_per_msg(&self) -> Option<f64> {
        self.per_message_us(self.sut_system_s)
    }

    fn per_message_us(&self, cpu_s: f64) -> Option<f64> {
        let messages = if self.custody.is_some() {
            self.written()
        } else {
            self.sink.received
        };
        (messages > 0).then(|| cpu_s * 1e6 / messages as f64)
    }

    /// Messages the load generator wrote, warm-up included.
    pub fn written(&self) -> u64 {
        self.stats.sent + self.stats.warmup_sent
    }

    /// Whether every message written was received once by the sink and answered AA, with no
    /// error of any kind; otherwise what differs.
    pub fn delivery_problems(&self) -> Vec<String> {
        let s = &self.stats;
        let mut problems = Vec::new();
        let aa = s.ack_codes.get("AA").copied().unwrap_or(0);
        if let Some(custody) = self.custody {
            // Durable: every message is at the sink or still in the relay's custody. The two
            // overlap by the messages in flight when the journal was read (at the sink, their
            // ACK not yet back at the relay), so the sum may exceed what was sent, never fall
            // short of it.
            if self.sink.unique + custody.queued < self.written() {
                problems.push(format!(
                    "LOST: the sink received {} distinct messages and the journal holds {}, but {} were sent",
                    self.sink.unique,
                    custody.queued,
                    self.written()
                ));
            }
            if self.sink.unique > self.written() {
                problems.push(format!(
                    "the sink received {} distinct messages but only {} were sent",
                    self.sink.unique,
                    self.written()
                ));
            }
        } else if self.sink.unique != self.written() {
            problems.push(format!(
                "the sink received {} distinct messages but {} were sent",
                self.sink.unique,
                self.written()
            ));
        }
        if self.sink.duplicates > 0 {
            problems.push(format!(
                "{} duplicates reached the sink",
                self.sink.duplicates
            ));
        }
        if s.warmup_acked != s.warmup_sent {
            problems.push(format!(
                "{} of {} warm-up messages were ACKed",
                s.warmup_acked, s.warmup_sent
            ));
        }
        if aa != s.sent || s.acked != s.sent {
            let others: Vec<String> = s
                .ack_codes
                .iter()
                .filter(|(code, _)| code.as_str() != "AA")
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            problems.push(format!(
                "{aa} AA for {} sent{}{}",
                s.sent,
                if others.is_empty() {
                    ""
                } else {
                    "; other codes: "
                },
                others.join(", ")
            ));
        }
        let errors: Vec<String> = s
            .errors
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        if !errors.is_empty() {
            problems.push(format!("errors: {}", errors.join(", ")));
        }
        problems
    }
}

/// Memory per idle connection.
#[derive(Debug, Clone)]
pub struct HoldResult {
    /// Connections at the first reading.
    pub baseline: u32,
    /// Connections at the second reading.
    pub connections: u32,
    /// Memory with no connection.
    pub idle: Memory,
    /// Memory at `baseline` connections.
    pub at_baseline: Memory,
    /// Memory at `connections`.
    pub at_full: Memory,
}

impl HoldResult {
    /// KiB of RSS per connection between the two readings.
    pub fn kib_per_connection(&self) -> f64 {
        (self.at_full.rss_kib as f64 - self.at_baseline.rss_kib as f64)
            / f64::from(self.connections - self.baseline)
    }

    /// KiB of PSS per connection between the two readings.
    pub fn pss_kib_per_connection(&self) -> f64 {
        (self.at_full.pss_kib as f64 - self.at_baseline.pss_kib as f64)
            / f64::from(self.connections - self.baseline)
    }
}

/// What `mllp-loadgen sink` printed when it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// Frames received.
    pub received: u64,
    /// Distinct MSH-10s.
    pub unique: u64,
    /// MSH-10s seen more than once.
    pub duplicates: u64,
}

impl SinkCounts {
    /// Reads the sink's `received N  unique N  duplicates N …` line.
    pub fn parse(line: &str) -> Option<Self> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let value = |key: &str| {
            words
                .windows(2)
                .find(|w| w[0] == key)
                .and_then(|w| w[1].parse::<u64>().ok())
        };
        Some(Self {
            received: value("received")?,
            unique: value("unique")?,
            duplicates: value("duplicates")?,
        })
    }
}

/// Keeps CPUs awake while a benchmark runs (see the performance study: a halted vCPU takes
/// milliseconds to wake, which would otherwise show up as the system's latency).
#[derive(Debug)]
struct Spinners(Vec<Managed>);

impl Spinners {
    fn start(tools: &Tools, placement: &Placement) -> anyhow::Result<Self> {
        let mut spinners = Vec::new();
        let (Some(chrt), true) = (&tools.chrt, placement.spinners) else {
            return Ok(Self(spinners));
        };
        let mut cpus: Vec<usize> = Vec::new();
        for set in [&placement.sut, &placement.load].into_iter().flatten() {
            cpus.extend(set.cpus());
        }
        cpus.sort_unstable();
        cpus.dedup();
        for cpu in cpus {
            let args: Vec<OsString> = vec![
                "--idle".into(),
                "0".into(),
                tools.myself.clone().into(),
                "spin".into(),
            ];
            spinners.push(Managed::spawn(
                &format!("spinner on CPU {cpu}"),
                chrt,
                &args,
                Some(&CpuSet::parse(&cpu.to_string())?),
                tools.taskset.as_deref(),
            )?);
        }
        Ok(Self(spinners))
    }

    fn cpu_seconds(&self) -> f64 {
        self.0
            .iter()
            .map(|s| process::process_cpu_seconds(s.pid()))
            .sum()
    }
}

/// The busy loop behind `mllp-bench spin`: runs until its parent (the benchmark) is gone, or
/// for at most six hours, so it can never outlive a crashed benchmark for long.
pub fn spin() {
    let parent = rustix::process::getppid();
    let started = Instant::now();
    while rustix::process::getppid() == parent && started.elapsed() < Duration::from_secs(6 * 3600)
    {
        for i in 0..1_000_000_u32 {
            std::hint::black_box(i);
        }
    }
}

/// A scenario being run.
#[derive(Debug)]
pub struct Bench {
    tools: Tools,
    placement: Placement,
    pki: PkiFiles,
    /// Private scratch space: certificates, peer configs, the load generator's JSON files.
    work: PathBuf,
    /// Where each run's load-generator JSON is kept for later inspection (`mllp-loadgen merge`).
    runs_dir: PathBuf,
    interrupted: Arc<AtomicBool>,
    spinners: Spinners,
    progress: bool,
}

impl Bench {
    /// Prepares a run: certificates, scratch directory, spinners.
    pub fn new(
        tools: Tools,
        placement: Placement,
        results_dir: &Path,
        interrupted: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let work = std::env::temp_dir().join(format!(
            "mllp-bench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        create_private_dir(&work)?;
        let pki = pki::generate(&work).context("cannot generate the certificates")?;
        let runs_dir = results_dir.join("runs");
        std::fs::create_dir_all(&runs_dir)
            .with_context(|| format!("cannot create {}", runs_dir.display()))?;
        let spinners = Spinners::start(&tools, &placement)?;
        Ok(Self {
            tools,
            placement,
            pki,
            work,
            runs_dir,
            interrupted,
            spinners,
            progress: std::io::stdout().is_terminal(),
        })
    }

    /// The tools in use.
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// Whether Ctrl-C was pressed.
    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// Runs every round of every phase for every system, interleaved (round 1: phase 1 for
    /// A, B, C, phase 2 for A, B, C…; then round 2), calling `report` after each run.
    pub fn run(
        &mut self,
        scenario: &Scenario,
        systems: &[System],
        mut report: impl FnMut(&RunRecord, usize, usize),
    ) -> Vec<RunRecord> {
        let plan: Vec<(u32, &Phase, System)> = (1..=scenario.rounds)
            .flat_map(|round| {
                scenario.phases.iter().flat_map(move |phase| {
                    systems
                        .iter()
                        .filter(|s| Scenario::applies(**s, phase))
                        .map(move |s| (round, phase, *s))
                })
            })
            .collect();
        let mut records: Vec<RunRecord> = Vec::new();
        for (i, (round, phase, system)) in plan.iter().enumerate() {
            if self.interrupted() {
                break;
            }
            let outcome = self.run_one(phase, *system, *round, &records);
            let record = RunRecord {
                phase: phase.name.clone(),
                system: *system,
                round: *round,
                outcome,
            };
            report(&record, i + 1, plan.len());
            records.push(record);
        }
        records
    }

    fn run_one(
        &mut self,
        phase: &Phase,
        system: System,
        round: u32,
        earlier: &[RunRecord],
    ) -> Outcome {
        if let System::Peer(kind) = system
            && self.tools.peer(kind).is_none()
        {
            return Outcome::Skipped(format!(
                "{} is not installed (scripts/install-peers.sh installs it)",
                kind.name()
            ));
        }
        let rate = match &phase.load {
            Load::Open {
                rate: Rate::Fixed(rate),
                ..
            } => Some(*rate),
            Load::Open {
                rate:
                    Rate::FractionOf {
                        fraction,
                        phase: of,
                    },
                ..
            } => {
                let saturation = earlier.iter().find_map(|r| match &r.outcome {
                    Outcome::Load(load)
                        if r.phase == *of && r.system == system && r.round == round =>
                    {
                        Some(load.stats.throughput_msgs_per_s())
                    }
                    _ => None,
                });
                match saturation {
                    Some(s) if s > 0.0 => Some((s * fraction).max(1.0)),
                    _ => {
                        return Outcome::Skipped(format!(
                            "no result of phase {of:?} in this round to take the rate from"
                        ));
                    }
                }
            }
            _ => None,
        };
        let result = match phase.load {
            Load::Hold { baseline } => self.hold(phase, system, baseline).map(Outcome::Hold),
            _ => self
                .load(phase, system, round, rate)
                .map(|r| Outcome::Load(Box::new(r))),
        };
        result.unwrap_or_else(|e| Outcome::Failed(format!("{e:#}")))
    }

    /// Starts the sink and the system under test for `phase`. Returns them and the address
    /// the load generator connects to.
    fn start_system(
        &self,
        phase: &Phase,
        system: System,
        max_connections: u32,
    ) -> anyhow::Result<Running> {
        let sink_tls = system == System::DirectTls;
        let sink_cpus = if system.is_direct() {
            self.placement.sut.as_ref()
        } else {
            self.placement.load.as_ref()
        };
        let mut sink_args: Vec<OsString> = vec![
            "sink".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--threads".into(),
            "1".into(),
        ];
        if !phase.sink_ack_delay.is_zero() {
            sink_args.extend([
                "--ack-delay".into(),
                format!("{}ms", phase.sink_ack_delay.as_millis()).into(),
            ]);
        }
        if sink_tls {
            sink_args.extend([
                "--tls-cert".into(),
                self.pki.chain.clone().into(),
                "--tls-key".into(),
                self.pki.key.clone().into(),
            ]);
        }
        let mut sink = Managed::spawn(
            "the sink (mllp-loadgen sink)",
            &self.tools.loadgen,
            &sink_args,
            sink_cpus,
            self.tools.taskset.as_deref(),
        )?;
        let sink_addr = sink.wait_for_line(START_TIMEOUT, |line| {
            address_after(line, "mllp-loadgen sink listening on ")
        })?;
        let mut metrics = None;
        let (sut, target) = match system {
            System::DirectTls | System::DirectPlain => (None, sink_addr),
            System::Relay => {
                let mut args: Vec<OsString> = vec![
                    "--listen".into(),
                    "127.0.0.1:0".into(),
                    "--forward".into(),
                    sink_addr.to_string().into(),
                    "--workers".into(),
                    self.placement.sut_threads().to_string().into(),
                    "--ack-mode".into(),
                    phase.ack_mode.clone().into(),
                    "--log".into(),
                    "warn".into(),
                ];
                if phase.tls {
                    args.extend([
                        "--tls-cert".into(),
                        self.pki.chain.clone().into(),
                        "--tls-key".into(),
                        self.pki.key.clone().into(),
                    ]);
                }
                if phase.ack_mode == "durable" {
                    // A fresh journal per run, on the work directory's disk.
                    let journal = self.work.join(format!(
                        "journal-{}",
                        PEER_DIRS.fetch_add(1, Ordering::Relaxed)
                    ));
                    // The relay picks the metrics port and prints it (read below).
                    args.extend([
                        "--journal".into(),
                        journal.into(),
                        "--metrics".into(),
                        "127.0.0.1:0".into(),
                    ]);
                }
                let mut relay = Managed::spawn(
                    "mllp-relay",
                    &self.tools.relay,
                    &args,
                    self.placement.sut.as_ref(),
                    self.tools.taskset.as_deref(),
                )?;
                let addr = relay.wait_for_line(START_TIMEOUT, |line| {
                    address_after(line, "mllp-relay listening on ")
                })?;
                if phase.ack_mode == "durable" {
                    metrics = Some(relay.wait_for_line(START_TIMEOUT, metrics_address)?);
                }
                (Some(relay), addr)
            }
            System::Peer(kind) => {
                let binary = self
                    .tools
                    .peer(kind)
                    .with_context(|| format!("{} is not installed", kind.name()))?;
                let listen = free_port()?;
                let dir = self.work.join(format!(
                    "{}-{}",
                    kind.name(),
                    PEER_DIRS.fetch_add(1, Ordering::Relaxed)
                ));
                create_private_dir(&dir)?;
                let launch = peers::prepare(
                    kind,
                    binary,
                    &dir,
                    &PeerTls {
                        chain_pem: self.pki.chain.clone(),
                        key_pem: self.pki.key.clone(),
                    },
                    listen,
                    sink_addr,
                    usize::try_from(max_connections).unwrap_or(usize::MAX),
                )?;
                let mut peer = Managed::spawn(
                    kind.name(),
                    &launch.program,
                    &launch.args,
                    self.placement.sut.as_ref(),
                    self.tools.taskset.as_deref(),
                )?;
                wait_until_accepting(&mut peer, listen, &launch.log_file)?;
                (Some(peer), listen)
            }
        };
        Ok(Running {
            sink,
            sut,
            target,
            metrics,
        })
    }

    fn loadgen_connection_args(
        &self,
        phase: &Phase,
        system: System,
        target: SocketAddr,
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--target".into(), target.to_string().into()];
        // The plain baseline is plain even in a TLS phase: it is the no-TLS floor.
        if phase.tls && system != System::DirectPlain {
            args.extend([
                "--tls".into(),
                "--ca".into(),
                self.pki.ca.clone().into(),
                "--sni".into(),
                pki::SERVER_NAME.into(),
            ]);
        }
        args
    }

    fn load(
        &self,
        phase: &Phase,
        system: System,
        round: u32,
        rate: Option<f64>,
    ) -> anyhow::Result<LoadResult> {
        let running = self.start_system(phase, system, phase.connections)?;
        let json = self.runs_dir.join(format!(
            "{}-{}-r{round}.json",
            file_safe(&phase.name),
            system.name()
        ));
        let mut args: Vec<OsString> = vec!["send".into()];
        args.extend(self.loadgen_connection_args(phase, system, running.target));
        let threads = self
            .placement
            .load_threads()
            .min(usize::try_from(phase.connections).unwrap_or(1));
        args.extend([
            "--connections".into(),
            phase.connections.to_string().into(),
            "--threads".into(),
            threads.to_string().into(),
            "--pipeline".into(),
            phase.pipeline.to_string().into(),
            "--template".into(),
            phase.template.arg().into(),
            "--size".into(),
            phase.size.to_string().into(),
            "--duration".into(),
            format!("{}ms", phase.duration.as_millis()).into(),
            "--warmup".into(),
            format!("{}ms", phase.warmup.as_millis()).into(),
            "--json".into(),
            json.clone().into(),
            "--quiet".into(),
        ]);
        if let (Some(rate), Load::Open { arrival, .. }) = (rate, &phase.load) {
            args.extend([
                "--rate".into(),
                format!("{rate:.0}").into(),
                "--arrival".into(),
                arrival.into(),
            ]);
        }
        let sut_pid = running.sut_pid();
        let sink_separate = running.sut.is_some();
        let sink_pid = running.sink.pid();

        let machine_before = MachineCpu::now();
        let spin_before = self.spinners.cpu_seconds();
        let sut_before = process::tree_cpu(sut_pid);
        let sink_before = process::process_cpu_seconds(sink_pid);
        let started = Instant::now();
        let loadgen = Managed::spawn(
            "mllp-loadgen send",
            &self.tools.loadgen,
            &args,
            self.placement.load.as_ref(),
            self.tools.taskset.as_deref(),
        )?;
        let expected = phase.warmup + phase.duration;
        let ticker = Ticker::start(self.progress, expected);
        let waited = loadgen.wait(expected + Duration::from_secs(60) + Duration::from_secs(10));
        drop(ticker);
        let wall_s = started.elapsed().as_secs_f64();
        let sut_after = process::tree_cpu(sut_pid);
        let sink_after = process::process_cpu_seconds(sink_pid);
        let spin_after = self.spinners.cpu_seconds();
        let machine_after = MachineCpu::now();
        let sut_memory = process::tree_memory(sut_pid);
        waited?;
        let custody = match running.metrics {
            Some(addr) => Some(custody_after_drain(addr)?),
            None => None,
        };
        let mut bytes = std::fs::read(&json)
            .with_context(|| format!("mllp-loadgen wrote no result file {}", json.display()))?;
        let stats = loadgen::report::from_json(&mut bytes)
            .with_context(|| format!("cannot read {}", json.display()))?;
        let sink = running.stop()?;

        let sut_cpu = sut_after - sut_before;
        let ours = sut_cpu.total_s
            + if sink_separate {
                sink_after - sink_before
            } else {
                0.0
            }
            + stats.process_cpu_s
            + (spin_after - spin_before);
        let busy = machine_after.busy_s - machine_before.busy_s;
        Ok(LoadResult {
            target_rate: rate,
            sut_cpu_s: sut_cpu.total_s,
            sut_system_s: sut_cpu.system_s,
            wall_s,
            sink,
            sut_memory,
            loadgen_cpu_s: stats.process_cpu_s,
            foreign_cores: ((busy - ours) / wall_s).max(0.0),
            steal_cores: ((machine_after.steal_s - machine_before.steal_s) / wall_s).max(0.0),
            stats,
            custody,
        })
    }

    fn hold(&self, phase: &Phase, system: System, baseline: u32) -> anyhow::Result<HoldResult> {
        let running = self.start_system(phase, system, phase.connections)?;
        let sut_pid = running.sut_pid();
        std::thread::sleep(MEMORY_SETTLE);
        let idle = process::tree_memory(sut_pid);
        let hold = |count: u32| -> anyhow::Result<Managed> {
            let mut args: Vec<OsString> = vec!["hold".into()];
            args.extend(self.loadgen_connection_args(phase, system, running.target));
            args.extend([
                "--connections".into(),
                count.to_string().into(),
                "--threads".into(),
                self.placement.load_threads().to_string().into(),
            ]);
            let mut holder = Managed::spawn(
                "mllp-loadgen hold",
                &self.tools.loadgen,
                &args,
                self.placement.load.as_ref(),
                self.tools.taskset.as_deref(),
            )?;
            holder.wait_for_line(HOLD_TIMEOUT, |line| {
                line.starts_with("holding ").then_some(())
            })?;
            Ok(holder)
        };
        let first = hold(baseline)?;
        std::thread::sleep(MEMORY_SETTLE);
        let at_baseline = process::tree_memory(sut_pid);
        let second = hold(phase.connections - baseline)?;
        std::thread::sleep(MEMORY_SETTLE);
        let at_full = process::tree_memory(sut_pid);
        for holder in [second, first] {
            let (status, lines) = holder.stop(Signal::TERM, STOP_GRACE);
            if !status.is_some_and(|s| s.success()) {
                bail!(
                    "a holder reported a problem ({}): {}",
                    status.map_or_else(|| "killed".to_owned(), |s| s.to_string()),
                    lines.join(" | ")
                );
            }
        }
        running.stop()?;
        Ok(HoldResult {
            baseline,
            connections: phase.connections,
            idle,
            at_baseline,
            at_full,
        })
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// A started sink and system under test.
#[derive(Debug)]
struct Running {
    sink: Managed,
    /// `None` for the direct baselines (the sink is the system under test).
    sut: Option<Managed>,
    target: SocketAddr,
    /// The relay's metrics endpoint (`durable` runs).
    metrics: Option<SocketAddr>,
}

impl Running {
    fn sut_pid(&self) -> u32 {
        self.sut.as_ref().map_or(self.sink.pid(), Managed::pid)
    }

    /// Stops the system under test (SIGTERM: a relay finishes what is in flight), then the
    /// sink, and returns the sink's counts.
    fn stop(self) -> anyhow::Result<SinkCounts> {
        if let Some(sut) = self.sut {
            let name = sut.name().to_owned();
            let (status, _) = sut.stop(Signal::TERM, STOP_GRACE);
            if status.is_none() {
                bail!("{name} did not stop within {STOP_GRACE:?} of SIGTERM");
            }
        }
        let (_, lines) = self.sink.stop(Signal::INT, STOP_GRACE);
        lines
            .iter()
            .find_map(|l| SinkCounts::parse(l))
            .with_context(|| format!("the sink printed no counts: {}", lines.join(" | ")))
    }
}

/// Waits until a peer listens on `addr` (read from /proc/net/tcp: a probe connection without
/// a handshake would cost stunnel a thread and an error line), or fails with its log.
fn wait_until_accepting(peer: &mut Managed, addr: SocketAddr, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if peers::listening(addr).unwrap_or(false) {
            return Ok(());
        }
        if !peer.is_running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log_tail = std::fs::read_to_string(log)
        .map(|text| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n    ")
        })
        .unwrap_or_default();
    bail!(
        "{} did not start accepting on {addr}{}{}",
        peer.name(),
        peer.tail_text(),
        if log_tail.is_empty() {
            String::new()
        } else {
            format!("; its log:\n    {log_tail}")
        }
    )
}

/// The address a start-up line announces after `prefix` (`… listening on 127.0.0.1:4242 (TLS)`).
fn address_after(line: &str, prefix: &str) -> Option<SocketAddr> {
    line.strip_prefix(prefix)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The address in the relay's "mllp-relay metrics on http://ADDR/metrics" line.
fn metrics_address(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("mllp-relay metrics on http://")?
        .trim_end()
        .strip_suffix("/metrics")?
        .parse()
        .ok()
}

/// How long a `durable` run waits after the load for the relay's queue to drain.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// The relay's journal after the load: waits up to [`DRAIN_WAIT`] for the queue to empty.
fn custody_after_drain(addr: SocketAddr) -> anyhow::Result<Custody> {
    let deadline = Instant::now() + DRAIN_WAIT;
    loop {
        let text = http_get(addr, "/metrics")
            .with_context(|| format!("cannot read the relay's metrics at {addr}"))?;
        let custody = Custody::parse(&text)
            .with_context(|| format!("the relay's metrics at {addr} lack the journal's"))?;
        if custody.queued == 0 || Instant::now() >= deadline {
            return Ok(custody);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tiny HTTP GET (the relay's metrics endpoint answers one request per connection).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// A free port on 127.0.0.1, for peers (HAProxy, stunnel, nginx), which cannot report a port
/// they picked. Freed before the peer binds it: `mllp-bench` runs alone on its machine, so no
/// other program is expected to take the port in between; the relay, the sink and the load
/// generator bind port 0 and print the port they got.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// A phase name as a file name.
pub fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Counts seconds on the terminal while a run goes on.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(enabled: bool, expected: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = enabled.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    print!(
                        "{:>3.0}/{:.0} s\x08\x08\x08\x08\x08\x08\x08\x08",
                        started.elapsed().as_secs_f64(),
                        expected.as_secs_f64()
                    );
                    let _ = std::io::stdout().flush();
                    std::thread::sleep(Duration::from_millis(250));
                }
                print!("        \x08\x08\x08\x08\x08\x08\x08\x08");
                let _ = std::io::stdout().flush();
            })
        });
        Self { stop, thread }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Ticker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticker").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_line_parses() {
        let line = "received 120  unique 119  duplicates 1  acks 120  naks 0  dropped acks 0  \
                    wrong MSA-2 0  unreadable 0  connections 4";
        assert_eq!(
            SinkCounts::parse(line),
            Some(SinkCounts {
                received: 120,
                unique: 119,
                duplicates: 1
            })
        );
        assert_eq!(SinkCounts::parse("mllp-loadgen sink listening on x"), None);
    }

    #[test]
    fn the_relays_ready_lines_give_its_addresses() {
        assert_eq!(
            address_after(
                "mllp-relay listening on 127.0.0.1:4100 (TLS), forwarding to 127.0.0.1:9 (plain)",
                "mllp-relay listening on "
            ),
            Some("127.0.0.1:4100".parse().unwrap())
        );
        assert_eq!(
            metrics_address("mllp-relay metrics on http://127.0.0.1:4101/metrics"),
            Some("127.0.0.1:4101".parse().unwrap())
        );
        assert_eq!(
            metrics_address("mllp-relay listener \"a\" on 127.0.0.1:1"),
            None
        );
    }

    #[test]
    fn the_relays_journal_metrics_parse() {
        let text = "# HELP mllp_relay_journal_messages x\n# TYPE mllp_relay_journal_messages gauge\n\
                    mllp_relay_journal_messages 12\nmllp_relay_dead_letters_total 3\n\
                    mllp_relay_journal_commits_total 40\nmllp_relay_journal_batch_messages_sum 400\n\
                    mllp_relay_journal_messages_total 99\n";
        let custody = Custody::parse(text).unwrap();
        assert_eq!(
            custody,
            Custody {
                queued: 12,
                dead_letters: 3,
                commits: 40,
                committed: 400
            }
        );
        assert_eq!(custody.mean_batch(), Some(10.0));
        assert_eq!(Custody::parse("mllp_relay_journal_messages 1\n"), None);
    }

    #[test]
    fn durable_runs_count_the_journal_as_custody_never_as_delivery() {
        let stats = RunStats {
            sent: 90,
            acked: 90,
            ack_codes: [("AA".to_owned(), 90)].into_iter().collect(),
            errors: Default::default(),
            reconnects: 0,
            warmup_sent: 10,
            warmup_acked: 10,
            process_cpu_s: 0.0,
            duration_s: 1.0,
            latency: hdrhistogram::Histogram::new(3).unwrap(),
            timeline: Vec::new(),
            meta: Default::default(),
        };
        let result = |unique: u64, queued: u64| LoadResult {
            stats: stats.clone(),
            target_rate: None,
            sut_cpu_s: 1.0,
            sut_system_s: 0.5,
            wall_s: 1.0,
            sink: SinkCounts {
                received: unique,
                unique,
                duplicates: 0,
            },
            sut_memory: Memory::default(),
            loadgen_cpu_s: 0.0,
            foreign_cores: 0.0,
            steal_cores: 0.0,
            custody: Some(Custody {
                queued,
                ..Custody::default()
            }),
        };
        assert!(result(60, 40).delivery_problems().is_empty());
        assert!(
            result(62, 40).delivery_problems().is_empty(),
            "in flight: at the sink and still in the journal"
        );
        let lost = result(60, 39).delivery_problems();
        assert!(lost.iter().any(|p| p.starts_with("LOST")), "{lost:?}");
        assert_eq!(
            result(60, 40).sut_us_per_msg(),
            Some(1e6 / 100.0),
            "per message taken in"
        );
        assert_eq!(result(60, 40).sut_kernel_us_per_msg(), Some(0.5e6 / 100.0));
    }

    #[test]
    fn phase_names_become_file_names() {
        assert_eq!(file_safe("open 50% c32"), "open-50--c32");
    }
}
