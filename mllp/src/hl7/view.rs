//! The general view: message → segments → fields → repetitions → components → subcomponents.
//!
//! Every item is a sub-slice of the message found by scanning on demand, so the types here are
//! small `Copy` values that carry the slice and the delimiters needed to split it further.
//! Nothing is cached: asking for field 12 twice scans twice. That is the right trade for a
//! relay, which reads a handful of fields per message; code that reads many fields of the same
//! segment should walk [`Segment::fields`] once instead.
//!
//! Header segments (`MSH`, `FHS`, `BHS`) are numbered the HL7 way: field 1 is the field
//! separator itself and field 2 the encoding characters, which are returned raw, never split by
//! the delimiters they define.

use core::fmt;

use super::{Delimiters, Msh, SEGMENT_TERMINATOR};
use crate::error::Hl7Error;

/// Position of the first `byte` in `haystack`.
#[inline]
pub(super) fn find(haystack: &[u8], byte: u8) -> Option<usize> {
    haystack.iter().position(|&b| b == byte)
}

/// The bytes before the first `delimiter`, or all of them when there is none (or no delimiter
/// is defined).
#[inline]
fn first_piece(bytes: &[u8], delimiter: Option<u8>) -> &[u8] {
    match delimiter.and_then(|d| find(bytes, d)) {
        Some(end) => bytes.split_at(end).0,
        None => bytes,
    }
}

/// Whether a segment ID names a header segment, whose MSH-1/MSH-2 numbering differs.
#[inline]
pub(super) fn is_header_id(id: &[u8]) -> bool {
    matches!(id, b"MSH" | b"FHS" | b"BHS")
}

/// Delimiters for MSH-1 and MSH-2: only the field separator, so that the encoding characters
/// are one repetition with one component with one subcomponent, never split by themselves.
#[inline]
pub(super) const fn opaque(field: u8) -> Delimiters {
    Delimiters {
        field,
        component: None,
        repetition: None,
        escape: None,
        subcomponent: None,
        truncation: None,
    }
}

/// Debug-formats bytes as an escaped byte-string literal: readable in logs, unlike a list of
/// numbers, and safe for hostile bytes.
pub(super) struct Text<'a>(pub(super) &'a [u8]);

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// Splits a slice on an optional delimiter, like `<[u8]>::split` but nameable and `Clone`.
///
/// Always yields at least one (possibly empty) piece; with no delimiter it yields the whole
/// slice once. That matches HL7: an absent delimiter means that level has exactly one item.
#[derive(Debug, Clone)]
struct Split<'a> {
    /// What is left to split; `None` once the last piece has been yielded.
    rest: Option<&'a [u8]>,
    delimiter: Option<u8>,
}

impl<'a> Split<'a> {
    #[inline]
    const fn new(bytes: &'a [u8], delimiter: Option<u8>) -> Self {
        Self {
            rest: Some(bytes),
            delimiter,
        }
    }
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match self.delimiter.and_then(|d| find(rest, d)) {
            Some(end) => {
                let (piece, tail) = rest.split_at(end);
                // `tail` starts with the delimiter; what follows it is the next piece.
                self.rest = tail.get(1..);
                Some(piece)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.rest {
            None => (0, Some(0)),
            Some(rest) => (1, Some(rest.len().saturating_add(1))),
        }
    }
}

/// A parsed HL7 v2 message: the header read and checked, everything else found on demand.
///
/// Parsing reads only MSH (see [`Msh`]); segments are split when iterated. Segments are
/// terminated by CR only; use [`normalize_segment_terminators`](super::normalize_segment_terminators)
/// first for messages written with LF or CRLF.
///
/// ```
/// use mllp::hl7::Message;
///
/// let bytes = b"MSH|^~\\&|LAB|HOSP|||20240101120000||ORU^R01|123|P|2.5.1\rPID|1||42^^^HOSP^MR\r";
/// let message = Message::parse(bytes)?;
/// assert_eq!(message.msh().control_id(), b"123");
/// let pid3 = message.segment(b"PID").and_then(|pid| pid.field(3)).unwrap();
/// assert_eq!(pid3.component(4).unwrap().as_bytes(), b"HOSP");
/// # Ok::<(), mllp::error::Hl7Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Message<'a> {
    msh: Msh<'a>,
}

