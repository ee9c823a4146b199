//! Restores: recreating a backup's objects in this cluster, as
//! pkg/controller/restore_controller.go, restore_finalizer_controller.go,
//! pkg/restore/restore.go and pkg/restore/actions do.
//!
//! Validation (`validateAndComplete`, FailedValidation with Velero's
//! messages): non-restorable included resources, invalid include/exclude
//! lists, both selector kinds, not exactly one of backup and schedule, an
//! unknown `existingResourcePolicy`, a missing backup or Unavailable BSL,
//! a missing or invalid resource-modifier ConfigMap. The backup's phase is
//! not checked; a backup the bucket lacks fails the restore.
//!
//! Items are filtered by the Restore's lists and selectors (cluster-scoped
//! ones only with `includeClusterResources: true`, or unset and every
//! namespace included; completed Pods and Jobs and mirror Pods skipped),
//! cleaned by the item actions (metadata reset, owner references and
//! status removed, Service cluster IPs and unpreserved node ports, Pod
//! node names, priorities and token volumes, Job controller-uid labels,
//! binding subject namespaces remapped), patched by the resource modifiers,
//! moved to their mapped namespace, labelled `velero.io/backup-name` and
//! `velero.io/restore-name` (GetValidName), and created: CRDs, then the
//! namespaces (unlabelled, from the backed-up Namespace when there is one),
//! then Velero's priorities, the rest by name, the low priorities last.
//! An existing object equal to the backed-up one is skipped; a different
//! one is a warning, or with `existingResourcePolicy: update` is patched
//! with the merge patch from it to the backed-up version (falling back to
//! the restore labels); existing ServiceAccounts are merged. Results and
//! log go to the bucket; the restore then passes Finalizing to Completed
//! or PartiallyFailed.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, TypeMeta,
};
use kube::core::{Selector, SelectorExt};
use kube::discovery::{Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::actions::{clean_up, reset};
use super::bucket::{Item, Target};
use super::existing::{merge_patch, merge_service_accounts, to_value};
use super::filter::{selectors, IncludesExcludes, Resolver};
use super::location;
use super::modifiers::{self, ResourceModifiers};
use super::results::Report;
use super::{
    fail, fail_validation, finalizing, now, patch_object_status, phase, spec, valid_label_value,
    Velero,
};

/// Resources Velero never restores (restore_controller.go
/// `nonRestorableResources`).
const NON_RESTORABLE: &[&str] = &[
    "nodes",
    "events",
    "events.events.k8s.io",
    "backups.velero.io",
    "restores.velero.io",
    "resticrepositories.velero.io",
    "csinodes.storage.k8s.io",
    "volumeattachments.storage.k8s.io",
    "backuprepositories.velero.io",
];

const CRDS: &str = "customresourcedefinitions.apiextensions.k8s.io";

/// Velero's default restore order (pkg/cmd/server/config/config.go
/// `defaultRestorePriorities`), resolved to `plural.group`; everything
/// else follows by name, then [`LOW_PRIORITIES`].
const PRIORITIES: &[&str] = &[
    CRDS,
    "namespaces",
    "storageclasses.storage.k8s.io",
    "volumesnapshotclass.snapshot.storage.k8s.io",
    "volumesnapshotcontents.snapshot.storage.k8s.io",
    "volumesnapshots.snapshot.storage.k8s.io",
    "datauploads.velero.io",
    "persistentvolumes",
    "persistentvolumeclaims",
    "clusterroles.rbac.authorization.k8s.io",
    "roles.rbac.authorization.k8s.io",
    "serviceaccounts",
    "clusterrolebindings.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "secrets",
    "configmaps",
    "limitranges",
    "priorityclasses.scheduling.k8s.io",
    "pods",
    "replicasets.apps",
    "clusterclasses.cluster.x-k8s.io",
    "endpoints",
    "services",
];

const LOW_PRIORITIES: &[&str] = &[
    "clusterbootstraps.run.tanzu.vmware.com",
    "clusters.cluster.x-k8s.io",
    "clusterresourcesets.addons.cluster.x-k8s.io",
    "apps.kappctrl.k14s.io",
    "packageinstalls.packaging.carvel.dev",
];

/// Held by every Restore until its files are gone from the bucket
/// (restore_controller.go `ExternalResourcesFinalizer`).
const FINALIZER: &str = "restores.velero.io/external-resources-finalizer";

const BACKUP_NAME_LABEL: &str = "velero.io/backup-name";
const RESTORE_NAME_LABEL: &str = "velero.io/restore-name";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestoreSpec {
    backup_name: Option<String>,
    schedule_name: Option<String>,
    included_namespaces: Option<Vec<String>>,
    excluded_namespaces: Option<Vec<String>>,
    included_resources: Option<Vec<String>>,
    excluded_resources: Option<Vec<String>>,
    namespace_mapping: Option<BTreeMap<String, String>>,
    label_selector: Option<LabelSelector>,
    or_label_selectors: Option<Vec<LabelSelector>>,
    #[serde(rename = "restorePVs")]
    restore_pvs: Option<bool>,
    include_cluster_resources: Option<bool>,
    existing_resource_policy: Option<String>,
    resource_modifier: Option<TypedReference>,
}

#[derive(Debug, Default, Deserialize)]
struct TypedReference {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

/// What a validated Restore restores.
struct Plan {
    backup: String,
    namespaces: IncludesExcludes,
    resources: IncludesExcludes,
    selectors: Vec<Selector>,
    modifiers: Option<ResourceModifiers>,
    policy: Option<String>,
    mapping: BTreeMap<String, String>,
    include_cluster_resources: Option<bool>,
    restore_pvs: bool,
}

impl Plan {
    fn map(&self, namespace: &str) -> String {
        self.mapping
            .get(namespace)
            .cloned()
            .unwrap_or_else(|| namespace.to_string())
    }
}

/// Processes one new Restore to its final phase.
pub(super) async fn run(v: &Velero, restore: DynamicObject) {
    let api = v.restores();
    let name = restore.name_any();
    if !restore.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = restore.finalizers().to_vec();
        finalizers.push(FINALIZER.into());
        let patch = json!({ "metadata": { "finalizers": finalizers } });
        if let Err(error) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!("velero: adding the finalizer of restore {name}: {error}");
            return;
        }
    }
    let spec: RestoreSpec = match spec(&restore) {
        Ok(spec) => spec,
        Err(errors) => return fail_validation(&api, &name, errors, json!({})).await,
    };
    let plan = match validate(v, spec).await {
        Ok(plan) => plan,
        Err(errors) => return fail_validation(&api, &name, errors, json!({})).await,
    };
    let started = now();
    let status = json!({ "phase": "InProgress", "startTimestamp": started });
    if let Err(error) = patch_object_status(&api, &name, status).await {
        tracing::warn!("velero: starting restore {name}: {error}");
        return;
    }

    let outcome = match restore_items(v, &name, &plan).await {
        Ok(outcome) => outcome,
        Err(error) => {
            fail(&api, &name, format!("{error:#}")).await;
            return;
        }
    };
    let results = outcome.results();
    if let Err(error) = v.bucket().write_results(Target::Restore, &name, &outcome) {
        tracing::warn!("velero: storing the results of restore {name}: {error:#}");
    }
    let progress = json!({ "totalItems": outcome.total, "itemsRestored": outcome.done });
    let (status, partially) = finalizing("restore", &name, &results, progress);
    let finished = async {
        patch_object_status(&api, &name, status).await?;
        let last = json!({
            "phase": if partially { "PartiallyFailed" } else { "Completed" },
            "completionTimestamp": now(),
        });
        patch_object_status(&api, &name, last).await
    };
    match finished.await {
        Ok(()) => tracing::info!("velero: restore {name} finished"),
        Err(error) => tracing::warn!("velero: recording the end of restore {name}: {error}"),
    }
}

