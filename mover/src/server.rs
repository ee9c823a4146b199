//! `mover receive`: accepts senders, authenticates them, and runs one
//! receive session per connection.
//!
//! Connections count against two separate limits: ones still in their TLS
//! handshake, and authenticated sessions. Anyone who can reach the port can
//! open the first kind, so they must never take the second kind's slots;
//! and when the handshake slots are full, the oldest handshake is dropped
//! to make room, so idle connections cannot lock senders out: an honest
//! handshake takes a round trip or two, a stalled one the whole handshake
//! timeout.

use crate::failure::Failure;
use crate::receive::volumes::Volumes;
use crate::receive::{self, ReceiveConfig};
use crate::wire::io as wio;
use crate::wire::message::ToSender;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
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
    /// Authenticated sessions served at once, and separately TLS handshakes
    /// in progress; so a flood cannot exhaust memory or file descriptors.
    pub max_connections: usize,
    pub session: ReceiveConfig,
}

/// Serves until every volume is synced (with `exit_when_done`) or forever.
///
/// On the way out it stops accepting, then waits for every connection
/// already accepted: the session that synced the last volume can finish
/// before another session has told its sender `Finished`, and exiting then
/// would cut that sender off mid-goodbye (it would see the connection reset
/// and retry into a closed port). Each connection is bounded by its own
/// handshake and idle timeouts, so the wait is too.
pub async fn serve(listener: TcpListener, server: Arc<Server>) -> Result<(), Failure> {
    let done = Arc::new(Notify::new());
    let connections = tokio_util::task::TaskTracker::new();
    let sessions = Arc::new(Semaphore::new(server.max_connections));
    let handshakes = Arc::new(Handshakes::new(server.max_connections));
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
            _ = done.notified() => break,
        };
        let _ = tcp.set_nodelay(true);
        let handshake = handshakes.start();
        let (server, acceptor, done) = (server.clone(), acceptor.clone(), done.clone());
        let sessions = sessions.clone();
        connections.spawn(async move {
            let peer = addr.to_string();
            match connection(tcp, &peer, &acceptor, &server, handshake, &sessions).await {
                Ok(()) => {
                    if server.exit_when_done && server.volumes.all_synced() {
                        done.notify_one();
                    }
                }
                Err(failure) => tracing::warn!("{peer}: {failure}"),
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: &str,
    acceptor: &tokio_rustls::TlsAcceptor,
    server: &Server,
    handshake: Handshake,
    sessions: &Semaphore,
) -> Result<(), Failure> {
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(server.handshake_timeout, acceptor.accept(tcp)) => accepted,
        () = handshake.evicted.notified() => {
            return Err(Failure::retryable(
                "TLS handshake dropped to make room for newer connections",
            ))
        }
    };
    drop(handshake);
    let tls = accepted
        .map_err(|_| {
            Failure::retryable(format!(
                "no TLS handshake within {}s",
                server.handshake_timeout.as_secs()
            ))
        })?
        .map_err(|e| crate::net::tls_failure("TLS handshake", e))?;
    let Ok(_slot) = sessions.try_acquire() else {
        let refusal = Failure::retryable(format!(
            "refused: the receiver already serves {} connections (its --max-connections; \
             each sender takes one, plus one per --streams data connection)",
            server.max_connections
        ));
        // Said to the peer too, so a sender knows why, not just that the
        // connection closed.
        let mut tls = tls;
        let error = ToSender::Error {
            message: refusal.message.clone(),
            retryable: true,
        };
        let _ =
            tokio::time::timeout(server.handshake_timeout, wio::write_one(&mut tls, &error)).await;
        return Err(refusal);
    };
    let allowed =
        crate::tls::peer_volumes(tls.get_ref().1).map_err(|e| Failure::permanent(e.to_string()))?;
    receive::session(tls, peer, &allowed, &server.volumes, &server.session).await?;
    Ok(())
}

/// The connections still in their TLS handshake, oldest first.
struct Handshakes {
    limit: usize,
    next_id: std::sync::atomic::AtomicU64,
    waiting: Mutex<VecDeque<(u64, Arc<Notify>)>>,
}

/// One connection's place among [`Handshakes`]; leaves it on drop.
struct Handshake {
    id: u64,
    /// Notified when a newer connection needs the place.
    evicted: Arc<Notify>,
    all: Arc<Handshakes>,
}

impl Handshakes {
    fn new(limit: usize) -> Self {
        Handshakes {
            limit: limit.max(1),
            next_id: Default::default(),
            waiting: Mutex::new(VecDeque::new()),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Notify>)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection, evicting the oldest if all are taken.
    fn start(self: &Arc<Self>) -> Handshake {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evicted = Arc::new(Notify::new());
        let mut waiting = self.waiting();
        if waiting.len() >= self.limit {
            if let Some((_, oldest)) = waiting.pop_front() {
                // Stored if its task is not waiting yet: it still sees it.
                oldest.notify_one();
            }
        }
        waiting.push_back((id, evicted.clone()));
        Handshake {
            id,
            evicted,
            all: self.clone(),
        }
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.all.waiting().retain(|(id, _)| *id != self.id);
    }
}
