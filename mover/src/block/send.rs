//! The sending end of a block copy ([`super`]): a scan thread streams the
//! source's segment hashes within the window the receiver's reports open,
//! a data thread answers the segments the receiver asks for (a delta
//! against its signature, or literally), and the loop here reads the
//! receiver's answers and passes them on.

use super::disk::Disk;
use super::scan::{self, Segment};
use super::{MAX_PENDING, WINDOW};
use crate::delta::FileHasher;
use crate::failure::Failure;
use crate::progress::Counters;
use crate::send::emit::{self, Emitter};
use crate::send::{close, open, Opened, SendConfig, SendReport};
use crate::wire::io::{self as wio, Closed, Outbox};
use crate::wire::message::{BlockGeometry, BlockTally, SegmentHash, ToReceiver, ToSender};
use std::ops::ControlFlow;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Segment hashes per `BlockHashes` message: 4 KiB of hashes for 64 MiB
/// of device, so the receiver compares while the scan goes on.
const HASHES_PER_MESSAGE: usize = 256;

/// A segment the receiver asked for, with the signature of its copy.
type Need = (u32, Vec<u8>);

/// Copies the block device or image `config.source` into the receiver's
/// volume `config.volume`.
pub async fn run<S>(
    stream: S,
    dial: Option<crate::net::Dial>,
    config: SendConfig,
    counters: Arc<Counters>,
) -> Result<SendReport, Failure>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let started = Instant::now();
    let peer = "receiver";
    let source = Disk::source(&config.source)
        .map_err(|e| Failure::permanent(format!("block source: {e}")))?;
    let size = source
        .size()
        .map_err(|e| Failure::permanent(format!("block source: {}", source.error(e))))?;
    let geometry = BlockGeometry {
        size,
        segment_size: super::SEGMENT,
    };
    if geometry.segment_count() > u64::from(u32::MAX) {
        return Err(Failure::permanent(format!(
            "block source {}: {size} bytes is more than a block copy can address",
            config.source.display()
        )));
    }
    let Opened {
        mut reader,
        out,
        writer,
        compress,
    } = open(stream, dial.as_ref(), &config, Vec::new(), Some(geometry)).await?;
    Counters::add(&counters.bytes_examined, size);
    let source = Arc::new(source);
    let credit = Arc::new(Credit::default());

    let mut scanning = {
        let (source, out, credit) = (source.clone(), out.clone(), credit.clone());
        tokio::task::spawn_blocking(move || send_hashes(&source, geometry, out, &credit))
    };
    let (needs, need_rx) = std::sync::mpsc::channel::<Vec<Need>>();
    let mut data = {
        let (source, out, counters) = (source.clone(), out.clone(), counters.clone());
        tokio::task::spawn_blocking(move || {
            send_segments(
                &source,
                geometry,
                need_rx,
                Emitter::new(out, compress, counters),
            )
        })
    };
    let mut answers = Answers {
        geometry,
        counters: &counters,
        credit: &credit,
        last: BlockTally::default(),
        probes: out,
        peer,
    };
    // Which of the two threads' handles the loop has already seen end: a
    // JoinHandle must not be awaited again after it has returned.
    let (mut scanned, mut data_ended) = (false, false);
    let answered = loop {
        tokio::select! {
            done = &mut scanning, if !scanned => {
                scanned = true;
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(failure)) => break Err(failure),
                    Err(e) => break Err(Failure::permanent(format!("block scan failed: {e}"))),
                }
            }
            done = &mut data => {
                data_ended = true;
                break Err(match done {
                    Ok(Err(failure)) => failure,
                    // It stops only when the connection is gone.
                    _ => Failure::retryable("the connection to the receiver closed"),
                });
            }
            batch = wio::next_batch(&mut reader, config.idle_timeout, peer) => {
                let mut asked = Vec::new();
                match batch.and_then(|batch| answers.handle_all(batch, &mut asked)) {
                    Ok(Some(stats)) => break Ok(stats),
                    Ok(None) => {}
                    Err(failure) => break Err(failure),
                }
                if !asked.is_empty() && needs.send(asked).is_err() {
                    break Err(Failure::retryable("the connection to the receiver closed"));
                }
            }
        }
    };
    // Wakes a scan waiting for room, and ends the data thread.
    credit.close();
    drop(needs);
    drop(answers);
    let answered = answered.and_then(|stats| {
        // A source that changed size was read in part as one size and in
        // part as the other: what arrived is no copy of either.
        match source.size() {
            Ok(now) if now == size => Ok(stats),
            Ok(now) => Err(Failure::permanent(format!(
                "block source {} changed size during the copy, from {size} to {now} bytes",
                config.source.display()
            ))),
            Err(e) => Err(Failure::permanent(format!(
                "block source: {}",
                source.error(e)
            ))),
        }
    });
    if answered.is_err() {
        // Nothing more goes out: a thread blocked on a full queue to a
        // peer that stopped reading must not keep this session.
        writer.abort();
    }
    if !scanned {
        let _ = scanning.await;
    }
    if !data_ended {
        let _ = data.await;
    }
    let stats = close(writer, answered).await?;
    Ok(SendReport::new(
        &config,
        started,
        &counters,
        stats,
        Vec::new(),
    ))
}

