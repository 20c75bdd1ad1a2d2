//! Benchmarks of the `mllp` core.
//!
//! The crate holds the criterion micro-benchmarks (`benches/`: scanning, deframing, the HL7
//! view, ACKs and escapes) and, later, the `mllp-bench` end-to-end runner. This library is only
//! what they share: deterministic fixture builders, so that every run (and every machine)
//! measures exactly the same bytes.
//!
//! Fixtures are generated, not checked in: a tiny xorshift generator seeded by the caller picks
//! names, identifiers and values, so a seed always yields the same bytes and different seeds
//! yield different messages (different control IDs, patients, results) of the same shape.
//!
//! - [`oru_message`]: a realistic ORU^R01 v2.5.1 lab result, padded to a requested size with an
//!   embedded-document (ED) OBX, the way large messages look in practice.
//! - [`framed_stream`]: messages MLLP-framed back to back, as a sender writes them.
//! - [`haystack`]: HL7-like text whose only framing bytes are an FS CR at the very end, so a
//!   search must cross the whole buffer.
//! - [`escapable_text`]: report text with delimiters and line breaks sprinkled in, for the
//!   escape encoder and decoder.
//!
//! ```
//! let message = bench::oru_message(1024, 1);
//! assert_eq!(message.len(), 1024);
//! let msh = mllp::hl7::Msh::parse(&message).unwrap();
//! assert_eq!(msh.message_type().code, b"ORU");
//! ```

use std::fmt::Write as _;

use mllp::frame::{CR, FS, FramingConfig, VT};

/// The fixtures' generator: deterministic per seed, shared with the core's tests.
type Rng = mllp::fuzzing::XorShift;

/// A value in `lo..=hi`.
fn between(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    lo + rng.below(hi - lo + 1)
}

const FAMILY_NAMES: [&str; 8] = [
    "DOE",
    "SMITH",
    "GARCIA",
    "MUELLER",
    "NGUYEN",
    "ROSSI",
    "OKAFOR",
    "LINDQVIST",
];
const GIVEN_NAMES: [&str; 8] = [
    "JANE", "JOHN", "MARIA", "PETER", "ANH", "GIULIA", "CHIDI", "ELSA",
];
const STREETS: [&str; 4] = ["MAIN ST", "OAK AVE", "LAKE RD", "HILL ST"];

/// One numeric result of a complete blood count: LOINC code, name, unit, reference range,
/// and the range (in tenths) a generated value is drawn from.
struct Analyte {
    loinc: &'static str,
    name: &'static str,
    unit: &'static str,
    range: &'static str,
    tenths: (usize, usize),
}

const CBC: [Analyte; 5] = [
    Analyte {
        loinc: "718-7",
        name: "Hemoglobin",
        unit: "g/dL",
        range: "12.0-16.0",
        tenths: (100, 175),
    },
    Analyte {
        loinc: "4544-3",
        name: "Hematocrit",
        unit: "%",
        range: "36.0-46.0",
        tenths: (320, 500),
    },
    Analyte {
        loinc: "6690-2",
        name: "WBC",
        unit: "10*3/uL",
        range: "4.5-11.0",
        tenths: (30, 140),
    },
    Analyte {
        loinc: "789-8",
        name: "RBC",
        unit: "10*6/uL",
        range: "4.2-5.4",
        tenths: (38, 60),
    },
    Analyte {
        loinc: "787-2",
        name: "MCV",
        unit: "fL",
        range: "80.0-100.0",
        tenths: (750, 1050),
    },
];

