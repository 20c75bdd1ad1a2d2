//! The messages `mllp-loadgen` sends: loaded from a corpus of HL7 files or generated from a
//! built-in template, then stamped with a unique control ID and the current time on the way out.
//!
//! A [`Message`] is prepared once, before the run: its MSH is rebuilt so that MSH-7 (date and
//! time of the message) and MSH-10 (message control ID) are fixed-width placeholders at known
//! offsets, and its bytes are kept already MLLP-framed. Sending it is then one copy into the
//! connection's buffer and two small overwrites ([`Message::write_framed`]): no parsing, no
//! formatting and no allocation per message, so that the load generator measures the target
//! and not itself.
//!
//! - **Control IDs** ([`control_id`]): 20 characters `[0-9A-Z]`, made of a [`RunTag`] that
//!   differs between runs and processes, the connection number and a per-connection sequence
//!   number. Unique across connections, threads and processes, and reversible
//!   ([`parse_control_id`]), so a sink or an ACK check can tell which connection and which
//!   message an ID belongs to.
//! - **Timestamps** ([`TimestampCache`]): the clock formatted as `YYYYMMDDHHMMSS` (UTC), once
//!   per second.
//! - **Corpora** ([`load_corpus`], [`load_file`]): folders of HL7 files as they are found in
//!   the wild: one message per file, several back to back, FHS/BHS batch files, or
//!   MLLP-framed captures; CR, LF or CRLF segment terminators; a UTF-8 byte order mark.
//! - **Templates** ([`template`]): realistic ADT^A01 and ORU^R01 messages of an exact size,
//!   from 200 bytes (ADT) or 320 bytes (ORU) up, the same bytes for the same seed.
//!
//! # Not here
//! Sockets, pacing and ACK checks belong to the sender. Messages are not validated beyond
//! their header: a corpus is sent as it is, segment terminators included unless
//! [`CorpusOptions::normalize_line_endings`] asks otherwise, because the point of a corpus is
//! to show a target what real senders send. Only MSH-7 and MSH-10 are rewritten, and a UTF-8
//! byte order mark before `MSH` is dropped.

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use std::{fs, io};

use mllp::batch::{LineEndings, split_batch};
use mllp::frame::{CR, Deframer, FS, FramingConfig, Tolerances, VT};
use mllp::hl7::{Msh, normalize_segment_terminators, strip_bom};
use mllp::scan::Scanner;
use mllp::{BatchError, FrameError, Hl7Error};
use thiserror::Error;

/// Width of MSH-10 as written by [`Message::write_framed`]: MSH-10 is an ST of at most 20
/// characters in v2.3 to v2.5 (199 in later versions), so 20 fits every version.
pub const CONTROL_ID_LEN: usize = 20;

/// Width of MSH-7 as written by [`Message::write_framed`]: `YYYYMMDDHHMMSS`, a DTM precise
/// to the second, which every version accepts.
pub const TIMESTAMP_LEN: usize = 14;

/// What MSH-7 holds in [`Message::bytes`] until a message is stamped: the epoch, so that the
/// unstamped bytes are still a valid message.
const PLACEHOLDER_TIMESTAMP: &str = "19700101000000";

/// What MSH-10 holds in [`Message::bytes`] until a message is stamped.
const PLACEHOLDER_CONTROL_ID: &str = "00000000000000000000";

const _: () = assert!(PLACEHOLDER_TIMESTAMP.len() == TIMESTAMP_LEN);
const _: () = assert!(PLACEHOLDER_CONTROL_ID.len() == CONTROL_ID_LEN);

/// Why messages could not be loaded or generated. Each message names the file (or message
/// origin, see [`Message::origin`]) and the cause on one line.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum SourceError {
    /// A file or folder could not be read.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// A corpus folder holds no message file.
    #[error(
        "{}: no message files (hidden files, MANIFEST*, README*, LICENSE* and *.md are skipped)",
        path.display()
    )]
    EmptyCorpus {
        /// The folder.
        path: PathBuf,
    },
    /// A file or message does not start with an MSH segment (or, for a file, FHS, BHS or an
    /// MLLP start byte).
    #[error("{origin}: no MSH segment at the start")]
    MissingHeader {
        /// The file, or the message (see [`Message::origin`]).
        origin: String,
    },
    /// The MSH segment is there but its delimiters cannot be read.
    #[error("{origin}: unreadable MSH: {cause}")]
    Header {
        /// The message (see [`Message::origin`]).
        origin: String,
        /// The cause.
        cause: Hl7Error,
    },
    /// The message contains an MLLP framing byte (VT or FS), which no MLLP frame can carry.
    #[error("{origin}: framing byte 0x{byte:02X} inside the message at offset {offset}")]
    FramingByte {
        /// The message (see [`Message::origin`]).
        origin: String,
        /// Offset of the byte in the message.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// An MLLP-framed file is not a valid MLLP stream; the offset is in the file.
    #[error("{}: MLLP framing: {cause}", path.display())]
    Framing {
        /// The file.
        path: PathBuf,
        /// The cause, with the byte offset in the file.
        cause: FrameError,
    },
    /// A batch file (or a file of messages back to back) has a wrong structure or count; the
    /// offset is in the file.
    #[error("{}: {cause}", path.display())]
    Batch {
        /// The file.
        path: PathBuf,
        /// The cause, with the byte offset in the file.
        cause: BatchError,
    },
    /// The requested template size is below what the message needs without padding.
    #[error("{kind} template: {size} bytes requested, but seed {seed} needs at least {minimum}")]
    TemplateTooSmall {
        /// The template.
        kind: TemplateKind,
        /// The size requested.
        size: usize,
        /// The seed: the minimum depends on the names and numbers it picks.
        seed: u64,
        /// The smallest size possible for this kind and seed.
        minimum: usize,
    },
}

/// A message ready to be stamped and sent: MSH-7 and MSH-10 are placeholders of exactly
/// [`TIMESTAMP_LEN`] and [`CONTROL_ID_LEN`] bytes, overwritten for every send.
#[derive(Clone)]
pub struct Message {
    /// Where the message came from, for error messages and reports.
    origin: String,
    /// `VT message FS CR`: kept framed so that writing it out is a single copy.
    framed: Vec<u8>,
    /// Where the MSH-7 placeholder starts in the message (not in `framed`).
    timestamp_at: usize,
    /// Where the MSH-10 placeholder starts in the message (not in `framed`).
    control_id_at: usize,
}

impl Message {
    /// Takes one HL7 message (without MLLP framing) and rebuilds its MSH for stamping.
    ///
    /// MSH-7 and MSH-10 are replaced, whole, by placeholders of exactly [`TIMESTAMP_LEN`] and
    /// [`CONTROL_ID_LEN`] bytes; MSH fields missing up to MSH-10 are added, empty. The field
    /// separator is the message's own (MSH-1), whatever it is. Every other byte is kept
    /// unchanged, except a UTF-8 byte order mark before `MSH`, which is dropped. `origin`
    /// names the message in errors and reports: a file path, `path #3`, a template name.
    ///
    /// # Errors
    /// [`SourceError::MissingHeader`] when `bytes` (after a byte order mark) does not start
    /// with `MSH`; [`SourceError::Header`] when MSH-1/MSH-2 cannot be read;
    /// [`SourceError::FramingByte`] when the message contains VT or FS.
    pub fn parse(origin: impl Into<String>, bytes: &[u8]) -> Result<Self, SourceError> {
        let origin = origin.into();
        let message = strip_bom(bytes);
        if !message.starts_with(b"MSH") {
            return Err(SourceError::MissingHeader { origin });
        }
        let msh = match Msh::parse(message) {
            Ok(msh) => msh,
            Err(cause) => return Err(SourceError::Header { origin, cause }),
        };
        if let Some(offset) = Scanner::new().find_either(message, VT, FS) {
            let byte = message.get(offset).copied().unwrap_or_default();
            return Err(SourceError::FramingByte {
                origin,
                offset,
                byte,
            });
        }

        // The header segment, without its terminator (CR, or LF in files written that way).
        let header = msh.as_bytes();
        let rest = message.get(header.len()..).unwrap_or_default();
        let separator = msh.delimiters().field;
        // Fields of the header from MSH-2 on; MSH-2 cannot hold the separator (it is read up
        // to the first one), so splitting on it is exact.
        let mut fields = header
            .get(4..)
            .unwrap_or_default()
            .split(|&b| b == separator);

        let mut framed = Vec::with_capacity(message.len() + TIMESTAMP_LEN + CONTROL_ID_LEN + 16);
        framed.push(VT);
        framed.extend_from_slice(b"MSH");
        framed.push(separator);
        framed.extend_from_slice(fields.next().unwrap_or_default());
        let (mut timestamp_at, mut control_id_at) = (0, 0);
        for n in 3.. {
            let field = fields.next();
            if field.is_none() && n > 10 {
                break;
            }
            framed.push(separator);
            // Offsets in the message: `framed` has the VT in front.
            let at = framed.len() - 1;
            match n {
                7 => {
                    timestamp_at = at;
                    framed.extend_from_slice(PLACEHOLDER_TIMESTAMP.as_bytes());
                }
                10 => {
                    control_id_at = at;
                    framed.extend_from_slice(PLACEHOLDER_CONTROL_ID.as_bytes());
                }
                _ => framed.extend_from_slice(field.unwrap_or_default()),
            }
        }
        framed.extend_from_slice(rest);
        framed.extend_from_slice(&[FS, CR]);
        Ok(Self {
            origin,
            framed,
            timestamp_at,
            control_id_at,
        })
    }

    /// Where the message came from: a file path, `path #3` for the third message of a file,
    /// or the name of a template.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The message, with the placeholders in MSH-7 and MSH-10, without framing.
    pub fn bytes(&self) -> &[u8] {
        self.framed
            .get(1..self.framed.len() - 2)
            .unwrap_or_default()
    }

    /// Length of the message in bytes, without framing.
    pub fn len(&self) -> usize {
        self.framed.len() - 3
    }

    /// Always false: a message holds at least its MSH segment.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the message with its MLLP framing, as [`write_framed`](Self::write_framed)
    /// writes it: for sizing buffers.
    pub fn framed_len(&self) -> usize {
        self.framed.len()
    }

    /// Where MSH-10 (the control ID placeholder) is in [`bytes`](Self::bytes).
    pub fn control_id_range(&self) -> Range<usize> {
        self.control_id_at..self.control_id_at + CONTROL_ID_LEN
    }

    /// Where MSH-7 (the timestamp placeholder) is in [`bytes`](Self::bytes).
    pub fn timestamp_range(&self) -> Range<usize> {
        self.timestamp_at..self.timestamp_at + TIMESTAMP_LEN
    }

    /// Clears `out` and writes the message framed (`VT message FS CR`) with MSH-10 =
    /// `control_id` and MSH-7 = `timestamp`. Allocates only when `out` lacks capacity.
    ///
    /// This is the load generator's hot path: one copy of the prepared frame and two small
    /// overwrites.
    #[inline]
    pub fn write_framed(
        &self,
        out: &mut Vec<u8>,
        control_id: &[u8; CONTROL_ID_LEN],
        timestamp: &[u8; TIMESTAMP_LEN],
    ) {
        out.clear();
        self.append_framed(out, control_id, timestamp);
    }

    /// As [`write_framed`](Self::write_framed), but appends to `out` instead of replacing
    /// its contents: for writing several messages at once (pipelining).
    #[inline]
    pub fn append_framed(
        &self,
        out: &mut Vec<u8>,
        control_id: &[u8; CONTROL_ID_LEN],
        timestamp: &[u8; TIMESTAMP_LEN],
    ) {
        // The ranges count from the message; in `out` it starts after the VT.
        let message_at = out.len() + 1;
        out.extend_from_slice(&self.framed);
        let at = message_at + self.timestamp_at;
        if let Some(slot) = out.get_mut(at..at + TIMESTAMP_LEN) {
            slot.copy_from_slice(timestamp);
        }
        let at = message_at + self.control_id_at;
        if let Some(slot) = out.get_mut(at..at + CONTROL_ID_LEN) {
            slot.copy_from_slice(control_id);
        }
    }
}

