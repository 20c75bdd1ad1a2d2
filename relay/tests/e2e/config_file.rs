//! TOML config files: the schema, every error naming its key, the shipped examples, and the
//! `check-config` / `--config` command line.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mllp::ack::AckPolicy;
use mllp::frame::Tolerances;
use netio::runtime::Driver;
use relay::config::check::{ConfigFileError, Overrides, Problem, Settings};
use relay::config::load::{load_config, load_config_unchecked, load_config_with};
use relay::config::{
    self, AckMode, JournalConfig, MissingControlId, OnDownstreamFailure, WhenJournalFull,
};
use relay::route::{Pattern, Route, RouteMatch};
use testkit::TempDir;
use testkit::pki::Pki;
use testkit::receiver::{Behaviour, Receiver};
use testkit::{PATIENCE, Process, Signal};

const BIN: &str = env!("CARGO_BIN_EXE_mllp-relay");

/// A minimal valid file: plain in, plain out.
const MINIMAL: &str = r#"
[[listener]]
listen = "127.0.0.1:0"

[[downstream]]
name = "ehr"
address = "127.0.0.1:6661"
"#;

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    dir.write(name, text)
}

/// Runs `mllp-relay check-config FILE`, asserts it accepts the file (exit 0, nothing on stderr
/// that matters) and returns its summary on stdout.
fn check_config_accepts(path: &Path) -> String {
    let out = testkit::run(
        Command::new(BIN).args(["check-config".as_ref(), path.as_os_str()]),
        PATIENCE,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: {stdout}{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `mllp-relay check-config FILE`, asserts it refuses the file (exit 2, nothing on
/// stdout) and returns the problems it printed on stderr.
fn check_config_refuses(path: &Path) -> String {
    let out = testkit::run(
        Command::new(BIN).args(["check-config".as_ref(), path.as_os_str()]),
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// Loads `text` as a file in a fresh directory and returns its problems (it must be invalid).
fn problems(text: &str) -> Vec<Problem> {
    let dir = TempDir::new("cfg");
    let path = write(&dir, "relay.toml", text);
    match load_config(&path) {
        Ok(_) => panic!("expected an invalid config:\n{text}"),
        Err(e @ ConfigFileError::Invalid { .. }) => {
            let shown = e.to_string();
            assert!(shown.starts_with(&path.display().to_string()), "{shown}");
            for problem in e.problems() {
                assert!(shown.contains(&problem.to_string()), "{shown}");
            }
            e.problems().to_vec()
        }
        Err(e) => panic!("expected validation problems, got: {e}"),
    }
}

/// The single problem of an invalid file, asserted to be under `key`.
fn problem_at(text: &str, key: &str) -> String {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, key, "{found:#?}");
    found[0].message.clone()
}

/// The parse (serde) error of `text`, as shown to the operator.
fn parse_error(text: &str) -> (PathBuf, String) {
    let dir = TempDir::new("cfg");
    let path = write(&dir, "relay.toml", text);
    match load_config(&path) {
        Err(e @ ConfigFileError::Parse { .. }) => (path, e.to_string()),
        Err(e) => panic!("expected a parse error, got: {e}"),
        Ok(_) => panic!("expected a parse error:\n{text}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The full schema
// ---------------------------------------------------------------------------------------------

fn full_file(pki: &Pki) -> String {
    format!(
        r#"
workers = 3
pin_workers = false
driver = "epoll"
shutdown_grace = "45s"
metrics = "127.0.0.1:9464"

[[listener]]
name = "lab-results"
listen = "127.0.0.1:0"
ack_mode = "passthrough"
on_downstream_failure = "close"
missing_control_id = "reject"
ack_policy = "errors-only"
max_frame_size = "2MiB"
tolerate = ["fs_without_cr", "junk_before_start"]
normalize_segment_terminators = true
idle_timeout = "2min"
frame_deadline = "30s"
handshake_timeout = "1500ms"
write_timeout = "20s"
max_connections_per_worker = 500

[listener.tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
client_thumbprints = ["{self_signed}"]

[[downstream]]
name = "ehr"
address = "127.0.0.1:6661"
connect_timeout = "2s"
ack_timeout = "7s"
retries = 4
backoff_base = "100ms"
backoff_cap = "1h"

[downstream.tls]
ca = "ca.pem"
thumbprints = ["{server}"]
sni = "localhost"
client_cert = "client.pem"
client_key = "client.key"
"#,
        self_signed = pki.client_self.thumbprint(),
        server = pki
            .server
            .thumbprint()
            .to_string()
            .to_lowercase()
            .replace(':', ""),
    )
}

#[test]
fn a_full_file_becomes_the_expected_config() {
    let pki = Pki::new("cfg-full");
    let path = write(&pki.dir, "relay.toml", &full_file(&pki));
    let loaded = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let config = &loaded.config;

    assert_eq!(config.workers, 3);
    assert!(!config.pin_workers);
    assert_eq!(config.driver, Driver::Epoll);
    assert_eq!(config.shutdown_grace, Duration::from_secs(45));
    assert_eq!(config.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));

    let l = &config.listeners[0];
    assert_eq!(l.addr, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
    assert_eq!(l.ack_mode, AckMode::Passthrough);
    assert_eq!(l.on_downstream_failure, OnDownstreamFailure::Close);
    assert_eq!(l.missing_control_id, MissingControlId::Reject);
    assert_eq!(l.ack_policy, AckPolicy::ErrorsOnly);
    assert_eq!(l.framing.max_frame_len(), 2 << 20);
    let mut tolerances = Tolerances::STRICT;
    tolerances.fs_without_cr = true;
    tolerances.junk_before_start = true;
    assert_eq!(l.framing.tolerances(), tolerances);
    assert!(l.normalize_segment_terminators);
    assert_eq!(l.idle_timeout, Duration::from_secs(120));
    assert_eq!(l.frame_deadline, Duration::from_secs(30));
    assert_eq!(l.handshake_timeout, Duration::from_millis(1500));
    assert_eq!(l.write_timeout, Duration::from_secs(20));
    assert_eq!(l.max_connections_per_worker, 500);
    assert!(l.tls.is_some());

    assert_eq!(config.downstreams.len(), 1);
    assert!(config.routes.is_empty());
    assert_eq!(config.default_downstream, Some(0));
    let d = &config.downstreams[0];
    assert_eq!(d.name, "ehr");
    assert_eq!(d.addr, "127.0.0.1:6661".parse::<SocketAddr>().unwrap());
    assert_eq!(d.connect_timeout, Duration::from_secs(2));
    assert_eq!(d.ack_timeout, Duration::from_secs(7));
    assert_eq!(d.retries, 4);
    assert_eq!(d.backoff_base, Duration::from_millis(100));
    assert_eq!(d.backoff_cap, Duration::from_secs(3600));
    let server_name = &d.tls.as_ref().expect("downstream TLS").server_name;
    assert_eq!(server_name.to_str(), "localhost");

    // The settings keep what the summary shows: names and resolved paths.
    let s = &loaded.settings;
    assert_eq!(s.listeners.len(), 1);
    assert_eq!(s.listeners[0].name, "lab-results");
    assert_eq!(config.listeners[0].name, "lab-results");
    let tls = s.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.cert_chain, pki.server.cert_path);
    assert_eq!(tls.key, pki.server.key_path);
    assert_eq!(tls.client_ca.as_deref(), Some(pki.ca.cert_path.as_path()));
    assert_eq!(tls.client_thumbprints, [pki.client_self.thumbprint()]);
    let dtls = s.downstreams[0].tls.as_ref().unwrap();
    assert_eq!(dtls.client.pinned, [pki.server.thumbprint()]);
    assert_eq!(dtls.client.ca.as_deref(), Some(pki.ca.cert_path.as_path()));
    assert_eq!(
        dtls.client.client_cert,
        Some((pki.client.cert_path.clone(), pki.client.key_path))
    );
    assert_eq!(s.downstreams[0].address, "127.0.0.1:6661");

    let summary = s.to_string();
    for expected in [
        "listener \"lab-results\" on 127.0.0.1:0",
        "TLS: on",
        "client certificates: required",
        "OR with the listed client thumbprint",
        "downstream \"ehr\" at 127.0.0.1:6661",
        "server name localhost",
        "ack 7s",
        "routes: none",
        "default route: ehr",
        "workers: 3, not pinned",
        "metrics: http://127.0.0.1:9464/metrics",
    ] {
        assert!(
            summary.contains(expected),
            "{expected:?} not in:\n{summary}"
        );
    }
}

#[test]
fn omitted_keys_take_the_documented_defaults() {
    let dir = TempDir::new("cfg-defaults");
    let path = write(&dir, "relay.toml", MINIMAL);
    let config = load_config(&path).unwrap_or_else(|e| panic!("{e}")).config;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(config.workers, cpus);
    assert!(config.pin_workers);
    assert_eq!(config.driver, Driver::Auto);
    assert_eq!(config.shutdown_grace, config::DEFAULT_SHUTDOWN_GRACE);
    assert_eq!(config.metrics_addr, None);
    let l = &config.listeners[0];
    assert!(l.tls.is_none());
    assert_eq!(l.ack_mode, AckMode::Passthrough);
    assert_eq!(l.on_downstream_failure, OnDownstreamFailure::Nak);
    assert_eq!(l.missing_control_id, MissingControlId::Forward);
    assert_eq!(l.ack_policy, AckPolicy::Negotiated);
    assert_eq!(l.framing, mllp::frame::FramingConfig::MLLP);
    assert!(!l.normalize_segment_terminators);
    assert_eq!(l.idle_timeout, config::DEFAULT_IDLE_TIMEOUT);
    assert_eq!(l.frame_deadline, config::DEFAULT_FRAME_DEADLINE);
    assert_eq!(l.handshake_timeout, config::DEFAULT_HANDSHAKE_TIMEOUT);
    assert_eq!(l.write_timeout, config::DEFAULT_WRITE_TIMEOUT);
    assert_eq!(
        l.max_connections_per_worker,
        config::DEFAULT_MAX_CONNECTIONS_PER_WORKER
    );
    assert!(config.routes.is_empty());
    assert_eq!(config.default_downstream, Some(0), "the only downstream");
    let [d] = config.downstreams.as_slice() else {
        panic!("{:#?}", config.downstreams)
    };
    assert!(d.tls.is_none());
    assert_eq!(d.connect_timeout, config::DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(d.ack_timeout, config::DEFAULT_ACK_TIMEOUT);
    assert_eq!(d.retries, config::DEFAULT_RETRIES);
    assert_eq!(d.backoff_base, config::DEFAULT_BACKOFF_BASE);
    assert_eq!(d.backoff_cap, config::DEFAULT_BACKOFF_CAP);
}

// ---------------------------------------------------------------------------------------------
// The shipped examples
// ---------------------------------------------------------------------------------------------

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_validates() {
    let files = examples();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "downstream-tls.toml",
        "durable.toml",
        "mtls-thumbprints.toml",
        "plain.toml",
        "routing.toml",
        "tls-termination.toml",
        "two-listeners.toml",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing");
    }
    for file in &files {
        let settings = load_config_unchecked(file).unwrap_or_else(|e| panic!("{e}"));
        for listener in &settings.listeners {
            // Relative certificate paths point next to the example, not to the working
            // directory.
            if let Some(tls) = &listener.tls {
                assert!(tls.cert_chain.starts_with(file.parent().unwrap()));
            }
        }
        // A journal exactly when a mode needs one (the loader refuses anything else).
        assert_eq!(
            settings.journal.is_some(),
            settings
                .listeners
                .iter()
                .any(|l| l.config.ack_mode == AckMode::Durable),
            "{}",
            file.display()
        );
    }
}

/// Writes the test PKI's files wherever `settings` expects certificates and keys.
fn provide_files(settings: &Settings, pki: &Pki) {
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    for tls in settings.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        copy(&pki.server.cert_path, &tls.cert_chain);
        copy(&pki.server.key_path, &tls.key);
        if let Some(ca) = &tls.client_ca {
            copy(&pki.ca.cert_path, ca);
        }
    }
    for tls in settings.downstreams.iter().filter_map(|d| d.tls.as_ref()) {
        if let Some(ca) = &tls.client.ca {
            copy(&pki.ca.cert_path, ca);
        }
        if let Some((cert, key)) = &tls.client.client_cert {
            copy(&pki.client.cert_path, cert);
            copy(&pki.client.key_path, key);
        }
    }
}

#[test]
fn every_example_loads_once_its_certificates_exist() {
    let pki = Pki::new("cfg-examples");
    for file in examples() {
        let dir = TempDir::new("cfg-example");
        let copied = dir.join(file.file_name().unwrap());
        std::fs::copy(&file, &copied).unwrap();
        let settings = load_config_unchecked(&copied).unwrap_or_else(|e| panic!("{e}"));
        provide_files(&settings, &pki);
        let loaded = load_config(&copied).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.config.listeners.len(), settings.listeners.len());
        for (built, checked) in loaded.config.listeners.iter().zip(&settings.listeners) {
            assert_eq!(built.name, checked.name);
            assert_eq!(built.tls.is_some(), checked.tls.is_some());
        }
        // And `check-config` itself, the command the examples tell the reader to run, passes
        // and names every listener.
        let stdout = check_config_accepts(&copied);
        for listener in &settings.listeners {
            let line = format!("listener {:?} on {}", listener.name, listener.config.addr);
            assert!(stdout.contains(&line), "{line:?} not in:\n{stdout}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors name their key
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unknown_top_level_key_is_named_with_the_file() {
    let (path, shown) = parse_error(&format!("wrokers = 2\n{MINIMAL}"));
    assert!(shown.starts_with(&path.display().to_string()), "{shown}");
    assert!(shown.contains("unknown field `wrokers`"), "{shown}");
    assert!(shown.contains("line 1"), "{shown}");
}

#[test]
fn an_unknown_key_in_listener_tls_is_named() {
    let text = format!(
        "{MINIMAL}\n[listener.tls]\ncert = \"a.pem\"\nkey = \"a.key\"\ncertificate = \"b.pem\"\n"
    );
    // `[listener.tls]` after `[[downstream]]` extends the last listener: TOML allows it.
    let (_, shown) = parse_error(&text);
    assert!(shown.contains("unknown field `certificate`"), "{shown}");
    assert!(shown.contains("expected one of `cert`, `key`"), "{shown}");
}

#[test]
fn an_unknown_key_in_downstream_is_named() {
    let (_, shown) = parse_error(&format!("{MINIMAL}ack_timout = \"5s\"\n"));
    assert!(shown.contains("unknown field `ack_timout`"), "{shown}");
}

#[test]
fn a_single_bracket_listener_gets_a_hint() {
    let (_, shown) = parse_error(
        "[listener]\nlisten = \"127.0.0.1:0\"\n[[downstream]]\nname = \"x\"\naddress = \"127.0.0.1:1\"\n",
    );
    assert!(shown.contains("[[listener]]"), "{shown}");
}

#[test]
fn a_wrong_type_is_a_parse_error_with_a_hint() {
    let (_, shown) = parse_error(&format!("{MINIMAL}ack_timeout = 10\n"));
    assert!(shown.contains("\"10s\""), "{shown}");
}

#[test]
fn a_bad_duration_names_its_key() {
    let message = problem_at(
        &format!("{MINIMAL}ack_timeout = \"10x\"\n"),
        "downstream.ack_timeout",
    );
    assert!(message.contains("\"10x\" is not a duration"), "{message}");
}

#[test]
fn a_zero_timeout_is_refused() {
    let message = problem_at(
        &MINIMAL.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nidle_timeout = \"0s\"",
        ),
        "listener.idle_timeout",
    );
    assert!(message.contains("greater than zero"), "{message}");
}

#[test]
fn a_bad_source_range_names_its_index() {
    let message = problem_at(
        &MINIMAL.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nallowed_sources = [\"10.0.0.0/8\", \"10.0.0.0/40\"]",
        ),
        "listener.allowed_sources[1]",
    );
    assert!(
        message.contains("prefix length must be 0 to 32"),
        "{message}"
    );
}

#[test]
fn a_bad_tolerance_names_its_index() {
    let message = problem_at(
        &MINIMAL.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\ntolerate = [\"fs_without_cr\", \"junk\"]",
        ),
        "listener.tolerate[1]",
    );
    assert!(message.contains("unknown tolerance \"junk\""), "{message}");
    assert!(
        message.contains("known: fs_without_cr, lf_after_fs"),
        "{message}"
    );
}

#[test]
fn a_bad_address_names_its_key() {
    // No port: refused before any DNS lookup.
    let message = problem_at(
        &MINIMAL.replace("127.0.0.1:6661", "ehr.example.org"),
        "downstream.address",
    );
    assert!(message.contains("\"ehr.example.org\""), "{message}");
    let message = problem_at(
        &MINIMAL.replace("127.0.0.1:0", "localhost:2575"),
        "listener.listen",
    );
    assert!(message.contains("IP:PORT"), "{message}");
}

#[test]
fn a_missing_listener_or_downstream_is_named() {
    let found = problems("workers = 1\n");
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["listener", "downstream"], "{found:#?}");
}

#[test]
fn ack_modes_parse_and_unknown_ones_are_named() {
    let local = MINIMAL.replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nack_mode = \"local\"",
    );
    let dir = TempDir::new("cfg-local");
    let loaded = load_config(&write(&dir, "relay.toml", &local)).unwrap();
    assert_eq!(loaded.config.listeners[0].ack_mode, AckMode::Local);
    let message = problem_at(
        &MINIMAL.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nack_mode = \"store-and-forward\"",
        ),
        "listener.ack_mode",
    );
    assert!(
        message.contains("known: passthrough, local, durable"),
        "{message}"
    );
}

#[test]
fn a_missing_tls_key_file_names_its_key() {
    let pki = Pki::new("cfg-nokey");
    let text = format!("{MINIMAL}\n[listener.tls]\ncert = \"server.pem\"\nkey = \"missing.key\"\n");
    let path = write(&pki.dir, "relay.toml", &text);
    let e = load_config(&path).expect_err("a missing key file");
    let [problem] = e.problems() else {
        panic!("{e}")
    };
    assert_eq!(problem.key, "listener.tls.key");
    let missing = pki.dir.path().join("missing.key");
    assert!(
        problem
            .message
            .starts_with(&format!("cannot read {}: ", missing.display())),
        "{problem}"
    );
}

#[test]
fn a_key_that_does_not_match_the_certificate_names_the_key() {
    let pki = Pki::new("cfg-mismatch");
    let text = format!("{MINIMAL}\n[listener.tls]\ncert = \"server.pem\"\nkey = \"client.key\"\n");
    let path = write(&pki.dir, "relay.toml", &text);
    let e = load_config(&path).expect_err("a mismatched key");
    let [problem] = e.problems() else {
        panic!("{e}")
    };
    assert_eq!(problem.key, "listener.tls.key");
    assert!(problem.message.contains("does not match"), "{problem}");
    // Skipping file checks does not read the files at all.
    assert!(load_config_unchecked(&path).is_ok());
}

#[test]
fn downstream_tls_needs_a_ca_or_a_pin() {
    let message = problem_at(
        &format!("{MINIMAL}\n[downstream.tls]\nsni = \"ehr.example.org\"\n"),
        "downstream.tls",
    );
    assert!(message.contains("ca, thumbprints or both"), "{message}");
}

#[test]
fn a_bad_thumbprint_names_its_index() {
    let pki = Pki::new("cfg-thumb");
    let text = format!(
        "{MINIMAL}\n[listener.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\
         client_thumbprints = [\"{}\", \"AB:CD\"]\n",
        pki.client_self.thumbprint()
    );
    let path = write(&pki.dir, "relay.toml", &text);
    let e = load_config(&path).expect_err("a short thumbprint");
    let [problem] = e.problems() else {
        panic!("{e}")
    };
    assert_eq!(problem.key, "listener.tls.client_thumbprints[1]");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
workers = 0
driver = "kqueue"

[[listener]]
listen = "127.0.0.1:0"
on_downstream_failure = "retry"
missing_control_id = "drop"
max_frame_size = "16MB"
tolerate = ["bogus"]

[[downstream]]
name = "bad name"
address = "127.0.0.1:6661"
ack_timeout = "soon"
retries = -1
backoff_base = "10s"
backoff_cap = "1s"
"#;
    let keys: Vec<String> = problems(text).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "workers",
            "driver",
            "listener.on_downstream_failure",
            "listener.missing_control_id",
            "listener.max_frame_size",
            "listener.tolerate[0]",
            "downstream.name",
            "downstream.ack_timeout",
            "downstream.retries",
            "downstream.backoff_cap",
        ]
    );
}

#[test]
fn relative_paths_are_resolved_against_the_file_directory() {
    let pki = Pki::new("cfg-relative");
    let sub = pki.dir.path().join("conf");
    std::fs::create_dir_all(&sub).unwrap();
    let text = format!(
        "{MINIMAL}\n[listener.tls]\ncert = \"../server.pem\"\nkey = \"{}\"\n",
        pki.server.key_path.display()
    );
    let path = sub.join("relay.toml");
    std::fs::write(&path, text).unwrap();

    // Run from elsewhere: the working directory plays no part.
    let loaded = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let tls = loaded.settings.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.cert_chain, sub.join("../server.pem"));
    assert_eq!(
        tls.key, pki.server.key_path,
        "absolute paths stay as they are"
    );
    assert!(loaded.config.listeners[0].tls.is_some());
}

#[test]
fn overrides_replace_the_file_and_are_named_by_flag() {
    let dir = TempDir::new("cfg-overrides");
    let path = write(&dir, "relay.toml", MINIMAL);
    let overrides = Overrides {
        listen: Some("127.0.0.1:2575".parse().unwrap()),
        forward: Some("127.0.0.1:7000".to_owned()),
        workers: Some(5),
        metrics: Some("127.0.0.1:9000".parse().unwrap()),
        driver: Some(Driver::Epoll),
        pin_workers: Some(false),
    };
    let config = load_config_with(&path, &overrides).unwrap().config;
    assert_eq!(config.listeners[0].addr, overrides.listen.unwrap());
    assert_eq!(
        config.downstreams[0].addr,
        "127.0.0.1:7000".parse().unwrap()
    );
    assert_eq!(config.workers, 5);
    assert_eq!(config.metrics_addr, overrides.metrics);
    assert_eq!(config.driver, Driver::Epoll);
    assert!(!config.pin_workers);

    let bad = Overrides {
        forward: Some("no-port".to_owned()),
        ..Overrides::default()
    };
    let e = load_config_with(&path, &bad).expect_err("a bad --forward");
    assert_eq!(e.problems()[0].key, "--forward");

    // A file may leave the address to the command line.
    let path = write(
        &dir,
        "partial.toml",
        "[[listener]]\n[[downstream]]\nname = \"ehr\"\naddress = \"127.0.0.1:1\"\n",
    );
    assert_eq!(
        load_config(&path).err().unwrap().problems()[0].key,
        "listener.listen"
    );
    assert!(load_config_with(&path, &overrides).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Several downstreams and routes
// ---------------------------------------------------------------------------------------------

/// Two receivers, results to the EHR, ADT to the engine, the rest to the engine.
const ROUTING: &str = r#"
default_route = "engine"

[[listener]]
listen = "127.0.0.1:0"

[[downstream]]
name = "ehr"
address = "127.0.0.1:6661"
ack_timeout = "15s"

[[downstream]]
name = "engine"
address = "127.0.0.1:6662"
retries = 0

[[route]]
sending_application = "LAB"
sending_facility = "*"
receiving_application = "EHR"
message_type = "ORU"
trigger_event = "R01"
downstream = "ehr"

[[route]]
message_type = "ADT"
downstream = "engine"
"#;

fn exact(text: &str) -> Pattern {
    Pattern::Exact(text.as_bytes().to_vec())
}

/// `ROUTING` with its first `[[route]]` table replaced by `replacement` (a whole table).
fn routing_with_first_route(replacement: &str) -> String {
    let start = ROUTING.find("[[route]]").unwrap();
    let end = start + ROUTING[start + 1..].find("[[route]]").unwrap() + 1;
    format!("{}{replacement}\n{}", &ROUTING[..start], &ROUTING[end..])
}

#[test]
fn a_routing_file_becomes_downstreams_routes_and_a_default() {
    let dir = TempDir::new("cfg-routing");
    let loaded = load_config(&write(&dir, "relay.toml", ROUTING)).unwrap_or_else(|e| panic!("{e}"));
    let config = &loaded.config;

    let names: Vec<&str> = config.downstreams.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["ehr", "engine"]);
    let [ehr, engine] = config.downstreams.as_slice() else {
        unreachable!()
    };
    assert_eq!(ehr.addr, "127.0.0.1:6661".parse::<SocketAddr>().unwrap());
    assert_eq!(ehr.ack_timeout, Duration::from_secs(15));
    assert_eq!(ehr.retries, config::DEFAULT_RETRIES);
    assert_eq!(engine.addr, "127.0.0.1:6662".parse::<SocketAddr>().unwrap());
    assert_eq!(engine.ack_timeout, config::DEFAULT_ACK_TIMEOUT);
    assert_eq!(engine.retries, 0);

    assert_eq!(
        config.routes,
        [
            Route {
                matcher: RouteMatch {
                    sending_application: exact("LAB"),
                    sending_facility: Pattern::Any,
                    receiving_application: exact("EHR"),
                    receiving_facility: Pattern::Any,
                    message_type: exact("ORU"),
                    trigger_event: exact("R01"),
                    listener: Pattern::Any,
                    sender: Pattern::Any,
                },
                downstream: 0,
            },
            Route {
                matcher: RouteMatch {
                    message_type: exact("ADT"),
                    ..RouteMatch::default()
                },
                downstream: 1,
            },
        ]
    );
    assert_eq!(config.default_downstream, Some(1));

    let summary = loaded.settings.to_string();
    for expected in [
        "downstream \"ehr\" at 127.0.0.1:6661\n  TLS: off (plain TCP)\n  timeouts: connect 5s, ack 15s",
        "downstream \"engine\" at 127.0.0.1:6662\n  TLS: off (plain TCP)\n  timeouts: connect 5s, ack 10s; 0 retries",
        "  1. LAB/*/EHR/*/ORU^R01 -> ehr\n  2. */*/*/*/ADT^* -> engine\n",
        "default route: engine\n",
    ] {
        assert!(
            summary.contains(expected),
            "{expected:?} not in:\n{summary}"
        );
    }
}

#[test]
fn one_downstream_without_routes_takes_every_message() {
    let dir = TempDir::new("cfg-one");
    let config = load_config(&write(&dir, "relay.toml", MINIMAL))
        .unwrap()
        .config;
    assert_eq!(config.downstreams.len(), 1);
    assert!(config.routes.is_empty());
    assert_eq!(config.default_downstream, Some(0));

    // With a rule, the single downstream is no longer the implicit default ...
    let routed = format!("{MINIMAL}\n[[route]]\nmessage_type = \"ORU\"\ndownstream = \"ehr\"\n");
    let loaded = load_config(&write(&dir, "routed.toml", &routed)).unwrap();
    assert_eq!(loaded.config.routes.len(), 1);
    assert_eq!(loaded.config.default_downstream, None);
    assert!(
        loaded.settings.to_string().contains(
            "  1. */*/*/*/ORU^* -> ehr\ndefault route: none: unrouted messages are refused with AR"
        ),
        "{}",
        loaded.settings
    );
    // ... unless named.
    let text = format!("default_route = \"ehr\"\n{routed}");
    let config = load_config(&write(&dir, "default.toml", &text))
        .unwrap()
        .config;
    assert_eq!(config.default_downstream, Some(0));
}

#[test]
fn two_downstreams_without_a_default_route_refuse_unrouted_messages() {
    let dir = TempDir::new("cfg-nodefault");
    let text = ROUTING.replace("default_route = \"engine\"\n", "");
    let loaded = load_config(&write(&dir, "relay.toml", &text)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.routes.len(), 2);
    assert_eq!(loaded.config.default_downstream, None);
    let summary = loaded.settings.to_string();
    assert!(
        summary.contains("default route: none: unrouted messages are refused with AR"),
        "{summary}"
    );

    // Without any route either: every message would be refused, which is still a valid (if
    // odd) file; the summary says so.
    let start = text.find("[[route]]").unwrap();
    let config = load_config(&write(&dir, "bare.toml", &text[..start]))
        .unwrap()
        .config;
    assert_eq!(config.downstreams.len(), 2);
    assert!(config.routes.is_empty());
    assert_eq!(config.default_downstream, None);
}

#[test]
fn an_unknown_route_target_names_its_route() {
    let message = problem_at(
        &ROUTING.replace("downstream = \"engine\"\n", "downstream = \"engin\"\n"),
        "route[1].downstream",
    );
    assert!(
        message.contains("unknown downstream \"engin\""),
        "{message}"
    );
    assert!(message.contains("known: ehr, engine"), "{message}");

    let message = problem_at(
        &ROUTING.replace("downstream = \"engine\"\n", ""),
        "route[1].downstream",
    );
    assert!(message.starts_with("missing"), "{message}");
}

#[test]
fn an_unknown_default_route_is_named() {
    let message = problem_at(
        &ROUTING.replace("default_route = \"engine\"", "default_route = \"archive\""),
        "default_route",
    );
    assert!(
        message.contains("unknown downstream \"archive\" (known: ehr, engine)"),
        "{message}"
    );
}

#[test]
fn a_duplicate_downstream_name_is_named_by_index() {
    let message = problem_at(
        &ROUTING.replacen(
            "[[route]]",
            "[[downstream]]\nname = \"ehr\"\naddress = \"127.0.0.1:6663\"\n\n[[route]]",
            1,
        ),
        "downstream[2].name",
    );
    assert!(message.contains("duplicate"), "{message}");
    assert!(message.contains("downstream[0]"), "{message}");
}

#[test]
fn problems_in_one_of_several_downstreams_are_named_by_index() {
    let text = ROUTING
        .replace("ack_timeout = \"15s\"", "ack_timeout = \"15x\"")
        .replace(
            "retries = 0",
            "retries = 0\n\n[downstream.tls]\nsni = \"engine\"",
        );
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["downstream[0].ack_timeout", "downstream[1].tls"]);
}

#[test]
fn downstream_tls_belongs_to_its_own_downstream() {
    let pki = Pki::new("cfg-routing-tls");
    let text = ROUTING.replace(
        "retries = 0",
        "retries = 0\n\n[downstream.tls]\nca = \"ca.pem\"\nsni = \"localhost\"",
    );
    let path = write(&pki.dir, "relay.toml", &text);
    let loaded = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.config.downstreams[0].tls.is_none());
    let server_name = &loaded.config.downstreams[1]
        .tls
        .as_ref()
        .unwrap()
        .server_name;
    assert_eq!(server_name.to_str(), "localhost");
    let summary = loaded.settings.to_string();
    assert!(
        summary
            .contains("downstream \"engine\" at 127.0.0.1:6662\n  TLS: on, server name localhost"),
        "{summary}"
    );

    // A file that is not a CA bundle is reported under that downstream's key.
    let path = write(&pki.dir, "bad.toml", &text.replace("ca.pem", "relay.toml"));
    let e = load_config(&path).expect_err("not a CA bundle");
    let keys: Vec<&str> = e.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["downstream[1].tls.ca"], "{e}");
}

#[test]
fn bad_route_values_name_their_key() {
    for (table, key, expected) in [
        (
            "sending_application = \"\"",
            "route[0].sending_application",
            "empty",
        ),
        (
            "sending_facility = \" LAB\"",
            "route[0].sending_facility",
            "spaces",
        ),
        (
            "message_type = \"OR*\"",
            "route[0].message_type",
            "only works alone",
        ),
        (
            "message_type = \"ORU^R01\"",
            "route[0].message_type",
            "trigger_event = \"R01\"",
        ),
        (
            "receiving_application = \"EHR^1.2.3^ISO\"",
            "route[0].receiving_application",
            "first component",
        ),
    ] {
        let text = routing_with_first_route(&format!("[[route]]\n{table}\ndownstream = \"ehr\"\n"));
        let message = problem_at(&text, key);
        assert!(message.contains(expected), "{table}: {message}");
    }
    // An unknown key in a route is a parse error naming it.
    let (_, shown) = parse_error(&routing_with_first_route(
        "[[route]]\nmessage = \"ORU\"\ndownstream = \"ehr\"\n",
    ));
    assert!(shown.contains("unknown field `message`"), "{shown}");
}

#[test]
fn forward_is_refused_with_several_downstreams() {
    let dir = TempDir::new("cfg-routing-forward");
    let path = write(&dir, "relay.toml", ROUTING);
    let overrides = Overrides {
        forward: Some("127.0.0.1:7000".to_owned()),
        ..Overrides::default()
    };
    let e = load_config_with(&path, &overrides).expect_err("--forward with two downstreams");
    let [problem] = e.problems() else {
        panic!("{e}")
    };
    assert_eq!(problem.key, "--forward");
    assert_eq!(
        problem.message,
        "the file defines 2 downstreams; set their addresses in the file"
    );
    // The other overrides still apply.
    let overrides = Overrides {
        workers: Some(2),
        ..Overrides::default()
    };
    assert_eq!(
        load_config_with(&path, &overrides).unwrap().config.workers,
        2
    );
}

#[test]
fn the_routing_example_routes_results_and_adt() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/routing.toml");
    let loaded = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let config = &loaded.config;
    let names: Vec<&str> = config.downstreams.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["ehr", "engine"]);
    assert_eq!(config.default_downstream, Some(1));
    assert_eq!(
        config.routes,
        [
            Route {
                matcher: RouteMatch {
                    sending_application: exact("LAB"),
                    message_type: exact("ORU"),
                    trigger_event: exact("R01"),
                    ..RouteMatch::default()
                },
                downstream: 0,
            },
            Route {
                matcher: RouteMatch {
                    message_type: exact("ADT"),
                    ..RouteMatch::default()
                },
                downstream: 1,
            },
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------

#[test]
fn check_config_prints_a_summary_and_exits_0() {
    let pki = Pki::new("cfg-cli-ok");
    let path = write(&pki.dir, "relay.toml", &full_file(&pki));
    let stdout = check_config_accepts(&path);
    for expected in [
        ": OK",
        "listener \"lab-results\" on 127.0.0.1:0",
        "TLS: on",
        "client certificates: required",
        "downstream \"ehr\" at 127.0.0.1:6661",
        "timeouts: idle 2min",
        "workers: 3",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
}

#[test]
fn check_config_prints_every_error_and_exits_2() {
    let dir = TempDir::new("cfg-cli-bad");
    let text = MINIMAL
        .replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\ntolerate = [\"junk\"]",
        )
        .replace(
            "address = \"127.0.0.1:6661\"",
            "address = \"127.0.0.1:6661\"\nack_timeout = \"10x\"",
        );
    let path = write(&dir, "relay.toml", &text);
    let stderr = check_config_refuses(&path);
    assert!(
        stderr.contains("listener.tolerate[0]: unknown tolerance"),
        "{stderr}"
    );
    assert!(
        stderr.contains("downstream.ack_timeout: \"10x\" is not a duration"),
        "{stderr}"
    );

    let unknown = write(
        &dir,
        "unknown.toml",
        &format!("colour = \"blue\"\n{MINIMAL}"),
    );
    let stderr = check_config_refuses(&unknown);
    assert!(stderr.contains("unknown field `colour`"), "{stderr}");
}

#[test]
fn config_refuses_flags_the_file_owns() {
    let dir = TempDir::new("cfg-cli-refuse");
    let path = write(&dir, "relay.toml", MINIMAL);
    let out = testkit::run(
        Command::new(BIN).arg("--config").arg(&path).args([
            "--ack-timeout",
            "5s",
            "--tolerate",
            "lf_after_fs",
        ]),
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--ack-timeout (set downstream.ack_timeout in the file)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--tolerate (set listener.tolerate"),
        "{stderr}"
    );
}

#[test]
fn listen_and_forward_are_required_without_config() {
    let out = testkit::run(Command::new(BIN).args(["--workers", "1"]), PATIENCE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
    assert!(stderr.contains("--forward"), "{stderr}");
}

/// The flags go through the same checks as a file: every bad value is reported at once, each
/// under its flag, with the file's limits (exit 2, nothing started).
#[test]
fn bad_flags_are_all_reported_under_their_flags() {
    let refused = testkit::ReservedPort::new();
    let out = testkit::run(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--forward"])
            .arg(refused.addr().to_string())
            .args(["--idle-timeout", "10x", "--max-frame-size", "2GiB"])
            .args(["--tolerate", "junk", "--retries", "1000", "--workers", "0"])
            .args([
                "--tls-cert",
                "/nonexistent/server.pem",
                "--tls-key",
                "server.key",
            ]),
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for expected in [
        "error: --idle-timeout: \"10x\" is not a duration",
        "error: --max-frame-size: 2147483648 bytes: must be between 1 byte and 1GiB",
        "error: --tolerate: unknown tolerance \"junk\"",
        "error: --retries: must be between 0 and 100, not 1000",
        "error: --workers: must be between 1 and 1024, not 0",
        "error: --tls-cert: cannot read /nonexistent/server.pem",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    assert!(out.stdout.is_empty(), "nothing started");
    // A size with a unit is read as in a file.
    let receiver = Receiver::start(Behaviour::Ack);
    let running = Process::start(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"])
            .args(["--forward", &receiver.addr().to_string()])
            .args(["--max-frame-size", "512KiB"]),
    );
    assert!(running.line().starts_with("mllp-relay listening on "));
}

#[test]
fn a_bad_log_filter_exits_2_and_names_it() {
    let out = testkit::run(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9"])
            .args(["--log", "relay=loud"])
            .env_remove("RUST_LOG"),
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid --log filter \"relay=loud\""),
        "{stderr}"
    );
}

#[test]
fn the_relay_runs_from_a_config_file_with_overrides() {
    let pki = Pki::new("cfg-cli-run");
    let receiver = Receiver::start(Behaviour::Ack);
    let receiver_addr = receiver.addr();
    let text = format!(
        "{}\n[listener.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n",
        MINIMAL.replace("listen = \"127.0.0.1:0\"", "listen = \"192.0.2.1:2575\"")
    );
    let path = write(&pki.dir, "relay.toml", &text);
    let running = Process::start(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"])
            .args(["--forward", &receiver_addr.to_string()]),
    );
    let line = running.line();
    let rest = line
        .strip_prefix("mllp-relay listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    let (addr, rest) = rest.split_once(' ').unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    assert!(
        rest.starts_with(&format!(
            "(TLS), forwarding to {receiver_addr} (plain), 1 worker(s)"
        )),
        "{line}"
    );
    // It accepts connections on the printed address.
    std::net::TcpStream::connect(addr).unwrap();
}

#[test]
fn the_link_policy_is_read_and_checked() {
    let single = MINIMAL.replace("name = \"ehr\"", "name = \"ehr\"\nlink = \"single\"");
    let dir = TempDir::new("cfg-link");
    let loaded = load_config(&write(&dir, "relay.toml", &single)).unwrap();
    assert_eq!(
        loaded.config.downstreams[0].link,
        config::LinkPolicy::Single
    );
    let message = problem_at(
        &MINIMAL.replace("name = \"ehr\"", "name = \"ehr\"\nlink = \"shared\""),
        "downstream.link",
    );
    assert!(message.contains("single"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Several listeners
// ---------------------------------------------------------------------------------------------

/// Two listeners: ADT plain and passthrough, lab results over TLS in `local` mode with its own
/// limits; one downstream, shared.
const TWO_LISTENERS: &str = r#"
[[listener]]
name = "adt"
listen = "127.0.0.1:0"
max_frame_size = "1MiB"
allowed_sources = ["10.0.0.0/8"]

[[listener]]
name = "lab"
listen = "127.0.0.1:0"
ack_mode = "local"
ack_policy = "always"
on_downstream_failure = "close"
max_frame_size = "2MiB"
tolerate = ["fs_without_cr"]
idle_timeout = "2min"
max_connections_per_worker = 7

[listener.tls]
cert = "server.pem"
key = "server.key"

[[downstream]]
name = "ehr"
address = "127.0.0.1:6661"
"#;

/// The TLS table of `TWO_LISTENERS`.
const LAB_TLS: &str = "[listener.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n";

/// `TWO_LISTENERS` without TLS, so that it validates without certificate files.
fn two_plain() -> String {
    assert!(TWO_LISTENERS.contains(LAB_TLS));
    TWO_LISTENERS.replace(LAB_TLS, "")
}

#[test]
fn several_listeners_each_keep_their_own_settings() {
    let pki = Pki::new("cfg-two");
    let path = write(&pki.dir, "relay.toml", TWO_LISTENERS);
    let loaded = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let [adt, lab] = loaded.config.listeners.as_slice() else {
        panic!("{:#?}", loaded.config.listeners)
    };
    assert_eq!((adt.name.as_str(), lab.name.as_str()), ("adt", "lab"));

    assert_eq!(adt.ack_mode, AckMode::Passthrough);
    assert_eq!(adt.ack_policy, AckPolicy::Negotiated);
    assert_eq!(adt.on_downstream_failure, OnDownstreamFailure::Nak);
    assert_eq!(adt.framing.max_frame_len(), 1 << 20);
    assert_eq!(adt.framing.tolerances(), Tolerances::STRICT);
    assert_eq!(adt.allowed_sources, ["10.0.0.0/8".parse().unwrap()]);
    assert_eq!(adt.idle_timeout, config::DEFAULT_IDLE_TIMEOUT);
    assert_eq!(
        adt.max_connections_per_worker,
        config::DEFAULT_MAX_CONNECTIONS_PER_WORKER
    );
    assert!(
        adt.tls.is_none(),
        "[listener.tls] belongs to the listener above it"
    );

    assert_eq!(lab.ack_mode, AckMode::Local);
    assert_eq!(lab.ack_policy, AckPolicy::Always);
    assert_eq!(lab.on_downstream_failure, OnDownstreamFailure::Close);
    assert_eq!(lab.framing.max_frame_len(), 2 << 20);
    assert!(lab.framing.tolerances().fs_without_cr);
    assert!(lab.allowed_sources.is_empty());
    assert_eq!(lab.idle_timeout, Duration::from_secs(120));
    assert_eq!(lab.max_connections_per_worker, 7);
    assert!(lab.tls.is_some());
    assert!(
        !std::sync::Arc::ptr_eq(&adt.tls_rejections, &lab.tls_rejections),
        "each listener counts its own refused client certificates"
    );

    // Downstreams and routes are shared; no journal without a durable listener.
    assert_eq!(loaded.config.downstreams.len(), 1);
    assert_eq!(loaded.config.default_downstream, Some(0));
    assert_eq!(loaded.config.journal, None);

    let summary = loaded.settings.to_string();
    let adt_at = summary
        .find("listener \"adt\" on 127.0.0.1:0\n  TLS: off (plain TCP)\n  ack mode passthrough")
        .unwrap_or_else(|| panic!("adt not in:\n{summary}"));
    let lab_at = summary
        .find("listener \"lab\" on 127.0.0.1:0\n  TLS: on")
        .unwrap_or_else(|| panic!("lab not in:\n{summary}"));
    assert!(adt_at < lab_at, "in file order:\n{summary}");
    for expected in [
        "2 listeners (each with its own settings; downstreams and routes shared):\n",
        "  frames: at most 1MiB, tolerating nothing (strict MLLP)\n  sources allowed: 10.0.0.0/8",
        "  ack mode local (ACK on receipt, no durability: messages can be lost), ack policy always",
        "  frames: at most 2MiB, tolerating fs_without_cr",
        "timeouts: idle 2min, frame 1min, handshake 10s, write 30s; at most 7 connections per worker",
        "downstream \"ehr\" at 127.0.0.1:6661",
    ] {
        assert!(
            summary.contains(expected),
            "{expected:?} not in:\n{summary}"
        );
    }
}

#[test]
fn one_listener_keeps_unindexed_keys_and_several_are_indexed() {
    // The same bad value, alone and as the second of two listeners.
    let bad = "listen = \"127.0.0.1:0\"\nidle_timeout = \"0s\"";
    let message = problem_at(
        &MINIMAL.replace("listen = \"127.0.0.1:0\"", bad),
        "listener.idle_timeout",
    );
    assert!(message.contains("greater than zero"), "{message}");
    let text = two_plain().replace(
        "idle_timeout = \"2min\"",
        "idle_timeout = \"0s\"\nwrite_timeout = \"soon\"",
    );
    let text = text.replace(
        "allowed_sources = [\"10.0.0.0/8\"]",
        "allowed_sources = [\"10.0.0.0/8\", \"10.0.0.0/99\"]",
    );
    let text = text.replace("tolerate = [\"fs_without_cr\"]", "tolerate = [\"nope\"]");
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "listener[0].allowed_sources[1]",
            "listener[1].tolerate[0]",
            "listener[1].idle_timeout",
            "listener[1].write_timeout",
        ]
    );
}

#[test]
fn tls_problems_name_the_listener_they_belong_to() {
    let pki = Pki::new("cfg-two-tls");
    // A key file that cannot be read: found while validating.
    let text = TWO_LISTENERS.replace("key = \"server.key\"", "key = \"missing.key\"");
    let e = load_config(&write(&pki.dir, "missing.toml", &text)).expect_err("no key file");
    let keys: Vec<&str> = e.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["listener[1].tls.key"], "{e}");
    // A key that does not match the certificate: found while building.
    let text = TWO_LISTENERS.replace("key = \"server.key\"", "key = \"client.key\"");
    let e = load_config(&write(&pki.dir, "mismatch.toml", &text)).expect_err("wrong key");
    let [problem] = e.problems() else {
        panic!("{e}")
    };
    assert_eq!(problem.key, "listener[1].tls.key");
    assert!(problem.message.contains("does not match"), "{problem}");
    assert!(
        e.to_string().contains("listener[1].tls.key: "),
        "the report names it too: {e}"
    );
    // A TLS table under the first of two listeners belongs to it, and its keys say so.
    let text = TWO_LISTENERS.replace(
        "allowed_sources = [\"10.0.0.0/8\"]\n",
        "allowed_sources = [\"10.0.0.0/8\"]\n\n[listener.tls]\ncert = \"server.pem\"\n",
    );
    let e = load_config(&write(&pki.dir, "first.toml", &text)).expect_err("no key");
    let [problem] = e.problems() else {
        panic!("{e}")
    };
    assert_eq!(problem.key, "listener[0].tls.key");
    assert_eq!(
        problem.message,
        "missing: the private key of listener[0].tls.cert (PEM)"
    );
}

#[test]
fn duplicate_listener_names_are_named_by_index() {
    let message = problem_at(
        &two_plain().replace("name = \"lab\"", "name = \"adt\""),
        "listener[1].name",
    );
    assert!(message.contains("duplicate: \"adt\""), "{message}");
    assert!(message.contains("listener[0]"), "{message}");

    // Two listeners without a name both get the default: the message says so.
    let unnamed = two_plain()
        .replace("name = \"adt\"\n", "")
        .replace("name = \"lab\"\n", "");
    let message = problem_at(&unnamed, "listener[1].name");
    assert!(message.contains("duplicate: \"listener\""), "{message}");
    assert!(message.contains("name each one"), "{message}");
}

#[test]
fn two_listeners_on_one_address_are_refused() {
    let two_on = |first: &str, second: &str| {
        two_plain()
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{first}\""),
                1,
            )
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{second}\""),
                1,
            )
    };
    let message = problem_at(
        &two_on("127.0.0.1:12575", "127.0.0.1:12575"),
        "listener[1].listen",
    );
    assert!(
        message.contains("127.0.0.1:12575 is already the address of listener[0]"),
        "{message}"
    );
    for (first, second) in [
        ("0.0.0.0:12575", "127.0.0.1:12575"),
        ("127.0.0.1:12575", "0.0.0.0:12575"),
        ("[::]:12575", "127.0.0.1:12575"),
    ] {
        let message = problem_at(&two_on(first, second), "listener[1].listen");
        assert!(
            message.contains("overlaps listener[0]"),
            "{first} {second}: {message}"
        );
    }
    // Different ports, or different specific IPs, or IPv4's wildcard and an IPv6 address, or
    // port 0 twice: fine.
    let dir = TempDir::new("cfg-two-addr");
    for (first, second) in [
        ("127.0.0.1:12575", "127.0.0.1:12576"),
        ("127.0.0.1:12575", "127.0.0.2:12575"),
        ("0.0.0.0:12575", "[::1]:12575"),
        ("127.0.0.1:0", "127.0.0.1:0"),
    ] {
        let path = write(&dir, "relay.toml", &two_on(first, second));
        let loaded = load_config(&path).unwrap_or_else(|e| panic!("{first} {second}: {e}"));
        assert_eq!(loaded.config.listeners.len(), 2);
    }
}

#[test]
fn listen_is_refused_with_several_listeners() {
    let pki = Pki::new("cfg-two-listen");
    let path = write(&pki.dir, "relay.toml", TWO_LISTENERS);
    let overrides = Overrides {
        listen: Some("127.0.0.1:2575".parse().unwrap()),
        ..Overrides::default()
    };
    let e = load_config_with(&path, &overrides).expect_err("--listen with two listeners");
    let [problem] = e.problems() else {
        panic!("{e}")
    };
    assert_eq!(problem.key, "--listen");
    assert!(
        problem
            .message
            .starts_with("the file defines 2 listeners; set their addresses in the file"),
        "{problem}"
    );
    // The other overrides still apply.
    let overrides = Overrides {
        workers: Some(2),
        metrics: Some("127.0.0.1:9000".parse().unwrap()),
        ..Overrides::default()
    };
    let config = load_config_with(&path, &overrides).unwrap().config;
    assert_eq!(config.workers, 2);
    assert_eq!(config.listeners.len(), 2);

    // On the command line: exit 2 with that message.
    let out = testkit::run(
        Command::new(BIN).arg("--config").arg(&path).args([
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--no-pin",
        ]),
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--listen: the file defines 2 listeners"),
        "{stderr}"
    );
}

#[test]
fn a_journal_is_needed_when_any_listener_is_durable() {
    let durable_second = two_plain().replace("ack_mode = \"local\"", "ack_mode = \"durable\"");
    let message = problem_at(&durable_second, "journal.dir");
    assert!(
        message.starts_with("missing: listener[1].ack_mode = \"durable\""),
        "{message}"
    );

    // With the journal: durable listener and passthrough listener side by side.
    let dir = TempDir::new("cfg-two-durable");
    let with_journal = format!("{durable_second}\n[journal]\ndir = \"journal\"\n");
    let loaded =
        load_config(&write(&dir, "relay.toml", &with_journal)).unwrap_or_else(|e| panic!("{e}"));
    let modes: Vec<AckMode> = loaded.config.listeners.iter().map(|l| l.ack_mode).collect();
    assert_eq!(modes, [AckMode::Passthrough, AckMode::Durable]);
    assert_eq!(
        loaded.config.journal.as_ref().map(|j| j.dir.clone()),
        Some(dir.join("journal"))
    );

    // The journal must hold the largest frame of the durable listeners (lab's 2MiB), not the
    // passthrough one's.
    let small = format!("{with_journal}max_size = \"1MiB\"\nsegment_size = \"1MiB\"\n");
    let message = problem_at(&small, "journal.max_size");
    assert!(
        message.contains("smaller than listener[1].max_frame_size (2MiB)"),
        "{message}"
    );

    // A journal with no durable listener at all is refused.
    let pki = Pki::new("cfg-two-nodurable");
    let text = format!("{TWO_LISTENERS}\n[journal]\ndir = \"journal\"\n");
    let e = load_config(&write(&pki.dir, "relay.toml", &text)).expect_err("unused journal");
    let [problem] = e.problems() else {
        panic!("{e}")
    };
    assert_eq!(problem.key, "journal");
    assert!(
        problem
            .message
            .contains("no listener has ack_mode = \"durable\""),
        "{problem}"
    );
}

#[test]
fn the_two_listeners_example_has_two_differently_configured_listeners() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/two-listeners.toml");
    let settings = load_config_unchecked(&path).unwrap_or_else(|e| panic!("{e}"));
    let [adt, lab] = settings.listeners.as_slice() else {
        panic!("{:#?}", settings.listeners)
    };
    assert_eq!(
        (adt.name.as_str(), lab.name.as_str()),
        ("adt", "lab-results")
    );
    assert_ne!(adt.config.addr, lab.config.addr);
    assert_eq!(adt.config.ack_mode, AckMode::Passthrough);
    assert_eq!(lab.config.ack_mode, AckMode::Durable);
    assert!(adt.tls.is_none(), "ADT is plain");
    assert!(lab.tls.is_some(), "lab results over TLS");
    assert_eq!(adt.config.framing.max_frame_len(), 1 << 20);
    assert_eq!(lab.config.framing.max_frame_len(), 16 << 20);
    assert!(!adt.config.allowed_sources.is_empty());
    assert_eq!(lab.config.max_connections_per_worker, 500);
    assert!(settings.journal.is_some(), "for the durable listener");
    let names: Vec<&str> = settings
        .downstreams
        .iter()
        .map(|d| d.config.name.as_str())
        .collect();
    assert_eq!(names, ["ehr", "engine"], "shared by both listeners");
    assert_eq!(settings.routes.len(), 2);
    assert_eq!(settings.default_downstream, Some(1));
}

#[test]
fn check_config_lists_every_listener() {
    let pki = Pki::new("cfg-cli-two");
    let path = write(&pki.dir, "relay.toml", TWO_LISTENERS);
    let stdout = check_config_accepts(&path);
    for expected in [
        ": OK",
        "2 listeners",
        "listener \"adt\" on 127.0.0.1:0\n  TLS: off (plain TCP)",
        "listener \"lab\" on 127.0.0.1:0\n  TLS: on",
        "ack mode local",
        "at most 7 connections per worker",
        "downstream \"ehr\" at 127.0.0.1:6661",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }

    // An error in the second listener: named by index on stderr, exit 2.
    let bad = write(
        &pki.dir,
        "bad.toml",
        &TWO_LISTENERS.replace("name = \"lab\"", "name = \"adt\""),
    );
    let stderr = check_config_refuses(&bad);
    assert!(stderr.contains("listener[1].name: duplicate"), "{stderr}");
}

#[test]
fn the_relay_runs_two_listeners_from_a_config_file() {
    let pki = Pki::new("cfg-cli-two-run");
    let receiver = Receiver::start(Behaviour::Ack);
    let receiver_addr = receiver.addr();
    let text = TWO_LISTENERS
        .replace("127.0.0.1:6661", &receiver_addr.to_string())
        .replace("allowed_sources = [\"10.0.0.0/8\"]\n", "");
    let path = write(&pki.dir, "relay.toml", &text);
    let running = Process::start(Command::new(BIN).arg("--config").arg(&path).args([
        "--workers",
        "1",
        "--no-pin",
    ]));
    let next = || running.line();
    // The first line keeps its one-listener form, for the first listener.
    let first = next();
    let rest = first
        .strip_prefix("mllp-relay listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"));
    let (addr, rest) = rest.split_once(' ').unwrap();
    let adt: SocketAddr = addr.parse().unwrap();
    assert_ne!(adt.port(), 0);
    assert!(
        rest.starts_with(&format!(
            "(plain), forwarding to {receiver_addr} (plain), 1 worker(s), ack mode passthrough"
        )),
        "{first}"
    );
    // Then one line per listener, naming it.
    let mut named = Vec::new();
    for _ in 0..2 {
        let line = next();
        let rest = line
            .strip_prefix("mllp-relay listener ")
            .unwrap_or_else(|| panic!("unexpected line: {line:?}"));
        let (name, rest) = rest.split_once(" on ").unwrap();
        let (addr, rest) = rest.split_once(' ').unwrap();
        named.push((
            name.to_owned(),
            addr.parse::<SocketAddr>().unwrap(),
            rest.to_owned(),
        ));
    }
    assert_eq!(named[0].0, "\"adt\"");
    assert_eq!(named[0].1, adt);
    assert_eq!(named[0].2, "(plain), ack mode passthrough");
    assert_eq!(named[1].0, "\"lab\"");
    assert_ne!(named[1].1.port(), 0);
    assert_ne!(named[1].1, adt);
    assert_eq!(named[1].2, "(TLS), ack mode local (no durability)");
    // Both accept connections.
    std::net::TcpStream::connect(adt).unwrap();
    std::net::TcpStream::connect(named[1].1).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The durable ACK mode and its journal
// ---------------------------------------------------------------------------------------------

/// A minimal durable file: plain in, plain out, a journal next to the file.
const DURABLE: &str = r#"
[[listener]]
listen = "127.0.0.1:0"
ack_mode = "durable"

[[downstream]]
name = "ehr"
address = "127.0.0.1:6661"

[journal]
dir = "journal"
"#;

/// `DURABLE` with `keys` (TOML lines) added to its `[journal]` table.
fn durable_with(keys: &str) -> String {
    format!("{DURABLE}{keys}\n")
}

#[test]
fn durable_with_only_a_journal_dir_takes_the_journal_defaults() {
    let dir = TempDir::new("cfg-durable-defaults");
    let path = write(&dir, "relay.toml", DURABLE);
    let loaded = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.listeners[0].ack_mode, AckMode::Durable);
    let journal = loaded.config.journal.as_ref().expect("a journal");
    assert_eq!(*journal, JournalConfig::new(dir.join("journal")));
    assert_eq!(journal.commit_interval, config::DEFAULT_COMMIT_INTERVAL);
    assert_eq!(journal.max_bytes, config::DEFAULT_JOURNAL_MAX_BYTES);
    assert_eq!(journal.segment_bytes, config::DEFAULT_SEGMENT_BYTES);
    assert_eq!(journal.memory_bytes, config::DEFAULT_JOURNAL_MEMORY_BYTES);
    assert_eq!(journal.forward_lanes, config::DEFAULT_FORWARD_LANES);
    assert_eq!(journal.when_full, WhenJournalFull::Nak);
    assert!(journal.direct_io);
    assert_eq!(loaded.settings.journal.as_ref(), Some(journal));
    // Checking the file creates nothing: the relay makes the directory when it starts.
    assert!(!dir.join("journal").exists());

    // The other modes have no journal.
    let config = load_config(&write(&dir, "plain.toml", MINIMAL))
        .unwrap()
        .config;
    assert_eq!(config.journal, None);
}

