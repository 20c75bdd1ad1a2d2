//! The peer relays `mllp-bench compare` runs side by side with `mllp-relay` (HAProxy, stunnel,
//! nginx stream): finding their binaries and writing a per-run configuration for each.
//!
//! Every peer gets the same job as the relay: terminate TLS (1.2 or 1.3) from the load
//! generator and forward plain MLLP to the ACK sink, with one thread (or one worker), Nagle off
//! on both sockets, no per-connection logging and timeouts long enough that idle-connection
//! holds are never cut. Anything beyond that is left at the peer's defaults, because the
//! comparison is meant to be against each peer as it ships, not against a tuned build.
//!
//! Pinning is not configured here: the caller runs the peer under `taskset`, and every thread or
//! process the peer starts inherits the affinity. The caller also counts CPU over the whole
//! process tree, so nginx's master process and stunnel's thread per connection are charged.
//!
//! The peers come from Debian packages (`scripts/install-peers.sh`): HAProxy 2.6, stunnel 5.68
//! and nginx 1.22 with the dynamic stream module on bookworm.

use std::ffi::{OsStr, OsString};
use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A peer relay the benchmark compares `mllp-relay` against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// HAProxy in `mode tcp`: one thread, event-driven (epoll).
    Haproxy,
    /// stunnel: a thread per connection (its only model on Linux).
    Stunnel,
    /// nginx's stream module: a master process and one event-driven worker.
    Nginx,
}

impl PeerKind {
    /// Every peer, in the order the comparison reports them.
    pub const ALL: [Self; 3] = [Self::Haproxy, Self::Stunnel, Self::Nginx];

    /// The short name used in reports and file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Haproxy => "haproxy",
            Self::Stunnel => "stunnel",
            Self::Nginx => "nginx",
        }
    }

    /// The executable names to look for, preferred first. Debian installs stunnel 5 as
    /// `stunnel4` (with `stunnel` a symlink to it); other distributions call it `stunnel`.
    fn executable_names(self) -> &'static [&'static str] {
        match self {
            Self::Haproxy => &["haproxy"],
            Self::Stunnel => &["stunnel4", "stunnel"],
            Self::Nginx => &["nginx"],
        }
    }

    /// The installed binary: the first executable of one of the peer's names on `PATH`, then in
    /// `/usr/sbin` and `/usr/bin` (HAProxy and nginx live in `/usr/sbin`, which a non-root
    /// `PATH` often lacks).
    pub fn find(self) -> Option<PathBuf> {
        self.executable_names()
            .iter()
            .find_map(|name| crate::process::find_program(name))
    }

    /// One short line naming the peer's version and the OpenSSL it runs with, e.g.
    /// `HAProxy 2.6.12-1+deb12u4 (OpenSSL 3.0.19)`: the OpenSSL build decides much of the TLS
    /// cost, so a report without it is not reproducible. `None` if the binary cannot be run or
    /// its output is not recognised.
    pub fn version(self, binary: &Path) -> Option<String> {
        // Each peer prints its version (and its OpenSSL) with a different flag, some on stdout
        // and some on stderr, and stunnel exits non-zero after printing it.
        let flag = match self {
            Self::Haproxy => "-vv",
            Self::Stunnel => "-version",
            Self::Nginx => "-V",
        };
        let output = Command::new(binary)
            .arg(flag)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        parse_version(self, &text)
    }
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a peer needs to terminate TLS: a PEM chain (leaf first, then CA) and its PEM private
/// key (PKCS#8 or SEC1 EC key — the lead's rcgen writes PKCS#8 "BEGIN PRIVATE KEY").
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// The certificate chain, leaf first.
    pub chain_pem: PathBuf,
    /// The leaf's private key.
    pub key_pem: PathBuf,
}

/// How to start a prepared peer: in the foreground, so that the process the caller spawns is the
/// peer and SIGTERM to it stops the whole peer (nginx's master stops its worker first).
#[derive(Debug)]
pub struct PeerLaunch {
    /// Which peer this is.
    pub kind: PeerKind,
    /// The peer's binary.
    pub program: PathBuf,
    /// Its arguments (they name the configuration file).
    pub args: Vec<OsString>,
    /// The configuration written for this run.
    pub config_file: PathBuf,
    /// Where the peer's diagnostics end up. nginx and stunnel write their own log there;
    /// HAProxy only ever reports on stderr, and nginx and stunnel print start-up errors on
    /// stderr before their log is open, so the child's stdout and stderr belong there too
    /// ([`PeerLaunch::command`] does that).
    pub log_file: PathBuf,
}

