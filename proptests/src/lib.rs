//! Generators and reference models shared by the property tests in `tests/props/`.
//!
//! Random bytes almost never contain a valid MLLP trailer or an HL7 delimiter in the right
//! place, so the generators here are biased toward the bytes that matter (VT, FS, CR, LF and
//! the delimiters), and HL7 messages are generated from a model (segments → fields →
//! repetitions → components → subcomponents) that the tests compare the view against.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use mllp::hl7::Delimiters;

/// Proptest configuration for one property file: case count from `PROPTEST_CASES` (proptest
/// reads it) or `default_cases`, and shrunk failures saved beside the source file as
/// `<file>.proptest-regressions`, which are committed and replayed first on every run.
pub fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// A byte biased toward MLLP and HL7 structure: half the time one of VT, FS, CR, LF, space
/// or a default delimiter, otherwise any byte.
pub fn biased_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        1 => Just(0x0Bu8),
        1 => Just(0x1Cu8),
        1 => Just(b'\r'),
        1 => Just(b'\n'),
        1 => Just(b' '),
        1 => prop::sample::select(b"|^~\\&#".to_vec()),
        6 => any::<u8>(),
    ]
}

/// Bytes from [`biased_byte`].
pub fn biased_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(biased_byte(), 0..=max_len)
}

/// A payload that may be framed: anything but VT and FS, with CRs and delimiters common.
pub fn payload(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        biased_byte().prop_map(|b| if b == 0x0B || b == 0x1C { b'x' } else { b }),
        0..=max_len,
    )
}

/// Cut points for a stream: chunk lengths, including empty chunks and single bytes.
pub fn chunk_lengths() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![2 => 0..3usize, 2 => 1..40usize, 1 => 40..2000usize],
        1..64,
    )
}

/// Splits `bytes` into chunks of the given lengths (cycled), covering all of it.
pub fn chunk<'a>(bytes: &'a [u8], lengths: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for &len in lengths.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        // Zero-length chunks are allowed, but progress must be made eventually.
        let len = if out.len() > 4 * bytes.len() + 8 {
            len.max(1)
        } else {
            len
        };
        let (head, tail) = rest.split_at(len.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// Printable punctuation that real senders use (or could use) as delimiters.
const DELIMITER_POOL: &[u8] = b"|^~\\&#!$%*+,-./:;<=>?@[]_{}`'\"()";

/// Random delimiters: a field separator and 2–5 encoding characters, all distinct.
pub fn delimiters() -> impl Strategy<Value = Delimiters> {
    (Just(DELIMITER_POOL.to_vec()).prop_shuffle(), 2..=5usize).prop_map(|(pool, n)| {
        let encoding = |i: usize| (i < n).then(|| pool[1 + i]);
        Delimiters {
            field: pool[0],
            component: encoding(0),
            repetition: encoding(1),
            escape: encoding(2),
            subcomponent: encoding(3),
            truncation: encoding(4),
        }
    })
}

/// A field as a tree: repetitions, of components, of subcomponents (leaf text).
pub type FieldModel = Vec<Vec<Vec<Vec<u8>>>>;

/// A segment: its ID and its fields (field 1 first; for `MSH`, MSH-3 first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentModel {
    /// Three-letter ID.
    pub id: [u8; 3],
    /// Fields in order.
    pub fields: Vec<FieldModel>,
}

/// A message: delimiters and segments, the first being `MSH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageModel {
    /// Delimiters written into MSH-1 and MSH-2.
    pub delimiters: Delimiters,
    /// Segments in order; `segments[0].id == *b"MSH"`.
    pub segments: Vec<SegmentModel>,
}

impl MessageModel {
    /// The message bytes, segments terminated by CR.
    pub fn render(&self) -> Vec<u8> {
        let d = &self.delimiters;
        let mut out = Vec::new();
        for segment in &self.segments {
            out.extend_from_slice(&segment.id);
            if &segment.id == b"MSH" {
                out.push(d.field);
                out.extend(d.encoding_characters());
            }
            for field in &segment.fields {
                out.push(d.field);
                out.extend(render_field(field, d));
            }
            out.push(b'\r');
        }
        out
    }

    /// MSH-`n` as written (n >= 3).
    pub fn msh_field(&self, n: usize) -> Vec<u8> {
        self.segments[0]
            .fields
            .get(n - 3)
            .map(|f| render_field(f, &self.delimiters))
            .unwrap_or_default()
    }
}

/// A field written with `d`.
pub fn render_field(field: &FieldModel, d: &Delimiters) -> Vec<u8> {
    let join = |parts: Vec<Vec<u8>>, sep: Option<u8>| -> Vec<u8> {
        let mut out = Vec::new();
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                out.extend(sep);
            }
            out.extend(part);
        }
        out
    };
    let reps = field
        .iter()
        .map(|rep| {
            let comps = rep
                .iter()
                .map(|comp| join(comp.clone(), d.subcomponent))
                .collect();
            join(comps, d.component)
        })
        .collect();
    join(reps, d.repetition)
}

/// Leaf text: letters, digits, spaces, dots and non-ASCII UTF-8, never a delimiter, CR, LF,
/// VT or FS.
fn leaf(d: Delimiters) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"AZaz09 .-:/\xC3\xA9".to_vec()), 0..6).prop_map(
        move |bytes| {
            bytes
                .into_iter()
                .map(|b| if d.is_delimiter(b) { b'Q' } else { b })
                .collect()
        },
    )
}

/// A field shaped by what `d` allows: more than one repetition, component or subcomponent
/// only where the delimiter exists.
fn field(d: Delimiters) -> impl Strategy<Value = FieldModel> {
    let n = |present: Option<u8>, max: usize| if present.is_some() { 1..=max } else { 1..=1 };
    let sub = prop::collection::vec(leaf(d), n(d.subcomponent, 3));
    let comp = prop::collection::vec(sub, n(d.component, 4));
    prop::collection::vec(comp, n(d.repetition, 3))
}

/// A generated message model: an MSH with 1–25 fields after MSH-2 and 0–6 other segments.
pub fn message() -> impl Strategy<Value = MessageModel> {
    delimiters().prop_flat_map(|d| {
        let id = prop::sample::select(vec![*b"PID", *b"OBX", *b"OBR", *b"NK1", *b"ZX9", *b"EVN"]);
        let segment = (id, prop::collection::vec(field(d), 0..8))
            .prop_map(|(id, fields)| SegmentModel { id, fields });
        let msh = prop::collection::vec(field(d), 1..26).prop_map(|fields| SegmentModel {
            id: *b"MSH",
            fields,
        });
        (msh, prop::collection::vec(segment, 0..7)).prop_map(move |(msh, rest)| {
            let mut segments = vec![msh];
            segments.extend(rest);
            MessageModel {
                delimiters: d,
                segments,
            }
        })
    })
}
