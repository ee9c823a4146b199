//! The sender's walk: lists the source tree depth-first with names sorted
//! bytewise (the order the receiver checks), turns every object into an
//! [`Entry`] and streams it out without waiting for answers.
//!
//! Each object is looked up relative to its directory's open descriptor
//! (`statat`, `readlinkat`, xattrs through `/proc/self/fd`), not by its
//! full path: on a tree of small files the walk is the sender's critical
//! path, and resolving every path from the root again costs more than the
//! lookup itself. It also keeps the walk inside the source while an
//! application changes it: a directory is entered, and reopened, one
//! component at a time without following symlinks, and only if it is still
//! the directory that was listed ([`crate::source::confined`]).

use super::state::{Pending, Shared};
use crate::entry::{Entry, Kind, RelPath};
use crate::sized::AtPath;
use crate::source::confined::{self, Identity};
use crate::source::meta;
use crate::wire::io::Outbox;
use crate::wire::message::{FileId, ToReceiver, XattrPolicy};
use rustix::fs::{self as rfs, AtFlags, Mode};
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Directory descriptors kept open down the current branch; deeper levels
/// close the highest ones (never the root's), which are opened again from
/// their nearest open ancestor on the way back.
const MAX_OPEN_DIRS: usize = 32;

/// Walks `root` and sends every entry, with the extended attributes
/// `xattrs` copies, then `EndOfList`. Returns early (with no error) if the
/// session ends while it is still walking.
pub fn run(
    root: &Path,
    xattrs: XattrPolicy,
    out: mpsc::Sender<Vec<ToReceiver>>,
    shared: &Shared,
) -> Result<(), String> {
    let mut out = Outbox::new(out);
    let fail = |e: io::Error| format!("source {}: {e}", root.display());
    let root_fd =
        rfs::open(root, confined::dir_flags(true), Mode::empty()).map_err(|e| fail(e.into()))?;
    let root_st = rfs::fstat(&root_fd).map_err(|e| fail(e.into()))?;
    if rfs::FileType::from_raw_mode(root_st.st_mode) != rfs::FileType::Directory {
        return Err(format!("source {} is not a directory", root.display()));
    }
    let root_meta = meta::read_meta(&root_st, || read_xattrs(root_fd.as_fd(), b".", xattrs))
        .map_err(|e| match e.kind() {
            // The root is open, so only /proc can be missing.
            io::ErrorKind::NotFound => format!(
                "source {}: extended attributes are read through /proc/self/fd, \
                 which is not mounted here (or pass --xattrs none)",
                root.display()
            ),
            _ => fail(e),
        })?;
    shared.set_root(root_fd.try_clone().map_err(fail)?, root);
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
        xattrs,
        next_id: 1,
        links: HashMap::new(),
        stack: Vec::new(),
    };
    let root_level = (CString::default(), confined::identity(&root_st));
    if !walk.enter(Ok(root_fd), root_level, RelPath::root(), root.to_path_buf()) {
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

/// The extended attributes of `name` in `dir` that `policy` copies.
fn read_xattrs(
    dir: BorrowedFd<'_>,
    name: &[u8],
    policy: XattrPolicy,
) -> io::Result<Vec<crate::entry::Xattr>> {
    meta::read_xattrs(&AtPath::new(dir, name)?, policy)
}

/// One directory on the current branch of the walk.
struct Level {
    /// Open while this level is the root or among the [`MAX_OPEN_DIRS`]
    /// deepest.
    fd: Option<OwnedFd>,
    /// Its name in its parent (empty for the root), to reopen it by.
    name: CString,
    /// What was listed, so that a directory put in its place is not taken
    /// for it.
    identity: Identity,
    rel: RelPath,
    path: PathBuf,
    /// Its entries not yet listed, in order.
    names: std::vec::IntoIter<CString>,
}

struct Walk<'a> {
    out: &'a mut Outbox<ToReceiver>,
    shared: &'a Shared,
    xattrs: XattrPolicy,
    next_id: FileId,
    /// First path seen for each multiply-linked inode, to send the others as
    /// links. Holds only files with more than one link.
    links: HashMap<(u64, u64), RelPath>,
    stack: Vec<Level>,
}

