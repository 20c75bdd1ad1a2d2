//! Escape encoding and decoding are inverse, for any text and any delimiters.

use mllp::EscapeError;
use mllp::hl7::{decode_escapes, encode_escapes};
use proptest::prelude::*;

proptest! {
    #![proptest_config(proptests::config(512))]

    #[test]
    fn prop_escape_round_trips(text in proptests::biased_bytes(200), d in proptests::delimiters()) {
        let mut encoded = Vec::new();
        match encode_escapes(&text, &d, &mut encoded) {
            Ok(()) => {
                // Escaped text never carries a delimiter other than the escape character,
                // nor a byte that would end a segment or a frame.
                for &b in &encoded {
                    prop_assert!(Some(b) == d.escape || !d.is_delimiter(b), "raw delimiter {b:#x}");
                    prop_assert!(!matches!(b, b'\r' | b'\n' | 0x0B | 0x1C));
                }
                let mut decoded = Vec::new();
                decode_escapes(&encoded, &d, &mut decoded);
                prop_assert_eq!(decoded, text);
            }
            Err(EscapeError::NoEscapeCharacter { offset, byte }) => {
                prop_assert!(d.escape.is_none());
                prop_assert_eq!(text[offset], byte);
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn prop_escape_decode_never_grows_text(text in proptests::biased_bytes(300), d in proptests::delimiters()) {
        // Every escape sequence is at least as long as what it stands for (hex: 2 digits per
        // byte plus markers), so decoding can only shrink or keep the text.
        let mut decoded = Vec::new();
        decode_escapes(&text, &d, &mut decoded);
        prop_assert!(decoded.len() <= text.len());
    }
}
