//! The sender's data thread: reads source files and turns them into the
//! data messages of one file at a time (whole, or as segment copies and
//! rsync patches against the receiver's copy).
//!
//! It runs on its own blocking thread so file reads, hashing and diffing
//! overlap with TLS encryption on the async side.

use super::emit::{self, Emitter};
use super::state::{BaseState, Pending, Shared};
use crate::compress::Compress;
use crate::delta;
use crate::progress::Counters;
use crate::source::confined::{self, Files};
use crate::wire::frame::DATA_CHUNK;
use crate::wire::io::Closed;
use crate::wire::message::{AbortReason, FileId, SegmentHash, ToReceiver};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Work for the data thread, in the order answers arrive.
pub enum Job {
    /// Send the whole file.
    Whole(FileId),
    /// The receiver has an older copy: hash our segments while it hashes
    /// its own, then compare (here, or in `Compare` if its hashes are late).
    Scan(FileId),
    /// Both sides' segment hashes are in: ask for the signatures of the
    /// differing segments the scan has not asked for (or send at once if
    /// every signature is in).
    Compare(FileId),
    /// The last signature asked for has arrived: send the file as copies
    /// and patches.
    Patch(FileId),
}

/// Largest number of segment signatures asked for at once; a file with more
/// differing segments goes whole (it has changed almost everywhere anyway).
const MAX_SIGNATURE_REQUEST: usize = 256 * 1024;

/// Differing segments found during a scan that are asked for at once: the
/// receiver makes their signatures while the scan goes on, instead of all
/// of them after it. Enough that a file changed in many places does not
/// cost a message per segment.
const EARLY_REQUEST: usize = 64;

pub fn run(
    jobs: Receiver<Vec<Job>>,
    out: mpsc::Sender<Vec<ToReceiver>>,
    shared: &Shared,
    compress: Compress,
) {
    let mut data = Data {
        emit: Emitter::new(out, compress, shared.counters.clone()),
        shared,
        zeros: vec![0; DATA_CHUNK],
        scan_buf: Vec::new(),
        files: Files::default(),
        begun: false,
    };
    loop {
        let batch = match jobs.try_recv() {
            Ok(batch) => batch,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                // Idle: whatever is queued must go before we wait.
                if data.emit.flush().is_err() {
                    return;
                }
                match jobs.recv() {
                    Ok(batch) => batch,
                    Err(_) => break,
                }
            }
        };
        for job in batch {
            let result = match job {
                Job::Whole(id) => data.with_file(id, Data::whole),
                Job::Scan(id) => data.with_file(id, Data::scan),
                Job::Compare(id) => data.with_file(id, Data::compare),
                Job::Patch(id) => data.with_file(id, Data::patch),
            };
            if result.is_err() {
                return;
            }
        }
    }
    let _ = data.emit.flush();
}

struct Data<'a> {
    emit: Emitter,
    shared: &'a Shared,
    zeros: Vec<u8>,
    /// What [`Data::scan`] reads into, kept: a fresh megabyte per read
    /// costs a page fault per 4 KiB on top of the read.
    scan_buf: Vec<u8>,
    files: Files,
    /// Whether the current file's `FileBegin` has gone out.
    begun: bool,
}

/// How reading a source file ended early.
enum Stop {
    Closed(Closed),
    Abort(AbortReason),
}

impl From<Closed> for Stop {
    fn from(c: Closed) -> Self {
        Stop::Closed(c)
    }
}

