//! TLS end to end: the listener terminating TLS and mutual TLS (who is refused, and counted,
//! before a byte is read: unknown CAs, expired and missing certificates, TLS 1.0/1.1,
//! plaintext; probes that are not failures), TLS records split across reads, and a downstream
//! reached over TLS, with and without the relay's client certificate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mllp::ack::AckCode;
use mllp::frame::FramingConfig;
use netio::tls::{ClientTlsSettings, RejectReason, ServerTlsSettings, TlsRejections};
use relay::metrics::Stats;
use testkit::hl7::oru;
use testkit::pki;
use testkit::receiver::{Behaviour, Receiver, ack_for};

use crate::support::{Client, PATIENCE, TLS_BOTH, code_and_id, config, tls_config, wait_until};

#[test]
fn tls_listener_relays_byte_for_byte() {
    let pki = pki::Pki::new("e2e-tls");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, _) = tls_config(&pki, receiver.addr(), None, &[]);
    let relay = relay::start(cfg).unwrap();
    for versions in [TLS_BOTH, &[&rustls::version::TLS12][..]] {
        let mut client = Client::connect_tls(relay.listen_addr(), pki.client(versions, None));
        let msg = oru("TLS-1");
        assert_eq!(client.round_trip(&msg), ack_for(&msg, AckCode::AA));
    }
    assert_eq!(receiver.payloads(), [oru("TLS-1"), oru("TLS-1")]);
    relay.shutdown();
}

#[test]
fn mtls_refuses_bad_clients_before_reading_a_byte() {
    let pki = pki::Pki::new("e2e-mtls-refuse");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, rejections) = tls_config(&pki, receiver.addr(), Some(&pki.ca), &[]);
    let relay = relay::start(cfg).unwrap();
    let cases = [
        (
            Some(pki.client_other_ca.certified_key()),
            RejectReason::UnknownCa,
        ),
        (
            Some(pki.client_expired.certified_key()),
            RejectReason::Expired,
        ),
        (
            Some(pki.client_self.certified_key()),
            RejectReason::UnknownCa,
        ),
        (None, RejectReason::NoCertificate),
    ];
    for (cert, reason) in cases {
        let before = rejections.get(reason);
        let mut client = Client::connect_tls(relay.listen_addr(), pki.client(TLS_BOTH, cert));
        // With TLS 1.3 the client may believe it is connected and send at once.
        let mut framed = Vec::new();
        FramingConfig::MLLP
            .encode(&oru("EVIL-1"), &mut framed)
            .unwrap();
        let _ = client
            .io
            .write_all(&framed)
            .and_then(|()| client.io.flush());
        assert_eq!(client.receive(), None, "{reason:?}: refused");
        // The verifier counts before rustls sends the alert; "no certificate" is decided by
        // rustls itself and counted by the session just after, so wait (bounded) for it.
        let started = Instant::now();
        while rejections.get(reason) != before + 1 && started.elapsed() < PATIENCE {
            thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(rejections.get(reason), before + 1, "{reason:?} counted");
    }
    assert!(
        receiver.payloads().is_empty(),
        "not one byte of a refused client was forwarded"
    );
    relay.shutdown();
}