#[test]
fn durable_with_every_journal_key_becomes_the_expected_config() {
    let dir = TempDir::new("cfg-durable-full");
    let text = DURABLE.replace(
        "dir = \"journal\"",
        r#"dir = "/var/lib/mllp-relay/journal"
commit_interval = "5ms"
max_size = "2GiB"
segment_size = "16MiB"
memory = 134217728
forward_lanes = 4
when_full = "pause"
direct_io = false"#,
    );
    let loaded = load_config(&write(&dir, "relay.toml", &text)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.config.journal,
        Some(JournalConfig {
            dir: PathBuf::from("/var/lib/mllp-relay/journal"),
            commit_interval: Duration::from_millis(5),
            max_bytes: 2 << 30,
            segment_bytes: 16 << 20,
            memory_bytes: 128 << 20,
            forward_lanes: 4,
            when_full: WhenJournalFull::Pause,
            direct_io: false,
        })
    );

    let summary = loaded.settings.to_string();
    for expected in [
        "ack mode durable (AA/CA once fsync'ed to the journal",
        "journal in /var/lib/mllp-relay/journal",
        "commit interval at most 5ms",
        "at most 2GiB of records in segments of 16MiB (on disk up to 3 segments more: spares and the current one's unwritten rest), 128MiB in memory",
        "4 forward lane(s) per per-core downstream; when full: pause",
        "commits written through the page cache + fdatasync (direct_io = false)",
    ] {
        assert!(
            summary.contains(expected),
            "{expected:?} not in:\n{summary}"
        );
    }
    // Downstream failures never reach a sender that was answered on receipt.
    assert!(!summary.contains("on downstream failure"), "{summary}");
}

