//! The workload controllers of kube-controller-manager (and OpenShift's
//! DeploymentConfig controller), each a kube-runtime controller that talks
//! to the cluster's API server over HTTP like the real ones. They only use
//! the API, so they run in clusters without Docker too (where pods are
//! created but never run).
//!
//! - `replicaset` and `replicationcontroller`: keep `spec.replicas` pods,
//!   through the shared core in `replicas`;
//! - `deployment`: ReplicaSets per pod template, RollingUpdate and
//!   Recreate rollouts, history, the status `kubectl rollout status` reads;
//! - `deploymentconfig`: OpenShift DeploymentConfigs through
//!   ReplicationControllers `<dc>-<version>`;
//! - `statefulset`: ordinal pods with their claims from
//!   volumeClaimTemplates;
//! - `job` and `cronjob` (with `schedule`, the cron expression parser);
//! - `daemonset`: one pod per matching node;
//! - shared helpers: `pods` (selectors, pod predicates, pods from
//!   templates), `owners` (ownerReferences, adoption and release) and
//!   `reconcile` (errors, retries, status writes, Events, template hashes).

mod cronjob;
mod daemonset;
mod deployment;
mod deploymentconfig;
mod job;
mod owners;
mod pods;
mod reconcile;
mod replicas;
mod replicaset;
mod replicationcontroller;
mod schedule;
mod statefulset;

use std::sync::Arc;

use crate::context::ClusterContext;

pub use schedule::Schedule;

/// Runs every workload controller until the task is aborted.
pub async fn run(ctx: Arc<ClusterContext>) -> anyhow::Result<()> {
    tokio::try_join!(
        replicaset::run(ctx.clone()),
        replicationcontroller::run(ctx.clone()),
        deployment::run(ctx.clone()),
        deploymentconfig::run(ctx.clone()),
        statefulset::run(ctx.clone()),
        job::run(ctx.clone()),
        cronjob::run(ctx.clone()),
        daemonset::run(ctx),
    )?;
    anyhow::bail!("the workload controllers stopped")
}
