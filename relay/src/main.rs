//! `mllp-relay`: the command line. Parses flags into a validated [`relay::config::Config`],
//! starts the workers, and waits for SIGTERM/SIGINT to drain and exit.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use mllp::frame::{FramingConfig, Tolerances};
use relay::config::{
    self, AckMode, Config, DownstreamConfig, Driver, ListenerConfig, OnDownstreamFailure,
};
use relay::tls::{self, ClientTlsSettings, ServerTlsSettings, Thumbprint, TlsRejections};

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
#[derive(Debug, Parser)]
#[command(name = "mllp-relay", version, verbatim_doc_comment)]
struct Cli {
    /// Address to accept senders on, e.g. 0.0.0.0:2575; port 0 picks a free port (printed).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// The downstream MLLP receiver, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    forward: String,

    /// Terminate TLS with this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Require client certificates issued by this CA bundle (PEM). Combine with
    /// --client-thumbprint: a certificate passes if either accepts it.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,

    /// Require a client certificate with this SHA-256 thumbprint (hex, colons optional;
    /// repeatable). Self-signed client certificates are allowed this way.
    #[arg(long = "client-thumbprint", value_name = "HEX", requires = "tls_cert")]
    client_thumbprints: Vec<Thumbprint>,

    /// Connect to the downstream over TLS.
    #[arg(long)]
    forward_tls: bool,

    /// CA bundle (PEM) that must have issued the downstream's certificate.
    #[arg(long, value_name = "FILE", requires = "forward_tls")]
    forward_ca: Option<PathBuf>,

    /// SHA-256 thumbprint the downstream's certificate must have (repeatable).
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

    /// Who answers the sender. passthrough: the receiver's own ACK.
    #[arg(long, value_enum, default_value = "passthrough")]
    ack_mode: AckModeArg,

    /// What the sender hears when the receiver fails after every retry: a generated AE/CE
    /// with ERR 207 (nak), or nothing and a closed connection (close).
    #[arg(long, value_enum, default_value = "nak")]
    on_downstream_failure: FailureArg,

    /// Worker threads (one io_uring runtime each); default: one per CPU.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,

    /// I/O driver: auto (io_uring, else epoll), io-uring, or epoll.
    #[arg(long, value_enum, default_value = "auto")]
    driver: DriverArg,

    /// Do not pin worker threads to CPUs.
    #[arg(long)]
    no_pin: bool,

    /// How long to wait for the receiver's ACK (e.g. 500ms, 10s, 2min).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    ack_timeout: Duration,

    /// Retries after a failed delivery (timeouts, closes, wrong MSA-2); 0 disables.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_RETRIES)]
    retries: u32,

    /// How long to wait for the receiver to accept a connection.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Close a sender's connection after this long without a message.
    #[arg(long, value_name = "DURATION", default_value = "10min", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// A whole frame must arrive within this long of its start byte (slowloris defence).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    frame_deadline: Duration,

    /// Largest message accepted, in bytes; a bigger frame closes the connection.
    #[arg(long, value_name = "BYTES", default_value_t = mllp::frame::DEFAULT_MAX_FRAME_LEN)]
    max_frame_size: usize,

    /// Accept a known sender sloppiness (repeatable): fs_without_cr, lf_after_fs,
    /// whitespace_between_frames, junk_before_start. Each use is logged and counted.
    #[arg(long = "tolerate", value_name = "NAME")]
    tolerate: Vec<String>,

