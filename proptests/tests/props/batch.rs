//! Batch splitting returns every message, in order and byte for byte, and checks the counts;
//! joined and acknowledgement batches split back into what was written.

use std::ops::Range;

use mllp::BatchError;
use mllp::ack::{AckCode, AckParams, write_ack};
use mllp::batch::{
    AckBatchParams, BatchHeaders, LineEndings, is_batch, split_batch, write_ack_batch, write_batch,
};
use mllp::hl7::{Delimiters, Msh, decode_escapes};
use proptest::prelude::*;

fn message(batch: usize, index: usize, segments: usize) -> Vec<u8> {
    let mut m =
        format!("MSH|^~\\&|LAB|H|EHR|C|2026||ORU^R01|B{batch}M{index}|P|2.5\r").into_bytes();
    for s in 0..segments {
        m.extend_from_slice(format!("OBX|{s}|TX|||text {s}\r").as_bytes());
    }
    m
}

/// A file: optional FHS/FTS, and per batch optional BHS/BTS, with correct counts.
fn render(
    batches: &[Vec<usize>],
    file_headers: bool,
    batch_headers: bool,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut file = Vec::new();
    let mut messages = Vec::new();
    if file_headers {
        file.extend_from_slice(b"FHS|^~\\&|LAB\r");
    }
    for (b, batch) in batches.iter().enumerate() {
        if batch_headers {
            file.extend_from_slice(b"BHS|^~\\&|LAB\r");
        }
        for (i, &segments) in batch.iter().enumerate() {
            let m = message(b, i, segments);
            file.extend_from_slice(&m);
            messages.push(m);
        }
        if batch_headers {
            file.extend_from_slice(format!("BTS|{}\r", batch.len()).as_bytes());
        }
    }
    if file_headers {
        file.extend_from_slice(format!("FTS|{}\r", batches.len()).as_bytes());
    }
    (file, messages)
}

/// Field `n` (3 or more) of a header segment, raw.
fn header_field(segment: &[u8], fs: u8, n: usize) -> &[u8] {
    segment.split(|&b| b == fs).nth(n - 1).unwrap_or_default()
}

fn slice(bytes: &[u8], range: Option<Range<usize>>) -> Option<&[u8]> {
    range.map(|r| &bytes[r])
}

fn decoded(field: &[u8]) -> Vec<u8> {
    let mut text = Vec::new();
    decode_escapes(field, &Delimiters::DEFAULT, &mut text);
    text
}

