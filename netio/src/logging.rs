//! How `mllp-relay` and `mllp-loadgen` write their logs: on standard error, as human-readable
//! lines (coloured only when standard error is a terminal) or as one JSON object per line for
//! log shippers. Under systemd, in a container or redirected to a file, text lines carry no
//! ANSI escape codes, which would otherwise end up verbatim in journald and in log files that
//! integration engineers grep.
//!
//! Which filter applies: the `--log` flag when given, else `RUST_LOG` when set, else the
//! program's default. A flag on the command line wins over the environment, as it does for
//! every other setting.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-12-07T23:15:06.123Z  INFO target: message key=value …`
    #[default]
    Text,
    /// `{"timestamp":"…","level":"INFO","message":"…","key":"value",…,"target":"…"}`, one
    /// object per line, every field at the top level.
    Json,
}

/// Installs the global subscriber with the filter `flag` (the `--log` flag, when given),
/// `RUST_LOG`, or `default`, in that order, writing `format`.
///
/// # Errors
/// When the filter that applies is not valid; the message names where it came from.
pub fn init(flag: Option<&str>, default: &str, format: LogFormat) -> Result<(), String> {
    let filter =
        match (flag, std::env::var("RUST_LOG")) {
            (Some(flag), _) => EnvFilter::try_new(flag)
                .map_err(|e| format!("invalid --log filter {flag:?}: {e}"))?,
            (None, Ok(env)) if !env.trim().is_empty() => EnvFilter::try_new(&env)
                .map_err(|e| format!("invalid RUST_LOG filter {env:?}: {e}"))?,
            (None, _) => EnvFilter::try_new(default)
                .map_err(|e| format!("invalid default log filter {default:?}: {e}"))?,
        };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}
