//! `mllp-loadgen`: the command line over [`loadgen`]'s `send`, `sink`, `ramp` and `merge`.

use netio::logging::LogFormat;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use loadgen::hold::{self, HoldConfig};
use loadgen::pace::Arrival;
use loadgen::ramp::{self, RampPlan, StepFailure};
use loadgen::report;
use loadgen::send::{self, Loop, Progress, SendConfig, Stop};
use loadgen::sink::{self, Faults, NakCode, SinkConfig};
use loadgen::source::{self, CorpusOptions, Message, RunTag, TemplateKind};
use loadgen::stats::RunStats;
use mllp::frame::FramingConfig;
use netio::connect::ClientTls;
use netio::runtime::Driver;
use netio::tls::{self, ClientTlsSettings, ServerTlsSettings, TlsRejections};
use netio::units::{format_duration, parse_duration, parse_size};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator and test receiver for HL7 v2 over MLLP, with honest latency numbers.
///
/// send   drive a listener (closed loop, or open loop at a fixed rate with latency measured
///        from the intended send time) and report ACK latency percentiles
/// sink   an ACKing receiver that records every MSH-10 and can misbehave on purpose
/// ramp   raise an open-loop rate step by step until p99 or errors break a target
/// merge  add the histograms of several `send --json` results (several processes or hosts)
/// hold   open N (TLS) connections and keep them idle: the target's memory per connection
///
/// Examples:
///
///   mllp-loadgen sink --listen 127.0.0.1:6661
///   mllp-loadgen send --target 127.0.0.1:6661 --connections 32 --duration 10s
///   mllp-loadgen send --target 127.0.0.1:6661 --rate 20000 --duration 30s --json run.json
///   mllp-loadgen ramp --target 127.0.0.1:6661 --start 5000 --step 5000 --p99-target 2ms
///   mllp-loadgen hold --target 127.0.0.1:6661 --connections 1000 --duration 30s
#[derive(Debug, Parser)]
#[command(name = "mllp-loadgen", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log filter (tracing syntax: error, warn, info, debug, or per module). This flag wins
    /// over the RUST_LOG environment variable, which wins over the default. [default: warn]
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send messages to an MLLP listener and measure every ACK.
    Send(SendArgs),
    /// Receive messages, ACK them (with optional faults) and count what arrived.
    Sink(SinkArgs),
    /// Step an open-loop rate up until the p99 target or the error limit breaks.
    Ramp(RampArgs),
    /// Merge `send --json` results: counts and histograms add up.
    Merge(MergeArgs),
    /// Open N connections and keep them idle (for the target's memory per connection).
    ///
    /// For measuring what an idle connection costs the target: read its memory (VmRSS in
    /// /proc/PID/status) while holding 100 connections and while holding 1000; the difference
    /// divided by 900 is the cost of one idle connection, TLS session state included.
    ///
    /// Every TCP connect and TLS handshake completes first (at most --concurrent-opens at once,
    /// so a thousand handshakes do not time out in the target's backlog). Then exactly one line
    /// is printed on stdout: `holding N connections`. If any connection could not be opened, an
    /// error naming how many and the first cause goes to stderr instead, the others are closed,
    /// and the exit status is 1. Nothing is sent while holding. At SIGINT/SIGTERM, or after
    /// --duration, every connection is closed (TLS close_notify, then FIN), `closed by peer: K`
    /// is printed, and the exit status is 0, or 4 when the target closed any held connection.
    ///
    /// Example: the relay's memory per idle TLS connection:
    ///
    ///   mllp-loadgen hold --target 127.0.0.1:2575 --tls --ca ca.pem --connections 1000 &
    ///   # after `holding 1000 connections`:
    ///   grep VmRSS /proc/$(pidof mllp-relay)/status
    ///   kill -TERM %1
    #[command(verbatim_doc_comment)]
    Hold(HoldArgs),
}

/// Where and how to connect (shared by `send`, `ramp` and `hold`).
#[derive(Debug, Args)]
struct ConnectArgs {
    /// The MLLP listener to drive, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    target: String,

