//! The rule builder: from source objects and the plan's mappings to
//! Velero resource modifier rules (pure; see the parent module's doc for
//! what is rewritten and why).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{
    velero_string, Conditions, JsonPatch, MergePatch, Resource, ResourceModifiers, Rule,
    SourceObject,
};
use super::{DEPLOYMENT_CONFIGS, ROUTES, STATEFUL_SETS};
use crate::plan::Plan;

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
        unquiesce_rules(&mut out, &target);
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

/// Merge patches giving a quiesced workload its saved values back and
/// dropping the annotations (`crate::workloads::quiesce::restore_patches`):
/// the backup normally holds the original values already (it is taken
/// before quiescing) and these change nothing, but a backup taken after
/// (a final run run again) would otherwise restore the application
/// stopped.
fn unquiesce_rules(out: &mut Builder, target: &Target) {
    let resource = target.resource.api_resource();
    match crate::workloads::quiesce::restore_patches(&resource.group, &resource.kind, target.object)
    {
        Ok(patches) => out.rules.extend(patches.into_iter().map(|patch| Rule {
            conditions: target.conditions(),
            patches: Vec::new(),
            merge_patches: vec![MergePatch {
                patch_data: patch.to_string(),
            }],
        })),
        Err(reason) => out.skipped.push(format!("{}: {reason}", target.describe())),
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

/// `name` as a regular expression matching only itself.
pub(super) fn regex_escape(name: &str) -> String {
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
pub(super) fn pointer_escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
