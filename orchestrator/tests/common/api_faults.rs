//! A proxy in front of an emulated API server that misbehaves the way a
//! real one does under load or while restarting behind a load balancer:
//! it answers a chosen request 429/5xx (with `Retry-After`), resets the
//! connection before or after passing the request on (the answer is
//! lost), or stops listening for a while (connections refused). It works
//! on TCP connections and HTTP/1.1 heads, so the client under test meets
//! real resets and refusals, and it counts requests by method and path.
//!
//! TLS on both legs, as in front of a real API server: clients meet the
//! proxy's own certificate for 127.0.0.1 (its CA is [`ApiFaults::ca_pem`];
//! [`ApiFaults::reroute`] points a kubeconfig at the proxy), and the proxy
//! meets the API server as the cluster's administrator, with a client
//! certificate of the cluster's CA, which it trusts.
//!
//! Every request it passes on is sent with `Connection: close`, so each
//! request comes on a connection of its own and meets its own fault.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use kube_emulator::Cluster;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Pass it on.
    Forward,
    /// Answer with this status (a Kubernetes `Status` body) and
    /// `Retry-After` seconds, not passing it on.
    Status(u16, Option<u64>),
    /// Reset the connection without passing the request on.
    Reset,
    /// Pass the request on, then reset the connection instead of
    /// answering: the server did it, the client never hears.
    LoseAnswer,
}

/// Chooses a fault from the method, the path and how many times this
/// method and path were seen (1 for the first).
pub type Rule = Box<dyn Fn(&str, &str, usize) -> Fault + Send + Sync>;

struct Inner {
    upstream: SocketAddr,
    /// TLS to the API server, as its administrator.
    connector: TlsConnector,
    /// TLS from clients, with the proxy's certificate.
    acceptor: TlsAcceptor,
    rule: Rule,
    counts: super::RequestCounts,
}

pub struct ApiFaults {
    /// `https://127.0.0.1:PORT` of the proxy.
    pub url: String,
    /// The CA of the proxy's serving certificate, PEM.
    pub ca_pem: String,
    /// The API server's URL and CA, which [`ApiFaults::reroute`] replaces.
    upstream_url: String,
    upstream_ca_pem: String,
    addr: SocketAddr,
    inner: Arc<Inner>,
    /// The task accepting connections, while listening.
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ApiFaults {
    /// Starts a proxy in front of `cluster`'s API server.
    pub async fn start(cluster: &Cluster, rule: Rule) -> Arc<ApiFaults> {
        let upstream = cluster
            .api_url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .expect("an https://IP:PORT API server URL");
        let pki = super::pki::Pki::new();
        let inner = Arc::new(Inner {
            upstream,
            connector: connector(cluster),
            acceptor: acceptor(&pki.leaf(&["127.0.0.1"])),
            rule,
            counts: super::RequestCounts::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("its address");
        let accept = tokio::spawn(accept(listener, inner.clone()));
        Arc::new(ApiFaults {
            url: format!("https://{addr}"),
            ca_pem: pki.ca_pem,
            upstream_url: cluster.api_url.clone(),
            upstream_ca_pem: cluster.ca_pem().to_string(),
            addr,
            inner,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// `kubeconfig` (as the emulator writes it) with the cluster's
    /// `server` and `certificate-authority-data` those of this proxy.
    pub fn reroute(&self, kubeconfig: &str) -> String {
        let base64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
        kubeconfig
            .replace(&self.upstream_url, &self.url)
            .replace(&base64(&self.upstream_ca_pem), &base64(&self.ca_pem))
    }

    /// How many times `method path` was asked (requests reset before they
    /// were passed on count too; refused connections do not).
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.inner.counts.count(method, path)
    }

    /// Stops listening (once this returns, connections are refused) and
    /// listens again on the same address after `length`.
    pub async fn outage(self: &Arc<Self>, length: Duration) {
        let listening = self.accept.lock().unwrap().take();
        if let Some(task) = listening {
            task.abort();
            let _ = task.await;
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            let listener = TcpListener::bind(this.addr).await.expect("listen again");
            let task = tokio::spawn(accept(listener, this.inner.clone()));
            *this.accept.lock().unwrap() = Some(task);
        });
    }
}

impl Drop for ApiFaults {
    fn drop(&mut self) {
        if let Some(task) = self.accept.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// TLS from clients with `serving` (HTTP/1.1 only, no client certificate
/// asked for).
fn acceptor(serving: &super::pki::Leaf) -> TlsAcceptor {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(serving.key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![serving.cert_der.clone().into()], key)
        .expect("the proxy's TLS configuration");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// TLS to `cluster`'s API server, trusting its CA, as its administrator.
fn connector(cluster: &Cluster) -> TlsConnector {
    let admin = cluster
        .certificate_for(
            kube_emulator::cluster::ADMIN,
            &[kube_emulator::api::MASTERS],
        )
        .expect("an administrator's certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cluster.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(admin.cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(admin.key.as_bytes()).unwrap(),
        )
        .expect("the upstream TLS configuration");
    TlsConnector::from(Arc::new(config))
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn accept(listener: TcpListener, inner: Arc<Inner>) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(serve(client, inner.clone()));
    }
}

/// One connection: the TLS handshake, then read the request head and
/// apply the rule.
async fn serve(client: TcpStream, inner: Arc<Inner>) {
    let Ok(mut client) = inner.acceptor.accept(client).await else {
        return;
    };
    let Some((head, rest)) = read_head(&mut client).await else {
        return;
    };
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let n = inner.counts.seen(&method, &path);
    let fault = (inner.rule)(&method, &path, n);
    match fault {
        Fault::Status(code, retry_after) => {
            let body = format!(
                r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"injected {code}","reason":"Injected","code":{code}}}"#
            );
            let retry_after = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            let answer = format!(
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\n{retry_after}\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if client.write_all(answer.as_bytes()).await.is_ok() {
                let _ = client.shutdown().await;
            }
        }
        Fault::Reset => reset(client),
        Fault::Forward | Fault::LoseAnswer => {
            let Ok(mut server) = pass_on(&inner, &close_after(&head), &rest).await else {
                return reset(client);
            };
            if fault == Fault::LoseAnswer {
                // Let the server finish the request, then drop its answer.
                let mut answer = Vec::new();
                let _ = server.read_to_end(&mut answer).await;
                return reset(client);
            }
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
    }
}

/// Connects to the API server and sends it `head` and `rest`.
async fn pass_on(
    inner: &Inner,
    head: &str,
    rest: &[u8],
) -> std::io::Result<client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(inner.upstream).await?;
    let name = ServerName::IpAddress(inner.upstream.ip().into());
    let mut server = inner.connector.connect(name, tcp).await?;
    server.write_all(head.as_bytes()).await?;
    server.write_all(rest).await?;
    server.flush().await?;
    Ok(server)
}

/// Closes the TCP connection under `stream` with a reset (zero linger)
/// rather than a FIN, with no TLS `close_notify` first.
fn reset(stream: server::TlsStream<TcpStream>) {
    let (tcp, _) = stream.into_inner();
    // Zero linger never blocks on drop, which is what the deprecation of
    // `set_linger` warns about.
    #[allow(deprecated)]
    let _ = tcp.set_linger(Some(Duration::ZERO));
    drop(tcp);
}

/// The request head (up to its blank line) and whatever of the body came
/// with it.
async fn read_head(client: &mut server::TlsStream<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `head` with `Connection: close` in place of any connection header.
fn close_after(head: &str) -> String {
    let mut out: String = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    out += "Connection: close\r\n\r\n";
    out
}
