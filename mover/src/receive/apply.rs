//! The receiver's applier: takes the sender's messages in order and makes
//! the volume match, on a blocking thread of its own.
//!
//! Every change is atomic at the level of one name: files are written in
//! the volume's work area ([`crate::dest::work`]) and renamed over their
//! destination after the end-to-end hash check; links and special files are
//! made there and renamed too, and a directory they replace is swapped out
//! in the same rename. The destination therefore always shows each name as
//! either its old or its new version, whatever happens to the connection.

use super::hasher::{Handle as HashThread, HashJob, Identity};
use super::incoming::{Cancel, DataError, Incoming, Output, Shape, Verified};
use super::notices::Notices;
use super::policy::{Admission, Policy};
use super::prefill::{Prefill, Prefills, Target, PREFILL_MIN};
use super::tree::{Closing, Frame, Tree};
use super::writers::{self, Writers};
use crate::delta;
use crate::dest::hash_cache::SegmentHashes;
use crate::dest::volume::{Dir, FsError, MetaOptions, Observed, Stat, StatKind, TempFile, Volume};
use crate::dest::work::{BaseRef, WorkArea};
use crate::entry::{Entry, Kind, Meta, RelPath};
use crate::failure::Failure;
use crate::limits::{self, Lease};
use crate::wire::io::Outbox;
use crate::wire::message::{
    AbortReason, BaseInfo, FileId, ReceiverStats, SyncOptions, ToReceiver, ToSender,
};
use crate::wire::MAX_PENDING_FILES;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A regular file the sender was asked for.
struct Need {
    path: RelPath,
    meta: Meta,
    size: u64,
    sparse: bool,
    base: Option<BaseInfo>,
    /// Where the base is: the destination file itself, or the partial file
    /// a broken session left in the work area.
    base_ref: BaseRef,
    /// Whole-file resends after a failed hash check.
    resends: u32,
    /// The device and inode of the destination file this one replaces,
    /// whose hash cache entry goes with it.
    replaces: Option<(u64, u64)>,
    /// The new copy being made from the old one while the sender compares.
    prefill: Option<Prefill>,
}

/// Hard links waiting for their target's data, at most: each costs a path.
/// Honest trees stay far below (it takes a hundred `cp -al` snapshots of a
/// directory of large files all in flight at once to reach it).
const MAX_WAITING_LINKS: usize = 1 << 20;

/// One resend whole after a hash mismatch; a second mismatch fails the file.
const MAX_RESENDS: u32 = 1;

/// Bytes held for one flush, so a flush never has much to write at once.
const MAX_BATCH_BYTES: u64 = 256 * 1024 * 1024;

/// What a session writes under: the sender's options and work-area names
/// from its Hello, and the operator's choices.
pub struct Terms {
    pub options: SyncOptions,
    pub reserved: Vec<u32>,
    pub policy: Policy,
    /// Write changed files in place (`--inplace`).
    pub inplace: bool,
    /// Appliers: the applier and, above one, writer threads.
    pub appliers: usize,
}

/// Names one look ahead takes ([`Applier::look`]).
const LOOK_AHEAD: usize = 256;

/// A directory's names looked at ahead of the walk: what each was, until
/// the walk reaches it.
#[derive(Default)]
struct Ahead {
    dir: Option<RelPath>,
    looks: HashMap<Vec<u8>, Result<Observed, FsError>>,
}

/// Smallest file written in place: below it a new copy costs little, and
/// the journal entry would cost more than it saves.
const INPLACE_MIN: u64 = 1024 * 1024;

pub struct Applier {
    volume: Arc<Volume>,
    options: SyncOptions,
    meta_opts: MetaOptions,
    peer: String,
    out: Outbox<ToSender>,
    hasher: HashThread,
    tree: Tree,
    needs: HashMap<FileId, Need>,
    /// Paths of files being fetched, to hold back hard links to them.
    fetching: HashMap<RelPath, FileId>,
    /// Hard links to create once their target file is in place.
    waiting_links: HashMap<RelPath, Vec<RelPath>>,
    /// How many links `waiting_links` holds.
    waiting_count: usize,
    /// Multiply-linked destination files kept for a listed file, by (dev,
    /// ino): another listed file on the same inode belongs to another group
    /// (the source split it) and gets a copy of its own.
    claimed: HashSet<(u64, u64)>,
    /// Which candidate work-area names the source root has (from Hello).
    reserved: Vec<u32>,
    policy: Policy,
    inplace: bool,
    /// Where temporaries and partial files live; set up when the root is
    /// listed.
    work: Option<WorkArea>,
    notices: Notices,
    current: Option<Incoming>,
    /// Verified files waiting for one `syncfs` before their renames, as
    /// many as `lease` has descriptor slots for, with their segment hashes
    /// for the hash cache.
    batch: Vec<(FileId, TempFile, Option<SegmentHashes>)>,
    lease: Lease,
    batch_bytes: u64,
    /// Threads that write small files and rename batches, when the session
    /// has more than one applier.
    writers: Option<Writers>,
    ahead: Ahead,
    /// What [`Applier::look`] found for the current entry.
    looked: Option<(Vec<u8>, Observed)>,
    /// The directory the last file was written into: consecutive files
    /// usually share it.
    last_dir: Option<Dir>,
    prefills: Prefills,
    cancel: Cancel,
    /// zstd context and buffer for compressed chunks, made on first use.
    unpack: Option<(zstd::bulk::Decompressor<'static>, Vec<u8>)>,
    started: bool,
    end_of_list: bool,
    stats: ReceiverStats,
}

impl Applier {
    pub fn new(
        volume: Arc<Volume>,
        Terms {
            options,
            reserved,
            policy,
            inplace,
            appliers,
        }: Terms,
        peer: String,
        out: mpsc::Sender<Vec<ToSender>>,
        hasher: HashThread,
        cancel: Cancel,
    ) -> Self {
        Applier {
            prefills: Prefills::new(volume.clone(), cancel.clone()),
            volume,
            options,
            meta_opts: MetaOptions {
                owner: rustix::process::geteuid().is_root(),
                xattrs: options.xattrs,
            },
            peer,
            out: Outbox::new(out),
            hasher,
            tree: Tree::default(),
            needs: HashMap::new(),
            fetching: HashMap::new(),
            waiting_links: HashMap::new(),
            waiting_count: 0,
            claimed: HashSet::new(),
            reserved,
            policy,
            inplace,
            work: None,
            notices: Notices::default(),
            current: None,
            batch: Vec::new(),
            lease: limits::pool().session(),
            batch_bytes: 0,
            writers: Writers::new(appliers),
            ahead: Ahead::default(),
            looked: None,
            last_dir: None,
            cancel,
            unpack: None,
            started: false,
            end_of_list: false,
            stats: ReceiverStats::default(),
        }
    }

