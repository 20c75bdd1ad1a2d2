//! `mllp-loadgen`: capacity-tests any MLLP listener (our relay, an interface engine, a
//! vendor's receiver) and measures ACK latency honestly; plus `sink`, an ACKing receiver that
//! counts what arrived and can misbehave on purpose.
//!
//! ```text
//!  send ── N connections (plain/TLS/mTLS), one monoio runtime per thread ──► target
//!       closed loop (next message on each ACK) or open loop (a schedule of intended send
//!       times: latency from the intended time, coordinated omission corrected)
//!       ◄── ACKs: MSA-2 matched to MSH-10, MSA-1 counted, latency into an HdrHistogram
//!  sink ◄── messages: every MSH-10 recorded; ACK (original/enhanced) or an injected fault
//!  hold ── N connections opened, handshaken, then kept idle until released ──► target
//! ```
//!
//! This crate is the project's measuring instrument, so a wrong number is worse than none:
//! every message sent ends in exactly one place in the [`stats::RunStats`] (an ACK code or an
//! error kind), latencies are recorded in nanoseconds, and open-loop runs charge the target
//! for the queueing it causes.
//!
//! # Layout
//! - [`source`]: the messages: templates (ADT, ORU of a given size), corpus folders (single
//!   messages, batch files, MLLP-framed streams), unique MSH-10 and fresh MSH-7 per send.
//! - [`send`]: the generator: connections, closed and open loop, pipelining, ACK matching.
//! - [`pace`]: a sleep precise to microseconds (timerfd through io_uring) and open-loop
//!   schedules (uniform or Poisson).
//! - [`sink`]: the receiver with fault injection and loss/duplicate accounting.
//! - [`ramp`]: steps an open-loop rate up until a p99 target breaks.
//! - [`hold`]: opens many (TLS) connections and keeps them idle, to measure what an idle
//!   connection costs the target.
//! - [`stats`]: what a run measured; per-thread intervals added into one result.
//! - [`report`]: the table, JSON (simd-json), HdrHistogram percentile text, SVG plots, merge.
//!
//! Connections and TLS come from the project's transport crate, `netio` (`netio::conn`,
//! `netio::tls`), which the relay runs on too: one implementation of cancel-safe I/O and
//! certificate checking for the whole project, and none of the relay's own logic.
//!
//! # Not here
//! Message validation beyond the ACK (the target's business), retries of unanswered messages
//! (a load test that retried would hide loss), and the end-to-end benchmark scenarios (the
//! `bench` crate's `mllp-bench` runs this tool).

pub mod hold;
pub mod pace;
pub mod ramp;
pub mod report;
pub mod send;
pub mod sink;
pub mod source;
pub mod stats;