/// Base64 alphabet: what an embedded PDF in OBX-5 looks like, and none of it is a delimiter.
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A realistic ORU^R01 (v2.5.1) lab result of about `size` bytes, different for every `seed`.
///
/// Segments, each ended by CR: `MSH` (MSH-1 to MSH-12 valued except MSH-8, then MSH-13 to
/// MSH-16 present and empty, so the message asks for an original-mode ACK), `PID`, `OBR`, five
/// `OBX` with numeric (`NM`) complete-blood-count results, and a last `OBX` of type `ED` whose
/// OBX-5 carries a base64-alphabet "PDF" sized so that the whole message is exactly `size`
/// bytes long. When `size` is smaller than the message without its document (about 700
/// bytes), the document is empty and the message is that minimum length.
///
/// The message uses the standard delimiters `|^~\&` and contains no MLLP framing byte (VT,
/// FS), so it can be framed as is.
pub fn oru_message(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut m = String::with_capacity(size.max(1024));
    let control_id = format!("MSG{:016X}", rng.next_u64());
    let day = between(&mut rng, 1, 28);
    let (hour, minute, second) = (rng.below(24), rng.below(60), rng.below(60));
    let time = format!("202601{day:02}{hour:02}{minute:02}{second:02}");

    // MSH-1 … MSH-12, MSH-8 (security) empty, then MSH-13 … MSH-16 present and empty.
    let _ = write!(
        m,
        "MSH|^~\\&|LABSYS|CENTRAL_LAB^2.16.840.1.113883.3.72.5.21^ISO|EHR|GENERAL_HOSP\
         |{time}+0100||ORU^R01^ORU_R01|{control_id}|P|2.5.1||||\r"
    );

    let family = rng.pick(&FAMILY_NAMES);
    let given = rng.pick(&GIVEN_NAMES);
    let mrn = between(&mut rng, 100_000, 999_999);
    let birth_year = between(&mut rng, 1930, 2020);
    let sex = rng.pick(&["F", "M"]);
    let street = rng.pick(&STREETS);
    let house = between(&mut rng, 1, 999);
    let _ = write!(
        m,
        "PID|1||{mrn}^^^HOSP^MR~{ssn}^^^SSA^SS||{family}^{given}^Q||{birth_year}0101|{sex}\
         |||{house} {street}^^SPRINGFIELD^IL^62701||(217)555-0{phone:03}\r",
        ssn = between(&mut rng, 100_000_000, 899_999_999),
        phone = rng.below(1000),
    );

    let placer = between(&mut rng, 10_000_000, 99_999_999);
    let _ = write!(
        m,
        "OBR|1|{placer}^EHR|{filler}^LABSYS|58410-2^CBC panel^LN|||{time}\
         |||||||||1234567890^WELBY^MARCUS||||||{time}|||F\r",
        filler = placer + 1,
    );

    for (i, analyte) in CBC.iter().enumerate() {
        let value = between(&mut rng, analyte.tenths.0, analyte.tenths.1);
        let (whole, tenth) = (value / 10, value % 10);
        let (low, high) = analyte.range.split_once('-').unwrap_or(("0", "0"));
        let flag = match (low.parse::<f64>(), high.parse::<f64>()) {
            (Ok(low), _) if (value as f64) / 10.0 < low => "L",
            (_, Ok(high)) if (value as f64) / 10.0 > high => "H",
            _ => "N",
        };
        let _ = write!(
            m,
            "OBX|{n}|NM|{loinc}^{name}^LN||{whole}.{tenth}|{unit}|{range}|{flag}|||F\r",
            n = i + 1,
            loinc = analyte.loinc,
            name = analyte.name,
            unit = analyte.unit,
            range = analyte.range,
        );
    }

    // The embedded report: OBX-5 is an ED, `source^type^subtype^encoding^data`.
    let _ = write!(
        m,
        "OBX|{n}|ED|11502-2^Laboratory report^LN||LABSYS^AP^PDF^Base64^",
        n = CBC.len() + 1
    );
    let trailer = "||||||F\r";
    let mut bytes = m.into_bytes();
    let document = size.saturating_sub(bytes.len() + trailer.len());
    bytes.reserve(document + trailer.len());
    bytes.extend((0..document).map(|_| BASE64[rng.below(BASE64.len())]));
    bytes.extend_from_slice(trailer.as_bytes());
    bytes
}

/// `messages` MLLP-framed back to back (`VT message FS CR` each), as a sender writes them.
///
/// # Panics
/// If a message cannot be framed (it contains VT or FS, or exceeds the default 16 MiB limit):
/// fixtures are expected to be valid.
pub fn framed_stream(messages: &[Vec<u8>]) -> Vec<u8> {
    let total = messages.iter().map(|m| m.len() + 3).sum();
    let mut stream = Vec::with_capacity(total);
    for message in messages {
        FramingConfig::MLLP
            .encode(message, &mut stream)
            .expect("fixture messages must be frameable");
    }
    stream
}