#[test]
fn each_bad_journal_value_names_its_key() {
    for (keys, key, expected) in [
        (
            "commit_interval = \"0s\"",
            "journal.commit_interval",
            "greater than zero",
        ),
        (
            "commit_interval = \"101ms\"",
            "journal.commit_interval",
            "at most 100ms",
        ),
        (
            "commit_interval = \"soon\"",
            "journal.commit_interval",
            "is not a duration",
        ),
        (
            "max_size = \"8GB\"",
            "journal.max_size",
            "use KiB, MiB or GiB",
        ),
        (
            "max_size = -1",
            "journal.max_size",
            "-1 is not a size in bytes",
        ),
        (
            "max_size = \"512KiB\"",
            "journal.max_size",
            "must be at least 1MiB",
        ),
        (
            "max_size = \"32MiB\"",
            "journal.max_size",
            "smaller than the default journal.segment_size (64MiB)",
        ),
        (
            "max_size = \"8MiB\"\nsegment_size = \"1MiB\"",
            "journal.max_size",
            "smaller than listener.max_frame_size (16MiB)",
        ),
        (
            "segment_size = \"1000KiB\"",
            "journal.segment_size",
            "must be at least 1MiB",
        ),
        (
            "max_size = \"1GiB\"\nsegment_size = \"2GiB\"",
            "journal.segment_size",
            "2GiB is larger than journal.max_size (1GiB)",
        ),
        ("memory = 0", "journal.memory", "must be at least 1MiB"),
        ("memory = \"lots\"", "journal.memory", "is not a size"),
        (
            "forward_lanes = 0",
            "journal.forward_lanes",
            "between 1 and 256, not 0",
        ),
        (
            "forward_lanes = 257",
            "journal.forward_lanes",
            "between 1 and 256, not 257",
        ),
        (
            "when_full = \"drop\"",
            "journal.when_full",
            "unknown value \"drop\" (known: nak, pause)",
        ),
    ] {
        let message = problem_at(&durable_with(keys), key);
        assert!(message.contains(expected), "{keys}: {message}");
    }
    let message = problem_at(
        &DURABLE.replace("dir = \"journal\"", "dir = \"\""),
        "journal.dir",
    );
    assert!(message.contains("empty path"), "{message}");
    // A smaller frame limit lets a small journal pass.
    let dir = TempDir::new("cfg-durable-small");
    let small = durable_with("max_size = \"8MiB\"\nsegment_size = \"1MiB\"").replace(
        "ack_mode = \"durable\"",
        "ack_mode = \"durable\"\nmax_frame_size = \"8MiB\"",
    );
    load_config(&write(&dir, "relay.toml", &small)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn every_journal_problem_is_reported_at_once() {
    let text = durable_with(
        "commit_interval = \"1s\"\nsegment_size = \"1KiB\"\nforward_lanes = 1000\nwhen_full = \"wait\"",
    )
    .replace("dir = \"journal\"\n", "");
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "journal.dir",
            "journal.commit_interval",
            "journal.segment_size",
            "journal.forward_lanes",
            "journal.when_full",
        ]
    );
}

