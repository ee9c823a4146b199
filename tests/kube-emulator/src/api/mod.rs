//! The Kubernetes HTTP API: discovery, CRUD, watch, patch, apply, status,
//! logs, exec, port-forward and finalizers over an in-memory store, served
//! over HTTPS.
//!
//! Every request is authenticated (`authn`: client certificates of the
//! cluster's CA, bearer tokens, ServiceAccount tokens from TokenRequests,
//! else anonymous) and authorized with RBAC before it is routed (`authz`:
//! the bootstrap policy, escalation prevention, and the access reviews
//! answered from the same rules), as a real API server does.
//!
//! Objects are kept as JSON (`serde_json::Value`) keyed by group, resource,
//! namespace and name: the server knows only what resources exist
//! (`resources`), the few defaults the cluster's controllers and the
//! orchestrator rely on (`defaults`), and the generic Kubernetes object
//! semantics (`objects`, `deletion`, `patch`, `apply`, `watch`). Every
//! create and update (dry runs too) goes through the admission chain
//! (`admission`: Pod Security, OpenShift SCCs, LimitRange, ResourceQuota)
//! as the `Policy` switches it.
//!
//! Deliberately simpler than the real server, because nothing here depends
//! on more: every write happens under one lock, so namespace deletion and
//! garbage collection finish within the request that starts them (objects
//! with finalizers still wait); a resource's versions share one store with
//! no conversion; server-side apply merges and prunes per field manager but
//! records no managedFields and never reports conflicts; protobuf bodies are
//! decoded for the built-in kinds only (`protobuf`); OpenAPI publishes
//! schemas but no strategic-merge operations (`openapi`); exec and
//! port-forward are served over WebSockets, not SPDY (`streams`); RBAC has no Node
//! authorizer, impersonation or webhook authenticators, and aggregated
//! ClusterRoles get their rules when they are evaluated (the stored ones
//! are filled once, at bootstrap).
//!
//! A test can make the server misbehave as real ones do, through the
//! [`Faults`] every cluster has (`Cluster::faults`): throttled and failed
//! requests, cut watches, restarts (`faults`).

mod admission;
mod apply;
mod authn;
mod authz;
mod defaults;
mod deletion;
mod discovery;
mod error;
mod faults;
mod handlers;
mod logs;
mod meta;
mod objects;
mod openapi;
mod patch;
mod protobuf;
mod resources;
mod scale;
mod selectors;
mod store;
mod streams;
mod table;
mod validation;
mod watch;

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::Value;

use crate::context::PodStreams;
use crate::policy::Policy;

pub use authn::pki::{Authority, KeyPairPem};
pub use authn::Authenticator;
pub use authz::{CONTROLLER_MANAGER, MASTERS};
pub use faults::{Failure, FaultCounts, Faults, Requests, Span};

/// How many change events a server keeps for watches to resume from.
pub const DEFAULT_HISTORY: usize = store::HISTORY;

/// The largest request body accepted (Secrets and ConfigMaps are at most
/// 1 MiB; Velero restores whole objects).
const MAX_BODY: usize = 16 << 20;

/// Serves the API over HTTPS on `listeners` (the first one's address is
/// the one discovery gives) until the task is aborted,
/// authenticating requests with `authenticator` (whose CA also signs the
/// serving certificate). Pod logs and exec go to `kubelet`; without
/// one, those requests get 404.
/// `faults` are injected into the requests (none until a test asks for
/// them).
pub async fn serve(
    listeners: Vec<tokio::net::TcpListener>,
    kubelet: Option<Arc<dyn PodStreams>>,
    policy: Policy,
    authenticator: Arc<Authenticator>,
    faults: Faults,
) -> anyhow::Result<()> {
    serve_with_history(
        listeners,
        kubelet,
        policy,
        authenticator,
        faults,
        DEFAULT_HISTORY,
    )
    .await
}

/// `serve`, keeping only `history` watch events: tests use a short history
/// to make a resuming watch fall off its end (410 Gone).
pub async fn serve_with_history(
    listeners: Vec<tokio::net::TcpListener>,
    kubelet: Option<Arc<dyn PodStreams>>,
    policy: Policy,
    authenticator: Arc<Authenticator>,
    faults: Faults,
    history: usize,
) -> anyhow::Result<()> {
    let address = listeners
        .first()
        .context("the API server needs a listener")?
        .local_addr()?
        .to_string();
    let tls = authenticator.authority().server_config()?;
    let mut state = objects::State::new(history, policy.clone());
    authz::bootstrap(&mut state, &policy);
    let server = Arc::new(Server {
        state: Mutex::new(state),
        kubelet,
        policy,
        authenticator,
        address,
    });
    let app = axum::Router::new()
        .fallback(handlers::handle)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(faults, faults::inject))
        .with_state(server);
    let listener = authn::tls::TlsListener::new(listeners, tls);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<authn::tls::Peer>(),
    )
    .await?;
    Ok(())
}

/// What every request handler shares.
struct Server {
    state: Mutex<objects::State>,
    kubelet: Option<Arc<dyn PodStreams>>,
    /// What this cluster enforces.
    policy: Policy,
    /// Who sent a request.
    authenticator: Arc<Authenticator>,
    /// `host:port` the server listens on (for `/api` discovery).
    address: String,
}

impl Server {
    /// The cluster state. Handlers hold it only for synchronous work,
    /// never across an await; a handler that panicked while holding it
    /// left it consistent enough to carry on (each write is one store
    /// operation), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, objects::State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lock().store.subscribe()
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
