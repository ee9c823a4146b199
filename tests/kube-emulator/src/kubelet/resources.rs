//! Resource requests against a node's allocatable resources, as the
//! scheduler's NodeResourcesFit filter and the kubelet's admission count
//! them: a pod requests the sum of its containers' requests, or the
//! largest request of one init container if that is more, plus its
//! overhead; a node's pods use the sum of their requests, and one of its
//! allocatable `pods`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::quantity::Quantity;

const CPU: &str = "cpu";
const PODS: &str = "pods";

/// Amounts of resources by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Resources(BTreeMap<String, Quantity>);

impl Resources {
    fn add(&mut self, other: &Resources) {
        for (name, amount) in &other.0 {
            *self.0.entry(name.clone()).or_default() += *amount;
        }
    }

    fn max(&mut self, other: &Resources) {
        for (name, amount) in &other.0 {
            let mine = self.0.entry(name.clone()).or_default();
            *mine = (*mine).max(*amount);
        }
    }

    fn get(&self, name: &str) -> Quantity {
        self.0.get(name).copied().unwrap_or_default()
    }

    /// Quantities that do not parse count as nothing (the API server
    /// refuses them, so only a hand-made status could hold one).
    fn from_list(list: Option<&BTreeMap<String, ApiQuantity>>) -> Self {
        Self(
            list.into_iter()
                .flatten()
                .filter_map(|(name, quantity)| {
                    Some((name.clone(), Quantity::parse(&quantity.0).ok()?))
                })
                .collect(),
        )
    }
}

/// What the pod requests. A container's limit stands for its request of
/// a resource it requests nothing of, as the API server's defaulting sets
/// it.
pub(super) fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let container = |container: &Container| {
        let resources = container.resources.as_ref();
        let mut requests = Resources::from_list(resources.and_then(|r| r.limits.as_ref()));
        let explicit = Resources::from_list(resources.and_then(|r| r.requests.as_ref()));
        requests.0.extend(explicit.0);
        requests
    };
    let mut total = Resources::default();
    for main in &spec.containers {
        total.add(&container(main));
    }
    for init in spec.init_containers.iter().flatten() {
        if init.restart_policy.as_deref() == Some("Always") {
            // A sidecar runs beside the containers.
            total.add(&container(init));
        } else {
            total.max(&container(init));
        }
    }
    total.add(&Resources::from_list(spec.overhead.as_ref()));
    total
}

/// The node's allocatable resources.
pub(super) fn allocatable(node: &Node) -> Resources {
    Resources::from_list(
        node.status
            .as_ref()
            .and_then(|status| status.allocatable.as_ref()),
    )
}

/// One resource a node lacks for a pod: the pod's request, what the
/// node's other pods use, and the node's allocatable amount, in the units
/// of the real messages (millicores for cpu, whole units otherwise).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Shortage {
    pub resource: String,
    pub requested: i128,
    pub used: i128,
    pub capacity: i128,
}

impl Shortage {
    /// The scheduler's reason: `Insufficient cpu`, `Too many pods`.
    pub(super) fn reason(&self) -> String {
        if self.resource == PODS {
            "Too many pods".to_string()
        } else {
            format!("Insufficient {}", self.resource)
        }
    }

    /// The reason of a pod the kubelet rejects: `OutOfcpu`, `OutOfpods`.
    pub(super) fn kubelet_reason(&self) -> String {
        format!("OutOf{}", self.resource)
    }

    /// The kubelet's message for a pod it rejects.
    pub(super) fn kubelet_message(&self) -> String {
        format!(
            "Node didn't have enough resource: {}, requested: {}, used: {}, capacity: {}",
            self.resource, self.requested, self.used, self.capacity
        )
    }
}

