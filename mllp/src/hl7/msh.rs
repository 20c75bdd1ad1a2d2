//! The fast header view: MSH read in one pass, its fields indexed, typed accessors on top.
//!
//! A relay parses one [`Msh`] per message to route it and to build its ACK, so this is the hot
//! path of the crate. [`Msh::parse`] reads MSH-1/MSH-2, then walks the header segment once,
//! recording where MSH-3 to MSH-22 begin in a fixed array (no allocation); every accessor for
//! those fields is then a constant-time slice. Fields past MSH-21 are found by scanning the
//! rest of the segment on demand: they are rare and the segment is short.
//!
//! The view reads only the MSH segment. It does not validate field contents (dates, IDs,
//! versions are returned as they are) and does not decode escape sequences; see
//! [`decode_escapes`](super::decode_escapes) for that.

use core::fmt;

use super::view::{Field, Segment, Text, opaque};
use super::{Delimiters, HeaderEvent, SEGMENT_TERMINATOR, strip_bom};
use crate::error::Hl7Error;

/// How many field separators [`Msh::parse`] records: those opening MSH-3 to MSH-22, so that
/// MSH-3 to MSH-21 each have a known start and end. MSH-21 is the last field of v2.5; later
/// versions add a few more, which [`Msh::field`] finds by scanning.
const INDEXED: usize = 20;

/// The header segment of a message, parsed once and indexed for constant-time field access.
///
/// Accessors never fail: a field the sender left out reads as empty, exactly like a field sent
/// empty, because HL7 does not distinguish the two and neither does a relay.
///
/// ```
/// use mllp::hl7::{AckCondition, Msh, Version};
///
/// let msh = Msh::parse(b"MSH|^~\\&|APP|FAC|||20240101||ADT^A01^ADT_A01|42|P|2.5.1|||AL|NE\r")?;
/// assert_eq!(msh.message_type().trigger, b"A01");
/// assert_eq!(msh.control_id(), b"42");
/// assert!(msh.version() >= Some(Version { major: 2, minor: 5, patch: 0 }));
/// assert_eq!(msh.accept_ack_type(), Some(AckCondition::Always));
/// assert_eq!(msh.raw_field(30), b""); // absent reads as empty
/// # Ok::<(), mllp::error::Hl7Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Msh<'a> {
    /// The message from `MSH` on.
    message: &'a [u8],
    /// Length of the byte order mark skipped before `MSH` (0 or 3).
    header_offset: usize,
    delimiters: Delimiters,
    /// Where MSH-2 ends: at the separator opening MSH-3, or at the segment end.
    msh2_end: usize,
    /// Where the MSH segment ends: at its CR or LF, or at the end of the message.
    segment_end: usize,
    /// `separators[i]` is the offset of the field separator that opens MSH-(i + 3).
    separators: [usize; INDEXED],
    /// How many entries of `separators` are valid. Less than [`INDEXED`] means the segment has
    /// no further fields; equal means there may be more, past the table.
    indexed: usize,
    /// What [`Msh::parse_lenient`] read past in MSH-2; always `None` from [`Msh::parse`].
    event: Option<HeaderEvent>,
}

