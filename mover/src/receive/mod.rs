//! The receiving end of a sync: one session per sender connection, writing
//! one volume.
//!
//! The async side only moves frames; all filesystem work happens on two
//! blocking threads: the applier ([`apply`]), which writes in message order,
//! and the hasher ([`hasher`]), which reads old copies for deltas so that
//! hashing a large file never stalls the stream.

mod apply;
mod hasher;
mod incoming;
mod tree;
pub mod volumes;

use crate::dest::volume::Volume;
use crate::failure::Failure;
use crate::wire::io as wio;
use crate::wire::message::{ReceiverStats, ToReceiver, ToSender};
use crate::wire::PROTOCOL_VERSION;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use volumes::Volumes;

#[derive(Debug, Clone)]
pub struct ReceiveConfig {
    /// Fail a session whose sender says nothing for this long.
    pub idle_timeout: Duration,
    /// Send a keepalive when nothing else went out for this long.
    pub keepalive: Duration,
}

/// Serves one sender over an authenticated stream. `allowed` lists the
/// volumes the sender's certificate names.
pub async fn session<S>(
    stream: S,
    peer: &str,
    allowed: &[String],
    volumes: &Volumes,
    config: &ReceiveConfig,
) -> Result<(String, ReceiverStats), Failure>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let mut reader = wio::reader::<_, ToReceiver, ToSender>(read);
    let (out, out_rx) = mpsc::channel(crate::wire::frame::QUEUED_FRAMES);
    let writer = tokio::spawn(wio::write_all(write, out_rx, config.keepalive, || {
        ToSender::Keepalive
    }));
    let result = run(&mut reader, &out, peer, allowed, volumes, config).await;
    if let Err(failure) = &result {
        let _ = out
            .send(vec![ToSender::Error {
                message: failure.message.clone(),
                retryable: failure.retryable,
            }])
            .await;
    }
    drop(out);
    // Let the final message (Finished or Error) reach the sender.
    let _ = tokio::time::timeout(config.keepalive, writer).await;
    result
}

async fn run<R: AsyncRead + Unpin>(
    reader: &mut wio::Reader<R, ToReceiver, ToSender>,
    out: &mpsc::Sender<Vec<ToSender>>,
    peer: &str,
    allowed: &[String],
    volumes: &Volumes,
    config: &ReceiveConfig,
) -> Result<(String, ReceiverStats), Failure> {
    let (volume, options, reserved) = match wio::next(reader, config.idle_timeout, peer).await? {
        ToReceiver::Hello {
            protocol,
            volume,
            options,
            reserved,
        } if protocol == PROTOCOL_VERSION => (volume, options, reserved),
        ToReceiver::Hello { protocol, .. } => {
            return Err(Failure::permanent(format!(
                "{peer} speaks protocol {protocol}, this receiver {PROTOCOL_VERSION}"
            )))
        }
        other => {
            return Err(Failure::protocol(
                peer,
                format!("expected Hello, got {}", kind(&other)),
            ))
        }
    };
    let claim = volumes.claim(&volume, allowed)?;
    let opened =
        Volume::open(claim.name, claim.path).map_err(|e| Failure::permanent(e.to_string()))?;
    let volume_fs = Arc::new(opened);
    tracing::info!("{peer}: syncing volume {}", claim.name);
    out.send(vec![ToSender::Welcome {
        protocol: PROTOCOL_VERSION,
    }])
    .await
    .map_err(|_| Failure::retryable("connection closed"))?;

    let (hash_tx, hash_rx) = std::sync::mpsc::channel();
    let announced = hasher::Announced::default();
    let hasher = {
        let (volume, out, announced) = (volume_fs.clone(), out.clone(), announced.clone());
        tokio::task::spawn_blocking(move || hasher::run(volume, hash_rx, out, announced))
    };
    let (in_tx, in_rx) = mpsc::channel(crate::wire::frame::QUEUED_FRAMES);
    let cancel = incoming::Cancel::default();
    let applier = apply::Applier::new(
        volume_fs,
        options,
        reserved,
        peer.to_string(),
        out.clone(),
        hasher::Handle {
            jobs: hash_tx,
            announced,
        },
        cancel.clone(),
    );
    let mut applier = tokio::task::spawn_blocking(move || applier.run(in_rx));

    let mut in_tx = Some(in_tx);
    let result = loop {
        tokio::select! {
            done = &mut applier => break joined(done),
            msg = wio::next_batch(reader, config.idle_timeout, peer) => match (msg, &in_tx) {
                (Ok(msg), Some(tx)) => {
                    if tx.send(msg).await.is_err() {
                        break joined((&mut applier).await);
                    }
                }
                (Ok(_), None) => break Err(Failure::permanent("receiver stopped")),
                (Err(failure), _) => {
                    // Closing the channel makes the applier stop (removing
                    // any half-written file). If it had already finished,
                    // the sender merely hung up after `Finished`: success.
                    in_tx = None;
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                    break joined((&mut applier).await).map_err(|_| failure);
                }
            },
        }
    };
    drop(in_tx);
    let _ = hasher.await;
    let stats = result?;
    claim.synced();
    tracing::info!(
        "{peer}: volume {} synced: {} files written, {} deleted",
        claim.name,
        stats.files_written,
        stats.deleted
    );
    Ok((claim.name.to_string(), stats))
}

fn joined<T>(done: Result<Result<T, Failure>, tokio::task::JoinError>) -> Result<T, Failure> {
    done.unwrap_or_else(|e| Err(Failure::permanent(format!("receiver thread failed: {e}"))))
}

/// A message's name, for errors that must not echo a hostile payload.
fn kind(msg: &ToReceiver) -> &'static str {
    match msg {
        ToReceiver::Hello { .. } => "Hello",
        ToReceiver::Entry { .. } => "Entry",
        _ => "a data message",
    }
}
