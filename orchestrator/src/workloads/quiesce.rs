//! Stopping a namespace's workloads before the final volume copy, and
//! starting them again after a rollback: MTC's quiesce
//! (mig-controller `pkg/controller/migmigration/quiesce.go`), one pass.
//!
//! Every kind is one row of [`RULES`]: which field stops it, the value
//! that means "stopped", and the annotation that keeps the original. The
//! original is written on the object itself in the same JSON merge patch
//! that changes the field, with the object's resourceVersion as a
//! precondition, so there is never a moment where the field is changed and
//! the original lost, and a concurrent change (a user or an HPA scaling)
//! makes the patch fail with 409 instead of being overwritten; the object
//! is then read again and decided again. An annotation that is already
//! there is never replaced: quiescing twice (a second run, a run resumed
//! after `kill -9`) keeps the first original.
//!
//! Saved values are the field's JSON (`3`, `false`, `{"disk":"ssd"}`), or
//! `null` when the field was unset or an empty map, so unquiesce can
//! restore "unset" as unset.

use std::collections::BTreeMap;

use anyhow::Context as _;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::{json, Map, Value};

use crate::clusters::Cluster;
use crate::kubeops::status_code;
use crate::names::*;

/// How often one object is read and patched again after a conflict
/// before the pass gives up (the engine retries the whole step).
const CONFLICT_ATTEMPTS: usize = 5;

/// A workload this pass left stopped, for the report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Quiesced {
    pub kind: &'static str,
    pub name: String,
    /// The field that stops it, e.g. `spec.replicas`.
    pub field: &'static str,
    /// The original value kept in the annotation (JSON text).
    pub saved: String,
    /// Whether this pass changed anything (false: it was already stopped
    /// and annotated by an earlier pass).
    pub changed: bool,
}

/// A workload unquiesce gave back its original value.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Restored {
    pub kind: &'static str,
    pub name: String,
    pub field: &'static str,
    /// The restored value (JSON text, `null` for unset).
    pub value: String,
}

/// One kind of workload and how it is stopped.
pub(crate) struct Rule {
    pub kind: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    /// Dotted, for messages and the report.
    pub field: &'static str,
    /// The same, as a path into the object.
    pub path: &'static [&'static str],
    pub annotation: &'static str,
    /// The stopped value, given the current one (`Null` when unset).
    pub stop: fn(&Value) -> Value,
    /// Objects of the kind quiesce leaves alone: those another workload
    /// controls (stopping the owner stops them) and finished Jobs.
    pub skip: fn(&DynamicObject) -> bool,
}

impl Rule {
    pub(crate) fn resource(&self) -> ApiResource {
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

const REPLICAS: &[&str] = &["spec", "replicas"];

fn zero(_: &Value) -> Value {
    json!(0)
}

fn suspended(_: &Value) -> Value {
    json!(true)
}

/// The current nodeSelector plus the key no node has.
fn parked(current: &Value) -> Value {
    let mut selector = current.as_object().cloned().unwrap_or_default();
    selector.insert(
        QUIESCE_NODE_SELECTOR_KEY.into(),
        QUIESCE_NODE_SELECTOR_VALUE.into(),
    );
    Value::Object(selector)
}

fn never(_: &DynamicObject) -> bool {
    false
}

fn owned_by(object: &DynamicObject, kind: &str) -> bool {
    object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.kind == kind)
}

fn owned_by_deployment(object: &DynamicObject) -> bool {
    owned_by(object, "Deployment")
}

fn owned_by_deployment_config(object: &DynamicObject) -> bool {
    owned_by(object, "DeploymentConfig")
}

/// A Job whose Complete or Failed condition is true runs nothing more.
fn finished_job(object: &DynamicObject) -> bool {
    object.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| matches!(c["type"].as_str(), Some("Complete" | "Failed")) && c["status"] == "True")
}

