//! The summary `check-config` prints: what would run, in words an operator reads (every
//! listener with its TLS and client authentication, ACK mode, limits and timeouts; the journal,
//! downstreams, routes, workers).

use std::fmt;
use std::path::Path;

use mllp::ack::AckPolicy;
use mllp::frame::{EventCode, FramingConfig};
use netio::runtime::Driver;
use netio::units::{format_duration, format_size};

use super::check::{ListenerSettings, Settings};
use crate::config::{
    AckMode, BatchMode, CharsetMode, MissingControlId, OnDownstreamFailure, WhenJournalFull,
};
use crate::identity::ClientMatch;
use crate::route::Pattern;

/// Describes a rule "issued by CA OR one of the thumbprints".
fn trust_rule(ca: Option<&Path>, thumbprints: usize, noun: &str) -> String {
    let pins = match thumbprints {
        0 => None,
        1 => Some(format!("with the listed {noun} thumbprint")),
        n => Some(format!("with one of the {n} listed {noun} thumbprints")),
    };
    match (ca, pins) {
        (Some(ca), Some(pins)) => format!("issued by the CA in {} OR {pins}", ca.display()),
        (Some(ca), None) => format!("issued by the CA in {}", ca.display()),
        (None, Some(pins)) => pins,
        (None, None) => "nothing (invalid)".to_owned(),
    }
}

/// A route value as the summary shows it: `*` for any value.
struct PatternText<'a>(&'a Pattern);

impl fmt::Display for PatternText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Pattern::Any => f.write_str("*"),
            Pattern::Exact(value) => f.write_str(&String::from_utf8_lossy(value)),
        }
    }
}

