//! Sender identity end to end: per listener and per client certificate, the MSH-3/MSH-4 a
//! sender may claim; a mismatch refused with an AR naming the field and nothing forwarded;
//! routes on the sender identity and the listener; per-identity counters.

use mllp::ack::{AckCode, parse_ack};
use netio::tls::CertIdentity;
use relay::config::DownstreamConfig;
use relay::identity::{ClientMatch, SenderRule};
use relay::metrics::Stats;
use relay::route::{Pattern, Route, RouteMatch};
use testkit::pki;
use testkit::receiver::{Behaviour, Receiver};

use crate::support::{Client, TLS_BOTH, code_and_id, tls_config};

fn message(application: &str, facility: &str, id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|{application}|{facility}|EHR|CLINIC|2026||ORU^R01|{id}|P|2.5\rOBX|1\r")
        .into_bytes()
}

fn rule(name: &str, client: ClientMatch, application: &str, facility: &str) -> SenderRule {
    SenderRule {
        name: name.to_owned(),
        client,
        application: Pattern::parse(application),
        facility: Pattern::parse(facility),
    }
}

#[test]
fn a_certificate_sends_only_as_its_own_systems_and_routes_follow_the_identity() {
    let pki = pki::Pki::new("e2e-sender-identity");
    let results = Receiver::start(Behaviour::Ack);
    let admissions = Receiver::start(Behaviour::Ack);
    let lab = CertIdentity::of(&pki.client.der);
    assert_eq!(
        lab.subject.as_deref(),
        Some("CN=sender-1"),
        "the subject as the relay renders it (the form client_subject takes)"
    );
    // The CA-issued client is the lab (by subject); the self-signed one, listed by thumbprint,
    // is the ADT system.
    let (mut cfg, _) = tls_config(
        &pki,
        results.addr(),
        Some(&pki.ca),
        &[pki.client_self.thumbprint()],
    );
    cfg.listeners[0].name = "mtls".to_owned();
    cfg.listeners[0].senders = vec![
        rule(
            "lab",
            ClientMatch::Subject("CN=sender-1".into()),
            "LAB",
            "*",
        ),
        rule(
            "adt",
            ClientMatch::Thumbprint(pki.client_self.thumbprint()),
            "ADT",
            "MAIN",
        ),
    ];
    cfg.downstreams
        .push(DownstreamConfig::plain("admissions", admissions.addr()));
    cfg.routes = vec![Route {
        matcher: RouteMatch {
            sender: Pattern::parse("adt"),
            listener: Pattern::parse("mtls"),
            ..RouteMatch::default()
        },
        downstream: 1,
    }];
    cfg.default_downstream = Some(0);
    let relay = relay::start(cfg).unwrap();
    let connect = |cert: &pki::Cert| {
        Client::connect_tls(
            relay.listen_addr(),
            pki.client(TLS_BOTH, Some(cert.certified_key())),
        )
    };

    let mut lab_client = connect(&pki.client);
    let ack = lab_client.round_trip(&message("LAB^1.2.3^ISO", "EAST", "L1"));
    assert_eq!(code_and_id(&ack), (AckCode::AA, "L1".to_owned()));
    // The lab's certificate claiming to be the ADT system.
    let refused = lab_client.round_trip(&message("ADT", "MAIN", "L2"));
    assert_eq!(code_and_id(&refused), (AckCode::AR, "L2".to_owned()));
    let text = String::from_utf8_lossy(&refused).into_owned();
    assert!(text.contains("ERR|||103^"), "{text}");
    assert!(
        text.contains("MSH-3 (sending application)") && text.contains("CN=sender-1"),
        "{text}"
    );
    assert!(parse_ack(&refused).is_ok());

    let mut adt_client = connect(&pki.client_self);
    let ack = adt_client.round_trip(&message("ADT", "MAIN", "A1"));
    assert_eq!(code_and_id(&ack), (AckCode::AA, "A1".to_owned()));
    let refused = adt_client.round_trip(&message("ADT", "WEST", "A2"));
    assert_eq!(code_and_id(&refused), (AckCode::AR, "A2".to_owned()));
    assert!(
        String::from_utf8_lossy(&refused).contains("MSH-4 (sending facility)"),
        "{}",
        String::from_utf8_lossy(&refused)
    );

    // Nothing refused was forwarded; the ADT system's message took its identity's route.
    assert_eq!(results.payloads(), [message("LAB^1.2.3^ISO", "EAST", "L1")]);
    assert_eq!(admissions.payloads(), [message("ADT", "MAIN", "A1")]);
    let listener = relay.stats().listener(0);
    assert_eq!(listener.sender_messages("lab"), 1);
    assert_eq!(listener.sender_messages("adt"), 1);
    assert_eq!(Stats::get(&listener.rejects_sender), 2);
    assert_eq!(Stats::get(&relay.stats().rejects_sender), 2);
    relay.shutdown();
}
