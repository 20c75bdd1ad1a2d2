//! The deframer: encode→decode round trips, results independent of chunking, bounded memory.

use mllp::FrameError;
use mllp::frame::{Deframer, Event, FramingConfig, Tolerances};
use mllp::scan::{Engine, Scanner};
use proptest::prelude::*;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<(Vec<u8>, u64)>,
    events: Vec<Event>,
    error: Option<FrameError>,
    max_kept: usize,
}

fn decode(config: FramingConfig, scanner: Scanner, chunks: &[&[u8]]) -> Outcome {
    let mut deframer = Deframer::with_scanner(config, scanner);
    let mut buf = Vec::new();
    let mut out = Outcome {
        frames: vec![],
        events: vec![],
        error: None,
        max_kept: 0,
    };
    'stream: for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match deframer.decode(&buf) {
                Ok(Some(frame)) => {
                    out.frames
                        .push((frame.payload(&buf).to_vec(), frame.offset));
                    out.events
                        .extend(std::iter::from_fn(|| deframer.poll_event()));
                }
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    break 'stream;
                }
            }
        }
        out.events
            .extend(std::iter::from_fn(|| deframer.poll_event()));
        assert_eq!(
            deframer.stats().events_dropped,
            0,
            "polled after every decode"
        );
        deframer.compact(&mut buf);
        out.max_kept = out.max_kept.max(buf.len());
    }
    if out.error.is_none() {
        out.error = deframer.finish().err();
    }
    out.events
        .extend(std::iter::from_fn(|| deframer.poll_event()));
    out
}

fn framed(config: &FramingConfig, payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = Vec::new();
    for p in payloads {
        config
            .encode(p, &mut stream)
            .expect("generated payloads are frameable");
    }
    stream
}

fn tolerances() -> impl Strategy<Value = Tolerances> {
    any::<[bool; 4]>().prop_map(|[a, b, c, d]| Tolerances {
        fs_without_cr: a,
        lf_after_fs: b,
        whitespace_between_frames: c,
        junk_before_start: d,
    })
}

/// A stream of frames with sloppiness between and at the end of them: the kinds of noise
/// the tolerances exist for, and some they do not cover.
fn sloppy_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => proptests::payload(200).prop_map(|p| [&[0x0B][..], &p, b"\x1c\r"].concat()),
        1 => proptests::payload(50).prop_map(|p| [&[0x0B][..], &p, b"\x1c"].concat()),
        1 => proptests::payload(50).prop_map(|p| [&[0x0B][..], &p, b"\x1c\n"].concat()),
        1 => prop::sample::select(vec![&b"\r\n"[..], b" ", b"\r", b"\n\n"]).prop_map(<[u8]>::to_vec),
        1 => proptests::biased_bytes(10),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(proptests::config(256))]

    #[test]
    fn prop_frame_encode_decode_round_trips(payloads in prop::collection::vec(proptests::payload(300), 0..20)) {
        let config = FramingConfig::MLLP;
        let stream = framed(&config, &payloads);
        let out = decode(config, Scanner::new(), &[&stream]);
        prop_assert_eq!(out.error, None);
        let got: Vec<Vec<u8>> = out.frames.iter().map(|(p, _)| p.clone()).collect();
        prop_assert_eq!(&got, &payloads);
        // Offsets: each frame starts where the previous one's trailer ended.
        let mut offset = 0u64;
        for ((_, at), p) in out.frames.iter().zip(&payloads) {
            prop_assert_eq!(*at, offset);
            offset += p.len() as u64 + 3;
        }
    }

    #[test]
    fn prop_frame_decode_is_split_invariant(
        stream in sloppy_stream(),
        tolerances in tolerances(),
        cuts in proptests::chunk_lengths(),
        engine in prop::sample::select(Engine::ALL.to_vec()),
    ) {
        let config = FramingConfig::MLLP.with_tolerances(tolerances);
        let whole = decode(config, Scanner::new(), &[&stream]);
        let scanner = Scanner::with_engine(engine).unwrap_or_default();
        let chunks = proptests::chunk(&stream, &cuts);
        let mut split = decode(config, scanner, &chunks);
        split.max_kept = whole.max_kept;
        prop_assert_eq!(&split, &whole);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let mut trickled = decode(config, scanner, &bytes);
        trickled.max_kept = whole.max_kept;
        prop_assert_eq!(&trickled, &whole);
    }

    #[test]
    fn prop_frame_memory_is_bounded(
        stream in proptests::biased_bytes(3000),
        tolerances in tolerances(),
        max in 1..200usize,
        cuts in proptests::chunk_lengths(),
    ) {
        let config = FramingConfig::MLLP.with_tolerances(tolerances).with_max_frame_len(max).unwrap();
        let out = decode(config, Scanner::new(), &proptests::chunk(&stream, &cuts));
        prop_assert!(out.max_kept <= max + 2, "kept {} with limit {}", out.max_kept, max);
        for (payload, _) in &out.frames {
            prop_assert!(payload.len() <= max);
            prop_assert!(!payload.contains(&0x0B) && !payload.contains(&0x1C));
        }
    }

    #[test]
    fn prop_frame_fuzz_invariants_hold_on_arbitrary_bytes(data in proptests::biased_bytes(2000)) {
        mllp::fuzzing::deframe(&data);
    }

    #[test]
    fn prop_frame_encoder_refuses_exactly_framing_bytes(payload in proptests::biased_bytes(100)) {
        let mut out = Vec::new();
        let result = FramingConfig::MLLP.encode(&payload, &mut out);
        let bad = payload.iter().position(|&b| b == 0x0B || b == 0x1C);
        match bad {
            Some(offset) => prop_assert_eq!(
                result,
                Err(mllp::EncodeError::FramingByteInPayload { offset, byte: payload[offset] })
            ),
            None => prop_assert_eq!(result, Ok(())),
        }
    }
}

/// A long generated stream split at every single position gives the whole-stream result.
#[test]
fn prop_frame_every_single_cut_point() {
    let payloads: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            format!("MSH|^~\\&|A|B|C|D|2026||ORU^R01|{i}|P|2.5\rOBX|1|TX|||line {i}\r").into_bytes()
        })
        .collect();
    let config = FramingConfig::MLLP.with_tolerances(Tolerances::ALL);
    let mut stream = framed(&config, &payloads);
    stream.extend_from_slice(b"\r\n junk \x0bLAST\x1c");
    let whole = decode(config, Scanner::new(), &[&stream]);
    assert_eq!(whole.frames.len(), 21);
    for engine in Engine::ALL {
        let Some(scanner) = Scanner::with_engine(engine) else {
            continue;
        };
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let mut out = decode(config, scanner, &[a, b]);
            out.max_kept = whole.max_kept;
            assert_eq!(out, whole, "{engine:?} cut at {cut}");
        }
    }
}