impl fmt::Display for ListenerSettings {
    /// The listener's lines of the `check-config` summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self;
        let lc = &l.config;
        writeln!(f, "listener {:?} on {}", l.name, lc.addr)?;
        match &l.tls {
            None => writeln!(f, "  TLS: off (plain TCP)")?,
            Some(tls) => {
                writeln!(
                    f,
                    "  TLS: on, certificate {}, key {}",
                    tls.cert_chain.display(),
                    tls.key.display()
                )?;
                if let Ok(cert) = netio::tls::CertInfo::of_pem_file(&tls.cert_chain) {
                    writeln!(
                        f,
                        "  certificate: {}, thumbprint {}, expires {}",
                        cert.subject,
                        cert.thumbprint,
                        cert.not_after_text()
                    )?;
                }
                if tls.client_ca.is_none() && tls.client_thumbprints.is_empty() {
                    writeln!(f, "  client certificates: not asked for")?;
                } else {
                    writeln!(
                        f,
                        "  client certificates: required, accepted when {}",
                        trust_rule(
                            tls.client_ca.as_deref(),
                            tls.client_thumbprints.len(),
                            "client"
                        )
                    )?;
                }
            }
        }
        let mode = match lc.ack_mode {
            AckMode::Passthrough => "passthrough",
            AckMode::Local => "local (ACK on receipt, no durability: messages can be lost)",
            AckMode::Durable => {
                "durable (AA/CA once fsync'ed to the journal; delivered afterwards with \
                 retries, also after a crash)"
            }
        };
        let failure = match lc.on_downstream_failure {
            OnDownstreamFailure::Nak => "nak",
            OnDownstreamFailure::Close => "close",
        };
        let policy = match lc.ack_policy {
            AckPolicy::Negotiated => "negotiated",
            AckPolicy::Always => "always",
            AckPolicy::Never => "never",
            AckPolicy::ErrorsOnly => "errors-only",
        };
        if lc.ack_mode == AckMode::Passthrough {
            writeln!(
                f,
                "  ack mode {mode}, ack policy {policy}, on downstream failure {failure}"
            )?;
        } else {
            // The sender is answered before delivery: a downstream failure never reaches it.
            writeln!(f, "  ack mode {mode}, ack policy {policy}")?;
        }
        let missing = match lc.missing_control_id {
            MissingControlId::Forward => "forwarded (counted, warned once per connection)",
            MissingControlId::Reject => "refused with AR and ERR 101, not forwarded",
        };
        writeln!(f, "  messages without MSH-10: {missing}")?;
        let batch = match lc.batch {
            BatchMode::Reject => "refused whole with AR (ERR 100), nothing forwarded",
            BatchMode::Forward => {
                "forwarded whole to the receiver, its answer passed back byte for byte"
            }
            BatchMode::Split => {
                "each message delivered on its own, answered with one acknowledgement batch"
            }
        };
        writeln!(f, "  batches (FHS/BHS): {batch}")?;
        match lc.charset {
            CharsetMode::Passthrough => writeln!(
                f,
                "  character sets: not checked (bytes pass unchanged); empty MSH-18 means {}",
                lc.default_charset
            )?,
            CharsetMode::Check => writeln!(
                f,
                "  character sets: checked against MSH-18 (empty: {}); a mismatch is refused \
                 with AR",
                lc.default_charset
            )?,
        }
        if lc.normalize_segment_terminators {
            writeln!(
                f,
                "  LF and CRLF segment terminators rewritten to CR before forwarding"
            )?;
        }
        if lc.senders.is_empty() {
            writeln!(
                f,
                "  senders: any MSH-3/MSH-4 (no [[listener.sender]] rules)"
            )?;
        } else {
            writeln!(
                f,
                "  senders (first match names the sender; anything else is refused with AR):"
            )?;
            for rule in &lc.senders {
                let client = match &rule.client {
                    ClientMatch::Any => "any connection".to_owned(),
                    ClientMatch::Thumbprint(t) => format!("certificate {t}"),
                    ClientMatch::Subject(subject) => format!("certificate subject {subject:?}"),
                };
                writeln!(
                    f,
                    "    {:?}: {client} as MSH-3 {} / MSH-4 {}",
                    rule.name,
                    PatternText(&rule.application),
                    PatternText(&rule.facility)
                )?;
            }
        }
        if let Some(window) = &lc.duplicates {
            writeln!(
                f,
                "  duplicate window: {}, at most {} messages (a resend within it gets its \
                 original ACK and is not queued again)",
                format_duration(window.max_age),
                window.max_entries
            )?;
        }
        let t = lc.framing.tolerances();
        let tolerated: Vec<&str> = [
            (t.fs_without_cr, EventCode::FsWithoutCr),
            (t.lf_after_fs, EventCode::LfAfterFs),
            (
                t.whitespace_between_frames,
                EventCode::WhitespaceBetweenFrames,
            ),
            (t.junk_before_start, EventCode::JunkBeforeStart),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, code)| code.config_name())
        .collect();
        writeln!(
            f,
            "  frames: at most {}, tolerating {}",
            format_size(lc.framing.max_frame_len() as u64),
            if tolerated.is_empty() {
                "nothing (strict MLLP)".to_owned()
            } else {
                tolerated.join(", ")
            }
        )?;
        if let Some(bytes) = custom_frame_bytes(&lc.framing) {
            writeln!(f, "  {bytes}")?;
        }
        if !lc.allowed_sources.is_empty() {
            let nets: Vec<String> = lc.allowed_sources.iter().map(ToString::to_string).collect();
            writeln!(f, "  sources allowed: {}", nets.join(", "))?;
        }
        writeln!(
            f,
            "  timeouts: idle {}, frame {}, handshake {}, write {}; at most {} connections per worker",
            format_duration(lc.idle_timeout),
            format_duration(lc.frame_deadline),
            format_duration(lc.handshake_timeout),
            format_duration(lc.write_timeout),
            lc.max_connections_per_worker
        )?;
        Ok(())
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.listeners.len() > 1 {
            writeln!(
                f,
                "{} listeners (each with its own settings; downstreams and routes shared):",
                self.listeners.len()
            )?;
        }
        for listener in &self.listeners {
            write!(f, "{listener}")?;
        }

        if let Some(j) = &self.journal {
            writeln!(
                f,
                "journal in {} (one sub-directory per worker)",
                j.dir.display()
            )?;
            writeln!(
                f,
                "  commit interval at most {}; per worker: at most {} of records in segments of {} \
                 (on disk up to 3 segments more: spares and the current one's unwritten rest), \
                 {} in memory",
                format_duration(j.commit_interval),
                format_size(j.max_bytes),
                format_size(j.segment_bytes),
                format_size(j.memory_bytes as u64)
            )?;
            let full = match j.when_full {
                WhenJournalFull::Nak => "nak (the sender gets AE/CE \"journal full\")",
                WhenJournalFull::Pause => "pause (senders are not read until space is freed)",
            };
            writeln!(
                f,
                "  {} forward lane(s) per per-core downstream; when full: {full}",
                j.forward_lanes
            )?;
            writeln!(
                f,
                "  commits written {}",
                if j.direct_io {
                    "with O_DIRECT + O_DSYNC where the filesystem allows it, else page cache + fdatasync"
                } else {
                    "through the page cache + fdatasync (direct_io = false)"
                }
            )?;
        }

        for d in &self.downstreams {
            let dc = &d.config;
            if d.address == dc.addr.to_string() {
                writeln!(f, "downstream {:?} at {}", dc.name, d.address)?;
            } else {
                writeln!(
                    f,
                    "downstream {:?} at {} (resolved to {})",
                    dc.name, d.address, dc.addr
                )?;
            }
            match &d.tls {
                None => writeln!(f, "  TLS: off (plain TCP)")?,
                Some(tls) => {
                    writeln!(
                        f,
                        "  TLS: on, server name {}, its certificate accepted when {}",
                        tls.sni,
                        trust_rule(tls.client.ca.as_deref(), tls.client.pinned.len(), "pinned")
                    )?;
                    match &tls.client.client_cert {
                        Some((cert, _)) => {
                            writeln!(f, "  client certificate: {}", cert.display())?;
                        }
                        None => writeln!(f, "  client certificate: none")?,
                    }
                }
            }
            writeln!(
                f,
                "  timeouts: connect {}, ack {}; {} retries, backoff {} doubling up to {}",
                format_duration(dc.connect_timeout),
                format_duration(dc.ack_timeout),
                dc.retries,
                format_duration(dc.backoff_base),
                format_duration(dc.backoff_cap)
            )?;
            if let Some(bytes) = custom_frame_bytes(&dc.framing) {
                writeln!(f, "  {bytes}")?;
            }
            if let Some(charset) = dc.transcode_to {
                writeln!(
                    f,
                    "  messages transcoded to {charset} (MSH-18 set), its ACKs back to the \
                     sender's character set"
                )?;
            }
        }

        let name = |index: usize| {
            self.downstreams
                .get(index)
                .map_or("?", |d| d.config.name.as_str())
        };
        if self.routes.is_empty() {
            writeln!(f, "routes: none")?;
        } else {
            writeln!(
                f,
                "routes (first match wins; MSH-3/MSH-4/MSH-5/MSH-6/MSH-9 -> downstream):"
            )?;
            for (i, route) in self.routes.iter().enumerate() {
                let m = &route.matcher;
                let mut origin = String::new();
                if m.listener != Pattern::Any {
                    origin = format!("listener {} ", PatternText(&m.listener));
                }
                if m.sender != Pattern::Any {
                    origin.push_str(&format!("sender {} ", PatternText(&m.sender)));
                }
                writeln!(
                    f,
                    "  {}. {origin}{}/{}/{}/{}/{}^{} -> {}",
                    i + 1,
                    PatternText(&m.sending_application),
                    PatternText(&m.sending_facility),
                    PatternText(&m.receiving_application),
                    PatternText(&m.receiving_facility),
                    PatternText(&m.message_type),
                    PatternText(&m.trigger_event),
                    name(route.downstream)
                )?;
            }
        }
        match self.default_downstream {
            Some(index) => writeln!(f, "default route: {}", name(index))?,
            None => writeln!(
                f,
                "default route: none: unrouted messages are refused with AR (ERR 200/201), \
                 not forwarded"
            )?,
        }

        let driver = match self.driver {
            Driver::Auto => "auto",
            Driver::IoUring => "io-uring",
            Driver::Epoll => "epoll",
        };
        writeln!(
            f,
            "workers: {}{}, driver {driver}, shutdown grace {}",
            self.workers,
            if self.pin_workers {
                ", pinned to CPUs"
            } else {
                ", not pinned"
            },
            format_duration(self.shutdown_grace)
        )?;
        match self.metrics_addr {
            Some(addr) => write!(
                f,
                "metrics: http://{addr}/metrics; health: /healthz, /readyz (downstreams reached \
                 within {})",
                format_duration(self.readiness_window)
            ),
            None => write!(f, "metrics: off"),
        }
    }
}

/// "framing bytes: start 0x02, end 0x03" for framing other than MLLP's `0x0B … 0x1C 0x0D`.
fn custom_frame_bytes(framing: &FramingConfig) -> Option<String> {
    if framing.has_mllp_bytes() {
        return None;
    }
    let end: Vec<String> = framing.end().iter().map(|b| format!("0x{b:02X}")).collect();
    Some(format!(
        "framing bytes: start 0x{:02X}, end {} (not MLLP's 0x0B, 0x1C 0x0D)",
        framing.start(),
        end.join(" ")
    ))
}
