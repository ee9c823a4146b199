//! A proxy in front of a real registry that injects faults: answers a
//! chosen request with an error status, or cuts a response body off
//! halfway (the connection dies mid-blob). It counts every request by
//! method and path, so tests can see what was retried and what was not.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward it.
    None,
    /// Answer with this status (and `Retry-After: 0`), not forwarding.
    Status(u16),
    /// Forward, but end the response body after half of it.
    Cut,
}

/// Chooses a fault from the method, the path and how many times this
/// method and path were seen (1 for the first).
pub type Rule = Box<dyn Fn(&str, &str, usize) -> Fault + Send + Sync>;

struct Inner {
    upstream: String,
    rule: Rule,
    http: reqwest::Client,
    counts: super::RequestCounts,
    /// Set once listening: the address clients use, which the upstream
    /// registry must put in its Location headers.
    host: Mutex<String>,
}

pub struct FaultProxy {
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str, rule: Rule) -> FaultProxy {
        super::init();
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_string(),
            rule,
            http: reqwest::Client::new(),
            counts: super::RequestCounts::default(),
            host: Mutex::new(String::new()),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("its address");
        *inner.host.lock().unwrap() = addr.to_string();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy {
            url: format!("http://{addr}"),
            inner,
            task,
        }
    }

    /// How many times `method path` was requested.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.inner.counts.count(method, path)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let method = parts.method.as_str().to_string();
    let n = inner.counts.seen(&method, &path);
    let fault = (inner.rule)(&method, &path, n);
    if let Fault::Status(s) = fault {
        let status = StatusCode::from_u16(s).expect("a valid status");
        return (
            status,
            [("retry-after", "0")],
            format!(r#"{{"errors":[{{"code":"INJECTED","message":"injected {s}"}}]}}"#),
        )
            .into_response();
    }
    let url = format!(
        "{}{}",
        inner.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = parts.headers.clone();
    let has_body =
        headers.contains_key("content-length") || headers.contains_key("transfer-encoding");
    for hop in ["host", "connection", "transfer-encoding"] {
        headers.remove(hop);
    }
    let host = inner.host.lock().unwrap().clone();
    headers.insert(
        "x-forwarded-host",
        HeaderValue::from_str(&host).expect("a header value"),
    );
    let mut upstream = inner
        .http
        .request(parts.method.clone(), url)
        .headers(headers);
    if has_body {
        upstream = upstream.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let upstream = upstream.send().await;
    let resp = match upstream {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = resp.status();
    let mut headers = resp.headers().clone();
    for hop in ["connection", "transfer-encoding"] {
        headers.remove(hop);
    }
    let len = resp.content_length().unwrap_or(0);
    let stream = resp.bytes_stream();
    let body = if fault == Fault::Cut && len > 1 {
        // Pass on half the body, then fail: the server aborts the
        // connection before the announced length arrived.
        let mut left = len / 2;
        let cut = stream
            .map(move |chunk| match chunk {
                Ok(mut c) if left > 0 => {
                    if c.len() as u64 > left {
                        c.truncate(left as usize);
                    }
                    left -= c.len() as u64;
                    Ok(c)
                }
                _ => Err(std::io::Error::other("cut by the fault proxy")),
            })
            .take_while({
                let mut failed = false;
                move |r| {
                    let go = !failed;
                    failed |= r.is_err();
                    std::future::ready(go)
                }
            });
        Body::from_stream(cut)
    } else {
        Body::from_stream(stream)
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}
