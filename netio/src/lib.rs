//! `netio`: the transport `mllp-relay`, `mllp-loadgen` and `mllp-bench` run on. It knows no
//! HL7: it moves bytes over TCP and TLS, with deadlines, on a monoio runtime per thread.
//!
//! The only crate that wires up monoio's runtime, sockets and TLS: swapping the runtime, or the
//! TLS library, is a change here and in the protocol drivers that await these futures.
//!
//! # Modules
//! - [`runtime`]: a runtime per thread (io_uring or epoll), pinning to the allowed CPUs, the
//!   descriptor limit.
//! - [`listen`]: `SO_REUSEPORT` listening sockets and an accept that can give up without losing
//!   a connection.
//! - [`conn`]: one plain or TLS connection with cancel-safe, deadline-bound reads and writes,
//!   cancel signals, the liveness probe of an idle connection.
//! - [`connect`]: dialling out, plain or TLS.
//! - [`tls`]: certificate and key loading, client-certificate verification (CA and/or
//!   SHA-256 thumbprints), server pins, rejection counts, live reload.
//! - [`units`]: durations (`500ms`, `2min`) and sizes (`16MiB`) as operators write them.
//! - [`logging`]: the log subscriber both programs install.
//!
//! # Not here
//! Framing, HL7, retries, routing: the `mllp` core and the programs own those.

pub mod conn;
pub mod connect;
pub mod listen;
pub mod logging;
pub mod runtime;
pub mod tls;
pub mod units;
