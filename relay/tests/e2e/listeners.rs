//! Several listeners in one relay: each with its own ACK mode, frame limit, TLS, allowlist
//! and connection limit, its own metrics series, one downstream shared; and the combinations
//! refused at start.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::{Duration, Instant};

use mllp::ack::AckCode;
use mllp::frame::FramingConfig;
use netio::tls::RejectReason;
use relay::config::{AckMode, Config, ListenerConfig};
use relay::metrics::{ListenerStats, Stats};
use testkit::hl7::oru;
use testkit::receiver::{Behaviour, Receiver, ack_for};
use testkit::{ReservedPort, TempDir, pki};

use crate::support::{
    Client, PATIENCE, TLS_BOTH, code_and_id, config, control_ids, durable_config, http_get,
    tls_config, wait_until,
};

/// A plain passthrough listener called `name` on an ephemeral port, with the tests' write
/// timeout.
fn listener(name: &str) -> ListenerConfig {
    let mut listener = ListenerConfig::plain("127.0.0.1:0".parse().unwrap());
    listener.name = name.to_owned();
    listener.write_timeout = PATIENCE;
    listener
}

/// Scrapes `metrics` until every line of `expected` is in the body (bounded), and returns it.
fn scrape_until(metrics: SocketAddr, expected: &[String]) -> String {
    let started = Instant::now();
    loop {
        let body = http_get(metrics, "/metrics");
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        let complete = expected.iter().all(|line| body.lines().any(|l| l == line));
        if complete {
            return body;
        }
        if started.elapsed() > PATIENCE {
            let missing: Vec<&String> = expected
                .iter()
                .filter(|line| !body.lines().any(|l| l == *line))
                .collect();
            panic!("missing {missing:?} in\n{body}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn two_listeners_apply_their_own_settings_and_share_the_downstream() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    // "adt": passthrough, small frames. "lab": local ACK mode, the default frame limit. The
    // second listener is the only one in local mode: its forwarder must run all the same.
    let mut adt = listener("adt");
    adt.framing = FramingConfig::MLLP.with_max_frame_len(1000).unwrap();
    let mut lab = listener("lab");
    lab.ack_mode = AckMode::Local;
    cfg.listeners = vec![adt, lab];
    let relay = relay::start(cfg).unwrap();

    let bound = relay.listeners();
    let names: Vec<&str> = bound.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["adt", "lab"]);
    let (adt_addr, lab_addr) = (bound[0].addr, bound[1].addr);
    assert_ne!(adt_addr.port(), 0);
    assert_ne!(lab_addr.port(), 0);
    assert_ne!(adt_addr, lab_addr);
    assert_eq!(
        relay.listen_addr(),
        adt_addr,
        "listen_addr is the first listener's"
    );
    assert_eq!(relay.listen_addr_of("lab"), Some(lab_addr));
    assert_eq!(relay.listen_addr_of("nope"), None);

    // adt passes the receiver's own ACK through, byte for byte.
    let mut adt = Client::connect(adt_addr);
    let msg = oru("ADT-1");
    assert_eq!(adt.round_trip(&msg), ack_for(&msg, AckCode::AA));
    // lab answers on receipt with the relay's own AA.
    let mut lab = Client::connect(lab_addr);
    let ack = lab.round_trip(&oru("LAB-1"));
    assert_eq!(code_and_id(&ack), (AckCode::AA, "LAB-1".to_owned()));
    assert_ne!(ack, ack_for(&oru("LAB-1"), AckCode::AA));
    assert!(
        String::from_utf8_lossy(&ack).contains("|R"),
        "a relay-generated ACK"
    );

    // The same 6 KB message: too big for adt (its connection is closed), fine for lab.
    let mut big = oru("BIG-1");
    big.extend(std::iter::repeat_n(b'x', 5000));
    assert_eq!(code_and_id(&lab.round_trip(&big)).0, AckCode::AA);
    let mut adt_big = Client::connect(adt_addr);
    adt_big.send(&big);
    assert_eq!(
        adt_big.receive(),
        None,
        "adt's frame limit closed the connection"
    );
    // The first adt connection is unaffected.
    let msg = oru("ADT-2");
    assert_eq!(adt.round_trip(&msg), ack_for(&msg, AckCode::AA));

    // Both listeners deliver to the one downstream.
    wait_until("every accepted message delivered", || {
        receiver.frames() == 4
    });
    let mut delivered = control_ids(&receiver.payloads());
    delivered.sort();
    assert_eq!(delivered, ["ADT-1", "ADT-2", "BIG-1", "LAB-1"]);

    // Per-listener series, one per listener, next to the unchanged relay-wide ones.
    let expected: Vec<String> = [
        "mllp_relay_messages_in_total 4",
        "mllp_relay_listener_messages_in_total{listener=\"adt\"} 2",
        "mllp_relay_listener_messages_in_total{listener=\"lab\"} 2",
        "mllp_relay_acks_total{code=\"AA\",origin=\"downstream\"} 2",
        "mllp_relay_acks_total{code=\"AA\",origin=\"relay\"} 2",
        "mllp_relay_listener_acks_total{listener=\"adt\",code=\"AA\",origin=\"downstream\"} 2",
        "mllp_relay_listener_acks_total{listener=\"adt\",code=\"AA\",origin=\"relay\"} 0",
        "mllp_relay_listener_acks_total{listener=\"lab\",code=\"AA\",origin=\"downstream\"} 0",
        "mllp_relay_listener_acks_total{listener=\"lab\",code=\"AA\",origin=\"relay\"} 2",
        "mllp_relay_framing_errors_total 1",
        "mllp_relay_listener_framing_errors_total{listener=\"adt\"} 1",
        "mllp_relay_listener_framing_errors_total{listener=\"lab\"} 0",
        "mllp_relay_listener_connections_accepted_total{listener=\"adt\"} 2",
        "mllp_relay_listener_connections_accepted_total{listener=\"lab\"} 1",
        "mllp_relay_listener_connections_open{listener=\"adt\"} 1",
        "mllp_relay_listener_connections_open{listener=\"lab\"} 1",
        "mllp_relay_downstream_messages_total{downstream=\"mock\"} 4",
        "mllp_relay_downstream_acks_total{downstream=\"mock\",code=\"AA\"} 4",
    ]
    .map(str::to_owned)
    .to_vec();
    let body = scrape_until(relay.metrics_addr().unwrap(), &expected);
    for family in [
        "mllp_relay_listener_received_bytes_total",
        "mllp_relay_listener_sent_bytes_total",
        "mllp_relay_listener_tls_rejections_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} counter")),
            "{family}"
        );
    }

    // Bytes in and out, per listener, add up to the relay-wide counters.
    let stats = relay.stats();
    let (adt_stats, lab_stats) = (stats.listener(0), stats.listener(1));
    assert_eq!(adt_stats.name(), "adt");
    assert_eq!(stats.listener_named("lab").unwrap().name(), "lab");
    assert!(
        Stats::get(&lab_stats.bytes_in) > 5000,
        "lab read the big message"
    );
    assert!(Stats::get(&adt_stats.bytes_in) > 0);
    assert_eq!(
        Stats::get(&adt_stats.bytes_in) + Stats::get(&lab_stats.bytes_in),
        Stats::get(&stats.bytes_in)
    );
    assert!(Stats::get(&adt_stats.bytes_out) > 0 && Stats::get(&lab_stats.bytes_out) > 0);
    assert_eq!(
        Stats::get(&adt_stats.bytes_out) + Stats::get(&lab_stats.bytes_out),
        Stats::get(&stats.bytes_out)
    );
    relay.shutdown();
}

