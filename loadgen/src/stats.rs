//! What a run measured: counters, the latency histogram and the per-second timeline.
//!
//! Each sending thread records into its own [`Interval`] (no sharing, no locks on the hot
//! path) and hands it over ([`Interval::take`]) to the main thread once a second; the main
//! thread adds them into a [`RunStats`]. The same addition merges runs from several processes
//! or hosts ([`RunStats::merge`]), so a merged result is exactly what one process would have
//! recorded.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds, from 1 ns up to one hour, to 3 significant digits
/// (the precision wrk2 and HdrHistogram users expect).
pub const LATENCY_MAX_NS: u64 = 3_600 * 1_000_000_000;
/// Significant digits kept by every latency histogram.
pub const LATENCY_SIGFIGS: u8 = 3;

/// An empty latency histogram with the project's bounds.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, LATENCY_SIGFIGS)
        .expect("constant histogram bounds are valid")
}

/// CPU time, user plus system, that this process (all its threads, live and finished) has
/// used since it started, in seconds: `CLOCK_PROCESS_CPUTIME_ID`, what `getrusage(RUSAGE_SELF)`
/// adds up, at nanosecond resolution.
pub fn process_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// The first MSA-1 codes of HL7 (original and enhanced mode), in report order. Anything else a
/// receiver sends is counted under its own text.
pub const ACK_CODES: [&str; 6] = ["AA", "AE", "AR", "CA", "CE", "CR"];

/// Why a message did not get a valid ACK, or what went wrong on a connection. Each kind is a
/// key of the `errors` map in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No ACK within `--ack-timeout` (the connection is then closed and reopened).
    AckTimeout,
    /// An ACK whose MSA-2 names no message in flight on that connection.
    Msa2Mismatch,
    /// A frame that is not a readable ACK (no MSA segment, no MSA-1).
    BadAck,
    /// A framing error in what the target sent (data outside a frame, oversize).
    BadFraming,
    /// The TCP connection could not be opened (refused, unreachable, timed out).
    Connect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The target closed the connection with messages in flight.
    ClosedWithInFlight,
    /// A socket error while sending or reading.
    Io,
    /// Messages still unanswered when the run ended and the drain period ran out.
    Unanswered,
    /// Open loop only: the sending schedule fell so far behind (target down) that intended
    /// sends were given up rather than queued without bound.
    ScheduleOverflow,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [Self; 10] = [
        Self::AckTimeout,
        Self::Msa2Mismatch,
        Self::BadAck,
        Self::BadFraming,
        Self::Connect,
        Self::Tls,
        Self::ClosedWithInFlight,
        Self::Io,
        Self::Unanswered,
        Self::ScheduleOverflow,
    ];

    /// The key used in JSON and tables.
    pub fn key(self) -> &'static str {
        match self {
            Self::AckTimeout => "ack_timeout",
            Self::Msa2Mismatch => "msa2_mismatch",
            Self::BadAck => "bad_ack",
            Self::BadFraming => "bad_framing",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::ClosedWithInFlight => "closed_with_in_flight",
            Self::Io => "io",
            Self::Unanswered => "unanswered",
            Self::ScheduleOverflow => "schedule_overflow",
        }
    }
}

/// What one thread measured since its last report. Cheap to fill: fixed arrays and one
/// histogram, reset (not reallocated) after each hand-over.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Messages written to the target.
    pub sent: u64,
    /// ACKs matched to a message, any code.
    pub acked: u64,
    /// Matched ACKs by MSA-1, indexed like [`ACK_CODES`]; other codes in `other_codes`.
    pub codes: [u64; ACK_CODES.len()],
    /// Matched ACKs with an MSA-1 outside [`ACK_CODES`] (kept by their text).
    pub other_codes: BTreeMap<String, u64>,
    /// Errors by kind, indexed like [`ErrorKind::ALL`].
    pub errors: [u64; ErrorKind::ALL.len()],
    /// Connections re-opened after a failure.
    pub reconnects: u64,
    /// Messages written during the warm-up (not in `sent`).
    pub warmup_sent: u64,
    /// ACKs matched to warm-up messages (not in `acked`; their latency is not recorded).
    pub warmup_acked: u64,
    /// ACK latency of every matched ACK, in ns.
    pub latency: Histogram<u64>,
}

