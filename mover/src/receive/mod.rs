//! The receiving end of a sync: one session per sender connection, writing
//! one volume.
//!
//! The async side only moves frames; all filesystem work happens on
//! blocking threads: the applier ([`apply`]), which writes in message order;
//! the hasher ([`hasher`]), which reads old copies for deltas so that
//! hashing a large file never stalls the stream; and, with more than one
//! applier (`--appliers`), writer threads ([`writers`]) that write small
//! files and rename batches beside the applier, so that round trips to
//! network storage overlap. A dry run has one thread, the planner
//! ([`plan`]), which only reads.

mod apply;
mod hasher;
mod incoming;
pub mod lanes;
mod notices;
mod plan;
pub mod policy;
mod prefill;
mod tree;
pub mod volumes;
mod writers;

pub use writers::MAX_WRITERS as MAX_APPLIERS;

use crate::dest::volume::Volume;
use crate::failure::Failure;
use crate::wire::hello::{self, Opening, Request};
use crate::wire::io as wio;
use crate::wire::message::{ReceiverStats, ToReceiver, ToSender};
use crate::wire::stripes::BoxRead;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use volumes::Volumes;

#[derive(Debug, Clone)]
pub struct ReceiveConfig {
    /// Fail a session whose sender says nothing for this long.
    pub idle_timeout: Duration,
    /// Send a keepalive when nothing else went out for this long.
    pub keepalive: Duration,
    /// What senders may create.
    pub policy: policy::Policy,
    /// Write changed files in place instead of replacing them.
    pub inplace: bool,
    /// Whether the segment-hash cache is kept, and its bound.
    pub hash_cache: crate::dest::hash_cache::CacheConfig,
    /// Appliers per session (`--appliers`); by default as many as the
    /// volume's storage is worth ([`writers::count`]).
    pub appliers: Option<usize>,
}

/// How long a session waits for the data connections its sender asked for
/// (`--streams`): each is one TLS handshake, made at once.
const JOIN_DEADLINE: Duration = Duration::from_secs(30);

/// Serves one connection from a sender over an authenticated stream: a
/// session, or a data connection joining one. `allowed` lists the volumes
/// the sender's certificate names.
pub async fn session<S>(
    stream: S,
    peer: &str,
    allowed: &[String],
    volumes: &Volumes,
    config: &ReceiveConfig,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let mut reader = wio::reader::<BoxRead, ToReceiver, ToSender>(Box::new(read));
    let opening =
        hello::read_opening(&mut reader, config.idle_timeout, &format!("sender {peer}")).await;
    let request = match opening {
        Ok(Opening::Join { token, lane }) => {
            return volumes
                .lanes
                .join((token, lane), allowed, reader, write, peer)
                .await
        }
        Ok(Opening::Hello(request)) => Ok(request),
        Err(failure) => Err(failure),
    };
    let (out, out_rx) = mpsc::channel(crate::wire::frame::QUEUED_FRAMES);
    let writer = tokio::spawn(wio::write_all(
        wio::Output::Plain(write),
        out_rx,
        config.keepalive,
        || ToSender::Keepalive,
    ));
    let stop_writer = writer.abort_handle();
    let session = Session {
        out: &out,
        writer: &stop_writer,
        peer,
        allowed,
        volumes,
        config,
    };
    let result = match request {
        Ok(request) => session.run(request, &mut reader).await,
        Err(failure) => Err(failure),
    };
    // Both waits are bounded: a sender that reads nothing must not keep
    // this task (and its connection) forever.
    if let Err(failure) = &result {
        let error = ToSender::Error {
            message: failure.message.clone(),
            retryable: failure.retryable,
        };
        let _ = tokio::time::timeout(config.keepalive, out.send(vec![error])).await;
    }
    drop(out);
    // Let the final message (Finished or Error) reach the sender.
    if tokio::time::timeout(config.keepalive, writer)
        .await
        .is_err()
    {
        stop_writer.abort();
    }
    result
}

/// What writes the volume: a tree sync's applier (or a dry run's
/// planner), or a block copy.
enum Worker {
    Tree(Arc<Volume>),
    Block(crate::block::write::Copy),
}

/// How the session loop ended.
enum Ended {
    /// The applier finished, with the session's result.
    Applier(Result<ReceiverStats, Failure>),
    /// The connection failed first.
    Failed(Failure),
}

