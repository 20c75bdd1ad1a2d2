//! `mllp-loadgen send` against real third-party HL7 servers: python-hl7's asyncio MLLP server
//! (persistent connections), hl7apy's MLLPServer (which closes the connection after each
//! message) and txHL7's Twisted MLLPFactory (persistent connections; driven through the
//! `mllp-loadgen` binary and its JSON report). Every message must be acknowledged with its own
//! MSH-10, and each server must report having received exactly the messages the generator
//! counted.
//!
//! The peers come from PyPI (`scripts/interop-setup.sh`); see `testkit::interop`.

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use loadgen::send::{self, Loop, SendConfig, Stop};
use loadgen::source::{self, RunTag, TemplateKind};
use netio::runtime::Driver;
use simd_json::prelude::*;
use testkit::interop::{PEER_PATIENCE, Peer, python, python_with};

const BIN: &str = env!("CARGO_BIN_EXE_mllp-loadgen");

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
        framing: mllp::frame::FramingConfig::MLLP,
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.len() < usize::try_from(count).unwrap() && Instant::now() < deadline {
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

/// One message on `stream` and txHL7's answer to it, unframed: the frame must be VT, body,
/// FS CR.
fn exchange(stream: &mut TcpStream, control_id: &str) -> String {
    let message = format!(
        "MSH|^~\\&|PROBE|LAB|TX|HOSP|20240101120000||ADT^A01|{control_id}|P|2.5\r\
         PID|1||12345^^^HOSP^MR||DOE^JANE\r"
    );
    stream.write_all(b"\x0b").unwrap();
    stream.write_all(message.as_bytes()).unwrap();
    stream.write_all(b"\x1c\r").unwrap();
    let mut frame = Vec::new();
    let mut byte = [0; 1];
    while !frame.ends_with(b"\x1c\r") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed after {frame:?}");
        frame.push(byte[0]);
    }
    let frame = String::from_utf8(frame).unwrap();
    frame
        .strip_prefix('\x0b')
        .and_then(|f| f.strip_suffix("\x1c\r"))
        .unwrap_or_else(|| panic!("not one MLLP frame: {frame:?}"))
        .to_owned()
}

#[test]
fn loadgen_drives_txhl7_server() {
    let Some(python) = python_with("hl7, txHL7.mllp, twisted.internet") else {
        return;
    };
    let server = Peer::spawn(&python, &["txhl7-server"]);
    let target = format!("127.0.0.1:{}", server.port());

    // txHL7's ACK, as bytes: python-hl7's `create_ack`, a real ACK (MSH-9 ACK^<trigger>^ACK,
    // MSA-1 AA, MSA-2 the message's MSH-10, every segment CR-terminated). Two messages on one
    // connection: txHL7 keeps it open, and its deframer leaves the previous frame's CR in front
    // of the second message, which it must still parse.
    let mut probe = TcpStream::connect(&target).unwrap();
    probe.set_read_timeout(Some(PEER_PATIENCE)).unwrap();
    for id in ["TXPROBE1", "TXPROBE2"] {
        let ack = exchange(&mut probe, id);
        let segments: Vec<&str> = ack.split_terminator('\r').collect();
        assert!(ack.ends_with('\r'), "{ack:?}");
        assert_eq!(segments.len(), 2, "{ack:?}");
        let msh: Vec<&str> = segments[0].split('|').collect();
        assert_eq!(msh[0], "MSH", "{ack:?}");
        assert_eq!(msh[8], "ACK^A01^ACK", "{ack:?}");
        assert_ne!(msh[9], id, "{ack:?}");
        assert_eq!(segments[1], format!("MSA|AA|{id}"), "{ack:?}");
        let line = server.line();
        assert!(
            line.starts_with("RECV ") && line.ends_with(&format!(" {id}")),
            "{line}"
        );
    }
    drop(probe);

    // The generator: several connections, a fixed count, its JSON report.
    let connections = 4;
    let count = 1_000;
    let scratch = testkit::TempDir::new("loadgen-interop-txhl7");
    let report = scratch.join("report.json");
    let output = testkit::run(
        Command::new(BIN)
            .args(["send", "--target", &target])
            .args(["--connections", &connections.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--template", "oru", "--size", "2KiB"])
            .args(["--ack-timeout", "10s", "--json"])
            .arg(&report),
        PEER_PATIENCE,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut bytes = std::fs::read(&report).unwrap();
    let doc = simd_json::to_owned_value(&mut bytes).unwrap();
    // `send` counts an ACK only when its MSA-2 names a message in flight on its connection
    // (otherwise `msa2_mismatch`): every message acknowledged, by its own control ID.
    assert_eq!(doc["sent"].as_u64(), Some(count), "{doc}");
    assert_eq!(doc["acked"].as_u64(), Some(count), "{doc}");
    assert_eq!(doc["ack_codes"]["AA"].as_u64(), Some(count), "{doc}");
    assert_eq!(doc["ack_codes"].as_object().unwrap().len(), 1, "{doc}");
    assert!(doc["errors"].as_object().unwrap().is_empty(), "{doc}");
    // txHL7 never closes a connection itself (no idle timeout unless the receiver sets one).
    assert_eq!(doc["reconnects"].as_u64(), Some(0), "{doc}");

    // The server's own record: every message once, all of one run, over every connection.
    let mut received = HashSet::new();
    let mut tags = HashSet::new();
    let mut used = BTreeSet::new();
    let expected = usize::try_from(count).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.len() < expected && Instant::now() < deadline {
        for line in server.drain() {
            let id = line
                .split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_owned();
            let (tag, connection, _) = source::split_control_id(id.as_bytes())
                .unwrap_or_else(|| panic!("not a loadgen control ID: {line}"));
            tags.insert(tag);
            used.insert(connection);
            assert!(received.insert(id), "duplicate: {line}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(received.len(), expected);
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert_eq!(used, (0..connections).collect::<BTreeSet<u32>>());
}
