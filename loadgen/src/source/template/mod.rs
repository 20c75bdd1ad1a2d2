//! The built-in templates: [`TemplateKind`], [`template`] and what the generators share (the
//! seeded generator, names and streets). Each generator and its own tables are in a
//! submodule: `oru` (lab results, also [`oru_message`]) and `adt` (admissions).

mod adt;
mod oru;

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::{Message, SourceError};
use adt::adt;
use oru::oru;
pub use oru::oru_message;

/// A built-in message template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateKind {
    /// ADT^A01 (admit a patient), v2.5.1, padded with an admission note; see [`template`].
    Adt,
    /// ORU^R01 (lab result), v2.5.1, padded with an embedded report; see [`oru_message`].
    Oru,
}

impl TemplateKind {
    /// Every template.
    pub const ALL: [Self; 2] = [Self::Adt, Self::Oru];

    /// The name used on the command line: `adt` or `oru`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Adt => "adt",
            Self::Oru => "oru",
        }
    }

    /// The smallest message this template makes for `seed`, in bytes: the barest message,
    /// without padding. It depends on the seed because the names and numbers picked vary in
    /// length: 181 to 192 bytes for [`Adt`](Self::Adt), about 292 to 302 for
    /// [`Oru`](Self::Oru), so every seed makes a 200-byte ADT and a 320-byte ORU.
    pub fn minimum_size(self, seed: u64) -> usize {
        self.generate(0, seed).len()
    }

    /// The message of `size` bytes for `seed`, or the minimum one when `size` is smaller.
    fn generate(self, size: usize, seed: u64) -> Vec<u8> {
        match self {
            Self::Adt => adt(size, seed),
            Self::Oru => oru(size, seed, Stamp::Placeholder),
        }
    }
}

impl fmt::Display for TemplateKind {
    /// The message type: `ADT^A01` or `ORU^R01`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Adt => "ADT^A01",
            Self::Oru => "ORU^R01",
        })
    }
}

/// A template name that is neither `adt` nor `oru`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown template {0:?} (expected adt or oru)")]
pub struct UnknownTemplate(pub String);

impl FromStr for TemplateKind {
    type Err = UnknownTemplate;

    /// Reads [`name`](Self::name), ignoring case.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownTemplate(name.to_owned()))
    }
}

/// A message of template `kind`, exactly `size` bytes long, the same bytes for the same
/// `seed` (and different names, identifiers and values for different seeds).
///
/// - [`TemplateKind::Adt`]: an ADT^A01 v2.5.1, in the order of the ADT_A01 structure: MSH,
///   EVN, PID, NK1, PV1, an OBX of type FT holding the admission note, one or two AL1
///   allergies and one or two DG1 diagnoses. The note is as long as `size` requires, its last
///   sentence cut where the size is reached. The message is the fullest shape that fits. From
///   about 765 to 985 bytes, depending on the seed (so for every size of 1 KiB and more): all of the
///   above, with MSH-4 carrying its OID and MSH-13 to MSH-16 present. Below, the facility is
///   `GH` instead of `GENERAL_HOSP`, MSH-13 to MSH-16 are absent, and the DG1, the AL1, the
///   NK1, the PID's address and contact fields, the PV1's visit fields, the note's name in
///   OBX-3, the room and middle name, and last the birth date and sex are left out in turn,
///   down to MSH, EVN, PID (identifier and name), PV1 (class and ward) and the note's OBX:
///   181 to 192 bytes, depending on the seed.
/// - [`TemplateKind::Oru`]: the message of [`oru_message`] but for MSH-7 and MSH-10, whose
///   placeholders make it 4 bytes shorter: from about 292 to 302 bytes depending on the seed.
///
/// Both use the delimiters `|^~\&`, CR segment terminators, and ask for original-mode ACKs
/// (MSH-15 and MSH-16 empty or absent). MSH-7 and MSH-10 are written at the width of the
/// placeholders, so [`Message::len`] is `size`. A seed names the same patient at every size.
///
/// # Errors
/// [`SourceError::TemplateTooSmall`] when `size` is below [`TemplateKind::minimum_size`]
/// (under 200 bytes for an ADT, under 320 for an ORU, whatever the seed).
pub fn template(kind: TemplateKind, size: usize, seed: u64) -> Result<Message, SourceError> {
    let bytes = kind.generate(size, seed);
    // A generator returns its minimum message when `size` is smaller, and exactly `size`
    // bytes otherwise.
    if bytes.len() != size {
        return Err(SourceError::TemplateTooSmall {
            kind,
            size,
            seed,
            minimum: bytes.len(),
        });
    }
    let message = Message::parse(format!("{kind} template (seed {seed})"), &bytes)?;
    debug_assert_eq!(
        message.len(),
        size,
        "placeholders have the generated widths"
    );
    Ok(message)
}

