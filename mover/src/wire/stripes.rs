//! One session's sender-to-receiver bytes striped over several
//! connections (`--streams N`).
//!
//! A single TCP connection moves at most its window per round trip (about
//! 6 MiB of autotuned window over a 50 ms path is 120 MB/s, whatever the
//! link), and its TLS runs on one core. With `--streams`, everything the
//! sender writes after the opening exchange is cut into *segments* (the
//! writer's gathered messages, or one data chunk), each sent on one of N
//! data connections, its *lane*, with a header:
//!
//! ```text
//! seq: u64 big-endian | len: u32 big-endian | len bytes
//! ```
//!
//! Segments are numbered from 0 across all lanes; each lane carries its
//! segments in increasing order, so the receiver finds the next one at the
//! head of one lane and rebuilds the one byte stream the message layer
//! reads ([`Merged`]). Nothing above this module knows lanes exist: frames,
//! batching and the session protocol are unchanged. An empty segment is a
//! lane's own keepalive, so that an idle lane is not dropped by a router
//! while the others carry the traffic.
//!
//! A lane that fails fails the session, as a single connection's failure
//! does: a sync is retried whole (resuming from what arrived), never
//! patched up lane by lane.
//!
//! Memory stays bounded on both sides: the sender queues [`LANE_QUEUE`]
//! segments per lane, and the receiver holds at most that many per lane
//! plus one at each lane's head while it waits for the next in order.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most lanes a session may have: enough for any window-limited path, few
/// enough that one session cannot take a receiver's connection slots.
pub const MAX_STREAMS: u32 = 8;

/// Largest segment either side sends or accepts: a data chunk, or the
/// writer's gathered frames (less than its gathering size plus one
/// maximal frame).
pub const MAX_SEGMENT: usize = 2 * super::frame::MAX_FRAME;

/// Segments queued per lane on each side.
const LANE_QUEUE: usize = 2;

const HEADER: usize = 12;

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The sending side: deals segments out to the lanes' writer tasks.
pub struct Stripes {
    lanes: Vec<mpsc::Sender<(u64, Bytes)>>,
    tasks: Vec<Option<JoinHandle<io::Result<()>>>>,
    next_seq: u64,
    next_lane: usize,
}

impl Stripes {
    /// Starts one writer task per lane; each sends an empty segment when
    /// it has written nothing for `keepalive`.
    pub fn new(lanes: Vec<BoxWrite>, keepalive: Duration) -> Self {
        let (senders, tasks) = lanes
            .into_iter()
            .map(|lane| {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                (tx, Some(tokio::spawn(write_lane(lane, rx, keepalive))))
            })
            .unzip();
        Stripes {
            lanes: senders,
            tasks,
            next_seq: 0,
            next_lane: 0,
        }
    }

    /// Sends `bytes` as the next segment: on the first lane in turn with
    /// room in its queue, or if all are full, waits for the next in turn.
    pub async fn put(&mut self, bytes: Bytes) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if bytes.len() > MAX_SEGMENT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("segment of {} bytes exceeds {MAX_SEGMENT}", bytes.len()),
            ));
        }
        let count = self.lanes.len();
        let mut segment = (self.next_seq, bytes);
        self.next_seq += 1;
        for i in 0..count {
            let lane = (self.next_lane + i) % count;
            match self.lanes[lane].try_send(segment) {
                Ok(()) => {
                    self.next_lane = (lane + 1) % count;
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Full(back)) => segment = back,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.failed(lane).await),
            }
        }
        let lane = self.next_lane;
        if self.lanes[lane].send(segment).await.is_err() {
            return Err(self.failed(lane).await);
        }
        self.next_lane = (lane + 1) % count;
        Ok(())
    }

    /// Waits until every lane has written what it was given and closed its
    /// connection; the first lane's error if any failed.
    pub async fn finish(mut self) -> io::Result<()> {
        self.lanes.clear();
        let mut result = Ok(());
        for lane in 0..self.tasks.len() {
            if let Some(task) = self.tasks[lane].take() {
                let ended = joined(lane, task.await);
                if result.is_ok() {
                    result = ended;
                }
            }
        }
        result
    }

    /// Why `lane`'s writer stopped taking segments.
    async fn failed(&mut self, lane: usize) -> io::Error {
        match self.tasks[lane].take() {
            Some(task) => joined(lane, task.await).err(),
            None => None,
        }
        .unwrap_or_else(|| io::Error::other(format!("data connection {lane} closed")))
    }
}