impl<'a> Message<'a> {
    /// Parses the header of `bytes`, skipping a UTF-8 byte order mark.
    ///
    /// # Errors
    /// [`Hl7Error::MissingHeader`] when the bytes do not start with `MSH`; the errors of
    /// [`Delimiters::from_header`] when MSH-1/MSH-2 are unusable.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Hl7Error> {
        Msh::parse(bytes).map(|msh| Self { msh })
    }

    /// The message from `MSH` on (a byte order mark excluded). Segment offsets count from here.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.msh.message_bytes()
    }

    /// Where `MSH` starts in the parsed input: 3 after a byte order mark, else 0.
    #[inline]
    pub fn header_offset(&self) -> usize {
        self.msh.header_offset()
    }

    /// The delimiters from MSH-1 and MSH-2.
    #[inline]
    pub fn delimiters(&self) -> Delimiters {
        self.msh.delimiters()
    }

    /// The header view, with its typed accessors.
    #[inline]
    pub fn msh(&self) -> &Msh<'a> {
        &self.msh
    }

    /// The segments in order, starting with MSH. Empty and blank pieces between CRs (only LF
    /// or space bytes, such as a trailing newline) are skipped.
    #[inline]
    pub fn segments(&self) -> Segments<'a> {
        Segments {
            rest: self.as_bytes(),
            offset: 0,
            delimiters: self.delimiters(),
        }
    }

    /// The first segment with ID `id` (such as `b"PID"`), if any.
    pub fn segment(&self, id: &[u8]) -> Option<Segment<'a>> {
        self.segments().find(|segment| segment.id() == id)
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The whole message could be megabytes: show its size and header only.
        f.debug_struct("Message")
            .field("len", &self.as_bytes().len())
            .field("header_offset", &self.header_offset())
            .field("delimiters", &self.delimiters())
            .field("msh", &Text(self.msh.as_bytes()))
            .finish()
    }
}

/// Iterator over the segments of a [`Message`]; see [`Message::segments`].
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    /// The unread part of the message.
    rest: &'a [u8],
    /// Offset of `rest` in the message.
    offset: usize,
    delimiters: Delimiters,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        while !self.rest.is_empty() {
            let len = find(self.rest, SEGMENT_TERMINATOR).unwrap_or(self.rest.len());
            let (bytes, tail) = self.rest.split_at(len);
            let offset = self.offset;
            // Step over the terminator when there is one (the last segment may lack it).
            let tail = tail.get(1..).unwrap_or_default();
            self.offset += self.rest.len() - tail.len();
            self.rest = tail;
            if !bytes.iter().all(|&b| b == b'\n' || b == b' ') {
                return Some(Segment {
                    bytes,
                    offset,
                    delimiters: self.delimiters,
                });
            }
        }
        None
    }
}

/// One segment, without its terminator.
#[derive(Clone, Copy)]
pub struct Segment<'a> {
    bytes: &'a [u8],
    offset: usize,
    delimiters: Delimiters,
}

impl<'a> Segment<'a> {
    /// A view of `bytes` (one segment, without terminator) found at `offset` in its message.
    #[inline]
    pub(super) const fn new(bytes: &'a [u8], offset: usize, delimiters: Delimiters) -> Self {
        Self {
            bytes,
            offset,
            delimiters,
        }
    }

