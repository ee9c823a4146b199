//! Backups: snapshotting the selected objects of the cluster into the
//! bucket.
//!
//! Selection is Velero's: namespaced resources of the included namespaces;
//! cluster-scoped resources all (`includeClusterResources: true`), none
//! (`false`), or when unset all if every namespace is included and
//! otherwise only those related to what was backed up (the Namespace
//! objects, the PVs bound to backed-up PVCs, the CRDs of backed-up custom
//! resources). Resource include/exclude lists and the label selector apply
//! to every object except the included namespaces' Namespace objects,
//! which Velero always takes. Objects are stored as the API returned them;
//! cleaning them up is the restore's job.

use std::collections::{BTreeSet, HashSet};

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, TypeMeta};
use kube::core::Selector;
use kube::discovery::{verbs, Discovery, Scope};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::bucket::{resource_dir, Bucket};
use super::filter::{resource_names, IncludesExcludes};
use super::{
    backups, fail_validation, now, patch_status, Messages, STORAGE_LOCATION, STORAGE_LOCATION_LABEL,
};
use crate::context::ClusterContext;

/// How long a backup is kept by default (Velero's `--ttl` default).
const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(720 * 3600);

/// Resources never worth backing up.
const NEVER_BACKED_UP: &[&str] = &["events", "events.events.k8s.io"];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackupSpec {
    included_namespaces: Option<Vec<String>>,
    excluded_namespaces: Option<Vec<String>>,
    included_resources: Option<Vec<String>>,
    excluded_resources: Option<Vec<String>>,
    label_selector: Option<LabelSelector>,
    include_cluster_resources: Option<bool>,
    storage_location: Option<String>,
}

/// What was selected and how it went.
#[derive(Default)]
struct Snapshot {
    items: usize,
    errors: Messages,
    warnings: Messages,
}

/// Processes one new Backup to its final phase.
pub(super) async fn run(ctx: &ClusterContext, backup: DynamicObject) {
    let api = backups(ctx);
    let name = backup.name_any();
    let bucket = Bucket(&ctx.shared.velero_bucket);
    if bucket.has_backup(&name) {
        // The Backup was created by the sync for a backup already in the
        // bucket (it gets its status from there), or names one: either way
        // the bucket's copy must not be overwritten.
        tracing::info!("velero: backup {name} is already in the bucket; leaving it to the sync");
        return;
    }
    let spec: BackupSpec =
        match serde_json::from_value(backup.data.get("spec").cloned().unwrap_or(json!({}))) {
            Ok(spec) => spec,
            Err(error) => {
                return fail_validation(&api, &name, vec![format!("invalid spec: {error}")]).await
            }
        };
    let (selector, problems) = validate(&spec);
    if !problems.is_empty() {
        return fail_validation(&api, &name, problems).await;
    }

    let started = now();
    let expiration = k8s_openapi::jiff::Timestamp::now()
        .checked_add(DEFAULT_TTL)
        .map(|t| {
            serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t))
                .unwrap_or(Value::Null)
        })
        .unwrap_or(Value::Null);
    let label = json!({ "metadata": { "labels": { STORAGE_LOCATION_LABEL: STORAGE_LOCATION } } });
    let marked = async {
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&label))
            .await?;
        let status = json!({
            "phase": "InProgress",
            "startTimestamp": started,
            "expiration": expiration,
            "version": 1,
            "formatVersion": "1.1.0",
        });
        patch_status(&api, &name, status).await
    };
    if let Err(error) = marked.await {
        tracing::warn!("velero: starting backup {name}: {error}");
        return;
    }

    let result = snapshot(ctx, &bucket, &name, &spec, selector.as_ref()).await;
    let mut status = match &result {
        Ok(snapshot) => {
            let phase = if snapshot.errors.count() > 0 {
                "PartiallyFailed"
            } else {
                "Completed"
            };
            json!({
                "phase": phase,
                "errors": snapshot.errors.count(),
                "warnings": snapshot.warnings.count(),
                "progress": { "totalItems": snapshot.items, "itemsBackedUp": snapshot.items },
            })
        }
        Err(error) => json!({ "phase": "Failed", "failureReason": format!("{error:#}") }),
    };
    if let Ok(snapshot) = &result {
        for message in snapshot
            .errors
            .namespaces
            .values()
            .flatten()
            .chain(&snapshot.errors.cluster)
        {
            tracing::warn!("velero: backup {name}: {message}");
        }
    }
    status["startTimestamp"] = started;
    status["completionTimestamp"] = now();

    if result.is_ok() {
        // The stored Backup is the final one, as Velero uploads it; storing
        // it completes the backup for the sync of both clusters.
        if let Err(error) = store_metadata(&api, &bucket, &name, &status).await {
            status = json!({
                "phase": "Failed",
                "failureReason": format!("storing the backup metadata: {error:#}"),
                "completionTimestamp": now(),
            });
        }
    }
    tracing::info!("velero: backup {name} finished: {status}");
    if let Err(error) = patch_status(&api, &name, status).await {
        tracing::warn!("velero: recording the end of backup {name}: {error}");
    }
}

/// The label selector, and what is wrong with the spec.
fn validate(spec: &BackupSpec) -> (Option<Selector>, Vec<String>) {
    let mut problems = Vec::new();
    let location = spec.storage_location.as_deref().unwrap_or(STORAGE_LOCATION);
    if !location.is_empty() && location != STORAGE_LOCATION {
        problems.push(format!(
            "a BackupStorageLocation named {location:?} does not exist"
        ));
    }
    let namespaces = IncludesExcludes::new(
        spec.included_namespaces.as_ref(),
        spec.excluded_namespaces.as_ref(),
    );
    let overlap = namespaces.overlap();
    if !overlap.is_empty() {
        problems.push(format!(
            "invalid included/excluded namespace lists: {} both included and excluded",
            overlap.join(", ")
        ));
    }
    let selector = match spec
        .label_selector
        .clone()
        .map(Selector::try_from)
        .transpose()
    {
        Ok(selector) => selector,
        Err(error) => {
            problems.push(format!("invalid labelSelector: {error}"));
            None
        }
    };
    (selector, problems)
}