/// A ClientHello as a TLS 1.0 or 1.1 client sends it (`version` 0x0301 or 0x0302, no
/// `supported_versions` extension, CBC suites): what old interface engines and JREs offer.
/// Real ones carry no `signature_algorithms` either (it came with TLS 1.2); with
/// `signature_algorithms` set, the hello is refused for its version alone. Built by hand
/// because rustls cannot speak those versions.
fn legacy_client_hello(version: u16, signature_algorithms: bool) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&version.to_be_bytes());
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // no session id
    // ECDHE-ECDSA-AES128-SHA, ECDHE-RSA-AES128-SHA, AES128-SHA, AES256-SHA
    let suites: [u16; 4] = [0xc009, 0xc013, 0x002f, 0x0035];
    hello.extend_from_slice(&u16::try_from(2 * suites.len()).unwrap().to_be_bytes());
    for suite in suites {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null only
    // supported_groups (x25519, secp256r1) and ec_point_formats (uncompressed)
    let mut extensions = vec![
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, //
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00,
    ];
    if signature_algorithms {
        // ecdsa_secp256r1_sha256, rsa_pkcs1_sha256
        extensions.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01]);
    }
    hello.extend_from_slice(&u16::try_from(extensions.len()).unwrap().to_be_bytes());
    hello.extend_from_slice(&extensions);
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![22, 0x03, 0x01]; // handshake record, version 1.0 as clients send it
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn tls_1_0_and_1_1_clients_are_refused_with_an_alert_and_counted() {
    let pki = pki::Pki::new("e2e-tls-old");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, rejections) = tls_config(&pki, receiver.addr(), None, &[]);
    let relay = relay::start(cfg).unwrap();
    let hellos = [
        (0x0301_u16, false),
        (0x0302, false),
        (0x0301, true),
        (0x0302, true),
    ];
    for (n, (version, signature_algorithms)) in hellos.into_iter().enumerate() {
        let mut tcp = TcpStream::connect(relay.listen_addr()).unwrap();
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        tcp.write_all(&legacy_client_hello(version, signature_algorithms))
            .unwrap();
        // A message right behind the hello, as a client that does not wait would send it.
        let _ = tcp.write_all(&oru("OLD-TLS-1"));
        let mut reply = Vec::new();
        let _ = tcp.read_to_end(&mut reply);
        // One fatal alert record (content type 21, level 2), then the relay closes: 70,
        // protocol_version, for a hello refused for its version; 40, handshake_failure, for
        // one without signature_algorithms (rustls checks that first).
        let expected = if signature_algorithms { 70 } else { 40 };
        assert!(
            reply.len() >= 7,
            "{version:#06x}: an alert came back: {reply:02x?}"
        );
        assert_eq!(
            reply[0], 21,
            "{version:#06x}: an alert record: {reply:02x?}"
        );
        assert_eq!(
            &reply[5..7],
            &[2, expected],
            "{version:#06x}: the fatal alert"
        );
        let started = Instant::now();
        while rejections.get(RejectReason::OldProtocolVersion) != n as u64 + 1
            && started.elapsed() < PATIENCE
        {
            thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            rejections.get(RejectReason::OldProtocolVersion),
            n as u64 + 1,
            "{version:#06x} counted as an old protocol version"
        );
    }
    assert!(receiver.payloads().is_empty(), "nothing was forwarded");
    assert_eq!(Stats::get(&relay.stats().tls_handshake_failures), 4);
    relay.shutdown();
}

#[test]
fn mtls_accepts_ca_issued_and_thumbprint_listed_clients() {
    let pki = pki::Pki::new("e2e-mtls-accept");
    let receiver = Receiver::start(Behaviour::Ack);
    let listed = [pki.client_self.thumbprint()];
    let (cfg, _) = tls_config(&pki, receiver.addr(), Some(&pki.ca), &listed);
    let relay = relay::start(cfg).unwrap();
    for (i, cert) in [pki.client.certified_key(), pki.client_self.certified_key()]
        .into_iter()
        .enumerate()
    {
        let mut client = Client::connect_tls(relay.listen_addr(), pki.client(TLS_BOTH, Some(cert)));
        let ack = client.round_trip(&oru(&format!("MTLS-{i}")));
        assert_eq!(code_and_id(&ack), (AckCode::AA, format!("MTLS-{i}")));
    }
    relay.shutdown();
}

#[test]
fn plaintext_on_a_tls_port_is_refused() {
    let pki = pki::Pki::new("e2e-plain-on-tls");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, _) = tls_config(&pki, receiver.addr(), None, &[]);
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    client.send(&oru("PLAIN-1"));
    // The relay answers with a TLS alert (not an MLLP frame) and closes.
    let mut reply = Vec::new();
    let _ = client.tcp.read_to_end(&mut reply);
    assert!(!reply.contains(&0x0B), "no MLLP frame came back");
    assert!(receiver.payloads().is_empty());
    assert_eq!(Stats::get(&relay.stats().tls_handshake_failures), 1);
    relay.shutdown();
}