impl fmt::Debug for Message {
    /// The origin and the layout, not the bytes: a message can be megabytes long.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("origin", &self.origin)
            .field("len", &self.len())
            .field("timestamp", &self.timestamp_range())
            .field("control_id", &self.control_id_range())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Control IDs

/// The digits of control IDs: base 36, upper case, so that IDs are plain `[0-9A-Z]` text that
/// no receiver will choke on, and dense enough to fit a run, a connection and a sequence
/// number in 20 characters.
const BASE36: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Characters of a [`RunTag`].
pub const RUN_TAG_LEN: usize = 7;
/// Characters of the connection number in a control ID.
const CONNECTION_LEN: usize = 4;
/// Characters of the sequence number in a control ID.
const SEQ_LEN: usize = CONTROL_ID_LEN - RUN_TAG_LEN - CONNECTION_LEN;

/// Distinct run tags: 36^7, about 7.8 × 10^10.
const RUN_TAGS: u64 = 36u64.pow(7);

/// The largest connection number a control ID can hold: 36^4 − 1 = 1 679 615.
pub const MAX_CONNECTION: u32 = 36u32.pow(4) - 1;

/// The largest sequence number a control ID can hold: 36^9 − 1, about 10^14 (three years of
/// one connection at a million messages a second).
pub const MAX_SEQ: u64 = 36u64.pow(9) - 1;

const _: () = assert!(RUN_TAG_LEN + CONNECTION_LEN + SEQ_LEN == CONTROL_ID_LEN && SEQ_LEN == 9);

/// Seven base-36 characters that set one run's control IDs apart from every other run's.
///
/// Two load generators (or two runs of one) that use different tags never produce the same
/// control ID, so a receiver that counts duplicates sees only real ones.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunTag([u8; RUN_TAG_LEN]);

impl RunTag {
    /// The tag for `seed`: `seed` modulo 36^7, in base 36. Equal seeds give equal tags, so a
    /// run can be repeated with the same IDs.
    pub fn new(seed: u64) -> Self {
        let mut tag = [0; RUN_TAG_LEN];
        write_base36(&mut tag, seed % RUN_TAGS);
        Self(tag)
    }

    /// A tag for this run, from the clock, the process ID and a per-process counter: two
    /// processes, or two calls in one process, get different tags (short of a 1 in 7.8 ×
    /// 10^10 coincidence). Not cryptographic, and needs not be.
    pub fn random() -> Self {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let nanos = since
            .as_secs()
            .wrapping_mul(1_000_000_000)
            .wrapping_add(u64::from(since.subsec_nanos()));
        let pid = u64::from(std::process::id());
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        // Mixed so that nearby clocks and PIDs still land far apart modulo 36^7.
        Self::new(mix64(nanos ^ pid.rotate_left(40) ^ call.rotate_left(20)))
    }

    /// Reads a tag of exactly seven characters `[0-9A-Z]`, as [`Display`](fmt::Display)
    /// writes it; `None` otherwise.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let tag: [u8; RUN_TAG_LEN] = bytes.try_into().ok()?;
        tag.iter()
            .all(|&b| digit_value(b).is_some())
            .then_some(Self(tag))
    }

    /// The seven characters.
    pub fn as_bytes(&self) -> &[u8; RUN_TAG_LEN] {
        &self.0
    }

    /// The seven characters as text.
    pub fn as_str(&self) -> &str {
        // Always ASCII: built from BASE36 or checked by `from_bytes`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for RunTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RunTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RunTag").field(&self.as_str()).finish()
    }
}

/// The control ID of message `seq` of `connection` in `run`: the run tag (7 characters),
/// `connection` (4 base-36 digits) and `seq` (9 base-36 digits), 20 characters `[0-9A-Z]`.
///
/// IDs are unique for distinct `(run, connection, seq)` as long as `connection` is at most
/// [`MAX_CONNECTION`] and `seq` at most [`MAX_SEQ`]. Larger values are a caller bug: they
/// panic in debug builds and saturate in release builds (repeating the last ID rather than
/// wrapping around to the first ones, which would look like a run of duplicates from the
/// start).
///
/// Fast enough for every message: no allocation, no formatting machinery, 13 digit steps.
#[inline]
pub fn control_id(run: RunTag, connection: u32, seq: u64) -> [u8; CONTROL_ID_LEN] {
    debug_assert!(
        connection <= MAX_CONNECTION,
        "connection {connection} exceeds {MAX_CONNECTION}"
    );
    debug_assert!(seq <= MAX_SEQ, "sequence number {seq} exceeds {MAX_SEQ}");
    let mut id = [0; CONTROL_ID_LEN];
    let (tag, numbers) = id.split_at_mut(RUN_TAG_LEN);
    tag.copy_from_slice(&run.0);
    let (connection_digits, seq_digits) = numbers.split_at_mut(CONNECTION_LEN);
    write_base36(connection_digits, u64::from(connection.min(MAX_CONNECTION)));
    write_base36(seq_digits, seq.min(MAX_SEQ));
    id
}

/// The connection and sequence numbers of a control ID made by [`control_id`] for `run`;
/// `None` if `id` is not one of this run's (wrong length, another run's tag, a character
/// outside `[0-9A-Z]`).
pub fn parse_control_id(run: RunTag, id: &[u8]) -> Option<(u32, u64)> {
    let (tag, connection, seq) = split_control_id(id)?;
    (tag == run).then_some((connection, seq))
}

/// The run tag, connection and sequence numbers of any control ID made by [`control_id`]:
/// for a receiver that does not know which runs to expect. `None` if `id` is not 20
/// characters `[0-9A-Z]`.
pub fn split_control_id(id: &[u8]) -> Option<(RunTag, u32, u64)> {
    let id: &[u8; CONTROL_ID_LEN] = id.try_into().ok()?;
    let (tag, numbers) = id.split_at(RUN_TAG_LEN);
    let (connection, seq) = numbers.split_at(CONNECTION_LEN);
    let tag = RunTag::from_bytes(tag)?;
    let connection = u32::try_from(read_base36(connection)?).ok()?;
    Some((tag, connection, read_base36(seq)?))
}

/// Writes `value` into `out` as base-36 digits, most significant first, keeping the low
/// digits if `value` does not fit.
#[inline]
fn write_base36(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        // `value % 36` is below 36: the conversion and the lookup cannot fail.
        let digit = usize::try_from(value % 36).unwrap_or_default();
        *slot = BASE36.get(digit).copied().unwrap_or(b'0');
        value /= 36;
    }
}

/// Reads base-36 digits (at most 12, so the value fits a `u64`).
fn read_base36(digits: &[u8]) -> Option<u64> {
    digits
        .iter()
        .try_fold(0u64, |value, &b| Some(value * 36 + digit_value(b)?))
}

/// The value of one upper-case base-36 digit.
fn digit_value(byte: u8) -> Option<u64> {
    match byte {
        b'0'..=b'9' => Some(u64::from(byte - b'0')),
        b'A'..=b'Z' => Some(u64::from(byte - b'A') + 10),
        _ => None,
    }
}

/// The splitmix64 finaliser: spreads every input bit over the whole output.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

// ---------------------------------------------------------------------------------------------
// Timestamps

/// The current time as MSH-7 (`YYYYMMDDHHMMSS`, UTC), formatted only when the second changes.
///
/// A sender stamps every message, up to millions a second; formatting a calendar date for each
/// would cost more than the copy of the message. One cache per connection or thread: it is a
/// plain value, not shared.
#[derive(Debug, Clone)]
pub struct TimestampCache {
    /// The second (since the Unix epoch) that `stamp` shows; `None` before the first call.
    second: Option<u64>,
    stamp: [u8; TIMESTAMP_LEN],
}

impl Default for TimestampCache {
    fn default() -> Self {
        Self::new()
    }
}

impl TimestampCache {
    /// An empty cache: the first call formats.
    pub fn new() -> Self {
        Self {
            second: None,
            stamp: [b'0'; TIMESTAMP_LEN],
        }
    }

    /// `SystemTime::now()` as `YYYYMMDDHHMMSS`.
    #[inline]
    pub fn now(&mut self) -> &[u8; TIMESTAMP_LEN] {
        self.at(SystemTime::now())
    }

    /// `time` as `YYYYMMDDHHMMSS` (UTC; times before the epoch read as the epoch).
    #[inline]
    pub fn at(&mut self, time: SystemTime) -> &[u8; TIMESTAMP_LEN] {
        let second = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if self.second != Some(second) {
            // The relay's formatter writes `YYYYMMDDHHMMSS.mmm+0000`; its first 14 bytes are
            // the second. One calendar implementation for the whole project.
            let formatted = mllp::timestamp::hl7_timestamp(time);
            if let Some(head) = formatted.first_chunk::<TIMESTAMP_LEN>() {
                self.stamp = *head;
            }
            self.second = Some(second);
        }
        &self.stamp
    }
}

// ---------------------------------------------------------------------------------------------
// Templates

/// A built-in message template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateKind {
    /// ADT^A01 (admit a patient), v2.5.1, padded with an admission note; see [`template`].
    Adt,
    /// ORU^R01 (lab result), v2.5.1, padded with an embedded report; see [`oru_message`].
    Oru,
}

impl TemplateKind {
    /// Every template.
    pub const ALL: [Self; 2] = [Self::Adt, Self::Oru];

    /// The name used on the command line: `adt` or `oru`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Adt => "adt",
            Self::Oru => "oru",
        }
    }

    /// The smallest message this template makes for `seed`, in bytes: the barest message,
    /// without padding. It depends on the seed because the names and numbers picked vary in
    /// length: 181 to 192 bytes for [`Adt`](Self::Adt), about 292 to 302 for
    /// [`Oru`](Self::Oru), so every seed makes a 200-byte ADT and a 320-byte ORU.
    pub fn minimum_size(self, seed: u64) -> usize {
        self.generate(0, seed).len()
    }

    /// The message of `size` bytes for `seed`, or the minimum one when `size` is smaller.
    fn generate(self, size: usize, seed: u64) -> Vec<u8> {
        match self {
            Self::Adt => adt(size, seed),
            Self::Oru => oru(size, seed, Stamp::Placeholder),
        }
    }
}

impl fmt::Display for TemplateKind {
    /// The message type: `ADT^A01` or `ORU^R01`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Adt => "ADT^A01",
            Self::Oru => "ORU^R01",
        })
    }
}

/// A template name that is neither `adt` nor `oru`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown template {0:?} (expected adt or oru)")]
pub struct UnknownTemplate(pub String);

impl FromStr for TemplateKind {
    type Err = UnknownTemplate;

    /// Reads [`name`](Self::name), ignoring case.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownTemplate(name.to_owned()))
    }
}

/// A message of template `kind`, exactly `size` bytes long, the same bytes for the same
/// `seed` (and different names, identifiers and values for different seeds).
///
/// - [`TemplateKind::Adt`]: an ADT^A01 v2.5.1, in the order of the ADT_A01 structure: MSH,
///   EVN, PID, NK1, PV1, an OBX of type FT holding the admission note, one or two AL1
///   allergies and one or two DG1 diagnoses. The note is as long as `size` requires, its last
///   sentence cut where the size is reached. The message is the fullest shape that fits. From
///   about 765 to 985 bytes, depending on the seed (so for every size of 1 KiB and more): all of the
///   above, with MSH-4 carrying its OID and MSH-13 to MSH-16 present. Below, the facility is
///   `GH` instead of `GENERAL_HOSP`, MSH-13 to MSH-16 are absent, and the DG1, the AL1, the
///   NK1, the PID's address and contact fields, the PV1's visit fields, the note's name in
///   OBX-3, the room and middle name, and last the birth date and sex are left out in turn,
///   down to MSH, EVN, PID (identifier and name), PV1 (class and ward) and the note's OBX:
///   181 to 192 bytes, depending on the seed.
/// - [`TemplateKind::Oru`]: the message of [`oru_message`] but for MSH-7 and MSH-10, whose
///   placeholders make it 4 bytes shorter: from about 292 to 302 bytes depending on the seed.
///
/// Both use the delimiters `|^~\&`, CR segment terminators, and ask for original-mode ACKs
/// (MSH-15 and MSH-16 empty or absent). MSH-7 and MSH-10 are written at the width of the
/// placeholders, so [`Message::len`] is `size`. A seed names the same patient at every size.
///
/// # Errors
/// [`SourceError::TemplateTooSmall`] when `size` is below [`TemplateKind::minimum_size`]
/// (under 200 bytes for an ADT, under 320 for an ORU, whatever the seed).
pub fn template(kind: TemplateKind, size: usize, seed: u64) -> Result<Message, SourceError> {
    let bytes = kind.generate(size, seed);
    // A generator returns its minimum message when `size` is smaller, and exactly `size`
    // bytes otherwise.
    if bytes.len() != size {
        return Err(SourceError::TemplateTooSmall {
            kind,
            size,
            seed,
            minimum: bytes.len(),
        });
    }
    let message = Message::parse(format!("{kind} template (seed {seed})"), &bytes)?;
    debug_assert_eq!(
        message.len(),
        size,
        "placeholders have the generated widths"
    );
    Ok(message)
}

/// The templates' generator: deterministic per seed, shared with the core's tests and the
/// benchmarks.
type Rng = mllp::rand::XorShift;

/// A value in `lo..=hi`.
fn between(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    lo + rng.below(hi - lo + 1)
}

/// What a generator writes in MSH-7 and MSH-10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// A plausible time with its zone and a `MSG…` control ID, as a real sender writes them.
    Sample,
    /// The placeholders of [`Message`], so that [`Message::parse`] keeps the size.
    Placeholder,
}

const FAMILY_NAMES: [&str; 8] = [
    "DOE",
    "SMITH",
    "GARCIA",
    "MUELLER",
    "NGUYEN",
    "ROSSI",
    "OKAFOR",
    "LINDQVIST",
];
const GIVEN_NAMES: [&str; 8] = [
    "JANE", "JOHN", "MARIA", "PETER", "ANH", "GIULIA", "CHIDI", "ELSA",
];
const STREETS: [&str; 4] = ["MAIN ST", "OAK AVE", "LAKE RD", "HILL ST"];

