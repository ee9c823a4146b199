//! The kubelet's admission of a pod bound to one of its nodes, as the real
//! kubelet's predicate admit handler does it (whether the scheduler bound
//! the pod or its creator set `spec.nodeName`): the node's allocatable
//! resources must hold the pod beside the pods the kubelet already runs
//! there, its node selector and affinity must match, and its NoExecute
//! taints must be tolerated (NoSchedule ones are the scheduler's business).
//! A rejected pod is never started: it is Failed with the reason of the
//! first check it failed, and a Warning Event says so.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt as _};

use super::resources;
use crate::context::ClusterContext;
use crate::events;
use crate::placement::{affinity, taints};

/// Why the kubelet refuses a pod: its status reason and the message (which
/// the status prefixes with `Pod was rejected: `).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Rejection {
    pub reason: String,
    pub message: String,
}

/// Admits `pod` to `node`, where the kubelet runs `admitted` (its pods
/// there that have not terminated), or says why not.
pub(super) fn admit<'a>(
    pod: &Pod,
    node: &Node,
    admitted: impl IntoIterator<Item = &'a Pod>,
) -> Result<(), Rejection> {
    if let Some(shortage) = resources::shortages(pod, node, admitted).first() {
        return Err(Rejection {
            reason: shortage.kubelet_reason(),
            message: shortage.kubelet_message(),
        });
    }
    if !affinity::pod_fits(pod, node) {
        return Err(Rejection {
            reason: "NodeAffinity".to_string(),
            message: "Predicate NodeAffinity failed: node(s) didn't match Pod's node \
                      affinity/selector"
                .to_string(),
        });
    }
    if taints::untolerated(node, taints::pod_tolerations(pod), &[taints::NO_EXECUTE]).is_some() {
        return Err(Rejection {
            reason: "TaintToleration".to_string(),
            message: "Predicate TaintToleration failed: node(s) had taints that the pod didn't \
                      tolerate"
                .to_string(),
        });
    }
    Ok(())
}

/// Marks the pod Failed with the rejection, and records it in an Event
/// from the node's kubelet.
pub(super) async fn reject(ctx: &ClusterContext, pod: &Pod, node: &str, rejection: &Rejection) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let status = serde_json::json!({ "status": {
        "phase": "Failed",
        "reason": rejection.reason,
        "message": format!("Pod was rejected: {}", rejection.message),
    } });
    if let Err(error) = api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
    {
        tracing::warn!(
            "kubelet {}: rejecting pod {}: {error}",
            ctx.name,
            pod.name_any()
        );
        return;
    }
    events::record(
        &ctx.client,
        events::Reporter::on_host("kubelet", node),
        pod,
        events::Type::Warning,
        &rejection.reason,
        &rejection.message,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": "n1", "labels": { "kubernetes.io/hostname": "n1" } },
            "spec": { "taints": taints },
            "status": { "allocatable": { "cpu": "4", "memory": "16Gi", "pods": "110" } },
        }))
        .unwrap()
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({ "metadata": { "name": "p" }, "spec": spec })).unwrap()
    }

    #[test]
    fn resources_are_checked_first_then_affinity_then_no_execute_taints() {
        let tainted = node(json!([
            { "key": "evict", "effect": "NoExecute" },
            { "key": "keep-out", "effect": "NoSchedule" },
        ]));
        let greedy = pod(json!({
            "nodeSelector": { "kubernetes.io/hostname": "n2" },
            "containers": [{ "name": "c", "resources": { "requests": { "cpu": "8" } } }],
        }));
        let small = pod(json!({
            "containers": [{ "name": "c", "resources": { "requests": { "cpu": "100m" } } }],
        }));
        assert_eq!(
            admit(&greedy, &tainted, [&small]),
            Err(Rejection {
                reason: "OutOfcpu".to_string(),
                message: "Node didn't have enough resource: cpu, requested: 8000, used: 100, \
                          capacity: 4000"
                    .to_string(),
            })
        );
        let elsewhere = pod(json!({
            "nodeSelector": { "kubernetes.io/hostname": "n2" }, "containers": [],
        }));
        assert_eq!(
            admit(&elsewhere, &tainted, []).unwrap_err().reason,
            "NodeAffinity"
        );
        let plain = pod(json!({ "containers": [] }));
        assert_eq!(
            admit(&plain, &tainted, []).unwrap_err().reason,
            "TaintToleration"
        );
        let tolerant = pod(json!({
            "containers": [], "tolerations": [{ "key": "evict", "operator": "Exists" }],
        }));
        assert_eq!(admit(&tolerant, &tainted, []), Ok(()));
    }
}
