use super::*;
use crate::hl7::Message;

const ORU: &[u8] =
    b"MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20261122103000||ORU^R01^ORU_R01|MSG00042|P|2.5.1\r\
PID|1||12345^^^HOSP^MR||DOE^JANE\rOBX|1|NM|GLU^Glucose||5.4|mmol/L\r";

fn params() -> AckParams<'static> {
    AckParams {
        timestamp: b"20261122103001",
        control_id: b"ACK00001",
        text: None,
        error: None,
    }
}

fn ack_for(message: &[u8], code: AckCode, params: &AckParams<'_>) -> Vec<u8> {
    let msh = Msh::parse(message).unwrap();
    let mut out = Vec::new();
    write_ack(&msh, code, params, &mut out);
    out
}

#[test]
fn original_mode_accept() {
    let ack = ack_for(ORU, AckCode::AA, &params());
    assert_eq!(
        ack,
        b"MSH|^~\\&|EHR|CLINIC|LAB|HOSP|20261122103001||ACK^R01^ACK|ACK00001|P|2.5.1\r\
MSA|AA|MSG00042\r"
    );
    let parsed = parse_ack(&ack).unwrap();
    assert_eq!(parsed.code, AckCode::AA);
    assert_eq!(parsed.acknowledged_id, b"MSG00042");
    assert_eq!(parsed.msh.control_id(), b"ACK00001");
    assert_eq!(parsed.msh.message_type().code, b"ACK");
}

#[test]
fn error_ack_v25_has_err_segment_and_text() {
    let p = AckParams {
        text: Some(b"downstream EHR timed out | 3 tries"),
        error: Some(ErrorDetail {
            code: ErrorCode::ApplicationInternal,
            diagnostic: b"ack timeout after 3 tries",
        }),
        ..params()
    };
    let ack = ack_for(ORU, AckCode::AE, &p);
    let text = String::from_utf8(ack.clone()).unwrap();
    assert!(
        text.ends_with(
            "MSA|AE|MSG00042|downstream EHR timed out \\F\\ 3 tries\r\
ERR|||207^Application internal error^HL70357|E|||ack timeout after 3 tries\r"
        ),
        "{text:?}"
    );
    let message = Message::parse(&ack).unwrap();
    let err = message.segment(b"ERR").unwrap();
    assert_eq!(
        err.field(3).unwrap().component(1).unwrap().as_bytes(),
        b"207"
    );
    assert_eq!(err.field(4).unwrap().as_bytes(), b"E");
    assert_eq!(parse_ack(&ack).unwrap().code, AckCode::AE);
}

#[test]
fn error_ack_before_v25_puts_the_code_in_err_1() {
    let msg = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.3\rPID|1\r";
    let p = AckParams {
        error: Some(ErrorDetail {
            code: ErrorCode::UnsupportedMessageType,
            diagnostic: b"",
        }),
        ..params()
    };
    let ack = ack_for(msg, AckCode::AR, &p);
    assert!(
        ack.ends_with(b"MSA|AR|X1\rERR|^^^200&Unsupported message type&HL70357\r"),
        "{:?}",
        String::from_utf8_lossy(&ack)
    );
}

#[test]
fn custom_delimiters_are_used_throughout() {
    // Field separator '^', component '~': MSH-9 reads ADT~A24.
    let msg = b"MSH^~|\\&^SEND^SFAC^RECV^RFAC^20260101^^ADT~A24^CTRL-9^P^2.4\rPID^1\r";
    let p = AckParams {
        text: Some(b"a^b~c"),
        ..params()
    };
    let ack = ack_for(msg, AckCode::AA, &p);
    assert_eq!(
        ack,
        b"MSH^~|\\&^RECV^RFAC^SEND^SFAC^20261122103001^^ACK~A24~ACK^ACK00001^P^2.4\r\
MSA^AA^CTRL-9^a\\F\\b\\S\\c\r"
    );
    let parsed = parse_ack(&ack).unwrap();
    assert_eq!(parsed.acknowledged_id, b"CTRL-9");
    assert_eq!(
        parsed.msh.delimiters(),
        Msh::parse(msg).unwrap().delimiters()
    );
}