/// What the node lacks to run `pod` beside `others` (the node's pods that
/// are not terminated), in the real filter's order: the pod count first,
/// then cpu, then every other resource by name.
pub(super) fn shortages<'a>(
    pod: &Pod,
    node: &Node,
    others: impl IntoIterator<Item = &'a Pod>,
) -> Vec<Shortage> {
    let allocatable = allocatable(node);
    let mut used = Resources::default();
    let mut count = 0;
    for other in others {
        used.add(&pod_requests(other));
        count += 1;
    }
    let mut missing = Vec::new();
    let pods = allocatable.get(PODS).value();
    if count + 1 > pods {
        missing.push(Shortage {
            resource: PODS.to_string(),
            requested: 1,
            used: count,
            capacity: pods,
        });
    }
    let requests = pod_requests(pod);
    let mut names: Vec<&String> = requests.0.keys().filter(|name| *name != PODS).collect();
    names.sort_by_key(|name| (name.as_str() != CPU, name.as_str()));
    for name in names {
        let amount = |resources: &Resources| {
            let quantity = resources.get(name);
            if name == CPU {
                quantity.milli()
            } else {
                quantity.value()
            }
        };
        let (requested, used, capacity) = (amount(&requests), amount(&used), amount(&allocatable));
        if requested > 0 && requested > capacity - used {
            missing.push(Shortage {
                resource: name.clone(),
                requested,
                used,
                capacity,
            });
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({ "metadata": { "name": "p" }, "spec": spec })).unwrap()
    }

    fn requesting(cpu: &str, memory: &str) -> Pod {
        pod(json!({ "containers": [{ "name": "c", "resources": {
            "requests": { "cpu": cpu, "memory": memory },
        } }] }))
    }

    fn node(allocatable: serde_json::Value) -> Node {
        serde_json::from_value(
            json!({ "metadata": { "name": "n" }, "status": { "allocatable": allocatable } }),
        )
        .unwrap()
    }

    #[test]
    fn a_pod_requests_its_containers_sum_or_its_largest_init_container() {
        let requests = pod_requests(&pod(json!({
            "containers": [
                { "name": "a", "resources": { "requests": { "cpu": "100m" } } },
                { "name": "b", "resources": { "limits": { "cpu": "200m", "memory": "1Gi" } } },
            ],
            "initContainers": [
                { "name": "i", "resources": { "requests": { "memory": "2Gi" } } },
            ],
            "overhead": { "cpu": "10m" },
        })));
        assert_eq!(requests.get("cpu").milli(), 310);
        assert_eq!(requests.get("memory").value(), 2 << 30);
    }

    #[test]
    fn shortages_name_the_resource_with_requested_used_and_capacity() {
        let node = node(json!({ "cpu": "4", "memory": "16Gi", "pods": "110" }));
        let running = requesting("100m", "1Gi");
        let missing = shortages(&requesting("8", "1Gi"), &node, [&running]);
        assert_eq!(
            missing,
            vec![Shortage {
                resource: "cpu".to_string(),
                requested: 8000,
                used: 100,
                capacity: 4000
            }]
        );
        assert_eq!(missing[0].reason(), "Insufficient cpu");
        assert_eq!(missing[0].kubelet_reason(), "OutOfcpu");
        assert_eq!(
            missing[0].kubelet_message(),
            "Node didn't have enough resource: cpu, requested: 8000, used: 100, capacity: 4000"
        );
        let memory = shortages(&requesting("1", "16Gi"), &node, [&running]);
        assert_eq!(memory.len(), 1);
        assert_eq!(memory[0].reason(), "Insufficient memory");
        assert!(shortages(&requesting("3900m", "15Gi"), &node, [&running]).is_empty());
    }

    #[test]
    fn the_pod_count_is_checked_first_and_zero_requests_always_fit() {
        let full = node(json!({ "cpu": "1", "pods": "1" }));
        let running = requesting("2", "0");
        let missing = shortages(
            &pod(json!({ "containers": [{ "name": "c" }] })),
            &full,
            [&running],
        );
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].reason(), "Too many pods");
        assert_eq!(missing[0].kubelet_reason(), "OutOfpods");
    }
}