/// The templates' generator: deterministic per seed, shared with the core's tests and the
/// benchmarks.
type Rng = mllp::rand::XorShift;

/// A value in `lo..=hi`.
fn between(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    lo + rng.below(hi - lo + 1)
}

/// What a generator writes in MSH-7 and MSH-10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// A plausible time with its zone and a `MSG…` control ID, as a real sender writes them.
    Sample,
    /// The placeholders of [`Message`], so that [`Message::parse`] keeps the size.
    Placeholder,
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

#[cfg(test)]
mod tests {
    use mllp::ack::AckMode;
    use mllp::frame::{FS, FramingConfig, LF, VT};
    use mllp::hl7::{self, Delimiters, Msh, Version};

    use super::oru::{BASE64, CBC};
    use super::*;
    use crate::source::stamp::{PLACEHOLDER_CONTROL_ID, PLACEHOLDER_TIMESTAMP};
    use crate::source::test_util::{ID, TS, assert_same_except_stamps, stamped};

    /// MSH-9 and MSH-12 as the `kind` template writes them: `ADT^A01^ADT_A01` or
    /// `ORU^R01^ORU_R01`, version 2.5.1.
    pub(super) fn assert_type_and_version(msh: &Msh<'_>, kind: TemplateKind, context: &str) {
        let (code, trigger, structure) = match kind {
            TemplateKind::Adt => (&b"ADT"[..], &b"A01"[..], &b"ADT_A01"[..]),
            TemplateKind::Oru => (&b"ORU"[..], &b"R01"[..], &b"ORU_R01"[..]),
        };
        let found = msh.message_type();
        assert_eq!(
            (found.code, found.trigger, found.structure),
            (code, trigger, structure),
            "{context}"
        );
        let version = Version {
            major: 2,
            minor: 5,
            patch: 1,
        };
        assert_eq!(msh.version(), Some(version), "{context}");
    }

    /// The smallest sizes the benchmarks use: a 200-byte ADT and a 320-byte ORU.
    fn smallest_benchmark_size(kind: TemplateKind) -> usize {
        match kind {
            TemplateKind::Adt => 200,
            TemplateKind::Oru => 320,
        }
    }

