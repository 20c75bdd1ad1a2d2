//! The Prometheus endpoint, connection limits, certificate reload and the source allowlist.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mllp::ack::AckCode;
use mllp::frame::FramingConfig;
use netio::tls::{ReloadableServerConfig, ServerTlsSettings, TlsRejections};
use relay::config::SourceNet;
use relay::metrics::Stats;
use testkit::hl7::oru;
use testkit::pki;
use testkit::receiver::{Behaviour, Receiver};

use crate::support::{Client, PATIENCE, TLS_BOTH, code_and_id, config, http_get};

#[test]
fn metrics_endpoint_counts_messages_codes_and_latency() {
    let receiver = Receiver::start(Behaviour::Code(AckCode::AE));
    let mut cfg = config(receiver.addr());
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..3 {
        client.round_trip(&oru(&format!("M-{i}")));
    }
    client.round_trip(b"not hl7");
    let metrics = relay.metrics_addr().expect("metrics bound");
    let expected = [
        "mllp_relay_messages_in_total 4",
        "mllp_relay_messages_delivered_total 3",
        "mllp_relay_acks_total{code=\"AE\",origin=\"downstream\"} 3",
        "mllp_relay_acks_total{code=\"AR\",origin=\"relay\"} 1",
        "mllp_relay_rejects_bad_header_total 1",
        "mllp_relay_total_seconds_count 4",
        "mllp_relay_ack_wait_seconds_count 3",
        "mllp_relay_tls_rejections_total{reason=\"unknown_ca\"} 0",
        "mllp_relay_connections_open 1",
    ];
    // The total latency is recorded just after the ACK is written, so a fast scrape can come
    // first: scrape until every line is there (bounded).
    let started = Instant::now();
    let body = loop {
        let body = http_get(metrics, "/metrics");
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        let complete = expected.iter().all(|line| body.lines().any(|l| l == *line));
        if complete || started.elapsed() > PATIENCE {
            break body;
        }
        thread::sleep(Duration::from_millis(5));
    };
    for line in expected {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    let build = format!(
        "mllp_relay_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        relay::metrics::GIT_COMMIT
    );
    for series in [
        build.as_str(),
        "process_open_fds ",
        "process_resident_memory_bytes ",
    ] {
        assert!(body.lines().any(|l| l.starts_with(series)), "{series}");
    }
    assert!(
        !body.contains("DOE^JANE") && !body.contains("M-1"),
        "no message content in metrics"
    );
    assert!(http_get(metrics, "/").starts_with("HTTP/1.1 404"));
    relay.shutdown();
}

#[test]
fn connections_beyond_the_limit_are_refused_and_counted() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    cfg.workers = 1;
    cfg.listeners[0].max_connections_per_worker = 1;
    let relay = relay::start(cfg).unwrap();
    let mut first = Client::connect(relay.listen_addr());
    assert_eq!(
        code_and_id(&first.round_trip(&oru("FIRST-1"))).0,
        AckCode::AA
    );
    let mut second = Client::connect(relay.listen_addr());
    second.send(&oru("SECOND-1"));
    assert_eq!(
        second.receive(),
        None,
        "the excess connection is closed at once"
    );
    assert_eq!(Stats::get(&relay.stats().connections_refused), 1);
    assert_eq!(
        code_and_id(&first.round_trip(&oru("FIRST-2"))).0,
        AckCode::AA,
        "the first is unaffected"
    );
    relay.shutdown();
}

#[test]
fn certificates_reload_without_dropping_connections() {
    let pki = pki::Pki::new("e2e-reload");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    // Serve from copies, so the test can change them under the running relay.
    let cert = pki.dir.write("live.pem", read(&pki.server.cert_path));
    let key = pki.dir.write("live.key", read(&pki.server.key_path));
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    let settings = ServerTlsSettings {
        cert_chain: cert.clone(),
        key: key.clone(),
        client_ca: None,
        client_thumbprints: vec![],
    };
    cfg.listeners[0].tls =
        Some(ReloadableServerConfig::load(settings, Arc::new(TlsRejections::new())).unwrap());
    let relay = relay::start(cfg).unwrap();
    let mut open = Client::connect_tls(relay.listen_addr(), pki.client(TLS_BOTH, None));
    assert_eq!(code_and_id(&open.round_trip(&oru("R-1"))).0, AckCode::AA);

    // A broken key file: the reload fails and the old certificate stays in force.
    std::fs::write(&key, "not a key").unwrap();
    let [(name, result)] = relay.reload_tls().try_into().unwrap();
    assert_eq!(name, "listener");
    assert!(result.is_err());
    let rendered = relay.stats().render(&[]);
    assert!(
        rendered.contains("mllp_relay_config_reload_success 0\n"),
        "a failed reload shows"
    );
    let mut fresh = Client::connect_tls(relay.listen_addr(), pki.client(TLS_BOTH, None));
    assert_eq!(code_and_id(&fresh.round_trip(&oru("R-2"))).0, AckCode::AA);

    // A new (here: expired) certificate: new handshakes present it, and the client refuses it...
    std::fs::write(&cert, read(&pki.server_expired.cert_path)).unwrap();
    std::fs::write(&key, read(&pki.server_expired.key_path)).unwrap();
    let [(_, result)] = relay.reload_tls().try_into().unwrap();
    result.unwrap();
    assert!(
        relay
            .stats()
            .render(&[])
            .contains("mllp_relay_config_reload_success 1\n")
    );
    let mut after = Client::connect_tls(relay.listen_addr(), pki.client(TLS_BOTH, None));
    let mut framed = Vec::new();
    FramingConfig::MLLP
        .encode(&oru("R-3"), &mut framed)
        .unwrap();
    let refused = after
        .io
        .write_all(&framed)
        .and_then(|()| after.io.flush())
        .is_err()
        || after.receive().is_none();
    assert!(refused, "the new certificate is the one presented");
    // ...while the connection opened before the reload carries on.
    assert_eq!(code_and_id(&open.round_trip(&oru("R-4"))).0, AckCode::AA);
    relay.shutdown();
}

