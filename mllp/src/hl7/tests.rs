//! Unit tests of the HL7 view, header, escapes and normalisation, on hand-written fixtures,
//! plus deterministic pseudo-random sweeps for the round-trip and no-panic properties.

use super::*;
use crate::error::{EscapeError, Hl7Error};
use crate::rand::XorShift;

/// A v2.5.1 ADT^A01 with the usual delimiters, every MSH accessor populated.
const ADT: &[u8] = b"MSH|^~\\&|SENDAPP^1.2.3^ISO|SENDFAC|RECVAPP|RECVFAC|20240102030405+0100||\
ADT^A01^ADT_A01|MSG00001|P^T|2.5.1|||AL|NE|USA|UNICODE UTF-8~8859/1|en\r\
EVN|A01|20240102030405\r\
PID|1||12345^^^HOSP^MR~67890^^^OTHER^PI||DOE^JOHN^Q&R||19700101|M\r";

fn msh(bytes: &[u8]) -> Msh<'_> {
    Msh::parse(bytes).unwrap()
}

fn decode(input: &[u8], delims: &Delimiters) -> Vec<u8> {
    let mut out = Vec::new();
    decode_escapes(input, delims, &mut out);
    out
}

fn encode(input: &[u8], delims: &Delimiters) -> Result<Vec<u8>, EscapeError> {
    let mut out = Vec::new();
    encode_escapes(input, delims, &mut out).map(|()| out)
}

fn normalized(input: &[u8]) -> (Vec<u8>, usize) {
    let mut buffer = input.to_vec();
    let count = normalize_segment_terminators(&mut buffer).unwrap();
    (buffer, count)
}

