//! Backups: snapshotting the selected objects of the cluster into the
//! bucket, as pkg/controller/backup_controller.go,
//! backup_finalizer_controller.go and pkg/backup (item_collector.go,
//! item_backupper.go, actions/service_account_action.go) do.
//!
//! Validation (FailedValidation with `validationErrors`): the BSL (empty
//! `storageLocation` = the BSL with `spec.default`; ReadOnly and
//! Unavailable refuse), include/exclude lists, both selector kinds. Then
//! InProgress; a name the bucket already has is Failed ("backup already
//! exists in object storage"). Selection: namespaced resources of the
//! included namespaces (namespaces labelled `velero.io/exclude-from-backup`
//! are excluded; a named namespace that does not exist is an error);
//! cluster-scoped resources all (`includeClusterResources: true`), none
//! and no Namespace objects (`false`), or when unset all if every
//! namespace is included and otherwise the related ones (the included
//! Namespace objects, PVs bound to backed-up PVCs, CRDs of backed-up
//! custom resources, a ServiceAccount's ClusterRoleBindings and their
//! ClusterRoles). The label selector or any of `orLabelSelectors` must
//! match; items labelled `velero.io/exclude-from-backup=true` and
//! terminating items are skipped. The items, results and log are written,
//! then the metadata with phase Finalizing (or FinalizingPartiallyFailed); the finalizer
//! rewrites it Completed or PartiallyFailed, which is when the other
//! cluster's sync takes it.

use std::collections::{BTreeSet, HashSet};

use anyhow::Context as _;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, TypeMeta};
use kube::core::{Selector, SelectorExt};
use kube::discovery::{verbs, Discovery, Scope};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::bucket::{Bucket, Target};
use super::filter::{excluded_from_backup, group_resource, selectors, IncludesExcludes, Resolver};
use super::results::Report;
use super::{
    fail, fail_validation, finalizing, location, merge, now, patch_object_status, spec, time,
    valid_label_value, Velero, STORAGE_LOCATION_LABEL,
};

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
    or_label_selectors: Option<Vec<LabelSelector>>,
    include_cluster_resources: Option<bool>,
    storage_location: Option<String>,
    ttl: Option<String>,
}

/// What a validated Backup selects.
struct Selection {
    namespaces: IncludesExcludes,
    resources: IncludesExcludes,
    /// Any must match (one for `labelSelector`, several for
    /// `orLabelSelectors`, none for everything).
    selectors: Vec<Selector>,
    include_cluster_resources: Option<bool>,
}

impl Selection {
    fn selects(&self, object: &DynamicObject) -> bool {
        self.selectors.is_empty() || self.selectors.iter().any(|s| s.matches(object.labels()))
    }
}

/// Processes one new Backup to its final phase.
pub(super) async fn run(v: &Velero, backup: DynamicObject) {
    let api = v.backups();
    let name = backup.name_any();
    let spec: BackupSpec = match spec(&backup) {
        Ok(spec) => spec,
        Err(errors) => return fail_validation(&api, &name, errors, json!({})).await,
    };
    let ttl = spec
        .ttl
        .as_deref()
        .and_then(location::go_duration)
        .unwrap_or(DEFAULT_TTL);
    let expiration = k8s_openapi::jiff::Timestamp::now()
        .checked_add(ttl)
        .map(time)
        .unwrap_or(Value::Null);
    // What prepareBackupRequest fills before validating.
    let prepared = json!({ "version": 1, "formatVersion": "1.1.0", "expiration": expiration });
    let (location, selection) = match validate(v, &spec).await {
        Ok(valid) => valid,
        Err(errors) => return fail_validation(&api, &name, errors, prepared).await,
    };

    let started = now();
    let mut status = json!({ "phase": "InProgress", "startTimestamp": started });
    merge(&mut status, prepared);
    let start = json!({
        "metadata": { "labels": { STORAGE_LOCATION_LABEL: valid_label_value(&location) } },
        "spec": { "storageLocation": location },
        "status": status,
    });
    if let Err(error) = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&start))
        .await
    {
        tracing::warn!("velero: starting backup {name}: {error}");
        return;
    }
    let bucket = v.bucket();
    if bucket.has_backup(&name) {
        fail(
            &api,
            &name,
            "backup already exists in object storage".into(),
        )
        .await;
        return;
    }

    let snapshot = match snapshot(v, &bucket, &name, &selection).await {
        Ok(snapshot) => snapshot,
        Err(error) => {
            fail(&api, &name, format!("{error:#}")).await;
            return;
        }
    };
    let results = snapshot.results();
    let progress = json!({ "totalItems": snapshot.total, "itemsBackedUp": snapshot.done });
    let (status, partially) = finalizing("backup", &name, &results, progress);
    let stored = async {
        bucket.write_results(Target::Backup, &name, &snapshot)?;
        store_metadata(&api, &bucket, &name, &status).await?;
        patch_object_status(&api, &name, status.clone()).await?;
        // The finalizer: the final phase, uploaded again.
        let last = json!({
            "phase": if partially { "PartiallyFailed" } else { "Completed" },
            "completionTimestamp": now(),
        });
        store_metadata(&api, &bucket, &name, &last).await?;
        patch_object_status(&api, &name, last).await?;
        anyhow::Ok(())
    };
    match stored.await {
        Ok(()) => tracing::info!("velero: backup {name} finished"),
        Err(error) => {
            fail(
                &api,
                &name,
                format!("error uploading the backup: {error:#}"),
            )
            .await;
        }
    }
}

