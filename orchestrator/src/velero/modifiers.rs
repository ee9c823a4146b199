//! The rewrites a migration needs on the destination, as Velero resource
//! modifiers (Velero 1.12+; internal/resourcemodifiers in Velero's
//! source): a `version: v1` rule document in a one-key ConfigMap in
//! Velero's namespace, named by the Restore's `spec.resourceModifier`.
//!
//! Rules are built by a pure function from the source objects
//! ([`SourceObject`], listed by [`source_objects`]) and the plan's
//! mappings ([`Rewrites`]). JSON patch cannot replace part of a string, so
//! every rewrite is its own rule for one object (conditions:
//! `groupResource`, `resourceNameRegex` `^name$`, `namespaces` with the
//! *source* namespace: Velero matches conditions before it sets the
//! mapped namespace, restore.go `restoreItem`). Each rule first `test`s
//! the value it replaces: when the object changed after the rules were
//! built, Velero skips the rule (a failed test is not an error) instead
//! of writing a wrong value at a shifted index. (A path whose parent is
//! gone altogether, say a container index past the end, is a restore
//! error for that object, reported per resource by [`super::results`].)
//!
//! What is rewritten:
//!
//! - (a) image references into the source's internal registry (any of its
//!   internal host names) point at the destination's first internal host,
//!   same repository path (its namespace renamed when the plan renames it),
//!   same tag or digest: every container and initContainer of the pod
//!   templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,
//!   CronJobs, DeploymentConfigs and ReplicationControllers, of Pods, and
//!   DeploymentConfig triggers' `lastTriggeredImage`. ImageStreamTag
//!   references (`image.openshift.io/triggers` annotations, DeploymentConfig
//!   `imageChangeParams.from`) are relative to the object's namespace unless
//!   they name one; a named source namespace the plan renames is renamed
//!   (the annotation, a JSON string, through a merge patch, since Velero's
//!   JSON patch values cannot carry quotes).
//! - (b) Routes whose host was generated (`openshift.io/host.generated:
//!   "true"`) lose `spec.host`, so the destination's router generates one
//!   in its own domain. Hosts a user chose are kept.
//! - (c) StatefulSet `volumeClaimTemplates[].spec.storageClassName`, mapped
//!   by the plan's storage class mapping (the PVCs DVM creates already
//!   are; new replicas' claims must match).
//! - (d) Pinning to source nodes: a pod template's `nodeName` and a
//!   `nodeSelector` on `kubernetes.io/hostname` name nodes the destination
//!   does not have, so the pods would never schedule; both are removed.
//!   Velero itself clears Service cluster IPs and node ports (service
//!   action) and a Pod's `nodeName` (pod action), so those are left to it.
//!   Other node selectors and affinities name labels, which may well exist
//!   on the destination, and are kept.

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, ListParams, ObjectMeta};
use kube::Api;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{migration_labels, VeleroConfig};
use crate::clusters::Cluster;
use crate::kubeops::{apply, status_code};
use crate::names::velero_name;
use crate::plan::Plan;

/// The one data key of the modifier ConfigMap (Velero takes any one key).
pub const DATA_KEY: &str = "resource-modifiers.yaml";

/// A resource modifier document, field for field Velero's
/// `ResourceModifiers` (which it decodes strictly: no other fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceModifiers {
    pub version: String,
    pub resource_modifier_rules: Vec<Rule>,
}

/// Velero's `ResourceModifierRule`: conditions and one kind of patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub conditions: Conditions,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<JsonPatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge_patches: Vec<MergePatch>,
}

/// Velero's `Conditions` (the parts used here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conditions {
    /// `resource.group` as Velero names it (`deployments.apps`, `pods`).
    pub group_resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// Velero's `JSONPatch`. `value` is a string Velero splices into JSON:
/// quoted unless it reads as null, a boolean, a number, an object or an
/// array ([`velero_string`] makes a string stay a string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonPatch {
    pub operation: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Velero's `JSONMergePatch`: an RFC 7386 merge patch as JSON or YAML text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MergePatch {
    pub patch_data: String,
}

