//! The receiver's hashing thread: reads its own copy of changed files to
//! produce segment hashes and signatures, off the thread that writes
//! incoming data, so a large base file never stalls the stream.

use crate::delta;
use crate::dest::volume::Volume;
use crate::dest::work::BaseRef;
use crate::wire::frame::DATA_CHUNK;
use crate::wire::io::{Closed, Outbox};
use crate::wire::message::{BaseInfo, FileId, SegmentHash, ToSender};
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Segment hashes per `BaseHashes` message (16 bytes each: 256 KiB), so
/// the hashes of a huge base stream out as they are made.
const HASHES_PER_MESSAGE: usize = 16 * 1024;

pub enum HashJob {
    /// Announce the copy at `base` as a base for `id`, with its hashes.
    Base {
        id: FileId,
        base: BaseRef,
        info: BaseInfo,
    },
    /// Send signatures of these segments of the base of `id`.
    Signatures {
        id: FileId,
        base: BaseRef,
        info: BaseInfo,
        segments: Vec<u32>,
    },
}

/// A base as this thread hashed it, for the applier: the hashes of the
/// segments it is told to copy, and the file's identity then, so a base that
/// changed since cannot pass the end-to-end check.
pub struct HashedBase {
    pub segment_size: u32,
    /// Complete once the last `BaseHashes` has gone out (the sender copies
    /// nothing before it has them all).
    pub hashes: Arc<Vec<SegmentHash>>,
    pub identity: Identity,
}

/// Bases announced to the sender, by file; the applier takes its entry when
/// the file's data begins.
pub type Announced = Arc<Mutex<HashMap<FileId, HashedBase>>>;

pub fn lock(announced: &Announced) -> std::sync::MutexGuard<'_, HashMap<FileId, HashedBase>> {
    announced.lock().unwrap_or_else(|e| e.into_inner())
}

/// Jobs queued for this thread. Bounded, so that a sender asking for
/// signatures faster than they are made (or never reading them) stalls its
/// own stream instead of growing the receiver: one job holds at most a
/// frame's worth of segment numbers.
pub const QUEUED_JOBS: usize = 8;

/// How the applier reaches this thread.
pub struct Handle {
    pub jobs: std::sync::mpsc::SyncSender<HashJob>,
    pub announced: Announced,
}

/// What tells one version of a file from another: a rewrite or a
/// replacement changes the inode, the size or the change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl Identity {
    pub fn of(file: &std::fs::File) -> std::io::Result<Self> {
        let md = file.metadata()?;
        Ok(Identity {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            ctime: (md.ctime(), md.ctime_nsec()),
            mtime: (md.mtime(), md.mtime_nsec()),
        })
    }
}

pub fn run(
    volume: Arc<Volume>,
    jobs: Receiver<HashJob>,
    out: mpsc::Sender<Vec<ToSender>>,
    announced: Announced,
) {
    let mut out = Outbox::new(out);
    for job in jobs {
        let sent = match job {
            HashJob::Base { id, base: at, info } => {
                base(&volume, id, &at, info, &announced, &mut out)
            }
            HashJob::Signatures {
                id,
                base: at,
                info,
                segments,
            } => signatures(&volume, id, &at, info, &segments, &mut out),
        };
        // Each job's answers go out together, as soon as it is done.
        if sent.and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// Announces the base, then hashes it. The announcement goes out first so
/// the sender reads and hashes its file while we read and hash ours. If the
/// base cannot be opened after all, asks for the file whole; a segment that
/// cannot be read gets a hash no data has, so it is sent, not copied.
fn base(
    volume: &Volume,
    id: FileId,
    at: &BaseRef,
    info: BaseInfo,
    announced: &Announced,
    out: &mut Outbox<ToSender>,
) -> Result<(), Closed> {
    let opened = at
        .open(volume)
        .and_then(|f| Identity::of(&f).ok().map(|id| (f, id)));
    let Some((file, identity)) = opened else {
        return out.push(ToSender::Need { id, base: None });
    };
    lock(announced).insert(
        id,
        HashedBase {
            segment_size: info.segment_size,
            hashes: Arc::default(),
            identity,
        },
    );
    out.push(ToSender::Need {
        id,
        base: Some(info),
    })?;
    out.flush()?;
    let seg = u64::from(info.segment_size);
    // Whole segments per read, about a data chunk's worth.
    // (No bigger than the file: a zeroed megabyte for each small file
    // would cost more than hashing it.)
    let block = ((DATA_CHUNK as u64 / seg).max(1) * seg).min(info.len.div_ceil(seg) * seg);
    let mut buf = vec![0u8; block as usize];
    let mut all = Vec::with_capacity(info.segment_count() as usize);
    let mut sent = 0usize;
    let mut readable = true;
    let mut pos = 0u64;
    while pos < info.len {
        let len = (info.len - pos).min(block) as usize;
        readable = readable && file.read_exact_at(&mut buf[..len], pos).is_ok();
        for segment in buf[..len].chunks(seg as usize) {
            all.push(if readable {
                delta::segment_hash(segment)
            } else {
                UNREADABLE
            });
        }
        pos += len as u64;
        if pos == info.len {
            // The applier must have them all before the sender can act on
            // the final message.
            let all = Arc::new(std::mem::take(&mut all));
            if let Some(b) = lock(announced).get_mut(&id) {
                b.hashes = all.clone();
            }
            return out.push(ToSender::BaseHashes {
                id,
                first: sent as u32,
                hashes: all[sent..].to_vec(),
            });
        }
        if all.len() - sent >= HASHES_PER_MESSAGE {
            out.push(ToSender::BaseHashes {
                id,
                first: sent as u32,
                hashes: all[sent..].to_vec(),
            })?;
            sent = all.len();
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
    at: &BaseRef,
    info: BaseInfo,
    segments: &[u32],
    out: &mut Outbox<ToSender>,
) -> Result<(), Closed> {
    if let Some(file) = at.open(volume) {
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
