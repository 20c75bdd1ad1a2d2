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
//!
//! A relay that receives batches in MLLP frames tells them from single messages with
//! [`is_batch`], and answers a batch it split into messages with one acknowledgement batch
//! ([`write_ack_batch`], HL7 v2.5 §2.10.3): the sender sent one frame and waits for one
//! answer, which names the outcome of each message. [`write_batch`] joins messages into a
//! batch, for tests and load generation.

use std::io::Write;
use std::ops::Range;

use crate::ack::push_text;
use crate::error::{BatchError, Hl7Error, SegmentName};
use crate::hl7::{Delimiters, HeaderEvent, strip_bom};

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
    /// The delimiters of the first header (FHS, BHS or MSH), which every batch header and
    /// trailer is read with. Each message keeps its own, in its MSH.
    pub delimiters: Delimiters,
    /// What reading the first header's encoding characters read past, if they were unusual:
    /// the same leniency, and the same event to count, as for a message's MSH-2.
    pub header_event: Option<HeaderEvent>,
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
/// A UTF-8 byte order mark and blank space (CR, LF, space) before the first segment are
/// skipped. The first segment's delimiters are read as leniently as a message's MSH is
/// ([`Delimiters::from_header_lenient`]): a repeated or invalid encoding character is skipped
/// and reported in [`Batch::header_event`], not refused.
///
/// # Errors
/// [`BatchError::Header`] if the first segment is not FHS, BHS or MSH
/// ([`Hl7Error::MissingHeader`]) or has no usable field separator,
/// [`BatchError::Empty`] without any message, [`BatchError::UnexpectedSegment`] for a segment
/// out of place, [`BatchError::BatchCountMismatch`] / [`BatchError::FileCountMismatch`] when a
/// trailer's count is wrong, [`BatchError::BadCount`] when it is not a number.
pub fn split_batch(bytes: &[u8], line_endings: LineEndings) -> Result<Batch, BatchError> {
    let content = skip_blank(strip_bom(bytes));
    let offset = bytes.len() - content.len();
    let first_line_end = content
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(content.len());
    let first_line = &content[..first_line_end];
    if !is_header_id(first_line) {
        return Err(Hl7Error::MissingHeader.into());
    }
    let (delimiters, _, header_event) = Delimiters::from_header_lenient(first_line)?;
    let fs = delimiters.field;

    let mut batch = Batch {
        messages: vec![],
        groups: vec![],
        file_header: None,
        file_trailer: None,
        delimiters,
        header_event,
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

/// Whether a frame's payload is a batch rather than a message: after an optional UTF-8 byte
/// order mark and blank space (CR, LF, space), it starts with `FHS` or `BHS` and a byte that
/// can be a field separator.
///
/// Messages back to back without FHS or BHS are not a batch here, though [`split_batch`]
/// splits them: a frame is meant to hold one message, and a relay that delivered such a frame
/// in pieces would be guessing at what the sender meant.
pub fn is_batch(payload: &[u8]) -> bool {
    let content = skip_blank(strip_bom(payload));
    (content.starts_with(b"FHS") || content.starts_with(b"BHS"))
        && Delimiters::from_header_lenient(content).is_ok()
}

/// `bytes` without the blank space (CR, LF, space) it starts with.
fn skip_blank(bytes: &[u8]) -> &[u8] {
    let blank = bytes
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n' | b' '))
        .count();
    &bytes[blank..]
}

/// Whether `segment` starts with the ID of a segment a batch file may start with.
fn is_header_id(segment: &[u8]) -> bool {
    [&b"FHS"[..], b"BHS", b"MSH"]
        .iter()
        .any(|id| segment.starts_with(id))
}

/// What the caller supplies for an acknowledgement batch besides the inbound batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckBatchParams<'a> {
    /// FHS-7 and BHS-7, e.g. `20261122143005.123+0000`.
    pub timestamp: &'a [u8],
    /// The acknowledgement batch's own control id, written as FHS-11 and as every BHS-11.
    /// HL7 asks only that the receiver can tell the answer's file and batches from others;
    /// they are answered together, so one id serves for all of them.
    pub control_id: &'a [u8],
}

impl<'a> AckBatchParams<'a> {
    /// Parameters with this timestamp and control id.
    pub const fn new(timestamp: &'a [u8], control_id: &'a [u8]) -> Self {
        Self {
            timestamp,
            control_id,
        }
    }
}

/// Writes over `out` the acknowledgement batch that answers `batch` (split from `input`):
/// HL7 v2.5 §2.10.3, one answer naming the outcome of every message. Segments end with CR; no
/// MLLP framing.
///
/// `acks[i]` is the ACK payload for `batch.messages[i]` (as [`write_ack`] writes it), or
/// `None` when none is due (MSH-15/MSH-16, or the ACK policy). A missing entry or an empty
/// payload counts as `None`: an empty payload is no message. Each ACK is copied as it is, with
/// a CR added when its last segment lacks one and a UTF-8 byte order mark dropped: either
/// would merge it with the next segment of the batch.
///
/// The answer goes back the other way, so each header swaps the two ends of the inbound one:
/// - `FHS`, only if the input has one: FHS-3/4 = the input's FHS-5/6, FHS-5/6 = the input's
///   FHS-3/4, FHS-7 = `params.timestamp`, FHS-11 = `params.control_id`, FHS-12 (reference
///   file control ID) = the input's FHS-11.
/// - per inbound batch, a `BHS` built the same way from that batch's BHS (with the swapped
///   fields and BHS-12 empty when it had none), the due ACKs of its messages in order, and
///   `BTS` with their count;
/// - `FTS` with the number of batches, if the input has an FHS.
///
/// FHS-1/2 and BHS-1/2 are [`Batch::delimiters`], each encoding character once (as
/// [`write_ack`] writes MSH-2); fields copied from the input are copied byte for byte;
/// `params` is escaped. Trailing empty fields are left out.
///
/// [`write_ack`]: crate::ack::write_ack
pub fn write_ack_batch(
    input: &[u8],
    batch: &Batch,
    acks: &[Option<&[u8]>],
    params: &AckBatchParams<'_>,
    out: &mut Vec<u8>,
) {
    out.clear();
    let d = &batch.delimiters;
    let fs = d.field;
    let answer = |header: Option<&Range<usize>>| {
        let segment = header.and_then(|r| input.get(r.clone()));
        let field = |n: usize| segment.map_or(&[][..], |s| header_field(s, fs, n));
        HeaderFields {
            sending: [field(5), field(6)],
            receiving: [field(3), field(4)],
            timestamp: params.timestamp,
            control_id: params.control_id,
            reference: field(11),
        }
    };
    if let Some(fhs) = &batch.file_header {
        write_header(out, b"FHS", d, &answer(Some(fhs)));
    }
    for group in &batch.groups {
        write_header(out, b"BHS", d, &answer(group.header.as_ref()));
        let mut written = 0usize;
        for index in group.messages.clone() {
            let ack = strip_bom(acks.get(index).copied().flatten().unwrap_or_default());
            if ack.is_empty() {
                continue;
            }
            out.extend_from_slice(ack);
            if !ack.ends_with(b"\r") {
                out.push(b'\r');
            }
            written += 1;
        }
        write_trailer(out, b"BTS", fs, written);
    }
    if batch.file_header.is_some() {
        write_trailer(out, b"FTS", fs, batch.groups.len());
    }
}

/// The headers [`write_batch`] puts around messages. `Default` is none: the messages back to
/// back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchHeaders<'a> {
    /// Write `FHS` before and `FTS|1` after the batch.
    pub file: bool,
    /// Write `BHS` before and `BTS|<count>` after the messages.
    pub batch: bool,
    /// FHS-3 and BHS-3.
    pub sending_application: &'a [u8],
    /// FHS-4 and BHS-4.
    pub sending_facility: &'a [u8],
    /// FHS-7 and BHS-7.
    pub timestamp: &'a [u8],
    /// FHS-11 and BHS-11.
    pub control_id: &'a [u8],
}