/// What the plan asks to be rewritten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrites {
    /// The host names image references use for the source's internal
    /// registry; empty when images do not move.
    pub source_registry_hosts: Vec<String>,
    /// The destination's first internal registry host.
    pub destination_registry_host: Option<String>,
    /// Source namespace to destination namespace, for every namespace.
    pub namespaces: BTreeMap<String, String>,
    pub storage_classes: BTreeMap<String, String>,
}

impl Rewrites {
    pub fn from_plan(plan: &Plan) -> Self {
        let (source_registry_hosts, destination_registry_host) = match &plan.images {
            Some(images) => (
                images.source.internal_hosts(),
                images.destination.internal_hosts().into_iter().next(),
            ),
            None => (Vec::new(), None),
        };
        Self {
            source_registry_hosts,
            destination_registry_host,
            namespaces: plan
                .namespaces
                .iter()
                .map(|m| (m.source.clone(), m.destination.clone()))
                .collect(),
            storage_classes: plan.storage_class_mapping.clone(),
        }
    }

    /// `reference` pointing at the destination's registry, or `None` when
    /// it does not point into the source's internal registry.
    pub fn image(&self, reference: &str) -> Option<String> {
        let destination = self.destination_registry_host.as_ref()?;
        let (host, path) = reference.split_once('/')?;
        if !self.source_registry_hosts.iter().any(|h| h == host) {
            return None;
        }
        let path = match path.split_once('/') {
            Some((namespace, rest)) => match self.renamed(namespace) {
                Some(renamed) => format!("{renamed}/{rest}"),
                None => path.to_string(),
            },
            None => path.to_string(),
        };
        Some(format!("{destination}/{path}"))
    }

    /// The new name of a source namespace the plan renames.
    fn renamed(&self, namespace: &str) -> Option<&str> {
        self.namespaces
            .get(namespace)
            .map(String::as_str)
            .filter(|to| *to != namespace)
    }
}

/// A resource whose objects may need rewriting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// JSON pointer to the pod spec, for workloads.
    pub pod_spec: Option<&'static str>,
}

impl Resource {
    /// Velero's name: `plural` for the core group, else `plural.group`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        let api_version = if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        };
        ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version,
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }
}

const TEMPLATE: &str = "/spec/template/spec";

const fn workload(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    pod_spec: &'static str,
) -> Resource {
    Resource {
        group,
        version: "v1",
        kind,
        plural,
        pod_spec: Some(pod_spec),
    }
}

pub const DEPLOYMENTS: Resource = workload("apps", "Deployment", "deployments", TEMPLATE);
pub const STATEFUL_SETS: Resource = workload("apps", "StatefulSet", "statefulsets", TEMPLATE);
pub const DAEMON_SETS: Resource = workload("apps", "DaemonSet", "daemonsets", TEMPLATE);
pub const REPLICA_SETS: Resource = workload("apps", "ReplicaSet", "replicasets", TEMPLATE);
pub const JOBS: Resource = workload("batch", "Job", "jobs", TEMPLATE);
pub const CRON_JOBS: Resource = workload(
    "batch",
    "CronJob",
    "cronjobs",
    "/spec/jobTemplate/spec/template/spec",
);
pub const DEPLOYMENT_CONFIGS: Resource = workload(
    "apps.openshift.io",
    "DeploymentConfig",
    "deploymentconfigs",
    TEMPLATE,
);
pub const REPLICATION_CONTROLLERS: Resource = workload(
    "",
    "ReplicationController",
    "replicationcontrollers",
    TEMPLATE,
);
pub const PODS: Resource = workload("", "Pod", "pods", "/spec");
pub const ROUTES: Resource = Resource {
    group: "route.openshift.io",
    version: "v1",
    kind: "Route",
    plural: "routes",
    pod_spec: None,
};

/// Every resource [`rules`] looks at.
pub const RESOURCES: &[Resource] = &[
    DEPLOYMENTS,
    STATEFUL_SETS,
    DAEMON_SETS,
    REPLICA_SETS,
    JOBS,
    CRON_JOBS,
    DEPLOYMENT_CONFIGS,
    REPLICATION_CONTROLLERS,
    PODS,
    ROUTES,
];

/// One object of a source namespace, as read from the API.
#[derive(Debug, Clone)]
pub struct SourceObject {
    pub resource: Resource,
    pub object: Value,
}

