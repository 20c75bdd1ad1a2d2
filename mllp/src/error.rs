//! Error types of the core.
//!
//! All are small, `Copy`, allocation-free and `#[non_exhaustive]`: they are returned on hot
//! paths and matched by drivers to pick an ACK code, a counter and a log line. Offsets are
//! absolute byte positions in the stream (for framing) or in the message (for HL7), so a log
//! line can point at the exact byte.

use thiserror::Error;

use crate::ack::ErrorCode;

/// A framing configuration that cannot work.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The end sequence must be one or two bytes long.
    #[error("the end sequence must be 1 or 2 bytes long, got {len}")]
    EndSequenceLength {
        /// Length that was given.
        len: usize,
    },
    /// The start byte also appears in the end sequence, so frames could not be delimited.
    #[error("the start byte 0x{byte:02X} also appears in the end sequence")]
    StartByteInEndSequence {
        /// The clashing byte.
        byte: u8,
    },
    /// A framing byte that a message can hold: a printable or non-ASCII byte (a delimiter or
    /// data), LF, or CR anywhere but as the second end byte.
    #[error(
        "0x{byte:02X} cannot be a framing byte: messages can hold it (use a control byte \
         0x00-0x1F or 0x7F other than LF and CR; CR only as the second end byte)"
    )]
    NotAFrameByte {
        /// The refused byte.
        byte: u8,
    },
    /// The maximum frame length must be at least one byte.
    #[error("the maximum frame length must be at least 1 byte")]
    ZeroMaxFrameLength,
}

/// A violation of MLLP framing, found while decoding a stream.
///
/// Any of these ends the connection in a relay: after a framing error the stream position of
/// the next message is unknown. `offset` is the absolute stream offset of the offending byte.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A byte other than the start byte where a frame should begin.
    #[error(
        "byte 0x{byte:02X} outside a frame at stream offset {offset} (expected the start byte)"
    )]
    DataOutsideFrame {
        /// Stream offset of the byte.
        offset: u64,
        /// The byte found.
        byte: u8,
    },
    /// A start byte inside a frame, before its end sequence.
    #[error("start byte inside a frame at stream offset {offset} (frame began at {frame_offset})")]
    StartInsideFrame {
        /// Stream offset of the second start byte.
        offset: u64,
        /// Stream offset of the start byte of the unfinished frame.
        frame_offset: u64,
    },
    /// The first end byte followed by something other than the second end byte.
    #[error(
        "end byte followed by 0x{found:02X} at stream offset {offset} (expected the second end byte)"
    )]
    BadTrailer {
        /// Stream offset of the unexpected byte.
        offset: u64,
        /// The byte found.
        found: u8,
    },
    /// The frame grew past the maximum payload length before its end sequence arrived.
    #[error("frame at stream offset {frame_offset} exceeds the maximum of {limit} bytes")]
    Oversize {
        /// Stream offset of the frame's start byte.
        frame_offset: u64,
        /// The configured maximum payload length.
        limit: usize,
    },
    /// The stream ended inside a frame.
    #[error(
        "stream ended inside the frame that began at stream offset {frame_offset} ({buffered} bytes buffered)"
    )]
    Truncated {
        /// Stream offset of the frame's start byte.
        frame_offset: u64,
        /// Payload bytes received for the unfinished frame.
        buffered: usize,
    },
}

/// A payload the encoder refuses to frame.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The payload contains a framing byte, which would end or restart the frame early.
    #[error("payload contains framing byte 0x{byte:02X} at offset {offset}")]
    FramingByteInPayload {
        /// Offset in the payload.
        offset: usize,
        /// The framing byte.
        byte: u8,
    },
    /// The payload is longer than the configured maximum frame length.
    #[error("payload of {len} bytes exceeds the maximum frame length of {limit} bytes")]
    Oversize {
        /// Payload length.
        len: usize,
        /// Configured maximum.
        limit: usize,
    },
}

