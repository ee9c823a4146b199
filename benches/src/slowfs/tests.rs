//! slowfs mounted for real on a temporary directory: what is done
//! through it lands on the backing directory, errors come back as the
//! same errno, one request costs the delay and independent ones overlap.
//! Skipped (saying why) without /dev/fuse, fusermount3 or root.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, RenameFlags, Timespec, Timestamps, CWD};

use super::{detach, mount_session};

/// slowfs on `DIR/mnt` over `DIR/backing`, unmounted and removed when
/// dropped.
struct Mounted {
    dir: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl Mounted {
    /// None (and a line saying why) where FUSE cannot be mounted here.
    fn new(name: &str, delay: Duration) -> Option<Mounted> {
        let missing = if !Path::new("/dev/fuse").exists() {
            Some("no /dev/fuse")
        } else if crate::run::which("fusermount3").is_none() {
            Some("no fusermount3")
        } else if rustix::process::geteuid().as_raw() != 0 {
            Some("not root (chown and device nodes need it)")
        } else {
            None
        };
        if let Some(why) = missing {
            eprintln!("slowfs test {name} skipped: {why}");
            return None;
        }
        let tmp = Path::new("/dev/shm");
        let tmp = if tmp.is_dir() {
            tmp.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tmp.join(format!("slowfs-test-{}-{name}", std::process::id()));
        // Removed again by its Drop, should mounting fail.
        let mut m = Mounted { dir, session: None };
        fs::create_dir_all(m.backing()).unwrap();
        fs::create_dir_all(m.mnt()).unwrap();
        let s = mount_session(&m.backing(), &m.mnt(), delay).unwrap();
        m.session = Some(s.spawn().unwrap());
        Some(m)
    }

    fn backing(&self) -> PathBuf {
        self.dir.join("backing")
    }

    fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if s.umount_and_join().is_err() {
                detach(&self.mnt());
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn errno_of(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn operations_pass_through_to_the_backing_directory() {
    let Some(m) = Mounted::new("ops", Duration::from_millis(1)) else {
        return;
    };
    let (mnt, back) = (m.mnt(), m.backing());
    let (at, bt) = (|p: &str| mnt.join(p), |p: &str| back.join(p));

    // Create, write, read.
    fs::write(at("a"), b"hello").unwrap();
    assert_eq!(fs::read(bt("a")).unwrap(), b"hello");
    assert_eq!(fs::read(at("a")).unwrap(), b"hello");
    assert_eq!(errno_of(fs::read(at("none")).unwrap_err()), libc::ENOENT);

    // mkdir, rmdir of a non-empty directory fails as on the backing fs.
    fs::create_dir(at("d")).unwrap();
    fs::write(at("d/f"), b"").unwrap();
    assert!(bt("d/f").is_file());
    let e = fs::remove_dir(at("d")).unwrap_err();
    assert_eq!(errno_of(e), libc::ENOTEMPTY);
    fs::remove_file(at("d/f")).unwrap();
    fs::remove_dir(at("d")).unwrap();
    assert!(!bt("d").exists());

    // rename with NOREPLACE and EXCHANGE.
    fs::write(at("x"), b"x").unwrap();
    fs::write(at("y"), b"y").unwrap();
    let rename = |a: &str, b: &str, f| rfs::renameat_with(CWD, at(a), CWD, at(b), f);
    assert_eq!(
        rename("x", "y", RenameFlags::NOREPLACE),
        Err(rustix::io::Errno::EXIST)
    );
    rename("x", "z", RenameFlags::NOREPLACE).unwrap();
    assert!(!bt("x").exists());
    rename("z", "y", RenameFlags::EXCHANGE).unwrap();
    assert_eq!(fs::read(bt("z")).unwrap(), b"y");
    assert_eq!(fs::read(bt("y")).unwrap(), b"x");

    // A hard link, still one inode after one of its names is renamed.
    fs::hard_link(at("y"), at("y2")).unwrap();
    let (b1, b2) = (
        fs::metadata(bt("y")).unwrap(),
        fs::metadata(bt("y2")).unwrap(),
    );
    assert_eq!((b1.ino(), b1.nlink()), (b2.ino(), 2));
    fs::rename(at("y"), at("y3")).unwrap();
    let (m2, m3) = (
        fs::metadata(at("y2")).unwrap(),
        fs::metadata(at("y3")).unwrap(),
    );
    assert_eq!((m2.ino(), m2.nlink()), (m3.ino(), 2));
    fs::write(at("y2"), b"linked").unwrap();
    assert_eq!(fs::read(at("y3")).unwrap(), b"linked");
    assert_eq!(fs::read(bt("y3")).unwrap(), b"linked");

    // Owner, then mode (chown clears setuid), then times to the nanosecond.
    std::os::unix::fs::chown(at("y3"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(at("y3"), fs::Permissions::from_mode(0o4751)).unwrap();
    let b = fs::metadata(bt("y3")).unwrap();
    assert_eq!((b.uid(), b.gid(), b.mode() & 0o7777), (1234, 5678, 0o4751));
    let ts = |s, n| Timespec {
        tv_sec: s,
        tv_nsec: n,
    };
    let times = Timestamps {
        last_access: ts(100, 5),
        last_modification: ts(1_600_000_000, 123_456_789),
    };
    rfs::utimensat(CWD, at("y3"), &times, AtFlags::empty()).unwrap();
    let b = fs::metadata(bt("y3")).unwrap();
    assert_eq!((b.mtime(), b.mtime_nsec()), (1_600_000_000, 123_456_789));
    assert_eq!((b.atime(), b.atime_nsec()), (100, 5));
    // UTIME_OMIT keeps the access time, UTIME_NOW sets the modification's.
    let omit_now = Timestamps {
        last_access: ts(0, rfs::UTIME_OMIT),
        last_modification: ts(0, rfs::UTIME_NOW),
    };
    rfs::utimensat(CWD, at("y3"), &omit_now, AtFlags::empty()).unwrap();
    let b = fs::metadata(bt("y3")).unwrap();
    assert_eq!((b.atime(), b.atime_nsec()), (100, 5));
    assert!(b.mtime() > 1_600_000_000);

    // A symlink: its target, its own owner and times.
    symlink("some/target", at("s")).unwrap();
    assert_eq!(fs::read_link(bt("s")).unwrap(), Path::new("some/target"));
    assert_eq!(fs::read_link(at("s")).unwrap(), Path::new("some/target"));
    std::os::unix::fs::lchown(at("s"), Some(42), Some(43)).unwrap();
    rfs::utimensat(CWD, at("s"), &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    let b = fs::symlink_metadata(bt("s")).unwrap();
    assert_eq!((b.uid(), b.gid(), b.mtime_nsec()), (42, 43, 123_456_789));

    // xattrs: set and list through the mount, read on the backing fs.
    rfs::setxattr(at("a"), "user.k", b"v", rfs::XattrFlags::empty()).unwrap();
    let mut buf = [0u8; 64];
    let n = rfs::getxattr(bt("a"), "user.k", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"v");
    let n = rfs::listxattr(at("a"), &mut buf[..]).unwrap();
    assert!(buf[..n].split(|&b| b == 0).any(|k| k == b"user.k"));
    rfs::removexattr(at("a"), "user.k").unwrap();
    assert_eq!(
        rfs::getxattr(bt("a"), "user.k", &mut buf[..]),
        Err(rustix::io::Errno::NODATA)
    );

    // A fifo and a device node, with its numbers.
    let mode = Mode::from_raw_mode(0o640);
    rfs::mknodat(CWD, at("fifo"), FileType::Fifo, mode, 0).unwrap();
    let dev = rfs::makedev(1, 3);
    rfs::mknodat(CWD, at("null"), FileType::CharacterDevice, mode, dev).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::metadata(bt("fifo")).unwrap().file_type().is_fifo());
    let b = fs::metadata(bt("null")).unwrap();
    assert!(b.file_type().is_char_device());
    assert_eq!((b.rdev(), b.mode() & 0o7777), (dev, 0o640));
    assert_eq!(fs::metadata(at("null")).unwrap().rdev(), dev);

    // Truncate, unlink.
    fs::OpenOptions::new()
        .write(true)
        .open(at("a"))
        .unwrap()
        .set_len(2)
        .unwrap();
    assert_eq!(fs::read(bt("a")).unwrap(), b"he");
    fs::remove_file(at("y2")).unwrap();
    assert!(!bt("y2").exists());
    assert_eq!(fs::metadata(bt("y3")).unwrap().nlink(), 1);

    // The listing holds every name, with . and ..
    let mut names: Vec<String> = fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "fifo", "null", "s", "y3", "z"]);
}

#[test]
fn one_request_costs_the_delay_and_independent_ones_overlap() {
    const L: Duration = Duration::from_millis(20);
    const N: usize = 16;
    let Some(m) = Mounted::new("overlap", L) else {
        return;
    };
    for i in 0..=N {
        fs::write(m.backing().join(format!("f{i}")), b"").unwrap();
    }
    // A stat of a name the kernel has not seen is at least one LOOKUP.
    let t = Instant::now();
    fs::metadata(m.mnt().join("f0")).unwrap();
    let one = t.elapsed();
    assert!(one >= L, "one stat took {one:?}, less than the delay {L:?}");

    let start = Arc::new(Barrier::new(N + 1));
    let threads: Vec<_> = (1..=N)
        .map(|i| {
            let (p, start) = (m.mnt().join(format!("f{i}")), start.clone());
            std::thread::spawn(move || {
                start.wait();
                fs::metadata(p).unwrap();
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for th in threads {
        th.join().unwrap();
    }
    let all = t.elapsed();
    // Serial they would take N * L; overlapping, about L. The bound is
    // generous, so a loaded machine does not fail it.
    assert!(
        all < L * (N as u32) / 2,
        "{N} concurrent stats took {all:?}: requests do not overlap"
    );
}
