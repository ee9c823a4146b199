//! The taint eviction controller (the taint manager): a pod on a node with
//! NoExecute taints it does not tolerate is deleted; one that tolerates
//! them for `tolerationSeconds` (the shortest, when several apply) is
//! deleted that long after the controller first saw it so, unless the
//! taints go away first. Each deletion, and each cancelled one, is told in
//! a `TaintManagerEviction` Event, as the real controller does.
//!
//! The controller looks at the nodes every [`SWEEP`]; pods are only listed
//! while a node has a NoExecute taint or an eviction is pending.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt as _};
use tokio::time::Instant;

use crate::context::ClusterContext;
use crate::events;
use crate::placement::taints;

const SWEEP: Duration = Duration::from_millis(500);
const COMPONENT: &str = "taint-eviction-controller";

/// What the NoExecute taints of a pod's node mean for it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// No such taint, or all tolerated for good.
    Stays,
    /// Tolerated for this long.
    EvictAfter(Duration),
    EvictNow,
}

/// The verdict for a pod with `tolerations` on a node with `taints`: each
/// taint is tolerated by the first toleration that matches it; the pod
/// stays as long as the shortest `tolerationSeconds` among those.
fn verdict(pod: &Pod, node: &Node) -> Verdict {
    let tolerations = taints::pod_tolerations(pod);
    let mut shortest: Option<i64> = None;
    for taint in taints::node_taints(node)
        .iter()
        .filter(|taint| taint.effect == taints::NO_EXECUTE)
    {
        let Some(toleration) = tolerations
            .iter()
            .find(|toleration| taints::tolerates(toleration, taint))
        else {
            return Verdict::EvictNow;
        };
        if let Some(seconds) = toleration.toleration_seconds {
            shortest = Some(shortest.map_or(seconds, |shortest| shortest.min(seconds)));
        }
    }
    match shortest {
        None => Verdict::Stays,
        Some(seconds) if seconds <= 0 => Verdict::EvictNow,
        Some(seconds) => Verdict::EvictAfter(Duration::from_secs(seconds.unsigned_abs())),
    }
}

/// Runs the controller for the cluster's `nodes` until the task is
/// aborted.
pub(super) async fn run(ctx: Arc<ClusterContext>, nodes: Vec<String>) -> anyhow::Result<()> {
    // Pods tolerating their node's taints for a while, by uid: when they
    // are due, and the pod as last seen.
    let mut pending: HashMap<String, (Instant, Pod)> = HashMap::new();
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        sweep.tick().await;
        if let Err(error) = sweep_once(&ctx, &nodes, &mut pending).await {
            tracing::warn!("taint manager {}: {error}", ctx.name);
        }
    }
}

async fn sweep_once(
    ctx: &ClusterContext,
    ours: &[String],
    pending: &mut HashMap<String, (Instant, Pod)>,
) -> kube::Result<()> {
    let tainted: HashMap<String, Node> = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|node| {
            ours.contains(&node.name_any())
                && taints::node_taints(node)
                    .iter()
                    .any(|taint| taint.effect == taints::NO_EXECUTE)
        })
        .map(|node| (node.name_any(), node))
        .collect();
    if tainted.is_empty() && pending.is_empty() {
        return Ok(());
    }
    let pods = Api::<Pod>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut still_pending = HashMap::new();
    for pod in pods {
        let finished = matches!(
            pod.status
                .as_ref()
                .and_then(|status| status.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if finished || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let uid = pod.uid().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_deref())
            .and_then(|node| tainted.get(node));
        let verdict = node.map_or(Verdict::Stays, |node| verdict(&pod, node));
        let due = match verdict {
            Verdict::Stays => {
                if pending.contains_key(&uid) {
                    let message = format!("Cancelling deletion of Pod {}", name_of(&pod));
                    record(ctx, &pod, &message).await;
                }
                continue;
            }
            Verdict::EvictNow => Instant::now(),
            Verdict::EvictAfter(after) => pending
                .get(&uid)
                .map_or_else(|| Instant::now() + after, |(due, _)| *due),
        };
        if due <= Instant::now() {
            evict(ctx, &pod).await;
        } else {
            still_pending.insert(uid, (due, pod));
        }
    }
    *pending = still_pending;
    Ok(())
}

fn name_of(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

async fn record(ctx: &ClusterContext, pod: &Pod, message: &str) {
    let reporter = events::Reporter::new(COMPONENT);
    events::record(
        &ctx.client,
        reporter,
        pod,
        events::Type::Normal,
        "TaintManagerEviction",
        message,
    )
    .await;
}

/// Deletes the pod, as the real controller does (with the pod's own grace
/// period).
async fn evict(ctx: &ClusterContext, pod: &Pod) {
    record(
        ctx,
        pod,
        &format!("Marking for deletion Pod {}", name_of(pod)),
    )
    .await;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => tracing::warn!(
            "taint manager {}: evicting pod {}: {error}",
            ctx.name,
            name_of(pod)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({ "metadata": { "name": "n" }, "spec": { "taints": taints } }))
            .unwrap()
    }

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "p" },
            "spec": { "containers": [], "tolerations": tolerations },
        }))
        .unwrap()
    }

    #[test]
    fn untolerated_no_execute_taints_evict_and_toleration_seconds_delay_it() {
        let tainted = node(json!([
            { "key": "a", "effect": "NoExecute" },
            { "key": "b", "value": "x", "effect": "NoExecute" },
            { "key": "c", "effect": "NoSchedule" },
        ]));
        assert_eq!(verdict(&pod(json!([])), &tainted), Verdict::EvictNow);
        assert_eq!(
            verdict(
                &pod(json!([{ "key": "a", "operator": "Exists" }])),
                &tainted
            ),
            Verdict::EvictNow
        );
        assert_eq!(
            verdict(&pod(json!([{ "operator": "Exists" }])), &tainted),
            Verdict::Stays
        );
        assert_eq!(
            verdict(
                &pod(json!([
                    { "key": "a", "operator": "Exists", "tolerationSeconds": 30 },
                    { "key": "b", "value": "x", "tolerationSeconds": 5 },
                ])),
                &tainted
            ),
            Verdict::EvictAfter(Duration::from_secs(5))
        );
        assert_eq!(
            verdict(
                &pod(
                    json!([{ "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0 }])
                ),
                &tainted
            ),
            Verdict::EvictNow
        );
        assert_eq!(verdict(&pod(json!([])), &node(json!([]))), Verdict::Stays);
    }
}