/// One numeric result of a complete blood count: LOINC code, name, unit, reference range,
/// and the range (in tenths) a generated value is drawn from.
struct Analyte {
    loinc: &'static str,
    name: &'static str,
    unit: &'static str,
    range: &'static str,
    tenths: (usize, usize),
}

const CBC: [Analyte; 5] = [
    Analyte {
        loinc: "718-7",
        name: "Hemoglobin",
        unit: "g/dL",
        range: "12.0-16.0",
        tenths: (100, 175),
    },
    Analyte {
        loinc: "4544-3",
        name: "Hematocrit",
        unit: "%",
        range: "36.0-46.0",
        tenths: (320, 500),
    },
    Analyte {
        loinc: "6690-2",
        name: "WBC",
        unit: "10*3/uL",
        range: "4.5-11.0",
        tenths: (30, 140),
    },
    Analyte {
        loinc: "789-8",
        name: "RBC",
        unit: "10*6/uL",
        range: "4.2-5.4",
        tenths: (38, 60),
    },
    Analyte {
        loinc: "787-2",
        name: "MCV",
        unit: "fL",
        range: "80.0-100.0",
        tenths: (750, 1050),
    },
];

/// Base64 alphabet: what an embedded PDF in OBX-5 looks like, and none of it is a delimiter.
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A realistic ORU^R01 (v2.5.1) lab result of exactly `size` bytes (from about 300 bytes
/// up), different for every `seed`.
///
/// Segments, each ended by CR: `MSH`, `PID`, `OBR`, up to five `OBX` with numeric (`NM`)
/// complete-blood-count results, and a last `OBX` of type `ED` whose OBX-5 carries a
/// base64-alphabet "PDF" sized so that the whole message is exactly `size` bytes long. The
/// message is the fullest of these shapes that fits in `size` bytes:
///
/// - From about 717 to 729 bytes, depending on the seed (so for every `size` of 1 KiB and more):
///   the full message, whose bytes the shorter shapes leave unchanged (benchmarks compare
///   runs over time). MSH-1 to MSH-12 valued except MSH-8, MSH-4 with its OID, then MSH-13
///   to MSH-16 present and empty (so the message asks for an original-mode ACK); a PID with
///   identifiers, name, birth date, sex, address and phone; an OBR with its dates, ordering
///   provider and result status; the five numeric results; the document.
/// - Below: a shorter header (MSH-4 without its OID, MSH-13 to MSH-16 absent, which asks
///   for the same original-mode ACK), a PID with identifier, name, birth date and sex, an OBR
///   with its identifiers, test and date, then as many of the five numeric results as fit
///   (from none, about 296 to 306 bytes depending on the seed, to all five), and the
///   document.
///
/// When `size` is smaller than the shortest message with an empty document, the message is
/// that shortest one. The patient, identifiers and values are the same at every size for a
/// seed; only the shape and the document change.
///
/// The message uses the standard delimiters `|^~\&` and contains no MLLP framing byte (VT,
/// FS), so it can be framed as is.
pub fn oru_message(size: usize, seed: u64) -> Vec<u8> {
    oru(size, seed, Stamp::Sample)
}

/// [`oru_message`], with MSH-7 and MSH-10 as `stamp` says. Every random draw is the same
/// either way, so the two differ only in those two fields (and the document's length): with
/// [`Stamp::Sample`] the message without its document is 4 bytes longer.
fn oru(size: usize, seed: u64, stamp: Stamp) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let result = LabResult::draw(&mut rng);
    let trailer = "||||||F\r";
    // The fullest shape that leaves room for a document, however short; the barest otherwise.
    let head = (0..=LabResult::FULL)
        .rev()
        .map(|shape| result.render(shape, stamp))
        .find(|head| head.len() + trailer.len() <= size)
        .unwrap_or_else(|| result.render(0, stamp));
    let mut bytes = head.into_bytes();
    let document = size.saturating_sub(bytes.len() + trailer.len());
    bytes.reserve(document + trailer.len());
    bytes.extend((0..document).map(|_| BASE64[rng.below(BASE64.len())]));
    bytes.extend_from_slice(trailer.as_bytes());
    bytes
}

/// Everything an ORU^R01 message draws from the generator before its document, drawn in one
/// fixed order whatever the size, so that a seed gives the same patient and results in every
/// shape (and the full shape the bytes it has always had).
struct LabResult {
    control_id: u64,
    /// `YYYYMMDDHHMMSS`: when the specimen was taken and the message sent.
    time: String,
    family: &'static str,
    given: &'static str,
    mrn: usize,
    birth_year: usize,
    sex: &'static str,
    street: &'static str,
    house: usize,
    ssn: usize,
    phone: usize,
    placer: usize,
    /// The [`CBC`] results, in tenths.
    values: [usize; CBC.len()],
}

impl LabResult {
    /// The full shape; shapes `0..FULL` have the short header and that many numeric results.
    const FULL: usize = CBC.len() + 1;

    fn draw(rng: &mut Rng) -> Self {
        let control_id = rng.next_u64();
        let day = between(rng, 1, 28);
        let (hour, minute, second) = (rng.below(24), rng.below(60), rng.below(60));
        let time = format!("202601{day:02}{hour:02}{minute:02}{second:02}");
        let family = rng.pick(&FAMILY_NAMES);
        let given = rng.pick(&GIVEN_NAMES);
        let mrn = between(rng, 100_000, 999_999);
        let birth_year = between(rng, 1930, 2020);
        let sex = rng.pick(&["F", "M"]);
        let street = rng.pick(&STREETS);
        let house = between(rng, 1, 999);
        let ssn = between(rng, 100_000_000, 899_999_999);
        let phone = rng.below(1000);
        let placer = between(rng, 10_000_000, 99_999_999);
        let values = CBC.map(|analyte| between(rng, analyte.tenths.0, analyte.tenths.1));
        Self {
            control_id,
            time,
            family,
            given,
            mrn,
            birth_year,
            sex,
            street,
            house,
            ssn,
            phone,
            placer,
            values,
        }
    }

    /// The message of `shape` (see [`LabResult::FULL`]) up to the document: it ends inside
    /// OBX-5 of the last OBX, after `^Base64^`.
    fn render(&self, shape: usize, stamp: Stamp) -> String {
        let full = shape >= Self::FULL;
        let Self {
            ref time,
            family,
            given,
            mrn,
            birth_year,
            sex,
            street,
            house,
            ssn,
            phone,
            placer,
            ..
        } = *self;
        let mut m = String::with_capacity(1024);
        let (msh7, msh10) = match stamp {
            Stamp::Sample => (
                format!("{time}+0100"),
                format!("MSG{:016X}", self.control_id),
            ),
            Stamp::Placeholder => (
                PLACEHOLDER_TIMESTAMP.to_owned(),
                PLACEHOLDER_CONTROL_ID.to_owned(),
            ),
        };

        if full {
            // MSH-1 … MSH-12, MSH-8 (security) empty, then MSH-13 … MSH-16 present and empty.
            let _ = write!(
                m,
                "MSH|^~\\&|LABSYS|CENTRAL_LAB^2.16.840.1.113883.3.72.5.21^ISO|EHR|GENERAL_HOSP\
                 |{msh7}||ORU^R01^ORU_R01|{msh10}|P|2.5.1||||\r"
            );
            let _ = write!(
                m,
                "PID|1||{mrn}^^^HOSP^MR~{ssn}^^^SSA^SS||{family}^{given}^Q||{birth_year}0101|{sex}\
                 |||{house} {street}^^SPRINGFIELD^IL^62701||(217)555-0{phone:03}\r",
            );
            let _ = write!(
                m,
                "OBR|1|{placer}^EHR|{filler}^LABSYS|58410-2^CBC panel^LN|||{time}\
                 |||||||||1234567890^WELBY^MARCUS||||||{time}|||F\r",
                filler = placer + 1,
            );
        } else {
            // MSH-1 … MSH-12, MSH-8 (security) empty: still an original-mode ACK.
            let _ = write!(
                m,
                "MSH|^~\\&|LABSYS|CENTRAL_LAB|EHR|GENERAL_HOSP\
                 |{msh7}||ORU^R01^ORU_R01|{msh10}|P|2.5.1\r"
            );
            let _ = write!(
                m,
                "PID|1||{mrn}^^^HOSP^MR||{family}^{given}||{birth_year}0101|{sex}\r"
            );
            let _ = write!(
                m,
                "OBR|1|{placer}^EHR|{filler}^LABSYS|58410-2^CBC panel^LN|||{time}\r",
                filler = placer + 1,
            );
        }

        let results = if full { CBC.len() } else { shape };
        for (i, (analyte, &value)) in CBC.iter().zip(&self.values).take(results).enumerate() {
            let (whole, tenth) = (value / 10, value % 10);
            let (low, high) = analyte.range.split_once('-').unwrap_or(("0", "0"));
            let flag = match (low.parse::<f64>(), high.parse::<f64>()) {
                (Ok(low), _) if (value as f64) / 10.0 < low => "L",
                (_, Ok(high)) if (value as f64) / 10.0 > high => "H",
                _ => "N",
            };
            let _ = write!(
                m,
                "OBX|{n}|NM|{loinc}^{name}^LN||{whole}.{tenth}|{unit}|{range}|{flag}|||F\r",
                n = i + 1,
                loinc = analyte.loinc,
                name = analyte.name,
                unit = analyte.unit,
                range = analyte.range,
            );
        }

        // The embedded report: OBX-5 is an ED, `source^type^subtype^encoding^data`.
        let _ = write!(
            m,
            "OBX|{n}|ED|11502-2^Laboratory report^LN||LABSYS^AP^PDF^Base64^",
            n = results + 1
        );
        m
    }
}

/// Drug allergies for AL1-3: RxNorm code and name.
const ALLERGENS: [(&str, &str); 4] = [
    ("7980", "Penicillin G"),
    ("2670", "Codeine"),
    ("1191", "Aspirin"),
    ("10180", "Sulfamethoxazole"),
];
/// AL1-4, allergy severity (HL7 table 0128).
const SEVERITIES: [&str; 3] = [
    "MI^Mild^HL70128",
    "MO^Moderate^HL70128",
    "SV^Severe^HL70128",
];
const REACTIONS: [&str; 5] = ["HIVES", "RASH", "ANAPHYLAXIS", "NAUSEA", "WHEEZING"];

