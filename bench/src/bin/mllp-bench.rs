//! `mllp-bench`: the one-command end-to-end benchmark of `mllp-relay`, and its side-by-side
//! comparison with the direct baselines and the TLS proxies users run today.

use anyhow::Context;
use bench::process;
use bench::results::Report;
use bench::runner::{Bench, Outcome, Placement, RunRecord, Tools, spin};
use bench::scenario::Scenario;
use bench::system::System;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

#[derive(Parser, Debug)]
#[command(
    name = "mllp-bench",
    version,
    about = "End-to-end benchmark of mllp-relay: TLS in, plain MLLP out, honest ACK latency",
    long_about = "End-to-end benchmark of mllp-relay.\n\n\
        With no arguments it runs the embedded default scenario: throwaway certificates made \
        in memory, an MLLP sink, mllp-relay (TLS in, plain out, passthrough ACKs) and \
        mllp-loadgen as child processes on 127.0.0.1; 32 connections closed-loop to find \
        saturation, then an open-loop rate at half of it. It prints a table (msgs/s, ACK \
        latency, relay CPU µs per message, relay memory, errors) and a verdict: whether every \
        message was delivered once and ACKed AA (sink count = sent = AA count). Results go to \
        bench-results/<timestamp>/ (results.json, summary.md, latency.svg, and each run's \
        load-generator JSON under runs/).\n\n\
        `mllp-bench compare` runs the same through the direct baselines (no relay, TLS and \
        plain), mllp-relay, and HAProxy, stunnel and nginx-stream when installed \
        (scripts/install-peers.sh), interleaved round by round, and reports ratios.\n\n\
        Examples:\n  \
        mllp-bench\n  \
        mllp-bench compare\n  \
        mllp-bench compare --scenario bench/scenarios/goals.toml\n  \
        mllp-bench --scenario bench/scenarios/full.toml --systems mllp-relay --phase oru-64KiB-c32"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: RunOptions,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario (the default command)
    Run(RunOptions),
    /// Run the scenario through every system side by side (direct baselines, mllp-relay,
    /// HAProxy, stunnel, nginx), at least two interleaved rounds
    Compare(RunOptions),
    /// List the systems and whether each can run here
    Systems,
    /// (internal) A SCHED_IDLE busy loop that keeps a vCPU awake; exits with its parent
    #[command(hide = true)]
    Spin,
}

#[derive(Args, Debug, Clone, Default)]
struct RunOptions {
    /// Scenario file (TOML; see bench/scenarios/). Default: the embedded default scenario
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Systems to run, comma-separated (direct-plain, direct-tls, mllp-relay, haproxy,
    /// stunnel, nginx). Default: the scenario's (compare: all)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    systems: Vec<String>,
    /// Run only these phases of the scenario (repeatable)
    #[arg(long, value_name = "NAME")]
    phase: Vec<String>,
    /// Rounds (each phase for each system, interleaved). Default: the scenario's (compare: at least 2)
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// Measured time of every load phase, e.g. 8s
    #[arg(long, value_name = "D", value_parser = duration)]
    duration: Option<Duration>,
    /// Unmeasured warm-up before every load phase, e.g. 1s
    #[arg(long, value_name = "D", value_parser = duration)]
    warmup: Option<Duration>,
    /// CPUs of the system under test (taskset list), e.g. 1
    #[arg(long, value_name = "CPUS")]
    sut_cpus: Option<String>,
    /// CPUs of the load generator (and of the sink behind a relay), e.g. 0
    #[arg(long, value_name = "CPUS")]
    load_cpus: Option<String>,
    /// No SCHED_IDLE spinners
    #[arg(long)]
    no_spinners: bool,
    /// Where the results directory is created
    #[arg(long, value_name = "DIR", default_value = "bench-results")]
    out: PathBuf,
    /// Do not (re)build mllp-relay and mllp-loadgen with cargo first
    #[arg(long)]
    no_build: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    netio::units::parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        None => run(cli.options, false),
        Some(Command::Run(options)) => run(options, false),
        Some(Command::Compare(options)) => run(options, true),
        Some(Command::Systems) => systems(),
        Some(Command::Spin) => {
            spin();
            Ok(ExitCode::SUCCESS)
        }
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("mllp-bench: error: {error:#}");
        ExitCode::from(2)
    })
}

fn systems() -> anyhow::Result<ExitCode> {
    let tools = Tools::locate(false, &mut |_| {}).ok();
    for system in System::all() {
        let status = match system {
            System::Peer(kind) => match tools
                .as_ref()
                .and_then(|t| t.peers.iter().find(|(k, _, _)| *k == kind))
            {
                Some((_, path, version)) => format!("{version} ({})", path.display()),
                None => "not installed (scripts/install-peers.sh)".to_owned(),
            },
            System::Relay => "built from this workspace".to_owned(),
            System::DirectTls => "mllp-loadgen sink with TLS (no relay)".to_owned(),
            System::DirectPlain => "mllp-loadgen sink, plain (no TLS, no relay)".to_owned(),
        };
        println!("{:<13} {status}", system.name());
    }
    Ok(ExitCode::SUCCESS)
}

