//! The durable ACK mode in process: the relay's AA once a message is in its journal, delivery
//! when the receiver returns or after a restart, in order and once each; segments prepared
//! ahead and reused, torn tails, dead letters, a full journal (NAK or pause), the duplicate
//! window, the journal's lock, fewer workers after a restart.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use mllp::ack::AckCode;
use mllp::frame::FramingConfig;
use relay::config::{Config, DuplicateWindowConfig, LinkPolicy, WhenJournalFull};
use relay::custody::dead_letters;
use relay::metrics::Stats;
use testkit::hl7::{oru, oru_enhanced};
use testkit::receiver::{Behaviour, Options, Receiver};
use testkit::{ReservedPort, TempDir};

use crate::support::{Client, PATIENCE, code_and_id, control_ids, durable_config, wait_until};

#[test]
fn durable_mode_acks_while_the_receiver_is_down_and_delivers_when_it_returns() {
    let journal = TempDir::new("down");
    let mut receiver = Receiver::down(Behaviour::Ack);
    let receiver_addr = receiver.addr();
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    let ids: Vec<String> = (0..20).map(|i| format!("DUR-{i}")).collect();
    for id in &ids {
        let ack = client.round_trip(&oru(id));
        assert_eq!(code_and_id(&ack), (AckCode::AA, id.clone()));
        assert!(
            String::from_utf8_lossy(&ack).contains("|R"),
            "the relay's own ACK: the receiver is down"
        );
    }
    assert_eq!(
        code_and_id(&client.round_trip(&oru_enhanced("DUR-E"))).0,
        AckCode::CA,
        "enhanced mode gets a commit ACK"
    );
    assert!(Stats::get(&stats.journal_commits) >= 1);
    assert_eq!(Stats::get(&stats.journal_messages), 21, "all queued");
    assert!(
        Stats::get(&stats.durable_retries) >= 1,
        "the receiver is down"
    );

    receiver.restart();
    wait_until("the receiver has every message", || receiver.frames() >= 21);
    let mut expected = ids;
    expected.push("DUR-E".into());
    assert_eq!(
        control_ids(&receiver.payloads()),
        expected,
        "one connection's messages arrive once each, in order"
    );
    wait_until("the queue is empty", || {
        Stats::get(&stats.journal_messages) == 0
    });
    relay.shutdown();
}

#[test]
fn durable_mode_delivers_after_a_restart_what_it_had_not_delivered() {
    let journal = TempDir::new("restart");
    let mut receiver = Receiver::down(Behaviour::Ack);
    let receiver_addr = receiver.addr();
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..30 {
        let id = format!("KEEP-{i}");
        assert_eq!(
            code_and_id(&client.round_trip(&oru(&id))),
            (AckCode::AA, id)
        );
    }
    drop(client);
    relay.shutdown();

    receiver.restart();
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    let stats = relay.stats().clone();
    assert_eq!(Stats::get(&stats.journal_recovered), 30);
    wait_until("the receiver has every message", || receiver.frames() >= 30);
    let expected: Vec<String> = (0..30).map(|i| format!("KEEP-{i}")).collect();
    assert_eq!(
        control_ids(&receiver.payloads()),
        expected,
        "in order, once each"
    );
    wait_until("the queue is empty", || {
        Stats::get(&stats.journal_messages) == 0
    });
    relay.shutdown();

    // Delivered means gone: a third start finds nothing to deliver.
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    assert_eq!(Stats::get(&relay.stats().journal_recovered), 0);
    relay.shutdown();
    assert_eq!(receiver.frames(), 30, "nothing delivered twice");
}

