//! File descriptors: how many this process may open, and how receive
//! sessions share them.
//!
//! Running out of descriptors fails whatever operation hits the limit, so
//! the receiver never depends on luck to stay under it:
//!
//! - At start, [`raise_nofile`] lifts the soft `RLIMIT_NOFILE` to the hard
//!   limit: the soft default (often 1024) is a compatibility value for
//!   `select()`, which this program does not use.
//! - Everything a session holds apart from its batch of verified files is
//!   bounded by a constant: its socket, the volume root and work area, the
//!   hasher's base, the file being written, and at most [`OPEN_LEVELS`]
//!   directory levels of the walk (directories the walk has left are kept
//!   as paths, not descriptors). That is [`SESSION_DESCRIPTORS`].
//! - The one variable amount, the batch of verified files awaiting one
//!   `syncfs` ([`BATCH_SLOTS_PER_FILE`] each: the file and its directory),
//!   comes from a process-wide [`Pool`]: the limit less [`RESERVE`], less
//!   the fixed share of every live session. A session takes slots without
//!   waiting, at most a [`Pool::session_cap`] of them; when it cannot get
//!   one it commits its batch (which returns its slots) with the file in
//!   hand. So every session progresses with a batch of one, however many
//!   others run, and none can take the whole pool.
//!
//! If the limit is hit anyway (a lower hard limit than the sessions need,
//! or the system-wide table is full), [`exhausted`] turns the error into a
//! retryable failure that says which limit it was.

use crate::failure::Failure;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::OnceLock;

/// Descriptors kept out of the pool for the process as a whole: standard
/// streams, the async runtime, the listener, the connections still in their
/// handshake and, in `mover sync`, the sending side's walk (up to 32
/// directory levels) and files.
pub const RESERVE: u64 = 48;

/// Directory levels a receive session keeps open down its current branch,
/// besides the root: it works only in the innermost one, and ancestors
/// closed for room are reopened by path on the way back (one `openat` per
/// level), so a deep tree costs a little time rather than descriptors.
pub const OPEN_LEVELS: usize = 8;

/// What one receive session holds outside its batch, at most: socket,
/// volume root, work area, the hasher's base, the file being written and
/// its directory, the directory of the last file, the open levels of the
/// walk, and a few opened for a moment (a hard link's two directories, a
/// directory reopened to set its times).
pub const SESSION_DESCRIPTORS: usize = 10 + OPEN_LEVELS;

/// Pool slots one batched file holds: its own descriptor and its
/// directory's.
pub const BATCH_SLOTS_PER_FILE: usize = 2;

/// Most files one session batches, whatever the pool: bounds the work of
/// one `syncfs` and the renames after it.
pub const MAX_BATCH_FILES: usize = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit
/// in force afterwards. Failing to raise it is not fatal (the pool is sized
/// from whatever limit holds), so the error is only for a warning.
pub fn raise_nofile() -> Result<u64, String> {
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (limit.current, limit.maximum) else {
        // Unlimited (Linux never reports that for open files): nothing to do.
        return Ok(nofile());
    };
    if soft >= hard {
        return Ok(soft);
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    setrlimit(Resource::Nofile, raised)
        .map(|()| hard)
        .map_err(|e| format!("cannot raise the open files limit from {soft} to {hard}: {e}"))
}

/// The soft limit on open files in force now.
pub fn nofile() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The descriptors that batches of verified files may hold, process-wide.
#[derive(Debug)]
pub struct Pool {
    /// Slots not taken; negative while live sessions' fixed shares exceed
    /// the pool (their batches then hold one file each).
    free: AtomicIsize,
    cap: usize,
}

/// One session's account with the [`Pool`]: its fixed share from creation,
/// batch slots as taken. Everything goes back on drop.
#[derive(Debug)]
pub struct Lease {
    pool: &'static Pool,
    held: usize,
}

/// The process's pool, sized from the soft limit when first used (after
/// [`raise_nofile`]).
pub fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(nofile()))
}

impl Pool {
    /// The pool for a limit of `limit` open files.
    pub fn new(limit: u64) -> Self {
        let size = usize::try_from(limit.saturating_sub(RESERVE)).unwrap_or(usize::MAX);
        Pool {
            free: AtomicIsize::new(isize::try_from(size).unwrap_or(isize::MAX)),
            // Half of what is left once one session has its fixed share, so
            // a second session always finds room for batches of its own.
            cap: (size.saturating_sub(SESSION_DESCRIPTORS) / 2)
                .min(MAX_BATCH_FILES * BATCH_SLOTS_PER_FILE),
        }
    }

