//! The journal's record format, sans I/O: encoding, decoding, and scanning a segment's bytes
//! for the longest valid prefix.
//!
//! A record is a 32-byte header and a payload, little-endian:
//!
//! ```text
//!  0..4   CRC-32 of bytes 4..32+len (the rest of the header and the payload)
//!  4..8   payload length
//!  8..16  sequence number (per worker journal, strictly increasing)
//! 16..24  time the record was written, milliseconds since the Unix epoch
//! 24      kind: 1 message, 2 delivered (payload empty; `seq` names the message), 3 dead letter,
//!         4 padding (payload zeros, `seq` 0: fills a commit up to a block boundary)
//! 25..28  zero
//! 28..32  lane key (the inbound connection a message came on; keeps its order on replay)
//! ```
//!
//! The checksum covers everything but itself, so a torn write (a prefix of a record, or a
//! record whose later sectors never reached the disk) and a zero-filled or garbage tail are
//! all told apart from a real record. Scanning stops at the first record that does not check:
//! in an append-only file written with group commit, only the tail after the last completed
//! fdatasync can be torn, and nothing after a bad record is trusted.
//!
//! Segments are preallocated with zeros (see `journal::spare`), so the records of a segment are
//! followed by the zeros not yet written over. Zeros from there to the end of the file are
//! the segment's clean end, not damage: an all-zero header never checks (its CRC field would
//! have to equal the CRC of 28 zero bytes), so no record can be mistaken for them.

/// Header length in bytes.
pub(crate) const HEADER_LEN: usize = 32;

/// Every commit the journal writes starts and ends on a multiple of this many bytes, so that it
/// can be written with `O_DIRECT` (which needs block-aligned offsets, lengths and memory): 4 KiB
/// is the largest logical block size of the disks the relay meets, and a write of whole
/// physical 4 KiB sectors never makes the disk read-modify-write one.
pub(crate) const BLOCK: usize = 4096;

/// Largest payload a record may carry. Far above any frame the relay accepts (the frame limit
/// is validated against it), small enough that a corrupt length cannot make recovery allocate
/// gigabytes.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A message taken into custody.
    Message,
    /// The message with this sequence number left the queue (delivered, or dead-lettered).
    Delivered,
    /// A message the receiver refused, with its answer (dead-letter files only).
    DeadLetter,
    /// Nothing: zeros that fill a commit up to the next [`BLOCK`] boundary. Recovery skips it.
    /// (Journals written before padding existed have none and read the same; a relay older
    /// than padding stops at the first one it meets and reports damage.)
    Padding,
}

impl Kind {
    const fn code(self) -> u8 {
        match self {
            Self::Message => 1,
            Self::Delivered => 2,
            Self::DeadLetter => 3,
            Self::Padding => 4,
        }
    }

    const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Message),
            2 => Some(Self::Delivered),
            3 => Some(Self::DeadLetter),
            4 => Some(Self::Padding),
            _ => None,
        }
    }
}

/// One decoded record, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) kind: Kind,
    pub(crate) seq: u64,
    pub(crate) time_ms: u64,
    pub(crate) lane: u32,
    pub(crate) payload: &'a [u8],
}

impl Record<'_> {
    /// Bytes the record takes in a file.
    pub(crate) fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Damage {
    /// Fewer bytes than a header, or than the header's length announces: a write cut short.
    #[error("record cut short ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
    /// The length field is beyond any record the relay writes.
    #[error("impossible record length {0}")]
    BadLength(u64),
    /// The checksum does not match: a torn write, or corruption.
    #[error("checksum mismatch")]
    Checksum,
    /// The kind byte or the reserved bytes are not ones the relay writes.
    #[error("unknown record kind {0}")]
    BadKind(u8),
}

/// Appends one encoded record to `out`.
pub(crate) fn encode(record: &Record<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    let len = u32::try_from(record.payload.len()).expect("payload within MAX_PAYLOAD");
    debug_assert!(record.payload.len() <= MAX_PAYLOAD);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record.seq.to_le_bytes());
    out.extend_from_slice(&record.time_ms.to_le_bytes());
    out.extend_from_slice(&[record.kind.code(), 0, 0, 0]);
    out.extend_from_slice(&record.lane.to_le_bytes());
    out.extend_from_slice(record.payload);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The bytes of padding that take a commit of `len` bytes to a [`BLOCK`] boundary: 0 when it
