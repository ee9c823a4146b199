//! The cluster's Node objects: two nodes, both run by this kubelet on the
//! same Docker network, so `nodeName`/`nodeSelector` choices are visible in
//! the API while every pod stays reachable.
//!
//! Each node reports the same capacity, large enough for every suite
//! (4 cpu, 16Gi of memory, 100Gi of ephemeral storage, 110 pods); the
//! scheduler and the kubelet's admission count requests against its
//! `allocatable`, which a test may patch to something smaller.

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;

use super::HOSTNAME_LABEL;
use crate::context::ClusterContext;

const NODE_COUNT: usize = 2;
/// What each node has, and offers to pods.
const CAPACITY: [(&str, &str); 4] = [
    ("cpu", "4"),
    ("ephemeral-storage", "100Gi"),
    ("memory", "16Gi"),
    ("pods", "110"),
];

/// Creates the cluster's nodes (`<cluster>-node-1`, `<cluster>-node-2`),
/// Ready, with the router address as their InternalIP, and returns their
/// names.
pub(super) async fn register(ctx: &ClusterContext) -> anyhow::Result<Vec<String>> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut names = Vec::new();
    for index in 1..=NODE_COUNT {
        let name = format!("{}-node-{index}", ctx.name);
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels(&name)),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error).with_context(|| format!("creating node {name}")),
        }
        let status = serde_json::json!({ "status": status(ctx, &name) });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("reporting the status of node {name}"))?;
        names.push(name);
    }
    Ok(names)
}

fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (HOSTNAME_LABEL.to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
    ])
}

/// This machine's architecture as Kubernetes names it (GOARCH).
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn status(ctx: &ClusterContext, name: &str) -> NodeStatus {
    let now = Time(Timestamp::now());
    let resources = CAPACITY
        .iter()
        .map(|(name, amount)| (name.to_string(), Quantity(amount.to_string())))
        .collect::<BTreeMap<_, _>>();
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_string(),
                address: ctx.router_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_string(),
                address: name.to_string(),
            },
        ]),
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".to_string(),
            status: "True".to_string(),
            reason: Some("KubeletReady".to_string()),
            message: Some("kubelet is posting ready status".to_string()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now),
        }]),
        node_info: Some(NodeSystemInfo {
            architecture: arch().to_string(),
            container_runtime_version: "docker://kube-emulator".to_string(),
            kubelet_version: format!("v1.34.0-kube-emulator-{}", env!("CARGO_PKG_VERSION")),
            operating_system: "linux".to_string(),
            os_image: "kube-emulator".to_string(),
            machine_id: name.to_string(),
            system_uuid: name.to_string(),
            boot_id: ctx.shared.instance.clone(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}
