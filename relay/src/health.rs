//! Readiness: whether a load balancer or an orchestrator should send this relay traffic, as
//! `GET /readyz` on the metrics address answers it (`/healthz` only says the process serves).
//!
//! Ready means all of:
//! - the relay is not shutting down;
//! - every worker has its listeners registered and is accepting;
//! - no worker's journal has failed (a failed journal refuses every message until restart);
//! - every downstream with `ready_check` (the default) was reached within `readiness_window`:
//!   a delivery or a new connection to it succeeded. A downstream idle for longer is probed
//!   there and then with a TCP connect, closed at once, so an idle relay stays ready without
//!   traffic and a probe happens only as often as someone asks.
//!
//! The first condition that fails is the reason given, in one line.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;
use crate::metrics::{Stats, unix_ms};

/// Longest a probe waits for a downstream to accept: a readiness answer must come quickly.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the relay is not ready, or `Ok` when it is. `probe` connects to a downstream (a TCP
/// connect in the relay; tests pass their own).
///
/// # Errors
/// The first condition that fails, as one line for the `/readyz` body.
pub fn check(
    config: &Config,
    stats: &Stats,
    stopping: bool,
    probe: &dyn Fn(SocketAddr, Duration) -> std::io::Result<()>,
) -> Result<(), String> {
    if stopping {
        return Err("shutting down".to_owned());
    }
    let accepting = Stats::get(&stats.workers_accepting);
    if accepting < config.workers as u64 {
        return Err(format!(
            "{accepting} of {} workers accepting on their listeners",
            config.workers
        ));
    }
    if Stats::get(&stats.journal_failures) > 0 {
        return Err("the journal failed: restart the relay after checking the disk".to_owned());
    }
    let window_ms = u64::try_from(config.readiness_window.as_millis()).unwrap_or(u64::MAX);
    for (index, downstream) in config.downstreams.iter().enumerate() {
        let Some(counters) = stats.downstream(index).filter(|_| downstream.ready_check) else {
            continue;
        };
        if unix_ms().saturating_sub(counters.last_reached_ms()) <= window_ms {
            continue;
        }
        let timeout = downstream.connect_timeout.min(PROBE_TIMEOUT);
        match probe(downstream.addr, timeout) {
            Ok(()) => counters.reached(),
            Err(error) => {
                counters.unreachable();
                return Err(format!(
                    "downstream {} ({}) not reached in the last {}: {error}",
                    downstream.name,
                    downstream.addr,
                    netio::units::format_duration(config.readiness_window)
                ));
            }
        }
    }
    Ok(())
}

/// A certificate the relay presents is "expiring" this many days before it expires: time for
/// a partner to install a renewed one, or to list a new thumbprint.
pub const CERTIFICATE_WARNING_DAYS: i64 = 30;

/// One line for each certificate the relay presents (listener server certificates as last
/// loaded, downstream client certificates) that expires within
/// [`CERTIFICATE_WARNING_DAYS`] of `now` (Unix seconds), or has expired.
pub fn expiring_certificates(config: &Config, now: i64) -> Vec<String> {
    let listeners = config.listeners.iter().filter_map(|l| {
        let cert = l.tls.as_ref()?.certificate()?;
        let whose = format!("listener {}", l.name);
        Some((whose, cert, "renew it, then reload (SIGHUP)"))
    });
    let downstreams = config.downstreams.iter().filter_map(|d| {
        let cert = d.client_certificate.clone()?;
        let whose = format!("downstream {} (client certificate)", d.name);
        Some((whose, cert, "renew it, then restart the relay"))
    });
    listeners
        .chain(downstreams)
        .filter_map(|(whose, cert, remedy)| {
            let days = cert.days_left(now);
            let when = if days < 0 {
                format!("EXPIRED on {}", cert.not_after_text())
            } else if days <= CERTIFICATE_WARNING_DAYS {
                format!("expires in {days} days, on {}", cert.not_after_text())
            } else {
                return None;
            };
            Some(format!(
                "certificate of {whose}: {when} (subject {}, thumbprint {}): {remedy}",
                cert.subject, cert.thumbprint
            ))
        })
        .collect()
}

