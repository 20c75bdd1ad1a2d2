//! Character sets (MSH-18): reading their names, checking payload bytes against them, and
//! transcoding whole messages to UTF-8 and back.
//!
//! A relay passes payload bytes through unchanged unless a listener asks for transcoding: then
//! it reads the sender's character set with [`charset_of`], converts the message with
//! [`transcode_to_utf8`] (which also rewrites MSH-18 to `UNICODE UTF-8`, so the receiver reads
//! the bytes as what they now are), and converts the receiver's ACK back with
//! [`transcode_from_utf8`], restoring the sender's MSH-18. The code-page tables are
//! `encoding_rs`'s; this module only decides which table a name means and how strictly to read.
//!
//! # What a name means
//! HL7 table 0211 values come first, compared case-insensitively: `ASCII` (or `ISO IR6`),
//! `8859/1` to `8859/15` (there is no part 12), `UNICODE UTF-8`, `GB 18030-2000`, `BIG-5` and
//! `KS X 1001` (read as WHATWG's EUC-KR, a superset of its EUC form). Any other name is tried as
//! a WHATWG label (`windows-1252`, `cp1252`, `utf-8`, `shift_jis`…), because senders write
//! those too. Three corrections to WHATWG, which folds ISO sets into the Windows code pages
//! that extend them (right for web pages, wrong for HL7, where `8859/1` means ISO 8859-1):
//! - `8859/1` and the labels `iso-8859-1`, `latin1` and the like are true ISO 8859-1: byte `b`
//!   is U+00`b`, so 0x80 is the C1 control U+0080, never `€`.
//! - `8859/9` (and `iso-8859-9`…) and `8859/11` (and `tis-620`…) are ISO 8859-9 and ISO
//!   8859-11: C1 controls in 0x80–0x9F, and elsewhere Windows-1254 and Windows-874, which agree
//!   with them on every other byte. `encoding_rs` has no separate table for either.
//! - `us-ascii` and `ascii` are strict ASCII, not Windows-1252.
//!
//! A Windows code page (`windows-1250` to `windows-1258`, `windows-874`) leaves a few bytes of
//! 0x80–0x9F unassigned (in Windows-1252: 0x81, 0x8D, 0x8F, 0x90 and 0x9D). WHATWG decodes
//! them to the C1 controls of the same number so web pages never fail; a sender that writes
//! Windows-1252 never means a C1 control, so here those bytes are invalid, and C1 controls
//! cannot be encoded into a Windows code page. Likewise `¥` and `‾` cannot be encoded into
//! Shift_JIS or EUC-JP: WHATWG writes them as 0x5C and 0x7E, which HL7 reads as its escape and
//! repetition characters.
//!
//! # What is refused
//! A character set must be ASCII-compatible: MLLP framing bytes and HL7 delimiters are ASCII
//! bytes, and a message must stay parseable byte by byte. UTF-16 and UTF-32 (`UNICODE`,
//! `UNICODE UTF-16`, `UNICODE UTF-32`) and ISO 2022 sets switched in by escape sequences
//! (`ISO IR87`, `ISO IR159`, `JIS X 0202`, ISO-2022-JP), whose two-byte codes reuse the
//! delimiter bytes, are refused with [`CharsetError::NotAsciiCompatible`]. Table values without
//! a table in `encoding_rs` (`ISO IR14`, `CNS 11643-1992`, `JAS2020`) are refused with
//! [`CharsetError::Unsupported`].
//!
//! Big5, GB 18030 and Shift_JIS are ASCII-compatible in that sense but their second bytes can
//! equal `|`, `^`, `~` or `\`: a byte-level view of such a message may split inside a
//! character. Transcoding reads the whole message as text first, so it is not affected.

use core::fmt;
use core::ops::RangeInclusive;

use encoding_rs::{
    BIG5_INIT, DecoderResult, EUC_KR_INIT, EncoderResult, Encoding, GB18030_INIT, ISO_8859_2_INIT,
    ISO_8859_3_INIT, ISO_8859_4_INIT, ISO_8859_5_INIT, ISO_8859_6_INIT, ISO_8859_7_INIT,
    ISO_8859_8_INIT, ISO_8859_10_INIT, ISO_8859_13_INIT, ISO_8859_14_INIT, ISO_8859_15_INIT,
    WINDOWS_874_INIT, WINDOWS_1254_INIT, mem,
};

use crate::error::{CharsetError, CharsetName};
use crate::hl7::{Msh, SEGMENT_TERMINATOR};

/// The MSH-18 value of a message transcoded to UTF-8.
const UTF8_MSH18: &[u8] = b"UNICODE UTF-8";

/// Size of the stack buffer that `encoding_rs` decodes into and encodes into: large enough for
/// any single character, small enough for the stack.
const CHUNK: usize = 4096;

/// The C1 control range of an 8-bit character set, as bytes.
const C1: RangeInclusive<u8> = 0x80..=0x9F;

/// A character set a payload can be in: one of HL7 table 0211 or a WHATWG label, always
/// ASCII-compatible. See the [module documentation](self) for how names are read.
///
/// ```
/// use mllp::charset::Charset;
///
/// let cs = Charset::from_msh18(b"8859/1")?;
/// assert_eq!(cs, Charset::LATIN1);
/// assert!(cs.check(b"caf\xE9").is_ok());
/// assert_eq!(Charset::from_name("cp1252")?.name(), "windows-1252");
/// # Ok::<(), mllp::CharsetError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Charset {
    kind: Kind,
    /// The table 0211 value when there is one, else the `encoding_rs` name.
    name: &'static str,
}

