//! The relay as a queue, Jepsen style: the real `mllp-relay` binary under faults (kill -9,
//! receiver killed, NAKing, slow, failing fdatasync or pwrite, torn journal tail), with every
//! message's fate classified. The invariants, in every case: nothing that got AA/CA is lost,
//! nothing is delivered that was never sent, every ACK names its message; duplicates are
//! counted, and bounded where crashes cause them.
//!
//! Run with the table: `cargo test -p relay --test e2e faults:: -- --nocapture` (set
//! `MLLP_FAULT_TABLE=FILE` to append the rows to a markdown file as well). The two libfiu
//! tests need `fiu-run`/`fiu-ctrl` (Debian: fiu-utils); without them they say so and pass,
//! unless `MLLP_FAULTS_REQUIRED=1`.
//!
//! `kill -9` leaves the page cache intact, so these tests cannot catch a missing fdatasync;
//! only a power cut (a VM, or a filesystem that drops unsynced writes) could.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mllp::ack::Outcome;
use testkit::receiver::{Behaviour, NakRule, Receiver};
use testkit::wait_until;

use crate::support::jepsen::{
    Answer, Fiu, History, Mode, Relay, RelayOpts, Scenario, Tear, Torn, Workload, WorkloadOpts,
    classify, found_outside_segments, newest_segments, seq_of, settle, tear,
};

/// The ACK mode under test. [`Mode::Passthrough`] (no journal) is the harness's control
/// experiment: acked ⇒ delivered holds there trivially, since every AA comes from the sink.
const MODE: Mode = Mode::Durable;

/// Concurrent stop-and-wait senders, each on its own connection.
const SENDERS: usize = 4;
/// Longest wait for the relay to make progress (a healthy debug build needs milliseconds).
const PROGRESS: Duration = Duration::from_secs(15);
/// Longest wait, after the faults, for every acked message to reach the sink.
const SETTLE: Duration = Duration::from_secs(25);

/// The most ids that may be delivered twice after `crashes` crashes.
///
/// A crash can only duplicate what was delivered downstream but not yet recorded as delivered
/// in the journal: the forwarder's in-flight window (one message per lane) plus delivery marks
/// not yet persisted. With stop-and-wait senders the journal's backlog, and so that window,
/// is fed by `SENDERS` connections; allowing 8 per sender per crash covers the lanes and any
/// batching of delivery marks, and 64 covers the final recovery's replay. A relay that replays
/// its whole journal at every start (hundreds of messages here) does not fit.
fn duplicate_bound(crashes: usize) -> usize {
    SENDERS * crashes * 8 + 64
}

fn senders_u64() -> u64 {
    u64::try_from(SENDERS).unwrap()
}

/// Waits (bounded) for a workload with a quota to finish, lets every acked message reach the
/// sink, and checks the relay is still up; returns what the senders saw.
fn run_to_the_end(
    load: Workload,
    sink: &Receiver,
    relay: &mut Relay,
    scenario: &Scenario,
) -> History {
    assert!(
        wait_until(Duration::from_secs(60), || load.done()),
        "the senders did not finish\n{}",
        scenario.diagnostics()
    );
    let history = load.finish();
    settle(sink, &history, SETTLE);
    assert!(relay.alive(), "the relay died\n{}", scenario.diagnostics());
    history
}

/// Fault 1: the relay is killed with SIGKILL under load, again and again, on the same journal
/// and address; after a last restart every acked message must arrive.
#[test]
fn relay_killed_with_sigkill_under_load() {
    kill_cycles("KILL", "auto");
}

/// Fault 1 on the epoll driver, whose journal I/O takes another path (blocking file calls
/// instead of io_uring operations).
#[test]
fn relay_killed_with_sigkill_under_load_epoll() {
    kill_cycles("KILE", "epoll");
}

