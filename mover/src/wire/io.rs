//! Reading and writing framed messages on one half of a TLS stream, with the
//! idle timeout and keepalives both ends need.

use super::frame::{Codec, FrameError, DATA_CHUNK};
use crate::failure::Failure;
use futures_util::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

pub type Reader<R, In, Out> = FramedRead<R, Codec<In, Out>>;
pub type Writer<W, In, Out> = FramedWrite<W, Codec<In, Out>>;

pub fn reader<R: AsyncRead, In, Out>(read: R) -> Reader<R, In, Out> {
    FramedRead::with_capacity(read, Codec::default(), 2 * DATA_CHUNK)
}

pub fn writer<W: AsyncWrite, In, Out>(write: W) -> Writer<W, In, Out> {
    let mut framed = FramedWrite::new(write, Codec::default());
    framed.set_backpressure_boundary(2 * DATA_CHUNK);
    framed
}

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
    In: DeserializeOwned,
{
    match tokio::time::timeout(idle, reader.next()).await {
        Err(_) => Err(Failure::retryable(format!(
            "{peer} sent nothing for {}s (idle timeout)",
            idle.as_secs()
        ))),
        Ok(None) => Err(Failure::retryable(format!(
            "{peer} closed the connection before the sync finished"
        ))),
        Ok(Some(Err(FrameError::Io(e)))) => Err(Failure::network(peer, e)),
        Ok(Some(Err(e))) => Err(Failure::protocol(peer, e)),
        Ok(Some(Ok(msg))) => Ok(msg),
    }
}

/// Sends everything that arrives on `rx` until every sender is dropped,
/// batching what is queued into one flush and sending `keepalive()` when
/// nothing else went out for `interval`. Shuts the stream down cleanly at
/// the end, so the peer sees a TLS close_notify rather than a reset.
pub async fn write_all<W, In, Out>(
    mut sink: Writer<W, In, Out>,
    mut rx: mpsc::Receiver<Out>,
    interval: Duration,
    keepalive: fn() -> Out,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    Out: Serialize,
{
    loop {
        let msg = match tokio::time::timeout(interval, rx.recv()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            Err(_) => keepalive(),
        };
        sink.feed(msg).await?;
        while let Ok(msg) = rx.try_recv() {
            sink.feed(msg).await?;
        }
        sink.flush().await?;
    }
    sink.close().await
}
