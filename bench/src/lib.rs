//! `mllp-bench` and the criterion micro-benchmarks.
//!
//! Two things live in this crate:
//!
//! - **`mllp-bench`** (`src/bin/mllp-bench.rs`), the end-to-end benchmark: it starts a sink,
//!   the system under test and `mllp-loadgen` as child processes on 127.0.0.1, pinned apart,
//!   and measures throughput, ACK latency, CPU per message and memory, per [`scenario`]. Its
//!   parts: [`pki`] (throwaway certificates), [`process`] (children, `/proc` accounting),
//!   [`system`] and [`peers`] (what is measured: `mllp-relay`, the direct baselines, HAProxy,
//!   stunnel, nginx), [`runner`] (one run per round, phase and system, interleaved) and
//!   [`results`] (tables, verdict, `results.json`, `summary.md`, plots). It is not a load
//!   generator itself: every message is sent and timed by `mllp-loadgen`.
//! - the criterion micro-benchmarks (`benches/`: scanning, deframing, the HL7 view, ACKs and
//!   escapes), and the deterministic fixture builders they share, so that every run (and every
//!   machine) measures exactly the same bytes.
//!
//! Fixtures are generated, not checked in: a tiny xorshift generator seeded by the caller picks
//! names, identifiers and values, so a seed always yields the same bytes and different seeds
//! yield different messages (different control IDs, patients, results) of the same shape.
//!
//! - [`oru_message`]: a realistic ORU^R01 v2.5.1 lab result, padded to a requested size with an
//!   embedded-document (ED) OBX, the way large messages look in practice. It lives in
//!   [`loadgen::source`], whose ORU template it also is, and is re-exported here so that the
//!   benchmarks and the load generator send the same bytes.
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

pub mod peers;
pub mod pki;
pub mod process;
pub mod results;
pub mod runner;
pub mod scenario;
pub mod system;

use mllp::frame::{CR, FS, FramingConfig, VT};

pub use loadgen::source::oru_message;

/// The fixtures' generator: deterministic per seed, shared with the core's tests.
type Rng = mllp::rand::XorShift;

/// A value in `lo..=hi`.
fn between(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    lo + rng.below(hi - lo + 1)
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
    use mllp::frame::Deframer;
    use mllp::hl7::{self, Delimiters};

    use super::*;

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