/// The relay's probe: a TCP connect to `addr`, closed at once.
///
/// # Errors
/// The connect's.
pub fn tcp_probe(addr: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    std::net::TcpStream::connect_timeout(&addr, timeout).map(drop)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io;

    use super::*;
    use crate::config::{DownstreamConfig, ListenerConfig};

    fn config() -> Config {
        let mut config = Config::single(
            ListenerConfig::plain("127.0.0.1:0".parse().unwrap()),
            DownstreamConfig::plain("ehr", "127.0.0.1:6661".parse().unwrap()),
        );
        config.workers = 2;
        config
    }

    fn refused(_: SocketAddr, _: Duration) -> io::Result<()> {
        Err(io::ErrorKind::ConnectionRefused.into())
    }

    /// A relay whose listener presents `cert` (a file of the test PKI) and whose downstream
    /// presents a client certificate expiring 10 days after `now`.
    fn with_certificates(pki: &testkit::pki::Pki, cert: &testkit::pki::Cert, now: i64) -> Config {
        let mut config = config();
        let settings = netio::tls::ServerTlsSettings {
            cert_chain: cert.cert_path.clone(),
            key: cert.key_path.clone(),
            ..pki.server_settings()
        };
        let rejections = std::sync::Arc::new(netio::tls::TlsRejections::new());
        config.listeners[0].tls =
            Some(netio::tls::ReloadableServerConfig::load(settings, rejections).unwrap());
        let mut client = netio::tls::CertInfo::of(&pki.client.der).unwrap();
        client.not_after = now + 10 * 86_400 + 60;
        config.downstreams[0].client_certificate = Some(client);
        config
    }

    #[test]
    fn certificates_expiring_within_30_days_are_named_with_what_to_do() {
        let pki = testkit::pki::Pki::new("health-expiry");
        let now = i64::try_from(unix_ms() / 1000).unwrap();
        let lines = expiring_certificates(&with_certificates(&pki, &pki.server_expired, now), now);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("certificate of listener listener: EXPIRED on ")
                && lines[0].contains("subject CN=localhost")
                && lines[0].ends_with("renew it, then reload (SIGHUP)"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with(
                "certificate of downstream ehr (client certificate): expires in 10 days, on "
            ) && lines[1].ends_with("renew it, then restart the relay"),
            "{}",
            lines[1]
        );
        // A certificate far from expiry is not mentioned.
        let lines = expiring_certificates(&with_certificates(&pki, &pki.server, now), now);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let mut gauges = String::new();
        crate::metrics::render_certificates(
            &with_certificates(&pki, &pki.server, now),
            &mut gauges,
        );
        assert!(
            gauges.contains(
                "mllp_relay_certificate_expiry_timestamp_seconds{listener=\"listener\",subject=\"CN=localhost\"} "
            ) && gauges.contains("{downstream=\"ehr\",subject=\"CN=sender-1\"} "),
            "{gauges}"
        );
    }

    #[test]
    fn ready_only_when_every_condition_holds() {
        let config = config();
        let stats = Stats::for_config(&config);
        let reachable = |_: SocketAddr, _: Duration| Ok(());
        assert_eq!(
            check(&config, &stats, false, &reachable),
            Err("0 of 2 workers accepting on their listeners".to_owned())
        );
        Stats::add(&stats.workers_accepting, 2);
        assert_eq!(check(&config, &stats, false, &reachable), Ok(()));
        assert_eq!(
            check(&config, &stats, true, &reachable),
            Err("shutting down".to_owned())
        );
        Stats::bump(&stats.journal_failures);
        assert!(
            check(&config, &stats, false, &reachable)
                .unwrap_err()
                .starts_with("the journal failed")
        );
    }

    #[test]
    fn an_idle_downstream_is_probed_and_a_recent_one_is_not() {
        let mut config = config();
        let stats = Stats::for_config(&config);
        Stats::add(&stats.workers_accepting, 2);
        let error = check(&config, &stats, false, &refused).unwrap_err();
        assert!(
            error.starts_with("downstream ehr (127.0.0.1:6661) not reached in the last 1min"),
            "{error}"
        );
        // A successful probe counts as reaching it: the next check does not probe.
        let probes = Cell::new(0);
        let counting = |_: SocketAddr, _: Duration| {
            probes.set(probes.get() + 1);
            Ok(())
        };
        assert_eq!(check(&config, &stats, false, &counting), Ok(()));
        assert_eq!(check(&config, &stats, false, &counting), Ok(()));
        assert_eq!(probes.get(), 1);
        // A downstream left out of readiness is never probed.
        config.downstreams[0].ready_check = false;
        let fresh = Stats::for_config(&config);
        Stats::add(&fresh.workers_accepting, 2);
        assert_eq!(check(&config, &fresh, false, &refused), Ok(()));
    }
}
