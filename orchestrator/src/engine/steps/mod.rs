//! What each step of an itinerary does. Each is idempotent: it looks at
//! the clusters and the Migration's status, does what is missing, and
//! returns an [`Outcome`] (or a transient error, retried by the engine).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

mod application;
mod hooks;
mod rollback;
mod velero;

use super::{Context, Outcome};
use crate::dim::ImageState;
use crate::hooks::Phase as HookPhase;
use crate::itinerary::{Flags, StepName};
use crate::migration::RunKind;
use crate::report::PvcState;
use crate::workloads::users;
use crate::{cleanup, dim, dvm, preflight};

/// Runs `step` once.
pub async fn run(ctx: &Context<'_>, step: StepName) -> anyhow::Result<Outcome> {
    match step {
        StepName::Preflight => preflight(ctx).await,
        StepName::CopyImages => copy_images(ctx).await,
        StepName::PreBackupHooks => hooks::run(ctx, HookPhase::PreBackup).await,
        StepName::PostBackupHooks => hooks::run(ctx, HookPhase::PostBackup).await,
        StepName::PreRestoreHooks => hooks::run(ctx, HookPhase::PreRestore).await,
        StepName::PostRestoreHooks => hooks::run(ctx, HookPhase::PostRestore).await,
        StepName::Backup => velero::backup(ctx).await,
        StepName::WaitForBackupSync => velero::wait_for_backup_sync(ctx).await,
        StepName::Restore => velero::restore(ctx).await,
        StepName::DeleteVeleroObjects => velero::delete_objects(ctx).await,
        StepName::Quiesce => application::quiesce(ctx).await,
        StepName::WaitForQuiesce => application::wait_for_quiesce(ctx).await,
        StepName::Verify => application::verify(ctx).await,
        StepName::Unquiesce => application::unquiesce(ctx).await,
        StepName::CopyVolumes => copy_volumes(ctx).await,
        StepName::DeleteMigrated => rollback::delete_migrated(ctx).await,
        StepName::ReleaseVolumes => release_volumes(ctx).await,
        StepName::Cleanup => cleanup(ctx).await,
    }
}

/// Checks both clusters (changing nothing) and records the flags that
/// decide the rest of the itinerary.
async fn preflight(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    if ctx.kind == RunKind::Rollback {
        for cluster in [ctx.source, ctx.destination] {
            cluster
                .client
                .apiserver_version()
                .await
                .map_err(|e| anyhow::anyhow!("{} is not reachable: {e}", cluster.describe()))?;
        }
        return Ok(Outcome::Done(None));
    }
    let inventory = match preflight::check(ctx.plan, ctx.source, ctx.destination).await {
        Ok(inventory) => inventory,
        Err(problems) => return Ok(Outcome::Failed(problems.to_string())),
    };
    let final_run = ctx.kind == RunKind::Final;
    if final_run && ctx.plan.quiesce {
        let unstoppable = application::unstoppable_users(&inventory);
        if !unstoppable.is_empty() {
            return Ok(Outcome::Failed(format!(
                "these pods use PVCs being migrated and no controller would stop them when the \
                 application is quiesced: {}; delete them, or run with --no-quiesce (their PVCs \
                 are then copied as stage copies)",
                unstoppable.join(", ")
            )));
        }
    }
    let flags = Flags::for_plan(
        ctx.plan,
        ctx.kind,
        inventory.namespaces.iter().any(|ns| !ns.pvcs.is_empty()),
    );
    if flags.resources {
        if let Some(problems) = velero::preflight(ctx).await? {
            return Ok(Outcome::Failed(problems));
        }
        let standalone = standalone_replica_sets(ctx).await?;
        if !standalone.is_empty() {
            return Ok(Outcome::Failed(format!(
                "these ReplicaSets have no Deployment and the backup leaves every ReplicaSet out \
                 (Deployments recreate theirs), so they would not reach the destination: {}; \
                 run them from a Deployment, or migrate with --volumes-only",
                standalone.join(", ")
            )));
        }
    }
    let users = recorded_users(&inventory);
    ctx.update(|s| {
        s.records.insert("flags".into(), json!(flags));
        s.records.insert(USERS_RECORD.into(), users);
    })
    .await?;
    Ok(Outcome::Done(None))
}