/// Removes the files of deleted Restores from the bucket, then their
/// finalizer, as the restore controller does for a Restore with a
/// deletionTimestamp (`deleteExternalResources`: nothing to remove when
/// the backup is gone; an Unavailable BSL keeps the Restore until it is
/// available again).
pub(super) async fn finalize_deleted(v: &Velero) {
    let api = v.restores();
    let events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let Ok(restore) = event else { continue };
        if restore.metadata.deletion_timestamp.is_none()
            || !restore.finalizers().iter().any(|f| f == FINALIZER)
        {
            continue;
        }
        let name = restore.name_any();
        if let Err(error) = delete_external_resources(v, &restore).await {
            tracing::warn!("velero: fail to delete external resources of restore {name}: {error}");
            continue;
        }
        let finalizers: Vec<&String> = restore
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .collect();
        let patch = json!({ "metadata": { "finalizers": finalizers } });
        if let Err(error) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!("velero: removing the finalizer of restore {name}: {error}");
        }
    }
}

async fn delete_external_resources(v: &Velero, restore: &DynamicObject) -> anyhow::Result<()> {
    let backup = restore
        .data
        .pointer("/spec/backupName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if backup.is_empty() {
        return Ok(());
    }
    let Some(backup) = v.backups().get_opt(backup).await? else {
        return Ok(());
    };
    let location = backup
        .data
        .pointer("/spec/storageLocation")
        .and_then(Value::as_str)
        .unwrap_or("");
    match location::get(v, location).await? {
        Some(location) if !location.available => anyhow::bail!(
            "bsl {} is unavailable, cannot get the backup info",
            location.name
        ),
        None => return Ok(()),
        Some(_) => {}
    }
    v.bucket().delete_restore(&restore.name_any())
}