    /// Asserts that the template of `kind`, `size` and `seed` is exactly `size` bytes of valid
    /// v2.5.1 of the expected structure, stamps as it should, and returns it with the bytes of
    /// its padding (the note's OBX-5, or the document in the ED's OBX-5.5).
    fn assert_valid_template(kind: TemplateKind, size: usize, seed: u64) -> (Message, usize) {
        let message = template(kind, size, seed)
            .unwrap_or_else(|e| panic!("{kind} size {size} seed {seed}: {e}"));
        let context = format!("{kind} size {size} seed {seed}");
        assert_eq!(message.len(), size, "{context}");
        let bytes = message.bytes();
        assert!(
            !bytes.iter().any(|&b| b == VT || b == FS || b == LF),
            "{context}"
        );
        assert!(bytes.ends_with(b"\r"), "{context}");
        let parsed = hl7::Message::parse(bytes).unwrap_or_else(|e| panic!("{context}: {e}"));
        let msh = parsed.msh();
        assert_eq!(msh.delimiters(), Delimiters::DEFAULT, "{context}");
        assert_type_and_version(msh, kind, &context);
        assert_eq!(msh.processing_id(), b"P", "{context}");
        assert_eq!(AckMode::of(msh), AckMode::Original, "{context}");
        assert_eq!(msh.raw_field(7), PLACEHOLDER_TIMESTAMP.as_bytes());
        assert_eq!(msh.control_id(), PLACEHOLDER_CONTROL_ID.as_bytes());
        let sent = stamped(&message, ID, TS);
        let stamped_msh = Msh::parse(&sent).unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(stamped_msh.control_id(), ID, "{context}");
        assert_eq!(stamped_msh.raw_field(7), TS, "{context}");

        let ids: Vec<&str> = parsed
            .segments()
            .map(|s| std::str::from_utf8(s.id()).unwrap())
            .collect();
        let last_obx = parsed
            .segments()
            .filter(|s| s.id() == b"OBX")
            .last()
            .unwrap_or_else(|| panic!("{context}: no OBX"));
        assert_eq!(last_obx.field(11).unwrap().as_bytes(), b"F", "{context}");
        let padding = match kind {
            TemplateKind::Adt => {
                let shape = ids
                    .join(" ")
                    .replace("AL1 AL1", "AL1")
                    .replace("DG1 DG1", "DG1");
                assert!(
                    [
                        "MSH EVN PID PV1 OBX",
                        "MSH EVN PID NK1 PV1 OBX",
                        "MSH EVN PID NK1 PV1 OBX AL1",
                        "MSH EVN PID NK1 PV1 OBX AL1 DG1",
                    ]
                    .contains(&shape.as_str()),
                    "{context}: {ids:?}"
                );
                assert!(ids.len() <= 10, "{context}: {ids:?}");
                assert_eq!(last_obx.field(2).unwrap().as_bytes(), b"FT", "{context}");
                // The note's only escapes are whole `\.br\` line breaks.
                let note = last_obx.field(5).map_or(&[][..], |f| f.as_bytes());
                let text = std::str::from_utf8(note).unwrap();
                assert!(!text.replace("\\.br\\", "").contains('\\'), "{context}");
                note.len()
            }
            TemplateKind::Oru => {
                assert_eq!(ids[..3], ["MSH", "PID", "OBR"], "{context}");
                let results = ids.len() - 4;
                assert!(results <= CBC.len(), "{context}: {ids:?}");
                assert!(ids[3..].iter().all(|id| *id == "OBX"), "{context}: {ids:?}");
                for (i, obx) in parsed.segments().skip(3).enumerate() {
                    let value_type = obx.field(2).unwrap().as_bytes();
                    assert_eq!(value_type, if i < results { &b"NM"[..] } else { b"ED" });
                    assert_eq!(
                        obx.field(1).unwrap().as_bytes(),
                        (i + 1).to_string().as_bytes()
                    );
                }
                let ed = last_obx.field(5).unwrap();
                assert_eq!(ed.component(2).unwrap().as_bytes(), b"AP", "{context}");
                let document = ed.component(5).map_or(&[][..], |c| c.as_bytes());
                assert!(document.iter().all(|b| BASE64.contains(b)), "{context}");
                document.len()
            }
        };
        (message, padding)
    }

    #[test]
    fn templates_fit_in_their_smallest_benchmark_sizes() {
        for kind in TemplateKind::ALL {
            let sizes: Vec<usize> = (0..2000).map(|seed| kind.minimum_size(seed)).collect();
            let (smallest, largest) = (sizes.iter().min(), sizes.iter().max());
            assert!(
                largest <= Some(&smallest_benchmark_size(kind)),
                "{kind}: minimum from {smallest:?} to {largest:?}"
            );
        }
    }

    #[test]
    fn adt_of_200_bytes_for_every_seed() {
        for seed in 0..2000 {
            let (message, _) = assert_valid_template(TemplateKind::Adt, 200, seed);
            assert!(message.bytes().starts_with(
                b"MSH|^~\\&|ADT1|GH|EHR|GH|19700101000000||ADT^A01^ADT_A01|00000000000000000000\
                  |P|2.5.1\rEVN|A01|2026"
            ));
        }
    }

    #[test]
    fn oru_of_320_bytes_for_every_seed() {
        for seed in 0..2000 {
            assert_valid_template(TemplateKind::Oru, 320, seed);
        }
    }

    #[test]
    fn templates_have_the_exact_size_over_a_sweep() {
        for seed in [0, 1, 42, 1234, u64::MAX] {
            for (kind, step) in [(TemplateKind::Adt, 7), (TemplateKind::Oru, 1)] {
                // The bytes around the padding only grow with the size: a larger message
                // never leaves out something a smaller one has.
                let mut skeleton = 0;
                for size in (smallest_benchmark_size(kind)..=4096).step_by(step) {
                    let (_, padding) = assert_valid_template(kind, size, seed);
                    assert!(
                        size - padding >= skeleton,
                        "{kind} seed {seed}: {} bytes besides the padding at size {size}, \
                         {skeleton} below",
                        size - padding
                    );
                    skeleton = size - padding;
                }
            }
        }
    }

