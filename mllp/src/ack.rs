//! Building and reading HL7 acknowledgments.
//!
//! # Which ACK is due
//! HL7 v2 has two acknowledgment modes (HL7 v2.5 §2.9):
//! - **Original mode**, when MSH-15 and MSH-16 are both empty: every message gets an
//!   application ACK, `AA` (accept), `AE` (error) or `AR` (reject).
//! - **Enhanced mode**, when either is valued: the receiver first sends an *accept* (commit)
//!   ACK, `CA`, `CE` or `CR`, if MSH-15 asks for one: `AL` always, `NE` never, `ER` only on
//!   error or reject, `SU` only on success. A relay answers with the accept ACK; the
//!   application ACK (MSH-16) is the final receiver's business.
//!
//! An enhanced-mode message with an empty or unrecognised MSH-15 is treated as `AL`: a sender
//! that asked for enhanced mode is better served by an ACK it did not need than by waiting
//! for one that never comes. [`decide`] applies these rules, optionally overridden by an
//! [`AckPolicy`] negotiated with the sender out of band.
//!
//! # The ACK itself
//! [`write_ack`] writes `MSH`, `MSA` and, on error, `ERR`, using the inbound message's own
//! delimiters: sending and receiving application/facility swapped, MSH-9 `ACK^<trigger>^ACK`,
//! MSH-11, MSH-12 and MSH-18 copied, MSA-2 = the inbound MSH-10 byte for byte. The timestamp
//! (MSH-7) and the ACK's own control id (MSH-10) are passed in: this crate reads no clock.
//!
//! [`parse_ack`] reads an ACK back: its code, MSA-2 and MSA-3.

use crate::error::AckError;
use crate::hl7::{AckCondition, Delimiters, Msh, Version, encode_escapes};

/// An acknowledgment code (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Original mode: application accept.
    AA,
    /// Original mode: application error.
    AE,
    /// Original mode: application reject.
    AR,
    /// Enhanced mode: commit accept.
    CA,
    /// Enhanced mode: commit error.
    CE,
    /// Enhanced mode: commit reject.
    CR,
}

impl AckCode {
    /// Every code.
    pub const ALL: [Self; 6] = [Self::AA, Self::AE, Self::AR, Self::CA, Self::CE, Self::CR];

    /// The two-letter code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AA => "AA",
            Self::AE => "AE",
            Self::AR => "AR",
            Self::CA => "CA",
            Self::CE => "CE",
            Self::CR => "CR",
        }
    }

    /// Parses a code, ignoring surrounding spaces and ASCII case.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let code = bytes.trim_ascii();
        Self::ALL
            .into_iter()
            .find(|c| code.eq_ignore_ascii_case(c.as_str().as_bytes()))
    }

    /// The code for `outcome` in `mode`.
    pub const fn for_outcome(mode: AckMode, outcome: Outcome) -> Self {
        match (mode, outcome) {
            (AckMode::Original, Outcome::Accepted) => Self::AA,
            (AckMode::Original, Outcome::Error) => Self::AE,
            (AckMode::Original, Outcome::Rejected) => Self::AR,
            (AckMode::Enhanced, Outcome::Accepted) => Self::CA,
            (AckMode::Enhanced, Outcome::Error) => Self::CE,
            (AckMode::Enhanced, Outcome::Rejected) => Self::CR,
        }
    }

    /// What the code says happened to the message.
    pub const fn outcome(self) -> Outcome {
        match self {
            Self::AA | Self::CA => Outcome::Accepted,
            Self::AE | Self::CE => Outcome::Error,
            Self::AR | Self::CR => Outcome::Rejected,
        }
    }

    /// The mode the code belongs to.
    pub const fn mode(self) -> AckMode {
        match self {
            Self::AA | Self::AE | Self::AR => AckMode::Original,
            Self::CA | Self::CE | Self::CR => AckMode::Enhanced,
        }
    }

    /// Whether the code is a positive acknowledgment (AA or CA).
    pub const fn is_accept(self) -> bool {
        matches!(self.outcome(), Outcome::Accepted)
    }
}

