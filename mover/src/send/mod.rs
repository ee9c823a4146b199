//! The sending end of a sync: walks a local tree and makes one volume of a
//! receiver equal to it.
//!
//! Three stages run at once so that nothing waits on a round trip: the walk
//! ([`walk`]) streams entries, the response loop here reacts to the
//! receiver's answers, and the data thread ([`data`]) reads and diffs files
//! for the answers that ask for data.

mod data;
pub(crate) mod emit;
pub mod itemize;
mod lanes;
mod state;
mod walk;
mod window;

use crate::compress::Compress;
use crate::delta;
use crate::failure::Failure;
use crate::net::Dial;
use crate::progress::{Counters, Snapshot};
use crate::wire::frame::FrameError;
use crate::wire::hello::{self, Features};
use crate::wire::io::{self as wio, Reader};
use crate::wire::message::{
    BaseInfo, BlockGeometry, FileId, ReceiverStats, SyncOptions, ToReceiver, ToSender,
};
use crate::wire::stripes::Stripes;
use data::Job;
use itemize::Itemize;
use serde::Serialize;
use state::{BaseState, Shared};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What to sync and how.
#[derive(Debug, Clone)]
pub struct SendConfig {
    pub source: PathBuf,
    pub volume: String,
    pub options: SyncOptions,
    /// Fail when the receiver says nothing for this long.
    pub idle_timeout: Duration,
    /// Send a keepalive when nothing else went out for this long.
    pub keepalive: Duration,
    /// When file data goes zstd-compressed.
    pub compress: Compress,
    /// How a dry run lists the changes it finds.
    pub itemize: Itemize,
    /// `source` is a block device or disk image, copied into a block
    /// volume ([`crate::block`]).
    pub block: bool,
    /// Connections carrying the session's data (`--streams`); with more
    /// than one, the receiver's bytes are striped over that many data
    /// connections beside the first ([`crate::wire::stripes`]).
    pub streams: u32,
}

/// The outcome of a finished sync.
#[derive(Debug, Clone, Serialize)]
pub struct SendReport {
    pub volume: String,
    pub duration_secs: f64,
    #[serde(flatten)]
    pub counters: Snapshot,
    /// In a dry run, what would be deleted, written and sent.
    pub dry_run: bool,
    pub files_deleted: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    /// Paths that could not be read or vanished, with the reason (the first
    /// thousand; all of them are logged as they happen).
    pub problems: Vec<String>,
}

impl SendReport {
    /// The report of a finished session of `config`, begun at `started`.
    pub(crate) fn new(
        config: &SendConfig,
        started: Instant,
        counters: &Counters,
        stats: ReceiverStats,
        problems: Vec<String>,
    ) -> SendReport {
        SendReport {
            volume: config.volume.clone(),
            duration_secs: started.elapsed().as_secs_f64(),
            counters: counters.snapshot(),
            dry_run: config.options.dry_run,
            files_deleted: stats.deleted,
            files_written: stats.files_written,
            bytes_written: stats.bytes_written,
            problems,
        }
    }
}

/// Fails unless `source` is a directory this process can list: checked
/// before connecting, so a typo costs no connection and no receiver work.
pub fn check_source(source: &std::path::Path) -> Result<(), Failure> {
    let listed = std::fs::read_dir(source).map(|_| ());
    match std::fs::metadata(source) {
        Ok(md) if !md.is_dir() => Err(Failure::permanent(format!(
            "source {} is not a directory",
            source.display()
        ))),
        Ok(_) => {
            listed.map_err(|e| Failure::permanent(format!("source {}: {e}", source.display())))
        }
        Err(e) => Err(Failure::permanent(format!(
            "source {}: {e}",
            source.display()
        ))),
    }
}

/// A session's plumbing once Hello and Welcome are through.
pub(crate) struct Opened<R> {
    pub reader: Reader<R, ToSender, ToReceiver>,
    /// The queue of the task writing to the receiver.
    pub out: mpsc::Sender<Vec<ToReceiver>>,
    pub writer: JoinHandle<Result<(), FrameError>>,
    /// How data may go: compressed only for a receiver that reads zstd.
    pub compress: Compress,
}