    /// The segment ID: the bytes before the first field separator (the whole segment if it
    /// has none). Not validated: a malformed segment yields whatever is there.
    #[inline]
    pub fn id(&self) -> &'a [u8] {
        first_piece(self.bytes, Some(self.delimiters.field))
    }

    /// The segment's bytes, without its terminator.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Byte offset of the segment in [`Message::as_bytes`].
    #[inline]
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The bytes after the ID: empty, or starting with the separator that opens field 1.
    #[inline]
    fn after_id(&self) -> &'a [u8] {
        self.bytes.get(self.id().len()..).unwrap_or_default()
    }

    /// For a header segment: MSH-1 (the separator byte), MSH-2 (raw encoding characters) and
    /// the rest, which is empty or starts with the separator that opens MSH-3.
    fn header_parts(&self) -> Option<(&'a [u8], &'a [u8], &'a [u8])> {
        if !is_header_id(self.id()) {
            return None;
        }
        // The ID is three bytes and the separator follows it, so this split always succeeds.
        let (msh1, after) = self.bytes.get(3..)?.split_at_checked(1)?;
        let msh2_len = find(after, self.delimiters.field).unwrap_or(after.len());
        let (msh2, rest) = after.split_at(msh2_len);
        Some((msh1, msh2, rest))
    }

    /// Field `n`, numbered as in HL7: `field(1)` is the first field after the ID, except in
    /// header segments (`MSH`, `FHS`, `BHS`) where `field(1)` is the one-byte field separator
    /// and `field(2)` the encoding characters, returned raw (they are never split further).
    ///
    /// `None` for `n == 0` or past the last field; a present but empty field is `Some`.
    pub fn field(&self, n: usize) -> Option<Field<'a>> {
        let separator = self.delimiters.field;
        if n == 0 {
            return None;
        }
        // `rest` is empty or starts with a separator, so its piece 1 is the first field there.
        let (rest, index) = match self.header_parts() {
            Some((msh1, _, _)) if n == 1 => return Some(Field::new(msh1, opaque(separator))),
            Some((_, msh2, _)) if n == 2 => return Some(Field::new(msh2, opaque(separator))),
            Some((_, _, rest)) => (rest, n - 2),
            None => (self.after_id(), n),
        };
        Split::new(rest, Some(separator))
            .nth(index)
            .map(|bytes| Field::new(bytes, self.delimiters))
    }

    /// The fields in order, the first one yielded being [`field(1)`](Self::field): the n-th
    /// item is field n, for header segments too.
    pub fn fields(&self) -> Fields<'a> {
        let separator = Some(self.delimiters.field);
        let (msh1, msh2, rest) = match self.header_parts() {
            Some((msh1, msh2, rest)) => (Some(msh1), Some(msh2), rest),
            None => (None, None, self.after_id()),
        };
        let mut rest = Split::new(rest, separator);
        // `rest` is empty or starts with a separator: its first piece is always empty and
        // precedes the first field, so drop it.
        rest.next();
        Fields {
            msh1,
            msh2,
            rest,
            delimiters: self.delimiters,
        }
    }
}

impl fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("offset", &self.offset)
            .field("bytes", &Text(self.bytes))
            .finish()
    }
}

/// Iterator over the fields of a [`Segment`]; see [`Segment::fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    /// MSH-1 of a header segment, until yielded.
    msh1: Option<&'a [u8]>,
    /// MSH-2 of a header segment, until yielded.
    msh2: Option<&'a [u8]>,
    rest: Split<'a>,
    delimiters: Delimiters,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let opaque = opaque(self.delimiters.field);
        if let Some(msh1) = self.msh1.take() {
            return Some(Field::new(msh1, opaque));
        }
        if let Some(msh2) = self.msh2.take() {
            return Some(Field::new(msh2, opaque));
        }
        self.rest
            .next()
            .map(|bytes| Field::new(bytes, self.delimiters))
    }
}

/// One field, or one repetition of a field (the two have the same structure).
#[derive(Clone, Copy)]
pub struct Field<'a> {
    bytes: &'a [u8],
    delimiters: Delimiters,
}