/// ends on one, otherwise at least a header's worth (a padding record cannot be shorter), so
/// between [`HEADER_LEN`] and `BLOCK + HEADER_LEN - 1`.
pub(crate) const fn padding_len(len: usize) -> usize {
    let short = (BLOCK - len % BLOCK) % BLOCK;
    if short == 0 || short >= HEADER_LEN {
        short
    } else {
        short + BLOCK
    }
}

/// Appends a padding record of `len` bytes in all (header included) to `out`.
///
/// # Panics
/// When `len` is shorter than a header.
pub(crate) fn encode_padding(len: usize, out: &mut Vec<u8>) {
    assert!(
        len >= HEADER_LEN,
        "a padding record holds at least its header"
    );
    let start = out.len();
    out.resize(start + len, 0);
    let payload = u32::try_from(len - HEADER_LEN).expect("padding within a block");
    out[start + 4..start + 8].copy_from_slice(&payload.to_le_bytes());
    out[start + 24] = Kind::Padding.code();
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `bytes`.
///
/// # Errors
/// [`Damage`] when the bytes are not a whole, intact record.
pub(crate) fn decode(bytes: &[u8]) -> Result<Record<'_>, Damage> {
    if bytes.len() < HEADER_LEN {
        return Err(Damage::Truncated {
            have: bytes.len(),
            need: HEADER_LEN,
        });
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let long = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let len = word(4) as usize;
    if len > MAX_PAYLOAD {
        return Err(Damage::BadLength(len as u64));
    }
    let need = HEADER_LEN + len;
    if bytes.len() < need {
        return Err(Damage::Truncated {
            have: bytes.len(),
            need,
        });
    }
    if crc32fast::hash(&bytes[4..need]) != word(0) {
        return Err(Damage::Checksum);
    }
    let kind = match Kind::from_code(bytes[24]) {
        Some(kind) if bytes[25..28] == [0, 0, 0] => kind,
        _ => return Err(Damage::BadKind(bytes[24])),
    };
    Ok(Record {
        kind,
        seq: long(8),
        time_ms: long(16),
        lane: word(28),
        payload: &bytes[HEADER_LEN..need],
    })
}

/// The result of reading a segment from its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Length of the valid prefix: every record in it decoded.
    pub(crate) valid_len: usize,
    /// Why scanning stopped before the end, and where.
    pub(crate) damage: Option<(usize, Damage)>,
}

