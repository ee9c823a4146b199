//! What the sender's stages (walker, response handler, data thread) share:
//! the source root, the files awaiting an answer, the window that bounds
//! them, and the problems to report at the end.

use super::window::Window;
use crate::entry::RelPath;
use crate::progress::Counters;
use crate::source::confined::Identity;
use crate::wire::message::{BaseInfo, FileId, SegmentHash};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// How many listed files may await their answer at once.
pub const WINDOW: usize = crate::wire::MAX_PENDING_FILES;
/// How many problem messages are kept for the summary (all are logged).
const MAX_KEPT_PROBLEMS: usize = 1000;

/// A regular file the receiver has not finished with yet.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its path beneath the source root: it is opened by it, one component
    /// at a time from the root (see [`crate::source::confined`]); messages
    /// name it by [`Shared::source_path`].
    pub rel: RelPath,
    /// What the walk listed: a file found under that name later is read
    /// only if it is this one.
    pub identity: Identity,
    pub size: u64,
    pub sparse: bool,
    pub mtime: (i64, u32),
    /// Set once the receiver announced an older copy of the file.
    pub base: Option<BaseState>,
    /// The first read of a changed file, kept until the receiver's hashes
    /// and then its signatures are in.
    pub scan: Option<Arc<super::data::Scan>>,
    /// The sender gave up on it (vanished or unreadable) and counted why.
    pub aborted: bool,
}

#[derive(Debug, Clone)]
pub struct BaseState {
    pub info: BaseInfo,
    pub hashes: Arc<Vec<SegmentHash>>,
    pub signatures: HashMap<u32, Vec<u8>>,
    /// `SignatureRequest`s sent for this file: the scan asks for the
    /// differing segments it finds as it goes, the comparison for the rest.
    pub requested: u32,
    /// `SignaturesEnd`s received, one per request.
    pub answered: u32,
    /// The comparison is done and has sent its last request: once every
    /// request is answered the file can be sent.
    pub all_asked: bool,
}

impl BaseState {
    pub fn new(info: BaseInfo) -> Self {
        BaseState {
            info,
            hashes: Arc::new(Vec::new()),
            signatures: HashMap::new(),
            requested: 0,
            answered: 0,
            all_asked: false,
        }
    }

    /// Whether every segment hash of the receiver's copy has arrived.
    pub fn complete(&self) -> bool {
        self.hashes.len() == self.info.segment_count() as usize
    }

    /// Whether every signature asked for has arrived (or none was asked).
    pub fn answered_all(&self) -> bool {
        self.answered == self.requested
    }
}

pub struct Shared {
    /// The source root, opened by the walk before it lists anything (so
    /// before any file is pending); the data thread opens files from it.
    root: OnceLock<OwnedFd>,
    /// The root's path, for messages.
    root_path: OnceLock<PathBuf>,
    pub pending: Mutex<HashMap<FileId, Pending>>,
    pub window: Window,
    pub counters: Arc<Counters>,
    problems: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(counters: Arc<Counters>) -> Self {
        Shared {
            root: OnceLock::new(),
            root_path: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
            window: Window::new(WINDOW),
            counters,
            problems: Mutex::new(Vec::new()),
        }
    }

    /// Called once, by the walk.
    pub fn set_root(&self, root: OwnedFd, path: &Path) {
        let _ = self.root.set(root);
        let _ = self.root_path.set(path.to_path_buf());
    }

    /// The full path of `rel`, for messages: made only when one is needed,
    /// not kept for every file in flight.
    pub fn source_path(&self, rel: &RelPath) -> PathBuf {
        let root = self.root_path.get().map_or(Path::new(""), PathBuf::as_path);
        match rel.as_bytes() {
            [] => root.to_path_buf(),
            bytes => root.join(std::ffi::OsStr::from_bytes(bytes)),
        }
    }

    /// The source root; set by the time any file is pending.
    pub fn root(&self) -> Option<&OwnedFd> {
        self.root.get()
    }

    pub fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<FileId, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of what is known about `id`, if it is still pending.
    pub fn get(&self, id: FileId) -> Option<Pending> {
        self.pending().get(&id).cloned()
    }

    /// Forgets `id` and frees its window slot.
    pub fn finish(&self, id: FileId) -> Option<Pending> {
        let done = self.pending().remove(&id);
        if done.is_some() {
            self.window.release();
        }
        done
    }

    /// Counts one listed entry of `bytes` bytes.
    pub fn examined(&self, bytes: u64) {
        Counters::add(&self.counters.files_examined, 1);
        Counters::add(&self.counters.bytes_examined, bytes);
    }

    /// Records a source entry that could not be transferred.
    pub fn error(&self, what: String) {
        Counters::add(&self.counters.errors, 1);
        self.note(what);
    }

    /// Records a source file that vanished or changed while being read.
    pub fn vanished(&self, what: String) {
        Counters::add(&self.counters.vanished, 1);
        self.note(what);
    }

    fn note(&self, what: String) {
        tracing::warn!("{what}");
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if problems.len() < MAX_KEPT_PROBLEMS {
            problems.push(what);
        }
    }

    pub fn take_problems(&self) -> Vec<String> {
        std::mem::take(&mut self.problems.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
