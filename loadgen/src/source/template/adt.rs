//! The ADT^A01 generator: an admission padded with a free-text note, behind the ADT
//! template.

use std::fmt::Write as _;

use super::{FAMILY_NAMES, GIVEN_NAMES, Rng, STREETS, between};
use crate::source::stamp::{PLACEHOLDER_CONTROL_ID, PLACEHOLDER_TIMESTAMP};

/// Drug allergies for AL1-3: RxNorm code and name.
const ALLERGENS: [(&str, &str); 4] = [
    ("7980", "Penicillin G"),
    ("2670", "Codeine"),
    ("1191", "Aspirin"),
    ("10180", "Sulfamethoxazole"),
];
/// AL1-4, allergy severity (HL7 table 0128).
const SEVERITIES: [&str; 3] = [
    "MI^Mild^HL70128",
    "MO^Moderate^HL70128",
    "SV^Severe^HL70128",
];
const REACTIONS: [&str; 5] = ["HIVES", "RASH", "ANAPHYLAXIS", "NAUSEA", "WHEEZING"];

/// Diagnoses for DG1-3: ICD-10-CM code and description.
const DIAGNOSES: [(&str, &str); 6] = [
    ("J18.9", "Pneumonia, unspecified organism"),
    ("I21.4", "Non-ST elevation (NSTEMI) myocardial infarction"),
    ("N39.0", "Urinary tract infection, site not specified"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("I10", "Essential (primary) hypertension"),
    ("K35.80", "Unspecified acute appendicitis"),
];

/// Attending physicians (XCN: ID, family, given, middle, suffix, prefix).
const PHYSICIANS: [&str; 3] = [
    "1234567890^WELBY^MARCUS^^^DR",
    "2345678901^QUINN^MICHAELA^^^DR",
    "3456789012^KILDARE^JAMES^^^DR",
];
/// PV1-3 points of care.
const WARDS: [&str; 4] = ["4WEST", "5EAST", "ICU", "CCU"];

/// The admission note's sentences: plain text without delimiters, so that the note needs no
/// escaping beyond its `\.br\` line breaks.
const NOTE: [&str; 8] = [
    "Patient admitted from the emergency department for further evaluation.",
    "Vital signs stable on arrival.",
    "Denies chest pain, shortness of breath or fever.",
    "History of hypertension, on home medications.",
    "Physical examination unremarkable apart from mild abdominal tenderness.",
    "Labs drawn; results pending at the time of this note.",
    "Plan: IV fluids, monitor overnight, reassess in the morning.",
    "Family informed and in agreement with the plan.",
];

/// The ADT^A01 template: see [`template`](super::template). Exactly `size` bytes, or the
/// barest message (with an empty note) when `size` is smaller.
pub(super) fn adt(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let admission = Admission::draw(&mut rng);
    // The fullest shape that leaves room for a note, however short; the barest otherwise.
    let (head, tail) = (0..=Admission::FULL)
        .rev()
        .map(|shape| admission.render(shape))
        .find(|(head, tail)| head.len() + tail.len() <= size)
        .unwrap_or_else(|| admission.render(0));
    let note = size.saturating_sub(head.len() + tail.len());
    let mut bytes = head.into_bytes();
    bytes.reserve(note + tail.len());
    write_note(&mut bytes, note, &mut rng);
    bytes.extend_from_slice(tail.as_bytes());
    bytes
}

/// Everything an ADT^A01 message draws from the generator before its note, drawn in one fixed
/// order whatever the size, so that a seed gives the same patient and visit in every shape
/// (and the full shape the bytes it has always had).
struct Admission {
    /// `YYYYMMDDHHMMSS`: when the patient was admitted (EVN-2, PV1-44, DG1-5).
    time: String,
    family: &'static str,
    given: &'static str,
    middle: &'static str,
    mrn: usize,
    account: usize,
    /// `YYYYMMDD`.
    birth: String,
    sex: &'static str,
    /// PID-11 and NK1-4.
    address: String,
    /// PID-13 and NK1-5.
    phone: String,
    marital: &'static str,
    ssn: String,
    operator: usize,
    kin: &'static str,
    relationship: &'static str,
    ward: &'static str,
    room: usize,
    bed: &'static str,
    visit: usize,
    admission_type: &'static str,
    attending: &'static str,
    service: &'static str,
    admit_source: &'static str,
    /// AL1-3 (an index in [`ALLERGENS`]), AL1-4 and AL1-5 of each allergy.
    allergies: Vec<(usize, &'static str, &'static str)>,
    /// The first diagnosis (an index in [`DIAGNOSES`]) and how many follow it, 1 or 2.
    diagnoses: (usize, usize),
}

impl Admission {
    /// Shape from which the PID has the birth date (PID-7) and sex (PID-8).
    const BIRTH: usize = 1;
    /// Shape from which the patient's location (PV1-3) has room and bed, and the name a
    /// middle name.
    const ROOM: usize = 2;
    /// Shape from which OBX-3 names the note besides coding it.
    const NOTE_NAME: usize = 3;
    /// Shape from which the PV1 has admission type, attending doctor, service, admit source
    /// and visit number (PV1-4, -7, -10, -14, -19).
    const VISIT: usize = 4;
    /// Shape from which the PID has address, phone, marital status, account and SSN.
    const CONTACT: usize = 5;
    /// Shape from which the next of kin (NK1) is there.
    const KIN: usize = 6;
    /// Shape from which the allergies (AL1) are there.
    const ALLERGY: usize = 7;
    /// Shape from which the diagnoses (DG1) are there.
    const DIAGNOSIS: usize = 8;
    /// The full shape: besides all of the above, MSH-4 with its OID and MSH-13 … MSH-16
    /// present, the facility spelled out (`GENERAL_HOSP`, not `GH`), the registrar in EVN-5
    /// and the admission time in PV1-44.
    const FULL: usize = 9;

    fn draw(rng: &mut Rng) -> Self {
        let day = between(rng, 1, 28);
        let (hour, minute, second) = (rng.below(24), rng.below(60), rng.below(60));
        let time = format!("202602{day:02}{hour:02}{minute:02}{second:02}");
        let family = rng.pick(&FAMILY_NAMES);
        let given = rng.pick(&GIVEN_NAMES);
        let middle = rng.pick(&GIVEN_NAMES);
        let mrn = between(rng, 100_000, 999_999);
        let account = between(rng, 10_000_000, 99_999_999);
        let birth = format!(
            "{}{:02}{:02}",
            between(rng, 1930, 2020),
            between(rng, 1, 12),
            between(rng, 1, 28)
        );
        let sex = rng.pick(&["F", "M"]);
        let address = format!(
            "{} {}^^SPRINGFIELD^IL^62701^USA",
            between(rng, 1, 999),
            rng.pick(&STREETS)
        );
        let phone = format!("(217)555-{:04}", rng.below(10_000));
        let marital = rng.pick(&["S", "M", "D", "W"]);
        let ssn = between(rng, 100_000_000, 899_999_999).to_string();
        let operator = between(rng, 1000, 9999);
        let kin = rng.pick(&GIVEN_NAMES);
        let relationship = rng.pick(&[
            "SPO^Spouse^HL70063",
            "CHD^Child^HL70063",
            "PAR^Parent^HL70063",
        ]);
        let ward = rng.pick(&WARDS);
        let room = between(rng, 100, 599);
        let bed = rng.pick(&["A", "B"]);
        let visit = between(rng, 1_000_000, 9_999_999);
        let admission_type = rng.pick(&["E", "R", "U"]);
        let attending = rng.pick(&PHYSICIANS);
        let service = rng.pick(&["MED", "SUR", "CAR"]);
        let admit_source = rng.pick(&["1", "7"]);
        let count = between(rng, 1, 2);
        let first = rng.below(ALLERGENS.len());
        let allergies = (0..count)
            .map(|i| {
                let severity = rng.pick(&SEVERITIES);
                let reaction = rng.pick(&REACTIONS);
                ((first + i) % ALLERGENS.len(), severity, reaction)
            })
            .collect();
        let count = between(rng, 1, 2);
        let diagnoses = (rng.below(DIAGNOSES.len()), count);
        Self {
            time,
            family,
            given,
            middle,
            mrn,
            account,
            birth,
            sex,
            address,
            phone,
            marital,
            ssn,
            operator,
            kin,
            relationship,
            ward,
            room,
            bed,
            visit,
            admission_type,
            attending,
            service,
            admit_source,
            allergies,
            diagnoses,
        }
    }

    /// The message of `shape` (the constants above; each shape has everything the smaller
    /// ones have) without its note: what comes before OBX-5 of the note, and what comes
    /// after.
    fn render(&self, shape: usize) -> (String, String) {
        let full = shape >= Self::FULL;
        let hospital = if full { "GENERAL_HOSP" } else { "GH" };
        let time = self.time.as_str();
        let mut head = String::with_capacity(1024);
        if full {
            // MSH-1 … MSH-12, MSH-8 (security) empty, then MSH-13 … MSH-16 present and
            // empty: an original-mode ACK is expected.
            let _ = write!(
                head,
                "MSH|^~\\&|ADT1|GENERAL_HOSP^2.16.840.1.113883.3.72.5.20^ISO|EHR|GENERAL_HOSP\
                 |{PLACEHOLDER_TIMESTAMP}||ADT^A01^ADT_A01|{PLACEHOLDER_CONTROL_ID}|P|2.5.1||||\r"
            );
        } else {
            // MSH-1 … MSH-12, MSH-8 (security) empty: still an original-mode ACK.
            let _ = write!(
                head,
                "MSH|^~\\&|ADT1|GH|EHR|GH\
                 |{PLACEHOLDER_TIMESTAMP}||ADT^A01^ADT_A01|{PLACEHOLDER_CONTROL_ID}|P|2.5.1\r"
            );
        }

        // EVN-1 event type (kept for receivers older than v2.5), EVN-2 recorded, EVN-5
        // operator.
        let operator = format!("{}^REGISTRAR^ADMIT", self.operator);
        let mut evn = vec![(1, "A01"), (2, time)];
        if full {
            evn.push((5, &operator));
        }
        push_segment(&mut head, "EVN", &evn);

        let identifier = format!("{}^^^{hospital}^MR", self.mrn);
        let name = if shape >= Self::ROOM {
            format!("{}^{}^{}", self.family, self.given, self.middle)
        } else {
            format!("{}^{}", self.family, self.given)
        };
        let account = format!("{}^^^{hospital}^AN", self.account);
        let mut pid = vec![(1, "1"), (3, &identifier), (5, &name)];
        if shape >= Self::BIRTH {
            pid.extend([(7, self.birth.as_str()), (8, self.sex)]);
        }
        if shape >= Self::CONTACT {
            pid.extend([
                (11, self.address.as_str()),
                (13, &self.phone),
                (16, self.marital),
                (18, &account),
                (19, &self.ssn),
            ]);
        }
        push_segment(&mut head, "PID", &pid);

        if shape >= Self::KIN {
            // Next of kin: same family, same address.
            let kin = format!("{}^{}", self.family, self.kin);
            push_segment(
                &mut head,
                "NK1",
                &[
                    (1, "1"),
                    (2, &kin),
                    (3, self.relationship),
                    (4, &self.address),
                    (5, &self.phone),
                ],
            );
        }

        // PV1-2 class, -3 location, -4 admission type, -7 attending, -10 service, -14 admit
        // source, -19 visit number, -44 admit time.
        let location = match (full, shape >= Self::ROOM) {
            (true, _) => format!("{}^{}^{}^{hospital}", self.ward, self.room, self.bed),
            (false, true) => format!("{}^{}^{}", self.ward, self.room, self.bed),
            (false, false) => self.ward.to_owned(),
        };
        let visit = format!("{}^^^{hospital}^VN", self.visit);
        let mut pv1 = vec![(1, "1"), (2, "I"), (3, &location)];
        if shape >= Self::VISIT {
            pv1.extend([
                (4, self.admission_type),
                (7, self.attending),
                (10, self.service),
                (14, self.admit_source),
                (19, &visit),
            ]);
        }
        if full {
            pv1.push((44, time));
        }
        push_segment(&mut head, "PV1", &pv1);

        // The admission note: OBX-2 FT (formatted text), OBX-5 the note, OBX-11 F (final).
        head.push_str(if shape >= Self::NOTE_NAME {
            "OBX|1|FT|34117-2^History and physical note^LN||"
        } else {
            "OBX|1|FT|34117-2^^LN||"
        });

        let mut tail = String::from("||||||F\r");
        if shape >= Self::ALLERGY {
            for (i, &(allergen, severity, reaction)) in self.allergies.iter().enumerate() {
                let (code, allergen) = ALLERGENS[allergen];
                let allergen = format!("{code}^{allergen}^RXNORM");
                push_segment(
                    &mut tail,
                    "AL1",
                    &[
                        (1, &(i + 1).to_string()),
                        (2, "DA^Drug allergy^HL70127"),
                        (3, &allergen),
                        (4, severity),
                        (5, reaction),
                    ],
                );
            }
        }
        if shape >= Self::DIAGNOSIS {
            let (first, count) = self.diagnoses;
            for i in 0..count {
                let (code, text) = DIAGNOSES[(first + i) % DIAGNOSES.len()];
                let diagnosis = format!("{code}^{text}^I10C");
                push_segment(
                    &mut tail,
                    "DG1",
                    &[
                        (1, &(i + 1).to_string()),
                        (3, &diagnosis),
                        (5, time),
                        (6, if i == 0 { "A" } else { "W" }),
                    ],
                );
            }
        }
        (head, tail)
    }
}

/// Appends segment `id` with `fields` as (field number, value), numbers increasing; the
/// fields in between are empty. Ends it with CR.
fn push_segment(out: &mut String, id: &str, fields: &[(usize, &str)]) {
    out.push_str(id);
    let mut at = 0;
    for &(n, value) in fields {
        while at < n {
            out.push('|');
            at += 1;
        }
        out.push_str(value);
    }
    out.push('\r');
}

/// Appends exactly `len` bytes of admission note: sentences separated by spaces or by the
/// `\.br\` line break of formatted text, the last one cut where `len` is reached (never
/// inside an escape sequence: a separator that does not fit whole is a space).
fn write_note(out: &mut Vec<u8>, len: usize, rng: &mut Rng) {
    let end = out.len() + len;
    let mut first = true;
    while out.len() < end {
        let room = end - out.len();
        let sentence = rng.pick(&NOTE).as_bytes();
        let separator: &[u8] = match (first, rng.below(4)) {
            (true, _) => b"",
            (false, 0) => b"\\.br\\",
            (false, _) => b" ",
        };
        first = false;
        if separator.len() + sentence.len() <= room {
            out.extend_from_slice(separator);
            out.extend_from_slice(sentence);
        } else {
            // The last, partial sentence: after a plain space, so no escape is ever cut.
            let separator: &[u8] = if separator.is_empty() { b"" } else { b" " };
            out.extend(separator.iter().chain(sentence).take(room));
        }
    }
}

#[cfg(test)]
mod tests {
    use mllp::ack::AckMode;
    use mllp::frame::LF;
    use mllp::hl7::{self, Delimiters};

    use super::super::tests::assert_type_and_version;
    use crate::source::{TemplateKind, template};

    #[test]
    fn adt_template_is_a_plausible_a01() {
        for seed in 0..30 {
            let message = template(
                TemplateKind::Adt,
                1500 + 100 * usize::try_from(seed).unwrap(),
                seed,
            )
            .unwrap();
            let bytes = message.bytes();
            assert!(!bytes.contains(&LF));
            let parsed = hl7::Message::parse(bytes).unwrap();
            let msh = parsed.msh();
            assert_eq!(msh.delimiters(), Delimiters::DEFAULT);
            assert_type_and_version(msh, TemplateKind::Adt, "ADT");
            assert_eq!(AckMode::of(msh), AckMode::Original);
            let ids: Vec<&[u8]> = parsed.segments().map(|s| s.id()).collect();
            assert_eq!(
                ids[..6],
                [&b"MSH"[..], b"EVN", b"PID", b"NK1", b"PV1", b"OBX"]
            );
            let rest = &ids[6..];
            let allergies = rest.iter().filter(|id| **id == b"AL1").count();
            assert!((1..=2).contains(&allergies));
            assert!(rest[..allergies].iter().all(|id| *id == b"AL1"));
            assert!((1..=2).contains(&(rest.len() - allergies)));
            assert!(rest[allergies..].iter().all(|id| *id == b"DG1"));
            let pid = parsed.segments().nth(2).unwrap();
            assert!(
                pid.field(3)
                    .unwrap()
                    .as_bytes()
                    .ends_with(b"^^^GENERAL_HOSP^MR")
            );
            assert!(
                pid.field(8)
                    .is_some_and(|f| f.as_bytes() == b"F" || f.as_bytes() == b"M")
            );
            let pv1 = parsed.segments().nth(4).unwrap();
            assert_eq!(pv1.field(2).unwrap().as_bytes(), b"I");
            assert_eq!(pv1.field(44).unwrap().as_bytes().len(), 14);
            let obx = parsed.segments().nth(5).unwrap();
            assert_eq!(obx.field(2).unwrap().as_bytes(), b"FT");
            assert_eq!(obx.field(11).unwrap().as_bytes(), b"F");
            // The note's only escapes are whole `\.br\` line breaks.
            let note = obx.field(5).unwrap().as_bytes();
            let text = String::from_utf8(note.to_vec()).unwrap();
            assert!(!text.replace("\\.br\\", "").contains('\\'), "seed {seed}");
            assert!(text.contains("\\.br\\"), "seed {seed}");
        }
    }
}