impl PeerLaunch {
    /// A command that starts the peer with stdin closed and stdout and stderr appended to
    /// [`log_file`](Self::log_file). `wrapper` is prepended when not empty, e.g.
    /// `["taskset", "-c", "1"]`, so that the peer is pinned from its first instruction.
    pub fn command<S: AsRef<OsStr>>(&self, wrapper: &[S]) -> Result<Command, PeerError> {
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(&self.program);
                command
            }
            None => Command::new(&self.program),
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log_file)
            .map_err(|source| PeerError::Write {
                path: self.log_file.clone(),
                source,
            })?;
        let log_too = log.try_clone().map_err(|source| PeerError::Write {
            path: self.log_file.clone(),
            source,
        })?;
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_too);
        Ok(command)
    }
}

/// Why a peer could not be prepared. Every variant names the file or binary concerned.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// A file of the run could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// An input file (certificate chain or key) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A path cannot be written into a configuration file safely: the peers' configuration
    /// syntaxes have no (or no common) quoting, so a space or a `;` would change the meaning.
    #[error("cannot use {} in a peer configuration: {reason}", path.display())]
    UnsupportedPath {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The peer binary could not be run to learn how it was built.
    #[error("cannot run {}: {source}", binary.display())]
    Probe {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// nginx has no stream module: not built in, and no dynamic module where one was looked for.
    #[error(
        "{} has no stream module: not built in, and no ngx_stream_module.so in {} \
         (Debian: install libnginx-mod-stream)",
        binary.display(),
        display_paths(searched)
    )]
    NoStreamModule {
        /// The nginx binary.
        binary: PathBuf,
        /// Where the dynamic module was looked for.
        searched: Vec<PathBuf>,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    let paths: Vec<_> = paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    paths.join(", ")
}

/// Timeout for idle client and server sides. Generous on purpose: the idle-connection memory
/// runs hold connections open without traffic, and a peer that cut them would look cheaper.
const IDLE_TIMEOUT_S: u32 = 600;

/// Timeout for connecting to the sink. Loopback connects either succeed at once or are refused.
const CONNECT_TIMEOUT_S: u32 = 5;

/// Writes the peer's configuration into `run_dir` (an existing, writable, private directory;
/// also used for pid files, logs, HAProxy's combined PEM) and returns how to start it in the
/// foreground: killing the returned child with SIGTERM stops the whole peer.
///
/// `listen` is where the peer accepts TLS, `forward` the plain MLLP sink it connects to for
/// every accepted connection, and `max_connections` the number of client connections it must
/// accept at once (HAProxy and nginx size their limits from it; stunnel has no limit).
pub fn prepare(
    kind: PeerKind,
    binary: &Path,
    run_dir: &Path,
    tls: &PeerTls,
    listen: SocketAddr,
    forward: SocketAddr,
    max_connections: usize,
) -> Result<PeerLaunch, PeerError> {
    for path in [run_dir, &tls.chain_pem, &tls.key_pem] {
        check_config_path(path)?;
    }
    let plan = Plan {
        run_dir,
        tls,
        listen,
        forward,
        max_connections: max_connections.max(1),
    };
    let log_file = run_dir.join(format!("{}.log", kind.name()));
    let config_file;
    let args: Vec<OsString>;
    match kind {
        PeerKind::Haproxy => {
            // HAProxy reads the certificate and its key from one file; it holds the key, so it
            // is private like the key itself.
            let combined = run_dir.join("combined.pem");
            let mut pem = read(&tls.chain_pem)?;
            if !pem.ends_with(b"\n") {
                pem.push(b'\n');
            }
            pem.extend_from_slice(&read(&tls.key_pem)?);
            write_private(&combined, &pem)?;
            config_file = run_dir.join("haproxy.cfg");
            write_private(&config_file, haproxy_config(&plan, &combined).as_bytes())?;
            // -db: stay in the foreground, without the master-worker split, so the spawned
            // process is the one that relays and SIGTERM stops it at once.
            args = vec!["-db".into(), "-f".into(), config_file.clone().into()];
        }
        PeerKind::Stunnel => {
            config_file = run_dir.join("stunnel.conf");
            write_private(&config_file, stunnel_config(&plan, &log_file).as_bytes())?;
            args = vec![config_file.clone().into()];
        }
        PeerKind::Nginx => {
            let module = nginx_stream_module(binary)?;
            config_file = run_dir.join("nginx.conf");
            let config = nginx_config(&plan, module.as_deref(), &log_file);
            write_private(&config_file, config.as_bytes())?;
            // -p: relative paths resolve in the run directory, not the compiled-in prefix.
            // -e (nginx ≥ 1.19.5): the log nginx opens before it has read the configuration,
            // otherwise the compiled-in one (/var/log/nginx/error.log on many builds).
            let mut prefix = run_dir.as_os_str().to_owned();
            prefix.push("/");
            args = vec![
                "-p".into(),
                prefix,
                "-e".into(),
                log_file.clone().into(),
                "-c".into(),
                config_file.clone().into(),
            ];
        }
    }
    Ok(PeerLaunch {
        kind,
        program: binary.to_path_buf(),
        args,
        config_file,
        log_file,
    })
}