/// `validateAndComplete`: what to restore, or every reason not to.
async fn validate(v: &Velero, spec: RestoreSpec) -> Result<Plan, Vec<String>> {
    let mut errors = Vec::new();
    for included in spec.included_resources.iter().flatten() {
        if NON_RESTORABLE.contains(&included.as_str()) {
            errors.push(format!("{included} are non-restorable resources"));
        }
    }
    let resolver = Resolver::discover_or_empty(&v.client).await;
    let listed = IncludesExcludes::new(
        spec.included_resources.as_ref(),
        spec.excluded_resources.as_ref(),
    );
    for problem in listed.problems() {
        errors.push(format!(
            "Invalid included/excluded resource lists: {problem}"
        ));
    }
    let mut excluded = spec.excluded_resources.clone().unwrap_or_default();
    excluded.extend(NON_RESTORABLE.iter().map(|r| r.to_string()));
    let resources =
        IncludesExcludes::resources(spec.included_resources.as_ref(), Some(&excluded), &resolver);
    let namespaces = IncludesExcludes::new(
        spec.included_namespaces.as_ref(),
        spec.excluded_namespaces.as_ref(),
    );
    for problem in namespaces.problems() {
        errors.push(format!(
            "Invalid included/excluded namespace lists: {problem}"
        ));
    }
    if spec.or_label_selectors.is_some() && spec.label_selector.is_some() {
        errors.push("encountered labelSelector as well as orLabelSelectors in restore spec, only one can be specified".into());
    }
    let backup = spec.backup_name.clone().unwrap_or_default();
    let schedule = spec.schedule_name.clone().unwrap_or_default();
    if backup.is_empty() == schedule.is_empty() {
        errors.push("Either a backup or schedule must be specified as a source for the restore, but not both".into());
        return Err(errors);
    }
    if !schedule.is_empty() {
        errors.push("No backups found for schedule".into());
        return Err(errors);
    }
    let policy = spec
        .existing_resource_policy
        .clone()
        .filter(|p| !p.is_empty());
    if let Some(policy) = policy
        .as_deref()
        .filter(|p| !matches!(*p, "none" | "update"))
    {
        errors.push(format!("Invalid ExistingResourcePolicy: {policy}"));
    }
    let namespace = &v.options.namespace;
    let location = match v.backups().get_opt(&backup).await {
        Ok(Some(object)) => object
            .data
            .pointer("/spec/storageLocation")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        Ok(None) => {
            errors.push(format!("Error retrieving backup: can't find backup {namespace}/{backup}: backups.velero.io \"{backup}\" not found"));
            return Err(errors);
        }
        Err(error) => {
            errors.push(format!(
                "Error retrieving backup: can't find backup {namespace}/{backup}: {error}"
            ));
            return Err(errors);
        }
    };
    match location::get(v, &location).await {
        Ok(Some(found)) if found.available => {}
        Ok(Some(_)) => {
            errors.push(format!(
                "The BSL {location} is unavailable, cannot retrieve the backup"
            ));
            return Err(errors);
        }
        Ok(None) => {
            errors.push(format!("Error retrieving backup: backupstoragelocations.velero.io \"{location}\" not found"));
            return Err(errors);
        }
        Err(error) => {
            errors.push(format!("Error retrieving backup: {error}"));
            return Err(errors);
        }
    }
    let modifiers = match &spec.resource_modifier {
        Some(reference) if reference.kind.eq_ignore_ascii_case("configmap") => {
            match resource_modifiers(v, &reference.name).await {
                Ok(modifiers) => Some(modifiers),
                Err(error) => {
                    errors.push(error);
                    return Err(errors);
                }
            }
        }
        _ => None,
    };
    let selectors = selectors(
        spec.label_selector.as_ref(),
        spec.or_label_selectors.as_ref(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        backup,
        namespaces,
        resources,
        selectors,
        modifiers,
        policy,
        mapping: spec.namespace_mapping.unwrap_or_default(),
        include_cluster_resources: spec.include_cluster_resources,
        restore_pvs: spec.restore_pvs.unwrap_or(true),
    })
}

