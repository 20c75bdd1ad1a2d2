//! Batch splitting returns every message, in order and byte for byte, and checks the counts.

use mllp::BatchError;
use mllp::batch::{LineEndings, split_batch};
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
}
