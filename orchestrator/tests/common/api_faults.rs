//! A proxy in front of an emulated API server that misbehaves the way a
//! real one does under load or while restarting behind a load balancer:
//! it answers a chosen request 429/5xx (with `Retry-After`), resets the
//! connection before or after passing the request on (the answer is
//! lost), or stops listening for a while (connections refused). It works
//! on raw TCP and HTTP/1.1 heads, so the client under test meets real
//! resets and refusals, and it counts requests by method and path.
//!
//! Every request it passes on is sent with `Connection: close`, so each
//! request comes on a connection of its own and meets its own fault.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    rule: Rule,
    counts: super::RequestCounts,
}

pub struct ApiFaults {
    pub url: String,
    addr: SocketAddr,
    inner: Arc<Inner>,
    /// The task accepting connections, while listening.
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ApiFaults {
    /// Starts a proxy in front of the API server at `upstream`
    /// (`http://host:port`).
    pub async fn start(upstream: &str, rule: Rule) -> Arc<ApiFaults> {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("an http://IP:PORT API server URL");
        let inner = Arc::new(Inner {
            upstream,
            rule,
            counts: super::RequestCounts::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("its address");
        let accept = tokio::spawn(accept(listener, inner.clone()));
        Arc::new(ApiFaults {
            url: format!("http://{addr}"),
            addr,
            inner,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// How many times `method path` was asked (requests reset before they
    /// were read count too; refused connections do not).
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

async fn accept(listener: TcpListener, inner: Arc<Inner>) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(serve(client, inner.clone()));
    }
}

/// One connection: read the request head, apply the rule.
async fn serve(mut client: TcpStream, inner: Arc<Inner>) {
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
            let _ = client.write_all(answer.as_bytes()).await;
        }
        Fault::Reset => reset(client),
        Fault::Forward | Fault::LoseAnswer => {
            let Ok(mut server) = TcpStream::connect(inner.upstream).await else {
                return reset(client);
            };
            let head = close_after(&head);
            if server.write_all(head.as_bytes()).await.is_err()
                || server.write_all(&rest).await.is_err()
            {
                return reset(client);
            }
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

/// Closes `stream` with a TCP reset (zero linger) rather than a FIN.
fn reset(stream: TcpStream) {
    // Zero linger never blocks on drop, which is what the deprecation of
    // `set_linger` warns about.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// The request head (up to its blank line) and whatever of the body came
/// with it.
async fn read_head(client: &mut TcpStream) -> Option<(String, Vec<u8>)> {
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
