//! The scheduler, the kubelet's admission and the taint eviction
//! controller against real Docker containers: requests against node
//! capacity, taints and tolerations (NoSchedule, PreferNoSchedule,
//! NoExecute eviction), node affinity and cordoned nodes, with the real
//! components' PodScheduled messages, pod rejections and Events.
//!
//! One cluster serves every check, one after the other (each cleans up
//! what it made), to keep the number of clusters started small.

mod cluster_support;

use anyhow::Context as _;
use cluster_support::{node_name, not_scheduled, phase, placed, sleeper, source, TestCluster};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

#[tokio::test]
async fn pods_are_placed_as_kube_scheduler_places_them() -> anyhow::Result<()> {
    let test = TestCluster::with_docker("sched").await?;
    capacity(&test).await?;
    taints_and_tolerations(&test).await?;
    no_execute_taints_evict(&test).await?;
    affinity_and_cordoned_nodes(&test).await?;
    Ok(())
}

/// A sleeping pod requesting `cpu` and `memory`, placed as `placement`
/// says.
fn requesting(cpu: &str, memory: &str, placement: serde_json::Value) -> serde_json::Value {
    let mut container = sleeper();
    container["resources"] = json!({ "requests": { "cpu": cpu, "memory": memory } });
    placed(json!({ "containers": [container] }), placement)
}

/// Nodes offer 4 cpu and 16Gi; the scheduler counts the requests of each
/// node's pods and refuses what does not fit; the kubelet rejects a pod
/// bound by hand that does not fit.
async fn capacity(test: &TestCluster) -> anyhow::Result<()> {
    let node = test.cluster_api::<Node>().get(&test.node(1)).await?;
    let allocatable = node
        .status
        .and_then(|status| status.allocatable)
        .unwrap_or_default();
    let amount = |name: &str| allocatable.get(name).map(|q| q.0.as_str());
    assert_eq!(
        (amount("cpu"), amount("memory"), amount("pods")),
        (Some("4"), Some("16Gi"), Some("110"))
    );

    test.pod("greedy", requesting("8", "1Gi", json!({})))
        .await?;
    let refused = test.unschedulable("greedy").await?;
    let message = "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are \
                   available: 2 No preemption victims found for incoming pod..";
    assert_eq!(
        (refused.reason.as_deref(), refused.message.as_deref()),
        (Some("Unschedulable"), Some(message))
    );
    let event = test.event("greedy", "FailedScheduling").await?;
    assert_eq!(
        (
            event.type_.as_deref(),
            source(&event),
            event.message.as_deref()
        ),
        (Some("Warning"), "default-scheduler", Some(message))
    );
    test.pod("hungry", requesting("100m", "20Gi", json!({})))
        .await?;
    assert_eq!(
        test.unschedulable("hungry").await?.message.as_deref(),
        Some(
            "0/2 nodes are available: 2 Insufficient memory. preemption: 0/2 nodes are \
             available: 2 No preemption victims found for incoming pod.."
        )
    );

    // Requests add up per node: 100m + 3 fit in 4, another 3 does not.
    test.pod("small", requesting("100m", "64Mi", test.on_node(1)))
        .await?;
    test.running("small").await?;
    test.pod("half", requesting("3", "1Gi", test.on_node(1)))
        .await?;
    let half = test.running("half").await?;
    assert_eq!(node_name(&half), test.node(1));
    let event = test.event("half", "Scheduled").await?;
    assert_eq!(
        (
            event.type_.as_deref(),
            source(&event),
            event.message.clone()
        ),
        (
            Some("Normal"),
            "default-scheduler",
            Some(format!(
                "Successfully assigned default/half to {}",
                test.node(1)
            ))
        )
    );
    test.pod("other-half", requesting("3", "1Gi", test.on_node(1)))
        .await?;
    assert_eq!(
        test.unschedulable("other-half").await?.message.as_deref(),
        Some(
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node \
             affinity/selector. preemption: 0/2 nodes are available: 1 No preemption victims \
             found for incoming pod, 1 Preemption is not helpful for scheduling.."
        )
    );
    // Freeing the node lets the waiting pod in.
    test.delete_pods(&["half"]).await?;
    let other_half = test.running("other-half").await?;
    assert_eq!(node_name(&other_half), test.node(1));

    // A pod bound by hand that does not fit is rejected by the kubelet.
    test.pod(
        "pinned-greedy",
        requesting("8", "1Gi", json!({ "nodeName": test.node(2) })),
    )
    .await?;
    let rejected = test
        .wait_pod("pinned-greedy", "the kubelet to reject it", |pod| {
            phase(pod) == "Failed"
        })
        .await?;
    let status = rejected.status.unwrap_or_default();
    assert_eq!(
        (status.reason.as_deref(), status.message.as_deref()),
        (
            Some("OutOfcpu"),
            Some(
                "Pod was rejected: Node didn't have enough resource: cpu, requested: 8000, \
                 used: 0, capacity: 4000"
            )
        )
    );
    let event = test.event("pinned-greedy", "OutOfcpu").await?;
    assert_eq!(
        (event.type_.as_deref(), source(&event)),
        (Some("Warning"), "kubelet")
    );
    test.pod(
        "pinned-beside",
        requesting("3900m", "1Gi", json!({ "nodeName": test.node(1) })),
    )
    .await?;
    let rejected = test
        .wait_pod("pinned-beside", "the kubelet to reject it", |pod| {
            phase(pod) == "Failed"
        })
        .await?;
    assert_eq!(
        rejected.status.and_then(|status| status.message).as_deref(),
        Some(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 3900, used: \
             3100, capacity: 4000"
        )
    );
    test.delete_pods(&[
        "greedy",
        "hungry",
        "small",
        "other-half",
        "pinned-greedy",
        "pinned-beside",
    ])
    .await
}

