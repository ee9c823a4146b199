//! Two "nodes" on one machine, for the two-node mode: two network
//! namespaces joined by a veth pair, each with a CPU of its own.
//!
//! On one box over loopback, the sender and the receiver share the CPUs and
//! never leave the kernel's loopback path, which flatters whichever tool
//! spreads work over more threads and hides what a real link costs. Here the
//! sending side runs in [`SEND`] pinned to one CPU, the receiving side in
//! [`RECV`] pinned to another, and their traffic crosses a veth pair with
//! addresses of its own, optionally shaped by `tc ... tbf` to a link rate
//! and delayed by the bench's own delay proxy ([`crate::delay`]; this
//! kernel has no netem) to a round-trip time.
//!
//! The names are fixed and unique to the bench, so a run can find and
//! remove what a killed run left behind ([`remove_stale`]) without touching
//! anything else; [`Nodes`] removes them again when dropped, and
//! [`remove_on_interrupt`] does on Ctrl-C.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

/// Namespace of the sending side.
pub const SEND: &str = "mover-bench-send";
/// Namespace of the receiving side.
pub const RECV: &str = "mover-bench-recv";
/// The veth ends (interface names are at most 15 bytes).
const SEND_IF: &str = "mvbench-send";
const RECV_IF: &str = "mvbench-recv";
/// The link's addresses: a /30 of their own, seen only inside the two
/// namespaces, so it cannot clash with the host's routes.
const SEND_ADDR: &str = "10.213.71.1";
const RECV_ADDR: &str = "10.213.71.2";

/// Rate of the link between the nodes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, ValueEnum)]
pub enum Link {
    /// No shaping: as fast as the veth pair and the two CPUs go
    #[value(name = "none")]
    Unlimited,
    /// tbf at 10 Gbit/s on both ends
    #[value(name = "10gbit")]
    Gbit10,
    /// tbf at 1 Gbit/s on both ends
    #[value(name = "1gbit")]
    Gbit1,
}

impl Link {
    pub fn label(self) -> &'static str {
        match self {
            Link::Unlimited => "unlimited",
            Link::Gbit10 => "10 Gbit/s",
            Link::Gbit1 => "1 Gbit/s",
        }
    }

    /// Rate in bits per second, or None for no shaping.
    pub fn bits(self) -> Option<u64> {
        match self {
            Link::Unlimited => None,
            Link::Gbit10 => Some(10_000_000_000),
            Link::Gbit1 => Some(1_000_000_000),
        }
    }
}

/// What one two-node pass emulates: the path between the nodes (the
/// link's rate, the round trip that the delay proxy adds to it, 0: no
/// proxy, and the window the proxy gives each connection and direction,
/// None: no limit) and the receiving side's storage (the latency of each
/// request to it, [`crate::slowfs`]; 0: plain tmpfs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Net {
    pub link: Link,
    pub rtt_ms: u32,
    pub window_kib: Option<u32>,
    pub slowfs_us: u32,
}

impl Net {
    /// "1 Gbit/s", or "1 Gbit/s + 10 ms RTT" with a delay, and
    /// "1 Gbit/s + 50 ms RTT, 4096 KiB window" with a window; with storage
    /// latency "1 Gbit/s, storage 500 µs/request".
    pub fn label(self) -> String {
        let window = self
            .window_kib
            .map_or(String::new(), |k| format!(", {k} KiB window"));
        let path = match self.rtt_ms {
            0 => self.link.label().to_string(),
            ms => format!("{} + {ms} ms RTT{window}", self.link.label()),
        };
        match self.slowfs_us {
            0 => path,
            us => format!("{path}, storage {us} µs/request"),
        }
    }

    /// The delay the proxy adds in each direction (half the round trip).
    pub fn one_way(self) -> Option<std::time::Duration> {
        (self.rtt_ms > 0).then(|| std::time::Duration::from_micros(u64::from(self.rtt_ms) * 500))
    }
}

/// One side: a namespace (held open, so children can enter it) and a CPU.
pub struct Node {
    pub addr: &'static str,
    pub cpu: usize,
    ns: File,
}

