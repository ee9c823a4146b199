//! The `mover` command line. Each subcommand is a thin layer over the
//! library: parse, set up TLS, run, report, and exit with a code that says
//! whether retrying may help.

use clap::{Args, Parser, Subcommand};
use mover::failure::{ExitCode, Failure};
use mover::progress::{self, Counters, Reporter};
use mover::receive::policy::Policy;
use mover::receive::volumes::Volumes;
use mover::receive::ReceiveConfig;
use mover::send::itemize::Itemize;
use mover::send::{SendConfig, SendReport};
use mover::wire::message::{SyncOptions, XattrPolicy};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const EXIT_CODES: &str = "\
Exit codes:
  0   success: everything transferred and verified
  1   failed, retrying will not help (certificates, bad input, disk full)
  2   usage error
  23  finished, but some source entries could not be read (see stderr)
  24  finished, but some source files vanished or changed while being read
  75  failed, retrying may help (network, timeouts, volume busy)";

/// Native TLS delta-sync data mover for Kubernetes volume migration.
#[derive(Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve named volumes to senders over mutually authenticated TLS.
    Receive(ReceiveArgs),
    /// Sync a local directory into one named volume of a receiver.
    Send(SendArgs),
    /// Sync SRC into DST locally, through a real TLS connection on loopback.
    Sync(SyncArgs),
    /// Write a CA, a server certificate and client certificates.
    Certs(CertsArgs),
}

#[derive(Args)]
struct ReceiveArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: String,
    /// A volume to serve, as NAME=PATH (repeatable).
    #[arg(long = "volume", value_name = "NAME=PATH", required = true, value_parser = parse_volume)]
    volumes: Vec<(String, PathBuf)>,
    /// Server certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// CA certificate that client certificates must chain to (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// Certificate revocation list(s) from the CA (PEM); revoked clients are refused.
    #[arg(long)]
    crl: Option<PathBuf>,
    /// Exit (0) once every volume has completed one sync.
    #[arg(long)]
    exit_when_done: bool,
    /// Seconds a client has to complete the TLS handshake.
    #[arg(long, default_value_t = 10)]
    handshake_timeout: u64,
    /// Seconds of silence after which a session is dropped.
    #[arg(long, default_value_t = 120)]
    idle_timeout: u64,
    /// Seconds of silence before sending a keepalive [default: a quarter of
    /// the idle timeout, at most 10].
    #[arg(long)]
    keepalive: Option<f64>,
    /// Connections served at once; more are closed immediately.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Every volume is a block volume for block copies (`send --block`):
    /// a block device, or a disk image (a regular file, created by the
    /// first copy if missing). Without it a volume that is a block device
    /// is one all the same, and the others are directories.
    #[arg(long)]
    block: bool,
    #[command(flatten)]
    receiving: ReceivingArgs,
}

/// How the receiving end writes, and what it lets a sender create. By
/// default a sync is exact (setuid/setgid bits, file capabilities and, as
/// root, device nodes arrive as the source has them) and every file is
/// replaced atomically.
#[derive(Args, Default)]
struct ReceivingArgs {
    /// Clear setuid and setgid bits on files and drop file capabilities
    /// (`security.capability`), with a warning: no certificate holder can
    /// plant a privileged program.
    #[arg(long)]
    no_setuid: bool,
    /// Create no character or block device nodes (with a warning).
    #[arg(long)]
    no_devices: bool,
    /// Write only the changed blocks of a changed file (1 MiB or more) into
    /// the existing file instead of a new copy renamed over it: for
    /// destinations nobody uses until the migration ends. A reader may see
    /// a file half updated; an interrupted one is journaled in the work
    /// area and redone by the next sync, never taken as done.
    #[arg(long)]
    inplace: bool,
    /// Keep the segment hashes of large files (1 MiB or more) this receiver
    /// writes or hashes, so that a resync reads only the segments that
    /// changed instead of the whole copy. They live in the volume's work
    /// area (`.mover-work`, or the first free `.mover-work.N`), which a
    /// successful sync then leaves holding only them; a sync without this
    /// flag still uses them, then removes the work area. An entry counts
    /// only while its file's device, inode, size, mtime and ctime are
    /// exactly as the receiver left them.
    #[arg(long)]
    keep_hash_cache: bool,
    /// Bound on the hash cache's total size, in MiB; past it the least
    /// recently used entries go.
    #[arg(long, value_name = "MIB", default_value_t = mover::dest::hash_cache::DEFAULT_LIMIT >> 20)]
    hash_cache_mib: u64,
    /// Files each session applies at once: small files (1 MiB or less)
    /// arrive whole in memory, and N threads create, write and rename them
    /// while the session goes on, and look at the names of a directory
    /// ahead of a resync, so that on network storage (NFS, CephFS, SMB,
    /// FUSE) their round trips to the server overlap. By default 16 on
    /// network storage, 1 on local storage (every file in the session's
    /// own thread).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=mover::receive::MAX_APPLIERS as i64)
    )]
    appliers: Option<u16>,
}

