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
//!
//! Here: the document types (Velero's Go types, decoded strictly) and the
//! ConfigMap; `resources.rs`: which kinds are looked at and how they are
//! read from the source; `rules.rs`: the pure builder.

mod resources;
mod rules;

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use kube::Api;
use serde::{Deserialize, Serialize};

pub use resources::*;
pub use rules::{rules, Rewrites, RuleSet};

use super::{migration_labels, VeleroConfig};
use crate::clusters::Cluster;
use crate::kubeops::apply;
use crate::names::velero_name;

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

#[cfg(test)]
mod tests;