    /// Applies messages until the sync is complete (then reports
    /// `Finished`) or fails. Whatever is half-written is removed on return;
    /// files already verified are committed even when the connection drops,
    /// so a retry need not send them again.
    pub fn run(mut self, rx: mpsc::Receiver<Vec<ToReceiver>>) -> Result<ReceiverStats, Failure> {
        match self.apply_all(rx) {
            Ok(()) => self.finish(),
            Err(failure) => {
                // Files already verified are good whatever ended the
                // session: commit them so a retry need not send them again.
                // A file cut off midway is kept to resume from only when a
                // retry may come.
                if let Some(file) = self.current.take() {
                    match &mut self.work {
                        Some(work) if failure.retryable => {
                            let name = WorkArea::partial_name(&file.path);
                            file.keep_partial(&name);
                            work.kept(name);
                        }
                        _ => drop(file),
                    }
                }
                if let Err(e) = self.commit_batch() {
                    tracing::warn!("{}: {e}", self.volume.name());
                }
                if let Some(work) = self.work.take() {
                    if let Err(e) = work.close(false, &self.volume, &self.hasher.cache) {
                        tracing::warn!("{e}");
                    }
                }
                Err(failure)
            }
        }
    }

    /// Applies batches until the sync is complete.
    fn apply_all(&mut self, mut rx: mpsc::Receiver<Vec<ToReceiver>>) -> Result<(), Failure> {
        use tokio::sync::mpsc::error::TryRecvError;
        let peer = self.peer.clone();
        let disconnected =
            || Failure::retryable(format!("{peer} disconnected before the sync finished"));
        loop {
            let batch = match rx.try_recv() {
                Ok(batch) => batch,
                Err(TryRecvError::Disconnected) => return Err(disconnected()),
                Err(TryRecvError::Empty) => {
                    // Nothing queued: a good moment to make the verified
                    // files durable and to send what we have to say.
                    self.commit_batch()?;
                    if self.done() {
                        return Ok(());
                    }
                    let _ = self.out.flush();
                    rx.blocking_recv().ok_or_else(disconnected)?
                }
            };
            for msg in batch {
                self.handle(msg)?;
            }
            if self.done() {
                return Ok(());
            }
        }
    }

    fn done(&self) -> bool {
        self.end_of_list && self.needs.is_empty() && self.current.is_none()
    }

    fn finish(mut self) -> Result<ReceiverStats, Failure> {
        // Before the root's times are set: removing it touches the root.
        if let Some(work) = self.work.take() {
            work.close(true, &self.volume, &self.hasher.cache)
                .map_err(|e| self.fs(e))?;
        }
        for (path, closing) in std::mem::take(&mut self.tree.closing) {
            self.apply_left_dir_meta(&path, &closing.meta)?;
        }
        self.notices.summarize(self.volume.name());
        self.volume
            .sync()
            .map_err(|e| Failure::permanent(format!("flushing {}: {e}", self.volume.name())))?;
        // The volume is in sync even if this last answer cannot reach the
        // sender (it will retry and find nothing to do).
        self.send(ToSender::Finished { stats: self.stats })?;
        let _ = self.out.flush();
        Ok(self.stats)
    }

