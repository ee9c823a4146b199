//! The file currently arriving: data ops are checked against the size the
//! sender declared, written into a temporary file beside the destination and
//! hashed as they are written (copied base segments by the hashes the
//! hashing thread took of them), so the end-to-end check covers what will be
//! renamed into place.

use super::hasher::{HashedBase, Identity};
use crate::delta::{self, FileHasher, SegmentList};
use crate::dest::hash_cache::SegmentHashes;
use crate::dest::volume::TempFile;
use crate::entry::RelPath;
use crate::wire::message::{BaseInfo, FileId};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Block size for hole detection in sparse files.
const SPARSE_BLOCK: usize = 4096;
/// Read size when copying base segments.
const COPY_CHUNK: usize = 1024 * 1024;

/// Copies `from`'s bytes `start..stop` to the same offsets of `to` with
/// `copy_file_range`: no trip through our memory, and a shared extent where
/// the filesystem can reflink. Stops at the next check once `cancelled`
/// says so. `Some(at)` when the kernel cannot (another filesystem, an old
/// kernel): the bytes from `at` on are still to be copied.
pub fn copy_range(
    from: &File,
    to: &File,
    (start, stop): (u64, u64),
    cancelled: impl Fn() -> bool,
) -> Result<Option<u64>, DataError> {
    use rustix::io::Errno;
    let (mut at_from, mut at_to) = (start, start);
    while at_from < stop {
        if cancelled() {
            return Err(DataError::Cancelled);
        }
        let n = (stop - at_from).min(CANCEL_CHECK) as usize;
        match rustix::fs::copy_file_range(from, Some(&mut at_from), to, Some(&mut at_to), n) {
            Ok(0) => {
                return Err(DataError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the old copy became shorter while being copied",
                )))
            }
            Ok(_) | Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => {
                return Ok(Some(at_from))
            }
            Err(e) => return Err(DataError::Io(e.into())),
        }
    }
    Ok(None)
}

/// Why a data op could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The peer sent something impossible: a protocol violation.
    #[error("{0}")]
    Invalid(String),
    /// The local filesystem failed (a full disk, an I/O error).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The session ended while a long op ran: like any broken connection,
    /// the file is kept to resume from.
    #[error("the session ended")]
    Cancelled,
}

fn invalid(msg: impl Into<String>) -> DataError {
    DataError::Invalid(msg.into())
}

/// Set when the session is over, so that a long-running data op (a huge
/// hole, a long run of copied segments) stops instead of holding the volume.
pub type Cancel = Arc<AtomicBool>;

/// How much work a data op does between checks of [`Cancel`].
const CANCEL_CHECK: u64 = 16 * 1024 * 1024;

pub struct Incoming {
    pub id: FileId,
    pub path: RelPath,
    out: Output,
    base: Option<(File, BaseInfo)>,
    size: u64,
    pos: u64,
    sparse: bool,
    hasher: FileHasher,
    /// Hashes the segments for the hash cache when `hasher` does not
    /// (a file sent whole, or cut at another size than its next resync
    /// will use).
    cache_hasher: Option<SegmentList>,
    /// The base as the hashing thread saw it, when one was announced.
    hashed: Option<HashedBase>,
    patch: Vec<u8>,
    /// Base bytes read for copies and patches; kept across ops, since a
    /// file with scattered changes has thousands of them.
    base_buf: Vec<u8>,
    cancel: Cancel,
}

/// Where an arriving file is written.
pub enum Output {
    /// A new file, renamed over the destination once verified.
    Temp(TempFile),
    /// The destination file itself (`--inplace`): only what changed is
    /// written, segments copied from it stay where they are. Never sparse,
    /// and its own base.
    InPlace(File),
    /// A small file kept in memory until it is verified, then handed whole
    /// to a writer thread ([`super::writers`]). Never sparse; segments of
    /// its base are copied by reading them.
    Held(Vec<u8>),
    /// A new file that already holds a copy of the base, made while the
    /// sender was still comparing ([`super::prefill`]), renamed over the
    /// destination once verified. Written like the destination in place:
    /// copied segments are already there, only what changed is written.
    /// Never sparse.
    Prefilled(TempFile),
}

/// What the file will be, as declared, and the segment size at which its
/// hashes go to the hash cache (when they do).
pub struct Shape {
    pub size: u64,
    pub sparse: bool,
    pub cache_segment: Option<u32>,
}

/// A file that passed its end-to-end check.
pub struct Verified {
    pub out: Output,
    /// Its segment hashes, for the hash cache.
    pub hashes: Option<SegmentHashes>,
}