/// Diagnoses for DG1-3: ICD-10-CM code and description.
const DIAGNOSES: [(&str, &str); 6] = [
    ("J18.9", "Pneumonia, unspecified organism"),
    ("I21.4", "Non-ST elevation (NSTEMI) myocardial infarction"),
    ("N39.0", "Urinary tract infection, site not specified"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("I10", "Essential (primary) hypertension"),
    ("K35.80", "Unspecified acute appendicitis"),
];

/// Attending physicians (XCN: ID, family, given, middle, suffix, prefix).
const PHYSICIANS: [&str; 3] = [
    "1234567890^WELBY^MARCUS^^^DR",
    "2345678901^QUINN^MICHAELA^^^DR",
    "3456789012^KILDARE^JAMES^^^DR",
];
/// PV1-3 points of care.
const WARDS: [&str; 4] = ["4WEST", "5EAST", "ICU", "CCU"];

/// The admission note's sentences: plain text without delimiters, so that the note needs no
/// escaping beyond its `\.br\` line breaks.
const NOTE: [&str; 8] = [
    "Patient admitted from the emergency department for further evaluation.",
    "Vital signs stable on arrival.",
    "Denies chest pain, shortness of breath or fever.",
    "History of hypertension, on home medications.",
    "Physical examination unremarkable apart from mild abdominal tenderness.",
    "Labs drawn; results pending at the time of this note.",
    "Plan: IV fluids, monitor overnight, reassess in the morning.",
    "Family informed and in agreement with the plan.",
];

/// The ADT^A01 template: see [`template`]. Exactly `size` bytes, or the barest message (with
/// an empty note) when `size` is smaller.
fn adt(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let admission = Admission::draw(&mut rng);
    // The fullest shape that leaves room for a note, however short; the barest otherwise.
    let (head, tail) = (0..=Admission::FULL)
        .rev()
        .map(|shape| admission.render(shape))
        .find(|(head, tail)| head.len() + tail.len() <= size)
        .unwrap_or_else(|| admission.render(0));
    let note = size.saturating_sub(head.len() + tail.len());
    let mut bytes = head.into_bytes();
    bytes.reserve(note + tail.len());
    write_note(&mut bytes, note, &mut rng);
    bytes.extend_from_slice(tail.as_bytes());
    bytes
}

/// Everything an ADT^A01 message draws from the generator before its note, drawn in one fixed
/// order whatever the size, so that a seed gives the same patient and visit in every shape
/// (and the full shape the bytes it has always had).
struct Admission {
    /// `YYYYMMDDHHMMSS`: when the patient was admitted (EVN-2, PV1-44, DG1-5).
    time: String,
    family: &'static str,
    given: &'static str,
    middle: &'static str,
    mrn: usize,
    account: usize,
    /// `YYYYMMDD`.
    birth: String,
    sex: &'static str,
    /// PID-11 and NK1-4.
    address: String,
    /// PID-13 and NK1-5.
    phone: String,
    marital: &'static str,
    ssn: String,
    operator: usize,
    kin: &'static str,
    relationship: &'static str,
    ward: &'static str,
    room: usize,
    bed: &'static str,
    visit: usize,
    admission_type: &'static str,
    attending: &'static str,
    service: &'static str,
    admit_source: &'static str,
    /// AL1-3 (an index in [`ALLERGENS`]), AL1-4 and AL1-5 of each allergy.
    allergies: Vec<(usize, &'static str, &'static str)>,
    /// The first diagnosis (an index in [`DIAGNOSES`]) and how many follow it, 1 or 2.
    diagnoses: (usize, usize),
}

impl Admission {
    /// Shape from which the PID has the birth date (PID-7) and sex (PID-8).
    const BIRTH: usize = 1;
    /// Shape from which the patient's location (PV1-3) has room and bed, and the name a
    /// middle name.
    const ROOM: usize = 2;
    /// Shape from which OBX-3 names the note besides coding it.
    const NOTE_NAME: usize = 3;
    /// Shape from which the PV1 has admission type, attending doctor, service, admit source
    /// and visit number (PV1-4, -7, -10, -14, -19).
    const VISIT: usize = 4;
    /// Shape from which the PID has address, phone, marital status, account and SSN.
    const CONTACT: usize = 5;
    /// Shape from which the next of kin (NK1) is there.
    const KIN: usize = 6;
    /// Shape from which the allergies (AL1) are there.
    const ALLERGY: usize = 7;
    /// Shape from which the diagnoses (DG1) are there.
    const DIAGNOSIS: usize = 8;
    /// The full shape: besides all of the above, MSH-4 with its OID and MSH-13 … MSH-16
    /// present, the facility spelled out (`GENERAL_HOSP`, not `GH`), the registrar in EVN-5
    /// and the admission time in PV1-44.
    const FULL: usize = 9;

    fn draw(rng: &mut Rng) -> Self {
        let day = between(rng, 1, 28);
        let (hour, minute, second) = (rng.below(24), rng.below(60), rng.below(60));
        let time = format!("202602{day:02}{hour:02}{minute:02}{second:02}");
        let family = rng.pick(&FAMILY_NAMES);
        let given = rng.pick(&GIVEN_NAMES);
        let middle = rng.pick(&GIVEN_NAMES);
        let mrn = between(rng, 100_000, 999_999);
        let account = between(rng, 10_000_000, 99_999_999);
        let birth = format!(
            "{}{:02}{:02}",
            between(rng, 1930, 2020),
            between(rng, 1, 12),
            between(rng, 1, 28)
        );
        let sex = rng.pick(&["F", "M"]);
        let address = format!(
            "{} {}^^SPRINGFIELD^IL^62701^USA",
            between(rng, 1, 999),
            rng.pick(&STREETS)
        );
        let phone = format!("(217)555-{:04}", rng.below(10_000));
        let marital = rng.pick(&["S", "M", "D", "W"]);
        let ssn = between(rng, 100_000_000, 899_999_999).to_string();
        let operator = between(rng, 1000, 9999);
        let kin = rng.pick(&GIVEN_NAMES);
        let relationship = rng.pick(&[
            "SPO^Spouse^HL70063",
            "CHD^Child^HL70063",
            "PAR^Parent^HL70063",
        ]);
        let ward = rng.pick(&WARDS);
        let room = between(rng, 100, 599);
        let bed = rng.pick(&["A", "B"]);
        let visit = between(rng, 1_000_000, 9_999_999);
        let admission_type = rng.pick(&["E", "R", "U"]);
        let attending = rng.pick(&PHYSICIANS);
        let service = rng.pick(&["MED", "SUR", "CAR"]);
        let admit_source = rng.pick(&["1", "7"]);
        let count = between(rng, 1, 2);
        let first = rng.below(ALLERGENS.len());
        let allergies = (0..count)
            .map(|i| {
                let severity = rng.pick(&SEVERITIES);
                let reaction = rng.pick(&REACTIONS);
                ((first + i) % ALLERGENS.len(), severity, reaction)
            })
            .collect();
        let count = between(rng, 1, 2);
        let diagnoses = (rng.below(DIAGNOSES.len()), count);
        Self {
            time,
            family,
            given,
            middle,
            mrn,
            account,
            birth,
            sex,
            address,
            phone,
            marital,
            ssn,
            operator,
            kin,
            relationship,
            ward,
            room,
            bed,
            visit,
            admission_type,
            attending,
            service,
            admit_source,
            allergies,
            diagnoses,
        }
    }

    /// The message of `shape` (the constants above; each shape has everything the smaller
    /// ones have) without its note: what comes before OBX-5 of the note, and what comes
    /// after.
    fn render(&self, shape: usize) -> (String, String) {
        let full = shape >= Self::FULL;
        let hospital = if full { "GENERAL_HOSP" } else { "GH" };
        let time = self.time.as_str();
        let mut head = String::with_capacity(1024);
        if full {
            // MSH-1 … MSH-12, MSH-8 (security) empty, then MSH-13 … MSH-16 present and
            // empty: an original-mode ACK is expected.
            let _ = write!(
                head,
                "MSH|^~\\&|ADT1|GENERAL_HOSP^2.16.840.1.113883.3.72.5.20^ISO|EHR|GENERAL_HOSP\
                 |{PLACEHOLDER_TIMESTAMP}||ADT^A01^ADT_A01|{PLACEHOLDER_CONTROL_ID}|P|2.5.1||||\r"
            );
        } else {
            // MSH-1 … MSH-12, MSH-8 (security) empty: still an original-mode ACK.
            let _ = write!(
                head,
                "MSH|^~\\&|ADT1|GH|EHR|GH\
                 |{PLACEHOLDER_TIMESTAMP}||ADT^A01^ADT_A01|{PLACEHOLDER_CONTROL_ID}|P|2.5.1\r"
            );
        }

        // EVN-1 event type (kept for receivers older than v2.5), EVN-2 recorded, EVN-5
        // operator.
        let operator = format!("{}^REGISTRAR^ADMIT", self.operator);
        let mut evn = vec![(1, "A01"), (2, time)];
        if full {
            evn.push((5, &operator));
        }
        push_segment(&mut head, "EVN", &evn);

        let identifier = format!("{}^^^{hospital}^MR", self.mrn);
        let name = if shape >= Self::ROOM {
            format!("{}^{}^{}", self.family, self.given, self.middle)
        } else {
            format!("{}^{}", self.family, self.given)
        };
        let account = format!("{}^^^{hospital}^AN", self.account);
        let mut pid = vec![(1, "1"), (3, &identifier), (5, &name)];
        if shape >= Self::BIRTH {
            pid.extend([(7, self.birth.as_str()), (8, self.sex)]);
        }
        if shape >= Self::CONTACT {
            pid.extend([
                (11, self.address.as_str()),
                (13, &self.phone),
                (16, self.marital),
                (18, &account),
                (19, &self.ssn),
            ]);
        }
        push_segment(&mut head, "PID", &pid);

        if shape >= Self::KIN {
            // Next of kin: same family, same address.
            let kin = format!("{}^{}", self.family, self.kin);
            push_segment(
                &mut head,
                "NK1",
                &[
                    (1, "1"),
                    (2, &kin),
                    (3, self.relationship),
                    (4, &self.address),
                    (5, &self.phone),
                ],
            );
        }

        // PV1-2 class, -3 location, -4 admission type, -7 attending, -10 service, -14 admit
        // source, -19 visit number, -44 admit time.
        let location = match (full, shape >= Self::ROOM) {
            (true, _) => format!("{}^{}^{}^{hospital}", self.ward, self.room, self.bed),
            (false, true) => format!("{}^{}^{}", self.ward, self.room, self.bed),
            (false, false) => self.ward.to_owned(),
        };
        let visit = format!("{}^^^{hospital}^VN", self.visit);
        let mut pv1 = vec![(1, "1"), (2, "I"), (3, &location)];
        if shape >= Self::VISIT {
            pv1.extend([
                (4, self.admission_type),
                (7, self.attending),
                (10, self.service),
                (14, self.admit_source),
                (19, &visit),
            ]);
        }
        if full {
            pv1.push((44, time));
        }
        push_segment(&mut head, "PV1", &pv1);

        // The admission note: OBX-2 FT (formatted text), OBX-5 the note, OBX-11 F (final).
        head.push_str(if shape >= Self::NOTE_NAME {
            "OBX|1|FT|34117-2^History and physical note^LN||"
        } else {
            "OBX|1|FT|34117-2^^LN||"
        });

        let mut tail = String::from("||||||F\r");
        if shape >= Self::ALLERGY {
            for (i, &(allergen, severity, reaction)) in self.allergies.iter().enumerate() {
                let (code, allergen) = ALLERGENS[allergen];
                let allergen = format!("{code}^{allergen}^RXNORM");
                push_segment(
                    &mut tail,
                    "AL1",
                    &[
                        (1, &(i + 1).to_string()),
                        (2, "DA^Drug allergy^HL70127"),
                        (3, &allergen),
                        (4, severity),
                        (5, reaction),
                    ],
                );
            }
        }
        if shape >= Self::DIAGNOSIS {
            let (first, count) = self.diagnoses;
            for i in 0..count {
                let (code, text) = DIAGNOSES[(first + i) % DIAGNOSES.len()];
                let diagnosis = format!("{code}^{text}^I10C");
                push_segment(
                    &mut tail,
                    "DG1",
                    &[
                        (1, &(i + 1).to_string()),
                        (3, &diagnosis),
                        (5, time),
                        (6, if i == 0 { "A" } else { "W" }),
                    ],
                );
            }
        }
        (head, tail)
    }
}

/// Appends segment `id` with `fields` as (field number, value), numbers increasing; the
/// fields in between are empty. Ends it with CR.
fn push_segment(out: &mut String, id: &str, fields: &[(usize, &str)]) {
    out.push_str(id);
    let mut at = 0;
    for &(n, value) in fields {
        while at < n {
            out.push('|');
            at += 1;
        }
        out.push_str(value);
    }
    out.push('\r');
}

/// Appends exactly `len` bytes of admission note: sentences separated by spaces or by the
/// `\.br\` line break of formatted text, the last one cut where `len` is reached (never
/// inside an escape sequence: a separator that does not fit whole is a space).
fn write_note(out: &mut Vec<u8>, len: usize, rng: &mut Rng) {
    let end = out.len() + len;
    let mut first = true;
    while out.len() < end {
        let room = end - out.len();
        let sentence = rng.pick(&NOTE).as_bytes();
        let separator: &[u8] = match (first, rng.below(4)) {
            (true, _) => b"",
            (false, 0) => b"\\.br\\",
            (false, _) => b" ",
        };
        first = false;
        if separator.len() + sentence.len() <= room {
            out.extend_from_slice(separator);
            out.extend_from_slice(sentence);
        } else {
            // The last, partial sentence: after a plain space, so no escape is ever cut.
            let separator: &[u8] = if separator.is_empty() { b"" } else { b" " };
            out.extend(separator.iter().chain(sentence).take(room));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Corpora

/// How corpus files are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorpusOptions {
    /// Rewrite LF and CRLF segment terminators into CR (HL7's own), with
    /// [`normalize_segment_terminators`]: only where a segment ID follows, so line breaks
    /// inside report text stay. Off: messages are sent with the terminators their files hold,
    /// so the target sees exactly what the files say.
    pub normalize_line_endings: bool,
}

/// Loads every message of a corpus folder, in a deterministic order.
///
/// The folder is walked recursively and its files are read in path order. Skipped: hidden
/// files and folders (names starting with `.`), files named `MANIFEST*`, `README*`,
/// `LICENSE*` or `LICENCE*` (any case) and `*.md` files, which describe a corpus rather than
/// belong to it; symbolic links to folders are not followed. Any other file must hold
/// messages, read as [`load_file`] does (so `.txt` files, common in real corpora, are
/// loaded). A path to a file loads that file.
///
/// # Errors
/// [`SourceError::Io`] when the folder or a file cannot be read,
/// [`SourceError::EmptyCorpus`] when no file is left to read, and the errors of
/// [`load_file`] for the first file that fails.
pub fn load_corpus(dir: &Path, options: CorpusOptions) -> Result<Vec<Message>, SourceError> {
    let metadata = fs::metadata(dir).map_err(io_error(dir))?;
    if !metadata.is_dir() {
        return load_file(dir, options);
    }
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    if files.is_empty() {
        return Err(SourceError::EmptyCorpus {
            path: dir.to_path_buf(),
        });
    }
    files.sort();
    let mut messages = Vec::new();
    for file in &files {
        messages.extend(load_file(file, options)?);
    }
    Ok(messages)
}

/// Loads the messages of one file, which is one of:
///
/// - an MLLP-framed stream (its first byte that is not whitespace is VT): each frame is a
///   message. FS without CR, LF after FS and whitespace between frames are tolerated, as
///   captures and hand-made files have them;
/// - a batch file (`FHS`/`BHS` … `BTS`/`FTS`) or messages back to back, with or without blank
///   lines between them, split at each `MSH` whatever the segment terminators (CR, LF or
///   CRLF), with the counts of BTS-1/FTS-1 checked;
/// - one message.
///
/// A UTF-8 byte order mark and whitespace before the first message are skipped. Each
/// message's [`origin`](Message::origin) is the path, followed by ` #n` (counting from 1)
/// when the file holds more than one.
///
/// # Errors
/// [`SourceError::Io`] when the file cannot be read; [`SourceError::MissingHeader`] when it
/// starts with something else than a message; [`SourceError::Framing`] and
/// [`SourceError::Batch`] (with the byte offset in the file) when its structure is broken;
/// [`SourceError::Header`] when its first header (MSH, FHS or BHS) cannot be read, or when
/// normalisation cannot read a message's; the errors of [`Message::parse`] for a message.
pub fn load_file(path: &Path, options: CorpusOptions) -> Result<Vec<Message>, SourceError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    split_messages(path, &bytes, options)
}

/// The messages of a file's contents; `path` names them.
fn split_messages(
    path: &Path,
    bytes: &[u8],
    options: CorpusOptions,
) -> Result<Vec<Message>, SourceError> {
    let bom = bytes.len() - strip_bom(bytes).len();
    let skipped = bom
        + bytes
            .get(bom..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    let content = bytes.get(skipped..).unwrap_or_default();

    let payloads: Vec<&[u8]> = if content.first() == Some(&VT) {
        deframe_file(path, bytes, bom)?
    } else if [&b"MSH"[..], b"FHS", b"BHS"]
        .iter()
        .any(|id| content.starts_with(id))
    {
        // Split after the skipped prefix: a blank first line would read as a broken header.
        let batch = split_batch(content, LineEndings::CrOrLf).map_err(|error| match error {
            // The first header is unreadable: say so plainly, the file may not be a batch.
            BatchError::Header(cause) => SourceError::Header {
                origin: path.display().to_string(),
                cause,
            },
            error => SourceError::Batch {
                path: path.to_path_buf(),
                cause: shift_batch_error(error, skipped),
            },
        })?;
        batch
            .messages
            .iter()
            .filter_map(|range| content.get(range.clone()))
            .collect()
    } else {
        return Err(SourceError::MissingHeader {
            origin: path.display().to_string(),
        });
    };

    let numbered = payloads.len() > 1;
    let mut messages = Vec::with_capacity(payloads.len());
    for (index, payload) in payloads.into_iter().enumerate() {
        let origin = if numbered {
            format!("{} #{}", path.display(), index + 1)
        } else {
            path.display().to_string()
        };
        let message = if options.normalize_line_endings && payload.starts_with(b"MSH") {
            let mut owned = payload.to_vec();
            if let Err(cause) = normalize_segment_terminators(&mut owned) {
                return Err(SourceError::Header { origin, cause });
            }
            Message::parse(origin, &owned)?
        } else {
            // Without `MSH` normalisation has nothing to work on; `parse` names the problem.
            Message::parse(origin, payload)?
        };
        messages.push(message);
    }
    Ok(messages)
}

/// The frame payloads of an MLLP-framed file, whose byte order mark (if any) is `bom` bytes.
fn deframe_file<'a>(
    path: &Path,
    bytes: &'a [u8],
    bom: usize,
) -> Result<Vec<&'a [u8]>, SourceError> {
    // Deframe the whole file so that error offsets are file offsets; a byte order mark
    // becomes spaces, which the whitespace tolerance skips. Payload ranges are the same in
    // both buffers, since no payload can start before the first VT.
    let masked;
    let stream = if bom > 0 {
        masked = [&b"   "[..bom.min(3)], bytes.get(bom..).unwrap_or_default()].concat();
        &masked[..]
    } else {
        bytes
    };
    let config = FramingConfig::MLLP.with_tolerances(Tolerances {
        fs_without_cr: true,
        lf_after_fs: true,
        whitespace_between_frames: true,
        junk_before_start: false,
    });
    let mut deframer = Deframer::new(config);
    let framing_error = |cause| SourceError::Framing {
        path: path.to_path_buf(),
        cause,
    };
    let mut payloads = Vec::new();
    // Tolerance events are not polled: a file is read once, and its frames are what matters.
    while let Some(frame) = deframer.decode(stream).map_err(framing_error)? {
        payloads.extend(bytes.get(frame.range));
    }
    deframer.finish().map_err(framing_error)?;
    Ok(payloads)
}

/// `error` with its file offset moved `by` bytes later: for errors found in a slice that
/// starts `by` bytes into the file.
fn shift_batch_error(error: BatchError, by: usize) -> BatchError {
    match error {
        BatchError::UnexpectedSegment { segment, offset } => BatchError::UnexpectedSegment {
            segment,
            offset: offset + by,
        },
        BatchError::BatchCountMismatch {
            declared,
            found,
            offset,
        } => BatchError::BatchCountMismatch {
            declared,
            found,
            offset: offset + by,
        },
        BatchError::FileCountMismatch {
            declared,
            found,
            offset,
        } => BatchError::FileCountMismatch {
            declared,
            found,
            offset: offset + by,
        },
        BatchError::BadCount { offset } => BatchError::BadCount {
            offset: offset + by,
        },
        other => other,
    }
}

/// Adds the message files under `dir`, recursively, to `files` (unsorted).
fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        if is_hidden(&name) {
            continue;
        }
        // `file_type` does not follow symbolic links: a link to a folder is not walked (no
        // loops), a link to a file is read like the file.
        let file_type = entry.file_type().map_err(io_error(&path))?;
        if file_type.is_dir() {
            collect_files(&path, files)?;
        } else if !is_description(&name) {
            let is_file = file_type.is_file()
                || (file_type.is_symlink() && fs::metadata(&path).is_ok_and(|m| m.is_file()));
            if is_file {
                files.push(path);
            }
        }
    }
    Ok(())
}

