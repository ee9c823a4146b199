//! Benchmark harness: `mover` against rsync through two stunnels (the way
//! MTC runs it) and `cp -a` (the local limit), on generated datasets, on
//! tmpfs and on disk. See benches/README.md.

mod compare;
mod cpustat;
mod delay;
mod disk;
mod gen;
mod images;
mod netns;
mod run;
mod slowfs;
mod two_node;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use gen::{Layout, Mutation, Spec};
use netns::{Link, Net};
use run::{Ctx, Outcome};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Peak RSS target for each side of mover in --scale mode.
const RSS_TARGET_KIB: u64 = 128 * 1024;

#[derive(Parser, Clone)]
#[command(
    name = "bench",
    about = "mover vs rsync+stunnel (the MTC way) vs cp -a on generated datasets",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Timed runs of each case on tmpfs (disk is always run once)
    /// [default: 3; 1 with --quick or --scale]
    #[arg(long)]
    runs: Option<usize>,
    /// Tiny datasets (64 MiB + 2,000 files; 5,000 files), one run: a smoke test
    #[arg(long)]
    quick: bool,
    /// Scale mode: 1,000,000 files and one 8 GiB file, mover only by default;
    /// reports mover's peak RSS of each side (target: 128 MiB) and time
    #[arg(long)]
    scale: bool,
    /// Where the tmpfs datasets go (removed at the end unless --keep)
    #[arg(long, default_value = "/dev/shm/mover-bench")]
    tmpfs_dir: PathBuf,
    /// Where the disk datasets go [default: TARGET_DIR/bench-data]
    #[arg(long)]
    disk_dir: Option<PathBuf>,
    /// Storages to run on [default: tmpfs,disk; disk with --scale]
    #[arg(long, value_delimiter = ',')]
    storage: Vec<Storage>,
    /// Datasets to run [default: mixed,small; tree,file with --scale]
    #[arg(long, value_delimiter = ',')]
    cases: Vec<DatasetKind>,
    /// Tools to run [default: mover,rsync,cp; mover with --scale]
    #[arg(long, value_delimiter = ',')]
    tools: Vec<Tool>,
    /// Seed of the generated datasets
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep the generated datasets
    #[arg(long)]
    keep: bool,
    /// Use this mover binary instead of building one with cargo
    #[arg(long)]
    mover: Option<PathBuf>,
    /// Seconds any single sync may take before it is killed
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// Markdown report to write [default: benches/results/latest.md;
    /// latest-quick.md, latest-scale.md for --quick, --scale;
    /// images.md, images-quick.md for --images]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only the image copy benchmark: the orchestrator's registry engine
    /// against skopeo copy between two local registries (--quick also runs
    /// a tiny image case after the volume one)
    #[arg(long)]
    images: bool,
    /// Two-node mode: each side in its own network namespace pinned to its
    /// own CPU, joined by a veth pair (--quick also runs it on the tiny
    /// datasets after the one-box run); report in
    /// benches/results/two-node.md (two-node-quick.md)
    #[arg(long)]
    two_node: bool,
    /// Link rates to run the two-node mode at, one pass each
    #[arg(long, value_delimiter = ',', default_value = "none")]
    link: Vec<Link>,
    /// Round-trip times (ms) to add between the two nodes, with a userspace
    /// delay proxy in front of the receiving side (this kernel has no
    /// netem); one pass per link and RTT, 0 for none [default: 0; 2 with
    /// --quick, so the smoke test covers the proxy]
    #[arg(long, value_delimiter = ',')]
    rtt_ms: Vec<u32>,
    /// With an RTT: at most this many KiB in flight per connection and
    /// direction through the delay proxy, as one TCP connection's window
    /// (each connection then moves at most a window per RTT) [default: no
    /// limit]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    window_kib: Option<u32>,
    /// Data connections per volume of mover send (`--streams N`); several
    /// (`1,4`) run mover once with each, each its own row
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    mover_streams: Vec<u32>,
    /// Parallel appliers of mover receive (`--appliers N`); several
    /// (`1,8`) run mover once with each, each its own row [default: no
    /// flag, mover's own default]
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    mover_appliers: Vec<u32>,
    /// Two-node mode: latencies (µs) of the receiving side's storage, one
    /// pass each: its destination is then a slowfs mount (a FUSE
    /// passthrough over tmpfs answering each request that late, many at
    /// once, as network storage would); 0 for plain tmpfs
    #[arg(long, value_delimiter = ',', default_value = "0")]
    slowfs_us: Vec<u32>,
}

#[derive(Subcommand, Clone)]
enum Cmd {
    /// Generate one dataset (and optionally apply its small change)
    Gen {
        #[arg(value_enum)]
        dataset: DatasetKind,
        out: PathBuf,
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Apply the small change after generating
        #[arg(long)]
        mutate: bool,
        /// Apply the small change and revert it (the result must equal a
        /// fresh generation)
        #[arg(long)]
        mutate_revert: bool,
    },
    /// Compare two trees the way the benchmark checks destinations
    Compare { src: PathBuf, dst: PathBuf },
    /// Run a command the way the benchmark does and print its peak RSS
    #[command(hide = true)]
    Rss {
        #[arg(trailing_var_arg = true, required = true)]
        cmd: Vec<String>,
    },
    /// Forward TCP connections from LISTEN to TO, holding the bytes
    /// DELAY_US microseconds in each direction (the two-node mode's RTT),
    /// with at most WINDOW_KIB KiB in flight per connection and direction
    #[command(hide = true)]
    DelayProxy {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long)]
        delay_us: u64,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        window_kib: Option<u32>,
    },
    /// Serve BACKING on MOUNT through FUSE, each request answered DELAY_US
    /// microseconds late (the two-node mode's --slowfs-us), until
    /// SIGTERM or SIGINT
    #[command(hide = true)]
    Slowfs {
        #[arg(long)]
        backing: PathBuf,
        #[arg(long)]
        mount: PathBuf,
        #[arg(long)]
        delay_us: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, ValueEnum)]
