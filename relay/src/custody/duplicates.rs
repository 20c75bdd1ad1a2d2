//! Duplicate suppression for `durable` listeners: a window of the messages recently taken into
//! custody, so that a sender resending one (it never saw the ACK: a timeout, a dropped
//! connection) gets the original ACK again instead of having the message queued twice.
//!
//! A message is a resend when its sender (MSH-3 and MSH-4, whole fields), its control ID
//! (MSH-10) *and its content* match one accepted within the window. The content check is
//! there because some senders reuse control IDs (a counter that restarts with the sender):
//! a different message under a remembered ID is a new message, queued as usual, and only
//! counted and logged. A false match would answer AA for a message that is then never
//! delivered, so the content is compared through its length and a 64-bit hash, and the
//! sender and control ID byte for byte.
//!
//! Limits, stated for the operator:
//! - Only messages already committed are remembered. A resend that arrives while the first
//!   copy is still waiting for its fdatasync (on another connection) is queued as well, so
//!   at most the messages in flight at once can still be delivered twice.
//! - The window lives in memory. At start-up it is refilled from the messages still in the
//!   journal (see `custody::recovery`), with ACKs made anew; messages whose segment
//!   was already reclaimed are not remembered across a restart (delivery stays at least once).
//! - It is bounded by age and by entries; the oldest entries go first.
//!
//! The window is shared by every worker, since a resend after a reconnect can land on any of
//! them. It is split into shards behind their own mutex, each held for one lookup or insert
//! (no I/O, no allocation under a lock but the insert's own), and it is only built for
//! listeners that ask for it: the lock-free hot path of every other listener is untouched.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mllp::ack::AckCode;
use mllp::hl7::Msh;

use crate::config::Config;

/// Shards of the window: enough that workers rarely meet on one lock.
const SHARDS: usize = 16;

/// What the window knows about a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not in the window: take it into custody.
    New,
    /// The same sender used this control ID for a different message within the window: take
    /// it into custody like a new one (the caller counts and logs it).
    ReusedControlId,
    /// A resend of a message already in custody. The original answer has been copied into the
    /// caller's buffer; `None` when the sender was sent nothing (MSH-15/16 asked for no ACK).
    Resent(Option<AckCode>),
}

/// The window of recently accepted messages, shared by all workers.
#[derive(Debug)]
pub(crate) struct DuplicateWindow {
    shards: Box<[Mutex<Shard>]>,
    max_age: Duration,
    entries_per_shard: usize,
}

#[derive(Debug, Default)]
struct Shard {
    remembered: HashMap<Arc<[u8]>, Remembered>,
    /// Keys in the order they were remembered, for eviction by age and count.
    order: VecDeque<(Instant, Arc<[u8]>)>,
}

#[derive(Debug)]
struct Remembered {
    content: Fingerprint,
    answer: Option<(AckCode, Box<[u8]>)>,
    at: Instant,
}

/// A message's content as compared by the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: usize,
    hash: u64,
}

impl Fingerprint {
    fn of(payload: &[u8]) -> Self {
        let mut hasher = DefaultHasher::new();
        hasher.write(payload);
        Self {
            len: payload.len(),
            hash: hasher.finish(),
        }
    }
}

/// Builds the window key (MSH-3, MSH-4, MSH-10) into `out`, each field length-prefixed so
/// that no two different triples give the same bytes.
fn key_into(msh: &Msh<'_>, out: &mut Vec<u8>) {
    out.clear();
    for field in [msh.raw_field(3), msh.raw_field(4), msh.control_id()] {
        out.extend_from_slice(&(field.len() as u64).to_le_bytes());
        out.extend_from_slice(field);
    }
}

/// A relay's duplicate windows: one for each listener that asks for one, indexed like
/// `Config::listeners`, shared by every worker.
#[derive(Debug, Clone, Default)]
pub(crate) struct DuplicateWindows(Arc<[Option<DuplicateWindow>]>);

impl DuplicateWindows {
    pub(crate) fn for_config(config: &Config) -> Self {
        Self(
            config
                .listeners
                .iter()
                .map(|l| {
                    l.duplicates
                        .map(|w| DuplicateWindow::new(w.max_age, w.max_entries))
                })
                .collect(),
        )
    }

    /// Listener `index`'s window, if it has one.
    pub(crate) fn of(&self, index: usize) -> Option<&DuplicateWindow> {
        self.0.get(index).and_then(Option::as_ref)
    }
}

impl DuplicateWindow {
    /// A window that remembers each accepted message for `max_age`, and at most about
    /// `max_entries` of them (rounded up to a multiple of the shard count).
    pub(crate) fn new(max_age: Duration, max_entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_age,
            entries_per_shard: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        // The remainder is below SHARDS, so it fits a usize.
        #[allow(clippy::cast_possible_truncation)]
        let index = (hasher.finish() % SHARDS as u64) as usize;
        &self.shards[index]
    }

