//! Reading and writing framed messages on one half of a TLS stream, with the
//! idle timeout and keepalives both ends need.

use super::frame::{self, Codec, FrameError, Message, DATA_CHUNK};
use super::stripes::Stripes;
use crate::failure::Failure;
use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

pub type Reader<R, In, Out> = FramedRead<R, Codec<In, Out>>;

pub fn reader<R: AsyncRead, In, Out>(read: R) -> Reader<R, In, Out> {
    FramedRead::with_capacity(read, Codec::default(), 2 * DATA_CHUNK)
}

/// Small frames are gathered up to this size before a write, so a burst of
/// entries becomes a few full TLS records rather than many tiny ones.
const GATHER: usize = 64 * 1024;

/// Most messages moved between two stages as one batch: enough that a
/// burst of small messages costs one wakeup instead of hundreds, few enough
/// that the first of them is not held back noticeably.
pub const BATCH: usize = 256;

/// The next message from `peer`, failing if none arrives within `idle`.
/// A clean end of stream is reported as retryable: the peer went away
/// before the session finished.
pub async fn next<R, In, Out>(
    reader: &mut Reader<R, In, Out>,
    idle: Duration,
    peer: &str,
) -> Result<In, Failure>
where
    R: AsyncRead + Unpin,
    In: Message,
{
    received(next_frame(reader, idle, peer).await?, peer)
}

/// The next frame from `peer` as the codec decoded it, for callers that
/// treat some decoding errors specially; fails only if nothing arrives
/// within `idle`.
pub async fn next_frame<R, In, Out>(
    reader: &mut Reader<R, In, Out>,
    idle: Duration,
    peer: &str,
) -> Result<Option<Result<In, FrameError>>, Failure>
where
    R: AsyncRead + Unpin,
    In: Message,
{
    tokio::time::timeout(idle, reader.next())
        .await
        .map_err(|_| {
            Failure::retryable(format!(
                "{peer} sent nothing for {}s (idle timeout)",
                idle.as_secs()
            ))
        })
}

/// Like [`next`], then every further message already decodable without
/// waiting (up to [`BATCH`]), so a burst crosses the next queue at once.
pub async fn next_batch<R, In, Out>(
    reader: &mut Reader<R, In, Out>,
    idle: Duration,
    peer: &str,
) -> Result<Vec<In>, Failure>
where
    R: AsyncRead + Unpin,
    In: Message,
{
    let first = next(reader, idle, peer).await?;
    let mut bytes = first.payload_len();
    let mut batch = vec![first];
    // Bounded in bytes of every kind of payload as well as in count, so a
    // batch never holds more than about one data chunk plus one frame,
    // whatever a peer packs into its messages.
    while batch.len() < BATCH && bytes < DATA_CHUNK {
        match reader.next().now_or_never() {
            Some(Some(item)) => {
                let msg = received(Some(item), peer)?;
                bytes += msg.payload_len();
                batch.push(msg);
            }
            // The end of the stream right behind the burst: hand the burst
            // over (it may hold the final answer); the next call reports
            // the end.
            Some(None) | None => break,
        }
    }
    Ok(batch)
}

/// The message in a decoded frame, or the session's failure: the end of
/// the stream, a transport error or a frame that broke the protocol.
pub fn received<In>(item: Option<Result<In, FrameError>>, peer: &str) -> Result<In, Failure> {
    match item {
        None => Err(Failure::retryable(format!(
            "{peer} closed the connection before the sync finished"
        ))),
        // In TLS 1.3 the server judges the client certificate after the
        // client's handshake is done, so a refusal arrives on a read.
        Some(Err(FrameError::Io(e))) => {
            Err(crate::net::tls_failure(&format!("connection to {peer}"), e))
        }
        Some(Err(e)) => Err(Failure::protocol(peer, e)),
        Some(Ok(msg)) => Ok(msg),
    }
}

/// Where a writer's bytes go: the session's one connection, or with
/// `--streams` segments striped over its data connections ([`Stripes`]).
pub enum Output<W> {
    Plain(W),
    /// The control connection carries nothing more from this side once the
    /// data connections have joined; it is only closed at the end.
    Striped {
        control: W,
        stripes: Stripes,
    },
}

