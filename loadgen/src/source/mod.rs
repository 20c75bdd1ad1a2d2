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
//! - **Templates** ([`template`](fn@template)): realistic ADT^A01 and ORU^R01 messages of an
//!   exact size, from 200 bytes (ADT) or 320 bytes (ORU) up, the same bytes for the same seed.
//!
//! # Layout
//! The submodules are private; everything public is re-exported here, so each item has the
//! one path `source::X`.
//! - `stamp`: [`Message`] with its MSH-7/MSH-10 placeholders and the framed write,
//!   [`TimestampCache`], and the widths of the two stamped fields.
//! - `ids`: the control-ID codec: [`RunTag`], [`control_id`], [`parse_control_id`],
//!   [`split_control_id`] and the limits of the numbers an ID holds.
//! - `template`: [`TemplateKind`], [`template`](fn@template) and [`oru_message`]; its
//!   submodules `oru` and `adt` hold each generator with its fake-data tables.
//! - `corpus`: [`CorpusOptions`], [`load_corpus`] and [`load_file`]: folder walking, file
//!   splitting, deframing and batch handling.
//!
//! # Not here
//! Sockets, pacing and ACK checks belong to the sender. Messages are not validated beyond
//! their header: a corpus is sent as it is, segment terminators included unless
//! [`CorpusOptions::normalize_line_endings`] asks otherwise, because the point of a corpus is
//! to show a target what real senders send. Only MSH-7 and MSH-10 are rewritten, and a UTF-8
//! byte order mark before `MSH` is dropped.

mod corpus;
mod ids;
mod stamp;
mod template;

use std::io;
use std::path::PathBuf;

use mllp::{BatchError, FrameError, Hl7Error};
use thiserror::Error;

pub use corpus::{CorpusOptions, load_corpus, load_file};
pub use ids::{
    MAX_CONNECTION, MAX_SEQ, RUN_TAG_LEN, RunTag, control_id, parse_control_id, split_control_id,
};
pub use stamp::{CONTROL_ID_LEN, Message, TIMESTAMP_LEN, TimestampCache};
pub use template::{TemplateKind, UnknownTemplate, oru_message, template};

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

/// Helpers for the tests of several submodules: a fixed stamp, and checks that a stamped
/// message is its original but for MSH-7 and MSH-10.
#[cfg(test)]
mod test_util {
    use mllp::frame::{CR, FS, VT};
    use mllp::hl7::Msh;

    use super::{CONTROL_ID_LEN, Message, TIMESTAMP_LEN};

    pub(super) const ID: &[u8; CONTROL_ID_LEN] = b"ABCDEFGHIJ0123456789";
    pub(super) const TS: &[u8; TIMESTAMP_LEN] = b"20260314159265";

    /// The frame `write_framed` makes, without its VT and FS CR.
    pub(super) fn stamped(
        message: &Message,
        id: &[u8; CONTROL_ID_LEN],
        ts: &[u8; TIMESTAMP_LEN],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        message.write_framed(&mut out, id, ts);
        assert_eq!(out.len(), message.framed_len());
        assert_eq!(out.first(), Some(&VT));
        assert!(out.ends_with(&[FS, CR]));
        out[1..out.len() - 2].to_vec()
    }

    /// Asserts that `sent` is `original` with only MSH-7 and MSH-10 changed (and missing MSH
    /// fields up to MSH-10 added empty, a byte order mark dropped).
    pub(super) fn assert_same_except_stamps(original: &[u8], sent: &[u8]) {
        let before = Msh::parse_lenient(original).expect("original MSH");
        let after = Msh::parse_lenient(sent).expect("sent MSH");
        assert_eq!(before.delimiters(), after.delimiters());
        for n in (1..=40).filter(|n| ![7, 10].contains(n)) {
            assert_eq!(before.raw_field(n), after.raw_field(n), "MSH-{n}");
        }
        let rest = |msh: Msh<'_>| msh.message_bytes()[msh.as_bytes().len()..].to_vec();
        assert_eq!(rest(before), rest(after), "everything after MSH");
    }

    /// Asserts that `message` goes out with `id` and `ts` and is otherwise `original`.
    pub(super) fn assert_round_trip(message: &Message, original: &[u8]) {
        let sent = stamped(message, ID, TS);
        let msh = Msh::parse_lenient(&sent).expect("stamped message parses");
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
}
