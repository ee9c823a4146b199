//! The receiver's segment-hash cache: the segment hashes of large files it
//! wrote or hashed, so that a resync announces a base without reading it.
//!
//! A resync of a large file otherwise costs a read of the receiver's whole
//! copy, however little changed. Each entry lives in the volume's work area
//! ([`super::work`], whose name the sender proved absent from the source, so
//! no source name can collide) as `h.<dev>.<ino>` in hex, and holds:
//! - the file's [`Identity`] (device, inode, size, mtime and ctime in ns)
//!   taken after the receiver's last change to the file, data and metadata;
//! - the segment size and the segment hashes;
//! - a blake3 check of all of the above.
//!
//! An entry is used only when the file's identity now is exactly the one it
//! holds: a write, a chmod, a `touch`, or another file on a reused inode
//! changes the ctime (which no user can set), and the file is hashed as if
//! there were no entry. A torn, truncated or otherwise corrupt entry fails
//! its check and is ignored. A cached hash never replaces verifying what is
//! written: the end-to-end hash still covers every file, and a copied
//! segment of a base that changed since fails it.
//!
//! Entries are written only for files of [`MIN_FILE`] or more (below that a
//! read costs about what the entry does), and only when the operator keeps
//! the cache (`--keep-hash-cache`); they are read whenever present. Their
//! total size is bounded: past the bound the least recently used entries
//! go. Each entry is read or written alone, streamed; none is held longer
//! than the file it describes is being announced.

use super::volume::{Dir, StatKind, Volume};
use crate::delta;
use crate::wire::message::SegmentHash;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// Cache entries are `h.` and the hex of the file's device and inode.
pub const PREFIX: &[u8] = b"h.";
/// Smallest file given an entry: 64 segments of the smallest size, and the
/// size from which a file sent whole is checked by its segment hashes, so
/// that writing it yields its entry for free.
pub const MIN_FILE: u64 = delta::LISTED_MIN;
/// Default bound on the entries' total size: the hashes of about 256 GiB
/// of files at the smallest segment size.
pub const DEFAULT_LIMIT: u64 = 256 << 20;
/// After pruning, the entries take at most this share of the bound, so a
/// prune (a listing of the work area) is not repeated for every entry.
const PRUNE_TO_PERCENT: u64 = 75;

const MAGIC: &[u8; 8] = b"mvrhash1";
/// Magic, identity (7 numbers), segment size and count.
const HEADER: usize = 8 + 7 * 8 + 4 + 4;
/// The truncated blake3 of everything before it.
const CHECK: usize = 16;
const HASH: usize = std::mem::size_of::<SegmentHash>();