/// Reads the receiver's answers.
struct Answers<'a> {
    geometry: BlockGeometry,
    counters: &'a Counters,
    credit: &'a Credit,
    /// The receiver's last report, to count only what is new in the next.
    last: BlockTally,
    /// Where answers to the receiver's liveness probes go.
    probes: mpsc::Sender<Vec<ToReceiver>>,
    peer: &'a str,
}

impl Answers<'_> {
    /// Handles a batch; `Some` once the receiver reports the copy done.
    /// Segments asked for are added to `asked`.
    fn handle_all(
        &mut self,
        batch: Vec<ToSender>,
        asked: &mut Vec<Need>,
    ) -> Result<Option<crate::wire::message::ReceiverStats>, Failure> {
        for msg in batch {
            match msg {
                ToSender::BlockNeed { segment, signature } => {
                    if u64::from(segment) >= self.geometry.segment_count() {
                        return Err(
                            self.protocol(format!("asked for segment {segment}, past the end"))
                        );
                    }
                    self.credit.ask(1);
                    if self.credit.asked() > MAX_PENDING as u64 {
                        return Err(self.protocol("asked for more segments than the window allows"));
                    }
                    asked.push((segment, signature));
                }
                ToSender::BlockCompared { tally } => self.tally(tally)?,
                ToSender::Finished { stats } => return Ok(Some(stats)),
                ToSender::Error { message, retryable } => {
                    return Err(Failure {
                        message: format!("receiver: {message}"),
                        retryable,
                    })
                }
                ToSender::Keepalive => {}
                ToSender::Probe => {
                    let _ = self.probes.try_send(vec![ToReceiver::Keepalive]);
                }
                _ => return Err(self.protocol("a tree sync's message in a block copy")),
            }
        }
        Ok(None)
    }

    /// Takes in the receiver's progress: counters, and room for the scan.
    fn tally(&mut self, tally: BlockTally) -> Result<(), Failure> {
        let last = self.last;
        if tally.compared < last.compared
            || u64::from(tally.compared) > self.geometry.segment_count()
            || tally.written < last.written
            || tally.matched < last.matched
            || tally.zeroed < last.zeroed
        {
            return Err(self.protocol(format!("a progress report going backwards: {tally:?}")));
        }
        let c = self.counters;
        let done = |compared: u32| {
            (u64::from(compared) * u64::from(self.geometry.segment_size)).min(self.geometry.size)
        };
        Counters::add(&c.bytes_done, done(tally.compared) - done(last.compared));
        Counters::add(
            &c.segments_examined,
            u64::from(tally.compared - last.compared),
        );
        Counters::add(&c.segments_matched, tally.matched - last.matched);
        Counters::add(&c.segments_zeroed, tally.zeroed - last.zeroed);
        Counters::add(
            &c.bytes_matched,
            tally.matched_bytes.saturating_sub(last.matched_bytes),
        );
        self.credit.report(tally);
        self.last = tally;
        Ok(())
    }

    fn protocol(&self, what: impl std::fmt::Display) -> Failure {
        Failure::protocol(self.peer, what)
    }
}

/// What the scan may send: it stays within [`WINDOW`] segments of what the
/// receiver compared, and waits while [`WINDOW`] asked-for segments are
/// unwritten.
#[derive(Default)]
struct Credit {
    state: Mutex<CreditState>,
    changed: Condvar,
}

#[derive(Default)]
struct CreditState {
    compared: u32,
    written: u64,
    /// Segments asked for so far (counted as the data thread takes them).
    asked: u64,
    closed: bool,
}

impl Credit {
    fn state(&self) -> std::sync::MutexGuard<'_, CreditState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, tally: BlockTally) {
        let mut state = self.state();
        state.compared = tally.compared;
        state.written = tally.written;
        self.changed.notify_all();
    }

    /// Segments asked for and not yet reported written.
    fn asked(&self) -> u64 {
        let state = self.state();
        state.asked.saturating_sub(state.written)
    }

    fn ask(&self, n: usize) {
        self.state().asked += n as u64;
    }

    fn room_for(state: &CreditState, index: u32) -> bool {
        index < state.compared.saturating_add(WINDOW)
            && state.asked.saturating_sub(state.written) < u64::from(WINDOW)
    }

    /// Whether segment `index` may be sent now.
    fn has_room(&self, index: u32) -> bool {
        Credit::room_for(&self.state(), index)
    }

    /// Blocks until segment `index` may be sent; false once closed.
    fn wait(&self, index: u32) -> bool {
        let mut state = self.state();
        while !Credit::room_for(&state, index) && !state.closed {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        !state.closed
    }

    fn close(&self) {
        self.state().closed = true;
        self.changed.notify_all();
    }
}

