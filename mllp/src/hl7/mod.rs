//! Zero-copy views of an HL7 v2 message.
//!
//! A [`Message`] borrows the payload bytes of one frame. Nothing is copied or allocated to read
//! it: segments, fields, repetitions, components and subcomponents are sub-slices found on
//! demand. Delimiters always come from the message's own MSH-1 and MSH-2 (never assumed to be
//! `|^~\&`). Segments are split on CR only; messages written with LF or CRLF can be repaired
//! first with [`normalize_segment_terminators`], which is opt-in because a blind LF→CR rewrite
//! corrupts reports that carry LF inside OBX-5 text.
//!
//! [`Msh`] is the fast path for a relay: it reads only the header segment and indexes its
//! fields once, then answers the typed accessors (MSH-3…MSH-18) in constant time.
//!
//! Works for v2.1 through v2.9: nothing here depends on the version beyond what MSH says.

mod escape;
mod msh;
mod normalize;
mod view;

pub use escape::{decode_escapes, encode_escapes};
pub use msh::{AckCondition, MessageType, Msh, Version};
pub use normalize::normalize_segment_terminators;
pub use view::{
    Component, Components, Field, Fields, Message, Repetitions, Segment, Segments, Subcomponents,
};

use crate::error::Hl7Error;

/// The segment terminator of HL7 v2 (§2.5.3): a carriage return.
pub const SEGMENT_TERMINATOR: u8 = b'\r';

/// The UTF-8 byte order mark some senders put before `MSH`; it is skipped, never an error.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The delimiters of one message, read from MSH-1 (field separator) and MSH-2 (encoding
/// characters, in the order component, repetition, escape, subcomponent, truncation).
///
/// MSH-2 may be shorter than the usual four characters in the field (some v2.1 senders send two
/// or three); the missing delimiters are `None` and the matching level of structure simply does
/// not exist in that message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// MSH-1, usually `|`.
    pub field: u8,
    /// First MSH-2 character, usually `^`.
    pub component: Option<u8>,
    /// Second MSH-2 character, usually `~`.
    pub repetition: Option<u8>,
    /// Third MSH-2 character, usually `\`.
    pub escape: Option<u8>,
    /// Fourth MSH-2 character, usually `&`.
    pub subcomponent: Option<u8>,
    /// Fifth MSH-2 character (v2.7 and later), usually `#`.
    pub truncation: Option<u8>,
}

impl Delimiters {
    /// `|^~\&`, the delimiters nearly every sender uses; for building messages from scratch.
    pub const DEFAULT: Self = Self {
        field: b'|',
        component: Some(b'^'),
        repetition: Some(b'~'),
        escape: Some(b'\\'),
        subcomponent: Some(b'&'),
        truncation: None,
    };

    /// Reads the delimiters of a header segment (`MSH`, `FHS` or `BHS`): the byte after the
    /// three-letter segment ID is the field separator, the bytes up to the next field separator
    /// (or the segment end: CR, or LF for senders that end segments with it) are the encoding
    /// characters.
    ///
    /// Returns the delimiters and the offset just past MSH-2 (at the field separator that
    /// starts MSH-3, or at the end of the segment).
    ///
    /// # Errors
    /// [`Hl7Error::TruncatedHeader`] when the segment is shorter than four bytes,
    /// [`Hl7Error::InvalidFieldSeparator`], [`Hl7Error::InvalidEncodingCharacter`] and
    /// [`Hl7Error::DuplicateDelimiter`] for unusable delimiters. The segment ID itself is not
    /// checked here.
    pub fn from_header(segment: &[u8]) -> Result<(Self, usize), Hl7Error> {
        match Self::from_header_lenient(segment)? {
            (delimiters, end, None) => Ok((delimiters, end)),
            (_, _, Some(event)) => Err(event.strict_error()),
        }
    }

    /// Reads the delimiters of a header segment like [`from_header`](Self::from_header), but
    /// reads past an unusual MSH-2 instead of refusing it: a byte that cannot be a delimiter, a
    /// delimiter given twice, or characters past the fifth are skipped, and the first such byte
    /// is returned as a [`HeaderEvent`]. MSH-2 still ends at the first field separator, so every
    /// later field is found exactly as the sender wrote it.
    ///
    /// Whenever [`from_header`](Self::from_header) succeeds this returns the same delimiters and
    /// offset, and no event.
    ///
    /// # Errors
    /// [`Hl7Error::TruncatedHeader`] and [`Hl7Error::InvalidFieldSeparator`]: without a usable
    /// MSH-1 no field can be found.
    pub fn from_header_lenient(
        segment: &[u8],
    ) -> Result<(Self, usize, Option<HeaderEvent>), Hl7Error> {
        let field = match segment.get(3) {
            // A CR (or LF) right after the ID ends the segment before MSH-1: not a bad separator.
            None | Some(&(SEGMENT_TERMINATOR | b'\n')) => return Err(Hl7Error::TruncatedHeader),
            Some(&byte) if !is_delimiter_byte(byte) => {
                return Err(Hl7Error::InvalidFieldSeparator { byte });
            }
            Some(&byte) => byte,
        };
        let mut chars = [None; 5];
        let mut kept = 0;
        let mut first_event = None;
        let mut len = 0;
        for &byte in segment.get(4..).unwrap_or_default() {
            if byte == field || byte == SEGMENT_TERMINATOR || byte == b'\n' {
                break;
            }
            len += 1;
            // The order of the tests decides which event a byte is, and so which error the
            // strict reader reports for it.
            let code = if kept == chars.len() {
                Some(HeaderEventCode::Msh2TooLong)
            } else if !is_delimiter_byte(byte) {
                Some(HeaderEventCode::Msh2InvalidCharacter)
            } else if chars.contains(&Some(byte)) {
                // `byte != field` is known from the loop's exit test above.
                Some(HeaderEventCode::Msh2RepeatedDelimiter)
            } else {
                None
            };
            if let Some(code) = code {
                first_event.get_or_insert(HeaderEvent { code, byte });
            } else if let Some(slot) = chars.get_mut(kept) {
                *slot = Some(byte);
                kept += 1;
            }
        }
        let [component, repetition, escape, subcomponent, truncation] = chars;
        let delimiters = Self {
            field,
            component,
            repetition,
            escape,
            subcomponent,
            truncation,
        };
        Ok((delimiters, 4 + len, first_event))
    }

