//! Passthrough ACK mode over plain TCP: the receiver's own ACK back to the sender, byte for
//! byte, and every way a receiver or a sender can misbehave (down, NAKing, silent, answering
//! for another message, not reading, closing after each message, ACKs in pieces; frames
//! without a header, garbage, trickles, oversize and slow frames), and a draining shutdown.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mllp::ack::AckCode;
use mllp::frame::FramingConfig;
use netio::runtime::Driver;
use relay::config::OnDownstreamFailure;
use relay::metrics::{DownstreamFailureKind, Stats};
use testkit::ReservedPort;
use testkit::hl7::{oru, oru_enhanced};
use testkit::receiver::{Behaviour, Receiver, ack_for};

use crate::support::{Client, PATIENCE, code_and_id, config, wait_until};

#[test]
fn passthrough_returns_the_receivers_ack_byte_for_byte() {
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let msg = oru("MSG-1");
    let ack = client.round_trip(&msg);
    assert_eq!(
        ack,
        ack_for(&msg, AckCode::AA),
        "the receiver's ACK, unchanged"
    );
    assert_eq!(receiver.payloads(), [msg], "the message, unchanged");
    relay.shutdown();
}

/// The epoll fallback carries the same traffic (io_uring is what `Auto` picks on this kernel).
#[test]
fn epoll_driver_relays_and_drains_too() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    cfg.driver = Driver::Epoll;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..20 {
        assert_eq!(
            code_and_id(&client.round_trip(&oru(&format!("EPOLL-{i}")))).0,
            AckCode::AA
        );
    }
    let mut idle = Client::connect(relay.listen_addr());
    relay.shutdown();
    assert_eq!(
        idle.receive(),
        None,
        "idle connections are closed at shutdown"
    );
}

#[test]
fn messages_keep_their_order_on_a_connection() {
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let sent: Vec<Vec<u8>> = (0..50).map(|i| oru(&format!("ORDER-{i}"))).collect();
    for (i, msg) in sent.iter().enumerate() {
        assert_eq!(
            code_and_id(&client.round_trip(msg)),
            (AckCode::AA, format!("ORDER-{i}"))
        );
    }
    assert_eq!(receiver.payloads(), sent);
    // Pipelined: all sent before any ACK is read; answered in order.
    for msg in &sent {
        client.send(msg);
    }
    for i in 0..sent.len() {
        assert_eq!(
            code_and_id(&client.receive().unwrap()).1,
            format!("ORDER-{i}")
        );
    }
    relay.shutdown();
}

