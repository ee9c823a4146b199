//! Injected API faults: the ways a real API server fails its clients under
//! load, during an etcd hiccup or while it restarts, on demand, so that a
//! test can prove a client's retries rather than hope for them.
//!
//! A test gets the [`Faults`] of a running cluster (`Cluster::faults`) and
//! asks for:
//!
//! - **failed requests** ([`Faults::fail`]): the requests a [`Requests`]
//!   filter matches, for the next N of them or for a while, are answered
//!   with a [`Failure`] instead of being served: `429 Too Many Requests`
//!   with `Retry-After` (what API Priority and Fairness answers when a
//!   priority level's queues are full), `500 InternalError` or
//!   `503 ServiceUnavailable`, each with the `Status` body the real server
//!   sends;
//! - **cut streams** ([`Faults::cut_streams`], [`Faults::cut_streams_every`]):
//!   the watches and pod log follows open at that moment break off
//!   mid-stream, as when a load balancer or an API server replica drops
//!   them: the client reads a broken chunked body, not a clean end;
//! - **a restart** ([`Faults::restart`]): for a while every request's
//!   connection is dropped without an answer and the open streams are cut;
//!   afterwards the server answers again with its state intact, so
//!   resourceVersions continue where they were, as after a real restart
//!   (etcd keeps the state, not the API server).
//!
//! Everything injected is counted ([`Faults::counts`]).
//!
//! The faults act in an axum middleware ([`inject`]) in front of every
//! handler, so they reach the emulator's own controllers too (they are API
//! clients like any other): a restart interrupts the kubelet's and the
//! router's watches as a real one would. A filter on the user agent or the
//! path aims a fault at one client.
//!
//! A restart drops connections at the HTTP level: a connection that sends
//! a request during the window is closed without a response. The listening
//! socket stays open, so a client sees its connection closed rather than
//! refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::time::Instant;

use super::error::ApiError;

/// The faults injected into one API server. Cloning gives another handle
/// on the same faults.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Inner>,
}

struct Inner {
    rules: Mutex<Vec<Rule>>,
    /// While a restart lasts: when it ends.
    down_until: Mutex<Option<Instant>>,
    /// Bumped to cut every stream open at that moment.
    cuts: tokio::sync::watch::Sender<u64>,
    /// Bumped by [`Faults::clear`], which ends periodic cuts.
    epoch: AtomicU64,
    counts: Counters,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            rules: Mutex::default(),
            down_until: Mutex::default(),
            cuts: tokio::sync::watch::Sender::new(0),
            epoch: AtomicU64::new(0),
            counts: Counters::default(),
        }
    }
}

#[derive(Default)]
struct Counters {
    too_many_requests: AtomicU64,
    internal_errors: AtomicU64,
    service_unavailable: AtomicU64,
    streams_cut: AtomicU64,
    connections_dropped: AtomicU64,
}

/// How many faults were injected, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Requests answered `429 Too Many Requests`.
    pub too_many_requests: u64,
    /// Requests answered `500 InternalError`.
    pub internal_errors: u64,
    /// Requests answered `503 ServiceUnavailable`.
    pub service_unavailable: u64,
    /// Watches and log follows broken off.
    pub streams_cut: u64,
    /// Requests whose connection was dropped during a restart.
    pub connections_dropped: u64,
}

/// Which requests a fault applies to: every condition given must hold;
/// [`Requests::all`] has none.
#[derive(Clone, Debug, Default)]
pub struct Requests {
    method: Option<Method>,
    path: Option<String>,
    resource: Option<String>,
    user_agent: Option<String>,
}

impl Requests {
    /// Every request.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only requests with this HTTP method (`GET`, `POST`, `PATCH`, ...).
    /// A watch is a `GET`.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Only requests whose path contains `part` (`/namespaces/app/`,
    /// `/pods/receiver/log`).
    pub fn path_containing(mut self, part: &str) -> Self {
        self.path = Some(part.to_string());
        self
    }

    /// Only requests for the resource with this plural name (`pods`,
    /// `routes`, `persistentvolumeclaims`), in any group, on the collection,
    /// an object or a subresource.
    pub fn resource(mut self, plural: &str) -> Self {
        self.resource = Some(plural.to_string());
        self
    }

    /// Only requests whose `User-Agent` contains `part`.
    pub fn user_agent(mut self, part: &str) -> Self {
        self.user_agent = Some(part.to_string());
        self
    }

    fn matches(&self, seen: &Seen) -> bool {
        self.method.as_ref().is_none_or(|m| *m == seen.method)
            && self.path.as_deref().is_none_or(|p| seen.path.contains(p))
            && self
                .resource
                .as_deref()
                .is_none_or(|r| resource_of(&seen.path) == Some(r))
            && self
                .user_agent
                .as_deref()
                .is_none_or(|agent| seen.user_agent.contains(agent))
    }
}

