//! Helpers shared by the integration tests: run the real `mover` binary,
//! build source trees with every kind of entry, and compare two trees byte
//! for byte and metadata for metadata.
#![allow(dead_code)] // each test binary uses a different subset

pub mod peer;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

// ---- processes: certificates, a receiver, senders ----

/// A port nothing listens on now and that no other test of this process
/// was given: tests run in parallel, and the kernel may hand a port just
/// released by one test's probe to another's, which would then reach the
/// first test's receiver.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

pub fn certs(dir: &Path, clients: &[&str]) {
    let mut cmd = mover();
    cmd.args(["certs", "--out"]).arg(dir);
    cmd.args([
        "--server-san",
        "localhost",
        "--server-san",
        "route.apps.example.test",
    ]);
    for c in clients {
        cmd.args(["--client", c]);
    }
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 0, "mover certs: {}", stderr(&out));
}

pub struct Receiver(pub Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mover receive` on 127.0.0.1:`port` with the server certificate of
/// `pki`, serving `volumes`, with `extra` arguments.
pub fn receive_command(
    pki: &Path,
    port: u16,
    volumes: &[(&str, &Path)],
    extra: &[&str],
) -> Command {
    let mut cmd = mover();
    cmd.arg("receive")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--cert")
        .arg(pki.join("server.crt"))
        .arg("--key")
        .arg(pki.join("server.key"))
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .args(extra);
    for (name, path) in volumes {
        cmd.arg("--volume")
            .arg(format!("{name}={}", path.display()));
    }
    cmd
}

pub fn receive(pki: &Path, port: u16, volumes: &[(&str, &Path)], extra: &[&str]) -> Receiver {
    let mut cmd = receive_command(pki, port, volumes, extra);
    cmd.stdout(Stdio::null())
        // A log file rather than a pipe nobody reads (which would block the
        // receiver once full); it sits beside the test's certificates.
        .stderr(std::fs::File::create(pki.with_file_name(format!("receiver-{port}.log"))).unwrap());
    let child = Receiver(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "receiver did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

pub fn send(
    pki: &Path,
    client: &str,
    src: &Path,
    port: u16,
    volume: &str,
    extra: &[&str],
) -> Command {
    let mut cmd = mover();
    cmd.arg("send")
        .arg(src)
        .args(["--volume", volume])
        .arg("--cert")
        .arg(pki.join(format!("{client}.crt")))
        .arg("--key")
        .arg(pki.join(format!("{client}.key")))
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .args(extra);
    // By IP with an explicit server name, or by the name the certificate has.
    let host = if extra.contains(&"--server-name") {
        "127.0.0.1"
    } else {
        "localhost"
    };
    cmd.args(["--connect", &format!("{host}:{port}")]);
    if !extra.contains(&"--progress") {
        cmd.args(["--progress", "json"]);
    }
    cmd
}

// ---- a TCP proxy that cuts or slows connections ----

/// Forwards connections on a free port to `target`; the first connection is
/// cut (both directions) once `cut_after` bytes went from client to server.
/// Returns the proxy's port and a count of connections it accepted.
pub fn cutting_proxy(target: u16, cut_after: u64) -> (u16, Arc<AtomicUsize>) {
    proxy(target, cut_after, None)
}

pub fn proxy(target: u16, cut_first_after: u64, rate: Option<u64>) -> (u16, Arc<AtomicUsize>) {
    proxy_cutting(target, 0, cut_first_after, rate)
}

/// Like [`proxy`], cutting the connection accepted `nth` (from 0) instead
/// of the first.
pub fn proxy_cutting(
    target: u16,
    nth: usize,
    cut_after: u64,
    rate: Option<u64>,
) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let cut = count.fetch_add(1, Ordering::SeqCst) == nth;
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                return;
            };
            let limit = if cut { cut_after } else { u64::MAX };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || pump(client, server, limit, rate));
            thread::spawn(move || pump(s2, c2, u64::MAX, None));
        }
    });
    (port, accepted)
}

/// Copies `from` to `to` until EOF or `limit` bytes (at most `rate` bytes a
/// second), then cuts both.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: u64, rate: Option<u64>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut moved = 0u64;
    let started = std::time::Instant::now();
    while moved < limit {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n.min((limit - moved) as usize),
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        moved += n as u64;
        if let Some(rate) = rate {
            let due = std::time::Duration::from_secs_f64(moved as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                thread::sleep(wait);
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Makes the certificates in `pki` readable by anyone, for an end run as
/// another user ([`as_nobody`]).
pub fn share_pki(pki: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in fs::read_dir(pki).unwrap() {
        fs::set_permissions(entry.unwrap().path(), fs::Permissions::from_mode(0o644)).unwrap();
    }
    fs::set_permissions(pki, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `cmd` as nobody (65534:65534, no other groups); needs root.
pub fn as_nobody(cmd: &Command) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .output()
        .unwrap()
}

pub fn mover() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mover"))
}

/// Runs `mover` with `args`, returning its output (never panics on a
/// non-zero exit: callers assert on the code).
pub fn run(args: &[&OsStr]) -> Output {
    mover().args(args).output().expect("spawn mover")
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `summary` event from `--progress json` output.
pub fn summary(out: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in output; stderr: {}", stderr(out)))
}

/// `mover sync SRC DST --progress json [extra]`, whatever its exit code.
pub fn sync_json(src: &Path, dst: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![OsStr::new("sync"), src.as_os_str(), dst.as_os_str()];
    args.extend([OsStr::new("--progress"), OsStr::new("json")]);
    args.extend(extra.iter().map(|s| OsStr::new(*s)));
    run(&args)
}

/// [`sync_json`], asserting exit code 0; returns the summary.
pub fn sync_ok(src: &Path, dst: &Path, extra: &[&str]) -> serde_json::Value {
    let out = sync_json(src, dst, extra);
    assert_eq!(code(&out), 0, "mover sync failed: {}", stderr(&out));
    summary(&out)
}

/// A temporary directory in memory (`/dev/shm`) where there is one, for
/// tests that write many or large files.
pub fn memory_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    tempfile::tempdir_in(if shm.is_dir() { shm } else { Path::new("/tmp") }).unwrap()
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};
    let ts = Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).is_ok()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every difference between two trees, as readable lines; empty when the
/// destination is an exact copy (content, type, mode, owner, mtime with
/// nanoseconds, symlink targets, hard-link structure, holes, xattrs).
pub fn differences(src: &Path, dst: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    let src_entries = list(src);
    let dst_entries = list(dst);
    for rel in dst_entries.keys() {
        if !src_entries.contains_key(rel) {
            diffs.push(format!("{}: only in destination", rel.display()));
        }
    }
    let mut src_links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dst_links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for (rel, s) in &src_entries {
        let Some(d) = dst_entries.get(rel) else {
            diffs.push(format!("{}: missing in destination", rel.display()));
            continue;
        };
        let at = rel.display();
        let (sp, dp) = (src.join(rel), dst.join(rel));
        if s.file_type() != d.file_type() {
            diffs.push(format!(
                "{at}: type {:?} vs {:?}",
                s.file_type(),
                d.file_type()
            ));
            continue;
        }
        let ft = s.file_type();
        if !ft.is_symlink() && s.mode() & 0o7777 != d.mode() & 0o7777 {
            diffs.push(format!(
                "{at}: mode {:o} vs {:o}",
                s.mode() & 0o7777,
                d.mode() & 0o7777
            ));
        }
        if is_root() && (s.uid(), s.gid()) != (d.uid(), d.gid()) {
            diffs.push(format!(
                "{at}: owner {}:{} vs {}:{}",
                s.uid(),
                s.gid(),
                d.uid(),
                d.gid()
            ));
        }
        if (s.mtime(), s.mtime_nsec()) != (d.mtime(), d.mtime_nsec()) {
            diffs.push(format!(
                "{at}: mtime {}.{:09} vs {}.{:09}",
                s.mtime(),
                s.mtime_nsec(),
                d.mtime(),
                d.mtime_nsec()
            ));
        }
        if ft.is_file() {
            if s.len() != d.len() {
                diffs.push(format!("{at}: size {} vs {}", s.len(), d.len()));
            } else if !same_content(&sp, &dp) {
                diffs.push(format!("{at}: content differs"));
            }
            // A hole in the source must not be filled in the copy.
            if s.blocks() < s.len() / 512 && d.blocks() > s.blocks() + 64 {
                diffs.push(format!(
                    "{at}: sparse source ({} blocks) copied dense ({} blocks)",
                    s.blocks(),
                    d.blocks()
                ));
            }
            if s.nlink() > 1 {
                let first_src = src_links
                    .entry((s.dev(), s.ino()))
                    .or_insert_with(|| rel.clone())
                    .clone();
                let first_dst = dst_links
                    .entry((d.dev(), d.ino()))
                    .or_insert_with(|| rel.clone())
                    .clone();
                if first_src != first_dst {
                    diffs.push(format!(
                        "{at}: hard link to {} in source but to {} in destination",
                        first_src.display(),
                        first_dst.display()
                    ));
                }
            }
        }
        if ft.is_symlink() && fs::read_link(&sp).ok() != fs::read_link(&dp).ok() {
            diffs.push(format!("{at}: symlink target differs"));
        }
        if (ft.is_char_device() || ft.is_block_device()) && s.rdev() != d.rdev() {
            diffs.push(format!("{at}: device number differs"));
        }
        if !ft.is_symlink() && xattrs(&sp) != xattrs(&dp) {
            diffs.push(format!(
                "{at}: xattrs {:?} vs {:?}",
                xattrs(&sp),
                xattrs(&dp)
            ));
        }
    }
    diffs
}

pub fn assert_same_tree(src: &Path, dst: &Path) {
    let diffs = differences(src, dst);
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

/// lstat of every entry below `root` (and `root` itself as ""), by path.
fn list(root: &Path) -> std::collections::BTreeMap<PathBuf, fs::Metadata> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .map(|e| e.expect("walk"))
        .map(|e| {
            let rel = e.path().strip_prefix(root).expect("prefix").to_path_buf();
            (rel, fs::symlink_metadata(e.path()).expect("lstat"))
        })
        .collect()
}

fn same_content(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        fs::File::open(a).expect("open"),
        fs::File::open(b).expect("open"),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
    fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]).expect("read") {
                0 => break,
                k => n += k,
            }
        }
        n
    }
}

/// Extended attributes (including POSIX ACLs) of a non-symlink, sorted.
pub fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 64 * 1024];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names) else {
        return Vec::new();
    };
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .filter(|n| !n.starts_with(b"security."))
        .map(|name| {
            let mut value = vec![0u8; 64 * 1024];
            let len = rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut value).unwrap_or(0);
            value.truncate(len);
            (name.to_vec(), value)
        })
        .collect();
    out.sort();
    out
}
