//! Character sets end to end: a Windows-1252 sender bridged to a UTF-8 receiver (characters
//! that differ from Latin-1: €, „, ‘) and its ACK put back into Windows-1252; payloads checked
//! against their declared set, invalid bytes and unknown names refused with AR and not
//! forwarded.

use mllp::ack::{AckCode, parse_ack};
use mllp::charset::Charset;
use relay::config::CharsetMode;
use relay::metrics::Stats;
use testkit::receiver::{Behaviour, Receiver};

use crate::support::{Client, code_and_id, config};

/// A result from a Windows-1252 sender with an empty MSH-18, addressed to a receiving
/// application whose name has a non-ASCII letter: `€ 12,50 „Befund“ ‘ok’ Ü`.
fn windows_1252_result(id: &str, msh18: &str) -> Vec<u8> {
    let mut message = format!(
        "MSH|^~\\&|LAB|HOSP|KLINIK_M\u{0}NCHEN|CLINIC|2026||ORU^R01|{id}|P|2.5||||||{msh18}\r"
    )
    .into_bytes();
    // 0xDC is Ü in Windows-1252 (and in Latin-1).
    let at = message.iter().position(|&b| b == 0).unwrap();
    message[at] = 0xDC;
    message.extend_from_slice(b"OBX|1|TX|||\x80 12,50 \x84Befund\x93 \x91ok\x92\r");
    message
}

#[test]
fn a_windows_1252_sender_reaches_a_utf8_receiver_and_gets_its_ack_back_in_its_own_set() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].default_charset = Charset::from_name("windows-1252").unwrap();
    cfg.downstreams[0].transcode_to = Some(Charset::UTF8);
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());

    let ack = client.round_trip(&windows_1252_result("W1", ""));
    let expected = "MSH|^~\\&|LAB|HOSP|KLINIK_MÜNCHEN|CLINIC|2026||ORU^R01|W1|P|2.5||||||UNICODE \
                    UTF-8\rOBX|1|TX|||€ 12,50 „Befund“ ‘ok’\r";
    assert_eq!(
        String::from_utf8(receiver.payloads()[0].clone()).unwrap(),
        expected,
        "decoded from Windows-1252, MSH-18 says UTF-8"
    );
    // The receiver's ACK named KLINIK_MÜNCHEN in UTF-8 (two bytes for Ü): the sender reads it
    // in Windows-1252 (one byte), with its own empty MSH-18 back.
    assert_eq!(code_and_id(&ack), (AckCode::AA, "W1".to_owned()));
    let header = ack.split(|&b| b == b'\r').next().unwrap();
    assert!(
        header.starts_with(b"MSH|^~\\&|KLINIK_M\xDCNCHEN|CLINIC|LAB|HOSP|"),
        "{}",
        String::from_utf8_lossy(header)
    );
    assert!(!ack.windows(5).any(|w| w == b"UTF-8"), "{ack:?}");
    let stats = relay.stats();
    assert_eq!(Stats::get(&stats.messages_transcoded), 1);
    assert_eq!(Stats::get(&stats.acks_transcoded), 1);

    // A message that says it is UTF-8 already passes unchanged but for nothing: MSH-18 stays.
    let utf8 = "MSH|^~\\&|LAB|HOSP|EHR|CLINIC|2026||ORU^R01|W2|P|2.5||||||UNICODE UTF-8\r\
                OBX|1|TX|||€\r";
    let ack = client.round_trip(utf8.as_bytes());
    assert_eq!(code_and_id(&ack), (AckCode::AA, "W2".to_owned()));
    assert_eq!(receiver.payloads()[1], utf8.as_bytes());

    // Bytes the sender's set does not have: refused, not forwarded.
    let mut broken = windows_1252_result("W3", "");
    broken.extend_from_slice(b"NTE|1||\x81\r");
    let refused = client.round_trip(&broken);
    assert_eq!(code_and_id(&refused), (AckCode::AR, "W3".to_owned()));
    let text = String::from_utf8_lossy(&refused).into_owned();
    assert!(
        text.contains("ERR|||102^") && text.contains("0x81") && text.contains("windows-1252"),
        "{text}"
    );
    assert_eq!(receiver.payloads().len(), 2);
    assert_eq!(Stats::get(&relay.stats().listener(0).rejects_charset), 1);
    relay.shutdown();
}

#[test]
fn check_refuses_payloads_not_in_their_declared_set() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].charset = CharsetMode::Check;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());

    // Declared Latin-1 (8859/1): every byte is a character.
    let latin1 = windows_1252_result("C1", "8859/1");
    assert_eq!(
        parse_ack(&client.round_trip(&latin1)).unwrap().code,
        AckCode::AA
    );
    // Declared UTF-8, but Windows-1252 bytes.
    let mislabelled = windows_1252_result("C2", "UNICODE UTF-8");
    let refused = client.round_trip(&mislabelled);
    assert_eq!(code_and_id(&refused), (AckCode::AR, "C2".to_owned()));
    let text = String::from_utf8_lossy(&refused).into_owned();
    assert!(
        text.contains("ERR|||102^") && text.contains("offset"),
        "{text}"
    );
    // Empty MSH-18 means ASCII unless the listener declares otherwise.
    let refused = client.round_trip(&windows_1252_result("C3", ""));
    assert_eq!(code_and_id(&refused), (AckCode::AR, "C3".to_owned()));
    // A name that is no character set.
    let refused = client.round_trip(&windows_1252_result("C4", "KLINGON"));
    assert_eq!(code_and_id(&refused), (AckCode::AR, "C4".to_owned()));
    let text = String::from_utf8_lossy(&refused).into_owned();
    assert!(
        text.contains("ERR|||103^") && text.contains("KLINGON"),
        "{text}"
    );
    assert_eq!(receiver.payloads(), [latin1], "only the message in its set");
    relay.shutdown();
}
