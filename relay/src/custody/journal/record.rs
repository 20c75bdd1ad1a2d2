//! The journal's record format, sans I/O: encoding, decoding, and scanning a segment's bytes
//! for the longest valid prefix.
//!
//! A record is a 32-byte header and a payload, little-endian:
//!
//! ```text
//!  0..4   CRC-32 (see "stamps" below)
//!  4..8   payload length
//!  8..16  sequence number (per worker journal, strictly increasing)
//! 16..24  time the record was written, milliseconds since the Unix epoch
//! 24      kind: 1 message, 2 delivered (payload empty; `seq` names the message), 3 dead letter,
//!         4 padding (payload zeros, `seq` 0: fills a commit up to a block boundary)
//! 25..28  segment tag (24 bits; 0: none)
//! 28..32  lane key (the inbound connection a message came on; keeps its order on replay)
//! ```
//!
//! The checksum covers everything but itself, so a torn write (a prefix of a record, or a
//! record whose later sectors never reached the disk) and a zero-filled or garbage tail are
//! all told apart from a real record. Scanning stops at the first record that does not check:
//! in an append-only file written with group commit, only the tail after the last completed
//! fdatasync can be torn, and nothing after a bad record is trusted.
//!
//! **Stamps.** A journal segment's records are stamped with the segment they belong to
//! ([`Stamp::Segment`], its first sequence number): the tag holds that number modulo
//! 2^24 − 1, plus one, and the checksum is of the number's 8 bytes followed by the record. A
//! delivered segment's file is reused for a later segment (see `journal::spare`), so behind
//! the last record written into it lie the records of its earlier use. They are told apart
//! from the new ones by their stamp. Where an earlier record starts right at the end of the
//! new ones and checks for an earlier segment with its tag, [`scan`] ends cleanly; where the
//! new records end inside an earlier one (the uses laid out their commits differently), the
//! bytes there carry another tag (or 0 in a stamped segment) and the scan ends with
//! [`Damage::OtherSegment`], which recovery does not count as a torn write of the newest
//! segment. A stamp collision (two uses of one file whose numbers agree modulo 2^24 − 1)
//! cannot make an old record pass as new, because the full number is in the checksum; at
//! worst the old bytes are reported as a torn record. Dead-letter files, and journals written before segments were reused,
//! carry [`Stamp::Plain`] records: tag 0 and the checksum of the record alone.
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
    /// The kind byte is not one the relay writes.
    #[error("unknown record kind {0}")]
    BadKind(u8),
    /// The record is stamped for another segment than the one being read (or for one when
    /// none is expected): an earlier use's record in a reused file, or damage.
    #[error("record of another segment (tag {0:#x})")]
    OtherSegment(u32),
}

/// What a record's tag and checksum say it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stamp {
    /// Nothing: tag 0, the checksum of the record alone (dead-letter files; journal segments
    /// written before segment files were reused).
    Plain,
    /// The journal segment whose first sequence number this is.
    Segment(u64),
}

/// Tags are segment numbers modulo this, plus one (so never 0, and within 24 bits).
const TAG_MODULUS: u64 = (1 << 24) - 1;

/// The 24-bit tag of the segment that begins at `first_seq`.
const fn tag_of(first_seq: u64) -> u32 {
    // Lossless: the remainder is below 2^24.
    (first_seq % TAG_MODULUS) as u32 + 1
}

/// The tag in a header.
fn tag_in(header: &[u8]) -> u32 {
    u32::from_le_bytes([header[25], header[26], header[27], 0])
}

/// The checksum of a record's bytes after the CRC field, under `stamp`.
fn checksum(stamp: Stamp, rest: &[u8]) -> u32 {
    match stamp {
        Stamp::Plain => crc32fast::hash(rest),
        Stamp::Segment(first_seq) => {
            let mut hasher =
                crc32fast::Hasher::new_with_initial(crc32fast::hash(&first_seq.to_le_bytes()));
            hasher.update(rest);
            hasher.finalize()
        }
    }
}