/// Every kind quiesce stops, in the order it stops them: what creates
/// pods of other kinds first (a CronJob makes Jobs, a DeploymentConfig
/// ReplicationControllers), so nothing new starts behind the pass.
pub(crate) const RULES: &[Rule] = &[
    Rule {
        kind: "CronJob",
        group: "batch",
        version: "v1",
        plural: "cronjobs",
        field: "spec.suspend",
        path: &["spec", "suspend"],
        annotation: PRE_QUIESCE_SUSPEND_ANNOTATION,
        stop: suspended,
        skip: never,
    },
    Rule {
        kind: "Job",
        group: "batch",
        version: "v1",
        plural: "jobs",
        field: "spec.parallelism",
        path: &["spec", "parallelism"],
        annotation: PRE_QUIESCE_PARALLELISM_ANNOTATION,
        stop: zero,
        skip: finished_job,
    },
    Rule {
        kind: "DeploymentConfig",
        group: "apps.openshift.io",
        version: "v1",
        plural: "deploymentconfigs",
        field: "spec.replicas",
        path: REPLICAS,
        annotation: PRE_QUIESCE_REPLICAS_ANNOTATION,
        stop: zero,
        skip: never,
    },
    Rule {
        kind: "ReplicationController",
        group: "",
        version: "v1",
        plural: "replicationcontrollers",
        field: "spec.replicas",
        path: REPLICAS,
        annotation: PRE_QUIESCE_REPLICAS_ANNOTATION,
        stop: zero,
        skip: owned_by_deployment_config,
    },
    Rule {
        kind: "Deployment",
        group: "apps",
        version: "v1",
        plural: "deployments",
        field: "spec.replicas",
        path: REPLICAS,
        annotation: PRE_QUIESCE_REPLICAS_ANNOTATION,
        stop: zero,
        skip: never,
    },
    Rule {
        kind: "ReplicaSet",
        group: "apps",
        version: "v1",
        plural: "replicasets",
        field: "spec.replicas",
        path: REPLICAS,
        annotation: PRE_QUIESCE_REPLICAS_ANNOTATION,
        stop: zero,
        skip: owned_by_deployment,
    },
    Rule {
        kind: "StatefulSet",
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        field: "spec.replicas",
        path: REPLICAS,
        annotation: PRE_QUIESCE_REPLICAS_ANNOTATION,
        stop: zero,
        skip: never,
    },
    Rule {
        kind: "DaemonSet",
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        field: "spec.template.spec.nodeSelector",
        path: &["spec", "template", "spec", "nodeSelector"],
        annotation: PRE_QUIESCE_NODE_SELECTOR_ANNOTATION,
        stop: parked,
        skip: never,
    },
];

/// What to do to one object: the patch to send (none when it already is
/// as it should be) and what to report.
#[derive(Debug)]
pub(crate) struct Step<T> {
    pub patch: Option<Value>,
    pub outcome: T,
}

/// The field's current value; `Null` when unset.
fn field(object: &DynamicObject, path: &[&str]) -> Value {
    path.iter()
        .try_fold(&object.data, |value, key| value.get(*key))
        .cloned()
        .unwrap_or(Value::Null)
}

/// An empty map means the same as none (a nodeSelector `{}` selects every
/// node), and is kept as `null` so that it comes back unset.
fn normalise(value: Value) -> Value {
    match value {
        Value::Object(map) if map.is_empty() => Value::Null,
        other => other,
    }
}

