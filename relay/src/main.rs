//! `mllp-relay`: the command line. Builds a validated [`relay::config::Config`] from a TOML file
//! or from the flags (which take the file's path: [`relay::config::load::load_raw`]), starts the
//! workers, and waits for SIGTERM/SIGINT to drain and exit (SIGHUP reopens the audit file and
//! reloads: the whole file with `--config`, the TLS listeners' certificate files otherwise). Under a systemd `Type=notify` unit it reports
//! each of these states ([`notify`]). `mllp-relay check-config FILE` validates a file and
//! exits.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use netio::logging::LogFormat;
use netio::runtime::Driver;
use netio::tls::Thumbprint;
use netio::units::{format_duration, parse_duration};
use relay::config::check::Overrides;
use relay::config::load;
use relay::config::raw::{
    RawConfig, RawDownstream, RawDownstreamTls, RawDuration, RawJournal, RawListener,
    RawListenerTls, RawSize,
};
use relay::config::{self, AckMode, Config, ListenerConfig, SourceNet};

mod gen_certs;
mod notify;

/// `--version`: the crate's version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MLLP_GIT_COMMIT"),
    ")"
);

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An HL7 v2 MLLP relay: accepts senders over TCP or TLS (optionally mutual TLS), forwards
/// each message to a downstream MLLP receiver, and answers the sender with the receiver's own
/// ACK, byte for byte. When the receiver cannot be reached or does not acknowledge properly,
/// the sender gets an AE (or CE) naming the failure, never an AA the receiver did not give.
///
/// Example: terminate TLS on 2575 in front of a plain engine on 6661:
///
///   mllp-relay --listen 0.0.0.0:2575 --tls-cert server.pem --tls-key server.key --forward 10.0.0.5:6661
///
/// The same, acknowledging each message once it is safely on disk (store and forward):
///
///   mllp-relay ... --ack-mode durable --journal /var/lib/mllp-relay/journal
///
/// The same from a config file (commented examples: relay/examples/*.toml), checked first:
///
///   mllp-relay check-config relay.toml
///   mllp-relay --config relay.toml
///
/// The flags describe one listener; a config file may define several `[[listener]]` tables, each
/// with its own port, TLS, ACK mode, framing and limits, sharing the downstreams and routes
/// (e.g. ADT on one port and lab results on another: relay/examples/two-listeners.toml).
/// Start-up prints "mllp-relay listening on ADDR ..." for the first listener, then one
/// "mllp-relay listener NAME on ADDR ..." line per listener, and with --metrics the bound
/// address of the metrics endpoint ("mllp-relay metrics on http://ADDR/metrics").
///
/// With --config, these flags override the file: --listen, --forward, --workers, --metrics,
/// --driver, --no-pin (and --log applies as usual). --listen is refused when the file defines
/// several listeners, as --forward is with several downstreams. Any other relay flag is
/// refused: set it in the file instead. An invalid file, or a refused flag, exits with
/// status 2.
#[derive(Debug, Parser)]
#[command(
    name = "mllp-relay",
    version = VERSION,
    verbatim_doc_comment,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Read the configuration from this TOML file; relative paths in it are resolved against
    /// the file's directory. --listen, --forward, --workers, --metrics, --driver and --no-pin
    /// override the file's values (--listen only for a file with one listener, --forward only
    /// for one with one downstream); other relay flags are refused with it. Default: none (the
    /// flags below describe a relay with one listener).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to accept senders on, e.g. 0.0.0.0:2575; port 0 picks a free port (printed).
    /// Required unless --config is given (then it overrides listener.listen, and is refused
    /// when the file defines several listeners).
    #[arg(long, value_name = "ADDR", required_unless_present = "config")]
    listen: Option<SocketAddr>,

    /// The downstream MLLP receiver, HOST:PORT (resolved at start). Required unless --config
    /// is given (then it overrides downstream.address).
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "config")]
    forward: Option<String>,

    /// Terminate TLS with this certificate chain (PEM, leaf first). Default: plain TCP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM). Required with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Require client certificates issued by this CA bundle (PEM). Combine with
    /// --client-thumbprint: a certificate passes if either accepts it. Default: client
    /// certificates are not asked for (unless --client-thumbprint is given).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,

    /// Require a client certificate with this SHA-256 thumbprint (hex, colons optional;
    /// repeatable). Self-signed client certificates are allowed this way. Default: none.
    #[arg(long = "client-thumbprint", value_name = "HEX", requires = "tls_cert")]
    client_thumbprints: Vec<Thumbprint>,

    /// Accept senders only from these source addresses (CIDR, repeatable), e.g.
    /// 10.20.0.0/16 or 192.168.7.12; others are closed before any TLS or MLLP byte.
    /// Default: any source.
    #[arg(long = "allow-source", value_name = "CIDR")]
    allowed_sources: Vec<SourceNet>,

    /// Connect to the downstream over TLS (needs --forward-ca and/or --forward-thumbprint).
    /// Default: plain TCP.
    #[arg(long)]
    forward_tls: bool,

    /// CA bundle (PEM) that must have issued the downstream's certificate (name checked).
    /// Default: none.
    #[arg(long, value_name = "FILE", requires = "forward_tls")]
    forward_ca: Option<PathBuf>,

    /// SHA-256 thumbprint the downstream's certificate must have (repeatable; name not
    /// checked). Default: none.
    #[arg(
        long = "forward-thumbprint",
        value_name = "HEX",
        requires = "forward_tls"
    )]
    forward_thumbprints: Vec<Thumbprint>,

    /// Name to send (SNI) and verify against the downstream's certificate; default: the host
    /// of --forward.
    #[arg(long, value_name = "NAME", requires = "forward_tls")]
    forward_sni: Option<String>,

    /// Who answers the sender. passthrough: the receiver's own ACK, byte for byte. local: the
    /// relay ACKs on receipt, without durability (messages can be lost). durable: the relay
    /// answers AA/CA only after the message is fsync'ed to the journal in --journal; it is
    /// delivered afterwards, with retries, also after a crash.
    #[arg(long, value_enum, default_value = "passthrough")]
    ack_mode: AckModeArg,

    /// The journal directory of --ack-mode durable (required with it, refused without it):
    /// one sub-directory per worker, created if missing. Journal limits take their defaults;
    /// set them in the journal table of a config file (--config).
    #[arg(long, value_name = "DIR")]
    journal: Option<PathBuf>,

    /// With --ack-mode durable: a message accepted within this long (e.g. 10min; at most 24h)
    /// and sent again with the same MSH-3, MSH-4, MSH-10 and content (a sender that missed the
    /// ACK) gets its original ACK and is not queued twice. Default: off. The window is kept
    /// in memory (100,000 messages at most); after a restart it is refilled from the
    /// messages still in the journal.
    #[arg(long, value_name = "DURATION")]
    duplicate_window: Option<String>,

    /// What the sender hears when the receiver fails after every retry: a generated AE/CE
    /// with ERR 207 (nak), or nothing and a closed connection (close).
    #[arg(long, value_enum, default_value = "nak")]
    on_downstream_failure: FailureArg,

    /// What happens to a message whose MSH-10 (message control ID) is empty: forward it (the
    /// receiver decides; counted and warned about once per connection), or reject it with AR
    /// and ERR 101 (required field missing) without forwarding it.
    #[arg(long, value_enum, value_name = "WHAT", default_value = "forward")]
    missing_control_id: MissingControlIdArg,

    /// What happens to a batch (FHS/BHS ... BTS/FTS in one frame): reject it whole with AR,
    /// forward it whole and pass the receiver's answer back (passthrough only), or split it
    /// into messages delivered one by one and answered with one acknowledgement batch.
    #[arg(long, value_enum, value_name = "WHAT", default_value = "reject")]
    batch: BatchArg,

    /// Worker threads (one io_uring runtime each); default: one per CPU the process may run
    /// on (its affinity, e.g. under taskset or a container's cpuset).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,

    /// Serve Prometheus metrics (GET /metrics) on this address, e.g. 127.0.0.1:9464.
    /// Default: no metrics endpoint.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// I/O driver: auto (io_uring, else epoll), io-uring, or epoll.
    #[arg(long, value_enum, default_value = "auto")]
    driver: DriverArg,

    /// Do not pin worker threads to CPUs. Default: worker i is pinned to the i-th CPU the
    /// process may run on (under `taskset -c 4-7`, worker 0 on CPU 4).
    #[arg(long)]
    no_pin: bool,

    /// How long to wait for the receiver's ACK (e.g. 500ms, 10s, 2min).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    ack_timeout: String,

    /// Retries after a failed delivery (timeouts, closes, wrong MSA-2); 0 disables.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_RETRIES)]
    retries: u32,

    /// How long to wait for the receiver to accept a connection.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    connect_timeout: String,

    /// Close a sender's connection after this long without a message.
    #[arg(long, value_name = "DURATION", default_value = "10min")]
    idle_timeout: String,

    /// A whole frame must arrive within this long of its start byte (slowloris defence).
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    frame_deadline: String,

    /// Largest message accepted: bytes, or a size such as 512KiB or 16MiB (at most 1GiB); a
    /// bigger frame closes the connection.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    max_frame_size: String,

    /// Accept a known sender sloppiness (repeatable): fs_without_cr, lf_after_fs,
    /// whitespace_between_frames, junk_before_start. Each use is logged and counted.
    /// Default: none (strict MLLP).
    #[arg(long = "tolerate", value_name = "NAME")]
    tolerate: Vec<String>,

    /// Rewrite LF and CRLF segment terminators to CR before forwarding, for senders that end
    /// segments with line feeds when the receiver wants HL7's CR. A line break inside text (a
    /// report in OBX-5) is kept: only one followed by a segment ID or the end of the message
    /// is a terminator. Counted; default: off (bytes pass unchanged).
    #[arg(long)]
    normalize_segment_terminators: bool,

    /// Log filter (tracing syntax, e.g. info, debug, relay=debug). This flag wins over the
    /// RUST_LOG environment variable, which wins over the default. [default: info]
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,

    /// Log lines as text, or as one JSON object per line (for a log shipper).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormatArg,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a TOML config file, print what would run, and exit (0: valid, 2: invalid).
    ///
    /// The file is loaded as --config would load it: certificates and keys read, addresses
    /// resolved. When it is valid, a summary (every listener with its TLS and client
    /// authentication, ACK mode, limits and timeouts; the journal, downstreams, routes,
    /// workers) goes to stdout and the exit code is 0; otherwise every error found goes to
    /// stderr, each naming its key (`listener[1].tls.key` for the second of several
    /// listeners), and the exit code is 2.
    CheckConfig {
        /// The config file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// List or replay the dead letters of a durable journal: messages the receiver refused
    /// (AE/AR/CE/CR), kept with its answer.
    ///
    ///   mllp-relay dead-letters list --journal /var/lib/mllp-relay/journal
    ///   mllp-relay dead-letters replay --journal /var/lib/mllp-relay/journal --forward 10.0.0.5:6661
    #[command(subcommand, verbatim_doc_comment)]
    DeadLetters(DeadLetterCommand),
    /// Write throwaway certificates for trying TLS and mutual TLS (NOT for production).
    ///
    /// Makes a CA and, issued by it, a server certificate, a client certificate per sender,
    /// and a client certificate for the relay itself, under the names the example configs
    /// use. To try the examples:
    ///
    ///   mllp-relay gen-certs relay/examples/certs
    ///   mllp-relay check-config relay/examples/mtls-thumbprints.toml
    ///
    /// Written to DIR (created if missing):
    ///
    ///   ca.pem, ca.key                 the CA: ca.pem is listener.tls.client_ca, and what
    ///                                  senders (and a relay forwarding here) trust
    ///   server.pem, server.key         listener.tls.cert (leaf, then the CA) and .key,
    ///                                  for the --name names
    ///   client-NAME.pem, client-NAME.key
    ///                                  per --client: CN=NAME, for client authentication;
    ///                                  hand both to that sender
    ///   relay-client.pem, .key         downstream.tls.client_cert and client_key, for a
    ///                                  receiver that wants mutual TLS
    ///
    /// For each client certificate it prints the thumbprint (for listener.tls.client_thumbprints
    /// or a [[listener.sender]] client_thumbprint) and the subject (for client_subject), as
    /// TOML lines to paste. Keys are ECDSA P-256, written with mode 0600. Existing files are
    /// only replaced with --force. Exit 0, or 2 with the reason.
    ///
    /// NOT FOR PRODUCTION: the CA's key lies next to the certificates, nothing can revoke them,
    /// and whoever copies DIR can pose as the relay or as a sender. Real deployments use
    /// certificates from their own PKI.
    #[command(verbatim_doc_comment)]
    GenCerts {
        /// Where to write the files, e.g. relay/examples/certs (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// A host name or IP address the server certificate is for (repeatable); senders check
        /// it against the address they connect to. IP addresses become IP SANs; the first name
        /// is also the CN.
        #[arg(
            long = "name",
            value_name = "HOST|IP",
            default_values = ["localhost", "127.0.0.1"]
        )]
        names: Vec<String>,
        /// A sender to make a client certificate for (repeatable): client-NAME.pem and .key,
        /// subject CN=NAME.
        #[arg(long = "client", value_name = "NAME", default_values = ["sender"])]
        clients: Vec<String>,
        /// How many days the certificates are valid, from now (1 to 3650).
        #[arg(
            long,
            value_name = "N",
            default_value_t = 365,
            value_parser = clap::value_parser!(u32).range(1..=3650)
        )]
        days: u32,
        /// Replace files that already exist in DIR (every file is generated anew).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// Print every dead letter: file, sequence number, time taken in, MSH-9, MSH-10 and the
    /// receiver's answer (code and MSA-3). Message content is not printed. Exit 0.
    List {
        /// The journal directory (the relay's --journal, or journal.dir in its config file).
        #[arg(long, value_name = "DIR")]
        journal: PathBuf,
    },
    /// Send every dead letter again, one at a time, to a plain MLLP receiver; those it accepts
    /// (AA/CA, MSA-2 checked) are removed, the others kept with their new answer. Takes the
    /// journal's lock: stop the relay first. Exit 0 when all were accepted, 1 otherwise.
    Replay {
        /// The journal directory (the relay's --journal, or journal.dir in its config file).
        #[arg(long, value_name = "DIR")]
        journal: PathBuf,
        /// The receiver, HOST:PORT (plain MLLP).
        #[arg(long, value_name = "HOST:PORT")]
        forward: String,
        /// How long to wait for each ACK.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
        ack_timeout: Duration,
        /// The receiver's frame start byte, in hex, when it negotiated other framing than
        /// MLLP's (its downstream.start_byte). Default: 0x0B.
        #[arg(long, value_name = "HEX", value_parser = hex_byte_arg)]
        start_byte: Option<u8>,
        /// The receiver's one or two frame end bytes, in hex, comma-separated (its
        /// downstream.end_bytes). Default: 0x1C,0x0D.
        #[arg(long, value_name = "HEX[,HEX]", value_parser = hex_byte_arg, value_delimiter = ',')]
        end_bytes: Vec<u8>,
    },
}

