//! `netio::tls`: server and client configurations driven through complete TLS handshakes in
//! memory (no sockets): a test PKI is made with rcgen in a temporary directory, and the
//! `ClientConnection` and `ServerConnection` are pumped into each other.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use netio::tls::{
    ClientTlsSettings, RejectReason, ServerTlsSettings, Thumbprint, TlsRejections, TlsSetupError,
    client_config, server_config, server_name,
};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, ConnectionCommon, Error, ProtocolVersion,
    RootCertStore, ServerConfig, ServerConnection, SideData, SignatureScheme,
    SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;

use testkit::pki::*;

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

// ---------------------------------------------------------------------------------------------
// In-memory handshakes
// ---------------------------------------------------------------------------------------------

/// Move everything `from` wants to send into `to`, processing it as it arrives. Returns whether
/// anything was sent.
fn transfer<A: SideData, B: SideData>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
) -> Result<bool, Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets()?;
    }
    Ok(!bytes.is_empty())
}

/// Pump flights between the two until both have finished the handshake and have nothing left
/// to send, or one of them fails (that side's error is returned).
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), Error> {
    for _ in 0..20 {
        let sent = transfer(&mut **client, &mut **server)?;
        let answered = transfer(&mut **server, &mut **client)?;
        if !client.is_handshaking() && !server.is_handshaking() && !sent && !answered {
            return Ok(());
        }
    }
    panic!("handshake did not finish in 20 round trips");
}

fn connect(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>, name: &str) -> Connected {
    let mut c = ClientConnection::new(Arc::clone(client), server_name(name).unwrap()).unwrap();
    let mut s = ServerConnection::new(Arc::clone(server)).unwrap();
    let result = handshake(&mut c, &mut s);
    Connected {
        client: c,
        server: s,
        result,
    }
}

struct Connected {
    client: ClientConnection,
    server: ServerConnection,
    result: Result<(), Error>,
}

impl Connected {
    fn assert_ok(&mut self, version: ProtocolVersion) {
        if let Err(e) = &self.result {
            panic!("handshake failed: {e}");
        }
        assert_eq!(self.server.protocol_version(), Some(version));
        assert_eq!(self.client.protocol_version(), Some(version));
        // Application data flows both ways.
        self.client.writer().write_all(b"MSH|^~\\&|A").unwrap();
        transfer(&mut *self.client, &mut *self.server).unwrap();
        let mut got = [0u8; 64];
        let n = self.server.reader().read(&mut got).unwrap();
        assert_eq!(&got[..n], b"MSH|^~\\&|A");
        self.server.writer().write_all(b"MSA|AA").unwrap();
        transfer(&mut *self.server, &mut *self.client).unwrap();
        let n = self.client.reader().read(&mut got).unwrap();
        assert_eq!(&got[..n], b"MSA|AA");
    }

    fn server_error(&self) -> &Error {
        match &self.result {
            Ok(()) => panic!("handshake unexpectedly succeeded"),
            Err(e) => e,
        }
    }
}

