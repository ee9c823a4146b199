//! Connections: TCP with TLS on top, a byte counter underneath (the wire
//! bytes reported in the summary are what really crossed the network), and
//! the timeouts that keep a silent peer from holding a connection.

use crate::failure::Failure;
use crate::progress::Counters;
use crate::proxy::Proxy;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A stream that adds every byte read or written to `wire_bytes`, and
/// paces its writes when given a bandwidth limit.
pub struct Counted<S> {
    inner: S,
    counters: Arc<Counters>,
    pace: Option<Pace>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, counters: Arc<Counters>) -> Self {
        Counted {
            inner,
            counters,
            pace: None,
        }
    }

    /// Writes at most `bytes_per_sec` on average (`--bwlimit`).
    pub fn paced(inner: S, counters: Arc<Counters>, bytes_per_sec: Option<u64>) -> Self {
        Counted {
            pace: bytes_per_sec.map(Pace::new),
            ..Counted::new(inner, counters)
        }
    }
}

/// Keeps the bytes written since the connection began under `rate` per
/// second: a write waits until the bytes before it were due, and is cut to
/// a twentieth of a second's worth, so the link sees a steady stream rather
/// than bursts (as rsync's `--bwlimit` does, on the encrypted bytes here).
struct Pace {
    rate: u64,
    start: tokio::time::Instant,
    written: u64,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Pace {
    fn new(rate: u64) -> Self {
        Pace {
            rate: rate.max(1),
            start: tokio::time::Instant::now(),
            written: 0,
            wait: None,
        }
    }

    /// Ready with the most bytes that may be written now.
    fn poll_allowance(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        loop {
            if let Some(wait) = self.wait.as_mut() {
                std::task::ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            let due = self.start + Duration::from_secs_f64(self.written as f64 / self.rate as f64);
            if due <= tokio::time::Instant::now() {
                return Poll::Ready((self.rate / 20).max(1) as usize);
            }
            self.wait = Some(Box::pin(tokio::time::sleep_until(due)));
        }
    }
}

/// Parses a bandwidth such as `50M`: bytes per second, with an optional
/// `K`, `M` or `G` suffix (powers of 1024, as rsync's `--bwlimit`).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected bytes per second such as 50M"))?;
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (bytes per second, with K, M or G)"
            ))
        }
    };
    match value.checked_shl(shift).filter(|v| *v >> shift == value) {
        Some(0) => Err(format!("{text:?}: a bandwidth limit must be above zero")),
        Some(rate) => Ok(rate),
        None => Err(format!("{text:?}: too large")),
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
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let buf = match this.pace.as_mut() {
            Some(pace) => {
                let allowed = std::task::ready!(pace.poll_allowance(cx));
                &buf[..buf.len().min(allowed)]
            }
            None => buf,
        };
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            Counters::add(&this.counters.wire_bytes, n as u64);
            if let Some(pace) = this.pace.as_mut() {
                pace.written += n as u64;
            }
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

/// A connection of any kind, boxed: a data connection of a session.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

type Dialing = Pin<Box<dyn std::future::Future<Output = Result<Box<dyn Duplex>, Failure>> + Send>>;

/// Opens one more connection to the receiver a session's first went to,
/// the same way (route, proxy, certificate): its data connections for
/// `--streams`.
#[derive(Clone)]
pub struct Dial(Arc<dyn Fn() -> Dialing + Send + Sync>);

impl Dial {
    pub fn new<F, Fut, S>(dial: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<S, Failure>> + Send + 'static,
        S: Duplex + 'static,
    {
        Dial(Arc::new(move || {
            let opening = dial();
            Box::pin(async move { Ok(Box::new(opening.await?) as Box<dyn Duplex>) })
        }))
    }

    pub async fn open(&self) -> Result<Box<dyn Duplex>, Failure> {
        (self.0)().await
    }
}

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
    let route = Route {
        proxy: None,
        addr,
        server_name,
        bwlimit: None,
    };
    connect_through(&route, tls, counters, handshake_timeout).await
}

/// Where and how a sender reaches its receiver.
pub struct Route<'a> {
    /// A proxy whose tunnel carries the connection, if any.
    pub proxy: Option<&'a Proxy>,
    /// The receiver, HOST:PORT.
    pub addr: &'a str,
    /// The receiver's TLS server name.
    pub server_name: &'a str,
    /// The most bytes per second to write, if limited.
    pub bwlimit: Option<u64>,
}

/// [`connect`], through a tunnel the route's proxy opens to its address
/// when one is given (the proxy exchange counts against the handshake
/// timeout), writing no faster than its bandwidth limit.
pub async fn connect_through(
    route: &Route<'_>,
    tls: Arc<rustls::ClientConfig>,
    counters: Arc<Counters>,
    handshake_timeout: Duration,
) -> Result<ClientStream, Failure> {
    let Route {
        proxy,
        addr,
        server_name,
        bwlimit,
    } = *route;
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
        connector.connect(name, Counted::paced(tcp, counters, bwlimit)),
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

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_take_binary_suffixes_and_refuse_nonsense() {
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("512K"), Ok(512 << 10));
        assert_eq!(parse_rate("50m"), Ok(50 << 20));
        assert_eq!(parse_rate("2G"), Ok(2 << 30));
        for bad in ["", "0", "fast", "5X", "-1M", "99999999999999G"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