    /// Makes every verified file durable with one `syncfs`, then renames
    /// each into place: a name never points at data that a crash could
    /// lose, at the cost of one flush per batch rather than one per file.
    fn commit_batch(&mut self) -> Result<(), Failure> {
        if let Some(writers) = &mut self.writers {
            let finished = writers.wait_all();
            self.take_written(finished)?;
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        self.volume
            .sync()
            .map_err(|e| Failure::permanent(format!("flushing {}: {e}", self.volume.name())))?;
        self.batch_bytes = 0;
        // The identity (a stat) only for a file whose hashes are cached.
        let (files, temps): (Vec<_>, Vec<_>) = std::mem::take(&mut self.batch)
            .into_iter()
            .map(|(id, temp, hashes)| {
                let identity = hashes.is_some();
                ((id, hashes), (temp, identity))
            })
            .unzip();
        let renamed = match &mut self.writers {
            Some(writers) => writers.rename_all(temps),
            None => temps.into_iter().map(writers::rename).collect(),
        };
        // A failed rename fails the session, once the others are counted.
        let mut failed = None;
        for ((id, hashes), renamed) in files.into_iter().zip(renamed) {
            let identity = match renamed {
                Ok(identity) => identity,
                Err(e) => {
                    failed.get_or_insert(self.fs(e));
                    continue;
                }
            };
            let cache = &self.hasher.cache;
            if let Some((dev, ino)) = self.needs.get(&id).and_then(|n| n.replaces) {
                cache.forget(&self.volume, dev, ino);
            }
            if let (Some(identity), Some(hashes)) = (identity, hashes) {
                cache.store(&self.volume, &identity, &hashes);
            }
            self.stats.files_written += 1;
            self.stats.bytes_written += self.needs.get(&id).map_or(0, |n| n.size);
            self.complete(id, Ok(()))?;
        }
        self.lease.release_batch();
        failed.map_or(Ok(()), Err)
    }

    /// Queues an answer. If the connection is gone the answer is moot, but
    /// what the sender sent before it went is still applied (and verified
    /// files committed), so this never fails: the end of the input ends the
    /// session.
    fn send(&mut self, msg: ToSender) -> Result<(), Failure> {
        let _ = self.out.push(msg);
        Ok(())
    }

    fn protocol(&self, what: impl std::fmt::Display) -> Failure {
        Failure::protocol(&self.peer, what)
    }

    fn handle(&mut self, msg: ToReceiver) -> Result<(), Failure> {
        match msg {
            ToReceiver::Entry { id, entry } => {
                if self.end_of_list {
                    return Err(self.protocol("entry after the end of the list"));
                }
                entry
                    .validate()
                    .map_err(|e| self.protocol(format!("entry {}: {e}", entry.path)))?;
                self.entry(id, entry)
            }
            ToReceiver::KeepContents { dir } => match self.tree.find(&dir) {
                Some(frame) => {
                    frame.delete = false;
                    Ok(())
                }
                None => Err(self.protocol(format!("KeepContents for {dir}, which is not open"))),
            },
            ToReceiver::EndOfList => {
                while let Some((frame, dir)) = self.tree.pop().map_err(|e| self.fs(e))? {
                    self.close(frame, dir)?;
                }
                self.end_of_list = true;
                Ok(())
            }
            ToReceiver::SignatureRequest { id, segments } => {
                let need = self.needs.get(&id);
                // Signatures are of the base: the old copy, or the partial
                // file a broken session left.
                let base = need.and_then(|n| Some((n.base_ref.clone(), n.base?)));
                let (base, info) = match base {
                    Some(found) => found,
                    None => {
                        return Err(
                            self.protocol(format!("signatures asked for file {id} without a base"))
                        )
                    }
                };
                if segments.len() > info.segment_count() as usize
                    || segments.iter().any(|&s| s >= info.segment_count())
                {
                    return Err(
                        self.protocol(format!("signature request out of range for file {id}"))
                    );
                }
                self.hasher
                    .jobs
                    .send(HashJob::Signatures {
                        id,
                        base,
                        info,
                        segments,
                    })
                    .map_err(|_| Failure::permanent("the receiver's hashing thread stopped"))?;
                self.prefill(id, info);
                Ok(())
            }
            ToReceiver::FileBegin { id } => self.begin(id),
            ToReceiver::Literal { data } => self.data(|f| f.literal(&data)),
            ToReceiver::Compressed { len, data } => self.compressed(len, &data),
            ToReceiver::Hole { len } => self.data(|f| f.hole(len)),
            ToReceiver::CopySegments { first, count } => {
                self.data(|f| f.copy_segments(first, count))
            }
            ToReceiver::PatchChunk { delta } => self.data(|f| f.patch_chunk(&delta)),
            ToReceiver::PatchEnd { segment } => self.data(|f| f.patch_end(segment)),
            ToReceiver::FileEnd { hash } => self.end(hash),
            ToReceiver::Unchanged { id } => self.unchanged(id),
            ToReceiver::FileAbort { reason } => {
                let file = self
                    .current
                    .take()
                    .ok_or_else(|| self.protocol("FileAbort outside a file"))?;
                let id = file.id;
                drop(file);
                let reason = match reason {
                    AbortReason::Vanished => "vanished at the source".to_string(),
                    AbortReason::Unreadable(e) => format!("unreadable at the source: {e}"),
                };
                self.complete(id, Err(reason))
            }
            ToReceiver::Keepalive => Ok(()),
            ToReceiver::Hello { .. } => Err(self.protocol("second Hello")),
            ToReceiver::Streams { .. } | ToReceiver::Join { .. } => {
                Err(self.protocol("Streams or Join in the middle of a session"))
            }
            ToReceiver::BlockHashes { .. }
            | ToReceiver::BlockZero { .. }
            | ToReceiver::BlockSegment { .. }
            | ToReceiver::BlockEnd { .. } => {
                Err(self.protocol("a block copy's message in a tree sync"))
            }
        }
    }
}

/// Entries, directories and links.
impl Applier {
    fn fs(&self, e: FsError) -> Failure {
        if let Some(failure) = limits::exhausted(e.raw_os_error(), &e.to_string()) {
            failure
        } else if e.is_no_space() {
            Failure::permanent(format!("no space left on {}", e.location()))
        } else {
            Failure::permanent(e.to_string())
        }
    }