#[test]
fn durable_mode_with_a_single_link_delivers_in_the_order_it_acknowledged() {
    // One worker, one link: the relay's global order is its journal's order. The receiver is
    // down while six senders take turns, so everything queues; when it comes back, the order
    // it receives must be the order the AAs were given, across connections. (With the
    // per-core policy, connections are delivered on parallel lanes and may interleave.)
    let journal = TempDir::new("single-order");
    let mut receiver = Receiver::down(Behaviour::Ack);
    let receiver_addr = receiver.addr();
    let mut cfg = durable_config(receiver_addr, journal.path());
    cfg.workers = 1;
    cfg.downstreams[0].link = LinkPolicy::Single;
    let relay = relay::start(cfg).unwrap();
    let mut clients: Vec<Client> = (0..6)
        .map(|_| Client::connect(relay.listen_addr()))
        .collect();
    let mut acknowledged = Vec::new();
    for round in 0..10 {
        for (c, client) in clients.iter_mut().enumerate() {
            // Not simply round-robin: the next sender depends on the round, so that no
            // per-connection grouping can reproduce the order by accident.
            let id = format!("ORDER-{round}-{}", (c * 5 + round) % 6);
            assert_eq!(
                code_and_id(&client.round_trip(&oru(&id))),
                (AckCode::AA, id.clone())
            );
            acknowledged.push(id);
        }
    }
    receiver.restart();
    wait_until("the receiver has every message", || {
        receiver.frames() >= acknowledged.len()
    });
    drop(clients);
    relay.shutdown();
    assert_eq!(receiver.connections(), 1, "one downstream connection");
    assert_eq!(control_ids(&receiver.payloads()), acknowledged);
}

