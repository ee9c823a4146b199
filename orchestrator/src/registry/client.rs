//! One registry endpoint: its URL, HTTP client (with the TLS trust chosen
//! for it), authentication state and tuning, and the one place where a
//! request is sent: authenticated, re-sent once after a 401 challenge,
//! retried with backoff on transient failures, and turned into an
//! [`Error`] naming registry, repository and object when it fails.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{Method, Response, StatusCode, Url};

use super::auth::{Auth, Credentials, Scope};
use super::digest::Digest;
use super::error::{from_reqwest, is_transient_status, Error, ErrorKind};
use super::retry::RetryPolicy;
use super::tls::{self, Trust};

/// How to reach and authenticate to a registry.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// `https://host[:port]`, or `http://host[:port]` for a registry
    /// without TLS (loopback, or any host when `trust` is
    /// [`Trust::Insecure`]: credentials then cross the network in clear).
    pub url: String,
    pub credentials: Credentials,
    pub trust: Trust,
    pub tuning: Tuning,
}

/// Knobs of copies into (and out of) a registry.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Blobs of one image copied at once into this registry.
    pub parallel_blobs: usize,
    /// Blobs larger than this are uploaded as PATCH chunks of this size
    /// (proxies and routers in front of registries often limit a request's
    /// body); smaller ones in a single PUT.
    pub chunk_size: u64,
    pub retry: RetryPolicy,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            parallel_blobs: 4,
            chunk_size: 64 << 20,
            retry: RetryPolicy::default(),
        }
    }
}

/// A registry endpoint. Cheap to clone; clones share connections, tokens
/// and what is known about where blobs live.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host[:port]`, for messages.
    name: String,
    base: Url,
    http: reqwest::Client,
    auth: Auth,
    tuning: Tuning,
    /// A repository of this registry known to hold each blob, so that a
    /// later copy into another repository can mount instead of upload.
    blob_homes: Mutex<HashMap<Digest, String>>,
}

/// A request body: replayable (sent again after a 401 or a transient
/// failure) or a one-shot stream (never re-sent here; the blob copy
/// retries it from the source).
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    Stream(reqwest::Body),
}

