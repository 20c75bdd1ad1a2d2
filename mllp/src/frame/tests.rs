//! Unit tests of the deframer: each rule on a hand-written stream, and every stream again split
//! at every byte (the result must not depend on how the bytes arrive).

use super::*;
use crate::scan::{Engine, Scanner};

/// What decoding a whole stream produced: payloads, events, and the final error if any.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    payloads: Vec<Vec<u8>>,
    offsets: Vec<u64>,
    events: Vec<Event>,
    error: Option<FrameError>,
}

/// Feeds `chunks` one after another, compacting between reads like a driver does, and checks
/// the memory bound after every `Ok(None)`.
fn run_chunks(config: FramingConfig, scanner: Scanner, chunks: &[&[u8]]) -> Outcome {
    let mut deframer = Deframer::with_scanner(config, scanner);
    let mut buf = Vec::new();
    let mut out = Outcome {
        payloads: vec![],
        offsets: vec![],
        events: vec![],
        error: None,
    };
    let drain_events = |d: &mut Deframer, out: &mut Outcome| {
        while let Some(e) = d.poll_event() {
            out.events.push(e);
        }
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match deframer.decode(&buf) {
                Ok(Some(frame)) => {
                    out.payloads.push(frame.payload(&buf).to_vec());
                    out.offsets.push(frame.offset);
                    drain_events(&mut deframer, &mut out);
                }
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    drain_events(&mut deframer, &mut out);
                    return out;
                }
            }
        }
        drain_events(&mut deframer, &mut out);
        assert_eq!(
            deframer.stats().events_dropped,
            0,
            "polled after every decode"
        );
        deframer.compact(&mut buf);
        assert!(
            buf.len() <= config.max_frame_len() + 2,
            "kept {} bytes with a limit of {}",
            buf.len(),
            config.max_frame_len()
        );
        drain_events(&mut deframer, &mut out);
    }
    if let Err(e) = deframer.finish() {
        out.error = Some(e);
    }
    drain_events(&mut deframer, &mut out);
    out
}

fn run(config: FramingConfig, stream: &[u8]) -> Outcome {
    run_chunks(config, Scanner::new(), &[stream])
}

/// Decodes `stream` whole, then split at every single position, then one byte at a time, with
/// every engine; all must agree. Returns the whole-stream outcome.
fn run_all_splits(config: FramingConfig, stream: &[u8]) -> Outcome {
    let whole = run(config, stream);
    for engine in Engine::ALL {
        let Some(scanner) = Scanner::with_engine(engine) else {
            continue;
        };
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(
                run_chunks(config, scanner, &[a, b]),
                whole,
                "{engine:?} cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(
            run_chunks(config, scanner, &bytes),
            whole,
            "{engine:?} byte by byte"
        );
    }
    whole
}

fn tolerant(t: Tolerances) -> FramingConfig {
    FramingConfig::MLLP.with_tolerances(t)
}

const A: &[u8] = b"MSH|^~\\&|A|\rPID|1\r";
const B: &[u8] = b"MSH|^~\\&|B|\r";

fn framed(payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        FramingConfig::MLLP.encode(p, &mut out).unwrap();
    }
    out
}

#[test]
fn decodes_back_to_back_frames() {
    let stream = framed(&[A, B, b""]);
    let out = run_all_splits(FramingConfig::MLLP, &stream);
    assert_eq!(out.payloads, [A, B, b""]);
    assert_eq!(
        out.offsets,
        [0, A.len() as u64 + 3, (A.len() + B.len()) as u64 + 6]
    );
    assert!(out.events.is_empty());
    assert_eq!(out.error, None);
}

#[test]
fn empty_stream_is_fine() {
    assert_eq!(run_all_splits(FramingConfig::MLLP, b"").error, None);
}

#[test]
fn strict_rejects_data_outside_frame() {
    let mut stream = framed(&[A]);
    stream.extend_from_slice(b"\r\n");
    let out = run_all_splits(FramingConfig::MLLP, &stream);
    assert_eq!(out.payloads, [A]);
    let offset = A.len() as u64 + 3;
    assert_eq!(
        out.error,
        Some(FrameError::DataOutsideFrame {
            offset,
            byte: b'\r'
        })
    );
}