fn hex_byte_arg(text: &str) -> Result<u8, String> {
    netio::units::parse_hex_byte(text).map_err(|e| e.to_string())
}

/// Runs a `dead-letters` subcommand and exits.
fn dead_letters(command: &DeadLetterCommand) -> ! {
    let code = match run_dead_letters(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code)
}

fn run_dead_letters(command: &DeadLetterCommand) -> anyhow::Result<i32> {
    use relay::custody::dead_letters;
    match command {
        DeadLetterCommand::List { journal } => {
            if !journal.is_dir() {
                bail!("{} is not a directory", journal.display());
            }
            let (letters, warnings) = dead_letters::read_all(journal)
                .with_context(|| format!("reading the dead letters of {}", journal.display()))?;
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            for letter in &letters {
                println!(
                    "{}  seq {}  taken in {}  {}  MSH-10 {}  answer: {}",
                    letter
                        .file
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy(),
                    letter.seq,
                    mllp::timestamp::format_unix_ms(letter.time_ms),
                    letter.message_type(),
                    letter.control_id(),
                    letter.answer_summary().trim_end()
                );
            }
            println!("{} dead letter(s)", letters.len());
            Ok(0)
        }
        DeadLetterCommand::Replay {
            journal,
            forward,
            ack_timeout,
            start_byte,
            end_bytes,
        } => {
            if !journal.is_dir() {
                bail!("{} is not a directory", journal.display());
            }
            let addr = resolve(forward)?;
            let framing = mllp::frame::FramingConfig::negotiated(*start_byte, end_bytes)
                .map_err(|e| anyhow::anyhow!("--start-byte/--end-bytes: {e}"))?;
            let summary =
                dead_letters::replay(journal, addr, framing, *ack_timeout, |letter, outcome| {
                    println!(
                        "seq {}  MSH-10 {}: {outcome}",
                        letter.seq,
                        letter.control_id()
                    );
                })
                .with_context(|| format!("replaying the dead letters of {}", journal.display()))?;
            println!(
                "{} accepted and removed, {} kept",
                summary.accepted, summary.kept
            );
            Ok(if summary.kept == 0 { 0 } else { 1 })
        }
    }
}