/// Whether something listens on `addr` over TCP, from `/proc/net/tcp` or `/proc/net/tcp6`.
///
/// This lets the caller wait for a peer to be ready, and check that it is gone after SIGTERM,
/// without connecting to it: a probe connection that never completes a TLS handshake costs the
/// peer a connection (stunnel: a thread), and stunnel logs it as an error even at `debug = 3`
/// (`SSL_accept: … unexpected eof`).
pub fn listening(addr: SocketAddr) -> io::Result<bool> {
    let (table, local) = match addr {
        SocketAddr::V4(v4) => (
            "/proc/net/tcp",
            // The kernel prints the address as its in-memory u32 in hex, so on x86 127.0.0.1
            // reads 0100007F.
            format!(
                "{:08X}:{:04X}",
                u32::from_ne_bytes(v4.ip().octets()),
                v4.port()
            ),
        ),
        SocketAddr::V6(v6) => {
            let mut hex = String::with_capacity(37);
            for word in v6.ip().octets().chunks_exact(4) {
                let word = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
                let _ = write!(hex, "{word:08X}");
            }
            let _ = write!(hex, ":{:04X}", v6.port());
            ("/proc/net/tcp6", hex)
        }
    };
    const LISTEN: &str = "0A";
    let text = fs::read_to_string(table)?;
    Ok(text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local_field = fields.nth(1);
        let state = fields.nth(1);
        local_field == Some(local.as_str()) && state == Some(LISTEN)
    }))
}

/// The per-run inputs every configuration is built from.
struct Plan<'a> {
    run_dir: &'a Path,
    tls: &'a PeerTls,
    listen: SocketAddr,
    forward: SocketAddr,
    max_connections: usize,
}

/// HAProxy 2.6.
///
/// * One thread: `nbthread 1` (2.6 otherwise starts one per CPU it may run on).
/// * TCP_NODELAY: not configurable in `mode tcp`, and not needed. HAProxy sets it itself on
///   every accepted client socket and every server socket it connects (seen with strace on
///   2.6.12: `setsockopt(fd, SOL_TCP, TCP_NODELAY, [1])` on both); it coalesces writes with
///   MSG_MORE only when it knows more data follows, which a relayed MLLP frame never signals.
/// * No logging: no `log` line anywhere, so HAProxy emits nothing per connection.
/// * `maxconn`: the global value bounds concurrent client connections, and HAProxy derives its
///   file-descriptor limit from it (raising RLIMIT_NOFILE when it may, refusing to start when
///   it may not). The `defaults` value becomes each frontend's limit; it is set as well because
///   a frontend's implicit limit has changed between versions.
/// * Timeouts: `client` and `server` cover idle holds; `tunnel` is the one HAProxy applies once
///   both sides are connected, so it must be as long.
fn haproxy_config(plan: &Plan<'_>, combined_pem: &Path) -> String {
    let Plan {
        listen,
        forward,
        max_connections,
        ..
    } = *plan;
    format!(
        "# HAProxy for mllp-bench compare: TLS in, plain MLLP out, one thread.\n\
         global\n\
         \x20   nbthread 1\n\
         \x20   maxconn {max_connections}\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   maxconn {max_connections}\n\
         \x20   timeout connect {CONNECT_TIMEOUT_S}s\n\
         \x20   timeout client {IDLE_TIMEOUT_S}s\n\
         \x20   timeout server {IDLE_TIMEOUT_S}s\n\
         \x20   timeout tunnel {IDLE_TIMEOUT_S}s\n\
         \n\
         frontend mllp_tls\n\
         \x20   bind {listen} ssl crt {combined} ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3\n\
         \x20   default_backend mllp_sink\n\
         \n\
         backend mllp_sink\n\
         \x20   server sink {forward}\n",
        combined = combined_pem.display(),
    )
}

/// stunnel 5.
///
/// * Threads: stunnel runs a thread per connection and has no other model on Linux, so "one
///   thread" is not possible; pinned to one core, its threads share it.
/// * TCP_NODELAY: stunnel leaves Nagle on unless told; `l:` is the accepted socket and `r:` the
///   one it connects.
/// * Logging: `debug = 3` keeps only errors (connections are logged at 5, notice, and above),
///   into `output` rather than syslog.
/// * No connection limit exists in stunnel; each connection costs a thread and two descriptors,
///   so the caller's RLIMIT_NOFILE must cover 2 × `max_connections`.
/// * `TIMEOUTclose` stays at its default (60 s, the most stunnel waits for the other side to
///   finish closing): both ends of the benchmark close at once, so no thread lingers, whereas
///   `TIMEOUTclose = 0` makes stunnel log an error for every connection it closes.
fn stunnel_config(plan: &Plan<'_>, log: &Path) -> String {
    format!(
        "; stunnel for mllp-bench compare: TLS in, plain MLLP out (a thread per connection).\n\
         foreground = yes\n\
         pid =\n\
         syslog = no\n\
         debug = 3\n\
         output = {log}\n\
         socket = l:TCP_NODELAY=1\n\
         socket = r:TCP_NODELAY=1\n\
         \n\
         [mllp]\n\
         accept = {listen}\n\
         connect = {forward}\n\
         cert = {chain}\n\
         key = {key}\n\
         sslVersionMin = TLSv1.2\n\
         sslVersionMax = TLSv1.3\n\
         TIMEOUTconnect = {CONNECT_TIMEOUT_S}\n\
         TIMEOUTidle = {IDLE_TIMEOUT_S}\n",
        log = log.display(),
        listen = stunnel_address(plan.listen),
        forward = stunnel_address(plan.forward),
        chain = plan.tls.chain_pem.display(),
        key = plan.tls.key_pem.display(),
    )
}

