//! The API server's TLS listener (on one or more TCP listeners: loopback
//! for the host's clients, the cluster network's gateway for its pods):
//! TCP connections are handshaken on tasks
//! of their own (a client that connects and stalls holds up nobody), and
//! each connection carries the user its verified client certificate names
//! to the request handlers (`axum::extract::ConnectInfo<Peer>`).

use std::sync::Arc;
use std::time::Duration;

use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::super::authz::UserInfo;
use super::pki;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The user of the client certificate the peer presented, verified
    /// against the cluster's CA; `None` without one.
    pub certificate_user: Option<UserInfo>,
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Accepts TLS connections on a TCP listener.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
}

impl TlsListener {
    /// Starts accepting on each of `tcp` with `config`. The accepting
    /// tasks end when the listener is dropped.
    pub fn new(tcp: Vec<TcpListener>, config: Arc<rustls::ServerConfig>) -> Self {
        let acceptor = TlsAcceptor::from(config);
        let (sender, handshaken) = mpsc::channel(64);
        for tcp in tcp {
            tokio::spawn(accept(tcp, acceptor.clone(), sender.clone()));
        }
        Self { handshaken }
    }
}

/// Accepts on `tcp` until `sender`'s listener is gone, handing on each
/// connection once its handshake is done.
async fn accept(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
) {
    loop {
        let (stream, address) = tokio::select! {
            () = sender.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!("api server: accepting: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, sender) = (acceptor.clone(), sender.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!("api server: TLS handshake with {address}: {error}");
                    return;
                }
                Err(_) => return,
            };
            let certificate_user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| pki::certificate_user(leaf));
            let peer = Peer { certificate_user };
            let _ = sender.send((stream, peer)).await;
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // the accepting task only ends once this listener is gone
            None => std::future::pending().await,
        }
    }

    /// Only the peer type matters to the server; it has no certificate.
    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            certificate_user: None,
        })
    }
}