/// What a session works with besides its request and its reader.
struct Session<'a> {
    out: &'a mpsc::Sender<Vec<ToSender>>,
    writer: &'a AbortHandle,
    peer: &'a str,
    allowed: &'a [String],
    volumes: &'a Volumes,
    config: &'a ReceiveConfig,
}

impl Session<'_> {
    async fn run(
        &self,
        request: Request,
        reader: &mut wio::Reader<BoxRead, ToReceiver, ToSender>,
    ) -> Result<(), Failure> {
        let Session {
            out,
            writer,
            peer,
            allowed,
            volumes,
            config,
        } = *self;
        let mut claim = volumes.claim(&request.volume, allowed).await?;
        let cancel = incoming::Cancel::default();
        let worker = open_worker(&request, &claim, peer, out, &cancel)?;
        tracing::info!("{peer}: syncing volume {}", claim.name);
        out.send(vec![hello::welcome()])
            .await
            .map_err(|_| Failure::retryable("connection closed"))?;

        let (in_tx, in_rx) = mpsc::channel(crate::wire::frame::QUEUED_FRAMES);
        let (mut applier, hasher) = match worker {
            Worker::Block(copy) => (tokio::task::spawn_blocking(move || copy.run(in_rx)), None),
            Worker::Tree(volume_fs) if request.options.dry_run => {
                let planner = plan::Planner::new(
                    volume_fs,
                    (request.options, request.reserved),
                    peer.to_string(),
                    out.clone(),
                );
                (
                    tokio::task::spawn_blocking(move || planner.run(in_rx)),
                    None,
                )
            }
            Worker::Tree(volume_fs) => {
                let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel(hasher::QUEUED_JOBS);
                let announced = hasher::Announced::default();
                let cache = Arc::new(crate::dest::hash_cache::HashCache::new(config.hash_cache));
                let hasher = {
                    let (volume, out, announced, cache) = (
                        volume_fs.clone(),
                        out.clone(),
                        announced.clone(),
                        cache.clone(),
                    );
                    tokio::task::spawn_blocking(move || {
                        hasher::run(volume, hash_rx, out, announced, cache)
                    })
                };
                let appliers = writers::count(config.appliers, &volume_fs);
                let applier = apply::Applier::new(
                    volume_fs,
                    apply::Terms {
                        options: request.options,
                        reserved: request.reserved,
                        policy: config.policy,
                        inplace: config.inplace,
                        appliers,
                    },
                    peer.to_string(),
                    out.clone(),
                    hasher::Handle {
                        jobs: hash_tx,
                        announced,
                        cache,
                    },
                    cancel.clone(),
                );
                let applier = tokio::task::spawn_blocking(move || applier.run(in_rx));
                (applier, Some(hasher))
            }
        };

        // Whether the next batch is the sender's first, which may ask for
        // data connections; and those connections once joined.
        let mut first = true;
        let mut _lanes = None;
        // A liveness probe another session asked for, and when it fails.
        let mut probe: Option<(volumes::Liveness, Instant)> = None;
        let ended = loop {
            let deadline = probe.as_ref().map(|(_, at)| *at);
            tokio::select! {
                done = &mut applier => break Ended::Applier(joined(done)),
                Some(asked) = claim.probes.recv(), if probe.is_none() => {
                    // Any message proves the sender alive; a probe asks for one.
                    let _ = out.try_send(vec![ToSender::Probe]);
                    probe = Some((asked, Instant::now() + volumes::PROBE_DEADLINE));
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    // The sender is gone. Nothing more goes out to it, so no
                    // thread of this session can block on the way out while
                    // the volume is handed over.
                    writer.abort();
                    break Ended::Failed(Failure::retryable(format!(
                        "{peer} did not answer a liveness probe within {}s; \
                         another connection takes volume {} over",
                        volumes::PROBE_DEADLINE.as_secs(),
                        claim.name
                    )));
                }
                msg = wio::next_batch(reader, config.idle_timeout, peer) => {
                    if let Some((alive, _)) = probe.take() {
                        let _ = alive.send(());
                    }
                    match msg {
                        // `Streams` moves the rest of what the sender says
                        // to data connections.
                        Ok(msg) if std::mem::take(&mut first) && is_streams(&msg) => {
                            match self.gather(&msg, claim.name, reader).await {
                                Ok(held) => _lanes = Some(held),
                                Err(failure) => break Ended::Failed(failure),
                            }
                        }
                        Ok(msg) => {
                            if in_tx.send(msg).await.is_err() {
                                break Ended::Applier(joined((&mut applier).await));
                            }
                        }
                        Err(failure) => break Ended::Failed(failure),
                    }
                }
            }
        };
        // Closing the channel makes the applier stop (removing any half-written
        // file).
        drop(in_tx);
        let result = match ended {
            Ended::Applier(result) => result,
            // If the applier had already finished, the sender merely hung up
            // after `Finished`: success.
            Ended::Failed(failure) => {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                joined(applier.await).map_err(|_| failure)
            }
        };
        if let Some(hasher) = hasher {
            let _ = hasher.await;
        }
        // Only now, with both threads stopped, may the claim (dropped on
        // return) let another session write the volume.
        let stats = result?;
        if request.options.dry_run {
            tracing::info!(
                "{peer}: dry run of volume {}: {} files would be written, {} deleted",
                claim.name,
                stats.files_written,
                stats.deleted
            );
        } else if claim.block {
            claim.synced();
            tracing::info!(
                "{peer}: volume {} copied: {} segments written ({} bytes)",
                claim.name,
                stats.files_written,
                stats.bytes_written
            );
        } else {
            claim.synced();
            tracing::info!(
                "{peer}: volume {} synced: {} files written, {} deleted",
                claim.name,
                stats.files_written,
                stats.deleted
            );
        }
        Ok(())
    }

    /// Has the data connections that `first`, the sender's first batch
    /// (opening with `Streams`), asks for join, and makes `reader` read
    /// what they carry. Fails if the sender says anything more on this
    /// connection first.
    async fn gather(
        &self,
        first: &[ToReceiver],
        volume: &str,
        reader: &mut wio::Reader<BoxRead, ToReceiver, ToSender>,
    ) -> Result<lanes::Held, Failure> {
        let peer = self.peer;
        let early = || {
            Failure::protocol(
                peer,
                "sent more on its control connection before its data connections joined",
            )
        };
        let [ToReceiver::Streams { count, token }] = *first else {
            return Err(early());
        };
        let gathering = self
            .volumes
            .lanes
            .gather((count, token), volume, peer, JOIN_DEADLINE);
        let (merged, held) = tokio::select! {
            gathered = gathering => gathered?,
            sent = wio::next_frame(reader, JOIN_DEADLINE, peer) => {
                wio::received(sent?, peer)?;
                return Err(early());
            }
        };
        *reader = wio::reader(Box::new(merged));
        Ok(held)
    }
}