impl Output {
    fn file(&mut self) -> io::Result<&mut File> {
        match self {
            Output::Temp(temp) | Output::Prefilled(temp) => Ok(temp.file()),
            Output::InPlace(file) => Ok(file),
            Output::Held(_) => Err(io::Error::other("a file held in memory has no descriptor")),
        }
    }

    /// Whether the file already holds the base's bytes where nothing has
    /// been written yet, so that copied segments are skipped and holes must
    /// be written as zeros.
    fn holds_base(&self) -> bool {
        matches!(self, Output::InPlace(_) | Output::Prefilled(_))
    }
}

impl Incoming {
    pub fn new(
        id: FileId,
        path: RelPath,
        out: Output,
        base: Option<(File, BaseInfo)>,
        hashed: Option<HashedBase>,
        Shape {
            size,
            sparse,
            cache_segment,
        }: Shape,
        cancel: Cancel,
    ) -> Self {
        let mut hasher = delta::file_hasher(hashed.as_ref().map(|h| h.segment_size), size);
        let mut cache_hasher = None;
        if let Some(segment_size) = cache_segment {
            hasher = match hasher {
                FileHasher::Segments(list) if list.segment_size() == segment_size => {
                    FileHasher::Segments(list.keeping())
                }
                other => {
                    cache_hasher = Some(SegmentList::new(segment_size).keeping());
                    other
                }
            };
        }
        Incoming {
            id,
            path,
            out,
            base,
            size,
            pos: 0,
            sparse,
            hasher,
            cache_hasher,
            hashed,
            patch: Vec::new(),
            base_buf: Vec::new(),
            cancel,
        }
    }

    pub fn literal(&mut self, data: &[u8]) -> Result<(), DataError> {
        self.append(data)
    }

    pub fn hole(&mut self, len: u64) -> Result<(), DataError> {
        self.reserve(len)?;
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut left = len;
        while left > 0 {
            if left % CANCEL_CHECK < ZEROS.len() as u64 {
                self.check_cancel()?;
            }
            let n = left.min(ZEROS.len() as u64) as usize;
            self.hash(&ZEROS[..n]);
            // A new file reads zeros where nothing was written; the old
            // copy being rewritten does not.
            if self.out.holds_base() {
                let at = self.pos + len - left;
                self.out.file()?.write_all_at(&ZEROS[..n], at)?;
            }
            left -= n as u64;
        }
        self.pos += len;
        Ok(())
    }

    fn hash(&mut self, data: &[u8]) {
        self.hasher.update(data);
        if let Some(list) = &mut self.cache_hasher {
            list.update(data);
        }
    }

