//! ACKs: every generated ACK parses with the inbound delimiters, echoes MSH-10 in MSA-2,
//! swaps the two ends, and the MSH-15/16 decision table holds.

use mllp::ack::{
    AckCode, AckDecision, AckMode, AckParams, AckPolicy, ErrorCode, ErrorDetail, Outcome,
    build_ack, decide, parse_ack,
};
use mllp::hl7::{Message, Msh};
use proptest::prelude::*;
use proptests::{FieldModel, MessageModel};

const CONDITIONS: [&str; 7] = ["", "AL", "NE", "ER", "SU", "XX", "al"];

fn text_field(text: &str) -> FieldModel {
    vec![vec![vec![text.as_bytes().to_vec()]]]
}

/// The model answer for one message, written from the HL7 rules rather than from the code.
fn expected(accept: &str, application: &str, outcome: Outcome, policy: AckPolicy) -> AckDecision {
    let enhanced = !accept.is_empty() || !application.is_empty();
    let failed = outcome != Outcome::Accepted;
    let code = match (enhanced, outcome) {
        (false, Outcome::Accepted) => AckCode::AA,
        (false, Outcome::Error) => AckCode::AE,
        (false, Outcome::Rejected) => AckCode::AR,
        (true, Outcome::Accepted) => AckCode::CA,
        (true, Outcome::Error) => AckCode::CE,
        (true, Outcome::Rejected) => AckCode::CR,
    };
    let due = match policy {
        AckPolicy::Always => true,
        AckPolicy::Never => false,
        AckPolicy::ErrorsOnly => failed,
        AckPolicy::Negotiated if !enhanced => true,
        AckPolicy::Negotiated => match accept.to_ascii_uppercase().as_str() {
            "NE" => false,
            "ER" => failed,
            "SU" => !failed,
            _ => true, // AL, empty, or unrecognised
        },
    };
    if due {
        AckDecision::Send(code)
    } else {
        AckDecision::NotDue
    }
}

fn with_ack_fields(mut model: MessageModel, accept: &str, application: &str) -> MessageModel {
    let fields = &mut model.segments[0].fields;
    // MSH-3 is fields[0]: MSH-15 and MSH-16 are fields[12] and fields[13].
    while fields.len() < 14 {
        fields.push(text_field(""));
    }
    fields[12] = text_field(accept);
    fields[13] = text_field(application);
    model
}

proptest! {
    #![proptest_config(proptests::config(512))]

    #[test]
    fn prop_ack_parses_and_echoes_control_id(
        model in proptests::message(),
        accept in prop::sample::select(CONDITIONS.to_vec()),
        application in prop::sample::select(CONDITIONS.to_vec()),
        outcome in prop::sample::select(vec![Outcome::Accepted, Outcome::Error, Outcome::Rejected]),
        policy in prop::sample::select(vec![AckPolicy::Negotiated, AckPolicy::Always, AckPolicy::Never, AckPolicy::ErrorsOnly]),
        text in proptest::option::of(proptests::biased_bytes(40)),
        with_error in any::<bool>(),
    ) {
        let model = with_ack_fields(model, accept, application);
        let bytes = model.render();
        let msh = Msh::parse(&bytes).unwrap();
        let decision = decide(&msh, outcome, policy);
        prop_assert_eq!(decision, expected(accept, application, outcome, policy));
        prop_assert_eq!(AckMode::of(&msh) == AckMode::Enhanced, !accept.is_empty() || !application.is_empty());

        let params = AckParams {
            timestamp: b"20261122103000",
            control_id: b"ACK-1",
            text: text.as_deref(),
            error: with_error.then_some(ErrorDetail { code: ErrorCode::ApplicationInternal, diagnostic: b"why|not" }),
        };
        let mut out = Vec::new();
        prop_assert_eq!(build_ack(&msh, outcome, policy, &params, &mut out), decision);
        let AckDecision::Send(code) = decision else {
            prop_assert!(out.is_empty());
            return Ok(());
        };
        let ack = parse_ack(&out).map_err(|e| TestCaseError::fail(format!("{e}: {out:?}")))?;
        prop_assert_eq!(ack.code, code);
        prop_assert_eq!(ack.acknowledged_id, msh.control_id());
        prop_assert_eq!(ack.msh.delimiters(), msh.delimiters());
        prop_assert_eq!(ack.msh.raw_field(3), msh.raw_field(5));
        prop_assert_eq!(ack.msh.raw_field(4), msh.raw_field(6));
        prop_assert_eq!(ack.msh.raw_field(5), msh.raw_field(3));
        prop_assert_eq!(ack.msh.raw_field(6), msh.raw_field(4));
        prop_assert_eq!(ack.msh.raw_field(12), msh.raw_field(12));
        // Our control id comes back as we gave it: escaped where it holds a delimiter, or with
        // delimiters blanked when the message has no escape character to carry them.
        let d = msh.delimiters();
        let expected: Vec<u8> = b"ACK-1".iter().map(|&b| if d.escape.is_none() && d.is_delimiter(b) { b' ' } else { b }).collect();
        let mut decoded = Vec::new();
        mllp::hl7::decode_escapes(ack.msh.control_id(), &d, &mut decoded);
        prop_assert_eq!(decoded, expected);
        prop_assert!(!out.contains(&0x0B) && !out.contains(&0x1C), "frameable");
        // Exactly the expected segments, each a real segment of the inbound delimiters.
        let message = Message::parse(&out).unwrap();
        let ids: Vec<&[u8]> = message.segments().map(|s| s.id()).collect();
        let mut want: Vec<&[u8]> = vec![b"MSH", b"MSA"];
        if with_error {
            want.push(b"ERR");
        }
        prop_assert_eq!(ids, want);
    }
}
