//! Interop with real third-party HL7 software: python-hl7's asyncio MLLP client sends through
//! the relay (TLS, and mutual TLS; passthrough, and durable, where the ACK is the relay's own)
//! to python-hl7's and hl7apy's MLLP servers; every message must arrive byte for byte (same
//! SHA-256) and every ACK must name its message. Headers with an unusual MSH-2, which both
//! peers accept, go through as well.
//!
//! The peers come from PyPI, installed by `scripts/interop-setup.sh`; point
//! `MLLP_INTEROP_PYTHON` at that interpreter. Without it these tests print a note and pass,
//! unless `MLLP_INTEROP_REQUIRED=1` (CI sets it), in which case they fail.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netio::runtime::Driver;
use netio::tls::{ServerTlsSettings, TlsRejections};
use relay::config::{Config, DownstreamConfig, ListenerConfig};
use testkit::hl7::control_id;
use testkit::interop::{Peer, python};
use testkit::pki;

use crate::support::sha256;

/// Messages of different shapes, written to files for the client: a small ADT, a UTF-8 ORU
/// with MSH-18, and a 200 KB ORU with a base64 document in OBX-5.
fn messages(dir: &Path) -> Files {
    let adt = "MSH|^~\\&|ADMIT|HOSP|EHR|CLINIC|20261122103000||ADT^A01^ADT_A01|IOP-ADT-1|P|2.5.1\r\
EVN|A01|20261122103000\rPID|1||4711^^^HOSP^MR||MUSTERMANN^MAX||19700101|M\rPV1|1|I|W1^101^1\r"
        .to_string();
    let utf8 = "MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20261122103000||ORU^R01^ORU_R01|IOP-ORU-2|P|2.5.1|||||||UNICODE UTF-8\r\
PID|1||4712^^^HOSP^MR||MÜLLER^JOSÉ\rOBX|1|TX|NOTE||Bemerkung: Blutzucker erhöht – µmol/L\r"
        .to_string();
    let document: String = (0..200_000)
        .map(|i| {
            char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i % 64])
        })
        .collect();
    let big = format!(
        "MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20261122103000||ORU^R01^ORU_R01|IOP-BIG-3|P|2.5.1\r\
PID|1||4713^^^HOSP^MR||DOE^JANE\rOBX|1|ED|PDF^Report||^application^pdf^Base64^{document}\r"
    );
    write_messages(
        dir,
        [("adt.hl7", adt), ("utf8.hl7", utf8), ("big.hl7", big)],
    )
}

/// Headers as real senders write them, which a relay must not refuse: MSH-2 with the
/// backslash doubled (escaped source text copied into a file), three encoding characters, and
/// five with the truncation character (v2.7 and later).
fn unusual_headers(dir: &Path) -> Files {
    let message = |msh2: &str, id: &str, version: &str| {
        format!(
            "MSH|{msh2}|LAB|HOSP|EHR|CLINIC|20261122103000||ORU^R01^ORU_R01|{id}|P|{version}\r\
PID|1||4711^^^HOSP^MR||DOE^JANE\rOBX|1|NM|GLU^Glucose||5.4|mmol/L\r"
        )
    };
    write_messages(
        dir,
        [
            (
                "doubled.hl7",
                message("^~\\\\&", "IOP-MSH2-DOUBLED", "2.5.1"),
            ),
            ("three.hl7", message("^~\\", "IOP-MSH2-THREE", "2.3")),
            ("five.hl7", message("^~\\&#", "IOP-MSH2-FIVE", "2.7")),
        ],
    )
}

/// Message files for the client: each path and its bytes.
type Files = Vec<(PathBuf, Vec<u8>)>;

fn write_messages<const N: usize>(dir: &Path, messages: [(&str, String); N]) -> Files {
    messages
        .into_iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, &text).unwrap();
            (path, text.into_bytes())
        })
        .collect()
}

/// How the relay answers in a round trip.
#[derive(Clone, Copy)]
enum Acks {
    /// The receiver's ACK, passed through.
    Passthrough,
    /// The relay's own AA once the message is in its journal (under the test's directory).
    Durable,
}

fn relay_config(pki: &pki::Pki, downstream: SocketAddr, mutual: bool, acks: Acks) -> Config {
    let settings = ServerTlsSettings {
        cert_chain: pki.server.cert_path.clone(),
        key: pki.server.key_path.clone(),
        client_ca: mutual.then(|| pki.ca.cert_path.clone()),
        client_thumbprints: Vec::new(),
    };
    let rejections = std::sync::Arc::new(TlsRejections::new());
    let mut listener = ListenerConfig::plain("127.0.0.1:0".parse().unwrap());
    listener.tls =
        Some(netio::tls::ReloadableServerConfig::load(settings, rejections.clone()).unwrap());
    listener.tls_rejections = rejections;
    let journal = match acks {
        Acks::Passthrough => None,
        Acks::Durable => {
            listener.ack_mode = relay::config::AckMode::Durable;
            Some(relay::config::JournalConfig::new(
                pki.dir.path().join("journal"),
            ))
        }
    };
    Config {
        listeners: vec![listener],
        downstreams: vec![DownstreamConfig::plain("peer", downstream)],
        routes: Vec::new(),
        default_downstream: Some(0),
        workers: 2,
        pin_workers: false,
        shutdown_grace: Duration::from_secs(5),
        driver: Driver::Auto,
        metrics_addr: None,
        readiness_window: relay::config::DEFAULT_READINESS_WINDOW,
        audit: relay::config::AuditConfig::Off,
        journal,
    }
}