    fn check_cancel(&self) -> Result<(), DataError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(DataError::Cancelled);
        }
        Ok(())
    }

    /// Appends base segments `first..first + count`, at their own offset.
    /// They are not read: their hashes are the ones the hashing thread made
    /// (and a base that changed since fails [`Incoming::finish`]).
    pub fn copy_segments(&mut self, first: u32, count: u32) -> Result<(), DataError> {
        let (base, info) = self.base()?;
        let end = first
            .checked_add(count)
            .filter(|&end| end <= info.segment_count())
            .ok_or_else(|| invalid(format!("segments {first}+{count} are past the base")))?;
        let seg = u64::from(info.segment_size);
        let start = u64::from(first) * seg;
        let stop = (u64::from(end) * seg).min(info.len);
        if self.pos != start {
            return Err(invalid(format!(
                "segment {first} copied to offset {}",
                self.pos
            )));
        }
        let hashes = match &self.hashed {
            Some(h) if h.hashes.len() >= end as usize => h.hashes.clone(),
            _ => return Err(invalid("segments copied before the base was hashed")),
        };
        self.reserve(stop - start)?;
        let base = base.try_clone()?;
        for hash in &hashes[first as usize..end as usize] {
            if !self.hasher.known(hash) {
                return Err(invalid("segments copied inside a segment"));
            }
        }
        // Cut at another size, copied bytes would have to be read to be
        // hashed for the cache: the file simply gets no entry.
        self.cache_hasher = None;
        match self.out {
            // Already there, at the same offsets.
            Output::InPlace(_) | Output::Prefilled(_) => {}
            Output::Temp(_) if !self.sparse => self.copy_in_kernel(&base, start, stop)?,
            // Zero blocks of a sparse file are skipped; a held file is
            // memory.
            Output::Temp(_) | Output::Held(_) => self.copy_by_reading(&base, start, stop)?,
        }
        self.pos += stop - start;
        Ok(())
    }

    /// Copies base bytes `start..stop` to the same offsets of the temporary
    /// file in the kernel ([`copy_range`]); where it cannot, the rest goes
    /// by reading.
    fn copy_in_kernel(&mut self, base: &File, start: u64, stop: u64) -> Result<(), DataError> {
        let cancel = &self.cancel;
        let cancelled = || cancel.load(Ordering::Relaxed);
        match copy_range(base, self.out.file()?, (start, stop), cancelled)? {
            None => Ok(()),
            Some(at) => self.copy_by_reading(base, at, stop),
        }
    }

    fn copy_by_reading(&mut self, base: &File, start: u64, stop: u64) -> Result<(), DataError> {
        let mut buf = std::mem::take(&mut self.base_buf);
        buf.resize(COPY_CHUNK.min((stop - start) as usize).max(buf.len()), 0);
        let mut at = start;
        while at < stop {
            self.check_cancel()?;
            let n = (stop - at).min(buf.len() as u64) as usize;
            base.read_exact_at(&mut buf[..n], at)?;
            self.write_at(&buf[..n], at)?;
            at += n as u64;
        }
        // Kept for the next op (on an error the file is dropped anyway).
        self.base_buf = buf;
        Ok(())
    }

    pub fn patch_chunk(&mut self, delta: &[u8]) -> Result<(), DataError> {
        let (_, info) = self.base()?;
        // A patch never needs to be much larger than the segment it makes.
        let limit = info.segment_size as usize + info.segment_size as usize / 8 + 4096;
        if self.patch.len() + delta.len() > limit {
            return Err(invalid("patch is larger than its segment could need"));
        }
        self.patch.extend_from_slice(delta);
        Ok(())
    }

    pub fn patch_end(&mut self, segment: u32) -> Result<(), DataError> {
        let info = self.base()?.1;
        if segment >= info.segment_count() {
            return Err(invalid(format!(
                "patch for segment {segment} past the base"
            )));
        }
        let seg = u64::from(info.segment_size);
        let start = u64::from(segment) * seg;
        let len = (info.len - start).min(seg) as usize;
        let mut old = std::mem::take(&mut self.base_buf);
        old.resize(len.max(old.len()), 0);
        self.base()?.0.read_exact_at(&mut old[..len], start)?;
        let mut patch = std::mem::take(&mut self.patch);
        let limit = (self.size - self.pos).min(seg) as usize;
        let mut out = Appender { file: self };
        let applied = delta::apply(&old[..len], &patch, &mut out, limit).map_err(|e| match e {
            delta::DeltaError::Apply(fast_rsync::ApplyError::Io(io)) => DataError::Io(io),
            other => invalid(other.to_string()),
        });
        patch.clear();
        self.patch = patch;
        self.base_buf = old;
        applied
    }

    /// Keeps what arrived under `name` in the work area, for the next
    /// session to resume from (as a delta base; the end-to-end hash still
    /// guards the result). Small files are not worth it and are simply
    /// dropped.
    /// A file written in place has nothing to keep: the work area's journal
    /// already makes the next session redo it.
    pub fn keep_partial(self, name: &[u8]) {
        const MIN_PARTIAL: u64 = 1024 * 1024;
        let (Output::Temp(mut temp) | Output::Prefilled(mut temp)) = self.out else {
            return;
        };
        if self.pos < MIN_PARTIAL {
            return;
        }
        let kept = temp
            .file()
            .set_len(self.pos)
            .map_err(|e| e.to_string())
            .and_then(|()| temp.keep_as(name).map_err(|e| e.to_string()));
        if let Err(e) = kept {
            tracing::warn!("{}: could not keep the partial file: {e}", self.path);
        }
    }

    /// Checks length and hash. On success the output holds exactly what the
    /// sender sent and is returned for commit, with its segment hashes when
    /// the hash cache wants them; on a hash mismatch a temporary file is
    /// dropped (and so removed).
    pub fn finish(mut self, hash: [u8; 32]) -> Result<Result<Verified, ()>, DataError> {
        if self.pos != self.size {
            return Err(invalid(format!(
                "file ended at {} of {} declared bytes",
                self.pos, self.size
            )));
        }
        if !self.patch.is_empty() {
            return Err(invalid("file ended inside a patch"));
        }
        match &mut self.out {
            // A trailing hole was skipped, not written.
            Output::Temp(temp) if self.sparse => temp.file().set_len(self.size)?,
            // The old copy may have been longer.
            Output::InPlace(file) => file.set_len(self.size)?,
            Output::Prefilled(temp) => temp.file().set_len(self.size)?,
            // As is a trailing hole of a file held in memory.
            Output::Held(held) => held.resize(self.size as usize, 0),
            Output::Temp(_) => {}
        }
        // Copied segments were vouched for by hashes of the base: it must
        // still be the file that was hashed (in place, it is the file this
        // writes, whose times the writes move).
        let in_place = matches!(self.out, Output::InPlace(_));
        if let (Some(hashed), Some((base, _)), false) = (&self.hashed, &self.base, in_place) {
            if Identity::of(base)? != hashed.identity {
                return Ok(Err(()));
            }
        }
        let (computed, kept) = self.hasher.finalize_keeping();
        if computed != hash {
            return Ok(Err(()));
        }
        let hashes = match (kept, self.cache_hasher) {
            (Some(hashes), _) => Some(hashes),
            (None, Some(list)) => list.finalize().1,
            (None, None) => None,
        }
        .and_then(|hashes| {
            Some(SegmentHashes {
                segment_size: delta::segment_size(self.size)?,
                hashes,
            })
        });
        Ok(Ok(Verified {
            out: self.out,
            hashes,
        }))
    }

    fn base(&self) -> Result<(&File, BaseInfo), DataError> {
        self.base
            .as_ref()
            .map(|(f, info)| (f, *info))
            .ok_or_else(|| invalid("segment op for a file without a base copy"))
    }

    fn reserve(&self, len: u64) -> Result<(), DataError> {
        match self.pos.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(invalid(format!(
                "data past the declared size of {} bytes",
                self.size
            ))),
        }
    }

    fn append(&mut self, data: &[u8]) -> Result<(), DataError> {
        self.reserve(data.len() as u64)?;
        self.hash(data);
        self.write_at(data, self.pos)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn write_at(&mut self, data: &[u8], pos: u64) -> io::Result<()> {
        match &mut self.out {
            Output::Held(held) => {
                // Within the declared size, which a held file is small.
                let (at, end) = (pos as usize, pos as usize + data.len());
                if held.len() < end {
                    held.resize(end, 0);
                }
                held[at..end].copy_from_slice(data);
                Ok(())
            }
            _ if self.sparse => self.write_sparse(data, pos),
            out => out.file()?.write_all_at(data, pos),
        }
    }

    /// Writes `data` at `pos`, leaving all-zero runs unwritten so whole
    /// zero blocks stay holes. The temporary file is new and written front
    /// to back (its length is set at the end), so what is skipped reads as
    /// zeros; a zero piece of a block is skipped too, since the applier of a
    /// delta hands over pieces smaller than a block.
    fn write_sparse(&mut self, data: &[u8], pos: u64) -> io::Result<()> {
        let file = self.out.file()?;
        let mut at = 0usize;
        while at < data.len() {
            let abs = pos + at as u64;
            let to_boundary = SPARSE_BLOCK - (abs % SPARSE_BLOCK as u64) as usize;
            let n = to_boundary.min(data.len() - at);
            let block = &data[at..at + n];
            if block.iter().any(|&b| b != 0) {
                file.write_all_at(block, abs)?;
            }
            at += n;
        }
        Ok(())
    }
}