/// `len` bytes of printable HL7-like text (segment IDs, fields of letters and digits, the
/// delimiters `|^~\&`, spaces and CR segment ends) whose last two bytes are FS CR, the only
/// FS in the buffer; there is no VT at all. A search for VT/FS or for FS CR must therefore
/// cross the whole buffer before it finds anything, at position `len - 2`.
///
/// # Panics
/// If `len < 2`: the FS CR would not fit.
pub fn haystack(len: usize, seed: u64) -> Vec<u8> {
    assert!(len >= 2, "haystack: len {len} cannot hold the final FS CR");
    const IDS: [&[u8]; 6] = [b"OBX", b"NTE", b"PID", b"OBR", b"PV1", b"ORC"];
    const SEPARATORS: &[u8] = b"||||||^^^~& ";
    const TEXT: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz.-";
    let mut rng = Rng::new(seed);
    let body = len - 2;
    let mut out = Vec::with_capacity(len);
    while out.len() < body {
        // One segment of 40 to 120 bytes: ID, fields, CR.
        out.extend_from_slice(IDS[rng.below(IDS.len())]);
        let segment_end = out.len() + between(&mut rng, 40, 120);
        while out.len() < segment_end {
            out.push(SEPARATORS[rng.below(SEPARATORS.len())]);
            let word = between(&mut rng, 1, 12);
            out.extend((0..word).map(|_| TEXT[rng.below(TEXT.len())]));
        }
        out.push(CR);
    }
    out.truncate(body);
    out.extend_from_slice(&[FS, CR]);
    debug_assert!(!out.contains(&VT));
    out
}