/// Walks the records of `bytes` from the start, calling `each(offset, record)` for every intact
/// one, and stops at the end or at the first damaged record.
pub(crate) fn scan(bytes: &[u8], mut each: impl FnMut(usize, Record<'_>)) -> Scan {
    let mut offset = 0;
    while offset < bytes.len() {
        match decode(&bytes[offset..]) {
            Ok(record) => {
                let len = record.encoded_len();
                each(offset, record);
                offset += len;
            }
            Err(_) if is_unwritten(&bytes[offset..]) => break,
            Err(damage) => {
                return Scan {
                    valid_len: offset,
                    damage: Some((offset, damage)),
                };
            }
        }
    }
    Scan {
        valid_len: offset,
        damage: None,
    }
}

/// Whether `rest` is preallocated space no record was written into: zeros only.
fn is_unwritten(rest: &[u8]) -> bool {
    rest.iter().all(|&b| b == 0)
}

/// Appends a dead-letter record to `out`: the message with sequence number `seq`, taken in at
/// `time_ms`, and the receiver's answer. Its payload is `len(message) message answer`.
pub(crate) fn encode_dead_letter(
    seq: u64,
    time_ms: u64,
    message: &[u8],
    answer: &[u8],
    out: &mut Vec<u8>,
) {
    let len = u32::try_from(message.len()).expect("message within MAX_PAYLOAD");
    let mut payload = Vec::with_capacity(4 + message.len() + answer.len());
    payload.extend_from_slice(&len.to_le_bytes());
    payload.extend_from_slice(message);
    payload.extend_from_slice(answer);
    encode(
        &Record {
            kind: Kind::DeadLetter,
            seq,
            time_ms,
            lane: 0,
            payload: &payload,
        },
        out,
    );
}

/// Splits a dead letter's payload into the message and the answer; `None` if malformed.
pub(crate) fn decode_dead_letter(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let rest = &payload[4..];
    (len <= rest.len()).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            &Record {
                kind: Kind::Message,
                seq,
                time_ms: 1_795_000_000_000 + seq,
                lane: 7,
                payload,
            },
            &mut out,
        );
        out
    }

    #[test]
    fn a_record_round_trips() {
        let bytes = message(42, b"MSH|^~\\&|A\r");
        assert_eq!(bytes.len(), HEADER_LEN + 11);
        let record = decode(&bytes).unwrap();
        assert_eq!(record.kind, Kind::Message);
        assert_eq!(record.seq, 42);
        assert_eq!(record.time_ms, 1_795_000_000_042);
        assert_eq!(record.lane, 7);
        assert_eq!(record.payload, b"MSH|^~\\&|A\r");
        let mut marker = Vec::new();
        encode(
            &Record {
                kind: Kind::Delivered,
                seq: 42,
                time_ms: 0,
                lane: 0,
                payload: &[],
            },
            &mut marker,
        );
        assert_eq!(decode(&marker).unwrap().kind, Kind::Delivered);
    }

    #[test]
    fn every_prefix_of_a_record_is_truncated_and_never_a_record() {
        let bytes = message(1, b"MSH|^~\\&|LAB|HOSP\rPID|1\r");
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..cut]), Err(Damage::Truncated { .. })),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = message(9, b"MSH|^~\\&|LAB\rOBX|1|NM|GLU||5.4\r");
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                // A flipped length bit may make the record look longer (truncated) or shorter
                // (checksum over the wrong range); either way it is not accepted.
                assert!(decode(&damaged).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn zeros_and_garbage_are_not_records() {
        assert!(decode(&[0; 64]).is_err());
        assert!(decode(&[0xff; 64]).is_err());
        let mut huge = message(1, b"x");
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), Err(Damage::BadLength(u64::from(u32::MAX))));
    }

    #[test]
    fn scan_stops_at_a_torn_tail() {
        let mut bytes = message(1, b"first");
        bytes.extend(message(2, b"second"));
        let whole = bytes.len();
        let third = message(3, b"third, torn");
        bytes.extend_from_slice(&third[..third.len() - 3]);
        let mut seen = Vec::new();
        let scan = scan(&bytes, |offset, record| seen.push((offset, record.seq)));
        assert_eq!(seen, [(0, 1), (HEADER_LEN + 5, 2)]);
        assert_eq!(scan.valid_len, whole);
        assert!(matches!(
            scan.damage,
            Some((at, Damage::Truncated { .. })) if at == whole
        ));
    }

    #[test]
    fn scan_trusts_nothing_after_a_damaged_record() {
        let mut bytes = message(1, b"one");
        let second_at = bytes.len();
        let mut second = message(2, b"two");
        second[HEADER_LEN] ^= 0x20;
        bytes.extend(second);
        bytes.extend(message(3, b"three"));
        let mut count = 0;
        let scan = scan(&bytes, |_, _| count += 1);
        assert_eq!(count, 1);
        assert_eq!(scan.valid_len, second_at);
        assert_eq!(scan.damage, Some((second_at, Damage::Checksum)));
    }

    #[test]
    fn zeros_after_the_last_record_are_a_clean_end_of_a_preallocated_segment() {
        let mut bytes = message(1, b"one");
        bytes.extend(message(2, b"two"));
        let records = bytes.len();
        bytes.resize(records + 64 * 1024, 0);
        let mut count = 0;
        let scan = scan(&bytes, |_, _| count += 1);
        assert_eq!(count, 2);
        assert_eq!(scan.valid_len, records);
        assert_eq!(scan.damage, None);
        // A segment preallocated and never written into.
        assert_eq!(
            super::scan(&[0; 4096], |_, _| panic!("no record in zeros")),
            Scan {
                valid_len: 0,
                damage: None
            }
        );
    }

    #[test]
    fn a_torn_record_in_preallocated_space_is_still_damage() {
        let mut bytes = message(1, b"one");
        let torn_at = bytes.len();
        // The next record's first sector reached the disk, the rest of it did not: the zeros
        // after it do not make it a clean end.
        let second = message(2, &[b'x'; 600]);
        bytes.extend_from_slice(&second[..512]);
        bytes.resize(torn_at + 8192, 0);
        let scan = scan(&bytes, |_, _| {});
        assert_eq!(scan.valid_len, torn_at);
        assert_eq!(scan.damage, Some((torn_at, Damage::Checksum)));
        // A record after a hole of zeros (a later commit's write landed, an earlier one's did
        // not): nothing after the hole is trusted, and it is reported.
        let mut holed = message(1, b"one");
        holed.resize(torn_at + 4096, 0);
        holed.extend(message(3, b"three"));
        let scan = super::scan(&holed, |_, _| {});
        assert_eq!(scan.valid_len, torn_at);
        assert!(scan.damage.is_some());
    }

    #[test]
    fn a_clean_segment_scans_whole() {
        let mut bytes = Vec::new();
        for seq in 0..100 {
            bytes.extend(message(seq, &vec![b'a'; usize::try_from(seq).unwrap()]));
        }
        let mut next = 0;
        let scan = scan(&bytes, |_, record| {
            assert_eq!(record.seq, next);
            next += 1;
        });
        assert_eq!(next, 100);
        assert_eq!(scan.valid_len, bytes.len());
        assert_eq!(scan.damage, None);
    }

    #[test]
    fn padding_takes_any_commit_to_a_block_boundary_and_scans_as_nothing() {
        for len in 0..3 * BLOCK {
            let pad = padding_len(len);
            assert_eq!((len + pad) % BLOCK, 0, "len {len}");
            assert!(pad == 0 || (HEADER_LEN..BLOCK + HEADER_LEN).contains(&pad));
        }
        // Records of every length up to two blocks, each padded as a commit would be: the
        // records come back, the padding does not, and the scan reads the whole file.
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for seq in 1..400u64 {
            let start = bytes.len();
            bytes.extend(message(
                seq,
                &vec![b'm'; usize::try_from(seq * 17 % 9000).unwrap()],
            ));
            expected.push(seq);
            let pad = padding_len(bytes.len() - start);
            if pad > 0 {
                encode_padding(pad, &mut bytes);
            }
            assert_eq!(bytes.len() % BLOCK, 0);
        }
        let mut seen = Vec::new();
        let scan = scan(&bytes, |_, record| {
            if record.kind == Kind::Padding {
                assert!(record.payload.iter().all(|&b| b == 0));
                assert_eq!(record.seq, 0);
            } else {
                seen.push(record.seq);
            }
        });
        assert_eq!(seen, expected);
        assert_eq!(
            scan,
            Scan {
                valid_len: bytes.len(),
                damage: None
            }
        );
    }

    #[test]
    fn damaged_padding_is_damage() {
        let mut bytes = message(1, b"one");
        let at = bytes.len();
        encode_padding(padding_len(at), &mut bytes);
        bytes.extend(message(2, b"two"));
        let last = bytes.len() - 1;
        // A flipped bit inside the zeros of the padding: nothing after it is trusted.
        let mut flipped = bytes.clone();
        flipped[at + HEADER_LEN + 5] = 1;
        let damaged = scan(&flipped, |_, _| {});
        assert_eq!(damaged.damage, Some((at, Damage::Checksum)));
        assert!(scan(&bytes[..last], |_, _| {}).damage.is_some());
    }

    #[test]
    fn dead_letters_keep_message_and_answer_apart() {
        let mut bytes = Vec::new();
        encode_dead_letter(5, 6, b"MSH|msg\r", b"MSH|ack\rMSA|AE|1\r", &mut bytes);
        let record = decode(&bytes).unwrap();
        assert_eq!(
            (record.kind, record.seq, record.time_ms),
            (Kind::DeadLetter, 5, 6)
        );
        let payload = record.payload;
        assert_eq!(
            decode_dead_letter(payload),
            Some((&b"MSH|msg\r"[..], &b"MSH|ack\rMSA|AE|1\r"[..]))
        );
        assert_eq!(decode_dead_letter(&payload[..3]), None);
        assert_eq!(decode_dead_letter(&[9, 0, 0, 0, b'x']), None);
    }
}
