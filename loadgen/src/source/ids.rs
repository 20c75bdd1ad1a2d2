//! The control-ID codec: MSH-10 values of [`CONTROL_ID_LEN`] base-36 characters that carry
//! a [`RunTag`], a connection number and a sequence number, and read back into them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::CONTROL_ID_LEN;

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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use mllp::rand::XorShift as Rng;

    use super::*;

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
}
