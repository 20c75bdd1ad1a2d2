//! `send` against `sink` (and against hand-written misbehaving servers) over real sockets on
//! 127.0.0.1: counts, ACK validation, pipelining, TLS and mutual TLS, faults, and the
//! coordinated-omission experiment.

use testkit::pki;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use loadgen::pace::Arrival;
use loadgen::send::{self, Loop, SendConfig, SendError, Stop};
use loadgen::sink::{self, Faults, NakCode, SinkConfig, SinkHandle};
use loadgen::source::{self, RunTag, TemplateKind};
use loadgen::stats::RunStats;
use netio::connect::ClientTls;
use netio::runtime::Driver;
use netio::tls::{ClientTlsSettings, client_config, insecure_client_config, server_name};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config(target: SocketAddr, connections: usize, stop: Stop) -> SendConfig {
    let message = source::template(TemplateKind::Oru, 1024, 7).unwrap();
    SendConfig {
        target,
        tls: None,
        connections,
        threads: 2,
        pipeline: 1,
        mode: Loop::Closed,
        stop,
        warmup: Duration::ZERO,
        messages: Arc::new(vec![message]),
        ack_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        reconnect_backoff: (Duration::from_millis(10), Duration::from_millis(100)),
        run_tag: RunTag::new(42),
        driver: Driver::Auto,
        framing: mllp::frame::FramingConfig::MLLP,
    }
}

fn run(config: SendConfig) -> RunStats {
    send::run(config, &Arc::new(AtomicBool::new(false)), |_| {}).unwrap()
}

fn sink_with(faults: Faults) -> SinkHandle {
    let mut config = SinkConfig::new(loopback());
    config.faults = faults;
    sink::start(config).unwrap()
}

/// Client settings that trust the test CA.
fn trusting(pki: &pki::Pki) -> ClientTlsSettings {
    ClientTlsSettings {
        ca: Some(pki.ca.cert_path.clone()),
        pinned: Vec::new(),
        client_cert: None,
    }
}

/// A client TLS configuration for `localhost` from `settings`.
fn tls_client(settings: &ClientTlsSettings) -> ClientTls {
    ClientTls {
        config: client_config(settings).unwrap(),
        server_name: server_name("localhost").unwrap(),
    }
}

fn error(stats: &RunStats, key: &str) -> u64 {
    stats.errors.get(key).copied().unwrap_or(0)
}

fn code(stats: &RunStats, key: &str) -> u64 {
    stats.ack_codes.get(key).copied().unwrap_or(0)
}

#[test]
fn closed_loop_every_message_sent_is_acked_and_received_once() {
    let sink = sink_with(Faults::default());
    let stats = run(config(sink.local_addr(), 4, Stop::Count(2_000)));
    let report = sink.stop();
    assert_eq!(stats.sent, 2_000);
    assert_eq!(stats.acked, 2_000);
    assert_eq!(code(&stats, "AA"), 2_000);
    assert_eq!(stats.error_total(), 0, "{:?}", stats.errors);
    assert_eq!(stats.latency.len(), 2_000);
    assert_eq!(report.received, 2_000);
    assert_eq!(report.unique, 2_000);
    assert_eq!(report.duplicates, 0);
    // Every id is this run's and names a connection and a sequence number.
    for id in report.id_lines() {
        let (connection, _) = source::parse_control_id(RunTag::new(42), id).unwrap();
        assert!(connection < 4);
    }
}

#[test]
fn a_timed_run_reports_its_duration_and_timeline() {
    let sink = sink_with(Faults::default());
    let mut cfg = config(
        sink.local_addr(),
        2,
        Stop::Duration(Duration::from_millis(1_500)),
    );
    cfg.warmup = Duration::from_millis(300);
    let stats = run(cfg);
    let report = sink.stop();
    assert!(
        (stats.duration_s - 1.5).abs() < 1e-9,
        "{}",
        stats.duration_s
    );
    assert!(stats.acked > 0);
    assert_eq!(stats.acked, stats.sent, "{:?}", stats.errors);
    assert_eq!(stats.timeline.iter().sum::<u64>(), stats.acked);
    assert!(stats.timeline.len() <= 3, "{:?}", stats.timeline);
    // Warm-up messages were delivered but not measured.
    assert!(
        report.received > stats.sent,
        "{} vs {}",
        report.received,
        stats.sent
    );
}

