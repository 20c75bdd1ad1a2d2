//! Scenario files: what `mllp-bench` runs, as TOML.
//!
//! A scenario is a list of phases (closed-loop saturation, open-loop at a rate, idle
//! connections held) run against a list of systems for some rounds. The default scenario is
//! embedded in the binary, so `mllp-bench` with no arguments needs no file; `bench/scenarios/`
//! holds it and the larger matrices. Files are read in a raw serde form that rejects unknown
//! keys, then validated into [`Scenario`], so a typo names its key instead of being ignored.

use crate::system::System;
use anyhow::{Context, bail};
use netio::units::{parse_duration, parse_size};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The scenario `mllp-bench` runs without `--scenario`.
pub const DEFAULT_TOML: &str = include_str!("../scenarios/default.toml");

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name, for the report.
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// The systems it runs, in the order of each round.
    pub systems: Vec<System>,
    /// How many times every (phase, system) pair runs, interleaved round-robin.
    pub rounds: u32,
    /// CPUs for the system under test (a relay; the sink in the direct baselines).
    pub sut_cpus: String,
    /// CPUs for the load generator and, behind a relay, the sink.
    pub load_cpus: String,
    /// Keep the CPUs awake with SCHED_IDLE busy loops (a VM's halted vCPU takes milliseconds
    /// to wake; see the performance study).
    pub spinners: bool,
    /// The phases, in order.
    pub phases: Vec<Phase>,
}

/// One measurement step.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Unique within the scenario; open-loop phases name the closed-loop phase their rate
    /// derives from.
    pub name: String,
    /// What load it applies.
    pub load: Load,
    /// Connections from the load generator (held connections for [`Load::Hold`]).
    pub connections: u32,
    /// The generated message.
    pub template: Template,
    /// Its size in bytes.
    pub size: usize,
    /// TLS from the load generator to the system under test.
    pub tls: bool,
    /// The relay's ACK mode (`passthrough`, `local` or `durable`); peers ignore it.
    pub ack_mode: String,
    /// How long the sink waits before each ACK (a slow receiver); zero by default.
    pub sink_ack_delay: Duration,
    /// Messages in flight per connection.
    pub pipeline: u32,
    /// Sent without being measured, first.
    pub warmup: Duration,
    /// Measured.
    pub duration: Duration,
}

/// The load of a phase.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// Each connection sends its next message when the ACK of the last one arrives.
    Closed,
    /// A fixed total rate, latency from the intended send time.
    Open {
        /// The rate, fixed or derived.
        rate: Rate,
        /// `uniform` or `poisson`.
        arrival: String,
    },
    /// Connections opened and held idle; memory measured at `baseline` and at `connections`.
    Hold {
        /// The connection count of the first memory reading.
        baseline: u32,
    },
}

/// How an open-loop rate is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Rate {
    /// Messages per second in total.
    Fixed(f64),
    /// This share of what the same system achieved in the named closed-loop phase of the same
    /// round.
    FractionOf {
        /// The share (0.5 = half of saturation).
        fraction: f64,
        /// The closed-loop phase.
        phase: String,
    },
}

/// The generated message's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// ADT^A01.
    Adt,
    /// ORU^R01 lab result (base64 OBX-5 padding).
    Oru,
}

impl Template {
    /// The `mllp-loadgen --template` value.
    pub fn arg(self) -> &'static str {
        match self {
            Self::Adt => "adt",
            Self::Oru => "oru",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    description: Option<String>,
    systems: Option<Vec<String>>,
    rounds: Option<u32>,
    warmup: Option<String>,
    duration: Option<String>,
    sut_cpus: Option<String>,
    load_cpus: Option<String>,
    spinners: Option<bool>,
    phase: Vec<RawPhase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    name: String,
    load: Option<String>,
    connections: Option<u32>,
    template: Option<String>,
    size: Option<String>,
    tls: Option<bool>,
    ack_mode: Option<String>,
    sink_ack_delay: Option<String>,
    pipeline: Option<u32>,
    rate: Option<f64>,
    rate_fraction: Option<f64>,
    rate_of: Option<String>,
    arrival: Option<String>,
    baseline_connections: Option<u32>,
    warmup: Option<String>,
    duration: Option<String>,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid scenario {}", path.display()))
    }

    /// The embedded default scenario.
    pub fn default_scenario() -> Self {
        Self::parse(DEFAULT_TOML).expect("the embedded default scenario is valid")
    }