    /// The MSH-2 encoding characters as they would be written (2 to 5 bytes).
    pub fn encoding_characters(&self) -> impl Iterator<Item = u8> {
        [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
            self.truncation,
        ]
        .into_iter()
        .map_while(|d| d)
    }

    /// Whether `byte` is one of the delimiters.
    pub fn is_delimiter(&self, byte: u8) -> bool {
        byte == self.field || self.encoding_characters().any(|d| d == byte)
    }
}

/// An unusual MSH-2 that a lenient reader ([`Msh::parse_lenient`],
/// [`Delimiters::from_header_lenient`]) read past: what it was and the first byte concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderEvent {
    /// What was tolerated.
    pub code: HeaderEventCode,
    /// The first MSH-2 byte that was skipped.
    pub byte: u8,
}

impl HeaderEvent {
    /// The error the strict reader reports for the same header.
    const fn strict_error(self) -> Hl7Error {
        let byte = self.byte;
        match self.code {
            HeaderEventCode::Msh2RepeatedDelimiter => Hl7Error::DuplicateDelimiter { byte },
            HeaderEventCode::Msh2InvalidCharacter | HeaderEventCode::Msh2TooLong => {
                Hl7Error::InvalidEncodingCharacter { byte }
            }
        }
    }
}

impl core::fmt::Display for HeaderEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = match self.code {
            HeaderEventCode::Msh2RepeatedDelimiter => "a delimiter given twice",
            HeaderEventCode::Msh2InvalidCharacter => "a byte that cannot be a delimiter",
            HeaderEventCode::Msh2TooLong => "more than five encoding characters",
        };
        write!(
            f,
            "{}: MSH-2 has {what} (0x{:02X}), skipped",
            self.code, self.byte
        )
    }
}

/// The kind of an unusual MSH-2. The codes are stable: logs and metric labels use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderEventCode {
    /// A delimiter appears twice in MSH-1/MSH-2 (`^~\\&`, as files copied from escaped source
    /// text have); the second one is skipped.
    Msh2RepeatedDelimiter,
    /// MSH-2 holds a letter, digit, space, control or non-ASCII byte; it is skipped.
    Msh2InvalidCharacter,
    /// MSH-2 holds more than five characters; those past the fifth are skipped.
    Msh2TooLong,
}

impl HeaderEventCode {
    /// Every code, in counter order.
    pub const ALL: [Self; 3] = [
        Self::Msh2RepeatedDelimiter,
        Self::Msh2InvalidCharacter,
        Self::Msh2TooLong,
    ];

    /// The stable code for logs and metric labels, e.g. `HL7_MSH2_REPEATED_DELIMITER`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Msh2RepeatedDelimiter => "HL7_MSH2_REPEATED_DELIMITER",
            Self::Msh2InvalidCharacter => "HL7_MSH2_INVALID_CHARACTER",
            Self::Msh2TooLong => "HL7_MSH2_TOO_LONG",
        }
    }

    /// The position of this code in [`ALL`](Self::ALL), for arrays of counters.
    pub const fn index(self) -> usize {
        match self {
            Self::Msh2RepeatedDelimiter => 0,
            Self::Msh2InvalidCharacter => 1,
            Self::Msh2TooLong => 2,
        }
    }
}

impl core::fmt::Display for HeaderEventCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Strips a leading UTF-8 byte order mark; returns the rest.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes)
}

/// Whether `bytes` starts with a plausible segment ID (an upper-case letter, then two
/// upper-case letters or digits) followed by `field_separator` or the end of the segment.
///
/// "End of the segment" is a CR, an LF or the end of `bytes`: this is the test
/// [`normalize_segment_terminators`] uses to tell a segment boundary from an LF inside text.
pub fn starts_with_segment_id(bytes: &[u8], field_separator: u8) -> bool {
    let id_char = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    match bytes {
        [first, second, third, rest @ ..]
            if first.is_ascii_uppercase() && id_char(second) && id_char(third) =>
        {
            matches!(rest.first(), None | Some(&(b'\r' | b'\n')))
                || rest.first() == Some(&field_separator)
        }
        _ => false,
    }
}

/// Whether `byte` may serve as a delimiter: printable ASCII that is neither a letter nor a
/// digit. Letters and digits would collide with segment IDs, hex escapes and data; space and
/// control bytes would be invisible or clash with framing.
const fn is_delimiter_byte(byte: u8) -> bool {
    byte.is_ascii_graphic() && !byte.is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests;