/// A message whose header cannot be read.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Hl7Error {
    /// The message does not begin with `MSH` (after an optional UTF-8 byte order mark).
    #[error("message does not begin with an MSH segment")]
    MissingHeader,
    /// The header segment ends before MSH-1 and MSH-2 are complete.
    #[error("header segment is truncated before its delimiters (MSH-1/MSH-2)")]
    TruncatedHeader,
    /// MSH-1 is not a usable field separator (a letter, digit, space or control byte).
    #[error("invalid field separator 0x{byte:02X} in MSH-1")]
    InvalidFieldSeparator {
        /// The byte found.
        byte: u8,
    },
    /// MSH-2 holds an unusable encoding character (a letter, digit, space or control byte), or
    /// more than five of them.
    #[error("invalid encoding character 0x{byte:02X} in MSH-2")]
    InvalidEncodingCharacter {
        /// The byte found.
        byte: u8,
    },
    /// Two delimiters are the same byte, so fields could not be told apart.
    #[error("delimiter 0x{byte:02X} is used twice in MSH-1/MSH-2")]
    DuplicateDelimiter {
        /// The repeated byte.
        byte: u8,
    },
}

/// Text that cannot be escaped with the message's delimiters.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EscapeError {
    /// The text contains a delimiter but MSH-2 defines no escape character.
    #[error(
        "byte 0x{byte:02X} at offset {offset} needs escaping but MSH-2 defines no escape character"
    )]
    NoEscapeCharacter {
        /// Offset in the text.
        offset: usize,
        /// The byte that needed escaping.
        byte: u8,
    },
}

/// An ACK that cannot be read.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AckError {
    /// The ACK's own header is unreadable.
    #[error("ACK header: {0}")]
    Header(#[from] Hl7Error),
    /// The message has no MSA segment.
    #[error("ACK has no MSA segment")]
    MissingMsa,
    /// MSA-1 is not one of AA, AE, AR, CA, CE, CR.
    #[error("MSA-1 is not an acknowledgment code (AA, AE, AR, CA, CE, CR)")]
    UnknownCode,
}

/// A batch file whose structure or counts are wrong.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The file's first header (FHS, BHS or MSH) is unreadable.
    #[error("batch header: {0}")]
    Header(#[from] Hl7Error),
    /// The file holds no message at all.
    #[error("batch holds no message")]
    Empty,
    /// A segment appears where the batch structure does not allow it.
    #[error("unexpected {segment} segment at offset {offset}")]
    UnexpectedSegment {
        /// The segment ID (`FHS`, `BHS`, `BTS`, `FTS`, or `???` for a segment before any MSH).
        segment: SegmentName,
        /// Byte offset of the segment in the file.
        offset: usize,
    },
    /// BTS-1 does not match the number of messages in its batch.
    #[error("BTS-1 declares {declared} messages but the batch at offset {offset} holds {found}")]
    BatchCountMismatch {
        /// The count in BTS-1.
        declared: u64,
        /// The messages actually present.
        found: u64,
        /// Byte offset of the BTS segment.
        offset: usize,
    },
    /// FTS-1 does not match the number of batches in the file.
    #[error("FTS-1 declares {declared} batches but the file holds {found}")]
    FileCountMismatch {
        /// The count in FTS-1.
        declared: u64,
        /// The batches actually present.
        found: u64,
        /// Byte offset of the FTS segment.
        offset: usize,
    },
    /// BTS-1 or FTS-1 is not a number.
    #[error("count at offset {offset} is not a number")]
    BadCount {
        /// Byte offset of the count field.
        offset: usize,
    },
}

/// A three-letter segment name held by value, so [`BatchError`] stays `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentName(pub [u8; 3]);