    #[test]
    fn templates_have_the_exact_size() {
        for kind in TemplateKind::ALL {
            for seed in [0, 1, 42, u64::MAX] {
                let minimum = kind.minimum_size(seed);
                assert!(
                    (150..=smallest_benchmark_size(kind)).contains(&minimum),
                    "{kind} minimum {minimum}"
                );
                for size in [
                    minimum,
                    minimum + 1,
                    minimum + 5,
                    1024,
                    1500,
                    4096,
                    64 << 10,
                    1 << 20,
                ] {
                    let message = template(kind, size, seed).unwrap();
                    assert_eq!(message.len(), size, "{kind} size {size} seed {seed}");
                    assert_eq!(message.origin(), format!("{kind} template (seed {seed})"));
                    let sent = stamped(&message, ID, TS);
                    let msh = Msh::parse(&sent).unwrap();
                    assert_eq!(msh.control_id(), ID);
                    assert_eq!(msh.raw_field(7), TS);
                    assert!(FramingConfig::MLLP.check_payload(&sent).is_ok());
                }
                // At its minimum a template has no padding at all.
                assert_eq!(assert_valid_template(kind, minimum, seed).1, 0);
                let error = template(kind, minimum - 1, seed).unwrap_err();
                assert!(
                    matches!(error, SourceError::TemplateTooSmall { minimum: m, .. } if m == minimum)
                );
                assert!(
                    error.to_string().contains(&format!("at least {minimum}")),
                    "{error}"
                );
                assert!(matches!(
                    template(kind, 0, seed),
                    Err(SourceError::TemplateTooSmall { .. })
                ));
            }
        }
    }

    #[test]
    fn templates_are_deterministic_by_seed() {
        for kind in TemplateKind::ALL {
            for size in [smallest_benchmark_size(kind), 333, 700, 2048, 64 << 10] {
                let a = template(kind, size, 5).unwrap();
                assert_eq!(a.bytes(), template(kind, size, 5).unwrap().bytes());
                assert_ne!(a.bytes(), template(kind, size, 6).unwrap().bytes());
            }
        }
        // The ORU template is `oru_message` but for the two stamped fields, at every size.
        for size in (320..1100).step_by(3).chain([3000]) {
            let sample = oru_message(size + 4, 8);
            let message = template(TemplateKind::Oru, size, 8).unwrap();
            assert_same_except_stamps(&sample, message.bytes());
        }
    }

    #[test]
    fn a_seed_names_the_same_patient_at_every_size() {
        // PID-3.1 (the record number), PID-5.1 (the family name), and the time: EVN-2 for an
        // ADT, OBR-7 for an ORU.
        let facts = |kind: TemplateKind, size: usize| {
            let message = template(kind, size, 77).unwrap();
            let parsed = hl7::Message::parse(message.bytes()).unwrap();
            let segment = |id: &[u8]| parsed.segments().find(|s| s.id() == id).unwrap();
            let pid = segment(b"PID");
            let time = match kind {
                TemplateKind::Adt => segment(b"EVN").field(2),
                TemplateKind::Oru => segment(b"OBR").field(7),
            };
            [
                pid.field(3)
                    .unwrap()
                    .component(1)
                    .unwrap()
                    .as_bytes()
                    .to_vec(),
                pid.field(5)
                    .unwrap()
                    .component(1)
                    .unwrap()
                    .as_bytes()
                    .to_vec(),
                time.unwrap().as_bytes().to_vec(),
            ]
        };
        for kind in TemplateKind::ALL {
            let smallest = facts(kind, smallest_benchmark_size(kind));
            for size in [400, 600, 800, 1024, 64 << 10] {
                assert_eq!(facts(kind, size), smallest, "{kind} size {size}");
            }
        }
    }

    #[test]
    fn template_names() {
        assert_eq!("ADT".parse(), Ok(TemplateKind::Adt));
        assert_eq!("oru".parse(), Ok(TemplateKind::Oru));
        assert_eq!(
            "orm".parse::<TemplateKind>().unwrap_err().to_string(),
            "unknown template \"orm\" (expected adt or oru)"
        );
        assert_eq!(TemplateKind::Oru.to_string(), "ORU^R01");
    }
}