/// Says Hello, checks the receiver's Welcome, has the data connections
/// `config.streams` asks for (opened through `dial`) join if the receiver
/// takes them, and starts the writer.
pub(crate) async fn open<S>(
    stream: S,
    dial: Option<&Dial>,
    config: &SendConfig,
    reserved: Vec<u32>,
    block: Option<BlockGeometry>,
) -> Result<Opened<ReadHalf<S>>, Failure>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = wio::reader::<_, ToSender, ToReceiver>(read);
    let ours = Features::ours();
    let request = hello::Request {
        volume: config.volume.clone(),
        options: config.options,
        features: ours.clone(),
        reserved,
        block,
    };
    let hello = async {
        // A refused certificate shows on the read (TLS 1.3 judges it after
        // the client's handshake), with the receiver's reason: read before
        // failing.
        let said = wio::write_one(&mut write, &request.hello()).await;
        let features = hello::read_welcome(&mut reader, config.idle_timeout, &ours).await?;
        said.map_err(|e| Failure::network("receiver", e))?;
        Ok(features)
    };
    // The data connections are opened while Hello goes back and forth, so
    // their handshakes cost no round trips of their own; they are dropped
    // unused if the receiver does not take them.
    let dialing = async {
        let dialed = match dial {
            Some(dial) if config.streams > 1 => {
                let lanes = (0..config.streams).map(|lane| async move {
                    dial.open().await.map_err(|f| lanes::on_lane(lane, f))
                });
                Some(futures_util::future::try_join_all(lanes).await)
            }
            _ => None,
        };
        Ok::<_, Failure>(dialed)
    };
    let (features, dialed) = tokio::try_join!(hello, dialing)?;
    hello::check_options(&config.options, &features)?;
    let compress = if features.has(Features::ZSTD) {
        config.compress
    } else {
        Compress::Off
    };
    let output = match dialed {
        Some(lanes) if features.has(Features::STREAMS) => {
            let lanes = lanes::join(&mut write, lanes?, config).await?;
            wio::Output::Striped {
                control: write,
                stripes: Stripes::new(lanes, config.keepalive),
            }
        }
        _ => {
            if config.streams > 1 {
                tracing::warn!(
                    "the receiver does not take several connections per volume \
                     (feature `streams`); --streams {} falls back to one",
                    config.streams
                );
            }
            wio::Output::Plain(write)
        }
    };
    let (out, out_rx) = mpsc::channel(crate::wire::frame::QUEUED_FRAMES);
    let writer = tokio::spawn(wio::write_all(output, out_rx, config.keepalive, || {
        ToReceiver::Keepalive
    }));
    Ok(Opened {
        reader,
        out,
        writer,
        compress,
    })
}

/// Ends a session: on success waits until everything queued has gone out
/// (and the stream is shut down); on failure stops the writer at once.
pub(crate) async fn close(
    writer: JoinHandle<Result<(), FrameError>>,
    answered: Result<ReceiverStats, Failure>,
) -> Result<ReceiverStats, Failure> {
    let stats = match answered {
        Ok(stats) => stats,
        Err(failure) => {
            writer.abort();
            return Err(failure);
        }
    };
    match writer.await {
        Ok(Ok(())) => Ok(stats),
        Ok(Err(e)) => Err(Failure::network("receiver", e)),
        Err(e) => Err(Failure::network("receiver", e)),
    }
}