/// Flags that may replace a config file's value (`--config` with them: see [`Overrides`]), with
/// the key each one sets.
const OVERRIDE_FLAGS: &[(&str, &str, &str)] = &[
    ("listen", "--listen", "listener.listen"),
    ("forward", "--forward", "downstream.address"),
    ("workers", "--workers", "workers"),
    ("metrics", "--metrics", "metrics"),
    ("driver", "--driver", "driver"),
    ("no_pin", "--no-pin", "pin_workers"),
];

/// Flags that a config file replaces: with --config they are refused, naming the key to set.
const FILE_ONLY_FLAGS: &[(&str, &str, &str)] = &[
    (
        "allowed_sources",
        "--allow-source",
        "listener.allowed_sources",
    ),
    ("tls_cert", "--tls-cert", "listener.tls.cert"),
    ("tls_key", "--tls-key", "listener.tls.key"),
    ("client_ca", "--client-ca", "listener.tls.client_ca"),
    (
        "client_thumbprints",
        "--client-thumbprint",
        "listener.tls.client_thumbprints",
    ),
    ("forward_tls", "--forward-tls", "[downstream.tls]"),
    ("forward_ca", "--forward-ca", "downstream.tls.ca"),
    (
        "forward_thumbprints",
        "--forward-thumbprint",
        "downstream.tls.thumbprints",
    ),
    ("forward_sni", "--forward-sni", "downstream.tls.sni"),
    ("ack_mode", "--ack-mode", "listener.ack_mode"),
    ("journal", "--journal", "journal.dir"),
    (
        "duplicate_window",
        "--duplicate-window",
        "listener.duplicate_window",
    ),
    (
        "on_downstream_failure",
        "--on-downstream-failure",
        "listener.on_downstream_failure",
    ),
    (
        "missing_control_id",
        "--missing-control-id",
        "listener.missing_control_id",
    ),
    ("batch", "--batch", "listener.batch"),
    ("ack_timeout", "--ack-timeout", "downstream.ack_timeout"),
    ("retries", "--retries", "downstream.retries"),
    (
        "connect_timeout",
        "--connect-timeout",
        "downstream.connect_timeout",
    ),
    ("idle_timeout", "--idle-timeout", "listener.idle_timeout"),
    (
        "frame_deadline",
        "--frame-deadline",
        "listener.frame_deadline",
    ),
    (
        "max_frame_size",
        "--max-frame-size",
        "listener.max_frame_size",
    ),
    ("tolerate", "--tolerate", "listener.tolerate"),
    (
        "normalize_segment_terminators",
        "--normalize-segment-terminators",
        "listener.normalize_segment_terminators",
    ),
];

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AckModeArg {
    /// The receiver's own ACK, byte for byte.
    Passthrough,
    /// The relay ACKs on receipt and forwards afterwards, without durability: messages can
    /// be lost (for benchmarks and senders that cannot wait).
    Local,
    /// AA/CA only after the message is fsync'ed to the journal in --journal; delivered
    /// afterwards with retries, also after a crash.
    Durable,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DriverArg {
    /// io_uring when the kernel offers it, else epoll.
    Auto,
    /// io_uring only.
    IoUring,
    /// epoll only.
    Epoll,
}

impl From<DriverArg> for Driver {
    fn from(arg: DriverArg) -> Self {
        match arg {
            DriverArg::Auto => Self::Auto,
            DriverArg::IoUring => Self::IoUring,
            DriverArg::Epoll => Self::Epoll,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MissingControlIdArg {
    /// Forward it; the receiver decides.
    Forward,
    /// AR with ERR 101, not forwarded.
    Reject,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, every field at the top level.
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BatchArg {
    /// AR for the whole batch, nothing forwarded.
    Reject,
    /// The whole batch to the receiver; its answer back byte for byte.
    Forward,
    /// Each message on its own; one acknowledgement batch back.
    Split,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FailureArg {
    /// A generated AE (original mode) or CE (enhanced mode) with ERR 207.
    Nak,
    /// Close the sender's connection without an answer.
    Close,
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match &cli.command {
        Some(Command::CheckConfig { file }) => check_config(file),
        Some(Command::DeadLetters(command)) => dead_letters(command),
        Some(Command::GenCerts {
            dir,
            names,
            clients,
            days,
            force,
        }) => {
            let request = gen_certs::Request {
                dir: dir.clone(),
                names: names.clone(),
                clients: clients.clone(),
                days: *days,
                force: *force,
            };
            match gen_certs::run(&request) {
                Ok(()) => std::process::exit(0),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::exit(2);
                }
            }
        }
        None => {}
    }

    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    if let Err(e) = netio::logging::init(cli.log.as_deref(), "info", format) {
        // A usage error, like a refused flag: the same report and exit status.
        eprintln!("error: {e}");
        std::process::exit(2);
    }

    // Every connection (sender and downstream) is a descriptor: the usual soft limit of 1024
    // would refuse connections long before memory or CPU run out.
    if let Err(e) = netio::runtime::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot raise the open-file limit to its hard limit");
    }
    let config = match &cli.config {
        Some(path) => config_from_file(path, &cli, &matches)?,
        None => config_from_flags(&cli),
    };
    let kind = |tls: bool| if tls { "TLS" } else { "plain" };
    let mode_of = |listener: &ListenerConfig| match (listener.ack_mode, &config.journal) {
        (AckMode::Passthrough, _) => "passthrough".to_owned(),
        (AckMode::Local, _) => "local (no durability)".to_owned(),
        (AckMode::Durable, Some(journal)) => match &listener.duplicates {
            None => format!("durable (journal {})", journal.dir.display()),
            Some(window) => format!(
                "durable (journal {}, duplicate window {})",
                journal.dir.display(),
                format_duration(window.max_age)
            ),
        },
        (AckMode::Durable, None) => "durable".to_owned(),
    };
    // Per listener, in config order: name, TLS or plain, ACK mode (the address comes once bound).
    let described: Vec<(String, &str, String)> = config
        .listeners
        .iter()
        .map(|l| (l.name.clone(), kind(l.tls.is_some()), mode_of(l)))
        .collect();
    let outbound = match config.downstreams.as_slice() {
        [only] => format!("{} ({})", only.addr, kind(only.tls.is_some())),
        many => {
            let each: Vec<String> = many
                .iter()
                .map(|d| format!("{} {} ({})", d.name, d.addr, kind(d.tls.is_some())))
                .collect();
            format!("{} downstreams: {}", many.len(), each.join(", "))
        }
    };
    let workers = config.workers;
    let notifier = notify::Notifier::from_env();
    let handle = relay::start(config).context("cannot start the relay")?;
    // Scripts read this first line for the (first) bound address (port 0 picks one); its form
    // is the same whatever the number of listeners. systemd shows it as the unit's status.
    let (_, inbound, mode) = &described[0];
    let listening = format!(
        "listening on {} ({inbound}), forwarding to {outbound}, {workers} worker(s), ack mode {mode}",
        handle.listen_addr()
    );
    println!("mllp-relay {listening}");
    // Then one line per listener, the first included, each naming it.
    for (bound, (name, inbound, mode)) in handle.listeners().iter().zip(&described) {
        println!(
            "mllp-relay listener {name:?} on {} ({inbound}), ack mode {mode}",
            bound.addr
        );
    }
    if let Some(metrics) = handle.metrics_addr() {
        println!("mllp-relay metrics on http://{metrics}/metrics");
    }
    let shutdown = handle.shutdown_flag();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("cannot install signal handlers")?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("cannot install the SIGHUP handler")?;
    // Ready only now: every listener accepts and every signal has its handler, so a SIGHUP
    // or SIGTERM systemd sends from here on is acted upon.
    notifier.notify(&notify::ready(&listening));
    // The main thread only watches the signals; the workers do the work.
    while !shutdown.load(Ordering::Relaxed) {
        if reload.swap(false, Ordering::Relaxed) {
            notifier.notify(&notify::reloading(notify::monotonic_usec()));
            handle.reopen_audit();
            let outcome = match &cli.config {
                Some(path) => reload_file(&handle, path, &file_overrides(&cli, &matches)),
                None => reload_tls(&handle),
            };
            notifier.notify(&notify::ready(&format!(
                "{listening}; last reload: {outcome}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    notifier.notify(&notify::stopping());
    handle.join();
    println!("mllp-relay stopped");
    Ok(())
}

/// SIGHUP with `--config`: reads the file again (with the command line's overrides) and puts
/// it in force without dropping a connection; what needs a restart keeps its running value.
/// Every outcome is logged, and summed up for systemd's status line. A file with problems, or
/// a change that cannot be applied, leaves the running configuration as it is.
fn reload_file(handle: &relay::RelayHandle, path: &Path, overrides: &Overrides) -> String {
    let loaded = match load::load_config_with(path, overrides) {
        Ok(loaded) => loaded,
        Err(e) => {
            handle.reload_failed();
            tracing::error!(error = %e, "SIGHUP: the configuration file has problems; the running configuration stays in force");
            return format!("failed: {} has problems (see the log)", path.display());
        }
    };
    match handle.reload(loaded.config) {
        Ok(kept) => {
            for key in &kept {
                tracing::warn!("SIGHUP: {key}");
            }
            tracing::info!(file = %path.display(), "SIGHUP: configuration reloaded; open connections kept");
            if kept.is_empty() {
                "configuration reloaded".to_owned()
            } else {
                format!(
                    "configuration reloaded; {} setting(s) need a restart (see the log)",
                    kept.len()
                )
            }
        }
        Err(refused) => {
            for reason in &refused {
                tracing::error!(
                    "SIGHUP: {reason}: restart to apply this file; the running configuration stays in force"
                );
            }
            "failed: a change needs a restart (see the log)".to_owned()
        }
    }
}

/// SIGHUP without `--config`: reloads every TLS listener's certificates, keys and client
/// allowlist from their files, logging each outcome, and sums them up for systemd's status
/// line.
fn reload_tls(handle: &relay::RelayHandle) -> String {
    let reloaded = handle.reload_tls();
    if reloaded.is_empty() {
        tracing::info!("SIGHUP: nothing to reload (no TLS listener)");
        return "nothing to reload (no TLS listener)".to_owned();
    }
    let mut failed = Vec::new();
    for (listener, result) in reloaded {
        match result {
            Ok(()) => tracing::info!(
                listener,
                "SIGHUP: certificates, keys and client allowlist reloaded"
            ),
            Err(e) => {
                tracing::error!(
                    listener,
                    error = %e,
                    "SIGHUP: reload failed; this listener's previous certificates stay in force"
                );
                failed.push(listener);
            }
        }
    }
    if failed.is_empty() {
        "certificates reloaded".to_owned()
    } else {
        format!(
            "failed for listener(s) {} (previous certificates in force; see the log)",
            failed.join(", ")
        )
    }
}

/// `check-config FILE`: the summary and exit 0, or every error and exit 2.
fn check_config(file: &Path) -> ! {
    match load::load_config(file) {
        Ok(loaded) => {
            println!("{}: OK", file.display());
            println!("{}", loaded.settings);
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// `--config FILE`, with the flags that may override it; any other relay flag is refused
/// (a usage error, exit 2) so a value is never silently taken from one place over the other.
/// An invalid file is reported as `check-config` reports it, with exit status 2.
fn config_from_file(path: &Path, cli: &Cli, matches: &ArgMatches) -> anyhow::Result<Config> {
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let refused: Vec<String> = FILE_ONLY_FLAGS
        .iter()
        .filter(|(id, _, _)| given(id))
        .map(|(_, flag, key)| format!("{flag} (set {key} in the file)"))
        .collect();
    if !refused.is_empty() {
        Cli::command()
            .error(
                ErrorKind::ArgumentConflict,
                format!(
                    "with --config {}, only --listen, --forward, --workers, --metrics, \
                     --driver, --no-pin and --log may be given; refused: {}",
                    path.display(),
                    refused.join(", ")
                ),
            )
            .exit();
    }
    match load::load_config_with(path, &file_overrides(cli, matches)) {
        Ok(loaded) => {
            tracing::info!(file = %loaded.settings.source.display(), "configuration loaded");
            Ok(loaded.config)
        }
        Err(e) => {
            // The same report and exit status as `check-config`.
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// The flags that override a config file (`--listen`, `--forward`, `--workers`, `--metrics`,
/// `--driver`, `--no-pin`), as given on the command line.
fn file_overrides(cli: &Cli, matches: &ArgMatches) -> Overrides {
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    Overrides {
        listen: cli.listen,
        forward: cli.forward.clone(),
        workers: cli.workers,
        metrics: cli.metrics,
        driver: given("driver").then_some(cli.driver.into()),
        pin_workers: cli.no_pin.then_some(false),
    }
}

/// The relay the flags describe, checked and built by the same rules as a config file: the
/// flags become the raw form of a file with one `[[listener]]` and one `[[downstream]]`, and
/// a problem is reported under its flag (exit 2). Relative paths start at the working
/// directory.
fn config_from_flags(cli: &Cli) -> Config {
    check_flag_pairs(cli);
    let raw = raw_from_flags(cli);
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    match load::load_raw(
        &raw,
        Path::new("(command line)"),
        &here,
        &Overrides::default(),
    ) {
        Ok(loaded) => loaded.config,
        Err(problems) => {
            for problem in problems {
                eprintln!("error: {}: {}", flag_for(&problem.key), problem.message);
            }
            std::process::exit(2);
        }
    }
}

/// The flags that only make sense together, said in the command line's own words (a usage
/// error, exit 2): `--journal` goes with `--ack-mode durable` both ways, and
/// `--duplicate-window` needs it.
fn check_flag_pairs(cli: &Cli) {
    let durable = matches!(cli.ack_mode, AckModeArg::Durable);
    let refuse =
        |kind: ErrorKind, message: String| -> ! { Cli::command().error(kind, message).exit() };
    match (durable, &cli.journal) {
        (true, None) => refuse(
            ErrorKind::MissingRequiredArgument,
            "--ack-mode durable needs --journal DIR: the directory where each message is \
             fsync'ed before it is acknowledged"
                .into(),
        ),
        (false, Some(_)) => refuse(
            ErrorKind::ArgumentConflict,
            format!(
                "--journal is only used with --ack-mode durable (--ack-mode is {})",
                cli.ack_mode
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_owned())
            ),
        ),
        _ => {}
    }
    if cli.duplicate_window.is_some() && !durable {
        refuse(
            ErrorKind::ArgumentConflict,
            "--duplicate-window needs --ack-mode durable: only a relay that keeps custody of a \
             message can answer its resend itself"
                .into(),
        );
    }
}

/// The flags as the raw form of a config file (values as written, checked later).
fn raw_from_flags(cli: &Cli) -> RawConfig {
    let name = |value: &dyn ValueEnumName| value.name();
    let tls = cli.tls_cert.as_ref().map(|cert| RawListenerTls {
        cert: Some(cert.clone()),
        key: cli.tls_key.clone(),
        client_ca: cli.client_ca.clone(),
        client_thumbprints: cli
            .client_thumbprints
            .iter()
            .map(ToString::to_string)
            .collect(),
    });
    let forward_tls = cli.forward_tls.then(|| RawDownstreamTls {
        ca: cli.forward_ca.clone(),
        thumbprints: cli
            .forward_thumbprints
            .iter()
            .map(ToString::to_string)
            .collect(),
        sni: cli.forward_sni.clone(),
        ..RawDownstreamTls::default()
    });
    let duration = |text: &str| Some(RawDuration(text.to_owned()));
    RawConfig {
        workers: cli.workers.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        pin_workers: Some(!cli.no_pin),
        driver: Some(name(&cli.driver)),
        metrics: cli.metrics.map(|addr| addr.to_string()),
        listener: vec![RawListener {
            listen: cli.listen.map(|addr| addr.to_string()),
            ack_mode: Some(name(&cli.ack_mode)),
            on_downstream_failure: Some(name(&cli.on_downstream_failure)),
            missing_control_id: Some(name(&cli.missing_control_id)),
            batch: Some(name(&cli.batch)),
            max_frame_size: Some(RawSize::Text(cli.max_frame_size.clone())),
            tolerate: cli.tolerate.clone(),
            normalize_segment_terminators: Some(cli.normalize_segment_terminators),
            idle_timeout: duration(&cli.idle_timeout),
            frame_deadline: duration(&cli.frame_deadline),
            allowed_sources: cli
                .allowed_sources
                .iter()
                .map(ToString::to_string)
                .collect(),
            duplicate_window: cli.duplicate_window.as_deref().and_then(duration),
            tls,
            ..RawListener::default()
        }],
        downstream: vec![RawDownstream {
            name: Some("downstream".to_owned()),
            address: cli.forward.clone(),
            connect_timeout: duration(&cli.connect_timeout),
            ack_timeout: duration(&cli.ack_timeout),
            retries: Some(i64::from(cli.retries)),
            tls: forward_tls,
            ..RawDownstream::default()
        }],
        journal: cli.journal.as_ref().map(|dir| RawJournal {
            dir: Some(dir.clone()),
            ..RawJournal::default()
        }),
        ..RawConfig::default()
    }
}

/// A flag's value as the config file would write it (`io-uring`, `durable`, `nak`).
trait ValueEnumName {
    fn name(&self) -> String;
}

impl<T: ValueEnum> ValueEnumName for T {
    fn name(&self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }
}

/// The flag that sets the value a problem's key names (`listener.tolerate[1]` → `--tolerate`),
/// or the key itself when no flag sets it.
fn flag_for(key: &str) -> &str {
    let key = key.split('[').next().unwrap_or(key);
    FILE_ONLY_FLAGS
        .iter()
        .chain(OVERRIDE_FLAGS)
        .find(|(_, _, file_key)| file_key.trim_matches(['[', ']']) == key)
        .map_or(key, |(_, flag, _)| flag)
}

/// Resolves HOST:PORT to its first address.
fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    target
        .to_socket_addrs()
        .with_context(|| format!("--forward {target}: not a HOST:PORT that resolves"))?
        .next()
        .with_context(|| format!("--forward {target}: the name resolves to no address"))
}
