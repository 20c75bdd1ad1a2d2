//! The zero-copy view agrees with the model the message was generated from, at every level,
//! and with a naive split of the raw bytes.

use mllp::hl7::{Message, Msh};
use proptest::prelude::*;
use proptests::{MessageModel, render_field};

fn check(model: &MessageModel) -> Result<(), TestCaseError> {
    let bytes = model.render();
    let message = Message::parse(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(message.delimiters(), model.delimiters);
    let segments: Vec<_> = message.segments().collect();
    prop_assert_eq!(segments.len(), model.segments.len());
    for (segment, seg_model) in segments.iter().zip(&model.segments) {
        prop_assert_eq!(segment.id(), &seg_model.id[..]);
        // Header fields 1 and 2 are the delimiters themselves.
        let first = if &seg_model.id == b"MSH" {
            prop_assert_eq!(
                segment.field(1).unwrap().as_bytes(),
                &[model.delimiters.field][..]
            );
            let encoding: Vec<u8> = model.delimiters.encoding_characters().collect();
            prop_assert_eq!(segment.field(2).unwrap().as_bytes(), &encoding[..]);
            3
        } else {
            1
        };
        for (i, field_model) in seg_model.fields.iter().enumerate() {
            let n = first + i;
            let field = segment
                .field(n)
                .ok_or_else(|| TestCaseError::fail(format!("field {n} missing")))?;
            prop_assert_eq!(
                field.as_bytes(),
                &render_field(field_model, &model.delimiters)[..]
            );
            for (r, rep_model) in field_model.iter().enumerate() {
                let rep = field.repetition(r + 1).expect("repetition present");
                for (c, comp_model) in rep_model.iter().enumerate() {
                    let comp = rep.component(c + 1).expect("component present");
                    for (s, sub_model) in comp_model.iter().enumerate() {
                        prop_assert_eq!(comp.subcomponent(s + 1), Some(&sub_model[..]));
                    }
                    prop_assert_eq!(comp.subcomponent(comp_model.len() + 1), None);
                }
                prop_assert!(rep.component(rep_model.len() + 1).is_none());
            }
            prop_assert!(field.repetition(field_model.len() + 1).is_none());
        }
        prop_assert!(segment.field(first + seg_model.fields.len()).is_none());
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptests::config(512))]

    #[test]
    fn prop_view_matches_generated_model(model in proptests::message()) {
        check(&model)?;
    }

    #[test]
    fn prop_view_fields_match_naive_split(model in proptests::message()) {
        let bytes = model.render();
        let message = Message::parse(&bytes).unwrap();
        let fs = model.delimiters.field;
        for (segment, raw) in message.segments().zip(bytes.split(|&b| b == b'\r')) {
            let naive: Vec<&[u8]> = raw.split(|&b| b == fs).collect();
            // For MSH, naive[1] is MSH-2 (MSH-1 is the separator itself): shift by one.
            let shift = usize::from(segment.id() == b"MSH");
            for n in 1 + shift..naive.len() + shift {
                prop_assert_eq!(segment.field(n).map(|f| f.as_bytes()), Some(naive[n - shift]));
            }
        }
    }

    #[test]
    fn prop_view_msh_fast_path_agrees(model in proptests::message()) {
        let bytes = model.render();
        let msh = Msh::parse(&bytes).unwrap();
        for n in 3..30 {
            let expected = model.msh_field(n);
            prop_assert_eq!(msh.raw_field(n), &expected[..], "MSH-{}", n);
        }
        prop_assert_eq!(msh.control_id(), &model.msh_field(10)[..]);
    }

    #[test]
    fn prop_view_never_panics_on_arbitrary_bytes(data in proptests::biased_bytes(400)) {
        mllp::fuzzing::hl7(&data);
        let mut with_header = b"MSH|^~\\&|".to_vec();
        with_header.extend_from_slice(&data);
        mllp::fuzzing::hl7(&with_header);
    }

    #[test]
    fn prop_view_normalisation_only_touches_terminators(model in proptests::message(), crlf in any::<bool>()) {
        // Write the message with LF or CRLF terminators; normalising gives back the CR form.
        let cr = model.render();
        let terminator: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let mut written = Vec::new();
        for segment in cr.split_inclusive(|&b| b == b'\r') {
            written.extend_from_slice(&segment[..segment.len() - 1]);
            written.extend_from_slice(terminator);
        }
        let mut repaired = written.clone();
        mllp::hl7::normalize_segment_terminators(&mut repaired).unwrap();
        prop_assert_eq!(repaired, cr);
    }
}