impl Data<'_> {
    fn begin(&mut self, id: FileId) -> Result<(), Closed> {
        self.begun = true;
        self.emit.next_file();
        self.send(ToReceiver::FileBegin { id })
    }

    fn send(&mut self, msg: ToReceiver) -> Result<(), Closed> {
        self.emit.send(msg)
    }

    /// Opens the source of `id` and runs `body`; turns a failure to read it
    /// into a `FileAbort` (if data had started) and a counted problem.
    fn with_file(
        &mut self,
        id: FileId,
        body: fn(&mut Self, FileId, &Pending, &mut File) -> Result<(), Stop>,
    ) -> Result<(), Closed> {
        let Some(pending) = self.shared.get(id) else {
            return Ok(());
        };
        self.begun = false;
        let result = match self.open(&pending) {
            Ok(mut file) => body(self, id, &pending, &mut file),
            Err(e) => Err(Stop::Abort(abort_reason(e))),
        };
        match result {
            Ok(()) => Ok(()),
            Err(Stop::Closed(c)) => Err(c),
            Err(Stop::Abort(reason)) => {
                self.give_up(id, &pending, &reason);
                if !self.begun {
                    self.send(ToReceiver::FileBegin { id })?;
                }
                self.send(ToReceiver::FileAbort { reason })
            }
        }
    }

    /// Opens the file `pending` names without leaving the source, and only
    /// if it is still the one the walk listed.
    fn open(&mut self, pending: &Pending) -> io::Result<File> {
        let root = self
            .shared
            .root()
            .ok_or_else(|| io::Error::other("the source root is not open"))?;
        let file = self.files.open(root.as_fd(), &pending.rel)?;
        check_unchanged(&file, pending)?;
        Ok(file)
    }

    fn give_up(&self, id: FileId, pending: &Pending, reason: &AbortReason) {
        if let Some(p) = self.shared.pending().get_mut(&id) {
            p.aborted = true;
        }
        let path = self.shared.source_path(&pending.rel);
        let path = path.display();
        match reason {
            AbortReason::Vanished => self
                .shared
                .vanished(format!("{path}: vanished or changed while being read")),
            AbortReason::Unreadable(e) => self.shared.error(format!("{path}: {e}")),
        }
    }

    fn whole(&mut self, id: FileId, pending: &Pending, file: &mut File) -> Result<(), Stop> {
        self.begin(id)?;
        let base_segment = pending.base.as_ref().map(|b| b.info.segment_size);
        let mut hasher = delta::file_hasher(base_segment, pending.size);
        let mut pos = 0u64;
        while pos < pending.size {
            let (data_start, data_end) = if pending.sparse {
                next_data(file, pos, pending.size).map_err(|e| Stop::Abort(abort_reason(e)))?
            } else {
                (pos, pending.size)
            };
            if data_start > pos {
                self.hole(&mut hasher, data_start - pos)?;
                pos = data_start;
            }
            while pos < data_end {
                let want = (data_end - pos).min(DATA_CHUNK as u64) as usize;
                let chunk = read_at(file, pos, want)?;
                hasher.update(&chunk);
                pos += want as u64;
                Counters::add(&self.shared.counters.bytes_sent, want as u64);
                Counters::add(&self.shared.counters.bytes_done, want as u64);
                self.emit.chunk(chunk)?;
            }
        }
        self.end(pending, file, hasher.finalize())
    }

    fn hole(&mut self, hasher: &mut delta::FileHasher, len: u64) -> Result<(), Closed> {
        let mut left = len;
        while left > 0 {
            let n = left.min(self.zeros.len() as u64) as usize;
            hasher.update(&self.zeros[..n]);
            left -= n as u64;
        }
        Counters::add(&self.shared.counters.bytes_done, len);
        self.send(ToReceiver::Hole { len })
    }

    /// Finishes a file: checks it did not change while it was read (counted
    /// as vanished, since what was sent may mix old and new content) and
    /// sends the hash of everything sent.
    fn end(&mut self, pending: &Pending, file: &File, hash: [u8; 32]) -> Result<(), Stop> {
        check_unchanged(file, pending).map_err(|e| Stop::Abort(abort_reason(e)))?;
        Counters::add(&self.shared.counters.files_sent, 1);
        self.send(ToReceiver::FileEnd { hash })?;
        Ok(())
    }

    /// Reads the file once, hashing each segment (which also makes the
    /// end-to-end hash, see [`delta::FileHasher`]). The receiver hashes its
    /// copy at the same time (or has its hashes cached), and as its hashes
    /// arrive the segments that differ are asked for early, so that the
    /// receiver makes their signatures while this scan goes on. Only the
    /// segments that differ are read again, to diff them once their
    /// signatures are in.
    fn scan(&mut self, id: FileId, pending: &Pending, file: &mut File) -> Result<(), Stop> {
        let Some(info) = pending.base.as_ref().map(|b| b.info) else {
            return self.whole(id, pending, file);
        };
        let seg = u64::from(info.segment_size);
        let base_count = info.segment_count() as usize;
        let mut found = Found {
            ours: Vec::with_capacity(base_count.min(pending.size.div_ceil(seg) as usize)),
            ..Found::default()
        };
        let mut hasher = delta::FileHasher::new(Some(info.segment_size));
        let block = delta::hash_read_size(seg);
        let mut pos = 0u64;
        while pos < pending.size {
            let want = (pending.size - pos).min(block) as usize;
            read_into(file, pos, want, &mut self.scan_buf)?;
            for segment in self.scan_buf.chunks(seg as usize) {
                let hash = delta::segment_hash(segment);
                hasher.known(&hash);
                if found.ours.len() < base_count {
                    found.ours.push(hash);
                }
            }
            pos += want as u64;
            self.ask_early(id, &mut found)?;
        }
        let scan = Arc::new(Scan {
            hash: hasher.finalize(),
            found,
        });
        // Compare now if all the receiver's hashes are in; if not, the
        // response handler queues `Compare` when the last of them arrives.
        let ready = {
            let mut all = self.shared.pending();
            let Some(p) = all.get_mut(&id) else {
                return Ok(());
            };
            p.scan = Some(scan);
            p.base.as_ref().is_some_and(BaseState::complete)
        };
        if ready {
            return self.compare(id, pending, file);
        }
        Ok(())
    }

    /// Compares the segments scanned so far with the receiver's hashes that
    /// have arrived, and once [`EARLY_REQUEST`] differing segments are
    /// waiting, asks for their signatures.
    fn ask_early(&mut self, id: FileId, found: &mut Found) -> Result<(), Closed> {
        let theirs = {
            let all = self.shared.pending();
            match all.get(&id).and_then(|p| p.base.as_ref()) {
                Some(base) => base.hashes.clone(),
                None => return Ok(()),
            }
        };
        found.compare(&theirs);
        let waiting = found.differing.len() - found.asked;
        if waiting >= EARLY_REQUEST && found.differing.len() <= MAX_SIGNATURE_REQUEST {
            self.ask_signatures(id, found.unasked())?;
            // Out now, not when the scan's output next fills a buffer.
            self.emit.flush()?;
        }
        Ok(())
    }

    /// Asks for the signatures of `segments` of the receiver's copy of `id`,
    /// counting the request first so its answer always finds it counted.
    fn ask_signatures(&mut self, id: FileId, segments: Vec<u32>) -> Result<(), Closed> {
        let counted = match self
            .shared
            .pending()
            .get_mut(&id)
            .and_then(|p| p.base.as_mut())
        {
            Some(base) => {
                base.requested += 1;
                true
            }
            None => false,
        };
        if counted {
            self.send(ToReceiver::SignatureRequest { id, segments })?;
        }
        Ok(())
    }

    /// Compares the rest of the two sides' segment hashes, asks for the
    /// signatures of the differing segments not asked for yet, and sends
    /// the file once every signature is in (or leaves that to the `Patch`
    /// the last one queues).
    fn compare(&mut self, id: FileId, pending: &Pending, file: &mut File) -> Result<(), Stop> {
        let (theirs, scan) = {
            let mut all = self.shared.pending();
            match all.get_mut(&id) {
                Some(p) => (p.base.as_ref().map(|b| b.hashes.clone()), p.scan.take()),
                None => return Ok(()),
            }
        };
        let (Some(theirs), Some(scan)) = (theirs, scan) else {
            return self.whole(id, pending, file);
        };
        // Only segments both copies have: the receiver's past our end are
        // simply not used, ours past its end go literally.
        let Scan { hash, mut found } = Arc::unwrap_or_clone(scan);
        found.compare(&theirs);
        let too_many = found.differing.len() > MAX_SIGNATURE_REQUEST;
        if !too_many && found.asked < found.differing.len() {
            self.ask_signatures(id, found.unasked())?;
        }
        found.ours = Vec::new();
        let scan = Scan { hash, found };
        let ready = {
            let mut all = self.shared.pending();
            let Some(p) = all.get_mut(&id) else {
                return Ok(());
            };
            // Too many differing segments: the file goes whole, but only
            // once the signatures already asked for are in, so that none
            // arrives for a file that is over.
            p.scan = (!too_many).then(|| Arc::new(scan));
            match p.base.as_mut() {
                Some(base) => {
                    base.all_asked = true;
                    base.answered_all()
                }
                None => return Ok(()),
            }
        };
        if ready {
            return self.patch(id, pending, file);
        }
        Ok(())
    }

    /// Every segment matches and the sizes agree: the receiver's copy is
    /// this file already, so it keeps it (setting only metadata) rather
    /// than rebuilding it from copied segments.
    fn unchanged(&mut self, id: FileId, pending: &Pending, file: &File) -> Result<(), Stop> {
        check_unchanged(file, pending).map_err(|e| Stop::Abort(abort_reason(e)))?;
        Counters::add(&self.shared.counters.bytes_done, pending.size);
        Counters::add(&self.shared.counters.bytes_matched, pending.size);
        self.send(ToReceiver::Unchanged { id })?;
        Ok(())
    }

    /// Every signature asked for has arrived: sends the file as it stands
    /// (kept as it is when no segment differs, else as copies of unchanged
    /// segments and patches or literals for the others), or whole when the
    /// comparison found too many differing segments.
    fn patch(&mut self, id: FileId, pending: &Pending, file: &mut File) -> Result<(), Stop> {
        let scan = self
            .shared
            .pending()
            .get_mut(&id)
            .and_then(|p| p.scan.take());
        let (Some(base), Some(scan)) = (self.take_base(id), scan) else {
            return self.whole(id, pending, file);
        };
        // A sparse file is rebuilt from copied segments even when nothing
        // differs: the receiver's copy may hold as data what the source has
        // as holes.
        if scan.found.differing.is_empty() && pending.size == base.info.len && !pending.sparse {
            return self.unchanged(id, pending, file);
        }
        self.send_delta(id, pending, file, base, &scan)
    }

    fn send_delta(
        &mut self,
        id: FileId,
        pending: &Pending,
        file: &mut File,
        mut base: BaseState,
        scan: &Scan,
    ) -> Result<(), Stop> {
        self.begin(id)?;
        let seg = base.info.segment_size as u64;
        let base_count = base.info.segment_count();
        let mut copies = CopyRun::default();
        let mut differing = scan.found.differing.iter().copied().peekable();
        let mut pos = 0u64;
        let mut index = 0u32;
        while pos < pending.size {
            let want = (pending.size - pos).min(seg) as usize;
            pos += want as u64;
            Counters::add(&self.shared.counters.bytes_done, want as u64);
            if index < base_count && differing.next_if_eq(&index).is_none() {
                copies.add(index);
                Counters::add(&self.shared.counters.bytes_matched, want as u64);
            } else {
                self.flush(&mut copies)?;
                let data = read_at(file, pos - want as u64, want)?;
                match base.signatures.remove(&index) {
                    Some(sig) => self.send_patch(index, sig, data)?,
                    None => self.emit.literal(data)?,
                }
            }
            index += 1;
        }
        self.flush(&mut copies)?;
        self.end(pending, file, scan.hash)
    }

    fn take_base(&self, id: FileId) -> Option<BaseState> {
        self.shared
            .pending()
            .get_mut(&id)
            .and_then(|p| p.base.as_mut())
            .map(|b| BaseState {
                hashes: b.hashes.clone(),
                signatures: std::mem::take(&mut b.signatures),
                ..BaseState::new(b.info)
            })
    }

    fn flush(&mut self, copies: &mut CopyRun) -> Result<(), Closed> {
        if let Some((first, count)) = copies.take() {
            self.send(ToReceiver::CopySegments { first, count })?;
        }
        Ok(())
    }

    /// Sends `data` as a patch against base segment `index`, or literally
    /// when the patch would not be smaller.
    fn send_patch(&mut self, index: u32, signature: Vec<u8>, data: Vec<u8>) -> Result<(), Closed> {
        match emit::smaller_patch(signature, &data) {
            Some(patch) => {
                self.emit
                    .patch(&patch, data.len(), ToReceiver::PatchEnd { segment: index })
            }
            None => self.emit.literal(data),
        }
    }
}

