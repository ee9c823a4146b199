//! `mover receive`: accepts senders, authenticates them, and runs one
//! receive session per connection.

use crate::failure::Failure;
use crate::receive::volumes::Volumes;
use crate::receive::{self, ReceiveConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

pub struct Server {
    pub tls: Arc<rustls::ServerConfig>,
    pub volumes: Volumes,
    /// Return once every volume has been synced once.
    pub exit_when_done: bool,
    /// A connection must finish its TLS handshake within this time.
    pub handshake_timeout: Duration,
    /// Connections served at once; further ones are closed at once, so a
    /// flood cannot exhaust memory or file descriptors.
    pub max_connections: usize,
    pub session: ReceiveConfig,
}

/// Serves until every volume is synced (with `exit_when_done`) or forever.
pub async fn serve(listener: TcpListener, server: Arc<Server>) -> Result<(), Failure> {
    let done = Arc::new(Notify::new());
    let slots = Arc::new(Semaphore::new(server.max_connections));
    let acceptor = tokio_rustls::TlsAcceptor::from(server.tls.clone());
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = done.notified() => return Ok(()),
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "{addr}: refused, already serving {} connections",
                server.max_connections
            );
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (server, acceptor, done) = (server.clone(), acceptor.clone(), done.clone());
        tokio::spawn(async move {
            let peer = addr.to_string();
            match connection(tcp, &peer, &acceptor, &server).await {
                Ok(()) => {
                    if server.exit_when_done && server.volumes.all_synced() {
                        done.notify_one();
                    }
                }
                Err(failure) => tracing::warn!("{peer}: {failure}"),
            }
            drop(slot);
        });
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: &str,
    acceptor: &tokio_rustls::TlsAcceptor,
    server: &Server,
) -> Result<(), Failure> {
    let tls = tokio::time::timeout(server.handshake_timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| {
            Failure::retryable(format!(
                "no TLS handshake within {}s",
                server.handshake_timeout.as_secs()
            ))
        })?
        .map_err(|e| crate::net::tls_failure("TLS handshake", e))?;
    let allowed =
        crate::tls::peer_volumes(tls.get_ref().1).map_err(|e| Failure::permanent(e.to_string()))?;
    receive::session(tls, peer, &allowed, &server.volumes, &server.session).await?;
    Ok(())
}
