//! The local ACK mode: the relay's own ACK on receipt, forwarding behind it in order, and
//! what it loses counted.

use std::time::Duration;

use mllp::ack::AckCode;
use relay::config::AckMode;
use relay::metrics::Stats;
use testkit::ReservedPort;
use testkit::hl7::{oru, oru_enhanced};
use testkit::receiver::{Behaviour, Receiver};

use crate::support::{Client, code_and_id, config};

#[test]
fn local_mode_acks_on_receipt_and_forwards_in_order() {
    // A slow receiver: in local mode the sender does not wait for it.
    let receiver = Receiver::start(Behaviour::Ack);
    receiver.set_delay(Duration::from_millis(20));
    let mut cfg = config(receiver.addr());
    cfg.listeners[0].ack_mode = AckMode::Local;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let sent: Vec<Vec<u8>> = (0..10).map(|i| oru(&format!("LOCAL-{i}"))).collect();
    for (i, msg) in sent.iter().enumerate() {
        let ack = client.round_trip(msg);
        assert_eq!(code_and_id(&ack), (AckCode::AA, format!("LOCAL-{i}")));
        assert!(
            String::from_utf8_lossy(&ack).contains("|R"),
            "a relay-generated ACK"
        );
    }
    let ack = client.round_trip(&oru_enhanced("LOCAL-E"));
    assert_eq!(
        code_and_id(&ack).0,
        AckCode::CA,
        "enhanced mode gets a commit ACK"
    );
    // Shutdown waits for the forwarder to empty its queue.
    relay.shutdown();
    let mut expected = sent;
    expected.push(oru_enhanced("LOCAL-E"));
    assert_eq!(
        receiver.payloads(),
        expected,
        "every message forwarded, in order"
    );
}

#[test]
fn local_mode_counts_what_it_loses() {
    let down = ReservedPort::new();
    let mut cfg = config(down.addr());
    cfg.listeners[0].ack_mode = AckMode::Local;
    cfg.downstreams[0].retries = 0;
    cfg.shutdown_grace = Duration::from_secs(5);
    let relay = relay::start(cfg).unwrap();
    let stats = relay.stats().clone();
    let mut client = Client::connect(relay.listen_addr());
    assert_eq!(
        code_and_id(&client.round_trip(&oru("DOOMED-1"))).0,
        AckCode::AA
    );
    relay.shutdown();
    assert_eq!(
        Stats::get(&stats.local_lost),
        1,
        "the loss is counted, not hidden"
    );
}
