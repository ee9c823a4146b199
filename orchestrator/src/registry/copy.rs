//! Copying one image (a manifest, or an index with every platform) from a
//! repository of one registry to a repository of another, or of the same.
//!
//! Order is what keeps a failure from publishing anything: every blob
//! first, then each platform manifest by digest, then the top manifest by
//! the destination tag. A tag therefore never names an image whose parts
//! are missing, and an interrupted copy is resumed by copying again (what
//! arrived is found by HEAD and skipped).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde::Serialize;

use super::blob::{copy_blob, Placement};
use super::client::Registry;
use super::digest::{Digest, Mismatch};
use super::error::{Error, ErrorKind};
use super::manifest::{Content, Descriptor, Manifest};
use super::reference::{Reference, Target};

/// Indexes nest (an index of indexes is legal); this deep is plenty and
/// stops a malicious or broken registry from sending us in circles.
const MAX_DEPTH: usize = 4;

/// How often progress is reported while bytes flow.
const TICK: Duration = Duration::from_millis(250);

/// Where a copy stands. Blobs and bytes count unique blobs of the whole
/// image (all platforms); blobs that needed no transfer count as done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImageProgress {
    pub blobs_done: usize,
    pub blobs_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What a finished copy did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// `registry/repository:tag` (or `@digest`) copied from.
    pub source: String,
    pub destination: String,
    /// The digest of the copied manifest or index, the same on both sides.
    pub digest: Digest,
    pub media_type: String,
    /// Manifests in the image: the platform manifests of an index, and
    /// the top one.
    pub manifests: usize,
    /// The destination reference already named this digest, so nothing
    /// was written.
    pub up_to_date: bool,
    /// Unique blobs of the image, and how each got there.
    pub blobs: usize,
    pub uploaded: usize,
    pub mounted: usize,
    pub existing: usize,
    /// Bytes of all unique blobs, and of those uploaded.
    pub bytes: u64,
    pub bytes_uploaded: u64,
}

/// Copies the image `src_ref` of `src` to `dst_ref` of `dst`, verifying
/// every digest, and reports progress through `progress` (called from this
/// future, often: keep it cheap).
///
/// Blobs the destination repository has are skipped; blobs known to be in
/// another repository of the destination registry (because this `dst`
/// handle put or saw them there, or because `src` is the same registry)
/// are mounted; the rest are streamed, several at once
/// ([`Tuning::parallel_blobs`](super::Tuning) of `dst`).
pub async fn copy_image(
    src: &Registry,
    src_ref: &Reference,
    dst: &Registry,
    dst_ref: &Reference,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<CopyReport, Error> {
    let plan = Plan::read(src, src_ref).await?;
    let top = plan.top();
    if let Target::Digest(d) = &dst_ref.target {
        if *d != top.digest {
            return Err(dst.error(
                Some(&dst_ref.repository),
                Some(format!("manifest {d}")),
                ErrorKind::Content(Mismatch::Digest {
                    expected: d.clone(),
                    actual: top.digest.clone(),
                }),
            ));
        }
    }
    let mut report = CopyReport {
        source: format!("{}/{src_ref}", src.name()),
        destination: format!("{}/{dst_ref}", dst.name()),
        digest: top.digest.clone(),
        media_type: top.media_type.clone(),
        manifests: plan.manifests.len(),
        up_to_date: false,
        blobs: plan.blobs.len(),
        uploaded: 0,
        mounted: 0,
        existing: 0,
        bytes: plan.blobs.iter().map(|b| b.size).sum(),
        bytes_uploaded: 0,
    };
    let mut now = ImageProgress {
        blobs_done: 0,
        blobs_total: report.blobs,
        bytes_done: 0,
        bytes_total: report.bytes,
    };
    if dst.manifest_digest(dst_ref).await?.as_ref() == Some(&top.digest) {
        // A registry only accepts a manifest whose blobs it has.
        report.up_to_date = true;
        report.existing = report.blobs;
        now.blobs_done = now.blobs_total;
        now.bytes_done = now.bytes_total;
        progress(now);
        return Ok(report);
    }
    progress(now);

    let streamed = Arc::new(AtomicU64::new(0));
    let mut not_streamed = 0u64;
    let copies = futures_util::stream::iter(&plan.blobs)
        .map(|b| {
            let streamed = &streamed;
            async move {
                copy_blob(
                    src,
                    &src_ref.repository,
                    dst,
                    &dst_ref.repository,
                    b,
                    streamed,
                )
                .await
                .map(|p| (b, p))
            }
        })
        .buffer_unordered(dst.tuning().parallel_blobs);
    futures_util::pin_mut!(copies);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            next = copies.next() => match next {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok((blob, placement))) => {
                    now.blobs_done += 1;
                    match placement {
                        Placement::Existing => report.existing += 1,
                        Placement::Mounted => report.mounted += 1,
                        Placement::Uploaded => {
                            report.uploaded += 1;
                            report.bytes_uploaded += blob.size;
                        }
                    }
                    if placement != Placement::Uploaded {
                        not_streamed += blob.size;
                    }
                }
            },
            _ = tick.tick() => {}
        }
        now.bytes_done = not_streamed + streamed.load(Ordering::Relaxed);
        progress(now);
    }

    let (children, top) = plan.manifests.split_at(plan.manifests.len() - 1);
    for m in children {
        let by_digest = Reference {
            repository: dst_ref.repository.clone(),
            target: Target::Digest(m.digest.clone()),
        };
        dst.put_manifest(&by_digest, &m.media_type, m.body.clone())
            .await?;
    }
    dst.put_manifest(dst_ref, &top[0].media_type, top[0].body.clone())
        .await?;
    Ok(report)
}