/// What the first read of a changed file found.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The end-to-end hash of the file as read.
    pub hash: [u8; 32],
    pub found: Found,
}

/// The segments of a changed file found to differ from the receiver's copy,
/// as both sides' hashes come in.
#[derive(Debug, Default, Clone)]
pub struct Found {
    /// Our hash of each segment the receiver's copy also has; dropped once
    /// compared.
    ours: Vec<SegmentHash>,
    /// How many of them have been compared.
    compared: usize,
    /// Segments of the receiver's copy that differ from ours, ascending
    /// (the ones past its end are sent literally without being listed).
    differing: Vec<u32>,
    /// How many of `differing` have had their signatures asked for.
    asked: usize,
}

impl Found {
    /// Compares the segments of ours that `theirs` (the receiver's hashes
    /// received so far) now covers.
    fn compare(&mut self, theirs: &[SegmentHash]) {
        let upto = theirs.len().min(self.ours.len());
        if upto <= self.compared {
            return;
        }
        let pairs = self.ours[self.compared..upto]
            .iter()
            .zip(&theirs[self.compared..upto]);
        let first = self.compared as u32;
        self.differing.extend(
            (first..)
                .zip(pairs)
                .filter(|(_, (ours, theirs))| ours != theirs)
                .map(|(i, _)| i),
        );
        self.compared = upto;
    }