impl ReceivingArgs {
    fn policy(&self) -> Policy {
        Policy {
            no_setuid: self.no_setuid,
            no_devices: self.no_devices,
        }
    }
}

#[derive(Args)]
struct TransferArgs {
    /// Keep destination files that the source does not have.
    #[arg(long)]
    no_delete: bool,
    /// Which extended attributes to copy. In those namespaces the
    /// destination is made equal to the source (attributes the source lacks
    /// are removed); attributes in the others are left as they are.
    /// `security.*` (SELinux labels, capabilities) and `trusted.*` belong to
    /// the destination unless `all` is given.
    #[arg(long, value_enum, default_value = "user")]
    xattrs: XattrPolicy,
    /// Compare files whose size and mtime match by content too: both ends
    /// hash their copies at once, only differing segments travel, and an
    /// identical file is left as it is.
    #[arg(long)]
    checksum: bool,
    /// List what a sync would change, one line per change on stdout (JSON
    /// `change` events with --progress json); write nothing, send no file
    /// data.
    #[arg(long, conflicts_with = "checksum")]
    dry_run: bool,
    /// Copy a block device (or a disk image, a regular file) into a block
    /// volume byte for byte: only differing segments travel, zeros are
    /// written (or discarded) only where the destination is not zeros
    /// already, and everything is written in place and verified.
    #[arg(long, conflicts_with_all = ["dry_run", "checksum"])]
    block: bool,
    /// Carry the volume's data over N connections at once (2 to 8) beside
    /// the first, which keeps the conversation: for long-distance links,
    /// where one TCP connection's window limits the rate (window ÷ round
    /// trip), and to spread TLS over cores. A receiver without this
    /// feature gets one connection. With --bwlimit the limit is shared.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=mover::wire::stripes::MAX_STREAMS as i64))]
    streams: u32,
    /// When to zstd-compress file data: `auto` while the connection is the
    /// bottleneck (a slow link), never for data that does not shrink.
    #[arg(long, value_enum, default_value = "auto")]
    compress: mover::compress::Compress,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    progress: progress::Mode,
    /// Seconds between progress updates.
    #[arg(long, default_value_t = 1.0)]
    progress_interval: f64,
    /// Seconds of silence from the peer after which the sync fails.
    #[arg(long, default_value_t = 120)]
    idle_timeout: u64,
    /// Seconds of silence before sending a keepalive [default: a quarter of
    /// the idle timeout, at most 10].
    #[arg(long)]
    keepalive: Option<f64>,
}

#[derive(Args)]
struct SendArgs {
    /// Local directory to send (with --block: a block device or disk image).
    source: PathBuf,
    /// Receiver address, HOST:PORT.
    #[arg(long)]
    connect: String,
    /// Name of the receiver's volume to write.
    #[arg(long)]
    volume: String,
    /// TLS server name (SNI) when it differs from HOST, e.g. the route host.
    #[arg(long)]
    server_name: Option<String>,
    /// Reach the receiver through this HTTP proxy, as
    /// http://[USER:PASSWORD@]HOST:PORT (percent-escape `@` and `:` in
    /// them): a `CONNECT` tunnel carries the TLS connection, whose server
    /// name stays the receiver's. HTTPS_PROXY and NO_PROXY are not used.
    // Parsed in `send`, not by clap, whose message would repeat the URL
    // with its password.
    #[arg(long, env = "MOVER_PROXY", hide_env_values = true, value_name = "URL")]
    proxy: Option<String>,
    /// Client certificate naming the volume (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Client private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// CA certificate the receiver's certificate must chain to (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// Send at most this many bytes per second on average (encrypted
    /// bytes on the wire), e.g. `50M`; K, M and G are powers of 1024.
    #[arg(long, value_parser = mover::net::parse_rate, value_name = "RATE")]
    bwlimit: Option<u64>,
    /// Attempts after the first when a failure may be temporary (network,
    /// timeouts, busy volume); never for failures retrying cannot fix.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Seconds before the first retry; doubles each time, up to 30.
    #[arg(long, default_value_t = 1.0)]
    retry_delay: f64,
    #[command(flatten)]
    transfer: TransferArgs,
}

