//! The receiver's planner for a dry run: takes the place of the applier
//! ([`super::apply`]) and reports what a sync would change instead of
//! changing it.
//!
//! It follows the sender's walk with the same directory-by-directory
//! comparison as the applier (the listing of each directory taken on
//! entering it, [`Frame::next_name`]), but only reads: `lstat`, `readlink`
//! and directory listings, never a write, not even the work area. Every file
//! is answered with `Have`, so no data flows, and each difference goes to
//! the sender as one [`ToSender::Change`] as soon as it is found, so nothing
//! is collected.

use super::apply::{no_open_dir, same_mtime};
use super::tree::Frame;
use crate::dest::volume::{Dir, FsError, Stat, StatKind, Volume};
use crate::dest::work::WorkArea;
use crate::entry::{Entry, Kind, Meta, RelPath};
use crate::failure::Failure;
use crate::wire::io::Outbox;
use crate::wire::message::{
    Change, EntryType, FileId, MetaChange, ReceiverStats, SyncOptions, ToReceiver, ToSender,
};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct Planner {
    volume: Arc<Volume>,
    options: SyncOptions,
    /// Whether owners are compared: only a receiver that can set them.
    owner: bool,
    peer: String,
    out: Outbox<ToSender>,
    /// The directories the walk is in. For one the destination lacks (or
    /// has as another type) `dir` is its parent's, never used: its listing
    /// is empty, so nothing is looked up in it.
    stack: Vec<Frame>,
    /// Multiply-linked destination files kept for a listed file, as the
    /// applier tracks them, to report the ones it would split.
    claimed: HashSet<(u64, u64)>,
    /// Which candidate work-area names the source root has (from Hello).
    reserved: Vec<u32>,
    started: bool,
    /// What the sync would delete and write.
    stats: ReceiverStats,
}

impl Planner {
    pub fn new(
        volume: Arc<Volume>,
        (options, reserved): (SyncOptions, Vec<u32>),
        peer: String,
        out: mpsc::Sender<Vec<ToSender>>,
    ) -> Self {
        Planner {
            volume,
            options,
            owner: rustix::process::geteuid().is_root(),
            peer,
            out: Outbox::new(out),
            stack: Vec::new(),
            claimed: HashSet::new(),
            reserved,
            started: false,
            stats: ReceiverStats::default(),
        }
    }

    /// Plans until the end of the list, then reports `Finished` with what
    /// the sync would delete and write.
    pub fn run(
        mut self,
        mut rx: mpsc::Receiver<Vec<ToReceiver>>,
    ) -> Result<ReceiverStats, Failure> {
        self.options
            .validate()
            .map_err(|e| self.protocol(format!("options refused: {e}")))?;
        let peer = self.peer.clone();
        let disconnected =
            || Failure::retryable(format!("{peer} disconnected before the dry run finished"));
        loop {
            let batch = match rx.try_recv() {
                Ok(batch) => batch,
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(disconnected()),
                Err(mpsc::error::TryRecvError::Empty) => {
                    let _ = self.out.flush();
                    rx.blocking_recv().ok_or_else(disconnected)?
                }
            };
            for msg in batch {
                if self.handle(msg)? {
                    let _ = self.out.push(ToSender::Finished { stats: self.stats });
                    let _ = self.out.flush();
                    return Ok(self.stats);
                }
            }
        }
    }

    fn protocol(&self, what: impl std::fmt::Display) -> Failure {
        Failure::protocol(&self.peer, what)
    }

    fn fs(&self, e: FsError) -> Failure {
        Failure::permanent(e.to_string())
    }

    /// Queues a report; a connection that is gone ends the session through
    /// its input.
    fn report(&mut self, path: RelPath, change: Change) {
        let _ = self.out.push(ToSender::Change { path, change });
    }