impl<'a> Msh<'a> {
    /// Parses the header of a message: skips a UTF-8 byte order mark, requires `MSH`, reads the
    /// delimiters and indexes the fields of the MSH segment (up to its first CR or LF).
    ///
    /// The header ends at a LF as well as at a CR, unlike [`Message::segments`](super::Message::segments)
    /// which splits on CR only: no MSH field can hold a line break, and senders that end
    /// segments with LF are common, so reading their header (to route the message and build its
    /// ACK) must not swallow the next segment.
    ///
    /// # Errors
    /// [`Hl7Error::MissingHeader`] when `bytes` (after a byte order mark) does not start with
    /// `MSH`; the errors of [`Delimiters::from_header`] when MSH-1/MSH-2 are unusable.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Hl7Error> {
        let msh = Self::parse_lenient(bytes)?;
        match msh.event {
            None => Ok(msh),
            Some(event) => Err(event.strict_error()),
        }
    }

    /// Parses the header like [`parse`](Self::parse), but reads past an unusual MSH-2 (a
    /// delimiter given twice, a byte that cannot be a delimiter, more than five characters) as
    /// [`Delimiters::from_header_lenient`] does; [`event`](Self::event) then says what was read
    /// past. This is how a relay reads: it must not refuse what the receiver behind it accepts,
    /// and with a usable MSH-1 every field (MSH-10 above all) is found exactly as sent.
    ///
    /// Whenever [`parse`](Self::parse) succeeds this returns the same view.
    ///
    /// # Errors
    /// [`Hl7Error::MissingHeader`] when `bytes` (after a byte order mark) does not start with
    /// `MSH`; [`Hl7Error::TruncatedHeader`] and [`Hl7Error::InvalidFieldSeparator`] when MSH-1
    /// is unusable.
    pub fn parse_lenient(bytes: &'a [u8]) -> Result<Self, Hl7Error> {
        let message = strip_bom(bytes);
        let header_offset = bytes.len() - message.len();
        if !message.starts_with(b"MSH") {
            return Err(Hl7Error::MissingHeader);
        }
        let (delimiters, msh2_end, event) = Delimiters::from_header_lenient(message)?;

        let mut separators = [0; INDEXED];
        let tail = message.get(msh2_end..).unwrap_or_default();
        let (indexed, segment_end) =
            index_fields(tail, msh2_end, delimiters.field, &mut separators);

        Ok(Self {
            message,
            header_offset,
            delimiters,
            msh2_end,
            segment_end,
            separators,
            indexed,
            event,
        })
    }

    /// What [`parse_lenient`](Self::parse_lenient) read past in MSH-2, if anything.
    #[inline]
    pub fn event(&self) -> Option<HeaderEvent> {
        self.event
    }

    /// The delimiters from MSH-1 and MSH-2.
    #[inline]
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// The MSH segment as a general [`Segment`] (at offset 0).
    #[inline]
    pub fn segment(&self) -> Segment<'a> {
        Segment::new(self.as_bytes(), 0, self.delimiters)
    }

    /// The MSH segment, without its terminator.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.slice(0, self.segment_end)
    }

    /// The whole message from `MSH` on (a byte order mark excluded).
    #[inline]
    pub fn message_bytes(&self) -> &'a [u8] {
        self.message
    }

    /// Where `MSH` starts in the parsed input: the length of the skipped byte order mark.
    #[inline]
    pub fn header_offset(&self) -> usize {
        self.header_offset
    }

    /// `message[start..end]`, empty if the range is out of bounds (it never is).
    #[inline]
    fn slice(&self, start: usize, end: usize) -> &'a [u8] {
        self.message.get(start..end).unwrap_or_default()
    }

    /// Field `n` of MSH, numbered as in HL7 and as [`Segment::field`]: `field(1)` is the field
    /// separator, `field(2)` the raw encoding characters (never split further), `field(3)` the
    /// sending application. `None` for `n == 0` or past the last field.
    pub fn field(&self, n: usize) -> Option<Field<'a>> {
        let opaque = opaque(self.delimiters.field);
        match n {
            0 => None,
            1 => Some(Field::new(self.slice(3, 4), opaque)),
            2 => Some(Field::new(self.encoding_characters(), opaque)),
            _ => self
                .indexed_field(n - 3)
                .map(|bytes| Field::new(bytes, self.delimiters)),
        }
    }

    /// MSH-(k + 3): from the table when both its ends are there, else by scanning.
    #[inline]
    fn indexed_field(&self, k: usize) -> Option<&'a [u8]> {
        if k + 1 < self.indexed {
            let start = self.separators.get(k)? + 1;
            let end = *self.separators.get(k + 1)?;
            Some(self.slice(start, end))
        } else if self.indexed < INDEXED {
            // The table holds every separator of the segment: the last one opens the last
            // field, and there is nothing beyond it.
            if k + 1 != self.indexed {
                return None;
            }
            let start = self.separators.get(k)? + 1;
            Some(self.slice(start, self.segment_end))
        } else {
            self.scan_field(k)
        }
    }

    /// MSH-(k + 3) when the table is full and `k` is its last entry or beyond: scan from the
    /// last recorded separator. Rare: only versions after 2.5 define fields past MSH-21.
    #[cold]
    fn scan_field(&self, k: usize) -> Option<&'a [u8]> {
        let last = INDEXED - 1;
        let from = *self.separators.get(last)?;
        let rest = self.slice(from, self.segment_end);
        // `rest` starts with the separator opening MSH-(last + 3), which is its piece 1.
        rest.split(|&b| b == self.delimiters.field)
            .nth(k.checked_sub(last)? + 1)
    }

    /// Raw bytes of field `n` (see [`field`](Self::field)); empty when absent.
    #[inline]
    pub fn raw_field(&self, n: usize) -> &'a [u8] {
        self.field(n).map_or(&[], |field| field.as_bytes())
    }

    /// MSH-2, the encoding characters, raw: as the sender wrote them, even where
    /// [`parse_lenient`](Self::parse_lenient) read past some of them.
    #[inline]
    pub fn encoding_characters(&self) -> &'a [u8] {
        self.slice(4, self.msh2_end)
    }

    /// Field `n` as a [`Field`], empty when absent.
    #[inline]
    fn field_or_empty(&self, n: usize) -> Field<'a> {
        self.field(n).unwrap_or(Field::new(&[], self.delimiters))
    }

    /// Component `c` of the first repetition of field `n`; empty when absent.
    #[inline]
    fn component(&self, n: usize, c: usize) -> &'a [u8] {
        self.field_or_empty(n)
            .component(c)
            .map_or(&[], |component| component.as_bytes())
    }

    /// MSH-3, the sending application (an HD: namespace, universal ID, ID type).
    #[inline]
    pub fn sending_application(&self) -> Field<'a> {
        self.field_or_empty(3)
    }

    /// MSH-4, the sending facility (an HD).
    #[inline]
    pub fn sending_facility(&self) -> Field<'a> {
        self.field_or_empty(4)
    }

    /// MSH-5, the receiving application (an HD).
    #[inline]
    pub fn receiving_application(&self) -> Field<'a> {
        self.field_or_empty(5)
    }

    /// MSH-6, the receiving facility (an HD).
    #[inline]
    pub fn receiving_facility(&self) -> Field<'a> {
        self.field_or_empty(6)
    }

    /// MSH-7 component 1, the date and time of the message as sent (`YYYYMMDDHHMMSS…`),
    /// unvalidated.
    #[inline]
    pub fn timestamp(&self) -> &'a [u8] {
        self.component(7, 1)
    }

    /// MSH-9, the message type: code, trigger event and message structure.
    pub fn message_type(&self) -> MessageType<'a> {
        let mut components = self.field_or_empty(9).components();
        let mut next = || {
            components
                .next()
                .map_or(&[][..], |component| component.as_bytes())
        };
        MessageType {
            code: next(),
            trigger: next(),
            structure: next(),
        }
    }

    /// MSH-10, the message control ID, raw: an ACK echoes it byte for byte in MSA-2.
    #[inline]
    pub fn control_id(&self) -> &'a [u8] {
        self.raw_field(10)
    }

    /// MSH-11 component 1, the processing ID (`P` production, `D` debugging, `T` training).
    #[inline]
    pub fn processing_id(&self) -> &'a [u8] {
        self.component(11, 1)
    }

    /// MSH-12 component 1, the version ID as sent (such as `2.5.1`).
    #[inline]
    pub fn version_id(&self) -> &'a [u8] {
        self.component(12, 1)
    }

    /// MSH-12 parsed; `None` unless it reads as one to three dot-separated numbers.
    #[inline]
    pub fn version(&self) -> Option<Version> {
        Version::parse(self.version_id())
    }

    /// MSH-15, the accept acknowledgment type; `None` when empty or absent. With MSH-16 also
    /// `None`, the sender expects original-mode acknowledgment.
    #[inline]
    pub fn accept_ack_type(&self) -> Option<AckCondition> {
        AckCondition::from_code(self.component(15, 1))
    }

    /// MSH-16, the application acknowledgment type; `None` when empty or absent.
    #[inline]
    pub fn application_ack_type(&self) -> Option<AckCondition> {
        AckCondition::from_code(self.component(16, 1))
    }

    /// MSH-18, the character set: its first repetition (later ones name alternate sets for
    /// code extension). Empty means the default, ASCII.
    #[inline]
    pub fn charset(&self) -> &'a [u8] {
        self.field_or_empty(18)
            .repetition(1)
            .map_or(&[], |field| field.as_bytes())
    }
}

