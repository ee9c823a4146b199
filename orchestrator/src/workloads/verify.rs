//! Whether the restored workloads came up on the destination, decided as
//! `kubectl rollout status` decides (kubectl
//! `pkg/polymorphichelpers/rollout_status.go`), and, for those that did
//! not, why, in the words of their pods (ImagePullBackOff with its
//! message, CrashLoopBackOff with the last exit code, the scheduler's
//! Unschedulable message).
//!
//! [`rollout`] is the pure decision over k8s-openapi objects; [`readiness`]
//! lists a namespace once and applies it. Nothing waits: the engine calls
//! `readiness` again until every workload is complete, one has failed, or
//! its own deadline passes.
//!
//! Differences from kubectl, each because a migration needs an answer
//! where kubectl gives an error:
//! - A workload whose spec and status both say 0 replicas is complete,
//!   whatever its observedGeneration: it was scaled to 0 on purpose (the
//!   source had 0) and there is nothing to wait for.
//! - StatefulSets and DaemonSets with the OnDelete strategy (kubectl
//!   refuses them) are complete when all their pods are ready/available.
//! - ReplicaSets and ReplicationControllers not owned by another workload,
//!   and OpenShift DeploymentConfigs, are complete when the controller saw
//!   the latest spec and all replicas are ready and available; a
//!   DeploymentConfig fails like a Deployment, on ProgressDeadlineExceeded.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::quiesce::Served;
use crate::clusters::Cluster;

/// Where a workload's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutState {
    Complete,
    /// Not there yet; `pods` says why, where a pod knows.
    Progressing {
        message: String,
        pods: Vec<PodProblem>,
    },
    /// It will not get there by itself (progress deadline exceeded).
    Failed {
        message: String,
        pods: Vec<PodProblem>,
    },
}

/// Why one pod of a workload is not ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    pub pod: String,
    pub reason: String,
}

/// A workload whose rollout can be judged.
#[derive(Clone, Debug)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    DaemonSet(DaemonSet),
    ReplicaSet(ReplicaSet),
    ReplicationController(ReplicationController),
    /// `apps.openshift.io/v1`, which k8s-openapi does not have.
    DeploymentConfig(DynamicObject),
}

/// One workload's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadReadiness {
    pub kind: &'static str,
    pub name: String,
    pub state: RolloutState,
}

/// Every workload of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub workloads: Vec<WorkloadReadiness>,
}

impl Readiness {
    /// Every rollout is complete.
    pub fn complete(&self) -> bool {
        self.workloads
            .iter()
            .all(|w| w.state == RolloutState::Complete)
    }

    /// The workloads whose rollout failed.
    pub fn failed(&self) -> impl Iterator<Item = &WorkloadReadiness> {
        self.workloads
            .iter()
            .filter(|w| matches!(w.state, RolloutState::Failed { .. }))
    }

    /// The workloads still progressing.
    pub fn progressing(&self) -> impl Iterator<Item = &WorkloadReadiness> {
        self.workloads
            .iter()
            .filter(|w| matches!(w.state, RolloutState::Progressing { .. }))
    }
}

impl fmt::Display for WorkloadReadiness {
    /// `Deployment web: 1 of 2 updated replicas are available (pod web-x:
    /// container app: ImagePullBackOff: ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.kind, self.name)?;
        match &self.state {
            RolloutState::Complete => write!(f, "rolled out"),
            RolloutState::Progressing { message, pods }
            | RolloutState::Failed { message, pods } => {
                write!(f, "{message}")?;
                if !pods.is_empty() {
                    let pods: Vec<String> = pods
                        .iter()
                        .map(|p| format!("pod {}: {}", p.pod, p.reason))
                        .collect();
                    write!(f, " ({})", pods.join("; "))?;
                }
                Ok(())
            }
        }
    }
}

/// The numbers every replica-counting workload reports, under one name.
struct Counts {
    generation: i64,
    observed: i64,
    /// spec.replicas; unset means 1, as the API server defaults it.
    desired: i32,
    replicas: i32,
    updated: i32,
    ready: i32,
    available: i32,
}

/// The decision before pods are consulted.
enum Verdict {
    Done,
    Waiting(String),
    Failed(String),
}

