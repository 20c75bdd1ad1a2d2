//! HL7 batch files: `[FHS] { [BHS] { MSH … } [BTS] } [FTS]`.
//!
//! [`split_batch`] finds every message of a file or batch and checks the counts its trailers
//! declare (BTS-1: messages in the batch; FTS-1: batches in the file). It copies nothing: the
//! result holds byte ranges of the input. A plain file of messages back to back, with or
//! without blank lines between them, is a batch with no headers.
//!
//! Headers and trailers are optional and checked only when present; an empty count is not
//! checked. A `BHS` that arrives while a batch is still open starts a new batch (senders that
//! omit `BTS` exist); a count that is present and wrong is always an error.

use std::ops::Range;

use crate::error::{BatchError, SegmentName};
use crate::hl7::{Delimiters, strip_bom};

/// Which bytes end a segment when looking for the batch structure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LineEndings {
    /// CR only, as HL7 says.
    #[default]
    Cr,
    /// CR, LF or CRLF: for files edited or exported on systems that rewrite line ends. The
    /// message bytes are returned unchanged; repair them with
    /// [`normalize_segment_terminators`](crate::hl7::normalize_segment_terminators).
    CrOrLf,
}

/// One batch of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchGroup {
    /// The BHS segment, if any (without terminator).
    pub header: Option<Range<usize>>,
    /// The BTS segment, if any (without terminator).
    pub trailer: Option<Range<usize>>,
    /// Indexes of this batch's messages in [`Batch::messages`].
    pub messages: Range<usize>,
}

/// The structure of a batch file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Every message, in order: from its `MSH` to the terminator of its last segment.
    pub messages: Vec<Range<usize>>,
    /// The batches, in order; a file without BHS segments has one.
    pub groups: Vec<BatchGroup>,
    /// The FHS segment, if any (without terminator).
    pub file_header: Option<Range<usize>>,
    /// The FTS segment, if any (without terminator).
    pub file_trailer: Option<Range<usize>>,
}

impl Batch {
    /// The bytes of message `index`.
    pub fn message<'a>(&self, bytes: &'a [u8], index: usize) -> Option<&'a [u8]> {
        self.messages.get(index).and_then(|r| bytes.get(r.clone()))
    }
}

/// One segment line of the file: its bytes and where the next line starts.
struct Line {
    range: Range<usize>,
    next: usize,
}

