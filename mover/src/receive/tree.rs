//! The directories the receiver is inside of, mirroring the sender's
//! depth-first walk.
//!
//! Keeping only the current path (a stack) rather than the whole list keeps
//! memory flat: a directory's leftover destination names are deleted when
//! the walk leaves it, and its metadata (mtime above all) is applied once
//! the last file written into it is in place, so later renames inside it
//! cannot disturb its times.
//!
//! Descriptors stay bounded however deep or wide the tree: at most
//! [`OPEN_LEVELS`] levels below the root are open (the shallowest are
//! closed and reopened by name from their nearest open ancestor on the way
//! back, never following a symlink), and a directory the walk has left is
//! kept as its path, to be reopened when its metadata is applied.

use crate::dest::volume::{Dir, FsError};
use crate::entry::{Meta, RelPath};
use crate::limits::OPEN_LEVELS;
use std::collections::{HashMap, VecDeque};

pub struct Frame {
    pub path: RelPath,
    /// Open while this level is the root or among the [`OPEN_LEVELS`]
    /// deepest; the innermost level is always open.
    dir: Option<Dir>,
    pub meta: Meta,
    /// Destination names not yet matched by a source entry, sorted.
    existing: VecDeque<Vec<u8>>,
    /// Whether leftover names may be deleted.
    pub delete: bool,
    last_name: Option<Vec<u8>>,
    /// Files being written into this directory.
    pub pending: usize,
}

/// A directory the walk has left whose files are still being written: a
/// path rather than a descriptor, since a million small directories may be
/// waiting.
pub struct Closing {
    pub meta: Meta,
    pub pending: usize,
}

#[derive(Default)]
pub struct Tree {
    stack: Vec<Frame>,
    pub closing: HashMap<RelPath, Closing>,
}

impl Frame {
    pub fn new(path: RelPath, dir: Dir, meta: Meta, existing: Vec<Vec<u8>>, delete: bool) -> Self {
        Frame {
            path,
            dir: Some(dir),
            meta,
            existing: existing.into(),
            delete,
            last_name: None,
            pending: 0,
        }
    }

    /// The directory, if this level is open (a level [`Tree`] closed to
    /// save descriptors is not).
    pub fn open_dir(&self) -> Option<&Dir> {
        self.dir.as_ref()
    }

    /// Accepts the next source name in this directory. Returns whether the
    /// destination has it, and the destination names that sort before it
    /// (the source does not have them); an error if the names are not
    /// strictly increasing.
    pub fn next_name(&mut self, name: &[u8]) -> Result<(bool, Vec<Vec<u8>>), String> {
        if self.last_name.as_deref().is_some_and(|last| last >= name) {
            return Err(format!(
                "entries out of order in {}: {:?} after {:?}",
                self.path,
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(self.last_name.as_deref().unwrap_or_default())
            ));
        }
        self.last_name = Some(name.to_vec());
        let mut gone = Vec::new();
        let mut present = false;
        while let Some(existing) = self.existing.pop_front_if(|e| e.as_slice() <= name) {
            if existing == name {
                present = true;
            } else {
                gone.push(existing);
            }
        }
        Ok((present, gone))
    }

    /// The destination names left once the walk has finished this
    /// directory.
    pub fn leftovers(&mut self) -> Vec<Vec<u8>> {
        self.existing.drain(..).collect()
    }

    /// The next `n` destination names not yet matched, in order: what a
    /// look ahead reads before the source names them.
    pub fn upcoming(&self, n: usize) -> impl Iterator<Item = &Vec<u8>> {
        self.existing.iter().take(n)
    }
}

impl Tree {
    /// The innermost directory.
    pub fn top(&self) -> Option<&Frame> {
        self.stack.last()
    }

    pub fn top_mut(&mut self) -> Option<&mut Frame> {
        self.stack.last_mut()
    }

    /// The innermost directory's descriptor.
    pub fn top_dir(&self) -> Option<&Dir> {
        self.top().and_then(|f| f.dir.as_ref())
    }

    /// Enters `frame`, closing the shallowest open level (never the root's)
    /// if that makes more than [`OPEN_LEVELS`].
    pub fn push(&mut self, frame: Frame) {
        self.stack.push(frame);
        self.trim();
    }

    /// Leaves the innermost directory: returns it with its descriptor, and
    /// opens its parent again if it was closed for room.
    pub fn pop(&mut self) -> Result<Option<(Frame, Dir)>, FsError> {
        let Some(dir) = self.open_top()? else {
            return Ok(None);
        };
        let Some(frame) = self.stack.pop() else {
            return Ok(None);
        };
        self.open_top()?;
        Ok(Some((frame, dir)))
    }