#[test]
fn each_listener_has_its_own_tls_allowlist_and_connection_limit() {
    let pki = pki::Pki::new("e2e-listeners");
    let receiver = Receiver::start(Behaviour::Ack);
    let (mut cfg, rejections) = tls_config(&pki, receiver.addr(), None, &[]);
    cfg.workers = 1;
    // 0 "partners": TLS, one connection per worker. 1 "internal": plain, default limit.
    // 2 "blocked": plain, loopback not allowed.
    cfg.listeners[0].name = "partners".to_owned();
    cfg.listeners[0].max_connections_per_worker = 1;
    let mut blocked = listener("blocked");
    blocked.allowed_sources = vec!["10.0.0.0/8".parse().unwrap()];
    cfg.listeners.push(listener("internal"));
    cfg.listeners.push(blocked);
    let relay = relay::start(cfg).unwrap();
    let addrs: Vec<SocketAddr> = relay.listeners().iter().map(|l| l.addr).collect();

    let mut partner = Client::connect_tls(addrs[0], pki.client(TLS_BOTH, None));
    let ack = partner.round_trip(&oru("TLS-1"));
    assert_eq!(code_and_id(&ack), (AckCode::AA, "TLS-1".to_owned()));
    // Plaintext is TLS's problem on the TLS port only; the internal port speaks plain MLLP.
    let mut internal = Client::connect(addrs[1]);
    assert_eq!(
        code_and_id(&internal.round_trip(&oru("PLAIN-1"))).0,
        AckCode::AA
    );
    // partners is full (one connection per worker): a second partner is refused...
    let mut second = Client::connect_tls(addrs[0], pki.client(TLS_BOTH, None));
    let mut framed = Vec::new();
    FramingConfig::MLLP
        .encode(&oru("TLS-2"), &mut framed)
        .unwrap();
    let _ = second
        .io
        .write_all(&framed)
        .and_then(|()| second.io.flush());
    assert_eq!(second.receive(), None, "partners' limit refused it");
    // ...while internal takes more connections than partners' limit.
    let mut more = Client::connect(addrs[1]);
    assert_eq!(
        code_and_id(&more.round_trip(&oru("PLAIN-2"))).0,
        AckCode::AA
    );
    // blocked refuses loopback before any byte.
    let mut outsider = Client::connect(addrs[2]);
    outsider.send(&oru("BLOCKED-1"));
    assert_eq!(outsider.receive(), None);

    let stats = relay.stats();
    let counter =
        |i: usize, pick: fn(&ListenerStats) -> &AtomicU64| Stats::get(pick(stats.listener(i)));
    assert_eq!(counter(0, |l| &l.connections_refused), 1);
    assert_eq!(counter(1, |l| &l.connections_refused), 0);
    assert_eq!(counter(2, |l| &l.connections_refused), 0);
    assert_eq!(counter(2, |l| &l.connections_refused_source), 1);
    assert_eq!(counter(0, |l| &l.connections_refused_source), 0);
    assert_eq!(counter(0, |l| &l.connections_accepted), 1);
    assert_eq!(counter(1, |l| &l.connections_accepted), 2);
    assert_eq!(Stats::get(&stats.connections_refused), 1);
    assert_eq!(Stats::get(&stats.connections_refused_source), 1);
    assert_eq!(counter(0, |l| &l.messages_in), 1);
    assert_eq!(counter(1, |l| &l.messages_in), 2);
    assert_eq!(rejections.get(RejectReason::UnknownCa), 0);

    // SIGHUP's reload reaches every TLS listener, and only those.
    let reloaded = relay.reload_tls();
    assert_eq!(reloaded.len(), 1, "one TLS listener");
    assert_eq!(reloaded[0].0, "partners");
    assert!(reloaded[0].1.is_ok());
    // The open connections carry on after the reload.
    assert_eq!(
        code_and_id(&partner.round_trip(&oru("TLS-3"))).0,
        AckCode::AA
    );
    assert_eq!(
        code_and_id(&internal.round_trip(&oru("PLAIN-3"))).0,
        AckCode::AA
    );

    // Shutdown closes every listener.
    relay.shutdown();
    for addr in addrs {
        assert!(
            TcpStream::connect_timeout(&addr, PATIENCE).is_err(),
            "{addr} still accepts after shutdown"
        );
    }
}