    fn entry(&mut self, id: FileId, mut entry: Entry) -> Result<(), Failure> {
        match self.policy.admit(&mut entry) {
            Admission::Keep => {}
            Admission::Reduced(warning) => self.notices.warn(&warning),
            // The name is simply not listed: the destination's own entry
            // there goes like any other the source lacks.
            Admission::Refused(warning) => {
                self.notices.warn(&warning);
                return Ok(());
            }
        }
        let Some((parent, name)) = entry.path.split_last() else {
            if self.started {
                return Err(self.protocol("the root listed twice"));
            }
            self.started = true;
            self.work = WorkArea::open(&self.volume, &self.reserved, &self.hasher.cache)
                .map_err(|e| self.fs(e))?;
            let root = self.volume.root();
            root.make_writable().map_err(|e| self.fs(e))?;
            let mut names = root.names().map_err(|e| self.fs(e))?;
            if let Some(work) = &self.work {
                names.retain(|n| n != work.name());
            }
            self.tree.push(Frame::new(
                RelPath::root(),
                root,
                entry.meta,
                names,
                self.options.delete,
            ));
            return Ok(());
        };
        let name = name.to_vec();
        if parent.is_root() && self.work.as_ref().is_some_and(|w| w.name() == name) {
            // The Hello said the source root has no such name: it appeared
            // since. A new session picks another work area.
            return Err(Failure::retryable(format!(
                "the source root now holds {}, the name of this receiver's work area",
                entry.path
            )));
        }
        self.enter(&parent, &entry.path)?;
        let frame = self.tree.top_mut().ok_or_else(no_open_dir)?;
        let (present, gone) = frame
            .next_name(&name)
            .map_err(|e| Failure::protocol(&self.peer, e))?;
        let delete = frame.delete;
        let dir = self.top_dir()?.clone();
        for old in gone {
            self.unlisted(&dir, &old, delete)?;
        }
        // The listing taken on entering the directory already says whether
        // the name exists: no lookup for the (many) new names.
        self.looked = None;
        let existing = match present {
            true => self.look(&dir, &name)?,
            false => None,
        };
        match entry.kind {
            Kind::Dir => self.directory(entry.path, &name, entry.meta, existing),
            Kind::File { size, sparse } => {
                self.file(id, entry.path, &name, entry.meta, size, sparse, existing)
            }
            Kind::Symlink { ref target } => {
                let same = existing.is_some_and(|st| {
                    st.kind == StatKind::Symlink
                        && same_mtime(&st, &entry.meta)
                        && dir.read_link(&name).is_ok_and(|t| &t == target)
                });
                if !same {
                    self.top_dir()?
                        .symlink(&name, target)
                        .map_err(|e| self.fs(e))?;
                }
                self.set_meta(&name, &entry.meta)
            }
            Kind::Special { kind, rdev } => {
                let same = existing.is_some_and(|st| {
                    st.kind == StatKind::Special(kind)
                        && st.rdev == rdev
                        && same_mtime(&st, &entry.meta)
                });
                if !same {
                    let made = self.top_dir()?.mknod(&name, kind, entry.meta.mode, rdev);
                    if let Err(e) = made {
                        if e.raw_os_error() == Some(libc::EPERM) && !self.meta_opts.owner {
                            self.notices
                                .warn(&format!("{e} (device files need root; skipped)"));
                            return Ok(());
                        }
                        return Err(self.fs(e));
                    }
                }
                self.set_meta(&name, &entry.meta)
            }
            Kind::HardLink { target } => {
                if target.walk_cmp(&entry.path) != std::cmp::Ordering::Less {
                    return Err(self.protocol(format!(
                        "hard link {} to {target}, which is not listed before it",
                        entry.path
                    )));
                }
                if self.fetching.contains_key(&target) {
                    if self.waiting_count >= MAX_WAITING_LINKS {
                        return Err(self.protocol(format!(
                            "more than {MAX_WAITING_LINKS} hard links wait for files in flight"
                        )));
                    }
                    self.waiting_count += 1;
                    self.tree.add_pending(&parent);
                    self.waiting_links
                        .entry(target)
                        .or_default()
                        .push(entry.path);
                    return Ok(());
                }
                self.link(&target, &entry.path)
            }
        }
    }

    /// Leaves the directories the walk has finished until `parent` is the
    /// innermost one; `parent` must be open, or the entry is out of place.
    fn enter(&mut self, parent: &RelPath, path: &RelPath) -> Result<(), Failure> {
        while let Some(top) = self.tree.top() {
            if parent.starts_with(&top.path) {
                break;
            }
            let (frame, dir) = self
                .tree
                .pop()
                .map_err(|e| self.fs(e))?
                .ok_or_else(no_open_dir)?;
            self.close(frame, dir)?;
        }
        match self.tree.top() {
            Some(top) if &top.path == parent => Ok(()),
            _ => Err(self.protocol(format!(
                "entry {path} arrives outside its directory {parent}"
            ))),
        }
    }

    fn top_dir(&self) -> Result<&Dir, Failure> {
        self.tree.top_dir().ok_or_else(no_open_dir)
    }

    /// Removes a destination name the source does not list, when deleting.
    /// No name is special: whatever the user has is the user's. A non-root
    /// receiver leaves what it may not remove (`lost+found`) with a warning.
    fn unlisted(&mut self, dir: &Dir, name: &[u8], delete: bool) -> Result<(), Failure> {
        if delete {
            match dir.remove(name) {
                Ok(()) => self.stats.deleted += 1,
                Err(e)
                    if !self.meta_opts.owner
                        && matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) =>
                {
                    self.notices.warn(&format!("{e}: not deleted"));
                }
                Err(e) => return Err(self.fs(e)),
            }
        }
        Ok(())
    }

    /// Whether the metadata of `name` in `dir` (whose `lstat` is `st`)
    /// differs from `meta`, mtime aside. Equal metadata costs one xattr
    /// listing, or none when `looked` already has them, and no write.
    fn meta_differs(
        &self,
        dir: &Dir,
        name: &[u8],
        (st, looked): (&Stat, Option<&Observed>),
        meta: &Meta,
    ) -> bool {
        let owner_differs = self.meta_opts.owner && (st.uid, st.gid) != (meta.uid, meta.gid);
        let policy = self.meta_opts.xattrs;
        st.mode != meta.mode
            || owner_differs
            || match looked {
                Some(looked) => looked.xattrs_differ(&meta.xattrs, policy),
                None => dir.xattrs_differ(name, &meta.xattrs, policy),
            }
    }

    /// What the destination's `name` in `dir` (listed there) is now. With
    /// writer threads, the next [`LOOK_AHEAD`] names of the directory are
    /// looked at at once, their extended attributes too, so a resync on
    /// network storage waits for one round trip per wave rather than two
    /// per name; what was found for `name` stays in `self.looked` for
    /// [`Applier::meta_differs`].
    fn look(&mut self, dir: &Dir, name: &[u8]) -> Result<Option<Stat>, Failure> {
        let ahead = self.ahead.dir.as_ref() == Some(dir.path());
        if self.writers.is_some() && !(ahead && self.ahead.looks.contains_key(name)) {
            let frame = self.tree.top().ok_or_else(no_open_dir)?;
            let upcoming = frame.upcoming(LOOK_AHEAD - 1).cloned();
            let names = std::iter::once(name.to_vec()).chain(upcoming).collect();
            let policy = self.meta_opts.xattrs;
            if let Some(writers) = &mut self.writers {
                let looks = writers.observe_all(dir, names, policy);
                self.ahead = Ahead {
                    dir: Some(dir.path().clone()),
                    looks: looks.into_iter().collect(),
                };
            }
        }
        match self.ahead.looks.remove(name) {
            Some(Ok(observed)) => {
                let stat = observed.stat;
                self.looked = Some((name.to_vec(), observed));
                Ok(stat)
            }
            Some(Err(e)) => Err(self.fs(e)),
            None => dir.stat(name).map_err(|e| self.fs(e)),
        }
    }

