//! Child processes and what `/proc` says about them: starting a program pinned to CPUs (through
//! `taskset`, so every thread it ever creates inherits the set), reading its output lines as
//! they come, stopping it with a signal, and measuring CPU time and memory over its process
//! tree (nginx runs a master and a worker).
//!
//! CPU time is the benchmark's most stable figure on a shared VM: it is counted per process,
//! so other tenants slow a run down without changing how much CPU each message cost.

use anyhow::{Context, bail};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A set of CPU numbers, written the way `taskset -c` and the scenario files write it
/// (`1`, `0,2`, `0-3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSet(Vec<usize>);

impl CpuSet {
    /// Parses `1`, `0,2` or `0-3,6`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut cpus = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let parse = |s: &str| {
                s.trim()
                    .parse::<usize>()
                    .with_context(|| format!("{text:?} is not a CPU list like 1, 0,2 or 0-3"))
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                bail!("{text:?}: the range {part} runs backwards");
            }
            cpus.extend(lo..=hi);
        }
        if cpus.is_empty() {
            bail!("the CPU list {text:?} is empty");
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(Self(cpus))
    }

    /// The CPUs, ascending.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    /// How many CPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a parsed set; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.0.iter().map(usize::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// The CPUs this process may run on (its affinity mask), from `/proc/self/status`.
pub fn allowed_cpus() -> Option<CpuSet> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    CpuSet::parse(list.trim()).ok()
}

/// Finds an executable program on `PATH`, then in the sbin and bin directories (Debian puts
/// daemons such as HAProxy and nginx in `/usr/sbin`, which a non-root `PATH` often lacks).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// How many of a child's last output lines are kept for error messages.
const TAIL_LINES: usize = 20;