impl core::fmt::Display for AckCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a message, independent of the acknowledgment mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Accepted (AA / CA).
    Accepted,
    /// Not processed because of an error; the sender may retry (AE / CE).
    Error,
    /// Refused; resending the same message will not help (AR / CR).
    Rejected,
}

/// The acknowledgment mode of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckMode {
    /// MSH-15 and MSH-16 both empty: AA/AE/AR for every message.
    Original,
    /// MSH-15 or MSH-16 valued: CA/CE/CR as MSH-15 asks.
    Enhanced,
}

impl AckMode {
    /// The mode `msh` asks for.
    pub fn of(msh: &Msh<'_>) -> Self {
        if msh.accept_ack_type().is_none() && msh.application_ack_type().is_none() {
            Self::Original
        } else {
            Self::Enhanced
        }
    }
}

/// When to send an ACK, as agreed with a sender; most follow the message ([`Negotiated`]).
///
/// [`Negotiated`]: AckPolicy::Negotiated
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AckPolicy {
    /// Original mode always ACKs; enhanced mode follows MSH-15.
    #[default]
    Negotiated,
    /// Always send an ACK, whatever MSH-15 says.
    Always,
    /// Never send an ACK.
    Never,
    /// Send an ACK only when the outcome is an error or a reject.
    ErrorsOnly,
}

/// Whether an ACK is due, and with which code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckDecision {
    /// Send an ACK with this code.
    Send(AckCode),
    /// No ACK is due (MSH-15 `NE`, `ER` on success, `SU` on failure, or the policy).
    NotDue,
}

/// Decides whether `msh` gets an ACK for `outcome`, and which code.
pub fn decide(msh: &Msh<'_>, outcome: Outcome, policy: AckPolicy) -> AckDecision {
    let mode = AckMode::of(msh);
    let code = AckCode::for_outcome(mode, outcome);
    let failed = outcome != Outcome::Accepted;
    let due = match policy {
        AckPolicy::Always => true,
        AckPolicy::Never => false,
        AckPolicy::ErrorsOnly => failed,
        AckPolicy::Negotiated => match mode {
            AckMode::Original => true,
            AckMode::Enhanced => match msh.accept_ack_type() {
                None | Some(AckCondition::Always | AckCondition::Unrecognized) => true,
                Some(AckCondition::Never) => false,
                Some(AckCondition::ErrorOnly) => failed,
                Some(AckCondition::SuccessOnly) => !failed,
            },
        },
    };
    if due {
        AckDecision::Send(code)
    } else {
        AckDecision::NotDue
    }
}

/// Whether a receiver that takes `msh` answers it with an accept ACK, as HL7 says it should:
/// always in original mode; in enhanced mode unless MSH-15 asks for none on success (`NE`, or
/// `ER`, errors only). A forwarder that waits for an ACK the sender told the receiver not to
/// send would only time out.
pub fn expects_accept_ack(msh: &Msh<'_>) -> bool {
    matches!(
        decide(msh, Outcome::Accepted, AckPolicy::Negotiated),
        AckDecision::Send(_)
    )
}

