//! The receiving end of a block copy ([`super`]): compares the sender's
//! segment hashes with the destination's as both streams arrive, zeroes
//! what the source has as zeros, asks for the other differing segments,
//! and writes each one in place once it has checked it against the
//! source's hash.
//!
//! Runs on one blocking thread, with a second one reading the destination
//! ahead of the comparison ([`scan`]). The reader only ever reads segments
//! not yet compared, and this thread only writes segments already
//! compared, so the two never touch the same bytes.

use super::disk::{Disk, DiskError};
use super::scan::{self, Segment, ZeroHashes};
use super::MAX_PENDING;
use crate::delta::{self, FileHasher};
use crate::failure::Failure;
use crate::wire::frame::MAX_FRAME;
use crate::wire::io::{Closed, Outbox};
use crate::wire::message::{
    BlockGeometry, BlockTally, ReceiverStats, SegmentHash, ToReceiver, ToSender,
};
use std::collections::BTreeMap;
use std::io;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Destination segments read ahead of the comparison: a few read buffers'
/// worth, so the reader never waits on the comparison or the other way
/// round, and no more.
const READ_AHEAD: usize = 64;

/// A destination opened and fitted for one block copy, not yet started.
pub struct Copy {
    disk: Disk,
    geometry: BlockGeometry,
    volume: String,
    peer: String,
    out: mpsc::Sender<Vec<ToSender>>,
    cancel: Arc<AtomicBool>,
}

impl Copy {
    /// Opens the destination `path` of `volume` for the source a sender
    /// announced, before the session is accepted: a destination too small
    /// (or otherwise unusable) refuses the Hello, naming the volume.
    pub fn open(
        volume: &str,
        path: &Path,
        geometry: BlockGeometry,
        peer: &str,
        out: mpsc::Sender<Vec<ToSender>>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Copy, Failure> {
        if !delta::is_valid_segment_size(geometry.segment_size)
            || geometry.segment_count() > u64::from(u32::MAX)
        {
            return Err(Failure::protocol(
                peer,
                format!("unusable block geometry {geometry:?}"),
            ));
        }
        let refused = |e: DiskError| match e {
            DiskError::TooSmall { .. } | DiskError::Busy { .. } => {
                Failure::permanent(e.to_string())
            }
            e => Failure::permanent(format!("volume {volume}: {e}")),
        };
        let disk = Disk::target(path).map_err(refused)?;
        disk.fit(volume, geometry.size).map_err(refused)?;
        Ok(Copy {
            disk,
            geometry,
            volume: volume.to_string(),
            peer: peer.to_string(),
            out,
            cancel,
        })
    }

    /// Runs the copy until the sender's last segment is written and
    /// verified and the device synced (then reports `Finished`), or fails.
    /// What was written stays: it is verified, and a retry finds it equal.
    pub fn run(self, rx: mpsc::Receiver<Vec<ToReceiver>>) -> Result<ReceiverStats, Failure> {
        let Copy {
            disk,
            geometry,
            volume,
            peer,
            out,
            cancel,
        } = self;
        std::thread::scope(|threads| {
            let (ahead, local) = sync_channel(READ_AHEAD);
            let disk = &disk;
            threads.spawn(move || {
                let scanned = scan::scan(disk, geometry, |segment| match ahead.send(Ok(segment)) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                });
                if let Err(e) = scanned {
                    let _ = ahead.send(Err(e));
                }
            });
            let mut writer = Writer {
                disk,
                geometry,
                zeros: ZeroHashes::new(geometry),
                volume: &volume,
                peer: &peer,
                out: Outbox::new(out),
                local,
                next: 0,
                list: FileHasher::new(Some(geometry.segment_size)),
                asked: BTreeMap::new(),
                incoming: None,
                zero_run: None,
                tally: BlockTally::default(),
                reported: BlockTally::default(),
                bytes_written: 0,
                unpack: None,
                ended: None,
            };
            let result = writer.apply_all(rx, &cancel);
            // Dropping the writer (and its end of the read-ahead) stops the
            // reader, which the scope then joins.
            drop(writer);
            result
        })
    }
}

/// The new content of one segment, as it arrives.
struct Incoming {
    segment: u32,
    patch: bool,
    buf: Vec<u8>,
}