#[test]
fn durable_without_a_journal_is_named_at_journal_dir() {
    let start = DURABLE.find("[journal]").unwrap();
    let message = problem_at(&DURABLE[..start], "journal.dir");
    assert!(message.starts_with("missing:"), "{message}");
    assert!(message.contains("[journal] table"), "{message}");
    // A [journal] table without its dir is named the same way.
    let message = problem_at(
        &DURABLE.replace("dir = \"journal\"", "when_full = \"nak\""),
        "journal.dir",
    );
    assert!(message.starts_with("missing:"), "{message}");
}

#[test]
fn a_journal_without_durable_is_refused() {
    for (mode, replacement) in [
        ("passthrough", ""),
        ("passthrough", "ack_mode = \"passthrough\""),
        ("local", "ack_mode = \"local\""),
    ] {
        let text = DURABLE.replace("ack_mode = \"durable\"", replacement);
        let message = problem_at(&text, "journal");
        assert!(
            message.contains("only used by ack_mode = \"durable\""),
            "{message}"
        );
        assert!(message.contains(&format!("{mode:?}")), "{message}");
    }
}

#[test]
fn an_unknown_key_in_journal_is_named() {
    let (_, shown) = parse_error(&durable_with("fsync = \"always\""));
    assert!(shown.contains("unknown field `fsync`"), "{shown}");
    assert!(shown.contains("expected one of `dir`"), "{shown}");
    assert!(shown.contains("when_full"), "{shown}");
}