/// Records in `separators` the offsets of the field separators in `tail`, up to its first CR
/// or its end, until the table is full; `tail` starts at offset `base` of the message and
/// offsets are counted from the message start. Returns how many were recorded and the offset
/// where the segment ends (its CR, or the end of `tail`).
///
/// This is the one pass of [`Msh::parse`], and most of its cost. It works on eight bytes at a
/// time (SWAR) in safe code: HL7 fields are short, so per-byte branching would dominate.
#[inline]
fn index_fields(
    tail: &[u8],
    base: usize,
    field: u8,
    separators: &mut [usize; INDEXED],
) -> (usize, usize) {
    let field_word = u64::from_ne_bytes([field; 8]);
    let cr_word = u64::from_ne_bytes([SEGMENT_TERMINATOR; 8]);
    let lf_word = u64::from_ne_bytes([b'\n'; 8]);
    let mut indexed = 0;
    let (words, remainder) = tail.as_chunks::<8>();
    let mut word_base = base;
    for word in words {
        // Little-endian load: byte k of the word is bits 8k..8k+8, so lower bits come first.
        let word = u64::from_le_bytes(*word);
        let crs = zero_bytes(word ^ cr_word) | zero_bytes(word ^ lf_word);
        let mut fields = zero_bytes(word ^ field_word);
        if crs != 0 {
            // Only separators before the first CR (or LF) belong to the segment.
            fields &= (crs & crs.wrapping_neg()) - 1;
        }
        while fields != 0 {
            let at = word_base + byte_index(fields);
            fields &= fields - 1;
            let Some(slot) = separators.get_mut(indexed) else {
                return (indexed, segment_end(tail, base, at));
            };
            *slot = at;
            indexed += 1;
        }
        if crs != 0 {
            return (indexed, word_base + byte_index(crs));
        }
        word_base += 8;
    }
    for (at, &byte) in (word_base..).zip(remainder) {
        if byte == SEGMENT_TERMINATOR || byte == b'\n' {
            return (indexed, at);
        }
        if byte == field {
            let Some(slot) = separators.get_mut(indexed) else {
                return (indexed, segment_end(tail, base, at));
            };
            *slot = at;
            indexed += 1;
        }
    }
    (indexed, base + tail.len())
}