    /// Looks `msh`/`payload` up at `now`; on [`Seen::Resent`] the original answer's bytes are
    /// in `answer` (cleared otherwise). `key` is scratch space for the window key.
    pub(crate) fn check(
        &self,
        msh: &Msh<'_>,
        payload: &[u8],
        now: Instant,
        key: &mut Vec<u8>,
        answer: &mut Vec<u8>,
    ) -> Seen {
        answer.clear();
        key_into(msh, key);
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.evict(now, self.max_age, self.entries_per_shard);
        let Some(seen) = shard.remembered.get(key.as_slice()) else {
            return Seen::New;
        };
        if now.saturating_duration_since(seen.at) > self.max_age {
            // Not evicted yet only because an entry remembered after it is older (entries
            // refilled from the journal at start-up come worker by worker).
            return Seen::New;
        }
        if seen.content != Fingerprint::of(payload) {
            return Seen::ReusedControlId;
        }
        match &seen.answer {
            Some((code, bytes)) => {
                answer.extend_from_slice(bytes);
                Seen::Resent(Some(*code))
            }
            None => Seen::Resent(None),
        }
    }

    /// Remembers that `msh`/`payload` was taken into custody at `now` and answered with
    /// `answer` (`None`: nothing was sent). A message remembered under the same key before is
    /// replaced. `key` is scratch space for the window key.
    pub(crate) fn remember(
        &self,
        msh: &Msh<'_>,
        payload: &[u8],
        answer: Option<(AckCode, &[u8])>,
        now: Instant,
        key: &mut Vec<u8>,
    ) {
        key_into(msh, key);
        let key: Arc<[u8]> = Arc::from(key.as_slice());
        let entry = Remembered {
            content: Fingerprint::of(payload),
            answer: answer.map(|(code, bytes)| (code, Box::from(bytes))),
            at: now,
        };
        let mut shard = self
            .shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.order.push_back((now, Arc::clone(&key)));
        shard.remembered.insert(key, entry);
        shard.evict(now, self.max_age, self.entries_per_shard);
    }