#[derive(Args)]
struct SyncArgs {
    /// Source directory (with --block: a block device or disk image).
    source: PathBuf,
    /// Destination directory, created if missing (with --block: a block
    /// device at least the source's size, or a disk image, created if
    /// missing and made the source's size).
    dest: PathBuf,
    #[command(flatten)]
    transfer: TransferArgs,
    #[command(flatten)]
    receiving: ReceivingArgs,
}

#[derive(Args)]
struct CertsArgs {
    /// Directory to write into (created if missing). An existing ca.crt and
    /// ca.key there are reused, so more clients can be issued later.
    #[arg(long)]
    out: PathBuf,
    /// Name the server certificate is valid for: DNS name or IP (repeatable),
    /// e.g. the route host.
    #[arg(long = "server-san", value_name = "NAME")]
    server_sans: Vec<String>,
    /// A client certificate to issue, as NAME=VOLUME[,VOLUME...] (repeatable).
    #[arg(long = "client", value_name = "NAME=VOLUMES", value_parser = parse_client)]
    clients: Vec<(String, Vec<String>)>,
    /// Days the certificates are valid.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Overwrite existing certificate files.
    #[arg(long)]
    force: bool,
}

fn parse_volume(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or("expected NAME=PATH")?;
    mover::certs::validate_volume_name(name)?;
    Ok((name.to_string(), PathBuf::from(path)))
}

fn parse_client(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, volumes) = s
        .split_once('=')
        .ok_or("expected NAME=VOLUME[,VOLUME...]")?;
    let volumes: Vec<String> = volumes.split(',').map(str::to_string).collect();
    for v in &volumes {
        mover::certs::validate_volume_name(v)?;
    }
    Ok((name.to_string(), volumes))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Receive(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MOVER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    match mover::limits::raise_nofile() {
        Ok(limit) => tracing::info!("may open {limit} files at once"),
        Err(e) => tracing::warn!("{e}"),
    }
    let code = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(cli.command)),
        Err(e) => {
            eprintln!("mover: cannot start the async runtime: {e}");
            ExitCode::Permanent
        }
    };
    std::process::ExitCode::from(code as u8)
}

async fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Receive(args) => receive(args).await.map(|()| ExitCode::Success),
        Command::Send(args) => send(args).await,
        Command::Sync(args) => sync(args).await,
        Command::Certs(args) => certs(args).map(|()| ExitCode::Success),
    };
    result.unwrap_or_else(|failure| {
        eprintln!("mover: {failure}");
        ExitCode::of_failure(&failure)
    })
}

fn permanent(e: impl std::fmt::Display) -> Failure {
    Failure::permanent(e.to_string())
}

async fn receive(args: ReceiveArgs) -> Result<(), Failure> {
    let identity = mover::tls::Identity::from_files(&args.cert, &args.key).map_err(permanent)?;
    let roots = mover::tls::load_ca_file(&args.ca).map_err(permanent)?;
    let crls = match &args.crl {
        Some(path) => mover::tls::load_crls_file(path).map_err(permanent)?,
        None => Vec::new(),
    };
    let tls = mover::tls::server_config(&identity, roots, crls).map_err(permanent)?;
    let volumes = Volumes::new(args.volumes, args.block).map_err(Failure::permanent)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Failure::permanent(format!("listening on {}: {e}", args.listen)))?;
    let local = listener.local_addr().map_err(permanent)?;
    tracing::info!(
        "listening on {local}, serving volumes: {}",
        volumes.names().collect::<Vec<_>>().join(", ")
    );
    let server = mover::server::Server {
        tls,
        volumes,
        exit_when_done: args.exit_when_done,
        handshake_timeout: Duration::from_secs(args.handshake_timeout),
        max_connections: args.max_connections,
        session: session_config(args.idle_timeout, args.keepalive, &args.receiving),
    };
    mover::server::serve(listener, Arc::new(server)).await
}