/// The resource modifiers of ConfigMap `name` in Velero's namespace.
async fn resource_modifiers(v: &Velero, name: &str) -> Result<ResourceModifiers, String> {
    let namespace = &v.options.namespace;
    let configmap = Api::<ConfigMap>::namespaced(v.client.clone(), namespace)
        .get_opt(name)
        .await;
    let Ok(Some(configmap)) = configmap else {
        return Err(format!(
            "failed to get resource modifiers configmap {namespace}/{name}"
        ));
    };
    let data = configmap.data.unwrap_or_default();
    let modifiers = modifiers::parse(&data, namespace, name).map_err(|error| {
        format!(
            "Error in parsing resource modifiers provided in configmap {namespace}/{name}: {error}"
        )
    })?;
    modifiers.validate().map_err(|error| {
        format!("Validation error in resource modifiers provided in configmap {namespace}/{name}: {error}")
    })?;
    Ok(modifiers)
}

/// Whether `item` is one the Restore selects.
fn selected(plan: &Plan, item: &Item) -> bool {
    let object = &item.object;
    if !plan.resources.includes(&item.resource) {
        return false;
    }
    if item.resource == "persistentvolumes" && !plan.restore_pvs {
        return false;
    }
    if completed(item) {
        return false;
    }
    if item.resource == "pods"
        && object
            .annotations()
            .contains_key("kubernetes.io/config.mirror")
    {
        return false;
    }
    let in_scope = match object.namespace() {
        Some(namespace) => plan.namespaces.includes(&namespace),
        // Namespace objects come with their namespaces.
        None if item.resource == "namespaces" => plan.namespaces.includes(&object.name_any()),
        None => {
            plan.include_cluster_resources == Some(true)
                || (plan.include_cluster_resources.is_none()
                    && plan.namespaces.includes_everything())
        }
    };
    let labelled = item.resource == "namespaces"
        || plan.selectors.is_empty()
        || plan.selectors.iter().any(|s| s.matches(object.labels()));
    in_scope && labelled
}

/// restore.go `isCompleted`: Pods that Succeeded or Failed and Jobs with a
/// completion time are not restored.
fn completed(item: &Item) -> bool {
    match item.resource.as_str() {
        "pods" => matches!(phase(&item.object), "Succeeded" | "Failed"),
        "jobs.batch" => item
            .object
            .data
            .pointer("/status/completionTime")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty()),
        _ => false,
    }
}