#[test]
fn the_journal_dir_is_resolved_against_the_file_directory() {
    let dir = TempDir::new("cfg-durable-relative");
    let sub = dir.join("conf");
    std::fs::create_dir_all(&sub).unwrap();
    let path = sub.join("relay.toml");
    std::fs::write(
        &path,
        DURABLE.replace("dir = \"journal\"", "dir = \"../spool/journal\""),
    )
    .unwrap();
    // Loaded from elsewhere: the working directory plays no part.
    let loaded = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let expected = sub.join("../spool/journal");
    assert_eq!(loaded.config.journal.unwrap().dir, expected);

    let absolute = dir.join("abs-journal");
    std::fs::write(
        &path,
        DURABLE.replace(
            "dir = \"journal\"",
            &format!("dir = {:?}", absolute.display().to_string()),
        ),
    )
    .unwrap();
    let loaded = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.config.journal.unwrap().dir,
        absolute,
        "absolute paths stay as they are"
    );
}

#[test]
fn a_journal_dir_that_is_a_file_is_refused() {
    let dir = TempDir::new("cfg-durable-file");
    write(&dir, "journal", "not a directory");
    let path = write(&dir, "relay.toml", DURABLE);
    let e = load_config(&path).expect_err("a file in place of the journal directory");
    let [problem] = e.problems() else {
        panic!("{e}")
    };
    assert_eq!(problem.key, "journal.dir");
    assert!(problem.message.contains("is not a directory"), "{problem}");
    // Skipping file checks does not look at it.
    assert!(load_config_unchecked(&path).is_ok());
}