    /// True at the end of the list.
    fn handle(&mut self, msg: ToReceiver) -> Result<bool, Failure> {
        match msg {
            ToReceiver::Entry { id, entry } => {
                entry
                    .validate()
                    .map_err(|e| self.protocol(format!("entry {}: {e}", entry.path)))?;
                self.entry(id, entry)?;
            }
            ToReceiver::KeepContents { dir } => {
                let level = self.stack.iter_mut().rev().find(|l| l.path == dir);
                match level {
                    Some(level) => level.delete = false,
                    None => {
                        return Err(
                            self.protocol(format!("KeepContents for {dir}, which is not open"))
                        )
                    }
                }
            }
            ToReceiver::EndOfList => {
                while let Some(level) = self.stack.pop() {
                    self.close(level)?;
                }
                return Ok(true);
            }
            ToReceiver::Keepalive => {}
            ToReceiver::Hello { .. } => return Err(self.protocol("second Hello")),
            ToReceiver::Streams { .. } | ToReceiver::Join { .. } => {
                return Err(self.protocol("Streams or Join in the middle of a session"))
            }
            _ => return Err(self.protocol("file data in a dry run")),
        }
        Ok(false)
    }

    fn entry(&mut self, id: FileId, entry: Entry) -> Result<(), Failure> {
        let Some((parent, name)) = entry.path.split_last() else {
            return self.root(entry.meta);
        };
        let name = name.to_vec();
        self.enter(&parent, &entry.path)?;
        let Some(level) = self.stack.last_mut() else {
            return Err(no_open_dir());
        };
        let (present, gone) = level
            .next_name(&name)
            .map_err(|e| Failure::protocol(&self.peer, e))?;
        let (dir, delete) = (
            level.open_dir().cloned().ok_or_else(no_open_dir)?,
            level.delete,
        );
        for old in gone {
            self.unlisted(&dir, &old, delete)?;
        }
        let existing = match present {
            true => dir.stat(&name).map_err(|e| self.fs(e))?,
            false => None,
        };
        let path = entry.path.clone();
        let change = match entry.kind {
            Kind::Dir => self.directory(&dir, entry.path, &name, entry.meta, existing)?,
            Kind::File { size, .. } => {
                let _ = self.out.push(ToSender::Have { id });
                self.file(size, &entry.meta, existing)
            }
            Kind::Symlink { ref target } => match existing {
                Some(st) if st.kind == StatKind::Symlink => {
                    match dir.read_link(&name).map_err(|e| self.fs(e))? == *target {
                        true => self.meta(&st, &entry.meta, false),
                        false => Some(Change::Target),
                    }
                }
                _ => created(existing, EntryType::Symlink),
            },
            Kind::Special { kind, rdev } => match existing {
                Some(st) if st.kind == StatKind::Special(kind) => match st.rdev == rdev {
                    true => self.meta(&st, &entry.meta, true),
                    false => Some(Change::Target),
                },
                _ => created(existing, EntryType::Special),
            },
            Kind::HardLink { target } => self.hard_link(&entry.path, target, existing)?,
        };
        if let Some(change) = change {
            self.report(path, change);
        }
        Ok(())
    }

    fn root(&mut self, meta: Meta) -> Result<(), Failure> {
        if self.started {
            return Err(self.protocol("the root listed twice"));
        }
        self.started = true;
        let root = self.volume.root();
        let st = root.stat_self().map_err(|e| self.fs(e))?;
        if let Some(change) = self.meta(&st, &meta, true) {
            self.report(RelPath::root(), change);
        }
        let mut names = root.names().map_err(|e| self.fs(e))?;
        let work = WorkArea::existing(&self.volume, &self.reserved).map_err(|e| self.fs(e))?;
        names.retain(|n| Some(n) != work.as_ref());
        let frame = Frame::new(RelPath::root(), root, meta, names, self.options.delete);
        self.stack.push(frame);
        Ok(())
    }

    /// Leaves the directories the walk has finished until `parent` is the
    /// innermost; `parent` must be open, or the entry is out of place.
    fn enter(&mut self, parent: &RelPath, path: &RelPath) -> Result<(), Failure> {
        while let Some(level) = self.stack.pop_if(|level| !parent.starts_with(&level.path)) {
            self.close(level)?;
        }
        match self.stack.last() {
            Some(top) if &top.path == parent => Ok(()),
            _ => Err(self.protocol(format!(
                "entry {path} arrives outside its directory {parent}"
            ))),
        }
    }

    /// Leaves a directory: what the source lacks in it would be deleted.
    fn close(&mut self, mut level: Frame) -> Result<(), Failure> {
        let (dir, delete) = (
            level.open_dir().cloned().ok_or_else(no_open_dir)?,
            level.delete,
        );
        for name in level.leftovers() {
            self.unlisted(&dir, &name, delete)?;
        }
        Ok(())
    }