/// Splits a batch file into messages and checks its counts.
///
/// # Errors
/// [`BatchError::Header`] if the first segment's delimiters are unreadable,
/// [`BatchError::Empty`] without any message, [`BatchError::UnexpectedSegment`] for a segment
/// out of place, [`BatchError::BatchCountMismatch`] / [`BatchError::FileCountMismatch`] when a
/// trailer's count is wrong, [`BatchError::BadCount`] when it is not a number.
pub fn split_batch(bytes: &[u8], line_endings: LineEndings) -> Result<Batch, BatchError> {
    let offset = bytes.len() - strip_bom(bytes).len();
    let first_line_end = bytes[offset..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(bytes.len(), |p| offset + p);
    let (delimiters, _) = Delimiters::from_header(&bytes[offset..first_line_end])?;
    let fs = delimiters.field;

    let mut batch = Batch {
        messages: vec![],
        groups: vec![],
        file_header: None,
        file_trailer: None,
    };
    // The batch being filled: its header and the index of its first message.
    let mut open: Option<(Option<Range<usize>>, usize)> = None;
    // The message being filled: its start and the end of its last non-blank segment.
    let mut message: Option<(usize, usize)> = None;
    let mut seen_content = false;

    let mut pos = offset;
    while pos < bytes.len() {
        let line = next_line(bytes, pos, line_endings);
        pos = line.next;
        let segment = &bytes[line.range.clone()];
        if segment.iter().all(|b| matches!(b, b' ' | b'\r' | b'\n')) {
            continue;
        }
        let id = segment_id(segment, fs);
        let unexpected = |name: [u8; 3]| BatchError::UnexpectedSegment {
            segment: SegmentName(name),
            offset: line.range.start,
        };
        if batch.file_trailer.is_some() {
            return Err(unexpected(id.unwrap_or(*b"???")));
        }
        match id.as_ref().map(|id| &id[..]) {
            Some(b"MSH") => {
                close_message(&mut batch, &mut message);
                if open.is_none() {
                    open = Some((None, batch.messages.len()));
                }
                message = Some((line.range.start, line.next));
            }
            Some(b"FHS") => {
                if seen_content {
                    return Err(unexpected(*b"FHS"));
                }
                batch.file_header = Some(line.range.clone());
            }
            Some(b"BHS") => {
                close_message(&mut batch, &mut message);
                if let Some((header, first)) = open.take() {
                    let messages = first..batch.messages.len();
                    batch.groups.push(BatchGroup {
                        header,
                        trailer: None,
                        messages,
                    });
                }
                open = Some((Some(line.range.clone()), batch.messages.len()));
            }
            Some(b"BTS") => {
                close_message(&mut batch, &mut message);
                let Some((header, first)) = open.take() else {
                    return Err(unexpected(*b"BTS"));
                };
                let found = (batch.messages.len() - first) as u64;
                if let Some(declared) = count_field(segment, fs, line.range.start)?
                    && declared != found
                {
                    let offset = line.range.start;
                    return Err(BatchError::BatchCountMismatch {
                        declared,
                        found,
                        offset,
                    });
                }
                let messages = first..batch.messages.len();
                batch.groups.push(BatchGroup {
                    header,
                    trailer: Some(line.range.clone()),
                    messages,
                });
            }
            Some(b"FTS") => {
                close_message(&mut batch, &mut message);
                if let Some((header, first)) = open.take() {
                    let messages = first..batch.messages.len();
                    batch.groups.push(BatchGroup {
                        header,
                        trailer: None,
                        messages,
                    });
                }
                let found = batch.groups.len() as u64;
                if let Some(declared) = count_field(segment, fs, line.range.start)?
                    && declared != found
                {
                    let offset = line.range.start;
                    return Err(BatchError::FileCountMismatch {
                        declared,
                        found,
                        offset,
                    });
                }
                batch.file_trailer = Some(line.range.clone());
            }
            _ => match &mut message {
                Some((_, end)) => *end = line.next,
                None => return Err(unexpected(id.unwrap_or(*b"???"))),
            },
        }
        seen_content = true;
    }
    close_message(&mut batch, &mut message);
    if let Some((header, first)) = open.take() {
        let messages = first..batch.messages.len();
        batch.groups.push(BatchGroup {
            header,
            trailer: None,
            messages,
        });
    }
    if batch.messages.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(batch)
}

fn close_message(batch: &mut Batch, message: &mut Option<(usize, usize)>) {
    if let Some((start, end)) = message.take() {
        batch.messages.push(start..end);
    }
}

/// The line starting at `pos`: up to its terminator, and the position after the terminator.
fn next_line(bytes: &[u8], pos: usize, line_endings: LineEndings) -> Line {
    let rest = &bytes[pos..];
    let end = match line_endings {
        LineEndings::Cr => rest.iter().position(|&b| b == b'\r'),
        LineEndings::CrOrLf => rest.iter().position(|&b| b == b'\r' || b == b'\n'),
    };
    match end {
        None => Line {
            range: pos..bytes.len(),
            next: bytes.len(),
        },
        Some(k) => {
            let at = pos + k;
            let crlf = line_endings == LineEndings::CrOrLf
                && bytes[at] == b'\r'
                && bytes.get(at + 1) == Some(&b'\n');
            Line {
                range: pos..at,
                next: at + 1 + usize::from(crlf),
            }
        }
    }
}

/// The three-letter ID of a segment, if it has one followed by the field separator (or by
/// nothing). `MSH` is recognised with any separator, since each message declares its own.
fn segment_id(segment: &[u8], fs: u8) -> Option<[u8; 3]> {
    let id: [u8; 3] = segment.get(..3)?.try_into().ok()?;
    let follows = segment.get(3).copied();
    ((&id == b"MSH" && follows.is_some()) || follows.is_none_or(|b| b == fs)).then_some(id)
}

/// The count in field 1 of a BTS or FTS segment; `None` when empty.
fn count_field(segment: &[u8], fs: u8, offset: usize) -> Result<Option<u64>, BatchError> {
    let value = segment.split(|&b| b == fs).nth(1).unwrap_or_default();
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return Ok(None);
    }
    let bad = BatchError::BadCount { offset: offset + 4 };
    if digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    Ok(Some(
        digits.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: &[u8] = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rPID|1\r";
    const M2: &[u8] = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|2|P|2.5\rPID|2\rNK1|1\r";

    fn join(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn messages<'a>(bytes: &'a [u8], batch: &Batch) -> Vec<&'a [u8]> {
        batch.messages.iter().map(|r| &bytes[r.clone()]).collect()
    }

    #[test]
    fn plain_messages_back_to_back() {
        let file = join(&[M1, M2]);
        let batch = split_batch(&file, LineEndings::Cr).unwrap();
        assert_eq!(messages(&file, &batch), [M1, M2]);
        assert_eq!(batch.groups.len(), 1);
        assert_eq!(batch.groups[0].header, None);
    }

    #[test]
    fn blank_lines_between_messages_are_not_part_of_them() {
        let file = join(&[M1, b"\r\r", M2, b"\r"]);
        let batch = split_batch(&file, LineEndings::Cr).unwrap();
        assert_eq!(messages(&file, &batch), [M1, M2]);
    }

    #[test]
    fn full_file_with_counts() {
        let file = join(&[
            b"FHS|^~\\&|LAB\rBHS|^~\\&|LAB\r",
            M1,
            M2,
            b"BTS|2\rBHS|^~\\&|LAB\r",
            M1,
            b"BTS|1\rFTS|2\r",
        ]);
        let batch = split_batch(&file, LineEndings::Cr).unwrap();
        assert_eq!(messages(&file, &batch), [M1, M2, M1]);
        assert_eq!(batch.groups.len(), 2);
        assert_eq!(batch.groups[0].messages, 0..2);
        assert_eq!(batch.groups[1].messages, 2..3);
        assert_eq!(&file[batch.file_header.clone().unwrap()], b"FHS|^~\\&|LAB");
        assert_eq!(&file[batch.file_trailer.clone().unwrap()], b"FTS|2");
        assert_eq!(&file[batch.groups[1].trailer.clone().unwrap()], b"BTS|1");
    }

    #[test]
    fn wrong_batch_count_is_an_error() {
        let file = join(&[b"BHS|^~\\&\r", M1, b"BTS|3\r"]);
        let offset = 9 + M1.len();
        assert_eq!(
            split_batch(&file, LineEndings::Cr),
            Err(BatchError::BatchCountMismatch {
                declared: 3,
                found: 1,
                offset
            })
        );
    }

    #[test]
    fn wrong_file_count_is_an_error() {
        let file = join(&[b"FHS|^~\\&\rBHS|^~\\&\r", M1, b"BTS|1\rFTS|2\r"]);
        assert!(matches!(
            split_batch(&file, LineEndings::Cr),
            Err(BatchError::FileCountMismatch {
                declared: 2,
                found: 1,
                ..
            })
        ));
    }

    #[test]
    fn empty_and_bad_counts() {
        let file = join(&[b"BHS|^~\\&\r", M1, b"BTS|\rFTS\r"]);
        assert_eq!(
            split_batch(&file, LineEndings::Cr).unwrap().messages.len(),
            1
        );
        let file = join(&[b"BHS|^~\\&\r", M1, b"BTS|two\r"]);
        assert!(matches!(
            split_batch(&file, LineEndings::Cr),
            Err(BatchError::BadCount { .. })
        ));
    }

    #[test]
    fn structure_errors() {
        assert_eq!(
            split_batch(b"FHS|^~\\&\rFTS|0\r", LineEndings::Cr),
            Err(BatchError::Empty)
        );
        let err = split_batch(b"PID|1\r", LineEndings::Cr).unwrap_err();
        assert!(matches!(err, BatchError::Header(_)), "{err:?}");
        let file = join(&[b"BHS|^~\\&\rPID|1\r", M1]);
        assert_eq!(
            split_batch(&file, LineEndings::Cr),
            Err(BatchError::UnexpectedSegment {
                segment: SegmentName(*b"PID"),
                offset: 9
            })
        );
        let file = join(&[M1, b"FTS|1\r", M2]);
        assert!(matches!(
            split_batch(&file, LineEndings::Cr),
            Err(BatchError::UnexpectedSegment { segment: SegmentName(n), .. }) if &n == b"MSH"
        ));
        let file = join(&[M1, b"FHS|^~\\&\r"]);
        assert!(matches!(
            split_batch(&file, LineEndings::Cr),
            Err(BatchError::UnexpectedSegment { .. })
        ));
    }

    #[test]
    fn lf_files_need_the_option() {
        let file = b"BHS|^~\\&\nMSH|^~\\&|A\nPID|1\nMSH|^~\\&|B\r\nPID|2\r\nBTS|2\n";
        let batch = split_batch(file, LineEndings::CrOrLf).unwrap();
        assert_eq!(
            messages(file, &batch),
            [&b"MSH|^~\\&|A\nPID|1\n"[..], b"MSH|^~\\&|B\r\nPID|2\r\n"]
        );
        // With CR only, the LF-separated segments run together and the structure is lost.
        assert!(matches!(
            split_batch(file, LineEndings::Cr),
            Err(BatchError::UnexpectedSegment { .. })
        ));
    }

    #[test]
    fn new_bhs_closes_an_open_batch() {
        let file = join(&[b"BHS|^~\\&\r", M1, b"BHS|^~\\&\r", M2, b"BTS|1\r"]);
        let batch = split_batch(&file, LineEndings::Cr).unwrap();
        assert_eq!(batch.groups.len(), 2);
        assert_eq!(batch.groups[0].trailer, None);
    }

    #[test]
    fn bom_is_skipped() {
        let file = join(&[b"\xEF\xBB\xBF", M1]);
        let batch = split_batch(&file, LineEndings::Cr).unwrap();
        assert_eq!(messages(&file, &batch), [M1]);
    }
}
