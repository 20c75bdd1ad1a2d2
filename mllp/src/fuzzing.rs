//! Fuzz entry points: each runs one part of the core on arbitrary bytes and asserts the
//! invariants that must hold for every input (not merely "does not crash"). The `fuzz/`
//! targets are one line each; the property tests call these too. Hidden from the docs: not
//! an API.

use crate::ack::{self, AckCode, AckParams};
use crate::frame::{Deframer, FramingConfig, Tolerances};
use crate::hl7::{self, Message, Msh};
use crate::scan::{Engine, Scanner, scalar};

use crate::rand::XorShift;

/// Deframes `data` twice, whole and cut into chunks (the cut points and the configuration
/// come from the first bytes), and asserts: identical frames and events and final error
/// either way; every payload free of framing bytes and within the limit; at most
/// `max_frame_len + 2` bytes kept between reads.
pub fn deframe(data: &[u8]) {
    let Some((&[flags, limit, cut_seed], stream)) = data.split_first_chunk::<3>() else {
        return;
    };
    let tolerances = Tolerances {
        fs_without_cr: flags & 1 != 0,
        lf_after_fs: flags & 2 != 0,
        whitespace_between_frames: flags & 4 != 0,
        junk_before_start: flags & 8 != 0,
    };
    let mut config = FramingConfig::MLLP.with_tolerances(tolerances);
    if flags & 16 != 0 {
        config = FramingConfig::new(0x0B, &[0x1C])
            .expect("VT/FS is a valid framing")
            .with_tolerances(tolerances);
    }
    let config = config
        .with_max_frame_len(usize::from(limit) + 1)
        .expect("a non-zero limit is valid");
    let whole = run(config, Scanner::new(), &[stream]);
    let mut chunks = Vec::new();
    let mut rest = stream;
    let mut rng = XorShift::new(u64::from(cut_seed));
    while !rest.is_empty() {
        let n = rng.below(9).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        chunks.push(chunk);
        rest = tail;
    }
    let engine = Engine::ALL[usize::from(cut_seed) % Engine::ALL.len()];
    let scanner = Scanner::with_engine(engine).unwrap_or_default();
    assert_eq!(
        run(config, scanner, &chunks),
        whole,
        "chunking changed the result"
    );
}

type Run = (
    Vec<Vec<u8>>,
    Vec<crate::frame::Event>,
    Option<crate::FrameError>,
);

fn run(config: FramingConfig, scanner: Scanner, chunks: &[&[u8]]) -> Run {
    let mut deframer = Deframer::with_scanner(config, scanner);
    let mut buf = Vec::new();
    let (mut payloads, mut events) = (Vec::new(), Vec::new());
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match deframer.decode(&buf) {
                Ok(Some(frame)) => {
                    let payload = frame.payload(&buf);
                    assert!(payload.len() <= config.max_frame_len());
                    assert!(!payload.contains(&config.start()));
                    assert!(!payload.contains(&config.end()[0]));
                    payloads.push(payload.to_vec());
                    events.extend(std::iter::from_fn(|| deframer.poll_event()));
                }
                Ok(None) => break,
                Err(e) => {
                    events.extend(std::iter::from_fn(|| deframer.poll_event()));
                    return (payloads, events, Some(e));
                }
            }
        }
        events.extend(std::iter::from_fn(|| deframer.poll_event()));
        assert_eq!(
            deframer.stats().events_dropped,
            0,
            "events polled after every decode"
        );
        deframer.compact(&mut buf);
        assert!(
            buf.len() <= config.max_frame_len() + 2,
            "kept {} bytes",
            buf.len()
        );
        events.extend(std::iter::from_fn(|| deframer.poll_event()));
    }
    let end = deframer.finish().err();
    events.extend(std::iter::from_fn(|| deframer.poll_event()));
    (payloads, events, end)
}