/// Appends one record to `out`, not yet stamped: its tag and checksum are set by [`stamp`],
/// once it is known which file it goes to (records are encoded as messages arrive; the
/// segment they land in is decided at commit).
pub(crate) fn encode(record: &Record<'_>, out: &mut Vec<u8>) {
    let len = u32::try_from(record.payload.len()).expect("payload within MAX_PAYLOAD");
    debug_assert!(record.payload.len() <= MAX_PAYLOAD);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record.seq.to_le_bytes());
    out.extend_from_slice(&record.time_ms.to_le_bytes());
    out.extend_from_slice(&[record.kind.code(), 0, 0, 0]);
    out.extend_from_slice(&record.lane.to_le_bytes());
    out.extend_from_slice(record.payload);
}

/// Stamps every record in `records` (encoded back to back by [`encode`] and
/// [`encode_padding`]) with `stamp`: sets its tag and computes its checksum.
///
/// # Panics
/// When `records` does not end where a record ends.
pub(crate) fn stamp(records: &mut [u8], stamp: Stamp) {
    let tag = match stamp {
        Stamp::Plain => 0,
        Stamp::Segment(first_seq) => tag_of(first_seq),
    };
    let mut offset = 0;
    while offset < records.len() {
        let record = &mut records[offset..];
        let len = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes")) as usize;
        let end = HEADER_LEN + len;
        record[25..28].copy_from_slice(&tag.to_le_bytes()[..3]);
        let crc = checksum(stamp, &record[4..end]);
        record[..4].copy_from_slice(&crc.to_le_bytes());
        offset += end;
    }
    assert_eq!(offset, records.len(), "records end where a record ends");
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

/// Appends a padding record of `len` bytes in all (header included) to `out`, not yet stamped
/// (see [`stamp`]).
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
}

