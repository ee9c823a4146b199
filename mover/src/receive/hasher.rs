//! The receiver's hashing thread: reads its own copy of changed files to
//! produce segment hashes and signatures, off the thread that writes
//! incoming data, so a large base file never stalls the stream.

use crate::delta;
use crate::dest::volume::Volume;
use crate::entry::RelPath;
use crate::wire::io::{Closed, Outbox};
use crate::wire::message::{BaseInfo, FileId, ToSender};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Segment hashes per `BaseHashes` message (16 bytes each: 1 MiB).
const HASHES_PER_MESSAGE: usize = 64 * 1024;

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

/// Hashes the base; if it cannot be read after all, asks for the file whole.
fn base(
    volume: &Volume,
    id: FileId,
    path: &RelPath,
    info: BaseInfo,
    out: &mut Outbox<ToSender>,
) -> Result<(), Closed> {
    let hashes = open(volume, path).and_then(|file| {
        let seg = u64::from(info.segment_size);
        let mut buf = vec![0u8; info.segment_size as usize];
        (0..info.segment_count())
            .map(|i| {
                let start = u64::from(i) * seg;
                let len = (info.len - start).min(seg) as usize;
                file.read_exact_at(&mut buf[..len], start).ok()?;
                Some(delta::segment_hash(&buf[..len]))
            })
            .collect::<Option<Vec<_>>>()
    });
    let Some(hashes) = hashes else {
        return out.push(ToSender::Need { id, base: None });
    };
    out.push(ToSender::Need {
        id,
        base: Some(info),
    })?;
    for (n, chunk) in hashes.chunks(HASHES_PER_MESSAGE).enumerate() {
        out.push(ToSender::BaseHashes {
            id,
            first: (n * HASHES_PER_MESSAGE) as u32,
            hashes: chunk.to_vec(),
        })?;
    }
    Ok(())
}

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