/// Lets the delta applier stream its output through [`Incoming::append`].
struct Appender<'a> {
    file: &'a mut Incoming,
}

impl Write for Appender<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.append(buf).map_err(|e| match e {
            DataError::Io(io) => io,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::volume::Volume;
    use std::path::Path;

    const SEG: usize = delta::MIN_SEGMENT as usize;

    /// A file of `len` bytes arriving in `dir` against `base`, which the
    /// hashing thread has just hashed.
    fn arriving(dir: &Path, base: &[u8], len: usize) -> Incoming {
        arriving_into(dir, base, len, Output::Temp)
    }

    /// [`arriving`] into a temporary file made by `output`.
    fn arriving_into(
        dir: &Path,
        base: &[u8],
        len: usize,
        output: fn(TempFile) -> Output,
    ) -> Incoming {
        std::fs::write(dir.join("f"), base).unwrap();
        let volume = Volume::open("v", dir).unwrap();
        let root = volume.open_dir(&RelPath::root()).unwrap();
        let temp = root.create_temp(b"f").unwrap();
        let file = root.open_file(b"f").unwrap();
        let hashed = HashedBase {
            segment_size: delta::MIN_SEGMENT,
            hashes: Arc::new(base.chunks(SEG).map(delta::segment_hash).collect()),
            identity: Identity::of(&file).unwrap(),
        };
        let info = BaseInfo {
            len: base.len() as u64,
            segment_size: delta::MIN_SEGMENT,
        };
        let mut out = output(temp);
        if let Output::Prefilled(_) = out {
            out.file().unwrap().write_all_at(base, 0).unwrap();
        }
        Incoming::new(
            1,
            RelPath::parse(b"f").unwrap(),
            out,
            Some((file, info)),
            Some(hashed),
            Shape {
                size: len as u64,
                sparse: false,
                cache_segment: None,
            },
            Cancel::default(),
        )
    }

    fn list_hash(data: &[u8]) -> [u8; 32] {
        let mut h = FileHasher::new(Some(delta::MIN_SEGMENT));
        h.update(data);
        h.finalize()
    }

    /// Finishes `f` as `new`, which must pass its check, and returns what
    /// its temporary file holds, after checking it was the copy made ahead
    /// or not as `prefilled` says.
    fn verified_contents(f: Incoming, new: &[u8], prefilled: bool) -> Vec<u8> {
        let out = f.finish(list_hash(new)).unwrap().expect("check passes").out;
        assert_eq!(matches!(out, Output::Prefilled(_)), prefilled);
        let (Output::Temp(mut temp) | Output::Prefilled(mut temp)) = out else {
            panic!("written to a temporary file")
        };
        let file = temp.file();
        let mut written = vec![0; file.metadata().unwrap().len() as usize];
        file.read_exact_at(&mut written, 0).unwrap();
        written
    }

    /// Copies segments 0 and 2 of `base` and sends segment 1 of `new`.
    fn rebuild(f: &mut Incoming, new: &[u8]) {
        f.copy_segments(0, 1).unwrap();
        f.literal(&new[SEG..2 * SEG]).unwrap();
        f.copy_segments(2, 1).unwrap();
    }

    /// A new copy made ahead from the base gets only what changed written:
    /// copied segments are left as they are, and a file shorter than its
    /// base is cut at its size.
    #[test]
    fn a_prefilled_copy_gets_only_the_changes_and_its_size() {
        let tmp = tempfile::tempdir().unwrap();
        let base: Vec<u8> = (0..SEG * 4).map(|i| (i % 251) as u8).collect();
        let mut new = base[..SEG * 3 - 100].to_vec();
        new[SEG + 5] ^= 1;
        let mut f = arriving_into(tmp.path(), &base, new.len(), Output::Prefilled);
        f.copy_segments(0, 1).unwrap();
        f.literal(&new[SEG..]).unwrap();
        let written = verified_contents(f, &new, true);
        assert!(written == new, "the copy holds exactly the new content");
    }

    #[test]
    fn copied_segments_count_by_the_hashes_of_the_base() {
        let tmp = tempfile::tempdir().unwrap();
        let base: Vec<u8> = (0..SEG * 3 - 100).map(|i| (i % 251) as u8).collect();
        let mut new = base.clone();
        new[SEG + 5] ^= 1;
        let mut f = arriving(tmp.path(), &base, new.len());
        rebuild(&mut f, &new);
        let written = verified_contents(f, &new, false);
        assert!(written == new, "the temporary file holds the new content");

        // The same ops vouching for different content fail the check.
        let mut f = arriving(tmp.path(), &base, new.len());
        rebuild(&mut f, &new);
        assert!(f.finish(list_hash(&base)).unwrap().is_err());
    }

    #[test]
    fn a_base_changed_since_it_was_hashed_fails_the_check() {
        let tmp = tempfile::tempdir().unwrap();
        let base = vec![3u8; SEG * 3];
        let mut new = base.clone();
        new[SEG] = 4;
        let mut f = arriving(tmp.path(), &base, new.len());
        // Rewritten in place after hashing (same inode, same size), and
        // given an old mtime the way a copying tool would (the timestamps of
        // the write alone may fall in the same clock tick as the hashing).
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path().join("f"))
            .unwrap();
        file.write_all_at(&[9; 10], 0).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30))
            .unwrap();
        rebuild(&mut f, &new);
        assert!(f.finish(list_hash(&new)).unwrap().is_err());
    }

    #[test]
    fn copies_out_of_place_or_before_hashing_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let base = vec![5u8; SEG * 3];
        let mut f = arriving(tmp.path(), &base, base.len());
        let misplaced = f.copy_segments(1, 1);
        assert!(
            matches!(&misplaced, Err(DataError::Invalid(m)) if m.contains("offset 0")),
            "{:?}",
            misplaced.err()
        );
        f.hashed.as_mut().unwrap().hashes = Arc::default();
        assert!(matches!(
            f.copy_segments(0, 1),
            Err(DataError::Invalid(m)) if m.contains("before the base was hashed")
        ));
    }
}
