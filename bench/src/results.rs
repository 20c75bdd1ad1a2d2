//! Turning run records into what people read: the terminal table, the verdict,
//! `results.json`, `summary.md` and the latency plots.
//!
//! Over several rounds a (phase, system) pair shows its best and its median. Ratios and a
//! ranking are printed only when they can be trusted: a phase with a failed run, a delivery
//! problem or too much other load on the machine gets the reason instead of a ranking.

use crate::runner::{HoldResult, LoadResult, Outcome, RunRecord};
use crate::scenario::{Load, Scenario};
use crate::system::System;
use simd_json::OwnedValue;
use simd_json::owned::Object;
use simd_json::prelude::{ValueBuilder as _, Writable as _};
use std::fmt::Write as _;

/// Other load above this many cores makes a throughput figure untrustworthy (the study's
/// threshold: with 2 cores, half a core of co-tenant load visibly moves msgs/s).
pub const NOISY_FOREIGN_CORES: f64 = 0.5;
/// Rounds whose CPU µs/msg differ by more than this share are too noisy to rank.
pub const NOISY_CPU_SPREAD: f64 = 0.25;

/// Everything a report is made of.
#[derive(Debug)]
pub struct Report<'a> {
    /// The scenario that ran.
    pub scenario: &'a Scenario,
    /// Systems in report order.
    pub systems: &'a [System],
    /// Every run.
    pub records: &'a [RunRecord],
    /// The command line, to repeat the run.
    pub command: String,
    /// When it started (UTC).
    pub started: String,
    /// Wall time of the whole benchmark, seconds.
    pub wall_s: f64,
    /// The machine, in one line.
    pub machine: String,
    /// Placement, in one line.
    pub placement: String,
    /// Notes on the setup (unpinned, no spinners…).
    pub notes: Vec<String>,
    /// Versions of the tools measured.
    pub versions: Vec<(String, String)>,
}

/// The rounds of one (phase, system) pair that produced load measurements.
#[derive(Debug)]
pub struct Group<'a> {
    /// The system.
    pub system: System,
    /// Its successful load runs.
    pub runs: Vec<&'a LoadResult>,
    /// Why other rounds gave nothing.
    pub failures: Vec<String>,
    /// Whether every round was skipped (the system is absent), with the reason.
    pub skipped: Option<String>,
}

impl Group<'_> {
    fn best_throughput(&self) -> Option<f64> {
        self.runs
            .iter()
            .map(|r| r.stats.throughput_msgs_per_s())
            .reduce(f64::max)
    }

    fn median_throughput(&self) -> Option<f64> {
        median(self.runs.iter().map(|r| r.stats.throughput_msgs_per_s()))
    }

    fn best_cpu(&self) -> Option<f64> {
        self.runs
            .iter()
            .filter_map(|r| r.sut_us_per_msg())
            .reduce(f64::min)
    }

    fn median_cpu(&self) -> Option<f64> {
        median(self.runs.iter().filter_map(|r| r.sut_us_per_msg()))
    }

    fn median_kernel_cpu(&self) -> Option<f64> {
        median(self.runs.iter().filter_map(|r| r.sut_kernel_us_per_msg()))
    }

    fn median_latency(&self, quantile: f64) -> Option<f64> {
        median(self.runs.iter().map(|r| r.stats.latency_us(quantile)))
    }

    fn max_foreign(&self) -> f64 {
        self.runs
            .iter()
            .map(|r| r.foreign_cores + r.steal_cores)
            .fold(0.0, f64::max)
    }

    fn cpu_spread(&self) -> f64 {
        let cpus: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| r.sut_us_per_msg())
            .collect();
        match (
            cpus.iter().copied().reduce(f64::min),
            cpus.iter().copied().reduce(f64::max),
        ) {
            (Some(lo), Some(hi)) if lo > 0.0 => hi / lo - 1.0,
            _ => 0.0,
        }
    }

    fn problems(&self) -> usize {
        self.runs
            .iter()
            .map(|r| r.delivery_problems().len())
            .sum::<usize>()
            + self.failures.len()
    }

    /// Why this group cannot be ranked, if it cannot.
    fn untrustworthy(&self) -> Option<String> {
        if !self.failures.is_empty() {
            return Some(format!("{}: a run failed", self.system));
        }
        if self.problems() > 0 {
            return Some(format!(
                "{}: messages were lost, refused or in error",
                self.system
            ));
        }
        if self.max_foreign() > NOISY_FOREIGN_CORES {
            return Some(format!(
                "{}: other load on the machine reached {:.2} cores",
                self.system,
                self.max_foreign()
            ));
        }
        if self.runs.len() >= 2 && self.cpu_spread() > NOISY_CPU_SPREAD {
            return Some(format!(
                "{}: CPU µs/msg varied {:.0} % between rounds",
                self.system,
                self.cpu_spread() * 100.0
            ));
        }
        None
    }
}

fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    })
}

/// A table: a header and rows of cells, printed aligned or as Markdown.
#[derive(Debug, Default)]
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .chain([self.header[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i == 0 {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str("  ");
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.header.join(" | "));
        out.push_str(&format!(
            "|{}\n",
            self.header
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
                .collect::<String>()
        ));
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }
}

fn num(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => {
            let text = format!("{v:.decimals$}");
            // Thousands separators for the big integers (msgs/s), not for decimals.
            if decimals == 0 && v.abs() >= 1_000.0 {
                let digits: Vec<char> = text.chars().collect();
                let mut out = String::new();
                for (i, c) in digits.iter().enumerate() {
                    if i > 0 && (digits.len() - i).is_multiple_of(3) && *c != '-' {
                        out.push(',');
                    }
                    out.push(*c);
                }
                out
            } else {
                text
            }
        }
        _ => "–".to_owned(),
    }
}

fn best_median(best: Option<f64>, median: Option<f64>, rounds: usize, decimals: usize) -> String {
    if rounds <= 1 {
        num(best, decimals)
    } else {
        format!("{} / {}", num(best, decimals), num(median, decimals))
    }
}

impl<'a> Report<'a> {
    /// The load groups of `phase`, one per system in report order.
    pub fn groups(&self, phase: &str) -> Vec<Group<'a>> {
        self.systems
            .iter()
            .map(|&system| {
                let mut group = Group {
                    system,
                    runs: Vec::new(),
                    failures: Vec::new(),
                    skipped: None,
                };
                for r in self.records {
                    if r.phase != phase || r.system != system {
                        continue;
                    }
                    match &r.outcome {
                        Outcome::Load(load) => group.runs.push(load),
                        Outcome::Failed(why) => {
                            group.failures.push(format!("round {}: {why}", r.round));
                        }
                        Outcome::Skipped(why) => group.skipped = Some(why.clone()),
                        Outcome::Hold(_) => {}
                    }
                }
                group
            })
            .filter(|g| !g.runs.is_empty() || !g.failures.is_empty() || g.skipped.is_some())
            .collect()
    }

    fn holds(&self, phase: &str) -> Vec<(System, Vec<&'a HoldResult>, Vec<String>)> {
        self.systems
            .iter()
            .map(|&system| {
                let mut holds = Vec::new();
                let mut failures = Vec::new();
                for r in self.records {
                    if r.phase != phase || r.system != system {
                        continue;
                    }
                    match &r.outcome {
                        Outcome::Hold(h) => holds.push(h),
                        Outcome::Failed(why) | Outcome::Skipped(why) => {
                            failures.push(format!("round {}: {why}", r.round));
                        }
                        Outcome::Load(_) => {}
                    }
                }
                (system, holds, failures)
            })
            .filter(|(_, h, f)| !h.is_empty() || !f.is_empty())
            .collect()
    }

    fn load_table(&self, phase: &str) -> Table {
        let groups = self.groups(phase);
        let rounds = self.scenario.rounds as usize;
        let baseline = |system: System| {
            groups
                .iter()
                .find(|g| g.system == system)
                .and_then(Group::best_throughput)
        };
        let (plain, tls) = (baseline(System::DirectPlain), baseline(System::DirectTls));
        let mut header = vec!["system"];
        header.push(if rounds > 1 {
            "msgs/s best / med"
        } else {
            "msgs/s"
        });
        if plain.is_some() && groups.len() > 1 {
            header.push("× direct-plain");
        }
        if tls.is_some() && groups.len() > 1 {
            header.push("× direct-tls");
        }
        header.extend(["p50 µs", "p99 µs", "p99.9 µs"]);
        header.push(if rounds > 1 {
            "CPU µs/msg best / med"
        } else {
            "CPU µs/msg"
        });
        header.push(if rounds > 1 {
            "kernel µs/msg med"
        } else {
            "kernel µs/msg"
        });
        header.extend(["RSS MiB", "errors", "other load"]);
        let mut table = Table::new(&header);
        for g in &groups {
            if let Some(why) = &g.skipped
                && g.runs.is_empty()
            {
                let mut row = vec![g.system.to_string(), format!("skipped: {why}")];
                row.resize(header.len(), String::new());
                table.rows.push(row);
                continue;
            }
            let mut row = vec![
                g.system.to_string(),
                best_median(g.best_throughput(), g.median_throughput(), rounds, 0),
            ];
            let ratio = |base: Option<f64>| match (g.best_throughput(), base) {
                (Some(x), Some(b)) if b > 0.0 => format!("{:.2}", x / b),
                _ => "–".to_owned(),
            };
            if plain.is_some() && groups.len() > 1 {
                row.push(ratio(plain));
            }
            if tls.is_some() && groups.len() > 1 {
                row.push(ratio(tls));
            }
            for q in [0.5, 0.99, 0.999] {
                row.push(num(g.median_latency(q), 0));
            }
            row.push(best_median(g.best_cpu(), g.median_cpu(), rounds, 1));
            row.push(num(g.median_kernel_cpu(), 1));
            row.push(num(
                g.runs
                    .iter()
                    .map(|r| r.sut_memory.rss_kib as f64 / 1024.0)
                    .reduce(f64::max),
                1,
            ));
            row.push(
                (g.runs.iter().map(|r| r.stats.error_total()).sum::<u64>()
                    + g.failures.len() as u64)
                    .to_string(),
            );
            row.push(format!("{:.2} cores", g.max_foreign()));
            table.rows.push(row);
        }
        table
    }

    fn hold_table(&self, phase: &str) -> Table {
        let mut table = Table::new(&[
            "system",
            "held",
            "RSS idle MiB",
            "RSS at baseline MiB",
            "RSS held MiB",
            "KiB/conn (RSS)",
            "KiB/conn (PSS)",
        ]);
        for (system, holds, failures) in self.holds(phase) {
            // The smallest growth over the rounds: co-tenants cannot make memory smaller.
            let Some(h) = holds
                .iter()
                .min_by(|a, b| a.kib_per_connection().total_cmp(&b.kib_per_connection()))
            else {
                let mut row = vec![system.to_string(), failures.join("; ")];
                row.resize(7, String::new());
                table.rows.push(row);
                continue;
            };
            let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
            table.rows.push(vec![
                system.to_string(),
                format!("{} (from {})", h.connections, h.baseline),
                mib(h.idle.rss_kib),
                mib(h.at_baseline.rss_kib),
                mib(h.at_full.rss_kib),
                format!("{:.1}", h.kib_per_connection()),
                format!("{:.1}", h.pss_kib_per_connection()),
            ]);
        }
        table
    }

    /// The comparison lines of a load phase: mllp-relay's ratios to each peer, then a ranking
    /// by CPU per message, or why there is none.
    fn ranking(&self, phase: &str, open_loop: bool) -> Option<String> {
        let groups: Vec<Group<'_>> = self
            .groups(phase)
            .into_iter()
            .filter(|g| !g.runs.is_empty() || !g.failures.is_empty())
            .collect();
        if groups.len() < 2 {
            return None;
        }
        let mut lines = Vec::new();
        if let Some(relay) = groups.iter().find(|g| g.system == System::Relay) {
            let others: Vec<String> = groups
                .iter()
                .filter(|g| g.system != System::Relay)
                .filter_map(|g| {
                    let cpu = relay.median_cpu()? / g.median_cpu()?;
                    if open_loop {
                        // Each system was offered its own rate; only the cost compares.
                        return Some(format!("{}: CPU/msg {cpu:.2}×", g.system));
                    }
                    let rate = relay.best_throughput()? / g.best_throughput()?;
                    Some(format!(
                        "{}: CPU/msg {cpu:.2}×, msgs/s {rate:.2}×",
                        g.system
                    ))
                })
                .collect();
            if !others.is_empty() {
                lines.push(format!("mllp-relay against {}", others.join("; ")));
            }
        }
        let reasons: Vec<String> = groups.iter().filter_map(Group::untrustworthy).collect();
        if reasons.is_empty() {
            let mut by_cpu: Vec<(f64, System)> = groups
                .iter()
                .filter_map(|g| Some((g.median_cpu()?, g.system)))
                .collect();
            by_cpu.sort_by(|a, b| a.0.total_cmp(&b.0));
            lines.push(format!(
                "ranking by CPU µs/msg (median): {}",
                by_cpu
                    .iter()
                    .map(|(cpu, s)| format!("{s} {cpu:.1}"))
                    .collect::<Vec<_>>()
                    .join(" < ")
            ));
        } else {
            lines.push(format!("not ranked: {}", reasons.join("; ")));
        }
        Some(lines.join("\n"))
    }

    /// Load runs with problems, and failed runs, as lines; `peers` selects the peer relays'
    /// runs, or everything else (this project's relay and the baselines).
    pub fn problems(&self, peers: bool) -> Vec<String> {
        let mut problems = Vec::new();
        for r in self.records {
            if matches!(r.system, System::Peer(_)) != peers {
                continue;
            }
            let at = format!("{} · {} · round {}", r.phase, r.system, r.round);
            match &r.outcome {
                Outcome::Load(load) => {
                    for p in load.delivery_problems() {
                        problems.push(format!("{at}: {p}"));
                    }
                }
                Outcome::Failed(why) => problems.push(format!("{at}: failed: {why}")),
                Outcome::Hold(_) | Outcome::Skipped(_) => {}
            }
        }
        problems
    }

    /// The verdict: whether every message through `mllp-relay` (and the direct baselines) was
    /// delivered once and ACKed AA. Problems of the peer relays are their own results, listed
    /// after it; they do not fail the benchmark.
    pub fn verdict(&self) -> String {
        let ours: Vec<&LoadResult> = self
            .records
            .iter()
            .filter(|r| !matches!(r.system, System::Peer(_)))
            .filter_map(|r| match &r.outcome {
                Outcome::Load(l) => Some(l.as_ref()),
                _ => None,
            })
            .collect();
        let problems = self.problems(false);
        let mut text = if problems.is_empty() {
            let written: u64 = ours.iter().map(|l| l.written()).sum();
            let sink: u64 = ours.iter().map(|l| l.sink.unique).sum();
            let aa: u64 = ours
                .iter()
                .map(|l| l.stats.ack_codes.get("AA").copied().unwrap_or(0) + l.stats.warmup_acked)
                .sum();
            let queued: u64 = ours
                .iter()
                .filter_map(|l| l.custody.map(|c| c.queued))
                .sum();
            let custody = if ours.iter().any(|l| l.custody.is_some()) {
                format!(
                    "; durable runs: the messages not yet at the sink were in the relay's journal \
                     ({queued} at the end)"
                )
            } else {
                String::new()
            };
            let delivered = if custody.is_empty() {
                "delivered once"
            } else {
                "delivered once or kept in the journal"
            };
            let relation = if custody.is_empty() { "=" } else { "≤" };
            format!(
                "verdict: PASS: every message was {delivered} and ACKed AA \
                 (sink {sink} {relation} sent {written} = AA {aa}, over {} runs{}){custody}",
                ours.len(),
                if self.systems.iter().any(|s| s.is_direct()) {
                    " of mllp-relay and the direct baselines"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "verdict: FAIL: {} problem(s):\n  {}",
                problems.len(),
                problems.join("\n  ")
            )
        };
        let peers = self.problems(true);
        if !peers.is_empty() {
            let _ = write!(
                text,
                "\npeer relays with errors (measured as they are, not a failure of the benchmark):\n  {}",
                peers.join("\n  ")
            );
        }
        text
    }

    /// Whether the verdict passed.
    pub fn passed(&self) -> bool {
        self.problems(false).is_empty()
    }

    /// The terminal report (and, with `markdown`, the summary.md body).
    pub fn render(&self, markdown: bool) -> String {
        let mut out = String::new();
        for phase in &self.scenario.phases {
            let (load, table) = match phase.load {
                Load::Hold { .. } => ("idle connections held", self.hold_table(&phase.name)),
                Load::Closed => ("closed loop", self.load_table(&phase.name)),
                Load::Open { .. } => ("open loop", self.load_table(&phase.name)),
            };
            if table.rows.is_empty() {
                continue;
            }
            let rate = self
                .records
                .iter()
                .filter(|r| r.phase == phase.name)
                .find_map(|r| match &r.outcome {
                    Outcome::Load(l) => l.target_rate,
                    _ => None,
                });
            let title = format!(
                "{}: {load}, {} connection(s), {} B {}, {}{}{}",
                phase.name,
                phase.connections,
                phase.size,
                phase.template.arg().to_uppercase(),
                if phase.tls { "TLS" } else { "plain" },
                if phase.ack_mode == "passthrough" {
                    String::new()
                } else {
                    format!(", ack mode {}", phase.ack_mode)
                },
                match (rate, self.systems.len()) {
                    (Some(rate), 1) => format!(", {rate:.0} msgs/s offered"),
                    (Some(_), _) => ", rate per system as a share of its own saturation".to_owned(),
                    _ => String::new(),
                }
            );
            if markdown {
                let _ = writeln!(out, "### {title}\n\n{}", table.markdown());
            } else {
                let _ = writeln!(out, "{title}\n{}", table.text());
            }
            let mut custody_lines = false;
            for record in self.records.iter().filter(|r| r.phase == phase.name) {
                if let Outcome::Load(load) = &record.outcome
                    && let Some(custody) = load.custody
                {
                    custody_lines = true;
                    let _ = writeln!(
                        out,
                        "{}{} round {}: group commit {} messages per fdatasync ({} commits); \
                         {} still queued at the end, {} dead letters",
                        if markdown { "- " } else { "" },
                        record.system,
                        record.round,
                        custody
                            .mean_batch()
                            .map_or_else(|| "–".to_owned(), |m| format!("{m:.1}")),
                        custody.commits,
                        custody.queued,
                        custody.dead_letters
                    );
                }
            }
            if custody_lines {
                out.push('\n');
            }
            let open_loop = matches!(phase.load, Load::Open { .. });
            if let Some(ranking) = self.ranking(&phase.name, open_loop) {
                for line in ranking.lines() {
                    let _ = writeln!(out, "{}{line}", if markdown { "- " } else { "" });
                }
                out.push('\n');
            }
        }
        out
    }

    /// `results.json`.
    pub fn to_json(&self) -> String {
        let mut doc = Object::default();
        put(&mut doc, "format_version", 1_u64);
        put(&mut doc, "scenario", self.scenario.name.as_str());
        put(&mut doc, "command", self.command.as_str());
        put(&mut doc, "started", self.started.as_str());
        put(&mut doc, "wall_s", self.wall_s);
        put(&mut doc, "machine", self.machine.as_str());
        put(&mut doc, "placement", self.placement.as_str());
        let notes: Vec<OwnedValue> = self.notes.iter().map(|n| n.as_str().into()).collect();
        put(&mut doc, "notes", notes);
        let mut versions = Object::default();
        for (name, version) in &self.versions {
            put(&mut versions, name, version.as_str());
        }
        put(&mut doc, "versions", versions);
        let runs: Vec<OwnedValue> = self.records.iter().map(record_json).collect();
        put(&mut doc, "runs", runs);
        let lines = |peers: bool| -> Vec<OwnedValue> {
            self.problems(peers)
                .iter()
                .map(|p| p.as_str().into())
                .collect()
        };
        put(&mut doc, "passed", self.passed());
        put(&mut doc, "problems", lines(false));
        put(&mut doc, "peer_problems", lines(true));
        let mut text = OwnedValue::from(doc).encode_pp();
        text.push('\n');
        text
    }

    /// `summary.md`.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# mllp-bench: {}\n\n{}\n\n- command: `{}`\n- started: {} (UTC), took {:.0} s\n\
             - machine: {}\n- placement: {}\n",
            self.scenario.name,
            self.scenario.description,
            self.command,
            self.started,
            self.wall_s,
            self.machine,
            self.placement
        );
        for (name, version) in &self.versions {
            let _ = writeln!(out, "- {name}: {version}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "- note: {note}");
        }
        let _ = write!(
            out,
            "\nLatency is the ACK round trip seen by the load generator (open loop: from the \
             intended send time). CPU µs/msg is the system under test's CPU time (user + \
             system, from /proc) per message it relayed, and kernel µs/msg the system part of \
             it (on loopback that includes the TCP receive work of whichever end it sends to); \
             \"other load\" is busy CPU time on the machine that was not ours, plus hypervisor \
             steal, in cores.\n\n{}\n{}\n",
            self.render(true),
            self.verdict()
        );
        out.push_str("\n![latency](latency.svg)\n");
        out
    }

    /// The latency plots: `(file name, svg)`. One system: one plot of every load phase. Several:
    /// one plot per load phase, and `latency.svg` for the first open-loop phase (the one whose
    /// tail means something) or else the first phase.
    pub fn plots(&self) -> Vec<(String, String)> {
        let best = |phase: &str, system: System| -> Option<&'a LoadResult> {
            self.records
                .iter()
                .filter(|r| r.phase == phase && r.system == system)
                .filter_map(|r| match &r.outcome {
                    Outcome::Load(l) => Some(l.as_ref()),
                    _ => None,
                })
                .max_by(|a, b| {
                    a.stats
                        .throughput_msgs_per_s()
                        .total_cmp(&b.stats.throughput_msgs_per_s())
                })
        };
        let load_phases: Vec<&str> = self
            .scenario
            .phases
            .iter()
            .filter(|p| !matches!(p.load, Load::Hold { .. }))
            .map(|p| p.name.as_str())
            .collect();
        let mut plots = Vec::new();
        if self.systems.len() == 1 {
            let system = self.systems[0];
            let labels: Vec<(String, &LoadResult)> = load_phases
                .iter()
                .filter_map(|p| Some((format!("{p} · {system}"), best(p, system)?)))
                .collect();
            if !labels.is_empty() {
                let series: Vec<(&str, &loadgen::stats::RunStats)> =
                    labels.iter().map(|(l, r)| (l.as_str(), &r.stats)).collect();
                plots.push((
                    "latency.svg".to_owned(),
                    loadgen::report::svg_plot_many(
                        &series,
                        &format!("mllp-bench {}: ACK latency", self.scenario.name),
                    ),
                ));
            }
            return plots;
        }
        let main = self
            .scenario
            .phases
            .iter()
            .find(|p| matches!(p.load, Load::Open { .. }))
            .or_else(|| self.scenario.phases.first())
            .map(|p| p.name.clone());
        for phase in load_phases {
            let series: Vec<(&str, &loadgen::stats::RunStats)> = self
                .systems
                .iter()
                .filter_map(|&s| Some((s.name(), &best(phase, s)?.stats)))
                .collect();
            if series.is_empty() {
                continue;
            }
            let svg = loadgen::report::svg_plot_many(
                &series,
                &format!(
                    "mllp-bench {}: {phase}, ACK latency (best round)",
                    self.scenario.name
                ),
            );
            if main.as_deref() == Some(phase) {
                plots.push(("latency.svg".to_owned(), svg.clone()));
            }
            plots.push((
                format!("latency-{}.svg", crate::runner::file_safe(phase)),
                svg,
            ));
        }
        plots
    }
}

