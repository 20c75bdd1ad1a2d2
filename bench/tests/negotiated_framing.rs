//! Negotiated framing through the three binaries, as an engineer would wire them: `mllp-loadgen
//! send` framing `0x02 … 0x03`, `mllp-relay` whose listener takes those bytes and whose
//! downstream speaks MLLP, and `mllp-loadgen sink` behind it. Every message arrives and is
//! acknowledged; a sender that frames with MLLP's bytes on that listener is closed, and the
//! relay's log names the framing error and its stream offset.
//!
//! The binaries come from this workspace's target directory, next to `mllp-bench` (`cargo test
//! --workspace` builds them).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use testkit::{Process, Signal, TempDir};

const PATIENCE: Duration = Duration::from_secs(60);

fn binary(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_mllp-bench"))
        .parent()
        .unwrap()
        .to_owned();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{name} is not built next to mllp-bench; run `cargo build -p relay -p loadgen`"
    );
    path
}

/// The `127.0.0.1:PORT` in a ready line.
fn address_in(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .to_owned()
}

#[test]
fn loadgen_relay_and_sink_agree_on_negotiated_frame_bytes() {
    let loadgen = binary("mllp-loadgen");
    let mut sink = Process::start(Command::new(&loadgen).args(["sink", "--listen", "127.0.0.1:0"]));
    let sink_addr = address_in(&sink.line());

    let dir = TempDir::new("negotiated-framing");
    let config = dir.write(
        "relay.toml",
        format!(
            "workers = 1\n\
             [[listener]]\nlisten = \"127.0.0.1:0\"\nstart_byte = \"0x02\"\nend_bytes = [\"0x03\"]\n\
             [[downstream]]\nname = \"sink\"\naddress = \"{sink_addr}\"\n"
        ),
    );
    let relay = Process::start(
        Command::new(binary("mllp-relay"))
            .arg("--config")
            .arg(&config),
    );
    let ready = relay.line_where(|line| line.starts_with("mllp-relay listening on "));
    let relay_addr = address_in(&ready);

    let send = |extra: &[&str]| {
        testkit::run(
            Command::new(&loadgen)
                .args(["send", "--target", &relay_addr, "--ack-timeout", "2s"])
                .args(extra),
            PATIENCE,
        )
    };
    let out = send(&[
        "--connections",
        "2",
        "--count",
        "300",
        "--start-byte",
        "0x02",
        "--end-bytes",
        "0x03",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("AA 300"), "{stdout}");

    // MLLP's own bytes on the negotiated listener: closed, and the log says where.
    let out = send(&["--count", "1"]);
    assert!(!out.status.success());
    let logged = testkit::wait_until(PATIENCE, || {
        relay
            .log()
            .tail(20)
            .contains("framing error; connection closed")
    });
    let log = relay.log().tail(20);
    assert!(logged, "{log}");
    assert!(log.contains("stream offset 0"), "{log}");

    let status = sink.stop(Signal::INT);
    assert!(status.success(), "{status:?}");
    let report = sink.rest_of_stdout();
    assert!(report.contains("received 300"), "{report}");
}
