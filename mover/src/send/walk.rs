//! The sender's walk: lists the source tree depth-first with names sorted
//! bytewise (the order the receiver checks), turns every object into an
//! [`Entry`] and streams it out without waiting for answers.

use super::state::{Pending, Shared};
use crate::entry::{Entry, Kind, RelPath};
use crate::source::meta;
use crate::wire::io::Outbox;
use crate::wire::message::{FileId, ToReceiver};
use std::collections::HashMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tokio::sync::mpsc;
use walkdir::WalkDir;

/// Walks `root` and sends every entry, then `EndOfList`. Returns early (with
/// no error) if the session ends while it is still walking.
pub fn run(root: &Path, out: mpsc::Sender<Vec<ToReceiver>>, shared: &Shared) -> Result<(), String> {
    let mut out = Outbox::new(out);
    let root_md = std::fs::metadata(root).map_err(|e| format!("source {}: {e}", root.display()))?;
    if !root_md.is_dir() {
        return Err(format!("source {} is not a directory", root.display()));
    }
    let root_meta =
        meta::read_meta(root, &root_md).map_err(|e| format!("source {}: {e}", root.display()))?;
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
        root,
        out: &mut out,
        shared,
        next_id: 1,
        links: HashMap::new(),
    };
    let entries = WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .follow_root_links(true)
        .sort_by_file_name();
    for item in entries {
        let sent = match item {
            Ok(entry) => walk.entry(entry.path(), entry.depth()),
            Err(err) => walk.walk_error(err),
        };
        if !sent {
            return Ok(());
        }
    }
    let _ = walk.out.push(ToReceiver::EndOfList);
    let _ = walk.out.flush();
    Ok(())
}

struct Walk<'a> {
    root: &'a Path,
    out: &'a mut Outbox<ToReceiver>,
    shared: &'a Shared,
    next_id: FileId,
    /// First path seen for each multiply-linked inode, to send the others as
    /// links. Holds only files with more than one link.
    links: HashMap<(u64, u64), RelPath>,
}

impl Walk<'_> {
    /// Lists one path; false once the session is over.
    fn entry(&mut self, path: &Path, depth: usize) -> bool {
        let rel = match self.rel(path) {
            Ok(rel) => rel,
            Err(msg) => return self.unlisted(path, depth, msg),
        };
        let listed = std::fs::symlink_metadata(path).and_then(|md| {
            let kind = meta::kind_of(path, &md)?;
            let entry_meta = meta::read_meta(path, &md)?;
            Ok((md, kind, entry_meta))
        });
        let (md, kind, entry_meta) = match listed {
            Ok(listed) => listed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.shared
                    .vanished(format!("{}: vanished before it was read", path.display()));
                return true;
            }
            Err(e) => return self.unlisted(path, depth, e.to_string()),
        };
        let kind = match kind {
            Kind::File { .. } if md.nlink() > 1 => match self.links.get(&(md.dev(), md.ino())) {
                Some(first) => Kind::HardLink {
                    target: first.clone(),
                },
                None => {
                    self.links.insert((md.dev(), md.ino()), rel.clone());
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
                    source: path.to_path_buf(),
                    size,
                    sparse,
                    mtime: (md.mtime(), md.mtime_nsec() as u32),
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
            path: rel,
            kind,
            meta: entry_meta,
        };
        self.out.push(ToReceiver::Entry { id, entry }).is_ok()
    }

    fn walk_error(&mut self, err: walkdir::Error) -> bool {
        let path = err.path().map(Path::to_path_buf).unwrap_or_default();
        if err.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) {
            self.shared
                .vanished(format!("{}: vanished before it was read", path.display()));
            return true;
        }
        // walkdir reports a directory it cannot list at the directory's own
        // depth; its contents are what went missing.
        let msg = err
            .io_error()
            .map(ToString::to_string)
            .unwrap_or_else(|| err.to_string());
        self.shared
            .error(format!("{}: cannot list: {msg}", path.display()));
        match self.rel(&path) {
            Ok(dir) => self.out.push(ToReceiver::KeepContents { dir }).is_ok(),
            Err(_) => true,
        }
    }

    /// Reports an entry that could not be listed and protects whatever the
    /// destination holds under that name by keeping its parent's contents.
    fn unlisted(&mut self, path: &Path, depth: usize, msg: String) -> bool {
        self.shared.error(format!("{}: {msg}", path.display()));
        let parent = match path.parent() {
            Some(parent) if depth > 0 => parent,
            _ => return true,
        };
        match self.rel(parent) {
            Ok(dir) => self.out.push(ToReceiver::KeepContents { dir }).is_ok(),
            Err(_) => true,
        }
    }

    fn rel(&self, path: &Path) -> Result<RelPath, String> {
        let rel = path.strip_prefix(self.root).map_err(|e| e.to_string())?;
        RelPath::parse(rel.as_os_str().as_bytes()).map_err(|e| format!("cannot send path: {e}"))
    }
}
