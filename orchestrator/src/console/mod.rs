//! The web console: pages over the controller's resources, served by every
//! controller replica on its own port (`--console-listen`, default
//! `0.0.0.0:9090`), beside the metrics endpoint ([`crate::controller::serve`]).
//!
//! The console holds no state of its own and acts with the user's rights,
//! not the controller's: the user logs in with a bearer token of the host
//! cluster, kept in an HttpOnly cookie, and every read, write and watch of
//! a `mover.io` resource goes to the host's API server with that token, so
//! RBAC decides what the user sees and may do. The one exception is the
//! inventory of a registered cluster (its namespaces and PVCs, offered by
//! the plan form): the user must be allowed to read the MigrationCluster,
//! and the controller then lists with its stored credential for that
//! cluster, as MTC's console does ([`inventory`]).
//!
//! - [`assets`]: the pages (plain HTML, CSS and ES modules embedded in the
//!   binary: nothing to build, nothing fetched from elsewhere) and the
//!   security headers every answer carries;
//! - [`auth`]: login, logout, the session cookie, the per-user client and
//!   the CSRF guard;
//! - [`api`]: the JSON routes that read and write resources;
//! - [`watch`]: server-sent events fed by watches made with the user's
//!   token, so pages follow the resources live;
//! - [`inventory`]: namespaces and PVCs of registered clusters;
//! - [`error`]: how a failure reaches the page (status, message, fields).

mod api;
mod assets;
mod auth;
mod error;
mod inventory;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::Router;

/// Where the console listens, unless turned off.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9090";

/// How the controller serves the console.
pub struct Options {
    pub listen: SocketAddr,
    /// The host cluster's configuration, whose credentials each user's
    /// token replaces.
    pub host_config: kube::Config,
}

/// What every console route may use.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    /// The namespace of the controller's resources.
    namespace: String,
    /// The host cluster as the controller: only for reading registered
    /// clusters' credentials ([`inventory`]).
    host: kube::Client,
    /// Users' clients, built from the host's configuration with the
    /// user's token in place of the controller's credentials.
    sessions: auth::Sessions,
}

impl Console {
    /// A console over the resources in `namespace` of the host cluster
    /// that `host_config` reaches (as the controller, through `host`).
    pub fn new(host: kube::Client, host_config: kube::Config, namespace: &str) -> Self {
        Console {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                host,
                sessions: auth::Sessions::new(host_config),
            }),
        }
    }

    fn namespace(&self) -> &str {
        &self.inner.namespace
    }
}

/// The console's routes: the pages' paths answer the one page (its script
/// routes on the path), `/assets/*` the scripts and styles, `/api/*` JSON
/// and event streams.
pub fn router(console: Console) -> Router {
    let api = Router::new()
        .route("/session", get(auth::session))
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/itineraries", get(api::itineraries))
        .route("/plans", post(api::create_plan))
        .route("/plans/{name}/runs", post(api::start_run))
        .route("/migrations/{name}", delete(api::cancel))
        .route("/clusters/{name}/namespaces", get(inventory::namespaces))
        .route("/clusters/{name}/pvcs", get(inventory::pvcs))
        .route("/watch/{kind}", get(watch::watch))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn(auth::csrf_guard));
    let mut pages = Router::new();
    for path in assets::PAGES {
        pages = pages.route(path, get(assets::index));
    }
    pages
        .route("/assets/{*file}", get(assets::file))
        .route("/favicon.ico", get(assets::favicon))
        .nest("/api", api)
        .layer(axum::middleware::map_response(assets::security_headers))
        .with_state(console)
}

/// Serves the console on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, console: Console) -> std::io::Result<()> {
    axum::serve(listener, router(console)).await
}

/// `--console-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        if value == "off" {
            return Ok(Listen(None));
        }
        value
            .parse()
            .map(|address| Listen(Some(address)))
            .map_err(|e| format!("{value:?} is neither an address (host:port) nor `off`: {e}"))
    }
}