impl Counts {
    fn scaled_to_zero(&self) -> bool {
        self.desired == 0 && self.replicas == 0
    }

    /// kubectl's DeploymentStatusViewer.
    fn deployment(&self, deadline_exceeded: bool) -> Verdict {
        if self.generation > self.observed {
            return Verdict::Waiting("waiting for the spec update to be observed".into());
        }
        if deadline_exceeded {
            return Verdict::Failed("exceeded its progress deadline".into());
        }
        if self.updated < self.desired {
            return Verdict::Waiting(format!(
                "{} out of {} new replicas have been updated",
                self.updated, self.desired
            ));
        }
        if self.replicas > self.updated {
            return Verdict::Waiting(format!(
                "{} old replicas are pending termination",
                self.replicas - self.updated
            ));
        }
        if self.available < self.updated {
            return Verdict::Waiting(format!(
                "{} of {} updated replicas are available",
                self.available, self.updated
            ));
        }
        Verdict::Done
    }

    /// ReplicaSets and ReplicationControllers (kubectl has no viewer).
    fn replica_set(&self) -> Verdict {
        if self.generation > self.observed {
            return Verdict::Waiting("waiting for the spec update to be observed".into());
        }
        if self.ready < self.desired || self.available < self.desired {
            return Verdict::Waiting(format!(
                "{} of {} replicas are ready, {} available",
                self.ready, self.desired, self.available
            ));
        }
        Verdict::Done
    }
}

fn generation(meta: &ObjectMeta) -> i64 {
    meta.generation.unwrap_or(0)
}

/// kubectl's StatefulSetStatusViewer.
fn stateful_set(set: &StatefulSet) -> Verdict {
    let spec = set.spec.clone();
    let status = set.status.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    let strategy = spec.update_strategy.unwrap_or_default();
    let waiting_ready = || Verdict::Waiting(format!("{} pods are not ready", desired - ready));
    if strategy.type_.as_deref() == Some("OnDelete") {
        return if ready < desired {
            waiting_ready()
        } else {
            Verdict::Done
        };
    }
    let observed = status.observed_generation.unwrap_or(0);
    if observed == 0 || generation(&set.metadata) > observed {
        return Verdict::Waiting("waiting for the spec update to be observed".into());
    }
    if ready < desired {
        return waiting_ready();
    }
    if let Some(rolling) = strategy.rolling_update {
        if let Some(partition) = rolling.partition {
            let want = desired - partition;
            let updated = status.updated_replicas.unwrap_or(0);
            if updated < want {
                return Verdict::Waiting(format!(
                    "partitioned roll out: {updated} out of {want} new pods have been updated"
                ));
            }
        }
        return Verdict::Done;
    }
    if status.update_revision != status.current_revision {
        return Verdict::Waiting(format!(
            "rolling update to revision {} has updated {} pods",
            status.update_revision.unwrap_or_default(),
            status.updated_replicas.unwrap_or(0)
        ));
    }
    Verdict::Done
}

/// kubectl's DaemonSetStatusViewer.
fn daemon_set(set: &DaemonSet) -> Verdict {
    let status = set.status.clone().unwrap_or_default();
    let desired = status.desired_number_scheduled;
    let available = status.number_available.unwrap_or(0);
    let unavailable = || {
        Verdict::Waiting(format!(
            "{available} of {desired} updated pods are available"
        ))
    };
    let on_delete = set
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete");
    if on_delete {
        return if available < desired {
            unavailable()
        } else {
            Verdict::Done
        };
    }
    if generation(&set.metadata) > status.observed_generation.unwrap_or(0) {
        return Verdict::Waiting("waiting for the spec update to be observed".into());
    }
    let updated = status.updated_number_scheduled.unwrap_or(0);
    if updated < desired {
        return Verdict::Waiting(format!(
            "{updated} out of {desired} new pods have been updated"
        ));
    }
    if available < desired {
        return unavailable();
    }
    Verdict::Done
}

fn int(value: &serde_json::Value) -> i32 {
    value.as_i64().unwrap_or(0) as i32
}

