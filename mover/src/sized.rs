//! Reading variable-length values from the kernel (xattr name lists and
//! values), which both the sender and the receiver do.

use rustix::fs as rfs;
use rustix::io::Errno;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

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

/// An object named by an open directory and a name in it, for the
/// `l*xattr` calls, which take only paths. `/proc/self/fd/N/name` reaches
/// the directory through its descriptor, so no symlink swapped into the
/// directory's own path can redirect it, and the `l` calls do not follow
/// `name` itself. Nothing is opened: this works for symlinks, FIFOs and
/// files the caller may not read. The name `.` means the directory itself.
pub(crate) struct AtPath(CString);

impl AtPath {
    /// Fails only for a name with a NUL byte, which no directory holds.
    pub fn new(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Self> {
        let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(name);
        CString::new(path).map(AtPath).map_err(io::Error::from)
    }

    /// The attribute names, each followed by a NUL byte.
    pub fn list_xattrs(&self) -> Result<Vec<u8>, Errno> {
        read_sized(
            || rfs::llistxattr_query(&self.0),
            |buf| rfs::llistxattr(&self.0, buf),
        )
    }

    pub fn get_xattr(&self, name: &[u8]) -> Result<Vec<u8>, Errno> {
        read_sized(
            || rfs::lgetxattr_query(&self.0, name),
            |buf| rfs::lgetxattr(&self.0, name, buf),
        )
    }
}
