//! The volumes a receiver serves, which session writes each, and which are
//! done.
//!
//! One session writes a volume at a time. A sender whose connection died
//! silently would otherwise keep its volume for the whole idle timeout,
//! longer than a retrying sender waits; so a new session for a busy volume
//! asks the one holding it to prove its sender alive ([`Claim::probes`]),
//! and takes the volume over once that session has failed the probe and
//! stopped completely.

use crate::block::disk::Kind;
use crate::failure::Failure;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore, SemaphorePermit};

/// How long a session's sender has to show it is alive once another
/// connection asks for its volume: a sender answers a probe at once, so
/// this is a round trip with ample room for a loaded machine.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// How long a session taking a volume over waits for the old session to
/// stop (finish its queued writes and put its half-written file aside).
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A request to prove the holding session's sender alive: answered with
/// `()` if it is, dropped unanswered if it is not (or the session ended).
pub type Liveness = oneshot::Sender<()>;

pub struct Volumes {
    slots: BTreeMap<String, Slot>,
    /// Sessions waiting for their data connections (`--streams`).
    pub lanes: super::lanes::Lanes,
}

struct Slot {
    path: PathBuf,
    /// A block volume (a device or disk image), written by block copies
    /// only; otherwise a directory tree.
    block: bool,
    /// One permit, held by the session writing this volume.
    writing: Semaphore,
    /// Reaches the session holding `writing`.
    holder: Mutex<Option<mpsc::Sender<Liveness>>>,
    synced: AtomicBool,
}

/// Exclusive use of one volume for one session; released on drop, which
/// the session must only do once nothing of it writes the volume any more.
pub struct Claim<'a> {
    pub name: &'a str,
    pub path: &'a PathBuf,
    /// See [`Volumes::new`].
    pub block: bool,
    /// Other sessions asking this one to prove its sender alive.
    pub probes: mpsc::Receiver<Liveness>,
    slot: &'a Slot,
    _writing: SemaphorePermit<'a>,
}

impl Volumes {
    /// Checks that every volume is a directory or a block volume, that
    /// names are unique and valid, and that no volume lies within another
    /// (two sessions would write the same files, and one's deletions would
    /// remove the other's).
    ///
    /// A block device is a block volume. With `block`, every volume is:
    /// a device, or a disk image (a regular file, created by the first
    /// copy if missing), and a directory is refused.
    pub fn new(list: Vec<(String, PathBuf)>, block: bool) -> Result<Self, String> {
        let mut slots = BTreeMap::new();
        let mut roots: Vec<(String, PathBuf, PathBuf)> = Vec::new();
        for (name, path) in list {
            crate::certs::validate_volume_name(&name)
                .map_err(|e| format!("volume {name:?}: {e}"))?;
            let is_block = volume_kind(&name, &path, block)?;
            let real =
                canonical(&path).map_err(|e| format!("volume {name}: {}: {e}", path.display()))?;
            if let Some((other, other_path, _)) = roots
                .iter()
                .find(|(_, _, r)| r.starts_with(&real) || real.starts_with(r))
            {
                return Err(format!(
                    "volumes {other} ({}) and {name} ({}) overlap: each volume needs a tree of its own",
                    other_path.display(),
                    path.display(),
                ));
            }
            roots.push((name.clone(), path.clone(), real));
            let slot = Slot {
                path,
                block: is_block,
                writing: Semaphore::new(1),
                holder: Mutex::new(None),
                synced: AtomicBool::new(false),
            };
            if slots.insert(name.clone(), slot).is_some() {
                return Err(format!("volume {name} is listed twice"));
            }
        }
        if slots.is_empty() {
            return Err("no volume to serve (use --volume NAME=PATH)".into());
        }
        Ok(Volumes {
            slots,
            lanes: Default::default(),
        })
    }

    /// Takes `name` for one session: refused if unknown or not allowed by
    /// the peer's certificate. If another session writes it, that session
    /// must prove its sender alive; if it cannot, it stops and this one
    /// takes over, else this one is told the volume is busy.
    pub async fn claim(&self, name: &str, allowed: &[String]) -> Result<Claim<'_>, Failure> {
        if !allowed.iter().any(|a| a == name) {
            return Err(Failure::permanent(format!(
                "the client certificate does not allow volume {name:?} (it allows: {})",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        let (name, slot) = self.slots.get_key_value(name).ok_or_else(|| {
            Failure::permanent(format!("this receiver does not serve volume {name:?}"))
        })?;
        let writing = match slot.writing.try_acquire() {
            Ok(permit) => permit,
            Err(_) => slot.take_over(name).await?,
        };
        let (asker, probes) = mpsc::channel(1);
        *slot.holder() = Some(asker);
        Ok(Claim {
            name,
            path: &slot.path,
            block: slot.block,
            probes,
            slot,
            _writing: writing,
        })
    }

    pub fn all_synced(&self) -> bool {
        self.slots
            .values()
            .all(|s| s.synced.load(Ordering::Acquire))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }
}

/// Whether volume `name` at `path` is a block volume (see
/// [`Volumes::new`]), or why it can be neither kind.
fn volume_kind(name: &str, path: &Path, block: bool) -> Result<bool, String> {
    use crate::block::disk::{kind_of, DiskError};
    let at = path.display();
    match (kind_of(path), block) {
        (Err(DiskError::Directory { .. }), false) => Ok(false),
        (Err(DiskError::Directory { .. }), true) => Err(format!(
            "volume {name}: --block is given, but {at} is a directory (a block volume is a device or a disk image)"
        )),
        (Ok(Some(Kind::Device)), _) | (Ok(Some(Kind::Image) | None), true) => Ok(true),
        (Ok(Some(Kind::Image)), false) => Err(format!(
            "volume {name}: {at} is a regular file; serve a disk image with --block"
        )),
        (Ok(None), false) => Err(format!("volume {name}: {at} is not a directory")),
        (Err(e), _) => Err(format!("volume {name}: {e}")),
    }
}

/// `path` with symlinks resolved; for a disk image not created yet, its
/// directory's.
fn canonical(path: &Path) -> std::io::Result<PathBuf> {
    match path.canonicalize() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(e);
            };
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            Ok(dir.canonicalize()?.join(name))
        }
        real => real,
    }
}

