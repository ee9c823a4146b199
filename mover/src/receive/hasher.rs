//! The receiver's hashing thread: reads its own copy of changed files to
//! produce segment hashes and signatures, off the thread that writes
//! incoming data, so a large base file never stalls the stream.

use crate::delta;
use crate::dest::volume::Volume;
use crate::entry::RelPath;
use crate::wire::io::{Closed, Outbox};
use crate::wire::message::{BaseInfo, FileId, SegmentHash, ToSender};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Segment hashes per `BaseHashes` message (16 bytes each: 256 KiB), so
/// the hashes of a huge base stream out as they are made.
const HASHES_PER_MESSAGE: usize = 16 * 1024;

pub enum HashJob {
    /// Announce the copy at `path` as a base for `id`, with its hashes.
    Base {
        id: FileId,
        path: RelPath,
        info: BaseInfo,
    },
    /// Send signatures of these segments of the base of `id`.
    Signatures {
        id: FileId,
        path: RelPath,
        info: BaseInfo,
        segments: Vec<u32>,
    },
}

pub fn run(volume: Arc<Volume>, jobs: Receiver<HashJob>, out: mpsc::Sender<Vec<ToSender>>) {
    let mut out = Outbox::new(out);
    for job in jobs {
        let sent = match job {
            HashJob::Base { id, path, info } => base(&volume, id, &path, info, &mut out),
            HashJob::Signatures {
                id,
                path,
                info,
                segments,
            } => signatures(&volume, id, &path, info, &segments, &mut out),
        };
        // Each job's answers go out together, as soon as it is done.
        if sent.and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

fn open(volume: &Volume, path: &RelPath) -> Option<std::fs::File> {
    let (parent, name) = path.split_last()?;
    volume.open_dir(&parent).ok()?.open_file(name).ok()
}

/// Announces the base, then hashes it. The announcement goes out first so
/// the sender reads and hashes its file while we read and hash ours. If the
/// base cannot be opened after all, asks for the file whole; a segment that
/// cannot be read gets a hash no data has, so it is sent, not copied.
fn base(
    volume: &Volume,
    id: FileId,
    path: &RelPath,
    info: BaseInfo,
    out: &mut Outbox<ToSender>,
) -> Result<(), Closed> {
    let Some(file) = open(volume, path) else {
        return out.push(ToSender::Need { id, base: None });
    };
    out.push(ToSender::Need {
        id,
        base: Some(info),
    })?;
    out.flush()?;
    let seg = u64::from(info.segment_size);
    let mut buf = vec![0u8; info.segment_size as usize];
    let mut hashes = Vec::with_capacity(HASHES_PER_MESSAGE);
    let mut first = 0u32;
    let mut readable = true;
    for i in 0..info.segment_count() {
        let start = u64::from(i) * seg;
        let len = (info.len - start).min(seg) as usize;
        readable = readable && file.read_exact_at(&mut buf[..len], start).is_ok();
        hashes.push(if readable {
            delta::segment_hash(&buf[..len])
        } else {
            UNREADABLE
        });
        if hashes.len() == HASHES_PER_MESSAGE || i + 1 == info.segment_count() {
            let count = hashes.len() as u32;
            out.push(ToSender::BaseHashes {
                id,
                first,
                hashes: std::mem::replace(&mut hashes, Vec::with_capacity(HASHES_PER_MESSAGE)),
            })?;
            first += count;
        }
    }
    Ok(())
}

/// Stands in for the hash of a segment that could not be read: a truncated
/// blake3 hash is all zeros with probability 2^-128.
const UNREADABLE: SegmentHash = [0; 16];

/// Sends the requested signatures; a segment that can no longer be read is
/// skipped, and the sender sends that segment literally.
fn signatures(
    volume: &Volume,
    id: FileId,
    path: &RelPath,
    info: BaseInfo,
    segments: &[u32],
    out: &mut Outbox<ToSender>,
) -> Result<(), Closed> {
    if let Some(file) = open(volume, path) {
        let seg = u64::from(info.segment_size);
        let mut buf = vec![0u8; info.segment_size as usize];
        for &segment in segments {
            let start = u64::from(segment) * seg;
            let len = (info.len - start).min(seg) as usize;
            if file.read_exact_at(&mut buf[..len], start).is_ok() {
                out.push(ToSender::Signature {
                    id,
                    segment,
                    signature: delta::signature(&buf[..len], info.segment_size),
                })?;
            }
        }
    }
    out.push(ToSender::SignaturesEnd { id })
}
