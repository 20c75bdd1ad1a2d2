//! Transcoding to UTF-8 and back loses nothing a character set can hold, never writes what it
//! cannot read back, and agrees with `Charset::check` on any bytes.

use std::sync::LazyLock;

use mllp::charset::{Charset, transcode_from_utf8, transcode_to_utf8};
use mllp::hl7::Msh;
use proptest::prelude::*;

/// The start of every generated message: up to OBX-5, MSH-18 left to the test.
fn header(msh18: &str) -> Vec<u8> {
    format!("MSH|^~\\&|LAB|H|EHR|C|20240101||ORU^R01|1|P|2.5||||||{msh18}\rOBX|1|TX|||")
        .into_bytes()
}

fn windows_1252() -> Charset {
    Charset::from_name("windows-1252").unwrap()
}

/// The Windows-1252 repertoire OBX-5 can hold as is: the characters of bytes 0x20–0xFF, less
/// the HL7 delimiters and the five bytes the code page leaves unassigned, each decoded by
/// transcoding a header whose MSH-3 is that one byte (the unassigned ones fail to decode).
static REPERTOIRE: LazyLock<Vec<(u8, char)>> = LazyLock::new(|| {
    let prefix = b"MSH|^~\\&|";
    let repertoire: Vec<(u8, char)> = (0x20..=0xFF)
        .filter(|b| !b"|^~\\&".contains(b))
        .filter_map(|b| {
            let mut out = Vec::new();
            transcode_to_utf8(&[&prefix[..], &[b]].concat(), windows_1252(), &mut out).ok()?;
            let text = String::from_utf8(out).unwrap();
            Some((b, text[prefix.len()..].chars().next().unwrap()))
        })
        .collect();
    assert_eq!(repertoire.len(), 224 - 5 - 5);
    assert!(repertoire.contains(&(0x80, '€')) && repertoire.contains(&(0xE9, 'é')));
    repertoire
});

/// Character sets of every kind the module reads: strict ASCII and UTF-8, ISO 8859-1, a
/// Windows code page, ISO 8859 parts with and without C1 built on a Windows table, and
/// multi-byte sets.
fn charset() -> impl Strategy<Value = Charset> {
    prop::sample::select(vec![
        "ASCII",
        "8859/1",
        "UNICODE UTF-8",
        "windows-1252",
        "windows-1253",
        "8859/2",
        "8859/3",
        "8859/9",
        "8859/11",
        "GB 18030-2000",
        "BIG-5",
        "KS X 1001",
        "Shift_JIS",
        "EUC-JP",
    ])
    .prop_map(|name| Charset::from_name(name).unwrap())
}

/// Arbitrary bytes, biased toward the high half where character sets differ.
fn high_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![1 => proptests::biased_byte(), 2 => 0x80..=0xFFu8],
        0..max_len,
    )
}

proptest! {
    #![proptest_config(proptests::config(256))]

    #[test]
    fn prop_windows_1252_round_trips_byte_for_byte(
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..200),
    ) {
        let chosen: Vec<(u8, char)> = picks.iter().map(|i| *i.get(&REPERTOIRE)).collect();
        let mut original = header("windows-1252");
        original.extend(chosen.iter().map(|&(b, _)| b));
        original.push(b'\r');

        let mut utf8 = Vec::new();
        transcode_to_utf8(&original, windows_1252(), &mut utf8).unwrap();
        let mut expected = header("UNICODE UTF-8");
        expected.extend_from_slice(chosen.iter().map(|&(_, c)| c).collect::<String>().as_bytes());
        expected.push(b'\r');
        prop_assert_eq!(&utf8, &expected);

        let mut back = Vec::new();
        let replaced =
            transcode_from_utf8(&utf8, windows_1252(), b"windows-1252", &mut back).unwrap();
        prop_assert_eq!(replaced, 0);
        prop_assert_eq!(back, original);
    }

    #[test]
    fn prop_check_agrees_with_transcoding(bytes in high_bytes(300), charset in charset()) {
        let mut message = b"MSH|^~\\&|".to_vec();
        message.extend_from_slice(&bytes);
        let mut out = Vec::new();
        let transcoded = transcode_to_utf8(&message, charset, &mut out);
        prop_assert_eq!(charset.check(&message), transcoded);
        if transcoded.is_ok() {
            prop_assert!(std::str::from_utf8(&out).is_ok());
            let msh = Msh::parse_lenient(&out).unwrap();
            prop_assert_eq!(msh.charset(), b"UNICODE UTF-8");
        }
    }

    #[test]
    fn prop_encoded_text_decodes_back_with_question_marks(
        text in any::<String>(),
        charset in charset(),
    ) {
        let mut ack = header("UNICODE UTF-8");
        ack.extend_from_slice(text.as_bytes());
        let mut encoded = Vec::new();
        let replaced =
            transcode_from_utf8(&ack, charset, charset.name().as_bytes(), &mut encoded).unwrap();
        // Whatever was written, the character set can read back.
        let mut decoded = Vec::new();
        transcode_to_utf8(&encoded, charset, &mut decoded).unwrap();
        let decoded = String::from_utf8(decoded).unwrap();
        let decoded_text = &decoded[header("UNICODE UTF-8").len()..];
        // Each character comes back as itself, or as one `?` counted as replaced; WHATWG's
        // Japanese encoders also write U+2212 MINUS SIGN as the code of U+FF0D.
        prop_assert_eq!(decoded_text.chars().count(), text.chars().count());
        let mut questioned = 0;
        for (d, t) in decoded_text.chars().zip(text.chars()) {
            if d != t {
                let compat = (t, d) == ('\u{2212}', '\u{FF0D}');
                prop_assert!(d == '?' || compat, "{t:?} came back as {d:?}");
                questioned += usize::from(d == '?');
            }
        }
        prop_assert_eq!(questioned, replaced);
    }
}
