//! What a file the receiver has just created in its work area already is,
//! so that giving it its metadata skips what is already so.
//!
//! Every new file needs its owner, extended attributes, mode and mtime. Set
//! blindly that is `fchown`, `flistxattr`, `fchmod` and `futimens` on every
//! file: on a tree of small files a large share of the receiver's system
//! calls, and on network storage (NFS, CephFS) each one a round trip to the
//! server. But a file this process creates with `O_EXCL` in the work area
//! (a directory it made) starts from a known state: the owner every file it
//! creates there gets, the permission bits it asked for less the umask, and
//! no attributes at all, provided the work area has no default ACL (which
//! would give the file an ACL and shape its mode). [`Creator`] learns that
//! owner from the session's first file (one `fstat`) and checks the rest
//! once; after that only what differs from the start is set.

use super::volume::MetaOptions;
use crate::entry::Meta;
use rustix::fs as rfs;
use rustix::io::Errno;
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

/// How files this process creates in one directory start out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creator {
    uid: u32,
    gid: u32,
    umask: u32,
}

/// A file known to hold exactly this owner and these permission bits and no
/// extended attributes, as created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fresh {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (never setuid, setgid or sticky).
    pub mode: u32,
}

/// The permission bits of a temporary whose final ones are not wanted at
/// creation: private while it is written.
pub const PRIVATE: u32 = 0o600;

impl Creator {
    /// Learns from `file`, just created with `O_EXCL` in `dir` asking for
    /// `perm`. None when anything but the owner and the umask shaped it: a
    /// default ACL on `dir`, an unknown umask, or a mode other than
    /// expected (a filesystem that decides modes itself).
    pub fn learn(dir: BorrowedFd<'_>, file: BorrowedFd<'_>, perm: u32) -> Option<Creator> {
        let umask = process_umask()?;
        match rfs::fgetxattr(dir, "system.posix_acl_default", &mut [0u8; 0][..]) {
            Err(Errno::NODATA | Errno::NOTSUP) => {}
            _ => return None,
        }
        let st = rfs::fstat(file).ok()?;
        (st.st_mode & 0o7777 == perm & !umask).then_some(Creator {
            uid: st.st_uid,
            gid: st.st_gid,
            umask,
        })
    }

    /// The permission bits to create a file that is to end up as `meta`
    /// with: its own when they are all it needs (no special bits, and the
    /// owner is already the one it gets), so `fchmod` can be skipped; else
    /// [`PRIVATE`], so a file is never more open while it is written (and
    /// owned by the receiver) than it will be. A mode that denies its owner
    /// reading or writing is also set only at the end: a non-root receiver
    /// must be able to reopen what a broken session kept of the file, to
    /// resume from it.
    pub fn perm_for(&self, meta: &Meta, opts: MetaOptions) -> u32 {
        let owner_right = !opts.owner || (meta.uid, meta.gid) == (self.uid, self.gid);
        match owner_right && meta.mode & 0o7000 == 0 && meta.mode & PRIVATE == PRIVATE {
            true => meta.mode & 0o777,
            false => PRIVATE,
        }
    }

    /// What a file created asking for `perm` is.
    pub fn fresh(&self, perm: u32) -> Fresh {
        Fresh {
            uid: self.uid,
            gid: self.gid,
            mode: perm & !self.umask,
        }
    }
}

/// This process's umask, read once from `/proc/self/status` (Linux 4.7+):
/// `umask(2)` can only read it by changing it, which would race with other
/// threads creating files. None where it cannot be read.
fn process_umask() -> Option<u32> {
    static UMASK: OnceLock<Option<u32>> = OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn meta(mode: u32, uid: u32, gid: u32) -> Meta {
        Meta {
            mode,
            uid,
            gid,
            mtime_sec: 0,
            mtime_nsec: 0,
            xattrs: Vec::new(),
        }
    }

    fn learn_in(dir: &std::path::Path) -> Option<Creator> {
        let d = std::fs::File::open(dir).unwrap();
        let f = rfs::openat(
            d.as_fd(),
            "first",
            rfs::OFlags::CREATE | rfs::OFlags::EXCL | rfs::OFlags::RDWR,
            rfs::Mode::from_raw_mode(PRIVATE),
        )
        .unwrap();
        Creator::learn(d.as_fd(), f.as_fd(), PRIVATE)
    }

    #[test]
    fn learns_the_owner_and_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let c = learn_in(tmp.path()).expect("a plain directory is predictable");
        let umask = process_umask().unwrap();
        assert_eq!(c.umask, umask);
        let (uid, gid) = (rustix::process::geteuid(), rustix::process::getegid());
        assert_eq!((c.uid, c.gid), (uid.as_raw(), gid.as_raw()));
        assert_eq!(c.fresh(0o644).mode, 0o644 & !umask);
    }

    #[test]
    fn special_bits_and_other_owners_are_created_private() {
        let c = Creator {
            uid: 0,
            gid: 0,
            umask: 0o022,
        };
        let owner = MetaOptions {
            owner: true,
            ..MetaOptions::default()
        };
        assert_eq!(c.perm_for(&meta(0o644, 0, 0), owner), 0o644);
        assert_eq!(c.perm_for(&meta(0o640, 1000, 0), owner), PRIVATE);
        assert_eq!(c.perm_for(&meta(0o640, 0, 5), owner), PRIVATE);
        assert_eq!(c.perm_for(&meta(0o4755, 0, 0), owner), PRIVATE);
        assert_eq!(c.perm_for(&meta(0o1777, 0, 0), owner), PRIVATE);
        assert_eq!(c.perm_for(&meta(0o444, 0, 0), owner), PRIVATE);
        assert_eq!(c.perm_for(&meta(0o200, 0, 0), owner), PRIVATE);
        assert_eq!(c.perm_for(&meta(0o700, 0, 0), owner), 0o700);
        // Not setting owners: the receiver's own are the final ones.
        let no_owner = MetaOptions::default();
        assert_eq!(c.perm_for(&meta(0o640, 1000, 5), no_owner), 0o640);
    }

    #[test]
    fn a_default_acl_makes_creation_unpredictable() {
        let tmp = tempfile::tempdir().unwrap();
        // user::rwx group::r-x other::--- as a default ACL (version 2).
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm) in [(0x01u16, 7u16), (0x04, 5), (0x20, 0)] {
            acl.extend(tag.to_le_bytes());
            acl.extend(perm.to_le_bytes());
            acl.extend(u32::MAX.to_le_bytes());
        }
        let set = rfs::setxattr(
            tmp.path(),
            "system.posix_acl_default",
            &acl,
            rfs::XattrFlags::empty(),
        );
        if set.is_err() {
            eprintln!("skipped: this filesystem takes no ACLs ({set:?})");
            return;
        }
        assert_eq!(learn_in(tmp.path()), None);
    }
}