/// NoSchedule taints keep pods that do not tolerate them away; Equal and
/// Exists tolerations (an empty key with Exists tolerating everything)
/// let them in; PreferNoSchedule only steers.
async fn taints_and_tolerations(test: &TestCluster) -> anyhow::Result<()> {
    test.patch_node(
        1,
        json!({ "taints": [{ "key": "dedicated", "value": "db", "effect": "NoSchedule" }] }),
    )
    .await?;
    test.patch_node(
        2,
        json!({ "taints": [{ "key": "maintenance", "effect": "NoSchedule" }] }),
    )
    .await?;
    test.pod("plain", json!({ "containers": [sleeper()] }))
        .await?;
    assert_eq!(
        test.unschedulable("plain").await?.message.as_deref(),
        Some(
            "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 \
             node(s) had untolerated taint {maintenance: }. preemption: 0/2 nodes are \
             available: 2 Preemption is not helpful for scheduling.."
        )
    );
    test.pod(
        "database",
        json!({
            "containers": [sleeper()],
            "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule" }],
        }),
    )
    .await?;
    assert_eq!(node_name(&test.running("database").await?), test.node(1));
    test.pod(
        "wrong-value",
        json!({
            "containers": [sleeper()],
            "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "web" }],
        }),
    )
    .await?;
    test.unschedulable("wrong-value").await?;
    test.pod(
        "anything-goes",
        json!({ "containers": [sleeper()], "tolerations": [{ "operator": "Exists" }] }),
    )
    .await?;
    test.running("anything-goes").await?;

    // The taint goes: the waiting pods are scheduled there.
    test.patch_node(2, json!({ "taints": null })).await?;
    assert_eq!(node_name(&test.running("plain").await?), test.node(2));
    assert_eq!(node_name(&test.running("wrong-value").await?), test.node(2));

    // PreferNoSchedule steers pods to the other node, but does not forbid.
    test.patch_node(
        1,
        json!({ "taints": [{ "key": "soft", "effect": "PreferNoSchedule" }] }),
    )
    .await?;
    for name in ["steered-1", "steered-2"] {
        test.pod(name, json!({ "containers": [sleeper()] })).await?;
        assert_eq!(node_name(&test.running(name).await?), test.node(2));
    }
    test.patch_node(1, json!({ "taints": null })).await?;
    test.delete_pods(&[
        "plain",
        "database",
        "wrong-value",
        "anything-goes",
        "steered-1",
        "steered-2",
    ])
    .await
}

