//! Reading variable-length values from the kernel (xattr name lists and
//! values), which both the sender and the receiver do.

use rustix::fs as rfs;
use rustix::io::Errno;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU8, Ordering};

/// Reads a variable-length kernel value (xattr list or value), retrying when it
/// grows between the size query and the read.
pub(crate) fn read_sized(
    query: impl Fn() -> Result<usize, Errno>,
    fetch: impl Fn(&mut [u8]) -> Result<usize, Errno>,
) -> Result<Vec<u8>, Errno> {
    for _ in 0..8 {
        let size = query()?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match fetch(&mut buf) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}

/// An object named by an open directory and a name in it, for reading its
/// extended attributes without opening it (so symlinks, FIFOs and files the
/// caller may not read work too) and without following a symlink, neither
/// `name` itself nor one swapped into the directory's own path. The name
/// `.` means the directory itself.
///
/// Linux 6.13 and later read them in one call relative to the directory
/// (`listxattrat`, `getxattrat`); older kernels go through
/// `/proc/self/fd/N/name` with the `l*xattr` calls, which reaches the
/// directory through its descriptor too but costs a walk through procfs
/// (on a tree of small files, most of the time an unchanged resync takes).
pub(crate) struct AtPath<'a> {
    dir: BorrowedFd<'a>,
    name: CString,
}

/// Whether this kernel has the `*xattrat` calls: unknown, yes or no.
static AT_CALLS: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const PRESENT: u8 = 1;
const ABSENT: u8 = 2;

/// The syscall numbers of `getxattrat` and `listxattrat`, the same on
/// every architecture (the unified table of Linux 6.13).
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;

/// `struct xattr_args` of `getxattrat`.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

impl<'a> AtPath<'a> {
    /// Fails only for a name with a NUL byte, which no directory holds.
    pub fn new(dir: BorrowedFd<'a>, name: &[u8]) -> io::Result<Self> {
        let name = CString::new(name).map_err(io::Error::from)?;
        Ok(AtPath { dir, name })
    }

    /// The attribute names, each followed by a NUL byte.
    pub fn list_xattrs(&self) -> Result<Vec<u8>, Errno> {
        if AT_CALLS.load(Ordering::Relaxed) != ABSENT {
            match read_sized(|| self.list_at(&mut []), |buf| self.list_at(buf)) {
                Err(Errno::NOSYS) => AT_CALLS.store(ABSENT, Ordering::Relaxed),
                done => {
                    AT_CALLS.store(PRESENT, Ordering::Relaxed);
                    return done;
                }
            }
        }
        self.list_via_proc()
    }

    fn list_via_proc(&self) -> Result<Vec<u8>, Errno> {
        let path = self.proc_path();
        read_sized(
            || rfs::llistxattr_query(&path),
            |buf| rfs::llistxattr(&path, buf),
        )
    }

    pub fn get_xattr(&self, name: &[u8]) -> Result<Vec<u8>, Errno> {
        if AT_CALLS.load(Ordering::Relaxed) == PRESENT {
            let name = CString::new(name).map_err(|_| Errno::INVAL)?;
            return read_sized(
                || self.get_at(&name, &mut []),
                |buf| self.get_at(&name, buf),
            );
        }
        self.get_via_proc(name)
    }

    fn get_via_proc(&self, name: &[u8]) -> Result<Vec<u8>, Errno> {
        let path = self.proc_path();
        read_sized(
            || rfs::lgetxattr_query(&path, name),
            |buf| rfs::lgetxattr(&path, name, buf),
        )
    }

    fn proc_path(&self) -> CString {
        let mut path = format!("/proc/self/fd/{}/", self.dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(self.name.as_bytes());
        CString::new(path).unwrap_or_default()
    }

    /// `listxattrat(dir, name, AT_SYMLINK_NOFOLLOW, buf)`; an empty `buf`
    /// asks for the size.
    fn list_at(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        // SAFETY: the directory descriptor is borrowed for 'a, `name` is a
        // NUL-terminated string we own, and the kernel writes at most
        // `buf.len()` bytes into `buf` (none when it is empty and null).
        let ret = unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                if buf.is_empty() {
                    std::ptr::null_mut()
                } else {
                    buf.as_mut_ptr()
                },
                buf.len(),
            )
        };
        syscall_result(ret)
    }

    /// `getxattrat(dir, name, AT_SYMLINK_NOFOLLOW, attr, buf)`; an empty
    /// `buf` asks for the size.
    fn get_at(&self, attr: &CString, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut args = XattrArgs {
            value: if buf.is_empty() {
                0
            } else {
                buf.as_mut_ptr() as u64
            },
            size: u32::try_from(buf.len()).map_err(|_| Errno::RANGE)?,
            flags: 0,
        };
        // SAFETY: as in `list_at`; `args` is a live `struct xattr_args` of
        // the size passed, and its `value` points at `buf` (or is null
        // when `size` is 0), which the kernel fills up to `size` bytes.
        let ret = unsafe {
            libc::syscall(
                SYS_GETXATTRAT,
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                attr.as_ptr(),
                &mut args as *mut XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        };
        syscall_result(ret)
    }
}

fn syscall_result(ret: libc::c_long) -> Result<usize, Errno> {
    if ret < 0 {
        let raw = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        Err(Errno::from_raw_os_error(raw))
    } else {
        Ok(ret as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Both ways of reading (the `*xattrat` calls where the kernel has
    /// them, and `/proc`) see the same attributes, of a file, of a symlink
    /// (not its target) and of the directory itself.
    #[test]
    fn both_ways_read_the_same_attributes() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"").unwrap();
        if rfs::setxattr(&file, "user.a", b"1", rfs::XattrFlags::empty()).is_err() {
            println!("NOTE: not checked here: no user xattrs on this filesystem");
            return;
        }
        rfs::setxattr(&file, "user.bb", b"22", rfs::XattrFlags::empty()).unwrap();
        std::os::unix::fs::symlink("f", tmp.path().join("l")).unwrap();
        let dir = std::fs::File::open(tmp.path()).unwrap();
        for name in [&b"f"[..], b"l", b"."] {
            let at = AtPath::new(dir.as_fd(), name).unwrap();
            let listed = at.list_xattrs();
            assert_eq!(listed, at.list_via_proc(), "{name:?}");
            if name == b"f" {
                assert_eq!(listed.unwrap(), b"user.a\0user.bb\0");
                assert_eq!(at.get_xattr(b"user.bb").unwrap(), b"22");
                assert_eq!(at.get_via_proc(b"user.bb").unwrap(), b"22");
                assert_eq!(at.get_xattr(b"user.none"), Err(Errno::NODATA));
            }
        }
        let missing = AtPath::new(dir.as_fd(), b"missing").unwrap();
        assert_eq!(missing.list_xattrs(), Err(Errno::NOENT));
    }
}