#[test]
fn naks_are_counted_by_code_and_enhanced_mode_is_honoured() {
    let sink = sink_with(Faults {
        nak_rate: 0.2,
        nak_code: Some(NakCode::Reject),
        ..Faults::default()
    });
    let stats = run(config(sink.local_addr(), 2, Stop::Count(1_000)));
    let report = sink.stop();
    assert_eq!(stats.acked, 1_000);
    assert_eq!(code(&stats, "AR"), report.naks);
    assert_eq!(code(&stats, "AA") + code(&stats, "AR"), 1_000);
    assert!((100..300).contains(&report.naks), "{}", report.naks);
}

#[test]
fn wrong_msa2_and_dropped_acks_are_counted_not_hidden() {
    let sink = sink_with(Faults {
        wrong_msa2_rate: 0.05,
        drop_ack_rate: 0.05,
        ..Faults::default()
    });
    let mut cfg = config(sink.local_addr(), 4, Stop::Count(400));
    cfg.ack_timeout = Duration::from_millis(200);
    let stats = run(cfg);
    let report = sink.stop();
    assert_eq!(stats.sent, 400);
    assert!(
        report.wrong_msa2 > 0 && report.dropped_acks > 0,
        "{report:?}"
    );
    // A wrong MSA-2 is a mismatch, and its message then times out like a dropped one.
    assert_eq!(error(&stats, "msa2_mismatch"), report.wrong_msa2);
    assert_eq!(
        error(&stats, "ack_timeout"),
        report.wrong_msa2 + report.dropped_acks
    );
    assert_eq!(stats.acked + error(&stats, "ack_timeout"), stats.sent);
    // Each timeout closes its connection; all but the last ones are reopened.
    assert!(stats.reconnects + 4 >= error(&stats, "ack_timeout"));
}

#[test]
fn a_server_that_closes_after_each_message_is_handled_by_reconnecting() {
    let sink = sink_with(Faults {
        one_per_connection: true,
        ..Faults::default()
    });
    let stats = run(config(sink.local_addr(), 2, Stop::Count(200)));
    let report = sink.stop();
    // The first close catches a message in flight on each connection open then (the generator
    // cannot know yet); from then on it reopens connections before the target closes them.
    let lost = error(&stats, "closed_with_in_flight");
    assert!(lost <= 2, "{:?}", stats.errors);
    assert_eq!(stats.acked + lost, 200, "{:?}", stats.errors);
    assert_eq!(stats.error_total(), lost);
    assert_eq!(report.unique, stats.acked);
    assert!(report.connections >= 198);
}

/// A server that reads `window` messages, then answers them in reverse order.
fn reverse_order_server(
    window: usize,
    messages: usize,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut pending = Vec::new();
        let mut buf = Vec::new();
        let mut answered = 0;
        let mut chunk = [0u8; 8192];
        while answered < messages {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = buf.windows(2).position(|w| w == [0x1C, 0x0D]) {
                let frame: Vec<u8> = buf.drain(..end + 2).collect();
                let msh = mllp::hl7::Msh::parse(&frame[1..frame.len() - 2]).unwrap();
                pending.push(msh.control_id().to_vec());
            }
            if pending.len() == window || answered + pending.len() == messages {
                for id in pending.drain(..).rev() {
                    let mut ack = b"\x0bMSH|^~\\&|S|S|L|L|20260101||ACK|1|P|2.5\rMSA|AA|".to_vec();
                    ack.extend_from_slice(&id);
                    ack.extend_from_slice(b"\r\x1c\x0d");
                    stream.write_all(&ack).unwrap();
                    answered += 1;
                }
            }
        }
    });
    (addr, handle)
}

#[test]
fn pipelined_acks_are_matched_by_msa2_out_of_order() {
    let (addr, server) = reverse_order_server(8, 400);
    let mut cfg = config(addr, 1, Stop::Count(400));
    cfg.pipeline = 8;
    let stats = run(cfg);
    server.join().unwrap();
    assert_eq!(stats.acked, 400, "{:?}", stats.errors);
    assert_eq!(stats.error_total(), 0, "{:?}", stats.errors);
}

