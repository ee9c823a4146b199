//! Moving a client's bytes to a backend: the part of a connection that is
//! the same for Routes and for LoadBalancer/NodePort Services.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long a backend may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Spreads connections over a Service's backends, as kube-proxy does.
static NEXT_BACKEND: AtomicUsize = AtomicUsize::new(0);

/// Connects to one of `backends`, trying the others when one refuses.
pub(crate) async fn connect_any(backends: &[SocketAddr]) -> anyhow::Result<TcpStream> {
    anyhow::ensure!(!backends.is_empty(), "no ready endpoints");
    let start = NEXT_BACKEND.fetch_add(1, Ordering::Relaxed);
    let mut failures = Vec::new();
    for offset in 0..backends.len() {
        let backend = backends[(start + offset) % backends.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => failures.push(format!("{backend}: {error}")),
            Err(_) => failures.push(format!("{backend}: no answer within {CONNECT_TIMEOUT:?}")),
        }
    }
    anyhow::bail!(
        "no endpoint accepted the connection ({})",
        failures.join("; ")
    )
}

/// Sends `prefix` (bytes already read from the client) to the backend,
/// then copies both ways until both sides have finished; a side that
/// half-closes is half-closed on the other side too.
pub(crate) async fn pipe(
    mut client: TcpStream,
    mut backend: TcpStream,
    prefix: &[u8],
) -> anyhow::Result<()> {
    backend
        .write_all(prefix)
        .await
        .context("replaying the client's first bytes to the backend")?;
    tokio::io::copy_bidirectional(&mut client, &mut backend)
        .await
        .context("copying between client and backend")?;
    Ok(())
}

/// Accepts connections on `listener` for as long as the task runs,
/// handing each to `handle` on its own task. Errors of one connection are
/// logged with `what` and never stop the listener.
pub(crate) async fn accept_loop<F, Fut>(listener: tokio::net::TcpListener, what: String, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let connection = handle(stream);
                let what = what.clone();
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::info!("router: {what}: connection from {peer} closed: {error:#}");
                    }
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!("router: {what}: accepting: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
