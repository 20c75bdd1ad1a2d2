//! Helpers every crate's tests share, so that no test can disturb another one running beside
//! it, and no failed test leaves anything running.
//!
//! The rules these helpers keep (a test that uses them keeps them too):
//! - **No port is ever freed for someone else to take.** A target that must refuse
//!   connections is a [`net::ReservedPort`]: a socket bound for the whole test and never
//!   listening. A service that must come back on the same address listens on its reservation
//!   ([`net::ReservedPort::listen`]), or, for a child process, binds it with `SO_REUSEPORT`
//!   while the reservation holds it. Everything else binds port 0 and reads its address back.
//! - **Counts come from the process under test** ([`net::established_connections`] reads one
//!   process's own sockets), never from the machine-wide socket table.
//! - **Every child process is owned** by a [`process::Process`], which kills and reaps it and
//!   its descendants when dropped (a panic included) and never hands it the test runner's own
//!   stdout or stderr; [`process::run`] runs a command to completion within a time limit.
//! - **Every wait is bounded** ([`wait::wait_until`], [`wait::PATIENCE`]).
//!
//! Modules: [`process`] (child processes), [`net`] (ports and sockets), [`dir`] (scratch
//! directories), [`wait`] (polling with a deadline), [`hl7`] (test messages), [`receiver`]
//! (a programmable MLLP receiver), [`pki`] (test certificates), [`interop`] (the third-party
//! HL7 peers).

pub mod dir;
pub mod hl7;
pub mod interop;
pub mod net;
pub mod pki;
pub mod process;
pub mod receiver;
pub mod wait;

pub use dir::TempDir;
pub use net::{ReservedPort, established_connections, refuses, tcp_sockets};
pub use process::{OutputLog, Process, Signal, run};
pub use wait::{PATIENCE, wait_until};