/// A started child process whose stdout and stderr are read line by line on two small threads.
///
/// Dropping it kills the child (and waits for it), so an early return never leaves a relay or
/// a spinner running behind the benchmark.
#[derive(Debug)]
pub struct Managed {
    name: String,
    child: Child,
    stdout_lines: Receiver<String>,
    tail: Arc<Mutex<Vec<String>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Managed {
    /// Starts `program args…`, pinned to `cpus` through `taskset` when both are given.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[OsString],
        cpus: Option<&CpuSet>,
        taskset: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut command = match (cpus, taskset) {
            (Some(cpus), Some(taskset)) => {
                let mut c = Command::new(taskset);
                c.arg("-c").arg(cpus.to_string()).arg(program);
                c
            }
            _ => Command::new(program),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        let (sender, stdout_lines) = channel();
        if let Some(stdout) = child.stdout.take() {
            let tail = tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    remember(&tail, &line);
                    // Nobody may listen any more: keep draining so the child never blocks.
                    let _ = sender.send(line);
                }
            });
        }
        let stderr_reader = child.stderr.take().map(|stderr| {
            let tail = tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    remember(&tail, &line);
                }
            })
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout_lines,
            tail,
            stderr_reader,
        })
    }

    /// The child's process id (`taskset` execs the program, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name it was started under, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the first stdout line that `accept` maps to a value.
    ///
    /// Fails with the child's last output lines when it exits first or `within` passes.
    pub fn wait_for_line<T>(
        &mut self,
        within: Duration,
        mut accept: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(value) = accept(&line) {
                        return Ok(value);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "{} gave no ready line within {within:?}{}",
                        self.name,
                        self.tail_text()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    self.settle_stderr();
                    bail!(
                        "{} exited ({}) before it was ready{}",
                        self.name,
                        status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string()),
                        self.tail_text()
                    )
                }
            }
        }
    }

    /// The stdout lines printed so far and not yet consumed.
    pub fn take_lines(&mut self) -> Vec<String> {
        self.stdout_lines.try_iter().collect()
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal`, waits up to `grace` for the exit, then kills. Returns the exit status
    /// and every stdout line not consumed yet.
    pub fn stop(
        mut self,
        signal: rustix::process::Signal,
        grace: Duration,
    ) -> (Option<ExitStatus>, Vec<String>) {
        let status = self.stop_in_place(signal, grace);
        // The reader thread ends at EOF, which follows the exit; give it a moment to hand over.
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        (status, lines)
    }

    /// Waits for the child to exit by itself, up to `limit`; kills it after that. A child that
    /// exits with a failure status is an error carrying its last output lines.
    pub fn wait(mut self, limit: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            lines.extend(self.stdout_lines.try_iter());
            if let Some(status) = self.child.try_wait()? {
                self.settle_stderr();
                let tail = self.tail_text();
                let name = self.name.clone();
                let (_, rest) = self.stop(rustix::process::Signal::KILL, Duration::ZERO);
                lines.extend(rest);
                if !status.success() {
                    bail!("{name} failed ({status}){tail}");
                }
                return Ok(lines);
            }
            if Instant::now() >= deadline {
                let tail = self.tail_text();
                let name = self.name.clone();
                drop(self.stop(rustix::process::Signal::KILL, Duration::ZERO));
                bail!("{name} did not finish within {limit:?} and was killed{tail}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines the child wrote (stdout and stderr), for an error message.
    pub fn tail_text(&self) -> String {
        let tail = self.tail.lock().map(|t| t.clone()).unwrap_or_default();
        if tail.is_empty() {
            String::new()
        } else {
            format!("; its last output:\n    {}", tail.join("\n    "))
        }
    }

    /// Lets the stderr reader take in the last lines of a child that has exited (bounded: a
    /// grandchild may still hold the pipe open).
    fn settle_stderr(&mut self) {
        if let Some(reader) = self.stderr_reader.take() {
            let deadline = Instant::now() + Duration::from_millis(500);
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn stop_in_place(
        &mut self,
        signal: rustix::process::Signal,
        grace: Duration,
    ) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, signal);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn remember(tail: &Mutex<Vec<String>>, line: &str) {
    if let Ok(mut tail) = tail.lock() {
        if tail.len() == TAIL_LINES {
            tail.remove(0);
        }
        tail.push(line.to_owned());
    }
}

/// One process's line of `/proc/PID/stat`, the fields the benchmark uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    parent: u32,
    /// utime + stime + cutime + cstime, in clock ticks: the process's own CPU time plus that
    /// of the children it has reaped (an nginx worker that exited still counts).
    cpu_ticks: u64,
    /// The kernel's part of `cpu_ticks`: stime + cstime.
    system_ticks: u64,
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        parent: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)? + field(15)? + field(16)? + field(17)?,
        system_ticks: field(15)? + field(17)?,
    })
}

/// Every process on the machine: pid → (parent, CPU ticks).
fn all_processes() -> HashMap<u32, ProcStat> {
    let mut all = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return all;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            all.insert(pid, stat);
        }
    }
    all
}

/// `root` and all its descendants.
pub fn process_tree(root: u32) -> Vec<u32> {
    tree_of(root, &all_processes())
}

fn tree_of(root: u32, all: &HashMap<u32, ProcStat>) -> Vec<u32> {
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            all.iter()
                .filter(|(_, s)| s.parent == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree
}

/// CPU time used so far, in seconds: all of it, and the part spent in the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    /// User + system.
    pub total_s: f64,
    /// System only: system calls, and on loopback the TCP work of both ends of every segment
    /// the process sends (the receiver's side runs in the sender's context).
    pub system_s: f64,
}

impl std::ops::Sub for CpuTime {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self {
            total_s: self.total_s - earlier.total_s,
            system_s: self.system_s - earlier.system_s,
        }
    }
}

/// CPU time used so far by `root` and its descendants.
pub fn tree_cpu(root: u32) -> CpuTime {
    let all = all_processes();
    let (total, system) = tree_of(root, &all)
        .iter()
        .filter_map(|pid| all.get(pid))
        .fold((0, 0), |(total, system), s| {
            (total + s.cpu_ticks, system + s.system_ticks)
        });
    let hz = clock_ticks_per_second();
    CpuTime {
        total_s: total as f64 / hz,
        system_s: system as f64 / hz,
    }
}

/// CPU seconds used so far by one process (all its threads).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .as_deref()
        .and_then(parse_stat)
        .map_or(0.0, |s| s.cpu_ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// Memory of `root` and its descendants, from `/proc/PID/status` and `smaps_rollup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Sum of VmRSS (pages shared between the processes count once per process).
    pub rss_kib: u64,
    /// Sum of Pss (shared pages divided among their users): what the tree really costs.
    pub pss_kib: u64,
}