/// What tells one version of a file from another: a rewrite or a
/// replacement changes the inode, the size or the change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    pub fn of(file: &std::fs::File) -> std::io::Result<Self> {
        let md = file.metadata()?;
        Ok(Identity {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn encode(&self) -> [u8; 56] {
        let fields = [
            self.dev,
            self.ino,
            self.size,
            self.mtime.0 as u64,
            self.mtime.1 as u64,
            self.ctime.0 as u64,
            self.ctime.1 as u64,
        ];
        let mut out = [0u8; 56];
        for (slot, field) in out.chunks_exact_mut(8).zip(fields) {
            slot.copy_from_slice(&field.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Identity {
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        Identity {
            dev: field(0),
            ino: field(1),
            size: field(2),
            mtime: (field(3) as i64, field(4) as i64),
            ctime: (field(5) as i64, field(6) as i64),
        }
    }
}

/// A file's segment hashes, as a receiver that wrote it worked them out.
pub struct SegmentHashes {
    pub segment_size: u32,
    pub hashes: Vec<SegmentHash>,
}

/// The operator's choices for the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Write entries, and keep them (the work area holding only them) after
    /// a successful sync.
    pub keep: bool,
    /// Bound on the entries' total size, in bytes.
    pub limit: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            keep: false,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// One session's view of a volume's cache, shared by the applier (which
/// stores what it writes) and the hashing thread (which looks bases up).
#[derive(Debug)]
pub struct HashCache {
    config: CacheConfig,
    /// Bytes the entries take, as counted when the work area was opened
    /// plus what this session added (an estimate between prunes: two
    /// threads may replace one entry at once).
    total: Mutex<u64>,
}

impl HashCache {
    pub fn new(config: CacheConfig) -> Self {
        HashCache {
            config,
            total: Mutex::new(0),
        }
    }

    pub fn keeps(&self) -> bool {
        self.config.keep
    }

    /// The segment size a file of `size` bytes gets an entry at, when it
    /// gets one.
    pub fn wants(&self, size: u64) -> Option<u32> {
        (self.config.keep && size >= MIN_FILE)
            .then(|| delta::segment_size(size))
            .flatten()
    }

    /// Counts the entries an opened work area holds, and prunes them to the
    /// bound.
    pub fn opened(&self, dir: &Dir, bytes: u64) {
        *self.total() = bytes;
        if bytes > self.config.limit {
            self.prune(dir);
        }
    }

    /// The hashes of the file whose identity is `identity`, at
    /// `segment_size`, if an intact entry holds exactly them.
    pub fn lookup(
        &self,
        volume: &Volume,
        identity: &Identity,
        segment_size: u32,
    ) -> Option<Vec<SegmentHash>> {
        let dir = volume.work_dir()?;
        let name = entry_name(identity);
        let file = dir.open_file(&name).ok()?;
        match read_entry(&file, identity, segment_size) {
            Ok(hashes) => {
                // Used: the last to be evicted.
                let _ = file.set_modified(std::time::SystemTime::now());
                Some(hashes)
            }
            Err(why) => {
                tracing::debug!("{}: hash cache entry not used: {why}", dir.at(&name));
                None
            }
        }
    }

    /// Stores the hashes of the file whose identity (after the receiver's
    /// last change to it) is `identity`. Never fails: an entry that cannot
    /// be written is only a later cache miss.
    pub fn store(&self, volume: &Volume, identity: &Identity, hashes: &SegmentHashes) {
        if self.wants(identity.size) != Some(hashes.segment_size)
            || hashes.hashes.len() as u64 != identity.size.div_ceil(hashes.segment_size.into())
        {
            return;
        }
        let len = (HEADER + hashes.hashes.len() * HASH + CHECK) as u64;
        if len > self.config.limit {
            return;
        }
        let dir = match volume.make_work_dir() {
            Ok(Some(dir)) => dir,
            _ => return,
        };
        let name = entry_name(identity);
        let old = dir.stat(&name).ok().flatten().map_or(0, |st| st.size);
        let written = dir
            .remove(&name)
            .and_then(|()| dir.create_new(&name))
            .map_err(|e| e.to_string())
            .and_then(|file| write_entry(file, identity, hashes).map_err(|e| e.to_string()));
        match written {
            Ok(()) => self.added(&dir, len as i64 - old as i64),
            Err(why) => {
                // A torn entry fails its check; better gone all the same.
                let _ = dir.remove(&name);
                self.added(&dir, -(old as i64));
                tracing::debug!("{}: hash cache entry not written: {why}", dir.at(&name));
            }
        }
    }

    /// Drops the entry of a file that is being replaced by another inode.
    pub fn forget(&self, volume: &Volume, dev: u64, ino: u64) {
        let Some(dir) = volume.work_dir() else {
            return;
        };
        let name = name_of(dev, ino);
        if let Ok(Some(st)) = dir.stat(&name) {
            if dir.remove(&name).is_ok() {
                self.added(&dir, -(st.size as i64));
            }
        }
    }

    fn total(&self) -> std::sync::MutexGuard<'_, u64> {
        self.total.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn added(&self, dir: &Dir, bytes: i64) {
        let over = {
            let mut total = self.total();
            *total = total.saturating_add_signed(bytes);
            *total > self.config.limit
        };
        if over {
            self.prune(dir);
        }
    }

    /// Removes the least recently used entries until the rest take at most
    /// [`PRUNE_TO_PERCENT`] of the bound.
    fn prune(&self, dir: &Dir) {
        let Ok(names) = dir.names() else {
            return;
        };
        let mut entries: Vec<((i64, u32), u64, Vec<u8>)> = names
            .into_iter()
            .filter(|n| n.starts_with(PREFIX))
            .filter_map(|n| {
                let st = dir.stat(&n).ok()??;
                Some(((st.mtime_sec, st.mtime_nsec), st.size, n))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        let target = self.config.limit / 100 * PRUNE_TO_PERCENT;
        entries.sort_unstable();
        for (_, size, name) in entries {
            if total <= target {
                break;
            }
            if dir.remove(&name).is_ok() {
                total -= size;
            }
        }
        *self.total() = total;
    }
}

/// The size of `name` in the work area `dir` if it is a cache entry: those
/// are kept however the session that wrote them ended.
pub fn entry_size(dir: &Dir, name: &[u8]) -> Option<u64> {
    if !name.starts_with(PREFIX) {
        return None;
    }
    dir.stat(name)
        .ok()
        .flatten()
        .filter(|st| st.kind == StatKind::File)
        .map(|st| st.size)
}

fn entry_name(identity: &Identity) -> Vec<u8> {
    name_of(identity.dev, identity.ino)
}

fn name_of(dev: u64, ino: u64) -> Vec<u8> {
    format!("h.{dev:x}.{ino:x}").into_bytes()
}

fn write_entry(
    file: std::fs::File,
    identity: &Identity,
    hashes: &SegmentHashes,
) -> std::io::Result<()> {
    let mut check = blake3::Hasher::new();
    let mut out = BufWriter::new(file);
    let mut put = |bytes: &[u8]| {
        check.update(bytes);
        out.write_all(bytes)
    };
    put(MAGIC)?;
    put(&identity.encode())?;
    put(&hashes.segment_size.to_le_bytes())?;
    put(&(hashes.hashes.len() as u32).to_le_bytes())?;
    for hash in &hashes.hashes {
        put(hash)?;
    }
    out.write_all(&check.finalize().as_bytes()[..CHECK])?;
    out.flush()
}

/// Reads and checks an entry: it must be whole, intact, of `identity` and
/// at `segment_size`; the error says which it is not.
fn read_entry(
    file: &std::fs::File,
    identity: &Identity,
    segment_size: u32,
) -> Result<Vec<SegmentHash>, String> {
    let mut header = [0u8; HEADER];
    let mut reader = std::io::BufReader::new(file);
    reader
        .read_exact(&mut header)
        .map_err(|_| "shorter than its header".to_string())?;
    if &header[..8] != MAGIC {
        return Err("not an entry of this format".into());
    }
    if Identity::decode(&header[8..64]) != *identity {
        return Err("the file changed since".into());
    }
    let field = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (size, count) = (field(64), field(68));
    if size != segment_size || !delta::is_valid_segment_size(size) {
        return Err(format!("segment size {size}, not {segment_size}"));
    }
    if u64::from(count) != identity.size.div_ceil(size.into())
        || u64::from(count) > delta::MAX_SEGMENTS
    {
        return Err(format!("{count} segments for {} bytes", identity.size));
    }
    let expected = (HEADER + count as usize * HASH + CHECK) as u64;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len != expected {
        return Err(format!("{len} bytes, not {expected}"));
    }
    let mut check = blake3::Hasher::new();
    check.update(&header);
    let mut hashes = vec![[0u8; HASH]; count as usize];
    for hash in &mut hashes {
        reader
            .read_exact(hash)
            .map_err(|_| "truncated".to_string())?;
        check.update(hash);
    }
    let mut stored = [0u8; CHECK];
    reader
        .read_exact(&mut stored)
        .map_err(|_| "truncated".to_string())?;
    if stored != check.finalize().as_bytes()[..CHECK] {
        return Err("corrupt (its check fails)".into());
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A volume with a work area and a 3 MiB file `f` in it.
    fn setup(tmp: &std::path::Path) -> (Volume, Identity, SegmentHashes) {
        let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(tmp.join("f"), &data).unwrap();
        let volume = Volume::open("v", tmp).unwrap();
        volume.plan_work_area(b".mover-work");
        let identity = Identity::of(&std::fs::File::open(tmp.join("f")).unwrap()).unwrap();
        let seg = delta::MIN_SEGMENT;
        let hashes = SegmentHashes {
            segment_size: seg,
            hashes: data.chunks(seg as usize).map(delta::segment_hash).collect(),
        };
        (volume, identity, hashes)
    }

    fn keeping(limit: u64) -> HashCache {
        HashCache::new(CacheConfig { keep: true, limit })
    }

    #[test]
    fn an_entry_answers_only_for_the_same_identity_and_segment_size() {
        let tmp = tempfile::tempdir().unwrap();
        let (volume, identity, hashes) = setup(tmp.path());
        let cache = keeping(DEFAULT_LIMIT);
        cache.store(&volume, &identity, &hashes);
        let seg = hashes.segment_size;
        assert_eq!(
            cache.lookup(&volume, &identity, seg),
            Some(hashes.hashes.clone())
        );
        assert_eq!(cache.lookup(&volume, &identity, seg * 2), None);
        // A chmod moves only the ctime.
        let file = std::fs::File::open(tmp.path().join("f")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let now = Identity::of(&file).unwrap();
        assert_ne!(now, identity);
        assert_eq!(cache.lookup(&volume, &now, seg), None);
        // Not keeping: nothing is written.
        let other = HashCache::new(CacheConfig::default());
        other.store(&volume, &now, &hashes);
        assert_eq!(other.lookup(&volume, &now, seg), None);
    }

    #[test]
    fn damaged_entries_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let (volume, identity, hashes) = setup(tmp.path());
        let cache = keeping(DEFAULT_LIMIT);
        let seg = hashes.segment_size;
        let path = tmp
            .path()
            .join(".mover-work")
            .join(String::from_utf8(entry_name(&identity)).unwrap());
        let damage: [&dyn Fn(&std::path::Path); 4] = [
            &|p| {
                let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                f.write_all_at(&[0xff], (HEADER + 5) as u64).unwrap();
            },
            &|p| {
                let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                let len = f.metadata().unwrap().len();
                f.set_len(len - 1).unwrap();
            },
            &|p| std::fs::write(p, b"").unwrap(),
            &|p| {
                let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                f.write_all_at(&(seg * 2).to_le_bytes(), 64).unwrap();
            },
        ];
        for damage in damage {
            cache.store(&volume, &identity, &hashes);
            assert!(cache.lookup(&volume, &identity, seg).is_some());
            damage(&path);
            assert_eq!(cache.lookup(&volume, &identity, seg), None);
        }
    }

    #[test]
    fn the_bound_evicts_the_least_recently_used() {
        let tmp = tempfile::tempdir().unwrap();
        let (volume, identity, hashes) = setup(tmp.path());
        let one = (HEADER + hashes.hashes.len() * HASH + CHECK) as u64;
        // Room for three entries.
        let cache = keeping(one * 3 + one / 2);
        let ids: Vec<Identity> = (0..5)
            .map(|i| Identity {
                ino: identity.ino + 1000 + i,
                ..identity
            })
            .collect();
        let seg = hashes.segment_size;
        for (i, id) in ids.iter().enumerate() {
            cache.store(&volume, id, &hashes);
            std::thread::sleep(std::time::Duration::from_millis(10));
            if i == 2 {
                // The first is used again: the second is now the oldest.
                assert!(cache.lookup(&volume, &ids[0], seg).is_some());
            }
        }
        let kept: Vec<bool> = ids
            .iter()
            .map(|id| cache.lookup(&volume, id, seg).is_some())
            .collect();
        assert_eq!(kept, [true, false, false, true, true]);
    }
}
