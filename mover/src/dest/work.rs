//! The receiver's work area: the one directory of a volume where the mover
//! keeps files of its own (temporaries being written, and the parts of files
//! that arrived before a session broke off).
//!
//! Every name a user can create must round-trip, so the mover reserves no
//! name in the user's tree. The work area sits in the volume root under one
//! of a few candidate names ([`candidate`]: `.mover-work`, `.mover-work.1`,
//! ...), and a session uses only a candidate that the sender's Hello proved
//! absent from the source root (the sender lists which candidates its root
//! has, [`reserved_in`]), so the walk can never name it. A directory under
//! a candidate name is taken for the mover's own only if it holds a marker
//! naming that very directory's inode: a user directory that merely has the
//! name, or a copy of an old work area, is the user's.
//!
//! A successful sync removes the work area, so the destination then holds
//! exactly the source's names; or, when the operator keeps the hash cache
//! (`--keep-hash-cache`), leaves it holding only the cache's entries
//! ([`super::hash_cache`]). After a crash or a broken connection it may
//! remain, holding partial files that the next session resumes from and
//! then removes.

use super::hash_cache::{self, HashCache};
use super::volume::{Dir, Result, StatKind, Volume};
use crate::entry::RelPath;
use std::collections::HashSet;
use std::io::{Read, Write};

/// The first candidate name; the others add `.1` to `.64`.
pub const WORK_NAME: &str = ".mover-work";
/// How many names the work area may take (`.mover-work` and `.1`..`.64`).
pub const CANDIDATES: u32 = 65;
/// The file that proves a directory is this volume's work area.
const MARKER: &[u8] = b"id";
/// Partial files are `p.` and the hex of a hash of their path.
const PARTIAL_PREFIX: &[u8] = b"p.";
/// Files being written in place (`--inplace`) are journaled as `i.` and the
/// hex of a hash of their path, holding the path.
const INPLACE_PREFIX: &[u8] = b"i.";
/// Most partial files kept; beyond that the oldest sessions' are dropped.
const MAX_PARTIALS: usize = 64;

/// The `i`th candidate name.
pub fn candidate(i: u32) -> Vec<u8> {
    match i {
        0 => WORK_NAME.as_bytes().to_vec(),
        i => format!("{WORK_NAME}.{i}").into_bytes(),
    }
}

/// Which candidate names the directory `root` (a source root) holds: what
/// the sender tells the receiver, so that the receiver's work area never
/// has a name the walk will list.
pub fn reserved_in(root: &std::path::Path) -> Vec<u32> {
    (0..CANDIDATES)
        .filter(|&i| {
            let name = candidate(i);
            let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&name);
            std::fs::symlink_metadata(root.join(name)).is_ok()
        })
        .collect()
}

/// Where a delta base is read from: the destination file itself, or a
/// partial file in the work area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseRef {
    Dest(RelPath),
    Partial(Vec<u8>),
}

impl BaseRef {
    /// Opens the base for reading; `None` when it is gone or unreadable
    /// (the caller then asks for the file whole).
    pub fn open(&self, volume: &Volume) -> Option<std::fs::File> {
        match self {
            BaseRef::Dest(path) => {
                let (parent, name) = path.split_last()?;
                volume.open_dir(&parent).ok()?.open_file(name).ok()
            }
            BaseRef::Partial(name) => volume.work_dir()?.open_file(name).ok(),
        }
    }
}

/// A session's work area.
pub struct WorkArea {
    name: Vec<u8>,
    /// Names of the partial files it holds.
    partials: HashSet<Vec<u8>>,
    /// Files a session was writing in place when it stopped: whatever their
    /// size and mtime say, they must be compared again.
    dirty: HashSet<RelPath>,
}

