//! Pods as the workload controllers see them: label selectors, whether a
//! pod is active, ready or available, which pods go first on scale-down,
//! and pods made from a controller's template.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt as _};

use crate::context::ClusterContext;

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions
/// with In, NotIn, Exists and DoesNotExist). An empty selector matches
/// everything, as the API's does.
pub(crate) fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let plain = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    plain
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|requirement| {
                let value = labels.get(&requirement.key);
                let listed = || {
                    requirement
                        .values
                        .iter()
                        .flatten()
                        .any(|wanted| Some(wanted) == value)
                };
                match requirement.operator.as_str() {
                    "In" => listed(),
                    "NotIn" => !listed(),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
}

/// An equality selector (ReplicationControllers, DeploymentConfigs).
pub(super) fn equality_selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("Pending")
}

/// Neither finished nor being deleted: a pod the controller counts.
pub(super) fn is_active(pod: &Pod) -> bool {
    !is_finished(pod) && pod.metadata.deletion_timestamp.is_none()
}

pub(super) fn is_finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

pub(super) fn is_succeeded(pod: &Pod) -> bool {
    phase(pod) == "Succeeded"
}

pub(super) fn is_failed(pod: &Pod) -> bool {
    phase(pod) == "Failed"
}

pub(super) fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod)
}

/// When the pod's Ready condition became True, if it is True.
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == "Ready" && condition.status == "True")?;
    Some(condition.last_transition_time.as_ref().map(|time| time.0))
}

pub(super) fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` (as of `now`).
pub(super) fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since + SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now,
    }
}

/// How long until a ready pod becomes available, if it is not yet.
pub(super) fn until_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let since = ready_since(pod)??;
    let at = since + SignedDuration::from_secs(i64::from(min_ready_seconds));
    (at > now).then(|| std::time::Duration::try_from(at - now).unwrap_or_default())
}

/// Orders pods so that the ones to delete first come first, as the
/// ReplicaSet controller's `ActivePods` sort does: unscheduled before
/// scheduled, Pending before Running, not ready before ready, ready for
/// less time before longer, more restarts before fewer, newer before
/// older.
pub(super) fn deletion_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let scheduled = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_ref())
            .is_some()
    };
    let rank = |pod: &Pod| match phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let restarts = |pod: &Pod| -> i32 {
        pod.status
            .as_ref()
            .and_then(|status| status.container_statuses.as_ref())
            .map_or(0, |statuses| statuses.iter().map(|s| s.restart_count).sum())
    };
    let created = |pod: &Pod| pod.metadata.creation_timestamp.as_ref().map(|time| time.0);
    scheduled(a)
        .cmp(&scheduled(b))
        .then(rank(a).cmp(&rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        .then_with(|| ready_since(b).flatten().cmp(&ready_since(a).flatten()))
        .then(restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

/// A pod from `template`, owned by `owner`: named `name`, or
/// `<generate_prefix><5 characters>` by the API server.
pub(super) struct NewPod<'a> {
    pub template: &'a PodTemplateSpec,
    pub namespace: &'a str,
    pub owner: OwnerReference,
    pub name: Option<String>,
    pub generate_prefix: String,
    pub extra_labels: BTreeMap<String, String>,
}

impl NewPod<'_> {
    pub(super) fn build(self) -> Pod {
        let template_meta = self.template.metadata.clone().unwrap_or_default();
        let mut labels = template_meta.labels.unwrap_or_default();
        labels.extend(self.extra_labels);
        Pod {
            metadata: ObjectMeta {
                generate_name: self.name.is_none().then_some(self.generate_prefix),
                name: self.name,
                namespace: Some(self.namespace.to_string()),
                labels: Some(labels),
                annotations: template_meta.annotations,
                finalizers: template_meta.finalizers,
                owner_references: Some(vec![self.owner]),
                ..ObjectMeta::default()
            },
            spec: self.template.spec.clone(),
            status: None,
        }
    }
}

/// Creates `pod`; a refusal (quota, admission, bad template) becomes a
/// Warning Event on the owner and an error to retry.
pub(super) async fn create(ctx: &ClusterContext, pod: &Pod) -> anyhow::Result<Pod> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    Ok(api.create(&PostParams::default(), pod).await?)
}

/// Deletes a pod; one already gone is fine.
pub(super) async fn delete(ctx: &ClusterContext, pod: &Pod) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        result => result.map(drop).map_err(Into::into),
    }
}

/// Every pod of `namespace`, straight from the API server (never from a
/// cache that may lag behind the controller's own writes, which is what
/// the real controllers' "expectations" guard against).
pub(super) async fn list(ctx: &ClusterContext, namespace: &str) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api.list(&ListParams::default()).await?.items)
}