/// Handshake a client presenting `cert` (or none) with `server`, over `versions`.
fn present(
    pki: &Pki,
    server: &Arc<ServerConfig>,
    versions: &[&'static SupportedProtocolVersion],
    cert: Option<CertifiedKey>,
) -> Connected {
    connect(&pki.client(versions, cert), server, "localhost")
}

/// Only `reason` was counted, exactly `n` times.
fn assert_only(rejections: &TlsRejections, reason: RejectReason, n: u64) {
    for r in RejectReason::ALL {
        let expected = if r == reason { n } else { 0 };
        assert_eq!(rejections.get(r), expected, "counter {}", r.label());
    }
}

fn assert_none_counted(rejections: &TlsRejections) {
    for r in RejectReason::ALL {
        assert_eq!(rejections.get(r), 0, "counter {}", r.label());
    }
}

fn assert_cert_error(err: &Error, pred: impl Fn(&CertificateError) -> bool) {
    match err {
        Error::InvalidCertificate(e) if pred(e) => {}
        other => panic!("unexpected error {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Server: no client authentication
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_tls13_without_client_auth() {
    let pki = Pki::new("plain13");
    let (server, rejections) = pki.server_with(None, &[]);
    let mut conn = present(&pki, &server, BOTH, None);
    conn.assert_ok(ProtocolVersion::TLSv1_3);
    assert!(conn.server.peer_certificates().is_none());
    assert_none_counted(&rejections);
}

#[test]
fn plain_tls12_when_the_client_only_speaks_tls12() {
    let pki = Pki::new("plain12");
    let (server, _) = pki.server_with(None, &[]);
    present(&pki, &server, TLS12, None).assert_ok(ProtocolVersion::TLSv1_2);
}

#[test]
fn without_client_auth_a_client_certificate_is_not_requested() {
    let pki = Pki::new("plain-cert");
    let (server, rejections) = pki.server_with(None, &[]);
    // The client has a certificate (an expired one, even) but is never asked for it.
    let mut conn = present(
        &pki,
        &server,
        BOTH,
        Some(pki.client_expired.certified_key()),
    );
    conn.assert_ok(ProtocolVersion::TLSv1_3);
    assert!(conn.server.peer_certificates().is_none());
    assert_none_counted(&rejections);
}

// ---------------------------------------------------------------------------------------------
// Server: mutual TLS against a CA
// ---------------------------------------------------------------------------------------------

#[test]
fn ca_accepts_a_valid_client_over_tls13_and_tls12() {
    let pki = Pki::new("ca-valid");
    let (server, rejections) = pki.server_with(Some(&pki.ca), &[]);
    for (versions, version) in [
        (TLS13, ProtocolVersion::TLSv1_3),
        (TLS12, ProtocolVersion::TLSv1_2),
    ] {
        let mut conn = present(&pki, &server, versions, Some(pki.client.certified_key()));
        conn.assert_ok(version);
        let peer = conn.server.peer_certificates().unwrap();
        assert_eq!(peer.first(), Some(&pki.client.der));
    }
    assert_none_counted(&rejections);
}

#[test]
fn ca_rejects_an_expired_client() {
    let pki = Pki::new("ca-expired");
    let (server, rejections) = pki.server_with(Some(&pki.ca), &[]);
    let conn = present(
        &pki,
        &server,
        BOTH,
        Some(pki.client_expired.certified_key()),
    );
    assert_cert_error(conn.server_error(), |e| *e == CertificateError::Expired);
    assert_only(&rejections, RejectReason::Expired, 1);
}

#[test]
fn ca_rejects_a_not_yet_valid_client() {
    let pki = Pki::new("ca-future");
    let (server, rejections) = pki.server_with(Some(&pki.ca), &[]);
    let conn = present(
        &pki,
        &server,
        TLS12,
        Some(pki.client_future.certified_key()),
    );
    assert_cert_error(conn.server_error(), |e| *e == CertificateError::NotValidYet);
    assert_only(&rejections, RejectReason::NotYetValid, 1);
}

#[test]
fn ca_rejects_a_client_of_another_ca() {
    let pki = Pki::new("ca-other");
    let (server, rejections) = pki.server_with(Some(&pki.ca), &[]);
    for versions in [TLS13, TLS12] {
        let conn = present(
            &pki,
            &server,
            versions,
            Some(pki.client_other_ca.certified_key()),
        );
        assert_cert_error(conn.server_error(), |e| {
            *e == CertificateError::UnknownIssuer
        });
    }
    assert_only(&rejections, RejectReason::UnknownCa, 2);
}

#[test]
fn ca_rejects_a_self_signed_client() {
    let pki = Pki::new("ca-self");
    let (server, rejections) = pki.server_with(Some(&pki.ca), &[]);
    let conn = present(&pki, &server, BOTH, Some(pki.client_self.certified_key()));
    assert_cert_error(conn.server_error(), |e| {
        *e == CertificateError::UnknownIssuer
    });
    assert_only(&rejections, RejectReason::UnknownCa, 1);
}

#[test]
fn ca_rejects_a_client_without_certificate() {
    let pki = Pki::new("ca-nocert");
    let (server, rejections) = pki.server_with(Some(&pki.ca), &[]);
    for versions in [TLS13, TLS12] {
        let conn = present(&pki, &server, versions, None);
        let err = conn.server_error();
        assert!(matches!(err, Error::NoCertificatesPresented), "{err:?}");
        // rustls refuses this before the verifier runs; the connection code reports it.
        assert_eq!(
            rejections.note_handshake_error(err),
            Some(RejectReason::NoCertificate)
        );
    }
    assert_only(&rejections, RejectReason::NoCertificate, 2);
    // Other errors are not counted a second time.
    let unknown = Error::InvalidCertificate(CertificateError::UnknownIssuer);
    assert_eq!(rejections.note_handshake_error(&unknown), None);
    assert_only(&rejections, RejectReason::NoCertificate, 2);
}

#[test]
fn ca_path_sends_the_ca_as_hint_and_allowlist_alone_sends_none() {
    /// A client certificate resolver that remembers the hints the server sent.
    #[derive(Debug)]
    struct Recording(Arc<CertifiedKey>, Mutex<Option<Vec<Vec<u8>>>>);
    impl ResolvesClientCert for Recording {
        fn resolve(&self, hints: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
            *self.1.lock().unwrap() = Some(hints.iter().map(|h| h.to_vec()).collect());
            Some(Arc::clone(&self.0))
        }
        fn has_certs(&self) -> bool {
            true
        }
    }

    let pki = Pki::new("hints");
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der.clone()).unwrap();
    for (ca, expected_hints) in [(Some(&pki.ca), 1), (None, 0)] {
        let (server, _) = pki.server_with(ca, &[pki.client.thumbprint()]);
        let recording = Arc::new(Recording(
            Arc::new(pki.client.certified_key()),
            Mutex::new(None),
        ));
        let client =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(BOTH)
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_client_cert_resolver(Arc::clone(&recording) as Arc<dyn ResolvesClientCert>);
        connect(&Arc::new(client), &server, "localhost").assert_ok(ProtocolVersion::TLSv1_3);
        let hints = recording
            .1
            .lock()
            .unwrap()
            .take()
            .expect("client was asked for a cert");
        assert_eq!(hints.len(), expected_hints);
    }
}

// ---------------------------------------------------------------------------------------------
// Server: thumbprint allowlist
// ---------------------------------------------------------------------------------------------

#[test]
fn allowlist_accepts_a_listed_self_signed_client() {
    let pki = Pki::new("allow-listed");
    let (server, rejections) = pki.server_with(None, &[pki.client_self.thumbprint()]);
    for (versions, version) in [
        (TLS13, ProtocolVersion::TLSv1_3),
        (TLS12, ProtocolVersion::TLSv1_2),
    ] {
        present(
            &pki,
            &server,
            versions,
            Some(pki.client_self.certified_key()),
        )
        .assert_ok(version);
    }
    assert_none_counted(&rejections);
}

#[test]
fn allowlist_rejects_an_unlisted_client() {
    let pki = Pki::new("allow-unlisted");
    // Only the CA-issued client is listed; no CA configured.
    let (server, rejections) = pki.server_with(None, &[pki.client.thumbprint()]);
    for (n, cert) in [&pki.client_self, &pki.client_other_ca]
        .into_iter()
        .enumerate()
    {
        let conn = present(&pki, &server, BOTH, Some(cert.certified_key()));
        assert_cert_error(conn.server_error(), |e| {
            *e == CertificateError::ApplicationVerificationFailure
        });
        assert_only(&rejections, RejectReason::NotAllowlisted, n as u64 + 1);
    }
    // An unlisted certificate out of its dates is refused for its dates: validity comes first.
    let conn = present(
        &pki,
        &server,
        BOTH,
        Some(pki.client_self_expired.certified_key()),
    );
    assert_cert_error(conn.server_error(), |e| *e == CertificateError::Expired);
    assert_eq!(rejections.get(RejectReason::Expired), 1);
}

#[test]
fn allowlist_rejects_a_listed_but_expired_client() {
    let pki = Pki::new("allow-expired");
    let listed = [
        pki.client_self_expired.thumbprint(),
        pki.client_expired.thumbprint(),
    ];
    let (server, rejections) = pki.server_with(Some(&pki.ca), &listed);
    for cert in [&pki.client_self_expired, &pki.client_expired] {
        let conn = present(&pki, &server, TLS13, Some(cert.certified_key()));
        assert_cert_error(conn.server_error(), |e| *e == CertificateError::Expired);
    }
    assert_only(&rejections, RejectReason::Expired, 2);
}

#[test]
fn allowlist_rejects_a_listed_certificate_signed_with_another_key() {
    let pki = Pki::new("allow-badsig");
    let (server, rejections) = pki.server_with(Some(&pki.ca), &[pki.client_self.thumbprint()]);
    // Someone who copied the listed (public) certificate but holds a different key: the
    // certificate passes, the handshake signature does not.
    for (n, versions) in [TLS13, TLS12].into_iter().enumerate() {
        let forged = certified(vec![pki.client_self.der.clone()], &pki.client.key_der);
        let conn = present(&pki, &server, versions, Some(forged));
        let err = conn.server_error();
        assert!(
            matches!(
                err,
                Error::InvalidCertificate(CertificateError::BadSignature)
            ),
            "{err:?}"
        );
        assert_only(&rejections, RejectReason::BadSignature, n as u64 + 1);
    }
}

#[test]
fn allowlist_rejects_an_unparsable_certificate() {
    let pki = Pki::new("allow-garbage");
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    let (server, rejections) = pki.server_with(None, &[Thumbprint::of(&garbage)]);
    let conn = present(
        &pki,
        &server,
        BOTH,
        Some(certified(vec![garbage], &pki.client.key_der)),
    );
    assert_cert_error(conn.server_error(), |e| *e == CertificateError::BadEncoding);
    assert_only(&rejections, RejectReason::BadCertificate, 1);
}

#[test]
fn ca_and_allowlist_accept_by_either_path() {
    let pki = Pki::new("ca-and-list");
    let (server, rejections) = pki.server_with(Some(&pki.ca), &[pki.client_self.thumbprint()]);
    for cert in [&pki.client, &pki.client_self] {
        let mut conn = present(&pki, &server, BOTH, Some(cert.certified_key()));
        conn.assert_ok(ProtocolVersion::TLSv1_3);
        assert_eq!(
            conn.server.peer_certificates().unwrap().first(),
            Some(&cert.der)
        );
    }
    assert_none_counted(&rejections);
    // Neither path: unknown CA.
    let conn = present(
        &pki,
        &server,
        BOTH,
        Some(pki.client_other_ca.certified_key()),
    );
    assert_cert_error(conn.server_error(), |e| {
        *e == CertificateError::UnknownIssuer
    });
    assert_only(&rejections, RejectReason::UnknownCa, 1);
}

#[test]
fn several_cas_in_the_bundle_are_all_trusted() {
    let pki = Pki::new("bundle");
    let bundle = pki.dir.write(
        "bundle.pem",
        format!(
            "{}{}",
            std::fs::read_to_string(&pki.other_ca.cert_path).unwrap(),
            std::fs::read_to_string(&pki.ca.cert_path).unwrap()
        ),
    );
    let rejections = Arc::new(TlsRejections::new());
    let settings = ServerTlsSettings {
        client_ca: Some(bundle),
        ..pki.server_settings()
    };
    let server = server_config(&settings, Arc::clone(&rejections)).unwrap();
    for cert in [&pki.client, &pki.client_other_ca] {
        present(&pki, &server, BOTH, Some(cert.certified_key()))
            .assert_ok(ProtocolVersion::TLSv1_3);
    }
    assert_none_counted(&rejections);
}

// ---------------------------------------------------------------------------------------------
// Server: a rejected client never delivers application data
// ---------------------------------------------------------------------------------------------

#[test]
fn a_rejected_client_never_delivers_application_data() {
    let pki = Pki::new("no-data");
    let (server, rejections) = pki.server_with(Some(&pki.ca), &[]);
    let cases = [
        (TLS13, Some(pki.client_other_ca.certified_key())),
        (TLS12, Some(pki.client_other_ca.certified_key())),
        (TLS13, None),
        (TLS12, None),
    ];
    for (versions, cert) in cases {
        let mut client = ClientConnection::new(
            pki.client(versions, cert),
            server_name("localhost").unwrap(),
        )
        .unwrap();
        let mut server = ServerConnection::new(Arc::clone(&server)).unwrap();
        // Queued before the handshake: rustls sends it right behind the client's Finished, in
        // the same flight as the certificate the server is about to refuse.
        client.writer().write_all(b"MSH|^~\\&|SECRET").unwrap();
        let err = handshake(&mut client, &mut server).unwrap_err();
        rejections.note_handshake_error(&err);

        // Whatever the client still sends is not decrypted for the application.
        let _ = client.writer().write_all(b"MSH|^~\\&|MORE");
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes).unwrap();
        }
        let _ = server.read_tls(&mut &bytes[..]);
        assert!(server.process_new_packets().is_err());
        let mut buf = [0u8; 64];
        if let Ok(n) = server.reader().read(&mut buf) {
            assert_eq!(n, 0, "server yielded {:?}", &buf[..n]);
        }
        assert!(server.is_handshaking());
    }
    assert_eq!(rejections.get(RejectReason::UnknownCa), 2);
    assert_eq!(rejections.get(RejectReason::NoCertificate), 2);
}

// ---------------------------------------------------------------------------------------------
// Client side (downstream links)
// ---------------------------------------------------------------------------------------------

fn plain_server(pki: &Pki, cert: &Cert) -> Arc<ServerConfig> {
    let settings = ServerTlsSettings {
        cert_chain: cert.cert_path.clone(),
        key: cert.key_path.clone(),
        ..pki.server_settings()
    };
    server_config(&settings, Arc::new(TlsRejections::new())).unwrap()
}

#[test]
fn client_ca_path_checks_the_server_name() {
    let pki = Pki::new("fwd-ca");
    let server = plain_server(&pki, &pki.server);
    let client = client_config(&ClientTlsSettings {
        ca: Some(pki.ca.cert_path.clone()),
        pinned: Vec::new(),
        client_cert: None,
    })
    .unwrap();
    for name in ["localhost", "127.0.0.1"] {
        connect(&client, &server, name).assert_ok(ProtocolVersion::TLSv1_3);
    }
    for name in ["relay.example.org", "10.0.0.1"] {
        let conn = connect(&client, &server, name);
        assert_cert_error(conn.server_error(), |e| {
            matches!(
                e,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        });
    }
    // A server certificate from another CA is refused.
    let other = client_config(&ClientTlsSettings {
        ca: Some(pki.other_ca.cert_path),
        ..ClientTlsSettings::default()
    })
    .unwrap();
    let conn = connect(&other, &server, "localhost");
    assert_cert_error(conn.server_error(), |e| {
        *e == CertificateError::UnknownIssuer
    });
}

#[test]
fn client_pin_path_ignores_the_name_but_not_the_dates() {
    let pki = Pki::new("fwd-pin");
    let server = plain_server(&pki, &pki.server);
    let pinned = client_config(&ClientTlsSettings {
        pinned: vec![pki.client.thumbprint(), pki.server.thumbprint()],
        ..ClientTlsSettings::default()
    })
    .unwrap();
    // The pin identifies the server: any name will do.
    for name in ["localhost", "engine.internal", "192.0.2.7"] {
        connect(&pinned, &server, name).assert_ok(ProtocolVersion::TLSv1_3);
    }

    // Not pinned, no CA: refused.
    let unpinned = client_config(&ClientTlsSettings {
        pinned: vec![pki.client.thumbprint()],
        ..ClientTlsSettings::default()
    })
    .unwrap();
    let conn = connect(&unpinned, &server, "localhost");
    assert_cert_error(conn.server_error(), |e| {
        *e == CertificateError::ApplicationVerificationFailure
    });

    // Pinned but expired: refused.
    let expired_server = plain_server(&pki, &pki.server_expired);
    let pinned_expired = client_config(&ClientTlsSettings {
        pinned: vec![pki.server_expired.thumbprint()],
        ..ClientTlsSettings::default()
    })
    .unwrap();
    let conn = connect(&pinned_expired, &expired_server, "localhost");
    assert_cert_error(conn.server_error(), |e| *e == CertificateError::Expired);
}

#[test]
fn client_pin_or_ca() {
    let pki = Pki::new("fwd-both");
    // CA for the real server, pin for a self-signed one; a TLS 1.2-only server too.
    let client = client_config(&ClientTlsSettings {
        ca: Some(pki.ca.cert_path.clone()),
        pinned: vec![pki.client_self.thumbprint()],
        client_cert: None,
    })
    .unwrap();
    connect(&client, &plain_server(&pki, &pki.server), "localhost")
        .assert_ok(ProtocolVersion::TLSv1_3);
    let self_signed = plain_server(&pki, &pki.client_self);
    connect(&client, &self_signed, "anything").assert_ok(ProtocolVersion::TLSv1_3);

    let tls12_server = Arc::new(
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(TLS12)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![pki.server.der.clone()],
                PrivateKeyDer::try_from(pki.server.key_der).unwrap(),
            )
            .unwrap(),
    );
    connect(&client, &tls12_server, "localhost").assert_ok(ProtocolVersion::TLSv1_2);
}

#[test]
fn client_without_ca_or_pin_is_an_error() {
    let err = client_config(&ClientTlsSettings::default()).unwrap_err();
    assert!(matches!(err, TlsSetupError::ForwardNeedsTrust));
    assert_eq!(
        err.to_string(),
        "forward TLS needs a CA bundle or a pinned server thumbprint"
    );
    // A client certificate alone does not make the server trusted.
    let pki = Pki::new("fwd-none");
    let err = client_config(&ClientTlsSettings {
        client_cert: Some((pki.client.cert_path.clone(), pki.client.key_path)),
        ..ClientTlsSettings::default()
    })
    .unwrap_err();
    assert!(matches!(err, TlsSetupError::ForwardNeedsTrust));
}

#[test]
fn client_certificate_for_mutual_tls_downstream() {
    let pki = Pki::new("fwd-mtls");
    let (server, rejections) = pki.server_with(Some(&pki.ca), &[]);
    let with_cert = client_config(&ClientTlsSettings {
        ca: Some(pki.ca.cert_path.clone()),
        pinned: Vec::new(),
        client_cert: Some((pki.client.cert_path.clone(), pki.client.key_path.clone())),
    })
    .unwrap();
    let mut conn = connect(&with_cert, &server, "localhost");
    conn.assert_ok(ProtocolVersion::TLSv1_3);
    assert_eq!(
        conn.server.peer_certificates().unwrap().first(),
        Some(&pki.client.der)
    );

    let without = client_config(&ClientTlsSettings {
        ca: Some(pki.ca.cert_path),
        ..ClientTlsSettings::default()
    })
    .unwrap();
    let conn = connect(&without, &server, "localhost");
    assert!(matches!(
        conn.server_error(),
        Error::NoCertificatesPresented
    ));
    assert_none_counted(&rejections);
}

#[test]
fn server_names_accept_dns_and_ip() {
    assert!(matches!(
        server_name("localhost"),
        Ok(ServerName::DnsName(_))
    ));
    assert!(matches!(
        server_name("127.0.0.1"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        server_name("[2001:db8::1]"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
    assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
    let err = server_name("bad name!").unwrap_err();
    assert!(err.to_string().contains("bad name!"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Setup errors name the file
// ---------------------------------------------------------------------------------------------

fn server_error(settings: &ServerTlsSettings) -> String {
    server_config(settings, Arc::new(TlsRejections::new()))
        .unwrap_err()
        .to_string()
}

fn contains_path(message: &str, path: &Path) -> bool {
    message.contains(&path.display().to_string())
}

#[test]
fn missing_files_are_named() {
    let pki = Pki::new("err-missing");
    let missing = pki.dir.path().join("nope.pem");

    let msg = server_error(&ServerTlsSettings {
        cert_chain: missing.clone(),
        ..pki.server_settings()
    });
    assert!(msg.starts_with("cannot read certificate file "), "{msg}");
    assert!(contains_path(&msg, &missing), "{msg}");

    let msg = server_error(&ServerTlsSettings {
        key: missing.clone(),
        ..pki.server_settings()
    });
    assert!(msg.starts_with("cannot read private key file "), "{msg}");
    assert!(contains_path(&msg, &missing), "{msg}");

    let msg = server_error(&ServerTlsSettings {
        client_ca: Some(missing.clone()),
        ..pki.server_settings()
    });
    assert!(msg.starts_with("cannot read client CA file "), "{msg}");
    assert!(contains_path(&msg, &missing), "{msg}");

    let msg = client_config(&ClientTlsSettings {
        ca: Some(missing.clone()),
        ..ClientTlsSettings::default()
    })
    .unwrap_err()
    .to_string();
    assert!(contains_path(&msg, &missing), "{msg}");
}

#[test]
fn files_without_the_expected_pem_are_named() {
    let pki = Pki::new("err-empty");
    let empty = pki.dir.write("empty.pem", "nothing to see here\n");

    // The key file given as the certificate: holds no certificate.
    let msg = server_error(&ServerTlsSettings {
        cert_chain: pki.server.key_path.clone(),
        ..pki.server_settings()
    });
    assert_eq!(
        msg,
        format!("{} holds no PEM certificate", pki.server.key_path.display())
    );

    // The certificate given as the key: holds no key.
    let msg = server_error(&ServerTlsSettings {
        key: pki.server.cert_path.clone(),
        ..pki.server_settings()
    });
    assert_eq!(
        msg,
        format!("{} holds no private key", pki.server.cert_path.display())
    );

    let msg = server_error(&ServerTlsSettings {
        client_ca: Some(empty.clone()),
        ..pki.server_settings()
    });
    assert_eq!(
        msg,
        format!("client CA file {} holds no certificate", empty.display())
    );

    // Broken PEM.
    let broken = pki.dir.write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let msg = server_error(&ServerTlsSettings {
        cert_chain: broken.clone(),
        ..pki.server_settings()
    });
    assert!(contains_path(&msg, &broken), "{msg}");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_named() {
    let pki = Pki::new("err-mismatch");
    let msg = server_error(&ServerTlsSettings {
        key: pki.client.key_path.clone(),
        ..pki.server_settings()
    });
    assert_eq!(
        msg,
        format!(
            "the private key in {} does not match the certificate in {}",
            pki.client.key_path.display(),
            pki.server.cert_path.display()
        )
    );

    let msg = client_config(&ClientTlsSettings {
        ca: Some(pki.ca.cert_path.clone()),
        pinned: Vec::new(),
        client_cert: Some((pki.client.cert_path.clone(), pki.server.key_path.clone())),
    })
    .unwrap_err()
    .to_string();
    assert!(msg.contains("does not match"), "{msg}");
    assert!(contains_path(&msg, &pki.server.key_path), "{msg}");
}

#[test]
fn a_chain_file_with_the_ca_appended_and_a_pkcs8_key_load() {
    let pki = Pki::new("chain");
    let chain = pki.dir.write(
        "chain.pem",
        format!(
            "{}{}",
            std::fs::read_to_string(&pki.server.cert_path).unwrap(),
            std::fs::read_to_string(&pki.ca.cert_path).unwrap()
        ),
    );
    let settings = ServerTlsSettings {
        cert_chain: chain,
        ..pki.server_settings()
    };
    let server = server_config(&settings, Arc::new(TlsRejections::new())).unwrap();
    let mut conn = present(&pki, &server, BOTH, None);
    conn.assert_ok(ProtocolVersion::TLSv1_3);
    assert_eq!(conn.client.peer_certificates().unwrap().len(), 2);
}

#[test]
fn thumbprint_matches_the_pem_file_and_openssl_format() {
    let pki = Pki::new("thumb");
    let from_file = CertificateDer::pem_file_iter(&pki.client.cert_path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let t = Thumbprint::of(&from_file);
    assert_eq!(t, pki.client.thumbprint());
    let shown = t.to_string();
    assert_eq!(shown.len(), 95);
    assert!(
        shown
            .chars()
            .all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase())
    );
    assert_eq!(shown.parse::<Thumbprint>().unwrap(), t);
}
