//! The retry under every Kubernetes API call: a [`tower::retry::Policy`]
//! that sends a request again when the answer says the server was busy or
//! briefly away, so that no call site has to remember to.
//!
//! kube's own `RetryPolicy` retries only 429, 503 and 504, never a
//! connection error, and counts no total time; against a real cluster an
//! API server restarting behind a load balancer answers 500/502 or resets
//! connections for tens of seconds, and API Priority and Fairness answers
//! 429 with a `Retry-After` that must be waited out. This policy retries:
//!
//! - 429, 500, 502, 503 and 504 answers, waiting at least what
//!   `Retry-After` asks (capped at [`Bounds::max_retry_after`]);
//! - connection errors: refused, reset, aborted, closed before the
//!   answer was complete, and timeouts (connect, response, read).
//!
//! Every method is retried, creates included: a create whose answer was
//! lost and that is sent again meets 409 AlreadyExists, which callers that
//! create handle (`kubeops::create_if_missing`); a retried delete meets
//! 404, which they treat as gone. Retries stop after [`Bounds::attempts`]
//! attempts or once [`Bounds::total`] has passed since the first; an error
//! then says how often and how long it was tried ([`GaveUp`]). An answer
//! (a 503 after the bound) is passed on as it is, so callers keep the
//! server's `Status`.
//!
//! The decisions are pure ([`Bounds::decide`]) and unit-tested; the
//! [`Policy`] only feeds them the answer and the request's [`Tries`].

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use kube::client::Body;
use tokio::time::Instant;
use tower::retry::Policy;
use tower::BoxError;

/// How often and how long a call is retried, and how the pause grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// No retry starts later than this after the first attempt was sent.
    pub total: Duration,
    /// The pause after the first failure; it doubles with each failure.
    pub first_delay: Duration,
    /// The longest pause the doubling reaches.
    pub max_delay: Duration,
    /// The longest `Retry-After` waited: a server asking for more is
    /// asked again after this long (the total bound still applies).
    pub max_retry_after: Duration,
}

impl Default for Bounds {
    /// Rides out an API server restart behind a load balancer (about a
    /// minute of refusals and 503s) and APF throttling, and gives up
    /// within about two minutes.
    fn default() -> Self {
        Bounds {
            attempts: 10,
            total: Duration::from_secs(120),
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(15),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// What one attempt came back with, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP answer, with its `Retry-After` in seconds if it had one.
    Status(StatusCode, Option<Duration>),
    /// No answer: the connection failed in a way another attempt may not.
    ConnectionError,
    /// No answer, for a reason another attempt would meet again (TLS
    /// refused, credentials unusable).
    OtherError,
}

/// A request's history so far, carried in its extensions from attempt to
/// attempt (the policy itself is shared by all requests).
#[derive(Debug, Clone, Copy)]
pub struct Tries {
    /// When the first attempt was sent.
    pub first: Instant,
    /// Attempts that failed so far.
    pub failures: u32,
}

/// The verdict on a failed or successful attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Pass the answer on: it is a success, or retrying cannot help.
    Done,
    /// Send again after this pause.
    RetryAfter(Duration),
    /// Retrying could help, but the bounds are used up.
    GiveUp,
}

impl Bounds {
    /// Decides about `answer`, the outcome of attempt `tries.failures + 1`,
    /// at `now`. `jitter` in [0, 1) stretches the backoff by up to a
    /// quarter, so that calls failing together do not return together.
    pub fn decide(&self, answer: Answer, tries: Tries, now: Instant, jitter: f64) -> Decision {
        let retry_after = match answer {
            Answer::Status(status, retry_after) if retryable_status(status) => retry_after,
            Answer::ConnectionError => None,
            Answer::Status(..) | Answer::OtherError => return Decision::Done,
        };
        let failures = tries.failures + 1;
        if failures >= self.attempts {
            return Decision::GiveUp;
        }
        let backoff = self
            .backoff(failures)
            .mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 4.0);
        let pause = retry_after
            .map(|asked| asked.min(self.max_retry_after))
            .map_or(backoff, |asked| asked.max(backoff));
        if now + pause > tries.first + self.total {
            return Decision::GiveUp;
        }
        Decision::RetryAfter(pause)
    }