/// The rules for `objects`, and what could not be expressed (a value
/// Velero's JSON patch cannot carry).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub skipped: Vec<String>,
}

impl RuleSet {
    /// The document for the ConfigMap; `None` without rules (Velero
    /// refuses an empty rule list, so the restore then names no modifier).
    pub fn document(&self) -> Option<ResourceModifiers> {
        (!self.rules.is_empty()).then(|| ResourceModifiers {
            version: "v1".into(),
            resource_modifier_rules: self.rules.clone(),
        })
    }
}

/// The rules that rewrite `objects` as `rewrites` asks (pure).
pub fn rules(objects: &[SourceObject], rewrites: &Rewrites) -> RuleSet {
    let mut out = Builder::default();
    for source in objects {
        let Some(target) = Target::new(source) else {
            continue;
        };
        if let Some(pod_spec) = source.resource.pod_spec {
            pod_spec_rules(&mut out, &target, pod_spec, rewrites);
            annotation_trigger_rule(&mut out, &target, rewrites);
        }
        if source.resource == DEPLOYMENT_CONFIGS {
            deployment_config_trigger_rules(&mut out, &target, rewrites);
        }
        if source.resource == STATEFUL_SETS {
            storage_class_rules(&mut out, &target, rewrites);
        }
        if source.resource == ROUTES {
            route_host_rule(&mut out, &target);
        }
    }
    RuleSet {
        rules: out.rules,
        skipped: out.skipped,
    }
}

/// The object a rule is for.
struct Target<'a> {
    resource: Resource,
    namespace: String,
    name: String,
    object: &'a Value,
}

impl<'a> Target<'a> {
    fn new(source: &'a SourceObject) -> Option<Self> {
        let metadata = source.object.get("metadata")?;
        Some(Self {
            resource: source.resource,
            namespace: metadata.get("namespace")?.as_str()?.to_string(),
            name: metadata.get("name")?.as_str()?.to_string(),
            object: &source.object,
        })
    }

    fn conditions(&self) -> Conditions {
        Conditions {
            group_resource: self.resource.group_resource(),
            resource_name_regex: Some(format!("^{}$", regex_escape(&self.name))),
            namespaces: vec![self.namespace.clone()],
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} {}/{}",
            self.resource.group_resource(),
            self.namespace,
            self.name
        )
    }
}

#[derive(Default)]
struct Builder {
    rules: Vec<Rule>,
    skipped: Vec<String>,
}

impl Builder {
    /// A rule that replaces the string at `path` (holding `old`) by `new`,
    /// or removes it when `new` is `None`; only if `old` is still there.
    fn replace(&mut self, target: &Target, path: &str, old: &str, new: Option<&str>) {
        if new == Some(old) {
            // Both clusters name their registry alike and the namespace
            // keeps its name: nothing to change, no rule.
            return;
        }
        let (Some(old_value), Some(new_value)) = (
            velero_string(old),
            new.map(velero_string).unwrap_or(Some(String::new())),
        ) else {
            self.skipped.push(format!(
                "{} {path}: a value with quotes or backslashes cannot go through Velero's JSON patch",
                target.describe()
            ));
            return;
        };
        let test = JsonPatch {
            operation: "test".into(),
            path: path.into(),
            value: Some(old_value),
        };
        let change = match new {
            Some(_) => JsonPatch {
                operation: "replace".into(),
                path: path.into(),
                value: Some(new_value),
            },
            None => JsonPatch {
                operation: "remove".into(),
                path: path.into(),
                value: None,
            },
        };
        self.rules.push(Rule {
            conditions: target.conditions(),
            patches: vec![test, change],
            merge_patches: Vec::new(),
        });
    }
}