impl Node {
    /// Make `cmd` start inside this node: in its network namespace, pinned
    /// to its CPU (what `ip netns exec NS taskset -c CPU` does, without two
    /// more execs in between, so wait4 still measures the tool itself).
    pub fn enter<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        let fd: RawFd = self.ns.as_raw_fd();
        let cpu = self.cpu;
        // SAFETY: setns and sched_setaffinity are plain system calls on a
        // descriptor and a stack value: async-signal-safe, no allocation.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

/// The two nodes and the path between them; removed when dropped.
pub struct Nodes {
    pub send: Node,
    pub recv: Node,
    pub net: Net,
}

impl Nodes {
    /// Create both namespaces, the veth pair between them and the link's
    /// shaping, after removing any left by an earlier run. Fails naming
    /// what is missing when `ip netns` is not permitted. The delay is not
    /// built here: each tool's run starts its own proxy ([`crate::run`]).
    pub fn create(net: Net) -> Result<Nodes> {
        let link = net.link;
        let cpus = allowed_cpus()?;
        if cpus.len() < 2 {
            bail!(
                "two-node mode needs 2 CPUs, one per side; this process may use only {:?}",
                cpus
            );
        }
        for (tool, package) in [("ip", "iproute2"), ("tc", "iproute2")] {
            if crate::run::which(tool).is_none() {
                bail!("two-node mode needs `{tool}` (Debian package {package}); install it");
            }
        }
        remove_stale();
        // From here on, a failure removes what was made.
        let guard = Cleanup;
        ip(&["netns", "add", SEND]).context(
            "two-node mode needs to create network namespaces (`ip netns add`): run as root \
             (CAP_SYS_ADMIN and CAP_NET_ADMIN), outside a container that forbids it",
        )?;
        ip(&["netns", "add", RECV])?;
        ip(&[
            "link", "add", SEND_IF, "netns", SEND, "type", "veth", "peer", "name", RECV_IF,
            "netns", RECV,
        ])
        .context("two-node mode needs veth pairs (kernel module veth)")?;
        for (ns, dev, addr) in [(SEND, SEND_IF, SEND_ADDR), (RECV, RECV_IF, RECV_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            if let Some(bits) = link.bits() {
                // The bucket holds 10 ms at the rate (well above the 64 KiB
                // of a GSO packet, which a smaller bucket would drop); the
                // queue holds up to 20 ms more before dropping.
                let burst = (bits / 8 / 100).to_string();
                tc(&[
                    "-n",
                    ns,
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{bits}bit"),
                    "burst",
                    &burst,
                    "latency",
                    "20ms",
                ])
                .context("two-node mode shapes the link with `tc qdisc add ... tbf` (sch_tbf)")?;
            }
        }
        let open = |ns: &str| {
            let p = format!("/run/netns/{ns}");
            File::open(&p).with_context(|| format!("open {p}"))
        };
        let nodes = Nodes {
            send: Node {
                addr: SEND_ADDR,
                cpu: cpus[0],
                ns: open(SEND)?,
            },
            recv: Node {
                addr: RECV_ADDR,
                cpu: cpus[1],
                ns: open(RECV)?,
            },
            net,
        };
        std::mem::forget(guard);
        Ok(nodes)
    }

    /// One line for reports: the topology as built.
    pub fn describe(&self) -> String {
        format!(
            "sending side in netns {SEND} on CPU {} ({SEND_ADDR}), receiving side in netns {RECV} \
             on CPU {} ({RECV_ADDR}), joined by a veth pair (MTU 1500), link {}{}{}",
            self.send.cpu,
            self.recv.cpu,
            self.net.label(),
            if self.net.link.bits().is_some() {
                " (tc tbf on both ends)"
            } else {
                ""
            },
            match self.net.rtt_ms {
                0 => String::new(),
                ms => format!(
                    " (the RTT: `bench delay-proxy` in netns {RECV} on CPU {} holds each chunk \
                     {} ms in each direction between the veth and the server, mover receive or \
                     the server stunnel; added to the veth's own round trip, {})",
                    self.recv.cpu,
                    f64::from(ms) / 2.0,
                    match self.net.window_kib {
                        None => "without a bandwidth limit".to_string(),
                        Some(k) => format!(
                            "with at most {k} KiB in flight per connection and direction (a \
                             TCP window: each byte holds its room from its read until its \
                             acknowledgment would be back, one RTT, so one connection moves \
                             at most {k} KiB per {ms} ms, {:.0} Mbit/s)",
                            f64::from(k) * 1024.0 * 8.0 / (f64::from(ms) / 1000.0) / 1e6
                        ),
                    }
                ),
            }
        )
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        remove_stale();
    }
}

/// Removes the namespaces if dropped (while [`Nodes::create`] is half done).
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_stale();
    }
}

/// Kill whatever still runs in the bench's namespaces and delete them (the
/// veth pair and its shaping go with them). Quiet: nothing there is fine.
pub fn remove_stale() {
    for ns in [SEND, RECV] {
        if !std::path::Path::new("/run/netns").join(ns).exists() {
            continue;
        }
        let pids = Command::new("ip")
            .args(["netns", "pids", ns])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// On Ctrl-C, SIGTERM or SIGHUP, remove the namespaces before exiting:
/// the guard's Drop does not run when a signal ends the process. A thread
/// of its own waits for the signals (tokio's handlers, already in the
/// build through the orchestrator, rather than another crate).
pub fn remove_on_interrupt() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("start the signal-watching runtime")?;
    // Registered here, so a signal from now on is caught.
    let (mut int, mut term, mut hup) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })
        .context("install the Ctrl-C handler")?;
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        });
        eprintln!("bench: interrupted; removing the two-node namespaces");
        remove_stale();
        std::process::exit(130);
    });
    Ok(())
}

/// CPUs this process may run on (its affinity mask), lowest first.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data, filled in by the kernel.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer and size.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: i is below CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect())
}

fn ip(args: &[&str]) -> Result<()> {
    command("ip", args)
}

fn tc(args: &[&str]) -> Result<()> {
    command("tc", args)
}

/// Run a plumbing command; fail with its words.
fn command(prog: &str, args: &[&str]) -> Result<()> {
    let o = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {prog}"))?;
    if !o.status.success() {
        bail!(
            "`{prog} {}` failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}
