//! The Velero steps: checking Velero on both sides, the source backup, the
//! destination's sight of it, the restore, and deleting the migration's
//! Velero objects on rollback. Backups and Restores are named after the
//! run (`crate::velero::backup::backup_name`), so a resumed run finds the
//! one it started and waits on it instead of creating a second.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use serde_json::{json, Value};

use super::{wait_until, Waiting};
use crate::engine::{Context, Outcome};
use crate::itinerary::StepName;
use crate::kubeops::create_if_missing;
use crate::manifests;
use crate::velero::backup::{backup_name, backup_spec, backup_visible, ensure_backup};
use crate::velero::cleanup::{cleanup, Cleanup};
use crate::velero::modifiers::{self, Rewrites};
use crate::velero::preflight::{self as velero_preflight, Needs};
use crate::velero::restore::{ensure_restore, prepare_modifiers, restore_name, restore_spec};
use crate::velero::results::{self, Fetch, Target};
use crate::velero::Phase;

/// How long Velero may take to answer preflight's version question.
const PREFLIGHT_LIMIT: Duration = Duration::from_secs(120);
/// How long a backup or a restore may take.
const RUN_LIMIT: Duration = Duration::from_secs(3600);
/// How long the destination's BSL sync may take to show the backup
/// (Velero syncs every minute by default).
const SYNC_LIMIT: Duration = Duration::from_secs(600);
/// How long deleting the Velero objects may take.
const DELETE_LIMIT: Duration = Duration::from_secs(300);

fn namespace_map(ctx: &Context<'_>) -> BTreeMap<String, String> {
    ctx.plan
        .namespaces
        .iter()
        .map(|m| (m.source.clone(), m.destination.clone()))
        .collect()
}

/// Velero installed, recent enough and sharing a storage location on
/// both sides; `Some(problems)` when not.
pub(super) async fn preflight(ctx: &Context<'_>) -> anyhow::Result<Option<String>> {
    let namespaces = namespace_map(ctx);
    let needs = Needs {
        migration: &ctx.run,
        namespaces: &namespaces,
        resource_modifiers: true,
    };
    let waited = wait_until(ctx, StepName::Preflight, PREFLIGHT_LIMIT, async || {
        let report =
            velero_preflight::check(ctx.source, ctx.destination, &ctx.plan.velero, &needs).await?;
        Ok(if !report.problems.is_empty() {
            Waiting::Ready(Some(
                report
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ))
        } else if report.pending.is_empty() {
            Waiting::Ready(None)
        } else {
            Waiting::Wait(format!("asking Velero: {}", report.pending.join("; ")))
        })
    })
    .await?;
    Ok(match waited {
        Ok(problems) => problems,
        Err(last) => Some(last),
    })
}

/// Waits for a Backup or Restore to end; `Done` with its counts, or
/// `Failed` naming Velero's reason and (PartiallyFailed) each resource's
/// error, unless the plan allows partial results.
async fn settle(
    ctx: &Context<'_>,
    step: StepName,
    target: Target,
    name: &str,
    mut observe: impl AsyncFnMut() -> anyhow::Result<Phase>,
) -> anyhow::Result<Outcome> {
    let what = match target {
        Target::Backup => "Backup",
        Target::Restore => "Restore",
    };
    let waited = wait_until(ctx, step, RUN_LIMIT, async || {
        let phase = observe().await?;
        Ok(if phase.is_final() {
            Waiting::Ready(phase)
        } else {
            Waiting::Wait(format!("{what} {name} is {}", phase.name()))
        })
    })
    .await?;
    let phase = match waited {
        Ok(phase) => phase,
        Err(last) => return Ok(Outcome::Failed(last)),
    };
    let cluster = match target {
        Target::Backup => ctx.source,
        Target::Restore => ctx.destination,
    };
    let messages = match &phase {
        Phase::Completed { warnings: 0 } => Vec::new(),
        Phase::Completed { .. } | Phase::PartiallyFailed { .. } => {
            let fetched = wait_until(ctx, step, PREFLIGHT_LIMIT, async || {
                Ok(
                    match results::fetch(cluster, &ctx.plan.velero, &ctx.run, target, name).await? {
                        Fetch::Ready(results) => Waiting::Ready(results),
                        Fetch::NotYet => Waiting::Wait(format!("reading the results of {name}")),
                    },
                )
            })
            .await?;
            match fetched {
                Ok(results) => results.messages(),
                Err(last) => {
                    ctx.say(step, &last).await;
                    Vec::new()
                }
            }
        }
        _ => Vec::new(),
    };
    let record = json!({
        "name": name,
        "phase": phase.name(),
        "details": phase,
        "messages": messages,
    });
    let key = what.to_ascii_lowercase();
    ctx.update(|s| {
        s.records.insert(key, record);
    })
    .await?;
    let errors: Vec<String> = messages
        .iter()
        .filter(|m| m.severity == results::Severity::Error)
        .map(|m| format!("{}: {}", m.scope, m.text))
        .collect();
    let warnings = messages.len() - errors.len();
    Ok(match phase {
        Phase::Completed { .. } => Outcome::Done(Some(format!(
            "{what} {name} Completed, {warnings} warning(s)"
        ))),
        Phase::PartiallyFailed { errors: count, .. } if ctx.plan.allow_partial => {
            Outcome::Done(Some(format!(
                "{what} {name} PartiallyFailed with {count} error(s), allowed by --allow-partial: {}",
                errors.join("; ")
            )))
        }
        Phase::PartiallyFailed { errors: count, .. } => Outcome::Failed(format!(
            "{what} {name} PartiallyFailed with {count} error(s): {} (--allow-partial carries on)",
            errors.join("; ")
        )),
        Phase::Failed { reason } => Outcome::Failed(format!("{what} {name} Failed: {reason}")),
        Phase::FailedValidation { errors } => Outcome::Failed(format!(
            "{what} {name} FailedValidation: {}",
            errors.join("; ")
        )),
        other => Outcome::Failed(format!("{what} {name} ended {}", other.name())),
    })
}