impl Drop for Stripes {
    fn drop(&mut self) {
        for task in self.tasks.iter().flatten() {
            task.abort();
        }
    }
}

fn joined(lane: usize, ended: Result<io::Result<()>, tokio::task::JoinError>) -> io::Result<()> {
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(io::Error::new(
            e.kind(),
            format!("data connection {lane}: {e}"),
        )),
        Err(e) => Err(io::Error::other(format!("data connection {lane}: {e}"))),
    }
}

async fn write_lane(
    mut lane: BoxWrite,
    mut segments: mpsc::Receiver<(u64, Bytes)>,
    keepalive: Duration,
) -> io::Result<()> {
    let mut header = [0u8; HEADER];
    loop {
        let (seq, bytes) = match tokio::time::timeout(keepalive, segments.recv()).await {
            Ok(Some(segment)) => segment,
            Ok(None) => break,
            Err(_) => (0, Bytes::new()),
        };
        header[..8].copy_from_slice(&seq.to_be_bytes());
        header[8..].copy_from_slice(&(bytes.len() as u32).to_be_bytes());
        lane.write_all(&header).await?;
        lane.write_all(&bytes).await?;
        if segments.is_empty() {
            lane.flush().await?;
        }
    }
    lane.flush().await?;
    // Everything is written: the receiver may already have read it all
    // and gone, so a failed goodbye loses nothing.
    let _ = lane.shutdown().await;
    Ok(())
}

/// The receiving side: the lanes' segments back in order, as one stream.
pub struct Merged {
    lanes: Vec<mpsc::Receiver<io::Result<(u64, Bytes)>>>,
    /// Each lane's next segment, once received and not yet due.
    heads: Vec<Option<(u64, Bytes)>>,
    /// Lanes whose sender closed them cleanly.
    ended: Vec<bool>,
    next_seq: u64,
    current: Bytes,
    readers: Vec<JoinHandle<()>>,
}

impl Merged {
    /// Starts one reader task per lane, in lane order; `peer` names the
    /// sender in errors.
    pub fn new(lanes: Vec<BoxRead>, peer: &str) -> Self {
        let count = lanes.len();
        let (receivers, readers) = lanes
            .into_iter()
            .enumerate()
            .map(|(i, lane)| {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                let context = format!("{peer}, data connection {i}");
                (rx, tokio::spawn(read_lane(lane, tx, context)))
            })
            .unzip();
        Merged {
            lanes: receivers,
            heads: vec![None; count],
            ended: vec![false; count],
            next_seq: 0,
            current: Bytes::new(),
            readers,
        }
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

impl AsyncRead for Merged {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.current.is_empty() {
                let n = this.current.len().min(buf.remaining());
                buf.put_slice(&this.current.split_to(n));
                return Poll::Ready(Ok(()));
            }
            let due = this
                .heads
                .iter()
                .position(|h| matches!(h, Some((seq, _)) if *seq == this.next_seq));
            if let Some(lane) = due {
                if let Some((_, bytes)) = this.heads[lane].take() {
                    this.current = bytes;
                    this.next_seq += 1;
                }
                continue;
            }
            let mut received = false;
            let mut waiting = false;
            for lane in 0..this.lanes.len() {
                if this.heads[lane].is_some() || this.ended[lane] {
                    continue;
                }
                match this.lanes[lane].poll_recv(cx) {
                    Poll::Ready(Some(Ok((seq, bytes)))) => {
                        let twice = this.heads.iter().flatten().any(|(other, _)| *other == seq);
                        if seq < this.next_seq || twice {
                            return Poll::Ready(Err(bad_segment(format!(
                                "data connection {lane} sent segment {seq} again"
                            ))));
                        }
                        this.heads[lane] = Some((seq, bytes));
                        received = true;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                    Poll::Ready(None) => this.ended[lane] = true,
                    Poll::Pending => waiting = true,
                }
            }
            if received {
                continue;
            }
            if waiting {
                return Poll::Pending;
            }
            // No lane can bring the next segment any more.
            return Poll::Ready(match this.heads.iter().flatten().map(|(s, _)| *s).min() {
                None => Ok(()),
                Some(later) => Err(bad_segment(format!(
                    "segment {} never arrived (the next on any data connection is {later})",
                    this.next_seq
                ))),
            });
        }
    }
}

/// A fresh secret for one session's data connections to name it by.
pub fn random_token() -> Result<[u8; 32], crate::failure::Failure> {
    let mut token = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut token)
        .map_err(|_| {
            crate::failure::Failure::permanent("the system's random number generator failed")
        })?;
    Ok(token)
}