/// A NoExecute taint evicts the node's pods that do not tolerate it, at
/// once or after their tolerationSeconds, keeps the scheduler away, and
/// makes the kubelet reject pods bound there by hand.
async fn no_execute_taints_evict(test: &TestCluster) -> anyhow::Result<()> {
    let pinned = |tolerations: serde_json::Value| {
        json!({
            "nodeName": test.node(2),
            "containers": [sleeper()],
            "tolerations": tolerations,
        })
    };
    test.pod("victim", pinned(json!([]))).await?;
    test.pod(
        "tolerant",
        pinned(json!([{ "key": "evict", "operator": "Exists", "effect": "NoExecute" }])),
    )
    .await?;
    test.pod(
        "patient",
        pinned(json!([{ "key": "evict", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 3 }])),
    )
    .await?;
    for name in ["victim", "tolerant", "patient"] {
        test.running(name).await?;
    }
    let tainted_at = k8s_openapi::jiff::Timestamp::now();
    test.patch_node(
        2,
        json!({ "taints": [{ "key": "evict", "value": "now", "effect": "NoExecute" }] }),
    )
    .await?;
    let event = test.event("victim", "TaintManagerEviction").await?;
    assert_eq!(
        (
            event.type_.as_deref(),
            source(&event),
            event.message.as_deref()
        ),
        (
            Some("Normal"),
            "taint-eviction-controller",
            Some("Marking for deletion Pod default/victim")
        )
    );
    // The patient pod goes too, but not before its tolerationSeconds.
    let event = test.event("patient", "TaintManagerEviction").await?;
    let evicted_at = event.last_timestamp.context("an event time")?.0;
    let earliest = tainted_at
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(2))?
        .round(k8s_openapi::jiff::Unit::Second)?;
    assert!(
        evicted_at >= earliest,
        "patient was evicted at {evicted_at}, before its tolerationSeconds (tainted at {tainted_at})"
    );
    test.wait_gone(&["victim", "patient"]).await?;
    let tolerant = test.api::<Pod>().get("tolerant").await?;
    assert_eq!(phase(&tolerant), "Running");

    // The scheduler keeps away from the taint too.
    test.pod(
        "scheduled-there",
        json!({
            "containers": [sleeper()],
            "nodeSelector": { "kubernetes.io/hostname": test.node(2) },
        }),
    )
    .await?;
    assert_eq!(
        test.unschedulable("scheduled-there")
            .await?
            .message
            .as_deref(),
        Some(
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 \
             node(s) had untolerated taint {evict: now}. preemption: 0/2 nodes are available: 2 \
             Preemption is not helpful for scheduling.."
        )
    );
    // The kubelet rejects a pod bound there by hand.
    test.pod("bound-there", pinned(json!([]))).await?;
    let rejected = test
        .wait_pod("bound-there", "the kubelet to reject it", |pod| {
            phase(pod) == "Failed"
        })
        .await?;
    let status = rejected.status.unwrap_or_default();
    assert_eq!(
        (status.reason.as_deref(), status.message.as_deref()),
        (
            Some("TaintToleration"),
            Some(
                "Pod was rejected: Predicate TaintToleration failed: node(s) had taints that the \
                 pod didn't tolerate"
            )
        )
    );
    test.patch_node(2, json!({ "taints": null })).await?;
    test.delete_pods(&["tolerant", "scheduled-there", "bound-there"])
        .await
}

/// Required node affinity (In, NotIn, Exists, DoesNotExist) and cordoned
/// nodes.
async fn affinity_and_cordoned_nodes(test: &TestCluster) -> anyhow::Result<()> {
    let requiring = |expressions: serde_json::Value| {
        json!({
            "containers": [sleeper()],
            "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{ "matchExpressions": expressions }],
            } } },
        })
    };
    test.pod(
        "not-on-1",
        requiring(json!([{ "key": "kubernetes.io/hostname", "operator": "NotIn", "values": [test.node(1)] }])),
    )
    .await?;
    assert_eq!(node_name(&test.running("not-on-1").await?), test.node(2));
    test.pod(
        "on-1",
        requiring(json!([
            { "key": "kubernetes.io/hostname", "operator": "In", "values": [test.node(1)] },
            { "key": "kubernetes.io/os", "operator": "Exists" },
        ])),
    )
    .await?;
    assert_eq!(node_name(&test.running("on-1").await?), test.node(1));
    test.pod(
        "nowhere",
        requiring(json!([{ "key": "kubernetes.io/os", "operator": "DoesNotExist" }])),
    )
    .await?;
    assert_eq!(
        test.unschedulable("nowhere").await?.message.as_deref(),
        Some(
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
        )
    );

    // A cordoned node takes no new pods.
    test.patch_node(1, json!({ "unschedulable": true })).await?;
    test.pod(
        "cordoned-out",
        requiring(json!([{ "key": "kubernetes.io/hostname", "operator": "In", "values": [test.node(1)] }])),
    )
    .await?;
    let refused = test.unschedulable("cordoned-out").await?;
    assert_eq!(
        refused.message.as_deref(),
        Some(
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 \
             node(s) were unschedulable. preemption: 0/2 nodes are available: 2 Preemption is \
             not helpful for scheduling.."
        )
    );
    test.patch_node(1, json!({ "unschedulable": null })).await?;
    test.running("cordoned-out").await?;
    let nowhere = test.api::<Pod>().get("nowhere").await?;
    assert!(not_scheduled(&nowhere).is_some());
    test.delete_pods(&["not-on-1", "on-1", "nowhere", "cordoned-out"])
        .await
}