    fn set_meta(&self, name: &[u8], meta: &Meta) -> Result<(), Failure> {
        let warnings = self
            .top_dir()?
            .set_meta(name, meta, self.meta_opts)
            .map_err(|e| self.fs(e))?;
        self.notices.extend(warnings);
        Ok(())
    }

    /// Gives `name` an inode of its own with the same content and
    /// metadata: the destination has it linked with a file that the source
    /// keeps apart. Copied inside the kernel, then renamed over.
    fn split_link(&self, dir: &Dir, name: &[u8], meta: &Meta) -> Result<(), Failure> {
        let mut old = dir.open_file(name).map_err(|e| self.fs(e))?;
        let mut temp = dir.create_temp(name).map_err(|e| self.fs(e))?;
        std::io::copy(&mut old, temp.file())
            .map_err(|e| Failure::permanent(format!("{}: copy: {e}", dir.path())))?;
        let warnings = temp
            .set_meta(meta, self.meta_opts)
            .map_err(|e| self.fs(e))?;
        self.notices.extend(warnings);
        temp.commit().map_err(|e| self.fs(e))
    }

    fn directory(
        &mut self,
        path: RelPath,
        name: &[u8],
        meta: Meta,
        existing: Option<Stat>,
    ) -> Result<(), Failure> {
        let dir = self.top_dir()?;
        if existing.map(|st| st.kind) != Some(StatKind::Dir) {
            if existing.is_some() {
                dir.remove(name).map_err(|e| self.fs(e))?;
            }
            dir.mkdir(name, 0o700).map_err(|e| self.fs(e))?;
        }
        let sub = dir.open_subdir(name).map_err(|e| self.fs(e))?;
        sub.make_writable().map_err(|e| self.fs(e))?;
        let names = sub.names().map_err(|e| self.fs(e))?;
        let delete = self.options.delete;
        self.tree.push(Frame::new(path, sub, meta, names, delete));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn file(
        &mut self,
        id: FileId,
        path: RelPath,
        name: &[u8],
        meta: Meta,
        size: u64,
        sparse: bool,
        existing: Option<Stat>,
    ) -> Result<(), Failure> {
        if let Some(st) = existing.filter(|st| st.kind == StatKind::File) {
            // With --checksum an equal size and mtime prove nothing: the
            // file goes the changed route with this copy as its base, and
            // the sender answers `Unchanged` if every segment matches.
            // (Its inode's claim is then taken by `unchanged`.)
            // So does a file a session was writing in place when it
            // stopped.
            let compare = (self.options.checksum && size > 0)
                || self.work.as_ref().is_some_and(|w| w.is_dirty(&path));
            if st.size == size && same_mtime(&st, &meta) && !compare {
                if st.nlink > 1 && !self.claimed.insert((st.dev, st.ino)) {
                    self.split_link(self.top_dir()?, name, &meta)?;
                    return self.send(ToSender::Have { id });
                }
                let looked = self.looked.take().filter(|(n, _)| n == name);
                let looked = looked.as_ref().map(|(_, observed)| observed);
                if self.meta_differs(self.top_dir()?, name, (&st, looked), &meta) {
                    self.set_meta(name, &meta)?;
                }
                if let Some(work) = &mut self.work {
                    work.drop_partial(&self.volume, &path)
                        .map_err(|e| self.fs(e))?;
                }
                return self.send(ToSender::Have { id });
            }
        }
        // Diff against the old copy; with none, resume from the partial a
        // broken session left (it holds the start of this very content). A
        // directory in the way stays until the file replaces it.
        let partial = match &self.work {
            Some(work) => work.partial(&self.volume, &path).map_err(|e| self.fs(e))?,
            None => None,
        };
        let old_copy = existing
            .filter(|st| st.kind == StatKind::File && st.size > 0)
            .map(|st| st.size);
        let (base_len, base_ref) = match (old_copy, partial) {
            (None, Some((partial, len))) => (Some(len), BaseRef::Partial(partial)),
            _ => (old_copy, BaseRef::Dest(path.clone())),
        };
        let base = base_len.filter(|&len| len > 0 && size > 0).and_then(|len| {
            delta::segment_size(len).map(|segment_size| BaseInfo { len, segment_size })
        });
        if self.needs.contains_key(&id) {
            return Err(self.protocol(format!("file id {id} listed twice")));
        }
        if self.needs.len() >= MAX_PENDING_FILES {
            return Err(self.protocol(format!(
                "more than {MAX_PENDING_FILES} files awaiting their data at once"
            )));
        }
        let parent = path
            .split_last()
            .map(|(p, _)| p)
            .unwrap_or_else(RelPath::root);
        self.tree.add_pending(&parent);
        self.fetching.insert(path.clone(), id);
        self.needs.insert(
            id,
            Need {
                path: path.clone(),
                meta,
                size,
                sparse,
                base,
                base_ref: base_ref.clone(),
                resends: 0,
                replaces: existing
                    .filter(|st| st.kind == StatKind::File && st.nlink == 1)
                    .map(|st| (st.dev, st.ino)),
                prefill: None,
            },
        );
        match base {
            Some(info) => self
                .hasher
                .jobs
                .send(HashJob::Base {
                    id,
                    base: base_ref,
                    info,
                })
                .map_err(|_| Failure::permanent("the receiver's hashing thread stopped")),
            None => self.send(ToSender::Need { id, base: None }),
        }
    }

    /// Starts copying the old copy of a large file that will be replaced by
    /// a new one into that new one, while the sender compares
    /// ([`super::prefill`]). Only once the sender asks for signatures, which
    /// shows the file changed: a file whose segments all match (only its
    /// mtime moved) is kept as it is, and a copy of it would be wasted.
    fn prefill(&mut self, id: FileId, base: BaseInfo) {
        let Some(need) = self.needs.get_mut(&id) else {
            return;
        };
        if need.prefill.is_some()
            || self.inplace
            || need.sparse
            || need.size < PREFILL_MIN
            || base.len < PREFILL_MIN
            || !matches!(need.base_ref, BaseRef::Dest(_))
        {
            return;
        }
        need.prefill = self.prefills.start(Target {
            path: &need.path,
            meta: &need.meta,
            opts: self.meta_opts,
            base_len: base.len,
        });
    }

    /// Leaves a directory: deletes what the source lacked and applies its
    /// metadata, or defers that until its pending files are in place.
    fn close(&mut self, mut frame: Frame, dir: Dir) -> Result<(), Failure> {
        for name in frame.leftovers() {
            self.unlisted(&dir, &name, frame.delete)?;
        }
        // The root's times are set last of all, once the work area in it
        // is gone.
        if frame.pending == 0 && !frame.path.is_root() {
            self.apply_dir_meta(&dir, &frame.meta)
        } else {
            self.tree.closing.insert(
                frame.path,
                Closing {
                    meta: frame.meta,
                    pending: frame.pending,
                },
            );
            Ok(())
        }
    }

    fn apply_dir_meta(&self, dir: &Dir, meta: &Meta) -> Result<(), Failure> {
        let warnings = dir
            .set_own_meta(meta, self.meta_opts)
            .map_err(|e| self.fs(e))?;
        self.notices.extend(warnings);
        Ok(())
    }

    /// Applies the metadata of a directory the walk has left, opening it
    /// again by path (confined like every open beneath the root).
    fn apply_left_dir_meta(&self, path: &RelPath, meta: &Meta) -> Result<(), Failure> {
        let dir = self.volume.open_dir(path).map_err(|e| self.fs(e))?;
        self.apply_dir_meta(&dir, meta)
    }

    /// Makes `path` another name for the file at `target`.
    fn link(&self, target: &RelPath, path: &RelPath) -> Result<(), Failure> {
        let (Some((tparent, tname)), Some((parent, name))) =
            (target.split_last(), path.split_last())
        else {
            return Err(self.protocol("hard link involving the root"));
        };
        let tdir = self.volume.open_dir(&tparent).map_err(|e| self.fs(e))?;
        let tstat = match tdir.stat(tname).map_err(|e| self.fs(e))? {
            Some(st) if st.kind == StatKind::File => st,
            // The target failed to arrive (reported for it already).
            _ => {
                tracing::warn!(
                    "{}/{path}: not linked, {target} is missing",
                    self.volume.name()
                );
                return Ok(());
            }
        };
        let dir = self.volume.open_dir(&parent).map_err(|e| self.fs(e))?;
        let existing = dir.stat(name).map_err(|e| self.fs(e))?;
        if existing.is_some_and(|st| (st.dev, st.ino) == (tstat.dev, tstat.ino)) {
            return Ok(());
        }
        dir.hard_link(name, &tdir, tname).map_err(|e| self.fs(e))
    }
}

/// File data.
impl Applier {
    fn begin(&mut self, id: FileId) -> Result<(), Failure> {
        if self.current.is_some() {
            return Err(self.protocol("FileBegin inside another file"));
        }
        let prefill = self.needs.get_mut(&id).and_then(|n| n.prefill.take());
        let need = self
            .needs
            .get(&id)
            .ok_or_else(|| self.protocol(format!("data for file {id}, which was not asked for")))?;
        let (parent, name) = need
            .path
            .split_last()
            .ok_or_else(|| self.protocol("data for the root"))?;
        let dir = match self.last_dir.take() {
            Some(dir) if dir.path() == &parent => dir,
            _ => self.volume.open_dir(&parent).map_err(|e| self.fs(e))?,
        };
        let in_place = self.inplace
            && need.base.is_some()
            && matches!(need.base_ref, BaseRef::Dest(_))
            && !need.sparse
            && need.size >= INPLACE_MIN
            && dir
                .stat(name)
                .map_err(|e| self.fs(e))?
                .is_some_and(|st| st.kind == StatKind::File && st.nlink == 1);
        let (path, base_ref, meta) = (need.path.clone(), need.base_ref.clone(), need.meta.clone());
        let (base_info, size, sparse) = (need.base, need.size, need.sparse);
        // Journaled first, so that a crash midway cannot leave a file whose
        // size and mtime look done.
        let in_place = in_place
            && match &mut self.work {
                Some(work) => work
                    .writing_in_place(&self.volume, &path)
                    .map_err(|e| self.fs(e))?,
                None => false,
            };
        // A file this receiver may not write (a read-only file of a
        // non-root receiver) is replaced as usual; its journal entry goes
        // once the replacement is in place.
        let updatable = match in_place {
            true => match dir.open_for_update(name) {
                Ok(file) => Some(file),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => None,
                Err(e) => return Err(self.fs(e)),
            },
            false => None,
        };
        // A small file goes to a writer thread once verified.
        let held = self.writers.is_some()
            && !sparse
            && size <= writers::HELD_MAX
            && matches!(base_ref, BaseRef::Dest(_));
        // Announced to the sender, so its hash is the segment-list one.
        let hashed = super::hasher::lock(&self.hasher.announced).remove(&id);
        let prefilled = match (prefill, &hashed) {
            (Some(prefill), Some(hashed)) => prefill.finish(hashed.identity),
            _ => None,
        };
        let out = if let Some(file) = updatable {
            Output::InPlace(file)
        } else if held {
            Output::Held(Vec::with_capacity(size as usize))
        } else if let Some(temp) = prefilled {
            tracing::debug!(
                "{}/{path}: written into a copy made ahead",
                self.volume.name()
            );
            Output::Prefilled(temp)
        } else {
            // Write under the partial name (unless resuming from it), so
            // even a crash of this process leaves something to resume from.
            Output::Temp(
                match &base_ref {
                    BaseRef::Dest(_) => dir.create_temp_as(
                        None,
                        &WorkArea::partial_name(&path),
                        name,
                        (&meta, self.meta_opts),
                    ),
                    BaseRef::Partial(_) => dir.create_temp(name),
                }
                .map_err(|e| self.fs(e))?,
            )
        };
        // A base that can no longer be opened only matters if the sender
        // refers to it; the hash check catches one that changed.
        let base = base_info.and_then(|info| base_ref.open(&self.volume).map(|f| (f, info)));
        let cache_segment = self.hasher.cache.wants(size);
        self.current = Some(Incoming::new(
            id,
            path,
            out,
            base,
            hashed,
            Shape {
                size,
                sparse,
                cache_segment,
            },
            self.cancel.clone(),
        ));
        self.last_dir = Some(dir);
        Ok(())
    }

