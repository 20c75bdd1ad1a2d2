//! The single link policy: every worker's messages over one downstream connection.

use std::thread;

use mllp::ack::AckCode;
use relay::config::LinkPolicy;
use testkit::hl7::oru;
use testkit::receiver::{Behaviour, Receiver};

use crate::support::{Client, code_and_id, config};

#[test]
fn a_single_link_carries_every_worker_on_one_connection() {
    let receiver = Receiver::start(Behaviour::Ack);
    let mut cfg = config(receiver.addr());
    cfg.workers = 2;
    cfg.downstreams[0].link = LinkPolicy::Single;
    let relay = relay::start(cfg).unwrap();
    let addr = relay.listen_addr();
    // Several senders at once, spread over both workers by SO_REUSEPORT.
    let senders: Vec<_> = (0..12)
        .map(|s| {
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0..15 {
                    let ack = client.round_trip(&oru(&format!("S{s}-{i}")));
                    assert_eq!(code_and_id(&ack), (AckCode::AA, format!("S{s}-{i}")));
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    assert_eq!(
        receiver.connections(),
        1,
        "exactly one downstream connection"
    );
    let received = receiver.payloads();
    assert_eq!(received.len(), 180);
    // Each sender's messages arrive in the order it sent them.
    for s in 0..12 {
        let prefix = format!("|S{s}-");
        let order: Vec<usize> = received
            .iter()
            .filter_map(|m| {
                let text = String::from_utf8_lossy(m);
                let at = text.find(&prefix)?;
                text[at + prefix.len()..].split('|').next()?.parse().ok()
            })
            .collect();
        assert_eq!(order, (0..15).collect::<Vec<_>>(), "sender {s}");
    }
    relay.shutdown();
}