/// An HL7 error condition code (table 0357), for the ERR segment of a negative ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 100: segment sequence error.
    SegmentSequence,
    /// 101: required field missing.
    RequiredFieldMissing,
    /// 102: data type error.
    DataType,
    /// 103: table value not found.
    TableValueNotFound,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 201: unsupported event code.
    UnsupportedEventCode,
    /// 202: unsupported processing id.
    UnsupportedProcessingId,
    /// 203: unsupported version id.
    UnsupportedVersionId,
    /// 204: unknown key identifier.
    UnknownKey,
    /// 205: duplicate key identifier.
    DuplicateKey,
    /// 206: application record locked.
    RecordLocked,
    /// 207: application internal error (what a relay reports when the receiver failed).
    ApplicationInternal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [Self; 12] = [
        Self::SegmentSequence,
        Self::RequiredFieldMissing,
        Self::DataType,
        Self::TableValueNotFound,
        Self::UnsupportedMessageType,
        Self::UnsupportedEventCode,
        Self::UnsupportedProcessingId,
        Self::UnsupportedVersionId,
        Self::UnknownKey,
        Self::DuplicateKey,
        Self::RecordLocked,
        Self::ApplicationInternal,
    ];

    /// The numeric code as written in ERR, e.g. `"207"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SegmentSequence => "100",
            Self::RequiredFieldMissing => "101",
            Self::DataType => "102",
            Self::TableValueNotFound => "103",
            Self::UnsupportedMessageType => "200",
            Self::UnsupportedEventCode => "201",
            Self::UnsupportedProcessingId => "202",
            Self::UnsupportedVersionId => "203",
            Self::UnknownKey => "204",
            Self::DuplicateKey => "205",
            Self::RecordLocked => "206",
            Self::ApplicationInternal => "207",
        }
    }

    /// The table's description, written as the code's text component.
    pub const fn description(self) -> &'static str {
        match self {
            Self::SegmentSequence => "Segment sequence error",
            Self::RequiredFieldMissing => "Required field missing",
            Self::DataType => "Data type error",
            Self::TableValueNotFound => "Table value not found",
            Self::UnsupportedMessageType => "Unsupported message type",
            Self::UnsupportedEventCode => "Unsupported event code",
            Self::UnsupportedProcessingId => "Unsupported processing id",
            Self::UnsupportedVersionId => "Unsupported version id",
            Self::UnknownKey => "Unknown key identifier",
            Self::DuplicateKey => "Duplicate key identifier",
            Self::RecordLocked => "Application record locked",
            Self::ApplicationInternal => "Application internal error",
        }
    }

    /// Parses a numeric code.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let code = bytes.trim_ascii();
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes() == code)
    }
}

/// The ERR segment of a negative ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorDetail<'a> {
    /// The table 0357 condition.
    pub code: ErrorCode,
    /// Free text for support staff (ERR-7, v2.5 and later; older versions have no place for
    /// it, so send it in MSA-3 as well). Escaped with the message's delimiters.
    pub diagnostic: &'a [u8],
}

/// What the caller supplies for an ACK besides the inbound header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckParams<'a> {
    /// MSH-7 of the ACK, e.g. `20261122143005.123+0000`.
    pub timestamp: &'a [u8],
    /// MSH-10 of the ACK (its own control id, not the inbound one).
    pub control_id: &'a [u8],
    /// MSA-3 text, if any. Escaped with the message's delimiters.
    pub text: Option<&'a [u8]>,
    /// ERR segment, if any.
    pub error: Option<ErrorDetail<'a>>,
}

impl<'a> AckParams<'a> {
    /// Parameters with no MSA-3 text and no ERR segment.
    pub const fn new(timestamp: &'a [u8], control_id: &'a [u8]) -> Self {
        Self {
            timestamp,
            control_id,
            text: None,
            error: None,
        }
    }
}

/// The first version with the v2.5 ERR layout (ERR-3 code, ERR-4 severity, ERR-7 text);
/// older versions put the code in ERR-1.
const ERR_V25: Version = Version {
    major: 2,
    minor: 5,
    patch: 0,
};