    /// The sender found the base of `id` equal to its file: keeps the
    /// destination copy, setting only its metadata. A base that is a
    /// partial file, or that changed since it was hashed, is not the file
    /// the sender compared: ask for it whole instead.
    fn unchanged(&mut self, id: FileId) -> Result<(), Failure> {
        if self.current.is_some() {
            return Err(self.protocol("Unchanged inside a file"));
        }
        let need = self
            .needs
            .get(&id)
            .ok_or_else(|| self.protocol(format!("Unchanged for file {id}, not asked for")))?;
        let hashed = super::hasher::lock(&self.hasher.announced).remove(&id);
        let (Some(info), Some(hashed)) = (need.base, hashed) else {
            return Err(self.protocol(format!("Unchanged for file {id}, which has no base")));
        };
        let intact = info.len == need.size
            && hashed.hashes.len() == info.segment_count() as usize
            && matches!(need.base_ref, BaseRef::Dest(_))
            && need
                .base_ref
                .open(&self.volume)
                .and_then(|f| Identity::of(&f).ok())
                == Some(hashed.identity);
        let (parent, name) = need
            .path
            .split_last()
            .ok_or_else(|| self.protocol("Unchanged for the root"))?;
        if !intact {
            if let Some(need) = self.needs.get_mut(&id) {
                need.base = None;
            }
            return self.send(ToSender::Need { id, base: None });
        }
        // Setting metadata that is already right would still change the
        // file's ctime: an unchanged file is left alone entirely.
        let dir = self.volume.open_dir(&parent).map_err(|e| self.fs(e))?;
        let st = dir.stat(name).map_err(|e| self.fs(e))?;
        // Kept in place, the inode must not be one another listed file
        // (of another link group) kept already.
        if let Some(st) = st.filter(|st| st.nlink > 1) {
            if !self.claimed.insert((st.dev, st.ino)) {
                let meta = need.meta.clone();
                self.split_link(&dir, name, &meta)?;
                return self.complete(id, Ok(()));
            }
        }
        if st.is_none_or(|st| {
            self.meta_differs(&dir, name, (&st, None), &need.meta) || !same_mtime(&st, &need.meta)
        }) {
            let warnings = dir
                .set_meta(name, &need.meta, self.meta_opts)
                .map_err(|e| self.fs(e))?;
            self.notices.extend(warnings);
            // The new ctime voids the entry made when it was hashed: the
            // same hashes go under the file's identity now.
            let now = need.base_ref.open(&self.volume).map(|f| Identity::of(&f));
            if let Some(Ok(identity)) = now {
                let hashes = SegmentHashes {
                    segment_size: hashed.segment_size,
                    hashes: hashed.hashes.to_vec(),
                };
                self.hasher.cache.store(&self.volume, &identity, &hashes);
            }
        }
        self.complete(id, Ok(()))
    }