#[test]
fn unreachable_receiver_gives_ae_with_err_207() {
    let down = ReservedPort::new();
    let relay = relay::start(config(down.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let ack = client.round_trip(&oru("DOWN-1"));
    assert_eq!(code_and_id(&ack), (AckCode::AE, "DOWN-1".to_string()));
    let text = String::from_utf8_lossy(&ack);
    assert!(
        text.contains("ERR|||207^Application internal error^HL70357|E"),
        "{text}"
    );
    assert!(text.contains("cannot connect"), "{text}");
    // Enhanced mode: CE, not AE.
    let ack = client.round_trip(&oru_enhanced("DOWN-2"));
    assert_eq!(code_and_id(&ack), (AckCode::CE, "DOWN-2".to_string()));
    let stats = relay.stats().clone();
    assert_eq!(Stats::get(&stats.naks_downstream_failed), 2);
    assert_eq!(
        stats.downstream_failures(DownstreamFailureKind::Connect),
        4,
        "two attempts per message"
    );
    let mock = stats.downstream(0).unwrap();
    assert_eq!(
        mock.failures(DownstreamFailureKind::Connect),
        4,
        "and per downstream"
    );
    assert!(!mock.is_up());
    relay.shutdown();
}

#[test]
fn receivers_negative_acks_pass_through() {
    for code in [AckCode::AE, AckCode::AR] {
        let receiver = Receiver::start(Behaviour::Code(code));
        let relay = relay::start(config(receiver.addr())).unwrap();
        let mut client = Client::connect(relay.listen_addr());
        let msg = oru("NEG-1");
        assert_eq!(client.round_trip(&msg), ack_for(&msg, code));
        assert_eq!(receiver.frames(), 1, "an answer is not a failure: no retry");
        relay.shutdown();
    }
}

#[test]
fn an_ack_for_another_message_is_not_an_ack() {
    let receiver = Receiver::start(Behaviour::WrongControlId);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let ack = client.round_trip(&oru("MINE-1"));
    assert_eq!(code_and_id(&ack), (AckCode::AE, "MINE-1".to_string()));
    assert!(String::from_utf8_lossy(&ack).contains("SOMEONE-ELSE"));
    let stats = relay.stats().clone();
    assert_eq!(
        stats.downstream_failures(DownstreamFailureKind::WrongControlId),
        2
    );
    // Each bad exchange closed its connection: two attempts, two connections.
    assert_eq!(receiver.connections(), 2);
    relay.shutdown();
}

#[test]
fn silent_receiver_times_out() {
    let receiver = Receiver::start(Behaviour::Silent);
    let mut cfg = config(receiver.addr());
    cfg.downstreams[0].ack_timeout = Duration::from_millis(300);
    cfg.downstreams[0].retries = 0;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let started = Instant::now();
    let ack = client.round_trip(&oru("SLOW-1"));
    assert_eq!(code_and_id(&ack), (AckCode::AE, "SLOW-1".to_string()));
    assert!(String::from_utf8_lossy(&ack).contains("no ACK"));
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(
        relay
            .stats()
            .downstream_failures(DownstreamFailureKind::AckTimeout),
        1
    );
    relay.shutdown();
}

#[test]
fn a_receiver_that_stops_reading_fails_the_send_in_time() {
    // Accepts, then never reads: the relay's write of a message bigger than both socket
    // buffers can never finish, so the write deadline (the ACK timeout) must cancel it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = held.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            holder.lock().unwrap().push(stream);
        }
    });
    let mut cfg = config(addr);
    cfg.listeners[0].framing = FramingConfig::MLLP.with_max_frame_len(16 << 20).unwrap();
    cfg.downstreams[0].ack_timeout = Duration::from_millis(300);
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let mut big = oru("STUCK-1");
    big.extend(std::iter::repeat_n(b'x', 15 << 20));
    big.push(b'\r');
    let started = Instant::now();
    let ack = client.round_trip(&big);
    assert_eq!(code_and_id(&ack), (AckCode::AE, "STUCK-1".to_string()));
    assert!(started.elapsed() < PATIENCE);
    // Both attempts (one retry) failed while sending, each on its own connection.
    assert_eq!(
        relay
            .stats()
            .downstream_failures(DownstreamFailureKind::Send),
        2
    );
    assert_eq!(held.lock().unwrap().len(), 2);
    // The worker is not stuck: a small message is still relayed, with its own deadline.
    let ack = client.round_trip(&oru("AFTER-1"));
    assert_eq!(code_and_id(&ack).1, "AFTER-1");
    relay.shutdown();
}

#[test]
fn receiver_that_closes_after_each_message() {
    let receiver = Receiver::start(Behaviour::CloseAfterEach);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..5 {
        let ack = client.round_trip(&oru(&format!("ONE-{i}")));
        assert_eq!(code_and_id(&ack), (AckCode::AA, format!("ONE-{i}")));
    }
    assert_eq!(receiver.frames(), 5, "each message delivered once");
    assert_eq!(receiver.connections(), 5);
    relay.shutdown();
}

#[test]
fn acks_in_pieces_and_without_final_cr_are_accepted() {
    let receiver = Receiver::start(Behaviour::SloppyPieces);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    for i in 0..3 {
        let ack = client.round_trip(&oru(&format!("PIECE-{i}")));
        assert_eq!(code_and_id(&ack), (AckCode::AA, format!("PIECE-{i}")));
    }
    assert_eq!(receiver.connections(), 1, "the connection was reused");
    relay.shutdown();
}

#[test]
fn frame_without_msh_gets_ar_and_is_not_forwarded() {
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let ack = client.round_trip(b"PID|1||12345\r");
    assert_eq!(code_and_id(&ack), (AckCode::AR, String::new()));
    assert!(String::from_utf8_lossy(&ack).contains("ERR|||100^"));
    // The connection stays usable.
    assert_eq!(
        code_and_id(&client.round_trip(&oru("AFTER-1"))).0,
        AckCode::AA
    );
    assert_eq!(receiver.payloads(), [oru("AFTER-1")]);
    assert_eq!(Stats::get(&relay.stats().rejects_bad_header), 1);
    relay.shutdown();
}