/// How bytes of a [`Charset`] are read.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Bytes 0x00–0x7F only.
    Ascii,
    /// ISO 8859-1: byte `b` is U+00`b`.
    Latin1,
    /// UTF-8, strictly.
    Utf8,
    /// A Windows single-byte code page; bit `b - 0x80` of `holes` is set for each byte of
    /// 0x80–0x9F that it leaves unassigned.
    Windows {
        encoding: &'static Encoding,
        holes: u32,
    },
    /// An ISO 8859 part `encoding_rs` lacks: C1 controls in 0x80–0x9F, elsewhere the Windows code
    /// page that extends it.
    IsoC1 { windows: &'static Encoding },
    /// Any other ASCII-compatible encoding, exactly as `encoding_rs` reads it.
    Other(&'static Encoding),
}

/// Why a known name cannot be used.
#[derive(Clone, Copy)]
enum Refusal {
    NotAsciiCompatible,
    Unsupported,
}

/// HL7 table 0211 as this module reads it, plus the ISO 8859 parts up to 15 that the table
/// lacks and `encoding_rs` can read (10, 11, 13, 14). A label `encoding_rs` maps to one of
/// these encodings reads as the table's charset, name included.
static TABLE_0211: [(&str, Result<Charset, Refusal>); 29] = [
    ("ASCII", Ok(Charset::ASCII)),
    ("ISO IR6", Ok(Charset::ASCII)),
    ("8859/1", Ok(Charset::LATIN1)),
    ("8859/2", Ok(other(&ISO_8859_2_INIT, "8859/2"))),
    ("8859/3", Ok(other(&ISO_8859_3_INIT, "8859/3"))),
    ("8859/4", Ok(other(&ISO_8859_4_INIT, "8859/4"))),
    ("8859/5", Ok(other(&ISO_8859_5_INIT, "8859/5"))),
    ("8859/6", Ok(other(&ISO_8859_6_INIT, "8859/6"))),
    ("8859/7", Ok(other(&ISO_8859_7_INIT, "8859/7"))),
    ("8859/8", Ok(other(&ISO_8859_8_INIT, "8859/8"))),
    ("8859/9", Ok(ISO_8859_9)),
    ("8859/10", Ok(other(&ISO_8859_10_INIT, "8859/10"))),
    ("8859/11", Ok(ISO_8859_11)),
    ("8859/13", Ok(other(&ISO_8859_13_INIT, "8859/13"))),
    ("8859/14", Ok(other(&ISO_8859_14_INIT, "8859/14"))),
    ("8859/15", Ok(other(&ISO_8859_15_INIT, "8859/15"))),
    ("UNICODE UTF-8", Ok(Charset::UTF8)),
    ("GB 18030-2000", Ok(other(&GB18030_INIT, "GB 18030-2000"))),
    ("BIG-5", Ok(other(&BIG5_INIT, "BIG-5"))),
    ("KS X 1001", Ok(other(&EUC_KR_INIT, "KS X 1001"))),
    ("UNICODE", Err(Refusal::NotAsciiCompatible)),
    ("UNICODE UTF-16", Err(Refusal::NotAsciiCompatible)),
    ("UNICODE UTF-32", Err(Refusal::NotAsciiCompatible)),
    ("ISO IR87", Err(Refusal::NotAsciiCompatible)),
    ("ISO IR159", Err(Refusal::NotAsciiCompatible)),
    ("JIS X 0202", Err(Refusal::NotAsciiCompatible)),
    ("ISO IR14", Err(Refusal::Unsupported)),
    ("CNS 11643-1992", Err(Refusal::Unsupported)),
    ("JAS2020", Err(Refusal::Unsupported)),
];

/// ISO 8859-9: Windows-1254 with C1 controls in 0x80–0x9F.
const ISO_8859_9: Charset = iso_c1(&WINDOWS_1254_INIT, "8859/9");

/// ISO 8859-11: Windows-874 with C1 controls in 0x80–0x9F.
const ISO_8859_11: Charset = iso_c1(&WINDOWS_874_INIT, "8859/11");

/// Characters outside ASCII that WHATWG's Shift_JIS and EUC-JP encoders write as ASCII bytes,
/// for JIS X 0201 Roman: `¥` as 0x5C and `‾` as 0x7E. In HL7 those bytes are the escape and
/// repetition characters, so these are written as `?` instead.
const ASCII_LOOKALIKES: [char; 2] = ['\u{A5}', '\u{203E}'];

/// Names of UTF-32, which WHATWG does not define (so `encoding_rs` has no label for it).
const UTF32_NAMES: [&str; 5] = ["UTF-32", "UTF-32LE", "UTF-32BE", "UCS-4", "UTF32"];

const fn other(encoding: &'static Encoding, name: &'static str) -> Charset {
    Charset {
        kind: Kind::Other(encoding),
        name,
    }
}

const fn iso_c1(windows: &'static Encoding, name: &'static str) -> Charset {
    Charset {
        kind: Kind::IsoC1 { windows },
        name,
    }
}

impl Charset {
    /// ASCII, the HL7 default when MSH-18 is empty: bytes 0x00–0x7F.
    pub const ASCII: Self = Self {
        kind: Kind::Ascii,
        name: "ASCII",
    };

    /// ISO 8859-1 (`8859/1`): every byte is the code point of the same number.
    pub const LATIN1: Self = Self {
        kind: Kind::Latin1,
        name: "8859/1",
    };

    /// UTF-8 (`UNICODE UTF-8`).
    pub const UTF8: Self = Self {
        kind: Kind::Utf8,
        name: "UNICODE UTF-8",
    };

    /// Reads an MSH-18 value (one repetition): an HL7 table 0211 value or a WHATWG label,
    /// compared case-insensitively after trimming surrounding whitespace.
    ///
    /// # Errors
    /// [`CharsetError::Unknown`] for a name that is neither (an empty one included),
    /// [`CharsetError::NotAsciiCompatible`] for UTF-16, UTF-32 and ISO 2022 sets,
    /// [`CharsetError::Unsupported`] for table values without a code-page table here.
    pub fn from_msh18(value: &[u8]) -> Result<Self, CharsetError> {
        let value = value.trim_ascii();
        let refused = |refusal| {
            let name = CharsetName::new(value);
            match refusal {
                Refusal::NotAsciiCompatible => CharsetError::NotAsciiCompatible { name },
                Refusal::Unsupported => CharsetError::Unsupported { name },
            }
        };
        let is = |name: &str| value.eq_ignore_ascii_case(name.as_bytes());
        if let Some((_, entry)) = TABLE_0211.iter().find(|(name, _)| is(name)) {
            return entry.map_err(refused);
        }
        if UTF32_NAMES.iter().any(|name| is(name)) {
            return Err(refused(Refusal::NotAsciiCompatible));
        }
        let Some(encoding) = Encoding::for_label(value) else {
            return Err(CharsetError::Unknown {
                name: CharsetName::new(value),
            });
        };
        if !encoding.is_ascii_compatible() {
            return Err(refused(Refusal::NotAsciiCompatible));
        }
        Ok(Self::from_label(encoding, value))
    }

    /// Reads a character-set name from configuration (a listener's declared default), by the
    /// same rules as [`from_msh18`](Self::from_msh18).
    ///
    /// # Errors
    /// As [`from_msh18`](Self::from_msh18).
    pub fn from_name(name: &str) -> Result<Self, CharsetError> {
        Self::from_msh18(name.as_bytes())
    }

    /// The charset `encoding_rs` found for `label`, with the corrections the module
    /// documentation lists for ISO sets WHATWG folds into Windows code pages.
    fn from_label(encoding: &'static Encoding, label: &[u8]) -> Self {
        let names_windows = {
            let has = |part: &[u8]| {
                label
                    .windows(part.len())
                    .any(|w| w.eq_ignore_ascii_case(part))
            };
            has(b"windows") || has(b"cp125") || label.eq_ignore_ascii_case(b"dos-874")
        };
        let is_ascii_label = [&b"ascii"[..], b"us-ascii", b"ansi_x3.4-1968"]
            .iter()
            .any(|name| label.eq_ignore_ascii_case(name));
        if encoding == encoding_rs::UTF_8 {
            Self::UTF8
        } else if encoding == encoding_rs::WINDOWS_1252 && is_ascii_label {
            Self::ASCII
        } else if encoding == encoding_rs::WINDOWS_1252 && !names_windows {
            Self::LATIN1
        } else if encoding == encoding_rs::WINDOWS_1254 && !names_windows {
            ISO_8859_9
        } else if encoding == encoding_rs::WINDOWS_874 && !names_windows {
            ISO_8859_11
        } else if let Some(charset) = TABLE_0211.iter().find_map(|(_, entry)| match entry {
            Ok(charset) if charset.kind == Kind::Other(encoding) => Some(*charset),
            _ => None,
        }) {
            charset
        } else if encoding.is_single_byte() && encoding.name().starts_with("windows-") {
            Self {
                kind: Kind::Windows {
                    encoding,
                    holes: holes(encoding),
                },
                name: encoding.name(),
            }
        } else {
            Self {
                kind: Kind::Other(encoding),
                name: encoding.name(),
            }
        }
    }

    /// The name for logs and errors: the HL7 table 0211 value when the set has one (`ASCII`,
    /// `8859/1`, `UNICODE UTF-8`, `BIG-5`…), else the WHATWG name (`windows-1252`, `Shift_JIS`).
    #[inline]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether every byte sequence of `bytes` is valid in this character set: for ASCII, bytes
    /// below 0x80; for ISO 8859-1, any byte; for UTF-8, strict UTF-8; for a Windows code page,
    /// any byte but the ones it leaves unassigned; otherwise what `encoding_rs` decodes without
    /// error. The bytes are read as given (a byte order mark is data here).
    ///
    /// # Errors
    /// [`CharsetError::Invalid`] with the offset of the first invalid sequence.
    pub fn check(&self, bytes: &[u8]) -> Result<(), CharsetError> {
        if self.kind == Kind::Latin1 {
            return Ok(());
        }
        self.decode(bytes, &mut |_| {})
            .map_err(|offset| self.invalid(bytes, offset))
    }

    /// The error for the invalid sequence at `offset` of `bytes`.
    fn invalid(&self, bytes: &[u8], offset: usize) -> CharsetError {
        CharsetError::Invalid {
            offset,
            byte: bytes.get(offset).copied().unwrap_or_default(),
            charset: self.name,
        }
    }

    /// Decodes `src` strictly, handing its UTF-8 to `sink` piece by piece; on an invalid
    /// sequence, stops with its offset (what was handed over until then is valid).
    fn decode(&self, src: &[u8], sink: &mut impl FnMut(&[u8])) -> Result<(), usize> {
        match self.kind {
            Kind::Ascii => {
                let valid = Encoding::ascii_valid_up_to(src);
                sink(src.get(..valid).unwrap_or_default());
                if valid < src.len() {
                    Err(valid)
                } else {
                    Ok(())
                }
            }
            Kind::Latin1 => {
                let mut buf = [0; CHUNK];
                let mut rest = src;
                while !rest.is_empty() {
                    let (read, written) = mem::convert_latin1_to_utf8_partial(rest, &mut buf);
                    sink(buf.get(..written).unwrap_or_default());
                    rest = rest.get(read..).unwrap_or_default();
                }
                Ok(())
            }
            Kind::Utf8 => match core::str::from_utf8(src) {
                Ok(_) => {
                    sink(src);
                    Ok(())
                }
                Err(error) => Err(error.valid_up_to()),
            },
            Kind::Windows { encoding, holes } => {
                let end = src
                    .iter()
                    .position(|&b| is_hole(holes, b))
                    .unwrap_or(src.len());
                decode_run(encoding, src.get(..end).unwrap_or_default(), 0, sink)?;
                if end < src.len() { Err(end) } else { Ok(()) }
            }
            Kind::IsoC1 { windows } => {
                let mut at = 0;
                loop {
                    let rest = src.get(at..).unwrap_or_default();
                    let run = rest
                        .iter()
                        .position(|b| C1.contains(b))
                        .unwrap_or(rest.len());
                    decode_run(windows, rest.get(..run).unwrap_or_default(), at, sink)?;
                    let Some(&control) = rest.get(run) else {
                        return Ok(());
                    };
                    // U+0080–U+009F in UTF-8: 0xC2 then the byte itself.
                    sink(&[0xC2, control]);
                    at += run + 1;
                }
            }
            Kind::Other(encoding) => decode_run(encoding, src, 0, sink),
        }
    }

    /// Encodes `text` into `out`, writing `?` for each character this set cannot represent;
    /// returns how many there were.
    fn encode(&self, text: &str, out: &mut Vec<u8>) -> usize {
        match self.kind {
            Kind::Ascii => encode_prefixes(
                text,
                out,
                |s| Encoding::ascii_valid_up_to(s.as_bytes()),
                |s, out| {
                    out.extend_from_slice(s.as_bytes());
                },
            ),
            Kind::Latin1 => encode_prefixes(text, out, mem::str_latin1_up_to, |s, out| {
                let start = out.len();
                out.resize(start + s.len(), 0);
                let written = mem::convert_utf8_to_latin1_lossy(
                    s.as_bytes(),
                    out.get_mut(start..).unwrap_or_default(),
                );
                out.truncate(start + written);
            }),
            Kind::Utf8 => {
                out.extend_from_slice(text.as_bytes());
                0
            }
            Kind::Windows { encoding, .. } => {
                // Every C1 control is unmappable: either the code page puts a character at its
                // byte, or leaves the byte unassigned.
                split_chars(text, is_c1, |piece| match piece {
                    Piece::Text(run) => encode_run(encoding, run, out),
                    Piece::Special(_) => {
                        out.push(b'?');
                        1
                    }
                })
            }
            Kind::IsoC1 { windows } => split_chars(text, is_c1, |piece| match piece {
                Piece::Text(run) => {
                    let start = out.len();
                    let mut replaced = encode_run(windows, run, out);
                    // One byte per character: a byte in 0x80–0x9F is a character only the
                    // Windows code page has (such as `€`).
                    for byte in out.get_mut(start..).unwrap_or_default() {
                        if C1.contains(byte) {
                            *byte = b'?';
                            replaced += 1;
                        }
                    }
                    replaced
                }
                Piece::Special(control) => {
                    out.push(u8::try_from(control).unwrap_or(b'?'));
                    0
                }
            }),
            Kind::Other(encoding)
                if encoding == encoding_rs::SHIFT_JIS || encoding == encoding_rs::EUC_JP =>
            {
                split_chars(
                    text,
                    |c| ASCII_LOOKALIKES.contains(&c),
                    |piece| match piece {
                        Piece::Text(run) => encode_run(encoding, run, out),
                        Piece::Special(_) => {
                            out.push(b'?');
                            1
                        }
                    },
                )
            }
            Kind::Other(encoding) => encode_run(encoding, text, out),
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Debug for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Charset").field(&self.name).finish()
    }
}

/// The character set of a message: the first repetition of MSH-18 (later ones name alternate
/// sets for escape sequences, which the relay passes through as they are), or `default` when
/// it is empty.
///
/// # Errors
/// As [`Charset::from_msh18`].
pub fn charset_of(msh: &Msh<'_>, default: Charset) -> Result<Charset, CharsetError> {
    let value = msh.charset();
    if value.trim_ascii().is_empty() {
        Ok(default)
    } else {
        Charset::from_msh18(value)
    }
}

/// Decodes a whole message from `from` into UTF-8 in `out` (cleared first), and sets the first
/// repetition of MSH-18 to `UNICODE UTF-8`, keeping later repetitions and adding empty fields
/// up to MSH-18 when the header has fewer. A UTF-8 byte order mark in front of `MSH` is kept.
/// When `from` is UTF-8, the bytes are only checked and MSH-18 set.
///
/// Delimiters are ASCII, so every field keeps its position; MSH-18 is found in the decoded
/// text, where a multi-byte character can no longer pass for a delimiter.
///
/// ```
/// use mllp::charset::{Charset, transcode_to_utf8};
///
/// let cp1252 = Charset::from_name("windows-1252")?;
/// let mut out = Vec::new();
/// transcode_to_utf8(b"MSH|^~\\&|A\rNTE|||\x80 9\r", cp1252, &mut out)?;
/// assert_eq!(out, "MSH|^~\\&|A|||||||||||||||UNICODE UTF-8\rNTE|||€ 9\r".as_bytes());
/// # Ok::<(), mllp::CharsetError>(())
/// ```
///
/// # Errors
/// [`CharsetError::Header`] when the message does not start with a readable MSH;
/// [`CharsetError::Invalid`] with the offset in `message` of the first sequence that is not
/// valid in `from` (as [`Charset::check`] would report it); `out` then holds no usable message.
pub fn transcode_to_utf8(
    message: &[u8],
    from: Charset,
    out: &mut Vec<u8>,
) -> Result<(), CharsetError> {
    out.clear();
    let msh = Msh::parse_lenient(message)?;
    let delimiters = msh.delimiters();
    let bom = msh.header_offset();
    let body = message.get(bom..).unwrap_or_default();

    out.reserve(message.len() + UTF8_MSH18.len());
    out.extend_from_slice(message.get(..bom).unwrap_or_default());
    from.decode(body, &mut |utf8| out.extend_from_slice(utf8))
        .map_err(|offset| from.invalid(message, bom + offset))?;

    let decoded = out.get(bom..).unwrap_or_default();
    let field = locate_msh18(decoded, delimiters.field);
    let value = decoded.get(field.start..field.end).unwrap_or_default();
    let first_end = delimiters
        .repetition
        .and_then(|rep| value.iter().position(|&b| b == rep))
        .map_or(field.end, |pos| field.start + pos);
    let replacement =
        core::iter::repeat_n(delimiters.field, field.missing).chain(UTF8_MSH18.iter().copied());
    out.splice(bom + field.start..bom + first_end, replacement);
    Ok(())
}

/// Encodes a whole UTF-8 message (an ACK from a UTF-8 receiver) into `to` in `out` (cleared
/// first), writing `msh18` (the sender's original MSH-18, raw, possibly empty) as the whole
/// MSH-18 field, adding empty fields up to it when the header has fewer (none when `msh18` is
/// empty). A UTF-8 byte order mark in front of `MSH` is kept only when `to` is UTF-8.
///
/// Returns how many characters `to` cannot represent: each is written as `?`.
///
/// # Errors
/// [`CharsetError::Invalid`] with the offset of the first invalid UTF-8 sequence (the caller
/// may then pass the bytes on unchanged); [`CharsetError::Header`] when the message does not
/// start with a readable MSH.
pub fn transcode_from_utf8(
    message: &[u8],
    to: Charset,
    msh18: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, CharsetError> {
    out.clear();
    let text = core::str::from_utf8(message)
        .map_err(|error| Charset::UTF8.invalid(message, error.valid_up_to()))?;
    let msh = Msh::parse_lenient(message)?;
    let separator = msh.delimiters().field;
    let bom = msh.header_offset();
    let body = text.get(bom..).unwrap_or_default();

    out.reserve(message.len());
    if to.kind == Kind::Utf8 {
        out.extend_from_slice(message.get(..bom).unwrap_or_default());
    }
    // The field separator is ASCII, so both ends of MSH-18 are character boundaries.
    let field = locate_msh18(body.as_bytes(), separator);
    let mut replaced = to.encode(body.get(..field.start).unwrap_or_default(), out);
    if !msh18.is_empty() {
        out.extend(core::iter::repeat_n(separator, field.missing));
        out.extend_from_slice(msh18);
    }
    replaced += to.encode(body.get(field.end..).unwrap_or_default(), out);
    Ok(replaced)
}

/// Where MSH-18 lies in a message that starts with `MSH` and its field separator.
struct Msh18 {
    /// Offset of its first byte, or of the header's end when the header has fewer fields.
    start: usize,
    /// Offset just past its last byte.
    end: usize,
    /// How many field separators must be added at `start` to open MSH-18: 0 when it is there.
    missing: usize,
}

/// Finds MSH-18 in the header segment of `message` (up to its first CR or LF): the field
/// separator at offset 3 is MSH-1 and the first of them, so the 17th opens MSH-18.
fn locate_msh18(message: &[u8], separator: u8) -> Msh18 {
    let segment_end = message
        .iter()
        .position(|&b| b == SEGMENT_TERMINATOR || b == b'\n')
        .unwrap_or(message.len());
    let segment = message.get(..segment_end).unwrap_or_default();
    let mut seen = 0;
    let mut start = None;
    for (at, &byte) in segment.iter().enumerate().skip(3) {
        if byte != separator {
            continue;
        }
        seen += 1;
        match (seen, start) {
            (17, _) => start = Some(at + 1),
            (18, Some(start)) => {
                return Msh18 {
                    start,
                    end: at,
                    missing: 0,
                };
            }
            _ => {}
        }
    }
    match start {
        Some(start) => Msh18 {
            start,
            end: segment_end,
            missing: 0,
        },
        None => Msh18 {
            start: segment_end,
            end: segment_end,
            missing: 17 - seen,
        },
    }
}

/// Decodes `src` (which starts at offset `base` of the input) with `encoding`, strictly.
fn decode_run(
    encoding: &'static Encoding,
    src: &[u8],
    base: usize,
    sink: &mut impl FnMut(&[u8]),
) -> Result<(), usize> {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut buf = [0; CHUNK];
    let mut read_total = 0;
    loop {
        let rest = src.get(read_total..).unwrap_or_default();
        let (result, read, written) =
            decoder.decode_to_utf8_without_replacement(rest, &mut buf, true);
        read_total += read;
        sink(buf.get(..written).unwrap_or_default());
        match result {
            DecoderResult::InputEmpty => return Ok(()),
            DecoderResult::OutputFull => {}
            DecoderResult::Malformed(length, after) => {
                let consumed = usize::from(length) + usize::from(after);
                return Err(base + read_total.saturating_sub(consumed));
            }
        }
    }
}

/// Encodes `text` with `encoding` into `out`, `?` for each unmappable character; returns how
/// many there were.
fn encode_run(encoding: &'static Encoding, text: &str, out: &mut Vec<u8>) -> usize {
    let mut encoder = encoding.new_encoder();
    let mut buf = [0; CHUNK];
    let mut rest = text;
    let mut replaced = 0;
    loop {
        let (result, read, written) =
            encoder.encode_from_utf8_without_replacement(rest, &mut buf, true);
        out.extend_from_slice(buf.get(..written).unwrap_or_default());
        rest = rest.get(read..).unwrap_or_default();
        match result {
            EncoderResult::InputEmpty => return replaced,
            EncoderResult::OutputFull => {}
            EncoderResult::Unmappable(_) => {
                out.push(b'?');
                replaced += 1;
            }
        }
    }
}

/// Encodes `text` for a set whose representable text is found by `up_to` (the length of the
/// longest representable prefix) and written by `copy`; `?` for each other character.
fn encode_prefixes(
    text: &str,
    out: &mut Vec<u8>,
    up_to: impl Fn(&str) -> usize,
    copy: impl Fn(&str, &mut Vec<u8>),
) -> usize {
    let mut rest = text;
    let mut replaced = 0;
    loop {
        let valid = up_to(rest);
        copy(rest.get(..valid).unwrap_or_default(), out);
        let tail = rest.get(valid..).unwrap_or_default();
        let Some(c) = tail.chars().next() else {
            return replaced;
        };
        out.push(b'?');
        replaced += 1;
        rest = tail.get(c.len_utf8()..).unwrap_or_default();
    }
}

/// A piece of text split at special characters.
enum Piece<'a> {
    /// Text without special characters.
    Text(&'a str),
    /// A special character.
    Special(char),
}

/// Calls `each` on the runs of `text` between the characters `special` picks and on each of
/// those; sums what it returns.
fn split_chars(
    text: &str,
    special: impl Fn(char) -> bool,
    mut each: impl FnMut(Piece<'_>) -> usize,
) -> usize {
    let mut sum = 0;
    let mut run_start = 0;
    for (at, c) in text.char_indices() {
        if special(c) {
            if at > run_start {
                sum += each(Piece::Text(text.get(run_start..at).unwrap_or_default()));
            }
            sum += each(Piece::Special(c));
            run_start = at + c.len_utf8();
        }
    }
    if run_start < text.len() {
        sum += each(Piece::Text(text.get(run_start..).unwrap_or_default()));
    }
    sum
}

/// Whether `c` is a C1 control, U+0080–U+009F.
#[inline]
fn is_c1(c: char) -> bool {
    ('\u{80}'..='\u{9F}').contains(&c)
}

/// The bytes of 0x80–0x9F a Windows code page leaves unassigned: those WHATWG decodes to the
/// C1 control of the same number. Bit `b - 0x80` is set for byte `b`.
fn holes(encoding: &'static Encoding) -> u32 {
    let mut bytes = [0u8; 32];
    for (slot, byte) in bytes.iter_mut().zip(C1) {
        *slot = byte;
    }
    // One character per byte, at most three UTF-8 bytes each.
    let mut decoded = [0u8; 32 * 3];
    let (_, _, written, _) =
        encoding
            .new_decoder_without_bom_handling()
            .decode_to_utf8(&bytes, &mut decoded, true);
    let text = core::str::from_utf8(decoded.get(..written).unwrap_or_default()).unwrap_or_default();
    text.chars()
        .zip(0..32)
        .filter(|&(c, i)| u32::from(c) == 0x80 + i)
        .fold(0, |mask, (_, i)| mask | 1 << i)
}

/// Whether `byte` is one of the unassigned bytes in `holes` (see [`holes`]).
#[inline]
fn is_hole(holes: u32, byte: u8) -> bool {
    C1.contains(&byte) && holes & 1 << (byte - 0x80) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::ErrorCode;

    fn cs(name: &str) -> Charset {
        Charset::from_name(name).unwrap()
    }

    fn to_utf8(message: &[u8], from: Charset) -> Result<Vec<u8>, CharsetError> {
        let mut out = Vec::new();
        transcode_to_utf8(message, from, &mut out).map(|()| out)
    }

    fn from_utf8(message: &[u8], to: Charset, msh18: &[u8]) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let replaced = transcode_from_utf8(message, to, msh18, &mut out).unwrap();
        (out, replaced)
    }

    /// A header with MSH-18 set to `msh18`, then an OBX holding `text` in OBX-5.
    fn message(msh18: &[u8], text: &[u8]) -> Vec<u8> {
        let mut m = b"MSH|^~\\&|LAB|H|EHR|C|20240101||ORU^R01|42|P|2.5||||||".to_vec();
        m.extend_from_slice(msh18);
        m.extend_from_slice(b"\rOBX|1|TX|||");
        m.extend_from_slice(text);
        m.extend_from_slice(b"\r");
        m
    }

    #[test]
    fn windows_1252_round_trips_with_msh18_restored() {
        let original = message(b"windows-1252", b"\x80 \x84x\x91y\x92 caf\xE9");
        let cp1252 = cs("windows-1252");
        let utf8 = to_utf8(&original, cp1252).unwrap();
        assert_eq!(
            utf8,
            message(b"UNICODE UTF-8", "€ „x‘y’ café".as_bytes()),
            "{}",
            String::from_utf8_lossy(&utf8)
        );
        assert_eq!(
            &utf8[utf8.len() - 22..],
            b"\xE2\x82\xAC \xE2\x80\x9Ex\xE2\x80\x98y\xE2\x80\x99 caf\xC3\xA9\r"
        );
        let (back, replaced) = from_utf8(&utf8, cp1252, b"windows-1252");
        assert_eq!(replaced, 0);
        assert_eq!(back, original);
    }

    #[test]
    fn latin1_is_not_windows_1252() {
        let original = message(b"8859/1", b"\x80\xE9\xFF");
        let utf8 = to_utf8(&original, cs("8859/1")).unwrap();
        assert_eq!(utf8, message(b"UNICODE UTF-8", b"\xC2\x80\xC3\xA9\xC3\xBF"));
        assert_eq!(from_utf8(&utf8, Charset::LATIN1, b"8859/1").0, original);
        // The labels WHATWG folds into Windows-1252 are true Latin-1 here.
        for label in ["latin1", "ISO-8859-1", "iso8859-1", " l1 ", "cp819"] {
            assert_eq!(cs(label), Charset::LATIN1, "{label}");
        }
        for label in ["windows-1252", "CP1252", "x-cp1252"] {
            assert_eq!(cs(label).name(), "windows-1252", "{label}");
        }
        for label in ["us-ascii", "ascii", "ISO IR6"] {
            assert_eq!(cs(label), Charset::ASCII, "{label}");
        }
    }

    #[test]
    fn iso_8859_9_and_11_have_c1_controls() {
        let latin5 = cs("8859/9");
        assert_eq!(cs("iso-8859-9"), latin5);
        assert_eq!(cs("latin5"), latin5);
        assert_eq!(cs("windows-1254").name(), "windows-1254");
        let utf8 = to_utf8(&message(b"8859/9", b"\x80\xD0\xFD"), latin5).unwrap();
        assert_eq!(utf8, message(b"UNICODE UTF-8", "\u{80}Ğı".as_bytes()));
        // `€` exists only in Windows-1254; U+0080 is the byte 0x80.
        let (back, replaced) = from_utf8(&message(b"", "€\u{80}Ğ".as_bytes()), latin5, b"");
        assert_eq!((back, replaced), (message(b"", b"?\x80\xD0"), 1));

        let thai = cs("tis-620");
        assert_eq!(thai.name(), "8859/11");
        assert!(thai.check(b"\x85\xA1").is_ok());
        assert_eq!(
            thai.check(b"ab\xDB").unwrap_err(),
            invalid(2, 0xDB, "8859/11")
        );
        assert_eq!(
            cs("windows-874").check(b"\x85\x81").unwrap_err(),
            invalid(1, 0x81, "windows-874")
        );
    }

    fn invalid(offset: usize, byte: u8, charset: &'static str) -> CharsetError {
        CharsetError::Invalid {
            offset,
            byte,
            charset,
        }
    }

    #[test]
    fn check_reports_the_first_invalid_sequence() {
        assert_eq!(
            Charset::ASCII.check(b"abc\xE9d"),
            Err(invalid(3, 0xE9, "ASCII"))
        );
        assert!(Charset::ASCII.check(b"abc\x7F").is_ok());
        assert_eq!(
            Charset::UTF8.check(
                "é".as_bytes()
                    .iter()
                    .chain(b"x\xE9y")
                    .copied()
                    .collect::<Vec<_>>()
                    .as_slice()
            ),
            Err(invalid(3, 0xE9, "UNICODE UTF-8"))
        );
        assert!(Charset::UTF8.check("日本 €".as_bytes()).is_ok());
        let cp1252 = cs("cp1252");
        assert_eq!(
            cp1252.check(b"ab\x80\x81"),
            Err(invalid(3, 0x81, "windows-1252"))
        );
        for hole in [0x81, 0x8D, 0x8F, 0x90, 0x9D] {
            assert_eq!(
                cp1252.check(&[b'a', hole]),
                Err(invalid(1, hole, "windows-1252"))
            );
        }
        let assigned: Vec<u8> = (0..=255)
            .filter(|b| ![0x81, 0x8D, 0x8F, 0x90, 0x9D].contains(b))
            .collect();
        assert!(cp1252.check(&assigned).is_ok());
        let all: Vec<u8> = (0..=255).collect();
        assert!(Charset::LATIN1.check(&all).is_ok());
        // A multi-byte set reports the first byte of the bad sequence.
        assert_eq!(
            cs("BIG-5").check(b"ab\xA4\x40\xFF"),
            Err(invalid(4, 0xFF, "BIG-5"))
        );
        assert_eq!(cs("8859/3").check(b"\xA5"), Err(invalid(0, 0xA5, "8859/3")));

        let error = cp1252.check(b"\x81").unwrap_err();
        assert_eq!(
            error.to_string(),
            "byte 0x81 at offset 0 is not valid windows-1252"
        );
        assert_eq!(error.error_code(), ErrorCode::DataType);
    }

    #[test]
    fn transcoding_reports_the_offset_in_the_message() {
        let m = message(b"", b"ok \xE9");
        let error = to_utf8(&m, Charset::ASCII).unwrap_err();
        assert_eq!(error, invalid(m.len() - 2, 0xE9, "ASCII"));
        assert_eq!(Charset::ASCII.check(&m), Err(error));

        let mut bad = message(b"UNICODE UTF-8", "é".as_bytes());
        bad.insert(bad.len() - 2, 0xC3);
        let mut out = Vec::new();
        let error = transcode_from_utf8(&bad, cs("cp1252"), b"", &mut out).unwrap_err();
        assert_eq!(error, invalid(bad.len() - 4, 0xC3, "UNICODE UTF-8"));

        let error = to_utf8(b"PID|1\r", Charset::ASCII).unwrap_err();
        assert_eq!(error, CharsetError::Header(crate::Hl7Error::MissingHeader));
        assert_eq!(error.error_code(), ErrorCode::SegmentSequence);
    }

    #[test]
    fn msh18_names_in_any_case_and_repetitions() {
        for (value, name) in [
            ("8859/1", "8859/1"),
            ("unicode utf-8", "UNICODE UTF-8"),
            (" Big-5 ", "BIG-5"),
            ("gb 18030-2000", "GB 18030-2000"),
            ("KS X 1001", "KS X 1001"),
            ("8859/15", "8859/15"),
            ("iso-8859-15", "8859/15"),
            ("ISO-8859-2", "8859/2"),
            ("utf-8", "UNICODE UTF-8"),
            ("UTF8", "UNICODE UTF-8"),
            ("shift_jis", "Shift_JIS"),
            ("euc-kr", "KS X 1001"),
            ("windows-1250", "windows-1250"),
        ] {
            assert_eq!(
                Charset::from_msh18(value.as_bytes()).unwrap().name(),
                name,
                "{value}"
            );
        }

        let of = |msh18: &[u8]| {
            let m = message(msh18, b"");
            charset_of(&Msh::parse(&m).unwrap(), Charset::UTF8)
        };
        assert_eq!(of(b"8859/1~ISO IR87"), Ok(Charset::LATIN1));
        assert_eq!(of(b""), Ok(Charset::UTF8));
        assert_eq!(of(b"~ISO IR87"), Ok(Charset::UTF8));
        assert_eq!(
            charset_of(&Msh::parse(b"MSH|^~\\&|A").unwrap(), Charset::ASCII),
            Ok(Charset::ASCII)
        );
    }

    #[test]
    fn unusable_names_are_refused() {
        let error = Charset::from_msh18(b" FOO-9 ").unwrap_err();
        assert_eq!(
            error.to_string(),
            "character set \"FOO-9\" is not an HL7 table 0211 value or a known label"
        );
        assert_eq!(error.error_code(), ErrorCode::TableValueNotFound);
        assert!(matches!(
            Charset::from_msh18(b""),
            Err(CharsetError::Unknown { .. })
        ));

        for name in [
            "UNICODE UTF-16",
            "unicode",
            "UTF-16",
            "utf-16be",
            "UTF-32",
            "ISO IR87",
            "iso-2022-jp",
            "ISO-2022-KR",
        ] {
            let error = Charset::from_name(name).unwrap_err();
            assert!(
                matches!(error, CharsetError::NotAsciiCompatible { .. }),
                "{name}: {error:?}"
            );
            assert_eq!(error.error_code(), ErrorCode::TableValueNotFound);
        }
        assert_eq!(
            Charset::from_name("UTF-16").unwrap_err().to_string(),
            "character set \"UTF-16\" is not ASCII-compatible: \
             MLLP framing and HL7 delimiters need ASCII bytes"
        );
        for name in ["ISO IR14", "CNS 11643-1992", "jas2020"] {
            assert!(
                matches!(
                    Charset::from_name(name),
                    Err(CharsetError::Unsupported { .. })
                ),
                "{name}"
            );
        }
        for name in ["8859/12", "8859/16", "8859/0"] {
            assert!(
                matches!(Charset::from_name(name), Err(CharsetError::Unknown { .. })),
                "{name}"
            );
        }

        let long = Charset::from_msh18(b"a-very-long-character-set-name\xFF").unwrap_err();
        assert_eq!(
            long.to_string(),
            "character set \"a-very-long-character-se…\" \
             is not an HL7 table 0211 value or a known label"
        );
        let odd = Charset::from_msh18(b"x\x01\xE9").unwrap_err();
        assert!(odd.to_string().contains("\"x\\x01\\xE9\""), "{odd}");
    }

    #[test]
    fn short_header_gets_msh18_added() {
        let utf8 = to_utf8(b"MSH|^~\\&|A|B\rPID|1||\xE9\r", Charset::LATIN1).unwrap();
        assert_eq!(
            utf8,
            "MSH|^~\\&|A|B||||||||||||||UNICODE UTF-8\rPID|1||é\r".as_bytes()
        );
        // The header may be the whole message, and may end with LF.
        let utf8 = to_utf8(b"MSH|^~\\&", Charset::ASCII).unwrap();
        assert_eq!(utf8, b"MSH|^~\\&||||||||||||||||UNICODE UTF-8");
        let utf8 = to_utf8(b"MSH|^~\\&|A\nPID\n", Charset::ASCII).unwrap();
        assert_eq!(utf8, b"MSH|^~\\&|A|||||||||||||||UNICODE UTF-8\nPID\n");
        let m = Msh::parse(&utf8).unwrap();
        assert_eq!(m.charset(), b"UNICODE UTF-8");
        assert_eq!(m.raw_field(3), b"A");

        // Back: the sender's MSH-18 is added; an empty one adds nothing.
        let (back, _) = from_utf8(b"MSH|^~\\&|A\rMSA|AA|1\r", Charset::ASCII, b"ASCII");
        assert_eq!(back, b"MSH|^~\\&|A|||||||||||||||ASCII\rMSA|AA|1\r");
        let (back, _) = from_utf8(b"MSH|^~\\&|A\rMSA|AA|1\r", Charset::ASCII, b"");
        assert_eq!(back, b"MSH|^~\\&|A\rMSA|AA|1\r");
    }

    #[test]
    fn later_repetitions_and_fields_are_kept() {
        let mut header = b"MSH|^~\\&|A|||||||||||||||8859/1~ISO IR87|EN|ISO 2022-1994\r".to_vec();
        header.extend_from_slice(b"NTE|||\xE9\r");
        let utf8 = to_utf8(&header, Charset::LATIN1).unwrap();
        assert_eq!(
            utf8,
            "MSH|^~\\&|A|||||||||||||||UNICODE UTF-8~ISO IR87|EN|ISO 2022-1994\rNTE|||é\r"
                .as_bytes()
        );
        // Back: the whole field is the sender's again.
        let (back, _) = from_utf8(&utf8, Charset::LATIN1, b"8859/1~ISO IR87");
        assert_eq!(back, header);
        let (back, _) = from_utf8(&utf8, Charset::LATIN1, b"");
        assert_eq!(
            back,
            b"MSH|^~\\&|A||||||||||||||||EN|ISO 2022-1994\rNTE|||\xE9\r"
        );
    }

    #[test]
    fn unmappable_characters_become_question_marks() {
        let ack = message(b"UNICODE UTF-8", "日本 é €".as_bytes());
        let (out, replaced) = from_utf8(&ack, cs("windows-1252"), b"windows-1252");
        assert_eq!(
            (out, replaced),
            (message(b"windows-1252", b"?? \xE9 \x80"), 2)
        );
        let (out, replaced) = from_utf8(&ack, Charset::LATIN1, b"8859/1");
        assert_eq!((out, replaced), (message(b"8859/1", b"?? \xE9 ?"), 3));
        let (out, replaced) = from_utf8(&ack, Charset::ASCII, b"");
        assert_eq!((out, replaced), (message(b"", b"?? ? ?"), 4));
        // C1 controls have no place in a Windows code page, assigned or not.
        let (out, replaced) =
            from_utf8(&message(b"", "\u{81}\u{80}".as_bytes()), cs("cp1252"), b"");
        assert_eq!((out, replaced), (message(b"", b"??"), 2));
        // Multi-byte sets: what they lack, never an HTML entity.
        let (out, replaced) = from_utf8(&message(b"", "é日".as_bytes()), cs("BIG-5"), b"BIG-5");
        assert_eq!(replaced, 1);
        assert!(out.ends_with(b"|||?\xA4\xE9\r"), "{out:?}");
    }

    #[test]
    fn yen_and_overline_never_become_delimiters() {
        let ack = message(b"UNICODE UTF-8", "¥‾\\~日".as_bytes());
        for name in ["Shift_JIS", "EUC-JP"] {
            let (out, replaced) = from_utf8(&ack, cs(name), b"");
            assert_eq!(replaced, 2, "{name}");
            assert!(
                out.ends_with(b"|||??\\~\x93\xFA\r") || out.ends_with(b"|||??\\~\xC6\xFC\r"),
                "{name}: {out:?}"
            );
        }
        // Where `¥` has a code of its own, it keeps it.
        let (out, replaced) = from_utf8(&message(b"", "¥".as_bytes()), Charset::LATIN1, b"");
        assert_eq!((out, replaced), (message(b"", b"\xA5"), 0));
    }

    #[test]
    fn multi_byte_trail_bytes_that_look_like_delimiters_survive() {
        // Big5 `許` is 0xB3 0x5C: its second byte is the escape character.
        let big5 = cs("BIG-5");
        let original = message(b"BIG-5", b"\xB3\x5C|\xA4\xE9");
        let utf8 = to_utf8(&original, big5).unwrap();
        assert_eq!(utf8, message(b"UNICODE UTF-8", "許|日".as_bytes()));
        assert_eq!(from_utf8(&utf8, big5, b"BIG-5"), (original, 0));
    }

    #[test]
    fn utf8_is_only_checked_and_the_bom_is_kept() {
        let original = [&b"\xEF\xBB\xBF"[..], &message(b"", "é".as_bytes())].concat();
        let utf8 = to_utf8(&original, Charset::UTF8).unwrap();
        assert_eq!(
            utf8,
            [
                &b"\xEF\xBB\xBF"[..],
                &message(b"UNICODE UTF-8", "é".as_bytes())
            ]
            .concat()
        );
        let (back, _) = from_utf8(&utf8, Charset::LATIN1, b"");
        assert_eq!(back, message(b"", b"\xE9"));
        let (back, _) = from_utf8(&utf8, Charset::UTF8, b"");
        assert_eq!(back, original);
    }

    #[test]
    fn windows_holes_are_the_c1_bytes_whatwg_fills() {
        assert_eq!(
            (0x80..=0x9F)
                .filter(|&b| is_hole(holes(encoding_rs::WINDOWS_1252), b))
                .collect::<Vec<u8>>(),
            [0x81, 0x8D, 0x8F, 0x90, 0x9D]
        );
        assert_eq!(holes(encoding_rs::WINDOWS_1251).count_ones(), 1); // 0x98
        assert!(!is_hole(u32::MAX, 0x7F) && !is_hole(u32::MAX, 0xA0));
    }

    #[test]
    fn long_text_crosses_chunk_boundaries() {
        let text: Vec<u8> = (0..3 * CHUNK)
            .map(|i| if i % 3 == 0 { 0xE9 } else { b'a' })
            .collect();
        for name in ["8859/1", "cp1252", "8859/9", "8859/2"] {
            let charset = cs(name);
            let original = message(b"", &text);
            let utf8 = to_utf8(&original, charset).unwrap();
            assert_eq!(
                utf8.len(),
                original.len() + CHUNK + UTF8_MSH18.len(),
                "{name}"
            );
            assert_eq!(from_utf8(&utf8, charset, b""), (original, 0), "{name}");
        }
    }
}
