//! Reading and writing framed messages on one half of a TLS stream, with the
//! idle timeout and keepalives both ends need.

use super::frame::{self, Codec, FrameError, Message, DATA_CHUNK};
use crate::failure::Failure;
use bytes::BytesMut;
use futures_util::StreamExt;
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
    match tokio::time::timeout(idle, reader.next()).await {
        Err(_) => Err(Failure::retryable(format!(
            "{peer} sent nothing for {}s (idle timeout)",
            idle.as_secs()
        ))),
        Ok(None) => Err(Failure::retryable(format!(
            "{peer} closed the connection before the sync finished"
        ))),
        // In TLS 1.3 the server judges the client certificate after the
        // client's handshake is done, so a refusal arrives on a read.
        Ok(Some(Err(FrameError::Io(e)))) => {
            Err(crate::net::tls_failure(&format!("connection to {peer}"), e))
        }
        Ok(Some(Err(e))) => Err(Failure::protocol(peer, e)),
        Ok(Some(Ok(msg))) => Ok(msg),
    }
}

/// Sends everything that arrives on `rx` until every sender is dropped,
/// batching what is queued into one flush and sending `keepalive()` when
/// nothing else went out for `interval`. File data goes from the caller's
/// buffer straight into TLS. Shuts the stream down cleanly at the end, so
/// the peer sees a TLS close_notify rather than a reset.
pub async fn write_all<W, Out>(
    mut stream: W,
    mut rx: mpsc::Receiver<Out>,
    interval: Duration,
    keepalive: fn() -> Out,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    Out: Message,
{
    let mut buf = BytesMut::with_capacity(2 * GATHER);
    loop {
        let mut msg = match tokio::time::timeout(interval, rx.recv()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            Err(_) => keepalive(),
        };
        loop {
            if let Some(data) = frame::encode(&msg, &mut buf)? {
                stream.write_all(&buf).await?;
                buf.clear();
                stream.write_all(data).await?;
            } else if buf.len() >= GATHER {
                stream.write_all(&buf).await?;
                buf.clear();
            }
            match rx.try_recv() {
                Ok(next) => msg = next,
                Err(_) => break,
            }
        }
        stream.write_all(&buf).await?;
        buf.clear();
        stream.flush().await?;
    }
    stream.shutdown().await?;
    Ok(())
}
