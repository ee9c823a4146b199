//! `orchestrator controller`: the orchestrator as a controller in a host
//! cluster (DESIGN.md "One engine, two drivers"), reconciling its custom
//! resources with kube-runtime: watches, a work queue, requeues with
//! backoff.
//!
//! - [`cluster`]: `MigrationCluster`, a registered cluster and what the
//!   controller finds when it connects;
//! - [`plan`]: `MigrationPlan`, a plan over registered clusters, validated
//!   continuously;
//! - [`migration`]: Migrations naming a MigrationPlan, each run by the
//!   engine in a task of this process;
//! - [`conditions`]: status conditions with real transition times;
//! - [`leader`]: the Lease that lets one replica of several lead;
//! - [`metrics`] and [`serve`]: `/metrics`, `/healthz`, `/readyz`;
//! - the web console ([`crate::console`]) on a port of its own.
//!
//! Resources live in one namespace of the host cluster (`mover-system` by
//! default), as MTC keeps its resources in `openshift-migration`.

pub mod cluster;
pub mod conditions;
pub mod install;
pub mod leader;
pub mod metrics;
mod migration;
pub mod plan;
pub mod serve;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, CustomResourceExt as _};
use tokio::sync::{oneshot, Mutex, Semaphore};
use tokio::task::JoinHandle;

use cluster::MigrationCluster;
use plan::MigrationPlan;

/// What every reconcile may use.
pub struct Context {
    /// The host cluster, as the controller's own identity.
    pub host: kube::Client,
    /// The migrations this process runs, by name.
    running: Arc<Mutex<HashMap<String, Run>>>,
    /// How many of them may copy at once; the others wait their turn.
    permits: Arc<Semaphore>,
    metrics: Arc<metrics::Metrics>,
}

/// A migration this process drives: the engine's task, and what stops it.
struct Run {
    task: JoinHandle<()>,
    /// Sending (or dropping) it stops the engine where it is.
    stop: oneshot::Sender<()>,
}

/// How the controller runs.
pub struct Options {
    /// The namespace of its resources.
    pub namespace: String,
    /// Migrations copying at once.
    pub concurrency: usize,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub listen: SocketAddr,
    /// The web console, unless turned off: every replica serves it, the
    /// standby too (it only reads and writes resources, as the user).
    pub console: Option<crate::console::Options>,
}

/// The CustomResourceDefinitions of the controller's resources, generated
/// from their Rust types.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let migrations = serde_json::from_value(crate::migration::crd())
        .expect("the Migration CRD is a CustomResourceDefinition");
    vec![MigrationCluster::crd(), MigrationPlan::crd(), migrations]
}

/// The CRDs as `orchestrator crds` prints them (one YAML document each),
/// which `deploy/crds/controller.yaml` must equal.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// How long a new CRD may take to be served.
const CRD_ESTABLISHED: Duration = Duration::from_secs(30);

/// Applies the CRDs (server-side apply: a newer controller updates them)
/// when this identity may, and waits until the API serves each. A
/// controller running with `deploy/`'s least-privilege role may not write
/// CRDs: `orchestrator install` applied them, and it only waits.
pub async fn install_crds(host: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    let definitions: Api<CustomResourceDefinition> = Api::all(host.clone());
    let params = PatchParams::apply("mover-controller").force();
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        match definitions.patch(&name, &params, &Patch::Apply(&crd)).await {
            Ok(_) => {}
            Err(e) if crate::kubeops::status_code(&e) == Some(403) => {
                tracing::info!("not allowed to apply CRD {name}: waiting for it to be served");
            }
            Err(e) => return Err(e).with_context(|| format!("applying CRD {name}")),
        }
    }
    let deadline = tokio::time::Instant::now() + CRD_ESTABLISHED;
    let clusters: Api<MigrationCluster> = Api::namespaced(host.clone(), namespace);
    loop {
        match clusters.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("waiting for the CRDs to be served: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => {
                return Err(e).context(
                    "the controller's CRDs are not served (apply them with `orchestrator install`)",
                )
            }
        }
    }
}

/// Runs the controller until the process is stopped: serves its health
/// and metrics, waits to be elected leader, then reconciles until stopped
/// or until it loses the lease (an error: the process must end, so that
/// nothing it still drives races the new leader).
pub async fn run(host: kube::Client, options: Options) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    eprintln!(
        "serving /metrics, /healthz and /readyz on {}",
        listener.local_addr()?
    );
    let health = serve::Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = serve::serve(listener, health).await {
            tracing::error!("the metrics endpoint stopped: {e}");
        }
    });
    if let Some(console) = &options.console {
        serve_console(&host, console, &options.namespace).await;
    }
    install_crds(&host, &options.namespace).await?;
    ready.store(true, Ordering::Relaxed);

    let elector = leader::Elector::new(host.clone(), &options.namespace, leader::identity());
    eprintln!(
        "waiting to lead (Lease {}/{} as {})",
        options.namespace,
        leader::LEASE,
        elector.identity()
    );
    elector.acquire().await;
    eprintln!("leading");
    metrics.set_leader(true);
    let ctx = Arc::new(Context {
        host: host.clone(),
        running: Arc::default(),
        permits: Arc::new(Semaphore::new(options.concurrency.max(1))),
        metrics,
    });
    let namespace = options.namespace.as_str();
    let reconcilers = async {
        tokio::join!(
            clusters(&host, namespace, ctx.clone()),
            plans(&host, namespace, ctx.clone()),
            migrations(&host, namespace, ctx.clone())
        )
    };
    tokio::select! {
        _ = reconcilers => {
            elector.release().await;
            Ok(())
        }
        why = elector.hold() => anyhow::bail!("stopped leading: {why}"),
    }
}