    /// A destination name the source does not list: deleted, if deleting.
    fn unlisted(&mut self, dir: &Dir, name: &[u8], delete: bool) -> Result<(), Failure> {
        if !delete {
            return Ok(());
        }
        let Some(st) = dir.stat(name).map_err(|e| self.fs(e))? else {
            return Ok(());
        };
        self.stats.deleted += 1;
        match dir.path().join(name) {
            Ok(path) => self.report(
                path,
                Change::Delete {
                    kind: entry_type(st.kind),
                },
            ),
            // Deeper than a path from the network may be: counted only.
            Err(e) => tracing::warn!("{}: {e}", dir.path()),
        }
        Ok(())
    }

    fn directory(
        &mut self,
        parent: &Dir,
        path: RelPath,
        name: &[u8],
        meta: Meta,
        existing: Option<Stat>,
    ) -> Result<Option<Change>, Failure> {
        let (dir, names, change) = match existing {
            Some(st) if st.kind == StatKind::Dir => {
                let dir = parent.open_subdir(name).map_err(|e| self.fs(e))?;
                let names = dir.names().map_err(|e| self.fs(e))?;
                (dir, names, self.meta(&st, &meta, true))
            }
            _ => (
                parent.clone(),
                Vec::new(),
                created(existing, EntryType::Dir),
            ),
        };
        let frame = Frame::new(path, dir, meta, names, self.options.delete);
        self.stack.push(frame);
        Ok(change)
    }

    /// A regular file of `size` bytes: new, replacing another type, sent
    /// (size or mtime differ), split from a destination link group, or
    /// current with perhaps metadata to set, as the applier would find it.
    fn file(&mut self, size: u64, meta: &Meta, existing: Option<Stat>) -> Option<Change> {
        let change = match existing {
            Some(st) if st.kind == StatKind::File => {
                if st.size != size || !same_mtime(&st, meta) {
                    Change::Content {
                        old_size: st.size,
                        new_size: size,
                    }
                } else if st.nlink > 1 && !self.claimed.insert((st.dev, st.ino)) {
                    return Some(Change::Unlink);
                } else {
                    return self.meta(&st, meta, true);
                }
            }
            _ => created(existing, EntryType::File)?,
        };
        self.stats.files_written += 1;
        self.stats.bytes_written += size;
        Some(match change {
            Change::Create { kind, .. } => Change::Create { kind, size },
            change => change,
        })
    }

    fn hard_link(
        &self,
        path: &RelPath,
        target: RelPath,
        existing: Option<Stat>,
    ) -> Result<Option<Change>, Failure> {
        if target.walk_cmp(path) != std::cmp::Ordering::Less {
            return Err(self.protocol(format!(
                "hard link {path} to {target}, which is not listed before it"
            )));
        }
        // The target's directory may itself be new: then so is the link.
        let linked = target.split_last().and_then(|(parent, name)| {
            let found = self.volume.open_dir(&parent).ok()?.stat(name).ok()??;
            existing.filter(|st| (st.dev, st.ino) == (found.dev, found.ino))
        });
        Ok(linked.is_none().then_some(Change::Link { target }))
    }

    /// The metadata a sync would set on an existing entry of the right
    /// type; `mode` is false for symlinks, which have none.
    fn meta(&self, st: &Stat, meta: &Meta, mode: bool) -> Option<Change> {
        let (old_owner, new_owner) = ((st.uid, st.gid), (meta.uid, meta.gid));
        let change = MetaChange {
            mode: (mode && st.mode != meta.mode).then_some((st.mode, meta.mode)),
            owner: (self.owner && old_owner != new_owner).then_some((old_owner, new_owner)),
            mtime: !same_mtime(st, meta),
        };
        (!change.is_empty()).then_some(Change::Meta(change))
    }
}

/// An entry of type `kind` where the destination has nothing (created) or
/// something else (replaced). The size of a new file is filled in by the
/// caller.
fn created(existing: Option<Stat>, kind: EntryType) -> Option<Change> {
    Some(match existing {
        None => Change::Create { kind, size: 0 },
        Some(st) => Change::Replace {
            old: entry_type(st.kind),
            new: kind,
        },
    })
}

fn entry_type(kind: StatKind) -> EntryType {
    match kind {
        StatKind::Dir => EntryType::Dir,
        StatKind::File => EntryType::File,
        StatKind::Symlink => EntryType::Symlink,
        StatKind::Special(_) | StatKind::Other => EntryType::Special,
    }
}
