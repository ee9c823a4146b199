//! Restores: recreating a backup's objects in this cluster.
//!
//! As Velero does: the Restore is validated first (its backup must exist
//! here, Completed or PartiallyFailed); objects are filtered by the
//! Restore's own namespace/resource lists and label selector, moved to
//! their mapped namespaces, reset (server-set metadata, owner references
//! and status removed; `velero.io/backup-name` and `velero.io/restore-name`
//! labels added; per-kind cleanups such as a Service's cluster IP) and
//! created namespaces first, then in Velero's resource priority order. An
//! object that already exists is left alone with a warning when it
//! differs (or updated, with `existingResourcePolicy: update`); one that
//! cannot be created is an error, which makes the restore
//! PartiallyFailed. The per-object messages go to the restore's results
//! file in the bucket.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, TypeMeta,
};
use kube::core::{Selector, SelectorExt};
use kube::discovery::{Discovery, Scope};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::bucket::{Bucket, Item};
use super::filter::IncludesExcludes;
use super::{backups, fail_validation, now, patch_status, phase, restores, Messages};
use crate::context::ClusterContext;

/// Resources Velero never restores.
const NEVER_RESTORED: &[&str] = &[
    "nodes",
    "events",
    "events.events.k8s.io",
    "backups.velero.io",
    "restores.velero.io",
    "resticrepositories.velero.io",
    "backuprepositories.velero.io",
    "csinodes.storage.k8s.io",
    "volumeattachments.storage.k8s.io",
];

const CRDS: &str = "customresourcedefinitions.apiextensions.k8s.io";

/// Velero's default restore order; everything else follows, by resource
/// name.
const PRIORITIES: &[&str] = &[
    CRDS,
    "namespaces",
    "storageclasses.storage.k8s.io",
    "persistentvolumes",
    "persistentvolumeclaims",
    "serviceaccounts",
    "secrets",
    "configmaps",
    "limitranges",
    "pods",
    "replicasets.apps",
    "endpoints",
    "services",
];

const BACKUP_NAME_LABEL: &str = "velero.io/backup-name";
const RESTORE_NAME_LABEL: &str = "velero.io/restore-name";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestoreSpec {
    backup_name: Option<String>,
    included_namespaces: Option<Vec<String>>,
    excluded_namespaces: Option<Vec<String>>,
    included_resources: Option<Vec<String>>,
    excluded_resources: Option<Vec<String>>,
    namespace_mapping: Option<BTreeMap<String, String>>,
    label_selector: Option<LabelSelector>,
    #[serde(rename = "restorePVs")]
    restore_pvs: Option<bool>,
    include_cluster_resources: Option<bool>,
    existing_resource_policy: Option<String>,
}

/// How a restore went.
#[derive(Default)]
struct Outcome {
    total: usize,
    restored: usize,
    errors: Messages,
    warnings: Messages,
}

/// Processes one new Restore to its final phase.
pub(super) async fn run(ctx: &ClusterContext, restore: DynamicObject) {
    let api = restores(ctx);
    let name = restore.name_any();
    let spec: RestoreSpec =
        match serde_json::from_value(restore.data.get("spec").cloned().unwrap_or(json!({}))) {
            Ok(spec) => spec,
            Err(error) => {
                return fail_validation(&api, &name, vec![format!("invalid spec: {error}")]).await
            }
        };
    let (backup, selector) = match validate(ctx, &spec).await {
        Ok(valid) => valid,
        Err(problems) => return fail_validation(&api, &name, problems).await,
    };
    let started = now();
    let status = json!({ "phase": "InProgress", "startTimestamp": started });
    if let Err(error) = patch_status(&api, &name, status).await {
        tracing::warn!("velero: starting restore {name}: {error}");
        return;
    }

    let mut status = match restore_items(ctx, &name, &backup, &spec, selector.as_ref()).await {
        Ok(outcome) => {
            let phase = if outcome.errors.count() > 0 {
                "PartiallyFailed"
            } else {
                "Completed"
            };
            let results = json!({ "errors": outcome.errors, "warnings": outcome.warnings });
            if let Err(error) =
                Bucket(&ctx.shared.velero_bucket).write_restore_results(&name, &results)
            {
                tracing::warn!("velero: storing the results of restore {name}: {error:#}");
            }
            for message in outcome
                .errors
                .namespaces
                .values()
                .flatten()
                .chain(&outcome.errors.cluster)
            {
                tracing::warn!("velero: restore {name}: {message}");
            }
            json!({
                "phase": phase,
                "errors": outcome.errors.count(),
                "warnings": outcome.warnings.count(),
                "progress": { "totalItems": outcome.total, "itemsRestored": outcome.restored },
            })
        }
        Err(error) => json!({ "phase": "Failed", "failureReason": format!("{error:#}") }),
    };
    status["startTimestamp"] = started;
    status["completionTimestamp"] = now();
    tracing::info!("velero: restore {name} finished: {status}");
    if let Err(error) = patch_status(&api, &name, status).await {
        tracing::warn!("velero: recording the end of restore {name}: {error}");
    }
}

