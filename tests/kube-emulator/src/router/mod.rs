//! The OpenShift router of one emulated cluster, and the Service plumbing
//! that kube-proxy and a cloud load balancer would provide.
//!
//! Like a real router it is a client of the cluster's API: it watches
//! Routes, Services and Pods into local caches (kube-runtime reflectors)
//! and, whenever any of them changes, reconciles everything it is
//! responsible for. The emulated clusters hold a handful of objects, so a
//! full pass per change is cheap and keeps the logic level-triggered:
//!
//! - [`admission`]: which Routes are admitted for which host, their
//!   `status.ingress`, and their hosts in the shared DNS table;
//! - [`passthrough`]: TLS passthrough on `router_ip:443`, dispatched by SNI;
//! - [`services`]: listeners for LoadBalancer and NodePort Services;
//! - [`endpoints`]: which pods back a Service port, and the Endpoints
//!   objects that say so.
//!
//! A Route annotated `emulator.kube-migrate/admit: "false"` is ignored by
//! this router (no status, no DNS entry, no traffic), as a Route outside a
//! router's shard is: tests use it to make an endpoint unreachable.

mod admission;
mod endpoints;
pub(crate) mod host;
mod passthrough;
mod proxy;
mod services;
mod sni;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::Notify;

use crate::context::ClusterContext;

pub use admission::ADMIT_ANNOTATION;

/// The port Routes are served on.
const ROUTES_PORT: u16 = 443;

/// How long to wait before retrying a pass whose writes to the API failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The API resource of OpenShift Routes.
pub fn route_resource() -> ApiResource {
    ApiResource {
        group: "route.openshift.io".into(),
        version: "v1".into(),
        api_version: "route.openshift.io/v1".into(),
        kind: "Route".into(),
        plural: "routes".into(),
    }
}

/// The router's view of the cluster: caches fed by watches, and what the
/// last reconciliation decided.
pub(crate) struct Router {
    pub ctx: Arc<ClusterContext>,
    pub routes: Store<DynamicObject>,
    pub services: Store<Service>,
    pub pods: Store<Pod>,
    pub admission: admission::Admission,
    pub listeners: services::Listeners,
    pub endpoints: endpoints::EndpointsWriter,
}

/// Runs the router until the task is aborted. Fails only if the Routes
/// port cannot be bound: without it the router is useless.
pub async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    let address = SocketAddr::new(ctx.router_ip, ROUTES_PORT);
    let routes_listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the router's Routes port {address}"))?;

    let changed = Arc::new(Notify::new());
    let route_writer = reflector::store::Writer::new(route_resource());
    let (service_store, service_writer) = reflector::store();
    let (pod_store, pod_writer) = reflector::store();
    let router = Arc::new(Router {
        routes: route_writer.as_reader(),
        services: service_store,
        pods: pod_store,
        admission: admission::Admission::new(&ctx),
        listeners: services::Listeners::default(),
        endpoints: endpoints::EndpointsWriter::default(),
        ctx: ctx.clone(),
    });

    let client = ctx.client.clone();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(reflect(
        "routes",
        Api::<DynamicObject>::all_with(client.clone(), &route_resource()),
        route_writer,
        changed.clone(),
    ));
    tasks.spawn(reflect(
        "services",
        Api::all(client.clone()),
        service_writer,
        changed.clone(),
    ));
    tasks.spawn(reflect(
        "pods",
        Api::all(client),
        pod_writer,
        changed.clone(),
    ));
    tasks.spawn(passthrough::serve(routes_listener, router.clone()));
    tasks.spawn(reconcile_on_change(router, changed));
    while let Some(finished) = tasks.join_next().await {
        finished.context("a router task panicked")?;
    }
    Ok(())
}

/// Keeps `writer`'s cache in step with the API, signalling every change.
/// Watch errors are logged and retried with backoff, never fatal: the API
/// server may restart under a test.
async fn reflect<K>(
    what: &'static str,
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    changed: Arc<Notify>,
) where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    events
        .for_each(|event| {
            if let Err(error) = event {
                tracing::warn!("router: watching {what}: {error}");
            }
            changed.notify_one();
            std::future::ready(())
        })
        .await;
}

/// The reconcile loop: one full pass per burst of changes, and another
/// shortly after a pass that could not write everything.
async fn reconcile_on_change(router: Arc<Router>, changed: Arc<Notify>) {
    let filled = async {
        router.routes.wait_until_ready().await?;
        router.services.wait_until_ready().await?;
        router.pods.wait_until_ready().await
    };
    if filled.await.is_err() {
        tracing::error!("router: a watch ended before its cache was filled");
        return;
    }
    loop {
        let complete = router.reconcile().await;
        if complete {
            changed.notified().await;
        } else {
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

impl Router {
    /// One pass over everything the router is responsible for. Returns
    /// whether every write to the API succeeded.
    async fn reconcile(self: &Arc<Self>) -> bool {
        let routes = admission::reconcile(self).await;
        let services = services::reconcile(self).await;
        let endpoints = self.endpoints.reconcile(self).await;
        routes && services && endpoints
    }
}

/// Whether `error` is the API saying the object is gone: a write that
/// raced with a deletion, which the next pass will not retry.
fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found())
}

/// Locks one of the router's tables. A panic while one is held cannot
/// leave it half-updated in a way that matters, so poisoning is ignored.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
