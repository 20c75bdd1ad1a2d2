//! Child processes a test owns: started with their output captured, stopped with a signal or
//! killed, and always reaped, their descendants with them, even when the test panics.
//!
//! A child never gets the test runner's stdout or stderr. A process that held a copy of the
//! runner's pipe would keep a harness that waits for the pipe to close (CI, `cargo test |
//! tee`) waiting after the test itself has failed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The signals a test sends ([`Process::signal`], [`Process::stop`]): `Signal::INT`,
/// `Signal::TERM`, `Signal::KILL`, ...
pub use rustix::process::Signal;
use rustix::process::{Pid, kill_process};

use crate::wait::PATIENCE;

/// Lines kept by an [`OutputLog`]; older ones are dropped first.
const LOG_LINES: usize = 5_000;

/// Lines of output printed when a test panics with a process running.
const TAIL_ON_FAILURE: usize = 60;

/// How long the output pipes may stay open after the process has exited (a descendant that
/// outlived it may hold them) before the rest of its output is given up.
const PIPE_PATIENCE: Duration = Duration::from_secs(5);

/// The lines one or more processes printed (stdout and stderr, each line tagged), in order,
/// for failure messages and for tests that look for a line. Shared by the lives of a process
/// that a test restarts.
#[derive(Debug, Default)]
pub struct OutputLog {
    lines: Mutex<VecDeque<(usize, String)>>,
    next: AtomicUsize,
}

impl OutputLog {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Appends a line (the test's own notes too, e.g. what it did between two lives).
    pub fn push(&self, line: String) {
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == LOG_LINES {
            lines.pop_front();
        }
        lines.push_back((seq, line));
    }

    /// A position in the log: [`since`](Self::since) returns the lines pushed after it.
    pub fn mark(&self) -> usize {
        self.next.load(Ordering::SeqCst)
    }

    pub fn since(&self, mark: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .filter(|(seq, _)| *seq >= mark)
            .map(|(_, line)| line.clone())
            .collect()
    }

    /// The last `n` lines, one per line.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let skip = lines.len().saturating_sub(n);
        lines
            .iter()
            .skip(skip)
            .map(|(_, line)| format!("{line}\n"))
            .collect()
    }
}