impl Workload {
    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Deployment(_) => "Deployment",
            Workload::StatefulSet(_) => "StatefulSet",
            Workload::DaemonSet(_) => "DaemonSet",
            Workload::ReplicaSet(_) => "ReplicaSet",
            Workload::ReplicationController(_) => "ReplicationController",
            Workload::DeploymentConfig(_) => "DeploymentConfig",
        }
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Workload::Deployment(o) => &o.metadata,
            Workload::StatefulSet(o) => &o.metadata,
            Workload::DaemonSet(o) => &o.metadata,
            Workload::ReplicaSet(o) => &o.metadata,
            Workload::ReplicationController(o) => &o.metadata,
            Workload::DeploymentConfig(o) => &o.metadata,
        }
    }

    pub fn name(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }

    /// The object as the API server sends it. The replica-counting kinds
    /// share field names (`spec.replicas`, `status.readyReplicas`, ...)
    /// but not Rust types, so they are read once, from JSON.
    fn json(&self) -> serde_json::Value {
        let value = match self {
            Workload::Deployment(o) => serde_json::to_value(o),
            Workload::StatefulSet(o) => serde_json::to_value(o),
            Workload::DaemonSet(o) => serde_json::to_value(o),
            Workload::ReplicaSet(o) => serde_json::to_value(o),
            Workload::ReplicationController(o) => serde_json::to_value(o),
            Workload::DeploymentConfig(o) => serde_json::to_value(o),
        };
        value.unwrap_or_default()
    }

    /// The replica numbers of the kinds that count replicas (all but
    /// DaemonSets). A missing status number is 0; a missing
    /// `spec.replicas` is 1, as the API server defaults it.
    fn counts(&self) -> Option<Counts> {
        if matches!(self, Workload::DaemonSet(_)) {
            return None;
        }
        let object = self.json();
        let status = &object["status"];
        Some(Counts {
            generation: generation(self.meta()),
            observed: status["observedGeneration"].as_i64().unwrap_or(0),
            desired: object["spec"]["replicas"].as_i64().unwrap_or(1) as i32,
            replicas: int(&status["replicas"]),
            updated: int(&status["updatedReplicas"]),
            ready: int(&status["readyReplicas"]),
            available: int(&status["availableReplicas"]),
        })
    }

    /// The Progressing condition says the deadline passed (Deployments and
    /// DeploymentConfigs).
    fn deadline_exceeded(&self) -> bool {
        self.json()["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
    }

    fn verdict(&self) -> Verdict {
        if self.counts().is_some_and(|c| c.scaled_to_zero()) {
            return Verdict::Done;
        }
        match self {
            Workload::Deployment(_) | Workload::DeploymentConfig(_) => self
                .counts()
                .map(|c| c.deployment(self.deadline_exceeded()))
                .unwrap_or(Verdict::Done),
            Workload::ReplicaSet(_) | Workload::ReplicationController(_) => self
                .counts()
                .map(|c| c.replica_set())
                .unwrap_or(Verdict::Done),
            Workload::StatefulSet(set) => stateful_set(set),
            Workload::DaemonSet(set) => daemon_set(set),
        }
    }

    /// Whether `pod` is one of this workload's (its selector matches).
    pub fn selects(&self, pod: &Pod) -> bool {
        let empty = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let equality = |selector: Option<&BTreeMap<String, String>>| {
            selector
                .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
        };
        match self {
            Workload::Deployment(o) => matches(&o.spec.selector, labels),
            Workload::StatefulSet(o) => matches(&o.spec.selector, labels),
            Workload::DaemonSet(o) => matches(&o.spec.selector, labels),
            Workload::ReplicaSet(o) => matches(&o.spec.selector, labels),
            Workload::ReplicationController(o) => {
                equality(o.spec.as_ref().and_then(|s| s.selector.as_ref()))
            }
            Workload::DeploymentConfig(dc) => {
                let selector: Option<BTreeMap<String, String>> =
                    serde_json::from_value(dc.data["spec"]["selector"].clone()).ok();
                equality(selector.as_ref())
            }
        }
    }
}

