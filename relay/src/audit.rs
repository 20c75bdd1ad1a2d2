//! The audit trail: one record per message a listener received, saying who sent what to where
//! and what the sender was answered, and nothing of the message's content.
//!
//! A record is one JSON object on one line:
//!
//! ```text
//! {"time":"2026-12-07T23:15:06.123Z","listener":"lab","peer":"10.1.2.3:51234",
//!  "client_subject":"CN=lab.example","sender":"lab","msh3":"LAB","msh4":"HOSP",
//!  "msh9":"ORU^R01","msh10":"M123","downstream":"ehr","ack":"AA","ack_origin":"downstream",
//!  "latency_us":812}
//! ```
//!
//! `ack` is empty when no answer was due (MSH-15) or the connection was closed instead;
//! `ack_origin` is `downstream` (the receiver's own ACK, passed through) or `relay` (one the
//! relay wrote). `downstream` is empty when the message went nowhere (refused before routing).
//!
//! Where records go (`audit` in the config file): nowhere (`off`, the default), into the log
//! at info under the target `audit` (`log`), or appended to a file (`file:PATH`). A file is
//! written by a thread of its own, so a slow disk never holds up a sender; the workers hand it
//! records through a bounded queue, and a record that finds the queue full is counted
//! (`mllp_relay_audit_records_dropped_total`) and warned about, never waited for. The file is
//! reopened on SIGHUP, for logrotate.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use mllp::ack::AckCode;
use mllp::hl7::Msh;
use netio::units::format_rfc3339_ms;
use tracing::{info, warn};

use crate::config::AuditConfig;
use crate::metrics::Stats;

/// Records waiting for the file writer: enough for bursts at full speed while the disk
/// stalls for a moment.
const QUEUE: usize = 64 * 1024;

/// What one record says, borrowed from the session that handled the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) listener: &'a str,
    pub(crate) peer: std::net::SocketAddr,
    pub(crate) client_subject: Option<&'a str>,
    pub(crate) sender: Option<&'a str>,
    pub(crate) msh: Option<&'a Msh<'a>>,
    pub(crate) downstream: Option<&'a str>,
    pub(crate) ack: Option<(AckCode, bool)>,
    pub(crate) latency: Duration,
}

impl Record<'_> {
    /// The record as one line of JSON (with its newline), timed `now_ms` (Unix ms).
    pub(crate) fn write_json(&self, now_ms: u64, out: &mut String) {
        out.clear();
        let _ = write!(out, "{{\"time\":\"{}\"", format_rfc3339_ms(now_ms));
        let field = |out: &mut String, name: &str, value: &[u8]| {
            let _ = write!(out, ",\"{name}\":");
            json_string(out, value);
        };
        field(out, "listener", self.listener.as_bytes());
        field(out, "peer", self.peer.to_string().as_bytes());
        field(
            out,
            "client_subject",
            self.client_subject.unwrap_or_default().as_bytes(),
        );
        field(out, "sender", self.sender.unwrap_or_default().as_bytes());
        let msh = |n: usize| self.msh.map_or(&[][..], |msh| msh.raw_field(n));
        field(out, "msh3", msh(3));
        field(out, "msh4", msh(4));
        field(out, "msh9", msh(9));
        field(out, "msh10", msh(10));
        field(
            out,
            "downstream",
            self.downstream.unwrap_or_default().as_bytes(),
        );
        let (code, origin) = match self.ack {
            Some((code, true)) => (code.as_str(), "relay"),
            Some((code, false)) => (code.as_str(), "downstream"),
            None => ("", ""),
        };
        field(out, "ack", code.as_bytes());
        field(out, "ack_origin", origin.as_bytes());
        let _ = writeln!(
            out,
            ",\"latency_us\":{}}}",
            u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX)
        );
    }
}

/// Appends `value` as a JSON string: bytes read as UTF-8 (invalid sequences replaced), quotes,
/// backslashes and control characters escaped.
fn json_string(out: &mut String, value: &[u8]) {
    out.push('"');
    for c in String::from_utf8_lossy(value).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The relay's audit trail, shared by every worker.
pub struct Audit {
    sink: Sink,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sink = match self.sink {
            Sink::Off => "off",
            Sink::Log => "log",
            Sink::File { .. } => "file",
        };
        f.debug_struct("Audit").field("sink", &sink).finish()
    }
}

enum Sink {
    Off,
    Log,
    File {
        queue: SyncSender<String>,
        reopen: Arc<AtomicBool>,
        /// Set once the queue was found full, so that the warning is given once per burst.
        warned: AtomicBool,
    },
}

