//! What the relay binary logs: one line when a connection opens (listener, peer, TLS version,
//! client certificate subject and thumbprint) and one when it closes (messages, duration,
//! reason); and never message content: run at the most verbose level through every path that
//! logs about a message (relayed, refused, unroutable, bad header, receiver NAK), no patient
//! data reaches stdout or stderr.

use std::process::Command;

use mllp::ack::AckCode;
use netio::tls::CertIdentity;
use testkit::receiver::{Behaviour, Receiver};
use testkit::{Process, Signal, pki};

use crate::support::{Client, PATIENCE, TLS_BOTH, code_and_id, listening_addr};

const BIN: &str = env!("CARGO_BIN_EXE_mllp-relay");

/// Patient data a message carries in PID and OBX: none of it may be logged.
const SECRETS: [&str; 4] = ["ZZSURNAME", "ZZGIVEN", "ZZ-MRN-4711", "ZZ-RESULT-TEXT"];

fn message(id: &str, kind: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|HOSP|EHR|CLINIC|2026||{kind}|{id}|P|2.5\r\
         PID|1||ZZ-MRN-4711^^^HOSP^MR||ZZSURNAME^ZZGIVEN\r\
         OBX|1|TX|NOTE||ZZ-RESULT-TEXT\r"
    )
    .into_bytes()
}

#[test]
fn connections_are_logged_and_message_content_never_is() {
    let pki = pki::Pki::new("e2e-logs");
    let receiver = Receiver::start(Behaviour::Ack);
    // The receiver refuses one message, so the NAK path logs too.
    receiver.set_nak(std::sync::Arc::new(|id| {
        (id == "L-NAK").then_some(mllp::ack::Outcome::Rejected)
    }));
    let mut relay = Process::start(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"])
            .args(["--forward", &receiver.addr().to_string()])
            .arg("--tls-cert")
            .arg(&pki.server.cert_path)
            .arg("--tls-key")
            .arg(&pki.server.key_path)
            .arg("--client-ca")
            .arg(&pki.ca.cert_path)
            .args(["--log", "trace"])
            .env_remove("RUST_LOG"),
    );
    let addr = listening_addr(&relay);

    let mut client =
        Client::connect_tls(addr, pki.client(TLS_BOTH, Some(pki.client.certified_key())));
    let ack = client.round_trip(&message("L-OK", "ORU^R01"));
    assert_eq!(code_and_id(&ack), (AckCode::AA, "L-OK".to_owned()));
    let nak = client.round_trip(&message("L-NAK", "ORU^R01"));
    assert_eq!(code_and_id(&nak).0, AckCode::AR);
    // No readable header: the relay's own AR.
    let mut headerless = b"PID|1||ZZ-MRN-4711||ZZSURNAME^ZZGIVEN\r".to_vec();
    headerless.extend_from_slice(b"OBX|1|TX|||ZZ-RESULT-TEXT\r");
    assert_eq!(code_and_id(&client.round_trip(&headerless)).0, AckCode::AR);
    drop(client);

    let subject = CertIdentity::of(&pki.client.der).subject.unwrap();
    let thumbprint = pki.client.thumbprint().to_string();
    let closed = testkit::wait_until(PATIENCE, || {
        relay.log().tail(200).contains("connection closed")
    });
    let status = relay.stop(Signal::TERM);
    assert!(status.success(), "{status:?}");
    let log = relay.log().tail(10_000);
    assert!(closed, "{log}");

    let opened = log
        .lines()
        .find(|l| l.contains("connection opened"))
        .unwrap_or_else(|| panic!("no opening line in\n{log}"));
    for part in [
        "listener=listener",
        "peer=127.0.0.1:",
        "tls=\"TLSv1.3\"",
        &format!("client_subject=\"{subject}\""),
        &format!("client_thumbprint={thumbprint}"),
    ] {
        assert!(opened.contains(part), "{part} not in {opened}");
    }
    let closing = log
        .lines()
        .find(|l| l.contains("connection closed"))
        .unwrap();
    for part in ["messages=3", "duration=", "reason=\"closed by the sender\""] {
        assert!(closing.contains(part), "{part} not in {closing}");
    }
    for secret in SECRETS {
        assert!(
            !log.contains(secret),
            "patient data {secret:?} reached the log:\n{log}"
        );
    }
}