impl core::fmt::Display for SegmentName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for &b in &self.0 {
            let c = if b.is_ascii_graphic() { b as char } else { '?' };
            core::fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

/// A character set that cannot be used, or bytes that are not valid in one.
///
/// The name errors carry the name as it was given (see [`CharsetName`]), so the message alone
/// tells an integration engineer what the sender wrote.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CharsetError {
    /// The name is neither an HL7 table 0211 value nor a WHATWG label.
    #[error("character set \"{name}\" is not an HL7 table 0211 value or a known label")]
    Unknown {
        /// The name as given, trimmed.
        name: CharsetName,
    },
    /// The set is not ASCII-compatible (UTF-16, UTF-32, ISO 2022 sets): MLLP framing and HL7
    /// delimiters would not survive it.
    #[error(
        "character set \"{name}\" is not ASCII-compatible: MLLP framing and HL7 delimiters \
         need ASCII bytes"
    )]
    NotAsciiCompatible {
        /// The name as given, trimmed.
        name: CharsetName,
    },
    /// An HL7 table 0211 value with no code-page table here (`ISO IR14`, `CNS 11643-1992`,
    /// `JAS2020`).
    #[error("character set \"{name}\" is an HL7 table 0211 value this relay cannot transcode")]
    Unsupported {
        /// The name as given, trimmed.
        name: CharsetName,
    },
    /// A byte sequence that is not valid in the character set.
    #[error("byte 0x{byte:02X} at offset {offset} is not valid {charset}")]
    Invalid {
        /// Offset in the message of the first byte of the invalid sequence.
        offset: usize,
        /// That byte.
        byte: u8,
        /// The character set's name, as
        /// [`Charset::name`](crate::charset::Charset::name) gives it.
        charset: &'static str,
    },
    /// The message's header is unreadable, so MSH-18 cannot be found.
    #[error("message header: {0}")]
    Header(#[from] Hl7Error),
}

impl CharsetError {
    /// The HL7 table 0357 code for the ERR segment of an ACK refusing the message: 103 (table
    /// value not found) for a character set that cannot be used, 102 (data type error) for
    /// bytes that are not valid in it; for an unreadable header, what a relay reports for one.
    pub const fn error_code(&self) -> ErrorCode {
        match self {
            Self::Unknown { .. } | Self::NotAsciiCompatible { .. } | Self::Unsupported { .. } => {
                ErrorCode::TableValueNotFound
            }
            Self::Header(Hl7Error::MissingHeader) => ErrorCode::SegmentSequence,
            Self::Invalid { .. } | Self::Header(_) => ErrorCode::DataType,
        }
    }
}

/// A character-set name held by value, so [`CharsetError`] stays `Copy`: the first
/// [`CAPACITY`](Self::CAPACITY) bytes of the name as given, enough for every HL7 table 0211
/// value and nearly every label.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CharsetName {
    bytes: [u8; Self::CAPACITY],
    len: u8,
    /// Whether the name was longer than what is kept.
    cut: bool,
}

impl CharsetName {
    /// How many bytes of a name are kept.
    pub const CAPACITY: usize = 24;

    /// Keeps the first [`CAPACITY`](Self::CAPACITY) bytes of `name`.
    pub(crate) fn new(name: &[u8]) -> Self {
        let mut bytes = [0; Self::CAPACITY];
        let kept = name.len().min(Self::CAPACITY);
        for (slot, &b) in bytes.iter_mut().zip(name) {
            *slot = b;
        }
        Self {
            bytes,
            len: u8::try_from(kept).unwrap_or(u8::MAX),
            cut: name.len() > Self::CAPACITY,
        }
    }

    /// The bytes kept.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// Whether the name was longer than [`CAPACITY`](Self::CAPACITY) and is cut.
    pub fn is_cut(&self) -> bool {
        self.cut
    }
}

/// Printable ASCII as is, other bytes as `\xNN`, and `…` after a cut name.
impl core::fmt::Display for CharsetName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for &b in self.as_bytes() {
            if b == b' ' || b.is_ascii_graphic() {
                core::fmt::Write::write_char(f, char::from(b))?;
            } else {
                write!(f, "\\x{b:02X}")?;
            }
        }
        if self.cut {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl core::fmt::Debug for CharsetName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "\"{self}\"")
    }
}
