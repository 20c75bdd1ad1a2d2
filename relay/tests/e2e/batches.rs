//! Batches over MLLP (FHS/BHS … BTS/FTS in one frame) in each listener mode, a batch of 100
//! with one message refused by the receiver in the middle: `reject` refuses the frame whole,
//! `forward` hands the receiver's acknowledgement batch back byte for byte, `split` delivers
//! each message alone and answers with one acknowledgement batch naming every outcome.

use std::sync::Arc;

use mllp::ack::{AckCode, Outcome, parse_ack};
use mllp::batch::{BatchHeaders, LineEndings, split_batch, write_batch};
use relay::config::BatchMode;
use relay::metrics::Stats;
use testkit::receiver::{Behaviour, Receiver};

use crate::support::{Client, config};

const COUNT: usize = 100;
/// The message the receiver refuses.
const REFUSED: &str = "B50";

fn messages() -> Vec<Vec<u8>> {
    (1..=COUNT)
        .map(|i| {
            format!(
                "MSH|^~\\&|LAB|HOSP|EHR|CLINIC|2026||ORU^R01|B{i}|P|2.5\rOBX|1|TX|||result {i}\r"
            )
            .into_bytes()
        })
        .collect()
}

/// The 100 messages in one batch with FHS/BHS headers and correct counts.
fn batch_file(messages: &[Vec<u8>]) -> Vec<u8> {
    let parts: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let headers = BatchHeaders {
        file: true,
        batch: true,
        sending_application: b"LAB",
        sending_facility: b"HOSP",
        timestamp: b"20261207",
        control_id: b"FILE-7",
    };
    let mut out = Vec::new();
    write_batch(&parts, headers, &mut out);
    out
}

/// A receiver that refuses [`REFUSED`] with AR and accepts the rest.
fn receiver() -> Receiver {
    let receiver = Receiver::start(Behaviour::Ack);
    receiver.set_nak(Arc::new(|id| (id == REFUSED).then_some(Outcome::Rejected)));
    receiver
}

/// Each ACK of an acknowledgement batch: (code, MSA-2), in order; and the whole answer as text.
fn acks_in(answer: &[u8]) -> (Vec<(AckCode, String)>, String) {
    let batch = split_batch(answer, LineEndings::Cr).unwrap_or_else(|e| {
        panic!(
            "an acknowledgement batch, not {e}: {}",
            String::from_utf8_lossy(answer).replace('\r', "\n")
        )
    });
    let acks = batch
        .messages
        .iter()
        .map(|range| {
            let ack = parse_ack(&answer[range.clone()]).expect("an ACK");
            (
                ack.code,
                String::from_utf8_lossy(ack.acknowledged_id).into_owned(),
            )
        })
        .collect();
    (acks, String::from_utf8_lossy(answer).into_owned())
}

/// Every message accepted but [`REFUSED`].
fn expected_acks() -> Vec<(AckCode, String)> {
    (1..=COUNT)
        .map(|i| {
            let id = format!("B{i}");
            let code = if id == REFUSED {
                AckCode::AR
            } else {
                AckCode::AA
            };
            (code, id)
        })
        .collect()
}

#[test]
fn reject_refuses_the_batch_whole_and_forwards_nothing() {
    let receiver = receiver();
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let answer = client.round_trip(&batch_file(&messages()));
    let ack = parse_ack(&answer).unwrap();
    assert_eq!((ack.code, ack.acknowledged_id), (AckCode::AR, &b""[..]));
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        text.contains("ERR|||100^") && text.contains("batch = \"reject\""),
        "{text}"
    );
    // The connection goes on: a single message after the batch is relayed.
    let single = &messages()[0];
    assert_eq!(
        parse_ack(&client.round_trip(single)).unwrap().code,
        AckCode::AA
    );
    assert_eq!(receiver.payloads(), std::slice::from_ref(single));
    let stats = relay.stats().listener(0);
    assert_eq!(Stats::get(&stats.batches_in), 1);
    assert_eq!(Stats::get(&stats.rejects_batch), 1);
    relay.shutdown();
}

#[test]
fn forward_hands_the_receivers_acknowledgement_batch_back() {
    let receiver = receiver();
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].batch = BatchMode::Forward;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let file = batch_file(&messages());
    let answer = client.round_trip(&file);
    assert_eq!(receiver.payloads(), [file], "one frame, byte for byte");
    let (acks, text) = acks_in(&answer);
    assert_eq!(acks, expected_acks());
    // The receiver's own answer (its control ID), not one the relay made.
    assert!(
        text.starts_with("FHS|^~\\&|||LAB|HOSP|20261122103001||||RECEIVER|FILE-7\r"),
        "{text}"
    );
    assert!(text.ends_with("BTS|100\rFTS|1\r"), "{text}");
    relay.shutdown();
}

#[test]
fn split_delivers_each_message_and_names_every_outcome_in_one_answer() {
    let receiver = receiver();
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].batch = BatchMode::Split;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let answer = client.round_trip(&batch_file(&messages()));
    assert_eq!(
        receiver.payloads(),
        messages(),
        "each message alone, in order"
    );
    let (acks, text) = acks_in(&answer);
    assert_eq!(acks, expected_acks(), "never an AA for the refused message");
    // The relay's acknowledgement batch: headers turned around, referring to the sender's.
    assert!(text.starts_with("FHS|^~\\&|||LAB|HOSP|"), "{text}");
    assert!(text.contains("|FILE-7\rBHS|"), "{text}");
    assert!(text.ends_with("BTS|100\rFTS|1\r"), "{text}");
    // The ACKs inside are the receiver's, byte for byte.
    assert!(text.contains("MSA|AR|B50|receiver"), "{text}");

    // A batch whose trailer miscounts is refused whole.
    let mut miscounted = batch_file(&messages()[..3]);
    let at = miscounted.len() - "BTS|3\rFTS|1\r".len();
    miscounted.splice(at..at + 5, b"BTS|4".iter().copied());
    let refused = client.round_trip(&miscounted);
    let ack = parse_ack(&refused).unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            String::from_utf8_lossy(&refused).replace('\r', "\n")
        )
    });
    assert_eq!(ack.code, AckCode::AR);
    let text = String::from_utf8_lossy(&refused).into_owned();
    assert!(
        text.contains("batch refused") && text.contains('4'),
        "{text}"
    );
    assert_eq!(receiver.payloads().len(), COUNT, "nothing of it forwarded");
    relay.shutdown();
}

#[test]
fn split_stops_at_a_message_that_cannot_be_delivered() {
    let mut receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].batch = BatchMode::Split;
    cfg.downstreams[0].retries = 0;
    let relay = relay::start(cfg).unwrap();
    receiver.kill();
    let mut client = Client::connect(relay.listen_addr());
    let answer = client.round_trip(&batch_file(&messages()[..3]));
    let (acks, text) = acks_in(&answer);
    let codes: Vec<AckCode> = acks.iter().map(|(code, _)| *code).collect();
    assert_eq!(codes, [AckCode::AE; 3], "{text}");
    assert!(text.contains("not delivered"), "{text}");
    assert!(text.contains("not attempted"), "{text}");
    relay.shutdown();
}
