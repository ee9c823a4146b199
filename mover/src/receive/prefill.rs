//! Assembling a changed file's new copy out of order: once the sender asks
//! for signatures (so the file did change), while it still reads and
//! compares and the signatures travel, a thread copies the receiver's old
//! copy into the temporary file that will replace it. Once the data arrives,
//! the segments the sender copies are already there and only the changed
//! ones are written (as in place), so the receiver's copy of the unchanged
//! bytes overlaps with the sender's work instead of following it.
//!
//! Only for files replaced by a new copy (`--inplace` writes the old copy
//! itself), not sparse (the copy would fill holes), large enough to be worth
//! a thread, and a few at a time. The copy is used only if the old copy is
//! still exactly the file the hashing thread hashed: same identity (inode,
//! size, mtime and ctime) before and after it was copied. Anything else, and
//! the file is written as usual.

use super::hasher::Identity;
use super::incoming::copy_range;
use crate::dest::volume::{MetaOptions, TempFile, Volume};
use crate::dest::work::{BaseRef, WorkArea};
use crate::entry::{Meta, RelPath};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Smallest old copy worth copying ahead: below it the copy takes about as
/// long as starting a thread for it.
pub const PREFILL_MIN: u64 = 16 * 1024 * 1024;
/// Copies running at once per session: each is a whole file's worth of
/// writes, and the disk is shared.
const MAX_RUNNING: usize = 2;

/// What a session needs to start copies ahead.
pub struct Prefills {
    volume: Arc<Volume>,
    running: Arc<AtomicUsize>,
    /// Set when the session is over.
    session_over: Arc<AtomicBool>,
}

/// One copy ahead, running or done.
pub struct Prefill {
    thread: Option<JoinHandle<Result<(TempFile, Identity), String>>>,
    /// Stops this copy (when its file's data never comes).
    stop: Arc<AtomicBool>,
}

/// What a copy ahead is of and for.
pub struct Target<'a> {
    pub path: &'a RelPath,
    pub meta: &'a Meta,
    pub opts: MetaOptions,
    pub base_len: u64,
}

impl Prefills {
    pub fn new(volume: Arc<Volume>, session_over: Arc<AtomicBool>) -> Self {
        Prefills {
            volume,
            running: Arc::new(AtomicUsize::new(0)),
            session_over,
        }
    }

    /// Starts copying the old copy of `target` into a new temporary file
    /// (created as [`super::apply`] would create it, under the file's
    /// partial name), unless [`MAX_RUNNING`] copies are running already or
    /// the thread cannot start.
    pub fn start(&self, target: Target<'_>) -> Option<Prefill> {
        let (parent, name) = target.path.split_last()?;
        let taken = self
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_RUNNING).then_some(n + 1)
            });
        taken.ok()?;
        let running = Running(self.running.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let work_name = WorkArea::partial_name(target.path);
        let (name, meta, opts) = (name.to_vec(), target.meta.clone(), target.opts);
        let (volume, path, len) = (self.volume.clone(), target.path.clone(), target.base_len);
        let (session_over, stopped) = (self.session_over.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("prefill".into())
            .spawn(move || {
                let _running = running;
                let cancelled =
                    || session_over.load(Ordering::Relaxed) || stopped.load(Ordering::Relaxed);
                let dir = volume.open_dir(&parent).map_err(|e| e.to_string())?;
                let base = BaseRef::Dest(path)
                    .open(&volume)
                    .ok_or("the old copy cannot be opened")?;
                let before = Identity::of(&base).map_err(|e| e.to_string())?;
                let mut temp = dir
                    .create_temp_as(None, &work_name, &name, (&meta, opts))
                    .map_err(|e| e.to_string())?;
                let copied = copy_range(&base, temp.file(), (0, len), cancelled)
                    .map_err(|e| e.to_string())?;
                let after = Identity::of(&base).map_err(|e| e.to_string())?;
                match (copied, after == before) {
                    (None, true) => Ok((temp, before)),
                    (Some(_), _) => Err("the kernel cannot copy it".into()),
                    (None, false) => Err("the old copy changed while being copied".into()),
                }
            })
            .ok()?;
        Some(Prefill {
            thread: Some(thread),
            stop,
        })
    }
}

impl Prefill {
    /// Waits for the copy; the temporary file holding exactly the old copy
    /// `hashed` names, or `None` (the file is then written as usual).
    pub fn finish(mut self, hashed: Identity) -> Option<TempFile> {
        let done = self.thread.take()?.join().ok()?;
        match done {
            Ok((temp, identity)) if identity == hashed => Some(temp),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!("copying the old copy ahead failed: {e}");
                None
            }
        }
    }
}

impl Drop for Prefill {
    /// A copy whose file's data never came stops, and its temporary file
    /// is removed before the session goes on.
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }
}

/// Holds one of [`MAX_RUNNING`] slots until the copy ends.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