/// Writes over `out` a batch of `messages`, in order, inside the headers `headers` asks for,
/// with the delimiters `|^~\&` and trailers that count correctly. The header fields are text:
/// a delimiter in them is escaped, so it is data, not structure.
///
/// Each message is copied as it is, with a CR added when its last segment lacks one. For the
/// result to split back into the same messages each must start with `MSH`, and at least one
/// must be given.
pub fn write_batch(messages: &[&[u8]], headers: BatchHeaders<'_>, out: &mut Vec<u8>) {
    out.clear();
    let d = Delimiters::DEFAULT;
    // Header fields 3 and 4 are written as they are; escape the text once here.
    let mut sending = [Vec::new(), Vec::new()];
    let texts = [headers.sending_application, headers.sending_facility];
    for (escaped, text) in sending.iter_mut().zip(texts) {
        push_text(escaped, text, &d);
    }
    let fields = HeaderFields {
        sending: [&sending[0], &sending[1]],
        receiving: [&[], &[]],
        timestamp: headers.timestamp,
        control_id: headers.control_id,
        reference: &[],
    };
    if headers.file {
        write_header(out, b"FHS", &d, &fields);
    }
    if headers.batch {
        write_header(out, b"BHS", &d, &fields);
    }
    for message in messages {
        out.extend_from_slice(message);
        if !message.ends_with(b"\r") {
            out.push(b'\r');
        }
    }
    if headers.batch {
        write_trailer(out, b"BTS", d.field, messages.len());
    }
    if headers.file {
        write_trailer(out, b"FTS", d.field, 1);
    }
}