/// Starts serving the web console on its own port. A port that cannot
/// be bound leaves the controller running without its console (said in
/// the log): reconciling matters more than the pages.
async fn serve_console(host: &kube::Client, options: &crate::console::Options, namespace: &str) {
    let listener = match tokio::net::TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(
                "not serving the console: listening on {}: {e}",
                options.listen
            );
            return;
        }
    };
    match listener.local_addr() {
        Ok(address) => eprintln!("serving the console on {address}"),
        Err(e) => tracing::warn!("the console's address: {e}"),
    }
    let console =
        crate::console::Console::new(host.clone(), options.host_config.clone(), namespace);
    tokio::spawn(async move {
        if let Err(e) = crate::console::serve(listener, console).await {
            tracing::error!("the console stopped: {e}");
        }
    });
}

/// Reconciles Migrations.
async fn migrations(host: &kube::Client, namespace: &str, ctx: Arc<Context>) {
    let resource = crate::migration::resource();
    let api = Api::<DynamicObject>::namespaced_with(host.clone(), namespace, &resource);
    Controller::new_with(api, watcher::Config::default(), resource)
        .shutdown_on_signal()
        .run(migration::reconcile, error_policy, ctx.clone())
        .for_each(|result| log_failure(&ctx, "Migration", result))
        .await;
}

/// Reconciles MigrationClusters; a Secret's change is a change of every
/// cluster that reads it.
async fn clusters(host: &kube::Client, namespace: &str, ctx: Arc<Context>) {
    let controller = Controller::new(
        Api::<MigrationCluster>::namespaced(host.clone(), namespace),
        watcher::Config::default(),
    );
    let store = controller.store();
    let by_secret = move |secret: Secret| {
        let name = secret.metadata.name.clone().unwrap_or_default();
        store
            .state()
            .into_iter()
            .filter(|cluster| cluster::uses_secret(cluster, &name))
            .map(|cluster| ObjectRef::from_obj(&*cluster))
            .collect::<Vec<_>>()
    };
    let secrets = Api::<Secret>::namespaced(host.clone(), namespace);
    controller
        .watches(secrets, watcher::Config::default(), by_secret)
        .shutdown_on_signal()
        .run(cluster::reconcile, error_policy, ctx.clone())
        .for_each(|result| log_failure(&ctx, "MigrationCluster", result))
        .await;
}

/// Reconciles MigrationPlans; a cluster's change (it became ready, or
/// stopped answering) is a change of every plan that uses it. The other
/// plans of a conflict see it at their next periodic validation.
async fn plans(host: &kube::Client, namespace: &str, ctx: Arc<Context>) {
    let controller = Controller::new(
        Api::<MigrationPlan>::namespaced(host.clone(), namespace),
        watcher::Config::default(),
    );
    let store = controller.store();
    let by_cluster = move |cluster: MigrationCluster| {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        store
            .state()
            .into_iter()
            .filter(|plan| {
                plan.spec.source_cluster == name || plan.spec.destination_cluster == name
            })
            .map(|plan| ObjectRef::from_obj(&*plan))
            .collect::<Vec<_>>()
    };
    let clusters = Api::<MigrationCluster>::namespaced(host.clone(), namespace);
    controller
        .watches(clusters, watcher::Config::default(), by_cluster)
        .shutdown_on_signal()
        .run(plan::reconcile, error_policy, ctx.clone())
        .for_each(|result| log_failure(&ctx, "MigrationPlan", result))
        .await;
}

/// Counts a reconcile of a `kind` resource, logging a failed one.
async fn log_failure<T, E: std::fmt::Display>(ctx: &Context, kind: &str, result: Result<T, E>) {
    ctx.metrics.reconciled(kind, result.is_err());
    if let Err(e) = result {
        tracing::warn!("reconcile of a {kind}: {e}");
    }
}

/// A reconcile that failed (the host's API refused the status update, or
/// was away) is tried again after a pause.
fn error_policy<K>(_: Arc<K>, error: &kube::Error, _: Arc<Context>) -> Action {
    tracing::warn!("reconcile failed: {error}");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_crds_are_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/crds/controller.yaml"
        );
        let checked_in = std::fs::read_to_string(path).unwrap();
        assert!(
            checked_in == super::crds_yaml().unwrap(),
            "deploy/crds/controller.yaml is stale: regenerate it with \
             `cargo run -p orchestrator -- crds > deploy/crds/controller.yaml`"
        );
    }
}