#[test]
fn tls_and_mutual_tls() {
    let pki = pki::Pki::new("loadgen-tls");
    let trust = trusting(&pki);

    // TLS: server certificate checked against the CA.
    let (server_tls, _) = pki.server_with(None, &[]);
    let mut sink_config = SinkConfig::new(loopback());
    sink_config.tls = Some(server_tls);
    let sink = sink::start(sink_config).unwrap();
    let mut cfg = config(sink.local_addr(), 2, Stop::Count(300));
    cfg.tls = Some(tls_client(&trust));
    send::probe(&cfg).unwrap();
    let stats = run(cfg);
    assert_eq!(stats.acked, 300, "{:?}", stats.errors);
    assert_eq!(sink.stop().unique, 300);

    // Mutual TLS: the sink wants a client certificate from the CA.
    let (server_mtls, _) = pki.server_with(Some(&pki.ca), &[]);
    let mut sink_config = SinkConfig::new(loopback());
    sink_config.tls = Some(server_mtls);
    let sink = sink::start(sink_config).unwrap();
    let with_cert = ClientTlsSettings {
        client_cert: Some((pki.client.cert_path.clone(), pki.client.key_path.clone())),
        ..trust.clone()
    };
    let mut cfg = config(sink.local_addr(), 2, Stop::Count(300));
    cfg.tls = Some(tls_client(&with_cert));
    let stats = run(cfg.clone());
    assert_eq!(stats.acked, 300, "{:?}", stats.errors);

    // Without a client certificate the probe names the TLS failure.
    cfg.tls = Some(tls_client(&trust));
    let err = send::probe(&cfg).unwrap_err();
    assert!(matches!(err, SendError::Tls { .. }), "{err}");

    // --insecure accepts a certificate from an unknown CA; the CA check refuses it.
    let untrusting = ClientTlsSettings {
        ca: Some(pki.other_ca.cert_path.clone()),
        ..ClientTlsSettings::default()
    };
    cfg.tls = Some(tls_client(&untrusting));
    let err = send::probe(&cfg).unwrap_err();
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    cfg.tls = Some(ClientTls {
        config: insecure_client_config(Some(&(pki.client.cert_path.clone(), pki.client.key_path)))
            .unwrap(),
        server_name: server_name("localhost").unwrap(),
    });
    send::probe(&cfg).unwrap();
    sink.stop();
}

#[test]
fn a_refused_target_is_one_clear_error() {
    // Nothing listens there, and nobody else can take the port while the test runs.
    let refused = testkit::ReservedPort::new();
    let addr = refused.addr();
    let err = send::probe(&config(addr, 1, Stop::Count(1))).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cannot connect") && text.contains(&addr.to_string()),
        "{text}"
    );
}

/// The coordinated-omission experiment: the sink holds every ACK for `STALL` in the middle of
/// the run. An open-loop run must charge the stall to every message that should have been
/// sent during it, so its p99 lands near the stall; a closed loop only sees one message per
/// connection wait, so its p99 barely moves. Bounds are generous: this checks the method,
/// not the machine's speed.
#[test]
fn open_loop_sees_a_stall_that_closed_loop_hides() {
    const STALL: Duration = Duration::from_millis(600);
    let faults = Faults {
        stall: Some((Duration::from_millis(1_000), STALL)),
        ..Faults::default()
    };
    let run_length = Duration::from_secs(3);

    let sink = sink_with(faults.clone());
    let mut open = config(sink.local_addr(), 4, Stop::Duration(run_length));
    open.mode = Loop::Open {
        rate: 2_000.0,
        arrival: Arrival::Uniform,
    };
    let open_stats = run(open);
    sink.stop();

    let sink = sink_with(faults);
    let closed_stats = run(config(sink.local_addr(), 4, Stop::Duration(run_length)));
    sink.stop();

    let stall_us = STALL.as_secs_f64() * 1e6;
    let open_p99 = open_stats.latency_us(0.99);
    let closed_p99 = closed_stats.latency_us(0.99);
    eprintln!(
        "stall {stall_us} µs: open-loop p99 {open_p99:.0} µs (p50 {:.0}), closed-loop p99 {closed_p99:.0} µs (max {:.0})",
        open_stats.latency_us(0.5),
        closed_stats.latency_max_us()
    );
    assert_eq!(open_stats.error_total(), 0, "{:?}", open_stats.errors);
    // Theory: ~20 % of the messages are due during the stall, waiting 0..STALL; p99 ≈ 0.95 STALL.
    assert!(open_p99 >= 0.5 * stall_us, "open-loop p99 {open_p99} µs");
    assert!(open_p99 <= 2.0 * stall_us, "open-loop p99 {open_p99} µs");
    // The closed loop saw the stall (its max) but its p99 does not show it.
    assert!(closed_stats.latency_max_us() >= 0.5 * stall_us);
    assert!(
        closed_p99 < 0.25 * stall_us,
        "closed-loop p99 {closed_p99} µs"
    );
}