/// The backup to restore and the label selector, or why the Restore
/// cannot run.
async fn validate(
    ctx: &ClusterContext,
    spec: &RestoreSpec,
) -> Result<(String, Option<Selector>), Vec<String>> {
    let backup = match spec.backup_name.as_deref() {
        Some(backup) if !backup.is_empty() => backup.to_string(),
        _ => return Err(vec!["either a backup or schedule must be specified as a source for the restore, but not both".into()]),
    };
    match backups(ctx).get_opt(&backup).await {
        Ok(Some(object)) => match phase(&object) {
            "Completed" | "PartiallyFailed" => {}
            other => {
                return Err(vec![format!(
                    "backup {backup} is in phase {other:?}; only Completed or PartiallyFailed backups can be restored"
                )])
            }
        },
        Ok(None) => return Err(vec![format!("Error retrieving backup: backup.velero.io \"{backup}\" not found")]),
        Err(error) => return Err(vec![format!("Error retrieving backup {backup}: {error}")]),
    }
    let selector = spec
        .label_selector
        .clone()
        .map(Selector::try_from)
        .transpose()
        .map_err(|error| vec![format!("invalid labelSelector: {error}")])?;
    Ok((backup, selector))
}

async fn restore_items(
    ctx: &ClusterContext,
    restore: &str,
    backup: &str,
    spec: &RestoreSpec,
    selector: Option<&Selector>,
) -> anyhow::Result<Outcome> {
    let bucket = Bucket(&ctx.shared.velero_bucket);
    anyhow::ensure!(
        bucket.has_backup(backup),
        "backup {backup} is not in the backup storage location"
    );
    let items = bucket
        .read_items(backup)
        .with_context(|| format!("reading backup {backup}"))?;
    let mut discovery = discover(ctx).await?;

    let namespaces = IncludesExcludes::new(
        spec.included_namespaces.as_ref(),
        spec.excluded_namespaces.as_ref(),
    );
    let resources = IncludesExcludes::new(
        spec.included_resources.as_ref(),
        spec.excluded_resources.as_ref(),
    );
    let mapping = spec.namespace_mapping.clone().unwrap_or_default();
    let map = |namespace: &str| {
        mapping
            .get(namespace)
            .cloned()
            .unwrap_or_else(|| namespace.to_string())
    };
    let include_cluster = spec.include_cluster_resources.unwrap_or(true);
    let restore_pvs = spec.restore_pvs.unwrap_or(true);
    let update = spec.existing_resource_policy.as_deref() == Some("update");

    let selected: Vec<&Item> = items
        .iter()
        .filter(|item| {
            let object = &item.object;
            let names = resource_names_of(item);
            if NEVER_RESTORED.contains(&item.resource.as_str()) || !resources.includes(&names) {
                return false;
            }
            if item.resource == "persistentvolumes" && !restore_pvs {
                return false;
            }
            if item.resource == "pods" && matches!(phase(object), "Succeeded" | "Failed") {
                return false;
            }
            let in_scope = match object.namespace() {
                Some(namespace) => namespaces.includes_name(&namespace),
                // Namespace objects come with their namespaces.
                None if item.resource == "namespaces" => {
                    namespaces.includes_name(&object.name_any())
                }
                None => include_cluster,
            };
            let labelled = item.resource == "namespaces"
                || selector.is_none_or(|s| s.matches(object.labels()));
            in_scope && labelled
        })
        .collect();
    let restored_volumes: HashSet<String> = selected
        .iter()
        .filter(|item| item.resource == "persistentvolumes")
        .map(|item| item.object.name_any())
        .collect();

    let mut outcome = Outcome {
        total: selected.len(),
        ..Outcome::default()
    };

    // Namespaces first: every target namespace, from its backed-up object
    // when there is one.
    let mut targets: BTreeMap<String, Option<&Item>> = BTreeMap::new();
    for item in &selected {
        if let Some(namespace) = item.object.namespace() {
            targets.entry(map(&namespace)).or_insert(None);
        }
    }
    for item in selected.iter().filter(|item| item.resource == "namespaces") {
        targets.insert(map(&item.object.name_any()), Some(item));
    }
    let namespace_resource = ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&());
    for (target, item) in &targets {
        let mut object = match item {
            Some(item) => reset(&item.object),
            None => serde_json::from_value(
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": {} }),
            )?,
        };
        object.metadata.name = Some(target.clone());
        label(&mut object, backup, restore);
        let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &namespace_resource);
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            // An existing namespace is used as it is, silently, as Velero does.
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(error) => {
                outcome
                    .errors
                    .add(None, format!("namespaces {target}: {error}"));
                continue;
            }
        }
        if item.is_some() {
            outcome.restored += 1;
        }
    }

    let mut ordered: Vec<&Item> = selected
        .into_iter()
        .filter(|item| item.resource != "namespaces")
        .collect();
    ordered.sort_by_key(|item| {
        let priority = PRIORITIES
            .iter()
            .position(|p| *p == item.resource)
            .unwrap_or(PRIORITIES.len());
        (
            priority,
            item.resource.clone(),
            item.object.namespace(),
            item.object.name_any(),
        )
    });
    let mut new_resources = false;
    for item in ordered {
        if new_resources && item.resource != CRDS {
            // The resources of the CRDs just restored are served now.
            discovery = discover(ctx).await?;
            new_resources = false;
        }
        let target_namespace = item.object.namespace().map(|ns| map(&ns));
        let describe = format!("{} {}", item.resource, item.object.name_any());
        let result = restore_one(
            ctx,
            &discovery,
            item,
            target_namespace.as_deref(),
            &restored_volumes,
            backup,
            restore,
            update,
        )
        .await;
        match result {
            Ok(Restored::Created | Restored::Updated | Restored::Unchanged) => {
                new_resources |= item.resource == CRDS;
                outcome.restored += 1
            }
            Ok(Restored::Exists(message)) => outcome.warnings.add(
                target_namespace.as_deref(),
                format!("{describe}: {message}"),
            ),
            Err(error) => outcome.errors.add(
                target_namespace.as_deref(),
                format!("{describe}: {error:#}"),
            ),
        }
    }
    Ok(outcome)
}