/// Offset of the first CR or LF at or after message offset `from`, or of the end of `tail` (which
/// starts at message offset `base`): the segment end once the separator table is full. Rare:
/// only headers with more than 21 fields get here.
#[cold]
fn segment_end(tail: &[u8], base: usize, from: usize) -> usize {
    let rest = tail.get(from - base..).unwrap_or_default();
    rest.iter()
        .position(|&b| b == SEGMENT_TERMINATOR || b == b'\n')
        .map_or(base + tail.len(), |end| from + end)
}

/// The zero bytes of `word`, as the high bit of each such byte (and no other bit set).
///
/// Exact, unlike the shorter `(x - 0x01…) & !x & 0x80…` test whose borrows can flag a 0x01
/// byte after a zero byte: here the low seven bits of each byte are added without carry into
/// the next byte, so every byte is tested on its own.
#[inline]
const fn zero_bytes(word: u64) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    !(((word & LOW7) + LOW7) | word | LOW7)
}

/// Index of the byte flagged by the lowest set bit of a [`zero_bytes`] mask (non-zero).
#[inline]
const fn byte_index(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

impl fmt::Debug for Msh<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Msh")
            .field("header_offset", &self.header_offset)
            .field("delimiters", &self.delimiters)
            .field("segment", &Text(self.as_bytes()))
            .finish()
    }
}