impl WorkArea {
    /// Finds this volume's work area, or picks a name for one (made on
    /// first use), among the candidates not in `reserved`, and makes it the
    /// volume's place for temporaries. Temporaries a crashed session left
    /// in it are removed; the hash cache's entries are counted for `cache`.
    /// `None` when every candidate is taken (then temporaries go beside
    /// their final names and nothing is kept to resume from).
    pub fn open(volume: &Volume, reserved: &[u32], cache: &HashCache) -> Result<Option<WorkArea>> {
        let root = volume.root();
        let mut ours = None;
        let mut free = None;
        for i in 0..CANDIDATES {
            let name = candidate(i);
            match root.stat(&name)? {
                None if !reserved.contains(&i) => {
                    free.get_or_insert(name);
                }
                Some(st) if st.kind == StatKind::Dir && ours.is_none() => {
                    if let Some(dir) = Self::ours(&root, &name)? {
                        ours = Some((i, name, dir));
                    }
                }
                _ => {}
            }
        }
        let (name, dir) = match (ours, free) {
            (Some((i, name, dir)), _) if !reserved.contains(&i) => (name, dir),
            // The source now has our name: move aside to a free one (the
            // marker names the inode, which a rename keeps).
            (Some((_, name, _)), Some(to)) => {
                root.rename_noreplace(&name, &to)?;
                let dir = root.open_subdir(&to)?;
                (to, dir)
            }
            (Some((_, name, _)), None) => {
                root.remove(&name)?;
                return Ok(Self::none(volume));
            }
            (None, Some(to)) => {
                volume.plan_work_area(&to);
                return Ok(Some(WorkArea {
                    name: to,
                    partials: HashSet::new(),
                    dirty: HashSet::new(),
                }));
            }
            (None, None) => return Ok(Self::none(volume)),
        };
        let mut partials = HashSet::new();
        let mut dirty = HashSet::new();
        let mut cached = 0;
        for entry in dir.names()? {
            if entry == MARKER {
                continue;
            }
            if let Some(bytes) = hash_cache::entry_size(&dir, &entry) {
                cached += bytes;
                continue;
            }
            if entry.starts_with(INPLACE_PREFIX) {
                if let Some(path) = Self::journaled(&dir, &entry) {
                    dirty.insert(path);
                    continue;
                }
            }
            if entry.starts_with(PARTIAL_PREFIX) && partials.len() < MAX_PARTIALS {
                partials.insert(entry);
            } else {
                dir.remove(&entry)?;
            }
        }
        volume.set_work_area(&name, &dir);
        cache.opened(&dir, cached);
        Ok(Some(WorkArea {
            name,
            partials,
            dirty,
        }))
    }

    fn none(volume: &Volume) -> Option<WorkArea> {
        tracing::warn!(
            "{}: the source root holds every work area name ({WORK_NAME}, {WORK_NAME}.1 to \
             .{}); temporaries go beside their files and nothing is kept to resume from",
            volume.name(),
            CANDIDATES - 1
        );
        None
    }

    /// The name of the work area a session whose source root has the
    /// candidates `reserved` would use, if one exists: a dry run, which
    /// neither makes nor moves one, lists the root without it (a kept hash
    /// cache is no deletion).
    pub fn existing(volume: &Volume, reserved: &[u32]) -> Result<Option<Vec<u8>>> {
        let root = volume.root();
        for i in 0..CANDIDATES {
            let name = candidate(i);
            if root.stat(&name)?.is_some_and(|st| st.kind == StatKind::Dir)
                && Self::ours(&root, &name)?.is_some()
            {
                return Ok((!reserved.contains(&i)).then_some(name));
            }
        }
        Ok(None)
    }

    /// The candidate directory `name` if its marker names it.
    fn ours(root: &Dir, name: &[u8]) -> Result<Option<Dir>> {
        let dir = match root.open_subdir(name) {
            Ok(dir) => dir,
            Err(_) => return Ok(None),
        };
        let st = dir.stat_self()?;
        let Ok(file) = dir.open_file(MARKER) else {
            return Ok(None);
        };
        let mut text = Vec::new();
        let read = file.take(256).read_to_end(&mut text);
        Ok((read.is_ok() && text == marker_text(st.dev, st.ino)).then_some(dir))
    }

    /// The work area's name in the volume root.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The name under which the part of `path` that arrived is kept.
    pub fn partial_name(path: &RelPath) -> Vec<u8> {
        hashed_name(PARTIAL_PREFIX, path)
    }