/// `--log-format json` writes one JSON object per line with the fields at the top level; the
/// `--log` flag wins over `RUST_LOG` (an invalid RUST_LOG is then never read), and without the
/// flag an invalid RUST_LOG is named.
#[test]
fn json_lines_and_the_flag_wins_over_rust_log() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut relay = Process::start(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"])
            .args(["--forward", &receiver.addr().to_string()])
            .args(["--log", "info", "--log-format", "json"])
            .env("RUST_LOG", "relay=loud"),
    );
    let addr = listening_addr(&relay);
    let mut client = Client::connect(addr);
    let message = message("J-1", "ORU^R01");
    assert_eq!(code_and_id(&client.round_trip(&message)).0, AckCode::AA);
    drop(client);
    let closed = testkit::wait_until(PATIENCE, || {
        relay
            .log()
            .tail(50)
            .contains("\"message\":\"connection closed\"")
    });
    let status = relay.stop(Signal::TERM);
    assert!(status.success(), "{status:?}");
    let log = relay.log().tail(200);
    assert!(closed, "{log}");
    let opened = log
        .lines()
        .find(|l| l.contains("\"message\":\"connection opened\""))
        .unwrap_or_else(|| panic!("{log}"));
    let json = opened
        .find('{')
        .map(|at| &opened[at..])
        .unwrap_or_else(|| panic!("no JSON in {opened}"));
    for part in [
        "\"level\":\"INFO\"",
        "\"listener\":\"listener\"",
        "\"tls\":\"off\"",
        "\"timestamp\":",
    ] {
        assert!(
            json.starts_with('{') && json.contains(part),
            "{part} not in {json}"
        );
    }

    let out = testkit::run(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9"])
            .env("RUST_LOG", "relay=loud"),
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid RUST_LOG filter \"relay=loud\""),
        "{stderr}"
    );
}

/// The audit trail in a file: one JSON line per message with who, what (MSH-3/4/9/10), where
/// and the answer, never the content; reopened on request (logrotate moves the file, SIGHUP
/// makes the relay write a new one).
#[test]
fn the_audit_file_records_every_message_without_its_content() {
    let receiver = Receiver::start(Behaviour::Ack);
    receiver.set_nak(std::sync::Arc::new(|id| {
        (id == "A-NAK").then_some(mllp::ack::Outcome::Rejected)
    }));
    let dir = testkit::TempDir::new("audit");
    let path = dir.join("audit.jsonl");
    let mut cfg = crate::support::config(receiver.addr());
    cfg.audit = relay::config::AuditConfig::File(path.clone());
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    assert_eq!(
        code_and_id(&client.round_trip(&message("A-OK", "ORU^R01"))).0,
        AckCode::AA
    );
    assert_eq!(
        code_and_id(&client.round_trip(&message("A-NAK", "ORU^R01"))).0,
        AckCode::AR
    );
    let mut headerless = b"PID|1||ZZ-MRN-4711||ZZSURNAME^ZZGIVEN\r".to_vec();
    headerless.extend_from_slice(b"OBX|1|TX|||ZZ-RESULT-TEXT\r");
    assert_eq!(code_and_id(&client.round_trip(&headerless)).0, AckCode::AR);

    let read = |path: &std::path::Path, lines: usize| {
        let mut text = String::new();
        let complete = testkit::wait_until(PATIENCE, || {
            text = std::fs::read_to_string(path).unwrap_or_default();
            text.lines().count() >= lines
        });
        assert!(complete, "{text}");
        text
    };
    let text = read(&path, 3);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, expected) in lines.iter().zip([
        "\"msh3\":\"LAB\",\"msh4\":\"HOSP\",\"msh9\":\"ORU^R01\",\"msh10\":\"A-OK\",\
         \"downstream\":\"mock\",\"ack\":\"AA\",\"ack_origin\":\"downstream\"",
        "\"msh10\":\"A-NAK\",\"downstream\":\"mock\",\"ack\":\"AR\",\"ack_origin\":\"downstream\"",
        "\"msh10\":\"\",\"downstream\":\"\",\"ack\":\"AR\",\"ack_origin\":\"relay\"",
    ]) {
        assert!(
            line.starts_with("{\"time\":\"20") && line.contains("\"listener\":\"listener\""),
            "{line}"
        );
        assert!(line.contains(expected), "{expected} not in {line}");
        assert!(line.ends_with('}'), "{line}");
    }
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "patient data {secret:?} in the audit:\n{text}"
        );
    }

    // logrotate moves the file away; the relay keeps writing there until told to reopen.
    let rotated = dir.join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    relay.reopen_audit();
    assert_eq!(
        code_and_id(&client.round_trip(&message("A-NEW", "ORU^R01"))).0,
        AckCode::AA
    );
    let text = read(&path, 1);
    assert!(text.contains("\"msh10\":\"A-NEW\""), "{text}");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        3
    );
    relay.shutdown();
}