/// stunnel splits `host:port` at the last colon and takes IPv6 hosts without brackets.
fn stunnel_address(addr: SocketAddr) -> String {
    format!("{}:{}", addr.ip(), addr.port())
}

/// nginx 1.22 with the stream module.
///
/// * One worker (`worker_processes 1`) under a master; `daemon off` keeps the master in the
///   foreground, and on SIGTERM it stops the worker before it exits.
/// * TCP_NODELAY: the stream module's `tcp_nodelay` defaults to on and applies to both the
///   client and the upstream connection; it is written out anyway so the configuration states
///   every fairness condition.
/// * Logging: the stream module writes no access log unless `access_log` is configured, and
///   `error_log … warn` drops the per-connection messages nginx logs at info level.
/// * Limits: every relayed connection takes two worker connections (client and upstream), so
///   `worker_connections` is 2 × `max_connections` plus room for the listener and stragglers;
///   `worker_rlimit_nofile` lets the worker raise its descriptor limit to match.
/// * Files: the pid file and the log live in the run directory; a stream-only configuration has
///   no temporary paths, so nothing under /var/lib/nginx or /var/log/nginx is touched.
/// * `load_module` only when the stream module is a dynamic module (Debian); a build with the
///   module compiled in would refuse to load it again.
fn nginx_config(plan: &Plan<'_>, stream_module: Option<&Path>, log: &Path) -> String {
    let worker_connections = 2 * plan.max_connections + 64;
    let rlimit = worker_connections + 64;
    let mut config =
        String::from("# nginx for mllp-bench compare: TLS in, plain MLLP out, one worker.\n");
    if let Some(module) = stream_module {
        let _ = writeln!(config, "load_module {};", module.display());
    }
    let _ = write!(
        config,
        "daemon off;\n\
         master_process on;\n\
         worker_processes 1;\n\
         worker_rlimit_nofile {rlimit};\n\
         pid {pid};\n\
         error_log {log} warn;\n\
         \n\
         events {{\n\
         \x20   worker_connections {worker_connections};\n\
         }}\n\
         \n\
         stream {{\n\
         \x20   server {{\n\
         \x20       listen {listen} ssl;\n\
         \x20       ssl_certificate {chain};\n\
         \x20       ssl_certificate_key {key};\n\
         \x20       ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20       tcp_nodelay on;\n\
         \x20       proxy_connect_timeout {CONNECT_TIMEOUT_S}s;\n\
         \x20       proxy_timeout {IDLE_TIMEOUT_S}s;\n\
         \x20       proxy_pass {forward};\n\
         \x20   }}\n\
         }}\n",
        pid = plan.run_dir.join("nginx.pid").display(),
        log = log.display(),
        listen = plan.listen,
        forward = plan.forward,
        chain = plan.tls.chain_pem.display(),
        key = plan.tls.key_pem.display(),
    );
    config
}

/// How an nginx binary got its stream module, from `nginx -V`.
#[derive(Debug, PartialEq, Eq)]
enum StreamBuild {
    /// `--with-stream`: compiled in, nothing to load.
    Static,
    /// `--with-stream=dynamic`, or not mentioned (a module may come from another package):
    /// look for `ngx_stream_module.so`, first in `--modules-path` if the build names one.
    Dynamic { modules_path: Option<PathBuf> },
}

fn stream_build(configure: &str) -> StreamBuild {
    let mut modules_path = None;
    for argument in configure.split_whitespace() {
        if argument == "--with-stream" {
            return StreamBuild::Static;
        }
        if let Some(path) = argument.strip_prefix("--modules-path=") {
            modules_path = Some(PathBuf::from(path.trim_matches(['\'', '"'])));
        }
    }
    StreamBuild::Dynamic { modules_path }
}

