//! The series every Prometheus client library exports about its process, read from
//! `/proc/self` at scrape time: CPU time, resident memory, open and maximum file descriptors,
//! start time; and the relay's build. A value that cannot be read is left out, never made up.

use std::fmt::Write as _;

/// The commit the binary was built from (`build.rs`; `unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("MLLP_GIT_COMMIT");

/// Appends `mllp_relay_build_info` and the `process_*` series to `out`.
pub(super) fn render(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP mllp_relay_build_info The relay's version and the commit it was built from \
         (always 1).\n# TYPE mllp_relay_build_info gauge\n\
         mllp_relay_build_info{{version=\"{}\",commit=\"{GIT_COMMIT}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let stat = Stat::read();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let mut series = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    };
    series(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, in seconds.",
        stat.map(|s| (s.utime + s.stime) as f64 / ticks),
    );
    series(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size, in bytes.",
        stat.map(|s| (s.rss_pages * rustix::param::page_size() as u64) as f64),
    );
    series(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        stat.zip(boot_time())
            .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / ticks),
    );
    series(
        "process_open_fds",
        "gauge",
        "Open file descriptors.",
        std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as f64),
    );
    series(
        "process_max_fds",
        "gauge",
        "The limit on open file descriptors (RLIMIT_NOFILE).",
        rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map(|n| n as f64),
    );
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    rss_pages: u64,
}

impl Stat {
    fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Fields after the command name (which may hold spaces and parentheses, so the last `)`
    /// ends it): state is field 3, utime 14, stime 15, starttime 22, rss 24 (proc(5)).
    fn parse(text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            start_ticks: field(22)?,
            rss_pages: field(24)?,
        })
    }
}

/// When the system booted, in seconds since the Unix epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (mllp (relay) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 999999 2048 18446744073709551615";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(
            (stat.utime, stat.stime, stat.start_ticks, stat.rss_pages),
            (250, 75, 123456, 2048)
        );
        assert!(Stat::parse("garbage").is_none());
    }

    #[test]
    fn this_process_reports_every_series() {
        let mut out = String::new();
        render(&mut out);
        for name in [
            "mllp_relay_build_info{version=",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(out.contains(name), "{name} missing from:\n{out}");
        }
        let value = |name: &str| -> f64 {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes ") > 1e6);
        assert!(value("process_open_fds ") >= 3.0);
        assert!(value("process_start_time_seconds ") > 1.7e9);
    }
}