    /// Connect with TLS (1.2 or 1.3). Trust comes from --ca, or --insecure.
    #[arg(long)]
    tls: bool,
    /// PEM bundle of CAs that may sign the target's certificate.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Name sent as SNI and checked against the certificate. Default: the host of --target.
    #[arg(long, value_name = "NAME")]
    sni: Option<String>,
    /// Accept any server certificate (self-signed test servers). Never against production.
    #[arg(long)]
    insecure: bool,
    /// Client certificate chain (PEM) for mutual TLS; with --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,

    /// Connections kept open.
    #[arg(long, default_value_t = 1, value_name = "N")]
    connections: usize,
    /// Threads (one io_uring runtime each) the connections are spread over. Default: the
    /// number of CPUs, at most one per connection.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// How long connecting (TCP and TLS handshake) may take.
    #[arg(long, default_value = "5s", value_parser = duration_arg, value_name = "D")]
    connect_timeout: Duration,
    /// I/O driver: io_uring (falls back to epoll when the kernel lacks it), or epoll.
    #[arg(long, value_enum, default_value_t = DriverArg::Auto)]
    driver: DriverArg,
}

/// Frame bytes other than MLLP's, negotiated between the two ends (shared by `send`, `ramp`
/// and `sink`).
#[derive(Debug, Args)]
struct FramingArgs {
    /// The byte that opens a frame, in hex (negotiated framing). Default: 0x0B (VT).
    #[arg(long, value_parser = hex_byte_arg, value_name = "HEX")]
    start_byte: Option<u8>,
    /// The one or two bytes that close a frame, in hex, comma-separated. Default: 0x1C,0x0D
    /// (FS CR). Frame bytes must be control bytes no message holds (not LF; CR only second).
    #[arg(long, value_parser = hex_byte_arg, value_delimiter = ',', value_name = "HEX[,HEX]")]
    end_bytes: Vec<u8>,
}

impl FramingArgs {
    /// The framing these flags ask for.
    fn framing(&self) -> anyhow::Result<FramingConfig> {
        FramingConfig::negotiated(self.start_byte, &self.end_bytes)
            .map_err(|e| anyhow::anyhow!("--start-byte/--end-bytes: {e}"))
    }
}

/// Where and how to connect, and what to send (shared by `send` and `ramp`).
#[derive(Debug, Args)]
struct TargetArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    framing: FramingArgs,
    /// Messages in flight per connection (1 = HL7 stop-and-wait); ACKs are matched by MSA-2.
    #[arg(long, default_value_t = 1, value_name = "W")]
    pipeline: usize,

    /// Send the messages (one per file, batch files, or MLLP-framed streams) found in this
    /// folder (or this one file), round-robin.
    #[arg(long, value_name = "DIR", conflicts_with = "template")]
    corpus: Option<PathBuf>,
    /// Rewrite LF and CRLF segment terminators of corpus messages to CR.
    #[arg(long)]
    normalize_eol: bool,
    /// Generate messages: an ADT^A01 or an ORU^R01 (lab result) of --size bytes.
    #[arg(long, value_enum, default_value_t = Template::Oru)]
    template: Template,
    /// Size of a generated message (e.g. 200, 1KiB, 64KiB, 1MiB).
    #[arg(long, default_value = "1KiB", value_parser = size_arg, value_name = "BYTES")]
    size: usize,
    /// Seed of the generated message's content.
    #[arg(long, default_value_t = 1, value_name = "S")]
    seed: u64,

    /// How long a message may wait for its ACK.
    #[arg(long, default_value = "10s", value_parser = duration_arg, value_name = "D")]
    ack_timeout: Duration,
}