/// MSH-9: what the message is. Each part is empty when not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MessageType<'a> {
    /// MSH-9.1, the message code (table 0076), such as `ADT` or `ORU`.
    pub code: &'a [u8],
    /// MSH-9.2, the trigger event (table 0003), such as `A01` or `R01`.
    pub trigger: &'a [u8],
    /// MSH-9.3, the message structure (table 0354), such as `ADT_A01`; absent before v2.3.1.
    pub structure: &'a [u8],
}

/// An HL7 version number from MSH-12, such as 2.5.1. A missing part reads as 0, so `2.4`
/// is 2.4.0; versions compare in release order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version, 2 for every HL7 v2 message.
    pub major: u8,
    /// Minor version: 5 in 2.5.1.
    pub minor: u8,
    /// Patch version: 1 in 2.5.1, 0 when not given.
    pub patch: u8,
}

impl Version {
    /// Parses `major[.minor[.patch]]`, each part decimal digits up to 255; surrounding ASCII
    /// whitespace is ignored. `None` for anything else (empty, letters, a fourth part).
    pub fn parse(text: &[u8]) -> Option<Self> {
        let mut parts = [0u8; 3];
        let mut pieces = text.trim_ascii().split(|&b| b == b'.');
        // `split` yields at least one piece, so an empty text fails in `parse_u8`.
        for (part, piece) in parts.iter_mut().zip(pieces.by_ref()) {
            *part = parse_u8(piece)?;
        }
        if pieces.next().is_some() {
            return None;
        }
        let [major, minor, patch] = parts;
        Some(Self {
            major,
            minor,
            patch,
        })
    }
}

/// A non-empty run of decimal digits that fits a `u8`.
fn parse_u8(digits: &[u8]) -> Option<u8> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u8, |value, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        value.checked_mul(10)?.checked_add(digit)
    })
}

/// When to send an acknowledgment: MSH-15 and MSH-16 (HL7 table 0155).
///
/// Exhaustive on purpose: the table is closed, and anything outside it is
/// [`Unrecognized`](Self::Unrecognized), so a `match` covers every case without a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCondition {
    /// `AL`: always.
    Always,
    /// `NE`: never.
    Never,
    /// `ER`: only on error or rejection.
    ErrorOnly,
    /// `SU`: only on successful completion.
    SuccessOnly,
    /// A value outside table 0155. Senders do send these; the receiver decides what it means
    /// (usually the same as `AL`).
    Unrecognized,
}

impl AckCondition {
    /// Reads a table 0155 code, ignoring case and surrounding whitespace. `None` when the value
    /// is empty (no condition given), [`Unrecognized`](Self::Unrecognized) when it is not one
    /// of `AL`, `NE`, `ER`, `SU`.
    pub fn from_code(value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        let condition = match value {
            [] => return None,
            [a, b] => match [a.to_ascii_uppercase(), b.to_ascii_uppercase()] {
                [b'A', b'L'] => Self::Always,
                [b'N', b'E'] => Self::Never,
                [b'E', b'R'] => Self::ErrorOnly,
                [b'S', b'U'] => Self::SuccessOnly,
                _ => Self::Unrecognized,
            },
            _ => Self::Unrecognized,
        };
        Some(condition)
    }

    /// The table 0155 code (`AL`, `NE`, `ER`, `SU`); empty for
    /// [`Unrecognized`](Self::Unrecognized), which has none.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Always => "AL",
            Self::Never => "NE",
            Self::ErrorOnly => "ER",
            Self::SuccessOnly => "SU",
            Self::Unrecognized => "",
        }
    }
}