proptest! {
    #![proptest_config(proptests::config(256))]

    #[test]
    fn prop_batch_split_preserves_messages_and_counts(
        batches in prop::collection::vec(prop::collection::vec(0..4usize, 1..6), 1..5),
        file_headers in any::<bool>(),
    ) {
        let (file, messages) = render(&batches, file_headers, true);
        let split = split_batch(&file, LineEndings::Cr).unwrap();
        let got: Vec<&[u8]> = split.messages.iter().map(|r| &file[r.clone()]).collect();
        prop_assert_eq!(got, messages.iter().map(Vec::as_slice).collect::<Vec<_>>());
        prop_assert_eq!(split.groups.len(), batches.len());
        for (group, batch) in split.groups.iter().zip(&batches) {
            prop_assert_eq!(group.messages.len(), batch.len());
        }
        prop_assert_eq!(split.file_header.is_some(), file_headers);
    }

    #[test]
    fn prop_batch_wrong_count_is_caught(
        batches in prop::collection::vec(prop::collection::vec(0..3usize, 1..5), 1..4),
        which in any::<prop::sample::Index>(),
        delta in 1..3u64,
    ) {
        let (file, _) = render(&batches, false, true);
        let target = which.index(batches.len());
        // Rewrite the target batch's BTS-1 to a wrong count.
        let text = String::from_utf8(file).unwrap();
        let mut seen = 0;
        let mut rewritten = String::new();
        for line in text.split_inclusive('\r') {
            if line.starts_with("BTS|") {
                if seen == target {
                    let n: u64 = line[4..line.len() - 1].parse().unwrap();
                    rewritten.push_str(&format!("BTS|{}\r", n + delta));
                    seen += 1;
                    continue;
                }
                seen += 1;
            }
            rewritten.push_str(line);
        }
        let result = split_batch(rewritten.as_bytes(), LineEndings::Cr);
        let mismatch = matches!(result, Err(BatchError::BatchCountMismatch { declared, found, .. }) if declared == found + delta);
        prop_assert!(mismatch, "{result:?}");
    }

    #[test]
    fn prop_batch_plain_files_split_on_msh(counts in prop::collection::vec(0..4usize, 1..8), lf in any::<bool>()) {
        let (mut file, messages) = render(&[counts], false, false);
        let mut expected = messages;
        if lf {
            for b in file.iter_mut() {
                if *b == b'\r' { *b = b'\n'; }
            }
            for m in &mut expected {
                for b in m.iter_mut() {
                    if *b == b'\r' { *b = b'\n'; }
                }
            }
        }
        let split = split_batch(&file, LineEndings::CrOrLf).unwrap();
        let got: Vec<Vec<u8>> = split.messages.iter().map(|r| file[r.clone()].to_vec()).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn prop_batch_never_panics(data in proptests::biased_bytes(500)) {
        let _ = split_batch(&data, LineEndings::Cr);
        let _ = split_batch(&data, LineEndings::CrOrLf);
    }

    #[test]
    fn prop_batch_write_batch_splits_back(
        messages in prop::collection::vec((proptests::message(), any::<bool>()), 1..6),
        file in any::<bool>(),
        batch in any::<bool>(),
        application in proptests::biased_bytes(12),
        timestamp in proptests::biased_bytes(12),
        control_id in proptests::biased_bytes(12),
    ) {
        // Some messages lose their last CR: the joiner puts it back.
        let rendered: Vec<Vec<u8>> = messages.iter().map(|(m, _)| m.render()).collect();
        let given: Vec<&[u8]> = rendered
            .iter()
            .zip(&messages)
            .map(|(m, (_, bare))| if *bare { &m[..m.len() - 1] } else { &m[..] })
            .collect();
        let headers = BatchHeaders {
            file,
            batch,
            sending_application: &application,
            sending_facility: b"",
            timestamp: &timestamp,
            control_id: &control_id,
        };
        let mut out = Vec::new();
        write_batch(&given, headers, &mut out);
        prop_assert_eq!(is_batch(&out), file || batch);
        let split = split_batch(&out, LineEndings::Cr).unwrap();
        let got: Vec<&[u8]> = split.messages.iter().map(|r| &out[r.clone()]).collect();
        prop_assert_eq!(got, rendered.iter().map(Vec::as_slice).collect::<Vec<_>>());
        prop_assert_eq!(split.groups.len(), 1);
        prop_assert_eq!(split.file_header.is_some(), file);
        prop_assert_eq!(split.file_trailer.is_some(), file);
        prop_assert_eq!(split.groups[0].header.is_some(), batch);
        prop_assert_eq!(split.groups[0].trailer.is_some(), batch);
        let headers = [split.file_header.clone(), split.groups[0].header.clone()];
        for header in headers.into_iter().flatten() {
            let header = &out[header];
            prop_assert_eq!(decoded(header_field(header, b'|', 3)), &application[..]);
            prop_assert_eq!(decoded(header_field(header, b'|', 7)), &timestamp[..]);
            prop_assert_eq!(decoded(header_field(header, b'|', 11)), &control_id[..]);
        }
    }

    #[test]
    fn prop_batch_ack_batch_holds_the_due_acks(
        groups in prop::collection::vec(
            prop::collection::vec((proptests::message(), any::<bool>(), any::<bool>()), 1..4),
            1..4,
        ),
        file in any::<bool>(),
        batch in any::<bool>(),
    ) {
        // The input: one write_batch per group (BHS-11 `B<group>`), inside an optional FHS.
        let mut input = Vec::new();
        if file {
            input.extend_from_slice(b"FHS|^~\\&|LAB|H|EHR|C|2026||||F1\r");
        }
        let mut part = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let rendered: Vec<Vec<u8>> = group.iter().map(|(m, _, _)| m.render()).collect();
            let messages: Vec<&[u8]> = rendered.iter().map(Vec::as_slice).collect();
            let control_id = format!("B{g}");
            let headers = BatchHeaders {
                batch,
                sending_application: b"LAB",
                control_id: control_id.as_bytes(),
                ..BatchHeaders::default()
            };
            write_batch(&messages, headers, &mut part);
            input.extend_from_slice(&part);
        }
        if file {
            input.extend_from_slice(format!("FTS|{}\r", if batch { groups.len() } else { 1 }).as_bytes());
        }
        let inbound = split_batch(&input, LineEndings::Cr).unwrap();

        // One ACK per message where due; some without their last CR.
        let flags: Vec<(bool, bool)> = groups.iter().flatten().map(|&(_, due, bare)| (due, bare)).collect();
        prop_assert_eq!(flags.len(), inbound.messages.len());
        let mut written = Vec::new();
        for (i, range) in inbound.messages.iter().enumerate() {
            let msh = Msh::parse_lenient(&input[range.clone()]).unwrap();
            let mut ack = Vec::new();
            let control_id = format!("A{i}");
            write_ack(&msh, AckCode::AA, &AckParams::new(b"2026", control_id.as_bytes()), &mut ack);
            written.push(ack);
        }
        let acks: Vec<Option<&[u8]>> = written
            .iter()
            .zip(&flags)
            .map(|(ack, &(due, bare))| due.then_some(if bare { &ack[..ack.len() - 1] } else { &ack[..] }))
            .collect();
        let mut out = Vec::new();
        write_ack_batch(&input, &inbound, &acks, &AckBatchParams::new(b"2027", b"R1"), &mut out);
        prop_assert!(is_batch(&out));

        let due: Vec<&[u8]> = written.iter().zip(&flags).filter(|(_, f)| f.0).map(|(a, _)| &a[..]).collect();
        let answer = match split_batch(&out, LineEndings::Cr) {
            Err(BatchError::Empty) if due.is_empty() => return Ok(()),
            other => other.unwrap(),
        };
        let got: Vec<&[u8]> = answer.messages.iter().map(|r| &out[r.clone()]).collect();
        prop_assert_eq!(got, due);
        prop_assert_eq!(answer.delimiters, inbound.delimiters);
        let fs = inbound.delimiters.field;
        prop_assert_eq!(answer.groups.len(), inbound.groups.len());
        for (answered, asked) in answer.groups.iter().zip(&inbound.groups) {
            let count = flags[asked.messages.clone()].iter().filter(|f| f.0).count();
            prop_assert_eq!(answered.messages.len(), count);
            let trailer = format!("BTS{}{count}", fs as char);
            prop_assert_eq!(slice(&out, answered.trailer.clone()), Some(trailer.as_bytes()));
            let bhs = slice(&out, answered.header.clone()).unwrap();
            let reference = slice(&input, asked.header.clone()).map_or(&[][..], |h| header_field(h, fs, 11));
            prop_assert_eq!(header_field(bhs, fs, 12), reference);
            prop_assert_eq!(header_field(bhs, fs, 11), b"R1");
        }
        prop_assert_eq!(answer.file_header.is_some(), file);
        if file {
            let fhs = slice(&out, answer.file_header.clone()).unwrap();
            prop_assert_eq!(fhs, &b"FHS|^~\\&|EHR|C|LAB|H|2027||||R1|F1"[..]);
            let trailer = format!("FTS|{}", inbound.groups.len());
            prop_assert_eq!(slice(&out, answer.file_trailer.clone()), Some(trailer.as_bytes()));
        }
    }
}