/// A set-based label selector against `labels`. An empty selector
/// matches nothing here: a workload always has one, and matching every
/// pod would blame the wrong pods.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector.match_labels.iter().flatten();
    let expressions = selector.match_expressions.iter().flatten();
    if by_label.clone().next().is_none() && expressions.clone().next().is_none() {
        return false;
    }
    by_label.clone().all(|(k, v)| labels.get(k) == Some(v))
        && expressions.clone().all(|e| {
            let value = labels.get(&e.key);
            let listed = |v: &String| e.values.iter().flatten().any(|x| x == v);
            match e.operator.as_str() {
                "In" => value.is_some_and(listed),
                "NotIn" => !value.is_some_and(listed),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Why one container is not running and ready, if it is not.
fn container_problem(status: &ContainerStatus) -> Option<String> {
    let name = &status.name;
    let state = status.state.clone().unwrap_or_default();
    if let Some(waiting) = state.waiting {
        let reason = waiting.reason.unwrap_or_else(|| "Waiting".into());
        let mut text = format!("container {name}: {reason}");
        if let Some(message) = waiting.message.filter(|m| !m.is_empty()) {
            text.push_str(&format!(": {message}"));
        }
        let last = status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref());
        if let Some(last) = last {
            text.push_str(&format!(" (last exit code {}", last.exit_code));
            if let Some(reason) = &last.reason {
                text.push_str(&format!(", {reason}"));
            }
            text.push(')');
        }
        return Some(text);
    }
    if let Some(terminated) = state.terminated {
        if terminated.exit_code == 0 {
            return None;
        }
        let mut text = format!(
            "container {name}: terminated with exit code {}",
            terminated.exit_code
        );
        if let Some(reason) = terminated.reason {
            text.push_str(&format!(" ({reason})"));
        }
        if let Some(message) = terminated.message.filter(|m| !m.trim().is_empty()) {
            text.push_str(&format!(": {}", message.trim()));
        }
        return Some(text);
    }
    (!status.ready).then(|| format!("container {name}: running but not ready"))
}

/// Why `pod` is not serving, in its own words; `None` for a ready pod
/// and for one that finished successfully.
pub fn pod_problem(pod: &Pod) -> Option<String> {
    let status = pod.status.clone().unwrap_or_default();
    let conditions = status.conditions.clone().unwrap_or_default();
    let condition = |kind: &str| conditions.iter().find(|c| c.type_ == kind);
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let describe = |reason: Option<&String>, message: Option<&String>, default: &str| {
        let reason = reason.map(String::as_str).unwrap_or(default);
        match message.filter(|m| !m.is_empty()) {
            Some(message) => format!("{reason}: {message}"),
            None => reason.to_string(),
        }
    };
    match phase {
        "Succeeded" => return None,
        "Failed" => {
            return Some(describe(
                status.reason.as_ref(),
                status.message.as_ref(),
                "Failed",
            ))
        }
        _ => {}
    }
    if let Some(scheduled) = condition("PodScheduled").filter(|c| c.status == "False") {
        return Some(describe(
            scheduled.reason.as_ref(),
            scheduled.message.as_ref(),
            "not scheduled",
        ));
    }
    if condition("Ready").is_some_and(|c| c.status == "True") {
        return None;
    }
    let containers: Vec<String> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter_map(container_problem)
        .collect();
    if !containers.is_empty() {
        return Some(containers.join("; "));
    }
    Some(match condition("Ready") {
        Some(ready) => describe(ready.reason.as_ref(), ready.message.as_ref(), "not ready"),
        None => format!("{phase}, not ready"),
    })
}

/// Where `workload`'s rollout stands, with the problems of its pods among
/// `pods` when it is not complete.
pub fn rollout(workload: &Workload, pods: &[Pod]) -> RolloutState {
    let problems = || -> Vec<PodProblem> {
        pods.iter()
            .filter(|pod| workload.selects(pod))
            .filter_map(|pod| {
                Some(PodProblem {
                    pod: pod.metadata.name.clone().unwrap_or_default(),
                    reason: pod_problem(pod)?,
                })
            })
            .collect()
    };
    match workload.verdict() {
        Verdict::Done => RolloutState::Complete,
        Verdict::Waiting(message) => RolloutState::Progressing {
            message,
            pods: problems(),
        },
        Verdict::Failed(message) => RolloutState::Failed {
            message,
            pods: problems(),
        },
    }
}

/// Owned by another workload (a Deployment's ReplicaSets, a
/// DeploymentConfig's ReplicationControllers): judged through the owner.
fn owned(meta: &ObjectMeta) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true))
}

