//! The shipped Prometheus alert rules (`deploy/prometheus/`): `promtool` checks them and runs
//! their unit tests, and a real Prometheus scrapes a relay whose receiver is down and sends
//! `MllpRelayDownstreamDown` to an Alertmanager (this test's own HTTP endpoint).
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`.ci/run` installs
//! it). Without them these tests print a note and pass, unless `MLLP_PROMETHEUS_REQUIRED=1`
//! (CI sets it), in which case they fail.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mllp::ack::AckCode;
use testkit::hl7::oru;
use testkit::{Process, ReservedPort, TempDir};

use crate::support::{Client, PATIENCE, code_and_id, config};

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// `tool` from PATH, or `None` (with a note) when it is not installed and not required.
fn installed(tool: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let note = format!("{tool} not found (Debian package prometheus)");
        assert!(
            std::env::var_os("MLLP_PROMETHEUS_REQUIRED").is_none_or(|v| v != "1"),
            "{note}, and MLLP_PROMETHEUS_REQUIRED=1"
        );
        eprintln!("{note}: skipped");
    }
    found
}

#[test]
fn the_shipped_rules_are_valid_and_their_unit_tests_pass() {
    let Some(promtool) = installed("promtool") else {
        return;
    };
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = testkit::run(
            Command::new(&promtool).args(args).current_dir(rules_dir()),
            PATIENCE,
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}: {text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

/// An Alertmanager stand-in: answers every request 200 and keeps the bodies.
fn alert_receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then as much body as Content-Length says.
            let complete = |request: &[u8]| {
                let text = String::from_utf8_lossy(request);
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    return false;
                };
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                body.len() >= length
            };
            while !complete(&request) {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            kept.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&request).into_owned());
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (port, bodies)
}

#[test]
fn prometheus_fires_downstream_down_for_a_relay_whose_receiver_is_down() {
    let Some(prometheus) = installed("prometheus") else {
        return;
    };
    // The receiver's address never listens: every attempt to reach it is refused.
    let gone = ReservedPort::new();
    let mut cfg = config(gone.addr());
    cfg.downstreams[0].retries = 0;
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let relay = relay::start(cfg).unwrap();
    let mut client = Client::connect(relay.listen_addr());
    let answer = client.round_trip(&oru("DOWN-1"));
    assert_eq!(code_and_id(&answer).0, AckCode::AE);

    let (alertmanager, alerts) = alert_receiver();
    let dir = TempDir::new("prometheus");
    // The shipped rules, but firing at once: the test checks the expression and the wiring,
    // the `for` durations are promtool's to test.
    let rules = std::fs::read_to_string(rules_dir().join("alerts.yml")).unwrap();
    let rules = rules
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("for:") {
                line.split("for:").next().unwrap().to_owned() + "for: 0s"
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    dir.write("alerts.yml", rules);
    let metrics = relay.metrics_addr().unwrap();
    let config = dir.write(
        "prometheus.yml",
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [alerts.yml]\n\
             alerting:\n  alertmanagers:\n    - api_version: v2\n      static_configs:\n\
             \x20       - targets: ['127.0.0.1:{alertmanager}']\n\
             scrape_configs:\n  - job_name: mllp-relay\n    static_configs:\n\
             \x20     - targets: ['{metrics}']\n"
        ),
    );
    let server = Process::start(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0"),
    );
    let fired = testkit::wait_until(Duration::from_secs(60), || {
        alerts.lock().unwrap().iter().any(|request| {
            request.contains("\"alertname\":\"MllpRelayDownstreamDown\"")
                && request.contains("\"downstream\":\"mock\"")
        })
    });
    assert!(
        fired,
        "no MllpRelayDownstreamDown alert; received: {:?}\nprometheus:\n{}",
        alerts.lock().unwrap(),
        server.log().tail(30)
    );
    drop(server);
    relay.shutdown();
}