/// Hidden files and folders: `.git`, editor swap files, `.DS_Store`.
fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

/// Files that describe a corpus: its manifest, read-me, licence, Markdown notes. Real corpora
/// often name their messages `*.txt`, so text files are not in this list.
fn is_description(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_ascii_uppercase();
    ["MANIFEST", "README", "LICENSE", "LICENCE"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || name.ends_with(".MD")
}

/// Maps an I/O error to [`SourceError::Io`] for `path`.
fn io_error(path: &Path) -> impl Fn(io::Error) -> SourceError + '_ {
    move |cause| SourceError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::time::Duration;

    use mllp::ack::AckMode;
    use mllp::frame::LF;
    use mllp::hl7::{self, Delimiters, Version};

    use super::*;

    const ID: &[u8; CONTROL_ID_LEN] = b"ABCDEFGHIJ0123456789";
    const TS: &[u8; TIMESTAMP_LEN] = b"20260314159265";

    /// A folder under the system temporary directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static COUNT: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "loadgen-source-{name}-{}-{}",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("create temporary folder");
            Self(path)
        }

        fn write(&self, relative: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(relative);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create folder");
            }
            fs::write(&path, bytes).expect("write file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The frame `write_framed` makes, without its VT and FS CR.
    fn stamped(message: &Message, id: &[u8; CONTROL_ID_LEN], ts: &[u8; TIMESTAMP_LEN]) -> Vec<u8> {
        let mut out = Vec::new();
        message.write_framed(&mut out, id, ts);
        assert_eq!(out.len(), message.framed_len());
        assert_eq!(out.first(), Some(&VT));
        assert!(out.ends_with(&[FS, CR]));
        out[1..out.len() - 2].to_vec()
    }

    /// Asserts that `sent` is `original` with only MSH-7 and MSH-10 changed (and missing MSH
    /// fields up to MSH-10 added empty, a byte order mark dropped).
    fn assert_same_except_stamps(original: &[u8], sent: &[u8]) {
        let before = Msh::parse(original).expect("original MSH");
        let after = Msh::parse(sent).expect("sent MSH");
        assert_eq!(before.delimiters(), after.delimiters());
        for n in (1..=40).filter(|n| ![7, 10].contains(n)) {
            assert_eq!(before.raw_field(n), after.raw_field(n), "MSH-{n}");
        }
        let rest = |msh: Msh<'_>| msh.message_bytes()[msh.as_bytes().len()..].to_vec();
        assert_eq!(rest(before), rest(after), "everything after MSH");
    }

    /// Asserts that `message` goes out with `id` and `ts` and is otherwise `original`.
    fn assert_round_trip(message: &Message, original: &[u8]) {
        let sent = stamped(message, ID, TS);
        let msh = Msh::parse(&sent).expect("stamped message parses");
        assert_eq!(msh.control_id(), ID);
        assert_eq!(msh.raw_field(7), TS);
        assert_eq!(&sent[message.control_id_range()], ID);
        assert_eq!(&sent[message.timestamp_range()], TS);
        assert_same_except_stamps(original, &sent);
        // Outside the two fields the frame is the prepared message, byte for byte.
        let (t, c) = (message.timestamp_range(), message.control_id_range());
        for (i, (&a, &b)) in sent.iter().zip(message.bytes()).enumerate() {
            if !t.contains(&i) && !c.contains(&i) {
                assert_eq!(a, b, "byte {i}");
            }
        }
    }

    // --- Message ----------------------------------------------------------------------------

    #[test]
    fn message_gets_fixed_width_placeholders() {
        let original = b"MSH|^~\\&|APP|FAC|RAPP|RFAC|20240101120000.123+0100||ADT^A01^ADT_A01|42|P|2.5.1|||AL|NE\rPID|1||123\r";
        let message = Message::parse("m.hl7", original).unwrap();
        assert_eq!(message.origin(), "m.hl7");
        assert_eq!(
            message.bytes(),
            b"MSH|^~\\&|APP|FAC|RAPP|RFAC|19700101000000||ADT^A01^ADT_A01|00000000000000000000|P|2.5.1|||AL|NE\rPID|1||123\r"
        );
        assert_eq!(message.len(), message.bytes().len());
        assert!(!message.is_empty());
        assert_eq!(
            &message.bytes()[message.timestamp_range()],
            b"19700101000000"
        );
        assert_eq!(&message.bytes()[message.control_id_range()], [b'0'; 20]);
        assert_round_trip(&message, original);
    }

    #[test]
    fn write_framed_reuses_the_buffer() {
        let message = template(TemplateKind::Oru, 4096, 1).unwrap();
        let mut out = Vec::with_capacity(8192);
        let pointer = out.as_ptr();
        message.write_framed(&mut out, ID, TS);
        message.write_framed(&mut out, &control_id(RunTag::new(1), 2, 3), TS);
        assert_eq!(out.as_ptr(), pointer, "no reallocation");
        assert_eq!(out.capacity(), 8192);
        assert_eq!(out.len(), 4096 + 3);
        let msh = Msh::parse(&out[1..]).unwrap();
        assert_eq!(msh.control_id(), control_id(RunTag::new(1), 2, 3));
    }

    #[test]
    fn append_framed_writes_frames_back_to_back() {
        let a = template(TemplateKind::Adt, 1000, 1).unwrap();
        let b = template(TemplateKind::Oru, 2000, 2).unwrap();
        let mut out = Vec::new();
        a.append_framed(&mut out, ID, TS);
        b.append_framed(&mut out, &control_id(RunTag::new(9), 0, 1), TS);
        let mut deframer = Deframer::new(FramingConfig::MLLP);
        let mut ids = Vec::new();
        while let Some(frame) = deframer.decode(&out).unwrap() {
            let msh = Msh::parse(frame.payload(&out)).unwrap();
            assert_eq!(msh.raw_field(7), TS);
            ids.push(msh.control_id().to_vec());
        }
        deframer.finish().unwrap();
        assert_eq!(
            ids,
            [ID.to_vec(), control_id(RunTag::new(9), 0, 1).to_vec()]
        );
    }

    #[test]
    fn own_field_separator_is_used() {
        let original =
            b"MSH#^~\\&#APP#FAC#RAPP#RFAC#20240101#SEC#ADT^A01#CTRL1#P#2.5\rPID#1##123|4\r";
        let message = Message::parse("hash", original).unwrap();
        assert_eq!(
            message.bytes(),
            b"MSH#^~\\&#APP#FAC#RAPP#RFAC#19700101000000#SEC#ADT^A01#00000000000000000000#P#2.5\rPID#1##123|4\r"
        );
        assert_round_trip(&message, original);
        // A separator that is usually the component separator.
        let original = b"MSH^~|\\&^A^B^C^D^200101011200^^ADT~A24^X1^P^2.4\r\nEVN^A24\r\n";
        let message = Message::parse("caret", original).unwrap();
        assert_round_trip(&message, original);
        let sent = stamped(&message, ID, TS);
        assert_eq!(Msh::parse(&sent).unwrap().message_type().code, b"ADT");
    }

    #[test]
    fn missing_fields_up_to_msh_10_are_added() {
        let original = b"MSH|^~\\&|A|B\rPID|1\r";
        let message = Message::parse("short", original).unwrap();
        assert_eq!(
            message.bytes(),
            b"MSH|^~\\&|A|B|||19700101000000|||00000000000000000000\rPID|1\r"
        );
        assert_round_trip(&message, original);
        // Only MSH-1 and MSH-2, no terminator at all.
        let message = Message::parse("bare", b"MSH|^~\\&").unwrap();
        assert_eq!(
            message.bytes(),
            b"MSH|^~\\&|||||19700101000000|||00000000000000000000"
        );
        assert_round_trip(&message, b"MSH|^~\\&");
        // Exactly nine fields: MSH-10 appended.
        let original = b"MSH|^~\\&|A|B|C|D|2024||ORU^R01\nOBX|1\n";
        let message = Message::parse("nine", original).unwrap();
        assert_round_trip(&message, original);
        assert!(
            message
                .bytes()
                .ends_with(b"|ORU^R01|00000000000000000000\nOBX|1\n")
        );
    }

    #[test]
    fn components_of_msh_7_are_replaced_with_the_field() {
        let original = b"MSH|^~\\&|A|B|C|D|200101011200^S|X|ADT^A01|ID|P|2.2\r";
        let message = Message::parse("ts", original).unwrap();
        assert_round_trip(&message, original);
        assert!(
            message
                .bytes()
                .starts_with(b"MSH|^~\\&|A|B|C|D|19700101000000|X|")
        );
    }

    #[test]
    fn byte_order_mark_is_dropped() {
        let original = b"\xEF\xBB\xBFMSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.3\rPID|1\r";
        let message = Message::parse("bom", original).unwrap();
        assert!(message.bytes().starts_with(b"MSH|"));
        assert_round_trip(&message, original);
    }

    #[test]
    fn unusable_messages_are_refused_with_their_origin() {
        let error = Message::parse("dir/a.hl7 #2", b"PID|1\rMSH|^~\\&\r").unwrap_err();
        assert!(matches!(error, SourceError::MissingHeader { .. }));
        assert_eq!(
            error.to_string(),
            "dir/a.hl7 #2: no MSH segment at the start"
        );
        let error = Message::parse("b.hl7", b"MSHA^~\\&|x\r").unwrap_err();
        assert!(
            matches!(
                error,
                SourceError::Header {
                    cause: Hl7Error::InvalidFieldSeparator { .. },
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with("b.hl7: unreadable MSH: "),
            "{error}"
        );
        for (byte, at) in [(VT, 12), (FS, 20)] {
            let mut bytes = b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.3\r".to_vec();
            bytes[at] = byte;
            let error = Message::parse("c.hl7", &bytes).unwrap_err();
            assert!(
                matches!(error, SourceError::FramingByte { offset, byte: b, .. } if offset == at && b == byte),
                "{error:?}"
            );
            assert!(
                error.to_string().starts_with("c.hl7: framing byte 0x"),
                "{error}"
            );
        }
    }

    // --- Control IDs ------------------------------------------------------------------------

    #[test]
    fn control_ids_round_trip() {
        let run = RunTag::new(0x1234_5678);
        let mut rng = Rng::new(5);
        let cases = [
            (0, 0),
            (MAX_CONNECTION, MAX_SEQ),
            (1, 1),
            (35, 36),
            (36, 35),
        ];
        let random = (0..10_000).map(|_| {
            let connection = u32::try_from(rng.next_u64() % u64::from(MAX_CONNECTION + 1));
            (connection.unwrap(), rng.next_u64() % (MAX_SEQ + 1))
        });
        for (connection, seq) in cases.into_iter().chain(random) {
            let id = control_id(run, connection, seq);
            assert!(id.iter().all(|b| BASE36.contains(b)), "{id:?}");
            assert_eq!(&id[..RUN_TAG_LEN], run.as_bytes());
            assert_eq!(parse_control_id(run, &id), Some((connection, seq)));
            assert_eq!(split_control_id(&id), Some((run, connection, seq)));
        }
        assert_eq!(&control_id(run, 0, 0)[RUN_TAG_LEN..], b"0000000000000");
        assert_eq!(
            &control_id(run, MAX_CONNECTION, MAX_SEQ)[RUN_TAG_LEN..],
            b"ZZZZZZZZZZZZZ"
        );
        assert_eq!(&control_id(run, 36, 37)[RUN_TAG_LEN..], b"0010000000011");
    }

    #[test]
    fn foreign_control_ids_are_not_ours() {
        let run = RunTag::new(7);
        let id = control_id(run, 3, 99);
        assert_eq!(parse_control_id(RunTag::new(8), &id), None, "another run");
        assert_eq!(parse_control_id(run, &id[..19]), None, "too short");
        assert_eq!(
            parse_control_id(run, &[&id[..], b"0"].concat()),
            None,
            "too long"
        );
        let mut lower = id;
        lower[19] = b'a';
        assert_eq!(parse_control_id(run, &lower), None, "lower case");
        let mut punctuated = id;
        punctuated[10] = b'-';
        assert_eq!(parse_control_id(run, &punctuated), None, "not a digit");
        assert_eq!(parse_control_id(run, b"MSG00000000000000001"), None);
        assert_eq!(split_control_id(b"42"), None);
        assert_eq!(parse_control_id(run, b""), None);
    }

    #[test]
    fn control_ids_are_unique() {
        let runs = [
            RunTag::new(0),
            RunTag::new(1),
            RunTag::random(),
            RunTag::random(),
        ];
        let mut seen = HashSet::new();
        for run in runs {
            for connection in (0..40).chain([MAX_CONNECTION - 1, MAX_CONNECTION]) {
                for seq in (0..300).chain([MAX_SEQ - 1, MAX_SEQ]) {
                    assert!(seen.insert(control_id(run, connection, seq)));
                }
            }
        }
        assert_eq!(seen.len(), 4 * 42 * 302);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "exceeds")]
    fn control_id_limits_are_checked_in_debug_builds() {
        let _ = control_id(RunTag::new(0), 0, MAX_SEQ + 1);
    }

    #[test]
    fn run_tags() {
        assert_eq!(RunTag::new(0).as_bytes(), b"0000000");
        assert_eq!(RunTag::new(35).to_string(), "000000Z");
        assert_eq!(RunTag::new(RUN_TAGS), RunTag::new(0));
        assert_eq!(RunTag::new(RUN_TAGS - 1).as_str(), "ZZZZZZZ");
        let random = RunTag::random();
        assert_ne!(random, RunTag::random(), "two calls differ");
        assert_eq!(RunTag::from_bytes(random.as_bytes()), Some(random));
        assert_eq!(RunTag::from_bytes(b"ABC123"), None);
        assert_eq!(RunTag::from_bytes(b"ABC123a"), None);
        assert_eq!(format!("{:?}", RunTag::new(1)), "RunTag(\"0000001\")");
    }

    // --- Timestamps -------------------------------------------------------------------------

    #[test]
    fn timestamps_are_cached_per_second() {
        let mut cache = TimestampCache::new();
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(cache.at(t), b"20231114221320");
        assert_eq!(cache.at(t + Duration::from_millis(999)), b"20231114221320");
        assert_eq!(cache.at(t + Duration::from_secs(1)), b"20231114221321");
        assert_eq!(cache.at(UNIX_EPOCH), b"19700101000000");
        let now = SystemTime::now();
        assert_eq!(
            &cache.at(now)[..],
            &mllp::timestamp::hl7_timestamp(now)[..TIMESTAMP_LEN]
        );
        let stamp = *TimestampCache::default().now();
        assert!(stamp.iter().all(u8::is_ascii_digit));
        assert!(stamp.starts_with(b"20"));
    }

    // --- Templates --------------------------------------------------------------------------

    /// The smallest sizes the benchmarks use: a 200-byte ADT and a 320-byte ORU.
    fn smallest_benchmark_size(kind: TemplateKind) -> usize {
        match kind {
            TemplateKind::Adt => 200,
            TemplateKind::Oru => 320,
        }
    }

    /// FNV-1a: a hash whose value does not depend on the Rust version, for pinned bytes.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        })
    }

    /// Asserts that the template of `kind`, `size` and `seed` is exactly `size` bytes of valid
    /// v2.5.1 of the expected structure, stamps as it should, and returns it with the bytes of
    /// its padding (the note's OBX-5, or the document in the ED's OBX-5.5).
    fn assert_valid_template(kind: TemplateKind, size: usize, seed: u64) -> (Message, usize) {
        let message = template(kind, size, seed)
            .unwrap_or_else(|e| panic!("{kind} size {size} seed {seed}: {e}"));
        let context = format!("{kind} size {size} seed {seed}");
        assert_eq!(message.len(), size, "{context}");
        let bytes = message.bytes();
        assert!(
            !bytes.iter().any(|&b| b == VT || b == FS || b == LF),
            "{context}"
        );
        assert!(bytes.ends_with(b"\r"), "{context}");
        let parsed = hl7::Message::parse(bytes).unwrap_or_else(|e| panic!("{context}: {e}"));
        let msh = parsed.msh();
        assert_eq!(msh.delimiters(), Delimiters::DEFAULT, "{context}");
        let (code, trigger, structure) = match kind {
            TemplateKind::Adt => (&b"ADT"[..], &b"A01"[..], &b"ADT_A01"[..]),
            TemplateKind::Oru => (&b"ORU"[..], &b"R01"[..], &b"ORU_R01"[..]),
        };
        let found = msh.message_type();
        assert_eq!(
            (found.code, found.trigger, found.structure),
            (code, trigger, structure),
            "{context}"
        );
        assert_eq!(
            msh.version(),
            Some(Version {
                major: 2,
                minor: 5,
                patch: 1
            }),
            "{context}"
        );
        assert_eq!(msh.processing_id(), b"P", "{context}");
        assert_eq!(AckMode::of(msh), AckMode::Original, "{context}");
        assert_eq!(msh.raw_field(7), PLACEHOLDER_TIMESTAMP.as_bytes());
        assert_eq!(msh.control_id(), PLACEHOLDER_CONTROL_ID.as_bytes());
        let sent = stamped(&message, ID, TS);
        let stamped_msh = Msh::parse(&sent).unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(stamped_msh.control_id(), ID, "{context}");
        assert_eq!(stamped_msh.raw_field(7), TS, "{context}");

        let ids: Vec<&str> = parsed
            .segments()
            .map(|s| std::str::from_utf8(s.id()).unwrap())
            .collect();
        let last_obx = parsed
            .segments()
            .filter(|s| s.id() == b"OBX")
            .last()
            .unwrap_or_else(|| panic!("{context}: no OBX"));
        assert_eq!(last_obx.field(11).unwrap().as_bytes(), b"F", "{context}");
        let padding = match kind {
            TemplateKind::Adt => {
                let shape = ids
                    .join(" ")
                    .replace("AL1 AL1", "AL1")
                    .replace("DG1 DG1", "DG1");
                assert!(
                    [
                        "MSH EVN PID PV1 OBX",
                        "MSH EVN PID NK1 PV1 OBX",
                        "MSH EVN PID NK1 PV1 OBX AL1",
                        "MSH EVN PID NK1 PV1 OBX AL1 DG1",
                    ]
                    .contains(&shape.as_str()),
                    "{context}: {ids:?}"
                );
                assert!(ids.len() <= 10, "{context}: {ids:?}");
                assert_eq!(last_obx.field(2).unwrap().as_bytes(), b"FT", "{context}");
                // The note's only escapes are whole `\.br\` line breaks.
                let note = last_obx.field(5).map_or(&[][..], |f| f.as_bytes());
                let text = std::str::from_utf8(note).unwrap();
                assert!(!text.replace("\\.br\\", "").contains('\\'), "{context}");
                note.len()
            }
            TemplateKind::Oru => {
                assert_eq!(ids[..3], ["MSH", "PID", "OBR"], "{context}");
                let results = ids.len() - 4;
                assert!(results <= CBC.len(), "{context}: {ids:?}");
                assert!(ids[3..].iter().all(|id| *id == "OBX"), "{context}: {ids:?}");
                for (i, obx) in parsed.segments().skip(3).enumerate() {
                    let value_type = obx.field(2).unwrap().as_bytes();
                    assert_eq!(value_type, if i < results { &b"NM"[..] } else { b"ED" });
                    assert_eq!(
                        obx.field(1).unwrap().as_bytes(),
                        (i + 1).to_string().as_bytes()
                    );
                }
                let ed = last_obx.field(5).unwrap();
                assert_eq!(ed.component(2).unwrap().as_bytes(), b"AP", "{context}");
                let document = ed.component(5).map_or(&[][..], |c| c.as_bytes());
                assert!(document.iter().all(|b| BASE64.contains(b)), "{context}");
                document.len()
            }
        };
        (message, padding)
    }

    #[test]
    fn templates_fit_in_their_smallest_benchmark_sizes() {
        for kind in TemplateKind::ALL {
            let sizes: Vec<usize> = (0..2000).map(|seed| kind.minimum_size(seed)).collect();
            let (smallest, largest) = (sizes.iter().min(), sizes.iter().max());
            assert!(
                largest <= Some(&smallest_benchmark_size(kind)),
                "{kind}: minimum from {smallest:?} to {largest:?}"
            );
        }
    }

    #[test]
    fn adt_of_200_bytes_for_every_seed() {
        for seed in 0..2000 {
            let (message, _) = assert_valid_template(TemplateKind::Adt, 200, seed);
            assert!(message.bytes().starts_with(
                b"MSH|^~\\&|ADT1|GH|EHR|GH|19700101000000||ADT^A01^ADT_A01|00000000000000000000\
                  |P|2.5.1\rEVN|A01|2026"
            ));
        }
    }

    #[test]
    fn oru_of_320_bytes_for_every_seed() {
        for seed in 0..2000 {
            assert_valid_template(TemplateKind::Oru, 320, seed);
        }
    }

    #[test]
    fn templates_have_the_exact_size_over_a_sweep() {
        for seed in [0, 1, 42, 1234, u64::MAX] {
            for (kind, step) in [(TemplateKind::Adt, 7), (TemplateKind::Oru, 1)] {
                // The bytes around the padding only grow with the size: a larger message
                // never leaves out something a smaller one has.
                let mut skeleton = 0;
                for size in (smallest_benchmark_size(kind)..=4096).step_by(step) {
                    let (_, padding) = assert_valid_template(kind, size, seed);
                    assert!(
                        size - padding >= skeleton,
                        "{kind} seed {seed}: {} bytes besides the padding at size {size}, \
                         {skeleton} below",
                        size - padding
                    );
                    skeleton = size - padding;
                }
            }
        }
    }

    #[test]
    fn templates_have_the_exact_size() {
        for kind in TemplateKind::ALL {
            for seed in [0, 1, 42, u64::MAX] {
                let minimum = kind.minimum_size(seed);
                assert!(
                    (150..=smallest_benchmark_size(kind)).contains(&minimum),
                    "{kind} minimum {minimum}"
                );
                for size in [
                    minimum,
                    minimum + 1,
                    minimum + 5,
                    1024,
                    1500,
                    4096,
                    64 << 10,
                    1 << 20,
                ] {
                    let message = template(kind, size, seed).unwrap();
                    assert_eq!(message.len(), size, "{kind} size {size} seed {seed}");
                    assert_eq!(message.origin(), format!("{kind} template (seed {seed})"));
                    let sent = stamped(&message, ID, TS);
                    let msh = Msh::parse(&sent).unwrap();
                    assert_eq!(msh.control_id(), ID);
                    assert_eq!(msh.raw_field(7), TS);
                    assert!(FramingConfig::MLLP.check_payload(&sent).is_ok());
                }
                // At its minimum a template has no padding at all.
                assert_eq!(assert_valid_template(kind, minimum, seed).1, 0);
                let error = template(kind, minimum - 1, seed).unwrap_err();
                assert!(
                    matches!(error, SourceError::TemplateTooSmall { minimum: m, .. } if m == minimum)
                );
                assert!(
                    error.to_string().contains(&format!("at least {minimum}")),
                    "{error}"
                );
                assert!(matches!(
                    template(kind, 0, seed),
                    Err(SourceError::TemplateTooSmall { .. })
                ));
            }
        }
    }

    #[test]
    fn templates_are_deterministic_by_seed() {
        for kind in TemplateKind::ALL {
            for size in [smallest_benchmark_size(kind), 333, 700, 2048, 64 << 10] {
                let a = template(kind, size, 5).unwrap();
                assert_eq!(a.bytes(), template(kind, size, 5).unwrap().bytes());
                assert_ne!(a.bytes(), template(kind, size, 6).unwrap().bytes());
            }
        }
        // The ORU template is `oru_message` but for the two stamped fields, at every size.
        for size in (320..1100).step_by(3).chain([3000]) {
            let sample = oru_message(size + 4, 8);
            let message = template(TemplateKind::Oru, size, 8).unwrap();
            assert_same_except_stamps(&sample, message.bytes());
        }
    }

    #[test]
    fn a_seed_names_the_same_patient_at_every_size() {
        // PID-3.1 (the record number), PID-5.1 (the family name), and the time: EVN-2 for an
        // ADT, OBR-7 for an ORU.
        let facts = |kind: TemplateKind, size: usize| {
            let message = template(kind, size, 77).unwrap();
            let parsed = hl7::Message::parse(message.bytes()).unwrap();
            let segment = |id: &[u8]| parsed.segments().find(|s| s.id() == id).unwrap();
            let pid = segment(b"PID");
            let time = match kind {
                TemplateKind::Adt => segment(b"EVN").field(2),
                TemplateKind::Oru => segment(b"OBR").field(7),
            };
            [
                pid.field(3)
                    .unwrap()
                    .component(1)
                    .unwrap()
                    .as_bytes()
                    .to_vec(),
                pid.field(5)
                    .unwrap()
                    .component(1)
                    .unwrap()
                    .as_bytes()
                    .to_vec(),
                time.unwrap().as_bytes().to_vec(),
            ]
        };
        for kind in TemplateKind::ALL {
            let smallest = facts(kind, smallest_benchmark_size(kind));
            for size in [400, 600, 800, 1024, 64 << 10] {
                assert_eq!(facts(kind, size), smallest, "{kind} size {size}");
            }
        }
    }

    #[test]
    fn oru_message_bytes_are_pinned_from_one_kilobyte() {
        // Benchmarks compare runs over time: these bytes must not change. (FNV-1a of the
        // message; the values are those of the generator before its short shapes existed.)
        for (size, seed, hash) in [
            (1024, 1, 0x958B_3814_5BF1_9320),
            (1024, 7, 0xE280_08C0_2EE0_415A),
            (4096, 9, 0x8437_47CE_C9A4_14AC),
            (64 << 10, 3, 0x81BF_2105_A1F9_B922),
            (1 << 20, 0, 0x73E5_1B80_FDEE_3ED3),
        ] {
            assert_eq!(
                fnv1a(&oru_message(size, seed)),
                hash,
                "size {size} seed {seed}"
            );
        }
    }

    #[test]
    fn adt_template_is_a_plausible_a01() {
        for seed in 0..30 {
            let message = template(
                TemplateKind::Adt,
                1500 + 100 * usize::try_from(seed).unwrap(),
                seed,
            )
            .unwrap();
            let bytes = message.bytes();
            assert!(!bytes.contains(&LF));
            let parsed = hl7::Message::parse(bytes).unwrap();
            let msh = parsed.msh();
            assert_eq!(msh.delimiters(), Delimiters::DEFAULT);
            let kind = msh.message_type();
            assert_eq!(
                (kind.code, kind.trigger, kind.structure),
                (&b"ADT"[..], &b"A01"[..], &b"ADT_A01"[..])
            );
            assert_eq!(
                msh.version(),
                Some(Version {
                    major: 2,
                    minor: 5,
                    patch: 1
                })
            );
            assert_eq!(AckMode::of(msh), AckMode::Original);
            let ids: Vec<&[u8]> = parsed.segments().map(|s| s.id()).collect();
            assert_eq!(
                ids[..6],
                [&b"MSH"[..], b"EVN", b"PID", b"NK1", b"PV1", b"OBX"]
            );
            let rest = &ids[6..];
            let allergies = rest.iter().filter(|id| **id == b"AL1").count();
            assert!((1..=2).contains(&allergies));
            assert!(rest[..allergies].iter().all(|id| *id == b"AL1"));
            assert!((1..=2).contains(&(rest.len() - allergies)));
            assert!(rest[allergies..].iter().all(|id| *id == b"DG1"));
            let pid = parsed.segments().nth(2).unwrap();
            assert!(
                pid.field(3)
                    .unwrap()
                    .as_bytes()
                    .ends_with(b"^^^GENERAL_HOSP^MR")
            );
            assert!(
                pid.field(8)
                    .is_some_and(|f| f.as_bytes() == b"F" || f.as_bytes() == b"M")
            );
            let pv1 = parsed.segments().nth(4).unwrap();
            assert_eq!(pv1.field(2).unwrap().as_bytes(), b"I");
            assert_eq!(pv1.field(44).unwrap().as_bytes().len(), 14);
            let obx = parsed.segments().nth(5).unwrap();
            assert_eq!(obx.field(2).unwrap().as_bytes(), b"FT");
            assert_eq!(obx.field(11).unwrap().as_bytes(), b"F");
            // The note's only escapes are whole `\.br\` line breaks.
            let note = obx.field(5).unwrap().as_bytes();
            let text = String::from_utf8(note.to_vec()).unwrap();
            assert!(!text.replace("\\.br\\", "").contains('\\'), "seed {seed}");
            assert!(text.contains("\\.br\\"), "seed {seed}");
        }
    }

    #[test]
    fn template_names() {
        assert_eq!("ADT".parse(), Ok(TemplateKind::Adt));
        assert_eq!("oru".parse(), Ok(TemplateKind::Oru));
        assert_eq!(
            "orm".parse::<TemplateKind>().unwrap_err().to_string(),
            "unknown template \"orm\" (expected adt or oru)"
        );
        assert_eq!(TemplateKind::Oru.to_string(), "ORU^R01");
    }

    // --- oru_message (moved from the bench crate with its tests) -----------------------------

    #[test]
    fn oru_has_the_requested_size_above_the_minimum() {
        for size in [1024, 1500, 4096, 64 << 10, 1 << 20] {
            for seed in [0, 1, 42] {
                assert_eq!(
                    oru_message(size, seed).len(),
                    size,
                    "size {size} seed {seed}"
                );
            }
        }
    }

    #[test]
    fn oru_below_the_minimum_has_an_empty_document() {
        let minimum = oru_message(0, 3);
        assert!(minimum.len() < 320, "minimum is {} bytes", minimum.len());
        assert!(minimum.ends_with(b"^Base64^||||||F\r"));
        assert_eq!(oru_message(64, 3), minimum);
    }

    #[test]
    fn oru_parses_and_has_the_expected_header() {
        for seed in 0..50 {
            let bytes = oru_message(1024, seed);
            let msh = Msh::parse(&bytes).expect("MSH parses");
            assert_eq!(msh.delimiters(), Delimiters::DEFAULT);
            let kind = msh.message_type();
            assert_eq!(
                (kind.code, kind.trigger, kind.structure),
                (&b"ORU"[..], &b"R01"[..], &b"ORU_R01"[..])
            );
            assert_eq!(
                msh.version(),
                Some(Version {
                    major: 2,
                    minor: 5,
                    patch: 1
                })
            );
            assert_eq!(msh.processing_id(), b"P");
            assert_eq!(msh.control_id().len(), 19);
            assert_eq!(AckMode::of(&msh), AckMode::Original);
            // MSH-13 … MSH-16 are present (and empty), nothing beyond.
            assert!(msh.field(16).is_some_and(|f| f.is_empty()));
            assert!(msh.field(17).is_none());
            for n in 3..=12 {
                assert_eq!(
                    msh.field(n).is_some_and(|f| f.is_empty()),
                    n == 8,
                    "MSH-{n}"
                );
            }
        }
    }

    #[test]
    fn oru_has_the_expected_segments() {
        let bytes = oru_message(4096, 9);
        let message = hl7::Message::parse(&bytes).expect("parses");
        let ids: Vec<&[u8]> = message.segments().map(|s| s.id()).collect();
        assert_eq!(
            ids,
            [
                &b"MSH"[..],
                b"PID",
                b"OBR",
                b"OBX",
                b"OBX",
                b"OBX",
                b"OBX",
                b"OBX",
                b"OBX"
            ]
        );
        let numeric = message
            .segments()
            .filter(|s| s.field(2).is_some_and(|f| f.as_bytes() == b"NM"));
        for obx in numeric {
            let value = obx.field(5).expect("OBX-5").as_bytes();
            assert!(
                std::str::from_utf8(value).unwrap().parse::<f64>().is_ok(),
                "{obx:?}"
            );
        }
        let document = message.segments().last().expect("segments");
        let ed = document.field(5).expect("OBX-5");
        assert_eq!(ed.component(2).unwrap().as_bytes(), b"AP");
        assert!(ed.component(5).unwrap().as_bytes().len() > 3000);
    }

    #[test]
    fn oru_is_deterministic_and_seed_dependent() {
        assert_eq!(oru_message(2048, 5), oru_message(2048, 5));
        let a = oru_message(2048, 5);
        let b = oru_message(2048, 6);
        assert_ne!(a, b);
        assert_ne!(
            Msh::parse(&a).unwrap().control_id(),
            Msh::parse(&b).unwrap().control_id()
        );
    }

    #[test]
    fn oru_has_no_framing_bytes_and_cr_terminators() {
        for seed in 0..20 {
            let bytes = oru_message(8192, seed);
            assert!(!bytes.iter().any(|&b| b == VT || b == FS || b == LF));
            assert!(bytes.ends_with(b"\r"));
            assert!(FramingConfig::MLLP.check_payload(&bytes).is_ok());
        }
    }

    // --- Files and corpora ------------------------------------------------------------------

    const M1: &[u8] = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1\r";
    const M2: &[u8] = b"MSH|^~\\&|A|B|C|D|20240102||ADT^A08|2|P|2.5\rPID|2\rNK1|1\r";

    fn origins(messages: &[Message]) -> Vec<&str> {
        messages.iter().map(Message::origin).collect()
    }

    #[test]
    fn single_message_file() {
        let dir = TempDir::new("single");
        let path = dir.write("one.hl7", M1);
        let messages = load_file(&path, CorpusOptions::default()).unwrap();
        assert_eq!(origins(&messages), [path.display().to_string()]);
        assert_round_trip(&messages[0], M1);
    }

    #[test]
    fn file_without_msh_is_an_error_naming_it() {
        let dir = TempDir::new("nomsh");
        for (name, bytes) in [
            ("notes.hl7", &b"PID|1\rMSH|^~\\&\r"[..]),
            ("empty.hl7", b""),
            ("blank.hl7", b"\r\n \r\n"),
            ("text.txt", b"just some words"),
        ] {
            let path = dir.write(name, bytes);
            let error = load_file(&path, CorpusOptions::default()).unwrap_err();
            assert!(
                matches!(error, SourceError::MissingHeader { .. }),
                "{name}: {error:?}"
            );
            assert_eq!(
                error.to_string(),
                format!("{}: no MSH segment at the start", path.display())
            );
        }
        let missing = dir.0.join("missing.hl7");
        let error = load_file(&missing, CorpusOptions::default()).unwrap_err();
        assert!(matches!(error, SourceError::Io { .. }));
        assert!(
            error
                .to_string()
                .starts_with(&missing.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn lf_file_is_split_with_and_without_normalisation() {
        let file = b"\xEF\xBB\xBF\nMSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\nPID|1\nOBX|1|TX|||line 1\nline 2\n\nMSH|^~\\&|A|B|C|D|20240102||ADT^A08|2|P|2.5\r\nPID|2\r\n";
        let dir = TempDir::new("lf");
        let path = dir.write("lf.txt", file);
        let shown = path.display().to_string();

        let raw = load_file(&path, CorpusOptions::default()).unwrap();
        assert_eq!(
            origins(&raw),
            [format!("{shown} #1"), format!("{shown} #2")]
        );
        let first =
            b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\nPID|1\nOBX|1|TX|||line 1\nline 2\n";
        let second = b"MSH|^~\\&|A|B|C|D|20240102||ADT^A08|2|P|2.5\r\nPID|2\r\n";
        assert_round_trip(&raw[0], first);
        assert_round_trip(&raw[1], second);
        assert!(
            raw[0]
                .bytes()
                .ends_with(b"|P|2.5\nPID|1\nOBX|1|TX|||line 1\nline 2\n")
        );

        let options = CorpusOptions {
            normalize_line_endings: true,
        };
        let normalized = load_file(&path, options).unwrap();
        assert_eq!(normalized.len(), 2);
        // Segment terminators become CR; the line break inside OBX-5 stays.
        assert!(
            normalized[0]
                .bytes()
                .ends_with(b"|P|2.5\rPID|1\rOBX|1|TX|||line 1\nline 2\r")
        );
        assert!(normalized[1].bytes().ends_with(b"|P|2.5\rPID|2\r"));
        assert_round_trip(
            &normalized[1],
            b"MSH|^~\\&|A|B|C|D|20240102||ADT^A08|2|P|2.5\rPID|2\r",
        );
    }

    #[test]
    fn framed_file() {
        let mut file = b" \r\n".to_vec();
        for (message, trailer) in [(M1, &b"\x1c\r\n"[..]), (M2, b"\x1c\r"), (M1, b"\x1c")] {
            file.push(VT);
            file.extend_from_slice(message);
            file.extend_from_slice(trailer);
        }
        let dir = TempDir::new("framed");
        let path = dir.write("capture.mllp", &file);
        let messages = load_file(&path, CorpusOptions::default()).unwrap();
        assert_eq!(messages.len(), 3);
        assert!(messages[1].origin().ends_with("capture.mllp #2"));
        for (message, original) in messages.iter().zip([M1, M2, M1]) {
            assert_round_trip(message, original);
        }

        // A byte order mark before the first frame is skipped; offsets stay file offsets.
        let with_bom = [&b"\xEF\xBB\xBF"[..], &file].concat();
        let path = dir.write("bom.mllp", &with_bom);
        assert_eq!(load_file(&path, CorpusOptions::default()).unwrap().len(), 3);
        let mut broken = with_bom;
        let second_vt = 6 + 1 + M1.len() + 3;
        assert_eq!(broken[second_vt], VT);
        broken[second_vt - 3] = b'x'; // the first frame's FS
        let path = dir.write("broken.mllp", &broken);
        let error = load_file(&path, CorpusOptions::default()).unwrap_err();
        assert!(
            matches!(
                error,
                SourceError::Framing { cause: FrameError::StartInsideFrame { offset, .. }, .. }
                    if offset == u64::try_from(second_vt).unwrap()
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(&format!("offset {second_vt}")),
            "{error}"
        );
        assert!(error.to_string().starts_with(&path.display().to_string()));

        let path = dir.write("truncated.mllp", &file[..file.len() - 1]);
        let error = load_file(&path, CorpusOptions::default()).unwrap_err();
        assert!(matches!(
            error,
            SourceError::Framing {
                cause: FrameError::Truncated { .. },
                ..
            }
        ));

        let path = dir.write("empty-frame.mllp", b"\x0b\x1c\r");
        let error = load_file(&path, CorpusOptions::default()).unwrap_err();
        assert!(
            matches!(error, SourceError::MissingHeader { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn batch_file() {
        let file = [
            &b"FHS|^~\\&|LAB\rBHS|^~\\&|LAB\r"[..],
            M1,
            M2,
            b"BTS|2\rBHS|^~\\&|LAB\r",
            M1,
            b"BTS|1\rFTS|2\r",
        ]
        .concat();
        let dir = TempDir::new("batch");
        let path = dir.write("batch.hl7", &file);
        let messages = load_file(&path, CorpusOptions::default()).unwrap();
        assert_eq!(messages.len(), 3);
        for (message, original) in messages.iter().zip([M1, M2, M1]) {
            assert_round_trip(message, original);
        }
        assert!(messages[2].origin().ends_with("batch.hl7 #3"));

        // A wrong count is an error with its offset in the file, blank lines at the top counted.
        let wrong = [&b"\r\n"[..], b"BHS|^~\\&\r", M1, b"BTS|3\r"].concat();
        let path = dir.write("wrong.hl7", &wrong);
        let error = load_file(&path, CorpusOptions::default()).unwrap_err();
        let offset = 2 + 9 + M1.len();
        assert!(
            matches!(
                error,
                SourceError::Batch { cause: BatchError::BatchCountMismatch { declared: 3, found: 1, offset: o }, .. }
                    if o == offset
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with(&path.display().to_string()),
            "{error}"
        );

        let path = dir.write("headers-only.hl7", b"FHS|^~\\&\rFTS|0\r");
        let error = load_file(&path, CorpusOptions::default()).unwrap_err();
        assert!(matches!(
            error,
            SourceError::Batch {
                cause: BatchError::Empty,
                ..
            }
        ));
    }

    #[test]
    fn corpus_folder_is_walked_in_order() {
        let dir = TempDir::new("corpus");
        dir.write("b.hl7", M2);
        dir.write("a.hl7", M1);
        dir.write("sub/deeper/c.txt", M1);
        dir.write("sub/b.hl7", &[M1, M2].concat());
        dir.write(".hidden.hl7", b"not a message");
        dir.write(".git/objects/x", b"not a message");
        dir.write("README.md", b"# not a message");
        dir.write("MANIFEST", b"not a message");
        dir.write("sub/LICENSE.txt", b"not a message");
        dir.write("sub/notes.MD", b"not a message");
        let messages = load_corpus(&dir.0, CorpusOptions::default()).unwrap();
        let root = dir.0.display().to_string();
        assert_eq!(
            origins(&messages),
            [
                format!("{root}/a.hl7"),
                format!("{root}/b.hl7"),
                format!("{root}/sub/b.hl7 #1"),
                format!("{root}/sub/b.hl7 #2"),
                format!("{root}/sub/deeper/c.txt"),
            ]
        );
        // A file path loads that file.
        let single = load_corpus(&dir.0.join("b.hl7"), CorpusOptions::default()).unwrap();
        assert_eq!(origins(&single), [format!("{root}/b.hl7")]);

        // One bad file fails the corpus, naming the file.
        dir.write("sub/zz.hl7", b"garbage");
        let error = load_corpus(&dir.0, CorpusOptions::default()).unwrap_err();
        assert!(error.to_string().contains("zz.hl7"), "{error}");

        let empty = TempDir::new("empty");
        empty.write("README", b"nothing here");
        empty.write(".keep", b"");
        let error = load_corpus(&empty.0, CorpusOptions::default()).unwrap_err();
        assert!(
            matches!(error, SourceError::EmptyCorpus { .. }),
            "{error:?}"
        );
        let error = load_corpus(&empty.0.join("nope"), CorpusOptions::default()).unwrap_err();
        assert!(matches!(error, SourceError::Io { .. }), "{error:?}");
    }

    /// The shared corpus: `MLLP_CORPUS_DIR`, or `shared/corpus` beside the workspace.
    fn shared_corpus() -> Option<PathBuf> {
        let dir = std::env::var_os("MLLP_CORPUS_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
            PathBuf::from,
        );
        dir.canonicalize().ok().filter(|dir| dir.is_dir())
    }

    /// What `MANIFEST.md` says of each file: whether it is meant to be broken (MALFORMED, NOT
    /// A MESSAGE) and how many messages it holds (`(×13)`), by file path relative to the
    /// corpus.
    fn manifest(dir: &Path) -> BTreeMap<String, (bool, usize)> {
        let text = fs::read_to_string(dir.join("MANIFEST.md")).unwrap_or_default();
        let mut files = BTreeMap::new();
        for line in text.lines().filter(|line| line.starts_with("| `")) {
            let Some(name) = line[3..].split('`').next() else {
                continue;
            };
            let broken = line.contains("MALFORMED") || line.contains("NOT A MESSAGE");
            let count = line
                .split_once("(×")
                .and_then(|(_, rest)| rest.split(')').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            files.insert(name.to_owned(), (broken, count));
        }
        files
    }

    #[test]
    fn every_file_of_the_shared_corpus_loads() {
        let Some(dir) = shared_corpus() else {
            eprintln!("shared corpus not found (set MLLP_CORPUS_DIR): skipped");
            return;
        };
        let manifest = manifest(&dir);
        let mut files = Vec::new();
        collect_files(&dir, &mut files).unwrap();
        files.sort();
        let run = RunTag::new(2026);
        // Files and messages loaded, of files the manifest calls sound / broken.
        let (mut sound, mut broken_loaded) = ((0, 0), (0, 0));
        let mut broken_refused = BTreeMap::new();
        for (i, path) in files.iter().enumerate() {
            let relative = path
                .strip_prefix(&dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let (broken, expected) = manifest.get(&relative).copied().unwrap_or((false, 1));
            for normalize_line_endings in [false, true] {
                let options = CorpusOptions {
                    normalize_line_endings,
                };
                let messages = match load_file(path, options) {
                    Ok(messages) => messages,
                    Err(error) if broken => {
                        broken_refused.insert(relative.clone(), error.to_string());
                        continue;
                    }
                    Err(error) => panic!("{error}"),
                };
                if !broken {
                    assert_eq!(messages.len(), expected, "{relative}");
                }
                if !normalize_line_endings {
                    let count = if broken {
                        &mut broken_loaded
                    } else {
                        &mut sound
                    };
                    count.0 += 1;
                    count.1 += messages.len();
                }
                for (seq, message) in messages.iter().enumerate() {
                    let id =
                        control_id(run, u32::try_from(i).unwrap(), u64::try_from(seq).unwrap());
                    let sent = stamped(message, &id, TS);
                    let msh =
                        Msh::parse(&sent).unwrap_or_else(|e| panic!("{}: {e}", message.origin()));
                    assert_eq!(msh.control_id(), id, "{}", message.origin());
                    assert_eq!(msh.raw_field(7), TS, "{}", message.origin());
                    assert_eq!(
                        parse_control_id(run, msh.control_id()),
                        Some((u32::try_from(i).unwrap(), u64::try_from(seq).unwrap()))
                    );
                    assert_same_except_stamps(message.bytes(), &sent);
                }
            }
        }
        eprintln!(
            "shared corpus {}: {} files; {} sound files loaded with {} messages; of the files \
             the manifest calls broken, {} loaded with {} messages and {} were refused:",
            dir.display(),
            files.len(),
            sound.0,
            sound.1,
            broken_loaded.0,
            broken_loaded.1,
            broken_refused.len()
        );
        for error in broken_refused.values() {
            eprintln!("  {error}");
        }
        let broken = manifest.values().filter(|(broken, _)| *broken).count();
        assert_eq!(sound.0, files.len() - broken, "every sound file loads");
        assert_eq!(broken_loaded.0 + broken_refused.len(), broken);
    }
}
