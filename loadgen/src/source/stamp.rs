//! Stamping: a [`Message`] prepared once with fixed-width placeholders in MSH-7 and MSH-10,
//! written out framed with a control ID and a timestamp in their place, and the
//! [`TimestampCache`] that formats the clock for MSH-7 once per second.

use std::fmt;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use mllp::frame::{CR, FS, FramingConfig, VT};
use mllp::hl7::{Msh, strip_bom};
use mllp::scan::Scanner;

use super::SourceError;

/// Width of MSH-10 as written by [`Message::write_framed`]: MSH-10 is an ST of at most 20
/// characters in v2.3 to v2.5 (199 in later versions), so 20 fits every version.
pub const CONTROL_ID_LEN: usize = 20;

/// Width of MSH-7 as written by [`Message::write_framed`]: `YYYYMMDDHHMMSS`, a DTM precise
/// to the second, which every version accepts.
pub const TIMESTAMP_LEN: usize = 14;

/// What MSH-7 holds in [`Message::bytes`] until a message is stamped: the epoch, so that the
/// unstamped bytes are still a valid message.
pub(super) const PLACEHOLDER_TIMESTAMP: &str = "19700101000000";

/// What MSH-10 holds in [`Message::bytes`] until a message is stamped.
pub(super) const PLACEHOLDER_CONTROL_ID: &str = "00000000000000000000";

const _: () = assert!(PLACEHOLDER_TIMESTAMP.len() == TIMESTAMP_LEN);
const _: () = assert!(PLACEHOLDER_CONTROL_ID.len() == CONTROL_ID_LEN);

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
        // Lenient, as a relay reads: a file with an unusual MSH-2 is sent as it is.
        let msh = match Msh::parse_lenient(message) {
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

    /// As [`write_framed`](Self::write_framed), framed with `framing`'s bytes instead of
    /// MLLP's (negotiated framing; for MLLP itself this is `write_framed`).
    pub fn write_framed_as(
        &self,
        framing: &FramingConfig,
        out: &mut Vec<u8>,
        control_id: &[u8; CONTROL_ID_LEN],
        timestamp: &[u8; TIMESTAMP_LEN],
    ) {
        self.write_framed(out, control_id, timestamp);
        if framing.has_mllp_bytes() {
            return;
        }
        if let Some(first) = out.first_mut() {
            *first = framing.start();
        }
        out.truncate(out.len().saturating_sub(FramingConfig::MLLP.end().len()));
        out.extend_from_slice(framing.end());
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mllp::Hl7Error;
    use mllp::frame::{Deframer, FramingConfig};

    use super::*;
    use crate::source::test_util::{ID, TS, assert_round_trip, stamped};
    use crate::source::{RunTag, TemplateKind, control_id, template};

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
    fn write_framed_as_uses_the_negotiated_bytes() {
        let message = template(TemplateKind::Oru, 1000, 1).unwrap();
        let mut mllp = Vec::new();
        message.write_framed(&mut mllp, ID, TS);
        let framing = FramingConfig::new(0x02, &[0x03]).unwrap();
        let mut out = Vec::new();
        message.write_framed_as(&framing, &mut out, ID, TS);
        assert_eq!(out.first(), Some(&0x02));
        assert_eq!(out.last(), Some(&0x03));
        assert_eq!(&out[1..out.len() - 1], &mllp[1..mllp.len() - 2]);
        let mut deframer = Deframer::new(framing);
        let frame = deframer.decode(&out).unwrap().expect("one whole frame");
        assert_eq!(Msh::parse(frame.payload(&out)).unwrap().control_id(), ID);
        let mut again = Vec::new();
        message.write_framed_as(&FramingConfig::MLLP, &mut again, ID, TS);
        assert_eq!(again, mllp);
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
        // An unusual MSH-2 (the backslash doubled) is kept as written.
        let original = b"MSH|^~\\\\&|A|B|C|D|2024||ORU^R01|7|P|2.5\rOBX|1\r";
        let message = Message::parse("doubled", original).unwrap();
        assert_eq!(
            message.bytes(),
            b"MSH|^~\\\\&|A|B|C|D|19700101000000||ORU^R01|00000000000000000000|P|2.5\rOBX|1\r"
        );
        assert_round_trip(&message, original);
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
}