#[test]
fn charset_and_processing_id_are_copied() {
    let msg = b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|X1|T^R|2.6|||AL|NE||UNICODE UTF-8~8859/1\r";
    let ack = ack_for(msg, AckCode::CA, &params());
    assert_eq!(
        ack,
        b"MSH|^~\\&|C|D|A|B|20261122103001||ACK^R01^ACK|ACK00001|T^R|2.6||||||UNICODE UTF-8~8859/1\r\
MSA|CA|X1\r"
    );
    let parsed = Msh::parse(&ack).unwrap();
    assert_eq!(parsed.charset(), b"UNICODE UTF-8");
    assert_eq!(parsed.processing_id(), b"T");
}

#[test]
fn message_without_trigger_gets_plain_ack_type() {
    let msg = b"MSH|^~\\&|A|B|C|D|20260101||ACK|X1|P|2.1\r";
    let ack = ack_for(msg, AckCode::AA, &params());
    assert!(ack.starts_with(b"MSH|^~\\&|C|D|A|B|20261122103001||ACK|ACK00001|P|2.1\r"));
}

#[test]
fn control_id_is_echoed_byte_for_byte() {
    // Odd but legal: the control id has a component and an escape in it.
    let msg = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|12^3\\T\\4|P|2.5\r";
    let ack = ack_for(msg, AckCode::AA, &params());
    let parsed = parse_ack(&ack).unwrap();
    assert_eq!(parsed.acknowledged_id, b"12^3\\T\\4");
    assert_eq!(
        parsed.acknowledged_id,
        Msh::parse(msg).unwrap().control_id()
    );
}

#[test]
fn caller_text_cannot_break_the_ack() {
    let p = AckParams {
        timestamp: b"2026|01",
        control_id: b"A\rB",
        text: Some(b"x\x1c\x0by\r\n"),
        ..params()
    };
    let ack = ack_for(ORU, AckCode::AE, &p);
    assert!(!ack.contains(&0x1c) && !ack.contains(&0x0b));
    assert_eq!(
        ack.iter().filter(|&&b| b == b'\r').count(),
        2,
        "exactly two segments"
    );
    let parsed = parse_ack(&ack).unwrap();
    assert_eq!(parsed.msh.control_id(), b"A\\X0D\\B");
    assert_eq!(parsed.msh.timestamp(), b"2026\\F\\01");
}

#[test]
fn message_without_escape_character_gets_spaces() {
    let msg = b"MSH|^~|A|B|C|D|20260101||ADT^A01|X1|P|2.2\r";
    let p = AckParams {
        text: Some(b"a|b^c"),
        ..params()
    };
    let ack = ack_for(msg, AckCode::AE, &p);
    assert!(
        ack.ends_with(b"MSA|AE|X1|a b c\r"),
        "{:?}",
        String::from_utf8_lossy(&ack)
    );
}

fn with_ack_types(accept: &str, application: &str) -> Vec<u8> {
    format!("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.5|||{accept}|{application}\r").into_bytes()
}

#[test]
fn original_mode_always_acks() {
    let msg = with_ack_types("", "");
    let msh = Msh::parse(&msg).unwrap();
    assert_eq!(AckMode::of(&msh), AckMode::Original);
    for (outcome, code) in [
        (Outcome::Accepted, AckCode::AA),
        (Outcome::Error, AckCode::AE),
        (Outcome::Rejected, AckCode::AR),
    ] {
        assert_eq!(
            decide(&msh, outcome, AckPolicy::Negotiated),
            AckDecision::Send(code)
        );
    }
}

