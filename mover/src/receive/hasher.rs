//! The receiver's hashing thread: reads its own copy of changed files to
//! produce segment hashes and signatures, off the thread that writes
//! incoming data, so a large base file never stalls the stream.

use crate::delta;
use crate::dest::hash_cache::{HashCache, SegmentHashes};
use crate::dest::volume::Volume;
use crate::dest::work::BaseRef;
use crate::wire::io::{Closed, Outbox};
use crate::wire::message::{BaseInfo, FileId, SegmentHash, ToSender};
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub use crate::dest::hash_cache::Identity;

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
    pub cache: Arc<HashCache>,
}

pub fn run(
    volume: Arc<Volume>,
    jobs: Receiver<HashJob>,
    out: mpsc::Sender<Vec<ToSender>>,
    announced: Announced,
    cache: Arc<HashCache>,
) {
    let mut out = Outbox::new(out);
    for job in jobs {
        let sent = match job {
            HashJob::Base { id, base: at, info } => {
                let base = Base {
                    volume: &volume,
                    cache: &cache,
                    at: &at,
                    info,
                };
                base.announce(id, &announced, &mut out)
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

/// A base to announce.
struct Base<'a> {
    volume: &'a Volume,
    cache: &'a HashCache,
    at: &'a BaseRef,
    info: BaseInfo,
}

impl Base<'_> {
    /// Announces the base, then sends its hashes: from the hash cache when
    /// it holds this very version of the file, else hashed here. The
    /// announcement goes out first so the sender reads and hashes its file
    /// while we read and hash ours. If the base cannot be opened after all,
    /// asks for the file whole.
    fn announce(
        &self,
        id: FileId,
        announced: &Announced,
        out: &mut Outbox<ToSender>,
    ) -> Result<(), Closed> {
        let info = self.info;
        let opened = self
            .at
            .open(self.volume)
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
        // Only the destination file's own entry: a partial file is spent
        // once the file it holds the start of is done.
        let cached = match self.at {
            BaseRef::Dest(_) if identity.size() == info.len => {
                self.cache.lookup(self.volume, &identity, info.segment_size)
            }
            _ => None,
        };
        let (all, sent) = match cached {
            Some(all) => (all, 0),
            None => {
                let (all, sent, readable) = self.hash(&file, id, out)?;
                let unchanged = Identity::of(&file).is_ok_and(|now| now == identity);
                if !(readable && unchanged && matches!(self.at, BaseRef::Dest(_))) {
                    (all, sent)
                } else {
                    let hashes = SegmentHashes {
                        segment_size: info.segment_size,
                        hashes: all,
                    };
                    self.cache.store(self.volume, &identity, &hashes);
                    (hashes.hashes, sent)
                }
            }
        };
        // The applier must have them all before the sender can act on the
        // final message.
        let all = Arc::new(all);
        if let Some(b) = lock(announced).get_mut(&id) {
            b.hashes = all.clone();
        }
        for (i, hashes) in all[sent..].chunks(HASHES_PER_MESSAGE).enumerate() {
            out.push(ToSender::BaseHashes {
                id,
                first: (sent + i * HASHES_PER_MESSAGE) as u32,
                hashes: hashes.to_vec(),
            })?;
        }
        Ok(())
    }

    /// Reads and hashes the base, sending the hashes as they are made, all
    /// but the last message's worth. Returns them all, how many went out,
    /// and whether every segment could be read (a segment that cannot gets
    /// a hash no data has, so it is sent, not copied).
    fn hash(
        &self,
        file: &std::fs::File,
        id: FileId,
        out: &mut Outbox<ToSender>,
    ) -> Result<(Vec<SegmentHash>, usize, bool), Closed> {
        let info = self.info;
        let seg = u64::from(info.segment_size);
        // Whole segments per read (no more than the file: a zeroed buffer
        // bigger than a small file would cost more than hashing it).
        let block = delta::hash_read_size(seg).min(info.len.div_ceil(seg) * seg);
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
            if pos < info.len && all.len() - sent >= HASHES_PER_MESSAGE {
                out.push(ToSender::BaseHashes {
                    id,
                    first: sent as u32,
                    hashes: all[sent..].to_vec(),
                })?;
                sent = all.len();
            }
        }
        Ok((all, sent, readable))
    }
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