    fn compressed(&mut self, len: u32, data: &[u8]) -> Result<(), Failure> {
        let (mut zstd, mut buf) = match self.unpack.take() {
            Some(unpack) => unpack,
            None => (
                zstd::bulk::Decompressor::new()
                    .map_err(|e| Failure::permanent(format!("zstd: {e}")))?,
                Vec::new(),
            ),
        };
        crate::compress::decompress(&mut zstd, data, len, &mut buf)
            .map_err(|e| self.protocol(e))?;
        let written = self.data(|f| f.literal(&buf));
        self.unpack = Some((zstd, buf));
        written
    }

    fn data(
        &mut self,
        op: impl FnOnce(&mut Incoming) -> Result<(), DataError>,
    ) -> Result<(), Failure> {
        let Some(file) = self.current.as_mut() else {
            return Err(self.protocol("file data outside a file"));
        };
        match op(file) {
            Ok(()) => Ok(()),
            Err(DataError::Invalid(msg)) => Err(Failure::protocol(
                &self.peer,
                format!("{}: {msg}", file.path),
            )),
            Err(DataError::Cancelled) => Err(Failure::retryable(format!(
                "{}: the session ended while it was being written",
                file.path
            ))),
            Err(DataError::Io(e)) => {
                let at = format!("{}/{}", self.volume.name(), file.path);
                Err(
                    if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                        Failure::permanent(format!("no space left on {at}"))
                    } else {
                        Failure::permanent(format!("{at}: {e}"))
                    },
                )
            }
        }
    }

    fn end(&mut self, hash: [u8; 32]) -> Result<(), Failure> {
        let file = self
            .current
            .take()
            .ok_or_else(|| self.protocol("FileEnd outside a file"))?;
        let (id, path) = (file.id, file.path.clone());
        let finished = file
            .finish(hash)
            .map_err(|e| Failure::permanent(format!("{}/{path}: {e}", self.volume.name())))?;
        let Ok(Verified { out, hashes }) = finished else {
            let need = self
                .needs
                .get_mut(&id)
                .ok_or_else(|| Failure::permanent("lost track of a file"))?;
            if need.resends >= MAX_RESENDS {
                return self.complete(id, Err("content check failed twice".into()));
            }
            tracing::warn!(
                "{}/{path}: content check failed, asking for the whole file",
                self.volume.name()
            );
            need.resends += 1;
            need.base = None;
            return self.send(ToSender::Need { id, base: None });
        };
        let temp = match out {
            Output::Temp(temp) | Output::Prefilled(temp) => temp,
            Output::InPlace(file) => return self.written_in_place(id, &path, file, hashes),
            Output::Held(data) => return self.hand_over(id, data, hashes),
        };
        let meta = &self.needs[&id].meta;
        let warnings = temp
            .set_meta(meta, self.meta_opts)
            .map_err(|e| self.fs(e))?;
        self.notices.extend(warnings);
        let room = self.batched(id);
        self.batch.push((id, temp, hashes));
        self.batch_full(room)
    }