    /// The differing segments not asked for yet, counted as asked for now.
    fn unasked(&mut self) -> Vec<u32> {
        let segments = self.differing[self.asked..].to_vec();
        self.asked = self.differing.len();
        segments
    }
}

/// Consecutive unchanged segments, sent as one `CopySegments`.
#[derive(Default)]
struct CopyRun(Option<(u32, u32)>);

impl CopyRun {
    fn add(&mut self, index: u32) {
        self.0 = match self.0 {
            Some((first, count)) if first + count == index => Some((first, count + 1)),
            _ => {
                debug_assert!(self.0.is_none(), "flush before starting a new run");
                Some((index, 1))
            }
        };
    }

    fn take(&mut self) -> Option<(u32, u32)> {
        self.0.take()
    }
}

fn abort_reason(e: io::Error) -> AbortReason {
    if confined::is_gone(&e) || e.kind() == io::ErrorKind::UnexpectedEof {
        AbortReason::Vanished
    } else {
        AbortReason::Unreadable(e.to_string())
    }
}

/// Fails with `UnexpectedEof` (counted as vanished) when the open file is no
/// longer the one listed: another object, type, size or modification time.
fn check_unchanged(file: &File, pending: &Pending) -> io::Result<()> {
    let md = file.metadata()?;
    if (md.dev(), md.ino()) != pending.identity
        || !md.is_file()
        || md.len() != pending.size
        || (md.mtime(), md.mtime_nsec() as u32) != pending.mtime
    {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "changed while being read",
        ));
    }
    Ok(())
}

