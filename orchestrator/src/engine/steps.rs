//! What each step of an itinerary does. Each is idempotent: it looks at
//! the clusters and the Migration's status, does what is missing, and
//! returns an [`Outcome`] (or a transient error, retried by the engine).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::{rollback, Context, Outcome};
use crate::dim::ImageState;
use crate::itinerary::{Flags, StepName};
use crate::migration::RunKind;
use crate::report::PvcState;
use crate::workloads::{quiesce, users};
use crate::{cleanup, dim, dvm, preflight};

/// Runs `step` once.
pub async fn run(ctx: &Context<'_>, step: StepName) -> anyhow::Result<Outcome> {
    match step {
        StepName::Preflight => preflight(ctx).await,
        StepName::CopyImages => copy_images(ctx).await,
        StepName::Quiesce => quiesce(ctx).await,
        StepName::WaitForQuiesce => wait_for_quiesce(ctx).await,
        StepName::CopyVolumes => copy_volumes(ctx).await,
        StepName::Unquiesce => unquiesce(ctx).await,
        StepName::DeleteMigrated => rollback::delete_migrated(ctx).await,
        StepName::Cleanup => cleanup(ctx).await,
        other => Ok(Outcome::Failed(format!(
            "step {} is not available in this build",
            other.as_str()
        ))),
    }
}

/// Checks both clusters (changing nothing) and records the flags that
/// decide the rest of the itinerary.
async fn preflight(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    if ctx.kind == RunKind::Rollback {
        for cluster in [ctx.source, ctx.destination] {
            cluster.client.apiserver_version().await.map_err(|e| {
                anyhow::anyhow!("{} is not reachable: {e}", cluster.describe())
            })?;
        }
        return Ok(Outcome::Done(None));
    }
    let inventory = match preflight::check(ctx.plan, ctx.source, ctx.destination).await {
        Ok(inventory) => inventory,
        Err(problems) => return Ok(Outcome::Failed(problems.to_string())),
    };
    let final_run = ctx.kind == RunKind::Final;
    if final_run && ctx.plan.quiesce {
        let unstoppable = unstoppable_users(&inventory);
        if !unstoppable.is_empty() {
            return Ok(Outcome::Failed(format!(
                "these pods use PVCs being migrated and no controller would stop them when the \
                 application is quiesced: {}; delete them, or run with --no-quiesce (their PVCs \
                 are then copied as stage copies)",
                unstoppable.join(", ")
            )));
        }
    }
    let flags = Flags {
        images: ctx.plan.images.is_some(),
        pvcs: inventory.namespaces.iter().any(|ns| !ns.pvcs.is_empty()),
        resources: final_run && ctx.plan.resources,
        quiesce: final_run && ctx.plan.quiesce,
        hooks: Vec::new(),
    };
    ctx.update(|s| {
        s.records.insert("flags".into(), json!(flags));
    })
    .await?;
    Ok(Outcome::Done(None))
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
            errors
                .first()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        )))
    } else {
        Ok(Outcome::Done(Some(summary)))
    }
}

/// Direct volume migration of every selected PVC a final run has not
/// already copied.
async fn copy_volumes(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let inventory = match preflight::check(ctx.plan, ctx.source, ctx.destination).await {
        Ok(inventory) => inventory,
        Err(problems) => return Ok(Outcome::Failed(problems.to_string())),
    };
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
        .map(|p| {
            format!(
                "{}: {}",
                p.label(),
                p.error.as_deref().unwrap_or("failed")
            )
        })
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
        Ok(Outcome::Failed(format!("{summary}: {}", reasons.join("; "))))
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
        let names: Vec<String> = ns.pvcs.iter().map(|p| p.name().to_string()).collect();
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

/// Pods using a selected PVC that quiescing would not stop: no workload
/// controls them (a bare pod), so it would wait for them forever.
fn unstoppable_users(inventory: &preflight::Inventory) -> Vec<String> {
    let mut found = Vec::new();
    for ns in &inventory.namespaces {
        let names: Vec<String> = ns.pvcs.iter().map(|p| p.name().to_string()).collect();
        let uses = users::users(&ns.pods, &names);
        for pod in &ns.pods {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let controlled = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true));
            if !controlled && uses.iter().any(|u| u.pod == name) {
                found.push(format!("{}/{name}", ns.mapping.source));
            }
        }
    }
    found
}

/// Stops the source application, saving every original value on the
/// object itself, so a second pass (a resumed run) never overwrites it.
async fn quiesce(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let mut stopped = Vec::new();
    for mapping in &ctx.plan.namespaces {
        for q in quiesce::quiesce(ctx.source, &mapping.source).await? {
            stopped.push(json!({
                "namespace": mapping.source,
                "kind": q.kind,
                "name": q.name,
                "field": q.field,
                "saved": q.saved,
            }));
        }
    }
    let count = stopped.len();
    ctx.update(|s| {
        s.records.insert("quiesced".into(), json!(stopped));
    })
    .await?;
    Ok(Outcome::Done(Some(format!("{count} workload(s) stopped"))))
}

/// How long the PVCs' users may take to stop after quiescing.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often to look again.
const POLL: Duration = Duration::from_secs(2);

/// Waits until no pod of the namespaces mounts a PVC being migrated.
async fn wait_for_quiesce(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let inventory = match preflight::check(ctx.plan, ctx.source, ctx.destination).await {
        Ok(inventory) => inventory,
        Err(problems) => return Ok(Outcome::Failed(problems.to_string())),
    };
    let deadline = tokio::time::Instant::now() + QUIESCE_TIMEOUT;
    loop {
        let mut running = Vec::new();
        for ns in &inventory.namespaces {
            let names: Vec<String> = ns.pvcs.iter().map(|p| p.name().to_string()).collect();
            for user in users::pods_using(ctx.source, &ns.mapping.source, &names).await? {
                running.push(format!(
                    "{}/{} ({}, uses {})",
                    ns.mapping.source,
                    user.pod,
                    if user.terminating {
                        "terminating".to_string()
                    } else {
                        user.phase.clone()
                    },
                    user.pvcs.join(", ")
                ));
            }
        }
        if running.is_empty() {
            return Ok(Outcome::Done(None));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Outcome::Failed(format!(
                "after {}s these pods still use the PVCs: {}",
                QUIESCE_TIMEOUT.as_secs(),
                running.join("; ")
            )));
        }
        ctx.say(
            StepName::WaitForQuiesce,
            &format!("waiting for {}", running.join("; ")),
        )
        .await;
        tokio::time::sleep(POLL).await;
    }
}

/// Gives the source application back exactly the values quiesce saved.
async fn unquiesce(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let mut restored = Vec::new();
    for mapping in &ctx.plan.namespaces {
        for r in quiesce::unquiesce(ctx.source, &mapping.source).await? {
            restored.push(json!({
                "namespace": mapping.source,
                "kind": r.kind,
                "name": r.name,
                "field": r.field,
                "value": r.value,
            }));
        }
    }
    let count = restored.len();
    ctx.update(|s| {
        s.records.insert("unquiesced".into(), json!(restored));
    })
    .await?;
    Ok(Outcome::Done(Some(format!("{count} workload(s) restarted"))))
}
