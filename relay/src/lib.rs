//! `mllp-relay`: an HL7 v2 MLLP relay, thread-per-core on io_uring, that terminates TLS in
//! front of a plain-MLLP engine and hands every sender an honest ACK.
//!
//! ```text
//!  sender ──TLS/TCP──► inbound: accept → session: read → mllp::Deframer → mllp::hl7::Msh
//!                        │                               → route (a pure function of MSH)
//!                        │   passthrough ───────────────► outbound::Delivery ──► receiver
//!                        │   local / durable ─► custody ─► outbound::Delivery ──► receiver
//!  sender ◄──────────────┘  the receiver's ACK byte for byte (passthrough), or the relay's own
//!                           (inbound::answer): AA/CA once in custody, AE/CE with ERR 207 when
//!                           the receiver or the journal failed, AR when nothing can route it
//! ```
//!
//! Never an AA (or CA) the receiver did not give, or for a message not in custody: in
//! `passthrough` mode the only positive ACK a sender ever sees is the receiver's own.
//!
//! # Layout, along the message path
//! - [`config`]: the checked configuration, and the TOML file turned into it.
//! - [`identity`]: which MSH-3/MSH-4 a listener, or a client certificate on it, may send as
//!   (rules, a pure function).
//! - [`route`]: which downstream a message goes to (rules, a pure function).
//! - `inbound`: accept and admission, the session read loop, and the ACKs the relay writes
//!   itself (one helper writes them all).
//! - `outbound`: `Delivery` to a downstream: per-core pools, the `single` link's
//!   cross-core handoff.
//! - [`custody`]: what `local` and `durable` listeners keep: the local queue, the journal and
//!   its recovery, delivery lanes, the duplicate window, dead letters.
//! - `worker`: threads, runtimes, the accept loops, shutdown and drain, panic containment;
//!   [`start`] runs a relay.
//! - [`metrics`]: the counters the workers keep and their Prometheus text, served with the
//!   health checks.
//! - [`health`]: whether the relay is ready for traffic (`/readyz`).
//! - [`audit`]: the audit trail, a record per message without its content.
//! - `memory`: handing memory freed after a burst back to the operating system.
//!
//! # Dependency rule
//! Imports between these modules point one way, and `scripts/check.sh` fails when one does not:
//!
//! | module | may import |
//! |---|---|
//! | `route` | nothing of the relay |
//! | `identity` | `route` |
//! | `config` | `route`, `identity` |
//! | `metrics`, `memory` | `config` |
//! | `health`, `audit` | `config`, `metrics` |
//! | `outbound` | `config`, `metrics` |
//! | `custody` | `config`, `route`, `metrics`, `outbound` |
//! | `inbound` | `config`, `route`, `identity`, `metrics`, `audit`, `outbound`, `custody` |
//! | `worker` | everything above |
//!
//! Nothing imports `worker`; only `worker` wires the others together.
//!
//! # Not here
//! Sockets, TLS and the runtime (the `netio` crate); framing, HL7 and ACK building (the `mllp`
//! crate). Message transformation of any kind: bytes pass through unchanged. Replication of
//! the journal to another host: a durable queue beyond one host belongs in an existing log.

pub mod audit;
pub mod config;
pub mod custody;
pub mod health;
pub mod identity;
mod inbound;
mod memory;
pub mod metrics;
mod outbound;
pub mod route;
mod worker;

pub use worker::{BoundListener, RelayHandle, start};
