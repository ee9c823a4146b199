//! The Kubernetes client every call goes through: kube's client with
//! timeouts that notice a stalled connection without cutting a healthy
//! watch or log follow, and [`retry`] as a tower layer on top, so that no
//! call site has to remember to retry. [`crate::clusters`] finds the
//! configuration (kubeconfig, context, in-cluster service account) and
//! builds the client here.
//!
//! The layers, outermost first: retry ([`retry::RetryPolicy`]) → response
//! timeout (each attempt's answer must begin within
//! [`Options::response_timeout`]) → buffer (makes kube's stack clonable
//! for the retry) → kube's stack (base URI, auth, the connector with its
//! connect and read timeouts, an HTTP proxy from the kubeconfig or
//! `HTTPS_PROXY`/`NO_PROXY`).
//!
//! Timeouts, and why they never cut a healthy stream:
//! - connect: [`Options::connect_timeout`] per attempt;
//! - response head: a real API server ends a non-streaming request after
//!   60 s (`--request-timeout`) and sends a watch's or a log follow's head
//!   at once, so a head later than 70 s means the connection stalled;
//! - read: silence on a connection while a response is due or streaming.
//!   Watches (kube-runtime's watcher asks the server to end each watch
//!   after 290 s and itself gives up on a silent one after 295 s) and the
//!   sender's log follow (the mover prints progress every second) are
//!   never silent that long, so the read timeout is 300 s, counted from
//!   the request's write (`reset_reader_on_write`) so that the time a
//!   pooled connection sat idle does not count.

pub mod retry;

use std::time::Duration;

use tower::buffer::BufferLayer;
use tower::retry::RetryLayer;
use tower::timeout::TimeoutLayer;

/// How the client waits and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub retry: retry::Bounds,
    pub connect_timeout: Duration,
    /// The longest wait for an attempt's status line and headers.
    pub response_timeout: Duration,
    /// The longest silence on a connection with a response due.
    pub read_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retry: retry::Bounds::default(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(70),
            read_timeout: Duration::from_secs(300),
        }
    }
}

/// Requests waiting for kube's stack at once (as `kube::Client`'s own
/// buffer).
const BUFFER: usize = 1024;

/// Builds the client for `config` with `options`' timeouts and retries
/// (kube's own retry layer is turned off: ours replaces it).
pub fn build(mut config: kube::Config, options: &Options) -> kube::Result<kube::Client> {
    config.connect_timeout = Some(options.connect_timeout);
    config.read_timeout = Some(options.read_timeout);
    config.reset_reader_on_write = true;
    config.default_retry = false;
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&BufferLayer::new(BUFFER))
        .with_layer(&TimeoutLayer::new(options.response_timeout))
        .with_layer(&RetryLayer::new(retry::RetryPolicy {
            bounds: options.retry,
        }))
        .build())
}

/// Whether a failed call may succeed when made again later: the server
/// was busy or away (429, 5xx) or could not be reached. Everything else
/// (refusals, invalid objects, credentials, TLS) will fail the same way.
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            http::StatusCode::from_u16(status.code).is_ok_and(retry::retryable_status)
        }
        kube::Error::Service(e) => {
            e.is::<retry::GaveUp>() || retry::is_connection_error(e.as_ref())
        }
        kube::Error::HyperError(e) => retry::is_connection_error(e),
        _ => false,
    }
}