enum Storage {
    Tmpfs,
    Disk,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, ValueEnum)]
enum DatasetKind {
    /// One large file (half random, half compressible), small files in
    /// nested directories, a hard link and a symlink
    Mixed,
    /// Many small files
    Small,
    /// Scale: a tree of 1,000,000 small files
    Tree,
    /// Scale: one 8 GiB file
    File,
    /// A 4 GiB disk image (64 MiB with --quick) holding an ext4
    /// filesystem of generated files, copied as a block device
    Disk,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, ValueEnum)]
enum Tool {
    Mover,
    Rsync,
    Cp,
    /// `dd bs=4M conv=sparse`: disk images only
    Dd,
}

/// A tool as run, one column of results: for mover, also how many data
/// connections per volume `mover send` opened (`--streams`; 1 for the
/// other tools) and how many appliers `mover receive` was given
/// (`--appliers`; None: no flag).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Variant {
    tool: Tool,
    streams: u32,
    appliers: Option<u32>,
}

impl Variant {
    const fn of(tool: Tool) -> Variant {
        Variant {
            tool,
            streams: 1,
            appliers: None,
        }
    }

    /// "Mover", "Rsync", ...; "Mover (4 streams)" for more than one,
    /// "Mover (8 appliers)", "Mover (4 streams, 8 appliers)".
    fn label(self) -> String {
        let mut parts = Vec::new();
        if self.streams != 1 {
            parts.push(format!("{} streams", self.streams));
        }
        if let Some(n) = self.appliers {
            parts.push(format!("{n} applier{}", if n == 1 { "" } else { "s" }));
        }
        match parts.is_empty() {
            true => format!("{:?}", self.tool),
            false => format!("{:?} ({})", self.tool, parts.join(", ")),
        }
    }
}

const MOVER: Variant = Variant::of(Tool::Mover);
const RSYNC: Variant = Variant::of(Tool::Rsync);
const CP: Variant = Variant::of(Tool::Cp);
const DD: Variant = Variant::of(Tool::Dd);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Case {
    Initial,
    NoChange,
    SmallChange,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Initial => "initial copy",
            Case::NoChange => "no-change resync",
            Case::SmallChange => "small-change resync",
        }
    }
}

fn spec(kind: DatasetKind, quick: bool, seed: u64) -> Spec {
    if kind == DatasetKind::Disk {
        return disk::spec(quick, seed);
    }
    let (large, files, links) = match (kind, quick) {
        (DatasetKind::Mixed, false) => (GIB, 20_000, true),
        (DatasetKind::Mixed, true) => (64 * MIB, 2_000, true),
        (DatasetKind::Small, false) => (0, 200_000, false),
        (DatasetKind::Small, true) => (0, 5_000, false),
        (DatasetKind::Tree, false) => (0, 1_000_000, false),
        (DatasetKind::Tree, true) => (0, 20_000, false),
        (DatasetKind::File, false) => (8 * GIB, 0, false),
        (DatasetKind::File, true) => (256 * MIB, 0, false),
        (DatasetKind::Disk, _) => unreachable!("returned above"),
    };
    Spec {
        name: format!("{kind:?}").to_lowercase(),
        large,
        files,
        links,
        seed,
    }
}

/// Results of one tool on one (dataset, case, storage).
#[derive(Default)]
struct ToolResult {
    runs: Vec<Outcome>,
    error: Option<String>,
    /// None: not checked; Some(Ok): equal; Some(Err): first differences.
    equal: Option<std::result::Result<(), String>>,
}

/// (dataset, case, storage, net): the net is None on one box (loopback)
/// and the link rate and added RTT between the nodes in two-node mode.
type Key = (DatasetKind, Case, Storage, Option<Net>);

struct Bench {
    args: Args,
    results: BTreeMap<Key, BTreeMap<Variant, ToolResult>>,
    datasets: BTreeMap<DatasetKind, (Spec, gen::Totals, Option<String>)>,
    /// Peak RSS of `true` started by the harness (KiB).
    floor: Option<u64>,
    /// Two-node mode: each pass's topology, for the report.
    topology: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let r = match args.cmd {
        Some(Cmd::Gen {
            dataset,
            ref out,
            quick,
            seed,
            mutate,
            mutate_revert,
        }) => gen_cmd(dataset, out, quick, seed, mutate, mutate_revert),
        Some(Cmd::Compare { ref src, ref dst }) => compare_cmd(src, dst),
        Some(Cmd::Rss { ref cmd }) => rss_cmd(cmd),
        Some(Cmd::DelayProxy {
            listen,
            to,
            delay_us,
            window_kib,
        }) => std::net::TcpListener::bind(listen)
            .with_context(|| format!("listen on {listen}"))
            .and_then(|l| {
                let window = window_kib.map(|k| k as usize * 1024);
                delay::serve(l, to, Duration::from_micros(delay_us), window)
            })
            .map(|()| true),
        Some(Cmd::Slowfs {
            ref backing,
            ref mount,
            delay_us,
        }) => slowfs::serve(backing, mount, Duration::from_micros(delay_us)).map(|()| true),
        None if args.images => images::run(&args),
        None => {
            // The smoke test covers every mode: images, one box, two nodes.
            let smoke = args.quick && !args.scale && !args.two_node;
            let images = smoke.then(|| images::run(&args));
            let two_node = smoke.then(|| {
                let mut a = args.clone();
                a.two_node = true;
                a.out = None;
                a
            });
            let mut outcomes = vec![bench(args)];
            outcomes.extend(two_node.map(bench));
            outcomes.extend(images);
            outcomes.into_iter().try_fold(true, |ok, r| Ok(r? && ok))
        }
    };
    match r {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::exit(1);
        }
    }
}

