//! slowfs: network storage emulated with latency, for the two-node mode's
//! `--slowfs-us` passes.
//!
//! A receiver applies a volume one request at a time to its storage. On
//! network storage (NFS, CephFS) every create, setattr, rename, write or
//! close is a round trip to the server, so the number of files, not their
//! bytes, sets how long a sync of small files takes, and only requests
//! issued concurrently can hide the latency. slowfs is a FUSE passthrough
//! over a backing directory (on tmpfs) that answers each request after a
//! fixed delay, on [`THREADS`] threads at once: one request costs the
//! delay, independent requests overlap, as with a server of many threads
//! behind a link with that round trip.
//!
//! What it keeps from a local filesystem: every operation a sync uses
//! passes through to the backing directory with its errno, including
//! hard links, renames with RENAME_NOREPLACE and RENAME_EXCHANGE,
//! nanosecond times with UTIME_NOW and UTIME_OMIT, device nodes, xattrs
//! and POSIX ACLs (as system.posix_acl_* xattrs), fallocate,
//! SEEK_DATA/SEEK_HOLE and copy_file_range. The kernel checks permissions
//! itself (`default_permissions`) from the mode bits, as a local
//! filesystem would.
//!
//! What it models only roughly:
//! - attributes and entries are cached by the kernel for [`ops::TTL`],
//!   1 s (real NFS clients cache for seconds; 0 would make every stat a
//!   round trip, as `actimeo=0`);
//! - writes go through the FUSE page cache in write-through mode (no
//!   writeback cache), so each `write()` call is a round trip of at most
//!   1 MiB; an NFS client would pipeline them and commit at close;
//! - there is no READDIRPLUS: listing a directory and then stat-ing its
//!   entries costs a LOOKUP per entry that the kernel does not have cached;
//! - as with the Linux NFS client, the kernel holds a directory's lock
//!   across a create, mkdir, unlink or rename in it, so those serialise
//!   per directory however many appliers issue them; lookups and
//!   readdirs in one directory do run in parallel (FUSE_PARALLEL_DIROPS);
//! - FUSE's own cost (a context switch to the daemon and back, copying
//!   data through /dev/fuse) comes on top of the delay; with no delay it
//!   is what the pass measures against plain tmpfs;
//! - FUSE asks what NFS does not, and the other way round: the kernel's
//!   getxattr of security.capability before every write is answered
//!   without the delay (an NFS client never sends it), but a write's
//!   answer carries no attributes, so a stat after a write is a GETATTR
//!   round trip (NFS's WRITE returns them);
//! - new entries are created by the daemon (root) and then given to the
//!   caller's uid and gid, as a server without root squashing would;
//! - a symlink's own xattrs cannot be reached by the passthrough (see
//!   [`ops`]): it has none.
//!
//! The daemon is a hidden subcommand, `bench slowfs --backing DIR --mount
//! DIR --delay-us L` ([`serve`]); the harness's side is [`Dest`].

mod attr;
mod dest;
mod nodes;
mod ops;
#[cfg(test)]
mod tests;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use fuser::{Config, MountOption, Session};

pub use dest::Dest;
use ops::SlowFs;

/// Requests answered at once: as many as a server with this many threads
/// would, and more than any applier pool the bench runs issues.
pub const THREADS: usize = 64;

/// `statfs` type of a FUSE mount.
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Serve `backing` on `mount`, each request answered after `delay`, until
/// SIGTERM, SIGINT or SIGHUP; then unmount (lazily if the mount is still
/// in use, and fail saying so).
pub fn serve(backing: &Path, mount: &Path, delay: Duration) -> Result<()> {
    raise_nofile();
    // Blocked before any thread starts, so every thread inherits the mask
    // and the signals wait for `sigwait` below.
    let signals = block_signals();
    let session = mount_session(backing, mount, delay)?;
    let bg = session.spawn().context("start the slowfs session")?;
    let sig = wait_signal(&signals);
    eprintln!("slowfs: signal {sig}: unmounting {}", mount.display());
    bg.umount_and_join().or_else(|e| {
        detach(mount);
        Err(e).with_context(|| format!("unmount {} (detached lazily)", mount.display()))
    })
}

/// Mount slowfs over `backing` on `mount` (not serving yet).
fn mount_session(backing: &Path, mount: &Path, delay: Duration) -> Result<Session<SlowFs>> {
    let fs = SlowFs::new(backing, delay)
        .with_context(|| format!("open the backing directory {}", backing.display()))?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("slowfs".into()),
        MountOption::Subtype("slowfs".into()),
        MountOption::DefaultPermissions,
        MountOption::RW,
        MountOption::Dev,
        MountOption::Suid,
    ];
    config.n_threads = Some(THREADS);
    // Each thread reads requests from a descriptor of its own.
    config.clone_fd = true;
    Session::new(fs, mount, &config).with_context(|| {
        format!(
            "mount slowfs on {} (needs /dev/fuse, and root or fusermount3)",
            mount.display()
        )
    })
}

/// Detach whatever is mounted on `path` (lazily: it goes once unused);
/// nothing if nothing is.
pub fn detach(path: &Path) {
    if let Ok(p) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: a valid C string; failure (EINVAL: not a mount) is fine.
        unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Let the daemon hold a descriptor per node the kernel knows (one per
/// file and directory of a large volume): the soft limit up to the hard
/// one, and for root the hard one up to the kernel's maximum.
fn raise_nofile() {
    let max = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok());
    // SAFETY: rlimit is plain data, read and written by the kernel.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return;
        }
        if let Some(max) = max.filter(|&m| m > r.rlim_max) {
            let raised = libc::rlimit {
                rlim_cur: max,
                rlim_max: max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return;
            }
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, filled in by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: valid pointers; sigwait only fails for an invalid set.
    while unsafe { libc::sigwait(set, &mut sig) } != 0 {}
    sig
}
