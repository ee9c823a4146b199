//! Migrations the controller drives: those naming a MigrationPlan in
//! `spec.planRef` (a Migration without one belongs to an `orchestrator
//! migrate` on someone's machine, which drives it itself).
//!
//! A reconcile never waits for a migration: the first one completes the
//! spec from the plan (name, namespaces, quiesce, the resolved plan, the
//! plan label), then the run is handed to the engine in a task of this
//! process, the same engine `orchestrator migrate` runs, which keeps every
//! step's state in the Migration's status. Later reconciles only look
//! whether that task still runs. A controller that restarts finds the
//! Migration unfinished and no task for it, and starts one: the engine
//! continues from the step the status names.
//!
//! A Migration the controller drives carries the finalizer [`FINALIZER`]
//! until it has finished: deleting a running one stops its engine where it
//! is and removes the transfer objects (senders, receivers, their
//! Services, Routes and Secrets) from both clusters before the object
//! goes.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt as _;
use serde_json::json;
use tokio::sync::oneshot;

use super::cluster::{self, MigrationCluster};
use super::plan::{self as plans, MigrationPlan};
use super::{Context, Run};
use crate::clusters::Cluster;
use crate::migration::store::Store;
use crate::migration::{MigrationSpec, MigrationStatus, Phase, RunKind, PLAN_LABEL};
use crate::plan::Plan;

/// How often a running migration's task is looked at.
const RECHECK: Duration = Duration::from_secs(30);
/// Kept on a driven Migration until its transfer objects are gone.
pub const FINALIZER: &str = "mover.io/transfers";

/// One pass over Migration `object`.
pub async fn reconcile(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, kube::Error> {
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    ctx.metrics.observe(&name, &object.data["status"]);
    let spec = match serde_json::from_value::<MigrationSpec>(object.data["spec"].clone()) {
        Ok(spec) => spec,
        Err(e) => {
            fail(&ctx, &namespace, &name, &format!("its spec: {e}")).await?;
            return Ok(Action::await_change());
        }
    };
    let Some(plan_name) = spec.plan_ref.clone() else {
        return Ok(Action::await_change());
    };
    let migrations = Api::<DynamicObject>::namespaced_with(
        ctx.host.clone(),
        &namespace,
        &crate::migration::resource(),
    );
    if object.metadata.deletion_timestamp.is_some() {
        if object.finalizers().iter().any(|f| f == FINALIZER) {
            stop(&ctx, &namespace, &name, &plan_name).await?;
            set_finalizer(&migrations, &object, false).await?;
        }
        ctx.metrics.forget(&name);
        return Ok(Action::await_change());
    }
    let status: MigrationStatus =
        serde_json::from_value(object.data["status"].clone()).unwrap_or_default();
    let started = object.data["status"]["started"].is_string();
    if started && status.phase != Phase::Running {
        // A finished run removed its transfer objects itself.
        set_finalizer(&migrations, &object, false).await?;
        return Ok(Action::await_change());
    }
    {
        let mut running = ctx.running.lock().await;
        if running
            .get(&name)
            .is_some_and(|run| !run.task.is_finished())
        {
            return Ok(Action::requeue(RECHECK));
        }
        running.remove(&name);
    }
    set_finalizer(&migrations, &object, true).await?;
    let prepared = prepare(&ctx, &namespace, &plan_name).await?;
    let (mut plan, source, destination) = match prepared {
        Ok(prepared) => prepared,
        Err(why) => {
            fail(&ctx, &namespace, &name, &why).await?;
            return Ok(Action::await_change());
        }
    };
    // The Migration's kind, not the plan, says whether this is a stage run.
    plan.stage = spec.kind == RunKind::Stage;
    if spec.plan_name.is_empty() {
        // The spec the engine reads, as `orchestrator migrate` records it.
        let patch = json!({
            "metadata": {"labels": {PLAN_LABEL: plan.name}},
            "spec": {
                "planName": plan.name,
                "namespaces": plan.namespaces.iter().map(|m| m.source.clone()).collect::<Vec<_>>(),
                "quiesce": plan.quiesce,
                "plan": plan,
            },
        });
        migrations
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let host = Cluster {
        side: "host",
        context: "(the controller's own)".into(),
        client: ctx.host.clone(),
    };
    let store = Store::open(&host);
    let run = name.clone();
    let permits = ctx.permits.clone();
    let metrics = ctx.metrics.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    // The engine's future borrows across its steps in ways the compiler
    // cannot prove `Send` for every lifetime (async closures), so it runs
    // on a thread of its own, driven by this runtime's handle.
    let runtime = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            metrics.waiting().inc();
            let permit = permits.acquire_owned().await;
            metrics.waiting().dec();
            metrics.running().inc();
            tokio::select! {
                result = crate::engine::resume(&plan, &source, &destination, store, &run) => {
                    match result {
                        Ok(report) => tracing::info!("migration {run} ended: {:?}", report.phase),
                        Err(e) => tracing::warn!("migration {run} could not run: {e}"),
                    }
                }
                _ = stopped => tracing::info!("migration {run} stopped where it was"),
            }
            metrics.running().dec();
            drop(permit);
        })
    });
    ctx.running.lock().await.insert(name, Run { task, stop });
    Ok(Action::requeue(RECHECK))
}