fn kill_cycles(tag: &'static str, driver: &'static str) {
    const CYCLES: usize = 10;
    let scenario = Scenario::new("relay kill -9 x10");
    let sink = Receiver::start(Behaviour::Ack);
    let mut opts = RelayOpts::new(
        MODE,
        scenario.relay_addr(),
        sink.addr(),
        &scenario.journal(),
    );
    opts.driver = driver;
    // The smallest segments: a spare is ready within milliseconds of each start, so the crashes
    // hit commits written with O_DIRECT into prepared segments, padding and all, and rotations.
    // 1,500 messages a life fill a few of them, so that delivered segments are reused and the
    // crashes also hit segments written over an earlier use (checked by hand: one or two reuses
    // in nearly every life).
    opts.segment_size = Some("1MiB");
    let load = Workload::start(opts.listen, WorkloadOpts::new(tag, SENDERS));
    for cycle in 0..CYCLES {
        let mut relay = scenario.start_relay(&opts);
        load.wait_for_acks(1500, PROGRESS, &scenario);
        // Vary the crash point a little: not a timing assumption, only variety.
        thread::sleep(Duration::from_millis(
            u64::try_from(cycle * 7 % 23).unwrap(),
        ));
        relay.kill();
    }
    let mut relay = scenario.start_relay(&opts);
    // The recovered journal takes new messages too.
    load.wait_for_acks(20, PROGRESS, &scenario);
    let history = load.finish();
    settle(&sink, &history, SETTLE);
    assert!(relay.alive(), "the relay died\n{}", scenario.diagnostics());
    let tally = classify(
        &format!("relay kill -9 under load x{CYCLES} (driver {driver}, 1 MiB segments)"),
        MODE,
        &history,
        &sink.received(),
        None,
    );
    tally.report();
    tally.assert_safe(Some(duplicate_bound(CYCLES)), &scenario);
}

/// Fault 2: the receiver is killed (connections reset) and restarted on the same port while
/// the senders keep sending.
#[test]
fn downstream_killed_and_restarted() {
    const CYCLES: usize = 5;
    let scenario = Scenario::new("downstream kill/restart x5");
    let mut sink = Receiver::start(Behaviour::Ack);
    let opts = RelayOpts::new(
        MODE,
        "127.0.0.1:0".parse().unwrap(),
        sink.addr(),
        &scenario.journal(),
    );
    let mut relay = scenario.start_relay(&opts);
    let load = Workload::start(relay.addr(), WorkloadOpts::new("DOWN", SENDERS));
    for _ in 0..CYCLES {
        load.wait_for_acks(20, PROGRESS, &scenario);
        sink.kill();
        // The senders keep going while the receiver is down: a durable relay keeps ACKing
        // from its journal, a passthrough relay NAKs after its retries.
        load.wait_for_answers(2 * senders_u64(), PROGRESS, &scenario);
        sink.restart();
    }
    load.wait_for_acks(20, PROGRESS, &scenario);
    let history = load.finish();
    settle(&sink, &history, SETTLE);
    assert!(relay.alive(), "the relay died\n{}", scenario.diagnostics());
    let tally = classify(
        &format!("downstream killed and restarted x{CYCLES}"),
        MODE,
        &history,
        &sink.received(),
        None,
    );
    tally.report();
    // Each receiver kill loses the answers in flight, so those messages are sent again.
    tally.assert_safe(Some(duplicate_bound(CYCLES)), &scenario);
}

/// Fault 3: the receiver answers AE or AR for some ids. Those answers are final: the message
/// was delivered (dead-lettered by a durable relay), is not redelivered for ever, and a
/// durable relay had already given the sender its AA at journal commit.
#[test]
fn downstream_naks_are_final() {
    let scenario = Scenario::new("downstream AE-AR");
    let sink = Receiver::start(Behaviour::Ack);
    let rule: NakRule = Arc::new(|id: &str| match seq_of(id)? % 10 {
        3 => Some(Outcome::Error),
        7 => Some(Outcome::Rejected),
        _ => None,
    });
    sink.set_nak(rule.clone());
    let opts = RelayOpts::new(
        MODE,
        "127.0.0.1:0".parse().unwrap(),
        sink.addr(),
        &scenario.journal(),
    );
    let mut relay = scenario.start_relay(&opts);
    let mut work = WorkloadOpts::new("NAKS", SENDERS);
    work.per_sender = Some(60);
    let history = run_to_the_end(
        Workload::start(relay.addr(), work),
        &sink,
        &mut relay,
        &scenario,
    );

    let refused: Vec<_> = history
        .attempts
        .iter()
        .filter(|a| rule(&a.id).is_some())
        .collect();
    assert!(!refused.is_empty());
    for attempt in &refused {
        let downstream = rule(&attempt.id).unwrap();
        match (MODE, attempt.answer) {
            (Mode::Durable, Answer::Positive(_)) => {}
            (Mode::Passthrough, Answer::Negative(code)) if code.outcome() == downstream => {}
            (_, answer) => panic!(
                "{}: the receiver said {downstream:?}, the sender heard {answer:?} (ack mode {})",
                attempt.id,
                MODE.flag()
            ),
        }
    }
    // Not redelivered for ever: once settled, the refused ids' counts no longer move.
    let before = sink.received();
    thread::sleep(Duration::from_secs(2));
    let after = sink.received();
    for attempt in &refused {
        let id = &attempt.id;
        let (was, now) = (before.counts.get(id), after.counts.get(id));
        assert!(
            was.is_some(),
            "{id} (refused downstream) was never delivered"
        );
        assert_eq!(
            was, now,
            "{id} is still being redelivered after a final AE/AR"
        );
    }

    assert!(relay.alive(), "the relay died\n{}", scenario.diagnostics());
    let mut tally = classify(
        "downstream answers AE/AR for 20% of ids",
        MODE,
        &history,
        &after,
        Some(&rule),
    );
    if MODE == Mode::Durable {
        let ids: Vec<String> = refused.iter().map(|a| a.id.clone()).collect();
        tally.note = format!(
            "{} of {} refused ids found in dead-letter files",
            found_outside_segments(&scenario.journal(), &ids),
            ids.len()
        );
    }
    tally.report();
    tally.assert_safe(None, &scenario);
}

