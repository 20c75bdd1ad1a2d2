//! Every message of the public corpus (`../shared/corpus`, real sample files of HAPI, nHapi,
//! the CDC, Microsoft's FHIR converter and others) sent through a relay to python-hl7's MLLP
//! server, as a sender would send them: a file of one message as it is, a file of messages
//! back to back one frame per message, a batch file (FHS/BHS) whole to a `batch = "split"`
//! listener. Every message with a readable MSH must reach python-hl7 byte for byte (the
//! server reports the SHA-256 of the bytes it read), and the sender must get python-hl7's
//! answer, never a refusal from the relay; only frames without a readable MSH (fuzzer-made
//! files) get the relay's AR, and nothing of them is forwarded.
//!
//! Needs the interop peers (see `interop`) and the corpus (`MLLP_CORPUS_DIR`, default
//! `../shared/corpus` beside the repository); without either it says so and passes, unless
//! `MLLP_INTEROP_REQUIRED=1`.

use std::path::PathBuf;

use mllp::ack::{expects_accept_ack, parse_ack};
use mllp::batch::{LineEndings, is_batch, split_batch};
use mllp::hl7::Msh;
use relay::config::BatchMode;
use testkit::interop::{Peer, python};

use crate::support::{Client, PATIENCE, config, sha256};

fn corpus_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("MLLP_CORPUS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
    };
    if dir.join("MANIFEST.md").is_file() {
        return Some(dir);
    }
    let note = format!(
        "corpus not found at {} (set MLLP_CORPUS_DIR)",
        dir.display()
    );
    assert!(
        std::env::var_os("MLLP_INTEROP_REQUIRED").is_none_or(|v| v != "1"),
        "{note}"
    );
    eprintln!("{note}: skipped");
    None
}

/// One frame to send: its label, its bytes, and the messages the receiver should get from it.
struct Unit {
    label: String,
    bytes: Vec<u8>,
    messages: Vec<Vec<u8>>,
}

/// The corpus as a sender sends it.
fn units(dir: &std::path::Path) -> Vec<Unit> {
    let mut paths = Vec::new();
    for folder in std::fs::read_dir(dir).unwrap() {
        let folder = folder.unwrap().path();
        if folder.is_dir() {
            for file in std::fs::read_dir(&folder).unwrap() {
                paths.push(file.unwrap().path());
            }
        }
    }
    paths.sort();
    let mut units = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        let label = path.strip_prefix(dir).unwrap().display().to_string();
        let split = split_batch(&bytes, LineEndings::CrOrLf).ok();
        let slices = |bytes: &[u8]| -> Vec<Vec<u8>> {
            let batch = split.as_ref().expect("a readable batch");
            batch
                .messages
                .iter()
                .map(|r| bytes[r.clone()].to_vec())
                .collect()
        };
        if is_batch(&bytes) && split.is_some() {
            let messages = slices(&bytes);
            units.push(Unit {
                label,
                bytes,
                messages,
            });
        } else if split.as_ref().is_some_and(|b| b.messages.len() > 1) {
            for (i, message) in slices(&bytes).into_iter().enumerate() {
                units.push(Unit {
                    label: format!("{label} #{}", i + 1),
                    bytes: message.clone(),
                    messages: vec![message],
                });
            }
        } else {
            units.push(Unit {
                label,
                messages: vec![bytes.clone()],
                bytes,
            });
        }
    }
    units
}

/// The codes of the ACKs in an answer: one, or each of an acknowledgement batch's.
fn codes_in(answer: &[u8]) -> Vec<String> {
    match split_batch(answer, LineEndings::Cr) {
        Ok(batch) if is_batch(answer) => batch
            .messages
            .iter()
            .map(|r| parse_ack(&answer[r.clone()]).map_or("?".to_owned(), |a| a.code.to_string()))
            .collect(),
        _ => parse_ack(answer)
            .map(|a| vec![a.code.to_string()])
            .unwrap_or_default(),
    }
}