#[test]
fn strict_rejects_junk_before_first_frame() {
    let out = run_all_splits(FramingConfig::MLLP, b"x\x0bA\x1c\r");
    assert_eq!(
        out.error,
        Some(FrameError::DataOutsideFrame {
            offset: 0,
            byte: b'x'
        })
    );
    assert!(out.payloads.is_empty());
}

#[test]
fn start_byte_inside_frame_is_an_error() {
    let out = run_all_splits(FramingConfig::MLLP, b"\x0bMSH|\x0bMSH|\x1c\r");
    assert_eq!(
        out.error,
        Some(FrameError::StartInsideFrame {
            offset: 5,
            frame_offset: 0
        })
    );
}

#[test]
fn bad_trailer_is_an_error_when_strict() {
    let out = run_all_splits(FramingConfig::MLLP, b"\x0bAB\x1cX");
    assert_eq!(
        out.error,
        Some(FrameError::BadTrailer {
            offset: 4,
            found: b'X'
        })
    );
    let out = run_all_splits(FramingConfig::MLLP, b"\x0bAB\x1c\n");
    assert_eq!(
        out.error,
        Some(FrameError::BadTrailer {
            offset: 4,
            found: b'\n'
        })
    );
}

#[test]
fn truncated_stream_is_an_error() {
    let out = run_all_splits(FramingConfig::MLLP, b"\x0bAB\x1c\r\x0bMSH|");
    assert_eq!(out.payloads, [b"AB"]);
    assert_eq!(
        out.error,
        Some(FrameError::Truncated {
            frame_offset: 5,
            buffered: 4
        })
    );
    // A lone FS at the end is still an unfinished frame when strict.
    let out = run_all_splits(FramingConfig::MLLP, b"\x0bAB\x1c");
    assert_eq!(
        out.error,
        Some(FrameError::Truncated {
            frame_offset: 0,
            buffered: 2
        })
    );
}

#[test]
fn oversize_is_detected_at_the_first_excess_byte() {
    let config = FramingConfig::MLLP.with_max_frame_len(4).unwrap();
    // Exactly the limit is fine.
    assert_eq!(
        run_all_splits(config, b"\x0bABCD\x1c\r").payloads,
        [b"ABCD"]
    );
    // One more byte is an error, even before the end arrives.
    let out = run_all_splits(config, b"\x0bABCDE");
    assert_eq!(
        out.error,
        Some(FrameError::Oversize {
            frame_offset: 0,
            limit: 4
        })
    );
    let out = run_all_splits(config, b"\x0bAB\x1c\r\x0bABCDEFGHIJ\x1c\r");
    assert_eq!(out.payloads, [b"AB"]);
    assert_eq!(
        out.error,
        Some(FrameError::Oversize {
            frame_offset: 5,
            limit: 4
        })
    );
}