    /// The pause after the `failures`-th failure, before jitter:
    /// `first_delay` doubled `failures - 1` times, at most `max_delay`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }
}

/// The statuses a server sends when it is overloaded or briefly away.
pub fn retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// `Retry-After` as a number of seconds (what Kubernetes sends); the
/// HTTP-date form, which no API server sends, counts as absent.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Whether an error (with its sources) is a connection failing: refused,
/// reset, aborted, closed early, timed out, or a name that did not
/// resolve. TLS and credential errors are not.
pub fn is_connection_error(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | BrokenPipe
                    | NotConnected
                    | UnexpectedEof
                    | TimedOut
            ) {
                return true;
            }
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_timeout() {
                return true;
            }
        }
        if let Some(legacy) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if legacy.is_connect() {
                return true;
            }
        }
        if e.is::<tower::timeout::error::Elapsed>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The error a call ends with when every attempt failed without an
/// answer: how often and for how long it was tried, and the last error.
#[derive(Debug)]
pub struct GaveUp {
    pub attempts: u32,
    pub elapsed: Duration,
    pub last: BoxError,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no answer from the API server after {} attempts in {:.1}s: ",
            self.attempts,
            self.elapsed.as_secs_f64()
        )?;
        // The whole chain: hyper's outer errors alone ("client error
        // (Connect)") do not say what happened.
        let mut next: Option<&(dyn StdError + 'static)> = Some(self.last.as_ref());
        let mut first = true;
        while let Some(e) = next {
            if !first {
                f.write_str(": ")?;
            }
            write!(f, "{e}")?;
            first = false;
            next = e.source();
        }
        Ok(())
    }
}

impl StdError for GaveUp {}

/// The [`Policy`] under the orchestrator's clients (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryPolicy {
    pub bounds: Bounds,
}

impl<B> Policy<Request<Body>, Response<B>, BoxError> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        request: &mut Request<Body>,
        result: &mut Result<Response<B>, BoxError>,
    ) -> Option<Self::Future> {
        let answer = match result {
            Ok(response) => Answer::Status(response.status(), retry_after(response.headers())),
            Err(e) if is_connection_error(e.as_ref()) => Answer::ConnectionError,
            Err(_) => Answer::OtherError,
        };
        let now = Instant::now();
        let tries = *request.extensions().get::<Tries>()?;
        match self.bounds.decide(answer, tries, now, jitter()) {
            Decision::Done => None,
            Decision::RetryAfter(pause) => {
                request.extensions_mut().insert(Tries {
                    failures: tries.failures + 1,
                    ..tries
                });
                tracing::debug!(
                    "{} {}: {answer:?}, attempt {} again in {pause:?}",
                    request.method(),
                    request.uri(),
                    tries.failures + 2
                );
                Some(Box::pin(tokio::time::sleep(pause)))
            }
            Decision::GiveUp => {
                let attempts = tries.failures + 1;
                let elapsed = now - tries.first;
                tracing::warn!(
                    "{} {}: giving up after {attempts} attempts in {:.1}s ({answer:?})",
                    request.method(),
                    request.uri(),
                    elapsed.as_secs_f64()
                );
                if let Err(e) = result {
                    let last = std::mem::replace(e, "".into());
                    *e = Box::new(GaveUp {
                        attempts,
                        elapsed,
                        last,
                    });
                }
                None
            }
        }
    }

    /// Copies the request for a later attempt (kube's bodies are buffered
    /// bytes, so they clone), starting its [`Tries`] on the first.
    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        let body = request.body().try_clone()?;
        let mut copy = Request::builder()
            .method(request.method().clone())
            .uri(request.uri().clone())
            .version(request.version())
            .body(body)
            .ok()?;
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        if copy.extensions().get::<Tries>().is_none() {
            copy.extensions_mut().insert(Tries {
                first: Instant::now(),
                failures: 0,
            });
        }
        Some(copy)
    }
}