    /// Log filter (tracing syntax, e.g. info, debug, relay=debug); RUST_LOG overrides it.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AckModeArg {
    /// The receiver's own ACK, byte for byte.
    Passthrough,
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FailureArg {
    /// A generated AE (original mode) or CE (enhanced mode) with ERR 207.
    Nak,
    /// Close the sender's connection without an answer.
    Close,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .context("invalid --log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let config = build_config(&cli)?;
    let kind = |tls: bool| if tls { "TLS" } else { "plain" };
    let inbound = kind(config.listener.tls.is_some());
    let outbound = format!(
        "{} ({})",
        config.downstream.addr,
        kind(config.downstream.tls.is_some())
    );
    let workers = config.workers;
    let handle = relay::start(config).context("cannot start the relay")?;
    // Scripts read this line for the bound address (port 0 picks one).
    println!(
        "mllp-relay listening on {} ({inbound}), forwarding to {outbound}, {workers} worker(s), ack mode passthrough",
        handle.listen_addr()
    );
    let shutdown = handle.shutdown_flag();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("cannot install signal handlers")?;
    }
    handle.join();
    println!("mllp-relay stopped");
    Ok(())
}

fn build_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut tolerances = Tolerances::STRICT;
    for name in &cli.tolerate {
        if !tolerances.enable(name) {
            bail!(
                "--tolerate {name}: unknown tolerance (known: fs_without_cr, lf_after_fs, \
                 whitespace_between_frames, junk_before_start)"
            );
        }
    }
    let framing = FramingConfig::MLLP
        .with_max_frame_len(cli.max_frame_size)
        .context("--max-frame-size")?
        .with_tolerances(tolerances);

    let rejections = Arc::new(TlsRejections::default());
    let server_tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert_chain), Some(key)) => Some(tls::server_config(
            &ServerTlsSettings {
                cert_chain: cert_chain.clone(),
                key: key.clone(),
                client_ca: cli.client_ca.clone(),
                client_thumbprints: cli.client_thumbprints.clone(),
            },
            rejections.clone(),
        )?),
        _ => None,
    };

    let forward_addr = resolve(&cli.forward)?;
    let mut downstream = DownstreamConfig::plain("downstream", forward_addr);
    downstream.ack_timeout = cli.ack_timeout;
    downstream.connect_timeout = cli.connect_timeout;
    downstream.retries = cli.retries;
    if cli.forward_tls {
        let host = cli
            .forward
            .rsplit_once(':')
            .map_or(cli.forward.as_str(), |(host, _)| host);
        let name = cli
            .forward_sni
            .clone()
            .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string());
        let client = tls::client_config(&ClientTlsSettings {
            ca: cli.forward_ca.clone(),
            pinned: cli.forward_thumbprints.clone(),
            client_cert: None,
        })?;
        downstream.tls = Some((client, tls::server_name(&name)?));
    }

    let mut listener = ListenerConfig::plain(cli.listen);
    listener.tls = server_tls;
    listener.tls_rejections = rejections;
    listener.framing = framing;
    listener.ack_mode = match cli.ack_mode {
        AckModeArg::Passthrough => AckMode::Passthrough,
    };
    listener.on_downstream_failure = match cli.on_downstream_failure {
        FailureArg::Nak => OnDownstreamFailure::Nak,
        FailureArg::Close => OnDownstreamFailure::Close,
    };
    listener.idle_timeout = cli.idle_timeout;
    listener.frame_deadline = cli.frame_deadline;

    let workers = match cli.workers {
        Some(0) => bail!("--workers must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    Ok(Config {
        listener,
        downstream,
        workers,
        pin_workers: !cli.no_pin,
        metrics_addr: None,
        driver: match cli.driver {
            DriverArg::Auto => Driver::Auto,
            DriverArg::IoUring => Driver::IoUring,
            DriverArg::Epoll => Driver::Epoll,
        },
        shutdown_grace: config::DEFAULT_SHUTDOWN_GRACE,
    })
}

/// Resolves HOST:PORT to its first address.
fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    target
        .to_socket_addrs()
        .with_context(|| format!("--forward {target}: not a HOST:PORT that resolves"))?
        .next()
        .with_context(|| format!("--forward {target}: the name resolves to no address"))
}

/// Parses `500ms`, `10s`, `2min`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 10s, 2min"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "min" | "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, min or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}
