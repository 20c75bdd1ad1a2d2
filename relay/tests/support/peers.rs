//! Third-party HL7 peers (python-hl7, hl7apy, txHL7) run by `relay/tests/interop/peers.py`,
//! shared by the relay's and the load generator's interop tests.
//!
//! The peers come from PyPI, installed by `scripts/interop-setup.sh`; `MLLP_INTEROP_PYTHON`
//! points at that interpreter. Without it the tests print a note and pass, unless
//! `MLLP_INTEROP_REQUIRED=1` (CI sets it), in which case they fail.

#![allow(dead_code, reason = "each test binary uses a different part of it")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Longest a peer may take to start or a client to finish.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

pub(crate) fn python() -> Option<PathBuf> {
    python_with("hl7, hl7apy")
}

/// Like [`python`], for a peer that needs more modules: `MLLP_INTEROP_PYTHON` if it can
/// `import <modules>` (e.g. `"txHL7.mllp, twisted.internet"`), else skip or fail the same way.
pub(crate) fn python_with(modules: &str) -> Option<PathBuf> {
    let required = std::env::var("MLLP_INTEROP_REQUIRED").is_ok_and(|v| v == "1");
    let found = std::env::var_os("MLLP_INTEROP_PYTHON")
        .map(PathBuf::from)
        .filter(|p| {
            Command::new(p)
                .args(["-c", &format!("import {modules}")])
                .status()
                .is_ok_and(|s| s.success())
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

/// `relay/tests/interop/peers.py`, found from any crate of the workspace.
fn peers_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/tests/interop/peers.py")
}

/// A peer process that is killed when dropped, with its stdout lines on a channel.
pub(crate) struct Peer {
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    pub(crate) fn spawn(python: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(python)
            .arg(peers_script())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next stdout line, waiting at most [`PATIENCE`].
    pub(crate) fn line(&self) -> String {
        self.lines.recv_timeout(PATIENCE).expect("peer output")
    }

    /// A server peer's port, from its "LISTENING <port>" line.
    pub(crate) fn port(&self) -> u16 {
        let line = self.line();
        line.strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    }

    /// Every line printed so far, without waiting.
    pub(crate) fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