fn record_json(r: &RunRecord) -> OwnedValue {
    let mut run = Object::default();
    put(&mut run, "phase", r.phase.as_str());
    put(&mut run, "system", r.system.name());
    put(&mut run, "round", u64::from(r.round));
    match &r.outcome {
        Outcome::Load(l) => {
            put(&mut run, "status", "ok");
            let s = &l.stats;
            put(&mut run, "msgs_per_s", finite(s.throughput_msgs_per_s()));
            if let Some(rate) = l.target_rate {
                put(&mut run, "target_rate", finite(rate));
            }
            let mut latency = Object::default();
            for (key, q) in [
                ("p50", 0.5),
                ("p90", 0.9),
                ("p99", 0.99),
                ("p999", 0.999),
                ("p9999", 0.9999),
            ] {
                put(&mut latency, key, finite(s.latency_us(q)));
            }
            put(&mut latency, "max", finite(s.latency_max_us()));
            put(&mut run, "latency_us", latency);
            put(&mut run, "sent", s.sent);
            put(&mut run, "acked", s.acked);
            put(&mut run, "warmup_sent", s.warmup_sent);
            let mut codes = Object::default();
            for (code, n) in &s.ack_codes {
                put(&mut codes, code, *n);
            }
            put(&mut run, "ack_codes", codes);
            let mut errors = Object::default();
            for (kind, n) in &s.errors {
                put(&mut errors, kind, *n);
            }
            put(&mut run, "errors", errors);
            put(&mut run, "sink_received", l.sink.received);
            put(&mut run, "sink_unique", l.sink.unique);
            put(&mut run, "sink_duplicates", l.sink.duplicates);
            if let Some(cpu) = l.sut_us_per_msg() {
                put(&mut run, "sut_cpu_us_per_msg", finite(cpu));
            }
            if let Some(cpu) = l.sut_kernel_us_per_msg() {
                put(&mut run, "sut_kernel_cpu_us_per_msg", finite(cpu));
            }
            put(&mut run, "sut_cpu_s", finite(l.sut_cpu_s));
            put(&mut run, "sut_system_cpu_s", finite(l.sut_system_s));
            put(&mut run, "wall_s", finite(l.wall_s));
            put(&mut run, "sut_rss_kib", l.sut_memory.rss_kib);
            put(&mut run, "sut_pss_kib", l.sut_memory.pss_kib);
            put(&mut run, "loadgen_cpu_s", finite(l.loadgen_cpu_s));
            put(&mut run, "foreign_cores", finite(l.foreign_cores));
            put(&mut run, "steal_cores", finite(l.steal_cores));
            if let Some(custody) = l.custody {
                put(&mut run, "journal_queued_at_end", custody.queued);
                put(&mut run, "journal_dead_letters", custody.dead_letters);
                put(&mut run, "journal_commits", custody.commits);
                put(&mut run, "journal_committed", custody.committed);
                if let Some(mean) = custody.mean_batch() {
                    put(&mut run, "journal_mean_batch", finite(mean));
                }
            }
            let problems: Vec<OwnedValue> = l
                .delivery_problems()
                .into_iter()
                .map(OwnedValue::from)
                .collect();
            put(&mut run, "delivery_problems", problems);
        }
        Outcome::Hold(h) => {
            put(&mut run, "status", "ok");
            put(&mut run, "connections", u64::from(h.connections));
            put(&mut run, "baseline_connections", u64::from(h.baseline));
            put(&mut run, "rss_idle_kib", h.idle.rss_kib);
            put(&mut run, "rss_baseline_kib", h.at_baseline.rss_kib);
            put(&mut run, "rss_held_kib", h.at_full.rss_kib);
            put(&mut run, "pss_baseline_kib", h.at_baseline.pss_kib);
            put(&mut run, "pss_held_kib", h.at_full.pss_kib);
            put(
                &mut run,
                "kib_per_connection_rss",
                finite(h.kib_per_connection()),
            );
            put(
                &mut run,
                "kib_per_connection_pss",
                finite(h.pss_kib_per_connection()),
            );
        }
        Outcome::Failed(why) => {
            put(&mut run, "status", "failed");
            put(&mut run, "reason", why.as_str());
        }
        Outcome::Skipped(why) => {
            put(&mut run, "status", "skipped");
            put(&mut run, "reason", why.as_str());
        }
    }
    OwnedValue::from(run)
}