#[test]
fn durable_mode_writes_into_prepared_segments_and_recovers_through_their_zeros() {
    // Small segments: many rotations, most of them into a zero-filled spare prepared ahead
    // (the first may find it not ready yet). The receiver is down, so every record is a
    // message and every segment is kept.
    const SEGMENT: u64 = 4096;
    const SENT: usize = 200;
    let journal = TempDir::new("prepared");
    let mut receiver = Receiver::down(Behaviour::Ack);
    let receiver_addr = receiver.addr();
    let config = || {
        let mut cfg = durable_config(receiver_addr, journal.path());
        cfg.workers = 1;
        cfg.journal.as_mut().unwrap().segment_bytes = SEGMENT;
        cfg
    };
    let relay = relay::start(config()).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let dir = journal.path().join("worker-0");
    let mut sent = 0;
    // At least SENT messages, and then until the last one's rotation began a prepared
    // segment (on a slow machine the spare may not be ready for a few more).
    while sent < SENT || !newest_segment_is_untouched_spare(&dir, SEGMENT) {
        assert!(sent < SENT + 500, "no rotation found a prepared spare");
        let id = format!("PREP-{sent}");
        assert_eq!(
            code_and_id(&client.round_trip(&oru(&id))),
            (AckCode::AA, id)
        );
        sent += 1;
        if sent % 20 == 0 {
            // Pauses, as real traffic leaves them (and the spare's thread uses them).
            thread::sleep(Duration::from_millis(20));
        }
    }
    drop(client);
    relay.shutdown();

    // A segment begun from a spare ends in the spare's zeros until records overhang its end
    // (a message record ends with the message's last byte, a CR, never a zero). The one being
    // written at shutdown was begun from a spare: it holds fewer records than its size.
    let mut paths: Vec<PathBuf> = std::fs::read_dir(journal.path().join("worker-0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    paths.sort();
    assert!(paths.len() > 5, "{} segments", paths.len());
    let newest = std::fs::read(paths.last().unwrap()).unwrap();
    assert!(
        newest.len() as u64 >= SEGMENT && newest.last() == Some(&0),
        "the newest segment ({} bytes) was not prepared ahead",
        newest.len()
    );

    // A restart reads every segment to its zeros: nothing reported damaged, everything
    // delivered once, in order.
    receiver.restart();
    let expected: Vec<String> = (0..sent).map(|i| format!("PREP-{i}")).collect();
    assert_recovers_in_order(config(), &receiver, &expected);
}

/// Whether the newest segment in `dir` is a spare taken by a rotation and not written yet:
/// at least a segment long, and zeros only (a new file begun empty would be shorter; one
/// written into would not be all zeros).
fn newest_segment_is_untouched_spare(dir: &Path, segment: u64) -> bool {
    let bytes = std::fs::read(newest_segment(dir)).unwrap_or_default();
    bytes.len() as u64 >= segment && bytes.iter().all(|&b| b == 0)
}

/// Starts a relay with `config` over an existing journal and checks that it finds `expected`
/// undelivered, reports no damage, and delivers them to `receiver` once each, in order.
fn assert_recovers_in_order(config: Config, receiver: &Receiver, expected: &[String]) {
    let relay = relay::start(config).unwrap();
    let stats = relay.stats().clone();
    assert_eq!(Stats::get(&stats.journal_recovered), expected.len() as u64);
    assert_eq!(Stats::get(&stats.journal_damaged_tails), 0);
    wait_until("the receiver has every message", || {
        receiver.frames() >= expected.len()
    });
    relay.shutdown();
    assert_eq!(
        control_ids(&receiver.payloads()),
        expected,
        "in order, once each"
    );
}

#[test]
fn durable_mode_reuses_delivered_segments_and_recovers_through_their_earlier_records() {
    // Segments of 16 blocks: while the receiver answers, they fill (a block per commit: a
    // message, and the delivered record of the one before) and are delivered, and their files
    // are reused for later segments. The last message of each is marked delivered in the next
    // one, so a reused file holds an earlier message that it does not say was delivered (read
    // as this segment's, it would be delivered again: checked by stamping every commit
    // `Stamp::Plain`, which fails this test). Then the receiver stops answering: the messages
    // after that stay in the journal, in a reused file whose earlier records lie behind
    // theirs.
    const SEGMENT: u64 = 16 * 4096;
    const DELIVERED: usize = 200;
    const KEPT: usize = 5;
    let journal = TempDir::new("reuse");
    let config = |downstream| {
        let mut cfg = durable_config(downstream, journal.path());
        cfg.workers = 1;
        cfg.journal.as_mut().unwrap().segment_bytes = SEGMENT;
        cfg
    };
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    let mut send = |id: String| {
        assert_eq!(
            code_and_id(&client.round_trip(&oru(&id))),
            (AckCode::AA, id)
        );
    };
    // At least DELIVERED messages, and then until a rotation has just begun a segment in a
    // reused file (the counter moved since the message before), so that the kept messages
    // below go into it.
    let mut delivered = 0;
    let mut reused_before = 0;
    loop {
        send(format!("DONE-{delivered}"));
        delivered += 1;
        let reused = Stats::get(&stats.journal_segments_reused);
        if delivered >= DELIVERED && reused >= 3 && reused > reused_before {
            break;
        }
        reused_before = reused;
        assert!(delivered < DELIVERED + 2000, "{reused} segments reused");
        if delivered % 20 == 0 {
            // Pauses, as real traffic leaves them (and the spare's thread uses them).
            thread::sleep(Duration::from_millis(20));
        }
    }
    // Delivered as the relay counts it: the receiver records a message before it answers,
    // so "the receiver has it" alone could silence the receiver before its last ACK.
    wait_until("the relay has every message acknowledged", || {
        Stats::get(&stats.journal_messages) == 0
    });
    assert_eq!(receiver.frames(), delivered);
    receiver.set_behaviour(Behaviour::Silent);
    for i in 0..KEPT {
        send(format!("KEPT-{i}"));
    }
    drop(client);
    relay.shutdown();
    // The newest segment is a reused file: records of its earlier use fill its last block
    // (a zero-filled one would end in zeros, a new one would be short).
    let newest = newest_segment(&journal.path().join("worker-0"));
    let bytes = std::fs::read(&newest).unwrap();
    assert_eq!(bytes.len() as u64, SEGMENT, "{}", newest.display());
    assert!(
        bytes[bytes.len() - 4096..].iter().any(|&b| b != 0),
        "the newest segment was not a reused one"
    );

    // A restart reads each segment to the end of its own records: the kept messages, once
    // each and in order; nothing of the delivered ones, nothing reported damaged.
    let receiver = Receiver::start(Behaviour::Ack);
    let expected: Vec<String> = (0..KEPT).map(|i| format!("KEPT-{i}")).collect();
    assert_recovers_in_order(config(receiver.addr()), &receiver, &expected);
}

/// The segment of a worker's journal directory with the highest name.
fn newest_segment(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .expect("a segment")
}

#[test]
fn the_duplicate_window_remembers_journaled_messages_across_a_restart() {
    // The relay goes down after journaling a message (here: after delivering it too; the
    // segment holding it is still on disk). Its sender never saw the ACK and resends after
    // the restart: it gets an AA, and the receiver gets the message once.
    let journal = TempDir::new("window");
    let receiver = Receiver::start(Behaviour::Ack);
    let config = || {
        let mut cfg = durable_config(receiver.addr(), journal.path());
        cfg.listeners[0].duplicates = Some(DuplicateWindowConfig {
            max_age: Duration::from_secs(600),
            max_entries: 1000,
        });
        cfg
    };
    let relay = relay::start(config()).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    assert_eq!(
        code_and_id(&client.round_trip(&oru("WIN-1"))),
        (AckCode::AA, "WIN-1".to_owned())
    );
    wait_until("the receiver has the message", || receiver.frames() > 0);
    drop(client);
    relay.shutdown();

    let relay = relay::start(config()).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    let resent = client.round_trip(&oru("WIN-1"));
    assert_eq!(code_and_id(&resent), (AckCode::AA, "WIN-1".to_owned()));
    assert_eq!(Stats::get(&stats.listener(0).duplicates_answered), 1);
    // A new message is taken as usual.
    assert_eq!(
        code_and_id(&client.round_trip(&oru("WIN-2"))),
        (AckCode::AA, "WIN-2".to_owned())
    );
    wait_until("the receiver has the new message", || {
        receiver.frames() >= 2
    });
    drop(client);
    relay.shutdown();
    assert_eq!(control_ids(&receiver.payloads()), ["WIN-1", "WIN-2"]);
}

#[test]
fn durable_mode_cuts_a_torn_journal_tail_and_delivers_everything_acknowledged() {
    let journal = TempDir::new("torn");
    let mut receiver = Receiver::down(Behaviour::Ack);
    let receiver_addr = receiver.addr();
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..5 {
        let id = format!("TORN-{i}");
        assert_eq!(
            code_and_id(&client.round_trip(&oru(&id))),
            (AckCode::AA, id)
        );
    }
    drop(client);
    relay.shutdown();
    // A crash mid-write leaves a partial record: the first bytes of a copy of a real one.
    let mut segments: Vec<_> = std::fs::read_dir(journal.path().join("worker-0"))
        .unwrap()
        .chain(std::fs::read_dir(journal.path().join("worker-1")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    segments.sort();
    let newest = segments
        .last()
        .expect("a segment with the messages")
        .clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let torn = bytes[..40].to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(&newest, &bytes).unwrap();

    receiver.restart();
    let relay = relay::start(durable_config(receiver_addr, journal.path())).unwrap();
    let stats = relay.stats().clone();
    assert_eq!(Stats::get(&stats.journal_damaged_tails), 1);
    assert_eq!(Stats::get(&stats.journal_recovered), 5);
    wait_until("the receiver has every message", || receiver.frames() >= 5);
    relay.shutdown();
    let expected: Vec<String> = (0..5).map(|i| format!("TORN-{i}")).collect();
    assert_eq!(
        control_ids(&receiver.payloads()),
        expected,
        "once each, in order"
    );
}

#[test]
fn durable_mode_keeps_refused_messages_as_dead_letters_and_replays_them() {
    let journal = TempDir::new("dead");
    let refusing = Receiver::start(Behaviour::Code(AckCode::AR));
    let relay = relay::start(durable_config(refusing.addr(), journal.path())).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    for id in ["REFUSED-1", "REFUSED-2"] {
        assert_eq!(
            code_and_id(&client.round_trip(&oru(id))),
            (AckCode::AA, id.to_string()),
            "the relay took custody; the receiver's later answer is its own business"
        );
    }
    wait_until("both are dead letters", || {
        Stats::get(&stats.dead_letters) == 2
    });
    assert_eq!(refusing.frames(), 2, "a final answer is not retried");
    let (letters, warnings) = dead_letters::read_all(journal.path()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut ids: Vec<String> = letters.iter().map(|l| l.control_id()).collect();
    ids.sort();
    assert_eq!(ids, ["REFUSED-1", "REFUSED-2"]);
    assert!(letters.iter().all(|l| l.answer_summary().starts_with("AR")));

    // Replay needs the relay stopped (it rewrites the files under the journal's lock). The
    // receiver they go to now negotiated other frame bytes (STX ... ETX).
    let framing = FramingConfig::negotiated(Some(0x02), &[0x03]).unwrap();
    let options = Options {
        framing: Some(framing),
        ..Options::default()
    };
    let accepting = Receiver::with(Behaviour::Ack, options);
    let replay = |report: &mut dyn FnMut(&dead_letters::DeadLetter, &str)| {
        dead_letters::replay(journal.path(), accepting.addr(), framing, PATIENCE, report)
    };
    let busy = replay(&mut |_, _| {});
    assert!(busy.is_err(), "the running relay holds the lock");
    relay.shutdown();
    let mut outcomes = Vec::new();
    let summary = replay(&mut |l, o| outcomes.push(format!("{} {o}", l.control_id()))).unwrap();
    assert_eq!((summary.accepted, summary.kept), (2, 0), "{outcomes:?}");
    assert_eq!(accepting.frames(), 2);
    let (left, _) = dead_letters::read_all(journal.path()).unwrap();
    assert!(left.is_empty(), "accepted dead letters are removed");
}

#[test]
fn durable_mode_naks_when_the_journal_is_full_and_never_drops() {
    let journal = TempDir::new("full");
    let down = ReservedPort::new();
    let mut cfg = durable_config(down.addr(), journal.path());
    cfg.workers = 1;
    if let Some(j) = cfg.journal.as_mut() {
        j.max_bytes = 2_000;
    }
    let relay = relay::start(cfg).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    let mut codes = Vec::new();
    for i in 0..20 {
        codes.push(code_and_id(&client.round_trip(&oru(&format!("FULL-{i}")))).0);
    }
    let accepted = codes.iter().filter(|c| **c == AckCode::AA).count();
    assert!(accepted >= 1, "{codes:?}");
    assert!(
        codes[accepted..].iter().all(|c| *c == AckCode::AE),
        "once full, every message gets an AE: {codes:?}"
    );
    assert_eq!(Stats::get(&stats.journal_full_naks), (20 - accepted) as u64);
    assert_eq!(Stats::get(&stats.journal_messages), accepted as u64);
    let ack = client.round_trip(&oru("FULL-LAST"));
    assert!(
        String::from_utf8_lossy(&ack).contains("ERR|")
            && String::from_utf8_lossy(&ack).contains("207"),
        "ERR 207 names the problem: {}",
        String::from_utf8_lossy(&ack)
    );
    relay.shutdown();
}

#[test]
fn a_journal_is_used_by_one_relay_at_a_time() {
    let journal = TempDir::new("lock");
    let down = ReservedPort::new();
    let first = relay::start(durable_config(down.addr(), journal.path())).unwrap();
    let second = relay::start(durable_config(down.addr(), journal.path()));
    let error = second.expect_err("the journal is in use").to_string();
    assert!(error.contains("in use"), "{error}");
    first.shutdown();
}

#[test]
fn fewer_workers_after_a_restart_still_deliver_every_message() {
    let journal = TempDir::new("shrink");
    let mut receiver = Receiver::down(Behaviour::Ack);
    let receiver_addr = receiver.addr();
    let mut cfg = durable_config(receiver_addr, journal.path());
    cfg.workers = 3;
    let relay = relay::start(cfg).unwrap();
    // Several connections, so that the kernel spreads them over the workers.
    let mut clients: Vec<Client> = (0..6)
        .map(|_| Client::connect(relay.listen_addr()))
        .collect();
    let mut sent = 0;
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..5 {
            let id = format!("SHRINK-{c}-{i}");
            assert_eq!(
                code_and_id(&client.round_trip(&oru(&id))),
                (AckCode::AA, id)
            );
            sent += 1;
        }
    }
    drop(clients);
    relay.shutdown();

    receiver.restart();
    let mut cfg = durable_config(receiver_addr, journal.path());
    cfg.workers = 1;
    let relay = relay::start(cfg).unwrap();
    assert_eq!(
        Stats::get(&relay.stats().journal_recovered),
        sent as u64,
        "every worker's messages are in the remaining worker's journal"
    );
    wait_until("the receiver has every message", || {
        receiver.frames() >= sent
    });
    relay.shutdown();
    let mut got = control_ids(&receiver.payloads());
    assert_eq!(got.len(), sent, "once each");
    // Each connection's order is kept.
    for c in 0..6 {
        let prefix = format!("SHRINK-{c}-");
        let order: Vec<&String> = got.iter().filter(|id| id.starts_with(&prefix)).collect();
        let expected: Vec<String> = (0..5).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(order, expected.iter().collect::<Vec<_>>());
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), sent);
    assert!(
        !journal.path().join("worker-2").exists(),
        "the surplus journal is gone"
    );
}

#[test]
fn durable_mode_pauses_a_sender_while_the_journal_is_full_and_resumes_when_it_drains() {
    let journal = TempDir::new("pause");
    let mut receiver = Receiver::down(Behaviour::Ack);
    let receiver_addr = receiver.addr();
    let mut cfg = durable_config(receiver_addr, journal.path());
    cfg.workers = 1;
    if let Some(j) = cfg.journal.as_mut() {
        // The cap equals the segment size: space comes back only when the segment being
        // written is sealed early, once everything in it is delivered.
        j.max_bytes = 2_000;
        j.segment_bytes = 2_000;
        j.when_full = WhenJournalFull::Pause;
    }
    let relay = relay::start(cfg).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    let mut accepted = 0;
    loop {
        let id = format!("PAUSE-{accepted}");
        client.send(&oru(&id));
        match client.receive_within(Duration::from_millis(300)) {
            Some(ack) => {
                assert_eq!(code_and_id(&ack), (AckCode::AA, id));
                accepted += 1;
                assert!(accepted < 100, "the journal never filled");
            }
            None => break,
        }
    }
    assert!(accepted >= 1);
    assert_eq!(
        Stats::get(&stats.journal_full_naks),
        0,
        "paused, not refused"
    );
    // The receiver comes back: the queue drains, space returns, the paused message is taken.
    receiver.restart();
    let ack = client.receive().expect("the paused message's ACK");
    assert_eq!(
        code_and_id(&ack),
        (AckCode::AA, format!("PAUSE-{accepted}"))
    );
    for i in accepted + 1..accepted + 20 {
        let id = format!("PAUSE-{i}");
        assert_eq!(
            code_and_id(&client.round_trip(&oru(&id))),
            (AckCode::AA, id)
        );
    }
    wait_until("every message is delivered", || {
        receiver.frames() >= accepted + 20
    });
    relay.shutdown();
    let expected: Vec<String> = (0..accepted + 20).map(|i| format!("PAUSE-{i}")).collect();
    assert_eq!(
        control_ids(&receiver.payloads()),
        expected,
        "once each, in order"
    );
}