/// Reads `len` bytes at `pos` into a fresh buffer. The buffer is filled
/// straight from the kernel, never zeroed first: at a gigabyte a second the
/// memset alone costs as much as the read.
fn read_at(file: &File, pos: u64, len: usize) -> Result<Vec<u8>, Stop> {
    let mut buf = Vec::with_capacity(len);
    read_into(file, pos, len, &mut buf)?;
    Ok(buf)
}

/// [`read_at`] into `buf`, replacing what it held.
fn read_into(file: &File, pos: u64, len: usize, buf: &mut Vec<u8>) -> Result<(), Stop> {
    buf.clear();
    buf.reserve(len);
    while buf.len() < len {
        let at = pos + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut *buf), at) {
            Ok(0) => return Err(Stop::Abort(AbortReason::Vanished)),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Stop::Abort(abort_reason(e.into()))),
        }
    }
    // A file that grew can fill more than was asked (and is caught as
    // changed at its end); never send more than the caller wants here.
    buf.truncate(len);
    Ok(())
}

/// The next data extent at or after `pos` (`SEEK_DATA`/`SEEK_HOLE`), so
/// holes in sparse files are neither read nor sent. A filesystem without
/// hole reporting simply reports all data.
fn next_data(file: &mut File, pos: u64, size: u64) -> io::Result<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let start = match seek(&*file, SeekFrom::Data(pos)) {
        Ok(start) => start.min(size),
        Err(rustix::io::Errno::NXIO) => return Ok((size, size)),
        Err(e) => return Err(e.into()),
    };
    let end = match seek(&*file, SeekFrom::Hole(start)) {
        Ok(end) => end.min(size),
        Err(rustix::io::Errno::NXIO) => size,
        Err(e) => return Err(e.into()),
    };
    Ok((start, end.max(start)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::RelPath;
    use crate::wire::message::BaseInfo;

    const SEG: usize = 32 * 1024;
    const SEGMENTS: usize = 384;

    /// The data thread's output for `jobs`, run to completion.
    fn run_jobs(shared: &Shared, jobs: Vec<Job>) -> Vec<ToReceiver> {
        let (job_tx, job_rx) = std::sync::mpsc::channel();
        let (out_tx, mut out_rx) = mpsc::channel(1024);
        job_tx.send(jobs).unwrap();
        drop(job_tx);
        run(job_rx, out_tx, shared, Compress::Off);
        let mut all = Vec::new();
        while let Ok(batch) = out_rx.try_recv() {
            all.extend(batch);
        }
        all
    }

    fn requests(msgs: &[ToReceiver]) -> Vec<Vec<u32>> {
        msgs.iter()
            .filter_map(|m| match m {
                ToReceiver::SignatureRequest { id: 7, segments } => Some(segments.clone()),
                _ => None,
            })
            .collect()
    }

    /// A scan that finds many differing segments while the receiver's
    /// hashes are already in asks for their signatures in several requests
    /// as it goes, together exactly the differing segments, ascending; the
    /// file is sent only once every request is answered, as copies of the
    /// others and the differing segments' new bytes.
    #[test]
    fn a_scan_asks_for_differing_segments_as_it_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let mut theirs: Vec<u8> = (0..SEG * SEGMENTS).map(|i| (i * 7 % 251) as u8).collect();
        let ours = theirs.clone();
        // Every third segment differs in the receiver's copy: 128 of them.
        let differing: Vec<u32> = (0..SEGMENTS as u32).filter(|i| i % 3 == 1).collect();
        for &i in &differing {
            theirs[i as usize * SEG + 100] ^= 0xff;
        }
        std::fs::write(&path, &ours).unwrap();
        let st = std::fs::metadata(&path).unwrap();

        let shared = Shared::new(Arc::new(Counters::default()));
        shared.set_root(std::fs::File::open(dir.path()).unwrap().into(), dir.path());
        let info = BaseInfo {
            len: theirs.len() as u64,
            segment_size: SEG as u32,
        };
        let mut base = BaseState::new(info);
        base.hashes = Arc::new(theirs.chunks(SEG).map(delta::segment_hash).collect());
        shared.pending().insert(
            7,
            Pending {
                rel: RelPath::root().join(b"big").unwrap(),
                identity: (st.dev(), st.ino()),
                size: st.len(),
                sparse: false,
                mtime: (st.mtime(), st.mtime_nsec() as u32),
                base: Some(base),
                scan: None,
                aborted: false,
            },
        );

        let msgs = run_jobs(&shared, vec![Job::Scan(7)]);
        let asked = requests(&msgs);
        assert!(asked.len() >= 2, "asked in {} request(s)", asked.len());
        assert!(asked[0].len() >= EARLY_REQUEST, "{:?}", asked[0]);
        assert_eq!(asked.concat(), differing);
        assert!(
            !msgs
                .iter()
                .any(|m| matches!(m, ToReceiver::FileBegin { .. })),
            "nothing is sent before the signatures are in"
        );
        {
            let mut all = shared.pending();
            let base = all.get_mut(&7).unwrap().base.as_mut().unwrap();
            assert_eq!(base.requested as usize, asked.len());
            assert!(base.all_asked);
            // The receiver answers every request (with no signature: the
            // segments then go literally).
            base.answered = base.requested;
        }

        let msgs = run_jobs(&shared, vec![Job::Patch(7)]);
        let mut rebuilt = Vec::new();
        let mut ended = false;
        for m in msgs {
            match m {
                ToReceiver::CopySegments { first, count } => {
                    let (a, b) = (first as usize * SEG, (first + count) as usize * SEG);
                    rebuilt.extend_from_slice(&theirs[a..b]);
                }
                ToReceiver::Literal { data } => rebuilt.extend_from_slice(&data),
                ToReceiver::FileEnd { .. } => ended = true,
                ToReceiver::FileBegin { id } => assert_eq!(id, 7),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(ended);
        assert!(rebuilt == ours, "the copies and literals rebuild the file");
    }
}