fn gen_cmd(
    kind: DatasetKind,
    out: &Path,
    quick: bool,
    seed: u64,
    mutate: bool,
    revert: bool,
) -> Result<bool> {
    let s = spec(kind, quick, seed);
    let t = Instant::now();
    let totals = gen::generate(out, &s)?;
    eprintln!(
        "generated {}: {} files, {} directories, {} in {:.1} s",
        out.display(),
        totals.files,
        totals.dirs,
        human(totals.bytes),
        t.elapsed().as_secs_f64()
    );
    if mutate || revert {
        let l = Layout::new(&s);
        let m = Mutation::new(&l);
        m.apply(out, &l)?;
        eprintln!("mutated: {}", m.describe());
        if revert {
            m.revert(out, &l)?;
            eprintln!("reverted");
        }
    }
    Ok(true)
}

fn compare_cmd(src: &Path, dst: &Path) -> Result<bool> {
    let r = compare::compare(src, dst, 50)?;
    for d in &r.diffs {
        println!("{d}");
    }
    println!(
        "{} entries compared, {} differences",
        r.entries, r.total_diffs
    );
    Ok(r.equal())
}

fn rss_cmd(cmd: &[String]) -> Result<bool> {
    let log = std::env::temp_dir().join(format!("bench-rss-{}.log", std::process::id()));
    let mut p = run::Proc::spawn(&cmd[0], Command::new(&cmd[0]).args(&cmd[1..]), &log)?;
    let e = run::wait_all(&mut [&mut p], Duration::from_secs(3600))?.remove(0);
    let _ = fs::remove_file(&log);
    println!(
        "{}: {}, peak RSS {} KiB",
        cmd[0],
        e.describe(),
        e.maxrss_kib
    );
    Ok(e.success())
}