/// Runs one sync over an established stream to the receiver; `dial`
/// opens further connections to it, for `config.streams`.
pub async fn run<S>(
    stream: S,
    dial: Option<Dial>,
    config: SendConfig,
    counters: Arc<Counters>,
) -> Result<SendReport, Failure>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    config.options.validate().map_err(Failure::permanent)?;
    if config.block {
        return crate::block::send::run(stream, dial, config, counters).await;
    }
    let started = Instant::now();
    let peer = "receiver";
    let reserved = crate::dest::work::reserved_in(&config.source);
    let Opened {
        mut reader,
        out,
        writer,
        compress,
    } = open(stream, dial.as_ref(), &config, reserved, None).await?;

    let shared = Arc::new(Shared::new(counters.clone()));
    let (jobs, job_rx) = std::sync::mpsc::channel();
    let mut walker = {
        let (out, shared, root) = (out.clone(), shared.clone(), config.source.clone());
        let xattrs = config.options.xattrs;
        tokio::task::spawn_blocking(move || walk::run(&root, xattrs, out, &shared))
    };
    let data = {
        let (out, shared) = (out.clone(), shared.clone());
        tokio::task::spawn_blocking(move || data::run(job_rx, out, &shared, compress))
    };
    let responses = Responses {
        shared: &shared,
        jobs,
        probes: out,
        peer,
        changes: config
            .options
            .dry_run
            .then_some((config.itemize, config.volume.as_str())),
    };
    let answered = tokio::select! {
        answered = responses.run(&mut reader, config.idle_timeout) => answered,
        walked = &mut walker => match walked {
            // The walk ended early (the source became unreadable): the
            // receiver is waiting for entries that will never come.
            Ok(Err(msg)) => Err(Failure::permanent(msg)),
            Err(e) => Err(Failure::permanent(format!("walker failed: {e}"))),
            Ok(Ok(())) => responses.run(&mut reader, config.idle_timeout).await,
        },
    };
    // Closing the job channel lets the data thread finish.
    drop(responses);
    shared.window.close();
    if !walker.is_finished() {
        let _ = (&mut walker).await;
    }
    if answered.is_ok() {
        let _ = data.await;
    }
    let stats = close(writer, answered).await?;
    Ok(SendReport::new(
        &config,
        started,
        &counters,
        stats,
        shared.take_problems(),
    ))
}

/// Reacts to the receiver's answers until it reports the volume finished.
struct Responses<'a> {
    shared: &'a Shared,
    jobs: std::sync::mpsc::Sender<Vec<Job>>,
    /// Where answers to the receiver's liveness probes go.
    probes: mpsc::Sender<Vec<ToReceiver>>,
    peer: &'a str,
    /// In a dry run, how to list changes and for which volume.
    changes: Option<(Itemize, &'a str)>,
}

