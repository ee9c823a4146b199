//! The directories the receiver is inside of, mirroring the sender's
//! depth-first walk.
//!
//! Keeping only the current path (a stack) rather than the whole list keeps
//! memory flat: a directory's leftover destination names are deleted when
//! the walk leaves it, and its metadata (mtime above all) is applied once
//! the last file written into it is in place, so later renames inside it
//! cannot disturb its times.

use crate::dest::volume::Dir;
use crate::entry::{Meta, RelPath};
use std::collections::HashMap;
use std::iter::Peekable;
use std::vec::IntoIter;

pub struct Frame {
    pub path: RelPath,
    pub dir: Dir,
    pub meta: Meta,
    /// Destination names not yet matched by a source entry, sorted.
    existing: Peekable<IntoIter<Vec<u8>>>,
    /// Whether leftover names may be deleted.
    pub delete: bool,
    last_name: Option<Vec<u8>>,
    /// Files being written into this directory.
    pub pending: usize,
}

/// A directory the walk has left whose files are still being written.
pub struct Closing {
    pub dir: Dir,
    pub meta: Meta,
    pub pending: usize,
}

#[derive(Default)]
pub struct Tree {
    pub stack: Vec<Frame>,
    pub closing: HashMap<RelPath, Closing>,
}

impl Frame {
    pub fn new(path: RelPath, dir: Dir, meta: Meta, existing: Vec<Vec<u8>>, delete: bool) -> Self {
        Frame {
            path,
            dir,
            meta,
            existing: existing.into_iter().peekable(),
            delete,
            last_name: None,
            pending: 0,
        }
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
        while let Some(existing) = self.existing.next_if(|e| e.as_slice() <= name) {
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
        self.existing.by_ref().collect()
    }
}

impl Tree {
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