/// What a failed request is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `429 Too Many Requests` with `Retry-After: <seconds>` and
    /// `details.retryAfterSeconds`, as API Priority and Fairness rejects a
    /// request when its priority level is saturated.
    TooManyRequests { retry_after_seconds: u32 },
    /// `500 InternalError`, as when storage fails a request.
    InternalError,
    /// `503 ServiceUnavailable`, as when the server cannot reach storage.
    ServiceUnavailable,
}

/// How long a failure lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// For the next N matching requests.
    Requests(u32),
    /// For every matching request during this long from now.
    For(Duration),
}

/// One [`Faults::fail`] order, while it lasts.
struct Rule {
    requests: Requests,
    failure: Failure,
    left: Left,
}

enum Left {
    Requests(u32),
    Until(Instant),
}

impl Left {
    fn is_spent(&self, now: Instant) -> bool {
        match *self {
            Left::Requests(n) => n == 0,
            Left::Until(end) => now >= end,
        }
    }
}

impl Faults {
    /// Answers the requests `requests` matches with `failure`, for `span`.
    /// Orders given earlier are served first; each request uses up at
    /// most one.
    pub fn fail(&self, requests: Requests, failure: Failure, span: Span) {
        let left = match span {
            Span::Requests(n) => Left::Requests(n),
            Span::For(duration) => Left::Until(Instant::now() + duration),
        };
        lock(&self.inner.rules).push(Rule {
            requests,
            failure,
            left,
        });
    }

    /// Breaks off every watch and pod log follow open now.
    pub fn cut_streams(&self) {
        self.inner.cuts.send_modify(|generation| *generation += 1);
    }

    /// Breaks off the open watches and log follows every `period`, for
    /// `span` from now (or until [`Faults::clear`]). Must be called within
    /// a Tokio runtime, which runs the timer.
    pub fn cut_streams_every(&self, period: Duration, span: Duration) {
        let faults = self.clone();
        let epoch = self.inner.epoch.load(Ordering::SeqCst);
        let end = Instant::now() + span;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            loop {
                let tick = ticks.tick().await;
                if tick > end || faults.inner.epoch.load(Ordering::SeqCst) != epoch {
                    return;
                }
                faults.cut_streams();
            }
        });
    }

    /// Behaves as an API server restarting for `down_for`: the open streams
    /// are cut now, and until then every request's connection is dropped
    /// without a response. The cluster's state is untouched, so after the
    /// restart resourceVersions continue.
    pub fn restart(&self, down_for: Duration) {
        *lock(&self.inner.down_until) = Some(Instant::now() + down_for);
        self.cut_streams();
    }

    /// Whether a restart is under way.
    pub fn is_restarting(&self) -> bool {
        self.down_until(Instant::now()).is_some()
    }

    /// Ends every fault: pending failures, periodic cuts and a restart.
    /// The counts stay.
    pub fn clear(&self) {
        lock(&self.inner.rules).clear();
        *lock(&self.inner.down_until) = None;
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// How many faults were injected so far.
    pub fn counts(&self) -> FaultCounts {
        let counts = &self.inner.counts;
        let read = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        FaultCounts {
            too_many_requests: read(&counts.too_many_requests),
            internal_errors: read(&counts.internal_errors),
            service_unavailable: read(&counts.service_unavailable),
            streams_cut: read(&counts.streams_cut),
            connections_dropped: read(&counts.connections_dropped),
        }
    }

    /// When the restart under way ends, if one is.
    fn down_until(&self, now: Instant) -> Option<Instant> {
        let mut down_until = lock(&self.inner.down_until);
        if down_until.is_some_and(|end| now >= end) {
            *down_until = None;
        }
        *down_until
    }

    /// The failure `seen` gets, using up one request of the first order
    /// that matches it.
    fn take(&self, seen: &Seen) -> Option<Failure> {
        let now = Instant::now();
        let mut rules = lock(&self.inner.rules);
        rules.retain(|rule| !rule.left.is_spent(now));
        let rule = rules.iter_mut().find(|rule| rule.requests.matches(seen))?;
        if let Left::Requests(n) = &mut rule.left {
            *n -= 1;
        }
        let counter = match rule.failure {
            Failure::TooManyRequests { .. } => &self.inner.counts.too_many_requests,
            Failure::InternalError => &self.inner.counts.internal_errors,
            Failure::ServiceUnavailable => &self.inner.counts.service_unavailable,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        Some(rule.failure)
    }

    /// `response` with a body that breaks off when the streams are next
    /// cut.
    fn cuttable(&self, response: Response) -> Response {
        let mut cuts = self.inner.cuts.subscribe();
        cuts.mark_unchanged();
        let faults = self.clone();
        let (parts, body) = response.into_parts();
        let body =
            futures_util::stream::unfold(Some((body.into_data_stream(), cuts)), move |open| {
                let faults = faults.clone();
                async move {
                    let (mut body, mut cuts) = open?;
                    tokio::select! {
                        chunk = body.next() => {
                            let chunk = chunk?.map_err(std::io::Error::other);
                            Some((chunk, Some((body, cuts))))
                        }
                        Ok(()) = cuts.changed() => {
                            faults.inner.counts.streams_cut.fetch_add(1, Ordering::SeqCst);
                            Some((Err(broken("the stream was cut by an injected fault")), None))
                        }
                    }
                }
            });
        Response::from_parts(parts, Body::from_stream(body))
    }
}

impl Failure {
    /// The response a real API server sends for this failure.
    fn response(self) -> Response {
        match self {
            Failure::TooManyRequests {
                retry_after_seconds,
            } => {
                let mut status = ApiError::new(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                )
                .status();
                status["details"] = json!({ "retryAfterSeconds": retry_after_seconds });
                let mut response = super::json_response(StatusCode::TOO_MANY_REQUESTS, &status);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
                response
            }
            Failure::InternalError => {
                let cause = "injected by the kube-emulator";
                let mut status =
                    ApiError::internal(format!("Internal error occurred: {cause}")).status();
                status["details"] = json!({ "causes": [{ "message": cause }] });
                super::json_response(StatusCode::INTERNAL_SERVER_ERROR, &status)
            }
            Failure::ServiceUnavailable => ApiError::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            )
            .into_response(),
        }
    }
}