/// Where a request goes and what it is about, for errors.
pub(crate) struct Request<'a> {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Body,
    pub scope: Scope,
    pub repository: Option<&'a str>,
    pub object: Option<String>,
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Result<Registry, Error> {
        let fail = |m: String| Error {
            registry: config.url.clone(),
            repository: None,
            object: None,
            kind: ErrorKind::Config(m),
        };
        let base = Url::parse(&config.url)
            .map_err(|e| fail(format!("{:?} is not a URL: {e}", config.url)))?;
        let host = base
            .host_str()
            .ok_or_else(|| fail(format!("{:?} has no host", config.url)))?;
        if !base.path().trim_matches('/').is_empty() || base.query().is_some() {
            return Err(fail(format!(
                "{:?}: give only scheme://host[:port]; the API lives at /v2/",
                config.url
            )));
        }
        match base.scheme() {
            "https" => {}
            "http" if is_loopback(host) || config.trust == Trust::Insecure => {}
            "http" => {
                return Err(fail(format!(
                    "{:?}: plain http to a host other than loopback needs the insecure \
                     option (credentials and images would cross the network unprotected)",
                    config.url
                )))
            }
            s => return Err(fail(format!("{:?}: scheme {s} is not http(s)", config.url))),
        }
        if config.tuning.parallel_blobs == 0 || config.tuning.chunk_size == 0 {
            return Err(fail(
                "parallel blobs and chunk size must be at least 1".into(),
            ));
        }
        let name = match base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let tls = tls::client_config(&config.trust).map_err(fail)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("orchestrator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // No overall timeout (a blob may take long); a stalled read
            // fails, and is retried.
            .read_timeout(Duration::from_secs(300))
            .http1_only()
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| fail(format!("HTTP client: {e}")))?;
        Ok(Registry {
            inner: Arc::new(Inner {
                name,
                base,
                http,
                auth: Auth::new(config.credentials),
                tuning: config.tuning,
                blob_homes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// `host[:port]`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn tuning(&self) -> &Tuning {
        &self.inner.tuning
    }

    /// Whether both handles reach the same registry (then blobs can be
    /// mounted from one repository into another).
    pub fn same_registry(&self, other: &Registry) -> bool {
        self.inner.base == other.inner.base
    }

    /// The preflight check: `/v2/` answers, and accepts our credentials.
    pub async fn check(&self) -> Result<(), Error> {
        let resp = self
            .send(self.request(Method::GET, "/v2/", Scope::none(), None, None))
            .await?;
        self.expect(resp, &[StatusCode::OK], None, None).await?;
        Ok(())
    }

    pub(crate) fn url(&self, path: &str) -> Url {
        let mut u = self.inner.base.clone();
        u.set_path(path);
        u
    }

    /// Resolves a `Location` header (absolute or relative, as registries
    /// differ) against this registry.
    pub(crate) fn location(
        &self,
        resp: &Response,
        repository: &str,
        object: &str,
    ) -> Result<Url, Error> {
        let loc = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                self.error(
                    Some(repository),
                    Some(object.to_string()),
                    ErrorKind::Protocol(format!(
                        "HTTP {} without a Location header",
                        resp.status().as_u16()
                    )),
                )
            })?;
        self.inner.base.join(loc).map_err(|e| {
            self.error(
                Some(repository),
                Some(object.to_string()),
                ErrorKind::Protocol(format!("Location {loc:?} is not a URL: {e}")),
            )
        })
    }

    pub(crate) fn request<'a>(
        &self,
        method: Method,
        path: &str,
        scope: Scope,
        repository: Option<&'a str>,
        object: Option<String>,
    ) -> Request<'a> {
        Request {
            method,
            url: self.url(path),
            headers: HeaderMap::new(),
            body: Body::Empty,
            scope,
            repository,
            object,
        }
    }

    pub(crate) fn error(
        &self,
        repository: Option<&str>,
        object: Option<String>,
        kind: ErrorKind,
    ) -> Error {
        Error {
            registry: self.inner.name.clone(),
            repository: repository.map(str::to_string),
            object,
            kind,
        }
    }

    /// Sends a request, authenticating as the registry asks (once more
    /// after a 401 challenge) and retrying transient failures of
    /// replayable requests with backoff. Returns the final response
    /// whatever its status, except for failures that are errors by then:
    /// refused credentials, transport failures, and transient statuses
    /// that outlasted the retries.
    pub(crate) async fn send(&self, req: Request<'_>) -> Result<Response, Error> {
        let Request {
            method,
            url,
            headers,
            body,
            scope,
            repository,
            object,
        } = req;
        let err = |kind| self.error(repository, object.clone(), kind);
        let policy = &self.inner.tuning.retry;
        let streaming = matches!(body, Body::Stream(_));
        let mut body = Some(body);
        let mut failed = 0u32;
        let mut reauthenticated = false;
        loop {
            let auth = self
                .inner
                .auth
                .header(&self.inner.http, &scope)
                .await
                .map_err(err)?;
            let sent_authorization = auth.is_some();
            let mut rb = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(a) = auth {
                rb = rb.header(AUTHORIZATION, a);
            }
            // A stream goes out once (streaming requests are never re-sent).
            rb = match body.take() {
                Some(Body::Bytes(b)) => {
                    body = Some(Body::Bytes(b.clone()));
                    rb.body(b)
                }
                Some(Body::Stream(s)) => rb.body(s),
                Some(Body::Empty) => {
                    body = Some(Body::Empty);
                    rb
                }
                None => rb,
            };
            match rb.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    let h = resp.headers().clone();
                    let message = status_error(resp).await.to_string();
                    self.inner
                        .auth
                        .challenged(&h, &scope, sent_authorization, &message)
                        .map_err(err)?;
                    if reauthenticated || streaming {
                        return Err(err(ErrorKind::Unauthorized(message)));
                    }
                    reauthenticated = true;
                }
                Ok(resp) if is_transient_status(resp.status().as_u16()) && !streaming => {
                    failed += 1;
                    match policy.delay(failed, Some(resp.headers())) {
                        Some(d) => {
                            drop(resp);
                            tokio::time::sleep(d).await;
                        }
                        None => return Err(err(status_error(resp).await.after(failed))),
                    }
                }
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    let kind = from_reqwest(&e);
                    if !kind.is_transient() || streaming {
                        return Err(err(kind));
                    }
                    failed += 1;
                    match policy.delay(failed, None) {
                        Some(d) => tokio::time::sleep(d).await,
                        None => return Err(err(kind.after(failed))),
                    }
                }
            }
        }
    }

    /// The response if its status is one of `ok`, else the registry's
    /// error as an [`Error`].
    pub(crate) async fn expect(
        &self,
        resp: Response,
        ok: &[StatusCode],
        repository: Option<&str>,
        object: Option<String>,
    ) -> Result<Response, Error> {
        if ok.contains(&resp.status()) {
            return Ok(resp);
        }
        Err(self.error(repository, object, status_error(resp).await))
    }

    /// Remembers that `repository` holds `digest`.
    pub(crate) fn remember_blob(&self, digest: &Digest, repository: &str) {
        self.inner
            .blob_homes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), repository.to_string());
    }

    /// A repository other than `except` known to hold `digest`.
    pub(crate) fn blob_home(&self, digest: &Digest, except: &str) -> Option<String> {
        self.inner
            .blob_homes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .filter(|r| r.as_str() != except)
            .cloned()
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The registry's error reply as an [`ErrorKind`]: the distribution
/// spec's `{"errors":[{"code","message","detail"}]}` when present, else the
/// start of the body, else the status's reason.
pub(crate) async fn status_error(mut resp: Response) -> ErrorKind {
    const LIMIT: usize = 64 << 10;
    let status = resp.status();
    let mut body = Vec::new();
    while body.len() < LIMIT {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    body.truncate(LIMIT);
    let message = registry_message(&body)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
            text.trim().to_string()
        })
        .chars()
        .take(1000)
        .collect::<String>();
    let message = if message.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_string()
    } else {
        message
    };
    match status {
        StatusCode::UNAUTHORIZED => ErrorKind::Unauthorized(message),
        StatusCode::FORBIDDEN => ErrorKind::Denied(message),
        StatusCode::NOT_FOUND => ErrorKind::NotFound(message),
        s => ErrorKind::Status {
            status: s.as_u16(),
            message,
        },
    }
}

