//! Opt-in repair of messages written with LF or CRLF segment terminators.
//!
//! HL7 v2 ends segments with CR only, but files edited on Unix or Windows and some interface
//! engines send LF or CRLF. Rewriting every LF to CR would be wrong: report text in OBX-5 (and
//! NTE-3) legitimately carries LF line breaks, and turning those into CRs would cut the
//! segment in two. So a line break is taken for a segment terminator only when the next
//! line starts like a segment (`ABC|`, see [`starts_with_segment_id`]), or when it ends the
//! message.

use super::view::is_header_id;
use super::{Delimiters, SEGMENT_TERMINATOR, starts_with_segment_id, strip_bom};
use crate::error::Hl7Error;

/// Rewrites LF and CRLF segment terminators of `message` into CR, in place.
///
/// Every maximal run of CR and LF bytes that contains at least one LF and is followed by the
/// end of the buffer or by the start of a segment (an ID, then the message's field separator,
/// a line break or the end of the buffer) becomes a single CR; blank lines between segments collapse with it. Runs of CR
/// alone are valid HL7 and left as they are; an LF followed by anything else is data, such as
/// a line break in report text, and is kept. The buffer only shrinks.
///
/// Returns the number of runs rewritten: 0 means the message was already CR-terminated.
/// One pass, O(n), no allocation.
///
/// # Errors
/// [`Hl7Error::MissingHeader`] when the buffer (after an optional UTF-8 byte order mark) does
/// not start with `MSH`, `FHS` or `BHS`; the errors of [`Delimiters::from_header_lenient`] when
/// the field separator cannot be read. The buffer is unchanged on error.
///
/// ```
/// use mllp::hl7::normalize_segment_terminators;
///
/// let mut message = b"MSH|^~\\&|A\r\nOBX|1|TX|||line 1\nline 2\r\n".to_vec();
/// assert_eq!(normalize_segment_terminators(&mut message)?, 2);
/// assert_eq!(message, b"MSH|^~\\&|A\rOBX|1|TX|||line 1\nline 2\r");
/// # Ok::<(), mllp::error::Hl7Error>(())
/// ```
pub fn normalize_segment_terminators(message: &mut Vec<u8>) -> Result<usize, Hl7Error> {
    let header = strip_bom(message);
    if !header.get(..3).is_some_and(is_header_id) {
        return Err(Hl7Error::MissingHeader);
    }
    // The header line ends at its first LF too: it may be the only terminator there is.
    let header_line = header.split(|&b| b == b'\n').next().unwrap_or_default();
    // Only MSH-1 matters here: an unusual MSH-2 is read past, as the relay reads it.
    let separator = Delimiters::from_header_lenient(header_line)?.0.field;

    // Compact in place: `write` never passes `read`, so bytes still to be read are intact.
    // The BOM holds no CR or LF, so starting at 0 rather than after it changes nothing.
    let len = message.len();
    let mut read = 0;
    let mut write = 0;
    let mut rewritten = 0;
    while read < len {
        let rest = message.get(read..).unwrap_or_default();
        let text = rest
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        let run = rest.get(text..).unwrap_or_default();
        let run_len = run
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(run.len());
        let has_lf = run.get(..run_len).unwrap_or_default().contains(&b'\n');
        let after = run.get(run_len..).unwrap_or_default();
        let terminator = has_lf && (after.is_empty() || starts_with_segment_id(after, separator));

        // Keep the text and, unless it is replaced, the run.
        let keep = if terminator { text } else { text + run_len };
        if write != read {
            message.copy_within(read..read + keep, write);
        }
        write += keep;
        if terminator {
            if let Some(slot) = message.get_mut(write) {
                *slot = SEGMENT_TERMINATOR;
            }
            write += 1;
            rewritten += 1;
        }
        read += text + run_len;
    }
    message.truncate(write);
    Ok(rewritten)
}