/// What will write the claimed volume for `request`: a tree sync's volume
/// or a block copy, refused if the two kinds do not match.
fn open_worker(
    request: &Request,
    claim: &volumes::Claim<'_>,
    peer: &str,
    out: &mpsc::Sender<Vec<ToSender>>,
    cancel: &incoming::Cancel,
) -> Result<Worker, Failure> {
    Ok(match (request.block, claim.block) {
        (None, false) => Worker::Tree(Arc::new(
            Volume::open(claim.name, claim.path).map_err(|e| Failure::permanent(e.to_string()))?,
        )),
        (Some(geometry), true) => Worker::Block(crate::block::write::Copy::open(
            claim.name,
            claim.path,
            geometry,
            peer,
            out.clone(),
            cancel.clone(),
        )?),
        (Some(_), false) => {
            return Err(Failure::permanent(format!(
                "volume {} is a directory tree ({}); it cannot take a block copy (--block)",
                claim.name,
                claim.path.display()
            )))
        }
        (None, true) => {
            return Err(Failure::permanent(format!(
                "volume {} is a block volume ({}); copy a block device or disk image into it with --block",
                claim.name,
                claim.path.display()
            )))
        }
    })
}

/// Whether the sender's first batch asks for data connections.
fn is_streams(first: &[ToReceiver]) -> bool {
    matches!(first.first(), Some(ToReceiver::Streams { .. }))
}

fn joined<T>(done: Result<Result<T, Failure>, tokio::task::JoinError>) -> Result<T, Failure> {
    done.unwrap_or_else(|e| Err(Failure::permanent(format!("receiver thread failed: {e}"))))
}