async fn discover(ctx: &ClusterContext) -> anyhow::Result<Discovery> {
    Discovery::new(ctx.client.clone())
        .run()
        .await
        .context("discovering the API's resources")
}

/// What became of one object.
enum Restored {
    Created,
    /// It existed and `existingResourcePolicy: update` updated it.
    Updated,
    /// It existed, identical to the backed-up version.
    Unchanged,
    /// It existed, different, and was left alone: a warning.
    Exists(String),
}

#[allow(clippy::too_many_arguments)]
async fn restore_one(
    ctx: &ClusterContext,
    discovery: &Discovery,
    item: &Item,
    namespace: Option<&str>,
    restored_volumes: &HashSet<String>,
    backup: &str,
    restore: &str,
    update: bool,
) -> anyhow::Result<Restored> {
    let (resource, scope) = target_resource(discovery, item)?;
    let mut object = reset(&item.object);
    object.metadata.namespace = namespace.map(str::to_string);
    object.types = Some(TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    clean_up(&item.resource, &mut object, restored_volumes);
    label(&mut object, backup, restore);
    let api = match (scope, namespace) {
        (Scope::Namespaced, Some(namespace)) => {
            Api::<DynamicObject>::namespaced_with(ctx.client.clone(), namespace, &resource)
        }
        (Scope::Cluster, None) => Api::<DynamicObject>::all_with(ctx.client.clone(), &resource),
        _ => anyhow::bail!(
            "the backup and this cluster disagree on whether {} is namespaced",
            item.resource
        ),
    };
    let name = object.name_any();
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => return Ok(Restored::Created),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(error) => return Err(error.into()),
    }
    let existing = api
        .get(&name)
        .await
        .context("reading the existing object")?;
    if comparable(&existing) == comparable(&object) {
        return Ok(Restored::Unchanged);
    }
    if !update {
        return Ok(Restored::Exists(
            "could not restore, it already exists. Warning: the in-cluster version is different than the backed-up version".into(),
        ));
    }
    let mut patch = serde_json::to_value(&object)?;
    if let Some(fields) = patch.as_object_mut() {
        fields.remove("apiVersion");
        fields.remove("kind");
    }
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Restored::Updated),
        Err(error) => Ok(Restored::Exists(format!(
            "could not update the existing object: {error}"
        ))),
    }
}

