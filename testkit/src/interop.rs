//! Third-party HL7 peers (python-hl7, hl7apy, txHL7) run by `relay/tests/interop/peers.py`,
//! for the relay's and the load generator's interop tests.
//!
//! The peers come from PyPI, installed by `scripts/interop-setup.sh`; `MLLP_INTEROP_PYTHON`
//! points at that interpreter. Without it the tests print a note and pass, unless
//! `MLLP_INTEROP_REQUIRED=1` (CI sets it), in which case they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::process::{Process, run};

/// Longest a peer may take to start (Twisted's import is slow on a loaded machine) or a
/// client to finish.
pub const PEER_PATIENCE: Duration = Duration::from_secs(60);

/// The interpreter that has python-hl7 and hl7apy, or `None` (test skipped) when there is
/// none and it is not required.
///
/// # Panics
/// When `MLLP_INTEROP_REQUIRED=1` and there is none.
pub fn python() -> Option<PathBuf> {
    python_with("hl7, hl7apy")
}

/// Like [`python`], for a peer that needs more modules: `MLLP_INTEROP_PYTHON` if it can
/// `import <modules>` (e.g. `"txHL7.mllp, twisted.internet"`), else skip or fail the same way.
///
/// # Panics
/// When `MLLP_INTEROP_REQUIRED=1` and the interpreter is missing or lacks a module.
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let required = std::env::var("MLLP_INTEROP_REQUIRED").is_ok_and(|v| v == "1");
    let found = std::env::var_os("MLLP_INTEROP_PYTHON")
        .map(PathBuf::from)
        .filter(|p| {
            run(
                Command::new(p).args(["-c", &format!("import {modules}")]),
                PEER_PATIENCE,
            )
            .status
            .success()
        });
    if found.is_none() {
        assert!(
            !required,
            "MLLP_INTEROP_REQUIRED=1 but MLLP_INTEROP_PYTHON cannot import {modules}"
        );
        eprintln!(
            "interop peers not installed (run scripts/interop-setup.sh, set MLLP_INTEROP_PYTHON): skipped"
        );
    }
    found
}

/// `relay/tests/interop/peers.py`.
fn peers_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/tests/interop/peers.py")
}

/// A peer process (killed when dropped), with its stdout lines.
#[derive(Debug)]
pub struct Peer {
    process: Process,
}

impl Peer {
    /// Starts `peers.py ARGS...` with `python`.
    pub fn spawn(python: &Path, args: &[&str]) -> Self {
        Self {
            process: Process::start(Command::new(python).arg(peers_script()).args(args)),
        }
    }

    /// The next stdout line, waiting at most [`PEER_PATIENCE`].
    ///
    /// # Panics
    /// When none comes; the message carries the peer's output.
    pub fn line(&self) -> String {
        self.process.line_within(PEER_PATIENCE).unwrap_or_else(|| {
            panic!(
                "the peer printed no line within {PEER_PATIENCE:?}:\n{}",
                self.process.log().tail(60)
            )
        })
    }

    /// A server peer's port, from its `LISTENING <port>` line.
    pub fn port(&self) -> u16 {
        let line = self.line();
        line.strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    }

    /// Every line printed so far, without waiting.
    pub fn drain(&self) -> Vec<String> {
        self.process.lines_so_far()
    }

    /// Waits at most [`PEER_PATIENCE`] for a client peer to finish.
    pub fn wait(&mut self) -> ExitStatus {
        self.process.wait_within(PEER_PATIENCE)
    }
}