#[test]
fn the_durable_example_journals_with_its_documented_settings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/durable.toml");
    let settings = load_config_unchecked(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(settings.listeners[0].config.ack_mode, AckMode::Durable);
    assert!(settings.listeners[0].tls.is_some(), "TLS in");
    assert!(
        settings.downstreams.iter().all(|d| d.tls.is_none()),
        "plain out"
    );
    assert_eq!(
        settings.journal,
        Some(JournalConfig {
            dir: PathBuf::from("/var/lib/mllp-relay/journal"),
            commit_interval: Duration::from_millis(1),
            max_bytes: 8 << 30,
            segment_bytes: 64 << 20,
            memory_bytes: 64 << 20,
            forward_lanes: 8,
            when_full: WhenJournalFull::Nak,
            direct_io: true,
        })
    );
}

#[test]
fn check_config_prints_the_journal() {
    let dir = TempDir::new("cfg-cli-durable");
    let path = write(&dir, "relay.toml", &durable_with("when_full = \"pause\""));
    let stdout = check_config_accepts(&path);
    for expected in [
        "ack mode durable".to_owned(),
        format!("journal in {}", dir.join("journal").display()),
        "commit interval at most 1ms".to_owned(),
        "at most 8GiB of records in segments of 64MiB (on disk up to 3 segments more: spares and the current one's unwritten rest), 64MiB in memory".to_owned(),
        "8 forward lane(s)".to_owned(),
        "when full: pause".to_owned(),
    ] {
        assert!(stdout.contains(&expected), "{expected:?} not in:\n{stdout}");
    }

    let start = DURABLE.find("[journal]").unwrap();
    let bad = write(&dir, "bad.toml", &DURABLE[..start]);
    let stderr = check_config_refuses(&bad);
    assert!(stderr.contains("journal.dir: missing"), "{stderr}");
}