/// The fields of an FHS or BHS segment that are written, from field 3 on.
struct HeaderFields<'a> {
    /// Fields 3 and 4, written as they are.
    sending: [&'a [u8]; 2],
    /// Fields 5 and 6, written as they are.
    receiving: [&'a [u8]; 2],
    /// Field 7, escaped.
    timestamp: &'a [u8],
    /// Field 11, escaped.
    control_id: &'a [u8],
    /// Field 12, written as it is.
    reference: &'a [u8],
}

/// Appends an FHS or BHS segment with `d` and `fields`, trailing empty fields left out.
fn write_header(out: &mut Vec<u8>, id: &[u8; 3], d: &Delimiters, fields: &HeaderFields<'_>) {
    let fs = d.field;
    out.extend_from_slice(id);
    out.push(fs);
    out.extend(d.encoding_characters());
    let encoding_end = out.len();
    let [application, facility] = fields.sending;
    let [to_application, to_facility] = fields.receiving;
    for raw in [application, facility, to_application, to_facility] {
        out.push(fs);
        out.extend_from_slice(raw);
    }
    out.push(fs);
    push_text(out, fields.timestamp, d);
    // Fields 8 (security), 9 (name) and 10 (comment) empty, then field 11.
    out.extend_from_slice(&[fs; 4]);
    push_text(out, fields.control_id, d);
    out.push(fs);
    out.extend_from_slice(fields.reference);
    // No field written ends with a bare field separator (text is escaped, copied fields were
    // split on it), so every one at the end closes an empty field.
    while out.len() > encoding_end && out.last() == Some(&fs) {
        out.pop();
    }
    out.push(b'\r');
}

/// Appends a BTS or FTS segment with `count` in field 1.
fn write_trailer(out: &mut Vec<u8>, id: &[u8; 3], fs: u8, count: usize) {
    out.extend_from_slice(id);
    out.push(fs);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{count}");
    out.push(b'\r');
}

/// Field `n` (3 or more) of an FHS or BHS segment, raw; empty when absent.
fn header_field(segment: &[u8], fs: u8, n: usize) -> &[u8] {
    // Split on the field separator, item 0 is the ID and item 1 field 2 (field 1 is the
    // separator itself).
    segment.split(|&b| b == fs).nth(n - 1).unwrap_or_default()
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
    use crate::hl7::{HeaderEventCode, UTF8_BOM};

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

    #[test]
    fn doubled_escape_character_in_the_file_header_is_read_past() {
        // `FHS|^~\\&`: the escape character given twice, as files copied from escaped source
        // text have.
        let file = join(&[b"FHS|^~\\\\&|LAB\rBHS|^~\\\\&\r", M1, b"BTS|1\rFTS|1\r"]);
        let batch = split_batch(&file, LineEndings::Cr).unwrap();
        assert_eq!(messages(&file, &batch), [M1]);
        assert_eq!(batch.delimiters, Delimiters::DEFAULT);
        assert_eq!(
            batch.header_event,
            Some(HeaderEvent {
                code: HeaderEventCode::Msh2RepeatedDelimiter,
                byte: b'\\'
            })
        );
        let plain = join(&[b"FHS|^~\\&|LAB\r", M1]);
        assert_eq!(
            split_batch(&plain, LineEndings::Cr).unwrap().header_event,
            None
        );
    }

    #[test]
    fn blank_space_before_the_first_segment_is_skipped() {
        let file = join(&[b"\xEF\xBB\xBF\r\n \rBHS|^~\\&\r", M1, b"BTS|1\r"]);
        let batch = split_batch(&file, LineEndings::Cr).unwrap();
        assert_eq!(messages(&file, &batch), [M1]);
        assert_eq!(batch.groups[0].header, Some(7..15));
    }

    #[test]
    fn batches_are_told_from_messages() {
        for payload in [
            &b"FHS|^~\\&|LAB\r"[..],
            b"BHS|^~\\&\r",
            b"BHS#^~\\&\r",
            b"FHS|",
            b"\xEF\xBB\xBF\r\n FHS|^~\\&\r",
        ] {
            assert!(is_batch(payload), "{payload:?}");
        }
        let two_messages = join(&[M1, M2]);
        for payload in [
            M1,
            &two_messages,
            b"",
            b"FHS",
            b"FHS\rMSH|^~\\&\r",
            b"FHSA|",
            b"FHS |",
            b"fhs|^~\\&\r",
            b"PID|FHS|\r",
            b"\tFHS|^~\\&\r",
        ] {
            assert!(!is_batch(payload), "{payload:?}");
        }
    }

    const A1: &[u8] = b"MSH|^~\\&|C|D|A|B|2|||R1|P|2.5\rMSA|AA|1\r";
    const A2: &[u8] = b"MSH|^~\\&|C|D|A|B|2|||R2|P|2.5\rMSA|AE|2\r";

    fn ack_batch(input: &[u8], acks: &[Option<&[u8]>]) -> Vec<u8> {
        let batch = split_batch(input, LineEndings::Cr).unwrap();
        let mut out = b"left over".to_vec();
        let params = AckBatchParams::new(b"20260102", b"X9");
        write_ack_batch(input, &batch, acks, &params, &mut out);
        out
    }

    #[test]
    fn ack_batch_swaps_the_ends_and_refers_to_the_input() {
        let input = join(&[
            b"FHS|^~\\&|LAB|HOSP|EHR|CLINIC|20260101||||F1\r",
            b"BHS|^~\\&|LAB|HOSP|EHR|CLINIC|20260101||||B1\r",
            M1,
            M2,
            b"BTS|2\rFTS|1\r",
        ]);
        let out = ack_batch(&input, &[Some(A1), Some(A2)]);
        let expected = join(&[
            b"FHS|^~\\&|EHR|CLINIC|LAB|HOSP|20260102||||X9|F1\r",
            b"BHS|^~\\&|EHR|CLINIC|LAB|HOSP|20260102||||X9|B1\r",
            A1,
            A2,
            b"BTS|2\rFTS|1\r",
        ]);
        assert_eq!(out, expected, "{}", String::from_utf8_lossy(&out));
        let answer = split_batch(&out, LineEndings::Cr).unwrap();
        assert_eq!(messages(&out, &answer), [A1, A2]);
    }

    #[test]
    fn ack_batch_for_input_without_headers_has_a_bhs_but_no_fhs() {
        let input = join(&[M1, M2]);
        let out = ack_batch(&input, &[Some(A1), Some(A2)]);
        let expected = join(&[b"BHS|^~\\&|||||20260102||||X9\r", A1, A2, b"BTS|2\r"]);
        assert_eq!(out, expected, "{}", String::from_utf8_lossy(&out));

        // An FHS without BHS: the one batch gets an empty BHS inside the answer's FHS.
        let input = join(&[b"FHS|^~\\&|LAB\r", M1, b"FTS|1\r"]);
        let out = ack_batch(&input, &[Some(A1)]);
        let expected = join(&[
            b"FHS|^~\\&|||LAB||20260102||||X9\r",
            b"BHS|^~\\&|||||20260102||||X9\r",
            A1,
            b"BTS|1\rFTS|1\r",
        ]);
        assert_eq!(out, expected, "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn ack_batch_ends_every_ack_with_cr_and_counts_only_due_acks() {
        let input = join(&[
            b"BHS|^~\\&\r",
            M1,
            M2,
            M1,
            b"BTS|3\rBHS|^~\\&\r",
            M2,
            b"BTS|1\r",
        ]);
        let bare = A2.strip_suffix(b"\r").unwrap();
        let with_bom = join(&[UTF8_BOM, A1]);
        // Message 3 has no entry at all; an empty payload is no ACK either.
        let acks = [None, Some(bare), Some(&with_bom[..])];
        let out = ack_batch(&input, &acks);
        let expected = join(&[
            b"BHS|^~\\&|||||20260102||||X9\r",
            A2,
            A1,
            b"BTS|2\rBHS|^~\\&|||||20260102||||X9\rBTS|0\r",
        ]);
        assert_eq!(out, expected, "{}", String::from_utf8_lossy(&out));
        let empty: &[u8] = b"BHS|^~\\&|||||20260102||||X9\rBTS|0\r";
        assert_eq!(
            ack_batch(&input, &[Some(&b""[..]); 4]),
            join(&[empty, empty])
        );
    }

    #[test]
    fn ack_batch_uses_the_input_delimiters_and_escapes_params() {
        let input = join(&[b"BHS#*~!&#LAB#H##\r", M1]);
        let batch = split_batch(&input, LineEndings::Cr).unwrap();
        let mut out = Vec::new();
        let params = AckBatchParams::new(b"2026", b"a#b\r");
        write_ack_batch(&input, &batch, &[None], &params, &mut out);
        assert_eq!(out, b"BHS#*~!&###LAB#H#2026####a!F!b!X0D!\rBTS#0\r");

        // A doubled delimiter is written once, as in MSH-2 of an ACK.
        let input = join(&[b"FHS|^~\\\\&|LAB\r", M1]);
        let batch = split_batch(&input, LineEndings::Cr).unwrap();
        write_ack_batch(&input, &batch, &[], &params, &mut out);
        let expected = join(&[
            b"FHS|^~\\&|||LAB||2026||||a#b\\X0D\\\r",
            b"BHS|^~\\&|||||2026||||a#b\\X0D\\\r",
            b"BTS|0\rFTS|1\r",
        ]);
        assert_eq!(out, expected, "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn write_batch_adds_headers_counts_and_missing_crs() {
        let bare = M2.strip_suffix(b"\r").unwrap();
        let mut out = b"left over".to_vec();
        write_batch(&[M1, bare], BatchHeaders::default(), &mut out);
        assert_eq!(out, join(&[M1, M2]));

        let headers = BatchHeaders {
            file: true,
            batch: true,
            sending_application: b"LAB|1",
            sending_facility: b"",
            timestamp: b"20260101",
            control_id: b"7",
        };
        write_batch(&[M1, bare], headers, &mut out);
        let expected = join(&[
            b"FHS|^~\\&|LAB\\F\\1||||20260101||||7\r",
            b"BHS|^~\\&|LAB\\F\\1||||20260101||||7\r",
            M1,
            M2,
            b"BTS|2\rFTS|1\r",
        ]);
        assert_eq!(out, expected, "{}", String::from_utf8_lossy(&out));
        let batch = split_batch(&out, LineEndings::Cr).unwrap();
        assert_eq!(messages(&out, &batch), [M1, M2]);

        let headers = BatchHeaders {
            file: true,
            ..BatchHeaders::default()
        };
        write_batch(&[M1], headers, &mut out);
        assert_eq!(out, join(&[b"FHS|^~\\&\r", M1, b"FTS|1\r"]));
        assert_eq!(split_batch(&out, LineEndings::Cr).unwrap().groups.len(), 1);
    }
}