/// Sets `key` in a JSON object.
fn put(object: &mut Object, key: &str, value: impl Into<OwnedValue>) {
    object.insert(key.to_owned(), value.into());
}

/// JSON has no NaN or infinity.
fn finite(x: f64) -> OwnedValue {
    if x.is_finite() {
        x.into()
    } else {
        OwnedValue::null()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_numbers() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
        assert_eq!(num(Some(53_123.4), 0), "53,123");
        assert_eq!(num(Some(9_978.0), 0), "9,978");
        assert_eq!(num(Some(998.0), 0), "998");
        assert_eq!(num(Some(-1_234_567.0), 0), "-1,234,567");
        assert_eq!(num(Some(12.345), 1), "12.3");
        assert_eq!(num(None, 1), "–");
        assert_eq!(num(Some(f64::NAN), 1), "–");
    }

    #[test]
    fn tables_align_and_render_as_markdown() {
        let mut t = Table::new(&["system", "msgs/s"]);
        t.rows.push(vec!["a".into(), "1".into()]);
        t.rows.push(vec!["mllp-relay".into(), "53,000".into()]);
        let text = t.text();
        assert_eq!(
            text,
            "system      msgs/s\na                1\nmllp-relay  53,000\n"
        );
        assert!(
            t.markdown()
                .starts_with("| system | msgs/s |\n|---|---:|\n")
        );
    }
}
