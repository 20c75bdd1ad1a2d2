//! `mllp-bench` run as a user runs it, on a scenario small enough for a test: real child
//! processes (sink, relay, load generator) on 127.0.0.1, then the files it leaves behind.
//!
//! The binaries come from this workspace's target directory (`cargo test --workspace` builds
//! them; `--no-build` keeps the test from running cargo inside cargo).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::TempDir;

/// Longest one `mllp-bench` run of these tests may take (the small scenario needs about 30 s
/// on a 2-core machine).
const RUN_PATIENCE: Duration = Duration::from_secs(300);

fn bench_binary() -> PathBuf {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_mllp-bench"));
    let dir = binary.parent().unwrap();
    for needed in ["mllp-relay", "mllp-loadgen"] {
        assert!(
            dir.join(needed).is_file(),
            "{needed} is not built next to mllp-bench; run `cargo build -p relay -p loadgen` \
             (scripts/check.sh does it through `cargo test --workspace`)"
        );
    }
    binary
}

fn only_child(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.into_iter().next().unwrap()
}

const TINY: &str = r#"
name = "tiny"
description = "plain closed and open phases (the peers sit them out), idle TLS connections"
systems = ["direct-plain", "mllp-relay", "haproxy"]
rounds = 1
warmup = "200ms"
duration = "1s"
spinners = false

[[phase]]
name = "closed-c4"
connections = 4
template = "adt"
size = "300"
tls = false

[[phase]]
name = "open-half"
load = "open"
connections = 4
template = "adt"
size = "300"
tls = false
rate_fraction = 0.5
rate_of = "closed-c4"

[[phase]]
name = "idle"
load = "hold"
connections = 60
baseline_connections = 20
"#;

#[test]
fn a_small_scenario_runs_end_to_end_and_leaves_its_results() {
    let dir = TempDir::new("mllp-bench-tiny");
    let scenario = dir.write("tiny.toml", TINY);
    let out = dir.join("results");
    let output = testkit::run(
        Command::new(bench_binary())
            .args(["--no-build", "--scenario"])
            .arg(&scenario)
            .arg("--out")
            .arg(&out),
        RUN_PATIENCE,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    // Every message accounted for: the verdict compares the sink's count with the sender's.
    assert!(stdout.contains("verdict: PASS"), "{stdout}");
    assert!(
        stdout.contains("closed-c4 · mllp-relay · round 1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("open-half · direct-plain · round 1:"),
        "{stdout}"
    );
    // The peers and the TLS baseline sit out plain phases; a peer that is not installed is
    // reported as skipped, never silently dropped.
    assert!(!stdout.contains("FAILED"), "{stdout}");

    let results = only_child(&out);
    let mut json = std::fs::read(results.join("results.json")).unwrap();
    let doc = simd_json::to_owned_value(&mut json).unwrap();
    use simd_json::prelude::*;
    assert_eq!(doc["passed"].as_bool(), Some(true));
    let runs = doc["runs"].as_array().unwrap();
    let load_runs: Vec<_> = runs
        .iter()
        .filter(|r| r.get("msgs_per_s").is_some())
        .collect();
    assert_eq!(load_runs.len(), 4, "2 load phases × 2 systems: {runs:?}");
    for run in &load_runs {
        assert_eq!(run["status"].as_str(), Some("ok"));
        let sent = run["sent"].as_u64().unwrap() + run["warmup_sent"].as_u64().unwrap();
        assert!(sent > 0);
        assert_eq!(run["sink_unique"].as_u64(), Some(sent), "{run:?}");
        assert_eq!(run["ack_codes"]["AA"].as_u64(), run["sent"].as_u64());
        assert!(run["sut_cpu_us_per_msg"].as_f64().unwrap() > 0.0);
        let kernel = run["sut_kernel_cpu_us_per_msg"].as_f64().unwrap();
        assert!(
            (0.0..=run["sut_cpu_us_per_msg"].as_f64().unwrap()).contains(&kernel),
            "the kernel's part is part of the whole: {kernel}"
        );
        assert!(run["sut_rss_kib"].as_u64().unwrap() > 0);
    }
    // The open-loop phase offered half of the same system's closed-loop rate.
    for system in ["direct-plain", "mllp-relay"] {
        let of = |phase: &str| {
            load_runs
                .iter()
                .find(|r| {
                    r["phase"].as_str() == Some(phase) && r["system"].as_str() == Some(system)
                })
                .unwrap()
        };
        let saturation = of("closed-c4")["msgs_per_s"].as_f64().unwrap();
        let offered = of("open-half")["target_rate"].as_f64().unwrap();
        assert!(
            (offered - saturation / 2.0).abs() <= 1.0,
            "{offered} vs {saturation}"
        );
    }
    let holds: Vec<_> = runs
        .iter()
        .filter(|r| r["phase"].as_str() == Some("idle") && r.get("connections").is_some())
        .collect();
    // direct-plain and mllp-relay, and HAProxy where it is installed.
    assert!(holds.len() >= 2, "{runs:?}");
    assert!(
        runs.iter().all(|r| r["status"].as_str() != Some("failed")),
        "{runs:?}"
    );
    for hold in holds {
        assert_eq!(hold["connections"].as_u64(), Some(60));
        assert!(hold["rss_held_kib"].as_u64() >= hold["rss_idle_kib"].as_u64());
    }

    let summary = std::fs::read_to_string(results.join("summary.md")).unwrap();
    assert!(summary.contains("| mllp-relay |"), "{summary}");
    assert!(summary.contains("verdict: PASS"), "{summary}");
    let svg = std::fs::read_to_string(results.join("latency.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{svg}");
    assert!(results.join("runs/closed-c4-mllp-relay-r1.json").is_file());
}

#[test]
fn a_broken_scenario_is_refused_with_the_key_named() {
    let dir = TempDir::new("mllp-bench-broken");
    let scenario = dir.write(
        "broken.toml",
        "name = \"x\"\n[[phase]]\nname = \"a\"\nconnectoins = 3\n",
    );
    let output = testkit::run(
        Command::new(bench_binary())
            .args(["--no-build", "--scenario"])
            .arg(&scenario),
        RUN_PATIENCE,
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connectoins"), "{stderr}");
    assert!(stderr.contains("broken.toml"), "{stderr}");
}

#[test]
fn the_systems_list_names_every_system() {
    let output = testkit::run(Command::new(bench_binary()).arg("systems"), RUN_PATIENCE);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for name in [
        "direct-plain",
        "direct-tls",
        "mllp-relay",
        "haproxy",
        "stunnel",
        "nginx",
    ] {
        assert!(stdout.contains(name), "{stdout}");
    }
}