fn session_config(
    idle_timeout: u64,
    keepalive: Option<f64>,
    receiving: &ReceivingArgs,
) -> ReceiveConfig {
    let idle = Duration::from_secs(idle_timeout.max(1));
    // By default well inside our own idle timeout and inside the 30 s that
    // OpenShift routes (HAProxy) allow an idle passthrough connection.
    let keepalive = match keepalive {
        Some(secs) => Duration::from_secs_f64(secs.max(0.05)),
        None => (idle / 4).clamp(Duration::from_millis(250), MAX_KEEPALIVE),
    };
    ReceiveConfig {
        idle_timeout: idle,
        keepalive,
        policy: receiving.policy(),
        inplace: receiving.inplace,
        appliers: receiving.appliers.map(usize::from),
        hash_cache: mover::dest::hash_cache::CacheConfig {
            keep: receiving.keep_hash_cache,
            limit: receiving.hash_cache_mib.saturating_mul(1 << 20),
        },
    }
}

fn send_config(source: PathBuf, volume: String, args: &TransferArgs) -> SendConfig {
    let session = session_config(args.idle_timeout, args.keepalive, &ReceivingArgs::default());
    SendConfig {
        source,
        volume,
        options: SyncOptions {
            delete: !args.no_delete,
            xattrs: args.xattrs,
            checksum: args.checksum,
            dry_run: args.dry_run,
        },
        idle_timeout: session.idle_timeout,
        keepalive: session.keepalive,
        compress: args.compress,
        itemize: match args.progress {
            progress::Mode::Json => Itemize::Json,
            _ => Itemize::Text,
        },
        block: args.block,
        streams: args.streams,
    }
}

async fn send(args: SendArgs) -> Result<ExitCode, Failure> {
    let identity = mover::tls::Identity::from_files(&args.cert, &args.key).map_err(permanent)?;
    let roots = mover::tls::load_ca_file(&args.ca).map_err(permanent)?;
    let tls = mover::tls::client_config(&identity, roots).map_err(permanent)?;
    let host = args
        .connect
        .rsplit_once(':')
        .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
        .ok_or_else(|| {
            Failure::permanent(format!("--connect {}: expected HOST:PORT", args.connect))
        })?;
    let server_name = args.server_name.clone().unwrap_or_else(|| host.to_string());
    let proxy = match args.proxy.as_deref().map(str::parse).transpose() {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("mover: --proxy: {e}");
            return Ok(ExitCode::Usage);
        }
    };
    check_source(&args.source, &args.transfer)?;
    let config = send_config(args.source, args.volume, &args.transfer);
    let mut delay = Duration::from_secs_f64(args.retry_delay.max(0.0));
    let mut attempt = 1;
    loop {
        let counters = Arc::new(Counters::default());
        let reporter = start_reporter(&args.transfer, &config.volume, attempt, &counters);
        let report = async {
            let route = mover::net::Route {
                proxy: proxy.as_ref(),
                addr: &args.connect,
                server_name: &server_name,
                bwlimit: args.bwlimit,
            };
            let stream = mover::net::connect_through(
                &route,
                tls.clone(),
                counters.clone(),
                Duration::from_secs(15),
            )
            .await?;
            let dial = lanes(&route, config.streams, &tls, &counters);
            mover::send::run(stream, Some(dial), config.clone(), counters).await
        }
        .await;
        reporter.finish();
        match report {
            Err(failure) if failure.retryable && attempt <= args.retries => {
                // Files the receiver already put in place are skipped next
                // time, and a file cut off midway resumes from what arrived.
                eprintln!(
                    "mover: attempt {attempt} failed: {failure}; retrying in {:.1}s",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                attempt += 1;
            }
            report => return Ok(finish(report?, attempt, args.transfer.progress)),
        }
    }
}

/// Opens a session's data connections by `route`, each paced at its share
/// of the bandwidth limit.
fn lanes(
    route: &mover::net::Route<'_>,
    streams: u32,
    tls: &Arc<rustls::ClientConfig>,
    counters: &Arc<Counters>,
) -> mover::net::Dial {
    let proxy = route.proxy.cloned();
    let (addr, server_name) = (route.addr.to_string(), route.server_name.to_string());
    let bwlimit = route.bwlimit.map(|rate| (rate / u64::from(streams)).max(1));
    let (tls, counters) = (tls.clone(), counters.clone());
    mover::net::Dial::new(move || {
        let (proxy, addr, server_name) = (proxy.clone(), addr.clone(), server_name.clone());
        let (tls, counters) = (tls.clone(), counters.clone());
        async move {
            let route = mover::net::Route {
                proxy: proxy.as_ref(),
                addr: &addr,
                server_name: &server_name,
                bwlimit,
            };
            mover::net::connect_through(&route, tls, counters, Duration::from_secs(15)).await
        }
    })
}