/// The scan thread: the source's segment hashes in order, then
/// `BlockEnd`. Read errors end the session (a device that shrank or cannot
/// be read gives no copy).
fn send_hashes(
    source: &Disk,
    geometry: BlockGeometry,
    out: mpsc::Sender<Vec<ToReceiver>>,
    credit: &Credit,
) -> Result<(), Failure> {
    let mut out = Outbox::new(out);
    let mut run = Run::None;
    let mut list = FileHasher::new(Some(geometry.segment_size));
    let mut gone = false;
    let scanned = scan::scan(source, geometry, |segment| {
        list.known(&segment.hash);
        let flowing = credit.has_room(segment.index) || {
            // The receiver can only make room for what it has.
            let sent = run.take().map_or(Ok(()), |msg| out.push(msg));
            sent.and_then(|()| out.flush()).is_ok() && credit.wait(segment.index)
        };
        if !flowing || run.add(segment, &mut out).is_err() {
            gone = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    scanned.map_err(|e| Failure::permanent(format!("block source: {}", source.error(e))))?;
    if gone {
        return Ok(());
    }
    let end = ToReceiver::BlockEnd {
        hash: list.finalize(),
    };
    // The connection closing is the session's failure, reported elsewhere.
    let _ = run
        .take()
        .map_or(Ok(()), |msg| out.push(msg))
        .and_then(|()| out.push(end))
        .and_then(|()| out.flush());
    Ok(())
}

/// Consecutive segments of one kind, sent as one message.
enum Run {
    None,
    Hashes {
        first: u32,
        hashes: Vec<SegmentHash>,
    },
    Zero {
        first: u32,
        count: u32,
    },
}

impl Run {
    /// Adds `segment`, sending the run it ends (each message goes out at
    /// once: the receiver compares while the scan goes on).
    fn add(&mut self, segment: Segment, out: &mut Outbox<ToReceiver>) -> Result<(), Closed> {
        match self {
            Run::Zero { count, .. } if segment.zero => *count += 1,
            Run::Hashes { hashes, .. } if !segment.zero && hashes.len() < HASHES_PER_MESSAGE => {
                hashes.push(segment.hash)
            }
            _ => {
                if let Some(msg) = self.take() {
                    out.push(msg)?;
                    out.flush()?;
                }
                *self = if segment.zero {
                    Run::Zero {
                        first: segment.index,
                        count: 1,
                    }
                } else {
                    Run::Hashes {
                        first: segment.index,
                        hashes: vec![segment.hash],
                    }
                };
            }
        }
        Ok(())
    }

    fn take(&mut self) -> Option<ToReceiver> {
        match std::mem::replace(self, Run::None) {
            Run::None => None,
            Run::Hashes { first, hashes } => Some(ToReceiver::BlockHashes { first, hashes }),
            Run::Zero { first, count } => Some(ToReceiver::BlockZero { first, count }),
        }
    }
}

/// The data thread: each asked-for segment read again and sent as a delta
/// against the receiver's signature, or literally.
fn send_segments(
    source: &Disk,
    geometry: BlockGeometry,
    needs: std::sync::mpsc::Receiver<Vec<Need>>,
    mut emit: Emitter,
) -> Result<(), Failure> {
    let mut buf = vec![0u8; geometry.segment_size as usize];
    loop {
        let batch = match needs.try_recv() {
            Ok(batch) => batch,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return Ok(()),
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                // Idle: whatever is queued must go before we wait.
                if emit.flush().is_err() {
                    return Ok(());
                }
                match needs.recv() {
                    Ok(batch) => batch,
                    Err(_) => return Ok(()),
                }
            }
        };
        for (segment, signature) in batch {
            let (start, len) = geometry.segment(u64::from(segment));
            source
                .read_at(&mut buf[..len], start)
                .map_err(|e| Failure::permanent(format!("block source: {}", source.error(e))))?;
            if send_segment(&mut emit, segment, signature, &buf[..len]).is_err() {
                return Ok(());
            }
        }
    }
}

fn send_segment(
    emit: &mut Emitter,
    segment: u32,
    signature: Vec<u8>,
    data: &[u8],
) -> Result<(), Closed> {
    emit.next_file();
    Counters::add(&emit.counters().segments_sent, 1);
    let patch = (!signature.is_empty())
        .then(|| emit::smaller_patch(signature, data))
        .flatten();
    emit.send(ToReceiver::BlockSegment {
        segment,
        patch: patch.is_some(),
    })?;
    match patch {
        Some(patch) => emit.patch(&patch, data.len(), ToReceiver::PatchEnd { segment }),
        None => emit.literal(data.to_vec()),
    }
}