/// The JSON merge patch (RFC 7386) that turns `current` into `desired`:
/// map keys that `desired` lacks become `null` (removed), so a map comes
/// back exactly, not merged with what the quiesce added.
fn merge_diff(current: &Value, desired: &Value) -> Value {
    match (current, desired) {
        (Value::Object(current), Value::Object(desired)) => {
            let mut patch = Map::new();
            for (key, want) in desired {
                match current.get(key) {
                    Some(have) if have == want => {}
                    Some(have) => {
                        patch.insert(key.clone(), merge_diff(have, want));
                    }
                    None => {
                        patch.insert(key.clone(), want.clone());
                    }
                }
            }
            for key in current.keys().filter(|k| !desired.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => desired.clone(),
    }
}

/// `{"a": {"b": value}}` for the path `a.b`.
fn nest(path: &[&str], value: Value) -> Value {
    path.iter()
        .rev()
        .fold(value, |inner, key| json!({ *key: inner }))
}

fn merge_into(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge_into(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

/// The merge patch that sets `annotation` (or removes it, with `None`)
/// and changes the rule's field to `desired`, valid only against the
/// resourceVersion it was computed from.
fn patch(rule: &Rule, object: &DynamicObject, annotation: Option<&str>, desired: &Value) -> Value {
    let mut patch = json!({"metadata": {
        "resourceVersion": object.metadata.resource_version,
        "annotations": { rule.annotation: annotation },
    }});
    let current = field(object, rule.path);
    if &current != desired {
        merge_into(&mut patch, nest(rule.path, merge_diff(&current, desired)));
    }
    patch
}

fn annotation<'a>(object: &'a DynamicObject, key: &str) -> Option<&'a String> {
    object.metadata.annotations.as_ref()?.get(key)
}

fn name(object: &DynamicObject) -> String {
    object.metadata.name.clone().unwrap_or_default()
}

/// The pure quiesce decision for one object: keep the saved original if
/// there is one (never overwrite it), save the current value otherwise,
/// and stop the workload, in one patch.
pub(crate) fn quiesce_step(rule: &Rule, object: &DynamicObject) -> Step<Quiesced> {
    let current = field(object, rule.path);
    let desired = (rule.stop)(&current);
    let existing = annotation(object, rule.annotation);
    let saved = match existing {
        Some(saved) => saved.clone(),
        None => normalise(current.clone()).to_string(),
    };
    let outcome = Quiesced {
        kind: rule.kind,
        name: name(object),
        field: rule.field,
        saved: saved.clone(),
        changed: false,
    };
    if existing.is_some() && current == desired {
        return Step {
            patch: None,
            outcome,
        };
    }
    Step {
        patch: Some(patch(rule, object, Some(&saved), &desired)),
        outcome: Quiesced {
            changed: true,
            ..outcome
        },
    }
}

/// The pure unquiesce decision for one object: nothing without the
/// annotation; otherwise the saved value back and the annotation gone, in
/// one patch. An annotation that is not JSON is an error naming it.
pub(crate) fn unquiesce_step(
    rule: &Rule,
    object: &DynamicObject,
) -> Result<Option<Step<Restored>>, String> {
    let Some(saved) = annotation(object, rule.annotation) else {
        return Ok(None);
    };
    let value: Value = serde_json::from_str(saved).map_err(|e| {
        format!(
            "{} {}: annotation {}={saved:?} is not the JSON value quiesce writes ({e}); \
             set {} by hand and remove the annotation",
            rule.kind,
            name(object),
            rule.annotation,
            rule.field
        )
    })?;
    Ok(Some(Step {
        patch: Some(patch(rule, object, None, &value)),
        outcome: Restored {
            kind: rule.kind,
            name: name(object),
            field: rule.field,
            value: value.to_string(),
        },
    }))
}

/// The merge patches that give a copy of `object` (a workload of `kind`
/// in API group `group`, as a backup holds it) back its pre-quiesce values
/// and drop the annotations, without the resourceVersion a patch of the
/// live object carries: for the restore's resource modifiers, so that a
/// backup taken after the source was quiesced (a final run run again after
/// a failure) still restores the application running. Nothing for an
/// object without saved values; an annotation that is not JSON is an
/// error naming it.
pub fn restore_patches(group: &str, kind: &str, object: &Value) -> Result<Vec<Value>, String> {
    let Ok(object) = serde_json::from_value::<DynamicObject>(object.clone()) else {
        return Ok(Vec::new());
    };
    let mut patches = Vec::new();
    for rule in RULES.iter().filter(|r| r.kind == kind && r.group == group) {
        if let Some(step) = unquiesce_step(rule, &object)? {
            if let Some(mut patch) = step.patch {
                if let Some(metadata) = patch["metadata"].as_object_mut() {
                    metadata.remove("resourceVersion");
                }
                patches.push(patch);
            }
        }
    }
    Ok(patches)
}

/// Which API groups the cluster serves, asked once per pass: a kind whose
/// group/version or resource is not served (DeploymentConfigs outside
/// OpenShift) has nothing to quiesce.
#[derive(Default)]
pub(crate) struct Served(BTreeMap<String, Vec<String>>);

impl Served {
    pub(crate) async fn has(
        &mut self,
        cluster: &Cluster,
        resource: &ApiResource,
    ) -> anyhow::Result<bool> {
        if !self.0.contains_key(&resource.api_version) {
            let listed = if resource.group.is_empty() {
                cluster
                    .client
                    .list_core_api_resources(&resource.version)
                    .await
            } else {
                cluster
                    .client
                    .list_api_group_resources(&resource.api_version)
                    .await
            };
            let plurals = match listed {
                Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
                Err(e) if status_code(&e) == Some(404) => Vec::new(),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "{}: discovering {}",
                            cluster.describe(),
                            resource.api_version
                        )
                    })
                }
            };
            self.0.insert(resource.api_version.clone(), plurals);
        }
        Ok(self.0[&resource.api_version].contains(&resource.plural))
    }
}