fn run(options: RunOptions, compare: bool) -> anyhow::Result<ExitCode> {
    let started_at = Instant::now();
    let mut scenario = match &options.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::default_scenario(),
    };
    // Command-line overrides.
    if !options.systems.is_empty() {
        scenario.systems = options
            .systems
            .iter()
            .map(|s| System::parse(s))
            .collect::<anyhow::Result<_>>()?;
    } else if compare && options.scenario.is_none() {
        scenario.systems = System::all();
    }
    if compare {
        scenario.rounds = scenario.rounds.max(2);
    }
    if let Some(rounds) = options.rounds {
        anyhow::ensure!(rounds > 0, "--rounds must be at least 1");
        scenario.rounds = rounds;
    }
    if !options.phase.is_empty() {
        for name in &options.phase {
            anyhow::ensure!(
                scenario.phases.iter().any(|p| &p.name == name),
                "the scenario has no phase {name:?} (it has: {})",
                scenario
                    .phases
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        scenario.phases.retain(|p| options.phase.contains(&p.name));
    }
    for phase in &mut scenario.phases {
        if let Some(d) = options.duration {
            phase.duration = d;
        }
        if let Some(w) = options.warmup {
            phase.warmup = w;
        }
    }
    if let Some(cpus) = &options.sut_cpus {
        scenario.sut_cpus.clone_from(cpus);
    }
    if let Some(cpus) = &options.load_cpus {
        scenario.load_cpus.clone_from(cpus);
    }
    if options.no_spinners {
        scenario.spinners = false;
    }

    let tools = Tools::locate(!options.no_build, &mut |line| println!("{line}"))?;
    let placement = Placement::choose(&scenario, &tools)?;
    let stamp = timestamp(SystemTime::now());
    let results_dir = options.out.join(stamp.replace(':', "-"));
    std::fs::create_dir_all(&results_dir)
        .with_context(|| format!("cannot create {}", results_dir.display()))?;

    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupted.clone())
            .context("cannot install signal handlers")?;
    }
    let machine = process::machine_description();
    println!(
        "mllp-bench {}: {}\n  machine: {machine}\n  placement: {}",
        scenario.name,
        scenario.description,
        placement.describe()
    );
    for note in &placement.notes {
        println!("  note: {note}");
    }
    let systems = scenario.systems.clone();
    let mut bench = Bench::new(tools, placement.clone(), &results_dir, interrupted)?;
    let records = bench.run(&scenario, &systems, |record, i, n| {
        print_progress(record, i, n);
    });
    let interrupted = bench.interrupted();
    let mut versions = vec![(
        "mllp-relay".to_owned(),
        format!("{} (this workspace)", env!("CARGO_PKG_VERSION")),
    )];
    for (kind, _, version) in &bench.tools().peers {
        if systems.contains(&System::Peer(*kind)) {
            versions.push((kind.name().to_owned(), version.clone()));
        }
    }
    drop(bench);

    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = Report {
        scenario: &scenario,
        systems: &systems,
        records: &records,
        command,
        started: stamp,
        wall_s: started_at.elapsed().as_secs_f64(),
        machine,
        placement: placement.describe(),
        notes: placement.notes,
        versions,
    };
    println!("\n{}", report.render(false));
    println!("{}", report.verdict());
    std::fs::write(results_dir.join("results.json"), report.to_json())?;
    std::fs::write(results_dir.join("summary.md"), report.markdown())?;
    for (name, svg) in report.plots() {
        std::fs::write(results_dir.join(name), svg)?;
    }
    println!(
        "results: {} (results.json, summary.md, latency.svg); took {:.0} s",
        results_dir.display(),
        started_at.elapsed().as_secs_f64()
    );
    if interrupted {
        println!("interrupted: the results above are partial");
        return Ok(ExitCode::from(130));
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line per run as it finishes.
fn print_progress(record: &RunRecord, i: usize, n: usize) {
    let head = format!(
        "[{i:>2}/{n}] {} · {} · round {}",
        record.phase, record.system, record.round
    );
    match &record.outcome {
        Outcome::Load(load) => {
            let s = &load.stats;
            let problems = load.delivery_problems();
            println!(
                "{head}: {:.0} msgs/s{}, p50 {:.0} µs, p99 {:.0} µs, CPU {} µs/msg{}",
                s.throughput_msgs_per_s(),
                load.target_rate
                    .map_or_else(String::new, |r| format!(" (offered {r:.0})")),
                s.latency_us(0.5),
                s.latency_us(0.99),
                load.sut_us_per_msg()
                    .map_or_else(|| "–".to_owned(), |c| format!("{c:.1}")),
                if problems.is_empty() {
                    String::new()
                } else {
                    format!("; PROBLEM: {}", problems.join("; "))
                }
            );
            if let Some(custody) = load.custody {
                println!(
                    "        journal: {} messages per fdatasync, {} still queued, {} dead letters",
                    custody
                        .mean_batch()
                        .map_or_else(|| "–".to_owned(), |m| format!("{m:.1}")),
                    custody.queued,
                    custody.dead_letters
                );
            }
        }
        Outcome::Hold(hold) => println!(
            "{head}: {} idle connections, {:.1} KiB each (RSS)",
            hold.connections,
            hold.kib_per_connection()
        ),
        Outcome::Failed(why) => println!("{head}: FAILED: {why}"),
        Outcome::Skipped(why) => println!("{head}: skipped: {why}"),
    }
}

/// `2026-11-22T10:31:05Z`.
fn timestamp(now: SystemTime) -> String {
    let hl7 = mllp::timestamp::hl7_timestamp(now);
    let t = String::from_utf8_lossy(&hl7);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &t[0..4],
        &t[4..6],
        &t[6..8],
        &t[8..10],
        &t[10..12],
        &t[12..14]
    )
}
