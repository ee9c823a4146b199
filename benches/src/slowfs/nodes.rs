//! What the kernel can name: inodes (by number) and open handles.
//!
//! Each inode the kernel has looked up is held as an `O_PATH` descriptor
//! of the backing object, as libfuse's passthrough_ll does. A descriptor
//! follows its object through renames and stays valid for every name a
//! hard-linked file has (and after its last name is gone, as an open file
//! does), so no path bookkeeping can go stale. Holding it also keeps the
//! backing inode, and so its number, alive, which is why the backing inode
//! number can serve as the FUSE node id: no other live object can have it
//! until the kernel forgets this one.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{Errno, INodeNo};
use rustix::fs::{FileType, Stat};

/// One backing object the kernel knows.
pub struct Node {
    /// `O_PATH | O_NOFOLLOW` descriptor of the object.
    pub fd: OwnedFd,
    /// Its type, which never changes (xattrs and chmod treat symlinks apart).
    pub kind: FileType,
}

struct Known {
    node: Arc<Node>,
    /// Lookups the kernel holds (each entry reply counts one; FORGET
    /// returns them); the node goes when they reach 0.
    lookups: u64,
}

/// The inode table: FUSE node id to node. The root is node 1 whatever its
/// backing number (FUSE fixes it), and is never forgotten.
pub struct Nodes {
    root_ino: u64,
    known: Mutex<HashMap<u64, Known>>,
}

/// Lock a table, ignoring poisoning: a panicked holder left no invariant
/// half-updated that matters more than answering the kernel.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Nodes {
    pub fn new(root: OwnedFd, st: &Stat) -> Nodes {
        let node = Arc::new(Node {
            fd: root,
            kind: FileType::Directory,
        });
        let mut known = HashMap::new();
        known.insert(INodeNo::ROOT.0, Known { node, lookups: 1 });
        Nodes {
            root_ino: st.st_ino,
            known: Mutex::new(known),
        }
    }

    /// The node id of a backing inode number.
    pub fn id(&self, ino: u64) -> u64 {
        if ino == self.root_ino {
            INodeNo::ROOT.0
        } else {
            ino
        }
    }

    /// The node the kernel calls `id`; ESTALE if it was forgotten (the
    /// kernel does not name forgotten nodes, so that would be its bug).
    pub fn get(&self, id: INodeNo) -> Result<Arc<Node>, Errno> {
        lock(&self.known)
            .get(&id.0)
            .map(|k| k.node.clone())
            .ok_or(Errno::ESTALE)
    }

    /// Count one lookup of the object `fd` refers to (whose stat is
    /// `st`), adding it if new; returns its node id. A descriptor of an
    /// object already known is closed: the known one refers to the same
    /// inode.
    pub fn add(&self, fd: OwnedFd, st: &Stat) -> u64 {
        let id = self.id(st.st_ino);
        let mut known = lock(&self.known);
        let k = known.entry(id).or_insert_with(|| Known {
            node: Arc::new(Node {
                fd,
                kind: FileType::from_raw_mode(st.st_mode),
            }),
            lookups: 0,
        });
        k.lookups += 1;
        id
    }

    /// The kernel dropped `n` lookups of `id`.
    pub fn forget(&self, id: INodeNo, n: u64) {
        if id == INodeNo::ROOT {
            return;
        }
        let mut known = lock(&self.known);
        if let Some(k) = known.get_mut(&id.0) {
            k.lookups = k.lookups.saturating_sub(n);
            if k.lookups == 0 {
                known.remove(&id.0);
            }
        }
    }
}

/// Open handles of one kind (files, directories), by the number the
/// kernel is given for them. Numbers are never reused, so a stale one
/// fails (EBADF) instead of reaching another file.
pub struct Handles<T> {
    open: Mutex<HashMap<u64, Arc<T>>>,
    next: AtomicU64,
}

impl<T> Handles<T> {
    pub fn new() -> Handles<T> {
        Handles {
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    pub fn add(&self, h: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(fh, Arc::new(h));
        fh
    }

    pub fn get(&self, fh: u64) -> Result<Arc<T>, Errno> {
        lock(&self.open).get(&fh).cloned().ok_or(Errno::EBADF)
    }

    pub fn remove(&self, fh: u64) {
        lock(&self.open).remove(&fh);
    }
}