#[test]
fn a_probe_that_connects_and_hangs_up_is_not_a_handshake_failure() {
    let pki = pki::Pki::new("e2e-tls-probe");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, _) = tls_config(&pki, receiver.addr(), None, &[]);
    let relay = relay::start(cfg).unwrap();
    let stats = relay.stats();
    let failures = || Stats::get(&stats.tls_handshake_failures);
    // Every session so far has ended. A session counts its failure before it ends, so the
    // counts read after this are final; the relay counts a connection open before accepted.
    let wait_until_closed = |accepted: u64| {
        let started = Instant::now();
        while (Stats::get(&stats.connections_accepted) < accepted
            || Stats::get(&stats.connections_open) > 0)
            && started.elapsed() < PATIENCE
        {
            thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(Stats::get(&stats.connections_accepted), accepted);
        assert_eq!(Stats::get(&stats.connections_open), 0);
    };
    // A health check: connect, then close (FIN), or reset (linger 0), without a byte.
    TcpStream::connect(relay.listen_addr()).unwrap();
    let reset = socket2::Socket::from(TcpStream::connect(relay.listen_addr()).unwrap());
    reset.set_linger(Some(Duration::ZERO)).unwrap();
    drop(reset);
    wait_until_closed(2);
    assert_eq!(failures(), 0);
    // The same counter does count a client that speaks, and gets it wrong.
    let mut plain = TcpStream::connect(relay.listen_addr()).unwrap();
    plain.write_all(&oru("PLAIN-1")).unwrap();
    let _ = plain.read_to_end(&mut Vec::new());
    drop(plain);
    wait_until("the plaintext client counted", || failures() >= 1);
    wait_until_closed(3);
    assert_eq!(failures(), 1);
    // A client that begins the handshake and then hangs up is a failure too.
    let mut quitter = TcpStream::connect(relay.listen_addr()).unwrap();
    quitter
        .write_all(&legacy_client_hello(0x0303, true)[..20])
        .unwrap();
    drop(quitter);
    wait_until("the quitter counted", || failures() >= 2);
    wait_until_closed(4);
    assert_eq!(failures(), 2, "and the health checks were not counted");
    relay.shutdown();
}

#[test]
fn downstream_over_tls_carries_large_messages_byte_for_byte() {
    let pki = pki::Pki::new("e2e-downstream-tls");
    let settings = ServerTlsSettings {
        cert_chain: pki.server.cert_path.clone(),
        key: pki.server.key_path.clone(),
        client_ca: None,
        client_thumbprints: vec![],
    };
    let server = netio::tls::server_config(&settings, Arc::new(TlsRejections::new())).unwrap();
    let receiver = Receiver::start_tls(Behaviour::Ack, server);
    // Larger than rustls's 64 KiB send buffer: written in pieces.
    let mut big = oru("TLS-BIG");
    big.extend(std::iter::repeat_n(b'A', 300_000));
    big.push(b'\r');
    let trusts = [
        ClientTlsSettings {
            ca: Some(pki.ca.cert_path.clone()),
            pinned: vec![],
            client_cert: None,
        },
        ClientTlsSettings {
            ca: None,
            pinned: vec![pki.server.thumbprint()],
            client_cert: None,
        },
    ];
    for trust in trusts {
        let mut cfg = config(receiver.addr());
        let client = netio::tls::client_config(&trust).unwrap();
        cfg.downstreams[0].tls = Some(netio::connect::ClientTls {
            config: client,
            server_name: netio::tls::server_name("localhost").unwrap(),
        });
        let relay = relay::start(cfg).unwrap();
        let mut sender = Client::connect(relay.listen_addr());
        assert_eq!(
            code_and_id(&sender.round_trip(&big)),
            (AckCode::AA, "TLS-BIG".to_string())
        );
        assert_eq!(
            code_and_id(&sender.round_trip(&oru("TLS-SMALL"))).0,
            AckCode::AA
        );
        relay.shutdown();
    }
    let received = receiver.payloads();
    assert_eq!(received.len(), 4);
    assert_eq!(received[0], big, "byte for byte through TLS");
    assert_eq!(
        receiver.connections(),
        2,
        "one pooled TLS connection per relay"
    );
}