impl<W: AsyncWrite + Unpin> Output<W> {
    /// Sends what `buf` gathered and leaves it empty.
    async fn put_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        match self {
            Output::Plain(stream) => {
                stream.write_all(buf).await?;
                buf.clear();
                Ok(())
            }
            Output::Striped { stripes, .. } => stripes.put(buf.split().freeze()).await,
        }
    }

    async fn put_data(&mut self, data: &bytes::Bytes) -> std::io::Result<()> {
        match self {
            Output::Plain(stream) => stream.write_all(data).await,
            Output::Striped { stripes, .. } => stripes.put(data.clone()).await,
        }
    }

    /// Pushes out what is buffered; a lane flushes by itself whenever its
    /// queue runs empty.
    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Plain(stream) => stream.flush().await,
            Output::Striped { .. } => Ok(()),
        }
    }

    async fn shutdown(self) -> std::io::Result<()> {
        match self {
            Output::Plain(mut stream) => stream.shutdown().await,
            Output::Striped {
                mut control,
                stripes,
            } => {
                stripes.finish().await?;
                // Nothing went on it since the lanes joined.
                let _ = control.shutdown().await;
                Ok(())
            }
        }
    }
}

/// Writes one message and flushes it: for the opening exchange, before a
/// session's writer task exists (or on a connection that never gets one).
pub async fn write_one<W, Out>(stream: &mut W, msg: &Out) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    Out: Message,
{
    let mut buf = BytesMut::new();
    if let Some(data) = frame::encode(msg, &mut buf)? {
        buf.extend_from_slice(data);
    }
    stream.write_all(&buf).await?;
    stream.flush().await?;
    Ok(())
}

/// Sends everything that arrives on `rx` until every sender is dropped,
/// gathering what is queued into one flush and sending `keepalive()` when
/// nothing else went out for `interval`. File data goes from the caller's
/// buffer straight into TLS. Shuts the stream down cleanly at the end, so
/// the peer sees a TLS close_notify rather than a reset.
pub async fn write_all<W, Out>(
    mut output: Output<W>,
    mut rx: mpsc::Receiver<Vec<Out>>,
    interval: Duration,
    keepalive: fn() -> Out,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    Out: Message,
{
    let mut buf = BytesMut::with_capacity(2 * GATHER);
    loop {
        let mut batch = match tokio::time::timeout(interval, rx.recv()).await {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(_) => vec![keepalive()],
        };
        loop {
            for msg in &batch {
                if let Some(data) = frame::encode(msg, &mut buf)? {
                    // Large chunks go straight to TLS; small files' data is
                    // gathered with the messages around it.
                    if data.len() >= GATHER {
                        output.put_buf(&mut buf).await?;
                        output.put_data(data).await?;
                    } else {
                        buf.extend_from_slice(data);
                    }
                }
                if buf.len() >= GATHER {
                    output.put_buf(&mut buf).await?;
                }
            }
            match rx.try_recv() {
                Ok(next) => batch = next,
                Err(_) => break,
            }
        }
        output.put_buf(&mut buf).await?;
        output.flush().await?;
    }
    output.shutdown().await?;
    Ok(())
}

/// The writer is gone: the session is over.
#[derive(Debug)]
pub struct Closed;

/// Oldest a queued message may get before its batch is handed over anyway,
/// so a slow producer (a walk of a slow filesystem) still streams.
const MAX_BATCH_AGE: std::time::Duration = std::time::Duration::from_millis(10);

/// Gathers the messages of a blocking producer (walker, data thread,
/// applier, hasher) and hands them to the writer in batches: full ones, any
/// holding a data chunk's worth of payload, ones older than a few milliseconds, and whatever
/// is pending at [`Outbox::flush`]. A producer must flush before it blocks
/// on anything else, or its peer may wait for messages still sitting here.
pub struct Outbox<M> {
    tx: mpsc::Sender<Vec<M>>,
    pending: Vec<M>,
    bytes: usize,
    since: Option<std::time::Instant>,
    /// Total time spent waiting for the writer to take a batch: how much
    /// faster this producer is than the connection.
    waited: std::time::Duration,
}

impl<M: Message> Outbox<M> {
    pub fn new(tx: mpsc::Sender<Vec<M>>) -> Self {
        Outbox {
            tx,
            pending: Vec::new(),
            bytes: 0,
            since: None,
            waited: std::time::Duration::ZERO,
        }
    }

    pub fn waited(&self) -> std::time::Duration {
        self.waited
    }

    pub fn push(&mut self, msg: M) -> Result<(), Closed> {
        self.bytes += msg.payload_len();
        self.pending.push(msg);
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        if self.pending.len() >= BATCH
            || self.bytes >= DATA_CHUNK
            || since.elapsed() >= MAX_BATCH_AGE
        {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), Closed> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        self.since = None;
        let batch = std::mem::take(&mut self.pending);
        let batch = match self.tx.try_send(batch) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Closed),
            Err(mpsc::error::TrySendError::Full(batch)) => batch,
        };
        let waiting = std::time::Instant::now();
        let sent = self.tx.blocking_send(batch).map_err(|_| Closed);
        self.waited += waiting.elapsed();
        sent
    }
}