/// (a) and (d) for one pod spec.
fn pod_spec_rules(out: &mut Builder, target: &Target, pod_spec: &str, rewrites: &Rewrites) {
    let Some(spec) = target.object.pointer(pod_spec) else {
        return;
    };
    for list in ["initContainers", "containers"] {
        let containers = spec.get(list).and_then(Value::as_array);
        for (i, container) in containers.into_iter().flatten().enumerate() {
            let Some(image) = container.get("image").and_then(Value::as_str) else {
                continue;
            };
            if let Some(new) = rewrites.image(image) {
                let path = format!("{pod_spec}/{list}/{i}/image");
                out.replace(target, &path, image, Some(&new));
            }
        }
    }
    if let Some(node) = spec.get("nodeName").and_then(Value::as_str) {
        out.replace(target, &format!("{pod_spec}/nodeName"), node, None);
    }
    let hostname = spec
        .pointer("/nodeSelector")
        .and_then(|s| s.get("kubernetes.io/hostname"))
        .and_then(Value::as_str);
    if let Some(host) = hostname {
        let path = format!(
            "{pod_spec}/nodeSelector/{}",
            pointer_escape("kubernetes.io/hostname")
        );
        out.replace(target, &path, host, None);
    }
}

const TRIGGERS_ANNOTATION: &str = "image.openshift.io/triggers";

/// (a) `image.openshift.io/triggers` entries naming a renamed namespace.
fn annotation_trigger_rule(out: &mut Builder, target: &Target, rewrites: &Rewrites) {
    let Some(text) = target
        .object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(TRIGGERS_ANNOTATION))
        .and_then(Value::as_str)
    else {
        return;
    };
    let Ok(mut triggers) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let mut changed = false;
    for trigger in triggers.as_array_mut().into_iter().flatten() {
        changed |= rename_from_namespace(trigger.get_mut("from"), rewrites);
    }
    if changed {
        let patch =
            json!({"metadata": {"annotations": {TRIGGERS_ANNOTATION: triggers.to_string()}}});
        out.rules.push(Rule {
            conditions: target.conditions(),
            patches: Vec::new(),
            merge_patches: vec![MergePatch {
                patch_data: patch.to_string(),
            }],
        });
    }
}

/// Renames `from.namespace` of an ImageStreamTag reference if the plan
/// renames it; true if it did.
fn rename_from_namespace(from: Option<&mut Value>, rewrites: &Rewrites) -> bool {
    let Some(from) = from else { return false };
    let renamed = from
        .get("namespace")
        .and_then(Value::as_str)
        .and_then(|ns| rewrites.renamed(ns))
        .map(String::from);
    match renamed {
        Some(to) => {
            from["namespace"] = json!(to);
            true
        }
        None => false,
    }
}

/// (a) DeploymentConfig image change triggers.
fn deployment_config_trigger_rules(out: &mut Builder, target: &Target, rewrites: &Rewrites) {
    let triggers = target
        .object
        .pointer("/spec/triggers")
        .and_then(Value::as_array);
    for (i, trigger) in triggers.into_iter().flatten().enumerate() {
        let Some(params) = trigger.get("imageChangeParams") else {
            continue;
        };
        let base = format!("/spec/triggers/{i}/imageChangeParams");
        if let Some(ns) = params.pointer("/from/namespace").and_then(Value::as_str) {
            if let Some(to) = rewrites.renamed(ns) {
                out.replace(target, &format!("{base}/from/namespace"), ns, Some(to));
            }
        }
        if let Some(image) = params.get("lastTriggeredImage").and_then(Value::as_str) {
            if let Some(new) = rewrites.image(image) {
                out.replace(
                    target,
                    &format!("{base}/lastTriggeredImage"),
                    image,
                    Some(&new),
                );
            }
        }
    }
}

/// (c) StatefulSet claim templates' storage classes.
fn storage_class_rules(out: &mut Builder, target: &Target, rewrites: &Rewrites) {
    let templates = target
        .object
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array);
    for (i, template) in templates.into_iter().flatten().enumerate() {
        let Some(class) = template
            .pointer("/spec/storageClassName")
            .and_then(Value::as_str)
        else {
            continue;
        };
        match rewrites.storage_classes.get(class) {
            Some(to) if to != class => {
                let path = format!("/spec/volumeClaimTemplates/{i}/spec/storageClassName");
                out.replace(target, &path, class, Some(to));
            }
            _ => {}
        }
    }
}

/// (b) A generated Route host.
fn route_host_rule(out: &mut Builder, target: &Target) {
    let generated = target
        .object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get("openshift.io/host.generated"))
        .and_then(Value::as_str)
        == Some("true");
    let host = target.object.pointer("/spec/host").and_then(Value::as_str);
    if let (true, Some(host)) = (generated, host) {
        out.replace(target, "/spec/host", host, None);
    }
}