/// Fault 4: a slow receiver (every ACK delayed). Only correctness is checked, never timing.
#[test]
fn slow_downstream() {
    let scenario = Scenario::new("slow downstream");
    let sink = Receiver::start(Behaviour::Ack);
    sink.set_delay(Duration::from_millis(30));
    let opts = RelayOpts::new(
        MODE,
        "127.0.0.1:0".parse().unwrap(),
        sink.addr(),
        &scenario.journal(),
    );
    let mut relay = scenario.start_relay(&opts);
    let mut work = WorkloadOpts::new("SLOW", SENDERS);
    work.per_sender = Some(40);
    let history = run_to_the_end(
        Workload::start(relay.addr(), work),
        &sink,
        &mut relay,
        &scenario,
    );
    let tally = classify(
        "slow downstream (30 ms per ACK)",
        MODE,
        &history,
        &sink.received(),
        None,
    );
    tally.report();
    tally.assert_safe(None, &scenario);
    assert_eq!(
        tally.acked, tally.sent,
        "a slow receiver is no reason to refuse or drop a message"
    );
}

/// Fault 4b: every sender "misses" each ACK and sends the message again on a new connection
/// (as one whose ACK timed out would), against a relay with a duplicate window. The resend gets
/// the original answer and the receiver sees each message once.
#[test]
fn resent_messages_are_answered_from_the_duplicate_window() {
    let scenario = Scenario::new("resend after every ACK, duplicate window on");
    let sink = Receiver::start(Behaviour::Ack);
    let mut opts = RelayOpts::new(
        MODE,
        "127.0.0.1:0".parse().unwrap(),
        sink.addr(),
        &scenario.journal(),
    );
    opts.duplicate_window = Some("10min");
    let mut relay = scenario.start_relay(&opts);
    let mut work = WorkloadOpts::new("DUPW", SENDERS);
    work.per_sender = Some(40);
    work.resend_acked = true;
    let history = run_to_the_end(
        Workload::start(relay.addr(), work),
        &sink,
        &mut relay,
        &scenario,
    );

    // Every resend of an acked message was answered, positively, for the same id (an ACK
    // naming another id would be in `mismatched`, which `assert_safe` checks).
    let acked = history.acked();
    assert_eq!(
        history.resends.len(),
        acked.len(),
        "one resend per acked message"
    );
    for (id, answer) in &history.resends {
        let first = history.attempts.iter().find(|a| &a.id == id).unwrap();
        assert_eq!(
            *answer, first.answer,
            "{id}: the resend was answered {answer:?}, the message itself {:?}",
            first.answer
        );
    }
    let mut tally = classify(
        "sender resends every acked message (duplicate window on)",
        MODE,
        &history,
        &sink.received(),
        None,
    );
    tally.note = format!(
        "{} resends, each answered AA/CA again",
        history.resends.len()
    );
    tally.report();
    tally.assert_safe(Some(0), &scenario);
}

