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
//! - [`conditions`]: status conditions with real transition times.
//!
//! Resources live in one namespace of the host cluster (`mover-system` by
//! default), as MTC keeps its resources in `openshift-migration`.

pub mod cluster;
pub mod conditions;
mod migration;
pub mod plan;

use std::collections::HashMap;
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
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinHandle;

use cluster::MigrationCluster;
use plan::MigrationPlan;

/// What every reconcile may use.
pub struct Context {
    /// The host cluster, as the controller's own identity.
    pub host: kube::Client,
    /// The migrations this process runs, by name.
    running: Arc<Mutex<HashMap<String, JoinHandle<()>>>>,
    /// How many of them may copy at once; the others wait their turn.
    permits: Arc<Semaphore>,
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
/// and waits until the API serves each.
pub async fn install_crds(host: &kube::Client) -> anyhow::Result<()> {
    let definitions: Api<CustomResourceDefinition> = Api::all(host.clone());
    let params = PatchParams::apply("mover-controller").force();
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        definitions
            .patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
    }
    let deadline = tokio::time::Instant::now() + CRD_ESTABLISHED;
    let clusters: Api<MigrationCluster> = Api::all(host.clone());
    loop {
        match clusters.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("waiting for the CRDs to be served: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => return Err(e).context("the CRDs were applied but are not served"),
        }
    }
}

/// Runs the controller for the resources of `namespace` until the process
/// is stopped, running at most `concurrency` migrations at once.
pub async fn run(host: kube::Client, namespace: &str, concurrency: usize) -> anyhow::Result<()> {
    install_crds(&host).await?;
    let ctx = Arc::new(Context {
        host: host.clone(),
        running: Arc::default(),
        permits: Arc::new(Semaphore::new(concurrency.max(1))),
    });
    tokio::join!(
        clusters(&host, namespace, ctx.clone()),
        plans(&host, namespace, ctx.clone()),
        migrations(&host, namespace, ctx)
    );
    Ok(())
}

/// Reconciles Migrations.
async fn migrations(host: &kube::Client, namespace: &str, ctx: Arc<Context>) {
    let resource = crate::migration::resource();
    let api = Api::<DynamicObject>::namespaced_with(host.clone(), namespace, &resource);
    Controller::new_with(api, watcher::Config::default(), resource)
        .shutdown_on_signal()
        .run(migration::reconcile, error_policy, ctx)
        .for_each(log_failure)
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
        .run(cluster::reconcile, error_policy, ctx)
        .for_each(log_failure)
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
        .run(plan::reconcile, error_policy, ctx)
        .for_each(log_failure)
        .await;
}

async fn log_failure<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(e) = result {
        tracing::warn!("reconcile: {e}");
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