impl Walk<'_> {
    /// Reads the directory `rel` (already listed as `name` and `identity`),
    /// just opened, and makes it the current level. A directory that cannot
    /// be read is reported, and its contents on the receiver are kept, since
    /// absence from the list proves nothing; false once the session is over.
    fn enter(
        &mut self,
        opened: io::Result<OwnedFd>,
        (name, identity): (CString, Identity),
        rel: RelPath,
        path: PathBuf,
    ) -> bool {
        let listed = opened.and_then(|fd| {
            crate::listing::sorted_names(&fd)
                .map_err(io::Error::from)
                .map(|names| (fd, names))
        });
        let (fd, names) = match listed {
            Ok(listed) => listed,
            Err(e) if confined::is_gone(&e) => return self.vanished(&path),
            Err(e) => {
                self.shared
                    .error(format!("{}: cannot list: {e}", path.display()));
                return self.out.push(ToReceiver::KeepContents { dir: rel }).is_ok();
            }
        };
        let open = self.stack.iter().filter(|l| l.fd.is_some()).count();
        if open >= MAX_OPEN_DIRS {
            if let Some(oldest) = self.stack.iter_mut().skip(1).find(|l| l.fd.is_some()) {
                oldest.fd = None;
            }
        }
        self.stack.push(Level {
            fd: Some(fd),
            name,
            identity,
            rel,
            path,
            names: names.into_iter(),
        });
        true
    }

    /// Lists `name` of the current level; false once the session is over.
    fn entry(&mut self, name: CString) -> bool {
        if self.stack.last().is_some_and(|l| l.fd.is_none()) {
            if let Err(e) = self.reopen() {
                return self.abandon(e);
            }
        }
        let level = self.stack.last().expect("a current level");
        // The full path only for messages and directories: a file's entry
        // needs none.
        let path = || {
            level
                .path
                .join(std::ffi::OsStr::from_bytes(name.as_bytes()))
        };
        let rel = match level.rel.join(name.as_bytes()) {
            Ok(rel) => rel,
            Err(e) => {
                let (dir, path) = (level.rel.clone(), path());
                return self.unlisted(&path, dir, format!("cannot send path: {e}"));
            }
        };
        let dir = level.fd.as_ref().expect("opened above");
        let listed = rfs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io::Error::from)
            .and_then(|st| {
                let kind = meta::kind_of(&st, || meta::link_target(dir, &name))?;
                let entry_meta = meta::read_meta(&st, || {
                    read_xattrs(dir.as_fd(), name.as_bytes(), self.xattrs)
                })?;
                Ok((st, kind, entry_meta))
            });
        let (st, kind, entry_meta) = match listed {
            Ok(listed) => listed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.vanished(&path()),
            Err(e) => {
                let (dir, path) = (level.rel.clone(), path());
                return self.unlisted(&path, dir, e.to_string());
            }
        };
        let dir_path = (kind == Kind::Dir).then(path);
        let identity = confined::identity(&st);
        let descend = (kind == Kind::Dir).then(|| {
            confined::open_subdir(dir, name.as_c_str())
                .and_then(|fd| confined::check_identity(&fd, identity).map(|()| fd))
        });
        let kind = match kind {
            Kind::File { .. } if st.st_nlink > 1 => match self.links.get(&identity) {
                Some(first) => Kind::HardLink {
                    target: first.clone(),
                },
                None => {
                    self.links.insert(identity, rel.clone());
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
                    rel: rel.clone(),
                    identity,
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
        match (descend, dir_path) {
            // A directory is listed before its contents.
            (Some(opened), Some(path)) => self.enter(opened, (name, identity), rel, path),
            _ => true,
        }
    }

    /// Opens the current level again, which was closed to save descriptors:
    /// from its nearest open ancestor, one level at a time, each checked to
    /// be the directory listed. A symlink swapped in for any of them is not
    /// followed.
    fn reopen(&mut self) -> io::Result<()> {
        let (top, branch) = self.stack.split_last_mut().expect("a current level");
        let base = branch
            .iter()
            .rposition(|l| l.fd.is_some())
            .expect("the root stays open");
        let mut opened: Option<OwnedFd> = None;
        for level in branch[base + 1..].iter().chain(std::iter::once(&*top)) {
            let parent = match &opened {
                Some(fd) => fd.as_fd(),
                None => branch[base].fd.as_ref().expect("open").as_fd(),
            };
            let fd = confined::open_subdir(parent, level.name.as_c_str())?;
            confined::check_identity(&fd, level.identity)?;
            opened = Some(fd);
        }
        top.fd = opened;
        Ok(())
    }

    /// Gives up on the rest of the current level, which could not be opened
    /// again: counted as vanished when it was removed or replaced meanwhile,
    /// as an error otherwise, and either way the receiver keeps what it has
    /// there. False once the session is over.
    fn abandon(&mut self, e: io::Error) -> bool {
        let level = self.stack.last_mut().expect("a current level");
        level.names = Vec::new().into_iter();
        let what = format!(
            "{}: cannot open again to list the rest: {e}",
            level.path.display()
        );
        let dir = level.rel.clone();
        if confined::is_gone(&e) {
            self.shared.vanished(what);
        } else {
            self.shared.error(what);
        }
        self.out.push(ToReceiver::KeepContents { dir }).is_ok()
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
