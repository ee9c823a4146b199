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
use tokio::sync::Semaphore;

use super::blob::{transfer_blob, Placement};
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

/// Blobs in hand at once: their existence checks (HEAD) are cheap for the
/// registry, and on a re-copy nearly all the work, so many run together;
/// transfers are limited separately (`Tuning::parallel_blobs`).
const CHECKS_AT_ONCE: usize = 16;

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
///
/// When the destination tag already names an image, the blobs of that
/// image are taken as present without asking (a registry accepts a
/// manifest only when its repository holds its blobs): on a re-copy of a
/// moved tag that saves most of the requests. Should one have been
/// removed since, the registry refuses the new manifest, and the copy
/// checks those blobs, puts back what is missing, and writes it again.
pub async fn copy_image(
    src: &Registry,
    src_ref: &Reference,
    dst: &Registry,
    dst_ref: &Reference,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<CopyReport, Error> {
    // What the destination reference names now, read while the source is.
    let (plan, current) = tokio::join!(Plan::read(src, src_ref), current_image(dst, dst_ref));
    let (plan, current) = (plan?, current?);
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
    let mut tally = Tally {
        report: CopyReport {
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
        },
        settled: 0,
    };
    if current.as_ref().map(|m| &m.digest) == Some(&top.digest) {
        tally.report.up_to_date = true;
        tally.report.existing = tally.report.blobs;
        tally.settled = tally.report.bytes;
        progress(tally.progress(0));
        return Ok(tally.report);
    }
    let held: HashSet<&Digest> = current
        .as_ref()
        .map(|m| m.blobs().into_iter().map(|b| &b.digest).collect())
        .unwrap_or_default();
    let (assumed, unknown): (Vec<&Descriptor>, Vec<&Descriptor>) =
        plan.blobs.iter().partition(|b| held.contains(&b.digest));
    tally.assume_present(dst, &dst_ref.repository, &assumed);
    progress(tally.progress(0));
    tally
        .place(src, src_ref, dst, dst_ref, &unknown, progress)
        .await?;
    match put_manifests(dst, dst_ref, &plan.manifests).await {
        Err(e)
            if !assumed.is_empty() && matches!(e.kind, ErrorKind::Status { status: 400, .. }) =>
        {
            // MANIFEST_BLOB_UNKNOWN is a 400: check what was assumed.
            tally.doubt(&assumed);
            tally
                .place(src, src_ref, dst, dst_ref, &assumed, progress)
                .await?;
            put_manifests(dst, dst_ref, &plan.manifests).await?;
        }
        r => r?,
    }
    Ok(tally.report)
}

/// The image the destination reference names now, if any (one it cannot
/// read, e.g. of an old schema, counts as none: it is replaced anyway).
async fn current_image(dst: &Registry, r: &Reference) -> Result<Option<Manifest>, Error> {
    match dst.get_manifest(r).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.is_not_found() || matches!(e.kind, ErrorKind::Manifest(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Platform manifests by digest, then the top one by the reference.
async fn put_manifests(dst: &Registry, r: &Reference, manifests: &[Manifest]) -> Result<(), Error> {
    let (children, top) = manifests.split_at(manifests.len() - 1);
    for m in children {
        let by_digest = Reference {
            repository: r.repository.clone(),
            target: Target::Digest(m.digest.clone()),
        };
        dst.put_manifest(&by_digest, &m.media_type, m.body.clone())
            .await?;
    }
    dst.put_manifest(r, &top[0].media_type, top[0].body.clone())
        .await?;
    Ok(())
}

/// The report being filled in, and the bytes of blobs that are settled
/// without streaming (existing, mounted).
struct Tally {
    report: CopyReport,
    settled: u64,
}

impl Tally {
    fn progress(&self, streamed: u64) -> ImageProgress {
        let r = &self.report;
        ImageProgress {
            blobs_done: r.existing + r.mounted + r.uploaded,
            blobs_total: r.blobs,
            bytes_done: self.settled + streamed,
            bytes_total: r.bytes,
        }
    }

    /// Counts `blobs` as existing in `repository` without asking.
    fn assume_present(&mut self, dst: &Registry, repository: &str, blobs: &[&Descriptor]) {
        for b in blobs {
            dst.remember_blob(&b.digest, repository);
            self.report.existing += 1;
            self.settled += b.size;
        }
    }

    /// Takes back [`Tally::assume_present`], before checking those blobs.
    fn doubt(&mut self, blobs: &[&Descriptor]) {
        for b in blobs {
            self.report.existing -= 1;
            self.settled -= b.size;
        }
    }

    /// Makes every blob present in the destination repository: checks
    /// many at once, mounts or streams the missing ones (at most
    /// `parallel_blobs` transfers at once), and reports progress as blobs
    /// finish and every [`TICK`] while bytes flow.
    async fn place(
        &mut self,
        src: &Registry,
        src_ref: &Reference,
        dst: &Registry,
        dst_ref: &Reference,
        blobs: &[&Descriptor],
        progress: &(dyn Fn(ImageProgress) + Send + Sync),
    ) -> Result<(), Error> {
        let (src_repo, dst_repo) = (&src_ref.repository, &dst_ref.repository);
        let streamed = Arc::new(AtomicU64::new(0));
        let transfers = Semaphore::new(dst.tuning().parallel_blobs);
        let placed = futures_util::stream::iter(blobs.iter().copied())
            .map(|b| {
                let (streamed, transfers) = (&streamed, &transfers);
                async move {
                    if dst.blob_exists(dst_repo, &b.digest).await? {
                        dst.remember_blob(&b.digest, dst_repo);
                        return Ok((b, Placement::Existing));
                    }
                    // Never closed, so acquiring always succeeds.
                    let _permit = transfers.acquire().await;
                    transfer_blob(src, src_repo, dst, dst_repo, b, streamed)
                        .await
                        .map(|p| (b, p))
                }
            })
            .buffer_unordered(CHECKS_AT_ONCE);
        futures_util::pin_mut!(placed);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                next = placed.next() => match next {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok((blob, Placement::Existing))) => {
                        self.report.existing += 1;
                        self.settled += blob.size;
                    }
                    Some(Ok((blob, Placement::Mounted))) => {
                        self.report.mounted += 1;
                        self.settled += blob.size;
                    }
                    Some(Ok((blob, Placement::Uploaded))) => {
                        self.report.uploaded += 1;
                        self.report.bytes_uploaded += blob.size;
                    }
                },
                _ = tick.tick() => {}
            }
            progress(self.progress(streamed.load(Ordering::Relaxed)));
        }
    }
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