    /// Parses and validates scenario TOML.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let raw: RawScenario = toml::from_str(text)?;
        let duration = |key: &str, value: Option<&String>, default: Duration| match value {
            Some(text) => parse_duration(text).with_context(|| format!("key {key}")),
            None => Ok(default),
        };
        let warmup = duration("warmup", raw.warmup.as_ref(), Duration::from_secs(1))?;
        let measured = duration("duration", raw.duration.as_ref(), Duration::from_secs(8))?;
        let systems = match &raw.systems {
            Some(names) => names
                .iter()
                .map(|n| System::parse(n).with_context(|| "key systems".to_owned()))
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => vec![System::Relay],
        };
        if systems.is_empty() {
            bail!("key systems: the list is empty");
        }
        let rounds = raw.rounds.unwrap_or(1);
        if rounds == 0 {
            bail!("key rounds: must be at least 1");
        }
        if raw.phase.is_empty() {
            bail!("no [[phase]]: a scenario needs at least one");
        }
        let mut phases: Vec<Phase> = Vec::new();
        for (i, p) in raw.phase.iter().enumerate() {
            let at = |key: &str| format!("phase {:?} (#{}), key {key}", p.name, i + 1);
            if p.name.trim().is_empty() || phases.iter().any(|q| q.name == p.name) {
                bail!("{}: names must be unique and not empty", at("name"));
            }
            let load = match p.load.as_deref().unwrap_or("closed") {
                "closed" => Load::Closed,
                "open" => {
                    let rate = match (p.rate, p.rate_fraction, &p.rate_of) {
                        (Some(r), None, None) if r > 0.0 && r.is_finite() => Rate::Fixed(r),
                        (None, Some(f), Some(of)) if f > 0.0 && f.is_finite() => {
                            match phases.iter().find(|q| &q.name == of) {
                                Some(q) if q.load == Load::Closed => Rate::FractionOf {
                                    fraction: f,
                                    phase: of.clone(),
                                },
                                _ => bail!(
                                    "{}: {of:?} must name an earlier closed-loop phase",
                                    at("rate_of")
                                ),
                            }
                        }
                        _ => bail!(
                            "{}: an open-loop phase needs rate = N (messages/s, > 0), or \
                             rate_fraction = F with rate_of = \"<earlier closed phase>\"",
                            at("rate")
                        ),
                    };
                    let arrival = p.arrival.clone().unwrap_or_else(|| "uniform".to_owned());
                    if arrival != "uniform" && arrival != "poisson" {
                        bail!("{}: uniform or poisson, not {arrival:?}", at("arrival"));
                    }
                    Load::Open { rate, arrival }
                }
                "hold" => {
                    let baseline = p.baseline_connections.unwrap_or(100);
                    if baseline >= p.connections.unwrap_or(1000) {
                        bail!(
                            "{}: must be below connections (memory per connection is the \
                             growth from the baseline to the full count)",
                            at("baseline_connections")
                        );
                    }
                    Load::Hold { baseline }
                }
                other => bail!("{}: closed, open or hold, not {other:?}", at("load")),
            };
            let open_only = [
                ("rate", p.rate.is_some()),
                ("rate_fraction", p.rate_fraction.is_some()),
                ("rate_of", p.rate_of.is_some()),
                ("arrival", p.arrival.is_some()),
            ];
            if !matches!(load, Load::Open { .. })
                && let Some((key, _)) = open_only.iter().find(|(_, set)| *set)
            {
                bail!("{}: only open-loop phases take it", at(key));
            }
            if !matches!(load, Load::Hold { .. }) && p.baseline_connections.is_some() {
                bail!("{}: only hold phases take it", at("baseline_connections"));
            }
            let default_connections = if matches!(load, Load::Hold { .. }) {
                1000
            } else {
                32
            };
            let connections = p.connections.unwrap_or(default_connections);
            if connections == 0 {
                bail!("{}: must be at least 1", at("connections"));
            }
            let template = match p.template.as_deref().unwrap_or("oru") {
                "oru" => Template::Oru,
                "adt" => Template::Adt,
                other => bail!("{}: oru or adt, not {other:?}", at("template")),
            };
            let size = match &p.size {
                Some(text) => parse_size(text).with_context(|| at("size"))?,
                None => 1024,
            };
            let ack_mode = p
                .ack_mode
                .clone()
                .unwrap_or_else(|| "passthrough".to_owned());
            if !["passthrough", "local", "durable"].contains(&ack_mode.as_str()) {
                bail!(
                    "{}: passthrough, local or durable, not {ack_mode:?}",
                    at("ack_mode")
                );
            }
            let sink_ack_delay = duration(
                &at("sink_ack_delay"),
                p.sink_ack_delay.as_ref(),
                Duration::ZERO,
            )?;
            let pipeline = p.pipeline.unwrap_or(1);
            if pipeline == 0 {
                bail!("{}: must be at least 1", at("pipeline"));
            }
            phases.push(Phase {
                name: p.name.clone(),
                load,
                connections,
                template,
                size,
                tls: p.tls.unwrap_or(true),
                ack_mode,
                sink_ack_delay,
                pipeline,
                warmup: duration(&at("warmup"), p.warmup.as_ref(), warmup)?,
                duration: duration(&at("duration"), p.duration.as_ref(), measured)?,
            });
        }
        Ok(Self {
            name: raw.name,
            description: raw.description.unwrap_or_default(),
            systems,
            rounds,
            sut_cpus: raw.sut_cpus.unwrap_or_else(|| "1".to_owned()),
            load_cpus: raw.load_cpus.unwrap_or_else(|| "0".to_owned()),
            spinners: raw.spinners.unwrap_or(true),
            phases,
        })
    }

    /// Whether `system` takes part in `phase`. The peers' configurations and the TLS baseline
    /// terminate TLS, so they sit out plain phases; `mllp-relay` runs every phase (plain or
    /// TLS inbound) and the plain baseline runs every phase as the floor (no TLS, no relay).
    pub fn applies(system: System, phase: &Phase) -> bool {
        match system {
            System::Relay | System::DirectPlain => true,
            System::DirectTls | System::Peer(_) => phase.tls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_valid() {
        let s = Scenario::default_scenario();
        assert_eq!(s.systems, vec![System::Relay]);
        assert!(s.phases.iter().any(|p| p.load == Load::Closed));
        assert!(s.phases.iter().any(|p| matches!(p.load, Load::Open { .. })));
    }

    #[test]
    fn the_shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap();
                seen += 1;
            }
        }
        assert!(seen >= 2, "default.toml and full.toml at least");
    }

    fn error(text: &str) -> String {
        format!("{:#}", Scenario::parse(text).unwrap_err())
    }

    #[test]
    fn mistakes_name_their_key() {
        let head = "name = \"t\"\n";
        assert!(
            error(&format!("{head}[[phase]]\nname = \"a\"\nconections = 3\n"))
                .contains("conections")
        );
        assert!(
            error(&format!("{head}[[phase]]\nname = \"a\"\nload = \"open\"\n"))
                .contains("key rate")
        );
        assert!(
            error(&format!(
                "{head}[[phase]]\nname = \"a\"\nload = \"open\"\nrate_fraction = 0.5\nrate_of = \"b\"\n"
            ))
            .contains("earlier closed-loop phase")
        );
        assert!(
            error(&format!("{head}[[phase]]\nname = \"a\"\nrate = 5.0\n"))
                .contains("only open-loop")
        );
        assert!(
            error(&format!(
                "{head}[[phase]]\nname = \"a\"\n[[phase]]\nname = \"a\"\n"
            ))
            .contains("unique")
        );
        assert!(
            error(&format!(
                "{head}[[phase]]\nname = \"a\"\nsize = \"1 parsec\"\n"
            ))
            .contains("key size")
        );
        assert!(
            error(&format!(
                "{head}systems = [\"ftp\"]\n[[phase]]\nname = \"a\"\n"
            ))
            .contains("systems")
        );
        assert!(
            error(&format!(
                "{head}[[phase]]\nname = \"h\"\nload = \"hold\"\nconnections = 50\n"
            ))
            .contains("baseline_connections")
        );
        assert!(error(head).contains("phase"));
    }

    #[test]
    fn open_loop_rates_derive_from_an_earlier_closed_phase() {
        let s = Scenario::parse(
            "name = \"t\"\nsystems = [\"mllp-relay\", \"haproxy\"]\nrounds = 2\n\
             [[phase]]\nname = \"sat\"\nconnections = 8\nsize = \"200\"\ntemplate = \"adt\"\n\
             [[phase]]\nname = \"half\"\nload = \"open\"\nrate_fraction = 0.5\nrate_of = \"sat\"\narrival = \"poisson\"\n",
        )
        .unwrap();
        assert_eq!(s.rounds, 2);
        assert_eq!(s.phases[0].template, Template::Adt);
        assert_eq!(s.phases[0].size, 200);
        assert_eq!(
            s.phases[1].load,
            Load::Open {
                rate: Rate::FractionOf {
                    fraction: 0.5,
                    phase: "sat".to_owned()
                },
                arrival: "poisson".to_owned()
            }
        );
    }
}