#[test]
fn the_sink_counts_duplicates() {
    let sink = sink_with(Faults::default());
    let message = source::template(TemplateKind::Adt, 1_000, 3).unwrap();
    let mut framed = Vec::new();
    let id = source::control_id(RunTag::new(9), 0, 0);
    message.write_framed(&mut framed, &id, b"20260101000000");
    let mut stream = TcpStream::connect(sink.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..3 {
        stream.write_all(&framed).unwrap();
        let mut ack = [0u8; 512];
        let n = stream.read(&mut ack).unwrap();
        assert!(n > 0);
    }
    drop(stream);
    let report = sink.stop();
    assert_eq!(report.received, 3);
    assert_eq!(report.unique, 1);
    assert_eq!(report.duplicates, 2);
}

#[test]
fn hold_opens_tls_connections_and_notices_a_refused_client_certificate() {
    use loadgen::hold::{self, HoldConfig};
    let pki = pki::Pki::new("loadgen-hold");
    let trust = trusting(&pki);
    let (server_tls, _) = pki.server_with(None, &[]);
    let mut sink_config = SinkConfig::new(loopback());
    sink_config.tls = Some(server_tls);
    let sink = sink::start(sink_config).unwrap();
    let mut config = HoldConfig {
        target: sink.local_addr(),
        tls: Some(tls_client(&trust)),
        connections: 40,
        threads: 2,
        connect_timeout: Duration::from_secs(5),
        concurrent_opens: 4,
        hold_for: Some(Duration::from_millis(300)),
        driver: Driver::Auto,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut seen = None;
    let report = hold::run(&config, &stop, |opened| {
        seen = Some(opened.clone());
        true
    })
    .unwrap();
    let seen = seen.expect("on_opened was called");
    assert!(seen.all_open(), "{seen:?}");
    assert_eq!((seen.opened, seen.failed), (40, 0));
    assert!(report.held);
    assert!(report.held_for >= Duration::from_millis(300));
    assert_eq!(report.closed_by_peer, 0);
    let sink_report = sink.stop();
    assert_eq!(sink_report.connections, 40);
    assert_eq!(sink_report.received, 0);

    // Mutual TLS without a client certificate: in TLS 1.3 the client's handshake completes,
    // then the server refuses. Those connections count as closed at once, not as held.
    let (server_mtls, _) = pki.server_with(Some(&pki.ca), &[]);
    let mut sink_config = SinkConfig::new(loopback());
    sink_config.tls = Some(server_mtls);
    let sink = sink::start(sink_config).unwrap();
    config.target = sink.local_addr();
    config.connections = 3;
    let mut called = false;
    let report = hold::run(&config, &stop, |opened| {
        called = true;
        opened.all_open()
    })
    .unwrap();
    assert!(called);
    let opened = &report.opened;
    assert_eq!(opened.failed + opened.closed_at_once, 3, "{opened:?}");
    assert!(!opened.all_open() && !report.held);
    let cause = opened.first_error.as_deref().unwrap_or_default();
    assert!(cause.to_lowercase().contains("certificate"), "{cause}");
    sink.stop();

    // The stop flag set during holding lets go at once.
    let sink = sink::start(SinkConfig::new(loopback())).unwrap();
    config.target = sink.local_addr();
    config.tls = None;
    config.hold_for = None;
    let flag = Arc::clone(&stop);
    let started = std::time::Instant::now();
    let report = hold::run(&config, &stop, |opened| {
        assert!(opened.all_open());
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        true
    })
    .unwrap();
    assert!(report.held && report.closed_by_peer == 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    sink.stop();
}

#[test]
fn an_idle_connection_timing_out_does_not_disturb_the_others() {
    // Each read has its own cancel signal: the idle connection's timeout must cancel its own
    // read only, while a busy connection on the same thread goes on being answered.
    let mut config = SinkConfig::new(loopback());
    config.idle_timeout = Duration::from_millis(300);
    let sink = sink::start(config).unwrap();
    let mut idle = TcpStream::connect(sink.local_addr()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut busy = TcpStream::connect(sink.local_addr()).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let message = source::template(TemplateKind::Adt, 300, 3).unwrap();
    let started = std::time::Instant::now();
    let mut answered = 0_u32;
    let mut sequence = 0;
    // Keep the busy connection talking well past the idle timeout (bounded by the loop count).
    while started.elapsed() < Duration::from_millis(900) && sequence < 10_000 {
        let mut framed = Vec::new();
        let id = source::control_id(RunTag::new(5), 1, sequence);
        sequence += 1;
        message.write_framed(&mut framed, &id, b"20260101000000");
        busy.write_all(&framed).unwrap();
        let mut ack = [0u8; 512];
        let n = busy.read(&mut ack).unwrap();
        assert!(
            n > 0,
            "the busy connection was closed after {answered} ACKs"
        );
        answered += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    // The idle one was closed by the sink: reading gives end of stream.
    let mut byte = [0u8; 1];
    assert_eq!(idle.read(&mut byte).unwrap(), 0);
    drop(busy);
    let report = sink.stop();
    assert_eq!(u64::from(answered), report.received);
    assert!(answered >= 10, "{answered}");
}