    /// How long an accepted message is remembered.
    pub(crate) fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Messages remembered now (all shards).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remembered
                    .len()
            })
            .sum()
    }

    /// Whether nothing is remembered.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    /// Forgets entries older than `max_age` at `now`, and the oldest beyond `max_entries`.
    fn evict(&mut self, now: Instant, max_age: Duration, max_entries: usize) {
        while let Some((at, _)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) > max_age;
            if !expired && self.order.len() <= max_entries {
                break;
            }
            let Some((at, key)) = self.order.pop_front() else {
                break;
            };
            // A key remembered again later has a newer entry: that one stays.
            if self.remembered.get(&key).is_some_and(|e| e.at == at) {
                self.remembered.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sender: &str, facility: &str, control_id: &str, body: &str) -> Vec<u8> {
        format!(
            "MSH|^~\\&|{sender}|{facility}|EHR|HOSP|20261122120000||ORU^R01|{control_id}|P|2.5.1\rOBX|1|ST|X||{body}\r"
        )
        .into_bytes()
    }

    fn check(window: &DuplicateWindow, payload: &[u8], now: Instant) -> (Seen, Vec<u8>) {
        let msh = Msh::parse(payload).expect("test message has an MSH");
        let mut answer = b"stale".to_vec();
        let seen = window.check(&msh, payload, now, &mut Vec::new(), &mut answer);
        (seen, answer)
    }

    fn remember(window: &DuplicateWindow, payload: &[u8], answer: &[u8], now: Instant) {
        let msh = Msh::parse(payload).expect("test message has an MSH");
        window.remember(
            &msh,
            payload,
            Some((AckCode::AA, answer)),
            now,
            &mut Vec::new(),
        );
    }

    #[test]
    fn a_resent_message_gets_its_original_answer() {
        let window = DuplicateWindow::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        let first = message("LAB", "NORTH", "MSG1", "result");
        assert_eq!(check(&window, &first, now), (Seen::New, Vec::new()));
        remember(&window, &first, b"MSH|...|ACK\rMSA|AA|MSG1\r", now);
        let (seen, answer) = check(&window, &first, now + Duration::from_secs(1));
        assert_eq!(seen, Seen::Resent(Some(AckCode::AA)));
        assert_eq!(answer, b"MSH|...|ACK\rMSA|AA|MSG1\r");
    }

    #[test]
    fn a_message_answered_with_nothing_is_resent_nothing() {
        let window = DuplicateWindow::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        let payload = message("LAB", "NORTH", "MSG1", "result");
        let msh = Msh::parse(&payload).unwrap();
        window.remember(&msh, &payload, None, now, &mut Vec::new());
        assert_eq!(
            check(&window, &payload, now),
            (Seen::Resent(None), Vec::new())
        );
    }

    #[test]
    fn a_reused_control_id_with_other_content_is_a_new_message() {
        let window = DuplicateWindow::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        remember(&window, &message("LAB", "NORTH", "1", "first"), b"ack", now);
        let (seen, answer) = check(&window, &message("LAB", "NORTH", "1", "other"), now);
        assert_eq!(seen, Seen::ReusedControlId);
        assert!(
            answer.is_empty(),
            "no answer copied for a different message"
        );
        // Same length, different bytes: still different.
        let (seen, _) = check(&window, &message("LAB", "NORTH", "1", "firsT"), now);
        assert_eq!(seen, Seen::ReusedControlId);
    }

    #[test]
    fn the_sender_is_part_of_the_key() {
        let window = DuplicateWindow::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        remember(&window, &message("LAB", "NORTH", "1", "x"), b"ack", now);
        for other in [
            message("RAD", "NORTH", "1", "x"),
            message("LAB", "SOUTH", "1", "x"),
            message("LAB", "NORTH", "2", "x"),
            // Field boundaries count: "LA" + "BNORTH" is not "LAB" + "NORTH".
            message("LA", "BNORTH", "1", "x"),
        ] {
            assert_eq!(check(&window, &other, now).0, Seen::New);
        }
    }

    #[test]
    fn entries_expire_with_age() {
        let window = DuplicateWindow::new(Duration::from_secs(10), 100);
        let start = Instant::now();
        let payload = message("LAB", "NORTH", "1", "x");
        remember(&window, &payload, b"ack", start);
        let at_edge = start + Duration::from_secs(10);
        assert_eq!(
            check(&window, &payload, at_edge).0,
            Seen::Resent(Some(AckCode::AA))
        );
        let after = start + Duration::from_secs(11);
        assert_eq!(check(&window, &payload, after).0, Seen::New);
        assert!(window.is_empty());
    }

    #[test]
    fn an_old_entry_behind_a_younger_one_has_expired_too() {
        // Refilled from two journals: the second worker's messages are remembered after the
        // first's, though some of them are older.
        let window = DuplicateWindow::new(Duration::from_secs(10), 100);
        let start = Instant::now();
        let young = message("LAB", "NORTH", "1", "x");
        // Another control ID in the same shard (eviction works shard by shard).
        let key_of = |payload: &[u8]| {
            let mut key = Vec::new();
            key_into(&Msh::parse(payload).unwrap(), &mut key);
            key
        };
        let young_shard = window.shard(&key_of(&young));
        let old = (2..1000)
            .map(|id| message("LAB", "NORTH", &id.to_string(), "x"))
            .find(|other| std::ptr::eq(window.shard(&key_of(other)), young_shard))
            .expect("some control ID shares the shard");
        remember(&window, &young, b"ack", start + Duration::from_secs(9));
        remember(&window, &old, b"ack", start);
        let now = start + Duration::from_secs(12);
        assert_eq!(check(&window, &old, now).0, Seen::New);
        assert_eq!(
            check(&window, &young, now).0,
            Seen::Resent(Some(AckCode::AA))
        );
    }

    #[test]
    fn the_oldest_entries_go_first_beyond_the_cap() {
        // One entry per shard at most.
        let window = DuplicateWindow::new(Duration::from_secs(60), 1);
        let now = Instant::now();
        let messages: Vec<Vec<u8>> = (0..200)
            .map(|i| message("LAB", "NORTH", &i.to_string(), "x"))
            .collect();
        for m in &messages {
            remember(&window, m, b"ack", now);
        }
        assert!(window.len() <= SHARDS, "{} entries kept", window.len());
        // The last one remembered is always still there.
        assert_eq!(
            check(&window, messages.last().unwrap(), now).0,
            Seen::Resent(Some(AckCode::AA))
        );
    }

    #[test]
    fn remembering_a_key_again_keeps_the_newer_entry_through_eviction() {
        let window = DuplicateWindow::new(Duration::from_secs(10), 100);
        let start = Instant::now();
        let first = message("LAB", "NORTH", "1", "first");
        let second = message("LAB", "NORTH", "1", "second");
        remember(&window, &first, b"ack1", start);
        remember(&window, &second, b"ack2", start + Duration::from_secs(8));
        // The first entry's slot expires; the second's must survive it.
        let later = start + Duration::from_secs(12);
        let (seen, answer) = check(&window, &second, later);
        assert_eq!(seen, Seen::Resent(Some(AckCode::AA)));
        assert_eq!(answer, b"ack2");
        assert_eq!(check(&window, &first, later).0, Seen::ReusedControlId);
    }

    #[test]
    fn workers_share_the_window() {
        let window = Arc::new(DuplicateWindow::new(Duration::from_secs(60), 10_000));
        let now = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let window = Arc::clone(&window);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let m = message("LAB", "NORTH", &format!("{t}-{i}"), "x");
                        remember(&window, &m, b"ack", now);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(window.len(), 2_000);
        let m = message("LAB", "NORTH", "3-499", "x");
        assert_eq!(check(&window, &m, now).0, Seen::Resent(Some(AckCode::AA)));
    }
}