/// Adds or removes [`FINALIZER`] on `object`, if it is not so already.
/// The patch names the object's resourceVersion, so a concurrent change of
/// the finalizer list (another controller's) makes it fail and retry
/// rather than drop that change.
async fn set_finalizer(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    present: bool,
) -> Result<(), kube::Error> {
    let has = object.finalizers().iter().any(|f| f == FINALIZER);
    if has == present {
        return Ok(());
    }
    let mut finalizers: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.into());
    }
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": object.resource_version(),
    }});
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Stops the engine driving Migration `name` (if this process runs it)
/// and removes the transfer objects its plan's run may have left on both
/// clusters. A plan or cluster that cannot be read any more leaves
/// nothing to clean with: that is logged, and the Migration goes.
async fn stop(
    ctx: &Context,
    namespace: &str,
    name: &str,
    plan_name: &str,
) -> Result<(), kube::Error> {
    if let Some(run) = ctx.running.lock().await.remove(name) {
        let _ = run.stop.send(());
        let _ = run.task.await;
    }
    match prepare(ctx, namespace, plan_name).await? {
        Ok((plan, source, destination)) => {
            let leftovers = crate::cleanup::run(&plan, &source, &destination).await;
            if !leftovers.is_empty() {
                tracing::warn!(
                    "Migration {name} deleted; could not remove: {}",
                    leftovers.join("; ")
                );
            }
        }
        Err(why) => tracing::warn!("Migration {name} deleted; nothing cleaned up: {why}"),
    }
    Ok(())
}

/// The resolved plan and both clusters of MigrationPlan `plan_name`, or
/// why the migration cannot run. `Err` only when the host could not be
/// read (the reconcile is retried).
async fn prepare(
    ctx: &Context,
    namespace: &str,
    plan_name: &str,
) -> Result<Result<(Plan, Cluster, Cluster), String>, kube::Error> {
    let Some(resource) = Api::<MigrationPlan>::namespaced(ctx.host.clone(), namespace)
        .get_opt(plan_name)
        .await?
    else {
        return Ok(Err(format!(
            "MigrationPlan {namespace}/{plan_name} not found"
        )));
    };
    let plan = match plans::resolve(&resource) {
        Ok(plan) => plan,
        Err(errors) => return Ok(Err(errors.join("; "))),
    };
    let mut sides = Vec::new();
    for (side, cluster) in [
        ("source", &resource.spec.source_cluster),
        ("destination", &resource.spec.destination_cluster),
    ] {
        let Some(found) = Api::<MigrationCluster>::namespaced(ctx.host.clone(), namespace)
            .get_opt(cluster)
            .await?
        else {
            return Ok(Err(format!(
                "the {side} MigrationCluster {namespace}/{cluster} not found"
            )));
        };
        match cluster::connect(&found.spec, namespace, &ctx.host).await {
            Ok(client) => sides.push(Cluster {
                side,
                context: format!("MigrationCluster {cluster}"),
                client,
            }),
            Err(why) => {
                return Ok(Err(format!(
                    "the {side} MigrationCluster {namespace}/{cluster}: {why}"
                )))
            }
        }
    }
    let destination = sides.pop().expect("two sides");
    let source = sides.pop().expect("two sides");
    Ok(Ok((plan, source, destination)))
}

/// Marks a Migration that cannot run as Failed, saying why.
async fn fail(ctx: &Context, namespace: &str, name: &str, why: &str) -> Result<(), kube::Error> {
    let status = MigrationStatus {
        phase: Phase::Failed,
        errors: vec![why.to_string()],
        started: Some(crate::engine::now()),
        finished: Some(crate::engine::now()),
        ..MigrationStatus::default()
    };
    Api::<DynamicObject>::namespaced_with(
        ctx.host.clone(),
        namespace,
        &crate::migration::resource(),
    )
    .patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}