/// `value` as Velero's JSON patch `value` must be written so that it stays
/// a JSON string: Velero (json_patch.go `addQuotes`) leaves values that
/// read as null, booleans, numbers, objects or arrays unquoted, and strips
/// one pair of surrounding quotes before quoting. `None` for a value
/// holding a quote or backslash, which Velero splices in unescaped.
pub fn velero_string(value: &str) -> Option<String> {
    if value.contains(['"', '\\']) || value.chars().any(char::is_control) {
        return None;
    }
    let lower = value.to_ascii_lowercase();
    let unquoted = matches!(lower.as_str(), "null" | "true" | "false")
        || value.starts_with(['{', '['])
        || go_parses_as_float(&lower);
    Some(if unquoted {
        format!("\"{value}\"")
    } else {
        value.to_string()
    })
}

/// Whether Go's `strconv.ParseFloat` may accept `lower`: Rust's parser
/// plus Go's extras (hexadecimal, `inf`/`infinity`/`nan` in any sign,
/// underscores), erring towards quoting.
fn go_parses_as_float(lower: &str) -> bool {
    let unsigned = lower.trim_start_matches(['+', '-']);
    lower.parse::<f64>().is_ok()
        || unsigned.starts_with("0x")
        || matches!(unsigned, "inf" | "infinity" | "nan")
        || (unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            && unsigned.replace('_', "").parse::<f64>().is_ok())
}

/// `name` as a regular expression matching only itself.
fn regex_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A JSON pointer token (RFC 6901).
fn pointer_escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The name of a migration's resource modifier ConfigMap.
pub fn configmap_name(migration: &str) -> String {
    velero_name(migration, "modifiers")
}

/// The ConfigMap holding `document`, in Velero's namespace.
pub fn configmap(
    cfg: &VeleroConfig,
    migration: &str,
    document: &ResourceModifiers,
) -> anyhow::Result<ConfigMap> {
    let yaml = serde_yaml::to_string(document).context("writing the resource modifiers")?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(configmap_name(migration)),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(migration_labels(migration)),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(DATA_KEY.to_string(), yaml)])),
        ..ConfigMap::default()
    })
}

/// Writes the modifier ConfigMap on the destination (server-side apply:
/// a second run converges on the same content).
pub async fn ensure_configmap(destination: &Cluster, configmap: &ConfigMap) -> anyhow::Result<()> {
    let namespace = configmap.metadata.namespace.as_deref().unwrap_or_default();
    let api = Api::<ConfigMap>::namespaced(destination.client.clone(), namespace);
    apply(&api, configmap).await.with_context(|| {
        format!(
            "{}: writing the resource modifier ConfigMap {namespace}/{}",
            destination.describe(),
            configmap.metadata.name.as_deref().unwrap_or_default()
        )
    })?;
    Ok(())
}

/// The objects of `namespaces` on the source that [`rules`] looks at,
/// except those of resources the backup leaves out (no rule could apply
/// to them). A resource the cluster does not serve (Routes and
/// DeploymentConfigs off OpenShift) has no objects.
pub async fn source_objects(
    source: &Cluster,
    namespaces: &[String],
) -> anyhow::Result<Vec<SourceObject>> {
    let excluded = super::backup::EXCLUDED_RESOURCES;
    let mut out = Vec::new();
    for resource in RESOURCES {
        if excluded.contains(&resource.group_resource().as_str()) {
            continue;
        }
        for namespace in namespaces {
            let api: Api<DynamicObject> =
                Api::namespaced_with(source.client.clone(), namespace, &resource.api_resource());
            let list = match api.list(&ListParams::default()).await {
                Ok(list) => list,
                Err(e) if status_code(&e) == Some(404) => break,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "{}: listing {} in namespace {namespace}",
                            source.describe(),
                            resource.group_resource()
                        )
                    })
                }
            };
            for item in list.items {
                let object = serde_json::to_value(&item)
                    .with_context(|| format!("{}: reading {}", source.describe(), resource.kind))?;
                out.push(SourceObject {
                    resource: *resource,
                    object,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
