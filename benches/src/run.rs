//! Child processes measured with wait4 (exit time and peak RSS), and the
//! tools: mover, rsync through two stunnels, cp -a (and for disk images
//! `cp --sparse=always` and `dd`).

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::disk::IMAGE;
use crate::netns::Nodes;

/// A child process that is killed and reaped if dropped before being waited
/// for, so no daemon outlives a failed run.
pub struct Proc {
    pub pid: libc::pid_t,
    pub name: String,
    pub log: PathBuf,
    reaped: bool,
}

/// How a child ended.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// Raw wait status.
    pub status: i32,
    /// Peak resident set size in KiB (ru_maxrss: the child and every
    /// descendant it waited for).
    pub maxrss_kib: u64,
    /// CPU seconds, user + system, of the child and every descendant it
    /// waited for.
    pub cpu: f64,
    /// When wait4 saw it exit.
    pub at: Instant,
}

impl Exit {
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    pub fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit code {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("killed by signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("wait status {:#x}", self.status)
        }
    }
}

impl Proc {
    /// Start `cmd` with stdout and stderr appended to `log` (unless the
    /// caller set stdout itself, see `spawn_out`).
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let f = File::create(log).with_context(|| format!("create {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
        Self::start(name, cmd, log)
    }

    /// Start `cmd` with stdout to `out` and stderr to `log`.
    pub fn spawn_out(name: &str, cmd: &mut Command, out: &Path, log: &Path) -> Result<Proc> {
        let o = File::create(out).with_context(|| format!("create {}", out.display()))?;
        let e = File::create(log).with_context(|| format!("create {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(o).stderr(e);
        Self::start(name, cmd, log)
    }

    fn start(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        // A pre_exec hook makes std fork instead of posix_spawn (vfork). With
        // vfork, exec records the peak RSS of the parent's (our) address
        // space as the child's starting ru_maxrss; with fork the child only
        // inherits the anonymous memory we hold at that moment.
        // SAFETY: the hook does nothing, so it is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| Ok(()));
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        // The std handle is dropped without waiting; wait4 reaps the pid.
        Ok(Proc {
            pid: child.id() as libc::pid_t,
            name: name.to_string(),
            log: log.to_path_buf(),
            reaped: false,
        })
    }

    /// Non-blocking wait.
    pub fn try_wait(&mut self) -> Result<Option<Exit>> {
        if self.reaped {
            bail!("{} already reaped", self.name);
        }
        let mut status = 0;
        // SAFETY: rusage is plain old data, filled in by the kernel.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: valid pointers to locals.
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == self.pid {
                self.reaped = true;
                let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                return Ok(Some(Exit {
                    status,
                    maxrss_kib: ru.ru_maxrss.max(0) as u64,
                    cpu: secs(ru.ru_utime) + secs(ru.ru_stime),
                    at: Instant::now(),
                }));
            }
            if r == 0 {
                return Ok(None);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).with_context(|| format!("wait4 {}", self.name));
            }
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        if !self.reaped {
            // SAFETY: the pid is our unreaped child, so it cannot be reused.
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// Signal and reap.
    pub fn stop(mut self, sig: libc::c_int, timeout: Duration) -> Result<Exit> {
        self.signal(sig);
        let mut v = wait_all(&mut [&mut self], timeout)?;
        Ok(v.remove(0))
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 15)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(libc::SIGKILL);
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
        }
    }
}

/// Last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!("{}:\n{}", path.display(), lines[from..].join("\n"))
}

/// Wait for every process (polling every half millisecond, so exit times
/// are accurate to well under a millisecond); kill them all on timeout.
pub fn wait_all(procs: &mut [&mut Proc], timeout: Duration) -> Result<Vec<Exit>> {
    let deadline = Instant::now() + timeout;
    let mut exits: Vec<Option<Exit>> = vec![None; procs.len()];
    loop {
        for (p, e) in procs.iter_mut().zip(exits.iter_mut()) {
            if e.is_none() {
                *e = p.try_wait()?;
            }
        }
        if exits.iter().all(Option::is_some) {
            return Ok(exits.into_iter().map(Option::unwrap).collect());
        }
        if Instant::now() > deadline {
            let names: Vec<_> = procs
                .iter()
                .zip(&exits)
                .filter(|(_, e)| e.is_none())
                .map(|(p, _)| p.name.clone())
                .collect();
            for p in procs.iter() {
                p.signal(libc::SIGKILL);
            }
            bail!(
                "timed out after {:?} waiting for {}",
                timeout,
                names.join(", ")
            );
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free port (as [`free_port`]) other than `taken`: ports handed out
/// before but bound since in another namespace look free from here.
fn free_port_except(taken: &[u16]) -> Result<u16> {
    loop {
        let p = free_port()?;
        if !taken.contains(&p) {
            return Ok(p);
        }
    }
}

/// Is something listening on TCP `port` (any address) in the network
/// namespace of process `pid`? Read from /proc/PID/net/tcp{,6}, so the
/// check makes no connection and works across namespaces.
fn listening(pid: libc::pid_t, port: u16) -> bool {
    ["tcp", "tcp6"].iter().any(|f| {
        fs::read_to_string(format!("/proc/{pid}/net/{f}")).is_ok_and(|s| {
            s.lines().skip(1).any(|l| {
                let mut it = l.split_whitespace();
                let (local, st) = (it.nth(1), it.nth(1));
                st == Some("0A")
                    && local
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
        })
    })
}

/// Wait until `proc` listens on `port`; fail if it exits first.
pub fn wait_listen(proc: &mut Proc, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if listening(proc.pid, port) {
            return Ok(());
        }
        if let Some(e) = proc.try_wait()? {
            bail!(
                "{} exited ({}) before listening on {port}\n{}",
                proc.name,
                e.describe(),
                proc.log_tail()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} does not listen on {port}\n{}",
                proc.name,
                proc.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Pids whose parent is `pid` (scanning /proc).
fn children_of(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) {
            // "pid (comm) state ppid ..."; comm may hold spaces and parens.
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
                if rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) == Some(pid) {
                    v.push(p);
                }
            }
        }
    }
    v
}

/// Result of one timed sync.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub secs: f64,
    /// Bytes on the wire as the tool reports them (None for cp).
    pub wire: Option<u64>,
    /// Peak RSS in KiB of the sending side (mover send, rsync client, cp).
    pub rss_send: u64,
    /// Peak RSS in KiB of the receiving side (mover receive, rsync daemon
    /// and its per-connection processes).
    pub rss_recv: Option<u64>,
    /// Peak RSS in KiB of the client and server stunnel.
    pub rss_stunnel: Option<(u64, u64)>,
    /// CPU seconds (user + system) of the sending side's processes: mover
    /// send; rsync client and client stunnel; cp.
    pub cpu_send: f64,
    /// CPU seconds of the receiving side's processes: mover receive; rsync
    /// daemon (with its per-connection processes) and server stunnel.
    pub cpu_recv: Option<f64>,
    /// Two-node mode: share of the sending and the receiving node's CPU
    /// that was busy during the run, with anything (other processes on a
    /// shared machine too).
    pub node_busy: Option<(f64, f64)>,
    /// CPU seconds of the delay proxy (two-node mode with an RTT): it runs
    /// on the receiving node's CPU but is neither tool's work, so it counts
    /// as that node's other work, and is reported apart.
    pub cpu_proxy: Option<f64>,
    /// CPU seconds of the slowfs daemon (two-node mode with storage
    /// latency): the emulated storage server's, neither node's tools'.
    pub cpu_slowfs: Option<f64>,
    /// Seconds a `sync` took right after the run (disk only, not included
    /// in `secs`): the writeback the tool left behind.
    pub flush: Option<f64>,
}

/// Paths and settings shared by all runs.
pub struct Ctx {
    pub mover: PathBuf,
    pub rsync: PathBuf,
    pub stunnel: PathBuf,
    pub pki: PathBuf,
    /// Directory for configuration files and logs.
    pub work: PathBuf,
    pub timeout: Duration,
    /// Two-node mode: where each side runs. None: both on this box, over
    /// loopback, unpinned.
    pub nodes: Option<Nodes>,
    /// Two-node mode with storage latency: the receiving side's
    /// destination is on this slowfs mount.
    pub slowfs: Option<crate::slowfs::Dest>,
}

impl Ctx {
    /// Remove the destination `dst` (on slowfs: remount an empty backing
    /// directory, see [`crate::slowfs::Dest::reset`]).
    pub fn clear_dst(&self, dst: &Path) -> Result<()> {
        match &self.slowfs {
            Some(s) => s.reset(),
            None => crate::gen::remove_tree(dst),
        }
    }
    /// Start `cmd` on the sending side.
    fn send_side<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        match &self.nodes {
            Some(n) => n.send.enter(cmd),
            None => cmd,
        }
    }
    /// Start `cmd` on the receiving side.
    fn recv_side<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        match &self.nodes {
            Some(n) => n.recv.enter(cmd),
            None => cmd,
        }
    }
    /// The receiving side's address, as the sending side reaches it.
    fn recv_addr(&self) -> &'static str {
        self.nodes.as_ref().map_or("127.0.0.1", |n| n.recv.addr)
    }
    /// With an RTT to add: start the delay proxy (`bench delay-proxy`) on
    /// the receiving node, on a port other than `taken`, in front of the
    /// receiving side's `server` port, and return the address the sending
    /// side connects to instead, with the proxy. Without: `server` itself.
    fn delayed(&self, server: u16, taken: &[u16]) -> Result<(String, Option<Proc>)> {
        let to = format!("{}:{server}", self.recv_addr());
        let Some(net) = self.nodes.as_ref().map(|n| n.net) else {
            return Ok((to, None));
        };
        let Some(delay) = net.one_way() else {
            return Ok((to, None));
        };
        let port = free_port_except(taken)?;
        let listen = format!("{}:{port}", self.recv_addr());
        let exe = std::env::current_exe().context("find the bench binary")?;
        let mut p = Proc::spawn(
            "delay proxy",
            self.recv_side(&mut Command::new(exe))
                .arg("delay-proxy")
                .args(["--listen", &listen, "--to", &to])
                .arg("--delay-us")
                .arg(delay.as_micros().to_string())
                .args(
                    net.window_kib
                        .map(|k| ["--window-kib".to_string(), k.to_string()])
                        .iter()
                        .flatten(),
                ),
            &self.f("delay-proxy.log"),
        )?;
        wait_listen(&mut p, port)?;
        Ok((listen, Some(p)))
    }
    fn f(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
    fn pki(&self, name: &str) -> PathBuf {
        self.pki.join(name)
    }
}

/// Write the per-migration PKI (once per storage).
pub fn make_pki(mover: &Path, dir: &Path, work: &Path) -> Result<()> {
    let log = work.join("certs.log");
    let mut p = Proc::spawn(
        "mover certs",
        Command::new(mover)
            .args([
                "certs",
                "--server-san",
                "localhost",
                "--client",
                "bench=vol",
                "--force",
            ])
            .arg("--out")
            .arg(dir),
        &log,
    )?;
    let e = wait_all(&mut [&mut p], Duration::from_secs(60))?.remove(0);
    if !e.success() {
        bail!("mover certs failed ({})\n{}", e.describe(), tail(&log, 20));
    }
    Ok(())
}

/// `mover send SRC` into a fresh `mover receive --exit-when-done` serving
/// DST; timed from the start of the sender until both have exited.
///
/// With `block`, SRC and DST each hold one disk image ([`crate::disk`]),
/// copied with `mover send --block` into a receiver serving DST's image
/// with `--block`. With `streams` above 1, the sender opens that many data
/// connections (`mover send --streams N`; 1 passes no flag, the default).
/// With `appliers`, the receiver applies with that many
/// (`mover receive --appliers N`; None passes no flag).
pub fn mover(
    ctx: &Ctx,
    src: &Path,
    dst: &Path,
    block: bool,
    streams: u32,
    appliers: Option<u32>,
) -> Result<Outcome> {
    let port = free_port()?;
    let (src, dst) = match block {
        true => (src.join(IMAGE), dst.join(IMAGE)),
        false => (src.to_path_buf(), dst.to_path_buf()),
    };
    let block_flag: &[&str] = if block { &["--block"] } else { &[] };
    let streams_flag = match streams {
        1 => Vec::new(),
        n => vec!["--streams".to_string(), n.to_string()],
    };
    let listen = format!("{}:{port}", ctx.recv_addr());
    let mut recv = Proc::spawn(
        "mover receive",
        ctx.recv_side(&mut mover_receive(ctx, &listen, &dst, block, appliers)),
        &ctx.f("mover-receive.log"),
    )?;
    wait_listen(&mut recv, port)?;
    let (connect, proxy) = ctx.delayed(port, &[port])?;
    let out = ctx.f("mover-send.out");
    let t0 = Instant::now();
    let mut send = Proc::spawn_out(
        "mover send",
        ctx.send_side(&mut Command::new(&ctx.mover))
            .arg("send")
            .arg(&src)
            .args(block_flag)
            .args(&streams_flag)
            .arg("--connect")
            .arg(&connect)
            .args(["--server-name", "localhost"])
            .args(["--volume", "vol", "--progress", "json"])
            .arg("--cert")
            .arg(ctx.pki("bench.crt"))
            .arg("--key")
            .arg(ctx.pki("bench.key"))
            .arg("--ca")
            .arg(ctx.pki("ca.crt")),
        &out,
        &ctx.f("mover-send.log"),
    )?;
    let exits = wait_all(&mut [&mut send, &mut recv], ctx.timeout)?;
    let secs = exits
        .iter()
        .map(|e| e.at)
        .max()
        .unwrap()
        .duration_since(t0)
        .as_secs_f64();
    let cpu_proxy = stop_proxy(proxy)?;
    for (e, p) in exits.iter().zip([&send, &recv]) {
        if !e.success() {
            bail!("{} failed ({})\n{}", p.name, e.describe(), p.log_tail());
        }
    }
    let summary = fs::read_to_string(&out)?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .ok_or_else(|| anyhow!("no summary in {}", out.display()))?;
    Ok(Outcome {
        secs,
        wire: summary["wire_bytes"].as_u64(),
        rss_send: exits[0].maxrss_kib,
        rss_recv: Some(exits[1].maxrss_kib),
        rss_stunnel: None,
        cpu_send: exits[0].cpu,
        cpu_recv: Some(exits[1].cpu),
        node_busy: None,
        cpu_proxy,
        cpu_slowfs: None,
        flush: None,
    })
}

/// The `mover receive` command line: serve DST as volume `vol` on `listen`
/// and exit once one sync is done.
fn mover_receive(
    ctx: &Ctx,
    listen: &str,
    dst: &Path,
    block: bool,
    appliers: Option<u32>,
) -> Command {
    let mut cmd = Command::new(&ctx.mover);
    cmd.arg("receive")
        .arg("--listen")
        .arg(listen)
        .arg("--volume")
        .arg(format!("vol={}", dst.display()))
        .args(if block { &["--block"][..] } else { &[] })
        // As the orchestrator's stage receivers run: changed files updated
        // in place, segment hashes kept for the next resync.
        .args(["--inplace", "--keep-hash-cache"])
        .arg("--exit-when-done")
        .arg("--cert")
        .arg(ctx.pki("server.crt"))
        .arg("--key")
        .arg(ctx.pki("server.key"))
        .arg("--ca")
        .arg(ctx.pki("ca.crt"));
    if let Some(n) = appliers {
        cmd.arg("--appliers").arg(n.to_string());
    }
    cmd
}

/// rsync the way MTC runs it: `rsync --archive --delete --hard-links
/// --partial` from the client through a client stunnel and a server stunnel
/// (TLS 1.3, mutual authentication with the same PKI as mover) to an rsync
/// daemon whose module is DST. Timed from the start of the rsync client until
/// it has exited and the daemon's per-connection process is gone.
///
/// With `block`, SRC's disk image goes into DST's with `rsync --archive
/// --inplace --no-whole-file`: rsync's delta, written where it lands.
pub fn rsync(ctx: &Ctx, src: &Path, dst: &Path, block: bool) -> Result<Outcome> {
    let (pd, ps, pc) = (free_port()?, free_port()?, free_port()?);
    let root = unsafe { libc::geteuid() } == 0;
    let conf = ctx.f("rsyncd.conf");
    fs::write(
        &conf,
        format!(
            "use chroot = no\n\
             munge symlinks = no\n\
             reverse lookup = no\n\
             hosts allow = 127.0.0.1\n\
             {}\
             log file = {}\n\
             [vol]\n\
             path = {}\n\
             read only = false\n",
            if root { "uid = root\ngid = root\n" } else { "" },
            ctx.f("rsyncd.log").display(),
            dst.display()
        ),
    )?;
    // The server stunnel listens on the receiving side's address; the
    // client stunnel and the daemon each on their own side's loopback; the
    // client stunnel connects to the server stunnel, or to the delay proxy
    // in front of it.
    let recv = ctx.recv_addr();
    let (server, proxy) = ctx.delayed(ps, &[pd, ps, pc])?;
    let tls = |name: &str, client: bool, accept: &str, connect: &str| -> Result<PathBuf> {
        let p = ctx.f(name);
        let (cert, key, extra) = if client {
            ("bench", "bench", "client = yes\ncheckHost = localhost\n")
        } else {
            ("server", "server", "requireCert = yes\n")
        };
        fs::write(
            &p,
            format!(
                "foreground = yes\n\
                 pid =\n\
                 debug = 4\n\
                 [rsync]\n\
                 {extra}\
                 accept = {accept}\n\
                 connect = {connect}\n\
                 cert = {}\n\
                 key = {}\n\
                 CAfile = {}\n\
                 verifyChain = yes\n\
                 sslVersionMin = TLSv1.3\n",
                ctx.pki(&format!("{cert}.crt")).display(),
                ctx.pki(&format!("{key}.key")).display(),
                ctx.pki("ca.crt").display(),
            ),
        )?;
        Ok(p)
    };
    let server_conf = tls(
        "stunnel-server.conf",
        false,
        &format!("{recv}:{ps}"),
        &format!("127.0.0.1:{pd}"),
    )?;
    let client_conf = tls(
        "stunnel-client.conf",
        true,
        &format!("127.0.0.1:{pc}"),
        &server,
    )?;

    let mut daemon = Proc::spawn(
        "rsync daemon",
        ctx.recv_side(&mut Command::new(&ctx.rsync))
            .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
            .arg(format!("--config={}", conf.display()))
            .arg(format!("--port={pd}")),
        &ctx.f("rsync-daemon.log"),
    )?;
    let mut st_server = Proc::spawn(
        "stunnel (server)",
        ctx.recv_side(&mut Command::new(&ctx.stunnel))
            .arg(&server_conf),
        &ctx.f("stunnel-server.log"),
    )?;
    let mut st_client = Proc::spawn(
        "stunnel (client)",
        ctx.send_side(&mut Command::new(&ctx.stunnel))
            .arg(&client_conf),
        &ctx.f("stunnel-client.log"),
    )?;
    wait_listen(&mut daemon, pd)?;
    wait_listen(&mut st_server, ps)?;
    wait_listen(&mut st_client, pc)?;

    let out = ctx.f("rsync.out");
    let (flags, src_arg, dst_arg): (&[&str], _, _) = if block {
        (
            &["--archive", "--inplace", "--no-whole-file", "--stats"],
            src.join(IMAGE).into_os_string(),
            format!("rsync://127.0.0.1:{pc}/vol/{IMAGE}"),
        )
    } else {
        let mut src_arg = src.as_os_str().to_owned();
        src_arg.push("/");
        (
            &[
                "--archive",
                "--delete",
                "--hard-links",
                "--partial",
                "--stats",
            ],
            src_arg,
            format!("rsync://127.0.0.1:{pc}/vol/"),
        )
    };
    let t0 = Instant::now();
    let mut client = Proc::spawn_out(
        "rsync client",
        ctx.send_side(&mut Command::new(&ctx.rsync))
            .args(flags)
            .arg(&src_arg)
            .arg(dst_arg),
        &out,
        &ctx.f("rsync.err"),
    )?;
    let ce = wait_all(&mut [&mut client], ctx.timeout)?.remove(0);
    // The daemon's per-connection process may still be finishing; wait
    // until the daemon has reaped it (its ru_maxrss then counts).
    let mut end = ce.at;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !children_of(daemon.pid).is_empty() {
        if Instant::now() > deadline {
            bail!("rsync daemon's connection process does not exit");
        }
        std::thread::sleep(Duration::from_micros(500));
        end = Instant::now();
    }
    let secs = end.duration_since(t0).as_secs_f64();
    let stop = Duration::from_secs(10);
    let de = daemon.stop(libc::SIGTERM, stop)?;
    let se = st_server.stop(libc::SIGTERM, stop)?;
    let cl = st_client.stop(libc::SIGTERM, stop)?;
    let cpu_proxy = stop_proxy(proxy)?;
    if !ce.success() {
        bail!(
            "rsync client failed ({})\n{}\n{}\n{}",
            ce.describe(),
            tail(&ctx.f("rsync.err"), 15),
            tail(&ctx.f("rsyncd.log"), 10),
            tail(&ctx.f("stunnel-client.log"), 10)
        );
    }
    let stats = fs::read_to_string(&out)?;
    let num = |key: &str| -> Option<u64> {
        let l = stats.lines().find(|l| l.starts_with(key))?;
        let v = l[key.len()..].split_whitespace().next()?;
        v.replace(',', "").parse().ok()
    };
    let wire = match (num("Total bytes sent:"), num("Total bytes received:")) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    Ok(Outcome {
        secs,
        wire,
        rss_send: ce.maxrss_kib,
        rss_recv: Some(de.maxrss_kib),
        rss_stunnel: Some((cl.maxrss_kib, se.maxrss_kib)),
        cpu_send: ce.cpu + cl.cpu,
        cpu_recv: Some(de.cpu + se.cpu),
        node_busy: None,
        cpu_proxy,
        cpu_slowfs: None,
        flush: None,
    })
}

/// Stop the delay proxy, if any, once the sync is over; its CPU seconds.
fn stop_proxy(proxy: Option<Proc>) -> Result<Option<f64>> {
    proxy
        .map(|p| Ok(p.stop(libc::SIGTERM, Duration::from_secs(10))?.cpu))
        .transpose()
}

/// `cp -a SRC DST` (DST must not exist); with `block`, `cp
/// --sparse=always` of SRC's disk image into DST.
pub fn cp(ctx: &Ctx, src: &Path, dst: &Path, block: bool) -> Result<Outcome> {
    let mut cmd = Command::new("cp");
    if block {
        cmd.arg("--sparse=always")
            .arg(src.join(IMAGE))
            .arg(dst.join(IMAGE));
    } else {
        cmd.arg("-a").arg(src).arg(dst);
    }
    local(
        ctx,
        if block { "cp --sparse=always" } else { "cp -a" },
        &mut cmd,
    )
}

/// `dd bs=4M conv=sparse` of SRC's disk image into DST: the plain
/// sequential copy of a device.
pub fn dd(ctx: &Ctx, src: &Path, dst: &Path) -> Result<Outcome> {
    let mut cmd = Command::new("dd");
    cmd.arg(format!("if={}", src.join(IMAGE).display()))
        .arg(format!("of={}", dst.join(IMAGE).display()))
        .args(["bs=4M", "conv=sparse", "status=none"]);
    local(ctx, "dd", &mut cmd)
}

/// Runs a local copy, timed from its start until it has exited.
fn local(ctx: &Ctx, name: &str, cmd: &mut Command) -> Result<Outcome> {
    let log = ctx.f("local-copy.log");
    let t0 = Instant::now();
    let mut p = Proc::spawn(name, ctx.send_side(cmd), &log)?;
    let e = wait_all(&mut [&mut p], ctx.timeout)?.remove(0);
    if !e.success() {
        bail!("{name} failed ({})\n{}", e.describe(), tail(&log, 15));
    }
    Ok(Outcome {
        secs: e.at.duration_since(t0).as_secs_f64(),
        wire: None,
        rss_send: e.maxrss_kib,
        rss_recv: None,
        rss_stunnel: None,
        cpu_send: e.cpu,
        cpu_recv: None,
        node_busy: None,
        cpu_proxy: None,
        cpu_slowfs: None,
        flush: None,
    })
}

/// Peak RSS (KiB) that any child started by this process starts from: that
/// of `true`, spawned the same way as the measured tools.
pub fn rss_floor(work: &Path) -> Result<u64> {
    let log = work.join("true.log");
    let mut p = Proc::spawn("true", &mut Command::new("true"), &log)?;
    Ok(wait_all(&mut [&mut p], Duration::from_secs(10))?
        .remove(0)
        .maxrss_kib)
}

/// Find a program on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// First line of `prog ARGS` (stdout and stderr), for the report header.
pub fn version_line(prog: &Path, args: &[&str], grep: &str) -> String {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines()
                .find(|l| l.contains(grep))
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