/// Generates dataset `kind` into `src`: a tree, or a disk image in it.
fn generate(kind: DatasetKind, src: &Path, s: &Spec, quick: bool) -> Result<gen::Totals> {
    match kind {
        DatasetKind::Disk => disk::generate(src, s, disk::image_size(quick)),
        _ => gen::generate(src, s),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Install rsync and stunnel4 when missing (apt-get, as root), else fail
/// naming the packages.
fn ensure_tools(need_rsync: bool) -> Result<(PathBuf, PathBuf)> {
    let find = || {
        (
            run::which("rsync"),
            run::which("stunnel4").or_else(|| run::which("stunnel")),
        )
    };
    let (r, s) = find();
    let mut missing = Vec::new();
    if r.is_none() {
        missing.push("rsync");
    }
    if s.is_none() && need_rsync {
        missing.push("stunnel4");
    }
    if !missing.is_empty() {
        let root = unsafe { libc::geteuid() } == 0;
        if !root || run::which("apt-get").is_none() {
            bail!(
                "missing packages: {}; install them with: sudo apt-get install {}",
                missing.join(" "),
                missing.join(" ")
            );
        }
        eprintln!("bench: installing {}", missing.join(" "));
        let ok = Command::new("apt-get")
            .args(["update", "-qq"])
            .status()?
            .success()
            && Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()?
                .success();
        if !ok {
            bail!("apt-get install {} failed", missing.join(" "));
        }
    }
    let (r, s) = find();
    match (r, s) {
        (Some(r), Some(s)) => Ok((r, s)),
        (Some(r), None) if !need_rsync => Ok((r, PathBuf::from("stunnel4"))),
        _ => bail!("rsync or stunnel still missing after installing"),
    }
}

fn build_mover() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: cargo build --release -p mover");
    let st = Command::new(cargo)
        .args(["build", "--release", "-p", "mover"])
        .current_dir(workspace_root())
        .status()
        .context("run cargo")?;
    if !st.success() {
        bail!("cargo build --release -p mover failed");
    }
    let bin = target_dir().join("release/mover");
    if !bin.is_file() {
        bail!("{} not found after building", bin.display());
    }
    Ok(bin)
}

/// A directory the benchmark owns: created with a marker file, or already
/// holding the marker (left by an earlier run). Anything else is refused.
fn claim(dir: &Path) -> Result<()> {
    let marker = dir.join(".mover-bench");
    if dir.exists() {
        let empty = fs::read_dir(dir)?.next().is_none();
        if !empty && !marker.exists() {
            bail!(
                "{} exists and was not made by bench; pick another directory",
                dir.display()
            );
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::write(&marker, "made by the mover bench harness; safe to delete\n")?;
    Ok(())
}

fn bench(mut args: Args) -> Result<bool> {
    if args.storage.is_empty() {
        args.storage = if args.scale {
            vec![Storage::Disk]
        } else if args.two_node {
            vec![Storage::Tmpfs]
        } else {
            vec![Storage::Tmpfs, Storage::Disk]
        };
    }
    if args.cases.is_empty() {
        args.cases = if args.scale {
            vec![DatasetKind::Tree, DatasetKind::File]
        } else if args.two_node {
            vec![DatasetKind::Mixed, DatasetKind::Small]
        } else {
            vec![DatasetKind::Mixed, DatasetKind::Small, DatasetKind::Disk]
        };
    }
    if args.tools.is_empty() {
        args.tools = if args.scale {
            vec![Tool::Mover]
        } else if args.two_node {
            vec![Tool::Mover, Tool::Rsync, Tool::Cp]
        } else {
            vec![Tool::Mover, Tool::Rsync, Tool::Cp, Tool::Dd]
        };
    }
    args.storage.sort();
    args.storage.dedup();
    args.tools.sort();
    args.tools.dedup();
    args.link.sort();
    args.link.dedup();
    if args.rtt_ms.is_empty() {
        args.rtt_ms = vec![if args.quick { 2 } else { 0 }];
    }
    args.rtt_ms.sort();
    args.rtt_ms.dedup();
    args.mover_streams.sort();
    args.mover_streams.dedup();
    args.mover_appliers.sort();
    args.mover_appliers.dedup();
    args.slowfs_us.sort();
    args.slowfs_us.dedup();
    if !args.two_node && args.slowfs_us != [0] {
        bail!("--slowfs-us emulates the receiving node's storage: it needs --two-node");
    }
    // The window is the delay proxy's: two-node passes with an RTT only
    // (--quick's one-box part, which --two-node follows, has none).
    let smoke = args.quick && !args.scale;
    let one_box_only = !args.two_node && !smoke;
    if args.window_kib.is_some() && (one_box_only || (args.two_node && args.rtt_ms == [0])) {
        bail!("--window-kib limits the delay proxy: it needs --two-node and an --rtt-ms above 0");
    }
    let window_kib = args.window_kib;
    let mut links: Vec<Option<Net>> = Vec::new();
    for &link in args.link.iter().filter(|_| args.two_node) {
        for &rtt_ms in &args.rtt_ms {
            for &slowfs_us in &args.slowfs_us {
                links.push(Some(Net {
                    link,
                    rtt_ms,
                    // The window is the delay proxy's, which runs only
                    // with an RTT.
                    window_kib: window_kib.filter(|_| rtt_ms > 0),
                    slowfs_us,
                }));
            }
        }
    }
    if !args.two_node {
        links.push(None);
    }
    if args.two_node {
        netns::remove_on_interrupt()?;
    }
    let runs = args
        .runs
        .unwrap_or(if args.quick || args.scale { 1 } else { 3 })
        .max(1);

    let (rsync, stunnel) = ensure_tools(args.tools.contains(&Tool::Rsync))?;
    let mover = match &args.mover {
        Some(m) => fs::canonicalize(m).with_context(|| format!("mover binary {}", m.display()))?,
        None => build_mover()?,
    };
    let header = header(&args, &mover, &rsync, &stunnel, runs);
    eprintln!("{header}");

    let mut b = Bench {
        args,
        results: BTreeMap::new(),
        datasets: BTreeMap::new(),
        floor: None,
        topology: Vec::new(),
    };
    let started = Instant::now();
    let places = b.args.storage.clone().into_iter().flat_map(|s| {
        let links = links.clone();
        links.into_iter().map(move |l| (s, l))
    });
    for (storage, link) in places {
        let base = match storage {
            Storage::Tmpfs => b.args.tmpfs_dir.clone(),
            Storage::Disk => b
                .args
                .disk_dir
                .clone()
                .unwrap_or_else(|| target_dir().join("bench-data")),
        };
        claim(&base)?;
        let work = base.join("work");
        fs::create_dir_all(&work)?;
        let pki = base.join("pki");
        run::make_pki(&mover, &pki, &work)?;
        // Built (and on any exit removed) around each pass.
        let nodes = link.map(netns::Nodes::create).transpose()?;
        // The receiving side's storage with latency: mounted (and on any
        // exit unmounted) around the pass.
        let slowfs = match (&nodes, link.map_or(0, |l| l.slowfs_us)) {
            (Some(n), us) if us > 0 => Some(slowfs::Dest::new(&base, us, n, &work)?),
            _ => None,
        };
        if let Some(n) = &nodes {
            let mut d = n.describe();
            if let Some(s) = &slowfs {
                d = format!("{d}; {}", s.describe());
            }
            eprintln!("bench: two-node mode: {d}");
            b.topology.push(d);
        }
        let ctx = Ctx {
            mover: mover.clone(),
            rsync: rsync.clone(),
            stunnel: stunnel.clone(),
            pki,
            work,
            timeout: Duration::from_secs(b.args.timeout),
            nodes,
            slowfs,
        };
        if b.floor.is_none() {
            b.floor = run::rss_floor(&ctx.work).ok();
        }
        let n = if storage == Storage::Tmpfs { runs } else { 1 };
        let r = b.storage(&ctx, storage, &base, n);
        // Unmounts slowfs before its directories are removed.
        drop(ctx);
        if !b.args.keep {
            if let Err(e) = fs::remove_dir_all(&base) {
                eprintln!("bench: cannot remove {}: {e}", base.display());
            }
        }
        r?;
    }

    let (report, ok) = b.report(&header, started.elapsed());
    println!("{report}");
    let out = b.args.out.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(mode(&b.args).0)
    });
    if let Some(d) = out.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(&out, &report).with_context(|| format!("write {}", out.display()))?;
    eprintln!("bench: report written to {}", out.display());
    Ok(ok)
}

impl Bench {
    fn storage(&mut self, ctx: &Ctx, storage: Storage, base: &Path, runs: usize) -> Result<()> {
        let link = ctx.nodes.as_ref().map(|n| n.net);
        for kind in self.args.cases.clone() {
            let s = spec(kind, self.args.quick, self.args.seed);
            let src = gen::src_dir(base, &s);
            gen::remove_tree(&src)?;
            let t = Instant::now();
            let totals = generate(kind, &src, &s, self.args.quick)?;
            eprintln!(
                "[{storage:?} {}] generated {} files, {} directories, {} in {:.1} s",
                s.name,
                totals.files,
                totals.dirs,
                human(totals.bytes),
                t.elapsed().as_secs_f64()
            );
            let l = Layout::new(&s);
            let mutation =
                matches!(kind, DatasetKind::Mixed | DatasetKind::Disk).then(|| Mutation::new(&l));
            let described = mutation.as_ref().map(|m| match kind {
                DatasetKind::Disk => disk::describe(m),
                _ => m.describe(),
            });
            self.datasets.insert(kind, (s.clone(), totals, described));
            let dst = ctx
                .slowfs
                .as_ref()
                .map_or_else(|| base.join("dst"), |s| s.dst());
            for tool in self.variants() {
                // dd copies devices only.
                if tool.tool == Tool::Dd && kind != DatasetKind::Disk {
                    continue;
                }
                let r = self.tool(
                    ctx,
                    storage,
                    kind,
                    tool,
                    &src,
                    &dst,
                    &l,
                    mutation.as_ref(),
                    runs,
                );
                if let Err(e) = r {
                    eprintln!("[{storage:?} {}] {} failed: {e:#}", s.name, tool.label());
                    let recorded = self.results.iter().any(|((k, _, st, l), tools)| {
                        *k == kind
                            && *st == storage
                            && *l == link
                            && tools.get(&tool).is_some_and(|t| t.error.is_some())
                    });
                    if !recorded {
                        // Failed outside a timed sync (e.g. while changing
                        // the source): charge it to the initial copy.
                        self.slot((kind, Case::Initial, storage, link), tool).error =
                            Some(format!("{e:#}"));
                    }
                    // The next tool needs an intact source: regenerate it.
                    gen::remove_tree(&src)?;
                    generate(kind, &src, &s, self.args.quick)?;
                }
                ctx.clear_dst(&dst)?;
            }
            if !self.args.keep {
                gen::remove_tree(&src)?;
                disk::remove(&src)?;
            }
        }
        Ok(())
    }

    /// The tools to run, mover once per `--mover-streams` and
    /// `--mover-appliers` value.
    fn variants(&self) -> Vec<Variant> {
        let appliers: Vec<Option<u32>> = match self.args.mover_appliers.as_slice() {
            [] => vec![None],
            a => a.iter().copied().map(Some).collect(),
        };
        let mut v = Vec::new();
        for &tool in &self.args.tools {
            if tool != Tool::Mover {
                v.push(Variant::of(tool));
                continue;
            }
            for &streams in &self.args.mover_streams {
                v.extend(appliers.iter().map(|&appliers| Variant {
                    tool,
                    streams,
                    appliers,
                }));
            }
        }
        v
    }

    /// The mover columns of a case's results (the default one if mover
    /// did not run), one table row each.
    fn movers(tools: &BTreeMap<Variant, ToolResult>) -> Vec<Variant> {
        let v: Vec<Variant> = tools
            .keys()
            .filter(|v| v.tool == Tool::Mover)
            .copied()
            .collect();
        if v.is_empty() {
            vec![MOVER]
        } else {
            v
        }
    }

    /// What a table row adds to its case when mover ran with other than
    /// one stream: ", mover 4 streams" (", mover 1 stream" beside others),
    /// and with appliers: ", mover 8 appliers".
    fn streams_note(&self, mover: Variant) -> String {
        let streams = match (self.args.mover_streams.as_slice(), mover.streams) {
            ([1], _) => String::new(),
            (_, 1) => ", mover 1 stream".into(),
            (_, n) => format!(", mover {n} streams"),
        };
        let appliers = match mover.appliers {
            None => String::new(),
            Some(1) => ", mover 1 applier".into(),
            Some(n) => format!(", mover {n} appliers"),
        };
        streams + &appliers
    }

    fn slot(&mut self, key: Key, tool: Variant) -> &mut ToolResult {
        self.results
            .entry(key)
            .or_default()
            .entry(tool)
            .or_default()
    }

    /// All runs of one tool on one dataset. Each run: initial copy into an
    /// empty destination; no-change resync; small change applied to the
    /// source, resync, change reverted. The destination is checked after the
    /// last run of each case.
    #[allow(clippy::too_many_arguments)]
    fn tool(
        &mut self,
        ctx: &Ctx,
        storage: Storage,
        kind: DatasetKind,
        tool: Variant,
        src: &Path,
        dst: &Path,
        l: &Layout,
        mutation: Option<&Mutation>,
        runs: usize,
    ) -> Result<()> {
        let block = kind == DatasetKind::Disk;
        let sync = |src: &Path, dst: &Path| match tool.tool {
            Tool::Mover => run::mover(ctx, src, dst, block, tool.streams, tool.appliers),
            Tool::Rsync => run::rsync(ctx, src, dst, block),
            Tool::Cp => run::cp(ctx, src, dst, block),
            Tool::Dd => run::dd(ctx, src, dst),
        };
        // The local copies are limits for the initial copy only.
        let local = matches!(tool.tool, Tool::Cp | Tool::Dd);
        for r in 0..runs {
            let last = r + 1 == runs;
            ctx.clear_dst(dst)?;
            // cp -a makes the tree itself; images go into a directory.
            if tool.tool != Tool::Cp || block {
                fs::create_dir(dst)?;
            }
            let mut cases = vec![Case::Initial];
            if !local && !self.args.scale {
                cases.push(Case::NoChange);
                if mutation.is_some() {
                    cases.push(Case::SmallChange);
                }
            } else if !local {
                cases.push(Case::NoChange);
            }
            for case in cases {
                let key = (kind, case, storage, ctx.nodes.as_ref().map(|n| n.net));
                if case == Case::SmallChange {
                    match block {
                        true => disk::apply(src, l, mutation.unwrap(), &ctx.work)?,
                        false => mutation.unwrap().apply(src, l)?,
                    }
                }
                // Flush what earlier steps left dirty, so that writeback of
                // one run does not land in the next one's time.
                // SAFETY: sync(2) has no preconditions.
                unsafe { libc::sync() };
                let before = cpustat::Snapshot::take();
                let fs_before = ctx.slowfs.as_ref().and_then(slowfs::Dest::cpu);
                let mut res = sync(src, dst);
                if let (Ok(o), Some(n)) = (&mut res, &ctx.nodes) {
                    let now = cpustat::Snapshot::take();
                    o.node_busy = now
                        .busy_since(&before, n.send.cpu)
                        .zip(now.busy_since(&before, n.recv.cpu));
                }
                if let (Ok(o), Some(s)) = (&mut res, &ctx.slowfs) {
                    o.cpu_slowfs = s.cpu().zip(fs_before).map(|(a, b)| a - b);
                }
                if let (Ok(o), Storage::Disk) = (&mut res, storage) {
                    let t = Instant::now();
                    // SAFETY: as above.
                    unsafe { libc::sync() };
                    o.flush = Some(t.elapsed().as_secs_f64());
                }
                let check = match (&res, last) {
                    (Ok(_), true) if block => Some(disk::compare(src, dst)),
                    (Ok(_), true) => Some(compare::compare(src, dst, 5)),
                    _ => None,
                };
                if case == Case::SmallChange {
                    match block {
                        true => disk::revert(src)?,
                        false => mutation.unwrap().revert(src, l)?,
                    }
                }
                let label = format!(
                    "[{storage:?}{} {kind:?}] {} {} run {}/{runs}",
                    link_label(key.3),
                    tool.label(),
                    case.label(),
                    r + 1
                );
                let t = self.slot(key, tool);
                match res {
                    Ok(o) => {
                        eprintln!(
                            "{label}: {:.2} s, wire {}, rss {}{}",
                            o.secs,
                            o.wire.map_or("-".into(), human),
                            mib(o.rss_send),
                            o.rss_recv.map_or(String::new(), |k| format!("/{}", mib(k)))
                        );
                        t.runs.push(o);
                    }
                    Err(e) => {
                        t.error = Some(format!("{e:#}"));
                        bail!("{label}: {e:#}");
                    }
                }
                if let Some(c) = check {
                    let c = c?;
                    t.equal = Some(if c.equal() {
                        Ok(())
                    } else {
                        Err(format!(
                            "{} differences in {} entries, e.g. {}",
                            c.total_diffs,
                            c.entries,
                            c.diffs.join("; ")
                        ))
                    });
                    eprintln!(
                        "{label}: destination {}",
                        if c.equal() {
                            "equals the source"
                        } else {
                            "DIFFERS from the source"
                        }
                    );
                }
            }
        }
        Ok(())
    }

    fn report(&self, header: &str, elapsed: Duration) -> (String, bool) {
        let mut s = String::new();
        let mut ok = true;
        let _ = writeln!(s, "{header}");
        let _ = writeln!(s, "Datasets (seed {}):\n", self.args.seed);
        for (kind, (spec, totals, m)) in &self.datasets {
            let _ = writeln!(
                s,
                "- **{}**: {} files, {} directories, {}{}{}",
                spec.name,
                totals.files,
                totals.dirs,
                human(totals.bytes),
                match kind {
                    DatasetKind::Mixed => format!(
                        " (one {} file, half random and half text-like; {} files of 0 B to 64 KiB, \
                         log-uniform sizes; one hard link, one symlink)",
                        human(spec.large),
                        spec.files
                    ),
                    DatasetKind::File => " (one file, half random, half text-like)".to_string(),
                    DatasetKind::Disk => format!(
                        " in an ext4 filesystem (mkfs.ext4 -d) filling a {} disk image (one {} file, \
                         {} files of 0 B to 64 KiB)",
                        human(disk::image_size(self.args.quick)),
                        human(spec.large),
                        spec.files
                    ),
                    _ => " (files of 0 B to 64 KiB, log-uniform sizes)".to_string(),
                },
                m.as_ref()
                    .map_or(String::new(), |m| format!("; small change: {m}"))
            );
        }
        let _ = writeln!(s);

        if self.args.scale {
            ok &= self.scale_table(&mut s);
        } else if self.args.two_node {
            ok &= self.two_node_table(&mut s);
        } else {
            ok &= self.table(&mut s, false);
            ok &= self.table(&mut s, true);
        }

        let _ = writeln!(s, "\nAll runs (seconds):\n");
        for ((kind, case, storage, link), tools) in &self.results {
            for (tool, t) in tools {
                if t.runs.is_empty() {
                    continue;
                }
                let times: Vec<String> = t
                    .runs
                    .iter()
                    .map(|o| match o.flush {
                        Some(f) => format!("{:.2} (then sync {f:.2})", o.secs),
                        None => format!("{:.2}", o.secs),
                    })
                    .collect();
                let stunnel = t
                    .runs
                    .iter()
                    .filter_map(|o| o.rss_stunnel)
                    .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
                    .map_or(String::new(), |(c, sv)| {
                        format!(
                            "; stunnel peak RSS client/server {}/{} MiB",
                            mib(c),
                            mib(sv)
                        )
                    });
                let proxy: Vec<String> = t
                    .runs
                    .iter()
                    .filter_map(|o| o.cpu_proxy.map(|c| format!("{c:.2}")))
                    .collect();
                let proxy = match proxy.is_empty() {
                    true => String::new(),
                    false => format!("; delay proxy CPU s {}", proxy.join(", ")),
                };
                let fs_cpu: Vec<String> = t
                    .runs
                    .iter()
                    .filter_map(|o| o.cpu_slowfs.map(|c| format!("{c:.2}")))
                    .collect();
                let proxy = match fs_cpu.is_empty() {
                    true => proxy,
                    false => format!("{proxy}; slowfs daemon CPU s {}", fs_cpu.join(", ")),
                };
                let _ = writeln!(
                    s,
                    "- {kind:?} {} {storage:?}{} {}: {}{stunnel}{proxy}",
                    case.label(),
                    link_label(*link),
                    tool.label(),
                    times.join(", ")
                );
            }
        }
        let mut problems = String::new();
        for ((kind, case, storage, link), tools) in &self.results {
            for (tool, t) in tools {
                if let Some(e) = &t.error {
                    ok = false;
                    let _ = writeln!(
                        problems,
                        "- {kind:?} {} {storage:?}{}: {} FAILED: {}",
                        case.label(),
                        link_label(*link),
                        tool.label(),
                        e.replace('\n', "\n  ")
                    );
                }
                if let Some(Err(e)) = &t.equal {
                    ok = false;
                    let _ = writeln!(
                        problems,
                        "- {kind:?} {} {storage:?}{}: {} destination differs: {e}",
                        case.label(),
                        link_label(*link),
                        tool.label()
                    );
                }
            }
        }
        if !problems.is_empty() {
            let _ = writeln!(s, "\nProblems:\n\n{problems}");
        }
        let _ = writeln!(
            s,
            "\nTotal benchmark time {:.0} s. {NOTES} Disk runs list, after each time, how long a \
             `sync` right after the run took (not included in the time). Peak RSS floor: `true` \
             started the same way shows {} KiB.",
            elapsed.as_secs_f64(),
            self.floor.map_or("?".into(), |k| k.to_string())
        );
        (s, ok)
    }

    /// The comparison table of the tree datasets, or with `disk` of the
    /// disk image (whose local limits are dd and cp --sparse=always).
    fn table(&self, s: &mut String, disk: bool) -> bool {
        let mut ok = true;
        let mut keys: Vec<&Key> = self
            .results
            .keys()
            .filter(|(k, _, _, _)| (*k == DatasetKind::Disk) == disk)
            .collect();
        if keys.is_empty() {
            return ok;
        }
        keys.sort_by_key(|(k, c, st, l)| (*k, *c, *st, *l));
        if disk {
            let _ = writeln!(
                s,
                "\nDisk image (block copy: `mover send --block`; rsync --inplace --no-whole-file \
                 through stunnel; dd bs=4M conv=sparse and cp --sparse=always as local limits):\n\n\
                 | case | storage | mover s | rsync+stunnel s | dd s | cp s | rsync/mover | mover/dd | \
                 mover/cp | wire mover | wire rsync | peak RSS mover send/recv | peak RSS rsync client/daemon | equal? |"
            );
            let _ = writeln!(
                s,
                "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
            );
        } else {
            let _ = writeln!(
                s,
                "| case | storage | mover s | rsync+stunnel s | cp -a s | rsync/mover | mover/cp | \
                 wire mover | wire rsync | CPU s/GiB mover send/recv | CPU s/GiB rsync send/recv | \
                 peak RSS mover send/recv | peak RSS rsync client/daemon | equal? |"
            );
            let _ = writeln!(
                s,
                "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
            );
        }
        for (key, m) in keys.into_iter().flat_map(|k| {
            Self::movers(&self.results[k])
                .into_iter()
                .map(move |m| (k, m))
        }) {
            let tools = &self.results[key];
            let (kind, case, storage, _) = *key;
            let med = |t: Variant| tools.get(&t).and_then(median);
            let cell = |t: Variant| time_cell(tools, t);
            let wire = |t: Variant| wire_cell(tools, t);
            let rss = |t: Variant| {
                tools
                    .get(&t)
                    .filter(|r| !r.runs.is_empty())
                    .map_or("-".into(), |r| {
                        let a = r.runs.iter().map(|o| o.rss_send).max().unwrap_or(0);
                        let b = r.runs.iter().filter_map(|o| o.rss_recv).max().unwrap_or(0);
                        format!("{}/{} MiB", mib(a), mib(b))
                    })
            };
            let (equal, same) = equal_cell(tools);
            ok &= same;
            let mut times = vec![cell(m), cell(RSYNC)];
            let mut ratios = vec![ratio(med(RSYNC), med(m))];
            if disk {
                times.push(cell(DD));
                ratios.push(ratio(med(m), med(DD)));
            }
            times.push(cell(CP));
            ratios.push(ratio(med(m), med(CP)));
            let mut wires = vec![wire(m), wire(RSYNC)];
            if !disk {
                wires.push(self.cpu_cell(key, m));
                wires.push(self.cpu_cell(key, RSYNC));
            }
            let _ = writeln!(
                s,
                "| {:?}: {}{} | {storage:?} | {} | {} | {} | {} | {} | {equal} |",
                kind,
                case.label(),
                self.streams_note(m),
                times.join(" | "),
                ratios.join(" | "),
                wires.join(" | "),
                rss(m),
                rss(RSYNC),
            );
        }
        ok
    }

    fn scale_table(&self, s: &mut String) -> bool {
        let mut ok = true;
        let _ = writeln!(
            s,
            "| case | storage | tool | seconds | peak RSS send | peak RSS recv | ≤128 MiB? | wire | equal? |"
        );
        let _ = writeln!(s, "|---|---|---|--:|--:|--:|---|--:|---|");
        for ((kind, case, storage, _), tools) in &self.results {
            for (tool, r) in tools {
                let send = r.runs.iter().map(|o| o.rss_send).max();
                let recv = r.runs.iter().filter_map(|o| o.rss_recv).max();
                let within = match (tool.tool, send, recv) {
                    (Tool::Mover, Some(a), Some(b)) => {
                        let y = a <= RSS_TARGET_KIB && b <= RSS_TARGET_KIB;
                        ok &= y;
                        if y { "yes" } else { "NO" }.to_string()
                    }
                    _ => "-".into(),
                };
                let equal = match (&r.equal, &r.error) {
                    (_, Some(_)) => "FAIL",
                    (Some(Ok(())), _) => "yes",
                    (Some(Err(_)), _) => "NO",
                    (None, _) => "-",
                };
                let _ = writeln!(
                    s,
                    "| {kind:?}: {} | {storage:?} | {} | {} | {} | {} | {within} | {} | {equal} |",
                    case.label(),
                    tool.label(),
                    median(r).map_or("FAIL".into(), |v| format!("{v:.2}")),
                    send.map_or("-".into(), |k| format!("{} MiB", mib(k))),
                    recv.map_or("-".into(), |k| format!("{} MiB", mib(k))),
                    r.runs.last().and_then(|o| o.wire).map_or("-".into(), human),
                );
            }
        }
        ok
    }
}

const NOTES: &str = "Times: median wall-clock seconds; mover from the start of `mover send` \
until both it and `mover receive` have exited; rsync from the start of the rsync client until \
it has exited and the daemon's per-connection process is gone (stunnels and daemon are started \
before and stopped after the timed part); cp -a only for initial copies. Wire bytes: mover's \
`wire_bytes` from the send summary; rsync's `Total bytes sent` + `Total bytes received` from \
`--stats`, i.e. rsync protocol payload inside the TLS tunnel, not TLS bytes. Peak RSS: \
`ru_maxrss` from wait4 of each process, maximum over runs; for the rsync daemon this includes \
the per-connection processes it forked and reaped (generator and receiver), so it is the largest \
single process of the receiving side, not their sum. Equal: after the last run of each case, the \
destination is compared to the source (names, types, modes, owners, mtimes to the nanosecond, \
contents byte for byte, symlink targets, hard-link structure). CPU s/GiB: user + system CPU \
seconds of each side's processes from wait4 (mover send / mover receive; rsync client and client \
stunnel / rsync daemon with its per-connection processes and server stunnel), median over runs, \
per GiB of the dataset (resyncs too, so the cost of checking a volume shows). Page cache is not dropped, so \
disk runs read a warm source; `sync` is called before every timed run so no run pays for the \
previous one's writeback; mover makes each file durable (one syncfs per batch) before renaming it into place, rsync and cp do not.";

/// A tool's median seconds for a table cell ("FAIL" if it failed).
fn time_cell(tools: &BTreeMap<Variant, ToolResult>, t: Variant) -> String {
    match tools.get(&t) {
        None => "-".to_string(),
        Some(r) if r.error.is_some() => "FAIL".to_string(),
        Some(r) => median(r).map_or("-".into(), |v| format!("{v:.2}")),
    }
}

/// a/b with two decimals, for ratio cells.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// A tool's wire bytes in its last run.
fn wire_cell(tools: &BTreeMap<Variant, ToolResult>, t: Variant) -> String {
    tools
        .get(&t)
        .and_then(|r| r.runs.last())
        .and_then(|o| o.wire)
        .map_or("-".into(), human)
}

/// The "equal?" cell of one case, and whether every tool's destination
/// was right (a failed tool counts as wrong).
fn equal_cell(tools: &BTreeMap<Variant, ToolResult>) -> (String, bool) {
    let mut bad = Vec::new();
    let mut checked = false;
    for (tool, r) in tools {
        match &r.equal {
            Some(Ok(())) => checked = true,
            Some(Err(_)) => bad.push(tool.label()),
            None if r.error.is_some() => bad.push(format!("{} failed", tool.label())),
            None => {}
        }
    }
    if !bad.is_empty() {
        (format!("NO: {}", bad.join(", ")), false)
    } else if checked {
        ("yes".into(), true)
    } else {
        ("-".into(), true)
    }
}

fn median(r: &ToolResult) -> Option<f64> {
    median_by(r, |o| Some(o.secs))
}

/// Median over the runs of one measure of them (None if a run lacks it or
/// the tool failed).
fn median_by(r: &ToolResult, f: impl Fn(&Outcome) -> Option<f64>) -> Option<f64> {
    if r.error.is_some() || r.runs.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = r.runs.iter().map(f).collect::<Option<_>>()?;
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// ", LINK" after a storage in two-node mode; nothing on one box.
fn link_label(link: Option<Net>) -> String {
    link.map_or(String::new(), |l| {
        format!(", two nodes, link {}", l.label())
    })
}

fn human(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", units[u])
    } else if v >= 10.0 {
        format!("{v:.1} {}", units[u])
    } else {
        format!("{v:.2} {}", units[u])
    }
}

fn mib(kib: u64) -> String {
    let v = kib as f64 / 1024.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Civil date (UTC) from the Unix clock, without a date crate.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Type of the filesystem holding `path` (or its nearest existing
/// ancestor), from /proc/mounts.
fn fs_type(path: &Path) -> String {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    let p = fs::canonicalize(&p).unwrap_or(p);
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (_, mnt, ty) = (it.next()?, it.next()?, it.next()?);
            p.starts_with(mnt).then(|| (mnt.len(), ty.to_string()))
        })
        .max()
        .map_or("unknown filesystem".into(), |(_, ty)| ty)
}

/// "N CPUs (model), memory, Linux version", for report headers.
fn machine() -> String {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".into(), |s| s.trim().to_string());
    let mem = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .map_or("?".into(), |k| human(k * 1024));
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    format!("{nproc} CPUs ({cpu}), {mem} memory, Linux {kernel}")
}

/// The run's mode: its report's file name and the header's words for it.
fn mode(args: &Args) -> (&'static str, &'static str) {
    match (args.quick, args.scale, args.two_node) {
        (false, false, false) => ("latest.md", ""),
        (true, false, false) => ("latest-quick.md", " (--quick)"),
        (false, true, _) => ("latest-scale.md", " (--scale)"),
        (true, true, _) => ("latest-scale-quick.md", " (--scale --quick)"),
        (false, false, true) => ("two-node.md", ", two nodes (--two-node)"),
        (true, false, true) => ("two-node-quick.md", ", two nodes (--two-node --quick)"),
    }
}

fn header(args: &Args, mover: &Path, rsync: &Path, stunnel: &Path, runs: usize) -> String {
    let git = |a: &[&str]| {
        Command::new("git")
            .args(a)
            .current_dir(workspace_root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = if git(&["status", "--porcelain", "--", "mover"]).is_empty() {
        ""
    } else {
        " + uncommitted changes in mover/"
    };
    let mode = mode(args).1;
    let disk = args
        .disk_dir
        .clone()
        .unwrap_or_else(|| target_dir().join("bench-data"));
    let places: Vec<String> = args
        .storage
        .iter()
        .map(|s| match s {
            Storage::Tmpfs => format!(
                "{runs} run(s) per case on tmpfs ({}, {})",
                args.tmpfs_dir.display(),
                fs_type(&args.tmpfs_dir)
            ),
            Storage::Disk => format!(
                "1 run per case on disk ({}, {})",
                disk.display(),
                fs_type(&disk)
            ),
        })
        .collect();
    let command: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "# mover benchmark{mode}\n\n\
         {} on {}. \
         mover {commit}{dirty} ({}); {}; {}. {}.\n\n\
         Command: `bench {}`.\n",
        utc_now(),
        machine(),
        mover.display(),
        run::version_line(rsync, &["--version"], "version"),
        run::version_line(stunnel, &["-version"], "stunnel"),
        places.join(", "),
        command.join(" "),
    )
}
