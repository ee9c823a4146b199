//! Connections: TCP with TLS on top, a byte counter underneath (the wire
//! bytes reported in the summary are what really crossed the network), and
//! the timeouts that keep a silent peer from holding a connection.

use crate::failure::Failure;
use crate::progress::Counters;
use crate::proxy::Proxy;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A stream that adds every byte read or written to `wire_bytes`.
pub struct Counted<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, counters: Arc<Counters>) -> Self {
        Counted { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        Counters::add(
            &self.counters.wire_bytes,
            (buf.filled().len() - before) as u64,
        );
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            Counters::add(&self.counters.wire_bytes, n as u64);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub type ClientStream = tokio_rustls::client::TlsStream<Counted<TcpStream>>;

/// Connects to a receiver at `addr` and completes the TLS handshake,
/// presenting `server_name` as SNI (a passthrough route picks the backend
/// by it) and verifying the receiver's certificate for that name.
pub async fn connect(
    addr: &str,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    counters: Arc<Counters>,
    handshake_timeout: Duration,
) -> Result<ClientStream, Failure> {
    connect_through(None, addr, server_name, tls, counters, handshake_timeout).await
}

/// [`connect`], through a tunnel `proxy` opens to `addr` when one is given
/// (the proxy exchange counts against the handshake timeout).
pub async fn connect_through(
    proxy: Option<&Proxy>,
    addr: &str,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    counters: Arc<Counters>,
    handshake_timeout: Duration,
) -> Result<ClientStream, Failure> {
    let name =
        crate::tls::server_name(server_name).map_err(|e| Failure::permanent(e.to_string()))?;
    let dial = async {
        match proxy {
            Some(proxy) => proxy.tunnel(addr).await,
            None => TcpStream::connect(addr)
                .await
                .map_err(|e| Failure::retryable(format!("connecting to {addr}: {e}"))),
        }
    };
    let via = proxy
        .map(|p| format!(" through proxy {p}"))
        .unwrap_or_default();
    let tcp = tokio::time::timeout(handshake_timeout, dial)
        .await
        .map_err(|_| Failure::retryable(format!("connecting to {addr}{via}: timed out")))??;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(tls);
    tokio::time::timeout(
        handshake_timeout,
        connector.connect(name, Counted::new(tcp, counters)),
    )
    .await
    .map_err(|_| Failure::retryable(format!("TLS handshake with {addr}{via}: timed out")))?
    .map_err(|e| tls_failure(&format!("TLS handshake with {addr}{via}"), e))
}

/// TLS-level refusals (bad certificate, unknown CA, wrong protocol) will not
/// go away by retrying; transport errors may.
pub fn tls_failure(context: &str, e: io::Error) -> Failure {
    let tls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(tls) => Failure::permanent(format!("{context}: {tls}")),
        None => Failure::retryable(format!("{context}: {e}")),
    }
}