impl Default for Interval {
    fn default() -> Self {
        Self {
            sent: 0,
            acked: 0,
            codes: [0; ACK_CODES.len()],
            other_codes: BTreeMap::new(),
            errors: [0; ErrorKind::ALL.len()],
            reconnects: 0,
            warmup_sent: 0,
            warmup_acked: 0,
            latency: new_latency_histogram(),
        }
    }
}

impl Interval {
    /// Records a matched ACK with MSA-1 `code` and its latency.
    pub fn ack(&mut self, code: &[u8], latency_ns: u64) {
        self.acked += 1;
        match ACK_CODES.iter().position(|c| c.as_bytes() == code) {
            Some(i) => self.codes[i] += 1,
            None => {
                let text = String::from_utf8_lossy(code).into_owned();
                *self.other_codes.entry(text).or_default() += 1;
            }
        }
        // Saturate rather than fail: a latency beyond an hour is still "at least an hour".
        self.latency.saturating_record(latency_ns.max(1));
    }

    /// Counts one error of `kind`.
    pub fn error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }

    /// Counts `n` errors of `kind`.
    pub fn errors(&mut self, kind: ErrorKind, n: u64) {
        self.errors[kind as usize] += n;
    }

    /// Total errors of every kind.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Takes the contents, leaving this interval empty (the histogram's memory is kept).
    pub fn take(&mut self) -> Self {
        let snapshot = self.clone();
        self.sent = 0;
        self.acked = 0;
        self.codes = [0; ACK_CODES.len()];
        self.other_codes.clear();
        self.errors = [0; ErrorKind::ALL.len()];
        self.reconnects = 0;
        self.warmup_sent = 0;
        self.warmup_acked = 0;
        self.latency.reset();
        snapshot
    }
}

/// The whole result of a run (or of several merged runs).
#[derive(Debug, Clone)]
pub struct RunStats {
    /// Messages written to the target during the measured period.
    pub sent: u64,
    /// ACKs matched to those messages, any code.
    pub acked: u64,
    /// Matched ACKs by MSA-1 text (`AA`, `AE`, … and anything else seen).
    pub ack_codes: BTreeMap<String, u64>,
    /// Errors by [`ErrorKind::key`].
    pub errors: BTreeMap<String, u64>,
    /// Connections re-opened after a failure.
    pub reconnects: u64,
    /// Messages written during the warm-up, before the measured period (not in `sent`).
    /// `sent + warmup_sent` is every message the run wrote.
    pub warmup_sent: u64,
    /// ACKs matched to warm-up messages (not in `acked`), whenever they arrived.
    pub warmup_acked: u64,
    /// CPU time (user + system, all threads) the generating process used over its whole life,
    /// in seconds; 0 when not measured. Merged runs add up.
    pub process_cpu_s: f64,
    /// Length of the measured period, in seconds (for merged runs: the longest).
    pub duration_s: f64,
    /// ACK latency in ns (from the intended send time in open loop).
    pub latency: Histogram<u64>,
    /// ACKs matched in each second of the measured period (index = second).
    pub timeline: Vec<u64>,
    /// Free-form facts about the run (mode, target, connections, rate, …) for the report.
    pub meta: BTreeMap<String, String>,
}

impl Default for RunStats {
    fn default() -> Self {
        Self {
            sent: 0,
            acked: 0,
            ack_codes: BTreeMap::new(),
            errors: BTreeMap::new(),
            reconnects: 0,
            warmup_sent: 0,
            warmup_acked: 0,
            process_cpu_s: 0.0,
            duration_s: 0.0,
            latency: new_latency_histogram(),
            timeline: Vec::new(),
            meta: BTreeMap::new(),
        }
    }
}