/// The source's ReplicaSets no controller owns, as `namespace/name`.
async fn standalone_replica_sets(ctx: &Context<'_>) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for mapping in &ctx.plan.namespaces {
        let sets = Api::<ReplicaSet>::namespaced(ctx.source.client.clone(), &mapping.source)
            .list(&ListParams::default())
            .await?;
        found.extend(crate::velero::backup::standalone_replica_sets(&sets.items));
    }
    Ok(found)
}

/// Where preflight records the pods that use each PVC.
const USERS_RECORD: &str = "pvcUsers";

/// The pods using the selected PVCs, by namespace, as preflight saw them
/// (status and bookkeeping stripped). A final copy runs after quiescing,
/// when those pods are gone; its senders still run as their user and
/// beside their node.
fn recorded_users(inventory: &preflight::Inventory) -> Value {
    let mut by_namespace = serde_json::Map::new();
    for ns in &inventory.namespaces {
        let names = ns.pvc_names();
        let using = users::users(&ns.pods, &names);
        let pods: Vec<Value> = ns
            .pods
            .iter()
            .filter(|pod| {
                using
                    .iter()
                    .any(|u| Some(u.pod.as_str()) == pod.metadata.name.as_deref())
            })
            .map(|pod| {
                json!({
                    "metadata": {"name": pod.metadata.name, "namespace": pod.metadata.namespace},
                    "spec": pod.spec,
                    "status": {"phase": "Running"},
                })
            })
            .collect();
        by_namespace.insert(ns.mapping.source.clone(), Value::Array(pods));
    }
    Value::Object(by_namespace)
}

/// Adds to the inventory the recorded users of PVCs no live pod uses, so
/// that their senders are placed as when the application ran.
fn with_recorded_users(inventory: &mut preflight::Inventory, recorded: Option<&Value>) {
    let Some(recorded) = recorded else {
        return;
    };
    for ns in &mut inventory.namespaces {
        let names = ns.pvc_names();
        let live = users::users(&ns.pods, &names);
        let idle: Vec<&str> = users::unused(&names, &live);
        let saved: Vec<Pod> = recorded[&ns.mapping.source]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pod| serde_json::from_value(pod.clone()).ok())
            .collect();
        for pvc in idle {
            ns.pods.extend(
                saved
                    .iter()
                    .filter(|pod| users::claims(pod).contains(pvc))
                    .cloned(),
            );
        }
    }
}

/// Direct image migration. Blobs the destination has are not copied
/// again, so a resumed step costs only manifest checks.
async fn copy_images(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let Some(registries) = &ctx.plan.images else {
        return Ok(Outcome::Done(None));
    };
    let (images, errors) = dim::run(
        ctx.plan,
        registries,
        ctx.source,
        ctx.destination,
        &ctx.board,
    )
    .await;
    let failed = images
        .iter()
        .filter(|i| i.state == ImageState::Failed)
        .count();
    ctx.update(|s| {
        s.images = images
            .iter()
            .filter_map(|i| serde_json::to_value(i).ok())
            .collect();
        s.errors.extend(errors.iter().cloned());
    })
    .await?;
    let summary = format!("{} image(s), {failed} failed", images.len());
    if failed == 0 && errors.is_empty() {
        Ok(Outcome::Done(Some(summary)))
    } else if ctx.kind == RunKind::Final {
        // The restored workloads would run images that are not there.
        Ok(Outcome::Failed(format!(
            "{summary}{}",
            errors.first().map(|e| format!("; {e}")).unwrap_or_default()
        )))
    } else {
        Ok(Outcome::Done(Some(summary)))
    }
}