/// Reports to write (shared by `send` and `ramp`).
#[derive(Debug, Args)]
struct OutputArgs {
    /// Write the result as JSON (summary, counters and the encoded histogram).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the HdrHistogram percentile distribution (µs), for the HdrHistogram plotter.
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
    /// Write an SVG plot: latency by percentile, and throughput over time.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// No live progress line (it is shown only on a terminal anyway).
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct SendArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Stop after this many messages (in total, after warm-up).
    #[arg(long, value_name = "M", conflicts_with = "duration")]
    count: Option<u64>,
    /// Stop after this long (after warm-up). Default: 10s unless --count.
    #[arg(long, value_parser = duration_arg, value_name = "D")]
    duration: Option<Duration>,
    /// Send for this long first without measuring.
    #[arg(long, default_value = "0s", value_parser = duration_arg, value_name = "D")]
    warmup: Duration,
    /// Open loop: this many messages per second in total, latency from the intended send
    /// time. Without it: closed loop, the next message on each ACK.
    #[arg(long, value_name = "MSGS_PER_S")]
    rate: Option<f64>,
    /// How open-loop sends are spaced.
    #[arg(long, value_enum, default_value_t = ArrivalArg::Uniform, requires = "rate")]
    arrival: ArrivalArg,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct RampArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// First rate, messages per second.
    #[arg(long, value_name = "MSGS_PER_S")]
    start: f64,
    /// Added to the rate at each step.
    #[arg(long, value_name = "MSGS_PER_S")]
    step: f64,
    /// Stop stepping at this rate even if the targets still hold.
    #[arg(long, value_name = "MSGS_PER_S")]
    max_rate: Option<f64>,
    /// Length of each step (measured; each step also warms up for --warmup).
    #[arg(long, default_value = "10s", value_parser = duration_arg, value_name = "D")]
    step_duration: Duration,
    /// Warm-up before each step's measurement.
    #[arg(long, default_value = "1s", value_parser = duration_arg, value_name = "D")]
    warmup: Duration,
    /// A step passes while its p99 ACK latency stays at or under this.
    #[arg(long, value_parser = duration_arg, value_name = "D")]
    p99_target: Duration,
    /// A step fails when more than this share of its messages got errors (0..1).
    #[arg(long, default_value_t = 0.001, value_name = "P")]
    max_error_rate: f64,
    /// A step fails when it achieves less than this share of its rate (0..1).
    #[arg(long, default_value_t = 0.95, value_name = "P")]
    min_achieved: f64,
    /// How open-loop sends are spaced.
    #[arg(long, value_enum, default_value_t = ArrivalArg::Uniform)]
    arrival: ArrivalArg,
    /// Write every step and the result as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// `send --json` results to add up.
    #[arg(required = true, value_name = "FILE.json")]
    inputs: Vec<PathBuf>,
    /// Where to write the merged result.
    #[arg(short, long, value_name = "OUT.json")]
    output: PathBuf,
    /// Also write the merged HdrHistogram percentile distribution.
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
    /// Also write an SVG plot of the merged result.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// Flags of `hold`.
#[derive(Debug, Args)]
struct HoldArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Let go after holding this long (default: until SIGINT/SIGTERM).
    #[arg(long, value_parser = duration_arg, value_name = "D")]
    duration: Option<Duration>,
    /// Connections being opened (TCP connect and TLS handshake) at once, over all threads.
    #[arg(long, default_value_t = 64, value_name = "N")]
    concurrent_opens: usize,
}