impl RunStats {
    /// Adds one thread's interval, whose ACKs fall in second `second` of the measured period.
    pub fn add_interval(&mut self, interval: &Interval, second: usize) {
        self.sent += interval.sent;
        self.acked += interval.acked;
        for (code, n) in ACK_CODES.iter().zip(interval.codes) {
            if n > 0 {
                *self.ack_codes.entry((*code).to_owned()).or_default() += n;
            }
        }
        for (code, n) in &interval.other_codes {
            *self.ack_codes.entry(code.clone()).or_default() += n;
        }
        for (kind, n) in ErrorKind::ALL.iter().zip(interval.errors) {
            if n > 0 {
                *self.errors.entry(kind.key().to_owned()).or_default() += n;
            }
        }
        self.reconnects += interval.reconnects;
        self.warmup_sent += interval.warmup_sent;
        self.warmup_acked += interval.warmup_acked;
        self.latency
            .add(&interval.latency)
            .expect("histograms share bounds");
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, 0);
        }
        self.timeline[second] += interval.acked;
    }

    /// Adds another run's results into this one: counts and histograms add, timelines add
    /// second by second, the duration is the longer of the two (runs merged are concurrent).
    pub fn merge(&mut self, other: &Self) {
        self.sent += other.sent;
        self.acked += other.acked;
        for (code, n) in &other.ack_codes {
            *self.ack_codes.entry(code.clone()).or_default() += n;
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        self.reconnects += other.reconnects;
        self.warmup_sent += other.warmup_sent;
        self.warmup_acked += other.warmup_acked;
        self.process_cpu_s += other.process_cpu_s;
        self.duration_s = self.duration_s.max(other.duration_s);
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), 0);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            *mine += theirs;
        }
        for (k, v) in &other.meta {
            self.meta.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    /// Total errors of every kind.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Matched ACKs per second over the measured period.
    pub fn throughput_msgs_per_s(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.acked as f64 / self.duration_s
        } else {
            0.0
        }
    }

    /// The latency at `quantile` (0..=1) in µs, 0 when nothing was recorded.
    pub fn latency_us(&self, quantile: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        self.latency.value_at_quantile(quantile) as f64 / 1_000.0
    }

    /// The largest latency in µs.
    pub fn latency_max_us(&self) -> f64 {
        self.latency.max() as f64 / 1_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_add_into_a_run() {
        let mut a = Interval {
            sent: 3,
            ..Interval::default()
        };
        a.ack(b"AA", 10_000);
        a.ack(b"AE", 20_000);
        a.ack(b"ZZ", 30_000);
        a.error(ErrorKind::AckTimeout);
        a.warmup_sent = 4;
        a.warmup_acked = 2;
        let mut run = RunStats::default();
        run.add_interval(&a.take(), 2);
        assert_eq!(a.acked, 0, "take empties the interval");
        assert_eq!((a.warmup_sent, a.warmup_acked), (0, 0));
        assert_eq!((run.warmup_sent, run.warmup_acked), (4, 2));
        assert!(a.latency.is_empty());
        assert_eq!(run.sent, 3);
        assert_eq!(run.acked, 3);
        assert_eq!(run.ack_codes["AA"], 1);
        assert_eq!(run.ack_codes["ZZ"], 1);
        assert_eq!(run.errors["ack_timeout"], 1);
        assert_eq!(run.timeline, vec![0, 0, 3]);
        assert_eq!(run.latency.len(), 3);
    }

    #[test]
    fn merge_equals_recording_everything_in_one_run() {
        let mut one = RunStats::default();
        let mut parts = [RunStats::default(), RunStats::default()];
        for i in 0..1_000u64 {
            let mut iv = Interval {
                sent: 1,
                ..Interval::default()
            };
            iv.ack(if i % 7 == 0 { b"AE" } else { b"AA" }, 1_000 + i * 37);
            let second = usize::try_from(i % 5).unwrap();
            one.add_interval(&iv, second);
            parts[usize::try_from(i % 2).unwrap()].add_interval(&iv, second);
        }
        parts[0].warmup_sent = 5;
        parts[1].warmup_sent = 7;
        parts[0].warmup_acked = 4;
        parts[1].warmup_acked = 6;
        parts[0].process_cpu_s = 1.25;
        parts[1].process_cpu_s = 0.5;
        let mut merged = parts[0].clone();
        merged.merge(&parts[1]);
        assert_eq!((merged.warmup_sent, merged.warmup_acked), (12, 10));
        assert_eq!(merged.process_cpu_s, 1.75);
        assert_eq!(merged.sent, one.sent);
        assert_eq!(merged.ack_codes, one.ack_codes);
        assert_eq!(merged.timeline, one.timeline);
        assert_eq!(merged.latency, one.latency);
    }

    #[test]
    fn process_cpu_time_grows_with_work() {
        // Spin until 20 ms of CPU have been charged (a busy machine may take longer in wall
        // time); the clock must get there, and never run backwards.
        let before = process_cpu_seconds();
        let started = std::time::Instant::now();
        let mut x = 1u64;
        let mut last = before;
        while last - before < 0.02 {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005) | 1);
            }
            let now = process_cpu_seconds();
            assert!(now >= last, "{last} → {now}");
            last = now;
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{before} → {last}"
            );
        }
    }
}