/// Longest silence before a default keepalive, whatever the idle timeout.
const MAX_KEEPALIVE: Duration = Duration::from_secs(10);

/// Longest wait between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Fails unless `source` can be sent: a directory, or with --block a block
/// device or disk image.
fn check_source(source: &std::path::Path, args: &TransferArgs) -> Result<(), Failure> {
    if args.block {
        mover::block::check_source(source)
    } else {
        mover::send::check_source(source)
    }
}

async fn sync(args: SyncArgs) -> Result<ExitCode, Failure> {
    check_source(&args.source, &args.transfer)?;
    if args.transfer.dry_run && !args.dest.is_dir() {
        return Err(Failure::permanent(format!(
            "destination {} is not a directory (a dry run creates nothing)",
            args.dest.display()
        )));
    }
    if !args.dest.exists() && !args.transfer.block {
        std::fs::create_dir_all(&args.dest)
            .map_err(|e| Failure::permanent(format!("creating {}: {e}", args.dest.display())))?;
    }
    let config = send_config(args.source.clone(), String::new(), &args.transfer);
    let counters = Arc::new(Counters::default());
    let reporter = start_reporter(&args.transfer, "local", 1, &counters);
    let session = session_config(
        args.transfer.idle_timeout,
        args.transfer.keepalive,
        &args.receiving,
    );
    let report = mover::sync::run(args.source, args.dest, config, session, counters).await;
    reporter.finish();
    Ok(finish(report?, 1, args.transfer.progress))
}

fn start_reporter(
    args: &TransferArgs,
    volume: &str,
    attempt: u32,
    counters: &Arc<Counters>,
) -> Reporter {
    let interval = Duration::from_secs_f64(args.progress_interval.max(0.05));
    Reporter::start(
        args.progress,
        volume.to_string(),
        attempt,
        counters.clone(),
        interval,
    )
}

/// Prints the summary and picks the exit code for a finished sync.
fn finish(report: SendReport, attempt: u32, mode: progress::Mode) -> ExitCode {
    if mode == progress::Mode::Json {
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("event".into(), "summary".into());
            map.insert("attempt".into(), attempt.into());
        }
        println!("{value}");
    } else if report.dry_run {
        eprintln!(
            "{}: dry run, nothing changed: {} entries, {} files would be written ({} bytes), {} deleted",
            report.volume,
            report.counters.files_examined,
            report.files_written,
            report.bytes_written,
            report.files_deleted,
        );
    } else if report.counters.segments_examined > 0 {
        let c = &report.counters;
        eprintln!(
            "{}: {} segments, {} sent ({} bytes literal or delta, {} reused), {} zeroed, {} wire bytes, {:.2}s",
            report.volume,
            c.segments_examined,
            c.segments_sent,
            c.bytes_sent,
            c.bytes_matched,
            c.segments_zeroed,
            c.wire_bytes,
            report.duration_secs
        );
    } else {
        let c = &report.counters;
        eprintln!(
            "{}: {} entries, {} files sent ({} bytes literal, {} reused), {} deleted, {} wire bytes, {:.2}s",
            report.volume,
            c.files_examined,
            c.files_sent,
            c.bytes_sent,
            c.bytes_matched,
            report.files_deleted,
            c.wire_bytes,
            report.duration_secs
        );
    }
    let c = &report.counters;
    if c.errors > 0 {
        eprintln!("mover: {} entries could not be transferred", c.errors);
        ExitCode::Partial
    } else if c.vanished > 0 {
        eprintln!(
            "mover: {} source files vanished or changed while being read",
            c.vanished
        );
        ExitCode::Vanished
    } else {
        ExitCode::Success
    }
}

fn certs(args: CertsArgs) -> Result<(), Failure> {
    let validity = mover::certs::Validity::days(args.days);
    let written = mover::certs::write_bundle(
        &args.out,
        &args.server_sans,
        &args.clients,
        validity,
        args.force,
    )
    .map_err(permanent)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
