//! The `mllp-loadgen` binary as a user runs it: sink and send as separate processes, the
//! report files, merge, ramp, and the one-line errors for bad input.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use testkit::{
    PATIENCE, Process, ReservedPort, Signal, TempDir, established_connections, tcp_sockets,
};

const BIN: &str = env!("CARGO_BIN_EXE_mllp-loadgen");

/// Longest one `mllp-loadgen` run of these tests may take (the longest asks for 4 s of load).
const RUN_PATIENCE: Duration = Duration::from_secs(60);

/// A sink process; killed on drop, stopped with SIGINT by [`Sink::stop`].
struct Sink {
    process: Process,
    addr: String,
}

impl Sink {
    fn start(args: &[&str]) -> Self {
        let process = Process::start(
            Command::new(BIN)
                .args(["sink", "--listen", "127.0.0.1:0"])
                .args(args),
        );
        let line = process.line();
        let addr = line
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self { process, addr }
    }

    /// Stops the sink (SIGINT) and returns its final report.
    fn stop(mut self) -> String {
        let status = self.process.stop(Signal::INT);
        assert!(status.success(), "{status:?}");
        self.process.rest_of_stdout()
    }
}

fn loadgen(args: &[&str]) -> Output {
    testkit::run(Command::new(BIN).args(args), RUN_PATIENCE)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(path: &Path) -> simd_json::OwnedValue {
    let mut bytes = std::fs::read(path).unwrap();
    simd_json::to_owned_value(&mut bytes).unwrap()
}

#[test]
fn send_to_sink_writes_every_report_and_merge_adds_them() {
    use simd_json::prelude::*;
    let scratch = TempDir::new("loadgen-cli-reports");
    let sink = Sink::start(&[]);
    let (a, b) = (scratch.join("a.json"), scratch.join("b.json"));
    for out in [&a, &b] {
        let result = loadgen(&[
            "send",
            "--target",
            &sink.addr,
            "--connections",
            "4",
            "--count",
            "500",
            "--json",
            out.to_str().unwrap(),
            "--hgrm",
            scratch.join("run.hgrm").to_str().unwrap(),
            "--plot",
            scratch.join("run.svg").to_str().unwrap(),
        ]);
        assert!(result.status.success(), "{}", stderr(&result));
        assert!(
            stdout(&result).contains("throughput"),
            "{}",
            stdout(&result)
        );
    }
    let report = sink.stop();
    assert!(
        report.contains("received 1000  unique 1000  duplicates 0"),
        "{report}"
    );

    let doc = json(&a);
    assert_eq!(doc["sent"].as_u64(), Some(500));
    assert_eq!(doc["acked"].as_u64(), Some(500));
    assert_eq!(doc["ack_codes"]["AA"].as_u64(), Some(500));
    assert!(doc["errors"].as_object().unwrap().is_empty());
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(doc["latency_us"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert!(doc["throughput_msgs_per_s"].as_f64().unwrap() > 0.0);
    assert!(doc["histogram"].as_str().unwrap().starts_with("HISTF"));
    let hgrm = std::fs::read_to_string(scratch.join("run.hgrm")).unwrap();
    assert!(hgrm.contains("Percentile"), "{hgrm}");
    let svg = std::fs::read_to_string(scratch.join("run.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));

    let merged = scratch.join("merged.json");
    let result = loadgen(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    let doc = json(&merged);
    assert_eq!(doc["sent"].as_u64(), Some(1_000));
    assert_eq!(doc["latency_us"]["count"].as_u64(), Some(1_000));
}

#[test]
fn ramp_finds_a_sustainable_rate_and_writes_json() {
    use simd_json::prelude::*;
    let scratch = TempDir::new("loadgen-cli-ramp");
    let sink = Sink::start(&["--ack-delay", "1ms"]);
    let out = scratch.join("ramp.json");
    let result = loadgen(&[
        "ramp",
        "--target",
        &sink.addr,
        "--connections",
        "8",
        "--start",
        "200",
        "--step",
        "200",
        "--max-rate",
        "600",
        "--step-duration",
        "1s",
        "--warmup",
        "200ms",
        "--p99-target",
        "50ms",
        "--json",
        out.to_str().unwrap(),
    ]);
    sink.stop();
    assert!(result.status.success(), "{}", stderr(&result));
    let text = stdout(&result);
    assert!(text.contains("highest sustainable rate"), "{text}");
    let doc = json(&out);
    let steps = doc["steps"].as_array().unwrap();
    assert!(!steps.is_empty());
    // Every step's latency includes the sink's 1 ms delay.
    for step in steps {
        assert!(step["p50_us"].as_f64().unwrap() >= 1_000.0, "{step:?}");
    }
}

#[test]
fn bad_input_gets_one_line_errors_naming_the_cause() {
    let scratch = TempDir::new("loadgen-cli-bad");
    // A port where nothing listens, held for the whole test so that nobody else takes it.
    let refused = ReservedPort::new();
    let target = refused.addr().to_string();
    // A corpus path that does not exist.
    let missing = scratch.join("nowhere");
    let out = loadgen(&[
        "send",
        "--target",
        &target,
        "--corpus",
        missing.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nowhere"), "{}", stderr(&out));

    // A file without an MSH segment.
    std::fs::write(scratch.join("notes.hl7"), "this is not HL7\r").unwrap();
    let out = loadgen(&[
        "send",
        "--target",
        &target,
        "--corpus",
        scratch.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("notes.hl7") && err.lines().count() == 1,
        "{err}"
    );

    // Nothing listening.
    let out = loadgen(&["send", "--target", &target, "--count", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));

    // TLS without trust.
    let out = loadgen(&["send", "--target", &target, "--tls"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ca"), "{}", stderr(&out));

    // A target that answers, but not with ACKs: nothing acknowledged, exit status 3.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let out = loadgen(&[
        "send",
        "--target",
        &addr,
        "--count",
        "1",
        "--ack-timeout",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no message was acknowledged"));
    drop(server);
}

/// Negotiated framing: `send` and `sink` agreeing on `0x02 … 0x03` exchange every message and
/// ACK; a sender framing with MLLP's bytes at that sink is closed, the sink logging the framing
/// error with its stream offset; a frame byte a message could hold is refused by its flags.
#[test]
fn send_and_sink_speak_negotiated_framing() {
    let sink = Sink::start(&["--start-byte", "0x02", "--end-bytes", "0x03"]);
    let framed = [
        "send",
        "--target",
        &sink.addr,
        "--connections",
        "2",
        "--count",
        "200",
        "--start-byte",
        "02",
        "--end-bytes",
        "0x03",
    ];
    let out = loadgen(&framed);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("AA 200"), "{}", stdout(&out));

    let mllp = loadgen(&[
        "send",
        "--target",
        &sink.addr,
        "--count",
        "1",
        "--ack-timeout",
        "1s",
    ]);
    assert!(!mllp.status.success(), "{}", stdout(&mllp));
    let logged = testkit::wait_until(PATIENCE, || {
        sink.process
            .log()
            .tail(20)
            .contains("framing error; connection closed")
    });
    assert!(logged, "{}", sink.process.log().tail(20));
    let log = sink.process.log().tail(20);
    assert!(
        log.contains("byte 0x0B outside a frame at stream offset 0"),
        "{log}"
    );

    let out = loadgen(&["send", "--target", &sink.addr, "--start-byte", "0x7C"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--start-byte/--end-bytes: 0x7C cannot be a framing byte"),
        "{}",
        stderr(&out)
    );
    let report = sink.stop();
    assert!(report.contains("received 200"), "{report}");
}

/// Starts `mllp-loadgen hold` and returns it with its first stdout line.
fn start_hold(args: &[&str]) -> (Process, String) {
    let hold = Process::start(Command::new(BIN).arg("hold").args(args));
    let line = hold.line();
    (hold, line)
}

#[test]
fn hold_keeps_every_connection_open_until_sigterm() {
    let sink = Sink::start(&[]);
    // --duration bounds the test should the signal go astray.
    let (mut hold, line) = start_hold(&[
        "--target",
        &sink.addr,
        "--connections",
        "50",
        "--threads",
        "2",
        "--concurrent-opens",
        "8",
        "--duration",
        "60s",
    ]);
    assert_eq!(line, "holding 50 connections");
    // Every one is open on the sink's side (established; the sink has accepted them), counted
    // among the sink process's own sockets.
    let sink_pid = sink.process.pid();
    assert!(testkit::wait_until(PATIENCE, || {
        established_connections(sink_pid) >= 50
    }));
    assert_eq!(established_connections(sink_pid), 50, "the sink's side");
    assert_eq!(established_connections(hold.pid()), 50, "the hold's side");
    // Idle: a moment later, still all there.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        established_connections(sink_pid),
        50,
        "the sink's side, later"
    );

    let status = hold.stop(Signal::TERM);
    assert!(status.success(), "{status:?}");
    assert_eq!(hold.rest_of_stdout(), "closed by peer: 0\n");
    let report = sink.stop();
    // Nothing was sent; the sink saw 50 connections.
    assert!(report.contains("received 0 "), "{report}");
    assert!(report.contains("connections 50"), "{report}");
}

#[test]
fn hold_counts_connections_the_target_closes_and_reports_failures() {
    // A target that accepts 5 connections, keeps them until told, then closes them all.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (close, closing) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(5).map(Result::unwrap).collect();
        let _ = closing.recv();
        drop(held);
    });
    let (mut hold, line) =
        start_hold(&["--target", &addr, "--connections", "5", "--duration", "60s"]);
    assert_eq!(line, "holding 5 connections");
    close.send(()).unwrap();
    server.join().unwrap();
    // Being closed does not end the hold: the time or a signal does. The hold has seen every
    // close once it has no socket left.
    assert!(testkit::wait_until(PATIENCE, || tcp_sockets(hold.pid()) == 0));
    assert!(hold.alive());
    let status = hold.stop(Signal::INT);
    assert_eq!(status.code(), Some(4), "{status:?}");
    assert_eq!(hold.rest_of_stdout(), "closed by peer: 5\n");

    // Nothing listening: no `holding` line, one error naming how many failed and why.
    let refused = ReservedPort::new();
    let out = loadgen(&[
        "hold",
        "--target",
        &refused.addr().to_string(),
        "--connections",
        "3",
        "--duration",
        "10s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(
        err.contains("3 of 3 connections") && err.contains("refused") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn send_json_accounts_for_the_warmup_and_the_process_cpu() {
    use simd_json::prelude::*;
    let scratch = TempDir::new("loadgen-cli-warmup");
    let sink = Sink::start(&[]);
    let out = scratch.join("run.json");
    let result = loadgen(&[
        "send",
        "--target",
        &sink.addr,
        "--connections",
        "4",
        "--warmup",
        "300ms",
        "--duration",
        "500ms",
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    let report = sink.stop();
    let doc = json(&out);
    let sent = doc["sent"].as_u64().unwrap();
    let warmup_sent = doc["warmup_sent"].as_u64().unwrap();
    assert!(sent > 0 && warmup_sent > 0, "{sent} {warmup_sent}");
    // Closed loop against a well-behaved sink: every warm-up message is answered too.
    assert_eq!(doc["warmup_acked"].as_u64(), Some(warmup_sent));
    // The sink received every message written, warm-up included.
    let total = sent + warmup_sent;
    assert!(
        report.contains(&format!("received {total}  unique {total}  duplicates 0")),
        "{total}: {report}"
    );
    // CPU: some, and no more than the threads could have used over the process's life.
    let cpu = doc["process_cpu_s"].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu < 60.0, "{cpu}");

    // merge adds them up.
    let merged = scratch.join("merged.json");
    let result = loadgen(&[
        "merge",
        out.to_str().unwrap(),
        out.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    let doc = json(&merged);
    assert_eq!(doc["warmup_sent"].as_u64(), Some(2 * warmup_sent));
    assert_eq!(doc["process_cpu_s"].as_f64(), Some(2.0 * cpu));
}
