//! `mllp-loadgen send` against real third-party HL7 servers: python-hl7's asyncio MLLP server
//! (persistent connections) and hl7apy's MLLPServer (which closes the connection after each
//! message). Every message must be acknowledged with its own MSH-10, and each server must
//! report having received exactly the messages the generator counted.
//!
//! The peers come from PyPI (`scripts/interop-setup.sh`); see `relay/tests/support/peers.rs`.

#[path = "../../relay/tests/support/peers.rs"]
mod peers;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use loadgen::send::{self, Loop, SendConfig, Stop};
use loadgen::source::{self, RunTag, TemplateKind};
use peers::{Peer, python};
use relay::config::Driver;

fn drive(server_mode: &str, count: u64, lost_allowed: u64) {
    let Some(python) = python() else { return };
    let server = Peer::spawn(&python, &[server_mode]);
    let port = server.port();
    let run_tag = RunTag::new(77);
    let config = SendConfig {
        target: format!("127.0.0.1:{port}").parse().unwrap(),
        tls: None,
        connections: 2,
        threads: 1,
        pipeline: 1,
        mode: Loop::Closed,
        stop: Stop::Count(count),
        warmup: Duration::ZERO,
        messages: Arc::new(vec![
            source::template(TemplateKind::Oru, 2048, 5).unwrap(),
            source::template(TemplateKind::Adt, 1024, 6).unwrap(),
        ]),
        ack_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        reconnect_backoff: (Duration::from_millis(10), Duration::from_millis(200)),
        run_tag,
        driver: Driver::Auto,
    };
    let stats = send::run(config, &Arc::new(AtomicBool::new(false)), |_| {}).unwrap();
    assert_eq!(stats.sent, count, "{:?}", stats.errors);
    // A server that closes after each message catches the generator's first next message in
    // flight on each connection open at that moment (counted, never hidden); the generator
    // then reopens before each message.
    let lost = stats
        .errors
        .get("closed_with_in_flight")
        .copied()
        .unwrap_or(0);
    assert!(lost <= lost_allowed, "{:?}", stats.errors);
    assert_eq!(stats.error_total(), lost, "{:?}", stats.errors);
    assert_eq!(stats.acked + lost, count);
    assert_eq!(stats.ack_codes.get("AA").copied(), Some(stats.acked));
    let count = stats.acked;

    // The server's own record: every message once, each ours.
    let mut received = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while received.len() < usize::try_from(count).unwrap() && std::time::Instant::now() < deadline {
        for line in server.drain() {
            if let Some(id) = line.split_whitespace().nth(2) {
                assert!(
                    source::parse_control_id(run_tag, id.as_bytes()).is_some(),
                    "{line}"
                );
                assert!(received.insert(id.to_owned()), "duplicate {id}");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(received.len(), usize::try_from(count).unwrap());
}

#[test]
fn python_hl7_server_acks_every_message() {
    drive("pyhl7-server", 300, 0);
}

#[test]
fn hl7apy_server_that_closes_after_each_message() {
    drive("hl7apy-server", 100, 2);
}