/// `len` bytes of report text for the escape benchmarks: words and spaces with, every few
/// dozen bytes, a byte that a field must escape (`|`, `^`, `~`, `\`, `&` or a line break).
/// About one byte in forty needs escaping, as in free-text results that quote units and
/// ranges. Contains no VT or FS.
pub fn escapable_text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&[u8]; 10] = [
        b"specimen",
        b"received",
        b"hemolyzed",
        b"result",
        b"verified",
        b"within",
        b"reference",
        b"range",
        b"repeat",
        b"advised",
    ];
    const SPECIAL: &[u8] = b"|^~\\&\r\n";
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(rng.pick(&WORDS));
        if rng.below(5) == 0 {
            out.push(SPECIAL[rng.below(SPECIAL.len())]);
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use mllp::ack::AckMode;
    use mllp::frame::{Deframer, LF};
    use mllp::hl7::{self, Delimiters, Message, Msh, Version};

    use super::*;

    #[test]
    fn oru_has_the_requested_size_above_the_minimum() {
        for size in [1024, 1500, 4096, 64 << 10, 1 << 20] {
            for seed in [0, 1, 42] {
                assert_eq!(
                    oru_message(size, seed).len(),
                    size,
                    "size {size} seed {seed}"
                );
            }
        }
    }

    #[test]
    fn oru_below_the_minimum_has_an_empty_document() {
        let minimum = oru_message(0, 3);
        assert!(minimum.len() < 1024, "minimum is {} bytes", minimum.len());
        assert!(minimum.ends_with(b"^Base64^||||||F\r"));
        assert_eq!(oru_message(64, 3), minimum);
    }

    #[test]
    fn oru_parses_and_has_the_expected_header() {
        for seed in 0..50 {
            let bytes = oru_message(1024, seed);
            let msh = Msh::parse(&bytes).expect("MSH parses");
            assert_eq!(msh.delimiters(), Delimiters::DEFAULT);
            let kind = msh.message_type();
            assert_eq!(
                (kind.code, kind.trigger, kind.structure),
                (&b"ORU"[..], &b"R01"[..], &b"ORU_R01"[..])
            );
            assert_eq!(
                msh.version(),
                Some(Version {
                    major: 2,
                    minor: 5,
                    patch: 1
                })
            );
            assert_eq!(msh.processing_id(), b"P");
            assert_eq!(msh.control_id().len(), 19);
            assert_eq!(AckMode::of(&msh), AckMode::Original);
            // MSH-13 … MSH-16 are present (and empty), nothing beyond.
            assert!(msh.field(16).is_some_and(|f| f.is_empty()));
            assert!(msh.field(17).is_none());
            for n in 3..=12 {
                assert_eq!(
                    msh.field(n).is_some_and(|f| f.is_empty()),
                    n == 8,
                    "MSH-{n}"
                );
            }
        }
    }

    #[test]
    fn oru_has_the_expected_segments() {
        let bytes = oru_message(4096, 9);
        let message = Message::parse(&bytes).expect("parses");
        let ids: Vec<&[u8]> = message.segments().map(|s| s.id()).collect();
        assert_eq!(
            ids,
            [
                &b"MSH"[..],
                b"PID",
                b"OBR",
                b"OBX",
                b"OBX",
                b"OBX",
                b"OBX",
                b"OBX",
                b"OBX"
            ]
        );
        let numeric = message
            .segments()
            .filter(|s| s.field(2).is_some_and(|f| f.as_bytes() == b"NM"));
        for obx in numeric {
            let value = obx.field(5).expect("OBX-5").as_bytes();
            assert!(
                std::str::from_utf8(value).unwrap().parse::<f64>().is_ok(),
                "{obx:?}"
            );
        }
        let document = message.segments().last().expect("segments");
        let ed = document.field(5).expect("OBX-5");
        assert_eq!(ed.component(2).unwrap().as_bytes(), b"AP");
        assert!(ed.component(5).unwrap().as_bytes().len() > 3000);
    }

    #[test]
    fn oru_is_deterministic_and_seed_dependent() {
        assert_eq!(oru_message(2048, 5), oru_message(2048, 5));
        let a = oru_message(2048, 5);
        let b = oru_message(2048, 6);
        assert_ne!(a, b);
        assert_ne!(
            Msh::parse(&a).unwrap().control_id(),
            Msh::parse(&b).unwrap().control_id()
        );
    }

    #[test]
    fn oru_has_no_framing_bytes_and_cr_terminators() {
        for seed in 0..20 {
            let bytes = oru_message(8192, seed);
            assert!(!bytes.iter().any(|&b| b == VT || b == FS || b == LF));
            assert!(bytes.ends_with(b"\r"));
            assert!(FramingConfig::MLLP.check_payload(&bytes).is_ok());
        }
    }

    #[test]
    fn framed_stream_deframes_back_into_the_messages() {
        let messages: Vec<Vec<u8>> = (0..10u16)
            .map(|i| oru_message(1024 + 100 * usize::from(i), u64::from(i)))
            .collect();
        let stream = framed_stream(&messages);
        assert_eq!(
            stream.len(),
            messages.iter().map(|m| m.len() + 3).sum::<usize>()
        );
        let mut deframer = Deframer::new(FramingConfig::MLLP);
        let mut decoded = Vec::new();
        while let Some(frame) = deframer.decode(&stream).expect("valid stream") {
            decoded.push(frame.payload(&stream).to_vec());
        }
        deframer.finish().expect("no partial frame");
        assert_eq!(decoded, messages);
    }

    #[test]
    fn haystack_hides_its_only_fs_cr_at_the_end() {
        for len in [2, 3, 64, 1024, 64 << 10] {
            let hay = haystack(len, 11);
            assert_eq!(hay.len(), len);
            assert!(!hay.contains(&VT));
            assert_eq!(hay.iter().position(|&b| b == FS), Some(len - 2));
            assert_eq!(&hay[len - 2..], [FS, CR]);
            assert!(
                hay[..len - 2]
                    .iter()
                    .all(|&b| b == CR || b.is_ascii_graphic() || b == b' ')
            );
        }
        let hay = haystack(4096, 1);
        assert!(hay.contains(&b'|') && hay.contains(&b'^') && hay.contains(&CR));
        assert_eq!(haystack(4096, 1), hay);
    }

    #[test]
    #[should_panic(expected = "cannot hold")]
    fn haystack_refuses_lengths_below_two() {
        let _ = haystack(1, 0);
    }

    #[test]
    fn escapable_text_needs_escaping_and_round_trips() {
        let text = escapable_text(1024, 2);
        assert_eq!(text.len(), 1024);
        assert!(!text.contains(&VT) && !text.contains(&FS));
        let specials = text.iter().filter(|b| b"|^~\\&\r\n".contains(b)).count();
        assert!((10..=80).contains(&specials), "{specials} bytes to escape");
        let mut encoded = Vec::new();
        hl7::encode_escapes(&text, &Delimiters::DEFAULT, &mut encoded).expect("encodes");
        assert!(encoded.len() > text.len());
        let mut decoded = Vec::new();
        hl7::decode_escapes(&encoded, &Delimiters::DEFAULT, &mut decoded);
        assert_eq!(decoded, text);
    }
}