/// `oru(id)` with its MSH-2 as escaped source text copied into a file writes it: `^~\\&`.
fn oru_with_doubled_backslash(id: &str) -> Vec<u8> {
    let message = oru(id);
    let rest = message
        .strip_prefix(b"MSH|^~\\&|")
        .expect("oru has the usual MSH-2");
    [b"MSH|^~\\\\&|".as_slice(), rest].concat()
}

/// A header whose MSH-2 repeats a delimiter is read past, not refused: forwarded byte for byte
/// with the receiver's ACK passed back, counted by code, and where the relay answers itself
/// (local mode) its ACK carries each delimiter once. A frame without a usable MSH-1 still gets
/// AR.
#[test]
fn an_unusual_msh2_is_forwarded_and_counted_not_refused() {
    use mllp::hl7::HeaderEventCode;
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let sent = oru_with_doubled_backslash("MSH2-1");
    let ack = client.round_trip(&sent);
    assert_eq!(
        ack,
        ack_for(&sent, AckCode::AA),
        "the receiver's ACK, unchanged"
    );
    let bad_separator = b"MSH ^~\\&|LAB|HOSP|||20261122||ORU^R01|SPACE-1|P|2.5.1\r";
    assert_eq!(
        code_and_id(&client.round_trip(bad_separator)).0,
        AckCode::AR
    );
    assert_eq!(
        receiver.payloads(),
        [sent],
        "the message, unchanged; the AR'd frame not at all"
    );
    let stats = relay.stats();
    assert_eq!(
        stats.header_events(HeaderEventCode::Msh2RepeatedDelimiter),
        1
    );
    assert_eq!(Stats::get(&stats.rejects_bad_header), 1);
    relay.shutdown();

    let mut cfg = config(receiver.addr());
    cfg.listeners[0].ack_mode = relay::config::AckMode::Local;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let ack = client.round_trip(&oru_with_doubled_backslash("MSH2-2"));
    assert_eq!(code_and_id(&ack), (AckCode::AA, "MSH2-2".to_string()));
    assert!(ack.starts_with(b"MSH|^~\\&|"), "{}", ack.escape_ascii());
    relay.shutdown();
}

/// `oru(id)` with MSH-10 emptied.
fn oru_without_control_id() -> Vec<u8> {
    let message = oru("GONE");
    let at = message
        .windows(6)
        .position(|w| w == b"|GONE|")
        .expect("oru carries its id in MSH-10");
    [&message[..=at], &message[at + 5..]].concat()
}

/// A message with an empty MSH-10 is forwarded by default (the receiver decides; its ACK's
/// empty MSA-2 names it) and counted; `missing_control_id = reject` answers AR with ERR 101
/// instead and forwards nothing.
#[test]
fn a_message_without_msh_10_is_forwarded_or_refused_as_the_listener_says() {
    let sent = oru_without_control_id();
    assert_eq!(testkit::hl7::control_id(&sent).as_deref(), Some(""));
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    assert_eq!(client.round_trip(&sent), ack_for(&sent, AckCode::AA));
    assert_eq!(receiver.payloads(), std::slice::from_ref(&sent));
    assert_eq!(Stats::get(&relay.stats().missing_control_id), 1);
    relay.shutdown();

    let mut cfg = config(receiver.addr());
    cfg.listeners[0].missing_control_id = relay::config::MissingControlId::Reject;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let ack = client.round_trip(&sent);
    assert_eq!(code_and_id(&ack), (AckCode::AR, String::new()));
    let text = String::from_utf8_lossy(&ack);
    assert!(
        text.contains("ERR|||101^Required field missing^HL70357|E"),
        "{text}"
    );
    assert!(
        text.contains("MSH-10 (message control ID) is empty"),
        "{text}"
    );
    assert_eq!(receiver.payloads().len(), 1, "nothing more forwarded");
    assert_eq!(Stats::get(&relay.stats().missing_control_id), 1);
    relay.shutdown();
}

