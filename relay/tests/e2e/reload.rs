//! Live reload: a new configuration put in force while 32 connections send, adding a
//! partner's client thumbprint, a route and a downstream. No connection is dropped, no
//! message fails, the new partner gets in and its messages take the new route; settings that
//! need a restart keep their running values, and changes that cannot be applied are refused
//! with nothing changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use mllp::ack::AckCode;
use relay::config::DownstreamConfig;
use relay::metrics::Stats;
use relay::route::{Pattern, Route, RouteMatch};
use testkit::hl7::oru;
use testkit::pki;
use testkit::receiver::{Behaviour, Receiver};

use crate::support::{Client, PATIENCE, TLS_BOTH, code_and_id, tls_config};

/// Connections sending through the reload.
const CONNECTIONS: usize = 32;

fn adt(id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|ADMIT|HOSP|EHR|CLINIC|2026||ADT^A01|{id}|P|2.5\rPID|1\r").into_bytes()
}

#[test]
fn a_reload_adds_a_partner_a_route_and_a_downstream_under_load_dropping_nothing() {
    let pki = pki::Pki::new("e2e-reload");
    let results = Receiver::start(Behaviour::Ack);
    let admissions = Receiver::start(Behaviour::Ack);
    // Before: only the CA-issued lab certificate is accepted, everything goes to `results`.
    let lab = pki.client.thumbprint();
    let (before, _) = tls_config(&pki, results.addr(), None, &[lab]);
    let relay = Arc::new(relay::start(before.clone()).unwrap());
    let addr = relay.listen_addr();

    // The partner's self-signed certificate is refused for now.
    let partner = || pki.client(TLS_BOTH, Some(pki.client_self.certified_key()));
    let mut refused = Client::connect_tls(addr, partner());
    refused.send(&adt("P-0"));
    assert_eq!(refused.receive(), None, "not yet accepted");

    // 32 lab connections send without pause until told to stop, each checking every ACK.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, acked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut senders = Vec::new();
    for c in 0..CONNECTIONS {
        let config = pki.client(TLS_BOTH, Some(pki.client.certified_key()));
        let (stop, sent, acked) = (stop.clone(), sent.clone(), acked.clone());
        senders.push(thread::spawn(move || {
            let mut client = Client::connect_tls(addr, config);
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("L{c}-{n}");
                sent.fetch_add(1, Ordering::Relaxed);
                client.send(&oru(&id));
                match client.receive_within(PATIENCE) {
                    Some(ack) if code_and_id(&ack) == (AckCode::AA, id.clone()) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{id}: {other:?}")),
                }
                n += 1;
                // About half of what this test machine sustains (debug build).
                thread::sleep(Duration::from_millis(2));
            }
            failures
        }));
    }
    let warm = testkit::wait_until(PATIENCE, || acked.load(Ordering::Relaxed) >= 500);
    assert!(warm, "the senders are running");

    // After: the partner's thumbprint too, ADT routed to a new downstream.
    let (mut after, _) = tls_config(
        &pki,
        results.addr(),
        None,
        &[lab, pki.client_self.thumbprint()],
    );
    after
        .downstreams
        .push(DownstreamConfig::plain("admissions", admissions.addr()));
    after.routes = vec![Route {
        matcher: RouteMatch {
            message_type: Pattern::parse("ADT"),
            ..RouteMatch::default()
        },
        downstream: 1,
    }];
    after.default_downstream = Some(0);
    let kept = relay.reload(after).unwrap();
    assert!(kept.is_empty(), "{kept:?}");

    // The partner gets in, and its ADT takes the new route.
    let mut partner_client = Client::connect_tls(addr, partner());
    let ack = partner_client.round_trip(&adt("P-1"));
    assert_eq!(code_and_id(&ack), (AckCode::AA, "P-1".to_owned()));
    assert_eq!(admissions.payloads(), [adt("P-1")]);

    // Let the senders run on under the new configuration, then stop them.
    let at_reload = acked.load(Ordering::Relaxed);
    let more = testkit::wait_until(PATIENCE, || {
        acked.load(Ordering::Relaxed) >= at_reload + 500
    });
    assert!(more, "the senders carry on after the reload");
    let stats = relay.stats().clone();
    assert_eq!(
        Stats::get(&stats.connections_open),
        CONNECTIONS as u64 + 1,
        "every sender's connection still open, and the partner's"
    );
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    let (sent, acked) = (sent.load(Ordering::Relaxed), acked.load(Ordering::Relaxed));
    eprintln!(
        "reload under load: {CONNECTIONS} connections, {sent} sent, {acked} acknowledged AA \
         ({at_reload} before the reload), {} failed; results received {}, admissions {}",
        failures.len(),
        results.frames(),
        admissions.frames()
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(sent, acked);
    assert_eq!(
        results.frames() as u64,
        acked,
        "every lab message delivered once"
    );
    assert!(
        stats
            .render(&[])
            .contains("mllp_relay_config_reload_success 1\n"),
        "the reload is recorded as a success"
    );

    // Changes that cannot be applied (the old file: a downstream gone; another name) are
    // refused, and nothing changes.
    let mut renamed = before;
    renamed.downstreams[0].name = "elsewhere".into();
    let refused = relay.reload(renamed).unwrap_err();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].starts_with("downstream: a downstream was removed"));
    assert!(refused[1].starts_with("downstream[0].name: \"mock\" became \"elsewhere\""));
    assert!(
        stats
            .render(&[])
            .contains("mllp_relay_config_reload_success 0\n")
    );
    let ack = partner_client.round_trip(&adt("P-2"));
    assert_eq!(
        code_and_id(&ack).0,
        AckCode::AA,
        "the reloaded configuration stays"
    );
    assert_eq!(admissions.frames(), 2);
    drop(partner_client);
    Arc::try_unwrap(relay).unwrap().shutdown();
}