    /// The path a journal entry names, if it is a valid one.
    fn journaled(dir: &Dir, entry: &[u8]) -> Option<RelPath> {
        let mut text = Vec::new();
        dir.open_file(entry)
            .ok()?
            .take(crate::entry::MAX_PATH_LEN as u64 + 1)
            .read_to_end(&mut text)
            .ok()?;
        let path = RelPath::parse(&text).ok()?;
        (hashed_name(INPLACE_PREFIX, &path) == entry).then_some(path)
    }

    /// Whether `path` was being written in place when a session stopped:
    /// its size and mtime prove nothing then.
    pub fn is_dirty(&self, path: &RelPath) -> bool {
        !self.dirty.is_empty() && self.dirty.contains(path)
    }

    /// Records durably, before the first write, that `path` is being
    /// written in place; false when there is no work area to record it in
    /// (then it must not be).
    pub fn writing_in_place(&mut self, volume: &Volume, path: &RelPath) -> Result<bool> {
        let Some(dir) = volume.make_work_dir()? else {
            return Ok(false);
        };
        let name = hashed_name(INPLACE_PREFIX, path);
        dir.remove(&name)?;
        let mut entry = dir.create_new(&name)?;
        entry
            .write_all(path.as_bytes())
            .and_then(|()| entry.sync_all())
            .map_err(|err| dir.io_error(&name, "write", err))?;
        dir.fsync_self()?;
        self.dirty.insert(path.clone());
        Ok(true)
    }

    /// `path` is complete and durable again (or replaced whole).
    pub fn written_in_place(&mut self, volume: &Volume, path: &RelPath) -> Result<()> {
        if self.dirty.remove(path) {
            if let Some(dir) = volume.work_dir() {
                dir.remove(&hashed_name(INPLACE_PREFIX, path))?;
            }
        }
        Ok(())
    }

    /// The partial file kept for `path` and its length, if there is one.
    pub fn partial(&self, volume: &Volume, path: &RelPath) -> Result<Option<(Vec<u8>, u64)>> {
        // Nearly always none: then no name is worked out for every file.
        if self.partials.is_empty() {
            return Ok(None);
        }
        let name = Self::partial_name(path);
        if !self.partials.contains(&name) {
            return Ok(None);
        }
        let Some(dir) = volume.work_dir() else {
            return Ok(None);
        };
        Ok(dir
            .stat(&name)?
            .filter(|st| st.kind == StatKind::File)
            .map(|st| (name, st.size)))
    }

    /// Records a partial file just kept.
    pub fn kept(&mut self, name: Vec<u8>) {
        self.partials.insert(name);
    }

    /// Removes the partial file kept for `path`, if any.
    pub fn drop_partial(&mut self, volume: &Volume, path: &RelPath) -> Result<()> {
        if self.partials.is_empty() {
            return Ok(());
        }
        let name = Self::partial_name(path);
        if self.partials.remove(&name) {
            if let Some(dir) = volume.work_dir() {
                dir.remove(&name)?;
            }
        }
        Ok(())
    }

    /// Ends the session's use: after a complete sync everything goes but
    /// the hash cache's entries when `cache` keeps them; otherwise the
    /// partial files stay for the next session (and the directory too,
    /// unless it holds nothing of use).
    pub fn close(self, complete: bool, volume: &Volume, cache: &HashCache) -> Result<()> {
        let Some(dir) = volume.work_dir() else {
            return Ok(());
        };
        let names = dir.names()?;
        let cached = |n: &[u8]| cache.keeps() && hash_cache::entry_size(&dir, n).is_some();
        if !names.iter().any(|n| cached(n)) {
            if complete || names.iter().all(|n| n == MARKER) {
                volume.root().remove(&self.name)?;
            }
        } else if complete {
            for name in names.iter().filter(|n| *n != MARKER && !cached(n)) {
                dir.remove(name)?;
            }
        }
        Ok(())
    }
}

/// Makes the work area `name` in the volume root, with the marker that
/// proves it is the mover's.
pub(super) fn make(root: &Dir, name: &[u8]) -> Result<Dir> {
    root.mkdir(name, 0o700)?;
    let dir = root.open_subdir(name)?;
    let st = dir.stat_self()?;
    let mut marker = dir.create_new(MARKER)?;
    marker
        .write_all(&marker_text(st.dev, st.ino))
        .map_err(|err| dir.io_error(MARKER, "write", err))?;
    Ok(dir)
}

