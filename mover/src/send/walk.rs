//! The sender's walk: lists the source tree depth-first with names sorted
//! bytewise (the order the receiver checks), turns every object into an
//! [`Entry`] and streams it out without waiting for answers.
//!
//! Each object is looked up relative to its directory's open descriptor
//! (`statat`, `readlinkat`), not by its full path: on a tree of small files
//! the walk is the sender's critical path, and resolving every path from
//! the root again costs more than the lookup itself.

use super::state::{Pending, Shared};
use crate::entry::{Entry, Kind, RelPath};
use crate::source::meta;
use crate::wire::io::Outbox;
use crate::wire::message::{FileId, ToReceiver};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Directory descriptors kept open down the current branch; deeper levels
/// close the highest ones, which are opened again (by path) on the way back.
const MAX_OPEN_DIRS: usize = 32;

/// Walks `root` and sends every entry, then `EndOfList`. Returns early (with
/// no error) if the session ends while it is still walking.
pub fn run(root: &Path, out: mpsc::Sender<Vec<ToReceiver>>, shared: &Shared) -> Result<(), String> {
    let mut out = Outbox::new(out);
    let fail = |e: io::Error| format!("source {}: {e}", root.display());
    let root_fd = open_dir(root, true).map_err(fail)?;
    let root_st = rfs::fstat(&root_fd).map_err(|e| fail(e.into()))?;
    if rfs::FileType::from_raw_mode(root_st.st_mode) != rfs::FileType::Directory {
        return Err(format!("source {} is not a directory", root.display()));
    }
    let root_meta = meta::read_meta(root, &root_st).map_err(fail)?;
    let root_entry = Entry {
        path: RelPath::root(),
        kind: Kind::Dir,
        meta: root_meta,
    };
    if out
        .push(ToReceiver::Entry {
            id: 0,
            entry: root_entry,
        })
        .is_err()
    {
        return Ok(());
    }
    shared.examined(0);

    let mut walk = Walk {
        out: &mut out,
        shared,
        next_id: 1,
        links: HashMap::new(),
        stack: Vec::new(),
    };
    if !walk.enter(Ok(root_fd), RelPath::root(), root.to_path_buf()) {
        return Ok(());
    }
    while let Some(level) = walk.stack.last_mut() {
        let Some(name) = level.names.next() else {
            walk.stack.pop();
            continue;
        };
        if !walk.entry(name) {
            return Ok(());
        }
    }
    let _ = walk.out.push(ToReceiver::EndOfList);
    let _ = walk.out.flush();
    Ok(())
}

/// One directory on the current branch of the walk.
struct Level {
    /// Open while this level is among the [`MAX_OPEN_DIRS`] deepest.
    fd: Option<OwnedFd>,
    rel: RelPath,
    path: PathBuf,
    /// Its entries not yet listed, in order.
    names: std::vec::IntoIter<CString>,
}

struct Walk<'a> {
    out: &'a mut Outbox<ToReceiver>,
    shared: &'a Shared,
    next_id: FileId,
    /// First path seen for each multiply-linked inode, to send the others as
    /// links. Holds only files with more than one link.
    links: HashMap<(u64, u64), RelPath>,
    stack: Vec<Level>,
}

