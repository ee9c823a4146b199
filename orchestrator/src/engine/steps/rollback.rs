//! The destination side of a rollback: deleting everything the migration
//! created there. A destination namespace the migration created (it
//! carries [`MIGRATED_BY_LABEL`]) goes whole; in a namespace that existed
//! before, only what the migration put there goes: the objects Velero
//! restored for this plan (label `velero.io/restore-name`) and the PVCs
//! and ImageStreams the migration made (label [`MIGRATED_BY_LABEL`]).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::discovery::{verbs, Discovery, Scope};

use crate::engine::{Context, Outcome};
use crate::kubeops::{delete_and_wait, status_code};
use crate::names::MIGRATED_BY_LABEL;

/// How long a deleted namespace may take to go (its finalizers run).
const NAMESPACE_GONE: Duration = Duration::from_secs(300);
/// The label Velero puts on every object a restore creates.
const RESTORE_LABEL: &str = "velero.io/restore-name";

pub async fn delete_migrated(ctx: &Context<'_>) -> anyhow::Result<Outcome> {
    let client = &ctx.destination.client;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let restores = restore_names(ctx).await?;
    let mut deleted = Vec::new();
    let mut discovery = None;
    for mapping in &ctx.plan.namespaces {
        let ns = &mapping.destination;
        let Some(namespace) = namespaces.get_opt(ns).await? else {
            continue;
        };
        let ours = namespace
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MIGRATED_BY_LABEL))
            .is_some_and(|m| *m == ctx.plan.name);
        if ours {
            delete_and_wait(&namespaces, ns, NAMESPACE_GONE)
                .await
                .with_context(|| format!("deleting namespace {ns}"))?;
            deleted.push(format!("namespace {ns}"));
            continue;
        }
        if discovery.is_none() {
            discovery = Some(
                Discovery::new(client.clone())
                    .run()
                    .await
                    .context("discovering the destination's resource types")?,
            );
        }
        let Some(discovery) = &discovery else {
            continue;
        };
        let mut selectors = vec![format!("{MIGRATED_BY_LABEL}={}", ctx.plan.name)];
        selectors.extend(restores.iter().map(|r| format!("{RESTORE_LABEL}={r}")));
        for group in discovery.groups() {
            for (resource, caps) in group.recommended_resources() {
                if caps.scope != Scope::Namespaced
                    || !caps.supports_operation(verbs::LIST)
                    || !caps.supports_operation(verbs::DELETE)
                {
                    continue;
                }
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
                for selector in &selectors {
                    let found = match api.list(&ListParams::default().labels(selector)).await {
                        Ok(list) => list.items,
                        Err(e) if matches!(status_code(&e), Some(404 | 405)) => continue,
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("listing {} in {ns} ({selector})", resource.plural)
                            })
                        }
                    };
                    for object in found {
                        let name = object.metadata.name.clone().unwrap_or_default();
                        match api.delete(&name, &DeleteParams::background()).await {
                            Ok(_) => deleted.push(format!("{} {ns}/{name}", resource.kind)),
                            Err(e) if status_code(&e) == Some(404) => {}
                            Err(e) => {
                                return Err(e).with_context(|| {
                                    format!("deleting {} {ns}/{name}", resource.kind)
                                })
                            }
                        }
                    }
                }
            }
        }
    }
    let count = deleted.len();
    ctx.update(|s| {
        s.records
            .insert("deleted".into(), serde_json::json!(deleted));
    })
    .await?;
    Ok(Outcome::Done(Some(format!(
        "{count} object(s) and namespace(s) deleted"
    ))))
}

/// The names of the restores the plan's final runs made.
async fn restore_names(ctx: &Context<'_>) -> anyhow::Result<BTreeSet<String>> {
    Ok(ctx
        .runs()
        .await?
        .iter()
        .filter_map(|run| run.status.records.get("restore"))
        .filter_map(|restore| restore["name"].as_str().map(str::to_string))
        .collect())
}