/// Fault 5: the journal's fdatasync starts failing (libfiu). Messages committed by a failing
/// sync get AE/CE, never AA; the relay stops accepting on that journal (every later message
/// gets AE/CE), logs an error and stays up; nothing acked before is lost.
#[test]
fn journal_sync_failure_naks_and_loses_nothing() {
    disk_failure(
        "journal_sync_failure_naks_and_loses_nothing",
        "FSYN",
        "posix/io/sync/*",
        "journal fdatasync fails",
    );
}

/// Fault 5 for writes: the journal's positioned writes (`pwrite`, `pwritev`, and their short
/// `reduce` variants) start failing. The same promises as for a failing sync. Sockets are
/// written with `write`/`send`, so the network is not touched.
#[test]
fn journal_write_failure_naks_and_loses_nothing() {
    disk_failure(
        "journal_write_failure_naks_and_loses_nothing",
        "FWRI",
        "posix/io/rw/pwrite*",
        "journal pwrite fails",
    );
}

/// Runs the relay under `fiu-run`, sends, makes every call matching `failpoint` fail (a libfiu
/// name, `*` at the end matching any suffix), sends more, heals the disk, sends more.
fn disk_failure(test: &str, tag: &'static str, failpoint: &str, fault: &str) {
    let Some(fiu) = Fiu::find(test) else {
        return;
    };
    let scenario = Scenario::new("disk failure");
    let sink = Receiver::start(Behaviour::Ack);
    let mut opts = RelayOpts::new(
        MODE,
        scenario.relay_addr(),
        sink.addr(),
        &scenario.journal(),
    );
    // libfiu wraps libc's functions through LD_PRELOAD. io_uring hands its writes and fsyncs
    // to the kernel directly, bypassing libc, so under io_uring the fault would never fire:
    // the epoll driver makes the journal's file I/O go through libc (write/fdatasync).
    opts.driver = "epoll";
    // A direct (O_DSYNC) write is its own sync: there is no fdatasync call to fail. The write
    // test covers that path; the sync test needs the page cache path to have a sync at all.
    opts.direct_io = failpoint.starts_with("posix/io/rw");
    // One worker, one journal: "every message after the failure gets AE/CE" is then exact.
    opts.workers = 1;
    let ctrl = scenario.dir().join("fiu-ctrl");
    opts.wrapper = fiu.wrapper(&ctrl);
    let mut relay = scenario.start_relay(&opts);
    let load = Workload::start(relay.addr(), WorkloadOpts::new(tag, SENDERS));
    load.wait_for_acks(50, PROGRESS, &scenario);

    let mark = scenario.log.mark();
    fiu.ctrl(&ctrl, relay.pid(), &format!("enable name={failpoint}"));
    let failing_since = Instant::now();
    load.wait_for_answers(10 * senders_u64(), PROGRESS, &scenario);
    assert!(
        relay.alive(),
        "the relay died when {failpoint} failed\n{}",
        scenario.diagnostics()
    );
    // The disk is fine again, but the journal that failed stays out of service.
    fiu.ctrl(&ctrl, relay.pid(), &format!("disable name={failpoint}"));
    load.wait_for_answers(5 * senders_u64(), PROGRESS, &scenario);
    let history = load.finish();
    assert!(
        relay.alive(),
        "the relay died after {failpoint} failed\n{}",
        scenario.diagnostics()
    );

    let after: Vec<_> = history
        .attempts
        .iter()
        .filter(|a| a.sent >= failing_since)
        .collect();
    let positive_after = after
        .iter()
        .filter(|a| matches!(a.answer, Answer::Positive(_)))
        .count();
    let negative_after = after
        .iter()
        .filter(|a| matches!(a.answer, Answer::Negative(_)))
        .count();
    if MODE == Mode::Durable {
        assert!(
            negative_after > 0,
            "no AE/CE although every call of {failpoint} failed from some point on: does \
             the journal's I/O go through those libc functions under --driver epoll? (io_uring \
             and raw system calls bypass libfiu)\n{}",
            scenario.diagnostics()
        );
        assert_eq!(
            positive_after,
            0,
            "AA/CA for messages sent after {failpoint} started failing ({negative_after} got \
             AE/CE): a journal that failed must not accept anything more\n{}",
            scenario.diagnostics()
        );
        assert!(
            scenario.log.since(mark).iter().any(|l| l.contains("ERROR")),
            "the journal failure was not logged at ERROR level\n{}",
            scenario.diagnostics()
        );
    }

    let mut note = format!("{negative_after} AE/CE after the failure");
    if !settle(&sink, &history, Duration::from_secs(10)) {
        // What the failed journal had committed may wait for a restart (with a working disk).
        note.push_str("; delivered after a restart");
        relay.kill();
        opts.wrapper.clear();
        relay = scenario.start_relay(&opts);
        settle(&sink, &history, SETTLE);
    }
    assert!(relay.alive(), "the relay died\n{}", scenario.diagnostics());
    let mut tally = classify(
        &format!("{fault} (libfiu, epoll)"),
        MODE,
        &history,
        &sink.received(),
        None,
    );
    tally.note = note;
    tally.report();
    tally.assert_safe(None, &scenario);
}