#[derive(Debug, Args)]
struct SinkArgs {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:2575", value_name = "ADDR")]
    listen: SocketAddr,
    /// Server certificate chain (PEM): listen with TLS. With --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM bundle (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Threads, each accepting on its own SO_REUSEPORT socket.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// Stop after this long (otherwise at SIGINT/SIGTERM).
    #[arg(long, value_parser = duration_arg, value_name = "D")]
    duration: Option<Duration>,
    /// Wait this long before each ACK.
    #[arg(long, default_value = "0s", value_parser = duration_arg, value_name = "D")]
    ack_delay: Duration,
    /// Plus a random extra wait of up to this.
    #[arg(long, default_value = "0s", value_parser = duration_arg, value_name = "D")]
    ack_jitter: Duration,
    /// Share of messages (0..1) answered with --nak-code instead of AA (CA).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    nak_rate: f64,
    /// The negative answer: AE (CE) or AR (CR).
    #[arg(long, value_enum, default_value_t = NakArg::Ae)]
    nak_code: NakArg,
    /// Share of messages that get no ACK at all.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    drop_ack_rate: f64,
    /// Share of ACKs sent with a wrong MSA-2.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    wrong_msa2_rate: f64,
    /// Close each connection after N messages.
    #[arg(long, value_name = "N")]
    close_after: Option<u64>,
    /// Close each connection after its first message (like servers that take one message
    /// per connection).
    #[arg(long)]
    one_per_connection: bool,
    /// Stall: hold every ACK due from this long after start…
    #[arg(long, value_parser = duration_arg, value_name = "D", requires = "stall_for")]
    stall_after: Option<Duration>,
    /// …for this long.
    #[arg(long, value_parser = duration_arg, value_name = "D", requires = "stall_after")]
    stall_for: Option<Duration>,
    /// On exit, write every MSH-10 received, one per line, in arrival order (per thread).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Write every message received to this folder, one file each.
    #[arg(long, value_name = "DIR")]
    record_payloads: Option<PathBuf>,
    /// Largest message accepted; a larger one closes the connection.
    #[arg(long, default_value = "16MiB", value_parser = size_arg, value_name = "BYTES")]
    max_frame_size: usize,
    /// Seed of the fault dice.
    #[arg(long, default_value_t = 1, value_name = "S")]
    seed: u64,
    /// Close a connection that sends nothing for this long
    #[arg(long, default_value = "10m", value_parser = duration_arg, value_name = "D")]
    idle_timeout: Duration,
    /// I/O driver.
    #[arg(long, value_enum, default_value_t = DriverArg::Auto)]
    driver: DriverArg,
    #[command(flatten)]
    framing: FramingArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Template {
    Adt,
    Oru,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ArrivalArg {
    Uniform,
    Poisson,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum NakArg {
    Ae,
    Ar,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DriverArg {
    Auto,
    IoUring,
    Epoll,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn size_arg(text: &str) -> Result<usize, String> {
    parse_size(text).map_err(|e| e.to_string())
}

fn hex_byte_arg(text: &str) -> Result<u8, String> {
    netio::units::parse_hex_byte(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = netio::logging::init(cli.log.as_deref(), "warn", LogFormat::Text) {
        eprintln!("mllp-loadgen: error: {e}");
        return ExitCode::from(2);
    }
    // Many connections need many descriptors: lift the soft limit to the hard one.
    if let Err(e) = netio::runtime::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot raise the open-file limit to its hard limit");
    }
    let outcome = match cli.command {
        Command::Send(args) => cmd_send(args),
        Command::Sink(args) => cmd_sink(args),
        Command::Ramp(args) => cmd_ramp(args),
        Command::Merge(args) => cmd_merge(args),
        Command::Hold(args) => cmd_hold(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mllp-loadgen: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C / SIGTERM set the returned flag (a second one exits at once).
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

fn driver(arg: DriverArg) -> anyhow::Result<Driver> {
    let wanted = match arg {
        DriverArg::Auto => Driver::Auto,
        DriverArg::IoUring => Driver::IoUring,
        DriverArg::Epoll => Driver::Epoll,
    };
    Ok(netio::runtime::resolve_driver(wanted)?)
}

/// Where to connect, resolved: the address, TLS, and the thread count.
struct Endpoint {
    target: SocketAddr,
    tls: Option<ClientTls>,
    threads: usize,
    driver: Driver,
}

/// Resolves the target and builds the TLS client from the shared connection flags.
fn endpoint(args: &ConnectArgs) -> anyhow::Result<Endpoint> {
    let target = args
        .target
        .to_socket_addrs()
        .with_context(|| format!("--target {}: cannot resolve", args.target))?
        .next()
        .with_context(|| format!("--target {}: no address", args.target))?;
    let tls = if args.tls || args.ca.is_some() || args.insecure || args.cert.is_some() {
        Some(client_tls(args)?)
    } else {
        None
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    Ok(Endpoint {
        target,
        tls,
        threads,
        driver: driver(args.driver)?,
    })
}

/// Builds a `send` configuration (without loop mode and stop) from the shared flags.
fn base_config(args: &TargetArgs) -> anyhow::Result<SendConfig> {
    let endpoint = endpoint(&args.connect)?;
    let messages = load_messages(args)?;
    Ok(SendConfig {
        target: endpoint.target,
        tls: endpoint.tls,
        connections: args.connect.connections,
        threads: endpoint.threads,
        pipeline: args.pipeline,
        mode: Loop::Closed,
        stop: Stop::Duration(Duration::from_secs(10)),
        warmup: Duration::ZERO,
        messages: Arc::new(messages),
        ack_timeout: args.ack_timeout,
        connect_timeout: args.connect.connect_timeout,
        reconnect_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
        run_tag: RunTag::random(),
        driver: endpoint.driver,
        framing: args.framing.framing()?,
    })
}

fn client_tls(args: &ConnectArgs) -> anyhow::Result<ClientTls> {
    let client_cert = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        _ => None,
    };
    let config = if args.insecure {
        eprintln!(
            "mllp-loadgen: WARNING: --insecure: the target's certificate is NOT checked; \
             anyone could be answering. Use only against your own test servers."
        );
        tls::insecure_client_config(client_cert.as_ref())?
    } else {
        if args.ca.is_none() {
            bail!(
                "--tls needs --ca FILE to check the target's certificate (or --insecure for a self-signed test server)"
            );
        }
        tls::client_config(&ClientTlsSettings {
            ca: args.ca.clone(),
            pinned: Vec::new(),
            client_cert,
        })?
    };
    let host = match &args.sni {
        Some(name) => name.clone(),
        None => host_of(&args.target).to_owned(),
    };
    let server_name = tls::server_name(&host)?;
    Ok(ClientTls {
        config,
        server_name,
    })
}

/// The host part of HOST:PORT (brackets of an IPv6 literal removed by `server_name`).
fn host_of(target: &str) -> &str {
    target.rsplit_once(':').map_or(target, |(host, _)| host)
}

fn load_messages(args: &TargetArgs) -> anyhow::Result<Vec<Message>> {
    match &args.corpus {
        Some(path) => {
            let options = CorpusOptions {
                normalize_line_endings: args.normalize_eol,
            };
            let messages = if path.is_dir() {
                source::load_corpus(path, options)?
            } else {
                source::load_file(path, options)?
            };
            if messages.is_empty() {
                bail!("{}: no HL7 messages found", path.display());
            }
            Ok(messages)
        }
        None => {
            let kind = match args.template {
                Template::Adt => TemplateKind::Adt,
                Template::Oru => TemplateKind::Oru,
            };
            Ok(vec![source::template(kind, args.size, args.seed)?])
        }
    }
}

fn cmd_send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let mut config = base_config(&args.target)?;
    config.warmup = args.warmup;
    config.stop = match (args.count, args.duration) {
        (Some(n), _) => Stop::Count(n),
        (None, Some(d)) => Stop::Duration(d),
        (None, None) => Stop::Duration(Duration::from_secs(10)),
    };
    if let Some(rate) = args.rate {
        config.mode = Loop::Open {
            rate,
            arrival: arrival(args.arrival),
        };
    }
    send::probe(&config)?;
    let stop = stop_on_signals()?;
    let mut stats = run_with_progress(config, &stop, args.output.quiet)?;
    stats.process_cpu_s = loadgen::stats::process_cpu_seconds();
    print!("{}", report::summary_table(&stats));
    write_outputs(&stats, &args.output, "mllp-loadgen send")?;
    if stats.sent > 0 && stats.acked == 0 {
        eprintln!(
            "mllp-loadgen: no message was acknowledged: is the target an MLLP listener, and \
             does it answer with ACKs (MSA segment, MSA-2 = MSH-10)?"
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn arrival(arg: ArrivalArg) -> Arrival {
    match arg {
        ArrivalArg::Uniform => Arrival::Uniform,
        ArrivalArg::Poisson => Arrival::Poisson,
    }
}

/// Runs `send` with a live line on stderr when it is a terminal.
fn run_with_progress(
    config: SendConfig,
    stop: &Arc<AtomicBool>,
    quiet: bool,
) -> anyhow::Result<RunStats> {
    let live = !quiet && std::io::stderr().is_terminal();
    let stats = send::run(config, stop, |p: Progress<'_>| {
        if !live {
            return;
        }
        let line = if p.warming_up {
            "warming up…".to_owned()
        } else {
            format!(
                "{:>4}s  {:>9} msg/s  p99 {:>10.1} µs  acked {:>10}  errors {}",
                p.elapsed.as_secs(),
                p.last_second_acked,
                p.so_far.latency_us(0.99),
                p.so_far.acked,
                p.so_far.error_total()
            )
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    })?;
    if live {
        eprintln!();
    }
    Ok(stats)
}

fn write_outputs(stats: &RunStats, output: &OutputArgs, title: &str) -> anyhow::Result<()> {
    if let Some(path) = &output.json {
        std::fs::write(path, report::to_json(stats))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &output.hgrm {
        std::fs::write(path, report::hgrm(stats))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &output.plot {
        std::fs::write(path, report::svg_plot(stats, title))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn cmd_merge(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let mut runs = Vec::with_capacity(args.inputs.len());
    for path in &args.inputs {
        let mut bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let run = report::from_json(&mut bytes).with_context(|| format!("{}", path.display()))?;
        runs.push(run);
    }
    let merged = report::merge(&runs);
    print!("{}", report::summary_table(&merged));
    let output = OutputArgs {
        json: Some(args.output),
        hgrm: args.hgrm,
        plot: args.plot,
        quiet: true,
    };
    write_outputs(&merged, &output, "mllp-loadgen merge")?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_ramp(args: RampArgs) -> anyhow::Result<ExitCode> {
    if !(args.start > 0.0 && args.step > 0.0) {
        bail!("--start and --step must be positive rates");
    }
    let base = base_config(&args.target)?;
    send::probe(&base)?;
    let stop = stop_on_signals()?;
    let plan = RampPlan {
        start: args.start,
        step: args.step,
        max_rate: args.max_rate,
        warmup: args.warmup,
        step_duration: args.step_duration,
        p99_target: args.p99_target,
        max_error_rate: args.max_error_rate,
        min_achieved: args.min_achieved,
        arrival: arrival(args.arrival),
    };
    println!(
        "{:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  verdict",
        "rate", "achieved", "p50 µs", "p99 µs", "p99.9 µs", "errors"
    );
    let outcome = ramp::run(&base, plan, &stop, |step| {
        let s = &step.stats;
        println!(
            "{:>10.0}  {:>10.0}  {:>10.1}  {:>10.1}  {:>10.1}  {:>8}  {}",
            step.rate,
            s.throughput_msgs_per_s(),
            s.latency_us(0.5),
            s.latency_us(0.99),
            s.latency_us(0.999),
            s.error_total(),
            step.failure.map_or("ok", StepFailure::label)
        );
    })?;
    match outcome.sustainable_rate {
        Some(rate) => println!(
            "highest sustainable rate: {rate:.0} msg/s (p99 <= {}, errors <= {} %)",
            format_duration(args.p99_target),
            args.max_error_rate * 100.0
        ),
        None => println!(
            "no sustainable rate: the first step ({:.0} msg/s) already failed",
            args.start
        ),
    }
    if let Some(path) = &args.json {
        std::fs::write(path, outcome.to_json())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_hold(args: HoldArgs) -> anyhow::Result<ExitCode> {
    let endpoint = endpoint(&args.connect)?;
    let config = HoldConfig {
        target: endpoint.target,
        tls: endpoint.tls,
        connections: args.connect.connections,
        threads: endpoint.threads,
        connect_timeout: args.connect.connect_timeout,
        concurrent_opens: args.concurrent_opens,
        hold_for: args.duration,
        driver: endpoint.driver,
    };
    let stop = stop_on_signals()?;
    let report = hold::run(&config, &stop, |opened| {
        if !opened.all_open() {
            return false;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "holding {} connections", opened.opened);
        let _ = out.flush();
        true
    })?;
    let opened = &report.opened;
    if opened.failed > 0 || opened.closed_at_once > 0 {
        let lost = opened.failed + opened.closed_at_once;
        let closed = if opened.opened > opened.closed_at_once {
            format!(
                " (the {} open were closed)",
                opened.opened - opened.closed_at_once
            )
        } else {
            String::new()
        };
        bail!(
            "{lost} of {} connections to {} could not be opened{closed}; first error: {}",
            opened.requested,
            config.target,
            opened.first_error.as_deref().unwrap_or("unknown")
        );
    }
    if !report.held {
        bail!(
            "interrupted while opening: {} of {} connections were open (now closed)",
            opened.opened,
            opened.requested
        );
    }
    // Written, not println!: whoever reads stdout may be gone by now (a closed pipe is not
    // worth a panic).
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "closed by peer: {}", report.closed_by_peer);
    let _ = out.flush();
    drop(out);
    if report.closed_by_peer > 0 {
        eprintln!(
            "mllp-loadgen: the target closed {} of the {} held connections (an idle timeout?)",
            report.closed_by_peer, opened.opened
        );
        return Ok(ExitCode::from(4));
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_sink(args: SinkArgs) -> anyhow::Result<ExitCode> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(
            &ServerTlsSettings {
                cert_chain: cert.clone(),
                key: key.clone(),
                client_ca: args.client_ca.clone(),
                client_thumbprints: Vec::new(),
            },
            Arc::new(TlsRejections::new()),
        )?),
        _ => None,
    };
    for (name, p) in [
        ("--nak-rate", args.nak_rate),
        ("--drop-ack-rate", args.drop_ack_rate),
        ("--wrong-msa2-rate", args.wrong_msa2_rate),
    ] {
        if !(0.0..=1.0).contains(&p) {
            bail!("{name} must be between 0 and 1 (a share of messages), not {p}");
        }
    }
    let faults = Faults {
        ack_delay: args.ack_delay,
        ack_jitter: args.ack_jitter,
        nak_rate: args.nak_rate,
        nak_code: Some(match args.nak_code {
            NakArg::Ae => NakCode::Error,
            NakArg::Ar => NakCode::Reject,
        }),
        drop_ack_rate: args.drop_ack_rate,
        wrong_msa2_rate: args.wrong_msa2_rate,
        close_after: args.close_after,
        one_per_connection: args.one_per_connection,
        stall: args.stall_after.zip(args.stall_for),
    };
    let config = SinkConfig {
        listen: args.listen,
        tls,
        threads: args.threads,
        faults,
        record_payloads: args.record_payloads.clone(),
        max_frame_len: args.max_frame_size,
        framing: args.framing.framing()?,
        seed: args.seed,
        driver: driver(args.driver)?,
        idle_timeout: args.idle_timeout,
    };
    let handle = sink::start(config)?;
    println!(
        "mllp-loadgen sink listening on {} ({})",
        handle.local_addr(),
        if args.tls_cert.is_some() {
            "TLS"
        } else {
            "plain"
        }
    );
    let _ = std::io::stdout().flush();
    let stop = stop_on_signals()?;
    let started = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) && args.duration.is_none_or(|d| started.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = handle.stop();
    println!(
        "received {}  unique {}  duplicates {}  acks {}  naks {}  dropped acks {}  wrong MSA-2 {}  unreadable {}  connections {}",
        report.received,
        report.unique,
        report.duplicates,
        report.acks_sent,
        report.naks,
        report.dropped_acks,
        report.wrong_msa2,
        report.unreadable,
        report.connections
    );
    if let Some(path) = &args.record {
        std::fs::write(path, &report.ids)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