/// Velero's order of `resource` (lower first).
fn priority(resource: &str) -> (usize, usize) {
    if let Some(position) = PRIORITIES.iter().position(|p| *p == resource) {
        (0, position)
    } else if let Some(position) = LOW_PRIORITIES.iter().position(|p| *p == resource) {
        (2, position)
    } else {
        (1, 0)
    }
}

async fn restore_items(v: &Velero, restore: &str, plan: &Plan) -> anyhow::Result<Report> {
    let bucket = v.bucket();
    let backup = &plan.backup;
    anyhow::ensure!(
        bucket.has_backup(backup),
        "error downloading backup: backup {backup} is not in the backup storage location"
    );
    let items = bucket
        .read_items(backup)
        .with_context(|| format!("reading backup {backup}"))?;
    let mut discovery = discover(v).await?;

    let selected: Vec<&Item> = items.iter().filter(|item| selected(plan, item)).collect();
    let restored_volumes: HashSet<String> = selected
        .iter()
        .filter(|item| item.resource == "persistentvolumes")
        .map(|item| item.object.name_any())
        .collect();
    let mut outcome = Report {
        total: selected.len(),
        ..Report::default()
    };

    let mut ordered: Vec<&Item> = selected
        .iter()
        .copied()
        .filter(|item| item.resource != "namespaces")
        .collect();
    ordered.sort_by_key(|item| {
        (
            priority(&item.resource),
            item.resource.clone(),
            item.object.namespace(),
            item.object.name_any(),
        )
    });
    let (crds, others): (Vec<&Item>, Vec<&Item>) =
        ordered.into_iter().partition(|item| item.resource == CRDS);

    let context = Context {
        v,
        plan,
        restore,
        restored_volumes: &restored_volumes,
    };
    for item in &crds {
        context.restore_item(&discovery, item, &mut outcome).await;
    }
    if !crds.is_empty() {
        // The resources of the CRDs just restored are served now.
        discovery = discover(v).await?;
    }
    ensure_namespaces(v, plan, &selected, &mut outcome).await;
    for item in others {
        context.restore_item(&discovery, item, &mut outcome).await;
    }
    Ok(outcome)
}

/// Creates every target namespace, from its backed-up Namespace when the
/// backup has one (labels, annotations and spec, without the restore
/// labels), as `kube.EnsureNamespaceExistsAndIsReady` does; an existing one
/// is used as it is.
async fn ensure_namespaces(v: &Velero, plan: &Plan, selected: &[&Item], outcome: &mut Report) {
    let mut targets: BTreeMap<String, Option<&Item>> = BTreeMap::new();
    for item in selected {
        if let Some(namespace) = item.object.namespace() {
            targets.entry(plan.map(&namespace)).or_insert(None);
        }
    }
    for item in selected.iter().filter(|item| item.resource == "namespaces") {
        targets.insert(plan.map(&item.object.name_any()), Some(item));
    }
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(v.client.clone());
    for (target, item) in targets {
        let backed_up = item.map(|item| &item.object);
        let object = json!({
            "metadata": {
                "name": target,
                "labels": backed_up.map(|o| o.labels().clone()),
                "annotations": backed_up.map(|o| o.annotations().clone()),
            },
            "spec": backed_up.and_then(|o| o.data.get("spec").cloned()),
        });
        let namespace: k8s_openapi::api::core::v1::Namespace = match serde_json::from_value(object)
        {
            Ok(namespace) => namespace,
            Err(error) => {
                outcome
                    .errors
                    .add(None, format!("namespaces {target}: {error}"));
                continue;
            }
        };
        match api.create(&PostParams::default(), &namespace).await {
            Ok(_) => {
                outcome.log.push(format!("created namespace {target}"));
                let created = Some("created");
                outcome
                    .resources
                    .add("v1", "Namespace", None, &target, created);
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                if item.is_some() {
                    let skipped = Some("skipped");
                    outcome
                        .resources
                        .add("v1", "Namespace", None, &target, skipped);
                }
            }
            Err(error) => {
                outcome
                    .errors
                    .add(None, format!("error creating namespace {target}: {error}"));
                continue;
            }
        }
        if item.is_some() {
            outcome.done += 1;
        }
    }
}