/// The stream module `nginx.conf` must load, or `None` when it is compiled in.
fn nginx_stream_module(binary: &Path) -> Result<Option<PathBuf>, PeerError> {
    let output = Command::new(binary)
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PeerError::Probe {
            binary: binary.to_path_buf(),
            source,
        })?;
    // nginx prints its build on stderr.
    let mut configure = String::from_utf8_lossy(&output.stderr).into_owned();
    configure.push('\n');
    configure.push_str(&String::from_utf8_lossy(&output.stdout));
    let StreamBuild::Dynamic { modules_path } = stream_build(&configure) else {
        return Ok(None);
    };
    let searched: Vec<PathBuf> = modules_path
        .into_iter()
        .chain(
            ["/usr/lib/nginx/modules", "/usr/lib64/nginx/modules"]
                .into_iter()
                .map(PathBuf::from),
        )
        .collect();
    match searched
        .iter()
        .map(|dir| dir.join("ngx_stream_module.so"))
        .find(|module| module.is_file())
    {
        Some(module) => {
            check_config_path(&module)?;
            Ok(Some(module))
        }
        None => Err(PeerError::NoStreamModule {
            binary: binary.to_path_buf(),
            searched,
        }),
    }
}

/// Refuses paths the three configuration syntaxes cannot carry verbatim. Quoting differs per
/// peer (stunnel has none at all), so the only safe paths are plain ones; benchmark run
/// directories (`/tmp/…`) always are.
fn check_config_path(path: &Path) -> Result<(), PeerError> {
    let unsupported = |reason| {
        Err(PeerError::UnsupportedPath {
            path: path.to_path_buf(),
            reason,
        })
    };
    let Some(text) = path.to_str() else {
        return unsupported("not UTF-8");
    };
    if text.is_empty() {
        return unsupported("empty");
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"'`;#{}$\\".contains(c))
    {
        return unsupported("contains whitespace, a quote or one of ; # { } $ \\");
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, PeerError> {
    fs::read(path).map_err(|source| PeerError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path`, readable by the owner only (0600) even when the file existed.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), PeerError> {
    let error = |source| PeerError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    // `mode` applies only when the file is created.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)
}

/// The version line of [`PeerKind::version`] from the peer's version output.
fn parse_version(kind: PeerKind, text: &str) -> Option<String> {
    let line_after = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim_start().strip_prefix(prefix))
    };
    let first_word = |rest: &str| rest.split_whitespace().next().map(str::to_owned);
    let (name, version, openssl) = match kind {
        PeerKind::Haproxy => (
            "HAProxy",
            line_after("HAProxy version ").and_then(first_word)?,
            line_after("Running on OpenSSL version :").and_then(openssl_version),
        ),
        PeerKind::Stunnel => (
            "stunnel",
            line_after("stunnel ").and_then(first_word)?,
            line_after("Running ").and_then(openssl_version),
        ),
        PeerKind::Nginx => {
            let version = line_after("nginx version: nginx/").and_then(first_word)?;
            // "built with OpenSSL A (running with OpenSSL B)": B is what handles the TLS.
            let openssl = line_after("built with ").and_then(|rest| {
                rest.split_once("running with")
                    .and_then(|(_, running)| openssl_version(running))
                    .or_else(|| openssl_version(rest))
            });
            ("nginx", version, openssl)
        }
    };
    Some(match openssl {
        Some(openssl) => format!("{name} {version} (OpenSSL {openssl})"),
        None => format!("{name} {version}"),
    })
}

/// The version after the word "OpenSSL" in `text`.
fn openssl_version(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|word| *word == "OpenSSL")?;
    words.next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6, TcpListener};

    use testkit::{Process, Signal, TempDir};

    use super::*;

    fn tls() -> PeerTls {
        PeerTls {
            chain_pem: PathBuf::from("/certs/chain.pem"),
            key_pem: PathBuf::from("/certs/key.pem"),
        }
    }

    fn plan<'a>(tls: &'a PeerTls, max_connections: usize) -> Plan<'a> {
        Plan {
            run_dir: Path::new("/tmp/run"),
            tls,
            listen: "127.0.0.1:27201".parse().unwrap(),
            forward: "127.0.0.1:27100".parse().unwrap(),
            max_connections,
        }
    }

    #[test]
    fn haproxy_config_names_addresses_pem_and_limits() {
        let tls = tls();
        let config = haproxy_config(&plan(&tls, 1024), Path::new("/tmp/run/combined.pem"));
        assert!(config.contains("bind 127.0.0.1:27201 ssl crt /tmp/run/combined.pem"));
        assert!(config.contains("ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3"));
        assert!(config.contains("server sink 127.0.0.1:27100\n"));
        assert!(config.contains("nbthread 1\n"));
        assert_eq!(config.matches("maxconn 1024\n").count(), 2);
        assert!(config.contains("mode tcp\n"));
        for side in ["client", "server", "tunnel"] {
            assert!(config.contains(&format!("timeout {side} 600s\n")), "{side}");
        }
        assert!(!config.contains("log"), "HAProxy must not log:\n{config}");
    }

    #[test]
    fn stunnel_config_names_addresses_paths_and_nodelay() {
        let tls = tls();
        let config = stunnel_config(&plan(&tls, 32), Path::new("/tmp/run/stunnel.log"));
        for line in [
            "foreground = yes",
            "debug = 3",
            "syslog = no",
            "output = /tmp/run/stunnel.log",
            "socket = l:TCP_NODELAY=1",
            "socket = r:TCP_NODELAY=1",
            "accept = 127.0.0.1:27201",
            "connect = 127.0.0.1:27100",
            "cert = /certs/chain.pem",
            "key = /certs/key.pem",
            "sslVersionMin = TLSv1.2",
            "sslVersionMax = TLSv1.3",
            "TIMEOUTidle = 600",
        ] {
            assert!(config.lines().any(|l| l == line), "{line} in\n{config}");
        }
        // Global options must precede the first service section.
        let section = config.find("[mllp]").unwrap();
        assert!(config.find("socket = r:").unwrap() < section);
    }

    #[test]
    fn stunnel_takes_ipv6_hosts_without_brackets() {
        let addr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 2575, 0, 0));
        assert_eq!(stunnel_address(addr), "::1:2575");
    }

    #[test]
    fn nginx_config_names_addresses_paths_and_limits() {
        let tls = tls();
        let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
        let config = nginx_config(
            &plan(&tls, 1000),
            Some(module),
            Path::new("/tmp/run/nginx.log"),
        );
        assert!(config.starts_with("# nginx"));
        assert!(config.contains("load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"));
        for line in [
            "daemon off;",
            "worker_processes 1;",
            "worker_rlimit_nofile 2128;",
            "pid /tmp/run/nginx.pid;",
            "error_log /tmp/run/nginx.log warn;",
            "worker_connections 2064;",
            "listen 127.0.0.1:27201 ssl;",
            "ssl_certificate /certs/chain.pem;",
            "ssl_certificate_key /certs/key.pem;",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "tcp_nodelay on;",
            "proxy_timeout 600s;",
            "proxy_pass 127.0.0.1:27100;",
        ] {
            assert!(
                config.lines().any(|l| l.trim() == line),
                "{line} in\n{config}"
            );
        }
        assert_eq!(config.matches('{').count(), config.matches('}').count());
        assert!(!config.contains("access_log"));

        let built_in = nginx_config(&plan(&tls, 1), None, Path::new("/tmp/run/nginx.log"));
        assert!(!built_in.contains("load_module"));
    }

    #[test]
    fn stream_module_is_loaded_only_when_dynamic() {
        assert_eq!(
            stream_build(
                "configure arguments: --prefix=/usr --with-stream --with-stream_ssl_module"
            ),
            StreamBuild::Static
        );
        assert_eq!(
            stream_build(
                "configure arguments: --modules-path=/usr/lib/nginx/modules --with-stream=dynamic"
            ),
            StreamBuild::Dynamic {
                modules_path: Some(PathBuf::from("/usr/lib/nginx/modules"))
            }
        );
        assert_eq!(
            stream_build("configure arguments: --with-stream_ssl_module"),
            StreamBuild::Dynamic { modules_path: None }
        );
    }

    #[test]
    fn versions_are_one_short_line_with_openssl() {
        let haproxy = "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/\n\
                       Status: long-term supported branch\n\
                       Built with OpenSSL version : OpenSSL 3.0.22 25 Aug 2026\n\
                       Running on OpenSSL version : OpenSSL 3.0.19 27 Jan 2026\n";
        assert_eq!(
            parse_version(PeerKind::Haproxy, haproxy).as_deref(),
            Some("HAProxy 2.6.12-1+deb12u4 (OpenSSL 3.0.19)")
        );
        let stunnel = "Initializing inetd mode configuration\n\
                       stunnel 5.68 on x86_64-pc-linux-gnu platform\n\
                       Compiled with OpenSSL 3.0.9 30 May 2023\n\
                       Running  with OpenSSL 3.0.19 27 Jan 2026\n";
        assert_eq!(
            parse_version(PeerKind::Stunnel, stunnel).as_deref(),
            Some("stunnel 5.68 (OpenSSL 3.0.19)")
        );
        let nginx = "nginx version: nginx/1.22.1\n\
                     built with OpenSSL 3.0.22 25 Aug 2026 (running with OpenSSL 3.0.19 27 Jan 2026)\n\
                     TLS SNI support enabled\n";
        assert_eq!(
            parse_version(PeerKind::Nginx, nginx).as_deref(),
            Some("nginx 1.22.1 (OpenSSL 3.0.19)")
        );
        assert_eq!(
            parse_version(
                PeerKind::Nginx,
                "nginx version: nginx/1.27.0\nbuilt with OpenSSL 3.3.1 4 Jun 2024\n"
            )
            .as_deref(),
            Some("nginx 1.27.0 (OpenSSL 3.3.1)")
        );
        assert_eq!(parse_version(PeerKind::Haproxy, "command not found"), None);
    }

    #[test]
    fn paths_that_configs_cannot_carry_are_refused() {
        check_config_path(Path::new("/tmp/mllp-bench.Ab3_x-1/combined.pem")).unwrap();
        for bad in [
            "/tmp/a b",
            "/tmp/a;b",
            "/tmp/a#b",
            "/tmp/a\nb",
            "/tmp/{a}",
            "/tmp/'a'",
            "",
        ] {
            let error = check_config_path(Path::new(bad)).unwrap_err();
            assert!(
                matches!(error, PeerError::UnsupportedPath { .. }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn prepare_writes_private_files_and_launch_arguments() {
        let scratch = private_scratch("peers-prepare");
        let dir = scratch.path();
        let chain = dir.join("chain.pem");
        let key = dir.join("key.pem");
        fs::write(
            &chain,
            "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----",
        )
        .unwrap();
        fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nBB\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let tls = PeerTls {
            chain_pem: chain,
            key_pem: key,
        };
        let listen = "127.0.0.1:27201".parse().unwrap();
        let forward = "127.0.0.1:27100".parse().unwrap();

        let launch = prepare(
            PeerKind::Haproxy,
            Path::new("/usr/sbin/haproxy"),
            dir,
            &tls,
            listen,
            forward,
            8,
        )
        .unwrap();
        let combined = dir.join("combined.pem");
        let pem = fs::read_to_string(&combined).unwrap();
        assert!(
            pem.contains("END CERTIFICATE-----\n-----BEGIN PRIVATE KEY"),
            "{pem}"
        );
        for file in [&combined, &launch.config_file] {
            let mode = fs::metadata(file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        assert_eq!(launch.args.last().unwrap(), launch.config_file.as_os_str());
        assert_eq!(launch.log_file, dir.join("haproxy.log"));

        let launch = prepare(
            PeerKind::Stunnel,
            Path::new("/usr/bin/stunnel4"),
            dir,
            &tls,
            listen,
            forward,
            8,
        )
        .unwrap();
        assert_eq!(launch.args, [launch.config_file.as_os_str()]);
        let config = fs::read_to_string(&launch.config_file).unwrap();
        assert!(config.contains(&format!("output = {}", launch.log_file.display())));

        let wrapped = launch.command(&["taskset", "-c", "1"]).unwrap();
        assert_eq!(wrapped.get_program(), "taskset");
        let args: Vec<&OsStr> = wrapped.get_args().collect();
        assert_eq!(
            args[..3],
            [
                OsStr::new("-c"),
                OsStr::new("1"),
                launch.program.as_os_str()
            ]
        );
        let direct = launch.command::<&str>(&[]).unwrap();
        assert_eq!(direct.get_program(), launch.program.as_os_str());
    }

    #[test]
    fn listening_sees_a_bound_listener_and_its_absence() {
        // A reserved port: bound, but refusing until it listens; nobody else can take it.
        let reserved = testkit::ReservedPort::new();
        let addr = reserved.addr();
        assert!(!listening(addr).unwrap());
        let listener = reserved.listen();
        assert!(listening(addr).unwrap());
        drop(listener);
        // Not at once: another test of this process may be forking a child, which holds a copy
        // of every descriptor until it execs (CI saw the listener a moment after the drop).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while listening(addr).unwrap() {
            assert!(
                std::time::Instant::now() < deadline,
                "still listening 5 s after the drop"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// End to end through every installed peer: TLS from `mllp-loadgen send` (32, then 1024
    /// connections), plain MLLP to `mllp-loadgen sink`; every message must come back AA with no
    /// error, and SIGTERM must leave no process and no listener behind. Needs the peers
    /// (`scripts/install-peers.sh`), `openssl` and `cargo build --release -p loadgen`:
    /// `MLLP_BENCH_PEERS=1 cargo test -p bench --lib peers -- --ignored --nocapture`.
    #[test]
    #[ignore = "runs the installed peers; set MLLP_BENCH_PEERS=1 and pass --ignored"]
    fn installed_peers_relay_every_message_and_stop_on_sigterm() {
        if std::env::var_os("MLLP_BENCH_PEERS").is_none_or(|v| v != "1") {
            eprintln!("MLLP_BENCH_PEERS is not 1: skipped");
            return;
        }
        let loadgen = std::env::var_os("MLLP_LOADGEN").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/mllp-loadgen"),
            PathBuf::from,
        );
        assert!(loadgen.is_file(), "build {} first", loadgen.display());
        let scratch = private_scratch("peers-e2e");
        let dir = scratch.path();
        let (tls, ca) = test_pki(dir);
        let mut sink =
            Process::start(Command::new(&loadgen).args(["sink", "--listen", "127.0.0.1:0"]));
        let line = sink.line();
        let sink_addr: SocketAddr = line
            .split_whitespace()
            .find_map(|word| word.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));

        let mut ran = 0;
        for kind in PeerKind::ALL {
            let Some(binary) = kind.find() else {
                eprintln!("{kind}: not installed, skipped");
                continue;
            };
            ran += 1;
            eprintln!("{kind}: {}", kind.version(&binary).unwrap());
            let run_dir = dir.join(kind.name());
            fs::create_dir(&run_dir).unwrap();
            fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o700)).unwrap();
            let listen = free_port();
            let launch = prepare(kind, &binary, &run_dir, &tls, listen, sink_addr, 1024).unwrap();
            let mut peer = Process::start(&mut launch.command::<&str>(&[]).unwrap());
            let started = std::time::Instant::now();
            while !listening(listen).unwrap() {
                assert!(
                    peer.alive(),
                    "{kind} exited: {}",
                    fs::read_to_string(&launch.log_file).unwrap_or_default()
                );
                assert!(started.elapsed().as_secs() < 10, "{kind} never listened");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            for connections in [32, 1024] {
                let json = run_dir.join(format!("c{connections}.json"));
                let status = testkit::run(
                    Command::new(&loadgen)
                        .arg("send")
                        .arg("--target")
                        .arg(listen.to_string())
                        .args(["--tls", "--sni", "localhost", "--ca"])
                        .arg(&ca)
                        .args(["--connections", &connections.to_string()])
                        .args(["--duration", "3s", "--quiet", "--json"])
                        .arg(&json),
                    std::time::Duration::from_secs(60),
                )
                .status;
                let report = fs::read_to_string(&json).unwrap();
                let sent = json_number(&report, "sent");
                let acked = json_number(&report, "acked");
                let aa = json_number(&report, "AA");
                eprintln!("{kind} c{connections}: sent {sent}, acked {acked}, AA {aa}");
                assert!(status.success(), "{kind} c{connections}: {report}");
                assert!(
                    acked > 0 && sent == acked && acked == aa,
                    "{kind}: {report}"
                );
                assert!(report.contains("\"errors\": {}"), "{kind}: {report}");
            }

            // SIGTERM (a kill would prove nothing) and wait; a peer that ignores it fails the
            // wait, killed then.
            let family = descendants(peer.pid());
            peer.signal(Signal::TERM);
            peer.wait_within(std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(200));
            for pid in &family {
                assert!(!alive(*pid), "{kind}: child {pid} outlived SIGTERM");
            }
            assert!(
                !listening(listen).unwrap(),
                "{kind}: {listen} still listened"
            );
            let log = fs::read_to_string(&launch.log_file).unwrap_or_default();
            eprintln!(
                "{kind}: stopped ({} child process(es) gone); {} log line(s), first: {:?}",
                family.len(),
                log.lines().count(),
                log.lines().take(3).collect::<Vec<_>>()
            );
        }
        sink.stop(Signal::INT);
        eprintln!("sink: {}", sink.rest_of_stdout().trim());
        assert!(ran > 0, "no peer installed: run scripts/install-peers.sh");
        // MLLP_BENCH_PEERS_KEEP=1 keeps the configurations, logs and certificates for a look.
        if std::env::var_os("MLLP_BENCH_PEERS_KEEP").is_some_and(|v| v == "1") {
            eprintln!("kept {}", scratch.keep().display());
        }
    }

    /// A throwaway P-256 CA and a leaf for localhost and 127.0.0.1, made with the openssl CLI;
    /// returns the peer's chain and key, and the CA for the client.
    fn test_pki(dir: &Path) -> (PeerTls, PathBuf) {
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "openssl {args:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=peers test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ]);
        fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "leaf.pem",
        ]);
        let mut chain = fs::read(dir.join("leaf.pem")).unwrap();
        chain.extend(fs::read(dir.join("ca.pem")).unwrap());
        fs::write(dir.join("chain.pem"), chain).unwrap();
        let tls = PeerTls {
            chain_pem: dir.join("chain.pem"),
            key_pem: dir.join("key.pem"),
        };
        (tls, dir.join("ca.pem"))
    }

    /// A loopback address nothing listens on right now.
    fn free_port() -> SocketAddr {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// The first unsigned number after `"key":` in a JSON text.
    fn json_number(json: &str, key: &str) -> u64 {
        let at = json.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
        json[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect(key)
    }

    /// Every process below `pid`, from the parent field of `/proc/*/stat`.
    fn descendants(pid: u32) -> Vec<u32> {
        let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| {
                let child: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
                // The command name is in parentheses and may hold spaces: parse after it.
                let rest = &stat[stat.rfind(')')? + 2..];
                let parent = rest.split_whitespace().nth(1)?.parse().ok()?;
                Some((child, parent))
            })
            .collect();
        let mut found = vec![pid];
        let mut i = 0;
        while i < found.len() {
            let parent = found[i];
            found.extend(
                parents
                    .iter()
                    .filter(|(_, p)| *p == parent)
                    .map(|(c, _)| *c),
            );
            i += 1;
        }
        found.remove(0);
        found
    }

    /// Whether `pid` exists and is not a zombie.
    fn alive(pid: u32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rfind(')')
                .and_then(|end| stat[end + 2..].chars().next())
                .is_some_and(|state| state != 'Z')
        })
    }

    /// A fresh scratch directory only its owner may enter (the peers refuse keys others can
    /// read).
    fn private_scratch(tag: &str) -> TempDir {
        let dir = TempDir::new(tag);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }
}