impl Responses<'_> {
    async fn run<R: AsyncRead + Unpin>(
        &self,
        reader: &mut Reader<R, ToSender, ToReceiver>,
        idle: Duration,
    ) -> Result<ReceiverStats, Failure> {
        loop {
            // Answers arrive in bursts; their jobs reach the data thread as
            // one batch (one wakeup).
            let mut jobs = Vec::new();
            let mut finished = None;
            for msg in wio::next_batch(reader, idle, self.peer).await? {
                finished = self.handle(msg, &mut jobs)?;
                if finished.is_some() {
                    break;
                }
            }
            if !jobs.is_empty() {
                self.jobs
                    .send(jobs)
                    // The data thread stops only when the connection's
                    // writer is gone: the connection broke, and a retry
                    // may well get through.
                    .map_err(|_| Failure::retryable("the connection to the receiver closed"))?;
            }
            if let Some(stats) = finished {
                return Ok(stats);
            }
        }
    }

    /// Acts on one answer; `Some` once the receiver reports it finished.
    fn handle(&self, msg: ToSender, jobs: &mut Vec<Job>) -> Result<Option<ReceiverStats>, Failure> {
        match msg {
            ToSender::Have { id } => {
                if let Some(p) = self.shared.finish(id) {
                    Counters::add(&self.shared.counters.bytes_done, p.size);
                }
            }
            // A dry run sends no file data, whatever the receiver asks.
            ToSender::Need { id, .. } if self.changes.is_some() => {
                return Err(Failure::protocol(
                    self.peer,
                    format!("asked for the data of file {id} in a dry run"),
                ))
            }
            ToSender::Need { id, base: None } => {
                // Also the answer to a file whose check failed: whatever
                // base it had is forgotten, so its hash is the plain one.
                if let Some(p) = self.shared.pending().get_mut(&id) {
                    p.base = None;
                    p.scan = None;
                }
                jobs.push(Job::Whole(id));
            }
            ToSender::Need {
                id,
                base: Some(info),
            } => {
                self.start_base(id, info)?;
                jobs.push(Job::Scan(id));
            }
            ToSender::BaseHashes { id, first, hashes } => {
                if self.add_hashes(id, first, hashes)? {
                    jobs.push(Job::Compare(id));
                }
            }
            ToSender::Signature {
                id,
                segment,
                signature,
            } => self.with_base(id, |base| {
                if segment >= base.info.segment_count() {
                    return Err(format!("signature for segment {segment} out of range"));
                }
                base.signatures.insert(segment, signature);
                Ok(())
            })?,
            ToSender::SignaturesEnd { id } => {
                let mut ready = false;
                self.with_base(id, |base| {
                    if base.answered_all() {
                        return Err(format!("more signature ends than requests for file {id}"));
                    }
                    base.answered += 1;
                    ready = base.all_asked && base.answered_all();
                    Ok(())
                })?;
                if ready {
                    jobs.push(Job::Patch(id));
                }
            }
            // The data thread counted the file's bytes as it sent them.
            ToSender::FileDone { id } => {
                self.shared.finish(id);
            }
            ToSender::FileFailed { id, message } => {
                if let Some(p) = self.shared.finish(id) {
                    if !p.aborted {
                        self.shared.error(format!(
                            "{}: receiver: {message}",
                            self.shared.source_path(&p.rel).display()
                        ));
                    }
                }
            }
            ToSender::Error { message, retryable } => {
                return Err(Failure {
                    message: format!("receiver: {message}"),
                    retryable,
                })
            }
            ToSender::Finished { stats } => return Ok(Some(stats)),
            ToSender::Keepalive => {}
            // A full queue means messages are flowing anyway, and any one
            // of them proves us alive.
            ToSender::Probe => {
                let _ = self.probes.try_send(vec![ToReceiver::Keepalive]);
            }
            ToSender::Welcome { .. } => return Err(Failure::protocol(self.peer, "second Welcome")),
            ToSender::BlockNeed { .. } | ToSender::BlockCompared { .. } => {
                return Err(Failure::protocol(
                    self.peer,
                    "a block copy's message in a tree sync",
                ))
            }
            ToSender::Change { path, change } => match self.changes {
                Some((itemize, volume)) => itemize.print(volume, &path, &change),
                None => {
                    return Err(Failure::protocol(
                        self.peer,
                        format!("change of {path} reported outside a dry run"),
                    ))
                }
            },
        }
        Ok(None)
    }

    fn start_base(&self, id: FileId, info: BaseInfo) -> Result<(), Failure> {
        if !delta::is_valid_segment_size(info.segment_size)
            || info.len == 0
            || u64::from(info.segment_count()) > delta::MAX_SEGMENTS
        {
            return Err(Failure::protocol(
                self.peer,
                format!("unusable base {info:?} for file {id}"),
            ));
        }
        let mut pending = self.shared.pending();
        let p = pending
            .get_mut(&id)
            .ok_or_else(|| Failure::protocol(self.peer, format!("Need for unknown file {id}")))?;
        p.base = Some(BaseState::new(info));
        Ok(())
    }

    /// Records hashes of the receiver's copy; true when they are complete
    /// and our scan of the file is already waiting for them (checked under
    /// the same lock the scan takes to look for them, so exactly one of the
    /// two starts the comparison).
    fn add_hashes(&self, id: FileId, first: u32, hashes: Vec<[u8; 16]>) -> Result<bool, Failure> {
        let mut pending = self.shared.pending();
        let p = pending.get_mut(&id);
        let scanned = p.as_ref().is_some_and(|p| p.scan.is_some());
        let Some(base) = p.and_then(|p| p.base.as_mut()) else {
            return Err(Failure::protocol(
                self.peer,
                format!("no base announced for file {id}"),
            ));
        };
        let list = Arc::make_mut(&mut base.hashes);
        if first as usize != list.len()
            || list.len() + hashes.len() > base.info.segment_count() as usize
        {
            return Err(Failure::protocol(
                self.peer,
                format!("segment hashes out of order or too many for file {id}"),
            ));
        }
        list.extend_from_slice(&hashes);
        Ok(base.complete() && scanned)
    }

    /// Runs `f` on the base of `id`. A file no longer pending is skipped: the
    /// scan asks for signatures before it is done, so when it then gives up
    /// on a file that vanished, the receiver may report the file failed
    /// before its hashing thread has answered.
    fn with_base(
        &self,
        id: FileId,
        f: impl FnOnce(&mut BaseState) -> Result<(), String>,
    ) -> Result<(), Failure> {
        let mut pending = self.shared.pending();
        let Some(p) = pending.get_mut(&id) else {
            return Ok(());
        };
        let base = p.base.as_mut().ok_or_else(|| {
            Failure::protocol(self.peer, format!("no base announced for file {id}"))
        })?;
        f(base).map_err(|msg| Failure::protocol(self.peer, msg))
    }
}