#[test]
fn oversize_stops_buffering_a_huge_frame() {
    let config = FramingConfig::MLLP.with_max_frame_len(1000).unwrap();
    let mut deframer = Deframer::new(config);
    let mut buf = vec![VT];
    let mut error = None;
    for _ in 0..100 {
        buf.extend_from_slice(&[b'x'; 64]);
        match deframer.decode(&buf) {
            Ok(None) => deframer.compact(&mut buf),
            Ok(Some(_)) => panic!("no frame expected"),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert_eq!(
        error,
        Some(FrameError::Oversize {
            frame_offset: 0,
            limit: 1000
        })
    );
    assert!(buf.len() <= 1000 + 64 + 1, "buffered {}", buf.len());
}

#[test]
fn errors_are_sticky() {
    let mut deframer = Deframer::new(FramingConfig::MLLP);
    let first = deframer.decode(b"x").unwrap_err();
    assert_eq!(deframer.decode(b"x\x0bA\x1c\r"), Err(first));
    assert_eq!(deframer.finish(), Err(first));
}

#[test]
fn fs_without_cr_tolerated() {
    let config = tolerant(Tolerances {
        fs_without_cr: true,
        ..Tolerances::STRICT
    });
    let out = run_all_splits(config, b"\x0bA\x1c\x0bB\x1c\r\x0bC\x1c");
    assert_eq!(out.payloads, [b"A", b"B", b"C"]);
    assert_eq!(
        out.events,
        [
            Event {
                code: EventCode::FsWithoutCr,
                offset: 2,
                len: 1
            },
            Event {
                code: EventCode::FsWithoutCr,
                offset: 9,
                len: 1
            },
        ]
    );
    assert_eq!(out.error, None);
}

#[test]
fn fs_without_cr_completes_the_frame_without_waiting() {
    // A sender that sends VT … FS and then waits for the ACK must get its frame.
    let config = tolerant(Tolerances {
        fs_without_cr: true,
        ..Tolerances::STRICT
    });
    let mut deframer = Deframer::new(config);
    let frame = deframer
        .decode(b"\x0bMSH|\x1c")
        .unwrap()
        .expect("frame at FS");
    assert_eq!(frame.range, 1..5);
    // The CR that follows later is the trailer, not noise.
    assert_eq!(deframer.decode(b"\x0bMSH|\x1c\r"), Ok(None));
    deframer.finish().unwrap();
    assert_eq!(deframer.poll_event(), None);
}

#[test]
fn lf_after_fs_tolerated() {
    let config = tolerant(Tolerances {
        lf_after_fs: true,
        ..Tolerances::STRICT
    });
    let out = run_all_splits(config, b"\x0bA\x1c\n\x0bB\x1c\r");
    assert_eq!(out.payloads, [b"A", b"B"]);
    assert_eq!(
        out.events,
        [Event {
            code: EventCode::LfAfterFs,
            offset: 3,
            len: 1
        }]
    );
}

#[test]
fn lf_after_fs_with_fs_without_cr() {
    let config = tolerant(Tolerances {
        lf_after_fs: true,
        fs_without_cr: true,
        ..Tolerances::STRICT
    });
    let out = run_all_splits(config, b"\x0bA\x1c\n\x0bB\x1c");
    assert_eq!(out.payloads, [b"A", b"B"]);
    assert_eq!(
        out.events,
        [
            Event {
                code: EventCode::LfAfterFs,
                offset: 3,
                len: 1
            },
            Event {
                code: EventCode::FsWithoutCr,
                offset: 6,
                len: 1
            },
        ]
    );
}

#[test]
fn whitespace_between_frames_tolerated() {
    let config = tolerant(Tolerances {
        whitespace_between_frames: true,
        ..Tolerances::STRICT
    });
    let out = run_all_splits(config, b" \r\n\x0bA\x1c\r\r\n\x0bB\x1c\r\n");
    assert_eq!(out.payloads, [b"A", b"B"]);
    let ws = EventCode::WhitespaceBetweenFrames;
    assert_eq!(
        out.events,
        [
            Event {
                code: ws,
                offset: 0,
                len: 3
            },
            Event {
                code: ws,
                offset: 7,
                len: 2
            },
            Event {
                code: ws,
                offset: 13,
                len: 1
            },
        ]
    );
    // Other junk is still an error.
    let out = run_all_splits(config, b"\r\nx\x0bA\x1c\r");
    assert_eq!(
        out.error,
        Some(FrameError::DataOutsideFrame {
            offset: 2,
            byte: b'x'
        })
    );
}

#[test]
fn junk_before_start_tolerated() {
    let config = tolerant(Tolerances {
        junk_before_start: true,
        ..Tolerances::STRICT
    });
    let out = run_all_splits(config, b"GET / HTTP/1.0\r\n\x0bA\x1c\rxx\x0bB\x1c\rtail");
    assert_eq!(out.payloads, [b"A", b"B"]);
    let junk = EventCode::JunkBeforeStart;
    assert_eq!(
        out.events,
        [
            Event {
                code: junk,
                offset: 0,
                len: 16
            },
            Event {
                code: junk,
                offset: 20,
                len: 2
            },
            Event {
                code: junk,
                offset: 26,
                len: 4
            },
        ]
    );
}

#[test]
fn whitespace_then_junk_are_two_runs() {
    let config = tolerant(Tolerances::ALL);
    let out = run_all_splits(config, b"\r\nxy \x0bA\x1c\r");
    assert_eq!(out.payloads, [b"A"]);
    assert_eq!(
        out.events,
        [
            Event {
                code: EventCode::WhitespaceBetweenFrames,
                offset: 0,
                len: 2
            },
            Event {
                code: EventCode::JunkBeforeStart,
                offset: 2,
                len: 3
            },
        ]
    );
}

#[test]
fn noise_is_discardable_as_it_is_skipped() {
    let config = tolerant(Tolerances::ALL);
    let mut deframer = Deframer::new(config);
    let mut buf = Vec::new();
    for _ in 0..1000 {
        buf.extend_from_slice(b"junk junk junk ");
        assert_eq!(deframer.decode(&buf), Ok(None));
        deframer.compact(&mut buf);
        assert!(buf.is_empty());
    }
    assert_eq!(deframer.stream_position(), 15_000);
}

#[test]
fn custom_framing_bytes() {
    let config = FramingConfig::new(0x02, &[0x03]).unwrap();
    let out = run_all_splits(config, b"\x02MSH|A\x03\x02MSH|B\x03");
    assert_eq!(out.payloads, [b"MSH|A", b"MSH|B"]);
    assert_eq!(
        FramingConfig::new(0x02, &[0x03, CR]).unwrap().end(),
        [0x03, CR]
    );
    assert!(FramingConfig::new(VT, &[FS, CR]).unwrap().has_mllp_bytes());
    assert!(!FramingConfig::new(VT, &[FS]).unwrap().has_mllp_bytes());
    assert!(!config.has_mllp_bytes());
    assert!(
        FramingConfig::MLLP
            .with_tolerances(Tolerances::ALL)
            .has_mllp_bytes()
    );
    assert_eq!(
        FramingConfig::new(0x02, &[0x02]).unwrap_err(),
        ConfigError::StartByteInEndSequence { byte: 0x02 }
    );
    // Bytes a message can hold: delimiters and data, line breaks where they would end frames.
    for (start, end, byte) in [
        (b'<', &b">"[..], b'<'),
        (VT, b"|", b'|'),
        (VT, b"A", b'A'),
        (0x80, &[FS][..], 0x80),
        (LF, &[FS], LF),
        (VT, &[LF], LF),
        (CR, &[FS], CR),
        (VT, &[CR, FS], CR),
        (VT, &[FS, LF], LF),
    ] {
        assert_eq!(
            FramingConfig::new(start, end).unwrap_err(),
            ConfigError::NotAFrameByte { byte },
            "{start:#04x} {end:02x?}"
        );
    }
    assert_eq!(
        FramingConfig::new(VT, &[FS, CR, LF]).unwrap_err(),
        ConfigError::EndSequenceLength { len: 3 }
    );
    assert_eq!(
        FramingConfig::new(VT, &[]).unwrap_err(),
        ConfigError::EndSequenceLength { len: 0 }
    );
    assert_eq!(
        FramingConfig::MLLP.with_max_frame_len(0),
        Err(ConfigError::ZeroMaxFrameLength)
    );
}

#[test]
fn encoder_refuses_framing_bytes_and_oversize() {
    let mut out = Vec::new();
    assert_eq!(
        FramingConfig::MLLP.encode(b"MSH|\x1c", &mut out),
        Err(EncodeError::FramingByteInPayload {
            offset: 4,
            byte: FS
        })
    );
    assert_eq!(
        FramingConfig::MLLP.encode(b"\x0bMSH|", &mut out),
        Err(EncodeError::FramingByteInPayload {
            offset: 0,
            byte: VT
        })
    );
    assert!(out.is_empty(), "nothing written on error");
    let small = FramingConfig::MLLP.with_max_frame_len(3).unwrap();
    assert_eq!(
        small.encode(b"abcd", &mut out),
        Err(EncodeError::Oversize { len: 4, limit: 3 })
    );
    // CR is the segment terminator and is fine inside a payload.
    assert_eq!(encode(b"A\rB\r").unwrap(), b"\x0bA\rB\r\x1c\r");
}

#[test]
fn frame_in_progress_reports_the_start() {
    let mut deframer = Deframer::new(FramingConfig::MLLP);
    assert_eq!(deframer.frame_in_progress(), None);
    let mut buf = framed(&[A]);
    buf.extend_from_slice(b"\x0bMSH");
    assert!(deframer.decode(&buf).unwrap().is_some());
    assert_eq!(deframer.decode(&buf), Ok(None));
    assert_eq!(deframer.frame_in_progress(), Some(A.len() as u64 + 3));
    deframer.compact(&mut buf);
    assert_eq!(buf, b"\x0bMSH");
    assert_eq!(deframer.frame_in_progress(), Some(A.len() as u64 + 3));
}

#[test]
fn reserve_for_read_compacts_only_when_cheap_or_needed() {
    let mut deframer = Deframer::new(FramingConfig::MLLP);
    let mut buf = Vec::with_capacity(64);
    let mut frames = 0;
    let (mut compactions, mut skipped) = (0, 0);
    let stream = framed(&[B, B, B, B, B, B, B, B]);
    for chunk in stream.chunks(7) {
        let (len, discardable, spare) = (
            buf.len(),
            deframer.discardable(),
            buf.capacity() - buf.len(),
        );
        let kept = len - discardable;
        deframer.reserve_for_read(&mut buf, chunk.len());
        let due = discardable > 0 && (discardable >= kept * COMPACT_RATIO || spare < chunk.len());
        if due {
            assert_eq!(buf.len(), kept, "compacted");
            compactions += 1;
        } else {
            assert_eq!(buf.len(), len, "left alone");
            skipped += usize::from(discardable > 0);
        }
        assert!(buf.capacity() - buf.len() >= chunk.len());
        buf.extend_from_slice(chunk);
        while let Some(frame) = deframer.decode(&buf).unwrap() {
            assert_eq!(frame.payload(&buf), B);
            frames += 1;
        }
    }
    assert_eq!(frames, 8);
    assert!(
        compactions > 0 && skipped > 0,
        "both paths taken: {compactions} {skipped}"
    );
    assert!(
        buf.capacity() <= 2 * 64,
        "grew only as needed: {}",
        buf.capacity()
    );
}

#[test]
fn stats_count_frames_bytes_and_events() {
    let config = tolerant(Tolerances::ALL);
    let mut deframer = Deframer::new(config);
    let stream = b"\r\n\x0bAB\x1c\r\x0bC\x1c\n";
    while deframer.decode(stream).unwrap().is_some() {}
    deframer.finish().unwrap();
    let stats = deframer.stats();
    assert_eq!((stats.frames, stats.payload_bytes), (2, 3));
    assert_eq!(stats.events(EventCode::WhitespaceBetweenFrames), 1);
    assert_eq!(stats.events(EventCode::LfAfterFs), 1);
    assert_eq!(stats.events(EventCode::FsWithoutCr), 0);
}

#[test]
fn event_queue_is_bounded_but_counts_stay_exact() {
    let config = tolerant(Tolerances::ALL);
    let mut deframer = Deframer::new(config);
    let mut stream = Vec::new();
    for _ in 0..100 {
        stream.extend_from_slice(b"x\x0bA\x1c\r");
    }
    while deframer.decode(&stream).unwrap().is_some() {}
    let stats = *deframer.stats();
    assert_eq!(stats.events(EventCode::JunkBeforeStart), 100);
    assert_eq!(stats.events_dropped, 100 - EVENT_QUEUE_LIMIT as u64);
    let mut polled = 0;
    while deframer.poll_event().is_some() {
        polled += 1;
    }
    assert_eq!(polled, EVENT_QUEUE_LIMIT);
}

#[test]
fn tolerance_names_round_trip() {
    for code in EventCode::ALL {
        let mut t = Tolerances::STRICT;
        assert!(t.enable(code.config_name()));
        assert_ne!(t, Tolerances::STRICT);
        assert!(code.as_str().starts_with("MLLP_"));
    }
    let mut strict = Tolerances::STRICT;
    assert!(!strict.enable("everything"));
}

#[test]
#[should_panic(expected = "exceeds the discardable prefix")]
fn discarding_too_much_is_a_caller_bug() {
    let mut deframer = Deframer::new(FramingConfig::MLLP);
    let _ = deframer.decode(b"\x0bAB");
    deframer.discard(1);
}