struct Writer<'a> {
    disk: &'a Disk,
    geometry: BlockGeometry,
    zeros: ZeroHashes,
    volume: &'a str,
    peer: &'a str,
    out: Outbox<ToSender>,
    /// The destination's segments, read ahead.
    local: Receiver<io::Result<Segment>>,
    /// The next segment to compare.
    next: u64,
    /// Hashes the source's segment hashes, for the sender's `BlockEnd`.
    list: FileHasher,
    /// Segments asked for, with the source's hash each must have and
    /// whether the destination's is zeros.
    asked: BTreeMap<u32, (SegmentHash, bool)>,
    incoming: Option<Incoming>,
    /// Segments to zero, `(first, count)`, written as one range.
    zero_run: Option<(u64, u64)>,
    tally: BlockTally,
    /// The tally last sent.
    reported: BlockTally,
    bytes_written: u64,
    /// A zstd context for `Compressed` data, made on first use.
    unpack: Option<zstd::bulk::Decompressor<'static>>,
    /// The sender's end-to-end hash, once `BlockEnd` arrived.
    ended: Option<[u8; 32]>,
}

impl Writer<'_> {
    fn apply_all(
        &mut self,
        mut rx: mpsc::Receiver<Vec<ToReceiver>>,
        cancel: &AtomicBool,
    ) -> Result<ReceiverStats, Failure> {
        loop {
            let batch = match rx.try_recv() {
                Ok(batch) => batch,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Nothing queued: send what we have to say first.
                    self.out.flush().map_err(|Closed| self.disconnected())?;
                    rx.blocking_recv().ok_or_else(|| self.disconnected())?
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(self.disconnected()),
            };
            // Once the connection is gone, what it delivered is still
            // written: segment data needs no answer, and every segment
            // written now is one a retry finds equal instead of resending.
            let salvaging = cancel.load(Ordering::Relaxed);
            for msg in batch {
                if salvaging && !is_segment_data(&msg) {
                    continue;
                }
                self.handle(msg)?;
            }
            // Segments written since the last report free room in the
            // sender's window too: a scan waiting on them must hear of it.
            if !salvaging && self.tally.written != self.reported.written {
                self.report()?;
            }
            if self.ended.is_some() && self.asked.is_empty() && self.incoming.is_none() {
                return self.finish();
            }
        }
    }

    fn handle(&mut self, msg: ToReceiver) -> Result<(), Failure> {
        match msg {
            ToReceiver::BlockHashes { first, hashes } => {
                self.expect_next(first, hashes.len() as u64)?;
                for hash in hashes {
                    self.compare(hash, false)?;
                }
                self.report()
            }
            ToReceiver::BlockZero { first, count } => {
                self.expect_next(first, u64::from(count))?;
                for _ in 0..count {
                    self.compare(self.zeros.of(self.next), true)?;
                }
                self.report()
            }
            ToReceiver::BlockSegment { segment, patch } => {
                if self.incoming.is_some() {
                    return Err(self.protocol("a segment begun before the last one ended"));
                }
                if !self.asked.contains_key(&segment) {
                    return Err(self.protocol(format!("segment {segment} was not asked for")));
                }
                self.incoming = Some(Incoming {
                    segment,
                    patch,
                    buf: Vec::new(),
                });
                Ok(())
            }
            ToReceiver::Literal { data } => self.literal(&data),
            ToReceiver::Compressed { len, data } => {
                let mut zstd = match self.unpack.take() {
                    Some(zstd) => zstd,
                    None => zstd::bulk::Decompressor::new()
                        .map_err(|e| Failure::permanent(format!("zstd: {e}")))?,
                };
                let mut buf = Vec::new();
                let unpacked = crate::compress::decompress(&mut zstd, &data, len, &mut buf);
                self.unpack = Some(zstd);
                unpacked.map_err(|e| self.protocol(e))?;
                self.literal(&buf)
            }
            ToReceiver::PatchChunk { delta } => {
                let Some(incoming) = self.incoming.as_mut().filter(|i| i.patch) else {
                    return Err(self.protocol("delta data outside a delta segment"));
                };
                if incoming.buf.len() + delta.len() > MAX_FRAME {
                    let segment = incoming.segment;
                    return Err(self.protocol(format!(
                        "the delta of segment {segment} exceeds {MAX_FRAME} bytes"
                    )));
                }
                incoming.buf.extend_from_slice(&delta);
                Ok(())
            }
            ToReceiver::PatchEnd { segment } => match self.incoming.take() {
                Some(incoming) if incoming.patch && incoming.segment == segment => {
                    self.apply_patch(segment, &incoming.buf)
                }
                _ => {
                    Err(self.protocol(format!("end of a delta for segment {segment} never begun")))
                }
            },
            ToReceiver::BlockEnd { hash } => {
                if self.next != self.geometry.segment_count() || self.ended.is_some() {
                    return Err(self.protocol(format!(
                        "the copy ended after {} of {} segments",
                        self.next,
                        self.geometry.segment_count()
                    )));
                }
                self.flush_zeros()?;
                self.ended = Some(hash);
                Ok(())
            }
            ToReceiver::Keepalive => Ok(()),
            ToReceiver::Hello { .. } => Err(self.protocol("second Hello")),
            ToReceiver::Streams { .. } | ToReceiver::Join { .. } => {
                Err(self.protocol("Streams or Join in the middle of a session"))
            }
            _ => Err(self.protocol("a tree sync's message in a block copy")),
        }
    }

    /// Checks that the sender's next hashes continue where the last ended.
    fn expect_next(&self, first: u32, count: u64) -> Result<(), Failure> {
        if u64::from(first) != self.next || self.next + count > self.geometry.segment_count() {
            return Err(self.protocol(format!(
                "hashes for segments {first}..{} out of order or past the end ({} segments, next {})",
                u64::from(first) + count,
                self.geometry.segment_count(),
                self.next
            )));
        }
        Ok(())
    }

    /// Compares the next segment of the destination with the source's.
    fn compare(&mut self, source: SegmentHash, source_zero: bool) -> Result<(), Failure> {
        let index = self.next;
        let local = match self.local.recv() {
            Ok(Ok(segment)) if u64::from(segment.index) == index => segment,
            Ok(Err(e)) => return Err(self.disk_failure("reading", index, e)),
            _ => return Err(Failure::permanent("the destination's reader stopped")),
        };
        self.next += 1;
        self.list.known(&source);
        let (_, len) = self.geometry.segment(index);
        if local.hash == source {
            self.tally.matched += 1;
            self.tally.matched_bytes += len as u64;
        } else if source_zero {
            self.add_zero(index)?;
            self.tally.zeroed += 1;
        } else {
            let signature = if local.zero {
                // Nothing to diff against: the segment comes literally.
                Vec::new()
            } else {
                let mut buf = vec![0u8; len];
                self.read(&mut buf, index)?;
                delta::signature(&buf, self.geometry.segment_size)
            };
            self.asked.insert(local.index, (source, local.zero));
            if self.asked.len() > MAX_PENDING {
                return Err(self.protocol(format!(
                    "more than {MAX_PENDING} segments asked for and not sent"
                )));
            }
            self.send(ToSender::BlockNeed {
                segment: local.index,
                signature,
            })?;
        }
        Ok(())
    }

    /// Tells the sender how far the comparison got and what is written
    /// (room for its scan).
    fn report(&mut self) -> Result<(), Failure> {
        self.tally.compared = self.next as u32;
        self.reported = self.tally;
        self.send(ToSender::BlockCompared { tally: self.tally })
    }

    fn literal(&mut self, data: &[u8]) -> Result<(), Failure> {
        let Some(incoming) = self.incoming.as_mut().filter(|i| !i.patch) else {
            return Err(self.protocol("data outside a literal segment"));
        };
        let (_, len) = self.geometry.segment(u64::from(incoming.segment));
        if incoming.buf.len() + data.len() > len {
            let segment = incoming.segment;
            return Err(self.protocol(format!("more data than segment {segment} holds")));
        }
        if incoming.buf.capacity() == 0 {
            incoming.buf.reserve_exact(len);
        }
        incoming.buf.extend_from_slice(data);
        if incoming.buf.len() == len {
            let Some(Incoming { segment, buf, .. }) = self.incoming.take() else {
                return Ok(());
            };
            self.commit(segment, &buf)?;
        }
        Ok(())
    }

    fn apply_patch(&mut self, segment: u32, patch: &[u8]) -> Result<(), Failure> {
        let index = u64::from(segment);
        let (_, len) = self.geometry.segment(index);
        let mut base = vec![0u8; len];
        self.read(&mut base, index)?;
        let mut new = Vec::with_capacity(len);
        delta::apply(&base, patch, &mut new, len).map_err(|e| self.protocol(e))?;
        if new.len() != len {
            return Err(self.protocol(format!(
                "the delta of segment {segment} makes {} bytes, not {len}",
                new.len()
            )));
        }
        self.commit(segment, &new)
    }

    /// Writes a segment in place once it is what the source has.
    fn commit(&mut self, segment: u32, data: &[u8]) -> Result<(), Failure> {
        let index = u64::from(segment);
        let (expected, was_zero) = self.asked.remove(&segment).unzip();
        if expected != Some(delta::segment_hash(data)) {
            let (start, _) = self.geometry.segment(index);
            return Err(Failure::retryable(format!(
                "volume {}: segment {segment} (offset {start}) does not match the source's hash; \
                 the source or the destination changed during the copy",
                self.volume
            )));
        }
        let (start, _) = self.geometry.segment(index);
        self.check_size()?;
        // Over zeros only the blocks holding data need writing: an image
        // stays sparse where the source is zeros, a device is spared
        // the writes.
        let written = match was_zero {
            Some(true) => write_data_blocks(self.disk, data, start),
            _ => self.disk.write_at(data, start),
        };
        written.map_err(|e| self.disk_failure("writing", index, e))?;
        self.tally.written += 1;
        self.bytes_written += data.len() as u64;
        Ok(())
    }

    fn add_zero(&mut self, index: u64) -> Result<(), Failure> {
        match &mut self.zero_run {
            Some((first, count)) if *first + *count == index => *count += 1,
            _ => {
                self.flush_zeros()?;
                self.zero_run = Some((index, 1));
            }
        }
        Ok(())
    }

    fn flush_zeros(&mut self) -> Result<(), Failure> {
        let Some((first, count)) = self.zero_run.take() else {
            return Ok(());
        };
        self.check_size()?;
        let (start, _) = self.geometry.segment(first);
        let (last, last_len) = self.geometry.segment(first + count - 1);
        self.disk
            .zero(start, last + last_len as u64 - start)
            .map_err(|e| self.disk_failure("zeroing", first, e))
    }

    /// All segments are in: checks the source's hash list end to end, makes
    /// the writes durable, and reports the copy finished.
    fn finish(&mut self) -> Result<ReceiverStats, Failure> {
        let list = std::mem::replace(&mut self.list, FileHasher::new(None)).finalize();
        if Some(list) != self.ended {
            return Err(self.protocol("the end-to-end hash does not match the segment hashes"));
        }
        let path = self.disk.path().display();
        self.disk.sync().map_err(|e| {
            Failure::permanent(format!("volume {}: syncing {path}: {e}", self.volume))
        })?;
        self.check_size()?;
        let stats = ReceiverStats {
            deleted: 0,
            files_written: self.tally.written,
            bytes_written: self.bytes_written,
        };
        self.report()?;
        self.send(ToSender::Finished { stats })?;
        let _ = self.out.flush();
        Ok(stats)
    }

    /// Fails if the destination shrank below the source's size since it
    /// was fitted: checked before every write, because writing past the new
    /// end of an image would grow it back over the data it lost.
    fn check_size(&self) -> Result<(), Failure> {
        let path = self.disk.path().display();
        match self.disk.size() {
            Ok(len) if len >= self.geometry.size => Ok(()),
            Ok(len) => Err(Failure::permanent(format!(
                "volume {}: the destination {path} shrank to {len} bytes during the copy \
                 (the source has {})",
                self.volume, self.geometry.size
            ))),
            Err(e) => Err(Failure::permanent(format!(
                "volume {}: {path}: {e}",
                self.volume
            ))),
        }
    }

    fn read(&self, buf: &mut [u8], index: u64) -> Result<(), Failure> {
        let (start, _) = self.geometry.segment(index);
        self.disk
            .read_at(buf, start)
            .map_err(|e| self.disk_failure("reading", index, e))
    }

    fn send(&mut self, msg: ToSender) -> Result<(), Failure> {
        self.out.push(msg).map_err(|Closed| self.disconnected())
    }

    /// An I/O error on the destination, with where it happened. A device
    /// that went away or shrank will not come back by retrying.
    fn disk_failure(&self, doing: &str, index: u64, e: io::Error) -> Failure {
        let (start, _) = self.geometry.segment(index);
        Failure::permanent(format!(
            "volume {}: {doing} {} at offset {start} (segment {index}): {e}",
            self.volume,
            self.disk.path().display()
        ))
    }

    fn disconnected(&self) -> Failure {
        Failure::retryable(format!(
            "{} disconnected before the block copy finished",
            self.peer
        ))
    }

    fn protocol(&self, what: impl std::fmt::Display) -> Failure {
        Failure::protocol(self.peer, what)
    }
}

