//! The harness's side: the receiving node's destination as a slowfs
//! mount, for one two-node pass.
//!
//! The daemon emulates the storage server, not the receiving node, so it
//! runs outside both namespaces and off the receiving node's CPU: on a
//! CPU neither node uses if the machine has one, else on the sending
//! node's (on the usual two CPUs, where it then counts as that node's
//! other work). Its CPU seconds are reported apart. The kernel's share of
//! each request (the FUSE round trip in the caller's system call) is
//! charged to the calling tool, as an NFS client's is.

use std::cell::RefCell;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{detach, FUSE_SUPER_MAGIC, THREADS};
use crate::netns::{self, Nodes};
use crate::run::Proc;

/// A slowfs mount over a tmpfs backing directory, remounted afresh for
/// every new destination and unmounted when dropped.
pub struct Dest {
    backing: PathBuf,
    mount: PathBuf,
    delay_us: u32,
    /// CPUs the daemon may run on.
    cpus: Vec<usize>,
    log: PathBuf,
    daemon: RefCell<Option<Proc>>,
}

impl Dest {
    /// Mount slowfs with `delay_us` on `BASE/slowfs` over
    /// `BASE/slowfs-backing`, logging to `work`.
    pub fn new(base: &Path, delay_us: u32, nodes: &Nodes, work: &Path) -> Result<Dest> {
        let mount = base.join("slowfs");
        // A killed run may have left its mount behind.
        detach(&mount);
        let backing = base.join("slowfs-backing");
        for d in [&mount, &backing] {
            fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        let d = Dest {
            backing,
            mount,
            delay_us,
            cpus: daemon_cpus(nodes)?,
            log: work.join("slowfs.log"),
            daemon: RefCell::new(None),
        };
        d.start()?;
        Ok(d)
    }

    /// The destination directory, inside the mount.
    pub fn dst(&self) -> PathBuf {
        self.mount.join("dst")
    }

    /// One line for the report's topology.
    pub fn describe(&self) -> String {
        format!(
            "the receiving side's destination is a slowfs mount ({}: FUSE passthrough over \
             tmpfs, every request answered {} µs late, up to {THREADS} at once; attributes \
             cached 1 s, no writeback cache), its daemon outside both namespaces on CPU {:?}",
            self.mount.display(),
            self.delay_us,
            self.cpus
        )
    }

    /// Remove the destination: unmount, empty the backing directory and
    /// mount afresh, so the kernel keeps nothing cached of the old tree
    /// and the removal costs no round trips.
    pub fn reset(&self) -> Result<()> {
        self.stop();
        crate::gen::remove_tree(&self.backing)?;
        fs::create_dir(&self.backing)
            .with_context(|| format!("create {}", self.backing.display()))?;
        self.start()
    }

    /// CPU seconds the daemon has used so far.
    pub fn cpu(&self) -> Option<f64> {
        let pid = self.daemon.borrow().as_ref()?.pid;
        crate::cpustat::process_cpu(pid)
    }

    fn start(&self) -> Result<()> {
        let exe = std::env::current_exe().context("find the bench binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("slowfs")
            .arg("--backing")
            .arg(&self.backing)
            .arg("--mount")
            .arg(&self.mount)
            .arg("--delay-us")
            .arg(self.delay_us.to_string());
        let cpus = self.cpus.clone();
        // SAFETY: sched_setaffinity and prctl are plain system calls on a
        // stack value: async-signal-safe, no allocation.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                for &c in &cpus {
                    libc::CPU_SET(c, &mut set);
                }
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Unmount (on SIGTERM) should the bench die without
                // stopping it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut p = Proc::spawn("slowfs", &mut cmd, &self.log)?;
        wait_mounted(&mut p, &self.mount)?;
        *self.daemon.borrow_mut() = Some(p);
        Ok(())
    }

    /// Stop the daemon (it unmounts) and detach whatever is left.
    fn stop(&self) {
        if let Some(p) = self.daemon.borrow_mut().take() {
            match p.stop(libc::SIGTERM, Duration::from_secs(30)) {
                Ok(e) if e.success() => {}
                Ok(e) => eprintln!(
                    "bench: slowfs daemon {}\n{}",
                    e.describe(),
                    crate::run::tail(&self.log, 5)
                ),
                Err(e) => eprintln!("bench: stop the slowfs daemon: {e:#}"),
            }
        }
        detach(&self.mount);
    }
}

impl Drop for Dest {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CPUs for the daemon: those neither node uses, else all but the
/// receiving node's.
fn daemon_cpus(nodes: &Nodes) -> Result<Vec<usize>> {
    let all = netns::allowed_cpus()?;
    let (send, recv) = (nodes.send.cpu, nodes.recv.cpu);
    let free: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&c| c != send && c != recv)
        .collect();
    Ok(match free.is_empty() {
        true => all.into_iter().filter(|&c| c != recv).collect(),
        false => free,
    })
}

/// Wait until `mount` is a FUSE mount; fail if the daemon exits first.
fn wait_mounted(p: &mut Proc, mount: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ty = rustix::fs::statfs(mount).map(|s| s.f_type);
        if ty == Ok(FUSE_SUPER_MAGIC) {
            return Ok(());
        }
        if let Some(e) = p.try_wait()? {
            bail!(
                "slowfs exited ({}) before mounting {}\n{}",
                e.describe(),
                mount.display(),
                p.log_tail()
            );
        }
        if Instant::now() > deadline {
            bail!("slowfs did not mount {}\n{}", mount.display(), p.log_tail());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