#[test]
fn a_durable_listener_next_to_a_passthrough_one() {
    let journal = TempDir::new("two-listeners");
    let mut receiver = Receiver::down(Behaviour::Ack);
    let receiver_addr = receiver.addr();
    let mut cfg = durable_config(receiver_addr, journal.path());
    // The first listener is passthrough; only the second is durable, and the journal is set up
    // for it all the same.
    cfg.listeners[0].ack_mode = AckMode::Passthrough;
    cfg.listeners[0].name = "adt".to_owned();
    let mut lab = listener("lab");
    lab.ack_mode = AckMode::Durable;
    cfg.listeners.push(lab);
    let relay = relay::start(cfg).unwrap();
    let lab_addr = relay.listen_addr_of("lab").unwrap();

    // The receiver is down: adt's sender hears so (AE), lab's message is taken into custody.
    let mut adt = Client::connect(relay.listen_addr());
    let ack = adt.round_trip(&oru("ADT-DOWN"));
    assert_eq!(code_and_id(&ack), (AckCode::AE, "ADT-DOWN".to_owned()));
    let mut lab = Client::connect(lab_addr);
    let ack = lab.round_trip(&oru("LAB-DURABLE"));
    assert_eq!(code_and_id(&ack), (AckCode::AA, "LAB-DURABLE".to_owned()));
    assert_eq!(Stats::get(&relay.stats().journal_messages), 1);

    // The receiver comes back: the journaled message is delivered; adt's was never kept.
    receiver.restart();
    wait_until("the journaled message delivered", || receiver.frames() > 0);
    assert_eq!(control_ids(&receiver.payloads()), ["LAB-DURABLE"]);
    // And adt passes the receiver's ACKs through again.
    let msg = oru("ADT-UP");
    assert_eq!(adt.round_trip(&msg), ack_for(&msg, AckCode::AA));
    relay.shutdown();
}

#[test]
fn listeners_that_cannot_run_together_are_refused_at_start() {
    let receiver = Receiver::start(Behaviour::Ack);
    let start_error = |cfg: Config| match relay::start(cfg) {
        Ok(relay) => {
            relay.shutdown();
            panic!("started")
        }
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
            e.to_string()
        }
    };
    // No listener.
    let mut cfg = config(receiver.addr());
    cfg.listeners.clear();
    assert!(start_error(cfg).contains("at least one listener"));
    // Two with one name.
    let mut cfg = config(receiver.addr());
    cfg.listeners.push(listener("listener"));
    assert!(start_error(cfg).contains("two listeners are named \"listener\""));
    // Two on one address (SO_REUSEPORT would let both bind and split the connections).
    let reserved = ReservedPort::new();
    let taken = reserved.addr();
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].addr = taken;
    let mut other = listener("other");
    other.addr = SocketAddr::from(([0, 0, 0, 0], taken.port()));
    cfg.listeners.push(other);
    assert!(start_error(cfg).contains("would share an address"));
}