impl Slot {
    fn holder(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<Liveness>>> {
        self.holder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Probes the session holding this volume; once it has failed and let
    /// go, the volume is ours.
    async fn take_over(&self, name: &str) -> Result<SemaphorePermit<'_>, Failure> {
        let busy = || Failure::retryable(format!("volume {name} is busy with another sender"));
        let holder = self.holder().clone().ok_or_else(busy)?;
        let (ask, answer) = oneshot::channel();
        // One probe at a time; a second newcomer is simply told to retry.
        holder.try_send(ask).map_err(|_| busy())?;
        match tokio::time::timeout(2 * PROBE_DEADLINE, answer).await {
            // Alive, or too busy writing to look: it keeps the volume.
            Ok(Ok(())) | Err(_) => return Err(busy()),
            Ok(Err(_)) => {}
        }
        tracing::info!("volume {name}: its sender failed a liveness probe; taking over");
        match tokio::time::timeout(STOP_DEADLINE, self.writing.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy()),
        }
    }
}

impl Claim<'_> {
    /// Records one complete sync of this volume.
    pub fn synced(&self) {
        self.slot.synced.store(true, Ordering::Release);
    }
}

impl Drop for Claim<'_> {
    /// Unreachable by probes first, then free (the permit drops after this).
    fn drop(&mut self) {
        *self.slot.holder() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block device is a block volume by itself; with `block` an image
    /// (existing or not) is one too, and a directory is refused; without
    /// it an image is refused. An image inside a tree volume overlaps it.
    #[test]
    fn block_volumes_are_devices_or_images_given_block() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tree");
        std::fs::create_dir(&dir).unwrap();
        let image = tmp.path().join("disk.img");
        std::fs::write(&image, b"x").unwrap();
        let missing = tmp.path().join("new.img");
        let one = |path: &Path, block: bool| Volumes::new(vec![("v".into(), path.into())], block);
        assert!(!one(&dir, false).unwrap().slots["v"].block);
        assert!(one(&image, true).unwrap().slots["v"].block);
        assert!(one(&missing, true).unwrap().slots["v"].block);
        let err = one(&image, false).err().unwrap();
        assert!(err.contains("serve a disk image with --block"), "{err}");
        let err = one(&dir, true).err().unwrap();
        assert!(err.contains("--block is given, but"), "{err}");
        let err = one(&missing, false).err().unwrap();
        assert!(err.ends_with("is not a directory"), "{err}");
        let inside = vec![
            ("t".to_string(), tmp.path().to_path_buf()),
            ("d".to_string(), missing.clone()),
        ];
        assert!(
            Volumes::new(inside, true).is_err(),
            "a directory with --block"
        );
        let err = Volumes::new(
            vec![("a".into(), image.clone()), ("b".into(), image.clone())],
            true,
        )
        .err()
        .unwrap();
        assert!(err.contains("overlap"), "{err}");
    }

    /// Volumes that contain one another, also through a symlink, are
    /// refused with both named.
    #[test]
    fn overlapping_volumes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let x = tmp.path().join("x");
        std::fs::create_dir_all(x.join("sub")).unwrap();
        std::fs::create_dir(tmp.path().join("other")).unwrap();
        let alias = tmp.path().join("alias");
        std::os::unix::fs::symlink(&x, &alias).unwrap();
        for (a, b) in [
            (x.clone(), x.join("sub")),
            (x.join("sub"), x.clone()),
            (x.clone(), alias),
        ] {
            let list = vec![
                ("a".to_string(), a.clone()),
                ("c".to_string(), tmp.path().join("other")),
                ("b".to_string(), b.clone()),
            ];
            let err = Volumes::new(list, false).err().expect("refused");
            let both = format!(
                "volumes a ({}) and b ({}) overlap",
                a.display(),
                b.display()
            );
            assert!(err.contains(&both), "{err}");
        }
        let apart = vec![
            ("a".to_string(), x.join("sub")),
            ("b".to_string(), tmp.path().join("other")),
        ];
        assert!(Volumes::new(apart, false).is_ok());
    }
}