#[test]
fn every_corpus_message_reaches_python_hl7_byte_for_byte() {
    let Some(dir) = corpus_dir() else { return };
    let Some(python) = python() else { return };
    let server = Peer::spawn(&python, &["pyhl7-server"]);
    let mut cfg = config(([127, 0, 0, 1], server.port()).into());
    cfg.listeners[0].batch = BatchMode::Split;
    cfg.downstreams[0].retries = 0;
    let relay = relay::start(cfg).unwrap();

    let units = units(&dir);
    // Per unit: whether it has a readable header, whether an answer is due, and the codes of
    // the ACKs the sender got (several for an acknowledgement batch).
    let mut sent = Vec::new();
    for unit in &units {
        let mut client = Client::connect(relay.listen_addr());
        client.send(&unit.bytes);
        let header = Msh::parse_lenient(&unit.bytes);
        let batch = is_batch(&unit.bytes);
        let readable = batch || header.is_ok();
        // MSH-15 NE (or ER) asks for no accept ACK, and the relay sends none.
        let due = batch || header.as_ref().map_or(true, expects_accept_ack);
        let answer = if due {
            client.receive_within(PATIENCE)
        } else {
            None
        };
        let codes = answer.as_deref().map(codes_in).unwrap_or_default();
        sent.push((unit, readable, due, codes));
    }
    let forwarded: Vec<String> = sent
        .iter()
        .filter(|(_, readable, ..)| *readable)
        .flat_map(|(unit, ..)| unit.messages.iter().map(|m| sha256(m)))
        .collect();
    // The server prints a line per message before it answers (and one more after a message
    // it cannot parse); a sentinel message marks the end.
    let mut client = Client::connect(relay.listen_addr());
    let end = b"MSH|^~\\&|TEST|TEST|TEST|TEST|2026||ADT^A01|CORPUS-END|P|2.5\r".to_vec();
    assert!(!codes_in(&client.round_trip(&end)).is_empty());
    let mut received = Vec::new();
    loop {
        let line = server.line();
        if line.ends_with(" CORPUS-END") {
            break;
        }
        received.push(line);
    }
    let mut digests = Vec::new();
    let mut unparsed = Vec::new();
    for line in &received {
        if let Some(rest) = line.strip_prefix("RECV ") {
            digests.push(rest.split(' ').next().unwrap().to_owned());
        } else if line.starts_with("UNPARSED") {
            unparsed.push(digests.last().cloned().unwrap_or_default());
        }
    }
    // Sorted: a message that needs no ACK is not waited for, so the next one (on another
    // connection) can overtake it.
    let (mut digests, mut forwarded) = (digests, forwarded);
    digests.sort();
    forwarded.sort();
    assert!(
        digests == forwarded,
        "every message with a readable MSH arrived once, byte for byte"
    );

    let mut report = Vec::new();
    let (mut refused, mut no_ack_due, mut not_parsed, mut unmatched) = (0, 0, 0, 0);
    let accepted =
        |codes: &[String]| !codes.is_empty() && codes.iter().all(|c| c == "AA" || c == "CA");
    let failed = |codes: &[String]| codes == ["AE"] || codes == ["CE"];
    for (unit, readable, due, codes) in &sent {
        let python_failed = unit.messages.iter().any(|m| unparsed.contains(&sha256(m)));
        // nHapi's fuzzer-made inputs: python-hl7 may read their header otherwise than the
        // relay does, and then its ACK names another control ID.
        let fuzzed = unit.label.contains("/bad_");
        let (ok, why) = if !readable {
            refused += 1;
            (codes == &["AR"], "AR: no readable MSH, not forwarded")
        } else if !due {
            no_ack_due += 1;
            (codes.is_empty(), "no answer: MSH-15 asks for none")
        } else if python_failed {
            not_parsed += 1;
            (
                failed(codes),
                "AE/CE: python-hl7 could not parse it, closed without an ACK",
            )
        } else if fuzzed && failed(codes) {
            unmatched += 1;
            (
                true,
                "AE/CE: python-hl7's ACK names another MSH-10 than the relay reads",
            )
        } else {
            (accepted(codes), "AA/CA from python-hl7")
        };
        report.push(format!("{} | {} | {why}", unit.label, codes.join(",")));
        assert!(ok, "{}: got {codes:?}, expected {why}", unit.label);
    }
    eprintln!(
        "corpus: {} frames; {} messages with a readable MSH, all forwarded byte for byte; {} \
         frames without one refused with AR; {} with no ACK due; {} python-hl7 could not \
         parse; {} fuzzer-made ones answered AE/CE (ACK naming another MSH-10)\n{}",
        units.len(),
        digests.len(),
        refused,
        no_ack_due,
        not_parsed,
        unmatched,
        report.join("\n")
    );
    relay.shutdown();
}