/// `prefix` and the hex of the first 128 bits of a blake3 hash of `path`:
/// a fixed-length name for any path.
fn hashed_name(prefix: &[u8], path: &RelPath) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = blake3::hash(path.as_bytes());
    let mut name = prefix.to_vec();
    for b in &hash.as_bytes()[..16] {
        name.extend([HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
    name
}

fn marker_text(dev: u64, ino: u64) -> Vec<u8> {
    format!("mover work area of this volume: {dev}:{ino}\n").into_bytes()
}

impl std::fmt::Debug for WorkArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkArea({:?})", String::from_utf8_lossy(&self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use crate::dest::hash_cache::CacheConfig;
    use crate::dest::names;

    fn no_cache() -> HashCache {
        HashCache::new(CacheConfig::default())
    }

    /// One session: opens the work area, keeps a partial for `path`, ends
    /// incomplete.
    fn session_keeping(root: &std::path::Path, reserved: &[u32], path: &RelPath) {
        let volume = Volume::open("v", root).unwrap();
        let mut work = WorkArea::open(&volume, reserved, &no_cache())
            .unwrap()
            .unwrap();
        let mut temp = volume.root().create_temp(b"f").unwrap();
        temp.file().write_all(b"the first part").unwrap();
        let name = WorkArea::partial_name(path);
        temp.keep_as(&name).unwrap();
        work.kept(name);
        work.close(false, &volume, &no_cache()).unwrap();
    }

    #[test]
    fn the_sender_reports_the_candidates_its_root_has() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(".mover-work")).unwrap();
        std::fs::write(tmp.path().join(".mover-work.7"), b"").unwrap();
        std::os::unix::fs::symlink("nowhere", tmp.path().join(".mover-work.64")).unwrap();
        std::fs::write(tmp.path().join(".mover-work.65"), b"").unwrap();
        std::fs::write(tmp.path().join(".mover-work.x"), b"").unwrap();
        assert_eq!(reserved_in(tmp.path()), [0, 7, 64]);
    }

    #[test]
    fn made_on_first_use_and_gone_after_a_complete_session() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = Volume::open("v", tmp.path()).unwrap();
        let work = WorkArea::open(&volume, &[], &no_cache()).unwrap().unwrap();
        assert_eq!(work.name(), WORK_NAME.as_bytes());
        assert!(names(tmp.path()).is_empty(), "nothing made before a write");
        let mut temp = volume.root().create_temp(b"f").unwrap();
        temp.file().write_all(b"x").unwrap();
        assert_eq!(names(tmp.path()), [WORK_NAME]);
        temp.commit().unwrap();
        work.close(true, &volume, &no_cache()).unwrap();
        assert_eq!(names(tmp.path()), ["f"]);
    }

    #[test]
    fn partials_survive_and_move_aside_when_the_source_takes_the_name() {
        let tmp = tempfile::tempdir().unwrap();
        let path = RelPath::parse(b"dir/big").unwrap();
        session_keeping(tmp.path(), &[2], &path);
        assert_eq!(names(tmp.path()), [WORK_NAME]);

        // A user directory under another candidate, even holding a copy of
        // our marker, is not ours.
        let copy = tmp.path().join(".mover-work.1");
        std::fs::create_dir(&copy).unwrap();
        std::fs::copy(tmp.path().join(".mover-work/id"), copy.join("id")).unwrap();

        // The source root now has `.mover-work` and `.mover-work.2`: the
        // area moves to the first free name and keeps its partial.
        let volume = Volume::open("v", tmp.path()).unwrap();
        let mut work = WorkArea::open(&volume, &[0, 2], &no_cache())
            .unwrap()
            .unwrap();
        assert_eq!(work.name(), b".mover-work.3");
        assert_eq!(names(tmp.path()), [".mover-work.1", ".mover-work.3"]);
        let (name, len) = work.partial(&volume, &path).unwrap().unwrap();
        assert_eq!(len, 14);
        assert_eq!(
            std::fs::read(
                tmp.path()
                    .join(".mover-work.3")
                    .join(String::from_utf8(name).unwrap())
            )
            .unwrap(),
            b"the first part"
        );
        work.drop_partial(&volume, &path).unwrap();
        assert!(work.partial(&volume, &path).unwrap().is_none());
        work.close(false, &volume, &no_cache()).unwrap();
        assert_eq!(names(tmp.path()), [".mover-work.1"], "an empty area goes");
        assert_eq!(names(&copy), ["id"], "the user's directory is untouched");
    }

    #[test]
    fn files_written_in_place_stay_dirty_until_done() {
        let tmp = tempfile::tempdir().unwrap();
        let path = RelPath::parse(b"db/data").unwrap();
        let other = RelPath::parse(b"db/other").unwrap();
        let volume = Volume::open("v", tmp.path()).unwrap();
        let mut work = WorkArea::open(&volume, &[], &no_cache()).unwrap().unwrap();
        assert!(work.writing_in_place(&volume, &path).unwrap());
        assert!(work.writing_in_place(&volume, &other).unwrap());
        work.written_in_place(&volume, &other).unwrap();
        // The session stops here, as a crash would leave it.
        drop(work);
        let volume = Volume::open("v", tmp.path()).unwrap();
        let mut work = WorkArea::open(&volume, &[], &no_cache()).unwrap().unwrap();
        assert!(work.is_dirty(&path));
        assert!(!work.is_dirty(&other));
        work.written_in_place(&volume, &path).unwrap();
        assert!(!work.is_dirty(&path));
        work.close(false, &volume, &no_cache()).unwrap();
        assert!(names(tmp.path()).is_empty(), "nothing left to redo");
    }

    #[test]
    fn stale_temporaries_are_cleared_and_every_name_taken_means_none() {
        let tmp = tempfile::tempdir().unwrap();
        let path = RelPath::parse(b"f").unwrap();
        session_keeping(tmp.path(), &[], &path);
        std::fs::write(tmp.path().join(".mover-work/.mover-tmp.1.2.3"), b"crash").unwrap();
        let volume = Volume::open("v", tmp.path()).unwrap();
        let work = WorkArea::open(&volume, &[], &no_cache()).unwrap().unwrap();
        let mut left = names(&tmp.path().join(".mover-work"));
        left.retain(|n| n != "id");
        assert_eq!(
            left,
            [String::from_utf8(WorkArea::partial_name(&path)).unwrap()]
        );
        work.close(true, &volume, &no_cache()).unwrap();
        assert!(names(tmp.path()).is_empty());

        let all: Vec<u32> = (0..CANDIDATES).collect();
        let volume = Volume::open("v", tmp.path()).unwrap();
        assert!(WorkArea::open(&volume, &all, &no_cache())
            .unwrap()
            .is_none());
        // Temporaries then go beside their final name.
        let mut temp = volume.root().create_temp(b"g").unwrap();
        temp.file().write_all(b"g").unwrap();
        temp.commit().unwrap();
        assert_eq!(names(tmp.path()), ["g"]);
    }

    #[test]
    fn a_kept_cache_is_all_a_complete_sync_leaves() {
        let tmp = tempfile::tempdir().unwrap();
        let path = RelPath::parse(b"f").unwrap();
        session_keeping(tmp.path(), &[], &path);
        let area = tmp.path().join(".mover-work");
        std::fs::write(area.join("h.1.2"), b"an entry").unwrap();
        let keep = HashCache::new(CacheConfig {
            keep: true,
            ..CacheConfig::default()
        });
        let volume = Volume::open("v", tmp.path()).unwrap();
        let work = WorkArea::open(&volume, &[], &keep).unwrap().unwrap();
        work.close(true, &volume, &keep).unwrap();
        assert_eq!(names(&area), ["h.1.2", "id"], "the partial went");
        // A session that does not keep the cache uses it, then removes it.
        let volume = Volume::open("v", tmp.path()).unwrap();
        let work = WorkArea::open(&volume, &[], &no_cache()).unwrap().unwrap();
        work.close(false, &volume, &no_cache()).unwrap();
        assert_eq!(names(&area), ["h.1.2", "id"], "an unfinished sync keeps it");
        let volume = Volume::open("v", tmp.path()).unwrap();
        let work = WorkArea::open(&volume, &[], &no_cache()).unwrap().unwrap();
        work.close(true, &volume, &no_cache()).unwrap();
        assert!(names(tmp.path()).is_empty());
    }
}
