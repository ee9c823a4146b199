//! Steps about the application itself: stopping it on the source before
//! the final copy (and restarting it on rollback), and waiting for it to
//! be ready on the destination after the restore.

use std::time::Duration;

use serde_json::json;

use super::{wait_until, Waiting};
use crate::engine::{Context, Outcome};
use crate::itinerary::StepName;
use crate::preflight;
use crate::workloads::{quiesce, users, verify};

/// Pods using a selected PVC that quiescing would not stop: no workload
/// controls them (a bare pod), so it would wait for them forever.
pub(super) fn unstoppable_users(inventory: &preflight::Inventory) -> Vec<String> {
    let mut found = Vec::new();
    for ns in &inventory.namespaces {
        let names = ns.pvc_names();
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
pub(super) async fn quiesce(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let count = each_namespace(ctx, "quiesced", async |ns| {
        quiesce::quiesce(ctx.source, ns).await
    })
    .await?;
    Ok(Outcome::Done(Some(format!("{count} workload(s) stopped"))))
}

/// Runs `pass` on every source namespace and records what it did, each
/// entry with its namespace, under `record`; returns how many entries.
async fn each_namespace<T: serde::Serialize>(
    ctx: &Context<'_>,
    record: &str,
    mut pass: impl AsyncFnMut(&str) -> anyhow::Result<Vec<T>>,
) -> anyhow::Result<usize> {
    let mut done = Vec::new();
    for mapping in &ctx.plan.namespaces {
        for entry in pass(&mapping.source).await? {
            let mut entry = json!(entry);
            entry["namespace"] = json!(mapping.source);
            done.push(entry);
        }
    }
    let count = done.len();
    ctx.update(|s| {
        s.records.insert(record.into(), json!(done));
    })
    .await?;
    Ok(count)
}

/// How long the PVCs' users may take to stop after quiescing.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(600);

/// Waits until no pod of the namespaces mounts a PVC being migrated.
pub(super) async fn wait_for_quiesce(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let inventory = match preflight::check(ctx.plan, ctx.source, ctx.destination).await {
        Ok(inventory) => inventory,
        Err(problems) => return Ok(Outcome::Failed(problems.to_string())),
    };
    let waited = wait_until(ctx, StepName::WaitForQuiesce, QUIESCE_TIMEOUT, async || {
        let mut running = Vec::new();
        for ns in &inventory.namespaces {
            let names = ns.pvc_names();
            for user in users::pods_using(ctx.source, &ns.mapping.source, &names).await? {
                let state = if user.terminating {
                    "terminating"
                } else {
                    &user.phase
                };
                running.push(format!(
                    "{}/{} ({state}, uses {})",
                    ns.mapping.source,
                    user.pod,
                    user.pvcs.join(", ")
                ));
            }
        }
        Ok(if running.is_empty() {
            Waiting::Ready(())
        } else {
            Waiting::Wait(format!("pods still using the PVCs: {}", running.join("; ")))
        })
    })
    .await?;
    Ok(match waited {
        Ok(()) => Outcome::Done(None),
        Err(last) => Outcome::Failed(last),
    })
}

/// Waits until every restored workload of the destination namespaces has
/// rolled out (pods Running and Ready), as `kubectl rollout status` would
/// say; on giving up names each workload and its pods' reasons.
pub(super) async fn verify(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let waited = wait_until(ctx, StepName::Verify, ctx.plan.verify_timeout, async || {
        let mut waiting = Vec::new();
        let mut failed = Vec::new();
        let mut total = 0;
        for mapping in &ctx.plan.namespaces {
            let readiness = verify::readiness(ctx.destination, &mapping.destination).await?;
            total += readiness.workloads.len();
            for workload in readiness.failed() {
                failed.push(format!("{}/{}", mapping.destination, workload));
            }
            for workload in readiness.progressing() {
                waiting.push(format!("{}/{}", mapping.destination, workload));
            }
        }
        Ok(if !failed.is_empty() {
            Waiting::Ready(Err(failed.join("; ")))
        } else if waiting.is_empty() {
            Waiting::Ready(Ok(total))
        } else {
            Waiting::Wait(format!("not ready yet: {}", waiting.join("; ")))
        })
    })
    .await?;
    Ok(match waited {
        Ok(Ok(total)) => Outcome::Done(Some(format!("{total} workload(s) ready"))),
        Ok(Err(failed)) => Outcome::Failed(format!("the application failed to start: {failed}")),
        Err(last) => Outcome::Failed(last),
    })
}

/// Gives the source application back exactly the values quiesce saved.
pub(super) async fn unquiesce(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let count = each_namespace(ctx, "unquiesced", async |ns| {
        quiesce::unquiesce(ctx.source, ns).await
    })
    .await?;
    Ok(Outcome::Done(Some(format!(
        "{count} workload(s) restarted"
    ))))
}