#[test]
fn enhanced_mode_follows_msh15() {
    use AckDecision::{NotDue, Send};
    // (MSH-15, MSH-16, decision on accept, decision on error, decision on reject)
    let table = [
        (
            "AL",
            "NE",
            Send(AckCode::CA),
            Send(AckCode::CE),
            Send(AckCode::CR),
        ),
        ("NE", "AL", NotDue, NotDue, NotDue),
        ("ER", "AL", NotDue, Send(AckCode::CE), Send(AckCode::CR)),
        ("SU", "AL", Send(AckCode::CA), NotDue, NotDue),
        (
            "",
            "AL",
            Send(AckCode::CA),
            Send(AckCode::CE),
            Send(AckCode::CR),
        ),
        (
            "XX",
            "",
            Send(AckCode::CA),
            Send(AckCode::CE),
            Send(AckCode::CR),
        ),
        (
            "al",
            "",
            Send(AckCode::CA),
            Send(AckCode::CE),
            Send(AckCode::CR),
        ),
        ("ne", "", NotDue, NotDue, NotDue),
    ];
    for (accept, application, ok, error, reject) in table {
        let msg = with_ack_types(accept, application);
        let msh = Msh::parse(&msg).unwrap();
        assert_eq!(
            AckMode::of(&msh),
            AckMode::Enhanced,
            "{accept}/{application}"
        );
        let got = [Outcome::Accepted, Outcome::Error, Outcome::Rejected]
            .map(|o| decide(&msh, o, AckPolicy::Negotiated));
        assert_eq!(
            got,
            [ok, error, reject],
            "MSH-15={accept} MSH-16={application}"
        );
    }
}

#[test]
fn policies_override_msh15() {
    let msg = with_ack_types("NE", "NE");
    let msh = Msh::parse(&msg).unwrap();
    assert_eq!(
        decide(&msh, Outcome::Accepted, AckPolicy::Always),
        AckDecision::Send(AckCode::CA)
    );
    let original = with_ack_types("", "");
    let msh = Msh::parse(&original).unwrap();
    assert_eq!(
        decide(&msh, Outcome::Accepted, AckPolicy::Never),
        AckDecision::NotDue
    );
    assert_eq!(
        decide(&msh, Outcome::Accepted, AckPolicy::ErrorsOnly),
        AckDecision::NotDue
    );
    assert_eq!(
        decide(&msh, Outcome::Error, AckPolicy::ErrorsOnly),
        AckDecision::Send(AckCode::AE)
    );
}

#[test]
fn build_ack_writes_only_when_due() {
    let msg = with_ack_types("NE", "AL");
    let msh = Msh::parse(&msg).unwrap();
    let mut out = Vec::new();
    let d = build_ack(
        &msh,
        Outcome::Accepted,
        AckPolicy::Negotiated,
        &params(),
        &mut out,
    );
    assert_eq!(d, AckDecision::NotDue);
    assert!(out.is_empty());
    let d = build_ack(
        &msh,
        Outcome::Accepted,
        AckPolicy::Always,
        &params(),
        &mut out,
    );
    assert_eq!(d, AckDecision::Send(AckCode::CA));
    assert_eq!(parse_ack(&out).unwrap().code, AckCode::CA);
}

#[test]
fn parse_ack_is_lenient_about_terminators() {
    for ack in [
        &b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|AA|123"[..],
        b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\r\nMSA|AA|123\r\n",
        b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\nMSA|aa|123|ok\n",
        b"\xEF\xBB\xBFMSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|AA|123\r",
    ] {
        let parsed = parse_ack(ack).unwrap();
        assert_eq!(
            (parsed.code, parsed.acknowledged_id),
            (AckCode::AA, &b"123"[..])
        );
    }
}