#[test]
fn durable_on_the_command_line_needs_journal_and_journal_needs_durable() {
    let relay = |args: &[&str]| {
        let out = testkit::run(
            Command::new(BIN)
                .args(["--listen", "127.0.0.1:0", "--forward", "127.0.0.1:1"])
                .args(["--workers", "1", "--no-pin"])
                .args(args),
            PATIENCE,
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = relay(&["--ack-mode", "durable"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--ack-mode durable needs --journal"),
        "{stderr}"
    );

    for args in [
        &["--journal", "/tmp/never-used"][..],
        &["--ack-mode", "local", "--journal", "/tmp/never-used"][..],
    ] {
        let (code, stderr) = relay(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--journal is only used with --ack-mode durable"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!Path::new("/tmp/never-used").exists());

    // The help describes the mode.
    let out = testkit::run(Command::new(BIN).arg("--help"), PATIENCE);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--journal <DIR>"), "{help}");
    assert!(
        help.contains("fsync'ed to the journal in --journal"),
        "{help}"
    );
}

#[test]
fn config_refuses_journal_and_points_to_journal_dir() {
    let dir = TempDir::new("cfg-cli-refuse-journal");
    let path = write(&dir, "relay.toml", DURABLE);
    let out = testkit::run(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(["--journal", "/tmp/elsewhere"]),
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--journal (set journal.dir in the file)"),
        "{stderr}"
    );
}

#[test]
fn the_relay_runs_durable_from_flags() {
    let dir = TempDir::new("cfg-cli-durable-run");
    let journal = dir.join("journal");
    let receiver = Receiver::start(Behaviour::Ack);
    let running = Process::start(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"])
            .args(["--forward", &receiver.addr().to_string()])
            .args(["--ack-mode", "durable", "--journal"])
            .arg(&journal),
    );
    let line = running.line();
    assert!(line.starts_with("mllp-relay listening on "), "{line:?}");
    assert!(
        line.trim_end()
            .ends_with(&format!("ack mode durable (journal {})", journal.display())),
        "{line:?}"
    );
    assert!(journal.is_dir(), "the relay creates its journal at start");
}

#[test]
fn the_relay_prints_where_its_metrics_are() {
    let receiver = Receiver::start(Behaviour::Ack);
    let running = Process::start(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"])
            .args(["--forward", &receiver.addr().to_string()])
            .args(["--metrics", "127.0.0.1:0"]),
    );
    // The first line, one line per listener, then the metrics line.
    let lines: Vec<String> = (0..3).map(|_| running.line()).collect();
    let line = &lines[2];
    assert!(line.starts_with("mllp-relay metrics on "), "{line:?}");
    let url = line
        .trim_end()
        .strip_prefix("mllp-relay metrics on ")
        .unwrap();
    let addr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{url:?}"));
    let mut http = std::net::TcpStream::connect(addr).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    assert!(body.contains("mllp_relay_"), "{body}");
}

// ---------------------------------------------------------------------------------------------
// The duplicate window of a durable listener
// ---------------------------------------------------------------------------------------------

/// `DURABLE` with `keys` (TOML lines) added to its `[[listener]]` table.
fn durable_listener_with(keys: &str) -> String {
    DURABLE.replace(
        "ack_mode = \"durable\"",
        &format!("ack_mode = \"durable\"\n{keys}"),
    )
}

#[test]
fn the_duplicate_window_is_off_unless_asked_for() {
    let dir = TempDir::new("cfg-window-off");
    let loaded = load_config(&write(&dir, "relay.toml", DURABLE)).unwrap();
    assert!(loaded.config.listeners[0].duplicates.is_none());
    assert!(!loaded.settings.to_string().contains("duplicate window"));
}

#[test]
fn a_duplicate_window_is_read_and_shown() {
    let dir = TempDir::new("cfg-window");
    let path = write(
        &dir,
        "relay.toml",
        &durable_listener_with("duplicate_window = \"10min\"\nduplicate_window_entries = 5000"),
    );
    let loaded = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    let window = loaded.config.listeners[0]
        .duplicates
        .as_ref()
        .expect("a window");
    assert_eq!(window.max_age, Duration::from_secs(600));
    assert_eq!(window.max_entries, 5000);
    let summary = check_config_accepts(&path);
    assert!(
        summary.contains("duplicate window: 10min, at most 5000 messages"),
        "{summary}"
    );

    // Without `duplicate_window_entries`, the default cap.
    let loaded = load_config(&write(
        &dir,
        "default-cap.toml",
        &durable_listener_with("duplicate_window = \"2min\""),
    ))
    .unwrap();
    let window = loaded.config.listeners[0].duplicates.as_ref().unwrap();
    assert_eq!(window.max_entries, config::DEFAULT_DUPLICATE_WINDOW_ENTRIES);
}

#[test]
fn each_bad_duplicate_window_names_its_key() {
    for (keys, key, expected) in [
        (
            "duplicate_window = \"25h\"",
            "listener.duplicate_window",
            "longer than 24h",
        ),
        (
            "duplicate_window = \"0s\"",
            "listener.duplicate_window",
            "greater than zero",
        ),
        (
            "duplicate_window = \"a while\"",
            "listener.duplicate_window",
            "is not a duration",
        ),
        (
            "duplicate_window = \"1min\"\nduplicate_window_entries = 0",
            "listener.duplicate_window_entries",
            "must be between 1 and",
        ),
        (
            "duplicate_window_entries = 10",
            "listener.duplicate_window_entries",
            "set without listener.duplicate_window",
        ),
    ] {
        let message = problem_at(&durable_listener_with(keys), key);
        assert!(message.contains(expected), "{keys}: {message}");
    }
}

#[test]
fn a_duplicate_window_needs_a_durable_listener() {
    let text = MINIMAL.replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nack_mode = \"local\"\nduplicate_window = \"10min\"",
    );
    let message = problem_at(&text, "listener.duplicate_window");
    assert!(message.contains("ack_mode = \"durable\""), "{message}");
}

#[test]
fn the_duplicate_window_flag_is_checked() {
    let run = |args: &[&str]| {
        let out = testkit::run(
            Command::new(BIN)
                .args(["--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9"])
                .args(args),
            PATIENCE,
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--duplicate-window", "10min"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--duplicate-window needs --ack-mode durable"),
        "{stderr}"
    );
    let dir = TempDir::new("cfg-window-flag");
    let journal = dir.join("journal");
    let journal = journal.to_str().unwrap();
    for (window, expected) in [
        ("25h", "--duplicate-window: \"25h\" is longer than 24h"),
        (
            "0s",
            "--duplicate-window: \"0s\": must be greater than zero",
        ),
    ] {
        let (code, stderr) = run(&[
            "--ack-mode",
            "durable",
            "--journal",
            journal,
            "--duplicate-window",
            window,
        ]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{window}: {stderr}");
    }

    let path = write(&dir, "relay.toml", DURABLE);
    let out = testkit::run(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(["--duplicate-window", "10min"]),
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--duplicate-window (set listener.duplicate_window in the file)"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Negotiated framing
// ---------------------------------------------------------------------------------------------

#[test]
fn frame_bytes_are_read_in_hex_and_checked() {
    let dir = TempDir::new("cfg-framing");
    let text = r#"
[[listener]]
listen = "127.0.0.1:0"
start_byte = "0x02"
end_bytes = ["03"]

[[downstream]]
name = "ehr"
address = "127.0.0.1:6661"
start_byte = "0X0b"
end_bytes = ["0x1C", "0x0D"]
"#;
    let config = load_config(&write(&dir, "relay.toml", text))
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    let listener = config.listeners[0].framing;
    assert_eq!((listener.start(), listener.end()), (0x02, &[0x03][..]));
    assert_eq!(
        config.downstreams[0].framing,
        mllp::frame::FramingConfig::MLLP
    );
    let summary = check_config_accepts(&write(&dir, "shown.toml", text));
    assert!(
        summary.contains("framing bytes: start 0x02, end 0x03 (not MLLP's"),
        "{summary}"
    );

    let problems_of = |listener: &str, downstream: &str| -> Vec<(String, String)> {
        let text = format!(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\n{listener}\n\
             [[downstream]]\nname = \"ehr\"\naddress = \"127.0.0.1:6661\"\n{downstream}\n"
        );
        problems(&text)
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect()
    };
    let found = problems_of("start_byte = \"|\"", "start_byte = \"0x7C\"");
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, "listener.start_byte");
    assert!(
        found[0].1.contains("\"|\" is not one byte in hex"),
        "{found:?}"
    );
    assert_eq!(found[1].0, "downstream.start_byte");
    assert!(
        found[1].1.contains("0x7C cannot be a framing byte"),
        "{found:?}"
    );

    let found = problems_of(
        "end_bytes = [\"0x0D\", \"0x1C\"]",
        "end_bytes = [\"0x1C\", \"0x0D\", \"0x0A\"]",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, "listener.end_bytes");
    assert!(
        found[0].1.contains("0x0D cannot be a framing byte"),
        "{found:?}"
    );
    assert_eq!(found[1].0, "downstream.end_bytes");
    assert!(found[1].1.contains("1 or 2 bytes long, got 3"), "{found:?}");
}

#[test]
fn sender_identities_and_origin_routes_are_read_and_checked() {
    let dir = TempDir::new("cfg-senders");
    let text = r#"
[[listener]]
name = "results"
listen = "127.0.0.1:0"

[[listener.sender]]
name = "lab"
sending_application = "LAB"
sending_facility = "*"

[[downstream]]
name = "ehr"
address = "127.0.0.1:6661"

[[downstream]]
name = "archive"
address = "127.0.0.1:6662"

[[route]]
listener = "results"
sender = "lab"
downstream = "archive"
"#;
    let config = load_config(&write(&dir, "relay.toml", text))
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    let rule = &config.listeners[0].senders[0];
    assert_eq!(
        (rule.name.as_str(), &rule.application, &rule.facility),
        ("lab", &exact("LAB"), &Pattern::Any)
    );
    assert_eq!(config.routes[0].matcher.sender, exact("lab"));
    assert_eq!(config.routes[0].matcher.listener, exact("results"));
    let summary = check_config_accepts(&write(&dir, "shown.toml", text));
    assert!(
        summary.contains("\"lab\": any connection as MSH-3 LAB / MSH-4 *")
            && summary.contains("1. listener results sender lab */*/*/*/*^* -> archive"),
        "{summary}"
    );

    let with = |sender: &str, route: &str, mode: &str| {
        format!(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\nack_mode = \"{mode}\"\n{sender}\n\
             [[downstream]]\nname = \"ehr\"\naddress = \"127.0.0.1:6661\"\n{route}\n"
        )
    };
    let sender = |keys: &str| format!("[[listener.sender]]\nname = \"lab\"\n{keys}\n");
    let message = problem_at(
        &with(&sender("client_subject = \"CN=lab\""), "", "passthrough"),
        "listener.sender[0].client_subject",
    );
    assert!(
        message.contains("does not ask for client certificates"),
        "{message}"
    );
    let found = problems(&with(
        &sender("client_subject = \"CN=lab\"\nclient_thumbprint = \"00\""),
        "",
        "passthrough",
    ));
    assert!(
        found
            .iter()
            .any(|p| p.message.contains("give one of the two")),
        "{found:#?}"
    );
    let twice = format!("{}{}", sender(""), sender(""));
    let message = problem_at(&with(&twice, "", "passthrough"), "listener.sender[1].name");
    assert!(message.contains("duplicate"), "{message}");
    let message = problem_at(
        &with(
            &sender(""),
            "[[route]]\nsender = \"rad\"\ndownstream = \"ehr\"",
            "passthrough",
        ),
        "route[0].sender",
    );
    assert!(message.contains("known: lab"), "{message}");
    // A journaled message is routed again from its MSH after a restart: no origin keys then.
    let text = with(
        "",
        "[[route]]\nlistener = \"listener\"\ndownstream = \"ehr\"\n[journal]\ndir = \"j\"",
        "durable",
    );
    let message = problem_at(&text, "route[0].listener");
    assert!(message.contains("routed again from its MSH"), "{message}");
}

#[test]
fn batch_and_character_set_keys_are_read_and_checked() {
    let dir = TempDir::new("cfg-charsets");
    let text = r#"
[[listener]]
listen = "127.0.0.1:0"
batch = "split"
charset = "check"
default_charset = "windows-1252"

[[downstream]]
name = "ehr"
address = "127.0.0.1:6661"
transcode_to = "UTF-8"
"#;
    let config = load_config(&write(&dir, "relay.toml", text))
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    let listener = &config.listeners[0];
    assert_eq!(listener.batch, config::BatchMode::Split);
    assert_eq!(listener.charset, config::CharsetMode::Check);
    assert_eq!(listener.default_charset.name(), "windows-1252");
    assert_eq!(
        config.downstreams[0].transcode_to,
        Some(mllp::charset::Charset::UTF8)
    );
    let summary = check_config_accepts(&write(&dir, "shown.toml", text));
    assert!(
        summary.contains("each message delivered on its own")
            && summary.contains("checked against MSH-18 (empty: windows-1252)")
            && summary.contains("messages transcoded to UNICODE UTF-8"),
        "{summary}"
    );

    let with = |listener: &str, downstream: &str| {
        format!(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\n{listener}\n\
             [[downstream]]\nname = \"ehr\"\naddress = \"127.0.0.1:6661\"\n{downstream}\n"
        )
    };
    let message = problem_at(
        &with("default_charset = \"KLINGON\"", ""),
        "listener.default_charset",
    );
    assert!(message.contains("KLINGON"), "{message}");
    let message = problem_at(
        &with("", "transcode_to = \"8859/1\""),
        "downstream.transcode_to",
    );
    assert!(message.contains("only \"UTF-8\""), "{message}");
    let message = problem_at(
        &with("batch = \"forward\"\nack_mode = \"local\"", ""),
        "listener.batch",
    );
    assert!(message.contains("ack_mode = \"passthrough\""), "{message}");
    let message = problem_at(&with("batch = \"whole\"", ""), "listener.batch");
    assert!(message.contains("split"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// `gen-certs`: throwaway certificates for the examples
// ---------------------------------------------------------------------------------------------

/// Runs `mllp-relay gen-certs DIR ARGS...` and returns what it printed and its exit status.
fn gen_certs(dir: &Path, args: &[&str]) -> std::process::Output {
    testkit::run(
        Command::new(BIN).arg("gen-certs").arg(dir).args(args),
        PATIENCE,
    )
}

/// The value of `key = "..."` that gen-certs printed under the line for `file`.
fn noted(stdout: &str, file: &Path, key: &str) -> String {
    let wrote = format!("wrote {}: ", file.display());
    let mut lines = stdout.lines().skip_while(|line| !line.starts_with(&wrote));
    assert!(lines.next().is_some(), "no {wrote:?} line in:\n{stdout}");
    let prefix = format!("{key} = ");
    lines
        .take_while(|line| line.starts_with("    "))
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .and_then(|rest| rest.split('"').nth(1))
        .unwrap_or_else(|| panic!("no {key} under {wrote:?} in:\n{stdout}"))
        .to_owned()
}

fn der_of(pem_file: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(pem_file)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn every_example_passes_check_config_once_gen_certs_has_run() {
    let dir = TempDir::new("cfg-examples-gen-certs");
    for file in examples() {
        std::fs::copy(&file, dir.join(file.file_name().unwrap())).unwrap();
    }
    let out = gen_certs(&dir.join("certs"), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in examples() {
        let copied = dir.join(file.file_name().unwrap());
        check_config_accepts(&copied);
        // A TLS example tells its reader how to get the certificates it names.
        let text = std::fs::read_to_string(&file).unwrap();
        let settings = load_config_unchecked(&copied).unwrap_or_else(|e| panic!("{e}"));
        if settings.listeners.iter().any(|l| l.tls.is_some()) {
            assert!(
                text.contains("mllp-relay gen-certs relay/examples/certs"),
                "{} does not say to run gen-certs",
                file.display()
            );
        }
    }
}

#[test]
fn gen_certs_prints_thumbprints_keeps_keys_private_and_overwrites_only_with_force() {
    let dir = TempDir::new("cfg-gen-certs");
    let certs = dir.join("certs");
    let out = gen_certs(&certs, &["--client", "lab", "--client", "ris"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What is printed for a client certificate is what the config and the relay's logs use.
    for client in ["client-lab", "client-ris", "relay-client"] {
        let pem = certs.join(format!("{client}.pem"));
        let der = der_of(&pem);
        assert_eq!(der.len(), 1, "{client}");
        let printed: netio::tls::Thumbprint =
            noted(&stdout, &pem, "client_thumbprint").parse().unwrap();
        assert_eq!(printed, netio::tls::Thumbprint::of(&der[0]), "{client}");
        let identity = netio::tls::CertIdentity::of(&der[0]);
        assert_eq!(
            Some(noted(&stdout, &pem, "client_subject")),
            identity.subject,
            "{client}"
        );
    }
    assert_eq!(
        netio::tls::CertIdentity::of(&der_of(&certs.join("client-lab.pem"))[0]).subject,
        Some("CN=lab".to_owned())
    );
    // The server chain is leaf first, then the CA, and its leaf is the printed pin.
    let chain = der_of(&certs.join("server.pem"));
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], der_of(&certs.join("ca.pem"))[0]);
    let pinned = noted(&stdout, &certs.join("server.pem"), "thumbprints");
    assert_eq!(
        pinned.parse::<netio::tls::Thumbprint>().unwrap(),
        netio::tls::Thumbprint::of(&chain[0])
    );
    let keys = [
        "ca.key",
        "server.key",
        "client-lab.key",
        "client-ris.key",
        "relay-client.key",
    ];
    for key in keys {
        assert_eq!(mode_of(&certs.join(key)), 0o600, "{key}");
        let line = format!("wrote {}: ", certs.join(key).display());
        assert!(stdout.contains(&line), "{line:?} not in:\n{stdout}");
    }

    // A second run refuses, naming a file, and changes nothing.
    let ca_before = std::fs::read(certs.join("ca.pem")).unwrap();
    let again = gen_certs(&certs, &[]);
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    assert!(again.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&certs.join("ca.pem").display().to_string()) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(certs.join("ca.pem")).unwrap(), ca_before);

    // With --force everything is new, and a key someone opened up is private again.
    std::fs::set_permissions(
        certs.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let forced = gen_certs(&certs, &["--force"]);
    assert_eq!(
        forced.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_ne!(std::fs::read(certs.join("ca.pem")).unwrap(), ca_before);
    assert_eq!(mode_of(&certs.join("server.key")), 0o600);
    assert!(certs.join("client-sender.pem").is_file());
}

#[test]
fn gen_certs_refuses_unusable_names_in_one_line() {
    let dir = TempDir::new("cfg-gen-certs-bad");
    for (args, named) in [
        (&["--name", "lab server"][..], "--name \"lab server\""),
        (&["--client", "../escape"][..], "--client \"../escape\""),
        (&["--client", "a", "--client", "a"][..], "given twice"),
    ] {
        let out = gen_certs(&dir.join("certs"), args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
    assert!(!dir.join("certs").exists(), "nothing written");
}

#[test]
fn the_generated_certificates_carry_a_message_over_mutual_tls() {
    let dir = TempDir::new("cfg-gen-certs-mtls");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mtls-thumbprints.toml");
    let copied = dir.join("mtls-thumbprints.toml");
    std::fs::copy(&example, &copied).unwrap();
    let certs = dir.join("certs");
    assert_eq!(gen_certs(&certs, &[]).status.code(), Some(0));

    let receiver = Receiver::start(Behaviour::Ack);
    let running = Process::start(
        Command::new(BIN)
            .arg("--config")
            .arg(&copied)
            .args(["--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"])
            .args(["--forward", &receiver.addr().to_string()]),
    );
    let addr = crate::support::listening_addr(&running);

    // A sender that trusts ca.pem, checks the name localhost, and presents client-sender.pem.
    let client = |with_cert: bool| {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der_of(&certs.join("ca.pem")).remove(0)).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        std::sync::Arc::new(if with_cert {
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_file(certs.join("client-sender.key"))
                    .unwrap();
            builder
                .with_client_auth_cert(der_of(&certs.join("client-sender.pem")), key)
                .unwrap()
        } else {
            builder.with_no_client_auth()
        })
    };
    let msg = testkit::hl7::oru("GEN-CERTS-1");
    let mut sender = crate::support::Client::connect_tls(addr, client(true));
    assert_eq!(
        sender.round_trip(&msg),
        testkit::receiver::ack_for(&msg, mllp::ack::AckCode::AA)
    );
    // Without a client certificate the handshake fails before any HL7 byte is read.
    let mut stranger = crate::support::Client::connect_tls(addr, client(false));
    let mut framed = Vec::new();
    mllp::frame::FramingConfig::MLLP
        .encode(&testkit::hl7::oru("GEN-CERTS-2"), &mut framed)
        .unwrap();
    let _ = stranger
        .io
        .write_all(&framed)
        .and_then(|()| stranger.io.flush());
    assert_eq!(stranger.receive(), None);
    assert_eq!(receiver.payloads(), [msg]);
}

/// The configuration reference cannot drift from the types: the schema block of
/// `docs/configuration.md` parses as a config file (unknown keys are refused, so every key it
/// shows exists), and every key of every table in `relay/src/config/raw.rs` appears in it.
#[test]
fn the_configuration_reference_matches_the_config_types() {
    let docs = include_str!("../../../docs/configuration.md");
    let schema = docs
        .split("## Schema")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|block| block.split("\n```").next())
        .expect("a ```toml block under ## Schema");
    if let Err(e) = toml::from_str::<config::raw::RawConfig>(schema) {
        panic!("docs/configuration.md's schema is not a valid config file: {e}");
    }
    let documented: Vec<&str> = schema
        .lines()
        .filter_map(|line| line.split_once(" =").map(|(key, _)| key.trim()))
        .chain(schema.lines().filter_map(|line| {
            let header = line.split('#').next().unwrap_or_default().trim();
            header
                .starts_with('[')
                .then(|| {
                    header
                        .trim_matches(|c| c == '[' || c == ']')
                        .rsplit('.')
                        .next()
                })
                .flatten()
        }))
        .collect();
    let raw = include_str!("../../src/config/raw.rs");
    let mut missing = Vec::new();
    for line in raw.lines() {
        let Some(field) = line
            .strip_prefix("    pub ")
            .and_then(|rest| rest.split_once(':'))
            .map(|(name, _)| name)
            .filter(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        else {
            continue;
        };
        if !documented.contains(&field) {
            missing.push(field);
        }
    }
    assert!(
        missing.is_empty(),
        "keys of relay/src/config/raw.rs missing from docs/configuration.md's schema: {missing:?}"
    );
}

/// SIGHUP with `--config` reads the file again: a route and a downstream added in the file
/// take effect on the open connection; a changed address keeps its running value (logged as
/// needing a restart); a broken file leaves everything as it was.
#[test]
fn sighup_reloads_the_config_file() {
    let dir = TempDir::new("cfg-sighup");
    let results = Receiver::start(Behaviour::Ack);
    let admissions = Receiver::start(Behaviour::Ack);
    let one = format!(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [[downstream]]\nname = \"results\"\naddress = \"{}\"\n",
        results.addr()
    );
    let path = write(&dir, "relay.toml", &one);
    let running = Process::start(Command::new(BIN).arg("--config").arg(&path).args([
        "--workers",
        "1",
        "--no-pin",
        "--log",
        "info",
    ]));
    let addr = crate::support::listening_addr(&running);
    let mut client = crate::support::Client::connect(addr);
    let adt = b"MSH|^~\\&|ADMIT|HOSP|EHR|CLINIC|2026||ADT^A01|S-1|P|2.5\rPID|1\r";
    client.round_trip(adt);
    assert_eq!(results.frames(), 1);

    // Add a downstream for ADT, and move the listener (which needs a restart).
    let two = format!(
        "default_route = \"results\"\n{}\n[[downstream]]\nname = \"admissions\"\naddress = \
         \"{}\"\n[[route]]\nmessage_type = \"ADT\"\ndownstream = \"admissions\"\n",
        one.replace("127.0.0.1:0", "127.0.0.1:1"),
        admissions.addr()
    );
    write(&dir, "relay.toml", &two);
    let mark = running.log().mark();
    running.signal(Signal::HUP);
    let reloaded = testkit::wait_until(PATIENCE, || {
        running
            .log()
            .since(mark)
            .iter()
            .any(|l| l.contains("SIGHUP: configuration reloaded"))
    });
    let log = running.log().since(mark).join("\n");
    assert!(reloaded, "{log}");
    assert!(
        log.contains("listener[0].listen: changed in the file, but only a restart applies it"),
        "{log}"
    );
    let adt2 = b"MSH|^~\\&|ADMIT|HOSP|EHR|CLINIC|2026||ADT^A01|S-2|P|2.5\rPID|1\r";
    client.round_trip(adt2);
    assert_eq!(
        admissions.frames(),
        1,
        "the same connection takes the new route"
    );
    assert_eq!(results.frames(), 1);

    // A broken file: refused, the running configuration stays.
    write(&dir, "relay.toml", "[[listener]]\nlisten = \"nowhere\"\n");
    let mark = running.log().mark();
    running.signal(Signal::HUP);
    let failed = testkit::wait_until(PATIENCE, || {
        running
            .log()
            .since(mark)
            .iter()
            .any(|l| l.contains("the running configuration stays in force"))
    });
    assert!(failed, "{}", running.log().since(mark).join("\n"));
    let adt3 = b"MSH|^~\\&|ADMIT|HOSP|EHR|CLINIC|2026||ADT^A01|S-3|P|2.5\rPID|1\r";
    client.round_trip(adt3);
    assert_eq!(admissions.frames(), 2);
}
