//! `mllp-relay`: an HL7 v2 MLLP relay, thread-per-core on io_uring, that terminates TLS in
//! front of a plain-MLLP engine and hands every sender an honest ACK.
//!
//! ```text
//!  sender ──TLS/TCP──► worker (one per core, SO_REUSEPORT listener)
//!                        │  session: handshake → read → mllp::Deframer → mllp::hl7::Msh
//!                        │           ──► downstream pool (per worker) ──TCP/TLS──► receiver
//!                        │                      ◄── ACK, MSA-2 checked against MSH-10
//!  sender ◄──────────────┘  the receiver's ACK byte for byte, or a generated AE/CE with
//!                           ERR 207 when the receiver failed (or a close, as configured)
//! ```
//!
//! Never an AA (or CA) the receiver did not give: in `passthrough` mode the only positive ACK
//! a sender ever sees is the receiver's own.
//!
//! # Layout
//! - [`config`]: the validated configuration and its defaults (with the reason for each).
//! - [`config_file`]: the TOML file (`--config`, `check-config`) turned into a [`config::Config`],
//!   with errors that name the key.
//! - [`worker`]: threads, runtimes, listeners (one accept loop per listener and worker), shutdown;
//!   [`start`] runs a relay.
//! - `session`: one inbound connection, message by message.
//! - `downstream`: the per-worker connection pool, delivery, ACK checks, retries.
//! - `forwarder`: `local` ACK mode's per-worker queue and forwarding task.
//! - [`journal`]: `durable` ACK mode's per-worker append-only journal (group commit, recovery).
//! - `durable`: `durable` ACK mode's delivery lanes and dead letters.
//! - [`duplicates`]: `durable` listeners' optional window that answers a resent message with
//!   its original ACK instead of queueing it twice.
//! - [`dead_letters`]: listing and replaying dead letters (`mllp-relay dead-letters`).
//! - `handoff`: the `single` link policy's cross-core queue to the link task on worker 0.
//! - [`metrics`]: the counters the workers keep.
//! - [`memory`]: handing memory freed after a burst back to the operating system.
//!
//! # Not here
//! Message transformation of any kind: bytes pass through unchanged. Replication of the
//! journal to another host: a durable queue beyond one host belongs in an existing log.

pub mod config;
pub mod config_file;
pub mod dead_letters;
mod downstream;
pub mod duplicates;
mod durable;
mod forwarder;
mod handoff;
pub mod journal;
pub mod memory;
pub mod metrics;
mod session;
pub mod worker;

pub use worker::{BoundListener, RelayHandle, start};