    /// Most slots one session's batch may hold.
    pub fn session_cap(&self) -> usize {
        self.cap
    }

    /// Opens a session's account, taking its fixed share. Never refused:
    /// sessions are limited by count (`--max-connections`), and one whose
    /// share overdraws the pool leaves no slots for batches.
    pub fn session(&'static self) -> Lease {
        self.free
            .fetch_sub(SESSION_DESCRIPTORS as isize, Ordering::Relaxed);
        Lease {
            pool: self,
            held: 0,
        }
    }
}

impl Lease {
    /// Takes the slots for one more batched file, unless the pool or this
    /// session's cap is out of them.
    pub fn take_file(&mut self) -> bool {
        let n = BATCH_SLOTS_PER_FILE;
        if self.held + n > self.pool.cap {
            return false;
        }
        let taken = self
            .pool
            .free
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |free| {
                (free >= n as isize).then_some(free - n as isize)
            })
            .is_ok();
        if taken {
            self.held += n;
        }
        taken
    }

    /// Returns the batch's slots (the batch was committed).
    pub fn release_batch(&mut self) {
        self.pool
            .free
            .fetch_add(self.held as isize, Ordering::Relaxed);
        self.held = 0;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release_batch();
        self.pool
            .free
            .fetch_add(SESSION_DESCRIPTORS as isize, Ordering::Relaxed);
    }
}

/// A retryable failure naming the limit, if `errno` says the process
/// (`EMFILE`) or the system (`ENFILE`) ran out of file descriptors: other
/// sessions finishing frees them, so a retry may well succeed.
pub fn exhausted(errno: Option<i32>, what: &str) -> Option<Failure> {
    let limit = match errno? {
        libc::EMFILE => format!(
            "this process may open {} files (`ulimit -n`, the hard RLIMIT_NOFILE); \
             raise it or serve fewer sessions at once",
            nofile()
        ),
        libc::ENFILE => "the system's table of open files is full (fs.file-max)".to_string(),
        _ => return None,
    };
    Some(Failure::retryable(format!(
        "{what}: out of file descriptors: {limit}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaked(limit: u64) -> &'static Pool {
        Box::leak(Box::new(Pool::new(limit)))
    }

    fn files(lease: &mut Lease) -> usize {
        std::iter::from_fn(|| lease.take_file().then_some(()))
            .take(MAX_BATCH_FILES + 1)
            .count()
    }

    #[test]
    fn one_session_takes_at_most_half_and_a_second_still_gets_slots() {
        let pool = leaked(RESERVE + 200);
        let mut first = pool.session();
        let mut second = pool.session();
        let cap = pool.session_cap();
        assert_eq!(cap, (200 - SESSION_DESCRIPTORS) / 2);
        assert_eq!(files(&mut first), cap / BATCH_SLOTS_PER_FILE);
        assert!(files(&mut second) > 0);
        first.release_batch();
        assert!(first.take_file());
    }

    #[test]
    fn sessions_beyond_the_pool_batch_nothing_and_give_everything_back() {
        let pool = leaked(RESERVE + 2 * SESSION_DESCRIPTORS as u64 + 4);
        let mut sessions: Vec<Lease> = (0..3).map(|_| pool.session()).collect();
        assert!(!sessions[0].take_file());
        sessions.pop();
        assert!(sessions[0].take_file());
        drop(sessions);
        assert_eq!(
            pool.free.load(Ordering::Relaxed),
            2 * SESSION_DESCRIPTORS as isize + 4
        );
    }

    #[test]
    fn a_huge_limit_caps_a_batch_at_its_file_count() {
        let pool = leaked(1 << 40);
        assert_eq!(files(&mut pool.session()), MAX_BATCH_FILES);
    }

    #[test]
    fn only_descriptor_errors_are_exhaustion_and_they_are_retryable() {
        let failure = exhausted(Some(libc::EMFILE), "v/a").unwrap();
        assert!(failure.retryable);
        assert!(failure.message.contains("ulimit -n"), "{failure}");
        assert!(exhausted(Some(libc::ENFILE), "v/a").is_some());
        assert!(exhausted(Some(libc::ENOENT), "v/a").is_none());
        assert!(exhausted(None, "v/a").is_none());
    }
}