/// Fault 6: the relay is killed under load and a torn record is appended to the newest
/// segment of each worker's journal (noise; the start of a record cut short; a whole record
/// with a flipped byte; zeros), four times. Recovery must cut the tail off before it listens,
/// never deliver it, and not crash.
#[test]
fn torn_journal_tail_is_truncated() {
    const TEARS: [Tear; 4] = [
        Tear::Noise(10),
        Tear::PrefixOfLast(10),
        Tear::FlippedLast,
        Tear::Zeros(4096),
    ];
    let scenario = Scenario::new("torn journal tail");
    let mut sink = Receiver::start(Behaviour::Ack);
    let opts = RelayOpts::new(
        MODE,
        scenario.relay_addr(),
        sink.addr(),
        &scenario.journal(),
    );
    // With the receiver down, every acked message stays in the journal across all the crashes
    // and tears: a tear left in place, with new records appended after it, would hide those
    // records from the final recovery, and they would be LOST.
    if MODE == Mode::Durable {
        sink.kill();
    }
    let load = Workload::start(opts.listen, WorkloadOpts::new("TORN", SENDERS));
    let mut torn: Vec<Torn> = Vec::new();
    for (cycle, kind) in TEARS.into_iter().enumerate() {
        let mut relay = scenario.start_relay(&opts);
        assert_cut_off(&torn, &scenario);
        load.wait_for_acks(20, PROGRESS, &scenario);
        relay.kill();
        let segments = newest_segments(&scenario.journal());
        if MODE == Mode::Durable {
            assert!(
                !segments.is_empty(),
                "no worker-*/NNN.log segment in the journal\n{}",
                scenario.diagnostics()
            );
        }
        for (i, segment) in segments.iter().enumerate() {
            let seed = u64::try_from(cycle * 16 + i + 1).unwrap();
            let tail = tear(segment, kind, seed);
            scenario.log.push(format!(
                "[test] appended {kind:?} ({} bytes) at {} of {}",
                tail.tail.len(),
                tail.at,
                segment.display()
            ));
            torn.push(tail);
        }
    }
    // Recovery must not crash, and the journal must take new messages after the truncation.
    let mut relay = scenario.start_relay(&opts);
    assert_cut_off(&torn, &scenario);
    load.wait_for_acks(20, PROGRESS, &scenario);
    if MODE == Mode::Durable {
        sink.restart();
    }
    let history = load.finish();
    settle(&sink, &history, SETTLE);
    assert!(relay.alive(), "the relay died\n{}", scenario.diagnostics());
    let mut tally = classify(
        &format!("torn journal tail after kill -9 x{}", TEARS.len()),
        MODE,
        &history,
        &sink.received(),
        None,
    );
    tally.note = format!("{} torn tails appended", torn.len());
    tally.report();
    tally.assert_safe(Some(duplicate_bound(TEARS.len())), &scenario);
}

/// Every torn tail appended so far is gone once the relay listens again.
fn assert_cut_off(torn: &[Torn], scenario: &Scenario) {
    for tail in torn {
        if tail.tail.iter().all(|&b| b == 0) {
            // Zeros after the last record are how every preallocated segment ends: recovery
            // reads them as the clean end and leaves them. Harmless, because no record is
            // ever written into a segment found at start-up (a new one is begun); the tally
            // below still proves nothing acked was lost.
            continue;
        }
        assert!(
            !tail.still_there(),
            "the torn tail appended at {} of {} is still there after recovery\n{}",
            tail.at,
            tail.segment.display(),
            scenario.diagnostics()
        );
    }
}
