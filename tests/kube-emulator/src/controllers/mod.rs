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

pub(crate) use pods::selects;
pub use schedule::Schedule;

/// Runs every workload controller on a thread and runtime of its own,
/// with its own client of the API server made from `config` (which
/// authenticates as `system:kube-controller-manager`), as
/// kube-controller-manager is a process of its own: its watches and
/// reconciles then never compete with the rest of the cluster (the router
/// on a test's single-threaded runtime) for one thread. Stops when this
/// future is dropped (the cluster's task aborted).
pub async fn run_apart(ctx: Arc<ClusterContext>, config: kube::Config) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("controllers-{}", ctx.name))
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| {
                    runtime.block_on(async move {
                        let own = Arc::new(ClusterContext {
                            name: ctx.name.clone(),
                            client: kube::Client::try_from(config)?,
                            state_dir: ctx.state_dir.clone(),
                            network: ctx.network.clone(),
                            router_ip: ctx.router_ip,
                            apps_domain: ctx.apps_domain.clone(),
                            policy: ctx.policy.clone(),
                            api_server: ctx.api_server.clone(),
                            shared: ctx.shared.clone(),
                        });
                        drop(ctx);
                        tokio::select! {
                            result = run(own) => result,
                            _ = stopped => Ok(()),
                        }
                    })
                });
            let _ = done.send(result);
        })?;
    // Dropped with this future, which ends the thread's run.
    let _stop = stop;
    finished
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the controllers' thread died")))
}

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