/// A number in [0, 1) that differs from call to call (std's per-hasher
/// random keys; no generator state to share).
fn jitter() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            attempts: 5,
            total: Duration::from_secs(60),
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(700),
            max_retry_after: Duration::from_secs(10),
        }
    }

    fn tries(failures: u32) -> Tries {
        Tries {
            first: Instant::now(),
            failures,
        }
    }

    fn status(code: u16) -> Answer {
        Answer::Status(StatusCode::from_u16(code).unwrap(), None)
    }

    #[test]
    fn retries_overload_and_restarts_but_not_refusals() {
        let b = bounds();
        let now = Instant::now();
        for code in [429, 500, 502, 503, 504] {
            assert!(
                matches!(
                    b.decide(status(code), tries(0), now, 0.0),
                    Decision::RetryAfter(_)
                ),
                "{code} is retried"
            );
        }
        for code in [200, 201, 400, 401, 403, 404, 409, 410, 422, 501] {
            assert_eq!(
                b.decide(status(code), tries(0), now, 0.0),
                Decision::Done,
                "{code} is passed on"
            );
        }
        assert_eq!(
            b.decide(Answer::ConnectionError, tries(0), now, 0.0),
            Decision::RetryAfter(Duration::from_millis(100))
        );
        assert_eq!(
            b.decide(Answer::OtherError, tries(0), now, 0.0),
            Decision::Done
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_a_bounded_jitter() {
        let b = bounds();
        let pauses: Vec<u64> = (1..=5).map(|n| b.backoff(n).as_millis() as u64).collect();
        assert_eq!(pauses, [100, 200, 400, 700, 700]);
        assert_eq!(b.backoff(1000), Duration::from_millis(700), "no overflow");
        let now = Instant::now();
        let Decision::RetryAfter(stretched) = b.decide(status(503), tries(1), now, 0.99) else {
            panic!("retried");
        };
        assert!(stretched > Duration::from_millis(200) && stretched < Duration::from_millis(250));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let b = bounds();
        let now = Instant::now();
        let asked = |secs| {
            Answer::Status(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(secs)),
            )
        };
        assert_eq!(
            b.decide(asked(3), tries(0), now, 0.0),
            Decision::RetryAfter(Duration::from_secs(3)),
            "the server's pause, longer than the backoff"
        );
        assert_eq!(
            b.decide(asked(0), tries(2), now, 0.0),
            Decision::RetryAfter(Duration::from_millis(400)),
            "never sooner than the backoff"
        );
        assert_eq!(
            b.decide(asked(3600), tries(0), now, 0.0),
            Decision::RetryAfter(Duration::from_secs(10)),
            "capped"
        );
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn gives_up_after_the_attempts_or_the_total_time() {
        let b = bounds();
        let now = Instant::now();
        assert!(matches!(
            b.decide(status(503), tries(3), now, 0.0),
            Decision::RetryAfter(_)
        ));
        assert_eq!(
            b.decide(status(503), tries(4), now, 0.0),
            Decision::GiveUp,
            "the fifth attempt was the last"
        );
        let started_long_ago = Tries {
            first: now - Duration::from_secs(59),
            failures: 1,
        };
        assert_eq!(
            b.decide(Answer::ConnectionError, started_long_ago, now, 0.0),
            Decision::RetryAfter(Duration::from_millis(200)),
            "a retry that starts within the total"
        );
        let asked = Answer::Status(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(2)));
        assert_eq!(
            b.decide(asked, started_long_ago, now, 0.0),
            Decision::GiveUp,
            "a pause that would end past the total"
        );
    }

    #[test]
    fn connection_errors_are_told_from_others() {
        use std::io::{Error, ErrorKind};
        for kind in [
            ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionReset,
            ErrorKind::UnexpectedEof,
            ErrorKind::TimedOut,
        ] {
            let cause = kube::Error::Service(Box::new(Error::new(kind, "x")));
            assert!(
                is_connection_error(&cause),
                "{kind:?}, found among the sources"
            );
        }
        let tls = Error::new(
            ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        assert!(!is_connection_error(&tls));
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(is_connection_error(elapsed.as_ref()));
    }

    #[test]
    fn gave_up_names_attempts_time_and_every_cause() {
        use std::io::{Error, ErrorKind};
        let cause = Error::new(ErrorKind::ConnectionRefused, "Connection refused");
        let message = GaveUp {
            attempts: 4,
            elapsed: Duration::from_millis(1500),
            last: Box::new(kube::Error::Service(Box::new(cause))),
        }
        .to_string();
        assert_eq!(
            message,
            "no answer from the API server after 4 attempts in 1.5s: \
             ServiceError: Connection refused: Connection refused"
        );
    }
}
