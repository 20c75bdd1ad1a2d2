//! Real public HL7 messages (`../shared/corpus`, see its MANIFEST): every file loads, frames
//! and deframes at random chunkings, parses its MSH where it has one (with MSH-9 and MSH-12
//! as the MANIFEST records them), splits into the number of messages the MANIFEST counts,
//! and holds the fuzz invariants; the malformed `nhapi/bad_*` inputs give typed errors.
//!
//! The corpus lives outside this repository. When it is absent (set `MLLP_CORPUS_DIR` to
//! point elsewhere) these tests say so and pass: the core's own fixtures cover the rules.

use std::path::PathBuf;

use mllp::batch::{LineEndings, split_batch};
use mllp::frame::{Deframer, FramingConfig};
use mllp::hl7::{self, Message, Msh};

fn corpus_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("MLLP_CORPUS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
    };
    if dir.join("MANIFEST.md").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "corpus not found at {} (set MLLP_CORPUS_DIR): skipped",
            dir.display()
        );
        None
    }
}

/// One row of the MANIFEST's file table.
#[derive(Debug)]
struct Row {
    file: String,
    message_type: String,
    version: String,
}

fn manifest(dir: &std::path::Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("MANIFEST.md")).expect("MANIFEST.md readable");
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|line| {
            // Cells are separated by " | "; a literal pipe inside a cell is written "\|".
            let cells: Vec<String> = line
                .replace("\\|", "\u{1}")
                .split(" | ")
                .map(|c| c.replace('\u{1}', "|"))
                .collect();
            let file = cells
                .first()?
                .trim_start_matches("| ")
                .trim_matches('`')
                .to_string();
            Some(Row {
                file,
                message_type: cells.get(2)?.to_string(),
                version: cells.get(3)?.to_string(),
            })
        })
        .collect()
}

fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for folder in std::fs::read_dir(dir).expect("corpus dir readable") {
        let folder = folder.unwrap().path();
        if !folder.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&folder).unwrap() {
            let path = file.unwrap().path();
            let name = format!(
                "{}/{}",
                folder.file_name().unwrap().to_string_lossy(),
                path.file_name().unwrap().to_string_lossy()
            );
            out.push((name, std::fs::read(&path).expect("corpus file readable")));
        }
    }
    out.sort();
    out
}

fn is_malformed(name: &str) -> bool {
    name.contains("/bad_")
}

#[test]
fn corpus_every_file_survives_framing_at_random_chunkings() {
    let Some(dir) = corpus_dir() else { return };
    let mut rng = mllp::rand::XorShift::new(0x2545_F491_4F6C_DD1D);
    let mut checked = 0;
    for (name, bytes) in files(&dir) {
        let config = FramingConfig::MLLP.with_max_frame_len(1 << 20).unwrap();
        let mut stream = Vec::new();
        if config.encode(&bytes, &mut stream).is_err() {
            // A payload with framing bytes in it cannot be sent over MLLP at all.
            assert!(bytes.contains(&0x0B) || bytes.contains(&0x1C), "{name}");
            continue;
        }
        stream.extend_from_slice(&stream.clone());
        for _ in 0..8 {
            let mut deframer = Deframer::new(config);
            let mut buf = Vec::new();
            let mut payloads = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = (rng.below(1500) + 1).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                while let Some(frame) = deframer.decode(&buf).unwrap() {
                    payloads.push(frame.payload(&buf).to_vec());
                }
                deframer.compact(&mut buf);
            }
            deframer.finish().unwrap();
            assert_eq!(payloads, [bytes.clone(), bytes.clone()], "{name}");
        }
        checked += 1;
    }
    assert!(checked > 100, "only {checked} corpus files framed");
}

#[test]
fn corpus_headers_match_the_manifest() {
    let Some(dir) = corpus_dir() else { return };
    let rows = manifest(&dir);
    assert!(rows.len() > 100, "MANIFEST has {} rows", rows.len());
    let mut compared = 0;
    for row in &rows {
        let bytes = std::fs::read(dir.join(&row.file)).expect("MANIFEST names an existing file");
        let starts_with_msh = hl7::strip_bom(&bytes).starts_with(b"MSH");
        if is_malformed(&row.file) || !starts_with_msh {
            continue;
        }
        let msh = Msh::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", row.file));
        let multi = row.message_type.contains('×');
        if !multi {
            assert_eq!(
                String::from_utf8_lossy(msh.raw_field(9)),
                row.message_type,
                "{}: MSH-9",
                row.file
            );
            assert_eq!(
                String::from_utf8_lossy(msh.version_id()),
                row.version,
                "{}: MSH-12",
                row.file
            );
            compared += 1;
        }
        // Every message-bearing file is readable whole once its terminators are repaired.
        let mut repaired = bytes.clone();
        hl7::normalize_segment_terminators(&mut repaired).unwrap();
        let message = Message::parse(&repaired).unwrap();
        for segment in message.segments() {
            assert!(
                hl7::starts_with_segment_id(segment.as_bytes(), message.delimiters().field)
                    || !segment.as_bytes().contains(&message.delimiters().field),
                "{}: odd segment {:?}",
                row.file,
                String::from_utf8_lossy(segment.as_bytes())
            );
        }
    }
    assert!(compared > 60, "only {compared} headers compared");
}

#[test]
fn corpus_multi_message_files_split_into_the_manifest_count() {
    let Some(dir) = corpus_dir() else { return };
    let mut checked = 0;
    for row in manifest(&dir) {
        let Some(count) = row
            .message_type
            .split_once("(×")
            .and_then(|(_, rest)| rest.trim_end_matches(')').parse::<usize>().ok())
        else {
            continue;
        };
        let bytes = std::fs::read(dir.join(&row.file)).unwrap();
        let batch = split_batch(&bytes, LineEndings::CrOrLf)
            .unwrap_or_else(|e| panic!("{}: {e}", row.file));
        assert_eq!(batch.messages.len(), count, "{}", row.file);
        for range in &batch.messages {
            Msh::parse(&bytes[range.clone()]).unwrap();
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} multi-message files");
}

#[test]
fn corpus_malformed_inputs_give_typed_errors() {
    let Some(dir) = corpus_dir() else { return };
    let mut bad = 0;
    for (name, bytes) in files(&dir) {
        // Every file, good or bad, holds the fuzz invariants.
        mllp::fuzzing::hl7(&bytes);
        let framed = [&[0x0B][..], &bytes, b"\x1c\r"].concat();
        mllp::fuzzing::deframe(&[[0u8, 255, 7].as_slice(), &framed].concat());
        if !is_malformed(&name) {
            continue;
        }
        bad += 1;
        // Reading them must end in a value or a typed error with a message, never a panic.
        for result in [
            Msh::parse(&bytes).map(|_| ()).map_err(|e| e.to_string()),
            Message::parse(&bytes)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            mllp::ack::parse_ack(&bytes)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            split_batch(&bytes, LineEndings::CrOrLf)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        ] {
            if let Err(message) = result {
                assert!(!message.is_empty(), "{name}");
            }
        }
    }
    assert!(bad >= 30, "only {bad} malformed inputs");
}