impl<'a> Field<'a> {
    /// A view of `bytes`, to be split with `delimiters`.
    #[inline]
    pub(super) const fn new(bytes: &'a [u8], delimiters: Delimiters) -> Self {
        Self { bytes, delimiters }
    }

    /// The raw bytes of the field, escape sequences included.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether the field is empty (absent or not sent; HL7's `""` null is not empty).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The repetitions, split on the repetition delimiter. An empty field has one empty
    /// repetition; without a repetition delimiter the whole field is the one repetition.
    #[inline]
    pub fn repetitions(&self) -> Repetitions<'a> {
        Repetitions {
            split: Split::new(self.bytes, self.delimiters.repetition),
            delimiters: self.delimiters,
        }
    }

    /// Repetition `n`, counting from 1.
    pub fn repetition(&self, n: usize) -> Option<Self> {
        self.repetitions().nth(n.checked_sub(1)?)
    }

    /// The bytes of the first repetition, which is what component access reads.
    #[inline]
    fn first_repetition(&self) -> &'a [u8] {
        first_piece(self.bytes, self.delimiters.repetition)
    }

    /// The components of the first repetition (use [`repetition`](Self::repetition) to reach
    /// the others). Without a component delimiter the repetition is the one component.
    #[inline]
    pub fn components(&self) -> Components<'a> {
        Components {
            split: Split::new(self.first_repetition(), self.delimiters.component),
            subcomponent: self.delimiters.subcomponent,
        }
    }

    /// Component `n` of the first repetition, counting from 1.
    pub fn component(&self, n: usize) -> Option<Component<'a>> {
        self.components().nth(n.checked_sub(1)?)
    }
}

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Field").field(&Text(self.bytes)).finish()
    }
}

/// Iterator over the repetitions of a [`Field`]; see [`Field::repetitions`].
#[derive(Debug, Clone)]
pub struct Repetitions<'a> {
    split: Split<'a>,
    delimiters: Delimiters,
}

impl<'a> Iterator for Repetitions<'a> {
    type Item = Field<'a>;

    #[inline]
    fn next(&mut self) -> Option<Field<'a>> {
        self.split
            .next()
            .map(|bytes| Field::new(bytes, self.delimiters))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.split.size_hint()
    }
}

/// One component of a field.
#[derive(Clone, Copy)]
pub struct Component<'a> {
    bytes: &'a [u8],
    subcomponent: Option<u8>,
}

impl<'a> Component<'a> {
    /// The raw bytes of the component, escape sequences included.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether the component is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The subcomponents. Without a subcomponent delimiter the component is the one
    /// subcomponent.
    #[inline]
    pub fn subcomponents(&self) -> Subcomponents<'a> {
        Subcomponents {
            split: Split::new(self.bytes, self.subcomponent),
        }
    }

    /// Subcomponent `n`, counting from 1.
    pub fn subcomponent(&self, n: usize) -> Option<&'a [u8]> {
        self.subcomponents().nth(n.checked_sub(1)?)
    }
}

impl fmt::Debug for Component<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Component").field(&Text(self.bytes)).finish()
    }
}

/// Iterator over the components of a [`Field`]; see [`Field::components`].
#[derive(Debug, Clone)]
pub struct Components<'a> {
    split: Split<'a>,
    subcomponent: Option<u8>,
}

impl<'a> Iterator for Components<'a> {
    type Item = Component<'a>;

    #[inline]
    fn next(&mut self) -> Option<Component<'a>> {
        self.split.next().map(|bytes| Component {
            bytes,
            subcomponent: self.subcomponent,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.split.size_hint()
    }
}

/// Iterator over the subcomponents of a [`Component`]; see [`Component::subcomponents`].
#[derive(Debug, Clone)]
pub struct Subcomponents<'a> {
    split: Split<'a>,
}

impl<'a> Iterator for Subcomponents<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        self.split.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.split.size_hint()
    }
}