fn registry_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
        detail: Option<serde_json::Value>,
    }
    let e: Errors = serde_json::from_slice(body).ok()?;
    let parts: Vec<String> = e
        .errors
        .into_iter()
        .map(|x| {
            let mut s = x.code.unwrap_or_else(|| "ERROR".into());
            if let Some(m) = x.message.filter(|m| !m.is_empty()) {
                s.push_str(": ");
                s.push_str(&m);
            }
            match x.detail {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(d)) if d.is_empty() => {}
                Some(d) => s.push_str(&format!(" ({d})")),
            }
            s
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> RegistryConfig {
        RegistryConfig {
            url: url.into(),
            ..RegistryConfig::default()
        }
    }

    #[test]
    fn urls_are_checked_and_named() {
        let r = Registry::new(config("https://reg.example:5000")).unwrap();
        assert_eq!(r.name(), "reg.example:5000");
        assert_eq!(
            r.url("/v2/a/b/blobs/x").as_str(),
            "https://reg.example:5000/v2/a/b/blobs/x"
        );
        assert_eq!(
            Registry::new(config("https://reg.example/"))
                .unwrap()
                .name(),
            "reg.example"
        );
        for ok in [
            "http://127.0.0.1:5000",
            "http://localhost:1",
            "http://[::1]:5000",
        ] {
            assert!(Registry::new(config(ok)).is_ok(), "{ok}");
        }
        let e = Registry::new(config("http://reg.example:5000"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("insecure"), "{e}");
        assert!(Registry::new(RegistryConfig {
            trust: Trust::Insecure,
            ..config("http://reg.example:5000")
        })
        .is_ok());
        for bad in [
            "reg.example:5000",
            "ftp://reg.example",
            "https://reg.example/v2/",
            "nonsense",
        ] {
            let e = Registry::new(config(bad)).err().unwrap();
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn registry_error_bodies_become_messages() {
        let m = registry_message(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v9"}},{"code":"X","message":""}]}"#,
        )
        .unwrap();
        assert_eq!(m, r#"MANIFEST_UNKNOWN: manifest unknown ({"Tag":"v9"}); X"#);
        assert!(registry_message(b"<html>").is_none());
        assert!(registry_message(br#"{"errors":[]}"#).is_none());
    }
}
