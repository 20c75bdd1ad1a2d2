//! The relay end to end, over real sockets on 127.0.0.1 (ephemeral ports, bounded waits): one
//! test binary, one module per topic.
//!
//! Most modules start the relay in this process (`relay::start`) between a plain or TLS
//! sender ([`support::Client`]) and testkit's programmable receiver: passthrough ACKs and
//! every way a receiver can misbehave, TLS and mutual TLS on both sides, the Prometheus
//! endpoint, limits and allowlists, the local and durable ACK modes and their journal,
//! several listeners, routing, the single-link policy. `config_file` checks the TOML schema
//! and the `mllp-relay` command line; `faults` runs the real binary as a queue under
//! Jepsen-style faults (kill -9, receiver killed, NAKs, slowness, failing disk through
//! libfiu, torn journal tails); `interop` relays between third-party HL7 software
//! (python-hl7, hl7apy).
//!
//! The allocation count is a binary of its own (`tests/allocations.rs`): it installs a
//! counting global allocator.

mod alerts;
mod batches;
mod charsets;
mod config_file;
mod corpus;
mod durable_mode;
mod faults;
mod interop;
mod listeners;
mod local_mode;
mod logs;
mod metrics;
mod passthrough;
mod reload;
mod routing;
mod senders;
mod single_link;
mod support;
mod tls;