impl Audit {
    /// The trail `config` asks for; a file is opened (created, appended to) now, so a path
    /// that cannot be written fails the start.
    ///
    /// # Errors
    /// When the audit file cannot be opened.
    pub fn start(config: &AuditConfig) -> std::io::Result<Self> {
        let sink = match config {
            AuditConfig::Off => Sink::Off,
            AuditConfig::Log => Sink::Log,
            AuditConfig::File(path) => {
                let file = open(path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("audit file {}: {e}", path.display()))
                })?;
                let (queue, records) = sync_channel(QUEUE);
                let reopen = Arc::new(AtomicBool::new(false));
                let writer = Writer {
                    path: path.clone(),
                    file,
                    reopen: reopen.clone(),
                };
                std::thread::Builder::new()
                    .name("mllp-relay-audit".into())
                    .spawn(move || writer.run(&records))?;
                Sink::File {
                    queue,
                    reopen,
                    warned: AtomicBool::new(false),
                }
            }
        };
        Ok(Self { sink })
    }

    /// Whether records are kept at all (sessions gather nothing for an audit that is off).
    pub(crate) fn enabled(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// Keeps `record`.
    pub(crate) fn record(&self, record: &Record<'_>, stats: &Stats, line: &mut String) {
        match &self.sink {
            Sink::Off => {}
            Sink::Log => {
                record.write_json(crate::metrics::unix_ms(), line);
                info!(target: "audit", "{}", line.trim_end());
            }
            Sink::File { queue, warned, .. } => {
                record.write_json(crate::metrics::unix_ms(), line);
                match queue.try_send(std::mem::take(line)) {
                    Ok(()) => warned.store(false, Ordering::Relaxed),
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                        Stats::bump(&stats.audit_records_dropped);
                        if !warned.swap(true, Ordering::Relaxed) {
                            warn!(
                                "audit file writer cannot keep up (disk slow or full): records \
                                 dropped, counted in mllp_relay_audit_records_dropped_total"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Reopens the audit file (after logrotate moved it); nothing for other sinks.
    pub fn reopen(&self) {
        if let Sink::File { reopen, .. } = &self.sink {
            reopen.store(true, Ordering::Relaxed);
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The file writer's side.
struct Writer {
    path: PathBuf,
    file: File,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    /// Writes records until every sender is gone (the relay stopped).
    fn run(mut self, records: &Receiver<String>) {
        while let Ok(record) = records.recv() {
            if self.reopen.swap(false, Ordering::Relaxed) {
                match open(&self.path) {
                    Ok(fresh) => self.file = fresh,
                    Err(e) => {
                        warn!(path = %self.path.display(), error = %e, "audit file: reopening failed; still writing to the old one");
                    }
                }
            }
            if let Err(e) = self.file.write_all(record.as_bytes()) {
                warn!(path = %self.path.display(), error = %e, "audit file: a record could not be written");
            }
        }
        let _ = self.file.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_line_with_header_fields_only() {
        let bytes = b"MSH|^~\\&|LAB|HOSP|EHR|CLINIC|2026||ORU^R01|M\"1|P|2.5\rPID|1||SECRET\r";
        let msh = Msh::parse(bytes).unwrap();
        let record = Record {
            listener: "lab",
            peer: "10.1.2.3:51234".parse().unwrap(),
            client_subject: Some("CN=lab.example"),
            sender: Some("lab"),
            msh: Some(&msh),
            downstream: Some("ehr"),
            ack: Some((AckCode::AA, false)),
            latency: Duration::from_micros(812),
        };
        let mut line = String::new();
        record.write_json(1_796_771_706_123, &mut line);
        assert_eq!(
            line,
            "{\"time\":\"2026-12-08T23:15:06.123Z\",\"listener\":\"lab\",\"peer\":\"10.1.2.3:51234\",\
             \"client_subject\":\"CN=lab.example\",\"sender\":\"lab\",\"msh3\":\"LAB\",\
             \"msh4\":\"HOSP\",\"msh9\":\"ORU^R01\",\"msh10\":\"M\\\"1\",\"downstream\":\"ehr\",\
             \"ack\":\"AA\",\"ack_origin\":\"downstream\",\"latency_us\":812}\n"
        );
        assert!(!line.contains("SECRET"));
        let headerless = Record {
            msh: None,
            downstream: None,
            ack: Some((AckCode::AR, true)),
            ..record
        };
        headerless.write_json(0, &mut line);
        assert!(
            line.contains(
                "\"msh10\":\"\",\"downstream\":\"\",\"ack\":\"AR\",\"ack_origin\":\"relay\""
            ),
            "{line}"
        );
    }
}
