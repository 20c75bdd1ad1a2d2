//! `ramp`: finds the highest open-loop rate a link sustains at a p99 target.
//!
//! Each step is a whole open-loop [`send`](crate::send::run) run (warm-up, then a measured
//! period) at `start + k × step` messages per second. A step passes while its p99 ACK latency
//! stays at or under the target, its errors stay under the limit, and it achieved nearly the
//! rate asked; the first failing step ends the ramp. The answer is the last passing rate.
//! Open loop is essential here: a closed loop would slow down with the target and never fail
//! on latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use simd_json::OwnedValue;
use simd_json::owned::Object;
use simd_json::prelude::{ValueBuilder as _, Writable as _};

use crate::pace::Arrival;
use crate::send::{self, Loop, SendConfig, SendError, Stop};
use crate::stats::RunStats;

/// How to step.
#[derive(Debug, Clone, Copy)]
pub struct RampPlan {
    /// First rate (messages per second).
    pub start: f64,
    /// Added at each step.
    pub step: f64,
    /// Stop stepping above this rate even if the targets still hold.
    pub max_rate: Option<f64>,
    /// Warm-up before each step's measurement.
    pub warmup: Duration,
    /// Measured length of each step.
    pub step_duration: Duration,
    /// The p99 ACK latency a step must stay at or under.
    pub p99_target: Duration,
    /// The largest share of a step's messages that may end in errors.
    pub max_error_rate: f64,
    /// The smallest share of the asked rate a step must achieve.
    pub min_achieved: f64,
    /// Uniform or Poisson spacing.
    pub arrival: Arrival,
}

/// Why a step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepFailure {
    /// Not one ACK came back.
    NoAcks,
    /// p99 above the target.
    LatencyOverTarget,
    /// Too many errors.
    TooManyErrors,
    /// The target could not keep up with the asked rate.
    RateNotAchieved,
}

impl StepFailure {
    /// A short label for tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoAcks => "no ACKs",
            Self::LatencyOverTarget => "p99 over target",
            Self::TooManyErrors => "too many errors",
            Self::RateNotAchieved => "rate not achieved",
        }
    }
}

/// One step's result.
#[derive(Debug, Clone)]
pub struct Step {
    /// The rate asked.
    pub rate: f64,
    /// What was measured.
    pub stats: RunStats,
    /// `None` when the step passed.
    pub failure: Option<StepFailure>,
}

impl Step {
    /// The share of the step's sent messages that ended in errors.
    pub fn error_rate(&self) -> f64 {
        if self.stats.sent == 0 {
            return 0.0;
        }
        self.stats.error_total() as f64 / self.stats.sent as f64
    }
}

/// The whole ramp.
#[derive(Debug, Clone)]
pub struct RampOutcome {
    /// Every step run, in order.
    pub steps: Vec<Step>,
    /// The highest passing rate, if any step passed.
    pub sustainable_rate: Option<f64>,
    /// The plan it followed.
    pub plan: RampPlan,
}

/// Judges one step against the plan.
pub fn judge(plan: &RampPlan, rate: f64, stats: &RunStats) -> Option<StepFailure> {
    let sent = stats.sent.max(1) as f64;
    if stats.acked == 0 {
        Some(StepFailure::NoAcks)
    } else if stats.latency_us(0.99) > plan.p99_target.as_secs_f64() * 1e6 {
        Some(StepFailure::LatencyOverTarget)
    } else if stats.error_total() as f64 / sent > plan.max_error_rate {
        Some(StepFailure::TooManyErrors)
    } else if stats.throughput_msgs_per_s() < rate * plan.min_achieved {
        Some(StepFailure::RateNotAchieved)
    } else {
        None
    }
}

/// Runs the ramp: `base` gives target, connections and messages; its loop mode, warm-up and
/// stop are set per step. `on_step` sees each step as it finishes. Setting `stop` ends the
/// ramp after the current step.
///
/// # Errors
/// When a step cannot start (see [`send::run`]).
pub fn run(
    base: &SendConfig,
    plan: RampPlan,
    stop: &Arc<AtomicBool>,
    mut on_step: impl FnMut(&Step),
) -> Result<RampOutcome, SendError> {
    let mut outcome = RampOutcome {
        steps: Vec::new(),
        sustainable_rate: None,
        plan,
    };
    let mut rate = plan.start;
    while !stop.load(Ordering::Relaxed) {
        let mut config = base.clone();
        config.mode = Loop::Open {
            rate,
            arrival: plan.arrival,
        };
        config.warmup = plan.warmup;
        config.stop = Stop::Duration(plan.step_duration);
        let stats = send::run(config, stop, |_| {})?;
        let failure = judge(&plan, rate, &stats);
        let step = Step {
            rate,
            stats,
            failure,
        };
        on_step(&step);
        outcome.steps.push(step);
        if failure.is_some() {
            break;
        }
        outcome.sustainable_rate = Some(rate);
        rate += plan.step;
        if plan.max_rate.is_some_and(|max| rate > max) {
            break;
        }
    }
    Ok(outcome)
}