/// The names a backed-up item's resource answers to in include/exclude
/// lists (from its bucket directory and its kind).
fn resource_names_of(item: &Item) -> Vec<String> {
    let mut names = vec![item.resource.clone()];
    if let Some(types) = &item.object.types {
        let kind = types.kind.to_ascii_lowercase();
        names.push(kind.clone());
        if let Some((plural, group)) = item.resource.split_once('.') {
            names.push(plural.to_string());
            names.push(format!("{kind}.{group}"));
        }
    }
    names
}

/// The resource to create `item` as in this cluster: the backed-up
/// version if this cluster serves it, else the group's preferred version
/// of the same kind.
fn target_resource(discovery: &Discovery, item: &Item) -> anyhow::Result<(ApiResource, Scope)> {
    let types = item
        .object
        .types
        .as_ref()
        .context("the backed-up object has no apiVersion/kind")?;
    let (group, version) = match types.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", types.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &types.kind);
    let found = discovery.resolve_gvk(&gvk).or_else(|| {
        discovery
            .get(group)
            .and_then(|g| g.recommended_kind(&types.kind))
    });
    let (resource, capabilities) = found.with_context(|| {
        format!(
            "this cluster has no resource for {} {}",
            types.api_version, types.kind
        )
    })?;
    Ok((resource, capabilities.scope))
}

/// Velero's metadata reset: only what a user wrote survives, and status
/// goes (the controllers here recompute it).
fn reset(object: &DynamicObject) -> DynamicObject {
    let mut object = object.clone();
    let metadata = &mut object.metadata;
    metadata.uid = None;
    metadata.resource_version = None;
    metadata.creation_timestamp = None;
    metadata.deletion_timestamp = None;
    metadata.deletion_grace_period_seconds = None;
    metadata.generation = None;
    metadata.generate_name = None;
    metadata.self_link = None;
    metadata.managed_fields = None;
    metadata.owner_references = None;
    if let Some(fields) = object.data.as_object_mut() {
        fields.remove("status");
    }
    object
}

/// Per-kind cleanups of Velero's restore item actions: what only made
/// sense in the source cluster.
fn clean_up(resource: &str, object: &mut DynamicObject, restored_volumes: &HashSet<String>) {
    match resource {
        // Scheduling is the destination's business.
        "pods" => remove(&mut object.data, "/spec", "nodeName"),
        // Cluster IPs and node ports are allocated by the destination.
        "services" => {
            if object
                .data
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                != Some("None")
            {
                remove(&mut object.data, "/spec", "clusterIP");
                remove(&mut object.data, "/spec", "clusterIPs");
            }
            if let Some(ports) = object
                .data
                .pointer_mut("/spec/ports")
                .and_then(Value::as_array_mut)
            {
                for port in ports {
                    if let Some(port) = port.as_object_mut() {
                        port.remove("nodePort");
                    }
                }
            }
        }
        // A claim is bound anew unless its volume comes along.
        "persistentvolumeclaims" => {
            for annotation in [
                "pv.kubernetes.io/bind-completed",
                "pv.kubernetes.io/bound-by-controller",
                "volume.kubernetes.io/selected-node",
            ] {
                object.annotations_mut().remove(annotation);
            }
            let volume = object
                .data
                .pointer("/spec/volumeName")
                .and_then(Value::as_str);
            if volume.is_some_and(|v| !restored_volumes.contains(v)) {
                remove(&mut object.data, "/spec", "volumeName");
            }
        }
        _ => {}
    }
}

fn remove(data: &mut Value, parent: &str, field: &str) {
    if let Some(fields) = data.pointer_mut(parent).and_then(Value::as_object_mut) {
        fields.remove(field);
    }
}

fn label(object: &mut DynamicObject, backup: &str, restore: &str) {
    let labels = object.labels_mut();
    labels.insert(BACKUP_NAME_LABEL.into(), backup.into());
    labels.insert(RESTORE_NAME_LABEL.into(), restore.into());
}

/// An object as compared with its backed-up version: without what the
/// server sets and without the restore labels.
fn comparable(object: &DynamicObject) -> Value {
    let mut object = reset(object);
    object.labels_mut().remove(BACKUP_NAME_LABEL);
    object.labels_mut().remove(RESTORE_NAME_LABEL);
    if object.labels().is_empty() {
        object.metadata.labels = None;
    }
    if object.annotations().is_empty() {
        object.metadata.annotations = None;
    }
    object.types = None;
    let mut value = serde_json::to_value(&object).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut() {
        fields.remove("apiVersion");
        fields.remove("kind");
    }
    value
}