fn raw(field: Option<Field<'_>>) -> Option<&[u8]> {
    field.map(|f| f.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Delimiters

#[test]
fn delimiters_standard() {
    let (delims, end) = Delimiters::from_header(b"MSH|^~\\&|APP").unwrap();
    assert_eq!(delims, Delimiters::DEFAULT);
    assert_eq!(end, 8);
    assert!(delims.is_delimiter(b'&'));
    assert!(!delims.is_delimiter(b'#'));
    assert_eq!(delims.encoding_characters().collect::<Vec<_>>(), b"^~\\&");
}

#[test]
fn delimiters_short_and_long_msh2() {
    let (delims, end) = Delimiters::from_header(b"MSH|^~|APP").unwrap();
    assert_eq!(
        (delims.component, delims.repetition, delims.escape),
        (Some(b'^'), Some(b'~'), None)
    );
    assert_eq!(
        (delims.subcomponent, delims.truncation, end),
        (None, None, 6)
    );

    // A LF ends MSH-2 as a CR does (senders that end segments with LF).
    let (delims, end) = Delimiters::from_header(b"MSH|^~\nPID|1").unwrap();
    assert_eq!(
        (delims.repetition, delims.escape, end),
        (Some(b'~'), None, 6)
    );

    let (delims, _) = Delimiters::from_header(b"MSH|^~\\|APP").unwrap();
    assert_eq!((delims.escape, delims.subcomponent), (Some(b'\\'), None));

    let (delims, end) = Delimiters::from_header(b"MSH|^~\\&#|APP").unwrap();
    assert_eq!(delims.truncation, Some(b'#'));
    assert_eq!(end, 9);
    assert_eq!(delims.encoding_characters().count(), 5);

    // No encoding characters: fields only.
    let (delims, end) = Delimiters::from_header(b"MSH||APP").unwrap();
    assert_eq!(delims.component, None);
    assert_eq!(end, 4);
}

#[test]
fn delimiters_end_at_segment_or_input_end() {
    assert_eq!(Delimiters::from_header(b"MSH|^~\\&").unwrap().1, 8);
    assert_eq!(Delimiters::from_header(b"MSH|^~\\&\rPID|1").unwrap().1, 8);
    assert_eq!(Delimiters::from_header(b"MSH|").unwrap().1, 4);
    // Other header segments are read the same way; the ID itself is not checked.
    assert_eq!(
        Delimiters::from_header(b"BHS^~|\\&^X").unwrap().0.field,
        b'^'
    );
}

#[test]
fn delimiters_errors() {
    let cases: &[(&[u8], Hl7Error)] = &[
        (b"", Hl7Error::TruncatedHeader),
        (b"MSH", Hl7Error::TruncatedHeader),
        (b"MSH\r", Hl7Error::TruncatedHeader),
        (b"MSHA^~\\&", Hl7Error::InvalidFieldSeparator { byte: b'A' }),
        (b"MSH7^~\\&", Hl7Error::InvalidFieldSeparator { byte: b'7' }),
        (b"MSH ^~\\&", Hl7Error::InvalidFieldSeparator { byte: b' ' }),
        (
            b"MSH\n^~\\&",
            // A LF ends the header segment as a CR does.
            Hl7Error::TruncatedHeader,
        ),
        (b"MSH\x7F^~", Hl7Error::InvalidFieldSeparator { byte: 0x7F }),
        (b"MSH\xC3^~", Hl7Error::InvalidFieldSeparator { byte: 0xC3 }),
        (
            b"MSH|^~\\&A|",
            Hl7Error::InvalidEncodingCharacter { byte: b'A' },
        ),
        (
            b"MSH|^ |",
            Hl7Error::InvalidEncodingCharacter { byte: b' ' },
        ),
        (
            b"MSH|^~\t",
            Hl7Error::InvalidEncodingCharacter { byte: b'\t' },
        ),
        (
            b"MSH|^\xBB|",
            Hl7Error::InvalidEncodingCharacter { byte: 0xBB },
        ),
        (
            b"MSH|^~\\&#!|",
            Hl7Error::InvalidEncodingCharacter { byte: b'!' },
        ),
        (b"MSH|^^|", Hl7Error::DuplicateDelimiter { byte: b'^' }),
        (b"MSH|^~\\&~|", Hl7Error::DuplicateDelimiter { byte: b'~' }),
    ];
    for &(input, error) in cases {
        assert_eq!(
            Delimiters::from_header(input),
            Err(error),
            "{}",
            input.escape_ascii()
        );
    }
}

#[test]
fn lenient_header_reading_skips_what_strict_refuses_in_msh2_and_names_it() {
    use HeaderEventCode::{Msh2InvalidCharacter, Msh2RepeatedDelimiter, Msh2TooLong};
    let standard = Delimiters::DEFAULT;
    let truncation = Delimiters {
        truncation: Some(b'#'),
        ..standard
    };
    type Case = (&'static [u8], Delimiters, Option<(HeaderEventCode, u8)>);
    let cases: &[Case] = &[
        // Escaped source text copied into a file: the backslash doubled.
        (
            b"MSH|^~\\\\&|A",
            standard,
            Some((Msh2RepeatedDelimiter, b'\\')),
        ),
        (
            b"MSH|^~\\&^|A",
            standard,
            Some((Msh2RepeatedDelimiter, b'^')),
        ),
        (
            b"MSH|^~\\&X|A",
            standard,
            Some((Msh2InvalidCharacter, b'X')),
        ),
        (
            b"MSH|^~ \\&|A",
            standard,
            Some((Msh2InvalidCharacter, b' ')),
        ),
        (b"MSH|^~\\&#!|A", truncation, Some((Msh2TooLong, b'!'))),
        // Only the first event is named; every bad byte is skipped.
        (
            b"MSH|^^~~\\&|A",
            standard,
            Some((Msh2RepeatedDelimiter, b'^')),
        ),
        // Three encoding characters, and five with the truncation character: strict already.
        (
            b"MSH|^~\\|A",
            Delimiters {
                subcomponent: None,
                ..standard
            },
            None,
        ),
        (b"MSH|^~\\&#|A", truncation, None),
    ];
    for &(input, delimiters, event) in cases {
        let (read, end, found) = Delimiters::from_header_lenient(input).unwrap();
        let context = input.escape_ascii().to_string();
        assert_eq!(read, delimiters, "{context}");
        assert_eq!(found.map(|e| (e.code, e.byte)), event, "{context}");
        // MSH-2 ends at the next field separator, bad bytes and all.
        assert_eq!(input.get(end), Some(&b'|'), "{context}");
        assert_eq!(
            Delimiters::from_header(input).is_ok(),
            event.is_none(),
            "{context}"
        );
    }
    // Without a usable MSH-1 nothing can be found: the lenient reader refuses as the strict.
    assert_eq!(
        Delimiters::from_header_lenient(b"MSHA^~\\&").err(),
        Some(Hl7Error::InvalidFieldSeparator { byte: b'A' })
    );
    assert_eq!(
        Delimiters::from_header_lenient(b"MSH\r").err(),
        Some(Hl7Error::TruncatedHeader)
    );
}

#[test]
fn a_lenient_msh_finds_every_field_as_sent() {
    let message =
        b"MSH|^~\\\\&|LAB|HOSP|EHR|CLINIC|20261122103000||ORU^R01^ORU_R01|C42|P|2.5.1\rPID|1\r";
    assert_eq!(
        Msh::parse(message).err(),
        Some(Hl7Error::DuplicateDelimiter { byte: b'\\' })
    );
    let msh = Msh::parse_lenient(message).unwrap();
    assert_eq!(msh.encoding_characters(), b"^~\\\\&");
    assert_eq!(msh.delimiters(), Delimiters::DEFAULT);
    assert_eq!(msh.control_id(), b"C42");
    assert_eq!(msh.message_type().trigger, b"R01");
    assert_eq!(msh.version_id(), b"2.5.1");
    let event = msh.event().unwrap();
    assert_eq!(event.code.as_str(), "HL7_MSH2_REPEATED_DELIMITER");
    assert_eq!(
        event.to_string(),
        "HL7_MSH2_REPEATED_DELIMITER: MSH-2 has a delimiter given twice (0x5C), skipped"
    );
    assert_eq!(Msh::parse_lenient(ADT).unwrap().event(), None);
}

#[test]
fn bom_and_segment_ids() {
    assert_eq!(strip_bom(b"\xEF\xBB\xBFMSH|"), b"MSH|");
    assert_eq!(strip_bom(b"MSH|"), b"MSH|");
    assert_eq!(strip_bom(b"\xEF\xBB"), b"\xEF\xBB");

    for yes in [&b"PID|1"[..], b"ZX1|", b"OBX", b"NTE\r", b"AL1\nX", b"PV1|"] {
        assert!(starts_with_segment_id(yes, b'|'), "{}", yes.escape_ascii());
    }
    for no in [
        &b"pid|1"[..],
        b"1ID|",
        b"PI",
        b"",
        b"PIDX",
        b"PID ",
        b"PID^",
        b"P-D|",
        b"Pid|",
    ] {
        assert!(!starts_with_segment_id(no, b'|'), "{}", no.escape_ascii());
    }
    assert!(starts_with_segment_id(b"PID^1", b'^'));
}

// ---------------------------------------------------------------------------------------------
// Msh

#[test]
fn msh_standard_accessors() {
    let m = msh(ADT);
    assert_eq!(m.delimiters(), Delimiters::DEFAULT);
    assert_eq!(m.header_offset(), 0);
    assert_eq!(m.message_bytes(), ADT);
    assert!(m.as_bytes().starts_with(b"MSH|^~\\&|SENDAPP"));
    assert!(m.as_bytes().ends_with(b"|en"));
    assert_eq!(m.segment().as_bytes(), m.as_bytes());
    assert_eq!(m.encoding_characters(), b"^~\\&");

    assert_eq!(m.sending_application().as_bytes(), b"SENDAPP^1.2.3^ISO");
    assert_eq!(
        m.sending_application().component(2).unwrap().as_bytes(),
        b"1.2.3"
    );
    assert_eq!(m.sending_facility().as_bytes(), b"SENDFAC");
    assert_eq!(m.receiving_application().as_bytes(), b"RECVAPP");
    assert_eq!(m.receiving_facility().as_bytes(), b"RECVFAC");
    assert_eq!(m.timestamp(), b"20240102030405+0100");
    assert_eq!(
        m.message_type(),
        MessageType {
            code: b"ADT",
            trigger: b"A01",
            structure: b"ADT_A01"
        }
    );
    assert_eq!(m.control_id(), b"MSG00001");
    assert_eq!(m.processing_id(), b"P");
    assert_eq!(m.raw_field(11), b"P^T");
    assert_eq!(m.version_id(), b"2.5.1");
    assert_eq!(
        m.version(),
        Some(Version {
            major: 2,
            minor: 5,
            patch: 1
        })
    );
    assert_eq!(m.accept_ack_type(), Some(AckCondition::Always));
    assert_eq!(m.application_ack_type(), Some(AckCondition::Never));
    assert_eq!(m.raw_field(17), b"USA");
    assert_eq!(m.charset(), b"UNICODE UTF-8");
    assert_eq!(m.raw_field(19), b"en");
    assert_eq!(m.field(20).map(|f| f.as_bytes()), None);
    assert_eq!(m.raw_field(20), b"");
}

#[test]
fn msh_field_numbering() {
    let m = msh(ADT);
    assert!(m.field(0).is_none());
    assert_eq!(raw(m.field(1)), Some(&b"|"[..]));
    assert_eq!(raw(m.field(2)), Some(&b"^~\\&"[..]));
    assert_eq!(raw(m.field(3)), Some(&b"SENDAPP^1.2.3^ISO"[..]));
    assert_eq!(raw(m.field(8)), Some(&b""[..]));
    assert_eq!(raw(m.field(9)), Some(&b"ADT^A01^ADT_A01"[..]));
    // MSH-2 is opaque: its `^` and `~` do not split it.
    let msh2 = m.field(2).unwrap();
    assert_eq!(msh2.repetitions().count(), 1);
    assert_eq!(msh2.components().count(), 1);
    assert_eq!(msh2.component(1).unwrap().as_bytes(), b"^~\\&");
    assert!(m.field(usize::MAX).is_none());
}

#[test]
fn msh_custom_delimiters() {
    // Field separator `^`, component `~`, repetition `|`.
    let bytes =
        b"MSH^~|\\&^SENDER^FAC^RECV^RFAC^20240101^^ADT~A24~ADT_A24^CTRL1^P^2.4^^^er^Su^^A|B\r\
PID^1^^ID1|ID2^^NAME~GIVEN\r";
    let m = msh(bytes);
    let d = m.delimiters();
    assert_eq!(
        (d.field, d.component, d.repetition),
        (b'^', Some(b'~'), Some(b'|'))
    );
    assert_eq!((d.escape, d.subcomponent), (Some(b'\\'), Some(b'&')));
    assert_eq!(m.sending_application().as_bytes(), b"SENDER");
    assert_eq!(m.message_type().code, b"ADT");
    assert_eq!(m.message_type().trigger, b"A24");
    assert_eq!(m.message_type().structure, b"ADT_A24");
    assert_eq!(m.control_id(), b"CTRL1");
    assert_eq!(
        m.version(),
        Some(Version {
            major: 2,
            minor: 4,
            patch: 0
        })
    );
    assert_eq!(m.accept_ack_type(), Some(AckCondition::ErrorOnly));
    assert_eq!(m.application_ack_type(), Some(AckCondition::SuccessOnly));
    assert_eq!(m.charset(), b"A");

    let message = Message::parse(bytes).unwrap();
    let pid = message.segment(b"PID").unwrap();
    let pid3 = pid.field(3).unwrap();
    assert_eq!(pid3.as_bytes(), b"ID1|ID2");
    assert_eq!(pid3.repetition(2).unwrap().as_bytes(), b"ID2");
    assert_eq!(
        pid.field(5).unwrap().component(2).unwrap().as_bytes(),
        b"GIVEN"
    );
}

#[test]
fn msh_two_and_three_encoding_characters() {
    let m = msh(b"MSH|^~|APP^X|FAC|||20200101||ADT^A01|1|P|2.1\r");
    assert_eq!(m.encoding_characters(), b"^~");
    assert_eq!(
        m.sending_application().component(2).unwrap().as_bytes(),
        b"X"
    );
    assert_eq!(m.message_type().trigger, b"A01");
    assert_eq!(
        m.version(),
        Some(Version {
            major: 2,
            minor: 1,
            patch: 0
        })
    );
    // No subcomponent delimiter: `&` is data.
    let component = m.sending_facility().component(1).unwrap();
    assert_eq!(component.subcomponents().count(), 1);

    let m = msh(b"MSH|^~\\|APP|FAC&X\r");
    assert_eq!(m.delimiters().escape, Some(b'\\'));
    let component = m.sending_facility().component(1).unwrap();
    assert_eq!(component.subcomponent(1), Some(&b"FAC&X"[..]));
    assert_eq!(component.subcomponent(2), None);
}

#[test]
fn msh_no_or_one_encoding_character() {
    let m = msh(b"MSH||A^B~C|D\r");
    assert_eq!(m.encoding_characters(), b"");
    let field = m.sending_application();
    assert_eq!(field.repetitions().count(), 1);
    assert_eq!(field.component(1).unwrap().as_bytes(), b"A^B~C");
    assert!(field.component(2).is_none());
    assert_eq!(m.raw_field(4), b"D");

    let m = msh(b"MSH|^|A^B~C|D\r");
    let field = m.sending_application();
    assert_eq!(field.repetitions().count(), 1);
    assert_eq!(field.component(2).unwrap().as_bytes(), b"B~C");
}

#[test]
fn msh_v27_truncation_character() {
    let m = msh(b"MSH|^~\\&#|APP|FAC|||20240101||ORU^R01^ORU_R01|X|P|2.7\r");
    assert_eq!(m.delimiters().truncation, Some(b'#'));
    assert_eq!(m.encoding_characters(), b"^~\\&#");
    assert_eq!(m.sending_application().as_bytes(), b"APP");
    assert_eq!(
        m.version(),
        Some(Version {
            major: 2,
            minor: 7,
            patch: 0
        })
    );
}

#[test]
fn msh_after_bom() {
    let mut bytes = UTF8_BOM.to_vec();
    bytes.extend_from_slice(ADT);
    let m = msh(&bytes);
    assert_eq!(m.header_offset(), 3);
    assert_eq!(m.message_bytes(), ADT);
    assert_eq!(m.control_id(), b"MSG00001");
    let message = Message::parse(&bytes).unwrap();
    assert_eq!(message.header_offset(), 3);
    assert_eq!(message.as_bytes(), ADT);
}

#[test]
fn msh_short_header() {
    for bytes in [
        &b"MSH|^~\\&|APP"[..],
        b"MSH|^~\\&|APP\r",
        b"MSH|^~\\&|APP\rPID|1|2|3|4|5|6|7|8|9|10",
    ] {
        let m = msh(bytes);
        assert_eq!(m.as_bytes(), b"MSH|^~\\&|APP");
        assert_eq!(m.sending_application().as_bytes(), b"APP");
        assert!(m.sending_facility().is_empty());
        assert!(m.receiving_application().is_empty());
        assert!(m.receiving_facility().is_empty());
        assert_eq!(m.timestamp(), b"");
        assert_eq!(m.message_type(), MessageType::default());
        assert_eq!(m.control_id(), b"");
        assert_eq!(m.processing_id(), b"");
        assert_eq!(m.version_id(), b"");
        assert_eq!(m.version(), None);
        assert_eq!(m.accept_ack_type(), None);
        assert_eq!(m.application_ack_type(), None);
        assert_eq!(m.charset(), b"");
        assert!(m.field(4).is_none());
    }

    let m = msh(b"MSH|^~\\&");
    assert_eq!(m.encoding_characters(), b"^~\\&");
    assert!(m.field(3).is_none());
    assert_eq!(raw(m.field(2)), Some(&b"^~\\&"[..]));
    assert_eq!(m.sending_application().as_bytes(), b"");

    let m = msh(b"MSH|");
    assert_eq!(raw(m.field(1)), Some(&b"|"[..]));
    assert_eq!(raw(m.field(2)), Some(&b""[..]));
    assert!(m.field(3).is_none());
}

#[test]
fn msh_long_header_beyond_the_index() {
    // MSH with fields 3..=count named "F<n>", for counts around the end of the table.
    for count in [19, 20, 21, 22, 23, 24, 30, 60] {
        let mut bytes = b"MSH|^~\\&".to_vec();
        for n in 3..=count {
            bytes.extend_from_slice(format!("|F{n}").as_bytes());
        }
        bytes.extend_from_slice(b"\rPID|x|y|z");
        let m = msh(&bytes);
        for n in 3..=count {
            assert_eq!(
                m.raw_field(n),
                format!("F{n}").as_bytes(),
                "MSH-{n} of {count}"
            );
        }
        assert!(m.field(count + 1).is_none(), "past {count}");
        assert!(
            m.segment()
                .as_bytes()
                .ends_with(format!("|F{count}").as_bytes())
        );
        for n in 0..count + 3 {
            assert_eq!(
                raw(m.field(n)),
                raw(m.segment().field(n)),
                "MSH-{n} of {count}"
            );
        }
    }
}

#[test]
fn msh_repeated_charset_and_empty_fields() {
    // Fields MSH-3 to MSH-17 empty, then MSH-18.
    let with_charset = |charset: &[u8]| {
        let mut bytes = b"MSH|^~\\&".to_vec();
        bytes.extend_from_slice(&[b'|'; 16]);
        bytes.extend_from_slice(charset);
        bytes.push(b'\r');
        bytes
    };
    let bytes = with_charset(b"~ISO IR87");
    let m = msh(&bytes);
    assert_eq!(m.charset(), b"");
    assert_eq!(
        m.field(18).unwrap().repetition(2).unwrap().as_bytes(),
        b"ISO IR87"
    );
    assert!(m.sending_application().is_empty());
    assert_eq!(m.message_type(), MessageType::default());
    assert_eq!(m.accept_ack_type(), None);
    let bytes = with_charset(b"8859/1~ISO IR87");
    assert_eq!(msh(&bytes).charset(), b"8859/1");
    assert_eq!(msh(&bytes).raw_field(18), b"8859/1~ISO IR87");
}

#[test]
fn ack_conditions() {
    let cases: &[(&[u8], Option<AckCondition>)] = &[
        (b"", None),
        (b"  ", None),
        (b"AL", Some(AckCondition::Always)),
        (b"al", Some(AckCondition::Always)),
        (b" Al ", Some(AckCondition::Always)),
        (b"NE", Some(AckCondition::Never)),
        (b"ne", Some(AckCondition::Never)),
        (b"ER", Some(AckCondition::ErrorOnly)),
        (b"eR", Some(AckCondition::ErrorOnly)),
        (b"SU", Some(AckCondition::SuccessOnly)),
        (b"su", Some(AckCondition::SuccessOnly)),
        (b"XX", Some(AckCondition::Unrecognized)),
        (b"A", Some(AckCondition::Unrecognized)),
        (b"ALWAYS", Some(AckCondition::Unrecognized)),
        (b"A L", Some(AckCondition::Unrecognized)),
    ];
    for &(value, expected) in cases {
        assert_eq!(
            AckCondition::from_code(value),
            expected,
            "{}",
            value.escape_ascii()
        );
        let mut bytes = b"MSH|^~\\&|||||||||||||".to_vec();
        bytes.extend_from_slice(value);
        bytes.push(b'|');
        bytes.extend_from_slice(value);
        let m = msh(&bytes);
        assert_eq!(m.accept_ack_type(), expected);
        assert_eq!(m.application_ack_type(), expected);
    }
    assert_eq!(AckCondition::Always.code(), "AL");
    assert_eq!(AckCondition::Never.code(), "NE");
    assert_eq!(AckCondition::ErrorOnly.code(), "ER");
    assert_eq!(AckCondition::SuccessOnly.code(), "SU");
    assert_eq!(AckCondition::Unrecognized.code(), "");
    for condition in [
        AckCondition::Always,
        AckCondition::Never,
        AckCondition::ErrorOnly,
    ] {
        assert_eq!(
            AckCondition::from_code(condition.code().as_bytes()),
            Some(condition)
        );
    }
}

#[test]
fn versions() {
    let v = |major, minor, patch| {
        Some(Version {
            major,
            minor,
            patch,
        })
    };
    let cases: &[(&[u8], Option<Version>)] = &[
        (b"2.1", v(2, 1, 0)),
        (b"2.3.1", v(2, 3, 1)),
        (b"2.5.1", v(2, 5, 1)),
        (b"2.9", v(2, 9, 0)),
        (b" 2.4 ", v(2, 4, 0)),
        (b"2", v(2, 0, 0)),
        (b"2.10", v(2, 10, 0)),
        (b"", None),
        (b"2.", None),
        (b".5", None),
        (b"2..5", None),
        (b"2.5.1.1", None),
        (b"v2.5", None),
        (b"2.5a", None),
        (b"2.256", None),
        (b"2,5", None),
        (b"-2.5", None),
    ];
    for &(text, expected) in cases {
        assert_eq!(Version::parse(text), expected, "{}", text.escape_ascii());
    }
    assert!(Version::parse(b"2.3.1") < Version::parse(b"2.4"));
    assert!(Version::parse(b"2.5.1") > Version::parse(b"2.5"));
    assert!(Version::parse(b"2.10") > Version::parse(b"2.9"));
    // MSH-12 can be a VID with an internationalisation code in component 2.
    assert_eq!(msh(b"MSH|^~\\&||||||||||2.5^USA").version(), v(2, 5, 0));
}

#[test]
fn msh_errors() {
    let cases: &[(&[u8], Hl7Error)] = &[
        (b"", Hl7Error::MissingHeader),
        (b"MS", Hl7Error::MissingHeader),
        (b"PID|1", Hl7Error::MissingHeader),
        (b"msh|^~\\&|", Hl7Error::MissingHeader),
        (b" MSH|^~\\&|", Hl7Error::MissingHeader),
        (b"\xEF\xBB\xBF", Hl7Error::MissingHeader),
        (b"\xEF\xBB\xBF\xEF\xBB\xBFMSH|", Hl7Error::MissingHeader),
        (b"FHS|^~\\&|", Hl7Error::MissingHeader),
        (b"MSH", Hl7Error::TruncatedHeader),
        (b"\xEF\xBB\xBFMSH", Hl7Error::TruncatedHeader),
        (b"MSH\rPID|", Hl7Error::TruncatedHeader),
        (b"MSHX^~\\&", Hl7Error::InvalidFieldSeparator { byte: b'X' }),
        (
            b"MSH|^~\\&x|",
            Hl7Error::InvalidEncodingCharacter { byte: b'x' },
        ),
        (
            b"MSH|^~\\&#*|",
            Hl7Error::InvalidEncodingCharacter { byte: b'*' },
        ),
        (b"MSH|^~^|", Hl7Error::DuplicateDelimiter { byte: b'^' }),
    ];
    for &(input, error) in cases {
        assert_eq!(
            Msh::parse(input).err(),
            Some(error),
            "{}",
            input.escape_ascii()
        );
        assert_eq!(
            Message::parse(input).err(),
            Some(error),
            "{}",
            input.escape_ascii()
        );
    }
}

#[test]
fn debug_output_is_readable() {
    let m = msh(ADT);
    let text = format!("{m:?}");
    assert!(text.contains("MSH|^~\\\\&|SENDAPP"), "{text}");
    let message = Message::parse(ADT).unwrap();
    let text = format!("{message:?}");
    assert!(text.contains(&format!("len: {}", ADT.len())), "{text}");
    assert!(!text.contains("PID"), "{text}");
    let pid = message.segment(b"PID").unwrap();
    assert!(format!("{pid:?}").contains("PID|1|"));
    assert_eq!(
        format!("{:?}", pid.field(5).unwrap()),
        "Field(\"DOE^JOHN^Q&R\")"
    );
    assert_eq!(
        format!("{:?}", pid.field(5).unwrap().component(2).unwrap()),
        "Component(\"JOHN\")"
    );
}

// ---------------------------------------------------------------------------------------------
// Message, segments, fields

#[test]
fn segments_and_offsets() {
    let message = Message::parse(ADT).unwrap();
    let segments: Vec<_> = message.segments().collect();
    let ids: Vec<_> = segments.iter().map(Segment::id).collect();
    assert_eq!(ids, [&b"MSH"[..], b"EVN", b"PID"]);
    for segment in &segments {
        let at = segment.offset();
        assert_eq!(&ADT[at..at + segment.as_bytes().len()], segment.as_bytes());
    }
    assert_eq!(segments[0].offset(), 0);
    assert_eq!(segments[1].as_bytes(), b"EVN|A01|20240102030405");
    assert_eq!(
        message.segment(b"EVN").unwrap().offset(),
        segments[1].offset()
    );
    assert!(message.segment(b"OBX").is_none());
    assert!(message.segment(b"").is_none());
}

#[test]
fn segments_skip_blank_pieces() {
    let bytes = b"MSH|^~\\&|A\r\r\n\r  \rPID|1\rPV1\r\n";
    let message = Message::parse(bytes).unwrap();
    let segments: Vec<_> = message.segments().collect();
    assert_eq!(segments.len(), 3);
    assert_eq!(segments[1].as_bytes(), b"PID|1");
    assert_eq!(segments[1].offset(), 17);
    assert_eq!(segments[2].id(), b"PV1");
    assert!(segments[2].field(1).is_none());
    assert_eq!(segments[2].fields().count(), 0);

    // No trailing CR: the last segment runs to the end.
    let message = Message::parse(b"MSH|^~\\&|A\rPID|1|2").unwrap();
    assert_eq!(message.segments().last().unwrap().as_bytes(), b"PID|1|2");
    // LF is not a terminator in the view.
    let message = Message::parse(b"MSH|^~\\&|A\nPID|1").unwrap();
    assert_eq!(message.segments().count(), 1);
}

#[test]
fn field_numbering_pid_versus_msh() {
    let message = Message::parse(ADT).unwrap();
    let pid = message.segment(b"PID").unwrap();
    assert!(pid.field(0).is_none());
    assert_eq!(raw(pid.field(1)), Some(&b"1"[..]));
    assert_eq!(raw(pid.field(2)), Some(&b""[..]));
    assert_eq!(raw(pid.field(8)), Some(&b"M"[..]));
    assert!(pid.field(9).is_none());

    let header = message.segment(b"MSH").unwrap();
    assert_eq!(raw(header.field(1)), Some(&b"|"[..]));
    assert_eq!(raw(header.field(2)), Some(&b"^~\\&"[..]));
    assert_eq!(raw(header.field(10)), Some(&b"MSG00001"[..]));
    for n in 0..25 {
        assert_eq!(raw(header.field(n)), raw(message.msh().field(n)), "MSH-{n}");
    }

    // `fields()` yields field 1 first, for both kinds of segment.
    for segment in message.segments() {
        let fields: Vec<_> = segment.fields().collect();
        for (i, field) in fields.iter().enumerate() {
            assert_eq!(Some(field.as_bytes()), raw(segment.field(i + 1)));
        }
        assert!(segment.field(fields.len() + 1).is_none());
    }
    let msh_fields: Vec<_> = header.fields().map(|f| f.as_bytes()).take(3).collect();
    assert_eq!(msh_fields, [&b"|"[..], b"^~\\&", b"SENDAPP^1.2.3^ISO"]);
}

#[test]
fn repetitions_components_subcomponents() {
    let message = Message::parse(ADT).unwrap();
    let pid = message.segment(b"PID").unwrap();
    let pid3 = pid.field(3).unwrap();
    let reps: Vec<_> = pid3.repetitions().map(|r| r.as_bytes()).collect();
    assert_eq!(reps, [&b"12345^^^HOSP^MR"[..], b"67890^^^OTHER^PI"]);
    assert_eq!(pid3.component(1).unwrap().as_bytes(), b"12345");
    assert_eq!(pid3.component(4).unwrap().as_bytes(), b"HOSP");
    assert!(pid3.component(2).unwrap().is_empty());
    assert!(pid3.component(6).is_none());
    assert!(pid3.component(0).is_none());
    let second = pid3.repetition(2).unwrap();
    assert_eq!(second.component(5).unwrap().as_bytes(), b"PI");
    assert_eq!(second.repetitions().count(), 1);
    assert!(pid3.repetition(3).is_none());
    assert!(pid3.repetition(0).is_none());
    assert_eq!(pid3.components().count(), 5);

    let name = pid.field(5).unwrap();
    let given = name.component(3).unwrap();
    assert_eq!(given.subcomponents().collect::<Vec<_>>(), [&b"Q"[..], b"R"]);
    assert_eq!(given.subcomponent(2), Some(&b"R"[..]));
    assert!(given.subcomponent(3).is_none());
    assert!(given.subcomponent(0).is_none());

    // An empty field is one empty repetition with one empty component.
    let empty = pid.field(2).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.repetitions().count(), 1);
    assert!(empty.component(1).unwrap().is_empty());
    assert_eq!(empty.component(1).unwrap().subcomponent(1), Some(&b""[..]));
    assert!(empty.component(2).is_none());
}

#[test]
fn header_segments_inside_batches() {
    let bytes = b"MSH|^~\\&|A\rBHS|^~\\&|BATCHAPP|FAC\rFHS|^~\\&|F\rBTS|1\r";
    let message = Message::parse(bytes).unwrap();
    let bhs = message.segment(b"BHS").unwrap();
    assert_eq!(raw(bhs.field(1)), Some(&b"|"[..]));
    assert_eq!(raw(bhs.field(2)), Some(&b"^~\\&"[..]));
    assert_eq!(raw(bhs.field(3)), Some(&b"BATCHAPP"[..]));
    assert_eq!(
        raw(message.segment(b"FHS").unwrap().field(3)),
        Some(&b"F"[..])
    );
    assert_eq!(
        raw(message.segment(b"BTS").unwrap().field(1)),
        Some(&b"1"[..])
    );
}

// ---------------------------------------------------------------------------------------------
// Escapes

#[test]
fn decode_each_sequence() {
    let d = Delimiters {
        truncation: Some(b'#'),
        ..Delimiters::DEFAULT
    };
    let cases: &[(&[u8], &[u8])] = &[
        (b"", b""),
        (b"plain", b"plain"),
        (b"a\\F\\b", b"a|b"),
        (b"\\S\\", b"^"),
        (b"\\T\\", b"&"),
        (b"\\R\\", b"~"),
        (b"\\E\\", b"\\"),
        (b"\\P\\", b"#"),
        (b"\\X0D\\", b"\r"),
        (b"\\X0d0A\\", b"\r\n"),
        (b"\\XfF00\\", b"\xFF\x00"),
        (b"x\\F\\\\S\\\\E\\y", b"x|^\\y"),
        // Kept verbatim: formatting, charsets, unknown, malformed.
        (b"\\H\\bold\\N\\", b"\\H\\bold\\N\\"),
        (b"a\\.br\\b", b"a\\.br\\b"),
        (b"\\C2842\\", b"\\C2842\\"),
        (b"\\M2442\\", b"\\M2442\\"),
        (b"\\Zxx\\", b"\\Zxx\\"),
        (b"\\X\\", b"\\X\\"),
        (b"\\X0\\", b"\\X0\\"),
        (b"\\X0G\\", b"\\X0G\\"),
        (b"\\X0D0\\", b"\\X0D0\\"),
        (b"\\x0D\\", b"\\x0D\\"),
        (b"\\f\\", b"\\f\\"),
        (b"\\FF\\", b"\\FF\\"),
        (b"\\\\", b"\\\\"),
        (b"\\\\F\\", b"\\\\F\\"),
        (b"a\\F", b"a\\F"),
        (b"a\\", b"a\\"),
        (b"\\F\\\\S", b"|\\S"),
    ];
    for &(input, expected) in cases {
        assert_eq!(decode(input, &d), expected, "{}", input.escape_ascii());
    }
}

#[test]
fn decode_respects_the_message_delimiters() {
    // `\T\` and `\P\` pass through when the message has no such delimiter.
    let two = Delimiters {
        escape: Some(b'\\'),
        subcomponent: None,
        ..Delimiters::DEFAULT
    };
    assert_eq!(decode(b"\\T\\\\P\\\\S\\", &two), b"\\T\\\\P\\^");
    // Another escape character.
    let custom = Delimiters {
        escape: Some(b'!'),
        ..Delimiters::DEFAULT
    };
    assert_eq!(decode(b"a!F!b!X41!\\F\\", &custom), b"a|bA\\F\\");
    // No escape character: nothing to decode.
    let none = Delimiters {
        escape: None,
        subcomponent: None,
        ..Delimiters::DEFAULT
    };
    assert_eq!(decode(b"\\F\\", &none), b"\\F\\");
    // Appends, never clears.
    let mut out = b"keep:".to_vec();
    decode_escapes(b"\\S\\", &Delimiters::DEFAULT, &mut out);
    assert_eq!(out, b"keep:^");
}

#[test]
fn encode_each_special_byte() {
    let d = Delimiters {
        truncation: Some(b'#'),
        ..Delimiters::DEFAULT
    };
    let cases: &[(&[u8], &[u8])] = &[
        (b"", b""),
        (b"plain text", b"plain text"),
        (b"|", b"\\F\\"),
        (b"^", b"\\S\\"),
        (b"&", b"\\T\\"),
        (b"~", b"\\R\\"),
        (b"\\", b"\\E\\"),
        (b"#", b"\\P\\"),
        (b"\r", b"\\X0D\\"),
        (b"\n", b"\\X0A\\"),
        (b"\x0B", b"\\X0B\\"),
        (b"\x1C", b"\\X1C\\"),
        (b"a|b^c\r\nd", b"a\\F\\b\\S\\c\\X0D\\\\X0A\\d"),
        (b"\xC3\xA9\x00\x1D", b"\xC3\xA9\x00\x1D"),
    ];
    for &(input, expected) in cases {
        assert_eq!(
            encode(input, &d).unwrap(),
            expected,
            "{}",
            input.escape_ascii()
        );
        assert_eq!(decode(expected, &d), input);
    }
    // A hand-built set with a gap still has every delimiter escaped.
    let gap = Delimiters {
        component: None,
        ..Delimiters::DEFAULT
    };
    assert_eq!(encode(b"^~", &gap).unwrap(), b"^\\R\\");
    assert_eq!(decode(b"^\\R\\", &gap), b"^~");
    // `#` is data before v2.7.
    assert_eq!(encode(b"#", &Delimiters::DEFAULT).unwrap(), b"#");
    let mut out = b"keep:".to_vec();
    encode_escapes(b"|", &Delimiters::DEFAULT, &mut out).unwrap();
    assert_eq!(out, b"keep:\\F\\");
}

#[test]
fn encode_without_escape_character() {
    let d = Delimiters {
        escape: None,
        subcomponent: None,
        ..Delimiters::DEFAULT
    };
    assert_eq!(encode(b"A&B\\C", &d).unwrap(), b"A&B\\C");
    assert_eq!(
        encode(b"abc^def", &d),
        Err(EscapeError::NoEscapeCharacter {
            offset: 3,
            byte: b'^'
        })
    );
    assert_eq!(
        encode(b"line\r", &d),
        Err(EscapeError::NoEscapeCharacter {
            offset: 4,
            byte: b'\r'
        })
    );
    let mut out = b"keep".to_vec();
    assert!(encode_escapes(b"x|y", &d, &mut out).is_err());
    assert_eq!(out, b"keep", "nothing appended on error");
}

/// Every valid delimiter set over a small pool, chosen at random.
fn random_delimiters(rng: &mut XorShift) -> Delimiters {
    const POOL: &[u8] = b"|^~\\&#!$%*+,-./:;<=>?@[]_`{}\"'()";
    let mut picked: Vec<u8> = Vec::new();
    let count = 1 + rng.below(6);
    while picked.len() < count {
        let byte = rng.pick(POOL);
        if !picked.contains(&byte) {
            picked.push(byte);
        }
    }
    let mut header = b"MSH".to_vec();
    header.extend_from_slice(&picked);
    let (delims, _) = Delimiters::from_header(&header).unwrap();
    delims
}

#[test]
fn escape_round_trip() {
    let mut rng = XorShift::new(0x9E37_79B9_7F4A_7C15);
    let fixed = [
        Delimiters::DEFAULT,
        Delimiters {
            truncation: Some(b'#'),
            ..Delimiters::DEFAULT
        },
        Delimiters::from_header(b"MSH^~|\\&").unwrap().0,
        Delimiters::from_header(b"MSH|^~").unwrap().0,
        Delimiters::from_header(b"MSH|").unwrap().0,
    ];
    for round in 0..20_000 {
        let delims = if round < 500 {
            fixed[round % fixed.len()]
        } else {
            random_delimiters(&mut rng)
        };
        let specials: Vec<u8> = [b'\r', b'\n', 0x0B, 0x1C, b'X', b'0', b'D']
            .into_iter()
            .chain(Some(delims.field))
            .chain(delims.encoding_characters())
            .collect();
        let len = rng.below(40);
        let input: Vec<u8> = (0..len)
            .map(|_| match rng.below(3) {
                0 => rng.pick(&specials),
                1 => rng.pick(b"FSTREPHN.abc"),
                _ => u8::try_from(rng.next_u64() & 0xFF).unwrap(),
            })
            .collect();
        match encode(&input, &delims) {
            Ok(encoded) => {
                assert_eq!(
                    decode(&encoded, &delims),
                    input,
                    "{delims:?} {}",
                    input.escape_ascii()
                );
                assert!(
                    !encoded
                        .iter()
                        .any(|b| matches!(b, b'\r' | b'\n' | 0x0B | 0x1C))
                );
                assert!(!encoded.contains(&delims.field));
            }
            Err(EscapeError::NoEscapeCharacter { offset, byte }) => {
                assert!(delims.escape.is_none());
                assert_eq!(input[offset], byte);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Normalisation

#[test]
fn normalize_lf_and_crlf() {
    let cases: &[(&[u8], &[u8], usize)] = &[
        (
            b"MSH|^~\\&|A\nPID|1\nPV1|I\n",
            b"MSH|^~\\&|A\rPID|1\rPV1|I\r",
            3,
        ),
        (
            b"MSH|^~\\&|A\r\nPID|1\r\nPV1|I\r\n",
            b"MSH|^~\\&|A\rPID|1\rPV1|I\r",
            3,
        ),
        (
            b"MSH|^~\\&|A\r\nPID|1\nPV1|I\rOBX|1\n",
            b"MSH|^~\\&|A\rPID|1\rPV1|I\rOBX|1\r",
            3,
        ),
        // Blank lines between segments collapse.
        (b"MSH|^~\\&|A\n\n\r\nPID|1\n\n", b"MSH|^~\\&|A\rPID|1\r", 2),
        // Trailing LF only.
        (b"MSH|^~\\&|A\rPID|1\n", b"MSH|^~\\&|A\rPID|1\r", 1),
        // LF before segments with no fields (a bare ID at the end of input counts).
        (b"MSH|^~\\&|A\nZZ1\nEND", b"MSH|^~\\&|A\rZZ1\rEND", 2),
        // LF before text that is not a segment ID stays.
        (
            b"MSH|^~\\&|A\nEnd\nEND \nE-D|\n",
            b"MSH|^~\\&|A\nEnd\nEND \nE-D|\r",
            1,
        ),
        // A header line with nothing after MSH-2.
        (b"MSH|^~\\&\nPID|1", b"MSH|^~\\&\rPID|1", 1),
        // Other header segments.
        (
            b"FHS|^~\\&\nBHS|^~\\&\nMSH|^~\\&\n",
            b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&\r",
            3,
        ),
        // A custom field separator decides what a segment start is.
        (
            b"MSH^~|\\&^A\nPID^1\nPID|2\n",
            b"MSH^~|\\&^A\rPID^1\nPID|2\r",
            2,
        ),
    ];
    for &(input, expected, count) in cases {
        let (output, rewritten) = normalized(input);
        assert_eq!(output, expected, "{}", input.escape_ascii());
        assert_eq!(rewritten, count, "{}", input.escape_ascii());
    }
}

#[test]
fn normalize_keeps_text_line_breaks() {
    let input = b"MSH|^~\\&|A\r\nOBX|1|TX|||line one\nline two\n\nLINE 3: done|\r\nOBX|2|TX|||x\n";
    let (output, count) = normalized(input);
    assert_eq!(
        output,
        b"MSH|^~\\&|A\rOBX|1|TX|||line one\nline two\n\nLINE 3: done|\rOBX|2|TX|||x\r"
    );
    assert_eq!(count, 3);
    let message = Message::parse(&output).unwrap();
    let obx = message.segment(b"OBX").unwrap();
    assert_eq!(
        obx.field(5).unwrap().as_bytes(),
        b"line one\nline two\n\nLINE 3: done"
    );
}

#[test]
fn normalize_leaves_hl7_alone() {
    for input in [
        ADT,
        b"MSH|^~\\&|A\r\rPID|1\r\r",
        b"MSH|^~\\&",
        b"MSH|^~\\&|A\rOBX|1|TX|||a\nb\r",
    ] {
        let (output, count) = normalized(input);
        assert_eq!(output, input);
        assert_eq!(count, 0);
    }
}

#[test]
fn normalize_after_bom() {
    let (output, count) = normalized(b"\xEF\xBB\xBFMSH|^~\\&|A\r\nPID|1\r\n");
    assert_eq!(output, b"\xEF\xBB\xBFMSH|^~\\&|A\rPID|1\r");
    assert_eq!(count, 2);
}

#[test]
fn normalize_errors() {
    let cases: &[(&[u8], Hl7Error)] = &[
        (b"", Hl7Error::MissingHeader),
        (b"PID|1\n", Hl7Error::MissingHeader),
        (b"\nMSH|^~\\&|A\n", Hl7Error::MissingHeader),
        (b"MSH", Hl7Error::TruncatedHeader),
        (b"MSH\nPID|", Hl7Error::TruncatedHeader),
        (
            b"MSHA^~\\&\n",
            Hl7Error::InvalidFieldSeparator { byte: b'A' },
        ),
    ];
    for &(input, error) in cases {
        let mut buffer = input.to_vec();
        assert_eq!(
            normalize_segment_terminators(&mut buffer),
            Err(error),
            "{}",
            input.escape_ascii()
        );
        assert_eq!(buffer, input, "unchanged on error");
    }
    // Only MSH-1 is needed: an unusual MSH-2 is read past.
    for (input, repaired, runs) in [
        (&b"MSH|^ \nPID|1\n"[..], &b"MSH|^ \rPID|1\r"[..], 2),
        (b"BHS|^^\n", b"BHS|^^\r", 1),
    ] {
        let mut buffer = input.to_vec();
        assert_eq!(normalize_segment_terminators(&mut buffer), Ok(runs));
        assert_eq!(buffer, repaired);
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile input

/// Calls every accessor on `bytes`, checking the views agree with each other.
fn exercise(bytes: &[u8]) {
    let parsed = Message::parse(bytes);
    assert_eq!(parsed.err(), Msh::parse(bytes).err());
    let mut normalized = bytes.to_vec();
    if let Ok(count) = normalize_segment_terminators(&mut normalized) {
        assert!(normalized.len() <= bytes.len());
        assert!(count <= bytes.len());
    }
    let Ok(message) = parsed else {
        return;
    };
    let m = message.msh();
    let delims = message.delimiters();
    assert!(message.as_bytes().starts_with(b"MSH"));
    assert_eq!(
        message.as_bytes().len() + message.header_offset(),
        bytes.len()
    );
    assert!(m.as_bytes().len() <= m.message_bytes().len());
    assert!(!m.as_bytes().contains(&b'\r'));
    let _ = (
        m.encoding_characters(),
        m.timestamp(),
        m.message_type(),
        m.control_id(),
    );
    let _ = (m.processing_id(), m.version_id(), m.version(), m.charset());
    let _ = (
        m.accept_ack_type(),
        m.application_ack_type(),
        m.segment(),
        format!("{m:?}"),
    );
    for field in [
        m.sending_application(),
        m.sending_facility(),
        m.receiving_application(),
    ] {
        let _ = (field.component(2), field.repetition(2));
    }
    let _ = m.receiving_facility().components().count();
    for n in 0..40 {
        assert_eq!(raw(m.field(n)), raw(m.segment().field(n)), "MSH-{n}");
        assert_eq!(m.raw_field(n), raw(m.field(n)).unwrap_or_default());
    }
    let _ = (
        message.segment(b"PID"),
        message.segment(b""),
        format!("{message:?}"),
    );
    let mut scratch = Vec::new();
    for segment in message.segments() {
        let at = segment.offset();
        assert_eq!(
            message.as_bytes().get(at..at + segment.as_bytes().len()),
            Some(segment.as_bytes())
        );
        let _ = (segment.id(), segment.field(0), segment.field(usize::MAX));
        for (i, field) in segment.fields().enumerate() {
            assert_eq!(Some(field.as_bytes()), raw(segment.field(i + 1)));
            for repetition in field.repetitions() {
                for component in repetition.components() {
                    let _ = (component.is_empty(), component.subcomponent(2));
                    for sub in component.subcomponents() {
                        scratch.clear();
                        decode_escapes(sub, &delims, &mut scratch);
                    }
                }
            }
            scratch.clear();
            decode_escapes(field.as_bytes(), &delims, &mut scratch);
            let mut encoded = Vec::new();
            if encode_escapes(field.as_bytes(), &delims, &mut encoded).is_ok() {
                assert_eq!(decode(&encoded, &delims), field.as_bytes());
            }
        }
    }
}

#[test]
fn no_panic_on_hostile_input() {
    const ALPHABET: &[u8] = b"MSHPIDFB|^~\\&#\r\n \x0B\x1C\xEF\xBB\xBFX0A1.";
    const PREFIXES: &[&[u8]] = &[
        b"",
        b"MSH",
        b"MSH|",
        b"MSH|^~\\&|",
        b"\xEF\xBB\xBFMSH|^~\\&#|",
        b"MSH^~|\\&^",
        b"FHS|^~\\&|",
    ];
    let mut rng = XorShift::new(0x2545_F491_4F6C_DD1D);
    for _ in 0..30_000 {
        let mut bytes = rng.pick(PREFIXES).to_vec();
        let len = rng.below(64);
        for _ in 0..len {
            let byte = if rng.below(4) == 0 {
                u8::try_from(rng.next_u64() & 0xFF).unwrap()
            } else {
                rng.pick(ALPHABET)
            };
            bytes.push(byte);
        }
        exercise(&bytes);
    }
    // Long headers that run past the field index, with odd content.
    for _ in 0..2_000 {
        let mut bytes = b"MSH|^~\\&".to_vec();
        for _ in 0..rng.below(200) {
            bytes.push(rng.pick(b"||||a^~&\\\r\nX"));
        }
        exercise(&bytes);
    }
}