/// `normalize_segment_terminators`: a message whose segments end with LF or CRLF reaches the
/// receiver with CRs, a line break inside OBX-5 text kept, and is counted; a CR-terminated one
/// passes unchanged and uncounted. Off (the default), the LF message passes byte for byte.
#[test]
fn a_listener_can_rewrite_lf_segment_terminators_to_cr() {
    let lf = b"MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20261122103000||ORU^R01^ORU_R01|LF-1|P|2.5.1\r\n\
OBX|1|TX|NOTE||line one\nline two\nPID|1||4711\n"
        .to_vec();
    let repaired = b"MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20261122103000||ORU^R01^ORU_R01|LF-1|P|2.5.1\r\
OBX|1|TX|NOTE||line one\nline two\rPID|1||4711\r"
        .to_vec();
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].normalize_segment_terminators = true;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    assert_eq!(
        code_and_id(&client.round_trip(&lf)),
        (AckCode::AA, "LF-1".into())
    );
    let clean = oru("CR-1");
    assert_eq!(client.round_trip(&clean), ack_for(&clean, AckCode::AA));
    assert_eq!(receiver.payloads(), [repaired, clean]);
    assert_eq!(Stats::get(&relay.stats().segment_terminators_repaired), 1);
    relay.shutdown();

    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    assert_eq!(code_and_id(&client.round_trip(&lf)).0, AckCode::AA);
    assert_eq!(receiver.payloads(), [lf]);
    assert_eq!(Stats::get(&relay.stats().segment_terminators_repaired), 0);
    relay.shutdown();
}

/// Negotiated framing: a listener framed `0x02 … 0x03` and a downstream framed
/// `0x0B … 0x1C` carry the message and its ACK unchanged, each side in its own bytes; a sender
/// framing with MLLP's bytes on that listener is closed as a framing error.
#[test]
fn custom_frame_bytes_on_the_listener_and_the_downstream() {
    let downstream_framing = FramingConfig::new(0x0B, &[0x1C]).unwrap();
    let receiver = Receiver::with(
        Behaviour::Ack,
        testkit::receiver::Options {
            framing: Some(downstream_framing),
            ..Default::default()
        },
    );
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].framing = FramingConfig::new(0x02, &[0x03]).unwrap();
    cfg.downstreams[0].framing = downstream_framing;
    let relay = relay::start(cfg).unwrap();

    let sent = oru("STX-1");
    let mut stream = std::net::TcpStream::connect(relay.listen_addr()).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(&[[0x02].as_slice(), &sent, &[0x03]].concat())
        .unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while answer.last() != Some(&0x03) {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the ACK, framed 0x02 … 0x03"
        );
        answer.push(byte[0]);
    }
    assert_eq!(answer.first(), Some(&0x02));
    assert_eq!(&answer[1..answer.len() - 1], ack_for(&sent, AckCode::AA));
    assert_eq!(receiver.payloads(), [sent]);

    let mut mllp = std::net::TcpStream::connect(relay.listen_addr()).unwrap();
    mllp.set_read_timeout(Some(PATIENCE)).unwrap();
    mllp.write_all(&testkit::hl7::framed(&oru("VT-1"))).unwrap();
    assert_eq!(mllp.read(&mut byte).unwrap(), 0, "closed, no answer");
    assert_eq!(Stats::get(&relay.stats().framing_errors), 1);
    assert_eq!(receiver.frames(), 1, "nothing more forwarded");
    relay.shutdown();
}

#[test]
fn framing_garbage_closes_only_that_connection() {
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut good = Client::connect(relay.listen_addr());
    let mut bad = Client::connect(relay.listen_addr());
    bad.io.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(bad.receive(), None, "closed");
    assert_eq!(code_and_id(&good.round_trip(&oru("GOOD-1"))).0, AckCode::AA);
    assert_eq!(Stats::get(&relay.stats().framing_errors), 1);
    relay.shutdown();
}