/// Decides and patches one object, reading it again after a conflict.
async fn converge<T>(
    api: &Api<DynamicObject>,
    rule: &Rule,
    mut object: DynamicObject,
    decide: impl Fn(&DynamicObject) -> Result<Option<Step<T>>, String>,
) -> anyhow::Result<Option<T>> {
    let name = name(&object);
    for _ in 0..CONFLICT_ATTEMPTS {
        let Some(step) = decide(&object).map_err(anyhow::Error::msg)? else {
            return Ok(None);
        };
        let Some(patch) = step.patch else {
            return Ok(Some(step.outcome));
        };
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(Some(step.outcome)),
            Err(e) if status_code(&e) == Some(409) => match api.get_opt(&name).await? {
                Some(fresh) => object = fresh,
                None => return Ok(None),
            },
            Err(e) if status_code(&e) == Some(404) => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("patching {} {name}", rule.kind));
            }
        }
    }
    anyhow::bail!(
        "{} {name}: changed by someone else {CONFLICT_ATTEMPTS} times while being patched",
        rule.kind
    )
}

/// Runs `decide` on every object of every served kind of `namespace`.
async fn each<T>(
    cluster: &Cluster,
    namespace: &str,
    decide: impl Fn(&Rule, &DynamicObject) -> Result<Option<Step<T>>, String>,
) -> anyhow::Result<Vec<T>> {
    let mut served = Served::default();
    let mut done = Vec::new();
    for rule in RULES {
        if !served.has(cluster, &rule.resource()).await? {
            continue;
        }
        let api = Api::<DynamicObject>::namespaced_with(
            cluster.client.clone(),
            namespace,
            &rule.resource(),
        );
        let list = api.list(&ListParams::default()).await.with_context(|| {
            format!(
                "{}: listing {} in {namespace}",
                cluster.describe(),
                rule.plural
            )
        })?;
        for object in list.items {
            let outcome = converge(&api, rule, object, |o| decide(rule, o))
                .await
                .with_context(|| format!("{}: namespace {namespace}", cluster.describe()))?;
            done.extend(outcome);
        }
    }
    Ok(done)
}

/// Stops every workload of `namespace` (see the module doc), saving each
/// original on the object. Idempotent: objects already stopped keep their
/// first saved value and are reported with `changed: false`.
pub async fn quiesce(cluster: &Cluster, namespace: &str) -> anyhow::Result<Vec<Quiesced>> {
    each(cluster, namespace, |rule, object| {
        Ok((!(rule.skip)(object)).then(|| quiesce_step(rule, object)))
    })
    .await
}

