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
    /// differing segments (or send at once if none differ).
    Compare(FileId),
    /// Signatures have arrived: send the file as copies and patches.
    Patch(FileId),
}

/// Largest number of segment signatures asked for at once; a file with more
/// differing segments goes whole (it has changed almost everywhere anyway).
const MAX_SIGNATURE_REQUEST: usize = 256 * 1024;

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
        let mut hasher = delta::FileHasher::new(pending.base.as_ref().map(|b| b.info.segment_size));
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
    /// end-to-end hash, see [`delta::FileHasher`]). The receiver hashes
    /// its copy at the same time; only the segments that differ are read
    /// again, to diff them once their signatures arrive.
    fn scan(&mut self, id: FileId, pending: &Pending, file: &mut File) -> Result<(), Stop> {
        let Some(info) = pending.base.as_ref().map(|b| b.info) else {
            return self.whole(id, pending, file);
        };
        let seg = u64::from(info.segment_size);
        let base_count = info.segment_count() as usize;
        let mut segments = Vec::with_capacity(base_count.min(pending.size.div_ceil(seg) as usize));
        let mut hasher = delta::FileHasher::new(Some(info.segment_size));
        // Whole segments per read, about a data chunk's worth: a small
        // segment size must not mean a syscall per 32 KiB.
        let block = (DATA_CHUNK as u64 / seg).max(1) * seg;
        let mut pos = 0u64;
        while pos < pending.size {
            let want = (pending.size - pos).min(block) as usize;
            read_into(file, pos, want, &mut self.scan_buf)?;
            for segment in self.scan_buf.chunks(seg as usize) {
                let hash = delta::segment_hash(segment);
                hasher.known(&hash);
                if segments.len() < base_count {
                    segments.push(hash);
                }
            }
            pos += want as u64;
        }
        let scan = Arc::new(Scan {
            hash: hasher.finalize(),
            segments,
            differing: Vec::new(),
        });
        // Compare now if all the receiver's hashes are in; if not, the
        // response handler queues `Compare` when the last of them arrives.
        let ready = {
            let mut all = self.shared.pending();
            let Some(p) = all.get_mut(&id) else {
                return Ok(());
            };
            p.scan = Some(scan.clone());
            p.base.as_ref().is_some_and(BaseState::complete)
        };
        if ready {
            return self.compare(id, pending, file);
        }
        Ok(())
    }

    /// Compares the two sides' segment hashes and asks for the signatures
    /// of the receiver's segments that differ.
    fn compare(&mut self, id: FileId, pending: &Pending, file: &mut File) -> Result<(), Stop> {
        let (base, scan) = {
            let all = self.shared.pending();
            match all.get(&id) {
                Some(p) => (p.base.clone(), p.scan.clone()),
                None => return Ok(()),
            }
        };
        let (Some(base), Some(scan)) = (base, scan) else {
            return self.whole(id, pending, file);
        };
        // Only segments both copies have: the receiver's past our end are
        // simply not used, ours past its end go literally.
        let differing: Vec<u32> = (0..scan.segments.len().min(base.hashes.len()))
            .filter(|&i| scan.segments[i] != base.hashes[i])
            .map(|i| i as u32)
            .collect();
        if differing.len() > MAX_SIGNATURE_REQUEST {
            return self.whole(id, pending, file);
        }
        let scan = Scan {
            hash: scan.hash,
            segments: Vec::new(),
            differing,
        };
        if scan.differing.is_empty() {
            // A sparse file is rebuilt from copied segments even then: the
            // receiver's copy may hold as data what the source has as holes.
            if pending.size == base.info.len && !pending.sparse {
                return self.unchanged(id, pending, file);
            }
            return self.send_delta(id, pending, file, base, &scan);
        }
        let segments = scan.differing.clone();
        if let Some(p) = self.shared.pending().get_mut(&id) {
            p.scan = Some(Arc::new(scan));
        }
        self.send(ToReceiver::SignatureRequest { id, segments })?;
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

    /// Signatures have arrived: sends the file as copies of unchanged
    /// segments and patches (or literals) for the others.
    fn patch(&mut self, id: FileId, pending: &Pending, file: &mut File) -> Result<(), Stop> {
        let scan = self
            .shared
            .pending()
            .get_mut(&id)
            .and_then(|p| p.scan.take());
        match (self.take_base(id), scan) {
            (Some(base), Some(scan)) => self.send_delta(id, pending, file, base, &scan),
            _ => self.whole(id, pending, file),
        }
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
        let mut differing = scan.differing.iter().copied().peekable();
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
                info: b.info,
                hashes: b.hashes.clone(),
                signatures: std::mem::take(&mut b.signatures),
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
#[derive(Debug)]
pub struct Scan {
    /// The end-to-end hash of the file as read.
    pub hash: [u8; 32],
    /// Our hash of each segment the receiver's copy also has; dropped once
    /// compared.
    pub segments: Vec<SegmentHash>,
    /// Segments of the receiver's copy that differ from ours, ascending
    /// (the ones past its end are sent literally without being listed).
    pub differing: Vec<u32>,
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
