//! Opening objects below the source root without ever leaving it.
//!
//! The source is a live volume: while the sender walks it, an application
//! may rename directories or put a symlink where a directory was. So nothing
//! below the root is opened by its full path (the kernel would follow a
//! symlink in the middle of it): directories are opened one component at a
//! time from an open ancestor with `O_NOFOLLOW|O_DIRECTORY`, and what is
//! opened is checked to be the object the walk listed (device and inode).
//! A swap makes the object count as vanished; it is never read from
//! wherever the swapped-in symlink points.

use crate::entry::RelPath;
use rustix::fs::{self as rfs, Mode, OFlags, Stat};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Device and inode: what tells an object from another put in its place.
pub type Identity = (u64, u64);

pub fn identity(st: &Stat) -> Identity {
    (st.st_dev, st.st_ino)
}

/// Flags to open a directory to list it. Below the root a symlink is never
/// followed (it is listed as a link); the root itself may be one.
pub fn dir_flags(follow: bool) -> OFlags {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if follow {
        flags
    } else {
        flags | OFlags::NOFOLLOW
    }
}

/// Opens the directory `name` in `parent`, failing (`ELOOP`, `ENOTDIR`)
/// rather than following a symlink put in its place.
pub fn open_subdir(parent: impl AsFd, name: impl rustix::path::Arg) -> io::Result<OwnedFd> {
    Ok(rfs::openat(parent, name, dir_flags(false), Mode::empty())?)
}

/// Fails with `NotFound` unless `fd` is the object `id`: the name it was
/// opened by now names another one.
pub fn check_identity(fd: impl AsFd, id: Identity) -> io::Result<()> {
    if identity(&rfs::fstat(fd)?) == id {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "replaced by another object since it was listed",
        ))
    }
}

/// Whether `e` means that the object was removed or replaced since it was
/// listed (a live volume changing, not an error): gone, a symlink where a
/// directory was, a file where a directory was, or another object.
pub fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
}

/// Opens the regular files the walk listed, for the data thread: from the
/// source root down, one component at a time. The directory of the last
/// file stays open, since consecutive files share it or lie below it.
#[derive(Default)]
pub struct Files {
    last: Option<(RelPath, OwnedFd)>,
}

impl Files {
    /// Opens `rel` below `root` to read it, never through a symlink and
    /// never blocking on a FIFO put in its place. The caller checks that
    /// it is the file listed ([`check_identity`]).
    pub fn open(&mut self, root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<File> {
        let (dir, name) = rel
            .split_last()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the root is no file"))?;
        let dir = if dir.is_root() {
            root
        } else {
            self.dir(root, dir)?
        };
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        Ok(File::from(rfs::openat(dir, name, flags, Mode::empty())?))
    }

    /// The open directory `dir` (not the root), from the cached one when
    /// `dir` is it or lies below it, else from `root`.
    fn dir(&mut self, root: BorrowedFd<'_>, dir: RelPath) -> io::Result<BorrowedFd<'_>> {
        if self.last.as_ref().is_none_or(|(path, _)| *path != dir) {
            let (base, depth) = match &self.last {
                Some((path, fd)) if dir.starts_with(path) => {
                    (fd.as_fd(), path.components().count())
                }
                _ => (root, 0),
            };
            let mut opened: Option<OwnedFd> = None;
            for name in dir.components().skip(depth) {
                let parent = opened.as_ref().map_or(base, |fd| fd.as_fd());
                opened = Some(open_subdir(parent, name)?);
            }
            let fd = opened.expect("a directory below the root has components");
            self.last = Some((dir, fd));
        }
        Ok(self.last.as_ref().expect("cached above").1.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    fn root(path: &Path) -> OwnedFd {
        rfs::open(path, dir_flags(true), Mode::empty()).unwrap()
    }

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s.as_bytes()).unwrap()
    }

    fn read(mut file: File) -> String {
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text
    }

    /// A source `src/a/b/f` and, outside it, `outside/b/f` holding a secret.
    fn scene() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("a/b/f"), "public").unwrap();
        fs::write(src.join("a/b/g"), "public too").unwrap();
        fs::create_dir_all(tmp.path().join("outside/b")).unwrap();
        fs::write(tmp.path().join("outside/b/f"), "secret").unwrap();
        fs::write(tmp.path().join("outside/b/g"), "secret").unwrap();
        (tmp, src)
    }

    #[test]
    fn files_open_below_the_root_and_reuse_the_last_directory() {
        let (_tmp, src) = scene();
        fs::create_dir(src.join("a/b/c")).unwrap();
        fs::write(src.join("a/b/c/h"), "deeper").unwrap();
        fs::write(src.join("top"), "top").unwrap();
        let root = root(&src);
        let mut files = Files::default();
        assert_eq!(
            read(files.open(root.as_fd(), &rel("a/b/f")).unwrap()),
            "public"
        );
        assert_eq!(
            read(files.open(root.as_fd(), &rel("a/b/c/h")).unwrap()),
            "deeper"
        );
        assert_eq!(read(files.open(root.as_fd(), &rel("top")).unwrap()), "top");
        assert_eq!(
            read(files.open(root.as_fd(), &rel("a/b/g")).unwrap()),
            "public too"
        );
        let missing = files.open(root.as_fd(), &rel("a/nope/x")).unwrap_err();
        assert!(is_gone(&missing), "{missing}");
    }

    /// A middle directory swapped for a symlink to outside the source: the
    /// open fails as "gone" instead of reading the secret through it.
    #[test]
    fn a_symlink_swapped_in_for_a_directory_is_never_followed() {
        let (tmp, src) = scene();
        let root = root(&src);
        fs::rename(src.join("a"), tmp.path().join("moved")).unwrap();
        symlink(tmp.path().join("outside"), src.join("a")).unwrap();
        // What an open by full path would have read.
        assert_eq!(fs::read_to_string(src.join("a/b/f")).unwrap(), "secret");

        let mut files = Files::default();
        let e = files.open(root.as_fd(), &rel("a/b/f")).unwrap_err();
        // ENOTDIR: `O_DIRECTORY|O_NOFOLLOW` on a symlink.
        assert!(is_gone(&e), "{e}");

        // The same at the last component: a symlink where the file was.
        fs::remove_file(src.join("a")).unwrap();
        fs::create_dir_all(src.join("a/b")).unwrap();
        symlink(tmp.path().join("outside/b/f"), src.join("a/b/f")).unwrap();
        let e = files.open(root.as_fd(), &rel("a/b/f")).unwrap_err();
        assert!(is_gone(&e), "{e}");
    }

    #[test]
    fn a_directory_replaced_by_another_is_told_apart() {
        let (tmp, src) = scene();
        let root = root(&src);
        let id = identity(&rfs::stat(src.join("a")).unwrap());
        let a = open_subdir(&root, "a").unwrap();
        check_identity(&a, id).unwrap();

        fs::rename(src.join("a"), tmp.path().join("moved")).unwrap();
        fs::create_dir(src.join("a")).unwrap();
        let again = open_subdir(&root, "a").unwrap();
        let e = check_identity(&again, id).unwrap_err();
        assert!(is_gone(&e), "{e}");

        fs::remove_dir(src.join("a")).unwrap();
        fs::write(src.join("a"), "a file now").unwrap();
        let e = open_subdir(&root, "a").unwrap_err();
        assert!(is_gone(&e), "{e}");
    }
}