/// Appends the ACK for `msh` with `code` to `out` (segments end with CR; no MLLP framing).
pub fn write_ack(msh: &Msh<'_>, code: AckCode, params: &AckParams<'_>, out: &mut Vec<u8>) {
    let d = msh.delimiters();
    let fs = d.field;
    out.reserve(128 + msh.as_bytes().len() / 2);

    // MSH: the inbound header with the two ends swapped. MSH-2 is written from the delimiters
    // the header was read with: the sender's own bytes whenever the strict reader accepts them,
    // and each delimiter once where a lenient read skipped some (`^~\\&` is answered `^~\&`).
    out.extend_from_slice(b"MSH");
    out.push(fs);
    out.extend(d.encoding_characters());
    for n in [5, 6, 3, 4] {
        out.push(fs);
        out.extend_from_slice(msh.raw_field(n));
    }
    out.push(fs);
    push_text(out, params.timestamp, &d);
    out.push(fs); // MSH-8 security: empty
    out.push(fs);
    out.extend_from_slice(b"ACK");
    let trigger = msh.message_type().trigger;
    if let (Some(component), false) = (d.component, trigger.is_empty()) {
        out.push(component);
        out.extend_from_slice(trigger);
        out.push(component);
        out.extend_from_slice(b"ACK");
    }
    out.push(fs);
    push_text(out, params.control_id, &d);
    for n in [11, 12] {
        out.push(fs);
        out.extend_from_slice(msh.raw_field(n));
    }
    let charset = msh.raw_field(18);
    if !charset.is_empty() {
        // MSH-13 … MSH-17 empty, then MSH-18 as the sender wrote it.
        out.extend_from_slice(&[fs; 6]);
        out.extend_from_slice(charset);
    }
    out.push(b'\r');

    // MSA: the code and the inbound control id, byte for byte.
    out.extend_from_slice(b"MSA");
    out.push(fs);
    out.extend_from_slice(code.as_str().as_bytes());
    out.push(fs);
    out.extend_from_slice(msh.raw_field(10));
    if let Some(text) = params.text {
        out.push(fs);
        push_text(out, text, &d);
    }
    out.push(b'\r');

    if let Some(error) = params.error {
        let modern = msh.version().is_none_or(|v| v >= ERR_V25);
        write_err(modern, &d, error, out);
        out.push(b'\r');
    }
}

/// Appends an AR for a message whose header cannot be read, which therefore cannot be
/// answered from its own MSH: default delimiters `|^~\&`, version 2.5, empty application and
/// facility fields, MSA-2 empty (there is no control id to echo), `params.text` in MSA-3 and
/// `error` in ERR. `params.error` is ignored in favour of `error`.
pub fn write_headerless_reject(params: &AckParams<'_>, error: ErrorDetail<'_>, out: &mut Vec<u8>) {
    let d = Delimiters::DEFAULT;
    out.extend_from_slice(b"MSH|^~\\&|||||");
    push_text(out, params.timestamp, &d);
    out.extend_from_slice(b"||ACK|");
    push_text(out, params.control_id, &d);
    out.extend_from_slice(b"|P|2.5\rMSA|AR|");
    if let Some(text) = params.text {
        out.push(b'|');
        push_text(out, text, &d);
    }
    out.push(b'\r');
    write_err(true, &d, error, out);
    out.push(b'\r');
}

fn write_err(modern: bool, d: &Delimiters, error: ErrorDetail<'_>, out: &mut Vec<u8>) {
    let fs = d.field;
    out.extend_from_slice(b"ERR");
    out.push(fs);
    if modern {
        // ERR-1 and ERR-2 empty, ERR-3 code^text^HL70357, ERR-4 severity E, ERR-7 text.
        out.push(fs);
        out.push(fs);
        push_coded(out, error.code, d.component);
        out.push(fs);
        out.push(b'E');
        if !error.diagnostic.is_empty() {
            out.extend_from_slice(&[fs; 3]);
            push_text(out, error.diagnostic, d);
        }
    } else if let Some(component) = d.component {
        // ERR-1 (ELD): segment^sequence^field position^code, the code as subcomponents.
        out.extend_from_slice(&[component; 3]);
        push_coded(out, error.code, d.subcomponent);
    } else {
        out.extend_from_slice(error.code.as_str().as_bytes());
    }
}