/// The memory of `root` and its descendants now.
pub fn tree_memory(root: u32) -> Memory {
    let mut memory = Memory::default();
    for pid in process_tree(root) {
        memory.rss_kib += kib_field(&format!("/proc/{pid}/status"), "VmRSS:").unwrap_or(0);
        memory.pss_kib += kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:").unwrap_or(0);
    }
    memory
}

fn kib_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The machine's CPU time so far, from the first line of `/proc/stat`, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineCpu {
    /// user + nice + system: CPUs busy running processes (our spinners too). Interrupt and
    /// softirq time is left out: the kernel charges it to no process, and most of it here is
    /// the loopback traffic of the benchmark itself, which would otherwise look like someone
    /// else's load.
    pub busy_s: f64,
    /// Time this VM's vCPUs wanted to run but the hypervisor ran someone else.
    pub steal_s: f64,
}

impl MachineCpu {
    /// Reads `/proc/stat` now (zeros when unreadable).
    pub fn now() -> Self {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_proc_stat)
            .unwrap_or_default()
    }
}

fn parse_proc_stat(text: &str) -> Option<MachineCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let hz = clock_ticks_per_second();
    let get = |i: usize| v.get(i).copied().unwrap_or(0) as f64 / hz;
    // user nice system idle iowait irq softirq steal
    Some(MachineCpu {
        busy_s: get(0) + get(1) + get(2),
        steal_s: get(7),
    })
}

/// Facts about the machine for the report: CPU model, CPU count, kernel, memory.
pub fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
    let memory_gib = kib_field("/proc/meminfo", "MemTotal:").map_or(0.0, |k| k as f64 / 1048576.0);
    format!("{cpus} CPUs ({model}), {memory_gib:.0} GiB, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_taskset() {
        assert_eq!(CpuSet::parse("1").unwrap().cpus(), &[1]);
        assert_eq!(CpuSet::parse("0,2").unwrap().cpus(), &[0, 2]);
        assert_eq!(CpuSet::parse("0-3,6").unwrap().cpus(), &[0, 1, 2, 3, 6]);
        assert_eq!(CpuSet::parse("3,1,1").unwrap().to_string(), "1,3");
        for bad in ["", "x", "3-1", "1,,a"] {
            assert!(CpuSet::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stat_lines_with_awkward_names_parse() {
        let line = "4242 (a) b (c) S 17 4242 4242 0 -1 4194304 100 0 0 0 250 50 7 3 20 0 1 0 \
                    100 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                parent: 17,
                cpu_ticks: 310,
                system_ticks: 53,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_measurable() {
        let me = std::process::id();
        assert!(process_tree(me).contains(&me));
        let memory = tree_memory(me);
        assert!(memory.rss_kib > 0);
        let machine = parse_proc_stat("cpu  100 0 50 1000 5 1 2 3 0 0\ncpu0 1 2 3\n").unwrap();
        let hz = clock_ticks_per_second();
        assert!((machine.busy_s - 150.0 / hz).abs() < 1e-9);
        assert!((machine.steal_s - 3.0 / hz).abs() < 1e-9);
    }

    #[test]
    fn a_child_is_read_line_by_line_and_stopped() {
        let sh = find_program("sh").expect("sh");
        let mut child = Managed::spawn(
            "sh",
            &sh,
            &["-c".into(), "echo one; echo ready 42; exec sleep 30".into()],
            None,
            None,
        )
        .unwrap();
        let port = child
            .wait_for_line(Duration::from_secs(10), |l| {
                l.strip_prefix("ready ").and_then(|p| p.parse::<u16>().ok())
            })
            .unwrap();
        assert_eq!(port, 42);
        assert!(child.is_running());
        let (status, _) = child.stop(rustix::process::Signal::TERM, Duration::from_secs(5));
        assert!(!status.unwrap().success());
    }

    #[test]
    fn a_child_that_dies_early_is_reported_with_its_output() {
        let sh = find_program("sh").expect("sh");
        let mut child = Managed::spawn(
            "doomed",
            &sh,
            &["-c".into(), "echo cannot bind >&2; exit 3".into()],
            None,
            None,
        )
        .unwrap();
        let error = child
            .wait_for_line(Duration::from_secs(10), |_| Some(()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("doomed exited"), "{error}");
        assert!(error.contains("cannot bind"), "{error}");
    }
}