#[test]
fn a_frame_written_one_byte_at_a_time() {
    let receiver = Receiver::start(Behaviour::Ack);
    let relay = relay::start(config(receiver.addr())).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let msg = oru("TRICKLE-1");
    let mut framed = Vec::new();
    FramingConfig::MLLP.encode(&msg, &mut framed).unwrap();
    for byte in &framed {
        client.io.write_all(std::slice::from_ref(byte)).unwrap();
    }
    assert_eq!(
        code_and_id(&client.receive().unwrap()),
        (AckCode::AA, "TRICKLE-1".to_string())
    );
    assert_eq!(receiver.payloads(), [msg]);
    relay.shutdown();
}

#[test]
fn on_failure_close_closes_instead_of_naking() {
    let down = ReservedPort::new();
    let mut cfg = config(down.addr());
    cfg.listeners[0].on_downstream_failure = OnDownstreamFailure::Close;
    cfg.downstreams[0].retries = 0;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    client.send(&oru("CLOSE-1"));
    assert_eq!(client.receive(), None);
    assert_eq!(Stats::get(&relay.stats().closes_downstream_failed), 1);
    relay.shutdown();
}

#[test]
fn oversize_frame_closes_the_connection() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].framing = FramingConfig::MLLP.with_max_frame_len(1000).unwrap();
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let mut big = oru("BIG-1");
    big.extend(std::iter::repeat_n(b'x', 5000));
    client.send(&big);
    assert_eq!(client.receive(), None);
    assert!(receiver.payloads().is_empty());
    relay.shutdown();
}

#[test]
fn slow_frame_hits_the_frame_deadline() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].frame_deadline = Duration::from_millis(300);
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    client.io.write_all(b"\x0bMSH|^~\\&|").unwrap();
    let started = Instant::now();
    // Keep trickling: an idle timeout alone would never fire.
    let mut closed = false;
    while started.elapsed() < PATIENCE {
        if client.io.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
        let mut probe = [0u8; 1];
        client.tcp.set_nonblocking(true).unwrap();
        let read = client.tcp.read(&mut probe);
        client.tcp.set_nonblocking(false).unwrap();
        if matches!(read, Ok(0)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the relay closed the connection");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(Stats::get(&relay.stats().frame_deadline_expired), 1);
    relay.shutdown();
}

#[test]
fn shutdown_finishes_the_message_in_flight() {
    let receiver = Receiver::start(Behaviour::Ack);
    receiver.set_delay(Duration::from_millis(300));
    let relay = relay::start(config(receiver.addr())).unwrap();
    let addr = relay.listen_addr();
    let client = thread::spawn(move || {
        let mut client = Client::connect(addr);
        let ack = client.round_trip(&oru("DRAIN-1"));
        (code_and_id(&ack), client.receive())
    });
    // Wait (bounded) until the receiver holds the message, then shut down mid-flight.
    wait_until("the message reached the receiver", || receiver.frames() > 0);
    let idle = Client::connect(addr);
    relay.shutdown();
    let ((ack, id), after) = client.join().unwrap();
    assert_eq!(
        (ack, id.as_str()),
        (AckCode::AA, "DRAIN-1"),
        "the in-flight message got its ACK"
    );
    assert_eq!(after, None, "then the connection was closed");
    drop(idle);
}

#[test]
fn a_late_ack_for_a_message_that_needed_none_is_not_the_next_ones() {
    // The receiver answers every message, even one whose MSH-15 asks for no ACK, and slowly:
    // its answer to that one arrives after the relay has written the next message on the
    // same pooled connection.
    let receiver = Receiver::start(Behaviour::Ack);
    receiver.set_delay(Duration::from_millis(50));
    let mut cfg = config(receiver.addr());
    cfg.workers = 1;
    cfg.downstreams[0].retries = 0;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let unanswered = String::from_utf8(oru("LATE-1"))
        .unwrap()
        .replacen("|P|2.5.1\r", "|P|2.5.1|||NE|NE\r", 1)
        .into_bytes();
    client.send(&unanswered);
    let next = oru("LATE-2");
    let ack = client.round_trip(&next);
    assert_eq!(
        ack,
        ack_for(&next, AckCode::AA),
        "the receiver's own ACK for LATE-2"
    );
    assert_eq!(
        receiver.payloads(),
        [unanswered, next],
        "each delivered once"
    );
    assert_eq!(Stats::get(&relay.stats().naks_downstream_failed), 0);
    relay.shutdown();
}