/// Direct volume migration of every selected PVC a final run has not
/// already copied.
async fn copy_volumes(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let mut inventory = match preflight::check(ctx.plan, ctx.source, ctx.destination).await {
        Ok(inventory) => inventory,
        Err(problems) => return Ok(Outcome::Failed(problems.to_string())),
    };
    with_recorded_users(&mut inventory, ctx.status().await.records.get(USERS_RECORD));
    let final_copies = if ctx.kind == RunKind::Final {
        final_copies(ctx, &inventory).await?
    } else {
        BTreeSet::new()
    };
    let errors = dvm::run(
        ctx.plan,
        ctx.source,
        ctx.destination,
        &inventory,
        &ctx.board,
        &final_copies,
    )
    .await;
    let pvcs = ctx.board.snapshot();
    let failed: Vec<String> = pvcs
        .iter()
        .filter(|p| p.state == PvcState::Failed)
        .map(|p| format!("{}: {}", p.label(), p.error.as_deref().unwrap_or("failed")))
        .collect();
    ctx.update(|s| {
        s.pvcs = pvcs
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect();
        s.errors.extend(errors.iter().cloned());
    })
    .await?;
    let summary = format!("{} PVC(s), {} failed", pvcs.len(), failed.len());
    if failed.is_empty() && errors.is_empty() {
        Ok(Outcome::Done(Some(summary)))
    } else if ctx.kind == RunKind::Final {
        let mut reasons = errors;
        reasons.extend(failed);
        Ok(Outcome::Failed(format!(
            "{summary}: {}",
            reasons.join("; ")
        )))
    } else {
        Ok(Outcome::Done(Some(summary)))
    }
}

/// Removes transfer objects on both sides; what could not be removed is
/// retried, then reported.
async fn cleanup(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let leftovers = cleanup::run(ctx.plan, ctx.source, ctx.destination).await;
    ctx.update(|s| {
        s.records.insert("leftovers".into(), json!(leftovers));
    })
    .await?;
    if leftovers.is_empty() {
        Ok(Outcome::Done(None))
    } else {
        anyhow::bail!("could not remove: {}", leftovers.join("; "))
    }
}

/// Removes the transfer pods on both sides once the volumes are copied;
/// pods that would not go are retried, then reported.
async fn release_volumes(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let leftovers = cleanup::release_volumes(ctx.plan, ctx.source, ctx.destination).await;
    if leftovers.is_empty() {
        Ok(Outcome::Done(None))
    } else {
        anyhow::bail!("could not remove: {}", leftovers.join("; "))
    }
}

/// The PVCs of a final run whose copies count as final: those no pod uses
/// any more. The others (a final run with `--no-quiesce`, a pod nobody
/// controls) are copied but recorded as stage copies, and said so.
async fn final_copies(
    ctx: &Context<'_>,
    inventory: &preflight::Inventory,
) -> anyhow::Result<BTreeSet<(String, String)>> {
    let mut finals = BTreeSet::new();
    let mut in_use = Vec::new();
    for ns in &inventory.namespaces {
        let names = ns.pvc_names();
        let users = users::pods_using(ctx.source, &ns.mapping.source, &names).await?;
        for pvc in &names {
            let using: Vec<&str> = users
                .iter()
                .filter(|u| u.pvcs.iter().any(|p| p == pvc))
                .map(|u| u.pod.as_str())
                .collect();
            if using.is_empty() {
                finals.insert((ns.mapping.source.clone(), pvc.clone()));
            } else {
                in_use.push(format!(
                    "{}/{pvc} (used by {})",
                    ns.mapping.source,
                    using.join(", ")
                ));
            }
        }
    }
    if !in_use.is_empty() {
        ctx.say(
            StepName::CopyVolumes,
            &format!(
                "copied while in use, recorded as stage copies: {}",
                in_use.join("; ")
            ),
        )
        .await;
    }
    Ok(finals)
}

/// What a [`wait_until`] check found.
pub(super) enum Waiting<T> {
    Ready(T),
    /// Not yet; the text says what is awaited (shown live, and in the
    /// failure when the time is up).
    Wait(String),
}

/// How often a waiting step looks again.
const POLL: Duration = Duration::from_secs(2);

/// Runs `check` every [`POLL`] until it is ready, saying on the step what
/// it waits for whenever that changes. `Ok(Err(last))` when `limit`
/// passed first; `Err` for a transient failure of `check` (the engine
/// retries the step).
pub(super) async fn wait_until<T>(
    ctx: &Context<'_>,
    step: StepName,
    limit: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Waiting<T>>,
) -> anyhow::Result<Result<T, String>> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut said = String::new();
    loop {
        match check().await? {
            Waiting::Ready(value) => return Ok(Ok(value)),
            Waiting::Wait(what) => {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Err(format!("gave up after {}s: {what}", limit.as_secs())));
                }
                if what != said {
                    ctx.say(step, &what).await;
                    said = what;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}