/// Writes `code<sep>description<sep>HL70357`, or the bare code when `separator` is absent.
fn push_coded(out: &mut Vec<u8>, code: ErrorCode, separator: Option<u8>) {
    out.extend_from_slice(code.as_str().as_bytes());
    if let Some(sep) = separator {
        out.push(sep);
        out.extend_from_slice(code.description().as_bytes());
        out.push(sep);
        out.extend_from_slice(b"HL70357");
    }
}

/// Appends `text` escaped for the message. A message without an escape character cannot carry
/// delimiters in text, so they become spaces: an ACK (or an acknowledgement batch's header)
/// must always parse.
pub(crate) fn push_text(out: &mut Vec<u8>, text: &[u8], d: &Delimiters) {
    let mark = out.len();
    if encode_escapes(text, d, out).is_err() {
        out.truncate(mark);
        out.extend(text.iter().map(|&b| {
            if d.is_delimiter(b) || matches!(b, b'\r' | b'\n' | 0x0B | 0x1C) {
                b' '
            } else {
                b
            }
        }));
    }
}

/// Decides with [`decide`] and, when an ACK is due, writes it with [`write_ack`].
pub fn build_ack(
    msh: &Msh<'_>,
    outcome: Outcome,
    policy: AckPolicy,
    params: &AckParams<'_>,
    out: &mut Vec<u8>,
) -> AckDecision {
    let decision = decide(msh, outcome, policy);
    if let AckDecision::Send(code) = decision {
        write_ack(msh, code, params, out);
    }
    decision
}

/// An ACK read back: its header and MSA.
#[derive(Debug, Clone, Copy)]
pub struct Ack<'a> {
    /// The ACK's header.
    pub msh: Msh<'a>,
    /// MSA-1.
    pub code: AckCode,
    /// MSA-2, raw: the control id of the message acknowledged. Compare it byte for byte with
    /// that message's [`Msh::control_id`].
    pub acknowledged_id: &'a [u8],
    /// MSA-3 text, raw (still escaped); empty if absent.
    pub text: &'a [u8],
}

/// Reads an ACK (any message with an MSA segment).
///
/// Lenient where real receivers are sloppy and strictness buys nothing: the last segment may
/// lack its CR, segments may end with LF or CRLF, and an unusual MSH-2 is read past
/// ([`Msh::parse_lenient`]; a receiver often echoes the sender's header as it was).
///
/// # Errors
/// [`AckError::Header`] if the MSH is unreadable, [`AckError::MissingMsa`] without an MSA
/// segment, [`AckError::UnknownCode`] if MSA-1 is not a known code.
pub fn parse_ack(bytes: &[u8]) -> Result<Ack<'_>, AckError> {
    let msh = Msh::parse_lenient(bytes)?;
    let fs = msh.delimiters().field;
    let message = msh.message_bytes();
    let msa = find_segment(message, b"MSA", fs).ok_or(AckError::MissingMsa)?;
    // Fields after "MSA|", up to the end of the segment.
    let mut fields = msa[4..].split(|&b| b == fs);
    let code = fields
        .next()
        .and_then(AckCode::parse)
        .ok_or(AckError::UnknownCode)?;
    let acknowledged_id = fields.next().unwrap_or_default();
    let text = fields.next().unwrap_or_default();
    Ok(Ack {
        msh,
        code,
        acknowledged_id,
        text,
    })
}

/// The first segment with `id` that starts a line (after CR or LF), without its terminator.
fn find_segment<'a>(message: &'a [u8], id: &[u8; 3], fs: u8) -> Option<&'a [u8]> {
    let mut rest = message;
    loop {
        let line_end = rest
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        let line = &rest[..line_end];
        if line.len() > 3 && line.starts_with(id) && line[3] == fs {
            return Some(line);
        }
        if line_end == rest.len() {
            return None;
        }
        rest = &rest[line_end + 1..];
    }
}

#[cfg(test)]
mod tests;