/// Gives every workload of `namespace` that carries a saved value exactly
/// that value back, removing the annotation in the same patch. Objects
/// without annotations are untouched, so running it again does nothing.
/// Unlike quiesce it skips nothing: a Job that finished while stopped, or
/// a ReplicaSet adopted since, still gets its value back.
pub async fn unquiesce(cluster: &Cluster, namespace: &str) -> anyhow::Result<Vec<Restored>> {
    each(cluster, namespace, unquiesce_step).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: &str) -> &'static Rule {
        RULES.iter().find(|r| r.kind == kind).unwrap()
    }

    fn object(rule: &Rule, data: Value, annotations: &[(&str, &str)]) -> DynamicObject {
        let mut object = DynamicObject::new("app", &rule.resource())
            .within("shop")
            .data(data);
        object.metadata.resource_version = Some("7".into());
        if !annotations.is_empty() {
            object.metadata.annotations = Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        object
    }

    /// Applies a merge patch the way the API server does, for round trips.
    fn apply(object: &DynamicObject, patch: &Value) -> DynamicObject {
        fn merge(target: &mut Value, patch: &Value) {
            match patch {
                Value::Object(patch) => {
                    if !target.is_object() {
                        *target = json!({});
                    }
                    let map = target.as_object_mut().unwrap();
                    for (key, value) in patch {
                        if value.is_null() {
                            map.remove(key);
                        } else {
                            merge(map.entry(key.clone()).or_insert(Value::Null), value);
                        }
                    }
                }
                other => *target = other.clone(),
            }
        }
        let mut whole = serde_json::to_value(object).unwrap();
        merge(&mut whole, patch);
        serde_json::from_value(whole).unwrap()
    }

    #[test]
    fn quiesce_saves_the_original_and_stops_in_one_patch() {
        let deployment = rule("Deployment");
        let step = quiesce_step(
            deployment,
            &object(deployment, json!({"spec": {"replicas": 3}}), &[]),
        );
        assert_eq!(
            step.patch.unwrap(),
            json!({
                "metadata": {
                    "resourceVersion": "7",
                    "annotations": {PRE_QUIESCE_REPLICAS_ANNOTATION: "3"},
                },
                "spec": {"replicas": 0},
            })
        );
        assert_eq!(step.outcome.saved, "3");
        assert!(step.outcome.changed);
    }

    #[test]
    fn a_saved_original_is_never_overwritten() {
        let sts = rule("StatefulSet");
        // Already quiesced: nothing to send, the original reported.
        let quiesced = object(
            sts,
            json!({"spec": {"replicas": 0}}),
            &[(PRE_QUIESCE_REPLICAS_ANNOTATION, "4")],
        );
        let step = quiesce_step(sts, &quiesced);
        assert!(step.patch.is_none());
        assert_eq!(
            (step.outcome.saved.as_str(), step.outcome.changed),
            ("4", false)
        );
        // Scaled up again behind our back: stopped again, original kept.
        let scaled = object(
            sts,
            json!({"spec": {"replicas": 2}}),
            &[(PRE_QUIESCE_REPLICAS_ANNOTATION, "4")],
        );
        let patch = quiesce_step(sts, &scaled).patch.unwrap();
        assert_eq!(
            patch["metadata"]["annotations"][PRE_QUIESCE_REPLICAS_ANNOTATION],
            "4"
        );
        assert_eq!(patch["spec"]["replicas"], 0);
    }

    #[test]
    fn a_workload_already_at_zero_is_annotated_with_zero() {
        let deployment = rule("Deployment");
        let idle = object(deployment, json!({"spec": {"replicas": 0}}), &[]);
        let patch = quiesce_step(deployment, &idle).patch.unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {
                "resourceVersion": "7",
                "annotations": {PRE_QUIESCE_REPLICAS_ANNOTATION: "0"},
            }})
        );
        let quiesced = apply(&idle, &patch);
        let restored = unquiesce_step(deployment, &quiesced).unwrap().unwrap();
        let back = apply(&quiesced, &restored.patch.unwrap());
        assert_eq!(back.data["spec"]["replicas"], 0);
        assert!(back.metadata.annotations.unwrap_or_default().is_empty());
    }

    #[test]
    fn every_kind_round_trips_exactly() {
        let cases = [
            ("Deployment", json!({"spec": {"replicas": 3}})),
            ("ReplicaSet", json!({"spec": {"replicas": 1}})),
            ("ReplicationController", json!({"spec": {"replicas": 2}})),
            ("DeploymentConfig", json!({"spec": {"replicas": 5}})),
            ("StatefulSet", json!({"spec": {"replicas": 2}})),
            (
                "CronJob",
                json!({"spec": {"suspend": false, "schedule": "* * * * *"}}),
            ),
            ("CronJob", json!({"spec": {"schedule": "* * * * *"}})),
            ("Job", json!({"spec": {"parallelism": 3}})),
            ("Job", json!({"spec": {"completions": 1}})),
            (
                "DaemonSet",
                json!({"spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}}}),
            ),
            (
                "DaemonSet",
                json!({"spec": {"template": {"spec": {"containers": []}}}}),
            ),
        ];
        for (kind, data) in cases {
            let rule = rule(kind);
            let original = object(rule, data.clone(), &[]);
            let quiesced = apply(&original, &quiesce_step(rule, &original).patch.unwrap());
            assert_eq!(
                field(&quiesced, rule.path),
                (rule.stop)(&field(&original, rule.path))
            );
            // Quiescing again changes nothing.
            assert!(quiesce_step(rule, &quiesced).patch.is_none(), "{kind}");
            let step = unquiesce_step(rule, &quiesced).unwrap().unwrap();
            let restored = apply(&quiesced, &step.patch.unwrap());
            assert_eq!(restored.data, data, "{kind}");
            assert!(restored
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .is_empty());
            assert!(unquiesce_step(rule, &restored).unwrap().is_none());
        }
    }

    #[test]
    fn an_empty_node_selector_comes_back_absent() {
        let ds = rule("DaemonSet");
        let data = json!({"spec": {"template": {"spec": {"nodeSelector": {}}}}});
        let original = object(ds, data, &[]);
        let step = quiesce_step(ds, &original);
        assert_eq!(step.outcome.saved, "null");
        let quiesced = apply(&original, &step.patch.unwrap());
        assert_eq!(
            quiesced.data["spec"]["template"]["spec"]["nodeSelector"],
            json!({QUIESCE_NODE_SELECTOR_KEY: QUIESCE_NODE_SELECTOR_VALUE})
        );
        let back = unquiesce_step(ds, &quiesced).unwrap().unwrap();
        let back = apply(&quiesced, &back.patch.unwrap());
        assert!(back.data["spec"]["template"]["spec"]
            .get("nodeSelector")
            .is_none());
    }

    #[test]
    fn a_corrupt_annotation_is_named() {
        let job = rule("Job");
        let broken = object(
            job,
            json!({"spec": {"parallelism": 0}}),
            &[(PRE_QUIESCE_PARALLELISM_ANNOTATION, "three")],
        );
        let error = unquiesce_step(job, &broken).unwrap_err();
        assert!(error.contains("Job app"), "{error}");
        assert!(
            error.contains(PRE_QUIESCE_PARALLELISM_ANNOTATION),
            "{error}"
        );
    }

    #[test]
    fn owned_and_finished_objects_are_skipped() {
        let rs = rule("ReplicaSet");
        let mut owned = object(rs, json!({"spec": {"replicas": 1}}), &[]);
        owned.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                uid: "u".into(),
                ..Default::default()
            },
        ]);
        assert!((rs.skip)(&owned));
        let job = rule("Job");
        let done = object(
            job,
            json!({"spec": {}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
            &[],
        );
        assert!((job.skip)(&done));
        assert!(!(job.skip)(&object(job, json!({"spec": {}}), &[])));
    }
}