/// Segments that break this module's rules: the sender's fault, unlike a
/// connection that merely failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadSegment(String);

fn bad_segment(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, BadSegment(message))
}

/// Reads one lane's segments into `segments` until the sender closes it
/// cleanly (at a segment boundary) or something fails, which is passed on.
async fn read_lane(
    mut lane: BoxRead,
    segments: mpsc::Sender<io::Result<(u64, Bytes)>>,
    context: String,
) {
    let mut last: Option<u64> = None;
    loop {
        let segment = match read_segment(&mut lane, &mut last).await {
            Ok(Some(segment)) => Ok(segment),
            Ok(None) => return,
            Err(e) if e.get_ref().is_some_and(|inner| inner.is::<BadSegment>()) => {
                Err(bad_segment(format!("{context}: {e}")))
            }
            Err(e) => Err(io::Error::new(e.kind(), format!("{context}: {e}"))),
        };
        let failed = segment.is_err();
        if segments.send(segment).await.is_err() || failed {
            return;
        }
    }
}

/// The lane's next non-empty segment; `None` at a clean end.
async fn read_segment(
    lane: &mut BoxRead,
    last: &mut Option<u64>,
) -> io::Result<Option<(u64, Bytes)>> {
    loop {
        let mut header = [0u8; HEADER];
        let first = lane.read(&mut header).await?;
        if first == 0 {
            return Ok(None);
        }
        lane.read_exact(&mut header[first..]).await?;
        let seq = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(header[8..].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            continue;
        }
        if len > MAX_SEGMENT {
            return Err(bad_segment(format!(
                "segment of {len} bytes exceeds the {MAX_SEGMENT}-byte maximum"
            )));
        }
        if last.is_some_and(|before| seq <= before) {
            return Err(bad_segment(format!(
                "segment {seq} after segment {}: out of order",
                last.unwrap_or_default()
            )));
        }
        *last = Some(seq);
        let mut bytes = vec![0u8; len];
        lane.read_exact(&mut bytes).await?;
        return Ok(Some((seq, Bytes::from(bytes))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Runtime::new().expect("a tokio runtime")
    }

    /// `lanes` pipes of `pipe` bytes each: their write ends and read ends.
    fn pipes(lanes: usize, pipe: usize) -> (Vec<BoxWrite>, Vec<BoxRead>) {
        (0..lanes)
            .map(|_| {
                let (a, b) = tokio::io::duplex(pipe);
                (Box::new(a) as BoxWrite, Box::new(b) as BoxRead)
            })
            .unzip()
    }

    async fn read_all(mut merged: Merged) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        merged.read_to_end(&mut got).await?;
        Ok(got)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the lane count, segment sizes and pipe sizes (small
        /// pipes make lanes stall and overtake each other), the receiver
        /// reads exactly the bytes put in, in order.
        #[test]
        fn any_segments_over_any_lanes_arrive_whole_and_in_order(
            lanes in 1usize..=8,
            pipe in prop_oneof![Just(64usize), Just(4096), Just(1 << 20)],
            sizes in proptest::collection::vec(1usize..200_000, 0..40),
            seed in any::<u64>(),
        ) {
            let mut next = seed;
            let segments: Vec<Bytes> = sizes
                .iter()
                .map(|&len| {
                    Bytes::from((0..len).map(|_| {
                        next = next.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        (next >> 56) as u8
                    }).collect::<Vec<u8>>())
                })
                .collect();
            let expected: Vec<u8> = segments.iter().flatten().copied().collect();
            let got = runtime().block_on(async {
                let (writes, reads) = pipes(lanes, pipe);
                let merged = tokio::spawn(read_all(Merged::new(reads, "test")));
                let mut stripes = Stripes::new(writes, Duration::from_secs(60));
                for segment in segments {
                    stripes.put(segment).await.unwrap();
                }
                stripes.finish().await.unwrap();
                merged.await.unwrap()
            });
            prop_assert_eq!(got.unwrap(), expected);
        }
    }

    /// Feeds raw lane bytes to a receiver and returns what it made of them.
    fn received(lanes: Vec<Vec<u8>>) -> io::Result<Vec<u8>> {
        runtime().block_on(async {
            let (mut writes, reads) = pipes(lanes.len(), 1 << 20);
            for (write, bytes) in writes.iter_mut().zip(&lanes) {
                write.write_all(bytes).await.unwrap();
            }
            drop(writes);
            read_all(Merged::new(reads, "sender")).await
        })
    }

    fn segment(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut bytes = seq.to_be_bytes().to_vec();
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn keepalives_are_skipped_and_lanes_may_end_early() {
        let lane0 = [segment(0, b"ab"), segment(7, b""), segment(2, b"e")].concat();
        let lane1 = segment(1, b"cd");
        assert_eq!(received(vec![lane0, lane1, Vec::new()]).unwrap(), b"abcde");
    }

    #[test]
    fn broken_lanes_fail_the_stream_naming_what_and_where() {
        let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
            (
                vec![[segment(0, b"a"), segment(2, b"c")].concat(), Vec::new()],
                "segment 1 never arrived (the next on any data connection is 2)",
            ),
            (
                vec![segment(0, b"a"), segment(0, b"b")],
                "data connection 1 sent segment 0 again",
            ),
            (
                vec![[segment(1, b"b"), segment(0, b"a")].concat()],
                "segment 0 never arrived (the next on any data connection is 1)",
            ),
            (
                vec![segment(0, b"a"), {
                    let mut huge = 1u64.to_be_bytes().to_vec();
                    huge.extend_from_slice(&u32::MAX.to_be_bytes());
                    huge
                }],
                "sender, data connection 1: segment of 4294967295 bytes exceeds",
            ),
            (
                vec![segment(0, b"abc")[..14].to_vec()],
                "sender, data connection 0: ",
            ),
            (vec![segment(0, b"abc")[..5].to_vec()], "data connection 0"),
        ];
        for (lanes, expected) in cases {
            let error = received(lanes.clone()).expect_err(expected);
            assert!(
                error.to_string().contains(expected),
                "{lanes:?}: {error} does not say {expected:?}"
            );
        }
    }

    #[test]
    fn a_lane_that_fails_fails_the_sender() {
        runtime().block_on(async {
            let (writes, reads) = pipes(2, 64);
            drop(reads);
            let mut stripes = Stripes::new(writes, Duration::from_secs(60));
            let mut failed = None;
            for _ in 0..10 {
                if let Err(e) = stripes.put(Bytes::from(vec![1u8; 1000])).await {
                    failed = Some(e);
                    break;
                }
            }
            let error = failed.expect("writes into closed lanes failed");
            assert!(error.to_string().contains("data connection"), "{error}");
        });
    }
}