#[test]
fn downstream_requiring_a_client_certificate_gets_the_relays() {
    let pki = pki::Pki::new("e2e-downstream-mtls");
    let settings = ServerTlsSettings {
        cert_chain: pki.server.cert_path.clone(),
        key: pki.server.key_path.clone(),
        client_ca: Some(pki.ca.cert_path.clone()),
        client_thumbprints: vec![],
    };
    let server = netio::tls::server_config(&settings, Arc::new(TlsRejections::new())).unwrap();
    let receiver = Receiver::start_tls(Behaviour::Ack, server);
    let run = |client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>| {
        let trust = ClientTlsSettings {
            ca: Some(pki.ca.cert_path.clone()),
            pinned: vec![],
            client_cert,
        };
        let mut cfg = config(receiver.addr());
        cfg.downstreams[0].retries = 0;
        let client = netio::tls::client_config(&trust).unwrap();
        cfg.downstreams[0].tls = Some(netio::connect::ClientTls {
            config: client,
            server_name: netio::tls::server_name("localhost").unwrap(),
        });
        let relay = relay::start(cfg).unwrap();
        let mut sender = Client::connect(relay.listen_addr());
        let ack = code_and_id(&sender.round_trip(&oru("DS-MTLS"))).0;
        relay.shutdown();
        ack
    };
    let identity = (pki.client.cert_path.clone(), pki.client.key_path.clone());
    assert_eq!(
        run(Some(identity)),
        AckCode::AA,
        "the receiver accepts the relay's certificate"
    );
    assert_eq!(
        run(None),
        AckCode::AE,
        "without one the receiver refuses, and the sender hears it"
    );
    assert_eq!(receiver.frames(), 1);
}

#[test]
fn a_big_tls_record_split_across_reads_then_small_records() {
    let pki = pki::Pki::new("e2e-small-records");
    let receiver = Receiver::start(Behaviour::Ack);
    let (cfg, _) = tls_config(&pki, receiver.addr(), None, &[]);
    let relay = relay::start(cfg).unwrap();
    let tcp = TcpStream::connect(relay.listen_addr()).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(pki.client(TLS_BOTH, None), name).unwrap();
    let mut stream = rustls::StreamOwned::new(session, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    // One socket write holding: a ~1.3 KB record, a full 16 KiB record, then small records.
    // The relay's first 17 KiB read ends inside the big record; completing it on the next
    // read yields 16 KiB of plaintext at once, and the small records behind it push rustls past
    // its 16 KiB plaintext buffer before that read is fed entirely.
    let mut sent = Vec::new();
    let mut add = |msg: Vec<u8>, out: &mut Vec<u8>| {
        FramingConfig::MLLP.encode(&msg, out).unwrap();
        sent.push(msg);
    };
    let pad = |id: &str, extra: usize| {
        let mut msg = oru(id);
        msg.extend(std::iter::repeat_n(b'x', extra));
        msg.push(b'\r');
        msg
    };
    let mut first = Vec::new();
    add(pad("REC-0", 1100), &mut first);
    let mut big = Vec::new();
    add(pad("REC-1", 16_384), &mut big);
    stream.conn.writer().write_all(&first).unwrap();
    stream.conn.writer().write_all(&big[..16_384]).unwrap(); // exactly one full record
    stream.conn.writer().write_all(&big[16_384..]).unwrap();
    for i in 2..12 {
        let mut small = Vec::new();
        add(pad(&format!("REC-{i}"), 800), &mut small);
        stream.conn.writer().write_all(&small).unwrap();
    }
    let mut wire = Vec::new();
    while stream.conn.wants_write() {
        stream.conn.write_tls(&mut wire).unwrap();
    }
    stream.sock.write_all(&wire).unwrap();
    let mut client = Client::over(stream.sock.try_clone().unwrap(), Box::new(stream));
    for i in 0..12 {
        let ack = client.receive().expect("every message answered");
        assert_eq!(code_and_id(&ack), (AckCode::AA, format!("REC-{i}")));
    }
    assert_eq!(receiver.payloads(), sent);
    relay.shutdown();
}