/// Everything an image consists of, read from the source before anything
/// is written: totals are known up front, and a broken index fails the
/// copy before it starts.
struct Plan {
    /// Platform manifests first (nested indexes after their children),
    /// the top manifest last.
    manifests: Vec<Manifest>,
    /// Unique blobs of all image manifests.
    blobs: Vec<Descriptor>,
}

impl Plan {
    async fn read(src: &Registry, r: &Reference) -> Result<Plan, Error> {
        let top = src.get_manifest(r).await?;
        let mut plan = Plan {
            manifests: Vec::new(),
            blobs: Vec::new(),
        };
        let mut seen = HashSet::new();
        plan.add(src, &r.repository, top, 0, &mut seen).await?;
        Ok(plan)
    }

    fn top(&self) -> &Manifest {
        // `read` always pushes the top manifest last.
        &self.manifests[self.manifests.len() - 1]
    }

    fn add<'a>(
        &'a mut self,
        src: &'a Registry,
        repository: &'a str,
        m: Manifest,
        depth: usize,
        seen: &'a mut HashSet<Digest>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if let Content::Index { manifests } = &m.content {
                for child in manifests {
                    if !seen.insert(child.digest.clone()) {
                        continue;
                    }
                    let object = || Some(format!("manifest {}", child.digest));
                    if depth + 1 >= MAX_DEPTH {
                        return Err(src.error(
                            Some(repository),
                            object(),
                            ErrorKind::Manifest(format!(
                                "indexes nested more than {MAX_DEPTH} deep"
                            )),
                        ));
                    }
                    let r = Reference {
                        repository: repository.to_string(),
                        target: Target::Digest(child.digest.clone()),
                    };
                    let c = src.get_manifest(&r).await?;
                    if c.body.len() as u64 != child.size {
                        return Err(src.error(
                            Some(repository),
                            object(),
                            ErrorKind::Content(Mismatch::Size {
                                expected: child.size,
                                actual: c.body.len() as u64,
                            }),
                        ));
                    }
                    self.add(src, repository, c, depth + 1, seen).await?;
                }
            }
            for b in m.blobs() {
                if seen.insert(b.digest.clone()) {
                    self.blobs.push(b.clone());
                }
            }
            self.manifests.push(m);
            Ok(())
        })
    }
}