    /// Counts file `id` into the batch; whether the descriptor pool had
    /// room for it.
    fn batched(&mut self, id: FileId) -> bool {
        self.batch_bytes += self.needs.get(&id).map_or(0, |n| n.size);
        self.lease.take_file()
    }

    /// Out of descriptor slots, the batch goes with the file just added as
    /// its last: a session never waits for others' descriptors.
    fn batch_full(&mut self, room: bool) -> Result<(), Failure> {
        if !room || self.batch_bytes >= MAX_BATCH_BYTES {
            self.commit_batch()?;
        }
        Ok(())
    }

    /// Hands a verified small file to a writer thread; it joins the batch
    /// when written.
    fn hand_over(
        &mut self,
        id: FileId,
        data: Vec<u8>,
        hashes: Option<SegmentHashes>,
    ) -> Result<(), Failure> {
        let need = self
            .needs
            .get(&id)
            .ok_or_else(|| Failure::permanent("lost track of a file"))?;
        let (parent, name) = need
            .path
            .split_last()
            .ok_or_else(|| self.protocol("data for the root"))?;
        let dir = match &self.last_dir {
            Some(dir) if dir.path() == &parent => dir.clone(),
            _ => self.volume.open_dir(&parent).map_err(|e| self.fs(e))?,
        };
        let write = writers::Write {
            id,
            dir,
            work_name: WorkArea::partial_name(&need.path),
            name: name.to_vec(),
            meta: need.meta.clone(),
            opts: self.meta_opts,
            data,
            hashes,
        };
        let room = self.batched(id);
        let finished = match &mut self.writers {
            Some(writers) => writers.write(write),
            None => return Err(Failure::permanent("a held file without writers")),
        };
        self.take_written(finished)?;
        self.batch_full(room)
    }

    /// Puts files the writers finished into the batch.
    fn take_written(&mut self, finished: Vec<writers::Written>) -> Result<(), Failure> {
        for written in finished {
            let (temp, warnings) = written.result.map_err(|e| self.fs(e))?;
            self.notices.extend(warnings);
            self.batch.push((written.id, temp, written.hashes));
        }
        Ok(())
    }

    /// A file written in place is verified: its metadata (the source's size
    /// and mtime, which make it count as done) is set and made durable
    /// before its journal entry goes.
    fn written_in_place(
        &mut self,
        id: FileId,
        path: &RelPath,
        file: File,
        hashes: Option<SegmentHashes>,
    ) -> Result<(), Failure> {
        let (parent, name) = path
            .split_last()
            .ok_or_else(|| self.protocol("data for the root"))?;
        let dir = self.volume.open_dir(&parent).map_err(|e| self.fs(e))?;
        let need = self
            .needs
            .get(&id)
            .ok_or_else(|| Failure::permanent("lost track of a file"))?;
        let warnings = dir
            .set_meta_of(&file, name, &need.meta, self.meta_opts)
            .map_err(|e| self.fs(e))?;
        self.notices.extend(warnings);
        dir.fsync(&file, name).map_err(|e| self.fs(e))?;
        if let (Ok(identity), Some(hashes)) = (Identity::of(&file), hashes) {
            self.hasher.cache.store(&self.volume, &identity, &hashes);
        }
        self.stats.files_written += 1;
        self.stats.bytes_written += need.size;
        self.complete(id, Ok(()))
    }

    /// A requested file is settled: in place, or failed with the old copy
    /// kept. Releases what waited for it.
    fn complete(&mut self, id: FileId, result: Result<(), String>) -> Result<(), Failure> {
        let need = self
            .needs
            .remove(&id)
            .ok_or_else(|| self.protocol(format!("file {id} was not asked for")))?;
        self.fetching.remove(&need.path);
        let parent = need
            .path
            .split_last()
            .map(|(p, _)| p)
            .unwrap_or_else(RelPath::root);
        let links = self.waiting_links.remove(&need.path).unwrap_or_default();
        self.waiting_count -= links.len();
        for link in links {
            if result.is_ok() {
                self.link(&need.path, &link)?;
            }
            let link_parent = link
                .split_last()
                .map(|(p, _)| p)
                .unwrap_or_else(RelPath::root);
            self.settle(&link_parent)?;
        }
        // A file rewritten in place, or replaced whole after a failed check
        // of one, is whole again.
        if let (Ok(()), Some(work)) = (&result, &mut self.work) {
            work.written_in_place(&self.volume, &need.path)
                .map_err(|e| self.fs(e))?;
        }
        // The partial this file resumed from is spent.
        if let (Ok(()), BaseRef::Partial(_), Some(work)) = (&result, &need.base_ref, &mut self.work)
        {
            work.drop_partial(&self.volume, &need.path)
                .map_err(|e| self.fs(e))?;
        }
        self.settle(&parent)?;
        self.send(match result {
            Ok(()) => ToSender::FileDone { id },
            Err(message) => ToSender::FileFailed { id, message },
        })
    }

    /// One pending item in `dir` is done; applies the directory's metadata
    /// if the walk has left it and it was the last.
    fn settle(&mut self, dir: &RelPath) -> Result<(), Failure> {
        if let Some(closing) = self.tree.done_pending(dir) {
            self.apply_left_dir_meta(dir, &closing.meta)?;
        }
        Ok(())
    }
}

pub(super) fn no_open_dir() -> Failure {
    Failure::permanent("no open directory")
}

pub(super) fn same_mtime(st: &Stat, meta: &Meta) -> bool {
    (st.mtime_sec, st.mtime_nsec) == (meta.mtime_sec, meta.mtime_nsec)
}