async fn list<K>(cluster: &Cluster, namespace: &str) -> anyhow::Result<Vec<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
{
    Api::<K>::namespaced(cluster.client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .with_context(|| {
            format!(
                "{}: listing {} in {namespace}",
                cluster.describe(),
                K::plural(&())
            )
        })
}

fn deployment_config_resource() -> ApiResource {
    ApiResource {
        group: "apps.openshift.io".into(),
        version: "v1".into(),
        api_version: "apps.openshift.io/v1".into(),
        kind: "DeploymentConfig".into(),
        plural: "deploymentconfigs".into(),
    }
}

/// The objects of one kind in `namespace` as workloads; with
/// `skip_owned`, without those another workload controls (only for
/// ReplicaSets and ReplicationControllers: a Deployment an operator owns
/// still has a rollout of its own).
async fn workloads_of<K>(
    cluster: &Cluster,
    namespace: &str,
    wrap: fn(K) -> Workload,
    skip_owned: bool,
) -> anyhow::Result<Vec<Workload>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
{
    Ok(list::<K>(cluster, namespace)
        .await?
        .into_iter()
        .map(wrap)
        .filter(|w| !(skip_owned && owned(w.meta())))
        .collect())
}

/// The rollout of every workload of `namespace` (see the module doc).
/// ReplicationControllers and DeploymentConfigs count only where the
/// cluster serves them.
pub async fn readiness(cluster: &Cluster, namespace: &str) -> anyhow::Result<Readiness> {
    let mut workloads = workloads_of(cluster, namespace, Workload::Deployment, false).await?;
    workloads.extend(workloads_of(cluster, namespace, Workload::StatefulSet, false).await?);
    workloads.extend(workloads_of(cluster, namespace, Workload::DaemonSet, false).await?);
    workloads.extend(workloads_of(cluster, namespace, Workload::ReplicaSet, true).await?);
    let mut served = Served::default();
    let rc = ApiResource::erase::<ReplicationController>(&());
    if served.has(cluster, &rc).await? {
        let controllers = workloads_of(cluster, namespace, Workload::ReplicationController, true);
        workloads.extend(controllers.await?);
    }
    let dc = deployment_config_resource();
    if served.has(cluster, &dc).await? {
        let api = Api::<DynamicObject>::namespaced_with(cluster.client.clone(), namespace, &dc);
        let list = api.list(&ListParams::default()).await.with_context(|| {
            format!(
                "{}: listing deploymentconfigs in {namespace}",
                cluster.describe()
            )
        })?;
        workloads.extend(list.items.into_iter().map(Workload::DeploymentConfig));
    }
    let pods: Vec<Pod> = list(cluster, namespace).await?;
    Ok(Readiness {
        workloads: workloads
            .iter()
            .map(|w| WorkloadReadiness {
                kind: w.kind(),
                name: w.name(),
                state: rollout(w, &pods),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn from(value: Value) -> Workload {
        let kind = value["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "Deployment" => Workload::Deployment(serde_json::from_value(value).unwrap()),
            "StatefulSet" => Workload::StatefulSet(serde_json::from_value(value).unwrap()),
            "DaemonSet" => Workload::DaemonSet(serde_json::from_value(value).unwrap()),
            "ReplicaSet" => Workload::ReplicaSet(serde_json::from_value(value).unwrap()),
            "ReplicationController" => {
                Workload::ReplicationController(serde_json::from_value(value).unwrap())
            }
            _ => Workload::DeploymentConfig(serde_json::from_value(value).unwrap()),
        }
    }

    fn deployment(replicas: i32, status: Value) -> Workload {
        from(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": 2},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}},
            },
            "status": status,
        }))
    }

    fn pod(name: &str, labels: Value, status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "app"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn message(state: &RolloutState) -> &str {
        match state {
            RolloutState::Complete => "complete",
            RolloutState::Progressing { message, .. } | RolloutState::Failed { message, .. } => {
                message
            }
        }
    }

    #[test]
    fn deployment_rollout_follows_kubectl() {
        let complete = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
            "readyReplicas": 2, "availableReplicas": 2});
        assert_eq!(
            rollout(&deployment(2, complete), &[]),
            RolloutState::Complete
        );
        let cases = [
            (
                json!({"observedGeneration": 1}),
                "waiting for the spec update to be observed",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1}),
                "1 out of 2 new replicas have been updated",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2}),
                "1 old replicas are pending termination",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                    "availableReplicas": 1}),
                "1 of 2 updated replicas are available",
            ),
        ];
        for (status, want) in cases {
            let state = rollout(&deployment(2, status), &[]);
            assert!(
                matches!(state, RolloutState::Progressing { .. }),
                "{state:?}"
            );
            assert_eq!(message(&state), want);
        }
        let timed_out = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
            "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded"}]});
        let state = rollout(&deployment(2, timed_out), &[]);
        assert!(matches!(state, RolloutState::Failed { .. }), "{state:?}");
        assert_eq!(message(&state), "exceeded its progress deadline");
    }

    #[test]
    fn a_workload_scaled_to_zero_on_purpose_is_complete() {
        assert_eq!(
            rollout(&deployment(0, json!({})), &[]),
            RolloutState::Complete
        );
        let sts = from(
            json!({"kind": "StatefulSet", "metadata": {"name": "db", "generation": 3},
            "spec": {"replicas": 0, "serviceName": "db", "selector": {}, "template": {}},
            "status": {"replicas": 0}}),
        );
        assert_eq!(rollout(&sts, &[]), RolloutState::Complete);
        // Still scaling down: not yet.
        let draining = deployment(
            0,
            json!({"observedGeneration": 2, "replicas": 1,
            "updatedReplicas": 0}),
        );
        assert_eq!(
            message(&rollout(&draining, &[])),
            "1 old replicas are pending termination"
        );
    }

    #[test]
    fn stateful_set_rollout_follows_kubectl() {
        let sts = |strategy: Value, status: Value| {
            from(
                json!({"kind": "StatefulSet", "metadata": {"name": "db", "generation": 1},
                "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {}, "updateStrategy": strategy},
                "status": status}),
            )
        };
        let rolling = json!({"type": "RollingUpdate"});
        let ready = json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3,
            "updatedReplicas": 3, "currentRevision": "db-1", "updateRevision": "db-1"});
        assert_eq!(
            rollout(&sts(rolling.clone(), ready.clone()), &[]),
            RolloutState::Complete
        );
        let unobserved = json!({"replicas": 3, "readyReplicas": 3});
        assert_eq!(
            message(&rollout(&sts(rolling.clone(), unobserved), &[])),
            "waiting for the spec update to be observed"
        );
        let mut one_short = ready.clone();
        one_short["readyReplicas"] = json!(2);
        assert_eq!(
            message(&rollout(&sts(rolling.clone(), one_short.clone()), &[])),
            "1 pods are not ready"
        );
        let mut revision = ready.clone();
        revision["updateRevision"] = json!("db-2");
        assert_eq!(
            message(&rollout(&sts(rolling, revision), &[])),
            "rolling update to revision db-2 has updated 3 pods"
        );
        let partitioned = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}});
        let mut updated_one = ready.clone();
        updated_one["updatedReplicas"] = json!(1);
        assert_eq!(
            message(&rollout(&sts(partitioned, updated_one), &[])),
            "partitioned roll out: 1 out of 2 new pods have been updated"
        );
        let on_delete = json!({"type": "OnDelete"});
        assert_eq!(
            message(&rollout(&sts(on_delete.clone(), one_short), &[])),
            "1 pods are not ready"
        );
        assert_eq!(rollout(&sts(on_delete, ready), &[]), RolloutState::Complete);
    }

    #[test]
    fn daemon_set_and_unowned_replica_kinds() {
        let ds = |status: Value| {
            from(
                json!({"kind": "DaemonSet", "metadata": {"name": "agent", "generation": 1},
                "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {}},
                "status": status}),
            )
        };
        let base = json!({"observedGeneration": 1, "desiredNumberScheduled": 2,
            "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 2,
            "updatedNumberScheduled": 2, "numberAvailable": 2});
        assert_eq!(rollout(&ds(base.clone()), &[]), RolloutState::Complete);
        let mut behind = base.clone();
        behind["updatedNumberScheduled"] = json!(1);
        assert_eq!(
            message(&rollout(&ds(behind), &[])),
            "1 out of 2 new pods have been updated"
        );
        let mut unavailable = base;
        unavailable["numberAvailable"] = json!(0);
        assert_eq!(
            message(&rollout(&ds(unavailable), &[])),
            "0 of 2 updated pods are available"
        );

        let rc = from(
            json!({"kind": "ReplicationController", "metadata": {"name": "legacy"},
            "spec": {"replicas": 2, "selector": {"app": "legacy"}},
            "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 1}}),
        );
        assert_eq!(
            message(&rollout(&rc, &[])),
            "1 of 2 replicas are ready, 1 available"
        );
        let dc = from(
            json!({"apiVersion": "apps.openshift.io/v1", "kind": "DeploymentConfig",
            "metadata": {"name": "old", "generation": 4},
            "spec": {"replicas": 1, "selector": {"app": "old"}},
            "status": {"observedGeneration": 4, "replicas": 1, "updatedReplicas": 1,
                "availableReplicas": 1}}),
        );
        assert_eq!(rollout(&dc, &[]), RolloutState::Complete);
    }

    #[test]
    fn pods_say_why_a_workload_is_not_ready() {
        let web = json!({"app": "web"});
        let pods = [
            pod(
                "web-pull",
                web.clone(),
                json!({"phase": "Pending", "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                "state": {"waiting": {"reason": "ImagePullBackOff",
                    "message": "Back-off pulling image \"registry/x:1\""}}}]}),
            ),
            pod(
                "web-crash",
                web.clone(),
                json!({"phase": "Running", "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 4, "image": "x", "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}),
            ),
            pod(
                "web-pending",
                web.clone(),
                json!({"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 Insufficient memory."}]}),
            ),
            pod(
                "web-probe",
                web.clone(),
                json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                    "image": "x", "imageID": "", "state": {"running": {}}}]}),
            ),
            pod(
                "web-exited",
                web.clone(),
                json!({"phase": "Running", "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
            ),
            pod(
                "web-ok",
                web,
                json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"}]}),
            ),
            pod(
                "other",
                json!({"app": "other"}),
                json!({"phase": "Pending"}),
            ),
        ];
        let state = rollout(
            &deployment(
                2,
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2}),
            ),
            &pods,
        );
        let RolloutState::Progressing { pods: problems, .. } = state else {
            panic!("{state:?}");
        };
        let problems: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.pod.as_str(), p.reason.as_str()))
            .collect();
        assert_eq!(
            problems,
            [
                (
                    "web-pull",
                    "container app: ImagePullBackOff: Back-off pulling image \"registry/x:1\""
                ),
                (
                    "web-crash",
                    "container app: CrashLoopBackOff: back-off 40s (last exit code 3, Error)"
                ),
                (
                    "web-pending",
                    "Unschedulable: 0/2 nodes are available: 2 Insufficient memory."
                ),
                ("web-probe", "container app: running but not ready"),
                (
                    "web-exited",
                    "container app: terminated with exit code 137 (OOMKilled)"
                ),
            ]
        );
    }

    #[test]
    fn set_based_selectors_match_as_the_api_server_does() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }))
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "edge")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "back")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "front"), ("canary", "1")])
        ));
        assert!(!matches(
            &LabelSelector::default(),
            &labels(&[("app", "web")])
        ));
    }

    #[test]
    fn readiness_reports_name_the_workload_and_pods() {
        let line = WorkloadReadiness {
            kind: "Deployment",
            name: "web".into(),
            state: RolloutState::Failed {
                message: "exceeded its progress deadline".into(),
                pods: vec![PodProblem {
                    pod: "web-1".into(),
                    reason: "container app: ErrImagePull: not found".into(),
                }],
            },
        };
        assert_eq!(
            line.to_string(),
            "Deployment web: exceeded its progress deadline \
             (pod web-1: container app: ErrImagePull: not found)"
        );
        let readiness = Readiness {
            workloads: vec![line],
        };
        assert!(!readiness.complete());
        assert_eq!(readiness.failed().count(), 1);
    }
}