/// Reads `data` as an HL7 message and walks every level of it, then checks: every scan
/// engine agrees with the scalar reference on it; the fast header view agrees with the full
/// view; escape encoding round-trips every field; normalisation is idempotent; and an ACK
/// built for the message parses with MSA-2 equal to its MSH-10.
pub fn hl7(data: &[u8]) {
    for engine in Engine::ALL {
        if let Some(s) = Scanner::with_engine(engine) {
            assert_eq!(
                s.find_either(data, 0x0B, 0x1C),
                scalar::find_either(data, 0x0B, 0x1C)
            );
            assert_eq!(
                s.find_pair(data, 0x1C, 0x0D),
                scalar::find_pair(data, 0x1C, 0x0D)
            );
        }
    }
    let mut normalized = data.to_vec();
    if hl7::normalize_segment_terminators(&mut normalized).is_ok() {
        let once = normalized.clone();
        assert_eq!(hl7::normalize_segment_terminators(&mut normalized), Ok(0));
        assert_eq!(normalized, once, "normalisation is idempotent");
    }
    let Ok(message) = Message::parse(data) else {
        assert!(
            Msh::parse(data).is_err(),
            "Msh and Message disagree on validity"
        );
        return;
    };
    let msh = message.msh();
    let delimiters = message.delimiters();
    let mut scratch = Vec::new();
    for segment in message.segments() {
        for field in segment.fields() {
            for repetition in field.repetitions() {
                for component in repetition.components() {
                    for sub in component.subcomponents() {
                        scratch.clear();
                        if hl7::encode_escapes(sub, &delimiters, &mut scratch).is_ok() {
                            let mut back = Vec::new();
                            hl7::decode_escapes(&scratch, &delimiters, &mut back);
                            assert_eq!(back, sub, "escape round trip");
                        }
                    }
                }
            }
        }
    }
    // The header view ends MSH at a LF as well; where the header has none, both views agree.
    let first = message.segments().next();
    if first.is_some_and(|s| s.as_bytes() == msh.as_bytes()) {
        for n in 0..30 {
            let from_view = first.and_then(|s| s.field(n)).map(|f| f.as_bytes());
            assert_eq!(msh.field(n).map(|f| f.as_bytes()), from_view, "MSH-{n}");
        }
    }
    let params = AckParams {
        timestamp: b"20260101000000",
        control_id: b"ACK1",
        text: Some(b"t|x"),
        error: None,
    };
    let mut out = Vec::new();
    ack::write_ack(msh, AckCode::AE, &params, &mut out);
    let parsed = ack::parse_ack(&out).expect("an ACK we built must parse");
    assert_eq!(parsed.code, AckCode::AE);
    assert_eq!(parsed.acknowledged_id, msh.raw_field(10), "MSA-2 = MSH-10");
    // The ACK echoes raw header fields, so it can be framed whenever the message could.
    let frameable = |b: &[u8]| !b.contains(&0x0B) && !b.contains(&0x1C);
    assert!(
        !frameable(data) || frameable(&out),
        "an ACK to a frameable message must be frameable"
    );
}

#[cfg(test)]
mod tests {
    /// Found by `fuzz/deframe` in its first 30 s: a read holding more than
    /// `EVENT_QUEUE_LIMIT` tolerance events (many tiny frames ended by a lone FS), decoded
    /// whole, lost the oldest events when the harness polled only once per read. The fix was
    /// the contract: poll after every `decode` (each call records at most
    /// `EVENTS_PER_DECODE`), now followed by every driver and asserted by the harness.
    #[test]
    fn regression_events_survive_many_frames_in_one_read() {
        let input =
            b"M\r\r\x0b\x1c\x03\x0bx\x1c\xad\r\x0b\x1c\x03\x0b\x1c~\x0b\x1c\xad\x1c\x0b\x1c~\
\x0b\x1c\xfe\x0b\x1c\x00\r\x0b\x1c\xad\r\x0b\x1c\x00\r\x0b\x1c\x00\r\x0b\x1c\x00\r\x0b\x1c\x00\
\x0b\x1c\x00\r\x0b\x1c\x00\x0b\x1c\x00\r\x0b\x1c\x00\r";
        super::deframe(input);
    }
}