    /// Opens the innermost level if it is closed, from the nearest open
    /// ancestor, one name at a time; of the levels on the way, the deepest
    /// stay open. Returns the innermost level's descriptor.
    fn open_top(&mut self) -> Result<Option<Dir>, FsError> {
        let Some(base) = self.stack.iter().rposition(|f| f.dir.is_some()) else {
            return Ok(None);
        };
        let keep_from = self.stack.len().saturating_sub(OPEN_LEVELS);
        let mut dir = self.stack[base].dir.clone();
        for (i, frame) in self.stack.iter_mut().enumerate().skip(base + 1) {
            let name = frame.path.split_last().map_or(&[][..], |(_, name)| name);
            dir = dir.map(|d| d.open_subdir(name)).transpose()?;
            if i >= keep_from {
                frame.dir = dir.clone();
            }
        }
        self.trim();
        Ok(dir)
    }

    /// Closes the shallowest open levels below the root until at most
    /// [`OPEN_LEVELS`] are open.
    fn trim(&mut self) {
        let open = self.stack.iter().skip(1).filter(|f| f.dir.is_some());
        let excess = open.count().saturating_sub(OPEN_LEVELS);
        let open = self.stack.iter_mut().skip(1).filter(|f| f.dir.is_some());
        for frame in open.take(excess) {
            frame.dir = None;
        }
    }

    pub fn find(&mut self, path: &RelPath) -> Option<&mut Frame> {
        self.stack.iter_mut().rev().find(|f| &f.path == path)
    }

    /// Counts a file that will be written into directory `dir`.
    pub fn add_pending(&mut self, dir: &RelPath) {
        if let Some(frame) = self.find(dir) {
            frame.pending += 1;
        }
    }

    /// A file in `dir` is finished; returns the directory if it has been
    /// left and nothing else is pending, so its metadata can be applied.
    /// Never the root: its times are set at the very end, after the work
    /// area inside it is removed.
    pub fn done_pending(&mut self, dir: &RelPath) -> Option<Closing> {
        if let Some(frame) = self.find(dir) {
            frame.pending = frame.pending.saturating_sub(1);
            return None;
        }
        let closing = self.closing.get_mut(dir)?;
        closing.pending = closing.pending.saturating_sub(1);
        if closing.pending == 0 && !dir.is_root() {
            return self.closing.remove(dir);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::volume::Volume;

    const DEPTH: usize = 3 * OPEN_LEVELS + 2;

    fn meta() -> Meta {
        Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            xattrs: Vec::new(),
        }
    }

    fn open_levels(tree: &Tree) -> usize {
        tree.stack.iter().filter(|f| f.dir.is_some()).count()
    }

    /// A chain of directories `DEPTH` deep, entered as the applier enters
    /// directories.
    fn descend() -> (tempfile::TempDir, Tree) {
        let tmp = tempfile::tempdir().unwrap();
        let chain = (0..DEPTH).fold(tmp.path().to_path_buf(), |p, _| p.join("d"));
        std::fs::create_dir_all(&chain).unwrap();
        let mut dir = Volume::open("v", tmp.path()).unwrap().root();
        let mut tree = Tree::default();
        tree.push(Frame::new(
            RelPath::root(),
            dir.clone(),
            meta(),
            Vec::new(),
            false,
        ));
        for _ in 0..DEPTH {
            dir = dir.open_subdir(b"d").unwrap();
            tree.push(Frame::new(
                dir.path().clone(),
                dir.clone(),
                meta(),
                Vec::new(),
                false,
            ));
            assert!(open_levels(&tree) <= OPEN_LEVELS + 1);
        }
        (tmp, tree)
    }

    #[test]
    fn a_deep_walk_keeps_a_window_open_and_reopens_the_way_back() {
        let (_tmp, mut tree) = descend();
        for depth in (0..=DEPTH).rev() {
            let (frame, dir) = tree.pop().unwrap().unwrap();
            assert_eq!(frame.path.components().count(), depth);
            assert_eq!(dir.path(), &frame.path);
            assert!(tree.top().is_none_or(|_| tree.top_dir().is_some()));
            assert!(open_levels(&tree) <= OPEN_LEVELS + 1);
        }
        assert!(tree.pop().unwrap().is_none());
    }

    #[test]
    fn a_level_replaced_by_a_symlink_is_not_followed_on_the_way_back() {
        let (tmp, mut tree) = descend();
        // Swap a closed level for a symlink to an identical chain elsewhere.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(elsewhere.path().join("d/d/d/d")).unwrap();
        let d = tmp.path().join("d");
        std::fs::rename(d.join("d"), tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("d"), d.join("d")).unwrap();
        let error = std::iter::from_fn(|| Some(tree.pop()))
            .take(DEPTH + 1)
            .find_map(|popped| popped.err())
            .unwrap();
        assert!(error.to_string().contains("symlink"), "{error}");
    }
}