/// A child process owned by a test. Its stdout lines arrive on a channel ([`line`](Self::line)
/// and friends) and, with its stderr lines, in an [`OutputLog`]. Dropping it kills the process
/// and every process it started (SIGKILL) and reaps it; when the test is panicking, the tail
/// of the output is printed first, so the failure explains itself.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    stdout: mpsc::Receiver<String>,
    log: Arc<OutputLog>,
    tag: String,
    pumps: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `command` with stdin from /dev/null and stdout and stderr captured, its output
    /// in a log of its own.
    ///
    /// # Panics
    /// When the program cannot be started.
    pub fn start(command: &mut Command) -> Self {
        Self::start_logged(command, &OutputLog::new(), "")
    }

    /// Like [`start`](Self::start), with the output going to `log`, each line prefixed with
    /// `tag` (e.g. "[life 2]" for a process the test restarts).
    ///
    /// # Panics
    /// When the program cannot be started.
    pub fn start_logged(command: &mut Command, log: &Arc<OutputLog>, tag: &str) -> Self {
        let name = Path::new(command.get_program())
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut child = spawn_captured(command);
        let prefix = |stream: &str| {
            if tag.is_empty() {
                format!("{name} {stream}:")
            } else {
                format!("{tag} {name} {stream}:")
            }
        };
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let pumps = vec![
            pump(out, prefix("out"), log.clone(), Some(tx)),
            pump(err, prefix("err"), log.clone(), None),
        ];
        Self {
            name,
            child,
            stdout,
            log: log.clone(),
            tag: tag.to_owned(),
            pumps,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> &Arc<OutputLog> {
        &self.log
    }

    /// The next stdout line, waiting at most [`PATIENCE`].
    ///
    /// # Panics
    /// When no line comes in time or stdout closes first; the message carries the output.
    pub fn line(&self) -> String {
        self.line_within(PATIENCE).unwrap_or_else(|| {
            panic!(
                "{} printed no line within {PATIENCE:?}; its output:\n{}",
                self.name,
                self.log.tail(TAIL_ON_FAILURE)
            )
        })
    }

    /// The next stdout line within `patience`, or `None` on timeout or at the end of stdout.
    pub fn line_within(&self, patience: Duration) -> Option<String> {
        self.stdout.recv_timeout(patience).ok()
    }

    /// The first coming stdout line that `wanted` accepts (earlier ones are skipped), waiting
    /// at most [`PATIENCE`] in all.
    ///
    /// # Panics
    /// When none comes in time; the message carries the output.
    pub fn line_where(&self, mut wanted: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.line_within(left) {
                Some(line) if wanted(&line) => return line,
                Some(_) => {}
                None => panic!(
                    "{} printed no expected line within {PATIENCE:?}; its output:\n{}",
                    self.name,
                    self.log.tail(TAIL_ON_FAILURE)
                ),
            }
        }
    }

    /// The stdout lines that have arrived, without waiting.
    pub fn lines_so_far(&self) -> Vec<String> {
        self.stdout.try_iter().collect()
    }

    /// Sends `signal` to the process (not to its descendants).
    pub fn signal(&self, signal: Signal) {
        send(self.child.id(), signal);
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Its exit status, if it has exited (reaped now if needed).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits at most [`PATIENCE`] for the process to exit and returns its status.
    ///
    /// # Panics
    /// When it is still running then (it is killed first); the message carries the output.
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_within(PATIENCE)
    }

    /// Waits at most `patience` for the process to exit and returns its status.
    ///
    /// # Panics
    /// When it is still running then (it is killed first); the message carries the output.
    pub fn wait_within(&mut self, patience: Duration) -> ExitStatus {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "{} did not exit within {patience:?}; its output:\n{}",
                    self.name,
                    self.log.tail(TAIL_ON_FAILURE)
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` and waits (bounded) for the process to exit.
    pub fn stop(&mut self, signal: Signal) -> ExitStatus {
        self.signal(signal);
        self.wait()
    }

    /// After the process has exited: the stdout lines not yet taken, each ending in '\n'.
    ///
    /// # Panics
    /// When the process has not exited.
    pub fn rest_of_stdout(&mut self) -> String {
        assert!(
            self.try_status().is_some(),
            "{} is still running",
            self.name
        );
        let deadline = Instant::now() + PIPE_PATIENCE;
        let mut rest = String::new();
        while let Ok(line) = self
            .stdout
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    }

    /// Everything it wrote to stderr so far (as kept in its log), one line per line.
    pub fn stderr(&self) -> String {
        let marker = if self.tag.is_empty() {
            format!("{} err:", self.name)
        } else {
            format!("{} {} err:", self.tag, self.name)
        };
        self.log
            .since(0)
            .iter()
            .filter_map(|line| line.strip_prefix(&marker))
            .map(|line| format!("{}\n", line.strip_prefix(' ').unwrap_or(line)))
            .collect()
    }

    /// `kill -9` for the process and its descendants, then reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            kill_tree(self.child.id());
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- {} (pid {}), last lines of its output ---\n{}",
                self.name,
                self.child.id(),
                self.log.tail(TAIL_ON_FAILURE)
            );
        }
        self.kill();
        for pump in self.pumps.drain(..) {
            // A descendant that escaped the kill could hold the pipes: never wait on it.
            if pump.is_finished() {
                let _ = pump.join();
            }
        }
    }
}

/// Copies `stream`'s lines into `log` (prefixed) and, if given, onto `lines`.
fn pump(
    stream: impl Read + Send + 'static,
    prefix: String,
    log: Arc<OutputLog>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&raw);
            let line = text.strip_suffix('\n').unwrap_or(&text).to_owned();
            log.push(format!("{prefix} {line}"));
            if let Some(lines) = &lines {
                let _ = lines.send(line);
            }
        }
    })
}

/// Runs `command` to completion (stdin from /dev/null, stdout and stderr captured) within
/// `patience` and returns what it printed.
///
/// # Panics
/// When it cannot start, or is still running after `patience` (it and its descendants are
/// killed first; the message carries what it printed).
pub fn run(command: &mut Command, patience: Duration) -> Output {
    let name = command.get_program().to_string_lossy().into_owned();
    let mut child = spawn_captured(command);
    let out = collect(child.stdout.take().expect("piped stdout"));
    let err = collect(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + patience;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            kill_tree(child.id());
            let _ = child.wait();
            let take = |rx: &mpsc::Receiver<Vec<u8>>| {
                String::from_utf8_lossy(&rx.recv_timeout(PIPE_PATIENCE).unwrap_or_default())
                    .into_owned()
            };
            panic!(
                "{name} did not finish within {patience:?}; stdout:\n{}\nstderr:\n{}",
                take(&out),
                take(&err)
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    let pipe_deadline = Instant::now() + PIPE_PATIENCE;
    let take = |rx: mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(pipe_deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    };
    Output {
        status,
        stdout: take(out),
        stderr: take(err),
    }
}

/// Starts `command` with stdin from /dev/null and stdout and stderr piped to this process:
/// never the test runner's own.
///
/// # Panics
/// When the program cannot be started.
fn spawn_captured(command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", command.get_program().display()))
}

/// Reads `stream` to its end on a thread and sends the bytes.
fn collect(mut stream: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

fn send(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        // It may have exited already: nothing to do then.
        let _ = kill_process(pid, signal);
    }
}

/// SIGKILL for `root` and every process descended from it. The tree is stopped first (SIGSTOP)
/// and collected again until it no longer grows, so a process forking at that moment cannot
/// leave a child behind.
fn kill_tree(root: u32) {
    let mut tree: HashSet<u32> = HashSet::from([root]);
    for _ in 0..10 {
        for &pid in &tree {
            send(pid, Signal::STOP);
        }
        let mut found = descendants(root);
        found.insert(root);
        if found == tree {
            break;
        }
        tree = found;
    }
    for &pid in &tree {
        send(pid, Signal::KILL);
    }
}

/// The processes descended from `root` (not `root` itself), from each process's parent id in
/// `/proc/PID/stat`.
fn descendants(root: u32) -> HashSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some(ppid) = parent_of(&stat) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut found = HashSet::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).map_or(&[][..], Vec::as_slice) {
            if found.insert(child) {
                queue.push(child);
            }
        }
    }
    found
}

/// The parent pid in a `/proc/PID/stat` line: "pid (comm) state ppid ...", where comm may
/// itself hold spaces and parentheses, so the fields are counted after the last ')'.
fn parent_of(stat: &str) -> Option<u32> {
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    fn exists(pid: u32) -> bool {
        // A zombie is gone for our purposes: it runs nothing and holds no sockets.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, s)| !s.trim_start().starts_with('Z'))
        })
    }

    #[test]
    fn the_parent_pid_is_read_past_an_awkward_command_name() {
        assert_eq!(parent_of("42 (a b) c) (d) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_of("42 (sh) R 1 42"), Some(1));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn lines_arrive_in_order_and_stderr_is_kept_apart() {
        let mut p = Process::start(&mut sh("echo one; echo two; echo oops >&2; echo three"));
        assert_eq!(p.line(), "one");
        assert_eq!(p.line_where(|l| l == "three"), "three");
        assert!(p.wait().success());
        assert_eq!(p.rest_of_stdout(), "");
        assert!(
            crate::wait_until(PATIENCE, || p.stderr() == "oops\n"),
            "{}",
            p.stderr()
        );
    }

    #[test]
    fn stop_delivers_the_signal_and_the_status_says_so() {
        use std::os::unix::process::ExitStatusExt;
        let mut p = Process::start(&mut sh("echo ready; exec sleep 30"));
        assert_eq!(p.line(), "ready");
        let status = p.stop(Signal::TERM);
        assert_eq!(status.signal(), Some(15));
    }

    #[test]
    fn dropping_kills_the_process_and_its_descendants() {
        // sh starts two sleeps in the background and prints their pids.
        let p = Process::start(&mut sh("sleep 30 & echo $!; sleep 30 & echo $!; wait"));
        let pids: Vec<u32> = (0..2).map(|_| p.line().parse().unwrap()).collect();
        let parent = p.pid();
        assert!(pids.iter().all(|&pid| exists(pid)));
        drop(p);
        assert!(!exists(parent));
        assert!(
            crate::wait_until(PATIENCE, || pids.iter().all(|&pid| !exists(pid))),
            "a descendant outlived its owner"
        );
    }

    #[test]
    fn a_panicking_test_leaves_nothing_running() {
        let (tx, rx) = mpsc::channel();
        let outcome = thread::spawn(move || {
            let p = Process::start(&mut sh("sleep 30 & echo $!; wait"));
            tx.send((p.pid(), p.line().parse::<u32>().unwrap()))
                .unwrap();
            panic!("on purpose");
        })
        .join();
        assert!(outcome.is_err());
        let (parent, child) = rx.recv().unwrap();
        assert!(crate::wait_until(PATIENCE, || !exists(parent) && !exists(child)));
    }

    #[test]
    fn run_returns_the_output_and_status() {
        let out = run(&mut sh("echo out; echo err >&2; exit 3"), PATIENCE);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn run_kills_what_does_not_finish_in_time() {
        // `run` returns output only at the end, so the background sleep's pid goes to a file.
        let dir = crate::TempDir::new("run-timeout");
        let file = dir.join("pid");
        let mut command = sh("sleep 30 & echo $! > \"$PIDFILE\"; wait");
        command.env("PIDFILE", &file);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(&mut command, Duration::from_millis(500))
        }));
        assert!(
            result.is_err(),
            "run returned although the command never finished"
        );
        let pid: u32 = std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(crate::wait_until(PATIENCE, || !exists(pid)));
    }
}