/// The initial backup of the source namespaces, before quiescing.
pub(super) async fn backup(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let cfg = &ctx.plan.velero;
    let name = backup_name(&ctx.run);
    let namespaces: Vec<String> = namespace_map(ctx).into_keys().collect();
    let spec = backup_spec(&namespaces, cfg);
    settle(ctx, StepName::Backup, Target::Backup, &name, async || {
        ensure_backup(ctx.source, cfg, &ctx.run, &name, spec.clone()).await
    })
    .await
}

/// Waits until the destination's Velero shows the backup, Completed.
pub(super) async fn wait_for_backup_sync(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let name = backup_name(&ctx.run);
    let waited = wait_until(ctx, StepName::WaitForBackupSync, SYNC_LIMIT, async || {
        Ok(
            match backup_visible(ctx.destination, &ctx.plan.velero, &name).await? {
                Some(phase) if phase.is_final() => Waiting::Ready(phase),
                Some(phase) => Waiting::Wait(format!(
                    "the destination sees backup {name} as {}",
                    phase.name()
                )),
                None => Waiting::Wait(format!(
                    "the destination's Velero has not synced backup {name} yet"
                )),
            },
        )
    })
    .await?;
    Ok(match waited {
        Ok(Phase::Completed { .. } | Phase::PartiallyFailed { .. }) => Outcome::Done(None),
        Ok(other) => Outcome::Failed(format!(
            "the destination sees backup {name} as {}",
            other.name()
        )),
        Err(last) => Outcome::Failed(last),
    })
}

/// The restore on the destination: namespaces first (labelled as the
/// migration's, so a rollback removes them), the resource modifiers that
/// rewrite images, Route hosts and storage classes, then the Restore.
pub(super) async fn restore(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let cfg = &ctx.plan.velero;
    let namespaces = namespace_map(ctx);
    let source_namespaces = Api::<Namespace>::all(ctx.source.client.clone());
    let destination_namespaces = Api::<Namespace>::all(ctx.destination.client.clone());
    for (from, to) in &namespaces {
        let source = source_namespaces
            .get(from)
            .await
            .with_context(|| format!("{}: reading namespace {from}", ctx.source.describe()))?;
        create_if_missing(
            &destination_namespaces,
            &manifests::destination_namespace(&source, to, &ctx.plan.name),
        )
        .await
        .with_context(|| format!("{}: creating namespace {to}", ctx.destination.describe()))?;
    }

    let sources: Vec<String> = namespaces.keys().cloned().collect();
    let objects = modifiers::source_objects(ctx.source, &sources).await?;
    let rules = modifiers::rules(&objects, &Rewrites::from_plan(ctx.plan));
    let name = restore_name(&ctx.run);
    let modifier = match rules.document() {
        Some(document) => {
            let configmap = modifiers::configmap(cfg, &ctx.run, &document)?;
            prepare_modifiers(ctx.destination, cfg, &name, &configmap).await?;
            configmap.metadata.name
        }
        None => None,
    };
    ctx.update(|s| {
        s.records.insert(
            "rewrites".into(),
            json!({
                "rules": rules.rules.len(),
                "skipped": rules.skipped,
                "configMap": modifier,
            }),
        );
    })
    .await?;

    let spec: Value = restore_spec(&backup_name(&ctx.run), &namespaces, modifier.as_deref());
    settle(ctx, StepName::Restore, Target::Restore, &name, async || {
        ensure_restore(ctx.destination, cfg, &ctx.run, &name, spec.clone()).await
    })
    .await
}

/// Deletes the Backups, Restores and modifier ConfigMaps of every run of
/// the plan, on both sides, the way `velero backup delete` does.
pub(super) async fn delete_objects(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let runs: Vec<String> = ctx.runs().await?.into_iter().map(|r| r.name).collect();
    let waited = wait_until(
        ctx,
        StepName::DeleteVeleroObjects,
        DELETE_LIMIT,
        async || {
            let mut pending = Vec::new();
            for run in &runs {
                if let Cleanup::Pending(left) =
                    cleanup(ctx.source, ctx.destination, &ctx.plan.velero, run).await?
                {
                    pending.extend(left);
                }
            }
            Ok(if pending.is_empty() {
                Waiting::Ready(())
            } else {
                Waiting::Wait(pending.join("; "))
            })
        },
    )
    .await?;
    Ok(match waited {
        Ok(()) => Outcome::Done(None),
        Err(last) => Outcome::Failed(last),
    })
}