#[test]
fn parse_ack_errors() {
    assert_eq!(
        parse_ack(b"PID|1").unwrap_err(),
        AckError::Header(crate::Hl7Error::MissingHeader)
    );
    assert_eq!(
        parse_ack(b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rERR|x\r").unwrap_err(),
        AckError::MissingMsa
    );
    assert_eq!(
        parse_ack(b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|OK|123\r").unwrap_err(),
        AckError::UnknownCode
    );
    assert_eq!(
        parse_ack(b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|").unwrap_err(),
        AckError::UnknownCode
    );
    // "MSAX" is not an MSA segment.
    assert_eq!(
        parse_ack(b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSAX|AA|1\r").unwrap_err(),
        AckError::MissingMsa
    );
}

#[test]
fn headerless_reject_parses_with_empty_msa2() {
    let p = AckParams {
        text: Some(b"no MSH|segment"),
        ..params()
    };
    let err = ErrorDetail {
        code: ErrorCode::SegmentSequence,
        diagnostic: b"frame does not start with MSH",
    };
    let mut out = Vec::new();
    write_headerless_reject(&p, err, &mut out);
    assert_eq!(
        out,
        b"MSH|^~\\&|||||20261122103001||ACK|ACK00001|P|2.5\rMSA|AR||no MSH\\F\\segment\r\
ERR|||100^Segment sequence error^HL70357|E|||frame does not start with MSH\r"
    );
    let parsed = parse_ack(&out).unwrap();
    assert_eq!(
        (parsed.code, parsed.acknowledged_id),
        (AckCode::AR, &b""[..])
    );
}

#[test]
fn codes_round_trip() {
    for code in AckCode::ALL {
        assert_eq!(AckCode::parse(code.as_str().as_bytes()), Some(code));
        assert_eq!(AckCode::for_outcome(code.mode(), code.outcome()), code);
    }
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(code.as_str().as_bytes()), Some(code));
    }
    assert!(AckCode::AA.is_accept() && AckCode::CA.is_accept() && !AckCode::CE.is_accept());
}

#[test]
fn an_accept_ack_is_expected_unless_msh_15_declines_it() {
    let with = |ack_types: &str| {
        let text = format!("MSH|^~\\&|A|B|C|D|20261122||ORU^R01|1|P|2.5{ack_types}\r");
        expects_accept_ack(&Msh::parse(text.as_bytes()).unwrap())
    };
    // Original mode: always.
    assert!(with(""));
    // Enhanced mode: MSH-15 decides (MSH-16 is about application ACKs).
    assert!(with("|||AL|NE"));
    assert!(with("|||SU|AL"));
    assert!(!with("|||NE|AL"));
    assert!(!with("|||ER|NE"));
    // An empty or unknown MSH-15 next to a present MSH-16 is taken as AL.
    assert!(with("||||AL"));
    assert!(with("|||XX|NE"));
}

#[test]
fn an_ack_for_a_leniently_read_header_writes_each_delimiter_once() {
    let message = b"MSH|^~\\\\&|LAB|HOSP|EHR|CLINIC|20261122103000||ORU^R01^ORU_R01|C42|P|2.5.1\r";
    let msh = Msh::parse_lenient(message).unwrap();
    let mut ack = Vec::new();
    write_ack(&msh, AckCode::AA, &params(), &mut ack);
    assert_eq!(
        ack,
        b"MSH|^~\\&|EHR|CLINIC|LAB|HOSP|20261122103001||ACK^R01^ACK|ACK00001|P|2.5.1\r\
MSA|AA|C42\r"
    );
    // A receiver that echoes the sender's MSH-2 as it was is still read.
    let echoed =
        b"MSH|^~\\\\&|EHR|CLINIC|LAB|HOSP|20261122103001||ACK^R01^ACK|A1|P|2.5.1\rMSA|AA|C42\r";
    let parsed = parse_ack(echoed).unwrap();
    assert_eq!(
        (parsed.code, parsed.acknowledged_id),
        (AckCode::AA, &b"C42"[..])
    );
}