/// Decodes the record at the start of `bytes`, read from a file whose records are stamped
/// `expected` (a [`Stamp::Plain`] record is accepted in a segment too: journals written before
/// stamps).
///
/// # Errors
/// [`Damage`] when the bytes are not a whole, intact record with that stamp.
pub(crate) fn decode(bytes: &[u8], expected: Stamp) -> Result<Record<'_>, Damage> {
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
    let stamp = match (tag_in(bytes), expected) {
        (0, _) => Stamp::Plain,
        (tag, Stamp::Segment(first_seq)) if tag == tag_of(first_seq) => expected,
        (tag, _) => return Err(Damage::OtherSegment(tag)),
    };
    if checksum(stamp, &bytes[4..need]) != word(0) {
        return Err(Damage::Checksum);
    }
    let Some(kind) = Kind::from_code(bytes[24]) else {
        return Err(Damage::BadKind(bytes[24]));
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

/// Walks the records of `bytes` (a file stamped `expected`) from the start, calling
/// `each(offset, record)` for every intact one, and stops at the end, at the segment's clean
/// end (zeros, or an earlier use's records), or at the first damaged record.
pub(crate) fn scan(bytes: &[u8], expected: Stamp, mut each: impl FnMut(usize, Record<'_>)) -> Scan {
    let mut offset = 0;
    // Whether this file's records are stamped (known from its first record): in a stamped
    // segment, bytes with tag 0 are not a record of it either.
    let mut stamped = None;
    while offset < bytes.len() {
        match decode(&bytes[offset..], expected) {
            Ok(record) => {
                stamped.get_or_insert(tag_in(&bytes[offset..]) != 0);
                let len = record.encoded_len();
                each(offset, record);
                offset += len;
            }
            Err(_) if is_unwritten(&bytes[offset..]) => break,
            Err(_) if is_earlier_use(&bytes[offset..], expected) => break,
            Err(damage) => {
                let damage = match not_of_segment(&bytes[offset..], expected, stamped) {
                    Some(tag) => Damage::OtherSegment(tag),
                    None => damage,
                };
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

/// The tag of bytes that cannot be the start of a record of segment `expected`: their tag is
/// another segment's, or 0 in a segment whose records are stamped (`stamped`; unknown counts
/// as stamped, since every segment begun since stamps is). A reused file's earlier use, cut
/// anywhere (its records are laid out differently), looks like this. `None` when the bytes
/// claim to be this segment's record (a torn write of it), or too short to say.
fn not_of_segment(rest: &[u8], expected: Stamp, stamped: Option<bool>) -> Option<u32> {
    let Stamp::Segment(first_seq) = expected else {
        return None;
    };
    if rest.len() < HEADER_LEN {
        return None;
    }
    let tag = tag_in(rest);
    let foreign = tag != tag_of(first_seq) && (tag != 0 || stamped != Some(false));
    foreign.then_some(tag)
}

/// Whether `rest` is preallocated space no record was written into: zeros only.
fn is_unwritten(rest: &[u8]) -> bool {
    rest.iter().all(|&b| b == 0)
}

/// Whether `rest` starts with an intact record of an earlier segment than `expected`: what a
/// reused file holds behind the records of its current use. Tries the nearest few earlier
/// segment numbers with the record's tag (a file is reused by the next rotation after its
/// segment is delivered, so its earlier uses are recent).
fn is_earlier_use(rest: &[u8], expected: Stamp) -> bool {
    const CANDIDATES: u64 = 4;
    let Stamp::Segment(first_seq) = expected else {
        return false;
    };
    if rest.len() < HEADER_LEN {
        return false;
    }
    let tag = tag_in(rest);
    let len = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
    if tag == 0 || len > MAX_PAYLOAD || rest.len() < HEADER_LEN + len {
        return false;
    }
    let crc = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
    let residue = u64::from(tag - 1);
    // The nearest number below `first_seq` that has this tag, then every TAG_MODULUS before.
    let back = (first_seq % TAG_MODULUS + TAG_MODULUS - residue) % TAG_MODULUS;
    let back = if back == 0 { TAG_MODULUS } else { back };
    (0..CANDIDATES)
        .map_while(|k| first_seq.checked_sub(back + k * TAG_MODULUS))
        .any(|earlier| checksum(Stamp::Segment(earlier), &rest[4..HEADER_LEN + len]) == crc)
}

/// Appends a dead-letter record, stamped [`Stamp::Plain`], to `out`: the message with sequence
/// number `seq`, taken in at `time_ms`, and the receiver's answer. Its payload is
/// `len(message) message answer`.
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
    let start = out.len();
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
    stamp(&mut out[start..], Stamp::Plain);
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
        stamped(seq, payload, Stamp::Plain)
    }

    /// A message record of segment `first_seq`'s file, as a commit writes it.
    fn in_segment(first_seq: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
        stamped(seq, payload, Stamp::Segment(first_seq))
    }

    fn stamped(seq: u64, payload: &[u8], with: Stamp) -> Vec<u8> {
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
        stamp(&mut out, with);
        out
    }

    #[test]
    fn a_record_round_trips() {
        let bytes = message(42, b"MSH|^~\\&|A\r");
        assert_eq!(bytes.len(), HEADER_LEN + 11);
        let record = decode(&bytes, Stamp::Plain).unwrap();
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
        stamp(&mut marker, Stamp::Segment(40));
        let record = decode(&marker, Stamp::Segment(40)).unwrap();
        assert_eq!((record.kind, record.seq), (Kind::Delivered, 42));
    }

    #[test]
    fn every_prefix_of_a_record_is_truncated_and_never_a_record() {
        let bytes = message(1, b"MSH|^~\\&|LAB|HOSP\rPID|1\r");
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    decode(&bytes[..cut], Stamp::Plain),
                    Err(Damage::Truncated { .. })
                ),
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
                assert!(
                    decode(&damaged, Stamp::Plain).is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn zeros_and_garbage_are_not_records() {
        assert!(decode(&[0; 64], Stamp::Plain).is_err());
        assert!(decode(&[0xff; 64], Stamp::Plain).is_err());
        let mut huge = message(1, b"x");
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&huge, Stamp::Plain),
            Err(Damage::BadLength(u64::from(u32::MAX)))
        );
    }

    #[test]
    fn scan_stops_at_a_torn_tail() {
        let mut bytes = message(1, b"first");
        bytes.extend(message(2, b"second"));
        let whole = bytes.len();
        let third = message(3, b"third, torn");
        bytes.extend_from_slice(&third[..third.len() - 3]);
        let mut seen = Vec::new();
        let scan = scan(&bytes, Stamp::Plain, |offset, record| {
            seen.push((offset, record.seq));
        });
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
        let scan = scan(&bytes, Stamp::Plain, |_, _| count += 1);
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
        let scan = scan(&bytes, Stamp::Plain, |_, _| count += 1);
        assert_eq!(count, 2);
        assert_eq!(scan.valid_len, records);
        assert_eq!(scan.damage, None);
        // A segment preallocated and never written into.
        assert_eq!(
            super::scan(&[0; 4096], Stamp::Plain, |_, _| panic!(
                "no record in zeros"
            )),
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
        let scan = scan(&bytes, Stamp::Plain, |_, _| {});
        assert_eq!(scan.valid_len, torn_at);
        assert_eq!(scan.damage, Some((torn_at, Damage::Checksum)));
        // A record after a hole of zeros (a later commit's write landed, an earlier one's did
        // not): nothing after the hole is trusted, and it is reported.
        let mut holed = message(1, b"one");
        holed.resize(torn_at + 4096, 0);
        holed.extend(message(3, b"three"));
        let scan = super::scan(&holed, Stamp::Plain, |_, _| {});
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
        let scan = scan(&bytes, Stamp::Plain, |_, record| {
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
                let at = bytes.len();
                encode_padding(pad, &mut bytes);
                stamp(&mut bytes[at..], Stamp::Plain);
            }
            assert_eq!(bytes.len() % BLOCK, 0);
        }
        let mut seen = Vec::new();
        let scan = scan(&bytes, Stamp::Plain, |_, record| {
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
        stamp(&mut bytes[at..], Stamp::Plain);
        bytes.extend(message(2, b"two"));
        let last = bytes.len() - 1;
        // A flipped bit inside the zeros of the padding: nothing after it is trusted.
        let mut flipped = bytes.clone();
        flipped[at + HEADER_LEN + 5] = 1;
        let damaged = scan(&flipped, Stamp::Plain, |_, _| {});
        assert_eq!(damaged.damage, Some((at, Damage::Checksum)));
        assert!(
            scan(&bytes[..last], Stamp::Plain, |_, _| {})
                .damage
                .is_some()
        );
    }

    #[test]
    fn dead_letters_keep_message_and_answer_apart() {
        let mut bytes = Vec::new();
        encode_dead_letter(5, 6, b"MSH|msg\r", b"MSH|ack\rMSA|AE|1\r", &mut bytes);
        let record = decode(&bytes, Stamp::Plain).unwrap();
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

    #[test]
    fn a_segment_stamp_binds_a_record_to_its_segment() {
        let bytes = in_segment(1_000, 1_007, b"MSH|^~\\&|LAB\r");
        let record = decode(&bytes, Stamp::Segment(1_000)).unwrap();
        assert_eq!((record.kind, record.seq), (Kind::Message, 1_007));
        assert_eq!(
            decode(&bytes, Stamp::Segment(2_000)),
            Err(Damage::OtherSegment(tag_of(1_000)))
        );
        assert_eq!(
            decode(&bytes, Stamp::Plain),
            Err(Damage::OtherSegment(tag_of(1_000)))
        );
        // Same tag, other segment: the full number is in the checksum.
        assert_eq!(
            decode(&bytes, Stamp::Segment(1_000 + TAG_MODULUS)),
            Err(Damage::Checksum)
        );
        // Journals written before stamps read as before.
        let plain = message(3, b"old");
        assert_eq!(decode(&plain, Stamp::Segment(1)).unwrap().seq, 3);
        // Every single bit flip of a stamped record is caught too.
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    decode(&damaged, Stamp::Segment(1_000)).is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
        assert_eq!(tag_of(0), 1);
        assert_eq!(tag_of(TAG_MODULUS - 1), (1 << 24) - 1);
        assert_eq!(tag_of(TAG_MODULUS), 1);
    }

    /// A file written as segment `first_seq`: `commits` block-padded commits of `per_commit`
    /// messages each, sequence numbers from `first_seq`, payload lengths from `len_of(seq)`.
    fn segment_file(
        first_seq: u64,
        commits: u64,
        per_commit: u64,
        len_of: impl Fn(u64) -> u64,
    ) -> Vec<u8> {
        let mut bytes = Vec::new();
        for commit in 0..commits {
            let start = bytes.len();
            for i in 0..per_commit {
                let seq = first_seq + commit * per_commit + i;
                encode(
                    &Record {
                        kind: Kind::Message,
                        seq,
                        time_ms: seq,
                        lane: 1,
                        // Each use's bytes differ, as real messages do.
                        payload: &vec![
                            b'a' + u8::try_from(first_seq % 26).unwrap();
                            usize::try_from(len_of(seq)).unwrap()
                        ],
                    },
                    &mut bytes,
                );
            }
            let pad = padding_len(bytes.len() - start);
            if pad > 0 {
                encode_padding(pad, &mut bytes);
            }
            stamp(&mut bytes[start..], Stamp::Segment(first_seq));
        }
        bytes
    }

    /// Overwrites the start of `file` with `current`.
    fn over(mut file: Vec<u8>, current: &[u8]) -> Vec<u8> {
        file[..current.len()].copy_from_slice(current);
        file
    }

    /// The message sequence numbers scanned from `bytes` as segment `first_seq`, and the scan.
    fn read_as(bytes: &[u8], first_seq: u64) -> (Vec<u64>, Scan) {
        let mut seqs = Vec::new();
        let scan = scan(bytes, Stamp::Segment(first_seq), |_, record| {
            if record.kind == Kind::Message {
                seqs.push(record.seq);
            }
        });
        (seqs, scan)
    }

    #[test]
    fn a_reused_file_yields_only_its_current_records() {
        // Same layout in every use: the current records end where an earlier record begins.
        // That record checks for an earlier segment with its tag: the clean end.
        let same = |_| 500;
        for (older, old, new) in [
            (1, 5_000, 90_000),
            // The current number has the same tag as the earlier use's.
            (7, 3 * TAG_MODULUS + 12, 4 * TAG_MODULUS + 12),
            (1, 2, 3),
        ] {
            let file = over(
                segment_file(older, 40, 6, same),
                &segment_file(old, 25, 6, same),
            );
            let current = segment_file(new, 9, 6, same);
            let file = over(file, &current);
            let (seqs, scan) = read_as(&file, new);
            assert_eq!(seqs, (new..new + 54).collect::<Vec<_>>(), "{old} {new}");
            assert_eq!(
                scan,
                Scan {
                    valid_len: current.len(),
                    damage: None
                },
                "{old} {new}"
            );
        }
        // Another layout: the current records end inside an earlier record, whose bytes there
        // are no record of this segment. Reported as such (recovery cuts the newest segment
        // there; an older one never has such a tail, see `journal`), never read as records.
        let varied = |seq| 300 + seq % 700;
        let file = segment_file(5_000, 25, 6, varied);
        let current = segment_file(90_000, 9, 6, |seq| 40 + seq % 1_500);
        let file = over(file, &current);
        let (seqs, scan) = read_as(&file, 90_000);
        assert_eq!(seqs, (90_000..90_054).collect::<Vec<_>>());
        assert_eq!(scan.valid_len, current.len());
        assert!(matches!(
            scan.damage,
            None | Some((_, Damage::OtherSegment(_) | Damage::BadLength(_)))
        ));
    }

    #[test]
    fn damage_behind_the_current_use_of_a_reused_file_is_still_damage() {
        let same = |_| 700;
        let file = segment_file(100, 20, 4, same);
        let current = segment_file(5_000, 3, 4, same);
        let file = over(file, &current);
        let end = current.len();
        assert_eq!(read_as(&file, 5_000).1.damage, None, "intact: a clean end");
        // A torn commit of the current use: its first sector written, the rest not.
        let next = segment_file(5_000, 4, 4, same);
        let mut torn = file.clone();
        torn[end..end + 512].copy_from_slice(&next[end..end + 512]);
        assert_eq!(
            read_as(&torn, 5_000).1.damage,
            Some((end, Damage::Checksum))
        );
        // A bit flipped in the earlier record right behind: not an intact earlier record, so
        // reported.
        let mut flipped = file.clone();
        flipped[end + HEADER_LEN + 3] ^= 4;
        assert_eq!(
            read_as(&flipped, 5_000).1.damage,
            Some((end, Damage::OtherSegment(tag_of(100))))
        );
        // Garbage.
        let mut garbage = file;
        garbage[end..end + 4096].fill(0x5a);
        assert!(read_as(&garbage, 5_000).1.damage.is_some());
    }

    mod reuse {
        //! Property: however often a file is reused, and wherever its current use stops
        //! (whole commits, or a commit whose later sectors never reached the disk), a scan as
        //! the current segment yields a prefix of the current use's messages (a torn commit's
        //! records that did land whole may be among them: never acknowledged, delivered at
        //! least once) and nothing of an earlier use.
        use super::*;
        use proptest::prelude::*;

        /// One use of the file: how far its segment number is past the previous one, and its
        /// commits (payload lengths of the messages in each).
        #[derive(Debug, Clone)]
        struct Use {
            gap: u64,
            commits: Vec<Vec<usize>>,
        }

        fn a_use() -> impl Strategy<Value = Use> {
            (
                prop_oneof![1..5_000u64, Just(TAG_MODULUS), Just(2 * TAG_MODULUS)],
                proptest::collection::vec(proptest::collection::vec(0..3_000usize, 1..6), 1..12),
            )
                .prop_map(|(gap, commits)| Use { gap, commits })
        }

        /// Writes `usage` over `file` from its start as segment `first_seq`: every commit
        /// whole, except the last when `torn_sectors` says how many of its 512-byte sectors
        /// landed. Returns the sequence numbers of the messages written, in order.
        fn write_use(
            file: &mut Vec<u8>,
            first_seq: u64,
            usage: &Use,
            torn_sectors: Option<usize>,
        ) -> Vec<u64> {
            let mut at = 0;
            let mut seq = first_seq;
            let mut written = Vec::new();
            for (index, sizes) in usage.commits.iter().enumerate() {
                let mut commit = Vec::new();
                let mut seqs = Vec::new();
                for &size in sizes {
                    encode(
                        &Record {
                            kind: Kind::Message,
                            seq,
                            time_ms: seq,
                            lane: 0,
                            payload: &vec![u8::try_from(seq % 251).unwrap(); size],
                        },
                        &mut commit,
                    );
                    seqs.push(seq);
                    seq += 1;
                }
                let pad = padding_len(commit.len());
                if pad > 0 {
                    encode_padding(pad, &mut commit);
                }
                stamp(&mut commit, Stamp::Segment(first_seq));
                let last = index + 1 == usage.commits.len();
                let landed = match torn_sectors {
                    Some(sectors) if last => (sectors * 512).min(commit.len()),
                    _ => commit.len(),
                };
                if file.len() < at + commit.len() {
                    file.resize(at + commit.len(), 0);
                }
                file[at..at + landed].copy_from_slice(&commit[..landed]);
                written.extend(seqs);
                at += commit.len();
            }
            written
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 256,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]
            #[test]
            fn a_reused_file_yields_only_its_current_use(
                uses in proptest::collection::vec(a_use(), 1..5),
                torn in proptest::option::of(0..40usize),
            ) {
                let mut file = Vec::new();
                let mut first_seq = 1;
                let mut current = Vec::new();
                let mut earlier = Vec::new();
                for (index, usage) in uses.iter().enumerate() {
                    if index > 0 {
                        earlier.push(first_seq);
                    }
                    first_seq += usage.gap;
                    let last = index + 1 == uses.len();
                    current = write_use(&mut file, first_seq, usage, torn.filter(|_| last));
                }
                let mut seen = Vec::new();
                let scan = scan(&file, Stamp::Segment(first_seq), |_, record| {
                    if record.kind == Kind::Message {
                        seen.push(record.seq);
                    }
                });
                // Only the current use's messages, in order, from the first.
                prop_assert!(seen.len() <= current.len(), "{seen:?} {current:?}");
                prop_assert_eq!(&seen[..], &current[..seen.len()]);
                // A stamp collision (an earlier use with the current tag) may be reported as a
                // torn record of this segment, but never read as one (above).
                let collision = earlier.iter().any(|&e| tag_of(e) == tag_of(first_seq));
                if torn.is_none() {
                    prop_assert_eq!(seen.len(), current.len());
                }
                if torn.is_none() && !collision {
                    // What follows is an earlier use (or zeros): never reported as a torn
                    // record of this segment.
                    prop_assert!(
                        matches!(scan.damage, None | Some((_, Damage::OtherSegment(_)))),
                        "{:?}",
                        scan.damage
                    );
                }
            }
        }
    }
}
