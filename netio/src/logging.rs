//! How `mllp-relay` and `mllp-loadgen` write their logs: human-readable lines on standard
//! error, coloured only when standard error is a terminal. Under systemd, in a container or
//! redirected to a file, the lines carry no ANSI escape codes, which would otherwise end up
//! verbatim in journald and in log files that integration engineers grep.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG` when it is set and valid, otherwise `fallback`
/// (the `--log` flag).
///
/// # Errors
/// When neither `RUST_LOG` nor `fallback` is a valid filter; the message names `fallback`.
pub fn init(fallback: &str) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(fallback))
        .map_err(|e| format!("invalid --log filter {fallback:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}
