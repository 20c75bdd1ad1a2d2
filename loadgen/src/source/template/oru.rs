//! The ORU^R01 generator: a lab result (complete blood count) padded with an embedded
//! report, behind [`oru_message`] and the ORU template.

use std::fmt::Write as _;

use super::{FAMILY_NAMES, GIVEN_NAMES, Rng, STREETS, Stamp, between};
use crate::source::stamp::{PLACEHOLDER_CONTROL_ID, PLACEHOLDER_TIMESTAMP};

/// One numeric result of a complete blood count: LOINC code, name, unit, reference range,
/// and the range (in tenths) a generated value is drawn from.
pub(super) struct Analyte {
    loinc: &'static str,
    name: &'static str,
    unit: &'static str,
    range: &'static str,
    tenths: (usize, usize),
}

pub(super) const CBC: [Analyte; 5] = [
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
pub(super) const BASE64: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A realistic ORU^R01 (v2.5.1) lab result of exactly `size` bytes (from about 300 bytes
/// up), different for every `seed`.
///
/// Segments, each ended by CR: `MSH`, `PID`, `OBR`, up to five `OBX` with numeric (`NM`)
/// complete-blood-count results, and a last `OBX` of type `ED` whose OBX-5 carries a
/// base64-alphabet "PDF" sized so that the whole message is exactly `size` bytes long. The
/// message is the fullest of these shapes that fits in `size` bytes:
///
/// - From about 717 to 729 bytes, depending on the seed (so for every `size` of 1 KiB and more):
///   the full message, whose bytes the shorter shapes leave unchanged (benchmarks compare
///   runs over time). MSH-1 to MSH-12 valued except MSH-8, MSH-4 with its OID, then MSH-13
///   to MSH-16 present and empty (so the message asks for an original-mode ACK); a PID with
///   identifiers, name, birth date, sex, address and phone; an OBR with its dates, ordering
///   provider and result status; the five numeric results; the document.
/// - Below: a shorter header (MSH-4 without its OID, MSH-13 to MSH-16 absent, which asks
///   for the same original-mode ACK), a PID with identifier, name, birth date and sex, an OBR
///   with its identifiers, test and date, then as many of the five numeric results as fit
///   (from none, about 296 to 306 bytes depending on the seed, to all five), and the
///   document.
///
/// When `size` is smaller than the shortest message with an empty document, the message is
/// that shortest one. The patient, identifiers and values are the same at every size for a
/// seed; only the shape and the document change.
///
/// The message uses the standard delimiters `|^~\&` and contains no MLLP framing byte (VT,
/// FS), so it can be framed as is.
pub fn oru_message(size: usize, seed: u64) -> Vec<u8> {
    oru(size, seed, Stamp::Sample)
}

/// [`oru_message`], with MSH-7 and MSH-10 as `stamp` says. Every random draw is the same
/// either way, so the two differ only in those two fields (and the document's length): with
/// [`Stamp::Sample`] the message without its document is 4 bytes longer.
pub(super) fn oru(size: usize, seed: u64, stamp: Stamp) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let result = LabResult::draw(&mut rng);
    let trailer = "||||||F\r";
    // The fullest shape that leaves room for a document, however short; the barest otherwise.
    let head = (0..=LabResult::FULL)
        .rev()
        .map(|shape| result.render(shape, stamp))
        .find(|head| head.len() + trailer.len() <= size)
        .unwrap_or_else(|| result.render(0, stamp));
    let mut bytes = head.into_bytes();
    let document = size.saturating_sub(bytes.len() + trailer.len());
    bytes.reserve(document + trailer.len());
    bytes.extend((0..document).map(|_| BASE64[rng.below(BASE64.len())]));
    bytes.extend_from_slice(trailer.as_bytes());
    bytes
}

/// Everything an ORU^R01 message draws from the generator before its document, drawn in one
/// fixed order whatever the size, so that a seed gives the same patient and results in every
/// shape (and the full shape the bytes it has always had).
struct LabResult {
    control_id: u64,
    /// `YYYYMMDDHHMMSS`: when the specimen was taken and the message sent.
    time: String,
    family: &'static str,
    given: &'static str,
    mrn: usize,
    birth_year: usize,
    sex: &'static str,
    street: &'static str,
    house: usize,
    ssn: usize,
    phone: usize,
    placer: usize,
    /// The [`CBC`] results, in tenths.
    values: [usize; CBC.len()],
}

impl LabResult {
    /// The full shape; shapes `0..FULL` have the short header and that many numeric results.
    const FULL: usize = CBC.len() + 1;

    fn draw(rng: &mut Rng) -> Self {
        let control_id = rng.next_u64();
        let day = between(rng, 1, 28);
        let (hour, minute, second) = (rng.below(24), rng.below(60), rng.below(60));
        let time = format!("202601{day:02}{hour:02}{minute:02}{second:02}");
        let family = rng.pick(&FAMILY_NAMES);
        let given = rng.pick(&GIVEN_NAMES);
        let mrn = between(rng, 100_000, 999_999);
        let birth_year = between(rng, 1930, 2020);
        let sex = rng.pick(&["F", "M"]);
        let street = rng.pick(&STREETS);
        let house = between(rng, 1, 999);
        let ssn = between(rng, 100_000_000, 899_999_999);
        let phone = rng.below(1000);
        let placer = between(rng, 10_000_000, 99_999_999);
        let values = CBC.map(|analyte| between(rng, analyte.tenths.0, analyte.tenths.1));
        Self {
            control_id,
            time,
            family,
            given,
            mrn,
            birth_year,
            sex,
            street,
            house,
            ssn,
            phone,
            placer,
            values,
        }
    }

    /// The message of `shape` (see [`LabResult::FULL`]) up to the document: it ends inside
    /// OBX-5 of the last OBX, after `^Base64^`.
    fn render(&self, shape: usize, stamp: Stamp) -> String {
        let full = shape >= Self::FULL;
        let Self {
            ref time,
            family,
            given,
            mrn,
            birth_year,
            sex,
            street,
            house,
            ssn,
            phone,
            placer,
            ..
        } = *self;
        let mut m = String::with_capacity(1024);
        let (msh7, msh10) = match stamp {
            Stamp::Sample => (
                format!("{time}+0100"),
                format!("MSG{:016X}", self.control_id),
            ),
            Stamp::Placeholder => (
                PLACEHOLDER_TIMESTAMP.to_owned(),
                PLACEHOLDER_CONTROL_ID.to_owned(),
            ),
        };

        if full {
            // MSH-1 … MSH-12, MSH-8 (security) empty, then MSH-13 … MSH-16 present and empty.
            let _ = write!(
                m,
                "MSH|^~\\&|LABSYS|CENTRAL_LAB^2.16.840.1.113883.3.72.5.21^ISO|EHR|GENERAL_HOSP\
                 |{msh7}||ORU^R01^ORU_R01|{msh10}|P|2.5.1||||\r"
            );
            let _ = write!(
                m,
                "PID|1||{mrn}^^^HOSP^MR~{ssn}^^^SSA^SS||{family}^{given}^Q||{birth_year}0101|{sex}\
                 |||{house} {street}^^SPRINGFIELD^IL^62701||(217)555-0{phone:03}\r",
            );
            let _ = write!(
                m,
                "OBR|1|{placer}^EHR|{filler}^LABSYS|58410-2^CBC panel^LN|||{time}\
                 |||||||||1234567890^WELBY^MARCUS||||||{time}|||F\r",
                filler = placer + 1,
            );
        } else {
            // MSH-1 … MSH-12, MSH-8 (security) empty: still an original-mode ACK.
            let _ = write!(
                m,
                "MSH|^~\\&|LABSYS|CENTRAL_LAB|EHR|GENERAL_HOSP\
                 |{msh7}||ORU^R01^ORU_R01|{msh10}|P|2.5.1\r"
            );
            let _ = write!(
                m,
                "PID|1||{mrn}^^^HOSP^MR||{family}^{given}||{birth_year}0101|{sex}\r"
            );
            let _ = write!(
                m,
                "OBR|1|{placer}^EHR|{filler}^LABSYS|58410-2^CBC panel^LN|||{time}\r",
                filler = placer + 1,
            );
        }

        let results = if full { CBC.len() } else { shape };
        for (i, (analyte, &value)) in CBC.iter().zip(&self.values).take(results).enumerate() {
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
            n = results + 1
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use mllp::ack::AckMode;
    use mllp::frame::{FS, FramingConfig, LF, VT};
    use mllp::hl7::{self, Delimiters, Msh};

    use super::super::TemplateKind;
    use super::super::tests::assert_type_and_version;
    use super::*;

    /// FNV-1a: a hash whose value does not depend on the Rust version, for pinned bytes.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        })
    }

    #[test]
    fn oru_message_bytes_are_pinned_from_one_kilobyte() {
        // Benchmarks compare runs over time: these bytes must not change. (FNV-1a of the
        // message, from 1 KiB up: the sizes the published benchmark results used.)
        for (size, seed, hash) in [
            (1024, 1, 0x958B_3814_5BF1_9320),
            (1024, 7, 0xE280_08C0_2EE0_415A),
            (4096, 9, 0x8437_47CE_C9A4_14AC),
            (64 << 10, 3, 0x81BF_2105_A1F9_B922),
            (1 << 20, 0, 0x73E5_1B80_FDEE_3ED3),
        ] {
            assert_eq!(
                fnv1a(&oru_message(size, seed)),
                hash,
                "size {size} seed {seed}"
            );
        }
    }

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
        assert!(minimum.len() < 320, "minimum is {} bytes", minimum.len());
        assert!(minimum.ends_with(b"^Base64^||||||F\r"));
        assert_eq!(oru_message(64, 3), minimum);
    }

    #[test]
    fn oru_parses_and_has_the_expected_header() {
        for seed in 0..50 {
            let bytes = oru_message(1024, seed);
            let msh = Msh::parse(&bytes).expect("MSH parses");
            assert_eq!(msh.delimiters(), Delimiters::DEFAULT);
            assert_type_and_version(&msh, TemplateKind::Oru, "ORU");
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
        let message = hl7::Message::parse(&bytes).expect("parses");
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
}
