//! HL7 escape sequences (§2.7): text ⇄ field content.
//!
//! Inside a field, a delimiter that is data is written as an escape sequence: the escape
//! character, a code, the escape character again (`\F\` for the field separator with the usual
//! delimiters). [`decode_escapes`] turns field bytes back into text; [`encode_escapes`] turns
//! text into bytes that are safe to place in a field.
//!
//! Only the sequences that stand for bytes are decoded: the delimiters and `\Xhh…\`.
//! Formatting (`\H\`, `\N\`, `\.br\`, …) and character-set switching (`\C…\`, `\M…\`) need a
//! renderer or a transcoder, which this crate is not; those sequences, and anything malformed,
//! are kept verbatim so no information is lost. Both functions append to a caller-provided
//! buffer and never fail on hostile input.

use super::Delimiters;
use crate::error::EscapeError;

/// Appends `input` to `out` with its escape sequences decoded.
///
/// With `\` standing for the message's escape character: `\F\`, `\S\`, `\T\`, `\R\`, `\E\` and
/// `\P\` become the field separator, component, subcomponent, repetition, escape and
/// truncation characters; `\Xhh…\` (pairs of hex digits, either case) becomes those bytes.
/// Copied through unchanged, byte for byte:
/// - every other sequence (`\H\`, `\N\`, `\.br\`, `\Cxxyy\`, `\Mxxyyzz\`, `\Zxx\`, `\\`);
/// - `\X…\` with an odd number of digits or a non-hex digit;
/// - a sequence for a delimiter the message does not define (`\T\` without a subcomponent
///   delimiter, `\P\` before v2.7);
/// - an escape character that is never closed, and everything after it;
/// - all of `input` when the message defines no escape character.
///
/// Never fails: decoding is used on received data, where dropping or rejecting text would
/// lose it.
///
/// ```
/// use mllp::hl7::{Delimiters, decode_escapes};
///
/// let mut text = Vec::new();
/// decode_escapes(b"A\\T\\B \\X0D0A\\ \\H\\bold", &Delimiters::DEFAULT, &mut text);
/// assert_eq!(text, b"A&B \r\n \\H\\bold");
/// ```
pub fn decode_escapes(input: &[u8], delims: &Delimiters, out: &mut Vec<u8>) {
    let Some(escape) = delims.escape else {
        out.extend_from_slice(input);
        return;
    };
    let find_escape = |bytes: &[u8]| bytes.iter().position(|&b| b == escape);
    // Decoding never lengthens text: every sequence is longer than what it stands for.
    out.reserve(input.len());
    let mut rest = input;
    while let Some(open) = find_escape(rest) {
        let (text, from_open) = rest.split_at(open);
        out.extend_from_slice(text);
        // `from_open` starts with the escape character that opens the sequence.
        let body_and_rest = from_open.get(1..).unwrap_or_default();
        let Some(close) = find_escape(body_and_rest) else {
            // Unterminated: not a sequence, keep it and the rest as they are.
            out.extend_from_slice(from_open);
            return;
        };
        let (body, from_close) = body_and_rest.split_at(close);
        if !decode_sequence(body, delims, out) {
            // The whole sequence, both escape characters included.
            out.extend_from_slice(from_open.get(..close + 2).unwrap_or_default());
        }
        rest = from_close.get(1..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
}

/// Appends the bytes `body` (what lies between two escape characters) stands for; returns
/// `false`, appending nothing, when it is not a sequence that stands for bytes.
fn decode_sequence(body: &[u8], delims: &Delimiters, out: &mut Vec<u8>) -> bool {
    let byte = match body {
        b"F" => Some(delims.field),
        b"S" => delims.component,
        b"T" => delims.subcomponent,
        b"R" => delims.repetition,
        b"E" => delims.escape,
        b"P" => delims.truncation,
        [b'X', hex @ ..] => return decode_hex(hex, out),
        _ => None,
    };
    match byte {
        Some(byte) => {
            out.push(byte);
            true
        }
        None => false,
    }
}

/// Appends the bytes spelled by `hex`, a non-empty even-length run of hex digits; returns
/// `false`, appending nothing, for anything else.
fn decode_hex(hex: &[u8], out: &mut Vec<u8>) -> bool {
    let (pairs, odd) = hex.as_chunks::<2>();
    if pairs.is_empty() || !odd.is_empty() || !hex.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    out.extend(
        pairs
            .iter()
            .map(|&[high, low]| (hex_value(high) << 4) | hex_value(low)),
    );
    true
}

/// The value of an ASCII hex digit (checked by the caller; anything else gives 0).
const fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// Appends `input` to `out` with every byte that cannot appear literally in a field escaped.
///
/// Delimiters become `\F\`, `\S\`, `\T\`, `\R\`, `\E\`, `\P\` (field separator, component,
/// subcomponent, repetition, escape, truncation). CR, LF, VT and FS become `\X0D\`, `\X0A\`,
/// `\X0B\`, `\X1C\`: CR would end the segment, VT and FS the MLLP frame, and LF would be read
/// as a segment end by receivers that accept LF terminators. Everything else is copied as is.
///
/// For any valid `delims` (as returned by [`Delimiters::from_header`]),
/// [`decode_escapes`] gives `input` back.
///
/// # Errors
/// [`EscapeError::NoEscapeCharacter`] when `input` holds a byte that needs escaping and the
/// message defines no escape character; `offset` is that byte's position in `input`. Nothing
/// is appended to `out` in that case.
///
/// ```
/// use mllp::hl7::{Delimiters, encode_escapes};
///
/// let mut field = Vec::new();
/// encode_escapes(b"Smith & Sons|\r", &Delimiters::DEFAULT, &mut field)?;
/// assert_eq!(field, b"Smith \\T\\ Sons\\F\\\\X0D\\");
/// # Ok::<(), mllp::error::EscapeError>(())
/// ```
pub fn encode_escapes(
    input: &[u8],
    delims: &Delimiters,
    out: &mut Vec<u8>,
) -> Result<(), EscapeError> {
    // A lookup table beats ten comparisons per byte once the text is more than a few bytes
    // long, and building it is a 256-byte fill.
    let mut special = [false; 256];
    let delimiters = [
        Some(delims.field),
        delims.component,
        delims.repetition,
        delims.escape,
        delims.subcomponent,
        delims.truncation,
    ];
    // Each `Option` on its own, not `encoding_characters`: a hand-built set with a gap (no
    // component but a repetition delimiter) must still have every delimiter escaped.
    for byte in [b'\r', b'\n', 0x0B, 0x1C]
        .into_iter()
        .chain(delimiters.into_iter().flatten())
    {
        special[usize::from(byte)] = true;
    }
    let next_special = |bytes: &[u8]| bytes.iter().position(|&b| special[usize::from(b)]);

    let Some(escape) = delims.escape else {
        // Nothing can be escaped: the text must need none, and is then copied whole.
        if let Some(offset) = next_special(input) {
            let byte = input.get(offset).copied().unwrap_or_default();
            return Err(EscapeError::NoEscapeCharacter { offset, byte });
        }
        out.extend_from_slice(input);
        return Ok(());
    };

    out.reserve(input.len());
    let mut rest = input;
    while let Some(at) = next_special(rest) {
        let (text, from_special) = rest.split_at(at);
        out.extend_from_slice(text);
        let Some((&byte, tail)) = from_special.split_first() else {
            break;
        };
        match delimiter_code(byte, delims) {
            Some(code) => out.extend_from_slice(&[escape, code, escape]),
            None => out.extend_from_slice(&[
                escape,
                b'X',
                hex_digit(byte >> 4),
                hex_digit(byte),
                escape,
            ]),
        }
        rest = tail;
    }
    out.extend_from_slice(rest);
    Ok(())
}

/// The escape code of `byte` when it is one of the delimiters.
fn delimiter_code(byte: u8, delims: &Delimiters) -> Option<u8> {
    let is = |delimiter: Option<u8>| delimiter == Some(byte);
    let code = if byte == delims.field {
        b'F'
    } else if is(delims.component) {
        b'S'
    } else if is(delims.subcomponent) {
        b'T'
    } else if is(delims.repetition) {
        b'R'
    } else if is(delims.escape) {
        b'E'
    } else if is(delims.truncation) {
        b'P'
    } else {
        return None;
    };
    Some(code)
}

/// The upper-case hex digit for the low four bits of `nibble`.
const fn hex_digit(nibble: u8) -> u8 {
    b"0123456789ABCDEF"[(nibble & 0x0F) as usize]
}