/// Whether `msg` carries a segment's content (which is written without
/// an answer).
fn is_segment_data(msg: &ToReceiver) -> bool {
    matches!(
        msg,
        ToReceiver::BlockSegment { .. }
            | ToReceiver::Literal { .. }
            | ToReceiver::Compressed { .. }
            | ToReceiver::PatchChunk { .. }
            | ToReceiver::PatchEnd { .. }
    )
}

/// Granularity at which [`write_data_blocks`] skips zeros: a filesystem
/// block.
const ZERO_BLOCK: usize = 4096;

/// Writes the runs of `data` that are not all zeros, at `offset` of a
/// destination that holds zeros there already.
fn write_data_blocks(disk: &Disk, data: &[u8], offset: u64) -> io::Result<()> {
    let mut run: Option<usize> = None;
    for (i, block) in data.chunks(ZERO_BLOCK).enumerate() {
        let at = i * ZERO_BLOCK;
        match (scan::is_zero(block), run) {
            (false, None) => run = Some(at),
            (true, Some(from)) => {
                disk.write_at(&data[from..at], offset + from as u64)?;
                run = None;
            }
            _ => {}
        }
    }
    match run {
        Some(from) => disk.write_at(&data[from..], offset + from as u64),
        None => Ok(()),
    }
}
