//! The scheduler: binds pods without `spec.nodeName` to one of the
//! cluster's nodes whose labels match the pod's `nodeSelector`, round
//! robin, and says why in the pod's PodScheduled condition when none can
//! take it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt as _};

use crate::context::ClusterContext;

pub(super) struct Scheduler {
    ctx: Arc<ClusterContext>,
    /// The nodes this kubelet runs.
    nodes: Vec<String>,
    next: AtomicUsize,
}

impl Scheduler {
    pub(super) fn new(ctx: Arc<ClusterContext>, nodes: Vec<String>) -> Self {
        Self {
            ctx,
            nodes,
            next: AtomicUsize::new(0),
        }
    }

    /// Whether `node` is one of the nodes this kubelet runs.
    pub(super) fn is_ours(&self, node: &str) -> bool {
        self.nodes.iter().any(|ours| ours == node)
    }

    /// Sets the pod's `spec.nodeName`, or reports it Unschedulable.
    pub(super) async fn schedule(&self, pod: Pod) {
        let result = match self.choose(&pod).await {
            Ok(node) => self.bind(&pod, &node).await,
            Err(message) => report_unscheduled(&self.ctx, &pod, "Unschedulable", &message).await,
        };
        if let Err(error) = result {
            tracing::warn!(
                "scheduler {}: pod {}/{}: {error}",
                self.ctx.name,
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            );
        }
    }

    /// A pod bound to a node that does not exist stays Pending; its
    /// PodScheduled condition says why (a real cluster would leave it
    /// silently Pending).
    pub(super) async fn report_unknown_node(&self, pod: Pod, node: &str) {
        let message = format!(
            "node \"{node}\" does not exist in cluster {} (its nodes are {})",
            self.ctx.name,
            self.nodes.join(", ")
        );
        if let Err(error) = report_unscheduled(&self.ctx, &pod, "NodeNotFound", &message).await {
            tracing::warn!(
                "scheduler {}: pod {}: {error}",
                self.ctx.name,
                pod.name_any()
            );
        }
    }

    /// The node for `pod`, or the scheduler's message saying why there is
    /// none.
    async fn choose(&self, pod: &Pod) -> Result<String, String> {
        let selector = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_selector.clone())
            .unwrap_or_default();
        let nodes = Api::<Node>::all(self.ctx.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|error| format!("listing nodes: {error}"))?;
        let fitting: Vec<String> = nodes
            .items
            .iter()
            .filter(|node| self.is_ours(&node.name_any()) && matches(&selector, node.labels()))
            .map(|node| node.name_any())
            .collect();
        if fitting.is_empty() {
            return Err(format!(
                "0/{0} nodes are available: {0} node(s) didn't match Pod's node affinity/selector.",
                self.nodes.len()
            ));
        }
        Ok(fitting[self.next.fetch_add(1, Ordering::Relaxed) % fitting.len()].clone())
    }

    async fn bind(&self, pod: &Pod, node: &str) -> kube::Result<()> {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        // The resourceVersion makes this a compare-and-swap: if the pod
        // changed meanwhile, the newer version gets scheduled instead.
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": pod.resource_version() },
            "spec": { "nodeName": node },
        });
        match api
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            result => result.map(drop),
        }
    }
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// Sets the pod's PodScheduled condition to False with `reason` and
/// `message`, unless it says that already (so the status update does not
/// trigger another round of the same).
async fn report_unscheduled(
    ctx: &ClusterContext,
    pod: &Pod,
    reason: &str,
    message: &str,
) -> kube::Result<()> {
    let already = pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions.iter().any(|condition| {
                condition.type_ == "PodScheduled"
                    && condition.status == "False"
                    && condition.reason.as_deref() == Some(reason)
                    && condition.message.as_deref() == Some(message)
            })
        });
    if already {
        return Ok(());
    }
    let condition = PodCondition {
        type_: "PodScheduled".to_string(),
        status: "False".to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_transition_time: Some(Time(Timestamp::now())),
        ..PodCondition::default()
    };
    let patch = serde_json::json!({ "status": { "phase": "Pending", "conditions": [condition] } });
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(drop)
}