/// Sends every message from python-hl7 through a relay to `server_mode`, with or without a
/// client certificate, and checks delivery byte for byte.
fn round_trip(server_mode: &str, mutual: bool, acks: Acks) {
    round_trip_of(messages, &[], server_mode, mutual, acks);
}

/// [`round_trip`] with the messages `make` writes into the test's directory, of which the
/// receiver refuses those with a control ID in `refused` (it closes without an ACK): those
/// must get the relay's AE, never an AA, and nothing of them is received.
fn round_trip_of(
    make: fn(&Path) -> Files,
    refused: &[&str],
    server_mode: &str,
    mutual: bool,
    acks: Acks,
) {
    let Some(python) = python() else { return };
    let durable = matches!(acks, Acks::Durable);
    let pki = pki::Pki::new(&format!("interop-{server_mode}-{mutual}-{durable}"));
    let server = Peer::spawn(&python, &[server_mode]);
    let port = server.port();
    let relay = relay::start(relay_config(
        &pki,
        ([127, 0, 0, 1], port).into(),
        mutual,
        acks,
    ))
    .unwrap();
    let files = make(pki.dir.path());

    let relay_port = relay.listen_addr().port().to_string();
    let ca = pki.ca.cert_path.to_string_lossy().into_owned();
    let (cert, key) = (
        pki.client.cert_path.to_string_lossy().into_owned(),
        pki.client.key_path.to_string_lossy().into_owned(),
    );
    let mut args = vec!["pyhl7-client", "--port", &relay_port, "--ca", &ca];
    if mutual {
        args.extend(["--cert", &cert, "--key", &key]);
    }
    let paths: Vec<String> = files
        .iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect();
    args.extend(paths.iter().map(String::as_str));
    let mut client = Peer::spawn(&python, &args);
    let mut acks = Vec::new();
    for _ in &files {
        acks.push(client.line());
    }
    let status = client.wait();
    // The client fails when any ACK is not an AA.
    assert_eq!(status.success(), refused.is_empty(), "client: {acks:?}");
    let is_refused = |raw: &[u8]| refused.contains(&control_id(raw).unwrap().as_str());
    let expected: Vec<String> = files
        .iter()
        .filter(|(_, raw)| !is_refused(raw))
        .map(|(_, raw)| format!("RECV {} {}", sha256(raw), control_id(raw).unwrap()))
        .collect();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        received.push(server.line());
    }
    received.extend(server.drain());
    assert_eq!(
        received, expected,
        "every message arrived once, byte for byte, in order"
    );
    for (ack, (_, raw)) in acks.iter().zip(&files) {
        let code = if is_refused(raw) { "AE" } else { "AA" };
        assert_eq!(ack, &format!("ACK {code} {}", control_id(raw).unwrap()));
    }
    relay.shutdown();
}

#[test]
fn python_hl7_over_tls_to_python_hl7() {
    round_trip("pyhl7-server", false, Acks::Passthrough);
}

#[test]
fn python_hl7_over_mutual_tls_to_python_hl7() {
    round_trip("pyhl7-server", true, Acks::Passthrough);
}

#[test]
fn python_hl7_over_mutual_tls_to_hl7apy_one_message_per_connection() {
    round_trip("hl7apy-server", true, Acks::Passthrough);
}

/// Durable mode: python-hl7 reads the relay's own ACKs, and the journal delivers every
/// message to hl7apy byte for byte, in order.
#[test]
fn python_hl7_over_tls_to_hl7apy_through_the_durable_journal() {
    round_trip("hl7apy-server", false, Acks::Durable);
}

#[test]
fn unusual_msh2_headers_reach_python_hl7_byte_for_byte() {
    round_trip_of(
        unusual_headers,
        &[],
        "pyhl7-server",
        false,
        Acks::Passthrough,
    );
}

/// hl7apy is stricter than python-hl7: it refuses a repeated delimiter and fewer than four
/// encoding characters (it closes without an ACK). The relay forwards them all, hl7apy decides,
/// and the sender gets the relay's AE for those, never an AA; the five-character header of a
/// v2.7 message goes through with hl7apy's ACK, which echoes MSH-2 as sent.
#[test]
fn unusual_msh2_headers_reach_hl7apy_which_decides() {
    round_trip_of(
        unusual_headers,
        &["IOP-MSH2-DOUBLED", "IOP-MSH2-THREE"],
        "hl7apy-server",
        false,
        Acks::Passthrough,
    );
}

/// The relay's own AA for such headers, read by python-hl7.
#[test]
fn unusual_msh2_headers_get_the_relays_own_ack_through_the_durable_journal() {
    round_trip_of(unusual_headers, &[], "pyhl7-server", false, Acks::Durable);
}

#[test]
fn python_hl7_without_a_client_certificate_is_refused() {
    let Some(python) = python() else { return };
    let pki = pki::Pki::new("interop-refused");
    let server = Peer::spawn(&python, &["pyhl7-server"]);
    let port = server.port();
    let relay = relay::start(relay_config(
        &pki,
        ([127, 0, 0, 1], port).into(),
        true,
        Acks::Passthrough,
    ))
    .unwrap();
    let files = messages(pki.dir.path());
    let relay_port = relay.listen_addr().port().to_string();
    let ca = pki.ca.cert_path.to_string_lossy().into_owned();
    let path = files[0].0.to_string_lossy().into_owned();
    let mut client = Peer::spawn(
        &python,
        &["pyhl7-client", "--port", &relay_port, "--ca", &ca, &path],
    );
    let status = client.wait();
    assert!(
        !status.success(),
        "a client without a certificate must not get through"
    );
    assert!(server.drain().is_empty(), "nothing reached the receiver");
    relay.shutdown();
}