#[test]
fn source_allowlist_refuses_other_addresses_before_any_byte() {
    let receiver = Receiver::start(Behaviour::Ack);
    // Loopback is outside 10.0.0.0/8: refused.
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].allowed_sources = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    client.send(&oru("FROM-LOOPBACK"));
    assert_eq!(client.receive(), None);
    assert_eq!(Stats::get(&relay.stats().connections_refused_source), 1);
    assert!(receiver.payloads().is_empty());
    relay.shutdown();
    // 127.0.0.0/8 allows it.
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].allowed_sources = vec!["127.0.0.0/8".parse().unwrap()];
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    assert_eq!(
        code_and_id(&client.round_trip(&oru("ALLOWED-1"))).0,
        AckCode::AA
    );
    relay.shutdown();
}

#[test]
fn source_nets_parse_and_match() {
    let net: SourceNet = "192.168.7.0/24".parse().unwrap();
    assert!(net.contains("192.168.7.200".parse().unwrap()));
    assert!(!net.contains("192.168.8.1".parse().unwrap()));
    assert!(
        net.contains("::ffff:192.168.7.9".parse().unwrap()),
        "IPv4-mapped IPv6"
    );
    let host: SourceNet = "10.1.2.3".parse().unwrap();
    assert!(
        host.contains("10.1.2.3".parse().unwrap()) && !host.contains("10.1.2.4".parse().unwrap())
    );
    let all: SourceNet = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("8.8.8.8".parse().unwrap()) && !all.contains("::1".parse().unwrap()));
    let v6: SourceNet = "fd00::/8".parse().unwrap();
    assert!(v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap()));
    for bad in [
        "10.0.0.0/33",
        "::1/129",
        "hospital.example",
        "10.0.0/8",
        "10.0.0.0/x",
    ] {
        assert!(bad.parse::<SourceNet>().is_err(), "{bad}");
    }
}

/// `/healthz` answers while the process serves; `/readyz` follows the downstream: ready while
/// it answers (probed when idle), 503 with a reason naming it once it has not been reached
/// within the readiness window, ready again when it is back.
#[test]
fn health_endpoints_follow_the_downstream() {
    let mut receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    cfg.readiness_window = Duration::from_millis(300);
    let relay = relay::start(cfg).unwrap();
    let metrics = relay.metrics_addr().expect("metrics bound");
    let status = |path: &str| {
        let response = http_get(metrics, path);
        let line = response.lines().next().unwrap_or_default().to_owned();
        let body = response
            .rsplit("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_owned();
        (line, body)
    };
    assert_eq!(
        status("/healthz"),
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    assert_eq!(
        status("/readyz"),
        ("HTTP/1.1 200 OK".into(), "ready\n".into()),
        "an idle downstream is probed"
    );

    receiver.kill();
    let mut last = (String::new(), String::new());
    let down = testkit::wait_until(PATIENCE, || {
        last = status("/readyz");
        last.0 == "HTTP/1.1 503 Service Unavailable"
    });
    assert!(down, "{last:?}");
    assert!(
        last.1.starts_with("not ready: downstream mock (")
            && last.1.contains("not reached in the last 300ms"),
        "{last:?}"
    );
    assert_eq!(
        status("/healthz").0,
        "HTTP/1.1 200 OK",
        "alive all the same"
    );

    receiver.restart();
    let mut client = Client::connect(relay.listen_addr());
    assert_eq!(code_and_id(&client.round_trip(&oru("BACK"))).0, AckCode::AA);
    assert_eq!(status("/readyz").0, "HTTP/1.1 200 OK");
    assert!(status("/nope").0.contains("404"));
    relay.shutdown();
}