async fn discover(v: &Velero) -> anyhow::Result<Discovery> {
    Discovery::new(v.client.clone())
        .run()
        .await
        .context("discovering the API's resources")
}

/// What every item's restore needs.
struct Context<'a> {
    v: &'a Velero,
    plan: &'a Plan,
    restore: &'a str,
    restored_volumes: &'a HashSet<String>,
}

impl Context<'_> {
    /// `restoreItem`: one item, its messages added to `outcome` and what
    /// became of it to the resource list (an item without an explicit
    /// action is `skipped`, or `failed` when it had warnings or errors).
    async fn restore_item(&self, discovery: &Discovery, item: &Item, outcome: &mut Report) {
        let messages = outcome.errors.count() + outcome.warnings.count();
        let (api_version, kind, action) = self.restore_one(discovery, item, outcome).await;
        let action = action.unwrap_or(
            if outcome.errors.count() + outcome.warnings.count() > messages {
                "failed"
            } else {
                "skipped"
            },
        );
        let namespace = item.object.namespace().map(|ns| self.plan.map(&ns));
        outcome.resources.add(
            &api_version,
            &kind,
            namespace.as_deref(),
            &item.object.name_any(),
            Some(action),
        );
    }

    /// Restores one item: its apiVersion and kind here, and the explicit
    /// action (`created`, `updated`) if any.
    async fn restore_one(
        &self,
        discovery: &Discovery,
        item: &Item,
        outcome: &mut Report,
    ) -> (String, String, Option<&'static str>) {
        let types = item.object.types.clone().unwrap_or_default();
        let source_namespace = item.object.namespace();
        let target_namespace = source_namespace.as_deref().map(|ns| self.plan.map(ns));
        let target = target_namespace.as_deref();
        let id = format!(
            "{}/{}",
            item.resource,
            match &target_namespace {
                Some(ns) => format!("{ns}/{}", item.object.name_any()),
                None => item.object.name_any(),
            }
        );
        let (resource, scope) = match target_resource(discovery, item) {
            Ok(found) => found,
            Err(error) => {
                outcome
                    .errors
                    .add(target, format!("error restoring {id}: {error:#}"));
                return (types.api_version, types.kind, None);
            }
        };
        let mut object = reset(&item.object);
        object.types = Some(TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
        clean_up(
            &item.resource,
            &mut object,
            self.restored_volumes,
            &self.plan.mapping,
        );
        if let Some(modifiers) = &self.plan.modifiers {
            for error in modifiers.apply(&mut object, &item.resource) {
                outcome.errors.add(target, error);
            }
        }
        object.metadata.namespace = target_namespace.clone();
        let labels = object.labels_mut();
        labels.insert(
            BACKUP_NAME_LABEL.into(),
            valid_label_value(&self.plan.backup),
        );
        labels.insert(RESTORE_NAME_LABEL.into(), valid_label_value(self.restore));
        let api = match (scope, target) {
            (Scope::Namespaced, Some(namespace)) => {
                Api::<DynamicObject>::namespaced_with(self.v.client.clone(), namespace, &resource)
            }
            (Scope::Cluster, None) => {
                Api::<DynamicObject>::all_with(self.v.client.clone(), &resource)
            }
            _ => {
                outcome.errors.add(
                    target,
                    format!(
                        "error restoring {id}: the backup and this cluster disagree on whether {} is namespaced",
                        item.resource
                    ),
                );
                return (resource.api_version, resource.kind, None);
            }
        };
        let action = match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                outcome.done += 1;
                outcome.log.push(format!("restored {id}"));
                Some("created")
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                self.existing(&api, &item.resource, &object, target, outcome)
                    .await
            }
            Err(error) => {
                outcome
                    .errors
                    .add(target, format!("error restoring {id}: {error}"));
                None
            }
        };
        (resource.api_version, resource.kind, action)
    }

    /// What restore.go does when the object already exists.
    async fn existing(
        &self,
        api: &Api<DynamicObject>,
        resource: &str,
        object: &DynamicObject,
        namespace: Option<&str>,
        outcome: &mut Report,
    ) -> Option<&'static str> {
        let name = object.name_any();
        let kind = object
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        let in_cluster = match api.get(&name).await {
            Ok(existing) => existing,
            Err(error) => {
                outcome.warnings.add(namespace, error.to_string());
                return None;
            }
        };
        // The in-cluster object without what the server sets, with the
        // restore labels the backed-up one was given.
        let mut from_cluster = reset(&in_cluster);
        from_cluster.metadata.managed_fields = None;
        from_cluster.types = object.types.clone();
        let labels = object.labels();
        for key in [BACKUP_NAME_LABEL, RESTORE_NAME_LABEL] {
            if let Some(value) = labels.get(key) {
                from_cluster.labels_mut().insert(key.into(), value.clone());
            }
        }
        let mut desired = object.clone();
        desired.metadata.managed_fields = None;
        let update = self.plan.policy.as_deref() == Some("update");
        if to_value(&from_cluster) == to_value(&desired) {
            if update {
                self.patch_labels(api, &name, object, namespace, outcome)
                    .await;
            }
            outcome.done += 1;
            return None;
        }
        if resource == "serviceaccounts" {
            let merged = merge_service_accounts(&from_cluster, &desired);
            let patch = merge_patch(&to_value(&from_cluster), &to_value(&merged));
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    outcome.done += 1;
                    return Some("updated");
                }
                Err(error) => {
                    outcome.warnings.add(namespace, error.to_string());
                    if update {
                        self.patch_labels(api, &name, object, namespace, outcome)
                            .await;
                    }
                }
            }
            return None;
        }
        match self.plan.policy.as_deref() {
            Some("update") => {
                let mut without_labels = from_cluster.clone();
                without_labels.labels_mut().remove(BACKUP_NAME_LABEL);
                without_labels.labels_mut().remove(RESTORE_NAME_LABEL);
                let patch = merge_patch(&to_value(&without_labels), &to_value(&desired));
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        outcome.done += 1;
                        outcome.log.push(format!("updated {resource} {name}"));
                        return Some("updated");
                    }
                    Err(error) => {
                        outcome.warnings.add(namespace, error.to_string());
                        self.patch_labels(api, &name, object, namespace, outcome).await;
                    }
                }
            }
            Some(_) => outcome.warnings.add(
                namespace,
                format!("could not restore, {kind} {name:?} already exists. Warning: the in-cluster version is different than the backed-up version"),
            ),
            None => outcome.warnings.add(
                namespace,
                format!("could not restore, {kind}:{name} already exists. Warning: the in-cluster version is different than the backed-up version"),
            ),
        }
        None
    }

    /// `updateBackupRestoreLabels`: only the restore labels.
    async fn patch_labels(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        object: &DynamicObject,
        namespace: Option<&str>,
        outcome: &mut Report,
    ) {
        let labels: Map<String, Value> = [BACKUP_NAME_LABEL, RESTORE_NAME_LABEL]
            .iter()
            .filter_map(|key| {
                object
                    .labels()
                    .get(*key)
                    .map(|v| (key.to_string(), json!(v)))
            })
            .collect();
        let patch = json!({ "metadata": { "labels": labels } });
        if let Err(error) = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            outcome.errors.add(namespace, error.to_string());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_priorities_put_rbac_before_pods_and_unknown_resources_after_services() {
        assert!(priority("roles.rbac.authorization.k8s.io") < priority("pods"));
        assert!(priority("serviceaccounts") < priority("secrets"));
        assert!(priority("services") < priority("deployments.apps"));
        assert!(priority("deployments.apps") < priority("clusters.cluster.x-k8s.io"));
    }
}