impl Walk<'_> {
    /// Reads the directory `rel` (already listed), just opened, and makes it
    /// the current level. A directory that cannot be read is reported, and
    /// its contents on the receiver are kept, since absence from the list
    /// proves nothing; false once the session is over.
    fn enter(&mut self, opened: io::Result<OwnedFd>, rel: RelPath, path: PathBuf) -> bool {
        let listed = opened.and_then(|fd| read_names(&fd).map(|names| (fd, names)));
        let (fd, names) = match listed {
            Ok(listed) => listed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.vanished(&path),
            Err(e) => {
                self.shared
                    .error(format!("{}: cannot list: {e}", path.display()));
                return self.out.push(ToReceiver::KeepContents { dir: rel }).is_ok();
            }
        };
        let open = self.stack.iter().filter(|l| l.fd.is_some()).count();
        if open >= MAX_OPEN_DIRS {
            if let Some(oldest) = self.stack.iter_mut().find(|l| l.fd.is_some()) {
                oldest.fd = None;
            }
        }
        self.stack.push(Level {
            fd: Some(fd),
            rel,
            path,
            names: names.into_iter(),
        });
        true
    }

    /// Lists `name` of the current level; false once the session is over.
    fn entry(&mut self, name: CString) -> bool {
        let level = self.stack.last_mut().expect("a current level");
        let path = level
            .path
            .join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let rel = match level.rel.join(name.as_bytes()) {
            Ok(rel) => rel,
            Err(e) => {
                let dir = level.rel.clone();
                return self.unlisted(&path, dir, format!("cannot send path: {e}"));
            }
        };
        if level.fd.is_none() {
            match open_dir(&level.path, false) {
                Ok(fd) => level.fd = Some(fd),
                Err(e) => {
                    let dir = level.rel.clone();
                    return self.unlisted(&path, dir, e.to_string());
                }
            }
        }
        let dir = level.fd.as_ref().expect("opened above");
        let listed = rfs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io::Error::from)
            .and_then(|st| {
                let kind = meta::kind_of(&st, || meta::link_target(dir, &name))?;
                let entry_meta = meta::read_meta(&path, &st)?;
                Ok((st, kind, entry_meta))
            });
        let (st, kind, entry_meta) = match listed {
            Ok(listed) => listed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.vanished(&path),
            Err(e) => {
                let dir = level.rel.clone();
                return self.unlisted(&path, dir, e.to_string());
            }
        };
        let descend = (kind == Kind::Dir).then(|| {
            rfs::openat(dir, name.as_c_str(), dir_flags(false), Mode::empty())
                .map_err(io::Error::from)
        });
        let key = (st.st_dev, st.st_ino);
        let kind = match kind {
            Kind::File { .. } if st.st_nlink > 1 => match self.links.get(&key) {
                Some(first) => Kind::HardLink {
                    target: first.clone(),
                },
                None => {
                    self.links.insert(key, rel.clone());
                    kind
                }
            },
            kind => kind,
        };
        let mut id = 0;
        if let Kind::File { size, sparse } = kind {
            // Before waiting for a slot, send what is queued: the answers
            // that free slots are answers to those entries.
            if !self.shared.window.try_acquire()
                && (self.out.flush().is_err() || !self.shared.window.acquire())
            {
                return false;
            }
            id = self.next_id;
            self.next_id += 1;
            self.shared.pending().insert(
                id,
                Pending {
                    source: path.clone(),
                    size,
                    sparse,
                    mtime: (st.st_mtime, st.st_mtime_nsec as u32),
                    base: None,
                    scan: None,
                    aborted: false,
                },
            );
            self.shared.examined(size);
        } else {
            self.shared.examined(0);
        }
        let entry = Entry {
            path: rel.clone(),
            kind,
            meta: entry_meta,
        };
        if self.out.push(ToReceiver::Entry { id, entry }).is_err() {
            return false;
        }
        match descend {
            // A directory is listed before its contents.
            Some(opened) => self.enter(opened, rel, path),
            None => true,
        }
    }

    /// Counts an entry that disappeared while being listed (not an error:
    /// live volumes change); true, the walk goes on.
    fn vanished(&self, path: &Path) -> bool {
        self.shared
            .vanished(format!("{}: vanished before it was read", path.display()));
        true
    }

    /// Reports an entry that could not be listed and protects whatever the
    /// destination holds under that name by keeping its parent's contents.
    fn unlisted(&mut self, path: &Path, parent: RelPath, msg: String) -> bool {
        self.shared.error(format!("{}: {msg}", path.display()));
        self.out
            .push(ToReceiver::KeepContents { dir: parent })
            .is_ok()
    }
}

/// Opens a directory to list it. Below the root a symlink is never
/// followed (it is listed as a link); the root itself may be one.
fn open_dir(path: &Path, follow: bool) -> io::Result<OwnedFd> {
    Ok(rfs::open(path, dir_flags(follow), Mode::empty())?)
}

fn dir_flags(follow: bool) -> OFlags {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if follow {
        flags
    } else {
        flags | OFlags::NOFOLLOW
    }
}

/// The names in a directory, sorted bytewise, without `.` and `..`.
fn read_names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_bytewise_without_dot_entries() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["b", "a", "B", "a.b", "\u{e9}"] {
            std::fs::write(tmp.path().join(name), b"").unwrap();
        }
        let names = read_names(&open_dir(tmp.path(), false).unwrap()).unwrap();
        let names: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        assert_eq!(names, [&b"B"[..], b"a", b"a.b", b"b", "\u{e9}".as_bytes()]);
    }
}