async fn store_metadata(
    api: &Api<DynamicObject>,
    bucket: &Bucket<'_>,
    name: &str,
    status: &Value,
) -> anyhow::Result<()> {
    let mut stored = api.get(name).await.context("reading the Backup back")?;
    stored.types = Some(TypeMeta {
        api_version: "velero.io/v1".into(),
        kind: "Backup".into(),
    });
    stored.data["status"] = status.clone();
    bucket.write_metadata(name, &stored)
}

/// Writes every selected object to the bucket. Fails only when nothing
/// sensible can be backed up (discovery fails); a resource that cannot be
/// listed or an object that cannot be stored is an error of the backup.
async fn snapshot(
    ctx: &ClusterContext,
    bucket: &Bucket<'_>,
    backup: &str,
    spec: &BackupSpec,
    selector: Option<&Selector>,
) -> anyhow::Result<Snapshot> {
    let discovery = Discovery::new(ctx.client.clone())
        .run()
        .await
        .context("discovering the API's resources")?;
    let namespaces = IncludesExcludes::new(
        spec.included_namespaces.as_ref(),
        spec.excluded_namespaces.as_ref(),
    );
    let resources = IncludesExcludes::new(
        spec.included_resources.as_ref(),
        spec.excluded_resources.as_ref(),
    );
    let all_namespaces = namespaces.includes_everything();
    let all_cluster_resources = spec.include_cluster_resources.unwrap_or(all_namespaces);
    let related_cluster_resources = spec.include_cluster_resources != Some(false);
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels_from(selector);
    }

    let mut snapshot = Snapshot::default();
    let store = |resource: &ApiResource, mut object: DynamicObject, snapshot: &mut Snapshot| {
        object.types = Some(TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
        match bucket.write_item(backup, resource, &object) {
            Ok(()) => snapshot.items += 1,
            Err(error) => snapshot.errors.add(
                object.namespace().as_deref(),
                format!(
                    "{} {}: {error:#}",
                    resource_dir(resource),
                    object.name_any()
                ),
            ),
        }
    };

    let mut bound_volumes = HashSet::new();
    let mut custom_resources = BTreeSet::new();
    let mut namespaces_resource = None;
    let mut volumes_resource = None;
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            let names = resource_names(&resource);
            let dir = resource_dir(&resource);
            if !capabilities.supports_operation(verbs::LIST)
                || NEVER_BACKED_UP.contains(&dir.as_str())
                || !resources.includes(&names)
            {
                continue;
            }
            match (capabilities.scope, dir.as_str()) {
                (Scope::Cluster, "namespaces") => namespaces_resource = Some(resource),
                (Scope::Cluster, "persistentvolumes") if !all_cluster_resources => {
                    volumes_resource = Some(resource)
                }
                (Scope::Cluster, _) if !all_cluster_resources => {}
                (scope, _) => {
                    let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &resource);
                    let list = match api.list(&params).await {
                        Ok(list) => list,
                        Err(error) => {
                            snapshot
                                .errors
                                .velero
                                .push(format!("listing {dir}: {error}"));
                            continue;
                        }
                    };
                    for object in list.items {
                        let namespace = object.namespace();
                        if scope == Scope::Namespaced
                            && !namespace
                                .as_deref()
                                .is_some_and(|ns| namespaces.includes_name(ns))
                        {
                            continue;
                        }
                        if dir == "persistentvolumeclaims" {
                            if let Some(volume) = object
                                .data
                                .pointer("/spec/volumeName")
                                .and_then(Value::as_str)
                            {
                                bound_volumes.insert(volume.to_string());
                            }
                        }
                        if group.name().contains('.') && scope == Scope::Namespaced {
                            custom_resources.insert(dir.clone());
                        }
                        store(&resource, object, &mut snapshot);
                    }
                }
            }
        }
    }

    // The Namespace objects of the included namespaces, label selector or not.
    if let Some(resource) = namespaces_resource {
        let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &resource);
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for namespace in list.items {
                    if namespaces.includes_name(&namespace.name_any()) {
                        store(&resource, namespace, &mut snapshot);
                    }
                }
            }
            Err(error) => snapshot
                .errors
                .velero
                .push(format!("listing namespaces: {error}")),
        }
    }
    if related_cluster_resources && !all_cluster_resources {
        if let Some(resource) = volumes_resource {
            let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &resource);
            for volume in &bound_volumes {
                match api.get_opt(volume).await {
                    Ok(Some(object)) => store(&resource, object, &mut snapshot),
                    Ok(None) => snapshot.warnings.cluster.push(format!(
                        "persistentvolumes {volume}: bound to a backed-up claim but not found"
                    )),
                    Err(error) => snapshot
                        .errors
                        .cluster
                        .push(format!("persistentvolumes {volume}: {error}")),
                }
            }
        }
        let crd_resource = ApiResource::erase::<CustomResourceDefinition>(&());
        if resources.includes(&resource_names(&crd_resource)) {
            let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &crd_resource);
            for crd in &custom_resources {
                // Built-in groups (route.openshift.io in the emulator) have
                // no CRD: not found is expected and silent.
                if let Ok(Some(object)) = api.get_opt(crd).await {
                    store(&crd_resource, object, &mut snapshot);
                }
            }
        }
    }
    Ok(snapshot)
}