/// The BSL and what to select, or Velero's validation errors.
async fn validate(v: &Velero, spec: &BackupSpec) -> Result<(String, Selection), Vec<String>> {
    let (location, mut errors) = location::for_backup(v, spec.storage_location.as_deref()).await;
    let resolver = Resolver::discover_or_empty(&v.client).await;
    let resources = IncludesExcludes::resources(
        spec.included_resources.as_ref(),
        spec.excluded_resources.as_ref(),
        &resolver,
    );
    for problem in resources.problems() {
        errors.push(format!(
            "Invalid included/excluded resource lists: {problem}"
        ));
    }
    // Namespaces labelled velero.io/exclude-from-backup=true are excluded.
    let mut excluded = spec.excluded_namespaces.clone().unwrap_or_default();
    let labelled = ListParams::default().labels("velero.io/exclude-from-backup=true");
    match Api::<k8s_openapi::api::core::v1::Namespace>::all(v.client.clone())
        .list(&labelled)
        .await
    {
        Ok(list) => excluded.extend(list.items.iter().map(|ns| ns.name_any())),
        Err(error) => errors.push(format!("error getting namespace list: {error}")),
    }
    let listed = IncludesExcludes::new(
        spec.included_namespaces.as_ref(),
        spec.excluded_namespaces.as_ref(),
    );
    for problem in listed.problems() {
        errors.push(format!(
            "Invalid included/excluded namespace lists: {problem}"
        ));
    }
    let namespaces = IncludesExcludes::new(spec.included_namespaces.as_ref(), Some(&excluded));
    if spec.label_selector.is_some() && spec.or_label_selectors.is_some() {
        errors.push("encountered labelSelector as well as orLabelSelectors in backup spec, only one can be specified".into());
    }
    let selectors = selectors(
        spec.label_selector.as_ref(),
        spec.or_label_selectors.as_ref(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((
        location,
        Selection {
            namespaces,
            resources,
            selectors,
            include_cluster_resources: spec.include_cluster_resources,
        },
    ))
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
    let mut full = stored.data.get("status").cloned().unwrap_or(json!({}));
    merge(&mut full, status.clone());
    stored.data["status"] = full;
    bucket.write_metadata(name, &stored)
}

/// Writes every selected object to the bucket. Fails only when nothing
/// sensible can be backed up (discovery fails); a resource that cannot be
/// listed or an object that cannot be stored is an error of the backup.
async fn snapshot(
    v: &Velero,
    bucket: &Bucket<'_>,
    backup: &str,
    selection: &Selection,
) -> anyhow::Result<Report> {
    let discovery = Discovery::new(v.client.clone())
        .run()
        .await
        .context("discovering the API's resources")?;
    let Selection {
        namespaces,
        resources,
        ..
    } = selection;
    let all_namespaces = namespaces.includes_everything();
    let all_cluster_resources = selection
        .include_cluster_resources
        .unwrap_or(all_namespaces);
    let related_cluster_resources = selection.include_cluster_resources != Some(false);

    let mut snapshot = Report::default();
    let store = |resource: &ApiResource, mut object: DynamicObject, snapshot: &mut Report| {
        let dir = group_resource(&resource.group, &resource.plural);
        if object.metadata.deletion_timestamp.is_some() || excluded_from_backup(&object) {
            snapshot
                .log
                .push(format!("skipping {dir} {}", object.name_any()));
            return;
        }
        object.types = Some(TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
        match bucket.write_item(backup, resource, &object) {
            Ok(()) => {
                snapshot.total += 1;
                snapshot.done += 1;
                snapshot.resources.add(
                    &resource.api_version,
                    &resource.kind,
                    object.metadata.namespace.as_deref(),
                    &object.name_any(),
                    None,
                );
                snapshot
                    .log
                    .push(format!("backed up {dir} {}", object.name_any()));
            }
            Err(error) => snapshot.errors.add(
                object.namespace().as_deref(),
                format!("{dir} {}: {error:#}", object.name_any()),
            ),
        }
    };

    // Namespaces named in the include list must exist (item_collector.go
    // collectNamespaces logs an error for each that does not).
    let namespace_api = Api::<k8s_openapi::api::core::v1::Namespace>::all(v.client.clone());
    let existing: HashSet<String> = namespace_api
        .list(&ListParams::default())
        .await
        .context("listing namespaces")?
        .items
        .iter()
        .map(|ns| ns.name_any())
        .collect();
    for included in namespaces.included() {
        if !included.contains(['*', '?', '[', '{']) && !existing.contains(included) {
            snapshot.errors.velero.push(format!(
                "fail to get the namespace {included} specified in backup.Spec.IncludedNamespaces"
            ));
        }
    }

    let mut bound_volumes = HashSet::new();
    let mut custom_resources = BTreeSet::new();
    let mut service_accounts = Vec::new();
    let mut namespaces_resource = None;
    let mut volumes_resource = None;
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            let dir = group_resource(&resource.group, &resource.plural);
            if !capabilities.supports_operation(verbs::LIST)
                || NEVER_BACKED_UP.contains(&dir.as_str())
                || !resources.includes(&dir)
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
                    let api = Api::<DynamicObject>::all_with(v.client.clone(), &resource);
                    let list = match api.list(&ListParams::default()).await {
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
                                .is_some_and(|ns| namespaces.includes(ns))
                        {
                            continue;
                        }
                        if !selection.selects(&object) {
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
                        if dir == "serviceaccounts" && !excluded_from_backup(&object) {
                            service_accounts
                                .push((namespace.clone().unwrap_or_default(), object.name_any()));
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

    // The Namespace objects of the included namespaces, label selector or
    // not, unless cluster resources are excluded.
    if let Some(resource) = namespaces_resource.filter(|_| related_cluster_resources) {
        let api = Api::<DynamicObject>::all_with(v.client.clone(), &resource);
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for namespace in list.items {
                    if namespaces.includes(&namespace.name_any()) {
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
            let api = Api::<DynamicObject>::all_with(v.client.clone(), &resource);
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
        if resources.includes(&group_resource(&crd_resource.group, &crd_resource.plural)) {
            let api = Api::<DynamicObject>::all_with(v.client.clone(), &crd_resource);
            for crd in &custom_resources {
                // Built-in groups (route.openshift.io in the emulator) have
                // no CRD: not found is expected and silent.
                if let Ok(Some(object)) = api.get_opt(crd).await {
                    store(&crd_resource, object, &mut snapshot);
                }
            }
        }
        related_rbac(v, resources, &service_accounts, &store, &mut snapshot).await;
    }
    Ok(snapshot)
}

/// service_account_action.go: a ServiceAccount brings the
/// ClusterRoleBindings naming it as a subject and their ClusterRoles.
async fn related_rbac(
    v: &Velero,
    resources: &IncludesExcludes,
    service_accounts: &[(String, String)],
    store: &impl Fn(&ApiResource, DynamicObject, &mut Report),
    snapshot: &mut Report,
) {
    if service_accounts.is_empty() {
        return;
    }
    let bindings_resource = ApiResource::erase::<ClusterRoleBinding>(&());
    let roles_resource = ApiResource::erase::<ClusterRole>(&());
    let bindings = Api::<DynamicObject>::all_with(v.client.clone(), &bindings_resource);
    let roles = Api::<DynamicObject>::all_with(v.client.clone(), &roles_resource);
    let list = match bindings.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(error) => {
            snapshot
                .errors
                .velero
                .push(format!("listing clusterrolebindings: {error}"));
            return;
        }
    };
    let mut role_names = BTreeSet::new();
    for binding in list.items {
        let names_account = binding
            .data
            .get("subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|subject| {
                subject["kind"] == "ServiceAccount"
                    && service_accounts.iter().any(|(namespace, name)| {
                        subject["namespace"] == json!(namespace) && subject["name"] == json!(name)
                    })
            });
        if !names_account {
            continue;
        }
        if let Some(role) = binding
            .data
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
        {
            role_names.insert(role.to_string());
        }
        if resources.includes("clusterrolebindings.rbac.authorization.k8s.io") {
            store(&bindings_resource, binding, snapshot);
        }
    }
    if !resources.includes("clusterroles.rbac.authorization.k8s.io") {
        return;
    }
    for role in role_names {
        if let Ok(Some(object)) = roles.get_opt(&role).await {
            store(&roles_resource, object, snapshot);
        }
    }
}