impl RampOutcome {
    /// The ramp as JSON: the plan, every step's rate, achieved throughput, latency
    /// percentiles (µs), errors and verdict, and `sustainable_rate` (null when no step
    /// passed).
    pub fn to_json(&self) -> Vec<u8> {
        let plan = &self.plan;
        let mut plan_doc = Object::default();
        plan_doc.insert("start".into(), plan.start.into());
        plan_doc.insert("step".into(), plan.step.into());
        plan_doc.insert(
            "p99_target_us".into(),
            (plan.p99_target.as_secs_f64() * 1e6).into(),
        );
        plan_doc.insert("max_error_rate".into(), plan.max_error_rate.into());
        plan_doc.insert("min_achieved".into(), plan.min_achieved.into());
        plan_doc.insert(
            "step_duration_s".into(),
            plan.step_duration.as_secs_f64().into(),
        );
        plan_doc.insert("warmup_s".into(), plan.warmup.as_secs_f64().into());
        let steps: Vec<OwnedValue> = self
            .steps
            .iter()
            .map(|step| {
                let s = &step.stats;
                let mut doc = Object::default();
                doc.insert("rate".into(), step.rate.into());
                doc.insert(
                    "throughput_msgs_per_s".into(),
                    s.throughput_msgs_per_s().into(),
                );
                doc.insert("sent".into(), s.sent.into());
                doc.insert("acked".into(), s.acked.into());
                doc.insert("errors".into(), s.error_total().into());
                doc.insert("error_rate".into(), step.error_rate().into());
                for (key, q) in [
                    ("p50_us", 0.5),
                    ("p90_us", 0.9),
                    ("p99_us", 0.99),
                    ("p999_us", 0.999),
                ] {
                    doc.insert(key.into(), s.latency_us(q).into());
                }
                doc.insert("max_us".into(), s.latency_max_us().into());
                doc.insert("pass".into(), step.failure.is_none().into());
                doc.insert(
                    "failure".into(),
                    step.failure
                        .map_or(OwnedValue::null(), |f| f.label().into()),
                );
                OwnedValue::from(doc)
            })
            .collect();
        let mut doc = Object::default();
        doc.insert("plan".into(), OwnedValue::from(plan_doc));
        doc.insert("steps".into(), OwnedValue::from(steps));
        doc.insert(
            "sustainable_rate".into(),
            self.sustainable_rate
                .map_or(OwnedValue::null(), OwnedValue::from),
        );
        let mut bytes = OwnedValue::from(doc).encode_pp().into_bytes();
        bytes.push(b'\n');
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Interval;

    fn plan() -> RampPlan {
        RampPlan {
            start: 1_000.0,
            step: 1_000.0,
            max_rate: None,
            warmup: Duration::ZERO,
            step_duration: Duration::from_secs(1),
            p99_target: Duration::from_millis(2),
            max_error_rate: 0.01,
            min_achieved: 0.9,
            arrival: Arrival::Uniform,
        }
    }

    fn stats(acked: u64, errors: u64, latency_us: u64) -> RunStats {
        let mut interval = Interval {
            sent: acked + errors,
            ..Interval::default()
        };
        for _ in 0..acked {
            interval.ack(b"AA", latency_us * 1_000);
        }
        interval.errors(crate::stats::ErrorKind::AckTimeout, errors);
        let mut run = RunStats::default();
        run.add_interval(&interval, 0);
        run.duration_s = 1.0;
        run
    }

    #[test]
    fn steps_are_judged_on_latency_errors_and_achieved_rate() {
        let p = plan();
        assert_eq!(judge(&p, 1_000.0, &stats(1_000, 0, 500)), None);
        assert_eq!(
            judge(&p, 1_000.0, &stats(1_000, 0, 2_500)),
            Some(StepFailure::LatencyOverTarget)
        );
        assert_eq!(
            judge(&p, 1_000.0, &stats(980, 20, 500)),
            Some(StepFailure::TooManyErrors)
        );
        assert_eq!(
            judge(&p, 2_000.0, &stats(1_000, 0, 500)),
            Some(StepFailure::RateNotAchieved)
        );
        assert_eq!(
            judge(&p, 1_000.0, &stats(0, 0, 0)),
            Some(StepFailure::NoAcks)
        );
    }

    #[test]
    fn json_lists_steps_and_the_sustainable_rate() {
        let outcome = RampOutcome {
            steps: vec![
                Step {
                    rate: 1_000.0,
                    stats: stats(1_000, 0, 500),
                    failure: None,
                },
                Step {
                    rate: 2_000.0,
                    stats: stats(1_000, 0, 5_000),
                    failure: Some(StepFailure::LatencyOverTarget),
                },
            ],
            sustainable_rate: Some(1_000.0),
            plan: plan(),
        };
        let mut json = outcome.to_json();
        let doc = simd_json::to_owned_value(&mut json).unwrap();
        use simd_json::prelude::*;
        assert_eq!(doc["sustainable_rate"].as_f64(), Some(1_000.0));
        assert_eq!(doc["steps"].as_array().unwrap().len(), 2);
        assert_eq!(doc["steps"][1]["failure"].as_str(), Some("p99 over target"));
        assert_eq!(doc["steps"][0]["pass"].as_bool(), Some(true));
    }
}
