//! Routing by MSH fields to several downstreams; unrouted messages refused.

use mllp::ack::AckCode;
use relay::config::DownstreamConfig;
use relay::metrics::Stats;
use relay::route::{Pattern, Route, RouteMatch};
use testkit::hl7::oru;
use testkit::receiver::{Behaviour, Receiver};

use crate::support::{Client, code_and_id, config};

#[test]
fn messages_are_routed_by_msh_and_unrouted_ones_refused() {
    let results = Receiver::start(Behaviour::Ack);
    let admissions = Receiver::start(Behaviour::Ack);
    let mut cfg = config(results.addr());
    cfg.downstreams
        .push(DownstreamConfig::plain("adt", admissions.addr()));
    cfg.routes = vec![
        Route {
            matcher: RouteMatch {
                message_type: Pattern::parse("ORU"),
                ..RouteMatch::default()
            },
            downstream: 0,
        },
        Route {
            matcher: RouteMatch {
                message_type: Pattern::parse("ADT"),
                trigger_event: Pattern::parse("A01"),
                ..RouteMatch::default()
            },
            downstream: 1,
        },
    ];
    cfg.default_downstream = None;
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let oru_r01 = oru("ROUTE-ORU");
    let adt = b"MSH|^~\\&|ADMIT|HOSP|EHR|CLINIC|2026||ADT^A01|ROUTE-ADT|P|2.5\rPID|1\r".to_vec();
    let a08 = b"MSH|^~\\&|ADMIT|HOSP|EHR|CLINIC|2026||ADT^A08|ROUTE-A08|P|2.5\rPID|1\r".to_vec();
    let siu = b"MSH|^~\\&|SCHED|HOSP|EHR|CLINIC|2026||SIU^S12|ROUTE-SIU|P|2.5\rSCH|1\r".to_vec();
    assert_eq!(code_and_id(&client.round_trip(&oru_r01)).0, AckCode::AA);
    assert_eq!(code_and_id(&client.round_trip(&adt)).0, AckCode::AA);
    let refused = client.round_trip(&a08);
    assert_eq!(
        code_and_id(&refused),
        (AckCode::AR, "ROUTE-A08".to_string())
    );
    assert!(
        String::from_utf8_lossy(&refused).contains("ERR|||201^"),
        "no rule for the trigger event"
    );
    let refused = client.round_trip(&siu);
    assert!(
        String::from_utf8_lossy(&refused).contains("ERR|||200^"),
        "no rule for the message type"
    );
    assert_eq!(results.payloads(), [oru_r01]);
    assert_eq!(admissions.payloads(), [adt]);
    assert_eq!(Stats::get(&relay.stats().rejects_unrouted), 2);
    relay.shutdown();
}