/// What a fault filter looks at in a request.
struct Seen {
    method: Method,
    path: String,
    user_agent: String,
    /// A watch or a log follow: a response that streams until cut.
    streams: bool,
}

impl Seen {
    fn of(request: &Request) -> Self {
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("");
        let flag = |name: &str| {
            query.split('&').any(|pair| {
                pair.split_once('=')
                    .is_some_and(|(key, value)| key == name && (value == "true" || value == "1"))
            })
        };
        let streams = flag("watch") || (path.ends_with("/log") && flag("follow"));
        let user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|agent| agent.to_str().ok())
            .unwrap_or("")
            .to_string();
        Self {
            method: request.method().clone(),
            path,
            user_agent,
            streams,
        }
    }
}

/// The resource (plural) a request path names:
/// `/api/v1/namespaces/ns/pods/name/log` names `pods`,
/// `/api/v1/namespaces/ns` names `namespaces`.
fn resource_of(path: &str) -> Option<&str> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    match rest {
        ["namespaces", _namespace, resource, ..] if !matches!(*resource, "status" | "finalize") => {
            Some(resource)
        }
        [resource, ..] => Some(resource),
        [] => None,
    }
}

fn broken(why: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, why)
}

/// The response for a request whose connection is dropped: its body fails
/// before its first byte, which makes the HTTP server close the connection
/// without answering.
fn dropped_connection() -> Response {
    let failed = futures_util::stream::once(async {
        Err::<bytes::Bytes, _>(broken("the API server is restarting"))
    });
    Response::new(Body::from_stream(failed))
}

/// The middleware injecting the faults into every request.
pub(super) async fn inject(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    if faults.down_until(Instant::now()).is_some() {
        faults
            .inner
            .counts
            .connections_dropped
            .fetch_add(1, Ordering::SeqCst);
        return dropped_connection();
    }
    let seen = Seen::of(&request);
    if let Some(failure) = faults.take(&seen) {
        return failure.response();
    }
    let response = next.run(request).await;
    if seen.streams {
        faults.cuttable(response)
    } else {
        response
    }
}

/// The fault tables stay consistent whatever panicked while holding them.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_read_from_api_paths() {
        for (path, resource) in [
            ("/api/v1/namespaces/ns/pods/p/log", Some("pods")),
            ("/api/v1/pods", Some("pods")),
            ("/api/v1/namespaces/pods", Some("namespaces")),
            ("/api/v1/namespaces/ns/status", Some("namespaces")),
            (
                "/apis/route.openshift.io/v1/namespaces/ns/routes",
                Some("routes"),
            ),
            ("/apis/apps/v1", None),
            ("/version", None),
        ] {
            assert_eq!(resource_of(path), resource, "{path}");
        }
    }

    #[test]
    fn an_order_for_n_requests_is_used_up_and_then_gone() {
        let faults = Faults::default();
        faults.fail(
            Requests::all().resource("pods").method(Method::POST),
            Failure::InternalError,
            Span::Requests(2),
        );
        let seen = |method: Method, path: &str| Seen {
            method,
            path: path.to_string(),
            user_agent: String::new(),
            streams: false,
        };
        assert_eq!(faults.take(&seen(Method::GET, "/api/v1/pods")), None);
        assert_eq!(
            faults.take(&seen(Method::POST, "/api/v1/namespaces/ns/configmaps")),
            None
        );
        for _ in 0..2 {
            assert_eq!(
                faults.take(&seen(Method::POST, "/api/v1/namespaces/ns/pods")),
                Some(Failure::InternalError)
            );
        }
        assert_eq!(
            faults.take(&seen(Method::POST, "/api/v1/namespaces/ns/pods")),
            None
        );
        assert_eq!(faults.counts().internal_errors, 2);
    }
}
